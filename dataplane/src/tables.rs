//! The configuration compiled into the lookup tables the fast path reads: ports and networks by
//! index, VLAN membership as bitsets, endpoint neighbours, the port-forwarding table.
//!
//! A `Tables` value is immutable. The control plane builds a new one and swaps it in whole
//! (`Dataplane::apply`), so a worker sees either the old or the new configuration for a whole
//! batch, never a mix. Learned state (each network's FDB) is carried from the old tables to the
//! new ones, so reconfiguration loses no learned MAC.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hashbrown::HashMap;

use crate::bridge::{Fdb, FdbParams};
use crate::config::{
    Config, Ipv4Cidr, Ipv6Cidr, NatConfig, NetworkConfig, PortConfig, PortRole, UplinkConfig,
};
use crate::frame::{NetworkId, PortId};
use crate::nat::Owner;
use crate::overlay::{OverlayError, OverlayTables};
use crate::portfwd::{ForwardError, PortForwardTable};
use crate::wire::MacAddr;

/// Why a configuration was refused. Nothing of it is applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Two networks or two ports share an id.
    #[error("duplicate {what} id {id}")]
    DuplicateId {
        /// "network" or "port".
        what: &'static str,
        /// The id.
        id: u16,
    },
    /// A port id is beyond what the dataplane addresses.
    #[error("port id {0} is too large (at most {max})", max = crate::counters::MAX_PORTS - 1)]
    PortIdTooLarge(u16),
    /// A port or forward names a network that does not exist.
    #[error("{what} refers to network {id}, which does not exist")]
    UnknownNetwork {
        /// What refers to it.
        what: String,
        /// The missing id.
        id: u16,
    },
    /// Two networks' subnets overlap.
    #[error("subnet {subnet} of network {name:?} overlaps network {other:?} ({other_subnet})")]
    SubnetOverlap {
        /// The network being added.
        name: String,
        /// Its subnet.
        subnet: Ipv4Cidr,
        /// The network it clashes with.
        other: String,
        /// That network's subnet.
        other_subnet: Ipv4Cidr,
    },
    /// An address lies outside the subnet it must be in.
    #[error("{what} {ip} is outside subnet {subnet}")]
    OutsideSubnet {
        /// Which address.
        what: String,
        /// The address.
        ip: Ipv4Addr,
        /// The subnet.
        subnet: Ipv4Cidr,
    },
    /// A v6 address lies outside its network's v6 prefix (or the network has none).
    #[error("{what} {ip} is outside the network's IPv6 subnet {subnet:?}")]
    OutsideSubnetV6 {
        /// Which address.
        what: String,
        /// The address.
        ip: Ipv6Addr,
        /// The network's v6 subnet, if it has one.
        subnet: Option<Ipv6Cidr>,
    },
    /// Two endpoints of a network share an address.
    #[error("address {ip} is used by ports {a} and {b}")]
    DuplicateAddress {
        /// The address.
        ip: Ipv4Addr,
        /// One port's name.
        a: String,
        /// The other's.
        b: String,
    },
    /// A VLAN id outside 1..=4094.
    #[error("VLAN {0} is invalid (use 1-4094, or 0 for none)")]
    BadVlan(u16),
    /// The uplink names a port that is missing or not of the uplink role.
    #[error("uplink port {0} is not a port with role \"uplink\"")]
    BadUplink(u16),
    /// A published port is invalid or clashes with another.
    #[error(transparent)]
    Forward(#[from] ForwardError),
    /// An overlay network's VNI or remote endpoints are invalid.
    #[error(transparent)]
    Overlay(#[from] OverlayError),
    /// An ipvlan network's parent is not one of its ports.
    #[error("ipvlan network {network:?} names port {port} as its parent, which is not its own")]
    IpvlanParent {
        /// The network's name.
        network: String,
        /// The port id.
        port: u16,
    },
    /// A published port targets an address that is not an endpoint of its network.
    #[error("published port targets {ip}, which is not in network {network:?}")]
    ForwardTarget {
        /// The target address.
        ip: IpAddr,
        /// The network named by the rule.
        network: String,
    },
}

/// Bitset of the 4096 VLAN ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VlanSet([u64; 64]);

impl VlanSet {
    /// The empty set.
    pub fn new() -> Self {
        VlanSet([0; 64])
    }
    /// Adds a VLAN.
    pub fn insert(&mut self, vlan: u16) {
        let v = usize::from(vlan & 0xfff);
        self.0[v / 64] |= 1 << (v % 64);
    }
    /// True when the VLAN is in the set.
    pub fn contains(&self, vlan: u16) -> bool {
        let v = usize::from(vlan & 0xfff);
        self.0[v / 64] & (1 << (v % 64)) != 0
    }
}

impl Default for VlanSet {
    fn default() -> Self {
        Self::new()
    }
}

/// How a port meets VLANs: which internal VLAN an arriving frame belongs to, and which tag a
/// leaving frame carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortMode {
    /// Untagged on the wire, one internal VLAN.
    Access {
        /// The internal VLAN.
        vlan: u16,
    },
    /// Tagged on the wire for the allowed VLANs; untagged frames belong to `native`.
    Trunk {
        /// VLANs carried tagged (boxed: 512 bytes of bitset).
        allowed: Box<VlanSet>,
        /// VLAN of untagged frames.
        native: Option<u16>,
    },
    /// The routed uplink: untagged, no bridge domain.
    Routed,
}

