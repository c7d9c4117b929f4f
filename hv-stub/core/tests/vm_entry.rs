//! The rules that need more than one write to show: SYSENTER_CS truncation,
//! FS/GS base and the MSR-load area, the area overriding the fields, the
//! EFER / IA-32e coupling, IA32_SMBASE, the IA32_FEATURE_CONTROL shadow,
//! what VM exits save and clear, RTIT_CTL while tracing, and load-control
//! changes.

mod common;

use common::*;
use hv_stub::model::{EntryFailure, SoftVmx};
use hv_stub::msr::{bits, entry, field, index::*};
use hv_stub::routing::{self, Landing};
use hv_stub::{CpuCaps, GpFault, MsrEntry, VmxBackend};

fn full() -> SoftVmx {
    SoftVmx::new(CpuCaps::FULL)
}

// ---------------------------------------------------------------- SYSENTER_CS

#[test]
fn sysenter_cs_is_truncated_to_32_bits_on_every_path() {
    for caps in CpuCaps::PROFILES {
        let mut m = SoftVmx::new(caps);
        let landing = routing::write_msr(&mut m, IA32_SYSENTER_CS, 0xDEAD_BEEF_0000_0010);
        assert_eq!(
            landing,
            Ok(Landing::VmcsField(field::GUEST_IA32_SYSENTER_CS))
        );
        assert_eq!(vmread(&m, field::GUEST_IA32_SYSENTER_CS), 0x10);
        assert_eq!(routing::read_msr(&mut m, IA32_SYSENTER_CS), Ok(0x10));
        assert_eq!(guest_reads(&mut m, IA32_SYSENTER_CS), Ok(0x10));
        assert_eq!(routing::read_msr(&mut m, IA32_SYSENTER_CS), Ok(0x10));

        // Through the MSR-load area too: the entry gets the truncated value.
        assert!(m.add_load_area_entry(IA32_SYSENTER_CS, 0x18));
        assert_eq!(guest_reads(&mut m, IA32_SYSENTER_CS), Ok(0x18));
        let landing = routing::write_msr(&mut m, IA32_SYSENTER_CS, 0xFFFF_FFFF_0000_0023);
        assert_eq!(
            landing,
            Ok(Landing::VmcsFieldAndLoadArea(field::GUEST_IA32_SYSENTER_CS))
        );
        assert_eq!(m.entry_load_area()[0].value, 0x23);
        assert_eq!(routing::read_msr(&mut m, IA32_SYSENTER_CS), Ok(0x23));
        assert_eq!(guest_reads(&mut m, IA32_SYSENTER_CS), Ok(0x23));
    }
}

#[test]
fn guest_sysenter_cs_is_saved_as_32_bits() {
    let mut m = full();
    m.run_guest(|g| g.wrmsr(IA32_SYSENTER_CS, 0x1234_5678_0000_0033))
        .unwrap()
        .unwrap();
    assert_eq!(vmread(&m, field::GUEST_IA32_SYSENTER_CS), 0x33);
    assert_eq!(routing::read_msr(&mut m, IA32_SYSENTER_CS), Ok(0x33));
}

// ------------------------------------------------------ FS/GS base and the area

#[test]
fn fs_gs_base_are_never_taken_from_the_load_area() {
    for msr in [IA32_FS_BASE, IA32_GS_BASE] {
        let mut m = full();
        assert!(m.add_load_area_entry(msr, 0xFFFF_8000_0000_1000));
        let before = m.state();
        // SDM 26.4: an entry for FS/GS base fails VM entry (exit reason 34),
        // and nothing is loaded.
        assert_eq!(m.vm_entry(), Err(EntryFailure::MsrLoading(0)));
        assert_eq!(m.state(), before);
        assert_eq!(m.stats().entry_failures, 1);
        // A write goes to the guest-state field only; the area is not touched.
        let landing = routing::write_msr(&mut m, msr, 0xFFFF_8000_0000_2000);
        let f = field_of(msr).unwrap();
        assert_eq!(landing, Ok(Landing::VmcsField(f)));
        assert_eq!(vmread(&m, f), 0xFFFF_8000_0000_2000);
        assert_eq!(m.entry_load_area()[0].value, 0xFFFF_8000_0000_1000);
        assert_eq!(routing::read_msr(&mut m, msr), Ok(0xFFFF_8000_0000_2000));
    }
}

