//! The committed `include/pulse.h` is exactly what cbindgen generates from
//! `src/ffi.rs` plus the status/version block built from the Rust tables,
//! and it compiles cleanly as C99 and C++ with -Wall -Wextra -Werror
//! -pedantic. `PULSE_BLESS=1 cargo test --test header` rewrites it.

use std::path::{Path, PathBuf};
use std::process::Command;

use pulse::Status;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The #define block: versions from Cargo.toml, status codes from
/// `Status::ALL` in hex, as the C ABI contract (docs/api/PULSE_STATUS.md)
/// shows them.
fn defines_block() -> String {
    let mut out = String::new();
    out.push_str("\n/* Library version, from Cargo.toml. */\n");
    for (name, value) in [
        ("MAJOR", env!("CARGO_PKG_VERSION_MAJOR")),
        ("MINOR", env!("CARGO_PKG_VERSION_MINOR")),
        ("PATCH", env!("CARGO_PKG_VERSION_PATCH")),
    ] {
        out.push_str(&format!("#define PULSE_VERSION_{name} {value}\n"));
    }
    out.push_str("\n/* PULSE_STATUS values. New codes may be added; these never change. */\n");
    for status in Status::ALL {
        let name = status.name().expect("every listed status has a name");
        out.push_str(&format!("/* {} */\n", status.meaning()));
        out.push_str(&format!("#define {name:<42} 0x{:08X}\n", status.0));
    }
    out
}

fn generate() -> String {
    let config = cbindgen::Config::from_file(root().join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(root())
        .with_config(config)
        .with_after_include(defines_block())
        .generate()
        .expect("cbindgen generates the header");
    let mut bytes = Vec::new();
    bindings.write(&mut bytes);
    String::from_utf8(bytes).expect("utf-8 header")
}

#[test]
fn committed_header_is_current() {
    let path = root().join("include/pulse.h");
    let fresh = generate();
    if std::env::var_os("PULSE_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("write include/pulse.h");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "include/pulse.h is stale: run `PULSE_BLESS=1 cargo test --test header` and commit it"
    );
}

#[test]
fn status_defines_match_the_rust_table_in_hex() {
    let header = std::fs::read_to_string(root().join("include/pulse.h")).expect("header");
    let mut found = 0;
    for line in header.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("#define") {
            continue;
        }
        let (Some(name), Some(value)) = (words.next(), words.next()) else {
            continue;
        };
        if !name.starts_with("PULSE_STATUS_") {
            continue;
        }
        let hex = value
            .strip_prefix("0x")
            .expect("status codes are written in hex");
        let code = u32::from_str_radix(hex, 16).expect("hex value");
        assert_eq!(Status(code).name(), Some(name), "{name} = {value}");
        found += 1;
    }
    assert_eq!(found, Status::ALL.len());
    // The contract's nine values, spelled out once more.
    for (name, value) in [
        ("PULSE_STATUS_SUCCESS", "0x00000000"),
        ("PULSE_STATUS_INSUFFICIENT_RESOURCES", "0xC0000002"),
        ("PULSE_STATUS_READ_FAILED", "0xC0000003"),
        ("PULSE_STATUS_WRITE_FAILED", "0xC0000004"),
        ("PULSE_STATUS_TIMEOUT", "0xC0000007"),
        ("PULSE_STATUS_INVALID_PARAMETER", "0xC0000010"),
        ("PULSE_STATUS_INVALID_PACKET", "0xC0000031"),
        ("PULSE_STATUS_DEVICE_CONNECTION_LOST", "0xC0000308"),
        ("PULSE_STATUS_EXCEPTION_GENERAL_PROTECTION", "0xC001000D"),
    ] {
        let wanted = format!("#define {name:<42} {value}");
        assert!(header.contains(&wanted), "missing `{wanted}`");
    }
}

fn compile(compiler: &str, args: &[&str], source: &Path) {
    let out =
        std::env::temp_dir().join(format!("pulse-header-{}-{compiler}.o", std::process::id()));
    let status = Command::new(compiler)
        .args(args)
        .args(["-Wall", "-Wextra", "-Werror", "-pedantic", "-c", "-o"])
        .arg(&out)
        .arg("-I")
        .arg(root().join("include"))
        .arg(source)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
    let _ = std::fs::remove_file(&out);
    assert!(status.success(), "{compiler} {args:?} rejected the header");
}

