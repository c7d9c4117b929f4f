//! What the processor under the hypervisor supports, as far as MSR routing
//! and validation care. The real backend fills this from CPUID and the VMX
//! capability MSRs; the software model takes one of the named profiles.

use crate::msr::entry;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CpuCaps {
    pub name: &'static str,
    /// Linear-address width for canonical checks: 48, or 57 with 5-level paging.
    pub linear_address_bits: u8,
    /// Bits of IA32_DEBUGCTL that may be set.
    pub debugctl_valid: u64,
    /// CPUID.0AH:EAX[15:8], general-purpose counters (0 = no IA32_PERF_GLOBAL_CTRL).
    pub pmu_gp_counters: u8,
    /// CPUID.0AH:EDX[4:0], fixed-function counters.
    pub pmu_fixed_counters: u8,
    /// MPX: IA32_BNDCFGS exists.
    pub mpx: bool,
    /// Intel PT: IA32_RTIT_CTL exists.
    pub intel_pt: bool,
    /// Bits of IA32_RTIT_CTL that may be set (from CPUID.14H).
    pub rtit_ctl_valid: u64,
    /// Protection keys for supervisor pages: IA32_PKRS exists.
    pub pks: bool,
    /// CET shadow stacks.
    pub cet_shstk: bool,
    /// CET indirect-branch tracking.
    pub cet_ibt: bool,
    /// Bits of IA32_FEATURE_CONTROL that may be set.
    pub feature_control_valid: u64,
    /// VM-entry controls that may be 1 (allowed-1 of IA32_VMX_TRUE_ENTRY_CTLS).
    pub entry_allowed1: u32,
    /// VM-exit controls that may be 1 (allowed-1 of IA32_VMX_TRUE_EXIT_CTLS).
    pub exit_allowed1: u32,
}

/// DEBUGCTL bits on current parts: LBR, BTF, 6..=15 (TR, BTS, BTINT,
/// BTS_OFF_OS/USR, FREEZE_LBRS_ON_PMI, FREEZE_PERFMON_ON_PMI,
/// ENABLE_UNCORE_PMI, FREEZE_WHILE_SMM, RTM_DEBUG). Bits 5:2 are reserved.
const DEBUGCTL_MODERN: u64 = 0b11 | (0x3FF << 6);
/// Lock, VMX inside SMX, VMX outside SMX, SENTER enables 14:8, SENTER global
/// enable 15, SGX launch control 17, SGX global enable 18, LMCE 20.
const FEATURE_CONTROL_MODERN: u64 =
    0b111 | (0x7F << 8) | (1 << 15) | (1 << 17) | (1 << 18) | (1 << 20);
/// RTIT_CTL bits with 2 address ranges: TraceEn, CYCEn, OS, User, PwrEvtEn,
/// FUPonPTW, CR3Filter, ToPA, MTCEn, TSCEn, DisRETC, PTWEn, BranchEn,
/// MTCFreq 17:14, CycThresh 22:19, PSBFreq 27:24, ADDR0/1_CFG 39:32.
const RTIT_CTL_MODERN: u64 =
    0b11_1111 | (0x7F << 7) | (0xF << 14) | (0xF << 19) | (0xF << 24) | (0xFF << 32);

const EXIT_MODERN: u32 = crate::msr::exit::SAVE_DEBUG_CONTROLS
    | crate::msr::exit::HOST_ADDRESS_SPACE_SIZE
    | crate::msr::exit::LOAD_IA32_PERF_GLOBAL_CTRL
    | crate::msr::exit::SAVE_IA32_PAT
    | crate::msr::exit::LOAD_IA32_PAT
    | crate::msr::exit::SAVE_IA32_EFER
    | crate::msr::exit::LOAD_IA32_EFER
    | crate::msr::exit::CLEAR_IA32_RTIT_CTL
    | crate::msr::exit::LOAD_CET_STATE
    | crate::msr::exit::LOAD_PKRS;

impl CpuCaps {
    /// A current server part (Sapphire Rapids class): PT, CET, PKS; no MPX,
    /// which Intel dropped. The `sim` target's default.
    pub const MODERN: CpuCaps = CpuCaps {
        name: "modern",
        linear_address_bits: 48,
        debugctl_valid: DEBUGCTL_MODERN,
        pmu_gp_counters: 8,
        pmu_fixed_counters: 4,
        mpx: false,
        intel_pt: true,
        rtit_ctl_valid: RTIT_CTL_MODERN,
        pks: true,
        cet_shstk: true,
        cet_ibt: true,
        feature_control_valid: FEATURE_CONTROL_MODERN,
        entry_allowed1: entry::LOAD_DEBUG_CONTROLS
            | entry::IA32E_MODE_GUEST
            | entry::LOAD_IA32_PERF_GLOBAL_CTRL
            | entry::LOAD_IA32_PAT
            | entry::LOAD_IA32_EFER
            | entry::LOAD_IA32_RTIT_CTL
            | entry::LOAD_CET_STATE
            | entry::LOAD_PKRS,
        exit_allowed1: EXIT_MODERN,
    };

