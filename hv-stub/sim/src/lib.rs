//! Serves a simulated debuggee (`hv_stub::simulated::SimTarget`) over a real byte
//! stream — TCP connections or a pseudo-terminal — so libpulse's real
//! transports can be tested against the same hv-stub core.
//!
//! One debuggee, several clients (docs/PROTOCOL.md section 5.6): every TCP
//! connection is served on a thread of its own with a decoder of its own,
//! and the debuggee's one session goes to the newest handshake. A client
//! that idles, stops reading or leaves half a frame behind costs the others
//! nothing: the debuggee is locked only while a frame is handled, never
//! while a client is waited for; a client that does not take its answers
//! within [`WRITE_STALL`] is disconnected.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hv_stub::simulated::SimTarget;
use parking_lot::Mutex;
use pulse_proto::{Decoder, DecoderStats, RawFrame};
use serialport::{SerialPort, TTYPort};

pub type SharedTarget = Arc<Mutex<SimTarget>>;

/// A line quiet this long with part of a frame held: the bytes are what a
/// client left behind, and are dropped. Far longer than any pause inside
/// one frame (a sender writes a frame at once), far shorter than a client's
/// retransmission timeout.
pub const LINE_QUIET: Duration = Duration::from_millis(20);
/// A client that leaves its answers unread this long is disconnected.
pub const WRITE_STALL: Duration = Duration::from_secs(1);
/// How often a waiting loop with nothing to do looks at its stop flag.
const STOP_CHECK: Duration = Duration::from_millis(250);

/// Decoder counters of every connection a server has served.
pub type SharedStats = Arc<Mutex<DecoderStats>>;

fn add_stats(total: &mut DecoderStats, now: DecoderStats, before: DecoderStats) {
    total.frames += now.frames - before.frames;
    total.skipped_bytes += now.skipped_bytes - before.skipped_bytes;
    total.crc_errors += now.crc_errors - before.crc_errors;
    total.oversized += now.oversized - before.oversized;
}

/// Hands frames to the debuggee and collects the answers; the guest runs
/// once after any answered batch, as hv-stub resumes it after requests.
fn handle_frames(target: &SharedTarget, frames: &[RawFrame], out: &mut Vec<u8>) {
    if frames.is_empty() {
        return;
    }
    let mut target = target.lock();
    let before = out.len();
    for frame in frames {
        target
            .stub_mut()
            .handle(frame, |response| out.extend_from_slice(response));
    }
    if out.len() > before {
        target.resume_guest();
    }
}

/// Serves one TCP connection until EOF, an error, a client that does not
/// read, or `stop`.
fn serve_connection(
    target: &SharedTarget,
    mut stream: TcpStream,
    stop: &AtomicBool,
    stats: &SharedStats,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(WRITE_STALL))?;
    // A decoder of this connection's own: nothing another client left
    // half-sent can swallow this one's frames.
    let mut decoder = Decoder::new();
    let mut buf = [0u8; 512];
    let mut frames = Vec::new();
    let mut out = Vec::with_capacity(64);
    let mut quiet_wait = None;
    while !stop.load(Ordering::Relaxed) {
        // Wait briefly while a partial frame is held, else until the stop
        // check; the option is set only when the wait changes.
        let wait = if decoder.pending() > 0 {
            LINE_QUIET
        } else {
            STOP_CHECK
        };
        if quiet_wait != Some(wait) {
            stream.set_read_timeout(Some(wait))?;
            quiet_wait = Some(wait);
        }
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if wait == LINE_QUIET {
                    // Dropped unread: counted as skipped, like every byte
                    // that is not part of a frame.
                    stats.lock().skipped_bytes += decoder.pending() as u64;
                    decoder.clear();
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let before = decoder.stats();
        frames.clear();
        decoder.feed(&buf[..n], |f| frames.push(f));
        add_stats(&mut stats.lock(), decoder.stats(), before);
        out.clear();
        handle_frames(target, &frames, &mut out);
        if !out.is_empty() {
            // Fails after WRITE_STALL if the client does not read; the
            // debuggee is not locked meanwhile.
            stream.write_all(&out)?;
        }
    }
    Ok(())
}

/// Accepts connections until `stop` (checked after every accept, so a stopper
/// also connects once: [`TcpServer::stop`]) and serves each on its own
/// thread. The debuggee's state persists across connections, as a real
/// one's would.
pub fn serve_tcp(target: SharedTarget, listener: TcpListener, stop: Arc<AtomicBool>) {
    serve_tcp_counted(target, listener, stop, SharedStats::default());
}

