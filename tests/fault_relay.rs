//! Tier 2: libpulse through a fault-injecting TCP relay (tests/support/
//! relay.rs) to an in-process hv-stub-sim server. Proves the engine's
//! promises on a bad link: every call ends within RequestTimeoutMs x
//! MaxAttempts, a write is executed at most once however often it is sent
//! (exactly once when the call succeeds), a late or duplicated frame never
//! completes another call, a cut link is DEVICE_CONNECTION_LOST at once
//! and for good, and garbage between frames is skipped.
//!
//! Fault choices are seeded (support::seed_for, overridable with
//! PULSE_TEST_SEED) and printed on failure. Every test runs twice: over
//! the unauthenticated protocol (`plain::`) and over an authenticated
//! link (`authenticated::`), with the same assertions.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use hv_stub::msr::index::*;
use pulse::{Engine, EngineConfig, Status};
use pulse_proto::message::{kind, Message};
use pulse_proto::RawFrame;
use support::relay::{Dir, Faults, Relay};
use support::*;

/// Slack for scheduling on a loaded two-core machine.
const MARGIN: Duration = Duration::from_millis(150);

fn lossy(drop: f64, corrupt: f64) -> Faults {
    Faults {
        drop,
        corrupt,
        ..Faults::default()
    }
}

/// Value of every delivered WriteMsr frame, in delivery order.
fn delivered_writes(frames: &[RawFrame]) -> Vec<(u16, u32, u64)> {
    frames
        .iter()
        .filter(|f| f.kind == kind::WRITE_MSR)
        .map(|f| match Message::parse(f) {
            Ok(Message::WriteMsr { msr, value, .. }) => (f.seq, msr, value),
            other => panic!("relay delivered a bad WriteMsr: {other:?}"),
        })
        .collect()
}

/// Opens an engine through the relay, retrying the handshake if the lossy
/// link happened to eat all of its attempts.
fn open(cfg: &EngineConfig) -> Engine {
    for _ in 0..3 {
        match Engine::open(cfg) {
            Ok(engine) => return engine,
            Err(e) if e.status() == Status::TIMEOUT => continue,
            Err(other) => panic!("open {}: {other}", cfg.transport),
        }
    }
    panic!("no handshake through {} in 3 tries", cfg.transport);
}

/// Reads, retrying on TIMEOUT (a read is idempotent).
fn read_settled(engine: &Engine, msr: u32) -> u64 {
    for _ in 0..5 {
        match engine.read_msr(msr) {
            Ok(v) => return v,
            Err(e) if e.status() == Status::TIMEOUT => continue,
            Err(other) => panic!("read {msr:#x}: {other}"),
        }
    }
    panic!("read {msr:#x} timed out 5 times");
}

/// What a read of one MSR may return, given the calls made so far: the
/// last acknowledged write, plus any later write that timed out (it may or
/// may not have been executed). A successful read settles it.
struct Expect {
    possible: BTreeSet<u64>,
}

impl Expect {
    fn new(initial: u64) -> Self {
        Expect {
            possible: BTreeSet::from([initial]),
        }
    }

    fn wrote(&mut self, value: u64, result: Result<(), pulse::Error>) {
        match result {
            Ok(()) => self.possible = BTreeSet::from([value]),
            Err(e) if e.status() == Status::TIMEOUT => {
                self.possible.insert(value);
            }
            Err(other) => panic!("write of {value:#x} failed with {other}"),
        }
    }

    fn read(&mut self, what: &str, result: Result<u64, pulse::Error>) {
        match result {
            Ok(v) => {
                assert!(
                    self.possible.contains(&v),
                    "{what}: read {v:#x}, but only {:x?} can be there",
                    self.possible
                );
                self.possible = BTreeSet::from([v]);
            }
            Err(e) if e.status() == Status::TIMEOUT => {}
            Err(other) => panic!("{what}: read failed with {other}"),
        }
    }
}

