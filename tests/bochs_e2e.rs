//! Tier 4: libpulse against the real hv-stub hypervisor (VMX emulated by
//! Bochs). Each test boots the image, waits for the observer guest's READY,
//! writes MSRs through `pulse::Engine` and checks what the guest itself
//! printed after reading them with RDMSR. Needs `bochs-bin` (the tests fail,
//! not skip, without it).
//!
//! Run: `cargo test --test bochs_e2e` (builds hv-stub/image first).

mod bochs;

use std::collections::BTreeMap;
use std::time::Duration;

use bochs::{free_port, open_engine, Bochs, Com1, Pty, Relay};
use pulse::{Engine, Status};

const OBS_TIMEOUT: Duration = Duration::from_secs(10);
/// The observer's heartbeat comes every 2^17 sweeps of its MSRs: tens of
/// millions of emulated instructions, which a loaded 2-core machine running
/// several Bochs at once can take well over 10 s to deliver.
const ALIVE_TIMEOUT: Duration = Duration::from_secs(90);
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);

// The architectural indices, under the short names this file uses.
use hv_stub::msr::index::{
    IA32_BNDCFGS as BNDCFGS, IA32_DEBUGCTL as DEBUGCTL, IA32_EFER as EFER,
    IA32_FEATURE_CONTROL as FEATURE_CONTROL, IA32_FS_BASE as FS_BASE, IA32_GS_BASE as GS_BASE,
    IA32_INTERRUPT_SSP_TABLE_ADDR as INTERRUPT_SSP_TABLE_ADDR,
    IA32_KERNEL_GS_BASE as KERNEL_GS_BASE, IA32_LSTAR as LSTAR, IA32_PAT as PAT,
    IA32_PERF_GLOBAL_CTRL as PERF_GLOBAL_CTRL, IA32_PKRS as PKRS, IA32_RTIT_CTL as RTIT_CTL,
    IA32_SYSENTER_CS as SYSENTER_CS, IA32_SYSENTER_EIP as SYSENTER_EIP,
    IA32_SYSENTER_ESP as SYSENTER_ESP, IA32_S_CET as S_CET,
};

/// A new valid value per watched MSR (for those the emulated CPU has).
fn new_value(msr: u32, current: u64) -> u64 {
    match msr {
        SYSENTER_CS => 0x10,
        SYSENTER_ESP => 0xFFFF_8000_1234_5000,
        SYSENTER_EIP => 0xFFFF_8000_0BAD_C0DE,
        DEBUGCTL => 0x1,
        // Entry 5 becomes WC (1): valid memory types only.
        PAT => 0x0007_0106_0007_0406,
        // Toggle SCE; LME/LMA stay as long mode needs them.
        EFER => current ^ 1,
        PERF_GLOBAL_CTRL => 0x1,
        BNDCFGS => 0x1,
        RTIT_CTL => 0x4,
        PKRS => 0x5555_5554,
        S_CET => 0x4, // ENDBR_EN (the guest's CR4.CET is 0: no effect)
        INTERRUPT_SSP_TABLE_ADDR => 0xFFFF_8000_0000_1000,
        FEATURE_CONTROL => current & !1, // unlock the shadow
        FS_BASE => 0x7F00_1234_0000,
        GS_BASE => 0xFFFF_8880_0002_0000,
        LSTAR => 0xFFFF_FFFF_8100_0000,
        KERNEL_GS_BASE => 0xFFFF_8880_1234_0000,
        other => panic!("no test value for MSR {other:#x}"),
    }
}

fn boot_tcp() -> (Bochs, Engine, BTreeMap<u32, u64>) {
    let port = free_port();
    let vm = Bochs::start(Com1::TcpServer(port));
    let engine = open_engine(&vm, &format!("tcp:127.0.0.1:{port}"), REQUEST_TIMEOUT);
    let initial = vm.wait_ready();
    (vm, engine, initial)
}

