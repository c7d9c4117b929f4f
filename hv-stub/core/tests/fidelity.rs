//! Regression tests for the fidelity audit (issue 8, items 1–7): each one
//! reproduces a case where hv-stub's status or the guest's view differed
//! from what the processor does, and failed before its fix.

mod common;

use common::*;
use hv_stub::caps::DEBUGCTL_ARCH;
use hv_stub::model::{EntryFailure, SoftVmx};
use hv_stub::msr::{entry, index::*};
use hv_stub::routing::{self, Landing};
use hv_stub::simulated::SimTarget;
use hv_stub::{validate, CpuCaps, GpFault, MsrEntry, VmxBackend};

/// The model behind a processor whose WRMSR silently keeps bits 31:0 of
/// IA32_FMASK and IA32_TSC_AUX, as Bochs 2.7 does, instead of faulting.
struct TruncatingCpu(SoftVmx);

impl VmxBackend for TruncatingCpu {
    fn caps(&self) -> &CpuCaps {
        self.0.caps()
    }
    fn vmread(&self, field: u32) -> u64 {
        self.0.vmread(field)
    }
    fn vmwrite(&mut self, field: u32, value: u64) {
        self.0.vmwrite(field, value)
    }
    fn rdmsr(&mut self, msr: u32) -> Result<u64, GpFault> {
        self.0.rdmsr(msr)
    }
    fn wrmsr(&mut self, msr: u32, value: u64) -> Result<(), GpFault> {
        let kept = match msr {
            IA32_FMASK | IA32_TSC_AUX => value & 0xFFFF_FFFF,
            _ => value,
        };
        self.0.wrmsr(msr, kept)
    }
    fn entry_load_area(&mut self) -> &mut [MsrEntry] {
        self.0.entry_load_area()
    }
    fn feature_control_shadow(&mut self) -> &mut u64 {
        self.0.feature_control_shadow()
    }
}

#[test]
fn item1_live_path_validates_before_wrmsr() {
    for msr in [IA32_FMASK, IA32_TSC_AUX] {
        let mut cpu = TruncatingCpu(SoftVmx::new(CpuCaps::BOCHS_TIGERLAKE));
        let before = cpu.0.live_msr(msr);
        assert_eq!(
            routing::write_msr(&mut cpu, msr, 0x1_0004_7700),
            Err(GpFault),
            "{msr:#x}: a reserved bit must be refused even where WRMSR drops it"
        );
        assert_eq!(cpu.0.live_msr(msr), before, "{msr:#x}: nothing written");
        assert_eq!(
            routing::write_msr(&mut cpu, msr, 0x4_7700),
            Ok(Landing::LiveMsr)
        );
    }
}

#[test]
fn item2_feature_control_bits_follow_the_cpu_features() {
    let bochs = CpuCaps::BOCHS_TIGERLAKE;
    assert_eq!(bochs.feature_control_valid(), 0b101);
    let mut m = SoftVmx::new(bochs);
    for refused in [0x6, 0x2, 1 << 8, 1 << 15, 1 << 17, 1 << 18, 1 << 20] {
        assert_eq!(
            routing::write_msr(&mut m, IA32_FEATURE_CONTROL, refused),
            Err(GpFault),
            "{refused:#x} on bochs-tigerlake"
        );
    }
    let mut m = SoftVmx::new(CpuCaps::MODERN);
    assert_eq!(
        routing::write_msr(&mut m, IA32_FEATURE_CONTROL, 0x7 | 1 << 20),
        Ok(Landing::Shadow)
    );
    let no_lmce = CpuCaps {
        lmce: false,
        ..CpuCaps::MODERN
    };
    assert_eq!(
        validate::wrmsr_check(IA32_FEATURE_CONTROL, 0x5 | 1 << 20, &no_lmce),
        Some(Err(validate::Refusal::ReservedBits))
    );
}

#[test]
fn item3_guest_writes_to_area_msrs_survive_vm_exits() {
    for caps in CpuCaps::PROFILES {
        let mut target = SimTarget::new(caps, 1);
        let written = 0xFFFF_8880_1234_5000u64;
        target
            .model_mut()
            .run_guest(|g| g.wrmsr(IA32_KERNEL_GS_BASE, written))
            .unwrap()
            .unwrap();
        target.resume_guest();
        let seen = target.observation().unwrap().get(IA32_KERNEL_GS_BASE);
        assert_eq!(seen, Some(written), "{}: the guest's own value", caps.name);
        assert_eq!(
            routing::read_msr(target.model_mut(), IA32_KERNEL_GS_BASE),
            Ok(written),
            "{}: PsReadMsr returns what the guest reads",
            caps.name
        );
    }
}

