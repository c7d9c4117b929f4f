//! Keeps `docs/PROTOCOL.md` honest: every table and hex vector in it that
//! is marked `<!-- check: NAME -->` is parsed here and compared with what
//! the code does, so the document cannot go stale.

use std::collections::{BTreeMap, BTreeSet};

use pulse_proto::auth::Direction;
use pulse_proto::frame::{CRC16, HEADER_LEN, SOF, TRAILER_LEN};
use pulse_proto::message::{caps, kind};
use pulse_proto::{
    encode_frame, Decoder, DecoderStats, Message, NakReason, ParseError, Psk, RawFrame,
    SessionKeys, WireStatus, MAX_FRAME, MAX_PAYLOAD,
};

const DOC: &str = include_str!("../../docs/PROTOCOL.md");

// ---------------------------------------------------------------------------
// Reading the document
// ---------------------------------------------------------------------------

/// The lines right after the one `<!-- check: NAME -->` marker.
fn after_marker(name: &str) -> Vec<&'static str> {
    let marker = format!("<!-- check: {name} -->");
    let mut lines = DOC.lines();
    let mut found = 0;
    let mut rest = Vec::new();
    while let Some(line) = lines.next() {
        if line.trim() == marker {
            found += 1;
            rest = lines.clone().collect();
        }
    }
    assert_eq!(
        found, 1,
        "marker {marker:?} must occur exactly once in PROTOCOL.md"
    );
    rest
}

/// The names of all markers of the form `<!-- check: PREFIX... -->`.
fn markers_with_prefix(prefix: &str) -> Vec<String> {
    DOC.lines()
        .filter_map(|l| l.trim().strip_prefix("<!-- check: "))
        .filter_map(|l| l.strip_suffix(" -->"))
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

fn cells(line: &str) -> Vec<String> {
    let inner = line
        .trim()
        .strip_prefix('|')
        .and_then(|l| l.strip_suffix('|'))
        .unwrap_or_else(|| panic!("not a table row: {line:?}"));
    inner.split('|').map(|c| c.trim().to_owned()).collect()
}

/// The data rows of the table that follows the marker, each with exactly
/// `columns` cells (header and separator rows are checked and skipped).
fn table(name: &str, columns: usize) -> Vec<Vec<String>> {
    let lines: Vec<&str> = after_marker(name)
        .into_iter()
        .take_while(|l| l.trim_start().starts_with('|'))
        .collect();
    assert!(
        lines.len() >= 3,
        "table {name}: header, separator and rows expected"
    );
    assert_eq!(cells(lines[0]).len(), columns, "table {name}: header");
    assert!(
        cells(lines[1])
            .iter()
            .all(|c| !c.is_empty() && c.chars().all(|ch| ch == '-' || ch == ':')),
        "table {name}: second line must be the separator"
    );
    lines[2..]
        .iter()
        .map(|l| {
            let row = cells(l);
            assert_eq!(row.len(), columns, "table {name}: row {l:?}");
            row
        })
        .collect()
}

/// The lines inside the ```text block that follows the marker.
fn text_block(name: &str) -> Vec<&'static str> {
    let mut lines = after_marker(name).into_iter();
    assert_eq!(lines.next().map(str::trim), Some("```text"), "block {name}");
    let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
    assert!(!body.is_empty(), "block {name} is empty");
    body
}

fn unquote(cell: &str) -> &str {
    cell.trim().trim_matches('`')
}

/// `0x1_0000_0010`, `0x1021`, `372`: hex with a 0x prefix or decimal,
/// underscores allowed.
fn int(text: &str) -> u64 {
    let t: String = unquote(text).chars().filter(|&c| c != '_').collect();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => t.parse(),
    };
    parsed.unwrap_or_else(|e| panic!("not a number: {text:?} ({e})"))
}

fn first_word(cell: &str) -> &str {
    cell.split_whitespace()
        .next()
        .map(|w| w.trim_matches(|c| c == '`' || c == ',' || c == ';'))
        .unwrap_or("")
}

