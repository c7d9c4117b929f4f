//! Descriptor tables, one set per processor: the host GDT (with a 64-bit TSS, since VMX needs a
//! non-zero host TR), the IDT shared by host and guest, two TSSs whose IST1
//! stacks take every exception (the precompiled `core` uses the red zone, so
//! exceptions must never push onto the interrupted stack), and the exception
//! handler, which applies the RDMSR/WRMSR #GP fix-up.

use core::arch::asm;
use core::ptr::addr_of_mut;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::percpu::MAX_CPUS;
use crate::{cpu, say};

pub const CODE64: u16 = 0x18;
pub const DATA: u16 = 0x10;
pub const HOST_TR: u16 = 0x20;
pub const GUEST_TR: u16 = 0x30;
pub const TSS_LIMIT: u32 = 103;
const IST_STACK: usize = 16 * 1024;

/// A 64-bit TSS as 26 dwords (the architectural layout has 8-byte fields
/// at 4-byte offsets).
#[repr(C, align(16))]
struct Tss([u32; 26]);

impl Tss {
    fn set_ist1(&mut self, top: u64) {
        self.0[9] = top as u32;
        self.0[10] = (top >> 32) as u32;
        // I/O map base beyond the limit: no I/O permission bitmap.
        self.0[25] = (TSS_LIMIT + 1) << 16;
    }
}

#[repr(C, align(16))]
struct Stack([u8; IST_STACK]);

#[repr(C, align(4096))]
struct Tables {
    gdt: [u64; 8],
    idt: [[u64; 2]; 32],
    host_tss: Tss,
    guest_tss: Tss,
    host_ist: Stack,
    guest_ist: Stack,
}

/// One set per processor: a TSS descriptor is marked busy by LTR, and each
/// processor needs its own IST stacks.
static mut TABLES: [Tables; MAX_CPUS] = [const {
    Tables {
        gdt: [0; 8],
        idt: [[0; 2]; 32],
        host_tss: Tss([0; 26]),
        guest_tss: Tss([0; 26]),
        host_ist: Stack([0; IST_STACK]),
        guest_ist: Stack([0; IST_STACK]),
    }
}; MAX_CPUS];
static TAKEN: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

extern "C" {
    static hv_exception_stubs: [u64; 32];
}

/// Where the loaded tables live, for the VMCS host and guest state.
#[derive(Clone, Copy, Debug)]
pub struct Loaded {
    pub gdt_base: u64,
    pub gdt_limit: u32,
    pub idt_base: u64,
    pub idt_limit: u32,
    pub host_tss: u64,
    pub guest_tss: u64,
}

fn tss_descriptor(base: u64) -> [u64; 2] {
    let limit = u64::from(TSS_LIMIT);
    let low = (limit & 0xFFFF)
        | ((base & 0xFF_FFFF) << 16)
        | (0x89 << 40) // present, 64-bit TSS (available)
        | (((limit >> 16) & 0xF) << 48)
        | (((base >> 24) & 0xFF) << 56);
    [low, base >> 32]
}

fn interrupt_gate(handler: u64) -> [u64; 2] {
    let low = (handler & 0xFFFF)
        | (u64::from(CODE64) << 16)
        | (1 << 32) // IST1
        | (0x8E << 40) // present, DPL 0, 64-bit interrupt gate
        | (((handler >> 16) & 0xFFFF) << 48);
    [low, handler >> 32]
}

