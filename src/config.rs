//! Engine configuration and the transport string:
//!
//! * `sim[?cpu=PROFILE][&cpus=N][&online=M]` — the in-process simulated
//!   debuggee (PROFILE is one of `hv_stub::CpuCaps::PROFILES`, default
//!   `modern`; N processors, 1..=64, default 4, of which the first M run the
//!   guest, 1..=N, default all);
//! * `tcp:<host>:<port>` — an IPv6 host goes in brackets: `tcp:[::1]:5555`;
//! * `serial:<device>[?baud=N]` — default 115200 baud.
//!
//! Anything else, an empty part, an unknown option or a repeated option is
//! rejected before anything is opened.

use std::time::Duration;

#[cfg(feature = "sim")]
use hv_stub::{cpus::MAX_CPUS, simulated::DEFAULT_CPUS, CpuCaps};
use pulse_proto::Psk;
use thiserror::Error;

pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
pub const DEFAULT_BAUD: u32 = 115_200;

/// Rust-side engine configuration (the C side is `PS_ENGINE_CONFIG`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    pub transport: String,
    /// Per attempt.
    pub request_timeout: Duration,
    /// Sends of one request before `TIMEOUT`.
    pub max_attempts: u32,
    /// The pre-shared key: `Some` opens an authenticated session only
    /// (docs/SECURITY.md), `None` the unauthenticated protocol.
    pub key: Option<Psk>,
}

impl EngineConfig {
    pub fn new(transport: impl Into<String>) -> Self {
        EngineConfig {
            transport: transport.into(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            key: None,
        }
    }

    /// The same configuration with a pre-shared key.
    pub fn with_key(self, key: Psk) -> Self {
        EngineConfig {
            key: Some(key),
            ..self
        }
    }

    /// The longest any call may take: every attempt's full timeout.
    pub fn call_budget(&self) -> Duration {
        self.request_timeout.saturating_mul(self.max_attempts)
    }
}

/// Why a key file gave no key. The message names the file.
#[derive(Debug, Error)]
pub enum KeyFileError {
    #[error("key file {path}: cannot be read: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("key file {path}: {problem}")]
    Malformed {
        path: String,
        problem: pulse_proto::KeyTextError,
    },
}

/// Reads a key file: 64 hex digits, optionally followed by a newline.
pub fn read_key_file(path: &std::path::Path) -> Result<Psk, KeyFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read(path).map_err(|source| KeyFileError::Unreadable {
        path: shown.clone(),
        source,
    })?;
    Psk::from_text(&text).map_err(|problem| KeyFileError::Malformed {
        path: shown,
        problem,
    })
}