fn hex_bytes(text: &str) -> Vec<u8> {
    let t = unquote(text);
    assert!(
        !t.is_empty()
            && t.len() % 2 == 0
            && t.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "a vector is one lowercase hex string: {text:?}"
    );
    (0..t.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&t[i..i + 2], 16).unwrap())
        .collect()
}

/// `a + b + c = d` (checked) or `d`.
fn count(cell: &str) -> u64 {
    match cell.split_once('=') {
        Some((terms, total)) => {
            let total = int(total.trim());
            let sum: u64 = terms.split('+').map(|t| int(t.trim())).sum();
            assert_eq!(sum, total, "arithmetic in {cell:?}");
            total
        }
        None => int(first_word(cell)),
    }
}

fn wire_status_named(name: &str) -> WireStatus {
    [
        WireStatus::Ok,
        WireStatus::GeneralProtection,
        WireStatus::NoCpu,
        WireStatus::CpuInactive,
    ]
    .into_iter()
    .find(|s| format!("{s:?}") == name)
    .unwrap_or_else(|| panic!("no WireStatus named {name:?}"))
}

fn nak_reason_named(name: &str) -> NakReason {
    [
        NakReason::BadSession,
        NakReason::UnsupportedVersion,
        NakReason::UnknownType,
        NakReason::BadPayload,
        NakReason::OutOfSequence,
        NakReason::SessionTakenOver,
        NakReason::AuthRequired,
        NakReason::AuthUnavailable,
    ]
    .into_iter()
    .find(|r| format!("{r:?}") == name)
    .unwrap_or_else(|| panic!("no NakReason named {name:?}"))
}

/// Parses the message notation of the vector table, for example
/// `WriteMsr { msr: 0x174, value: 0x1_0000_0010 }`. Every field must be
/// given, and no other.
fn message(text: &str) -> Message {
    let text = unquote(text);
    let (name, body) = text
        .split_once('{')
        .unwrap_or_else(|| panic!("expected `Name {{ field: value, .. }}`: {text:?}"));
    let body = body
        .trim()
        .strip_suffix('}')
        .unwrap_or_else(|| panic!("missing closing brace: {text:?}"));
    let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
    for field in body.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let (k, v) = field
            .split_once(':')
            .unwrap_or_else(|| panic!("expected `field: value`: {field:?}"));
        assert!(
            fields.insert(k.trim(), v.trim()).is_none(),
            "field {k} twice in {text:?}"
        );
    }
    let mut take = |k: &str| -> &str {
        fields
            .remove(k)
            .unwrap_or_else(|| panic!("field {k} missing in {text:?}"))
    };
    let msg = match name.trim() {
        "Hello" => Message::Hello {
            version: u8::try_from(int(take("version"))).unwrap(),
            nonce: u32::try_from(int(take("nonce"))).unwrap(),
        },
        "HelloAck" => Message::HelloAck {
            version: u8::try_from(int(take("version"))).unwrap(),
            capabilities: u32::try_from(int(take("capabilities"))).unwrap(),
            window: u8::try_from(int(take("window"))).unwrap(),
        },
        "WriteMsr" => Message::WriteMsr {
            cpu: u8::try_from(int(take("cpu"))).unwrap(),
            msr: u32::try_from(int(take("msr"))).unwrap(),
            value: int(take("value")),
        },
        "WriteAck" => Message::WriteAck {
            status: wire_status_named(take("status")),
        },
        "ReadMsr" => Message::ReadMsr {
            cpu: u8::try_from(int(take("cpu"))).unwrap(),
            msr: u32::try_from(int(take("msr"))).unwrap(),
        },
        "CpuInfo" => Message::CpuInfo,
        "CpuInfoAck" => Message::CpuInfoAck {
            count: u8::try_from(int(take("count"))).unwrap(),
            running: int(take("running")),
        },
        "ReadAck" => Message::ReadAck {
            status: wire_status_named(take("status")),
            value: int(take("value")),
        },
        "Nak" => Message::Nak {
            reason: nak_reason_named(take("reason")),
        },
        "AuthHello" => Message::AuthHello {
            version: u8::try_from(int(take("version"))).unwrap(),
            nonce: nonce16(take("nonce")),
        },
        "AuthHelloAck" => Message::AuthHelloAck {
            nonce: nonce16(take("nonce")),
            version: u8::try_from(int(take("version"))).unwrap(),
            capabilities: u32::try_from(int(take("capabilities"))).unwrap(),
            window: u8::try_from(int(take("window"))).unwrap(),
        },
        other => panic!("unknown message {other:?}"),
    };
    assert!(fields.is_empty(), "unknown fields {fields:?} in {text:?}");
    msg
}