fn lossy_link_every_write_ends_in_bound_and_executes_exactly_once(link: Link) {
    const N: u64 = 150;
    let seed = seed_for("lossy_link_every_write_ends_in_bound_and_executes_exactly_once");
    let sim = TcpSim::start_on(link);
    let relay = Relay::start(sim.addr, seed);
    relay.set_faults(Dir::Requests, lossy(0.12, 0.10));
    relay.set_faults(Dir::Responses, lossy(0.12, 0.10));
    let cfg = link.config(&relay.transport(), 40, 8);
    let engine = open(&cfg);
    relay.quiesce();
    let before = handler_stats(&sim.target);
    let model_before = model_stats(&sim.target);
    let delivered_before = relay.delivered(Dir::Requests).len();

    let mut calls = Vec::new();
    for i in 0..N {
        let value = kernel_address(0x1000 + i);
        let (result, elapsed) = timed(|| engine.write_msr(IA32_LSTAR, value));
        assert!(
            matches!(
                result.as_ref().map_err(|e| e.status()),
                Ok(()) | Err(Status::TIMEOUT)
            ),
            "seed {seed}: write {i} ended with {result:?}"
        );
        assert!(
            elapsed <= budget(&cfg) + MARGIN,
            "seed {seed}: write {i} took {elapsed:?}, bound {:?}",
            budget(&cfg)
        );
        calls.push((value, result));
    }
    relay.quiesce();
    let after = handler_stats(&sim.target);
    let model_after = model_stats(&sim.target);
    let requests = link.plain_requests(
        &relay.delivered(Dir::Requests),
        &relay.delivered(Dir::Responses),
    );
    let delivered = delivered_writes(&requests[delivered_before..]);
    let reached: BTreeSet<u64> = delivered.iter().map(|&(_, _, v)| v).collect();
    let successes: Vec<u64> = calls
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|&(v, _)| v)
        .collect();
    let executed = after.writes_executed - before.writes_executed;

    // The faults really happened, on both sides, and were detected.
    for dir in [Dir::Requests, Dir::Responses] {
        let c = relay.counters(dir);
        assert!(
            c.dropped > 0 && c.corrupted > 0,
            "seed {seed}: {dir:?} {c:?}"
        );
    }
    assert!(engine.stats().decoder.crc_errors > 0, "corrupted responses");
    assert!(sim.server.decoder_stats().crc_errors > 0);
    assert!(
        successes.len() as u64 >= N * 9 / 10,
        "seed {seed}: only {} of {N} writes succeeded",
        successes.len()
    );

    // Exactly once: at most one execution per distinct request that got
    // through, never more than the calls made; retransmissions were
    // replayed. A request is not executed only if the debuggee refused it
    // as out of sequence (one that timed out before it never arrived).
    let refused = after.out_of_sequence - before.out_of_sequence;
    assert!(
        executed <= reached.len() as u64 && executed + refused >= reached.len() as u64,
        "seed {seed}: {executed} executions, {} distinct writes reached the debuggee, {refused} refused",
        reached.len()
    );
    assert!(executed <= N);
    assert_eq!(
        model_after.wrmsrs - model_before.wrmsrs,
        executed,
        "one WRMSR per executed write"
    );
    for v in &successes {
        assert!(reached.contains(v), "acknowledged {v:#x} never arrived");
    }
    assert!(
        after.replays > before.replays,
        "seed {seed}: lost responses must have caused replays"
    );
    assert!(delivered.len() > reached.len(), "some writes arrived twice");
    assert_eq!(model_after.entry_failures, 0);

    // The debuggee holds the last write that reached it; if the last call
    // succeeded, that is its value.
    let last_reached = delivered.last().unwrap().2;
    let final_value = read_settled(&engine, IA32_LSTAR);
    assert_eq!(final_value, last_reached, "seed {seed}");
    if let Some((value, Ok(()))) = calls.last() {
        assert_eq!(final_value, *value, "seed {seed}: the last write succeeded");
    }
    assert_eq!(guest_saw(&sim.target, IA32_LSTAR), Some(final_value));
}

