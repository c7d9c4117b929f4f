//! The debuggee's request handler: turns the byte stream from libpulse into
//! executed MSR accesses and response frames.
//!
//! Exactly-once execution with a window (docs/PROTOCOL.md section 5): a
//! session's requests are numbered from its Hello (request 0, SEQ `base`)
//! and the SEQ of request `k` is `base + k`; a session ends before `k`
//! would wrap (the client re-handshakes), so each SEQ names one request of
//! the session for good. Up to [`WINDOW`] requests may be in flight. The
//! handler executes them strictly in order: request `next` runs when it
//! arrives, a request further ahead inside the window is held until those
//! before it have run, and the answers of the last [`WINDOW`] requests are
//! kept, so a retransmission is answered again, never executed again.
//! Anything older is dropped, anything beyond the window refused with
//! `OutOfSequence`, so no replay, however late, is ever executed twice.
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
//! is dropped without an answer; sealed requests follow the same window.

use pulse_proto::auth::{Direction, ExpandedKeys, NonceSource, Psk, SessionKeys};
use pulse_proto::message::{kind, Message, NakReason, WireStatus, ALL_CPUS};
use pulse_proto::{Decoder, FrameBuf, RawFrame, MAX_WINDOW, NO_SESSION, PROTOCOL_VERSION};

use crate::cpus::{self, CpuError, MsrOutcome, Processors};

/// Session numbers issued by this many previous handshakes are not issued
/// again; a request carrying one of them is told `SessionTakenOver`.
pub const RECENT_SESSIONS: usize = 128;
/// Hellos of this many previous handshakes are recognised if the line
/// delivers them again late, and dropped instead of opening a session.
const RECENT_HELLOS: usize = 16;

/// Requests a session may have in flight, announced in the HelloAck. Each
/// costs the debuggee one held request and one kept answer (about 100
/// bytes); 32 keeps a 115200-baud line and a loopback socket busy (see
/// docs/BENCHMARKS.md) and the handler small enough for hv-stub's stacks.
pub const WINDOW: u8 = 32;
const _: () = assert!(WINDOW >= 16 && WINDOW <= MAX_WINDOW);
const W: usize = WINDOW as usize;

/// What the handler has done; tests use it to prove nothing ran twice.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct HandlerStats {
    /// Sessions opened (with a key: proven by their client's first request).
    pub handshakes: u64,
    /// WriteMsr requests executed (an all-CPU write counts once).
    pub writes_executed: u64,
    /// ReadMsr requests executed.
    pub reads_executed: u64,
    /// Retransmissions answered from the reply cache.
    pub replays: u64,
    /// Late duplicates (of requests or of an earlier session's Hello)
    /// dropped without an answer.
    pub stale_dropped: u64,
    /// Naks sent, of any reason.
    pub naks: u64,
    /// Requests refused as `OutOfSequence`, i.e. beyond the window (frames,
    /// so a refused request resent counts again); none of them was executed.
    pub out_of_sequence: u64,
    /// Requests that arrived ahead of an earlier one and were held until it
    /// came (each executed once, in order, when its turn came).
    pub held: u64,
    /// Held requests whose turn never came: their session was replaced
    /// first (none of them was executed).
    pub held_discarded: u64,
    /// Requests refused because their session is not the current one
    /// (`BadSession`, `SessionTakenOver`); none of them was executed.
    pub other_session: u64,
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
    /// Position of the next request to execute (1 after the Hello): every
    /// request before it has run, none at or after it. 65536 once the
    /// session is used up.
    next: u32,
    /// An authenticated session's keys.
    keys: Option<SessionKeys>,
    /// Which authenticated handshake opened it (they are counted), to find
    /// its expanded keys.
    handshake: u64,
}

/// A request that arrived before its turn (opened, in a sealed session).
#[derive(Clone, Copy)]
struct Held {
    k: u16,
    crc: u16,
    frame: RawFrame,
}

/// The current session's window: the answers of its last [`WINDOW`]
/// requests and the requests held for their turn, each at `k % WINDOW`.
struct Window {
    answered: [Option<Handled>; W],
    held: [Option<Held>; W],
}

impl Window {
    const fn new() -> Self {
        Window {
            answered: [None; W],
            held: [None; W],
        }
    }

    /// Empties the window for a new session; returns how many held
    /// requests it dropped.
    fn reset(&mut self) -> u64 {
        let held = self.held.iter().flatten().count() as u64;
        *self = Window::new();
        held
    }

