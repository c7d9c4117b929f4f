//! Physical memory the host reads and writes while it prepares a guest: the
//! low pages boot.s filled (E820 map, payload table), the staged kernel and
//! initrd, and the guest's boot structures. The host's page tables map the
//! first 1 GiB 1:1 (boot.s), so a physical address is a pointer there.

/// Identity-mapped by boot.s.
pub const HOST_MAPPED: u64 = 1 << 30;

fn check(addr: u64, len: usize) {
    let end = addr.checked_add(len as u64);
    assert!(
        addr != 0 && end.is_some_and(|end| end <= HOST_MAPPED),
        "physical range {addr:#x}+{len:#x} outside the host's identity map"
    );
}

/// A read-only view of physical memory that nothing writes while it lives.
pub fn slice(addr: u64, len: usize) -> &'static [u8] {
    check(addr, len);
    // SAFETY: the range is identity-mapped (checked above), RAM that boot.s
    // or the firmware filled, and the callers (firmware, linux) only view
    // ranges that no live Rust reference covers and that the host does not
    // write while the view is in use.
    unsafe { core::slice::from_raw_parts(addr as *const u8, len) }
}

/// Copies `bytes` to physical `addr` (guest RAM the caller owns).
pub fn write(addr: u64, bytes: &[u8]) {
    check(addr, bytes.len());
    // SAFETY: identity-mapped (checked); the callers write only guest RAM
    // that the memory map says is usable and outside hv-stub's own pages, so
    // no Rust object lives there; `copy` allows `bytes` to overlap the target.
    unsafe { core::ptr::copy(bytes.as_ptr(), addr as *mut u8, bytes.len()) }
}

/// Moves `len` bytes from physical `from` to physical `to` (may overlap).
pub fn move_bytes(to: u64, from: u64, len: usize) {
    check(to, len);
    check(from, len);
    // SAFETY: both ranges are identity-mapped (checked) guest RAM outside
    // hv-stub's pages (the callers take them from the memory map); `copy` is
    // memmove.
    unsafe { core::ptr::copy(from as *const u8, to as *mut u8, len) }
}

/// Zeroes `len` bytes at physical `addr` (guest RAM the caller owns).
pub fn zero(addr: u64, len: usize) {
    check(addr, len);
    // SAFETY: as in `write`.
    unsafe { core::ptr::write_bytes(addr as *mut u8, 0, len) }
}

/// Writes a little-endian u64 at physical `addr` (guest RAM the caller owns).
pub fn write_u64(addr: u64, value: u64) {
    write(addr, &value.to_le_bytes());
}
