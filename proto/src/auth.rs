//! The authenticated link (docs/PROTOCOL.md section 9, docs/SECURITY.md):
//! a 32-byte pre-shared key, per-session keys derived from it and fresh
//! nonces of both ends with HKDF-SHA256, and every frame of a session
//! sealed with AES-128-CCM and an 8-byte tag (CCM-8, RFC 6655).
//!
//! The frame layout does not change: a sealed frame is an ordinary frame
//! whose payload is `clear prefix || ciphertext || tag`. The header (LEN,
//! TYPE, SESSION, SEQ) and the clear prefix are authenticated as associated
//! data; the CRC stays, so the stream decoder resynchronises as before.
//! Only the AuthHelloAck has a clear prefix (the debuggee's nonce, which
//! the client needs to derive the keys that open the rest).
//!
//! The CCM nonce is `direction || k` with `k` the request's position in
//! its session (section 5.1): every position is used for one request and
//! its one answer, and every session has keys of its own, so a nonce never
//! seals two different messages under one key.

use aes::Aes128;
use ccm::aead::generic_array::GenericArray;
use ccm::aead::{AeadInPlace, KeyInit};
use ccm::consts::{U13, U8};
use ccm::Ccm;
use hkdf::Hkdf;
use sha2::{Digest, Sha256};

use crate::frame::{encode_frame, FrameBuf, RawFrame, HEADER_LEN, MAX_PAYLOAD};
use crate::message::{kind, Message};

/// Bytes of the pre-shared key.
pub const KEY_LEN: usize = 32;
/// Bytes of each end's handshake nonce.
pub const NONCE_LEN: usize = 16;
/// Bytes of the CCM tag on every sealed frame.
pub const TAG_LEN: usize = 8;
/// Bytes of each direction's session key (AES-128).
pub const SESSION_KEY_LEN: usize = 16;
/// HKDF `info`: names what the derived bytes are for, so that the key can
/// never yield the same bytes for another purpose.
pub const KDF_INFO: &[u8] = b"libpulse v3 session keys";

type Aes128Ccm8 = Ccm<Aes128, U8, U13>;
const CCM_NONCE_LEN: usize = 13;

/// A pre-shared key. Its `Debug` never shows the bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Psk([u8; KEY_LEN]);

impl core::fmt::Debug for Psk {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Psk(..)")
    }
}

/// Why a key file's text is not a key.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum KeyTextError {
    /// A character that is not a hex digit, at this byte offset.
    NotHex(usize),
    /// This many hex digits instead of 64.
    WrongLength(usize),
}

impl core::fmt::Display for KeyTextError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            KeyTextError::NotHex(at) => write!(
                f,
                "not a key: byte {at} is not a hex digit (a key file holds 64 hex digits and an optional newline)"
            ),
            KeyTextError::WrongLength(n) => write!(
                f,
                "not a key: {n} hex digits instead of 64 (a key file holds 64 hex digits and an optional newline)"
            ),
        }
    }
}

impl Psk {
    /// The key made of these 32 bytes, used as HKDF's input keying
    /// material as they are (docs/PROTOCOL.md section 9.1).
    pub const fn new(bytes: [u8; KEY_LEN]) -> Psk {
        Psk(bytes)
    }

    /// The key's 32 bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Parses a key file's contents: exactly 64 hex digits (either case),
    /// optionally followed by one newline (`\n` or `\r\n`). Nothing else.
    pub fn from_text(text: &[u8]) -> Result<Psk, KeyTextError> {
        let digits = text
            .strip_suffix(b"\r\n")
            .or_else(|| text.strip_suffix(b"\n"))
            .unwrap_or(text);
        if let Some(at) = digits.iter().position(|b| !b.is_ascii_hexdigit()) {
            return Err(KeyTextError::NotHex(at));
        }
        if digits.len() != 2 * KEY_LEN {
            return Err(KeyTextError::WrongLength(digits.len()));
        }
        let mut key = [0u8; KEY_LEN];
        for (byte, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
            *byte = hex_value(pair[0]) << 4 | hex_value(pair[1]);
        }
        Ok(Psk(key))
    }

    /// The key as a key file holds it: 64 lowercase hex digits, a newline.
    pub fn to_text(&self) -> [u8; 2 * KEY_LEN + 1] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = [b'\n'; 2 * KEY_LEN + 1];
        for (i, byte) in self.0.iter().enumerate() {
            text[2 * i] = DIGITS[usize::from(byte >> 4)];
            text[2 * i + 1] = DIGITS[usize::from(byte & 0xF)];
        }
        text
    }
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

