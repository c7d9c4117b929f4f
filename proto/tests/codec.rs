//! Unit tests of the codec: frame encoding, the resynchronising stream
//! decoder and the message layer, plus property tests of the decoder.

use proptest::prelude::*;
use pulse_proto::frame::{HEADER_LEN, SOF, TRAILER_LEN};
use pulse_proto::message::kind;
use pulse_proto::{
    encode_frame, Decoder, DecoderStats, Message, NakReason, ParseError, RawFrame, WireStatus,
    MAX_FRAME, MAX_PAYLOAD,
};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Feeds `bytes` in one call to a fresh decoder.
fn decode(bytes: &[u8]) -> (Vec<RawFrame>, DecoderStats) {
    let mut dec = Decoder::new();
    let mut out = Vec::new();
    dec.feed(bytes, |f| out.push(f));
    (out, dec.stats())
}

/// Feeds `bytes` to a fresh decoder in the given chunk sizes (the last chunk
/// takes whatever is left), returning frames, stats and pending bytes.
fn decode_chunked(bytes: &[u8], sizes: &[usize]) -> (Vec<RawFrame>, DecoderStats, usize) {
    let mut dec = Decoder::new();
    let mut out = Vec::new();
    let mut rest = bytes;
    for &n in sizes {
        let n = n.min(rest.len());
        let (head, tail) = rest.split_at(n);
        dec.feed(head, |f| out.push(f));
        rest = tail;
    }
    dec.feed(rest, |f| out.push(f));
    (out, dec.stats(), dec.pending())
}

fn frame_bytes(msg: &Message, session: u8, seq: u16) -> Vec<u8> {
    msg.to_frame(session, seq).as_bytes().to_vec()
}

/// Re-encodes a decoded frame to its wire bytes.
fn reencode(f: &RawFrame) -> Vec<u8> {
    encode_frame(f.kind, f.session, f.seq, f.payload())
        .as_bytes()
        .to_vec()
}

fn stats(frames: u64, skipped_bytes: u64, crc_errors: u64, oversized: u64) -> DecoderStats {
    DecoderStats {
        frames,
        skipped_bytes,
        crc_errors,
        oversized,
    }
}

/// A small deterministic PRNG (xorshift64*) for reproducible chunkings.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Every message variant, each with ordinary and extreme field values.
fn samples() -> Vec<Message> {
    let mut v = Vec::new();
    for version in [0, 1, u8::MAX] {
        for nonce in [0, 1, 0xdead_beef, u32::MAX] {
            v.push(Message::Hello { version, nonce });
        }
        for capabilities in [0, 1, 0b111, u32::MAX] {
            v.push(Message::HelloAck {
                version,
                capabilities,
                window: 32,
            });
        }
    }
    for msr in [0, 0x174, 0xc000_0080, u32::MAX] {
        for value in [0, 1, 0x1_0000_0010, u64::MAX] {
            v.push(Message::WriteMsr { cpu: 0, msr, value });
        }
        v.push(Message::ReadMsr { cpu: 0, msr });
    }
    for status in [WireStatus::Ok, WireStatus::GeneralProtection] {
        v.push(Message::WriteAck { status });
        for value in [0, 0x8000_0000_0000_0000, u64::MAX] {
            v.push(Message::ReadAck { status, value });
        }
    }
    for reason in [
        NakReason::BadSession,
        NakReason::UnsupportedVersion,
        NakReason::UnknownType,
        NakReason::BadPayload,
    ] {
        v.push(Message::Nak { reason });
    }
    v
}

/// One message of each variant, in declaration order.
fn one_of_each() -> Vec<Message> {
    vec![
        Message::Hello {
            version: 1,
            nonce: 0x0102_0304,
        },
        Message::HelloAck {
            version: 1,
            capabilities: 0b10,
            window: 16,
        },
        Message::WriteMsr {
            cpu: 0,
            msr: 0x174,
            value: 0x1_0000_0010,
        },
        Message::WriteAck {
            status: WireStatus::Ok,
        },
        Message::ReadMsr { cpu: 0, msr: 0x174 },
        Message::ReadAck {
            status: WireStatus::Ok,
            value: 0x1_0000_0010,
        },
        Message::Nak {
            reason: NakReason::BadSession,
        },
        Message::CpuInfo,
        Message::CpuInfoAck {
            count: 4,
            running: 0b1011,
        },
        Message::AuthHello {
            version: 3,
            nonce: [0x11; 16],
        },
        Message::AuthHelloAck {
            nonce: [0x22; 16],
            version: 4,
            capabilities: 0b10,
            window: 32,
        },
    ]
}

/// A stream of several frames (with sessions and seqs that vary), and the
/// frames' (session, seq, message) in order.
fn stream_of_frames() -> (Vec<u8>, Vec<(u8, u16, Message)>) {
    let mut bytes = Vec::new();
    let mut expect = Vec::new();
    for (i, msg) in samples().into_iter().enumerate() {
        let session = (i * 37) as u8;
        let seq = (i as u16).wrapping_mul(0x9e37);
        bytes.extend_from_slice(&frame_bytes(&msg, session, seq));
        expect.push((session, seq, msg));
    }
    (bytes, expect)
}

