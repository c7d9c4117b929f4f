//! The software VMX model: a VMCS, the processor's MSR file, a VM-entry
//! MSR-load area and a simulated VM entry/exit that apply SDM Vol. 3C
//! 26.3.1 (the guest-state checks on the MSR fields), 26.3.2.1 (loading the
//! guest MSRs), 26.4 (the MSR-load area) and 27.3/27.5 (saving guest and
//! loading host MSRs on VM exit). It backs the `sim` target and the host
//! tests; the routing code cannot tell it from the real backend.
//!
//! Its default debuggee is what a user meets on real hardware under hv-stub:
//! a 64-bit guest with paging on and every MSR load control the CPU allows
//! enabled, with matching save/load exit controls.

use crate::caps::CpuCaps;
use crate::msr::{bits, entry, field, index::*, EntryControls, ExitControls};
use crate::msr_table::{self, HostValue, Place, Save, TABLE};
use crate::policy::{self, GuestMsrAccess};
use crate::validate::{self, is_canonical, EFER_VALID};
use crate::vmx_backend::{GpFault, MsrEntry, VmxBackend};

/// VMCS fields the model holds besides the MSR fields of the table: the
/// controls, MSR-area addresses and counts, CR0/CR4 and SSP it uses.
const OTHER_FIELDS: [u32; 14] = [
    field::VM_EXIT_MSR_STORE_ADDR,
    field::VM_EXIT_MSR_STORE_COUNT,
    field::VM_ENTRY_MSR_LOAD_ADDR,
    field::VMCS_LINK_POINTER,
    field::VM_EXIT_CONTROLS,
    field::VM_ENTRY_CONTROLS,
    field::VM_ENTRY_MSR_LOAD_COUNT,
    field::GUEST_CR0,
    field::GUEST_CR4,
    field::GUEST_SSP,
    field::HOST_CR4,
    field::HOST_SSP,
    // Stand-ins, so that the table is not all MSR state.
    field::IO_BITMAP_A_ADDR,
    field::MSR_BITMAPS_ADDR,
];

/// Every VMCS field the model holds: [`OTHER_FIELDS`] and the guest and
/// host fields of the MSR table ([`msr_table::MSR_FIELDS`]).
const FIELDS: [u32; OTHER_FIELDS.len() + msr_table::MSR_FIELDS.len()] = {
    let mut all = [0; OTHER_FIELDS.len() + msr_table::MSR_FIELDS.len()];
    let mut i = 0;
    while i < all.len() {
        all[i] = if i < OTHER_FIELDS.len() {
            OTHER_FIELDS[i]
        } else {
            msr_table::MSR_FIELDS[i - OTHER_FIELDS.len()]
        };
        i += 1;
    }
    all
};
const _: () = assert!(msr_table::distinct(&FIELDS));

/// MSRs the model's processor may implement (filtered by its capabilities):
/// the routed ones and every other architectural MSR the validator knows
/// ([`msr_table::MODELLED`]), so `sim` and a real CPU agree on which MSR
/// numbers exist. Not modelled: the x2APIC register range (the guest's
/// interrupt controller), the VMX capability MSRs (hv-stub hides VMX from
/// its guest), machine-check and performance-counter banks, and
/// model-specific MSRs.
const MSRS: [u32; msr_table::MODELLED.len()] = msr_table::MODELLED;

/// Capacity of the model's VM-entry MSR-load area.
pub const LOAD_AREA_CAPACITY: usize = 8;

/// Power-on IA32_APIC_BASE of the bootstrap processor: base 0xFEE00000,
/// enabled (11), BSP (8).
pub const APIC_BASE_BSP: u64 = 0xFEE0_0900;
const APIC_BASE_BSP_FLAG: u64 = 1 << 8;

/// Power-on IA32_PAT: WB, WT, UC-, UC repeated.
pub const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;
/// The debuggee's EFER: SCE, LME, LMA, NXE.
pub const EFER_LONG_MODE: u64 = 0xD01;
/// A 64-bit guest with paging: PE, MP, ET, NE, WP, AM, PG.
pub const GUEST_CR0_DEFAULT: u64 = 0x8005_0033;
/// Locked, VMX outside SMX enabled (what Bochs and firmware leave).
pub const FEATURE_CONTROL_DEFAULT: u64 = policy::FEATURE_CONTROL_FOR_VMXON.bits();
/// The model's guest is the observer kind: not told that VMX is absent (its
/// VMX capability MSRs fault anyway: the model does not hold them).
const HIDES_VMX: bool = false;

