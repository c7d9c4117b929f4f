//! What the processor under the hypervisor supports, as far as MSR routing
//! and validation care. The real backend fills this from CPUID and the VMX
//! capability MSRs; the software model takes one of the named profiles.

use crate::msr::{entry, FeatureControl};

/// A processor's MSR-related features and VMX control capabilities: a
/// named profile for the model, or what the image detects.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CpuCaps {
    /// The profile's name (`sim?cpu=NAME`), or "real-vmx" on the image.
    pub name: &'static str,
    /// Linear-address width for canonical checks: 48, or 57 with 5-level paging.
    pub linear_address_bits: u8,
    /// MAXPHYADDR (CPUID.80000008H:EAX\[7:0\]): MTRR bases and masks above it are reserved.
    pub physical_address_bits: u8,
    /// MTRRs (CPUID.1:EDX\[12\]): IA32_MTRRCAP, DEF_TYPE, the fixed and 8 variable ranges.
    pub mtrr: bool,
    /// IA32_TSC_ADJUST (CPUID.(EAX=7,ECX=0):EBX\[1\]).
    pub tsc_adjust: bool,
    /// TSC-deadline timer (CPUID.1:ECX\[24\]): IA32_TSC_DEADLINE.
    pub tsc_deadline: bool,
    /// IBRS/IBPB (CPUID.(EAX=7,ECX=0):EDX\[26\]): IA32_SPEC_CTRL, IA32_PRED_CMD.
    pub spec_ctrl: bool,
    /// CPUID.(EAX=7,ECX=0):EDX\[29\]: IA32_ARCH_CAPABILITIES (read-only).
    pub arch_capabilities: bool,
    /// L1D flush (CPUID.(EAX=7,ECX=0):EDX\[28\]): IA32_FLUSH_CMD (write-only).
    pub flush_cmd: bool,
    /// XSAVES (CPUID.(EAX=0DH,ECX=1):EAX\[3\]): IA32_XSS is writable.
    pub xsaves: bool,
    /// x2APIC (CPUID.1:ECX\[21\]): IA32_APIC_BASE bit 10 (EXTD) may be set.
    pub x2apic: bool,
    /// IA32_DEBUGCTL bits every part with this MSR has (LBR, BTF and the
    /// BTS/freeze/uncore bits 6..=13 on current parts); the bits that
    /// depend on a feature are added by [`CpuCaps::debugctl_valid`].
    pub debugctl_base: u64,
    /// RTM (CPUID.(EAX=7,ECX=0):EBX\[11\]): IA32_DEBUGCTL bit 15, RTM_DEBUG.
    pub rtm: bool,
    /// IA32_PERF_CAPABILITIES\[12\]: IA32_DEBUGCTL bit 14, FREEZE_WHILE_SMM.
    pub freeze_while_smm: bool,
    /// Bus-lock detection (CPUID.(EAX=7,ECX=0):ECX\[24\]): IA32_DEBUGCTL bit 2.
    pub bus_lock_detect: bool,
    /// IA32_DEBUGCTL exists (it does on every Intel 64 part, but emulators
    /// such as Bochs may lack it while offering "load debug controls").
    pub has_debugctl: bool,
    /// CPUID.0AH:EAX\[15:8\], general-purpose counters (0 = no IA32_PERF_GLOBAL_CTRL).
    pub pmu_gp_counters: u8,
    /// CPUID.0AH:EDX\[4:0\], fixed-function counters.
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
    /// SMX (CPUID.1:ECX\[6\]): IA32_FEATURE_CONTROL bits 1 and 8..=15.
    pub smx: bool,
    /// SGX launch control (CPUID.(EAX=7,ECX=0):ECX\[30\]): IA32_FEATURE_CONTROL bit 17.
    pub sgx_launch_control: bool,
    /// SGX (CPUID.(EAX=7,ECX=0):EBX\[2\]): IA32_FEATURE_CONTROL bit 18.
    pub sgx: bool,
    /// Local machine-check exceptions (IA32_MCG_CAP\[27\]): IA32_FEATURE_CONTROL bit 20.
    pub lmce: bool,
    /// VM-entry controls that may be 1 (allowed-1 of IA32_VMX_TRUE_ENTRY_CTLS).
    pub entry_allowed1: u32,
    /// VM-exit controls that may be 1 (allowed-1 of IA32_VMX_TRUE_EXIT_CTLS).
    pub exit_allowed1: u32,
    /// VM-entry controls that must be 1 (the allowed-0 settings of
    /// IA32_VMX_TRUE_ENTRY_CTLS that read 1), among those the model knows.
    /// The first VMX processors support only the 1-setting of "load debug
    /// controls" (SDM 24.8.1).
    pub entry_required1: u32,
    /// VM-exit controls that must be 1 (e.g. "save debug controls" on the
    /// first VMX processors, SDM 24.7.1).
    pub exit_required1: u32,
    /// Intel PT: address ranges, CPUID.(EAX=14H,ECX=1):EAX\[2:0\]. The
    /// ADDRn_CFG fields of IA32_RTIT_CTL for n >= this must stay 0.
    pub pt_address_ranges: u8,
    /// Intel PT: supported MTCFreq encodings, CPUID.(EAX=14H,ECX=1):EAX\[31:16\].
    pub pt_mtc_periods: u16,
    /// Intel PT: supported CycThresh encodings, CPUID.(EAX=14H,ECX=1):EBX\[15:0\].
    pub pt_cyc_thresholds: u16,
    /// Intel PT: supported PSBFreq encodings, CPUID.(EAX=14H,ECX=1):EBX\[31:16\].
    pub pt_psb_periods: u16,
    /// Intel PT: single-range output, CPUID.(EAX=14H,ECX=0):ECX\[2\]. Without
    /// it, TraceEn = 1 needs ToPA (or FabricEn).
    pub pt_single_range_output: bool,
}

