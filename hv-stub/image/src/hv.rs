//! The hypervisor's start: enters VMX operation, decides the guest (the
//! Linux payload a disk made by build-disk.sh carries, else the observer
//! loop), writes the VMCS controls and host state, has `guest_state` write
//! the guest state, launches, and from then on runs `exits` and the
//! debugger `link` on every VM exit.

use core::ptr::addr_of_mut;
use core::sync::atomic::{AtomicBool, Ordering};

use hv_stub::msr::{entry, exit, field, index};
use hv_stub::{MsrEntry, Stub};
use pulse_proto::message::caps;

use hv_stub::cpus::CpuState;

use crate::backend::{GuestCpu, RealVmx};
use crate::caps::*;
use crate::desc::{self, CODE64, DATA, HOST_TR};
use crate::exits::{FixedCrs, GuestRegs, Next, CR4_OSXSAVE, CR4_VMXE};
use crate::guest_state::{self, Initial};
use crate::link::{Link, PollPeriod};
use crate::uart::Uart;
use crate::vmcs::*;
use crate::{cpu, entropy, ept, firmware, guest, key, linux, memmap, say, vmx};

const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48B;
const IA32_VMX_EPT_VPID_CAP: u32 = 0x48C;
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
const LOAD_AREA_SLOTS: usize = 8;
const STACK: usize = 64 * 1024;
const CR0_PE: u64 = 1;
const CR0_PG: u64 = 1 << 31;
/// Linux's 64-bit entry: PE, MP, ET, NE, PG; CR4.PAE; EFER.LME|LMA.
const LINUX_CR0: u64 = 0x8000_0023;
const LINUX_CR4: u64 = 1 << 5;
const LINUX_EFER: u64 = 0x500;
const DEFAULT_PAT: u64 = 0x0007_0406_0007_0406;
/// Guest activity state "HLT" (VMCS guest activity state field).
const ACTIVITY_HLT: u64 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestKind {
    Observer,
    Linux,
}

/// Instructions the guest may use only if a secondary control enables them
/// (else CPUID hides them).
#[derive(Clone, Copy, Default)]
pub struct GuestHas {
    pub rdtscp: bool,
    pub invpcid: bool,
    pub xsaves: bool,
}

/// Memory the processor owns in VMX operation, plus the exit and observer
/// stacks. Zeroed (.bss), 4 KiB-aligned, identity-mapped, hidden from a
/// Linux guest by EPT.
#[repr(C, align(4096))]
struct VmxPages {
    vmxon: [u8; 4096],
    vmcs: [u8; 4096],
    msr_bitmap: [u8; 4096],
    io_bitmap_a: [u8; 4096],
    io_bitmap_b: [u8; 4096],
    load_area: [MsrEntry; LOAD_AREA_SLOTS],
    exit_stack: [u8; STACK],
    guest_stack: [u8; STACK],
}

