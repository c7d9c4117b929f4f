//! The hypervisor's start: decides the guest (the Linux payload a disk made
//! by build-disk.sh carries, else the observer loop), has `setup` enter VMX
//! operation and write the VMCS, has `guest_state` write the guest state,
//! and launches; from then on `run` handles every VM exit.

use core::ptr::{addr_of, addr_of_mut};
use core::sync::atomic::{AtomicBool, Ordering};

use hv_stub::msr::bits::{CR4_PAE, EFER_LMA, EFER_LME};
use hv_stub::{policy, Stub};
use pulse_proto::message::caps;

use hv_stub::cpus::CpuState;

use crate::backend::{self, Machine, RealVmx};
use crate::guest_state::{self, Initial};
use crate::link::{self, Link, PollPeriod};
use crate::percpu::{self, MAX_CPUS};
use crate::run::{self, Host};
use crate::setup::{self, Config, HostMsrs, VmxPages, DEFAULT_PAT};
use crate::uart::Uart;
use crate::vmcs::*;
use crate::{cpu, desc, entropy, ept, firmware, guest, key, linux, memmap, say, smp, vmx};

/// Linux's 64-bit entry: PE, MP, ET, NE, PG; CR4.PAE; EFER.LME|LMA.
const LINUX_CR0: u64 = 0x8000_0023;
const LINUX_CR4: u64 = CR4_PAE;
const LINUX_EFER: u64 = EFER_LME | EFER_LMA;

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

/// Each processor's VMX pages, taken once by that processor.
static mut PAGES: [VmxPages; MAX_CPUS] = [const { VmxPages::ZERO }; MAX_CPUS];
static PAGES_TAKEN: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

fn take_pages(cpu: usize) -> &'static mut VmxPages {
    assert!(
        !PAGES_TAKEN[cpu].swap(true, Ordering::SeqCst),
        "VMX pages taken twice"
    );
    // SAFETY: the flag above makes this the only reference ever created to
    // PAGES[cpu], which is 'static.
    unsafe { &mut (*addr_of_mut!(PAGES))[cpu] }
}

/// What the boot processor decided for every processor: the controls, and
/// for a Linux guest the EPT pointer.
#[derive(Clone, Copy)]
struct Plan {
    config: Config,
    eptp: u64,
}

static mut PLAN: Option<Plan> = None;

fn publish(plan: Plan) {
    // SAFETY: written once by the boot processor before it starts the
    // application processors, which read it only after `smp::arrive`
    // (ordered by the SeqCst flag the boot processor sets afterwards).
    unsafe { *addr_of_mut!(PLAN) = Some(plan) };
}

