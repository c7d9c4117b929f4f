//! Write round trips per second, each link measured beside its floor.
//!
//!     cargo bench --bench roundtrip [-- SECONDS_PER_ROW [ROUNDS]]   # default 1 s, 5 rounds
//!
//! A floor is the same exchange as a `PsWriteMsr` — 21 bytes out, 9 bytes
//! back since protocol version 3 (docs/PROTOCOL.md section 7; the bench
//! takes the counts from the protocol crate) — with no protocol, over the
//! same kind of link between the same kind of endpoints: a TCP loopback or
//! a pseudo-terminal, served by a thread of this process or by another
//! process. The floor's server reads exactly a request's bytes and writes
//! an answer's; its client is a plain blocking `TcpStream`, or the pty slave
//! opened with the serialport crate as libpulse's `serial:` transport opens
//! it.
//!
//! All rows run in every round, each right after its floor, and the order
//! of a floor and its row alternates between rounds, so machine noise hits
//! both alike. Reported per row: the spread of its rate across rounds and
//! the spread of its per-round ratio to the floor measured in the same
//! round (min–median–max).
//!
//! `roundtrip --floor-server tcp|pty` is the out-of-process floor server
//! this bench starts (it prints `listening tcp:ADDR` or `listening
//! serial:PATH`, as `hv-stub-sim` does).

// The tier-2 test helpers: `hv-stub-sim` built and started as a process.
#[path = "../tests/support/mod.rs"]
mod support;

#[path = "common/floor_process.rs"]
mod floor_process;
#[path = "common/rate.rs"]
mod rate;
#[path = "common/spread.rs"]
mod spread;
#[path = "common/wire.rs"]
mod wire;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use floor_process::FloorProcess;
use hv_stub::msr::index::IA32_LSTAR;
use hv_stub::CpuCaps;
use pulse::{Engine, EngineConfig};
use rate::rate;
use serialport::{SerialPort, TTYPort};
use spread::{ratios, Spread};
use support::SimProcess;

fn engine(transport: &str) -> Engine {
    Engine::open(&EngineConfig::new(transport)).expect("engine")
}

fn value(i: u64) -> u64 {
    0xFFFF_F800_0000_0000 | ((i & 0xFFFF_FFFF) << 4)
}

/// Serves the floor exchange on one stream until it closes.
fn serve_floor(mut stream: impl Read + Write) {
    let (request, answer) = wire::write_exchange();
    let (mut request, answer) = (vec![0u8; request], vec![0u8; answer]);
    while stream.read_exact(&mut request).is_ok() {
        if stream.write_all(&answer).is_err() || stream.flush().is_err() {
            return;
        }
    }
}

fn floor_tcp_listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let transport = format!("tcp:{}", listener.local_addr().unwrap());
    (listener, transport)
}

fn serve_floor_tcp(listener: TcpListener) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { return };
        stream.set_nodelay(true).unwrap();
        serve_floor(stream);
    }
}

/// A pty pair whose master serves the floor; returns it and the slave path.
fn floor_pty() -> (TTYPort, TTYPort, String) {
    let (mut master, slave) = TTYPort::pair().expect("a pseudo-terminal");
    master.set_timeout(Duration::from_secs(3600)).unwrap();
    let path = slave.name().expect("pty slave path");
    (master, slave, format!("serial:{path}"))
}

/// The out-of-process floor server (`--floor-server tcp|pty`).
fn floor_server_main(kind: &str) -> ! {
    let announce = |transport: &str| {
        println!("listening {transport}");
        std::io::stdout().flush().unwrap();
    };
    match kind {
        "tcp" => {
            let (listener, transport) = floor_tcp_listener();
            announce(&transport);
            serve_floor_tcp(listener);
        }
        "pty" => {
            let (master, _slave, transport) = floor_pty();
            announce(&transport);
            serve_floor(master);
        }
        other => panic!("unknown floor server kind {other}"),
    }
    std::process::exit(0)
}

/// The floor's client side of a link.
enum FloorClient {
    Tcp(TcpStream),
    Pty(TTYPort),
}

impl FloorClient {
    fn connect(transport: &str) -> FloorClient {
        if let Some(addr) = transport.strip_prefix("tcp:") {
            let stream = TcpStream::connect(addr).unwrap();
            stream.set_nodelay(true).unwrap();
            FloorClient::Tcp(stream)
        } else {
            let path = transport.strip_prefix("serial:").unwrap();
            let mut port = serialport::new(path, 115_200)
                .open_native()
                .expect("open the floor pty");
            port.set_timeout(Duration::from_secs(10)).unwrap();
            FloorClient::Pty(port)
        }
    }

    fn exchange(&mut self, request: &[u8], answer: &mut [u8]) {
        match self {
            FloorClient::Tcp(s) => {
                s.write_all(request).unwrap();
                s.read_exact(answer).unwrap();
            }
            FloorClient::Pty(p) => {
                p.write_all(request).unwrap();
                p.read_exact(answer).unwrap();
            }
        }
    }
}

struct Row {
    name: &'static str,
    /// Index of the row that is this row's floor.
    floor: Option<usize>,
    op: Box<dyn FnMut(u64)>,
}

fn row(name: &'static str, floor: Option<usize>, op: impl FnMut(u64) + 'static) -> Row {
    Row {
        name,
        floor,
        op: Box::new(op),
    }
}

