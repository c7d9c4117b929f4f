//! Tier 4, differential: a seeded random campaign of MSR writes and reads
//! sent to hv-stub under Bochs (tigerlake, observer guest) and to
//! `sim?cpu=bochs-tigerlake` side by side. Every request must get the same
//! status from both, every value read back must be the same once both
//! debuggees hold a value the campaign wrote, and what each observer guest
//! read with its own RDMSR must be what `read_msr` returned. Any difference,
//! and any FATAL from hv-stub, fails the test.
//!
//!     cargo test --test bochs_differential                 # CI: 10 000 writes
//!     PULSE_DIFF_OPS=140000 PULSE_DIFF_SEED=7 cargo test --test bochs_differential
//!
//! `PULSE_DIFF_OPS` is the number of writes (each followed by a read of the
//! same MSR, plus a read of a random MSR every fourth write); a campaign
//! runs in boots of at most `OPS_PER_BOOT` (5 000) writes each, with a fresh
//! sim per boot. `PULSE_DIFF_REPORT=FILE` also writes every difference to FILE,
//! `PULSE_DIFF_TRACE=FILE` every request with both answers.
//! Values are edge-biased per MSR: reserved bits, non-canonical and
//! 57-bit-only addresses, PAT and MTRR memory types 2/3/7/8, EFER
//! combinations, SYSENTER_CS and SMBASE high bits, FEATURE_CONTROL's SMX,
//! SGX and LMCE bits, DEBUGCTL bits, APIC base modes and relocation.
//!
//! What is compared, and why not more:
//! * statuses of every write and read, always;
//! * a value read back: for read-only MSRs (MTRRCAP, ARCH_CAPABILITIES, the
//!   VMX capability MSRs) always; for writable ones once a write succeeded
//!   on both sides since their last disagreement (before that each debuggee
//!   holds its own boot value: the two machines start differently);
//! * IA32_TSC (0x10) never value against value: it counts instructions on
//!   Bochs and something else on sim. What is deterministic is checked: a
//!   read right after a write both sides accepted returns the written value
//!   plus what the counter ran meanwhile (less than 2^32) on each side. A TSC
//!   write also moves IA32_TSC_ADJUST by an amount that depends on when it
//!   ran, so TSC_ADJUST's value is compared again only after its own next
//!   write;
//! * the Bochs observer guest's `OBS` lines: per MSR, the values it printed
//!   must appear, in order, among the values hv-stub's `read_msr` returned
//!   (the guest may miss a value that lasted less than one of its sweeps),
//!   and after a two-write sentinel its last value must be the last read;
//! * sim's observer guest: after every request, its RDMSR of each MSR it
//!   watches gives what sim's `read_msr` gives (status and value);
//! * IA32_APIC_BASE is never written with its global enable (bit 11)
//!   clear: Bochs cannot enable a disabled APIC again (it ignores every
//!   later WRMSR and returns success), where the SDM says a write enables it.

mod bochs;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use bochs::{free_port, open_engine, parse_obs, Bochs, Com1};
use hv_stub::msr::index::*;
use hv_stub::routing::TABLE;
use pulse::{Engine, EngineConfig, Status};

const REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);
const SENTINEL_TIMEOUT: Duration = Duration::from_secs(30);
/// Writes in the CI campaign (the floor: at least 10 000).
const CI_OPS: u64 = 10_000;
const CI_SEED: u64 = 0x5EED_0008;
/// Writes per Bochs boot: about 11 500 round trips, inside
/// `bochs::RUN_DEADLINE` even on a machine so busy that Bochs manages only
/// ~200 round trips/s (an idle one does ~7 000).
const OPS_PER_BOOT: u64 = 5_000;
/// Observer checks (two sentinel writes each) this often.
const CHECKPOINT_EVERY: u64 = 2_000;
const NON_CANONICAL: u64 = 0x8000_0000_0000_0000;
const APIC_GLOBAL_ENABLE: u64 = 1 << 11;
/// How far a counter may run between a write and the read that follows
/// (Bochs's TSC counts instructions: about 10^5 in that time).
const COUNTER_SLACK: u64 = 1 << 32;

