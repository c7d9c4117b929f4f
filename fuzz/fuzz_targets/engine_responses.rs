//! libpulse's engine against a debuggee that answers whatever the input
//! says: frames crafted around the request just sent (its SEQ and session,
//! or near misses), garbage, silence, a lost link. The status contract must
//! hold whatever arrives:
//! * SUCCESS (and a read's value, and EXCEPTION_GENERAL_PROTECTION) only
//!   when the debuggee delivered that very answer to the request the call
//!   sent last: a foreign answer never completes a call;
//! * only the statuses the API documents;
//! * every call bounded: few sends, and no longer than its budget;
//! * no panic.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use parking_lot::Mutex;
use pulse::transport::{LinkError, Transport};
use pulse::{Engine, Status};
use pulse_proto::message::{kind, Message, WireStatus};
use pulse_proto::{encode_frame, Decoder, RawFrame, MAX_FRAME};

const TIMEOUT: Duration = Duration::from_millis(50);
const ATTEMPTS: u32 = 3;

/// What the scripted debuggee has seen and said, shared with the checks.
#[derive(Default)]
struct Log {
    /// Every frame the engine sent.
    sent: Vec<RawFrame>,
    /// Every byte delivered to the engine.
    delivered: Vec<u8>,
}

struct Script {
    data: Vec<u8>,
    at: usize,
    log: Arc<Mutex<Log>>,
    decoder: Decoder,
}

impl Script {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.data.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let end = (self.at + n).min(self.data.len());
        let out = self.data[self.at..end].to_vec();
        self.at = end;
        out
    }
}

impl Transport for Script {
    fn send(&mut self, bytes: &[u8], _deadline: Instant) -> Result<(), LinkError> {
        let log = &self.log;
        self.decoder.feed(bytes, |f| log.lock().sent.push(f));
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8], _deadline: Instant) -> Result<usize, LinkError> {
        let Some(op) = self.byte() else {
            return Err(LinkError::TimedOut);
        };
        let out = match op % 8 {
            // Silence for the rest of this attempt.
            0 => return Err(LinkError::TimedOut),
            1 => {
                return Err(LinkError::Lost(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "scripted hang-up",
                )))
            }
            // Raw bytes, as they come.
            2 => {
                let n = usize::from(self.byte().unwrap_or(0) % 48) + 1;
                self.bytes(n)
            }
            // A frame about the last request sent: right or nearly right.
            _ => {
                let Some(last) = self.log.lock().sent.last().copied() else {
                    return Err(LinkError::TimedOut);
                };
                let [k, s, q, l] = [0; 4].map(|_: u8| self.byte().unwrap_or(0));
                let frame_kind = match k % 4 {
                    0 => last.kind | kind::RESPONSE_BIT,
                    1 => kind::NAK,
                    2 => [kind::HELLO_ACK, kind::WRITE_ACK, kind::READ_ACK][usize::from(k / 4 % 3)],
                    _ => k,
                };
                let session = match s % 4 {
                    0 | 1 => last.session,
                    2 => s / 4,
                    _ => last.session ^ 1,
                };
                let seq = match q % 4 {
                    0 | 1 => last.seq,
                    2 => last.seq.wrapping_add(u16::from(q / 4)),
                    _ => last.seq.wrapping_sub(1),
                };
                let payload = self.bytes(usize::from(l % 13));
                let frame = encode_frame(frame_kind, session, seq, &payload);
                let mut bytes = frame.as_bytes().to_vec();
                if op & 0x80 != 0 {
                    // Split it: the rest comes with a later receive.
                    let cut = usize::from(op & 0x0F) % bytes.len();
                    self.data.splice(self.at..self.at, {
                        let mut tail = vec![2, (bytes.len() - cut - 1) as u8];
                        tail.extend_from_slice(&bytes[cut..]);
                        tail
                    });
                    bytes.truncate(cut);
                }
                bytes
            }
        };
        if out.is_empty() {
            return Err(LinkError::TimedOut);
        }
        let n = out.len().min(buf.len());
        buf[..n].copy_from_slice(&out[..n]);
        self.log.lock().delivered.extend_from_slice(&out[..n]);
        Ok(n)
    }
}

