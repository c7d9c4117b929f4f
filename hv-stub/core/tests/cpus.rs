//! The processor layer: per-CPU isolation of every routed MSR, the CPU
//! errors, and all-or-nothing writes to every CPU.

mod common;

use common::*;
use hv_stub::cpus::{self, CpuError, CpuState, Processors};
use hv_stub::model::SoftVmx;
use hv_stub::msr::{entry, index::*};
use hv_stub::routing::{self, TABLE};
use hv_stub::simulated::SimCpus;
use hv_stub::{CpuCaps, GpFault, MsrEntry, VmxBackend};

#[test]
fn a_write_reaches_only_its_cpu_for_every_routed_msr() {
    for caps in CpuCaps::PROFILES {
        for route in TABLE {
            let msr = route.msr;
            let Some(&value) = valid_values(msr, &caps).iter().find(|&&v| {
                let mut probe = SimCpus::new(caps, 1, 1);
                let before = cpus::read_msr(&mut probe, 0, msr).unwrap();
                cpus::write_msr(&mut probe, 0, msr, v) == Ok(Ok(0))
                    && cpus::read_msr(&mut probe, 0, msr).unwrap() != before
            }) else {
                continue; // absent on this CPU, or no value that changes it
            };
            let mut p = SimCpus::new(caps, 4, 4);
            let before: Vec<_> = (0..4)
                .map(|cpu| cpus::read_msr(&mut p, cpu, msr).unwrap())
                .collect();
            assert_eq!(cpus::write_msr(&mut p, 2, msr, value), Ok(Ok(0)));
            for cpu in 0..4 {
                let now = cpus::read_msr(&mut p, cpu, msr).unwrap();
                if cpu == 2 {
                    assert_ne!(now, before[2], "{} {msr:#x} cpu 2", caps.name);
                    // IA32_SMBASE: the guest's RDMSR faults outside SMM.
                    if msr != IA32_SMBASE {
                        let seen = guest_reads(p.model_mut(2), msr);
                        assert_eq!(seen, now, "{} {msr:#x}: cpu 2's guest", caps.name);
                    }
                } else {
                    assert_eq!(now, before[cpu], "{} {msr:#x} cpu {cpu}", caps.name);
                }
            }
        }
    }
}

#[test]
fn cpu_errors() {
    let mut p = SimCpus::new(CpuCaps::MODERN, 4, 2);
    assert_eq!(p.running_mask(), 0b0011);
    assert_eq!(
        cpus::write_msr(&mut p, 4, IA32_LSTAR, 0),
        Err(CpuError::NoCpu)
    );
    assert_eq!(cpus::read_msr(&mut p, 99, IA32_LSTAR), Err(CpuError::NoCpu));
    assert_eq!(
        cpus::write_msr(&mut p, 3, IA32_LSTAR, 0),
        Err(CpuError::Inactive)
    );
    assert_eq!(
        cpus::read_msr(&mut p, 2, IA32_LSTAR),
        Err(CpuError::Inactive)
    );
    p.set_state(2, CpuState::Running);
    assert_eq!(
        cpus::read_msr(&mut p, 2, IA32_LSTAR).map(|r| r.is_ok()),
        Ok(true)
    );
    p.set_state(0, CpuState::Stopped);
    assert_eq!(
        cpus::write_msr(&mut p, 0, IA32_LSTAR, 0),
        Err(CpuError::Inactive)
    );
    assert_eq!(p.running_mask(), 0b0110);
}

#[test]
fn all_cpu_write_reaches_every_running_cpu_and_leaves_the_others() {
    let mut p = SimCpus::new(CpuCaps::MODERN, 4, 3);
    let lstar = 0xFFFF_F800_0000_1000;
    let idle = routing::read_msr(p.model_mut(3), IA32_LSTAR);
    assert_eq!(cpus::write_msr_all(&mut p, IA32_LSTAR, lstar), Ok(0));
    for cpu in 0..3 {
        assert_eq!(cpus::read_msr(&mut p, cpu, IA32_LSTAR), Ok(Ok(lstar)));
        assert_eq!(guest_reads(p.model_mut(cpu), IA32_LSTAR), Ok(lstar));
    }
    p.set_state(3, CpuState::Running);
    assert_eq!(
        cpus::read_msr(&mut p, 3, IA32_LSTAR),
        Ok(idle),
        "left to the OS"
    );
}

