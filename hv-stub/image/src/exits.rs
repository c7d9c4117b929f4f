//! VM-exit handling: what hv-stub does for every exit a guest (the observer
//! loop or a real OS) can cause. Instruction exits are emulated or turned
//! into the exception the guest would get on a processor without VMX; INIT
//! and SIPI start an application processor as on bare metal; exits that
//! leave the guest unable to continue (triple fault, an access to
//! hv-stub's memory, ...) print one `HV ERROR` line and stop the guest while
//! the debugger link keeps being served.

use core::sync::atomic::{AtomicBool, Ordering};

use hv_stub::msr::bits::{CR0_PG, CR4_PAE, EFER_LMA, EFER_LME};
use hv_stub::msr::{entry, field};
use hv_stub::policy::{self, GuestMsrAccess};
use hv_stub::VmxBackend;

use hv_stub::cpus::CpuState;

use crate::hv::GuestKind;
use crate::percpu::{self, MAX_CPUS};
use crate::run::Host;
use crate::vmcs::{f, inject, r, reason, w};
use crate::{backend, cpu, guest_state, memmap, say};

/// The guest's general-purpose registers, as the trampoline saved them.
#[repr(C)]
pub struct GuestRegs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8_15: [u64; 8],
}

impl GuestRegs {
    /// Register `n` in the instruction encoding's order (RAX, RCX, RDX,
    /// RBX, RSP, RBP, RSI, RDI, R8-R15), as exit qualifications name them.
    fn gpr(&self, n: u64) -> u64 {
        match n {
            0 => self.rax,
            1 => self.rcx,
            2 => self.rdx,
            3 => self.rbx,
            4 => r(f::GUEST_RSP),
            5 => self.rbp,
            6 => self.rsi,
            7 => self.rdi,
            n => self.r8_15[(n as usize - 8) & 7],
        }
    }

    fn set_gpr(&mut self, n: u64, value: u64) {
        match n {
            0 => self.rax = value,
            1 => self.rcx = value,
            2 => self.rdx = value,
            3 => self.rbx = value,
            4 => w(f::GUEST_RSP, value),
            5 => self.rbp = value,
            6 => self.rsi = value,
            7 => self.rdi = value,
            n => self.r8_15[(n as usize - 8) & 7] = value,
        }
    }

    fn set_edx_eax(&mut self, value: u64) {
        self.rax = value & 0xFFFF_FFFF;
        self.rdx = value >> 32;
    }

    fn edx_eax(&self) -> u64 {
        (self.rdx << 32) | (self.rax & 0xFFFF_FFFF)
    }
}

/// What happens after an exit.
pub enum Next {
    Resume,
    /// The guest cannot continue; the line has been printed.
    Stop,
}

/// An NMI that hit the host (VMX root, IF=0), per processor: delivered to
/// that processor's guest at its next VM entry that can take it.
static HOST_NMI: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// Set for a guest with its own IDT and NMI exiting (Linux): then an NMI
/// that reaches hv-stub's IDT arrived while the host ran. (The observer
/// shares the host's IDT, so there an NMI stays fatal.)
pub static FORWARD_HOST_NMIS: AtomicBool = AtomicBool::new(false);

/// Called by the exception handler for vector 2: whether the NMI was taken
/// for the guest.
pub fn take_host_nmi() -> bool {
    if !FORWARD_HOST_NMIS.load(Ordering::SeqCst) {
        return false;
    }
    HOST_NMI[percpu::current()].store(true, Ordering::SeqCst);
    true
}

pub const CR0_PE: u64 = 1;
const CR0_TS: u64 = 1 << 3;
const CR0_NW: u64 = 1 << 29;
const CR0_CD: u64 = 1 << 30;
pub const CR4_VMXE: u64 = 1 << 13;
pub const CR4_OSXSAVE: u64 = 1 << 18;
const CR4_PKE: u64 = 1 << 22;
const CS_AR_L: u64 = 1 << 13;
const COM1: core::ops::RangeInclusive<u16> = 0x3F8..=0x3FF;
/// Guest activity state "HLT".
pub const ACTIVITY_HLT: u64 = 1;

/// The CR0/CR4 bits VMX operation fixes (IA32_VMX_CRn_FIXED0/1), as they
/// apply to this guest (PE and PG are free with unrestricted guest).
#[derive(Clone, Copy)]
pub struct FixedCrs {
    pub cr0_fixed0: u64,
    pub cr0_fixed1: u64,
    pub cr4_fixed0: u64,
    pub cr4_fixed1: u64,
}

