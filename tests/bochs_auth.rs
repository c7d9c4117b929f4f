//! Tier 4: an authenticated link to the real hypervisor under Bochs. The
//! observer image gets a key with set-key.sh (the documented command,
//! which run-bochs.sh -K uses too); an engine with the same key writes an
//! MSR and the guest itself observes the value; the frames on the wire are
//! sealed (docs/SECURITY.md). One boot: Bochs accepts one TCP client.

mod bochs;
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bochs::{free_port, image, Bochs, Com1};
use hv_stub::msr::index::IA32_LSTAR;
use pulse::{Engine, Status};
use support::{Link, TEST_KEY};

const REQUEST_TIMEOUT: Duration = Duration::from_millis(500);
const OBS_TIMEOUT: Duration = Duration::from_secs(20);

/// A copy of the observer image holding `TEST_KEY`, made with set-key.sh.
fn keyed_image(dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let img = dir.join("hv-stub-keyed.img");
    std::fs::copy(image(), &img).unwrap();
    let key = dir.join("link.key");
    std::fs::write(&key, TEST_KEY.to_text()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hv-stub/image/set-key.sh");
    let status = Command::new(script).arg(&img).arg(&key).status().unwrap();
    assert!(status.success(), "set-key.sh failed");
    img
}

#[test]
fn the_right_key_works_over_tcp_against_hv_stub_under_bochs() {
    let dir = std::env::temp_dir().join(format!("pulse-bochs-auth-{}", std::process::id()));
    let img = keyed_image(&dir);
    let port = free_port();
    let vm = Bochs::start_image(&img, Com1::TcpServer(port));
    vm.wait_from(0, Duration::from_secs(60), |l| {
        l.contains("waiting for client to connect")
    })
    .unwrap_or_else(|e| panic!("Bochs did not listen on COM1: {e}"));
    let transport = format!("tcp:127.0.0.1:{port}");
    // The handshake's retransmissions cover the boot.
    let cfg = Link::Authenticated.config(&transport, REQUEST_TIMEOUT.as_millis() as u64, 120);
    let end = Instant::now() + Duration::from_secs(60);
    let engine = loop {
        match Engine::open(&cfg) {
            Ok(engine) => break engine,
            Err(e) if e.status() == Status::DEVICE_CONNECTION_LOST && Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(s) => panic!("Engine::open({transport}) with the key: {s:?}"),
        }
    };
    vm.wait_ready();
    vm.wait_from(0, OBS_TIMEOUT, |l| l.contains("HV link: authenticated"))
        .unwrap_or_else(|e| panic!("{e}"));
    for value in [0xFFFF_FFFF_8100_0000u64, 0xFFFF_FFFF_8123_4000] {
        let from = vm.cursor();
        engine
            .write_msr(IA32_LSTAR, value)
            .unwrap_or_else(|s| panic!("authenticated write: {s:?}"));
        vm.wait_obs(from, IA32_LSTAR, value, OBS_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(engine.read_msr(IA32_LSTAR), Ok(value));
    }
    assert_eq!(engine.stats().handshakes, 1);
    let _ = std::fs::remove_dir_all(&dir);
}
