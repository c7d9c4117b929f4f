//! The debuggee's request handler: turns the byte stream from libpulse into
//! executed MSR accesses and response frames.
//!
//! Exactly-once execution without a window: a session's requests are
//! numbered from its Hello (request 0, SEQ `base`) and the SEQ of request
//! `k` is `base + k`; a session ends before `k` would wrap (the client
//! re-handshakes), so each SEQ names one request of the session for good.
//! The handler accepts only the session's next request; a retransmission
//! of the last one gets its cached response again, anything older is
//! dropped, anything further ahead is refused with `OutOfSequence`, so no
//! replay, however late, is ever executed twice.
//!
//! One debuggee, several clients: the newest handshake opens a new session
//! and replaces the current one (the debuggee has one state to offer); the
//! replaced client's next request is answered `SessionTakenOver`. Session
//! numbers are drawn at random (from entropy the caller supplies) among
//! those not issued in the last [`RECENT_SESSIONS`] handshakes.
//!
//! With a key ([`Stub::set_key`], docs/PROTOCOL.md section 9) the debuggee
//! opens authenticated sessions only: an AuthHello gets an AuthHelloAck
//! sealed with fresh session keys, but the new session stays *pending* and
//! replaces the current one only when a request sealed with its keys
//! arrives, i.e. once the client has proven the key. Every frame that is
//! not sealed for a session the debuggee knows, at the position it names,
//! is dropped without an answer. Since a forged frame cannot pass, a
//! session executes any request ahead of its last one (a request that
//! never arrived is skipped for good), so `OutOfSequence` is never needed.

use pulse_proto::auth::{Direction, ExpandedKeys, NonceSource, Psk, SessionKeys};
use pulse_proto::message::{kind, Message, NakReason, WireStatus, ALL_CPUS};
use pulse_proto::{Decoder, FrameBuf, RawFrame, NO_SESSION, PROTOCOL_VERSION};

use crate::cpus::{self, CpuError, MsrOutcome, Processors};

/// Session numbers issued by this many previous handshakes are not issued
/// again; a request carrying one of them is told `SessionTakenOver`.
pub const RECENT_SESSIONS: usize = 128;
/// Hellos of this many previous handshakes are recognised if the line
/// delivers them again late, and dropped instead of opening a session.
const RECENT_HELLOS: usize = 16;

/// What the handler has done; tests use it to prove nothing ran twice.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct HandlerStats {
    pub handshakes: u64,
    pub writes_executed: u64,
    pub reads_executed: u64,
    /// Retransmissions answered from the reply cache.
    pub replays: u64,
    /// Late duplicates (of requests or of an earlier session's Hello)
    /// dropped without an answer.
    pub stale_dropped: u64,
    pub naks: u64,
    /// Requests refused as `OutOfSequence` (frames, so a refused request
    /// resent counts again); none of them was executed.
    pub out_of_sequence: u64,
    /// CRC-valid frames that are not requests (e.g. echoed responses).
    pub ignored: u64,
    /// Partial frames discarded by [`Stub::line_idle`].
    pub partial_frames_dropped: u64,
    /// With a key: frames dropped because they are not sealed for a
    /// session the debuggee knows at the position they name (forged,
    /// altered, replayed from another session, or unauthenticated).
    pub unauthenticated_dropped: u64,
    /// With a key: authenticated handshakes answered (a session opens only
    /// when its client's first sealed request arrives: `handshakes`).
    pub auth_hellos_answered: u64,
}

/// A handled request of the current session and the response it got.
#[derive(Clone, Copy)]
struct Handled {
    /// Position in the session: 0 is the Hello.
    k: u16,
    crc: u16,
    response: FrameBuf,
}

#[derive(Clone, Copy)]
struct Session {
    id: u8,
    /// SEQ of the Hello that opened the session (request 0).
    base: u16,
    /// The Hello, to answer its retransmissions with the same HelloAck.
    hello: Handled,
    /// The last handled request (the Hello at first).
    last: Handled,
    /// An authenticated session's keys.
    keys: Option<SessionKeys>,
    /// Which authenticated handshake opened it (they are counted), to find
    /// its expanded keys.
    handshake: u64,
}

/// A small ring of recently seen values.
#[derive(Clone, Copy)]
struct Ring<T: Copy + PartialEq, const N: usize> {
    items: [T; N],
    len: usize,
    next: usize,
}

