//! The asynchronous request exports (`PsRequest*`, docs/api/): a request
//! object carries one MSR operation through submission, completion and
//! reuse, on top of the engine's window of requests in flight.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{
    allocate_handle, guarded, null, release_handle, remember, Outcome, PPS_ENGINE, PULSE_STATUS,
};
use crate::engine::{Operation, Pending, Submitter};
use crate::error::Error;
use crate::status::Status as PulseStatus;

/// An asynchronous request on an engine. Opaque.
pub struct PS_REQUEST {
    submitter: Submitter,
    state: Mutex<Stage>,
}

/// A handle to a request, from `PsRequestCreate`.
pub type PPS_REQUEST = *mut PS_REQUEST;

/// Where a request is in its life.
enum Stage {
    /// Created, no operation yet.
    Idle,
    /// An operation assigned and not submitted since.
    Ready(Operation),
    /// Submitted: busy until its outcome arrives.
    Busy(Pending),
    /// Completed with this status (and value, for a read), kept until the
    /// request is reassigned or resubmitted.
    Completed {
        operation: Operation,
        status: PulseStatus,
        value: Option<u64>,
        message: String,
    },
}

impl Stage {
    /// A busy request whose outcome has arrived becomes completed.
    fn settle(&mut self) {
        let Stage::Busy(pending) = self else { return };
        let Some(outcome) = pending.outcome() else {
            return;
        };
        let operation = pending.operation();
        *self = match outcome {
            Ok(value) => Stage::Completed {
                operation,
                status: PulseStatus::SUCCESS,
                value: matches!(operation, Operation::ReadMsr { .. }).then_some(value),
                message: String::new(),
            },
            Err(error) => Stage::Completed {
                operation,
                status: error.status(),
                value: None,
                message: error.to_string(),
            },
        };
    }

    fn is_busy(&self) -> bool {
        matches!(self, Stage::Busy(_))
    }
}

/// `REQUEST_BUSY`: the request is submitted and not completed.
fn busy() -> Outcome {
    remember("the request is submitted and not completed yet".to_owned());
    Ok(PulseStatus::REQUEST_BUSY)
}

/// Runs `body` with the request behind `handle` (its stage settled),
/// inside the panic guard; a NULL handle is `INVALID_PARAMETER`.
///
/// # Safety
/// `handle` must be NULL or a live handle from `PsRequestCreate`.
unsafe fn with_request(
    handle: PPS_REQUEST,
    body: impl FnOnce(&PS_REQUEST, &mut Stage) -> Outcome,
) -> PULSE_STATUS {
    guarded(|| {
        if handle.is_null() {
            return Err(null("pRequest"));
        }
        // SAFETY: non-NULL and live per the caller's promise.
        let request = unsafe { &*handle };
        let mut stage = request.state.lock();
        stage.settle();
        body(request, &mut stage)
    })
}

/// Assigns `operation` unless the request is busy.
///
/// # Safety
/// As [`with_request`].
unsafe fn assign(handle: PPS_REQUEST, operation: Operation) -> PULSE_STATUS {
    // SAFETY: NULL or live per the caller's promise.
    unsafe {
        with_request(handle, |_, stage| {
            if stage.is_busy() {
                return busy();
            }
            *stage = Stage::Ready(operation);
            Ok(PulseStatus::SUCCESS)
        })
    }
}

