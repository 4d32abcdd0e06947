//! The event loop: one thread, one mio poll over the TAP, the host sockets of the flows, the
//! forward listeners, the API socket and the exit conditions. Frames go through the sans-IO
//! protocol modules; this module only moves bytes between them and the descriptors.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, UdpSocket, UnixListener};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use sluice_dataplane::frame::{GsoType, Offload};
use sluice_dataplane::wire::vnet::{read_vnet, write_vnet};
use sluice_dataplane::wire::{ethernet, icmpv4, EthernetFrame, Ipv4Packet, MacAddr};
use sluice_dataplane::wire::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};

use crate::api::{self, Forwards, HostFwd, Proto, Request};
use crate::config::{virtual_mac, NetConfig, DNS6, GATEWAY6, ROUTER_LL};
use crate::counters::{Counters, Drop};
use crate::flows::{self, PingFlow, TcpFlow, TcpSock, UdpFlow, UdpPath};
use crate::frame::{Ends, ETH_LEN, MAX_FRAME};
use crate::netns::VNET_HDR_LEN;
use crate::tcp::{self, GuestTx, TcpConn, Verdict};
use crate::tcp_smoltcp::{SmolTcp, TcpEngine};
use crate::udp::{self, FlowKey, FlowTable};
use crate::udp_batch::{OutMsg, UdpBatch};
use crate::wake::{Wait, WakePolicy};
use crate::{arp, dhcp, icmp, unreach};

const TAP: Token = Token(0);
const EXIT: Token = Token(1);
const PIDFD: Token = Token(2);
const API: Token = Token(3);
const TCP_BASE: usize = 1 << 20;
const UDP_BASE: usize = 2 << 20;
const PING_BASE: usize = 3 << 20;
const FWD_BASE: usize = 4 << 20;
const SMOL_BASE: usize = 5 << 20;
/// Most TCP flows at once.
pub const MAX_TCP_FLOWS: usize = 4096;
/// Most UDP flows at once.
pub const MAX_UDP_FLOWS: usize = 1024;
/// Most ICMP echo flows at once.
pub const MAX_PING_FLOWS: usize = 128;
const UDP_IDLE_MS: u64 = 60_000;
/// A read from the TAP: the virtio-net header, Ethernet and an IPv4 super-frame of 64 KiB.
const RX_BUF: usize = VNET_HDR_LEN + ETH_LEN + 65535;
const TICK_MS: u64 = 50;

/// Why the engine stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Polling or the TAP failed.
    #[error("{0}: {1}")]
    Io(&'static str, io::Error),
}

/// What the engine runs with.
#[derive(Debug)]
pub struct EngineSetup {
    /// The addressing.
    pub net: NetConfig,
    /// The host resolver DNS queries go to.
    pub resolver: Option<Ipv4Addr>,
    /// The TAP descriptor.
    pub tap: OwnedFd,
    /// `-e`: the engine stops when it becomes readable or closes.
    pub exit_fd: Option<OwnedFd>,
    /// A pidfd of the target process: the engine stops when it exits.
    pub pidfd: Option<OwnedFd>,
    /// `--api-socket`.
    pub api_socket: Option<PathBuf>,
    /// Whether the TAP's frames carry a virtio-net header ([`crate::netns::VNET_HDR_LEN`]).
    pub vnet_hdr: bool,
    /// Which translation carries the guest's outbound IPv4 TCP.
    pub tcp_engine: TcpEngine,
}

/// Frames to the guest: built in one buffer and written to the TAP.
struct TapTx {
    tap: File,
    vnet_hdr: bool,
    buf: Vec<u8>,
    frames: u64,
    /// Bytes written (a push's share tells the wake-up policy how small an exchange was).
    bytes: u64,
    failed: u64,
}

impl GuestTx for TapTx {
    fn buf(&mut self) -> &mut [u8] {
        &mut self.buf
    }
    fn send(&mut self, len: usize) {
        // Frames to the guest need no offload: an all-zero header.
        self.write_frame(&[0u8; VNET_HDR_LEN], len);
    }
    fn tso(&self) -> bool {
        self.vnet_hdr
    }
    fn send_tso(&mut self, len: usize, gso_size: u16, ends: &Ends) {
        let off = Offload {
            gso: if ends.is_v6() {
                GsoType::TcpV6
            } else {
                GsoType::TcpV4
            },
            gso_size,
            hdr_len: tcp::payload_at(ends) as u16,
            csum_partial: true,
            csum_start: ends.l4_at() as u16,
            csum_offset: TCP_CSUM_OFFSET,
            ..Offload::default()
        };
        let mut hdr = [0u8; VNET_HDR_LEN];
        if write_vnet(&off, &mut hdr).is_ok() {
            self.write_frame(&hdr, len);
        }
    }
}

