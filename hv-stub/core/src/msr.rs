//! Architectural numbers: MSR indices, VMCS field encodings (SDM Vol. 3D
//! Appendix B), the VM-entry/VM-exit control words (SDM Vol. 3C 25.7, 25.8)
//! and the IA32_FEATURE_CONTROL bits. Numbers come from the `x86` crate;
//! what x86 0.52 lacks (the CET and PKS MSRs, fields and controls, IA32_BNDCFGS,
//! the speculation-control MSRs, IA32_XSS, the newer control bits) is defined
//! here, each under a "Not in x86 0.52" comment.

use bitflags::bitflags;
use x86::vmx::vmcs::control::{EntryControls as X86Entry, ExitControls as X86Exit};

/// MSR indices.
pub mod index {
    pub use x86::msr::{
        IA32_APIC_BASE, IA32_CSTAR, IA32_DEBUGCTL, IA32_EFER, IA32_FEATURE_CONTROL, IA32_FMASK,
        IA32_FS_BASE, IA32_GS_BASE, IA32_LSTAR, IA32_MCG_CAP, IA32_MISC_ENABLE, IA32_MTRRCAP,
        IA32_MTRR_DEF_TYPE, IA32_MTRR_FIX16K_80000, IA32_MTRR_FIX16K_A0000, IA32_MTRR_FIX4K_C0000,
        IA32_MTRR_FIX4K_C8000, IA32_MTRR_FIX4K_D0000, IA32_MTRR_FIX4K_D8000, IA32_MTRR_FIX4K_E0000,
        IA32_MTRR_FIX4K_E8000, IA32_MTRR_FIX4K_F0000, IA32_MTRR_FIX4K_F8000,
        IA32_MTRR_FIX64K_00000, IA32_MTRR_PHYSBASE0, IA32_MTRR_PHYSBASE1, IA32_MTRR_PHYSBASE2,
        IA32_MTRR_PHYSBASE3, IA32_MTRR_PHYSBASE4, IA32_MTRR_PHYSBASE5, IA32_MTRR_PHYSBASE6,
        IA32_MTRR_PHYSBASE7, IA32_MTRR_PHYSMASK0, IA32_MTRR_PHYSMASK1, IA32_MTRR_PHYSMASK2,
        IA32_MTRR_PHYSMASK3, IA32_MTRR_PHYSMASK4, IA32_MTRR_PHYSMASK5, IA32_MTRR_PHYSMASK6,
        IA32_MTRR_PHYSMASK7, IA32_PAT, IA32_PERF_CAPABILITIES, IA32_PERF_GLOBAL_CTRL, IA32_SMBASE,
        IA32_SMM_MONITOR_CTL, IA32_STAR, IA32_SYSENTER_CS, IA32_SYSENTER_EIP, IA32_SYSENTER_ESP,
        IA32_TIME_STAMP_COUNTER, IA32_TSC_ADJUST, IA32_TSC_AUX, IA32_TSC_DEADLINE, IA32_VMX_BASIC,
        IA32_VMX_CR0_FIXED0, IA32_VMX_CR0_FIXED1, IA32_VMX_CR4_FIXED0, IA32_VMX_CR4_FIXED1,
        IA32_VMX_ENTRY_CTLS, IA32_VMX_EPT_VPID_CAP, IA32_VMX_EXIT_CTLS, IA32_VMX_MISC,
        IA32_VMX_PINBASED_CTLS, IA32_VMX_PROCBASED_CTLS, IA32_VMX_PROCBASED_CTLS2,
        IA32_VMX_TRUE_ENTRY_CTLS, IA32_VMX_TRUE_EXIT_CTLS, IA32_VMX_TRUE_PINBASED_CTLS,
        IA32_VMX_TRUE_PROCBASED_CTLS, IA32_VMX_VMCS_ENUM, IA32_VMX_VMFUNC,
    };

