//! The C ABI (docs/ABI.md, docs/api/). Every export checks its pointers,
//! catches panics so none crosses into C, and writes an out-parameter only
//! when it returns `PULSE_STATUS_SUCCESS`. This is the one place where a
//! Rust [`Error`] becomes a `PULSE_STATUS` ([`status_of`]). The doc comments
//! below become the header's comments.
#![allow(non_snake_case, non_camel_case_types)]

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use crate::config::{EngineConfig, DEFAULT_MAX_ATTEMPTS, DEFAULT_REQUEST_TIMEOUT};
use crate::engine::{Engine, Switched};
use crate::error::Error;
use crate::status::Status as PulseStatus;

mod request;
pub use request::*;

/// A status code: `PULSE_STATUS_SUCCESS` (0), an informational code that
/// is not an error (`PULSE_STATUS_BARRIER_ALREADY_OWNED`, 0x00000021;
/// `PULSE_STATUS_PENDING`, 0x00000103), or one of the `PULSE_STATUS_...`
/// failure codes (0xC...) defined above.
pub type PULSE_STATUS = u32;

/// An engine: one session with one debuggee over one transport. Opaque.
pub struct PS_ENGINE {
    engine: Engine,
}

/// A handle to an engine, from `EngCreateEngine`.
pub type PPS_ENGINE = *mut PS_ENGINE;

/// Engine configuration for `EngCreateEngine`.
#[repr(C)]
pub struct PS_ENGINE_CONFIG {
    /// `sizeof(PS_ENGINE_CONFIG)`: lets the struct grow in later versions.
    pub Size: u32,
    /// `"sim"`, `"sim?cpu=<profile>"`, `"serial:<device>[?baud=N]"` or
    /// `"tcp:<host>:<port>"` (IPv6 hosts in brackets). NUL-terminated.
    pub Transport: *const c_char,
    /// Time to wait for each attempt's answer, in milliseconds; 0 = 1000.
    pub RequestTimeoutMs: u32,
    /// Sends of one request before `PULSE_STATUS_TIMEOUT`; 0 = 3.
    pub MaxAttempts: u32,
    /// Version 2: the 32-byte pre-shared key of an authenticated link
    /// (docs/SECURITY.md), or NULL for an unauthenticated link.
    pub pKey: *const u8,
    /// Version 2: 32 when `pKey` is set, else 0.
    pub KeySize: u32,
}

/// A `Size` below this (the first four fields) is refused.
const CONFIG_V1_SIZE: usize = std::mem::offset_of!(PS_ENGINE_CONFIG, pKey);
/// A `Size` of at least this covers `pKey` and `KeySize`: version 2.
const CONFIG_V2_SIZE: usize =
    std::mem::offset_of!(PS_ENGINE_CONFIG, KeySize) + std::mem::size_of::<u32>();

/// The `PULSE_STATUS` of a failure: the one mapping from [`Error`].
pub fn status_of(error: &Error) -> PulseStatus {
    match error {
        Error::InvalidArgument(_) | Error::MalformedTransport { .. } => {
            PulseStatus::INVALID_PARAMETER
        }
        Error::NoSuchDevice { .. }
        | Error::DeviceBusy { .. }
        | Error::HostNotFound { .. }
        | Error::Unreachable { .. } => PulseStatus::NO_SUCH_DEVICE,
        Error::DevicePermission { .. } | Error::AccessDenied(_) => PulseStatus::ACCESS_DENIED,
        Error::OutOfResources { .. } | Error::OutOfMemory => PulseStatus::INSUFFICIENT_RESOURCES,
        Error::ConnectionRefused { .. } => PulseStatus::CONNECTION_REFUSED,
        Error::ConnectTimeout { .. }
        | Error::HandshakeUnanswered { .. }
        | Error::Timeout { .. }
        | Error::WaitTimedOut { .. }
        | Error::LinkTimedOut => PulseStatus::TIMEOUT,
        Error::ConnectionLost(_)
        | Error::AlreadyLost
        | Error::SessionTakenOver
        | Error::SessionUnknown => PulseStatus::DEVICE_CONNECTION_LOST,
        Error::ReadFailed(_) => PulseStatus::READ_FAILED,
        Error::WriteFailed(_) => PulseStatus::WRITE_FAILED,
        Error::InvalidPacket(_) => PulseStatus::INVALID_PACKET,
        Error::RevisionMismatch { .. } => PulseStatus::REVISION_MISMATCH,
        Error::GeneralProtection { .. } => PulseStatus::EXCEPTION_GENERAL_PROTECTION,
        Error::NoCpu { .. } => PulseStatus::BARRIER_NO_CPU,
        Error::CpuInactive { .. } => PulseStatus::BARRIER_OWNER_INACTIVE,
        Error::Internal(_) => PulseStatus::INTERNAL_ERROR,
    }
}

