//! Tier 4: what hv-stub does with a bad Linux payload or a guest that
//! misbehaves, through `hv-stub/image/run-bochs.sh -k` exactly as a user
//! runs it. Each guest is a tiny hand-made bzImage (a valid 64-bit setup
//! header in front of a few instructions at the 64-bit entry), so no real
//! kernel is needed: hv-stub must print one `HV ERROR` line and
//! run-bochs.sh must exit non-zero with it long before its deadline; where
//! the machine is still alive the debugger link keeps answering.
//! Needs `bochs-bin` (fails, not skips, without it).

mod bochs;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use pulse::{Engine, EngineConfig};

/// run-bochs.sh's own deadline for these runs; every case must end sooner.
const DEADLINE_S: u64 = 60;

fn run_bochs_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("hv-stub/image/run-bochs.sh")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hv-bad-guests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A bzImage with boot protocol 2.15 whose protected-mode code runs `code`
/// at its 64-bit entry (load address + 0x200).
fn fake_bzimage(code: &[u8]) -> Vec<u8> {
    let mut k = vec![0u8; 2 * 512]; // boot sector + one setup sector
    k[0x1F1] = 1; // setup_sects
    k[0x1FE] = 0x55;
    k[0x1FF] = 0xAA;
    k[0x200] = 0xEB; // jmp over the header, which ends at 0x268
    k[0x201] = 0x66;
    k[0x202..0x206].copy_from_slice(b"HdrS");
    k[0x206..0x208].copy_from_slice(&0x020Fu16.to_le_bytes());
    k[0x211] = 1; // LOADED_HIGH
    k[0x22C..0x230].copy_from_slice(&0x7FFF_FFFFu32.to_le_bytes()); // initrd_addr_max
    k[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes()); // kernel_alignment
    k[0x234] = 1; // relocatable
    k[0x236..0x238].copy_from_slice(&1u16.to_le_bytes()); // XLF_KERNEL_64
    k[0x238..0x23C].copy_from_slice(&2047u32.to_le_bytes()); // cmdline_size
    k[0x258..0x260].copy_from_slice(&0x100_0000u64.to_le_bytes()); // pref_address
    k[0x260..0x264].copy_from_slice(&0x10_0000u32.to_le_bytes()); // init_size
    let mut pm = vec![0xCCu8; 0x200]; // the 32-bit entry: not used
    pm.extend_from_slice(code);
    pm.resize(4096, 0xCC);
    k.extend_from_slice(&pm);
    k
}

const UD2: &[u8] = &[0x0F, 0x0B];
const HANG: &[u8] = &[0xEB, 0xFE]; // jmp $

/// `out 0xE9, al` for each byte of `text`.
fn print_e9(text: &str) -> Vec<u8> {
    text.bytes().flat_map(|b| [0xB0, b, 0xE6, 0xE9]).collect()
}

struct Run {
    status: ExitStatus,
    stdout: Vec<String>,
    stderr: String,
    took: Duration,
}

impl Run {
    fn saw(&self, text: &str) -> bool {
        self.stdout.iter().any(|l| l.contains(text))
    }

    fn tail(&self) -> String {
        let start = self.stdout.len().saturating_sub(25);
        format!(
            "status {:?} after {:?}\nstderr: {}\nstdout tail:\n{}",
            self.status,
            self.took,
            self.stderr,
            self.stdout[start..].join("\n")
        )
    }
}

