//! The engine: one session with one debuggee over one transport.
//!
//! Stop-and-wait: a call takes the link, sends its request, and waits up to
//! `request_timeout` for the matching response, resending the identical
//! frame (same sequence number) up to `max_attempts` times. The debuggee
//! answers a resend from its reply cache, so a write is never applied twice.
//! Every call, including the wait for the link when other threads hold it,
//! finishes within `request_timeout * max_attempts` plus scheduling slack.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hv_stub::sim::SimTarget;
use parking_lot::Mutex;
use pulse_proto::message::{kind, Message, NakReason, WireStatus};
use pulse_proto::{Decoder, RawFrame, NO_SESSION, PROTOCOL_VERSION};

use crate::config::{EngineConfig, TransportSpec};
use crate::status::Status;
use crate::transport::{self, LinkError, Transport};

pub struct Engine {
    link: Mutex<Link>,
    request_timeout: Duration,
    max_attempts: u32,
    /// Set once the transport is lost; every later call fails at once.
    lost: AtomicBool,
    capabilities: u32,
    sim: Option<Arc<Mutex<SimTarget>>>,
}

struct Link {
    transport: Box<dyn Transport>,
    decoder: Decoder,
    session: u8,
    next_seq: u16,
}

/// Counters for diagnostics and tests.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct EngineStats {
    pub decoder: pulse_proto::DecoderStats,
}

impl Engine {
    /// Opens the transport and performs the handshake.
    pub fn open(config: &EngineConfig) -> Result<Engine, Status> {
        if config.request_timeout.is_zero() || config.max_attempts == 0 {
            return Err(Status::INVALID_PARAMETER);
        }
        let spec =
            TransportSpec::parse(&config.transport).map_err(|_| Status::INVALID_PARAMETER)?;
        // One budget for the whole call: connecting and the handshake.
        let deadline = Instant::now() + config.call_budget();
        let opened = transport::open(&spec, deadline)?;
        let mut link = Link {
            transport: opened.link,
            decoder: Decoder::new(),
            session: NO_SESSION,
            next_seq: crate::entropy::u64() as u16,
        };
        let hello = Message::Hello {
            version: PROTOCOL_VERSION,
            nonce: crate::entropy::u64() as u32,
        };
        let (session, reply) = link.exchange(
            &hello,
            config.request_timeout,
            config.max_attempts,
            deadline,
        )?;
        let Message::HelloAck {
            version,
            capabilities,
        } = reply
        else {
            return Err(Status::INVALID_PACKET);
        };
        if version != PROTOCOL_VERSION {
            return Err(Status::REVISION_MISMATCH);
        }
        if session == NO_SESSION {
            return Err(Status::INVALID_PACKET);
        }
        link.session = session;
        Ok(Engine {
            link: Mutex::new(link),
            request_timeout: config.request_timeout,
            max_attempts: config.max_attempts,
            lost: AtomicBool::new(false),
            capabilities,
            sim: opened.sim,
        })
    }

    /// Writes `value` to `msr` as the guest will see it.
    pub fn write_msr(&self, msr: u32, value: u64) -> Result<(), Status> {
        match self.call(&Message::WriteMsr { msr, value })? {
            Message::WriteAck { status } => wire_result(status),
            _ => Err(Status::INVALID_PACKET),
        }
    }

    /// Reads what the guest would read from `msr`.
    pub fn read_msr(&self, msr: u32) -> Result<u64, Status> {
        match self.call(&Message::ReadMsr { msr })? {
            Message::ReadAck { status, value } => wire_result(status).map(|_| value),
            _ => Err(Status::INVALID_PACKET),
        }
    }

    /// Capability bits the debuggee announced (`pulse_proto::message::caps`).
    pub fn capabilities(&self) -> u32 {
        self.capabilities
    }

