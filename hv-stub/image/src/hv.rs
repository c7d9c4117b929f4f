//! The hypervisor's start: decides the guest (the Linux payload a disk made
//! by build-disk.sh carries, else the observer loop), has `setup` enter VMX
//! operation and write the VMCS, has `guest_state` write the guest state,
//! and launches; from then on `run` handles every VM exit.

use core::ptr::addr_of_mut;
use core::sync::atomic::{AtomicBool, Ordering};

use hv_stub::Stub;
use pulse_proto::message::caps;

use hv_stub::cpus::CpuState;

use crate::backend::{GuestCpu, RealVmx};
use crate::guest_state::{self, Initial};
use crate::link::{Link, PollPeriod};
use crate::run::{self, Host};
use crate::setup::{self, Config, HostMsrs, VmxPages, DEFAULT_PAT};
use crate::uart::Uart;
use crate::vmcs::*;
use crate::{cpu, desc, entropy, ept, firmware, guest, key, linux, memmap, say, vmx};

/// Linux's 64-bit entry: PE, MP, ET, NE, PG; CR4.PAE; EFER.LME|LMA.
const LINUX_CR0: u64 = 0x8000_0023;
const LINUX_CR4: u64 = 1 << 5;
const LINUX_EFER: u64 = 0x500;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestKind {
    Observer,
    Linux,
}

/// Instructions the guest may use only if a secondary control enables them
/// (else CPUID hides them).
#[derive(Clone, Copy, Default)]
pub struct GuestHas {
    pub rdtscp: bool,
    pub invpcid: bool,
    pub xsaves: bool,
}

static mut PAGES: VmxPages = VmxPages::ZERO;
static PAGES_TAKEN: AtomicBool = AtomicBool::new(false);

fn take_pages() -> &'static mut VmxPages {
    assert!(
        !PAGES_TAKEN.swap(true, Ordering::SeqCst),
        "VMX pages taken twice"
    );
    // SAFETY: the flag above makes this the only reference ever created to
    // PAGES, which is 'static.
    unsafe { &mut *addr_of_mut!(PAGES) }
}

pub fn fatal(what: &str) -> ! {
    say!("\nFATAL {what}");
    crate::console::shutdown()
}

