//! The main job: connect to a debuggee (the simulated one by default),
//! write a few guest-applied MSRs and show what the guest now sees.
//!
//!     cargo run --release --bin pulse-demo [-- TRANSPORT]

use std::process::ExitCode;

use hv_stub::msr::index::*;
use hv_stub::routing::route_of;
use pulse::{Engine, EngineConfig, Status};

const GP: Status = Status::EXCEPTION_GENERAL_PROTECTION;

/// (MSR, value, what happens, expected status)
const STEPS: [(u32, u64, &str, Status); 5] = [
    (
        IA32_LSTAR,
        0xFFFF_F800_0123_4000,
        "shared MSR: WRMSR in VMX-root mode",
        Status::SUCCESS,
    ),
    (
        IA32_SYSENTER_CS,
        0xDEAD_BEEF_0000_0010,
        "VMCS guest field, 32 bits wide",
        Status::SUCCESS,
    ),
    (
        IA32_PAT,
        0x0007_0106_0007_0106,
        "VMCS guest field (load IA32_PAT = 1)",
        Status::SUCCESS,
    ),
    (
        IA32_PAT,
        0x0202_0202_0202_0202,
        "memory type 2 is reserved: refused",
        GP,
    ),
    (0x4000_1234, 1, "no such MSR", GP),
];

fn name(msr: u32) -> String {
    route_of(msr).map_or(format!("MSR {msr:#x}"), |r| r.name.to_owned())
}

fn main() -> ExitCode {
    let transport = std::env::args().nth(1).unwrap_or_else(|| "sim".to_owned());
    let engine = match Engine::open(&EngineConfig::new(&transport)) {
        Ok(engine) => engine,
        Err(error) => {
            eprintln!("pulse-demo: cannot open `{transport}`: {}", error.status());
            return ExitCode::FAILURE;
        }
    };
    println!("libpulse demo on `{transport}`");
    let mut unexpected = 0;
    for (msr, value, why, expected) in STEPS {
        let status = match engine.write_msr(msr, value) {
            Ok(()) => Status::SUCCESS,
            Err(error) => error.status(),
        };
        println!("PsWriteMsr({}, {value:#018x})  [{why}]", name(msr));
        println!("    -> {}", status.name().unwrap_or("?"));
        if status != expected {
            unexpected += 1;
        }
        if !status.is_success() {
            continue;
        }
        match engine.read_msr(msr) {
            Ok(v) => println!("    PsReadMsr: the guest reads {v:#018x}"),
            Err(error) => println!("    PsReadMsr: {}", error.status()),
        }
        if let Some(target) = engine.sim_target() {
            let target = target.lock();
            if let Some(seen) = target.observation().and_then(|o| o.get(msr)) {
                println!("    observer guest, after VM entry, RDMSR = {seen:#018x}");
            }
        }
    }
    if unexpected == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
