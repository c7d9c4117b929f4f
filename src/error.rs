//! Why a libpulse operation failed, with the context a person needs: which
//! part of a transport string is malformed, which device could not be
//! opened and the OS's reason, which CPU or MSR was refused. The engine,
//! the configuration and the transports return this type; the C boundary
//! (`ffi.rs`) is the one place that maps it to a `PULSE_STATUS` code, and
//! its `Display` text is what `PsGetLastErrorMessage` and the CLI print.

use std::fmt;
use std::io;
use std::time::Duration;

use crate::config::SpecError;

/// A failed libpulse operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An argument is missing or out of range (a NULL pointer, a config
    /// `Size` too small, a zero timeout, a key of the wrong size).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The transport string does not parse; nothing was opened.
    #[error("transport string `{spec}` is malformed: {problem}")]
    MalformedTransport { spec: String, problem: SpecError },
    /// The device (serial port, pseudo-terminal) does not exist or cannot
    /// be opened as a serial port.
    #[error("cannot open serial device `{device}`: {reason}")]
    NoSuchDevice { device: String, reason: io::Error },
    /// Another client (an engine, a terminal program) holds the serial
    /// device exclusively.
    #[error("serial device `{device}` is busy: another client (another engine or program) holds it ({reason})")]
    DeviceBusy { device: String, reason: io::Error },
    /// The TCP host name does not resolve.
    #[error("cannot resolve host `{host}`: {reason}")]
    HostNotFound { host: String, reason: String },
    /// No address of the TCP host could be reached.
    #[error("cannot connect to {address}: {reason}")]
    Unreachable { address: String, reason: io::Error },
    /// The OS refused to open the device for lack of permission.
    #[error("no permission to open `{target}`: {reason}")]
    DevicePermission { target: String, reason: io::Error },
    /// File descriptors, memory or threads ran out.
    #[error("out of resources while {doing}: {reason}")]
    OutOfResources { doing: String, reason: io::Error },
    /// Memory for the engine's handle ran out.
    #[error("out of memory for the engine's handle")]
    OutOfMemory,
    /// The TCP peer refused the connection.
    #[error(
        "{address} refused the connection: nothing listens there, or the \
         debuggee serves one client only and another one has it (Bochs's COM1)"
    )]
    ConnectionRefused { address: String, reason: io::Error },
    /// Connecting (resolving the name included) did not finish in time.
    #[error("connecting to `{target}` did not finish within the call's budget of {}", ms(.budget))]
    ConnectTimeout { target: String, budget: Duration },
    /// The debuggee did not answer the handshake: not running hv-stub, or
    /// busy with another client (a Bochs COM1 accepts one for its whole run).
    #[error(
        "the debuggee did not answer the handshake ({attempts} attempt(s) of {} each): it is not \
         running hv-stub, or it already serves another client (a Bochs debuggee accepts one \
         client for its whole run)",
        ms(.per_attempt)
    )]
    HandshakeUnanswered {
        per_attempt: Duration,
        attempts: u32,
    },
    /// No valid response to a request within its budget.
    #[error(
        "no valid response from the debuggee within {attempts} attempt(s) of {} each",
        ms(.per_attempt)
    )]
    Timeout {
        per_attempt: Duration,
        attempts: u32,
    },
    /// `PsRequestWait`'s own time ran out before the request completed.
    #[error(
        "the request did not complete within the wait's {}; it is still in flight and \
         completes within its own budget",
        ms(.waited)
    )]
    WaitTimedOut { waited: Duration },
    /// The transport reported a timeout of its own.
    #[error("the transport timed out")]
    LinkTimedOut,
    /// The link is gone: EOF, reset, hang-up.
    #[error("the connection to the debuggee was lost: {0}; recreate the engine")]
    ConnectionLost(io::Error),
    /// The link was lost by an earlier call on this engine.
    #[error("the connection to the debuggee was lost by an earlier call; recreate the engine")]
    AlreadyLost,
    /// The debuggee's session was replaced by another client's handshake.
    #[error(
        "the debuggee now serves another client: a later handshake took this engine's session \
         over; recreate the engine"
    )]
    SessionTakenOver,
    /// The debuggee no longer knows the session (it restarted).
    #[error(
        "the debuggee no longer knows this engine's session (it restarted); recreate the engine"
    )]
    SessionUnknown,
    /// A read from the transport failed.
    #[error("reading from the transport failed: {0}")]
    ReadFailed(io::Error),
    /// A write to the transport failed.
    #[error("writing to the transport failed: {0}")]
    WriteFailed(io::Error),
    /// A malformed or unexpected response.
    #[error("invalid or unexpected response from the debuggee: {0}")]
    InvalidPacket(&'static str),
    /// The debuggee speaks another protocol version.
    #[error("the debuggee speaks protocol version {}, this libpulse speaks {ours}", theirs_text(.theirs))]
    RevisionMismatch { ours: u8, theirs: Option<u8> },
    /// The link's key was refused, or authentication is not on offer.
    #[error("access denied: {0}")]
    AccessDenied(&'static str),
    /// WRMSR/RDMSR would raise #GP on the debuggee.
    #[error("#GP on the debuggee: {access} {on} (no such MSR, or a value the processor refuses); nothing was changed")]
    GeneralProtection { access: MsrAccess, on: OnCpu },
    /// No CPU with that index.
    #[error("the debuggee has no CPU {cpu}{}", cpu_count_text(.count))]
    NoCpu { cpu: u64, count: Option<u64> },
    /// The CPU exists but does not run.
    #[error("CPU {cpu} exists but is not running (the OS has not started it yet, or it stopped)")]
    CpuInactive { cpu: u64 },
    /// A bug in libpulse (a caught panic, an impossible state).
    #[error("internal error in libpulse: {0} (a bug; please report it)")]
    Internal(String),
}

/// Two errors are equal when they are the same kind of failure and say
/// the same (an `io::Error` has no equality of its own).
impl PartialEq for Error {
    fn eq(&self, other: &Error) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
            && self.to_string() == other.to_string()
    }
}

