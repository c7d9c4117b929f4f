//! `pulse`: write and read MSRs of a debuggee from the shell.
//!
//!     pulse [OPTIONS] wrmsr MSR VALUE | wrmsr MSR --set-bits M --clear-bits M
//!     pulse [OPTIONS] rdmsr MSR...
//!     pulse [OPTIONS] msrs
//!     pulse [OPTIONS] shell [FILE]      many commands over one connection
//!     pulse keygen FILE                 a new random key for an authenticated link
//!
//! Arguments are parsed with std only. Every failure is one line on stderr
//! (or one JSON object with `--json`) and a documented exit status; no
//! input makes it print a panic trace.

use std::fmt::Write as _;
use std::io::{self, BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use hv_stub::msr_table;
use hv_stub::routing::GUEST_APPLIED;
use pulse::engine::CpuInfo;
use pulse::{Engine, EngineConfig, Error, Status, TransportSpec};

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
    (Status::BARRIER_NO_CPU, 15),
    (Status::BARRIER_OWNER_INACTIVE, 16),
    // Only PsGetLastErrorMessage and the request API return these; listed
    // so every code has one.
    (Status::BUFFER_TOO_SMALL, 17),
    (Status::REQUEST_NOT_INITIALIZED, 18),
    (Status::REQUEST_BUSY, 19),
];
/// A bad command line (and `PULSE_STATUS_INVALID_PARAMETER`, which only a
/// bad transport string can cause here).
const EXIT_USAGE: u8 = 2;
/// A bug: a caught panic here or `PULSE_STATUS_INTERNAL_ERROR` from libpulse.
const EXIT_INTERNAL: u8 = 13;
/// A status this build of `pulse` does not know (from a newer library).
const EXIT_UNKNOWN_STATUS: u8 = 14;

fn exit_code(status: Status) -> u8 {
    if !status.is_error() {
        return 0;
    }
    EXIT_CODES
        .iter()
        .find(|(s, _)| *s == status)
        .map_or(EXIT_UNKNOWN_STATUS, |&(_, code)| code)
}

/// Names `pulse` accepts besides the MSR table's (hv-stub's one home of
/// MSR names): short forms people use.
const ALIASES: &[(&str, u32)] = &[("IA32_TSC", hv_stub::msr::index::IA32_TIME_STAMP_COUNTER)];

/// Every name `pulse` accepts, with its number.
fn known_msrs() -> impl Iterator<Item = (&'static str, u32)> {
    msr_table::TABLE
        .iter()
        .map(|d| (d.name, d.msr))
        .chain(ALIASES.iter().copied())
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
        "  pulse [OPTIONS] wrmsr MSR --set-bits MASK --clear-bits MASK\n",
        "                                    read-modify-write: one read, one write\n",
        "  pulse [OPTIONS] rdmsr MSR...      read each MSR as the guest would\n",
        "  pulse [OPTIONS] cpus              list the debuggee's CPUs: which run, which\n",
        "                                    is the current one\n",
        "  pulse [OPTIONS] msrs              list the named MSRs the debuggee has\n",
        "                                    (each probed with a read; #GP = absent)\n",
        "  pulse [OPTIONS] shell [FILE]      run commands (one per line: wrmsr, rdmsr,\n",
        "                                    msrs, with their options) from FILE or\n",
        "                                    stdin over one connection\n",
        "  pulse keygen FILE                 write a new random key file for an\n",
        "                                    authenticated link (docs/SECURITY.md)\n",
        "  pulse --help | --version\n",
        "\n",
        "MSR    a number: 0xC0000082, bare hex with a letter as WinDbg and HyperDbg\n",
        "       take it (c0000082, 1d9), or decimal digits (3221225602, as msr-tools);\n",
        "       or an architectural name such as IA32_LSTAR (case does not matter;\n",
        "       IA32_ may be left out)\n",
        "VALUE  a 64-bit number, written the same ways (fffff800`12345000 too)\n",
        "\n",
        "Options (anywhere on the line; --name=value works too):\n",
        "  -t, --transport SPEC  sim (default), sim?cpu=PROFILE, tcp:HOST:PORT,\n",
        "                        serial:DEVICE[?baud=N]; default from $PULSE_TRANSPORT\n",
        "      --timeout MS      wait for each attempt's answer (default 1000)\n",
        "      --attempts N      sends per request before TIMEOUT (default 3)\n",
        "      --key-file PATH   authenticate the link with this key (64 hex digits);\n",
        "                        default from $PULSE_KEY_FILE; without one the link\n",
        "                        is unauthenticated\n",
        "      --read-back       after wrmsr, read the MSR back as the guest sees it\n",
        "  -f, --field HI:LO     rdmsr: only bits HI..LO, shifted down; wrmsr: write\n",
        "                        VALUE into those bits only (read-modify-write)\n",
        "      --set-bits MASK   wrmsr without VALUE: set these bits\n",
        "      --clear-bits MASK wrmsr without VALUE: clear these bits\n",
        "  -x, --hex             print values only, in hex (0x and every digit)\n",
        "  -d, --decimal         print values only, in unsigned decimal\n",
        "      --json            print one JSON object per result on stdout,\n",
        "                        errors included\n",
        "  -p, --cpu N           act on CPU N: it becomes the current CPU (in a\n",
        "                        shell, for the later lines too); default: the\n",
        "                        current CPU, 0 after connecting\n",
        "  -a, --all-cpus        act on every running CPU in turn; wrmsr MSR VALUE\n",
        "                        is one all-or-nothing request for all of them\n",
        "      --all-names       msrs: every name pulse knows, without a debuggee\n",
        "  -h, --help            print this help\n",
        "  -V, --version         print the version\n",
        "\n",
        "Each run opens its own engine: on `sim` every run starts from a fresh\n",
        "simulated debuggee, so use --read-back or `pulse shell` to see what a\n",
        "write did. A Bochs debuggee accepts one client for its whole run: use\n",
        "`pulse shell` for several commands.\n",
        "\n",
        "Exit status:\n",
        "   0  PULSE_STATUS_SUCCESS\n",
        "   0  PULSE_STATUS_BARRIER_ALREADY_OWNED (not an error)\n",
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
    text.push_str(
        "With several MSRs (or shell commands), the status of the first failure decides.\n",
    );
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

/// Bits `hi..=lo` of a register (`-f hi:lo`, as msr-tools).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Field {
    hi: u32,
    lo: u32,
}

