//! The daemon's netlink layer: plugs a sandbox's network namespace into sluice's userspace
//! bridge with a veth pair (the host end is then opened by the AF_PACKET dataplane; there is no
//! kernel bridge) and removes it again.
//!
//! Every call opens its own rtnetlink connection(s) on the caller's tokio runtime and closes
//! them when it returns. Work inside a sandbox namespace goes through a netlink socket created
//! in that namespace: a netlink socket stays bound to the namespace it was created in, so only
//! the socket's creation needs the namespace, and that happens on a short-lived OS thread of its
//! own ([`in_netns`]); no thread of the caller's runtime ever changes namespace. No `ip` process
//! is spawned.
//!
//! The peer end is created directly inside the sandbox (`ip link add H type veth peer name eth0
//! netns NS`), already named and with its MAC and MTU, in one atomic kernel request: there is
//! no temporary name to collide, no move and no rename. (It cannot be created up: the kernel
//! opens the peer before the pair is tied together and refuses with `ENOTCONN`.) If a later
//! step fails (link up, address, route), the host end is deleted, which removes the peer too:
//! an attach either fully applies or leaves nothing behind.

use std::fs::File;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::PathBuf;

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage,
};
use rtnetlink::sys::TokioSocket;
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};
use sluice_dataplane::config::Ipv4Cidr;
use sluice_dataplane::wire::MacAddr;
use tokio::task::JoinHandle;

use sluice_api::model::Sandbox;

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// Smallest MTU Linux accepts on an Ethernet (veth) device carrying IPv4.
pub const MTU_MIN: u16 = 68;

/// What the namespace label of an error says for the caller's own namespace.
const CURRENT_NS: &str = "the current namespace";

/// One interface of a sandbox as the daemon wants it: the veth pair's names and the sandbox
/// end's addressing, so that [`attach`] can apply all of it in one go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxIface {
    /// Name of the host end, in the daemon's namespace (opened by the dataplane).
    pub host_ifname: String,
    /// Name of the sandbox end inside the sandbox (`eth0`, `eth1`, ...).
    pub sandbox_ifname: String,
    /// MAC address of the sandbox end (the dataplane's port config knows it).
    pub mac: MacAddr,
    /// IPv4 address and prefix length of the sandbox end.
    pub ip: Ipv4Cidr,
    /// Default route via this gateway; `None` adds no default route (secondary networks).
    pub gateway: Option<Ipv4Addr>,
    /// MTU of both ends.
    pub mtu: u16,
}

/// Why a netlink operation failed; every variant names the interface or namespace concerned
/// and what was being done, so the daemon can return it to the CLI as is.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// An interface name that Linux would reject (checked before anything is created).
    #[error("bad interface name {name:?}: {reason}")]
    BadName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A setting out of range for the interface (checked before anything is created).
    #[error("bad settings for {ifname}: {reason}")]
    BadSetting {
        /// The interface.
        ifname: String,
        /// What is wrong.
        reason: String,
    },
    /// The network namespace could not be opened or entered.
    #[error("cannot {op} network namespace {netns}: {source}")]
    Netns {
        /// The namespace (path or pid).
        netns: String,
        /// What was being done.
        op: &'static str,
        /// What the OS said.
        source: io::Error,
    },
    /// A netlink request failed.
    #[error("cannot {op} {ifname} in {netns}: {source}")]
    Request {
        /// What was being done.
        op: &'static str,
        /// The interface concerned.
        ifname: String,
        /// The namespace the request went to.
        netns: String,
        /// What the kernel said.
        source: io::Error,
    },
    /// The sandbox already has an interface of the name the endpoint's would get (found
    /// when creating the pair fails, so the error names the clash rather than `File exists`).
    #[error("{netns} already has an interface {ifname}; pick another name with --ifname")]
    NameInUse {
        /// The name inside the sandbox.
        ifname: String,
        /// The sandbox.
        netns: String,
    },
    /// The runtime shut down while [`attach`] ran (whatever it had created may remain; the
    /// daemon's start-up sweep of leftover host ends removes it).
    #[error("attaching {ifname} was aborted: the runtime is shutting down")]
    Aborted {
        /// The host end being created.
        ifname: String,
    },
    /// [`detach`] refuses to delete an interface that is not a veth (a daemon bug or a name
    /// clash must never take down a physical or foreign interface).
    #[error("refusing to delete {ifname}: it is a {kind} device, not a veth")]
    NotVeth {
        /// The interface.
        ifname: String,
        /// Its kind as the kernel reports it (`device` when it has none, like a NIC).
        kind: String,
    },
}

