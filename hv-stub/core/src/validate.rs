//! Values the processor refuses. Each check mirrors the WRMSR #GP condition
//! (SDM Vol. 4 per-MSR descriptions) and, for MSRs loaded from the VMCS, the
//! guest-state check VM entry applies to the same field (SDM Vol. 3C
//! 26.3.1.1), which are the same conditions. Checked before anything is
//! written, so a refused write changes nothing and cannot make the next VM
//! entry fail.

use crate::caps::CpuCaps;
use crate::msr::{bits, index::*};

/// Why a value is refused; travels as #GP on the wire, kept for tests/docs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Refusal {
    /// The processor does not implement this MSR.
    NotPresent,
    /// A reserved bit is set.
    ReservedBits,
    /// An address is not canonical.
    NonCanonical,
    /// An IA32_PAT entry holds a reserved memory type (2, 3 or > 7).
    InvalidMemoryType,
    /// IA32_S_CET asks for SUPPRESS and WAIT_ENDBR (TRACKER) together.
    CetSuppressWithTracker,
    /// The EFER write would change LME while paging is on, or change the
    /// host's own long-mode bits.
    EferModeChange,
    /// The MSR is not writable by WRMSR in this mode (IA32_SMBASE outside SMM).
    NotWritable,
    /// An IA32_RTIT_CTL field holds an encoding CPUID.14H does not list
    /// (MTCFreq, CycThresh, PSBFreq, ADDRn_CFG > 2 or beyond the ranges), or
    /// TraceEn = 1 with neither ToPA nor FabricEn and no single-range output.
    InvalidEncoding,
    /// IA32_RTIT_CTL has TraceEn = 1 and the write keeps TraceEn = 1 but
    /// changes other bits (SDM 33.2.8.2; KVM `vmx_rtit_ctl_check`).
    TraceActive,
    /// IA32_FEATURE_CONTROL is locked (the guest's own WRMSR).
    Locked,
    /// An MTRR or IA32_MTRR_DEF_TYPE holds a reserved memory type (2, 3, > 6).
    InvalidMtrrType,
    /// An address above MAXPHYADDR (MTRR bases and masks).
    InvalidPhysicalAddress,
    /// An address that must be 4-byte aligned is not (IA32_PLn_SSP).
    Misaligned,
    /// IA32_APIC_BASE: a local-APIC mode change the SDM forbids (x2APIC to
    /// xAPIC, disabled to x2APIC, EXTD without EN; SDM 10.12.5).
    InvalidTransition,
}

/// True if `addr` is canonical for the processor's linear-address width.
pub fn is_canonical(addr: u64, caps: &CpuCaps) -> bool {
    let shift = 64 - u32::from(caps.linear_address_bits);
    (((addr << shift) as i64) >> shift) as u64 == addr
}

/// IA32_PAT: each of the 8 entries must be UC(0), WC(1), WT(4), WP(5), WB(6) or UC-(7).
pub fn pat_valid(value: u64) -> bool {
    value
        .to_le_bytes()
        .iter()
        .all(|&t| matches!(t, 0 | 1 | 4 | 5 | 6 | 7))
}

/// MTRR memory types: UC(0), WC(1), WT(4), WP(5), WB(6) (UC- exists in PAT only).
fn mtrr_type_valid(t: u64) -> bool {
    matches!(t, 0 | 1 | 4 | 5 | 6)
}

fn physical(value: u64, caps: &CpuCaps) -> Result<(), Refusal> {
    require(
        value >> caps.physical_address_bits == 0,
        Refusal::InvalidPhysicalAddress,
    )
}

/// IA32_MTRR_PHYSBASEn: type in bits 7:0 (bits 11:8 reserved), base up to
/// MAXPHYADDR. IA32_MTRR_PHYSMASKn: bits 10:0 reserved, bit 11 valid, mask
/// up to MAXPHYADDR (SDM Vol. 3A 12.11.2.3).
fn variable_mtrr_check(msr: u32, value: u64, caps: &CpuCaps) -> Result<(), Refusal> {
    require(caps.mtrr, Refusal::NotPresent)?;
    physical(value, caps)?;
    if msr % 2 == 0 {
        reserved_clear(value, !0xF00)?;
        require(mtrr_type_valid(value & 0xFF), Refusal::InvalidMtrrType)
    } else {
        reserved_clear(value, !0x7FF)
    }
}

