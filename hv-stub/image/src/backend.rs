//! The real VMX backend of hv-stub's routing: VMREAD/VMWRITE of the current
//! VMCS, fault-safe RDMSR/WRMSR in VMX-root mode, the VM-entry MSR-load area
//! and the IA32_FEATURE_CONTROL shadow the guest's RDMSR sees; one per
//! processor; and the processors as the request handler sees them
//! (`Machine`).

use hv_stub::cpus::{CpuError, CpuState, Processors};
use hv_stub::{CpuCaps, GpFault, MsrEntry, VmxBackend};

use core::ptr::addr_of_mut;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::percpu::{self, MAX_CPUS};
use crate::{cpu, link, mailbox, say, vmx};

pub struct RealVmx {
    caps: CpuCaps,
    /// The VM-entry MSR-load area the VMCS points at (0x200A).
    load_area: &'static mut [MsrEntry],
    /// Entries in force (the VMCS count field 0x4014).
    load_count: usize,
    feature_control: u64,
    /// The guest runs on a processor without VMX (a Linux guest): the VMX
    /// capability MSRs fault for it, so they fault for the debugger too.
    hide_vmx_msrs: bool,
}

impl RealVmx {
    pub fn new(
        caps: CpuCaps,
        load_area: &'static mut [MsrEntry],
        load_count: usize,
        feature_control: u64,
        hide_vmx_msrs: bool,
    ) -> RealVmx {
        RealVmx {
            caps,
            load_area,
            load_count,
            feature_control,
            hide_vmx_msrs,
        }
    }

    fn hidden(&self, msr: u32) -> bool {
        self.hide_vmx_msrs && hv_stub::policy::hidden_from_guest(msr)
    }

    pub fn feature_control(&self) -> u64 {
        self.feature_control
    }
}

impl VmxBackend for RealVmx {
    fn caps(&self) -> &CpuCaps {
        &self.caps
    }

    fn vmread(&self, field: u32) -> u64 {
        vmx::vmread(field).unwrap_or_else(|| {
            say!("HV vmread {field:#x} failed");
            0
        })
    }

    fn vmwrite(&mut self, field: u32, value: u64) {
        // SAFETY: the shared routing only writes guest-state fields and the
        // VM-entry controls (IA-32e mode guest kept equal to EFER.LMA), never
        // host state, so the next VM exit still lands in the trampoline.
        if unsafe { vmx::vmwrite(field, value) }.is_err() {
            say!("HV vmwrite {field:#x} failed");
        }
    }

    fn rdmsr(&mut self, msr: u32) -> Result<u64, GpFault> {
        if self.hidden(msr) {
            return Err(GpFault);
        }
        cpu::rdmsr_safe(msr)
    }

    fn wrmsr(&mut self, msr: u32, value: u64) -> Result<(), GpFault> {
        if self.hidden(msr) {
            return Err(GpFault);
        }
        // SAFETY: the routing sends here the MSRs that are shared by host
        // and guest at this moment: those VM entry never switches, and those
        // whose load control the CPU does not offer. Changing them on a
        // debugger's request is hv-stub's purpose, and the host does not
        // depend on them: it runs with IF=0 and no user mode (so STAR, LSTAR,
        // KERNEL_GS_BASE... are unused), and the routing refuses EFER mode
        // changes. What remains a host effect (PAT memory types, DEBUGCTL
        // tracing, NXE on a CPU without the EFER load control) is documented
        // in docs/MSR-SEMANTICS.md; hv-stub turns on every load control the
        // CPU offers so those paths are rare.
        unsafe { cpu::wrmsr_safe(msr, value) }
    }

    fn entry_load_area(&mut self) -> &mut [MsrEntry] {
        &mut self.load_area[..self.load_count]
    }

    fn feature_control_shadow(&mut self) -> &mut u64 {
        &mut self.feature_control
    }
}

/// Each processor's backend, touched only by that processor (its exit
/// handler, or a request it runs from its mailbox).
static mut BACKENDS: [Option<RealVmx>; MAX_CPUS] = [const { None }; MAX_CPUS];
/// Guards against a second live reference to a processor's backend.
static IN_USE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// Installs processor `cpu`'s backend. Called by that processor before its
/// first VM entry.
pub fn install(cpu: usize, backend: RealVmx) {
    with_slot(cpu, |slot| *slot = Some(backend));
}

fn with_slot<R>(cpu: usize, f: impl FnOnce(&mut Option<RealVmx>) -> R) -> R {
    assert!(
        !IN_USE[cpu].swap(true, Ordering::Acquire),
        "backend of CPU {cpu} borrowed twice"
    );
    // SAFETY: slot `cpu` is only touched by processor `cpu` (callers pass
    // their own index), and the IN_USE flag rules out a nested borrow.
    let slot = unsafe { &mut (*addr_of_mut!(BACKENDS))[cpu] };
    let result = f(slot);
    IN_USE[cpu].store(false, Ordering::Release);
    result
}

/// Runs `f` with the backend of processor `cpu`, which must be the
/// processor executing this.
pub fn with_own<R>(cpu: usize, f: impl FnOnce(&mut RealVmx) -> R) -> R {
    with_slot(cpu, |slot| match slot {
        Some(backend) => f(backend),
        None => crate::hv::fatal("a CPU's backend used before it exists"),
    })
}

/// Budget for another processor to take a request, in TSC ticks: several
/// of its longest poll periods (a halted guest backs off), yet under the
/// client's per-attempt timeout under Bochs (docs/HV-STUB.md).
static BUDGET: AtomicU64 = AtomicU64::new(0);

pub fn set_request_budget(ticks: u64) {
    BUDGET.store(ticks, Ordering::SeqCst);
}

/// The debuggee's processors as the request handler on the link's
/// processor sees them: its own backend directly, every other one through
/// that processor's mailbox. A processor whose guest is not running
/// (waiting for SIPI, stopped) or that does not take the request in time
/// is inactive.
pub struct Machine;

impl Processors for Machine {
    type Backend = RealVmx;

    fn count(&self) -> usize {
        percpu::count()
    }

    fn state(&self, cpu: usize) -> CpuState {
        percpu::state(cpu)
    }

    fn with_cpu<R>(
        &mut self,
        cpu: usize,
        f: impl FnOnce(&mut RealVmx) -> R,
    ) -> Result<R, CpuError> {
        if cpu >= percpu::count() {
            return Err(CpuError::NoCpu);
        }
        if percpu::state(cpu) != CpuState::Running {
            return Err(CpuError::Inactive);
        }
        if cpu == percpu::current() {
            return Ok(with_own(cpu, f));
        }
        // Meanwhile the debugger's next bytes are kept for the link.
        mailbox::run_on(cpu, BUDGET.load(Ordering::Relaxed), link::hold_incoming, f)
            .ok_or(CpuError::Inactive)
    }
}
