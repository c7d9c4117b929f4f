//! The engine: one session with one debuggee over one transport.
//!
//! Stop-and-wait: a call takes the link, sends its request, and waits up to
//! `request_timeout` for the matching response, resending the identical
//! frame (same sequence number) up to `max_attempts` times. The debuggee
//! answers a resend from its reply cache, so a write is never applied twice.
//! Every call, including the wait for the link when other threads hold it,
//! finishes within `request_timeout * max_attempts` plus scheduling slack.
//!
//! Sessions (docs/PROTOCOL.md section 5): request `k` of a session has SEQ
//! `base + k`. The engine opens a new session before `k` would pass
//! `SESSION_REQUESTS`, and when the debuggee says `OutOfSequence` (a
//! request that timed out never arrived, so the debuggee still expects it):
//! the new session makes every frame of the old one inert, and the call
//! goes on in it within the same budget.
//!
//! With a key (docs/PROTOCOL.md section 9) the handshake is an AuthHello
//! with a fresh nonce; the debuggee's AuthHelloAck must open with the keys
//! derived from both nonces, or the engine is refused (`ACCESS_DENIED`, as
//! is any answer saying the debuggee offers no authentication: no
//! downgrade). Every later frame is sealed; an answer that does not open is
//! ignored like noise.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pulse_proto::auth::{Direction, NONCE_LEN};
use pulse_proto::message::{kind, Message, NakReason, WireStatus, ALL_CPUS};
use pulse_proto::{
    Decoder, FrameBuf, Psk, RawFrame, SessionKeys, NO_SESSION, PROTOCOL_VERSION, SESSION_REQUESTS,
};

use crate::config::{EngineConfig, TransportSpec};
use crate::error::{Error, MsrAccess, OnCpu};
use crate::transport::{self, LinkError, Transport};

pub struct Engine {
    link: Mutex<Link>,
    request_timeout: Duration,
    max_attempts: u32,
    /// Set once the transport is lost; every later call fails at once.
    lost: AtomicBool,
    capabilities: u32,
    /// The CPU `write_msr`/`read_msr` act on; every thread shares it. It
    /// travels in each request, so a retransmission always means the CPU it
    /// was sent for.
    current_cpu: AtomicU8,
}

/// What `switch_cpu` did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Switched {
    /// The target is now the current CPU.
    Switched,
    /// The target already was the current CPU (`BARRIER_ALREADY_OWNED`).
    AlreadyCurrent,
}

/// The debuggee's processors, as it reported them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CpuInfo {
    pub count: u64,
    /// Bit n set: CPU n runs the guest.
    pub running: u64,
}

impl CpuInfo {
    pub fn is_running(&self, cpu: u64) -> bool {
        cpu < 64 && self.running & (1 << cpu) != 0
    }
}

struct Link {
    transport: Box<dyn Transport>,
    decoder: Decoder,
    /// Random per engine; sent in every Hello.
    nonce: u32,
    /// With a key, every session is authenticated.
    key: Option<Psk>,
    /// `None` until a handshake succeeds, and again when a new one is due.
    session: Option<Session>,
    handshakes: u64,
}

#[derive(Clone, Copy)]
struct Session {
    id: u8,
    /// The Hello's SEQ: request `k` carries `base + k`.
    base: u16,
    /// `k` of the next request (1 ..= SESSION_REQUESTS; beyond that the
    /// session is used up).
    next: u32,
    /// An authenticated session's keys.
    keys: Option<SessionKeys>,
}

/// Counters for diagnostics and tests.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct EngineStats {
    pub decoder: pulse_proto::DecoderStats,
    /// Sessions opened, the first one included.
    pub handshakes: u64,
}