impl Error {
    /// The same failure again, for each of several requests it ends (an
    /// `io::Error` cannot be cloned: its copy keeps its kind and text).
    pub fn duplicate(&self) -> Error {
        let io = |e: &io::Error| io::Error::new(e.kind(), e.to_string());
        match self {
            Error::InvalidArgument(s) => Error::InvalidArgument(s.clone()),
            Error::MalformedTransport { spec, problem } => Error::MalformedTransport {
                spec: spec.clone(),
                problem: problem.clone(),
            },
            Error::NoSuchDevice { device, reason } => Error::NoSuchDevice {
                device: device.clone(),
                reason: io(reason),
            },
            Error::DeviceBusy { device, reason } => Error::DeviceBusy {
                device: device.clone(),
                reason: io(reason),
            },
            Error::HostNotFound { host, reason } => Error::HostNotFound {
                host: host.clone(),
                reason: reason.clone(),
            },
            Error::Unreachable { address, reason } => Error::Unreachable {
                address: address.clone(),
                reason: io(reason),
            },
            Error::DevicePermission { target, reason } => Error::DevicePermission {
                target: target.clone(),
                reason: io(reason),
            },
            Error::OutOfResources { doing, reason } => Error::OutOfResources {
                doing: doing.clone(),
                reason: io(reason),
            },
            Error::OutOfMemory => Error::OutOfMemory,
            Error::ConnectionRefused { address, reason } => Error::ConnectionRefused {
                address: address.clone(),
                reason: io(reason),
            },
            Error::ConnectTimeout { target, budget } => Error::ConnectTimeout {
                target: target.clone(),
                budget: *budget,
            },
            Error::HandshakeUnanswered {
                per_attempt,
                attempts,
            } => Error::HandshakeUnanswered {
                per_attempt: *per_attempt,
                attempts: *attempts,
            },
            Error::Timeout {
                per_attempt,
                attempts,
            } => Error::Timeout {
                per_attempt: *per_attempt,
                attempts: *attempts,
            },
            Error::WaitTimedOut { waited } => Error::WaitTimedOut { waited: *waited },
            Error::LinkTimedOut => Error::LinkTimedOut,
            Error::ConnectionLost(e) => Error::ConnectionLost(io(e)),
            Error::AlreadyLost => Error::AlreadyLost,
            Error::SessionTakenOver => Error::SessionTakenOver,
            Error::SessionUnknown => Error::SessionUnknown,
            Error::ReadFailed(e) => Error::ReadFailed(io(e)),
            Error::WriteFailed(e) => Error::WriteFailed(io(e)),
            Error::InvalidPacket(s) => Error::InvalidPacket(s),
            Error::RevisionMismatch { ours, theirs } => Error::RevisionMismatch {
                ours: *ours,
                theirs: *theirs,
            },
            Error::AccessDenied(s) => Error::AccessDenied(s),
            Error::GeneralProtection { access, on } => Error::GeneralProtection {
                access: *access,
                on: *on,
            },
            Error::NoCpu { cpu, count } => Error::NoCpu {
                cpu: *cpu,
                count: *count,
            },
            Error::CpuInactive { cpu } => Error::CpuInactive { cpu: *cpu },
            Error::Internal(s) => Error::Internal(s.clone()),
        }
    }

    /// The link to the debuggee is gone for good: every later call on the
    /// engine fails at once.
    pub fn ends_the_link(&self) -> bool {
        matches!(
            self,
            Error::ConnectionLost(_)
                | Error::AlreadyLost
                | Error::SessionTakenOver
                | Error::SessionUnknown
        )
    }
}

/// The MSR access a #GP refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrAccess {
    Read { msr: u32 },
    Write { msr: u32, value: u64 },
}

impl fmt::Display for MsrAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MsrAccess::Read { msr } => write!(f, "RDMSR {msr:#x}"),
            MsrAccess::Write { msr, value } => write!(f, "WRMSR {msr:#x} <- {value:#x}"),
        }
    }
}

/// Which CPU a request acted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnCpu {
    One(u64),
    EveryRunning,
}

impl fmt::Display for OnCpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OnCpu::One(cpu) => write!(f, "on CPU {cpu}"),
            OnCpu::EveryRunning => write!(f, "on some running CPU"),
        }
    }
}

/// A duration as people write it in this project's docs: `1000 ms`.
fn ms(d: &Duration) -> String {
    format!("{} ms", d.as_millis())
}

fn theirs_text(theirs: &Option<u8>) -> String {
    theirs.map_or_else(|| "another".to_owned(), |v| v.to_string())
}

fn cpu_count_text(count: &Option<u64>) -> String {
    count.map_or_else(String::new, |n| {
        format!(" (it has {n}: 0 to {})", n.saturating_sub(1))
    })
}
