//! Processor primitives: fault-safe RDMSR/WRMSR (with the #GP fix-up the
//! exception handler applies), CPUID, control registers, TSC, HLT.

use core::arch::asm;
use core::ptr::addr_of;

use hv_stub::GpFault;

extern "C" {
    // boot.s: return 0 on success, 1 if the instruction raised #GP.
    fn hv_safe_rdmsr(msr: u32, out: *mut u64) -> u32;
    fn hv_safe_wrmsr(msr: u32, value: u64) -> u32;
    static hv_rdmsr_insn: u8;
    static hv_rdmsr_recover: u8;
    static hv_wrmsr_insn: u8;
    static hv_wrmsr_recover: u8;
}

/// RDMSR that turns #GP (an MSR the processor does not have, or one not
/// readable in this mode) into `Err`.
pub fn rdmsr_safe(msr: u32) -> Result<u64, GpFault> {
    let mut value = 0u64;
    // SAFETY: hv_safe_rdmsr only reads the MSR and stores 8 bytes through
    // `out`, which points at a live local; a #GP is recovered by the IDT's
    // handler (see `gp_fixup`), which resumes at hv_rdmsr_recover.
    let faulted = unsafe { hv_safe_rdmsr(msr, &mut value) };
    if faulted == 0 {
        Ok(value)
    } else {
        Err(GpFault)
    }
}

/// WRMSR that turns #GP into `Err` (nothing is written then).
///
/// # Safety
/// The caller must not change an MSR the running code depends on (EFER.LME,
/// the VMX capability state, ...): hv-stub only writes MSRs on a debugger's
/// request after the shared routing decided the write belongs to the guest.
pub unsafe fn wrmsr_safe(msr: u32, value: u64) -> Result<(), GpFault> {
    // SAFETY: per the function contract; a #GP is recovered as in rdmsr_safe.
    let faulted = unsafe { hv_safe_wrmsr(msr, value) };
    if faulted == 0 {
        Ok(())
    } else {
        Err(GpFault)
    }
}

/// If `rip` is the RDMSR/WRMSR of the fault-safe routines, where to resume.
pub fn gp_fixup(rip: u64) -> Option<u64> {
    // Only the addresses of the boot.s labels are taken, never their bytes.
    let table = [
        (addr_of!(hv_rdmsr_insn), addr_of!(hv_rdmsr_recover)),
        (addr_of!(hv_wrmsr_insn), addr_of!(hv_wrmsr_recover)),
    ];
    table
        .iter()
        .find(|(insn, _)| *insn as u64 == rip)
        .map(|(_, recover)| *recover as u64)
}

#[derive(Clone, Copy, Debug, Default)]
pub struct CpuidResult {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86-64 processor and has no side effects.
    let r = unsafe { core::arch::x86_64::__cpuid_count(leaf, subleaf) };
    CpuidResult {
        eax: r.eax,
        ebx: r.ebx,
        ecx: r.ecx,
        edx: r.edx,
    }
}

pub fn rdtsc() -> u64 {
    #[allow(unused_unsafe)]
    // SAFETY: RDTSC is allowed at CPL 0 and has no side effects.
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
}

pub fn read_cr0() -> u64 {
    let v;
    // SAFETY: reading a control register has no side effects (CPL 0).
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags)) }
    v
}

pub fn read_cr3() -> u64 {
    let v;
    // SAFETY: as in read_cr0.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) }
    v
}

pub fn read_cr4() -> u64 {
    let v;
    // SAFETY: as in read_cr0.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)) }
    v
}

/// # Safety
/// The new value must point at page tables that keep the identity map.
pub unsafe fn write_cr3(v: u64) {
    // SAFETY: per the function contract.
    unsafe { asm!("mov cr3, {}", in(reg) v, options(nostack, preserves_flags)) }
}

/// # Safety
/// The new value must keep protected mode, paging and the identity map.
pub unsafe fn write_cr0(v: u64) {
    // SAFETY: per the function contract.
    unsafe { asm!("mov cr0, {}", in(reg) v, options(nostack, preserves_flags)) }
}

/// # Safety
/// The new value must keep PAE, OSFXSR and the identity map.
pub unsafe fn write_cr4(v: u64) {
    // SAFETY: per the function contract.
    unsafe { asm!("mov cr4, {}", in(reg) v, options(nostack, preserves_flags)) }
}

pub fn halt() {
    // SAFETY: HLT at CPL 0 with IF=0 stops until NMI/SMI/reset; no memory effects.
    unsafe { asm!("hlt", options(nomem, nostack, preserves_flags)) }
}

/// XSETBV.
///
/// # Safety
/// CR4.OSXSAVE must be set and `value` valid for `xcr` (the caller checks it
/// against CPUID leaf 0DH, as the processor would): it changes which state
/// XSAVE-managed instructions use, for host and guest alike.
pub unsafe fn xsetbv(xcr: u32, value: u64) {
    // SAFETY: per the function contract.
    unsafe {
        asm!("xsetbv", in("ecx") xcr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nomem, nostack, preserves_flags))
    }
}

/// WBINVD: writes back and invalidates the caches (the host's answer to a
/// guest's INVD, which must not discard the host's dirty lines).
pub fn wbinvd() {
    // SAFETY: WBINVD at CPL 0 only affects caching, never memory contents.
    unsafe { asm!("wbinvd", options(nostack, preserves_flags)) }
}
