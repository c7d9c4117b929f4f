//! The debuggee's pre-shared key (docs/SECURITY.md): a slot in the image
//! that `set-key.sh IMAGE KEYFILE` fills in on the disk image (run-bochs.sh
//! -K does it on a copy). An empty slot means no key: the unauthenticated
//! protocol.

use pulse_proto::auth::KEY_LEN;
use pulse_proto::Psk;

/// What set-key.sh looks for on the disk image; the flag byte and the key
/// follow it.
const MAGIC: [u8; 16] = *b"hv-stub key slot";
/// Flag value of a filled slot.
const FILLED: u8 = 1;

/// MAGIC, flag (0: no key, 1: key), the key's 32 bytes.
#[used]
static KEY_SLOT: [u8; 16 + 1 + KEY_LEN] = {
    let mut slot = [0u8; 16 + 1 + KEY_LEN];
    let mut i = 0;
    while i < 16 {
        slot[i] = MAGIC[i];
        i += 1;
    }
    slot
};

/// The key set-key.sh wrote, if any.
pub fn configured() -> Option<Psk> {
    // Read at run time (volatile) so that the compiler cannot fold the
    // slot's build-time contents (no key) into the code.
    // SAFETY: KEY_SLOT is a static of exactly this type, always readable.
    let slot = unsafe { core::ptr::read_volatile(&KEY_SLOT) };
    if slot[16] != FILLED {
        return None;
    }
    let mut key = [0u8; KEY_LEN];
    key.copy_from_slice(&slot[17..]);
    Some(Psk::new(key))
}
