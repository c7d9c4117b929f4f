//! Requests in flight: libpulse's window against stop-and-wait, each row
//! beside a floor of the same bytes over the same kind of link.
//!
//!     cargo bench --bench pipeline
//!
//! Environment (the defaults keep a run near two minutes):
//! `PIPELINE_ROUNDS` (5), `PIPELINE_SECONDS` per host row per round (0.3;
//! rows through the paced line and under Bochs take 4× that), and
//! `PIPELINE_BOCHS=0` to leave out the Bochs section.
//!
//! Four sections, every row measured in every round, the order reversed
//! every other round; each figure is the spread (min–median–max) of its
//! per-round values, each ratio taken within a round:
//!
//! * **Window**: writes per second with 1, 4, 16 and 64 requests in flight,
//!   one thread submitting through `Submitter::submit` and waiting for the
//!   oldest `Pending`, over TCP and over a pty to `hv-stub-sim` processes.
//!   Beside it, a bare protocol client (the same frames, written straight
//!   to the link by one thread, no libpulse) against another `hv-stub-sim`
//!   process, and the floor: a bare client keeping as many exchanges in
//!   flight — 21 bytes out, 9 back, from the protocol crate — against a
//!   server process that answers every complete request it has read (no
//!   protocol).
//! * **Paced line**: the same through a relay that carries 11 520 bytes/s
//!   each way (115 200 baud 8N1), against the line's ceiling for the
//!   request direction (11 520 / 21 writes/s) and the bare client through
//!   the same kind of relay.
//! * **Threads**: 16 threads calling `Engine::write_msr` on one engine
//!   against one thread, with each call's latency, over TCP.
//! * **Bochs**: 1 and 16 in flight to hv-stub under Bochs over COM1 as TCP,
//!   beside the UART echo image (no VMX, no protocol) with as many in
//!   flight; both images boot every round, the first one alternating.
//!
//! `pipeline --floor-server tcp|pty` is the floor server process this bench
//! starts (it prints `listening tcp:ADDR` or `listening serial:PATH`).

// The tier-2 test helpers: `hv-stub-sim` built and started as a process.
#[path = "../tests/support/mod.rs"]
mod support;
// The Bochs harness shared with tests/bochs_e2e.rs.
#[path = "../tests/bochs/mod.rs"]
mod bochs;

#[path = "common/floor_process.rs"]
mod floor_process;
#[path = "common/paced.rs"]
mod paced;
#[path = "common/spread.rs"]
mod spread;
#[path = "common/window.rs"]
mod window;
#[path = "common/wire.rs"]
mod wire;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

use floor_process::FloorProcess;
use hv_stub::msr::index::IA32_LSTAR;
use paced::{Cut, PacedRelay};
use pulse::engine::{Operation, Pending, Submitter};
use pulse::{Engine, EngineConfig};
use pulse_proto::{Decoder, Message, RawFrame, WireStatus, NO_SESSION, PROTOCOL_VERSION};
use serialport::{SerialPort, TTYPort};
use spread::{ratios, Spread};
use support::SimProcess;
use window::{keep_in_flight, Window};

/// 115 200 baud, 8N1: ten bit times per byte.
const LINE_BYTES_PER_S: f64 = 11_520.0;
const WINDOWS: [usize; 4] = [1, 4, 16, 64];
const PACED_WINDOWS: [usize; 3] = [1, 4, 16];
const BOCHS_WINDOWS: [usize; 2] = [1, 16];
const THREADS: usize = 16;