#[test]
fn forbidden_and_faulting_load_area_entries_fail_vm_entry() {
    let cases: [(u32, u64, u32); 7] = [
        (IA32_SMM_MONITOR_CTL, 0, 0),
        (0x808, 0, 0),                          // x2APIC TPR
        (IA32_SMBASE, 0x3_0000, 0),             // RDMSR/WRMSR only in SMM
        (IA32_LSTAR, 0xFFFF_F800_0000_0000, 1), // reserved half not 0
        (IA32_LSTAR, 0x8000_0000_0000_0000, 0), // WRMSR would #GP
        (IA32_FEATURE_CONTROL, 0x5, 0),         // locked: WRMSR #GP
        (0x1234_5678, 0, 0),                    // no such MSR
    ];
    for (msr, value, reserved) in cases {
        let mut m = full();
        assert!(m.add_load_area_entry(IA32_STAR, 0x0023_0010_0000_0000));
        assert!(m.add_load_area_entry(msr, value));
        m.entry_load_area()[1].reserved = reserved;
        let before = m.state();
        assert_eq!(m.vm_entry(), Err(EntryFailure::MsrLoading(1)), "{msr:#x}");
        assert_eq!(m.state(), before, "{msr:#x}: nothing loaded");
    }
}

// ------------------------------------------------------- load-area override

#[test]
fn load_area_entry_overrides_the_field_and_a_write_updates_both() {
    // FULL, every load control 1: each field-loaded MSR with an area entry.
    let cases: [(u32, u64, u64); 12] = [
        (
            IA32_SYSENTER_ESP,
            0xFFFF_F800_0000_1000,
            0xFFFF_F800_0000_2000,
        ),
        (
            IA32_SYSENTER_EIP,
            0xFFFF_F800_0000_3000,
            0xFFFF_F800_0000_4000,
        ),
        (IA32_DEBUGCTL, 0x1, 0x2),
        (IA32_PAT, 0x0606_0606_0606_0606, 0x0001_0405_0607_0001),
        (IA32_EFER, 0x901, 0x500),
        (IA32_PERF_GLOBAL_CTRL, 0x3, 0x1_0000_0001),
        (IA32_BNDCFGS, 0x1, 0x7FFF_0000_1001),
        (IA32_RTIT_CTL, 0x2100, 0x2500),
        (IA32_PKRS, 0x4, 0x8),
        (IA32_S_CET, 0x1, 0x4),
        (IA32_INTERRUPT_SSP_TABLE_ADDR, 0xFFFF_F800_0000_5000, 0x1000),
        (IA32_SYSENTER_CS, 0x8, 0x1_0000_0018),
    ];
    for (msr, area_value, new_value) in cases {
        let mut m = full();
        let f = field_of(msr).unwrap();
        let field_before = vmread(&m, f);
        assert!(m.add_load_area_entry(msr, area_value));
        let area_view = expected_view(msr, area_value, bits::EFER_LMA);
        assert_eq!(routing::read_msr(&mut m, msr), Ok(area_view), "{msr:#x}");
        assert_eq!(guest_reads(&mut m, msr), Ok(area_view), "{msr:#x}");

        let landing = routing::write_msr(&mut m, msr, new_value).unwrap();
        assert_eq!(landing, Landing::VmcsFieldAndLoadArea(f), "{msr:#x}");
        let want = expected_view(msr, new_value, bits::EFER_LMA);
        assert_eq!(vmread(&m, f), want, "{msr:#x} field");
        assert_eq!(m.entry_load_area()[0].value, want, "{msr:#x} area");
        assert_eq!(routing::read_msr(&mut m, msr), Ok(want), "{msr:#x}");
        assert_eq!(guest_reads(&mut m, msr), Ok(want), "{msr:#x}");
        assert_ne!(field_before, want);

        // A refused value changes neither.
        if let Some(&bad) = invalid_values(msr, m.caps()).first() {
            let before = snapshot(&mut m);
            assert_eq!(routing::write_msr(&mut m, msr, bad), Err(GpFault));
            assert_eq!(snapshot(&mut m), before);
        }
    }
}

