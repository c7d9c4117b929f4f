//! The `pulse` command line: results and JSON on `sim`, the documented
//! exit status of each failure, and bad input ending in one line on stderr
//! and a non-zero exit, never a panic trace. Also the parity features:
//! bare hex numbers, `-f`, `-x`/`-d`, read-modify-write, `-p`/`-a`,
//! `pulse shell` over one connection, `pulse msrs` probing the debuggee,
//! JSON for errors; and `--help` of hv-stub-sim and scripts/demo.sh.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hv_stub::routing::TABLE;
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
    // Informational codes (not errors) exit 0 like SUCCESS.
    assert_eq!(
        documented_exit_code(&help, "PULSE_STATUS_BARRIER_ALREADY_OWNED"),
        0
    );
    let mut codes: Vec<i32> = Status::ALL
        .iter()
        .filter(|s| s.is_error() || s.is_success())
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
    // The message is libpulse's precise text: the access, the MSR, the CPU.
    let gp = |msr: &str| {
        format!(
            r##""status":"PULSE_STATUS_EXCEPTION_GENERAL_PROTECTION","code":"0xC001000D","message":"#GP on the debuggee: RDMSR {msr} on CPU 0 (no such MSR, or a value the processor refuses); nothing was changed"}}"##
        )
    };
    assert_eq!(
        lines[1],
        format!(r#"{{"op":"rdmsr","msr":"0x40001234",{}"#, gp("0x40001234"))
    );
    // No MPX on the default `modern` profile.
    assert_eq!(
        lines[2],
        format!(
            r#"{{"op":"rdmsr","msr":"0x00000d90","name":"IA32_BNDCFGS",{}"#,
            gp("0xd90")
        )
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
    for (args, access) in [
        (
            &["wrmsr", "IA32_PAT", "0x0202020202020202"][..],
            "WRMSR 0x277 <- 0x202020202020202 on CPU 0",
        ),
        (
            &["wrmsr", "0x40001234", "1"],
            "WRMSR 0x40001234 <- 0x1 on CPU 0",
        ),
        (&["rdmsr", "0x40001234"], "RDMSR 0x40001234 on CPU 0"),
        (
            &["wrmsr", "IA32_LSTAR", "0x0000800000000000"],
            "WRMSR 0xc0000082 <- 0x800000000000 on CPU 0",
        ),
    ] {
        let err = assert_one_line_error(args, gp);
        assert!(
            err.contains(
                "PULSE_STATUS_EXCEPTION_GENERAL_PROTECTION (0xC001000D): #GP on the debuggee: "
            ),
            "{err}"
        );
        assert!(err.contains(access), "{err} lacks {access}");
        assert!(err.contains("nothing was changed"), "{err}");
    }
}

#[test]
fn bad_input_is_a_usage_error_never_a_panic() {
    for args in [
        &[][..],
        &["frobnicate"],
        &["--frobnicate", "rdmsr", "IA32_LSTAR"],
        &["-q", "rdmsr", "IA32_LSTAR"],
        &["rdmsr"],
        &["wrmsr", "IA32_LSTAR"],
        &["wrmsr", "IA32_LSTAR", "1", "2"],
        &["rdmsr", "IA32_NOT_AN_MSR"],
        &["rdmsr", "LSTARX"],
        &["rdmsr", ""],
        &["rdmsr", "0x"],
        &["rdmsr", "0xZZ"],
        &["rdmsr", "12abx"],
        &["rdmsr", "fffff800`12345000`0"],
        &["rdmsr", "-f", "64:0", "IA32_LSTAR"],
        &["rdmsr", "-f", "3:4", "IA32_LSTAR"],
        &["-x", "-d", "rdmsr", "IA32_LSTAR"],
        &["wrmsr", "IA32_LSTAR"],
        &["wrmsr", "IA32_LSTAR", "1", "--set-bits", "1"],
        &["rdmsr", "IA32_LSTAR", "--set-bits", "1"],
        &["wrmsr", "-f", "3:0", "IA32_PAT", "0x10"],
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
            "the debuggee did not answer the handshake (1 attempt(s) of 50 ms each): it is not \
             running hv-stub, or it already serves another client (a Bochs debuggee accepts one \
             client for its whole run)"
        )
    );
    drop(silent);
}