impl Engine {
    /// Opens the transport and performs the handshake.
    pub fn open(config: &EngineConfig) -> Result<Engine, Error> {
        check_budget(config.request_timeout, config.max_attempts)?;
        let spec = TransportSpec::parse(&config.transport).map_err(|problem| {
            Error::MalformedTransport {
                spec: config.transport.clone(),
                problem,
            }
        })?;
        // One budget for the whole call: connecting and the handshake.
        let budget = config.call_budget();
        let deadline = Instant::now() + budget;
        let link = transport::open(&spec, config.key, deadline, budget)?;
        Engine::handshake_by(
            link,
            config.request_timeout,
            config.max_attempts,
            config.key,
            deadline,
        )
    }

    /// An engine over any byte transport (e.g. a scripted one in a fuzz
    /// target or a test): performs the handshake within
    /// `request_timeout * max_attempts`.
    pub fn with_transport(
        transport: Box<dyn Transport>,
        request_timeout: Duration,
        max_attempts: u32,
    ) -> Result<Engine, Error> {
        check_budget(request_timeout, max_attempts)?;
        let deadline = Instant::now() + request_timeout.saturating_mul(max_attempts);
        Engine::handshake_by(transport, request_timeout, max_attempts, None, deadline)
    }

    fn handshake_by(
        transport: Box<dyn Transport>,
        request_timeout: Duration,
        max_attempts: u32,
        key: Option<Psk>,
        deadline: Instant,
    ) -> Result<Engine, Error> {
        let mut link = Link {
            transport,
            decoder: Decoder::new(),
            nonce: crate::entropy::u64() as u32,
            key,
            session: None,
            handshakes: 0,
        };
        let capabilities = link.handshake(request_timeout, max_attempts, deadline)?;
        Ok(Engine {
            link: Mutex::new(link),
            request_timeout,
            max_attempts,
            lost: AtomicBool::new(false),
            capabilities,
            current_cpu: AtomicU8::new(0),
        })
    }

    /// Writes `value` to `msr` on the current CPU as its guest will see it.
    pub fn write_msr(&self, msr: u32, value: u64) -> Result<(), Error> {
        self.write_on(self.current_cpu.load(Ordering::Acquire), msr, value)
    }

    /// Writes `value` to `msr` on every running CPU in one request, or on
    /// none if any of them refuses it.
    pub fn write_msr_all_cpus(&self, msr: u32, value: u64) -> Result<(), Error> {
        self.write_on(ALL_CPUS, msr, value)
    }

    fn write_on(&self, cpu: u8, msr: u32, value: u64) -> Result<(), Error> {
        match self.call(&Message::WriteMsr { cpu, msr, value })? {
            Message::WriteAck { status } => {
                wire_result(status, MsrAccess::Write { msr, value }, cpu)
            }
            _ => Err(Error::InvalidPacket(
                "a WriteMsr was not answered by a WriteAck",
            )),
        }
    }

    /// Reads what the current CPU's guest would read from `msr`.
    pub fn read_msr(&self, msr: u32) -> Result<u64, Error> {
        let cpu = self.current_cpu.load(Ordering::Acquire);
        match self.call(&Message::ReadMsr { cpu, msr })? {
            Message::ReadAck { status, value } => {
                wire_result(status, MsrAccess::Read { msr }, cpu).map(|_| value)
            }
            _ => Err(Error::InvalidPacket(
                "a ReadMsr was not answered by a ReadAck",
            )),
        }
    }

    /// The debuggee's processor count and which of them run, asked now.
    pub fn cpu_info(&self) -> Result<CpuInfo, Error> {
        match self.call(&Message::CpuInfo)? {
            Message::CpuInfoAck { count, running } if usize::from(count) <= 64 => Ok(CpuInfo {
                count: count.into(),
                running,
            }),
            _ => Err(Error::InvalidPacket(
                "a CpuInfo was not answered by a CpuInfoAck of at most 64 CPUs",
            )),
        }
    }

    /// The CPU `write_msr`/`read_msr` act on (0 after `open`).
    pub fn current_cpu(&self) -> u64 {
        self.current_cpu.load(Ordering::Acquire).into()
    }

