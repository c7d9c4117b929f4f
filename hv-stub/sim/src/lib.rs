//! Serves a simulated debuggee (`hv_stub::sim::SimTarget`) over a real byte
//! stream — a TCP connection or a pseudo-terminal — so libpulse's real
//! transports can be tested against the same hv-stub core.

use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hv_stub::sim::SimTarget;
use parking_lot::Mutex;
use serialport::{SerialPort, TTYPort};

pub type SharedTarget = Arc<Mutex<SimTarget>>;

/// Relays bytes between one stream and the target until EOF, an error or
/// `stop`. Returns why it ended (Ok on EOF or stop).
pub fn serve_stream<S: Read + Write>(
    target: &SharedTarget,
    stream: &mut S,
    stop: &AtomicBool,
) -> io::Result<()> {
    let mut buf = [0u8; 512];
    let mut out = Vec::with_capacity(64);
    while !stop.load(Ordering::Relaxed) {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                continue
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.clear();
        target
            .lock()
            .receive(&buf[..n], |response| out.extend_from_slice(response));
        if !out.is_empty() {
            stream.write_all(&out)?;
            stream.flush()?;
        }
    }
    Ok(())
}

/// Accepts connections one at a time and serves each until it closes. The
/// debuggee's state persists across connections, as a real one's would.
pub fn serve_tcp(target: SharedTarget, listener: TcpListener, stop: Arc<AtomicBool>) {
    listener.set_nonblocking(true).ok();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut stream, _)) => {
                stream.set_nonblocking(false).ok();
                stream.set_nodelay(true).ok();
                stream
                    .set_read_timeout(Some(Duration::from_millis(50)))
                    .ok();
                let _ = serve_stream(&target, &mut stream, &stop);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// A pseudo-terminal whose master side the target is served on. The slave
/// side stays open here too, so the master never sees a hang-up between
/// clients; clients open `slave_path()` like any serial device.
pub struct PtyServer {
    master: TTYPort,
    _slave: TTYPort,
    path: String,
}

impl PtyServer {
    pub fn new() -> io::Result<Self> {
        let (master, slave) = TTYPort::pair().map_err(io::Error::from)?;
        let path = slave
            .name()
            .ok_or_else(|| io::Error::other("pty without a name"))?;
        Ok(PtyServer {
            master,
            _slave: slave,
            path,
        })
    }

    pub fn slave_path(&self) -> &str {
        &self.path
    }

    /// Serves until `stop`.
    pub fn serve(mut self, target: SharedTarget, stop: Arc<AtomicBool>) -> io::Result<()> {
        self.master
            .set_timeout(Duration::from_millis(50))
            .map_err(io::Error::from)?;
        while !stop.load(Ordering::Relaxed) {
            match serve_stream(&target, &mut self.master, &stop) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Starts a TCP server on a thread; returns its address and a stop flag.
pub fn spawn_tcp(
    target: SharedTarget,
    addr: &str,
) -> io::Result<(std::net::SocketAddr, Arc<AtomicBool>)> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    std::thread::spawn(move || serve_tcp(target, listener, flag));
    Ok((local, stop))
}

/// Starts a pty server on a thread; returns the slave path and a stop flag.
pub fn spawn_pty(target: SharedTarget) -> io::Result<(String, Arc<AtomicBool>)> {
    let server = PtyServer::new()?;
    let path = server.slave_path().to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    std::thread::spawn(move || server.serve(target, flag));
    Ok((path, stop))
}

/// A new shared simulated debuggee.
pub fn new_target(cpu: hv_stub::CpuCaps) -> SharedTarget {
    let seed = std::process::id() as u8;
    Arc::new(Mutex::new(SimTarget::new(cpu, seed)))
}
