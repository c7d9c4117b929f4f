//! The `pulse` command line: results and JSON on `sim`, the documented
//! exit status of each failure, and bad input ending in one line on stderr
//! and a non-zero exit, never a panic trace.

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pulse::hv_stub::routing::TABLE;
use pulse::Status;

fn pulse(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pulse"))
        .args(args)
        .env_remove("PULSE_TRANSPORT")
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run pulse")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("utf-8 stdout")
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).expect("utf-8 stderr")
}

/// Exit status `code`, nothing on stdout, exactly one `pulse: ` line on
/// stderr and no trace of a panic.
fn assert_one_line_error(args: &[&str], code: i32) -> String {
    let out = pulse(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "{args:?}: stderr {err:?}");
    assert_eq!(stdout(&out), "", "{args:?}");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err:?}");
    assert!(err.starts_with("pulse: "), "{args:?}: {err:?}");
    for trace in ["panicked", "backtrace", "RUST_BACKTRACE", "thread '"] {
        assert!(!err.contains(trace), "{args:?}: {err:?}");
    }
    err
}

/// The exit status `pulse --help` documents for a status name.
fn documented_exit_code(help: &str, name: &str) -> i32 {
    help.lines()
        .find_map(|line| {
            let mut words = line.split_whitespace();
            let code = words.next()?.parse().ok()?;
            let named = words.next()?.trim_end_matches(',');
            (named == name).then_some(code)
        })
        .unwrap_or_else(|| panic!("--help documents no exit status for {name}"))
}

#[test]
fn help_documents_a_distinct_exit_status_for_every_status() {
    let out = pulse(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = stdout(&out);
    for usage in [
        "wrmsr MSR VALUE",
        "rdmsr MSR",
        "--transport",
        "--timeout",
        "--json",
    ] {
        assert!(help.contains(usage), "--help lacks {usage}");
    }
    let mut codes: Vec<i32> = Status::ALL
        .iter()
        .map(|s| documented_exit_code(&help, s.name().unwrap()))
        .collect();
    assert_eq!(codes[0], 0, "SUCCESS exits 0");
    let count = codes.len();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), count, "exit codes are distinct");
    assert!(codes.iter().all(|&c| (0..=125).contains(&c)));
    // -h and `help` say the same.
    assert_eq!(stdout(&pulse(&["-h"])), help);
    assert_eq!(stdout(&pulse(&["help"])), help);
}

