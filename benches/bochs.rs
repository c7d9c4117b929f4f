//! hv-stub under Bochs, measured beside its floor:
//!
//!     cargo bench --bench bochs [-- ROUNDS]        # default 5
//!
//! Each round boots the hv-stub image (boot-to-READY time, then write and
//! read round trips through `pulse::Engine` over COM1-as-TCP) and the UART
//! floor image (`hv-stub/image/build.sh echo`: no VMX, no protocol, a
//! polled 16550 that answers each message with the number of bytes the
//! message asks for) in the same Bochs setup. The floor exchanges the same
//! bytes as the rows it is the floor of: 21 bytes out and 9 back for a
//! write, 13 out and 17 back for a read since protocol version 3
//! (docs/PROTOCOL.md section 7; taken from the protocol crate). Its
//! client acknowledges a partial answer at once, as libpulse's TCP
//! transport does. The two images alternate, which one goes first swaps
//! every round, and each row is reported as the spread across rounds
//! (min–median–max) of its rate and of its ratio to the floor measured in
//! the same round.

// The harness shared with tests/bochs_e2e.rs (it allows its own dead code).
#[path = "../tests/bochs/mod.rs"]
mod bochs;

#[path = "common/spread.rs"]
mod spread;
#[path = "common/wire.rs"]
mod wire;

use std::io::Write;
use std::time::{Duration, Instant};

use bochs::{free_port, open_engine, Bochs, Com1};
use hv_stub::msr::index::IA32_LSTAR;
use spread::{ratios, Spread};

const N: u32 = 1000;

struct HvRound {
    boot_ms: f64,
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
    let boot_ms = start.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    for i in 0..N {
        let value = 0xFFFF_FFFF_8000_0000 + u64::from(i) * 0x1000;
        engine.write_msr(IA32_LSTAR, value).expect("write_msr");
    }
    let writes_per_s = f64::from(N) / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..N {
        engine.read_msr(IA32_LSTAR).expect("read_msr");
    }
    let reads_per_s = f64::from(N) / t.elapsed().as_secs_f64();
    HvRound {
        boot_ms,
        writes_per_s,
        reads_per_s,
    }
}

/// Floor round trips per second for each (bytes out, bytes back).
fn floor_round(exchanges: &[(usize, usize)]) -> Vec<f64> {
    let port = free_port();
    let vm = Bochs::start_image(&bochs::echo_image(), Com1::TcpServer(port));
    let mut stream = vm.connect_echo(port, Duration::from_secs(5));
    exchanges
        .iter()
        .map(|&(out, back)| {
            let message = bochs::echo_message(out, back);
            let mut answer = vec![0u8; back];
            let t = Instant::now();
            for _ in 0..N {
                stream.write_all(&message).unwrap();
                bochs::echo_answer(&stream, &mut answer);
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
        .unwrap_or(5);
    let exchanges = [wire::write_exchange(), wire::read_exchange()];
    let (mut boot, mut writes, mut reads) = (Vec::new(), Vec::new(), Vec::new());
    let (mut floor_writes, mut floor_reads) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let (hv, floor) = if round % 2 == 0 {
            let hv = hv_round();
            (hv, floor_round(&exchanges))
        } else {
            let floor = floor_round(&exchanges);
            (hv_round(), floor)
        };
        boot.push(hv.boot_ms);
        writes.push(hv.writes_per_s);
        reads.push(hv.reads_per_s);
        floor_writes.push(floor[0]);
        floor_reads.push(floor[1]);
    }
    println!(
        "hv-stub under Bochs (ips={}, {rounds} rounds, {N} round trips per row per round; min–median–max across rounds)",
        bochs::ips()
    );
    println!("boot to READY: {} ms", Spread::of(&boot).show(0));
    println!("{:<42} {:>22} {:>18}", "row", "per second", "vs its floor");
    let [(write_out, write_back), (read_out, read_back)] = exchanges;
    for (name, rate, floor) in [
        (
            format!("Engine::write_msr ({write_out} B out, {write_back} B back)"),
            &writes,
            Some(&floor_writes),
        ),
        (
            format!("Engine::read_msr ({read_out} B out, {read_back} B back)"),
            &reads,
            Some(&floor_reads),
        ),
        (
            format!("floor: UART, {write_out} B out, {write_back} B back"),
            &floor_writes,
            None,
        ),
        (
            format!("floor: UART, {read_out} B out, {read_back} B back"),
            &floor_reads,
            None,
        ),
    ] {
        let ratio = floor.map_or("-".to_owned(), |f| Spread::of(&ratios(rate, f)).show(2));
        println!("{name:<42} {:>22} {:>18}", Spread::of(rate).show(0), ratio);
    }
}