/// Why a simulated VM entry failed (SDM 26.3.1 / 26.4); hardware would
/// report VMfailValid or an exit with reason 33/34.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EntryFailure {
    /// A control is 1 that the processor does not allow.
    ControlNotAllowed,
    /// An invalid guest-state field (exit reason 33); names the field.
    InvalidGuestState(u32),
    /// The MSR-load area entry at this index could not be loaded (exit
    /// reason 34).
    MsrLoading(usize),
}

/// What the model counts, so tests can prove exactly-once execution.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct ModelStats {
    /// VMWRITEs through the backend interface.
    pub vmwrites: u64,
    /// WRMSRs that took effect (the guest's and the backend's).
    pub wrmsrs: u64,
    /// Successful VM entries.
    pub vm_entries: u64,
    /// Failed VM entries.
    pub entry_failures: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Root,
    Guest,
}

/// A snapshot of the model's state (see [`SoftVmx::state`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ModelState {
    /// The VMCS fields, (encoding, value).
    pub vmcs: [(u32, u64); FIELDS.len()],
    /// The MSR file, (index, value); unused slots are (0, 0).
    pub msrs: [(u32, u64); MSRS.len()],
    /// The VM-entry MSR-load area, all slots.
    pub load_area: [MsrEntry; LOAD_AREA_CAPACITY],
    /// The IA32_FEATURE_CONTROL value the guest reads.
    pub feature_control_shadow: u64,
}

/// One processor in software: its VMCS, MSR file, VM-entry MSR-load area
/// and IA32_FEATURE_CONTROL shadow, with simulated VM entries and exits. A
/// [`VmxBackend`] the routing cannot tell from the real one.
#[derive(Clone)]
pub struct SoftVmx {
    caps: CpuCaps,
    vmcs: [(u32, u64); FIELDS.len()],
    msrs: [(u32, u64); MSRS.len()],
    msr_count: usize,
    load_area: [MsrEntry; LOAD_AREA_CAPACITY],
    feature_control_shadow: u64,
    mode: Mode,
    stats: ModelStats,
}

impl SoftVmx {
    /// A debuggee as hv-stub leaves it: root mode between VM exits, a 64-bit
    /// guest, every allowed MSR load control on.
    pub fn new(caps: CpuCaps) -> Self {
        let mut vmx = SoftVmx {
            caps,
            vmcs: [(0, 0); FIELDS.len()],
            msrs: [(0, 0); MSRS.len()],
            msr_count: 0,
            load_area: [MsrEntry::default(); LOAD_AREA_CAPACITY],
            feature_control_shadow: policy::guest_feature_control(
                FEATURE_CONTROL_DEFAULT,
                HIDES_VMX,
            ),
            mode: Mode::Root,
            stats: ModelStats::default(),
        };
        for (slot, &f) in vmx.vmcs.iter_mut().zip(FIELDS.iter()) {
            *slot = (f, 0);
        }
        for &msr in MSRS.iter() {
            let present = !matches!(
                validate::wrmsr_check(msr, 0, &caps),
                Some(Err(validate::Refusal::NotPresent))
            );
            if present {
                vmx.msrs[vmx.msr_count] = (msr, 0);
                vmx.msr_count += 1;
            }
        }
        // Sorted, so that every lookup is a binary search: the observer
        // guest reads dozens of MSRs per run, on every CPU.
        vmx.vmcs.sort_unstable_by_key(|&(f, _)| f);
        vmx.msrs[..vmx.msr_count].sort_unstable_by_key(|&(msr, _)| msr);
        vmx.power_on_state();
        vmx
    }