/// How a value read back may be compared.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Compare {
    /// Writable: compared once both sides accepted the same write.
    AfterWrite,
    /// Read-only, fixed by the CPU model: always compared.
    Always,
    /// Counts with time: statuses only, and right after a write both
    /// sides must have counted on from the written value.
    Counter,
}

/// The shape of the values worth trying on an MSR.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Shape {
    Address,
    SysenterCs,
    Smbase,
    Pat,
    Efer,
    FeatureControl,
    Debugctl,
    Low32,
    Any,
    MtrrPhysBase,
    MtrrPhysMask,
    MtrrFixed,
    MtrrDefType,
    ApicBase,
    Ssp,
    Cet,
    Bndcfgs,
    RtitCtl,
    Bits(u64),
    Command,
}

#[derive(Clone, Copy, Debug)]
struct Msr {
    index: u32,
    name: &'static str,
    shape: Shape,
    compare: Compare,
}

const fn msr(index: u32, name: &'static str, shape: Shape, compare: Compare) -> Msr {
    Msr {
        index,
        name,
        shape,
        compare,
    }
}

/// The shape of a routed MSR's values.
fn routed_shape(index: u32) -> Shape {
    match index {
        IA32_SYSENTER_CS => Shape::SysenterCs,
        IA32_SMBASE => Shape::Smbase,
        IA32_PAT => Shape::Pat,
        IA32_EFER => Shape::Efer,
        IA32_FEATURE_CONTROL => Shape::FeatureControl,
        IA32_DEBUGCTL => Shape::Debugctl,
        IA32_FMASK | IA32_TSC_AUX | IA32_PKRS => Shape::Low32,
        IA32_PERF_GLOBAL_CTRL => Shape::Bits(0x7_0000_00FF),
        IA32_BNDCFGS => Shape::Bndcfgs,
        IA32_RTIT_CTL => Shape::RtitCtl,
        IA32_S_CET => Shape::Cet,
        IA32_STAR => Shape::Any,
        _ => Shape::Address,
    }
}

/// A writable MSR.
const fn rw(index: u32, name: &'static str, shape: Shape) -> Msr {
    msr(index, name, shape, Compare::AfterWrite)
}

/// A read-only MSR whose value the CPU model fixes.
const fn ro(index: u32, name: &'static str) -> Msr {
    msr(index, name, Shape::Any, Compare::Always)
}

/// An MSR that counts with time.
const fn timed(index: u32, name: &'static str) -> Msr {
    msr(index, name, Shape::Any, Compare::Counter)
}

