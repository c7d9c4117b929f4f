//! Requests in flight: the windowed half of the protocol (docs/PROTOCOL.md
//! section 5) on the client side.
//!
//! Any thread submits a request: it joins a queue, gets the session's next
//! position as soon as the window has room, and its frame is sent at once
//! by the submitting thread. One I/O thread per engine waits on the link,
//! matches each answer to the request whose SEQ it echoes, completes that
//! request's [`Ticket`], and keeps the timers: it retransmits a request
//! whose answer is late (that request alone) and fails one whose attempts
//! are used up. Since the debuggee would hold every later request for one
//! that never arrived, a request that fails that way ends the session: the
//! requests still in flight in it fail too (whether they ran is unknown,
//! and the new session makes every frame of the old one inert), and the
//! next request opens a new session.
//!
//! Nothing blocks on the link but the I/O thread, so N threads overlap
//! instead of queueing on a lock; a synchronous call is a submission and a
//! wait for its ticket.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use pulse_proto::auth::{Direction, NONCE_LEN};
use pulse_proto::message::{kind, Message, NakReason};
use pulse_proto::{
    Decoder, DecoderStats, ExpandedKeys, FrameBuf, Psk, RawFrame, SessionKeys, MAX_WINDOW,
    NO_SESSION, PROTOCOL_VERSION, SESSION_REQUESTS,
};

use crate::error::Error;
use crate::transport::{LinkError, Sender, Transport};

/// How long the I/O thread sleeps when nothing is in flight: a request
/// submitted meanwhile is sent at once by its submitter, only its first
/// retransmission can be this much late.
const IDLE_WAIT: Duration = Duration::from_millis(10);
/// A receive slice when the link has no separate sending handle, so that
/// sends get their turn.
const TURN: Duration = Duration::from_millis(2);
/// How long a waiter gives the I/O thread past a request's budget before it
/// calls the request timed out itself (scheduling slack on a busy machine).
const GRACE: Duration = Duration::from_millis(50);

/// Retransmission timing: every request gets `attempts` sends, each
/// waiting `per_attempt` for its answer.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub per_attempt: Duration,
    pub attempts: u32,
}

impl Timing {
    /// A request's whole budget.
    pub fn budget(&self) -> Duration {
        self.per_attempt.saturating_mul(self.attempts)
    }

    fn timed_out(&self) -> Error {
        Error::Timeout {
            per_attempt: self.per_attempt,
            attempts: self.attempts,
        }
    }
}

/// The outcome of one submitted request, filled in once.
pub struct Ticket {
    outcome: Mutex<Option<Result<Message, Error>>>,
    done: Condvar,
    /// When the request's budget ends.
    deadline: Instant,
}

impl Ticket {
    fn new(deadline: Instant) -> Arc<Ticket> {
        Arc::new(Ticket {
            outcome: Mutex::new(None),
            done: Condvar::new(),
            deadline,
        })
    }

    /// The first completion wins; later ones (a late answer after a
    /// timeout) are dropped.
    fn complete(&self, outcome: Result<Message, Error>) {
        let mut slot = self.outcome.lock();
        if slot.is_none() {
            *slot = Some(outcome);
            self.done.notify_all();
        }
    }

    pub fn is_done(&self) -> bool {
        self.outcome.lock().is_some()
    }

    /// When the request's budget ends.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Waits until the request completes or `until` passes; true if it
    /// completed.
    pub fn wait_until(&self, until: Instant) -> bool {
        let mut slot = self.outcome.lock();
        while slot.is_none() {
            if self.done.wait_until(&mut slot, until).timed_out() {
                return slot.is_some();
            }
        }
        true
    }

    /// Takes the outcome of a completed request (`None` while pending, or
    /// if it was taken already).
    pub fn take(&self) -> Option<Result<Message, Error>> {
        self.outcome.lock().take()
    }
}

/// The sending half of the link.
enum Out {
    /// A handle of its own: sends never wait for the I/O thread.
    Split(Box<dyn Sender>),
    /// One handle for both directions, taken in turns.
    Turns(Arc<Mutex<Box<dyn Transport>>>),
    /// The engine closed the link (its handle is released: a serial
    /// device is free for the next engine at once).
    Closed,
}