#[test]
fn msrs_all_names_lists_every_routing_table_name() {
    let out = pulse(&["msrs", "--all-names"]);
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

fn pulse_with_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pulse"))
        .args(args)
        .env_remove("PULSE_TRANSPORT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pulse");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn bare_hex_numbers_as_windbg_and_hyperdbg_take_them() {
    let out = pulse(&["wrmsr", "c0000082", "fffff800`12345000", "--read-back"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "IA32_LSTAR (0xc0000082) <- 0xfffff80012345000: PULSE_STATUS_SUCCESS\n\
         IA32_LSTAR (0xc0000082) = 0xfffff80012345000\n"
    );
    // Bare digits stay decimal, as msr-tools reads them: 372 = 0x174.
    let out = pulse(&["rdmsr", "1d9", "372"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "IA32_DEBUGCTL (0x1d9) = 0x0000000000000000\n\
         IA32_SYSENTER_CS (0x174) = 0x0000000000000010\n"
    );
}

#[test]
fn fields_and_value_only_formats() {
    // sim's IA32_EFER is 0xd01: bits 11:8 are 0xd.
    let cases: &[(&[&str], &str)] = &[
        (
            &["rdmsr", "-f", "11:8", "IA32_EFER"],
            "IA32_EFER (0xc0000080) [11:8] = 0xd\n",
        ),
        (&["rdmsr", "-x", "IA32_EFER"], "0x0000000000000d01\n"),
        (&["rdmsr", "--hex", "-f", "11:8", "IA32_EFER"], "0xd\n"),
        (&["rdmsr", "-d", "IA32_EFER"], "3329\n"),
        (
            &["rdmsr", "-d", "--field=11:0", "IA32_EFER", "IA32_PAT"],
            "3329\n1030\n",
        ),
        // A plain write prints nothing with -x/-d, as msr-tools' wrmsr.
        (&["-x", "wrmsr", "IA32_LSTAR", "0"], ""),
        (
            &["-x", "wrmsr", "IA32_LSTAR", "0x10", "--read-back"],
            "0x0000000000000010\n",
        ),
    ];
    for (args, want) in cases {
        let out = pulse(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), *want, "{args:?}");
    }
    let out = pulse(&["--json", "rdmsr", "-f", "11:8", "IA32_EFER"]);
    assert!(
        stdout(&out).ends_with(
            r#""value":"0x0000000000000d01","field":"11:8","field_value":"0xd"}
"#
        ),
        "{}",
        stdout(&out)
    );
}

#[test]
fn read_modify_write_is_one_read_and_one_write_with_both_values() {
    let out = pulse(&["wrmsr", "IA32_DEBUGCTL", "--set-bits", "0x1", "--read-back"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "IA32_DEBUGCTL (0x1d9): 0x0000000000000000 -> 0x0000000000000001: PULSE_STATUS_SUCCESS\n\
         IA32_DEBUGCTL (0x1d9) = 0x0000000000000001\n"
    );
    // -f HI:LO VALUE writes one field; the rest of the register is kept.
    let out = pulse(&["wrmsr", "-f", "7:0", "IA32_PAT", "0x07", "-x"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "0x0007040600070406 0x0007040600070407\n");
    // Clearing and setting together; JSON names the old and the new value.
    let out = pulse(&[
        "--json",
        "wrmsr",
        "IA32_PAT",
        "--clear-bits",
        "0xff",
        "--set-bits",
        "0x06",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        concat!(
            r#"{"op":"rmw","msr":"0x00000277","name":"IA32_PAT","status":"PULSE_STATUS_SUCCESS","code":"0x00000000","old":"0x0007040600070406","value":"0x0007040600070406"}"#,
            "\n"
        )
    );
    // A refused new value: #GP, exit 1, both values in the one error line.
    let err = assert_one_line_error(
        &[
            "wrmsr",
            "IA32_PAT",
            "--set-bits",
            "0x02",
            "--clear-bits",
            "0x07",
        ],
        1,
    );
    assert!(
        err.contains("IA32_PAT (0x277): 0x0007040600070406 -> 0x0007040600070402: PULSE_STATUS_EXCEPTION_GENERAL_PROTECTION"),
        "{err}"
    );
    // An MSR that does not exist: the read fails, nothing is written.
    let err = assert_one_line_error(&["wrmsr", "0x40001234", "--set-bits", "1"], 1);
    assert!(
        err.contains("rmw MSR 0x40001234: PULSE_STATUS_EXCEPTION_GENERAL_PROTECTION"),
        "{err}"
    );
}

#[test]
fn cpus_by_index_and_all_running_cpus() {
    // Four CPUs, two of them running.
    let sim = "sim?cpus=4&online=2";
    let out = pulse(&["-t", sim, "-p", "1", "rdmsr", "IA32_EFER"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "IA32_EFER (0xc0000080) on CPU 1 = 0x0000000000000d01\n"
    );
    let help = stdout(&pulse(&["--help"]));
    let code = |name| documented_exit_code(&help, name);
    let err = assert_one_line_error(
        &["-t", sim, "-p", "3", "rdmsr", "IA32_EFER"],
        code("PULSE_STATUS_BARRIER_OWNER_INACTIVE"),
    );
    assert!(
        err.starts_with("pulse: switch to CPU 3: PULSE_STATUS_BARRIER_OWNER_INACTIVE"),
        "{err}"
    );
    let err = assert_one_line_error(
        &["-t", sim, "--cpu=4", "wrmsr", "IA32_LSTAR", "0"],
        code("PULSE_STATUS_BARRIER_NO_CPU"),
    );
    assert!(
        err.starts_with("pulse: switch to CPU 4: PULSE_STATUS_BARRIER_NO_CPU"),
        "{err}"
    );

    // -a: a plain write is one request for every running CPU; the
    // read-back and reads go CPU by CPU.
    let out = pulse(&[
        "-t",
        sim,
        "-a",
        "wrmsr",
        "IA32_LSTAR",
        "0xfffff80012345000",
        "--read-back",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "IA32_LSTAR (0xc0000082) on every running CPU <- 0xfffff80012345000: PULSE_STATUS_SUCCESS\n\
         IA32_LSTAR (0xc0000082) on CPU 0 = 0xfffff80012345000\n\
         IA32_LSTAR (0xc0000082) on CPU 1 = 0xfffff80012345000\n"
    );
    let out = pulse(&["-t", sim, "--all-cpus", "-x", "rdmsr", "IA32_EFER"]);
    assert_eq!(stdout(&out), "0x0000000000000d01\n0x0000000000000d01\n");
    // All or nothing: a value one CPU refuses changes none.
    let out = pulse(&[
        "-t",
        sim,
        "--json",
        "-a",
        "wrmsr",
        "IA32_PAT",
        "0x0202020202020202",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).starts_with(
            r#"{"op":"wrmsr","cpu":"all","msr":"0x00000277","name":"IA32_PAT","status":"PULSE_STATUS_EXCEPTION_GENERAL_PROTECTION""#
        ),
        "{}",
        stdout(&out)
    );
    // A read-modify-write runs on each CPU: one read and one write there.
    let out = pulse(&["-t", sim, "-a", "wrmsr", "IA32_DEBUGCTL", "--set-bits", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "IA32_DEBUGCTL (0x1d9) on CPU 0: 0x0000000000000000 -> 0x0000000000000001: PULSE_STATUS_SUCCESS\n\
         IA32_DEBUGCTL (0x1d9) on CPU 1: 0x0000000000000000 -> 0x0000000000000001: PULSE_STATUS_SUCCESS\n"
    );

    // In a shell, -p N makes N the current CPU for the later lines too, and
    // -a comes back to it.
    let script = "wrmsr -p 1 IA32_LSTAR 0xfffff80000001000\n\
                  rdmsr IA32_LSTAR -x\n\
                  -a rdmsr IA32_LSTAR -x\n\
                  rdmsr IA32_LSTAR --json\n\
                  rdmsr -p 0 IA32_LSTAR -x\n";
    let out = pulse_with_stdin(&["-t", sim, "shell"], script);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let sim_lstar = lines[5].to_owned();
    assert_eq!(
        lines[..5],
        [
            "IA32_LSTAR (0xc0000082) on CPU 1 <- 0xfffff80000001000: PULSE_STATUS_SUCCESS",
            "0xfffff80000001000",
            &sim_lstar,
            "0xfffff80000001000",
            r#"{"op":"rdmsr","msr":"0xc0000082","name":"IA32_LSTAR","status":"PULSE_STATUS_SUCCESS","code":"0x00000000","value":"0xfffff80000001000"}"#,
        ]
    );
    assert_ne!(sim_lstar, "0xfffff80000001000", "CPU 0 kept its own LSTAR");
    assert_eq!(lines.len(), 6);
}

#[test]
fn cpus_lists_which_cpus_run_and_the_current_one() {
    let out = pulse(&["-t", "sim?cpus=4&online=2", "cpus"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "CPU 0  running  (current)\n\
         CPU 1  running\n\
         CPU 2  not running\n\
         CPU 3  not running\n"
    );
    let out = pulse(&["-t", "sim?cpus=3", "--json", "cpus"]);
    assert_eq!(
        stdout(&out),
        "{\"op\":\"cpus\",\"status\":\"PULSE_STATUS_SUCCESS\",\"code\":\"0x00000000\",\"count\":3,\"running\":[0,1,2],\"current\":0}\n"
    );
    // In a shell, after -p 1.
    let out = pulse_with_stdin(
        &["-t", "sim?cpus=2", "shell"],
        "rdmsr -p 1 -x IA32_EFER\ncpus\n",
    );
    assert_eq!(
        stdout(&out),
        "0x0000000000000d01\nCPU 0  running\nCPU 1  running  (current)\n"
    );
    assert_one_line_error(&["-p", "1", "cpus"], 2);
    assert_one_line_error(&["cpus", "extra"], 2);
    let err = assert_one_line_error(&["cpus", "-t", "serial:/dev/pulse-no-such-device"], 6);
    assert!(err.contains("PULSE_STATUS_NO_SUCH_DEVICE"), "{err}");
}

#[test]
fn json_covers_command_line_errors() {
    for (args, message) in [
        (
            &["--json", "rdmsr", "IA32_NOPE"][..],
            "unknown MSR name `IA32_NOPE`",
        ),
        (&["--json", "frob"], "unknown command `frob`"),
        (&["--json", "-a", "msrs"], "msrs probes one CPU"),
    ] {
        let out = pulse(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(stderr(&out), "", "{args:?}");
        let text = stdout(&out);
        assert!(text.starts_with(r#"{"op":"usage","message":""#), "{text}");
        assert!(text.contains(message), "{text}");
        assert_eq!(text.lines().count(), 1, "{text}");
    }
}

#[test]
fn msrs_lists_only_what_the_debuggee_has() {
    // BNDCFGS (MPX) is absent on the default `modern` profile, present on `full`.
    let modern = stdout(&pulse(&["msrs"]));
    let full = stdout(&pulse(&["msrs", "-t", "sim?cpu=full"]));
    let all = stdout(&pulse(&["msrs", "--all-names"]));
    assert!(modern.contains("0xc0000080  IA32_EFER"), "{modern}");
    assert!(!modern.contains("IA32_BNDCFGS"), "{modern}");
    assert!(full.contains("0x00000d90  IA32_BNDCFGS"), "{full}");
    assert!(all.contains("0x00000d90  IA32_BNDCFGS"), "{all}");
    assert!(modern.lines().count() < all.lines().count());
    // Every listed MSR reads on that debuggee.
    for line in modern.lines() {
        let number = line.split_whitespace().next().unwrap();
        let out = pulse(&["rdmsr", number]);
        assert_eq!(out.status.code(), Some(0), "{line}: {}", stderr(&out));
    }
    let json = stdout(&pulse(&["--json", "msrs"]));
    assert!(json.contains(r#"{"msr":"0xc0000080","name":"IA32_EFER","guest_applied":true,"value":"0x0000000000000d01"}"#), "{json}");
    // A debuggee that cannot be reached: the open error and its exit status.
    let err = assert_one_line_error(&["msrs", "-t", "serial:/dev/pulse-no-such-device"], 6);
    assert!(err.contains("PULSE_STATUS_NO_SUCH_DEVICE"), "{err}");
}

#[test]
fn shell_runs_many_commands_on_one_engine() {
    // On `sim` a second run would start from scratch: the read-back on a
    // later line proves the lines share one engine.
    let script = "# set up\n\
                  wrmsr IA32_LSTAR 0xfffff80012345000\n\
                  \n\
                  rdmsr c0000082 -x   # bare hex, value only\n\
                  wrmsr IA32_DEBUGCTL --set-bits 1\n\
                  rdmsr 0x40001234\n\
                  frobnicate\n\
                  -t sim rdmsr 1\n\
                  rdmsr IA32_DEBUGCTL\n\
                  quit\n\
                  rdmsr IA32_EFER\n";
    let out = pulse_with_stdin(&["shell"], script);
    // The first failure (#GP on line 6) decides the exit status.
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "IA32_LSTAR (0xc0000082) <- 0xfffff80012345000: PULSE_STATUS_SUCCESS\n\
         0xfffff80012345000\n\
         IA32_DEBUGCTL (0x1d9): 0x0000000000000000 -> 0x0000000000000001: PULSE_STATUS_SUCCESS\n\
         IA32_DEBUGCTL (0x1d9) = 0x0000000000000001\n"
    );
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0]
            .starts_with("pulse: rdmsr MSR 0x40001234: PULSE_STATUS_EXCEPTION_GENERAL_PROTECTION"),
        "{err}"
    );
    assert!(
        lines[1].starts_with("pulse: line 7: unknown command `frobnicate`"),
        "{err}"
    );
    assert!(
        lines[2].starts_with("pulse: line 8: -t goes on the `pulse` command line"),
        "{err}"
    );

    // From a file, with JSON for every result and every error.
    let dir = std::env::temp_dir().join(format!("pulse-cli-shell-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("commands.txt");
    std::fs::write(
        &file,
        "wrmsr IA32_PAT 0x0202020202020202\nrdmsr nope\nrdmsr IA32_PAT\n",
    )
    .unwrap();
    let out = pulse(&["--json", "shell", file.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "");
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].contains(r#""op":"wrmsr","msr":"0x00000277","name":"IA32_PAT","status":"PULSE_STATUS_EXCEPTION_GENERAL_PROTECTION""#), "{}", lines[0]);
    assert!(
        lines[1].starts_with(r#"{"op":"usage","line":2,"message":"unknown MSR name `nope`"#),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].ends_with(r#""value":"0x0007040600070406"}"#),
        "{}",
        lines[2]
    );

    // A file that cannot be read is a usage error.
    assert_one_line_error(&["shell", "/nonexistent/pulse-commands"], 2);
}

/// Accepts exactly one client and relays it to `target`, then stops
/// listening, as Bochs's COM1 socket does: a second connection is refused.
fn one_client_relay(target: &str) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    let target = target.strip_prefix("tcp:").unwrap().to_owned();
    std::thread::spawn(move || {
        let (client, _) = listener.accept().unwrap();
        count.fetch_add(1, Ordering::SeqCst);
        drop(listener);
        let server = TcpStream::connect(&target).unwrap();
        let pipe = |mut from: TcpStream, mut to: TcpStream| {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = from.read(&mut buf) {
                    if n == 0 || to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = to.shutdown(std::net::Shutdown::Both);
            })
        };
        pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
        pipe(server, client);
    });
    (format!("tcp:{addr}"), accepted)
}

#[test]
fn shell_needs_one_connection_for_a_single_client_debuggee() {
    let sim = support::SimProcess::start(&["--listen", "127.0.0.1:0"]);
    let (transport, accepted) = one_client_relay(&sim.transport);
    let script = "wrmsr IA32_LSTAR 0xfffff80012345000\n\
                  rdmsr IA32_LSTAR -x\n\
                  wrmsr IA32_SYSENTER_CS 0xdeadbeef00000010\n\
                  rdmsr IA32_SYSENTER_CS -x\n\
                  msrs\n";
    let out = pulse_with_stdin(&["-t", &transport, "shell"], script);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with(
            "IA32_LSTAR (0xc0000082) <- 0xfffff80012345000: PULSE_STATUS_SUCCESS\n\
             0xfffff80012345000\n\
             IA32_SYSENTER_CS (0x174) <- 0xdeadbeef00000010: PULSE_STATUS_SUCCESS\n\
             0x0000000000000010\n"
        ),
        "{text}"
    );
    assert!(text.contains("0xc0000080  IA32_EFER"), "{text}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    // The debuggee takes no second client: separate runs would fail.
    let out = pulse(&[
        "-t",
        &transport,
        "--timeout",
        "100",
        "--attempts",
        "1",
        "rdmsr",
        "IA32_LSTAR",
    ]);
    assert_ne!(out.status.code(), Some(0));
}

#[test]
fn hv_stub_sim_help_prints_usage_and_exits_0() {
    for flag in ["--help", "-h"] {
        let out = Command::new(support::hv_stub_sim_exe())
            .arg(flag)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{flag}");
        let text = stdout(&out);
        assert!(text.contains("usage: hv-stub-sim"), "{text}");
        assert!(
            text.contains("--listen") && text.contains("--pty"),
            "{text}"
        );
        assert_eq!(stderr(&out), "");
    }
}

#[test]
fn demo_sh_help_prints_usage_and_exits_0() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo.sh");
    for flag in ["--help", "-h"] {
        let out = Command::new("bash").arg(script).arg(flag).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{flag}");
        let text = stdout(&out);
        assert!(
            text.contains("Usage: scripts/demo.sh [TRANSPORT]"),
            "{text}"
        );
        assert_eq!(stderr(&out), "");
    }
    let out = Command::new("bash")
        .arg(script)
        .args(["a", "b"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn failures_carry_libpulse_precise_message_in_text_and_json() {
    let help = stdout(&pulse(&["--help"]));
    let code = |name| documented_exit_code(&help, name);
    // A URL-style string: a usage error naming what is wrong.
    let err = assert_one_line_error(&["-t", "tcp://127.0.0.1:5555", "rdmsr", "0x10"], 2);
    assert_eq!(
        err,
        "pulse: transport string `tcp://127.0.0.1:5555` is malformed: write `tcp:<host>:<port>`, without `//`\n"
    );
    let out = pulse(&["--json", "-t", "tcp://127.0.0.1:5555", "rdmsr", "0x10"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stdout(&out),
        "{\"op\":\"usage\",\"message\":\"transport string `tcp://127.0.0.1:5555` is malformed: write `tcp:<host>:<port>`, without `//`\"}\n"
    );
    // A missing device: named, with the OS's reason, in both forms.
    let device = ["-t", "serial:/dev/pulse-no-such-tty", "rdmsr", "0x10"];
    let err = assert_one_line_error(&device, code("PULSE_STATUS_NO_SUCH_DEVICE"));
    assert!(
        err.contains("PULSE_STATUS_NO_SUCH_DEVICE (0xC000000E): cannot open serial device `/dev/pulse-no-such-tty`: No such file or directory"),
        "{err}"
    );
    let out = pulse(&[&["--json"][..], &device].concat());
    assert_eq!(stderr(&out), "");
    let json = stdout(&out);
    assert!(
        json.starts_with("{\"op\":\"open\",\"transport\":\"serial:/dev/pulse-no-such-tty\",\"status\":\"PULSE_STATUS_NO_SUCH_DEVICE\""),
        "{json}"
    );
    assert!(
        json.contains("\"message\":\"cannot open serial device `/dev/pulse-no-such-tty`: No such file or directory"),
        "{json}"
    );
    // A missing CPU.
    let err = assert_one_line_error(
        &["-t", "sim?cpus=2", "-p", "5", "rdmsr", "0x10"],
        code("PULSE_STATUS_BARRIER_NO_CPU"),
    );
    assert!(
        err.ends_with("the debuggee has no CPU 5 (it has 2: 0 to 1)\n"),
        "{err}"
    );
}
