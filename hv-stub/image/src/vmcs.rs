//! The current VMCS: the field encodings and control bits the image uses
//! (from the x86 crate), the exit reasons, and checked VMREAD/VMWRITE
//! helpers.

use x86::vmx::vmcs::control::{PinbasedControls, PrimaryControls, SecondaryControls};

use crate::{say, vmx};

/// The VMCS encodings the image uses, under its short names, from the x86
/// crate (SDM Vol. 3D Appendix B).
pub mod f {
    use x86::vmx::vmcs::{control, guest, host, ro};

    pub const GUEST_ES_SELECTOR: u32 = guest::ES_SELECTOR;
    pub const GUEST_CS_SELECTOR: u32 = guest::CS_SELECTOR;
    pub const GUEST_TR_SELECTOR: u32 = guest::TR_SELECTOR;
    pub const HOST_ES_SELECTOR: u32 = host::ES_SELECTOR;
    pub const HOST_CS_SELECTOR: u32 = host::CS_SELECTOR;
    pub const HOST_SS_SELECTOR: u32 = host::SS_SELECTOR;
    pub const HOST_DS_SELECTOR: u32 = host::DS_SELECTOR;
    pub const HOST_FS_SELECTOR: u32 = host::FS_SELECTOR;
    pub const HOST_GS_SELECTOR: u32 = host::GS_SELECTOR;
    pub const HOST_TR_SELECTOR: u32 = host::TR_SELECTOR;
    pub const IO_BITMAP_A: u32 = control::IO_BITMAP_A_ADDR_FULL;
    pub const IO_BITMAP_B: u32 = control::IO_BITMAP_B_ADDR_FULL;
    pub const MSR_BITMAP: u32 = control::MSR_BITMAPS_ADDR_FULL;
    pub const EPT_POINTER: u32 = control::EPTP_FULL;
    pub const GUEST_PHYSICAL_ADDRESS: u32 = ro::GUEST_PHYSICAL_ADDR_FULL;
    pub const PIN_BASED: u32 = control::PINBASED_EXEC_CONTROLS;
    pub const PROC_BASED: u32 = control::PRIMARY_PROCBASED_EXEC_CONTROLS;
    pub const EXCEPTION_BITMAP: u32 = control::EXCEPTION_BITMAP;
    pub const CR3_TARGET_COUNT: u32 = control::CR3_TARGET_COUNT;
    pub const EXIT_MSR_LOAD_COUNT: u32 = control::VMEXIT_MSR_LOAD_COUNT;
    pub const ENTRY_INTR_INFO: u32 = control::VMENTRY_INTERRUPTION_INFO_FIELD;
    pub const ENTRY_EXCEPTION_ERROR: u32 = control::VMENTRY_EXCEPTION_ERR_CODE;
    pub const ENTRY_INSTRUCTION_LEN: u32 = control::VMENTRY_INSTRUCTION_LEN;
    pub const PROC_BASED2: u32 = control::SECONDARY_PROCBASED_EXEC_CONTROLS;
    pub const EXIT_REASON: u32 = ro::EXIT_REASON;
    pub const EXIT_INTR_INFO: u32 = ro::VMEXIT_INTERRUPTION_INFO;
    pub const EXIT_INSTRUCTION_LEN: u32 = ro::VMEXIT_INSTRUCTION_LEN;
    pub const GUEST_ES_LIMIT: u32 = guest::ES_LIMIT;
    pub const GUEST_TR_LIMIT: u32 = guest::TR_LIMIT;
    pub const GUEST_GDTR_LIMIT: u32 = guest::GDTR_LIMIT;
    pub const GUEST_IDTR_LIMIT: u32 = guest::IDTR_LIMIT;
    pub const GUEST_ES_AR: u32 = guest::ES_ACCESS_RIGHTS;
    pub const GUEST_CS_AR: u32 = guest::CS_ACCESS_RIGHTS;
    pub const GUEST_LDTR_AR: u32 = guest::LDTR_ACCESS_RIGHTS;
    pub const GUEST_TR_AR: u32 = guest::TR_ACCESS_RIGHTS;
    pub const GUEST_INTERRUPTIBILITY: u32 = guest::INTERRUPTIBILITY_STATE;
    pub const GUEST_ACTIVITY: u32 = guest::ACTIVITY_STATE;
    pub const PREEMPTION_TIMER: u32 = guest::VMX_PREEMPTION_TIMER_VALUE;
    pub const CR0_MASK: u32 = control::CR0_GUEST_HOST_MASK;
    pub const CR4_MASK: u32 = control::CR4_GUEST_HOST_MASK;
    pub const CR0_SHADOW: u32 = control::CR0_READ_SHADOW;
    pub const CR4_SHADOW: u32 = control::CR4_READ_SHADOW;
    pub const EXIT_QUALIFICATION: u32 = ro::EXIT_QUALIFICATION;
    pub const GUEST_CR3: u32 = guest::CR3;
    pub const GUEST_ES_BASE: u32 = guest::ES_BASE;
    pub const GUEST_CS_BASE: u32 = guest::CS_BASE;
    pub const GUEST_TR_BASE: u32 = guest::TR_BASE;
    pub const GUEST_GDTR_BASE: u32 = guest::GDTR_BASE;
    pub const GUEST_IDTR_BASE: u32 = guest::IDTR_BASE;
    pub const GUEST_DR7: u32 = guest::DR7;
    pub const GUEST_RSP: u32 = guest::RSP;
    pub const GUEST_RIP: u32 = guest::RIP;
    pub const GUEST_RFLAGS: u32 = guest::RFLAGS;
    pub const GUEST_PENDING_DBG: u32 = guest::PENDING_DBG_EXCEPTIONS;
    pub const HOST_CR0: u32 = host::CR0;
    pub const HOST_CR3: u32 = host::CR3;
    pub const HOST_TR_BASE: u32 = host::TR_BASE;
    pub const HOST_GDTR_BASE: u32 = host::GDTR_BASE;
    pub const HOST_IDTR_BASE: u32 = host::IDTR_BASE;
    pub const HOST_RSP: u32 = host::RSP;
    pub const HOST_RIP: u32 = host::RIP;
}