    /// Makes `target` the current CPU: `BARRIER_NO_CPU` past the count,
    /// `BARRIER_OWNER_INACTIVE` for a CPU that does not run; on either error
    /// the current CPU stays.
    pub fn switch_cpu(&self, target: u64) -> Result<Switched, Error> {
        let info = self.cpu_info()?;
        if target >= info.count {
            return Err(Error::NoCpu {
                cpu: target,
                count: Some(info.count),
            });
        }
        if target == self.current_cpu() {
            return Ok(Switched::AlreadyCurrent);
        }
        if !info.is_running(target) {
            return Err(Error::CpuInactive { cpu: target });
        }
        // `target < count <= 64`, so it fits the wire's byte.
        self.current_cpu.store(target as u8, Ordering::Release);
        Ok(Switched::Switched)
    }

    /// Capability bits the debuggee announced (`pulse_proto::message::caps`).
    pub fn capabilities(&self) -> u32 {
        self.capabilities
    }

    /// Runs `inspect` on the engine's transport (waiting for the link like
    /// a call does, without a deadline): for tests and demos that look at
    /// an in-process debuggee.
    pub fn inspect_transport<R>(&self, inspect: impl FnOnce(&dyn Transport) -> R) -> R {
        inspect(&*self.link.lock().transport)
    }

    pub fn stats(&self) -> EngineStats {
        let link = self.link.lock();
        EngineStats {
            decoder: link.decoder.stats(),
            handshakes: link.handshakes,
        }
    }

    fn call(&self, request: &Message) -> Result<Message, Error> {
        if self.lost.load(Ordering::Acquire) {
            return Err(Error::AlreadyLost);
        }
        let budget = self.request_timeout.saturating_mul(self.max_attempts);
        let deadline = Instant::now() + budget;
        let mut link = self
            .link
            .try_lock_until(deadline)
            .ok_or(Error::EngineBusy { budget })?;
        // Another thread may have lost the link while we waited for it.
        if self.lost.load(Ordering::Acquire) {
            return Err(Error::AlreadyLost);
        }
        let result = link.request(request, self.request_timeout, self.max_attempts, deadline);
        if matches!(&result, Err(e) if e.ends_the_link()) {
            self.lost.store(true, Ordering::Release);
        }
        result
    }
}

/// A zero timeout or attempt count would make every call fail at once.
fn check_budget(request_timeout: Duration, max_attempts: u32) -> Result<(), Error> {
    if request_timeout.is_zero() {
        return Err(Error::InvalidArgument(
            "the request timeout is 0".to_owned(),
        ));
    }
    if max_attempts == 0 {
        return Err(Error::InvalidArgument(
            "the number of attempts is 0".to_owned(),
        ));
    }
    Ok(())
}

/// The debuggee's verdict on `access`, sent for `cpu` (an index or `ALL_CPUS`).
fn wire_result(status: WireStatus, access: MsrAccess, cpu: u8) -> Result<(), Error> {
    let on = match cpu {
        ALL_CPUS => OnCpu::EveryRunning,
        n => OnCpu::One(n.into()),
    };
    match status {
        WireStatus::Ok => Ok(()),
        WireStatus::GeneralProtection => Err(Error::GeneralProtection { access, on }),
        WireStatus::NoCpu => Err(Error::NoCpu {
            cpu: cpu.into(),
            count: None,
        }),
        WireStatus::CpuInactive => Err(Error::CpuInactive { cpu: cpu.into() }),
    }
}

/// What a received frame means for the outstanding request.
enum Verdict {
    /// Not ours (stale, another session, garbage that passed the CRC).
    Ignore,
    Answer(u8, Message),
    Fail(Failure),
}

/// Why an exchange ended without an answer.
#[derive(Debug)]
enum Failure {
    Error(Error),
    /// The debuggee expects an earlier request of the session: open a new
    /// session and go on in it.
    OutOfSequence,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::Error(error)
    }
}

