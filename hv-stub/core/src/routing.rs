//! Where a debugger's MSR write lands so that the *guest* sees it, and where
//! a read comes from so that it returns what the guest would read.
//!
//! The rules come from SDM Vol. 3C 26.3.2.1 (VM entry loads SYSENTER_*,
//! FS/GS base always, and DEBUGCTL, PERF_GLOBAL_CTRL, PAT, EFER, BNDCFGS,
//! RTIT_CTL, CET state and PKRS under their "load" controls, from guest-state
//! fields) and 26.4 (the VM-entry MSR-load area is processed afterwards and
//! overrides all of those except FS/GS base, which it may not contain).
//! `docs/MSR-SEMANTICS.md` is the user-facing version of this table.

use crate::msr::{bits, entry, field, index::*};
use crate::msr_table::{self, MsrDescriptor};
use crate::policy;
use crate::validate::{self, Refusal};
use crate::vmx_backend::{GpFault, VmxBackend};

pub use crate::msr_table::Place;

/// A routed MSR: its entry in the MSR table.
pub type Route = MsrDescriptor;

/// The routing table: the 14 MSRs of the `PsWriteMsr` reference page, FS/GS
/// base, and the common shared MSRs (named so tools can show them; any MSR
/// not listed routes as `Live`). The head of [`msr_table::TABLE`].
pub const TABLE: &[Route] = msr_table::ROUTED;

pub use crate::msr_table::GUEST_APPLIED;

/// The routing table's entry for `msr`.
pub fn route_of(msr: u32) -> Option<&'static Route> {
    TABLE.iter().find(|r| r.msr == msr)
}

/// Where a write to `msr` lands ([`Place::Live`] for an MSR not in the table).
pub fn place_of(msr: u32) -> Place {
    route_of(msr).map_or(Place::Live, |r| r.place)
}

/// Where a successful write went.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Landing {
    /// The guest-state field with this encoding.
    VmcsField(u32),
    /// The guest-state field and the VM-entry MSR-load area entry that
    /// overrides it.
    VmcsFieldAndLoadArea(u32),
    /// The VM-entry MSR-load area only.
    LoadArea,
    /// The virtualised copy the guest reads.
    Shadow,
    /// The live MSR, by WRMSR in VMX-root mode.
    LiveMsr,
}

fn refuse(_why: Refusal) -> GpFault {
    GpFault
}

fn check(msr: u32, value: u64, caps: &crate::caps::CpuCaps) -> Result<(), GpFault> {
    match validate::wrmsr_check(msr, value, caps) {
        Some(verdict) => verdict.map_err(refuse),
        None => Ok(()),
    }
}

/// Index of `msr` in the VM-entry MSR-load area, if there. FS/GS base are
/// never taken from the area (an entry for them fails VM entry).
fn load_area_slot<B: VmxBackend>(b: &mut B, msr: u32) -> Option<usize> {
    if msr == IA32_FS_BASE || msr == IA32_GS_BASE {
        return None;
    }
    b.entry_load_area().iter().rposition(|e| e.index == msr)
}

fn entry_controls<B: VmxBackend>(b: &B) -> u32 {
    b.vmread(field::VM_ENTRY_CONTROLS) as u32
}

fn guest_paging<B: VmxBackend>(b: &B) -> bool {
    b.vmread(field::GUEST_CR0) & bits::CR0_PG != 0
}

/// A write that passed every check, ready to apply on the CPU it was
/// prepared on. Preparing has no effect the guest can see, so a write to
/// several CPUs can be checked on all of them before it changes any.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct WritePlan {
    action: Action,
    landing: Landing,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Action {
    /// VMWRITE `field`; also the area entry `area` (slot, value) if any, and
    /// new VM-entry controls (EFER's "IA-32e mode guest") if any.
    Vmcs {
        field: u32,
        value: u64,
        area: Option<usize>,
        entry_controls: Option<u32>,
    },
    /// The VM-entry MSR-load area entry only.
    Area { slot: usize, value: u64 },
    /// The IA32_FEATURE_CONTROL shadow.
    Shadow { value: u64 },
    /// WRMSR in VMX-root mode. `judged_by_cpu`: the validator does not know
    /// the MSR, so WRMSR itself decides (and may still fault on apply).
    Live {
        msr: u32,
        value: u64,
        judged_by_cpu: bool,
    },
}

