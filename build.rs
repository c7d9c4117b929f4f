//! Gives libpulse.so an ELF soname, as a C library has, so that programs
//! record `libpulse.so.<sover>` and keep running across compatible upgrades:
//! `<sover>` is MAJOR for 1.0 and later and `0.MINOR` before 1.0 (every 0.x
//! minor release may break the ABI, as in Cargo's semver; cargo-c names
//! its sonames the same way). docs/ABI.md states the policy;
//! scripts/install.sh installs the matching file and links.
//!
//! A program linked against `target/<profile>/libpulse.so` records the
//! soname, so a link `libpulse.so.<sover> -> libpulse.so` is also made next
//! to it: `-Ltarget/release -lpulse -Wl,-rpath,target/release` keeps working
//! without installing anything.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if !matches!(
        target_os.as_str(),
        "linux" | "android" | "freebsd" | "netbsd" | "openbsd"
    ) {
        return;
    }
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("set by cargo");
    let minor = std::env::var("CARGO_PKG_VERSION_MINOR").expect("set by cargo");
    let sover = if major == "0" {
        format!("0.{minor}")
    } else {
        major
    };
    let soname = format!("libpulse.so.{sover}");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    println!("cargo:rustc-env=PULSE_SONAME={soname}");
    if let Some(dir) = profile_dir() {
        link_soname(&dir, &soname);
    }
}

/// `target/<profile>` (or `target/<triple>/<profile>`), where cargo puts
/// libpulse.so: OUT_DIR is `<that>/build/pulse-<hash>/out`. `None` if the
/// layout is not the usual one (then nothing is linked).
fn profile_dir() -> Option<PathBuf> {
    let out = PathBuf::from(std::env::var_os("OUT_DIR")?);
    let build = out.parent()?.parent()?;
    if build.file_name()? != "build" {
        return None;
    }
    Some(build.parent()?.to_path_buf())
}

/// Best effort: the link only helps running programs from the build tree.
fn link_soname(dir: &Path, soname: &str) {
    let link = dir.join(soname);
    if std::fs::read_link(&link).is_ok_and(|to| to == Path::new("libpulse.so")) {
        return;
    }
    let _ = std::fs::remove_file(&link);
    #[cfg(unix)]
    let _ = std::os::unix::fs::symlink("libpulse.so", &link);
}
