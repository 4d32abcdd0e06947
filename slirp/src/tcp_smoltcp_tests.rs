//! Both TCP engines end to end: a guest TCP stack (smoltcp, on Ethernet) on one end of a
//! socketpair, the engine on the other, and an echo server on the host's loopback reached
//! through the gateway.

use super::*;
use crate::engine::{Engine, EngineSetup};
use smoltcp::iface::{Config, SocketHandle};
use smoltcp::wire::{EthernetAddress, IpAddress};
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::time::Instant as StdInstant;

const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

/// The guest's NIC: frames over a datagram socket.
struct GuestNic(UnixDatagram);

struct GuestRx(Vec<u8>);
struct GuestTxTok<'a>(&'a UnixDatagram);

impl phy::RxToken for GuestRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for GuestTxTok<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        // The socketpair queues only net.unix.max_dgram_qlen frames: wait for the engine to
        // read (a loaded machine may not run it at once) instead of failing.
        let deadline = StdInstant::now() + std::time::Duration::from_secs(10);
        loop {
            match self.0.send(&buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(StdInstant::now() < deadline, "the engine stopped reading");
                    std::thread::sleep(std::time::Duration::from_micros(100));
                }
                sent => {
                    sent.unwrap();
                    break;
                }
            }
        }
        r
    }
}

impl phy::Device for GuestNic {
    type RxToken<'a> = GuestRx;
    type TxToken<'a> = GuestTxTok<'a>;

    fn receive(&mut self, _: Instant) -> Option<(GuestRx, GuestTxTok<'_>)> {
        let mut buf = vec![0u8; 65536];
        let n = self.0.recv(&mut buf).ok()?;
        buf.truncate(n);
        Some((GuestRx(buf), GuestTxTok(&self.0)))
    }

    fn transmit(&mut self, _: Instant) -> Option<GuestTxTok<'_>> {
        Some(GuestTxTok(&self.0))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

/// Runs `engine` on one end of a socketpair in a thread; returns the guest's end and the
/// stream whose closing stops the engine.
fn start(engine: TcpEngine) -> (UnixDatagram, UnixStream, std::thread::JoinHandle<()>) {
    let (tap, guest) = UnixDatagram::pair().unwrap();
    let (exit, stop) = UnixStream::pair().unwrap();
    let t = std::thread::spawn(move || {
        let mut net = NetConfig::from_cidr("10.0.2.0/24", 1500).unwrap();
        net.dns_enabled = false;
        let mut e = Engine::new(EngineSetup {
            net,
            resolver: None,
            tap: OwnedFd::from(tap),
            exit_fd: Some(OwnedFd::from(exit)),
            pidfd: None,
            api_socket: None,
            vnet_hdr: false,
            tcp_engine: engine,
        })
        .unwrap();
        e.run().unwrap();
    });
    guest.set_nonblocking(true).unwrap();
    (guest, stop, t)
}

/// An echo server on the host's loopback that serves `n` connections, each in its thread;
/// joined, it gives the bytes each echoed.
fn echo_server(n: usize) -> (u16, std::thread::JoinHandle<Vec<usize>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let echo = |mut s: std::net::TcpStream| {
            let mut buf = vec![0u8; 65536];
            let mut total = 0;
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
                total += n;
            }
            total
        };
        let conns: Vec<_> = (0..n)
            .map(|_| {
                let (s, _) = l.accept().unwrap();
                std::thread::spawn(move || echo(s))
            })
            .collect();
        conns.into_iter().map(|c| c.join().unwrap()).collect()
    });
    (port, t)
}

/// One guest connection: its socket and how far it got.
struct GuestConn<'d> {
    handle: SocketHandle,
    data: &'d [u8],
    sent: usize,
    got: Vec<u8>,
    closed: bool,
}

impl GuestConn<'_> {
    /// Sends, half-closes once all is sent, reads; true when the connection is over.
    fn step(&mut self, s: &mut tcp::Socket<'_>) -> bool {
        if s.can_send() && self.sent < self.data.len() {
            self.sent += s.send_slice(&self.data[self.sent..]).unwrap();
        }
        if self.sent == self.data.len() && !self.closed {
            s.close();
            self.closed = true;
        }
        while s.can_recv() {
            s.recv(|b| {
                self.got.extend_from_slice(b);
                (b.len(), ())
            })
            .unwrap();
        }
        let echoed = self.closed && !s.may_recv() && self.got.len() >= self.data.len();
        echoed || s.state() == tcp::State::Closed
    }
}