    fn power_on_state(&mut self) {
        let (controls, exits) = policy::controls_for(&self.caps);
        let kernel = 0xFFFF_F800_0010_0000u64;
        let host = 0xFFFF_8000_0020_0000u64;
        for (f, v) in [
            (field::VM_ENTRY_CONTROLS, u64::from(controls.bits())),
            (field::VM_EXIT_CONTROLS, u64::from(exits.bits())),
            (field::VMCS_LINK_POINTER, u64::MAX),
            (field::GUEST_CR0, GUEST_CR0_DEFAULT),
            (field::GUEST_CR4, 0x2020), // PAE, VMXE
            (field::GUEST_IA32_EFER, EFER_LONG_MODE),
            (field::GUEST_IA32_PAT, PAT_DEFAULT),
            (field::GUEST_IA32_SYSENTER_CS, 0x10),
            (field::GUEST_IA32_SYSENTER_ESP, kernel + 0x8000),
            (field::GUEST_IA32_SYSENTER_EIP, kernel + 0x1000),
            (field::GUEST_GS_BASE, kernel + 0x4_0000),
            (field::GUEST_SMBASE, 0x3_0000),
            (field::HOST_CR4, 0x2020),
            (field::HOST_IA32_EFER, EFER_LONG_MODE),
            (field::HOST_IA32_PAT, PAT_DEFAULT),
            (field::HOST_IA32_SYSENTER_CS, 0x8),
            (field::HOST_IA32_SYSENTER_ESP, host + 0x8000),
            (field::HOST_IA32_SYSENTER_EIP, host + 0x1000),
            (field::HOST_GS_BASE, host + 0x4_0000),
        ] {
            self.set_field(f, v);
        }
        // Live MSRs hold the host's values while in root mode.
        for (msr, v) in [
            (IA32_FEATURE_CONTROL, FEATURE_CONTROL_DEFAULT),
            (IA32_EFER, EFER_LONG_MODE),
            (IA32_PAT, PAT_DEFAULT),
            (IA32_SYSENTER_CS, 0x8),
            (IA32_SYSENTER_ESP, host + 0x8000),
            (IA32_SYSENTER_EIP, host + 0x1000),
            (IA32_GS_BASE, host + 0x4_0000),
            (IA32_STAR, 0x0023_0010_0000_0000),
            (IA32_LSTAR, kernel + 0x2000),
            (IA32_CSTAR, kernel + 0x3000),
            (IA32_FMASK, 0x4_7700),
            // 8 variable ranges, fixed ranges, WC (SDM 12.11.1).
            (IA32_MTRRCAP, 0x508),
            // Not vulnerable to RDCL, enhanced IBRS, RSBA, no L1D flush
            // needed on entry, SSB_NO: what Bochs reports.
            (IA32_ARCH_CAPABILITIES, 0x1F),
            // MTRRs enabled, fixed ranges enabled, default WB.
            (IA32_MTRR_DEF_TYPE, 0xC06),
            // xAPIC mode at the architectural base; the BSP flag (bit 8)
            // is cleared on the other processors (`SoftVmx::make_ap`).
            (IA32_APIC_BASE, APIC_BASE_BSP),
        ] {
            self.set_live(msr, v);
        }
    }

    /// What the modelled processor supports.
    pub fn caps(&self) -> &CpuCaps {
        &self.caps
    }

    /// Makes this model an application processor: IA32_APIC_BASE's BSP
    /// flag reads 0.
    pub fn make_ap(&mut self) {
        if let Some(base) = self.live(IA32_APIC_BASE) {
            self.set_live(IA32_APIC_BASE, base & !APIC_BASE_BSP_FLAG);
        }
    }

    /// What the model has counted so far.
    pub fn stats(&self) -> ModelStats {
        self.stats
    }

    fn field_slot(&self, f: u32) -> Option<usize> {
        self.vmcs.binary_search_by_key(&f, |&(k, _)| k).ok()
    }

    fn field(&self, f: u32) -> u64 {
        self.field_slot(f).map_or(0, |i| self.vmcs[i].1)
    }

    fn set_field(&mut self, f: u32, v: u64) {
        if let Some(i) = self.field_slot(f) {
            self.vmcs[i].1 = v;
        }
    }

    fn msr_slot(&self, msr: u32) -> Option<usize> {
        self.msrs[..self.msr_count]
            .binary_search_by_key(&msr, |&(k, _)| k)
            .ok()
    }

    /// Sets a live MSR without any check (state set-up and VM entry/exit).
    fn set_live(&mut self, msr: u32, value: u64) {
        if let Some(i) = self.msr_slot(msr) {
            self.msrs[i].1 = value;
        }
    }

    fn live(&self, msr: u32) -> Option<u64> {
        self.msr_slot(msr).map(|i| self.msrs[i].1)
    }

    /// Hardware RDMSR: #GP for an absent MSR and for a write-only one.
    fn hardware_rdmsr(&self, msr: u32) -> Result<u64, GpFault> {
        if validate::write_only(msr) {
            return Err(GpFault);
        }
        self.live(msr).ok_or(GpFault)
    }

    fn entry_controls(&self) -> u32 {
        self.field(field::VM_ENTRY_CONTROLS) as u32
    }

    fn exit_controls(&self) -> u32 {
        self.field(field::VM_EXIT_CONTROLS) as u32
    }