    /// IA32_KERNEL_GS_BASE (x86 0.52 spells it `IA32_KERNEL_GSBASE`).
    pub const IA32_KERNEL_GS_BASE: u32 = x86::msr::IA32_KERNEL_GSBASE;
    /// IA32_RTIT_CTL (x86 0.52 spells it `MSR_IA32_RTIT_CTL`).
    pub const IA32_RTIT_CTL: u32 = x86::msr::MSR_IA32_RTIT_CTL;
    /// The eight variable-range MTRR pairs (PHYSBASEn = 0x200 + 2n,
    /// PHYSMASKn = 0x201 + 2n) end here (exclusive).
    pub const IA32_MTRR_PHYS_END: u32 = x86::msr::IA32_MTRR_PHYSMASK7 + 1;

    // Not in x86 0.52 (SDM Vol. 4, Table 2-2).
    /// IA32_SPEC_CTRL: IBRS, STIBP, SSBD.
    pub const IA32_SPEC_CTRL: u32 = 0x48;
    /// IA32_PRED_CMD: IBPB (write-only).
    pub const IA32_PRED_CMD: u32 = 0x49;
    /// IA32_ARCH_CAPABILITIES (read-only).
    pub const IA32_ARCH_CAPABILITIES: u32 = 0x10A;
    /// IA32_FLUSH_CMD: L1D flush (write-only).
    pub const IA32_FLUSH_CMD: u32 = 0x10B;
    /// IA32_U_CET: user-mode CET configuration.
    pub const IA32_U_CET: u32 = 0x6A0;
    /// IA32_S_CET: supervisor-mode CET configuration.
    pub const IA32_S_CET: u32 = 0x6A2;
    /// IA32_PL0_SSP.
    pub const IA32_PL0_SSP: u32 = 0x6A4;
    /// IA32_PL1_SSP.
    pub const IA32_PL1_SSP: u32 = 0x6A5;
    /// IA32_PL2_SSP.
    pub const IA32_PL2_SSP: u32 = 0x6A6;
    /// IA32_PL3_SSP, the last of the privilege-level shadow-stack pointers.
    pub const IA32_PL3_SSP: u32 = 0x6A7;
    /// IA32_INTERRUPT_SSP_TABLE_ADDR.
    pub const IA32_INTERRUPT_SSP_TABLE_ADDR: u32 = 0x6A8;
    /// IA32_PKRS: protection keys for supervisor pages.
    pub const IA32_PKRS: u32 = 0x6E1;
    /// IA32_BNDCFGS: MPX supervisor configuration.
    pub const IA32_BNDCFGS: u32 = 0xD90;
    /// IA32_XSS: supervisor state components of XSAVES.
    pub const IA32_XSS: u32 = 0xDA0;
    /// IA32_VMX_PROCBASED_CTLS3: tertiary processor-based controls.
    pub const IA32_VMX_PROCBASED_CTLS3: u32 = 0x492;
    /// IA32_VMX_EXIT_CTLS2: secondary VM-exit controls, the last VMX
    /// capability MSR.
    pub const IA32_VMX_EXIT_CTLS2: u32 = 0x493;
}

/// VMCS field encodings (the "full" encoding of each 64-bit field).
pub mod field {
    use x86::vmx::vmcs::{control, guest, host};

