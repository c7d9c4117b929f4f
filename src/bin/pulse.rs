//! `pulse`: write and read MSRs of a debuggee from the shell.
//!
//!     pulse [--transport SPEC] [--timeout MS] wrmsr MSR VALUE
//!     pulse [--transport SPEC] [--timeout MS] rdmsr MSR...
//!
//! Arguments are parsed with std only. Every failure is one line on stderr
//! (or one JSON object with `--json`) and a documented exit status; no
//! input makes it print a panic trace.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use pulse::hv_stub::routing::{GUEST_APPLIED, TABLE};
use pulse::{Engine, EngineConfig, Status, TransportSpec};

/// The exit status of each failure status; 0 is success. Distinct per
/// code so that a script can tell them apart; `--help` prints this table.
const EXIT_CODES: &[(Status, u8)] = &[
    (Status::EXCEPTION_GENERAL_PROTECTION, 1),
    (Status::INVALID_PARAMETER, EXIT_USAGE),
    (Status::TIMEOUT, 3),
    (Status::DEVICE_CONNECTION_LOST, 4),
    (Status::CONNECTION_REFUSED, 5),
    (Status::NO_SUCH_DEVICE, 6),
    (Status::ACCESS_DENIED, 7),
    (Status::READ_FAILED, 8),
    (Status::WRITE_FAILED, 9),
    (Status::INVALID_PACKET, 10),
    (Status::REVISION_MISMATCH, 11),
    (Status::INSUFFICIENT_RESOURCES, 12),
    (Status::INTERNAL_ERROR, EXIT_INTERNAL),
];
/// A bad command line (and `PULSE_STATUS_INVALID_PARAMETER`, which only a
/// bad transport string can cause here).
const EXIT_USAGE: u8 = 2;
/// A bug: a caught panic here or `PULSE_STATUS_INTERNAL_ERROR` from libpulse.
const EXIT_INTERNAL: u8 = 13;
/// A status this build of `pulse` does not know (from a newer library).
const EXIT_UNKNOWN_STATUS: u8 = 14;

fn exit_code(status: Status) -> u8 {
    if status.is_success() {
        return 0;
    }
    EXIT_CODES
        .iter()
        .find(|(s, _)| *s == status)
        .map_or(EXIT_UNKNOWN_STATUS, |&(_, code)| code)
}

/// Common architectural MSRs the routing table does not name; numbers from
/// the Intel SDM Vol. 4, chapter 2.
const EXTRA_NAMES: &[(&str, u32)] = &[
    ("IA32_TIME_STAMP_COUNTER", 0x10),
    ("IA32_TSC", 0x10),
    ("IA32_APIC_BASE", 0x1B),
    ("IA32_SPEC_CTRL", 0x48),
    ("IA32_SMM_MONITOR_CTL", 0x9B),
    ("IA32_MISC_ENABLE", 0x1A0),
    ("IA32_MTRR_DEF_TYPE", 0x2FF),
    ("IA32_U_CET", 0x6A0),
    ("IA32_PL0_SSP", 0x6A4),
    ("IA32_TSC_DEADLINE", 0x6E0),
    ("IA32_XSS", 0xDA0),
];

/// Every name `pulse` accepts, with its number.
fn known_msrs() -> impl Iterator<Item = (&'static str, u32)> {
    TABLE
        .iter()
        .map(|r| (r.name, r.msr))
        .chain(EXTRA_NAMES.iter().copied())
}

/// The canonical name of an MSR number, if `pulse` knows one.
fn name_of(msr: u32) -> Option<&'static str> {
    known_msrs().find(|&(_, n)| n == msr).map(|(name, _)| name)
}

