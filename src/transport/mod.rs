//! Byte links to the debuggee. A transport moves bytes and reports how it
//! failed; framing, retries and timeouts live in the engine.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::config::TransportSpec;
use crate::status::Status;

pub mod serial;
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
    pub fn status(&self) -> Status {
        match self {
            LinkError::TimedOut => Status::TIMEOUT,
            LinkError::Lost(_) => Status::DEVICE_CONNECTION_LOST,
            LinkError::ReadFailed(_) => Status::READ_FAILED,
            LinkError::WriteFailed(_) => Status::WRITE_FAILED,
        }
    }

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
}

/// `INSUFFICIENT_RESOURCES` for an open that failed for lack of file
/// descriptors, buffers or memory.
pub fn resource_shortage(e: &io::Error) -> Option<Status> {
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS) => {
            Some(Status::INSUFFICIENT_RESOURCES)
        }
        _ => None,
    }
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

/// An open transport; for `sim`, also a handle on the simulated debuggee.
pub struct Opened {
    pub link: Box<dyn Transport>,
    pub sim: Option<Arc<Mutex<hv_stub::sim::SimTarget>>>,
}

/// Opens the transport a spec names; connecting ends by `deadline`.
pub fn open(spec: &TransportSpec, deadline: Instant) -> Result<Opened, Status> {
    match spec {
        TransportSpec::Sim { cpu, cpus, online } => {
            let transport = sim::SimTransport::new(*cpu, *cpus, *online);
            let target = transport.target();
            Ok(Opened {
                link: Box::new(transport),
                sim: Some(target),
            })
        }
        TransportSpec::Tcp { host, port } => Ok(Opened {
            link: Box::new(tcp::TcpTransport::connect(host, *port, deadline)?),
            sim: None,
        }),
        TransportSpec::Serial { device, baud } => Ok(Opened {
            link: Box::new(serial::SerialTransport::open(device, *baud)?),
            sim: None,
        }),
    }
}
