//! hv-stub under Bochs with two processors (observer guest on both,
//! `run-bochs.sh -c 2`), one boot:
//!
//!     cargo bench --bench bochs_smp [-- ROUNDS]     # default 9
//!
//! Rows, interleaved in every round (the order rotates each round), each
//! `N` requests through `pulse::Engine` over COM1-as-TCP:
//! - a write on CPU 0 (the processor that serves the link: its own VMCS);
//! - a write on CPU 1 (posted into CPU 1's mailbox, run at its next VM exit);
//! - `write_msr_all_cpus` (prepared on each CPU, then applied on each).
//!
//! - the floor: the UART echo image (`hv-stub/image/build.sh echo`, no VMX,
//!   no protocol) in a second Bochs with the same settings, booted once,
//!   exchanging a write's bytes (the same for every CPU and for all CPUs).
//!
//! Reported as the spread across rounds (min–median–max) of the rate, and of
//! the ratio of a row to its reference measured in the same round: CPU 1 vs
//! CPU 0, the all-CPU write vs two single writes (one on CPU 0 and one on
//! CPU 1, the time of each from the same round's rows: a debugger that
//! switches CPUs between them pays a CPU_INFO round trip per switch on
//! top), and each write row vs the floor.

#[path = "../tests/bochs/mod.rs"]
mod bochs;

#[path = "common/spread.rs"]
mod spread;
#[path = "common/wire.rs"]
mod wire;

use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use bochs::{free_port, open_engine, Bochs, Com1};
use hv_stub::msr::index::IA32_SYSENTER_ESP;
use pulse::Engine;
use spread::{ratios, Spread};

const N: u32 = 200;
const DEADLINE: Duration = Duration::from_secs(1800);

fn boot_two_cpus(port: u16) -> Bochs {
    bochs::require_bochs();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let workdir = std::env::temp_dir().join(format!("hv-stub-smp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&workdir).unwrap();
    let mut command = Command::new(root.join("hv-stub/image/run-bochs.sh"));
    command
        .args(["-t", &DEADLINE.as_secs().to_string(), "-c", "2"])
        .args(["-i", &bochs::ips().to_string()])
        .arg(format!("server:{port}"))
        .env("HV_STUB_IMG", bochs::image());
    Bochs::spawn(command, workdir, DEADLINE)
}

fn value(i: u32) -> u64 {
    0xFFFF_8000_0000_0000 + u64::from(i) * 0x1000
}

/// Requests per second of `n` calls of `op`.
fn rate(mut op: impl FnMut(u32)) -> f64 {
    let t = Instant::now();
    for i in 0..N {
        op(i);
    }
    f64::from(N) / t.elapsed().as_secs_f64()
}

/// The echo image, connected: (Bochs, COM1).
fn boot_floor() -> (Bochs, TcpStream) {
    let port = free_port();
    let vm = Bochs::start_image(&bochs::echo_image(), Com1::TcpServer(port));
    let stream = vm.connect_echo(port, Duration::from_secs(5));
    (vm, stream)
}

/// Exchanges of a write's bytes with the echo image, per second.
fn floor_rate(mut stream: &TcpStream, (out, back): (usize, usize)) -> f64 {
    let message = bochs::echo_message(out, back);
    let mut answer = vec![0u8; back];
    rate(|_| {
        stream.write_all(&message).unwrap();
        bochs::echo_answer(stream, &mut answer);
    })
}

fn on(engine: &Engine, cpu: u64) {
    engine.switch_cpu(cpu).expect("switch_cpu");
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(9);
    let port = free_port();
    let vm = boot_two_cpus(port);
    let engine = open_engine(
        &vm,
        &format!("tcp:127.0.0.1:{port}"),
        Duration::from_secs(1),
    );
    vm.wait_ready();
    assert_eq!(engine.cpu_info().expect("cpu_info").count, 2);
    let (_floor_vm, floor) = boot_floor();
    let exchange = wire::write_exchange();
    // [cpu0, cpu1, all, floor] per round.
    let mut rows: [Vec<f64>; 4] = Default::default();
    for round in 0..rounds {
        for k in 0..4 {
            let row = (k + round) % 4;
            let per_s = match row {
                0 => {
                    on(&engine, 0);
                    rate(|i| {
                        engine
                            .write_msr(IA32_SYSENTER_ESP, value(i))
                            .expect("write")
                    })
                }
                1 => {
                    on(&engine, 1);
                    rate(|i| {
                        engine
                            .write_msr(IA32_SYSENTER_ESP, value(i))
                            .expect("write")
                    })
                }
                2 => rate(|i| {
                    engine
                        .write_msr_all_cpus(IA32_SYSENTER_ESP, value(i))
                        .expect("write all")
                }),
                _ => floor_rate(&floor, exchange),
            };
            rows[row].push(per_s);
        }
    }
    println!(
        "hv-stub under Bochs, 2 CPUs, observer guest (ips={}, {rounds} rounds, {N} requests per row per round, interleaved; min–median–max across rounds)",
        bochs::ips()
    );
    println!(
        "{:<44} {:>20} {:>20} {:>18}",
        "row", "per second", "ratio (same round)", "vs the floor"
    );
    let [cpu0, cpu1, all, floor] = &rows;
    // Two single writes, one per CPU: the sum of their times.
    let pair: Vec<f64> = cpu0
        .iter()
        .zip(cpu1)
        .map(|(a, b)| 1.0 / (1.0 / a + 1.0 / b))
        .collect();
    let (out, back) = exchange;
    let floor_name = format!("floor: UART echo, {out} B out, {back} B back");
    for (name, rate, reference, vs_floor) in [
        ("write_msr on CPU 0 (the link's CPU)", cpu0, None, true),
        ("write_msr on CPU 1 (its mailbox)", cpu1, Some(cpu0), true),
        ("write_msr_all_cpus (2 CPUs)", all, Some(&pair), true),
        ("two write_msr, one on each CPU", &pair, None, false),
        (floor_name.as_str(), floor, None, false),
    ] {
        let ratio = reference.map_or("-".to_owned(), |r| Spread::of(&ratios(rate, r)).show(2));
        let floor_ratio = if vs_floor {
            Spread::of(&ratios(rate, floor)).show(2)
        } else {
            "-".to_owned()
        };
        println!(
            "{name:<44} {:>20} {:>20} {floor_ratio:>18}",
            Spread::of(rate).show(0),
            ratio
        );
    }
    println!("ratios of rates: CPU 1 / CPU 0; all-CPU write / two single writes");
}
