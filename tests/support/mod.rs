//! Shared pieces of the tier-2 integration tests: in-process hv-stub-sim
//! servers, the `hv-stub-sim` binary as a child process, a TCP server that
//! never answers, a seeded random source, and (in `relay`) a fault-injecting
//! TCP relay. Each test binary uses a different subset.
#![allow(dead_code)]

pub mod relay;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use hv_stub::model::ModelStats;
use hv_stub::{CpuCaps, HandlerStats};
use hv_stub_sim::SharedTarget;
use parking_lot::Mutex;
use pulse::EngineConfig;
use pulse_proto::{encode_frame, Decoder, RawFrame};

/// An engine configuration with an explicit per-attempt timeout and
/// attempt count.
pub fn config(transport: &str, timeout_ms: u64, attempts: u32) -> EngineConfig {
    EngineConfig {
        transport: transport.to_owned(),
        request_timeout: Duration::from_millis(timeout_ms),
        max_attempts: attempts,
        key: None,
    }
}

/// `request_timeout * max_attempts`: the longest a call may take.
pub fn budget(config: &EngineConfig) -> Duration {
    config.request_timeout * config.max_attempts
}

/// The handler's counters of a shared simulated debuggee.
pub fn handler_stats(target: &SharedTarget) -> HandlerStats {
    target.lock().stub().stats()
}

/// The software VMX model's counters of a shared simulated debuggee.
pub fn model_stats(target: &SharedTarget) -> ModelStats {
    target.lock().model().stats()
}

/// What the observer guest read for `msr` during its latest run.
pub fn guest_saw(target: &SharedTarget, msr: u32) -> Option<u64> {
    target.lock().observation().and_then(|o| o.get(msr))
}

/// A canonical (48-bit) kernel-half address that differs for every `i`.
pub fn kernel_address(i: u64) -> u64 {
    0xFFFF_F800_0000_0000 | ((i & 0x7_FFFF_FFFF) << 4)
}

/// Times a closure.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

/// Polls `cond` every few milliseconds until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// SplitMix64: a small seeded generator, so fault choices reproduce.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next_u64() >> 11) as f64 / ((1u64 << 53) as f64)) < p
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// The seed for a named test: `PULSE_TEST_SEED` overrides it so that a
/// failure seen elsewhere can be replayed.
pub fn seed_for(name: &str) -> u64 {
    if let Some(seed) = std::env::var("PULSE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return seed;
    }
    name.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    })
}

/// Splits a clean byte stream into the exact bytes of each frame in it.
/// Panics on bytes that are not part of a frame, so callers can also
/// assert that nothing else was sent.
pub fn split_frames(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut decoder = Decoder::new();
    let mut frames: Vec<RawFrame> = Vec::new();
    decoder.feed(bytes, |f| frames.push(f));
    assert_eq!(
        decoder.stats().skipped_bytes,
        0,
        "stray bytes between frames: {bytes:02x?}"
    );
    assert_eq!(decoder.pending(), 0, "a truncated frame at the end");
    frames.iter().map(frame_bytes).collect()
}

/// The wire bytes of a decoded frame.
pub fn frame_bytes(frame: &RawFrame) -> Vec<u8> {
    encode_frame(frame.kind, frame.session, frame.seq, frame.payload())
        .as_bytes()
        .to_vec()
}

// ---------------------------------------------------------------------------
// In-process servers (hv_stub_sim::spawn_tcp / spawn_pty).

/// A simulated debuggee served over TCP on a thread of this process.
pub struct TcpSim {
    pub target: SharedTarget,
    pub addr: SocketAddr,
    pub server: hv_stub_sim::TcpServer,
}

/// Which protocol a test's link speaks: the same tests run over both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Plain,
    /// Both ends hold [`TEST_KEY`].
    Authenticated,
}

/// The key of the tests' authenticated links.
pub const TEST_KEY: pulse_proto::Psk = pulse_proto::Psk::new([0x42; 32]);

impl Link {
    /// A debuggee for this kind of link.
    pub fn target(self) -> SharedTarget {
        match self {
            Link::Plain => hv_stub_sim::new_target(CpuCaps::MODERN),
            Link::Authenticated => hv_stub_sim::new_keyed_target(CpuCaps::MODERN, TEST_KEY),
        }
    }

    /// [`config`] with this link's key.
    pub fn config(self, transport: &str, timeout_ms: u64, attempts: u32) -> EngineConfig {
        let plain = config(transport, timeout_ms, attempts);
        match self {
            Link::Plain => plain,
            Link::Authenticated => plain.with_key(TEST_KEY),
        }
    }

