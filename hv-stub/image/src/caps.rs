//! Fills hv-stub's `CpuCaps` from CPUID and the VMX capability MSRs of the
//! processor we run on.

use hv_stub::CpuCaps;

use crate::cpu::{cpuid, rdmsr_safe, CpuidResult};

pub const IA32_MCG_CAP: u32 = 0x179;
pub const IA32_VMX_BASIC: u32 = 0x480;
pub const IA32_VMX_MISC: u32 = 0x485;
pub const IA32_VMX_CR0_FIXED0: u32 = 0x486;
pub const IA32_VMX_CR0_FIXED1: u32 = 0x487;
pub const IA32_VMX_CR4_FIXED0: u32 = 0x488;
pub const IA32_VMX_CR4_FIXED1: u32 = 0x489;
pub const IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48D;
pub const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48E;
pub const IA32_VMX_TRUE_EXIT_CTLS: u32 = 0x48F;
pub const IA32_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;

/// DEBUGCTL bits of current Intel parts: LBR, BTF and 6..=15.
const DEBUGCTL_VALID: u64 = 0b11 | (0x3FF << 6);
/// IA32_RTIT_CTL bits with two address ranges (only used if Intel PT exists).
const RTIT_CTL_VALID: u64 =
    0b11_1111 | (0x7F << 7) | (0xF << 14) | (0xF << 19) | (0xF << 24) | (0xFF << 32);

fn bit(value: u32, n: u32) -> bool {
    value >> n & 1 != 0
}

/// `(wanted | allowed0) & allowed1` from a TRUE capability MSR.
pub fn adjust_controls(msr: u32, wanted: u32) -> u32 {
    let cap = rdmsr_safe(msr).unwrap_or(0);
    (wanted | cap as u32) & (cap >> 32) as u32
}

pub fn detect() -> CpuCaps {
    let max_leaf = cpuid(0, 0).eax;
    let leaf = |n: u32| {
        if max_leaf >= n {
            cpuid(n, 0)
        } else {
            CpuidResult::default()
        }
    };
    let l1 = leaf(1);
    let l7 = leaf(7);
    let pmu = leaf(0xA);
    let pmu_version = pmu.eax & 0xFF;
    // IA32_PERF_GLOBAL_CTRL exists from architectural perfmon version 2.
    // CPUID may claim a PMU v2 whose IA32_PERF_GLOBAL_CTRL is not there
    // (emulators): trust the MSR itself.
    let perf_global_ctrl = rdmsr_safe(0x38F).is_ok();
    let (gp, fixed) = if pmu_version >= 2 && perf_global_ctrl {
        (((pmu.eax >> 8) & 0xFF) as u8, (pmu.edx & 0x1F) as u8)
    } else {
        (0, 0)
    };
    let smx = bit(l1.ecx, 6);
    let sgx = bit(l7.ebx, 2);
    let sgx_lc = bit(l7.ecx, 30);
    let lmce = rdmsr_safe(IA32_MCG_CAP).is_ok_and(|v| v >> 27 & 1 != 0);
    let mut feature_control_valid = 0b101; // lock, VMX outside SMX
    if smx {
        feature_control_valid |= 0b10 | (0x7F << 8) | (1 << 15);
    }
    if sgx_lc {
        feature_control_valid |= 1 << 17;
    }
    if sgx {
        feature_control_valid |= 1 << 18;
    }
    if lmce {
        feature_control_valid |= 1 << 20;
    }
    let intel_pt = bit(l7.ebx, 25);
    CpuCaps {
        name: "real-vmx",
        // WRMSR's canonical checks use the widest linear address the CPU
        // supports: 57 bits with 5-level paging (CPUID.(7,0):ECX[16]).
        linear_address_bits: if bit(l7.ecx, 16) { 57 } else { 48 },
        debugctl_valid: DEBUGCTL_VALID,
        // Bochs offers "load debug controls" without the MSR itself.
        has_debugctl: rdmsr_safe(0x1D9).is_ok(),
        pmu_gp_counters: gp,
        pmu_fixed_counters: fixed,
        mpx: bit(l7.ebx, 14),
        intel_pt,
        rtit_ctl_valid: if intel_pt { RTIT_CTL_VALID } else { 0 },
        pks: bit(l7.ecx, 31),
        cet_shstk: bit(l7.ecx, 7),
        cet_ibt: bit(l7.edx, 20),
        feature_control_valid,
        entry_allowed1: (rdmsr_safe(IA32_VMX_TRUE_ENTRY_CTLS).unwrap_or(0) >> 32) as u32,
        exit_allowed1: (rdmsr_safe(IA32_VMX_TRUE_EXIT_CTLS).unwrap_or(0) >> 32) as u32,
        // Fields added to CpuCaps later keep the modern profile's values.
        ..CpuCaps::MODERN
    }
}