/// A new random key from the OS's random numbers (`None` if it has none).
pub fn generate_key() -> Option<Psk> {
    crate::entropy::key()
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportSpec {
    #[cfg(feature = "sim")]
    Sim {
        cpu: CpuCaps,
        /// Processors, 1..=64.
        cpus: usize,
        /// Processors 0..online run the guest; the rest wait for the OS.
        online: usize,
    },
    Tcp {
        host: String,
        port: u16,
    },
    Serial {
        device: String,
        baud: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SpecError {
    #[error("empty transport string")]
    Empty,
    #[error("unknown transport kind `{0}` (expected sim, tcp or serial)")]
    UnknownKind(String),
    #[error("`{0}` needs a value after the colon")]
    MissingTarget(&'static str),
    #[error("tcp transport needs `tcp:<host>:<port>`")]
    MissingPort,
    #[error("invalid TCP port `{0}`")]
    BadPort(String),
    #[error("invalid host `{0}`")]
    BadHost(String),
    #[error("invalid baud rate `{0}`")]
    BadBaud(String),
    #[error("unknown CPU profile `{0}`")]
    UnknownCpu(String),
    #[error("`cpus={0}`: the simulated debuggee has 1 to 64 processors")]
    BadCpuCount(String),
    #[error("`online={0}`: between 1 and the number of processors")]
    BadOnline(String),
    #[error("unknown or repeated option `{0}`")]
    BadOption(String),
    #[error("`{0}` is not a host name or an IP address (characters other than letters, digits, `-`, `.`, `_`)")]
    BadHostChars(String),
    #[error("write `tcp:<host>:<port>`, without `//`")]
    UrlStyle,
    #[error("this libpulse was built without the `sim` transport (cargo feature `sim`)")]
    SimNotBuilt,
}

impl TransportSpec {
    pub fn parse(spec: &str) -> Result<TransportSpec, SpecError> {
        if spec.is_empty() {
            return Err(SpecError::Empty);
        }
        if spec.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(SpecError::UnknownKind(spec.to_owned()));
        }
        let (head, query) = match spec.split_once('?') {
            Some((head, query)) => (head, Some(query)),
            None => (spec, None),
        };
        let (kind, target) = match head.split_once(':') {
            Some((kind, target)) => (kind, Some(target)),
            None => (head, None),
        };
        let mut options = Options::parse(query)?;
        let parsed = match (kind, target) {
            #[cfg(not(feature = "sim"))]
            ("sim", None) => return Err(SpecError::SimNotBuilt),
            #[cfg(feature = "sim")]
            ("sim", None) => {
                let cpu = match options.take("cpu") {
                    Some(name) => CpuCaps::by_name(name)
                        .ok_or_else(|| SpecError::UnknownCpu(name.to_owned()))?,
                    None => CpuCaps::MODERN,
                };
                let cpus = match options.take("cpus") {
                    Some(text) => match text.parse::<usize>() {
                        Ok(n) if (1..=MAX_CPUS).contains(&n) && is_decimal(text) => n,
                        _ => return Err(SpecError::BadCpuCount(text.to_owned())),
                    },
                    None => DEFAULT_CPUS,
                };
                let online = match options.take("online") {
                    Some(text) => match text.parse::<usize>() {
                        Ok(n) if (1..=cpus).contains(&n) && is_decimal(text) => n,
                        _ => return Err(SpecError::BadOnline(text.to_owned())),
                    },
                    None => cpus,
                };
                TransportSpec::Sim { cpu, cpus, online }
            }
            ("tcp", Some(target)) => parse_tcp(target)?,
            ("serial", Some(device)) => {
                if device.is_empty() {
                    return Err(SpecError::MissingTarget("serial"));
                }
                let baud = match options.take("baud") {
                    Some(text) => match text.parse::<u32>() {
                        Ok(baud) if baud > 0 => baud,
                        _ => return Err(SpecError::BadBaud(text.to_owned())),
                    },
                    None => DEFAULT_BAUD,
                };
                TransportSpec::Serial {
                    device: device.to_owned(),
                    baud,
                }
            }
            ("tcp", None) => return Err(SpecError::MissingTarget("tcp")),
            ("serial", None) => return Err(SpecError::MissingTarget("serial")),
            (other, _) => return Err(SpecError::UnknownKind(other.to_owned())),
        };
        options.finish()?;
        Ok(parsed)
    }
}

/// Plain decimal digits (no sign, no spaces), as `parse` alone would allow `+4`.
fn is_decimal(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_digit())
}

fn parse_tcp(target: &str) -> Result<TransportSpec, SpecError> {
    if target.is_empty() {
        return Err(SpecError::MissingTarget("tcp"));
    }
    if target.starts_with("//") {
        return Err(SpecError::UrlStyle);
    }
    let (host, port) = if let Some(rest) = target.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| SpecError::BadHost(target.to_owned()))?;
        let port = after.strip_prefix(':').ok_or(SpecError::MissingPort)?;
        (host, port)
    } else {
        let (host, port) = target.rsplit_once(':').ok_or(SpecError::MissingPort)?;
        if host.contains(':') {
            // An IPv6 literal without brackets is ambiguous.
            return Err(SpecError::BadHost(host.to_owned()));
        }
        (host, port)
    };
    if host.is_empty() {
        return Err(SpecError::BadHost(host.to_owned()));
    }
    if host.parse::<std::net::IpAddr>().is_err()
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'%' | b':'))
    {
        return Err(SpecError::BadHostChars(host.to_owned()));
    }
    if port.is_empty() {
        return Err(SpecError::MissingPort);
    }
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 && is_decimal(port) => p,
        _ => return Err(SpecError::BadPort(port.to_owned())),
    };
    Ok(TransportSpec::Tcp {
        host: host.to_owned(),
        port,
    })
}

