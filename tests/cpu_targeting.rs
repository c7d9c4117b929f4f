//! CPU targeting end to end on `sim` (DESIGN section 1.1): the current CPU,
//! PsSwitchCpu's rules and errors, per-CPU isolation as each CPU's guest
//! sees it, all-or-nothing all-CPU writes, `online`, and many threads
//! switching and writing on one engine; the same through the C ABI.

use std::ffi::CString;
use std::sync::Arc;

use hv_stub::cpus::CpuState;
use hv_stub::msr::index::*;
use hv_stub::routing::TABLE;
use pulse::ffi::*;
use pulse::{Engine, EngineConfig, Status};

fn sim(transport: &str) -> Engine {
    Engine::open(&EngineConfig::new(transport)).expect("sim engine")
}

/// What CPU `cpu`'s guest read with its own RDMSR during its latest run.
fn guest_view(engine: &Engine, cpu: usize, msr: u32) -> Option<u64> {
    let target = engine.sim_target().unwrap();
    let target = target.lock();
    target.observation_of(cpu).and_then(|o| o.get(msr))
}

#[test]
fn four_running_cpus_by_default_and_cpu_0_is_current() {
    let engine = sim("sim");
    let info = engine.cpu_info().unwrap();
    assert_eq!((info.count, info.running), (4, 0b1111));
    assert_eq!(engine.current_cpu(), 0);
}

#[test]
fn switching_rules_and_errors() {
    let engine = sim("sim?cpus=4&online=2");
    let info = engine.cpu_info().unwrap();
    assert_eq!((info.count, info.running), (4, 0b0011));
    assert_eq!(
        engine.switch_cpu(0),
        Ok(pulse::engine::Switched::AlreadyCurrent)
    );
    assert_eq!(
        engine.switch_cpu(4).map_err(|e| e.status()),
        Err(Status::BARRIER_NO_CPU)
    );
    assert_eq!(
        engine.switch_cpu(u64::MAX).map_err(|e| e.status()),
        Err(Status::BARRIER_NO_CPU)
    );
    assert_eq!(
        engine.switch_cpu(2).map_err(|e| e.status()),
        Err(Status::BARRIER_OWNER_INACTIVE)
    );
    assert_eq!(engine.current_cpu(), 0, "errors leave the current CPU");
    assert_eq!(engine.switch_cpu(1), Ok(pulse::engine::Switched::Switched));
    assert_eq!(engine.current_cpu(), 1);
    // The OS starts CPU 2: now it can be chosen.
    let target = engine.sim_target().unwrap();
    target.lock().cpus_mut().set_state(2, CpuState::Running);
    assert_eq!(engine.switch_cpu(2), Ok(pulse::engine::Switched::Switched));
    // It stops again: calls on it say so, and switching away still works.
    target.lock().cpus_mut().set_state(2, CpuState::Stopped);
    assert_eq!(
        engine.write_msr(IA32_LSTAR, 0).map_err(|e| e.status()),
        Err(Status::BARRIER_OWNER_INACTIVE)
    );
    assert_eq!(
        engine.read_msr(IA32_LSTAR).map_err(|e| e.status()),
        Err(Status::BARRIER_OWNER_INACTIVE)
    );
    assert_eq!(
        engine.switch_cpu(2),
        Ok(pulse::engine::Switched::AlreadyCurrent)
    );
    assert_eq!(engine.switch_cpu(0), Ok(pulse::engine::Switched::Switched));
}

