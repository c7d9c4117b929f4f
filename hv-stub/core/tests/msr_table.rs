//! The lists derived from the one MSR table are the ones hv-stub has always
//! used: written out here from the SDM and the `PsWriteMsr` reference page,
//! so that an edit to the table that changes one of them is noticed.

use hv_stub::msr::index::*;
use hv_stub::msr::{entry, exit, EntryControls, ExitControls};
use hv_stub::msr_table::{self, Role, GUEST_APPLIED, MODELLED, TABLE, WATCHED};
use hv_stub::{policy, routing};

#[test]
fn the_routing_table_is_the_reference_page_then_fs_gs_base_and_shared_msrs() {
    let page = [
        IA32_SYSENTER_CS,
        IA32_SYSENTER_ESP,
        IA32_SYSENTER_EIP,
        IA32_SMBASE,
        IA32_DEBUGCTL,
        IA32_PAT,
        IA32_EFER,
        IA32_PERF_GLOBAL_CTRL,
        IA32_BNDCFGS,
        IA32_RTIT_CTL,
        IA32_PKRS,
        IA32_S_CET,
        IA32_INTERRUPT_SSP_TABLE_ADDR,
        IA32_FEATURE_CONTROL,
    ];
    assert_eq!(GUEST_APPLIED, page);
    let others = [
        IA32_FS_BASE,
        IA32_GS_BASE,
        IA32_STAR,
        IA32_LSTAR,
        IA32_CSTAR,
        IA32_FMASK,
        IA32_KERNEL_GS_BASE,
        IA32_TSC_AUX,
    ];
    let routed: Vec<u32> = routing::TABLE.iter().map(|r| r.msr).collect();
    assert_eq!(routed, [&page[..], &others[..]].concat());
    let watched: Vec<u32> = routed
        .iter()
        .copied()
        .filter(|&m| m != IA32_SMBASE)
        .collect();
    assert_eq!(WATCHED.to_vec(), watched);
}

#[test]
fn every_msr_has_one_entry_and_its_own_name() {
    for (i, d) in TABLE.iter().enumerate() {
        for other in &TABLE[i + 1..] {
            assert_ne!(d.msr, other.msr, "{}", d.name);
            assert_ne!(d.name, other.name);
        }
        assert_eq!(msr_table::by_name(d.name).map(|e| e.msr), Some(d.msr));
        assert_eq!(msr_table::descriptor(d.msr), Some(d));
    }
    assert_eq!(
        msr_table::by_name("ia32_lstar").map(|d| d.msr),
        Some(IA32_LSTAR)
    );
}

#[test]
fn the_model_holds_the_routed_and_the_validated_architectural_msrs() {
    let mut expected = vec![
        IA32_TIME_STAMP_COUNTER,
        IA32_APIC_BASE,
        IA32_TSC_ADJUST,
        IA32_SPEC_CTRL,
        IA32_PRED_CMD,
        IA32_MTRRCAP,
        IA32_ARCH_CAPABILITIES,
        IA32_FLUSH_CMD,
    ];
    expected.extend(0x200..=0x20F);
    expected.extend([0x250, 0x258, 0x259]);
    expected.extend(0x268..=0x26F);
    expected.extend([IA32_MTRR_DEF_TYPE, IA32_U_CET]);
    expected.extend(0x6A4..=0x6A7);
    expected.extend([IA32_TSC_DEADLINE, IA32_XSS]);
    expected.extend(WATCHED);
    let mut modelled = MODELLED.to_vec();
    modelled.sort_unstable();
    expected.sort_unstable();
    assert_eq!(modelled, expected);
    for d in TABLE.iter().filter(|d| d.role == Role::NameOnly) {
        assert!(!MODELLED.contains(&d.msr), "{}", d.name);
        assert_eq!(routing::place_of(d.msr), routing::Place::Live);
    }
}