/// Builds and loads processor `cpu`'s GDT, IDT and host TR. Called once on
/// each processor, before VMXON.
pub fn init(cpu: usize) -> Loaded {
    assert!(
        !TAKEN[cpu].swap(true, Ordering::SeqCst),
        "descriptor tables initialised twice"
    );
    // SAFETY: the TAKEN flag makes this the only reference ever created to
    // TABLES[cpu]; the tables are 'static and never moved, so the addresses
    // loaded into GDTR/IDTR/TR and the VMCS stay valid.
    let t: &'static mut Tables = unsafe { &mut (*addr_of_mut!(TABLES))[cpu] };
    let host_tss = &t.host_tss as *const Tss as u64;
    let guest_tss = &t.guest_tss as *const Tss as u64;
    t.host_tss.set_ist1(t.host_ist.0.as_ptr_range().end as u64);
    t.guest_tss
        .set_ist1(t.guest_ist.0.as_ptr_range().end as u64);
    t.gdt[1] = 0x00CF_9A00_0000_FFFF; // 0x08: 32-bit code (boot only)
    t.gdt[2] = 0x00CF_9200_0000_FFFF; // 0x10: data
    t.gdt[3] = 0x00AF_9A00_0000_FFFF; // 0x18: 64-bit code
    let [lo, hi] = tss_descriptor(host_tss);
    t.gdt[4] = lo;
    t.gdt[5] = hi;
    let [lo, hi] = tss_descriptor(guest_tss);
    t.gdt[6] = lo;
    t.gdt[7] = hi;
    // SAFETY: hv_exception_stubs is an immutable table of 32 code addresses
    // in boot.s.
    let stubs = unsafe { &hv_exception_stubs };
    for (gate, &stub) in t.idt.iter_mut().zip(stubs.iter()) {
        *gate = interrupt_gate(stub);
    }
    let loaded = Loaded {
        gdt_base: t.gdt.as_ptr() as u64,
        gdt_limit: (core::mem::size_of_val(&t.gdt) - 1) as u32,
        idt_base: t.idt.as_ptr() as u64,
        idt_limit: (core::mem::size_of_val(&t.idt) - 1) as u32,
        host_tss,
        guest_tss,
    };
    load(loaded);
    loaded
}

/// Loads processor `cpu`'s tables again (after the processor was reset;
/// `init` built them). LTR needs the TSS descriptor not busy, so the busy
/// bit the first LTR set is cleared.
pub fn reload(cpu: usize) {
    assert!(
        TAKEN[cpu].load(Ordering::SeqCst),
        "tables reloaded before init"
    );
    // SAFETY: only processor `cpu` touches TABLES[cpu], and it is reset and
    // running this with no other reference alive (the exception handler
    // reads only the IDT entries, which stay as they are).
    let t: &mut Tables = unsafe { &mut (*addr_of_mut!(TABLES))[cpu] };
    t.gdt[4] &= !(0x2 << 40); // 64-bit TSS busy (0xB) -> available (0x9)
    load(Loaded {
        gdt_base: t.gdt.as_ptr() as u64,
        gdt_limit: (core::mem::size_of_val(&t.gdt) - 1) as u32,
        idt_base: t.idt.as_ptr() as u64,
        idt_limit: (core::mem::size_of_val(&t.idt) - 1) as u32,
        host_tss: 0,
        guest_tss: 0,
    });
}

/// Loads GDTR, IDTR and the host TR.
fn load(tables: Loaded) {
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let gdtr = Pointer {
        limit: tables.gdt_limit as u16,
        base: tables.gdt_base,
    };
    let idtr = Pointer {
        limit: tables.idt_limit as u16,
        base: tables.idt_base,
    };
    // SAFETY: the GDT has the boot GDT's code and data descriptors at the
    // same selectors, so the loaded CS/DS/SS stay valid; the IDT gates point
    // at the boot.s stubs; HOST_TR names an available 64-bit TSS descriptor.
    unsafe {
        asm!(
            "lgdt [{gdtr}]",
            "lidt [{idtr}]",
            "ltr {tr:x}",
            gdtr = in(reg) &gdtr,
            idtr = in(reg) &idtr,
            tr = in(reg) HOST_TR,
            options(nostack, preserves_flags),
        );
    }
}

/// What the exception stubs in boot.s push.
#[repr(C)]
pub struct ExceptionFrame {
    pub regs: [u64; 15],
    pub vector: u64,
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// Called by every exception stub, in the host and in the guest alike.
#[no_mangle]
extern "C" fn hv_exception(frame: &mut ExceptionFrame) {
    if frame.vector == 2 && crate::exits::take_host_nmi() {
        return;
    }
    if frame.vector == 13 {
        if let Some(recover) = cpu::gp_fixup(frame.rip) {
            frame.rip = recover;
            return;
        }
    }
    say!(
        "\nFATAL exception vector={} error={:#x} rip={:#x} rsp={:#x}",
        frame.vector,
        frame.error,
        frame.rip,
        frame.rsp
    );
    crate::console::shutdown();
}
