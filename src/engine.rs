//! The engine: one session with one debuggee over one transport, with a
//! window of requests in flight (module [`crate::pipeline`]).
//!
//! Every call, synchronous or asynchronous, is a request submitted to the
//! pipeline: it is sent at once if the session's window has room, resent
//! (the identical frame, same sequence number) when its answer is late, up
//! to `max_attempts` sends `request_timeout` apart, and completes within
//! `request_timeout * max_attempts` of its submission. The debuggee answers
//! a resend from its kept answers, so a write is never applied twice, and
//! runs requests in the order they were submitted. Threads overlap: none
//! waits for another's round trip.
//!
//! Sessions (docs/PROTOCOL.md section 5): request `k` of a session has SEQ
//! `base + k`. The engine opens a new session before `k` would pass
//! `SESSION_REQUESTS`, and after a request timed out (it may never have
//! arrived, and the debuggee would hold later ones for it).
//!
//! With a key (docs/PROTOCOL.md section 9) the handshake is an AuthHello
//! with a fresh nonce; the debuggee's AuthHelloAck must open with the keys
//! derived from both nonces, or the engine is refused (`ACCESS_DENIED`, as
//! is any answer saying the debuggee offers no authentication: no
//! downgrade). Every later frame is sealed; an answer that does not open is
//! ignored like noise.

use std::any::Any;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pulse_proto::message::{Message, WireStatus, ALL_CPUS};
use pulse_proto::Psk;

use crate::config::{EngineConfig, TransportSpec};
use crate::error::{Error, MsrAccess, OnCpu};
use crate::pipeline::{Pipeline, PipelineStats, Ticket, Timing};
use crate::transport::{self, Transport};

/// An open link to a debuggee. Dropping it ends the link: requests still in
/// flight fail with `ConnectionLost`.
pub struct Engine {
    shared: Arc<Shared>,
}

/// What the engine and the requests submitted through it share; a request
/// may outlive its engine (and then fails with `AlreadyLost`).
struct Shared {
    pipeline: Pipeline,
    /// The CPU `write_msr`/`read_msr` act on; every thread shares it. It
    /// travels in each request, so a retransmission always means the CPU it
    /// was sent for.
    current_cpu: AtomicU8,
    /// The in-process debuggee behind a `sim` link.
    debuggee: Option<Box<dyn Any + Send + Sync>>,
}

/// A handle for submitting requests that does not keep the link open.
#[derive(Clone)]
pub struct Submitter {
    shared: Arc<Shared>,
}

/// An MSR operation, as a request carries it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Operation {
    /// WRMSR on the current CPU.
    WriteMsr { msr: u32, value: u64 },
    /// RDMSR on the current CPU.
    ReadMsr { msr: u32 },
    /// WRMSR on every running CPU, all or nothing.
    WriteMsrAllCpus { msr: u32, value: u64 },
}

