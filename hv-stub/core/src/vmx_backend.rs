//! The interface between the routing logic and a VMX implementation. One
//! routing table drives two backends: the real one (VMREAD/VMWRITE/RDMSR/
//! WRMSR in VMX-root mode, in the bare-metal image) and the software model
//! (`crate::model`).

use crate::caps::CpuCaps;

/// WRMSR or RDMSR raised #GP (or would have: the value was refused).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GpFault;

/// One entry of a VM-entry MSR-load area, laid out as the SDM's Table 25-15.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct MsrEntry {
    /// The MSR index.
    pub index: u32,
    /// Must be 0 (VM entry fails otherwise).
    pub reserved: u32,
    /// The value VM entry loads as if by WRMSR.
    pub value: u64,
}

/// What the routing needs from a VMX implementation on one processor: the
/// current VMCS, RDMSR/WRMSR in VMX-root mode with #GP caught, the
/// VM-entry MSR-load area and the IA32_FEATURE_CONTROL shadow.
pub trait VmxBackend {
    /// What the processor supports.
    fn caps(&self) -> &CpuCaps;
    /// VMREAD of the current VMCS. Fields the routing uses always exist.
    fn vmread(&self, field: u32) -> u64;
    /// VMWRITE to the current VMCS.
    fn vmwrite(&mut self, field: u32, value: u64);
    /// RDMSR in VMX-root mode; #GP is caught and returned.
    fn rdmsr(&mut self, msr: u32) -> Result<u64, GpFault>;
    /// WRMSR in VMX-root mode; #GP is caught and returned, nothing changes.
    fn wrmsr(&mut self, msr: u32, value: u64) -> Result<(), GpFault>;
    /// The VM-entry MSR-load area entries in force (as many as the VMCS
    /// count field says).
    fn entry_load_area(&mut self) -> &mut [MsrEntry];
    /// The IA32_FEATURE_CONTROL value the guest's RDMSR sees.
    fn feature_control_shadow(&mut self) -> &mut u64;
}
