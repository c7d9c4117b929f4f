//! The one table of the MSRs hv-stub knows: for each, its name, how VM
//! entry gives the guest its value (hence where a debugger's write lands,
//! SDM Vol. 3C 26.3.2.1), and what VM exit does with it (27.3.1, 27.5.1).
//! Everything else is derived from it: the routing table
//! ([`crate::routing::TABLE`]), the reference page's list
//! ([`GUEST_APPLIED`]), the software model's MSR file and its VM entry and
//! exit, the controls hv-stub asks for ([`crate::policy`]) and the MSRs the
//! observer guests watch ([`WATCHED`]).
//!
//! Per-value rules (which values WRMSR refuses) are not here but in
//! [`crate::validate`]; the model's VM-entry checks on the guest-state
//! fields are written out separately in [`crate::model`].

use crate::msr::{field, index::*, EntryControls, ExitControls};

/// How VM entry treats an MSR, hence where a debugger's write must go.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Place {
    /// Loaded from `field` on every VM entry. `low32`: the field has 32 bits
    /// and VM entry clears bits 63:32 of the MSR.
    AlwaysField {
        /// The guest-state field.
        field: u32,
        /// Whether the field holds only bits 31:0.
        low32: bool,
    },
    /// Loaded from `field` when VM-entry `control` is 1; with it 0 the live
    /// MSR is shared by host and guest.
    ControlledField {
        /// The guest-state field.
        field: u32,
        /// The VM-entry control that loads it.
        control: EntryControls,
    },
    /// IA32_EFER: a controlled field ("load IA32_EFER", field 0x2806) whose
    /// LMA/LME are also tied to the "IA-32e mode guest" control and CR0.PG.
    Efer,
    /// IA32_SMBASE: recorded in the guest's SMBASE field (0x4828); WRMSR to
    /// it always faults outside SMM.
    SmbaseField,
    /// IA32_FEATURE_CONTROL: a shadow copy that the guest's RDMSR returns.
    FeatureControlShadow,
    /// Not switched by VMX: WRMSR/RDMSR in VMX-root mode reach the guest.
    Live,
}

/// When VM exit saves the guest's value into the guest-state field VM
/// entry loads it from (SDM 27.3.1).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Save {
    /// Never (not switched by VMX, or left unchanged, as IA32_SMBASE).
    Never,
    /// On every VM exit.
    Always,
    /// When this VM-exit control is 1.
    Under(ExitControls),
    /// Whenever the processor supports the 1-setting of `entry` or of
    /// `exit`, whatever the controls in force.
    IfSupported {
        /// The VM-entry control that loads the MSR.
        entry: EntryControls,
        /// The VM-exit control that clears it (empty if there is none).
        exit: ExitControls,
    },
}

/// What VM exit puts in the MSR for the host (SDM 27.5.1).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HostValue {
    /// Nothing: the MSR keeps the guest's value.
    Unchanged,
    /// The host-state `field`, always (`control` `None`) or when the
    /// VM-exit `control` is 1.
    Field {
        /// The host-state field.
        field: u32,
        /// The VM-exit control that loads it, if it is not always loaded.
        control: Option<ExitControls>,
    },
    /// 0, always (`None`) or when the VM-exit control is 1.
    Cleared(Option<ExitControls>),
    /// IA32_EFER: the host field under "load IA32_EFER"; otherwise LMA and
    /// LME follow "host address-space size".
    Efer,
}

/// What VM exit does with an MSR.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ExitRule {
    /// Whether the guest's value is saved.
    pub save: Save,
    /// What the host gets.
    pub host: HostValue,
}

impl ExitRule {
    /// An MSR VM exit leaves alone.
    pub const UNCHANGED: ExitRule = ExitRule {
        save: Save::Never,
        host: HostValue::Unchanged,
    };

