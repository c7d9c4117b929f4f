//! The shortest path end to end on the `sim` target: handshake, a write of
//! a guest-applied MSR, the guest's own view, a read back, a #GP.

use hv_stub::msr::index::*;
use pulse::{Engine, EngineConfig, Status};

#[test]
fn write_then_guest_sees_it_and_read_agrees() {
    let engine = Engine::open(&EngineConfig::new("sim")).expect("sim engine");
    engine.write_msr(IA32_LSTAR, 0xFFFF_F800_1234_5000).unwrap();
    engine
        .write_msr(IA32_SYSENTER_CS, 0xDEAD_BEEF_0000_0010)
        .unwrap();
    let target = engine.sim_target().unwrap();
    let seen = *target.lock().observation().unwrap();
    assert_eq!(seen.get(IA32_LSTAR), Some(0xFFFF_F800_1234_5000));
    assert_eq!(seen.get(IA32_SYSENTER_CS), Some(0x10));
    assert_eq!(engine.read_msr(IA32_SYSENTER_CS), Ok(0x10));
    assert_eq!(engine.read_msr(IA32_LSTAR), Ok(0xFFFF_F800_1234_5000));
    assert_eq!(
        engine.write_msr(0x1234_5678, 1).map_err(|e| e.status()),
        Err(Status::EXCEPTION_GENERAL_PROTECTION)
    );
    assert_eq!(
        engine
            .write_msr(IA32_PAT, 0x0202_0202_0202_0202)
            .map_err(|e| e.status()),
        Err(Status::EXCEPTION_GENERAL_PROTECTION)
    );
    assert!(target.lock().last_entry_failure().is_none());
}
