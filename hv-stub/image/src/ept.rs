//! Extended page tables: the guest's physical memory is host physical
//! memory 1:1 (the first 4 GiB, 2 MiB pages, RAM write-back and everything
//! above the highest RAM uncacheable), except hv-stub's own pages, which are
//! not present, so any guest access to them is an EPT violation.

use core::ptr::addr_of_mut;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::memmap::{Range, PAGE};

/// Guest-physical space mapped: 4 GiB (legacy MMIO: APIC, I/O APIC, BIOS).
pub const MAPPED: u64 = 4 << 30;
const LARGE: u64 = 2 << 20;
const PD_TABLES: usize = (MAPPED >> 30) as usize;
/// 4 KiB tables for the 2 MiB regions that contain hv-stub's pages.
const PT_POOL: usize = 4;

const READ_WRITE_EXECUTE: u64 = 0b111;
const LARGE_PAGE: u64 = 1 << 7;
const MEMTYPE_UC: u64 = 0;
const MEMTYPE_WB: u64 = 6;
/// EPTP: write-back paging structures, 4-level walk (length - 1 = 3).
const EPTP_WB_4LEVEL: u64 = 6 | (3 << 3);

#[repr(C, align(4096))]
struct Table([u64; 512]);

#[repr(C, align(4096))]
struct Tables {
    pml4: Table,
    pdpt: Table,
    pd: [Table; PD_TABLES],
    pt: [Table; PT_POOL],
}

const EMPTY: Table = Table([0; 512]);
static mut TABLES: Tables = Tables {
    pml4: EMPTY,
    pdpt: EMPTY,
    pd: [EMPTY; PD_TABLES],
    pt: [EMPTY; PT_POOL],
};
static TAKEN: AtomicBool = AtomicBool::new(false);

fn addr<T>(table: &T) -> u64 {
    table as *const T as u64
}

/// The legacy VGA and ROM window below 1 MiB.
const LEGACY_IO: Range = Range {
    start: 0xA_0000,
    end: 0x10_0000,
};

fn memtype(gpa: u64, ram_top: u64) -> u64 {
    if gpa < ram_top && !LEGACY_IO.contains(gpa) {
        MEMTYPE_WB
    } else {
        MEMTYPE_UC
    }
}

/// Builds the tables once and returns the EPT pointer. `holes` are hv-stub's
/// page-aligned ranges; `ram_top` the end of the highest RAM.
pub fn build(holes: &[Range], ram_top: u64) -> Result<u64, &'static str> {
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err("EPT tables built twice");
    }
    // SAFETY: the TAKEN flag makes this the only reference ever created to
    // TABLES ('static, in .bss, identity-mapped), which from now on only the
    // processor reads (through the EPT pointer).
    let t: &'static mut Tables = unsafe { &mut *addr_of_mut!(TABLES) };
    t.pml4.0[0] = addr(&t.pdpt) | READ_WRITE_EXECUTE;
    let mut next_pt = 0;
    for (gi, pd) in t.pd.iter_mut().enumerate() {
        t.pdpt.0[gi] = addr(pd) | READ_WRITE_EXECUTE;
        for (mi, entry) in pd.0.iter_mut().enumerate() {
            let base = ((gi as u64) << 30) | (mi as u64 * LARGE);
            let region = Range {
                start: base,
                end: base + LARGE,
            };
            if !holes.iter().any(|h| h.overlaps(&region)) {
                *entry = base | READ_WRITE_EXECUTE | LARGE_PAGE | memtype(base, ram_top) << 3;
                continue;
            }
            let Some(pt) = t.pt.get_mut(next_pt) else {
                return Err("hv-stub's pages span too many 2 MiB regions for the EPT pool");
            };
            next_pt += 1;
            for (pi, pte) in pt.0.iter_mut().enumerate() {
                let page = base + pi as u64 * PAGE;
                *pte = if holes.iter().any(|h| h.contains(page)) {
                    0 // not present: hv-stub's page
                } else {
                    page | READ_WRITE_EXECUTE | memtype(page, ram_top) << 3
                };
            }
            *entry = addr(pt) | READ_WRITE_EXECUTE;
        }
    }
    Ok(addr(&t.pml4) | EPTP_WB_4LEVEL)
}
