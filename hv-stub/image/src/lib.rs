//! hv-stub as a bootable hypervisor. boot.s gets the processor from the
//! BIOS into identity-mapped long mode (loading a Linux payload above 1 MiB
//! on the way, if the disk has one) and calls `hv_main`; `hv` starts the
//! other processors (`smp`), and each enters VMX operation (`setup`) and
//! runs either a Linux kernel (`linux`, `ept`, `memmap`) or the observer
//! guest (`guest`), handling its VM exits (`run`, `exits`) and the requests
//! posted for it (`mailbox`); the boot processor serves libpulse's requests
//! on COM1 (`link`) through hv-stub's shared core.
//!
//! `unsafe` lives in the small modules that need it: `port` (port I/O),
//! `cpu` (MSRs, control registers, XSETBV), `vmx` (VMX instructions), `vmcs`
//! (checked VMWRITE), `desc` (descriptor tables), `phys` (physical memory
//! the host prepares for a guest), `ept`, `hv` and `run` (the static tables and
//! VMX regions, and the exit handler's state), `firmware` and `memmap`
//! (addresses of boot.s and linker symbols), `backend` (the two calls
//! through which the shared routing reaches VMWRITE and WRMSR, and each
//! processor's backend slot), `smp` (the local APIC, boot.s's restart
//! stacks) and `mailbox` (a request handed to another processor); every
//! block carries a `SAFETY:` comment.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod backend;
pub mod caps;
pub mod console;
pub mod cpu;
pub mod desc;
pub mod entropy;
pub mod ept;
pub mod exits;
pub mod firmware;
pub mod guest;
pub mod guest_state;
pub mod hv;
pub mod key;
pub mod link;
pub mod linux;
pub mod mailbox;
pub mod memmap;
pub mod percpu;
pub mod phys;
pub mod port;
pub mod run;
pub mod setup;
pub mod smp;
pub mod uart;
pub mod vmcs;
pub mod vmx;

/// Entered from boot.s in long mode, IF=0, SSE enabled, .bss zeroed.
#[no_mangle]
pub extern "C" fn hv_main() -> ! {
    if cfg!(feature = "echo") {
        echo()
    }
    say!("\nHV hv-stub booting");
    hv::start()
}

/// The `echo` build: COM1 answers with no VMX and no protocol, the floor a
/// polled UART sets in the same Bochs configuration. A message's first byte
/// is its length and its second the answer's length (for a write's floor,
/// the lengths of a WriteMsr and a WriteAck frame); the answer follows the
/// message's last byte.
fn echo() -> ! {
    let mut uart = uart::Uart::com1();
    say!("\nECHO\nREADY");
    let answer = [0x5A; 255];
    loop {
        let length = next_byte(&mut uart);
        let reply = next_byte(&mut uart);
        for _ in 2..length {
            next_byte(&mut uart);
        }
        uart.write_all(&answer[..usize::from(reply)]);
    }
}

fn next_byte(uart: &mut uart::Uart) -> u8 {
    loop {
        if let Some(byte) = uart.try_read() {
            return byte;
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    say!("\nFATAL panic: {info}");
    console::shutdown()
}
