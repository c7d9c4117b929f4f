//! A whole simulated debuggee: the request handler on the software VMX
//! model, plus what hv-stub does between requests — resume the guest. After
//! every batch of requests the model performs a VM entry, lets an observer
//! guest read its MSRs with RDMSR (as the Bochs observer guest does), and
//! exits again. Tests compare what the guest saw with what was written.

use pulse_proto::message::caps;

use crate::caps::CpuCaps;
use crate::cpus::{CpuError, CpuState, Processors, MAX_CPUS};
use crate::handler::Stub;
use crate::model::{EntryFailure, SoftVmx};
use crate::policy;
use crate::routing;

/// MSRs the observer guest reads after every VM entry: the guest-applied
/// MSRs of the reference page (IA32_SMBASE excepted: RDMSR of it faults
/// outside SMM), FS/GS base and the shared system-call MSRs.
pub use crate::msr_table::WATCHED;

/// What the observer guest read during its last run; `None` where its
/// RDMSR faulted (the MSR does not exist on this CPU).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GuestObservation {
    /// Each watched MSR with what the guest read, in [`WATCHED`] order.
    pub values: [(u32, Option<u64>); WATCHED.len()],
}

impl GuestObservation {
    /// What the guest read from `msr`; `None` if it faulted or is not watched.
    pub fn get(&self, msr: u32) -> Option<u64> {
        self.values
            .iter()
            .find(|(m, _)| *m == msr)
            .and_then(|(_, v)| *v)
    }
}

/// The simulated debuggee's processors: one software VMX model (VMCS, MSR
/// file, shadows, MSR-load area) per CPU, each configured by hv-stub's
/// policy, and which of them the guest OS has started.
pub struct SimCpus {
    cpus: [SoftVmx; MAX_CPUS],
    states: [CpuState; MAX_CPUS],
    count: usize,
}

impl SimCpus {
    /// `count` processors (1..=MAX_CPUS) of kind `caps`, of which the first
    /// `online` run the guest and the rest wait for the OS to start them.
    pub fn new(caps: CpuCaps, count: usize, online: usize) -> Self {
        assert!((1..=MAX_CPUS).contains(&count) && (1..=count).contains(&online));
        let mut cpus = SimCpus {
            cpus: core::array::from_fn(|_| SoftVmx::new(caps)),
            states: core::array::from_fn(|cpu| {
                if cpu < online {
                    CpuState::Running
                } else {
                    CpuState::NotStarted
                }
            }),
            count,
        };
        for (cpu, model) in cpus.cpus[..count].iter_mut().enumerate() {
            if cpu > 0 {
                model.make_ap();
            }
            for msr in policy::load_area_msrs(&caps) {
                let value = routing::read_msr(model, msr).unwrap_or(0);
                let added = model.add_load_area_entry(msr, value);
                debug_assert!(added, "the policy's area fits the model's");
            }
        }
        cpus
    }

    /// Processor `cpu`'s model.
    pub fn model(&self, cpu: usize) -> &SoftVmx {
        &self.cpus[cpu]
    }

    /// Processor `cpu`'s model, to change it.
    pub fn model_mut(&mut self, cpu: usize) -> &mut SoftVmx {
        &mut self.cpus[cpu]
    }

    /// What the guest OS does to a processor: start it, stop it.
    pub fn set_state(&mut self, cpu: usize, state: CpuState) {
        self.states[cpu] = state;
    }
}

impl Processors for SimCpus {
    type Backend = SoftVmx;

    fn count(&self) -> usize {
        self.count
    }

    fn state(&self, cpu: usize) -> CpuState {
        self.states[cpu]
    }

    fn with_cpu<R>(
        &mut self,
        cpu: usize,
        f: impl FnOnce(&mut SoftVmx) -> R,
    ) -> Result<R, CpuError> {
        if cpu >= self.count {
            return Err(CpuError::NoCpu);
        }
        Ok(f(&mut self.cpus[cpu]))
    }
}

/// How many processors a simulated debuggee has by default (DESIGN: `sim`
/// takes `cpus=N`, default 4, all running).
pub const DEFAULT_CPUS: usize = 4;

