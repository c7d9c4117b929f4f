//! `PULSE_STATUS` codes. The values are a contract (docs/ABI.md and the
//! `PsWriteMsr` reference page); new failure codes keep the 0xC... style,
//! informational ones (not errors) are small positive values, and no value
//! ever changes. `tests/header.rs` writes them into the header as hex
//! `#define`s from this table (cbindgen would print them in decimal) and
//! proves the two agree.

use std::fmt;

/// A `PULSE_STATUS` value.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(pub u32);

macro_rules! statuses {
    ($( $(#[doc = $doc:literal])* $name:ident = $value:literal, $meaning:literal; )*) => {
        impl Status {
            $( $(#[doc = $doc])* pub const $name: Status = Status($value); )*

            /// Every defined status, in header order.
            pub const ALL: &'static [Status] = &[$(Status::$name),*];

            /// The C macro name, e.g. `PULSE_STATUS_TIMEOUT`.
            pub fn name(self) -> Option<&'static str> {
                self.c_name().map(|n| &n[..n.len() - 1])
            }

            /// The C macro name with its NUL terminator, for `PsStatusToString`.
            pub(crate) fn c_name(self) -> Option<&'static str> {
                match self.0 {
                    $( $value => Some(concat!("PULSE_STATUS_", stringify!($name), "\0")), )*
                    _ => None,
                }
            }

            /// One-line meaning, for messages.
            pub fn meaning(self) -> &'static str {
                match self.0 {
                    $( $value => $meaning, )*
                    _ => "unknown status code",
                }
            }
        }
    };
}

statuses! {
    /// The call succeeded.
    SUCCESS = 0x0000_0000, "the operation succeeded";
    /// Not an error: `PsSwitchCpu` named the CPU that already is the current one.
    BARRIER_ALREADY_OWNED = 0x0000_0021, "not an error: the CPU `PsSwitchCpu` named already is the current one";
    /// Not an error: `PsRequestGetStatus` of a request submitted and not
    /// completed yet.
    PENDING = 0x0000_0103, "not an error: the request is submitted and not completed yet";
    /// Memory or file descriptors ran out while creating the engine.
    INSUFFICIENT_RESOURCES = 0xC000_0002, "memory or another resource (file descriptors) ran out";
    /// Transport I/O failed while reading.
    READ_FAILED = 0xC000_0003, "transport communication failed during a read operation";
    /// Transport I/O failed while writing.
    WRITE_FAILED = 0xC000_0004, "transport communication failed during a write operation";
    /// No valid response within RequestTimeoutMs x MaxAttempts.
    TIMEOUT = 0xC000_0007, "no valid response from the debuggee within `RequestTimeoutMs` × `MaxAttempts`";
    /// The device (serial port, TCP host) does not exist or cannot be opened.
    NO_SUCH_DEVICE = 0xC000_000E, "the transport device (serial port, TCP host) does not exist or cannot be opened";
    /// A NULL pointer, a bad config size or a malformed transport string.
    INVALID_PARAMETER = 0xC000_0010, "an argument is NULL or malformed: a NULL pointer, a `Size` too small, a bad transport string";
    /// Permission to open the device was denied, or the link's key does not
    /// match (authenticated links, docs/SECURITY.md).
    ACCESS_DENIED = 0xC000_0022, "permission to open the transport device was denied, or the debuggee and the engine do not share a key (one has none, or they differ: docs/SECURITY.md)";
    /// `PsGetLastErrorMessage`: the buffer cannot hold the message and its
    /// NUL; nothing was written to it.
    BUFFER_TOO_SMALL = 0xC000_0023, "the buffer is too small for the result; nothing was written to it";
    /// A malformed or unexpected response.
    INVALID_PACKET = 0xC000_0031, "an invalid or unexpected packet was received in response";
    /// The CPU exists but is not running (not started by the OS yet, or stopped).
    BARRIER_OWNER_INACTIVE = 0xC000_0043, "the CPU exists but is not running: the OS has not started it yet, or it stopped";
    /// No CPU with that index.
    BARRIER_NO_CPU = 0xC000_0044, "the debuggee has no CPU with that index";
    /// The debuggee speaks another protocol version.
    REVISION_MISMATCH = 0xC000_0059, "the debuggee speaks an incompatible protocol version";
    /// A panic was caught at the C boundary: a bug in libpulse, please report it.
    INTERNAL_ERROR = 0xC000_00E5, "internal error in libpulse (a caught panic): a bug, please report it";
    /// No operation is assigned to the request (`PsRequestWriteMsr`,
    /// `PsRequestReadMsr`), or it was never submitted.
    REQUEST_NOT_INITIALIZED = 0xC000_0402, "no operation is assigned to the request, or it was not submitted";
    /// The request is submitted and not completed: it cannot be changed,
    /// resubmitted or destroyed.
    REQUEST_BUSY = 0xC000_0403, "the request is submitted and not completed: it cannot be changed, resubmitted or destroyed";
    /// The TCP peer refused the connection.
    CONNECTION_REFUSED = 0xC000_0236, "the debuggee's TCP endpoint refused the connection";
    /// The transport is gone (EOF, reset, hang-up, or the debuggee restarted).
    DEVICE_CONNECTION_LOST = 0xC000_0308, "the connection to the transport was lost (EOF, reset, hang-up, or the debuggee restarted); recreate the engine";
    /// WRMSR/RDMSR would raise #GP on the debuggee.
    EXCEPTION_GENERAL_PROTECTION = 0xC001_000D, "the MSR access would cause a #GP on the debuggee: no such MSR, or a value the processor refuses. Nothing was changed";
}

impl Status {
    pub fn is_success(self) -> bool {
        self == Status::SUCCESS
    }

    /// An error (severity bits 31:30 = 3, the 0xC... codes); SUCCESS and the
    /// informational BARRIER_ALREADY_OWNED are not.
    pub fn is_error(self) -> bool {
        self.0 >> 30 == 3
    }

    /// `Ok(())` for SUCCESS, `Err(self)` otherwise.
    pub fn ok(self) -> Result<(), Status> {
        if self.is_success() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}"),
            None => write!(f, "Status({:#010X})", self.0),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} (0x{:08X}): {}", self.0, self.meaning()),
            None => write!(f, "0x{:08X}: {}", self.0, self.meaning()),
        }
    }
}

impl std::error::Error for Status {}
