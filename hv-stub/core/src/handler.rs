//! The debuggee's request handler: turns the byte stream from libpulse into
//! executed MSR accesses and response frames.
//!
//! Exactly-once execution: the handler remembers the session's last executed
//! request (its sequence number and CRC) and the response it sent. A
//! retransmission of that request gets the same response again without being
//! executed; a request whose sequence number is not newer than the last one
//! (a late duplicate) is dropped. The client is stop-and-wait, so one
//! remembered response is enough.

use pulse_proto::message::{kind, Message, NakReason, WireStatus};
use pulse_proto::{Decoder, FrameBuf, RawFrame, NO_SESSION, PROTOCOL_VERSION};

use crate::routing;
use crate::vmx::VmxBackend;

/// What the handler has done; tests use it to prove nothing ran twice.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct HandlerStats {
    pub handshakes: u64,
    pub writes_executed: u64,
    pub reads_executed: u64,
    /// Retransmissions answered from the reply cache.
    pub replays: u64,
    /// Late duplicates dropped without an answer.
    pub stale_dropped: u64,
    pub naks: u64,
    /// CRC-valid frames that are not requests (e.g. echoed responses).
    pub ignored: u64,
}

#[derive(Clone, Copy)]
struct Executed {
    seq: u16,
    crc: u16,
    response: FrameBuf,
}

pub struct Stub<B> {
    backend: B,
    capabilities: u32,
    decoder: Decoder,
    /// Current session; `NO_SESSION` until the first handshake.
    session: u8,
    /// The handshake that opened the current session, to answer its
    /// retransmissions with the same session.
    hello: Option<Executed>,
    /// The session's last executed request (the handshake counts).
    last: Option<Executed>,
    stats: HandlerStats,
}

impl<B: VmxBackend> Stub<B> {
    /// `session_seed` picks the first session number (e.g. from the TSC), so
    /// that a rebooted debuggee is unlikely to reuse its predecessor's.
    pub fn new(backend: B, capabilities: u32, session_seed: u8) -> Self {
        Stub {
            backend,
            capabilities,
            decoder: Decoder::new(),
            session: session_seed,
            hello: None,
            last: None,
            stats: HandlerStats::default(),
        }
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    pub fn stats(&self) -> HandlerStats {
        self.stats
    }

    pub fn decoder_stats(&self) -> pulse_proto::DecoderStats {
        self.decoder.stats()
    }

    /// Feeds received bytes; `send` is called with each response frame.
    pub fn feed(&mut self, bytes: &[u8], mut send: impl FnMut(&[u8])) {
        let mut decoder = core::mem::take(&mut self.decoder);
        decoder.feed(bytes, |frame| {
            if let Some(response) = self.handle(&frame) {
                send(response.as_bytes());
            }
        });
        self.decoder = decoder;
    }

    /// Handles one CRC-valid frame; returns the response to send, if any.
    pub fn handle(&mut self, frame: &RawFrame) -> Option<FrameBuf> {
        if frame.kind & kind::RESPONSE_BIT != 0 {
            self.stats.ignored += 1;
            return None;
        }
        if frame.kind == kind::HELLO {
            return Some(self.handshake(frame));
        }
        if self.session == NO_SESSION || frame.session != self.session || self.hello.is_none() {
            return Some(self.nak(frame, NakReason::BadSession));
        }
        if let Some(last) = self.last {
            if last.seq == frame.seq && last.crc == frame.crc {
                self.stats.replays += 1;
                return Some(last.response);
            }
            if (frame.seq.wrapping_sub(last.seq) as i16) <= 0 {
                self.stats.stale_dropped += 1;
                return None;
            }
        }
        let message = match Message::parse(frame) {
            Ok(m) => m,
            Err(pulse_proto::ParseError::UnknownType(_)) => {
                return Some(self.nak(frame, NakReason::UnknownType))
            }
            Err(_) => return Some(self.nak(frame, NakReason::BadPayload)),
        };
        let reply = match message {
            Message::WriteMsr { msr, value } => {
                self.stats.writes_executed += 1;
                let status = match routing::write_msr(&mut self.backend, msr, value) {
                    Ok(_) => WireStatus::Ok,
                    Err(_) => WireStatus::GeneralProtection,
                };
                Message::WriteAck { status }
            }
            Message::ReadMsr { msr } => {
                self.stats.reads_executed += 1;
                match routing::read_msr(&mut self.backend, msr) {
                    Ok(value) => Message::ReadAck {
                        status: WireStatus::Ok,
                        value,
                    },
                    Err(_) => Message::ReadAck {
                        status: WireStatus::GeneralProtection,
                        value: 0,
                    },
                }
            }
            // A response type without the response bit cannot parse, and
            // Hello was handled above.
            _ => return Some(self.nak(frame, NakReason::UnknownType)),
        };
        let response = reply.to_frame(self.session, frame.seq);
        self.last = Some(Executed {
            seq: frame.seq,
            crc: frame.crc,
            response,
        });
        Some(response)
    }

    fn handshake(&mut self, frame: &RawFrame) -> FrameBuf {
        if let Some(hello) = self.hello {
            if hello.seq == frame.seq && hello.crc == frame.crc {
                self.stats.replays += 1;
                return hello.response;
            }
        }
        match Message::parse(frame) {
            Ok(Message::Hello { version, .. }) if version == PROTOCOL_VERSION => {}
            Ok(Message::Hello { .. }) => return self.nak(frame, NakReason::UnsupportedVersion),
            _ => return self.nak(frame, NakReason::BadPayload),
        }
        self.session = match self.session.wrapping_add(1) {
            NO_SESSION => 1,
            next => next,
        };
        self.stats.handshakes += 1;
        let ack = Message::HelloAck {
            version: PROTOCOL_VERSION,
            capabilities: self.capabilities,
        };
        let executed = Executed {
            seq: frame.seq,
            crc: frame.crc,
            response: ack.to_frame(self.session, frame.seq),
        };
        self.hello = Some(executed);
        self.last = Some(executed);
        executed.response
    }

    fn nak(&mut self, frame: &RawFrame, reason: NakReason) -> FrameBuf {
        self.stats.naks += 1;
        Message::Nak { reason }.to_frame(frame.session, frame.seq)
    }
}
