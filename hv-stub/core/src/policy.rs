//! How hv-stub configures VMX, where the model and the bare-metal image must
//! agree: one home for these decisions.

use crate::caps::CpuCaps;
use crate::msr::{entry, exit, index};

/// MSRs hv-stub hides from its guest: the VMX capability MSRs, since the
/// guest is told it has no VMX (CPUID.1:ECX\[5\] = 0, IA32_FEATURE_CONTROL
/// shadow without VMX enabled). The guest's RDMSR/WRMSR of them exits and
/// gets #GP, and the debugger's `PsReadMsr`/`PsWriteMsr` answer the same.
pub fn hidden_from_guest(msr: u32) -> bool {
    VMX_CAPABILITY_MSRS.contains(&msr)
}

/// The VMX capability MSRs, IA32_VMX_BASIC ..= IA32_VMX_EXIT_CTLS2.
pub const VMX_CAPABILITY_MSRS: core::ops::RangeInclusive<u32> =
    index::IA32_VMX_BASIC..=index::IA32_VMX_EXIT_CTLS2;

/// MSRs hv-stub keeps in its VM-entry MSR-load area. That area is also the
/// VM-exit MSR-store area (SDM 27.4), so the guest's own WRMSR is saved at
/// every VM exit and loaded back at the next entry, and the routing reads and
/// writes what the guest holds.
///
/// * IA32_KERNEL_GS_BASE: not switched by VMX; kept there so the area path
///   of the routing is always in use (SWAPGS of a 64-bit guest depends on
///   the store half).
/// * IA32_PERF_GLOBAL_CTRL where "load IA32_PERF_GLOBAL_CTRL" exists but
///   "save IA32_PERF_GLOBAL_CTRL" does not: VM exit loads the host's value
///   and nothing saves the guest's, so the area carries it across.
pub fn load_area_msrs(caps: &CpuCaps) -> impl Iterator<Item = u32> {
    let perf_global_ctrl_unsaved = caps.entry_allowed(entry::LOAD_IA32_PERF_GLOBAL_CTRL)
        && caps.exit_allowed1 & exit::SAVE_IA32_PERF_GLOBAL_CTRL == 0
        && caps.pmu_gp_counters > 0;
    [
        Some(index::IA32_KERNEL_GS_BASE),
        perf_global_ctrl_unsaved.then_some(index::IA32_PERF_GLOBAL_CTRL),
    ]
    .into_iter()
    .flatten()
}
