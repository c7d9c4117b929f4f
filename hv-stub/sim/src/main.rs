//! `hv-stub-sim`: the hv-stub core on the software VMX model, served over
//! TCP or a pseudo-terminal.
//!
//!     hv-stub-sim --listen 127.0.0.1:5555 [--cpu PROFILE] [--key-file PATH]
//!     hv-stub-sim --pty [--cpu PROFILE] [--key-file PATH]
//!
//! With `--key-file` (64 hex digits, optionally a newline) it answers only
//! clients that prove the key (docs/SECURITY.md); a key file it cannot use
//! stops it before it listens.
//!
//! Prints one line saying where it is reachable (`listening tcp:ADDR` or
//! `listening serial:PATH`), then serves until killed.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use hv_stub::CpuCaps;

enum Mode {
    Tcp(String),
    Pty,
}

fn usage_text() -> String {
    let profiles: Vec<&str> = CpuCaps::PROFILES.iter().map(|c| c.name).collect();
    format!(
        "usage: hv-stub-sim (--listen HOST:PORT | --pty) [--cpu PROFILE] [--key-file PATH]\nprofiles: {}",
        profiles.join(", ")
    )
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("hv-stub-sim: {problem}");
    eprintln!("{}", usage_text());
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut mode = None;
    let mut cpu = CpuCaps::MODERN;
    let mut key_file = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => match args.next() {
                Some(addr) => mode = Some(Mode::Tcp(addr)),
                None => return usage("--listen needs HOST:PORT"),
            },
            "--pty" => mode = Some(Mode::Pty),
            "--cpu" => match args.next().as_deref().and_then(CpuCaps::by_name) {
                Some(caps) => cpu = caps,
                None => return usage("--cpu needs a known profile"),
            },
            "--key-file" => match args.next() {
                Some(path) => key_file = Some(path),
                None => return usage("--key-file needs PATH"),
            },
            "-h" | "--help" => {
                println!("{}", usage_text());
                return ExitCode::SUCCESS;
            }
            other => return usage(&format!("unknown argument `{other}`")),
        }
    }
    let Some(mode) = mode else {
        return usage("choose --listen or --pty");
    };
    let target = match key_file {
        None => hv_stub_sim::new_target(cpu),
        Some(path) => match hv_stub_sim::read_key_file(&path) {
            Ok(key) => hv_stub_sim::new_keyed_target(cpu, key),
            Err(problem) => {
                eprintln!("hv-stub-sim: {problem}");
                return ExitCode::from(2);
            }
        },
    };
    let stop = Arc::new(AtomicBool::new(false));
    let result = match mode {
        Mode::Tcp(addr) => match std::net::TcpListener::bind(&addr) {
            Ok(listener) => {
                let local = listener.local_addr().map(|a| a.to_string()).unwrap_or(addr);
                announce(&format!("listening tcp:{local}"));
                hv_stub_sim::serve_tcp(target, listener, stop);
                Ok(())
            }
            Err(e) => Err(format!("cannot listen on {addr}: {e}")),
        },
        Mode::Pty => match hv_stub_sim::PtyServer::new() {
            Ok(server) => {
                announce(&format!("listening serial:{}", server.slave_path()));
                server.serve(target, stop).map_err(|e| format!("pty: {e}"))
            }
            Err(e) => Err(format!("cannot open a pseudo-terminal: {e}")),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("hv-stub-sim: {message}");
            ExitCode::FAILURE
        }
    }
}

fn announce(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