/// Architectural MSRs (IA32_ left out of the names) beyond the routing
/// table: those Bochs's tigerlake implements (a probe of 0..0x1000 and
/// 0xC0000000..0xC0000200 through hv-stub found them), write-only
/// commands, and a sample it lacks.
const OTHERS: &[Msr] = &[
    timed(0x10, "TSC"),
    rw(0x1B, "APIC_BASE", Shape::ApicBase),
    rw(0x3B, "TSC_ADJUST", Shape::Any),
    rw(0x48, "SPEC_CTRL", Shape::Bits(0x7F)),
    rw(0x49, "PRED_CMD", Shape::Command),
    rw(0x10B, "FLUSH_CMD", Shape::Command),
    ro(0xFE, "MTRRCAP"),
    ro(0x10A, "ARCH_CAPABILITIES"),
    rw(0x2FF, "MTRR_DEF_TYPE", Shape::MtrrDefType),
    ro(0x480, "VMX_BASIC"),
    ro(0x481, "VMX_PINBASED_CTLS"),
    ro(0x482, "VMX_PROCBASED_CTLS"),
    ro(0x483, "VMX_EXIT_CTLS"),
    ro(0x484, "VMX_ENTRY_CTLS"),
    ro(0x485, "VMX_MISC"),
    ro(0x486, "VMX_CR0_FIXED0"),
    ro(0x487, "VMX_CR0_FIXED1"),
    ro(0x488, "VMX_CR4_FIXED0"),
    ro(0x489, "VMX_CR4_FIXED1"),
    ro(0x48A, "VMX_VMCS_ENUM"),
    ro(0x48B, "VMX_PROCBASED_CTLS2"),
    ro(0x48C, "VMX_EPT_VPID_CAP"),
    ro(0x48D, "VMX_TRUE_PINBASED_CTLS"),
    ro(0x48E, "VMX_TRUE_PROCBASED_CTLS"),
    ro(0x48F, "VMX_TRUE_EXIT_CTLS"),
    ro(0x490, "VMX_TRUE_ENTRY_CTLS"),
    ro(0x491, "VMX_VMFUNC"),
    rw(0x6A0, "U_CET", Shape::Cet),
    rw(0x6A4, "PL0_SSP", Shape::Ssp),
    rw(0x6A5, "PL1_SSP", Shape::Ssp),
    rw(0x6A6, "PL2_SSP", Shape::Ssp),
    rw(0x6A7, "PL3_SSP", Shape::Ssp),
    rw(0x6E0, "TSC_DEADLINE", Shape::Any),
    rw(0xDA0, "XSS", Shape::Bits(0x1_FFFF)),
    // Not on Bochs's tigerlake: both sides must fault.
    rw(0x8B, "BIOS_SIGN_ID", Shape::Any),
    rw(0x9B, "SMM_MONITOR_CTL", Shape::Any),
    rw(0xC1, "PMC0", Shape::Any),
    rw(0xE1, "UMWAIT_CONTROL", Shape::Low32),
    timed(0xE7, "MPERF"),
    timed(0xE8, "APERF"),
    ro(0x179, "MCG_CAP"),
    rw(0x17A, "MCG_STATUS", Shape::Any),
    rw(0x186, "PERFEVTSEL0", Shape::Any),
    rw(0x1A0, "MISC_ENABLE", Shape::Bits(0x0040_1C89)),
    ro(0x345, "PERF_CAPABILITIES"),
    rw(0x38D, "FIXED_CTR_CTRL", Shape::Any),
    rw(0x560, "RTIT_OUTPUT_BASE", Shape::Address),
    rw(0xC000_0104, "AMD TSC_RATIO", Shape::Any),
    rw(0xC001_0000, "AMD PERF_CTL0", Shape::Any),
    rw(0x4000_0000, "hypervisor range", Shape::Any),
    rw(0x1234_5678, "no such MSR", Shape::Any),
];

/// Every routed and shared MSR of hv-stub's routing table, then `OTHERS`.
fn catalogue() -> Vec<Msr> {
    let mut all: Vec<Msr> = TABLE
        .iter()
        .map(|r| msr(r.msr, r.name, routed_shape(r.msr), Compare::AfterWrite))
        .collect();
    all.extend(
        OTHERS
            .iter()
            .filter(|o| TABLE.iter().all(|r| r.msr != o.index)),
    );
    all.extend(mtrrs());
    all
}

/// Every MTRR: nine variable-range pairs (Bochs has eight, MTRRCAP.VCNT)
/// and the eleven fixed-range MSRs.
fn mtrrs() -> Vec<Msr> {
    let variable = (0..9u32).flat_map(|n| {
        [
            rw(0x200 + 2 * n, "MTRR_PHYSBASEn", Shape::MtrrPhysBase),
            rw(0x201 + 2 * n, "MTRR_PHYSMASKn", Shape::MtrrPhysMask),
        ]
    });
    let fixed = [0x250, 0x258, 0x259]
        .into_iter()
        .chain(0x268..=0x26F)
        .map(|index| rw(index, "MTRR_FIXn", Shape::MtrrFixed));
    variable.chain(fixed).collect()
}

/// splitmix64: a seeded, dependency-free generator, so a seed names one
/// campaign exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    fn bit(&mut self) -> u64 {
        1 << self.below(64)
    }
}

/// A canonical (48-bit) address, aligned as given.
fn canonical(rng: &mut Rng, align: u64) -> u64 {
    let low = rng.next() & 0x7FFF_FFFF_FFFF & !(align - 1);
    if rng.chance(2) {
        low | 0xFFFF_8000_0000_0000
    } else {
        low
    }
}