#[test]
fn hv_stub_asks_for_every_msr_load_control_and_its_exit_partners() {
    let load = [
        entry::LOAD_DEBUG_CONTROLS,
        entry::LOAD_IA32_PERF_GLOBAL_CTRL,
        entry::LOAD_IA32_PAT,
        entry::LOAD_IA32_EFER,
        entry::LOAD_IA32_BNDCFGS,
        entry::LOAD_IA32_RTIT_CTL,
        entry::LOAD_CET_STATE,
        entry::LOAD_PKRS,
    ];
    assert_eq!(
        policy::MSR_LOAD_CONTROLS.bits(),
        load.iter().fold(0, |a, c| a | c)
    );
    assert_eq!(
        policy::ENTRY_CONTROLS.bits(),
        policy::MSR_LOAD_CONTROLS.bits() | entry::IA32E_MODE_GUEST
    );
    // SDM 24.7.1: the exit controls that save each MSR for the guest and
    // load (or clear) the host's.
    let partners = [
        (entry::LOAD_DEBUG_CONTROLS, exit::SAVE_DEBUG_CONTROLS),
        (
            entry::LOAD_IA32_PERF_GLOBAL_CTRL,
            exit::LOAD_IA32_PERF_GLOBAL_CTRL | exit::SAVE_IA32_PERF_GLOBAL_CTRL,
        ),
        (
            entry::LOAD_IA32_PAT,
            exit::SAVE_IA32_PAT | exit::LOAD_IA32_PAT,
        ),
        (
            entry::LOAD_IA32_EFER,
            exit::SAVE_IA32_EFER | exit::LOAD_IA32_EFER,
        ),
        (entry::LOAD_IA32_BNDCFGS, exit::CLEAR_IA32_BNDCFGS),
        (entry::LOAD_IA32_RTIT_CTL, exit::CLEAR_IA32_RTIT_CTL),
        (entry::LOAD_CET_STATE, exit::LOAD_CET_STATE),
        (entry::LOAD_PKRS, exit::LOAD_PKRS),
        (entry::IA32E_MODE_GUEST, 0),
    ];
    let mut all = exit::HOST_ADDRESS_SPACE_SIZE;
    for (control, partner) in partners {
        let got = policy::exit_partners(EntryControls::from_bits_retain(control));
        assert_eq!(got, ExitControls::from_bits_retain(partner), "{control:#x}");
        all |= partner;
    }
    assert_eq!(policy::EXIT_CONTROLS.bits(), all);
}

#[test]
fn the_guest_sees_a_feature_control_shadow_and_hidden_vmx_msrs() {
    use policy::GuestMsrAccess::*;
    let caps = hv_stub::CpuCaps::MODERN;
    assert_eq!(
        policy::guest_msr_access(IA32_FEATURE_CONTROL, false),
        FeatureControlShadow
    );
    assert_eq!(policy::guest_msr_access(IA32_VMX_BASIC, true), Hidden);
    assert_eq!(policy::guest_msr_access(IA32_VMX_EXIT_CTLS2, true), Hidden);
    assert_eq!(policy::guest_msr_access(IA32_VMX_BASIC, false), Processor);
    assert_eq!(policy::guest_msr_access(IA32_LSTAR, true), Processor);
    assert_eq!(policy::intercepted_msrs(false).collect::<Vec<_>>(), [0x3A]);
    let hidden: Vec<u32> = policy::intercepted_msrs(true).collect();
    assert_eq!(
        hidden,
        [&[0x3A][..], &(0x480..=0x493).collect::<Vec<_>>()].concat()
    );

    assert_eq!(policy::feature_control_to_enable_vmx(0), Some(0b101));
    assert_eq!(policy::feature_control_to_enable_vmx(0b10), Some(0b111));
    assert_eq!(policy::feature_control_to_enable_vmx(0b001), None);
    assert!(policy::vmxon_allowed(0b101));
    assert!(!policy::vmxon_allowed(0b001) && !policy::vmxon_allowed(0b100));
    assert_eq!(policy::guest_feature_control(0b111, true), 0b001);
    assert_eq!(policy::guest_feature_control(0b101, false), 0b101);
    // Locked: refused; unlocked: a valid value is taken, bits the CPU
    // lacks are not.
    assert!(policy::guest_feature_control_write(0b101, 0b101, &caps).is_err());
    assert_eq!(
        policy::guest_feature_control_write(0b100, 0b101, &caps),
        Ok(0b101)
    );
    let bochs = hv_stub::CpuCaps::BOCHS_TIGERLAKE;
    assert!(policy::guest_feature_control_write(0, 1 << 20, &bochs).is_err());
}

#[test]
fn the_msr_fields_are_every_guest_and_host_field_of_a_switched_msr() {
    use hv_stub::msr::field::*;
    let mut expected = vec![
        GUEST_IA32_SYSENTER_CS,
        GUEST_IA32_SYSENTER_ESP,
        GUEST_IA32_SYSENTER_EIP,
        GUEST_SMBASE,
        GUEST_IA32_DEBUGCTL,
        GUEST_IA32_PAT,
        GUEST_IA32_EFER,
        GUEST_IA32_PERF_GLOBAL_CTRL,
        GUEST_IA32_BNDCFGS,
        GUEST_IA32_RTIT_CTL,
        GUEST_IA32_PKRS,
        GUEST_IA32_S_CET,
        GUEST_IA32_INTERRUPT_SSP_TABLE_ADDR,
        GUEST_FS_BASE,
        GUEST_GS_BASE,
        HOST_IA32_SYSENTER_CS,
        HOST_IA32_SYSENTER_ESP,
        HOST_IA32_SYSENTER_EIP,
        HOST_IA32_PAT,
        HOST_IA32_EFER,
        HOST_IA32_PERF_GLOBAL_CTRL,
        HOST_IA32_PKRS,
        HOST_IA32_S_CET,
        HOST_IA32_INTERRUPT_SSP_TABLE_ADDR,
        HOST_FS_BASE,
        HOST_GS_BASE,
    ];
    let mut fields = msr_table::MSR_FIELDS.to_vec();
    fields.sort_unstable();
    expected.sort_unstable();
    assert_eq!(fields, expected);
}