impl Out {
    fn send(&mut self, bytes: &[u8], deadline: Instant) -> Result<(), LinkError> {
        match self {
            Out::Split(sender) => sender.send(bytes, deadline),
            Out::Turns(link) => link.lock().send(bytes, deadline),
            Out::Closed => Err(LinkError::Lost(std::io::Error::other(
                "the engine was destroyed",
            ))),
        }
    }
}

/// The receiving half, owned by the I/O thread.
enum In {
    Split(Box<dyn Transport>),
    Turns(Arc<Mutex<Box<dyn Transport>>>),
}

impl In {
    fn recv(&mut self, buf: &mut [u8], deadline: Instant) -> Result<usize, LinkError> {
        match self {
            In::Split(link) => link.recv(buf, deadline),
            In::Turns(link) => {
                let slice = deadline.min(Instant::now() + TURN);
                let received = link.lock().recv(buf, slice);
                if matches!(received, Err(LinkError::TimedOut)) {
                    // A transport that gives up before the deadline must not
                    // make the I/O thread spin: the rest of the slice is
                    // slept here, with the link free for sends.
                    std::thread::sleep(slice.saturating_duration_since(Instant::now()));
                }
                received
            }
        }
    }
}

/// How the answers to a request in flight are protected.
#[derive(Clone)]
enum Opening {
    Plain,
    /// An AuthHello with the client's `nonce`: the AuthHelloAck must open
    /// with the keys derived from it and the debuggee's nonce.
    AuthHello {
        key: Psk,
        nonce: [u8; NONCE_LEN],
    },
    /// A request of an authenticated session at position `k` (the
    /// session's keys, expanded once for all its frames).
    Sealed {
        keys: Arc<ExpandedKeys>,
        k: u16,
    },
}

#[derive(Clone)]
struct Session {
    id: u8,
    /// The Hello's SEQ: request `k` carries `base + k`.
    base: u16,
    /// Position of the next request (1 ..= SESSION_REQUESTS; beyond that
    /// the session is used up).
    next: u32,
    /// An authenticated session's keys, with their AES key schedules done
    /// once for the session, not per frame.
    keys: Option<Arc<ExpandedKeys>>,
    /// Requests that may be in flight at once.
    window: usize,
}

/// A request sent and not answered yet.
struct InFlight {
    k: u16,
    seq: u16,
    request: Message,
    frame: FrameBuf,
    opening: Opening,
    ticket: Arc<Ticket>,
    sends: u32,
    /// When to resend it (or give up, after the last send).
    retry_at: Instant,
}

/// A request submitted and not sent yet (no room in the window, or no
/// session).
struct Queued {
    request: Message,
    ticket: Arc<Ticket>,
}

/// Counters for diagnostics and tests.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct PipelineStats {
    pub decoder: DecoderStats,
    /// Handshakes started (answered or not), the first one included.
    pub handshakes: u64,
    /// The window of the current session (0 before the first handshake).
    pub window: usize,
    /// Most requests ever in flight at once.
    pub most_in_flight: usize,
    /// Retransmissions sent.
    pub retransmissions: u64,
    /// Answers that matched no request in flight (late copies, answers to
    /// requests completed already, or to none sent).
    pub unmatched_answers: u64,
}

struct State {
    timing: Timing,
    /// Random per engine; sent in every plain Hello.
    nonce: u32,
    key: Option<Psk>,
    session: Option<Session>,
    /// The handshake in flight.
    hello: Option<InFlight>,
    /// Requests in flight, by position.
    in_flight: VecDeque<InFlight>,
    queue: VecDeque<Queued>,
    /// Why the link is gone, once it is: everything fails at once from
    /// then on.
    lost: Option<Error>,
    capabilities: u32,
    stats: PipelineStats,
}

/// Frames to send once the state's lock is released.
type Outgoing = Vec<FrameBuf>;