fn assert_frames(frames: &[RawFrame], expect: &[(u8, u16, Message)]) {
    assert_eq!(frames.len(), expect.len(), "number of frames");
    for (f, (session, seq, msg)) in frames.iter().zip(expect) {
        assert_eq!(f.session, *session);
        assert_eq!(f.seq, *seq);
        assert_eq!(Message::parse(f), Ok(*msg));
    }
}

/// A WriteMsr frame without any 0xA5 byte after its start marker, so that
/// the exact counts of skipped bytes are easy to state.
fn clean_write() -> Vec<u8> {
    let f = frame_bytes(
        &Message::WriteMsr {
            cpu: 0,
            msr: 0x174,
            value: 0x1_0000_0010,
        },
        1,
        0x1234,
    );
    assert!(!f[1..].contains(&SOF), "pick other values: {f:02x?}");
    f
}

/// A WriteAck frame without any 0xA5 byte after its start marker.
fn clean_ack() -> Vec<u8> {
    let f = frame_bytes(
        &Message::WriteAck {
            status: WireStatus::Ok,
        },
        1,
        0x1234,
    );
    assert!(!f[1..].contains(&SOF), "pick other values: {f:02x?}");
    f
}

/// A frame with the given raw kind and payload, as the decoder delivers it.
fn raw(kind: u8, payload: &[u8]) -> RawFrame {
    let (frames, _) = decode(encode_frame(kind, 1, 2, payload).as_bytes());
    assert_eq!(frames.len(), 1);
    frames[0]
}

// ---------------------------------------------------------------------------
// Frame layout and round trips
// ---------------------------------------------------------------------------

#[test]
fn constants_are_consistent() {
    assert_eq!(SOF, 0xa5);
    assert_eq!(HEADER_LEN, 6);
    assert_eq!(TRAILER_LEN, 2);
    assert_eq!(MAX_FRAME, HEADER_LEN + MAX_PAYLOAD + TRAILER_LEN);
    assert!(MAX_PAYLOAD <= usize::from(u8::MAX));
    assert!(
        MAX_PAYLOAD < usize::from(SOF),
        "LEN = 0xA5 must be oversized"
    );
}