impl FixedCrs {
    /// Guest/host masks: every bit VMX fixes, so the guest's writes to them
    /// exit and its reads see the read shadow.
    pub fn cr0_mask(&self) -> u64 {
        self.cr0_fixed0 | !self.cr0_fixed1
    }

    pub fn cr4_mask(&self) -> u64 {
        self.cr4_fixed0 | !self.cr4_fixed1
    }
}

fn skip_instruction() {
    let rip = r(f::GUEST_RIP) + r(f::EXIT_INSTRUCTION_LEN);
    w(f::GUEST_RIP, rip);
    // The skipped instruction ends any STI / MOV SS blocking.
    let blocking = r(f::GUEST_INTERRUPTIBILITY);
    if blocking & 0b11 != 0 {
        w(f::GUEST_INTERRUPTIBILITY, blocking & !0b11);
    }
}

fn inject_gp() {
    w(f::ENTRY_INTR_INFO, inject::GP.into());
    w(f::ENTRY_EXCEPTION_ERROR, 0);
}

fn inject_ud() {
    w(f::ENTRY_INTR_INFO, inject::UD.into());
}

/// Emulated instruction: skip it, or inject #GP.
fn complete(ok: bool) {
    if ok {
        skip_instruction();
    } else {
        inject_gp();
    }
}

impl Host {
    pub fn on_exit(&mut self, regs: &mut GuestRegs) -> Next {
        self.exits += 1;
        let just_started = self.started_at.take();
        let full = r(f::EXIT_REASON) as u32;
        if full & (1 << 31) != 0 {
            say!(
                "HV ERROR VM entry failed (exit reason {full:#x}, qualification {:#x})",
                r(f::EXIT_QUALIFICATION)
            );
            return Next::Stop;
        }
        let next = match full & 0xFFFF {
            reason::PREEMPTION_TIMER => Next::Resume,
            reason::RDMSR => self.guest_rdmsr(regs),
            reason::WRMSR => self.guest_wrmsr(regs),
            reason::CPUID => self.guest_cpuid(regs),
            reason::CR_ACCESS => self.guest_cr_access(regs),
            reason::IO_INSTRUCTION => self.guest_io(regs),
            reason::XSETBV => guest_xsetbv(regs),
            reason::INVD | reason::WBINVD => {
                cpu::wbinvd();
                skip_instruction();
                Next::Resume
            }
            reason::HLT => {
                // Executed for the guest: it halts in VMX non-root operation
                // (run::note_parked sees whether it parked).
                skip_instruction();
                w(f::GUEST_ACTIVITY, ACTIVITY_HLT);
                Next::Resume
            }
            reason::GETSEC => {
                inject_ud();
                Next::Resume
            }
            reason::VMCALL if self.kind == GuestKind::Observer => {
                skip_instruction();
                if !self.ready {
                    self.ready = true;
                    say!("READY");
                }
                Next::Resume
            }
            n @ (reason::VMCALL..=reason::VMXON
            | reason::INVEPT
            | reason::INVVPID
            | reason::VMFUNC) => {
                say!(
                    "HV ERROR guest executed {} at rip {:#x}: #UD injected (the guest has no VMX)",
                    vmx_instruction(n),
                    r(f::GUEST_RIP)
                );
                inject_ud();
                Next::Resume
            }
            reason::EXCEPTION_OR_NMI => guest_nmi(),
            reason::EPT_VIOLATION => ept_violation(),
            reason::EPT_MISCONFIG => {
                say!(
                    "HV ERROR EPT misconfiguration at GPA {:#x}",
                    r(f::GUEST_PHYSICAL_ADDRESS)
                );
                Next::Stop
            }
            reason::TRIPLE_FAULT => {
                say!("HV ERROR guest triple fault at rip {:#x}", r(f::GUEST_RIP));
                Next::Stop
            }
            reason::INIT
                if just_started.is_some_and(|vector| {
                    r(f::GUEST_RIP) == 0 && r(f::GUEST_CS_BASE) == vector << 12
                }) =>
            {
                // Not one instruction since the SIPI: Bochs 2.7's stale
                // INIT (smp::reset_through_init).
                percpu::set_state(self.cpu, CpuState::NotStarted);
                let (vmcs, stack) = crate::hv::vmcs_and_spare_stack(self.cpu);
                crate::smp::reset_through_init(self.cpu, just_started.unwrap_or(0), vmcs, stack)
            }
            reason::INIT if self.cpu != 0 => {
                // As on bare metal: the processor waits for a startup IPI.
                guest_state::wait_for_sipi(&self.fixed_crs);
                percpu::set_state(self.cpu, CpuState::NotStarted);
                Next::Resume
            }
            reason::INIT => {
                say!("HV ERROR guest received INIT on the boot CPU (a reset: not supported)");
                Next::Stop
            }
            reason::SIPI => {
                let vector = r(f::EXIT_QUALIFICATION) & 0xFF;
                guest_state::start_at_sipi(vector);
                self.started_at = Some(vector);
                percpu::set_state(self.cpu, CpuState::Running);
                Next::Resume
            }
            reason::TASK_SWITCH => {
                say!(
                    "HV ERROR guest hardware task switch at rip {:#x} (not emulated)",
                    r(f::GUEST_RIP)
                );
                Next::Stop
            }
            other => {
                say!(
                    "HV ERROR unexpected VM exit {other} qualification {:#x} rip {:#x}",
                    r(f::EXIT_QUALIFICATION),
                    r(f::GUEST_RIP)
                );
                Next::Stop
            }
        };
        if matches!(next, Next::Resume) {
            deliver_host_nmi(self.cpu);
        }
        next
    }

