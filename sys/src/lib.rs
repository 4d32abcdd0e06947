//! The few libc calls of the control plane (daemon, CLI, lab and demo) that the standard
//! library does not wrap, as safe functions: the crates that use them need no unsafe code of
//! their own.
#![deny(missing_docs)]

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the process runs with root's effective user id.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Set by SIGINT, SIGTERM or SIGHUP once [`catch_termination`] ran.
static TERMINATION: AtomicBool = AtomicBool::new(false);

extern "C" fn on_termination(_: libc::c_int) {
    TERMINATION.store(true, Ordering::Relaxed);
}

/// Replaces the default action of SIGINT, SIGTERM and SIGHUP (ending the process) with setting
/// the returned flag, so that a long-running command can clean up and stop.
pub fn catch_termination() -> &'static AtomicBool {
    let handler = on_termination as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, handler) };
    }
    &TERMINATION
}

/// Sends `sig` to process `pid` (errors, such as a process that is gone, are ignored). Only
/// for processes the caller started or that live in a namespace it made.
pub fn signal(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill(2) takes no pointers; what it does to the target is the caller's intent.
    unsafe { libc::kill(pid, sig) };
}

/// Moves the calling thread (only it) into the network namespace `ns` (a namespace file).
pub fn enter_netns(ns: &File) -> io::Result<()> {
    // SAFETY: setns only reads the descriptor, which `ns` keeps open during the call, and
    // changes the namespace of the calling thread alone.
    match unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// A NETLINK_ROUTE socket in the calling thread's network namespace (it stays bound to that
/// namespace for its whole life).
pub fn route_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket() takes no pointers; a negative result is checked below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket() and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets the loopback interface `lo` of the calling thread's namespace up (nothing if it is).
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket creation; the result is checked.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads and writes the ifreq we pass.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short != 0 {
        return Ok(());
    }
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the ifreq we pass.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
