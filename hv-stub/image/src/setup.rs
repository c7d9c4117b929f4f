//! The VMCS every processor gets: the VM-execution, entry and exit controls
//! chosen once from the capability MSRs (`Config`), VMX operation entered
//! with them, the MSR and I/O bitmaps, the VM-entry MSR-load area and the
//! host state. The guest state is `guest_state`'s.

use hv_stub::msr::bits::CR0_PG;
use hv_stub::msr::index::{
    self, IA32_VMX_BASIC, IA32_VMX_CR0_FIXED0, IA32_VMX_CR0_FIXED1, IA32_VMX_CR4_FIXED0,
    IA32_VMX_CR4_FIXED1, IA32_VMX_EPT_VPID_CAP, IA32_VMX_MISC, IA32_VMX_PROCBASED_CTLS2,
    IA32_VMX_TRUE_ENTRY_CTLS, IA32_VMX_TRUE_EXIT_CTLS, IA32_VMX_TRUE_PINBASED_CTLS,
    IA32_VMX_TRUE_PROCBASED_CTLS,
};
use hv_stub::msr::{exit, field};
use hv_stub::{policy, CpuCaps, MsrEntry};

use crate::caps::{adjust_controls, detect};
use crate::desc::{self, CODE64, DATA, HOST_TR};
use crate::exits::{FixedCrs, CR0_PE, CR4_OSXSAVE, CR4_VMXE};
use crate::hv::{fatal, GuestHas, GuestKind};
use crate::vmcs::*;
use crate::{cpu, say, vmx};

/// IA32_VMX_EPT_VPID_CAP: 4-level walk, write-back structures, 2 MiB pages.
const EPT_CAPS_NEEDED: u64 = (1 << 6) | (1 << 14) | (1 << 16);

/// TSC ticks between VMX-preemption-timer exits while the guest runs, i.e.
/// how often COM1 is polled (`link::PollPeriod` backs off while the guest
/// is halted). Observer: 2000 (Bochs: TSC = instructions; fast link
/// replies). Linux: the poll must come before the 16-byte receive FIFO can
/// overflow (16 bytes at 115200 baud = 1.4 ms) at Bochs's `ips=50000000`
/// (50 000 ticks = 1 ms), and measured to slow the guest little
/// (docs/HV-STUB.md).
const OBSERVER_POLL_TICKS: u64 = 2000;
const LINUX_POLL_TICKS: u64 = 50_000;
pub const LOAD_AREA_SLOTS: usize = 8;
pub const STACK: usize = 64 * 1024;
pub const DEFAULT_PAT: u64 = 0x0007_0406_0007_0406;

/// Memory the processor owns in VMX operation, plus the exit and observer
/// stacks. Zeroed (.bss), 4 KiB-aligned, identity-mapped, hidden from a
/// Linux guest by EPT.
#[repr(C, align(4096))]
pub struct VmxPages {
    pub vmxon: [u8; 4096],
    pub vmcs: [u8; 4096],
    pub msr_bitmap: [u8; 4096],
    pub io_bitmap_a: [u8; 4096],
    pub io_bitmap_b: [u8; 4096],
    pub load_area: [MsrEntry; LOAD_AREA_SLOTS],
    pub exit_stack: [u8; STACK],
    pub guest_stack: [u8; STACK],
}

impl VmxPages {
    pub const ZERO: VmxPages = VmxPages {
        vmxon: [0; 4096],
        vmcs: [0; 4096],
        msr_bitmap: [0; 4096],
        io_bitmap_a: [0; 4096],
        io_bitmap_b: [0; 4096],
        load_area: [MsrEntry {
            index: 0,
            reserved: 0,
            value: 0,
        }; LOAD_AREA_SLOTS],
        exit_stack: [0; STACK],
        guest_stack: [0; STACK],
    };
}

/// What every processor's VMCS shares, decided once from the boot
/// processor's capability MSRs.
#[derive(Clone, Copy)]
pub struct Config {
    pub kind: GuestKind,
    pub caps: CpuCaps,
    pub revision: u32,
    /// IA32_FEATURE_CONTROL as the firmware (or hv-stub) locked it.
    pub feature_control: u64,
    pub pin: u32,
    pub proc: u32,
    pub proc2: u32,
    pub entry_ctls: u32,
    pub exit_ctls: u32,
    /// Host CR0/CR4: the VMX fixed bits, CR4.VMXE, and CR4.OSXSAVE where the
    /// processor has XSAVE (so the host can execute a guest's XSETBV).
    pub cr0: u64,
    pub cr4: u64,
    pub fixed_crs: FixedCrs,
    pub guest_has: GuestHas,
    /// IA32_VMX_MISC[4:0]: the timer counts TSC >> this.
    pub timer_rate: u32,
    pub poll_ticks: u64,
    /// The first VMX-preemption-timer value.
    pub timer_value: u64,
}