fn plan() -> Plan {
    // SAFETY: see `publish`: never written again once published.
    match unsafe { *core::ptr::addr_of!(PLAN) } {
        Some(plan) => plan,
        None => fatal("an application processor ran before the plan"),
    }
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
    let tables = desc::init(0);
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
    let cpus = smp::start_application_processors();
    say!("HV {cpus} CPU(s)");
    // The timer also brings back a processor Bochs 2.7 had to reset
    // (smp::reset_through_init), from the boot processor's exits.
    let config = Config::choose(kind, feature_control, uart.is_some() || cpus > 1);
    let fixed_crs = config.fixed_crs;

    // A Linux guest: its boot structures and the EPT every processor uses,
    // before any other processor runs.
    let mut linux_entry = None;
    let mut eptp = 0;
    if let Some(payload) = payload.as_ref() {
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
        eptp = match ept::build(&memmap::hv_stub_ranges(), map.ram_top()) {
            Ok(eptp) => eptp,
            Err(why) => fatal(why),
        };
        say!(
            "HV Linux: entry {:#x}, boot_params {:#x}, {} command-line bytes",
            loaded.rip,
            loaded.rsi,
            payload.cmdline().len()
        );
        linux_entry = Some(loaded);
    }
    publish(Plan { config, eptp });
    percpu::set_state(0, CpuState::Running);
    smp::release();
    // Several of a halted processor's longest poll periods.
    backend::set_request_budget(config.poll_ticks << (link::MAX_BACKOFF_SHIFT + 2));

    let pages = take_pages(0);
    setup::enter_vmx(&config, pages);
    let host_msrs = HostMsrs::read();
    let load_count = setup::write_vmcs(&config, pages, &tables, &host_msrs);

    // --- guest state ------------------------------------------------------
    let mut guest_rsi = 0;
    // The guest's view of IA32_FEATURE_CONTROL: a Linux guest sees it locked
    // with VMX disabled, matching CPUID without VMX.
    let feature_control_shadow =
        policy::guest_feature_control(feature_control, kind == GuestKind::Linux);
    match kind {
        GuestKind::Observer => observer_state(
            &config,
            &host_msrs,
            &tables,
            guest::guest_main as *const () as u64,
            pages.guest_stack.as_ptr_range().end as u64,
        ),
        GuestKind::Linux => {
            let Some(loaded) = linux_entry else {
                fatal("no payload")
            };
            linux_controls(&config, eptp);
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
        }
    }

    // --- the request handler, then launch ---------------------------------
    backend::install(
        0,
        RealVmx::new(
            config.caps,
            &mut pages.load_area[..],
            load_count,
            feature_control_shadow,
            kind == GuestKind::Linux,
        ),
    );
    let guest_caps = match kind {
        GuestKind::Observer => caps::REAL_VMX | caps::GUEST_OBSERVER,
        GuestKind::Linux => caps::REAL_VMX,
    };
    let mut stub = Stub::new(Machine, guest_caps, entropy::sample());
    // Session numbers and handshake nonces (docs/SECURITY.md).
    for _ in 0..4 {
        stub.add_entropy(entropy::sample());
    }
    stub.set_entropy_source(entropy::sample);
    if let Some(key) = key::configured() {
        stub.set_key(key);
        say!("HV link: authenticated (a key is set)");
    }
    run::install(host(0, &config, Some(Link::new(stub, uart))));
    say!("HV launching guest");
    launch(guest_rsi)
}

fn host(cpu: usize, config: &Config, link: Option<Link>) -> Host {
    Host {
        cpu,
        link,
        kind: config.kind,
        ready: config.kind == GuestKind::Linux,
        exits: 0,
        fixed_crs: config.fixed_crs,
        guest_has: config.guest_has,
        com1_noted: false,
        com1_write_reported: false,
        started_at: None,
        timer: config.pin & PIN_PREEMPTION_TIMER != 0,
        poll: PollPeriod::new(config.poll_ticks),
        timer_rate: config.timer_rate,
        timer_value: config.timer_value,
    }
}

/// A Linux guest's EPT and CR guest/host masks (every bit VMX fixes).
fn linux_controls(config: &Config, eptp: u64) {
    w(f::EPT_POINTER, eptp);
    w(f::CR0_MASK, config.fixed_crs.cr0_mask());
    w(f::CR4_MASK, config.fixed_crs.cr4_mask());
}

/// The observer guest's state: the host's CRs (no masks: it never writes
/// them) and MSRs, its own stack, entered at `rip`.
fn observer_state(config: &Config, host: &HostMsrs, tables: &desc::Loaded, rip: u64, stack: u64) {
    w(f::CR0_MASK, 0);
    w(f::CR4_MASK, 0);
    let init = Initial {
        cr0: config.cr0,
        cr0_shadow: config.cr0,
        cr3: cpu::read_cr3(),
        cr4: config.cr4,
        cr4_shadow: config.cr4,
        pat: host.pat,
        efer: host.efer,
        perf_global: host.perf_global,
        entry_ctls: config.entry_ctls,
        rip,
        // As if called: RSP = 8 mod 16 at the first instruction.
        rsp: stack - 8,
    };
    guest_state::observer(&init, tables);
}