    /// I/O bitmap A address.
    pub const IO_BITMAP_A_ADDR: u32 = control::IO_BITMAP_A_ADDR_FULL;
    /// MSR-bitmap address.
    pub const MSR_BITMAPS_ADDR: u32 = control::MSR_BITMAPS_ADDR_FULL;
    /// VM-exit MSR-store address.
    pub const VM_EXIT_MSR_STORE_ADDR: u32 = control::VMEXIT_MSR_STORE_ADDR_FULL;
    /// VM-entry MSR-load address.
    pub const VM_ENTRY_MSR_LOAD_ADDR: u32 = control::VMENTRY_MSR_LOAD_ADDR_FULL;
    /// VM-exit controls.
    pub const VM_EXIT_CONTROLS: u32 = control::VMEXIT_CONTROLS;
    /// VM-exit MSR-store count.
    pub const VM_EXIT_MSR_STORE_COUNT: u32 = control::VMEXIT_MSR_STORE_COUNT;
    /// VM-entry controls.
    pub const VM_ENTRY_CONTROLS: u32 = control::VMENTRY_CONTROLS;
    /// VM-entry MSR-load count.
    pub const VM_ENTRY_MSR_LOAD_COUNT: u32 = control::VMENTRY_MSR_LOAD_COUNT;
    /// VMCS link pointer.
    pub const VMCS_LINK_POINTER: u32 = guest::LINK_PTR_FULL;
    /// Guest IA32_DEBUGCTL.
    pub const GUEST_IA32_DEBUGCTL: u32 = guest::IA32_DEBUGCTL_FULL;
    /// Guest IA32_PAT.
    pub const GUEST_IA32_PAT: u32 = guest::IA32_PAT_FULL;
    /// Guest IA32_EFER.
    pub const GUEST_IA32_EFER: u32 = guest::IA32_EFER_FULL;
    /// Guest IA32_PERF_GLOBAL_CTRL.
    pub const GUEST_IA32_PERF_GLOBAL_CTRL: u32 = guest::IA32_PERF_GLOBAL_CTRL_FULL;
    /// Guest IA32_BNDCFGS.
    pub const GUEST_IA32_BNDCFGS: u32 = guest::IA32_BNDCFGS_FULL;
    /// Guest IA32_RTIT_CTL.
    pub const GUEST_IA32_RTIT_CTL: u32 = guest::IA32_RTIT_CTL_FULL;
    /// Guest SMBASE.
    pub const GUEST_SMBASE: u32 = guest::SMBASE;
    /// Guest IA32_SYSENTER_CS (32 bits).
    pub const GUEST_IA32_SYSENTER_CS: u32 = guest::IA32_SYSENTER_CS;
    /// Guest CR0.
    pub const GUEST_CR0: u32 = guest::CR0;
    /// Guest CR4.
    pub const GUEST_CR4: u32 = guest::CR4;
    /// Guest FS base.
    pub const GUEST_FS_BASE: u32 = guest::FS_BASE;
    /// Guest GS base.
    pub const GUEST_GS_BASE: u32 = guest::GS_BASE;
    /// Guest IA32_SYSENTER_ESP.
    pub const GUEST_IA32_SYSENTER_ESP: u32 = guest::IA32_SYSENTER_ESP;
    /// Guest IA32_SYSENTER_EIP.
    pub const GUEST_IA32_SYSENTER_EIP: u32 = guest::IA32_SYSENTER_EIP;
    /// Host IA32_PAT.
    pub const HOST_IA32_PAT: u32 = host::IA32_PAT_FULL;
    /// Host IA32_EFER.
    pub const HOST_IA32_EFER: u32 = host::IA32_EFER_FULL;
    /// Host IA32_PERF_GLOBAL_CTRL.
    pub const HOST_IA32_PERF_GLOBAL_CTRL: u32 = host::IA32_PERF_GLOBAL_CTRL_FULL;
    /// Host IA32_SYSENTER_CS.
    pub const HOST_IA32_SYSENTER_CS: u32 = host::IA32_SYSENTER_CS;
    /// Host CR4.
    pub const HOST_CR4: u32 = host::CR4;
    /// Host FS base.
    pub const HOST_FS_BASE: u32 = host::FS_BASE;
    /// Host GS base.
    pub const HOST_GS_BASE: u32 = host::GS_BASE;
    /// Host IA32_SYSENTER_ESP.
    pub const HOST_IA32_SYSENTER_ESP: u32 = host::IA32_SYSENTER_ESP;
    /// Host IA32_SYSENTER_EIP.
    pub const HOST_IA32_SYSENTER_EIP: u32 = host::IA32_SYSENTER_EIP;

