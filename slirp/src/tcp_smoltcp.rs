//! TCP translated by a userspace stack: the alternative to [`crate::tcp`]'s passt-style
//! mapping, kept to measure the two against each other (`--tcp-engine smoltcp`).
//!
//! The guest's IPv4 TCP packets feed a smoltcp [`Interface`] that accepts every destination
//! (any-IP); each guest connection ends in its own smoltcp socket listening on the address the
//! guest dialled, and the bytes are copied between that socket's buffers and a host
//! [`TcpStream`]. Unlike the passt-style path this keeps two buffers per connection and
//! acknowledges the guest's data before the host took it. Only outbound connections (guest to
//! host) go this way; host forwards and IPv6 keep the passt-style path.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use sluice_dataplane::wire::{ethernet, EthernetFrame, MacAddr};
use smoltcp::iface::{Config, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::phy::{self, Checksum, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{HardwareAddress, IpCidr, IpListenEndpoint};
use socket2::SockRef;

use crate::config::NetConfig;
use crate::counters::Drop;
use crate::frame::ETH_LEN;
use crate::tcp::GuestTx;
use crate::udp::{FlowKey, FlowTable};

/// The receive and send buffers of each smoltcp socket (the guest's window and what is read
/// ahead from the host).
const SOCKET_BUF: usize = 2 << 20;
/// How long unacknowledged data (or FIN) may wait for the guest before the connection is reset.
const UNACKED_TIMEOUT: Duration = Duration::from_secs(60);
/// Guest packets queued before the stack must take them.
const MAX_QUEUED: usize = 32;
/// Rounds of copying and sending per [`SmolTcp::service`], so one busy flow cannot hold the
/// loop forever.
const MAX_ROUNDS: usize = 256;

/// Which TCP translation the engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TcpEngine {
    /// passt-style: segments mapped straight onto host socket reads and writes.
    #[default]
    Splice,
    /// smoltcp: a userspace TCP stack terminates the guest's connection.
    Smoltcp,
}

/// One guest connection: its smoltcp socket and the host stream.
#[derive(Debug)]
struct SmolFlow {
    handle: SocketHandle,
    stream: TcpStream,
    connected: bool,
    host_eof: bool,
    host_shut: bool,
}

/// The guest side of the stack: packets from the guest in, frames to the guest out.
struct Link<'a, T: GuestTx> {
    rx: &'a mut VecDeque<Vec<u8>>,
    spare: &'a mut Vec<Vec<u8>>,
    tx: &'a mut T,
    out: EthOut<'a>,
    mtu: usize,
}

/// What the Ethernet header of a frame to the guest needs.
#[derive(Clone, Copy)]
struct EthOut<'a> {
    net: &'a NetConfig,
    guest_mac: MacAddr,
}

struct RxTok<'a> {
    packet: Vec<u8>,
    spare: &'a mut Vec<Vec<u8>>,
}

struct TxTok<'a, T: GuestTx> {
    tx: &'a mut T,
    out: EthOut<'a>,
}

impl phy::RxToken for RxTok<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let r = f(&self.packet);
        self.spare.push(self.packet);
        r
    }
}

impl<T: GuestTx> phy::TxToken for TxTok<'_, T> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let buf = self.tx.buf();
        let r = f(&mut buf[ETH_LEN..ETH_LEN + len]);
        let src: [u8; 4] = buf[ETH_LEN + 12..ETH_LEN + 16]
            .try_into()
            .unwrap_or_default();
        let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
        eth.set_dst(self.out.guest_mac);
        eth.set_src(self.out.net.mac_for(IpAddr::from(src)));
        eth.set_ethertype(ethernet::ETHERTYPE_IPV4);
        self.tx.send(ETH_LEN + len);
        r
    }
}

impl<T: GuestTx> phy::Device for Link<'_, T> {
    type RxToken<'b>
        = RxTok<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = TxTok<'b, T>
    where
        Self: 'b;

    fn receive(&mut self, _: Instant) -> Option<(RxTok<'_>, TxTok<'_, T>)> {
        let packet = self.rx.pop_front()?;
        let rx = RxTok {
            packet,
            spare: self.spare,
        };
        Some((
            rx,
            TxTok {
                tx: self.tx,
                out: self.out,
            },
        ))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxTok<'_, T>> {
        Some(TxTok {
            tx: self.tx,
            out: self.out,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        capabilities(self.mtu)
    }
}

/// A link that moves nothing: the interface takes its capabilities from it when created.
struct Unplugged(usize);

impl phy::Device for Unplugged {
    type RxToken<'b> = RxTok<'b>;
    type TxToken<'b> = TxTok<'b, NoTx>;

    fn receive(&mut self, _: Instant) -> Option<(RxTok<'_>, TxTok<'_, NoTx>)> {
        None
    }

    fn transmit(&mut self, _: Instant) -> Option<TxTok<'_, NoTx>> {
        None
    }

    fn capabilities(&self) -> DeviceCapabilities {
        capabilities(self.0)
    }
}

