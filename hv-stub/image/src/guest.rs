//! The observer guest: a 64-bit guest sharing the host's page tables, GDT
//! and IDT (its own stack and TSS). It reads every watched MSR with RDMSR,
//! prints all of them once, then prints each change, as lines
//! `OBS <msr hex> <value hex>` on port 0xE9. It handles #GP itself through
//! the same fault-safe RDMSR as the host (an MSR this CPU lacks is reported
//! `ABSENT <msr hex>` and not watched).

use hv_stub::msr::index::*;

use crate::{cpu, say, vmx};

/// The guest-applied MSRs of the PsWriteMsr page except IA32_SMBASE (never
/// readable outside SMM), plus FS/GS base, LSTAR (shared) and
/// KERNEL_GS_BASE (held in the VM-entry MSR-load area).
pub const WATCHED: [u32; 17] = [
    IA32_SYSENTER_CS,
    IA32_SYSENTER_ESP,
    IA32_SYSENTER_EIP,
    IA32_DEBUGCTL,
    IA32_PAT,
    IA32_EFER,
    IA32_PERF_GLOBAL_CTRL,
    IA32_BNDCFGS,
    IA32_RTIT_CTL,
    IA32_PKRS,
    IA32_S_CET,
    IA32_INTERRUPT_SSP_TABLE_ADDR,
    IA32_FEATURE_CONTROL,
    IA32_FS_BASE,
    IA32_GS_BASE,
    IA32_LSTAR,
    IA32_KERNEL_GS_BASE,
];

fn observe(msr: u32, value: u64) {
    say!("OBS {msr:x} {value:x}");
}

/// The guest's own WRMSR of IA32_KERNEL_GS_BASE (held in the VM-entry
/// MSR-load area) must survive a VM exit: CPUID always exits, so write,
/// CPUID, read back, and restore the original value.
fn check_kernel_gs_base_kept() {
    const PROBE: u64 = 0xFFFF_8000_5EED_0000;
    let original = cpu::rdmsr_safe(IA32_KERNEL_GS_BASE).unwrap_or(0);
    // SAFETY: KERNEL_GS_BASE only matters to SWAPGS, which neither this
    // guest nor the host executes; the original value is restored below.
    let wrote = unsafe { cpu::wrmsr_safe(IA32_KERNEL_GS_BASE, PROBE) }.is_ok();
    let _ = cpu::cpuid(0, 0);
    let read = cpu::rdmsr_safe(IA32_KERNEL_GS_BASE);
    // SAFETY: as above.
    let _ = unsafe { cpu::wrmsr_safe(IA32_KERNEL_GS_BASE, original) };
    if wrote && read == Ok(PROBE) {
        say!("GUEST kernel-gs-base kept across VM exits");
    } else {
        say!("GUEST kernel-gs-base lost across VM exits: {read:x?}");
    }
}

/// GUEST_RIP. Entered by VMLAUNCH with RSP at the top of the guest stack.
pub extern "C" fn guest_main() -> ! {
    check_kernel_gs_base_kept();
    let mut last = [None::<u64>; WATCHED.len()];
    for (slot, &msr) in last.iter_mut().zip(WATCHED.iter()) {
        match cpu::rdmsr_safe(msr) {
            Ok(value) => {
                observe(msr, value);
                *slot = Some(value);
            }
            Err(_) => say!("ABSENT {msr:x}"),
        }
    }
    // Our own WRMSR to the (locked) IA32_FEATURE_CONTROL shadow must raise
    // #GP, injected by the host.
    let feature_control = cpu::rdmsr_safe(IA32_FEATURE_CONTROL).unwrap_or(0);
    // SAFETY: the write is intercepted by the MSR bitmap and never reaches
    // the processor; the host either injects #GP (recovered by the fix-up)
    // or updates its shadow.
    match unsafe { cpu::wrmsr_safe(IA32_FEATURE_CONTROL, feature_control) } {
        Ok(()) => say!("GUEST feature-control write accepted"),
        Err(_) => say!("GUEST feature-control write #GP"),
    }
    vmx::vmcall();
    let mut sweeps: u64 = 0;
    loop {
        for (slot, &msr) in last.iter_mut().zip(WATCHED.iter()) {
            let Some(previous) = *slot else { continue };
            match cpu::rdmsr_safe(msr) {
                Ok(value) if value != previous => {
                    observe(msr, value);
                    *slot = Some(value);
                }
                Ok(_) => {}
                Err(_) => {
                    say!("GUEST rdmsr {msr:x} #GP");
                    *slot = None;
                }
            }
        }
        sweeps = sweeps.wrapping_add(1);
        // A heartbeat so a test can tell the guest still runs (about every
        // 2 s of wall time under Bochs at ips=1000000 on a busy machine).
        if sweeps & 0x7FFF == 0 {
            say!("ALIVE {sweeps:x}");
        }
    }
}
