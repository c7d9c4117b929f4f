//! hv-stub under Bochs, measured side by side with its floor:
//!
//!     cargo bench --bench bochs [-- ROUNDS]
//!
//! Each round boots the hv-stub image (boot-to-READY time, then write and
//! read round trips through `pulse::Engine` over COM1-as-TCP) and then the
//! bare UART echo image in the same Bochs setup (9- and 20-byte echoes, no
//! VMX). Rounds alternate the two so machine noise hits both alike; the
//! best round of each row is reported with its ratio to the 20-byte echo.

// The harness shared with tests/bochs_e2e.rs (it allows its own dead code).
#[path = "../tests/bochs/mod.rs"]
mod bochs;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use bochs::{free_port, open_engine, Bochs, Com1};

const N: u32 = 1000;
const LSTAR: u32 = 0xC000_0082;

struct HvRound {
    boot: Duration,
    writes_per_s: f64,
    reads_per_s: f64,
}

fn hv_round() -> HvRound {
    let start = Instant::now();
    let port = free_port();
    let vm = Bochs::start(Com1::TcpServer(port));
    let engine = open_engine(
        &vm,
        &format!("tcp:127.0.0.1:{port}"),
        Duration::from_secs(1),
    );
    vm.wait_ready();
    let boot = start.elapsed();
    let t = Instant::now();
    for i in 0..N {
        let value = 0xFFFF_FFFF_8000_0000 + u64::from(i) * 0x1000;
        engine.write_msr(LSTAR, value).expect("write_msr");
    }
    let writes_per_s = f64::from(N) / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..N {
        engine.read_msr(LSTAR).expect("read_msr");
    }
    let reads_per_s = f64::from(N) / t.elapsed().as_secs_f64();
    HvRound {
        boot,
        writes_per_s,
        reads_per_s,
    }
}

/// Echo round trips per second for each message size.
fn echo_round(sizes: &[usize]) -> Vec<f64> {
    let port = free_port();
    let vm = Bochs::start_image(&bochs::echo_image(), Com1::TcpServer(port));
    vm.wait_from(0, bochs::BOOT_TIMEOUT, |l| l.contains("waiting for client"))
        .expect("Bochs listens on COM1");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect COM1");
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    vm.wait_from(0, bochs::BOOT_TIMEOUT, |l| l.trim_end().ends_with("READY"))
        .expect("echo image READY");
    sizes
        .iter()
        .map(|&size| {
            let message = vec![0x5Au8; size];
            let mut back = vec![0u8; size];
            let t = Instant::now();
            for _ in 0..N {
                stream.write_all(&message).unwrap();
                let mut got = 0;
                while got < size {
                    pulse::sys::tcp_quickack(&stream);
                    got += stream.read(&mut back[got..]).unwrap();
                }
            }
            f64::from(N) / t.elapsed().as_secs_f64()
        })
        .collect()
}

fn main() {
    bochs::require_bochs();
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3);
    let mut boot = Duration::MAX;
    let (mut writes, mut reads, mut echo9, mut echo20) = (0f64, 0f64, 0f64, 0f64);
    for _ in 0..rounds {
        let hv = hv_round();
        boot = boot.min(hv.boot);
        writes = writes.max(hv.writes_per_s);
        reads = reads.max(hv.reads_per_s);
        let echo = echo_round(&[9, 20]);
        echo9 = echo9.max(echo[0]);
        echo20 = echo20.max(echo[1]);
    }
    println!("hv-stub under Bochs (ips={}, best of {rounds} alternating rounds, {N} round trips per row)", bochs::ips());
    println!("boot to READY: {} ms", boot.as_millis());
    println!("{:<40} {:>12} {:>14}", "row", "per second", "vs echo 20 B");
    for (name, rate) in [
        ("Engine::write_msr (20 B out, 9 B back)", writes),
        ("Engine::read_msr (12 B out, 17 B back)", reads),
        ("bare UART echo, 9 B", echo9),
        ("bare UART echo, 20 B (floor)", echo20),
    ] {
        println!("{name:<40} {rate:>12.0} {:>13.2}x", rate / echo20);
    }
}
