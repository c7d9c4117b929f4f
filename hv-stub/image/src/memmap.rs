//! Memory ownership: the ranges hv-stub itself occupies (which the guest
//! must never reach: EPT leaves them out and the guest's E820 map marks them
//! reserved) and the guest's memory map derived from the firmware's.

use core::ptr::addr_of;

use crate::firmware::{E820Entry, E820Map, E820_RESERVED, E820_USABLE, MAX_E820};

extern "C" {
    // Linker-script symbols (link.ld).
    static _image_end: u8;
    static _bss_start: u8;
    static _bss_end: u8;
}

pub const PAGE: u64 = 4096;

pub fn page_down(addr: u64) -> u64 {
    addr & !(PAGE - 1)
}

pub fn page_up(addr: u64) -> u64 {
    (addr + PAGE - 1) & !(PAGE - 1)
}

/// A half-open physical range [start, end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

impl Range {
    pub fn overlaps(&self, other: &Range) -> bool {
        self.start < other.end && other.start < self.end
    }

    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }
}

/// hv-stub's own pages, page-granular: the host page tables boot.s built
/// (0x1000-0x3FFF), the application processors' trampoline page (0x6000),
/// the loaded image (boot sector page 0x7000 to `_image_end`: code,
/// read-only data, data) and `.bss` (VMX regions, stacks, descriptor
/// tables, EPT tables, I/O and MSR bitmaps, per processor).
pub fn hv_stub_ranges() -> [Range; 3] {
    let image_end = addr_of!(_image_end) as u64;
    let bss_start = addr_of!(_bss_start) as u64;
    let bss_end = addr_of!(_bss_end) as u64;
    [
        Range {
            start: 0x1000,
            end: 0x4000,
        },
        Range {
            start: crate::smp::AP_BASE,
            end: page_up(image_end),
        },
        Range {
            start: page_down(bss_start),
            end: page_up(bss_end),
        },
    ]
}

/// Whether `addr` is in hv-stub's own memory.
pub fn is_hv_stub(addr: u64) -> bool {
    hv_stub_ranges().iter().any(|r| r.contains(addr))
}

/// The guest's E820 map: the firmware's, with hv-stub's pages cut out of
/// the usable entries and listed as reserved. Sorted by address.
pub struct GuestMap {
    pub entries: [E820Entry; MAX_E820],
    pub len: usize,
}

impl GuestMap {
    pub fn iter(&self) -> impl Iterator<Item = &E820Entry> {
        self.entries[..self.len].iter()
    }

    fn push(&mut self, entry: E820Entry) {
        if entry.size != 0 && self.len < MAX_E820 {
            self.entries[self.len] = entry;
            self.len += 1;
        }
    }

    /// Whether [start, end) lies inside one usable entry.
    pub fn is_usable(&self, range: Range) -> bool {
        self.iter()
            .any(|e| e.kind == E820_USABLE && e.addr <= range.start && range.end <= e.end())
    }

    /// The end of the highest usable RAM.
    pub fn ram_top(&self) -> u64 {
        self.iter()
            .filter(|e| e.kind == E820_USABLE)
            .map(E820Entry::end)
            .max()
            .unwrap_or(0)
    }
}

pub fn guest_map(firmware: &E820Map) -> GuestMap {
    let holes = hv_stub_ranges();
    let mut map = GuestMap {
        entries: [E820Entry::default(); MAX_E820],
        len: 0,
    };
    for entry in firmware.iter() {
        if entry.kind != E820_USABLE {
            map.push(*entry);
            continue;
        }
        // Usable RAM: keep what lies outside the holes (pages only).
        let mut start = page_up(entry.addr);
        let end = page_down(entry.end());
        for hole in holes.iter() {
            if hole.end <= start || hole.start >= end {
                continue;
            }
            if hole.start > start {
                map.push(usable(start, hole.start));
            }
            start = start.max(hole.end);
        }
        if end > start {
            map.push(usable(start, end));
        }
    }
    for hole in holes {
        map.push(E820Entry {
            addr: hole.start,
            size: hole.end - hole.start,
            kind: E820_RESERVED,
        });
    }
    let len = map.len;
    map.entries[..len].sort_unstable_by_key(|e| e.addr);
    map
}

fn usable(start: u64, end: u64) -> E820Entry {
    E820Entry {
        addr: start,
        size: end - start,
        kind: E820_USABLE,
    }
}
