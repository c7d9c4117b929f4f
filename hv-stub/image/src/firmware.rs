//! What boot.s's real-mode second stage left in low memory before it left
//! real mode: the firmware's E820 memory map (INT 15h EAX=E820h) and, on a
//! disk made by build-disk.sh, the payload table with the guest kernel's
//! command line and the staged kernel and initrd files. Read once, before
//! anything reuses those pages.

use core::ptr::addr_of;

use crate::phys;

extern "C" {
    // Absolute symbols defined in boot.s (their addresses are the facts).
    static hv_e820_map: u8;
    static hv_payload_table: u8;
    static hv_payload_stage: u8;
}

pub const E820_USABLE: u32 = 1;
pub const E820_RESERVED: u32 = 2;
pub const MAX_E820: usize = 128;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

impl E820Entry {
    pub fn end(&self) -> u64 {
        self.addr.saturating_add(self.size)
    }
}

/// The firmware's E820 map, as returned (at most `MAX_E820` entries).
pub struct E820Map {
    pub entries: [E820Entry; MAX_E820],
    pub len: usize,
}

impl E820Map {
    pub fn iter(&self) -> impl Iterator<Item = &E820Entry> {
        self.entries[..self.len].iter()
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from(u32_at(bytes, at)) | u64::from(u32_at(bytes, at + 4)) << 32
}

pub fn e820() -> E820Map {
    let base = addr_of!(hv_e820_map) as u64;
    let count = (u32_at(phys::slice(base, 4), 0) as usize).min(MAX_E820 - 1);
    let raw = phys::slice(base + 8, count * 24);
    let mut map = E820Map {
        entries: [E820Entry::default(); MAX_E820],
        len: 0,
    };
    for chunk in raw.chunks_exact(24) {
        let entry = E820Entry {
            addr: u64_at(chunk, 0),
            size: u64_at(chunk, 8),
            kind: u32_at(chunk, 16),
        };
        if entry.size != 0 {
            map.entries[map.len] = entry;
            map.len += 1;
        }
    }
    map
}

/// The payload table build-disk.sh writes at LBA 1008 (little-endian):
/// magic "HVLINUX1", kernel LBA/sectors/bytes, initrd LBA/sectors/bytes,
/// command-line length; the command line from byte 512.
pub const PAYLOAD_MAGIC: &[u8; 8] = b"HVLINUX1";
/// 8 sectors are loaded; the command line gets the 7 after the header.
pub const CMDLINE_MAX: usize = 7 * 512 - 1;

/// Where the staged files are and the command line to give the kernel.
pub struct Payload {
    pub kernel_addr: u64,
    pub kernel_len: usize,
    pub initrd_addr: u64,
    pub initrd_len: usize,
    pub cmdline: [u8; CMDLINE_MAX],
    pub cmdline_len: usize,
}

impl Payload {
    pub fn cmdline(&self) -> &[u8] {
        &self.cmdline[..self.cmdline_len]
    }
}

/// The payload, if the disk has one.
pub fn payload() -> Option<Payload> {
    let table = phys::slice(addr_of!(hv_payload_table) as u64, 8 * 512);
    if &table[..8] != PAYLOAD_MAGIC {
        return None;
    }
    let kernel_sectors = u64::from(u32_at(table, 12));
    let kernel_addr = addr_of!(hv_payload_stage) as u64;
    // boot.s puts the initrd 4 KiB-aligned after the kernel's sectors.
    let initrd_addr = (kernel_addr + kernel_sectors * 512 + 0xFFF) & !0xFFF;
    let cmdline_len = (u32_at(table, 32) as usize).min(CMDLINE_MAX);
    let mut cmdline = [0; CMDLINE_MAX];
    cmdline[..cmdline_len].copy_from_slice(&table[512..512 + cmdline_len]);
    Some(Payload {
        kernel_addr,
        kernel_len: u32_at(table, 16) as usize,
        initrd_addr,
        initrd_len: u32_at(table, 28) as usize,
        cmdline,
        cmdline_len,
    })
}