/// A port as the fast path sees it.
#[derive(Clone, Debug)]
pub struct PortEntry {
    /// The configuration it came from.
    pub config: PortConfig,
    /// The bridge domain (none for the uplink).
    pub network: Option<NetworkId>,
    /// VLAN behaviour.
    pub mode: PortMode,
    /// Anti-spoofing: the only source MAC (and IPv4) accepted, for endpoint ports.
    pub endpoint: Option<(MacAddr, Option<Ipv4Addr>)>,
    /// Anti-spoofing: the endpoint's v6 address (link-local sources are accepted besides).
    pub endpoint_v6: Option<Ipv6Addr>,
    /// Who the flows this port starts are charged to, with the limits: a network port is held
    /// to its network's per-endpoint quota (or the default) and to its share of NAPT ports per
    /// destination, an uplink (published ports) only to the table's limit. Worked out here
    /// once, so that a flow's first packet reads it in one place.
    pub owner: Owner,
}

impl PortEntry {
    /// The internal VLAN of a frame arriving with `tag` (None: untagged); None if not admitted.
    pub fn ingress_vlan(&self, tag: Option<u16>) -> Option<u16> {
        match (&self.mode, tag) {
            (PortMode::Access { vlan }, None) => Some(*vlan),
            (PortMode::Access { vlan }, Some(0)) => Some(*vlan),
            (PortMode::Trunk { native, .. }, None) => *native,
            (PortMode::Trunk { allowed, .. }, Some(t)) => allowed.contains(t).then_some(t),
            (PortMode::Routed, None) => Some(0),
            _ => None,
        }
    }

    /// The tag a frame of internal VLAN `vlan` carries when it leaves this port: `Some(None)`
    /// untagged, `Some(Some(t))` tagged, `None` when the port does not carry that VLAN.
    pub fn egress_tag(&self, vlan: u16) -> Option<Option<u16>> {
        match &self.mode {
            PortMode::Access { vlan: v } => (*v == vlan).then_some(None),
            PortMode::Trunk { allowed, native } => {
                if *native == Some(vlan) {
                    Some(None)
                } else {
                    allowed.contains(vlan).then_some(Some(vlan))
                }
            }
            PortMode::Routed => Some(None),
        }
    }

    /// True for container endpoint ports (subject to ICC and anti-spoofing).
    pub fn is_endpoint(&self) -> bool {
        self.endpoint.is_some()
    }
}

/// A network as the fast path sees it.
#[derive(Debug)]
pub struct NetworkEntry {
    /// The configuration it came from.
    pub config: NetworkConfig,
    /// Learned MACs, shared by workers and carried across configuration swaps.
    pub fdb: Arc<Fdb>,
    /// Ports in this bridge domain, for flooding.
    pub members: Vec<PortId>,
    /// Endpoint addresses: where the gateway delivers routed packets.
    pub neighbors: HashMap<Ipv4Addr, (MacAddr, PortId)>,
    /// Endpoint v6 addresses (global and the EUI-64 link-local of their MACs): where the
    /// ipvlan stage delivers v6 by address.
    pub neighbors6: HashMap<Ipv6Addr, (MacAddr, PortId)>,
}