impl Field {
    fn mask(self) -> u64 {
        (u64::MAX >> (63 - self.hi)) & (u64::MAX << self.lo)
    }

    fn width(self) -> u32 {
        self.hi - self.lo + 1
    }

    fn extract(self, value: u64) -> u64 {
        (value & self.mask()) >> self.lo
    }

    fn text(self) -> String {
        format!("{}:{}", self.hi, self.lo)
    }
}

/// How a value is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// `NAME (0xNUM) = 0x...` (and `<-` lines for writes).
    Labelled,
    /// The value only, `0x` and every hex digit of its width.
    Hex,
    /// The value only, unsigned decimal.
    Decimal,
}

/// Which CPU of the debuggee a command acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cpus {
    /// The engine's current CPU (CPU 0 after it is created).
    Current,
    One(u64),
    All,
}

/// What `wrmsr` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteOp {
    /// The whole register.
    Value(u64),
    /// Read, then write `(old & !clear) | set`.
    Modify { set: u64, clear: u64 },
}

#[derive(Debug, PartialEq, Eq)]
enum Command {
    Write { msr: Msr, op: WriteOp },
    Read { msrs: Vec<Msr> },
    List { all_names: bool },
    Cpus,
    Shell { file: Option<String> },
    Keygen { file: String },
    Help,
    Version,
}

/// Everything the options say. The connection options come only from the
/// `pulse` command line; a shell line starts from a copy of these and may
/// change the rest.
#[derive(Clone, Debug)]
struct Options {
    transport: String,
    /// `--key-file` (or `$PULSE_KEY_FILE`), and the key read from it.
    key_file: Option<String>,
    key: Option<pulse_proto::Psk>,
    timeout_ms: Option<u32>,
    attempts: Option<u32>,
    json: bool,
    read_back: bool,
    field: Option<Field>,
    format: Format,
    set_bits: Option<u64>,
    clear_bits: Option<u64>,
    cpus: Cpus,
}