impl State {
    /// Queues a request and starts what can start.
    fn submit(&mut self, request: Message, ticket: Arc<Ticket>, out: &mut Outgoing) {
        if self.lost.is_some() {
            return ticket.complete(Err(Error::AlreadyLost));
        }
        self.queue.push_back(Queued { request, ticket });
        self.pump(Instant::now(), out);
    }

    /// Sends what the window and the session allow.
    fn pump(&mut self, now: Instant, out: &mut Outgoing) {
        if self.lost.is_some() || self.hello.is_some() {
            return;
        }
        loop {
            let Some(session) = self.session.as_mut() else {
                if !self.queue.is_empty() {
                    self.start_hello(now, None, out);
                }
                return;
            };
            if self.queue.is_empty() || self.in_flight.len() >= session.window {
                return;
            }
            if session.next > u32::from(SESSION_REQUESTS) {
                // Used up: a new session once the old one's requests are in.
                if self.in_flight.is_empty() {
                    self.session = None;
                    continue;
                }
                return;
            }
            let Queued { request, ticket } = self.queue.pop_front().expect("not empty");
            // `next <= SESSION_REQUESTS`, so k fits the wire's u16.
            let k = session.next as u16;
            session.next += 1;
            let seq = session.base.wrapping_add(k);
            let (frame, opening) = match &session.keys {
                None => (request.to_frame(session.id, seq), Opening::Plain),
                Some(keys) => (
                    keys.seal(Direction::ToDebuggee, &request, session.id, seq, k),
                    Opening::Sealed {
                        keys: Arc::clone(keys),
                        k,
                    },
                ),
            };
            out.push(frame);
            let retry_at = (now + self.timing.per_attempt).min(ticket.deadline);
            self.in_flight.push_back(InFlight {
                k,
                seq,
                request,
                frame,
                opening,
                ticket,
                sends: 1,
                retry_at,
            });
            self.stats.most_in_flight = self.stats.most_in_flight.max(self.in_flight.len());
        }
    }

    /// Sends a Hello; `ticket` learns how it ended (the engine's first
    /// handshake waits on it; later ones have nobody waiting).
    fn start_hello(&mut self, now: Instant, ticket: Option<Arc<Ticket>>, out: &mut Outgoing) {
        let ticket = ticket.unwrap_or_else(|| Ticket::new(now + self.timing.budget()));
        if let Some(why) = &self.lost {
            // E.g. a peer that hung up before the first Hello went out.
            return ticket.complete(Err(why.duplicate()));
        }
        self.session = None;
        self.stats.handshakes += 1;
        // A fresh random SEQ per Hello: its answer cannot be mistaken for an
        // answer in an earlier session, nor its bytes for an earlier Hello.
        let base = crate::entropy::u64() as u16;
        let (request, opening) = match self.key {
            None => (
                Message::Hello {
                    version: PROTOCOL_VERSION,
                    nonce: self.nonce,
                },
                Opening::Plain,
            ),
            Some(key) => match crate::entropy::nonce() {
                Some(nonce) => (
                    Message::AuthHello {
                        version: PROTOCOL_VERSION,
                        nonce,
                    },
                    Opening::AuthHello { key, nonce },
                ),
                None => {
                    let error = || {
                        Error::Internal("the OS gave no random numbers for the handshake".into())
                    };
                    ticket.complete(Err(error()));
                    return self.fail_queue(error);
                }
            },
        };
        let frame = request.to_frame(NO_SESSION, base);
        out.push(frame);
        self.hello = Some(InFlight {
            k: 0,
            seq: base,
            request,
            frame,
            opening,
            retry_at: (now + self.timing.per_attempt).min(ticket.deadline),
            ticket,
            sends: 1,
        });
    }