/// A submitted request: complete once the debuggee answered, or its budget
/// ended, or the link was lost. Clones watch the same request; its outcome
/// is taken once.
#[derive(Clone)]
pub struct Pending {
    shared: Arc<Shared>,
    ticket: Arc<Ticket>,
    operation: Operation,
    /// The CPU it was sent for (`ALL_CPUS` for every running one).
    cpu: u8,
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

/// Counters for diagnostics and tests.
pub type EngineStats = PipelineStats;

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
        let debuggee = transport.in_process_debuggee();
        let timing = Timing {
            per_attempt: request_timeout,
            attempts: max_attempts,
        };
        let (pipeline, _hello_ack) = Pipeline::open(transport, timing, key, deadline)?;
        Ok(Engine {
            shared: Arc::new(Shared {
                pipeline,
                current_cpu: AtomicU8::new(0),
                debuggee,
            }),
        })
    }

    /// Writes `value` to `msr` on the current CPU as its guest will see it.
    pub fn write_msr(&self, msr: u32, value: u64) -> Result<(), Error> {
        self.call(Operation::WriteMsr { msr, value }).map(|_| ())
    }

    /// Writes `value` to `msr` on every running CPU in one request, or on
    /// none if any of them refuses it.
    pub fn write_msr_all_cpus(&self, msr: u32, value: u64) -> Result<(), Error> {
        self.call(Operation::WriteMsrAllCpus { msr, value })
            .map(|_| ())
    }

    /// Reads what the current CPU's guest would read from `msr`.
    pub fn read_msr(&self, msr: u32) -> Result<u64, Error> {
        self.call(Operation::ReadMsr { msr })
    }

    /// The debuggee's processor count and which of them run, asked now.
    pub fn cpu_info(&self) -> Result<CpuInfo, Error> {
        let pipeline = &self.shared.pipeline;
        match pipeline.finish(&pipeline.submit(Message::CpuInfo))? {
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
        self.shared.current_cpu.load(Ordering::Acquire).into()
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
        self.shared
            .current_cpu
            .store(target as u8, Ordering::Release);
        Ok(Switched::Switched)
    }

    /// Capability bits the debuggee announced (`pulse_proto::message::caps`).
    pub fn capabilities(&self) -> u32 {
        self.shared.pipeline.capabilities()
    }

    /// The debuggee behind an in-process link (`sim`), for tests and demos.
    pub fn in_process_debuggee(&self) -> Option<&(dyn Any + Send + Sync)> {
        self.shared.debuggee.as_deref()
    }

    pub fn stats(&self) -> EngineStats {
        self.shared.pipeline.stats()
    }

    /// A handle that submits requests on this engine; it does not keep the
    /// link open (once the engine is dropped, submissions fail).
    pub fn submitter(&self) -> Submitter {
        Submitter {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Submits `operation` and waits for its outcome: a read's value, 0
    /// for a write.
    fn call(&self, operation: Operation) -> Result<u64, Error> {
        let pending = self.submitter().submit(operation);
        let reply = self.shared.pipeline.finish(&pending.ticket)?;
        pending.judge(reply)
    }
}

impl Drop for Engine {
    /// Ends the link; requests still in flight fail with `ConnectionLost`.
    fn drop(&mut self) {
        self.shared.pipeline.close();
    }
}

impl Submitter {
    /// Submits `operation` for the current CPU (for every running one with
    /// [`Operation::WriteMsrAllCpus`]); it is sent at once if the window
    /// has room. Requests run on the debuggee in submission order.
    pub fn submit(&self, operation: Operation) -> Pending {
        let current = self.shared.current_cpu.load(Ordering::Acquire);
        let (cpu, request) = match operation {
            Operation::WriteMsr { msr, value } => (
                current,
                Message::WriteMsr {
                    cpu: current,
                    msr,
                    value,
                },
            ),
            Operation::ReadMsr { msr } => (current, Message::ReadMsr { cpu: current, msr }),
            Operation::WriteMsrAllCpus { msr, value } => (
                ALL_CPUS,
                Message::WriteMsr {
                    cpu: ALL_CPUS,
                    msr,
                    value,
                },
            ),
        };
        Pending {
            shared: Arc::clone(&self.shared),
            ticket: self.shared.pipeline.submit(request),
            operation,
            cpu,
        }
    }
}

impl Pending {
    /// Whether the request has completed (one the I/O thread left pending
    /// past its budget completes now, as timed out).
    pub fn is_done(&self) -> bool {
        self.shared.pipeline.expire_if_late(&self.ticket);
        self.ticket.is_done()
    }

    /// Waits until the request completes or `until` passes; true if it
    /// completed.
    pub fn wait_until(&self, until: Instant) -> bool {
        self.ticket.wait_until(until)
    }

    /// When the request's budget ends: it completes by then (plus
    /// scheduling slack).
    pub fn deadline(&self) -> Instant {
        self.ticket.deadline()
    }

    pub fn operation(&self) -> Operation {
        self.operation
    }

    /// The outcome of a completed request, as the synchronous call would
    /// have returned it (a read's value; 0 for a write); `None` while it is
    /// pending.
    pub fn outcome(&self) -> Option<Result<u64, Error>> {
        self.shared.pipeline.expire_if_late(&self.ticket);
        Some(self.ticket.take()?.and_then(|reply| self.judge(reply)))
    }

    /// The answer's meaning for this request.
    fn judge(&self, reply: Message) -> Result<u64, Error> {
        match (self.operation, reply) {
            (
                Operation::WriteMsr { msr, value } | Operation::WriteMsrAllCpus { msr, value },
                Message::WriteAck { status },
            ) => wire_result(status, MsrAccess::Write { msr, value }, self.cpu).map(|_| 0),
            (Operation::ReadMsr { msr }, Message::ReadAck { status, value }) => {
                wire_result(status, MsrAccess::Read { msr }, self.cpu).map(|_| value)
            }
            (Operation::ReadMsr { .. }, _) => Err(Error::InvalidPacket(
                "a ReadMsr was not answered by a ReadAck",
            )),
            _ => Err(Error::InvalidPacket(
                "a WriteMsr was not answered by a WriteAck",
            )),
        }
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