fn all_responses_lost_times_out_in_bound_after_one_execution_of_identical_resends(link: Link) {
    let sim = TcpSim::start_on(link);
    let relay = Relay::start(sim.addr, 1);
    let cfg = link.config(&relay.transport(), 100, 3);
    let engine = open(&cfg);
    engine.write_msr(IA32_LSTAR, kernel_address(1)).unwrap();
    relay.quiesce();
    let before = handler_stats(&sim.target);
    let sent_before = relay.delivered(Dir::Requests).len();

    relay.set_faults(Dir::Responses, lossy(1.0, 0.0));
    let (result, elapsed) = timed(|| engine.write_msr(IA32_LSTAR, kernel_address(2)));
    assert_eq!(result.map_err(|e| e.status()), Err(Status::TIMEOUT));
    relay.quiesce();
    assert!(
        elapsed >= budget(&cfg) - Duration::from_millis(10),
        "gave up after {elapsed:?}"
    );
    assert!(elapsed <= budget(&cfg) + MARGIN, "took {elapsed:?}");

    let sent = relay.delivered(Dir::Requests)[sent_before..].to_vec();
    assert_eq!(sent.len(), 3, "one send per attempt");
    assert!(
        sent.iter().all(|f| frame_bytes(f) == frame_bytes(&sent[0])),
        "resends must be byte-identical: {sent:?}"
    );
    let after = handler_stats(&sim.target);
    assert_eq!(after.writes_executed - before.writes_executed, 1);
    assert_eq!(after.replays - before.replays, 2);
    // The write was applied once even though its call timed out.
    assert_eq!(guest_saw(&sim.target, IA32_LSTAR), Some(kernel_address(2)));

    relay.set_faults(Dir::Responses, Faults::default());
    assert_eq!(engine.write_msr(IA32_LSTAR, kernel_address(3)), Ok(()));
    assert_eq!(engine.read_msr(IA32_LSTAR), Ok(kernel_address(3)));
}

fn every_response_late_still_completes_the_right_call(link: Link) {
    // Each response arrives after the attempt that asked for it timed out,
    // so the engine resends, and the resend's answer arrives during the
    // next call: every call sees one stale frame from its predecessor.
    let sim = TcpSim::start_on(link);
    let relay = Relay::start(sim.addr, 2);
    let cfg = link.config(&relay.transport(), 40, 4);
    let engine = open(&cfg);
    relay.set_faults(
        Dir::Responses,
        Faults {
            delay: 1.0,
            delay_by: Duration::from_millis(60),
            ..Faults::default()
        },
    );
    let frames_before = engine.stats().decoder.frames;
    let replays_before = handler_stats(&sim.target).replays;
    let mut calls = 0;
    for i in 0..6u64 {
        let (a, b) = (kernel_address(0x100 + i), kernel_address(0x200 + i));
        assert_eq!(engine.write_msr(IA32_LSTAR, a), Ok(()), "round {i}");
        assert_eq!(engine.write_msr(IA32_CSTAR, b), Ok(()), "round {i}");
        assert_eq!(engine.read_msr(IA32_LSTAR), Ok(a), "round {i}");
        assert_eq!(engine.read_msr(IA32_CSTAR), Ok(b), "round {i}");
        calls += 4;
    }
    assert!(
        handler_stats(&sim.target).replays - replays_before >= calls,
        "every call was resent once"
    );
    // Each call was answered at least twice (its first send and its
    // resend); the later answer reached the next call, which ignored it.
    // (The engine reads only during calls: the last one's is still queued.)
    let frames = engine.stats().decoder.frames - frames_before;
    assert!(
        frames >= 2 * calls - 1,
        "stale answers: {frames} frames for {calls} calls"
    );
}