/// Write -> the guest prints the new value -> read_msr agrees.
fn write_and_observe(vm: &Bochs, engine: &Engine, msr: u32, value: u64, seen: u64) {
    let from = vm.cursor();
    engine
        .write_msr(msr, value)
        .unwrap_or_else(|s| panic!("write_msr({msr:#x}, {value:#x}) failed: {s:?}"));
    vm.wait_obs(from, msr, seen, OBS_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let read = engine
        .read_msr(msr)
        .unwrap_or_else(|s| panic!("read_msr({msr:#x}) failed: {s:?}"));
    assert_eq!(read, seen, "read_msr({msr:#x}) disagrees with the guest");
}

#[test]
fn guest_sees_every_write_over_tcp() {
    let (vm, engine, initial) = boot_tcp();
    assert_ne!(
        engine.capabilities() & pulse_proto::message::caps::REAL_VMX,
        0
    );
    assert_ne!(
        engine.capabilities() & pulse_proto::message::caps::GUEST_OBSERVER,
        0
    );
    // Shared MSRs and the always-loaded fields exist on every model.
    for msr in [
        SYSENTER_CS,
        SYSENTER_ESP,
        SYSENTER_EIP,
        PAT,
        EFER,
        FS_BASE,
        GS_BASE,
        LSTAR,
    ] {
        assert!(initial.contains_key(&msr), "guest did not observe {msr:#x}");
    }
    // The guest's own WRMSR to the locked FEATURE_CONTROL shadow got #GP.
    assert!(vm
        .lines()
        .iter()
        .any(|l| l.contains("GUEST feature-control write #GP")));
    // The guest's own WRMSR of KERNEL_GS_BASE (in the VM-entry MSR-load
    // area) survived a VM exit: the exit MSR-store area keeps it.
    assert!(vm
        .lines()
        .iter()
        .any(|l| l.contains("GUEST kernel-gs-base kept across VM exits")));

    for (&msr, &current) in &initial {
        let value = new_value(msr, current);
        write_and_observe(&vm, &engine, msr, value, value);
        eprintln!("MSR {msr:#x}: wrote {value:#x}, guest saw it, read_msr agrees");
    }

    // IA32_SYSENTER_CS has a 32-bit VMCS field: bits 63:32 are dropped.
    write_and_observe(&vm, &engine, SYSENTER_CS, 0xDEAD_BEEF_0000_0008, 0x8);

    // Refused values and a nonexistent MSR: #GP, and nothing breaks.
    let bad_pat = 0x0007_0406_0007_0402; // memory type 2 is reserved
    assert_eq!(
        engine.write_msr(PAT, bad_pat).map_err(|e| e.status()),
        Err(Status::EXCEPTION_GENERAL_PROTECTION)
    );
    assert_eq!(
        engine.write_msr(0x1234_5678, 1).map_err(|e| e.status()),
        Err(Status::EXCEPTION_GENERAL_PROTECTION)
    );
    assert_eq!(
        engine.read_msr(0x1234_5678).map_err(|e| e.status()),
        Err(Status::EXCEPTION_GENERAL_PROTECTION)
    );
    assert_eq!(
        engine
            .write_msr(LSTAR, 0x8000_0000_0000_0000)
            .map_err(|e| e.status()), // not canonical
        Err(Status::EXCEPTION_GENERAL_PROTECTION)
    );
    // IA32_SMBASE: the guest cannot RDMSR it outside SMM; the write lands in
    // the guest's VMCS SMBASE field and reads back from there.
    assert_eq!(engine.write_msr(0x9E, 0x3_0000), Ok(()));
    assert_eq!(engine.read_msr(0x9E), Ok(0x3_0000));
    // Guest-applied MSRs the guest found ABSENT (its own RDMSR faulted):
    // writing and reading them must fault too, whatever the load controls.
    for msr in [DEBUGCTL, PERF_GLOBAL_CTRL, BNDCFGS, RTIT_CTL, PKRS] {
        if initial.contains_key(&msr) {
            continue;
        }
        assert_eq!(
            engine
                .write_msr(msr, new_value(msr, 0))
                .map_err(|e| e.status()),
            Err(Status::EXCEPTION_GENERAL_PROTECTION),
            "write_msr({msr:#x}) of an MSR the guest cannot read"
        );
        assert_eq!(
            engine.read_msr(msr).map_err(|e| e.status()),
            Err(Status::EXCEPTION_GENERAL_PROTECTION),
            "read_msr({msr:#x}) of an MSR the guest cannot read"
        );
    }
    // The PAT the guest sees is still the last good one.
    assert_eq!(engine.read_msr(PAT), Ok(new_value(PAT, 0)));
    // The guest keeps running and observing afterwards.
    write_and_observe(
        &vm,
        &engine,
        LSTAR,
        0xFFFF_FFFF_8200_0000,
        0xFFFF_FFFF_8200_0000,
    );
    let from = vm.cursor();
    vm.wait_from(from, ALIVE_TIMEOUT, |l| l.contains("ALIVE"))
        .unwrap_or_else(|e| panic!("guest stopped: {e}"));

    many_requests_in_flight_from_several_threads(&engine);
}

/// Four threads, each keeping 16 writes and reads of its own MSR in flight
/// on the one engine: COM1 carries back-to-back frames both ways (and, as
/// threads send in turn, early ones the handler holds and then answers in a
/// burst) without losing a byte: nothing is resent, every read returns the
/// write submitted just before it.
fn many_requests_in_flight_from_several_threads(engine: &Engine) {
    use pulse::engine::{Operation, Pending};
    const PAIRS: u64 = 40;
    let before = engine.stats().retransmissions;
    std::thread::scope(|scope| {
        for (t, msr) in [LSTAR, FS_BASE, GS_BASE, SYSENTER_ESP]
            .into_iter()
            .enumerate()
        {
            let submitter = engine.submitter();
            scope.spawn(move || {
                let mut pending: std::collections::VecDeque<(u64, Pending)> = Default::default();
                let mut last_written = None;
                for i in 0..PAIRS {
                    let value = 0xFFFF_F800_0000_0000 | (t as u64) << 32 | i << 12;
                    pending
                        .push_back((value, submitter.submit(Operation::WriteMsr { msr, value })));
                    pending.push_back((value, submitter.submit(Operation::ReadMsr { msr })));
                    while pending.len() >= 16 || (i + 1 == PAIRS && !pending.is_empty()) {
                        let (value, p) = pending.pop_front().expect("not empty");
                        assert!(p.wait_until(p.deadline() + Duration::from_secs(1)));
                        let outcome = p.outcome().expect("completed");
                        match p.operation() {
                            Operation::WriteMsr { .. } => {
                                assert_eq!(outcome.map_err(|e| e.status()), Ok(0), "thread {t}");
                                last_written = Some(value);
                            }
                            _ => assert_eq!(
                                outcome.map_err(|e| e.status()).ok(),
                                last_written,
                                "thread {t}: a read returns the write just before it"
                            ),
                        }
                    }
                }
            });
        }
    });
    let stats = engine.stats();
    assert!(stats.most_in_flight > 16, "{stats:?}");
    assert_eq!(
        stats.retransmissions, before,
        "a frame was lost on COM1: {stats:?}"
    );
}

#[test]
fn serial_transport_over_a_pty() {
    let bochs_side = Pty::open();
    let engine_side = Pty::open();
    let bochs_tty = bochs_side.path.clone();
    let engine_tty = engine_side.path.clone();
    let _relay = Relay::start(bochs_side, engine_side);
    let vm = Bochs::start(Com1::Term(bochs_tty));
    let initial = vm.wait_ready();
    let engine = open_engine(
        &vm,
        &format!("serial:{}", engine_tty.display()),
        REQUEST_TIMEOUT,
    );
    assert!(initial.contains_key(&LSTAR));
    write_and_observe(
        &vm,
        &engine,
        LSTAR,
        0xFFFF_FFFF_8123_4000,
        0xFFFF_FFFF_8123_4000,
    );
    write_and_observe(&vm, &engine, SYSENTER_CS, 0x1_0000_0023, 0x23);
    assert_eq!(
        engine.write_msr(0x1234_5678, 0).map_err(|e| e.status()),
        Err(Status::EXCEPTION_GENERAL_PROTECTION)
    );
    write_and_observe(
        &vm,
        &engine,
        GS_BASE,
        0xFFFF_8880_0004_0000,
        0xFFFF_8880_0004_0000,
    );
}

/// One core, two backends: the same requests on the real hypervisor under
/// Bochs and on the `sim` target's `bochs-tigerlake` profile must give the
/// same statuses and the same values read back. This is what makes the sim
/// target's exhaustive tests speak for the real hypervisor.
#[test]
fn sim_profile_matches_the_real_hypervisor() {
    let (_vm, real, _) = boot_tcp();
    let sim = Engine::open(&pulse::EngineConfig::new("sim?cpu=bochs-tigerlake")).unwrap();
    let non_canonical = 0x8000_0000_0000_0000u64;
    let writes: &[(u32, u64)] = &[
        (SYSENTER_CS, 0xDEAD_BEEF_0000_0010),
        (SYSENTER_ESP, 0xFFFF_8000_1234_5000),
        (SYSENTER_ESP, non_canonical),
        (SYSENTER_EIP, 0xFFFF_8000_0BAD_C0DE),
        (0x9E, 0x4_0000),
        (0x9E, 1 << 32),
        (DEBUGCTL, 0x1),
        (PAT, 0x0007_0406_0007_0401),
        (PAT, 0x0007_0406_0007_0402),
        (EFER, 0x501),
        (EFER, 0xD01),
        (EFER, 0xD01 | 1 << 12),
        (EFER, 0x801),
        (PERF_GLOBAL_CTRL, 0x1),
        (BNDCFGS, 0x1),
        (RTIT_CTL, 0x2000),
        (PKRS, 0x4),
        (S_CET, 0x4),
        (S_CET, 1 << 6),
        (INTERRUPT_SSP_TABLE_ADDR, 0xFFFF_8000_0000_2000),
        (INTERRUPT_SSP_TABLE_ADDR, non_canonical),
        (FEATURE_CONTROL, 0x4),
        (FEATURE_CONTROL, 1 << 30),
        (FS_BASE, 0x7F00_1234_0000),
        (GS_BASE, non_canonical),
        (LSTAR, 0xFFFF_FFFF_8100_0000),
        (LSTAR, non_canonical),
        (0xC000_0081, 0x0023_0010_0000_0000), // STAR
        (0xC000_0083, 0xFFFF_FFFF_8200_0000), // CSTAR
        (0xC000_0084, 0x4_7700),              // FMASK
        (KERNEL_GS_BASE, 0xFFFF_8880_1234_0000),
        (KERNEL_GS_BASE, non_canonical),
        (0x1234_5678, 0),
    ];
    let mut mismatches = Vec::new();
    for &(msr, value) in writes {
        let (r, s) = (real.write_msr(msr, value), sim.write_msr(msr, value));
        if r != s {
            mismatches.push(format!(
                "write {msr:#x} <- {value:#x}: real {r:?}, sim {s:?}"
            ));
        }
        // Values are compared once a write succeeded on both sides; before
        // that the two debuggees start from different initial states.
        let comparable = r.is_ok() && s.is_ok();
        let (r, s) = (real.read_msr(msr), sim.read_msr(msr));
        if r.is_ok() != s.is_ok() || (comparable && r != s) {
            mismatches.push(format!(
                "read {msr:#x} after {value:#x}: real {r:?}, sim {s:?}"
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "sim differs from real VMX:\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn a_half_frame_left_on_the_line_does_not_swallow_the_next_hello() {
    use pulse::transport::{tcp::TcpTransport, Transport};
    use std::time::Instant;

    let port = free_port();
    let vm = Bochs::start(Com1::TcpServer(port));
    // Bochs boots once its one COM1 client is connected.
    vm.wait_from(0, Duration::from_secs(60), |l| {
        l.contains("waiting for client to connect")
    })
    .expect("Bochs listens on COM1");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut link = loop {
        match TcpTransport::connect("127.0.0.1", port, deadline, Duration::from_secs(5)) {
            Ok(link) => break link,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(s) => panic!("connect: {s:?}"),
        }
    };
    vm.wait_ready();
    // A client stops after a start marker and a length of 32: the debuggee
    // would wait for 40 bytes and take the next Hello as their middle.
    link.send(&[0xA5, 0x20], Instant::now() + Duration::from_secs(1))
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // One attempt only: the Hello must be understood the first time.
    let engine = Engine::with_transport(Box::new(link), Duration::from_millis(2000), 1)
        .expect("the first Hello after a quiet line is answered");
    assert_eq!(engine.stats().handshakes, 1);
    assert!(engine.read_msr(LSTAR).is_ok());
}