    /// A Skylake-class part: MPX and PT, no CET or PKS.
    pub const SKYLAKE: CpuCaps = CpuCaps {
        name: "skylake",
        pmu_fixed_counters: 3,
        mpx: true,
        pks: false,
        cet_shstk: false,
        cet_ibt: false,
        entry_allowed1: entry::LOAD_DEBUG_CONTROLS
            | entry::IA32E_MODE_GUEST
            | entry::LOAD_IA32_PERF_GLOBAL_CTRL
            | entry::LOAD_IA32_PAT
            | entry::LOAD_IA32_EFER
            | entry::LOAD_IA32_BNDCFGS
            | entry::LOAD_IA32_RTIT_CTL,
        exit_allowed1: EXIT_MODERN | crate::msr::exit::CLEAR_IA32_BNDCFGS,
        ..CpuCaps::MODERN
    };

    /// What Bochs's `tigerlake` model reports (see BOCHS-NOTES.md): no
    /// BNDCFGS, RTIT_CTL or PKRS load controls.
    pub const BOCHS_TIGERLAKE: CpuCaps = CpuCaps {
        name: "bochs-tigerlake",
        intel_pt: false,
        pks: false,
        entry_allowed1: entry::LOAD_DEBUG_CONTROLS
            | entry::IA32E_MODE_GUEST
            | entry::LOAD_IA32_PERF_GLOBAL_CTRL
            | entry::LOAD_IA32_PAT
            | entry::LOAD_IA32_EFER
            | entry::LOAD_CET_STATE,
        ..CpuCaps::MODERN
    };

    /// Every feature and every load control: not a real part, but the one
    /// profile on which all 14 guest-applied MSRs can take both paths.
    pub const FULL: CpuCaps = CpuCaps {
        name: "full",
        linear_address_bits: 57,
        mpx: true,
        entry_allowed1: CpuCaps::MODERN.entry_allowed1 | entry::LOAD_IA32_BNDCFGS,
        exit_allowed1: EXIT_MODERN | crate::msr::exit::CLEAR_IA32_BNDCFGS,
        ..CpuCaps::MODERN
    };

    /// The first VMX processors: DEBUGCTL always loaded, no other MSR load
    /// controls, no PMU v2, PT, MPX, PKS or CET.
    pub const LEGACY: CpuCaps = CpuCaps {
        name: "legacy",
        debugctl_valid: 0b11 | (0x1F << 6),
        pmu_gp_counters: 0,
        pmu_fixed_counters: 0,
        mpx: false,
        intel_pt: false,
        rtit_ctl_valid: 0,
        pks: false,
        cet_shstk: false,
        cet_ibt: false,
        feature_control_valid: 0b111,
        entry_allowed1: entry::LOAD_DEBUG_CONTROLS | entry::IA32E_MODE_GUEST,
        exit_allowed1: crate::msr::exit::SAVE_DEBUG_CONTROLS
            | crate::msr::exit::HOST_ADDRESS_SPACE_SIZE,
        ..CpuCaps::MODERN
    };

    pub const PROFILES: [CpuCaps; 5] = [
        CpuCaps::MODERN,
        CpuCaps::SKYLAKE,
        CpuCaps::BOCHS_TIGERLAKE,
        CpuCaps::FULL,
        CpuCaps::LEGACY,
    ];

    pub fn by_name(name: &str) -> Option<CpuCaps> {
        CpuCaps::PROFILES.iter().copied().find(|c| c.name == name)
    }

    pub fn entry_allowed(&self, control: u32) -> bool {
        self.entry_allowed1 & control == control
    }

    pub fn has_cet(&self) -> bool {
        self.cet_shstk || self.cet_ibt
    }

    /// Bits of IA32_PERF_GLOBAL_CTRL that may be set: one enable per
    /// general-purpose counter (from bit 0) and per fixed counter (from bit 32).
    pub fn perf_global_ctrl_valid(&self) -> u64 {
        let gp = (1u64 << self.pmu_gp_counters) - 1;
        let fixed = ((1u64 << self.pmu_fixed_counters) - 1) << 32;
        gp | fixed
    }
}