impl From<&Error> for PulseStatus {
    fn from(error: &Error) -> PulseStatus {
        status_of(error)
    }
}

impl Error {
    /// The `PULSE_STATUS` the C ABI returns for this failure ([`status_of`]).
    pub fn status(&self) -> PulseStatus {
        status_of(self)
    }
}

/// What an export reports: SUCCESS or an informational status (`Ok`), or
/// a failure.
type Outcome = Result<PulseStatus, Error>;

thread_local! {
    /// What the last call on this thread that did not return SUCCESS said
    /// (`PsGetLastErrorMessage`); empty until such a call.
    static LAST_MESSAGE: RefCell<CString> = RefCell::new(CString::default());
}

/// Stores `message` as this thread's last message.
fn remember(message: String) {
    // A NUL inside would cut the C string short; none is expected.
    let message = CString::new(message.replace('\0', " ")).unwrap_or_default();
    // The thread's storage is gone only while the thread exits.
    let _ = LAST_MESSAGE.try_with(|last| *last.borrow_mut() = message);
}

/// Runs `body` and returns its status; a panic becomes
/// `PULSE_STATUS_INTERNAL_ERROR`. A failure's text becomes the thread's
/// last message (an informational status sets its own in `body`).
fn guarded(body: impl FnOnce() -> Outcome) -> PULSE_STATUS {
    let outcome = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_owned());
        Err(Error::Internal(format!("caught at the C boundary: {what}")))
    });
    match outcome {
        Ok(status) => status.0,
        Err(error) => {
            remember(error.to_string());
            status_of(&error).0
        }
    }
}

/// `INVALID_PARAMETER` naming the NULL pointer argument.
fn null(argument: &str) -> Error {
    Error::InvalidArgument(format!("{argument} is NULL"))
}

/// Converts the C configuration; an error names what is malformed.
///
/// # Safety
/// `config` must be non-NULL and point to at least a readable `Size` field
/// followed by `Size` readable bytes; if `Size` covers version 1, `Transport`
/// must be NULL or a NUL-terminated string; if it covers version 2, `pKey`
/// must be NULL or point to `KeySize` readable bytes.
unsafe fn engine_config(config: *const PS_ENGINE_CONFIG) -> Result<EngineConfig, Error> {
    // Fields are read one by one through the raw pointer: a caller's struct
    // may be shorter than ours, so no reference to the whole struct may
    // exist, and each field is read only once Size says it is there.
    // SAFETY: `config` is non-NULL and its Size field is readable.
    let size = unsafe { std::ptr::addr_of!((*config).Size).read_unaligned() } as usize;
    if size < CONFIG_V1_SIZE {
        return Err(Error::InvalidArgument(format!(
            "pConfig->Size is {size}, less than the first version of PS_ENGINE_CONFIG ({CONFIG_V1_SIZE} bytes)"
        )));
    }
    // SAFETY: Size covers the version-1 fields, so they are readable.
    let (transport, timeout_ms, attempts) = unsafe {
        (
            std::ptr::addr_of!((*config).Transport).read_unaligned(),
            std::ptr::addr_of!((*config).RequestTimeoutMs).read_unaligned(),
            std::ptr::addr_of!((*config).MaxAttempts).read_unaligned(),
        )
    };
    let key = if size >= CONFIG_V2_SIZE {
        // SAFETY: Size covers the version-2 fields.
        let (key, key_size) = unsafe {
            (
                std::ptr::addr_of!((*config).pKey).read_unaligned(),
                std::ptr::addr_of!((*config).KeySize).read_unaligned(),
            )
        };
        match (key.is_null(), key_size as usize) {
            (true, 0) => None,
            (false, pulse_proto::auth::KEY_LEN) => {
                let mut bytes = [0u8; pulse_proto::auth::KEY_LEN];
                // SAFETY: non-NULL, and the caller promises KeySize (32)
                // readable bytes; u8 has no alignment requirement.
                bytes.copy_from_slice(unsafe {
                    std::slice::from_raw_parts(key, pulse_proto::auth::KEY_LEN)
                });
                Some(pulse_proto::Psk::new(bytes))
            }
            (true, n) => {
                return Err(Error::InvalidArgument(format!(
                    "pConfig->KeySize is {n} but pKey is NULL (0 without a key)"
                )))
            }
            (false, n) => {
                return Err(Error::InvalidArgument(format!(
                    "pConfig->KeySize is {n}; a key has {} bytes",
                    pulse_proto::auth::KEY_LEN
                )))
            }
        }
    } else {
        None
    };
    if transport.is_null() {
        return Err(null("pConfig->Transport"));
    }
    // SAFETY: non-NULL, and the caller promises a NUL-terminated string.
    let transport = unsafe { CStr::from_ptr(transport) }
        .to_str()
        .map_err(|_| Error::InvalidArgument("pConfig->Transport is not UTF-8".to_owned()))?;
    let request_timeout = match timeout_ms {
        0 => DEFAULT_REQUEST_TIMEOUT,
        ms => Duration::from_millis(u64::from(ms)),
    };
    let max_attempts = match attempts {
        0 => DEFAULT_MAX_ATTEMPTS,
        n => n,
    };
    Ok(EngineConfig {
        transport: transport.to_owned(),
        request_timeout,
        max_attempts,
        key,
    })
}