/// Which way a frame travels; part of every CCM nonce, so the two
/// directions never share one.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Direction {
    /// Client to debuggee (requests): nonce byte `00`, key `K_to_debuggee`
    /// (docs/PROTOCOL.md section 9.2).
    ToDebuggee = 0,
    /// Debuggee to client (responses): nonce byte `01`, key `K_to_client`.
    ToClient = 1,
}

/// One session's keys, one per direction. Its `Debug` never shows them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SessionKeys {
    to_debuggee: [u8; SESSION_KEY_LEN],
    to_client: [u8; SESSION_KEY_LEN],
}

impl core::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SessionKeys(..)")
    }
}

impl SessionKeys {
    /// HKDF-SHA256 with the pre-shared key as input keying material, both
    /// nonces as salt (client's first) and [`KDF_INFO`]: 32 bytes, the
    /// first 16 for frames to the debuggee, the last 16 for frames to the
    /// client. Fresh nonces from either end give a session keys of its own.
    pub fn derive(
        psk: &Psk,
        client_nonce: &[u8; NONCE_LEN],
        debuggee_nonce: &[u8; NONCE_LEN],
    ) -> SessionKeys {
        let mut salt = [0u8; 2 * NONCE_LEN];
        salt[..NONCE_LEN].copy_from_slice(client_nonce);
        salt[NONCE_LEN..].copy_from_slice(debuggee_nonce);
        let kdf = Hkdf::<Sha256>::new(Some(&salt), psk.as_bytes());
        let mut okm = [0u8; 2 * SESSION_KEY_LEN];
        kdf.expand(KDF_INFO, &mut okm)
            .expect("32 bytes is far below HKDF-SHA256's limit");
        let mut keys = SessionKeys {
            to_debuggee: [0; SESSION_KEY_LEN],
            to_client: [0; SESSION_KEY_LEN],
        };
        keys.to_debuggee.copy_from_slice(&okm[..SESSION_KEY_LEN]);
        keys.to_client.copy_from_slice(&okm[SESSION_KEY_LEN..]);
        keys
    }

    /// The keys with their AES key schedules done, for a party that seals
    /// and opens many frames of one session.
    pub fn expand(&self) -> ExpandedKeys {
        ExpandedKeys {
            to_debuggee: Aes128Ccm8::new(GenericArray::from_slice(&self.to_debuggee)),
            to_client: Aes128Ccm8::new(GenericArray::from_slice(&self.to_client)),
        }
    }

    /// `message` as a sealed frame at position `k` of the session.
    pub fn seal(
        &self,
        direction: Direction,
        message: &Message,
        session: u8,
        seq: u16,
        k: u16,
    ) -> FrameBuf {
        self.expand().seal(direction, message, session, seq, k)
    }

    /// Checks and decrypts a sealed frame taken as position `k` of the
    /// session: the frame with its plaintext payload (tag removed, CRC as
    /// received), or `None` if it is not exactly what this session's peer
    /// sealed for that position.
    pub fn open(&self, direction: Direction, frame: &RawFrame, k: u16) -> Option<RawFrame> {
        self.expand().open(direction, frame, k)
    }
}

/// [`SessionKeys`] ready to use: both directions' AES key schedules.
#[derive(Clone)]
pub struct ExpandedKeys {
    to_debuggee: Aes128Ccm8,
    to_client: Aes128Ccm8,
}

impl core::fmt::Debug for ExpandedKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ExpandedKeys(..)")
    }
}

impl ExpandedKeys {
    fn cipher(&self, direction: Direction) -> &Aes128Ccm8 {
        match direction {
            Direction::ToDebuggee => &self.to_debuggee,
            Direction::ToClient => &self.to_client,
        }
    }

    /// See [`SessionKeys::seal`].
    pub fn seal(
        &self,
        direction: Direction,
        message: &Message,
        session: u8,
        seq: u16,
        k: u16,
    ) -> FrameBuf {
        let mut payload = [0u8; MAX_PAYLOAD];
        let len = message.encode_payload(&mut payload);
        let clear = clear_prefix(message.kind());
        let sealed_len = len + TAG_LEN;
        let aad = associated_data(
            sealed_len as u8,
            message.kind(),
            session,
            seq,
            &payload[..clear],
        );
        let tag = self
            .cipher(direction)
            .encrypt_in_place_detached(
                &ccm_nonce(direction, k),
                aad.as_slice(),
                &mut payload[clear..len],
            )
            .expect("payloads are far below CCM's length limit");
        payload[len..sealed_len].copy_from_slice(&tag);
        encode_frame(message.kind(), session, seq, &payload[..sealed_len])
    }