fn duplicated_and_delayed_frames_never_complete_the_wrong_call(link: Link) {
    const ROUNDS: u64 = 25;
    let seed = seed_for("duplicated_and_delayed_frames_never_complete_the_wrong_call");
    let sim = TcpSim::start_on(link);
    let relay = Relay::start(sim.addr, seed);
    let cfg = link.config(&relay.transport(), 50, 6);
    let engine = open(&cfg);
    let mut a = Expect::new(read_settled(&engine, IA32_LSTAR));
    let mut b = Expect::new(read_settled(&engine, IA32_CSTAR));
    let late = |dup: f64, delay: f64| Faults {
        duplicate: dup,
        delay,
        delay_by: Duration::from_millis(70),
        ..Faults::default()
    };
    relay.set_faults(Dir::Requests, late(0.2, 0.2));
    relay.set_faults(Dir::Responses, late(0.25, 0.25));
    let before = handler_stats(&sim.target);
    let frames_before = engine.stats().decoder.frames;

    let mut calls = 0u64;
    let mut write_calls = 0u64;
    let mut write_successes = 0u64;
    let mut check = |elapsed: Duration, what: &str| {
        calls += 1;
        assert!(
            elapsed <= budget(&cfg) + MARGIN,
            "seed {seed}: {what} took {elapsed:?}"
        );
    };
    for i in 0..ROUNDS {
        let (va, vb) = (kernel_address(0x3000 + i), kernel_address(0x4000 + i));
        let (r, t) = timed(|| engine.write_msr(IA32_LSTAR, va));
        check(t, "write A");
        write_calls += 1;
        write_successes += u64::from(r.is_ok());
        a.wrote(va, r);
        let (r, t) = timed(|| engine.read_msr(IA32_LSTAR));
        check(t, "read A");
        a.read(&format!("seed {seed} round {i} read A"), r);
        let (r, t) = timed(|| engine.write_msr(IA32_CSTAR, vb));
        check(t, "write B");
        write_calls += 1;
        write_successes += u64::from(r.is_ok());
        b.wrote(vb, r);
        let (r, t) = timed(|| engine.read_msr(IA32_LSTAR));
        check(t, "read A again");
        a.read(&format!("seed {seed} round {i} read A again"), r);
        let (r, t) = timed(|| engine.read_msr(IA32_CSTAR));
        check(t, "read B");
        b.read(&format!("seed {seed} round {i} read B"), r);
    }

    for dir in [Dir::Requests, Dir::Responses] {
        let c = relay.counters(dir);
        assert!(
            c.duplicated > 0 && c.delayed > 0,
            "seed {seed}: {dir:?} {c:?}"
        );
    }
    let after = handler_stats(&sim.target);
    assert!(
        engine.stats().decoder.frames > frames_before + calls,
        "seed {seed}: extra (stale or duplicate) answers reached the engine"
    );
    assert!(
        (after.replays - before.replays) + (after.stale_dropped - before.stale_dropped) > 0,
        "seed {seed}: duplicate requests reached the debuggee"
    );
    let executed = after.writes_executed - before.writes_executed;
    assert!(
        (write_successes..=write_calls).contains(&executed),
        "seed {seed}: {executed} executions for {write_calls} writes, {write_successes} acknowledged"
    );
    assert_eq!(after.naks, before.naks);
}

fn garbage_between_frames_is_skipped_and_calls_succeed(link: Link) {
    let seed = seed_for("garbage_between_frames_is_skipped_and_calls_succeed");
    let sim = TcpSim::start_on(link);
    let relay = Relay::start(sim.addr, seed);
    let noisy = Faults {
        garbage: 0.5,
        garbage_max: 16,
        ..Faults::default()
    };
    relay.set_faults(Dir::Requests, noisy);
    relay.set_faults(Dir::Responses, noisy);
    let cfg = link.config(&relay.transport(), 100, 8);
    let engine = Engine::open(&cfg).expect("handshake through garbage");
    for i in 0..30 {
        let value = kernel_address(0x5000 + i);
        assert_eq!(
            engine.write_msr(IA32_LSTAR, value),
            Ok(()),
            "seed {seed}: write {i}"
        );
        assert_eq!(
            engine.read_msr(IA32_LSTAR),
            Ok(value),
            "seed {seed}: read {i}"
        );
    }
    assert!(relay.counters(Dir::Requests).garbage_bytes > 0);
    assert!(relay.counters(Dir::Responses).garbage_bytes > 0);
    assert!(
        engine.stats().decoder.skipped_bytes > 0,
        "the engine skipped the garbage"
    );
    let stub_decoder = sim.server.decoder_stats();
    assert!(
        stub_decoder.skipped_bytes > 0,
        "hv-stub skipped the garbage"
    );
    assert_eq!(handler_stats(&sim.target).naks, 0);
}

