//! Tier 2: the C ABI contract (docs/ABI.md, docs/api/), exercised through
//! the exported `extern "C"` functions exactly as a C caller uses them:
//! status values and names, NULL and malformed arguments, the config's
//! Size versioning and defaults, and out-pointers written only on success.

mod support;

use std::ffi::{c_char, CStr};
use std::mem::size_of;
use std::ptr::{null, null_mut};
use std::time::Duration;

use hv_stub::msr::index::*;
use pulse::ffi::{
    EngCreateEngine, EngDestroyEngine, PsReadMsr, PsStatusToString, PsWriteMsr, PPS_ENGINE,
    PS_ENGINE_CONFIG,
};
use pulse::Status;
use support::relay::Relay;
use support::*;

const SUCCESS: u32 = 0x0000_0000;
const INVALID_PARAMETER: u32 = 0xC000_0010;
const TIMEOUT: u32 = 0xC000_0007;
const DEVICE_CONNECTION_LOST: u32 = 0xC000_0308;
const EXCEPTION_GENERAL_PROTECTION: u32 = 0xC001_000D;

/// What the contract fixes: the nine codes, their values and names.
const CONTRACT: [(Status, u32, &str); 9] = [
    (Status::SUCCESS, 0x0000_0000, "PULSE_STATUS_SUCCESS"),
    (
        Status::INSUFFICIENT_RESOURCES,
        0xC000_0002,
        "PULSE_STATUS_INSUFFICIENT_RESOURCES",
    ),
    (Status::READ_FAILED, 0xC000_0003, "PULSE_STATUS_READ_FAILED"),
    (
        Status::WRITE_FAILED,
        0xC000_0004,
        "PULSE_STATUS_WRITE_FAILED",
    ),
    (Status::TIMEOUT, 0xC000_0007, "PULSE_STATUS_TIMEOUT"),
    (
        Status::INVALID_PARAMETER,
        0xC000_0010,
        "PULSE_STATUS_INVALID_PARAMETER",
    ),
    (
        Status::INVALID_PACKET,
        0xC000_0031,
        "PULSE_STATUS_INVALID_PACKET",
    ),
    (
        Status::DEVICE_CONNECTION_LOST,
        0xC000_0308,
        "PULSE_STATUS_DEVICE_CONNECTION_LOST",
    ),
    (
        Status::EXCEPTION_GENERAL_PROTECTION,
        0xC001_000D,
        "PULSE_STATUS_EXCEPTION_GENERAL_PROTECTION",
    ),
];

/// A handle value no engine ever has; a failed create must leave it.
fn sentinel_engine() -> PPS_ENGINE {
    std::ptr::without_provenance_mut(0x5EED_0000)
}

const SENTINEL_VALUE: u64 = 0xA5A5_5A5A_DEAD_BEEF;

fn config(transport: *const c_char, timeout_ms: u32, attempts: u32) -> PS_ENGINE_CONFIG {
    PS_ENGINE_CONFIG {
        Size: size_of::<PS_ENGINE_CONFIG>() as u32,
        Transport: transport,
        RequestTimeoutMs: timeout_ms,
        MaxAttempts: attempts,
        pKey: null(),
        KeySize: 0,
    }
}

/// EngCreateEngine with a pre-filled out-pointer: the status and what is
/// in `*ppEngine` afterwards.
fn create(cfg: &PS_ENGINE_CONFIG) -> (u32, PPS_ENGINE) {
    let mut engine = sentinel_engine();
    // SAFETY: a valid config and a writable handle slot.
    let status = unsafe { EngCreateEngine(cfg, &mut engine) };
    (status, engine)
}

/// Asserts a create fails with `expected` and leaves `*ppEngine` alone.
fn create_fails(cfg: &PS_ENGINE_CONFIG, expected: u32, what: &str) {
    let (status, engine) = create(cfg);
    assert_eq!(
        status,
        expected,
        "{what}: got {:?}, want {:?}",
        Status(status),
        Status(expected)
    );
    assert_eq!(engine, sentinel_engine(), "{what}: *ppEngine was written");
}

/// A live engine, destroyed on drop.
struct Handle(PPS_ENGINE);

impl Handle {
    fn open(cfg: &PS_ENGINE_CONFIG) -> Handle {
        let (status, engine) = create(cfg);
        assert_eq!(status, SUCCESS, "create: {:?}", Status(status));
        assert!(!engine.is_null() && engine != sentinel_engine());
        Handle(engine)
    }