#[test]
fn load_area_entry_with_the_load_control_0_or_for_a_shared_msr() {
    let mut m = full();
    assert!(m.set_load_control(entry::LOAD_IA32_PAT, false));
    assert!(m.add_load_area_entry(IA32_PAT, 0x0606_0606_0606_0606));
    assert!(m.add_load_area_entry(IA32_LSTAR, 0xFFFF_F800_0000_7000));
    let host_pat = m.live_msr(IA32_PAT);
    for (msr, value) in [
        (IA32_PAT, 0x0404_0404_0404_0404u64),
        (IA32_LSTAR, 0xFFFF_F800_0000_8000),
    ] {
        assert_eq!(
            routing::write_msr(&mut m, msr, value),
            Ok(Landing::LoadArea)
        );
        assert_eq!(routing::read_msr(&mut m, msr), Ok(value));
        assert_eq!(guest_reads(&mut m, msr), Ok(value));
    }
    // The area, not a WRMSR in root mode, carried the PAT write.
    assert_eq!(m.stats().wrmsrs, 0);
    assert_ne!(host_pat, Some(0x0404_0404_0404_0404));
}

#[test]
fn the_last_area_entry_for_an_msr_wins_and_is_the_one_written() {
    let mut m = full();
    assert!(m.add_load_area_entry(IA32_LSTAR, 0xFFFF_F800_0000_1000));
    assert!(m.add_load_area_entry(IA32_LSTAR, 0xFFFF_F800_0000_2000));
    assert_eq!(guest_reads(&mut m, IA32_LSTAR), Ok(0xFFFF_F800_0000_2000));
    routing::write_msr(&mut m, IA32_LSTAR, 0xFFFF_F800_0000_3000).unwrap();
    assert_eq!(m.entry_load_area()[1].value, 0xFFFF_F800_0000_3000);
    assert_eq!(guest_reads(&mut m, IA32_LSTAR), Ok(0xFFFF_F800_0000_3000));
}

// ------------------------------------------------------------ EFER / IA-32e

const LME: u64 = bits::EFER_LME;
const LMA: u64 = bits::EFER_LMA;
const SCE: u64 = bits::EFER_SCE;
const NXE: u64 = bits::EFER_NXE;

fn efer_model(load_efer: bool) -> SoftVmx {
    let mut m = full();
    assert!(m.set_load_control(entry::LOAD_IA32_EFER, load_efer));
    m
}

#[test]
fn efer_with_paging_on_and_load_efer_0_or_1() {
    for load_efer in [false, true] {
        let mut m = efer_model(load_efer);
        assert_eq!(
            routing::read_msr(&mut m, IA32_EFER),
            Ok(LME | LMA | SCE | NXE)
        );

        // Clearing LME while paging is on: #GP, nothing changes.
        for bad in [SCE | NXE, LMA | SCE, 0] {
            let before = snapshot(&mut m);
            assert_eq!(routing::write_msr(&mut m, IA32_EFER, bad), Err(GpFault));
            assert_eq!(snapshot(&mut m), before);
        }
        // The written LMA bit is ignored: LMA stays 1.
        routing::write_msr(&mut m, IA32_EFER, LME | SCE | NXE).unwrap();
        assert_eq!(
            routing::read_msr(&mut m, IA32_EFER),
            Ok(LME | LMA | SCE | NXE)
        );
        // SCE and NXE are the guest's to change.
        for value in [LME | LMA, LME | LMA | NXE, LME | LMA | SCE] {
            routing::write_msr(&mut m, IA32_EFER, value).unwrap();
            assert_eq!(routing::read_msr(&mut m, IA32_EFER), Ok(value));
            assert_eq!(guest_reads(&mut m, IA32_EFER), Ok(value));
            assert!(
                m.load_control(entry::IA32E_MODE_GUEST),
                "IA-32e mode guest = LMA"
            );
        }
        let live = m.live_msr(IA32_EFER).unwrap();
        if load_efer {
            assert_eq!(vmread(&m, field::GUEST_IA32_EFER), LME | LMA | SCE);
        } else {
            // The live EFER is shared: its SCE/NXE are the guest's, its
            // long-mode bits the host's.
            assert_eq!(live, LME | LMA | SCE);
        }
    }
}

