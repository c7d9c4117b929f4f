//! The README shows what the code does: its demo block is exactly what
//! `scripts/demo.sh` (the `pulse-demo` binary on `sim`) prints, and its C
//! snippet is a complete program that compiles with -Wall -Wextra -Werror
//! -pedantic against the header and runs.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).expect("README.md")
}

/// The body of the first block fenced as ```LANG that follows `after`.
fn fenced_block<'a>(text: &'a str, after: &str, lang: &str) -> &'a str {
    let start = text
        .find(after)
        .unwrap_or_else(|| panic!("README has no `{after}`"));
    let fence = format!("```{lang}\n");
    let rest = &text[start..];
    let body = &rest[rest.find(&fence).expect("a fenced block") + fence.len()..];
    &body[..body.find("```").expect("closing fence")]
}

#[test]
fn readme_demo_block_is_what_the_demo_prints() {
    let text = readme();
    let block = fenced_block(&text, "<!-- demo output: begin -->", "");
    let end = text.find("<!-- demo output: end -->").expect("end marker");
    assert!(
        text.find(block).unwrap() < end,
        "the block lies between the markers"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_pulse-demo"))
        .arg("sim")
        .output()
        .expect("run pulse-demo");
    assert!(out.status.success(), "pulse-demo failed");
    let printed = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(
        block, printed,
        "README's demo block differs from what scripts/demo.sh prints; paste the new output"
    );
}

/// `target/<profile>` with libpulse.so in it: `cargo test` builds only the
/// rlib, so the C library is built here (a no-op when up to date), as
/// `support::hv_stub_sim_exe` builds its binary.
fn built_library_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary in <target>/<profile>/deps")
        .to_path_buf();
    let target_dir = profile_dir.parent().expect("target dir");
    let mut build = Command::new(env!("CARGO"));
    build
        .args([
            "build",
            "--quiet",
            "-p",
            "pulse",
            "--lib",
            "--manifest-path",
        ])
        .arg(root().join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            build.arg("--release");
        }
        Some(other) => {
            build.args(["--profile", other]);
        }
        None => panic!("no profile directory"),
    }
    assert!(build.status().expect("run cargo build").success());
    profile_dir
}

#[test]
fn readme_c_snippet_is_a_complete_program_that_runs() {
    let text = readme();
    let snippet = fenced_block(&text, "## Using it from C", "c");
    assert!(snippet.contains("#include <stdio.h>"), "{snippet}");
    assert!(snippet.contains("int main(void)"), "{snippet}");

    let dir = std::env::temp_dir().join(format!("pulse-readme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = dir.join("app.c");
    let program = dir.join("app");
    std::fs::write(&source, snippet).unwrap();
    let libdir = built_library_dir();
    // By full path: a bare -lpulse could find PulseAudio's libpulse.so.
    let library = libdir.join("libpulse.so");
    assert!(library.is_file(), "no {}", library.display());
    let status = Command::new("cc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-o"])
        .arg(&program)
        .arg("-I")
        .arg(root().join("include"))
        .arg(&source)
        .arg(&library)
        .arg(format!("-Wl,-rpath,{}", libdir.display()))
        .status()
        .expect("run cc");
    assert!(status.success(), "the README's C snippet does not compile");
    let out = Command::new(&program).output().expect("run the snippet");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "the snippet exited {:?}", out.status);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "PULSE_STATUS_SUCCESS\n"
    );
}

/// One text per status: the meanings live in src/status.rs (shown by
/// docs/api/PULSE_STATUS.md, checked by tests/api_docs.rs); the README
/// links that page instead of keeping a copy.
#[test]
fn readme_links_the_status_page_instead_of_copying_it() {
    let readme = readme();
    assert!(readme.contains("](docs/api/PULSE_STATUS.md)"));
    assert!(
        !readme.lines().any(|l| l.starts_with("| `PULSE_STATUS_")),
        "README.md has a status table of its own"
    );
    for status in pulse::Status::ALL {
        assert!(
            !readme.contains(status.meaning()),
            "README.md copies the meaning of {status:?}"
        );
    }
}
