//! COM1, a polled 16550: 115200 baud (divisor 1), 8N1, FIFOs on, no
//! interrupts.

use crate::port::{inb, outb};

const COM1: u16 = 0x3F8;
const THR_RBR: u16 = 0;
const IER: u16 = 1;
const FCR: u16 = 2;
const LCR: u16 = 3;
const MCR: u16 = 4;
const LSR: u16 = 5;
const LSR_DATA_READY: u8 = 1 << 0;
const LSR_THR_EMPTY: u8 = 1 << 5;
/// FIFOs on and cleared, receive trigger at 1 byte: Bochs only reports
/// "data ready" once the trigger level (or the character timeout) is
/// reached, and with 14 every short frame would wait for the timeout.
const FCR_VALUE: u8 = 0x07;

pub struct Uart {
    base: u16,
}

const SCR: u16 = 7;

impl Uart {
    /// COM1, initialised, if a 16550 answers there: its scratch register
    /// keeps what is written and its line status is not all ones (an absent
    /// device reads 0xFF everywhere).
    pub fn detect_com1() -> Option<Uart> {
        for probe in [0x5A, 0xA5] {
            outb(COM1 + SCR, probe);
            if inb(COM1 + SCR) != probe {
                return None;
            }
        }
        if inb(COM1 + LSR) == 0xFF {
            return None;
        }
        Some(Uart::com1())
    }

    pub fn com1() -> Uart {
        let uart = Uart { base: COM1 };
        outb(uart.base + IER, 0x00);
        outb(uart.base + LCR, 0x80); // DLAB
        outb(uart.base + THR_RBR, 0x01); // divisor 1 = 115200 baud
        outb(uart.base + IER, 0x00);
        outb(uart.base + LCR, 0x03); // 8N1
        outb(uart.base + FCR, FCR_VALUE);
        outb(uart.base + MCR, 0x03); // DTR | RTS
        uart
    }

    pub fn try_read(&mut self) -> Option<u8> {
        read_ready(self.base)
    }

    pub fn write_all(&mut self, bytes: &[u8]) {
        self.write_all_while(bytes, || {});
    }

    /// Writes `bytes`, calling `waiting` while the transmitter is busy (to
    /// drain the receiver meanwhile: the 16-byte receive FIFO fills as fast
    /// as the transmitter empties).
    pub fn write_all_while(&mut self, bytes: &[u8], mut waiting: impl FnMut()) {
        for &b in bytes {
            while inb(self.base + LSR) & LSR_THR_EMPTY == 0 {
                waiting();
            }
            outb(self.base + THR_RBR, b);
        }
    }
}

/// A byte COM1 has received, if any (for the link's processor while it
/// waits for another processor, `link::hold_incoming`).
pub fn try_read_com1() -> Option<u8> {
    read_ready(COM1)
}

fn read_ready(base: u16) -> Option<u8> {
    if inb(base + LSR) & LSR_DATA_READY != 0 {
        Some(inb(base + THR_RBR))
    } else {
        None
    }
}