fn fixed(value: u64, fixed0_msr: u32, fixed1_msr: u32) -> u64 {
    let fixed0 = cpu::rdmsr_safe(fixed0_msr).unwrap_or(0);
    let fixed1 = cpu::rdmsr_safe(fixed1_msr).unwrap_or(!0);
    (value | fixed0) & fixed1
}

fn intercept_msr(bitmap: &mut [u8; 4096], msr: u32) {
    // Read bitmap for low MSRs at 0, write bitmap for low MSRs at 2048.
    let i = msr as usize;
    bitmap[i / 8] |= 1 << (i % 8);
    bitmap[2048 + i / 8] |= 1 << (i % 8);
}

/// Makes IA32_FEATURE_CONTROL allow VMXON (locking it as firmware would if
/// it was left unlocked) and returns it.
pub fn enable_vmx() -> u64 {
    if cpu::cpuid(1, 0).ecx >> 5 & 1 == 0 {
        fatal("no VMX (CPUID.1:ECX[5])");
    }
    let mut feature_control = cpu::rdmsr_safe(index::IA32_FEATURE_CONTROL).unwrap_or(0);
    if let Some(enabled) = policy::feature_control_to_enable_vmx(feature_control) {
        // SAFETY: IA32_FEATURE_CONTROL only gates VMXON.
        let _ = unsafe { cpu::wrmsr_safe(index::IA32_FEATURE_CONTROL, enabled) };
        feature_control = cpu::rdmsr_safe(index::IA32_FEATURE_CONTROL).unwrap_or(0);
    }
    if !policy::vmxon_allowed(feature_control) {
        fatal("VMX disabled by IA32_FEATURE_CONTROL");
    }
    feature_control
}