#[test]
fn frame_header_fields_are_where_the_layout_says() {
    let msg = Message::WriteMsr {
        cpu: 0,
        msr: 0x0403_0201,
        value: 0x0c0b_0a09_0807_0605,
    };
    let f = frame_bytes(&msg, 0x42, 0xbeef);
    assert_eq!(f.len(), HEADER_LEN + 13 + TRAILER_LEN);
    assert_eq!(f[0], SOF);
    assert_eq!(f[1], 13);
    assert_eq!(f[2], kind::WRITE_MSR);
    assert_eq!(f[3], 0x42);
    assert_eq!(&f[4..6], &[0xef, 0xbe]);
    assert_eq!(&f[6..19], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    let crc = pulse_proto::frame::CRC16.checksum(&f[1..19]);
    assert_eq!(&f[19..21], &crc.to_le_bytes());
}

#[test]
fn payload_lengths_and_kinds_per_variant() {
    let expect: [(u8, usize, bool); 9] = [
        (kind::HELLO, 5, false),
        (kind::HELLO_ACK, 6, true),
        (kind::WRITE_MSR, 13, false),
        (kind::WRITE_ACK, 1, true),
        (kind::READ_MSR, 5, false),
        (kind::READ_ACK, 9, true),
        (kind::NAK, 1, true),
        (kind::CPU_INFO, 0, false),
        (kind::CPU_INFO_ACK, 9, true),
    ];
    for (msg, (k, len, response)) in one_of_each().iter().zip(expect) {
        assert_eq!(msg.kind(), k, "{msg:?}");
        assert_eq!(msg.is_response(), response, "{msg:?}");
        let f = msg.to_frame(1, 1);
        assert_eq!(
            f.as_bytes().len(),
            HEADER_LEN + len + TRAILER_LEN,
            "{msg:?}"
        );
        assert_eq!(usize::from(f.as_bytes()[1]), len, "{msg:?}");
    }
    assert_eq!(kind::HELLO, 0x01);
    assert_eq!(kind::WRITE_MSR, 0x02);
    assert_eq!(kind::READ_MSR, 0x03);
    assert_eq!(kind::HELLO_ACK, 0x81);
    assert_eq!(kind::WRITE_ACK, 0x82);
    assert_eq!(kind::READ_ACK, 0x83);
    assert_eq!(kind::NAK, 0xff);
}

#[test]
fn every_variant_round_trips_with_extreme_values() {
    for msg in samples() {
        for session in [0, 1, 0x7f, u8::MAX] {
            for seq in [0, 1, 0x1234, 0x8000, u16::MAX] {
                let bytes = frame_bytes(&msg, session, seq);
                let (frames, st) = decode(&bytes);
                assert_eq!(frames.len(), 1, "{msg:?}");
                let f = &frames[0];
                assert_eq!(f.kind, msg.kind());
                assert_eq!(f.session, session);
                assert_eq!(f.seq, seq);
                assert_eq!(usize::from(f.len), bytes.len() - HEADER_LEN - TRAILER_LEN);
                let crc = u16::from_le_bytes([bytes[bytes.len() - 2], bytes[bytes.len() - 1]]);
                assert_eq!(f.crc, crc);
                assert_eq!(Message::parse(f), Ok(msg));
                assert_eq!(reencode(f), bytes);
                assert_eq!(st, stats(1, 0, 0, 0));
            }
        }
    }
}

#[test]
fn raw_frames_of_every_legal_length_round_trip() {
    for len in 0..=MAX_PAYLOAD {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
        let bytes = encode_frame(0x55, 9, 0x0102, &payload);
        assert_eq!(bytes.as_bytes().len(), HEADER_LEN + len + TRAILER_LEN);
        let (frames, st) = decode(bytes.as_bytes());
        assert_eq!(frames.len(), 1, "len {len}");
        assert_eq!(frames[0].payload(), &payload[..]);
        assert_eq!(frames[0].kind, 0x55);
        assert_eq!(st, stats(1, 0, 0, 0));
    }
}

#[test]
#[should_panic(expected = "payload too large")]
fn encoding_an_oversized_payload_panics() {
    let _ = encode_frame(0x01, 0, 0, &[0u8; MAX_PAYLOAD + 1]);
}

#[test]
fn frame_buf_debug_is_hex() {
    let f = Message::Nak {
        reason: NakReason::BadSession,
    }
    .to_frame(1, 0x0203);
    let hex: String = f.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(format!("{f:?}"), format!("FrameBuf({hex})"));
}

// ---------------------------------------------------------------------------
// Chunking
// ---------------------------------------------------------------------------

#[test]
fn back_to_back_frames_in_one_feed_call() {
    let (bytes, expect) = stream_of_frames();
    let (frames, st) = decode(&bytes);
    assert_frames(&frames, &expect);
    assert_eq!(st, stats(expect.len() as u64, 0, 0, 0));
}

#[test]
fn byte_by_byte_gives_the_same_frames() {
    let (bytes, expect) = stream_of_frames();
    let mut dec = Decoder::new();
    let mut frames = Vec::new();
    for b in &bytes {
        dec.feed(core::slice::from_ref(b), |f| frames.push(f));
    }
    assert_frames(&frames, &expect);
    assert_eq!(dec.stats(), stats(expect.len() as u64, 0, 0, 0));
    assert_eq!(dec.pending(), 0);
}

#[test]
fn a_frame_is_emitted_exactly_when_its_last_byte_arrives() {
    let f = clean_write();
    let mut dec = Decoder::new();
    let mut n = 0;
    for (i, b) in f.iter().enumerate() {
        dec.feed(core::slice::from_ref(b), |_| n += 1);
        if i + 1 < f.len() {
            assert_eq!(n, 0, "emitted early at byte {i}");
            assert_eq!(dec.pending(), i + 1);
        }
    }
    assert_eq!(n, 1);
    assert_eq!(dec.pending(), 0);
}

#[test]
fn random_chunkings_give_the_same_frames() {
    let (mut bytes, mut expect) = stream_of_frames();
    // Some garbage in the middle and at the end exercises resynchronisation
    // across chunk boundaries too.
    let mid = frame_bytes(&Message::ReadMsr { cpu: 0, msr: 7 }, 3, 4);
    bytes.extend_from_slice(&[0x00, 0x13, 0xa5, 0x02, 0xff, 0xa5]);
    bytes.extend_from_slice(&mid);
    bytes.extend_from_slice(&[0x5a, 0x00]);
    expect.push((3, 4, Message::ReadMsr { cpu: 0, msr: 7 }));

    let (reference, ref_stats) = decode(&bytes);
    assert_frames(&reference, &expect);

    let mut rng = Rng(0x0123_4567_89ab_cdef);
    for _ in 0..300 {
        let mut sizes = Vec::new();
        let mut total = 0;
        while total < bytes.len() {
            // Mostly small chunks, sometimes empty, sometimes large.
            let n = match rng.below(10) {
                0 => 0,
                1 => rng.below(3 * MAX_FRAME),
                _ => 1 + rng.below(8),
            };
            sizes.push(n);
            total += n;
        }
        let (frames, st, pending) = decode_chunked(&bytes, &sizes);
        assert_eq!(frames, reference, "chunking {sizes:?}");
        assert_eq!(st, ref_stats, "chunking {sizes:?}");
        assert_eq!(pending, 0);
    }
}

#[test]
fn empty_feed_does_nothing() {
    let mut dec = Decoder::new();
    dec.feed(&[], |_| panic!("no frame expected"));
    assert_eq!(dec.stats(), DecoderStats::default());
    assert_eq!(dec.pending(), 0);
}

#[test]
fn clear_forgets_a_partial_frame() {
    let f = clean_write();
    let mut dec = Decoder::default();
    dec.feed(&f[..10], |_| panic!("no frame expected"));
    assert_eq!(dec.pending(), 10);
    dec.clear();
    assert_eq!(dec.pending(), 0);
    // The rest of the old frame is now garbage; the next frame is found.
    let mut frames = Vec::new();
    dec.feed(&f[10..], |f| frames.push(f));
    dec.feed(&f, |f| frames.push(f));
    assert_eq!(frames.len(), 1);
    assert_eq!(reencode(&frames[0]), f);
    assert_eq!(dec.stats(), stats(1, (f.len() - 10) as u64, 0, 0));
}

// ---------------------------------------------------------------------------
// Resynchronisation
// ---------------------------------------------------------------------------

#[test]
fn garbage_before_a_frame_is_skipped() {
    let f = clean_write();
    let garbage = [0x00, 0x11, 0xff, 0x5a, 0x30, 0x69, 0x24, 0x2b];
    let mut bytes = garbage.to_vec();
    bytes.extend_from_slice(&f);
    let (frames, st) = decode(&bytes);
    assert_eq!(frames.len(), 1);
    assert_eq!(reencode(&frames[0]), f);
    assert_eq!(st, stats(1, garbage.len() as u64, 0, 0));
}

#[test]
fn garbage_between_frames_is_skipped() {
    let w = clean_write();
    let a = clean_ack();
    let mut bytes = w.clone();
    bytes.extend_from_slice(&[0x01, 0x02, 0x03]);
    bytes.extend_from_slice(&a);
    bytes.extend_from_slice(&[0xee; 40]);
    bytes.extend_from_slice(&w);
    let (frames, st) = decode(&bytes);
    let got: Vec<Vec<u8>> = frames.iter().map(reencode).collect();
    assert_eq!(got, vec![w.clone(), a, w]);
    assert_eq!(st, stats(3, 43, 0, 0));
}

#[test]
fn a_lone_sof_before_a_frame() {
    // A5 A5 0C ...: the first A5 is read with LEN = 0xA5 > MAX_PAYLOAD, so it
    // is dropped at once as oversized, and the real frame follows.
    let f = clean_write();
    let mut bytes = vec![SOF];
    bytes.extend_from_slice(&f);
    let (frames, st) = decode(&bytes);
    assert_eq!(frames.len(), 1);
    assert_eq!(reencode(&frames[0]), f);
    assert_eq!(st, stats(1, 1, 0, 1));
}

#[test]
fn a_lone_sof_with_a_small_length_before_a_frame() {
    // A5 03 then a valid frame: the bogus candidate (LEN 3) swallows the
    // start of the real frame, fails its CRC, and the rescan finds the frame.
    let f = clean_write();
    let mut bytes = vec![SOF, 0x03];
    bytes.extend_from_slice(&f);
    let (frames, st) = decode(&bytes);
    assert_eq!(frames.len(), 1);
    assert_eq!(reencode(&frames[0]), f);
    assert_eq!(st, stats(1, 2, 1, 0));
}

#[test]
fn a_truncated_frame_followed_by_a_valid_frame() {
    let w = clean_write();
    for cut in 1..w.len() {
        let mut bytes = w[..cut].to_vec();
        bytes.extend_from_slice(&w);
        let (frames, st) = decode(&bytes);
        assert_eq!(frames.len(), 1, "cut at {cut}");
        assert_eq!(reencode(&frames[0]), w, "cut at {cut}");
        assert_eq!(st.frames, 1);
        assert_eq!(st.skipped_bytes, cut as u64, "cut at {cut}");
        // A lone SOF is read with the next frame's SOF as its LEN and dropped
        // as oversized; with SOF+LEN or more, the bogus candidate is formed
        // and rejected by its CRC exactly once.
        assert_eq!(st.oversized, u64::from(cut == 1), "cut at {cut}");
        assert_eq!(st.crc_errors, u64::from(cut >= 2), "cut at {cut}");
    }
}

#[test]
fn a_truncated_long_frame_before_a_short_frame_delays_but_does_not_lose_it() {
    // The truncated frame announces 13 payload bytes (21 in all) but only 3
    // arrive; the following WriteAck is 9 bytes. The decoder cannot tell the
    // candidate is bogus until 21 bytes are held, so the WriteAck comes out
    // once enough further bytes arrive (in the protocol: a retransmission).
    let w = clean_write();
    let a = clean_ack();
    assert_eq!(w.len(), 3 + 2 * a.len());
    let mut dec = Decoder::new();
    let mut frames = Vec::new();
    dec.feed(&w[..3], |f| frames.push(f));
    dec.feed(&a, |f| frames.push(f));
    assert!(frames.is_empty());
    assert_eq!(dec.pending(), 3 + a.len());
    dec.feed(&a, |f| frames.push(f));
    let got: Vec<Vec<u8>> = frames.iter().map(reencode).collect();
    assert_eq!(got, vec![a.clone(), a]);
    assert_eq!(dec.stats(), stats(2, 3, 1, 0));
    assert_eq!(dec.pending(), 0);
}

#[test]
fn a_frame_starting_inside_a_bogus_candidate_is_found() {
    // Garbage A5 0E (a legal LEN of 14) and two bytes, then a 9-byte frame,
    // then a second frame: the bogus candidate needs 22 bytes and covers the
    // whole first frame; once it fails its CRC both frames are found.
    let a = clean_ack();
    let w = clean_write();
    let mut bytes = vec![SOF, 0x0e, 0x00, 0x00];
    bytes.extend_from_slice(&a);
    bytes.extend_from_slice(&w);
    let (frames, st) = decode(&bytes);
    let got: Vec<Vec<u8>> = frames.iter().map(reencode).collect();
    assert_eq!(got, vec![a, w]);
    assert_eq!(st, stats(2, 4, 1, 0));
}

#[test]
fn a_corrupted_crc_byte_drops_the_frame_only() {
    let w = clean_write();
    for at in [w.len() - 2, w.len() - 1] {
        let mut bad = w.clone();
        bad[at] ^= 0x01;
        let mut bytes = bad.clone();
        bytes.extend_from_slice(&w);
        let (frames, st) = decode(&bytes);
        assert_eq!(frames.len(), 1);
        assert_eq!(reencode(&frames[0]), w);
        assert_eq!(st, stats(1, w.len() as u64, 1, 0));
    }
}

#[test]
fn a_corrupted_payload_byte_drops_the_frame_only() {
    let w = clean_write();
    for at in HEADER_LEN..w.len() - TRAILER_LEN {
        for flip in [0x01, 0x80, 0xff] {
            let mut bad = w.clone();
            bad[at] ^= flip;
            if bad[at] == SOF {
                continue; // would add a start marker; covered elsewhere
            }
            let mut bytes = bad;
            bytes.extend_from_slice(&w);
            let (frames, st) = decode(&bytes);
            assert_eq!(frames.len(), 1, "byte {at} ^ {flip:#x}");
            assert_eq!(reencode(&frames[0]), w);
            assert_eq!(st, stats(1, w.len() as u64, 1, 0), "byte {at} ^ {flip:#x}");
        }
    }
}

#[test]
fn a_corrupted_header_byte_drops_the_frame_only() {
    // TYPE, SESSION and SEQ are covered by the CRC too.
    let w = clean_write();
    for at in 2..HEADER_LEN {
        let mut bad = w.clone();
        bad[at] ^= 0x10;
        let mut bytes = bad;
        bytes.extend_from_slice(&w);
        let (frames, st) = decode(&bytes);
        assert_eq!(frames.len(), 1, "byte {at}");
        assert_eq!(reencode(&frames[0]), w);
        assert_eq!(st, stats(1, w.len() as u64, 1, 0), "byte {at}");
    }
}

#[test]
fn a_corrupted_len_larger_but_legal() {
    let w = clean_write();
    let mut bad = w.clone();
    bad[1] = 14;
    let mut bytes = bad;
    bytes.extend_from_slice(&w);
    let (frames, st) = decode(&bytes);
    assert_eq!(frames.len(), 1);
    assert_eq!(reencode(&frames[0]), w);
    assert_eq!(st, stats(1, w.len() as u64, 1, 0));

    // The largest legal LEN: the candidate spans the bad frame and most of
    // the good one, and is still rejected.
    let mut bad = w.clone();
    bad[1] = MAX_PAYLOAD as u8;
    let mut bytes = bad;
    bytes.extend_from_slice(&w);
    let (frames, st) = decode(&bytes);
    assert_eq!(frames.len(), 1);
    assert_eq!(reencode(&frames[0]), w);
    assert_eq!(st, stats(1, w.len() as u64, 1, 0));
}

#[test]
fn a_corrupted_len_smaller() {
    let w = clean_write();
    for len in [0u8, 1, 4, 11] {
        let mut bad = w.clone();
        bad[1] = len;
        let mut bytes = bad;
        bytes.extend_from_slice(&w);
        let (frames, st) = decode(&bytes);
        assert_eq!(frames.len(), 1, "LEN {len}");
        assert_eq!(reencode(&frames[0]), w);
        assert_eq!(st, stats(1, w.len() as u64, 1, 0), "LEN {len}");
    }
}

#[test]
fn a_corrupted_len_over_max_payload_is_oversized() {
    let w = clean_write();
    for len in [MAX_PAYLOAD as u8 + 1, 0x80, u8::MAX] {
        let mut bad = w.clone();
        bad[1] = len;
        let mut bytes = bad;
        bytes.extend_from_slice(&w);
        let (frames, st) = decode(&bytes);
        assert_eq!(frames.len(), 1, "LEN {len}");
        assert_eq!(reencode(&frames[0]), w);
        assert_eq!(st, stats(1, w.len() as u64, 0, 1), "LEN {len}");
    }
}

#[test]
fn an_oversized_len_never_makes_the_decoder_wait() {
    let mut dec = Decoder::new();
    dec.feed(&[SOF, MAX_PAYLOAD as u8 + 1], |_| panic!("no frame"));
    assert_eq!(
        dec.pending(),
        0,
        "oversized candidate must be dropped at once"
    );
    assert_eq!(dec.stats(), stats(0, 2, 0, 1));

    // Whereas the largest legal LEN is waited for.
    let mut dec = Decoder::new();
    dec.feed(&[SOF, MAX_PAYLOAD as u8], |_| panic!("no frame"));
    assert_eq!(dec.pending(), 2);
    assert_eq!(dec.stats(), DecoderStats::default());
}

#[test]
fn many_oversized_candidates_in_a_row() {
    // A run of start markers: each is read with LEN = 0xA5 and dropped.
    let w = clean_write();
    let mut bytes = vec![SOF; 10];
    bytes.extend_from_slice(&w);
    let (frames, st) = decode(&bytes);
    assert_eq!(frames.len(), 1);
    assert_eq!(st, stats(1, 10, 0, 10));
}

#[test]
fn the_decoder_holds_at_most_one_frame() {
    let mut dec = Decoder::new();
    let mut rng = Rng(42);
    for _ in 0..10_000 {
        let b = match rng.below(4) {
            0 => SOF,
            1 => rng.below(MAX_PAYLOAD + 1) as u8,
            _ => rng.next() as u8,
        };
        dec.feed(&[b], |_| {});
        assert!(dec.pending() < MAX_FRAME);
    }
}

#[test]
fn only_garbage_yields_nothing() {
    let bytes: Vec<u8> = (0..=255u8).filter(|&b| b != SOF).collect();
    let (frames, st) = decode(&bytes);
    assert!(frames.is_empty());
    assert_eq!(st, stats(0, 255, 0, 0));
}

// ---------------------------------------------------------------------------
// Message parsing errors
// ---------------------------------------------------------------------------

#[test]
fn unknown_types_are_rejected() {
    let known = [
        kind::HELLO,
        kind::HELLO_ACK,
        kind::WRITE_MSR,
        kind::WRITE_ACK,
        kind::READ_MSR,
        kind::READ_ACK,
        kind::NAK,
        kind::CPU_INFO,
        kind::CPU_INFO_ACK,
        kind::AUTH_HELLO,
        kind::AUTH_HELLO_ACK,
    ];
    for k in 0..=u8::MAX {
        if known.contains(&k) {
            continue;
        }
        for len in [0, 1, 5, 12] {
            let f = raw(k, &vec![0; len]);
            assert_eq!(Message::parse(&f), Err(ParseError::UnknownType(k)));
        }
    }
}

#[test]
fn every_type_with_a_payload_one_byte_short_or_long() {
    for msg in one_of_each() {
        let mut buf = [0u8; MAX_PAYLOAD];
        let n = msg.encode_payload(&mut buf);
        let k = msg.kind();

        if n == 0 {
            // CpuInfo: any payload at all is malformed.
            assert_eq!(
                Message::parse(&raw(k, &[0])),
                Err(ParseError::BadLength { kind: k, len: 1 }),
                "{msg:?} long"
            );
            assert_eq!(Message::parse(&raw(k, &[])), Ok(msg));
            continue;
        }
        let short = raw(k, &buf[..n - 1]);
        assert_eq!(
            Message::parse(&short),
            Err(ParseError::BadLength {
                kind: k,
                len: (n - 1) as u8
            }),
            "{msg:?} short"
        );

        let mut long = buf[..n].to_vec();
        long.push(0);
        let long = raw(k, &long);
        assert_eq!(
            Message::parse(&long),
            Err(ParseError::BadLength {
                kind: k,
                len: (n + 1) as u8
            }),
            "{msg:?} long"
        );

        let empty = raw(k, &[]);
        assert_eq!(
            Message::parse(&empty),
            Err(ParseError::BadLength { kind: k, len: 0 }),
            "{msg:?} empty"
        );

        // And the exact length parses.
        assert_eq!(Message::parse(&raw(k, &buf[..n])), Ok(msg));
    }
}

#[test]
fn bad_wire_status_bytes_are_rejected() {
    for b in 4..=u8::MAX {
        let ack = raw(kind::WRITE_ACK, &[b]);
        assert_eq!(Message::parse(&ack), Err(ParseError::BadStatus(b)));
        let mut payload = [0u8; 9];
        payload[0] = b;
        let read = raw(kind::READ_ACK, &payload);
        assert_eq!(Message::parse(&read), Err(ParseError::BadStatus(b)));
    }
    assert_eq!(
        Message::parse(&raw(kind::WRITE_ACK, &[0])),
        Ok(Message::WriteAck {
            status: WireStatus::Ok
        })
    );
    assert_eq!(
        Message::parse(&raw(kind::WRITE_ACK, &[1])),
        Ok(Message::WriteAck {
            status: WireStatus::GeneralProtection
        })
    );
}

#[test]
fn bad_nak_reason_bytes_are_rejected() {
    for b in (0..=u8::MAX).filter(|b| !(1..=8).contains(b)) {
        let nak = raw(kind::NAK, &[b]);
        assert_eq!(Message::parse(&nak), Err(ParseError::BadReason(b)));
    }
    let reasons = [
        (1, NakReason::BadSession),
        (2, NakReason::UnsupportedVersion),
        (3, NakReason::UnknownType),
        (4, NakReason::BadPayload),
        (5, NakReason::OutOfSequence),
        (6, NakReason::SessionTakenOver),
        (7, NakReason::AuthRequired),
        (8, NakReason::AuthUnavailable),
    ];
    for (b, reason) in reasons {
        assert_eq!(
            Message::parse(&raw(kind::NAK, &[b])),
            Ok(Message::Nak { reason })
        );
    }
}

#[test]
fn length_is_checked_before_content() {
    // A WriteAck of the wrong length with a bad status byte is a length
    // error, not a status error.
    assert_eq!(
        Message::parse(&raw(kind::WRITE_ACK, &[9, 9])),
        Err(ParseError::BadLength {
            kind: kind::WRITE_ACK,
            len: 2
        })
    );
    assert_eq!(
        Message::parse(&raw(kind::NAK, &[])),
        Err(ParseError::BadLength {
            kind: kind::NAK,
            len: 0
        })
    );
}

#[test]
fn read_ack_value_is_carried_even_with_gp_status() {
    // The layer below the engine does not interpret the value; it must round
    // trip whatever the debuggee sent.
    let msg = Message::ReadAck {
        status: WireStatus::GeneralProtection,
        value: 0x0123_4567_89ab_cdef,
    };
    let (frames, _) = decode(&frame_bytes(&msg, 5, 6));
    assert_eq!(Message::parse(&frames[0]), Ok(msg));
}

// ---------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------

fn any_status() -> impl Strategy<Value = WireStatus> {
    prop_oneof![Just(WireStatus::Ok), Just(WireStatus::GeneralProtection)]
}

fn any_reason() -> impl Strategy<Value = NakReason> {
    prop_oneof![
        Just(NakReason::BadSession),
        Just(NakReason::UnsupportedVersion),
        Just(NakReason::UnknownType),
        Just(NakReason::BadPayload),
    ]
}

fn any_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (any::<u8>(), any::<u32>()).prop_map(|(version, nonce)| Message::Hello { version, nonce }),
        (any::<u8>(), any::<u32>(), any::<u8>()).prop_map(|(version, capabilities, window)| {
            Message::HelloAck {
                version,
                capabilities,
                window,
            }
        }),
        (any::<u32>(), any::<u64>()).prop_map(|(msr, value)| Message::WriteMsr {
            cpu: 0,
            msr,
            value
        }),
        any_status().prop_map(|status| Message::WriteAck { status }),
        any::<u32>().prop_map(|msr| Message::ReadMsr { cpu: 0, msr }),
        (any_status(), any::<u64>()).prop_map(|(status, value)| Message::ReadAck { status, value }),
        any_reason().prop_map(|reason| Message::Nak { reason }),
    ]
}