fn full_with_rtit_in_shared_area() -> SoftVmx {
    let mut m = SoftVmx::new(CpuCaps::FULL);
    assert!(m.set_load_control(entry::LOAD_IA32_RTIT_CTL, false));
    assert!(m.add_load_area_entry(IA32_RTIT_CTL, 0));
    m
}

#[test]
fn item4_rtit_rule_checked_against_the_value_in_force() {
    // The case: the guest starts tracing, the debugger changes the
    // configuration while TraceEn stays 1: refused, and entry still works.
    let mut m = full_with_rtit_in_shared_area();
    m.run_guest(|g| g.wrmsr(IA32_RTIT_CTL, 0x2001))
        .unwrap()
        .unwrap();
    assert_eq!(
        routing::write_msr(&mut m, IA32_RTIT_CTL, 0x2101),
        Err(GpFault)
    );
    assert_eq!(guest_reads(&mut m, IA32_RTIT_CTL), Ok(0x2001));

    // The area no longer equals the live MSR (the debugger cleared TraceEn
    // in the area only): the rule is judged against the live 0x2001 that
    // VM entry's load will replace, not against the area's 0.
    let mut m = full_with_rtit_in_shared_area();
    m.run_guest(|g| g.wrmsr(IA32_RTIT_CTL, 0x2001))
        .unwrap()
        .unwrap();
    assert_eq!(
        routing::write_msr(&mut m, IA32_RTIT_CTL, 0),
        Ok(Landing::LoadArea)
    );
    assert_eq!(
        routing::write_msr(&mut m, IA32_RTIT_CTL, 0x2101),
        Err(GpFault)
    );
    assert_eq!(m.vm_entry(), Ok(()), "an accepted write never fails entry");
    m.vm_exit();
    assert_eq!(routing::read_msr(&mut m, IA32_RTIT_CTL), Ok(0));
}

#[test]
fn item5_debugctl_bits_follow_the_cpu_features() {
    let bare = CpuCaps {
        rtm: false,
        freeze_while_smm: false,
        bus_lock_detect: false,
        ..CpuCaps::MODERN
    };
    assert_eq!(bare.debugctl_valid(), DEBUGCTL_ARCH);
    for (bit, caps) in [
        (1 << 15, CpuCaps { rtm: true, ..bare }),
        (
            1 << 14,
            CpuCaps {
                freeze_while_smm: true,
                ..bare
            },
        ),
        (
            1 << 2,
            CpuCaps {
                bus_lock_detect: true,
                ..bare
            },
        ),
    ] {
        let with = SoftVmx::new(caps);
        let without = SoftVmx::new(bare);
        for (mut m, accepted) in [(with, true), (without, false)] {
            let result = routing::write_msr(&mut m, IA32_DEBUGCTL, bit);
            assert_eq!(result.is_ok(), accepted, "DEBUGCTL {bit:#x}");
            // With the bit refused the next VM entry still succeeds.
            assert_eq!(m.vm_entry(), Ok(()));
        }
    }
}

#[test]
fn item6_guest_perf_global_ctrl_survives_exits_without_the_save_control() {
    let skylake = CpuCaps::SKYLAKE;
    assert!(skylake.entry_allowed(entry::LOAD_IA32_PERF_GLOBAL_CTRL));
    let mut target = SimTarget::new(skylake, 1);
    target
        .model_mut()
        .run_guest(|g| g.wrmsr(IA32_PERF_GLOBAL_CTRL, 3))
        .unwrap()
        .unwrap();
    target.resume_guest();
    assert_eq!(
        target.observation().unwrap().get(IA32_PERF_GLOBAL_CTRL),
        Some(3)
    );
    assert_eq!(
        routing::read_msr(target.model_mut(), IA32_PERF_GLOBAL_CTRL),
        Ok(3)
    );
    // A debugger write still reaches the guest.
    assert!(routing::write_msr(target.model_mut(), IA32_PERF_GLOBAL_CTRL, 1).is_ok());
    target.resume_guest();
    assert_eq!(
        target.observation().unwrap().get(IA32_PERF_GLOBAL_CTRL),
        Some(1)
    );
    assert_eq!(target.last_entry_failure(), None::<EntryFailure>);
}

