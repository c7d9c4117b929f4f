//! The Linux x86 boot protocol, 64-bit entry (Documentation/arch/x86/
//! boot.rst): checks the staged bzImage's setup header, moves the
//! protected-mode kernel to its load address and the initrd to the top of
//! RAM, and builds in guest RAM what the 64-bit entry expects: `boot_params`
//! (the "zero page", with the guest's E820 map, the command line and the
//! initrd), a GDT with __BOOT_CS 0x10 / __BOOT_DS 0x18, and identity-mapped
//! page tables. The VMCS guest state itself is written by `guest_state`.

use core::fmt;

use crate::firmware::{Payload, E820_USABLE};
use crate::memmap::{page_down, GuestMap, Range, PAGE};
use crate::phys;

/// Fixed guest-physical addresses of the boot structures: conventional RAM
/// below the EBDA that neither hv-stub nor the kernel's load range uses.
pub const BOOT_PARAMS: u64 = 0x9_0000;
const CMDLINE: u64 = 0x9_1000;
pub const GDT: u64 = 0x9_2000;
/// The guest's initial TSS (VM entry needs a usable TR; Linux loads its own).
pub const TSS: u64 = 0x9_2100;
const PML4: u64 = 0x9_3000;
const PDPT: u64 = 0x9_4000;
const PD: u64 = 0x9_5000;
/// Identity-mapped by the initial page tables (2 MiB pages).
const MAPPED_GIB: u64 = 4;
/// The boot structures span [BOOT_AREA_START, BOOT_AREA_END); the initial
/// stack grows down from STACK_TOP below them.
const BOOT_AREA_START: u64 = 0x8_8000;
const BOOT_AREA_END: u64 = PD + MAPPED_GIB * PAGE;
pub const STACK_TOP: u64 = BOOT_PARAMS - 16;

pub const BOOT_CS: u16 = 0x10;
pub const BOOT_DS: u16 = 0x18;
pub const BOOT_TR: u16 = 0x20;
pub const GDT_LIMIT: u32 = 0x2F;

// Setup header fields (offsets in the file and in boot_params).
const SETUP_SECTS: usize = 0x1F1;
const VID_MODE: usize = 0x1FA;
const JUMP: usize = 0x200;
const HEADER_MAGIC: usize = 0x202;
const VERSION: usize = 0x206;
const TYPE_OF_LOADER: usize = 0x210;
const LOADFLAGS: usize = 0x211;
const CODE32_START: usize = 0x214;
const RAMDISK_IMAGE: usize = 0x218;
const RAMDISK_SIZE: usize = 0x21C;
const CMD_LINE_PTR: usize = 0x228;
const INITRD_ADDR_MAX: usize = 0x22C;
const KERNEL_ALIGNMENT: usize = 0x230;
const RELOCATABLE_KERNEL: usize = 0x234;
const XLOADFLAGS: usize = 0x236;
const CMDLINE_SIZE: usize = 0x238;
const PREF_ADDRESS: usize = 0x258;
const INIT_SIZE: usize = 0x260;
const HEADER_END: usize = 0x264;
// boot_params fields outside the setup header.
const EXT_RAMDISK_IMAGE: usize = 0x0C0;
const EXT_RAMDISK_SIZE: usize = 0x0C4;
const EXT_CMD_LINE_PTR: usize = 0x0C8;
const E820_ENTRIES: usize = 0x1E8;
const E820_TABLE: usize = 0x2D0;
const E820_TABLE_MAX: usize = 128;

const LOADED_HIGH: u8 = 1 << 0;
const XLF_KERNEL_64: u16 = 1 << 0;
/// 64-bit entry point, relative to the load address.
const ENTRY_64: u64 = 0x200;