/// Creates an engine: opens the transport and performs the handshake with
/// hv-stub on the debuggee.
///
/// A `Size` covering only the first four fields is version 1: an
/// unauthenticated link. Version 2 adds `pKey`/`KeySize`: with a key, the
/// engine opens an authenticated session only (docs/SECURITY.md).
///
/// Returns `PULSE_STATUS_SUCCESS` and stores the handle in `*ppEngine`, or:
/// `PULSE_STATUS_INVALID_PARAMETER` (NULL pointer, `Size` too small, missing,
/// malformed or unknown transport string, `pKey` set with `KeySize` other
/// than 32, or `KeySize` not 0 with `pKey` NULL), `PULSE_STATUS_NO_SUCH_DEVICE`,
/// `PULSE_STATUS_ACCESS_DENIED` (no permission for the device; or the
/// debuggee holds a key and this engine has none or another one; or this
/// engine has a key and the debuggee offers no authentication),
/// `PULSE_STATUS_CONNECTION_REFUSED` (the
/// transport cannot be opened), `PULSE_STATUS_INSUFFICIENT_RESOURCES` (out of
/// file descriptors or memory), `PULSE_STATUS_TIMEOUT` (the debuggee did not
/// answer), `PULSE_STATUS_REVISION_MISMATCH`, `PULSE_STATUS_INVALID_PACKET`,
/// `PULSE_STATUS_READ_FAILED`, `PULSE_STATUS_WRITE_FAILED`,
/// `PULSE_STATUS_DEVICE_CONNECTION_LOST`. `*ppEngine` is written only on
/// success. Takes at most `RequestTimeoutMs * MaxAttempts`, TCP host-name
/// resolution included.
///
/// # Safety
/// `pConfig` must be NULL or point to a readable `PS_ENGINE_CONFIG` of
/// `pConfig->Size` bytes whose `Transport` is NULL or a NUL-terminated
/// string and, if `Size` covers them, whose `pKey` is NULL or points to
/// `KeySize` readable bytes; `ppEngine` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn EngCreateEngine(
    pConfig: *const PS_ENGINE_CONFIG,
    ppEngine: *mut PPS_ENGINE,
) -> PULSE_STATUS {
    guarded(|| {
        if pConfig.is_null() {
            return Err(null("pConfig"));
        }
        if ppEngine.is_null() {
            return Err(null("ppEngine"));
        }
        // SAFETY: non-NULL; the caller promises `Size` readable bytes, and
        // engine_config reads nothing else before checking Size.
        let config = unsafe { engine_config(pConfig) }?;
        let handle = allocate_handle(PS_ENGINE {
            engine: Engine::open(&config)?,
        })?;
        // SAFETY: non-NULL and writable per the caller's promise.
        unsafe { ppEngine.write(handle) };
        Ok(PulseStatus::SUCCESS)
    })
}