#[test]
fn a_write_on_one_cpu_is_seen_by_that_cpus_guest_only() {
    let engine = sim("sim?cpus=3");
    for route in TABLE {
        let msr = route.msr;
        // A value each routed MSR accepts on the default profile and that
        // differs from its power-on value, when there is one.
        let value = match msr {
            IA32_SYSENTER_CS => 0x23,
            IA32_PAT => 0x0006_0406_0007_0406,
            IA32_EFER => 0x501, // NXE off, LME/LMA kept
            IA32_SMBASE | IA32_FEATURE_CONTROL => continue,
            IA32_DEBUGCTL => 1,
            IA32_PERF_GLOBAL_CTRL => 3,
            IA32_RTIT_CTL => 0x2100,
            IA32_PKRS => 0x5555_5554,
            IA32_S_CET => 4,
            IA32_BNDCFGS => continue, // absent on `modern`
            IA32_STAR => 0x0023_0010_0000_0000 | 0x1234,
            IA32_FMASK | IA32_TSC_AUX => 0x4_7701,
            _ => 0xFFFF_F800_0042_0000,
        };
        engine.switch_cpu(1).unwrap();
        let before: Vec<_> = (0..3)
            .map(|cpu| {
                engine.switch_cpu(cpu).unwrap();
                engine.read_msr(msr).unwrap()
            })
            .collect();
        engine.switch_cpu(1).unwrap();
        engine
            .write_msr(msr, value)
            .unwrap_or_else(|s| panic!("{msr:#x}: {s}"));
        let written = engine.read_msr(msr).unwrap();
        assert_ne!(written, before[1], "{msr:#x} changes on CPU 1");
        if msr != IA32_SMBASE {
            assert_eq!(guest_view(&engine, 1, msr), Some(written), "{msr:#x}");
        }
        for cpu in [0, 2] {
            engine.switch_cpu(cpu).unwrap();
            assert_eq!(
                engine.read_msr(msr).unwrap(),
                before[cpu as usize],
                "{msr:#x}"
            );
            assert_eq!(
                guest_view(&engine, cpu as usize, msr),
                Some(before[cpu as usize])
            );
        }
    }
}

#[test]
fn all_cpu_write_is_all_or_nothing_and_skips_cpus_not_started() {
    let engine = sim("sim?cpus=4&online=3");
    let lstar = 0xFFFF_F800_0000_7000;
    engine.write_msr_all_cpus(IA32_LSTAR, lstar).unwrap();
    for cpu in 0..3 {
        assert_eq!(guest_view(&engine, cpu, IA32_LSTAR), Some(lstar));
    }
    let target = engine.sim_target().unwrap();
    let idle = target.lock().cpus().model(3).live_msr(IA32_LSTAR);
    assert_ne!(idle, Some(lstar), "CPU 3 is left to the OS");

    // CPU 2's guest traces (RTIT_CTL.TraceEn = 1): a change that keeps
    // TraceEn set is refused there, so it is refused everywhere.
    engine.switch_cpu(2).unwrap();
    engine.write_msr(IA32_RTIT_CTL, 0x2001).unwrap();
    engine.switch_cpu(0).unwrap();
    let snapshot: Vec<_> = (0..4)
        .map(|cpu| target.lock().cpus().model(cpu).state())
        .collect();
    assert_eq!(
        engine
            .write_msr_all_cpus(IA32_RTIT_CTL, 0x2101)
            .map_err(|e| e.status()),
        Err(Status::EXCEPTION_GENERAL_PROTECTION)
    );
    for (cpu, before) in snapshot.iter().enumerate() {
        assert_eq!(
            &target.lock().cpus().model(cpu).state(),
            before,
            "cpu {cpu}"
        );
    }
    assert_eq!(engine.current_cpu(), 0);
    assert!(target.lock().last_entry_failure().is_none());
}

#[test]
fn bad_cpu_settings_in_the_transport_string() {
    for bad in [
        "sim?cpus=0",
        "sim?cpus=65",
        "sim?cpus=x",
        "sim?cpus=2&online=3",
        "sim?online=0",
    ] {
        assert_eq!(
            Engine::open(&EngineConfig::new(bad))
                .err()
                .map(|e| e.status()),
            Some(Status::INVALID_PARAMETER),
            "{bad}"
        );
    }
    let engine = sim("sim?cpu=skylake&cpus=2");
    assert_eq!(engine.cpu_info().unwrap().count, 2);
    let engine = sim("sim?cpus=64&online=64");
    assert_eq!(engine.cpu_info().unwrap().running, u64::MAX);
    engine.switch_cpu(63).unwrap();
    engine.write_msr(IA32_LSTAR, 0xFFFF_F800_0000_6300).unwrap();
    assert_eq!(
        guest_view(&engine, 63, IA32_LSTAR),
        Some(0xFFFF_F800_0000_6300)
    );
}