/// Creates an idle request on an engine, with no operation assigned.
///
/// Returns `PULSE_STATUS_SUCCESS` and stores the handle in `*ppRequest`, or
/// `PULSE_STATUS_INVALID_PARAMETER` (a NULL pointer),
/// `PULSE_STATUS_INSUFFICIENT_RESOURCES`. `*ppRequest` is written only on
/// success. Destroy it with `PsRequestDestroy`; it may outlive its engine
/// (see `EngDestroyEngine`).
///
/// # Safety
/// `pEngine` must be NULL or a live handle from `EngCreateEngine`;
/// `ppRequest` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn PsRequestCreate(
    pEngine: PPS_ENGINE,
    ppRequest: *mut PPS_REQUEST,
) -> PULSE_STATUS {
    guarded(|| {
        if pEngine.is_null() {
            return Err(null("pEngine"));
        }
        if ppRequest.is_null() {
            return Err(null("ppRequest"));
        }
        // SAFETY: non-NULL and live per the caller's promise.
        let submitter = unsafe { &(*pEngine).engine }.submitter();
        let handle = allocate_handle(PS_REQUEST {
            submitter,
            state: Mutex::new(Stage::Idle),
        })?;
        // SAFETY: non-NULL and writable per the caller's promise.
        unsafe { ppRequest.write(handle) };
        Ok(PulseStatus::SUCCESS)
    })
}

/// Destroys a request that is not busy.
///
/// Returns `PULSE_STATUS_SUCCESS`, `PULSE_STATUS_REQUEST_BUSY` (submitted
/// and not completed: the request stays; wait for it first), or
/// `PULSE_STATUS_INVALID_PARAMETER` (`pRequest` is NULL).
///
/// # Safety
/// `pRequest` must be NULL or a live handle from `PsRequestCreate`, and no
/// other thread may be using it.
#[no_mangle]
pub unsafe extern "C" fn PsRequestDestroy(pRequest: PPS_REQUEST) -> PULSE_STATUS {
    guarded(|| {
        if pRequest.is_null() {
            return Err(null("pRequest"));
        }
        {
            // SAFETY: non-NULL and live per the caller's promise.
            let mut stage = unsafe { &*pRequest }.state.lock();
            stage.settle();
            if stage.is_busy() {
                return busy();
            }
        }
        // SAFETY: a live handle from PsRequestCreate (allocate_handle), used
        // by no one else, per the caller's promise.
        unsafe { release_handle(pRequest) };
        Ok(PulseStatus::SUCCESS)
    })
}

/// Assigns a write to the request: `MsrValue` to `MsrNumber` on the
/// engine's current CPU at the time of `PsRequestSubmit`, as `PsWriteMsr`.
///
/// Returns `PULSE_STATUS_SUCCESS`, `PULSE_STATUS_REQUEST_BUSY` (nothing
/// changes), or `PULSE_STATUS_INVALID_PARAMETER` (`pRequest` is NULL).
///
/// # Safety
/// `pRequest` must be NULL or a live handle from `PsRequestCreate`.
#[no_mangle]
pub unsafe extern "C" fn PsRequestWriteMsr(
    pRequest: PPS_REQUEST,
    MsrNumber: u32,
    MsrValue: u64,
) -> PULSE_STATUS {
    let operation = Operation::WriteMsr {
        msr: MsrNumber,
        value: MsrValue,
    };
    // SAFETY: NULL or live per the caller's promise.
    unsafe { assign(pRequest, operation) }
}

/// Assigns a read to the request: `MsrNumber` on the engine's current CPU
/// at the time of `PsRequestSubmit`, as `PsReadMsr`.
///
/// Returns `PULSE_STATUS_SUCCESS`, `PULSE_STATUS_REQUEST_BUSY` (nothing
/// changes), or `PULSE_STATUS_INVALID_PARAMETER` (`pRequest` is NULL).
///
/// # Safety
/// `pRequest` must be NULL or a live handle from `PsRequestCreate`.
#[no_mangle]
pub unsafe extern "C" fn PsRequestReadMsr(pRequest: PPS_REQUEST, MsrNumber: u32) -> PULSE_STATUS {
    // SAFETY: NULL or live per the caller's promise.
    unsafe { assign(pRequest, Operation::ReadMsr { msr: MsrNumber }) }
}

