//! Helpers shared by the hv-stub core integration tests: the per-MSR value
//! tables, the expected guest view of a successful write, and snapshots.
#![allow(dead_code)]

use hv_stub::model::{GuestView, ModelState, SoftVmx};
use hv_stub::msr::{bits, entry, field, index::*};
use hv_stub::routing::{self, Place, GUEST_APPLIED, TABLE};
use hv_stub::validate::{self, Refusal};
use hv_stub::{CpuCaps, GpFault, VmxBackend};

/// The VM-entry control that decides where `msr` lands, if any.
pub fn control_of(msr: u32) -> Option<u32> {
    match routing::place_of(msr) {
        Place::ControlledField { control, .. } => Some(control.bits()),
        Place::Efer => Some(entry::LOAD_IA32_EFER),
        _ => None,
    }
}

/// The guest-state field `msr` is loaded from (when its control is 1).
pub fn field_of(msr: u32) -> Option<u32> {
    match routing::place_of(msr) {
        Place::ControlledField { field, .. } | Place::AlwaysField { field, .. } => Some(field),
        Place::Efer => Some(field::GUEST_IA32_EFER),
        Place::SmbaseField => Some(field::GUEST_SMBASE),
        _ => None,
    }
}

/// Whether the processor implements `msr` at all.
pub fn present(caps: &CpuCaps, msr: u32) -> bool {
    !matches!(
        validate::wrmsr_check(msr, 0, caps),
        Some(Err(Refusal::NotPresent))
    )
}

/// A value with bit `bits` set and the bits above it clear: not canonical
/// for a `bits`-wide linear address space... nor for any narrower one.
pub fn non_canonical(caps: &CpuCaps) -> u64 {
    1u64 << caps.linear_address_bits
}

/// Values the processor accepts for `msr` on `caps`, starting from the
/// model's power-on state (a 64-bit guest with paging on).
pub fn valid_values(msr: u32, caps: &CpuCaps) -> Vec<u64> {
    let kernel = 0xFFFF_F800_0123_4000u64;
    let mut v = match msr {
        IA32_SYSENTER_CS => vec![0x10, 0xDEAD_BEEF_0000_0023, u64::MAX, 0],
        IA32_SYSENTER_ESP | IA32_SYSENTER_EIP | IA32_INTERRUPT_SSP_TABLE_ADDR => {
            vec![0, kernel, 0x0000_7FFF_FFFF_F000]
        }
        IA32_SMBASE => vec![0x3_0000, 0xA_0000, 0xFFFF_FFFF, 0],
        IA32_DEBUGCTL => {
            let mut v = vec![0, 1, 2, 0b11 | (1 << 6) | (1 << 8), caps.debugctl_valid()];
            for (present, bit) in [
                (caps.bus_lock_detect, 1 << 2),
                (caps.freeze_while_smm, 1 << 14),
                (caps.rtm, 1 << 15),
            ] {
                if present {
                    v.push(bit);
                }
            }
            v
        }
        IA32_PAT => vec![
            0x0007_0406_0007_0406,
            0x0606_0606_0606_0606,
            0x0001_0405_0607_0001,
            0,
        ],
        // LME must stay 1 under paging; the written LMA is ignored.
        IA32_EFER => vec![0xD01, 0x500, 0x100, 0x901, 0x501, 0xD00],
        IA32_PERF_GLOBAL_CTRL => vec![0, 1, 0x3 | (1 << 32), caps.perf_global_ctrl_valid()],
        IA32_BNDCFGS => vec![0, 1, 0x3, 0x0000_7FFF_FFFF_F003, kernel & !0xFFF | 1],
        IA32_RTIT_CTL => vec![
            0,
            0x2101,                                 // TraceEn, ToPA, BranchEn
            0x2001,                                 // TraceEn with single-range output
            0x2100 | (1 << 32),                     // ADDR0_CFG = 1 (filter)
            0x2100 | (2 << 36),                     // ADDR1_CFG = 2 (TraceStop)
            0x2000 | (3 << 14) | (5 << 24) | 0x600, // MTCFreq 3, PSBFreq 5, MTCEn, TSCEn
        ],
        IA32_PKRS => vec![0, 0x5555_5554, 0xFFFF_FFFF],
        IA32_S_CET => {
            let mut v = vec![0];
            if caps.cet_shstk {
                v.extend([1, 3]);
            }
            if caps.cet_ibt {
                v.extend([4, 4 | (1 << 10), 4 | (1 << 11), 0x0000_7FFF_FFFF_F004]);
            }
            v
        }
        IA32_FEATURE_CONTROL => {
            let mut v = vec![0, 0x5, 0x4, caps.feature_control_valid()];
            if caps.smx {
                v.extend([0x7, 0x3, 0x5 | (0x7F << 8) | (1 << 15)]);
            }
            if caps.lmce {
                v.push(0x5 | (1 << 20));
            }
            v
        }
        IA32_FS_BASE | IA32_GS_BASE | IA32_KERNEL_GS_BASE | IA32_LSTAR | IA32_CSTAR => {
            vec![0, kernel]
        }
        IA32_STAR => vec![0x0023_0010_0000_0000, u64::MAX],
        IA32_FMASK | IA32_TSC_AUX => vec![0, 0x4_7700, 0xFFFF_FFFF],
        _ => vec![],
    };
    if caps.linear_address_bits == 57
        && matches!(
            msr,
            IA32_SYSENTER_ESP
                | IA32_SYSENTER_EIP
                | IA32_INTERRUPT_SSP_TABLE_ADDR
                | IA32_FS_BASE
                | IA32_GS_BASE
        )
    {
        // Canonical only with 5-level paging.
        v.push(0xFF80_0000_0000_0000);
    }
    v
}