impl NetlinkError {
    /// The errno behind the error, if the kernel gave one (e.g. `EEXIST` for a name in use).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            NetlinkError::Netns { source, .. } | NetlinkError::Request { source, .. } => {
                source.raw_os_error()
            }
            NetlinkError::NameInUse { .. } => Some(libc::EEXIST),
            _ => None,
        }
    }
}

/// Checks an interface name the way the kernel does (1-15 bytes, not `.` or `..`), restricted
/// to letters, digits, `-`, `_` and `.` so names stay safe in logs, paths and `ip` output.
pub fn check_ifname(name: &str) -> Result<(), NetlinkError> {
    let bad = |reason| {
        Err(NetlinkError::BadName {
            name: name.into(),
            reason,
        })
    };
    if name.is_empty() || name.len() > IFNAME_MAX {
        return bad("interface names are 1-15 bytes");
    }
    if name == "." || name == ".." {
        return bad("`.` and `..` are not interface names");
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    {
        return bad("interface names use letters, digits, '-', '_', '.'");
    }
    Ok(())
}

fn check_mtu(ifname: &str, mtu: u16) -> Result<(), NetlinkError> {
    if mtu < MTU_MIN {
        return Err(NetlinkError::BadSetting {
            ifname: ifname.into(),
            reason: format!("MTU {mtu} is below {MTU_MIN}"),
        });
    }
    Ok(())
}

fn check_mac(ifname: &str, mac: MacAddr) -> Result<(), NetlinkError> {
    if mac.is_multicast() || mac == MacAddr::default() {
        return Err(NetlinkError::BadSetting {
            ifname: ifname.into(),
            reason: format!("MAC {mac} is not a unicast address"),
        });
    }
    Ok(())
}

impl SandboxIface {
    /// Checks everything the kernel would reject, before anything is created.
    pub fn validate(&self) -> Result<(), NetlinkError> {
        check_ifname(&self.host_ifname)?;
        check_ifname(&self.sandbox_ifname)?;
        check_mtu(&self.sandbox_ifname, self.mtu)?;
        check_mac(&self.sandbox_ifname, self.mac)?;
        let bad = |reason: String| {
            Err(NetlinkError::BadSetting {
                ifname: self.sandbox_ifname.clone(),
                reason,
            })
        };
        if self.ip.prefix == 0 || self.ip.prefix > 32 {
            return bad(format!("prefix length {} is not 1-32", self.ip.prefix));
        }
        if self.ip.addr.is_unspecified() || self.ip.addr.is_multicast() {
            return bad(format!("{} is not a host address", self.ip.addr));
        }
        if let Some(gw) = self.gateway {
            if !self.ip.contains(gw) || gw == self.ip.addr {
                return bad(format!(
                    "gateway {gw} is not another address of {}/{}",
                    self.ip.addr, self.ip.prefix
                ));
            }
        }
        Ok(())
    }
}

/// The namespace file of a sandbox: its path, or `/proc/PID/ns/net` for a process.
pub fn netns_path(sandbox: &Sandbox) -> PathBuf {
    match sandbox {
        Sandbox::Netns(p) => p.clone(),
        Sandbox::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
    }
}

/// Opens a sandbox's network namespace (the descriptor that `setns` and `IFLA_NET_NS_FD` take);
/// holding it keeps the namespace alive even if its process exits meanwhile.
pub fn open_netns(sandbox: &Sandbox) -> Result<File, NetlinkError> {
    File::open(netns_path(sandbox)).map_err(|source| NetlinkError::Netns {
        netns: sandbox.to_string(),
        op: "open",
        source,
    })
}

/// Runs `f` on a fresh OS thread that has joined the network namespace `ns` (labelled `label`
/// in errors), and returns its result without blocking the caller's runtime. The thread ends
/// with `f`, so its namespace change never leaks into other work.
async fn in_netns<T, F>(ns: &File, label: &str, f: F) -> Result<T, NetlinkError>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let err = |op, source| NetlinkError::Netns {
        netns: label.into(),
        op,
        source,
    };
    let fd = ns
        .try_clone()
        .map_err(|e| err("duplicate the descriptor of", e))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("sluice-netns".into())
        .spawn(move || {
            // SAFETY: setns only reads the descriptor, which `fd` keeps open during the call.
            // It changes the namespace of this thread alone: a thread made for `f` that runs
            // nothing else and ends right after, so no other code runs in the wrong namespace.
            let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
            let res = if rc == 0 {
                f().map_err(|e| ("work in", e))
            } else {
                Err(("enter", io::Error::last_os_error()))
            };
            // The receiver only goes away if the caller's future was dropped: nothing to tell.
            let _ = tx.send(res);
        })
        .map_err(|e| err("start a thread for", e))?;
    match rx.await {
        Ok(res) => res.map_err(|(op, e)| err(op, e)),
        Err(_) => Err(err(
            "work in",
            io::Error::other("the namespace thread ended without an answer"),
        )),
    }
}

