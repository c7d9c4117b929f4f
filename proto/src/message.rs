//! Typed messages and their payload layouts (all integers little endian).
//!
//! | type | message    | payload                                   | bytes |
//! |------|------------|-------------------------------------------|-------|
//! | 0x01 | Hello      | version u8, nonce u32                     | 5     |
//! | 0x81 | HelloAck   | version u8, capabilities u32, window u8   | 6     |
//! | 0x02 | WriteMsr   | cpu u8, msr u32, value u64                | 13    |
//! | 0x82 | WriteAck   | status u8                                 | 1     |
//! | 0x03 | ReadMsr    | cpu u8, msr u32                           | 5     |
//! | 0x83 | ReadAck    | status u8, value u64 (0 unless status Ok) | 9     |
//! | 0x04 | CpuInfo    | (none)                                    | 0     |
//! | 0x84 | CpuInfoAck | count u8, running u64 (bit n: CPU n runs) | 9     |
//! | 0x05 | AuthHello  | version u8, nonce [u8; 16]                | 17    |
//! | 0x85 | AuthHelloAck | nonce [u8; 16], version u8, capabilities u32, window u8 (sealed: + 8-byte tag) | 22 |
//! | 0xFF | Nak        | reason u8                                 | 1     |
//!
//! In an authenticated session every frame but the AuthHello is sealed
//! (`crate::auth`): its payload carries 8 more bytes, the tag.

use crate::auth::NONCE_LEN;
use crate::frame::{encode_frame, FrameBuf, RawFrame, MAX_PAYLOAD};

/// Frame TYPE byte of each message (docs/PROTOCOL.md section 3).
pub mod kind {
    /// Hello request: opens a session (section 5.2).
    pub const HELLO: u8 = 0x01;
    /// WriteMsr request: WRMSR on one processor or all (section 5.8).
    pub const WRITE_MSR: u8 = 0x02;
    /// ReadMsr request: RDMSR on one processor.
    pub const READ_MSR: u8 = 0x03;
    /// CpuInfo request: processor count and which of them run.
    pub const CPU_INFO: u8 = 0x04;
    /// AuthHello request: opens an authenticated session (section 9.1).
    pub const AUTH_HELLO: u8 = 0x05;
    /// Set in the type of every response.
    pub const RESPONSE_BIT: u8 = 0x80;
    /// HelloAck response (0x81).
    pub const HELLO_ACK: u8 = HELLO | RESPONSE_BIT;
    /// WriteAck response (0x82).
    pub const WRITE_ACK: u8 = WRITE_MSR | RESPONSE_BIT;
    /// ReadAck response (0x83).
    pub const READ_ACK: u8 = READ_MSR | RESPONSE_BIT;
    /// CpuInfoAck response (0x84).
    pub const CPU_INFO_ACK: u8 = CPU_INFO | RESPONSE_BIT;
    /// AuthHelloAck response (0x85).
    pub const AUTH_HELLO_ACK: u8 = AUTH_HELLO | RESPONSE_BIT;
    /// Nak: refuses any request without executing it (section 4.2).
    pub const NAK: u8 = 0xFF;
}

/// Debuggee capability bits announced in `HelloAck` (docs/PROTOCOL.md
/// section 4.3); every other bit is reserved, sent as 0 and ignored.
pub mod caps {
    /// Writes are executed by a real VMX hypervisor (hardware or Bochs).
    pub const REAL_VMX: u32 = 1 << 0;
    /// Writes are executed on the software VMX model (the `sim` target).
    pub const SOFTWARE_MODEL: u32 = 1 << 1;
    /// A guest observes its MSRs and reports them out of band.
    pub const GUEST_OBSERVER: u32 = 1 << 2;
}

/// Outcome of an executed MSR request: the status byte of WriteAck and
/// ReadAck (docs/PROTOCOL.md section 4.1).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum WireStatus {
    /// Executed; a ReadAck's value is valid.
    Ok = 0,
    /// WRMSR/RDMSR would raise #GP, or the value is one the processor refuses.
    GeneralProtection = 1,
    /// The debuggee has no processor with the requested index.
    NoCpu = 2,
    /// The processor exists but does not run the guest (the OS has not
    /// started it, or it stopped).
    CpuInactive = 3,
}