/// Addresses at the edges of canonicality: 48-bit-canonical limits, values
/// canonical only with 57-bit addressing, and plainly non-canonical ones.
fn address_edge(rng: &mut Rng) -> u64 {
    rng.pick(&[
        NON_CANONICAL,
        0x0000_8000_0000_0000,
        0x0000_7FFF_FFFF_FFFF,
        0xFFFF_8000_0000_0000,
        0xFFFF_7FFF_FFFF_F000,
        0x00FF_FFFF_FFFF_F000,
        0xFF00_0000_0000_0000,
        0x0100_0000_0000_0000,
        0xFFFF_FFFF_FFFF_FFFF,
        0xDEAD_BEEF_0000_0000,
    ])
}

/// Eight memory-type bytes (PAT or fixed-range MTRRs), usually valid per
/// `valid`, sometimes with one reserved type (2, 3, 7, 8 or 0xFF).
fn type_bytes(rng: &mut Rng, valid: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    for b in &mut bytes {
        *b = rng.pick(valid);
    }
    if rng.chance(2) {
        let slot = rng.below(8) as usize;
        bytes[slot] = rng.pick(&[2, 3, 7, 8, 0x10, 0xFF]);
    }
    u64::from_le_bytes(bytes)
}

/// A value biased towards what `shape` makes interesting.
fn shaped(rng: &mut Rng, shape: Shape) -> u64 {
    match shape {
        Shape::Address => {
            if rng.chance(3) {
                address_edge(rng)
            } else {
                canonical(rng, 1)
            }
        }
        Shape::SysenterCs => {
            let selector = rng.pick(&[0, 0x8, 0x10, 0x23, 0xFFFF]);
            match rng.below(3) {
                0 => selector,
                1 => selector | (rng.next() << 16),
                _ => selector | (rng.next() & !0xFFFF_FFFF),
            }
        }
        Shape::Smbase => {
            let any = rng.next();
            rng.pick(&[0x3_0000, 0xA_0000, 0xFFFF_FFFF, 1 << 32, any])
        }
        Shape::Pat => type_bytes(rng, &[0, 1, 4, 5, 6, 7]),
        Shape::Efer => {
            // SCE, LME, LMA, NXE in every combination, sometimes a reserved
            // bit (1-7, 9, 12-15, 63).
            let mut v = 0;
            for bit in [0, 8, 10, 11] {
                if rng.chance(2) {
                    v |= 1 << bit;
                }
            }
            if rng.chance(3) {
                v |= 1 << rng.pick(&[1, 7, 9, 12, 13, 14, 15, 63]);
            }
            v
        }
        Shape::FeatureControl => {
            // Lock, VMX in/outside SMX, SENTER enables, SGX, LMCE, reserved.
            let mut v = 0;
            for bit in [0, 1, 2, 8, 15, 17, 18, 20, 30] {
                if rng.chance(3) {
                    v |= 1 << bit;
                }
            }
            if rng.chance(4) {
                v |= rng.bit();
            }
            v
        }
        Shape::Debugctl => {
            let mut v = 0;
            for _ in 0..rng.below(3) + 1 {
                v |= 1 << rng.below(16);
            }
            if rng.chance(4) {
                v |= rng.bit();
            }
            v
        }
        Shape::Low32 => {
            let v = rng.next() & 0xFFFF_FFFF;
            if rng.chance(3) {
                v | rng.bit()
            } else {
                v
            }
        }
        Shape::Any => rng.next(),
        Shape::MtrrPhysBase => {
            // Type in bits 7:0 (valid 0, 1, 4, 5, 6); bits 11:8 and above
            // MAXPHYADDR reserved.
            let base = rng.next() & 0xF_FFFF_F000;
            let ty = rng.pick(&[0u64, 1, 4, 5, 6, 2, 3, 7]);
            let extra = if rng.chance(3) {
                rng.pick(&[1 << 8, 1 << 11, 1 << 40, 1 << 52, 1 << 63])
            } else {
                0
            };
            base | ty | extra
        }
        Shape::MtrrPhysMask => {
            let mask = rng.next() & 0xF_FFFF_F000;
            let valid = if rng.chance(2) { 1 << 11 } else { 0 };
            let extra = if rng.chance(3) {
                rng.pick(&[1, 1 << 10, 1 << 40, 1 << 63])
            } else {
                0
            };
            mask | valid | extra
        }
        Shape::MtrrFixed => type_bytes(rng, &[0, 1, 4, 5, 6]),
        Shape::MtrrDefType => {
            let ty = rng.pick(&[0u64, 1, 4, 5, 6, 2, 3, 7]);
            let mut v = ty;
            for bit in [10, 11] {
                if rng.chance(2) {
                    v |= 1 << bit;
                }
            }
            if rng.chance(3) {
                v |= rng.pick(&[1 << 8, 1 << 9, 1 << 12, 1 << 63]);
            }
            v
        }
        Shape::ApicBase => {
            // Base, BSP (8), x2APIC (10): xAPIC <-> x2APIC transitions
            // (x2APIC -> xAPIC is invalid), relocation, reserved bits.
            let base = rng.pick(&[0xFEE0_0000u64, 0xFEC0_0000, 0x1_0000_0000]);
            let mut v = base;
            for bit in [8, 10] {
                if rng.chance(2) {
                    v |= 1 << bit;
                }
            }
            if rng.chance(4) {
                v |= rng.pick(&[1, 1 << 9, 1 << 12, 1 << 63]);
            }
            v
        }
        Shape::Ssp => {
            if rng.chance(3) {
                address_edge(rng) | rng.below(8)
            } else {
                canonical(rng, 1) & !rng.pick(&[0u64, 3, 7])
            }
        }
        Shape::Cet => {
            let mut v = 0;
            for _ in 0..rng.below(4) {
                v |= 1 << rng.below(12);
            }
            if rng.chance(3) {
                v |= canonical(rng, 0x1000);
            } else if rng.chance(4) {
                v |= address_edge(rng) & !0xFFF;
            }
            v
        }
        Shape::Bndcfgs => canonical(rng, 0x1000) | rng.pick(&[0, 1, 2, 3, 1 << 4]),
        Shape::RtitCtl => {
            let mut v = 0;
            for _ in 0..rng.below(4) + 1 {
                v |= rng.bit();
            }
            v
        }
        Shape::Bits(mask) => match rng.below(3) {
            0 => 1 << rng.below(64),
            1 => mask & (1 << (rng.next() & mask).trailing_zeros().min(63)),
            _ => rng.next() & mask,
        },
        Shape::Command => rng.pick(&[0, 1, 2, 3, 1 << 63]),
    }
}