    fn write(&self, msr: u32, value: u64) -> u32 {
        // SAFETY: a live handle.
        unsafe { PsWriteMsr(self.0, msr, value) }
    }

    /// PsReadMsr into a pre-filled slot: the status and the slot after.
    fn read(&self, msr: u32) -> (u32, u64) {
        let mut value = SENTINEL_VALUE;
        // SAFETY: a live handle and a writable u64.
        let status = unsafe { PsReadMsr(self.0, msr, &mut value) };
        (status, value)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: a live handle, used by no one else any more.
        assert_eq!(unsafe { EngDestroyEngine(self.0) }, SUCCESS);
    }
}

fn name_of(status: u32) -> String {
    let ptr = PsStatusToString(status);
    assert!(
        !ptr.is_null(),
        "PsStatusToString({status:#x}) returned NULL"
    );
    // SAFETY: non-NULL, and the contract promises a static C string.
    unsafe { CStr::from_ptr(ptr) }
        .to_str()
        .expect("ASCII name")
        .to_owned()
}

#[test]
fn status_codes_have_their_contract_values() {
    for (status, value, name) in CONTRACT {
        assert_eq!(status.0, value, "{name}");
        assert!(Status::ALL.contains(&status), "{name} missing from ALL");
    }
    let mut values: Vec<u32> = Status::ALL.iter().map(|s| s.0).collect();
    values.sort_unstable();
    values.dedup();
    assert_eq!(
        values.len(),
        Status::ALL.len(),
        "two statuses share a value"
    );
    // Failures are 0xC...; the PulseDbg SDK's informational codes (not
    // errors, DESIGN 1.1) are small positive values, like SUCCESS.
    let informational = [
        Status::SUCCESS,
        Status::BARRIER_ALREADY_OWNED,
        Status::PENDING,
    ];
    assert_eq!(Status::BARRIER_ALREADY_OWNED.0, 0x0000_0021);
    // DESIGN 1.1, asynchronous requests.
    assert_eq!(Status::PENDING.0, 0x0000_0103);
    assert_eq!(Status::REQUEST_NOT_INITIALIZED.0, 0xC000_0402);
    assert_eq!(Status::REQUEST_BUSY.0, 0xC000_0403);
    for s in Status::ALL {
        assert!(
            informational.contains(s) || s.0 & 0xF000_0000 == 0xC000_0000,
            "{s:?} = {:#010x} is not in the 0xC... style",
            s.0
        );
        assert_eq!(s.is_error(), !informational.contains(s), "{s:?}");
    }
}

#[test]
fn status_to_string_names_every_code_and_never_returns_null() {
    for (_, value, name) in CONTRACT {
        assert_eq!(name_of(value), name);
    }
    for s in Status::ALL {
        let name = name_of(s.0);
        assert!(name.starts_with("PULSE_STATUS_"), "{name}");
        assert_eq!(Some(name.as_str()), s.name());
        assert_ne!(name, "PULSE_STATUS_UNKNOWN");
        // A static string: the same storage every time.
        assert_eq!(PsStatusToString(s.0), PsStatusToString(s.0));
    }
    for unknown in [0x1234_5678, 0xC000_0001, 0xFFFF_FFFF, 1, 0xC001_000E] {
        assert_eq!(name_of(unknown), "PULSE_STATUS_UNKNOWN", "{unknown:#x}");
    }
}

#[cfg(target_pointer_width = "64")]
#[test]
fn config_struct_has_the_c_layout() {
    use std::mem::offset_of;
    assert_eq!(size_of::<PS_ENGINE_CONFIG>(), 40);
    assert_eq!(offset_of!(PS_ENGINE_CONFIG, Size), 0);
    assert_eq!(offset_of!(PS_ENGINE_CONFIG, Transport), 8);
    assert_eq!(offset_of!(PS_ENGINE_CONFIG, RequestTimeoutMs), 16);
    assert_eq!(offset_of!(PS_ENGINE_CONFIG, MaxAttempts), 20);
    // Version 2 appends the key; version 1 ends where it begins.
    assert_eq!(offset_of!(PS_ENGINE_CONFIG, pKey), 24);
    assert_eq!(offset_of!(PS_ENGINE_CONFIG, KeySize), 32);
}

