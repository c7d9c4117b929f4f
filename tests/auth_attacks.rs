//! An attacker on an authenticated link (docs/SECURITY.md): it records a
//! client's frames through a relay, then replays them (in order, reversed,
//! within the session, after the session was replaced, and after the
//! client renewed its session past 65 536 requests), flips their bits
//! (with a valid CRC, so they reach the authentication check), and injects
//! frames for every session number. Nothing it sends is ever executed, it
//! gets no answer but byte-for-byte copies of answers already on the wire,
//! and every call of the client ends within its bound. (Faults on the line
//! itself, including reordering, are the fault campaign's, which runs over
//! an authenticated link too: tests/fault_relay.rs.)

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use hv_stub::msr::index::*;
use pulse::{Engine, EngineConfig, Status};
use pulse_proto::auth::Direction;
use pulse_proto::message::{kind, Message};
use pulse_proto::{encode_frame, Decoder, Psk, RawFrame, SessionKeys};
use support::relay::{Dir, Relay};
use support::*;

/// Slack for scheduling on a loaded two-core machine.
const MARGIN: Duration = Duration::from_millis(150);

/// Sends `frames` to the debuggee on a connection of the attacker's own
/// and returns the frames it answers with.
fn inject(sim: &TcpSim, frames: &[RawFrame]) -> Vec<Vec<u8>> {
    let mut stream = TcpStream::connect(sim.addr).unwrap();
    for f in frames {
        stream.write_all(&frame_bytes(f)).unwrap();
    }
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut decoder = Decoder::new();
    let mut answers = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        decoder.feed(&buf[..n], |f| answers.push(frame_bytes(&f)));
    }
    answers
}

/// A call of the client, checked against its bound.
fn bounded<T>(cfg: &EngineConfig, call: impl FnOnce() -> T) -> T {
    let (out, elapsed) = timed(call);
    assert!(elapsed <= budget(cfg) + MARGIN, "a call took {elapsed:?}");
    out
}

/// Every copy of `frame` with one bit of its header or payload flipped,
/// re-encoded with a valid CRC.
fn bit_flips(frame: &RawFrame) -> Vec<RawFrame> {
    let mut out = Vec::new();
    let mut decode = |bytes: &[u8]| {
        Decoder::new().feed(bytes, |f| out.push(f));
    };
    for bit in 0..usize::from(frame.len) * 8 {
        let mut payload = frame.payload().to_vec();
        payload[bit / 8] ^= 1 << (bit % 8);
        decode(encode_frame(frame.kind, frame.session, frame.seq, &payload).as_bytes());
    }
    for flip in 0..8 {
        decode(
            encode_frame(
                frame.kind,
                frame.session ^ 1 << flip,
                frame.seq,
                frame.payload(),
            )
            .as_bytes(),
        );
        decode(
            encode_frame(
                frame.kind,
                frame.session,
                frame.seq ^ 1 << flip,
                frame.payload(),
            )
            .as_bytes(),
        );
        decode(
            encode_frame(
                frame.kind ^ 1 << flip,
                frame.session,
                frame.seq,
                frame.payload(),
            )
            .as_bytes(),
        );
    }
    out
}

fn executed(sim: &TcpSim) -> u64 {
    let stats = handler_stats(&sim.target);
    stats.writes_executed + stats.reads_executed
}