/// A 32-bit guest without paging ("IA-32e mode guest" = 0, CR0.PG = 0).
fn unpaged_guest(load_efer: bool) -> SoftVmx {
    let mut m = efer_model(load_efer);
    let controls = vmread(&m, field::VM_ENTRY_CONTROLS) & !u64::from(entry::IA32E_MODE_GUEST);
    m.vmwrite(field::VM_ENTRY_CONTROLS, controls);
    m.vmwrite(field::GUEST_CR0, 0x11); // PE, ET
    m.vmwrite(field::GUEST_IA32_EFER, 0);
    m.vm_entry().unwrap();
    m.vm_exit();
    m
}

#[test]
fn efer_without_paging() {
    // load EFER = 1: LME may change, LMA stays 0 and so does IA-32e mode guest.
    let mut m = unpaged_guest(true);
    assert_eq!(routing::read_msr(&mut m, IA32_EFER), Ok(0));
    assert_eq!(
        routing::write_msr(&mut m, IA32_EFER, LME | LMA | NXE),
        Ok(Landing::VmcsField(field::GUEST_IA32_EFER))
    );
    assert_eq!(routing::read_msr(&mut m, IA32_EFER), Ok(LME | NXE));
    assert_eq!(guest_reads(&mut m, IA32_EFER), Ok(LME | NXE));
    assert!(!m.load_control(entry::IA32E_MODE_GUEST));
    routing::write_msr(&mut m, IA32_EFER, SCE).unwrap();
    assert_eq!(guest_reads(&mut m, IA32_EFER), Ok(SCE));

    // load EFER = 0: LME is the host's (long mode), never the guest's to change.
    let mut m = unpaged_guest(false);
    let efer = routing::read_msr(&mut m, IA32_EFER).unwrap();
    assert_eq!(
        efer & (LME | LMA),
        LME,
        "LMA = IA-32e mode guest = 0; LME unmodified"
    );
    let before = snapshot(&mut m);
    assert_eq!(
        routing::write_msr(&mut m, IA32_EFER, efer & !LME),
        Err(GpFault)
    );
    assert_eq!(snapshot(&mut m), before);
    routing::write_msr(&mut m, IA32_EFER, LME | SCE).unwrap();
    assert_eq!(guest_reads(&mut m, IA32_EFER), Ok(LME | SCE));
}

#[test]
fn efer_in_the_load_area_keeps_lma() {
    let mut m = full();
    // An entry written without LMA: loading it as by WRMSR keeps LMA.
    assert!(m.add_load_area_entry(IA32_EFER, LME | SCE));
    assert_eq!(routing::read_msr(&mut m, IA32_EFER), Ok(LME | LMA | SCE));
    assert_eq!(guest_reads(&mut m, IA32_EFER), Ok(LME | LMA | SCE));
    // One that clears LME under paging would fault: VM entry fails.
    let mut m = full();
    assert!(m.add_load_area_entry(IA32_EFER, SCE));
    assert_eq!(m.vm_entry(), Err(EntryFailure::MsrLoading(0)));
}

