//! The host-side ends of flows: nonblocking sockets of the user, wrapped for the sans-IO
//! translation in [`crate::tcp`] and [`crate::udp`].
#![forbid(unsafe_code)]

use std::io::{self, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::os::fd::AsFd;

use mio::net::{TcpStream, UdpSocket};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::sys;
use crate::tcp::{HostSocket, TcpConn};

/// The send buffer asked for on TCP host sockets.
const SNDBUF: usize = 4 << 20;

/// A TCP host socket read by peeking (SO_PEEK_OFF) and discarding what the guest acknowledged.
#[derive(Debug)]
pub struct TcpSock {
    /// The connected (or connecting) stream.
    pub stream: TcpStream,
    /// SO_SNDBUF as the kernel set it (fixed: setting it turns autotuning off).
    sndbuf: usize,
    /// A lower bound of [`HostSocket::send_space`]: measured (SIOCOUTQ), then lowered by every
    /// write (the queue only shrinks otherwise), so most segments need no measuring.
    space_floor: std::cell::Cell<usize>,
}

impl TcpSock {
    /// Wraps `stream`, turning on the peek offset.
    pub fn new(stream: TcpStream) -> io::Result<Self> {
        sys::set_peek_off(stream.as_fd(), 0)?;
        // The window the guest gets is this buffer's free space: a fixed large buffer (capped
        // by net.core.wmem_max) instead of autotuning, which would never grow because the
        // guest is told not to overfill it.
        let sock = SockRef::from(&stream);
        sock.set_send_buffer_size(SNDBUF)?;
        let sndbuf = sock.send_buffer_size()?;
        Ok(TcpSock {
            stream,
            sndbuf,
            space_floor: std::cell::Cell::new(0),
        })
    }

    /// Starts a nonblocking connect to `to`, from `from` when set.
    pub fn connect(to: SocketAddr, from: Option<IpAddr>) -> io::Result<Self> {
        TcpSock::new(connect_stream(to, from)?)
    }

    /// Closes with a reset instead of a FIN (the guest reset the connection).
    pub fn abort(self) {
        let _ = SockRef::from(&self.stream).set_linger(Some(std::time::Duration::ZERO));
    }

    /// After a writable event while connecting: `Ok(true)` once connected.
    pub fn connected(&self) -> io::Result<bool> {
        stream_connected(&self.stream)
    }
}

impl HostSocket for TcpSock {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.stream.write(data)?;
        self.space_floor
            .set(self.space_floor.get().saturating_sub(n));
        Ok(n)
    }

    fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        sys::recv_flags(self.stream.as_fd(), buf, libc::MSG_PEEK)
    }

    fn rewind(&mut self) -> io::Result<()> {
        sys::set_peek_off(self.stream.as_fd(), 0)
    }

    fn consume(&mut self, mut n: usize) -> io::Result<()> {
        while n > 0 {
            match sys::discard(self.stream.as_fd(), n)? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                k => n -= k.min(n),
            }
        }
        Ok(())
    }

    fn send_space(&self) -> usize {
        // While the floor is at least half the window it is a good enough answer (and never
        // promises too much); below that, measure.
        let floor = self.space_floor.get();
        if floor >= self.send_capacity() / 2 {
            return floor;
        }
        let queued = sys::outq(self.stream.as_fd()).unwrap_or(usize::MAX);
        // Half: the buffer also pays for skb overhead (about 1.3x on 64 KiB writes), and the
        // right edge of the window must never promise more than a write will take.
        let space = self.send_capacity().saturating_sub(queued);
        self.space_floor.set(space);
        space
    }

    fn send_capacity(&self) -> usize {
        self.sndbuf / 2
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        match self.stream.shutdown(Shutdown::Write) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
            _ => Ok(()),
        }
    }
}

