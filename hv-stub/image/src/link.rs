//! The debugger link: COM1 polled from VM exits and fed to the shared
//! `hv_stub::Stub`. Without a UART at COM1 there is no link and the guest
//! runs undisturbed.

use hv_stub::Stub;

use hv_stub::cpus::CpuState;

use crate::backend::GuestCpu;
use crate::uart::Uart;

/// Polls of an idle UART before a partly received frame is left for the
/// next exit.
const IDLE_POLLS: u32 = 20_000;

pub struct Link {
    pub stub: Stub<GuestCpu>,
    uart: Option<Uart>,
}

impl Link {
    pub fn new(stub: Stub<GuestCpu>, uart: Option<Uart>) -> Link {
        Link { stub, uart }
    }

    pub fn has_uart(&self) -> bool {
        self.uart.is_some()
    }

    /// Drains COM1 into the request handler. Once a byte arrives, keeps
    /// polling until the response is out and the line is quiet (the client
    /// is stop-and-wait), or until the line stays idle.
    pub fn serve(&mut self) {
        let Some(uart) = self.uart.as_mut() else {
            return;
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
                return;
            }
            idle += 1;
            if idle > IDLE_POLLS {
                return;
            }
        }
    }

    /// After the guest stopped for good: serve the link forever (the
    /// debugger sees the processor stopped), or halt without one.
    pub fn serve_forever(&mut self) -> ! {
        self.stub.backend_mut().state = CpuState::Stopped;
        loop {
            if self.uart.is_some() {
                self.serve();
            } else {
                crate::cpu::halt();
            }
        }
    }
}
