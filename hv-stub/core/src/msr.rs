//! Architectural numbers used by the routing: MSR indices, VMCS field
//! encodings (SDM Vol. 3D Appendix B) and VM-entry/VM-exit control bits
//! (SDM Vol. 3C 25.7, 25.8). Several are missing from the `x86` crate 0.52
//! (BNDCFGS, PKRS, the CET MSRs, field 0x2818 and the CET fields, the newer
//! control bits), so they are defined here, all in one place.

/// MSR indices.
pub mod index {
    pub const IA32_TIME_STAMP_COUNTER: u32 = 0x10;
    pub const IA32_APIC_BASE: u32 = 0x1B;
    pub const IA32_FEATURE_CONTROL: u32 = 0x3A;
    pub const IA32_TSC_ADJUST: u32 = 0x3B;
    pub const IA32_SPEC_CTRL: u32 = 0x48;
    pub const IA32_PRED_CMD: u32 = 0x49;
    pub const IA32_MTRRCAP: u32 = 0xFE;
    pub const IA32_ARCH_CAPABILITIES: u32 = 0x10A;
    pub const IA32_FLUSH_CMD: u32 = 0x10B;
    /// IA32_MTRR_PHYSBASE0; PHYSMASKn = 0x201 + 2n, PHYSBASEn = 0x200 + 2n.
    pub const IA32_MTRR_PHYSBASE0: u32 = 0x200;
    /// The eight variable-range MTRR pairs end here (exclusive).
    pub const IA32_MTRR_PHYS_END: u32 = 0x210;
    pub const IA32_MTRR_FIX64K_00000: u32 = 0x250;
    pub const IA32_MTRR_FIX16K_80000: u32 = 0x258;
    pub const IA32_MTRR_FIX16K_A0000: u32 = 0x259;
    /// IA32_MTRR_FIX4K_C0000 ..= IA32_MTRR_FIX4K_F8000 are 0x268..=0x26F.
    pub const IA32_MTRR_FIX4K_C0000: u32 = 0x268;
    pub const IA32_MTRR_FIX4K_F8000: u32 = 0x26F;
    pub const IA32_MTRR_DEF_TYPE: u32 = 0x2FF;
    pub const IA32_U_CET: u32 = 0x6A0;
    pub const IA32_PL0_SSP: u32 = 0x6A4;
    pub const IA32_PL3_SSP: u32 = 0x6A7;
    pub const IA32_TSC_DEADLINE: u32 = 0x6E0;
    pub const IA32_XSS: u32 = 0xDA0;
    /// The VMX capability MSRs, IA32_VMX_BASIC ..= IA32_VMX_EXIT_CTLS2.
    pub const IA32_VMX_BASIC: u32 = 0x480;
    pub const IA32_VMX_EXIT_CTLS2: u32 = 0x493;
    pub const IA32_SMBASE: u32 = 0x9E;
    pub const IA32_SYSENTER_CS: u32 = 0x174;
    pub const IA32_SYSENTER_ESP: u32 = 0x175;
    pub const IA32_SYSENTER_EIP: u32 = 0x176;
    pub const IA32_DEBUGCTL: u32 = 0x1D9;
    pub const IA32_PAT: u32 = 0x277;
    pub const IA32_PERF_GLOBAL_CTRL: u32 = 0x38F;
    pub const IA32_RTIT_CTL: u32 = 0x570;
    pub const IA32_S_CET: u32 = 0x6A2;
    pub const IA32_INTERRUPT_SSP_TABLE_ADDR: u32 = 0x6A8;
    pub const IA32_PKRS: u32 = 0x6E1;
    pub const IA32_BNDCFGS: u32 = 0xD90;
    pub const IA32_EFER: u32 = 0xC000_0080;
    pub const IA32_STAR: u32 = 0xC000_0081;
    pub const IA32_LSTAR: u32 = 0xC000_0082;
    pub const IA32_CSTAR: u32 = 0xC000_0083;
    pub const IA32_FMASK: u32 = 0xC000_0084;
    pub const IA32_FS_BASE: u32 = 0xC000_0100;
    pub const IA32_GS_BASE: u32 = 0xC000_0101;
    pub const IA32_KERNEL_GS_BASE: u32 = 0xC000_0102;
    pub const IA32_TSC_AUX: u32 = 0xC000_0103;
    /// Never allowed in a VM-entry MSR-load area (SDM 26.4).
    pub const IA32_SMM_MONITOR_CTL: u32 = 0x9B;
}