/// A netlink socket created in the calling thread's namespace.
fn route_socket() -> io::Result<OwnedFd> {
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

/// An rtnetlink connection driven by a task of the caller's runtime; the task stops on drop.
struct Conn {
    handle: Handle,
    task: JoinHandle<()>,
    netns: String,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Conn {
    /// A connection in the caller's own namespace.
    fn current() -> Result<Conn, NetlinkError> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|source| NetlinkError::Netns {
                netns: CURRENT_NS.into(),
                op: "open a netlink socket in",
                source,
            })?;
        Ok(Conn {
            handle,
            task: tokio::spawn(conn),
            netns: CURRENT_NS.into(),
        })
    }

    /// A connection in the sandbox's namespace `ns`.
    async fn sandbox(ns: &File, label: &str) -> Result<Conn, NetlinkError> {
        let fd = in_netns(ns, label, route_socket).await?;
        // SAFETY: ownership of the open netlink socket passes from `fd` to the TokioSocket.
        let socket = unsafe { TokioSocket::from_raw_fd(fd.into_raw_fd()) };
        let (conn, handle, _) = rtnetlink::from_socket(socket);
        Ok(Conn {
            handle,
            task: tokio::spawn(conn),
            netns: label.into(),
        })
    }

    fn fail(&self, op: &'static str, ifname: &str, e: rtnetlink::Error) -> NetlinkError {
        NetlinkError::Request {
            op,
            ifname: ifname.into(),
            netns: self.netns.clone(),
            source: to_io(e),
        }
    }

    /// Runs one request, naming the operation and interface in its error.
    async fn run<F>(&self, op: &'static str, ifname: &str, req: F) -> Result<(), NetlinkError>
    where
        F: Future<Output = Result<(), rtnetlink::Error>>,
    {
        req.await.map_err(|e| self.fail(op, ifname, e))
    }

    /// The link called `name`, or `None` if there is none.
    async fn link(&self, name: &str) -> Result<Option<LinkMessage>, NetlinkError> {
        let mut req = self.handle.link().get().match_name(name.into()).execute();
        match req.try_next().await {
            Ok(link) => Ok(link),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(self.fail("look up", name, e)),
        }
    }

    /// Deletes the link called `name` (a veth takes its peer along).
    async fn delete(&self, name: &str) -> Result<(), NetlinkError> {
        let mut req = self.handle.link().del(0);
        req.message_mut()
            .attributes
            .push(LinkAttribute::IfName(name.into()));
        self.run("delete", name, req.execute()).await
    }

    /// Deletes `name` after a failed step, keeping the step's error as the one reported.
    async fn roll_back(&self, name: &str, cause: NetlinkError) -> NetlinkError {
        if let Err(e) = self.delete(name).await {
            tracing::error!(error = %e, %cause, "rolling back a failed attach");
        }
        cause
    }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

fn to_io(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io(),
        other => io::Error::other(other),
    }
}

fn link_name(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

fn link_kind(link: &LinkMessage) -> Option<&InfoKind> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k),
            _ => None,
        }),
        _ => None,
    })
}

/// The request creating a veth pair: the host end (named, MTU, up) in the current namespace and
/// the peer as `peer` describes it (name, MAC, MTU, namespace, up or down).
fn veth_message(host_ifname: &str, mtu: u16, peer: LinkMessage) -> LinkMessage {
    LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(host_ifname.into())
        .mtu(u32::from(mtu))
        .up()
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build()
}