/// A whole simulated debuggee: hv-stub's request handler serving
/// [`SimCpus`], each processor resuming its observer guest after the
/// requests that ran on it.
pub struct SimTarget {
    stub: Stub<SimCpus>,
    /// What each processor's guest read during its latest run.
    observations: [Option<GuestObservation>; MAX_CPUS],
    last_entry_failure: Option<EntryFailure>,
}

impl SimTarget {
    /// A debuggee with [`DEFAULT_CPUS`] processors of kind `cpu`, all running.
    pub fn new(cpu: CpuCaps, entropy: u64) -> Self {
        SimTarget::with_cpus(cpu, DEFAULT_CPUS, DEFAULT_CPUS, entropy)
    }

    /// `count` processors (1..=MAX_CPUS), the first `online` of them
    /// running the guest (1..=count).
    pub fn with_cpus(cpu: CpuCaps, count: usize, online: usize, entropy: u64) -> Self {
        let mut target = SimTarget {
            stub: Stub::new(
                SimCpus::new(cpu, count, online),
                caps::SOFTWARE_MODEL | caps::GUEST_OBSERVER,
                entropy,
            ),
            observations: [None; MAX_CPUS],
            last_entry_failure: None,
        };
        for n in 0..online {
            target.resume_cpu(n);
        }
        target
    }

    /// Feeds bytes received from the debugger; responses go to `send`. The
    /// guest then runs once on every processor a request ran on, as
    /// hv-stub resumes it after handling a request.
    pub fn receive(&mut self, bytes: &[u8], send: impl FnMut(&[u8])) {
        self.stub.feed(bytes, send);
        let touched = self.stub.take_touched();
        for n in 0..self.cpus().count() {
            if touched & (1 << n) != 0 {
                self.resume_cpu(n);
            }
        }
    }

    /// VM entry, the observer's RDMSRs and VM exit on every running CPU.
    pub fn resume_guest(&mut self) {
        for n in 0..self.cpus().count() {
            self.resume_cpu(n);
        }
    }

    /// VM entry, the observer's RDMSRs, VM exit on processor `n`, if it runs.
    pub fn resume_cpu(&mut self, n: usize) {
        if self.cpus().state(n) != CpuState::Running {
            return;
        }
        let run = self.stub.backend_mut().model_mut(n).run_guest(|guest| {
            let mut values = [(0u32, None); WATCHED.len()];
            for (slot, &msr) in values.iter_mut().zip(WATCHED.iter()) {
                *slot = (msr, guest.rdmsr(msr).ok());
            }
            GuestObservation { values }
        });
        match run {
            Ok(observation) => self.observations[n] = Some(observation),
            Err(failure) => self.last_entry_failure = Some(failure),
        }
    }

    /// What the boot processor's guest read during its latest run.
    pub fn observation(&self) -> Option<&GuestObservation> {
        self.observation_of(0)
    }

    /// What processor `n`'s guest read during its latest run.
    pub fn observation_of(&self, n: usize) -> Option<&GuestObservation> {
        self.observations.get(n).and_then(Option::as_ref)
    }

    /// The latest failed VM entry, if any ever failed (hv-stub's promise is
    /// that none does).
    pub fn last_entry_failure(&self) -> Option<EntryFailure> {
        self.last_entry_failure
    }

    /// The request handler.
    pub fn stub(&self) -> &Stub<SimCpus> {
        &self.stub
    }

    /// The request handler, to change it (e.g. set a key).
    pub fn stub_mut(&mut self) -> &mut Stub<SimCpus> {
        &mut self.stub
    }

    /// The debuggee's processors.
    pub fn cpus(&self) -> &SimCpus {
        self.stub.backend()
    }

    /// The debuggee's processors, to change them.
    pub fn cpus_mut(&mut self) -> &mut SimCpus {
        self.stub.backend_mut()
    }

    /// The boot processor's model.
    pub fn model(&self) -> &SoftVmx {
        self.cpus().model(0)
    }

    /// The boot processor's model, to change it.
    pub fn model_mut(&mut self) -> &mut SoftVmx {
        self.cpus_mut().model_mut(0)
    }
}