    /// A CRC-valid frame from the debuggee.
    fn receive(&mut self, frame: &RawFrame, out: &mut Outgoing) {
        let now = Instant::now();
        if let Some(hello) = self.hello.as_ref().filter(|h| h.seq == frame.seq) {
            match judge(NO_SESSION, hello, frame) {
                Verdict::Ignore => {}
                Verdict::Answer(id, reply) => self.hello_answered(id, reply),
                Verdict::Fail(error) => self.hello_failed(error),
            }
            return self.pump(now, out);
        }
        let Some((id, base)) = self
            .session
            .as_ref()
            .filter(|s| s.id == frame.session)
            .map(|s| (s.id, s.base))
        else {
            self.stats.unmatched_answers += 1;
            return;
        };
        let k = frame.seq.wrapping_sub(base);
        let Some(at) = self.in_flight.iter().position(|r| r.k == k) else {
            self.stats.unmatched_answers += 1;
            return;
        };
        match judge(id, &self.in_flight[at], frame) {
            Verdict::Ignore => self.stats.unmatched_answers += 1,
            Verdict::Answer(_, reply) => {
                let done = self.in_flight.remove(at).expect("found");
                done.ticket.complete(Ok(reply));
            }
            Verdict::Fail(error) => {
                let done = self.in_flight.remove(at).expect("found");
                if error.ends_the_link() {
                    self.fail_all(|| error.duplicate());
                }
                done.ticket.complete(Err(error));
            }
        }
        self.pump(now, out);
    }

    fn hello_answered(&mut self, id: u8, reply: Message) {
        let hello = self.hello.take().expect("a handshake in flight");
        let (version, capabilities, window, keys) = match (reply, hello.opening.clone()) {
            (
                Message::HelloAck {
                    version,
                    capabilities,
                    window,
                },
                Opening::Plain,
            ) => (version, capabilities, window, None),
            (
                Message::AuthHelloAck {
                    nonce: debuggee_nonce,
                    version,
                    capabilities,
                    window,
                },
                Opening::AuthHello { key, nonce },
            ) => (
                version,
                capabilities,
                window,
                Some(Arc::new(
                    SessionKeys::derive(&key, &nonce, &debuggee_nonce).expand(),
                )),
            ),
            _ => {
                return self.hello_failed_with(
                    hello,
                    Error::InvalidPacket("the handshake was not answered by a HelloAck"),
                )
            }
        };
        let refusal = if version != PROTOCOL_VERSION {
            Some(Error::RevisionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: Some(version),
            })
        } else if id == NO_SESSION {
            Some(Error::InvalidPacket("the HelloAck opened no session"))
        } else if window == 0 || window > MAX_WINDOW {
            Some(Error::InvalidPacket(
                "the HelloAck announced a window outside 1..=64",
            ))
        } else {
            None
        };
        if let Some(error) = refusal {
            return self.hello_failed_with(hello, error);
        }
        self.session = Some(Session {
            id,
            base: hello.seq,
            next: 1,
            keys,
            window: window.into(),
        });
        self.capabilities = capabilities;
        self.stats.window = window.into();
        hello.ticket.complete(Ok(reply));
    }

    fn hello_failed(&mut self, error: Error) {
        let hello = self.hello.take().expect("a handshake in flight");
        self.hello_failed_with(hello, error);
    }

    /// The requests waiting for the session fail as the handshake did.
    fn hello_failed_with(&mut self, hello: InFlight, error: Error) {
        self.fail_queue(|| error.duplicate());
        if error.ends_the_link() {
            self.lost = Some(error.duplicate());
        }
        hello.ticket.complete(Err(error));
    }

    /// Resends what is late, fails what has used its budget.
    fn tick(&mut self, now: Instant, out: &mut Outgoing) {
        let timing = self.timing;
        if let Some(hello) = self.hello.as_mut().filter(|h| h.retry_at <= now) {
            if hello.sends >= timing.attempts || now >= hello.ticket.deadline {
                // Silence: nobody runs hv-stub there, or it serves someone else.
                self.hello_failed(Error::HandshakeUnanswered {
                    per_attempt: timing.per_attempt,
                    attempts: timing.attempts,
                });
            } else {
                resend(hello, timing, now, out);
                self.stats.retransmissions += 1;
            }
        }
        let used_up = |r: &InFlight| r.sends >= timing.attempts || now >= r.ticket.deadline;
        if self
            .in_flight
            .iter()
            .any(|r| r.retry_at <= now && used_up(r))
        {
            // It may never have arrived, and the debuggee holds every later
            // request for it: the session ends here.
            self.session = None;
            for r in self.in_flight.drain(..) {
                r.ticket.complete(Err(timing.timed_out()));
            }
        }
        for r in self.in_flight.iter_mut().filter(|r| r.retry_at <= now) {
            resend(r, timing, now, out);
            self.stats.retransmissions += 1;
        }
        while self.queue.front().is_some_and(|q| q.ticket.deadline <= now) {
            let late = self.queue.pop_front().expect("not empty");
            late.ticket.complete(Err(timing.timed_out()));
        }
        self.pump(now, out);
    }

    /// When `tick` has something to do next.
    fn next_timer(&self) -> Option<Instant> {
        let retries = self.hello.iter().chain(&self.in_flight).map(|r| r.retry_at);
        let queued = self.queue.iter().map(|q| q.ticket.deadline);
        retries.chain(queued).min()
    }

    fn fail_queue(&mut self, error: impl Fn() -> Error) {
        for q in self.queue.drain(..) {
            q.ticket.complete(Err(error()));
        }
    }

    /// The link is gone: every request fails, now and later.
    fn fail_all(&mut self, error: impl Fn() -> Error) {
        self.lost.get_or_insert_with(&error);
        self.session = None;
        if let Some(hello) = self.hello.take() {
            hello.ticket.complete(Err(error()));
        }
        for r in self.in_flight.drain(..) {
            r.ticket.complete(Err(error()));
        }
        self.fail_queue(error);
    }

    /// A send failed without losing the link: the requests in flight may
    /// have gone out in part, so the session ends as after a timeout.
    fn send_failed(&mut self, error: &Error) {
        self.session = None;
        if let Some(hello) = self.hello.take() {
            self.hello_failed_with(hello, error.duplicate());
        }
        for r in self.in_flight.drain(..) {
            r.ticket.complete(Err(error.duplicate()));
        }
    }
}

