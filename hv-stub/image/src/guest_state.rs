//! The VMCS guest-state area for each kind of guest: the observer loop
//! (64-bit, sharing the host's page tables and descriptor tables) and a
//! Linux kernel at its 64-bit entry point (its own GDT and page tables in
//! guest RAM, built by `linux`).

use hv_stub::msr::{entry, field};

use crate::desc::{self, CODE64, DATA, GUEST_TR, TSS_LIMIT};
use crate::exits::FixedCrs;
use crate::linux;
use crate::vmcs::{f, r, w};

/// Values the host chose that the guest starts with.
pub struct Initial {
    pub cr0: u64,
    pub cr0_shadow: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr4_shadow: u64,
    pub pat: u64,
    pub efer: u64,
    pub perf_global: u64,
    pub entry_ctls: u32,
    pub rip: u64,
    pub rsp: u64,
}

const AR_CODE64: u64 = 0xA09B; // 64-bit code, present, accessed
const AR_DATA: u64 = 0xC093; // read/write data, present, accessed
const AR_TSS64_BUSY: u64 = 0x8B;
const AR_UNUSABLE: u64 = 1 << 16;

fn segments(code: u16, data: u16) {
    // ES, CS, SS, DS, FS, GS (encodings 2 apart in each group).
    for seg in 0..6u32 {
        let (selector, ar) = if seg == 1 {
            (code, AR_CODE64)
        } else {
            (data, AR_DATA)
        };
        w(f::GUEST_ES_SELECTOR + 2 * seg, selector.into());
        w(f::GUEST_ES_BASE + 2 * seg, 0);
        w(f::GUEST_ES_LIMIT + 2 * seg, 0xFFFF_FFFF);
        w(f::GUEST_ES_AR + 2 * seg, ar);
    }
    w(f::GUEST_ES_SELECTOR + 12, 0); // LDTR
    w(f::GUEST_ES_BASE + 12, 0);
    w(f::GUEST_ES_LIMIT + 12, 0);
    w(f::GUEST_LDTR_AR, AR_UNUSABLE);
}

fn common(init: &Initial) {
    w(field::GUEST_CR0, init.cr0);
    w(f::CR0_SHADOW, init.cr0_shadow);
    w(f::GUEST_CR3, init.cr3);
    w(field::GUEST_CR4, init.cr4);
    w(f::CR4_SHADOW, init.cr4_shadow);
    w(f::GUEST_DR7, 0x400);
    w(f::GUEST_RFLAGS, 0x2); // IF=0
    w(f::GUEST_RSP, init.rsp);
    w(f::GUEST_RIP, init.rip);
    w(f::GUEST_INTERRUPTIBILITY, 0);
    w(f::GUEST_ACTIVITY, 0);
    w(f::GUEST_PENDING_DBG, 0);
    w(field::GUEST_IA32_SYSENTER_CS, 0);
    w(field::GUEST_IA32_SYSENTER_ESP, 0);
    w(field::GUEST_IA32_SYSENTER_EIP, 0);
    w(field::GUEST_FS_BASE, 0);
    w(field::GUEST_GS_BASE, 0);
    w(field::GUEST_IA32_DEBUGCTL, 0);
    w(field::GUEST_IA32_PAT, init.pat);
    w(field::GUEST_IA32_EFER, init.efer);
    if init.entry_ctls & entry::LOAD_IA32_PERF_GLOBAL_CTRL != 0 {
        w(field::GUEST_IA32_PERF_GLOBAL_CTRL, init.perf_global);
    }
    if init.entry_ctls & entry::LOAD_CET_STATE != 0 {
        w(field::GUEST_IA32_S_CET, 0);
        w(field::GUEST_SSP, 0);
        w(field::GUEST_IA32_INTERRUPT_SSP_TABLE_ADDR, 0);
    }
}

/// The observer guest: the host's CR3, GDT and IDT, its own stack and TSS.
pub fn observer(init: &Initial, tables: &desc::Loaded) {
    common(init);
    segments(CODE64, DATA);
    w(f::GUEST_TR_SELECTOR, GUEST_TR.into());
    w(f::GUEST_TR_BASE, tables.guest_tss);
    w(f::GUEST_TR_LIMIT, TSS_LIMIT.into());
    w(f::GUEST_TR_AR, AR_TSS64_BUSY);
    w(f::GUEST_GDTR_BASE, tables.gdt_base);
    w(f::GUEST_GDTR_LIMIT, tables.gdt_limit.into());
    w(f::GUEST_IDTR_BASE, tables.idt_base);
    w(f::GUEST_IDTR_LIMIT, tables.idt_limit.into());
}

