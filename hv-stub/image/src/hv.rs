//! The hypervisor: enters VMX operation, builds the VMCS (controls from the
//! TRUE capability MSRs, host state, the observer guest's state, MSR
//! bitmaps, the VM-entry MSR-load area, the VMX-preemption timer), launches
//! the guest, and on every VM exit handles the exit, serves COM1 through the
//! shared `hv_stub::Stub`, and resumes.

use core::ptr::addr_of_mut;
use core::sync::atomic::{AtomicBool, Ordering};

use hv_stub::msr::{entry, exit, field, index};
use hv_stub::{validate, MsrEntry, Stub, VmxBackend};
use pulse_proto::message::caps;

use crate::backend::RealVmx;
use crate::caps::*;
use crate::desc::{self, CODE64, DATA, GUEST_TR, HOST_TR, TSS_LIMIT};
use crate::uart::Uart;
use crate::{cpu, guest, say, vmx};

/// VMCS encodings not in `hv_stub::msr::field` (SDM Vol. 3D Appendix B).
mod f {
    pub const GUEST_ES_SELECTOR: u32 = 0x800;
    pub const GUEST_TR_SELECTOR: u32 = 0x80E;
    pub const HOST_ES_SELECTOR: u32 = 0xC00;
    pub const HOST_CS_SELECTOR: u32 = 0xC02;
    pub const HOST_SS_SELECTOR: u32 = 0xC04;
    pub const HOST_DS_SELECTOR: u32 = 0xC06;
    pub const HOST_FS_SELECTOR: u32 = 0xC08;
    pub const HOST_GS_SELECTOR: u32 = 0xC0A;
    pub const HOST_TR_SELECTOR: u32 = 0xC0C;
    pub const MSR_BITMAP: u32 = 0x2004;
    pub const PIN_BASED: u32 = 0x4000;
    pub const PROC_BASED: u32 = 0x4002;
    pub const EXCEPTION_BITMAP: u32 = 0x4004;
    pub const CR3_TARGET_COUNT: u32 = 0x400A;
    pub const EXIT_MSR_STORE_COUNT: u32 = 0x400E;
    pub const EXIT_MSR_LOAD_COUNT: u32 = 0x4010;
    pub const ENTRY_INTR_INFO: u32 = 0x4016;
    pub const ENTRY_EXCEPTION_ERROR: u32 = 0x4018;
    pub const EXIT_REASON: u32 = 0x4402;
    pub const EXIT_INSTRUCTION_LEN: u32 = 0x440C;
    pub const GUEST_ES_LIMIT: u32 = 0x4800;
    pub const GUEST_TR_LIMIT: u32 = 0x480E;
    pub const GUEST_GDTR_LIMIT: u32 = 0x4810;
    pub const GUEST_IDTR_LIMIT: u32 = 0x4812;
    pub const GUEST_ES_AR: u32 = 0x4814;
    pub const GUEST_LDTR_AR: u32 = 0x4820;
    pub const GUEST_TR_AR: u32 = 0x4822;
    pub const GUEST_INTERRUPTIBILITY: u32 = 0x4824;
    pub const GUEST_ACTIVITY: u32 = 0x4826;
    pub const PREEMPTION_TIMER: u32 = 0x482E;
    pub const CR0_MASK: u32 = 0x6000;
    pub const CR4_MASK: u32 = 0x6002;
    pub const CR0_SHADOW: u32 = 0x6004;
    pub const CR4_SHADOW: u32 = 0x6006;
    pub const GUEST_CR3: u32 = 0x6802;
    pub const GUEST_ES_BASE: u32 = 0x6806;
    pub const GUEST_TR_BASE: u32 = 0x6814;
    pub const GUEST_GDTR_BASE: u32 = 0x6816;
    pub const GUEST_IDTR_BASE: u32 = 0x6818;
    pub const GUEST_DR7: u32 = 0x681A;
    pub const GUEST_RSP: u32 = 0x681C;
    pub const GUEST_RIP: u32 = 0x681E;
    pub const GUEST_RFLAGS: u32 = 0x6820;
    pub const GUEST_PENDING_DBG: u32 = 0x6822;
    pub const HOST_CR0: u32 = 0x6C00;
    pub const HOST_CR3: u32 = 0x6C02;
    pub const HOST_TR_BASE: u32 = 0x6C0A;
    pub const HOST_GDTR_BASE: u32 = 0x6C0C;
    pub const HOST_IDTR_BASE: u32 = 0x6C0E;
    pub const HOST_RSP: u32 = 0x6C14;
    pub const HOST_RIP: u32 = 0x6C16;
}

