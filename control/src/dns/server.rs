//! The embedded resolvers: one UDP socket and one TCP listener at 127.0.0.11:53 inside each
//! sandbox's network namespace (opened by a short-lived thread that enters the namespace; the
//! sockets stay there), served by the daemon's tokio runtime. Local names come from the
//! current [`NameTable`]; other queries are relayed, as they came, to the upstream resolvers
//! from the daemon's own namespace (so the host's loopback resolvers are reachable too).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{timeout, Instant};

use crate::model::Sandbox;

use super::names::{Action, NameTable};
use super::wire::{self, Header, Rcode, UDP_REPLY_MAX};
use super::RESOLVER_IP;

/// The resolver's port.
pub const DNS_PORT: u16 = 53;
/// How long one upstream gets to answer before the next is tried.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Queries being forwarded at once per sandbox and protocol; more are dropped (the client
/// retries), so a flooding container cannot make the daemon open sockets without bound.
const MAX_INFLIGHT: usize = 256;
/// How long a TCP client may stay idle between queries.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Largest query read from a sandbox over UDP (EDNS clients send up to a few KiB).
const QUERY_BUF: usize = 4096;

/// Why a sandbox's resolver could not be started.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The namespace file could not be opened (the sandbox is gone).
    #[error("{path}: {source}")]
    Namespace {
        /// The namespace file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// Entering the namespace failed.
    #[error("setns {path}: {source}")]
    Setns {
        /// The namespace file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The namespace's loopback could not be brought up.
    #[error("bringing up lo: {0}")]
    Loopback(io::Error),
    /// 127.0.0.11:53 could not be bound in the namespace (something else listens there).
    #[error("binding {addr} ({proto}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// udp or tcp.
        proto: &'static str,
        /// What the OS said.
        source: io::Error,
    },
    /// The sockets could not be registered with the runtime.
    #[error("registering the resolver's sockets: {0}")]
    Register(io::Error),
    /// Called outside a tokio runtime.
    #[error("the DNS server must be used from inside a tokio runtime")]
    NoRuntime,
    /// The thread that enters the namespace died.
    #[error("the namespace thread panicked")]
    Thread,
}

/// The state every resolver task shares.
struct Shared {
    names: ArcSwap<NameTable>,
    upstreams: Vec<SocketAddr>,
    upstream_timeout: Duration,
}

impl Shared {
    /// The upstreams of `sandbox`: its own (`--dns`) or the daemon's.
    fn upstreams_of(&self, sandbox: &Sandbox) -> Vec<SocketAddr> {
        let names = self.names.load();
        names.upstreams(sandbox).unwrap_or(&self.upstreams).to_vec()
    }
}

