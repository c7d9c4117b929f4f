//! The real-Linux guest (`hv-stub/linux-guest`): Debian's cloud kernel,
//! unmodified, with the initramfs whose `/init` prints what Linux itself
//! reads through `/dev/cpu/N/msr` as `LINUX ...` lines on port 0xE9.
//! Boots it under hv-stub (`run-bochs.sh -k/-r`) or bare (`run-bare.sh`,
//! the baseline) and reads those lines.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::{image, repo_root, require_bochs, unique, Bochs};

/// From Bochs's start to `LINUX READY`. The kernel alone needs ≈20 s on an
/// idle machine (docs/BENCHMARKS.md); a loaded 2-core CI machine, more.
pub const READY_TIMEOUT: Duration = Duration::from_secs(240);
/// No Linux run lives longer than this (boot plus the test's work).
pub const RUN_DEADLINE: Duration = Duration::from_secs(420);
/// Lines that mean the guest or hv-stub is gone; a wait stops at them.
const FAILURE_MARKS: [&str; 4] = ["HV ERROR", "FATAL", "Kernel panic", "LINUX FAIL"];

fn guest_dir() -> PathBuf {
    repo_root().join("hv-stub/linux-guest")
}

/// Runs one of the guest's scripts and returns its trimmed stdout.
fn script_output(name: &str) -> String {
    let script = guest_dir().join(name);
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed (the Linux guest needs: apt-get install --no-install-recommends \
         linux-image-cloud-amd64; apt-get install cpio gzip gcc libc6-dev)",
        script.display()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Debian's installed cloud kernel. Fails (never skips) when it is missing:
/// scripts/test.sh installs it, like Bochs.
pub fn kernel() -> PathBuf {
    static KERNEL: OnceLock<PathBuf> = OnceLock::new();
    KERNEL
        .get_or_init(|| script_output("kernel.sh").into())
        .clone()
}

/// The test initramfs, built once per process (the script is incremental).
pub fn initramfs() -> PathBuf {
    static INITRD: OnceLock<PathBuf> = OnceLock::new();
    INITRD
        .get_or_init(|| script_output("build-initramfs.sh").into())
        .clone()
}

fn workdir() -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("hv-stub-linux-{}-{}", std::process::id(), unique()));
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn deadline_arg() -> String {
    RUN_DEADLINE.as_secs().to_string()
}

/// Boots the kernel and initramfs as hv-stub's guest, COM1 (the debugger
/// link) a TCP socket Bochs listens on. `cmdline` is appended to the
/// kernel's command line (may be empty).
pub fn boot_under_hv_stub(com1_port: u16, cmdline: &str) -> Bochs {
    require_bochs();
    let (kernel, initrd) = (kernel(), initramfs());
    let workdir = workdir();
    let mut command = Command::new(repo_root().join("hv-stub/image/run-bochs.sh"));
    command.args(["-t", &deadline_arg()]);
    command.arg("-k").arg(&kernel).arg("-r").arg(&initrd);
    if !cmdline.is_empty() {
        command.args(["-a", cmdline]);
    }
    command
        .arg(format!("server:{com1_port}"))
        .env("HV_STUB_IMG", image())
        .env("HV_STUB_LOG", workdir.join("bochs.log"));
    Bochs::spawn(command, workdir, RUN_DEADLINE)
}

/// run-bochs.sh's Bochs settings for a Linux guest (its defaults with -k),
/// for runs of other images that are to be compared with it.
pub const LINUX_BOCHS_SETTINGS: [&str; 6] =
    ["-i", "50000000", "-m", "corei7_skylake_x", "-M", "256"];

/// Boots another image (hv-stub with its observer guest, the UART echo
/// image) through run-bochs.sh with the Linux guest's Bochs settings, COM1
/// a TCP socket Bochs listens on.
pub fn boot_image_like_linux(image: &Path, com1_port: u16) -> Bochs {
    require_bochs();
    let workdir = workdir();
    let mut command = Command::new(repo_root().join("hv-stub/image/run-bochs.sh"));
    command
        .args(["-t", &deadline_arg()])
        .args(LINUX_BOCHS_SETTINGS)
        .arg(format!("server:{com1_port}"))
        .env("HV_STUB_IMG", image)
        .env("HV_STUB_LOG", workdir.join("bochs.log"));
    Bochs::spawn(command, workdir, RUN_DEADLINE)
}

/// Boots the same kernel and initramfs without hv-stub (run-bare.sh:
/// syslinux from a FAT disk, same Bochs CPU model, ips, clock and memory).
/// The kernel console goes to `console.txt` in the run's work directory.
pub fn boot_bare() -> Bochs {
    require_bochs();
    kernel();
    let workdir = workdir();
    let mut command = Command::new(guest_dir().join("run-bare.sh"));
    command
        .args(["-t", &deadline_arg(), "-o"])
        .arg(workdir.join("console.txt"))
        .env("HV_STUB_LOG", workdir.join("bochs.log"));
    Bochs::spawn(command, workdir, RUN_DEADLINE)
}

/// What Linux got when it read one MSR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reading {
    Value(u64),
    /// The RDMSR faulted (the msr driver's EIO).
    Gp,
    /// Any other failure of the read, with its errno.
    Error(i32),
}

