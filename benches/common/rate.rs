//! Operations per second of a closure, the measure every bench row uses.

use std::time::{Duration, Instant};

/// Runs `op` (given its index) for `budget`, in batches of 64 so the clock
/// is read rarely; returns operations per second.
pub fn rate(budget: Duration, mut op: impl FnMut(u64)) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..64 {
            op(n);
            n += 1;
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}
