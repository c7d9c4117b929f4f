//! Starting the application processors before the guest runs: the boot
//! processor copies the real-mode trampoline (boot.s) to `AP_BASE`, a page
//! hv-stub keeps from the guest, and sends INIT, SIPI, SIPI to all other
//! processors through its local APIC. Each one that arrives draws a ticket
//! and records its APIC ID; once no more arrive, the boot processor numbers
//! them (1, 2, ... by APIC ID, the order the firmware's MP/ACPI tables list
//! them on the machines seen here) and lets them go on to enter VMX
//! operation (`hv::ap_main`).

use core::ptr::{addr_of, addr_of_mut};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::percpu::{self, MAX_CPUS};
use crate::{cpu, phys, say, vmx};

/// The trampoline's page: below 1 MiB, 4 KiB-aligned, free once boot.s left
/// real mode (memmap hides it from the guest).
pub const AP_BASE: u64 = 0x6000;
const LOCAL_APIC: u64 = 0xFEE0_0000;
const ICR_LOW: u64 = 0x300;
const ICR_HIGH: u64 = 0x310;
const ICR_PENDING: u32 = 1 << 12;
/// Destination shorthand "all excluding self", level assert.
const ICR_ALL_BUT_SELF: u32 = (0b11 << 18) | (1 << 14);
const ICR_INIT: u32 = 0b101 << 8;
const ICR_STARTUP: u32 = 0b110 << 8;
/// Waits in TSC ticks: INIT to SIPI (10 ms on a 10 MHz TSC, far more under
/// Bochs, whose TSC counts instructions), SIPI to SIPI, and how long no new
/// processor may arrive before the count is final.
const INIT_TICKS: u64 = 100_000;
const SIPI_TICKS: u64 = 10_000;
const QUIET_TICKS: u64 = 5_000_000;

extern "C" {
    static hv_ap_trampoline: u8;
    static hv_ap_trampoline_end: u8;
    static hv_ap_tickets: AtomicU32;
    /// boot.s: the stack a restarted processor takes, by APIC ID.
    static hv_ap_restart_stacks: [AtomicU64; 256];
}

/// The APIC IDs (plus one) of the processors that arrived, in arrival order.
static ARRIVED_IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static ARRIVED: AtomicUsize = AtomicUsize::new(0);
/// Set once the processors are numbered (`percpu`).
static NUMBERED: AtomicBool = AtomicBool::new(false);

/// A page directory for the 4th GiB, mapping the local APIC's 2 MiB page
/// uncached (the boot page tables map only the first GiB).
#[repr(C, align(4096))]
struct PageDirectory([u64; 512]);
static mut APIC_PD: PageDirectory = PageDirectory([0; 512]);

fn map_local_apic() {
    const PDPT: u64 = 0x2000;
    // Present, writable, 2 MiB page, cache disabled, write-through.
    const UNCACHED_LARGE: u64 = 0x9B;
    let pd = addr_of!(APIC_PD) as u64;
    // SAFETY: APIC_PD is only written here, once, on the boot processor
    // before any other processor runs hv-stub code.
    unsafe {
        (*addr_of_mut!(APIC_PD)).0[((LOCAL_APIC >> 21) & 511) as usize] =
            (LOCAL_APIC & !0x1F_FFFF) | UNCACHED_LARGE;
    }
    // PDPT entry 3 (the 4th GiB) of the boot page tables, then a TLB flush.
    phys::write_u64(PDPT + 3 * 8, pd | 3);
    // SAFETY: CR3 is reloaded with its own value (flushes the TLB).
    unsafe { cpu::write_cr3(cpu::read_cr3()) };
}

fn apic_write(register: u64, value: u32) {
    // SAFETY: the local APIC page is mapped uncached (map_local_apic); a
    // 32-bit store to an ICR register only sends an IPI.
    unsafe { core::ptr::write_volatile((LOCAL_APIC + register) as *mut u32, value) }
}

fn apic_read(register: u64) -> u32 {
    // SAFETY: as in apic_write; reading the ICR has no side effects.
    unsafe { core::ptr::read_volatile((LOCAL_APIC + register) as *const u32) }
}