/// Values the processor refuses for `msr` on `caps` (it implements `msr`).
pub fn invalid_values(msr: u32, caps: &CpuCaps) -> Vec<u64> {
    let nc = non_canonical(caps);
    let mut v = match msr {
        IA32_SYSENTER_ESP | IA32_SYSENTER_EIP | IA32_INTERRUPT_SSP_TABLE_ADDR => {
            vec![nc, 0x8000_0000_0000_0000, 0x0100_0000_0000_0000]
        }
        IA32_SMBASE => vec![0x1_0000_0000, u64::MAX],
        IA32_DEBUGCTL => {
            // Bits 2, 14 and 15 exist only with their features (bus-lock
            // detection, PERF_CAPABILITIES[12], RTM).
            let mut v = vec![1 << 3, 1 << 5, 1 << 16, 1 << 63];
            for (present, bit) in [
                (caps.bus_lock_detect, 1 << 2),
                (caps.freeze_while_smm, 1 << 14),
                (caps.rtm, 1 << 15),
            ] {
                if !present {
                    v.push(bit);
                }
            }
            v
        }
        IA32_PAT => vec![
            0x0007_0406_0007_0402,
            0x0307_0406_0007_0406,
            0x0008_0406_0007_0406,
            u64::MAX,
        ],
        // Clearing LME with paging on; reserved bits 1, 9, 12 (AMD's SVME), 63.
        IA32_EFER => vec![0xC01, 0x001, 0x0, 0xD03, 0xF01, 0x1D01, 0xD01 | (1 << 63)],
        IA32_PERF_GLOBAL_CTRL => vec![
            1 << caps.pmu_gp_counters,
            1 << (32 + caps.pmu_fixed_counters),
            1 << 63,
        ],
        IA32_BNDCFGS => vec![1 << 2, 1 << 11, 0x8000_0000_0000_0001, nc | 1],
        IA32_RTIT_CTL => vec![
            1 << 6,  // FabricEn: not supported
            1 << 18, // reserved
            3 << 32, // ADDR0_CFG = 3
            1 << 40, // ADDR2_CFG: only 2 ranges
            1 << 14, // MTCFreq 1: not in the MTC bitmap
            6 << 24, // PSBFreq 6: not listed
            1 << 63,
        ],
        IA32_PKRS => vec![1 << 32, u64::MAX],
        IA32_S_CET => {
            let mut v = vec![
                1 << 6,
                1 << 9,
                (1 << 10) | (1 << 11) | 4,
                0x8000_0000_0000_0004,
            ];
            if !caps.cet_shstk {
                v.push(1);
            }
            if !caps.cet_ibt {
                v.push(4);
            }
            v
        }
        IA32_FEATURE_CONTROL => {
            // Bits tied to SMX, SGX and LMCE are reserved without them
            // (Bochs has none of the three: 0x6 is refused there).
            let mut v = vec![1 << 3, 1 << 16, 1 << 63];
            if !caps.smx {
                v.extend([0x6, 0x7, 1 << 8, 1 << 15]);
            }
            if !caps.sgx_launch_control {
                v.push(1 << 17);
            }
            if !caps.sgx {
                v.push(1 << 18);
            }
            if !caps.lmce {
                v.push(1 << 20);
            }
            v
        }
        IA32_FS_BASE | IA32_GS_BASE | IA32_KERNEL_GS_BASE | IA32_LSTAR | IA32_CSTAR => {
            vec![nc, 0x8000_0000_0000_0000]
        }
        IA32_FMASK | IA32_TSC_AUX => vec![1 << 32],
        _ => vec![],
    };
    if caps.linear_address_bits == 48
        && matches!(
            msr,
            IA32_SYSENTER_ESP | IA32_SYSENTER_EIP | IA32_FS_BASE | IA32_GS_BASE
        )
    {
        // Canonical with 5-level paging only: refused on a 48-bit part.
        v.push(0xFF80_0000_0000_0000);
    }
    v
}