/// Submits the request's operation and returns at once; the request is
/// busy until it completes, within `RequestTimeoutMs × MaxAttempts` of now.
/// Requests submitted on one engine (and synchronous calls) run on the
/// debuggee in submission order, each exactly once. A completed request
/// may be submitted again (its operation runs again) or reassigned first.
///
/// Returns `PULSE_STATUS_SUCCESS`, `PULSE_STATUS_REQUEST_NOT_INITIALIZED`
/// (no operation assigned), `PULSE_STATUS_REQUEST_BUSY`,
/// `PULSE_STATUS_INVALID_PARAMETER` (`pRequest` is NULL), or what a
/// synchronous call would return when sending fails
/// (`PULSE_STATUS_DEVICE_CONNECTION_LOST`, `PULSE_STATUS_WRITE_FAILED`);
/// on a failure the request is completed with that status, not busy.
///
/// # Safety
/// `pRequest` must be NULL or a live handle from `PsRequestCreate`.
#[no_mangle]
pub unsafe extern "C" fn PsRequestSubmit(pRequest: PPS_REQUEST) -> PULSE_STATUS {
    // SAFETY: NULL or live per the caller's promise.
    unsafe {
        with_request(pRequest, |request, stage| {
            let operation = match stage {
                Stage::Idle => {
                    remember("no operation is assigned to the request".to_owned());
                    return Ok(PulseStatus::REQUEST_NOT_INITIALIZED);
                }
                Stage::Busy(_) => return busy(),
                Stage::Ready(operation) | Stage::Completed { operation, .. } => *operation,
            };
            *stage = Stage::Busy(request.submitter.submit(operation));
            stage.settle();
            match stage {
                // Sending failed (the link is gone, or the write to it
                // failed): Submit reports it, and so does GetStatus.
                Stage::Completed {
                    status, message, ..
                } if [
                    PulseStatus::DEVICE_CONNECTION_LOST,
                    PulseStatus::WRITE_FAILED,
                ]
                .contains(status) =>
                {
                    remember(message.clone());
                    Ok(*status)
                }
                _ => Ok(PulseStatus::SUCCESS),
            }
        })
    }
}

/// Waits until the submitted request completes, for at most `TimeoutMs`
/// milliseconds (`0xFFFFFFFF`: until it completes, which it does within its
/// own budget).
///
/// Returns `PULSE_STATUS_SUCCESS` (completed: `PsRequestGetStatus` gives its
/// outcome), `PULSE_STATUS_TIMEOUT` (`TimeoutMs` passed first; the request
/// stays busy and still completes within its own budget),
/// `PULSE_STATUS_REQUEST_NOT_INITIALIZED` (never submitted), or
/// `PULSE_STATUS_INVALID_PARAMETER` (`pRequest` is NULL).
///
/// # Safety
/// `pRequest` must be NULL or a live handle from `PsRequestCreate`.
#[no_mangle]
pub unsafe extern "C" fn PsRequestWait(pRequest: PPS_REQUEST, TimeoutMs: u32) -> PULSE_STATUS {
    // SAFETY: NULL or live per the caller's promise.
    unsafe { wait(pRequest, TimeoutMs) }
}

/// The body of `PsRequestWait`; the request's lock is not held while
/// waiting, so other threads may ask for its status meanwhile.
///
/// # Safety
/// As [`with_request`].
unsafe fn wait(handle: PPS_REQUEST, timeout_ms: u32) -> PULSE_STATUS {
    let mut waited = None;
    // SAFETY: NULL or live per the caller's promise.
    let status = unsafe {
        with_request(handle, |_, stage| match stage {
            Stage::Busy(pending) => {
                waited = Some(pending.clone());
                Ok(PulseStatus::PENDING)
            }
            Stage::Completed { .. } => Ok(PulseStatus::SUCCESS),
            Stage::Idle | Stage::Ready(_) => {
                remember("the request was not submitted".to_owned());
                Ok(PulseStatus::REQUEST_NOT_INITIALIZED)
            }
        })
    };
    let Some(pending) = waited else {
        return status;
    };
    guarded(|| {
        let until = match timeout_ms {
            u32::MAX => pending.deadline() + Duration::from_secs(1),
            ms => Instant::now() + Duration::from_millis(ms.into()),
        };
        if pending.wait_until(until) || pending.is_done() {
            Ok(PulseStatus::SUCCESS)
        } else {
            Err(Error::WaitTimedOut {
                waited: Duration::from_millis(timeout_ms.into()),
            })
        }
    })
}