impl Options {
    fn new(transport: String) -> Options {
        Options {
            transport,
            key_file: None,
            key: None,
            timeout_ms: None,
            attempts: None,
            json: false,
            read_back: false,
            field: None,
            format: Format::Labelled,
            set_bits: None,
            clear_bits: None,
            cpus: Cpus::Current,
        }
    }
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

/// An MSR number or value as a debugger user types it: `parse_number`'s
/// forms, bare hex that has a letter (`c0000082`, as WinDbg and HyperDbg
/// accept), and hex with WinDbg's backtick between the halves
/// (`fffff800`12345000`). Bare digits stay decimal, as msr-tools reads them.
fn parse_debugger_number(text: &str, what: &str) -> Result<u64, Usage> {
    let (joined, backtick) = match text.split_once('`') {
        Some((high, low)) => (format!("{high}{low}"), true),
        None => (text.to_owned(), false),
    };
    let prefixed = joined.starts_with("0x") || joined.starts_with("0X");
    let bare_hex = !prefixed
        && !joined.is_empty()
        && joined.chars().all(|c| c.is_ascii_hexdigit())
        && (backtick || joined.chars().any(|c| c.is_ascii_alphabetic()));
    if bare_hex {
        return u64::from_str_radix(&joined, 16)
            .map_err(|_| usage!("{what} `{text}` does not fit in 64 bits"));
    }
    parse_number(&joined, what).map_err(|Usage(m)| Usage(m.replace(&joined, text)))
}

fn parse_value(text: &str) -> Result<u64, Usage> {
    parse_debugger_number(text, "value")
}

fn parse_msr(text: &str) -> Result<Msr, Usage> {
    let upper = text.to_ascii_uppercase();
    let prefixed = format!("IA32_{upper}");
    if let Some((_, number)) = known_msrs().find(|&(name, _)| name == upper || name == prefixed) {
        return Ok(Msr {
            number,
            name: name_of(number),
        });
    }
    let looks_numeric = text.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+')
        || (!text.is_empty() && text.chars().all(|c| c.is_ascii_hexdigit()));
    if !looks_numeric {
        return Err(usage!(
            "unknown MSR name `{text}` (`pulse msrs --all-names` lists the names; or give the number)"
        ));
    }
    let value = parse_debugger_number(text, "MSR number")?;
    let number =
        u32::try_from(value).map_err(|_| usage!("MSR number `{text}` does not fit in 32 bits"))?;
    Ok(Msr {
        number,
        name: name_of(number),
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

fn parse_field(text: &str) -> Result<Field, Usage> {
    let bad = || usage!("-f needs HI:LO with 63 >= HI >= LO >= 0, not `{text}`");
    let (hi, lo) = text.split_once(':').ok_or_else(bad)?;
    let hi = parse_number(hi, "-f").map_err(|_| bad())?;
    let lo = parse_number(lo, "-f").map_err(|_| bad())?;
    if hi > 63 || lo > hi {
        return Err(bad());
    }
    Ok(Field {
        hi: hi as u32,
        lo: lo as u32,
    })
}

/// True for an argument that is an option rather than an operand. A
/// leading `-` followed by a digit is a (negative) number, left to the
/// number parser to refuse.
fn is_option(arg: &str) -> bool {
    arg.len() > 1 && arg.starts_with('-') && !arg[1..].starts_with(|c: char| c.is_ascii_digit())
}

/// Where the arguments come from: the `pulse` command line, or one line of
/// `pulse shell` (which may not change the connection or nest a shell).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    CommandLine,
    ShellLine,
}

fn parse_args(args: &[String], env_transport: Option<String>) -> Result<(Options, Command), Usage> {
    let base = Options::new(env_transport.unwrap_or_else(|| "sim".to_owned()));
    parse_with(args, base, Source::CommandLine)
}

fn parse_with(
    args: &[String],
    mut options: Options,
    source: Source,
) -> Result<(Options, Command), Usage> {
    let mut operands: Vec<&str> = Vec::new();
    let mut help = false;
    let mut version = false;
    let mut all_names = false;
    let mut formats = 0;
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
        let connection = matches!(
            flag,
            "-t" | "--transport" | "--timeout" | "--attempts" | "--key-file"
        );
        if connection && source == Source::ShellLine {
            return Err(usage!(
                "{flag} goes on the `pulse` command line, not on a shell line"
            ));
        }
        match flag {
            "-t" | "--transport" => options.transport = value(flag)?,
            "--key-file" => options.key_file = Some(value(flag)?),
            "--timeout" => options.timeout_ms = Some(parse_u32_option(&value(flag)?, flag)?),
            "--attempts" => options.attempts = Some(parse_u32_option(&value(flag)?, flag)?),
            "-f" | "--field" => options.field = Some(parse_field(&value(flag)?)?),
            "--set-bits" => options.set_bits = Some(parse_value(&value(flag)?)?),
            "--clear-bits" => options.clear_bits = Some(parse_value(&value(flag)?)?),
            "-p" | "--cpu" => {
                let text = value(flag)?;
                options.cpus = Cpus::One(parse_number(&text, flag)?);
            }
            "--json" | "--read-back" | "-h" | "--help" | "-V" | "--version" | "-x" | "--hex"
            | "-d" | "--decimal" | "-a" | "--all-cpus" | "--all-names"
                if inline.is_some() =>
            {
                return Err(usage!("{flag} takes no value"));
            }
            "--json" => options.json = true,
            "--read-back" => options.read_back = true,
            "-x" | "--hex" => {
                options.format = Format::Hex;
                formats += 1;
            }
            "-d" | "--decimal" => {
                options.format = Format::Decimal;
                formats += 1;
            }
            "-a" | "--all-cpus" => options.cpus = Cpus::All,
            "--all-names" => all_names = true,
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
                "missing command: wrmsr, rdmsr, msrs, cpus or shell (see `pulse --help`)"
            ))
        }
        ["help"] => Command::Help,
        ["msrs"] => Command::List { all_names },
        ["cpus"] => Command::Cpus,
        ["shell"] if source == Source::CommandLine => Command::Shell { file: None },
        ["shell", file] if source == Source::CommandLine => Command::Shell {
            file: Some((*file).to_owned()),
        },
        ["keygen", file] if source == Source::CommandLine => Command::Keygen {
            file: (*file).to_owned(),
        },
        ["shell", ..] if source == Source::ShellLine => {
            return Err(usage!("`shell` cannot be nested"));
        }
        ["wrmsr", msr, value] => {
            let msr = parse_msr(msr)?;
            let value = parse_value(value)?;
            if options.set_bits.is_some() || options.clear_bits.is_some() {
                return Err(usage!(
                    "--set-bits/--clear-bits replace VALUE: give one or the other"
                ));
            }
            let op = match options.field {
                Some(field) => {
                    if field.width() < 64 && value >> field.width() != 0 {
                        return Err(usage!(
                            "value {value:#x} does not fit in the {}-bit field {}",
                            field.width(),
                            field.text()
                        ));
                    }
                    WriteOp::Modify {
                        set: value << field.lo,
                        clear: field.mask(),
                    }
                }
                None => WriteOp::Value(value),
            };
            Command::Write { msr, op }
        }
        ["wrmsr", msr] if options.set_bits.is_some() || options.clear_bits.is_some() => {
            if options.field.is_some() {
                return Err(usage!("-f and --set-bits/--clear-bits exclude each other"));
            }
            Command::Write {
                msr: parse_msr(msr)?,
                op: WriteOp::Modify {
                    set: options.set_bits.unwrap_or(0),
                    clear: options.clear_bits.unwrap_or(0),
                },
            }
        }
        ["wrmsr", ..] => {
            return Err(usage!(
                "usage: pulse wrmsr MSR VALUE, or pulse wrmsr MSR --set-bits MASK --clear-bits MASK"
            ))
        }
        ["rdmsr", msrs @ ..] if !msrs.is_empty() => Command::Read {
            msrs: msrs
                .iter()
                .map(|m| parse_msr(m))
                .collect::<Result<_, _>>()?,
        },
        ["rdmsr"] => return Err(usage!("usage: pulse rdmsr MSR...")),
        ["msrs" | "help" | "cpus", extra, ..] => {
            return Err(usage!("unexpected argument `{extra}`"))
        }
        [other, ..] => {
            return Err(usage!(
                "unknown command `{other}` (expected wrmsr, rdmsr, msrs, cpus or shell)"
            ))
        }
    };
    if let Err(problem) = TransportSpec::parse(&options.transport) {
        // libpulse's own text, as EngCreateEngine would report it.
        let malformed = Error::MalformedTransport {
            spec: options.transport.clone(),
            problem,
        };
        return Err(usage!("{malformed}"));
    }
    let is_write = matches!(command, Command::Write { .. });
    let is_read = matches!(command, Command::Read { .. });
    if options.read_back && !is_write {
        return Err(usage!("--read-back only goes with wrmsr"));
    }
    if (options.set_bits.is_some() || options.clear_bits.is_some()) && !is_write {
        return Err(usage!("--set-bits/--clear-bits only go with wrmsr"));
    }
    if options.field.is_some() && !is_write && !is_read {
        return Err(usage!("-f only goes with rdmsr and wrmsr"));
    }
    if formats > 1 {
        return Err(usage!("-x and -d exclude each other"));
    }
    if formats > 0 && options.json {
        return Err(usage!("-x/-d and --json exclude each other"));
    }
    if all_names && !matches!(command, Command::List { .. }) {
        return Err(usage!("--all-names only goes with msrs"));
    }
    if matches!(command, Command::List { .. }) && options.cpus == Cpus::All {
        return Err(usage!("msrs probes one CPU: -p N, not -a"));
    }
    if command == Command::Cpus && options.cpus != Cpus::Current {
        return Err(usage!("cpus lists every CPU: -p/-a do not apply"));
    }
    if all_names && options.cpus != Cpus::Current {
        return Err(usage!("--all-names needs no debuggee: -p/-a do not apply"));
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
    /// For a read-modify-write: the value read.
    old: Option<u64>,
    value: Option<u64>,
    field: Option<Field>,
    /// The CPU it acted on, when the command named one (-p, -a).
    cpu: Option<OnCpu>,
    status: Status,
    /// For a failure: libpulse's precise text (the Error's Display).
    message: Option<String>,
}

/// Where a result comes from: one CPU, or every running CPU at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OnCpu {
    One(u64),
    Every,
}