    /// Turns an MSR load entry control (and its exit partners) on or off, as
    /// a hypervisor that does or does not switch that MSR would. Returns
    /// false (and changes nothing) if the processor does not allow that
    /// setting: a 1 it does not support, or a 0 for a control it supports
    /// only as 1 ("load debug controls" on the first VMX processors).
    ///
    /// Like a hypervisor that changes how it switches an MSR, the model keeps
    /// the guest's value across the change: turning a control on first
    /// copies what the guest sees into the guest-state field; turning it off
    /// puts the field's value into the live MSR (for IA32_EFER only SCE/NXE
    /// and the other non-mode bits: VM entry forces LMA/LME either way).
    pub fn set_load_control(&mut self, control: u32, on: bool) -> bool {
        if on && !self.caps.entry_allowed(control) {
            return false;
        }
        if !on && !self.caps.entry_may_be_0(control) {
            return false;
        }
        if self.load_control(control) != on {
            self.keep_guest_values(control, on);
        }
        let partner = policy::exit_partners(EntryControls::from_bits_retain(control)).bits()
            & self.caps.exit_allowed1
            & !self.caps.exit_required1;
        let (e, x) = (self.entry_controls(), self.exit_controls());
        let (e, x) = if on {
            (e | control, x | partner)
        } else {
            (e & !control, x & !partner)
        };
        self.set_field(field::VM_ENTRY_CONTROLS, u64::from(e));
        self.set_field(field::VM_EXIT_CONTROLS, u64::from(x));
        true
    }

    /// Whether VM-entry `control` is 1 now.
    pub fn load_control(&self, control: u32) -> bool {
        self.entry_controls() & control != 0
    }

    /// See [`SoftVmx::set_load_control`]: moves the guest's current value of
    /// each MSR `control` governs to where it will come from once `control`
    /// is `on`. What the guest sees is the model's own answer: the MSR file
    /// after the loads of a VM entry ([`SoftVmx::entered`]).
    fn keep_guest_values(&mut self, control: u32, on: bool) {
        let guest = self.entered();
        for d in TABLE {
            let (Some(c), Some(f)) = (d.entry_control(), d.guest_field()) else {
                continue;
            };
            if c.bits() != control {
                continue;
            }
            let Some(value) = guest.live(d.msr) else {
                continue;
            };
            if on {
                self.set_field(f, value);
            } else if d.msr == IA32_EFER {
                let mode = bits::EFER_LME | bits::EFER_LMA;
                let live = self.live(IA32_EFER).unwrap_or(0);
                self.set_live(IA32_EFER, (live & mode) | (value & !mode));
            } else {
                self.set_live(d.msr, value);
            }
        }
    }

    /// The processor as the guest finds it after the next VM entry's loads
    /// (26.3.2.1, then the MSR-load area as if by WRMSR), without the
    /// entry's checks; an area entry that would fail is left out.
    fn entered(&self) -> SoftVmx {
        let mut next = self.clone();
        next.load_guest_fields();
        next.mode = Mode::Guest;
        for i in 0..next.area().len() {
            let e = next.load_area[i];
            if !Self::forbidden_in_load_area(&e) {
                let _ = next.apply_wrmsr(e.index, e.value);
            }
        }
        next
    }

    /// Puts `msr` in the VM-entry MSR-load area with `value`. As hv-stub
    /// configures it (`crate::policy::load_area_msrs`), the area is also the
    /// VM-exit MSR-store area, so the entry carries the guest's own value
    /// across VM exits. Returns false if the area is full.
    pub fn add_load_area_entry(&mut self, msr: u32, value: u64) -> bool {
        let count = self.field(field::VM_ENTRY_MSR_LOAD_COUNT) as usize;
        if count >= LOAD_AREA_CAPACITY {
            return false;
        }
        self.load_area[count] = MsrEntry {
            index: msr,
            reserved: 0,
            value,
        };
        let area = self.field(field::VM_ENTRY_MSR_LOAD_ADDR);
        self.set_field(field::VM_ENTRY_MSR_LOAD_COUNT, (count + 1) as u64);
        self.set_field(field::VM_EXIT_MSR_STORE_ADDR, area);
        self.set_field(field::VM_EXIT_MSR_STORE_COUNT, (count + 1) as u64);
        true
    }