#[test]
fn item7_sim_models_the_architectural_msrs_the_cpu_has() {
    let mut m = SoftVmx::new(CpuCaps::BOCHS_TIGERLAKE);
    // Present and writable, as on Bochs's tigerlake (which the audit found
    // faulting only on sim).
    for (msr, value) in [
        (IA32_TIME_STAMP_COUNTER, 0x1234_5678),
        (IA32_TSC_ADJUST, 0x10),
        (IA32_U_CET, 0x4),
        (IA32_PL0_SSP, 0xFFFF_8000_0000_1000),
        (IA32_PL3_SSP, 0x7FFF_0000_0000),
        (IA32_SPEC_CTRL, 0x5),
        (IA32_MTRR_PHYSBASE0, 0xC000_0006),
        (IA32_MTRR_PHYSBASE0 + 1, 0xFF_C000_0800),
        (IA32_MTRR_FIX64K_00000, 0x0606_0606_0606_0606),
        (IA32_MTRR_DEF_TYPE, 0xC06),
        (IA32_TSC_DEADLINE, 0),
        (IA32_XSS, 0x1800),
    ] {
        assert_eq!(
            routing::write_msr(&mut m, msr, value),
            Ok(Landing::LiveMsr),
            "{msr:#x} <- {value:#x}"
        );
        assert_eq!(routing::read_msr(&mut m, msr), Ok(value), "{msr:#x}");
        assert_eq!(guest_reads(&mut m, msr), Ok(value), "{msr:#x} guest");
    }
    // Refused with their reserved bits or rules.
    for (msr, value) in [
        (IA32_PL0_SSP, 0xFFFF_8000_0000_1002),     // not 4-byte aligned
        (IA32_PL0_SSP, 0x0000_8000_0000_0000),     // not canonical
        (IA32_SPEC_CTRL, 0x8),                     // reserved
        (IA32_MTRR_PHYSBASE0, 0xC000_0002),        // memory type 2
        (IA32_MTRR_PHYSBASE0, 0x100_0000_0006),    // above MAXPHYADDR (40)
        (IA32_MTRR_PHYSBASE0 + 1, 0xFF_C000_0400), // reserved bit 10
        (IA32_MTRR_FIX64K_00000, 0x0707_0707_0707_0707), // UC- is PAT only
        (IA32_MTRR_DEF_TYPE, 0x1C06),              // reserved bit 12
        (IA32_XSS, 1 << 8),                        // no PT state on Bochs
        (IA32_MTRRCAP, 0x508),                     // read-only
        (IA32_ARCH_CAPABILITIES, 0x1F),            // read-only
        (IA32_PRED_CMD, 2),                        // reserved
    ] {
        assert_eq!(
            routing::write_msr(&mut m, msr, value),
            Err(GpFault),
            "{msr:#x} <- {value:#x}"
        );
    }
    // Command MSRs are write-only; VMX capability MSRs are hidden.
    assert_eq!(
        routing::write_msr(&mut m, IA32_PRED_CMD, 1),
        Ok(Landing::LiveMsr)
    );
    assert_eq!(routing::read_msr(&mut m, IA32_PRED_CMD), Err(GpFault));
    assert_eq!(routing::read_msr(&mut m, IA32_VMX_BASIC), Err(GpFault));
    assert_eq!(routing::read_msr(&mut m, IA32_MTRRCAP), Ok(0x508));
    // The deadline timer is not armed: the MSR reads 0 and ignores writes
    // (SDM 10.5.4.1), as Bochs showed.
    assert!(routing::write_msr(&mut m, IA32_TSC_DEADLINE, 1).is_ok());
    assert_eq!(routing::read_msr(&mut m, IA32_TSC_DEADLINE), Ok(0));
    // IA32_APIC_BASE: relocation and x2APIC, with the SDM's reserved bits
    // and mode transitions.
    assert_eq!(routing::read_msr(&mut m, IA32_APIC_BASE), Ok(0xFEE0_0900));
    for (value, accepted) in [
        (0xFEE0_0800, true),      // BSP flag cleared
        (0x1_0000_0800, true),    // base above 4 GiB (MAXPHYADDR 40)
        (0x100_0000_0800, false), // base above MAXPHYADDR
        (0xFEE0_0801, false),     // reserved bit 0
        (0xFEE0_0A00, false),     // reserved bit 9
        (0xFEE0_0400, false),     // EXTD without EN
        (0xFEE0_0C00, true),      // xAPIC -> x2APIC
        (0xFEE0_0800, false),     // x2APIC -> xAPIC
        (0xFEE0_0000, true),      // x2APIC -> disabled
        (0xFEE0_0C00, false),     // disabled -> x2APIC
        (0xFEE0_0900, true),      // disabled -> xAPIC
    ] {
        let result = routing::write_msr(&mut m, IA32_APIC_BASE, value);
        assert_eq!(result.is_ok(), accepted, "APIC_BASE <- {value:#x}");
        if accepted {
            assert_eq!(guest_reads(&mut m, IA32_APIC_BASE), Ok(value));
        }
    }
    // And on the first VMX processors, which lack the newer ones.
    let mut legacy = SoftVmx::new(CpuCaps::LEGACY);
    for msr in [
        IA32_TSC_ADJUST,
        IA32_SPEC_CTRL,
        IA32_U_CET,
        IA32_PL0_SSP,
        IA32_XSS,
    ] {
        assert_eq!(
            routing::read_msr(&mut legacy, msr),
            Err(GpFault),
            "{msr:#x}"
        );
    }
}