/// Sessions opened after an `OutOfSequence` within one call, at most: the
/// debuggee cannot answer a fresh session's first request that way, so a
/// second one means it is confused.
const RESYNCS_PER_CALL: u32 = 2;

impl Link {
    /// Opens a new session; returns the debuggee's capabilities.
    fn handshake(
        &mut self,
        per_attempt: Duration,
        attempts: u32,
        deadline: Instant,
    ) -> Result<u32, Error> {
        self.session = None;
        self.handshakes += 1;
        // A fresh random SEQ per Hello: its answer cannot be mistaken for an
        // answer in an earlier session, nor its bytes for an earlier Hello.
        let base = crate::entropy::u64() as u16;
        let (hello, opening) = match self.key {
            None => (
                Message::Hello {
                    version: PROTOCOL_VERSION,
                    nonce: self.nonce,
                },
                Opening::Plain,
            ),
            Some(key) => {
                let nonce = crate::entropy::nonce().ok_or_else(|| {
                    Error::Internal("the OS gave no random numbers for the handshake".to_owned())
                })?;
                (
                    Message::AuthHello {
                        version: PROTOCOL_VERSION,
                        nonce,
                    },
                    Opening::AuthHello { key, nonce },
                )
            }
        };
        let frame = hello.to_frame(NO_SESSION, base);
        let reply = self.exchange(
            &hello,
            frame,
            &opening,
            NO_SESSION,
            base,
            per_attempt,
            attempts,
            deadline,
        );
        let (id, reply) = match reply {
            Ok(answer) => answer,
            // Silence: nobody runs hv-stub there, or it serves someone else.
            Err(Failure::Error(Error::Timeout {
                per_attempt,
                attempts,
            })) => {
                return Err(Error::HandshakeUnanswered {
                    per_attempt,
                    attempts,
                })
            }
            Err(Failure::Error(error)) => return Err(error),
            Err(Failure::OutOfSequence) => {
                return Err(Error::InvalidPacket(
                    "a handshake was answered out of sequence",
                ))
            }
        };
        let (version, capabilities, keys) = match (reply, opening) {
            (
                Message::HelloAck {
                    version,
                    capabilities,
                    ..
                },
                Opening::Plain,
            ) => (version, capabilities, None),
            (
                Message::AuthHelloAck {
                    nonce: debuggee_nonce,
                    version,
                    capabilities,
                    ..
                },
                Opening::AuthHello { key, nonce },
            ) => (
                version,
                capabilities,
                Some(SessionKeys::derive(&key, &nonce, &debuggee_nonce)),
            ),
            _ => {
                return Err(Error::InvalidPacket(
                    "the handshake was not answered by a HelloAck",
                ))
            }
        };
        if version != PROTOCOL_VERSION {
            return Err(Error::RevisionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: Some(version),
            });
        }
        if id == NO_SESSION {
            return Err(Error::InvalidPacket("the HelloAck opened no session"));
        }
        self.session = Some(Session {
            id,
            base,
            next: 1,
            keys,
        });
        Ok(capabilities)
    }

    /// One request in the current session, opening a new session first when
    /// none is usable.
    fn request(
        &mut self,
        request: &Message,
        per_attempt: Duration,
        attempts: u32,
        deadline: Instant,
    ) -> Result<Message, Error> {
        let mut resyncs = 0;
        loop {
            let session = match self.session {
                Some(s) if s.next <= u32::from(SESSION_REQUESTS) => s,
                _ => {
                    self.handshake(per_attempt, attempts, deadline)?;
                    self.session
                        .expect("a handshake that succeeds opens a session")
                }
            };
            // The SEQ is used up whatever happens: a request that times out
            // may still arrive, so its SEQ never names another request.
            self.session = Some(Session {
                next: session.next + 1,
                ..session
            });
            // `next <= SESSION_REQUESTS`, so k fits the wire's u16.
            let k = session.next as u16;
            let seq = session.base.wrapping_add(k);
            let (frame, opening) = match session.keys {
                None => (request.to_frame(session.id, seq), Opening::Plain),
                Some(keys) => (
                    keys.seal(Direction::ToDebuggee, request, session.id, seq, k),
                    Opening::Sealed { keys, k },
                ),
            };
            let answer = self.exchange(
                request,
                frame,
                &opening,
                session.id,
                seq,
                per_attempt,
                attempts,
                deadline,
            );
            match answer {
                Ok((_, reply)) => return Ok(reply),
                Err(Failure::Error(error @ Error::Timeout { .. })) => {
                    // The request may never have arrived, and the debuggee
                    // would hold every later one for it: the next request
                    // goes into a new session, which makes this one inert.
                    self.session = None;
                    return Err(error);
                }
                Err(Failure::Error(error)) => return Err(error),
                Err(Failure::OutOfSequence) => {
                    self.session = None;
                    resyncs += 1;
                    if resyncs > RESYNCS_PER_CALL {
                        return Err(Error::InvalidPacket(
                            "the debuggee kept saying OutOfSequence in fresh sessions",
                        ));
                    }
                }
            }
        }
    }

    /// Sends `frame` (`request` as (`session`, `seq`)) and waits for its
    /// answer, resending on silence. Returns the session the answer
    /// carries and the answer.
    #[allow(clippy::too_many_arguments)]
    fn exchange(
        &mut self,
        request: &Message,
        frame: FrameBuf,
        opening: &Opening,
        session: u8,
        seq: u16,
        per_attempt: Duration,
        attempts: u32,
        deadline: Instant,
    ) -> Result<(u8, Message), Failure> {
        let mut buf = [0u8; 256];
        for _ in 0..attempts {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let attempt_deadline = (now + per_attempt).min(deadline);
            match self.transport.send(frame.as_bytes(), attempt_deadline) {
                Ok(()) => {}
                Err(LinkError::TimedOut) => continue,
                Err(e) => return Err(Error::from(e).into()),
            }
            loop {
                // Frames are judged as the decoder completes them; nothing
                // is allocated on this path.
                let mut verdict = Verdict::Ignore;
                let mut frames = 0usize;
                let mut take = |f: RawFrame| {
                    frames += 1;
                    if let Verdict::Ignore = verdict {
                        verdict = judge(session, request, seq, opening, &f);
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
                    Err(e) => return Err(Error::from(e).into()),
                }
                match verdict {
                    Verdict::Ignore => {}
                    Verdict::Answer(session, message) => return Ok((session, message)),
                    Verdict::Fail(failure) => return Err(failure),
                }
            }
        }
        Err(Error::Timeout {
            per_attempt,
            attempts,
        }
        .into())
    }
}