/// Moves a handle's object to the heap for the caller, reporting exhaustion
/// instead of aborting the host process as `Box::new` would. Its pair is
/// [`release_handle`].
fn allocate_handle<T>(object: T) -> Result<*mut T, Error> {
    let layout = std::alloc::Layout::new::<T>();
    assert!(layout.size() > 0, "handles point to objects with a size");
    // SAFETY: the layout has a non-zero size (checked above), as alloc needs.
    let raw = unsafe { std::alloc::alloc(layout) }.cast::<T>();
    if raw.is_null() {
        return Err(Error::OutOfMemory);
    }
    // SAFETY: `raw` is freshly allocated with T's layout; the same layout is
    // what Box::from_raw in release_handle frees with.
    unsafe { raw.write(object) };
    Ok(raw)
}

/// Drops the object behind a handle from [`allocate_handle`] and frees it.
///
/// # Safety
/// `handle` must come from `allocate_handle::<T>`, not be released yet, and
/// be used by no one else.
unsafe fn release_handle<T>(handle: *mut T) {
    // SAFETY: allocated with T's layout and initialised by allocate_handle,
    // which is Box's own layout; ownership is handed back per the contract.
    drop(unsafe { Box::from_raw(handle) });
}

/// Destroys an engine and closes its transport (a serial device is free
/// for another engine when it returns). Requests still in flight complete
/// with `DEVICE_CONNECTION_LOST`; request objects stay valid until
/// `PsRequestDestroy`, and their later submissions fail the same way.
///
/// Returns `PULSE_STATUS_SUCCESS`, or `PULSE_STATUS_INVALID_PARAMETER` if
/// `pEngine` is NULL.
///
/// # Safety
/// `pEngine` must be NULL or a handle from `EngCreateEngine` not yet
/// destroyed, and no other thread may be using it.
#[no_mangle]
pub unsafe extern "C" fn EngDestroyEngine(pEngine: PPS_ENGINE) -> PULSE_STATUS {
    guarded(|| {
        if pEngine.is_null() {
            return Err(null("pEngine"));
        }
        // SAFETY: a live handle from EngCreateEngine (allocate_handle), used
        // by no one else, per the caller's promise.
        unsafe { release_handle(pEngine) };
        Ok(PulseStatus::SUCCESS)
    })
}

/// Runs `body` with the engine behind `handle`, inside the panic guard; a
/// NULL handle is `INVALID_PARAMETER` and `body` does not run.
///
/// # Safety
/// `handle` must be NULL or a live handle from `EngCreateEngine`.
unsafe fn with_engine(handle: PPS_ENGINE, body: impl FnOnce(&Engine) -> Outcome) -> PULSE_STATUS {
    guarded(|| {
        if handle.is_null() {
            return Err(null("pEngine"));
        }
        // SAFETY: non-NULL and live per the caller's promise.
        body(unsafe { &(*handle).engine })
    })
}

/// The outcome of a call without a result.
fn done(result: Result<(), Error>) -> Outcome {
    result.map(|()| PulseStatus::SUCCESS)
}

/// Stores a successful call's value through `out` (checked non-NULL by the
/// caller before the call ran) and returns SUCCESS; a failure writes nothing.
///
/// # Safety
/// `out` must be non-NULL and writable.
unsafe fn store<T>(out: *mut T, result: Result<T, Error>) -> Outcome {
    let value = result?;
    // SAFETY: non-NULL and writable per this function's contract.
    unsafe { out.write(value) };
    Ok(PulseStatus::SUCCESS)
}