fn launch(rsi: u64) -> ! {
    // SAFETY: the VMCS is complete (written by the caller); RSI is what the
    // guest's entry point expects (boot_params for Linux, the processor's
    // index for the observer on an application processor).
    unsafe { vmx::vmlaunch(rsi) };
    let error = r(vmx::VM_INSTRUCTION_ERROR);
    say!("HV ERROR VMLAUNCH failed, VM-instruction error {error}");
    fatal("VMLAUNCH")
}

/// The addresses of processor `cpu`'s VMCS and of the top of its guest
/// stack (free with a Linux guest), without touching its pages.
pub fn vmcs_and_spare_stack(cpu: usize) -> (u64, u64) {
    // SAFETY: only addresses are taken (no reference is created).
    let pages = unsafe { addr_of!((*addr_of!(PAGES))[cpu]) };
    // SAFETY: as above, field addresses inside the static.
    unsafe {
        (
            addr_of!((*pages).vmcs) as u64,
            addr_of!((*pages).guest_stack) as u64 + setup::STACK as u64,
        )
    }
}

/// An application processor, from the boot.s trampoline (on its own
/// stack, IF=0, long mode on the boot page tables): enters VMX operation
/// with its own structures and launches its guest: for a Linux guest in
/// wait-for-SIPI, so the guest OS starts it as on bare metal; the observer
/// runs at once.
#[no_mangle]
extern "C" fn hv_ap_main(_ticket: u32) -> ! {
    let Some(cpu) = smp::arrive() else {
        // Too late to be counted: stays parked outside any guest.
        loop {
            cpu::halt();
        }
    };
    let Plan { config, eptp } = plan();
    let tables = desc::init(cpu);
    let feature_control = setup::enable_vmx();
    let pages = take_pages(cpu);
    setup::enter_vmx(&config, pages);
    let host_msrs = HostMsrs::read();
    let load_count = setup::write_vmcs(&config, pages, &tables, &host_msrs);
    let feature_control_shadow =
        policy::guest_feature_control(feature_control, config.kind == GuestKind::Linux);
    match config.kind {
        GuestKind::Observer => {
            observer_state(
                &config,
                &host_msrs,
                &tables,
                guest::ap_guest_main as *const () as u64,
                pages.guest_stack.as_ptr_range().end as u64,
            );
            percpu::set_state(cpu, CpuState::Running);
        }
        GuestKind::Linux => {
            linux_controls(&config, eptp);
            guest_state::wait_for_sipi(&config.fixed_crs);
        }
    }
    backend::install(
        cpu,
        RealVmx::new(
            config.caps,
            &mut pages.load_area[..],
            load_count,
            feature_control_shadow,
            config.kind == GuestKind::Linux,
        ),
    );
    run::install(host(cpu, &config, None));
    launch(cpu as u64)
}

/// An application processor hv-stub had reset (smp::reset_through_init),
/// from the boot.s trampoline on its spare stack: back into VMX operation
/// with its VMCS as it was, its guest at the startup vector.
#[no_mangle]
extern "C" fn hv_ap_restart(apic_id: u32) -> ! {
    let Some(cpu) = percpu::index_of(apic_id) else {
        loop {
            cpu::halt();
        }
    };
    let Plan { config, .. } = plan();
    let vector = smp::restart_vector(cpu, apic_id);
    desc::reload(cpu);
    setup::enable_vmx();
    // SAFETY: only addresses are taken (no reference is created).
    let vmxon = unsafe { addr_of!((*addr_of!(PAGES))[cpu].vmxon) } as u64;
    let (vmcs, _) = vmcs_and_spare_stack(cpu);
    setup::reenter_vmx(&config, vmxon, vmcs);
    guest_state::wait_for_sipi(&config.fixed_crs);
    guest_state::start_at_sipi(vector);
    percpu::set_state(cpu, CpuState::Running);
    launch(0)
}