#[test]
fn null_arguments_are_invalid_parameter_and_touch_nothing() {
    let listener = SilentServer::start();
    let transport = std::ffi::CString::new(listener.transport()).unwrap();
    let cfg = config(transport.as_ptr(), 100, 3);

    let mut engine = sentinel_engine();
    // SAFETY: NULL config is exactly what is under test.
    let status = unsafe { EngCreateEngine(null(), &mut engine) };
    assert_eq!(status, INVALID_PARAMETER);
    assert_eq!(engine, sentinel_engine());
    // SAFETY: NULL out-pointer is exactly what is under test.
    let status = unsafe { EngCreateEngine(&cfg, null_mut()) };
    assert_eq!(status, INVALID_PARAMETER);
    create_fails(&config(null(), 100, 3), INVALID_PARAMETER, "NULL Transport");
    // SAFETY: NULL handles are exactly what is under test.
    unsafe {
        assert_eq!(EngDestroyEngine(null_mut()), INVALID_PARAMETER);
        assert_eq!(PsWriteMsr(null_mut(), IA32_LSTAR, 0), INVALID_PARAMETER);
        let mut value = SENTINEL_VALUE;
        assert_eq!(
            PsReadMsr(null_mut(), IA32_LSTAR, &mut value),
            INVALID_PARAMETER
        );
        assert_eq!(value, SENTINEL_VALUE);
        assert_eq!(
            PsReadMsr(null_mut(), IA32_LSTAR, null_mut()),
            INVALID_PARAMETER
        );
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        listener.connections(),
        0,
        "a create with a NULL argument opened the transport"
    );

    // A NULL out-pointer on a live engine: refused before any request.
    let sim = TcpSim::start();
    let transport = std::ffi::CString::new(sim.transport()).unwrap();
    let engine = Handle::open(&config(transport.as_ptr(), 1000, 3));
    let reads = handler_stats(&sim.target).reads_executed;
    // SAFETY: a live handle; the NULL out-pointer is under test.
    let status = unsafe { PsReadMsr(engine.0, IA32_LSTAR, null_mut()) };
    assert_eq!(status, INVALID_PARAMETER);
    assert_eq!(handler_stats(&sim.target).reads_executed, reads);
}

#[test]
fn config_size_below_version_1_is_invalid_parameter() {
    let listener = SilentServer::start();
    let transport = std::ffi::CString::new(listener.transport()).unwrap();
    let v1 = std::mem::offset_of!(PS_ENGINE_CONFIG, pKey) as u32;
    for size in [0, 1, 4, v1 - 1] {
        let mut cfg = config(transport.as_ptr(), 100, 3);
        cfg.Size = size;
        create_fails(&cfg, INVALID_PARAMETER, &format!("Size {size}"));
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        listener.connections(),
        0,
        "a too-small config opened a link"
    );
}

#[test]
fn config_size_above_version_1_is_accepted() {
    /// A later version of the struct: version 2 followed by new fields.
    #[repr(C)]
    struct ConfigV3 {
        v1: PS_ENGINE_CONFIG,
        future: [u64; 4],
    }
    let cfg = ConfigV3 {
        v1: PS_ENGINE_CONFIG {
            Size: size_of::<ConfigV3>() as u32,
            Transport: c"sim".as_ptr(),
            RequestTimeoutMs: 500,
            MaxAttempts: 2,
            pKey: null(),
            KeySize: 0,
        },
        future: [u64::MAX; 4],
    };
    assert!(cfg.v1.Size as usize > size_of::<PS_ENGINE_CONFIG>());
    let engine = Handle::open(&cfg.v1);
    assert_eq!(engine.write(IA32_LSTAR, 0xFFFF_F800_0000_1000), SUCCESS);
    assert_eq!(engine.read(IA32_LSTAR), (SUCCESS, 0xFFFF_F800_0000_1000));
}

