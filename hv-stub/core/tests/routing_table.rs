//! Table-driven: every guest-applied MSR of the reference page, on every
//! CPU profile, with its load control 0 and 1 where the profile allows that
//! setting, with values the processor accepts and values it refuses.
//! Accepted: the status is Ok, the value lands where SDM 26.3.2.1 says, the
//! guest reads it after a simulated VM entry and `read_msr` agrees. Refused:
//! #GP and not one bit of the model changes.

mod common;

use common::*;
use hv_stub::model::SoftVmx;
use hv_stub::msr::{bits, entry, field, index::*};
use hv_stub::routing::{self, place_of, Landing, Place};
use hv_stub::{CpuCaps, GpFault};

/// A fresh model with `msr`'s load control set to `setting`, or `None` if
/// the profile does not allow that setting (checked against its caps).
fn configured(caps: CpuCaps, msr: u32, setting: Option<bool>) -> Option<SoftVmx> {
    let mut m = SoftVmx::new(caps);
    if let (Some(control), Some(on)) = (control_of(msr), setting) {
        let allowed = if on {
            caps.entry_allowed(control)
        } else {
            caps.entry_may_be_0(control)
        };
        assert_eq!(m.set_load_control(control, on), allowed, "{}", caps.name);
        if !allowed {
            assert_eq!(
                m.load_control(control),
                !on,
                "a refused setting changes nothing"
            );
            return None;
        }
        assert_eq!(m.load_control(control), on);
    }
    Some(m)
}

fn check_accepted(m: &SoftVmx, msr: u32, value: u64, setting: Option<bool>) {
    let mut m = m.clone();
    let name = m.caps().name;
    let ctx = format!("{name} msr {msr:#x} value {value:#x} control {setting:?}");
    let previous = routing::read_msr(&mut m, msr).unwrap_or(0);
    let landing = routing::write_msr(&mut m, msr, value)
        .unwrap_or_else(|_| panic!("refused a valid value: {ctx}"));
    let expected = expected_view(msr, value, previous);
    assert_eq!(routing::read_msr(&mut m, msr), Ok(expected), "read: {ctx}");

    // Where it landed.
    match (place_of(msr), setting) {
        (Place::ControlledField { field, .. }, Some(true)) => {
            assert_eq!(landing, Landing::VmcsField(field), "{ctx}");
            assert_eq!(vmread(&m, field), expected, "field: {ctx}");
        }
        (Place::ControlledField { .. }, Some(false)) => {
            assert_eq!(landing, Landing::LiveMsr, "{ctx}");
            assert_eq!(m.live_msr(msr), Some(expected), "live: {ctx}");
        }
        (Place::Efer, Some(true)) => {
            assert_eq!(landing, Landing::VmcsField(field::GUEST_IA32_EFER), "{ctx}");
            assert_eq!(vmread(&m, field::GUEST_IA32_EFER), expected, "{ctx}");
        }
        (Place::Efer, Some(false)) => {
            assert_eq!(landing, Landing::LiveMsr, "{ctx}");
            let mode = bits::EFER_LME | bits::EFER_LMA;
            let live = m.live_msr(IA32_EFER).unwrap();
            assert_eq!(live & !mode, expected & !mode, "SCE/NXE live: {ctx}");
            assert_eq!(live & mode, mode, "the host keeps long mode: {ctx}");
        }
        (Place::AlwaysField { field, .. }, _) => {
            assert_eq!(landing, Landing::VmcsField(field), "{ctx}");
            assert_eq!(vmread(&m, field), expected, "field: {ctx}");
        }
        (Place::SmbaseField, _) => {
            assert_eq!(landing, Landing::VmcsField(field::GUEST_SMBASE), "{ctx}");
            assert_eq!(vmread(&m, field::GUEST_SMBASE), value, "{ctx}");
        }
        (Place::FeatureControlShadow, _) => assert_eq!(landing, Landing::Shadow, "{ctx}"),
        other => panic!("unexpected place {other:?}: {ctx}"),
    }

    // What the guest sees after a VM entry.
    let seen = guest_reads(&mut m, msr);
    if msr == IA32_SMBASE {
        // RDMSR of IA32_SMBASE faults outside SMM; VM entry/exit keep the field.
        assert_eq!(seen, Err(GpFault), "{ctx}");
        assert_eq!(vmread(&m, field::GUEST_SMBASE), value, "{ctx}");
    } else {
        assert_eq!(seen, Ok(expected), "guest: {ctx}");
    }
    if msr == IA32_EFER {
        let lma = expected & bits::EFER_LMA != 0;
        assert_eq!(m.load_control(entry::IA32E_MODE_GUEST), lma, "{ctx}");
    }
}

fn check_refused(m: &SoftVmx, msr: u32, value: u64) {
    let mut m = m.clone();
    let ctx = format!("{} msr {msr:#x} value {value:#x}", m.caps().name);
    let before = snapshot(&mut m);
    let stats = m.stats();
    assert_eq!(
        routing::write_msr(&mut m, msr, value),
        Err(GpFault),
        "accepted an invalid value: {ctx}"
    );
    assert_eq!(
        snapshot(&mut m),
        before,
        "a refused write changed state: {ctx}"
    );
    assert_eq!(m.stats().vmwrites, stats.vmwrites, "{ctx}");
    assert_eq!(m.stats().wrmsrs, stats.wrmsrs, "{ctx}");
    // And the next VM entry still succeeds with the old value in place.
    let previous = routing::read_msr(&mut m, msr);
    let seen = guest_reads(&mut m, msr);
    if msr != IA32_SMBASE && previous.is_ok() {
        assert_eq!(seen, previous, "{ctx}");
    }
}

