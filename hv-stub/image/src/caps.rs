//! Fills hv-stub's `CpuCaps` from CPUID and the VMX capability MSRs of the
//! processor we run on.

use hv_stub::msr::index::{
    IA32_DEBUGCTL, IA32_MCG_CAP, IA32_PERF_CAPABILITIES, IA32_PERF_GLOBAL_CTRL,
    IA32_VMX_TRUE_ENTRY_CTLS, IA32_VMX_TRUE_EXIT_CTLS,
};
use hv_stub::CpuCaps;

use crate::cpu::{cpuid, rdmsr_safe, CpuidResult};

/// What CPUID leaf 14H says Intel PT supports, as the validator needs it:
/// the writable IA32_RTIT_CTL bits (SDM 33.2.8.2, each tied to its CPUID
/// feature bit as KVM's `vmx_rtit_ctl_check` does) and the encodings.
struct PtCaps {
    rtit_ctl_valid: u64,
    address_ranges: u8,
    mtc_periods: u16,
    cyc_thresholds: u16,
    psb_periods: u16,
    single_range_output: bool,
}

fn pt_caps(max_leaf: u32) -> Option<PtCaps> {
    if max_leaf < 0x14 {
        return None;
    }
    let l0 = cpuid(0x14, 0);
    let l1 = if l0.eax >= 1 {
        cpuid(0x14, 1)
    } else {
        CpuidResult::default()
    };
    let (cr3_filter, psb_cyc, ip_filter, mtc, ptwrite, pwr_evt) = (
        bit(l0.ebx, 0),
        bit(l0.ebx, 1),
        bit(l0.ebx, 2),
        bit(l0.ebx, 3),
        bit(l0.ebx, 4),
        bit(l0.ebx, 5),
    );
    let (topa, single_range, fabric) = (bit(l0.ecx, 0), bit(l0.ecx, 2), bit(l0.ecx, 3));
    let ranges = if ip_filter { (l1.eax & 0x7) as u8 } else { 0 };
    // TraceEn, OS, User, TSCEn, DisRETC, BranchEn are always there.
    let mut valid: u64 = 1 | 1 << 2 | 1 << 3 | 1 << 10 | 1 << 11 | 1 << 13;
    let optional = [
        (psb_cyc, 1 << 1 | 0xF << 19 | 0xF << 24), // CYCEn, CycThresh, PSBFreq
        (pwr_evt, 1 << 4),                         // PwrEvtEn
        (ptwrite, 1 << 5 | 1 << 12),               // FUPonPTW, PTWEn
        (fabric, 1 << 6),                          // FabricEn
        (cr3_filter, 1 << 7),                      // CR3Filter
        (topa, 1 << 8),                            // ToPA
        (mtc, 1 << 9 | 0xF << 14),                 // MTCEn, MTCFreq
    ];
    for (present, bits) in optional {
        if present {
            valid |= bits;
        }
    }
    for n in 0..u64::from(ranges.min(4)) {
        valid |= 0xF << (32 + 4 * n); // ADDRn_CFG
    }
    Some(PtCaps {
        rtit_ctl_valid: valid,
        address_ranges: ranges,
        mtc_periods: if mtc { (l1.eax >> 16) as u16 } else { 0 },
        cyc_thresholds: if psb_cyc { l1.ebx as u16 } else { 0 },
        psb_periods: if psb_cyc { (l1.ebx >> 16) as u16 } else { 0 },
        single_range_output: single_range,
    })
}

fn bit(value: u32, n: u32) -> bool {
    value >> n & 1 != 0
}

/// `(wanted | allowed0) & allowed1` from a TRUE capability MSR.
pub fn adjust_controls(msr: u32, wanted: u32) -> u32 {
    let cap = rdmsr_safe(msr).unwrap_or(0);
    (wanted | cap as u32) & (cap >> 32) as u32
}