fn help_text() -> String {
    let mut text = String::new();
    text.push_str(concat!(
        "pulse ",
        env!("CARGO_PKG_VERSION"),
        " - write and read the MSRs of a debuggee through hv-stub (libpulse)\n",
        "\n",
        "Usage:\n",
        "  pulse [OPTIONS] wrmsr MSR VALUE   write VALUE to MSR as the guest would\n",
        "  pulse [OPTIONS] rdmsr MSR...      read each MSR as the guest would\n",
        "  pulse msrs                        list the MSR names pulse knows\n",
        "  pulse --help | --version\n",
        "\n",
        "MSR    a number (0xC0000082 or 3221225602) or an architectural name\n",
        "       such as IA32_LSTAR (case does not matter; IA32_ may be left out)\n",
        "VALUE  a 64-bit number: hex with 0x, or decimal\n",
        "\n",
        "Options (anywhere on the line; --name=value works too):\n",
        "  -t, --transport SPEC  sim (default), sim?cpu=PROFILE, tcp:HOST:PORT,\n",
        "                        serial:DEVICE[?baud=N]; default from $PULSE_TRANSPORT\n",
        "      --timeout MS      wait for each attempt's answer (default 1000)\n",
        "      --attempts N      sends per request before TIMEOUT (default 3)\n",
        "      --read-back       after wrmsr, read the MSR back as the guest sees it\n",
        "      --json            print one JSON object per result on stdout\n",
        "  -h, --help            print this help\n",
        "  -V, --version         print the version\n",
        "\n",
        "Each run opens its own engine: on `sim` every run starts from a fresh\n",
        "simulated debuggee, so use --read-back to see what a write did.\n",
        "\n",
        "Exit status:\n",
        "   0  PULSE_STATUS_SUCCESS\n",
    ));
    for &(status, code) in EXIT_CODES {
        let name = status.name().unwrap_or("?");
        if code == EXIT_USAGE {
            let _ = writeln!(text, "  {code:2}  {name}, or a bad command line");
        } else if code == EXIT_INTERNAL {
            let _ = writeln!(text, "  {code:2}  {name}, or a bug in pulse");
        } else {
            let _ = writeln!(text, "  {code:2}  {name}");
        }
    }
    let _ = writeln!(
        text,
        "  {EXIT_UNKNOWN_STATUS:2}  a status code this pulse does not know"
    );
    text.push_str("With several MSRs, the status of the first failure decides.\n");
    text
}

/// A one-line command-line error.
#[derive(Debug)]
struct Usage(String);