mod reason {
    pub const CPUID: u32 = 10;
    pub const VMCALL: u32 = 18;
    pub const RDMSR: u32 = 31;
    pub const WRMSR: u32 = 32;
    pub const PREEMPTION_TIMER: u32 = 52;
}

const PIN_PREEMPTION_TIMER: u32 = 1 << 6;
const PROC_USE_MSR_BITMAPS: u32 = 1 << 28;
const CR4_VMXE: u64 = 1 << 13;
/// TSC ticks between VMX-preemption-timer exits (Bochs: TSC = instructions).
const PREEMPTION_TICKS: u64 = 2000;
/// Polls of an idle UART before a partly received frame is left for the
/// next exit.
const IDLE_POLLS: u32 = 20_000;
const LOAD_AREA_SLOTS: usize = 8;
const STACK: usize = 64 * 1024;

/// Memory the processor owns in VMX operation, plus the exit and guest
/// stacks. Zeroed (.bss), 4 KiB-aligned, identity-mapped.
#[repr(C, align(4096))]
struct VmxPages {
    vmxon: [u8; 4096],
    vmcs: [u8; 4096],
    msr_bitmap: [u8; 4096],
    load_area: [MsrEntry; LOAD_AREA_SLOTS],
    exit_stack: [u8; STACK],
    guest_stack: [u8; STACK],
}

static mut PAGES: VmxPages = VmxPages {
    vmxon: [0; 4096],
    vmcs: [0; 4096],
    msr_bitmap: [0; 4096],
    load_area: [MsrEntry {
        index: 0,
        reserved: 0,
        value: 0,
    }; LOAD_AREA_SLOTS],
    exit_stack: [0; STACK],
    guest_stack: [0; STACK],
};
static PAGES_TAKEN: AtomicBool = AtomicBool::new(false);

fn take_pages() -> &'static mut VmxPages {
    assert!(
        !PAGES_TAKEN.swap(true, Ordering::SeqCst),
        "VMX pages taken twice"
    );
    // SAFETY: the flag above makes this the only reference ever created to
    // PAGES, which is 'static.
    unsafe { &mut *addr_of_mut!(PAGES) }
}

/// Everything the VM-exit handler needs.
struct Host {
    stub: Stub<RealVmx>,
    uart: Uart,
    ready: bool,
    exits: u64,
}

static mut HOST: Option<Host> = None;

/// The host state, from the VM-exit handler.
fn host() -> &'static mut Host {
    // SAFETY: HOST is written once in `start` before VMLAUNCH and afterwards
    // only used here, from the VM-exit handler, which runs on one CPU with
    // IF=0 and is never re-entered (the guest does not run meanwhile), so no
    // two references are live at once.
    match unsafe { &mut *addr_of_mut!(HOST) } {
        Some(host) => host,
        None => fatal("VM exit before the host state exists"),
    }
}

fn fatal(what: &str) -> ! {
    say!("\nFATAL {what}");
    crate::console::shutdown()
}

/// VMWRITE during setup; a failure names the field and stops.
fn w(field: u32, value: u64) {
    // SAFETY: called only from `start` while building the VMCS: host-state
    // fields get the trampoline, its dedicated stack and the tables loaded
    // by desc::init, all of which stay valid forever.
    if unsafe { vmx::vmwrite(field, value) }.is_err() {
        say!("HV vmwrite {field:#x} <- {value:#x} failed");
        fatal("VMCS setup");
    }
}

