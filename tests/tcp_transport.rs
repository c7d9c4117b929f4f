//! Tier 2: libpulse over `tcp:<host>:<port>` — against an in-process
//! hv-stub-sim server, against the `hv-stub-sim` binary as a separate
//! process, and against peers that refuse, never answer, or hang up.

mod support;

use std::time::Duration;

use hv_stub::msr::index::*;
use pulse::{Engine, Status};
use pulse_proto::message::{kind, Message, NakReason};
use pulse_proto::PROTOCOL_VERSION;
use support::*;

/// Guest-applied and shared MSRs with values the modern profile accepts,
/// and what the guest must read back (SYSENTER_CS keeps 32 bits).
const WRITES: [(u32, u64, u64); 8] = [
    (IA32_SYSENTER_CS, 0xDEAD_BEEF_0000_0010, 0x10),
    (
        IA32_SYSENTER_ESP,
        0xFFFF_F880_0000_1000,
        0xFFFF_F880_0000_1000,
    ),
    (
        IA32_SYSENTER_EIP,
        0xFFFF_F880_0000_2000,
        0xFFFF_F880_0000_2000,
    ),
    (IA32_PAT, 0x0007_0406_0105_0406, 0x0007_0406_0105_0406),
    (IA32_LSTAR, 0xFFFF_F800_1234_5000, 0xFFFF_F800_1234_5000),
    (IA32_FS_BASE, 0x0000_7FF0_0000_0000, 0x0000_7FF0_0000_0000),
    (
        IA32_KERNEL_GS_BASE,
        0xFFFF_A000_0000_0000,
        0xFFFF_A000_0000_0000,
    ),
    (IA32_TSC_AUX, 0x0000_0000_0000_0007, 0x0000_0000_0000_0007),
];

#[test]
fn in_process_server_writes_reach_the_guest_and_reads_agree() {
    let sim = TcpSim::start();
    let engine = Engine::open(&config(&sim.transport(), 1000, 3)).expect("open tcp engine");
    for (msr, value, seen) in WRITES {
        assert_eq!(engine.write_msr(msr, value), Ok(()), "write {msr:#x}");
        assert_eq!(
            guest_saw(&sim.target, msr),
            Some(seen),
            "guest view of {msr:#x}"
        );
        assert_eq!(engine.read_msr(msr), Ok(seen), "read back {msr:#x}");
    }
    // A refused value changes nothing the guest sees.
    assert_eq!(
        engine
            .write_msr(IA32_PAT, 0x0202_0202_0202_0202)
            .map_err(|e| e.status()),
        Err(Status::EXCEPTION_GENERAL_PROTECTION)
    );
    assert_eq!(
        guest_saw(&sim.target, IA32_PAT),
        Some(0x0007_0406_0105_0406)
    );
    assert_eq!(
        engine.write_msr(0x1234_5678, 1).map_err(|e| e.status()),
        Err(Status::EXCEPTION_GENERAL_PROTECTION)
    );
    assert_eq!(
        engine.read_msr(0x1234_5678).map_err(|e| e.status()),
        Err(Status::EXCEPTION_GENERAL_PROTECTION)
    );

    let stats = handler_stats(&sim.target);
    assert_eq!(stats.handshakes, 1);
    assert_eq!(stats.writes_executed, WRITES.len() as u64 + 2);
    assert_eq!(stats.reads_executed, WRITES.len() as u64 + 1);
    assert_eq!(stats.replays, 0, "a clean link needs no retransmission");
    assert_eq!(stats.naks, 0);
    assert_eq!(model_stats(&sim.target).entry_failures, 0);
    assert!(sim.target.lock().last_entry_failure().is_none());
}

#[test]
fn debuggee_state_outlives_one_connection_and_a_new_engine_gets_a_new_session() {
    let sim = TcpSim::start();
    let first = Engine::open(&config(&sim.transport(), 1000, 3)).expect("first engine");
    first.write_msr(IA32_LSTAR, 0xFFFF_F800_0BAD_F000).unwrap();
    drop(first);
    // A new connection, a new handshake: the state stays.
    let second = Engine::open(&config(&sim.transport(), 1000, 3)).expect("second engine");
    assert_eq!(second.read_msr(IA32_LSTAR), Ok(0xFFFF_F800_0BAD_F000));
    assert_eq!(handler_stats(&sim.target).handshakes, 2);
}