fn value(i: u64) -> u64 {
    0xFFFF_F800_0000_0000 | ((i & 0xFFFF_FFFF) << 4)
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------
// The two kinds of client.

/// libpulse: writes submitted through a `Submitter`, answers taken in
/// submission order.
struct EngineWindow {
    submitter: Submitter,
    pending: VecDeque<Pending>,
    next: u64,
}

impl EngineWindow {
    fn new(engine: &Engine) -> Rc<RefCell<EngineWindow>> {
        Rc::new(RefCell::new(EngineWindow {
            submitter: engine.submitter(),
            pending: VecDeque::new(),
            next: 0,
        }))
    }
}

impl Window for EngineWindow {
    fn send(&mut self) {
        let operation = Operation::WriteMsr {
            msr: IA32_LSTAR,
            value: value(self.next),
        };
        self.next += 1;
        self.pending.push_back(self.submitter.submit(operation));
    }

    fn receive(&mut self) {
        let oldest = self.pending.pop_front().expect("a request in flight");
        oldest.wait_until(oldest.deadline() + Duration::from_secs(1));
        oldest
            .outcome()
            .expect("the request completed by its deadline")
            .expect("write_msr");
    }
}

/// A bare client: a write's bytes out, an answer's bytes back, no
/// protocol. Each request is its own write, as libpulse sends each frame;
/// answers are read as they come, many at once when several are there.
struct StreamWindow<S> {
    stream: S,
    request: Vec<u8>,
    answer_len: usize,
    inbox: Vec<u8>,
    /// Answer bytes read and not yet taken.
    buffered: usize,
}

impl<S: Read + Write> StreamWindow<S> {
    fn new(stream: S) -> Rc<RefCell<StreamWindow<S>>> {
        let (request, answer) = wire::write_exchange();
        Rc::new(RefCell::new(StreamWindow {
            stream,
            request: vec![0x5A; request],
            answer_len: answer,
            inbox: vec![0; 4096],
            buffered: 0,
        }))
    }
}

impl<S: Read + Write> Window for StreamWindow<S> {
    fn send(&mut self) {
        self.stream.write_all(&self.request).expect("floor send");
    }

    fn receive(&mut self) {
        while self.buffered < self.answer_len {
            match self.stream.read(&mut self.inbox) {
                Ok(0) | Err(_) => panic!("the floor server stopped answering"),
                Ok(n) => self.buffered += n,
            }
        }
        self.buffered -= self.answer_len;
    }
}

/// A bare protocol client: the frames libpulse sends, built with the
/// protocol crate and written straight to the link (no libpulse, no I/O
/// thread), answers decoded and checked in order. It keeps at most the
/// debuggee's window in flight, and opens a new session before the
/// session's SEQs run out.
struct ProtocolWindow<S> {
    stream: S,
    decoder: Decoder,
    inbox: Vec<u8>,
    answers: VecDeque<RawFrame>,
    session: u8,
    base: u16,
    window: usize,
    /// The position of the next request in the session (the Hello is 0).
    next: u16,
    /// Positions sent and not answered, oldest first.
    outstanding: VecDeque<u16>,
    /// Answers taken early (before a new session) and not yet reported.
    taken_early: usize,
}

/// Requests per session before the bare client opens a new one (a session
/// holds `SESSION_REQUESTS`).
const BARE_SESSION_REQUESTS: u16 = 60_000;

impl<S: Read + Write> ProtocolWindow<S> {
    fn new(stream: S) -> Rc<RefCell<ProtocolWindow<S>>> {
        let mut link = ProtocolWindow {
            stream,
            decoder: Decoder::new(),
            inbox: vec![0; 4096],
            answers: VecDeque::new(),
            session: NO_SESSION,
            base: 0,
            window: 0,
            next: 0,
            outstanding: VecDeque::new(),
            taken_early: 0,
        };
        link.handshake();
        Rc::new(RefCell::new(link))
    }

    fn handshake(&mut self) {
        // A fresh SEQ for every Hello: the same one again would be taken
        // for a retransmission of the last.
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u16;
        let mut base = clock ^ 0x5A5A;
        if base == self.base {
            base = base.wrapping_add(1);
        }
        let hello = Message::Hello {
            version: PROTOCOL_VERSION,
            nonce: 0x0B0E_5A5A,
        };
        self.write(hello.to_frame(NO_SESSION, base).as_bytes());
        let ack = self.next_answer();
        assert_eq!(ack.seq, base, "the HelloAck answers this Hello");
        match Message::parse(&ack) {
            Ok(Message::HelloAck { window, .. }) => self.window = usize::from(window),
            other => panic!("expected a HelloAck, got {other:?}"),
        }
        self.session = ack.session;
        self.base = base;
        self.next = 1;
    }

    fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("bare client send");
    }

    fn next_answer(&mut self) -> RawFrame {
        while self.answers.is_empty() {
            let n = match self.stream.read(&mut self.inbox) {
                Ok(0) | Err(_) => panic!("hv-stub-sim stopped answering the bare client"),
                Ok(n) => n,
            };
            let answers = &mut self.answers;
            self.decoder
                .feed(&self.inbox[..n], |f| answers.push_back(f));
        }
        self.answers.pop_front().unwrap()
    }

    /// Waits for the oldest outstanding write's answer and checks it.
    fn take_answer(&mut self) {
        let k = self.outstanding.pop_front().expect("a request in flight");
        let answer = self.next_answer();
        assert_eq!(
            (answer.session, answer.seq),
            (self.session, self.base.wrapping_add(k)),
            "answers come in order"
        );
        assert!(
            matches!(
                Message::parse(&answer),
                Ok(Message::WriteAck {
                    status: WireStatus::Ok
                })
            ),
            "the write succeeded"
        );
    }
}

