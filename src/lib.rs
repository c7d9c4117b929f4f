//! libpulse: write and read the model-specific registers of a debuggee
//! machine through hv-stub, our minimal VMX hypervisor.
//!
//! C and C++ use the ABI in `include/pulse.h` (module [`ffi`]); Rust uses
//! [`Engine`] directly.
//!
//! ```text
//! ffi (C ABI) -> engine (session, retries, timeouts, locking)
//!             -> transport (sim | tcp | serial) -> pulse_proto frames
//!             -> hv-stub: handler -> routing -> VMX backend
//! ```

pub mod config;
pub mod engine;
mod entropy;
pub mod error;
pub mod ffi;
pub mod pipeline;
pub mod status;
#[doc(hidden)]
pub mod sys;
pub mod transport;

pub use config::{EngineConfig, TransportSpec};
pub use engine::Engine;
pub use error::Error;
pub use status::Status;

/// The library version (what `PsGetVersion` reports).
pub mod version;