impl WritePlan {
    /// Whether applying can still fault: only a WRMSR to an MSR the
    /// validator does not know, which the processor judges.
    pub fn may_fault(&self) -> bool {
        matches!(
            self.action,
            Action::Live {
                judged_by_cpu: true,
                ..
            }
        )
    }

    /// The live MSR this plan writes with WRMSR, if any (for an undo).
    pub fn live_msr(&self) -> Option<u32> {
        match self.action {
            Action::Live { msr, .. } => Some(msr),
            _ => None,
        }
    }
}

/// Applies a debugger's write so that the guest observes it after the next
/// VM entry. Refused values return `GpFault` and change nothing.
pub fn write_msr<B: VmxBackend>(b: &mut B, msr: u32, value: u64) -> Result<Landing, GpFault> {
    let plan = prepare_write(b, msr, value)?;
    apply_write(b, &plan)
}

/// Every check of [`write_msr`], without changing what the guest sees.
pub fn prepare_write<B: VmxBackend>(b: &mut B, msr: u32, value: u64) -> Result<WritePlan, GpFault> {
    if policy::hidden_from_guest(msr) {
        return Err(GpFault);
    }
    let caps = *b.caps();
    match place_of(msr) {
        Place::Live => prepare_shared(b, msr, value),
        Place::SmbaseField => {
            if value > u64::from(u32::MAX) {
                return Err(GpFault);
            }
            Ok(vmcs_plan(field::GUEST_SMBASE, value, None, None))
        }
        Place::FeatureControlShadow => {
            // A debugger write is host-initiated: like KVM's host-initiated
            // writes it may change a locked shadow.
            check(msr, value, &caps)?;
            Ok(WritePlan {
                action: Action::Shadow { value },
                landing: Landing::Shadow,
            })
        }
        Place::AlwaysField { field, low32 } => {
            check(msr, value, &caps)?;
            // SYSENTER_CS: the field has 32 bits and VM entry clears bits
            // 63:32 of the MSR (SDM 26.3.2.1); the load-area entry gets the
            // same truncated value so that every path shows the guest one value.
            let stored = if low32 { value & 0xFFFF_FFFF } else { value };
            Ok(field_plan(b, msr, field, stored))
        }
        Place::ControlledField { field, control } => {
            if entry_controls(b) & control.bits() != 0 {
                check(msr, value, &caps)?;
                check_transition(b, msr, value)?;
                Ok(field_plan(b, msr, field, value))
            } else {
                prepare_shared(b, msr, value)
            }
        }
        Place::Efer => prepare_efer(b, value),
    }
}

/// Carries out a prepared write on the CPU it was prepared on.
pub fn apply_write<B: VmxBackend>(b: &mut B, plan: &WritePlan) -> Result<Landing, GpFault> {
    match plan.action {
        Action::Vmcs {
            field,
            value,
            area,
            entry_controls,
        } => {
            b.vmwrite(field, value);
            if let Some(slot) = area {
                b.entry_load_area()[slot].value = value;
            }
            if let Some(controls) = entry_controls {
                b.vmwrite(field::VM_ENTRY_CONTROLS, u64::from(controls));
            }
        }
        Action::Area { slot, value } => b.entry_load_area()[slot].value = value,
        Action::Shadow { value } => *b.feature_control_shadow() = value,
        Action::Live { msr, value, .. } => b.wrmsr(msr, value)?,
    }
    Ok(plan.landing)
}

fn vmcs_plan(field: u32, value: u64, area: Option<usize>, controls: Option<u32>) -> WritePlan {
    WritePlan {
        action: Action::Vmcs {
            field,
            value,
            area,
            entry_controls: controls,
        },
        landing: match area {
            Some(_) => Landing::VmcsFieldAndLoadArea(field),
            None => Landing::VmcsField(field),
        },
    }
}