    // Not in x86 0.52: the PKS and CET state fields (SDM Vol. 3D B.2.3,
    // B.2.4, B.4.3, B.4.4).
    /// Guest IA32_PKRS.
    pub const GUEST_IA32_PKRS: u32 = 0x2818;
    /// Host IA32_PKRS.
    pub const HOST_IA32_PKRS: u32 = 0x2C06;
    /// Guest IA32_S_CET.
    pub const GUEST_IA32_S_CET: u32 = 0x6828;
    /// Guest SSP.
    pub const GUEST_SSP: u32 = 0x682A;
    /// Guest IA32_INTERRUPT_SSP_TABLE_ADDR.
    pub const GUEST_IA32_INTERRUPT_SSP_TABLE_ADDR: u32 = 0x682C;
    /// Host IA32_S_CET.
    pub const HOST_IA32_S_CET: u32 = 0x6C18;
    /// Host SSP.
    pub const HOST_SSP: u32 = 0x6C1A;
    /// Host IA32_INTERRUPT_SSP_TABLE_ADDR.
    pub const HOST_IA32_INTERRUPT_SSP_TABLE_ADDR: u32 = 0x6C1C;
}

bitflags! {
    /// The VM-entry controls (field 0x4012) hv-stub knows. Not x86's own
    /// `EntryControls`: that type (bitflags 1) lacks the CET and PKS bits
    /// and its `from_bits_truncate` would drop them; the bits x86 has are
    /// taken from it.
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
    pub struct EntryControls: u32 {
        /// Load debug controls (DR7, IA32_DEBUGCTL).
        const LOAD_DEBUG_CONTROLS = X86Entry::LOAD_DEBUG_CONTROLS.bits();
        /// IA-32e mode guest.
        const IA32E_MODE_GUEST = X86Entry::IA32E_MODE_GUEST.bits();
        /// Load IA32_PERF_GLOBAL_CTRL.
        const LOAD_IA32_PERF_GLOBAL_CTRL = X86Entry::LOAD_IA32_PERF_GLOBAL_CTRL.bits();
        /// Load IA32_PAT.
        const LOAD_IA32_PAT = X86Entry::LOAD_IA32_PAT.bits();
        /// Load IA32_EFER.
        const LOAD_IA32_EFER = X86Entry::LOAD_IA32_EFER.bits();
        /// Load IA32_BNDCFGS.
        const LOAD_IA32_BNDCFGS = X86Entry::LOAD_IA32_BNDCFGS.bits();
        /// Load IA32_RTIT_CTL.
        const LOAD_IA32_RTIT_CTL = X86Entry::LOAD_IA32_RTIT_CTL.bits();
        /// Load CET state (not in x86 0.52).
        const LOAD_CET_STATE = 1 << 20;
        /// Load IA32_PKRS (not in x86 0.52).
        const LOAD_PKRS = 1 << 22;
    }
}

bitflags! {
    /// The VM-exit controls (field 0x400C) hv-stub knows; x86's own type
    /// lacks the CET, PKS and "save IA32_PERF_GLOBAL_CTRL" bits (see
    /// [`EntryControls`]).
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
    pub struct ExitControls: u32 {
        /// Save debug controls.
        const SAVE_DEBUG_CONTROLS = X86Exit::SAVE_DEBUG_CONTROLS.bits();
        /// Host address-space size (a 64-bit host).
        const HOST_ADDRESS_SPACE_SIZE = X86Exit::HOST_ADDRESS_SPACE_SIZE.bits();
        /// Load IA32_PERF_GLOBAL_CTRL.
        const LOAD_IA32_PERF_GLOBAL_CTRL = X86Exit::LOAD_IA32_PERF_GLOBAL_CTRL.bits();
        /// Save IA32_PAT.
        const SAVE_IA32_PAT = X86Exit::SAVE_IA32_PAT.bits();
        /// Load IA32_PAT.
        const LOAD_IA32_PAT = X86Exit::LOAD_IA32_PAT.bits();
        /// Save IA32_EFER.
        const SAVE_IA32_EFER = X86Exit::SAVE_IA32_EFER.bits();
        /// Load IA32_EFER.
        const LOAD_IA32_EFER = X86Exit::LOAD_IA32_EFER.bits();
        /// Clear IA32_BNDCFGS.
        const CLEAR_IA32_BNDCFGS = X86Exit::CLEAR_IA32_BNDCFGS.bits();
        /// Clear IA32_RTIT_CTL.
        const CLEAR_IA32_RTIT_CTL = X86Exit::CLEAR_IA32_RTIT_CTL.bits();
        /// Load CET state (not in x86 0.52).
        const LOAD_CET_STATE = 1 << 28;
        /// Load IA32_PKRS (not in x86 0.52).
        const LOAD_PKRS = 1 << 29;
        /// Save IA32_PERF_GLOBAL_CTRL (not in x86 0.52): newer processors
        /// save the guest's value on VM exit (SDM 24.7.1, 27.3.1).
        const SAVE_IA32_PERF_GLOBAL_CTRL = 1 << 30;
    }
}