/// Where the checksum lies in a TCP header.
const TCP_CSUM_OFFSET: u16 = 16;

impl TapTx {
    /// Writes a frame behind the virtio-net header `hdr` (none on a TAP without it).
    fn write_frame(&mut self, hdr: &[u8; VNET_HDR_LEN], len: usize) {
        let hdr = if self.vnet_hdr { &hdr[..] } else { &hdr[..0] };
        let parts = [io::IoSlice::new(hdr), io::IoSlice::new(&self.buf[..len])];
        match self.tap.write_vectored(&parts) {
            Ok(n) if n == hdr.len() + len => {
                self.frames += 1;
                self.bytes += n as u64;
            }
            _ => self.failed += 1,
        }
    }
}

/// A host forward and its listener.
enum Listener {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// Where the API socket lives: its directory stays open so the socket can be removed at exit
/// even from inside the sandbox.
struct ApiPath {
    dir: File,
    name: std::ffi::CString,
}

impl ApiPath {
    fn new(path: &std::path::Path) -> io::Result<ApiPath> {
        use std::os::unix::ffi::OsStrExt;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => std::path::Path::new("."),
        };
        let name = path.file_name().ok_or(io::ErrorKind::InvalidInput)?;
        Ok(ApiPath {
            dir: File::open(dir)?,
            name: std::ffi::CString::new(name.as_bytes())
                .map_err(|_| io::ErrorKind::InvalidInput)?,
        })
    }
}

/// The running network.
pub struct Engine {
    poll: Poll,
    net: NetConfig,
    resolver: Option<Ipv4Addr>,
    tx: TapTx,
    rx: Vec<u8>,
    guest_mac: MacAddr,
    counters: Counters,
    tcp: FlowTable<FlowKey, TcpFlow>,
    udp: FlowTable<FlowKey, UdpFlow>,
    /// Guest datagrams of one flow waiting to leave in one system call.
    udp_out: UdpBatch,
    /// The messages [`UdpBatch::plan`] made of them (kept to reuse its allocation).
    udp_plan: Vec<OutMsg>,
    ping: FlowTable<(u16, IpAddr), PingFlow>,
    forwards: Forwards,
    listeners: Vec<(u32, Listener)>,
    api: Option<(UnixListener, ApiPath)>,
    _exit: Option<OwnedFd>,
    _pidfd: Option<OwnedFd>,
    start: Instant,
    next_iss: u32,
    window_watch: Vec<usize>,
    /// TCP flows owing the guest an ACK at the end of the batch ([`tcp::ACK_EVERY`]).
    ack_due: Vec<usize>,
    /// The frame being handled has an L4 checksum the guest left partial (offload).
    csum_partial: bool,
    /// The guest's IPv6 address in the prefix, once seen (the default of IPv6 forwards).
    guest6: Option<std::net::Ipv6Addr>,
    /// When the next unsolicited router advertisement is due (engine milliseconds).
    next_ra: u64,
    /// The smoltcp translation, when it carries outbound IPv4 TCP (`--tcp-engine smoltcp`).
    smol: Option<SmolTcp>,
    /// How the loop waits next (naps in bulk, spins in request/response).
    wake: WakePolicy,
}

fn io(what: &'static str) -> impl Fn(io::Error) -> EngineError {
    move |e| EngineError::Io(what, e)
}

