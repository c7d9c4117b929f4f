//! Byte links to the debuggee. A transport moves bytes and reports how it
//! failed; framing, retries and timeouts live in the engine.

use std::any::Any;
use std::io;
use std::time::{Duration, Instant};

use crate::config::TransportSpec;
use crate::error::Error;
use pulse_proto::Psk;

pub mod serial;
#[cfg(feature = "sim")]
pub mod sim;
pub mod tcp;

/// How a transport operation failed.
#[derive(Debug)]
pub enum LinkError {
    /// Nothing arrived (or could be sent) before the deadline.
    TimedOut,
    /// The link is gone for good: EOF, reset, broken pipe, hang-up.
    Lost(io::Error),
    /// Any other read error.
    ReadFailed(io::Error),
    /// Any other write error.
    WriteFailed(io::Error),
}

impl LinkError {
    fn is_lost_kind(kind: io::ErrorKind) -> bool {
        use io::ErrorKind::*;
        matches!(
            kind,
            UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe | NotConnected
        )
    }

    /// Classifies an error from a read.
    pub fn from_read(e: io::Error) -> LinkError {
        match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => LinkError::TimedOut,
            kind if Self::is_lost_kind(kind) => LinkError::Lost(e),
            _ => LinkError::ReadFailed(e),
        }
    }

    /// Classifies an error from a write.
    pub fn from_write(e: io::Error) -> LinkError {
        match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => LinkError::TimedOut,
            kind if Self::is_lost_kind(kind) => LinkError::Lost(e),
            _ => LinkError::WriteFailed(e),
        }
    }
}

pub trait Transport: Send {
    /// Sends all of `bytes`, or fails.
    fn send(&mut self, bytes: &[u8], deadline: Instant) -> Result<(), LinkError>;
    /// Waits until some bytes arrive (returns how many, never 0) or the
    /// deadline passes (`TimedOut`).
    fn recv(&mut self, buf: &mut [u8], deadline: Instant) -> Result<usize, LinkError>;
    /// A second handle on the link that sends from other threads while one
    /// thread waits in `recv` on this one (a duplicated descriptor, a
    /// shared pipe). `None` if the link has none: sends and receives then
    /// take turns, in short slices.
    fn sender(&self) -> Option<Box<dyn Sender>> {
        None
    }
    /// A debuggee that runs inside this process behind the transport, for
    /// inspection by tests and demos (`None` for a real link).
    fn in_process_debuggee(&self) -> Option<Box<dyn Any + Send + Sync>> {
        None
    }
}

/// The sending handle of a [`Transport`], see [`Transport::sender`].
pub trait Sender: Send {
    /// Sends all of `bytes`, or fails.
    fn send(&mut self, bytes: &[u8], deadline: Instant) -> Result<(), LinkError>;
    /// Closes the link: a `recv` waiting on the transport returns soon
    /// (the engine is going away).
    fn close(&mut self);
}

impl From<LinkError> for Error {
    fn from(e: LinkError) -> Error {
        match e {
            LinkError::TimedOut => Error::LinkTimedOut,
            LinkError::Lost(e) => Error::ConnectionLost(e),
            LinkError::ReadFailed(e) => Error::ReadFailed(e),
            LinkError::WriteFailed(e) => Error::WriteFailed(e),
        }
    }
}

/// An open that failed for lack of file descriptors, buffers or memory.
pub fn is_resource_shortage(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS)
    )
}

/// Time left until `deadline`, or `TimedOut` if none.
pub fn remaining(deadline: Instant) -> Result<Duration, LinkError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(LinkError::TimedOut)
    } else {
        Ok(left)
    }
}

/// Opens the transport a spec names; connecting ends by `deadline`
/// (`budget` is that deadline's distance, for the message). An in-process
/// debuggee is given `key`, so that it speaks the authenticated protocol.
pub fn open(
    spec: &TransportSpec,
    key: Option<Psk>,
    deadline: Instant,
    budget: Duration,
) -> Result<Box<dyn Transport>, Error> {
    #[cfg(not(feature = "sim"))]
    let _ = key;
    match spec {
        #[cfg(feature = "sim")]
        TransportSpec::Sim { cpu, cpus, online } => {
            let transport = sim::SimTransport::new(*cpu, *cpus, *online);
            if let Some(key) = key {
                transport.target().lock().stub_mut().set_key(key);
            }
            Ok(Box::new(transport))
        }
        TransportSpec::Tcp { host, port } => Ok(Box::new(tcp::TcpTransport::connect(
            host, *port, deadline, budget,
        )?)),
        TransportSpec::Serial { device, baud } => {
            Ok(Box::new(serial::SerialTransport::open(device, *baud)?))
        }
    }
}