    /// The VM-exit controls this rule depends on: the partners hv-stub sets
    /// beside the MSR's entry control so that guest and host values are
    /// switched symmetrically.
    pub const fn controls(&self) -> ExitControls {
        let save = match self.save {
            Save::Under(control) => control,
            Save::IfSupported { exit, .. } => exit,
            Save::Never | Save::Always => ExitControls::empty(),
        };
        let host = match self.host {
            HostValue::Field {
                control: Some(control),
                ..
            }
            | HostValue::Cleared(Some(control)) => control,
            HostValue::Efer => ExitControls::LOAD_IA32_EFER,
            _ => ExitControls::empty(),
        };
        save.union(host)
    }
}

/// Which lists an MSR belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    /// One of the 14 MSRs of the `PsWriteMsr` reference page whose write is
    /// applied to the guest.
    GuestApplied,
    /// Named by the routing table beside them: FS/GS base and the shared
    /// system-call MSRs.
    Routed,
    /// Another architectural MSR the validator knows and the model holds
    /// where its CPU has it; routed as [`Place::Live`].
    Architectural,
    /// Known by name only (for tools); not modelled, so `sim` faults on it.
    NameOnly,
}

/// One MSR hv-stub knows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MsrDescriptor {
    /// The MSR index.
    pub msr: u32,
    /// Its architectural name.
    pub name: &'static str,
    /// Which lists it belongs to.
    pub role: Role,
    /// How VM entry gives the guest its value.
    pub place: Place,
    /// What VM exit does with it.
    pub exit: ExitRule,
}

impl MsrDescriptor {
    /// Whether the routing table names it ([`crate::routing::TABLE`]).
    pub const fn routed(&self) -> bool {
        matches!(self.role, Role::GuestApplied | Role::Routed)
    }

    /// Whether the software model's processor may implement it: every MSR
    /// of the table but IA32_SMBASE (RDMSR/WRMSR fault outside SMM) and
    /// the name-only ones.
    pub const fn modelled(&self) -> bool {
        !matches!(self.role, Role::NameOnly) && !matches!(self.place, Place::SmbaseField)
    }

    /// The guest-state field VM entry loads it from (under its control, if
    /// it has one).
    pub const fn guest_field(&self) -> Option<u32> {
        match self.place {
            Place::AlwaysField { field, .. } | Place::ControlledField { field, .. } => Some(field),
            Place::Efer => Some(field::GUEST_IA32_EFER),
            Place::SmbaseField => Some(field::GUEST_SMBASE),
            Place::FeatureControlShadow | Place::Live => None,
        }
    }

    /// The host-state field VM exit loads it from (under its exit
    /// control, if it has one).
    pub const fn host_field(&self) -> Option<u32> {
        match self.exit.host {
            HostValue::Field { field, .. } => Some(field),
            HostValue::Efer => Some(field::HOST_IA32_EFER),
            HostValue::Unchanged | HostValue::Cleared(_) => None,
        }
    }

    /// The VM-entry control that decides whether VM entry loads it.
    pub const fn entry_control(&self) -> Option<EntryControls> {
        match self.place {
            Place::ControlledField { control, .. } => Some(control),
            Place::Efer => Some(EntryControls::LOAD_IA32_EFER),
            _ => None,
        }
    }

    /// Whether only bits 31:0 of the MSR reach (or leave) its field.
    pub const fn low32(&self) -> bool {
        matches!(self.place, Place::AlwaysField { low32: true, .. })
    }
}

const fn always(msr: u32, name: &'static str, guest: u32, host: u32) -> MsrDescriptor {
    MsrDescriptor {
        msr,
        name,
        role: Role::GuestApplied,
        place: Place::AlwaysField {
            field: guest,
            low32: false,
        },
        exit: ExitRule {
            save: Save::Always,
            host: HostValue::Field {
                field: host,
                control: None,
            },
        },
    }
}

const fn controlled(
    msr: u32,
    name: &'static str,
    field: u32,
    control: EntryControls,
    exit: ExitRule,
) -> MsrDescriptor {
    MsrDescriptor {
        msr,
        name,
        role: Role::GuestApplied,
        place: Place::ControlledField { field, control },
        exit,
    }
}

