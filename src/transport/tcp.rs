//! `tcp:<host>:<port>`: the debuggee's serial line bridged to TCP (Bochs's
//! COM1 in socket mode, `hv-stub-sim --listen`, a terminal server).

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::Instant;

use super::{remaining, LinkError, Transport};
use crate::status::Status;
use crate::sys;

pub struct TcpTransport {
    stream: TcpStream,
}

impl TcpTransport {
    /// Connects to the first address of `host` that accepts by `deadline`.
    pub fn connect(host: &str, port: u16, deadline: Instant) -> Result<Self, Status> {
        let addrs = resolve(host, port, deadline)?;
        let mut outcome = Status::NO_SUCH_DEVICE;
        for addr in addrs {
            let Ok(left) = remaining(deadline) else {
                return Err(Status::TIMEOUT);
            };
            match TcpStream::connect_timeout(&addr, left) {
                Ok(stream) => {
                    // Frames are tiny and latency-bound: never wait to coalesce.
                    stream.set_nodelay(true).map_err(|_| Status::WRITE_FAILED)?;
                    return Ok(TcpTransport { stream });
                }
                Err(e) => {
                    if let Some(status) = super::resource_shortage(&e) {
                        return Err(status);
                    }
                    outcome = match e.kind() {
                        io::ErrorKind::ConnectionRefused => Status::CONNECTION_REFUSED,
                        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Status::TIMEOUT,
                        io::ErrorKind::PermissionDenied => Status::ACCESS_DENIED,
                        _ => Status::NO_SUCH_DEVICE,
                    }
                }
            }
        }
        Err(outcome)
    }
}

/// Resolves `host` by `deadline`. The system resolver has no timeout, so a
/// name is looked up on a helper thread that is abandoned if it is late
/// (it ends by itself when the resolver gives up).
fn resolve(host: &str, port: u16, deadline: Instant) -> Result<Vec<SocketAddr>, Status> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
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
        .map_err(|_| Status::INSUFFICIENT_RESOURCES)?;
    let left = remaining(deadline).map_err(|_| Status::TIMEOUT)?;
    match rx.recv_timeout(left) {
        Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
        Ok(_) => Err(Status::NO_SUCH_DEVICE),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(Status::TIMEOUT),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(Status::NO_SUCH_DEVICE),
    }
}

impl Transport for TcpTransport {
    fn send(&mut self, bytes: &[u8], deadline: Instant) -> Result<(), LinkError> {
        let left = remaining(deadline)?;
        self.stream
            .set_write_timeout(Some(left))
            .map_err(LinkError::WriteFailed)?;
        self.stream.write_all(bytes).map_err(LinkError::from_write)
    }

    fn recv(&mut self, buf: &mut [u8], deadline: Instant) -> Result<usize, LinkError> {
        loop {
            let left = remaining(deadline)?;
            self.stream
                .set_read_timeout(Some(left))
                .map_err(LinkError::ReadFailed)?;
            // Peers such as Bochs leave Nagle on; acknowledging at once
            // avoids a delayed-ACK stall of ~40 ms per round trip.
            sys::tcp_quickack(&self.stream);
            match self.stream.read(buf) {
                Ok(0) => {
                    return Err(LinkError::Lost(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the debuggee closed the connection",
                    )))
                }
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(LinkError::from_read(e)),
            }
        }
    }
}
