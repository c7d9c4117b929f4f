//! Tier-4 harness: boots the hv-stub image under Bochs (headless, always
//! with a deadline and a SIGKILL of its process group) and collects what the
//! observer guest prints on port 0xE9: `OBS <msr hex> <value hex>` lines,
//! `ABSENT <msr hex>`, `READY`, `ALIVE <n>`, `FATAL ...`.
//!
//! COM1 is either a TCP socket on which Bochs listens (libpulse's
//! `tcp:127.0.0.1:PORT`) or a pseudo-terminal: Bochs opens the slave of one
//! pty, libpulse the slave of another, and a relay thread copies between the
//! two masters.
#![allow(dead_code)]

/// The real-Linux guest (boots under hv-stub or bare, parses its report).
pub mod linux;

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use pulse::{Engine, EngineConfig, Status};

/// Instructions per emulated second. UART timing is emulated time, so a low
/// value makes the serial line fast in real time (docs/HV-STUB.md, Bochs facts).
pub const IPS: u32 = 1_000_000;
/// No Bochs run lives longer than this.
pub const RUN_DEADLINE: Duration = Duration::from_secs(120);
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(30);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the hv-stub image once per test process (build.sh is
/// incremental) and returns its path. `HV_STUB_IMG` overrides the path and
/// skips the build.
pub fn image() -> PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE
        .get_or_init(|| match std::env::var_os("HV_STUB_IMG") {
            Some(path) => PathBuf::from(path),
            None => build_image(None),
        })
        .clone()
}

/// The bare COM1 echo image (no VMX), for the serial floor benchmark.
pub fn echo_image() -> PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| build_image(Some("echo"))).clone()
}

fn build_image(variant: Option<&str>) -> PathBuf {
    // One build at a time: both variants share boot.s outputs' directory tree.
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let script = repo_root().join("hv-stub/image/build.sh");
    let out = Command::new(&script)
        .args(variant)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(out.status.success(), "{} failed", script.display());
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        Path::new(&path).is_file(),
        "build.sh printed {path:?}, not an image"
    );
    path.into()
}

/// Instructions per emulated second (`HV_STUB_BOCHS_IPS`, default [`IPS`]).
pub fn ips() -> u32 {
    std::env::var("HV_STUB_BOCHS_IPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(IPS)
}

/// Fails (never skips) when Bochs is missing: CI installs it.
pub fn require_bochs() {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join("bochs-bin").is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "bochs-bin not found: the real-VMX tests need Bochs \
         (apt-get install -y bochs bochs-term bochsbios vgabios)"
    );
    assert!(
        Path::new("/usr/share/bochs/BIOS-bochs-latest").is_file(),
        "Bochs BIOS missing: apt-get install -y bochsbios vgabios"
    );
}

pub enum Com1 {
    /// Bochs listens on this TCP port (mode=socket-server).
    TcpServer(u16),
    /// Bochs opens this tty (mode=term).
    Term(PathBuf),
}

#[derive(Default)]
struct Output {
    lines: Vec<String>,
    /// Streams that reached EOF (stdout and stderr).
    closed: u8,
}

type Shared = Arc<(Mutex<Output>, Condvar)>;

/// A running Bochs. Dropping it SIGKILLs the process group.
pub struct Bochs {
    child: Child,
    pgid: i32,
    output: Shared,
    done: Arc<AtomicBool>,
    workdir: PathBuf,
}

/// A free TCP port on the loopback (bound, then released for Bochs).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().unwrap().port()
}

impl Bochs {
    /// Boots the hv-stub image.
    pub fn start(com1: Com1) -> Bochs {
        Bochs::start_image(&image(), com1)
    }

