//! The run loop: every VM exit enters `hv_vmexit` (from the boot.s
//! trampoline), which has `exits` handle it and then serves the debugger
//! `link` before the guest resumes.

use core::ptr::addr_of_mut;

use crate::exits::{FixedCrs, GuestRegs, Next};
use crate::hv::{fatal, GuestHas, GuestKind};
use crate::link::{Link, PollPeriod};
use crate::say;
use crate::vmcs::{f, r, w};
use crate::vmx;

/// Guest activity state "HLT" (VMCS guest activity state field).
const ACTIVITY_HLT: u64 = 1;

/// Everything the VM-exit handler needs.
pub struct Host {
    pub link: Link,
    pub kind: GuestKind,
    /// The observer guest said READY (a Linux guest is served at once).
    pub ready: bool,
    pub exits: u64,
    pub fixed_crs: FixedCrs,
    pub guest_has: GuestHas,
    pub com1_noted: bool,
    pub com1_write_reported: bool,
    pub poll: PollPeriod,
    /// IA32_VMX_MISC[4:0]: the timer counts TSC >> this.
    pub timer_rate: u32,
    /// The value last written to the VMX-preemption-timer field.
    pub timer_value: u64,
}

static mut HOST: Option<Host> = None;

/// Installs the exit handler's state. Called once, before VMLAUNCH.
pub fn install(host: Host) {
    // SAFETY: written once, before VMLAUNCH; nothing else refers to HOST
    // until the first VM exit.
    unsafe { *addr_of_mut!(HOST) = Some(host) };
}

/// The host state, from the VM-exit handler.
fn host() -> &'static mut Host {
    // SAFETY: HOST is written once in `install` before VMLAUNCH and
    // afterwards only used here, from the VM-exit handler, which runs on one
    // CPU with IF=0 and is never re-entered (the guest does not run
    // meanwhile), so no two references are live at once.
    match unsafe { &mut *addr_of_mut!(HOST) } {
        Some(host) => host,
        None => fatal("VM exit before the host state exists"),
    }
}

/// Called by the boot.s trampoline on every VM exit.
#[no_mangle]
extern "C" fn hv_vmexit(regs: &mut GuestRegs) {
    let host = host();
    match host.on_exit(regs) {
        Next::Resume => {
            if host.ready && host.link.has_uart() {
                let busy = host.link.serve();
                let halted = r(f::GUEST_ACTIVITY) == ACTIVITY_HLT;
                let value = (host.poll.next(busy, halted) >> host.timer_rate).max(1);
                if value != host.timer_value {
                    host.timer_value = value;
                    w(f::PREEMPTION_TIMER, value);
                }
            }
        }
        Next::Stop => {
            say!("HV guest stopped; the debugger link is still served");
            host.link.serve_forever()
        }
    }
}

/// Called by the trampoline if VMRESUME fails.
#[no_mangle]
extern "C" fn hv_vmresume_failed() -> ! {
    let error = r(vmx::VM_INSTRUCTION_ERROR);
    say!("HV ERROR VMRESUME failed, VM-instruction error {error}");
    host().link.serve_forever()
}