#[test]
fn many_threads_switch_and_write_on_one_engine() {
    // The current CPU is the engine's: threads that switch and write race
    // on it, but every write lands on some CPU whole, nothing is lost or
    // applied twice, and each CPU ends with a value some thread wrote.
    let engine = Arc::new(sim("sim?cpus=4"));
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let engine = Arc::clone(&engine);
            std::thread::spawn(move || {
                for i in 0..200u64 {
                    let cpu = (t + i) % 4;
                    match engine.switch_cpu(cpu) {
                        Ok(_) => {}
                        Err(s) => panic!("switch: {s}"),
                    }
                    let value = 0xFFFF_F800_0000_0000 | (t << 16) | i;
                    engine.write_msr(IA32_LSTAR, value).unwrap();
                    engine.write_msr_all_cpus(IA32_CSTAR, value).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let target = engine.sim_target().unwrap();
    let writes = target.lock().stub().stats().writes_executed;
    assert_eq!(writes, 8 * 200 * 2, "every write executed exactly once");
    let cstar: Vec<_> = (0..4).map(|c| guest_view(&engine, c, IA32_CSTAR)).collect();
    assert!(cstar.windows(2).all(|w| w[0] == w[1]), "{cstar:x?}");
}

#[test]
fn the_c_abi_for_cpus() {
    let transport = CString::new("sim?cpus=2&online=1").unwrap();
    let config = PS_ENGINE_CONFIG {
        Size: std::mem::size_of::<PS_ENGINE_CONFIG>() as u32,
        Transport: transport.as_ptr(),
        RequestTimeoutMs: 0,
        MaxAttempts: 0,
        pKey: std::ptr::null(),
        KeySize: 0,
    };
    let mut engine: PPS_ENGINE = std::ptr::null_mut();
    // SAFETY: valid config and out-pointer; every handle below is live
    // until EngDestroyEngine.
    unsafe {
        assert_eq!(EngCreateEngine(&config, &mut engine), 0);
        let mut count = 77u64;
        assert_eq!(PsGetCpuCount(engine, &mut count), 0);
        assert_eq!(count, 2);
        let mut current = 77u64;
        assert_eq!(PsGetCurrentCpu(engine, &mut current), 0);
        assert_eq!(current, 0);
        assert_eq!(PsSwitchCpu(engine, 0), Status::BARRIER_ALREADY_OWNED.0);
        assert_eq!(PsSwitchCpu(engine, 1), Status::BARRIER_OWNER_INACTIVE.0);
        assert_eq!(PsSwitchCpu(engine, 2), Status::BARRIER_NO_CPU.0);
        assert_eq!(
            PsWriteMsrAllCpus(engine, IA32_LSTAR, 0xFFFF_F800_0000_1000),
            0
        );
        assert_eq!(
            PsWriteMsrAllCpus(engine, IA32_LSTAR, 1 << 63),
            Status::EXCEPTION_GENERAL_PROTECTION.0
        );
        // NULL handles and out-pointers: INVALID_PARAMETER, nothing written.
        let invalid = Status::INVALID_PARAMETER.0;
        let mut untouched = 77u64;
        assert_eq!(PsGetCpuCount(engine, std::ptr::null_mut()), invalid);
        assert_eq!(PsGetCurrentCpu(engine, std::ptr::null_mut()), invalid);
        assert_eq!(PsGetCpuCount(std::ptr::null_mut(), &mut untouched), invalid);
        assert_eq!(
            PsGetCurrentCpu(std::ptr::null_mut(), &mut untouched),
            invalid
        );
        assert_eq!(untouched, 77);
        assert_eq!(PsSwitchCpu(std::ptr::null_mut(), 0), invalid);
        assert_eq!(
            PsWriteMsrAllCpus(std::ptr::null_mut(), IA32_LSTAR, 0),
            invalid
        );
        assert_eq!(EngDestroyEngine(engine), 0);
    }
}