    /// SDM 27.4: VM exit stores each MSR of the VM-exit MSR-store area, after
    /// saving guest state and before loading the host's. The model's only
    /// store area is its load area (same address), as hv-stub sets it up.
    fn store_exit_msrs(&mut self) {
        if self.field(field::VM_EXIT_MSR_STORE_ADDR) != self.field(field::VM_ENTRY_MSR_LOAD_ADDR) {
            return;
        }
        let count = (self.field(field::VM_EXIT_MSR_STORE_COUNT) as usize).min(LOAD_AREA_CAPACITY);
        for i in 0..count {
            if let Some(value) = self.live(self.load_area[i].index) {
                self.load_area[i].value = value;
            }
        }
    }

    /// The live MSR value, as the processor holds it now (the host's in
    /// root mode for MSRs VMX switches); `None` if the MSR does not exist.
    pub fn live_msr(&self, msr: u32) -> Option<u64> {
        self.live(msr)
    }

    /// Everything the model holds except its counters: VMCS fields, the MSR
    /// file, the VM-entry MSR-load area and the FEATURE_CONTROL shadow. Two
    /// equal states give the guest exactly the same view.
    pub fn state(&self) -> ModelState {
        ModelState {
            vmcs: self.vmcs,
            msrs: self.msrs,
            load_area: self.load_area,
            feature_control_shadow: self.feature_control_shadow,
        }
    }

    /// Whether CR0.PG is 1 in the context a WRMSR executes in: the host's
    /// (64-bit, paging on) in root mode, the guest's CR0 field in guest mode.
    fn paging_now(&self) -> bool {
        match self.mode {
            Mode::Root => true,
            Mode::Guest => self.field(field::GUEST_CR0) & bits::CR0_PG != 0,
        }
    }

    /// Hardware WRMSR: #GP for an absent MSR or a refused value.
    fn hardware_wrmsr(&mut self, msr: u32, value: u64) -> Result<(), GpFault> {
        self.apply_wrmsr(msr, value)?;
        self.stats.wrmsrs += 1;
        Ok(())
    }

    /// WRMSR's effect and #GP conditions, as both the WRMSR instruction and
    /// the VM-entry MSR-load area (SDM 26.4: "as if by WRMSR") apply them.
    fn apply_wrmsr(&mut self, msr: u32, value: u64) -> Result<(), GpFault> {
        let slot = self.msr_slot(msr).ok_or(GpFault)?;
        let old = self.msrs[slot].1;
        match validate::wrmsr_check(msr, value, &self.caps) {
            Some(Ok(())) => {}
            _ => return Err(GpFault),
        }
        validate::wrmsr_transition_check(msr, old, value).map_err(|_| GpFault)?;
        let value = match msr {
            IA32_FEATURE_CONTROL if old & bits::FEATURE_CONTROL_LOCK != 0 => return Err(GpFault),
            // Changing LME while paging is on is #GP (SDM Vol. 3A,
            // "Initializing IA-32e Mode"; KVM `set_efer`); LMA is read-only:
            // the written bit is ignored.
            IA32_EFER => {
                if self.paging_now() && (value ^ old) & bits::EFER_LME != 0 {
                    return Err(GpFault);
                }
                (value & !bits::EFER_LMA) | (old & bits::EFER_LMA)
            }
            // The model keeps bits 31:0 only, as KVM (a 32-bit VMCS field)
            // and Bochs (`sysenter_cs_msr = val_32`) do.
            IA32_SYSENTER_CS => value & 0xFFFF_FFFF,
            // SDM 10.5.4.1: with the local APIC timer not in TSC-deadline
            // mode (the model has no timer), writes are ignored and the MSR
            // reads 0.
            IA32_TSC_DEADLINE => 0,
            _ => value,
        };
        self.msrs[slot].1 = value;
        Ok(())
    }