/// IA32_DEBUGCTL bits of every current Intel part that has the MSR: LBR,
/// BTF, 6..=13 (TR, BTS, BTINT, BTS_OFF_OS/USR, FREEZE_LBRS_ON_PMI,
/// FREEZE_PERFMON_ON_PMI, ENABLE_UNCORE_PMI). Bits 5:3 are reserved; 2, 14
/// and 15 depend on features (see [`CpuCaps::debugctl_valid`]).
pub const DEBUGCTL_ARCH: u64 = 0b11 | (0xFF << 6);
const DEBUGCTL_BUS_LOCK_DETECT: u64 = 1 << 2;
const DEBUGCTL_FREEZE_WHILE_SMM: u64 = 1 << 14;
const DEBUGCTL_RTM_DEBUG: u64 = 1 << 15;
/// RTIT_CTL bits with 2 address ranges: TraceEn, CYCEn, OS, User, PwrEvtEn,
/// FUPonPTW, CR3Filter, ToPA, MTCEn, TSCEn, DisRETC, PTWEn, BranchEn,
/// MTCFreq 17:14, CycThresh 22:19, PSBFreq 27:24, ADDR0/1_CFG 39:32.
const RTIT_CTL_MODERN: u64 =
    0b11_1111 | (0x7F << 7) | (0xF << 14) | (0xF << 19) | (0xF << 24) | (0xFF << 32);

/// The PT encodings of Skylake-class and later parts (CPUID.14H.1 reads
/// EAX = 0x0249_0002, EBX = 0x003F_3FFF): MTC periods 0, 3, 6, 9; every
/// CycThresh 0..=13; PSBFreq 0..=5; two address ranges.
const PT_MTC_PERIODS: u16 = 0x0249;
const PT_CYC_THRESHOLDS: u16 = 0x3FFF;
const PT_PSB_PERIODS: u16 = 0x003F;

const EXIT_SKYLAKE: u32 = crate::msr::exit::SAVE_DEBUG_CONTROLS
    | crate::msr::exit::HOST_ADDRESS_SPACE_SIZE
    | crate::msr::exit::LOAD_IA32_PERF_GLOBAL_CTRL
    | crate::msr::exit::SAVE_IA32_PAT
    | crate::msr::exit::LOAD_IA32_PAT
    | crate::msr::exit::SAVE_IA32_EFER
    | crate::msr::exit::LOAD_IA32_EFER
    | crate::msr::exit::CLEAR_IA32_RTIT_CTL
    | crate::msr::exit::CLEAR_IA32_BNDCFGS
    | crate::msr::exit::CLEAR_IA32_RTIT_CTL;

/// Sapphire Rapids class: CET and PKS state, "save IA32_PERF_GLOBAL_CTRL"
/// (bit 30); no MPX, hence no "clear IA32_BNDCFGS".
const EXIT_MODERN: u32 = (EXIT_SKYLAKE & !crate::msr::exit::CLEAR_IA32_BNDCFGS)
    | crate::msr::exit::LOAD_CET_STATE
    | crate::msr::exit::LOAD_PKRS
    | crate::msr::exit::SAVE_IA32_PERF_GLOBAL_CTRL;