/// Plugs `sandbox` into sluice: a veth pair whose host end `host_ifname` (MTU set, up, no
/// address) stays in the current namespace for the dataplane, and whose peer appears inside the
/// sandbox as `sandbox_ifname` with the MAC, MTU and IPv4 address asked for, up, with `lo` up
/// and the default route via the gateway if one is given. On any failure whatever was created
/// is removed and the error returned. The work runs in a task of its own, so dropping the
/// returned future (a client hanging up) does not stop it halfway. Must be called from a tokio
/// runtime.
pub async fn attach(sandbox: &Sandbox, iface: &SandboxIface) -> Result<(), NetlinkError> {
    iface.validate()?;
    let task = tokio::spawn(attach_task(sandbox.clone(), iface.clone()));
    match task.await {
        Ok(res) => res,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(NetlinkError::Aborted {
            ifname: iface.host_ifname.clone(),
        }),
    }
}

/// The body of [`attach`], owning its inputs so that it can run as a task.
async fn attach_task(sandbox: Sandbox, iface: SandboxIface) -> Result<(), NetlinkError> {
    let label = sandbox.to_string();
    let ns = open_netns(&sandbox)?;
    let inner = Conn::sandbox(&ns, &label).await?;
    let host = Conn::current()?;

    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(iface.sandbox_ifname.clone())
        .address(iface.mac.0.to_vec())
        .mtu(u32::from(iface.mtu))
        .setns_by_fd(ns.as_raw_fd())
        .build();
    let msg = veth_message(&iface.host_ifname, iface.mtu, peer);
    let created = host
        .run(
            "create the veth pair",
            &iface.host_ifname,
            host.handle.link().add(msg).execute(),
        )
        .await;
    if let Err(e) = created {
        if e.raw_os_error() == Some(libc::EEXIST)
            && inner.link(&iface.sandbox_ifname).await?.is_some()
        {
            return Err(NetlinkError::NameInUse {
                ifname: iface.sandbox_ifname.clone(),
                netns: label,
            });
        }
        return Err(e);
    }

    match configure_sandbox(&inner, &iface).await {
        Ok(()) => Ok(()),
        Err(cause) => Err(host.roll_back(&iface.host_ifname, cause).await),
    }
}

/// The sandbox side of [`attach`] once the peer exists there: address, peer and `lo` up (these
/// three in flight together on the one connection), then the default route, which needs the
/// address's subnet route.
async fn configure_sandbox(conn: &Conn, iface: &SandboxIface) -> Result<(), NetlinkError> {
    let name = &iface.sandbox_ifname;
    let index = match conn.link(name).await? {
        Some(link) => link.header.index,
        None => {
            return Err(NetlinkError::Request {
                op: "find the new veth peer",
                ifname: name.clone(),
                netns: conn.netns.clone(),
                source: io::Error::from_raw_os_error(libc::ENODEV),
            })
        }
    };
    let addr = conn
        .handle
        .address()
        .add(index, IpAddr::V4(iface.ip.addr), iface.ip.prefix)
        .execute();
    let lo = conn
        .handle
        .link()
        .set(LinkUnspec::new_with_name("lo").up().build())
        .execute();
    let up = conn
        .handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute();
    let (addr, lo, up) = futures::join!(
        conn.run("add the address to", name, addr),
        conn.run("bring up", "lo", lo),
        conn.run("bring up", name, up)
    );
    addr?;
    lo?;
    up?;
    if let Some(gw) = iface.gateway {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gw)
            .output_interface(index)
            .build();
        conn.run(
            "add the default route via",
            name,
            conn.handle.route().add(route).execute(),
        )
        .await?;
    }
    Ok(())
}

/// Creates a veth pair with both ends in the current namespace: `host_ifname` up with `mtu`,
/// `peer_ifname` down with `mtu` and `peer_mac` (the kernel picks one if `None`). Docker's
/// libnetwork remote driver moves the peer into the container itself. The pair is created in
/// one atomic request: on failure nothing exists. Must be called from a tokio runtime.
pub async fn create_veth_pair(
    host_ifname: &str,
    peer_ifname: &str,
    peer_mac: Option<MacAddr>,
    mtu: u16,
) -> Result<(), NetlinkError> {
    check_ifname(host_ifname)?;
    check_ifname(peer_ifname)?;
    check_mtu(host_ifname, mtu)?;
    if host_ifname == peer_ifname {
        return Err(NetlinkError::BadName {
            name: peer_ifname.into(),
            reason: "the two ends of a veth pair need different names",
        });
    }
    let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(peer_ifname.into())
        .mtu(u32::from(mtu))
        .down();
    if let Some(mac) = peer_mac {
        check_mac(peer_ifname, mac)?;
        peer = peer.address(mac.0.to_vec());
    }
    let host = Conn::current()?;
    let msg = veth_message(host_ifname, mtu, peer.build());
    host.run(
        "create the veth pair",
        host_ifname,
        host.handle.link().add(msg).execute(),
    )
    .await
}