fn send_ipi(command: u32) {
    apic_write(ICR_HIGH, 0);
    apic_write(ICR_LOW, command);
    while apic_read(ICR_LOW) & ICR_PENDING != 0 {
        core::hint::spin_loop();
    }
}

fn wait_ticks(ticks: u64) {
    let end = cpu::rdtsc().wrapping_add(ticks);
    while cpu::rdtsc() < end {
        core::hint::spin_loop();
    }
}

/// Starts every other processor and numbers them all (0 = this, the boot
/// processor); they wait for `release`. Returns how many there are.
pub fn start_application_processors() -> usize {
    let bsp = percpu::apic_id();
    let start = addr_of!(hv_ap_trampoline) as u64;
    let len = addr_of!(hv_ap_trampoline_end) as u64 - start;
    phys::write(AP_BASE, phys::slice(start, len as usize));
    map_local_apic();
    let vector = (AP_BASE >> 12) as u32;
    send_ipi(ICR_ALL_BUT_SELF | ICR_INIT);
    wait_ticks(INIT_TICKS);
    send_ipi(ICR_ALL_BUT_SELF | ICR_STARTUP | vector);
    wait_ticks(SIPI_TICKS);
    send_ipi(ICR_ALL_BUT_SELF | ICR_STARTUP | vector);
    let mut seen = 0;
    let mut quiet_until = cpu::rdtsc().wrapping_add(QUIET_TICKS);
    while cpu::rdtsc() < quiet_until {
        let now = ARRIVED.load(Ordering::SeqCst);
        if now != seen {
            seen = now;
            quiet_until = cpu::rdtsc().wrapping_add(QUIET_TICKS);
        }
        core::hint::spin_loop();
    }
    // SAFETY: an atomic the trampoline increments with LOCK XADD.
    let tickets = unsafe { &hv_ap_tickets }.load(Ordering::SeqCst) as usize;
    let arrived = ARRIVED.load(Ordering::SeqCst).min(MAX_CPUS - 1);
    if tickets > arrived {
        say!(
            "HV ERROR {tickets} application processors answered; hv-stub runs on at most {}: the others stay parked outside the guest",
            MAX_CPUS - 1
        );
    }
    let mut ids = [0u32; MAX_CPUS];
    ids[0] = bsp;
    for (slot, id) in ids[1..=arrived].iter_mut().zip(ARRIVED_IDS.iter()) {
        // Counted, so its ID follows at once.
        *slot = loop {
            match id.load(Ordering::SeqCst) {
                0 => core::hint::spin_loop(),
                plus_one => break plus_one - 1,
            }
        };
    }
    ids[1..=arrived].sort_unstable();
    percpu::set_processors(&ids[..=arrived]);
    arrived + 1
}

/// Lets the application processors go on (they read what the boot
/// processor published before this).
pub fn release() {
    NUMBERED.store(true, Ordering::SeqCst);
}

/// Called by an application processor as it arrives from the trampoline:
/// records it and waits until the boot processor numbered everyone.
/// Returns its index, or None if it came too late to be counted.
pub fn arrive() -> Option<usize> {
    let id = percpu::apic_id();
    if NUMBERED.load(Ordering::SeqCst) {
        return None;
    }
    let slot = ARRIVED.fetch_add(1, Ordering::SeqCst);
    if slot >= MAX_CPUS - 1 {
        return None;
    }
    // Plus one: 0 marks a slot whose processor has not written it yet.
    ARRIVED_IDS[slot].store(id + 1, Ordering::SeqCst);
    while !NUMBERED.load(Ordering::SeqCst) {
        core::hint::spin_loop();
    }
    percpu::index_of(id)
}