impl CpuCaps {
    /// A current server part (Sapphire Rapids class): PT, CET, PKS; no MPX,
    /// which Intel dropped. The `sim` target's default.
    pub const MODERN: CpuCaps = CpuCaps {
        name: "modern",
        linear_address_bits: 48,
        physical_address_bits: 46,
        mtrr: true,
        tsc_adjust: true,
        tsc_deadline: true,
        spec_ctrl: true,
        arch_capabilities: true,
        flush_cmd: true,
        xsaves: true,
        x2apic: true,
        debugctl_base: DEBUGCTL_ARCH,
        rtm: true,
        freeze_while_smm: true,
        bus_lock_detect: true,
        has_debugctl: true,
        pmu_gp_counters: 8,
        pmu_fixed_counters: 4,
        mpx: false,
        intel_pt: true,
        rtit_ctl_valid: RTIT_CTL_MODERN,
        pks: true,
        cet_shstk: true,
        cet_ibt: true,
        smx: true,
        sgx_launch_control: true,
        sgx: true,
        lmce: true,
        entry_allowed1: entry::LOAD_DEBUG_CONTROLS
            | entry::IA32E_MODE_GUEST
            | entry::LOAD_IA32_PERF_GLOBAL_CTRL
            | entry::LOAD_IA32_PAT
            | entry::LOAD_IA32_EFER
            | entry::LOAD_IA32_RTIT_CTL
            | entry::LOAD_CET_STATE
            | entry::LOAD_PKRS,
        exit_allowed1: EXIT_MODERN,
        entry_required1: 0,
        exit_required1: 0,
        pt_address_ranges: 2,
        pt_mtc_periods: PT_MTC_PERIODS,
        pt_cyc_thresholds: PT_CYC_THRESHOLDS,
        pt_psb_periods: PT_PSB_PERIODS,
        pt_single_range_output: true,
    };

    /// A Skylake-class part: MPX and PT, no CET or PKS.
    pub const SKYLAKE: CpuCaps = CpuCaps {
        name: "skylake",
        physical_address_bits: 39,
        bus_lock_detect: false,
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
        exit_allowed1: EXIT_SKYLAKE,
        ..CpuCaps::MODERN
    };

    /// What Bochs's `tigerlake` model reports (docs/HV-STUB.md): no
    /// BNDCFGS, RTIT_CTL or PKRS load controls; exit controls 0..=22 and 28.
    pub const BOCHS_TIGERLAKE: CpuCaps = CpuCaps {
        name: "bochs-tigerlake",
        // BX_PHY_ADDRESS_WIDTH of Debian's build.
        physical_address_bits: 40,
        // Bochs 2.7 has no SMX, no SGX and no IA32_MCG_CAP (so no LMCE):
        // its IA32_FEATURE_CONTROL takes the lock and VMX bits only.
        smx: false,
        sgx_launch_control: false,
        sgx: false,
        lmce: false,
        rtm: false,
        freeze_while_smm: false,
        bus_lock_detect: false,
        // Bochs 2.7 implements neither IA32_DEBUGCTL nor
        // IA32_PERF_GLOBAL_CTRL (RDMSR faults) although it offers their
        // load controls; tests/bochs_e2e.rs compares this profile with it.
        has_debugctl: false,
        pmu_gp_counters: 0,
        pmu_fixed_counters: 0,
        intel_pt: false,
        rtit_ctl_valid: 0,
        pt_address_ranges: 0,
        pks: false,
        entry_allowed1: entry::LOAD_DEBUG_CONTROLS
            | entry::IA32E_MODE_GUEST
            | entry::LOAD_IA32_PERF_GLOBAL_CTRL
            | entry::LOAD_IA32_PAT
            | entry::LOAD_IA32_EFER
            | entry::LOAD_CET_STATE,
        exit_allowed1: 0x007F_FFFF | crate::msr::exit::LOAD_CET_STATE,
        ..CpuCaps::MODERN
    };

    /// Every feature and every load control: not a real part, but the one
    /// profile on which all 14 guest-applied MSRs can take both paths.
    pub const FULL: CpuCaps = CpuCaps {
        name: "full",
        linear_address_bits: 57,
        physical_address_bits: 52,
        mpx: true,
        entry_allowed1: CpuCaps::MODERN.entry_allowed1 | entry::LOAD_IA32_BNDCFGS,
        exit_allowed1: EXIT_MODERN | crate::msr::exit::CLEAR_IA32_BNDCFGS,
        ..CpuCaps::MODERN
    };