fn fake_frame_headers_in_garbage_cost_resends_not_calls(link: Link) {
    // Garbage that starts with the start marker and a plausible length
    // makes a decoder wait for up to a full frame before the CRC rejects
    // it; the resends supply the bytes. Calls must still succeed in bound.
    let seed = seed_for("fake_frame_headers_in_garbage_cost_resends_not_calls");
    let sim = TcpSim::start_on(link);
    let relay = Relay::start(sim.addr, seed);
    let cfg = link.config(&relay.transport(), 40, 8);
    let engine = Engine::open(&cfg).expect("handshake");
    let fake = Faults {
        garbage: 0.3,
        garbage_max: 4,
        garbage_fake_header: true,
        ..Faults::default()
    };
    relay.set_faults(Dir::Requests, fake);
    relay.set_faults(Dir::Responses, fake);
    for i in 0..10 {
        let value = kernel_address(0x6000 + i);
        let (result, elapsed) = timed(|| engine.write_msr(IA32_LSTAR, value));
        assert_eq!(result, Ok(()), "seed {seed}: write {i}");
        assert!(
            elapsed <= budget(&cfg) + MARGIN,
            "write {i} took {elapsed:?}"
        );
        let (result, elapsed) = timed(|| engine.read_msr(IA32_LSTAR));
        assert_eq!(result, Ok(value), "seed {seed}: read {i}");
        assert!(
            elapsed <= budget(&cfg) + MARGIN,
            "read {i} took {elapsed:?}"
        );
    }
    assert!(relay.counters(Dir::Requests).garbage_bytes > 0);
    assert!(relay.counters(Dir::Responses).garbage_bytes > 0);
    // Each fake header was rejected, by its CRC once enough bytes came, or
    // dropped when the line went quiet first (the engine rescans behind
    // it, hv-stub-sim drops what it held): either way its bytes were
    // skipped, never delivered.
    let engine_decoder = engine.stats().decoder;
    let stub_decoder = sim.server.decoder_stats();
    assert!(
        engine_decoder.skipped_bytes > 0,
        "seed {seed}: the engine rejected no fake frame: {engine_decoder:?}"
    );
    assert!(
        stub_decoder.skipped_bytes > 0,
        "seed {seed}: hv-stub rejected no fake frame: {stub_decoder:?}"
    );
    assert_eq!(handler_stats(&sim.target).naks, 0);
}

fn assert_lost_for_good(engine: &Engine) {
    for i in 0..10 {
        let (result, elapsed) = timed(|| {
            if i % 2 == 0 {
                engine.read_msr(IA32_LSTAR).map(|_| ())
            } else {
                engine.write_msr(IA32_LSTAR, kernel_address(9))
            }
        });
        assert_eq!(
            result.map_err(|e| e.status()),
            Err(Status::DEVICE_CONNECTION_LOST),
            "call {i}"
        );
        assert!(
            elapsed < Duration::from_millis(50),
            "call {i} after the loss took {elapsed:?}"
        );
    }
}

fn cut_while_idle_is_connection_lost_and_later_calls_fail_fast(link: Link) {
    let sim = TcpSim::start_on(link);
    let relay = Relay::start(sim.addr, 3);
    let cfg = link.config(&relay.transport(), 200, 3);
    let engine = open(&cfg);
    assert_eq!(engine.write_msr(IA32_LSTAR, kernel_address(1)), Ok(()));
    relay.cut();
    let (result, elapsed) = timed(|| engine.write_msr(IA32_LSTAR, kernel_address(2)));
    assert_eq!(
        result.map_err(|e| e.status()),
        Err(Status::DEVICE_CONNECTION_LOST)
    );
    assert!(elapsed < cfg.request_timeout, "took {elapsed:?}");
    assert_lost_for_good(&engine);
}

