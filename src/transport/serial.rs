//! `serial:<device>[?baud=N]`: a serial port (or a pseudo-terminal) through
//! the serialport crate, 8N1, no flow control.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serialport::{ClearBuffer, SerialPort, TTYPort};

use super::{remaining, LinkError, Sender, Transport};
use crate::error::Error;

pub struct SerialTransport {
    port: TTYPort,
    /// Set by the sending handle's `close`: a tty wait cannot be woken from
    /// another descriptor, so `recv` waits in slices and checks it.
    closed: Arc<AtomicBool>,
}

/// How long a `recv` waits before it looks at `closed` again.
const CLOSE_CHECK: Duration = Duration::from_millis(20);

impl SerialTransport {
    pub fn open(device: &str, baud: u32) -> Result<Self, Error> {
        let port = serialport::new(device, baud)
            .data_bits(serialport::DataBits::Eight)
            .parity(serialport::Parity::None)
            .stop_bits(serialport::StopBits::One)
            .flow_control(serialport::FlowControl::None)
            .open_native()
            .map_err(|e| open_failure(device, &e))?;
        // Bytes queued before we opened belong to nobody's request.
        let _ = port.clear(ClearBuffer::All);
        Ok(SerialTransport {
            port,
            closed: Arc::new(AtomicBool::new(false)),
        })
    }
}

/// Why a device could not be opened. serialport's error has lost the OS
/// error code by now (it maps EMFILE, ENOMEM... to "unknown"), so a failed
/// open is repeated with std to learn it.
fn open_failure(device: &str, e: &serialport::Error) -> Error {
    use std::os::unix::fs::OpenOptionsExt;
    let device = device.to_owned();
    match e.kind() {
        serialport::ErrorKind::Io(io::ErrorKind::PermissionDenied) => {
            return Error::DevicePermission {
                target: device,
                reason: io::Error::new(io::ErrorKind::PermissionDenied, e.description.clone()),
            }
        }
        serialport::ErrorKind::InvalidInput => {
            return Error::InvalidArgument(format!(
                "serial device `{device}` refused the settings: {}",
                e.description
            ))
        }
        _ => {}
    }
    let probe = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(&device);
    match probe {
        Err(reason) if reason.kind() == io::ErrorKind::PermissionDenied => {
            Error::DevicePermission {
                target: device,
                reason,
            }
        }
        Err(reason) if reason.raw_os_error() == Some(libc::EBUSY) => {
            Error::DeviceBusy { device, reason }
        }
        Err(reason) if super::is_resource_shortage(&reason) => Error::OutOfResources {
            doing: format!("opening serial device `{device}`"),
            reason,
        },
        Err(reason) => Error::NoSuchDevice { device, reason },
        // It opens, but not as a serial port (busy, or not a tty).
        Ok(_) => Error::NoSuchDevice {
            device,
            reason: io::Error::other(format!("not usable as a serial port: {}", e.description)),
        },
    }
}

/// Writes all of `bytes` to `port` by `deadline`.
fn send_all(port: &mut TTYPort, mut bytes: &[u8], deadline: Instant) -> Result<(), LinkError> {
    while !bytes.is_empty() {
        let left = remaining(deadline)?;
        port.set_timeout(left)
            .map_err(|e| LinkError::WriteFailed(e.into()))?;
        match port.write(bytes) {
            Ok(0) => {
                return Err(LinkError::Lost(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the serial device accepts no more bytes",
                )))
            }
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(LinkError::from_write(e)),
        }
    }
    Ok(())
}

/// A second descriptor of the same device, for sending.
struct SerialSender {
    port: TTYPort,
    closed: Arc<AtomicBool>,
}

impl Sender for SerialSender {
    fn send(&mut self, bytes: &[u8], deadline: Instant) -> Result<(), LinkError> {
        send_all(&mut self.port, bytes, deadline)
    }

    fn close(&mut self) {
        self.closed.store(true, Ordering::Release);
    }
}

impl Transport for SerialTransport {
    fn sender(&self) -> Option<Box<dyn Sender>> {
        let port = self.port.try_clone_native().ok()?;
        Some(Box::new(SerialSender {
            port,
            closed: Arc::clone(&self.closed),
        }))
    }

    fn send(&mut self, bytes: &[u8], deadline: Instant) -> Result<(), LinkError> {
        send_all(&mut self.port, bytes, deadline)
    }

    fn recv(&mut self, buf: &mut [u8], deadline: Instant) -> Result<usize, LinkError> {
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Err(LinkError::Lost(io::Error::other("the link was closed")));
            }
            let left = remaining(deadline)?.min(CLOSE_CHECK);
            self.port
                .set_timeout(left)
                .map_err(|e| LinkError::ReadFailed(e.into()))?;
            match self.port.read(buf) {
                // A tty read of 0 after poll said "readable" is a hang-up.
                Ok(0) => {
                    return Err(LinkError::Lost(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the serial device hung up",
                    )))
                }
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => match LinkError::from_read(e) {
                    // A slice ended, not the wait.
                    LinkError::TimedOut if Instant::now() < deadline => continue,
                    other => return Err(other),
                },
            }
        }
    }
}
