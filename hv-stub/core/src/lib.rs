//! hv-stub's core, shared by every way hv-stub runs: the bare-metal
//! hypervisor image (real VMX), the in-process `sim` target of libpulse and
//! the `hv-stub-sim` server (both on the software model).
//!
//! * [`handler`]: the protocol side — sessions, exactly-once execution;
//! * [`cpus`]: the debuggee's processors; per-CPU and all-CPU requests;
//! * [`routing`]: where each MSR write lands so the guest sees it (SDM 26.3.2.1);
//! * [`validate`]: values the processor refuses (#GP before anything changes);
//! * [`vmx_backend`]: the interface to a VMX implementation; [`model`]: the
//!   software VMX backend;
//! * [`simulated`]: a whole simulated debuggee (handler + model + observer
//!   guest), what libpulse's `sim` transport and `hv-stub-sim` serve;
//! * [`caps`]: processor capabilities and the model's CPU profiles;
//! * [`msr`]: MSR indices, VMCS encodings, control bits;
//! * [`msr_table`]: the one table of the MSRs hv-stub knows, which the
//!   routing, the model, the policy and the watched lists derive from;
//! * [`policy`]: how hv-stub configures VMX (shared by the model and the image).
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod caps;
pub mod cpus;
pub mod handler;
pub mod model;
pub mod msr;
pub mod msr_table;
pub mod policy;
pub mod routing;
pub mod simulated;
pub mod validate;
pub mod vmx_backend;

pub use caps::CpuCaps;
pub use handler::{HandlerStats, Stub, WINDOW};
pub use model::SoftVmx;
pub use vmx_backend::{GpFault, MsrEntry, VmxBackend};