// --- Restarting a processor through its INIT (Bochs 2.7) -----------------
//
// Bochs 2.7 turns a guest's INIT into a VM exit without clearing it, so the
// same INIT exits again as soon as the processor re-enters its guest in the
// active state: after the startup IPI the processor would never execute an
// instruction. Only a processor reset clears it. So, on such a stale INIT,
// the processor waits until the kernel's second startup IPI has passed
// (dropped while in VMX root), leaves VMX operation — the pending INIT then
// resets it into wait-for-SIPI outside VMX, where nothing is pending — and
// the boot processor, at its next VM exit, sends it a startup IPI to
// hv-stub's trampoline, which brings it back into VMX operation with its
// guest at the kernel's startup vector (`hv::hv_ap_restart`). The guest
// never runs outside hv-stub: between VMXOFF and that SIPI the processor is
// reset and waiting. On hardware the INIT is consumed by its VM exit and
// none of this happens.

/// TSC ticks the kernel's second SIPI may come after its first (Linux:
/// 10 us, or 300 us with an explicit INIT delay, of a TSC it believes runs
/// at GHz).
const SECOND_SIPI_TICKS: u64 = 4_000_000;
/// TSC ticks after VMXOFF by which the processor has surely been reset.
const RESET_TICKS: u64 = 100_000;

fn restart_stacks() -> &'static [AtomicU64; 256] {
    // SAFETY: boot.s's table of 256 u64 (AtomicU64 has the same layout),
    // shared with the trampoline, which only reads it.
    unsafe { &hv_ap_restart_stacks }
}

/// TSC when processor n left VMX to be reset (0: none pending).
static RESETTING_SINCE: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// The guest's startup vector to resume processor n at.
static RESTART_VECTOR: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// On processor `cpu` at a stale INIT, its guest started at `vector`:
/// leaves VMX operation so that the pending INIT resets it; it comes back
/// at `hv::hv_ap_restart` on `stack`. `vmcs` is its current VMCS.
pub fn reset_through_init(cpu: usize, vector: u64, vmcs: u64, stack: u64) -> ! {
    wait_ticks(SECOND_SIPI_TICKS);
    RESTART_VECTOR[cpu].store(vector, Ordering::SeqCst);
    let id = percpu::apic_id() as usize;
    restart_stacks()[id & 0xFF].store(stack, Ordering::SeqCst);
    RESETTING_SINCE[cpu].store(cpu::rdtsc().max(1), Ordering::SeqCst);
    // SAFETY: the VMCS is written back to memory (VMCLEAR) for the restart,
    // which loads it again; nothing after VMXOFF needs VMX operation.
    unsafe {
        let _ = vmx::vmclear(vmcs);
        vmx::vmxoff();
    }
    // The pending INIT resets the processor at the next instruction
    // boundary; without one (not Bochs), it stays here.
    loop {
        cpu::halt();
    }
}

/// On the boot processor at each VM exit: sends the startup IPI that brings
/// a processor reset by `reset_through_init` back into hv-stub.
pub fn restart_reset_processors() {
    let count = percpu::count();
    for (cpu, resetting) in RESETTING_SINCE.iter().enumerate().take(count).skip(1) {
        let since = resetting.load(Ordering::SeqCst);
        if since == 0 || cpu::rdtsc().wrapping_sub(since) < RESET_TICKS {
            continue;
        }
        resetting.store(0, Ordering::SeqCst);
        let Some(id) = percpu::apic_id_of(cpu) else {
            continue;
        };
        // The guest may be between its own ICR-high and ICR-low writes.
        let high = apic_read(ICR_HIGH);
        while apic_read(ICR_LOW) & ICR_PENDING != 0 {
            core::hint::spin_loop();
        }
        apic_write(ICR_HIGH, id << 24);
        apic_write(ICR_LOW, ICR_STARTUP | (AP_BASE >> 12) as u32);
        while apic_read(ICR_LOW) & ICR_PENDING != 0 {
            core::hint::spin_loop();
        }
        apic_write(ICR_HIGH, high);
    }
}

/// On a restarted processor: where its guest starts (and forgets the
/// restart stack).
pub fn restart_vector(cpu: usize, apic_id: u32) -> u64 {
    restart_stacks()[apic_id as usize & 0xFF].store(0, Ordering::SeqCst);
    RESTART_VECTOR[cpu].load(Ordering::SeqCst)
}