/// How the answers to the outstanding request are protected.
enum Opening {
    /// The unauthenticated protocol.
    Plain,
    /// An AuthHello with the client's `nonce`: the AuthHelloAck must open
    /// with the keys derived from it and the debuggee's nonce.
    AuthHello { key: Psk, nonce: [u8; NONCE_LEN] },
    /// A request of an authenticated session at position `k`.
    Sealed { keys: SessionKeys, k: u16 },
}

/// What `frame` means for the outstanding `request` (sent as `seq` in
/// `session`).
fn judge(session: u8, request: &Message, seq: u16, opening: &Opening, frame: &RawFrame) -> Verdict {
    let hello = matches!(request, Message::Hello { .. } | Message::AuthHello { .. });
    let expected = request.kind() | kind::RESPONSE_BIT;
    if frame.seq != seq {
        return Verdict::Ignore;
    }
    // A HelloAck carries the new session; everything else echoes ours.
    let session_ok = frame.session == session || (hello && frame.kind == expected);
    if !session_ok {
        return Verdict::Ignore;
    }
    let opened;
    let frame = match opening {
        Opening::Plain => frame,
        Opening::Sealed { keys, k } => match keys.open(Direction::ToClient, frame, *k) {
            Some(plain) => {
                opened = plain;
                &opened
            }
            // Forged, altered or replayed: not an answer.
            None => return Verdict::Ignore,
        },
        Opening::AuthHello { key, nonce } => return judge_auth_hello(key, nonce, frame),
    };
    match Message::parse(frame) {
        Ok(Message::Nak { reason }) => Verdict::Fail(match reason {
            // Our session is gone: the debuggee restarted, or another
            // client's handshake replaced it.
            NakReason::BadSession => Error::SessionUnknown.into(),
            NakReason::SessionTakenOver => Error::SessionTakenOver.into(),
            NakReason::UnsupportedVersion => unsupported_version().into(),
            NakReason::UnknownType => {
                Error::InvalidPacket("the debuggee does not know this request type").into()
            }
            NakReason::BadPayload => {
                Error::InvalidPacket("the debuggee found the request's payload malformed").into()
            }
            NakReason::OutOfSequence if !hello => Failure::OutOfSequence,
            NakReason::OutOfSequence => {
                Error::InvalidPacket("a handshake was answered out of sequence").into()
            }
            NakReason::AuthRequired => Error::AccessDenied(KEY_REQUIRED).into(),
            NakReason::AuthUnavailable => Error::AccessDenied(NO_AUTH_ON_OFFER).into(),
        }),
        Ok(message) if frame.kind == expected => Verdict::Answer(frame.session, message),
        // Our id on a frame that is not our answer: the peer is confused.
        Ok(_) => Verdict::Fail(
            Error::InvalidPacket("the debuggee answered with another kind of message").into(),
        ),
        Err(_) => Verdict::Fail(Error::InvalidPacket("the answer does not parse").into()),
    }
}