/// The `cpu` of a WriteMsr that asks for every running processor, all or
/// nothing.
pub const ALL_CPUS: u8 = 0xFF;

/// Why the debuggee refused to execute a request at all: the reason byte
/// of a Nak (docs/PROTOCOL.md section 4.2).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum NakReason {
    /// The request carries a session other than the debuggee's current one
    /// (the debuggee restarted, or another client performed a handshake).
    BadSession = 1,
    /// The handshake asked for a protocol version the debuggee does not speak.
    UnsupportedVersion = 2,
    /// Unknown request type.
    UnknownType = 3,
    /// The payload length does not fit the request type.
    BadPayload = 4,
    /// The request's SEQ is beyond the session's window: further ahead of
    /// the next request to execute than the window the HelloAck announced.
    /// Not executed (a client that keeps to the window never sees this).
    OutOfSequence = 5,
    /// The request's session was replaced by a later handshake (another
    /// client's, normally): the debuggee now serves someone else.
    SessionTakenOver = 6,
    /// The debuggee holds a key: it opens authenticated sessions only
    /// (AuthHello), and a plain Hello is refused.
    AuthRequired = 7,
    /// An AuthHello reached a debuggee that holds no key.
    AuthUnavailable = 8,
}

/// One request or response; payload layouts are in docs/PROTOCOL.md
/// section 3, every integer little endian and unaligned.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Message {
    /// Opens a session (section 5.2); sent with SESSION 0. `nonce` is random
    /// per engine: together with the random starting sequence number it
    /// keeps a new client's handshake from being mistaken for a
    /// retransmission of an earlier client's.
    Hello {
        /// Protocol version the client speaks ([`crate::PROTOCOL_VERSION`]).
        version: u8,
        /// The client instance's random number, the same in all its Hellos.
        nonce: u32,
    },
    /// Accepts a Hello; carries the new session in SESSION. `window`: how
    /// many requests the debuggee accepts in flight in the session
    /// (1..=[`crate::MAX_WINDOW`]).
    HelloAck {
        /// Protocol version the debuggee will speak (the Hello's).
        version: u8,
        /// [`caps`] bits (section 4.3).
        capabilities: u32,
        /// Requests the session may have in flight (section 5.3).
        window: u8,
    },
    /// WRMSR as the guest would execute it. `cpu`: the processor's index,
    /// or [`ALL_CPUS`].
    WriteMsr {
        /// Processor index (0 = boot processor) or [`ALL_CPUS`] (section 5.8).
        cpu: u8,
        /// MSR number (ECX of WRMSR).
        msr: u32,
        /// Value to write (EDX:EAX of WRMSR).
        value: u64,
    },
    /// Answers an executed WriteMsr.
    WriteAck {
        /// Whether the write happened (section 4.1).
        status: WireStatus,
    },
    /// RDMSR as the guest would execute it, on one processor.
    ReadMsr {
        /// Processor index (0 = boot processor).
        cpu: u8,
        /// MSR number (ECX of RDMSR).
        msr: u32,
    },
    /// Answers an executed ReadMsr.
    ReadAck {
        /// Whether the read happened (section 4.1).
        status: WireStatus,
        /// The value read (EDX:EAX); sent as 0 unless `status` is Ok.
        value: u64,
    },
    /// Refuses a request, which was not executed; echoes its SESSION and SEQ.
    Nak {
        /// Why (section 4.2).
        reason: NakReason,
    },
    /// How many processors the debuggee has and which of them run.
    CpuInfo,
    /// Answers CpuInfo, as of the moment it was executed.
    CpuInfoAck {
        /// Processors the debuggee has, 1..=64.
        count: u8,
        /// Bit n set: processor n runs the guest; clear: not started or stopped.
        running: u64,
    },
    /// Opens an authenticated session (section 9.1); `nonce` is fresh random
    /// bytes of the client's for each handshake.
    AuthHello {
        /// Protocol version the client speaks ([`crate::PROTOCOL_VERSION`]).
        version: u8,
        /// The client's nonce `Nc`, the first half of HKDF's salt.
        nonce: [u8; NONCE_LEN],
    },
    /// Accepts it: `nonce` is the debuggee's fresh random bytes (sent in
    /// the clear, authenticated), the rest is sealed with the new session's
    /// keys, which proves the debuggee holds the key.
    AuthHelloAck {
        /// The debuggee's nonce `Nd`, the second half of HKDF's salt.
        nonce: [u8; NONCE_LEN],
        /// Protocol version the debuggee will speak (the AuthHello's).
        version: u8,
        /// [`caps`] bits (section 4.3).
        capabilities: u32,
        /// Requests the session may have in flight (section 5.3).
        window: u8,
    },
}