/// The compiled configuration.
#[derive(Debug)]
pub struct Tables {
    ports: Vec<Option<PortEntry>>,
    networks: Vec<Option<NetworkEntry>>,
    /// The default uplink (if any) first, then the networks' own.
    uplinks: Vec<UplinkConfig>,
    forwards: PortForwardTable,
    overlays: OverlayTables,
    config: Config,
}

fn check_vlan(v: u16) -> Result<(), ConfigError> {
    if v > 4094 {
        Err(ConfigError::BadVlan(v))
    } else {
        Ok(())
    }
}

/// The VLAN mode of a network port with role `role`: access on `vlan` (0: the network's
/// `net_vlan`) or trunk with its allowed set.
fn port_mode(role: &PortRole, vlan: Option<u16>, net_vlan: u16) -> Result<PortMode, ConfigError> {
    Ok(match (role, vlan) {
        (_, Some(v)) => {
            check_vlan(v)?;
            PortMode::Access {
                vlan: if v == 0 { net_vlan } else { v },
            }
        }
        (
            PortRole::Trunk {
                allowed, native, ..
            },
            None,
        ) => {
            let mut set = VlanSet::new();
            for v in allowed {
                check_vlan(*v)?;
                set.insert(*v);
            }
            if let Some(n) = native {
                check_vlan(*n)?;
            }
            PortMode::Trunk {
                allowed: Box::new(set),
                native: *native,
            }
        }
        _ => PortMode::Routed,
    })
}

impl Tables {
    /// Validates `config` and compiles it. FDBs of networks that `prev` already had are reused.
    pub fn build(config: &Config, prev: Option<&Tables>) -> Result<Tables, ConfigError> {
        let mut networks = Self::network_entries(config, prev)?;
        let ports = Self::port_entries(config, &mut networks)?;
        let uplinks = Self::checked_uplinks(config, &ports, &networks)?;
        let forwards = PortForwardTable::build(&config.forwards)?;
        for f in &config.forwards {
            let net = networks
                .get(usize::from(f.network.0))
                .and_then(Option::as_ref)
                .ok_or(ConfigError::UnknownNetwork {
                    what: format!("published port {}", f.host_ports.first),
                    id: f.network.0,
                })?;
            let cfg = &net.config;
            let v4_outside = f
                .target_ip
                .filter(|ip| !cfg.ipv4 || !cfg.subnet.contains(*ip))
                .map(IpAddr::from);
            let v6_outside = f
                .target_ip6
                .filter(|ip| !cfg.ipv6.is_some_and(|v6| v6.subnet.contains(*ip)))
                .map(IpAddr::from);
            if let Some(ip) = v4_outside.or(v6_outside) {
                return Err(ConfigError::ForwardTarget {
                    ip,
                    network: cfg.name.clone(),
                });
            }
        }
        for n in networks.iter().flatten() {
            let Some(parent) = n.config.ipvlan.and_then(|iv| iv.parent) else {
                continue;
            };
            if !n.members.contains(&parent) {
                return Err(ConfigError::IpvlanParent {
                    network: n.config.name.clone(),
                    port: parent.0,
                });
            }
        }
        let overlays = OverlayTables::build(&config.overlays, |id| {
            Some(networks.get(usize::from(id.0))?.as_ref()?.config.subnet)
        })?;
        Ok(Tables {
            ports,
            networks,
            uplinks,
            forwards,
            overlays,
            config: config.clone(),
        })
    }