/// Why the payload cannot be booted: printed as `HV ERROR <this>`.
pub enum LoadError {
    NotBzImage,
    ProtocolTooOld(u16),
    Not64Bit,
    NoInitrd,
    CmdlineTooLong { len: usize, max: usize },
    NoRoomForKernel { addr: u64, size: u64 },
    NoRoomForInitrd { size: u64 },
    BootAreaNotRam,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::NotBzImage => {
                write!(
                    f,
                    "kernel is not a bzImage (no \"HdrS\" setup header at 0x202)"
                )
            }
            LoadError::ProtocolTooOld(v) => write!(
                f,
                "kernel boot protocol {}.{:02} is too old: the 64-bit entry needs 2.12",
                v >> 8,
                v & 0xFF
            ),
            LoadError::Not64Bit => write!(f, "kernel has no 64-bit entry (XLF_KERNEL_64 clear)"),
            LoadError::NoInitrd => write!(f, "initrd is missing (0 bytes on the disk)"),
            LoadError::CmdlineTooLong { len, max } => write!(
                f,
                "kernel command line is {len} bytes, the kernel accepts at most {max}"
            ),
            LoadError::NoRoomForKernel { addr, size } => write!(
                f,
                "guest RAM has no {size:#x} usable bytes at {addr:#x} for the kernel (init_size)"
            ),
            LoadError::NoRoomForInitrd { size } => {
                write!(f, "guest RAM has no room for the {size:#x}-byte initrd")
            }
            LoadError::BootAreaNotRam => write!(f, "guest boot structures not in usable RAM"),
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32_at(b, at)) | u64::from(u32_at(b, at + 4)) << 32
}

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// What the setup header says, copied out of the staged file.
struct Header {
    /// The setup header bytes [0x1F1, end) as in the file.
    raw: [u8; 0x200],
    raw_len: usize,
    pm_offset: u64,
    cmdline_size: usize,
    initrd_addr_max: u64,
    load_addr: u64,
    init_size: u64,
}

fn parse(kernel: &[u8]) -> Result<Header, LoadError> {
    if kernel.len() < HEADER_END || &kernel[HEADER_MAGIC..HEADER_MAGIC + 4] != b"HdrS" {
        return Err(LoadError::NotBzImage);
    }
    let version = u16_at(kernel, VERSION);
    if version < 0x020C {
        return Err(LoadError::ProtocolTooOld(version));
    }
    if u16_at(kernel, XLOADFLAGS) & XLF_KERNEL_64 == 0 {
        return Err(LoadError::Not64Bit);
    }
    if kernel[LOADFLAGS] & LOADED_HIGH == 0 {
        return Err(LoadError::NotBzImage);
    }
    let setup_sects = match kernel[SETUP_SECTS] {
        0 => 4,
        n => u64::from(n),
    };
    let pm_offset = (setup_sects + 1) * 512;
    if pm_offset >= kernel.len() as u64 {
        return Err(LoadError::NotBzImage);
    }
    // The header runs from 0x1F1 to 0x202 + the jump's offset byte.
    let end = (JUMP + 2 + usize::from(kernel[JUMP + 1])).clamp(HEADER_END, 0x3F0);
    let mut raw = [0; 0x200];
    raw[..end - SETUP_SECTS].copy_from_slice(&kernel[SETUP_SECTS..end]);
    let pref = u64_at(kernel, PREF_ADDRESS);
    let align = u64::from(u32_at(kernel, KERNEL_ALIGNMENT)).max(PAGE);
    let load_addr = if kernel[RELOCATABLE_KERNEL] != 0 {
        // pref_address, aligned as the kernel asks.
        pref.div_ceil(align) * align
    } else {
        pref
    };
    Ok(Header {
        raw,
        raw_len: end - SETUP_SECTS,
        pm_offset,
        cmdline_size: u32_at(kernel, CMDLINE_SIZE) as usize,
        initrd_addr_max: u64::from(u32_at(kernel, INITRD_ADDR_MAX)),
        load_addr,
        init_size: u64::from(u32_at(kernel, INIT_SIZE)),
    })
}

/// What VM entry needs to start the kernel.
pub struct Entry {
    pub rip: u64,
    pub rsi: u64,
    pub cr3: u64,
}