    /// The first VMX processors: DEBUGCTL always loaded and saved (only the
    /// 1-settings of "load debug controls" and "save debug controls"), no
    /// other MSR load controls, no PMU v2, PT, MPX, PKS or CET.
    pub const LEGACY: CpuCaps = CpuCaps {
        name: "legacy",
        debugctl_base: 0b11 | (0x1F << 6),
        physical_address_bits: 36,
        x2apic: false,
        tsc_adjust: false,
        tsc_deadline: false,
        spec_ctrl: false,
        arch_capabilities: false,
        flush_cmd: false,
        xsaves: false,
        rtm: false,
        freeze_while_smm: false,
        bus_lock_detect: false,
        pmu_gp_counters: 0,
        pmu_fixed_counters: 0,
        mpx: false,
        intel_pt: false,
        rtit_ctl_valid: 0,
        pt_address_ranges: 0,
        pks: false,
        cet_shstk: false,
        cet_ibt: false,
        smx: false,
        sgx_launch_control: false,
        sgx: false,
        lmce: false,
        entry_allowed1: entry::LOAD_DEBUG_CONTROLS | entry::IA32E_MODE_GUEST,
        exit_allowed1: crate::msr::exit::SAVE_DEBUG_CONTROLS
            | crate::msr::exit::HOST_ADDRESS_SPACE_SIZE,
        entry_required1: entry::LOAD_DEBUG_CONTROLS,
        exit_required1: crate::msr::exit::SAVE_DEBUG_CONTROLS,
        ..CpuCaps::MODERN
    };

    /// Every profile `sim` offers.
    pub const PROFILES: [CpuCaps; 5] = [
        CpuCaps::MODERN,
        CpuCaps::SKYLAKE,
        CpuCaps::BOCHS_TIGERLAKE,
        CpuCaps::FULL,
        CpuCaps::LEGACY,
    ];

    /// The profile called `name`.
    pub fn by_name(name: &str) -> Option<CpuCaps> {
        CpuCaps::PROFILES.iter().copied().find(|c| c.name == name)
    }

    /// Whether the processor supports the 1-setting of every bit of `control`.
    pub fn entry_allowed(&self, control: u32) -> bool {
        self.entry_allowed1 & control == control
    }

    /// Whether the processor supports the 0-setting of every bit of `control`.
    pub fn entry_may_be_0(&self, control: u32) -> bool {
        self.entry_required1 & control == 0
    }

    /// Bits of IA32_DEBUGCTL that may be set on this processor.
    pub fn debugctl_valid(&self) -> u64 {
        let mut valid = self.debugctl_base;
        for (present, bit) in [
            (self.bus_lock_detect, DEBUGCTL_BUS_LOCK_DETECT),
            (self.freeze_while_smm, DEBUGCTL_FREEZE_WHILE_SMM),
            (self.rtm, DEBUGCTL_RTM_DEBUG),
        ] {
            if present {
                valid |= bit;
            }
        }
        valid
    }

    /// Bits of IA32_FEATURE_CONTROL that may be set on this processor.
    /// Lock and VMX outside SMX always (there with VMX); the rest with
    /// their features.
    pub fn feature_control_valid(&self) -> u64 {
        let mut valid = FeatureControl::LOCK | FeatureControl::VMX_OUTSIDE_SMX;
        let smx = FeatureControl::VMX_INSIDE_SMX
            | FeatureControl::SENTER_LOCAL
            | FeatureControl::SENTER_GLOBAL;
        for (present, bits) in [
            (self.smx, smx),
            (self.sgx_launch_control, FeatureControl::SGX_LAUNCH_CONTROL),
            (self.sgx, FeatureControl::SGX),
            (self.lmce, FeatureControl::LMCE),
        ] {
            valid.set(bits, present);
        }
        valid.bits()
    }

    /// Bits of IA32_XSS that may be set: the supervisor state components
    /// this processor has (PT state 8; CET user/supervisor state 11, 12).
    pub fn xss_valid(&self) -> u64 {
        let mut valid = 0;
        if self.intel_pt {
            valid |= 1 << 8;
        }
        if self.has_cet() {
            valid |= 0b11 << 11;
        }
        valid
    }

    /// Whether the processor has CET (shadow stacks or indirect-branch tracking).
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