    /// The networks by id, checked (VLAN, gateway in the subnet, unique ids, no overlapping
    /// subnets), without members yet.
    fn network_entries(
        config: &Config,
        prev: Option<&Tables>,
    ) -> Result<Vec<Option<NetworkEntry>>, ConfigError> {
        let mut networks: Vec<Option<NetworkEntry>> = Vec::new();
        for (i, n) in config.networks.iter().enumerate() {
            check_vlan(n.vlan)?;
            if !n.subnet.contains(n.gateway) {
                return Err(ConfigError::OutsideSubnet {
                    what: format!("gateway of network {:?}", n.name),
                    ip: n.gateway,
                    subnet: n.subnet,
                });
            }
            if let Some(v6) = n.ipv6.filter(|v6| !v6.subnet.contains(v6.gateway)) {
                return Err(ConfigError::OutsideSubnetV6 {
                    what: format!("IPv6 gateway of network {:?}", n.name),
                    ip: v6.gateway,
                    subnet: Some(v6.subnet),
                });
            }
            for other in &config.networks[..i] {
                if other.id == n.id {
                    return Err(ConfigError::DuplicateId {
                        what: "network",
                        id: n.id.0,
                    });
                }
                if other.ipv4 && n.ipv4 && other.subnet.overlaps(&n.subnet) {
                    return Err(ConfigError::SubnetOverlap {
                        name: n.name.clone(),
                        subnet: n.subnet,
                        other: other.name.clone(),
                        other_subnet: other.subnet,
                    });
                }
            }
            let idx = usize::from(n.id.0);
            if networks.len() <= idx {
                networks.resize_with(idx + 1, || None);
            }
            let params = FdbParams {
                aging_secs: n.fdb_aging_secs,
                max_entries: n.fdb_max,
            };
            let fdb = match prev.and_then(|p| p.network(n.id)) {
                Some(old) => {
                    old.fdb.set_params(params);
                    Arc::clone(&old.fdb)
                }
                None => Arc::new(Fdb::new(params)),
            };
            networks[idx] = Some(NetworkEntry {
                config: n.clone(),
                fdb,
                members: Vec::new(),
                neighbors: HashMap::new(),
                neighbors6: HashMap::new(),
            });
        }
        Ok(networks)
    }

    /// The ports by id, checked, each added to its network's members (and neighbours).
    fn port_entries(
        config: &Config,
        networks: &mut [Option<NetworkEntry>],
    ) -> Result<Vec<Option<PortEntry>>, ConfigError> {
        let mut ports: Vec<Option<PortEntry>> = Vec::new();
        for p in &config.ports {
            let idx = usize::from(p.id.0);
            if idx >= crate::counters::MAX_PORTS {
                return Err(ConfigError::PortIdTooLarge(p.id.0));
            }
            if ports.len() <= idx {
                ports.resize_with(idx + 1, || None);
            }
            if ports[idx].is_some() {
                return Err(ConfigError::DuplicateId {
                    what: "port",
                    id: p.id.0,
                });
            }
            let entry = Self::port_entry(p, networks, &config.nat)?;
            ports[idx] = Some(entry);
        }
        Ok(ports)
    }

    /// The uplinks, the default one first: each on its own uplink port, and every network's
    /// uplink one of the networks' uplinks.
    fn checked_uplinks(
        config: &Config,
        ports: &[Option<PortEntry>],
        networks: &[Option<NetworkEntry>],
    ) -> Result<Vec<UplinkConfig>, ConfigError> {
        let uplinks: Vec<UplinkConfig> = config
            .uplink
            .iter()
            .chain(&config.network_uplinks)
            .cloned()
            .collect();
        for (i, u) in uplinks.iter().enumerate() {
            let ok = ports
                .get(usize::from(u.port.0))
                .and_then(Option::as_ref)
                .is_some_and(|p| p.config.role == PortRole::Uplink);
            if !ok || uplinks[..i].iter().any(|o| o.port == u.port) {
                return Err(ConfigError::BadUplink(u.port.0));
            }
        }
        for n in networks.iter().flatten() {
            if let Some(p) = n.config.uplink {
                if !config.network_uplinks.iter().any(|u| u.port == p) {
                    return Err(ConfigError::BadUplink(p.0));
                }
            }
        }
        Ok(uplinks)
    }