/// The guest field, and the load-area entry too if there is one, since VM
/// entry processes the area after the fields (SDM 26.4).
fn field_plan<B: VmxBackend>(b: &mut B, msr: u32, field: u32, value: u64) -> WritePlan {
    let slot = load_area_slot(b, msr);
    vmcs_plan(field, value, slot, None)
}

/// WRMSR conditions that depend on the value the guest holds now (IA32_RTIT_CTL
/// while TraceEn = 1), for a write to the guest-state field (VM entry loads
/// the field and then the area entry that `field_plan` keeps equal to it).
/// Only MSRs with such a condition are read back.
fn check_transition<B: VmxBackend>(b: &mut B, msr: u32, value: u64) -> Result<(), GpFault> {
    if !validate::has_transition_rule(msr) {
        return Ok(());
    }
    let old = read_msr(b, msr)?;
    validate::wrmsr_transition_check(msr, old, value).map_err(refuse)
}

/// An MSR that VM entry does not load from a field: the load-area entry if
/// one exists (VM entry would overwrite the live value with it), else WRMSR.
/// Either way the value is validated first: a processor that silently drops
/// bits the SDM calls reserved (Bochs keeps bits 31:0 of IA32_FMASK and
/// IA32_TSC_AUX) must not turn a refused value into SUCCESS.
fn prepare_shared<B: VmxBackend>(b: &mut B, msr: u32, value: u64) -> Result<WritePlan, GpFault> {
    let caps = *b.caps();
    let known = validate::wrmsr_check(msr, value, &caps).is_some();
    if known {
        check(msr, value, &caps)?;
    }
    if validate::has_transition_rule(msr) {
        // Checked against the value in force when the new one takes
        // effect: the live MSR, which WRMSR (now) or the area's load "as if
        // by WRMSR" (at the next VM entry) replaces.
        let live = b.rdmsr(msr)?;
        validate::wrmsr_transition_check(msr, live, value).map_err(refuse)?;
    }
    let Some(slot) = load_area_slot(b, msr) else {
        return Ok(WritePlan {
            action: Action::Live {
                msr,
                value,
                judged_by_cpu: !known,
            },
            landing: Landing::LiveMsr,
        });
    };
    if !known {
        // Unknown to the validator: let the processor judge the value by a
        // trial WRMSR, then restore, so VM entry's own load cannot fault.
        let previous = b.rdmsr(msr)?;
        b.wrmsr(msr, value)?;
        b.wrmsr(msr, previous)?;
    }
    Ok(WritePlan {
        action: Action::Area { slot, value },
        landing: Landing::LoadArea,
    })
}

/// IA32_EFER. LMA is read-only: the written bit is ignored and LMA follows
/// LME and CR0.PG (as on hardware and in KVM). With paging on, LME may not
/// change (the processor would #GP). With "load IA32_EFER" = 1 the guest
/// field is written and "IA-32e mode guest" kept equal to LMA, which VM entry
/// checks. With it 0 the live EFER is shared with the host and VM entry
/// forces LMA (and LME under paging) from "IA-32e mode guest", so only SCE
/// and NXE are the guest's; an LME change would change the host's long mode
/// and is refused.
fn prepare_efer<B: VmxBackend>(b: &mut B, value: u64) -> Result<WritePlan, GpFault> {
    let caps = *b.caps();
    check(IA32_EFER, value, &caps)?;
    let controls = entry_controls(b);
    let paging = guest_paging(b);
    let current = read_efer(b)?;
    let lme = value & bits::EFER_LME;
    let load_efer = controls & entry::LOAD_IA32_EFER != 0;
    if lme != current & bits::EFER_LME && (paging || !load_efer) {
        return Err(refuse(Refusal::EferModeChange));
    }
    let lma = if paging && lme != 0 {
        bits::EFER_LMA
    } else {
        0
    };
    let efer = (value & !bits::EFER_LMA) | lma;
    if load_efer {
        let ia32e = if lma != 0 {
            controls | entry::IA32E_MODE_GUEST
        } else {
            controls & !entry::IA32E_MODE_GUEST
        };
        let slot = load_area_slot(b, IA32_EFER);
        let new_controls = (ia32e != controls).then_some(ia32e);
        return Ok(vmcs_plan(field::GUEST_IA32_EFER, efer, slot, new_controls));
    }
    if let Some(slot) = load_area_slot(b, IA32_EFER) {
        return Ok(WritePlan {
            action: Action::Area { slot, value: efer },
            landing: Landing::LoadArea,
        });
    }
    let mode_bits = bits::EFER_LME | bits::EFER_LMA;
    let live = b.rdmsr(IA32_EFER)?;
    Ok(WritePlan {
        action: Action::Live {
            msr: IA32_EFER,
            value: (live & mode_bits) | (efer & !mode_bits),
            judged_by_cpu: false,
        },
        landing: Landing::LiveMsr,
    })
}

