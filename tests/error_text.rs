//! `PsGetLastErrorMessage` (docs/api/PsGetLastErrorMessage.md): the precise
//! text of the thread's last call that did not return SUCCESS, through the
//! C ABI exactly as a C caller uses it — the size query, BUFFER_TOO_SMALL
//! writing nothing, a NULL `pcbNeeded`, calls that leave the message alone,
//! and one message per thread.

mod support;

use std::ffi::{c_char, CString};
use std::mem::size_of;
use std::ptr::{null, null_mut};

use pulse::ffi::{
    EngCreateEngine, EngDestroyEngine, PsGetLastErrorMessage, PsReadMsr, PsStatusToString,
    PsSwitchCpu, PsWriteMsr, PPS_ENGINE, PS_ENGINE_CONFIG,
};
use pulse::Status;
use support::{closed_port, SilentServer, TcpSim};

/// The thread's message, read the way the reference page shows: ask for
/// the size, then fetch. Checks that both calls agree.
fn last_message() -> String {
    let mut needed = 0u32;
    // SAFETY: a NULL buffer of size 0 and a writable u32.
    let status = unsafe { PsGetLastErrorMessage(null_mut(), 0, &mut needed) };
    assert_eq!(Status(status), Status::BUFFER_TOO_SMALL, "size query");
    assert!(needed >= 1, "the size counts the NUL");
    let mut buf = vec![0x55u8; needed as usize];
    let mut again = 0u32;
    // SAFETY: `buf` has `needed` writable bytes.
    let status = unsafe { PsGetLastErrorMessage(buf.as_mut_ptr().cast(), needed, &mut again) };
    assert_eq!(Status(status), Status::SUCCESS);
    assert_eq!(again, needed);
    assert_eq!(buf.pop(), Some(0), "NUL-terminated");
    assert!(!buf.contains(&0), "exactly one NUL, at the end");
    String::from_utf8(buf).expect("UTF-8 text")
}

/// `EngCreateEngine` for `transport`; the engine (if any) and the status.
fn create(transport: &str, timeout_ms: u32, attempts: u32) -> (Status, PPS_ENGINE) {
    let transport = CString::new(transport).unwrap();
    let config = PS_ENGINE_CONFIG {
        Size: size_of::<PS_ENGINE_CONFIG>() as u32,
        Transport: transport.as_ptr(),
        RequestTimeoutMs: timeout_ms,
        MaxAttempts: attempts,
        pKey: null(),
        KeySize: 0,
    };
    let mut engine: PPS_ENGINE = null_mut();
    // SAFETY: a complete config with a live string; a writable handle.
    let status = unsafe { EngCreateEngine(&config, &mut engine) };
    (Status(status), engine)
}

/// The status and message of a create that must fail.
fn create_fails(transport: &str, timeout_ms: u32, attempts: u32) -> (Status, String) {
    let (status, engine) = create(transport, timeout_ms, attempts);
    assert!(engine.is_null(), "{transport}: created an engine");
    (status, last_message())
}

fn sim(transport: &str) -> PPS_ENGINE {
    let (status, engine) = create(transport, 0, 0);
    assert_eq!(status, Status::SUCCESS, "{transport}");
    engine
}

fn destroy(engine: PPS_ENGINE) {
    // SAFETY: a live handle from EngCreateEngine, used by no one else.
    assert_eq!(unsafe { EngDestroyEngine(engine) }, 0);
}

#[test]
fn the_message_is_empty_until_a_call_fails() {
    std::thread::spawn(|| {
        assert_eq!(last_message(), "");
        let mut needed = 7u32;
        let mut one = [0x55 as c_char; 1];
        // SAFETY: a 1-byte buffer and a writable u32.
        let status = unsafe { PsGetLastErrorMessage(one.as_mut_ptr(), 1, &mut needed) };
        assert_eq!(Status(status), Status::SUCCESS);
        assert_eq!((needed, one[0]), (1, 0), "size 1: the NUL alone");
        // A successful call does not set one.
        let engine = sim("sim");
        destroy(engine);
        assert_eq!(last_message(), "");
    })
    .join()
    .unwrap();
}

