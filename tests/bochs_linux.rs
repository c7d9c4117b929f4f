//! Tier 4: a real, unmodified operating system under hv-stub. Boots
//! Debian's cloud kernel as hv-stub's guest under Bochs (once for this whole
//! binary), with the initramfs of `hv-stub/linux-guest` whose `/init`
//! prints what Linux itself reads through `/dev/cpu/N/msr`, and checks over
//! COM1 with `pulse::Engine` that:
//! - `read_msr` agrees with Linux for every MSR init reports (values and #GP);
//! - Linux's own reads show each write (SYSENTER_CS/ESP/EIP, IA32_PAT);
//! - a value the CPU would refuse gives EXCEPTION_GENERAL_PROTECTION and
//!   changes nothing Linux sees, and Linux keeps running;
//! - Linux is still alive at the end (after its own values are restored).
//!
//! Needs `bochs-bin` and `linux-image-cloud-amd64` (the test fails, not
//! skips, without them; scripts/test.sh installs both). Bounded: Bochs is
//! killed at `linux::RUN_DEADLINE` whatever happens.
//!
//! Run: `cargo test --test bochs_linux -- --nocapture` (prints the boot time).

mod bochs;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bochs::linux::{self, Reading, Report};
use bochs::{free_port, open_engine, Bochs};
use hv_stub::msr::index::{
    IA32_PAT as PAT, IA32_SYSENTER_CS as SYSENTER_CS, IA32_SYSENTER_EIP as SYSENTER_EIP,
    IA32_SYSENTER_ESP as SYSENTER_ESP,
};
use pulse::{Engine, Status};

const REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);
/// init sweeps every few tenths of a second of wall time under Bochs; this
/// leaves room for a loaded machine.
const SEEN_TIMEOUT: Duration = Duration::from_secs(60);
/// The only CPU of this boot (several CPUs belong to the every-CPU issue).
const CPU: u32 = 0;

/// Values that leave Linux running: a 64-bit kernel uses SYSENTER only for
/// 32-bit tasks (there are none), and Linux's page tables use PAT entries
/// 0-3, 5 and 7 (WB, WC, UC-, UC, WP, WT), so only the spare entries 4 and
/// 6 change (WB -> WT, UC- -> UC).
/// (MSR, value written, value Linux must read).
const WRITES: [(u32, u64, u64); 4] = [
    // Bits 63:32 are dropped: the VMCS field and RDMSR keep 31:0.
    (SYSENTER_CS, 0xFFFF_FFFF_0000_0023, 0x23),
    (SYSENTER_ESP, 0xFFFF_8000_1234_5000, 0xFFFF_8000_1234_5000),
    (SYSENTER_EIP, 0xFFFF_8000_0BAD_C0DE, 0xFFFF_8000_0BAD_C0DE),
    (PAT, 0x0400_0504_0007_0106, 0x0400_0504_0007_0106),
];

/// Values the processor refuses with #GP: PAT entry 0 with the reserved
/// memory type 2, a non-canonical SYSENTER_EIP.
const REFUSED: [(u32, u64); 2] = [
    (PAT, 0x0407_0506_0007_0102),
    (SYSENTER_EIP, 0x0000_8000_0000_0000),
];

/// What `read_msr` must return for what Linux read.
fn expected(reading: Reading) -> Result<u64, Status> {
    match reading {
        Reading::Value(v) => Ok(v),
        Reading::Gp => Err(Status::EXCEPTION_GENERAL_PROTECTION),
        Reading::Error(errno) => panic!("Linux's read failed with errno {errno}"),
    }
}

/// `read_msr` agrees with the latest thing Linux reported for every MSR.
fn assert_debugger_agrees(vm: &Bochs, engine: &Engine, when: &str) {
    let view = linux::readings(vm, vm.cursor());
    assert!(!view.is_empty(), "init reported no MSR");
    for (&(cpu, msr), &reading) in &view {
        assert_eq!(cpu, CPU, "a CPU this boot does not have reported {msr:#x}");
        assert_eq!(
            engine.read_msr(msr).map_err(|e| e.status()),
            expected(reading),
            "{when}: read_msr({msr:#x}) disagrees with Linux's own read"
        );
    }
}

/// Writes, then waits until Linux's own read shows `seen`, then checks
/// `read_msr` gives the same.
fn write_and_see(vm: &Bochs, engine: &Engine, msr: u32, value: u64, seen: u64) {
    let from = vm.cursor();
    engine
        .write_msr(msr, value)
        .unwrap_or_else(|s| panic!("write_msr({msr:#x}, {value:#x}) failed: {s:?}"));
    linux::wait_report(vm, from, SEEN_TIMEOUT, |r| {
        *r == Report::Msr {
            cpu: CPU,
            msr,
            reading: Reading::Value(seen),
        }
    })
    .unwrap_or_else(|e| panic!("Linux never read {msr:#x} = {seen:#x}: {e}"));
    assert_eq!(engine.read_msr(msr), Ok(seen), "read_msr({msr:#x})");
}

