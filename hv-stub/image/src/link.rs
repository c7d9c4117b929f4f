//! The debugger link: COM1 polled from VM exits and fed to the shared
//! `hv_stub::Stub`, and how often the VMX-preemption timer makes an exit
//! for it. Without a UART at COM1 there is no link and the guest runs
//! undisturbed.

use hv_stub::Stub;

use crate::backend::Machine;
use crate::uart::Uart;

/// Polls of an idle UART before a partly received frame is left for the
/// next exit.
const IDLE_POLLS: u32 = 20_000;

/// How far the poll period backs off while the guest is halted and the
/// line is quiet: 64 x the base period.
pub const MAX_BACKOFF_SHIFT: u32 = 6;

/// The VMX-preemption-timer period. A halted guest with a quiet line is
/// polled less and less often (doubling up to 64 x the base), because each
/// poll interrupts the idle processor for nothing (under Bochs a Linux
/// guest's idle second is billions of TSC ticks: at the base period its
/// `sleep 1` took 4 x longer than bare); any received byte, or a guest that
/// runs, brings the base period back.
pub struct PollPeriod {
    base_ticks: u64,
    shift: u32,
}

impl PollPeriod {
    pub fn new(base_ticks: u64) -> PollPeriod {
        PollPeriod {
            base_ticks,
            shift: 0,
        }
    }

    /// The period for the next VM entry, after an exit where the line was
    /// `busy` (bytes received) or not, and the guest `halted` or not.
    pub fn next(&mut self, busy: bool, halted: bool) -> u64 {
        self.shift = if busy || !halted {
            0
        } else {
            (self.shift + 1).min(MAX_BACKOFF_SHIFT)
        };
        self.base_ticks << self.shift
    }
}

pub struct Link {
    pub stub: Stub<Machine>,
    uart: Option<Uart>,
}

impl Link {
    pub fn new(stub: Stub<Machine>, uart: Option<Uart>) -> Link {
        Link { stub, uart }
    }

    pub fn has_uart(&self) -> bool {
        self.uart.is_some()
    }

    /// Drains COM1 into the request handler. Once a byte arrives, keeps
    /// polling until the response is out and the line is quiet (the client
    /// is stop-and-wait), or until the line stays idle. Returns whether any
    /// byte arrived.
    pub fn serve(&mut self) -> bool {
        let Some(uart) = self.uart.as_mut() else {
            return false;
        };
        let mut active = false;
        let mut replied = false;
        let mut idle = 0u32;
        loop {
            if let Some(byte) = uart.try_read() {
                active = true;
                idle = 0;
                self.stub.feed(&[byte], |response| {
                    uart.write_all(response);
                    replied = true;
                });
                continue;
            }
            if !active || replied {
                return active;
            }
            idle += 1;
            if idle > IDLE_POLLS {
                // Quiet with a frame half received: what a client left
                // behind when it stopped (e.g. `a5 20`, which would swallow
                // the next client's Hello). Dropped, never executed.
                self.stub.line_idle();
                return true;
            }
        }
    }

    /// After the link processor's guest stopped for good: serve the link
    /// forever (the debugger sees the processor stopped), or halt without
    /// one.
    pub fn serve_forever(&mut self) -> ! {
        loop {
            if self.uart.is_some() {
                let _ = self.serve();
            } else {
                crate::cpu::halt();
            }
        }
    }
}