/// One value to write: mostly shaped for the MSR, sometimes generic edges
/// or a one-bit change of the value the MSR holds now.
fn value_for(rng: &mut Rng, m: &Msr, current: Option<u64>) -> u64 {
    let value = any_value_for(rng, m, current);
    if m.shape == Shape::ApicBase {
        // Never clear the APIC global enable: Bochs cannot enable a
        // disabled APIC again (it ignores the WRMSR and returns success),
        // which the SDM allows; comparing with that is comparing with a
        // Bochs defect.
        value | APIC_GLOBAL_ENABLE
    } else {
        value
    }
}

fn any_value_for(rng: &mut Rng, m: &Msr, current: Option<u64>) -> u64 {
    match rng.below(8) {
        0 => {
            let bit = rng.bit();
            rng.pick(&[0, 1, u64::MAX, 0xFFFF_FFFF, 1 << 32, bit])
        }
        1 => match current {
            Some(v) => v ^ rng.bit(),
            None => rng.next(),
        },
        _ => shaped(rng, m.shape),
    }
}

#[derive(Default)]
struct Campaign {
    writes: u64,
    reads: u64,
    differences: Vec<String>,
    fatals: Vec<String>,
    /// `PULSE_DIFF_TRACE=FILE`: every request and both answers.
    trace: Option<std::io::BufWriter<std::fs::File>>,
}

impl Campaign {
    fn trace(&mut self, line: impl FnOnce() -> String) {
        if let Some(out) = &mut self.trace {
            use std::io::Write as _;
            writeln!(out, "{}", line()).expect("write PULSE_DIFF_TRACE");
        }
    }

    fn differ(&mut self, what: String) {
        eprintln!("DIFF {what}");
        self.differences.push(what);
    }
}

fn show(r: &Result<u64, Status>) -> String {
    match r {
        Ok(v) => format!("Ok({v:#x})"),
        Err(s) => format!("{s:?}"),
    }
}

/// A transport failure on the real side: the campaign cannot go on.
fn link_lost(s: Status) -> bool {
    s == Status::TIMEOUT || s == Status::DEVICE_CONNECTION_LOST
}

