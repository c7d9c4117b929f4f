//! What the authenticated link costs: writes per second with a key against
//! writes per second without one, measured side by side.
//!
//!     cargo bench --bench auth [-- ROUNDS]        # default 5
//!
//! Two links of each kind, one keyed and one not, run at once:
//! * TCP to two `hv-stub-sim` processes (one started with `--key-file`);
//! * TCP to two Bochs boots of the observer image (one given the key with
//!   `hv-stub/image/set-key.sh`), booted once for the whole run (a Bochs
//!   COM1 accepts one client).
//!
//! In every round each link does the same number of `write_msr` calls, the
//! keyed one first in odd rounds and second in even ones, so machine noise
//! hits both alike. The unauthenticated link is the keyed one's floor: the
//! same requests over the same kind of link, 30 bytes per write round trip
//! against 46 (both counted from the protocol crate). Reported per link:
//! the spread across rounds (min–median–max) of each rate and of the
//! per-round ratio keyed / unkeyed.

#[path = "../tests/bochs/mod.rs"]
mod bochs;
#[path = "common/spread.rs"]
mod spread;
#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use bochs::{free_port, image, Bochs, Com1};
use hv_stub::msr::index::IA32_LSTAR;
use pulse::{Engine, Status};
use pulse_proto::auth::Direction;
use pulse_proto::message::{Message, WireStatus};
use pulse_proto::SessionKeys;
use spread::{ratios, Spread};
use support::{Link, SimProcess, TEST_KEY};

/// Writes per row per round.
const SIM_WRITES: u32 = 4000;
const BOCHS_WRITES: u32 = 300;

fn writes_per_s(engine: &Engine, n: u32) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        let value = 0xFFFF_F800_0000_0000 | u64::from(i) << 4;
        engine.write_msr(IA32_LSTAR, value).expect("write_msr");
    }
    f64::from(n) / start.elapsed().as_secs_f64()
}

/// Bytes of one write round trip, unauthenticated and authenticated.
fn round_trip_bytes() -> (usize, usize) {
    let write = Message::WriteMsr {
        cpu: 0,
        msr: IA32_LSTAR,
        value: 1,
    };
    let ack = Message::WriteAck {
        status: WireStatus::Ok,
    };
    let plain = write.to_frame(1, 1).as_bytes().len() + ack.to_frame(1, 1).as_bytes().len();
    let keys = SessionKeys::derive(&TEST_KEY, &[0; 16], &[0; 16]);
    let sealed = keys
        .seal(Direction::ToDebuggee, &write, 1, 1, 1)
        .as_bytes()
        .len()
        + keys
            .seal(Direction::ToClient, &ack, 1, 1, 1)
            .as_bytes()
            .len();
    (plain, sealed)
}

/// A Bochs boot of the observer image (keyed or not) and its engine.
fn boot(link: Link, dir: &Path) -> (Bochs, Engine) {
    let img = match link {
        Link::Plain => image(),
        Link::Authenticated => {
            let img = dir.join("keyed.img");
            std::fs::copy(image(), &img).unwrap();
            let key = dir.join("bench.key");
            std::fs::write(&key, TEST_KEY.to_text()).unwrap();
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hv-stub/image/set-key.sh");
            let ok = std::process::Command::new(script)
                .arg(&img)
                .arg(&key)
                .status()
                .unwrap()
                .success();
            assert!(ok, "set-key.sh");
            img
        }
    };
    let port = free_port();
    let vm = Bochs::start_image(&img, Com1::TcpServer(port));
    vm.wait_from(0, bochs::BOOT_TIMEOUT, |l| l.contains("waiting for client"))
        .expect("Bochs listens on COM1");
    let cfg = link.config(&format!("tcp:127.0.0.1:{port}"), 500, 60);
    let end = Instant::now() + bochs::BOOT_TIMEOUT;
    let engine = loop {
        match Engine::open(&cfg) {
            Ok(engine) => break engine,
            Err(e) if e.status() == Status::DEVICE_CONNECTION_LOST && Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(s) => panic!("open {link:?}: {s:?}"),
        }
    };
    vm.wait_ready();
    (vm, engine)
}

/// Each round: (unkeyed, keyed) writes per second.
fn measure(rounds: usize, n: u32, plain: &Engine, keyed: &Engine) -> (Vec<f64>, Vec<f64>) {
    let (mut p, mut k) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        if round % 2 == 0 {
            p.push(writes_per_s(plain, n));
            k.push(writes_per_s(keyed, n));
        } else {
            k.push(writes_per_s(keyed, n));
            p.push(writes_per_s(plain, n));
        }
    }
    (p, k)
}

fn report(what: &str, plain: &[f64], keyed: &[f64]) {
    println!("{what}");
    println!("  unauthenticated writes/s  {}", Spread::of(plain).show(0));
    println!("  authenticated writes/s    {}", Spread::of(keyed).show(0));
    println!(
        "  authenticated / unauthenticated, per round  {}",
        Spread::of(&ratios(keyed, plain)).show(3)
    );
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let (plain_bytes, sealed_bytes) = round_trip_bytes();
    println!(
        "bytes per write round trip: {plain_bytes} unauthenticated, {sealed_bytes} authenticated ({rounds} rounds; min–median–max across rounds)"
    );

    let dir = std::env::temp_dir().join(format!("pulse-bench-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("sim.key");
    std::fs::write(&key, TEST_KEY.to_text()).unwrap();
    let plain_sim = SimProcess::start(&["--listen", "127.0.0.1:0"]);
    let keyed_sim = SimProcess::start(&[
        "--listen",
        "127.0.0.1:0",
        "--key-file",
        key.to_str().unwrap(),
    ]);
    let plain = Engine::open(&Link::Plain.config(&plain_sim.transport, 1000, 3)).unwrap();
    let keyed = Engine::open(&Link::Authenticated.config(&keyed_sim.transport, 1000, 3)).unwrap();
    let (p, k) = measure(rounds, SIM_WRITES, &plain, &keyed);
    report(
        &format!("TCP to hv-stub-sim processes ({SIM_WRITES} writes per row per round)"),
        &p,
        &k,
    );

    bochs::require_bochs();
    let (_plain_vm, plain) = boot(Link::Plain, &dir);
    let (_keyed_vm, keyed) = boot(Link::Authenticated, &dir);
    let (p, k) = measure(rounds, BOCHS_WRITES, &plain, &keyed);
    report(
        &format!(
            "TCP to hv-stub under Bochs (ips={}, {BOCHS_WRITES} writes per row per round)",
            bochs::ips()
        ),
        &p,
        &k,
    );
    let _ = std::fs::remove_dir_all(&dir);
}