bitflags! {
    /// IA32_FEATURE_CONTROL (SDM Vol. 4, Table 2-2; not in x86 0.52). Which
    /// bits a processor has: [`crate::CpuCaps::feature_control_valid`].
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
    pub struct FeatureControl: u64 {
        /// Lock: no WRMSR until reset.
        const LOCK = 1 << 0;
        /// VMXON inside SMX operation.
        const VMX_INSIDE_SMX = 1 << 1;
        /// VMXON outside SMX operation.
        const VMX_OUTSIDE_SMX = 1 << 2;
        /// SENTER local function enables (bits 14:8).
        const SENTER_LOCAL = 0x7F << 8;
        /// SENTER global enable.
        const SENTER_GLOBAL = 1 << 15;
        /// SGX launch control enable.
        const SGX_LAUNCH_CONTROL = 1 << 17;
        /// SGX global enable.
        const SGX = 1 << 18;
        /// Local machine-check exceptions enable.
        const LMCE = 1 << 20;
    }
}

/// The VM-entry control bits as the raw `u32` the VMCS field holds, for
/// VMREAD/VMWRITE arithmetic ([`EntryControls`] defines them).
pub mod entry {
    use super::EntryControls as E;

    /// [`E::LOAD_DEBUG_CONTROLS`].
    pub const LOAD_DEBUG_CONTROLS: u32 = E::LOAD_DEBUG_CONTROLS.bits();
    /// [`E::IA32E_MODE_GUEST`].
    pub const IA32E_MODE_GUEST: u32 = E::IA32E_MODE_GUEST.bits();
    /// [`E::LOAD_IA32_PERF_GLOBAL_CTRL`].
    pub const LOAD_IA32_PERF_GLOBAL_CTRL: u32 = E::LOAD_IA32_PERF_GLOBAL_CTRL.bits();
    /// [`E::LOAD_IA32_PAT`].
    pub const LOAD_IA32_PAT: u32 = E::LOAD_IA32_PAT.bits();
    /// [`E::LOAD_IA32_EFER`].
    pub const LOAD_IA32_EFER: u32 = E::LOAD_IA32_EFER.bits();
    /// [`E::LOAD_IA32_BNDCFGS`].
    pub const LOAD_IA32_BNDCFGS: u32 = E::LOAD_IA32_BNDCFGS.bits();
    /// [`E::LOAD_IA32_RTIT_CTL`].
    pub const LOAD_IA32_RTIT_CTL: u32 = E::LOAD_IA32_RTIT_CTL.bits();
    /// [`E::LOAD_CET_STATE`].
    pub const LOAD_CET_STATE: u32 = E::LOAD_CET_STATE.bits();
    /// [`E::LOAD_PKRS`].
    pub const LOAD_PKRS: u32 = E::LOAD_PKRS.bits();
}

/// The VM-exit control bits as the raw `u32` the VMCS field holds
/// ([`ExitControls`] defines them).
pub mod exit {
    use super::ExitControls as X;

