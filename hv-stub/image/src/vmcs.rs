//! The current VMCS: the field encodings hv-stub/core does not define (SDM
//! Vol. 3D Appendix B), the exit reasons and control bits the image uses,
//! and checked VMREAD/VMWRITE helpers.

use crate::{say, vmx};

/// VMCS encodings not in `hv_stub::msr::field`.
pub mod f {
    pub const GUEST_ES_SELECTOR: u32 = 0x800;
    pub const GUEST_CS_SELECTOR: u32 = 0x802;
    pub const GUEST_TR_SELECTOR: u32 = 0x80E;
    pub const HOST_ES_SELECTOR: u32 = 0xC00;
    pub const HOST_CS_SELECTOR: u32 = 0xC02;
    pub const HOST_SS_SELECTOR: u32 = 0xC04;
    pub const HOST_DS_SELECTOR: u32 = 0xC06;
    pub const HOST_FS_SELECTOR: u32 = 0xC08;
    pub const HOST_GS_SELECTOR: u32 = 0xC0A;
    pub const HOST_TR_SELECTOR: u32 = 0xC0C;
    pub const IO_BITMAP_A: u32 = 0x2000;
    pub const IO_BITMAP_B: u32 = 0x2002;
    pub const MSR_BITMAP: u32 = 0x2004;
    pub const EPT_POINTER: u32 = 0x201A;
    pub const GUEST_PHYSICAL_ADDRESS: u32 = 0x2400;
    pub const PIN_BASED: u32 = 0x4000;
    pub const PROC_BASED: u32 = 0x4002;
    pub const EXCEPTION_BITMAP: u32 = 0x4004;
    pub const CR3_TARGET_COUNT: u32 = 0x400A;
    pub const EXIT_MSR_LOAD_COUNT: u32 = 0x4010;
    pub const ENTRY_INTR_INFO: u32 = 0x4016;
    pub const ENTRY_EXCEPTION_ERROR: u32 = 0x4018;
    pub const ENTRY_INSTRUCTION_LEN: u32 = 0x401A;
    pub const PROC_BASED2: u32 = 0x401E;
    pub const EXIT_REASON: u32 = 0x4402;
    pub const EXIT_INTR_INFO: u32 = 0x4404;
    pub const EXIT_INSTRUCTION_LEN: u32 = 0x440C;
    pub const GUEST_ES_LIMIT: u32 = 0x4800;
    pub const GUEST_TR_LIMIT: u32 = 0x480E;
    pub const GUEST_GDTR_LIMIT: u32 = 0x4810;
    pub const GUEST_IDTR_LIMIT: u32 = 0x4812;
    pub const GUEST_ES_AR: u32 = 0x4814;
    pub const GUEST_CS_AR: u32 = 0x4816;
    pub const GUEST_LDTR_AR: u32 = 0x4820;
    pub const GUEST_TR_AR: u32 = 0x4822;
    pub const GUEST_INTERRUPTIBILITY: u32 = 0x4824;
    pub const GUEST_ACTIVITY: u32 = 0x4826;
    pub const PREEMPTION_TIMER: u32 = 0x482E;
    pub const CR0_MASK: u32 = 0x6000;
    pub const CR4_MASK: u32 = 0x6002;
    pub const CR0_SHADOW: u32 = 0x6004;
    pub const CR4_SHADOW: u32 = 0x6006;
    pub const EXIT_QUALIFICATION: u32 = 0x6400;
    pub const GUEST_CR3: u32 = 0x6802;
    pub const GUEST_ES_BASE: u32 = 0x6806;
    pub const GUEST_CS_BASE: u32 = 0x6808;
    pub const GUEST_TR_BASE: u32 = 0x6814;
    pub const GUEST_GDTR_BASE: u32 = 0x6816;
    pub const GUEST_IDTR_BASE: u32 = 0x6818;
    pub const GUEST_DR7: u32 = 0x681A;
    pub const GUEST_RSP: u32 = 0x681C;
    pub const GUEST_RIP: u32 = 0x681E;
    pub const GUEST_RFLAGS: u32 = 0x6820;
    pub const GUEST_PENDING_DBG: u32 = 0x6822;
    pub const HOST_CR0: u32 = 0x6C00;
    pub const HOST_CR3: u32 = 0x6C02;
    pub const HOST_TR_BASE: u32 = 0x6C0A;
    pub const HOST_GDTR_BASE: u32 = 0x6C0C;
    pub const HOST_IDTR_BASE: u32 = 0x6C0E;
    pub const HOST_RSP: u32 = 0x6C14;
    pub const HOST_RIP: u32 = 0x6C16;
}

/// Basic exit reasons (SDM Vol. 3D Appendix C).
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
pub const PIN_NMI_EXITING: u32 = 1 << 3;
pub const PIN_PREEMPTION_TIMER: u32 = 1 << 6;
/// Primary processor-based controls.
pub const PROC_USE_IO_BITMAPS: u32 = 1 << 25;
pub const PROC_USE_MSR_BITMAPS: u32 = 1 << 28;
pub const PROC_SECONDARY: u32 = 1 << 31;
/// Secondary processor-based controls.
pub const PROC2_EPT: u32 = 1 << 1;
pub const PROC2_RDTSCP: u32 = 1 << 3;
pub const PROC2_UNRESTRICTED_GUEST: u32 = 1 << 7;
pub const PROC2_INVPCID: u32 = 1 << 12;
pub const PROC2_XSAVES: u32 = 1 << 20;

/// Event injection (VM-entry interruption information).
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