    fn port_entry(
        p: &PortConfig,
        networks: &mut [Option<NetworkEntry>],
        nat: &NatConfig,
    ) -> Result<PortEntry, ConfigError> {
        let (network, vlan, endpoint, endpoint_v6) = match &p.role {
            PortRole::Endpoint {
                network,
                vlan,
                mac,
                ipv4,
                ipv6,
            } => (*network, Some(*vlan), Some((*mac, *ipv4)), *ipv6),
            PortRole::Access { network, vlan } => (*network, Some(*vlan), None, None),
            PortRole::Trunk { network, .. } => (*network, None, None, None),
            PortRole::Uplink => {
                return Ok(PortEntry {
                    config: p.clone(),
                    network: None,
                    mode: PortMode::Routed,
                    endpoint: None,
                    endpoint_v6: None,
                    owner: Owner::unlimited(p.id),
                })
            }
        };
        let net = networks
            .get_mut(usize::from(network.0))
            .and_then(Option::as_mut)
            .ok_or_else(|| ConfigError::UnknownNetwork {
                what: format!("port {:?}", p.name),
                id: network.0,
            })?;
        let mode = port_mode(&p.role, vlan, net.config.vlan)?;
        if let Some((mac, Some(ip))) = endpoint {
            if !net.config.ipv4 || !net.config.subnet.contains(ip) {
                return Err(ConfigError::OutsideSubnet {
                    what: format!("address of port {:?}", p.name),
                    ip,
                    subnet: net.config.subnet,
                });
            }
            if let Some((_, other)) = net.neighbors.insert(ip, (mac, p.id)) {
                return Err(ConfigError::DuplicateAddress {
                    ip,
                    a: format!("{}", other.0),
                    b: p.name.clone(),
                });
            }
        }
        let subnet6 = net.config.ipv6.map(|v6| v6.subnet);
        if let Some(ip) = endpoint_v6.filter(|ip| !subnet6.is_some_and(|s| s.contains(*ip))) {
            return Err(ConfigError::OutsideSubnetV6 {
                what: format!("IPv6 address of port {:?}", p.name),
                ip,
                subnet: subnet6,
            });
        }
        if let Some((mac, _)) = endpoint {
            let link_local = crate::wire::ndisc::link_local(mac);
            for ip in endpoint_v6.into_iter().chain([link_local]) {
                net.neighbors6.insert(ip, (mac, p.id));
            }
        }
        net.members.push(p.id);
        let owner = Owner {
            port: p.id,
            max_flows: net
                .config
                .max_flows_per_endpoint
                .unwrap_or_else(|| nat.default_max_flows_per_endpoint()),
            max_ports_per_destination: nat.max_ports_per_destination(),
        };
        Ok(PortEntry {
            config: p.clone(),
            network: Some(network),
            mode,
            endpoint,
            endpoint_v6,
            owner,
        })
    }

    /// A port by id.
    #[inline]
    pub fn port(&self, id: PortId) -> Option<&PortEntry> {
        self.ports.get(usize::from(id.0)).and_then(Option::as_ref)
    }

    /// A network by id.
    #[inline]
    pub fn network(&self, id: NetworkId) -> Option<&NetworkEntry> {
        self.networks
            .get(usize::from(id.0))
            .and_then(Option::as_ref)
    }

    /// Every network.
    pub fn networks(&self) -> impl Iterator<Item = &NetworkEntry> {
        self.networks.iter().flatten()
    }

    /// Every port.
    pub fn ports(&self) -> impl Iterator<Item = &PortEntry> {
        self.ports.iter().flatten()
    }

    /// The network whose subnet holds `ip`.
    pub fn network_of(&self, ip: Ipv4Addr) -> Option<&NetworkEntry> {
        self.networks().find(|n| n.config.subnet.contains(ip))
    }

    /// The default uplink, if configured.
    pub fn uplink(&self) -> Option<&UplinkConfig> {
        self.config.uplink.as_ref()
    }

    /// Every uplink: the default one first, then the networks' own.
    pub fn uplinks(&self) -> impl Iterator<Item = &UplinkConfig> {
        self.uplinks.iter()
    }

    /// The uplink on port `port`, if it is one.
    pub fn uplink_on(&self, port: PortId) -> Option<&UplinkConfig> {
        self.uplinks.iter().find(|u| u.port == port)
    }

