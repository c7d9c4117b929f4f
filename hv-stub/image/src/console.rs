//! The debug console: Bochs's port 0xE9 (bytes appear on its stdout at once),
//! and Bochs's shutdown port. On real hardware port 0xE9 is usually unused and
//! the writes go nowhere.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::port::outb;

pub const PORT_E9: u16 = 0xE9;

/// `core::fmt` sink that writes to port 0xE9.
pub struct E9;

impl core::fmt::Write for E9 {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            outb(PORT_E9, b);
        }
        Ok(())
    }
}

/// `say!("...")`: one line on the debug console, whole (several processors
/// and their guests print).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        $crate::console::whole_line(|| {
            let _ = writeln!($crate::console::E9, $($arg)*);
        });
    }};
}

/// Who prints: 0 nobody, else the printing processor's APIC ID | 0x100.
static PRINTING: AtomicU32 = AtomicU32::new(0);
/// Spins before a line is printed anyway (a guest that stopped mid-line
/// must not silence the others).
const PATIENCE: u32 = 10_000_000;

/// Runs `print` while no other processor prints. The same processor may
/// re-enter (its host printing at a VM exit that interrupted its guest
/// mid-line).
pub fn whole_line(print: impl FnOnce()) {
    let me = crate::cpu::cpuid(1, 0).ebx >> 24 | 0x100;
    let mut acquired = false;
    for _ in 0..PATIENCE {
        match PRINTING.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => {
                acquired = true;
                break;
            }
            Err(owner) if owner == me => break,
            Err(_) => core::hint::spin_loop(),
        }
    }
    print();
    if acquired {
        PRINTING.store(0, Ordering::Release);
    }
}

/// Powers Bochs off (its 0x8900 shutdown port); halts forever elsewhere.
pub fn shutdown() -> ! {
    for &b in b"Shutdown" {
        outb(0x8900, b);
    }
    loop {
        crate::cpu::halt();
    }
}
