//! `sim`: the hv-stub core on the software VMX model, in process. Real
//! frames go through an in-memory byte pipe, so the codec, the sessions and
//! the reply cache are exercised exactly as over a wire.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use hv_stub::sim::SimTarget;
use hv_stub::CpuCaps;
use parking_lot::Mutex;

use super::{LinkError, Transport};
use crate::engine::Engine;

pub struct SimTransport {
    target: Arc<Mutex<SimTarget>>,
    /// Bytes the debuggee sent that the engine has not read yet.
    inbox: VecDeque<u8>,
}

impl SimTransport {
    /// A simulated debuggee with `cpus` processors of kind `cpu`, the first
    /// `online` of them running.
    pub fn new(cpu: CpuCaps, cpus: usize, online: usize) -> Self {
        let target = SimTarget::with_cpus(cpu, cpus, online, crate::entropy::u64());
        SimTransport {
            target: Arc::new(Mutex::new(target)),
            inbox: VecDeque::new(),
        }
    }

    pub fn target(&self) -> Arc<Mutex<SimTarget>> {
        Arc::clone(&self.target)
    }
}

impl Transport for SimTransport {
    fn send(&mut self, bytes: &[u8], _deadline: Instant) -> Result<(), LinkError> {
        let inbox = &mut self.inbox;
        self.target
            .lock()
            .receive(bytes, |response| inbox.extend(response));
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8], deadline: Instant) -> Result<usize, LinkError> {
        if self.inbox.is_empty() {
            // The simulated debuggee answers synchronously; silence now means
            // silence until the deadline, as on a real link.
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
            return Err(LinkError::TimedOut);
        }
        let n = buf.len().min(self.inbox.len());
        for (slot, byte) in buf.iter_mut().zip(self.inbox.drain(..n)) {
            *slot = byte;
        }
        Ok(n)
    }

    fn in_process_debuggee(&self) -> Option<&dyn Any> {
        Some(&self.target)
    }
}

impl Engine {
    /// The simulated debuggee behind a `sim` engine, for inspection.
    pub fn sim_target(&self) -> Option<Arc<Mutex<SimTarget>>> {
        self.inspect_transport(|transport| {
            transport
                .in_process_debuggee()?
                .downcast_ref::<Arc<Mutex<SimTarget>>>()
                .cloned()
        })
    }
}