macro_rules! usage {
    ($($arg:tt)*) => { Usage(format!($($arg)*)) };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Msr {
    number: u32,
    name: Option<&'static str>,
}

impl Msr {
    fn label(&self) -> String {
        match self.name {
            Some(name) => format!("{name} ({:#x})", self.number),
            None => format!("MSR {:#x}", self.number),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Command {
    Write { msr: Msr, value: u64 },
    Read { msrs: Vec<Msr> },
    List,
    Help,
    Version,
}

#[derive(Debug)]
struct Options {
    transport: String,
    timeout_ms: Option<u32>,
    attempts: Option<u32>,
    json: bool,
    read_back: bool,
}

/// Parses a number: hex with a `0x` prefix, or decimal. No sign, no
/// spaces, no trailing characters, at most 64 bits.
fn parse_number(text: &str, what: &str) -> Result<u64, Usage> {
    if text.is_empty() {
        return Err(usage!("empty {what}"));
    }
    if text.starts_with('-') {
        return Err(usage!("{what} `{text}` is negative"));
    }
    let (digits, radix) = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (text, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(usage!(
            "{what} `{text}` is not a number (hex with 0x, or decimal)"
        ));
    }
    u64::from_str_radix(digits, radix)
        .map_err(|_| usage!("{what} `{text}` does not fit in 64 bits"))
}

fn parse_msr(text: &str) -> Result<Msr, Usage> {
    if text.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+') || text.is_empty() {
        let value = parse_number(text, "MSR number")?;
        let number = u32::try_from(value)
            .map_err(|_| usage!("MSR number `{text}` does not fit in 32 bits"))?;
        return Ok(Msr {
            number,
            name: name_of(number),
        });
    }
    let upper = text.to_ascii_uppercase();
    let prefixed = format!("IA32_{upper}");
    known_msrs()
        .find(|&(name, _)| name == upper || name == prefixed)
        .map(|(_, number)| Msr {
            number,
            name: name_of(number),
        })
        .ok_or_else(|| {
            usage!("unknown MSR name `{text}` (`pulse msrs` lists the names; or give the number)")
        })
}

fn parse_u32_option(text: &str, option: &str) -> Result<u32, Usage> {
    let value = parse_number(text, option)?;
    match u32::try_from(value) {
        Ok(0) => Err(usage!("{option} must be at least 1")),
        Ok(v) => Ok(v),
        Err(_) => Err(usage!("{option} `{text}` does not fit in 32 bits")),
    }
}

/// True for an argument that is an option rather than an operand. A
/// leading `-` followed by a digit is a (negative) number, left to the
/// number parser to refuse.
fn is_option(arg: &str) -> bool {
    arg.len() > 1 && arg.starts_with('-') && !arg[1..].starts_with(|c: char| c.is_ascii_digit())
}

fn parse_args(args: &[String], env_transport: Option<String>) -> Result<(Options, Command), Usage> {
    let mut options = Options {
        transport: env_transport.unwrap_or_else(|| "sim".to_owned()),
        timeout_ms: None,
        attempts: None,
        json: false,
        read_back: false,
    };
    let mut operands: Vec<&str> = Vec::new();
    let mut help = false;
    let mut version = false;
    let mut rest = args.iter();
    let mut only_operands = false;
    while let Some(arg) = rest.next() {
        if only_operands || !is_option(arg) {
            operands.push(arg);
            continue;
        }
        if arg == "--" {
            only_operands = true;
            continue;
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value)),
            _ => (arg.as_str(), None),
        };
        let mut value = |flag: &str| -> Result<String, Usage> {
            match inline {
                Some(v) => Ok(v.to_owned()),
                None => rest
                    .next()
                    .cloned()
                    .ok_or_else(|| usage!("{flag} needs a value")),
            }
        };
        match flag {
            "-t" | "--transport" => options.transport = value(flag)?,
            "--timeout" => options.timeout_ms = Some(parse_u32_option(&value(flag)?, flag)?),
            "--attempts" => options.attempts = Some(parse_u32_option(&value(flag)?, flag)?),
            "--json" | "--read-back" | "-h" | "--help" | "-V" | "--version" if inline.is_some() => {
                return Err(usage!("{flag} takes no value"));
            }
            "--json" => options.json = true,
            "--read-back" => options.read_back = true,
            "-h" | "--help" => help = true,
            "-V" | "--version" => version = true,
            _ => return Err(usage!("unknown option `{arg}` (see `pulse --help`)")),
        }
    }
    if help {
        return Ok((options, Command::Help));
    }
    if version {
        return Ok((options, Command::Version));
    }
    let command = match operands.as_slice() {
        [] => {
            return Err(usage!(
                "missing command: wrmsr, rdmsr or msrs (see `pulse --help`)"
            ))
        }
        ["help"] => Command::Help,
        ["msrs"] => Command::List,
        ["wrmsr", msr, value] => Command::Write {
            msr: parse_msr(msr)?,
            value: parse_number(value, "value")?,
        },
        ["wrmsr", ..] => return Err(usage!("usage: pulse wrmsr MSR VALUE")),
        ["rdmsr", msrs @ ..] if !msrs.is_empty() => Command::Read {
            msrs: msrs
                .iter()
                .map(|m| parse_msr(m))
                .collect::<Result<_, _>>()?,
        },
        ["rdmsr"] => return Err(usage!("usage: pulse rdmsr MSR...")),
        ["msrs" | "help", extra, ..] => return Err(usage!("unexpected argument `{extra}`")),
        [other, ..] => {
            return Err(usage!(
                "unknown command `{other}` (expected wrmsr, rdmsr or msrs)"
            ))
        }
    };
    if let Err(e) = TransportSpec::parse(&options.transport) {
        return Err(usage!("invalid transport `{}`: {e}", options.transport));
    }
    if options.read_back && !matches!(command, Command::Write { .. }) {
        return Err(usage!("--read-back only goes with wrmsr"));
    }
    Ok((options, command))
}

/// A JSON string literal.
fn json_str(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn status_name(status: Status) -> &'static str {
    status.name().unwrap_or("PULSE_STATUS_UNKNOWN")
}

/// One result: an operation on an MSR (or opening the transport), its
/// status and, on success, the value.
struct Outcome<'a> {
    op: &'static str,
    msr: Option<Msr>,
    transport: Option<&'a str>,
    value: Option<u64>,
    status: Status,
}

impl Outcome<'_> {
    fn json(&self) -> String {
        let mut out = format!("{{\"op\":{}", json_str(self.op));
        if let Some(transport) = self.transport {
            let _ = write!(out, ",\"transport\":{}", json_str(transport));
        }
        if let Some(msr) = self.msr {
            let _ = write!(out, ",\"msr\":\"{:#010x}\"", msr.number);
            if let Some(name) = msr.name {
                let _ = write!(out, ",\"name\":{}", json_str(name));
            }
        }
        let _ = write!(
            out,
            ",\"status\":{},\"code\":\"0x{:08X}\"",
            json_str(status_name(self.status)),
            self.status.0
        );
        if let Some(value) = self.value {
            let _ = write!(out, ",\"value\":\"{value:#018x}\"");
        }
        if !self.status.is_success() {
            let _ = write!(out, ",\"message\":{}", json_str(self.status.meaning()));
        }
        out.push('}');
        out
    }

    /// The human line: on stdout for a success, on stderr for a failure.
    fn text(&self) -> String {
        let what = match (self.op, self.msr, self.value) {
            ("wrmsr", Some(msr), Some(value)) => format!("{} <- {value:#018x}", msr.label()),
            ("rdmsr", Some(msr), Some(value)) if self.status.is_success() => {
                return format!("{} = {value:#018x}", msr.label());
            }
            (op, Some(msr), _) => format!("{op} {}", msr.label()),
            (op, None, _) => format!("{op} `{}`", self.transport.unwrap_or("?")),
        };
        if self.status.is_success() {
            format!("{what}: {}", status_name(self.status))
        } else {
            // Status's Display: `NAME (0xC...): meaning`.
            format!("pulse: {what}: {}", self.status)
        }
    }
}