/// Unplugs an endpoint: deletes the veth `host_ifname` in the current namespace, which removes
/// its peer in the sandbox too. `Ok(false)` if there was no such interface; an error (and
/// nothing deleted) if it is not a veth. Must be called from a tokio runtime.
pub async fn detach(host_ifname: &str) -> Result<bool, NetlinkError> {
    check_ifname(host_ifname)?;
    let host = Conn::current()?;
    let Some(link) = host.link(host_ifname).await? else {
        return Ok(false);
    };
    match link_kind(&link) {
        Some(InfoKind::Veth) => {}
        other => {
            return Err(NetlinkError::NotVeth {
                ifname: host_ifname.into(),
                kind: other.map_or_else(|| "device".to_string(), ToString::to_string),
            })
        }
    }
    match host.handle.link().del(link.header.index).execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(host.fail("delete", host_ifname, e)),
    }
}

/// True if an interface called `name` exists in the current namespace (the daemon checks its
/// endpoints' host ends at start). Must be called from a tokio runtime.
pub async fn link_exists(name: &str) -> Result<bool, NetlinkError> {
    check_ifname(name)?;
    Ok(Conn::current()?.link(name).await?.is_some())
}

/// Names of the current namespace's interfaces that start with `prefix`, sorted (the daemon
/// finds leftover `sl...` veths of a previous run this way). Must be called from a tokio
/// runtime.
pub async fn link_names_with_prefix(prefix: &str) -> Result<Vec<String>, NetlinkError> {
    let host = Conn::current()?;
    let links: Vec<LinkMessage> = host
        .handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| host.fail("list links with prefix", prefix, e))?;
    let mut names: Vec<String> = links
        .iter()
        .filter_map(link_name)
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect();
    names.sort();
    Ok(names)
}

/// An interface inside a sandbox as the kernel reports it (CNI's CHECK compares it with what
/// ADD returned).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxLink {
    /// Its MAC.
    pub mac: Option<MacAddr>,
    /// Its IPv4 addresses with their prefix lengths.
    pub addrs: Vec<Ipv4Cidr>,
}