/// One Bochs boot and a fresh sim beside it.
struct Pair {
    vm: Bochs,
    real: Engine,
    sim: Engine,
    /// MSRs whose values both sides are known to agree on.
    synced: BTreeSet<u32>,
    /// Per MSR, the distinct consecutive values hv-stub's `read_msr` gave.
    timeline: BTreeMap<u32, Vec<u64>>,
    /// MSRs whose observer mismatch was already reported this boot.
    reported: BTreeSet<u32>,
    /// Output lines already scanned for FATAL.
    checked: usize,
    /// The value both sides accepted in the write being read back.
    just_written: Option<u64>,
    sentinel: u64,
}

impl Pair {
    fn boot() -> Pair {
        let port = free_port();
        let vm = Bochs::start(Com1::TcpServer(port));
        let real = open_engine(&vm, &format!("tcp:127.0.0.1:{port}"), REQUEST_TIMEOUT);
        vm.wait_ready();
        let sim = Engine::open(&EngineConfig::new("sim?cpu=bochs-tigerlake"))
            .expect("open sim?cpu=bochs-tigerlake");
        Pair {
            vm,
            real,
            sim,
            synced: BTreeSet::new(),
            timeline: BTreeMap::new(),
            reported: BTreeSet::new(),
            checked: 0,
            just_written: None,
            sentinel: 0,
        }
    }

    fn note_read(&mut self, msr: u32, value: u64) {
        let line = self.timeline.entry(msr).or_default();
        if line.last() != Some(&value) {
            line.push(value);
        }
    }

    /// Reads `m` on both sides and compares. Returns false if the link to
    /// Bochs is lost.
    fn read(&mut self, c: &mut Campaign, op: u64, m: &Msr, after: &str) -> bool {
        c.reads += 1;
        let written = self.just_written.take();
        let (r, s) = (
            self.real.read_msr(m.index).map_err(|e| e.status()),
            self.sim.read_msr(m.index).map_err(|e| e.status()),
        );
        c.trace(|| format!("R {:x} bochs {} sim {}", m.index, show(&r), show(&s)));
        if let Err(e) = r {
            if link_lost(e) {
                c.fatals
                    .push(format!("op {op}: read {:#x}: link lost: {e:?}", m.index));
                return false;
            }
        }
        if let Ok(v) = r {
            self.note_read(m.index, v);
        }
        let values_comparable = match m.compare {
            Compare::Always => true,
            Compare::AfterWrite => self.synced.contains(&m.index),
            Compare::Counter => false,
        };
        if let (Compare::Counter, Some(written)) = (m.compare, written) {
            for (side, read) in [("bochs", r), ("sim", s)] {
                if let Ok(v) = read {
                    if v.wrapping_sub(written) >= COUNTER_SLACK {
                        c.differ(format!(
                            "op {op}: {side} read {:#x} {} = {v:#x} right after writing {written:#x}",
                            m.index, m.name
                        ));
                    }
                }
            }
        }
        let differs = match (r, s) {
            (Ok(a), Ok(b)) => values_comparable && a != b,
            (a, b) => a != b,
        };
        if differs {
            c.differ(format!(
                "op {op}: read {:#x} {}{after}: bochs {} sim {}",
                m.index,
                m.name,
                show(&r),
                show(&s)
            ));
        }
        self.check_sim_guest(c, op);
        true
    }

    /// sim's observer guest must read what sim's `read_msr` returns.
    fn check_sim_guest(&mut self, c: &mut Campaign, op: u64) {
        let target = self.sim.sim_target().expect("a sim engine has a target");
        let observation = *target.lock().observation().expect("sim's guest ran");
        for (msr, seen) in observation.values {
            let read = self.sim.read_msr(msr).ok();
            if read != seen {
                c.differ(format!(
                    "op {op}: sim guest RDMSR {msr:#x} gave {seen:x?}, sim read_msr {read:x?}"
                ));
            }
        }
    }