/// The answer to an AuthHello (SEQ and session already match): an
/// AuthHelloAck that opens proves the debuggee holds our key; one that does
/// not, or any refusal, is `ACCESS_DENIED` (a client with a key never
/// settles for less).
fn judge_auth_hello(key: &Psk, nonce: &[u8; NONCE_LEN], frame: &RawFrame) -> Verdict {
    if frame.kind == kind::AUTH_HELLO_ACK {
        let mut debuggee_nonce = [0u8; NONCE_LEN];
        if frame.payload().len() >= NONCE_LEN {
            debuggee_nonce.copy_from_slice(&frame.payload()[..NONCE_LEN]);
        }
        let keys = SessionKeys::derive(key, nonce, &debuggee_nonce);
        return match keys
            .open(Direction::ToClient, frame, 0)
            .map(|f| Message::parse(&f))
        {
            Some(Ok(message)) => Verdict::Answer(frame.session, message),
            // The debuggee does not hold our key.
            None => Verdict::Fail(Error::AccessDenied(KEY_MISMATCH).into()),
            Some(Err(_)) => Verdict::Fail(
                Error::InvalidPacket("the authenticated handshake answer does not parse").into(),
            ),
        };
    }
    match Message::parse(frame) {
        Ok(Message::Nak {
            reason: NakReason::UnsupportedVersion,
        }) => Verdict::Fail(unsupported_version().into()),
        // AuthUnavailable, or a debuggee that does not know AuthHello at
        // all: no authentication on offer.
        Ok(Message::Nak { .. }) => Verdict::Fail(Error::AccessDenied(NO_AUTH_ON_OFFER).into()),
        _ => Verdict::Ignore,
    }
}

/// Why an authenticated link was refused.
const KEY_REQUIRED: &str = "the debuggee holds a key and this engine has none";
const KEY_MISMATCH: &str = "the debuggee does not hold this engine's key";
const NO_AUTH_ON_OFFER: &str =
    "this engine has a key and the debuggee offers no authentication (no fallback to an unauthenticated link)";

/// The debuggee refused our protocol version without naming its own.
fn unsupported_version() -> Error {
    Error::RevisionMismatch {
        ours: PROTOCOL_VERSION,
        theirs: None,
    }
}