/// The guest opens one connection per entry of `data`, all at once, to the gateway's `port`,
/// sends it, half-closes and reads the echo until the server closes; returns what came back
/// on each.
fn guest_echo(nic: UnixDatagram, port: u16, data: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut dev = GuestNic(nic);
    let mut cfg = Config::new(EthernetAddress([2, 0, 0, 0, 0, 0x64]).into());
    cfg.random_seed = 7;
    let mut iface = Interface::new(cfg, &mut dev, Instant::now());
    iface.update_ip_addrs(|a| {
        a.push(IpCidr::new(GUEST.into(), 24)).unwrap();
    });
    iface.routes_mut().add_default_ipv4_route(GATEWAY).unwrap();
    let mut sockets = SocketSet::new(Vec::new());
    let mut conns: Vec<GuestConn<'_>> = data
        .iter()
        .zip(49152..)
        .map(|(d, local_port)| {
            let mut s = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; 256 << 10]),
                tcp::SocketBuffer::new(vec![0; 256 << 10]),
            );
            let remote = (IpAddress::from(GATEWAY), port);
            s.connect(iface.context(), remote, local_port).unwrap();
            GuestConn {
                handle: sockets.add(s),
                data: d,
                sent: 0,
                got: Vec::new(),
                closed: false,
            }
        })
        .collect();
    let deadline = StdInstant::now() + std::time::Duration::from_secs(30);
    loop {
        assert!(StdInstant::now() < deadline, "stalled");
        iface.poll(Instant::now(), &mut dev, &mut sockets);
        let mut done = true;
        for c in &mut conns {
            done &= c.step(sockets.get_mut::<tcp::Socket>(c.handle));
        }
        if done {
            return conns.into_iter().map(|c| c.got).collect();
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

fn echo_through(engine: TcpEngine) {
    let (nic, stop, engine_thread) = start(engine);
    let (port, server) = echo_server(1);
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let got = guest_echo(nic, port, &[&data]);
    assert_eq!(server.join().unwrap(), [data.len()]);
    assert!(got[0] == data, "{engine:?}: the echo differs");
    drop(stop);
    engine_thread.join().unwrap();
}

#[test]
fn smoltcp_engine_carries_a_connection_both_ways() {
    echo_through(TcpEngine::Smoltcp);
}

#[test]
fn splice_engine_carries_a_connection_both_ways() {
    echo_through(TcpEngine::Splice);
}

/// Connections opened at once to the same destination each keep their own bytes (one
/// listening socket per destination at a time).
#[test]
fn smoltcp_engine_keeps_concurrent_connections_apart() {
    let (nic, stop, engine_thread) = start(TcpEngine::Smoltcp);
    let (port, server) = echo_server(3);
    let data: Vec<Vec<u8>> = (0..3u8)
        .map(|k| vec![b'a' + k; 200_000 + usize::from(k) * 1000])
        .collect();
    let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    let got = guest_echo(nic, port, &refs);
    let mut echoed = server.join().unwrap();
    echoed.sort_unstable();
    assert_eq!(echoed, [200_000, 201_000, 202_000]);
    for (g, d) in got.iter().zip(&data) {
        assert!(g == d, "connection {} got another's bytes", d[0] as char);
    }
    drop(stop);
    engine_thread.join().unwrap();
}

#[test]
fn refused_destination_gets_a_reset_from_the_smoltcp_engine() {
    let (nic, stop, engine_thread) = start(TcpEngine::Smoltcp);
    // Nothing listens on port 1 of the host's loopback: the connection is refused.
    let got = guest_echo(nic, 1, &[b"x"]);
    assert!(got[0].is_empty());
    drop(stop);
    engine_thread.join().unwrap();
}

#[test]
fn link_capabilities_skip_checking_offloaded_checksums() {
    let caps = capabilities(65520);
    assert_eq!(caps.medium, Medium::Ip);
    assert_eq!(caps.max_transmission_unit, 65520);
    assert!(!caps.checksum.tcp.rx() && caps.checksum.tcp.tx());
}