    /// The simulated debuggee behind a `sim` engine, for inspection.
    pub fn sim_target(&self) -> Option<Arc<Mutex<SimTarget>>> {
        self.sim.clone()
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            decoder: self.link.lock().decoder.stats(),
        }
    }

    fn call(&self, request: &Message) -> Result<Message, Status> {
        if self.lost.load(Ordering::Acquire) {
            return Err(Status::DEVICE_CONNECTION_LOST);
        }
        let deadline = Instant::now() + self.request_timeout.saturating_mul(self.max_attempts);
        let mut link = self.link.try_lock_until(deadline).ok_or(Status::TIMEOUT)?;
        // Another thread may have lost the link while we waited for it.
        if self.lost.load(Ordering::Acquire) {
            return Err(Status::DEVICE_CONNECTION_LOST);
        }
        let result = link
            .exchange(request, self.request_timeout, self.max_attempts, deadline)
            .map(|(_, reply)| reply);
        if result == Err(Status::DEVICE_CONNECTION_LOST) {
            self.lost.store(true, Ordering::Release);
        }
        result
    }
}

fn wire_result(status: WireStatus) -> Result<(), Status> {
    match status {
        WireStatus::Ok => Ok(()),
        WireStatus::GeneralProtection => Err(Status::EXCEPTION_GENERAL_PROTECTION),
    }
}

/// What a received frame means for the outstanding request.
enum Verdict {
    /// Not ours (stale, another session, garbage that passed the CRC).
    Ignore,
    Answer(u8, Message),
    Fail(Status),
}

impl Link {
    /// Sends `request` and waits for its answer, resending on silence.
    /// Returns the session the answer carries and the answer.
    fn exchange(
        &mut self,
        request: &Message,
        per_attempt: Duration,
        attempts: u32,
        deadline: Instant,
    ) -> Result<(u8, Message), Status> {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let frame = request.to_frame(self.session, seq);
        let mut buf = [0u8; 256];
        let session = self.session;
        for _ in 0..attempts {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let attempt_deadline = (now + per_attempt).min(deadline);
            match self.transport.send(frame.as_bytes(), attempt_deadline) {
                Ok(()) => {}
                Err(LinkError::TimedOut) => continue,
                Err(e) => return Err(e.status()),
            }
            loop {
                // Frames are judged as the decoder completes them; nothing
                // is allocated on this path.
                let mut verdict = Verdict::Ignore;
                let mut frames = 0usize;
                let mut take = |f: RawFrame| {
                    frames += 1;
                    if let Verdict::Ignore = verdict {
                        verdict = judge(session, request, seq, &f);
                    }
                };
                match self.transport.recv(&mut buf, attempt_deadline) {
                    Ok(n) => self.decoder.feed(&buf[..n], &mut take),
                    Err(LinkError::TimedOut) if self.decoder.pending() > 0 => {
                        // Quiet line, bytes held: a stray start marker may be
                        // hiding a complete answer behind it.
                        self.decoder.resync(&mut take);
                        if frames == 0 {
                            break;
                        }
                    }
                    Err(LinkError::TimedOut) => break,
                    Err(e) => return Err(e.status()),
                }
                match verdict {
                    Verdict::Ignore => {}
                    Verdict::Answer(session, message) => return Ok((session, message)),
                    Verdict::Fail(status) => return Err(status),
                }
            }
        }
        Err(Status::TIMEOUT)
    }
}

/// What `frame` means for the outstanding `request` (sent as `seq` in
/// `session`).
fn judge(session: u8, request: &Message, seq: u16, frame: &RawFrame) -> Verdict {
    let hello = matches!(request, Message::Hello { .. });
    let expected = request.kind() | kind::RESPONSE_BIT;
    if frame.seq != seq {
        return Verdict::Ignore;
    }
    // A HelloAck carries the new session; everything else echoes ours.
    let session_ok = frame.session == session || (hello && frame.kind == expected);
    if !session_ok {
        return Verdict::Ignore;
    }
    match Message::parse(frame) {
        Ok(Message::Nak { reason }) => Verdict::Fail(match reason {
            NakReason::BadSession => Status::DEVICE_CONNECTION_LOST,
            NakReason::UnsupportedVersion => Status::REVISION_MISMATCH,
            NakReason::UnknownType | NakReason::BadPayload => Status::INVALID_PACKET,
        }),
        Ok(message) if frame.kind == expected => Verdict::Answer(frame.session, message),
        // Our id on a frame that is not our answer: the peer is confused.
        Ok(_) | Err(_) => Verdict::Fail(Status::INVALID_PACKET),
    }
}
