//! Tier 2: libpulse over `serial:<device>[?baud=N]` on a pseudo-terminal —
//! against an in-process hv-stub-sim pty server and against the
//! `hv-stub-sim --pty` binary as a separate process.

mod support;

use std::time::Duration;

use hv_stub::msr::index::*;
use pulse::{Engine, Status};
use support::*;

/// Writes a few guest-applied MSRs and checks the guest and a read agree.
fn exercise(engine: &Engine, salt: u64) {
    let esp = kernel_address(0x100 + salt);
    assert_eq!(engine.write_msr(IA32_SYSENTER_ESP, esp), Ok(()));
    assert_eq!(engine.read_msr(IA32_SYSENTER_ESP), Ok(esp));
    assert_eq!(
        engine.write_msr(IA32_SYSENTER_CS, 0xFFFF_FFFF_0000_0008 + salt),
        Ok(())
    );
    assert_eq!(engine.read_msr(IA32_SYSENTER_CS), Ok(8 + salt));
    let lstar = kernel_address(0x200 + salt);
    assert_eq!(engine.write_msr(IA32_LSTAR, lstar), Ok(()));
    assert_eq!(engine.read_msr(IA32_LSTAR), Ok(lstar));
    assert_eq!(
        engine.write_msr(0x1234_5678, 1).map_err(|e| e.status()),
        Err(Status::EXCEPTION_GENERAL_PROTECTION)
    );
}

#[test]
fn in_process_pty_server_writes_reach_the_guest_and_reads_agree() {
    let sim = PtySim::start();
    let engine = Engine::open(&config(&sim.transport(), 1000, 3)).expect("open serial engine");
    exercise(&engine, 1);
    assert_eq!(guest_saw(&sim.target, IA32_SYSENTER_CS), Some(9));
    assert_eq!(
        guest_saw(&sim.target, IA32_LSTAR),
        Some(kernel_address(0x201))
    );
    assert_eq!(
        guest_saw(&sim.target, IA32_SYSENTER_ESP),
        Some(kernel_address(0x101))
    );
    let stats = handler_stats(&sim.target);
    assert_eq!(stats.handshakes, 1);
    assert_eq!(stats.writes_executed, 4);
    assert_eq!(stats.reads_executed, 3);
    assert_eq!(stats.replays, 0);
    assert_eq!(model_stats(&sim.target).entry_failures, 0);
}

#[test]
fn baud_option_is_accepted() {
    let sim = PtySim::start();
    for (i, baud) in [9600u32, 115_200, 921_600].into_iter().enumerate() {
        let transport = format!("{}?baud={baud}", sim.transport());
        let engine = Engine::open(&config(&transport, 1000, 3))
            .unwrap_or_else(|s| panic!("open {transport}: {s}"));
        exercise(&engine, i as u64);
    }
    assert_eq!(handler_stats(&sim.target).handshakes, 3);
}

#[test]
fn nonexistent_device_is_no_such_device() {
    let (result, elapsed) = timed(|| Engine::open(&config("serial:/dev/does-not-exist", 300, 3)));
    assert_eq!(
        result.err().map(|e| e.status()),
        Some(Status::NO_SUCH_DEVICE)
    );
    assert!(elapsed < Duration::from_millis(300), "took {elapsed:?}");
}

#[test]
fn separate_process_round_trip_then_kill_is_connection_lost_and_stays_fast() {
    let mut server = SimProcess::start(&["--pty"]);
    assert!(
        server.transport.starts_with("serial:/"),
        "announced {:?}",
        server.transport
    );
    let cfg = config(&format!("{}?baud=115200", server.transport), 300, 3);
    let engine = Engine::open(&cfg).expect("open engine on hv-stub-sim --pty");
    exercise(&engine, 3);

    server.kill();

    let (first, elapsed) = timed(|| engine.write_msr(IA32_LSTAR, kernel_address(7)));
    assert_eq!(
        first.map_err(|e| e.status()),
        Err(Status::DEVICE_CONNECTION_LOST),
        "the pty master closed: the slave must see a hang-up"
    );
    assert!(
        elapsed < budget(&cfg),
        "noticing the hang-up took {elapsed:?}"
    );
    for i in 0..10 {
        let (result, elapsed) = timed(|| {
            if i % 2 == 0 {
                engine.read_msr(IA32_LSTAR).map(|_| ())
            } else {
                engine.write_msr(IA32_LSTAR, kernel_address(8))
            }
        });
        assert_eq!(
            result.map_err(|e| e.status()),
            Err(Status::DEVICE_CONNECTION_LOST),
            "call {i}"
        );
        assert!(
            elapsed < Duration::from_millis(50),
            "call {i} after the loss took {elapsed:?}"
        );
    }
}

/// Out of file descriptors is `INSUFFICIENT_RESOURCES` (pulse.h, for
/// EngCreateEngine) for a serial device as for TCP, not NO_SUCH_DEVICE.
#[cfg(target_os = "linux")]
#[test]
fn serial_open_out_of_file_descriptors_is_insufficient_resources() {
    in_child_process(
        "serial_open_out_of_file_descriptors_is_insufficient_resources",
        || {
            let sim = PtySim::start();
            let transport = sim.transport();
            let old = exhaust_fd_limit();
            let result = Engine::open(&config(&transport, 300, 3));
            restore_fd_limit(old);
            assert_eq!(
                result.err().map(|e| e.status()),
                Some(Status::INSUFFICIENT_RESOURCES)
            );
        },
    );
}

#[test]
fn a_second_engine_on_a_busy_device_is_refused_and_the_first_keeps_working() {
    let sim = PtySim::start();
    let first = Engine::open(&config(&sim.transport(), 1000, 3)).expect("first engine");
    exercise(&first, 4);
    let (second, elapsed) = timed(|| Engine::open(&config(&sim.transport(), 300, 3)));
    let status = second
        .err()
        .expect("the device is held by the first engine")
        .status();
    assert_ne!(status, Status::INVALID_PARAMETER);
    assert!(
        elapsed < Duration::from_millis(300),
        "refusing took {elapsed:?}"
    );
    // No second handshake stole the session from the first engine.
    assert_eq!(handler_stats(&sim.target).handshakes, 1);
    exercise(&first, 5);
}