/// The guest side of [`Unplugged`].
struct NoTx;

impl GuestTx for NoTx {
    fn buf(&mut self) -> &mut [u8] {
        &mut []
    }
    fn send(&mut self, _: usize) {}
    fn tso(&self) -> bool {
        false
    }
    fn send_tso(&mut self, _: usize, _: u16, _: &crate::frame::Ends) {}
}

/// An IP link of the guest's MTU whose TCP checksums the engine checked before (the guest's
/// kernel may leave them partial for offload): computed on the way out only.
fn capabilities(mtu: usize) -> DeviceCapabilities {
    let mut caps = DeviceCapabilities::default();
    caps.medium = Medium::Ip;
    caps.max_transmission_unit = mtu;
    caps.checksum.tcp = Checksum::Tx;
    caps
}

/// The smoltcp translation: the interface, its sockets and their host streams.
pub struct SmolTcp {
    iface: Interface,
    sockets: SocketSet<'static>,
    flows: FlowTable<FlowKey, SmolFlow>,
    rx: VecDeque<Vec<u8>>,
    spare: Vec<Vec<u8>>,
    mtu: usize,
    token_base: usize,
}

impl SmolTcp {
    /// A stack answering for every IPv4 address behind `net`'s gateway; host streams are
    /// registered with tokens from `token_base` on, at most `max_flows` at once.
    pub fn new(net: &NetConfig, token_base: usize, max_flows: usize) -> Self {
        let mtu = usize::from(net.mtu);
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = u64::from(std::process::id());
        let mut iface = Interface::new(config, &mut Unplugged(mtu), Instant::now());
        let prefix = u32::from(net.netmask()).leading_ones() as u8;
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(net.gateway.into(), prefix));
        });
        let _ = iface.routes_mut().add_default_ipv4_route(net.gateway);
        iface.set_any_ip(true);
        SmolTcp {
            iface,
            sockets: SocketSet::new(Vec::new()),
            flows: FlowTable::new(max_flows),
            rx: VecDeque::new(),
            spare: Vec::new(),
            mtu,
            token_base,
        }
    }

    /// Whether `key` has a connection here.
    pub fn has(&self, key: &FlowKey) -> bool {
        self.flows.find(key).is_some()
    }

    /// Whether enough guest packets wait that the stack should take them now.
    pub fn backlog_full(&self) -> bool {
        self.rx.len() >= MAX_QUEUED
    }

    /// Queues a guest IPv4 packet (its TCP checksum already checked) for the stack.
    pub fn queue(&mut self, packet: &[u8]) {
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(packet);
        self.rx.push_back(buf);
    }

    /// Opens the connection `key`, to be carried by `stream` (connecting): a socket listening
    /// on the address the guest dialled, which the guest's SYN (queued next) reaches.
    pub fn open(&mut self, key: FlowKey, stream: TcpStream, reg: &Registry) -> Result<(), Drop> {
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; SOCKET_BUF]),
            tcp::SocketBuffer::new(vec![0; SOCKET_BUF]),
        );
        sock.set_nagle_enabled(false);
        // A guest that stops acknowledging loses the connection instead of holding it forever.
        sock.set_timeout(Some(UNACKED_TIMEOUT));
        let at = IpListenEndpoint {
            addr: Some(key.remote.ip().into()),
            port: key.remote.port(),
        };
        sock.listen(at).map_err(|_| Drop::Malformed)?;
        let handle = self.sockets.add(sock);
        let flow = SmolFlow {
            handle,
            stream,
            connected: false,
            host_eof: false,
            host_shut: false,
        };
        let h = match self.flows.insert(key, flow) {
            Ok(h) => h,
            Err(why) => {
                self.sockets.remove(handle);
                return Err(why);
            }
        };
        let Some((_, f)) = self.flows.get_mut(h) else {
            return Err(Drop::HostError);
        };
        let interest = Interest::READABLE | Interest::WRITABLE;
        if reg
            .register(&mut f.stream, Token(self.token_base + h), interest)
            .is_err()
        {
            self.close(h, reg);
            return Err(Drop::HostError);
        }
        Ok(())
    }

    /// A readiness event on the host stream of flow `h`.
    pub fn on_host(&mut self, h: usize) {
        let Some((_, f)) = self.flows.get_mut(h) else {
            return;
        };
        if f.connected {
            return;
        }
        let up = crate::flows::stream_connected(&f.stream);
        match up {
            Ok(up) => f.connected = up,
            Err(_) => self.sockets.get_mut::<tcp::Socket>(f.handle).abort(),
        }
    }

    /// When the stack next needs [`SmolTcp::service`] for its timers.
    pub fn delay(&mut self) -> Option<Duration> {
        if !self.rx.is_empty() {
            return Some(Duration::ZERO);
        }
        self.iface.poll_delay(Instant::now(), &self.sockets)
    }

    /// Feeds the queued guest packets to the stack, copies bytes between the sockets and the
    /// host streams, and sends what the stack has for the guest; `guest_mac` and `net` make
    /// the frames' Ethernet headers.
    pub fn service<T: GuestTx>(
        &mut self,
        tx: &mut T,
        net: &NetConfig,
        guest_mac: MacAddr,
        reg: &Registry,
    ) {
        let mut link = Link {
            rx: &mut self.rx,
            spare: &mut self.spare,
            tx,
            out: EthOut { net, guest_mac },
            mtu: self.mtu,
        };
        let now = Instant::now();
        self.iface.poll(now, &mut link, &mut self.sockets);
        for _ in 0..MAX_ROUNDS {
            let copied = relay_all(&mut self.flows, &mut self.sockets);
            let sent = self.iface.poll_egress(now, &mut link, &mut self.sockets);
            if !copied && sent == PollResult::None {
                break;
            }
        }
        for h in self.flows.handles() {
            let handle = self.flows.get_mut(h).map(|(_, f)| f.handle);
            let done = handle.is_some_and(|x| {
                matches!(self.state(x), tcp::State::Closed | tcp::State::TimeWait)
            });
            if done {
                self.close(h, reg);
            }
        }
    }

    fn state(&self, handle: SocketHandle) -> tcp::State {
        self.sockets.get::<tcp::Socket>(handle).state()
    }

    /// Closes flow `h` unless its socket took the guest's SYN (and so left the listening
    /// state): a listening socket left behind would catch the next guest's SYN to the same
    /// address. Called after the SYN was serviced.
    pub fn check_opened(&mut self, key: &FlowKey, reg: &Registry) -> Result<(), Drop> {
        let Some(h) = self.flows.find(key) else {
            return Err(Drop::Malformed);
        };
        let handle = self.flows.get_mut(h).map(|(_, f)| f.handle);
        if handle.is_some_and(|x| self.state(x) == tcp::State::Listen) {
            self.close(h, reg);
            return Err(Drop::Malformed);
        }
        Ok(())
    }

    fn close(&mut self, h: usize, reg: &Registry) {
        if let Some(mut f) = self.flows.remove(h) {
            let _ = reg.deregister(&mut f.stream);
            // Closed without the host's end seen: the guest reset, or a host error: reset.
            let reset = self.state(f.handle) == tcp::State::Closed && !f.host_eof;
            self.sockets.remove(f.handle);
            if reset {
                let _ = SockRef::from(&f.stream).set_linger(Some(std::time::Duration::ZERO));
            }
        }
    }
}