#[test]
fn a_url_style_tcp_string_is_called_malformed_not_a_missing_device() {
    let (status, text) = create_fails("tcp://127.0.0.1:5555", 100, 1);
    assert_eq!(status, Status::INVALID_PARAMETER);
    assert!(
        text.contains("`tcp://127.0.0.1:5555` is malformed"),
        "{text}"
    );
    assert!(text.contains("without `//`"), "{text}");
}

#[test]
fn a_malformed_transport_string_names_the_part_that_is_wrong() {
    for (transport, part) in [
        ("sim?cpus=99", "cpus=99"),
        ("sim?colour=red", "colour=red"),
        ("usb:/dev/x", "`usb`"),
        ("tcp:localhost", "tcp:<host>:<port>"),
        ("tcp:localhost:99999", "`99999`"),
        ("serial:/dev/ttyS0?baud=fast", "`fast`"),
        ("", "empty"),
    ] {
        let (status, text) = create_fails(transport, 100, 1);
        assert_eq!(status, Status::INVALID_PARAMETER, "{transport}");
        assert!(text.contains("malformed"), "{transport}: {text}");
        assert!(text.contains(part), "{transport}: {text} lacks {part}");
    }
}

#[test]
fn a_missing_device_is_named_with_the_os_reason() {
    let (status, text) = create_fails("serial:/dev/pulse-no-such-tty", 100, 1);
    assert_eq!(status, Status::NO_SUCH_DEVICE);
    assert!(text.contains("`/dev/pulse-no-such-tty`"), "{text}");
    assert!(text.contains("No such file or directory"), "{text}");
}

#[test]
fn a_refused_connection_and_a_silent_debuggee_mention_another_client() {
    let port = closed_port();
    let (status, text) = create_fails(&format!("tcp:127.0.0.1:{port}"), 200, 1);
    assert_eq!(status, Status::CONNECTION_REFUSED);
    assert!(
        text.contains(&format!("127.0.0.1:{port} refused")),
        "{text}"
    );
    assert!(text.contains("another one has it"), "{text}");

    let silent = SilentServer::start();
    let (status, text) = create_fails(&silent.transport(), 50, 2);
    assert_eq!(status, Status::TIMEOUT);
    assert!(text.contains("did not answer the handshake"), "{text}");
    assert!(text.contains("2 attempt(s) of 50 ms"), "{text}");
    assert!(text.contains("already serves another client"), "{text}");
}

#[test]
fn a_session_taken_over_by_another_client_is_reported_as_such() {
    let server = TcpSim::start();
    let first = sim(&server.transport());
    let second = sim(&server.transport());
    let mut value = 0u64;
    // SAFETY: live handles; a writable u64.
    let status = unsafe { PsReadMsr(first, 0xC000_0082, &mut value) };
    assert_eq!(Status(status), Status::DEVICE_CONNECTION_LOST);
    let text = last_message();
    assert!(text.contains("now serves another client"), "{text}");
    // Later calls say the link went earlier.
    // SAFETY: as above.
    let status = unsafe { PsReadMsr(first, 0xC000_0082, &mut value) };
    assert_eq!(Status(status), Status::DEVICE_CONNECTION_LOST);
    assert!(last_message().contains("lost by an earlier call"));
    destroy(first);
    destroy(second);
}

#[test]
fn cpus_and_msrs_are_named() {
    let engine = sim("sim?cpus=4&online=2");
    // SAFETY: a live handle.
    unsafe {
        assert_eq!(Status(PsSwitchCpu(engine, 9)), Status::BARRIER_NO_CPU);
        assert_eq!(
            last_message(),
            "the debuggee has no CPU 9 (it has 4: 0 to 3)"
        );
        assert_eq!(
            Status(PsSwitchCpu(engine, 3)),
            Status::BARRIER_OWNER_INACTIVE
        );
        let text = last_message();
        assert!(
            text.starts_with("CPU 3 exists but is not running"),
            "{text}"
        );
        // Informational, not SUCCESS: it gets a message too.
        assert_eq!(
            Status(PsSwitchCpu(engine, 0)),
            Status::BARRIER_ALREADY_OWNED
        );
        assert_eq!(last_message(), "CPU 0 already is the current CPU");
        assert_eq!(Status(PsSwitchCpu(engine, 1)), Status::SUCCESS);
        assert_eq!(
            Status(PsWriteMsr(engine, 0x4000_1234, 5)),
            Status::EXCEPTION_GENERAL_PROTECTION
        );
        let text = last_message();
        assert!(text.contains("WRMSR 0x40001234 <- 0x5 on CPU 1"), "{text}");
        let mut value = 0u64;
        assert_eq!(
            Status(PsReadMsr(engine, 0x4000_1234, &mut value)),
            Status::EXCEPTION_GENERAL_PROTECTION
        );
        assert!(last_message().contains("RDMSR 0x40001234 on CPU 1"));
    }
    destroy(engine);
}