fn r(field: u32) -> u64 {
    vmx::vmread(field).unwrap_or(0)
}

fn fixed(value: u64, fixed0_msr: u32, fixed1_msr: u32) -> u64 {
    let fixed0 = cpu::rdmsr_safe(fixed0_msr).unwrap_or(0);
    let fixed1 = cpu::rdmsr_safe(fixed1_msr).unwrap_or(!0);
    (value | fixed0) & fixed1
}

extern "C" {
    fn hv_vmexit_entry();
}

/// Sets up VMX and launches the observer guest. Never returns.
pub fn start() -> ! {
    let tables = desc::init();
    let l1 = cpu::cpuid(1, 0);
    if l1.ecx >> 5 & 1 == 0 {
        fatal("no VMX (CPUID.1:ECX[5])");
    }
    let mut feature_control = cpu::rdmsr_safe(index::IA32_FEATURE_CONTROL).unwrap_or(0);
    if feature_control & 1 == 0 {
        // Unlocked: enable VMX outside SMX and lock, as firmware would.
        // SAFETY: IA32_FEATURE_CONTROL only gates VMXON.
        let _ = unsafe { cpu::wrmsr_safe(index::IA32_FEATURE_CONTROL, feature_control | 0b101) };
        feature_control = cpu::rdmsr_safe(index::IA32_FEATURE_CONTROL).unwrap_or(0);
    }
    if feature_control & 0b101 != 0b101 {
        fatal("VMX disabled by IA32_FEATURE_CONTROL");
    }
    let caps = detect();
    let basic = cpu::rdmsr_safe(IA32_VMX_BASIC).unwrap_or(0);
    let revision = (basic & 0x7FFF_FFFF) as u32;
    let misc = cpu::rdmsr_safe(IA32_VMX_MISC).unwrap_or(0);
    say!(
        "HV vmx basic={basic:#x} misc={misc:#x} entry1={:#x} exit1={:#x} feature_control={feature_control:#x}",
        caps.entry_allowed1,
        caps.exit_allowed1
    );

    let cr0 = fixed(cpu::read_cr0(), IA32_VMX_CR0_FIXED0, IA32_VMX_CR0_FIXED1);
    let cr4 = fixed(
        cpu::read_cr4() | CR4_VMXE,
        IA32_VMX_CR4_FIXED0,
        IA32_VMX_CR4_FIXED1,
    );
    // SAFETY: the fixed bits only add PE/PG/NE (already set by boot.s) and
    // VMXE; paging, PAE and OSFXSR stay as they are.
    unsafe {
        cpu::write_cr0(cr0);
        cpu::write_cr4(cr4);
    }

    let pages = take_pages();
    pages.vmxon[..4].copy_from_slice(&revision.to_le_bytes());
    pages.vmcs[..4].copy_from_slice(&revision.to_le_bytes());
    let vmxon_pa = pages.vmxon.as_ptr() as u64;
    let vmcs_pa = pages.vmcs.as_ptr() as u64;
    // SAFETY: both regions are 4 KiB-aligned, zeroed except for the revision
    // id, identity-mapped, and never touched by software again; CR0/CR4
    // satisfy the fixed bits (set above).
    unsafe {
        if vmx::vmxon(vmxon_pa).is_err() {
            fatal("VMXON failed");
        }
        if vmx::vmclear(vmcs_pa).is_err() || vmx::vmptrld(vmcs_pa).is_err() {
            fatal("VMCLEAR/VMPTRLD failed");
        }
    }

    // --- controls ---------------------------------------------------------
    let pin = adjust_controls(IA32_VMX_TRUE_PINBASED_CTLS, PIN_PREEMPTION_TIMER);
    if pin & PIN_PREEMPTION_TIMER == 0 {
        fatal("no VMX-preemption timer");
    }
    let proc = adjust_controls(IA32_VMX_TRUE_PROCBASED_CTLS, PROC_USE_MSR_BITMAPS);
    let entry_wanted = entry::IA32E_MODE_GUEST
        | entry::LOAD_DEBUG_CONTROLS
        | entry::LOAD_IA32_PAT
        | entry::LOAD_IA32_EFER
        | entry::LOAD_IA32_PERF_GLOBAL_CTRL
        | entry::LOAD_IA32_BNDCFGS
        | entry::LOAD_IA32_RTIT_CTL
        | entry::LOAD_CET_STATE
        | entry::LOAD_PKRS;
    let entry_ctls = adjust_controls(IA32_VMX_TRUE_ENTRY_CTLS, entry_wanted);
    let exit_wanted = exit::HOST_ADDRESS_SPACE_SIZE
        | exit::SAVE_DEBUG_CONTROLS
        | exit::SAVE_IA32_PAT
        | exit::LOAD_IA32_PAT
        | exit::SAVE_IA32_EFER
        | exit::LOAD_IA32_EFER
        | exit::LOAD_IA32_PERF_GLOBAL_CTRL
        | exit::SAVE_IA32_PERF_GLOBAL_CTRL
        | exit::CLEAR_IA32_BNDCFGS
        | exit::CLEAR_IA32_RTIT_CTL
        | exit::LOAD_CET_STATE
        | exit::LOAD_PKRS;
    let exit_ctls = adjust_controls(IA32_VMX_TRUE_EXIT_CTLS, exit_wanted);
    say!("HV controls pin={pin:#x} proc={proc:#x} entry={entry_ctls:#x} exit={exit_ctls:#x}");
    w(f::PIN_BASED, pin.into());
    w(f::PROC_BASED, proc.into());
    w(field::VM_ENTRY_CONTROLS, entry_ctls.into());
    w(field::VM_EXIT_CONTROLS, exit_ctls.into());
    w(f::EXCEPTION_BITMAP, 0);
    w(f::CR3_TARGET_COUNT, 0);
    w(f::CR0_MASK, 0);
    w(f::CR4_MASK, 0);
    w(f::CR0_SHADOW, cr0);
    w(f::CR4_SHADOW, cr4);
    w(f::EXIT_MSR_STORE_COUNT, 0);
    w(f::EXIT_MSR_LOAD_COUNT, 0);
    let rate = misc & 0x1F;
    w(f::PREEMPTION_TIMER, (PREEMPTION_TICKS >> rate).max(1));

    // MSR bitmaps: nothing exits except RDMSR/WRMSR of IA32_FEATURE_CONTROL
    // (read bitmap for low MSRs at 0, write bitmap for low MSRs at 2048).
    let fc = index::IA32_FEATURE_CONTROL as usize;
    pages.msr_bitmap[fc / 8] |= 1 << (fc % 8);
    pages.msr_bitmap[2048 + fc / 8] |= 1 << (fc % 8);
    w(f::MSR_BITMAP, pages.msr_bitmap.as_ptr() as u64);

    // VM-entry MSR-load area: IA32_KERNEL_GS_BASE lives there, so a write to
    // it exercises the area path of the routing.
    let kernel_gs = cpu::rdmsr_safe(index::IA32_KERNEL_GS_BASE).unwrap_or(0);
    pages.load_area[0] = MsrEntry {
        index: index::IA32_KERNEL_GS_BASE,
        reserved: 0,
        value: kernel_gs,
    };
    let load_count = 1;
    w(
        field::VM_ENTRY_MSR_LOAD_ADDR,
        pages.load_area.as_ptr() as u64,
    );
    w(field::VM_ENTRY_MSR_LOAD_COUNT, load_count as u64);
    w(field::VMCS_LINK_POINTER, !0);

    // --- host state -------------------------------------------------------
    let cr3 = cpu::read_cr3();
    let pat = cpu::rdmsr_safe(index::IA32_PAT).unwrap_or(0x0007_0406_0007_0406);
    let efer = cpu::rdmsr_safe(index::IA32_EFER).unwrap_or(0);
    let perf_global = cpu::rdmsr_safe(index::IA32_PERF_GLOBAL_CTRL).unwrap_or(0);
    w(f::HOST_CR0, cr0);
    w(f::HOST_CR3, cr3);
    w(field::HOST_CR4, cr4);
    w(f::HOST_CS_SELECTOR, CODE64.into());
    for sel in [
        f::HOST_ES_SELECTOR,
        f::HOST_SS_SELECTOR,
        f::HOST_DS_SELECTOR,
        f::HOST_FS_SELECTOR,
        f::HOST_GS_SELECTOR,
    ] {
        w(sel, DATA.into());
    }
    w(f::HOST_TR_SELECTOR, HOST_TR.into());
    w(field::HOST_FS_BASE, 0);
    w(field::HOST_GS_BASE, 0);
    w(f::HOST_TR_BASE, tables.host_tss);
    w(f::HOST_GDTR_BASE, tables.gdt_base);
    w(f::HOST_IDTR_BASE, tables.idt_base);
    w(field::HOST_IA32_SYSENTER_CS, 0);
    w(field::HOST_IA32_SYSENTER_ESP, 0);
    w(field::HOST_IA32_SYSENTER_EIP, 0);
    w(f::HOST_RSP, pages.exit_stack.as_ptr_range().end as u64);
    w(f::HOST_RIP, hv_vmexit_entry as *const () as u64);
    if exit_ctls & exit::LOAD_IA32_PAT != 0 {
        w(field::HOST_IA32_PAT, pat);
    }
    if exit_ctls & exit::LOAD_IA32_EFER != 0 {
        w(field::HOST_IA32_EFER, efer);
    }
    if exit_ctls & exit::LOAD_IA32_PERF_GLOBAL_CTRL != 0 {
        w(field::HOST_IA32_PERF_GLOBAL_CTRL, perf_global);
    }
    if exit_ctls & exit::LOAD_PKRS != 0 {
        w(
            field::HOST_IA32_PKRS,
            cpu::rdmsr_safe(index::IA32_PKRS).unwrap_or(0),
        );
    }
    if exit_ctls & exit::LOAD_CET_STATE != 0 {
        w(field::HOST_IA32_S_CET, 0);
        w(field::HOST_SSP, 0);
        w(field::HOST_IA32_INTERRUPT_SSP_TABLE_ADDR, 0);
    }

    // --- guest state: 64-bit, the host's paging and descriptor tables -----
    w(field::GUEST_CR0, cr0);
    w(f::GUEST_CR3, cr3);
    w(field::GUEST_CR4, cr4);
    w(f::GUEST_DR7, 0x400);
    // ES, CS, SS, DS, FS, GS (encodings 2 apart in each group).
    for seg in 0..6u32 {
        let (selector, ar) = if seg == 1 {
            (CODE64, 0xA09B) // 64-bit code, accessed
        } else {
            (DATA, 0xC093) // read/write data, accessed
        };
        w(f::GUEST_ES_SELECTOR + 2 * seg, selector.into());
        w(f::GUEST_ES_BASE + 2 * seg, 0);
        w(f::GUEST_ES_LIMIT + 2 * seg, 0xFFFF_FFFF);
        w(f::GUEST_ES_AR + 2 * seg, ar);
    }
    w(f::GUEST_ES_SELECTOR + 12, 0); // LDTR
    w(f::GUEST_ES_BASE + 12, 0);
    w(f::GUEST_ES_LIMIT + 12, 0);
    w(f::GUEST_LDTR_AR, 1 << 16); // unusable
    w(f::GUEST_TR_SELECTOR, GUEST_TR.into());
    w(f::GUEST_TR_BASE, tables.guest_tss);
    w(f::GUEST_TR_LIMIT, TSS_LIMIT.into());
    w(f::GUEST_TR_AR, 0x8B); // busy 64-bit TSS
    w(f::GUEST_GDTR_BASE, tables.gdt_base);
    w(f::GUEST_GDTR_LIMIT, tables.gdt_limit.into());
    w(f::GUEST_IDTR_BASE, tables.idt_base);
    w(f::GUEST_IDTR_LIMIT, tables.idt_limit.into());
    w(f::GUEST_RFLAGS, 0x2);
    // As if called: RSP = 8 mod 16 at the first instruction.
    w(
        f::GUEST_RSP,
        pages.guest_stack.as_ptr_range().end as u64 - 8,
    );
    w(f::GUEST_RIP, guest::guest_main as *const () as u64);
    w(f::GUEST_INTERRUPTIBILITY, 0);
    w(f::GUEST_ACTIVITY, 0);
    w(f::GUEST_PENDING_DBG, 0);
    w(field::GUEST_IA32_SYSENTER_CS, 0);
    w(field::GUEST_IA32_SYSENTER_ESP, 0);
    w(field::GUEST_IA32_SYSENTER_EIP, 0);
    w(field::GUEST_FS_BASE, 0);
    w(field::GUEST_GS_BASE, 0);
    w(field::GUEST_IA32_DEBUGCTL, 0);
    w(field::GUEST_IA32_PAT, pat);
    w(field::GUEST_IA32_EFER, efer);
    if entry_ctls & entry::LOAD_IA32_PERF_GLOBAL_CTRL != 0 {
        w(field::GUEST_IA32_PERF_GLOBAL_CTRL, perf_global);
    }
    if entry_ctls & entry::LOAD_CET_STATE != 0 {
        w(field::GUEST_IA32_S_CET, 0);
        w(field::GUEST_SSP, 0);
        w(field::GUEST_IA32_INTERRUPT_SSP_TABLE_ADDR, 0);
    }

    // --- the request handler, then launch ---------------------------------
    let backend = RealVmx::new(caps, &mut pages.load_area[..], load_count, feature_control);
    let seed = cpu::rdtsc() as u8;
    let host = Host {
        stub: Stub::new(backend, caps::REAL_VMX | caps::GUEST_OBSERVER, seed),
        uart: Uart::com1(),
        ready: false,
        exits: 0,
    };
    // SAFETY: written once, before VMLAUNCH; nothing else refers to HOST
    // until the first VM exit.
    unsafe { *addr_of_mut!(HOST) = Some(host) };
    say!("HV launching guest");
    // SAFETY: the VMCS is complete (above).
    unsafe { vmx::vmlaunch() };
    let error = r(vmx::VM_INSTRUCTION_ERROR);
    say!("HV VMLAUNCH failed, VM-instruction error {error}");
    fatal("VMLAUNCH")
}

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

