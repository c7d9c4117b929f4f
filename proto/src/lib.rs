//! The wire format spoken between libpulse (the debugger side) and hv-stub
//! (the debuggee side). `no_std` and allocation-free so that the bare-metal
//! hypervisor links exactly the same code as the shared library.
//!
//! Layers, bottom up:
//! * [`frame`]: the byte layout of one frame (start marker, length, type,
//!   session, sequence number, payload, CRC-16) and its encoder;
//! * [`decoder`]: a byte-at-a-time stream decoder that resynchronises after
//!   garbage, truncation or corruption;
//! * [`message`]: the typed requests and responses carried in a frame;
//! * [`auth`]: the authenticated link's key derivation and frame sealing.
//!
//! `docs/PROTOCOL.md` documents every byte, with test vectors that
//! `tests/vectors.rs` checks.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod auth;
pub mod decoder;
pub mod frame;
pub mod message;

pub use auth::{Direction, ExpandedKeys, KeyTextError, NonceSource, Psk, SessionKeys};
pub use decoder::{Decoder, DecoderStats};
pub use frame::{encode_frame, FrameBuf, RawFrame, MAX_FRAME, MAX_PAYLOAD};
pub use message::{Message, NakReason, ParseError, WireStatus, ALL_CPUS};

/// Protocol version carried in the handshake. Bump on any incompatible change.
/// Version 2: a session accepts only its next request (no serial-number
/// window), sessions are random, `OutOfSequence` and `SessionTakenOver`.
/// Version 3: WriteMsr/ReadMsr name their CPU; CpuInfo; statuses NoCpu and
/// CpuInactive.
/// Version 4: a window of requests in flight per session; HelloAck and
/// AuthHelloAck announce its size.
pub const PROTOCOL_VERSION: u8 = 4;

/// The largest window a debuggee may announce: requests `next ..
/// next + window` of a session may be in flight at once, and the debuggee
/// keeps the answers of the last `window` requests for retransmissions.
pub const MAX_WINDOW: u8 = 64;

/// Requests a session may carry after its Hello: the Hello is request 0 of
/// the session and the SEQ of request `k` is the Hello's SEQ plus `k`
/// (mod 2^16), so a session never reuses a SEQ. A client opens a new
/// session before it would need request 65536.
pub const SESSION_REQUESTS: u16 = u16::MAX;

/// Session number meaning "no session yet": only `Hello` travels with it.
pub const NO_SESSION: u8 = 0;
