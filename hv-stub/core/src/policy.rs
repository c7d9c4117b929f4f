//! How hv-stub configures VMX, where the software model and the bare-metal
//! image must agree: one home for these decisions. The controls follow from
//! the MSR table ([`crate::msr_table`]); the image applies them to the
//! capability MSRs of the processor it runs on, the model to its profile.

use crate::caps::CpuCaps;
use crate::msr::{index, EntryControls, ExitControls, FeatureControl};
use crate::msr_table::TABLE;
use crate::validate;
use crate::vmx_backend::GpFault;

/// The VM-entry controls that load an MSR from a guest-state field: one for
/// each controlled MSR of the table. hv-stub turns on every one the
/// processor allows, so the guest's values live in the VMCS.
pub const MSR_LOAD_CONTROLS: EntryControls = {
    let mut controls = EntryControls::empty();
    let mut i = 0;
    while i < TABLE.len() {
        if let Some(control) = TABLE[i].entry_control() {
            controls = controls.union(control);
        }
        i += 1;
    }
    controls
};

/// The VM-entry controls hv-stub asks for: a 64-bit guest and every MSR
/// load control (the image adjusts them to the processor's capability
/// MSRs, the model to its profile: [`controls_for`]).
pub const ENTRY_CONTROLS: EntryControls = EntryControls::IA32E_MODE_GUEST.union(MSR_LOAD_CONTROLS);

/// The VM-exit controls hv-stub asks for: a 64-bit host and the partners
/// of every MSR load control ([`exit_partners`]).
pub const EXIT_CONTROLS: ExitControls =
    ExitControls::HOST_ADDRESS_SPACE_SIZE.union(exit_partners(MSR_LOAD_CONTROLS));

/// The VM-exit controls that go with the MSR load controls in `entry`, so
/// that guest and host values are switched symmetrically: the controls that
/// save each such MSR for the guest and restore (or clear) it for the host.
pub const fn exit_partners(entry: EntryControls) -> ExitControls {
    let mut partners = ExitControls::empty();
    let mut i = 0;
    while i < TABLE.len() {
        if let Some(control) = TABLE[i].entry_control() {
            if entry.contains(control) {
                partners = partners.union(TABLE[i].exit.controls());
            }
        }
        i += 1;
    }
    partners
}

/// The VM-entry and VM-exit controls hv-stub runs a processor with `caps`
/// with: what it asks for where allowed (an exit partner only with its
/// entry control), plus what the processor requires.
pub fn controls_for(caps: &CpuCaps) -> (EntryControls, ExitControls) {
    let mut entry =
        EntryControls::IA32E_MODE_GUEST | EntryControls::from_bits_retain(caps.entry_required1);
    let mut exit =
        ExitControls::HOST_ADDRESS_SPACE_SIZE | ExitControls::from_bits_retain(caps.exit_required1);
    for control in MSR_LOAD_CONTROLS.iter() {
        if caps.entry_allowed(control.bits()) {
            entry |= control;
            exit |= exit_partners(control) & ExitControls::from_bits_retain(caps.exit_allowed1);
        }
    }
    (entry, exit)
}

/// MSRs hv-stub hides from its guest: the VMX capability MSRs, since the
/// guest is told it has no VMX (CPUID.1:ECX\[5\] = 0, IA32_FEATURE_CONTROL
/// shadow without VMX enabled). The guest's RDMSR/WRMSR of them exits and
/// gets #GP, and the debugger's `PsReadMsr`/`PsWriteMsr` answer the same.
pub fn hidden_from_guest(msr: u32) -> bool {
    VMX_CAPABILITY_MSRS.contains(&msr)
}

/// The VMX capability MSRs, IA32_VMX_BASIC ..= IA32_VMX_EXIT_CTLS2.
pub const VMX_CAPABILITY_MSRS: core::ops::RangeInclusive<u32> =
    index::IA32_VMX_BASIC..=index::IA32_VMX_EXIT_CTLS2;

/// What hv-stub does when its guest reads or writes an MSR.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GuestMsrAccess {
    /// The access exits and works on the IA32_FEATURE_CONTROL shadow
    /// ([`guest_feature_control_write`] for a write).
    FeatureControlShadow,
    /// The access exits and gets #GP: a VMX capability MSR of a guest
    /// told it has no VMX.
    Hidden,
    /// Not intercepted: the processor executes it.
    Processor,
}