/// Writes the specified value to a model-specific register of the debuggee.
///
/// hv-stub executes the write in VMX-root mode; for the MSRs that VM entry
/// loads from the VMCS (IA32_SYSENTER_CS/ESP/EIP, IA32_DEBUGCTL, IA32_PAT,
/// IA32_EFER, IA32_PERF_GLOBAL_CTRL, IA32_BNDCFGS, IA32_RTIT_CTL, IA32_PKRS,
/// IA32_S_CET, IA32_INTERRUPT_SSP_TABLE_ADDR, FS/GS base) it updates the
/// guest's VMCS field instead, IA32_SMBASE goes to the guest's SMBASE field
/// and IA32_FEATURE_CONTROL to the copy the guest's RDMSR sees, so the result
/// is applied to the guest. See docs/MSR-SEMANTICS.md.
///
/// Returns `PULSE_STATUS_SUCCESS`, or: `PULSE_STATUS_INVALID_PARAMETER`
/// (`pEngine` is NULL), `PULSE_STATUS_EXCEPTION_GENERAL_PROTECTION` (no such
/// MSR, or a value the processor refuses; nothing was changed),
/// `PULSE_STATUS_TIMEOUT`, `PULSE_STATUS_INVALID_PACKET`,
/// `PULSE_STATUS_READ_FAILED`, `PULSE_STATUS_WRITE_FAILED`,
/// `PULSE_STATUS_DEVICE_CONNECTION_LOST`. A write is never applied twice,
/// even when the request is retransmitted. Safe to call from several
/// threads on one engine.
///
/// # Safety
/// `pEngine` must be NULL or a live handle from `EngCreateEngine`.
#[no_mangle]
pub unsafe extern "C" fn PsWriteMsr(
    pEngine: PPS_ENGINE,
    MsrNumber: u32,
    MsrValue: u64,
) -> PULSE_STATUS {
    // SAFETY: NULL or live per the caller's promise.
    unsafe { with_engine(pEngine, |e| done(e.write_msr(MsrNumber, MsrValue))) }
}

/// Reads a model-specific register as the guest would read it (same
/// routing as `PsWriteMsr`).
///
/// Returns `PULSE_STATUS_SUCCESS` and stores the value in `*pMsrValue`, or
/// the codes of `PsWriteMsr` (`PULSE_STATUS_INVALID_PARAMETER` also for a
/// NULL `pMsrValue`). `*pMsrValue` is written only on success.
///
/// # Safety
/// `pEngine` must be NULL or a live handle from `EngCreateEngine`;
/// `pMsrValue` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn PsReadMsr(
    pEngine: PPS_ENGINE,
    MsrNumber: u32,
    pMsrValue: *mut u64,
) -> PULSE_STATUS {
    // SAFETY: NULL or live per the caller's promise; `pMsrValue` is
    // checked before the call and writable per the caller's promise.
    unsafe {
        with_engine(pEngine, |e| {
            if pMsrValue.is_null() {
                return Err(null("pMsrValue"));
            }
            store(pMsrValue, e.read_msr(MsrNumber))
        })
    }
}

/// Makes `TargetCpuIndex` the engine's current CPU: the one `PsWriteMsr` and
/// `PsReadMsr` act on from now on, for every thread using the engine. After
/// `EngCreateEngine` the current CPU is 0, the boot processor.
///
/// Returns `PULSE_STATUS_SUCCESS` (switched),
/// `PULSE_STATUS_BARRIER_ALREADY_OWNED` (not an error: it already is the
/// current CPU), or: `PULSE_STATUS_BARRIER_NO_CPU` (no CPU with that index),
/// `PULSE_STATUS_BARRIER_OWNER_INACTIVE` (the CPU exists but is not running:
/// the OS has not started it yet, or it stopped) — the current CPU does not
/// change on either — `PULSE_STATUS_INVALID_PARAMETER` (`pEngine` is NULL),
/// `PULSE_STATUS_TIMEOUT`, `PULSE_STATUS_INVALID_PACKET`,
/// `PULSE_STATUS_READ_FAILED`, `PULSE_STATUS_WRITE_FAILED`,
/// `PULSE_STATUS_DEVICE_CONNECTION_LOST`. Asks the debuggee which CPUs
/// exist and run, so it takes one round trip.
///
/// # Safety
/// `pEngine` must be NULL or a live handle from `EngCreateEngine`.
#[no_mangle]
pub unsafe extern "C" fn PsSwitchCpu(pEngine: PPS_ENGINE, TargetCpuIndex: u64) -> PULSE_STATUS {
    // SAFETY: NULL or live per the caller's promise.
    unsafe {
        with_engine(pEngine, |e| match e.switch_cpu(TargetCpuIndex)? {
            Switched::Switched => Ok(PulseStatus::SUCCESS),
            Switched::AlreadyCurrent => {
                // Not an error, but not SUCCESS either: it gets a message.
                remember(format!("CPU {TargetCpuIndex} already is the current CPU"));
                Ok(PulseStatus::BARRIER_ALREADY_OWNED)
            }
        })
    }
}