/// A refused write: #GP, and for two heartbeats (twenty sweeps) Linux
/// reports no change of that MSR; read_msr still gives the old value.
fn refuse(vm: &Bochs, engine: &Engine, msr: u32, value: u64, before: u64) {
    let from = vm.cursor();
    let alive = linux::last_alive(vm);
    assert_eq!(
        engine.write_msr(msr, value).map_err(|e| e.status()),
        Err(Status::EXCEPTION_GENERAL_PROTECTION),
        "write_msr({msr:#x}, {value:#x}) must fault"
    );
    linux::wait_alive_after(vm, alive + 2, SEEN_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        linux::reports_since(vm, from, CPU, msr),
        [],
        "Linux saw {msr:#x} change after a refused write"
    );
    assert_eq!(engine.read_msr(msr), Ok(before), "read_msr({msr:#x})");
}

#[test]
fn linux_under_hv_stub_sees_every_write() {
    let start = Instant::now();
    let port = free_port();
    let vm = linux::boot_under_hv_stub(port, "");
    // Bochs waits for the debugger before it runs: connect during the boot.
    let engine = open_engine(&vm, &format!("tcp:127.0.0.1:{port}"), REQUEST_TIMEOUT);
    let ready = linux::wait_ready(&vm);
    let boot = start.elapsed();
    println!("Linux under hv-stub: Bochs start to LINUX READY in {boot:.1?}");

    let lines = vm.lines();
    assert!(
        lines[..ready]
            .iter()
            .any(|l| linux::parse(l) == Some(Report::Cpus(1))),
        "init must find exactly the one CPU: {:?}",
        &lines[..ready]
    );
    let initial: BTreeMap<u32, Reading> = linux::readings(&vm, ready)
        .into_iter()
        .map(|((_, msr), r)| (msr, r))
        .collect();
    for (msr, _, _) in WRITES {
        assert!(
            matches!(initial.get(&msr), Some(Reading::Value(_))),
            "Linux must read {msr:#x}: {initial:x?}"
        );
    }
    assert_debugger_agrees(&vm, &engine, "at READY");

    for (msr, value, seen) in WRITES {
        write_and_see(&vm, &engine, msr, value, seen);
    }
    assert_debugger_agrees(&vm, &engine, "after the writes");

    for (msr, value) in REFUSED {
        let before = engine.read_msr(msr).expect("read before the refused write");
        refuse(&vm, &engine, msr, value, before);
    }

    // Give Linux its own values back, and it runs on.
    for (msr, _, _) in WRITES {
        let Reading::Value(original) = initial[&msr] else {
            unreachable!()
        };
        write_and_see(&vm, &engine, msr, original, original);
    }
    let alive = linux::last_alive(&vm);
    linux::wait_alive_after(&vm, alive + 1, SEEN_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert_debugger_agrees(&vm, &engine, "at the end");
    println!(
        "Linux under hv-stub: whole test {:.1?} (boot {boot:.1?})",
        start.elapsed()
    );
}

/// The report format init.c prints, as the harness reads it.
#[test]
fn init_report_lines_parse() {
    use linux::parse;
    let msr = |cpu, msr, reading| Some(Report::Msr { cpu, msr, reading });
    assert_eq!(parse("LINUX READY"), Some(Report::Ready));
    assert_eq!(parse("LINUX ALIVE 12"), Some(Report::Alive(12)));
    assert_eq!(parse("LINUX CPUS 2"), Some(Report::Cpus(2)));
    assert_eq!(
        parse("LINUX 0 277 407050600070106"),
        msr(0, 0x277, Reading::Value(0x0407_0506_0007_0106))
    );
    assert_eq!(
        parse("LINUX 1 c0000080 d01\r"),
        msr(1, 0xC000_0080, Reading::Value(0xD01))
    );
    assert_eq!(parse("LINUX 0 1d9 GP"), msr(0, 0x1D9, Reading::Gp));
    assert_eq!(parse("LINUX 0 1d9 ERR 6"), msr(0, 0x1D9, Reading::Error(6)));
    assert_eq!(parse("LINUX LOOP BEGIN"), Some(Report::LoopBegin));
    assert_eq!(
        parse("LINUX LOOP 669502993 iterations=10000000 ns=14936453"),
        Some(Report::Loop {
            per_guest_second: 669_502_993,
            iterations: 10_000_000,
            ns: 14_936_453
        })
    );
    assert_eq!(
        parse("LINUX FAIL finit_module 2"),
        Some(Report::Fail("finit_module 2".into()))
    );
    // Bochs may put its own text before a line.
    assert_eq!(
        parse("00012i[CPU0 ] LINUX 0 174 10"),
        msr(0, 0x174, Reading::Value(0x10))
    );
    for junk in [
        "",
        "LINUX",
        "LINUX 0 174",
        "LINUX x 174 10",
        "LINUX 0 174 zz",
        "OBS 174 10",
    ] {
        assert_eq!(parse(junk), None, "{junk:?}");
    }
}