impl Config {
    /// Chooses the controls for `kind`: `(wanted | allowed0) & allowed1`.
    /// `link` says whether COM1 has a UART (the preemption timer polls it).
    pub fn choose(kind: GuestKind, feature_control: u64, link: bool) -> Config {
        let caps = detect();
        let basic = cpu::rdmsr_safe(IA32_VMX_BASIC).unwrap_or(0);
        let misc = cpu::rdmsr_safe(IA32_VMX_MISC).unwrap_or(0);
        say!(
            "HV vmx basic={basic:#x} misc={misc:#x} entry1={:#x} exit1={:#x} feature_control={feature_control:#x}",
            caps.entry_allowed1,
            caps.exit_allowed1
        );
        let timer = if link { PIN_PREEMPTION_TIMER } else { 0 };
        let nmi = if kind == GuestKind::Linux {
            PIN_NMI_EXITING
        } else {
            0
        };
        let pin = adjust_controls(IA32_VMX_TRUE_PINBASED_CTLS, timer | nmi);
        if pin & timer != timer {
            fatal("no VMX-preemption timer");
        }
        let proc_wanted = match kind {
            GuestKind::Observer => PROC_USE_MSR_BITMAPS,
            // HLT exits: a processor whose OS parks it (HLT with interrupts
            // off) is seen at once (run::note_parked).
            GuestKind::Linux => {
                PROC_USE_MSR_BITMAPS | PROC_USE_IO_BITMAPS | PROC_SECONDARY | PROC_HLT_EXITING
            }
        };
        let proc = adjust_controls(IA32_VMX_TRUE_PROCBASED_CTLS, proc_wanted);
        let proc2 = if proc & PROC_SECONDARY != 0 {
            adjust_controls(
                IA32_VMX_PROCBASED_CTLS2,
                PROC2_EPT | PROC2_UNRESTRICTED_GUEST | PROC2_RDTSCP | PROC2_INVPCID | PROC2_XSAVES,
            )
        } else {
            0
        };
        let ept_caps = cpu::rdmsr_safe(IA32_VMX_EPT_VPID_CAP).unwrap_or(0);
        if kind == GuestKind::Linux
            && (proc & PROC_USE_IO_BITMAPS == 0
                || proc2 & PROC2_EPT == 0
                || ept_caps & EPT_CAPS_NEEDED != EPT_CAPS_NEEDED)
        {
            fatal("a Linux guest needs I/O bitmaps and EPT (4-level, write-back, 2 MiB pages)");
        }
        // What hv-stub asks for (a 64-bit guest, every MSR load control and
        // their exit partners), as far as this processor allows.
        let entry_ctls = adjust_controls(IA32_VMX_TRUE_ENTRY_CTLS, policy::ENTRY_CONTROLS.bits());
        let exit_ctls = adjust_controls(IA32_VMX_TRUE_EXIT_CTLS, policy::EXIT_CONTROLS.bits());
        say!("HV controls pin={pin:#x} proc={proc:#x} proc2={proc2:#x} entry={entry_ctls:#x} exit={exit_ctls:#x}");

        let xsave = cpu::cpuid(1, 0).ecx >> 26 & 1 != 0;
        let cr0 = fixed(cpu::read_cr0(), IA32_VMX_CR0_FIXED0, IA32_VMX_CR0_FIXED1);
        let cr4 = fixed(
            cpu::read_cr4() | CR4_VMXE | if xsave { CR4_OSXSAVE } else { 0 },
            IA32_VMX_CR4_FIXED0,
            IA32_VMX_CR4_FIXED1,
        );
        let mut fixed_crs = FixedCrs {
            cr0_fixed0: cpu::rdmsr_safe(IA32_VMX_CR0_FIXED0).unwrap_or(0),
            cr0_fixed1: cpu::rdmsr_safe(IA32_VMX_CR0_FIXED1).unwrap_or(!0),
            cr4_fixed0: cpu::rdmsr_safe(IA32_VMX_CR4_FIXED0).unwrap_or(0),
            cr4_fixed1: cpu::rdmsr_safe(IA32_VMX_CR4_FIXED1).unwrap_or(!0),
        };
        if proc2 & PROC2_UNRESTRICTED_GUEST != 0 {
            fixed_crs.cr0_fixed0 &= !(CR0_PE | CR0_PG);
        }
        say!(
            "HV cr0 fixed0={:#x} fixed1={:#x} cr4 fixed0={:#x} fixed1={:#x} host cr4={cr4:#x}",
            fixed_crs.cr0_fixed0,
            fixed_crs.cr0_fixed1,
            fixed_crs.cr4_fixed0,
            fixed_crs.cr4_fixed1
        );
        let timer_rate = (misc & 0x1F) as u32;
        let poll_ticks = match kind {
            GuestKind::Observer => OBSERVER_POLL_TICKS,
            GuestKind::Linux => LINUX_POLL_TICKS,
        };
        Config {
            kind,
            caps,
            revision: (basic & 0x7FFF_FFFF) as u32,
            feature_control,
            pin,
            proc,
            proc2,
            entry_ctls,
            exit_ctls,
            cr0,
            cr4,
            fixed_crs,
            guest_has: GuestHas {
                rdtscp: proc2 & PROC2_RDTSCP != 0,
                invpcid: proc2 & PROC2_INVPCID != 0,
                xsaves: proc2 & PROC2_XSAVES != 0,
            },
            timer_rate,
            poll_ticks,
            timer_value: (poll_ticks >> timer_rate).max(1),
        }
    }
}

/// Sets the host CR0/CR4 the configuration asks for, VMXON with this
/// processor's region, and makes its VMCS current.
pub fn enter_vmx(config: &Config, pages: &mut VmxPages) {
    // SAFETY: the fixed bits only add PE/PG/NE (already set by boot.s) and
    // VMXE; OSXSAVE only enables XGETBV/XSETBV; paging, PAE and OSFXSR stay.
    unsafe {
        cpu::write_cr0(config.cr0);
        cpu::write_cr4(config.cr4);
    }
    pages.vmxon[..4].copy_from_slice(&config.revision.to_le_bytes());
    pages.vmcs[..4].copy_from_slice(&config.revision.to_le_bytes());
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
}

/// After a reset: the host CR0/CR4 again, VMXON with the processor's region
/// and its VMCS current again (its contents were written back by VMCLEAR).
pub fn reenter_vmx(config: &Config, vmxon_pa: u64, vmcs_pa: u64) {
    // SAFETY: as in enter_vmx.
    unsafe {
        cpu::write_cr0(config.cr0);
        cpu::write_cr4(config.cr4);
    }
    // SAFETY: the regions `enter_vmx` prepared, untouched since.
    unsafe {
        if vmx::vmxon(vmxon_pa).is_err() {
            fatal("VMXON failed");
        }
        if vmx::vmptrld(vmcs_pa).is_err() {
            fatal("VMPTRLD failed");
        }
    }
}

