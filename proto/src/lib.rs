//! The wire format spoken between libpulse (the debugger side) and hv-stub
//! (the debuggee side). `no_std` and allocation-free so that the bare-metal
//! hypervisor links exactly the same code as the shared library.
//!
//! Layers, bottom up:
//! * [`frame`]: the byte layout of one frame (start marker, length, type,
//!   session, sequence number, payload, CRC-16) and its encoder;
//! * [`decoder`]: a byte-at-a-time stream decoder that resynchronises after
//!   garbage, truncation or corruption;
//! * [`message`]: the typed requests and responses carried in a frame.
//!
//! `docs/PROTOCOL.md` documents every byte, with test vectors that
//! `tests/vectors.rs` checks.
#![no_std]
#![forbid(unsafe_code)]

pub mod decoder;
pub mod frame;
pub mod message;

pub use decoder::{Decoder, DecoderStats};
pub use frame::{encode_frame, FrameBuf, RawFrame, MAX_FRAME, MAX_PAYLOAD};
pub use message::{Message, NakReason, ParseError, WireStatus};

/// Protocol version carried in the handshake. Bump on any incompatible change.
pub const PROTOCOL_VERSION: u8 = 1;

/// Session number meaning "no session yet": only `Hello` travels with it.
pub const NO_SESSION: u8 = 0;