/// Saved whenever `entry` (or `exit`) is supported; `host` for the host.
const fn saved_if_supported(entry: EntryControls, exit: ExitControls, host: HostValue) -> ExitRule {
    ExitRule {
        save: Save::IfSupported { entry, exit },
        host,
    }
}

const fn host_field(field: u32, control: ExitControls) -> HostValue {
    HostValue::Field {
        field,
        control: Some(control),
    }
}

const fn with_role(d: MsrDescriptor, role: Role) -> MsrDescriptor {
    MsrDescriptor { role, ..d }
}

const fn live(msr: u32, name: &'static str, role: Role) -> MsrDescriptor {
    MsrDescriptor {
        msr,
        name,
        role,
        place: Place::Live,
        exit: ExitRule::UNCHANGED,
    }
}

const fn shared(msr: u32, name: &'static str) -> MsrDescriptor {
    live(msr, name, Role::Routed)
}

const fn arch(msr: u32, name: &'static str) -> MsrDescriptor {
    live(msr, name, Role::Architectural)
}

/// Every MSR hv-stub knows. The routed ones come first, in the order of
/// the routing table (the reference page's 14, then FS/GS base and the
/// shared system-call MSRs); a compile-time check keeps them there.
pub const TABLE: &[MsrDescriptor] = &[
    MsrDescriptor {
        msr: IA32_SYSENTER_CS,
        name: "IA32_SYSENTER_CS",
        role: Role::GuestApplied,
        place: Place::AlwaysField {
            field: field::GUEST_IA32_SYSENTER_CS,
            low32: true,
        },
        exit: ExitRule {
            save: Save::Always,
            host: HostValue::Field {
                field: field::HOST_IA32_SYSENTER_CS,
                control: None,
            },
        },
    },
    always(
        IA32_SYSENTER_ESP,
        "IA32_SYSENTER_ESP",
        field::GUEST_IA32_SYSENTER_ESP,
        field::HOST_IA32_SYSENTER_ESP,
    ),
    always(
        IA32_SYSENTER_EIP,
        "IA32_SYSENTER_EIP",
        field::GUEST_IA32_SYSENTER_EIP,
        field::HOST_IA32_SYSENTER_EIP,
    ),
    MsrDescriptor {
        msr: IA32_SMBASE,
        name: "IA32_SMBASE",
        role: Role::GuestApplied,
        place: Place::SmbaseField,
        // SDM 27.3.1 leaves the field undefined after other exits than SMM
        // VM exits; the model keeps it.
        exit: ExitRule::UNCHANGED,
    },
    controlled(
        IA32_DEBUGCTL,
        "IA32_DEBUGCTL",
        field::GUEST_IA32_DEBUGCTL,
        EntryControls::LOAD_DEBUG_CONTROLS,
        // Every VM exit clears IA32_DEBUGCTL.
        ExitRule {
            save: Save::Under(ExitControls::SAVE_DEBUG_CONTROLS),
            host: HostValue::Cleared(None),
        },
    ),
    controlled(
        IA32_PAT,
        "IA32_PAT",
        field::GUEST_IA32_PAT,
        EntryControls::LOAD_IA32_PAT,
        ExitRule {
            save: Save::Under(ExitControls::SAVE_IA32_PAT),
            host: host_field(field::HOST_IA32_PAT, ExitControls::LOAD_IA32_PAT),
        },
    ),
    MsrDescriptor {
        msr: IA32_EFER,
        name: "IA32_EFER",
        role: Role::GuestApplied,
        place: Place::Efer,
        exit: ExitRule {
            save: Save::Under(ExitControls::SAVE_IA32_EFER),
            host: HostValue::Efer,
        },
    },
    controlled(
        IA32_PERF_GLOBAL_CTRL,
        "IA32_PERF_GLOBAL_CTRL",
        field::GUEST_IA32_PERF_GLOBAL_CTRL,
        EntryControls::LOAD_IA32_PERF_GLOBAL_CTRL,
        ExitRule {
            save: Save::Under(ExitControls::SAVE_IA32_PERF_GLOBAL_CTRL),
            host: host_field(
                field::HOST_IA32_PERF_GLOBAL_CTRL,
                ExitControls::LOAD_IA32_PERF_GLOBAL_CTRL,
            ),
        },
    ),
    controlled(
        IA32_BNDCFGS,
        "IA32_BNDCFGS",
        field::GUEST_IA32_BNDCFGS,
        EntryControls::LOAD_IA32_BNDCFGS,
        saved_if_supported(
            EntryControls::LOAD_IA32_BNDCFGS,
            ExitControls::CLEAR_IA32_BNDCFGS,
            HostValue::Cleared(Some(ExitControls::CLEAR_IA32_BNDCFGS)),
        ),
    ),
    controlled(
        IA32_RTIT_CTL,
        "IA32_RTIT_CTL",
        field::GUEST_IA32_RTIT_CTL,
        EntryControls::LOAD_IA32_RTIT_CTL,
        saved_if_supported(
            EntryControls::LOAD_IA32_RTIT_CTL,
            ExitControls::CLEAR_IA32_RTIT_CTL,
            HostValue::Cleared(Some(ExitControls::CLEAR_IA32_RTIT_CTL)),
        ),
    ),
    controlled(
        IA32_PKRS,
        "IA32_PKRS",
        field::GUEST_IA32_PKRS,
        EntryControls::LOAD_PKRS,
        saved_if_supported(
            EntryControls::LOAD_PKRS,
            ExitControls::empty(),
            host_field(field::HOST_IA32_PKRS, ExitControls::LOAD_PKRS),
        ),
    ),
    controlled(
        IA32_S_CET,
        "IA32_S_CET",
        field::GUEST_IA32_S_CET,
        EntryControls::LOAD_CET_STATE,
        saved_if_supported(
            EntryControls::LOAD_CET_STATE,
            ExitControls::empty(),
            host_field(field::HOST_IA32_S_CET, ExitControls::LOAD_CET_STATE),
        ),
    ),
    controlled(
        IA32_INTERRUPT_SSP_TABLE_ADDR,
        "IA32_INTERRUPT_SSP_TABLE_ADDR",
        field::GUEST_IA32_INTERRUPT_SSP_TABLE_ADDR,
        EntryControls::LOAD_CET_STATE,
        saved_if_supported(
            EntryControls::LOAD_CET_STATE,
            ExitControls::empty(),
            host_field(
                field::HOST_IA32_INTERRUPT_SSP_TABLE_ADDR,
                ExitControls::LOAD_CET_STATE,
            ),
        ),
    ),
    MsrDescriptor {
        msr: IA32_FEATURE_CONTROL,
        name: "IA32_FEATURE_CONTROL",
        role: Role::GuestApplied,
        place: Place::FeatureControlShadow,
        exit: ExitRule::UNCHANGED,
    },
    with_role(
        always(
            IA32_FS_BASE,
            "IA32_FS_BASE",
            field::GUEST_FS_BASE,
            field::HOST_FS_BASE,
        ),
        Role::Routed,
    ),
    with_role(
        always(
            IA32_GS_BASE,
            "IA32_GS_BASE",
            field::GUEST_GS_BASE,
            field::HOST_GS_BASE,
        ),
        Role::Routed,
    ),
    shared(IA32_STAR, "IA32_STAR"),
    shared(IA32_LSTAR, "IA32_LSTAR"),
    shared(IA32_CSTAR, "IA32_CSTAR"),
    shared(IA32_FMASK, "IA32_FMASK"),
    shared(IA32_KERNEL_GS_BASE, "IA32_KERNEL_GS_BASE"),
    shared(IA32_TSC_AUX, "IA32_TSC_AUX"),
    arch(IA32_TIME_STAMP_COUNTER, "IA32_TIME_STAMP_COUNTER"),
    arch(IA32_APIC_BASE, "IA32_APIC_BASE"),
    arch(IA32_TSC_ADJUST, "IA32_TSC_ADJUST"),
    arch(IA32_SPEC_CTRL, "IA32_SPEC_CTRL"),
    arch(IA32_PRED_CMD, "IA32_PRED_CMD"),
    arch(IA32_MTRRCAP, "IA32_MTRRCAP"),
    arch(IA32_ARCH_CAPABILITIES, "IA32_ARCH_CAPABILITIES"),
    arch(IA32_FLUSH_CMD, "IA32_FLUSH_CMD"),
    arch(IA32_MTRR_PHYSBASE0, "IA32_MTRR_PHYSBASE0"),
    arch(IA32_MTRR_PHYSMASK0, "IA32_MTRR_PHYSMASK0"),
    arch(IA32_MTRR_PHYSBASE1, "IA32_MTRR_PHYSBASE1"),
    arch(IA32_MTRR_PHYSMASK1, "IA32_MTRR_PHYSMASK1"),
    arch(IA32_MTRR_PHYSBASE2, "IA32_MTRR_PHYSBASE2"),
    arch(IA32_MTRR_PHYSMASK2, "IA32_MTRR_PHYSMASK2"),
    arch(IA32_MTRR_PHYSBASE3, "IA32_MTRR_PHYSBASE3"),
    arch(IA32_MTRR_PHYSMASK3, "IA32_MTRR_PHYSMASK3"),
    arch(IA32_MTRR_PHYSBASE4, "IA32_MTRR_PHYSBASE4"),
    arch(IA32_MTRR_PHYSMASK4, "IA32_MTRR_PHYSMASK4"),
    arch(IA32_MTRR_PHYSBASE5, "IA32_MTRR_PHYSBASE5"),
    arch(IA32_MTRR_PHYSMASK5, "IA32_MTRR_PHYSMASK5"),
    arch(IA32_MTRR_PHYSBASE6, "IA32_MTRR_PHYSBASE6"),
    arch(IA32_MTRR_PHYSMASK6, "IA32_MTRR_PHYSMASK6"),
    arch(IA32_MTRR_PHYSBASE7, "IA32_MTRR_PHYSBASE7"),
    arch(IA32_MTRR_PHYSMASK7, "IA32_MTRR_PHYSMASK7"),
    arch(IA32_MTRR_FIX64K_00000, "IA32_MTRR_FIX64K_00000"),
    arch(IA32_MTRR_FIX16K_80000, "IA32_MTRR_FIX16K_80000"),
    arch(IA32_MTRR_FIX16K_A0000, "IA32_MTRR_FIX16K_A0000"),
    arch(IA32_MTRR_FIX4K_C0000, "IA32_MTRR_FIX4K_C0000"),
    arch(IA32_MTRR_FIX4K_C8000, "IA32_MTRR_FIX4K_C8000"),
    arch(IA32_MTRR_FIX4K_D0000, "IA32_MTRR_FIX4K_D0000"),
    arch(IA32_MTRR_FIX4K_D8000, "IA32_MTRR_FIX4K_D8000"),
    arch(IA32_MTRR_FIX4K_E0000, "IA32_MTRR_FIX4K_E0000"),
    arch(IA32_MTRR_FIX4K_E8000, "IA32_MTRR_FIX4K_E8000"),
    arch(IA32_MTRR_FIX4K_F0000, "IA32_MTRR_FIX4K_F0000"),
    arch(IA32_MTRR_FIX4K_F8000, "IA32_MTRR_FIX4K_F8000"),
    arch(IA32_MTRR_DEF_TYPE, "IA32_MTRR_DEF_TYPE"),
    arch(IA32_U_CET, "IA32_U_CET"),
    arch(IA32_PL0_SSP, "IA32_PL0_SSP"),
    arch(IA32_PL1_SSP, "IA32_PL1_SSP"),
    arch(IA32_PL2_SSP, "IA32_PL2_SSP"),
    arch(IA32_PL3_SSP, "IA32_PL3_SSP"),
    arch(IA32_TSC_DEADLINE, "IA32_TSC_DEADLINE"),
    arch(IA32_XSS, "IA32_XSS"),
    live(IA32_SMM_MONITOR_CTL, "IA32_SMM_MONITOR_CTL", Role::NameOnly),
    live(IA32_MISC_ENABLE, "IA32_MISC_ENABLE", Role::NameOnly),
];

