//! A real Linux guest under Bochs, with and without hv-stub:
//!
//!     cargo bench --bench bochs_linux [-- ROUNDS] [--bare-only]
//!
//! Each round boots Debian's cloud kernel with the linux-guest initramfs
//! bare (run-bare.sh) and then as hv-stub's guest (run-bochs.sh -k/-r): same
//! kernel and command line, same Bochs CPU model, ips, clock and memory. It
//! records the time from Bochs's start to init's first line and to
//! `LINUX READY`, in wall seconds and in CPU seconds of the Bochs process
//! (barely affected by other load on the machine); the busy loop's rate per
//! wall second (the host times `LINUX LOOP BEGIN` to the result line), per
//! Bochs CPU second and per second of the guest's own clock; and, under
//! hv-stub, write and read round trips per second through `pulse::Engine`
//! to the running Linux, beside the same calls to hv-stub's observer guest
//! and the bare UART echo floor, both booted in the same round with the
//! Linux guest's Bochs settings. Rounds alternate
//! so machine noise hits all alike; rows give min–median–max.

#[path = "../tests/bochs/mod.rs"]
mod bochs;
#[path = "common/spread.rs"]
mod spread;
#[path = "common/wire.rs"]
mod wire;

use std::io::Write;
use std::time::{Duration, Instant};

use bochs::linux::{self, Report};
use bochs::{free_port, open_engine, Bochs};
use hv_stub::msr::index::IA32_SYSENTER_ESP as SYSENTER_ESP;
use pulse::Engine;
use spread::{ratios, Spread};

/// Round trips per link row.
const N: u32 = 300;
/// What run-bare.sh's disk gives the kernel besides its console: the same
/// options and three busy-loop measurements per boot (pulse_loops, for init).
const CMDLINE: &str = "nokaslr tsc=reliable no_timer_check pulse_loops=3";

#[derive(Default)]
struct Rows {
    to_init: Vec<f64>,
    to_ready: Vec<f64>,
    /// The same two in CPU seconds of the Bochs process.
    to_init_cpu: Vec<f64>,
    to_ready_cpu: Vec<f64>,
    loop_wall: Vec<f64>,
    /// Iterations per CPU second of the Bochs process.
    loop_cpu: Vec<f64>,
    loop_guest: Vec<f64>,
    writes: Vec<f64>,
    reads: Vec<f64>,
    /// The echo floor with a write's and a read's bytes.
    echo_write: Vec<f64>,
    echo_read: Vec<f64>,
}

