//! Property: whatever sequence of debugger writes (random MSRs from the
//! table, unknown indices, random and valid-biased values), load-control
//! changes and MSR-load-area additions hits any CPU profile, the next VM
//! entry never fails, and every write either succeeds and is what the guest
//! reads after that entry (and what `read_msr` returns), or returns #GP and
//! changes nothing at all.

mod common;

use common::*;
use hv_stub::model::{SoftVmx, LOAD_AREA_CAPACITY};
use hv_stub::msr::{field, index::*};
use hv_stub::policy::MSR_LOAD_CONTROLS;
use hv_stub::routing::{self, Place, TABLE};
use hv_stub::{CpuCaps, GpFault};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Write(u32, u64),
    Control(u32, bool),
    /// Put the MSR in the VM-entry MSR-load area with the value the guest
    /// sees now, as a hypervisor that switches it through the area would.
    AreaEntry(u32),
}

fn msr_strategy() -> impl Strategy<Value = u32> {
    let table: Vec<u32> = TABLE.iter().map(|r| r.msr).collect();
    prop_oneof![
        8 => proptest::sample::select(table),
        1 => proptest::sample::select(vec![
            0x1234_5678u32,
            0xC000_0104,
            IA32_SMM_MONITOR_CTL,
            0x808,
            0x10,
        ]),
        1 => any::<u32>(),
    ]
}

/// Sign-extends from bit 47 or 56: canonical on 48- or 57-bit parts.
fn canonical() -> impl Strategy<Value = u64> {
    (any::<u64>(), prop_oneof![Just(47u32), Just(56u32)]).prop_map(|(v, top)| {
        let shift = 63 - top;
        (((v << shift) as i64) >> shift) as u64
    })
}

fn pat() -> impl Strategy<Value = u64> {
    proptest::collection::vec(
        prop_oneof![
            10 => proptest::sample::select(vec![0u8, 1, 4, 5, 6, 7]),
            1 => any::<u8>(),
        ],
        8,
    )
    .prop_map(|bytes| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes);
        u64::from_le_bytes(b)
    })
}

/// Masks of the valid bits of the MSRs (from the richest profile), so that
/// random subsets are often accepted.
fn masked() -> impl Strategy<Value = u64> {
    let full = CpuCaps::FULL;
    let masks = vec![
        full.debugctl_valid(),
        full.perf_global_ctrl_valid(),
        // RTIT_CTL with MTCFreq/CycThresh/PSBFreq 0 and ADDRn_CFG <= 1.
        0x3F | (0x7F << 7) | (0x1 << 32) | (0x1 << 36),
        0xFFFF_FFFF,
        0xD01,
        0x901,
        0x3 | 0x3C | (1 << 10),
        0x7FFF_FFFF_F000 | 0x3,
        full.feature_control_valid(),
    ];
    (any::<u64>(), proptest::sample::select(masks)).prop_map(|(v, m)| v & m)
}

fn value_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => any::<u64>(),
        3 => canonical(),
        2 => pat(),
        4 => masked(),
        2 => 0u64..16,
        1 => Just(0xD01u64),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (msr_strategy(), value_strategy()).prop_map(|(m, v)| Op::Write(m, v)),
        3 => (proptest::sample::select(MSR_LOAD_CONTROLS.iter().map(|c| c.bits()).collect::<Vec<_>>()), any::<bool>())
            .prop_map(|(c, on)| Op::Control(c, on)),
        1 => proptest::sample::select(TABLE.iter().map(|r| r.msr).collect::<Vec<_>>())
            .prop_map(Op::AreaEntry),
    ]
}

/// Counts what the run did, to show the generators reach both outcomes.
#[derive(Default, Debug)]
struct Tally {
    accepted: u64,
    refused: u64,
}