fn serve_tcp_counted(
    target: SharedTarget,
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    stats: SharedStats,
) {
    // A blocking accept: a client is taken the moment it connects, and an
    // idle server does not wake up.
    for stream in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(stream) = stream else {
            // Out of descriptors or an aborted handshake: try the next one.
            continue;
        };
        let (target, stop, stats) = (Arc::clone(&target), Arc::clone(&stop), Arc::clone(&stats));
        let spawned = std::thread::Builder::new()
            .name("hv-stub-sim-client".into())
            .spawn(move || {
                let _ = serve_connection(&target, stream, &stop, &stats);
            });
        // No thread: the stream was dropped with the closure, which closes it.
        drop(spawned);
    }
}

/// A TCP server on a thread of this process.
pub struct TcpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    stats: SharedStats,
}

impl TcpServer {
    /// Listens on `addr` (e.g. `127.0.0.1:0`) and serves `target`.
    pub fn spawn(target: SharedTarget, addr: &str) -> io::Result<TcpServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = SharedStats::default();
        let (flag, counted) = (Arc::clone(&stop), Arc::clone(&stats));
        std::thread::Builder::new()
            .name("hv-stub-sim-accept".into())
            .spawn(move || serve_tcp_counted(target, listener, flag, counted))?;
        Ok(TcpServer { addr, stop, stats })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The decoder counters of every connection served so far.
    pub fn decoder_stats(&self) -> DecoderStats {
        *self.stats.lock()
    }

    /// Stops accepting and ends every connection's loop (within the stop
    /// check interval).
    pub fn stop(&self) {
        if !self.stop.swap(true, Ordering::Relaxed) {
            // Wake the blocking accept so it sees the flag.
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        }
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop();
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

    /// Serves until `stop`. One line, as hv-stub's COM1: the debuggee's own
    /// decoder reads it, and is told when the line has gone quiet
    /// (`Stub::line_idle`) so that half a frame left by one client cannot
    /// swallow the next client's Hello.
    pub fn serve(mut self, target: SharedTarget, stop: Arc<AtomicBool>) -> io::Result<()> {
        let mut buf = [0u8; 512];
        let mut out = Vec::with_capacity(64);
        let mut quiet_wait = None;
        while !stop.load(Ordering::Relaxed) {
            let holding = target.lock().stub().pending_bytes() > 0;
            let wait = if holding { LINE_QUIET } else { STOP_CHECK };
            if quiet_wait != Some(wait) {
                self.master.set_timeout(wait).map_err(io::Error::from)?;
                quiet_wait = Some(wait);
            }
            let n = match self.master.read(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                    ) =>
                {
                    if holding {
                        target.lock().stub_mut().line_idle();
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // No client has the slave open right now.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                    std::thread::sleep(LINE_QUIET);
                    continue;
                }
                Err(e) => return Err(e),
            };
            out.clear();
            target
                .lock()
                .receive(&buf[..n], |response| out.extend_from_slice(response));
            if !out.is_empty() {
                self.master.write_all(&out)?;
            }
        }
        Ok(())
    }
}

/// Starts a TCP server on a thread; returns its address and a stop flag
/// (setting it stops the server at its next accept; [`TcpServer::stop`]
/// does it at once).
pub fn spawn_tcp(target: SharedTarget, addr: &str) -> io::Result<(SocketAddr, Arc<AtomicBool>)> {
    let server = TcpServer::spawn(target, addr)?;
    let handle = (server.addr, Arc::clone(&server.stop));
    std::mem::forget(server);
    Ok(handle)
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

/// A new shared simulated debuggee, its session numbers and handshake
/// nonces seeded from the OS's random numbers.
pub fn new_target(cpu: hv_stub::CpuCaps) -> SharedTarget {
    let mut target = SimTarget::new(cpu, 0);
    // 256 bits for the handshake nonces (docs/SECURITY.md).
    for _ in 0..4 {
        let entropy = getrandom::u64().unwrap_or_else(|_| {
            // No OS randomness: the clock and the process still differ per run.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            now ^ u64::from(std::process::id()) << 32
        });
        target.stub_mut().add_entropy(entropy);
    }
    Arc::new(Mutex::new(target))
}

/// The same with a pre-shared key: it opens authenticated sessions only.
pub fn new_keyed_target(cpu: hv_stub::CpuCaps, key: pulse_proto::Psk) -> SharedTarget {
    let target = new_target(cpu);
    target.lock().stub_mut().set_key(key);
    target
}

/// Reads a key file (64 hex digits and an optional newline); the error
/// names the file.
pub fn read_key_file(path: &str) -> Result<pulse_proto::Psk, String> {
    let text = std::fs::read(path).map_err(|e| format!("key file {path}: cannot be read: {e}"))?;
    pulse_proto::Psk::from_text(&text).map_err(|e| format!("key file {path}: {e}"))
}