    fn check_guest_state(&self) -> Result<(), EntryFailure> {
        let caps = &self.caps;
        let controls = self.entry_controls();
        let exits = self.exit_controls();
        if controls & !caps.entry_allowed1 != 0
            || exits & !caps.exit_allowed1 != 0
            || controls & caps.entry_required1 != caps.entry_required1
            || exits & caps.exit_required1 != caps.exit_required1
        {
            return Err(EntryFailure::ControlNotAllowed);
        }
        let bad = |f: u32| Err(EntryFailure::InvalidGuestState(f));
        let on = |c: u32| controls & c != 0;
        let ia32e = on(entry::IA32E_MODE_GUEST);
        let cr0 = self.field(field::GUEST_CR0);
        let paging = cr0 & bits::CR0_PG != 0;
        if ia32e && (!paging || self.field(field::GUEST_CR4) & bits::CR4_PAE == 0) {
            return bad(field::GUEST_CR0);
        }
        let canonical = |f: u32| is_canonical(self.field(f), caps);
        for f in [
            field::GUEST_IA32_SYSENTER_ESP,
            field::GUEST_IA32_SYSENTER_EIP,
            field::GUEST_FS_BASE,
            field::GUEST_GS_BASE,
        ] {
            if !canonical(f) {
                return bad(f);
            }
        }
        let debugctl = self.field(field::GUEST_IA32_DEBUGCTL);
        if on(entry::LOAD_DEBUG_CONTROLS) && debugctl & !caps.debugctl_valid() != 0 {
            return bad(field::GUEST_IA32_DEBUGCTL);
        }
        if on(entry::LOAD_IA32_EFER) {
            let efer = self.field(field::GUEST_IA32_EFER);
            let lma = efer & bits::EFER_LMA != 0;
            let lme = efer & bits::EFER_LME != 0;
            if efer & !EFER_VALID != 0 || lma != ia32e || (paging && lma != lme) {
                return bad(field::GUEST_IA32_EFER);
            }
        }
        // The MSR fields' checks are written out from the SDM (26.3.1.1)
        // rather than taken from `validate`, which the routing uses to
        // refuse values: the model must be able to catch a validator that
        // accepts too much. Only RTIT_CTL, whose CPUID-dependent encodings
        // the SDM leaves to the WRMSR rules, reuses them.
        let value = |f: u32| self.field(f);
        let perf = value(field::GUEST_IA32_PERF_GLOBAL_CTRL);
        if on(entry::LOAD_IA32_PERF_GLOBAL_CTRL) && perf & !caps.perf_global_ctrl_valid() != 0 {
            return bad(field::GUEST_IA32_PERF_GLOBAL_CTRL);
        }
        let pat_types_ok = value(field::GUEST_IA32_PAT)
            .to_le_bytes()
            .iter()
            .all(|&t| t < 8 && t != 2 && t != 3);
        if on(entry::LOAD_IA32_PAT) && !pat_types_ok {
            return bad(field::GUEST_IA32_PAT);
        }
        let bndcfgs = value(field::GUEST_IA32_BNDCFGS);
        if on(entry::LOAD_IA32_BNDCFGS)
            && (bndcfgs & 0xFFC != 0 || !is_canonical(bndcfgs & !0xFFF, caps))
        {
            return bad(field::GUEST_IA32_BNDCFGS);
        }
        if on(entry::LOAD_PKRS) && value(field::GUEST_IA32_PKRS) >> 32 != 0 {
            return bad(field::GUEST_IA32_PKRS);
        }
        let rtit = value(field::GUEST_IA32_RTIT_CTL);
        if on(entry::LOAD_IA32_RTIT_CTL)
            && !matches!(
                validate::wrmsr_check(IA32_RTIT_CTL, rtit, caps),
                Some(Ok(()))
            )
        {
            return bad(field::GUEST_IA32_RTIT_CTL);
        }
        if on(entry::LOAD_CET_STATE) {
            let s_cet = value(field::GUEST_IA32_S_CET);
            let mut cet_valid = 0u64;
            if caps.cet_shstk {
                cet_valid |= 0b11;
            }
            if caps.cet_ibt {
                cet_valid |= 0b11_1100 | (0b11 << 10) | !0xFFF;
            }
            let suppress_and_tracker = s_cet & (0b11 << 10) == 0b11 << 10;
            if s_cet & !cet_valid != 0
                || !is_canonical(s_cet & !0xFFF, caps)
                || suppress_and_tracker
            {
                return bad(field::GUEST_IA32_S_CET);
            }
            if !canonical(field::GUEST_IA32_INTERRUPT_SSP_TABLE_ADDR) {
                return bad(field::GUEST_IA32_INTERRUPT_SSP_TABLE_ADDR);
            }
        }
        // SSP: canonical and 4-byte aligned (Bochs `VMenterLoadCheckGuestState`,
        // KVM `nested_vmx_check_cet_state_common`).
        let ssp = self.field(field::GUEST_SSP);
        if on(entry::LOAD_CET_STATE) && (!canonical(field::GUEST_SSP) || ssp & 3 != 0) {
            return bad(field::GUEST_SSP);
        }
        Ok(())
    }