/// VMCS field encodings.
pub mod field {
    pub const VM_EXIT_MSR_STORE_ADDR: u32 = 0x2006;
    pub const VM_ENTRY_MSR_LOAD_ADDR: u32 = 0x200A;
    pub const VMCS_LINK_POINTER: u32 = 0x2800;
    pub const GUEST_IA32_DEBUGCTL: u32 = 0x2802;
    pub const GUEST_IA32_PAT: u32 = 0x2804;
    pub const GUEST_IA32_EFER: u32 = 0x2806;
    pub const GUEST_IA32_PERF_GLOBAL_CTRL: u32 = 0x2808;
    pub const GUEST_IA32_BNDCFGS: u32 = 0x2812;
    pub const GUEST_IA32_RTIT_CTL: u32 = 0x2814;
    pub const GUEST_IA32_PKRS: u32 = 0x2818;
    pub const HOST_IA32_PAT: u32 = 0x2C00;
    pub const HOST_IA32_EFER: u32 = 0x2C02;
    pub const HOST_IA32_PERF_GLOBAL_CTRL: u32 = 0x2C04;
    pub const HOST_IA32_PKRS: u32 = 0x2C06;
    pub const VM_EXIT_CONTROLS: u32 = 0x400C;
    pub const VM_EXIT_MSR_STORE_COUNT: u32 = 0x400E;
    pub const VM_ENTRY_CONTROLS: u32 = 0x4012;
    pub const VM_ENTRY_MSR_LOAD_COUNT: u32 = 0x4014;
    pub const GUEST_SMBASE: u32 = 0x4828;
    pub const GUEST_IA32_SYSENTER_CS: u32 = 0x482A;
    pub const HOST_IA32_SYSENTER_CS: u32 = 0x4C00;
    pub const GUEST_CR0: u32 = 0x6800;
    pub const GUEST_CR4: u32 = 0x6804;
    pub const GUEST_FS_BASE: u32 = 0x680E;
    pub const GUEST_GS_BASE: u32 = 0x6810;
    pub const GUEST_IA32_SYSENTER_ESP: u32 = 0x6824;
    pub const GUEST_IA32_SYSENTER_EIP: u32 = 0x6826;
    pub const GUEST_IA32_S_CET: u32 = 0x6828;
    pub const GUEST_SSP: u32 = 0x682A;
    pub const GUEST_IA32_INTERRUPT_SSP_TABLE_ADDR: u32 = 0x682C;
    pub const HOST_CR4: u32 = 0x6C04;
    pub const HOST_FS_BASE: u32 = 0x6C06;
    pub const HOST_GS_BASE: u32 = 0x6C08;
    pub const HOST_IA32_SYSENTER_ESP: u32 = 0x6C10;
    pub const HOST_IA32_SYSENTER_EIP: u32 = 0x6C12;
    pub const HOST_IA32_S_CET: u32 = 0x6C18;
    pub const HOST_SSP: u32 = 0x6C1A;
    pub const HOST_IA32_INTERRUPT_SSP_TABLE_ADDR: u32 = 0x6C1C;
}

/// VM-entry control bits (field 0x4012).
pub mod entry {
    pub const LOAD_DEBUG_CONTROLS: u32 = 1 << 2;
    pub const IA32E_MODE_GUEST: u32 = 1 << 9;
    pub const LOAD_IA32_PERF_GLOBAL_CTRL: u32 = 1 << 13;
    pub const LOAD_IA32_PAT: u32 = 1 << 14;
    pub const LOAD_IA32_EFER: u32 = 1 << 15;
    pub const LOAD_IA32_BNDCFGS: u32 = 1 << 16;
    pub const LOAD_IA32_RTIT_CTL: u32 = 1 << 18;
    pub const LOAD_CET_STATE: u32 = 1 << 20;
    pub const LOAD_PKRS: u32 = 1 << 22;
}

/// VM-exit control bits (field 0x400C).
pub mod exit {
    pub const SAVE_DEBUG_CONTROLS: u32 = 1 << 2;
    pub const HOST_ADDRESS_SPACE_SIZE: u32 = 1 << 9;
    pub const LOAD_IA32_PERF_GLOBAL_CTRL: u32 = 1 << 12;
    pub const SAVE_IA32_PAT: u32 = 1 << 18;
    pub const LOAD_IA32_PAT: u32 = 1 << 19;
    pub const SAVE_IA32_EFER: u32 = 1 << 20;
    pub const LOAD_IA32_EFER: u32 = 1 << 21;
    pub const CLEAR_IA32_BNDCFGS: u32 = 1 << 23;
    pub const CLEAR_IA32_RTIT_CTL: u32 = 1 << 25;
    pub const LOAD_CET_STATE: u32 = 1 << 28;
    pub const LOAD_PKRS: u32 = 1 << 29;
    /// Newer processors (SDM 24.7.1): the guest's IA32_PERF_GLOBAL_CTRL is
    /// saved on VM exit (SDM 27.3.1).
    pub const SAVE_IA32_PERF_GLOBAL_CTRL: u32 = 1 << 30;
}

/// Control-register and EFER bits the routing looks at.
pub mod bits {
    pub const CR0_PG: u64 = 1 << 31;
    pub const CR4_LA57: u64 = 1 << 12;
    pub const EFER_SCE: u64 = 1 << 0;
    pub const EFER_LME: u64 = 1 << 8;
    pub const EFER_LMA: u64 = 1 << 10;
    pub const EFER_NXE: u64 = 1 << 11;
    pub const FEATURE_CONTROL_LOCK: u64 = 1 << 0;
    /// IA32_RTIT_CTL fields (SDM Vol. 3C 33.2.8.2).
    pub const RTIT_TRACE_EN: u64 = 1 << 0;
    pub const RTIT_FABRIC_EN: u64 = 1 << 6;
    pub const RTIT_TOPA: u64 = 1 << 8;
    pub const RTIT_MTC_FREQ_SHIFT: u32 = 14;
    pub const RTIT_CYC_THRESH_SHIFT: u32 = 19;
    pub const RTIT_PSB_FREQ_SHIFT: u32 = 24;
    pub const RTIT_ADDR0_CFG_SHIFT: u32 = 32;
}
