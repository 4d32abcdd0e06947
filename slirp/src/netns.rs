//! Opening the TAP inside the target's namespaces: a forked child joins the user and network
//! namespaces (joining a user namespace needs a single-threaded process), opens and optionally
//! configures the TAP, and passes the descriptor back over a socketpair (SCM_RIGHTS).

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::fs::MetadataExt;
use std::os::unix::net::UnixStream;

use sluice_dataplane::wire::MacAddr;

use crate::cli::Target;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
const IFF_VNET_HDR: i16 = 0x4000;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
/// TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6: the guest may send partial checksums and TCP
/// super-frames up to 64 KiB whatever its MTU.
const OFFLOADS: libc::c_ulong = 0x01 | 0x02 | 0x04;
const SIOCSIFFLAGS: libc::c_ulong = 0x8914;
const SIOCGIFFLAGS: libc::c_ulong = 0x8913;
const SIOCSIFADDR: libc::c_ulong = 0x8916;
const SIOCSIFNETMASK: libc::c_ulong = 0x891c;
const SIOCSIFMTU: libc::c_ulong = 0x8922;
const SIOCSIFHWADDR: libc::c_ulong = 0x8924;
const SIOCADDRT: libc::c_ulong = 0x890b;
const RTF_UP: u16 = 1;
const RTF_GATEWAY: u16 = 2;

/// Why the TAP could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum NsError {
    /// A namespace file could not be opened.
    #[error("open {path}")]
    Open {
        /// The file.
        path: String,
        /// The error.
        source: io::Error,
    },
    /// A system call failed (fork, socketpair, ...).
    #[error("{0}: {1}")]
    Sys(&'static str, io::Error),
    /// The child failed inside the namespace; its message.
    #[error("in the namespace: {0}")]
    Child(String),
}

/// How to configure the TAP (`-c`).
#[derive(Debug, Clone)]
pub struct TapSetup {
    /// The guest's address.
    pub addr: Ipv4Addr,
    /// The netmask.
    pub netmask: Ipv4Addr,
    /// The default gateway.
    pub gateway: Ipv4Addr,
    /// The MTU.
    pub mtu: u16,
    /// The TAP's MAC, if chosen.
    pub mac: Option<MacAddr>,
}

/// An `ifreq`: interface name plus a 24-byte union.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    data: [u8; 24],
}

impl IfReq {
    fn new(name: &str) -> Self {
        let mut r = IfReq {
            name: [0; 16],
            data: [0; 24],
        };
        let n = name.len().min(15);
        r.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        r
    }

    fn with_addr(name: &str, ip: Ipv4Addr) -> Self {
        let mut r = IfReq::new(name);
        r.data[..16].copy_from_slice(&sockaddr_in(ip));
        r
    }
}

/// A `struct rtentry` (the layout of 64-bit glibc and musl).
#[repr(C)]
struct RtEntry {
    pad1: libc::c_ulong,
    dst: [u8; 16],
    gateway: [u8; 16],
    genmask: [u8; 16],
    flags: u16,
    pad2: i16,
    pad3: libc::c_ulong,
    tos: u8,
    class: u8,
    pad4: [i16; 3],
    metric: i16,
    dev: *mut libc::c_char,
    mtu: libc::c_ulong,
    window: libc::c_ulong,
    irtt: u16,
}

