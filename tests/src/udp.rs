//! UDP checks that behave like a real UDP client (a resolver, a game client): send, wait a
//! while, send again, and give up only after a bounded number of tries. A datagram may be
//! lost or answered late on a loaded machine (an ARP exchange on the way, a forked server that
//! takes a moment to start); a one-shot check with a fixed timeout turns that into a flaky
//! test, while a real client would simply have retried.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

/// How many times [`ask`] sends its datagram.
pub const TRIES: u32 = 5;
/// How long [`ask`] waits for an answer after each send.
pub const PER_TRY: Duration = Duration::from_secs(1);

/// Sends `request` to `to` from inside the network namespace at `ns` (a `/run/netns/...` or
/// `/proc/PID/ns/net` path) and returns the first datagram that comes back from `to`,
/// resending `request` up to `tries` times from the same socket, each time waiting up to
/// `per_try` (an answer to an earlier send counts). `None` when nothing came within
/// `tries * per_try`; an ICMP port unreachable (a server not listening yet) counts as no
/// answer and the next try goes ahead.
pub fn exchange(
    ns: impl AsRef<Path>,
    to: SocketAddr,
    request: &[u8],
    tries: u32,
    per_try: Duration,
) -> Option<Vec<u8>> {
    let request = request.to_vec();
    crate::netns::in_ns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind a UDP socket");
        s.connect(to).expect("connect the UDP socket");
        s.set_read_timeout(Some(per_try))
            .expect("set a read timeout");
        let mut buf = vec![0u8; 65_536];
        for _ in 0..tries {
            // A send can fail with ECONNREFUSED from an earlier try's ICMP error: try again.
            let _ = s.send(&request);
            if let Ok(n) = s.recv(&mut buf) {
                return Some(buf[..n].to_vec());
            }
        }
        None
    })
}

/// [`exchange`] with [`TRIES`] tries of [`PER_TRY`] each (at most 5 s in all).
pub fn ask(ns: impl AsRef<Path>, to: SocketAddr, request: &[u8]) -> Option<Vec<u8>> {
    exchange(ns, to, request, TRIES, PER_TRY)
}

/// `UDP_SEGMENT` from `linux/udp.h` (the libc crate defines it only for uclibc).
const UDP_SEGMENT: libc::c_int = 103;

/// A UDP flow between two namespaces: a sender connected to `to`, and a receiver bound to
/// `to` and connected back to the sender, for tests of what a forwarder does with datagrams.
pub struct UdpFlow {
    tx: UdpSocket,
    rx: UdpSocket,
}

impl UdpFlow {
    /// The flow from the namespace at `from` to `to` in the namespace at `at`.
    pub fn new((from, at): (&Path, &Path), to: SocketAddr) -> UdpFlow {
        let rx = crate::netns::in_ns(at, move || UdpSocket::bind(to).expect("bind the receiver"));
        rx.set_read_timeout(Some(PER_TRY / 4))
            .expect("read timeout");
        let tx = crate::netns::in_ns(from, move || {
            let any = if to.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" };
            let s = UdpSocket::bind(any).expect("bind the sender");
            s.connect(to).expect("connect the sender");
            s
        });
        tx.set_read_timeout(Some(PER_TRY / 4))
            .expect("read timeout");
        UdpFlow { tx, rx }
    }

    /// Sends `datagram` from the receiver back to the sender, up to [`TRIES`] times until it
    /// arrives (after at least one datagram of the sender's reached the receiver, so the
    /// receiver knows where the sender is): true when it did.
    pub fn reply(&self, datagram: &[u8]) -> bool {
        let mut buf = vec![0u8; 65_536];
        for _ in 0..TRIES {
            let _ = self.tx.send(b"hello");
            let Ok((_, from)) = self.rx.recv_from(&mut buf) else {
                continue;
            };
            let _ = self.rx.send_to(datagram, from);
            if self.tx.recv(&mut buf).is_ok_and(|n| &buf[..n] == datagram) {
                return true;
            }
        }
        false
    }

    /// Sends `payload` as one UDP super-frame that leaves the sender's socket whole and is cut
    /// into datagrams of `size` bytes further on (the `UDP_SEGMENT` option, as QUIC stacks and
    /// wireguard-go send), up to [`TRIES`] times until the datagrams of one send have all
    /// arrived in order; returns the datagrams received (empty when none came).
    pub fn segmented(&self, payload: &[u8], size: u16) -> Vec<Vec<u8>> {
        let size_opt = libc::c_int::from(size);
        // SAFETY: setsockopt on a socket we own, with a pointer to a c_int and its length.
        let ret = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&self.tx),
                libc::SOL_UDP,
                UDP_SEGMENT,
                std::ptr::from_ref(&size_opt).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(ret, 0, "UDP_SEGMENT: {}", std::io::Error::last_os_error());
        let want = payload.len().div_ceil(usize::from(size));
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut buf = vec![0u8; 65_536];
        for _ in 0..TRIES {
            self.tx.send(payload).expect("send the super-frame");
            while let Ok(n) = self.rx.recv(&mut buf) {
                got.push(buf[..n].to_vec());
            }
            if got.windows(want).any(|w| w.concat() == payload) {
                break;
            }
        }
        got
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs on the test's own namespace: an echo server that ignores the first datagram, the
    /// way a lost datagram looks to the client.
    #[test]
    fn retries_until_answered_and_gives_up_bounded() {
        if !crate::engines::is_root() {
            eprintln!("skipped: entering a namespace needs root");
            return;
        }
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = server.local_addr().unwrap();
        let echo = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let (_, _) = server.recv_from(&mut buf).unwrap();
            let (n, from) = server.recv_from(&mut buf).unwrap();
            server.send_to(&buf[..n], from).unwrap();
        });
        let me = "/proc/self/ns/net";
        let got = exchange(me, to, b"hi", 3, Duration::from_millis(300));
        assert_eq!(got.as_deref(), Some(&b"hi"[..]));
        echo.join().unwrap();
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let start = std::time::Instant::now();
        let got = exchange(
            me,
            silent.local_addr().unwrap(),
            b"hi",
            2,
            Duration::from_millis(100),
        );
        assert_eq!(got, None);
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