/// Prints results; remembers the first failure for the exit status. Output
/// errors (a closed pipe) end the printing quietly; the status still counts.
struct Printer {
    json: bool,
    first_failure: Option<Status>,
}

impl Printer {
    fn report(&mut self, outcome: &Outcome) {
        if !outcome.status.is_success() && self.first_failure.is_none() {
            self.first_failure = Some(outcome.status);
        }
        if self.json {
            let _ = writeln!(io::stdout().lock(), "{}", outcome.json());
        } else if outcome.status.is_success() {
            let _ = writeln!(io::stdout().lock(), "{}", outcome.text());
        } else {
            let _ = writeln!(io::stderr().lock(), "{}", outcome.text());
        }
    }

    fn exit(&self) -> u8 {
        self.first_failure.map_or(0, exit_code)
    }
}

fn status_of<T>(result: &Result<T, Status>) -> Status {
    match result {
        Ok(_) => Status::SUCCESS,
        Err(status) => *status,
    }
}

fn run_engine(options: &Options, command: &Command) -> u8 {
    let mut printer = Printer {
        json: options.json,
        first_failure: None,
    };
    let mut config = EngineConfig::new(&options.transport);
    if let Some(ms) = options.timeout_ms {
        config.request_timeout = Duration::from_millis(u64::from(ms));
    }
    if let Some(attempts) = options.attempts {
        config.max_attempts = attempts;
    }
    let engine = match Engine::open(&config) {
        Ok(engine) => engine,
        Err(status) => {
            printer.report(&Outcome {
                op: "open",
                msr: None,
                transport: Some(&options.transport),
                value: None,
                status,
            });
            return printer.exit();
        }
    };
    match command {
        Command::Write { msr, value } => {
            let status = status_of(&engine.write_msr(msr.number, *value));
            printer.report(&Outcome {
                op: "wrmsr",
                msr: Some(*msr),
                transport: None,
                value: Some(*value),
                status,
            });
            if options.read_back && status.is_success() {
                read_one(&engine, *msr, &mut printer);
            }
        }
        Command::Read { msrs } => {
            for msr in msrs {
                read_one(&engine, *msr, &mut printer);
            }
        }
        Command::List | Command::Help | Command::Version => {}
    }
    printer.exit()
}

fn read_one(engine: &Engine, msr: Msr, printer: &mut Printer) {
    let result = engine.read_msr(msr.number);
    printer.report(&Outcome {
        op: "rdmsr",
        msr: Some(msr),
        transport: None,
        value: result.as_ref().ok().copied(),
        status: status_of(&result),
    });
}

fn list_msrs(json: bool) -> u8 {
    let mut out = String::new();
    for (name, number) in known_msrs() {
        let applied = GUEST_APPLIED.contains(&number);
        if json {
            let _ = writeln!(
                out,
                "{{\"msr\":\"{number:#010x}\",\"name\":{},\"guest_applied\":{applied}}}",
                json_str(name)
            );
        } else {
            let note = if applied {
                "  (a write is applied to the guest)"
            } else {
                ""
            };
            let _ = writeln!(out, "{number:#010x}  {name}{note}");
        }
    }
    let _ = io::stdout().lock().write_all(out.as_bytes());
    0
}