/// Sets up VMX and launches the guest. Never returns.
pub fn start() -> ! {
    // Before anything reuses the low pages boot.s filled.
    let firmware_map = firmware::e820();
    let payload = firmware::payload();
    let tables = desc::init();
    let feature_control = setup::enable_vmx();
    let kind = if payload.is_some() {
        GuestKind::Linux
    } else {
        GuestKind::Observer
    };
    let uart = Uart::detect_com1();
    if uart.is_none() {
        say!("HV no UART at COM1 (0x3f8): no debugger link; the guest runs without it");
    }
    let config = Config::choose(kind, feature_control, uart.is_some());
    let pages = take_pages();
    setup::enter_vmx(&config, pages);
    let host_msrs = HostMsrs::read();
    let load_count = setup::write_vmcs(&config, pages, &tables, &host_msrs);
    let fixed_crs = config.fixed_crs;

    // --- guest state ------------------------------------------------------
    let mut guest_rsi = 0;
    // The guest's view of IA32_FEATURE_CONTROL: a Linux guest sees it locked
    // with VMX disabled, matching CPUID without VMX.
    let mut feature_control_shadow = feature_control;
    match kind {
        GuestKind::Observer => {
            // Shares the host's CRs; no masks (it never writes them).
            w(f::CR0_MASK, 0);
            w(f::CR4_MASK, 0);
            let init = Initial {
                cr0: config.cr0,
                cr0_shadow: config.cr0,
                cr3: cpu::read_cr3(),
                cr4: config.cr4,
                cr4_shadow: config.cr4,
                pat: host_msrs.pat,
                efer: host_msrs.efer,
                perf_global: host_msrs.perf_global,
                entry_ctls: config.entry_ctls,
                rip: guest::guest_main as *const () as u64,
                // As if called: RSP = 8 mod 16 at the first instruction.
                rsp: pages.guest_stack.as_ptr_range().end as u64 - 8,
            };
            guest_state::observer(&init, &tables);
        }
        GuestKind::Linux => {
            let Some(payload) = payload.as_ref() else {
                fatal("no payload")
            };
            let map = memmap::guest_map(&firmware_map);
            for e in map.iter() {
                say!("HV guest e820 {:#x}-{:#x} type {}", e.addr, e.end(), e.kind);
            }
            let loaded = match linux::load(payload, &map) {
                Ok(loaded) => loaded,
                Err(error) => {
                    say!("HV ERROR {error}");
                    crate::console::shutdown()
                }
            };
            let eptp = match ept::build(&memmap::hv_stub_ranges(), map.ram_top()) {
                Ok(eptp) => eptp,
                Err(why) => fatal(why),
            };
            w(f::EPT_POINTER, eptp);
            w(f::CR0_MASK, fixed_crs.cr0_mask());
            w(f::CR4_MASK, fixed_crs.cr4_mask());
            let init = Initial {
                cr0: (LINUX_CR0 | fixed_crs.cr0_fixed0) & fixed_crs.cr0_fixed1,
                cr0_shadow: LINUX_CR0,
                cr3: loaded.cr3,
                cr4: LINUX_CR4 | fixed_crs.cr4_fixed0,
                cr4_shadow: LINUX_CR4,
                pat: DEFAULT_PAT,
                efer: LINUX_EFER,
                perf_global: host_msrs.perf_global,
                entry_ctls: config.entry_ctls,
                rip: loaded.rip,
                rsp: linux::STACK_TOP,
            };
            guest_state::linux(&init);
            guest_rsi = loaded.rsi;
            crate::exits::FORWARD_HOST_NMIS.store(true, Ordering::SeqCst);
            feature_control_shadow &= !0b110;
            say!(
                "HV Linux: entry {:#x}, boot_params {:#x}, {} command-line bytes",
                loaded.rip,
                loaded.rsi,
                payload.cmdline().len()
            );
        }
    }

    // --- the request handler, then launch ---------------------------------
    let backend = RealVmx::new(
        config.caps,
        &mut pages.load_area[..],
        load_count,
        feature_control_shadow,
        kind == GuestKind::Linux,
    );
    let guest_caps = match kind {
        GuestKind::Observer => caps::REAL_VMX | caps::GUEST_OBSERVER,
        GuestKind::Linux => caps::REAL_VMX,
    };
    let mut stub = Stub::new(
        GuestCpu {
            vmx: backend,
            state: CpuState::Running,
        },
        guest_caps,
        entropy::sample(),
    );
    // Session numbers and handshake nonces (docs/SECURITY.md).
    for _ in 0..4 {
        stub.add_entropy(entropy::sample());
    }
    stub.set_entropy_source(entropy::sample);
    if let Some(key) = key::configured() {
        stub.set_key(key);
        say!("HV link: authenticated (a key is set)");
    }
    run::install(Host {
        link: Link::new(stub, uart),
        kind,
        ready: kind == GuestKind::Linux,
        exits: 0,
        fixed_crs,
        guest_has: config.guest_has,
        com1_noted: false,
        com1_write_reported: false,
        poll: PollPeriod::new(config.poll_ticks),
        timer_rate: config.timer_rate,
        timer_value: config.timer_value,
    });
    say!("HV launching guest");
    // SAFETY: the VMCS is complete (above); RSI is what the guest's entry
    // point expects (boot_params for Linux).
    unsafe { vmx::vmlaunch(guest_rsi) };
    let error = r(vmx::VM_INSTRUCTION_ERROR);
    say!("HV ERROR VMLAUNCH failed, VM-instruction error {error}");
    fatal("VMLAUNCH")
}