    pub fn start_image(image: &Path, com1: Com1) -> Bochs {
        require_bochs();
        let workdir =
            std::env::temp_dir().join(format!("hv-stub-bochs-{}-{}", std::process::id(), unique()));
        fs::create_dir_all(&workdir).unwrap();
        let com1_line = match &com1 {
            Com1::TcpServer(port) => {
                format!("com1: enabled=1, mode=socket-server, dev=localhost:{port}")
            }
            Com1::Term(tty) => format!("com1: enabled=1, mode=term, dev={}", tty.display()),
        };
        let rc = format!(
            "megs: 64\n\
             romimage: file=/usr/share/bochs/BIOS-bochs-latest\n\
             vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest\n\
             display_library: term\n\
             ata0-master: type=disk, path={}, mode=flat, cylinders=1, heads=16, spt=63\n\
             boot: disk\n\
             port_e9_hack: enabled=1\n\
             log: bochs.log\n\
             clock: sync=none\n\
             cpu: model=tigerlake, count=1, ips={}, reset_on_triple_fault=0, ignore_bad_msrs=0\n\
             speaker: enabled=0\n\
             sound: driver=dummy\n\
             {com1_line}\n",
            image.display(),
            ips()
        );
        fs::write(workdir.join("bochsrc"), rc).unwrap();
        fs::write(workdir.join("dbg.rc"), "c\n").unwrap();
        let mut command = Command::new("bochs-bin");
        command
            .args(["-q", "-unlock", "-f", "bochsrc", "-rc", "dbg.rc"])
            .current_dir(&workdir)
            .env("TERM", "xterm");
        Bochs::spawn(command, workdir, RUN_DEADLINE)
    }

    /// Runs `command` (bochs-bin, or a launcher script such as
    /// run-bochs.sh) in its own process group with its output collected
    /// line by line, and SIGKILLs it after `deadline`. A launcher that puts
    /// Bochs in a process group of its own must write that group's id to
    /// the file named by `HV_STUB_PIDFILE` (set here): it is killed too.
    /// `workdir` is removed on drop (kept when the test panicked).
    pub fn spawn(mut command: Command, workdir: PathBuf, deadline: Duration) -> Bochs {
        let mut child = command
            .env("HV_STUB_PIDFILE", workdir.join(PGID_FILE))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        let pgid = child.id() as i32;
        let output: Shared = Arc::default();
        // Port 0xE9 bytes arrive on stdout; Bochs's own notices (e.g. "waiting
        // for client to connect") on stderr. Each stream is split into lines
        // on its own so that they never tear each other's lines.
        collect_lines(child.stdout.take().unwrap(), output.clone());
        collect_lines(child.stderr.take().unwrap(), output.clone());
        // The deadline: whatever happens to the test, Bochs dies.
        let done = Arc::new(AtomicBool::new(false));
        let watch = done.clone();
        let watch_dir = workdir.clone();
        thread::spawn(move || {
            let end = Instant::now() + deadline;
            while Instant::now() < end {
                if watch.load(Ordering::Acquire) {
                    return;
                }
                thread::sleep(Duration::from_millis(100));
            }
            kill_all(pgid, &watch_dir);
        });
        Bochs {
            child,
            pgid,
            output,
            done,
            workdir,
        }
    }

    /// Number of complete lines so far (a cursor for `wait_from`).
    pub fn cursor(&self) -> usize {
        self.output.0.lock().unwrap().lines.len()
    }

    pub fn lines(&self) -> Vec<String> {
        self.output.0.lock().unwrap().lines.clone()
    }

    /// Waits for a line at index >= `from` that satisfies `pred`; returns
    /// its index. Fails fast if the guest printed FATAL or Bochs exited.
    pub fn wait_from(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<usize, String> {
        let end = Instant::now() + timeout;
        let (lock, cond) = &*self.output;
        let mut out = lock.lock().unwrap();
        loop {
            if let Some(i) = (from..out.lines.len()).find(|&i| pred(&out.lines[i])) {
                return Ok(i);
            }
            if let Some(fatal) = out.lines.iter().find(|l| l.contains("FATAL")) {
                return Err(format!(
                    "hv-stub failed: {fatal}\n{}",
                    self.tail(&out.lines)
                ));
            }
            let now = Instant::now();
            if out.closed == 2 || now >= end {
                let why = if out.closed == 2 {
                    "Bochs exited"
                } else {
                    "timed out"
                };
                return Err(format!("{why}\n{}", self.tail(&out.lines)));
            }
            out = cond.wait_timeout(out, end - now).unwrap().0;
        }
    }

    fn tail(&self, lines: &[String]) -> String {
        let start = lines.len().saturating_sub(30);
        let log = fs::read_to_string(self.workdir.join("bochs.log")).unwrap_or_default();
        let log_tail: Vec<&str> = log.lines().rev().take(15).collect();
        format!(
            "--- last output lines ---\n{}\n--- bochs.log tail ---\n{}",
            lines[start..].join("\n"),
            log_tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }

    /// Connects to the UART echo image (the benches' floor) booted with
    /// COM1 as a TCP server on `port`, once it is ready: no Nagle, reads
    /// bounded by `read_timeout`.
    #[allow(dead_code)] // Only the benches boot the echo image.
    pub fn connect_echo(&self, port: u16, read_timeout: Duration) -> std::net::TcpStream {
        self.wait_from(0, BOOT_TIMEOUT, |l| l.contains("waiting for client"))
            .expect("Bochs listens on COM1");
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect COM1");
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(read_timeout)).unwrap();
        self.wait_from(0, BOOT_TIMEOUT, |l| l.trim_end().ends_with("READY"))
            .expect("echo image READY");
        stream
    }

    /// Waits for READY and returns what the guest observed at start:
    /// MSR -> value for each present MSR (ABSENT ones are left out).
    pub fn wait_ready(&self) -> BTreeMap<u32, u64> {
        let ready = self
            .wait_from(0, BOOT_TIMEOUT, |l| l.trim_end().ends_with("READY"))
            .unwrap_or_else(|e| panic!("no READY from hv-stub: {e}"));
        let lines = self.lines();
        lines[..ready].iter().filter_map(|l| parse_obs(l)).collect()
    }

    /// Waits for the guest to print `OBS msr value` after line `from`.
    pub fn wait_obs(
        &self,
        from: usize,
        msr: u32,
        value: u64,
        timeout: Duration,
    ) -> Result<(), String> {
        self.wait_from(from, timeout, |l| parse_obs(l) == Some((msr, value)))
            .map(|_| ())
            .map_err(|e| format!("guest never showed OBS {msr:x} {value:x}: {e}"))
    }
}

impl Drop for Bochs {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
        kill_all(self.pgid, &self.workdir);
        let _ = self.child.wait();
        if !thread::panicking() {
            let _ = fs::remove_dir_all(&self.workdir);
        } else {
            eprintln!("Bochs work directory kept: {}", self.workdir.display());
        }
    }
}