fn resend(r: &mut InFlight, timing: Timing, now: Instant, out: &mut Outgoing) {
    r.sends += 1;
    r.retry_at = (now + timing.per_attempt).min(r.ticket.deadline);
    out.push(r.frame);
}

struct Shared {
    state: Mutex<State>,
    /// The state's timing, readable without its lock (it never changes).
    timing: Timing,
    out: Mutex<Out>,
    closing: AtomicBool,
}

impl Shared {
    /// Sends frames made under the state's lock, after it is released.
    fn send(&self, frames: Outgoing) {
        if frames.is_empty() {
            return;
        }
        let per_attempt = self.timing.per_attempt;
        let mut out = self.out.lock();
        for frame in frames {
            match out.send(frame.as_bytes(), Instant::now() + per_attempt) {
                // The link is slow: the timers resend it.
                Ok(()) | Err(LinkError::TimedOut) => {}
                Err(LinkError::Lost(e)) => {
                    let error = Error::ConnectionLost(e);
                    self.state.lock().fail_all(|| error.duplicate());
                    return;
                }
                Err(e) => {
                    self.state.lock().send_failed(&Error::from(e));
                    return;
                }
            }
        }
    }
}

/// The windowed request machinery of one engine.
pub struct Pipeline {
    shared: Arc<Shared>,
    io: Mutex<Option<JoinHandle<()>>>,
}