/// Basic exit reasons (SDM Vol. 3D Appendix C; the x86 crate 0.52 has
/// none).
pub mod reason {
    pub const EXCEPTION_OR_NMI: u32 = 0;
    pub const EXTERNAL_INTERRUPT: u32 = 1;
    pub const TRIPLE_FAULT: u32 = 2;
    pub const INIT: u32 = 3;
    pub const SIPI: u32 = 4;
    pub const TASK_SWITCH: u32 = 9;
    pub const CPUID: u32 = 10;
    pub const GETSEC: u32 = 11;
    pub const HLT: u32 = 12;
    pub const INVD: u32 = 13;
    pub const VMCALL: u32 = 18;
    pub const VMCLEAR: u32 = 19;
    pub const VMXON: u32 = 27;
    pub const CR_ACCESS: u32 = 28;
    pub const IO_INSTRUCTION: u32 = 30;
    pub const RDMSR: u32 = 31;
    pub const WRMSR: u32 = 32;
    pub const EPT_VIOLATION: u32 = 48;
    pub const EPT_MISCONFIG: u32 = 49;
    pub const INVEPT: u32 = 50;
    pub const PREEMPTION_TIMER: u32 = 52;
    pub const INVVPID: u32 = 53;
    pub const WBINVD: u32 = 54;
    pub const XSETBV: u32 = 55;
    pub const VMFUNC: u32 = 59;
}

/// Pin-based controls.
pub const PIN_NMI_EXITING: u32 = PinbasedControls::NMI_EXITING.bits();
pub const PIN_PREEMPTION_TIMER: u32 = PinbasedControls::VMX_PREEMPTION_TIMER.bits();
/// Primary processor-based controls.
pub const PROC_HLT_EXITING: u32 = PrimaryControls::HLT_EXITING.bits();
pub const PROC_USE_IO_BITMAPS: u32 = PrimaryControls::USE_IO_BITMAPS.bits();
pub const PROC_USE_MSR_BITMAPS: u32 = PrimaryControls::USE_MSR_BITMAPS.bits();
pub const PROC_SECONDARY: u32 = PrimaryControls::SECONDARY_CONTROLS.bits();
/// Secondary processor-based controls.
pub const PROC2_EPT: u32 = SecondaryControls::ENABLE_EPT.bits();
pub const PROC2_RDTSCP: u32 = SecondaryControls::ENABLE_RDTSCP.bits();
pub const PROC2_UNRESTRICTED_GUEST: u32 = SecondaryControls::UNRESTRICTED_GUEST.bits();
pub const PROC2_INVPCID: u32 = SecondaryControls::ENABLE_INVPCID.bits();
pub const PROC2_XSAVES: u32 = SecondaryControls::ENABLE_XSAVES_XRSTORS.bits();

/// Event injection (VM-entry interruption information; the x86 crate 0.52
/// has no encoder for it).
pub mod inject {
    const VALID: u32 = 1 << 31;
    const DELIVER_ERROR_CODE: u32 = 1 << 11;
    const NMI_TYPE: u32 = 2 << 8;
    const HW_EXCEPTION: u32 = 3 << 8;
    pub const UD: u32 = 6 | HW_EXCEPTION | VALID;
    pub const GP: u32 = 13 | HW_EXCEPTION | DELIVER_ERROR_CODE | VALID;
    pub const NMI: u32 = 2 | NMI_TYPE | VALID;
}

/// VMWRITE during setup; a failure names the field and stops.
pub fn w(field: u32, value: u64) {
    // SAFETY: every caller writes either guest state or controls validated
    // against the capability MSRs, or host state pointing at the boot.s
    // trampoline, its dedicated stack and the tables loaded by desc::init,
    // all of which stay valid forever.
    if unsafe { vmx::vmwrite(field, value) }.is_err() {
        say!("\nFATAL vmwrite {field:#x} <- {value:#x} failed");
        crate::console::shutdown()
    }
}

/// VMREAD; a field the CPU lacks reads 0.
pub fn r(field: u32) -> u64 {
    vmx::vmread(field).unwrap_or(0)
}