    fn guest_rdmsr(&mut self, regs: &mut GuestRegs) -> Next {
        let msr = regs.rcx as u32;
        let value = match policy::guest_msr_access(msr, self.kind == GuestKind::Linux) {
            GuestMsrAccess::FeatureControlShadow => {
                Some(backend::with_own(self.cpu, |b| *b.feature_control_shadow()))
            }
            GuestMsrAccess::Hidden => None,
            GuestMsrAccess::Processor => cpu::rdmsr_safe(msr).ok(),
        };
        if let Some(v) = value {
            regs.set_edx_eax(v);
        }
        complete(value.is_some());
        Next::Resume
    }

    /// The guest's own WRMSR of an intercepted MSR (IA32_FEATURE_CONTROL,
    /// the VMX capability MSRs of a Linux guest, and MSRs outside the bitmap
    /// ranges, which always exit). A locked shadow refuses.
    fn guest_wrmsr(&mut self, regs: &mut GuestRegs) -> Next {
        let msr = regs.rcx as u32;
        let value = regs.edx_eax();
        let ok = match policy::guest_msr_access(msr, self.kind == GuestKind::Linux) {
            GuestMsrAccess::FeatureControlShadow => backend::with_own(self.cpu, |backend| {
                let caps = *backend.caps();
                let shadow = backend.feature_control_shadow();
                match policy::guest_feature_control_write(*shadow, value, &caps) {
                    Ok(new) => {
                        *shadow = new;
                        true
                    }
                    Err(_) => false,
                }
            }),
            GuestMsrAccess::Hidden => false, // read-only, and absent for a guest without VMX
            GuestMsrAccess::Processor => {
                // SAFETY: an MSR outside the bitmap ranges (which always exits):
                // executed here in VMX-root mode it changes the host's value too.
                // Those MSRs are model-specific extensions the host never relies
                // on, the same exposure as the shared MSRs in
                // docs/MSR-SEMANTICS.md.
                unsafe { cpu::wrmsr_safe(msr, value) }.is_ok()
            }
        };
        complete(ok);
        Next::Resume
    }

    /// CPUID as the processor answers it, minus VMX, with the bits that
    /// mirror CR4 taken from the guest's CR4 and the instructions hv-stub
    /// could not enable for the guest hidden.
    fn guest_cpuid(&mut self, regs: &mut GuestRegs) -> Next {
        let (leaf, subleaf) = (regs.rax as u32, regs.rcx as u32);
        let mut c = cpu::cpuid(leaf, subleaf);
        let guest_cr4 = r(field::GUEST_CR4);
        let mirror =
            |value: u32, bit: u32, on: bool| (value & !(1 << bit)) | (u32::from(on) << bit);
        match leaf {
            1 => {
                c.ecx &= !(1 << 5); // VMX
                                    // MONITOR/MWAIT: a guest then idles with HLT, which hv-stub
                                    // sees (guest activity state) and polls less often.
                c.ecx &= !(1 << 3);
                c.ecx = mirror(c.ecx, 27, guest_cr4 & CR4_OSXSAVE != 0);
            }
            7 if subleaf == 0 => {
                c.ecx = mirror(c.ecx, 4, guest_cr4 & CR4_PKE != 0); // OSPKE
                if !self.guest_has.invpcid {
                    c.ebx &= !(1 << 10);
                }
            }
            0xD if subleaf == 1 && !self.guest_has.xsaves => c.eax &= !(1 << 3),
            0x8000_0001 if !self.guest_has.rdtscp => c.edx &= !(1 << 27),
            _ => {}
        }
        regs.rax = c.eax.into();
        regs.rbx = c.ebx.into();
        regs.rcx = c.ecx.into();
        regs.rdx = c.edx.into();
        skip_instruction();
        Next::Resume
    }