/// Reports how many CPUs the debuggee has (running or not), asked now.
///
/// Returns `PULSE_STATUS_SUCCESS` and stores the count in `*pCpuCount`, or
/// `PULSE_STATUS_INVALID_PARAMETER` (a NULL pointer), `PULSE_STATUS_TIMEOUT`,
/// `PULSE_STATUS_INVALID_PACKET`, `PULSE_STATUS_READ_FAILED`,
/// `PULSE_STATUS_WRITE_FAILED`, `PULSE_STATUS_DEVICE_CONNECTION_LOST`.
/// `*pCpuCount` is written only on success.
///
/// # Safety
/// `pEngine` must be NULL or a live handle from `EngCreateEngine`;
/// `pCpuCount` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn PsGetCpuCount(pEngine: PPS_ENGINE, pCpuCount: *mut u64) -> PULSE_STATUS {
    // SAFETY: NULL or live per the caller's promise; `pCpuCount` is
    // checked before the call and writable per the caller's promise.
    unsafe {
        with_engine(pEngine, |e| {
            if pCpuCount.is_null() {
                return Err(null("pCpuCount"));
            }
            store(pCpuCount, e.cpu_info().map(|info| info.count))
        })
    }
}

/// Reports the engine's current CPU (set by `PsSwitchCpu`; 0 after
/// `EngCreateEngine`). Needs no round trip.
///
/// Returns `PULSE_STATUS_SUCCESS` and stores the index in `*pCpuIndex`, or
/// `PULSE_STATUS_INVALID_PARAMETER` (a NULL pointer; nothing is written).
///
/// # Safety
/// `pEngine` must be NULL or a live handle from `EngCreateEngine`;
/// `pCpuIndex` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn PsGetCurrentCpu(pEngine: PPS_ENGINE, pCpuIndex: *mut u64) -> PULSE_STATUS {
    // SAFETY: NULL or live per the caller's promise; `pCpuIndex` is
    // checked before it is written and writable per the caller's promise.
    unsafe {
        with_engine(pEngine, |e| {
            if pCpuIndex.is_null() {
                return Err(null("pCpuIndex"));
            }
            store(pCpuIndex, Ok(e.current_cpu()))
        })
    }
}

/// Writes the value to a model-specific register on every running CPU of
/// the debuggee, each by its own routing (as `PsWriteMsr` would on it), in
/// one request, all or nothing: the debuggee checks the value on every
/// running CPU first, and if any would refuse it, no CPU changes and the
/// call returns `PULSE_STATUS_EXCEPTION_GENERAL_PROTECTION`. CPUs the OS has
/// not started yet are left to the OS. The current CPU does not change.
///
/// Returns `PULSE_STATUS_SUCCESS`, or: `PULSE_STATUS_INVALID_PARAMETER`
/// (`pEngine` is NULL), `PULSE_STATUS_EXCEPTION_GENERAL_PROTECTION` (some
/// running CPU refuses the value or lacks the MSR; no CPU was changed),
/// `PULSE_STATUS_TIMEOUT`, `PULSE_STATUS_INVALID_PACKET`,
/// `PULSE_STATUS_READ_FAILED`, `PULSE_STATUS_WRITE_FAILED`,
/// `PULSE_STATUS_DEVICE_CONNECTION_LOST`.
///
/// # Safety
/// `pEngine` must be NULL or a live handle from `EngCreateEngine`.
#[no_mangle]
pub unsafe extern "C" fn PsWriteMsrAllCpus(
    pEngine: PPS_ENGINE,
    MsrNumber: u32,
    MsrValue: u64,
) -> PULSE_STATUS {
    // SAFETY: NULL or live per the caller's promise.
    unsafe { with_engine(pEngine, |e| done(e.write_msr_all_cpus(MsrNumber, MsrValue))) }
}