/// Returns what the guest's RDMSR of `msr` yields after the next VM entry.
pub fn read_msr<B: VmxBackend>(b: &mut B, msr: u32) -> Result<u64, GpFault> {
    // An MSR the CPU lacks faults for the guest even where a VMCS field
    // (with its load control on) would hold a value for it.
    if !validate::present(msr, b.caps()) || policy::hidden_from_guest(msr) {
        return Err(GpFault);
    }
    match place_of(msr) {
        Place::Live => read_shared(b, msr),
        Place::SmbaseField => Ok(b.vmread(field::GUEST_SMBASE) & 0xFFFF_FFFF),
        Place::FeatureControlShadow => Ok(*b.feature_control_shadow()),
        Place::AlwaysField { field, low32 } => {
            let value = match load_area_slot(b, msr) {
                Some(slot) => b.entry_load_area()[slot].value,
                None => b.vmread(field),
            };
            // Loading SYSENTER_CS, from the field or as if by WRMSR from
            // the area, keeps bits 31:0 only.
            Ok(if low32 { value & 0xFFFF_FFFF } else { value })
        }
        Place::ControlledField { field, control } => {
            if entry_controls(b) & control.bits() != 0 {
                match load_area_slot(b, msr) {
                    Some(slot) => Ok(b.entry_load_area()[slot].value),
                    None => Ok(b.vmread(field)),
                }
            } else {
                read_shared(b, msr)
            }
        }
        Place::Efer => read_efer(b),
    }
}

fn read_shared<B: VmxBackend>(b: &mut B, msr: u32) -> Result<u64, GpFault> {
    match load_area_slot(b, msr) {
        Some(slot) => Ok(b.entry_load_area()[slot].value),
        None => b.rdmsr(msr),
    }
}

fn read_efer<B: VmxBackend>(b: &mut B) -> Result<u64, GpFault> {
    let controls = entry_controls(b);
    let ia32e = controls & entry::IA32E_MODE_GUEST != 0;
    if let Some(slot) = load_area_slot(b, IA32_EFER) {
        // The area is loaded as if by WRMSR, which ignores the written LMA:
        // LMA stays what the field loading set, "IA-32e mode guest".
        let value = b.entry_load_area()[slot].value;
        return Ok(set_bit(value, bits::EFER_LMA, ia32e));
    }
    if controls & entry::LOAD_IA32_EFER != 0 {
        return Ok(b.vmread(field::GUEST_IA32_EFER));
    }
    // SDM 26.3.2.1: LMA := "IA-32e mode guest"; LME too if CR0.PG = 1.
    let mut efer = b.rdmsr(IA32_EFER)?;
    efer = set_bit(efer, bits::EFER_LMA, ia32e);
    if guest_paging(b) {
        efer = set_bit(efer, bits::EFER_LME, ia32e);
    }
    Ok(efer)
}

fn set_bit(value: u64, bit: u64, on: bool) -> u64 {
    if on {
        value | bit
    } else {
        value & !bit
    }
}