    /// `requests` (frames a relay delivered to the debuggee) in the clear,
    /// one for one: an authenticated link's are opened with the session
    /// keys the handshakes in `requests` and `responses` derived; frames
    /// that do not open (and AuthHellos) are left as they are.
    pub fn plain_requests(self, requests: &[RawFrame], responses: &[RawFrame]) -> Vec<RawFrame> {
        use pulse_proto::auth::Direction;
        use pulse_proto::message::{kind, Message};
        use pulse_proto::SessionKeys;
        if self == Link::Plain {
            return requests.to_vec();
        }
        let mut client_nonces = std::collections::BTreeMap::new();
        for f in requests.iter().filter(|f| f.kind == kind::AUTH_HELLO) {
            if let Ok(Message::AuthHello { nonce, .. }) = Message::parse(f) {
                client_nonces.insert(f.seq, nonce);
            }
        }
        // (session, base) -> keys
        let mut sessions = Vec::new();
        for f in responses.iter().filter(|f| f.kind == kind::AUTH_HELLO_ACK) {
            let Some(client) = client_nonces.get(&f.seq) else {
                continue;
            };
            let mut debuggee = [0u8; 16];
            debuggee.copy_from_slice(&f.payload()[..16]);
            let keys = SessionKeys::derive(&TEST_KEY, client, &debuggee);
            if keys.open(Direction::ToClient, f, 0).is_some() {
                sessions.push((f.session, f.seq, keys));
            }
        }
        requests
            .iter()
            .map(|f| {
                sessions
                    .iter()
                    .filter(|(id, _, _)| *id == f.session)
                    .find_map(|(_, base, keys)| {
                        keys.open(Direction::ToDebuggee, f, f.seq.wrapping_sub(*base))
                    })
                    .unwrap_or(*f)
            })
            .collect()
    }
}

impl TcpSim {
    pub fn start() -> TcpSim {
        TcpSim::start_on(Link::Plain)
    }

    /// A debuggee for `link` (with a key for an authenticated one).
    pub fn start_on(link: Link) -> TcpSim {
        let target = link.target();
        let server =
            hv_stub_sim::TcpServer::spawn(Arc::clone(&target), "127.0.0.1:0").expect("spawn tcp");
        TcpSim {
            target,
            addr: server.addr(),
            server,
        }
    }

    pub fn transport(&self) -> String {
        format!("tcp:{}", self.addr)
    }
}

/// A simulated debuggee served on a pseudo-terminal by a thread of this
/// process.
pub struct PtySim {
    pub target: SharedTarget,
    pub path: String,
    stop: Arc<AtomicBool>,
}

impl PtySim {
    pub fn start() -> PtySim {
        PtySim::start_on(Link::Plain)
    }

    pub fn start_on(link: Link) -> PtySim {
        let target = link.target();
        let (path, stop) = hv_stub_sim::spawn_pty(Arc::clone(&target)).expect("spawn_pty");
        PtySim { target, path, stop }
    }

    pub fn transport(&self) -> String {
        format!("serial:{}", self.path)
    }
}

impl Drop for PtySim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------
// A TCP server that accepts and records, but never answers.

pub struct SilentServer {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
}

impl SilentServer {
    pub fn start() -> SilentServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, flag) = (Arc::clone(&received), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let index = {
                            let mut log = log.lock();
                            log.push(Vec::new());
                            log.len() - 1
                        };
                        let (log, flag) = (Arc::clone(&log), Arc::clone(&flag));
                        std::thread::spawn(move || record(stream, &log, index, &flag));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        SilentServer {
            addr,
            received,
            stop,
        }
    }

    pub fn transport(&self) -> String {
        format!("tcp:{}", self.addr)
    }

    /// Bytes received so far, per accepted connection.
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.received.lock().clone()
    }

    pub fn connections(&self) -> usize {
        self.received.lock().len()
    }
}

fn record(mut stream: TcpStream, log: &Mutex<Vec<Vec<u8>>>, index: usize, stop: &AtomicBool) {
    stream.set_nonblocking(false).ok();
    stream
        .set_read_timeout(Some(Duration::from_millis(20)))
        .ok();
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => log.lock()[index].extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A local TCP port on which nothing listens (bound, then released).
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------
// The `hv-stub-sim` binary as a separate process.

/// Path of the `hv-stub-sim` binary, built once per test process into the
/// target directory this test binary lives in (a no-op when up to date).
pub fn hv_stub_sim_exe() -> PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let test_exe = std::env::current_exe().expect("current_exe");
        // .../<target-dir>/<profile>/deps/<test binary>
        let profile_dir = test_exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("test binary outside a cargo target directory")
            .to_path_buf();
        let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
        let profile = profile_dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("profile dir name")
            .to_owned();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_owned());
        let mut build = Command::new(cargo);
        build
            .arg("build")
            .arg("--quiet")
            .args(["-p", "hv-stub-sim", "--bin", "hv-stub-sim"])
            .arg("--manifest-path")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir);
        match profile.as_str() {
            "debug" => {}
            "release" => {
                build.arg("--release");
            }
            other => {
                build.args(["--profile", other]);
            }
        }
        let status = build.status().expect("run cargo build -p hv-stub-sim");
        assert!(status.success(), "cargo build -p hv-stub-sim failed");
        let exe = profile_dir.join(format!("hv-stub-sim{}", std::env::consts::EXE_SUFFIX));
        assert!(exe.is_file(), "{} was not built", exe.display());
        exe
    })
    .clone()
}