#[test]
fn separate_process_round_trip_then_kill_is_connection_lost_and_stays_fast() {
    let mut server = SimProcess::start(&["--listen", "127.0.0.1:0"]);
    assert!(
        server.transport.starts_with("tcp:127.0.0.1:"),
        "announced {:?}",
        server.transport
    );
    let cfg = config(&server.transport, 300, 3);
    let engine = Engine::open(&cfg).expect("open engine on hv-stub-sim");
    for (msr, value, seen) in WRITES {
        assert_eq!(engine.write_msr(msr, value), Ok(()), "write {msr:#x}");
        assert_eq!(engine.read_msr(msr), Ok(seen), "read back {msr:#x}");
    }
    assert_eq!(
        engine.write_msr(0x1234_5678, 1).map_err(|e| e.status()),
        Err(Status::EXCEPTION_GENERAL_PROTECTION)
    );

    server.kill();

    let (first, elapsed) = timed(|| engine.write_msr(IA32_LSTAR, 0xFFFF_F800_0000_1000));
    assert_eq!(
        first.map_err(|e| e.status()),
        Err(Status::DEVICE_CONNECTION_LOST)
    );
    assert!(
        elapsed < budget(&cfg),
        "noticing EOF took {elapsed:?}, more than a full call budget"
    );
    for i in 0..10 {
        let (result, elapsed) = timed(|| {
            if i % 2 == 0 {
                engine.read_msr(IA32_LSTAR).map(|_| ())
            } else {
                engine.write_msr(IA32_LSTAR, 0xFFFF_F800_0000_2000)
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

#[test]
fn nothing_listening_is_connection_refused() {
    let port = closed_port();
    let (result, elapsed) =
        timed(|| Engine::open(&config(&format!("tcp:127.0.0.1:{port}"), 300, 3)));
    assert_eq!(
        result.err().map(|e| e.status()),
        Some(Status::CONNECTION_REFUSED)
    );
    assert!(elapsed < Duration::from_millis(900), "took {elapsed:?}");
}

#[test]
fn unresolvable_host_is_a_device_error_not_a_parameter_error() {
    let result = Engine::open(&config("tcp:no-such-host.invalid:1", 200, 3));
    let status = result
        .err()
        .expect("a host that does not exist cannot open")
        .status();
    assert_ne!(status, Status::SUCCESS);
    assert_ne!(
        status,
        Status::INVALID_PARAMETER,
        "the string is well formed; the host just does not resolve"
    );
}

#[test]
fn silent_server_times_out_after_exactly_max_attempts_identical_hellos() {
    let server = SilentServer::start();
    let cfg = config(&server.transport(), 100, 3);
    let (result, elapsed) = timed(|| Engine::open(&cfg));
    assert_eq!(result.err().map(|e| e.status()), Some(Status::TIMEOUT));
    assert!(
        elapsed >= Duration::from_millis(290),
        "gave up after {elapsed:?}, before 3 attempts of 100 ms"
    );
    assert!(
        elapsed <= Duration::from_millis(1000),
        "took {elapsed:?}, far beyond 3 x 100 ms"
    );
    assert!(wait_until(Duration::from_millis(200), || server
        .received()
        .first()
        .is_some_and(|b| b.len() >= 3 * 13)));
    let received = server.received();
    assert_eq!(received.len(), 1, "one connection");
    let frames = split_frames(&received[0]);
    assert_eq!(frames.len(), 3, "one Hello per attempt: {frames:02x?}");
    assert!(
        frames.iter().all(|f| *f == frames[0]),
        "retransmissions must be byte-identical: {frames:02x?}"
    );
    let mut decoder = pulse_proto::Decoder::new();
    let mut hello = None;
    decoder.feed(&frames[0], |f| hello = Some(f));
    let hello = hello.unwrap();
    assert_eq!(hello.kind, kind::HELLO);
    assert!(matches!(
        Message::parse(&hello),
        Ok(Message::Hello {
            version: PROTOCOL_VERSION,
            ..
        })
    ));
}

#[test]
fn peer_that_hangs_up_during_the_handshake_is_connection_lost() {
    let server = ScriptedServer::start(Box::new(|_| Some(Vec::new())));
    let cfg = config(&server.transport(), 300, 3);
    let (result, elapsed) = timed(|| Engine::open(&cfg));
    assert_eq!(
        result.err().map(|e| e.status()),
        Some(Status::DEVICE_CONNECTION_LOST)
    );
    assert!(elapsed < budget(&cfg), "took {elapsed:?}");
}

#[test]
fn peer_speaking_another_protocol_version_is_revision_mismatch() {
    let server = ScriptedServer::start(Box::new(|f| {
        let nak = Message::Nak {
            reason: NakReason::UnsupportedVersion,
        };
        Some(nak.to_frame(f.session, f.seq).as_bytes().to_vec())
    }));
    let result = Engine::open(&config(&server.transport(), 300, 3));
    assert_eq!(
        result.err().map(|e| e.status()),
        Some(Status::REVISION_MISMATCH)
    );
    let acked_wrong = ScriptedServer::start(Box::new(|f| {
        let ack = Message::HelloAck {
            version: PROTOCOL_VERSION + 1,
            capabilities: 0,
            window: 32,
        };
        Some(ack.to_frame(7, f.seq).as_bytes().to_vec())
    }));
    let result = Engine::open(&config(&acked_wrong.transport(), 300, 3));
    assert_eq!(
        result.err().map(|e| e.status()),
        Some(Status::REVISION_MISMATCH)
    );
}

#[test]
fn host_name_is_resolved_and_each_address_tried() {
    // `localhost` may resolve to ::1 before 127.0.0.1; the server listens
    // on 127.0.0.1 only, so a refused first address must not end the open.
    let sim = TcpSim::start();
    let transport = format!("tcp:localhost:{}", sim.addr.port());
    let engine = Engine::open(&config(&transport, 1000, 3)).expect("open via localhost");
    assert_eq!(engine.write_msr(IA32_LSTAR, 0xFFFF_F800_0000_4000), Ok(()));
    assert_eq!(engine.read_msr(IA32_LSTAR), Ok(0xFFFF_F800_0000_4000));
}

#[test]
fn handshake_answer_without_a_session_is_invalid_packet() {
    let server = ScriptedServer::start(Box::new(|f| {
        let ack = Message::HelloAck {
            version: PROTOCOL_VERSION,
            capabilities: 0,
            window: 32,
        };
        Some(
            ack.to_frame(pulse_proto::NO_SESSION, f.seq)
                .as_bytes()
                .to_vec(),
        )
    }));
    let result = Engine::open(&config(&server.transport(), 300, 3));
    assert_eq!(
        result.err().map(|e| e.status()),
        Some(Status::INVALID_PACKET)
    );
}

#[test]
fn wrong_answer_to_our_request_is_invalid_packet() {
    // A ReadAck carrying our sequence number answers a WriteMsr.
    let server = ScriptedServer::start(Box::new(|f| {
        let reply = if f.kind == kind::HELLO {
            Message::HelloAck {
                version: PROTOCOL_VERSION,
                capabilities: 0,
                window: 32,
            }
        } else {
            Message::ReadAck {
                status: pulse_proto::WireStatus::Ok,
                value: 1,
            }
        };
        Some(reply.to_frame(9, f.seq).as_bytes().to_vec())
    }));
    let engine = Engine::open(&config(&server.transport(), 300, 3)).expect("handshake");
    assert_eq!(
        engine
            .write_msr(IA32_LSTAR, 0xFFFF_F800_0000_0000)
            .map_err(|e| e.status()),
        Err(Status::INVALID_PACKET)
    );
}

/// `EngCreateEngine` "takes at most RequestTimeoutMs * MaxAttempts": the
/// time spent connecting must come out of the same budget as the handshake.
/// A listener whose accept queue is full drops our SYN; Linux resends it
/// after its 1 s initial RTO, by which time the queue has room, so connect
/// succeeds after ~1 s of a 1.2 s budget. The peer then never answers.
#[cfg(target_os = "linux")]
#[test]
fn open_stays_within_its_budget_when_connecting_is_slow() {
    use std::net::TcpListener;
    use std::os::fd::AsRawFd;
    use std::time::Instant;

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap();
    // SAFETY: a valid listening socket; listen() again only resizes the
    // accept queue (to one pending connection).
    assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
    let filler = std::net::TcpStream::connect(addr).expect("fill the accept queue");
    // Wait until the filler really sits in the accept queue.
    let mut pfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    assert_eq!(unsafe { libc::poll(&mut pfd, 1, 2000) }, 1, "filler queued");

    let start = Instant::now();
    let server = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let first = listener.accept().expect("accept the filler");
        // The engine's connection: established only after its SYN resend.
        let second = listener.accept().expect("accept the engine");
        let connected_after = start.elapsed();
        // Hold it open without ever answering, past the end of the budget
        // (closing earlier would turn the TIMEOUT into a lost connection).
        std::thread::sleep(Duration::from_millis(600));
        drop((first, second));
        connected_after
    });
    let cfg = config(&format!("tcp:{addr}"), 400, 3);
    let (result, elapsed) = timed(|| Engine::open(&cfg));
    drop(filler);
    let connected_after = server.join().unwrap();
    assert!(
        connected_after >= Duration::from_millis(800),
        "precondition: connecting should have taken ~1 s (SYN resend), took {connected_after:?}"
    );
    assert_eq!(result.err().map(|e| e.status()), Some(Status::TIMEOUT));
    assert!(
        elapsed <= budget(&cfg) + Duration::from_millis(300),
        "EngCreateEngine took {elapsed:?} (connected after {connected_after:?}); \
         the contract bound is {:?} plus a small margin",
        budget(&cfg)
    );
}

/// Out of file descriptors is `INSUFFICIENT_RESOURCES` (pulse.h, for
/// EngCreateEngine), not a device or connection error.
#[cfg(target_os = "linux")]
#[test]
fn out_of_file_descriptors_is_insufficient_resources() {
    in_child_process("out_of_file_descriptors_is_insufficient_resources", || {
        let sim = TcpSim::start();
        let transport = sim.transport();
        let old = exhaust_fd_limit();
        let result = Engine::open(&config(&transport, 300, 3));
        restore_fd_limit(old);
        assert_eq!(
            result.err().map(|e| e.status()),
            Some(Status::INSUFFICIENT_RESOURCES)
        );
    });
}
