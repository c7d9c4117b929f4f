//! An MSR written on every CPU: one `PsWriteMsrAllCpus` against N single
//! writes (switch to CPU k, write), measured side by side.
//!
//!     cargo bench --bench cpus [-- SECONDS_PER_ROW [ROUNDS]]   # default 0.5 s, 5 rounds
//!
//! Rows: `sim?cpus=N` in process for N = 1, 2, 4, 8, 16, 64, and a TCP
//! loopback to a hv-stub-sim thread (4 CPUs). For each, "all" is the rate
//! of `write_msr_all_cpus` (every CPU written once per operation) and
//! "single" the rate of N `switch_cpu` + `write_msr` pairs (also every CPU
//! once per operation); the two run back to back in each round, in
//! alternating order. Reported: the spread (min–median–max across rounds)
//! of each rate and of their per-round ratio.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "common/rate.rs"]
mod rate;
#[path = "common/spread.rs"]
mod spread;

use std::time::Duration;

use hv_stub::msr::index::IA32_LSTAR;
use pulse::{Engine, EngineConfig};
use rate::rate;
use spread::{ratios, Spread};
use support::TcpSim;

fn engine(transport: &str) -> Engine {
    Engine::open(&EngineConfig::new(transport)).expect("engine")
}

fn value(n: u64) -> u64 {
    0xFFFF_F800_0000_0000 | (n & 0xFFFF) << 4
}

/// One round of a row: (all-CPU writes/s, N-single-writes/s).
fn round(engine: &Engine, cpus: u64, budget: Duration, all_first: bool) -> (f64, f64) {
    let all = |budget| {
        rate(budget, |n| {
            engine.write_msr_all_cpus(IA32_LSTAR, value(n)).unwrap();
        })
    };
    let single = |budget| {
        rate(budget, |n| {
            for cpu in 0..cpus {
                engine.switch_cpu(cpu).unwrap();
                engine.write_msr(IA32_LSTAR, value(n)).unwrap();
            }
        })
    };
    if all_first {
        let a = all(budget);
        (a, single(budget))
    } else {
        let s = single(budget);
        (all(budget), s)
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let secs: f64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(0.5);
    let rounds: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let budget = Duration::from_secs_f64(secs);

    let tcp = TcpSim::start();
    let mut rows: Vec<(String, Engine, u64)> = [1u64, 2, 4, 8, 16, 64]
        .iter()
        .map(|&n| (format!("sim?cpus={n}"), engine(&format!("sim?cpus={n}")), n))
        .collect();
    rows.push((
        "tcp, hv-stub-sim (4 CPUs)".into(),
        engine(&tcp.transport()),
        4,
    ));

    let mut results: Vec<(Vec<f64>, Vec<f64>)> = vec![(vec![], vec![]); rows.len()];
    for r in 0..rounds {
        for (i, (_, engine, cpus)) in rows.iter().enumerate() {
            let (all, single) = round(engine, *cpus, budget, r % 2 == 0);
            results[i].0.push(all);
            results[i].1.push(single);
        }
    }
    println!("{rounds} rounds of {secs} s per rate; spreads are min–median–max");
    println!(
        "{:<28} {:>22} {:>22} {:>18}",
        "debuggee", "all-CPU writes/s", "N single writes/s", "all / single"
    );
    for ((name, _, _), (all, single)) in rows.iter().zip(&results) {
        println!(
            "{:<28} {:>22} {:>22} {:>18}",
            name,
            Spread::of(all).show(0),
            Spread::of(single).show(0),
            Spread::of(&ratios(all, single)).show(2)
        );
    }
}