/// What the guest reads after a successful write of `value` to `msr`, given
/// the guest's previous value `previous`.
pub fn expected_view(msr: u32, value: u64, previous: u64) -> u64 {
    match msr {
        IA32_SYSENTER_CS => value & 0xFFFF_FFFF,
        // LMA is read-only (LME cannot change under paging, so LMA keeps
        // its value).
        IA32_EFER => (value & !bits::EFER_LMA) | (previous & bits::EFER_LMA),
        _ => value,
    }
}

/// Every MSR a test looks at: the routing table plus a few unknown ones.
pub fn all_msrs() -> Vec<u32> {
    let mut v: Vec<u32> = TABLE.iter().map(|r| r.msr).collect();
    v.extend([0x1234_5678, 0xC000_0104, IA32_SMM_MONITOR_CTL, 0x808]);
    v
}

/// What the debugger could observe: the model's whole state plus
/// `read_msr` of every MSR.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Snapshot {
    pub state: ModelState,
    pub reads: Vec<(u32, Result<u64, GpFault>)>,
}

pub fn snapshot(m: &mut SoftVmx) -> Snapshot {
    let reads = all_msrs()
        .into_iter()
        .map(|msr| (msr, routing::read_msr(m, msr)))
        .collect();
    Snapshot {
        state: m.state(),
        reads,
    }
}

/// Runs the guest once and returns what its RDMSR of `msr` gave.
pub fn guest_reads(m: &mut SoftVmx, msr: u32) -> Result<u64, GpFault> {
    m.run_guest(|g: &mut GuestView<'_>| g.rdmsr(msr))
        .expect("VM entry must succeed")
}

/// The 14 guest-applied MSRs of the reference page.
pub fn seed_msrs() -> [u32; 14] {
    GUEST_APPLIED
}

pub fn vmread(m: &SoftVmx, f: u32) -> u64 {
    VmxBackend::vmread(m, f)
}