/// Every field is read from the CPU (no `..` defaults), so a field added to
/// `CpuCaps` fails this build until it is detected here too.
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
    let perf_global_ctrl = rdmsr_safe(IA32_PERF_GLOBAL_CTRL).is_ok();
    let (gp, fixed) = if pmu_version >= 2 && perf_global_ctrl {
        (((pmu.eax >> 8) & 0xFF) as u8, (pmu.edx & 0x1F) as u8)
    } else {
        (0, 0)
    };
    // IA32_FEATURE_CONTROL's valid bits follow from these
    // (`CpuCaps::feature_control_valid`), the same rule as the profiles.
    let lmce = rdmsr_safe(IA32_MCG_CAP).is_ok_and(|v| v >> 27 & 1 != 0);
    // IA32_PERF_CAPABILITIES is present when CPUID.1:ECX[15] (PDCM).
    let freeze_while_smm =
        bit(l1.ecx, 15) && rdmsr_safe(IA32_PERF_CAPABILITIES).is_ok_and(|v| v >> 12 & 1 != 0);
    let intel_pt = bit(l7.ebx, 25);
    let pt = if intel_pt { pt_caps(max_leaf) } else { None };
    let max_extended = cpuid(0x8000_0000, 0).eax;
    // MAXPHYADDR; 36 bits where leaf 80000008H is missing (SDM Vol. 3A 4.1.4).
    let physical_address_bits = if max_extended >= 0x8000_0008 {
        cpuid(0x8000_0008, 0).eax as u8
    } else {
        36
    };
    let xsaves = max_leaf >= 0xD && bit(cpuid(0xD, 1).eax, 3);
    let entry_ctls = rdmsr_safe(IA32_VMX_TRUE_ENTRY_CTLS).unwrap_or(0);
    let exit_ctls = rdmsr_safe(IA32_VMX_TRUE_EXIT_CTLS).unwrap_or(0);
    CpuCaps {
        name: "real-vmx",
        // WRMSR's canonical checks use the widest linear address the CPU
        // supports: 57 bits with 5-level paging (CPUID.(7,0):ECX[16]).
        linear_address_bits: if bit(l7.ecx, 16) { 57 } else { 48 },
        physical_address_bits,
        mtrr: bit(l1.edx, 12),
        tsc_adjust: bit(l7.ebx, 1),
        tsc_deadline: bit(l1.ecx, 24),
        spec_ctrl: bit(l7.edx, 26),
        arch_capabilities: bit(l7.edx, 29),
        flush_cmd: bit(l7.edx, 28),
        xsaves,
        x2apic: bit(l1.ecx, 21),
        debugctl_base: hv_stub::caps::DEBUGCTL_ARCH,
        rtm: bit(l7.ebx, 11),
        freeze_while_smm,
        bus_lock_detect: bit(l7.ecx, 24),
        // Bochs offers "load debug controls" without the MSR itself.
        has_debugctl: rdmsr_safe(IA32_DEBUGCTL).is_ok(),
        pmu_gp_counters: gp,
        pmu_fixed_counters: fixed,
        mpx: bit(l7.ebx, 14),
        intel_pt,
        rtit_ctl_valid: pt.as_ref().map_or(0, |pt| pt.rtit_ctl_valid),
        pt_address_ranges: pt.as_ref().map_or(0, |pt| pt.address_ranges),
        pt_mtc_periods: pt.as_ref().map_or(0, |pt| pt.mtc_periods),
        pt_cyc_thresholds: pt.as_ref().map_or(0, |pt| pt.cyc_thresholds),
        pt_psb_periods: pt.as_ref().map_or(0, |pt| pt.psb_periods),
        pt_single_range_output: pt.as_ref().is_some_and(|pt| pt.single_range_output),
        pks: bit(l7.ecx, 31),
        cet_shstk: bit(l7.ecx, 7),
        cet_ibt: bit(l7.edx, 20),
        smx: bit(l1.ecx, 6),
        sgx_launch_control: bit(l7.ecx, 30),
        sgx: bit(l7.ebx, 2),
        lmce,
        entry_allowed1: (entry_ctls >> 32) as u32,
        exit_allowed1: (exit_ctls >> 32) as u32,
        // The allowed-0 halves: controls that must be 1.
        entry_required1: entry_ctls as u32,
        exit_required1: exit_ctls as u32,
    }
}
