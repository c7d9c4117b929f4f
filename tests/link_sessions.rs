//! Tier 2: one debuggee, several clients, and sessions over real links
//! (docs/PROTOCOL.md sections 5 and 6): a second client is served at once
//! and the first is told its session was taken over; an idle client, one
//! that never reads, or one that left half a frame behind costs the others
//! nothing; the engine opens a new session before its sequence numbers
//! would wrap and after an outage.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hv_stub::msr::index::*;
use pulse::{Engine, EngineConfig, Status};
use pulse_proto::message::Message;
use pulse_proto::{NO_SESSION, PROTOCOL_VERSION};
use support::relay::{Dir, Faults, Relay};
use support::*;

/// Far below one attempt's timeout (1 s): an answer that needed a
/// retransmission, or a server that waited for another client, misses it.
const PROMPT: Duration = Duration::from_millis(400);

fn patient(transport: &str) -> EngineConfig {
    config(transport, 1000, 3)
}

#[test]
fn a_second_client_is_served_at_once_and_the_first_is_told_it_lost_the_session() {
    let sim = TcpSim::start();
    let first = Engine::open(&patient(&sim.transport())).expect("first client");
    assert_eq!(first.write_msr(IA32_LSTAR, kernel_address(1)), Ok(()));
    // The first client stays connected and idle.
    let (second, took) = timed(|| Engine::open(&patient(&sim.transport())));
    let second = second.expect("second client served while the first idles");
    assert!(took < PROMPT, "the second handshake took {took:?}");
    assert_eq!(second.read_msr(IA32_LSTAR), Ok(kernel_address(1)));
    assert_eq!(second.write_msr(IA32_LSTAR, kernel_address(2)), Ok(()));
    // The first client's next call is refused at once, not executed.
    let writes = handler_stats(&sim.target).writes_executed;
    let (result, took) = timed(|| first.write_msr(IA32_LSTAR, kernel_address(3)));
    assert_eq!(
        result.map_err(|e| e.status()),
        Err(Status::DEVICE_CONNECTION_LOST)
    );
    assert!(took < PROMPT, "the refusal took {took:?}");
    assert_eq!(handler_stats(&sim.target).writes_executed, writes);
    assert_eq!(
        first.read_msr(IA32_LSTAR).map_err(|e| e.status()),
        Err(Status::DEVICE_CONNECTION_LOST)
    );
    // ... and it does not take the session back.
    assert_eq!(second.read_msr(IA32_LSTAR), Ok(kernel_address(2)));
    assert_eq!(handler_stats(&sim.target).handshakes, 2);
}