/// One message of each type, by name, for the type table.
fn sample(name: &str) -> Message {
    match name {
        "Hello" => Message::Hello {
            version: 1,
            nonce: 7,
        },
        "HelloAck" => Message::HelloAck {
            version: 1,
            capabilities: 0,
            window: 32,
        },
        "WriteMsr" => Message::WriteMsr {
            cpu: 0,
            msr: 1,
            value: 2,
        },
        "WriteAck" => Message::WriteAck {
            status: WireStatus::Ok,
        },
        "ReadMsr" => Message::ReadMsr { cpu: 0, msr: 1 },
        "CpuInfo" => Message::CpuInfo,
        "CpuInfoAck" => Message::CpuInfoAck {
            count: 4,
            running: 0xF,
        },
        "ReadAck" => Message::ReadAck {
            status: WireStatus::Ok,
            value: 2,
        },
        "Nak" => Message::Nak {
            reason: NakReason::BadSession,
        },
        "AuthHello" => Message::AuthHello {
            version: 3,
            nonce: [1; 16],
        },
        "AuthHelloAck" => Message::AuthHelloAck {
            nonce: [2; 16],
            version: 3,
            capabilities: 0,
            window: 32,
        },
        other => panic!("unknown message {other:?}"),
    }
}

/// 16 bytes written as 32 hex digits (a handshake nonce).
fn nonce16(text: &str) -> [u8; 16] {
    hex_bytes(text)
        .try_into()
        .unwrap_or_else(|_| panic!("a nonce is 16 bytes: {text:?}"))
}

fn decode_one(bytes: &[u8]) -> RawFrame {
    let mut dec = Decoder::new();
    let mut frames = Vec::new();
    dec.feed(bytes, |f| frames.push(f));
    assert_eq!(frames.len(), 1, "{bytes:02x?}");
    assert_eq!(
        dec.stats(),
        DecoderStats {
            frames: 1,
            ..DecoderStats::default()
        }
    );
    assert_eq!(dec.pending(), 0);
    frames[0]
}

fn raw(kind: u8, payload: &[u8]) -> RawFrame {
    decode_one(encode_frame(kind, 1, 1, payload).as_bytes())
}

struct Vector {
    session: u8,
    seq: u16,
    message: Message,
    bytes: Vec<u8>,
}

fn vectors() -> BTreeMap<String, Vector> {
    let mut out = BTreeMap::new();
    let rows = table("vectors", 5)
        .into_iter()
        .chain(table("window-vectors", 5));
    for row in rows {
        let name = unquote(&row[0]).to_owned();
        let v = Vector {
            session: u8::try_from(int(&row[1])).unwrap(),
            seq: u16::try_from(int(&row[2])).unwrap(),
            message: message(&row[3]),
            bytes: hex_bytes(&row[4]),
        };
        assert!(out.insert(name.clone(), v).is_none(), "vector {name} twice");
    }
    out
}

