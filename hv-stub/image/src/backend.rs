//! The real VMX backend of hv-stub's routing: VMREAD/VMWRITE of the current
//! VMCS, fault-safe RDMSR/WRMSR in VMX-root mode, the VM-entry MSR-load area
//! and the IA32_FEATURE_CONTROL shadow the guest's RDMSR sees; and the
//! processor it runs on, as the request handler sees it (`GuestCpu`).

use hv_stub::cpus::{CpuError, CpuState, Processors};
use hv_stub::{CpuCaps, GpFault, MsrEntry, VmxBackend};

use crate::{cpu, say, vmx};

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

/// The one processor hv-stub virtualises today, and whether its guest still
/// runs: once the guest cannot continue (triple fault, INIT, an access to
/// hv-stub's memory, ...) it is `Stopped`, which the debugger sees in
/// CPU_INFO and as "CPU inactive" for MSR requests.
pub struct GuestCpu {
    pub vmx: RealVmx,
    pub state: CpuState,
}

impl Processors for GuestCpu {
    type Backend = RealVmx;

    fn count(&self) -> usize {
        1
    }

    fn state(&self, _cpu: usize) -> CpuState {
        self.state
    }

    fn with_cpu<R>(
        &mut self,
        cpu: usize,
        f: impl FnOnce(&mut RealVmx) -> R,
    ) -> Result<R, CpuError> {
        if cpu != 0 {
            return Err(CpuError::NoCpu);
        }
        Ok(f(&mut self.vmx))
    }
}
