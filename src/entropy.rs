//! Unpredictable numbers for handshake nonces and starting sequence numbers:
//! [`u64`] without a dependency (std's per-process random hash keys, mixed
//! with the time and a counter) for the unauthenticated protocol's session
//! numbering; the OS's random numbers for keys and authenticated nonces.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

pub fn u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    if let Ok(now) = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// 16 random bytes from the OS (an authenticated handshake's nonce), or
/// `None` if the OS has none to give.
pub fn nonce() -> Option<[u8; pulse_proto::auth::NONCE_LEN]> {
    let mut bytes = [0u8; pulse_proto::auth::NONCE_LEN];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes)
}

/// A new random pre-shared key from the OS.
pub fn key() -> Option<pulse_proto::Psk> {
    let mut bytes = [0u8; pulse_proto::auth::KEY_LEN];
    getrandom::fill(&mut bytes).ok()?;
    Some(pulse_proto::Psk::new(bytes))
}