#[test]
fn version_is_the_crate_version() {
    let out = pulse(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!(
            "pulse {} (libpulse.so.",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
}

#[test]
fn write_and_read_back_on_sim_by_default() {
    let out = pulse(&["wrmsr", "IA32_LSTAR", "0xFFFFF80012345000", "--read-back"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "IA32_LSTAR (0xc0000082) <- 0xfffff80012345000: PULSE_STATUS_SUCCESS\n\
         IA32_LSTAR (0xc0000082) = 0xfffff80012345000\n"
    );
    assert_eq!(stderr(&out), "");

    // Names: any case, IA32_ optional; numbers in decimal too.
    for msr in ["ia32_lstar", "LSTAR", "0xc0000082", "3221225602"] {
        let out = pulse(&["wrmsr", msr, "18446735277921947648", "--read-back"]);
        assert_eq!(out.status.code(), Some(0), "{msr}: {}", stderr(&out));
        assert!(stdout(&out).ends_with("= 0xfffff80012345000\n"), "{msr}");
    }
}

#[test]
fn json_results() {
    let out = pulse(&[
        "--json",
        "wrmsr",
        "IA32_SYSENTER_CS",
        "0xdeadbeef00000010",
        "--read-back",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        concat!(
            r#"{"op":"wrmsr","msr":"0x00000174","name":"IA32_SYSENTER_CS","status":"PULSE_STATUS_SUCCESS","code":"0x00000000","value":"0xdeadbeef00000010"}"#,
            "\n",
            // SYSENTER_CS is a 32-bit VMCS field: the guest reads the low half.
            r#"{"op":"rdmsr","msr":"0x00000174","name":"IA32_SYSENTER_CS","status":"PULSE_STATUS_SUCCESS","code":"0x00000000","value":"0x0000000000000010"}"#,
            "\n"
        )
    );

    // Several MSRs: one object each; the first failure sets the exit status.
    let out = pulse(&["rdmsr", "--json", "IA32_EFER", "0x40001234", "IA32_BNDCFGS"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "");
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines[0],
        r#"{"op":"rdmsr","msr":"0xc0000080","name":"IA32_EFER","status":"PULSE_STATUS_SUCCESS","code":"0x00000000","value":"0x0000000000000d01"}"#
    );
    let gp = format!(
        r#""status":"PULSE_STATUS_EXCEPTION_GENERAL_PROTECTION","code":"0xC001000D","message":"{}"}}"#,
        Status::EXCEPTION_GENERAL_PROTECTION.meaning()
    );
    assert_eq!(
        lines[1],
        format!(r#"{{"op":"rdmsr","msr":"0x40001234",{gp}"#)
    );
    // No MPX on the default `modern` profile.
    assert_eq!(
        lines[2],
        format!(r#"{{"op":"rdmsr","msr":"0x00000d90","name":"IA32_BNDCFGS",{gp}"#)
    );
}

#[test]
fn transport_option_and_environment() {
    // BNDCFGS exists only on `sim?cpu=full` among these.
    for args in [
        &["--transport", "sim?cpu=full", "rdmsr", "IA32_BNDCFGS"][..],
        &["--transport=sim?cpu=full", "rdmsr", "IA32_BNDCFGS"],
        &["rdmsr", "IA32_BNDCFGS", "-t", "sim?cpu=full"],
    ] {
        let out = pulse(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_pulse"))
        .args(["rdmsr", "IA32_BNDCFGS"])
        .env("PULSE_TRANSPORT", "sim?cpu=full")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The option beats the environment.
    let out = Command::new(env!("CARGO_BIN_EXE_pulse"))
        .args(["-t", "sim", "rdmsr", "IA32_BNDCFGS"])
        .env("PULSE_TRANSPORT", "sim?cpu=full")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn general_protection_is_one_line_and_exit_1() {
    let help = stdout(&pulse(&["--help"]));
    let gp = documented_exit_code(&help, "PULSE_STATUS_EXCEPTION_GENERAL_PROTECTION");
    for args in [
        &["wrmsr", "IA32_PAT", "0x0202020202020202"][..],
        &["wrmsr", "0x40001234", "1"],
        &["rdmsr", "0x40001234"],
        &["wrmsr", "IA32_LSTAR", "0x0000800000000000"],
    ] {
        let err = assert_one_line_error(args, gp);
        assert!(
            err.contains("PULSE_STATUS_EXCEPTION_GENERAL_PROTECTION (0xC001000D)"),
            "{err}"
        );
        assert!(err.contains(Status::EXCEPTION_GENERAL_PROTECTION.meaning()));
    }
}

#[test]
fn bad_input_is_a_usage_error_never_a_panic() {
    for args in [
        &[][..],
        &["frobnicate"],
        &["--frobnicate", "rdmsr", "IA32_LSTAR"],
        &["-x", "rdmsr", "IA32_LSTAR"],
        &["rdmsr"],
        &["wrmsr", "IA32_LSTAR"],
        &["wrmsr", "IA32_LSTAR", "1", "2"],
        &["rdmsr", "IA32_NOT_AN_MSR"],
        &["rdmsr", "LSTARX"],
        &["rdmsr", ""],
        &["rdmsr", "0x"],
        &["rdmsr", "0xZZ"],
        &["rdmsr", "12abc"],
        &["rdmsr", "0x100000000"],
        &["rdmsr", "-1"],
        &["wrmsr", "IA32_LSTAR", "-1"],
        &["wrmsr", "IA32_LSTAR", "0x1ffffffffffffffff"],
        &["wrmsr", "IA32_LSTAR", "18446744073709551616"],
        &["wrmsr", "IA32_LSTAR", "1.5"],
        &["wrmsr", "IA32_LSTAR", "0x10 "],
        &["wrmsr", "IA32_LSTAR", ""],
        &["--timeout", "rdmsr", "IA32_LSTAR"],
        &["--timeout", "0", "rdmsr", "IA32_LSTAR"],
        &["--timeout", "99999999999", "rdmsr", "IA32_LSTAR"],
        &["--attempts", "x", "rdmsr", "IA32_LSTAR"],
        &["--json=yes", "rdmsr", "IA32_LSTAR"],
        &["--transport"],
        &["--transport", "usb:1", "rdmsr", "IA32_LSTAR"],
        &["--transport", "sim?cpu=pentium", "rdmsr", "IA32_LSTAR"],
        &["--transport", "tcp:localhost", "rdmsr", "IA32_LSTAR"],
        &["--read-back", "rdmsr", "IA32_LSTAR"],
        &["msrs", "extra"],
    ] {
        assert_one_line_error(args, 2);
    }
}

#[test]
fn transport_failures_map_to_their_exit_status() {
    let help = stdout(&pulse(&["--help"]));
    let code = |name| documented_exit_code(&help, name);

    let err = assert_one_line_error(
        &[
            "-t",
            "serial:/dev/pulse-no-such-device",
            "rdmsr",
            "IA32_LSTAR",
        ],
        code("PULSE_STATUS_NO_SUCH_DEVICE"),
    );
    assert!(
        err.contains("PULSE_STATUS_NO_SUCH_DEVICE (0xC000000E)"),
        "{err}"
    );

    // A port nobody listens on: bind one, note it, close it.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let transport = format!("tcp:127.0.0.1:{port}");
    let err = assert_one_line_error(
        &["-t", &transport, "rdmsr", "IA32_LSTAR"],
        code("PULSE_STATUS_CONNECTION_REFUSED"),
    );
    assert!(err.contains("PULSE_STATUS_CONNECTION_REFUSED"), "{err}");

    // A listener that never accepts: the kernel completes the handshake but
    // nobody answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let transport = format!("tcp:{}", silent.local_addr().unwrap());
    let started = Instant::now();
    let err = assert_one_line_error(
        &[
            "-t",
            &transport,
            "--timeout",
            "50",
            "--attempts",
            "2",
            "wrmsr",
            "IA32_LSTAR",
            "0",
        ],
        code("PULSE_STATUS_TIMEOUT"),
    );
    assert!(err.contains("PULSE_STATUS_TIMEOUT (0xC0000007)"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));

    let out = pulse(&[
        "--json",
        "-t",
        &transport,
        "--timeout=50",
        "--attempts=1",
        "rdmsr",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(code("PULSE_STATUS_TIMEOUT")));
    assert_eq!(
        stdout(&out),
        format!(
            "{{\"op\":\"open\",\"transport\":\"{transport}\",\"status\":\"PULSE_STATUS_TIMEOUT\",\"code\":\"0xC0000007\",\"message\":\"{}\"}}\n",
            Status::TIMEOUT.meaning()
        )
    );
    drop(silent);
}

#[test]
fn msrs_lists_every_routing_table_name() {
    let out = pulse(&["msrs"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for route in TABLE {
        let line = format!("{:#010x}  {}", route.msr, route.name);
        assert!(text.contains(&line), "missing {line}");
        // Every listed name is accepted back.
        let out = pulse(&["rdmsr", route.name, "-t", "sim?cpu=full"]);
        assert_ne!(out.status.code(), Some(2), "{}", route.name);
    }
}

#[test]
fn a_closed_stdout_is_not_a_crash() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pulse"))
        .args(["msrs"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stderr(&out), "");
}
