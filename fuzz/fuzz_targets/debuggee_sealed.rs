//! hv-stub's authenticated request path: a debuggee with a key, a client
//! that holds it (handshakes, sealed requests at positions the input
//! picks, retransmissions) and an attacker without it (arbitrary frames,
//! recorded frames replayed, bit-flipped with a valid CRC, or moved to
//! another SEQ or session), interleaved as the input says. Nothing may
//! panic, and the debuggee may execute no more requests than the distinct
//! (handshake, position) pairs the client sealed a request for.
#![no_main]

use std::collections::BTreeSet;

use hv_stub::simulated::SimTarget;
use hv_stub::CpuCaps;
use libfuzzer_sys::fuzz_target;
use pulse_proto::auth::Direction;
use pulse_proto::message::{kind, Message};
use pulse_proto::{encode_frame, Decoder, Psk, RawFrame, SessionKeys, NO_SESSION};

const KEY: Psk = Psk::new([0x42; 32]);

struct Client {
    /// (session, AuthHello SEQ, keys) of the client's handshakes answered.
    sessions: Vec<(u8, u16, SessionKeys)>,
}

fn frames_of(bytes: &[u8]) -> Vec<RawFrame> {
    let mut out = Vec::new();
    Decoder::new().feed(bytes, |f| out.push(f));
    out
}

fuzz_target!(|data: &[u8]| {
    let mut target = SimTarget::new(CpuCaps::MODERN, 0);
    target.stub_mut().set_key(KEY);
    let mut client = Client {
        sessions: Vec::new(),
    };
    let mut recorded: Vec<RawFrame> = Vec::new();
    // (handshake, position) of every request the client sealed.
    let mut sealed: BTreeSet<(usize, u16)> = BTreeSet::new();
    let mut rest = data;
    while rest.len() >= 4 {
        let (head, tail) = rest.split_at(4);
        rest = tail;
        let mut answers = Vec::new();
        match head[0] % 5 {
            // The client's handshake with a nonce and SEQ from the input.
            0 => {
                let mut nonce = [0u8; 16];
                nonce[..3].copy_from_slice(&head[1..4]);
                let seq = u16::from_le_bytes([head[1], head[2]]);
                let hello = Message::AuthHello {
                    version: pulse_proto::PROTOCOL_VERSION,
                    nonce,
                };
                let frame = hello.to_frame(NO_SESSION, seq);
                recorded.extend(frames_of(frame.as_bytes()));
                target.receive(frame.as_bytes(), |b| answers.extend_from_slice(b));
                for ack in frames_of(&answers) {
                    if ack.kind != kind::AUTH_HELLO_ACK || ack.seq != seq || ack.len < 16 {
                        continue;
                    }
                    let mut theirs = [0u8; 16];
                    theirs.copy_from_slice(&ack.payload()[..16]);
                    let keys = SessionKeys::derive(&KEY, &nonce, &theirs);
                    if keys.open(Direction::ToClient, &ack, 0).is_some() {
                        client.sessions.push((ack.session, seq, keys));
                    }
                }
            }
            // A sealed request of one of the client's sessions.
            1 | 2 => {
                if client.sessions.is_empty() {
                    continue;
                }
                let which = usize::from(head[1]) % client.sessions.len();
                let (session, base, keys) = client.sessions[which];
                let k = u16::from(head[2] % 8) + 1;
                let request = if head[3] & 1 == 0 {
                    Message::WriteMsr {
                        cpu: head[3] >> 6,
                        msr: 0xC000_0082,
                        value: 0xFFFF_F800_0000_0000 | u64::from(head[3]) << 4,
                    }
                } else {
                    Message::ReadMsr {
                        cpu: head[3] >> 6,
                        msr: 0xC000_0082,
                    }
                };
                let frame = keys.seal(
                    Direction::ToDebuggee,
                    &request,
                    session,
                    base.wrapping_add(k),
                    k,
                );
                sealed.insert((which, k));
                recorded.extend(frames_of(frame.as_bytes()));
                target.receive(frame.as_bytes(), |_| {});
            }
            // A recorded frame again, or changed (valid CRC).
            3 => {
                if recorded.is_empty() {
                    continue;
                }
                let f = recorded[usize::from(head[1]) % recorded.len()];
                let mut payload = f.payload().to_vec();
                let (mut session, mut seq, mut frame_kind) = (f.session, f.seq, f.kind);
                match head[2] % 5 {
                    0 => {}
                    1 if !payload.is_empty() => {
                        let at = usize::from(head[3]) % payload.len();
                        payload[at] ^= 1 << (head[3] % 8);
                    }
                    2 => seq = seq.wrapping_add(u16::from(head[3])),
                    3 => session = session.wrapping_add(head[3]),
                    _ => frame_kind = head[3],
                }
                let frame = encode_frame(frame_kind, session, seq, &payload);
                target.receive(frame.as_bytes(), |_| {});
            }
            // Arbitrary attacker bytes: a frame with a valid CRC.
            _ => {
                let len = usize::from(head[3] % 30).min(rest.len());
                let (payload, tail) = rest.split_at(len);
                rest = tail;
                let frame = encode_frame(head[1] % 8, head[2], u16::from(head[3]) << 8, payload);
                target.receive(frame.as_bytes(), |_| {});
            }
        }
    }
    let stats = target.stub().stats();
    assert!(
        stats.writes_executed + stats.reads_executed <= sealed.len() as u64,
        "{stats:?}, {} sealed positions",
        sealed.len()
    );
    assert_eq!(target.last_entry_failure(), None);
});
