//! Requests in flight (docs/PROTOCOL.md section 5, src/pipeline.rs): many
//! requests on one engine at once, through a faulty relay and from many
//! threads, each run by the debuggee exactly once and in submission order;
//! what an engine dropped with requests in flight does; and a debuggee
//! that answers wrongly hurts only the request it answered.
//!
//! Order and exactly-once are checked from the outside: every write is
//! followed by a read of the same MSR, and a read may only return the value
//! of the write just before it, or of an earlier one if every write in
//! between failed (a failed write may or may not have run). A write run
//! twice (a replay after newer writes) or out of order would make some read
//! return a value it cannot have.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use hv_stub::msr::index::*;
use pulse::engine::{Operation, Pending};
use pulse::{Engine, Status};
use pulse_proto::message::{kind, Message, WireStatus};
use pulse_proto::PROTOCOL_VERSION;
use support::relay::{Dir, Faults, Relay};
use support::*;

/// Slack for scheduling on a loaded two-core machine.
const MARGIN: Duration = Duration::from_millis(250);

/// A request submitted as number `index`, with what it did.
struct Submitted {
    index: usize,
    pending: Pending,
}

/// Keeps up to `window` requests pending, submitting `operations` in
/// order; returns each one's outcome in submission order, checking that
/// each completed within its budget.
fn run_windowed(
    engine: &Engine,
    operations: &[Operation],
    window: usize,
    seed: u64,
) -> Vec<Result<u64, pulse::Error>> {
    let submitter = engine.submitter();
    let mut outcomes: Vec<Option<Result<u64, pulse::Error>>> =
        (0..operations.len()).map(|_| None).collect();
    let mut in_flight: Vec<Submitted> = Vec::new();
    let mut next = 0;
    while next < operations.len() || !in_flight.is_empty() {
        while next < operations.len() && in_flight.len() < window {
            in_flight.push(Submitted {
                index: next,
                pending: submitter.submit(operations[next]),
            });
            next += 1;
        }
        // Wait for the oldest; collect whatever else completed meanwhile.
        let oldest = &in_flight[0].pending;
        assert!(
            oldest.wait_until(oldest.deadline() + MARGIN),
            "seed {seed}: request {} did not complete within its budget",
            in_flight[0].index
        );
        in_flight.retain(|s| match s.pending.outcome() {
            Some(outcome) => {
                outcomes[s.index] = Some(outcome);
                false
            }
            None => true,
        });
    }
    outcomes
        .into_iter()
        .map(|o| o.expect("every request completed"))
        .collect()
}

/// Writes of distinct values to `msr`, each followed by a read of it.
fn writes_and_reads(msr: u32, count: u64, first: u64) -> Vec<Operation> {
    (0..count)
        .flat_map(|i| {
            [
                Operation::WriteMsr {
                    msr,
                    value: kernel_address(first + i),
                },
                Operation::ReadMsr { msr },
            ]
        })
        .collect()
}

/// Checks the reads of a [`writes_and_reads`] run against the writes
/// before them; returns how many calls succeeded.
fn check_order(
    operations: &[Operation],
    outcomes: &[Result<u64, pulse::Error>],
    initial: u64,
    seed: u64,
) -> usize {
    // Values a read may return now: the last write that succeeded (or the
    // initial value) and every later write that failed.
    let mut possible = BTreeSet::from([initial]);
    let mut succeeded = 0;
    for (i, (operation, outcome)) in operations.iter().zip(outcomes).enumerate() {
        if let Err(e) = outcome {
            // Only an uncertain outcome is acceptable on this link.
            assert_eq!(
                e.status(),
                Status::TIMEOUT,
                "seed {seed}: call {i} ({operation:?}) failed with {e}"
            );
        }
        succeeded += usize::from(outcome.is_ok());
        match (operation, outcome) {
            (Operation::WriteMsr { value, .. }, Ok(_)) => possible = BTreeSet::from([*value]),
            (Operation::WriteMsr { value, .. }, Err(_)) => {
                possible.insert(*value);
            }
            (Operation::ReadMsr { .. }, Ok(value)) => {
                assert!(
                    possible.contains(value),
                    "seed {seed}: call {i} read {value:#x}, only {possible:x?} can be there"
                );
                possible = BTreeSet::from([*value]);
            }
            _ => {}
        }
    }
    succeeded
}

