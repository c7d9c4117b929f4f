//! libpulse's receive path on arbitrary bytes: the stream decoder and the
//! message parser must never panic, and every message they accept must
//! re-encode to exactly the frame it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pulse_proto::{Decoder, Message};

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::new();
    // Split the input in two feeds at a data-chosen point, so chunk
    // boundaries are fuzzed too.
    let cut = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut check = |frame: pulse_proto::RawFrame| {
        if let Ok(message) = Message::parse(&frame) {
            let again = message.to_frame(frame.session, frame.seq);
            let original =
                pulse_proto::encode_frame(frame.kind, frame.session, frame.seq, frame.payload());
            assert_eq!(again.as_bytes(), original.as_bytes());
        }
    };
    decoder.feed(&data[..cut], &mut check);
    decoder.feed(&data[cut..], &mut check);
    decoder.resync(&mut check);
});