#[test]
fn all_cpu_write_refused_on_one_cpu_changes_no_cpu() {
    // CPU 1's guest is tracing (RTIT_CTL.TraceEn = 1 with load RTIT_CTL on):
    // a configuration change that keeps TraceEn = 1 is refused there, while
    // CPUs 0, 2 and 3 would take it.
    let mut p = SimCpus::new(CpuCaps::MODERN, 4, 4);
    assert!(p.model(1).load_control(entry::LOAD_IA32_RTIT_CTL));
    assert_eq!(cpus::write_msr(&mut p, 1, IA32_RTIT_CTL, 0x2001), Ok(Ok(0)));
    let snapshot: Vec<_> = (0..4).map(|cpu| p.model(cpu).state()).collect();
    assert_eq!(
        cpus::write_msr_all(&mut p, IA32_RTIT_CTL, 0x2101),
        Err(GpFault)
    );
    for (cpu, before) in snapshot.iter().enumerate() {
        assert_eq!(&p.model(cpu).state(), before, "cpu {cpu} unchanged");
    }
    // A value every CPU accepts (TraceEn = 0 may change the rest) goes to all.
    assert_eq!(cpus::write_msr_all(&mut p, IA32_RTIT_CTL, 0x2100), Ok(0));
    for cpu in 0..4 {
        assert_eq!(cpus::read_msr(&mut p, cpu, IA32_RTIT_CTL), Ok(Ok(0x2100)));
    }
}

/// A CPU whose processor accepts WRMSR of an MSR the validator does not know
/// (0x1234) only where `accepts` says, so the all-CPU write fails while
/// applying and must undo the CPUs already written.
struct Quirky {
    model: SoftVmx,
    accepts: bool,
    unknown: u64,
}

impl VmxBackend for Quirky {
    fn caps(&self) -> &CpuCaps {
        self.model.caps()
    }
    fn vmread(&self, field: u32) -> u64 {
        self.model.vmread(field)
    }
    fn vmwrite(&mut self, field: u32, value: u64) {
        self.model.vmwrite(field, value)
    }
    fn rdmsr(&mut self, msr: u32) -> Result<u64, GpFault> {
        match msr {
            0x1234 => Ok(self.unknown),
            _ => self.model.rdmsr(msr),
        }
    }
    fn wrmsr(&mut self, msr: u32, value: u64) -> Result<(), GpFault> {
        match msr {
            0x1234 if self.accepts || value == self.unknown => {
                self.unknown = value;
                Ok(())
            }
            0x1234 => Err(GpFault),
            _ => self.model.wrmsr(msr, value),
        }
    }
    fn entry_load_area(&mut self) -> &mut [MsrEntry] {
        self.model.entry_load_area()
    }
    fn feature_control_shadow(&mut self) -> &mut u64 {
        self.model.feature_control_shadow()
    }
}

struct QuirkySet(Vec<Quirky>);

impl Processors for QuirkySet {
    type Backend = Quirky;
    fn count(&self) -> usize {
        self.0.len()
    }
    fn state(&self, _cpu: usize) -> CpuState {
        CpuState::Running
    }
    fn with_cpu<R>(&mut self, cpu: usize, f: impl FnOnce(&mut Quirky) -> R) -> Result<R, CpuError> {
        self.0.get_mut(cpu).map(f).ok_or(CpuError::NoCpu)
    }
}

#[test]
fn all_cpu_write_that_faults_while_applying_is_undone() {
    let cpu = |accepts| Quirky {
        model: SoftVmx::new(CpuCaps::MODERN),
        accepts,
        unknown: 7,
    };
    let mut p = QuirkySet(vec![cpu(true), cpu(true), cpu(false), cpu(true)]);
    assert_eq!(cpus::write_msr_all(&mut p, 0x1234, 9), Err(GpFault));
    for (n, q) in p.0.iter().enumerate() {
        assert_eq!(q.unknown, 7, "cpu {n} restored");
    }
    p.0[2].accepts = true;
    assert_eq!(cpus::write_msr_all(&mut p, 0x1234, 9), Ok(0));
    assert!(p.0.iter().all(|q| q.unknown == 9));
    // Reading back through the routing agrees.
    assert_eq!(routing::read_msr(&mut p.0[3], 0x1234), Ok(9));
}