impl<S: Read + Write> Window for ProtocolWindow<S> {
    fn send(&mut self) {
        if self.next >= BARE_SESSION_REQUESTS {
            while !self.outstanding.is_empty() {
                self.take_answer();
                self.taken_early += 1;
            }
            self.handshake();
        }
        // Beyond the window, wait as libpulse's queue does.
        while self.outstanding.len() >= self.window {
            self.take_answer();
            self.taken_early += 1;
        }
        let k = self.next;
        self.next += 1;
        let request = Message::WriteMsr {
            cpu: 0,
            msr: IA32_LSTAR,
            value: value(u64::from(k)),
        };
        let frame = request.to_frame(self.session, self.base.wrapping_add(k));
        self.write(frame.as_bytes());
        self.outstanding.push_back(k);
    }

    fn receive(&mut self) {
        if self.taken_early > 0 {
            self.taken_early -= 1;
        } else {
            self.take_answer();
        }
    }
}

/// The bare client of the Bochs UART echo image, whose message format
/// names its length and its answer's: acknowledges a partial answer at
/// once, as libpulse's TCP transport does.
struct EchoWindow {
    stream: TcpStream,
    message: Vec<u8>,
    answer: Vec<u8>,
}

impl Window for EchoWindow {
    fn send(&mut self) {
        self.stream.write_all(&self.message).expect("echo send");
    }

    fn receive(&mut self) {
        bochs::echo_answer(&self.stream, &mut self.answer);
    }
}