/// `key=value&key=value`; every option must be consumed exactly once.
struct Options<'a> {
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Options<'a> {
    fn parse(query: Option<&'a str>) -> Result<Self, SpecError> {
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        if let Some(query) = query {
            for item in query.split('&') {
                let (key, value) = item
                    .split_once('=')
                    .ok_or_else(|| SpecError::BadOption(item.to_owned()))?;
                if key.is_empty() || value.is_empty() || pairs.iter().any(|(k, _)| *k == key) {
                    return Err(SpecError::BadOption(item.to_owned()));
                }
                pairs.push((key, value));
            }
        }
        Ok(Options { pairs })
    }

    fn take(&mut self, key: &str) -> Option<&'a str> {
        let at = self.pairs.iter().position(|(k, _)| *k == key)?;
        Some(self.pairs.remove(at).1)
    }

    fn finish(self) -> Result<(), SpecError> {
        match self.pairs.first() {
            Some((key, value)) => Err(SpecError::BadOption(format!("{key}={value}"))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "sim")]
    #[test]
    fn accepts_each_kind() {
        assert_eq!(
            TransportSpec::parse("sim").unwrap(),
            TransportSpec::Sim {
                cpu: CpuCaps::MODERN,
                cpus: 4,
                online: 4
            }
        );
        assert_eq!(
            TransportSpec::parse("sim?cpu=full").unwrap(),
            TransportSpec::Sim {
                cpu: CpuCaps::FULL,
                cpus: 4,
                online: 4
            }
        );
        assert_eq!(
            TransportSpec::parse("sim?cpu=skylake&cpus=2").unwrap(),
            TransportSpec::Sim {
                cpu: CpuCaps::SKYLAKE,
                cpus: 2,
                online: 2
            }
        );
        assert_eq!(
            TransportSpec::parse("sim?cpus=64&online=1").unwrap(),
            TransportSpec::Sim {
                cpu: CpuCaps::MODERN,
                cpus: 64,
                online: 1
            }
        );
        assert_eq!(
            TransportSpec::parse("sim?online=2").unwrap(),
            TransportSpec::Sim {
                cpu: CpuCaps::MODERN,
                cpus: 4,
                online: 2
            }
        );
        assert_eq!(
            TransportSpec::parse("tcp:127.0.0.1:5555").unwrap(),
            TransportSpec::Tcp {
                host: "127.0.0.1".into(),
                port: 5555
            }
        );
        assert_eq!(
            TransportSpec::parse("tcp:[::1]:7").unwrap(),
            TransportSpec::Tcp {
                host: "::1".into(),
                port: 7
            }
        );
        assert_eq!(
            TransportSpec::parse("tcp:[fe80::1%eth0]:7").unwrap(),
            TransportSpec::Tcp {
                host: "fe80::1%eth0".into(),
                port: 7
            }
        );
        assert_eq!(
            TransportSpec::parse("serial:/dev/ttyS0").unwrap(),
            TransportSpec::Serial {
                device: "/dev/ttyS0".into(),
                baud: DEFAULT_BAUD
            }
        );
        assert_eq!(
            TransportSpec::parse("serial:/dev/pts/3?baud=9600").unwrap(),
            TransportSpec::Serial {
                device: "/dev/pts/3".into(),
                baud: 9600
            }
        );
    }

    #[cfg(not(feature = "sim"))]
    #[test]
    fn sim_without_the_feature_says_so() {
        for spec in ["sim", "sim?cpus=2"] {
            let problem = TransportSpec::parse(spec).unwrap_err();
            assert_eq!(problem, SpecError::SimNotBuilt, "{spec}");
            assert!(problem.to_string().contains("cargo feature `sim`"));
        }
    }

    #[test]
    fn rejects_malformed_strings() {
        for bad in [
            "",
            "sim:",
            "sim:x",
            "simulator",
            "sim?cpu=pentium",
            "sim?cpu=full&cpu=full",
            "sim?baud=9600",
            "sim?cpus=0",
            "sim?cpus=65",
            "sim?cpus=x",
            "sim?cpus=+4",
            "sim?cpus=",
            "sim?cpus=4&online=5",
            "sim?online=0",
            "sim?online=5",
            "sim?cpus=2&cpus=2",
            "tcp",
            "tcp:",
            "tcp:host",
            "tcp:host:",
            "tcp::5555",
            "tcp:host:0",
            "tcp:host:65536",
            "tcp:host:+80",
            "tcp:::1:80",
            "tcp:[::1]80",
            "tcp:[::1",
            "tcp:host:80?x=1",
            "tcp://host:80",
            "tcp:ho/st:80",
            "serial",
            "serial:",
            "serial:?baud=9600",
            "serial:/dev/ttyS0?baud=abc",
            "serial:/dev/ttyS0?baud=0",
            "serial:/dev/ttyS0?baud=",
            "serial:/dev/ttyS0?parity=none",
            "serial:/dev/ttyS0?baud",
            "serial:/dev/tty S0",
            "usb:/dev/x",
            " sim",
        ] {
            assert!(TransportSpec::parse(bad).is_err(), "accepted {bad:?}");
        }
    }
}