/// Fixed-range MTRRs: eight memory-type bytes.
fn fixed_mtrr_check(value: u64, caps: &CpuCaps) -> Result<(), Refusal> {
    require(caps.mtrr, Refusal::NotPresent)?;
    require(
        value
            .to_le_bytes()
            .iter()
            .all(|&t| mtrr_type_valid(t.into())),
        Refusal::InvalidMtrrType,
    )
}

/// IA32_MTRR_DEF_TYPE: default type 7:0, FE 10, E 11; the rest reserved.
fn mtrr_def_type_check(value: u64, caps: &CpuCaps) -> Result<(), Refusal> {
    require(caps.mtrr, Refusal::NotPresent)?;
    reserved_clear(value, 0xCFF)?;
    require(mtrr_type_valid(value & 0xFF), Refusal::InvalidMtrrType)
}

const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;

/// IA32_APIC_BASE (SDM Vol. 3A 10.4.4, 10.12.1): bits 7:0 and 9 reserved,
/// EXTD (10) only with x2APIC, the base below MAXPHYADDR; EXTD without
/// EN is an invalid state.
fn apic_base_check(value: u64, caps: &CpuCaps) -> Result<(), Refusal> {
    let mut reserved = 0x2FF;
    if !caps.x2apic {
        reserved |= APIC_BASE_X2APIC;
    }
    reserved_clear(value, !reserved)?;
    physical(value, caps)?;
    require(
        value & (APIC_BASE_ENABLE | APIC_BASE_X2APIC) != APIC_BASE_X2APIC,
        Refusal::InvalidTransition,
    )
}

/// MSRs that exist but fault on RDMSR (command MSRs).
pub fn write_only(msr: u32) -> bool {
    matches!(msr, IA32_PRED_CMD | IA32_FLUSH_CMD)
}

/// EFER bits an Intel 64 processor implements: SCE, LME, LMA, NXE.
pub const EFER_VALID: u64 = bits::EFER_SCE | bits::EFER_LME | bits::EFER_LMA | bits::EFER_NXE;

const S_CET_SHSTK_BITS: u64 = 0b11; // SH_STK_EN, WR_SHSTK_EN
const S_CET_IBT_BITS: u64 = 0b11_1100 | (0b11 << 10) | !0xFFF; // ENDBR_EN..SUPPRESS_DIS, SUPPRESS, TRACKER, EB_LEG_BITMAP_BASE
const S_CET_RESERVED: u64 = 0xF << 6;
const S_CET_SUPPRESS: u64 = 1 << 10;
const S_CET_TRACKER: u64 = 1 << 11;

fn require(cond: bool, why: Refusal) -> Result<(), Refusal> {
    if cond {
        Ok(())
    } else {
        Err(why)
    }
}

fn reserved_clear(value: u64, valid: u64) -> Result<(), Refusal> {
    require(value & !valid == 0, Refusal::ReservedBits)
}

fn canonical(value: u64, caps: &CpuCaps) -> Result<(), Refusal> {
    require(is_canonical(value, caps), Refusal::NonCanonical)
}

