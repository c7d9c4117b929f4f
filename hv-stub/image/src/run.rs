//! The run loop of every processor: each VM exit enters `hv_vmexit` (from
//! the boot.s trampoline, on that processor's exit stack), which has `exits`
//! handle it, runs a debugger request posted for this processor
//! (`mailbox`), serves the debugger `link` on the processor that owns it,
//! and sets the next poll period before the guest resumes.

use core::ptr::addr_of_mut;

use hv_stub::cpus::CpuState;

use crate::exits::{FixedCrs, GuestRegs, Next, ACTIVITY_HLT};
use crate::hv::{fatal, GuestHas, GuestKind};
use crate::link::{Link, PollPeriod};
use crate::percpu::{self, MAX_CPUS};
use crate::vmcs::{f, r, w};
use crate::{cpu, mailbox, say, vmx};

/// Everything one processor's VM-exit handler needs.
pub struct Host {
    pub cpu: usize,
    /// The debugger link, on the one processor that serves it (the boot
    /// processor).
    pub link: Option<Link>,
    pub kind: GuestKind,
    /// The observer guest said READY (a Linux guest is served at once).
    pub ready: bool,
    pub exits: u64,
    pub fixed_crs: FixedCrs,
    pub guest_has: GuestHas,
    pub com1_noted: bool,
    pub com1_write_reported: bool,
    /// The startup vector, from a SIPI exit to the next exit.
    pub started_at: Option<u64>,
    /// The VMX-preemption timer is on (COM1 has a UART).
    pub timer: bool,
    pub poll: PollPeriod,
    /// IA32_VMX_MISC[4:0]: the timer counts TSC >> this.
    pub timer_rate: u32,
    /// The value last written to the VMX-preemption-timer field.
    pub timer_value: u64,
}

static mut HOSTS: [Option<Host>; MAX_CPUS] = [const { None }; MAX_CPUS];

/// Installs processor `host.cpu`'s exit state. Called by that processor
/// once, before its VMLAUNCH.
pub fn install(host: Host) {
    let cpu = host.cpu;
    // SAFETY: slot `cpu` is written once by processor `cpu` before its
    // VMLAUNCH; nothing else refers to it until that processor's first exit.
    unsafe { (*addr_of_mut!(HOSTS))[cpu] = Some(host) };
}

/// Processor `cpu`'s exit state, from its VM-exit handler.
fn host(cpu: usize) -> &'static mut Host {
    // SAFETY: slot `cpu` is used only by processor `cpu`, from its VM-exit
    // handler, which runs with IF=0 and is never re-entered (its guest does
    // not run meanwhile), so no two references are live at once.
    match unsafe { &mut (*addr_of_mut!(HOSTS))[cpu] } {
        Some(host) => host,
        None => fatal("VM exit before the host state exists"),
    }
}

/// Called by the boot.s trampoline on every VM exit.
#[no_mangle]
extern "C" fn hv_vmexit(regs: &mut GuestRegs) {
    let cpu = percpu::current();
    let host = host(cpu);
    match host.on_exit(regs) {
        Next::Resume => {
            note_parked(cpu);
            let mut busy = mailbox::take(cpu);
            if let Some(link) = host.link.as_mut() {
                crate::smp::restart_reset_processors();
                if host.ready && link.has_uart() {
                    busy |= link.serve();
                }
            }
            if host.timer {
                let halted = r(f::GUEST_ACTIVITY) == ACTIVITY_HLT;
                let value = (host.poll.next(busy, halted) >> host.timer_rate).max(1);
                if value != host.timer_value {
                    host.timer_value = value;
                    w(f::PREEMPTION_TIMER, value);
                }
            }
        }
        Next::Stop => stop(host),
    }
}

/// A guest halted with interrupts off has parked its processor (Linux's
/// offline CPUs and stopped CPUs do that; only INIT or an NMI ends it): the
/// debugger sees it stopped until it runs again.
fn note_parked(cpu: usize) {
    const RFLAGS_IF: u64 = 1 << 9;
    let parked = r(f::GUEST_ACTIVITY) == ACTIVITY_HLT && r(f::GUEST_RFLAGS) & RFLAGS_IF == 0;
    match (percpu::state(cpu), parked) {
        (CpuState::Running, true) => percpu::set_state(cpu, CpuState::Stopped),
        (CpuState::Stopped, false) => percpu::set_state(cpu, CpuState::Running),
        _ => {}
    }
}

/// The guest of this processor cannot continue: the debugger sees it
/// stopped; the link's processor goes on serving the link, any other
/// processor halts in VMX root (where INIT is blocked, so it stays out of
/// the guest).
fn stop(host: &mut Host) -> ! {
    percpu::set_state(host.cpu, CpuState::Stopped);
    match host.link.as_mut() {
        Some(link) => {
            say!("HV guest stopped; the debugger link is still served");
            link.serve_forever()
        }
        None => {
            say!("HV CPU {}: guest stopped", host.cpu);
            loop {
                cpu::halt();
            }
        }
    }
}

/// Called by the trampoline if VMRESUME fails.
#[no_mangle]
extern "C" fn hv_vmresume_failed() -> ! {
    let error = r(vmx::VM_INSTRUCTION_ERROR);
    say!("HV ERROR VMRESUME failed, VM-instruction error {error}");
    stop(host(percpu::current()))
}