    /// MOV to/from CR0/CR3/CR4, CLTS and LMSW that touch bits hv-stub owns.
    fn guest_cr_access(&mut self, regs: &mut GuestRegs) -> Next {
        let q = r(f::EXIT_QUALIFICATION);
        let (cr, access, gpr) = (q & 0xF, (q >> 4) & 3, (q >> 8) & 0xF);
        let ok = match (access, cr) {
            (0, 0) => self.set_cr0(regs.gpr(gpr)),
            (0, 3) => {
                w(f::GUEST_CR3, regs.gpr(gpr));
                true
            }
            (0, 4) => self.set_cr4(regs.gpr(gpr)),
            (1, 3) => {
                regs.set_gpr(gpr, r(f::GUEST_CR3));
                true
            }
            (2, _) => {
                // CLTS
                let shadow = r(f::CR0_SHADOW) & !CR0_TS;
                w(f::CR0_SHADOW, shadow);
                w(field::GUEST_CR0, r(field::GUEST_CR0) & !CR0_TS);
                true
            }
            (3, _) => {
                // LMSW loads CR0[3:0] but never clears PE.
                let source = (q >> 16) & 0xF;
                let shadow = r(f::CR0_SHADOW);
                self.set_cr0((shadow & !0xE) | source)
            }
            _ => {
                say!(
                    "HV ERROR unexpected control-register access, qualification {q:#x} rip {:#x}",
                    r(f::GUEST_RIP)
                );
                return Next::Stop;
            }
        };
        complete(ok);
        Next::Resume
    }

    /// The guest writes CR0 = `value` (its view). Checks what MOV to CR0
    /// checks, switches IA-32e mode like the processor when paging turns on
    /// or off with EFER.LME, and keeps the bits VMX fixes set underneath.
    fn set_cr0(&mut self, value: u64) -> bool {
        if value >> 32 != 0
            || (value & CR0_PG != 0 && value & CR0_PE == 0)
            || (value & CR0_NW != 0 && value & CR0_CD == 0)
        {
            return false;
        }
        let old = r(field::GUEST_CR0);
        let mut efer = r(field::GUEST_IA32_EFER);
        let mut entry_ctls = r(field::VM_ENTRY_CONTROLS) as u32;
        if value & CR0_PG != 0 && old & CR0_PG == 0 && efer & EFER_LME != 0 {
            if r(field::GUEST_CR4) & CR4_PAE == 0 {
                return false;
            }
            efer |= EFER_LMA;
            entry_ctls |= entry::IA32E_MODE_GUEST;
        } else if value & CR0_PG == 0 && old & CR0_PG != 0 && efer & EFER_LMA != 0 {
            if r(f::GUEST_CS_AR) & CS_AR_L != 0 {
                return false;
            }
            efer &= !EFER_LMA;
            entry_ctls &= !entry::IA32E_MODE_GUEST;
        }
        let fixed = self.fixed_crs;
        w(
            field::GUEST_CR0,
            (value | fixed.cr0_fixed0) & fixed.cr0_fixed1,
        );
        w(f::CR0_SHADOW, value);
        w(field::GUEST_IA32_EFER, efer);
        w(field::VM_ENTRY_CONTROLS, entry_ctls.into());
        true
    }

    /// The guest writes CR4 = `value`: VMXE and bits the processor does not
    /// support are reserved for it (#GP); VMXE stays set underneath.
    fn set_cr4(&mut self, value: u64) -> bool {
        let fixed = self.fixed_crs;
        let long_mode = r(field::GUEST_IA32_EFER) & EFER_LMA != 0;
        if value & CR4_VMXE != 0
            || value & !fixed.cr4_fixed1 != 0
            || (long_mode && value & CR4_PAE == 0)
        {
            return false;
        }
        w(field::GUEST_CR4, value | fixed.cr4_fixed0);
        w(f::CR4_SHADOW, value);
        true
    }