#[test]
fn a_client_that_never_reads_does_not_stall_the_others() {
    let sim = TcpSim::start();
    let mut hog = TcpStream::connect(sim.addr).expect("connect");
    hog.set_nodelay(true).unwrap();
    // A session of its own, then the same request over and over, each
    // answered (from the reply cache) into a socket nobody reads.
    let hello = Message::Hello {
        version: PROTOCOL_VERSION,
        nonce: 1,
    };
    hog.write_all(hello.to_frame(NO_SESSION, 0x100).as_bytes())
        .unwrap();
    let mut ack = [0u8; 13];
    hog.read_exact(&mut ack).unwrap();
    let session = ack[3];
    let read = Message::ReadMsr {
        cpu: 0,
        msr: IA32_LSTAR,
    }
    .to_frame(session, 0x101);
    let burst: Vec<u8> = read.as_bytes().repeat(4096);
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let flood = std::thread::spawn(move || {
        let mut sent = 0usize;
        hog.set_write_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        while !flag.load(Ordering::Relaxed) {
            match hog.write(&burst) {
                Ok(n) => sent += n,
                Err(_) => {
                    // Our own buffers are full too, or the server gave up on
                    // us: either way the server is no longer being read.
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        sent
    });
    // Give the flood time to fill every buffer between it and the server.
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..3 {
        let (engine, took) = timed(|| Engine::open(&patient(&sim.transport())));
        let engine = engine.unwrap_or_else(|e| panic!("client {i} during the flood: {e}"));
        assert!(took < PROMPT, "client {i}'s handshake took {took:?}");
        let (result, took) = timed(|| engine.write_msr(IA32_CSTAR, kernel_address(i)));
        assert_eq!(result, Ok(()), "client {i}");
        assert!(took < PROMPT, "client {i}'s write took {took:?}");
    }
    stop.store(true, Ordering::Relaxed);
    let sent = flood.join().unwrap();
    assert!(sent > 1 << 20, "the flood sent only {sent} bytes");
}

#[test]
fn half_a_frame_left_on_a_tcp_connection_does_not_reach_the_next_client() {
    let sim = TcpSim::start();
    let mut leftover = TcpStream::connect(sim.addr).expect("connect");
    // A frame header promising 32 payload bytes, then nothing.
    leftover.write_all(&[0xA5, 0x20]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let (engine, took) = timed(|| Engine::open(&patient(&sim.transport())));
    engine.expect("handshake");
    assert!(
        took < PROMPT,
        "the handshake took {took:?}: a Hello was swallowed"
    );
    drop(leftover);
}

#[test]
fn half_a_frame_left_on_a_serial_line_is_dropped_once_the_line_is_quiet() {
    let sim = PtySim::start();
    {
        let mut line = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&sim.path)
            .expect("open the pty");
        line.write_all(&[0xA5, 0x20]).unwrap();
        line.flush().unwrap();
    }
    // Longer than hv-stub-sim's LINE_QUIET.
    std::thread::sleep(hv_stub_sim::LINE_QUIET * 3);
    let (engine, took) = timed(|| Engine::open(&patient(&sim.transport())));
    let engine = engine.expect("handshake");
    assert!(
        took < PROMPT,
        "the handshake took {took:?}: a Hello was swallowed"
    );
    assert_eq!(engine.write_msr(IA32_LSTAR, kernel_address(9)), Ok(()));
    assert_eq!(handler_stats(&sim.target).partial_frames_dropped, 1);
}

#[test]
fn an_engine_opens_a_new_session_before_its_sequence_numbers_would_wrap() {
    // 65535 requests fit in a session (the Hello is request 0); the engine
    // makes a few more calls than that on the in-process debuggee.
    const CALLS: u32 = 65_535 + 5;
    let engine = Engine::open(&config("sim", 1000, 3)).expect("sim");
    let target = engine.sim_target().unwrap();
    for i in 0..CALLS {
        let value = kernel_address(u64::from(i));
        assert_eq!(engine.write_msr(IA32_LSTAR, value), Ok(()), "call {i}");
    }
    let stats = target.lock().stub().stats();
    assert_eq!(stats.handshakes, 2, "one new session after 65535 requests");
    assert_eq!(engine.stats().handshakes, 2);
    assert_eq!(stats.writes_executed, u64::from(CALLS));
    assert_eq!(stats.naks, 0);
    assert_eq!(
        engine.read_msr(IA32_LSTAR),
        Ok(kernel_address(u64::from(CALLS - 1)))
    );
}

#[test]
fn after_an_outage_the_next_call_resynchronises_and_nothing_runs_twice() {
    let sim = TcpSim::start();
    let relay = Relay::start(sim.addr, 7);
    let cfg = config(&relay.transport(), 50, 3);
    let engine = Engine::open(&cfg).expect("handshake");
    assert_eq!(engine.write_msr(IA32_LSTAR, kernel_address(1)), Ok(()));
    relay.set_faults(
        Dir::Requests,
        Faults {
            drop: 1.0,
            ..Faults::default()
        },
    );
    for i in 0..5 {
        assert_eq!(
            engine
                .write_msr(IA32_LSTAR, kernel_address(100 + i))
                .map_err(|e| e.status()),
            Err(Status::TIMEOUT)
        );
    }
    relay.set_faults(Dir::Requests, Faults::default());
    let before = handler_stats(&sim.target);
    let start = Instant::now();
    assert_eq!(engine.write_msr(IA32_LSTAR, kernel_address(2)), Ok(()));
    assert!(start.elapsed() < budget(&cfg));
    let after = handler_stats(&sim.target);
    // The timed-out requests may never have arrived (the debuggee would
    // hold later ones for them): a new session first, nothing refused, and
    // one execution.
    assert_eq!(after.out_of_sequence - before.out_of_sequence, 0);
    assert_eq!(after.handshakes - before.handshakes, 1);
    assert_eq!(after.writes_executed - before.writes_executed, 1);
    assert_eq!(engine.read_msr(IA32_LSTAR), Ok(kernel_address(2)));
    // The first session, then a new one tried by each call after the first
    // timeout (calls 2 to 5, lost too), and the one that succeeded.
    assert_eq!(engine.stats().handshakes, 1 + 4 + 1);
}
