//! A floor server in a process of its own: the bench binary started again
//! with `--floor-server KIND`, which prints `listening TRANSPORT` once it
//! serves. Killed when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// This bench binary started as a floor server; killed on drop.
pub struct FloorProcess {
    child: Child,
    /// Where it listens, as a transport string.
    pub transport: String,
}

impl FloorProcess {
    pub fn start(kind: &str) -> FloorProcess {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--floor-server", kind])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the floor server process");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let transport = line
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("floor server said {line:?}"))
            .to_owned();
        FloorProcess { child, transport }
    }
}

impl Drop for FloorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