/// Copies what can move on every flow; true when any byte did.
fn relay_all(flows: &mut FlowTable<FlowKey, SmolFlow>, sockets: &mut SocketSet<'_>) -> bool {
    let mut moved = false;
    for h in flows.handles() {
        if let Some((_, f)) = flows.get_mut(h) {
            if f.connected {
                moved |= relay(f, sockets.get_mut::<tcp::Socket>(f.handle));
            }
        }
    }
    moved
}

/// Whether the guest sent its FIN.
fn guest_finished(state: tcp::State) -> bool {
    use tcp::State::*;
    matches!(state, CloseWait | LastAck | Closing | TimeWait)
}

/// Copies guest bytes to the host stream and host bytes to the socket, passing on each
/// direction's end; a host error resets the guest's connection.
fn relay(f: &mut SmolFlow, s: &mut tcp::Socket<'_>) -> bool {
    let mut moved = false;
    while s.can_recv() {
        let r = s.recv(|buf| match f.stream.write(buf) {
            Ok(n) => (n, Ok(n)),
            Err(e) => (0, Err(e)),
        });
        match r {
            Ok(Ok(n)) if n > 0 => moved = true,
            Ok(Err(e)) if e.kind() != io::ErrorKind::WouldBlock => {
                s.abort();
                return true;
            }
            _ => break,
        }
    }
    if guest_finished(s.state()) && s.recv_queue() == 0 && !f.host_shut {
        f.host_shut = true;
        let _ = f.stream.shutdown(Shutdown::Write);
    }
    while !f.host_eof && s.can_send() {
        let r = s.send(|buf| match f.stream.read(buf) {
            Ok(n) => (n, Ok(n)),
            Err(e) => (0, Err(e)),
        });
        match r {
            Ok(Ok(0)) => {
                f.host_eof = true;
                s.close();
                moved = true;
            }
            Ok(Ok(_)) => moved = true,
            Ok(Err(e)) if e.kind() != io::ErrorKind::WouldBlock => {
                s.abort();
                return true;
            }
            _ => break,
        }
    }
    moved
}

#[cfg(test)]
#[path = "tcp_smoltcp_tests.rs"]
mod tests;
