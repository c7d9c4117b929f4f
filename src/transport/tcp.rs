//! `tcp:<host>:<port>`: the debuggee's serial line bridged to TCP (Bochs's
//! COM1 in socket mode, `hv-stub-sim --listen`, a terminal server).

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{remaining, LinkError, Sender, Transport};
use crate::error::Error;
use crate::sys::{self, Ready};

/// The socket is non-blocking from the start and every wait is a ppoll
/// until the call's deadline, so no socket option is set per call and a
/// short timeout is kept to the microsecond instead of a timer tick.
pub struct TcpTransport {
    stream: TcpStream,
    /// Bytes arrived since the last send: a further `recv` waits for the
    /// rest of an answer that came in pieces.
    read_since_send: bool,
}

impl TcpTransport {
    /// Connects to the first address of `host` that accepts by `deadline`
    /// (`budget` away when the call began; for the message).
    pub fn connect(
        host: &str,
        port: u16,
        deadline: Instant,
        budget: Duration,
    ) -> Result<Self, Error> {
        let target = format!("tcp:{host}:{port}");
        let timed_out = || Error::ConnectTimeout {
            target: target.clone(),
            budget,
        };
        let addrs = resolve(host, port, deadline)?.ok_or_else(timed_out)?;
        let mut outcome = None;
        for addr in addrs {
            let Ok(left) = remaining(deadline) else {
                return Err(timed_out());
            };
            match TcpStream::connect_timeout(&addr, left) {
                Ok(stream) => {
                    // Frames are tiny and latency-bound: never wait to coalesce.
                    stream.set_nodelay(true).map_err(Error::WriteFailed)?;
                    stream.set_nonblocking(true).map_err(Error::WriteFailed)?;
                    return Ok(TcpTransport {
                        stream,
                        read_since_send: false,
                    });
                }
                Err(reason) => {
                    let address = addr.to_string();
                    if super::is_resource_shortage(&reason) {
                        return Err(Error::OutOfResources {
                            doing: format!("connecting to {address}"),
                            reason,
                        });
                    }
                    outcome = Some(match reason.kind() {
                        io::ErrorKind::ConnectionRefused => {
                            Error::ConnectionRefused { address, reason }
                        }
                        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => timed_out(),
                        io::ErrorKind::PermissionDenied => Error::DevicePermission {
                            target: address,
                            reason,
                        },
                        _ => Error::Unreachable { address, reason },
                    })
                }
            }
        }
        Err(outcome.unwrap_or_else(|| Error::HostNotFound {
            host: host.to_owned(),
            reason: "the name has no address".to_owned(),
        }))
    }
}

/// Resolves `host` by `deadline` (`None`: too late). The system resolver
/// has no timeout, so a name is looked up on a helper thread that is
/// abandoned if it is late (it ends by itself when the resolver gives up).
fn resolve(host: &str, port: u16, deadline: Instant) -> Result<Option<Vec<SocketAddr>>, Error> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Some(vec![SocketAddr::new(ip, port)]));
    }
    let (tx, rx) = mpsc::channel();
    let name = host.to_owned();
    std::thread::Builder::new()
        .name("pulse-resolve".into())
        .spawn(move || {
            let found = (name.as_str(), port)
                .to_socket_addrs()
                .map(|addrs| addrs.collect::<Vec<_>>());
            let _ = tx.send(found);
        })
        .map_err(|reason| Error::OutOfResources {
            doing: "starting the host-name resolver thread".to_owned(),
            reason,
        })?;
    let Ok(left) = remaining(deadline) else {
        return Ok(None);
    };
    let not_found = |reason: String| Error::HostNotFound {
        host: host.to_owned(),
        reason,
    };
    match rx.recv_timeout(left) {
        Ok(Ok(addrs)) if !addrs.is_empty() => Ok(Some(addrs)),
        Ok(Ok(_)) => Err(not_found("the name has no address".to_owned())),
        Ok(Err(e)) => Err(not_found(e.to_string())),
        Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(not_found(
            "the resolver stopped without an answer".to_owned(),
        )),
    }
}

/// Sends all of `bytes` on the non-blocking `stream` by `deadline`.
fn send_all(stream: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> Result<(), LinkError> {
    while !bytes.is_empty() {
        match stream.write(bytes) {
            Ok(0) => {
                return Err(LinkError::Lost(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the debuggee accepts no more bytes",
                )))
            }
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !sys::wait_fd(stream.as_raw_fd(), Ready::Writable, deadline)
                    .map_err(LinkError::WriteFailed)?
                {
                    return Err(LinkError::TimedOut);
                }
            }
            Err(e) => return Err(LinkError::from_write(e)),
        }
    }
    Ok(())
}

/// A second descriptor of the same connection, for sending.
struct TcpSender {
    stream: TcpStream,
}

impl Sender for TcpSender {
    fn send(&mut self, bytes: &[u8], deadline: Instant) -> Result<(), LinkError> {
        send_all(&mut self.stream, bytes, deadline)
    }

    fn close(&mut self) {
        // Wakes the receiving descriptor's wait with an end of file.
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

impl Transport for TcpTransport {
    fn sender(&self) -> Option<Box<dyn Sender>> {
        let stream = self.stream.try_clone().ok()?;
        Some(Box::new(TcpSender { stream }))
    }

    fn send(&mut self, bytes: &[u8], deadline: Instant) -> Result<(), LinkError> {
        send_all(&mut self.stream, bytes, deadline)?;
        self.read_since_send = false;
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8], deadline: Instant) -> Result<usize, LinkError> {
        if self.read_since_send {
            // The answer came in pieces (Bochs sends COM1 bytes as the guest
            // writes them, with Nagle on): acknowledge what we have now, or
            // the peer holds the rest until our delayed ACK (~40 ms).
            sys::tcp_quickack(&self.stream);
        }
        loop {
            if !sys::wait_fd(self.stream.as_raw_fd(), Ready::Readable, deadline)
                .map_err(LinkError::ReadFailed)?
            {
                return Err(LinkError::TimedOut);
            }
            match self.stream.read(buf) {
                Ok(0) => {
                    return Err(LinkError::Lost(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the debuggee closed the connection",
                    )))
                }
                Ok(n) => {
                    self.read_since_send = true;
                    return Ok(n);
                }
                // Readiness without data (a spurious wake-up): wait again.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                    ) => {}
                Err(e) => return Err(LinkError::from_read(e)),
            }
        }
    }
}