fn tcp_client(transport: &str) -> TcpStream {
    let stream = TcpStream::connect(transport.strip_prefix("tcp:").unwrap()).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// The pty slave opened as libpulse's `serial:` transport opens it.
fn pty_client(transport: &str) -> TTYPort {
    let path = transport.strip_prefix("serial:").unwrap();
    let mut port = serialport::new(path, 115_200)
        .open_native()
        .expect("open the floor pty");
    port.set_timeout(Duration::from_secs(10)).unwrap();
    port
}

fn engine(transport: &str) -> Engine {
    Engine::open(&EngineConfig::new(transport)).expect("engine")
}

fn addr(transport: &str) -> SocketAddr {
    transport.strip_prefix("tcp:").unwrap().parse().unwrap()
}

// ---------------------------------------------------------------------------
// The floor server, as a process of its own like `hv-stub-sim`.

/// Answers each request's bytes with an answer's, until the link closes:
/// whatever has arrived is read at once, and the answers to every
/// complete request in it go back in one write.
fn serve_floor(mut link: impl Read + Write) {
    let (request, answer) = wire::write_exchange();
    let mut inbox = vec![0u8; 4096];
    let answers = vec![0u8; (inbox.len() / request + 1) * answer];
    let mut partial = 0;
    loop {
        let n = match link.read(&mut inbox) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let complete = (partial + n) / request;
        partial = (partial + n) % request;
        let reply = &answers[..complete * answer];
        if link.write_all(reply).is_err() || link.flush().is_err() {
            return;
        }
    }
}

fn floor_server_main(kind: &str) -> ! {
    let announce = |transport: String| {
        println!("listening {transport}");
        std::io::stdout().flush().unwrap();
    };
    match kind {
        "tcp" => {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            announce(format!("tcp:{}", listener.local_addr().unwrap()));
            // A thread per connection: the paced relay's and the direct
            // client's links are open at once.
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                stream.set_nodelay(true).unwrap();
                std::thread::spawn(move || serve_floor(stream));
            }
        }
        "pty" => {
            let (mut master, slave) = TTYPort::pair().expect("a pseudo-terminal");
            master.set_timeout(Duration::from_secs(3600)).unwrap();
            announce(format!("serial:{}", slave.name().expect("pty slave path")));
            serve_floor(master);
        }
        other => panic!("unknown floor server kind {other}"),
    }
    std::process::exit(0)
}

// ---------------------------------------------------------------------------
// Rows and rounds.

/// One measured row: run for a budget, give a figure per second.
struct Row {
    name: String,
    run: Box<dyn FnMut(Duration) -> f64>,
    rates: Vec<f64>,
}

fn windowed_row(name: String, link: Rc<RefCell<impl Window + 'static>>, window: usize) -> Row {
    Row {
        name,
        run: Box::new(move |budget| keep_in_flight(&mut *link.borrow_mut(), window, budget)),
        rates: Vec::new(),
    }
}

/// A floor row and a libpulse row for each window of section (a).
fn add_window_rows(
    rows: &mut Vec<Row>,
    link: &str,
    libpulse: &Rc<RefCell<EngineWindow>>,
    bare: &Rc<RefCell<impl Window + 'static>>,
    floor: &Rc<RefCell<impl Window + 'static>>,
) {
    for w in WINDOWS {
        rows.push(windowed_row(
            format!("floor {link} {w}"),
            Rc::clone(floor),
            w,
        ));
        rows.push(windowed_row(format!("bare {link} {w}"), Rc::clone(bare), w));
        rows.push(windowed_row(
            format!("libpulse {link} {w}"),
            Rc::clone(libpulse),
            w,
        ));
    }
}

/// Runs every row once, forwards or backwards.
fn run_round(rows: &mut [Row], budget: Duration, backwards: bool) {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    if backwards {
        order.reverse();
    }
    for i in order {
        let rate = (rows[i].run)(budget);
        rows[i].rates.push(rate);
    }
}

fn find<'a>(rows: &'a [Row], name: &str) -> &'a [f64] {
    &rows
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no row {name}"))
        .rates
}

fn spread(values: &[f64], decimals: usize) -> String {
    Spread::of(values).show(decimals)
}

fn ratio(row: &[f64], floor: &[f64]) -> String {
    spread(&ratios(row, floor), 2)
}

/// Section (c): `threads` threads calling `write_msr` for `budget`;
/// calls per second and every call's latency.
fn threaded(engine: &Engine, threads: usize, budget: Duration) -> (f64, Vec<Duration>) {
    let start = Instant::now();
    let latencies: Vec<Vec<Duration>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut latencies = Vec::new();
                    let mut i = (t as u64) << 24;
                    while start.elapsed() < budget {
                        let call = Instant::now();
                        engine.write_msr(IA32_LSTAR, value(i)).expect("write_msr");
                        latencies.push(call.elapsed());
                        i += 1;
                    }
                    latencies
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let elapsed = start.elapsed();
    let mut all: Vec<Duration> = latencies.into_iter().flatten().collect();
    all.sort();
    (all.len() as f64 / elapsed.as_secs_f64(), all)
}