/// The request's status: `PULSE_STATUS_PENDING` while it is busy, then
/// exactly the status the synchronous `PsWriteMsr` or `PsReadMsr` would
/// have returned (its text is what `PsGetLastErrorMessage` gives after
/// this call).
///
/// Also returns `PULSE_STATUS_REQUEST_NOT_INITIALIZED` (never submitted) or
/// `PULSE_STATUS_INVALID_PARAMETER` (`pRequest` is NULL).
///
/// # Safety
/// `pRequest` must be NULL or a live handle from `PsRequestCreate`.
#[no_mangle]
pub unsafe extern "C" fn PsRequestGetStatus(pRequest: PPS_REQUEST) -> PULSE_STATUS {
    // SAFETY: NULL or live per the caller's promise.
    unsafe { with_request(pRequest, |_, stage| status_of_stage(stage)) }
}

fn status_of_stage(stage: &Stage) -> Outcome {
    match stage {
        Stage::Busy(_) => {
            remember("the request is submitted and not completed yet".to_owned());
            Ok(PulseStatus::PENDING)
        }
        Stage::Completed {
            status, message, ..
        } => {
            if *status != PulseStatus::SUCCESS {
                remember(message.clone());
            }
            Ok(*status)
        }
        Stage::Idle | Stage::Ready(_) => {
            remember("the request was not submitted".to_owned());
            Ok(PulseStatus::REQUEST_NOT_INITIALIZED)
        }
    }
}

/// The value a completed read returned.
///
/// Returns `PULSE_STATUS_SUCCESS` and stores it in `*pMsrValue`, or
/// `PULSE_STATUS_INVALID_PARAMETER` (a NULL pointer, or the request is not
/// a read that completed with `PULSE_STATUS_SUCCESS`: still busy, a
/// write, or a failed read). `*pMsrValue` is written only on success.
///
/// # Safety
/// `pRequest` must be NULL or a live handle from `PsRequestCreate`;
/// `pMsrValue` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn PsRequestGetMsrValue(
    pRequest: PPS_REQUEST,
    pMsrValue: *mut u64,
) -> PULSE_STATUS {
    // SAFETY: NULL or live per the caller's promise; `pMsrValue` is checked
    // before it is written and writable per the caller's promise.
    unsafe {
        with_request(pRequest, |_, stage| {
            if pMsrValue.is_null() {
                return Err(null("pMsrValue"));
            }
            match stage {
                Stage::Busy(_) => Err(Error::InvalidArgument(
                    "the request is submitted and not completed yet".to_owned(),
                )),
                Stage::Completed {
                    value: Some(value), ..
                } => {
                    pMsrValue.write(*value);
                    Ok(PulseStatus::SUCCESS)
                }
                _ => Err(Error::InvalidArgument(
                    "the request is not a read that completed successfully".to_owned(),
                )),
            }
        })
    }
}

/// Submits the request and waits for it: `PsRequestSubmit`, then
/// `PsRequestWait` until it completes, then `PsRequestGetStatus`.
///
/// Returns the request's status as `PsRequestGetStatus` does, or the
/// failure of `PsRequestSubmit`.
///
/// # Safety
/// `pRequest` must be NULL or a live handle from `PsRequestCreate`.
#[no_mangle]
pub unsafe extern "C" fn PsRequestExecute(pRequest: PPS_REQUEST) -> PULSE_STATUS {
    // SAFETY: NULL or live per the caller's promise, for each call.
    unsafe {
        let submitted = PsRequestSubmit(pRequest);
        if submitted != PulseStatus::SUCCESS.0 {
            return submitted;
        }
        let waited = wait(pRequest, u32::MAX);
        if waited != PulseStatus::SUCCESS.0 {
            return waited;
        }
        PsRequestGetStatus(pRequest)
    }
}