fn sockaddr_in(ip: Ipv4Addr) -> [u8; 16] {
    let mut s = [0u8; 16];
    s[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    s[4..8].copy_from_slice(&ip.octets());
    s
}

/// `ioctl(fd, req, arg)` for requests that read or write one struct at `arg`.
fn ioctl<T>(
    fd: &impl AsRawFd,
    req: libc::c_ulong,
    arg: &mut T,
    what: &'static str,
) -> Result<(), String> {
    // SAFETY: every request used here reads/writes exactly the struct type passed for it
    // (ifreq or rtentry), and `arg` is a live exclusive reference for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req, arg as *mut T) };
    if rc < 0 {
        return Err(format!("{what}: {}", io::Error::last_os_error()));
    }
    Ok(())
}

fn setns(ns: &File, nstype: libc::c_int, what: &str) -> Result<(), String> {
    // SAFETY: setns takes a live descriptor and a flag; it changes only this process.
    if unsafe { libc::setns(ns.as_raw_fd(), nstype) } < 0 {
        return Err(format!("setns({what}): {}", io::Error::last_os_error()));
    }
    Ok(())
}

fn open_tap(name: &str) -> Result<OwnedFd, String> {
    let tun = File::options()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| format!("open /dev/net/tun: {e}"))?;
    let mut req = IfReq::new(name);
    let flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    req.data[..2].copy_from_slice(&flags.to_ne_bytes());
    ioctl(&tun, TUNSETIFF, &mut req, "ioctl(TUNSETIFF)")?;
    // SAFETY: TUNSETOFFLOAD takes its argument by value; no memory is passed.
    if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETOFFLOAD, OFFLOADS) } < 0 {
        return Err(format!(
            "ioctl(TUNSETOFFLOAD): {}",
            io::Error::last_os_error()
        ));
    }
    Ok(tun.into())
}

fn set_up(sock: &impl AsRawFd, name: &str) -> Result<(), String> {
    let mut req = IfReq::new(name);
    ioctl(sock, SIOCGIFFLAGS, &mut req, "get flags")?;
    let flags = i16::from_ne_bytes([req.data[0], req.data[1]])
        | libc::IFF_UP as i16
        | libc::IFF_RUNNING as i16;
    req.data[..2].copy_from_slice(&flags.to_ne_bytes());
    ioctl(sock, SIOCSIFFLAGS, &mut req, "cannot set device up")
}

fn configure(name: &str, s: &TapSetup) -> Result<(), String> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("socket: {e}"))?;
    set_up(&sock, "lo")?;
    if let Some(mac) = s.mac {
        let mut req = IfReq::new(name);
        req.data[..2].copy_from_slice(&1u16.to_ne_bytes());
        req.data[2..8].copy_from_slice(&mac.0);
        ioctl(&sock, SIOCSIFHWADDR, &mut req, "cannot set MAC address")?;
    }
    let mut req = IfReq::new(name);
    req.data[..4].copy_from_slice(&i32::from(s.mtu).to_ne_bytes());
    ioctl(&sock, SIOCSIFMTU, &mut req, "cannot set MTU")?;
    ioctl(
        &sock,
        SIOCSIFADDR,
        &mut IfReq::with_addr(name, s.addr),
        "cannot set device address",
    )?;
    ioctl(
        &sock,
        SIOCSIFNETMASK,
        &mut IfReq::with_addr(name, s.netmask),
        "cannot set netmask",
    )?;
    set_up(&sock, name)?;
    let dev = CString::new(name).map_err(|_| "bad TAP name".to_string())?;
    let mut route = RtEntry {
        pad1: 0,
        dst: sockaddr_in(Ipv4Addr::UNSPECIFIED),
        gateway: sockaddr_in(s.gateway),
        genmask: sockaddr_in(Ipv4Addr::UNSPECIFIED),
        flags: RTF_UP | RTF_GATEWAY,
        pad2: 0,
        pad3: 0,
        tos: 0,
        class: 0,
        pad4: [0; 3],
        metric: 0,
        dev: dev.as_ptr().cast_mut(),
        mtu: 0,
        window: 0,
        irtt: 0,
    };
    ioctl(&sock, SIOCADDRT, &mut route, "set route")
}

/// True when `path` is the user namespace this process is already in (setns would fail).
fn is_own_userns(path: &std::path::Path) -> bool {
    match (
        std::fs::metadata("/proc/self/ns/user"),
        std::fs::metadata(path),
    ) {
        (Ok(a), Ok(b)) => a.st_dev() == b.st_dev() && a.st_ino() == b.st_ino(),
        _ => false,
    }
}

fn open_ns(path: &std::path::Path) -> Result<File, NsError> {
    File::open(path).map_err(|source| NsError::Open {
        path: path.display().to_string(),
        source,
    })
}