#[test]
fn the_guests_own_efer_writes_follow_wrmsr_rules() {
    let mut m = full();
    let r = m
        .run_guest(|g| (g.wrmsr(IA32_EFER, SCE), g.wrmsr(IA32_EFER, LME)))
        .unwrap();
    assert_eq!(r, (Err(GpFault), Ok(())));
    // Saved on exit ("save IA32_EFER"): LMA kept, NXE/SCE cleared by the guest.
    assert_eq!(routing::read_msr(&mut m, IA32_EFER), Ok(LME | LMA));
}

// ---------------------------------------------------------------- SMBASE

#[test]
fn smbase_lands_in_the_guest_smbase_field() {
    for caps in CpuCaps::PROFILES {
        let mut m = SoftVmx::new(caps);
        assert_eq!(
            routing::write_msr(&mut m, IA32_SMBASE, 0xA_0000),
            Ok(Landing::VmcsField(0x4828))
        );
        assert_eq!(vmread(&m, 0x4828), 0xA_0000);
        assert_eq!(routing::read_msr(&mut m, IA32_SMBASE), Ok(0xA_0000));
        for bad in [0x1_0000_0000, 0xFFFF_FFFF_0000_0000, u64::MAX] {
            let before = snapshot(&mut m);
            assert_eq!(routing::write_msr(&mut m, IA32_SMBASE, bad), Err(GpFault));
            assert_eq!(snapshot(&mut m), before);
        }
        // Outside SMM the guest cannot read it; entries and exits leave it.
        assert_eq!(guest_reads(&mut m, IA32_SMBASE), Err(GpFault));
        assert_eq!(vmread(&m, 0x4828), 0xA_0000);
        assert_eq!(m.live_msr(IA32_SMBASE), None);
    }
}

// ------------------------------------------------------ FEATURE_CONTROL shadow

#[test]
fn feature_control_shadow() {
    for caps in CpuCaps::PROFILES {
        let mut m = SoftVmx::new(caps);
        let live = m.live_msr(IA32_FEATURE_CONTROL);
        assert_eq!(routing::read_msr(&mut m, IA32_FEATURE_CONTROL), Ok(0x5));
        // The debugger (host-initiated) changes even a locked shadow.
        assert_eq!(
            routing::write_msr(&mut m, IA32_FEATURE_CONTROL, 0x1),
            Ok(Landing::Shadow)
        );
        assert_eq!(routing::read_msr(&mut m, IA32_FEATURE_CONTROL), Ok(0x1));
        // The guest's RDMSR returns the shadow; its own WRMSR to a locked
        // shadow faults and changes nothing.
        let (read, write) = m
            .run_guest(|g| {
                (
                    g.rdmsr(IA32_FEATURE_CONTROL),
                    g.wrmsr(IA32_FEATURE_CONTROL, 0x5),
                )
            })
            .unwrap();
        assert_eq!((read, write), (Ok(0x1), Err(GpFault)));
        assert_eq!(routing::read_msr(&mut m, IA32_FEATURE_CONTROL), Ok(0x1));
        // Unlocked by the debugger, the guest may write (valid bits only)...
        routing::write_msr(&mut m, IA32_FEATURE_CONTROL, 0x4).unwrap();
        let r = m
            .run_guest(|g| {
                (
                    g.wrmsr(IA32_FEATURE_CONTROL, 1 << 3),
                    g.wrmsr(IA32_FEATURE_CONTROL, 0x5),
                    g.wrmsr(IA32_FEATURE_CONTROL, 0x4),
                    g.rdmsr(IA32_FEATURE_CONTROL),
                )
            })
            .unwrap();
        // ... and locks it with its first valid write.
        assert_eq!(r, (Err(GpFault), Ok(()), Err(GpFault), Ok(0x5)));
        // Reserved bits are refused for the debugger too.
        let before = snapshot(&mut m);
        assert_eq!(
            routing::write_msr(&mut m, IA32_FEATURE_CONTROL, 1 << 63),
            Err(GpFault)
        );
        assert_eq!(snapshot(&mut m), before);
        // The processor's own IA32_FEATURE_CONTROL was never touched.
        assert_eq!(m.live_msr(IA32_FEATURE_CONTROL), live);
    }
}