#[test]
fn null_arguments_are_named() {
    let mut value = 0u64;
    // SAFETY: NULL is allowed and refused.
    let status = unsafe { PsReadMsr(null_mut(), 0x10, &mut value) };
    assert_eq!(Status(status), Status::INVALID_PARAMETER);
    assert_eq!(last_message(), "invalid argument: pEngine is NULL");
    let engine = sim("sim");
    // SAFETY: a live handle; NULL out-pointer is refused.
    let status = unsafe { PsReadMsr(engine, 0x10, null_mut()) };
    assert_eq!(Status(status), Status::INVALID_PARAMETER);
    assert_eq!(last_message(), "invalid argument: pMsrValue is NULL");
    destroy(engine);
}

#[test]
fn a_small_buffer_gets_nothing_and_learns_the_size() {
    create_fails("tcp://x:1", 100, 1);
    let text = last_message();
    let needed = text.len() as u32 + 1;
    let mut buf = vec![b'x' as c_char; needed as usize - 1];
    let mut told = 0u32;
    // SAFETY: `buf` has needed - 1 writable bytes.
    let status = unsafe { PsGetLastErrorMessage(buf.as_mut_ptr(), needed - 1, &mut told) };
    assert_eq!(Status(status), Status::BUFFER_TOO_SMALL);
    assert_eq!(told, needed);
    assert!(buf.iter().all(|&b| b == b'x' as c_char), "nothing written");
    // A NULL pcbNeeded is fine, on success and on BUFFER_TOO_SMALL.
    // SAFETY: as above.
    let status = unsafe { PsGetLastErrorMessage(buf.as_mut_ptr(), needed - 1, null_mut()) };
    assert_eq!(Status(status), Status::BUFFER_TOO_SMALL);
    let mut big = vec![0 as c_char; 512];
    // SAFETY: 512 writable bytes.
    let status = unsafe { PsGetLastErrorMessage(big.as_mut_ptr(), 512, null_mut()) };
    assert_eq!(Status(status), Status::SUCCESS);
    assert_eq!(
        &big[..needed as usize - 1],
        &text
            .as_bytes()
            .iter()
            .map(|&b| b as c_char)
            .collect::<Vec<_>>()[..]
    );
    assert_eq!(big[needed as usize - 1], 0);
    // A NULL buffer with a size is refused, and changes nothing.
    let mut size = 0u32;
    // SAFETY: NULL buffer is refused before any write.
    let status = unsafe { PsGetLastErrorMessage(null_mut(), 4096, &mut size) };
    assert_eq!(Status(status), Status::INVALID_PARAMETER);
    assert_eq!(size, 0, "nothing written on INVALID_PARAMETER");
    assert_eq!(last_message(), text);
}

#[test]
fn successes_and_status_names_leave_the_message_alone() {
    create_fails("sim?cpus=0", 100, 1);
    let text = last_message();
    let engine = sim("sim");
    let mut value = 0u64;
    // SAFETY: a live handle and a writable u64.
    assert_eq!(unsafe { PsReadMsr(engine, 0xC000_0082, &mut value) }, 0);
    let _ = PsStatusToString(Status::TIMEOUT.0);
    destroy(engine);
    assert_eq!(last_message(), text);
}

#[test]
fn each_thread_has_its_own_message() {
    create_fails("tcp://a:1", 100, 1);
    let mine = last_message();
    let theirs = std::thread::spawn(|| {
        let engine = sim("sim?cpus=2");
        // SAFETY: a live handle.
        let status = unsafe { PsSwitchCpu(engine, 5) };
        assert_eq!(Status(status), Status::BARRIER_NO_CPU);
        destroy(engine);
        last_message()
    })
    .join()
    .unwrap();
    assert!(theirs.contains("no CPU 5"), "{theirs}");
    assert_eq!(
        last_message(),
        mine,
        "another thread's failure changed ours"
    );
}
