//! The debugger link: COM1 polled from VM exits and fed to the shared
//! `hv_stub::Stub`, and how often the VMX-preemption timer makes an exit
//! for it. Without a UART at COM1 there is no link and the guest runs
//! undisturbed.

use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use hv_stub::Stub;

use crate::backend::Machine;
use crate::uart::{self, Uart};

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

/// Bytes COM1 received while the link's processor waited for another
/// processor to run a request (the 16-byte receive FIFO would overflow
/// during a long wait if the client sends more requests meanwhile); served
/// before anything newer. Only the link's processor touches it.
struct Held {
    bytes: [AtomicU8; HELD],
    /// Bytes taken so far and bytes held so far (wrapping counters).
    taken: AtomicUsize,
    held: AtomicUsize,
}

const HELD: usize = 512;

static HELD_BYTES: Held = Held {
    bytes: [const { AtomicU8::new(0) }; HELD],
    taken: AtomicUsize::new(0),
    held: AtomicUsize::new(0),
};

/// While waiting for another processor, or for the transmitter: moves what
/// COM1 received into the held bytes (dropped when full; the client sends
/// it again).
pub fn hold_incoming() {
    let held = &HELD_BYTES;
    while let Some(byte) = uart::try_read_com1() {
        let (taken, end) = (
            held.taken.load(Ordering::Relaxed),
            held.held.load(Ordering::Relaxed),
        );
        if end.wrapping_sub(taken) < HELD {
            held.bytes[end % HELD].store(byte, Ordering::Relaxed);
            held.held.store(end.wrapping_add(1), Ordering::Relaxed);
        }
    }
}

fn take_held() -> Option<u8> {
    let held = &HELD_BYTES;
    let taken = held.taken.load(Ordering::Relaxed);
    if taken == held.held.load(Ordering::Relaxed) {
        return None;
    }
    held.taken.store(taken.wrapping_add(1), Ordering::Relaxed);
    Some(held.bytes[taken % HELD].load(Ordering::Relaxed))
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
    /// polling until a response is out and the line is quiet at that
    /// moment, or until the line stays idle; with several requests in
    /// flight the next exit's poll picks up the following ones, before the
    /// receive FIFO can fill. Returns whether any byte arrived.
    pub fn serve(&mut self) -> bool {
        let Some(uart) = self.uart.as_mut() else {
            return false;
        };
        let mut active = false;
        let mut replied = false;
        let mut idle = 0u32;
        loop {
            if let Some(byte) = take_held().or_else(|| uart.try_read()) {
                active = true;
                idle = 0;
                self.stub.feed(&[byte], |response| {
                    // Requests keep arriving while answers go out (several
                    // in flight): what arrives meanwhile is held, so a
                    // burst of answers cannot overflow the receive FIFO.
                    uart.write_all_while(response, hold_incoming);
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