    /// [`X::SAVE_DEBUG_CONTROLS`].
    pub const SAVE_DEBUG_CONTROLS: u32 = X::SAVE_DEBUG_CONTROLS.bits();
    /// [`X::HOST_ADDRESS_SPACE_SIZE`].
    pub const HOST_ADDRESS_SPACE_SIZE: u32 = X::HOST_ADDRESS_SPACE_SIZE.bits();
    /// [`X::LOAD_IA32_PERF_GLOBAL_CTRL`].
    pub const LOAD_IA32_PERF_GLOBAL_CTRL: u32 = X::LOAD_IA32_PERF_GLOBAL_CTRL.bits();
    /// [`X::SAVE_IA32_PAT`].
    pub const SAVE_IA32_PAT: u32 = X::SAVE_IA32_PAT.bits();
    /// [`X::LOAD_IA32_PAT`].
    pub const LOAD_IA32_PAT: u32 = X::LOAD_IA32_PAT.bits();
    /// [`X::SAVE_IA32_EFER`].
    pub const SAVE_IA32_EFER: u32 = X::SAVE_IA32_EFER.bits();
    /// [`X::LOAD_IA32_EFER`].
    pub const LOAD_IA32_EFER: u32 = X::LOAD_IA32_EFER.bits();
    /// [`X::CLEAR_IA32_BNDCFGS`].
    pub const CLEAR_IA32_BNDCFGS: u32 = X::CLEAR_IA32_BNDCFGS.bits();
    /// [`X::CLEAR_IA32_RTIT_CTL`].
    pub const CLEAR_IA32_RTIT_CTL: u32 = X::CLEAR_IA32_RTIT_CTL.bits();
    /// [`X::LOAD_CET_STATE`].
    pub const LOAD_CET_STATE: u32 = X::LOAD_CET_STATE.bits();
    /// [`X::LOAD_PKRS`].
    pub const LOAD_PKRS: u32 = X::LOAD_PKRS.bits();
    /// [`X::SAVE_IA32_PERF_GLOBAL_CTRL`].
    pub const SAVE_IA32_PERF_GLOBAL_CTRL: u32 = X::SAVE_IA32_PERF_GLOBAL_CTRL.bits();
}

/// Control-register and EFER bits the routing looks at.
pub mod bits {
    /// CR0.PG: paging.
    pub const CR0_PG: u64 = 1 << 31;
    /// CR4.PAE: physical-address extension (needed for IA-32e mode).
    pub const CR4_PAE: u64 = 1 << 5;
    /// CR4.LA57: 5-level paging.
    pub const CR4_LA57: u64 = 1 << 12;
    /// EFER.SCE: SYSCALL enable.
    pub const EFER_SCE: u64 = 1 << 0;
    /// EFER.LME: long mode enable.
    pub const EFER_LME: u64 = 1 << 8;
    /// EFER.LMA: long mode active (read-only).
    pub const EFER_LMA: u64 = 1 << 10;
    /// EFER.NXE: execute-disable enable.
    pub const EFER_NXE: u64 = 1 << 11;
    /// IA32_FEATURE_CONTROL's lock bit ([`super::FeatureControl::LOCK`]).
    pub const FEATURE_CONTROL_LOCK: u64 = super::FeatureControl::LOCK.bits();
    /// IA32_RTIT_CTL.TraceEn (SDM Vol. 3C 33.2.8.2).
    pub const RTIT_TRACE_EN: u64 = 1 << 0;
    /// IA32_RTIT_CTL.FabricEn.
    pub const RTIT_FABRIC_EN: u64 = 1 << 6;
    /// IA32_RTIT_CTL.ToPA.
    pub const RTIT_TOPA: u64 = 1 << 8;
    /// IA32_RTIT_CTL.MTCFreq, bits 17:14.
    pub const RTIT_MTC_FREQ_SHIFT: u32 = 14;
    /// IA32_RTIT_CTL.CycThresh, bits 22:19.
    pub const RTIT_CYC_THRESH_SHIFT: u32 = 19;
    /// IA32_RTIT_CTL.PSBFreq, bits 27:24.
    pub const RTIT_PSB_FREQ_SHIFT: u32 = 24;
    /// IA32_RTIT_CTL.ADDR0_CFG, bits 35:32 (ADDRn_CFG at 32 + 4n).
    pub const RTIT_ADDR0_CFG_SHIFT: u32 = 32;
}