/// An independent, bit-by-bit implementation of the CRC exactly as the
/// document describes it.
fn crc_as_documented(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0xffff;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

// ---------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------

#[test]
fn crc_check_value() {
    assert_eq!(CRC16.checksum(b"123456789"), 0x29b1);
    assert_eq!(crc_as_documented(b"123456789"), 0x29b1);
    assert_eq!(CRC16.algorithm.check, 0x29b1);
}

#[test]
fn crc_matches_the_documented_algorithm_on_many_inputs() {
    let mut x: u32 = 1;
    for len in 0..200 {
        let data: Vec<u8> = (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        assert_eq!(CRC16.checksum(&data), crc_as_documented(&data), "len {len}");
    }
}

#[test]
fn crc_parameters_table() {
    let rows: BTreeMap<String, String> = table("crc-parameters", 2)
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    let get = |k: &str| {
        rows.get(k)
            .unwrap_or_else(|| panic!("crc table lacks {k:?}"))
            .as_str()
    };
    let yes_no = |k: &str| match first_word(get(k)) {
        "yes" => true,
        "no" => false,
        other => panic!("{k}: yes or no, not {other:?}"),
    };
    let alg = CRC16.algorithm;
    assert!(get("name").starts_with("CRC-16/IBM-3740"));
    assert_eq!(int(first_word(get("width"))), u64::from(alg.width));
    assert_eq!(int(first_word(get("polynomial"))), u64::from(alg.poly));
    assert_eq!(int(first_word(get("initial value"))), u64::from(alg.init));
    assert_eq!(yes_no("input reflected"), alg.refin);
    assert_eq!(yes_no("output reflected"), alg.refout);
    assert_eq!(int(first_word(get("final XOR"))), u64::from(alg.xorout));
    assert_eq!(int(first_word(get("check value"))), 0x29b1);
    assert_eq!(alg.check, 0x29b1);
    assert!(get("covered bytes").contains("`1 .. 6+LEN`"));
    assert!(get("stored as").contains("little endian"));
}

#[test]
fn frame_layout_table() {
    let rows = table("frame-layout", 4);
    let fields: Vec<&str> = rows.iter().map(|r| r[2].as_str()).collect();
    assert_eq!(
        fields,
        ["SOF", "LEN", "TYPE", "SESSION", "SEQ", "PAYLOAD", "CRC"]
    );
    // The fixed header: offsets follow from the sizes and end at HEADER_LEN.
    let mut at = 0;
    for row in &rows[..5] {
        assert_eq!(int(&row[0]), at, "offset of {}", row[2]);
        at += int(&row[1]);
    }
    assert_eq!(at, HEADER_LEN as u64);
    assert_eq!(rows[5][0], HEADER_LEN.to_string());
    assert_eq!(rows[5][1], "LEN");
    assert_eq!(rows[6][0], format!("{HEADER_LEN} + LEN"));
    assert_eq!(int(&rows[6][1]), TRAILER_LEN as u64);
    assert!(rows[0][3].contains(&format!("`0x{SOF:02X}`")));
    assert!(rows[1][3].contains(&format!("`0..={MAX_PAYLOAD}`")));
    assert!(DOC.contains(&format!("longest legal frame is {MAX_FRAME} bytes")));
}

#[test]
fn message_types_table() {
    let rows = table("message-types", 5);
    let mut names = BTreeSet::new();
    let mut kinds = BTreeSet::new();
    for row in &rows {
        let name = row[1].as_str();
        let msg = sample(name);
        let k = u8::try_from(int(&row[0])).unwrap();
        assert_eq!(msg.kind(), k, "{name}");
        let response = match row[2].as_str() {
            "client → debuggee" => false,
            "debuggee → client" => true,
            other => panic!("direction {other:?}"),
        };
        assert_eq!(msg.is_response(), response, "{name}");
        assert_eq!(response, k & kind::RESPONSE_BIT != 0, "{name}");
        let mut payload = [0u8; MAX_PAYLOAD];
        assert_eq!(
            msg.encode_payload(&mut payload) as u64,
            int(&row[4]),
            "{name}"
        );
        assert!(names.insert(name.to_owned()), "{name} twice");
        kinds.insert(k);
    }
    assert_eq!(names.len(), 11, "every message type is in the table");
    // Every TYPE outside the table is rejected.
    for k in (0..=u8::MAX).filter(|k| !kinds.contains(k)) {
        assert_eq!(
            Message::parse(&raw(k, &[0; 5])),
            Err(ParseError::UnknownType(k))
        );
    }
}

#[test]
fn wire_status_table() {
    let mut listed = BTreeSet::new();
    for row in table("wire-status", 3) {
        let value = u8::try_from(int(&row[0])).unwrap();
        let status = wire_status_named(&row[1]);
        assert_eq!(status as u8, value, "{}", row[1]);
        assert_eq!(
            Message::parse(&raw(kind::WRITE_ACK, &[value])),
            Ok(Message::WriteAck { status })
        );
        listed.insert(value);
    }
    assert_eq!(listed.len(), 4);
    for b in (0..=u8::MAX).filter(|b| !listed.contains(b)) {
        assert_eq!(
            Message::parse(&raw(kind::WRITE_ACK, &[b])),
            Err(ParseError::BadStatus(b))
        );
    }
}

#[test]
fn nak_reason_table() {
    let mut listed = BTreeSet::new();
    for row in table("nak-reason", 3) {
        let value = u8::try_from(int(&row[0])).unwrap();
        let reason = nak_reason_named(&row[1]);
        assert_eq!(reason as u8, value, "{}", row[1]);
        assert_eq!(
            Message::parse(&raw(kind::NAK, &[value])),
            Ok(Message::Nak { reason })
        );
        listed.insert(value);
    }
    assert_eq!(listed.len(), 8);
    for b in (0..=u8::MAX).filter(|b| !listed.contains(b)) {
        assert_eq!(
            Message::parse(&raw(kind::NAK, &[b])),
            Err(ParseError::BadReason(b))
        );
    }
}

#[test]
fn capabilities_table() {
    let known = [
        ("REAL_VMX", caps::REAL_VMX),
        ("SOFTWARE_MODEL", caps::SOFTWARE_MODEL),
        ("GUEST_OBSERVER", caps::GUEST_OBSERVER),
    ];
    let rows = table("capabilities", 4);
    let documented: BTreeSet<&str> = rows.iter().map(|r| r[2].as_str()).collect();
    let defined: BTreeSet<&str> = known.iter().map(|(n, _)| *n).collect();
    assert_eq!(documented, defined);
    for row in &rows {
        let bit = int(&row[0]);
        let mask = int(&row[1]);
        assert_eq!(mask, 1 << bit, "{}", row[2]);
        let (_, value) = known.iter().find(|(n, _)| *n == row[2]).unwrap();
        assert_eq!(u64::from(*value), mask, "{}", row[2]);
    }
}

#[test]
fn vectors_in_the_doc_match_the_encoder() {
    let vectors = vectors();
    for required in [
        "hello",
        "hello_ack",
        "write_msr",
        "write_ack_ok",
        "write_ack_gp",
        "read_msr",
        "read_ack",
        "nak_bad_session",
        "nak_out_of_sequence",
        "nak_session_taken_over",
    ] {
        assert!(vectors.contains_key(required), "vector {required} missing");
    }
    for (name, v) in &vectors {
        let encoded = v.message.to_frame(v.session, v.seq);
        assert_eq!(
            encoded.as_bytes(),
            &v.bytes[..],
            "vector {name}: the code encodes {:?} as {encoded:?}",
            v.message
        );
        // And the other way: the bytes decode to the message named.
        let f = decode_one(&v.bytes);
        assert_eq!(f.session, v.session, "{name}");
        assert_eq!(f.seq, v.seq, "{name}");
        assert_eq!(Message::parse(&f), Ok(v.message), "{name}");
        // The CRC in the vector is the documented CRC of bytes 1..6+LEN.
        let end = v.bytes.len() - TRAILER_LEN;
        let crc = u16::from_le_bytes([v.bytes[end], v.bytes[end + 1]]);
        assert_eq!(crc, crc_as_documented(&v.bytes[1..end]), "{name}");
    }
}

#[test]
fn vectors_follow_the_session_rules() {
    let v = vectors();
    // The handshake travels with session 0; everything else in the
    // session with the session the HelloAck assigned.
    assert_eq!(v["hello"].session, pulse_proto::NO_SESSION);
    let session = v["hello_ack"].session;
    assert_ne!(session, pulse_proto::NO_SESSION);
    assert_eq!(v["hello_ack"].seq, v["hello"].seq);
    // The example the brief of this document asked for.
    assert_eq!(v["write_msr"].seq, 0x1234);
    assert_eq!(
        v["write_msr"].message,
        Message::WriteMsr {
            cpu: 0,
            msr: 0x174,
            value: 0x1_0000_0010
        }
    );
    // Responses echo their request's session and seq.
    assert_eq!(v["write_ack_ok"].seq, v["write_msr"].seq);
    assert_eq!(v["read_ack"].seq, v["read_msr"].seq);
    for name in ["write_msr", "write_ack_ok", "read_msr", "read_ack"] {
        assert_eq!(v[name].session, session, "{name}");
    }
    // The first request follows the Hello's seq.
    assert_eq!(v["write_msr"].seq, v["hello"].seq.wrapping_add(1));
    assert_eq!(
        v["write_ack_gp"].message,
        Message::WriteAck {
            status: WireStatus::GeneralProtection
        }
    );
    assert_eq!(
        v["nak_bad_session"].message,
        Message::Nak {
            reason: NakReason::BadSession
        }
    );
}

#[test]
fn window_vectors_follow_the_window_rules() {
    let v = vectors();
    let base = v["hello"].seq;
    let session = v["hello_ack"].session;
    let window = match v["hello_ack"].message {
        Message::HelloAck { window, .. } => u16::from(window),
        other => panic!("{other:?}"),
    };
    for (k, name) in [(8u16, "8"), (9, "9"), (10, "10"), (8 + window + 3, "43")] {
        let write = &v[&format!("window_write_{name}")];
        assert_eq!(
            write.seq,
            base.wrapping_add(k),
            "request {name} is at k = {k}"
        );
        assert_eq!(write.session, session);
    }
    for name in ["8", "9", "10"] {
        let (write, ack) = (
            &v[&format!("window_write_{name}")],
            &v[&format!("window_ack_{name}")],
        );
        assert_eq!((ack.session, ack.seq), (write.session, write.seq), "{name}");
        assert_eq!(
            ack.message,
            Message::WriteAck {
                status: WireStatus::Ok
            }
        );
    }
    // 43 is exactly N + W with N = 11 after request 10 ran: beyond.
    let nak = &v["window_nak_43"];
    assert_eq!(nak.seq, v["window_write_43"].seq);
    assert_eq!(
        nak.message,
        Message::Nak {
            reason: NakReason::OutOfSequence
        }
    );
    assert_eq!(v["window_write_43"].seq.wrapping_sub(base), 11 + window);
}

#[test]
fn breakdowns_match_their_vectors() {
    let vectors = vectors();
    let names = markers_with_prefix("breakdown ");
    assert!(!names.is_empty());
    for marker in names {
        let vector = marker.strip_prefix("breakdown ").unwrap();
        let expect = &vectors
            .get(vector)
            .unwrap_or_else(|| panic!("breakdown of unknown vector {vector}"))
            .bytes;
        let lines = text_block(&marker);
        assert!(lines[0].starts_with("offset"), "{marker}: header line");
        let mut bytes = Vec::new();
        for line in &lines[1..] {
            let mut words = line.split_whitespace();
            let offset = int(words.next().unwrap());
            assert_eq!(offset, bytes.len() as u64, "{marker}: {line:?}");
            let before = bytes.len();
            for w in words {
                let is_byte = w.len() == 2 && w.chars().all(|c| c.is_ascii_hexdigit());
                if !is_byte {
                    break;
                }
                bytes.push(u8::from_str_radix(w, 16).unwrap());
            }
            assert!(bytes.len() > before, "{marker}: no bytes in {line:?}");
        }
        assert_eq!(&bytes, expect, "{marker}");
    }
}

#[test]
fn size_of_a_write_round_trip() {
    let rows = table("size-pulse", 2);
    assert_eq!(rows.len(), 3);
    let request = Message::WriteMsr {
        cpu: 0,
        msr: u32::MAX,
        value: u64::MAX,
    }
    .to_frame(1, 1);
    let response = Message::WriteAck {
        status: WireStatus::Ok,
    }
    .to_frame(1, 1);
    assert!(rows[0][0].starts_with("WriteMsr"));
    assert_eq!(count(&rows[0][1]), request.as_bytes().len() as u64);
    assert!(rows[1][0].starts_with("WriteAck"));
    assert_eq!(count(&rows[1][1]), response.as_bytes().len() as u64);
    assert_eq!(rows[2][0], "total");
    // 29 bytes before the CPU index joined the requests (issue 10 allows 32).
    assert_eq!(count(&rows[2][1]), 30);
    assert_eq!(
        count(&rows[2][1]),
        (request.as_bytes().len() + response.as_bytes().len()) as u64
    );
}

/// GDB remote protocol packets: `$data#cc` with `cc` the modulo-256 sum.
fn check_gdb_packet(p: &str) {
    if p == "+" {
        return;
    }
    let body = p
        .strip_prefix('$')
        .and_then(|b| b.split_once('#'))
        .unwrap_or_else(|| panic!("not a GDB packet: {p:?}"));
    let sum = body.0.bytes().fold(0u8, |a, b| a.wrapping_add(b));
    assert_eq!(body.1, format!("{sum:02x}"), "checksum of {p:?}");
}

#[test]
fn size_of_gdb_and_kd_round_trips() {
    let gdb = table("size-gdb", 3);
    let (total_row, packets) = gdb.split_last().unwrap();
    let mut sum = 0;
    for row in packets {
        let p = unquote(&row[1]);
        check_gdb_packet(p);
        assert_eq!(count(&row[2]), p.len() as u64, "{p}");
        sum += p.len() as u64;
    }
    assert_eq!(total_row[0], "total");
    assert_eq!(count(&total_row[2]), sum);
    assert_eq!(sum, 32);

    let kd = table("size-kd", 3);
    let (total_row, packets) = kd.split_last().unwrap();
    let sum: u64 = packets.iter().map(|r| count(&r[2])).sum();
    assert_eq!(total_row[0], "total");
    assert_eq!(count(&total_row[2]), sum);
    assert_eq!(sum, 178);

    let summary = table("size-summary", 2);
    let lead = |i: usize| int(first_word(&summary[i][1]));
    assert!(summary[0][0].starts_with("libpulse"));
    assert_eq!(lead(0), 30);
    assert!(summary[1][0].starts_with("GDB"));
    assert_eq!(lead(1), 32);
    assert!(summary[2][0].contains("KD"));
    assert_eq!(lead(2), 178);
}

// ---------------------------------------------------------------------------
// Section 9: the authenticated link
// ---------------------------------------------------------------------------

/// The `auth-inputs` table: name -> hex.
fn auth_inputs() -> BTreeMap<String, Vec<u8>> {
    table("auth-inputs", 3)
        .into_iter()
        .filter(|row| unquote(&row[0]) != "info")
        .map(|row| (unquote(&row[0]).to_owned(), hex_bytes(&row[1])))
        .collect()
}

fn documented_keys() -> (Psk, [u8; 16], [u8; 16], SessionKeys) {
    let inputs = auth_inputs();
    let key = Psk::new(inputs["key"].clone().try_into().unwrap());
    let client = nonce16(&hex_string(&inputs["client_nonce"]));
    let debuggee = nonce16(&hex_string(&inputs["debuggee_nonce"]));
    (
        key,
        client,
        debuggee,
        SessionKeys::derive(&key, &client, &debuggee),
    )
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_documented_session_keys_are_hkdf_sha256_of_the_inputs() {
    // Computed here straight from the hkdf crate, as the document says,
    // not through pulse_proto.
    let inputs = auth_inputs();
    let mut salt = inputs["client_nonce"].clone();
    salt.extend_from_slice(&inputs["debuggee_nonce"]);
    let kdf = hkdf::Hkdf::<sha2::Sha256>::new(Some(&salt), &inputs["key"]);
    let mut okm = [0u8; 32];
    let info = unquote(
        &table("auth-inputs", 3)
            .into_iter()
            .find(|r| r[0] == "`info`")
            .expect("an info row")[1],
    )
    .to_owned();
    assert_eq!(info.as_bytes(), pulse_proto::auth::KDF_INFO);
    kdf.expand(info.as_bytes(), &mut okm).unwrap();
    assert_eq!(
        &okm[..16],
        &inputs["key_to_debuggee"][..],
        "the code derives {}",
        hex_string(&okm[..16])
    );
    assert_eq!(
        &okm[16..],
        &inputs["key_to_client"][..],
        "the code derives {}",
        hex_string(&okm[16..])
    );
}

#[test]
fn sealed_vectors_match_the_code_and_an_independent_ccm() {
    use ccm::aead::generic_array::GenericArray;
    use ccm::aead::{AeadInPlace, KeyInit};
    type Ccm8 = ccm::Ccm<aes::Aes128, ccm::consts::U8, ccm::consts::U13>;
    let inputs = auth_inputs();
    let (_, _, _, keys) = documented_keys();
    let rows = table("sealed-vectors", 7);
    assert!(rows.len() >= 5);
    for row in rows {
        let name = unquote(&row[0]);
        let direction = match row[1].as_str() {
            "client → debuggee" => Direction::ToDebuggee,
            "debuggee → client" => Direction::ToClient,
            other => panic!("direction {other:?}"),
        };
        let session = u8::try_from(int(&row[2])).unwrap();
        let seq = u16::try_from(int(&row[3])).unwrap();
        let k = u16::try_from(int(&row[4])).unwrap();
        let msg = message(&row[5]);
        let bytes = hex_bytes(&row[6]);
        let sealed = keys.seal(direction, &msg, session, seq, k);
        assert_eq!(
            sealed.as_bytes(),
            &bytes[..],
            "{name}: the code seals {msg:?} as {sealed:?}"
        );
        let opened = keys
            .open(direction, &decode_one(&bytes), k)
            .unwrap_or_else(|| panic!("{name} does not open"));
        assert_eq!(Message::parse(&opened), Ok(msg), "{name}");
        // The same bytes from the ccm crate directly, with the documented
        // key, nonce and associated data.
        let key = match direction {
            Direction::ToDebuggee => &inputs["key_to_debuggee"],
            Direction::ToClient => &inputs["key_to_client"],
        };
        let mut nonce = [0u8; 13];
        nonce[0] = direction as u8;
        nonce[1..3].copy_from_slice(&k.to_le_bytes());
        let mut payload = [0u8; MAX_PAYLOAD];
        let len = msg.encode_payload(&mut payload);
        let clear = if msg.kind() == kind::AUTH_HELLO_ACK {
            16
        } else {
            0
        };
        let mut aad = bytes[1..HEADER_LEN].to_vec();
        aad.extend_from_slice(&payload[..clear]);
        let tag = Ccm8::new(GenericArray::from_slice(key))
            .encrypt_in_place_detached(
                GenericArray::from_slice(&nonce),
                &aad,
                &mut payload[clear..len],
            )
            .unwrap();
        let mut expect = payload[..len].to_vec();
        expect.extend_from_slice(&tag);
        assert_eq!(
            &bytes[HEADER_LEN..bytes.len() - TRAILER_LEN],
            &expect[..],
            "{name}"
        );
        let end = bytes.len() - TRAILER_LEN;
        let crc = u16::from_le_bytes([bytes[end], bytes[end + 1]]);
        assert_eq!(crc, crc_as_documented(&bytes[1..end]), "{name}");
    }
}

#[test]
fn size_of_an_authenticated_write_round_trip() {
    let (_, _, _, keys) = documented_keys();
    let rows = table("size-pulse-auth", 2);
    let write = Message::WriteMsr {
        cpu: 0,
        msr: 0x174,
        value: 1,
    };
    let ack = Message::WriteAck {
        status: WireStatus::Ok,
    };
    let request = keys
        .seal(Direction::ToDebuggee, &write, 1, 1, 1)
        .as_bytes()
        .len() as u64;
    let response = keys
        .seal(Direction::ToClient, &ack, 1, 1, 1)
        .as_bytes()
        .len() as u64;
    assert_eq!(count(&rows[0][1]), request);
    assert_eq!(count(&rows[1][1]), response);
    assert_eq!(count(&rows[2][1]), request + response);
    assert!(request + response <= 48, "the issue's bound");
}