fn collect_lines(mut stream: impl Read + Send + 'static, sink: Shared) {
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut partial = Vec::new();
        loop {
            let n = stream.read(&mut buf).unwrap_or(0);
            let (lock, cond) = &*sink;
            let mut out = lock.lock().unwrap();
            if n == 0 {
                out.closed += 1;
                cond.notify_all();
                return;
            }
            for &b in &buf[..n] {
                if b == b'\n' {
                    out.lines
                        .push(String::from_utf8_lossy(&partial).replace('\r', ""));
                    partial.clear();
                } else {
                    partial.push(b);
                }
            }
            cond.notify_all();
        }
    });
}

/// Where a launcher script writes the process-group id it gave Bochs.
const PGID_FILE: &str = "bochs.pgid";

/// Kills Bochs's own process group (if a launcher reported one) and then
/// the group `spawn` started.
fn kill_all(pgid: i32, workdir: &Path) {
    if let Some(bochs) = fs::read_to_string(workdir.join(PGID_FILE))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .filter(|&g| g > 1)
    {
        kill_group(bochs);
    }
    kill_group(pgid);
}

fn kill_group(pgid: i32) {
    // SAFETY: kill(2) with a negative pid signals only that process group:
    // the one `process_group(0)` created, or the one its launcher gave Bochs.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

fn unique() -> u64 {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// `OBS <msr hex> <value hex>` anywhere in a line (Bochs may prefix text).
pub fn parse_obs(line: &str) -> Option<(u32, u64)> {
    let rest = &line[line.find("OBS ")? + 4..];
    let mut parts = rest.split_whitespace();
    let msr = u32::from_str_radix(parts.next()?, 16).ok()?;
    let value = u64::from_str_radix(parts.next()?, 16).ok()?;
    Some((msr, value))
}

/// Opens an engine on a Bochs that is still booting: connects as soon as
/// Bochs listens and lets the handshake's retransmissions cover the boot.
pub fn open_engine(vm: &Bochs, transport: &str, request_timeout: Duration) -> Engine {
    if transport.starts_with("tcp:") {
        // Bochs accepts exactly one connection, after printing this line.
        vm.wait_from(0, BOOT_TIMEOUT, |l| {
            l.contains("waiting for client to connect")
        })
        .unwrap_or_else(|e| panic!("Bochs did not listen on COM1: {e}"));
    }
    let config = EngineConfig {
        transport: transport.to_owned(),
        request_timeout,
        max_attempts: (BOOT_TIMEOUT.as_millis() / request_timeout.as_millis()).max(3) as u32,
        key: None,
    };
    let end = Instant::now() + BOOT_TIMEOUT;
    loop {
        match Engine::open(&config) {
            Ok(engine) => return engine,
            // Not listening yet (a TCP connect refused).
            Err(s) if s.status() == Status::DEVICE_CONNECTION_LOST && Instant::now() < end => {
                thread::sleep(Duration::from_millis(50))
            }
            Err(s) => panic!("Engine::open({transport}) failed: {s:?}"),
        }
    }
}

/// One pseudo-terminal: the master fd and the slave's path. The slave is
/// kept open (in raw mode) so the line never hangs up between users.
pub struct Pty {
    pub master: OwnedFd,
    _slave: OwnedFd,
    pub path: PathBuf,
}

impl Pty {
    pub fn open() -> Pty {
        // SAFETY: plain libc calls on fds we own; ptsname_r writes at most
        // buf.len() bytes into buf.
        unsafe {
            let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
            assert!(m >= 0, "posix_openpt failed");
            let master = OwnedFd::from_raw_fd(m);
            assert_eq!(libc::grantpt(m), 0);
            assert_eq!(libc::unlockpt(m), 0);
            let mut buf = [0 as libc::c_char; 128];
            assert_eq!(libc::ptsname_r(m, buf.as_mut_ptr(), buf.len()), 0);
            let path = PathBuf::from(CStr::from_ptr(buf.as_ptr()).to_str().unwrap());
            let cpath = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
            let s = libc::open(cpath.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
            assert!(s >= 0, "open {}", path.display());
            let slave = OwnedFd::from_raw_fd(s);
            for fd in [m, s] {
                let mut t: libc::termios = std::mem::zeroed();
                assert_eq!(libc::tcgetattr(fd, &mut t), 0);
                libc::cfmakeraw(&mut t);
                assert_eq!(libc::tcsetattr(fd, libc::TCSANOW, &t), 0);
            }
            Pty {
                master,
                _slave: slave,
                path,
            }
        }
    }
}

/// Copies bytes between two pty masters until dropped.
pub struct Relay {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Relay {
    pub fn start(a: Pty, b: Pty) -> Relay {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let fds = [a.master.as_raw_fd(), b.master.as_raw_fd()];
            let mut buf = [0u8; 512];
            while !flag.load(Ordering::Acquire) {
                let mut polls = [
                    libc::pollfd {
                        fd: fds[0],
                        events: libc::POLLIN,
                        revents: 0,
                    },
                    libc::pollfd {
                        fd: fds[1],
                        events: libc::POLLIN,
                        revents: 0,
                    },
                ];
                // SAFETY: polls is a valid array of two pollfd.
                let n = unsafe { libc::poll(polls.as_mut_ptr(), 2, 50) };
                if n <= 0 {
                    continue;
                }
                for (i, p) in polls.iter().enumerate() {
                    if p.revents & libc::POLLIN == 0 {
                        continue;
                    }
                    // SAFETY: reading into / writing from a local buffer on
                    // fds the Pty values (moved into this thread) own.
                    unsafe {
                        let got = libc::read(fds[i], buf.as_mut_ptr().cast(), buf.len());
                        if got > 0 {
                            let mut off = 0;
                            while off < got as usize {
                                let put = libc::write(
                                    fds[1 - i],
                                    buf[off..].as_ptr().cast(),
                                    got as usize - off,
                                );
                                if put <= 0 {
                                    break;
                                }
                                off += put as usize;
                            }
                        }
                    }
                }
            }
            drop((a, b));
        });
        Relay {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A message for the UART echo image (the benches' floor): `out` bytes
/// (its length, the answer's length, filler) that ask for `back` bytes.
#[allow(dead_code)] // Only the benches talk to the echo image.
pub fn echo_message(out: usize, back: usize) -> Vec<u8> {
    let mut message = vec![0x5Au8; out];
    message[0] = u8::try_from(out).expect("a frame is shorter than 256 bytes");
    message[1] = u8::try_from(back).expect("a frame is shorter than 256 bytes");
    message
}

/// Reads the echo image's answer into `answer` (its whole length),
/// acknowledging a partial answer at once as libpulse's TCP transport does.
#[allow(dead_code)] // Only the benches talk to the echo image.
pub fn echo_answer(mut stream: &std::net::TcpStream, answer: &mut [u8]) {
    use std::io::Read;
    let mut got = 0;
    while got < answer.len() {
        if got > 0 {
            pulse::sys::tcp_quickack(stream);
        }
        match stream.read(&mut answer[got..]) {
            Ok(0) | Err(_) => panic!("the echo image stopped answering"),
            Ok(n) => got += n,
        }
    }
}
