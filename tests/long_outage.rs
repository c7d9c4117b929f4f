//! An outage of any length costs one handshake: after the first call that
//! times out, every later call tries to open a new session first (the
//! debuggee would hold later requests of the old one for the lost one), so
//! no sequence number runs ahead while nothing arrives; the first call
//! after the link returns succeeds, in a new session, and none of the calls
//! that timed out is executed, then or later. And a session used up by
//! 65535 requests is replaced once the requests in flight in it are in.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hv_stub::msr::index::IA32_LSTAR;
use hv_stub::CpuCaps;
use hv_stub_sim::SharedTarget;
use pulse::engine::{Operation, Pending};
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
    // Short attempts: the outage's calls each wait their whole budget.
    let engine =
        Engine::with_transport(Box::new(line), Duration::from_millis(2), 2).expect("handshake");
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
fn after_300_timed_out_calls_one_handshake_recovers() {
    let r = outage_of(300);
    assert!(
        r.hellos_lost >= 299,
        "each call after the first tried a new session"
    );
    assert_eq!(r.naks, 0, "nothing was refused");
    assert_eq!(r.handshakes, 1, "one new session");
    assert_eq!(r.writes_executed, 2, "only the two writes that got through");
}

#[test]
fn a_used_up_session_is_replaced_once_its_requests_are_in() {
    const WRITES: u64 = 70_000;
    let target = hv_stub_sim::new_target(CpuCaps::MODERN);
    let line = Line {
        target: Arc::clone(&target),
        inbox: VecDeque::new(),
        down: Arc::new(AtomicBool::new(false)),
        hellos_lost: Arc::new(AtomicU64::new(0)),
    };
    let engine =
        Engine::with_transport(Box::new(line), Duration::from_millis(1000), 3).expect("handshake");
    let submitter = engine.submitter();
    let mut pending = VecDeque::new();
    for i in 0..WRITES {
        pending.push_back(submitter.submit(Operation::WriteMsr {
            msr: IA32_LSTAR,
            value: 0xFFFF_F800_0000_0000 | i << 4,
        }));
        while pending.len() >= 64 || (i + 1 == WRITES && !pending.is_empty()) {
            let oldest: Pending = pending.pop_front().expect("not empty");
            assert!(oldest.wait_until(oldest.deadline()));
            assert_eq!(
                oldest.outcome().map(|r| r.map_err(|e| e.status())),
                Some(Ok(0))
            );
        }
    }
    let stats = target.lock().stub().stats();
    assert_eq!(stats.writes_executed, WRITES, "each write ran once");
    assert_eq!(stats.handshakes, 2, "the first session and its successor");
    assert_eq!(stats.naks, 0, "no request beyond a session or its window");
    assert_eq!(engine.stats().handshakes, 2);
    assert_eq!(
        engine.read_msr(IA32_LSTAR),
        Ok(0xFFFF_F800_0000_0000 | (WRITES - 1) << 4)
    );
}
