//! Entropy for the handshake nonces of an authenticated link: RDRAND where
//! CPUID says the processor has it, mixed with the TSC; the TSC alone
//! otherwise (docs/SECURITY.md says what each is worth, under Bochs too).

use crate::cpu;

/// CPUID.01H:ECX bit 30: RDRAND.
const CPUID_RDRAND: u32 = 1 << 30;
/// RDRAND may fail transiently (CF = 0); Intel advises a few retries.
const RDRAND_RETRIES: u32 = 10;

/// One sample: RDRAND's value xor the TSC, or the TSC.
pub fn sample() -> u64 {
    let tsc = cpu::rdtsc();
    match rdrand() {
        Some(value) => value ^ tsc.rotate_left(32),
        None => tsc,
    }
}

fn rdrand() -> Option<u64> {
    if cpu::cpuid(1, 0).ecx & CPUID_RDRAND == 0 {
        return None;
    }
    for _ in 0..RDRAND_RETRIES {
        let mut value = 0u64;
        // SAFETY: CPUID says the processor implements RDRAND; it only
        // writes `value` and the flags.
        if unsafe { core::arch::x86_64::_rdrand64_step(&mut value) } == 1 {
            return Some(value);
        }
    }
    None
}