impl<T: Copy + PartialEq, const N: usize> Ring<T, N> {
    const fn new(fill: T) -> Self {
        Ring {
            items: [fill; N],
            len: 0,
            next: 0,
        }
    }

    fn push(&mut self, item: T) {
        self.items[self.next] = item;
        self.next = (self.next + 1) % N;
        self.len = (self.len + 1).min(N);
    }

    fn contains(&self, item: T) -> bool {
        self.items[..self.len].contains(&item)
    }
}

/// `P`: the debuggee's processors; any single [`crate::VmxBackend`] is a
/// one-CPU debuggee.
pub struct Stub<P> {
    backend: P,
    /// Processors a request ran on since [`Stub::take_touched`] (bit n: CPU
    /// n): hv-stub resumes the guest there after handling it.
    touched: u64,
    capabilities: u32,
    decoder: Decoder,
    session: Option<Session>,
    /// Session numbers issued before the current one.
    recent_sessions: Ring<u8, RECENT_SESSIONS>,
    /// (SEQ, CRC) of earlier sessions' Hellos.
    recent_hellos: Ring<(u16, u16), RECENT_HELLOS>,
    /// SplitMix64 state for session numbers.
    random: u64,
    stats: HandlerStats,
    /// With a key, only authenticated sessions are opened.
    key: Option<Psk>,
    /// The debuggee's handshake nonces.
    nonces: NonceSource,
    /// Sampled into the nonce pool before each authenticated handshake.
    entropy_source: Option<fn() -> u64>,
    /// An authenticated handshake answered whose client has not proven the
    /// key yet.
    pending: Option<Session>,
    /// The authenticated session the current one replaced: its client's
    /// next request is told `SessionTakenOver`, sealed with its keys.
    replaced: Option<Session>,
    /// The expanded keys of the authenticated session used last (by its
    /// `handshake`), so that the AES key schedules run once per session,
    /// not twice per request.
    expanded: Option<(u64, ExpandedKeys)>,
}

impl<P: Processors> Stub<P> {
    /// `entropy` seeds the session numbers: the debuggee's best source (a
    /// TSC reading, RDRAND, the OS's random numbers), so that sessions are
    /// unpredictable and a rebooted debuggee does not repeat its
    /// predecessor's. [`Stub::add_entropy`] stirs in more at any time.
    pub fn new(backend: P, capabilities: u32, entropy: impl Into<u64>) -> Self {
        let mut stub = Stub {
            backend,
            touched: 0,
            capabilities,
            decoder: Decoder::new(),
            session: None,
            recent_sessions: Ring::new(NO_SESSION),
            recent_hellos: Ring::new((0, 0)),
            random: 0,
            stats: HandlerStats::default(),
            key: None,
            nonces: NonceSource::new(),
            entropy_source: None,
            pending: None,
            replaced: None,
            expanded: None,
        };
        stub.add_entropy(entropy.into());
        stub
    }

    /// Mixes more entropy into the session numbers and handshake nonces.
    pub fn add_entropy(&mut self, entropy: u64) {
        self.random ^= entropy;
        self.next_random();
        self.nonces.stir(&entropy.to_le_bytes());
    }

    /// From now on, open authenticated sessions with `key` only (a session
    /// opened before without a key is forgotten).
    pub fn set_key(&mut self, key: Psk) {
        self.key = Some(key);
        self.session = None;
        self.pending = None;
        self.replaced = None;
        self.expanded = None;
    }

    /// A source of entropy (e.g. RDRAND, or the TSC whose value when a
    /// handshake arrives depends on the outside world) sampled into the
    /// nonce pool before each authenticated handshake, so that a debuggee
    /// whose boot is deterministic still draws nonces it never drew before.
    pub fn set_entropy_source(&mut self, source: fn() -> u64) {
        self.entropy_source = Some(source);
    }

    /// Whether the debuggee holds a key.
    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    /// The debuggee's processors.
    pub fn backend(&self) -> &P {
        &self.backend
    }

    pub fn backend_mut(&mut self) -> &mut P {
        &mut self.backend
    }

    /// The processors requests ran on since the last call (bit n: CPU n),
    /// e.g. to resume just their guests.
    pub fn take_touched(&mut self) -> u64 {
        core::mem::take(&mut self.touched)
    }