impl Pipeline {
    /// Takes over `transport` and performs the handshake by `deadline`;
    /// returns the debuggee's HelloAck.
    pub fn open(
        transport: Box<dyn Transport>,
        timing: Timing,
        key: Option<Psk>,
        deadline: Instant,
    ) -> Result<(Pipeline, Message), Error> {
        let (out, input) = match transport.sender() {
            Some(sender) => (Out::Split(sender), In::Split(transport)),
            None => {
                let link = Arc::new(Mutex::new(transport));
                (Out::Turns(Arc::clone(&link)), In::Turns(link))
            }
        };
        let state = State {
            timing,
            nonce: crate::entropy::u64() as u32,
            key,
            session: None,
            hello: None,
            in_flight: VecDeque::new(),
            queue: VecDeque::new(),
            lost: None,
            capabilities: 0,
            stats: PipelineStats::default(),
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            timing,
            out: Mutex::new(out),
            closing: AtomicBool::new(false),
        });
        let io = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("pulse-io".into())
                .spawn(move || io_thread(&shared, input))
                .map_err(|reason| Error::OutOfResources {
                    doing: "starting the engine's I/O thread".into(),
                    reason,
                })?
        };
        let pipeline = Pipeline {
            shared,
            io: Mutex::new(Some(io)),
        };
        let ticket = Ticket::new(deadline);
        let mut out = Outgoing::new();
        pipeline.shared.state.lock().start_hello(
            Instant::now(),
            Some(Arc::clone(&ticket)),
            &mut out,
        );
        pipeline.shared.send(out);
        let reply = pipeline.finish(&ticket)?;
        Ok((pipeline, reply))
    }

    /// Submits `request`; its ticket completes with the answer or the
    /// error, within the request's budget.
    pub fn submit(&self, request: Message) -> Arc<Ticket> {
        let mut state = self.shared.state.lock();
        let ticket = Ticket::new(Instant::now() + state.timing.budget());
        let mut out = Outgoing::new();
        state.submit(request, Arc::clone(&ticket), &mut out);
        drop(state);
        self.shared.send(out);
        ticket
    }

    /// Waits for `ticket` until its budget ends (plus a little scheduling
    /// slack) and takes its outcome.
    pub fn finish(&self, ticket: &Ticket) -> Result<Message, Error> {
        ticket.wait_until(ticket.deadline + GRACE);
        self.expire_if_late(ticket);
        ticket.take().unwrap_or_else(|| {
            Err(Error::Internal(
                "a request's outcome was taken twice".into(),
            ))
        })
    }

    /// Completes `ticket` as timed out if its budget (plus scheduling
    /// slack) is over and the I/O thread has not completed it (a starved
    /// machine): the request is over for the caller; a late answer is
    /// ignored.
    pub fn expire_if_late(&self, ticket: &Ticket) {
        if !ticket.is_done() && Instant::now() >= ticket.deadline + GRACE {
            ticket.complete(Err(self.shared.timing.timed_out()));
        }
    }

    /// Whether the link is gone.
    pub fn is_lost(&self) -> bool {
        self.shared.state.lock().lost.is_some()
    }

    /// Capability bits of the current (or last) session's debuggee.
    pub fn capabilities(&self) -> u32 {
        self.shared.state.lock().capabilities
    }

    pub fn stats(&self) -> PipelineStats {
        self.shared.state.lock().stats
    }
}

impl Pipeline {
    /// Ends the link: requests still in flight or queued fail with
    /// `ConnectionLost` ("the engine was destroyed"), later submissions with
    /// `AlreadyLost`; the I/O thread ends and the link closes. Idempotent.
    pub fn close(&self) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared
            .state
            .lock()
            .fail_all(|| Error::ConnectionLost(std::io::Error::other("the engine was destroyed")));
        let mut out = self.shared.out.lock();
        if let Out::Split(sender) = &mut *out {
            sender.close();
        }
        // Requests may outlive the engine and keep this pipeline alive:
        // the link's handles go now (the I/O thread drops its own).
        *out = Out::Closed;
        drop(out);
        if let Some(io) = self.io.lock().take() {
            let _ = io.join();
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.close();
    }
}