/// A running `hv-stub-sim` child process and the transport string it
/// announced (`tcp:ADDR` or `serial:PATH`).
pub struct SimProcess {
    child: Child,
    pub transport: String,
}

impl SimProcess {
    /// Starts `hv-stub-sim` with `args` and waits for its `listening` line.
    pub fn start(args: &[&str]) -> SimProcess {
        let mut child = Command::new(hv_stub_sim_exe())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn hv-stub-sim");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the child never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("hv-stub-sim {args:?} did not announce where it listens");
            }
        };
        let transport = line
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("unexpected first line from hv-stub-sim: {line:?}"))
            .to_owned();
        SimProcess { child, transport }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL and reap: the OS closes the socket or pty master at once.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

// ---------------------------------------------------------------------------
// A scripted fake debuggee: answers each request frame as a closure says.

/// What a scripted server does with one received request frame.
pub type Script = dyn FnMut(&RawFrame) -> Option<Vec<u8>> + Send;

/// A TCP server that serves connections one at a time, decoding request
/// frames and sending whatever `script` returns for each.
pub struct ScriptedServer {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<RawFrame>>>,
    stop: Arc<AtomicBool>,
}

impl ScriptedServer {
    pub fn start(mut script: Box<Script>) -> ScriptedServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, flag) = (Arc::clone(&requests), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                stream.set_nonblocking(false).ok();
                stream
                    .set_read_timeout(Some(Duration::from_millis(20)))
                    .ok();
                let mut decoder = Decoder::new();
                let mut buf = [0u8; 512];
                while !flag.load(Ordering::Relaxed) {
                    let n = match stream.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) =>
                        {
                            continue
                        }
                        Err(_) => break,
                    };
                    let mut frames = Vec::new();
                    decoder.feed(&buf[..n], |f| frames.push(f));
                    for frame in frames {
                        log.lock().push(frame);
                        if let Some(reply) = script(&frame) {
                            use std::io::Write;
                            if reply.is_empty() {
                                // An empty reply means: hang up.
                                let _ = stream.shutdown(std::net::Shutdown::Both);
                            } else {
                                let _ = stream.write_all(&reply);
                            }
                        }
                    }
                }
            }
        });
        ScriptedServer {
            addr,
            requests,
            stop,
        }
    }

    pub fn transport(&self) -> String {
        format!("tcp:{}", self.addr)
    }

    /// Every request frame received so far.
    pub fn requests(&self) -> Vec<RawFrame> {
        self.requests.lock().clone()
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------
// Running one test body in a child process (for process-wide state such
// as resource limits, which must not disturb tests on other threads).

const CHILD_ENV: &str = "PULSE_TEST_CHILD";

/// Runs `body` in a fresh copy of this test binary that executes only the
/// test `name`; fails if the child fails. In the child, runs `body` itself.
pub fn in_child_process(name: &str, body: impl FnOnce()) {
    if std::env::var(CHILD_ENV).as_deref() == Ok(name) {
        body();
        return;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .output()
        .expect("run the test in a child process");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "child test {name} failed:\n{stdout}\n{stderr}"
    );
}

/// Lowers the soft limit on open files so that the next open() fails with
/// EMFILE; returns the previous limit for `restore_fd_limit`.
#[cfg(unix)]
pub fn exhaust_fd_limit() -> libc::rlimit {
    // SAFETY: plain libc calls on owned, valid arguments.
    unsafe {
        let mut old = std::mem::zeroed::<libc::rlimit>();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut old), 0);
        let probe = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        assert!(probe >= 0, "open /dev/null");
        libc::close(probe);
        // `probe` is the lowest free descriptor: with the limit at it,
        // every new descriptor is out of range.
        let low = libc::rlimit {
            rlim_cur: probe as libc::rlim_t,
            rlim_max: old.rlim_max,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &low), 0);
        let again = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        assert_eq!(again, -1, "the limit did not take");
        old
    }
}

#[cfg(unix)]
pub fn restore_fd_limit(old: libc::rlimit) {
    // SAFETY: restores a limit getrlimit returned.
    unsafe {
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &old), 0);
    }
}