    pub fn stats(&self) -> HandlerStats {
        self.stats
    }

    pub fn decoder_stats(&self) -> pulse_proto::DecoderStats {
        self.decoder.stats()
    }

    /// Bytes [`Stub::feed`] holds as the start of a frame.
    pub fn pending_bytes(&self) -> usize {
        self.decoder.pending()
    }

    /// The current session number, if a handshake opened one.
    pub fn session(&self) -> Option<u8> {
        self.session.map(|s| s.id)
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

    /// The line feeding [`Stub::feed`] has been quiet for a while (the
    /// serving loop's choice: longer than any pause inside one frame, e.g.
    /// 20 ms; every later quiet period may call it again). Bytes held as
    /// the start of a frame are dropped: a sender sends a frame at once, so
    /// they are what a client left behind when it stopped (e.g. `a5 20`,
    /// which would otherwise swallow the next client's Hello). They are
    /// dropped, not rescanned, so nothing inside them is ever executed.
    pub fn line_idle(&mut self) {
        if self.decoder.pending() > 0 {
            self.stats.partial_frames_dropped += 1;
            self.decoder.clear();
        }
    }

    /// Handles one CRC-valid frame; returns the response to send, if any.
    /// Servers with a decoder per connection call this directly.
    pub fn handle(&mut self, frame: &RawFrame) -> Option<FrameBuf> {
        if frame.kind & kind::RESPONSE_BIT != 0 {
            self.stats.ignored += 1;
            return None;
        }
        match (self.key, frame.kind) {
            (None, kind::AUTH_HELLO) => return Some(self.nak(frame, NakReason::AuthUnavailable)),
            (None, _) => {}
            (Some(_), kind::HELLO) => return Some(self.nak(frame, NakReason::AuthRequired)),
            (Some(key), kind::AUTH_HELLO) => return self.auth_handshake(frame, &key),
            (Some(_), _) => return self.sealed_request(frame),
        }
        if frame.kind == kind::HELLO {
            return self.handshake(frame);
        }
        let Some(session) = self.session.filter(|s| s.id == frame.session) else {
            let reason =
                if frame.session != NO_SESSION && self.recent_sessions.contains(frame.session) {
                    NakReason::SessionTakenOver
                } else {
                    NakReason::BadSession
                };
            return Some(self.nak(frame, reason));
        };
        let k = frame.seq.wrapping_sub(session.base);
        let last = session.last;
        if k == last.k && frame.crc == last.crc {
            self.stats.replays += 1;
            return Some(last.response);
        }
        if k <= last.k {
            // A late copy of an older request (or another frame reusing the
            // last SEQ): it was handled already, or never will be.
            self.stats.stale_dropped += 1;
            return None;
        }
        if k != last.k + 1 {
            self.stats.out_of_sequence += 1;
            return Some(self.nak(frame, NakReason::OutOfSequence));
        }
        let reply = self.execute(frame);
        let response = reply.to_frame(session.id, frame.seq);
        if let Some(current) = self.session.as_mut() {
            current.last = Handled {
                k,
                crc: frame.crc,
                response,
            };
        }
        Some(response)
    }

    /// The answer to the session's next request; a malformed one is
    /// answered with a Nak, which is cached like any answer.
    fn execute(&mut self, frame: &RawFrame) -> Message {
        let message = match Message::parse(frame) {
            Ok(m) => m,
            Err(pulse_proto::ParseError::UnknownType(_)) => {
                self.stats.naks += 1;
                return Message::Nak {
                    reason: NakReason::UnknownType,
                };
            }
            Err(_) => {
                self.stats.naks += 1;
                return Message::Nak {
                    reason: NakReason::BadPayload,
                };
            }
        };
        match message {
            Message::WriteMsr { cpu, msr, value } => {
                self.stats.writes_executed += 1;
                let outcome = if cpu == ALL_CPUS {
                    self.touched |= self.backend.running_mask();
                    Ok(cpus::write_msr_all(&mut self.backend, msr, value))
                } else {
                    self.touch(cpu);
                    cpus::write_msr(&mut self.backend, cpu.into(), msr, value)
                };
                let (status, _) = wire(outcome);
                Message::WriteAck { status }
            }
            Message::ReadMsr { cpu, msr } => {
                self.stats.reads_executed += 1;
                self.touch(cpu);
                let outcome = cpus::read_msr(&mut self.backend, cpu.into(), msr);
                let (status, value) = wire(outcome);
                Message::ReadAck { status, value }
            }
            Message::CpuInfo => Message::CpuInfoAck {
                count: self.backend.count() as u8,
                running: self.backend.running_mask(),
            },
            // A response type without the response bit cannot parse, and
            // Hello never gets here.
            _ => {
                self.stats.naks += 1;
                Message::Nak {
                    reason: NakReason::UnknownType,
                }
            }
        }
    }

    fn touch(&mut self, cpu: u8) {
        if u32::from(cpu) < u64::BITS {
            self.touched |= 1 << cpu;
        }
    }

    fn handshake(&mut self, frame: &RawFrame) -> Option<FrameBuf> {
        if let Some(session) = self.session {
            if session.base == frame.seq && session.hello.crc == frame.crc {
                self.stats.replays += 1;
                return Some(session.hello.response);
            }
        }
        if self.recent_hellos.contains((frame.seq, frame.crc)) {
            // An earlier session's Hello, delivered again: opening a session
            // for it would take the debuggee from its current client.
            self.stats.stale_dropped += 1;
            return None;
        }
        match Message::parse(frame) {
            Ok(Message::Hello { version, .. }) if version == PROTOCOL_VERSION => {}
            Ok(Message::Hello { .. }) => {
                return Some(self.nak(frame, NakReason::UnsupportedVersion))
            }
            _ => return Some(self.nak(frame, NakReason::BadPayload)),
        }
        if let Some(previous) = self.session {
            self.recent_sessions.push(previous.id);
            self.recent_hellos.push((previous.base, previous.hello.crc));
        }
        let id = self.draw_session();
        self.stats.handshakes += 1;
        let ack = Message::HelloAck {
            version: PROTOCOL_VERSION,
            capabilities: self.capabilities,
        };
        let hello = Handled {
            k: 0,
            crc: frame.crc,
            response: ack.to_frame(id, frame.seq),
        };
        self.session = Some(Session {
            id,
            base: frame.seq,
            hello,
            last: hello,
            keys: None,
            handshake: 0,
        });
        Some(hello.response)
    }

    /// An AuthHello: answers it with a fresh nonce and an AuthHelloAck
    /// sealed with the new session's keys; the session stays pending until
    /// its client proves the key.
    fn auth_handshake(&mut self, frame: &RawFrame, key: &Psk) -> Option<FrameBuf> {
        for known in [self.session, self.pending].into_iter().flatten() {
            if known.base == frame.seq && known.hello.crc == frame.crc {
                self.stats.replays += 1;
                return Some(known.hello.response);
            }
        }
        if self.recent_hellos.contains((frame.seq, frame.crc)) {
            self.stats.stale_dropped += 1;
            return None;
        }
        let client_nonce = match Message::parse(frame) {
            Ok(Message::AuthHello { version, nonce }) if version == PROTOCOL_VERSION => nonce,
            Ok(Message::AuthHello { .. }) => {
                return Some(self.nak(frame, NakReason::UnsupportedVersion))
            }
            _ => return Some(self.nak(frame, NakReason::BadPayload)),
        };
        // A pending handshake whose client never proved the key is simply
        // forgotten.
        self.pending = None;
        let id = self.draw_session();
        if let Some(sample) = self.entropy_source {
            self.nonces.stir(&sample().to_le_bytes());
        }
        let nonce = self.nonces.next_nonce();
        let keys = SessionKeys::derive(key, &client_nonce, &nonce);
        let ack = Message::AuthHelloAck {
            nonce,
            version: PROTOCOL_VERSION,
            capabilities: self.capabilities,
        };
        let hello = Handled {
            k: 0,
            crc: frame.crc,
            response: keys.seal(Direction::ToClient, &ack, id, frame.seq, 0),
        };
        self.stats.auth_hellos_answered += 1;
        self.pending = Some(Session {
            id,
            base: frame.seq,
            hello,
            last: hello,
            keys: Some(keys),
            handshake: self.stats.auth_hellos_answered,
        });
        Some(hello.response)
    }

    /// A request to a debuggee with a key: executed only if it is sealed
    /// for the current or pending session at the position it names.
    fn sealed_request(&mut self, frame: &RawFrame) -> Option<FrameBuf> {
        let is = |s: &Option<Session>| s.filter(|s| s.id == frame.session && s.keys.is_some());
        let (session, which) = if let Some(s) = is(&self.session) {
            (s, Which::Current)
        } else if let Some(s) = is(&self.pending) {
            (s, Which::Pending)
        } else if let Some(s) = is(&self.replaced) {
            (s, Which::Replaced)
        } else {
            self.stats.unauthenticated_dropped += 1;
            return None;
        };
        let k = frame.seq.wrapping_sub(session.base);
        let Some(opened) = self
            .expanded(&session)
            .open(Direction::ToDebuggee, frame, k)
        else {
            self.stats.unauthenticated_dropped += 1;
            return None;
        };
        let last = session.last;
        if k == last.k && frame.crc == last.crc {
            self.stats.replays += 1;
            return Some(last.response);
        }
        if k <= last.k {
            self.stats.stale_dropped += 1;
            return None;
        }
        match which {
            Which::Replaced => {
                // Positions after its last request were never answered in
                // that session, so this nonce seals nothing else.
                self.stats.naks += 1;
                let nak = Message::Nak {
                    reason: NakReason::SessionTakenOver,
                };
                let keys = self.expanded(&session);
                return Some(keys.seal(Direction::ToClient, &nak, session.id, frame.seq, k));
            }
            Which::Pending => {
                // The client has proven the key: its session takes over.
                if let Some(previous) = self.session.take() {
                    self.recent_sessions.push(previous.id);
                    self.recent_hellos.push((previous.base, previous.hello.crc));
                    self.replaced = Some(previous);
                }
                self.session = self.pending.take();
                self.stats.handshakes += 1;
            }
            Which::Current => {}
        }
        let reply = self.execute(&opened);
        let keys = self.expanded(&session);
        let response = keys.seal(Direction::ToClient, &reply, session.id, frame.seq, k);
        if let Some(current) = self.session.as_mut() {
            current.last = Handled {
                k,
                crc: frame.crc,
                response,
            };
        }
        Some(response)
    }

    /// `session`'s expanded keys (it is an authenticated session).
    fn expanded(&mut self, session: &Session) -> &ExpandedKeys {
        if self.expanded.as_ref().map(|(n, _)| *n) != Some(session.handshake) {
            let keys = session.keys.expect("an authenticated session").expand();
            self.expanded = Some((session.handshake, keys));
        }
        &self.expanded.as_ref().expect("just set").1
    }

    /// A random session number that is neither 0, nor current, nor issued
    /// by one of the last [`RECENT_SESSIONS`] handshakes.
    fn draw_session(&mut self) -> u8 {
        let current = self.session.map_or(NO_SESSION, |s| s.id);
        let allowed = |stub: &Self, id: u8| {
            id != NO_SESSION && id != current && !stub.recent_sessions.contains(id)
        };
        // At least 255 - 1 - RECENT_SESSIONS numbers are allowed, so a few
        // draws almost always find one; the scan bounds the worst case.
        let mut start = 0u8;
        for _ in 0..8 {
            start = self.next_random() as u8;
            if allowed(self, start) {
                return start;
            }
        }
        (1..=255u8)
            .map(|i| start.wrapping_add(i))
            .find(|&id| allowed(self, id))
            .unwrap_or(1)
    }

    /// SplitMix64.
    fn next_random(&mut self) -> u64 {
        self.random = self.random.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.random;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn nak(&mut self, frame: &RawFrame, reason: NakReason) -> FrameBuf {
        self.stats.naks += 1;
        Message::Nak { reason }.to_frame(frame.session, frame.seq)
    }
}

/// Which of the debuggee's authenticated sessions a frame names.
#[derive(Clone, Copy)]
enum Which {
    Current,
    Pending,
    Replaced,
}

/// The wire status and value of a request's outcome.
fn wire(outcome: Result<MsrOutcome, CpuError>) -> (WireStatus, u64) {
    match outcome {
        Ok(Ok(value)) => (WireStatus::Ok, value),
        Ok(Err(_)) => (WireStatus::GeneralProtection, 0),
        Err(CpuError::NoCpu) => (WireStatus::NoCpu, 0),
        Err(CpuError::Inactive) => (WireStatus::CpuInactive, 0),
    }
}