    /// Writes `value` to `m` on both sides and compares, then reads it back.
    fn write(&mut self, c: &mut Campaign, op: u64, m: &Msr, value: u64) -> bool {
        c.writes += 1;
        let (r, s) = (
            self.real.write_msr(m.index, value).map_err(|e| e.status()),
            self.sim.write_msr(m.index, value).map_err(|e| e.status()),
        );
        c.trace(|| format!("W {:x} {value:x} bochs {r:?} sim {s:?}", m.index));
        if let Err(e) = r {
            if link_lost(e) {
                c.fatals.push(format!(
                    "op {op}: write {:#x} <- {value:#x}: link lost: {e:?}",
                    m.index
                ));
                return false;
            }
        }
        if r != s {
            c.differ(format!(
                "op {op}: write {:#x} {} <- {value:#x}: bochs {r:?} sim {s:?}",
                m.index, m.name
            ));
            self.synced.remove(&m.index);
        } else if r.is_ok() {
            self.synced.insert(m.index);
        }
        if r.is_ok() && s.is_ok() {
            self.just_written = Some(value);
        }
        if m.index == 0x10 && r.is_ok() {
            // WRMSR TSC moves TSC_ADJUST by how far the TSC ran meanwhile.
            self.synced.remove(&0x3B);
        }
        self.read(c, op, m, &format!(" after writing {value:#x}"))
    }

    /// Makes sure the observer guest ran a full sweep after every write so
    /// far (two sentinel LSTAR writes, each seen by the guest), then checks
    /// each MSR's OBS values against what `read_msr` returned.
    fn check_observer(&mut self, c: &mut Campaign, op: u64) -> bool {
        let mut last = 0;
        for _ in 0..2 {
            self.sentinel += 1;
            let value = 0xFFFF_FFFF_8000_0000 | (self.sentinel << 12);
            let from = self.vm.cursor();
            let lstar = msr(
                IA32_LSTAR,
                "IA32_LSTAR",
                Shape::Address,
                Compare::AfterWrite,
            );
            if !self.write(c, op, &lstar, value) {
                return false;
            }
            match self.vm.wait_from(from, SENTINEL_TIMEOUT, |l| {
                parse_obs(l) == Some((IA32_LSTAR, value))
            }) {
                Ok(i) => last = i,
                Err(e) => {
                    c.fatals
                        .push(format!("op {op}: guest never saw sentinel {value:#x}: {e}"));
                    return false;
                }
            }
        }
        let lines = self.vm.lines();
        let mut seen: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        for line in &lines[..=last] {
            if let Some((msr, value)) = parse_obs(line) {
                seen.entry(msr).or_default().push(value);
            }
            if let Some(absent) = line.split("ABSENT ").nth(1) {
                let msr = u32::from_str_radix(absent.trim(), 16).unwrap_or(u32::MAX);
                if self.timeline.contains_key(&msr) && self.reported.insert(msr) {
                    c.differ(format!(
                        "op {op}: the Bochs guest's RDMSR {msr:#x} faults but read_msr succeeds"
                    ));
                }
            }
        }
        for line in &lines[self.checked..=last] {
            if line.contains("GUEST rdmsr") {
                c.differ(format!("op {op}: the guest lost an MSR: {line}"));
            }
            if line.contains("FATAL") {
                c.fatals.push(line.clone());
            }
        }
        self.checked = last + 1;
        for (msr, observed) in &seen {
            if self.reported.contains(msr) {
                continue;
            }
            let expected = self.timeline.get(msr).map(Vec::as_slice).unwrap_or(&[]);
            if let Some(why) = observer_mismatch(observed, expected) {
                c.differ(format!(
                    "op {op}: Bochs guest OBS {msr:#x}: {why} (guest saw {:x?}, read_msr gave {:x?})",
                    tail(observed),
                    tail(expected)
                ));
                // One report per MSR and boot: later checks would repeat it.
                self.reported.insert(*msr);
            }
        }
        true
    }
}

fn tail(values: &[u64]) -> &[u64] {
    &values[values.len().saturating_sub(6)..]
}

/// The guest's values must be a subsequence of the values `read_msr` gave
/// since boot, ending at the same value.
fn observer_mismatch(observed: &[u64], expected: &[u64]) -> Option<String> {
    let Some(&final_read) = expected.last() else {
        return Some("the guest reads it but read_msr faulted".into());
    };
    let mut at = 0;
    for v in observed {
        match expected[at..].iter().position(|e| e == v) {
            Some(i) => at += i,
            None => {
                return Some(format!(
                    "the guest saw {v:#x}, which read_msr never returned then"
                ))
            }
        }
    }
    let final_seen = *observed.last()?;
    (final_seen != final_read)
        .then(|| format!("the guest holds {final_seen:#x} but read_msr returns {final_read:#x}"))
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        }
        Err(_) => default,
    }
}