/// A running resolver; dropping it stops its tasks, which closes its sockets.
struct Resolver {
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Resolver {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The daemon's embedded DNS: a resolver per sandbox on a user-defined network.
pub struct DnsServer {
    shared: Arc<Shared>,
    resolvers: Mutex<HashMap<Sandbox, Resolver>>,
}

/// The namespace file of a sandbox.
pub fn netns_path(sandbox: &Sandbox) -> PathBuf {
    match sandbox {
        Sandbox::Netns(p) => p.clone(),
        Sandbox::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
    }
}

/// The host's resolvers as upstream socket addresses (port 53).
pub fn upstreams_from(nameservers: &[IpAddr]) -> Vec<SocketAddr> {
    nameservers
        .iter()
        .map(|ip| SocketAddr::new(*ip, DNS_PORT))
        .collect()
}

/// Opens 127.0.0.11:53 (UDP and TCP, non-blocking) inside the namespace at `path`, from a
/// thread that enters it; the sockets stay in that namespace.
fn open_in_namespace(
    path: PathBuf,
) -> Result<(std::net::UdpSocket, std::net::TcpListener), DnsError> {
    std::thread::spawn(move || {
        let ns = File::open(&path).map_err(|source| DnsError::Namespace {
            path: path.clone(),
            source,
        })?;
        // Only this thread enters the namespace, and it exits afterwards.
        if let Err(source) = sluice_sys::enter_netns(&ns) {
            return Err(DnsError::Setns { path, source });
        }
        sluice_sys::loopback_up().map_err(DnsError::Loopback)?;
        let addr = SocketAddr::V4(SocketAddrV4::new(RESOLVER_IP, DNS_PORT));
        let bind = |proto, source| DnsError::Bind {
            addr,
            proto,
            source,
        };
        let udp = std::net::UdpSocket::bind(addr).map_err(|e| bind("udp", e))?;
        udp.set_nonblocking(true).map_err(|e| bind("udp", e))?;
        let tcp = std::net::TcpListener::bind(addr).map_err(|e| bind("tcp", e))?;
        tcp.set_nonblocking(true).map_err(|e| bind("tcp", e))?;
        Ok((udp, tcp))
    })
    .join()
    .map_err(|_| DnsError::Thread)?
}

impl DnsServer {
    /// A server with no resolvers yet that forwards unknown names to `upstreams` (normally
    /// the host's nameservers, loopback ones included: forwarding happens in the daemon's
    /// namespace).
    pub fn new(upstreams: Vec<SocketAddr>) -> DnsServer {
        DnsServer::with_timeout(upstreams, UPSTREAM_TIMEOUT)
    }

    /// [`DnsServer::new`] with another per-upstream timeout.
    pub fn with_timeout(upstreams: Vec<SocketAddr>, upstream_timeout: Duration) -> DnsServer {
        DnsServer {
            shared: Arc::new(Shared {
                names: ArcSwap::from_pointee(NameTable::default()),
                upstreams,
                upstream_timeout,
            }),
            resolvers: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces the names every resolver answers (after each connect and disconnect).
    pub fn set_names(&self, names: NameTable) {
        self.shared.names.store(Arc::new(names));
    }

    /// Starts the resolver of `sandbox` (nothing if it runs already). Must be called from
    /// inside the daemon's tokio runtime; it blocks briefly while a thread enters the
    /// namespace.
    pub fn add_sandbox(&self, sandbox: &Sandbox) -> Result<(), DnsError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| DnsError::NoRuntime)?;
        let mut resolvers = self
            .resolvers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if resolvers.contains_key(sandbox) {
            return Ok(());
        }
        let (udp, tcp) = open_in_namespace(netns_path(sandbox))?;
        let (udp, tcp) = {
            let _guard = rt.enter();
            (
                UdpSocket::from_std(udp).map_err(DnsError::Register)?,
                TcpListener::from_std(tcp).map_err(DnsError::Register)?,
            )
        };
        let tasks = [
            rt.spawn(serve_udp(udp, sandbox.clone(), self.shared.clone())),
            rt.spawn(serve_tcp(tcp, sandbox.clone(), self.shared.clone())),
        ];
        resolvers.insert(sandbox.clone(), Resolver { tasks });
        Ok(())
    }

    /// Stops the resolver of `sandbox` and closes its sockets; false if it had none.
    pub fn remove_sandbox(&self, sandbox: &Sandbox) -> bool {
        self.resolvers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(sandbox)
            .is_some()
    }

    /// The sandboxes that have a resolver.
    pub fn sandboxes(&self) -> Vec<Sandbox> {
        self.resolvers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// Installs `names` and makes the set of resolvers match its sandboxes: starts the missing
    /// ones, stops those no longer needed. Returns the sandboxes whose resolver could not be
    /// started (the others are running).
    pub fn sync(&self, names: NameTable) -> Vec<(Sandbox, DnsError)> {
        let wanted: Vec<Sandbox> = names.sandboxes().cloned().collect();
        self.set_names(names);
        for s in self.sandboxes() {
            if !wanted.contains(&s) {
                self.remove_sandbox(&s);
            }
        }
        wanted
            .into_iter()
            .filter_map(|s| self.add_sandbox(&s).err().map(|e| (s, e)))
            .collect()
    }
}

/// A SERVFAIL reply to `query` (None if it is not a readable query).
fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let m = wire::parse(query).ok()?;
    let mut out = Vec::new();
    wire::reply(&m, Rcode::ServFail, &[], 0, UDP_REPLY_MAX, &mut out);
    Some(out)
}

/// True when `reply` answers the query with id `id`.
fn answers(reply: &[u8], id: u16) -> bool {
    Header::parse(reply).is_ok_and(|h| h.id == id && h.is_response())
}

/// Relays `query` over UDP to each upstream in turn, from a fresh socket on a random port,
/// until one answers it; None if none did.
async fn forward_udp(query: &[u8], upstreams: &[SocketAddr], wait: Duration) -> Option<Vec<u8>> {
    let id = Header::parse(query).ok()?.id;
    let mut buf = vec![0u8; 65_535];
    for up in upstreams {
        let local: SocketAddr = match up {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let Ok(sock) = UdpSocket::bind(local).await else {
            continue;
        };
        if sock.connect(up).await.is_err() || sock.send(query).await.is_err() {
            continue;
        }
        let deadline = Instant::now() + wait;
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
            let reply = &buf[..n];
            if answers(reply, id) {
                return Some(reply.to_vec());
            }
        }
    }
    None
}

/// Relays `query` over TCP to each upstream in turn until one answers it.
async fn forward_tcp(query: &[u8], upstreams: &[SocketAddr], wait: Duration) -> Option<Vec<u8>> {
    let id = Header::parse(query).ok()?.id;
    let len = u16::try_from(query.len()).ok()?;
    for up in upstreams {
        let exchange = async {
            let mut s = TcpStream::connect(up).await?;
            let mut msg = len.to_be_bytes().to_vec();
            msg.extend_from_slice(query);
            s.write_all(&msg).await?;
            let n = s.read_u16().await?;
            let mut reply = vec![0u8; usize::from(n)];
            s.read_exact(&mut reply).await?;
            io::Result::Ok(reply)
        };
        if let Ok(Ok(reply)) = timeout(wait, exchange).await {
            if answers(&reply, id) {
                return Some(reply);
            }
        }
    }
    None
}

/// Serves one sandbox's UDP socket until the task is aborted. Forwarded queries run as tasks
/// of a set owned by this future, so aborting it also stops them and closes every socket.
async fn serve_udp(sock: UdpSocket, sandbox: Sandbox, shared: Arc<Shared>) {
    let sock = Arc::new(sock);
    let mut forwards = JoinSet::new();
    let mut buf = vec![0u8; QUERY_BUF];
    let mut out = Vec::with_capacity(UDP_REPLY_MAX);
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        while forwards.try_join_next().is_some() {}
        let query = &buf[..n];
        let action = shared
            .names
            .load()
            .respond(&sandbox, query, UDP_REPLY_MAX, &mut out);
        match action {
            Action::Reply => {
                let _ = sock.send_to(&out, peer).await;
            }
            Action::Forward if forwards.len() < MAX_INFLIGHT => {
                let (sock, query) = (sock.clone(), query.to_vec());
                let upstreams = shared.upstreams_of(&sandbox);
                let wait = shared.upstream_timeout;
                forwards.spawn(async move {
                    let reply = match forward_udp(&query, &upstreams, wait).await {
                        Some(r) => Some(r),
                        None => servfail(&query),
                    };
                    if let Some(r) = reply {
                        let _ = sock.send_to(&r, peer).await;
                    }
                });
            }
            Action::Forward | Action::Drop => {}
        }
    }
}

/// Serves one sandbox's TCP listener until the task is aborted (connections are tasks of a
/// set owned by this future).
async fn serve_tcp(listener: TcpListener, sandbox: Sandbox, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(_) => {
                // Out of descriptors or the like: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        while conns.try_join_next().is_some() {}
        if conns.len() < MAX_INFLIGHT {
            conns.spawn(serve_conn(stream, sandbox.clone(), shared.clone()));
        }
    }
}

/// Answers length-prefixed queries on one TCP connection until it closes or idles.
async fn serve_conn(mut stream: TcpStream, sandbox: Sandbox, shared: Arc<Shared>) {
    let mut out = Vec::new();
    while let Ok(Ok(len)) = timeout(TCP_IDLE, stream.read_u16()).await {
        let mut query = vec![0u8; usize::from(len)];
        if stream.read_exact(&mut query).await.is_err() {
            return;
        }
        let action = shared
            .names
            .load()
            .respond(&sandbox, &query, usize::from(u16::MAX), &mut out);
        let reply = match action {
            Action::Reply => Some(std::mem::take(&mut out)),
            Action::Forward => {
                let upstreams = shared.upstreams_of(&sandbox);
                match forward_tcp(&query, &upstreams, shared.upstream_timeout).await {
                    Some(r) => Some(r),
                    None => servfail(&query),
                }
            }
            Action::Drop => None,
        };
        let Some(reply) = reply else { return };
        let Ok(n) = u16::try_from(reply.len()) else {
            return;
        };
        let mut msg = n.to_be_bytes().to_vec();
        msg.extend_from_slice(&reply);
        if stream.write_all(&msg).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::wire::{build_query, parse, TYPE_A};
    use crate::state::tests::{ep, net, stamps};
    use crate::state::State;

    fn table() -> NameTable {
        let mut st = stamps();
        let mut s = State::with_defaults(&mut st);
        s.create_network(net("front", Some("10.1.0.0/24")), st())
            .unwrap();
        s.connect(ep("front", "web", 1), st()).unwrap();
        NameTable::from_state(&s)
    }

    fn shared(upstreams: Vec<SocketAddr>) -> Arc<Shared> {
        Arc::new(Shared {
            names: ArcSwap::from_pointee(table()),
            upstreams,
            upstream_timeout: Duration::from_millis(300),
        })
    }

    /// A fake upstream on loopback that answers every query with 192.0.2.1.
    async fn fake_upstream() -> (SocketAddr, JoinHandle<()>) {
        fake_upstream_on("127.0.0.1:0").await
    }

    /// [`fake_upstream`] on `addr`.
    async fn fake_upstream_on(addr: &str) -> (SocketAddr, JoinHandle<()>) {
        let sock = UdpSocket::bind(addr).await.unwrap();
        let addr = sock.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let mut out = Vec::new();
            while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
                let m = parse(&buf[..n]).unwrap();
                wire::reply(
                    &m,
                    Rcode::NoError,
                    &[wire::Answer::A(Ipv4Addr::new(192, 0, 2, 1))],
                    5,
                    512,
                    &mut out,
                );
                sock.send_to(&out, peer).await.unwrap();
            }
        });
        (addr, task)
    }

    /// Starts `serve_udp` for sandbox pid 1 on a loopback socket; its address.
    async fn serve(shared: Arc<Shared>) -> (SocketAddr, JoinHandle<()>) {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        (addr, tokio::spawn(serve_udp(sock, Sandbox::Pid(1), shared)))
    }

    async fn ask(server: SocketAddr, name: &str, id: u16) -> Vec<u8> {
        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut q = Vec::new();
        build_query(id, name, TYPE_A, &mut q).unwrap();
        c.send_to(&q, server).await.unwrap();
        let mut buf = [0u8; 512];
        let n = timeout(Duration::from_secs(3), c.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        buf[..n].to_vec()
    }

    fn addrs(reply: &[u8]) -> Vec<Ipv4Addr> {
        parse(reply)
            .unwrap()
            .answers()
            .unwrap()
            .iter()
            .filter_map(|r| r.a())
            .collect()
    }

    #[tokio::test]
    async fn local_names_answered_others_forwarded() {
        let (up, up_task) = fake_upstream().await;
        let (srv, task) = serve(shared(vec![up])).await;
        let r = ask(srv, "WEB", 1).await;
        assert_eq!(addrs(&r), [Ipv4Addr::new(10, 1, 0, 2)]);
        let r = ask(srv, "example.com", 0xbeef).await;
        assert_eq!(parse(&r).unwrap().header.id, 0xbeef);
        assert_eq!(addrs(&r), [Ipv4Addr::new(192, 0, 2, 1)]);
        task.abort();
        up_task.abort();
    }

    /// The host's resolvers are v6 (a silent v4 one first): queries go out over v6.
    #[tokio::test]
    async fn queries_are_forwarded_to_v6_upstreams() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (up, up_task) = fake_upstream_on("[::1]:0").await;
        assert!(up.is_ipv6());
        let upstreams = vec![silent.local_addr().unwrap(), up];
        let (srv, task) = serve(shared(upstreams)).await;
        let r = ask(srv, "example.com", 6).await;
        assert_eq!(parse(&r).unwrap().header.id, 6);
        assert_eq!(addrs(&r), [Ipv4Addr::new(192, 0, 2, 1)]);
        let v6 = upstreams_from(&["fd00::53".parse().unwrap()]);
        assert_eq!(v6, ["[fd00::53]:53".parse::<SocketAddr>().unwrap()]);
        task.abort();
        up_task.abort();
    }

    #[tokio::test]
    async fn dead_upstreams_give_servfail() {
        // A bound socket that never answers, then no upstream at all.
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (srv, task) = serve(shared(vec![silent.local_addr().unwrap()])).await;
        let r = ask(srv, "example.com", 3).await;
        let h = parse(&r).unwrap().header;
        assert_eq!((h.id, h.rcode()), (3, Rcode::ServFail as u8));
        task.abort();
        let (srv, task) = serve(shared(vec![])).await;
        let r = ask(srv, "example.com", 4).await;
        assert_eq!(parse(&r).unwrap().header.rcode(), Rcode::ServFail as u8);
        task.abort();
    }

    #[tokio::test]
    async fn sandbox_upstreams_replace_the_hosts() {
        let (up, up_task) = fake_upstream().await;
        let sh = shared(vec![]);
        let mut t = table();
        t.set_upstreams(&Sandbox::Pid(1), vec![up]);
        sh.names.store(Arc::new(t));
        let (srv, task) = serve(sh).await;
        assert_eq!(
            addrs(&ask(srv, "example.com", 5).await),
            [Ipv4Addr::new(192, 0, 2, 1)]
        );
        task.abort();
        up_task.abort();
    }

    #[tokio::test]
    async fn tcp_queries_are_answered() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(serve_tcp(listener, Sandbox::Pid(1), shared(vec![])));
        let mut s = TcpStream::connect(addr).await.unwrap();
        for (id, name, rcode) in [(1, "web", 0), (2, "nope.example", Rcode::ServFail as u8)] {
            let mut q = Vec::new();
            build_query(id, name, TYPE_A, &mut q).unwrap();
            let mut msg = (q.len() as u16).to_be_bytes().to_vec();
            msg.extend_from_slice(&q);
            s.write_all(&msg).await.unwrap();
            let n = s.read_u16().await.unwrap();
            let mut r = vec![0u8; usize::from(n)];
            s.read_exact(&mut r).await.unwrap();
            let h = parse(&r).unwrap().header;
            assert_eq!((h.id, h.rcode()), (id, rcode));
        }
        task.abort();
    }

    #[tokio::test]
    async fn add_sandbox_reports_missing_namespaces() {
        let d = DnsServer::new(vec![]);
        let gone = Sandbox::Netns(PathBuf::from("/nonexistent/sluice-netns"));
        assert!(matches!(
            d.add_sandbox(&gone),
            Err(DnsError::Namespace { .. })
        ));
        assert!(d.sandboxes().is_empty());
        assert!(!d.remove_sandbox(&gone));
    }

    #[test]
    fn add_sandbox_needs_a_runtime() {
        let d = DnsServer::new(vec![]);
        assert!(matches!(
            d.add_sandbox(&Sandbox::Pid(1)),
            Err(DnsError::NoRuntime)
        ));
        assert_eq!(
            netns_path(&Sandbox::Pid(7)),
            PathBuf::from("/proc/7/ns/net")
        );
        assert_eq!(
            upstreams_from(&[IpAddr::V4(Ipv4Addr::new(127, 0, 0, 53))]),
            [SocketAddr::from(([127, 0, 0, 53], 53))]
        );
    }
}