#[test]
fn malformed_transport_strings_are_invalid_parameter_at_once_and_open_nothing() {
    let listener = SilentServer::start();
    let port = listener.addr.port();
    let pty = PtySim::start();
    let mut strings: Vec<Vec<u8>> = [
        "",
        "tcp:",
        "tcp:host",
        "serial:",
        "serial:/dev/x?baud=abc",
        "serial:/dev/x?foo=1",
        "bogus",
        "sim:",
        "SIM",
        " sim",
        "sim?cpu=pentium",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    // Well-formed targets that exist, spoiled by the rest of the string:
    // if anything were opened before the string was judged, the listener
    // would see a connection or the pty debuggee a handshake.
    for s in [
        format!("tcp:127.0.0.1:{port}?x=1"),
        format!("tcp:127.0.0.1:{port}:"),
        format!("tcp:127.0.0.1:0{port}x"),
        format!("tcp:127.0.0.1:{port}\n"),
        format!("{}?foo=1", pty.transport()),
        format!("{}?baud=abc", pty.transport()),
        format!("{}?baud=0", pty.transport()),
        format!("{}?baud=9600&baud=9600", pty.transport()),
    ] {
        strings.push(s.into_bytes());
    }
    // Not UTF-8.
    strings.push(b"sim\xff".to_vec());
    strings.push(format!("tcp:127.0.0.1:{port}").into_bytes());
    strings.last_mut().unwrap().insert(4, 0xC3);
    strings.push(b"serial:/dev/\xfe\xfe".to_vec());

    for bytes in &strings {
        let mut with_nul = bytes.clone();
        with_nul.push(0);
        let cfg = config(with_nul.as_ptr().cast(), 100, 3);
        let what = format!("{:?}", String::from_utf8_lossy(bytes));
        let ((), elapsed) = timed(|| create_fails(&cfg, INVALID_PARAMETER, &what));
        assert!(
            elapsed < Duration::from_millis(50),
            "{what} took {elapsed:?}"
        );
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(listener.connections(), 0, "a malformed string opened TCP");
    assert_eq!(
        handler_stats(&pty.target).handshakes,
        0,
        "a malformed string reached the pty debuggee"
    );
}

#[test]
fn zero_timeout_and_zero_attempts_mean_the_defaults() {
    // 0/0 is not a parameter error.
    let engine = Handle::open(&config(c"sim".as_ptr(), 0, 0));
    assert_eq!(engine.write(IA32_LSTAR, 0xFFFF_F800_0000_2000), SUCCESS);
    drop(engine);

    // MaxAttempts 0 = 3 sends.
    let silent = SilentServer::start();
    let transport = std::ffi::CString::new(silent.transport()).unwrap();
    let ((), elapsed) = timed(|| {
        create_fails(
            &config(transport.as_ptr(), 100, 0),
            TIMEOUT,
            "MaxAttempts 0",
        )
    });
    assert!(
        (Duration::from_millis(290)..=Duration::from_millis(1000)).contains(&elapsed),
        "MaxAttempts 0: {elapsed:?}"
    );
    assert!(wait_until(Duration::from_millis(200), || silent
        .received()
        .first()
        .is_some_and(|b| split_frames(b).len() == 3)));
}

#[test]
fn zero_timeout_means_one_second_per_attempt() {
    let silent = SilentServer::start();
    let transport = std::ffi::CString::new(silent.transport()).unwrap();
    let ((), elapsed) = timed(|| {
        create_fails(
            &config(transport.as_ptr(), 0, 1),
            TIMEOUT,
            "RequestTimeoutMs 0",
        )
    });
    assert!(
        (Duration::from_millis(990)..=Duration::from_millis(1600)).contains(&elapsed),
        "RequestTimeoutMs 0: {elapsed:?}"
    );
    assert_eq!(split_frames(&silent.received()[0]).len(), 1);
}

#[test]
fn largest_timeout_and_attempts_do_not_overflow() {
    // u32::MAX ms x u32::MAX attempts: deadlines far in the future must not
    // overflow (a panic would surface as INTERNAL_ERROR).
    let engine = Handle::open(&config(c"sim".as_ptr(), u32::MAX, u32::MAX));
    assert_eq!(engine.write(IA32_LSTAR, 0xFFFF_F800_0000_5000), SUCCESS);
    assert_eq!(engine.read(IA32_LSTAR), (SUCCESS, 0xFFFF_F800_0000_5000));
    let sim = TcpSim::start();
    let transport = std::ffi::CString::new(sim.transport()).unwrap();
    let engine = Handle::open(&config(transport.as_ptr(), u32::MAX, u32::MAX));
    assert_eq!(engine.write(IA32_LSTAR, 0xFFFF_F800_0000_6000), SUCCESS);
    assert_eq!(engine.read(IA32_LSTAR), (SUCCESS, 0xFFFF_F800_0000_6000));
}

#[test]
fn failed_creates_leave_the_handle_slot_untouched() {
    let refused = format!("tcp:127.0.0.1:{}\0", closed_port());
    create_fails(
        &config(refused.as_ptr().cast(), 100, 2),
        Status::CONNECTION_REFUSED.0,
        "connection refused",
    );
    create_fails(
        &config(c"serial:/dev/does-not-exist".as_ptr(), 100, 2),
        Status::NO_SUCH_DEVICE.0,
        "no such device",
    );
    let silent = SilentServer::start();
    let transport = std::ffi::CString::new(silent.transport()).unwrap();
    create_fails(&config(transport.as_ptr(), 50, 2), TIMEOUT, "silent peer");
}

#[test]
fn read_writes_the_value_only_on_success_and_gp_is_0xc001000d() {
    let engine = Handle::open(&config(c"sim".as_ptr(), 500, 3));
    assert_eq!(engine.write(IA32_LSTAR, 0xFFFF_F800_CAFE_0000), SUCCESS);
    assert_eq!(engine.read(IA32_LSTAR), (SUCCESS, 0xFFFF_F800_CAFE_0000));
    assert_eq!(engine.write(IA32_SYSENTER_CS, 0x1_0000_0023), SUCCESS);
    assert_eq!(engine.read(IA32_SYSENTER_CS), (SUCCESS, 0x23));

    assert_eq!(engine.write(0x1234_5678, 1), EXCEPTION_GENERAL_PROTECTION);
    assert_eq!(
        engine.read(0x1234_5678),
        (EXCEPTION_GENERAL_PROTECTION, SENTINEL_VALUE)
    );
    // Refused values: nothing changes.
    assert_eq!(
        engine.write(IA32_PAT, 0x0202_0202_0202_0202),
        EXCEPTION_GENERAL_PROTECTION
    );
    assert_eq!(
        engine.write(IA32_LSTAR, 0x0000_8000_0000_0000),
        EXCEPTION_GENERAL_PROTECTION,
        "non-canonical"
    );
    assert_eq!(engine.read(IA32_LSTAR), (SUCCESS, 0xFFFF_F800_CAFE_0000));
}

#[test]
fn lost_connection_is_0xc0000308_and_leaves_the_value_untouched() {
    let sim = TcpSim::start();
    let relay = Relay::start(sim.addr, 5);
    let transport = std::ffi::CString::new(relay.transport()).unwrap();
    let engine = Handle::open(&config(transport.as_ptr(), 200, 3));
    assert_eq!(engine.write(IA32_LSTAR, 0xFFFF_F800_0000_3000), SUCCESS);
    relay.cut();
    assert_eq!(
        engine.read(IA32_LSTAR),
        (DEVICE_CONNECTION_LOST, SENTINEL_VALUE)
    );
    assert_eq!(engine.write(IA32_LSTAR, 1), DEVICE_CONNECTION_LOST);
    assert_eq!(
        engine.read(IA32_LSTAR),
        (DEVICE_CONNECTION_LOST, SENTINEL_VALUE)
    );
}

#[test]
fn one_handle_from_several_threads() {
    struct Shared(PPS_ENGINE);
    // SAFETY: the contract makes an engine usable from several threads.
    unsafe impl Sync for Shared {}
    let engine = Handle::open(&config(c"sim".as_ptr(), 500, 3));
    let shared = Shared(engine.0);
    std::thread::scope(|scope| {
        for (t, msr) in [IA32_LSTAR, IA32_CSTAR, IA32_KERNEL_GS_BASE, IA32_FS_BASE]
            .into_iter()
            .enumerate()
        {
            let shared = &shared;
            scope.spawn(move || {
                for i in 0..25u64 {
                    let value = kernel_address((t as u64) << 16 | i);
                    // SAFETY: a live handle, shared per the contract.
                    unsafe {
                        assert_eq!(PsWriteMsr(shared.0, msr, value), SUCCESS);
                        let mut back = SENTINEL_VALUE;
                        assert_eq!(PsReadMsr(shared.0, msr, &mut back), SUCCESS);
                        assert_eq!(back, value, "thread {t} call {i}");
                    }
                }
            });
        }
    });
}