/// Starts a nonblocking connect to `to`, from `from` when set, without delay (Nagle off).
pub fn connect_stream(to: SocketAddr, from: Option<IpAddr>) -> io::Result<TcpStream> {
    let s = Socket::new(
        Domain::for_address(to),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    if let Some(ip) = from {
        s.bind(&SocketAddr::new(ip, 0).into())?;
    }
    s.set_tcp_nodelay(true)?;
    match s.connect(&to.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(std::net::TcpStream::from(s)))
}

/// After a writable event on a connecting `stream`: `Ok(true)` once connected.
pub fn stream_connected(stream: &TcpStream) -> io::Result<bool> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

/// A TCP flow: the translation state and its host socket.
#[derive(Debug)]
pub struct TcpFlow {
    /// The translation.
    pub conn: TcpConn,
    /// The host socket.
    pub sock: TcpSock,
}

/// How a UDP flow reaches the host.
#[derive(Debug)]
pub enum UdpPath {
    /// The guest started it: a connected socket of its own.
    Own(UdpSocket),
    /// A host client sent to a forward: replies go out of the forward's socket to `client`.
    Forward {
        /// The forward's id.
        fwd: u32,
        /// The client's address.
        client: SocketAddr,
    },
}

/// A UDP flow.
#[derive(Debug)]
pub struct UdpFlow {
    /// The socket path.
    pub path: UdpPath,
    /// The guest's address (replies go there).
    pub guest: IpAddr,
    /// Last use, in engine milliseconds (idle flows expire).
    pub last_used: u64,
    /// Whether runs of the guest's datagrams go out as UDP GSO messages (until the path
    /// refuses one).
    pub gso: bool,
}

/// Opens a connected UDP socket to `to`, from `from` when set.
pub fn udp_connect(to: SocketAddr, from: Option<IpAddr>) -> io::Result<UdpSocket> {
    let any = match to {
        SocketAddr::V4(_) => IpAddr::from([0u8; 4]),
        SocketAddr::V6(_) => IpAddr::from([0u8; 16]),
    };
    let s = UdpSocket::bind(SocketAddr::new(from.unwrap_or(any), 0))?;
    s.connect(to)?;
    Ok(s)
}

/// An ICMP echo flow through an unprivileged ping socket (or a pseudo-ping's UDP socket).
#[derive(Debug)]
pub struct PingFlow {
    /// The ping socket (connected to the destination).
    pub sock: UdpSocket,
    /// The guest's identifier, restored on replies.
    pub ident: u16,
    /// The guest's address.
    pub guest: IpAddr,
    /// Last use, in engine milliseconds.
    pub last_used: u64,
    /// Set when the flow is a pseudo-ping (a UDP socket to the echo port).
    pub pseudo: Option<PseudoEcho>,
}

/// The last echo request of a pseudo-ping flow, answered when the host's echo port answers.
#[derive(Debug, Default)]
pub struct PseudoEcho {
    /// Its sequence number.
    pub seq: u16,
    /// Its data.
    pub data: Vec<u8>,
}

/// The port pseudo-pings go to (echo).
pub const ECHO_PORT: u16 = 7;
/// What a pseudo-ping sends (libslirp's text).
pub const PSEUDO_PING_MSG: &[u8] =
    b"This is a pseudo-PING packet used by Slirp to emulate ICMP ECHO-REQUEST packets.\n";

/// Opens a ping socket (ICMP or ICMPv6 by the family of `to`) connected to `to`; fails where
/// `net.ipv4.ping_group_range` (which rules both families) excludes us.
pub fn ping_connect(to: IpAddr) -> io::Result<UdpSocket> {
    let proto = if to.is_ipv6() {
        Protocol::ICMPV6
    } else {
        Protocol::ICMPV4
    };
    let to = SocketAddr::new(to, 0);
    let s = Socket::new(
        Domain::for_address(to),
        Type::DGRAM.nonblocking(),
        Some(proto),
    )?;
    s.connect(&to.into())?;
    Ok(UdpSocket::from_std(std::net::UdpSocket::from(s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The free send space is measured once, then lowered by each write without asking the
    /// kernel, until it falls under half the window: then it is measured again.
    #[test]
    fn send_space_is_a_floor_lowered_by_writes_and_measured_when_low() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let to = l.local_addr().unwrap();
        let mut s = TcpSock::connect(to, None).unwrap();
        let (_peer, _) = l.accept().unwrap();
        while !s.connected().unwrap_or(false) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let cap = s.send_capacity();
        assert_eq!(s.send_space(), cap, "nothing queued");
        let chunk = vec![0u8; 16 << 10];
        let mut written = 0;
        while written + chunk.len() <= cap / 2 {
            written += s.write(&chunk).unwrap();
            assert_eq!(
                s.send_space(),
                cap - written,
                "the floor, not a measurement"
            );
        }
        // The peer's kernel took (and acknowledged) all of it: measuring again finds the room.
        std::thread::sleep(std::time::Duration::from_millis(20));
        s.write(&chunk).unwrap();
        assert!(s.send_space() > cap - written - chunk.len());
    }
}