fn skip_instruction() {
    let rip = r(f::GUEST_RIP) + r(f::EXIT_INSTRUCTION_LEN);
    w(f::GUEST_RIP, rip);
}

fn inject_gp() {
    // Vector 13, hardware exception (type 3), deliver error code, valid.
    w(f::ENTRY_INTR_INFO, 13 | (3 << 8) | (1 << 11) | (1 << 31));
    w(f::ENTRY_EXCEPTION_ERROR, 0);
}

fn set_edx_eax(regs: &mut GuestRegs, value: u64) {
    regs.rax = value & 0xFFFF_FFFF;
    regs.rdx = value >> 32;
}

impl Host {
    fn guest_rdmsr(&mut self, regs: &mut GuestRegs) {
        let msr = regs.rcx as u32;
        let value = if msr == index::IA32_FEATURE_CONTROL {
            Ok(*self.stub.backend_mut().feature_control_shadow())
        } else {
            cpu::rdmsr_safe(msr)
        };
        match value {
            Ok(v) => {
                set_edx_eax(regs, v);
                skip_instruction();
            }
            Err(_) => inject_gp(),
        }
    }

    /// The guest's own WRMSR (only IA32_FEATURE_CONTROL is intercepted; MSRs
    /// outside the bitmap ranges always exit). A locked shadow refuses.
    fn guest_wrmsr(&mut self, regs: &mut GuestRegs) {
        let msr = regs.rcx as u32;
        let value = (regs.rdx << 32) | (regs.rax & 0xFFFF_FFFF);
        let ok = if msr == index::IA32_FEATURE_CONTROL {
            let backend = self.stub.backend_mut();
            let caps = *backend.caps();
            let shadow = backend.feature_control_shadow();
            let valid = matches!(validate::wrmsr_check(msr, value, &caps), Some(Ok(())));
            if *shadow & 1 == 0 && valid {
                *shadow = value;
                true
            } else {
                false
            }
        } else {
            // SAFETY: an MSR outside the bitmap ranges (which always exits):
            // executed here in VMX-root mode it changes the host's value too.
            // The observer guest never writes such MSRs; a guest that did
            // could affect the host only through MSRs VM entry does not
            // switch, the same exposure as the shared MSRs in
            // docs/MSR-SEMANTICS.md.
            unsafe { cpu::wrmsr_safe(msr, value) }.is_ok()
        };
        if ok {
            skip_instruction();
        } else {
            inject_gp();
        }
    }