    /// See [`SessionKeys::open`].
    pub fn open(&self, direction: Direction, frame: &RawFrame, k: u16) -> Option<RawFrame> {
        let clear = clear_prefix(frame.kind);
        let len = usize::from(frame.len);
        if len < clear + TAG_LEN {
            return None;
        }
        let body_end = len - TAG_LEN;
        let mut opened = *frame;
        let aad = associated_data(
            frame.len,
            frame.kind,
            frame.session,
            frame.seq,
            &frame.payload[..clear],
        );
        let tag = GenericArray::clone_from_slice(&frame.payload[body_end..len]);
        self.cipher(direction)
            .decrypt_in_place_detached(
                &ccm_nonce(direction, k),
                aad.as_slice(),
                &mut opened.payload[clear..body_end],
                &tag,
            )
            .ok()?;
        opened.payload[body_end..].fill(0);
        opened.len = body_end as u8;
        Some(opened)
    }
}

/// The debuggee's handshake nonces: SHA-256 over a pool that everything
/// stirred in so far determines, and a counter. Nonces never repeat while
/// the pool lives (the counter), and are unpredictable as long as the
/// entropy stirred in is (docs/SECURITY.md says what each debuggee uses).
#[derive(Clone, Copy)]
pub struct NonceSource {
    pool: [u8; 32],
    drawn: u64,
}

impl Default for NonceSource {
    fn default() -> Self {
        NonceSource::new()
    }
}

impl NonceSource {
    /// A source with an all-zero pool: stir entropy in before drawing
    /// nonces, or they are predictable.
    pub const fn new() -> NonceSource {
        NonceSource {
            pool: [0; 32],
            drawn: 0,
        }
    }

    /// Mixes `entropy` into the pool.
    pub fn stir(&mut self, entropy: &[u8]) {
        let mut hash = Sha256::new();
        hash.update(b"stir");
        hash.update(self.pool);
        hash.update(entropy);
        self.pool.copy_from_slice(&hash.finalize());
    }

    /// The next nonce.
    pub fn next_nonce(&mut self) -> [u8; NONCE_LEN] {
        self.drawn += 1;
        let mut hash = Sha256::new();
        hash.update(b"nonce");
        hash.update(self.pool);
        hash.update(self.drawn.to_le_bytes());
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&hash.finalize()[..NONCE_LEN]);
        nonce
    }
}

/// Bytes of a message's payload that travel in the clear (authenticated).
fn clear_prefix(message_kind: u8) -> usize {
    if message_kind == kind::AUTH_HELLO_ACK {
        NONCE_LEN
    } else {
        0
    }
}

fn ccm_nonce(direction: Direction, k: u16) -> GenericArray<u8, U13> {
    let mut nonce = [0u8; CCM_NONCE_LEN];
    nonce[0] = direction as u8;
    nonce[1..3].copy_from_slice(&k.to_le_bytes());
    GenericArray::clone_from_slice(&nonce)
}

/// The associated data: the frame header after SOF (LEN TYPE SESSION
/// SEQ), then the payload's clear prefix.
struct Aad {
    bytes: [u8; HEADER_LEN - 1 + NONCE_LEN],
    len: usize,
}