fn run(args: &[String]) -> u8 {
    let env_transport = std::env::var("PULSE_TRANSPORT")
        .ok()
        .filter(|t| !t.is_empty());
    let (options, command) = match parse_args(args, env_transport) {
        Ok(parsed) => parsed,
        Err(Usage(message)) => {
            let _ = writeln!(io::stderr().lock(), "pulse: {message}");
            return EXIT_USAGE;
        }
    };
    match command {
        Command::Help => {
            let _ = io::stdout().lock().write_all(help_text().as_bytes());
            0
        }
        Command::Version => {
            let _ = writeln!(
                io::stdout().lock(),
                "pulse {} ({})",
                env!("CARGO_PKG_VERSION"),
                env!("PULSE_SONAME")
            );
            0
        }
        Command::List => list_msrs(options.json),
        Command::Write { .. } | Command::Read { .. } => run_engine(&options, &command),
    }
}

fn main() -> ExitCode {
    // A bug must still end in one line and a documented status.
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
            .unwrap_or("panic");
        let _ = writeln!(
            io::stderr().lock(),
            "pulse: internal error (a bug; please report it): {}",
            message.replace('\n', " ")
        );
    }));
    let args: Vec<String> = match std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect()
    {
        Ok(args) => args,
        Err(bad) => {
            let _ = writeln!(
                io::stderr().lock(),
                "pulse: argument `{}` is not valid UTF-8",
                bad.to_string_lossy()
            );
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let code = std::panic::catch_unwind(|| run(&args)).unwrap_or(EXIT_INTERNAL);
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_a_distinct_exit_code() {
        for status in Status::ALL.iter().skip(1) {
            assert!(
                EXIT_CODES.iter().any(|(s, _)| s == status),
                "{status:?} has no exit code"
            );
        }
        let mut codes: Vec<u8> = EXIT_CODES.iter().map(|&(_, c)| c).collect();
        codes.push(EXIT_UNKNOWN_STATUS);
        let count = codes.len();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), count);
        assert!(!codes.contains(&0));
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number("0", "v").unwrap(), 0);
        assert_eq!(parse_number("0x10", "v").unwrap(), 16);
        assert_eq!(parse_number("0XfF", "v").unwrap(), 255);
        assert_eq!(parse_number("18446744073709551615", "v").unwrap(), u64::MAX);
        assert_eq!(parse_number("0xFFFFFFFFFFFFFFFF", "v").unwrap(), u64::MAX);
        for bad in [
            "",
            "-1",
            "+1",
            "0x",
            "1x",
            "0x1g",
            " 1",
            "1 ",
            "12abc",
            "0b101",
            "1_000",
            "18446744073709551616",
            "0x10000000000000000",
            "-0x1",
            "١",
        ] {
            assert!(parse_number(bad, "v").is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn msr_names() {
        assert_eq!(parse_msr("IA32_LSTAR").unwrap().number, 0xC000_0082);
        assert_eq!(parse_msr("ia32_lstar").unwrap().number, 0xC000_0082);
        assert_eq!(parse_msr("lstar").unwrap().number, 0xC000_0082);
        assert_eq!(parse_msr("0x174").unwrap().name, Some("IA32_SYSENTER_CS"));
        assert_eq!(parse_msr("0x40001234").unwrap().name, None);
        assert!(parse_msr("0x100000000").is_err());
        assert!(parse_msr("IA32_NOPE").is_err());
        assert!(parse_msr("").is_err());
    }

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_lines() {
        let (o, c) = parse_args(&args(&["wrmsr", "IA32_LSTAR", "0x10", "--json"]), None).unwrap();
        assert!(o.json);
        assert_eq!(o.transport, "sim");
        assert!(matches!(c, Command::Write { value: 16, .. }));
        let (o, _) = parse_args(
            &args(&["--transport=tcp:h:1", "--timeout", "50", "rdmsr", "0x10"]),
            None,
        )
        .unwrap();
        assert_eq!(o.transport, "tcp:h:1");
        assert_eq!(o.timeout_ms, Some(50));
        let (o, _) = parse_args(&args(&["rdmsr", "0x10"]), Some("sim?cpu=full".into())).unwrap();
        assert_eq!(o.transport, "sim?cpu=full");
        for bad in [
            &["--frob", "rdmsr", "0x10"][..],
            &["rdmsr"],
            &["wrmsr", "0x10"],
            &["wrmsr", "0x10", "1", "2"],
            &["wrmsr", "0x10", "-1"],
            &["frob"],
            &[],
            &["--timeout", "0", "rdmsr", "0x10"],
            &["--timeout"],
            &["--json=1", "rdmsr", "0x10"],
            &["-t", "usb:x", "rdmsr", "0x10"],
            &["--read-back", "rdmsr", "0x10"],
        ] {
            assert!(parse_args(&args(bad), None).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn json_escapes() {
        assert_eq!(json_str("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }
}