/// Whether WRMSR of `value` to `msr` succeeds on a processor with `caps`,
/// regardless of VMX state. `None` for an MSR this module does not know
/// (the processor itself decides).
pub fn wrmsr_check(msr: u32, value: u64, caps: &CpuCaps) -> Option<Result<(), Refusal>> {
    let verdict =
        match msr {
            IA32_FEATURE_CONTROL => reserved_clear(value, caps.feature_control_valid()),
            // The TSC and TSC_ADJUST take any value; the deadline timer too.
            IA32_TIME_STAMP_COUNTER => Ok(()),
            IA32_APIC_BASE => apic_base_check(value, caps),
            IA32_TSC_ADJUST => require(caps.tsc_adjust, Refusal::NotPresent),
            IA32_TSC_DEADLINE => require(caps.tsc_deadline, Refusal::NotPresent),
            // IBRS, STIBP, SSBD; IBPB; L1D flush (SDM Vol. 4, Table 2-2).
            IA32_SPEC_CTRL => require(caps.spec_ctrl, Refusal::NotPresent)
                .and_then(|_| reserved_clear(value, 0b111)),
            IA32_PRED_CMD => {
                require(caps.spec_ctrl, Refusal::NotPresent).and_then(|_| reserved_clear(value, 1))
            }
            IA32_FLUSH_CMD => {
                require(caps.flush_cmd, Refusal::NotPresent).and_then(|_| reserved_clear(value, 1))
            }
            IA32_ARCH_CAPABILITIES => {
                require(caps.arch_capabilities, Refusal::NotPresent).and(Err(Refusal::NotWritable))
            }
            IA32_MTRRCAP => require(caps.mtrr, Refusal::NotPresent).and(Err(Refusal::NotWritable)),
            IA32_MTRR_PHYSBASE0..IA32_MTRR_PHYS_END => variable_mtrr_check(msr, value, caps),
            IA32_MTRR_FIX64K_00000
            | IA32_MTRR_FIX16K_80000
            | IA32_MTRR_FIX16K_A0000
            | IA32_MTRR_FIX4K_C0000..=IA32_MTRR_FIX4K_F8000 => fixed_mtrr_check(value, caps),
            IA32_MTRR_DEF_TYPE => mtrr_def_type_check(value, caps),
            IA32_XSS => require(caps.xsaves, Refusal::NotPresent)
                .and_then(|_| reserved_clear(value, caps.xss_valid())),
            IA32_U_CET => s_cet_check(value, caps),
            IA32_PL0_SSP..=IA32_PL3_SSP => require(caps.cet_shstk, Refusal::NotPresent)
                .and_then(|_| canonical(value, caps))
                .and_then(|_| require(value & 3 == 0, Refusal::Misaligned)),
            IA32_SMBASE => Err(Refusal::NotWritable),
            IA32_SYSENTER_CS | IA32_STAR => Ok(()),
            IA32_SYSENTER_ESP | IA32_SYSENTER_EIP | IA32_LSTAR | IA32_CSTAR | IA32_FS_BASE
            | IA32_GS_BASE | IA32_KERNEL_GS_BASE => canonical(value, caps),
            IA32_FMASK | IA32_TSC_AUX => reserved_clear(value, 0xFFFF_FFFF),
            IA32_DEBUGCTL => require(caps.has_debugctl, Refusal::NotPresent)
                .and_then(|_| reserved_clear(value, caps.debugctl_valid())),
            IA32_PAT => require(pat_valid(value), Refusal::InvalidMemoryType),
            IA32_EFER => reserved_clear(value, EFER_VALID),
            IA32_PERF_GLOBAL_CTRL => require(caps.pmu_gp_counters > 0, Refusal::NotPresent)
                .and_then(|_| reserved_clear(value, caps.perf_global_ctrl_valid())),
            IA32_BNDCFGS => require(caps.mpx, Refusal::NotPresent)
                .and_then(|_| reserved_clear(value, !(0x3FF << 2)))
                .and_then(|_| canonical(value & !0xFFF, caps)),
            IA32_RTIT_CTL => rtit_ctl_check(value, caps),
            IA32_PKRS => require(caps.pks, Refusal::NotPresent)
                .and_then(|_| reserved_clear(value, 0xFFFF_FFFF)),
            IA32_S_CET => s_cet_check(value, caps),
            IA32_INTERRUPT_SSP_TABLE_ADDR => {
                require(caps.cet_shstk, Refusal::NotPresent).and_then(|_| canonical(value, caps))
            }
            _ => return None,
        };
    Some(verdict)
}

/// False for an MSR the processor with `caps` does not implement.
pub fn present(msr: u32, caps: &CpuCaps) -> bool {
    !matches!(wrmsr_check(msr, 0, caps), Some(Err(Refusal::NotPresent)))
}

