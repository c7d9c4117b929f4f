//! A TCP relay that carries bytes no faster than a serial line would: the
//! stand-in for a 115 200-baud link between libpulse (or a floor client)
//! and a debuggee on the loopback.
//!
//! Each direction is a line of its own (full duplex): bytes that arrive
//! while the line is busy wait their turn, and every piece of `PIECE`
//! bytes is handed on only once the line would have finished sending it.
//! The schedule is absolute, so a late wake-up (a loaded machine) delays
//! bytes but never lets the average exceed the line's rate: over any
//! interval, at most `rate × interval + PIECE` bytes get through.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Bytes handed on at once (a receiving UART's FIFO fills byte by byte;
/// 8 bytes keep the relay's own cost low while a frame still arrives in
/// pieces, as it would over a real line).
const PIECE: usize = 8;

/// The line's listening end; each accepted connection gets its own
/// upstream connection and its own two paced directions.
pub struct PacedRelay {
    addr: SocketAddr,
}

impl PacedRelay {
    /// Relays to `upstream` at `bytes_per_s` in each direction.
    pub fn start(upstream: SocketAddr, bytes_per_s: f64) -> PacedRelay {
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
                );
                pace(server, client, bytes_per_s);
            }
        });
        PacedRelay { addr }
    }

    pub fn transport(&self) -> String {
        format!("tcp:{}", self.addr)
    }
}

/// One direction: a reader that stamps each piece with its arrival time
/// and a writer that releases it when the line is done with it.
fn pace(mut from: TcpStream, mut to: TcpStream, bytes_per_s: f64) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            let arrived = Instant::now();
            for piece in buf[..n].chunks(PIECE) {
                if tx.send((arrived, piece.to_vec())).is_err() {
                    return;
                }
            }
        }
    });
    std::thread::spawn(move || {
        let mut line_free = Instant::now();
        for (arrived, piece) in rx {
            let on_line = Duration::from_secs_f64(piece.len() as f64 / bytes_per_s);
            line_free = line_free.max(arrived) + on_line;
            if let Some(wait) = line_free.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if to.write_all(&piece).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