fn any_frame() -> impl Strategy<Value = Vec<u8>> {
    (any_message(), any::<u8>(), any::<u16>())
        .prop_map(|(m, session, seq)| frame_bytes(&m, session, seq))
}

/// One piece of a byte soup: noise, a valid frame, or a damaged frame.
fn soup_piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..24),
        // Noise rich in start markers and small lengths.
        2 => proptest::collection::vec(
            prop_oneof![Just(SOF), 0..=(MAX_PAYLOAD as u8 + 2), any::<u8>()],
            0..24
        ),
        3 => any_frame(),
        // A truncated frame.
        2 => (any_frame(), any::<prop::sample::Index>())
            .prop_map(|(f, i)| f[..i.index(f.len())].to_vec()),
        // A frame with one byte changed.
        2 => (any_frame(), any::<prop::sample::Index>(), 1..=u8::MAX).prop_map(|(mut f, i, x)| {
            let at = i.index(f.len());
            f[at] ^= x;
            f
        }),
    ]
}

fn byte_soup() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..600),
        proptest::collection::vec(soup_piece(), 0..24).prop_map(|v| v.concat()),
    ]
}

/// Where `needle` occurs in `hay` at or after `from`.
fn find_from(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.len() > hay.len() {
        return None;
    }
    (from..=hay.len() - needle.len()).find(|&i| &hay[i..i + needle.len()] == needle)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (a) Arbitrary input never panics; every emitted frame re-encodes to
    /// bytes that appear in the input, in order and without overlap; every
    /// input byte is accounted for as skipped, part of a frame, or pending;
    /// and the chunking does not matter.
    #[test]
    fn byte_soup_never_panics_and_frames_come_from_the_input(
        soup in byte_soup(),
        cuts in proptest::collection::vec(0usize..64, 0..32),
    ) {
        let mut dec = Decoder::new();
        let mut frames = Vec::new();
        dec.feed(&soup, |f| frames.push(f));
        let st = dec.stats();

        let mut from = 0;
        let mut frame_bytes_total = 0;
        for f in &frames {
            prop_assert!(usize::from(f.len) <= MAX_PAYLOAD);
            let bytes = reencode(f);
            prop_assert_eq!(bytes[bytes.len() - 2..].to_vec(), f.crc.to_le_bytes().to_vec());
            let at = find_from(&soup, &bytes, from);
            prop_assert!(at.is_some(), "frame {:02x?} not in the input after {}", bytes, from);
            from = at.unwrap() + bytes.len();
            frame_bytes_total += bytes.len();
        }
        prop_assert_eq!(st.frames, frames.len() as u64);
        prop_assert_eq!(
            st.skipped_bytes as usize + frame_bytes_total + dec.pending(),
            soup.len()
        );
        prop_assert!(dec.pending() < MAX_FRAME);

        let (chunked, chunked_stats, pending) = decode_chunked(&soup, &cuts);
        prop_assert_eq!(chunked, frames);
        prop_assert_eq!(chunked_stats, st);
        prop_assert_eq!(pending, dec.pending());
    }

    /// (b) A message between garbage that holds no start marker comes out
    /// exactly once and unchanged, however the stream is chunked.
    #[test]
    fn a_message_between_marker_free_garbage_is_found(
        msg in any_message(),
        session in any::<u8>(),
        seq in any::<u16>(),
        before in proptest::collection::vec(any::<u8>().prop_filter("no SOF", |b| *b != SOF), 0..100),
        after in proptest::collection::vec(any::<u8>().prop_filter("no SOF", |b| *b != SOF), 0..100),
        cuts in proptest::collection::vec(0usize..16, 0..16),
    ) {
        let mut bytes = before.clone();
        bytes.extend_from_slice(&frame_bytes(&msg, session, seq));
        bytes.extend_from_slice(&after);
        let (frames, st, pending) = decode_chunked(&bytes, &cuts);
        prop_assert_eq!(frames.len(), 1);
        prop_assert_eq!(frames[0].session, session);
        prop_assert_eq!(frames[0].seq, seq);
        prop_assert_eq!(Message::parse(&frames[0]), Ok(msg));
        prop_assert_eq!(st, stats(1, (before.len() + after.len()) as u64, 0, 0));
        prop_assert_eq!(pending, 0);
    }

    /// Every message survives encode -> decode -> parse.
    #[test]
    fn any_message_round_trips(msg in any_message(), session in any::<u8>(), seq in any::<u16>()) {
        let bytes = frame_bytes(&msg, session, seq);
        let (frames, st) = decode(&bytes);
        prop_assert_eq!(frames.len(), 1);
        prop_assert_eq!(Message::parse(&frames[0]), Ok(msg));
        prop_assert_eq!(reencode(&frames[0]), bytes);
        prop_assert_eq!(st, stats(1, 0, 0, 0));
    }

    /// Parsing any CRC-valid frame never panics, and whatever parses
    /// re-encodes to the same frame.
    #[test]
    fn parse_is_total_and_canonical(
        k in any::<u8>(),
        payload in proptest::collection::vec(any::<u8>(), 0..=MAX_PAYLOAD),
    ) {
        let f = raw(k, &payload);
        if let Ok(msg) = Message::parse(&f) {
            prop_assert_eq!(msg.kind(), k);
            prop_assert_eq!(frame_bytes(&msg, f.session, f.seq), reencode(&f));
        }
    }
}

#[test]
fn resync_releases_a_frame_held_behind_a_stray_start_marker() {
    use pulse_proto::message::Message;
    let frame = Message::WriteAck {
        status: pulse_proto::WireStatus::Ok,
    }
    .to_frame(1, 7);
    let mut decoder = pulse_proto::Decoder::new();
    let mut got = Vec::new();
    // `a5 0c` promises a 12-byte payload: the 9-byte frame after it is held.
    decoder.feed(&[0xA5, 0x0C], |f| got.push(f));
    decoder.feed(frame.as_bytes(), |f| got.push(f));
    assert!(got.is_empty());
    decoder.resync(|f| got.push(f));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].seq, 7);
    assert_eq!(decoder.pending(), 0);
    // Nothing held: resync is a no-op.
    decoder.resync(|f| got.push(f));
    assert_eq!(got.len(), 1);
}