#[test]
fn header_compiles_as_c99_and_cxx() {
    let dir = std::env::temp_dir().join(format!("pulse-header-src-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let body = "#include <pulse.h>\n#include <pulse.h>\n\
        PULSE_STATUS probe(PPS_ENGINE e) {\n\
          PS_ENGINE_CONFIG c = { sizeof(PS_ENGINE_CONFIG), \"sim\", 0, 0, 0, 0 };\n\
          PPS_ENGINE out = 0; uint64_t v = 0; (void)c; (void)out;\n\
          uint32_t ma, mi, pa;\n\
          (void)PsStatusToString(PULSE_STATUS_EXCEPTION_GENERAL_PROTECTION);\n\
          if (PsGetVersion(&ma, &mi, &pa) != PULSE_STATUS_SUCCESS || ma != PULSE_VERSION_MAJOR) return 1;\n\
          return PsReadMsr(e, 0x174, &v) == PULSE_STATUS_SUCCESS ? PsWriteMsr(e, 0x174, v) : EngDestroyEngine(e);\n\
        }\n";
    let c = dir.join("probe.c");
    let cxx = dir.join("probe.cpp");
    std::fs::write(&c, body).unwrap();
    std::fs::write(&cxx, body).unwrap();
    compile("cc", &["-std=c99"], &c);
    compile("c++", &["-std=c++11"], &cxx);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `version` in Cargo.toml's `[workspace.package]` (the crate inherits
/// it), read from the file itself rather than from cargo's environment.
fn cargo_toml_version() -> (u32, u32, u32) {
    let toml = std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml");
    let mut section = String::new();
    for line in toml.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.to_owned();
            continue;
        }
        if section != "[workspace.package]" {
            continue;
        }
        let Some(rest) = line.strip_prefix("version") else {
            continue;
        };
        let text = rest
            .trim_start()
            .trim_start_matches('=')
            .trim()
            .trim_matches('"');
        let release = text.split(['-', '+']).next().unwrap();
        let parts: Vec<u32> = release
            .split('.')
            .map(|p| p.parse().expect("numeric version component"))
            .collect();
        assert_eq!(parts.len(), 3, "version `{text}`");
        return (parts[0], parts[1], parts[2]);
    }
    panic!("no version in [workspace.package] of Cargo.toml");
}

fn header_define(header: &str, name: &str) -> u32 {
    header
        .lines()
        .find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("#define") && words.next() == Some(name))
                .then(|| words.next().expect("a value").parse().expect("decimal"))
        })
        .unwrap_or_else(|| panic!("no #define {name} in include/pulse.h"))
}

#[test]
fn version_macros_and_ps_get_version_agree_with_cargo_toml() {
    let wanted = cargo_toml_version();
    let header = std::fs::read_to_string(root().join("include/pulse.h")).expect("header");
    let macros = (
        header_define(&header, "PULSE_VERSION_MAJOR"),
        header_define(&header, "PULSE_VERSION_MINOR"),
        header_define(&header, "PULSE_VERSION_PATCH"),
    );
    assert_eq!(macros, wanted, "header macros vs Cargo.toml");

    let (mut major, mut minor, mut patch) = (u32::MAX, u32::MAX, u32::MAX);
    // SAFETY: three writable u32s.
    let status = unsafe { pulse::ffi::PsGetVersion(&mut major, &mut minor, &mut patch) };
    assert_eq!(status, Status::SUCCESS.0);
    assert_eq!((major, minor, patch), wanted, "PsGetVersion vs Cargo.toml");

    // NULL anywhere: INVALID_PARAMETER and nothing written.
    let mut untouched = 7u32;
    let null = std::ptr::null_mut();
    for (a, b, c) in [
        (null, &mut untouched as *mut u32, &mut untouched as *mut u32),
        (&mut untouched as *mut u32, null, &mut untouched as *mut u32),
        (&mut untouched as *mut u32, &mut untouched as *mut u32, null),
    ] {
        // SAFETY: each pointer is NULL or writable.
        let status = unsafe { pulse::ffi::PsGetVersion(a, b, c) };
        assert_eq!(status, Status::INVALID_PARAMETER.0);
    }
    assert_eq!(untouched, 7);
}
