//! The configuration the control plane hands to the dataplane: networks, ports, the uplink,
//! published ports and NAT limits. Plain serde types; `tables::Tables` compiles them into the
//! lookup structures the fast path reads.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

pub use crate::config_v6::{Ipv6Cidr, NetworkV6, UplinkV6};
use crate::frame::{NetworkId, PortId};
use crate::wire::MacAddr;

/// An IPv4 prefix such as 172.17.0.0/16.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Ipv4Cidr {
    /// Any address inside the prefix (normalised by `network()`).
    pub addr: Ipv4Addr,
    /// Prefix length, 0 to 32.
    pub prefix: u8,
}

impl Ipv4Cidr {
    /// A prefix; `None` when `prefix` > 32.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Self> {
        (prefix <= 32).then_some(Ipv4Cidr { addr, prefix })
    }

    /// The netmask as a number.
    pub fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix.min(32)))
        }
    }

    /// The first address of the prefix.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The last address of the prefix.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// True when `ip` lies inside the prefix.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    /// True when the two prefixes share an address.
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

impl std::str::FromStr for Ipv4Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = parse_cidr(s, "IPv4", 32)?;
        Ok(Ipv4Cidr { addr, prefix })
    }
}

/// Splits `ADDRESS/PREFIX` into an address of `family` (IPv4 or IPv6) and a prefix length of
/// at most `max`, with an error message that says which part is wrong.
pub(crate) fn parse_cidr<A: std::str::FromStr>(
    s: &str,
    family: &str,
    max: u8,
) -> Result<(A, u8), String> {
    let (a, p) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not a CIDR (expected ADDRESS/PREFIX)"))?;
    let addr = a
        .parse()
        .map_err(|_| format!("{a:?} is not an {family} address"))?;
    let prefix: u8 = p
        .parse()
        .ok()
        .filter(|p| *p <= max)
        .ok_or_else(|| format!("{p:?} is not a prefix length (0-{max})"))?;
    Ok((addr, prefix))
}

fn default_true() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}
fn default_mtu() -> u16 {
    1500
}
fn default_aging() -> u32 {
    300
}
fn default_fdb_max() -> usize {
    8192
}

/// The placeholder subnet of an IPv6-only network.
const NO_SUBNET: Ipv4Cidr = Ipv4Cidr {
    addr: Ipv4Addr::UNSPECIFIED,
    prefix: 32,
};

/// One network: a bridge domain with its subnet and gateway (docker's bridge network).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// Index used by ports and verdicts.
    pub id: NetworkId,
    /// Name shown to operators.
    pub name: String,
    /// The network's subnet.
    pub subnet: Ipv4Cidr,
    /// The gateway address, answered by sluice (ARP, ping) and routed through.
    pub gateway: Ipv4Addr,
    /// The gateway's MAC.
    pub gateway_mac: MacAddr,
    /// VLAN the gateway and the network's access ports sit on inside sluice (0: none).
    #[serde(default)]
    pub vlan: u16,
    /// Internal networks are not routed to the uplink.
    #[serde(default)]
    pub internal: bool,
    /// Inter-container communication; false: endpoints reach only the gateway.
    #[serde(default = "default_true")]
    pub icc: bool,
    /// Allow a frame to leave on the port it came in on.
    #[serde(default)]
    pub hairpin: bool,
    /// The network's MTU (routing to a smaller uplink MTU sends frag-needed).
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// FDB aging time in seconds.
    #[serde(default = "default_aging")]
    pub fdb_aging_secs: u32,
    /// Most learned MACs (MAC-flood defence).
    #[serde(default = "default_fdb_max")]
    pub fdb_max: usize,
    /// The uplink this network is routed through (the port of one of `Config::network_uplinks`);
    /// none: the default uplink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<PortId>,
    /// The gateway is a router outside sluice (a macvlan network's): sluice neither answers
    /// for the gateway address nor routes, and the network is a plain L2 segment.
    #[serde(default)]
    pub external_gateway: bool,
    /// Most flows one endpoint of this network may hold in conntrack (a conntrack zone's
    /// limit); none: `NatConfig::default_max_flows_per_endpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_flows_per_endpoint: Option<usize>,
    /// The network's IPv6 prefix and gateway (dual stack); none: IPv6 is bridged with MAC
    /// anti-spoofing alone and the gateway does not answer it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<NetworkV6>,
    /// sluice's ipvlan on this network (`-d ipvlan`): endpoints share the parent's MAC on the
    /// wire and are reached by address; none: a plain L2 segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipvlan: Option<IpvlanConfig>,
    /// The network carries IPv4; false: an IPv6-only network (docker's `--ipv4=false`, made
    /// by [`NetworkConfig::new_v6_only`]), whose `subnet` and `gateway` are the 0.0.0.0/32
    /// placeholder no endpoint address or published port may use and no check of overlapping
    /// subnets counts.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub ipv4: bool,
}