impl Aad {
    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

fn associated_data(len: u8, message_kind: u8, session: u8, seq: u16, clear: &[u8]) -> Aad {
    let mut bytes = [0u8; HEADER_LEN - 1 + NONCE_LEN];
    bytes[0] = len;
    bytes[1] = message_kind;
    bytes[2] = session;
    bytes[3..5].copy_from_slice(&seq.to_le_bytes());
    bytes[5..5 + clear.len()].copy_from_slice(clear);
    Aad {
        bytes,
        len: HEADER_LEN - 1 + clear.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::WireStatus;
    use crate::Decoder;

    const KEY: Psk = Psk::new([7; KEY_LEN]);

    fn keys() -> SessionKeys {
        SessionKeys::derive(&KEY, &[1; NONCE_LEN], &[2; NONCE_LEN])
    }

    fn decode(bytes: &[u8]) -> RawFrame {
        let mut decoder = Decoder::new();
        let mut out = None;
        decoder.feed(bytes, |f| out = Some(f));
        out.expect("a whole frame")
    }

    #[test]
    fn sealed_frames_open_only_as_sealed() {
        let write = Message::WriteMsr {
            cpu: 0,
            msr: 0x174,
            value: 0x1_0000_0010,
        };
        let frame = keys().seal(Direction::ToDebuggee, &write, 0x5a, 0x1234, 1);
        assert_eq!(frame.as_bytes().len(), 6 + 13 + TAG_LEN + 2);
        let raw = decode(frame.as_bytes());
        let opened = keys().open(Direction::ToDebuggee, &raw, 1).expect("opens");
        assert_eq!(Message::parse(&opened), Ok(write));
        // Another position, direction, session key or key: refused.
        assert!(keys().open(Direction::ToDebuggee, &raw, 2).is_none());
        assert!(keys().open(Direction::ToClient, &raw, 1).is_none());
        let other = SessionKeys::derive(&KEY, &[1; NONCE_LEN], &[3; NONCE_LEN]);
        assert!(other.open(Direction::ToDebuggee, &raw, 1).is_none());
        let wrong = SessionKeys::derive(&Psk::new([8; KEY_LEN]), &[1; NONCE_LEN], &[2; NONCE_LEN]);
        assert!(wrong.open(Direction::ToDebuggee, &raw, 1).is_none());
    }

    #[test]
    fn every_bit_of_a_sealed_frame_is_authenticated() {
        let ack = Message::WriteAck {
            status: WireStatus::Ok,
        };
        let frame = keys().seal(Direction::ToClient, &ack, 0x5a, 0x1234, 1);
        let raw = decode(frame.as_bytes());
        // Header fields and every payload bit (the CRC is not a secret and
        // the decoder checks it before this layer sees the frame).
        for bit in 0..(usize::from(raw.len) * 8) {
            let mut bad = raw;
            bad.payload[bit / 8] ^= 1 << (bit % 8);
            assert!(
                keys().open(Direction::ToClient, &bad, 1).is_none(),
                "bit {bit}"
            );
        }
        let mut bad = raw;
        bad.session ^= 1;
        assert!(keys().open(Direction::ToClient, &bad, 1).is_none());
        let mut bad = raw;
        bad.seq ^= 1;
        assert!(keys().open(Direction::ToClient, &bad, 1).is_none());
        let mut bad = raw;
        bad.kind = kind::READ_ACK;
        assert!(keys().open(Direction::ToClient, &bad, 1).is_none());
        let mut short = raw;
        short.len = TAG_LEN as u8 - 1;
        assert!(keys().open(Direction::ToClient, &short, 1).is_none());
    }

    #[test]
    fn the_hello_ack_keeps_its_nonce_in_the_clear() {
        let ack = Message::AuthHelloAck {
            nonce: [0xAB; NONCE_LEN],
            version: 4,
            capabilities: 2,
            window: 32,
        };
        let frame = keys().seal(Direction::ToClient, &ack, 0x5a, 0x1233, 0);
        let bytes = frame.as_bytes();
        assert_eq!(bytes.len(), 6 + NONCE_LEN + 6 + TAG_LEN + 2);
        assert_eq!(&bytes[6..6 + NONCE_LEN], &[0xAB; NONCE_LEN]);
        let raw = decode(bytes);
        let opened = keys().open(Direction::ToClient, &raw, 0).expect("opens");
        assert_eq!(Message::parse(&opened), Ok(ack));
        let mut bad = raw;
        bad.payload[0] ^= 1;
        assert!(keys().open(Direction::ToClient, &bad, 0).is_none());
    }

    #[test]
    fn key_text() {
        let text = b"000102030405060708090a0b0c0d0e0f101112131415161718191A1B1C1D1E1F\n";
        let key = Psk::from_text(text).expect("a key");
        assert_eq!(key.as_bytes()[0x1f], 0x1f);
        assert_eq!(Psk::from_text(&text[..64]), Ok(key));
        assert_eq!(Psk::from_text(&key.to_text()), Ok(key));
        assert_eq!(Psk::from_text(b""), Err(KeyTextError::WrongLength(0)));
        assert_eq!(
            Psk::from_text(&text[..62]),
            Err(KeyTextError::WrongLength(62))
        );
        assert_eq!(Psk::from_text(b"0g"), Err(KeyTextError::NotHex(1)));
        assert!(Psk::from_text(b"00\n\n").is_err());
        assert!(Psk::from_text(b" 00").is_err());
        let mut long = [b'a'; 66];
        long[65] = b'\n';
        assert_eq!(Psk::from_text(&long), Err(KeyTextError::WrongLength(65)));
    }
}