/// Places the payload in guest RAM and builds the boot structures.
pub fn load(payload: &Payload, map: &GuestMap) -> Result<Entry, LoadError> {
    let header = parse(phys::slice(payload.kernel_addr, payload.kernel_len))?;
    if payload.initrd_len == 0 {
        return Err(LoadError::NoInitrd);
    }
    let cmdline = payload.cmdline();
    if cmdline.len() > header.cmdline_size {
        return Err(LoadError::CmdlineTooLong {
            len: cmdline.len(),
            max: header.cmdline_size,
        });
    }
    let pm_len = payload.kernel_len as u64 - header.pm_offset;
    let kernel = Range {
        start: header.load_addr,
        end: header.load_addr + header.init_size.max(pm_len),
    };
    if !map.is_usable(kernel) {
        return Err(LoadError::NoRoomForKernel {
            addr: kernel.start,
            size: kernel.end - kernel.start,
        });
    }
    let boot_area = Range {
        start: BOOT_AREA_START,
        end: BOOT_AREA_END,
    };
    if !map.is_usable(boot_area) || kernel.overlaps(&boot_area) {
        return Err(LoadError::BootAreaNotRam);
    }

    // The initrd goes to the top of usable RAM below the kernel's limit and
    // the host's identity map, clear of the kernel's init_size range.
    let initrd_len = payload.initrd_len as u64;
    let limit = (header.initrd_addr_max + 1).min(phys::HOST_MAPPED);
    let initrd = map
        .iter()
        .filter(|e| e.kind == E820_USABLE)
        .filter_map(|e| {
            let end = e.end().min(limit);
            let start = page_down(end.checked_sub(initrd_len)?);
            (start >= e.addr && start >= kernel.end).then_some(start)
        })
        .max()
        .ok_or(LoadError::NoRoomForInitrd { size: initrd_len })?;
    // Staged after the kernel file (inside the init_size range), so it
    // always moves up; then the kernel moves down over its setup code.
    phys::move_bytes(initrd, payload.initrd_addr, payload.initrd_len);
    phys::move_bytes(
        header.load_addr,
        payload.kernel_addr + header.pm_offset,
        pm_len as usize,
    );

    // boot_params.
    let mut zero_page = [0u8; 4096];
    zero_page[SETUP_SECTS..SETUP_SECTS + header.raw_len]
        .copy_from_slice(&header.raw[..header.raw_len]);
    put_u16(&mut zero_page, VID_MODE, 0xFFFF); // "normal"
    zero_page[TYPE_OF_LOADER] = 0xFF; // no registered loader id
    put_u32(&mut zero_page, CODE32_START, header.load_addr as u32);
    put_u32(&mut zero_page, CMD_LINE_PTR, CMDLINE as u32);
    put_u32(&mut zero_page, EXT_CMD_LINE_PTR, 0);
    put_u32(&mut zero_page, RAMDISK_IMAGE, initrd as u32);
    put_u32(&mut zero_page, EXT_RAMDISK_IMAGE, (initrd >> 32) as u32);
    put_u32(&mut zero_page, RAMDISK_SIZE, initrd_len as u32);
    put_u32(&mut zero_page, EXT_RAMDISK_SIZE, (initrd_len >> 32) as u32);
    let mut count = 0;
    for (i, e) in map.iter().take(E820_TABLE_MAX).enumerate() {
        let at = E820_TABLE + i * 20;
        zero_page[at..at + 8].copy_from_slice(&e.addr.to_le_bytes());
        zero_page[at + 8..at + 16].copy_from_slice(&e.size.to_le_bytes());
        put_u32(&mut zero_page, at + 16, e.kind);
        count += 1;
    }
    zero_page[E820_ENTRIES] = count as u8;
    phys::write(BOOT_PARAMS, &zero_page);

    phys::zero(CMDLINE, PAGE as usize);
    phys::write(CMDLINE, cmdline);

    // GDT: null, null, __BOOT_CS (64-bit code), __BOOT_DS, a 64-bit TSS.
    phys::zero(GDT, PAGE as usize);
    phys::write_u64(GDT + u64::from(BOOT_CS), 0x00AF_9A00_0000_FFFF);
    phys::write_u64(GDT + u64::from(BOOT_DS), 0x00CF_9200_0000_FFFF);
    let tss_low = 0x67 | (TSS & 0xFF_FFFF) << 16 | 0x8B << 40 | (TSS >> 24 & 0xFF) << 56;
    phys::write_u64(GDT + u64::from(BOOT_TR), tss_low);
    phys::write_u64(GDT + u64::from(BOOT_TR) + 8, TSS >> 32);

    // Page tables: the first MAPPED_GIB GiB identity-mapped, 2 MiB pages.
    phys::zero(PML4, 2 * PAGE as usize);
    phys::write_u64(PML4, PDPT | 0b11);
    for gib in 0..MAPPED_GIB {
        let pd = PD + gib * PAGE;
        phys::write_u64(PDPT + gib * 8, pd | 0b11);
        for i in 0..512 {
            let base = gib << 30 | i << 21;
            phys::write_u64(pd + i * 8, base | 0x83); // present, writable, 2 MiB
        }
    }
    Ok(Entry {
        rip: header.load_addr + ENTRY_64,
        rsi: BOOT_PARAMS,
        cr3: PML4,
    })
}