/// Waits on the link, hands answers to the state, runs its timers.
fn io_thread(shared: &Shared, mut input: In) {
    let mut decoder = Decoder::new();
    let mut buf = [0u8; 512];
    while !shared.closing.load(Ordering::Acquire) {
        let now = Instant::now();
        let wake = shared.state.lock().next_timer();
        // While requests are in flight, sleep until the next timer.
        let deadline = wake.unwrap_or(now + IDLE_WAIT);
        let received = input.recv(&mut buf, deadline);
        let mut out = Outgoing::new();
        {
            let mut state = shared.state.lock();
            let mut take = |f: RawFrame| state.receive(&f, &mut out);
            match received {
                Ok(n) => decoder.feed(&buf[..n], &mut take),
                // Quiet line, bytes held: a stray start marker may be
                // hiding a complete answer behind it.
                Err(LinkError::TimedOut) if decoder.pending() > 0 => decoder.resync(&mut take),
                Err(LinkError::TimedOut) => {}
                Err(LinkError::Lost(e)) => {
                    let error = Error::ConnectionLost(e);
                    state.fail_all(|| error.duplicate());
                    state.stats.decoder = decoder.stats();
                    return;
                }
                Err(e) => state.send_failed(&Error::from(e)),
            }
            state.stats.decoder = decoder.stats();
            state.tick(Instant::now(), &mut out);
        }
        shared.send(out);
    }
}

/// What a frame means for the request in flight `r` (its SEQ matches).
enum Verdict {
    /// Not its answer (another session, or forged, altered or replayed).
    Ignore,
    /// The answer, and the session it carries.
    Answer(u8, Message),
    Fail(Error),
}

fn judge(session: u8, r: &InFlight, frame: &RawFrame) -> Verdict {
    let hello = r.k == 0;
    let expected = r.request.kind() | kind::RESPONSE_BIT;
    // A HelloAck carries the new session; everything else echoes ours.
    let session_ok = frame.session == session || (hello && frame.kind == expected);
    if frame.seq != r.seq || !session_ok {
        return Verdict::Ignore;
    }
    let opened;
    let frame = match &r.opening {
        Opening::Plain => frame,
        Opening::Sealed { keys, k } => match keys.open(Direction::ToClient, frame, *k) {
            Some(plain) => {
                opened = plain;
                &opened
            }
            None => return Verdict::Ignore,
        },
        Opening::AuthHello { key, nonce } => return judge_auth_hello(key, nonce, frame),
    };
    match Message::parse(frame) {
        Ok(Message::Nak { reason }) => Verdict::Fail(nak_error(reason, hello)),
        Ok(message) if frame.kind == expected => Verdict::Answer(frame.session, message),
        // Our SEQ on a frame that is not our answer: the peer is confused.
        Ok(_) => Verdict::Fail(Error::InvalidPacket(
            "the debuggee answered with another kind of message",
        )),
        Err(_) => Verdict::Fail(Error::InvalidPacket("the answer does not parse")),
    }
}

fn nak_error(reason: NakReason, hello: bool) -> Error {
    match reason {
        // Our session is gone: the debuggee restarted, or another client's
        // handshake replaced it.
        NakReason::BadSession => Error::SessionUnknown,
        NakReason::SessionTakenOver => Error::SessionTakenOver,
        NakReason::UnsupportedVersion => unsupported_version(),
        NakReason::UnknownType => {
            Error::InvalidPacket("the debuggee does not know this request type")
        }
        NakReason::BadPayload => {
            Error::InvalidPacket("the debuggee found the request's payload malformed")
        }
        NakReason::OutOfSequence if hello => {
            Error::InvalidPacket("a handshake was answered out of sequence")
        }
        NakReason::OutOfSequence => {
            Error::InvalidPacket("the debuggee says the request is beyond the session's window")
        }
        NakReason::AuthRequired => Error::AccessDenied(KEY_REQUIRED),
        NakReason::AuthUnavailable => Error::AccessDenied(NO_AUTH_ON_OFFER),
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
            None => Verdict::Fail(Error::AccessDenied(KEY_MISMATCH)),
            Some(Err(_)) => Verdict::Fail(Error::InvalidPacket(
                "the authenticated handshake answer does not parse",
            )),
        };
    }
    match Message::parse(frame) {
        Ok(Message::Nak {
            reason: NakReason::UnsupportedVersion,
        }) => Verdict::Fail(unsupported_version()),
        // AuthUnavailable, or a debuggee that does not know AuthHello at
        // all: no authentication on offer.
        Ok(Message::Nak { .. }) => Verdict::Fail(Error::AccessDenied(NO_AUTH_ON_OFFER)),
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