fn percentile_us(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--floor-server") {
        floor_server_main(args.get(i + 1).map_or("", String::as_str));
    }
    let rounds: usize = env_or("PIPELINE_ROUNDS", 5usize).max(1);
    let host_budget = Duration::from_secs_f64(env_or("PIPELINE_SECONDS", 0.3));
    let long_budget = host_budget * 4;
    let with_bochs = std::env::var("PIPELINE_BOCHS").as_deref() != Ok("0");
    let (request_bytes, answer_bytes) = wire::write_exchange();
    let ceiling = LINE_BYTES_PER_S / request_bytes as f64;
    println!(
        "pipeline bench: {rounds} rounds, {:.1} s per host row, {:.1} s per paced or Bochs row; load average at start {}",
        host_budget.as_secs_f64(),
        long_budget.as_secs_f64(),
        load_average()
    );

    // One debuggee serves one session at a time: each engine gets its own.
    let sim_tcp = SimProcess::start(&["--listen", "127.0.0.1:0"]);
    let sim_pty = SimProcess::start(&["--pty"]);
    let sim_paced = SimProcess::start(&["--listen", "127.0.0.1:0"]);
    let sim_tcp_bare = SimProcess::start(&["--listen", "127.0.0.1:0"]);
    let sim_pty_bare = SimProcess::start(&["--pty"]);
    let floor_tcp = FloorProcess::start("tcp");
    let floor_pty = FloorProcess::start("pty");
    let relay_to_sim = PacedRelay::start(
        addr(&sim_paced.transport),
        LINE_BYTES_PER_S,
        Cut::Frames,
        Cut::Frames,
    );
    let relay_to_floor = PacedRelay::start(
        addr(&floor_tcp.transport),
        LINE_BYTES_PER_S,
        Cut::Fixed(request_bytes),
        Cut::Fixed(answer_bytes),
    );

    let tcp_engine = engine(&sim_tcp.transport);
    let pty_engine = engine(&sim_pty.transport);
    let paced_engine = engine(&relay_to_sim.transport());

    // (a) the window over TCP and pty.
    let mut window_rows = Vec::new();
    add_window_rows(
        &mut window_rows,
        "TCP",
        &EngineWindow::new(&tcp_engine),
        &ProtocolWindow::new(tcp_client(&sim_tcp_bare.transport)),
        &StreamWindow::new(tcp_client(&floor_tcp.transport)),
    );
    add_window_rows(
        &mut window_rows,
        "pty",
        &EngineWindow::new(&pty_engine),
        &ProtocolWindow::new(pty_client(&sim_pty_bare.transport)),
        &StreamWindow::new(pty_client(&floor_pty.transport)),
    );

    // (b) the paced line.
    let mut paced_rows = Vec::new();
    let paced_libpulse = EngineWindow::new(&paced_engine);
    let paced_floor = StreamWindow::new(tcp_client(&relay_to_floor.transport()));
    for w in PACED_WINDOWS {
        paced_rows.push(windowed_row(
            format!("floor {w}"),
            Rc::clone(&paced_floor),
            w,
        ));
        paced_rows.push(windowed_row(
            format!("libpulse {w}"),
            Rc::clone(&paced_libpulse),
            w,
        ));
    }

    // (c) threads on one engine.
    let (mut thread_rates, mut p50, mut p99) =
        ([vec![], vec![]], [vec![], vec![]], [vec![], vec![]]);
    let thread_counts = [1, THREADS];

    // (d) Bochs.
    let mut bochs_libpulse: Vec<Vec<f64>> = vec![Vec::new(); BOCHS_WINDOWS.len()];
    let mut bochs_floor: Vec<Vec<f64>> = vec![Vec::new(); BOCHS_WINDOWS.len()];
    let mut boot_ms = Vec::new();
    if with_bochs {
        bochs::require_bochs();
        // Build both images before the first round, off the clock.
        let _ = (bochs::image(), bochs::echo_image());
    }

    for round in 0..rounds {
        let backwards = round % 2 == 1;
        run_round(&mut window_rows, host_budget, backwards);
        run_round(&mut paced_rows, long_budget, backwards);
        let mut counts: Vec<usize> = (0..thread_counts.len()).collect();
        if backwards {
            counts.reverse();
        }
        for c in counts {
            let (rate, latencies) = threaded(&tcp_engine, thread_counts[c], host_budget);
            thread_rates[c].push(rate);
            p50[c].push(percentile_us(&latencies, 0.50));
            p99[c].push(percentile_us(&latencies, 0.99));
        }
        if with_bochs {
            let hv_first = !backwards;
            for image in [hv_first, !hv_first] {
                if image {
                    let (boot, rates) = bochs_hv_round(long_budget, backwards);
                    boot_ms.push(boot);
                    for (series, rate) in bochs_libpulse.iter_mut().zip(rates) {
                        series.push(rate);
                    }
                } else {
                    let rates = bochs_floor_round(long_budget, backwards);
                    for (series, rate) in bochs_floor.iter_mut().zip(rates) {
                        series.push(rate);
                    }
                }
            }
        }
        let paced = paced_engine.stats();
        eprintln!(
            "round {} of {rounds} done (paced line so far: {} retransmissions, {} unmatched answers)",
            round + 1,
            paced.retransmissions,
            paced.unmatched_answers
        );
    }

    println!("load average at the end {}", load_average());
    for (name, engine) in [
        ("TCP", &tcp_engine),
        ("pty", &pty_engine),
        ("paced line", &paced_engine),
    ] {
        let stats = engine.stats();
        println!(
            "engine {name}: window {}, most in flight {}, handshakes {}, retransmissions {}, unmatched answers {}",
            stats.window,
            stats.most_in_flight,
            stats.handshakes,
            stats.retransmissions,
            stats.unmatched_answers
        );
    }
    for row in window_rows.iter().chain(&paced_rows) {
        eprintln!("per round, {}: {:.0?}", row.name, row.rates);
    }
    println!();
    println!("### Writes per second with N requests in flight (hv-stub-sim processes)");
    println!();
    println!("| link | in flight | libpulse writes/s | bare protocol client writes/s | floor writes/s | libpulse / bare client | libpulse / floor | libpulse / libpulse with 1 in flight |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for link in ["TCP", "pty"] {
        let one = find(&window_rows, &format!("libpulse {link} 1"));
        for w in WINDOWS {
            let row = find(&window_rows, &format!("libpulse {link} {w}"));
            let floor = find(&window_rows, &format!("floor {link} {w}"));
            let bare = find(&window_rows, &format!("bare {link} {w}"));
            println!(
                "| {link} | {w} | {} | {} | {} | {} | {} | {} |",
                spread(row, 0),
                spread(bare, 0),
                spread(floor, 0),
                ratio(row, bare),
                ratio(row, floor),
                ratio(row, one)
            );
        }
    }

    println!();
    println!(
        "### Through a line paced at {LINE_BYTES_PER_S} bytes/s each way: ceiling {ceiling:.1} writes/s ({request_bytes}-byte requests; {answer_bytes}-byte answers)"
    );
    println!();
    println!("| in flight | libpulse writes/s | of the ceiling | vs libpulse stop-and-wait | floor writes/s | floor of the ceiling |");
    println!("|---:|---:|---:|---:|---:|---:|");
    let stop_and_wait = find(&paced_rows, "libpulse 1");
    for w in PACED_WINDOWS {
        let row = find(&paced_rows, &format!("libpulse {w}"));
        let floor = find(&paced_rows, &format!("floor {w}"));
        let of_ceiling: Vec<f64> = row.iter().map(|r| r / ceiling).collect();
        let floor_of_ceiling: Vec<f64> = floor.iter().map(|r| r / ceiling).collect();
        println!(
            "| {w} | {} | {} | {} | {} | {} |",
            spread(row, 0),
            spread(&of_ceiling, 3),
            ratio(row, stop_and_wait),
            spread(floor, 0),
            spread(&floor_of_ceiling, 3)
        );
    }

    println!();
    println!("### Threads calling Engine::write_msr on one engine (TCP, hv-stub-sim process)");
    println!();
    println!(
        "| threads | writes/s (all threads) | vs 1 thread | p50 latency µs | p99 latency µs |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for (c, &threads) in thread_counts.iter().enumerate() {
        println!(
            "| {threads} | {} | {} | {} | {} |",
            spread(&thread_rates[c], 0),
            ratio(&thread_rates[c], &thread_rates[0]),
            spread(&p50[c], 0),
            spread(&p99[c], 0)
        );
    }

    if with_bochs {
        println!();
        println!(
            "### hv-stub under Bochs (ips={}), COM1 as TCP; boot to READY {} ms",
            bochs::ips(),
            spread(&boot_ms, 0)
        );
        println!();
        println!("| in flight | libpulse writes/s | floor (UART echo) writes/s | libpulse / floor | libpulse / libpulse with 1 in flight |");
        println!("|---:|---:|---:|---:|---:|");
        for (i, w) in BOCHS_WINDOWS.iter().enumerate() {
            println!(
                "| {w} | {} | {} | {} | {} |",
                spread(&bochs_libpulse[i], 0),
                spread(&bochs_floor[i], 0),
                ratio(&bochs_libpulse[i], &bochs_floor[i]),
                ratio(&bochs_libpulse[i], &bochs_libpulse[0])
            );
        }
    }
}