/// A list derived from [`TABLE`].
#[derive(Clone, Copy)]
enum List {
    Routed,
    GuestApplied,
    Modelled,
    Watched,
}

const fn in_list(d: &MsrDescriptor, list: List) -> bool {
    match list {
        List::Routed => d.routed(),
        List::GuestApplied => matches!(d.role, Role::GuestApplied),
        List::Modelled => d.modelled(),
        // What a guest can read with RDMSR among the routed MSRs: all but
        // IA32_SMBASE.
        List::Watched => d.routed() && d.modelled(),
    }
}

const fn count(list: List) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < TABLE.len() {
        if in_list(&TABLE[i], list) {
            n += 1;
        }
        i += 1;
    }
    n
}

const fn numbers<const N: usize>(list: List) -> [u32; N] {
    let mut out = [0; N];
    let (mut i, mut n) = (0, 0);
    while i < TABLE.len() {
        if in_list(&TABLE[i], list) {
            out[n] = TABLE[i].msr;
            n += 1;
        }
        i += 1;
    }
    assert!(n == N);
    out
}

// The routed MSRs lead the table, so that the routing table is a slice of
// it.
const _: () = {
    let mut i = 0;
    while i < TABLE.len() {
        assert!(TABLE[i].routed() == (i < count(List::Routed)));
        i += 1;
    }
};

