//! An outage of any length costs one handshake: the engine's sequence
//! numbers run ahead while nothing arrives (tens of thousands of calls,
//! past a 2^15 window and past the end of a session's sequence space), and
//! the first call after the link returns succeeds, in a new session; none
//! of the calls that timed out is executed, then or later.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hv_stub::msr::index::IA32_LSTAR;
use hv_stub::CpuCaps;
use hv_stub_sim::SharedTarget;
use pulse::transport::{LinkError, Transport};
use pulse::{Engine, Status};

/// The simulated debuggee over an in-memory line that can go down: while
/// it is down, requests vanish and every wait ends at once (so an outage
/// of many calls takes little time).
struct Line {
    target: SharedTarget,
    inbox: VecDeque<u8>,
    down: Arc<AtomicBool>,
    /// Hellos sent while the line was down.
    hellos_lost: Arc<AtomicU64>,
}

impl Transport for Line {
    fn send(&mut self, bytes: &[u8], _deadline: Instant) -> Result<(), LinkError> {
        if self.down.load(Ordering::Relaxed) {
            if bytes.get(2) == Some(&pulse_proto::message::kind::HELLO) {
                self.hellos_lost.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(());
        }
        let inbox = &mut self.inbox;
        self.target
            .lock()
            .receive(bytes, |response| inbox.extend(response));
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8], _deadline: Instant) -> Result<usize, LinkError> {
        if self.inbox.is_empty() {
            return Err(LinkError::TimedOut);
        }
        let n = buf.len().min(self.inbox.len());
        for (slot, byte) in buf.iter_mut().zip(self.inbox.drain(..n)) {
            *slot = byte;
        }
        Ok(n)
    }
}

/// What the debuggee's counters moved by in the first two calls after
/// an outage of `calls` calls, and how many Hellos the outage swallowed.
struct Recovery {
    handshakes: u64,
    naks: u64,
    writes_executed: u64,
    hellos_lost: u64,
}

fn outage_of(calls: u64) -> Recovery {
    let target = hv_stub_sim::new_target(CpuCaps::MODERN);
    let down = Arc::new(AtomicBool::new(false));
    let hellos_lost = Arc::new(AtomicU64::new(0));
    let line = Line {
        target: Arc::clone(&target),
        inbox: VecDeque::new(),
        down: Arc::clone(&down),
        hellos_lost: Arc::clone(&hellos_lost),
    };
    let engine =
        Engine::with_transport(Box::new(line), Duration::from_millis(100), 3).expect("handshake");
    assert_eq!(engine.write_msr(IA32_LSTAR, 0xFFFF_F800_0000_0001), Ok(()));

    down.store(true, Ordering::Relaxed);
    for i in 0..calls {
        let value = 0xFFFF_F800_1000_0000 | i << 4;
        assert_eq!(
            engine.write_msr(IA32_LSTAR, value).map_err(|e| e.status()),
            Err(Status::TIMEOUT),
            "call {i} during the outage"
        );
    }
    down.store(false, Ordering::Relaxed);

    let before = target.lock().stub().stats();
    assert_eq!(engine.write_msr(IA32_LSTAR, 0xFFFF_F800_0000_0002), Ok(()));
    assert_eq!(engine.read_msr(IA32_LSTAR), Ok(0xFFFF_F800_0000_0002));
    let after = target.lock().stub().stats();
    Recovery {
        handshakes: after.handshakes - before.handshakes,
        naks: after.naks - before.naks,
        writes_executed: after.writes_executed,
        hellos_lost: hellos_lost.load(Ordering::Relaxed),
    }
}

#[test]
fn after_40000_timed_out_calls_one_handshake_recovers() {
    // Past a 2^15 window: a serial-number check would call every later
    // request stale and the engine would time out for good. After a timed
    // out request the engine opens a new session before the next one.
    let r = outage_of(40_000);
    assert!(r.hellos_lost > 0, "no new session was attempted");
    assert_eq!(r.naks, 0, "nothing was refused");
    assert_eq!(r.handshakes, 1, "one new session");
    assert_eq!(r.writes_executed, 2, "only the two writes that got through");
}

#[test]
fn after_70000_timed_out_calls_the_used_up_session_is_replaced_first() {
    // The session's 65535 requests ran out during the outage: the engine
    // tries to open a new one before each later call.
    let r = outage_of(70_000);
    assert!(r.hellos_lost > 0, "no new session was attempted");
    assert_eq!(r.naks, 0, "no request of a used-up session was sent");
    assert_eq!(r.handshakes, 1, "one new session");
    assert_eq!(r.writes_executed, 2, "only the two writes that got through");
}