/// A CRC-valid frame whose content is not a message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ParseError {
    /// A TYPE byte no message has (docs/PROTOCOL.md section 3).
    UnknownType(u8),
    /// LEN is not exactly the one the TYPE's payload has (section 3).
    BadLength {
        /// The frame's TYPE.
        kind: u8,
        /// The frame's LEN.
        len: u8,
    },
    /// A WriteAck/ReadAck status byte that is no [`WireStatus`] (section 4.1).
    BadStatus(u8),
    /// A Nak reason byte that is no [`NakReason`] (section 4.2).
    BadReason(u8),
}

impl WireStatus {
    fn from_byte(b: u8) -> Result<Self, ParseError> {
        match b {
            0 => Ok(WireStatus::Ok),
            1 => Ok(WireStatus::GeneralProtection),
            2 => Ok(WireStatus::NoCpu),
            3 => Ok(WireStatus::CpuInactive),
            other => Err(ParseError::BadStatus(other)),
        }
    }
}

impl NakReason {
    fn from_byte(b: u8) -> Result<Self, ParseError> {
        match b {
            1 => Ok(NakReason::BadSession),
            2 => Ok(NakReason::UnsupportedVersion),
            3 => Ok(NakReason::UnknownType),
            4 => Ok(NakReason::BadPayload),
            5 => Ok(NakReason::OutOfSequence),
            6 => Ok(NakReason::SessionTakenOver),
            7 => Ok(NakReason::AuthRequired),
            8 => Ok(NakReason::AuthUnavailable),
            other => Err(ParseError::BadReason(other)),
        }
    }
}

fn u32_at(p: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&p[at..at + 4]);
    u32::from_le_bytes(b)
}

fn nonce_at(p: &[u8], at: usize) -> [u8; NONCE_LEN] {
    let mut b = [0u8; NONCE_LEN];
    b.copy_from_slice(&p[at..at + NONCE_LEN]);
    b
}

fn u64_at(p: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&p[at..at + 8]);
    u64::from_le_bytes(b)
}

impl Message {
    /// The frame TYPE byte that carries this message (a [`kind`] constant).
    pub fn kind(&self) -> u8 {
        match self {
            Message::Hello { .. } => kind::HELLO,
            Message::HelloAck { .. } => kind::HELLO_ACK,
            Message::WriteMsr { .. } => kind::WRITE_MSR,
            Message::WriteAck { .. } => kind::WRITE_ACK,
            Message::ReadMsr { .. } => kind::READ_MSR,
            Message::ReadAck { .. } => kind::READ_ACK,
            Message::Nak { .. } => kind::NAK,
            Message::CpuInfo => kind::CPU_INFO,
            Message::CpuInfoAck { .. } => kind::CPU_INFO_ACK,
            Message::AuthHello { .. } => kind::AUTH_HELLO,
            Message::AuthHelloAck { .. } => kind::AUTH_HELLO_ACK,
        }
    }

    /// Whether this is a debuggee-to-client message ([`kind::RESPONSE_BIT`] set).
    pub fn is_response(&self) -> bool {
        self.kind() & kind::RESPONSE_BIT != 0
    }