fn run_campaign(seed: u64, ops: u64) -> Campaign {
    let catalogue = catalogue();
    let mut rng = Rng(seed);
    let mut c = Campaign {
        trace: std::env::var_os("PULSE_DIFF_TRACE").map(|path| {
            std::io::BufWriter::new(std::fs::File::create(path).expect("create PULSE_DIFF_TRACE"))
        }),
        ..Campaign::default()
    };
    let mut done = 0;
    'boots: while done < ops {
        let mut pair = Pair::boot();
        c.trace(|| format!("BOOT at write {done}"));
        // Both sides' boot values: statuses compared, values for
        // read-only MSRs.
        for m in &catalogue {
            if !pair.read(&mut c, done, m, " at boot") {
                break 'boots;
            }
        }
        let end = ops.min(done + OPS_PER_BOOT);
        while done < end {
            let m = catalogue[rng.below(catalogue.len() as u64) as usize];
            let current = pair.timeline.get(&m.index).and_then(|t| t.last().copied());
            let value = value_for(&mut rng, &m, current);
            if !pair.write(&mut c, done, &m, value) {
                break 'boots;
            }
            if rng.chance(4) {
                let other = catalogue[rng.below(catalogue.len() as u64) as usize];
                if !pair.read(&mut c, done, &other, "") {
                    break 'boots;
                }
            }
            done += 1;
            if done % CHECKPOINT_EVERY == 0 || done == end {
                if !pair.check_observer(&mut c, done) {
                    break 'boots;
                }
                eprintln!("{done}/{ops} writes, {} differences", c.differences.len());
            }
        }
        // The boot's last checkpoint proved the guest ran after the last
        // request (it saw both sentinels); anything FATAL since then counts.
        let lines = pair.vm.lines();
        c.fatals.extend(
            lines[pair.checked..]
                .iter()
                .filter(|l| l.contains("FATAL"))
                .cloned(),
        );
    }
    c
}

#[test]
fn random_requests_agree_between_bochs_and_sim() {
    let seed = env_u64("PULSE_DIFF_SEED", CI_SEED);
    let ops = env_u64("PULSE_DIFF_OPS", CI_OPS);
    let c = run_campaign(seed, ops);
    let mut summary = String::new();
    writeln!(
        summary,
        "seed {seed:#x}: {} writes, {} reads, {} differences, {} FATAL",
        c.writes,
        c.reads,
        c.differences.len(),
        c.fatals.len()
    )
    .unwrap();
    eprintln!("{summary}");
    if let Some(path) = std::env::var_os("PULSE_DIFF_REPORT") {
        let mut all = summary.clone();
        for line in c.fatals.iter().chain(&c.differences) {
            all.push_str(line);
            all.push('\n');
        }
        std::fs::write(path, all).expect("write PULSE_DIFF_REPORT");
    }
    assert!(
        c.fatals.is_empty() && c.differences.is_empty(),
        "{summary}{}\n{}",
        c.fatals.join("\n"),
        c.differences
            .iter()
            .take(60)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(c.writes >= ops, "the campaign stopped early");
}

/// The observer check itself: it must reject a value `read_msr` never
/// returned, values out of order and a final value that differs, and
/// accept a guest that missed short-lived values.
#[test]
fn observer_check_rejects_what_read_msr_never_returned() {
    let reads = [1, 2, 3, 4];
    assert_eq!(observer_mismatch(&[1, 3, 4], &reads), None);
    assert_eq!(observer_mismatch(&[1, 2, 3, 4], &reads), None);
    assert!(observer_mismatch(&[1, 5, 4], &reads).is_some());
    assert!(observer_mismatch(&[1, 3, 2, 4], &reads).is_some());
    assert!(observer_mismatch(&[1, 2, 3], &reads).is_some());
    assert!(observer_mismatch(&[1], &[]).is_some());
}