// ------------------------------------------------------ what VM exits do

#[test]
fn debugctl_with_load_debug_controls_0_lasts_one_guest_run() {
    let mut m = full();
    assert!(m.set_load_control(entry::LOAD_DEBUG_CONTROLS, false));
    assert_eq!(
        routing::write_msr(&mut m, IA32_DEBUGCTL, 0x1),
        Ok(Landing::LiveMsr)
    );
    assert_eq!(routing::read_msr(&mut m, IA32_DEBUGCTL), Ok(0x1));
    assert_eq!(guest_reads(&mut m, IA32_DEBUGCTL), Ok(0x1));
    // SDM 27.5.1: every VM exit clears IA32_DEBUGCTL.
    assert_eq!(routing::read_msr(&mut m, IA32_DEBUGCTL), Ok(0));
    assert_eq!(guest_reads(&mut m, IA32_DEBUGCTL), Ok(0));

    // With the control 1 the value lives in the field and survives exits.
    let mut m = full();
    routing::write_msr(&mut m, IA32_DEBUGCTL, 0x1).unwrap();
    for _ in 0..3 {
        assert_eq!(guest_reads(&mut m, IA32_DEBUGCTL), Ok(0x1));
    }
    assert_eq!(m.live_msr(IA32_DEBUGCTL), Some(0));
}

#[test]
fn legacy_cpus_always_load_and_save_debug_controls() {
    let mut m = SoftVmx::new(CpuCaps::LEGACY);
    assert!(m.load_control(entry::LOAD_DEBUG_CONTROLS));
    assert!(!m.set_load_control(entry::LOAD_DEBUG_CONTROLS, false));
    assert!(m.load_control(entry::LOAD_DEBUG_CONTROLS));
    // Clearing the required control by hand makes VM entry fail.
    let c = vmread(&m, field::VM_ENTRY_CONTROLS) & !u64::from(entry::LOAD_DEBUG_CONTROLS);
    m.vmwrite(field::VM_ENTRY_CONTROLS, c);
    assert_eq!(m.vm_entry(), Err(EntryFailure::ControlNotAllowed));
}

#[test]
fn vm_exit_saves_what_the_guest_changed() {
    // FULL, every control 1: the guest's own writes reach the fields.
    let mut m = full();
    let writes: [(u32, u64); 8] = [
        (IA32_DEBUGCTL, 0x2),
        (IA32_PAT, 0x0606_0606_0606_0606),
        (IA32_PERF_GLOBAL_CTRL, 0xF),
        (IA32_BNDCFGS, 0x1),
        (IA32_RTIT_CTL, 0x2101),
        (IA32_PKRS, 0xC),
        (IA32_S_CET, 0x4),
        (IA32_INTERRUPT_SSP_TABLE_ADDR, 0xFFFF_F800_0000_9000),
    ];
    m.run_guest(|g| {
        for (msr, value) in writes {
            g.wrmsr(msr, value).unwrap();
        }
    })
    .unwrap();
    for (msr, value) in writes {
        assert_eq!(vmread(&m, field_of(msr).unwrap()), value, "{msr:#x}");
        assert_eq!(routing::read_msr(&mut m, msr), Ok(value), "{msr:#x}");
    }
    // VM exit loaded the host's or cleared: BNDCFGS, RTIT_CTL, DEBUGCTL.
    assert_eq!(m.live_msr(IA32_BNDCFGS), Some(0));
    assert_eq!(m.live_msr(IA32_RTIT_CTL), Some(0));
    assert_eq!(m.live_msr(IA32_DEBUGCTL), Some(0));

    // Skylake has no "save IA32_PERF_GLOBAL_CTRL": a guest's own change is
    // lost at the next VM entry unless the hypervisor intercepts it.
    let mut m = SoftVmx::new(CpuCaps::SKYLAKE);
    m.run_guest(|g| g.wrmsr(IA32_PERF_GLOBAL_CTRL, 0x3).unwrap())
        .unwrap();
    assert_eq!(routing::read_msr(&mut m, IA32_PERF_GLOBAL_CTRL), Ok(0));
}