/// One line of init's report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    Msr {
        cpu: u32,
        msr: u32,
        reading: Reading,
    },
    Cpus(u32),
    Ready,
    Alive(u64),
    LoopBegin,
    /// A busy loop: iterations per second of the guest's own clock, the
    /// iterations and the guest nanoseconds they took.
    Loop {
        per_guest_second: u64,
        iterations: u64,
        ns: u64,
    },
    Fail(String),
}

/// Parses a `LINUX ...` line (anywhere in the line: Bochs may prefix text).
pub fn parse(line: &str) -> Option<Report> {
    let rest = line[line.find("LINUX ")? + 6..].trim_end();
    let words: Vec<&str> = rest.split_whitespace().collect();
    let num = |s: &str| s.parse::<u64>().ok();
    let field = |s: &str, key: &str| s.strip_prefix(key).and_then(num);
    match words.as_slice() {
        ["READY"] => Some(Report::Ready),
        ["ALIVE", n] => num(n).map(Report::Alive),
        ["CPUS", n] => n.parse().ok().map(Report::Cpus),
        ["LOOP", "BEGIN"] => Some(Report::LoopBegin),
        ["LOOP", rate, iterations, ns] => Some(Report::Loop {
            per_guest_second: num(rate)?,
            iterations: field(iterations, "iterations=")?,
            ns: field(ns, "ns=")?,
        }),
        ["FAIL", ..] => Some(Report::Fail(rest["FAIL ".len()..].to_owned())),
        [cpu, msr, tail @ ..] => {
            let cpu = cpu.parse().ok()?;
            let msr = u32::from_str_radix(msr, 16).ok()?;
            let reading = match tail {
                ["GP"] => Reading::Gp,
                ["ERR", errno] => Reading::Error(errno.parse().ok()?),
                [value] => Reading::Value(u64::from_str_radix(value, 16).ok()?),
                _ => return None,
            };
            Some(Report::Msr { cpu, msr, reading })
        }
        _ => None,
    }
}

fn failure(line: &str) -> bool {
    FAILURE_MARKS.iter().any(|mark| line.contains(mark))
}

/// Waits for a line at index >= `from` whose report satisfies `want`;
/// returns its index. Stops with an error at a failure line (hv-stub's
/// `HV ERROR`/`FATAL`, a kernel panic, init's `LINUX FAIL`), when Bochs
/// exits, or after `timeout`.
pub fn wait_report(
    vm: &Bochs,
    from: usize,
    timeout: Duration,
    want: impl Fn(&Report) -> bool,
) -> Result<usize, String> {
    let i = vm.wait_from(from, timeout, |l| {
        failure(l) || parse(l).is_some_and(|r| want(&r))
    })?;
    let line = &vm.lines()[i];
    if failure(line) {
        let tail = vm.lines()[i..].iter().take(20).cloned().collect::<Vec<_>>();
        return Err(format!("guest failed: {}", tail.join("\n")));
    }
    Ok(i)
}

/// Waits for `LINUX READY` and returns its line index.
pub fn wait_ready(vm: &Bochs) -> usize {
    wait_report(vm, 0, READY_TIMEOUT, |r| *r == Report::Ready)
        .unwrap_or_else(|e| panic!("Linux never reached LINUX READY: {e}"))
}

/// What Linux last reported per (cpu, msr), from lines before `upto`
/// (init prints each MSR once and then only its changes).
pub fn readings(vm: &Bochs, upto: usize) -> BTreeMap<(u32, u32), Reading> {
    vm.lines()[..upto]
        .iter()
        .filter_map(|l| match parse(l) {
            Some(Report::Msr { cpu, msr, reading }) => Some(((cpu, msr), reading)),
            _ => None,
        })
        .collect()
}

/// Every report about (cpu, msr) in lines from `from` on.
pub fn reports_since(vm: &Bochs, from: usize, cpu: u32, msr: u32) -> Vec<Reading> {
    vm.lines()[from..]
        .iter()
        .filter_map(|l| match parse(l) {
            Some(Report::Msr {
                cpu: c,
                msr: m,
                reading,
            }) if c == cpu && m == msr => Some(reading),
            _ => None,
        })
        .collect()
}

/// The newest heartbeat number so far (0 before the first).
pub fn last_alive(vm: &Bochs) -> u64 {
    vm.lines()
        .iter()
        .rev()
        .find_map(|l| match parse(l) {
            Some(Report::Alive(n)) => Some(n),
            _ => None,
        })
        .unwrap_or(0)
}

/// Waits until init's heartbeat passes `n` (each heartbeat is ten full
/// sweeps over every watched MSR later); returns the line index.
pub fn wait_alive_after(vm: &Bochs, n: u64, timeout: Duration) -> Result<usize, String> {
    wait_report(vm, 0, timeout, |r| matches!(r, Report::Alive(m) if *m > n))
        .map_err(|e| format!("Linux's heartbeat stopped at {n}: {e}"))
}

/// CPU seconds (user + system) the Bochs process has used so far, read from
/// /proc: unlike wall time, barely affected by other load on the machine,
/// so it measures emulation cost. None before the launcher reported Bochs's
/// id or after Bochs exited.
pub fn bochs_cpu_seconds(vm: &Bochs) -> Option<f64> {
    let pid: i32 = fs::read_to_string(vm.workdir.join(super::PGID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // /proc counts in USER_HZ, which is 100 on x86-64.
    Some(ticks as f64 / 100.0)
}