    /// Writes the payload into `out`, returning its length.
    pub fn encode_payload(&self, out: &mut [u8; MAX_PAYLOAD]) -> usize {
        match *self {
            Message::Hello { version, nonce } => {
                out[0] = version;
                out[1..5].copy_from_slice(&nonce.to_le_bytes());
                5
            }
            Message::HelloAck {
                version,
                capabilities,
                window,
            } => {
                out[0] = version;
                out[1..5].copy_from_slice(&capabilities.to_le_bytes());
                out[5] = window;
                6
            }
            Message::WriteMsr { cpu, msr, value } => {
                out[0] = cpu;
                out[1..5].copy_from_slice(&msr.to_le_bytes());
                out[5..13].copy_from_slice(&value.to_le_bytes());
                13
            }
            Message::WriteAck { status } => {
                out[0] = status as u8;
                1
            }
            Message::ReadMsr { cpu, msr } => {
                out[0] = cpu;
                out[1..5].copy_from_slice(&msr.to_le_bytes());
                5
            }
            Message::ReadAck { status, value } => {
                out[0] = status as u8;
                out[1..9].copy_from_slice(&value.to_le_bytes());
                9
            }
            Message::Nak { reason } => {
                out[0] = reason as u8;
                1
            }
            Message::CpuInfo => 0,
            Message::CpuInfoAck { count, running } => {
                out[0] = count;
                out[1..9].copy_from_slice(&running.to_le_bytes());
                9
            }
            Message::AuthHello { version, nonce } => {
                out[0] = version;
                out[1..1 + NONCE_LEN].copy_from_slice(&nonce);
                1 + NONCE_LEN
            }
            Message::AuthHelloAck {
                nonce,
                version,
                capabilities,
                window,
            } => {
                out[..NONCE_LEN].copy_from_slice(&nonce);
                out[NONCE_LEN] = version;
                out[NONCE_LEN + 1..NONCE_LEN + 5].copy_from_slice(&capabilities.to_le_bytes());
                out[NONCE_LEN + 5] = window;
                NONCE_LEN + 6
            }
        }
    }

    /// Encodes the message as a complete frame.
    pub fn to_frame(&self, session: u8, seq: u16) -> FrameBuf {
        let mut payload = [0u8; MAX_PAYLOAD];
        let len = self.encode_payload(&mut payload);
        encode_frame(self.kind(), session, seq, &payload[..len])
    }

    /// Interprets a CRC-valid frame. Lengths must match exactly: a frame
    /// with trailing bytes is as suspect as a short one.
    pub fn parse(frame: &RawFrame) -> Result<Message, ParseError> {
        let p = frame.payload();
        let want = match frame.kind {
            kind::CPU_INFO => 0,
            kind::WRITE_ACK | kind::NAK => 1,
            kind::HELLO | kind::READ_MSR => 5,
            kind::HELLO_ACK => 6,
            kind::WRITE_MSR => 13,
            kind::READ_ACK | kind::CPU_INFO_ACK => 9,
            kind::AUTH_HELLO => 1 + NONCE_LEN,
            kind::AUTH_HELLO_ACK => NONCE_LEN + 6,
            other => return Err(ParseError::UnknownType(other)),
        };
        if p.len() != want {
            return Err(ParseError::BadLength {
                kind: frame.kind,
                len: frame.len,
            });
        }
        Ok(match frame.kind {
            kind::HELLO => Message::Hello {
                version: p[0],
                nonce: u32_at(p, 1),
            },
            kind::HELLO_ACK => Message::HelloAck {
                version: p[0],
                capabilities: u32_at(p, 1),
                window: p[5],
            },
            kind::WRITE_MSR => Message::WriteMsr {
                cpu: p[0],
                msr: u32_at(p, 1),
                value: u64_at(p, 5),
            },
            kind::WRITE_ACK => Message::WriteAck {
                status: WireStatus::from_byte(p[0])?,
            },
            kind::READ_MSR => Message::ReadMsr {
                cpu: p[0],
                msr: u32_at(p, 1),
            },
            kind::CPU_INFO => Message::CpuInfo,
            kind::CPU_INFO_ACK => Message::CpuInfoAck {
                count: p[0],
                running: u64_at(p, 1),
            },
            kind::AUTH_HELLO => Message::AuthHello {
                version: p[0],
                nonce: nonce_at(p, 1),
            },
            kind::AUTH_HELLO_ACK => Message::AuthHelloAck {
                nonce: nonce_at(p, 0),
                version: p[NONCE_LEN],
                capabilities: u32_at(p, NONCE_LEN + 1),
                window: p[NONCE_LEN + 5],
            },
            kind::READ_ACK => Message::ReadAck {
                status: WireStatus::from_byte(p[0])?,
                value: u64_at(p, 1),
            },
            _ => Message::Nak {
                reason: NakReason::from_byte(p[0])?,
            },
        })
    }
}