impl<'a> Outcome<'a> {
    fn on<T>(op: &'static str, msr: Msr, result: &Result<T, Error>) -> Outcome<'a> {
        Outcome {
            op,
            msr: Some(msr),
            transport: None,
            old: None,
            value: None,
            field: None,
            cpu: None,
            status: status_of(result),
            message: result.as_ref().err().map(Error::to_string),
        }
    }

    fn cpu_label(&self) -> String {
        match self.cpu {
            Some(OnCpu::One(n)) => format!(" on CPU {n}"),
            Some(OnCpu::Every) => " on every running CPU".to_owned(),
            None => String::new(),
        }
    }

    fn json(&self) -> String {
        let mut out = format!("{{\"op\":{}", json_str(self.op));
        if let Some(transport) = self.transport {
            let _ = write!(out, ",\"transport\":{}", json_str(transport));
        }
        match self.cpu {
            Some(OnCpu::One(n)) => {
                let _ = write!(out, ",\"cpu\":{n}");
            }
            Some(OnCpu::Every) => out.push_str(",\"cpu\":\"all\""),
            None => {}
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
        if let Some(old) = self.old {
            let _ = write!(out, ",\"old\":\"{old:#018x}\"");
        }
        if let Some(value) = self.value {
            let _ = write!(out, ",\"value\":\"{value:#018x}\"");
            if let (Some(field), "rdmsr") = (self.field, self.op) {
                let _ = write!(
                    out,
                    ",\"field\":\"{}\",\"field_value\":\"{:#x}\"",
                    field.text(),
                    field.extract(value)
                );
            }
        }
        if !self.status.is_success() {
            let _ = write!(out, ",\"message\":{}", json_str(self.explanation()));
        }
        out.push('}');
        out
    }

    /// The human line: on stdout for a success, on stderr for a failure.
    fn text(&self) -> String {
        let on = self.cpu_label();
        let what = match (self.op, self.msr, self.old, self.value) {
            ("rdmsr", Some(msr), _, Some(value)) if self.status.is_success() => {
                let label = msr.label();
                return match self.field {
                    Some(f) => format!("{label}{on} [{}] = {:#x}", f.text(), f.extract(value)),
                    None => format!("{label}{on} = {value:#018x}"),
                };
            }
            ("rmw", Some(msr), Some(old), Some(new)) => {
                format!("{}{on}: {old:#018x} -> {new:#018x}", msr.label())
            }
            ("wrmsr", Some(msr), _, Some(value)) => {
                format!("{}{on} <- {value:#018x}", msr.label())
            }
            (op, Some(msr), _, _) => format!("{op} {}{on}", msr.label()),
            ("switch", None, _, _) => format!("switch{}", on.replacen(" on", " to", 1)),
            ("cpus", None, _, _) => "ask for the CPUs".to_owned(),
            (op, None, _, _) => format!("{op} `{}`", self.transport.unwrap_or("?")),
        };
        if self.status.is_success() {
            format!("{what}: {}", status_name(self.status))
        } else {
            format!(
                "pulse: {what}: {} (0x{:08X}): {}",
                status_name(self.status),
                self.status.0,
                self.explanation()
            )
        }
    }

    /// What went wrong: libpulse's precise message, else the status's
    /// meaning.
    fn explanation(&self) -> &str {
        self.message
            .as_deref()
            .unwrap_or_else(|| self.status.meaning())
    }

    /// The value-only line of -x/-d for a success, if this result has one.
    fn bare(&self, format: Format) -> Option<String> {
        let shown = |value: u64, bits: u32| match format {
            Format::Hex => format!("{value:#0width$x}", width = bits.div_ceil(4) as usize + 2),
            _ => value.to_string(),
        };
        match (self.op, self.old, self.value) {
            ("rdmsr", _, Some(value)) => Some(match self.field {
                Some(f) => shown(f.extract(value), f.width()),
                None => shown(value, 64),
            }),
            ("rmw", Some(old), Some(new)) => Some(format!("{} {}", shown(old, 64), shown(new, 64))),
            _ => None,
        }
    }
}

/// Prints results; remembers the first failure for the exit status. Output
/// errors (a closed pipe) end the printing quietly; the status still counts.
struct Printer {
    json: bool,
    format: Format,
    first_failure: Option<u8>,
}

impl Printer {
    fn report(&mut self, outcome: &Outcome) {
        if !outcome.status.is_success() && self.first_failure.is_none() {
            self.first_failure = Some(exit_code(outcome.status));
        }
        if self.json {
            let _ = writeln!(io::stdout().lock(), "{}", outcome.json());
        } else if !outcome.status.is_success() {
            let _ = writeln!(io::stderr().lock(), "{}", outcome.text());
        } else if self.format == Format::Labelled {
            let _ = writeln!(io::stdout().lock(), "{}", outcome.text());
        } else if let Some(line) = outcome.bare(self.format) {
            // -x/-d: values only; a plain write prints nothing, as wrmsr.
            let _ = writeln!(io::stdout().lock(), "{line}");
        }
    }

    /// A command-line (or shell-line) error: one line, or one JSON object.
    fn usage(&mut self, Usage(message): &Usage, line: Option<usize>) {
        if self.first_failure.is_none() {
            self.first_failure = Some(EXIT_USAGE);
        }
        print_usage_error(self.json, message, line);
    }

    fn exit(&self) -> u8 {
        self.first_failure.unwrap_or(0)
    }
}

/// With `--json`, an error of the command line is a JSON object on stdout
/// too (`op` "usage"), so a consumer of the output sees every failure.
fn print_usage_error(json: bool, message: &str, line: Option<usize>) {
    if json {
        let at = line.map_or(String::new(), |n| format!(",\"line\":{n}"));
        let _ = writeln!(
            io::stdout().lock(),
            "{{\"op\":\"usage\"{at},\"message\":{}}}",
            json_str(message)
        );
    } else {
        let at = line.map_or(String::new(), |n| format!("line {n}: "));
        let _ = writeln!(io::stderr().lock(), "pulse: {at}{message}");
    }
}

fn status_of<T>(result: &Result<T, Error>) -> Status {
    match result {
        Ok(_) => Status::SUCCESS,
        Err(error) => error.status(),
    }
}

fn open_engine(options: &Options, printer: &mut Printer) -> Option<Engine> {
    let mut config = EngineConfig::new(&options.transport);
    if let Some(ms) = options.timeout_ms {
        config.request_timeout = Duration::from_millis(u64::from(ms));
    }
    if let Some(attempts) = options.attempts {
        config.max_attempts = attempts;
    }
    config.key = options.key;
    match Engine::open(&config) {
        Ok(engine) => Some(engine),
        Err(error) => {
            printer.report(&Outcome {
                op: "open",
                msr: None,
                transport: Some(&options.transport),
                old: None,
                value: None,
                field: None,
                cpu: None,
                status: error.status(),
                message: Some(error.to_string()),
            });
            None
        }
    }
}

/// Makes CPU the engine's current one (`PsSwitchCpu`); a failure is
/// reported as the result of the command.
fn switch_to(engine: &Engine, cpu: u64, printer: &mut Printer) -> bool {
    match engine.switch_cpu(cpu) {
        Ok(_) => true,
        Err(error) => {
            printer.report(&Outcome {
                op: "switch",
                msr: None,
                transport: None,
                old: None,
                value: None,
                field: None,
                cpu: Some(OnCpu::One(cpu)),
                status: error.status(),
                message: Some(error.to_string()),
            });
            false
        }
    }
}

/// Runs one command on an open engine, reporting every result. `-p N`
/// makes N the current CPU first (for the rest of a shell session too, as
/// WinDbg's `~Ns`); `-a` runs it on each running CPU in turn (a plain write
/// as one all-or-nothing request) and then returns to the current CPU.
fn execute(engine: &Engine, options: &Options, command: &Command, printer: &mut Printer) {
    printer.format = options.format;
    printer.json = options.json;
    match options.cpus {
        Cpus::Current => execute_on(engine, options, command, None, printer),
        Cpus::One(cpu) => {
            if switch_to(engine, cpu, printer) {
                execute_on(engine, options, command, Some(OnCpu::One(cpu)), printer);
            }
        }
        Cpus::All => {
            if let Command::Write {
                msr,
                op: WriteOp::Value(value),
            } = command
            {
                let result = engine.write_msr_all_cpus(msr.number, *value);
                printer.report(&Outcome {
                    value: Some(*value),
                    cpu: Some(OnCpu::Every),
                    ..Outcome::on("wrmsr", *msr, &result)
                });
                if !(options.read_back && result.is_ok()) {
                    return;
                }
            }
            let Some(info) = cpu_info(engine, printer) else {
                return;
            };
            let home = engine.current_cpu();
            for cpu in (0..info.count).filter(|&c| info.is_running(c)) {
                if !switch_to(engine, cpu, printer) {
                    break;
                }
                match command {
                    // Written above; here only the read-back on each CPU.
                    Command::Write {
                        msr,
                        op: WriteOp::Value(_),
                    } => read_one(engine, *msr, options.field, Some(OnCpu::One(cpu)), printer),
                    _ => execute_on(engine, options, command, Some(OnCpu::One(cpu)), printer),
                }
            }
            switch_to(engine, home, printer);
        }
    }
}

/// Runs one command on the engine's current CPU (`on` labels the results).
fn execute_on(
    engine: &Engine,
    options: &Options,
    command: &Command,
    on: Option<OnCpu>,
    printer: &mut Printer,
) {
    match command {
        Command::Write {
            msr,
            op: WriteOp::Value(value),
        } => {
            let result = engine.write_msr(msr.number, *value);
            printer.report(&Outcome {
                value: Some(*value),
                cpu: on,
                ..Outcome::on("wrmsr", *msr, &result)
            });
            if options.read_back && result.is_ok() {
                read_one(engine, *msr, options.field, on, printer);
            }
        }
        Command::Write {
            msr,
            op: WriteOp::Modify { set, clear },
        } => {
            // One read and one write; the result names both values.
            let old = match engine.read_msr(msr.number) {
                Ok(old) => old,
                failed @ Err(_) => {
                    printer.report(&Outcome {
                        cpu: on,
                        ..Outcome::on("rmw", *msr, &failed)
                    });
                    return;
                }
            };
            let new = (old & !clear) | set;
            let result = engine.write_msr(msr.number, new);
            printer.report(&Outcome {
                old: Some(old),
                value: Some(new),
                cpu: on,
                ..Outcome::on("rmw", *msr, &result)
            });
            if options.read_back && result.is_ok() {
                read_one(engine, *msr, options.field, on, printer);
            }
        }
        Command::Read { msrs } => {
            for msr in msrs {
                read_one(engine, *msr, options.field, on, printer);
            }
        }
        Command::List { .. } => probe_msrs(engine, printer),
        Command::Cpus => list_cpus(engine, printer),
        Command::Shell { .. } | Command::Keygen { .. } | Command::Help | Command::Version => {}
    }
}

fn read_one(
    engine: &Engine,
    msr: Msr,
    field: Option<Field>,
    on: Option<OnCpu>,
    printer: &mut Printer,
) {
    let result = engine.read_msr(msr.number);
    printer.report(&Outcome {
        value: result.as_ref().ok().copied(),
        field,
        cpu: on,
        ..Outcome::on("rdmsr", msr, &result)
    });
}

/// `pulse msrs`: the named MSRs the debuggee has, each probed with a read
/// (#GP = absent). Any other failure ends the probe with its status.
fn probe_msrs(engine: &Engine, printer: &mut Printer) {
    let mut out = String::new();
    for (name, number) in known_msrs() {
        match engine.read_msr(number) {
            Ok(value) => list_line(&mut out, name, number, Some(value), printer.json),
            Err(error) if error.status() == Status::EXCEPTION_GENERAL_PROTECTION => {}
            failed @ Err(_) => {
                let _ = io::stdout().lock().write_all(out.as_bytes());
                printer.report(&Outcome::on(
                    "rdmsr",
                    Msr {
                        number,
                        name: Some(name),
                    },
                    &failed,
                ));
                return;
            }
        }
    }
    let _ = io::stdout().lock().write_all(out.as_bytes());
}

/// The debuggee's CPUs, or `None` after reporting why they could not be
/// asked.
fn cpu_info(engine: &Engine, printer: &mut Printer) -> Option<CpuInfo> {
    match engine.cpu_info() {
        Ok(info) => Some(info),
        Err(error) => {
            printer.report(&Outcome {
                op: "cpus",
                msr: None,
                transport: None,
                old: None,
                value: None,
                field: None,
                cpu: None,
                status: error.status(),
                message: Some(error.to_string()),
            });
            None
        }
    }
}

/// `pulse cpus`: the debuggee's CPUs (`PsGetCpuCount`), which of them
/// run, and the engine's current one.
fn list_cpus(engine: &Engine, printer: &mut Printer) {
    let Some(info) = cpu_info(engine, printer) else {
        return;
    };
    let current = engine.current_cpu();
    let mut out = String::new();
    if printer.json {
        let running: Vec<String> = (0..info.count)
            .filter(|&c| info.is_running(c))
            .map(|c| c.to_string())
            .collect();
        let _ = writeln!(
            out,
            "{{\"op\":\"cpus\",\"status\":\"{}\",\"code\":\"0x00000000\",\"count\":{},\"running\":[{}],\"current\":{current}}}",
            status_name(Status::SUCCESS),
            info.count,
            running.join(",")
        );
    } else {
        for cpu in 0..info.count {
            let state = if info.is_running(cpu) {
                "running"
            } else {
                "not running"
            };
            let mark = if cpu == current { "  (current)" } else { "" };
            let _ = writeln!(out, "CPU {cpu}  {state}{mark}");
        }
    }
    let _ = io::stdout().lock().write_all(out.as_bytes());
}

fn list_line(out: &mut String, name: &str, number: u32, value: Option<u64>, json: bool) {
    let applied = GUEST_APPLIED.contains(&number);
    if json {
        let value = value.map_or(String::new(), |v| format!(",\"value\":\"{v:#018x}\""));
        let _ = writeln!(
            out,
            "{{\"msr\":\"{number:#010x}\",\"name\":{},\"guest_applied\":{applied}{value}}}",
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

/// `pulse msrs --all-names`: every name pulse knows, no debuggee needed.
fn list_names(json: bool) -> u8 {
    let mut out = String::new();
    for (name, number) in known_msrs() {
        list_line(&mut out, name, number, None, json);
    }
    let _ = io::stdout().lock().write_all(out.as_bytes());
    0
}

/// `pulse shell`: one engine, then one command per line from FILE or
/// stdin. Blank lines and `#` comments are skipped; `quit`/`exit` end it.
/// A bad line is reported and the next one runs; the first failure sets the
/// exit status.
fn run_shell(options: &Options, file: Option<&str>) -> u8 {
    let mut printer = Printer {
        json: options.json,
        format: options.format,
        first_failure: None,
    };
    let input: Box<dyn BufRead> = match file {
        Some("-") | None => Box::new(io::stdin().lock()),
        Some(path) => match std::fs::File::open(path) {
            Ok(f) => Box::new(io::BufReader::new(f)),
            Err(e) => {
                printer.usage(&usage!("cannot read `{path}`: {e}"), None);
                return printer.exit();
            }
        },
    };
    let prompt = file.is_none() && io::stdin().is_terminal();
    let Some(engine) = open_engine(options, &mut printer) else {
        return printer.exit();
    };
    let mut lines = input.lines();
    let mut number = 0;
    loop {
        if prompt {
            let _ = write!(io::stderr().lock(), "pulse> ");
            let _ = io::stderr().flush();
        }
        let Some(line) = lines.next() else { break };
        number += 1;
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                printer.usage(&usage!("cannot read the input: {e}"), Some(number));
                break;
            }
        };
        let text = line.split('#').next().unwrap_or("").trim();
        let words: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
        match words.first().map(String::as_str) {
            None => continue,
            Some("quit" | "exit") => break,
            Some(_) => {}
        }
        match parse_with(&words, options.clone(), Source::ShellLine) {
            Ok((_, Command::Help)) => {
                let _ = io::stdout().lock().write_all(help_text().as_bytes());
            }
            Ok((_, Command::Version)) => print_version(),
            Ok((line_options, command)) => execute(&engine, &line_options, &command, &mut printer),
            Err(usage) => printer.usage(&usage, Some(number)),
        }
    }
    printer.exit()
}

fn print_version() {
    let _ = writeln!(
        io::stdout().lock(),
        "pulse {} ({})",
        env!("CARGO_PKG_VERSION"),
        env!("PULSE_SONAME")
    );
}

fn run(args: &[String]) -> u8 {
    let env_transport = std::env::var("PULSE_TRANSPORT")
        .ok()
        .filter(|t| !t.is_empty());
    let (mut options, command) = match parse_args(args, env_transport) {
        Ok(parsed) => parsed,
        Err(Usage(message)) => {
            // The line could not be parsed, so look for --json by hand.
            let json = args.iter().any(|a| a == "--json");
            print_usage_error(json, &message, None);
            return EXIT_USAGE;
        }
    };
    if let Command::Keygen { ref file } = command {
        return keygen(file, options.json);
    }
    if options.key_file.is_none() {
        options.key_file = std::env::var("PULSE_KEY_FILE")
            .ok()
            .filter(|p| !p.is_empty());
    }
    if let Some(path) = &options.key_file {
        // A key file that gives no key stops the run: never a silent
        // fallback to an unauthenticated link.
        match pulse::config::read_key_file(std::path::Path::new(path)) {
            Ok(key) => options.key = Some(key),
            Err(problem) => {
                print_usage_error(options.json, &problem.to_string(), None);
                return EXIT_USAGE;
            }
        }
    }
    match command {
        Command::Keygen { ref file } => keygen(file, options.json),
        Command::Help => {
            let _ = io::stdout().lock().write_all(help_text().as_bytes());
            0
        }
        Command::Version => {
            print_version();
            0
        }
        Command::List { all_names: true } => list_names(options.json),
        Command::Shell { ref file } => run_shell(&options, file.as_deref()),
        Command::Write { .. } | Command::Read { .. } | Command::List { .. } | Command::Cpus => {
            let mut printer = Printer {
                json: options.json,
                format: options.format,
                first_failure: None,
            };
            if let Some(engine) = open_engine(&options, &mut printer) {
                execute(&engine, &options, &command, &mut printer);
            }
            printer.exit()
        }
    }
}

/// `pulse keygen FILE`: a new random key, written to a file that must not
/// exist yet (readable by its owner only).
fn keygen(file: &str, json: bool) -> u8 {
    let Some(key) = pulse::config::generate_key() else {
        print_usage_error(json, "the OS gave no random numbers for a key", None);
        return EXIT_INTERNAL;
    };
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    let written = open
        .open(file)
        .and_then(|mut f| f.write_all(&key.to_text()).and_then(|()| f.sync_all()));
    match written {
        Ok(()) => {
            if !json {
                println!("pulse: wrote a new key to {file}");
            }
            0
        }
        Err(e) => {
            print_usage_error(
                json,
                &format!("key file {file}: cannot be written: {e}"),
                None,
            );
            EXIT_USAGE
        }
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
        // Every error; SUCCESS and informational codes exit 0.
        for status in Status::ALL.iter().filter(|s| s.is_error()) {
            assert!(
                EXIT_CODES.iter().any(|(s, _)| s == status),
                "{status:?} has no exit code"
            );
        }
        assert_eq!(exit_code(Status::BARRIER_ALREADY_OWNED), 0);
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
        assert!(matches!(
            c,
            Command::Write {
                op: WriteOp::Value(16),
                ..
            }
        ));
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
    fn debugger_numbers() {
        // Bare hex with a letter, as WinDbg/HyperDbg; digits stay decimal.
        assert_eq!(parse_msr("c0000082").unwrap().number, 0xC000_0082);
        assert_eq!(parse_msr("C0000082").unwrap().name, Some("IA32_LSTAR"));
        assert_eq!(parse_msr("1d9").unwrap().number, 0x1D9);
        assert_eq!(parse_msr("372").unwrap().number, 372);
        assert_eq!(
            parse_value("fffff80012345000").unwrap(),
            0xFFFF_F800_1234_5000
        );
        assert_eq!(
            parse_value("fffff800`12345000").unwrap(),
            0xFFFF_F800_1234_5000
        );
        assert_eq!(
            parse_value("0xfffff800`12345000").unwrap(),
            0xFFFF_F800_1234_5000
        );
        assert_eq!(parse_value("00000000`00000010").unwrap(), 0x10);
        assert_eq!(parse_value("10").unwrap(), 10);
        for bad in ["1`2`3", "`", "12abx", "fffff8001234500000", "0x1g", "-c0"] {
            assert!(parse_value(bad).is_err(), "accepted {bad:?}");
        }
        // Names win over hex spellings; no name is all hex digits anyway.
        assert_eq!(parse_msr("efer").unwrap().number, 0xC000_0080);
        assert!(parse_msr("ccccccccc").is_err());
    }

    #[test]
    fn fields() {
        let f = parse_field("15:12").unwrap();
        assert_eq!(f.mask(), 0xF000);
        assert_eq!(f.extract(0xFFFF_F800_1234_5000), 5);
        assert_eq!(parse_field("63:0").unwrap().mask(), u64::MAX);
        assert_eq!(parse_field("0:0").unwrap().mask(), 1);
        assert_eq!(parse_field("63:63").unwrap().mask(), 1 << 63);
        for bad in ["64:0", "3:4", "3", "a:b", "3:", ":3", "-1:0"] {
            assert!(parse_field(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn read_modify_write_and_fields_on_the_command_line() {
        let (_, c) = parse_args(
            &args(&[
                "wrmsr",
                "IA32_DEBUGCTL",
                "--set-bits",
                "0x1",
                "--clear-bits",
                "2",
            ]),
            None,
        )
        .unwrap();
        assert!(matches!(
            c,
            Command::Write {
                op: WriteOp::Modify { set: 1, clear: 2 },
                ..
            }
        ));
        let (_, c) = parse_args(&args(&["wrmsr", "-f", "7:4", "0x277", "0xa"]), None).unwrap();
        assert!(matches!(
            c,
            Command::Write {
                op: WriteOp::Modify {
                    set: 0xA0,
                    clear: 0xF0
                },
                ..
            }
        ));
        for bad in [
            &["wrmsr", "0x277", "1", "--set-bits", "1"][..],
            &["wrmsr", "0x277"],
            &["wrmsr", "-f", "3:0", "0x277", "0x10"],
            &["wrmsr", "-f", "3:0", "0x277", "--set-bits", "1"],
            &["rdmsr", "0x10", "--clear-bits", "1"],
            &["-x", "-d", "rdmsr", "0x10"],
            &["-x", "--json", "rdmsr", "0x10"],
            &["msrs", "-f", "3:0"],
            &["rdmsr", "0x10", "--all-names"],
            &["-p", "x", "rdmsr", "0x10"],
        ] {
            assert!(parse_args(&args(bad), None).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn shell_lines_cannot_change_the_connection() {
        let base = Options::new("sim".into());
        for bad in [
            &["-t", "sim", "rdmsr", "0x10"][..],
            &["--timeout", "5", "rdmsr", "0x10"],
            &["shell"],
        ] {
            assert!(
                parse_with(&args(bad), base.clone(), Source::ShellLine).is_err(),
                "accepted {bad:?}"
            );
        }
        let (o, _) = parse_with(&args(&["rdmsr", "-x", "0x10"]), base, Source::ShellLine).unwrap();
        assert_eq!(o.format, Format::Hex);
    }

    #[test]
    fn cpu_options() {
        let (o, _) = parse_args(&args(&["-p", "3", "rdmsr", "0x10"]), None).unwrap();
        assert_eq!(o.cpus, Cpus::One(3));
        let (o, _) = parse_args(&args(&["rdmsr", "--all-cpus", "0x10"]), None).unwrap();
        assert_eq!(o.cpus, Cpus::All);
        assert!(parse_args(&args(&["-a", "msrs"]), None).is_err());
        assert!(parse_args(&args(&["-p", "1", "msrs"]), None).is_ok());
    }

    #[test]
    fn json_escapes() {
        assert_eq!(json_str("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }
}