/// How an ipvlan network carries traffic (docker's `ipvlan_mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IpvlanMode {
    /// Switched: broadcast and multicast reach every endpoint and the parent's segment.
    #[default]
    L2,
    /// Routed: no broadcast or multicast across endpoints or from the parent.
    L3,
}

/// An ipvlan network's parent and mode: what the `ipvlan` stage needs besides the network's
/// endpoints (their addresses, MACs and ports come from their port roles).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpvlanConfig {
    /// The mode.
    pub mode: IpvlanMode,
    /// The parent interface's port (a member of the network); none: endpoints reach only
    /// each other.
    pub parent: Option<PortId>,
    /// The parent's MAC, the one every endpoint shows on the wire; none (unknown): the
    /// network's gateway MAC stands in.
    pub parent_mac: Option<MacAddr>,
}

impl IpvlanConfig {
    /// The MAC endpoints show on the wire and answer ARP with.
    pub fn mac(&self, net: &NetworkConfig) -> MacAddr {
        self.parent_mac.unwrap_or(net.gateway_mac)
    }
}

impl NetworkConfig {
    /// A network with docker's defaults: gateway MAC derived from the gateway address
    /// (02:42:...), no VLAN, routed to the uplink, ICC on, hairpin off, MTU 1500, FDB aging 300 s
    /// and at most 8192 learned MACs.
    pub fn new(
        id: NetworkId,
        name: impl Into<String>,
        subnet: Ipv4Cidr,
        gateway: Ipv4Addr,
    ) -> Self {
        NetworkConfig {
            id,
            name: name.into(),
            subnet,
            gateway,
            gateway_mac: MacAddr::from_ipv4(gateway),
            vlan: 0,
            internal: false,
            icc: default_true(),
            hairpin: false,
            mtu: default_mtu(),
            fdb_aging_secs: default_aging(),
            fdb_max: default_fdb_max(),
            external_gateway: false,
            uplink: None,
            max_flows_per_endpoint: None,
            ipv6: None,
            ipvlan: None,
            ipv4: true,
        }
    }

    /// An IPv6-only network: `v6` addressing, no IPv4 (see [`NetworkConfig::ipv4`]), the
    /// gateway MAC derived from the v6 gateway address.
    pub fn new_v6_only(id: NetworkId, name: impl Into<String>, v6: NetworkV6) -> Self {
        NetworkConfig {
            gateway_mac: MacAddr::from_ipv6(v6.gateway),
            ipv6: Some(v6),
            ipv4: false,
            ..NetworkConfig::new(id, name, NO_SUBNET, Ipv4Addr::UNSPECIFIED)
        }
    }
}

/// What a port is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PortRole {
    /// A container's interface: an access port with anti-spoofing (only its MAC and IPv4).
    Endpoint {
        /// The network it belongs to.
        network: NetworkId,
        /// Its VLAN inside the network (0: the network's own).
        #[serde(default)]
        vlan: u16,
        /// The endpoint's MAC.
        mac: MacAddr,
        /// The endpoint's IPv4 address.
        ipv4: Option<Ipv4Addr>,
        /// The endpoint's IPv6 address (besides its link-local ones), on a dual-stack network.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ipv6: Option<Ipv6Addr>,
    },
    /// An untagged port without anti-spoofing (e.g. to another switch on one VLAN).
    Access {
        /// The network it belongs to.
        network: NetworkId,
        /// Its VLAN (0: the network's own).
        #[serde(default)]
        vlan: u16,
    },
    /// A tagged port carrying several VLANs of one network.
    Trunk {
        /// The network it belongs to.
        network: NetworkId,
        /// VLANs carried, tagged.
        allowed: Vec<u16>,
        /// VLAN of untagged frames (none: untagged frames are dropped).
        #[serde(default)]
        native: Option<u16>,
    },
    /// The routed port towards the outside: NAPT source, where published ports are reached.
    Uplink,
}