/// Runs run-bochs.sh with `args`; `on_line` sees each stdout line and may
/// return true to end the run early (SIGKILL of Bochs's process group).
fn run_bochs(args: &[&str], env: &[(&str, &str)], mut on_line: impl FnMut(&str) -> bool) -> Run {
    bochs::require_bochs();
    let pidfile = scratch(&format!("pid-{}", rand_suffix()));
    let started = Instant::now();
    let mut child = Command::new("bash")
        .arg(run_bochs_script())
        .args(["-t", &DEADLINE_S.to_string()])
        .args(args)
        .env("HV_STUB_IMG", bochs::image())
        .env("HV_STUB_PIDFILE", &pidfile)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run run-bochs.sh");
    let stderr = child.stderr.take().unwrap();
    let err_thread = thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let mut stopped = false;
    while let Ok(line) = rx.recv() {
        if !stopped && on_line(&line) {
            stopped = true;
            if let Ok(pgid) = std::fs::read_to_string(&pidfile) {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", pgid.trim())])
                    .status();
            }
        }
        lines.push(line);
    }
    let status = child.wait().unwrap();
    Run {
        status,
        stdout: lines,
        stderr: err_thread.join().unwrap(),
        took: started.elapsed(),
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A fresh file per call: tests run in parallel, and rewriting a shared
/// one could let another run see it empty.
fn initrd() -> PathBuf {
    let name = format!("initrd-{}", rand_suffix());
    write(
        &name,
        b"not really an initramfs: the fake kernels never read it",
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The run failed with `line` (on stdout from hv-stub, and as run-bochs.sh's
/// summary on stderr), well before the deadline.
fn assert_failed_with(run: &Run, line: &str) {
    assert!(
        run.saw(line),
        "hv-stub did not print {line:?}\n{}",
        run.tail()
    );
    assert!(
        !run.status.success(),
        "run-bochs.sh exited 0\n{}",
        run.tail()
    );
    assert!(
        run.stderr.contains(line),
        "run-bochs.sh's summary lacks {line:?}\n{}",
        run.tail()
    );
    assert!(
        run.took < Duration::from_secs(DEADLINE_S - 10),
        "ended only at the deadline\n{}",
        run.tail()
    );
}

#[test]
fn not_a_bzimage_is_refused() {
    let kernel = write("not-bzimage", &[0u8; 8192]);
    let run = run_bochs(&["-k", s(&kernel), "-r", s(&initrd())], &[], |_| false);
    assert_failed_with(&run, "HV ERROR kernel is not a bzImage");
}

#[test]
fn missing_or_empty_initrd_is_refused() {
    let kernel = write("ud2-kernel", &fake_bzimage(UD2));
    let run = run_bochs(
        &["-k", s(&kernel), "-r", "/nonexistent/initrd"],
        &[],
        |_| false,
    );
    assert!(!run.status.success());
    assert!(
        run.stderr
            .contains("HV ERROR initrd /nonexistent/initrd: no such file"),
        "{}",
        run.tail()
    );
    let empty = write("empty-initrd", b"");
    let run = run_bochs(&["-k", s(&kernel), "-r", s(&empty)], &[], |_| false);
    assert_failed_with(&run, "HV ERROR initrd is missing");
}

#[test]
fn too_long_command_line_is_refused() {
    let kernel = write("ud2-kernel-cmdline", &fake_bzimage(UD2));
    let long = "x".repeat(3000);
    let run = run_bochs(
        &["-k", s(&kernel), "-r", s(&initrd()), "-a", &long],
        &[],
        |_| false,
    );
    assert_failed_with(
        &run,
        "HV ERROR kernel command line is 3021 bytes, the kernel accepts at most 2047",
    );
}

/// COM1 as a TCP server (Bochs waits for its one client before it boots):
/// an engine connects at once from another thread and is handed over.
fn engine_for_com1() -> (String, thread::JoinHandle<bool>, mpsc::Receiver<Engine>) {
    let port = bochs::free_port();
    let transport = format!("tcp:127.0.0.1:{port}");
    let (tx, rx) = mpsc::channel::<Engine>();
    let connector = thread::spawn(move || {
        let config = EngineConfig {
            transport,
            request_timeout: Duration::from_millis(1000),
            max_attempts: 10,
            key: None,
        };
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            match Engine::open(&config) {
                Ok(engine) => return tx.send(engine).is_ok(),
                Err(_) if Instant::now() < end => thread::sleep(Duration::from_millis(100)),
                Err(e) => panic!("cannot connect to COM1: {e:?}"),
            }
        }
    });
    (format!("server:{port}"), connector, rx)
}

#[test]
fn the_debugger_reads_what_a_linux_guest_reads() {
    let mut code = print_e9("GUEST UP\n");
    code.extend_from_slice(HANG);
    let kernel = write("guest-up", &fake_bzimage(&code));
    let (com1, connector, rx) = engine_for_com1();
    let mut answered = None;
    let run = run_bochs(
        &["-k", s(&kernel), "-r", s(&initrd()), &com1],
        &[],
        |line| {
            if line != "GUEST UP" {
                return false;
            }
            let engine = rx.recv().unwrap();
            let wrote = engine.write_msr(0x174, 0x10); // IA32_SYSENTER_CS
            answered = Some((
                engine.cpu_info(),
                wrote,
                engine.read_msr(0x174),
                engine.read_msr(0x3A),  // IA32_FEATURE_CONTROL
                engine.read_msr(0x480), // IA32_VMX_BASIC
            ));
            true
        },
    );
    assert!(connector.join().unwrap());
    let Some((info, wrote, sysenter_cs, feature_control, vmx_basic)) = answered else {
        panic!("the guest never came up\n{}", run.tail());
    };
    let info = info.expect("cpu_info");
    assert_eq!((info.count, info.running), (1, 1));
    assert_eq!(wrote, Ok(()));
    assert_eq!(sysenter_cs, Ok(0x10));
    // What a Linux guest sees, the debugger reads: FEATURE_CONTROL locked
    // with VMX disabled, no VMX capability MSRs.
    assert_eq!(feature_control.map(|v| v & 0b111), Ok(0b001));
    assert_eq!(
        vmx_basic.map_err(|e| e.status()),
        Err(pulse::Status::EXCEPTION_GENERAL_PROTECTION)
    );
}

#[test]
fn triple_fault_is_reported_to_the_debugger() {
    let kernel = write("triple-fault", &fake_bzimage(UD2));
    let (com1, connector, rx) = engine_for_com1();
    let mut answered = None;
    let run = run_bochs(
        &["-k", s(&kernel), "-r", s(&initrd()), &com1],
        &[("HV_STUB_ERROR_GRACE", "40")],
        |line| {
            if !line.starts_with("HV guest stopped") {
                return false;
            }
            let engine = rx.recv().unwrap();
            answered = Some((engine.cpu_info(), engine.read_msr(0x174)));
            true
        },
    );
    assert!(connector.join().unwrap());
    assert!(
        run.saw("HV ERROR guest triple fault at rip 0x1000200"),
        "{}",
        run.tail()
    );
    let Some((info, read)) = answered else {
        panic!("the run ended before the guest stopped\n{}", run.tail());
    };
    // The link still answers; the processor is reported stopped.
    let info = info.expect("cpu_info after the triple fault");
    assert_eq!((info.count, info.running), (1, 0));
    assert_eq!(
        read.map_err(|e| e.status()),
        Err(pulse::Status::BARRIER_OWNER_INACTIVE)
    );
    assert!(!run.status.success());
}

#[test]
fn guest_vmxon_is_reported() {
    // vmxon [0x9000], then the guest has no IDT: the injected #UD escalates.
    let mut code = vec![0xF3, 0x0F, 0xC7, 0x34, 0x25, 0x00, 0x90, 0x00, 0x00];
    code.extend_from_slice(HANG);
    let kernel = write("vmxon", &fake_bzimage(&code));
    let run = run_bochs(&["-k", s(&kernel), "-r", s(&initrd())], &[], |_| false);
    assert_failed_with(&run, "HV ERROR guest executed VMXON at rip 0x1000200");
    assert!(run.saw("HV ERROR guest triple fault"), "{}", run.tail());
}

#[test]
fn guest_write_to_hv_stub_memory_is_reported() {
    // mov byte ptr [0x100000], 0: hv-stub's .bss starts at 1 MiB.
    let mut code = vec![0xC6, 0x04, 0x25, 0x00, 0x00, 0x10, 0x00, 0x00];
    code.extend_from_slice(HANG);
    let kernel = write("poke-hv", &fake_bzimage(&code));
    let run = run_bochs(&["-k", s(&kernel), "-r", s(&initrd())], &[], |_| false);
    assert_failed_with(
        &run,
        "HV ERROR guest touched hv-stub memory at GPA 0x100000 (wrote",
    );
}

#[test]
fn com1_is_hidden_and_sending_on_it_is_reported() {
    // in al, 0x3FD (LSR): an absent UART reads 0xFF -> print "COM1 FF".
    let mut code = vec![0x66, 0xBA, 0xFD, 0x03, 0xEC, 0x3C, 0xFF];
    let shown = print_e9("COM1 FF\n");
    code.extend_from_slice(&[0x75, shown.len() as u8]); // jne past the print
    code.extend_from_slice(&shown);
    // out 0x3F8, 'X': data to hv-stub's UART.
    code.extend_from_slice(&[0x66, 0xBA, 0xF8, 0x03, 0xB0, b'X', 0xEE]);
    code.extend_from_slice(HANG);
    let kernel = write("com1", &fake_bzimage(&code));
    // A real UART on COM1 (Bochs connects to this listener), so what the
    // guest reads is hv-stub hiding it, not an absent device.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let com1 = format!("client:{}", listener.local_addr().unwrap().port());
    let link = thread::spawn(move || listener.accept().map(|(socket, _)| socket));
    let run = run_bochs(&["-k", s(&kernel), "-r", s(&initrd()), &com1], &[], |_| {
        false
    });
    assert!(link.join().unwrap().is_ok(), "Bochs never connected COM1");
    assert!(!run.saw("HV no UART"), "{}", run.tail());
    assert!(
        run.saw("COM1 FF"),
        "the guest saw a device on COM1\n{}",
        run.tail()
    );
    assert!(
        run.saw("HV guest probed COM1 (port 0x3fd)"),
        "{}",
        run.tail()
    );
    assert_failed_with(&run, "HV ERROR guest wrote data to COM1");
}

/// `code`, then print `text` on port 0xE9 unless the flags say skip
/// (`skip_opcode`: the short conditional jump taken when the check failed).
fn print_unless(code: &mut Vec<u8>, skip_opcode: u8, text: &str) {
    let shown = print_e9(text);
    code.extend_from_slice(&[skip_opcode, shown.len() as u8]);
    code.extend_from_slice(&shown);
}

#[test]
fn os_instructions_see_a_processor_without_vmx() {
    const JC: u8 = 0x72;
    const JNE: u8 = 0x75;
    let mut code = Vec::new();
    // CPUID.1:ECX[5] (VMX) reads 0.
    code.extend_from_slice(&[0xB8, 1, 0, 0, 0, 0x0F, 0xA2, 0x0F, 0xBA, 0xE1, 0x05]);
    print_unless(&mut code, JC, "CPUID NOVMX\n");
    // CR4.VMXE reads 0 (read shadow).
    code.extend_from_slice(&[0x0F, 0x20, 0xE0, 0x48, 0x0F, 0xBA, 0xE0, 0x0D]);
    print_unless(&mut code, JC, "CR4 NOVMXE\n");
    // CR4.OSXSAVE on, XSETBV XCR0 = x87|SSE (exits, checked, executed),
    // XGETBV reads it back. (The prints clobber AL: read CR4 again.)
    code.extend_from_slice(&[0x0F, 0x20, 0xE0, 0x48, 0x0D, 0x00, 0x00, 0x04, 0x00]);
    code.extend_from_slice(&[0x0F, 0x22, 0xE0]);
    code.extend_from_slice(&[0x31, 0xC9, 0x31, 0xD2, 0xB8, 3, 0, 0, 0, 0x0F, 0x01, 0xD1]);
    code.extend_from_slice(&[0x31, 0xC9, 0x0F, 0x01, 0xD0, 0x83, 0xF8, 0x03]);
    print_unless(&mut code, JNE, "XCR0 3\n");
    // IA32_FEATURE_CONTROL: VMX enable bits (1, 2) clear.
    code.extend_from_slice(&[0xB9, 0x3A, 0, 0, 0, 0x0F, 0x32, 0xA8, 0x06]);
    print_unless(&mut code, JNE, "FEATURE_CONTROL NOVMX\n");
    // XSETBV with x87 clear must #GP; without an IDT that ends in a
    // triple fault, which proves the #GP was injected.
    code.extend_from_slice(&[0x31, 0xC9, 0x31, 0xD2, 0x31, 0xC0, 0x0F, 0x01, 0xD1]);
    code.extend_from_slice(HANG);
    let kernel = write("os-instructions", &fake_bzimage(&code));
    let run = run_bochs(&["-k", s(&kernel), "-r", s(&initrd())], &[], |_| false);
    for line in [
        "CPUID NOVMX",
        "CR4 NOVMXE",
        "XCR0 3",
        "FEATURE_CONTROL NOVMX",
    ] {
        assert!(
            run.saw(line),
            "guest did not print {line:?}\n{}",
            run.tail()
        );
    }
    assert_failed_with(&run, "HV ERROR guest triple fault");
}

#[test]
fn without_a_uart_the_guest_runs_without_a_link() {
    // COM1 "none": Bochs has no 16550 there, every port reads 0xFF, which
    // once looked like endless received data and hung the host.
    let mut alive = false;
    let run = run_bochs(&["none"], &[], |line| {
        alive = line.starts_with("ALIVE");
        alive
    });
    assert!(
        run.saw("HV no UART at COM1 (0x3f8): no debugger link; the guest runs without it"),
        "{}",
        run.tail()
    );
    assert!(run.saw("READY"), "{}", run.tail());
    assert!(alive, "the observer guest stopped running\n{}", run.tail());
}
