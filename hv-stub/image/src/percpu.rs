//! Which processors hv-stub runs on: each has an index (0 = the boot
//! processor, then the application processors by APIC ID), its APIC ID, and
//! the state of its guest as the debugger sees it. Everything else a
//! processor owns (VMX pages, descriptor tables, exit state, routing
//! backend) lives in arrays indexed the same way and is touched only by
//! that processor.

use core::sync::atomic::{AtomicU32, AtomicU8, AtomicUsize, Ordering};

use hv_stub::cpus::CpuState;

use crate::cpu;

/// The most processors the image brings up (each costs ~220 KiB of `.bss`);
/// run-bochs.sh refuses more.
pub const MAX_CPUS: usize = 8;

const RUNNING: u8 = 0;
const NOT_STARTED: u8 = 1;
const STOPPED: u8 = 2;

static COUNT: AtomicUsize = AtomicUsize::new(1);
static APIC_IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static STATES: [AtomicU8; MAX_CPUS] = [const { AtomicU8::new(NOT_STARTED) }; MAX_CPUS];

/// This processor's initial APIC ID (CPUID.1:EBX[31:24]).
pub fn apic_id() -> u32 {
    cpu::cpuid(1, 0).ebx >> 24
}

/// Records the processors: `apic_ids[i]` is processor i's.
pub fn set_processors(apic_ids: &[u32]) {
    for (slot, &id) in APIC_IDS.iter().zip(apic_ids) {
        slot.store(id, Ordering::SeqCst);
    }
    COUNT.store(apic_ids.len().min(MAX_CPUS), Ordering::SeqCst);
}

pub fn count() -> usize {
    COUNT.load(Ordering::SeqCst)
}

/// The index of the processor with APIC ID `id`, if hv-stub runs on it.
pub fn index_of(id: u32) -> Option<usize> {
    (0..count()).find(|&i| APIC_IDS[i].load(Ordering::Relaxed) == id)
}

/// The APIC ID of processor `cpu`.
pub fn apic_id_of(cpu: usize) -> Option<u32> {
    (cpu < count()).then(|| APIC_IDS[cpu].load(Ordering::Relaxed))
}

/// The index of the processor executing this (0 before the others are
/// recorded, when only the boot processor runs hv-stub code).
pub fn current() -> usize {
    index_of(apic_id()).unwrap_or(0)
}

pub fn state(cpu: usize) -> CpuState {
    match STATES.get(cpu).map(|s| s.load(Ordering::SeqCst)) {
        Some(RUNNING) => CpuState::Running,
        Some(STOPPED) => CpuState::Stopped,
        _ => CpuState::NotStarted,
    }
}

pub fn set_state(cpu: usize, state: CpuState) {
    let value = match state {
        CpuState::Running => RUNNING,
        CpuState::NotStarted => NOT_STARTED,
        CpuState::Stopped => STOPPED,
    };
    if let Some(slot) = STATES.get(cpu) {
        slot.store(value, Ordering::SeqCst);
    }
}