/// How frames reach a port: the I/O backend the runtime opens for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortIo {
    /// An existing interface (veth, physical) through AF_PACKET rings.
    #[default]
    AfPacket,
    /// A TAP device sluice creates (or attaches to) with this name.
    Tap,
}

/// An attached interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortConfig {
    /// Index used in verdicts and counters.
    pub id: PortId,
    /// Interface name (for operators and the I/O layer).
    pub name: String,
    /// The I/O backend.
    #[serde(default)]
    pub io: PortIo,
    /// What the port is for.
    pub role: PortRole,
}

/// The routed uplink: its address is the NAPT source and the published ports' address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkConfig {
    /// The port (its role must be `Uplink`).
    pub port: PortId,
    /// Address and prefix owned by sluice on the uplink.
    pub ip: Ipv4Cidr,
    /// MAC used on the uplink.
    pub mac: MacAddr,
    /// Next hop for destinations outside `ip`'s prefix (none: only on-link destinations).
    #[serde(default)]
    pub next_hop: Option<Ipv4Addr>,
    /// MTU of the uplink.
    #[serde(default = "default_mtu")]
    pub mtu: u16,
}

/// Transport protocol of a published port or flow.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum L4Proto {
    /// ICMP (echo id used as the port).
    Icmp = 1,
    /// TCP.
    Tcp = 6,
    /// UDP.
    Udp = 17,
}

impl L4Proto {
    /// IANA protocol number (the discriminant, so that hashing a flow's key reads no table).
    #[inline]
    pub fn number(self) -> u8 {
        self as u8
    }

    /// From an IANA protocol number.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            1 => Some(L4Proto::Icmp),
            6 => Some(L4Proto::Tcp),
            17 => Some(L4Proto::Udp),
            _ => None,
        }
    }
}

/// An inclusive port range; a single port is `first == last`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (inclusive).
    pub last: u16,
}

impl PortRange {
    /// A range of one port.
    pub fn single(p: u16) -> Self {
        PortRange { first: p, last: p }
    }
    /// Number of ports.
    pub fn len(&self) -> u32 {
        u32::from(self.last).saturating_sub(u32::from(self.first)) + 1
    }
    /// Never true: a range holds at least one port (kept for clippy's len/is_empty pairing).
    pub fn is_empty(&self) -> bool {
        self.last < self.first
    }
    /// True when `p` is inside.
    pub fn contains(&self, p: u16) -> bool {
        self.first <= p && p <= self.last
    }

    /// True when the two ranges share a port.
    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

/// Shown as docker writes ports: `80` or `80-90`.
impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// True when two published ports' host addresses can receive the same packet, the one rule the
/// dataplane and the control plane share: `None` and 0.0.0.0 both mean every address, so they
/// clash with any address; two specific addresses clash only when equal.
pub fn host_ips_clash(a: Option<Ipv4Addr>, b: Option<Ipv4Addr>) -> bool {
    let any = |ip: Option<Ipv4Addr>| ip.is_none_or(|ip| ip.is_unspecified());
    any(a) || any(b) || a == b
}

/// [`host_ips_clash`] with v6 host addresses (`(v4, v6)` each, at most one given): a v6
/// address meets the same v6 address and every address, never a v4 address.
pub fn hosts_clash(
    a: (Option<Ipv4Addr>, Option<Ipv6Addr>),
    b: (Option<Ipv4Addr>, Option<Ipv6Addr>),
) -> bool {
    let any = |(v4, v6): (Option<Ipv4Addr>, Option<Ipv6Addr>)| {
        v6.is_none() && v4.is_none_or(|ip| ip.is_unspecified())
    };
    match (a.1, b.1) {
        (Some(x), Some(y)) => x == y,
        (Some(_), None) => any(b),
        (None, Some(_)) => any(a),
        (None, None) => host_ips_clash(a.0, b.0),
    }
}

/// A published port: traffic from the uplink to `host_ip:host_ports` goes to `target`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForward {
    /// TCP or UDP.
    pub proto: L4Proto,
    /// Host address (none: any address sluice owns on the uplink).
    #[serde(default)]
    pub host_ip: Option<Ipv4Addr>,
    /// A v6 host address instead (`-p [ADDR]:...`): published on that address only, on no v4
    /// address (`host_ip` is then none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip6: Option<Ipv6Addr>,
    /// Host ports.
    pub host_ports: PortRange,
    /// The endpoint's network.
    pub network: NetworkId,
    /// The endpoint's v4 address; none on an IPv6-only network, whose rules are reached over
    /// v6 alone.
    #[serde(default)]
    pub target_ip: Option<Ipv4Addr>,
    /// The endpoint's v6 address (a rule without it is reached over v6 through its v4
    /// target's endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ip6: Option<Ipv6Addr>,
    /// Endpoint ports: as many as `host_ports`, or one port that all map to.
    pub target_ports: PortRange,
}