    /// Drains COM1 into the request handler. Once a byte arrives, keeps
    /// polling until the response is out and the line is quiet (the client
    /// is stop-and-wait), or until the line stays idle.
    fn serve_uart(&mut self) {
        let mut active = false;
        let mut replied = false;
        let mut idle = 0u32;
        loop {
            if let Some(byte) = self.uart.try_read() {
                active = true;
                idle = 0;
                let uart = &mut self.uart;
                self.stub.feed(&[byte], |response| {
                    uart.write_all(response);
                    replied = true;
                });
                continue;
            }
            if !active || replied {
                return;
            }
            idle += 1;
            if idle > IDLE_POLLS {
                return;
            }
        }
    }

    fn on_exit(&mut self, regs: &mut GuestRegs) {
        self.exits += 1;
        let full = r(f::EXIT_REASON) as u32;
        if full & (1 << 31) != 0 {
            say!("HV VM-entry failure, exit reason {full:#x}");
            fatal("VM entry");
        }
        match full & 0xFFFF {
            reason::PREEMPTION_TIMER => {}
            reason::RDMSR => self.guest_rdmsr(regs),
            reason::WRMSR => self.guest_wrmsr(regs),
            reason::VMCALL => {
                skip_instruction();
                if !self.ready {
                    self.ready = true;
                    say!("READY");
                }
            }
            reason::CPUID => {
                let c = cpu::cpuid(regs.rax as u32, regs.rcx as u32);
                regs.rax = c.eax.into();
                regs.rbx = c.ebx.into();
                regs.rcx = c.ecx.into();
                regs.rdx = c.edx.into();
                skip_instruction();
            }
            other => {
                say!(
                    "HV unexpected VM exit {other} qualification {:#x} rip {:#x}",
                    r(0x6400),
                    r(f::GUEST_RIP)
                );
                fatal("unexpected VM exit");
            }
        }
        if self.ready {
            self.serve_uart();
        }
    }
}

/// Called by the boot.s trampoline on every VM exit.
#[no_mangle]
extern "C" fn hv_vmexit(regs: &mut GuestRegs) {
    host().on_exit(regs);
}

/// Called by the trampoline if VMRESUME fails.
#[no_mangle]
extern "C" fn hv_vmresume_failed() -> ! {
    let error = r(vmx::VM_INSTRUCTION_ERROR);
    say!("HV VMRESUME failed, VM-instruction error {error}");
    fatal("VMRESUME")
}