/// The name of a status code, e.g. `"PULSE_STATUS_TIMEOUT"`, or
/// `"PULSE_STATUS_UNKNOWN"`. The string is static; never NULL.
#[no_mangle]
pub extern "C" fn PsStatusToString(Status: PULSE_STATUS) -> *const c_char {
    PulseStatus(Status)
        .c_name()
        .unwrap_or("PULSE_STATUS_UNKNOWN\0")
        .as_ptr()
        .cast()
}

/// Copies the text describing the last call on the calling thread that did
/// not return `PULSE_STATUS_SUCCESS` (for example which part of a transport
/// string is malformed, which device could not be opened and the OS's
/// reason, which CPU is missing) into `pBuffer`, NUL-terminated. With no
/// such call on the thread yet the message is empty (size 1).
///
/// `*pcbNeeded` (if `pcbNeeded` is not NULL) receives the message's size in
/// bytes including the terminating NUL, on success and on
/// `PULSE_STATUS_BUFFER_TOO_SMALL`. Calling with `pBuffer` NULL and
/// `cbBuffer` 0 asks for the size.
///
/// Returns `PULSE_STATUS_SUCCESS`, `PULSE_STATUS_BUFFER_TOO_SMALL`
/// (`cbBuffer` is less than the size; nothing is written to `pBuffer`), or
/// `PULSE_STATUS_INVALID_PARAMETER` (`pBuffer` is NULL and `cbBuffer` is not
/// 0). Neither this function nor `PsStatusToString` changes the stored
/// message. Needs no engine; each thread has its own message.
///
/// # Safety
/// `pBuffer` must be NULL or point to `cbBuffer` writable bytes;
/// `pcbNeeded` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn PsGetLastErrorMessage(
    pBuffer: *mut c_char,
    cbBuffer: u32,
    pcbNeeded: *mut u32,
) -> PULSE_STATUS {
    let copy = || {
        LAST_MESSAGE.with(|last| {
            let last = last.borrow();
            let bytes = last.as_bytes_with_nul();
            let needed = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
            let report_size = || {
                if !pcbNeeded.is_null() {
                    // SAFETY: non-NULL and writable per the caller's promise.
                    unsafe { pcbNeeded.write(needed) };
                }
            };
            if (cbBuffer as usize) < bytes.len() {
                report_size();
                return PulseStatus::BUFFER_TOO_SMALL;
            }
            if pBuffer.is_null() {
                return PulseStatus::INVALID_PARAMETER;
            }
            // SAFETY: `pBuffer` holds `cbBuffer >= bytes.len()` writable
            // bytes per the caller's promise; our message cannot overlap it.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr().cast(), pBuffer, bytes.len()) };
            report_size();
            PulseStatus::SUCCESS
        })
    };
    // Not `guarded`: this call must leave the stored message as it is.
    catch_unwind(AssertUnwindSafe(copy))
        .unwrap_or(PulseStatus::INTERNAL_ERROR)
        .0
}

/// Reports the version of the loaded library, to compare with the
/// `PULSE_VERSION_MAJOR`, `PULSE_VERSION_MINOR` and `PULSE_VERSION_PATCH`
/// macros the program was compiled with (docs/ABI.md: a program runs on any
/// library with the same major version, and for 0.x the same minor, and a
/// minor or patch at least as new as its header).
///
/// Returns `PULSE_STATUS_SUCCESS` and stores the three numbers, or
/// `PULSE_STATUS_INVALID_PARAMETER` if any pointer is NULL (nothing is
/// written then). Needs no engine; safe from any thread.
///
/// # Safety
/// `pMajor`, `pMinor` and `pPatch` must each be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn PsGetVersion(
    pMajor: *mut u32,
    pMinor: *mut u32,
    pPatch: *mut u32,
) -> PULSE_STATUS {
    guarded(|| {
        if pMajor.is_null() || pMinor.is_null() || pPatch.is_null() {
            return Err(Error::InvalidArgument(
                "pMajor, pMinor and pPatch must all be non-NULL".to_owned(),
            ));
        }
        let (major, minor, patch) = crate::version::version();
        // SAFETY: non-NULL and writable per the caller's promise.
        unsafe {
            pMajor.write(major);
            pMinor.write(minor);
            pPatch.write(patch);
        }
        Ok(PulseStatus::SUCCESS)
    })
}