impl PortForward {
    /// True when the rule leads to the endpoint with these addresses.
    pub fn targets(&self, ip: Option<Ipv4Addr>, ip6: Option<Ipv6Addr>) -> bool {
        (self.target_ip.is_some() && self.target_ip == ip)
            || (self.target_ip6.is_some() && self.target_ip6 == ip6)
    }
}

fn default_nat_ports() -> PortRange {
    PortRange {
        first: 32768,
        last: 60999,
    }
}
fn default_max_flows() -> usize {
    262_144
}

/// NAPT limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatConfig {
    /// Source ports (and ICMP ids) NAPT allocates from.
    #[serde(default = "default_nat_ports")]
    pub ports: PortRange,
    /// Hard limit of tracked flows; new flows beyond it are counted drops.
    #[serde(default = "default_max_flows")]
    pub max_flows: usize,
}

impl NatConfig {
    /// Most flows one endpoint holds unless its network says otherwise: a quarter of the
    /// table, or 1024 when that is more but at most half the table. With the default 262,144
    /// flows a busy endpoint (a proxy) still holds 65,536 and it takes four endpoints flooding
    /// at once to fill the table; a small table still lets an endpoint open a thousand flows,
    /// and one endpoint never takes more than half of any table.
    pub fn default_max_flows_per_endpoint(&self) -> usize {
        (self.max_flows / 4)
            .max(self.max_flows.min(2048) / 2)
            .max(1)
    }

    /// Most NAPT source ports (ICMP ids) one endpoint holds toward one destination: half the
    /// range (at least one), so one endpoint flooding a destination always leaves the other
    /// half of the ports there to the others, while a single busy client still gets 14,116
    /// concurrent connections to one address and port with the default range.
    pub fn max_ports_per_destination(&self) -> usize {
        (self.ports.len() as usize / 2).max(1)
    }
}

impl Default for NatConfig {
    fn default() -> Self {
        NatConfig {
            ports: default_nat_ports(),
            max_flows: default_max_flows(),
        }
    }
}