/// A Linux kernel at its 64-bit entry: __BOOT_CS/__BOOT_DS from the GDT
/// `linux::load` built, no IDT yet (interrupts are off), a TSS in guest RAM.
pub fn linux(init: &Initial) {
    common(init);
    segments(linux::BOOT_CS, linux::BOOT_DS);
    w(f::GUEST_TR_SELECTOR, linux::BOOT_TR.into());
    w(f::GUEST_TR_BASE, linux::TSS);
    w(f::GUEST_TR_LIMIT, 0x67);
    w(f::GUEST_TR_AR, AR_TSS64_BUSY);
    w(f::GUEST_GDTR_BASE, linux::GDT);
    w(f::GUEST_GDTR_LIMIT, linux::GDT_LIMIT.into());
    w(f::GUEST_IDTR_BASE, 0);
    w(f::GUEST_IDTR_LIMIT, 0);
}

/// Guest activity state "wait-for-SIPI" (SDM 25.4.2).
const ACTIVITY_WAIT_FOR_SIPI: u64 = 3;
const AR_CODE16: u64 = 0x9B; // 16-bit code, present, accessed
const AR_DATA16: u64 = 0x93; // read/write data, present, accessed
const AR_LDT: u64 = 0x82;
/// CR0 after INIT as the guest sees it: ET (CD/NW are left clear underneath
/// so the processor keeps caching; only NE is masked).
const INIT_CR0_SHADOW: u64 = 0x10;

/// An application processor after INIT (SDM 10.1.1, table 10-1): real
/// mode, waiting for a startup IPI. Also its state before the guest OS
/// first starts it.
pub fn wait_for_sipi(fixed: &FixedCrs) {
    w(
        field::GUEST_CR0,
        (INIT_CR0_SHADOW | fixed.cr0_fixed0) & fixed.cr0_fixed1,
    );
    w(f::CR0_SHADOW, INIT_CR0_SHADOW);
    w(f::GUEST_CR3, 0);
    w(field::GUEST_CR4, fixed.cr4_fixed0);
    w(f::CR4_SHADOW, 0);
    w(f::GUEST_DR7, 0x400);
    w(f::GUEST_RFLAGS, 0x2);
    w(f::GUEST_RSP, 0);
    w(f::GUEST_INTERRUPTIBILITY, 0);
    w(f::GUEST_PENDING_DBG, 0);
    w(field::GUEST_IA32_SYSENTER_CS, 0);
    w(field::GUEST_IA32_SYSENTER_ESP, 0);
    w(field::GUEST_IA32_SYSENTER_EIP, 0);
    w(field::GUEST_IA32_DEBUGCTL, 0);
    w(field::GUEST_IA32_EFER, 0);
    let entry_ctls = r(field::VM_ENTRY_CONTROLS) as u32 & !entry::IA32E_MODE_GUEST;
    w(field::VM_ENTRY_CONTROLS, entry_ctls.into());
    // Selector, base, limit, access rights for ES, CS, SS, DS, FS, GS,
    // LDTR, TR (encodings 2 apart in each group); CS as at reset.
    for seg in 0..8u32 {
        let (selector, base, ar) = match seg {
            1 => (0xF000, 0xFFFF_0000, AR_CODE16),
            6 => (0, 0, AR_LDT),
            7 => (0, 0, AR_TSS64_BUSY),
            _ => (0, 0, AR_DATA16),
        };
        w(f::GUEST_ES_SELECTOR + 2 * seg, selector);
        w(f::GUEST_ES_BASE + 2 * seg, base);
        w(f::GUEST_ES_LIMIT + 2 * seg, 0xFFFF);
        w(f::GUEST_ES_AR + 2 * seg, ar);
    }
    w(f::GUEST_GDTR_BASE, 0);
    w(f::GUEST_GDTR_LIMIT, 0xFFFF);
    w(f::GUEST_IDTR_BASE, 0);
    w(f::GUEST_IDTR_LIMIT, 0xFFFF);
    w(f::GUEST_RIP, 0xFFF0);
    w(f::GUEST_ACTIVITY, ACTIVITY_WAIT_FOR_SIPI);
}

/// A startup IPI with `vector` for a processor waiting for one: it starts
/// in real mode at vector << 12 (CS = vector << 8, IP = 0).
pub fn start_at_sipi(vector: u64) {
    // Nothing blocked (Bochs reports SMI blocking in the state it saved at
    // this exit, which VM entry refuses outside SMM).
    w(f::GUEST_INTERRUPTIBILITY, 0);
    w(f::GUEST_PENDING_DBG, 0);
    w(f::GUEST_CS_SELECTOR, vector << 8);
    w(f::GUEST_CS_BASE, vector << 12);
    w(f::GUEST_RIP, 0);
    w(f::GUEST_ACTIVITY, 0);
}
