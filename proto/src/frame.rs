//! Byte layout of one frame.
//!
//! ```text
//! offset  size  field
//! 0       1     SOF      0xA5, start of frame
//! 1       1     LEN      payload length, 0..=MAX_PAYLOAD
//! 2       1     TYPE     message type (bit 7 set on responses)
//! 3       1     SESSION  session number from the handshake (0 = none)
//! 4       2     SEQ      request sequence number, little endian; echoed in the response
//! 6       LEN   PAYLOAD  little-endian fields, per TYPE
//! 6+LEN   2     CRC      CRC-16/IBM-3740 over bytes 1..6+LEN, little endian
//! ```

use crc::{Crc, CRC_16_IBM_3740};

/// Start-of-frame marker. Any byte before it is garbage and skipped.
pub const SOF: u8 = 0xA5;
/// Bytes before the payload: SOF, LEN, TYPE, SESSION, SEQ(2).
pub const HEADER_LEN: usize = 6;
/// Bytes after the payload: the CRC.
pub const TRAILER_LEN: usize = 2;
/// Largest payload any message uses, with room to grow. A larger LEN is
/// treated as garbage, so a corrupted length can never make the decoder wait
/// for a huge frame.
pub const MAX_PAYLOAD: usize = 32;
/// Largest frame on the wire.
pub const MAX_FRAME: usize = HEADER_LEN + MAX_PAYLOAD + TRAILER_LEN;

/// CRC-16/IBM-3740 (a.k.a. CCITT-FALSE): init 0xFFFF, so leading zero bytes
/// change the checksum, and every burst error up to 16 bits is detected.
pub const CRC16: Crc<u16> = Crc::<u16>::new(&CRC_16_IBM_3740);

/// One frame whose CRC checked out: header fields and an owned payload.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RawFrame {
    /// TYPE (frame offset 2): the message type, bit 7 set on responses
    /// (docs/PROTOCOL.md section 3).
    pub kind: u8,
    /// SESSION (offset 3): the handshake's session number, 0 = none.
    pub session: u8,
    /// SEQ (offsets 4..6, little endian on the wire): the request's
    /// sequence number, echoed in its response (section 5.1).
    pub seq: u16,
    /// LEN (offset 1): payload bytes used, 0..=[`MAX_PAYLOAD`].
    pub len: u8,
    /// The payload bytes; only the first `len` count (the decoder zeroes
    /// the rest).
    pub payload: [u8; MAX_PAYLOAD],
    /// The frame's CRC; lets the debuggee recognise a retransmission.
    pub crc: u16,
}

impl RawFrame {
    /// The payload's `len` bytes.
    pub fn payload(&self) -> &[u8] {
        &self.payload[..usize::from(self.len)]
    }
}

/// A buffer that holds one encoded frame.
#[derive(Clone, Copy)]
pub struct FrameBuf {
    bytes: [u8; MAX_FRAME],
    len: usize,
}

impl FrameBuf {
    /// The whole frame as it goes on the wire, SOF to CRC (`8 + LEN` bytes).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl core::fmt::Debug for FrameBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "FrameBuf(")?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// Encodes one frame. Panics only if `payload` exceeds [`MAX_PAYLOAD`], which
/// the message layer never produces.
pub fn encode_frame(kind: u8, session: u8, seq: u16, payload: &[u8]) -> FrameBuf {
    assert!(payload.len() <= MAX_PAYLOAD, "payload too large");
    let mut bytes = [0u8; MAX_FRAME];
    bytes[0] = SOF;
    bytes[1] = payload.len() as u8;
    bytes[2] = kind;
    bytes[3] = session;
    bytes[4..6].copy_from_slice(&seq.to_le_bytes());
    let end = HEADER_LEN + payload.len();
    bytes[HEADER_LEN..end].copy_from_slice(payload);
    let crc = CRC16.checksum(&bytes[1..end]);
    bytes[end..end + TRAILER_LEN].copy_from_slice(&crc.to_le_bytes());
    FrameBuf {
        bytes,
        len: end + TRAILER_LEN,
    }
}