/// The routed MSRs: the head of [`TABLE`].
pub const ROUTED: &[MsrDescriptor] = TABLE.split_at(count(List::Routed)).0;

/// The MSRs of the `PsWriteMsr` reference page whose write is applied to
/// the guest, in the page's order.
pub const GUEST_APPLIED: [u32; count(List::GuestApplied)] = numbers(List::GuestApplied);

/// The MSRs the software model's processor may implement (each only where
/// its CPU has it): every table entry but IA32_SMBASE and the name-only ones.
pub const MODELLED: [u32; count(List::Modelled)] = numbers(List::Modelled);

/// The MSRs an observer guest reads after every VM entry: the routed MSRs
/// a guest can read (IA32_SMBASE excepted: RDMSR of it faults outside SMM).
pub const WATCHED: [u32; count(List::Watched)] = numbers(List::Watched);

const fn msr_field_count() -> usize {
    let (mut n, mut i) = (0, 0);
    while i < TABLE.len() {
        n += TABLE[i].guest_field().is_some() as usize + TABLE[i].host_field().is_some() as usize;
        i += 1;
    }
    n
}

/// The VMCS fields that hold MSR state: each entry's guest-state field and
/// host-state field, in table order.
pub const MSR_FIELDS: [u32; msr_field_count()] = {
    let mut out = [0; msr_field_count()];
    let (mut i, mut n) = (0, 0);
    while i < TABLE.len() {
        if let Some(f) = TABLE[i].guest_field() {
            out[n] = f;
            n += 1;
        }
        if let Some(f) = TABLE[i].host_field() {
            out[n] = f;
            n += 1;
        }
        i += 1;
    }
    out
};

/// Whether no number appears twice in `list` (for compile-time checks of
/// the lists derived here).
pub const fn distinct(list: &[u32]) -> bool {
    let mut i = 0;
    while i < list.len() {
        let mut j = i + 1;
        while j < list.len() {
            if list[i] == list[j] {
                return false;
            }
            j += 1;
        }
        i += 1;
    }
    true
}

const _: () = assert!(distinct(&MODELLED) && distinct(&MSR_FIELDS));

/// The table entry of `msr`.
pub fn descriptor(msr: u32) -> Option<&'static MsrDescriptor> {
    TABLE.iter().find(|d| d.msr == msr)
}

/// The table entry named `name` (ASCII case-insensitive).
pub fn by_name(name: &str) -> Option<&'static MsrDescriptor> {
    TABLE.iter().find(|d| d.name.eq_ignore_ascii_case(name))
}