    /// The uplink network `net` is routed through: its own, or the default one.
    pub fn uplink_of(&self, net: &NetworkConfig) -> Option<&UplinkConfig> {
        match net.uplink {
            Some(p) => self.uplink_on(p),
            None => self.uplink(),
        }
    }

    /// Where a connection to `dst:dst_port` goes, if that port is published on `dst`, an
    /// address of the uplink the target's network is routed through (a port published on
    /// every address is reached only through its network's uplink).
    pub fn published(
        &self,
        proto: crate::config::L4Proto,
        dst: Ipv4Addr,
        dst_port: u16,
    ) -> Option<crate::portfwd::ForwardTarget> {
        // Most routed packets go elsewhere: a comparison with the uplinks' addresses (one or
        // two) spares them the table lookups.
        let up = self.uplink_with_ip(dst)?;
        let target = self.forwards.lookup(proto, dst, dst_port)?;
        let net = self.network(target.network)?;
        (self.uplink_of(&net.config)?.port == up.port).then_some(target)
    }

    /// The uplink that owns address `ip` (where NAPT flows and published ports live).
    pub fn uplink_with_ip(&self, ip: Ipv4Addr) -> Option<&UplinkConfig> {
        self.uplinks.iter().find(|u| u.ip.addr == ip)
    }

    /// Overlay networks' VNIs and remote endpoints.
    #[inline]
    pub fn overlays(&self) -> &OverlayTables {
        &self.overlays
    }

    /// Published ports.
    pub fn forwards(&self) -> &PortForwardTable {
        &self.forwards
    }