#[test]
fn recorded_altered_and_guessed_frames_are_never_executed() {
    let sim = TcpSim::start_on(Link::Authenticated);
    let relay = Relay::start(sim.addr, seed_for("auth_attacks"));
    let cfg = Link::Authenticated.config(&relay.transport(), 500, 3);
    let engine = Engine::open(&cfg).expect("authenticated client");
    for i in 0..20 {
        bounded(&cfg, || engine.write_msr(IA32_LSTAR, kernel_address(i))).unwrap();
    }
    relay.quiesce();
    let recorded = relay.delivered(Dir::Requests);
    let seen: BTreeSet<Vec<u8>> = relay
        .delivered(Dir::Responses)
        .iter()
        .map(frame_bytes)
        .collect();
    assert_eq!(recorded.len(), 21, "the AuthHello and 20 writes");
    assert_eq!(executed(&sim), 20);

    // Replays within the session, in order and reversed: nothing runs;
    // the only answers are copies of answers the line already carried
    // (the handshake's and the last request's, from the reply cache).
    let mut reversed = recorded.clone();
    reversed.reverse();
    for frames in [&recorded, &reversed] {
        for answer in inject(&sim, frames) {
            assert!(seen.contains(&answer), "a new answer: {answer:02x?}");
        }
    }
    assert_eq!(executed(&sim), 20);

    // Every single-bit change of every recorded request: dropped unanswered.
    let dropped_before = handler_stats(&sim.target).unauthenticated_dropped;
    let flipped: Vec<RawFrame> = recorded
        .iter()
        .filter(|f| f.kind == kind::WRITE_MSR)
        .flat_map(bit_flips)
        .filter(|f| !recorded.contains(f))
        .collect();
    assert!(flipped.len() > 20 * 8 * 21);
    let answers = inject(&sim, &flipped);
    assert!(
        answers.is_empty(),
        "answered altered frames: {answers:02x?}"
    );
    assert_eq!(executed(&sim), 20);
    // The debuggee may still be working through the frames after the
    // connection went quiet (a loaded machine): give it time to finish.
    let finish_by = Instant::now() + Duration::from_secs(10);
    let dropped = loop {
        let dropped = handler_stats(&sim.target).unauthenticated_dropped - dropped_before;
        if dropped >= flipped.len() as u64 * 9 / 10 || Instant::now() > finish_by {
            break dropped;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // A flip of SESSION or SEQ may name a frame the debuggee drops as
    // stale before checking it; everything else fails authentication.
    assert!(
        dropped >= flipped.len() as u64 * 9 / 10,
        "{dropped} of {}",
        flipped.len()
    );

    // Guessed sessions: for every session number, plain requests and
    // requests sealed with a key of the attacker's.
    let mut rng = Rng::new(7);
    let guessed_keys = SessionKeys::derive(&Psk::new([9; 32]), &[1; 16], &[2; 16]);
    let mut guesses = Vec::new();
    for session in 0..=255u8 {
        let write = Message::WriteMsr {
            cpu: 0,
            msr: IA32_LSTAR,
            value: 0x4141_4141,
        };
        for _ in 0..4 {
            let seq = rng.next_u64() as u16;
            for frame in [
                write.to_frame(session, seq),
                guessed_keys.seal(Direction::ToDebuggee, &write, session, seq, seq),
            ] {
                Decoder::new().feed(frame.as_bytes(), |f| guesses.push(f));
            }
        }
    }
    let answers = inject(&sim, &guesses);
    assert!(answers.is_empty(), "answered guesses: {answers:02x?}");
    assert_eq!(executed(&sim), 20);
    assert_eq!(
        bounded(&cfg, || engine.read_msr(IA32_LSTAR)),
        Ok(kernel_address(19))
    );

    // Across sessions: a second client with the key takes over; the first
    // session's frames do nothing, and its client is told.
    let second = Engine::open(&Link::Authenticated.config(&sim.transport(), 500, 3)).unwrap();
    second.write_msr(IA32_CSTAR, kernel_address(1)).unwrap();
    let before = executed(&sim);
    for answer in inject(&sim, &recorded) {
        assert!(seen.contains(&answer), "a new answer: {answer:02x?}");
    }
    assert_eq!(executed(&sim), before);
    assert_eq!(
        bounded(&cfg, || engine.write_msr(IA32_LSTAR, 1)).map_err(|e| e.status()),
        Err(Status::DEVICE_CONNECTION_LOST)
    );
    assert_eq!(second.read_msr(IA32_LSTAR), Ok(kernel_address(19)));
}

#[test]
fn frames_of_a_session_renewed_after_65536_requests_are_never_executed_again() {
    let sim = TcpSim::start_on(Link::Authenticated);
    let relay = Relay::start(sim.addr, seed_for("auth_renewal"));
    let cfg = Link::Authenticated.config(&relay.transport(), 1000, 3);
    let engine = Engine::open(&cfg).expect("authenticated client");
    for i in 0..10 {
        bounded(&cfg, || engine.write_msr(IA32_LSTAR, kernel_address(i))).unwrap();
    }
    relay.quiesce();
    let first_session = relay.delivered(Dir::Requests);
    // Use the session up: 65 535 requests after its AuthHello, then the
    // engine opens a new one with new keys.
    for _ in 10..(u32::from(u16::MAX) + 10) {
        bounded(&cfg, || engine.read_msr(IA32_CSTAR)).unwrap();
    }
    assert_eq!(
        engine.stats().handshakes,
        2,
        "a new session after 65 535 requests"
    );
    let stats = handler_stats(&sim.target);
    assert_eq!(stats.handshakes, 2);
    bounded(&cfg, || engine.write_msr(IA32_LSTAR, kernel_address(100))).unwrap();

    // The first session's requests, replayed and bit-flipped: nothing runs.
    let before = executed(&sim);
    // (A changed AuthHello is a new handshake anyone may ask for: the
    // debuggee answers it, and the session it offers stays pending for
    // want of the key; the other test covers that.)
    let mut frames = first_session.clone();
    frames.extend(
        first_session
            .iter()
            .filter(|f| f.kind != kind::AUTH_HELLO)
            .flat_map(bit_flips),
    );
    // Its positions are all behind its last one, and its AuthHello is a
    // late copy of an old handshake: no answer at all.
    let answers = inject(&sim, &frames);
    assert!(answers.is_empty(), "answered: {answers:02x?}");
    assert_eq!(executed(&sim), before);
    assert_eq!(
        bounded(&cfg, || engine.read_msr(IA32_LSTAR)),
        Ok(kernel_address(100))
    );
}