impl Engine {
    /// Sets up the poll and the API socket (so it accepts requests before readiness is
    /// signalled).
    pub fn new(s: EngineSetup) -> Result<Engine, EngineError> {
        let poll = Poll::new().map_err(io("epoll"))?;
        crate::sys::set_nonblocking(std::os::fd::AsFd::as_fd(&s.tap)).map_err(io("tap"))?;
        let reg = poll.registry();
        reg.register(&mut SourceFd(&s.tap.as_raw_fd()), TAP, Interest::READABLE)
            .map_err(io("register tap"))?;
        if let Some(fd) = &s.exit_fd {
            reg.register(&mut SourceFd(&fd.as_raw_fd()), EXIT, Interest::READABLE)
                .map_err(io("register exit fd"))?;
        }
        if let Some(fd) = &s.pidfd {
            reg.register(&mut SourceFd(&fd.as_raw_fd()), PIDFD, Interest::READABLE)
                .map_err(io("register pidfd"))?;
        }
        let api = match s.api_socket {
            Some(path) => {
                let _ = std::fs::remove_file(&path);
                let mut l = UnixListener::bind(&path).map_err(io("api socket"))?;
                reg.register(&mut l, API, Interest::READABLE)
                    .map_err(io("register api"))?;
                Some((l, ApiPath::new(&path).map_err(io("api socket directory"))?))
            }
            None => None,
        };
        let smol = (s.tcp_engine == TcpEngine::Smoltcp)
            .then(|| SmolTcp::new(&s.net, SMOL_BASE, MAX_TCP_FLOWS));
        let seed = std::process::id().wrapping_mul(2_654_435_761)
            ^ Instant::now().elapsed().subsec_nanos();
        Ok(Engine {
            poll,
            net: s.net,
            resolver: s.resolver,
            tx: TapTx {
                vnet_hdr: s.vnet_hdr,
                tap: File::from(s.tap),
                buf: vec![0; MAX_FRAME],
                frames: 0,
                bytes: 0,
                failed: 0,
            },
            rx: vec![0; RX_BUF],
            guest_mac: MacAddr::BROADCAST,
            counters: Counters::default(),
            tcp: FlowTable::new(MAX_TCP_FLOWS),
            udp: FlowTable::new(MAX_UDP_FLOWS),
            udp_out: UdpBatch::new(),
            udp_plan: Vec::new(),
            ping: FlowTable::new(MAX_PING_FLOWS),
            forwards: Forwards::default(),
            listeners: Vec::new(),
            api,
            _exit: s.exit_fd,
            _pidfd: s.pidfd,
            start: Instant::now(),
            next_iss: seed,
            window_watch: Vec::new(),
            ack_due: Vec::new(),
            csum_partial: false,
            guest6: None,
            next_ra: 0,
            smol,
            wake: WakePolicy::default(),
        })
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// The counters so far (frames written to the TAP included).
    pub fn counters(&self) -> Counters {
        let mut c = self.counters.clone();
        c.tx_frames = self.tx.frames;
        c.host_error += self.tx.failed;
        c
    }

    /// Runs until the exit fd or the target process says so.
    pub fn run(&mut self) -> Result<(), EngineError> {
        let mut events = Events::with_capacity(256);
        let mut next_tick: u64 = 0;
        loop {
            let wait = if self.window_watch.is_empty() {
                next_tick.saturating_sub(self.now()).min(self.smol_delay())
            } else {
                0
            };
            let timeout = match self.wake.next(Instant::now()) {
                Wait::Nap(d) => {
                    std::thread::sleep(d);
                    Duration::ZERO
                }
                Wait::Poll => {
                    std::thread::yield_now();
                    Duration::ZERO
                }
                Wait::Block => Duration::from_millis(wait.max(1)),
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => r.map_err(io("epoll_wait"))?,
            }
            for ev in events.iter() {
                match ev.token() {
                    TAP => self.drain_tap()?,
                    EXIT | PIDFD => return Ok(()),
                    API => self.serve_api(),
                    Token(t) if t >= SMOL_BASE => self.on_smol_host(t - SMOL_BASE),
                    Token(t) if t >= FWD_BASE => self.on_listener((t - FWD_BASE) as u32),
                    Token(t) if t >= PING_BASE => self.on_ping(t - PING_BASE),
                    Token(t) if t >= UDP_BASE => self.on_udp(t - UDP_BASE),
                    Token(t) if t >= TCP_BASE => self.on_tcp(t - TCP_BASE, ev.is_writable()),
                    Token(_) => {}
                }
            }
            self.check_windows();
            self.service_smol();
            let now = self.now();
            if now >= next_tick {
                self.tick(now);
                next_tick = now + TICK_MS;
            }
        }
    }

    /// Reads the TAP until it is empty; guest datagrams gathered meanwhile leave at the end,
    /// and the ACKs owed go out.
    fn drain_tap(&mut self) -> Result<(), EngineError> {
        let r = self.read_tap();
        self.end_batch();
        r
    }

    /// What waits for the end of a batch of guest frames: datagrams and ACKs.
    fn end_batch(&mut self) {
        self.flush_udp();
        for h in std::mem::take(&mut self.ack_due) {
            if let Some((_, f)) = self.tcp.get_mut(h) {
                f.conn.flush_ack(&f.sock, &mut self.tx);
            }
        }
    }

    fn read_tap(&mut self) -> Result<(), EngineError> {
        loop {
            let n = match self.tx.tap.read(&mut self.rx) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(EngineError::Io("read tap", e)),
            };
            self.counters.rx_frames += 1;
            self.wake.on_guest_frame(n);
            let frame = std::mem::take(&mut self.rx);
            let r = if self.tx.vnet_hdr {
                self.on_vnet_frame(&frame[..n])
            } else {
                self.frame_in(&frame[..n])
            };
            if let Err(why) = r {
                self.counters.drop(why);
            }
            self.rx = frame;
        }
    }