#[test]
fn every_seed_msr_every_profile_each_load_control() {
    let mut accepted = 0;
    let mut refused = 0;
    let mut absent = 0;
    let mut settings_refused = 0;
    for caps in CpuCaps::PROFILES {
        for msr in seed_msrs() {
            let settings: &[Option<bool>] = if control_of(msr).is_some() {
                &[Some(false), Some(true)]
            } else {
                &[None]
            };
            for &setting in settings {
                let Some(m) = configured(caps, msr, setting) else {
                    settings_refused += 1;
                    continue;
                };
                if !present(&caps, msr) {
                    // The feature is missing: every value faults, reads too.
                    for value in valid_values(msr, &CpuCaps::FULL) {
                        check_refused(&m, msr, value);
                        absent += 1;
                    }
                    let mut m = m.clone();
                    assert_eq!(routing::read_msr(&mut m, msr), Err(GpFault));
                    assert_eq!(guest_reads(&mut m, msr), Err(GpFault));
                    continue;
                }
                let valid = valid_values(msr, &caps);
                assert!(!valid.is_empty());
                for value in valid {
                    check_accepted(&m, msr, value, setting);
                    accepted += 1;
                }
                for value in invalid_values(msr, &caps) {
                    check_refused(&m, msr, value);
                    refused += 1;
                }
            }
        }
    }
    eprintln!(
        "routing table: {accepted} accepted, {refused} refused, {absent} on absent MSRs, \
         {settings_refused} control settings the profile lacks"
    );
    assert!(accepted > 300 && refused > 250 && absent > 50);
}

/// The shared MSRs the table names (and FS/GS base) behave the same way.
#[test]
fn named_shared_msrs_and_segment_bases() {
    for caps in CpuCaps::PROFILES {
        let m = SoftVmx::new(caps);
        for msr in [
            IA32_FS_BASE,
            IA32_GS_BASE,
            IA32_STAR,
            IA32_LSTAR,
            IA32_CSTAR,
            IA32_FMASK,
            IA32_KERNEL_GS_BASE,
            IA32_TSC_AUX,
        ] {
            for value in valid_values(msr, &caps) {
                let mut m = m.clone();
                let landing = routing::write_msr(&mut m, msr, value).unwrap();
                let want = match place_of(msr) {
                    Place::AlwaysField { field, .. } => Landing::VmcsField(field),
                    _ => Landing::LiveMsr,
                };
                assert_eq!(landing, want);
                assert_eq!(routing::read_msr(&mut m, msr), Ok(value));
                assert_eq!(guest_reads(&mut m, msr), Ok(value));
            }
            for value in invalid_values(msr, &caps) {
                check_refused(&m, msr, value);
            }
        }
    }
}

/// An MSR the processor does not implement: #GP for write and read.
#[test]
fn unknown_msrs_fault() {
    for caps in CpuCaps::PROFILES {
        let m = SoftVmx::new(caps);
        for msr in [
            0x1234_5678,
            0xC000_0104,
            0x4000_0000,
            IA32_SMM_MONITOR_CTL,
            0x808,
        ] {
            for value in [0, 1, u64::MAX] {
                check_refused(&m, msr, value);
            }
            assert_eq!(routing::read_msr(&mut m.clone(), msr), Err(GpFault));
        }
    }
}

/// Every profile is self-consistent: an allowed load control governs MSRs
/// the profile implements, the PT ranges agree with the RTIT_CTL mask, the
/// power-on VM entry works, and the names select the profiles.
#[test]
fn profiles_are_consistent() {
    for caps in CpuCaps::PROFILES {
        // Real CPUs offer a load control only with its MSR. Bochs 2.7 is the
        // known exception (checked against it by tests/bochs_e2e.rs): it
        // offers "load debug controls" and "load IA32_PERF_GLOBAL_CTRL"
        // without either MSR, and exactly those two.
        let mut controlled_but_absent = Vec::new();
        for route in routing::TABLE {
            if let Some(control) = control_of(route.msr) {
                if caps.entry_allowed(control) && !present(&caps, route.msr) {
                    controlled_but_absent.push(route.msr);
                }
            }
        }
        let expected: &[u32] = if caps.name == "bochs-tigerlake" {
            &[IA32_DEBUGCTL, IA32_PERF_GLOBAL_CTRL]
        } else {
            &[]
        };
        assert_eq!(controlled_but_absent, expected, "{}", caps.name);
        for range in 0..4u32 {
            let in_mask = caps.rtit_ctl_valid & (0xF << (32 + 4 * range)) != 0;
            assert_eq!(
                in_mask,
                range < u32::from(caps.pt_address_ranges),
                "{}",
                caps.name
            );
        }
        assert_eq!(caps.entry_required1 & !caps.entry_allowed1, 0);
        assert_eq!(caps.exit_required1 & !caps.exit_allowed1, 0);
        assert_eq!(CpuCaps::by_name(caps.name), Some(caps));
        let mut m = SoftVmx::new(caps);
        m.vm_entry().expect("power-on state enters");
    }
    let bochs = CpuCaps::BOCHS_TIGERLAKE;
    for control in [
        entry::LOAD_IA32_BNDCFGS,
        entry::LOAD_IA32_RTIT_CTL,
        entry::LOAD_PKRS,
    ] {
        assert!(!bochs.entry_allowed(control));
    }
    assert!(!CpuCaps::LEGACY.entry_may_be_0(entry::LOAD_DEBUG_CONTROLS));
}