fn cut_during_a_call_is_connection_lost_not_timeout(link: Link) {
    for dir in [Dir::Requests, Dir::Responses] {
        let sim = TcpSim::start_on(link);
        let relay = Relay::start(sim.addr, 4);
        let cfg = link.config(&relay.transport(), 200, 3);
        let engine = open(&cfg);
        assert_eq!(engine.write_msr(IA32_LSTAR, kernel_address(1)), Ok(()));
        relay.quiesce();
        let reads = handler_stats(&sim.target).reads_executed;
        // The next request (or its answer) never arrives: the link goes
        // instead.
        relay.cut_after(dir, 0);
        let (result, elapsed) = timed(|| engine.read_msr(IA32_LSTAR));
        assert_eq!(
            result.map_err(|e| e.status()),
            Err(Status::DEVICE_CONNECTION_LOST),
            "{dir:?}"
        );
        assert!(elapsed < cfg.request_timeout, "{dir:?}: took {elapsed:?}");
        let executed = handler_stats(&sim.target).reads_executed - reads;
        let expected = u64::from(dir == Dir::Responses);
        assert_eq!(executed, expected, "{dir:?}: where the cut fell");
        assert_lost_for_good(&engine);
    }
}

fn many_threads_on_one_engine_through_a_lossy_link(link: Link) {
    const THREADS: usize = 8;
    const CALLS: u64 = 50;
    const MSRS: [u32; THREADS] = [
        IA32_LSTAR,
        IA32_CSTAR,
        IA32_KERNEL_GS_BASE,
        IA32_SYSENTER_ESP,
        IA32_SYSENTER_EIP,
        IA32_FS_BASE,
        IA32_GS_BASE,
        IA32_TSC_AUX,
    ];
    let seed = seed_for("many_threads_on_one_engine_through_a_lossy_link");
    let sim = TcpSim::start_on(link);
    let relay = Relay::start(sim.addr, seed);
    relay.set_faults(Dir::Requests, lossy(0.05, 0.03));
    relay.set_faults(Dir::Responses, lossy(0.05, 0.03));
    let cfg = link.config(&relay.transport(), 30, 6);
    let engine = Arc::new(open(&cfg));
    let initial: Vec<u64> = MSRS.iter().map(|&m| read_settled(&engine, m)).collect();
    relay.quiesce();
    let before = handler_stats(&sim.target);
    let sent_before = relay.delivered(Dir::Requests).len();
    let bound = budget(&cfg) + Duration::from_millis(200);

    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let engine = Arc::clone(&engine);
            let (msr, first) = (MSRS[t], initial[t]);
            std::thread::spawn(move || {
                let mut expect = Expect::new(first);
                let mut max_elapsed = Duration::ZERO;
                let (mut ok, mut writes) = (0u64, 0u64);
                for i in 0..CALLS {
                    let elapsed = if i % 2 == 0 {
                        let value = if msr == IA32_TSC_AUX {
                            (t as u64) << 16 | i
                        } else {
                            kernel_address((t as u64) << 20 | i)
                        };
                        let (result, elapsed) = timed(|| engine.write_msr(msr, value));
                        writes += 1;
                        ok += u64::from(result.is_ok());
                        expect.wrote(value, result);
                        elapsed
                    } else {
                        let (result, elapsed) = timed(|| engine.read_msr(msr));
                        ok += u64::from(result.is_ok());
                        expect.read(&format!("thread {t} call {i} msr {msr:#x}"), result);
                        elapsed
                    };
                    max_elapsed = max_elapsed.max(elapsed);
                }
                (max_elapsed, ok, writes)
            })
        })
        .collect();
    let mut ok_total = 0;
    let mut writes_total = 0;
    for (t, worker) in workers.into_iter().enumerate() {
        let (max_elapsed, ok, writes) = worker.join().expect("worker panicked");
        assert!(
            max_elapsed <= bound,
            "seed {seed}: thread {t}'s slowest call took {max_elapsed:?}, bound {bound:?}"
        );
        ok_total += ok;
        writes_total += writes;
    }
    let total = THREADS as u64 * CALLS;
    assert!(
        ok_total >= total / 2,
        "seed {seed}: only {ok_total} of {total} calls succeeded"
    );

    // Exactly once: with order kept (no delays), every distinct request
    // that reached the debuggee ran once and only once.
    relay.quiesce();
    let after = handler_stats(&sim.target);
    let sent = &relay.delivered(Dir::Requests)[sent_before..];
    let mut distinct: BTreeMap<u8, BTreeSet<(u8, u16)>> = BTreeMap::new();
    for f in sent {
        distinct
            .entry(f.kind)
            .or_default()
            .insert((f.session, f.seq));
    }
    let count = |k: u8| distinct.get(&k).map_or(0, |s| s.len() as u64);
    // At most once each; a delivered request goes unexecuted only when the
    // debuggee refused it (out of sequence, or for a session replaced by
    // then), or held it for an earlier request that never came before the
    // engine opened a new session.
    let refused = (after.out_of_sequence - before.out_of_sequence)
        + (after.other_session - before.other_session)
        + (after.held_discarded - before.held_discarded);
    let writes = after.writes_executed - before.writes_executed;
    let reads = after.reads_executed - before.reads_executed;
    assert!(
        writes <= count(kind::WRITE_MSR) && reads <= count(kind::READ_MSR),
        "seed {seed}: {writes} writes and {reads} reads executed, {} and {} distinct delivered",
        count(kind::WRITE_MSR),
        count(kind::READ_MSR)
    );
    assert!(
        writes + reads + refused >= count(kind::WRITE_MSR) + count(kind::READ_MSR),
        "seed {seed}: delivered requests neither executed nor refused"
    );
    assert!(count(kind::WRITE_MSR) <= writes_total);
    assert!(after.replays > before.replays, "seed {seed}: no resends?");
    assert_eq!(model_stats(&sim.target).entry_failures, 0);
}

