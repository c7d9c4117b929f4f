//! A fault-injecting TCP relay between libpulse and an hv-stub-sim server.
//!
//! Each accepted client connection gets its own upstream connection and two
//! pumps, one per direction. A pump cuts the byte stream into frames with
//! `pulse_proto::Decoder` (both ends only ever send whole, valid frames) and
//! decides each frame's fate with a seeded generator: drop it, flip one of
//! its bytes, send it twice, hold it back, or put garbage before it. The
//! generator is drawn the same number of times for every frame, so the n-th
//! frame of a direction always meets the same fate for a given seed.
//! Delayed frames are scheduled independently, so they can overtake each
//! other's retransmissions, as late duplicates do on a real network.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use pulse_proto::frame::SOF;
use pulse_proto::{Decoder, RawFrame, MAX_PAYLOAD};

use super::{frame_bytes, Rng};

/// Which way a frame travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// libpulse -> hv-stub.
    Requests,
    /// hv-stub -> libpulse.
    Responses,
}

impl Dir {
    fn index(self) -> usize {
        match self {
            Dir::Requests => 0,
            Dir::Responses => 1,
        }
    }
}

/// Per-frame fault probabilities for one direction.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// The frame is not forwarded.
    pub drop: f64,
    /// One byte of the frame is XORed with a non-zero value.
    pub corrupt: f64,
    /// The frame is forwarded twice.
    pub duplicate: f64,
    /// The frame is held back for `delay_by`.
    pub delay: f64,
    pub delay_by: Duration,
    /// 1..=`garbage_max` random bytes are sent before the frame.
    pub garbage: f64,
    pub garbage_max: usize,
    /// Garbage starts like a frame: the start marker and a plausible
    /// length, so a decoder must wait for more bytes before rejecting it.
    pub garbage_fake_header: bool,
}

/// What a direction's pump has done, summed over connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames read from the sender.
    pub frames: u64,
    pub dropped: u64,
    pub corrupted: u64,
    pub duplicated: u64,
    pub delayed: u64,
    pub garbage_bytes: u64,
    /// Uncorrupted frame copies written to the receiver.
    pub delivered_intact: u64,
}

struct Shared {
    upstream: SocketAddr,
    seed: u64,
    faults: Mutex<[Faults; 2]>,
    counters: Mutex<[Counters; 2]>,
    /// Uncorrupted frames written, per direction, in write order.
    delivered: Mutex<[Vec<RawFrame>; 2]>,
    /// Per direction: cut the connection instead of forwarding the frame
    /// with this index (counted over all connections from 0).
    cut_at: Mutex<[Option<u64>; 2]>,
    /// Clones of every socket, so `cut` can shut them down.
    sockets: Mutex<Vec<TcpStream>>,
    connections: AtomicUsize,
    stop: AtomicBool,
}

