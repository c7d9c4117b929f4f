//! `sim`: the hv-stub core on the software VMX model, in process. Real
//! frames go through an in-memory byte pipe, so the codec, the sessions and
//! the reply cache are exercised exactly as over a wire.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use hv_stub::simulated::SimTarget;
use hv_stub::CpuCaps;
use parking_lot::{Condvar, Mutex};

use super::{LinkError, Sender, Transport};
use crate::engine::Engine;

/// Both ends of the pipe: the debuggee and the bytes it sent back.
struct Pipe {
    target: Arc<Mutex<SimTarget>>,
    /// Bytes the debuggee sent that the engine has not read yet, and
    /// whether the link was closed.
    inbox: Mutex<(VecDeque<u8>, bool)>,
    arrived: Condvar,
}

impl Pipe {
    /// The simulated debuggee answers synchronously, into the inbox.
    fn send(&self, bytes: &[u8]) {
        let mut answers = Vec::new();
        self.target
            .lock()
            .receive(bytes, |response| answers.extend_from_slice(response));
        if !answers.is_empty() {
            self.inbox.lock().0.extend(answers);
            self.arrived.notify_all();
        }
    }
}

pub struct SimTransport {
    pipe: Arc<Pipe>,
}

impl SimTransport {
    /// A simulated debuggee with `cpus` processors of kind `cpu`, the first
    /// `online` of them running.
    pub fn new(cpu: CpuCaps, cpus: usize, online: usize) -> Self {
        let target = SimTarget::with_cpus(cpu, cpus, online, crate::entropy::u64());
        SimTransport {
            pipe: Arc::new(Pipe {
                target: Arc::new(Mutex::new(target)),
                inbox: Mutex::new((VecDeque::new(), false)),
                arrived: Condvar::new(),
            }),
        }
    }

    pub fn target(&self) -> Arc<Mutex<SimTarget>> {
        Arc::clone(&self.pipe.target)
    }
}

struct SimSender {
    pipe: Arc<Pipe>,
}

impl Sender for SimSender {
    fn send(&mut self, bytes: &[u8], _deadline: Instant) -> Result<(), LinkError> {
        self.pipe.send(bytes);
        Ok(())
    }

    fn close(&mut self) {
        self.pipe.inbox.lock().1 = true;
        self.pipe.arrived.notify_all();
    }
}

impl Transport for SimTransport {
    fn send(&mut self, bytes: &[u8], _deadline: Instant) -> Result<(), LinkError> {
        self.pipe.send(bytes);
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8], deadline: Instant) -> Result<usize, LinkError> {
        let mut inbox = self.pipe.inbox.lock();
        loop {
            if inbox.1 {
                return Err(LinkError::Lost(std::io::Error::other(
                    "the link was closed",
                )));
            }
            if !inbox.0.is_empty() {
                break;
            }
            if self
                .pipe
                .arrived
                .wait_until(&mut inbox, deadline)
                .timed_out()
                && inbox.0.is_empty()
            {
                return Err(LinkError::TimedOut);
            }
        }
        let n = buf.len().min(inbox.0.len());
        for (slot, byte) in buf.iter_mut().zip(inbox.0.drain(..n)) {
            *slot = byte;
        }
        Ok(n)
    }

    fn sender(&self) -> Option<Box<dyn Sender>> {
        Some(Box::new(SimSender {
            pipe: Arc::clone(&self.pipe),
        }))
    }

    fn in_process_debuggee(&self) -> Option<Box<dyn Any + Send + Sync>> {
        Some(Box::new(self.target()))
    }
}

impl Engine {
    /// The simulated debuggee behind a `sim` engine, for inspection.
    pub fn sim_target(&self) -> Option<Arc<Mutex<SimTarget>>> {
        self.in_process_debuggee()?
            .downcast_ref::<Arc<Mutex<SimTarget>>>()
            .cloned()
    }
}