/// Every CRC-valid frame that starts anywhere in `stream`: whatever a
/// decoder makes of the bytes (resynchronising or not), it can deliver
/// nothing else.
fn every_frame_in(stream: &[u8]) -> Vec<RawFrame> {
    let mut frames = Vec::new();
    for start in 0..stream.len() {
        let mut decoder = Decoder::new();
        let mut first = None;
        let end = (start + MAX_FRAME).min(stream.len());
        decoder.feed(&stream[start..end], |f| {
            first.get_or_insert(f);
        });
        // Only a frame at `start` itself; later ones have their own start.
        if let Some(f) = first {
            if decoder.stats().skipped_bytes == 0 {
                frames.push(f);
            }
        }
    }
    frames
}

/// The answers the engine may complete its last request with: those the
/// debuggee delivered for exactly that request.
fn genuine_answer(log: &Log, request: &RawFrame) -> Vec<Message> {
    every_frame_in(&log.delivered)
        .iter()
        .filter(|f| {
            f.session == request.session
                && f.seq == request.seq
                && f.kind == request.kind | kind::RESPONSE_BIT
        })
        .filter_map(|f| Message::parse(f).ok())
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&calls, script)) = data.split_first() else {
        return;
    };
    let log = Arc::new(Mutex::new(Log::default()));
    let transport = Script {
        data: script.to_vec(),
        at: 0,
        log: Arc::clone(&log),
        decoder: Decoder::new(),
    };
    let budget = TIMEOUT * ATTEMPTS;
    let margin = Duration::from_millis(500);
    let start = Instant::now();
    let engine = Engine::with_transport(Box::new(transport), TIMEOUT, ATTEMPTS);
    assert!(start.elapsed() <= budget + margin);
    let engine = match engine {
        Ok(engine) => engine,
        Err(error) => {
            let status = error.status();
            assert!(
                [
                    Status::TIMEOUT,
                    Status::INVALID_PACKET,
                    Status::DEVICE_CONNECTION_LOST,
                    Status::REVISION_MISMATCH,
                ]
                .contains(&status),
                "handshake: {status:?}"
            );
            return;
        }
    };
    for i in 0..(calls % 8) {
        let msr = 0xC000_0080 + u32::from(i);
        let value = 0x1111_0000_0000_0000 | u64::from(i);
        let sent_before = log.lock().sent.len();
        let start = Instant::now();
        let (status, read) = if i % 2 == 0 {
            (engine.write_msr(msr, value).err().map(|e| e.status()), None)
        } else {
            match engine.read_msr(msr) {
                Ok(v) => (None, Some(v)),
                Err(e) => (Some(e.status()), None),
            }
        };
        assert!(start.elapsed() <= budget + margin, "call {i} overran");
        let log = log.lock();
        // At most: every attempt of the request and of the handshakes that
        // resynchronise it.
        assert!(log.sent.len() - sent_before <= 6 * ATTEMPTS as usize);
        let request = log.sent[sent_before..]
            .iter()
            .rev()
            .find(|f| f.kind != kind::HELLO)
            .copied();
        let answers = request.map_or_else(Vec::new, |r| genuine_answer(&log, &r));
        match status {
            None => {
                let request = request.expect("a call that succeeds sent its request");
                let ok = answers.iter().any(|m| match (m, read) {
                    (Message::WriteAck { status }, None) => *status == WireStatus::Ok,
                    (Message::ReadAck { status, value }, Some(v)) => {
                        *status == WireStatus::Ok && *value == v
                    }
                    _ => false,
                });
                assert!(ok, "call {i} succeeded without its answer: {request:?}");
            }
            Some(Status::EXCEPTION_GENERAL_PROTECTION) => {
                let gp = answers.iter().any(|m| {
                    matches!(
                        m,
                        Message::WriteAck {
                            status: WireStatus::GeneralProtection
                        } | Message::ReadAck {
                            status: WireStatus::GeneralProtection,
                            ..
                        }
                    )
                });
                assert!(gp, "call {i}: #GP without a #GP answer");
            }
            Some(other) => assert!(
                [
                    Status::TIMEOUT,
                    Status::INVALID_PACKET,
                    Status::DEVICE_CONNECTION_LOST,
                    Status::REVISION_MISMATCH,
                ]
                .contains(&other),
                "call {i}: {other:?}"
            ),
        }
    }
});
