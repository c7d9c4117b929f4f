//! The debuggee's processors as the request handler sees them. MSRs and
//! VMCSs are per processor, so every request names the CPU it is for and
//! runs on that CPU's backend (on the bare-metal image: on that CPU itself,
//! where its VMCS is current). A write to every CPU is all or nothing: it is
//! prepared (checked) on every running CPU before any of them changes.

use crate::routing::{self, WritePlan};
use crate::vmx_backend::{GpFault, VmxBackend};

/// The most processors hv-stub serves (`sim?cpus=` accepts 1..=64).
pub const MAX_CPUS: usize = 64;

/// Whether a processor runs the guest.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CpuState {
    /// In VMX operation with the guest running on it (or halted by the guest).
    Running,
    /// Present, but the guest OS has not started it yet (waiting for SIPI).
    NotStarted,
    /// Started once, now stopped (the OS took it offline, or it stopped
    /// answering inside hv-stub).
    Stopped,
}

/// Why a request could not run on the processor it names.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CpuError {
    /// No processor with that index.
    NoCpu,
    /// The processor exists but does not run the guest.
    Inactive,
}

/// What an MSR request returns when it ran: a value (0 for a write), or the
/// #GP the processor would raise.
pub type MsrOutcome = Result<u64, GpFault>;

/// The processors of one debuggee.
pub trait Processors {
    /// The VMX backend of each processor.
    type Backend: VmxBackend;

    /// How many processors the debuggee has (`<= MAX_CPUS`).
    fn count(&self) -> usize;

    /// The state of processor `cpu` (`cpu < count()`).
    fn state(&self, cpu: usize) -> CpuState;

    /// Runs `f` with processor `cpu`'s backend: on that processor, where its
    /// VMCS is current. `Err(Inactive)` if it cannot be reached.
    fn with_cpu<R>(
        &mut self,
        cpu: usize,
        f: impl FnOnce(&mut Self::Backend) -> R,
    ) -> Result<R, CpuError>;

    /// Bit `n` set for every running processor `n`.
    fn running_mask(&self) -> u64 {
        (0..self.count().min(MAX_CPUS))
            .filter(|&cpu| self.state(cpu) == CpuState::Running)
            .fold(0, |mask, cpu| mask | 1 << cpu)
    }
}

/// A lone VMX backend is a debuggee with one processor, always running.
impl<B: VmxBackend> Processors for B {
    type Backend = B;

    fn count(&self) -> usize {
        1
    }

    fn state(&self, _cpu: usize) -> CpuState {
        CpuState::Running
    }

    fn with_cpu<R>(&mut self, cpu: usize, f: impl FnOnce(&mut B) -> R) -> Result<R, CpuError> {
        if cpu != 0 {
            return Err(CpuError::NoCpu);
        }
        Ok(f(self))
    }
}

fn running<P: Processors>(p: &P, cpu: usize) -> Result<(), CpuError> {
    if cpu >= p.count() {
        return Err(CpuError::NoCpu);
    }
    match p.state(cpu) {
        CpuState::Running => Ok(()),
        CpuState::NotStarted | CpuState::Stopped => Err(CpuError::Inactive),
    }
}

/// A debugger's write of `value` to `msr` on processor `cpu`.
pub fn write_msr<P: Processors>(
    p: &mut P,
    cpu: usize,
    msr: u32,
    value: u64,
) -> Result<MsrOutcome, CpuError> {
    running(p, cpu)?;
    p.with_cpu(cpu, |b| routing::write_msr(b, msr, value).map(|_| 0))
}

/// What processor `cpu`'s guest reads from `msr`.
pub fn read_msr<P: Processors>(p: &mut P, cpu: usize, msr: u32) -> Result<MsrOutcome, CpuError> {
    running(p, cpu)?;
    p.with_cpu(cpu, |b| routing::read_msr(b, msr))
}

/// Writes `value` to `msr` on every running processor, or on none: the
/// write is prepared on each first, and only if every one accepts it is it
/// applied on each. Processors the OS has not started are left to the OS.
///
/// Only a WRMSR to an MSR the validator does not know can still fault while
/// applying (the processor judges it); the processors already written then
/// get their previous value back, so the result is still all or nothing.
pub fn write_msr_all<P: Processors>(p: &mut P, msr: u32, value: u64) -> MsrOutcome {
    let mut plans: [Option<(WritePlan, Option<u64>)>; MAX_CPUS] = [None; MAX_CPUS];
    let cpus = p.count().min(MAX_CPUS);
    for (cpu, slot) in plans.iter_mut().enumerate().take(cpus) {
        if p.state(cpu) != CpuState::Running {
            continue;
        }
        let prepared = p.with_cpu(cpu, |b| {
            let plan = routing::prepare_write(b, msr, value)?;
            // What an undo would restore, for a write the CPU still judges.
            let previous = match plan.live_msr() {
                Some(live) if plan.may_fault() => Some(b.rdmsr(live)?),
                _ => None,
            };
            Ok::<_, GpFault>((plan, previous))
        });
        match prepared {
            Ok(Ok(plan)) => *slot = Some(plan),
            Ok(Err(gp)) => return Err(gp),
            // Stopped between the state check and the call: left to the OS.
            Err(_) => {}
        }
    }
    for cpu in 0..cpus {
        let Some((plan, _)) = plans[cpu] else {
            continue;
        };
        let applied = p
            .with_cpu(cpu, |b| routing::apply_write(b, &plan))
            .unwrap_or(Ok(routing::Landing::LiveMsr));
        if applied.is_err() {
            undo(p, &plans[..cpu], msr);
            return Err(GpFault);
        }
    }
    Ok(0)
}

/// Restores the previous live value on the processors already written.
fn undo<P: Processors>(p: &mut P, done: &[Option<(WritePlan, Option<u64>)>], msr: u32) {
    for (cpu, plan) in done.iter().enumerate() {
        if let Some((_, Some(previous))) = plan {
            let _ = p.with_cpu(cpu, |b| b.wrmsr(msr, *previous));
        }
    }
}
