//! The request handler's session rules (docs/PROTOCOL.md section 5): a
//! session runs its requests in order, holding early ones inside the
//! window, so no replay is executed twice however many requests came after
//! it; sessions are random and not
//! reissued while a client may still hold one; the newest handshake takes
//! over; a quiet line drops a partial frame.

use hv_stub::msr::index::{IA32_LSTAR, IA32_SYSENTER_CS};
use hv_stub::{CpuCaps, SoftVmx, Stub, WINDOW};
use pulse_proto::message::{kind, Message, NakReason, WireStatus};
use pulse_proto::{Decoder, FrameBuf, RawFrame, NO_SESSION, PROTOCOL_VERSION};

fn new_stub(entropy: u64) -> Stub<SoftVmx> {
    Stub::new(SoftVmx::new(CpuCaps::MODERN), 0, entropy)
}

fn raw(frame: &FrameBuf) -> RawFrame {
    let mut decoder = Decoder::new();
    let mut out = None;
    decoder.feed(frame.as_bytes(), |f| out = Some(f));
    out.expect("a whole frame")
}

/// Every answer `frame` causes, in the order they were sent.
fn answers(stub: &mut Stub<SoftVmx>, frame: &FrameBuf) -> Vec<(RawFrame, Message)> {
    let mut out = Vec::new();
    stub.handle(&raw(frame), |bytes| {
        let mut decoder = Decoder::new();
        decoder.feed(bytes, |f| {
            out.push((f, Message::parse(&f).expect("a well-formed answer")))
        });
    });
    out
}

/// The one answer `frame` causes, if any.
fn answer(stub: &mut Stub<SoftVmx>, frame: &FrameBuf) -> Option<(RawFrame, Message)> {
    let mut all = answers(stub, frame);
    assert!(all.len() <= 1, "one frame, several answers: {all:?}");
    all.pop()
}

fn hello(nonce: u32) -> Message {
    Message::Hello {
        version: PROTOCOL_VERSION,
        nonce,
    }
}

/// Opens a session with base `base`; returns its number.
fn open(stub: &mut Stub<SoftVmx>, nonce: u32, base: u16) -> u8 {
    let (f, m) = answer(stub, &hello(nonce).to_frame(NO_SESSION, base)).expect("HelloAck");
    assert!(matches!(m, Message::HelloAck { .. }), "{m:?}");
    assert_ne!(f.session, NO_SESSION);
    f.session
}

fn write(msr: u32, value: u64) -> Message {
    Message::WriteMsr { cpu: 0, msr, value }
}

fn nak(reason: NakReason) -> Message {
    Message::Nak { reason }
}

const OK: Message = Message::WriteAck {
    status: WireStatus::Ok,
};

#[test]
fn a_write_replayed_after_any_number_of_newer_requests_is_never_executed_again() {
    let mut stub = new_stub(1);
    let base = 0x4000;
    let s = open(&mut stub, 7, base);
    let w1 = write(IA32_LSTAR, 0xFFFF_F800_0000_1111).to_frame(s, base.wrapping_add(1));
    assert_eq!(answer(&mut stub, &w1).map(|a| a.1), Some(OK));
    let read = Message::ReadMsr {
        cpu: 0,
        msr: IA32_LSTAR,
    };
    // 2^15 - 1, 2^15, 2^15 + 1 (where a serial-number window lets it in
    // again) and up to the end of the session's sequence space.
    let checkpoints = [32_767u32, 32_768, 32_769, 40_000, 65_533];
    let mut k = 1u32;
    for target in checkpoints {
        while k < 1 + target {
            k += 1;
            let seq = base.wrapping_add(k as u16);
            let (_, m) = answer(&mut stub, &read.to_frame(s, seq)).expect("ReadAck");
            assert!(matches!(m, Message::ReadAck { .. }), "request {k}: {m:?}");
        }
        let writes = stub.stats().writes_executed;
        assert_eq!(
            answer(&mut stub, &w1),
            None,
            "after {target} newer requests"
        );
        assert_eq!(stub.stats().writes_executed, writes, "after {target} newer");
        // Nor did it move the session back: the next request still runs.
        let next = write(IA32_LSTAR, 0xFFFF_F800_0000_2222 + u64::from(k));
        k += 1;
        let seq = base.wrapping_add(k as u16);
        assert_eq!(
            answer(&mut stub, &next.to_frame(s, seq)).map(|a| a.1),
            Some(OK)
        );
    }
    assert_eq!(k, 65_535, "the session's last request");
    // The session is used up: SEQ base + 65536 = base is not a request.
    let writes = stub.stats().writes_executed;
    let wrapped = write(IA32_LSTAR, 0xFFFF_F800_0000_3333).to_frame(s, base);
    assert_eq!(answer(&mut stub, &wrapped), None);
    assert_eq!(answer(&mut stub, &w1), None);
    assert_eq!(stub.stats().writes_executed, writes);
}