/// Boots hv-stub and measures each Bochs window once: boot-to-READY
/// milliseconds and writes per second per window.
fn bochs_hv_round(budget: Duration, backwards: bool) -> (f64, Vec<f64>) {
    let start = Instant::now();
    let port = bochs::free_port();
    let vm = bochs::Bochs::start(bochs::Com1::TcpServer(port));
    let engine = bochs::open_engine(
        &vm,
        &format!("tcp:127.0.0.1:{port}"),
        Duration::from_secs(1),
    );
    vm.wait_ready();
    let boot_ms = start.elapsed().as_secs_f64() * 1e3;
    let link = EngineWindow::new(&engine);
    let rates = in_order(&BOCHS_WINDOWS, backwards, |w| {
        keep_in_flight(&mut *link.borrow_mut(), w, budget)
    });
    (boot_ms, rates)
}

/// Boots the UART echo image and measures each Bochs window once.
fn bochs_floor_round(budget: Duration, backwards: bool) -> Vec<f64> {
    let port = bochs::free_port();
    let vm = bochs::Bochs::start_image(&bochs::echo_image(), bochs::Com1::TcpServer(port));
    let stream = vm.connect_echo(port, Duration::from_secs(5));
    let (out, back) = wire::write_exchange();
    let mut link = EchoWindow {
        stream,
        message: bochs::echo_message(out, back),
        answer: vec![0; back],
    };
    in_order(&BOCHS_WINDOWS, backwards, |w| {
        keep_in_flight(&mut link, w, budget)
    })
}

/// `measure` for each of `items`, run in order or backwards, results in
/// the items' order.
fn in_order(items: &[usize], backwards: bool, mut measure: impl FnMut(usize) -> f64) -> Vec<f64> {
    let mut results = vec![0.0; items.len()];
    let mut order: Vec<usize> = (0..items.len()).collect();
    if backwards {
        order.reverse();
    }
    for i in order {
        results[i] = measure(items[i]);
    }
    results
}
