//! Two hosts of one overlay network in namespaces, for the overlay tests and the overlay shape
//! of the benchmark: hosts `ha` and `hb` joined by an underlay veth pair (`up0` on each, the
//! VTEPs [`VTEP_A`] and [`VTEP_B`]), and endpoint namespaces `ea` ([`EP_A`]) and `eb`
//! ([`EP_B`]) behind each host's `ep0`, dual-stack ([`EP_A6`], [`EP_B6`]), at the overlay MTU
//! with their offloads on (as any veth). Either sluice forwards ([`start_sluice`]: `sluice dataplane` per host with the other
//! host's endpoint in its remote table, as the cluster store would keep it) or the kernel
//! ([`start_kernel`]: a vxlan device and a bridge per host, the same VNI and UDP port).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use sluice_dataplane::config::{
    Config, Ipv4Cidr, Ipv6Cidr, NetworkConfig, NetworkV6, PortConfig, PortRole, UplinkConfig,
};
use sluice_dataplane::frame::{NetworkId, PortId};
use sluice_dataplane::overlay::{OverlayConfig, RemoteEndpoint};
use sluice_dataplane::wire::MacAddr;

use super::{Lab, LabError, Result, SluiceLaunch};

/// Endpoint on host `ha`.
pub const EP_A: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 2);
/// Endpoint on host `hb`.
pub const EP_B: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 3);
/// The IPv6 address of the endpoint on host `ha`.
pub const EP_A6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x20, 0, 0, 0, 0, 0, 2);
/// The IPv6 address of the endpoint on host `hb`.
pub const EP_B6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x20, 0, 0, 0, 0, 0, 3);
/// Host `ha`'s VTEP (its uplink address).
pub const VTEP_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Host `hb`'s VTEP.
pub const VTEP_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The overlay network's VNI (docker's first).
pub const VNI: u32 = 4096;
/// The overlay MTU: 1500 less the 50 bytes of VXLAN over IPv4.
pub const OVERLAY_MTU: u16 = 1450;

/// One host of the overlay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Host {
    /// The host's namespace.
    pub ns: &'static str,
    /// Its endpoint's namespace.
    pub ep_ns: &'static str,
    /// Its endpoint's address.
    pub ep: Ipv4Addr,
    /// Its endpoint's IPv6 address.
    pub ep6: Ipv6Addr,
    /// Its VTEP.
    pub vtep: Ipv4Addr,
    /// The other host's endpoint and VTEP.
    pub peer: (Ipv4Addr, Ipv4Addr),
    /// The other host's endpoint's IPv6 address.
    pub peer6: Ipv6Addr,
}

/// The two hosts.
pub const HOSTS: [Host; 2] = [
    Host {
        ns: "ha",
        ep_ns: "ea",
        ep: EP_A,
        ep6: EP_A6,
        vtep: VTEP_A,
        peer: (EP_B, VTEP_B),
        peer6: EP_B6,
    },
    Host {
        ns: "hb",
        ep_ns: "eb",
        ep: EP_B,
        ep6: EP_B6,
        vtep: VTEP_B,
        peer: (EP_A, VTEP_A),
        peer6: EP_A6,
    },
];

/// One host's dataplane: uplink `up0` at its VTEP, endpoint `ep0` with its addresses, and
/// the peer's endpoint (addresses, VTEP) in the remote table.
pub fn sluice_config(host: &Host) -> Config {
    let Host {
        ep,
        ep6,
        vtep,
        peer,
        peer6,
        ..
    } = *host;
    let net = NetworkConfig {
        mtu: OVERLAY_MTU,
        ipv6: Some(NetworkV6 {
            subnet: Ipv6Cidr::new(Ipv6Addr::new(0xfd00, 0x20, 0, 0, 0, 0, 0, 0), 64)
                .expect("a valid prefix"),
            gateway: Ipv6Addr::new(0xfd00, 0x20, 0, 0, 0, 0, 0, 1),
            routed: false,
        }),
        ..NetworkConfig::new(
            NetworkId(0),
            "ov",
            "10.20.0.0/24".parse().expect("a valid subnet"),
            Ipv4Addr::new(10, 20, 0, 1),
        )
    };
    let port = |id, name: &str, role| PortConfig {
        id: PortId(id),
        name: name.into(),
        io: Default::default(),
        role,
    };
    let endpoint = PortRole::Endpoint {
        network: NetworkId(0),
        vlan: 0,
        mac: MacAddr::from_ipv4(ep),
        ipv4: Some(ep),
        ipv6: Some(ep6),
    };
    Config {
        networks: vec![net],
        ports: vec![port(0, "up0", PortRole::Uplink), port(1, "ep0", endpoint)],
        uplink: Some(UplinkConfig {
            port: PortId(0),
            ip: Ipv4Cidr::new(vtep, 24).expect("a valid prefix"),
            mac: MacAddr::from_ipv4(vtep),
            next_hop: None,
            mtu: 1500,
        }),
        overlays: vec![OverlayConfig {
            network: NetworkId(0),
            vni: VNI,
            remotes: vec![RemoteEndpoint {
                mac: MacAddr::from_ipv4(peer.0),
                ipv4: peer.0,
                ipv6: Some(peer6),
                vtep: peer.1,
            }],
        }],
        ..Config::default()
    }
}