    /// Handles one frame read with its virtio-net header: a TCP super-frame is handled as one
    /// large segment, and a partial (offloaded) checksum is not verified.
    fn on_vnet_frame(&mut self, bytes: &[u8]) -> Result<(), Drop> {
        let off = read_vnet(bytes).map_err(|_| Drop::Malformed)?;
        let frame = &bytes[VNET_HDR_LEN..];
        self.csum_partial = off.csum_partial || off.data_valid;
        let r = self.frame_in(frame);
        self.csum_partial = false;
        r
    }

    /// Handles one frame from the guest (a datagram it carries leaves, and an ACK it is owed
    /// goes out, before this returns).
    pub fn on_frame(&mut self, frame: &[u8]) -> Result<(), Drop> {
        let r = self.frame_in(frame);
        self.end_batch();
        r
    }

    /// Handles one frame from the guest; its datagram may wait in the batch.
    fn frame_in(&mut self, frame: &[u8]) -> Result<(), Drop> {
        let eth = EthernetFrame::new_checked(frame).map_err(|_| Drop::Malformed)?;
        if !eth.src().is_multicast() {
            self.guest_mac = eth.src();
        }
        match eth.ethertype() {
            ethernet::ETHERTYPE_ARP => {
                if let Some(len) = arp::reply(eth.payload(), &self.net, &mut self.tx.buf)? {
                    self.tx.send(len);
                }
                Ok(())
            }
            ethernet::ETHERTYPE_IPV4 => self.on_ipv4(&frame[ETH_LEN..]),
            ethernet::ETHERTYPE_IPV6 => self.on_ipv6(frame),
            _ => Err(Drop::Unsupported),
        }
    }

    fn on_ipv4(&mut self, bytes: &[u8]) -> Result<(), Drop> {
        let ip = Ipv4Packet::new_checked(bytes).map_err(|_| Drop::Malformed)?;
        if !ip.verify_checksum() {
            return Err(Drop::Malformed);
        }
        if ip.is_fragment() {
            return Err(Drop::Unsupported);
        }
        let (src, dst) = (ip.src(), ip.dst());
        match ip.protocol() {
            IPPROTO_TCP if self.smol.is_some() => {
                let end = ip.header_len() + ip.payload().len();
                self.on_smol_tcp(&bytes[..end], ip.payload(), src, dst)
            }
            IPPROTO_TCP => self.on_guest_tcp(ip.payload(), src.into(), dst.into()),
            IPPROTO_UDP => self.on_guest_udp(ip.payload(), src.into(), dst.into()),
            IPPROTO_ICMP => self.on_guest_icmp(ip.payload(), src, dst),
            _ => Err(Drop::Unsupported),
        }
    }

    /// The ends of frames from `from` (as the guest sees it) to the guest at `guest`.
    fn ends(&self, from: IpAddr, guest: IpAddr) -> Ends {
        Ends {
            src_mac: self.net.mac_for(from),
            dst_mac: self.guest_mac,
            src: from,
            dst: guest,
        }
    }

    /// True for the addresses the engine answers for itself (echo, neighbour discovery).
    fn is_local(&self, ip: IpAddr) -> bool {
        let dns = self.net.dns_enabled;
        match ip {
            IpAddr::V4(ip) => ip == self.net.gateway || (dns && ip == self.net.dns),
            IpAddr::V6(ip) => {
                self.net.ipv6 && (ip == GATEWAY6 || ip == ROUTER_LL || (dns && ip == DNS6))
            }
        }
    }