/// How the guest's RDMSR/WRMSR of `msr` is handled; `hide_vmx`: the guest
/// is told it has no VMX (a real OS), as opposed to the observer guest.
pub fn guest_msr_access(msr: u32, hide_vmx: bool) -> GuestMsrAccess {
    if msr == index::IA32_FEATURE_CONTROL {
        GuestMsrAccess::FeatureControlShadow
    } else if hide_vmx && hidden_from_guest(msr) {
        GuestMsrAccess::Hidden
    } else {
        GuestMsrAccess::Processor
    }
}

/// The MSRs whose guest RDMSR and WRMSR exit (the MSR bitmap's bits): those
/// [`guest_msr_access`] does not leave to the processor.
pub fn intercepted_msrs(hide_vmx: bool) -> impl Iterator<Item = u32> {
    let vmx = VMX_CAPABILITY_MSRS.filter(move |_| hide_vmx);
    core::iter::once(index::IA32_FEATURE_CONTROL).chain(vmx)
}

/// The IA32_FEATURE_CONTROL bits VMXON outside SMX needs: locked with VMX
/// outside SMX enabled. Firmware usually leaves it so; hv-stub sets them
/// when it finds the MSR unlocked.
pub const FEATURE_CONTROL_FOR_VMXON: FeatureControl =
    FeatureControl::LOCK.union(FeatureControl::VMX_OUTSIDE_SMX);

/// What hv-stub writes to IA32_FEATURE_CONTROL before VMXON, as firmware
/// would: the current value with [`FEATURE_CONTROL_FOR_VMXON`], if the MSR
/// is still unlocked; `None` once locked (the value then stays until reset,
/// and [`vmxon_allowed`] tells whether it allows VMX).
pub fn feature_control_to_enable_vmx(current: u64) -> Option<u64> {
    let locked = FeatureControl::from_bits_retain(current).contains(FeatureControl::LOCK);
    (!locked).then_some(current | FEATURE_CONTROL_FOR_VMXON.bits())
}

/// Whether `feature_control` lets VMXON run outside SMX.
pub fn vmxon_allowed(feature_control: u64) -> bool {
    FeatureControl::from_bits_retain(feature_control).contains(FEATURE_CONTROL_FOR_VMXON)
}

/// The IA32_FEATURE_CONTROL value the guest's RDMSR first returns: the
/// host's, with both VMX enables cleared for a guest told it has no VMX.
pub fn guest_feature_control(host: u64, hide_vmx: bool) -> u64 {
    let vmx = FeatureControl::VMX_INSIDE_SMX | FeatureControl::VMX_OUTSIDE_SMX;
    if hide_vmx {
        host & !vmx.bits()
    } else {
        host
    }
}

/// The guest's own WRMSR of IA32_FEATURE_CONTROL, which hv-stub intercepts:
/// like the processor, a locked shadow refuses it, and so does a value with
/// bits the processor lacks. Returns the new shadow. (A debugger's write is
/// host-initiated and may change a locked shadow: see the routing.)
pub fn guest_feature_control_write(
    shadow: u64,
    value: u64,
    caps: &CpuCaps,
) -> Result<u64, GpFault> {
    let locked = FeatureControl::from_bits_retain(shadow).contains(FeatureControl::LOCK);
    let valid = matches!(
        validate::wrmsr_check(index::IA32_FEATURE_CONTROL, value, caps),
        Some(Ok(()))
    );
    if locked || !valid {
        return Err(GpFault);
    }
    Ok(value)
}

/// MSRs hv-stub keeps in its VM-entry MSR-load area. That area is also the
/// VM-exit MSR-store area (SDM 27.4), so the guest's own WRMSR is saved at
/// every VM exit and loaded back at the next entry, and the routing reads and
/// writes what the guest holds.
///
/// * IA32_KERNEL_GS_BASE: not switched by VMX; kept there so the area path
///   of the routing is always in use (SWAPGS of a 64-bit guest depends on
///   the store half).
/// * IA32_PERF_GLOBAL_CTRL where "load IA32_PERF_GLOBAL_CTRL" exists but
///   "save IA32_PERF_GLOBAL_CTRL" does not: VM exit loads the host's value
///   and nothing saves the guest's, so the area carries it across.
pub fn load_area_msrs(caps: &CpuCaps) -> impl Iterator<Item = u32> {
    let perf_global_ctrl_unsaved = caps
        .entry_allowed(EntryControls::LOAD_IA32_PERF_GLOBAL_CTRL.bits())
        && caps.exit_allowed1 & ExitControls::SAVE_IA32_PERF_GLOBAL_CTRL.bits() == 0
        && caps.pmu_gp_counters > 0;
    [
        Some(index::IA32_KERNEL_GS_BASE),
        perf_global_ctrl_unsaved.then_some(index::IA32_PERF_GLOBAL_CTRL),
    ]
    .into_iter()
    .flatten()
}
