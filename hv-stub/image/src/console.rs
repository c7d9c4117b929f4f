//! The debug console: Bochs's port 0xE9 (bytes appear on its stdout at once),
//! and Bochs's shutdown port. On real hardware port 0xE9 is usually unused and
//! the writes go nowhere.

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

/// `say!("...")`: one line on the debug console.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::console::E9, $($arg)*);
    }};
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
