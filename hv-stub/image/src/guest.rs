//! The observer guest: a 64-bit guest sharing the host's page tables, GDT
//! and IDT (its own stack and TSS). It reads every watched MSR with RDMSR,
//! prints all of them once, then prints each change, as lines
//! `OBS <msr hex> <value hex>` on port 0xE9. It handles #GP itself through
//! the same fault-safe RDMSR as the host (an MSR this CPU lacks is reported
//! `ABSENT <msr hex>` and not watched).

use hv_stub::msr::index::{
    IA32_CSTAR, IA32_FEATURE_CONTROL, IA32_FMASK, IA32_KERNEL_GS_BASE, IA32_STAR, IA32_TSC_AUX,
};
use hv_stub::msr_table;

use crate::{cpu, say, vmx};

/// The shared system-call MSRs the observer leaves out of the core's
/// watched list. Nothing of VMX switches them, the same as IA32_LSTAR,
/// which stays and stands for them; and the Bochs tests write a test value
/// to every MSR the observer reports (tests/bochs_e2e.rs), LSTAR's only.
const NOT_WATCHED: [u32; 4] = [IA32_STAR, IA32_CSTAR, IA32_FMASK, IA32_TSC_AUX];

/// The MSRs this guest reads after every VM entry: hv-stub's watched list
/// ([`msr_table::WATCHED`]: the routed MSRs a guest can read, so not
/// IA32_SMBASE) without [`NOT_WATCHED`], in the core's order.
pub const WATCHED: [u32; msr_table::WATCHED.len() - NOT_WATCHED.len()] =
    without(&msr_table::WATCHED, &NOT_WATCHED);

/// `list` without the numbers in `skip`, each of which it must hold.
const fn without<const N: usize>(list: &[u32], skip: &[u32]) -> [u32; N] {
    let mut out = [0; N];
    let (mut i, mut n) = (0, 0);
    while i < list.len() {
        let mut skipped = false;
        let mut j = 0;
        while j < skip.len() {
            skipped |= list[i] == skip[j];
            j += 1;
        }
        if !skipped {
            out[n] = list[i];
            n += 1;
        }
        i += 1;
    }
    assert!(n == N, "a skipped MSR is not in the list");
    out
}

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
