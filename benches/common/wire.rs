//! The bytes a request and its answer put on the wire, from the protocol
//! crate itself, so that a floor exchanges exactly what libpulse does.
//! (Each bench uses part of it.)
#![allow(dead_code)]

use pulse_proto::frame::{HEADER_LEN, TRAILER_LEN};
use pulse_proto::{Message, WireStatus, MAX_PAYLOAD};

/// Bytes of one frame carrying `message` (docs/PROTOCOL.md section 7).
fn frame_len(message: Message) -> usize {
    let mut payload = [0u8; MAX_PAYLOAD];
    HEADER_LEN + message.encode_payload(&mut payload) + TRAILER_LEN
}

/// (request bytes, answer bytes) of a `PsWriteMsr`.
pub fn write_exchange() -> (usize, usize) {
    (
        frame_len(Message::WriteMsr {
            cpu: 0,
            msr: 0,
            value: 0,
        }),
        frame_len(Message::WriteAck {
            status: WireStatus::Ok,
        }),
    )
}

/// (request bytes, answer bytes) of a `PsReadMsr`.
pub fn read_exchange() -> (usize, usize) {
    (
        frame_len(Message::ReadMsr { cpu: 0, msr: 0 }),
        frame_len(Message::ReadAck {
            status: WireStatus::Ok,
            value: 0,
        }),
    )
}
