//! A TCP relay that carries bytes no faster than a serial line would: the
//! stand-in for a 115 200-baud link between libpulse (or a floor client)
//! and a debuggee on the loopback.
//!
//! Each direction is a line of its own (full duplex): bytes that arrive
//! while the line is busy wait their turn, and every message is handed on
//! whole once the line would have finished sending its last byte. The
//! schedule is absolute, so a late wake-up (a loaded machine) delays
//! messages but never lets the average exceed the line's rate: over any
//! interval, at most `rate × interval` bytes plus one message get through.
//!
//! Messages are handed on whole because a descheduled relay thread must
//! not leave half a frame waiting: hv-stub-sim drops a partial frame after
//! 20 ms of quiet (`LINE_QUIET`), which a real line never causes.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pulse_proto::{encode_frame, Decoder};

/// Takes arriving bytes, gives the whole messages they complete.
type Cutter = Box<dyn FnMut(&[u8]) -> Vec<Vec<u8>> + Send>;

/// How a direction's byte stream is cut into the messages handed on.
#[derive(Clone, Copy)]
pub enum Cut {
    /// Protocol frames (libpulse and hv-stub).
    Frames,
    /// Messages of this many bytes (a floor's fixed exchange).
    Fixed(usize),
}

impl Cut {
    /// A cutter: takes arriving bytes, gives the messages they complete.
    fn cutter(self) -> Cutter {
        match self {
            Cut::Frames => {
                let mut decoder = Decoder::new();
                Box::new(move |bytes| {
                    let mut frames = Vec::new();
                    decoder.feed(bytes, |f| {
                        frames.push(
                            encode_frame(f.kind, f.session, f.seq, f.payload())
                                .as_bytes()
                                .to_vec(),
                        )
                    });
                    frames
                })
            }
            Cut::Fixed(size) => {
                let mut partial = Vec::new();
                Box::new(move |bytes| {
                    partial.extend_from_slice(bytes);
                    let whole = partial.len() / size * size;
                    let messages = partial[..whole].chunks(size).map(<[u8]>::to_vec).collect();
                    partial.drain(..whole);
                    messages
                })
            }
        }
    }
}

/// The line's listening end; each accepted connection gets its own
/// upstream connection and its own two paced directions.
pub struct PacedRelay {
    addr: SocketAddr,
}

impl PacedRelay {
    /// Relays to `upstream` at `bytes_per_s` in each direction, requests
    /// cut by `requests` and answers by `answers`.
    pub fn start(
        upstream: SocketAddr,
        bytes_per_s: f64,
        requests: Cut,
        answers: Cut,
    ) -> PacedRelay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the paced relay");
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(upstream) else {
                    return;
                };
                for stream in [&client, &server] {
                    stream.set_nodelay(true).unwrap();
                }
                pace(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    bytes_per_s,
                    requests.cutter(),
                );
                pace(server, client, bytes_per_s, answers.cutter());
            }
        });
        PacedRelay { addr }
    }

    pub fn transport(&self) -> String {
        format!("tcp:{}", self.addr)
    }
}

/// One direction: a reader that stamps each message with the arrival of
/// its last byte and a writer that releases it when the line is done
/// with it.
fn pace(mut from: TcpStream, mut to: TcpStream, bytes_per_s: f64, mut cut: Cutter) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            let arrived = Instant::now();
            for message in cut(&buf[..n]) {
                if tx.send((arrived, message)).is_err() {
                    return;
                }
            }
        }
    });
    std::thread::spawn(move || {
        let mut line_free = Instant::now();
        for (arrived, message) in rx {
            let on_line = Duration::from_secs_f64(message.len() as f64 / bytes_per_s);
            line_free = line_free.max(arrived) + on_line;
            if let Some(wait) = line_free.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if to.write_all(&message).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