/// The host state a VM exit loads on this processor, as read at start.
pub struct HostMsrs {
    pub pat: u64,
    pub efer: u64,
    pub perf_global: u64,
}

impl HostMsrs {
    pub fn read() -> HostMsrs {
        HostMsrs {
            pat: cpu::rdmsr_safe(index::IA32_PAT).unwrap_or(DEFAULT_PAT),
            efer: cpu::rdmsr_safe(index::IA32_EFER).unwrap_or(0),
            perf_global: cpu::rdmsr_safe(index::IA32_PERF_GLOBAL_CTRL).unwrap_or(0),
        }
    }
}

extern "C" {
    fn hv_vmexit_entry();
}

/// Writes the controls, bitmaps, MSR areas and host state of the current
/// VMCS. Returns the number of entries in the VM-entry MSR-load area.
pub fn write_vmcs(
    config: &Config,
    pages: &mut VmxPages,
    tables: &desc::Loaded,
    host: &HostMsrs,
) -> usize {
    let (pin, proc, proc2) = (config.pin, config.proc, config.proc2);
    let (entry_ctls, exit_ctls) = (config.entry_ctls, config.exit_ctls);
    w(f::PIN_BASED, pin.into());
    w(f::PROC_BASED, proc.into());
    if proc & PROC_SECONDARY != 0 {
        w(f::PROC_BASED2, proc2.into());
    }
    w(field::VM_ENTRY_CONTROLS, entry_ctls.into());
    w(field::VM_EXIT_CONTROLS, exit_ctls.into());
    w(f::EXCEPTION_BITMAP, 0);
    w(f::CR3_TARGET_COUNT, 0);
    w(f::EXIT_MSR_LOAD_COUNT, 0);
    w(f::PREEMPTION_TIMER, config.timer_value);

    // MSR bitmaps: what hv-stub's policy intercepts: IA32_FEATURE_CONTROL
    // (the guest sees the shadow) and, for a Linux guest, the VMX capability
    // MSRs (absent on a processor without VMX).
    for msr in policy::intercepted_msrs(config.kind == GuestKind::Linux) {
        intercept_msr(&mut pages.msr_bitmap, msr);
    }
    w(f::MSR_BITMAP, pages.msr_bitmap.as_ptr() as u64);
    if proc & PROC_USE_IO_BITMAPS != 0 {
        // COM1 (0x3F8-0x3FF) is hv-stub's; every other port passes through.
        for port in 0x3F8..=0x3FFusize {
            pages.io_bitmap_a[port / 8] |= 1 << (port % 8);
        }
        w(f::IO_BITMAP_A, pages.io_bitmap_a.as_ptr() as u64);
        w(f::IO_BITMAP_B, pages.io_bitmap_b.as_ptr() as u64);
    }

    // VM-entry MSR-load area: the MSRs hv-stub's policy puts there (the same
    // list sim uses). The VM-exit MSR-store area is the same memory (SDM
    // 27.4): the guest's own WRMSR is stored on exit and loaded again on
    // entry instead of being undone. A Linux guest starts from 0, the
    // observer from the host's values.
    let mut load_count = 0;
    for msr in policy::load_area_msrs(&config.caps) {
        let value = match config.kind {
            GuestKind::Linux => 0,
            GuestKind::Observer => cpu::rdmsr_safe(msr).unwrap_or(0),
        };
        pages.load_area[load_count] = MsrEntry {
            index: msr,
            reserved: 0,
            value,
        };
        load_count += 1;
    }
    let area = pages.load_area.as_ptr() as u64;
    w(field::VM_ENTRY_MSR_LOAD_ADDR, area);
    w(field::VM_ENTRY_MSR_LOAD_COUNT, load_count as u64);
    w(field::VM_EXIT_MSR_STORE_ADDR, area);
    w(field::VM_EXIT_MSR_STORE_COUNT, load_count as u64);
    w(field::VMCS_LINK_POINTER, !0);

    // --- host state -------------------------------------------------------
    w(f::HOST_CR0, config.cr0);
    w(f::HOST_CR3, cpu::read_cr3());
    w(field::HOST_CR4, config.cr4);
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
        w(field::HOST_IA32_PAT, host.pat);
    }
    if exit_ctls & exit::LOAD_IA32_EFER != 0 {
        w(field::HOST_IA32_EFER, host.efer);
    }
    if exit_ctls & exit::LOAD_IA32_PERF_GLOBAL_CTRL != 0 {
        w(field::HOST_IA32_PERF_GLOBAL_CTRL, host.perf_global);
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
    load_count
}