// ------------------------------------------------------ RTIT_CTL while tracing

#[test]
fn rtit_ctl_cannot_be_reconfigured_while_tracing() {
    for on in [false, true] {
        let mut m = full();
        assert!(m.set_load_control(entry::LOAD_IA32_RTIT_CTL, on));
        routing::write_msr(&mut m, IA32_RTIT_CTL, 0x2101).unwrap();
        let before = snapshot(&mut m);
        assert_eq!(
            routing::write_msr(&mut m, IA32_RTIT_CTL, 0x2105),
            Err(GpFault)
        );
        assert_eq!(snapshot(&mut m), before);
        // Rewriting the same value, or clearing TraceEn (with any other
        // change), is allowed; then the new configuration.
        routing::write_msr(&mut m, IA32_RTIT_CTL, 0x2101).unwrap();
        routing::write_msr(&mut m, IA32_RTIT_CTL, 0x0104).unwrap();
        routing::write_msr(&mut m, IA32_RTIT_CTL, 0x2105).unwrap();
        assert_eq!(guest_reads(&mut m, IA32_RTIT_CTL), Ok(0x2105));
    }
}

// ------------------------------------------------------ load-control changes

#[test]
fn changing_a_load_control_keeps_the_guests_values() {
    for caps in CpuCaps::PROFILES {
        let mut m = SoftVmx::new(caps);
        for msr in seed_msrs() {
            if let Some(&v) = valid_values(msr, &caps).get(1) {
                if present(&caps, msr) {
                    routing::write_msr(&mut m, msr, v).unwrap();
                }
            }
        }
        let controls = [
            entry::LOAD_IA32_PERF_GLOBAL_CTRL,
            entry::LOAD_IA32_PAT,
            entry::LOAD_IA32_EFER,
            entry::LOAD_IA32_BNDCFGS,
            entry::LOAD_IA32_RTIT_CTL,
            entry::LOAD_CET_STATE,
            entry::LOAD_PKRS,
            entry::LOAD_DEBUG_CONTROLS,
        ];
        for on in [false, true, false, true] {
            for control in controls {
                let before = snapshot(&mut m).reads;
                m.set_load_control(control, on);
                assert_eq!(snapshot(&mut m).reads, before, "{} {control:#x}", caps.name);
                m.run_guest(|_| ())
                    .expect("VM entry after a control change");
                // DEBUGCTL with its control 0 is cleared by the exit; rewrite it.
                let _ = routing::write_msr(&mut m, IA32_DEBUGCTL, 0x1);
            }
        }
    }
}

#[test]
fn a_failed_vm_entry_loads_nothing() {
    let mut m = full();
    routing::write_msr(&mut m, IA32_PAT, 0x0606_0606_0606_0606).unwrap();
    m.vmwrite(field::GUEST_IA32_PKRS, 1 << 40); // invalid, written behind routing's back
    let before = m.state();
    assert_eq!(
        m.vm_entry(),
        Err(EntryFailure::InvalidGuestState(field::GUEST_IA32_PKRS))
    );
    assert_eq!(m.state(), before);
    // The SSP field must be canonical and 4-byte aligned.
    m.vmwrite(field::GUEST_IA32_PKRS, 0);
    m.vmwrite(field::GUEST_SSP, 0x1002);
    assert_eq!(
        m.vm_entry(),
        Err(EntryFailure::InvalidGuestState(field::GUEST_SSP))
    );
    let _ = MsrEntry::default();
}