    /// SDM 26.4: entries that may never be loaded, whatever their value:
    /// FS/GS base, the x2APIC range, an MSR writable only in SMM
    /// (IA32_SMM_MONITOR_CTL; IA32_SMBASE, absent from the model's MSR file
    /// outside SMM, fails as a #GP) and a non-zero reserved half.
    fn forbidden_in_load_area(e: &MsrEntry) -> bool {
        matches!(e.index, IA32_FS_BASE | IA32_GS_BASE | IA32_SMM_MONITOR_CTL)
            || e.index >> 8 == 0x8
            || e.reserved != 0
    }

    fn area(&self) -> &[MsrEntry] {
        let count = (self.field(field::VM_ENTRY_MSR_LOAD_COUNT) as usize).min(LOAD_AREA_CAPACITY);
        &self.load_area[..count]
    }

    /// SDM 26.3.2.1: loads the guest MSRs from the guest-state fields, as
    /// the MSR table places them.
    fn load_guest_fields(&mut self) {
        let controls = self.entry_controls();
        let on = |c: EntryControls| controls & c.bits() != 0;
        for d in TABLE {
            match d.place {
                // SYSENTER_CS: the field has 32 bits, bits 63:32 of the MSR
                // are cleared.
                Place::AlwaysField { field, low32 } => {
                    self.set_live(d.msr, truncated(self.field(field), low32));
                }
                Place::ControlledField { field, control } if on(control) => {
                    self.set_live(d.msr, self.field(field));
                }
                _ => {}
            }
        }
        let ia32e = on(EntryControls::IA32E_MODE_GUEST);
        if on(EntryControls::LOAD_IA32_EFER) {
            self.set_live(IA32_EFER, self.field(field::GUEST_IA32_EFER));
        } else {
            let mut efer = self.live(IA32_EFER).unwrap_or(0);
            efer = with_bit(efer, bits::EFER_LMA, ia32e);
            if self.field(field::GUEST_CR0) & bits::CR0_PG != 0 {
                efer = with_bit(efer, bits::EFER_LME, ia32e);
            }
            self.set_live(IA32_EFER, efer);
        }
    }

    /// Simulated VM entry: the checks of SDM 26.2/26.3.1, the loads of
    /// 26.3.2.1, then the VM-entry MSR-load area (26.4), each entry in order
    /// and "as if by WRMSR" in the guest's context (so LMA is kept, LME may
    /// not change under guest paging, a locked FEATURE_CONTROL refuses, ...).
    /// On any failure nothing at all is loaded and the model stays in root
    /// mode, as a VM entry that fails (VMfailValid or an exit with reason
    /// 33/34) leaves the guest unentered.
    pub fn vm_entry(&mut self) -> Result<(), EntryFailure> {
        assert_eq!(self.mode, Mode::Root, "VM entry from guest mode");
        if let Err(failure) = self.check_guest_state() {
            self.stats.entry_failures += 1;
            return Err(failure);
        }
        let mut next = self.clone();
        next.load_guest_fields();
        next.mode = Mode::Guest;
        let count = next.area().len();
        for i in 0..count {
            let e = next.load_area[i];
            if Self::forbidden_in_load_area(&e) || next.apply_wrmsr(e.index, e.value).is_err() {
                self.stats.entry_failures += 1;
                return Err(EntryFailure::MsrLoading(i));
            }
        }
        *self = next;
        self.stats.vm_entries += 1;
        Ok(())
    }

    /// Simulated VM exit: saves the guest MSRs the controls ask for and
    /// loads the host's (SDM 27.3.1, 27.5.1), as the MSR table's exit rules
    /// say.
    pub fn vm_exit(&mut self) {
        assert_eq!(self.mode, Mode::Guest, "VM exit from root mode");
        let exits = ExitControls::from_bits_retain(self.exit_controls());
        let caps = self.caps;
        let supported = |entry: EntryControls, exit: ExitControls| {
            caps.entry_allowed(entry.bits()) || caps.exit_allowed1 & exit.bits() != 0
        };
        for d in TABLE {
            let Some(f) = d.guest_field() else { continue };
            let live = self.live(d.msr);
            let saved = match d.exit.save {
                Save::Always => Some(live.unwrap_or(0)),
                Save::Under(control) if exits.contains(control) => Some(live.unwrap_or(0)),
                // SDM 27.3.1: saved whenever the processor supports the
                // entry (or clear-on-exit) control, whatever the controls
                // in force.
                Save::IfSupported { entry, exit } if supported(entry, exit) => live,
                _ => None,
            };
            if let Some(value) = saved {
                self.set_field(f, truncated(value, d.low32()));
            }
        }
        // "IA-32e mode guest" is saved from the guest's EFER.LMA.
        let lma = self.live(IA32_EFER).unwrap_or(0) & bits::EFER_LMA != 0;
        let ec = with_bit(
            u64::from(self.entry_controls()),
            u64::from(entry::IA32E_MODE_GUEST),
            lma,
        );
        self.set_field(field::VM_ENTRY_CONTROLS, ec);
        self.store_exit_msrs();

        // Host state.
        let applies = |control: Option<ExitControls>| control.is_none_or(|c| exits.contains(c));
        for d in TABLE {
            let value = match d.exit.host {
                HostValue::Field { field, control } if applies(control) => {
                    truncated(self.field(field), d.low32())
                }
                HostValue::Cleared(control) if applies(control) => 0,
                _ => continue,
            };
            self.set_live(d.msr, value);
        }
        if exits.contains(ExitControls::LOAD_IA32_EFER) {
            self.set_live(IA32_EFER, self.field(field::HOST_IA32_EFER));
        } else {
            let host64 = exits.contains(ExitControls::HOST_ADDRESS_SPACE_SIZE);
            let efer = self.live(IA32_EFER).unwrap_or(0);
            let efer = with_bit(
                with_bit(efer, bits::EFER_LMA, host64),
                bits::EFER_LME,
                host64,
            );
            self.set_live(IA32_EFER, efer);
        }
        self.mode = Mode::Root;
    }