/// The campaign over both kinds of link.
macro_rules! over_both_links {
    ($($module:ident => $link:ident),*) => {$(
        mod $module {
            use super::*;

            #[test]
            fn lossy_link_every_write_ends_in_bound_and_executes_exactly_once() {
                super::lossy_link_every_write_ends_in_bound_and_executes_exactly_once(Link::$link);
            }
            #[test]
            fn all_responses_lost_times_out_in_bound_after_one_execution_of_identical_resends() {
                super::all_responses_lost_times_out_in_bound_after_one_execution_of_identical_resends(Link::$link);
            }
            #[test]
            fn every_response_late_still_completes_the_right_call() {
                super::every_response_late_still_completes_the_right_call(Link::$link);
            }
            #[test]
            fn duplicated_and_delayed_frames_never_complete_the_wrong_call() {
                super::duplicated_and_delayed_frames_never_complete_the_wrong_call(Link::$link);
            }
            #[test]
            fn garbage_between_frames_is_skipped_and_calls_succeed() {
                super::garbage_between_frames_is_skipped_and_calls_succeed(Link::$link);
            }
            #[test]
            fn fake_frame_headers_in_garbage_cost_resends_not_calls() {
                super::fake_frame_headers_in_garbage_cost_resends_not_calls(Link::$link);
            }
            #[test]
            fn cut_while_idle_is_connection_lost_and_later_calls_fail_fast() {
                super::cut_while_idle_is_connection_lost_and_later_calls_fail_fast(Link::$link);
            }
            #[test]
            fn cut_during_a_call_is_connection_lost_not_timeout() {
                super::cut_during_a_call_is_connection_lost_not_timeout(Link::$link);
            }
            #[test]
            fn many_threads_on_one_engine_through_a_lossy_link() {
                super::many_threads_on_one_engine_through_a_lossy_link(Link::$link);
            }
        }
    )*};
}

over_both_links!(plain => Plain, authenticated => Authenticated);