static mut PAGES: VmxPages = VmxPages {
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
pub struct Host {
    pub link: Link,
    pub kind: GuestKind,
    /// The observer guest said READY (a Linux guest is served at once).
    pub ready: bool,
    pub exits: u64,
    pub fixed_crs: FixedCrs,
    pub guest_has: GuestHas,
    pub com1_noted: bool,
    pub com1_write_reported: bool,
    pub poll: PollPeriod,
    /// IA32_VMX_MISC[4:0]: the timer counts TSC >> this.
    pub timer_rate: u32,
    /// The value last written to the VMX-preemption-timer field.
    pub timer_value: u64,
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

extern "C" {
    fn hv_vmexit_entry();
}

/// Sets up VMX and launches the guest. Never returns.
pub fn start() -> ! {
    // Before anything reuses the low pages boot.s filled.
    let firmware_map = firmware::e820();
    let payload = firmware::payload();
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
    let kind = if payload.is_some() {
        GuestKind::Linux
    } else {
        GuestKind::Observer
    };
    let uart = Uart::detect_com1();
    if uart.is_none() {
        say!("HV no UART at COM1 (0x3f8): no debugger link; the guest runs without it");
    }

    // Host CR0/CR4: the VMX fixed bits, CR4.VMXE, and CR4.OSXSAVE where the
    // processor has XSAVE (so the host can execute a guest's XSETBV).
    let xsave = l1.ecx >> 26 & 1 != 0;
    let cr0 = fixed(cpu::read_cr0(), IA32_VMX_CR0_FIXED0, IA32_VMX_CR0_FIXED1);
    let cr4 = fixed(
        cpu::read_cr4() | CR4_VMXE | if xsave { CR4_OSXSAVE } else { 0 },
        IA32_VMX_CR4_FIXED0,
        IA32_VMX_CR4_FIXED1,
    );
    // SAFETY: the fixed bits only add PE/PG/NE (already set by boot.s) and
    // VMXE; OSXSAVE only enables XGETBV/XSETBV; paging, PAE and OSFXSR stay.
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
    let timer = if uart.is_some() {
        PIN_PREEMPTION_TIMER
    } else {
        0
    };
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
        GuestKind::Linux => PROC_USE_MSR_BITMAPS | PROC_USE_IO_BITMAPS | PROC_SECONDARY,
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
    let guest_has = GuestHas {
        rdtscp: proc2 & PROC2_RDTSCP != 0,
        invpcid: proc2 & PROC2_INVPCID != 0,
        xsaves: proc2 & PROC2_XSAVES != 0,
    };
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
    say!("HV controls pin={pin:#x} proc={proc:#x} proc2={proc2:#x} entry={entry_ctls:#x} exit={exit_ctls:#x}");
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
    let rate = misc & 0x1F;
    let poll_ticks = match kind {
        GuestKind::Observer => OBSERVER_POLL_TICKS,
        GuestKind::Linux => LINUX_POLL_TICKS,
    };
    let timer_value = (poll_ticks >> rate).max(1);
    w(f::PREEMPTION_TIMER, timer_value);

    // MSR bitmaps: nothing exits except IA32_FEATURE_CONTROL (the guest sees
    // the shadow) and, for a Linux guest, the VMX capability MSRs (absent on
    // a processor without VMX).
    intercept_msr(&mut pages.msr_bitmap, index::IA32_FEATURE_CONTROL);
    if kind == GuestKind::Linux {
        for msr in hv_stub::policy::VMX_CAPABILITY_MSRS {
            intercept_msr(&mut pages.msr_bitmap, msr);
        }
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
    for msr in hv_stub::policy::load_area_msrs(&caps) {
        let value = match kind {
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
    let cr3 = cpu::read_cr3();
    let pat = cpu::rdmsr_safe(index::IA32_PAT).unwrap_or(DEFAULT_PAT);
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

    // --- guest state ------------------------------------------------------
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
    let mut guest_rsi = 0;
    // The guest's view of IA32_FEATURE_CONTROL: a Linux guest sees it locked
    // with VMX disabled, matching CPUID without VMX.
    let mut feature_control_shadow = feature_control;
    match kind {
        GuestKind::Observer => {
            // Shares the host's CRs; no masks (it never writes them).
            w(f::CR0_MASK, 0);
            w(f::CR4_MASK, 0);
            let init = Initial {
                cr0,
                cr0_shadow: cr0,
                cr3,
                cr4,
                cr4_shadow: cr4,
                pat,
                efer,
                perf_global,
                entry_ctls,
                rip: guest::guest_main as *const () as u64,
                // As if called: RSP = 8 mod 16 at the first instruction.
                rsp: pages.guest_stack.as_ptr_range().end as u64 - 8,
            };
            guest_state::observer(&init, &tables);
        }
        GuestKind::Linux => {
            let Some(payload) = payload.as_ref() else {
                fatal("no payload")
            };
            let map = memmap::guest_map(&firmware_map);
            for e in map.iter() {
                say!("HV guest e820 {:#x}-{:#x} type {}", e.addr, e.end(), e.kind);
            }
            let loaded = match linux::load(payload, &map) {
                Ok(loaded) => loaded,
                Err(error) => {
                    say!("HV ERROR {error}");
                    crate::console::shutdown()
                }
            };
            let eptp = match ept::build(&memmap::hv_stub_ranges(), map.ram_top()) {
                Ok(eptp) => eptp,
                Err(why) => fatal(why),
            };
            w(f::EPT_POINTER, eptp);
            w(f::CR0_MASK, fixed_crs.cr0_mask());
            w(f::CR4_MASK, fixed_crs.cr4_mask());
            let init = Initial {
                cr0: (LINUX_CR0 | fixed_crs.cr0_fixed0) & fixed_crs.cr0_fixed1,
                cr0_shadow: LINUX_CR0,
                cr3: loaded.cr3,
                cr4: LINUX_CR4 | fixed_crs.cr4_fixed0,
                cr4_shadow: LINUX_CR4,
                pat: DEFAULT_PAT,
                efer: LINUX_EFER,
                perf_global,
                entry_ctls,
                rip: loaded.rip,
                rsp: linux::STACK_TOP,
            };
            guest_state::linux(&init);
            guest_rsi = loaded.rsi;
            crate::exits::FORWARD_HOST_NMIS.store(true, Ordering::SeqCst);
            feature_control_shadow &= !0b110;
            say!(
                "HV Linux: entry {:#x}, boot_params {:#x}, {} command-line bytes",
                loaded.rip,
                loaded.rsi,
                payload.cmdline().len()
            );
        }
    }

    // --- the request handler, then launch ---------------------------------
    let backend = RealVmx::new(
        caps,
        &mut pages.load_area[..],
        load_count,
        feature_control_shadow,
        kind == GuestKind::Linux,
    );
    let guest_caps = match kind {
        GuestKind::Observer => caps::REAL_VMX | caps::GUEST_OBSERVER,
        GuestKind::Linux => caps::REAL_VMX,
    };
    let mut stub = Stub::new(
        GuestCpu {
            vmx: backend,
            state: CpuState::Running,
        },
        guest_caps,
        entropy::sample(),
    );
    // Session numbers and handshake nonces (docs/SECURITY.md).
    for _ in 0..4 {
        stub.add_entropy(entropy::sample());
    }
    stub.set_entropy_source(entropy::sample);
    if let Some(key) = key::configured() {
        stub.set_key(key);
        say!("HV link: authenticated (a key is set)");
    }
    let host = Host {
        link: Link::new(stub, uart),
        kind,
        ready: kind == GuestKind::Linux,
        exits: 0,
        fixed_crs,
        guest_has,
        com1_noted: false,
        com1_write_reported: false,
        poll: PollPeriod::new(poll_ticks),
        timer_rate: rate as u32,
        timer_value,
    };
    // SAFETY: written once, before VMLAUNCH; nothing else refers to HOST
    // until the first VM exit.
    unsafe { *addr_of_mut!(HOST) = Some(host) };
    say!("HV launching guest");
    // SAFETY: the VMCS is complete (above); RSI is what the guest's entry
    // point expects (boot_params for Linux).
    unsafe { vmx::vmlaunch(guest_rsi) };
    let error = r(vmx::VM_INSTRUCTION_ERROR);
    say!("HV ERROR VMLAUNCH failed, VM-instruction error {error}");
    fatal("VMLAUNCH")
}

/// Called by the boot.s trampoline on every VM exit.
#[no_mangle]
extern "C" fn hv_vmexit(regs: &mut GuestRegs) {
    let host = host();
    match host.on_exit(regs) {
        Next::Resume => {
            if host.ready && host.link.has_uart() {
                let busy = host.link.serve();
                let halted = r(f::GUEST_ACTIVITY) == ACTIVITY_HLT;
                let value = (host.poll.next(busy, halted) >> host.timer_rate).max(1);
                if value != host.timer_value {
                    host.timer_value = value;
                    w(f::PREEMPTION_TIMER, value);
                }
            }
        }
        Next::Stop => {
            say!("HV guest stopped; the debugger link is still served");
            host.link.serve_forever()
        }
    }
}

/// Called by the trampoline if VMRESUME fails.
#[no_mangle]
extern "C" fn hv_vmresume_failed() -> ! {
    let error = r(vmx::VM_INSTRUCTION_ERROR);
    say!("HV ERROR VMRESUME failed, VM-instruction error {error}");
    host().link.serve_forever()
}
