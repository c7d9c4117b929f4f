//! The library version, from Cargo.toml at compile time. The header's
//! `PULSE_VERSION_MAJOR/MINOR/PATCH` macros carry the same numbers (written
//! by `tests/header.rs`); `PsGetVersion` reports them at run time so a
//! program can check that the library it loaded matches the header it was
//! compiled with (docs/ABI.md).

/// Parses a decimal Cargo version component at compile time.
const fn parse(text: &str) -> u32 {
    let bytes = text.as_bytes();
    assert!(!bytes.is_empty(), "empty version component");
    let mut value: u32 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let digit = bytes[i];
        assert!(digit.is_ascii_digit(), "version component is not a number");
        value = value * 10 + (digit - b'0') as u32;
        i += 1;
    }
    value
}

/// `(major, minor, patch)` of this build of libpulse.
pub const fn version() -> (u32, u32, u32) {
    (MAJOR, MINOR, PATCH)
}

const MAJOR: u32 = parse(env!("CARGO_PKG_VERSION_MAJOR"));
const MINOR: u32 = parse(env!("CARGO_PKG_VERSION_MINOR"));
const PATCH: u32 = parse(env!("CARGO_PKG_VERSION_PATCH"));

#[cfg(test)]
mod tests {
    #[test]
    fn matches_cargo() {
        // Pre-release and build suffixes are not part of the numbers.
        let release = env!("CARGO_PKG_VERSION").split(['-', '+']).next();
        let ours = format!("{}.{}.{}", super::MAJOR, super::MINOR, super::PATCH);
        assert_eq!(Some(ours.as_str()), release);
    }
}
