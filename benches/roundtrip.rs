//! Round trips per second, side by side in one run (these machines are
//! noisy: compare the ratios, not the absolute numbers).
//!
//!     cargo bench --bench roundtrip [-- SECONDS_PER_ROUND]
//!
//! Rows: the `sim` target through the Rust API and through the C ABI; the
//! engine over TCP loopback and over a pseudo-terminal to hv-stub-sim
//! (in-process server thread); and the floor for TCP: a bare echo of the
//! same 20-byte request / 9-byte answer with no protocol at all.
//! Each row runs in several interleaved rounds; the best round counts.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use pulse::hv_stub::msr::index::IA32_LSTAR;
use pulse::hv_stub::CpuCaps;
use pulse::{Engine, EngineConfig};

const ROUNDS: usize = 3;

fn engine(transport: &str) -> Engine {
    Engine::open(&EngineConfig::new(transport)).expect("engine")
}

/// Runs `op` for `budget`, returns operations per second.
fn rate(budget: Duration, mut op: impl FnMut(u64)) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..64 {
            op(n);
            n += 1;
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn value(i: u64) -> u64 {
    0xFFFF_F800_0000_0000 | ((i & 0xFFFF_FFFF) << 4)
}

fn echo_floor_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            stream.set_nodelay(true).ok();
            let mut request = [0u8; 20];
            let answer = [0u8; 9];
            while stream.read_exact(&mut request).is_ok() {
                if stream.write_all(&answer).is_err() {
                    break;
                }
            }
        }
    });
    addr
}

fn main() {
    let seconds: f64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1.0);
    let budget = Duration::from_secs_f64(seconds);

    let sim = engine("sim");
    let sim_c = CEngine::create();
    // One debuggee serves one session at a time: a second handshake would
    // end the first engine's session, so each transport gets its own.
    let target = hv_stub_sim::new_target(CpuCaps::MODERN);
    let (tcp_addr, _stop) = hv_stub_sim::spawn_tcp(target, "127.0.0.1:0").unwrap();
    let tcp = engine(&format!("tcp:{tcp_addr}"));
    let target = hv_stub_sim::new_target(CpuCaps::MODERN);
    let (pty_path, _stop_pty) = hv_stub_sim::spawn_pty(target).unwrap();
    let pty = engine(&format!("serial:{pty_path}"));
    let floor_addr = echo_floor_server();
    let mut floor = TcpStream::connect(floor_addr).unwrap();
    floor.set_nodelay(true).unwrap();

    let mut best = [0f64; 5];
    for _ in 0..ROUNDS {
        let rows: [f64; 5] = [
            rate(budget, |i| sim.write_msr(IA32_LSTAR, value(i)).unwrap()),
            rate(budget, |i| assert_eq!(sim_c.write(IA32_LSTAR, value(i)), 0)),
            rate(budget, |i| tcp.write_msr(IA32_LSTAR, value(i)).unwrap()),
            rate(budget, |i| pty.write_msr(IA32_LSTAR, value(i)).unwrap()),
            rate(budget, |_| {
                floor.write_all(&[0u8; 20]).unwrap();
                let mut answer = [0u8; 9];
                floor.read_exact(&mut answer).unwrap();
            }),
        ];
        for (b, r) in best.iter_mut().zip(rows) {
            *b = b.max(r);
        }
    }

    let names = [
        "sim, Rust Engine::write_msr",
        "sim, C ABI PsWriteMsr",
        "tcp loopback -> hv-stub-sim",
        "pty -> hv-stub-sim",
        "tcp loopback bare echo (floor)",
    ];
    println!(
        "{:<34} {:>14} {:>10}",
        "write round trips", "per second", "vs floor"
    );
    for (name, r) in names.iter().zip(best) {
        println!("{name:<34} {r:>14.0} {:>9.2}x", r / best[4]);
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