    /// Runs the guest once: VM entry, `f` with the guest's view, VM exit.
    pub fn run_guest<R>(
        &mut self,
        f: impl FnOnce(&mut GuestView<'_>) -> R,
    ) -> Result<R, EntryFailure> {
        self.vm_entry()?;
        let result = f(&mut GuestView { vmx: self });
        self.vm_exit();
        Ok(result)
    }
}

/// Bits 31:0 of `value` if `low32`, else `value`.
fn truncated(value: u64, low32: bool) -> u64 {
    if low32 {
        value & 0xFFFF_FFFF
    } else {
        value
    }
}

fn with_bit(value: u64, bit: u64, on: bool) -> u64 {
    if on {
        value | bit
    } else {
        value & !bit
    }
}

/// The guest's side of the model: its RDMSR/WRMSR, with hv-stub's
/// interception of IA32_FEATURE_CONTROL (the shadow) applied.
pub struct GuestView<'a> {
    vmx: &'a mut SoftVmx,
}

impl GuestView<'_> {
    /// The guest's own RDMSR.
    pub fn rdmsr(&self, msr: u32) -> Result<u64, GpFault> {
        match policy::guest_msr_access(msr, HIDES_VMX) {
            GuestMsrAccess::FeatureControlShadow => Ok(self.vmx.feature_control_shadow),
            GuestMsrAccess::Hidden => Err(GpFault),
            GuestMsrAccess::Processor => self.vmx.hardware_rdmsr(msr),
        }
    }

    /// The guest's own WRMSR. A locked IA32_FEATURE_CONTROL shadow refuses it.
    pub fn wrmsr(&mut self, msr: u32, value: u64) -> Result<(), GpFault> {
        match policy::guest_msr_access(msr, HIDES_VMX) {
            GuestMsrAccess::FeatureControlShadow => {
                let shadow = self.vmx.feature_control_shadow;
                self.vmx.feature_control_shadow =
                    policy::guest_feature_control_write(shadow, value, &self.vmx.caps)?;
                Ok(())
            }
            GuestMsrAccess::Hidden => Err(GpFault),
            GuestMsrAccess::Processor => self.vmx.hardware_wrmsr(msr, value),
        }
    }
}

impl VmxBackend for SoftVmx {
    fn caps(&self) -> &CpuCaps {
        &self.caps
    }

    fn vmread(&self, f: u32) -> u64 {
        self.field(f)
    }

    fn vmwrite(&mut self, f: u32, value: u64) {
        self.stats.vmwrites += 1;
        self.set_field(f, value);
    }

    fn rdmsr(&mut self, msr: u32) -> Result<u64, GpFault> {
        self.hardware_rdmsr(msr)
    }

    fn wrmsr(&mut self, msr: u32, value: u64) -> Result<(), GpFault> {
        self.hardware_wrmsr(msr, value)
    }

    fn entry_load_area(&mut self) -> &mut [MsrEntry] {
        let count = (self.field(field::VM_ENTRY_MSR_LOAD_COUNT) as usize).min(LOAD_AREA_CAPACITY);
        &mut self.load_area[..count]
    }

    fn feature_control_shadow(&mut self) -> &mut u64 {
        &mut self.feature_control_shadow
    }
}