/// IA32_S_CET and IA32_U_CET (one layout): bits 9:6 reserved; shadow-stack bits need SHSTK, the
/// tracking bits and the legacy-bitmap base need IBT; the base must be
/// canonical; SUPPRESS and TRACKER may not both be set.
fn s_cet_check(value: u64, caps: &CpuCaps) -> Result<(), Refusal> {
    require(caps.has_cet(), Refusal::NotPresent)?;
    let mut valid = 0;
    if caps.cet_shstk {
        valid |= S_CET_SHSTK_BITS;
    }
    if caps.cet_ibt {
        valid |= S_CET_IBT_BITS;
    }
    reserved_clear(value, valid & !S_CET_RESERVED)?;
    canonical(value & !0xFFF, caps)?;
    require(
        value & (S_CET_SUPPRESS | S_CET_TRACKER) != (S_CET_SUPPRESS | S_CET_TRACKER),
        Refusal::CetSuppressWithTracker,
    )
}

/// IA32_RTIT_CTL, as KVM's `vmx_rtit_ctl_check` and SDM 33.2.8.2: reserved
/// bits per CPUID.14H, the MTCFreq/CycThresh/PSBFreq encodings the processor
/// lists, ADDRn_CFG at most 2 and only for implemented ranges, and TraceEn
/// without ToPA or FabricEn only with single-range output.
fn rtit_ctl_check(value: u64, caps: &CpuCaps) -> Result<(), Refusal> {
    require(caps.intel_pt, Refusal::NotPresent)?;
    reserved_clear(value, caps.rtit_ctl_valid)?;
    let field = |shift: u32, width: u32| (value >> shift) & ((1 << width) - 1);
    let listed = |bitmap: u16, encoding: u64| bitmap & (1 << encoding) != 0;
    let encodings = [
        (bits::RTIT_MTC_FREQ_SHIFT, caps.pt_mtc_periods),
        (bits::RTIT_CYC_THRESH_SHIFT, caps.pt_cyc_thresholds),
        (bits::RTIT_PSB_FREQ_SHIFT, caps.pt_psb_periods),
    ];
    for (shift, bitmap) in encodings {
        // A field the mask forbids was refused above; one it allows must
        // hold a listed encoding.
        if caps.rtit_ctl_valid & (0xF << shift) != 0 {
            require(listed(bitmap, field(shift, 4)), Refusal::InvalidEncoding)?;
        }
    }
    for range in 0..4u32 {
        let cfg = field(bits::RTIT_ADDR0_CFG_SHIFT + 4 * range, 4);
        let implemented = range < u32::from(caps.pt_address_ranges);
        require(
            cfg == 0 || (implemented && cfg <= 2),
            Refusal::InvalidEncoding,
        )?;
    }
    let single_range_needed =
        value & bits::RTIT_TRACE_EN != 0 && value & (bits::RTIT_TOPA | bits::RTIT_FABRIC_EN) == 0;
    require(
        !single_range_needed || caps.pt_single_range_output,
        Refusal::InvalidEncoding,
    )
}

/// Whether WRMSR of `msr` has a #GP condition that depends on its current
/// value (see [`wrmsr_transition_check`]).
pub fn has_transition_rule(msr: u32) -> bool {
    matches!(msr, IA32_RTIT_CTL | IA32_APIC_BASE)
}

/// The part of WRMSR's #GP conditions that depends on the MSR's current
/// value `old` (checked in addition to [`wrmsr_check`]). IA32_RTIT_CTL:
/// while TraceEn = 1, a write that keeps TraceEn = 1 may not change any
/// other bit (KVM `vmx_rtit_ctl_check` as fixed upstream: clearing TraceEn
/// may change the rest in the same write).
pub fn wrmsr_transition_check(msr: u32, old: u64, new: u64) -> Result<(), Refusal> {
    match msr {
        IA32_RTIT_CTL => require(
            old & bits::RTIT_TRACE_EN == 0 || new & bits::RTIT_TRACE_EN == 0 || old == new,
            Refusal::TraceActive,
        ),
        // x2APIC -> xAPIC and disabled -> x2APIC must go through another
        // state (SDM 10.12.5, Figure 10-27).
        IA32_APIC_BASE => {
            let mode = |v: u64| v & (APIC_BASE_ENABLE | APIC_BASE_X2APIC);
            let x2apic = APIC_BASE_ENABLE | APIC_BASE_X2APIC;
            let forbidden = matches!(
                (mode(old), mode(new)),
                (o, APIC_BASE_ENABLE) if o == x2apic
            ) || (mode(old) == 0 && mode(new) == x2apic);
            require(!forbidden, Refusal::InvalidTransition)
        }
        _ => Ok(()),
    }
}