fn sixty_four_in_flight_through_a_faulty_link(link: Link) {
    const PAIRS: u64 = 200;
    let seed = seed_for("sixty_four_in_flight_through_a_faulty_link");
    let sim = TcpSim::start_on(link);
    let relay = Relay::start(sim.addr, seed);
    let cfg = link.config(&relay.transport(), 80, 6);
    let engine = Engine::open(&cfg).expect("handshake on a clean link");
    let initial = engine.read_msr(IA32_LSTAR).expect("read on a clean link");
    let faults = Faults {
        drop: 0.04,
        corrupt: 0.03,
        duplicate: 0.05,
        delay: 0.05,
        delay_by: Duration::from_millis(15),
        garbage: 0.02,
        garbage_max: 6,
        garbage_fake_header: true,
    };
    relay.set_faults(Dir::Requests, faults);
    relay.set_faults(Dir::Responses, faults);
    let before = handler_stats(&sim.target);

    let operations = writes_and_reads(IA32_LSTAR, PAIRS, 0x4000);
    let outcomes = run_windowed(&engine, &operations, 64, seed);
    let succeeded = check_order(&operations, &outcomes, initial, seed);

    relay.quiesce();
    let after = handler_stats(&sim.target);
    let stats = engine.stats();
    assert!(
        succeeded >= operations.len() * 8 / 10,
        "seed {seed}: only {succeeded} of {} calls succeeded",
        operations.len()
    );
    assert!(
        stats.most_in_flight > 16,
        "seed {seed}: at most {} requests were in flight",
        stats.most_in_flight
    );
    // Each write ran at most once: never more executions than writes.
    let writes = after.writes_executed - before.writes_executed;
    assert!(
        writes <= PAIRS,
        "seed {seed}: {writes} executions of {PAIRS} writes"
    );
    // The faults really happened and were survived the intended way.
    assert!(
        after.replays > before.replays,
        "seed {seed}: nothing resent?"
    );
    assert!(
        after.held > before.held,
        "seed {seed}: nothing arrived early?"
    );
    assert!(stats.retransmissions > 0);
    for dir in [Dir::Requests, Dir::Responses] {
        let c = relay.counters(dir);
        assert!(
            c.dropped > 0 && c.duplicated > 0,
            "seed {seed}: {dir:?} {c:?}"
        );
    }
}

mod plain {
    #[test]
    fn sixty_four_in_flight_through_a_faulty_link() {
        super::sixty_four_in_flight_through_a_faulty_link(super::Link::Plain);
    }
}

mod authenticated {
    #[test]
    fn sixty_four_in_flight_through_a_faulty_link() {
        super::sixty_four_in_flight_through_a_faulty_link(super::Link::Authenticated);
    }
}

#[test]
fn many_threads_mix_synchronous_and_asynchronous_calls() {
    const THREADS: usize = 8;
    const PAIRS: u64 = 60;
    let msrs = [
        IA32_LSTAR,
        IA32_CSTAR,
        IA32_KERNEL_GS_BASE,
        IA32_SYSENTER_ESP,
        IA32_SYSENTER_EIP,
        IA32_FS_BASE,
        IA32_GS_BASE,
        IA32_STAR,
    ];
    let sim = TcpSim::start();
    let engine = Engine::open(&config(&sim.transport(), 1000, 3)).expect("handshake");
    std::thread::scope(|scope| {
        for (t, &msr) in msrs.iter().enumerate().take(THREADS) {
            let engine = &engine;
            scope.spawn(move || {
                let initial = engine.read_msr(msr).expect("read");
                let operations = writes_and_reads(msr, PAIRS, (t as u64 + 1) << 24);
                let outcomes = if t % 2 == 0 {
                    run_windowed(engine, &operations, 16, 0)
                } else {
                    operations
                        .iter()
                        .map(|op| match *op {
                            Operation::WriteMsr { msr, value } => {
                                engine.write_msr(msr, value).map(|()| 0)
                            }
                            Operation::ReadMsr { msr } => engine.read_msr(msr),
                            other => panic!("{other:?}"),
                        })
                        .collect()
                };
                let ok = check_order(&operations, &outcomes, initial, 0);
                assert_eq!(ok, operations.len(), "thread {t}: every call succeeds");
            });
        }
    });
    assert_eq!(engine.stats().handshakes, 1);
}