/// Boot timing and busy-loop rates of one Linux boot.
fn measure_guest(vm: &Bochs, start: Instant, rows: &mut Rows) {
    let first = linux::wait_report(vm, 0, linux::READY_TIMEOUT, |_| true)
        .unwrap_or_else(|e| panic!("no line from init: {e}"));
    rows.to_init.push(start.elapsed().as_secs_f64());
    rows.to_init_cpu.push(cpu(vm));
    let mut from = first;
    loop {
        let i = linux::wait_report(vm, from, linux::READY_TIMEOUT, |r| {
            matches!(r, Report::LoopBegin | Report::Ready)
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let began = Instant::now();
        let began_cpu = cpu(vm);
        if linux::parse(&vm.lines()[i]) == Some(Report::Ready) {
            rows.to_ready.push(start.elapsed().as_secs_f64());
            rows.to_ready_cpu.push(began_cpu);
            return;
        }
        let end = linux::wait_report(vm, i, linux::READY_TIMEOUT, |r| {
            matches!(r, Report::Loop { .. })
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let wall = began.elapsed().as_secs_f64();
        let cpu_seconds = cpu(vm) - began_cpu;
        let Some(Report::Loop {
            per_guest_second,
            iterations,
            ..
        }) = linux::parse(&vm.lines()[end])
        else {
            unreachable!()
        };
        rows.loop_wall.push(iterations as f64 / wall);
        rows.loop_cpu.push(iterations as f64 / cpu_seconds);
        rows.loop_guest.push(per_guest_second as f64);
        from = end + 1;
    }
}

/// CPU seconds Bochs has used so far.
fn cpu(vm: &Bochs) -> f64 {
    linux::bochs_cpu_seconds(vm).expect("Bochs's CPU time from /proc")
}

/// Write then read round trips per second (SYSENTER_ESP: Linux's 64-bit
/// code never uses it; restored afterwards).
fn measure_link(engine: &Engine, rows: &mut Rows) {
    let original = engine.read_msr(SYSENTER_ESP).expect("read_msr");
    let t = Instant::now();
    for i in 0..N {
        let value = 0xFFFF_8000_0000_0000 + u64::from(i) * 0x1000;
        engine.write_msr(SYSENTER_ESP, value).expect("write_msr");
    }
    rows.writes.push(f64::from(N) / t.elapsed().as_secs_f64());
    let t = Instant::now();
    for _ in 0..N {
        engine.read_msr(SYSENTER_ESP).expect("read_msr");
    }
    rows.reads.push(f64::from(N) / t.elapsed().as_secs_f64());
    engine.write_msr(SYSENTER_ESP, original).expect("restore");
}

fn bare_round(rows: &mut Rows) {
    let start = Instant::now();
    let vm = linux::boot_bare();
    measure_guest(&vm, start, rows);
}

fn hv_stub_round(rows: &mut Rows) {
    let start = Instant::now();
    let port = free_port();
    let vm = linux::boot_under_hv_stub(port, CMDLINE);
    let engine = open_engine(
        &vm,
        &format!("tcp:127.0.0.1:{port}"),
        Duration::from_secs(1),
    );
    measure_guest(&vm, start, rows);
    measure_link(&engine, rows);
    // Linux must have lived through it.
    let alive = linux::last_alive(&vm);
    linux::wait_alive_after(&vm, alive, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
}

fn observer_round(rows: &mut Rows) {
    let port = free_port();
    let vm = linux::boot_image_like_linux(&bochs::image(), port);
    let engine = open_engine(
        &vm,
        &format!("tcp:127.0.0.1:{port}"),
        Duration::from_secs(1),
    );
    vm.wait_ready();
    measure_link(&engine, rows);
}

/// The floor: hv-stub/image/build.sh's echo image (a polled 16550, no VMX,
/// no protocol) under the same Bochs settings, moving a write's bytes and a
/// read's (`wire`: 21/9 and 13/17 in protocol version 3) with the same TCP
/// options.
fn echo_round(rows: &mut Rows) {
    let port = free_port();
    let vm = linux::boot_image_like_linux(&bochs::echo_image(), port);
    let mut stream = vm.connect_echo(port, Duration::from_secs(10));
    let (write_out, write_back) = wire::write_exchange();
    let (read_out, read_back) = wire::read_exchange();
    for (out, back, row) in [
        (write_out as u8, write_back as u8, &mut rows.echo_write),
        (read_out as u8, read_back as u8, &mut rows.echo_read),
    ] {
        let message = bochs::echo_message(out.into(), back.into());
        let mut answer = vec![0u8; usize::from(back)];
        let t = Instant::now();
        for _ in 0..N {
            stream.write_all(&message).unwrap();
            bochs::echo_answer(&stream, &mut answer);
        }
        row.push(f64::from(N) / t.elapsed().as_secs_f64());
    }
}

/// "min–median–max" of a row, in `unit`s.
fn show(values: &[f64], unit: f64, digits: usize) -> String {
    if values.is_empty() {
        return "-".into();
    }
    let scaled: Vec<f64> = values.iter().map(|x| x / unit).collect();
    Spread::of(&scaled).show(digits)
}

fn main() {
    bochs::require_bochs();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(3);
    let bare_only = args.iter().any(|a| a == "--bare-only");
    let (mut bare, mut hv, mut observer) = (Rows::default(), Rows::default(), Rows::default());
    for round in 1..=rounds {
        eprintln!("round {round}/{rounds}");
        bare_round(&mut bare);
        if !bare_only {
            hv_stub_round(&mut hv);
            observer_round(&mut observer);
            echo_round(&mut observer);
        }
    }
    println!(
        "Linux guest under Bochs (corei7_skylake_x, ips=50000000, sync=none, 256 MiB), \
         {rounds} alternating rounds, min–median–max"
    );
    println!("{:<52} {:>28} {:>28}", "row", "bare", "under hv-stub");
    let row = |name: &str, f: &dyn Fn(&Rows) -> String| {
        println!("{name:<52} {:>28} {:>28}", f(&bare), f(&hv));
    };
    row("Bochs start -> init's first line (s)", &|r| {
        show(&r.to_init, 1.0, 1)
    });
    row("Bochs start -> LINUX READY (s)", &|r| {
        show(&r.to_ready, 1.0, 1)
    });
    row("Bochs start -> init's first line (Bochs CPU s)", &|r| {
        show(&r.to_init_cpu, 1.0, 1)
    });
    row("Bochs start -> LINUX READY (Bochs CPU s)", &|r| {
        show(&r.to_ready_cpu, 1.0, 1)
    });
    row("busy loop, M iterations per Bochs CPU second", &|r| {
        show(&r.loop_cpu, 1e6, 2)
    });
    row("busy loop, M iterations per wall second", &|r| {
        show(&r.loop_wall, 1e6, 2)
    });
    row("busy loop, M iterations per guest-clock second", &|r| {
        show(&r.loop_guest, 1e6, 1)
    });
    if !bare_only {
        println!(
            "COM1 round trips per second (TCP, N = {N}, same Bochs settings), \
             and per round their ratio to the echo floor of the same bytes"
        );
        println!("{:<48} {:>24} {:>20}", "row", "per second", "vs floor");
        for (name, values, floor) in [
            (
                "write_msr, Linux guest (21 B out, 9 B back)",
                &hv.writes,
                &observer.echo_write,
            ),
            (
                "read_msr, Linux guest (13 B out, 17 B back)",
                &hv.reads,
                &observer.echo_read,
            ),
            (
                "write_msr, observer guest",
                &observer.writes,
                &observer.echo_write,
            ),
            (
                "read_msr, observer guest",
                &observer.reads,
                &observer.echo_read,
            ),
            (
                "echo floor, 21 B out, 9 B back",
                &observer.echo_write,
                &observer.echo_write,
            ),
            (
                "echo floor, 13 B out, 17 B back",
                &observer.echo_read,
                &observer.echo_read,
            ),
        ] {
            println!(
                "{name:<48} {:>24} {:>20}",
                show(values, 1.0, 0),
                show(&ratios(values, floor), 1.0, 2)
            );
        }
    }
}