#[test]
fn requests_run_in_order_early_ones_wait_retransmissions_get_the_kept_answer() {
    let mut stub = new_stub(2);
    let base = 0xFFF0; // the session's SEQs wrap past 0xFFFF: positions do not
    let s = open(&mut stub, 9, base);
    let seq = |k: u16| base.wrapping_add(k);
    let w = |k: u16| write(IA32_LSTAR, 0xFFFF_F800_0000_0000 + u64::from(k)).to_frame(s, seq(k));
    let lstar = |stub: &mut Stub<SoftVmx>| stub.backend().live_msr(IA32_LSTAR);
    assert_eq!(answer(&mut stub, &w(1)).map(|a| a.1), Some(OK));
    assert_eq!(answer(&mut stub, &w(1)).map(|a| a.1), Some(OK));
    assert_eq!(stub.stats().writes_executed, 1);
    assert_eq!(stub.stats().replays, 1);
    // Requests 4 and 3 before request 2: held, not executed, not answered.
    assert_eq!(answer(&mut stub, &w(4)), None);
    assert_eq!(answer(&mut stub, &w(3)), None);
    assert_eq!(answer(&mut stub, &w(3)), None, "a held request resent");
    assert_eq!(stub.stats().writes_executed, 1);
    assert_eq!(stub.stats().held, 2);
    assert_eq!(lstar(&mut stub), Some(0xFFFF_F800_0000_0001));
    // Request 2 arrives: 2, 3 and 4 run in that order, each answered once.
    let all = answers(&mut stub, &w(2));
    let seqs: Vec<u16> = all.iter().map(|(f, _)| f.seq).collect();
    assert_eq!(seqs, [seq(2), seq(3), seq(4)]);
    assert!(all.iter().all(|(f, m)| *m == OK && f.session == s));
    assert_eq!(stub.stats().writes_executed, 4);
    assert_eq!(lstar(&mut stub), Some(0xFFFF_F800_0000_0004));
    // Each of them is answered again from the kept answers, never re-run.
    for k in 1..=4 {
        assert_eq!(answer(&mut stub, &w(k)).map(|a| a.1), Some(OK), "k {k}");
    }
    assert_eq!(stub.stats().writes_executed, 4);
    // A different request reusing a SEQ that ran is not a retransmission.
    let other = write(IA32_LSTAR, 0xFFFF_F800_0000_0009).to_frame(s, seq(2));
    assert_eq!(answer(&mut stub, &other), None);
    // The window's far edge: request 4 + WINDOW is held, one further is
    // beyond the window and refused.
    let edge = 4 + u16::from(WINDOW);
    assert_eq!(answer(&mut stub, &w(edge)), None);
    let (f, m) = answer(&mut stub, &w(edge + 1)).expect("a Nak");
    assert_eq!(m, nak(NakReason::OutOfSequence));
    assert_eq!((f.session, f.seq), (s, seq(edge + 1)));
    assert_eq!(stub.stats().out_of_sequence, 1);
    for k in 5..edge - 1 {
        assert_eq!(answer(&mut stub, &w(k)).map(|a| a.1), Some(OK), "k {k}");
    }
    let last_two: Vec<u16> = answers(&mut stub, &w(edge - 1))
        .iter()
        .map(|(f, _)| f.seq)
        .collect();
    assert_eq!(
        last_two,
        [seq(edge - 1), seq(edge)],
        "the held edge ran next"
    );
    assert_eq!(stub.stats().writes_executed, u64::from(edge));
    // Answers are kept for the last WINDOW requests only: request 4 is
    // older than that now and is dropped, not run again.
    let next = edge + 1;
    assert_eq!(
        answer(&mut stub, &w(next - u16::from(WINDOW))).map(|a| a.1),
        Some(OK)
    );
    assert_eq!(answer(&mut stub, &w(next - u16::from(WINDOW) - 1)), None);
    assert_eq!(stub.stats().writes_executed, u64::from(edge));
    // A malformed next request is answered and kept like any other.
    let bad = pulse_proto::encode_frame(kind::WRITE_MSR, s, seq(next), &[1, 2, 3]);
    for _ in 0..2 {
        assert_eq!(
            answer(&mut stub, &bad).map(|a| a.1),
            Some(nak(NakReason::BadPayload))
        );
    }
    assert_eq!(answer(&mut stub, &w(next + 1)).map(|a| a.1), Some(OK));
}

#[test]
fn sessions_are_random_and_not_reissued_for_128_handshakes() {
    let mut stub = new_stub(0x1234_5678_9ABC_DEF0);
    let mut issued = Vec::new();
    for i in 0..2000u32 {
        issued.push(open(&mut stub, i, (i as u16).wrapping_mul(7919)));
    }
    for (i, window) in issued.windows(129).enumerate() {
        let last = window[128];
        assert!(
            !window[..128].contains(&last),
            "handshake {}: session {last} was issued again within 128 handshakes",
            i + 128
        );
    }
    // Not a counter: successive numbers differ by one only by chance.
    let steps = issued
        .windows(2)
        .filter(|w| w[1] == w[0].wrapping_add(1))
        .count();
    assert!(steps < issued.len() / 20, "{steps} sequential steps");
    // Every nonzero number comes up.
    let mut seen = [false; 256];
    for &s in &issued {
        seen[usize::from(s)] = true;
    }
    assert!(!seen[0]);
    assert_eq!(seen.iter().filter(|&&b| b).count(), 255);
    // Different entropy, different sessions.
    let mut a = new_stub(1);
    let mut b = new_stub(2);
    let from_a: Vec<u8> = (0..8).map(|i| open(&mut a, i, 100 + i as u16)).collect();
    let from_b: Vec<u8> = (0..8).map(|i| open(&mut b, i, 100 + i as u16)).collect();
    assert_ne!(from_a, from_b);
}

