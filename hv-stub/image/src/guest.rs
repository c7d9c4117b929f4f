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

/// `prefix` names the processor on an application processor ("CPU1 "),
/// empty on the boot processor.
fn observe(prefix: &str, msr: u32, value: u64) {
    say!("{prefix}OBS {msr:x} {value:x}");
}

/// Reads every watched MSR once; an MSR this CPU lacks is reported ABSENT
/// and not watched.
fn first_sweep(prefix: &str) -> [Option<u64>; WATCHED.len()] {
    let mut last = [None::<u64>; WATCHED.len()];
    for (slot, &msr) in last.iter_mut().zip(WATCHED.iter()) {
        match cpu::rdmsr_safe(msr) {
            Ok(value) => {
                observe(prefix, msr, value);
                *slot = Some(value);
            }
            Err(_) => say!("{prefix}ABSENT {msr:x}"),
        }
    }
    last
}

/// Reads every watched MSR again and prints each change.
fn sweep(last: &mut [Option<u64>; WATCHED.len()], prefix: &str) {
    for (slot, &msr) in last.iter_mut().zip(WATCHED.iter()) {
        let Some(previous) = *slot else { continue };
        match cpu::rdmsr_safe(msr) {
            Ok(value) if value != previous => {
                observe(prefix, msr, value);
                *slot = Some(value);
            }
            Ok(_) => {}
            Err(_) => {
                say!("{prefix}GUEST rdmsr {msr:x} #GP");
                *slot = None;
            }
        }
    }
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
    let mut last = first_sweep("");
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
        sweep(&mut last, "");
        sweeps = sweeps.wrapping_add(1);
        // A heartbeat so a test can tell the guest still runs (about every
        // 2 s of wall time under Bochs at ips=1000000 on a busy machine).
        if sweeps & 0x7FFF == 0 {
            say!("ALIVE {sweeps:x}");
        }
    }
}

/// GUEST_RIP on an application processor (observer guest only): the same
/// watch, each line prefixed with the processor's index (`CPU1 OBS ...`),
/// no READY and no heartbeat. Entered by VMLAUNCH with RSI = its index.
pub extern "C" fn ap_guest_main(_rdi: u64, cpu: u64) -> ! {
    let mut prefix = Prefix::default();
    let _ = core::fmt::Write::write_fmt(&mut prefix, format_args!("CPU{cpu} "));
    let prefix = prefix.as_str();
    let mut last = first_sweep(prefix);
    loop {
        sweep(&mut last, prefix);
    }
}

/// A short line prefix formatted without an allocator.
#[derive(Default)]
struct Prefix {
    bytes: [u8; 16],
    len: usize,
}

impl Prefix {
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("CPU? ")
    }
}

impl core::fmt::Write for Prefix {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        if end > self.bytes.len() {
            return Err(core::fmt::Error);
        }
        self.bytes[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}
