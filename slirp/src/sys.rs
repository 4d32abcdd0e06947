//! The few system calls std and socket2 do not wrap, each behind a safe function.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::udp_batch::{OutMsg, MAX_DATAGRAMS};

/// `SO_PEEK_OFF`: lets MSG_PEEK continue where the last peek stopped.
const SO_PEEK_OFF: libc::c_int = 42;
/// `SIOCOUTQ`: bytes in a TCP socket's send queue (not yet acknowledged by the peer).
const SIOCOUTQ: libc::c_ulong = 0x5411;

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `recv(2)` with `flags` (MSG_PEEK, MSG_TRUNC, ...), nonblocking.
pub fn recv_flags(fd: BorrowedFd<'_>, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: `buf` is a valid writable region of `buf.len()` bytes for the whole call, and
    // `fd` is a live descriptor borrowed from its owner.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Discards `n` bytes at the head of a TCP socket's receive queue without copying them.
pub fn discard(fd: BorrowedFd<'_>, n: usize) -> io::Result<usize> {
    // SAFETY: with MSG_TRUNC on a TCP socket the kernel discards up to `n` bytes and writes
    // nothing to the buffer, so a null pointer is never dereferenced.
    let rc = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            std::ptr::null_mut(),
            n,
            libc::MSG_TRUNC | libc::MSG_DONTWAIT,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// Sets an integer socket option.
pub fn set_int_opt(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the option value is a live `c_int` and its exact size is passed.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Sets (or, with 0 after consuming, resets) the peek offset of a socket.
pub fn set_peek_off(fd: BorrowedFd<'_>, off: libc::c_int) -> io::Result<()> {
    set_int_opt(fd, libc::SOL_SOCKET, SO_PEEK_OFF, off)
}

/// Bytes queued in a TCP socket's send buffer.
pub fn outq(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut v: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one `c_int` to the pointer, which points to a live local.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), SIOCOUTQ, &mut v as *mut libc::c_int) })?;
    Ok(v.max(0) as usize)
}

/// A descriptor that becomes readable when process `pid` exits.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Takes ownership of an inherited descriptor number (`-e`, `-r`) after checking it is open.
pub fn inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only queries the descriptor table.
    check(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    // SAFETY: the descriptor is open, was passed to us by number on the command line for our
    // use, and is wrapped once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes a descriptor nonblocking.
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on a live descriptor only change its status flags.
    let flags = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) }).map(drop)
}

/// Removes `name` in the directory `dir` (which may lie outside a sandbox's root by now).
pub fn unlink_at(dir: BorrowedFd<'_>, name: &std::ffi::CStr) -> io::Result<()> {
    // SAFETY: `dir` is a live descriptor and `name` a NUL-terminated string for the call.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) }).map(drop)
}

/// `UDP_SEGMENT` (linux/udp.h): the GSO segment size of a UDP message, as a control message.
const UDP_SEGMENT: libc::c_int = 103;
/// Room for one control message carrying a `u16` (CMSG_SPACE(2) is 24 on 64-bit Linux).
type CmsgBuf = [u64; 4];

/// `sendmmsg(2)` of the planned messages `msgs` (each a span of `buf`, at most
/// [`MAX_DATAGRAMS`] of them used) on a connected datagram socket, nonblocking; a message with a
/// segment size goes with `UDP_SEGMENT`. Returns how many messages the kernel took.
pub fn send_messages(fd: BorrowedFd<'_>, buf: &[u8], msgs: &[OutMsg]) -> io::Result<usize> {
    let msgs = &msgs[..msgs.len().min(MAX_DATAGRAMS)];
    // SAFETY: iovec and mmsghdr are plain C structs for which all-zero bytes (null pointers,
    // zero lengths) are a valid value.
    let mut iov: [libc::iovec; MAX_DATAGRAMS] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; MAX_DATAGRAMS] = unsafe { std::mem::zeroed() };
    let mut ctl: [CmsgBuf; MAX_DATAGRAMS] = [[0; 4]; MAX_DATAGRAMS];
    for (i, m) in msgs.iter().enumerate() {
        let data = &buf[m.at..m.at + m.len];
        iov[i] = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let h = &mut hdrs[i].msg_hdr;
        h.msg_iov = &mut iov[i];
        h.msg_iovlen = 1;
        if m.seg != 0 {
            h.msg_control = ctl[i].as_mut_ptr().cast();
            // SAFETY: CMSG_SPACE only computes a size.
            h.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as _;
            // SAFETY: msg_control points to `ctl[i]`, 32 live bytes aligned for cmsghdr, and
            // msg_controllen (24) says it holds one header and its data, so CMSG_FIRSTHDR
            // returns a pointer inside it, and CMSG_DATA the 2 bytes after the header.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(h);
                (*c).cmsg_level = libc::SOL_UDP;
                (*c).cmsg_type = UDP_SEGMENT;
                (*c).cmsg_len = libc::CMSG_LEN(2) as _;
                libc::CMSG_DATA(c).cast::<u16>().write_unaligned(m.seg);
            }
        }
    }
    // SAFETY: the first `msgs.len()` headers point to live iovecs over `buf` and to live
    // control buffers, all of which outlive the call; the kernel only reads them (and writes
    // each header's msg_len).
    let n = unsafe {
        libc::sendmmsg(
            fd.as_raw_fd(),
            hdrs.as_mut_ptr(),
            msgs.len() as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    #[test]
    fn messages_leave_as_their_datagrams() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        let buf: Vec<u8> = (0..=255).collect();
        let msgs = [
            OutMsg {
                at: 0,
                len: 150,
                seg: 64,
                count: 3,
            },
            OutMsg {
                at: 150,
                len: 7,
                seg: 0,
                count: 1,
            },
        ];
        assert_eq!(send_messages(tx.as_fd(), &buf, &msgs).unwrap(), 2);
        let mut got = Vec::new();
        let mut d = [0u8; 300];
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        for _ in 0..4 {
            let n = rx.recv(&mut d).unwrap();
            got.push(d[..n].to_vec());
        }
        assert_eq!(
            got,
            [&buf[..64], &buf[64..128], &buf[128..150], &buf[150..157]]
        );
    }
}