#[test]
fn dropping_the_engine_completes_requests_in_flight_with_connection_lost() {
    let sim = TcpSim::start();
    let relay = Relay::start(sim.addr, 11);
    let engine = Engine::open(&config(&relay.transport(), 2000, 3)).expect("handshake");
    relay.set_faults(
        Dir::Requests,
        Faults {
            drop: 1.0,
            ..Faults::default()
        },
    );
    let submitter = engine.submitter();
    let pending: Vec<Pending> = (0..10)
        .map(|i| {
            submitter.submit(Operation::WriteMsr {
                msr: IA32_LSTAR,
                value: kernel_address(i),
            })
        })
        .collect();
    assert!(
        pending.iter().all(|p| !p.is_done()),
        "nothing can be answered"
    );
    let (_, elapsed) = timed(|| drop(engine));
    assert!(
        elapsed < Duration::from_millis(500),
        "drop took {elapsed:?}"
    );
    for p in &pending {
        assert!(p.is_done(), "completed by the drop");
        let outcome = p.outcome().expect("an outcome");
        assert_eq!(
            outcome.map_err(|e| e.status()),
            Err(Status::DEVICE_CONNECTION_LOST)
        );
    }
    // The submitter outlives the engine: its requests fail at once.
    let late = submitter.submit(Operation::ReadMsr { msr: IA32_LSTAR });
    assert!(late.is_done());
    assert_eq!(
        late.outcome().expect("an outcome").map_err(|e| e.status()),
        Err(Status::DEVICE_CONNECTION_LOST)
    );
}

#[test]
fn asynchronous_statuses_are_those_of_the_synchronous_calls() {
    let engine = Engine::open(&config("sim?cpus=2&online=1", 1000, 3)).expect("sim");
    let submitter = engine.submitter();
    let cases = [
        Operation::WriteMsr {
            msr: IA32_LSTAR,
            value: kernel_address(5),
        },
        // Non-canonical: #GP.
        Operation::WriteMsr {
            msr: IA32_LSTAR,
            value: 0x0000_8000_0000_0000,
        },
        Operation::ReadMsr { msr: IA32_LSTAR },
        // No such MSR.
        Operation::ReadMsr { msr: 0x4000_0123 },
        Operation::WriteMsrAllCpus {
            msr: IA32_CSTAR,
            value: kernel_address(6),
        },
    ];
    for operation in cases {
        let synchronous = match operation {
            Operation::WriteMsr { msr, value } => engine.write_msr(msr, value).map(|()| 0),
            Operation::ReadMsr { msr } => engine.read_msr(msr),
            Operation::WriteMsrAllCpus { msr, value } => {
                engine.write_msr_all_cpus(msr, value).map(|()| 0)
            }
        };
        let pending = submitter.submit(operation);
        assert!(pending.wait_until(Instant::now() + Duration::from_secs(3)));
        let asynchronous = pending.outcome().expect("completed");
        assert_eq!(
            asynchronous.as_ref().map_err(|e| e.status()),
            synchronous.as_ref().map_err(|e| e.status()),
            "{operation:?}"
        );
        assert_eq!(
            asynchronous.map_err(|e| e.to_string()),
            synchronous.map_err(|e| e.to_string())
        );
    }
}