#[test]
fn frames_of_earlier_sessions_are_never_executed_again() {
    // A client per session, each with a random base as libpulse picks it;
    // after every handshake, every write ever executed is replayed.
    let mut stub = new_stub(42);
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut executed: Vec<FrameBuf> = Vec::new();
    for client in 0..600u32 {
        let base = next() as u16;
        let s = open(&mut stub, client, base);
        let writes_before = stub.stats().writes_executed;
        for old in &executed {
            if let Some((f, m)) = answer(&mut stub, old) {
                // Only a refusal: the old session is gone.
                assert!(matches!(m, Message::Nak { .. }), "client {client}: {m:?}");
                assert_eq!(f.kind, kind::NAK);
            }
        }
        assert_eq!(
            stub.stats().writes_executed,
            writes_before,
            "client {client}: a frame of an earlier session was executed"
        );
        let w = write(IA32_LSTAR, 0xFFFF_F800_0000_0000 | u64::from(client) << 4);
        let frame = w.to_frame(s, base.wrapping_add(1));
        assert_eq!(answer(&mut stub, &frame).map(|a| a.1), Some(OK));
        executed.push(frame);
    }
}

#[test]
fn the_newest_handshake_takes_over_and_the_old_client_is_told() {
    let mut stub = new_stub(3);
    let first = open(&mut stub, 1, 0x100);
    let w = write(IA32_SYSENTER_CS, 0x10);
    assert_eq!(
        answer(&mut stub, &w.to_frame(first, 0x101)).map(|a| a.1),
        Some(OK)
    );
    let second = open(&mut stub, 2, 0x9000);
    assert_ne!(first, second);
    let writes = stub.stats().writes_executed;
    let (f, m) = answer(&mut stub, &w.to_frame(first, 0x102)).expect("a Nak");
    assert_eq!(m, nak(NakReason::SessionTakenOver));
    assert_eq!((f.session, f.seq), (first, 0x102));
    assert_eq!(stub.stats().writes_executed, writes);
    // A session this debuggee never issued is just a bad session.
    let unknown = (1..=255u8).find(|&n| n != first && n != second).unwrap();
    let (_, m) = answer(&mut stub, &w.to_frame(unknown, 0x1)).expect("a Nak");
    assert_eq!(m, nak(NakReason::BadSession));
    // The second client carries on.
    assert_eq!(
        answer(&mut stub, &w.to_frame(second, 0x9001)).map(|a| a.1),
        Some(OK)
    );
}

#[test]
fn a_late_copy_of_an_earlier_hello_does_not_take_the_session() {
    let mut stub = new_stub(4);
    let old_hello = hello(5).to_frame(NO_SESSION, 0x2000);
    let old = open(&mut stub, 5, 0x2000);
    let current = open(&mut stub, 5, 0x7000);
    assert_ne!(old, current);
    assert_eq!(answer(&mut stub, &old_hello), None);
    assert_eq!(stub.session(), Some(current));
    assert_eq!(stub.stats().handshakes, 2);
    // The current Hello again is a retransmission: the same HelloAck.
    let again = hello(5).to_frame(NO_SESSION, 0x7000);
    let (f, _) = answer(&mut stub, &again).expect("HelloAck again");
    assert_eq!(f.session, current);
    assert_eq!(stub.stats().handshakes, 2);
}

#[test]
fn a_quiet_line_drops_the_partial_frame_a_client_left_behind() {
    let hello_bytes = hello(6).to_frame(NO_SESSION, 0x3000);
    // Without the hook: `a5 20` promises a 40-byte frame and swallows the
    // next client's Hello.
    let mut stub_a = new_stub(5);
    let mut answers = 0;
    stub_a.feed(&[0xA5, 0x20], |_| answers += 1);
    stub_a.feed(hello_bytes.as_bytes(), |_| answers += 1);
    assert_eq!(answers, 0);
    // With it, the Hello is answered at once.
    let mut stub_b = new_stub(5);
    let mut replies = Vec::new();
    stub_b.feed(&[0xA5, 0x20], |r| replies.push(r.to_vec()));
    assert_eq!(stub_b.pending_bytes(), 2);
    stub_b.line_idle();
    assert_eq!(stub_b.pending_bytes(), 0);
    assert_eq!(stub_b.stats().partial_frames_dropped, 1);
    stub_b.feed(hello_bytes.as_bytes(), |r| replies.push(r.to_vec()));
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0][2], kind::HELLO_ACK);
    // A quiet line with nothing held changes nothing.
    stub_b.line_idle();
    assert_eq!(stub_b.stats().partial_frames_dropped, 1);
}
