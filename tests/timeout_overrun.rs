//! A call against a debuggee that has gone silent ends within
//! RequestTimeoutMs x MaxAttempts plus scheduling slack, even for a small
//! timeout. (Waiting with SO_RCVTIMEO rounded every wait up to a timer
//! tick: with RequestTimeoutMs = 10 calls took up to 41 ms against a 30 ms
//! bound.) Its own test binary, so no other test competes for the CPU.

mod support;

use std::time::Duration;

use hv_stub::msr::index::IA32_LSTAR;
use pulse::{Engine, Status};
use support::relay::{Dir, Faults, Relay};
use support::*;

const CALLS: usize = 200;

#[test]
fn silent_debuggee_calls_end_within_the_bound_at_a_10_ms_timeout() {
    let sim = TcpSim::start();
    let relay = Relay::start(sim.addr, 1);
    let cfg = config(&relay.transport(), 10, 3);
    // The handshake itself has only 30 ms too; on a busy machine one try
    // can miss it, which is not what this test measures.
    let engine = (0..20)
        .find_map(|_| Engine::open(&cfg).ok())
        .expect("handshake on a clean link");
    // From now on the debuggee hears nothing.
    relay.set_faults(
        Dir::Requests,
        Faults {
            drop: 1.0,
            ..Faults::default()
        },
    );
    let bound = budget(&cfg);
    let mut overruns: Vec<Duration> = (0..CALLS)
        .map(|i| {
            let (result, elapsed) = timed(|| engine.write_msr(IA32_LSTAR, 0xFFFF_F800_0000_1000));
            assert_eq!(
                result.map_err(|e| e.status()),
                Err(Status::TIMEOUT),
                "call {i}"
            );
            assert!(
                elapsed >= bound,
                "call {i} gave up early, after {elapsed:?}"
            );
            elapsed - bound
        })
        .collect();
    overruns.sort_unstable();
    let median = overruns[CALLS / 2];
    let p90 = overruns[CALLS * 9 / 10];
    let p99 = overruns[CALLS * 99 / 100];
    let max = overruns[CALLS - 1];
    eprintln!("overrun past {bound:?} over {CALLS} calls: median {median:?}, p90 {p90:?}, p99 {p99:?}, max {max:?}");
    // Calls end within a millisecond of the bound (the median is 0.12 ms
    // even at a load average of 8 on two cores); tick-rounded waits overran
    // the median call by 2 ms on a quiet machine. The tail belongs to the
    // scheduler (quiet: p90 0.25 ms; loaded: several ms).
    assert!(
        median < Duration::from_millis(1),
        "median overrun {median:?}"
    );
    // The worst call is the bound plus whatever the scheduler adds, which
    // no test can bound on a shared machine (37 ms at a load average of 6
    // on two cores, 102 ms at 8.6); this only catches a wait that is lost
    // altogether. On an idle machine the worst call overran by < 1 ms.
    assert!(max < 10 * bound, "worst overrun {max:?}");
}
