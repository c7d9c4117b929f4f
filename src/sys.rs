//! The few OS calls the standard library does not offer.

use std::io;
use std::net::TcpStream;
use std::os::fd::RawFd;
use std::time::Instant;

/// Re-arms TCP_QUICKACK so that a delayed acknowledgement goes out now and
/// the next segment is acknowledged at once (Linux clears the flag after
/// use). Best effort: failure only costs latency.
#[cfg(target_os = "linux")]
pub fn tcp_quickack(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: the fd is a live socket owned by `stream`; the option value
    // points at a c_int that outlives the call, with its exact size.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(not(target_os = "linux"))]
pub fn tcp_quickack(_stream: &TcpStream) {}

/// What `wait_fd` waits for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Ready {
    Readable,
    Writable,
}

/// Waits until `fd` is readable or writable (or has an error or hang-up
/// pending, which the next read or write reports) or `deadline` passes.
/// Returns `Ok(false)` on the deadline. The wait is timed with nanosecond
/// resolution (ppoll on Linux), so a short remaining time is not rounded up
/// to a scheduler tick as SO_RCVTIMEO is.
pub fn wait_fd(fd: RawFd, ready: Ready, deadline: Instant) -> io::Result<bool> {
    let events = match ready {
        Ready::Readable => libc::POLLIN,
        Ready::Writable => libc::POLLOUT,
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        match poll_one(&mut pfd, left) {
            Ok(0) => continue, // the kernel's clock ran out first: recheck ours
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(target_os = "linux")]
fn poll_one(pfd: &mut libc::pollfd, left: std::time::Duration) -> io::Result<libc::c_int> {
    let spec = libc::timespec {
        tv_sec: left.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: libc::c_long::from(left.subsec_nanos() as i32),
    };
    // SAFETY: `pfd` is one valid pollfd and `spec` a valid timespec, both
    // live for the call; a null signal mask leaves the mask unchanged.
    let n = unsafe { libc::ppoll(pfd, 1, &spec, std::ptr::null()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n)
    }
}

#[cfg(not(target_os = "linux"))]
fn poll_one(pfd: &mut libc::pollfd, left: std::time::Duration) -> io::Result<libc::c_int> {
    // poll counts whole milliseconds: round up so the deadline is not missed
    // early (the loop in `wait_fd` handles an early return).
    let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `pfd` is one valid pollfd that lives for the call.
    let n = unsafe { libc::poll(pfd, 1, ms) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n)
    }
}