/// Creates the four namespaces, the endpoints (address, MAC, overlay MTU, offloads on) behind
/// each host's `ep0`, and the underlay between the hosts' `up0`.
pub fn wire(lab: &mut Lab) -> Result<()> {
    for Host {
        ns: host,
        ep_ns,
        ep,
        ep6,
        ..
    } in HOSTS
    {
        lab.add_ns(host)?;
        lab.add_ns(ep_ns)?;
        lab.veth((host, "ep0"), (ep_ns, "eth0"))?;
        lab.up(host, "ep0")?;
        lab.mac(ep_ns, "eth0", MacAddr::from_ipv4(ep))?;
        lab.mtu(ep_ns, "eth0", OVERLAY_MTU)?;
        lab.ethtool_k(ep_ns, "eth0", &[("tso", true), ("gso", true), ("tx", true)])?;
        lab.addr(ep_ns, "eth0", &format!("{ep}/24"))?;
        lab.addr6(ep_ns, "eth0", &format!("{ep6}/64"))?;
        lab.up(ep_ns, "eth0")?;
    }
    lab.veth(("ha", "up0"), ("hb", "up0"))?;
    lab.up("ha", "up0")?;
    lab.up("hb", "up0")
}

/// Starts sluice on both hosts, each on its [`sluice_config`] written to `DIR/HOST/`; returns
/// each host's dataplane pid and stats file.
pub fn start_sluice(lab: &mut Lab, launch: &SluiceLaunch) -> Result<Vec<(u32, PathBuf)>> {
    start_sluice_each(lab, [launch, launch])
}

/// [`start_sluice`] with its own command line on each host (one host with the flow offload,
/// the other without).
pub fn start_sluice_each(
    lab: &mut Lab,
    launches: [&SluiceLaunch; 2],
) -> Result<Vec<(u32, PathBuf)>> {
    let mut out = Vec::new();
    for (h, launch) in HOSTS.into_iter().zip(launches) {
        let host = h.ns;
        let dir = lab.dir().join(host);
        let file = |source| LabError::File {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(file)?;
        let path = dir.join("config.json");
        let json = serde_json::to_vec(&sluice_config(&h)).map_err(|e| file(e.into()))?;
        std::fs::write(&path, json).map_err(file)?;
        let pid = lab.spawn_os(host, &launch.command(&path), host)?;
        out.push((pid, SluiceLaunch::stats_path(&path)));
    }
    Ok(out)
}

/// The kernel's overlay on both hosts: the VTEP address on `up0`, a vxlan device `vx0` (VNI
/// [`VNI`], UDP 4789, the other host as its remote, MTU 1450 by itself) and a bridge `br0`
/// holding `vx0` and `ep0`.
pub fn start_kernel(lab: &mut Lab) -> Result<()> {
    for Host {
        ns: host,
        vtep,
        peer: (_, peer_vtep),
        ..
    } in HOSTS
    {
        lab.addr(host, "up0", &format!("{vtep}/24"))?;
        let (vni, local, remote) = (VNI.to_string(), vtep.to_string(), peer_vtep.to_string());
        lab.ip(
            host,
            &[
                "link", "add", "vx0", "type", "vxlan", "id", &vni, "local", &local, "remote",
                &remote, "dstport", "4789", "dev", "up0",
            ],
        )?;
        lab.ip(host, &["link", "add", "br0", "type", "bridge"])?;
        for dev in ["vx0", "ep0"] {
            lab.ip(host, &["link", "set", dev, "master", "br0"])?;
            lab.up(host, dev)?;
        }
        lab.up(host, "br0")?;
    }
    Ok(())
}
