//! The veth pairs: created straight into a sandbox (or both ends here, for docker to move the
//! peer), deleted, listed, and a sandbox interface read back.

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::packet_route::route::{RouteMessage, RouteScope};
use rtnetlink::{LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};
use sluice_dataplane::config::Ipv4Cidr;
use sluice_dataplane::wire::MacAddr;

use super::conn::{errno, in_netns, link_kind, link_name, Conn};
use super::{
    check_ifname, check_mac, check_mtu, open_netns, NetlinkError, SandboxIface, SandboxIpv6, Step,
};
use sluice_api::model::Sandbox;

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
/// sandbox as `sandbox_ifname` with the MAC, MTU and IPv4 (and IPv6) address asked for, up,
/// with `lo` up and the default routes via the gateways given (or on the link). On any failure whatever was
/// created is removed and the error returned. The work runs in a task of its own, so dropping the
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
            Step::CreateVeth,
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

    let configured = async {
        if iface.ipv6.is_some() {
            enable_ipv6(&ns, &label, &iface.sandbox_ifname).await?;
        }
        configure_sandbox(&inner, &iface).await
    };
    match configured.await {
        Ok(()) => Ok(()),
        Err(cause) => Err(host.roll_back(&iface.host_ifname, cause).await),
    }
}

/// Turns IPv6 on for the sandbox interface `ifname` (sandboxes may have it off by default, as
/// docker's containers without a v6 network do), so that it takes v6 addresses.
async fn enable_ipv6(ns: &File, label: &str, ifname: &str) -> Result<(), NetlinkError> {
    let knob = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
    in_netns(ns, label, move || std::fs::write(knob, "0")).await
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
                step: Step::FindPeer,
                ifname: name.clone(),
                netns: conn.netns.clone(),
                source: io::Error::from_raw_os_error(libc::ENODEV),
            })
        }
    };
    let addr = iface.ip.map(|ip| {
        conn.handle
            .address()
            .add(index, IpAddr::V4(ip.addr), ip.prefix)
            .execute()
    });
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
    let addr = async {
        match addr {
            Some(addr) => conn.run(Step::SetAddress, name, addr).await,
            None => Ok(()),
        }
    };
    let (addr, lo, up) = futures::join!(
        addr,
        conn.run(Step::LinkUp, "lo", lo),
        conn.run(Step::LinkUp, name, up)
    );
    addr?;
    lo?;
    up?;
    let default = RouteMessageBuilder::<Ipv4Addr>::new().output_interface(index);
    if let Some(gw) = iface.gateway {
        add_route(conn, name, default.gateway(gw).build()).await?;
    } else if iface.default_on_link {
        add_route(conn, name, default.scope(RouteScope::Link).build()).await?;
    }
    if let Some(v6) = iface.ipv6 {
        configure_ipv6(conn, name, index, v6).await?;
    }
    Ok(())
}

/// The IPv6 side of [`configure_sandbox`]: the address without duplicate address detection
/// (usable at once, as docker sets it), then the default route via the v6 gateway.
async fn configure_ipv6(
    conn: &Conn,
    name: &str,
    index: u32,
    v6: SandboxIpv6,
) -> Result<(), NetlinkError> {
    let mut add = conn
        .handle
        .address()
        .add(index, IpAddr::V6(v6.addr), v6.prefix);
    add.message_mut().header.flags = AddressHeaderFlags::Nodad;
    add.message_mut()
        .attributes
        .push(AddressAttribute::Flags(AddressFlags::Nodad));
    conn.run(Step::SetAddress, name, add.execute()).await?;
    if let Some(gw) = v6.gateway {
        let route = RouteMessageBuilder::<Ipv6Addr>::new()
            .gateway(gw)
            .output_interface(index)
            .build();
        add_route(conn, name, route).await?;
    }
    Ok(())
}

/// Adds `route` (a default route via a gateway or on the link, of either family) on `name`.
async fn add_route(conn: &Conn, name: &str, route: RouteMessage) -> Result<(), NetlinkError> {
    conn.run(
        Step::SetRoute,
        name,
        conn.handle.route().add(route).execute(),
    )
    .await
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
        Step::CreateVeth,
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
        Err(e) => Err(host.fail(Step::Delete, host_ifname, e)),
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
        .map_err(|e| host.fail(Step::ListLinks, prefix, e))?;
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
    /// The IPv4 routes of the main table that leave through it.
    pub routes: Vec<SandboxRoute>,
}

/// One IPv4 route through a sandbox interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SandboxRoute {
    /// Its destination prefix.
    pub dst: Ipv4Cidr,
    /// Its next hop, if it has one.
    pub gateway: Option<Ipv4Addr>,
}

/// The interface `ifname` inside `sandbox`, or `None` if the namespace has none of that name.
/// Reads only: a netlink socket is created in the namespace and asked. Must be called from a
/// tokio runtime.
pub async fn sandbox_link(
    sandbox: &Sandbox,
    ifname: &str,
) -> Result<Option<SandboxLink>, NetlinkError> {
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
        .map_err(|e| conn.fail(Step::ListAddresses, ifname, e))?;
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
    let routes = routes_through(&conn, link.header.index, ifname).await?;
    Ok(Some(SandboxLink { mac, addrs, routes }))
}

/// The IPv4 routes of the main table whose output interface is `index`.
async fn routes_through(
    conn: &Conn,
    index: u32,
    ifname: &str,
) -> Result<Vec<SandboxRoute>, NetlinkError> {
    use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader};
    let msgs: Vec<_> = conn
        .handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(|e| conn.fail(Step::ListRoutes, ifname, e))?;
    let v4 = |a: &RouteAttribute| match a {
        RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    };
    let gw = |a: &RouteAttribute| match a {
        RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    };
    Ok(msgs
        .iter()
        .filter(|m| m.header.table == RouteHeader::RT_TABLE_MAIN)
        .filter(|m| m.attributes.contains(&RouteAttribute::Oif(index)))
        .filter_map(|m| {
            let dst = m
                .attributes
                .iter()
                .find_map(v4)
                .unwrap_or(Ipv4Addr::UNSPECIFIED);
            Some(SandboxRoute {
                dst: Ipv4Cidr::new(dst, m.header.destination_prefix_length)?,
                gateway: m.attributes.iter().find_map(gw),
            })
        })
        .collect())
}