    fn on_guest_icmp(&mut self, l4: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> Result<(), Drop> {
        let echo = icmp::parse_echo(l4, icmpv4::ECHO_REQUEST)?;
        self.on_guest_echo(&echo, src.into(), dst.into())
    }

    /// An echo request from the guest: answered here for the local addresses, carried by a
    /// ping socket to other hosts, or where those are not allowed, by slirp's pseudo-ping (a
    /// UDP datagram to the echo port: any answer is an echo reply, an error an unreachable).
    fn on_guest_echo(
        &mut self,
        echo: &icmp::Echo<'_>,
        src: IpAddr,
        dst: IpAddr,
    ) -> Result<(), Drop> {
        if self.is_local(dst) {
            let ends = self.ends(dst, src);
            let len = icmp::reply_frame(&mut self.tx.buf, &ends, echo);
            self.tx.send(len);
            return Ok(());
        }
        let h = self.ping_flow((echo.ident, dst), src)?;
        let flow = self.ping.get_mut(h).ok_or(Drop::HostError)?.1;
        flow.last_used = self.start.elapsed().as_millis() as u64;
        if let Some(pseudo) = &mut flow.pseudo {
            pseudo.seq = echo.seq;
            pseudo.data.clear();
            pseudo.data.extend_from_slice(echo.data);
            flow.sock
                .send(flows::PSEUDO_PING_MSG)
                .map_err(|_| Drop::HostError)?;
            return Ok(());
        }
        let mut msg = [0u8; 1500];
        let data = &echo.data[..echo.data.len().min(msg.len() - icmpv4::HEADER_LEN)];
        let request = icmp::echo_types(dst).0;
        let n = icmp::write_echo(&mut msg, request, &icmp::Echo { data, ..*echo });
        flow.sock.send(&msg[..n]).map_err(|_| Drop::HostError)?;
        Ok(())
    }

    /// The echo flow of `key` (identifier, remote), opened if new.
    fn ping_flow(&mut self, key: (u16, IpAddr), guest: IpAddr) -> Result<usize, Drop> {
        if let Some(h) = self.ping.find(&key) {
            return Ok(h);
        }
        let to = self
            .net
            .host_target(SocketAddr::new(key.1, flows::ECHO_PORT), self.resolver)?;
        let (sock, pseudo) = match flows::ping_connect(to.ip()) {
            Ok(s) => (s, None),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                let s = flows::udp_connect(to, self.net.outbound_for(to))
                    .map_err(|_| Drop::NoPingSocket)?;
                (s, Some(flows::PseudoEcho::default()))
            }
            Err(_) => return Err(Drop::NoPingSocket),
        };
        let flow = PingFlow {
            sock,
            ident: key.0,
            guest,
            last_used: self.now(),
            pseudo,
        };
        let h = self.ping.insert(key, flow)?;
        let flow = self.ping.get_mut(h).ok_or(Drop::HostError)?.1;
        self.poll
            .registry()
            .register(&mut flow.sock, Token(PING_BASE + h), Interest::READABLE)
            .map_err(|_| Drop::HostError)?;
        Ok(h)
    }

    fn on_ping(&mut self, h: usize) {
        let Some((key, flow)) = self.ping.get_mut(h) else {
            return;
        };
        let (remote, ident, guest) = (key.1, flow.ident, flow.guest);
        let (request, reply) = icmp::echo_types(remote);
        let mut msg = [0u8; 1500];
        let ends = self.ends(remote, guest);
        loop {
            let Some((_, flow)) = self.ping.get_mut(h) else {
                return;
            };
            let got = flow.sock.recv(&mut msg);
            let len = match (got, &flow.pseudo) {
                (Err(e), _) if e.kind() == io::ErrorKind::WouldBlock => return,
                (Ok(_), Some(p)) => {
                    let echo = icmp::Echo {
                        ident,
                        seq: p.seq,
                        data: &p.data,
                    };
                    icmp::reply_frame(&mut self.tx.buf, &ends, &echo)
                }
                (Err(e), Some(p)) => {
                    let echo = icmp::Echo {
                        ident,
                        seq: p.seq,
                        data: &[],
                    };
                    let proto = if remote.is_ipv6() {
                        IPPROTO_ICMPV6
                    } else {
                        IPPROTO_ICMP
                    };
                    let why = unreach::Why::from_io(&e);
                    unreach::error_frame(&mut self.tx.buf, &ends, proto, why, |q| {
                        icmp::write_echo(q, request, &echo);
                    })
                }
                (Err(_), None) => return,
                (Ok(n), None) => {
                    let parsed = if remote.is_ipv6() {
                        icmp::parse_echo6(&msg[..n], reply)
                    } else {
                        icmp::parse_echo(&msg[..n], reply)
                    };
                    match parsed {
                        Ok(echo) => icmp::reply_frame(
                            &mut self.tx.buf,
                            &ends,
                            &icmp::Echo { ident, ..echo },
                        ),
                        Err(why) => {
                            self.counters.drop(why);
                            continue;
                        }
                    }
                }
            };
            self.tx.send(len);
        }
    }
}

#[path = "engine_l4.rs"]
mod l4;

#[path = "engine_v6.rs"]
mod v6;

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