fn apply(m: &mut SoftVmx, op: &Op, tally: &mut Tally) -> Result<(), TestCaseError> {
    match *op {
        Op::Write(msr, value) => {
            let before = snapshot(m);
            let previous = routing::read_msr(m, msr).unwrap_or(0);
            match routing::write_msr(m, msr, value) {
                Err(GpFault) => {
                    tally.refused += 1;
                    prop_assert_eq!(snapshot(m), before, "refused write changed state");
                }
                Ok(_) => {
                    tally.accepted += 1;
                    let expected = expected_view(msr, value, previous);
                    if msr == IA32_SMBASE {
                        prop_assert_eq!(vmread(m, field::GUEST_SMBASE), value);
                        prop_assert_eq!(routing::read_msr(m, msr), Ok(value));
                    } else {
                        prop_assert_eq!(routing::read_msr(m, msr), Ok(expected));
                    }
                    let seen = m.run_guest(|g| g.rdmsr(msr));
                    prop_assert!(seen.is_ok(), "VM entry failed after a write: {:?}", seen);
                    if msr != IA32_SMBASE {
                        prop_assert_eq!(seen.unwrap(), Ok(expected));
                    }
                    return Ok(());
                }
            }
        }
        Op::Control(control, on) => {
            let before = snapshot(m).reads;
            if m.set_load_control(control, on) {
                prop_assert_eq!(snapshot(m).reads, before, "a control change moved a value");
            }
        }
        Op::AreaEntry(msr) => {
            let area_ok = !matches!(
                routing::place_of(msr),
                Place::SmbaseField | Place::FeatureControlShadow
            ) && msr != IA32_FS_BASE
                && msr != IA32_GS_BASE;
            let count = m.entry_load_area_len();
            if area_ok && count < LOAD_AREA_CAPACITY && present(m.caps(), msr) {
                if let Ok(value) = routing::read_msr(m, msr) {
                    prop_assert!(m.add_load_area_entry(msr, value));
                }
            }
        }
    }
    // Whatever happened, the next VM entry succeeds.
    let entered = m.run_guest(|_| ());
    prop_assert!(
        entered.is_ok(),
        "VM entry failed after {:?}: {:?}",
        op,
        entered
    );
    Ok(())
}

trait AreaLen {
    fn entry_load_area_len(&mut self) -> usize;
}

impl AreaLen for SoftVmx {
    fn entry_load_area_len(&mut self) -> usize {
        hv_stub::VmxBackend::entry_load_area(self).len()
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1024,
        max_shrink_iters: 4096,
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    #[test]
    fn random_writes_never_break_vm_entry(
        profile in 0..CpuCaps::PROFILES.len(),
        ops in proptest::collection::vec(op_strategy(), 1..64),
    ) {
        let mut m = SoftVmx::new(CpuCaps::PROFILES[profile]);
        let mut tally = Tally::default();
        for op in &ops {
            apply(&mut m, op, &mut tally)?;
        }
        prop_assert_eq!(m.stats().entry_failures, 0);
    }
}

/// The same property, spelled out over every profile with a fixed seed
/// stream, and with the tallies checked: the generators must produce
/// accepted and refused writes in quantity on every profile.
#[test]
fn every_profile_sees_both_outcomes() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRng, TestRunner};
    for caps in CpuCaps::PROFILES {
        let mut runner = TestRunner::new_with_rng(
            Config::default(),
            TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha),
        );
        let mut tally = Tally::default();
        for _ in 0..200 {
            let ops = proptest::collection::vec(op_strategy(), 32)
                .new_tree(&mut runner)
                .unwrap()
                .current();
            let mut m = SoftVmx::new(caps);
            for op in &ops {
                apply(&mut m, op, &mut tally).unwrap();
            }
            assert_eq!(m.stats().entry_failures, 0);
        }
        eprintln!("{}: {:?}", caps.name, tally);
        assert!(
            tally.accepted > 1000 && tally.refused > 1000,
            "{}: {tally:?}",
            caps.name
        );
    }
}