/// The child's work: join the namespaces, open (and configure) the TAP.
fn in_namespace(
    userns: Option<&File>,
    netns: &File,
    tap: &str,
    setup: Option<&TapSetup>,
) -> Result<OwnedFd, String> {
    if let Some(u) = userns {
        setns(u, libc::CLONE_NEWUSER, "user")?;
    }
    setns(netns, libc::CLONE_NEWNET, "net")?;
    let fd = open_tap(tap)?;
    if let Some(s) = setup {
        configure(tap, s)?;
    }
    Ok(fd)
}

/// A message header for one byte of data (`iov`) and one descriptor of ancillary data
/// (`cmsg`, `controllen` bytes of it in use); it borrows both for as long as it is used.
fn msghdr(iov: &mut libc::iovec, cmsg: &mut [u64; 4], controllen: usize) -> libc::msghdr {
    // SAFETY: msghdr is plain data for which all zeroes is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = controllen;
    msg
}

fn send_fd(sock: &UnixStream, fd: RawFd) -> io::Result<()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut cmsg = [0u64; 4];
    // SAFETY: CMSG_SPACE/CMSG_LEN are arithmetic on a constant.
    let (space, len) = unsafe { (libc::CMSG_SPACE(4) as usize, libc::CMSG_LEN(4) as usize) };
    let msg = msghdr(&mut iov, &mut cmsg, space);
    // SAFETY: `msg` points to the live locals `iov` and `cmsg`; the header CMSG_FIRSTHDR gives
    // and its data lie inside `cmsg` (32 bytes >= CMSG_SPACE(4)).
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = len;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd);
        if libc::sendmsg(sock.as_raw_fd(), &msg, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn recv_fd(sock: &UnixStream) -> io::Result<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut cmsg = [0u64; 4];
    let mut msg = msghdr(&mut iov, &mut cmsg, std::mem::size_of::<[u64; 4]>());
    // SAFETY: as in `send_fd`; the received descriptor is new to this process and wrapped
    // exactly once.
    unsafe {
        if libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) < 0 {
            return Err(io::Error::last_os_error());
        }
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() || (*c).cmsg_type != libc::SCM_RIGHTS {
            return Ok(None);
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<RawFd>());
        Ok(Some(OwnedFd::from_raw_fd(fd)))
    }
}

/// The TAP's frames carry a `virtio_net_hdr` of this many bytes in front (IFF_VNET_HDR).
pub const VNET_HDR_LEN: usize = 10;

/// Opens TAP `tap` in `target`'s namespaces (configuring it with `setup`) and returns it.
/// Must be called while the process is single-threaded.
pub fn open_tap_in(
    target: &Target,
    tap: &str,
    setup: Option<&TapSetup>,
) -> Result<OwnedFd, NsError> {
    let userns = match &target.userns {
        Some(p) if !is_own_userns(p) => Some(open_ns(p)?),
        _ => None,
    };
    let netns = open_ns(&target.netns)?;
    let (parent, child) = UnixStream::pair().map_err(|e| NsError::Sys("socketpair", e))?;
    // SAFETY: the process is single-threaded here (documented precondition), so the child
    // may run ordinary code; it leaves only through `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(NsError::Sys("fork", io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(parent);
        let code = match in_namespace(userns.as_ref(), &netns, tap, setup) {
            Ok(fd) => i32::from(send_fd(&child, fd.as_raw_fd()).is_err()),
            Err(msg) => {
                let _ = (&child).write_all(msg.as_bytes());
                1
            }
        };
        // SAFETY: _exit ends the child without running the parent's atexit handlers.
        unsafe { libc::_exit(code) };
    }
    drop(child);
    let got = recv_fd(&parent).map_err(|e| NsError::Sys("recvmsg", e));
    let mut msg = String::new();
    let _ = (&parent).read_to_string(&mut msg);
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a live local.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    match got? {
        Some(fd) => Ok(fd),
        None if msg.is_empty() => Err(NsError::Child("the child failed".into())),
        None => Err(NsError::Child(msg)),
    }
}

/// Reports readiness on `-r FD`: writes "1" and closes it.
pub fn signal_ready(fd: OwnedFd) -> io::Result<()> {
    let mut f = File::from(fd);
    f.write_all(b"1")
}