impl Shared {
    fn cut(&self) {
        for socket in self.sockets.lock().iter() {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

pub struct Relay {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Relay {
    /// Starts a relay to `upstream` with no faults.
    pub fn start(upstream: SocketAddr, seed: u64) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let shared = Arc::new(Shared {
            upstream,
            seed,
            faults: Mutex::new([Faults::default(); 2]),
            counters: Mutex::new([Counters::default(); 2]),
            delivered: Mutex::new([Vec::new(), Vec::new()]),
            cut_at: Mutex::new([None; 2]),
            sockets: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let accept_shared = Arc::clone(&shared);
        std::thread::spawn(move || accept_loop(listener, accept_shared));
        Relay { addr, shared }
    }

    pub fn transport(&self) -> String {
        format!("tcp:{}", self.addr)
    }

    pub fn seed(&self) -> u64 {
        self.shared.seed
    }

    pub fn set_faults(&self, dir: Dir, faults: Faults) {
        self.shared.faults.lock()[dir.index()] = faults;
    }

    /// Closes every relayed connection in both directions now.
    pub fn cut(&self) {
        self.shared.cut();
    }

    /// Cuts the connection when the frame after the next `n` arrives in
    /// `dir`, instead of forwarding it.
    pub fn cut_after(&self, dir: Dir, n: u64) {
        let seen = self.counters(dir).frames;
        self.shared.cut_at.lock()[dir.index()] = Some(seen + n);
    }

    pub fn counters(&self, dir: Dir) -> Counters {
        self.shared.counters.lock()[dir.index()]
    }

    /// Every uncorrupted frame written in `dir`, in order (duplicates
    /// included).
    pub fn delivered(&self, dir: Dir) -> Vec<RawFrame> {
        self.shared.delivered.lock()[dir.index()].clone()
    }

    /// Waits until nothing has been read or written for a moment, so that
    /// the logs agree with what both ends have seen.
    pub fn quiesce(&self) {
        let snapshot = || {
            let c = self.shared.counters.lock();
            (
                c[0].frames,
                c[0].delivered_intact,
                c[1].frames,
                c[1].delivered_intact,
            )
        };
        let mut last = snapshot();
        loop {
            std::thread::sleep(Duration::from_millis(25));
            let now = snapshot();
            if now == last {
                return;
            }
            last = now;
        }
    }

    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.cut();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
        };
        client.set_nonblocking(false).ok();
        let upstream = match TcpStream::connect(shared.upstream) {
            Ok(s) => s,
            Err(_) => continue,
        };
        for s in [&client, &upstream] {
            s.set_nodelay(true).ok();
        }
        {
            let mut sockets = shared.sockets.lock();
            sockets.push(client.try_clone().unwrap());
            sockets.push(upstream.try_clone().unwrap());
        }
        let n = shared.connections.fetch_add(1, Ordering::Relaxed) as u64;
        for (dir, src, dst) in [
            (
                Dir::Requests,
                client.try_clone().unwrap(),
                upstream.try_clone().unwrap(),
            ),
            (Dir::Responses, upstream, client),
        ] {
            let rng = Rng::new(
                shared.seed ^ (n.wrapping_mul(0x5851_F42D_4C95_7F2D)) ^ (dir.index() as u64 + 1),
            );
            let pump_shared = Arc::clone(&shared);
            std::thread::spawn(move || pump(dir, src, dst, rng, pump_shared));
        }
    }
}

/// One scheduled write.
struct Item {
    due: Instant,
    order: u64,
    bytes: Vec<u8>,
    intact: Option<RawFrame>,
}

#[derive(Default)]
struct Queue {
    items: Vec<Item>,
    order: u64,
    done: bool,
}

struct Scheduler {
    queue: Mutex<Queue>,
    ready: Condvar,
}

impl Scheduler {
    fn push(&self, due: Instant, bytes: Vec<u8>, intact: Option<RawFrame>) {
        let mut q = self.queue.lock();
        let order = q.order;
        q.order += 1;
        q.items.push(Item {
            due,
            order,
            bytes,
            intact,
        });
        self.ready.notify_one();
    }

    fn finish(&self) {
        self.queue.lock().done = true;
        self.ready.notify_one();
    }

    /// Writes items when they fall due; ends once finished and drained,
    /// then closes the receiver's side for writing.
    fn run(&self, dir: Dir, mut dst: TcpStream, shared: &Shared) {
        loop {
            let item = {
                let mut q = self.queue.lock();
                loop {
                    let next = q
                        .items
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, it)| (it.due, it.order))
                        .map(|(i, it)| (i, it.due));
                    match next {
                        None if q.done => {
                            drop(q);
                            let _ = dst.shutdown(Shutdown::Write);
                            return;
                        }
                        None => {
                            self.ready.wait(&mut q);
                        }
                        Some((i, due)) => {
                            let now = Instant::now();
                            if due <= now {
                                break q.items.swap_remove(i);
                            }
                            self.ready.wait_for(&mut q, due - now);
                        }
                    }
                }
            };
            if dst.write_all(&item.bytes).is_err() {
                // The receiver is gone; keep draining so the pump never blocks.
                continue;
            }
            if let Some(frame) = item.intact {
                shared.counters.lock()[dir.index()].delivered_intact += 1;
                shared.delivered.lock()[dir.index()].push(frame);
            }
        }
    }
}

fn pump(dir: Dir, mut src: TcpStream, dst: TcpStream, mut rng: Rng, shared: Arc<Shared>) {
    let scheduler = Arc::new(Scheduler {
        queue: Mutex::new(Queue::default()),
        ready: Condvar::new(),
    });
    let writer = {
        let scheduler = Arc::clone(&scheduler);
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || scheduler.run(dir, dst, &shared))
    };
    let mut decoder = Decoder::new();
    let mut buf = [0u8; 1024];
    let mut frames: Vec<RawFrame> = Vec::new();
    'read: loop {
        let n = match src.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        frames.clear();
        decoder.feed(&buf[..n], |f| frames.push(f));
        for frame in &frames {
            let faults = shared.faults.lock()[dir.index()];
            // Draw every choice for every frame so the n-th frame's fate
            // depends only on the seed and n.
            let drop_it = rng.chance(faults.drop);
            let corrupt = rng.chance(faults.corrupt);
            let duplicate = rng.chance(faults.duplicate);
            let delay = rng.chance(faults.delay);
            let garbage = rng.chance(faults.garbage);
            let flip_at = rng.next_u64();
            let flip_with = 1 + rng.below(255) as u8;
            let garbage_len = 1 + rng.below(faults.garbage_max.max(1) as u64) as usize;
            let garbage_seed = rng.next_u64();

            let index = {
                let mut counters = shared.counters.lock();
                let c = &mut counters[dir.index()];
                c.frames += 1;
                c.frames - 1
            };
            if shared.cut_at.lock()[dir.index()] == Some(index) {
                shared.cut();
                break 'read;
            }
            let now = Instant::now();
            if garbage {
                let mut g = Rng::new(garbage_seed);
                let mut bytes: Vec<u8> = (0..garbage_len).map(|_| g.next_u64() as u8).collect();
                if faults.garbage_fake_header {
                    let len = g.below(MAX_PAYLOAD as u64 + 1) as u8;
                    bytes.splice(0..0, [SOF, len]);
                }
                shared.counters.lock()[dir.index()].garbage_bytes += bytes.len() as u64;
                scheduler.push(now, bytes, None);
            }
            if drop_it {
                shared.counters.lock()[dir.index()].dropped += 1;
                continue;
            }
            let mut bytes = frame_bytes(frame);
            let mut intact = Some(*frame);
            if corrupt {
                let at = (flip_at % bytes.len() as u64) as usize;
                bytes[at] ^= flip_with;
                intact = None;
                shared.counters.lock()[dir.index()].corrupted += 1;
            }
            let due = if delay {
                shared.counters.lock()[dir.index()].delayed += 1;
                now + faults.delay_by
            } else {
                now
            };
            if duplicate {
                shared.counters.lock()[dir.index()].duplicated += 1;
                scheduler.push(due, bytes.clone(), intact);
            }
            scheduler.push(due, bytes, intact);
        }
    }
    scheduler.finish();
    let _ = writer.join();
}
