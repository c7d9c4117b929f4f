//! Requests kept in flight: a client that sends up to a window of requests
//! before it waits for the oldest answer, the measure of the pipelining
//! benches (libpulse's `Submitter` and the bare floor clients alike).

use std::time::{Duration, Instant};

/// A link on which requests can be sent ahead of their answers, which
/// come back in order.
pub trait Window {
    /// Sends one more request.
    fn send(&mut self);
    /// Waits for the oldest outstanding request's answer (and checks it).
    fn receive(&mut self);
}

/// Keeps `window` requests outstanding on `link` for `budget`: answers
/// per second. The last `window - 1` requests are drained afterwards, off
/// the clock, so the next measurement starts from an idle link.
pub fn keep_in_flight(link: &mut impl Window, window: usize, budget: Duration) -> f64 {
    assert!(window > 0, "a window of at least one request");
    let start = Instant::now();
    for _ in 0..window {
        link.send();
    }
    let mut answered = 0u64;
    let elapsed = loop {
        link.receive();
        answered += 1;
        let elapsed = start.elapsed();
        if elapsed >= budget {
            break elapsed;
        }
        link.send();
    };
    for _ in 1..window {
        link.receive();
    }
    answered as f64 / elapsed.as_secs_f64()
}