fn write_row(name: &'static str, floor: usize, engine: Engine) -> Row {
    row(name, Some(floor), move |i| {
        engine.write_msr(IA32_LSTAR, value(i)).unwrap()
    })
}

fn floor_row(name: &'static str, mut client: FloorClient) -> Row {
    let (request, answer) = wire::write_exchange();
    let (request, mut answer) = (vec![0u8; request], vec![0u8; answer]);
    row(name, None, move |_| client.exchange(&request, &mut answer))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--floor-server") {
        floor_server_main(args.get(i + 1).map_or("", String::as_str));
    }
    let numbers: Vec<f64> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let budget = Duration::from_secs_f64(numbers.first().copied().unwrap_or(1.0));
    let rounds = numbers.get(1).map_or(5, |&r| r as usize).max(1);

    // One debuggee serves one session at a time: each link gets its own.
    let (tcp_addr, _stop_tcp) =
        hv_stub_sim::spawn_tcp(hv_stub_sim::new_target(CpuCaps::MODERN), "127.0.0.1:0").unwrap();
    let (pty_path, _stop_pty) =
        hv_stub_sim::spawn_pty(hv_stub_sim::new_target(CpuCaps::MODERN)).unwrap();
    let sim_tcp_process = SimProcess::start(&["--listen", "127.0.0.1:0"]);
    let sim_pty_process = SimProcess::start(&["--pty"]);

    let (floor_listener, floor_tcp) = floor_tcp_listener();
    std::thread::spawn(move || serve_floor_tcp(floor_listener));
    let (floor_master, _floor_slave, floor_pty_transport) = floor_pty();
    std::thread::spawn(move || serve_floor(floor_master));
    let floor_tcp_process = FloorProcess::start("tcp");
    let floor_pty_process = FloorProcess::start("pty");

    let sim = engine("sim");
    let sim_c = CEngine::create();
    let mut rows = vec![
        row("sim, Rust Engine::write_msr", None, move |i| {
            sim.write_msr(IA32_LSTAR, value(i)).unwrap()
        }),
        row("sim, C ABI PsWriteMsr", None, move |i| {
            assert_eq!(sim_c.write(IA32_LSTAR, value(i)), 0)
        }),
        floor_row("floor: TCP, thread", FloorClient::connect(&floor_tcp)),
        write_row(
            "TCP -> hv-stub-sim thread",
            2,
            engine(&format!("tcp:{tcp_addr}")),
        ),
        floor_row(
            "floor: TCP, process",
            FloorClient::connect(&floor_tcp_process.transport),
        ),
        write_row(
            "TCP -> hv-stub-sim process",
            4,
            engine(&sim_tcp_process.transport),
        ),
        floor_row(
            "floor: pty, thread",
            FloorClient::connect(&floor_pty_transport),
        ),
        write_row(
            "pty -> hv-stub-sim thread",
            6,
            engine(&format!("serial:{pty_path}")),
        ),
        floor_row(
            "floor: pty, process",
            FloorClient::connect(&floor_pty_process.transport),
        ),
        write_row(
            "pty -> hv-stub-sim process",
            8,
            engine(&sim_pty_process.transport),
        ),
    ];

    let mut rates = vec![Vec::new(); rows.len()];
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..rows.len()).collect();
        if round % 2 == 1 {
            // Each floor and its row swap places (the sim rows too).
            for pair in order.chunks_mut(2) {
                pair.reverse();
            }
        }
        for i in order {
            rates[i].push(rate(budget, &mut rows[i].op));
        }
    }

    println!(
        "write round trips per second: {rounds} rounds of {:.1} s per row, min–median–max across rounds",
        budget.as_secs_f64()
    );
    println!("{:<30} {:>26} {:>20}", "row", "per second", "vs its floor");
    for (row, rate) in rows.iter().zip(&rates) {
        let ratio = match row.floor {
            Some(f) => Spread::of(&ratios(rate, &rates[f])).show(2),
            None => "-".to_owned(),
        };
        println!(
            "{:<30} {:>26} {:>20}",
            row.name,
            Spread::of(rate).show(0),
            ratio
        );
    }
}

/// A `sim` engine created and driven through the exported C functions.
struct CEngine(pulse::ffi::PPS_ENGINE);

impl CEngine {
    fn create() -> Self {
        let config = pulse::ffi::PS_ENGINE_CONFIG {
            Size: std::mem::size_of::<pulse::ffi::PS_ENGINE_CONFIG>() as u32,
            Transport: c"sim".as_ptr(),
            RequestTimeoutMs: 0,
            MaxAttempts: 0,
            pKey: std::ptr::null(),
            KeySize: 0,
        };
        let mut handle = std::ptr::null_mut();
        // SAFETY: a valid config with a NUL-terminated transport string, and
        // a writable out-pointer.
        let status = unsafe { pulse::ffi::EngCreateEngine(&config, &mut handle) };
        assert_eq!(status, 0, "EngCreateEngine");
        CEngine(handle)
    }

    fn write(&self, msr: u32, value: u64) -> u32 {
        // SAFETY: a live handle from EngCreateEngine, destroyed only in Drop.
        unsafe { pulse::ffi::PsWriteMsr(self.0, msr, value) }
    }
}

impl Drop for CEngine {
    fn drop(&mut self) {
        // SAFETY: the handle is live and no longer used after this.
        unsafe { pulse::ffi::EngDestroyEngine(self.0) };
    }
}
