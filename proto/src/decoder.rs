//! A resynchronising stream decoder.
//!
//! Bytes arrive in arbitrary chunks from a serial line or a socket. The
//! decoder keeps at most one frame's worth of bytes. Whenever what it holds
//! cannot be a frame (no start marker, a length over the maximum, a CRC
//! mismatch) it drops just the first byte and rescans the rest, so a valid
//! frame that follows garbage, or that starts inside a truncated frame, is
//! still found.

use crate::frame::{RawFrame, CRC16, HEADER_LEN, MAX_FRAME, MAX_PAYLOAD, SOF, TRAILER_LEN};

/// What the decoder has seen; useful in tests and diagnostics.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct DecoderStats {
    /// Frames whose CRC checked out.
    pub frames: u64,
    /// Bytes dropped while looking for a frame.
    pub skipped_bytes: u64,
    /// Candidate frames rejected for a CRC mismatch.
    pub crc_errors: u64,
    /// Candidate frames rejected for a length over `MAX_PAYLOAD`.
    pub oversized: u64,
}

/// The stream decoder both ends run (docs/PROTOCOL.md section 6): holds at
/// most [`MAX_FRAME`] bytes and delivers CRC-valid frames in stream order.
#[derive(Clone)]
pub struct Decoder {
    buf: [u8; MAX_FRAME],
    len: usize,
    stats: DecoderStats,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// An empty decoder with zeroed counters.
    pub const fn new() -> Self {
        Decoder {
            buf: [0; MAX_FRAME],
            len: 0,
            stats: DecoderStats {
                frames: 0,
                skipped_bytes: 0,
                crc_errors: 0,
                oversized: 0,
            },
        }
    }

    /// The counters so far (section 6 says what each counts).
    pub fn stats(&self) -> DecoderStats {
        self.stats
    }

    /// Bytes held that may still become a frame.
    pub fn pending(&self) -> usize {
        self.len
    }

    /// Forgets any partial frame (e.g. after the transport was reopened).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Gives up on the partial frame at the head of the buffer: drops its
    /// first byte and rescans the rest, emitting any frame found there. A
    /// receiver calls this when the line has gone quiet, so a stray start
    /// marker with a plausible length cannot hold back a complete frame
    /// behind it until more bytes arrive.
    pub fn resync(&mut self, mut on_frame: impl FnMut(RawFrame)) {
        if self.len == 0 {
            return;
        }
        self.skip(1);
        while let Some(frame) = self.next_frame() {
            on_frame(frame);
        }
    }

    /// Feeds bytes; `on_frame` is called for every complete, CRC-valid frame
    /// in the order they end in the stream.
    pub fn feed(&mut self, bytes: &[u8], mut on_frame: impl FnMut(RawFrame)) {
        for &byte in bytes {
            // Invariant: len < MAX_FRAME here, because a full-size candidate
            // is always resolved (emitted or shifted) by `next_frame`.
            self.buf[self.len] = byte;
            self.len += 1;
            while let Some(frame) = self.next_frame() {
                on_frame(frame);
            }
        }
    }

    /// Resolves the buffer's head: returns a frame if one is complete,
    /// drops bytes that cannot start one, and returns `None` when more input
    /// is needed.
    fn next_frame(&mut self) -> Option<RawFrame> {
        loop {
            if self.len == 0 {
                return None;
            }
            if self.buf[0] != SOF {
                self.skip(1);
                continue;
            }
            if self.len < 2 {
                return None;
            }
            let payload_len = usize::from(self.buf[1]);
            if payload_len > MAX_PAYLOAD {
                self.stats.oversized += 1;
                self.skip(1);
                continue;
            }
            let end = HEADER_LEN + payload_len;
            let total = end + TRAILER_LEN;
            if self.len < total {
                return None;
            }
            let wire_crc = u16::from_le_bytes([self.buf[end], self.buf[end + 1]]);
            if CRC16.checksum(&self.buf[1..end]) != wire_crc {
                self.stats.crc_errors += 1;
                self.skip(1);
                continue;
            }
            let mut payload = [0u8; MAX_PAYLOAD];
            payload[..payload_len].copy_from_slice(&self.buf[HEADER_LEN..end]);
            let frame = RawFrame {
                kind: self.buf[2],
                session: self.buf[3],
                seq: u16::from_le_bytes([self.buf[4], self.buf[5]]),
                len: payload_len as u8,
                payload,
                crc: wire_crc,
            };
            self.consume(total);
            self.stats.frames += 1;
            return Some(frame);
        }
    }

    fn skip(&mut self, n: usize) {
        self.stats.skipped_bytes += n as u64;
        self.consume(n);
    }

    fn consume(&mut self, n: usize) {
        self.buf.copy_within(n..self.len, 0);
        self.len -= n;
    }
}