/// A debuggee that answers wrongly: request 1 with the wrong type, request
/// 2 twice, request 3 not at all but with an answer to a request never
/// sent, the rest properly.
fn misbehaving_debuggee() -> ScriptedServer {
    let mut base = 0u16;
    ScriptedServer::start(Box::new(move |frame| {
        let session = 0x33;
        if frame.kind == kind::HELLO {
            base = frame.seq;
            let ack = Message::HelloAck {
                version: PROTOCOL_VERSION,
                capabilities: 0,
                window: 32,
            };
            return Some(ack.to_frame(session, frame.seq).as_bytes().to_vec());
        }
        let ok = Message::WriteAck {
            status: WireStatus::Ok,
        };
        let answer = |m: Message, seq: u16| m.to_frame(session, seq).as_bytes().to_vec();
        match frame.seq.wrapping_sub(base) {
            1 => Some(answer(
                Message::ReadAck {
                    status: WireStatus::Ok,
                    value: 7,
                },
                frame.seq,
            )),
            2 => Some([answer(ok, frame.seq), answer(ok, frame.seq)].concat()),
            3 => Some(answer(ok, frame.seq.wrapping_add(100))),
            _ => Some(answer(ok, frame.seq)),
        }
    }))
}

#[test]
fn a_wrong_answer_fails_only_the_request_it_answers() {
    let server = misbehaving_debuggee();
    let engine = Engine::open(&config(&server.transport(), 150, 2)).expect("handshake");
    let submitter = engine.submitter();
    let pending: Vec<Pending> = (0..6)
        .map(|i| {
            submitter.submit(Operation::WriteMsr {
                msr: IA32_LSTAR,
                value: kernel_address(i),
            })
        })
        .collect();
    let statuses: Vec<Result<(), Status>> = pending
        .iter()
        .map(|p| {
            assert!(p.wait_until(p.deadline() + MARGIN));
            p.outcome()
                .expect("completed")
                .map(|_| ())
                .map_err(|e| e.status())
        })
        .collect();
    assert_eq!(
        statuses,
        [
            Err(Status::INVALID_PACKET), // a ReadAck for a write
            Ok(()),                      // answered twice: the copy is ignored
            Err(Status::TIMEOUT),        // never answered; the stray answer is ignored
            // Answered at once, long before request 3 timed out.
            Ok(()),
            Ok(()),
            Ok(()),
        ]
    );
    assert!(
        engine.stats().unmatched_answers >= 2,
        "{:?}",
        engine.stats()
    );
}

#[test]
fn a_submitter_that_outlives_its_engine_does_not_hold_the_serial_device() {
    let sim = PtySim::start();
    let cfg = config(&sim.transport(), 1000, 3);
    let engine = Engine::open(&cfg).expect("first engine");
    let submitter = engine.submitter();
    drop(engine);
    // The device is free at once although a submitter of the old engine
    // lives on (a serial port is opened exclusively).
    let second = Engine::open(&cfg).expect("a second engine on the same device");
    assert_eq!(second.write_msr(IA32_LSTAR, kernel_address(9)), Ok(()));
    let late = submitter.submit(Operation::ReadMsr { msr: IA32_LSTAR });
    assert_eq!(
        late.outcome().map(|r| r.map_err(|e| e.status())),
        Some(Err(Status::DEVICE_CONNECTION_LOST))
    );
}

#[test]
fn a_peer_that_hangs_up_at_once_is_connection_lost_not_a_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    // The hang-up may come before or after the Hello is sent: both ways
    // the handshake ends with the lost link, at once.
    for i in 0..40 {
        let (result, elapsed) = timed(|| Engine::open(&config(&format!("tcp:{addr}"), 1000, 3)));
        assert_eq!(
            result.map(|_| ()).map_err(|e| e.status()),
            Err(Status::DEVICE_CONNECTION_LOST),
            "attempt {i}"
        );
        assert!(
            elapsed < Duration::from_millis(500),
            "attempt {i}: {elapsed:?}"
        );
    }
}
