//! Requests for another processor: VMREAD/VMWRITE reach only the VMCS
//! current on the processor executing them, so the processor serving the
//! debugger link posts each request for processor k into k's mailbox, and k
//! runs it at its next VM exit (the VMX-preemption timer guarantees one).
//! The poster waits a bounded time: a request k has not taken by then is
//! withdrawn (nothing ran), so a processor stuck in its guest never hangs
//! the link. One processor posts (the link's); each processor takes only
//! from its own mailbox.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU8, Ordering};

use crate::backend::{self, RealVmx};
use crate::cpu;
use crate::percpu::MAX_CPUS;

type Job = dyn FnMut(&mut RealVmx);

const IDLE: u8 = 0;
const POSTED: u8 = 1;
const TAKEN: u8 = 2;
const DONE: u8 = 3;

struct Mailbox {
    state: AtomicU8,
    /// Set by the poster while IDLE; read by the owner once it moved the
    /// state from POSTED to TAKEN.
    job: UnsafeCell<Option<*mut Job>>,
}

// SAFETY: `job` is handed over by the state machine above: only the poster
// touches it in IDLE, only the owner between TAKEN and DONE.
unsafe impl Sync for Mailbox {}

static MAILBOXES: [Mailbox; MAX_CPUS] = [const {
    Mailbox {
        state: AtomicU8::new(IDLE),
        job: UnsafeCell::new(None),
    }
}; MAX_CPUS];

/// Runs `f` on processor `cpu` with its backend, waiting at most `budget`
/// TSC ticks for `cpu` to take it. `None` if it did not: then `f` never ran.
/// Once taken, waits for the result (the owner runs it at once, IF=0).
/// Calls `meanwhile` while it waits.
pub fn run_on<R>(
    cpu: usize,
    budget: u64,
    mut meanwhile: impl FnMut(),
    f: impl FnOnce(&mut RealVmx) -> R,
) -> Option<R> {
    let mailbox = &MAILBOXES[cpu];
    let mut f = Some(f);
    let mut result = None;
    let mut job = |backend: &mut RealVmx| {
        if let Some(f) = f.take() {
            result = Some(f(backend));
        }
    };
    let short: *mut (dyn FnMut(&mut RealVmx) + '_) = &mut job;
    // SAFETY: only the lifetime bound changes (same fat pointer). The job
    // lives on this stack frame, and this function returns only once the
    // owner can no longer reach it: after DONE, or after withdrawing it
    // from POSTED (the owner never took it).
    let erased: *mut Job = unsafe { core::mem::transmute(short) };
    // SAFETY: IDLE: the owner does not read `job` (see `Mailbox`).
    unsafe { *mailbox.job.get() = Some(erased) };
    mailbox.state.store(POSTED, Ordering::Release);
    let deadline = cpu::rdtsc().wrapping_add(budget);
    loop {
        match mailbox.state.load(Ordering::Acquire) {
            DONE => break,
            POSTED if cpu::rdtsc() > deadline => {
                if mailbox
                    .state
                    .compare_exchange(POSTED, IDLE, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return None;
                }
            }
            _ => meanwhile(),
        }
    }
    mailbox.state.store(IDLE, Ordering::Release);
    result
}

/// At a VM exit of processor `cpu`: runs the request posted for it, if
/// any. Returns whether one ran.
pub fn take(cpu: usize) -> bool {
    let mailbox = &MAILBOXES[cpu];
    if mailbox
        .state
        .compare_exchange(POSTED, TAKEN, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return false;
    }
    // SAFETY: TAKEN: the poster waits for DONE and does not touch `job`.
    let job = unsafe { (*mailbox.job.get()).take() };
    if let Some(job) = job {
        // SAFETY: the poster keeps the job alive until DONE (`run_on`).
        backend::with_own(cpu, |backend| unsafe { (*job)(backend) });
    }
    mailbox.state.store(DONE, Ordering::Release);
    true
}