    /// IN/OUT to COM1 (the only ports the I/O bitmaps intercept): the guest
    /// sees no device there.
    fn guest_io(&mut self, regs: &mut GuestRegs) -> Next {
        let q = r(f::EXIT_QUALIFICATION);
        let size = (q & 7) + 1;
        let is_in = q & 8 != 0;
        let string = q & 16 != 0;
        let port = (q >> 16) as u16;
        if !COM1.contains(&port) {
            say!("HV ERROR unexpected I/O exit for port {port:#x}");
            return Next::Stop;
        }
        if !self.com1_noted {
            self.com1_noted = true;
            say!("HV guest probed COM1 (port {port:#x}): hidden, reads 0xff, writes dropped");
        }
        if string {
            say!(
                "HV ERROR guest string I/O on COM1 port {port:#x} at rip {:#x}: skipped",
                r(f::GUEST_RIP)
            );
            if q & 32 != 0 {
                regs.rcx = 0; // REP: as if every iteration ran
            }
        } else if is_in {
            regs.rax = match size {
                1 => regs.rax | 0xFF,
                2 => regs.rax | 0xFFFF,
                _ => 0xFFFF_FFFF,
            };
        } else if port == *COM1.start() && !self.com1_write_reported {
            // Probes only read and set up registers; data sent to the
            // transmit register means the guest tries to use hv-stub's UART.
            self.com1_write_reported = true;
            say!("HV ERROR guest wrote data to COM1, hv-stub's debugger UART: dropped");
        }
        skip_instruction();
        Next::Resume
    }
}

/// XSETBV: executed for the guest if the processor would accept the value.
fn guest_xsetbv(regs: &mut GuestRegs) -> Next {
    let value = regs.edx_eax();
    let xcr = regs.rcx as u32;
    let leaf = cpu::cpuid(0xD, 0);
    let supported = u64::from(leaf.eax) | u64::from(leaf.edx) << 32;
    let avx512 = 0b111 << 5;
    let valid = xcr == 0
        && value & 1 != 0 // x87
        && value & !supported == 0
        && (value & 0b100 == 0 || value & 0b10 != 0) // AVX needs SSE
        && (value >> 3 & 1) == (value >> 4 & 1) // MPX: both or neither
        && (value & avx512 == 0 || (value & avx512 == avx512 && value & 0b100 != 0));
    if valid {
        // SAFETY: the value passed the checks the processor makes (SDM
        // XSETBV), and hv-stub sets CR4.OSXSAVE in the host when the
        // processor has XSAVE (the guest could not reach XSETBV otherwise).
        // The host saves only FXSAVE state, which XCR0 does not change.
        unsafe { cpu::xsetbv(0, value) };
    }
    complete(valid);
    Next::Resume
}

fn guest_nmi() -> Next {
    let info = r(f::EXIT_INTR_INFO);
    if info >> 8 & 7 == 2 {
        // An NMI while the guest ran: it is the guest's.
        w(f::ENTRY_INTR_INFO, inject::NMI.into());
        return Next::Resume;
    }
    say!(
        "HV ERROR unexpected exception exit, interruption info {info:#x} rip {:#x}",
        r(f::GUEST_RIP)
    );
    Next::Stop
}

/// A host NMI is handed to the guest when nothing else is being injected
/// and the guest does not block NMIs; otherwise it waits for a later exit.
fn deliver_host_nmi(cpu: usize) {
    if !HOST_NMI[cpu].load(Ordering::SeqCst) || r(f::ENTRY_INTR_INFO) & (1 << 31) != 0 {
        return;
    }
    // Blocking by STI, MOV SS or NMI.
    if r(f::GUEST_INTERRUPTIBILITY) & 0b1011 != 0 {
        return;
    }
    HOST_NMI[cpu].store(false, Ordering::SeqCst);
    w(f::ENTRY_INTR_INFO, inject::NMI.into());
}

fn ept_violation() -> Next {
    let gpa = r(f::GUEST_PHYSICAL_ADDRESS);
    let q = r(f::EXIT_QUALIFICATION);
    let what = if q & 2 != 0 {
        "wrote"
    } else if q & 4 != 0 {
        "fetched"
    } else {
        "read"
    };
    let rip = r(f::GUEST_RIP);
    if memmap::is_hv_stub(gpa) {
        say!("HV ERROR guest touched hv-stub memory at GPA {gpa:#x} ({what}, rip {rip:#x})");
    } else {
        say!("HV ERROR guest {what} unmapped GPA {gpa:#x} (rip {rip:#x})");
    }
    Next::Stop
}

fn vmx_instruction(exit_reason: u32) -> &'static str {
    const NAMES: [&str; 10] = [
        "VMCALL", "VMCLEAR", "VMLAUNCH", "VMPTRLD", "VMPTRST", "VMREAD", "VMRESUME", "VMWRITE",
        "VMXOFF", "VMXON",
    ];
    match exit_reason {
        reason::INVEPT => "INVEPT",
        reason::INVVPID => "INVVPID",
        reason::VMFUNC => "VMFUNC",
        n => NAMES
            .get((n - reason::VMCALL) as usize)
            .copied()
            .unwrap_or("a VMX instruction"),
    }
}
