//! VMX instructions. Each returns whether the processor reported VMfail
//! (CF or ZF set); `vmread` of a field that does not exist returns None.

use core::arch::asm;

/// VM-instruction error field (SDM Vol. 3C 31.4).
pub const VM_INSTRUCTION_ERROR: u32 = x86::vmx::vmcs::ro::VM_INSTRUCTION_ERROR;

#[derive(Clone, Copy, Debug)]
pub struct VmFail;

fn check(failed: u8) -> Result<(), VmFail> {
    if failed == 0 {
        Ok(())
    } else {
        Err(VmFail)
    }
}

/// # Safety
/// `region` is the physical (= identity-mapped) address of a zeroed,
/// 4 KiB-aligned VMXON region holding the revision id, which stays reserved
/// for VMX while in VMX operation; CR0/CR4 satisfy the VMX fixed bits.
pub unsafe fn vmxon(region: u64) -> Result<(), VmFail> {
    let failed: u8;
    // SAFETY: per the function contract.
    unsafe {
        asm!("vmxon qword ptr [{p}]", "setbe {f}", p = in(reg) &region, f = out(reg_byte) failed, options(nostack));
    }
    check(failed)
}

/// # Safety
/// `vmcs` is the address of a 4 KiB-aligned VMCS region with the revision id.
pub unsafe fn vmclear(vmcs: u64) -> Result<(), VmFail> {
    let failed: u8;
    // SAFETY: per the function contract.
    unsafe {
        asm!("vmclear qword ptr [{p}]", "setbe {f}", p = in(reg) &vmcs, f = out(reg_byte) failed, options(nostack));
    }
    check(failed)
}

/// # Safety
/// As for `vmclear`; the region becomes the current VMCS.
pub unsafe fn vmptrld(vmcs: u64) -> Result<(), VmFail> {
    let failed: u8;
    // SAFETY: per the function contract.
    unsafe {
        asm!("vmptrld qword ptr [{p}]", "setbe {f}", p = in(reg) &vmcs, f = out(reg_byte) failed, options(nostack));
    }
    check(failed)
}

/// VMREAD of the current VMCS (only valid in VMX-root operation, which the
/// image enters before anything calls this).
pub fn vmread(field: u32) -> Option<u64> {
    let value: u64;
    let failed: u8;
    // SAFETY: VMREAD only reads the current VMCS into a register; in VMX root
    // with a current VMCS (established in hv::start before any caller) it
    // cannot fault, and a missing field is reported through the flags.
    unsafe {
        asm!("vmread {v}, {e}", "setbe {f}", v = out(reg) value, e = in(reg) u64::from(field), f = out(reg_byte) failed, options(nostack));
    }
    (failed == 0).then_some(value)
}

/// # Safety
/// Writing host-state fields (HOST_RIP, HOST_RSP, ...) decides where the
/// next VM exit runs; callers must write only values that keep the host
/// state valid.
pub unsafe fn vmwrite(field: u32, value: u64) -> Result<(), VmFail> {
    let failed: u8;
    // SAFETY: per the function contract.
    unsafe {
        asm!("vmwrite {e}, {v}", "setbe {f}", e = in(reg) u64::from(field), v = in(reg) value, f = out(reg_byte) failed, options(nostack));
    }
    check(failed)
}

/// VMXOFF: leaves VMX operation.
///
/// # Safety
/// No VMCS may be current that is still needed (VMCLEAR it first), and
/// the caller must not rely on VMX operation afterwards.
pub unsafe fn vmxoff() {
    // SAFETY: per the function contract.
    unsafe { asm!("vmxoff", options(nostack)) };
}

/// VMLAUNCH with the guest's RSI = `rsi` (the other general-purpose
/// registers are whatever the host left); returns only if the launch failed.
///
/// # Safety
/// The current VMCS must be complete: guest state that runs the guest's
/// entry point, host state whose HOST_RIP is the boot.s exit trampoline with
/// HOST_RSP on a dedicated stack.
pub unsafe fn vmlaunch(rsi: u64) -> VmFail {
    // SAFETY: per the function contract. On success control continues in
    // the guest and never comes back here.
    unsafe { asm!("vmlaunch", in("rsi") rsi, options(nostack)) };
    VmFail
}

/// VMCALL from the guest: a deliberate VM exit (the guest uses it to say it
/// has printed its initial observations).
pub fn vmcall() {
    // SAFETY: executed only by the observer guest in VMX non-root operation,
    // where VMCALL always causes a VM exit that the host resumes past.
    unsafe { asm!("vmcall", options(nostack)) };
}