    /// The kept answer of request `k`, if it is still kept.
    fn answer(&self, k: u16) -> Option<Handled> {
        self.answered[usize::from(k) % W].filter(|h| h.k == k)
    }

    /// Takes request `k` if it arrived early.
    fn take_held(&mut self, k: u16) -> Option<Held> {
        let slot = &mut self.held[usize::from(k) % W];
        if slot.is_some_and(|h| h.k == k) {
            slot.take()
        } else {
            None
        }
    }
}

/// Where a request's position lies relative to its session's window.
enum Place {
    /// Ran already: answer it again from the kept answer (or drop it).
    Before,
    /// Its turn: run it, then the held requests after it.
    Next,
    /// Inside the window but early: hold it.
    Early,
    /// Beyond the window.
    Beyond,
}

fn place(k: u16, next: u32) -> Place {
    let k = u32::from(k);
    if k < next {
        Place::Before
    } else if k == next {
        Place::Next
    } else if k - next < WINDOW.into() {
        Place::Early
    } else {
        Place::Beyond
    }
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
    /// The current session's window.
    window: Window,
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
            window: Window::new(),
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

    /// The debuggee's processors, to change them (tests, the image's
    /// start-up).
    pub fn backend_mut(&mut self) -> &mut P {
        &mut self.backend
    }

    /// The processors requests ran on since the last call (bit n: CPU n),
    /// e.g. to resume just their guests.
    pub fn take_touched(&mut self) -> u64 {
        core::mem::take(&mut self.touched)
    }

    /// What the handler has done so far.
    pub fn stats(&self) -> HandlerStats {
        self.stats
    }

    /// What the stream decoder of [`Stub::feed`] has seen.
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
        decoder.feed(bytes, |frame| self.handle(&frame, &mut send));
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

    /// Handles one CRC-valid frame; `send` is called with each response it
    /// causes (none, one, or several when it lets held requests run).
    /// Servers with a decoder per connection call this directly.
    pub fn handle(&mut self, frame: &RawFrame, mut send: impl FnMut(&[u8])) {
        if frame.kind & kind::RESPONSE_BIT != 0 {
            self.stats.ignored += 1;
            return;
        }
        let response = match (self.key, frame.kind) {
            (None, kind::AUTH_HELLO) => Some(self.nak(frame, NakReason::AuthUnavailable)),
            (None, kind::HELLO) => self.handshake(frame),
            (None, _) => return self.plain_request(frame, &mut send),
            (Some(_), kind::HELLO) => Some(self.nak(frame, NakReason::AuthRequired)),
            (Some(key), kind::AUTH_HELLO) => self.auth_handshake(frame, &key),
            (Some(_), _) => return self.sealed_request(frame, &mut send),
        };
        if let Some(response) = response {
            send(response.as_bytes());
        }
    }

    /// A request to a debuggee without a key.
    fn plain_request(&mut self, frame: &RawFrame, send: &mut impl FnMut(&[u8])) {
        let Some(session) = self.session.filter(|s| s.id == frame.session) else {
            let reason =
                if frame.session != NO_SESSION && self.recent_sessions.contains(frame.session) {
                    NakReason::SessionTakenOver
                } else {
                    NakReason::BadSession
                };
            self.stats.other_session += 1;
            let nak = self.nak(frame, reason);
            return send(nak.as_bytes());
        };
        let k = frame.seq.wrapping_sub(session.base);
        self.windowed(&session, k, frame, send);
    }

    /// A request of the current session at position `k` (opened, if the
    /// session is sealed): runs it, holds it, answers it again or refuses
    /// it, by where it lies in the window.
    fn windowed(
        &mut self,
        session: &Session,
        k: u16,
        frame: &RawFrame,
        send: &mut impl FnMut(&[u8]),
    ) {
        match place(k, session.next) {
            Place::Before => match self.window.answer(k) {
                Some(kept) if kept.crc == frame.crc => {
                    self.stats.replays += 1;
                    send(kept.response.as_bytes());
                }
                // A late copy of an older request whose answer is no longer
                // kept (or another frame reusing its SEQ): it ran already.
                _ => self.stats.stale_dropped += 1,
            },
            Place::Beyond => {
                self.stats.out_of_sequence += 1;
                self.stats.naks += 1;
                let nak = Message::Nak {
                    reason: NakReason::OutOfSequence,
                };
                let response = self.answer_frame(session, &nak, frame.seq, k);
                send(response.as_bytes());
            }
            Place::Early => {
                let slot = &mut self.window.held[usize::from(k) % W];
                if slot.is_none_or(|h| h.k != k) {
                    *slot = Some(Held {
                        k,
                        crc: frame.crc,
                        frame: *frame,
                    });
                    self.stats.held += 1;
                } else {
                    // Held already: its retransmission waits with it.
                    self.stats.stale_dropped += 1;
                }
            }
            Place::Next => {
                let mut run = Held {
                    k,
                    crc: frame.crc,
                    frame: *frame,
                };
                loop {
                    let reply = self.execute(&run.frame);
                    let seq = session.base.wrapping_add(run.k);
                    let response = self.answer_frame(session, &reply, seq, run.k);
                    self.window.answered[usize::from(run.k) % W] = Some(Handled {
                        k: run.k,
                        crc: run.crc,
                        response,
                    });
                    let next = u32::from(run.k) + 1;
                    if let Some(current) = self.session.as_mut() {
                        current.next = next;
                    }
                    send(response.as_bytes());
                    let held = u16::try_from(next)
                        .ok()
                        .and_then(|k| self.window.take_held(k));
                    match held {
                        Some(held) => run = held,
                        None => break,
                    }
                }
            }
        }
    }

    /// `reply` as the frame answering request `k` (SEQ `seq`) of `session`:
    /// sealed if the session is.
    fn answer_frame(&mut self, session: &Session, reply: &Message, seq: u16, k: u16) -> FrameBuf {
        if session.keys.is_some() {
            self.expanded(session)
                .seal(Direction::ToClient, reply, session.id, seq, k)
        } else {
            reply.to_frame(session.id, seq)
        }
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
        let id = self.draw_session();
        self.stats.handshakes += 1;
        let ack = Message::HelloAck {
            version: PROTOCOL_VERSION,
            capabilities: self.capabilities,
            window: WINDOW,
        };
        let hello = Handled {
            k: 0,
            crc: frame.crc,
            response: ack.to_frame(id, frame.seq),
        };
        self.install(Session {
            id,
            base: frame.seq,
            hello,
            next: 1,
            keys: None,
            handshake: 0,
        });
        Some(hello.response)
    }

    /// Makes `session` the current one, with an empty window; returns the
    /// one it replaces, whose number and Hello are remembered so that
    /// neither is issued or opened again.
    fn install(&mut self, session: Session) -> Option<Session> {
        let previous = self.session.replace(session);
        if let Some(previous) = previous {
            self.recent_sessions.push(previous.id);
            self.recent_hellos.push((previous.base, previous.hello.crc));
        }
        self.stats.held_discarded += self.window.reset();
        previous
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
            window: WINDOW,
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
            next: 1,
            keys: Some(keys),
            handshake: self.stats.auth_hellos_answered,
        });
        Some(hello.response)
    }

    /// A request to a debuggee with a key: executed only if it is sealed
    /// for the current or pending session at the position it names.
    fn sealed_request(&mut self, frame: &RawFrame, send: &mut impl FnMut(&[u8])) {
        let is = |s: &Option<Session>| s.filter(|s| s.id == frame.session && s.keys.is_some());
        let (session, which) = if let Some(s) = is(&self.session) {
            (s, Which::Current)
        } else if let Some(s) = is(&self.pending) {
            (s, Which::Pending)
        } else if let Some(s) = is(&self.replaced) {
            (s, Which::Replaced)
        } else {
            self.stats.unauthenticated_dropped += 1;
            return;
        };
        let k = frame.seq.wrapping_sub(session.base);
        let Some(opened) = self
            .expanded(&session)
            .open(Direction::ToDebuggee, frame, k)
        else {
            self.stats.unauthenticated_dropped += 1;
            return;
        };
        match which {
            Which::Replaced => {
                if u32::from(k) < session.next {
                    // It ran in that session; its answer is no longer kept.
                    self.stats.stale_dropped += 1;
                    return;
                }
                // Positions from `next` on were never answered in that
                // session, so this nonce seals nothing else.
                self.stats.naks += 1;
                self.stats.other_session += 1;
                let nak = Message::Nak {
                    reason: NakReason::SessionTakenOver,
                };
                let response = self.answer_frame(&session, &nak, frame.seq, k);
                return send(response.as_bytes());
            }
            Which::Pending => {
                // The client has proven the key: its session takes over.
                if let Some(previous) = self.install(session) {
                    self.replaced = Some(previous);
                }
                self.pending = None;
                self.stats.handshakes += 1;
            }
            Which::Current => {}
        }
        // The CRC names the frame as sent (sealed), so a retransmission
        // matches its kept answer.
        let opened = RawFrame {
            crc: frame.crc,
            ..opened
        };
        self.windowed(&session, k, &opened, send);
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