    /// The configuration these tables were built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where a flood of `vlan` in `network` that came in on `ingress` goes: each port with the
    /// tag the frame carries there. With ICC off, a flood from an endpoint skips other endpoints.
    pub fn flood_targets<'t>(
        &'t self,
        network: NetworkId,
        vlan: u16,
        ingress: PortId,
    ) -> impl Iterator<Item = (PortId, Option<u16>)> + 't {
        let net = self.network(network);
        let icc_blocks = net.is_some_and(|n| !n.config.icc)
            && self.port(ingress).is_some_and(PortEntry::is_endpoint);
        net.into_iter()
            .flat_map(|n| n.members.iter().copied())
            .filter(move |p| *p != ingress)
            .filter_map(move |p| {
                let entry = self.port(p)?;
                if icc_blocks && entry.is_endpoint() {
                    return None;
                }
                entry.egress_tag(vlan).map(|tag| (p, tag))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{L4Proto, PortForward, PortRange};

    fn net(id: u16, name: &str, subnet: &str, gw: [u8; 4]) -> NetworkConfig {
        NetworkConfig {
            fdb_max: 100,
            external_gateway: false,
            uplink: None,
            ..NetworkConfig::new(
                NetworkId(id),
                name,
                subnet.parse().unwrap(),
                Ipv4Addr::from(gw),
            )
        }
    }

    fn endpoint(id: u16, network: u16, ip: [u8; 4]) -> PortConfig {
        let ip = Ipv4Addr::from(ip);
        PortConfig {
            id: PortId(id),
            name: format!("p{id}"),
            io: Default::default(),
            role: PortRole::Endpoint {
                network: NetworkId(network),
                vlan: 0,
                mac: MacAddr::from_ipv4(ip),
                ipv4: Some(ip),
                ipv6: None,
            },
        }
    }

    fn base() -> Config {
        Config {
            networks: vec![net(0, "a", "10.1.0.0/16", [10, 1, 0, 1])],
            ports: vec![endpoint(1, 0, [10, 1, 0, 2]), endpoint(2, 0, [10, 1, 0, 3])],
            ..Config::default()
        }
    }

    #[test]
    fn overlapping_subnets_name_the_other_network() {
        let mut c = base();
        c.networks.push(net(1, "b", "10.1.2.0/24", [10, 1, 2, 1]));
        let e = Tables::build(&c, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "subnet 10.1.2.0/24 of network \"b\" overlaps network \"a\" (10.1.0.0/16)"
        );
    }

    #[test]
    fn v6_only_networks_take_no_v4_address_and_do_not_overlap_each_other() {
        let six = |id: u16, prefix: &str| {
            let v6 = crate::config::NetworkV6 {
                subnet: format!("{prefix}/64").parse().unwrap(),
                gateway: format!("{prefix}1").parse().unwrap(),
                routed: false,
            };
            NetworkConfig::new_v6_only(NetworkId(id), format!("six{id}"), v6)
        };
        let mut c = base();
        c.networks.push(six(1, "fd00:1::"));
        c.networks.push(six(2, "fd00:2::"));
        let t = Tables::build(&c, None).unwrap();
        assert!(!t.network(NetworkId(1)).unwrap().config.ipv4);
        let gateway_mac = |id| t.network(NetworkId(id)).unwrap().config.gateway_mac;
        assert_eq!(
            gateway_mac(1),
            MacAddr([2, 0x42, 0xfd, 0, 0, 0]),
            "fd00:0001 ^ 1"
        );
        assert_ne!(
            gateway_mac(1),
            gateway_mac(2),
            "one host part, two prefixes"
        );
        let mut v6_only_port = endpoint(3, 1, [0, 0, 0, 0]);
        if let PortRole::Endpoint { ipv4, ipv6, .. } = &mut v6_only_port.role {
            *ipv4 = None;
            *ipv6 = Some("fd00:1::2".parse().unwrap());
        }
        c.ports.push(v6_only_port);
        Tables::build(&c, None).unwrap();
        c.ports.push(endpoint(4, 1, [0, 0, 0, 0]));
        assert!(matches!(
            Tables::build(&c, None),
            Err(ConfigError::OutsideSubnet { .. })
        ));
        c.ports.pop();
        c.forwards.push(PortForward {
            proto: L4Proto::Tcp,
            host_ip: None,
            host_ip6: None,
            host_ports: PortRange::single(80),
            network: NetworkId(1),
            target_ip: None,
            target_ip6: Some("fd00:2::2".parse().unwrap()),
            target_ports: PortRange::single(80),
        });
        assert!(matches!(
            Tables::build(&c, None),
            Err(ConfigError::ForwardTarget { .. })
        ));
        c.forwards[0].target_ip6 = Some("fd00:1::2".parse().unwrap());
        Tables::build(&c, None).unwrap();
    }

    #[test]
    fn a_network_uplink_must_be_an_uplink_port() {
        let mut c = base();
        c.networks[0].uplink = Some(PortId(1));
        assert_eq!(
            Tables::build(&c, None).unwrap_err(),
            ConfigError::BadUplink(1),
            "a network may only name one of network_uplinks"
        );
        c.network_uplinks.push(UplinkConfig {
            port: PortId(1),
            ip: "203.0.113.2/24".parse().unwrap(),
            mac: MacAddr([2, 0, 0, 0, 0, 9]),
            next_hop: None,
            mtu: 1500,
        });
        assert_eq!(
            Tables::build(&c, None).unwrap_err(),
            ConfigError::BadUplink(1),
            "port 1 exists but is not an uplink port"
        );
    }

    #[test]
    fn bad_configs_are_refused() {
        let mut c = base();
        c.ports.push(endpoint(3, 7, [10, 1, 0, 9]));
        assert!(matches!(
            Tables::build(&c, None),
            Err(ConfigError::UnknownNetwork { id: 7, .. })
        ));
        let mut c = base();
        c.ports.push(endpoint(3, 0, [10, 1, 0, 2]));
        assert!(matches!(
            Tables::build(&c, None),
            Err(ConfigError::DuplicateAddress { .. })
        ));
        let mut c = base();
        c.ports.push(endpoint(3, 0, [10, 9, 0, 2]));
        assert!(matches!(
            Tables::build(&c, None),
            Err(ConfigError::OutsideSubnet { .. })
        ));
        let mut c = base();
        c.ports.push(endpoint(1, 0, [10, 1, 0, 7]));
        assert!(matches!(
            Tables::build(&c, None),
            Err(ConfigError::DuplicateId { what: "port", .. })
        ));
        let mut c = base();
        c.networks[0].gateway = Ipv4Addr::new(10, 2, 0, 1);
        assert!(matches!(
            Tables::build(&c, None),
            Err(ConfigError::OutsideSubnet { .. })
        ));
        let mut c = base();
        c.uplink = Some(UplinkConfig {
            port: PortId(1),
            ip: "192.0.2.1/24".parse().unwrap(),
            mac: MacAddr([2, 0, 0, 0, 0, 9]),
            next_hop: None,
            mtu: 1500,
        });
        assert_eq!(
            Tables::build(&c, None).unwrap_err(),
            ConfigError::BadUplink(1)
        );
        let mut c = base();
        c.forwards.push(PortForward {
            proto: L4Proto::Tcp,
            host_ip: None,
            host_ip6: None,
            host_ports: PortRange::single(80),
            network: NetworkId(0),
            target_ip: Some(Ipv4Addr::new(10, 9, 9, 9)),
            target_ip6: None,
            target_ports: PortRange::single(80),
        });
        assert!(matches!(
            Tables::build(&c, None),
            Err(ConfigError::ForwardTarget { .. })
        ));
    }

    #[test]
    fn fdb_survives_a_rebuild() {
        let t1 = Tables::build(&base(), None).unwrap();
        let t2 = Tables::build(&base(), Some(&t1)).unwrap();
        let a = &t1.network(NetworkId(0)).unwrap().fdb;
        let b = &t2.network(NetworkId(0)).unwrap().fdb;
        assert!(Arc::ptr_eq(a, b));
    }

    #[test]
    fn vlan_modes_admit_and_tag() {
        let mut c = base();
        c.ports.push(PortConfig {
            id: PortId(5),
            name: "trunk".into(),
            io: Default::default(),
            role: PortRole::Trunk {
                network: NetworkId(0),
                allowed: vec![10, 20],
                native: Some(30),
            },
        });
        let t = Tables::build(&c, None).unwrap();
        let trunk = t.port(PortId(5)).unwrap();
        assert_eq!(trunk.ingress_vlan(Some(10)), Some(10));
        assert_eq!(trunk.ingress_vlan(Some(11)), None);
        assert_eq!(trunk.ingress_vlan(None), Some(30));
        assert_eq!(trunk.egress_tag(20), Some(Some(20)));
        assert_eq!(trunk.egress_tag(30), Some(None));
        assert_eq!(trunk.egress_tag(40), None);
        let access = t.port(PortId(1)).unwrap();
        assert_eq!(access.ingress_vlan(None), Some(0));
        assert_eq!(access.ingress_vlan(Some(10)), None);
        assert_eq!(access.egress_tag(0), Some(None));
        assert_eq!(access.egress_tag(10), None);
        assert!(matches!(
            Tables::build(
                &Config {
                    ports: vec![PortConfig {
                        id: PortId(5),
                        name: "t".into(),
                        io: Default::default(),
                        role: PortRole::Trunk {
                            network: NetworkId(0),
                            allowed: vec![4095],
                            native: None
                        }
                    }],
                    ..base()
                },
                None
            ),
            Err(ConfigError::BadVlan(4095))
        ));
    }

    #[test]
    fn flooding_skips_ingress_and_respects_icc() {
        let mut c = base();
        c.ports.push(PortConfig {
            id: PortId(3),
            name: "acc".into(),
            io: Default::default(),
            role: PortRole::Access {
                network: NetworkId(0),
                vlan: 0,
            },
        });
        let t = Tables::build(&c, None).unwrap();
        let all: Vec<_> = t.flood_targets(NetworkId(0), 0, PortId(1)).collect();
        assert_eq!(all, vec![(PortId(2), None), (PortId(3), None)]);
        c.networks[0].icc = false;
        let t = Tables::build(&c, None).unwrap();
        let no_icc: Vec<_> = t.flood_targets(NetworkId(0), 0, PortId(1)).collect();
        assert_eq!(no_icc, vec![(PortId(3), None)]);
        let from_access: Vec<_> = t.flood_targets(NetworkId(0), 0, PortId(3)).collect();
        assert_eq!(from_access, vec![(PortId(1), None), (PortId(2), None)]);
    }
}
