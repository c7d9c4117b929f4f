//! The authenticated link (docs/SECURITY.md, docs/api/PS_ENGINE_CONFIG.md): the
//! right key works over TCP, a pseudo-terminal and against the
//! `hv-stub-sim` process; no key, a wrong key, a version-1 configuration
//! and a debuggee without a key are ACCESS_DENIED within the call budget
//! and execute nothing; malformed key settings are INVALID_PARAMETER; bad
//! key files stop hv-stub-sim; nobody without the key can take the
//! debuggee from an authenticated client.

mod support;

use std::ffi::CString;
use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::ptr::{null, null_mut};
use std::time::Duration;

use hv_stub::msr::index::*;
use pulse::ffi::{EngCreateEngine, EngDestroyEngine, PsWriteMsr, PPS_ENGINE, PS_ENGINE_CONFIG};
use pulse::{Engine, Status};
use pulse_proto::auth::{Direction, NONCE_LEN};
use pulse_proto::message::Message;
use pulse_proto::{Psk, SessionKeys, NO_SESSION, PROTOCOL_VERSION};
use support::*;

/// Slack for scheduling on a loaded two-core machine.
const MARGIN: Duration = Duration::from_millis(150);

const WRONG_KEY: Psk = Psk::new([0x43; 32]);

fn key_file(name: &str, text: &[u8]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pulse-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn works(engine: &Engine, target: Option<&hv_stub_sim::SharedTarget>) {
    let value = kernel_address(0x77);
    assert_eq!(engine.write_msr(IA32_LSTAR, value), Ok(()));
    assert_eq!(engine.read_msr(IA32_LSTAR), Ok(value));
    assert_eq!(
        engine.write_msr(0xDEAD_BEEF, 1).map_err(|e| e.status()),
        Err(Status::EXCEPTION_GENERAL_PROTECTION)
    );
    assert_eq!(engine.cpu_info().map(|i| i.count), Ok(4));
    if let Some(target) = target {
        let stats = handler_stats(target);
        assert_eq!(stats.handshakes, 1, "{stats:?}");
        assert_eq!(stats.writes_executed, 2, "{stats:?}");
        assert_eq!(stats.unauthenticated_dropped, 0, "{stats:?}");
        assert_eq!(guest_saw(target, IA32_LSTAR), Some(value));
    }
}

#[test]
fn the_right_key_works_over_tcp_and_a_pty() {
    let tcp = TcpSim::start_on(Link::Authenticated);
    let engine = Engine::open(&Link::Authenticated.config(&tcp.transport(), 1000, 3))
        .expect("authenticated engine over TCP");
    works(&engine, Some(&tcp.target));

    let pty = PtySim::start_on(Link::Authenticated);
    let engine = Engine::open(&Link::Authenticated.config(&pty.transport(), 1000, 3))
        .expect("authenticated engine over a pty");
    works(&engine, Some(&pty.target));
}

#[test]
fn the_in_process_sim_takes_the_engines_key() {
    let engine = Engine::open(&Link::Authenticated.config("sim", 1000, 3)).expect("sim");
    works(&engine, None);
    let sim = engine.sim_target().expect("a sim engine");
    assert!(sim.lock().stub().has_key());
}

#[test]
fn the_right_key_works_against_hv_stub_sim_with_a_key_file() {
    let path = key_file("good.key", &TEST_KEY.to_text());
    let path = path.to_str().unwrap();
    for mode in [["--listen", "127.0.0.1:0"].as_slice(), ["--pty"].as_slice()] {
        let args: Vec<&str> = mode.iter().copied().chain(["--key-file", path]).collect();
        let sim = SimProcess::start(&args);
        let engine = Engine::open(&Link::Authenticated.config(&sim.transport, 1000, 3))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        works(&engine, None);
        // And the process refuses a client without the key.
        let plain = Link::Plain.config(&sim.transport, 300, 3);
        drop(engine);
        let (result, elapsed) = timed(|| Engine::open(&plain).map(|_| ()));
        assert_eq!(
            result.map_err(|e| e.status()),
            Err(Status::ACCESS_DENIED),
            "{args:?}"
        );
        assert!(elapsed <= budget(&plain) + MARGIN);
    }
}

#[test]
fn bad_key_files_stop_hv_stub_sim_with_an_error_naming_the_file() {
    let missing = std::env::temp_dir().join("pulse-auth-no-such-dir/none.key");
    let cases: Vec<(std::path::PathBuf, &str)> = vec![
        (missing, "cannot be read"),
        (key_file("short.key", &[b'a'; 63]), "63 hex digits"),
        (key_file("long.key", &[b'a'; 66]), "66 hex digits"),
        (key_file("empty.key", b""), "0 hex digits"),
        (
            key_file("nothex.key", format!("{}g\n", "a".repeat(63)).as_bytes()),
            "byte 63 is not a hex digit",
        ),
        (
            key_file(
                "two-newlines.key",
                format!("{}\n\n", "a".repeat(64)).as_bytes(),
            ),
            "not a hex digit",
        ),
    ];
    for (path, problem) in cases {
        let out = Command::new(hv_stub_sim_exe())
            .args(["--listen", "127.0.0.1:0", "--key-file"])
            .arg(&path)
            .stdin(Stdio::null())
            .output()
            .expect("run hv-stub-sim");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", path.display());
        assert!(
            stderr.contains(&path.display().to_string()) && stderr.contains(problem),
            "{}: {stderr}",
            path.display()
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("listening"),
            "{} listened",
            path.display()
        );
    }
}

/// EngCreateEngine through the C ABI: its status, and destroys the engine.
fn create(cfg: &PS_ENGINE_CONFIG) -> u32 {
    let mut engine: PPS_ENGINE = null_mut();
    // SAFETY: a valid config of `Size` bytes and a writable handle slot.
    let status = unsafe { EngCreateEngine(cfg, &mut engine) };
    if !engine.is_null() {
        // SAFETY: a live handle, used by no one else.
        unsafe { EngDestroyEngine(engine) };
    }
    status
}

fn c_config(transport: &CString, key: *const u8, key_size: u32) -> PS_ENGINE_CONFIG {
    PS_ENGINE_CONFIG {
        Size: size_of::<PS_ENGINE_CONFIG>() as u32,
        Transport: transport.as_ptr(),
        RequestTimeoutMs: 300,
        MaxAttempts: 3,
        pKey: key,
        KeySize: key_size,
    }
}

#[test]
fn no_key_a_wrong_key_or_a_version_1_config_is_access_denied_in_budget_and_executes_nothing() {
    let sim = TcpSim::start_on(Link::Authenticated);
    let transport = sim.transport();
    let plain = Link::Plain.config(&transport, 300, 3);
    let wrong = Link::Plain.config(&transport, 300, 3).with_key(WRONG_KEY);
    for cfg in [&plain, &wrong] {
        let (result, elapsed) = timed(|| Engine::open(cfg).map(|_| ()));
        assert_eq!(
            result.map_err(|e| e.status()),
            Err(Status::ACCESS_DENIED),
            "key {:?}",
            cfg.key
        );
        assert!(elapsed <= budget(cfg) + MARGIN, "{elapsed:?}");
    }
    let c_transport = CString::new(transport.clone()).unwrap();
    // Version 1: Size ends before pKey.
    let mut v1 = c_config(&c_transport, null(), 0);
    v1.Size = std::mem::offset_of!(PS_ENGINE_CONFIG, pKey) as u32;
    assert_eq!(create(&v1), Status::ACCESS_DENIED.0);
    assert_eq!(
        create(&c_config(&c_transport, null(), 0)),
        Status::ACCESS_DENIED.0
    );
    assert_eq!(
        create(&c_config(&c_transport, WRONG_KEY.as_bytes().as_ptr(), 32)),
        Status::ACCESS_DENIED.0
    );
    let stats = handler_stats(&sim.target);
    assert_eq!(stats.handshakes, 0, "{stats:?}");
    assert_eq!(stats.writes_executed + stats.reads_executed, 0, "{stats:?}");

    // The right key through the C ABI.
    let right = c_config(&c_transport, TEST_KEY.as_bytes().as_ptr(), 32);
    let mut engine: PPS_ENGINE = null_mut();
    // SAFETY: a valid config and a writable handle slot.
    assert_eq!(unsafe { EngCreateEngine(&right, &mut engine) }, 0);
    // SAFETY: a live handle.
    unsafe {
        assert_eq!(PsWriteMsr(engine, IA32_LSTAR, kernel_address(9)), 0);
        assert_eq!(EngDestroyEngine(engine), 0);
    }
    assert_eq!(handler_stats(&sim.target).writes_executed, 1);
}

#[test]
fn a_client_with_a_key_never_settles_for_a_debuggee_without_one() {
    let sim = TcpSim::start_on(Link::Plain);
    let cfg = Link::Authenticated.config(&sim.transport(), 300, 3);
    let (result, elapsed) = timed(|| Engine::open(&cfg).map(|_| ()));
    assert_eq!(result.map_err(|e| e.status()), Err(Status::ACCESS_DENIED));
    assert!(elapsed <= budget(&cfg) + MARGIN, "{elapsed:?}");
    assert_eq!(handler_stats(&sim.target).handshakes, 0);
    // In-process too: a keyed engine refuses an unauthenticated answer
    // even when a plain client of the same debuggee works.
    let plain = Engine::open(&Link::Plain.config(&sim.transport(), 300, 3)).expect("plain");
    assert_eq!(plain.write_msr(IA32_LSTAR, kernel_address(1)), Ok(()));
}

#[test]
fn malformed_key_settings_are_invalid_parameter_and_open_nothing() {
    let listener = SilentServer::start();
    let transport = CString::new(listener.transport()).unwrap();
    let key = [0u8; 33];
    for (ptr, size) in [
        (key.as_ptr(), 31),
        (key.as_ptr(), 33),
        (key.as_ptr(), 0),
        (null(), 32),
        (null(), 1),
    ] {
        assert_eq!(
            create(&c_config(&transport, ptr, size)),
            Status::INVALID_PARAMETER.0,
            "pKey {ptr:?}, KeySize {size}"
        );
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(listener.connections(), 0, "a malformed key opened a link");
}

/// A raw attacker on the debuggee's TCP port: sends frames, reads what
/// comes back within `wait`.
fn raw_exchange(sim: &TcpSim, frames: &[Vec<u8>], wait: Duration) -> Vec<u8> {
    use std::io::Read;
    let mut stream = TcpStream::connect(sim.addr).unwrap();
    for f in frames {
        stream.write_all(f).unwrap();
    }
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

#[test]
fn nobody_without_the_key_takes_the_debuggee_from_an_authenticated_client() {
    let sim = TcpSim::start_on(Link::Authenticated);
    let transport = sim.transport();
    let cfg = Link::Authenticated.config(&transport, 1000, 3);
    let first = Engine::open(&cfg).expect("first client");
    assert_eq!(first.write_msr(IA32_LSTAR, kernel_address(1)), Ok(()));

    // Clients without the key, or with another one.
    for attempt in [
        Link::Plain.config(&transport, 200, 2),
        Link::Plain.config(&transport, 200, 2).with_key(WRONG_KEY),
    ] {
        assert_eq!(
            Engine::open(&attempt).map(|_| ()).map_err(|e| e.status()),
            Err(Status::ACCESS_DENIED)
        );
    }
    // A raw attacker: plain requests with every session number, an
    // AuthHello it cannot follow up, then requests sealed with keys it
    // guessed for the session that handshake announced.
    let mut frames = Vec::new();
    for session in 0..=255u8 {
        let write = Message::WriteMsr {
            cpu: 0,
            msr: IA32_LSTAR,
            value: 0x4141_4141,
        };
        for seq in [0u16, 1, 2, 0x8000, 0xFFFF] {
            frames.push(write.to_frame(session, seq).as_bytes().to_vec());
        }
    }
    let answers = raw_exchange(&sim, &frames, Duration::from_millis(300));
    assert!(
        answers.is_empty(),
        "the debuggee answered forgeries: {answers:02x?}"
    );
    let hello = Message::AuthHello {
        version: PROTOCOL_VERSION,
        nonce: [0x55; NONCE_LEN],
    };
    let answers = raw_exchange(
        &sim,
        &[hello.to_frame(NO_SESSION, 0x100).as_bytes().to_vec()],
        Duration::from_millis(300),
    );
    assert_eq!(answers.len(), 6 + 16 + 6 + 8 + 2, "{answers:02x?}");
    let pending = answers[3];
    let mut debuggee_nonce = [0u8; NONCE_LEN];
    debuggee_nonce.copy_from_slice(&answers[6..6 + NONCE_LEN]);
    let guessed = SessionKeys::derive(&WRONG_KEY, &[0x55; NONCE_LEN], &debuggee_nonce);
    let mut forged = Vec::new();
    for k in 1..=4u16 {
        let write = Message::WriteMsr {
            cpu: 0,
            msr: IA32_LSTAR,
            value: 0x4242_4242,
        };
        forged.push(
            guessed
                .seal(Direction::ToDebuggee, &write, pending, 0x100 + k, k)
                .as_bytes()
                .to_vec(),
        );
    }
    let answers = raw_exchange(&sim, &forged, Duration::from_millis(300));
    assert!(
        answers.is_empty(),
        "answered sealed forgeries: {answers:02x?}"
    );

    // The first client still holds the debuggee; nothing else ran.
    assert_eq!(first.write_msr(IA32_LSTAR, kernel_address(2)), Ok(()));
    assert_eq!(first.read_msr(IA32_LSTAR), Ok(kernel_address(2)));
    let stats = handler_stats(&sim.target);
    assert_eq!(stats.writes_executed, 2, "{stats:?}");
    assert_eq!(stats.handshakes, 1, "{stats:?}");
    assert!(stats.unauthenticated_dropped >= 256 * 5 + 4, "{stats:?}");

    // A client with the key takes over once it has proven it: its
    // handshake alone changes nothing, its first request does.
    let second = Engine::open(&cfg).expect("second client");
    assert_eq!(first.read_msr(IA32_LSTAR), Ok(kernel_address(2)));
    assert_eq!(second.write_msr(IA32_LSTAR, kernel_address(3)), Ok(()));
    assert_eq!(
        first
            .write_msr(IA32_LSTAR, kernel_address(4))
            .map_err(|e| e.status()),
        Err(Status::DEVICE_CONNECTION_LOST)
    );
    assert_eq!(second.read_msr(IA32_LSTAR), Ok(kernel_address(3)));
}

fn pulse_cli(args: &[&str], key_env: Option<&std::path::Path>) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pulse"));
    command
        .args(args)
        .env_remove("PULSE_TRANSPORT")
        .env_remove("PULSE_KEY_FILE")
        .stdin(Stdio::null());
    if let Some(path) = key_env {
        command.env("PULSE_KEY_FILE", path);
    }
    command.output().expect("run pulse")
}

#[test]
fn the_cli_makes_keys_and_authenticates_with_them() {
    let dir = std::env::temp_dir().join(format!("pulse-auth-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("link.key");
    let out = pulse_cli(&["keygen", path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = std::fs::read(&path).unwrap();
    assert_eq!(text.len(), 65);
    let key = Psk::from_text(&text).expect("a key file");
    assert_ne!(
        key,
        Psk::from_text(&pulse_cli_key(&dir)).unwrap(),
        "keys repeat"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "a key file readable by others: {mode:o}");
    }
    // An existing file is never overwritten.
    let out = pulse_cli(&["keygen", path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(std::fs::read(&path).unwrap(), text);

    let target = hv_stub_sim::new_keyed_target(hv_stub::CpuCaps::MODERN, key);
    let server = hv_stub_sim::TcpServer::spawn(target.clone(), "127.0.0.1:0").unwrap();
    let transport = format!("tcp:{}", server.addr());
    let write = [
        "-t",
        &transport,
        "wrmsr",
        "IA32_LSTAR",
        "0xfffff80000001000",
    ];
    let with_flag: Vec<&str> = ["--key-file", path.to_str().unwrap()]
        .into_iter()
        .chain(write)
        .collect();
    let out = pulse_cli(&with_flag, None);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = pulse_cli(&write, Some(&path));
    assert_eq!(out.status.code(), Some(0), "PULSE_KEY_FILE: {out:?}");
    // Without the key: ACCESS_DENIED, whose exit status --help documents.
    let out = pulse_cli(
        &["--timeout", "300", "-t", &transport, "rdmsr", "IA32_LSTAR"],
        None,
    );
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("PULSE_STATUS_ACCESS_DENIED"));
    assert_eq!(target.lock().stub().stats().writes_executed, 2);

    // A bad key file: exit 2 naming the file, and nothing is opened.
    let listener = SilentServer::start();
    let silent = listener.transport();
    let bad = key_file("cli-bad.key", b"abc\n");
    for out in [
        pulse_cli(
            &[
                "--key-file",
                bad.to_str().unwrap(),
                "-t",
                &silent,
                "rdmsr",
                "0x10",
            ],
            None,
        ),
        pulse_cli(&["-t", &silent, "rdmsr", "0x10"], Some(&bad)),
        pulse_cli(
            &[
                "--key-file",
                "/nonexistent/k",
                "-t",
                &silent,
                "rdmsr",
                "0x10",
            ],
            None,
        ),
    ] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("cli-bad.key") || stderr.contains("/nonexistent/k"),
            "{stderr}"
        );
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(listener.connections(), 0, "a bad key file opened a link");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Another fresh key from `pulse keygen`.
fn pulse_cli_key(dir: &std::path::Path) -> Vec<u8> {
    let path = dir.join("second.key");
    let out = pulse_cli(&["keygen", path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    std::fs::read(path).unwrap()
}