/// The interface `ifname` inside `sandbox`, or `None` if the namespace has none of that name.
/// Reads only: a netlink socket is created in the namespace and asked. Must be called from a
/// tokio runtime.
pub async fn sandbox_link(
    sandbox: &Sandbox,
    ifname: &str,
) -> Result<Option<SandboxLink>, NetlinkError> {
    use rtnetlink::packet_route::address::AddressAttribute;
    check_ifname(ifname)?;
    let ns = open_netns(sandbox)?;
    let conn = Conn::sandbox(&ns, &sandbox.to_string()).await?;
    let Some(link) = conn.link(ifname).await? else {
        return Ok(None);
    };
    let mac = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(b) => <[u8; 6]>::try_from(b.as_slice()).ok().map(MacAddr),
        _ => None,
    });
    let msgs: Vec<_> = conn
        .handle
        .address()
        .get()
        .set_link_index_filter(link.header.index)
        .execute()
        .try_collect()
        .await
        .map_err(|e| conn.fail("list addresses of", ifname, e))?;
    let addrs = msgs
        .iter()
        .flat_map(|m| {
            m.attributes.iter().filter_map(move |a| match a {
                AddressAttribute::Address(IpAddr::V4(ip)) => {
                    Ipv4Cidr::new(*ip, m.header.prefix_len)
                }
                _ => None,
            })
        })
        .collect();
    Ok(Some(SandboxLink { mac, addrs }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface() -> SandboxIface {
        SandboxIface {
            host_ifname: "slv1".into(),
            sandbox_ifname: "eth0".into(),
            mac: MacAddr([0x02, 0x42, 10, 0, 0, 2]),
            ip: Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, 2), 24).unwrap(),
            gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
            mtu: 1500,
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn ifnames_follow_the_kernel() {
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("sl-abc_def.0123").is_ok());
        assert!(check_ifname("sl-abc_def.01234").is_err());
        assert!(check_ifname("").is_err());
        assert!(check_ifname(".").is_err());
        assert!(check_ifname("..").is_err());
        assert!(check_ifname("a/b").is_err());
        assert!(check_ifname("a:b").is_err());
        assert!(check_ifname("a b").is_err());
        assert!(check_ifname("é").is_err());
        let e = check_ifname("averyveryverylongname").unwrap_err();
        assert!(e.to_string().contains("averyveryverylongname"), "{e}");
    }

    #[test]
    fn settings_are_validated() {
        assert!(iface().validate().is_ok());
        let no_gw = SandboxIface {
            gateway: None,
            ..iface()
        };
        assert!(no_gw.validate().is_ok());
        let cases = [
            SandboxIface { mtu: 67, ..iface() },
            SandboxIface {
                mac: MacAddr::BROADCAST,
                ..iface()
            },
            SandboxIface {
                mac: MacAddr::default(),
                ..iface()
            },
            SandboxIface {
                ip: Ipv4Cidr {
                    addr: Ipv4Addr::new(10, 0, 0, 2),
                    prefix: 33,
                },
                ..iface()
            },
            SandboxIface {
                ip: Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, 24).unwrap(),
                ..iface()
            },
            SandboxIface {
                gateway: Some(Ipv4Addr::new(10, 0, 1, 1)),
                ..iface()
            },
            SandboxIface {
                gateway: Some(Ipv4Addr::new(10, 0, 0, 2)),
                ..iface()
            },
            SandboxIface {
                host_ifname: "sl-far-too-long-name".into(),
                ..iface()
            },
        ];
        for c in cases {
            let e = c.validate().unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains("eth0") || msg.contains("sl-far-too-long-name"),
                "{msg}"
            );
        }
    }

    #[test]
    fn pids_name_their_proc_file() {
        assert_eq!(
            netns_path(&Sandbox::Pid(42)),
            PathBuf::from("/proc/42/ns/net")
        );
        let p = PathBuf::from("/run/netns/x");
        assert_eq!(netns_path(&Sandbox::Netns(p.clone())), p);
    }

    #[test]
    fn missing_namespace_is_a_clear_error() {
        let sb = Sandbox::Netns(PathBuf::from("/nonexistent/sluice-netns"));
        let e = rt().block_on(attach(&sb, &iface())).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        let msg = e.to_string();
        assert!(
            msg.contains("open") && msg.contains("/nonexistent/sluice-netns"),
            "{msg}"
        );
    }

    #[test]
    fn not_a_namespace_file_is_refused() {
        let e = rt()
            .block_on(in_netns(
                &File::open("/proc/self/stat").unwrap(),
                "stat",
                route_socket,
            ))
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
        assert!(
            e.to_string().contains("enter network namespace stat"),
            "{e}"
        );
    }

    #[test]
    fn bad_names_fail_before_any_request() {
        let rt = rt();
        let e = rt
            .block_on(create_veth_pair("same", "same", None, 1500))
            .unwrap_err();
        assert!(matches!(e, NetlinkError::BadName { .. }), "{e}");
        let e = rt
            .block_on(create_veth_pair("slok", "sl/peer", None, 1500))
            .unwrap_err();
        assert!(matches!(e, NetlinkError::BadName { .. }), "{e}");
        let e = rt.block_on(detach("a b")).unwrap_err();
        assert!(matches!(e, NetlinkError::BadName { .. }), "{e}");
    }

    #[test]
    fn reads_the_current_namespace() {
        let rt = rt();
        assert!(rt.block_on(link_exists("lo")).unwrap());
        assert!(!rt.block_on(link_exists("slnone0x0")).unwrap());
        let names = rt.block_on(link_names_with_prefix("lo")).unwrap();
        assert!(names.iter().any(|n| n == "lo"), "{names:?}");
        assert!(names.iter().all(|n| n.starts_with("lo")), "{names:?}");
        assert!(!rt.block_on(detach("slnone0x0")).unwrap());
    }

    #[test]
    fn detach_refuses_other_kinds() {
        let e = rt().block_on(detach("lo")).unwrap_err();
        assert!(matches!(e, NetlinkError::NotVeth { .. }), "{e}");
        assert!(e.to_string().contains("lo"), "{e}");
    }
}