/// Everything the dataplane is told.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Networks, each with a distinct id.
    #[serde(default)]
    pub networks: Vec<NetworkConfig>,
    /// Ports, each with a distinct id.
    #[serde(default)]
    pub ports: Vec<PortConfig>,
    /// The default uplink, if any network is routed out.
    #[serde(default)]
    pub uplink: Option<UplinkConfig>,
    /// More uplinks, each used by the networks that name its port (`NetworkConfig::uplink`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_uplinks: Vec<UplinkConfig>,
    /// Published ports.
    #[serde(default)]
    pub forwards: Vec<PortForward>,
    /// NAPT limits.
    #[serde(default)]
    pub nat: NatConfig,
    /// The multi-host part of overlay networks (VXLAN).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overlays: Vec<crate::overlay::OverlayConfig>,
    /// The uplinks' IPv6 sides (NAT66, published ports over v6, routed v6 networks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uplinks6: Vec<UplinkV6>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_math() {
        let c: Ipv4Cidr = "172.17.0.1/16".parse().unwrap();
        assert_eq!(c.network(), Ipv4Addr::new(172, 17, 0, 0));
        assert_eq!(c.broadcast(), Ipv4Addr::new(172, 17, 255, 255));
        assert!(c.contains(Ipv4Addr::new(172, 17, 3, 4)));
        assert!(!c.contains(Ipv4Addr::new(172, 18, 0, 1)));
        let d: Ipv4Cidr = "172.17.5.0/24".parse().unwrap();
        assert!(c.overlaps(&d) && d.overlaps(&c));
        let e: Ipv4Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(!c.overlaps(&e));
        let all: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(1, 2, 3, 4)));
        assert_eq!(c.to_string(), "172.17.0.0/16");
    }

    #[test]
    fn networks_without_the_ipv4_field_have_ipv4_and_v6_only_ones_keep_it_off() {
        let v4 = NetworkConfig::new(
            NetworkId(1),
            "a",
            "10.1.0.0/24".parse().unwrap(),
            Ipv4Addr::new(10, 1, 0, 1),
        );
        let text = serde_json::to_string(&v4).unwrap();
        assert!(
            !text.contains("ipv4"),
            "configs written before the flag: {text}"
        );
        assert!(serde_json::from_str::<NetworkConfig>(&text).unwrap().ipv4);
        let v6 = NetworkV6 {
            subnet: "fd00:9::/64".parse().unwrap(),
            gateway: "fd00:9::1".parse().unwrap(),
            routed: false,
        };
        let six = NetworkConfig::new_v6_only(NetworkId(2), "six", v6);
        let back: NetworkConfig =
            serde_json::from_str(&serde_json::to_string(&six).unwrap()).unwrap();
        assert_eq!(back, six);
        assert!(!back.ipv4);
    }

    #[test]
    fn port_ranges_overlap_print_and_clash_like_docker() {
        let r = |first, last| PortRange { first, last };
        assert!(r(80, 90).overlaps(&r(90, 95)) && r(90, 95).overlaps(&r(80, 90)));
        assert!(!r(80, 89).overlaps(&r(90, 95)));
        assert_eq!(r(80, 80).to_string(), "80");
        assert_eq!(r(80, 90).to_string(), "80-90");
        let ip = |s: &str| Some(s.parse::<Ipv4Addr>().unwrap());
        assert!(host_ips_clash(None, ip("1.2.3.4")));
        assert!(host_ips_clash(ip("0.0.0.0"), ip("1.2.3.4")));
        assert!(host_ips_clash(ip("1.2.3.4"), ip("1.2.3.4")));
        assert!(!host_ips_clash(ip("1.2.3.4"), ip("1.2.3.5")));
    }

    #[test]
    fn cidr_parse_errors_name_the_problem() {
        assert!("10.0.0.0"
            .parse::<Ipv4Cidr>()
            .unwrap_err()
            .contains("not a CIDR"));
        assert!("10.0.0/8".parse::<Ipv4Cidr>().unwrap_err().contains("IPv4"));
        assert!("10.0.0.0/33"
            .parse::<Ipv4Cidr>()
            .unwrap_err()
            .contains("prefix"));
    }

    #[test]
    fn network_defaults_follow_docker() {
        let n = NetworkConfig::new(
            NetworkId(3),
            "n",
            "10.9.0.0/16".parse().unwrap(),
            Ipv4Addr::new(10, 9, 0, 1),
        );
        assert_eq!(n.gateway_mac.to_string(), "02:42:0a:09:00:01");
        let json = format!(
            r#"{{"id":3,"name":"n","subnet":{{"addr":"10.9.0.0","prefix":16}},"gateway":"10.9.0.1","gateway_mac":"{}"}}"#,
            n.gateway_mac
        );
        let parsed: NetworkConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed, n, "serde defaults and new() agree");
    }

    #[test]
    fn config_round_trips_through_json() {
        let cfg = Config {
            networks: vec![NetworkConfig::new(
                NetworkId(0),
                "bridge",
                "172.17.0.0/16".parse().unwrap(),
                Ipv4Addr::new(172, 17, 0, 1),
            )],
            ports: vec![PortConfig {
                id: PortId(1),
                name: "veth0".into(),
                io: Default::default(),
                role: PortRole::Trunk {
                    network: NetworkId(0),
                    allowed: vec![10, 20],
                    native: None,
                },
            }],
            ..Config::default()
        };
        let json = serde_json::to_string(&cfg).unwrap();
        let back: Config = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg);
    }
}
