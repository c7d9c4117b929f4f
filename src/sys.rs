//! The few OS calls the standard library does not offer.

use std::net::TcpStream;

/// Re-arms TCP_QUICKACK so the next segment is acknowledged at once (Linux
/// clears the flag after use). Best effort: failure only costs latency.
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
