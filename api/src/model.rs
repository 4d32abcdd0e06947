//! The control plane's API types, shared by the daemon (`sluiced`) and the CLI: what an operator
//! asks for (`NetworkSpec`, `EndpointSpec`), what the daemon made of it (`Network`, `Endpoint`)
//! and the `docker network inspect`-shaped view of a network.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sluice_dataplane::config::{Ipv4Cidr, Ipv6Cidr};
use sluice_dataplane::frame::{NetworkId, PortId};
use sluice_dataplane::wire::MacAddr;

use crate::files::NameOptions;
use crate::publish::PublishSpec;

/// Why an option or driver name given on the command line is not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// A driver sluice does not know.
    #[error("unknown driver {0:?} (use bridge, macvlan, ipvlan, overlay, none or host)")]
    UnknownDriver(String),
    /// `--opt` without `=`.
    #[error("option {0:?} is not KEY=VALUE")]
    NotKeyValue(String),
    /// An option key sluice does not know.
    #[error("unknown option {0:?} (known: mtu, icc, vlan, parent, vni, max_flows_per_endpoint)")]
    UnknownOption(String),
    /// An option value of the wrong form.
    #[error("option {key}={value:?} is invalid: {expected}")]
    BadValue {
        /// The option.
        key: &'static str,
        /// The value given.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
}

/// How a network attaches its endpoints (docker's `--driver`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// A switched network with a gateway, routed (NAPT) to the uplink: docker0's replacement.
    #[default]
    Bridge,
    /// Endpoints appear directly on a parent interface's segment.
    Macvlan,
    /// No networking (the predefined `none` network).
    None,
    /// The host's own stack (the predefined `host` network).
    Host,
    /// One network across hosts (VXLAN), docker's `overlay`.
    Overlay,
    /// Endpoints on a parent interface's segment, delivered by IP (`ipvlan_mode`).
    Ipvlan,
}

impl Driver {
    /// The driver's name as docker prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Bridge => "bridge",
            Driver::Macvlan => "macvlan",
            Driver::None => "null",
            Driver::Host => "host",
            Driver::Overlay => "overlay",
            Driver::Ipvlan => "ipvlan",
        }
    }
}

impl FromStr for Driver {
    type Err = OptionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bridge" => Ok(Driver::Bridge),
            "macvlan" => Ok(Driver::Macvlan),
            "none" | "null" => Ok(Driver::None),
            "host" => Ok(Driver::Host),
            "overlay" => Ok(Driver::Overlay),
            "ipvlan" => Ok(Driver::Ipvlan),
            _ => Err(OptionError::UnknownDriver(s.to_string())),
        }
    }
}

/// An ipvlan network's mode (docker's `-o ipvlan_mode`, `l2` by default): `l2` switches on
/// the parent's segment; `l3` and `l3s` route, so endpoints take their default route through
/// the interface itself, without a gateway.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpvlanMode {
    /// Switched: endpoints reach the parent's segment and its router.
    #[default]
    L2,
    /// Routed: no gateway, the default route is on the link.
    L3,
    /// As `l3`; the kernel's difference (host netfilter on the traffic) has no sluice
    /// counterpart.
    L3s,
}

impl IpvlanMode {
    /// Whether endpoints route through the interface itself rather than via a gateway.
    pub fn routed(self) -> bool {
        self != IpvlanMode::L2
    }

    /// The mode as docker spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            IpvlanMode::L2 => "l2",
            IpvlanMode::L3 => "l3",
            IpvlanMode::L3s => "l3s",
        }
    }
}

/// An ipvlan network's flag (docker's `-o ipvlan_flag`, `bridge` by default): whether its
/// endpoints reach each other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpvlanFlag {
    /// Endpoints reach each other inside sluice.
    #[default]
    Bridge,
    /// Endpoints reach the parent's segment only, never each other.
    Private,
    /// Endpoint to endpoint traffic goes through the parent's switch (refused by the driver:
    /// sluice cannot hand it out and back yet).
    Vepa,
}

impl IpvlanFlag {
    /// The flag as docker spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            IpvlanFlag::Bridge => "bridge",
            IpvlanFlag::Private => "private",
            IpvlanFlag::Vepa => "vepa",
        }
    }
}

/// docker's option key for the MTU.
pub const OPT_MTU: &str = "com.docker.network.driver.mtu";
/// docker's option key for inter-container communication.
pub const OPT_ICC: &str = "com.docker.network.bridge.enable_icc";
/// docker's option key for how v6 leaves a bridge network: `nat` (NAT66, the default) or
/// `routed` (the network's prefix routed untranslated).
pub const OPT_GATEWAY_MODE_V6: &str = "com.docker.network.bridge.gateway_mode_ipv6";
/// What `gateway_mode_ipv6` accepts.
const GATEWAY_MODE_RULE: &str = "nat or routed";

const MTU_RULE: &str = "a number from 68 to 65535";
/// What `max_flows_per_endpoint` accepts.
const FLOWS_RULE: &str = "a number of flows, at least 1";
/// What `vni` accepts.
const VNI_RULE: &str = "a VXLAN id from 1 to 16777215";
/// What `vlan` accepts.
const VLAN_RULE: &str = "a VLAN id from 1 to 4094";
/// What `ipvlan_mode` accepts (docker's words).
const IPVLAN_MODE_RULE: &str = "l2, l3 or l3s; l2 is the ipvlan driver's default";
/// What `ipvlan_flag` accepts (docker's words).
const IPVLAN_FLAG_RULE: &str = "bridge, private or vepa; bridge is the ipvlan driver's default";

/// Driver options (`--opt KEY=VALUE`), typed. Unset options take the dataplane's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkOptions {
    /// The network's MTU (`mtu` or docker's `com.docker.network.driver.mtu`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    /// Inter-container communication (`icc` or `com.docker.network.bridge.enable_icc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icc: Option<bool>,
    /// The VLAN the network sits on inside sluice (`vlan`, 1-4094).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// The parent interface of a macvlan network (`parent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// An overlay network's VXLAN network identifier (`vni`, 1 to 2^24-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// Most conntrack flows one endpoint of the network may hold (`max_flows_per_endpoint`);
    /// none: the dataplane's default (a quarter of the table, see `NatConfig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_flows_per_endpoint: Option<usize>,
    /// An ipvlan network's mode (`ipvlan_mode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipvlan_mode: Option<IpvlanMode>,
    /// An ipvlan network's flag (`ipvlan_flag`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipvlan_flag: Option<IpvlanFlag>,
    /// How v6 leaves the network (`gateway_mode_ipv6` or docker's
    /// `com.docker.network.bridge.gateway_mode_ipv6`): `nat` or `routed`; none: nat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_mode_ipv6: Option<String>,
}

impl NetworkOptions {
    /// Applies one `--opt KEY=VALUE`.
    pub fn set(&mut self, opt: &str) -> Result<(), OptionError> {
        let (k, v) = opt
            .split_once('=')
            .ok_or_else(|| OptionError::NotKeyValue(opt.to_string()))?;
        let bad = |key, expected| OptionError::BadValue {
            key,
            value: v.chars().take(64).collect(),
            expected,
        };
        let mut next = self.clone();
        match k {
            "mtu" | OPT_MTU => next.mtu = Some(v.parse().map_err(|_| bad("mtu", MTU_RULE))?),
            "icc" | OPT_ICC => {
                next.icc = Some(v.parse().map_err(|_| bad("icc", "true or false"))?);
            }
            "vlan" => next.vlan = Some(v.parse().map_err(|_| bad("vlan", VLAN_RULE))?),
            "parent" => next.parent = Some(v.to_string()),
            "vni" => next.vni = Some(v.parse().map_err(|_| bad("vni", VNI_RULE))?),
            "max_flows_per_endpoint" => {
                next.max_flows_per_endpoint = Some(
                    v.parse()
                        .map_err(|_| bad("max_flows_per_endpoint", FLOWS_RULE))?,
                );
            }
            "ipvlan_mode" => {
                next.ipvlan_mode = Some(match v {
                    "l2" => IpvlanMode::L2,
                    "l3" => IpvlanMode::L3,
                    "l3s" => IpvlanMode::L3s,
                    _ => return Err(bad("ipvlan_mode", IPVLAN_MODE_RULE)),
                });
            }
            "ipvlan_flag" => {
                next.ipvlan_flag = Some(match v {
                    "bridge" => IpvlanFlag::Bridge,
                    "private" => IpvlanFlag::Private,
                    "vepa" => IpvlanFlag::Vepa,
                    _ => return Err(bad("ipvlan_flag", IPVLAN_FLAG_RULE)),
                });
            }
            "gateway_mode_ipv6" | OPT_GATEWAY_MODE_V6 => {
                next.gateway_mode_ipv6 = Some(v.to_string());
            }
            _ => return Err(OptionError::UnknownOption(k.chars().take(64).collect())),
        }
        next.check()?;
        *self = next;
        Ok(())
    }

    /// True when the network's v6 is routed untranslated (`gateway_mode_ipv6=routed`).
    pub fn routed_ipv6(&self) -> bool {
        self.gateway_mode_ipv6.as_deref() == Some("routed")
    }

    /// Refuses values no network can have, however they came (`--opt` or JSON): an MTU
    /// below 68, a VLAN outside 1-4094, a VXLAN id outside 1-16777215, a flow quota of 0, a parent that is not an interface name.
    pub fn check(&self) -> Result<(), OptionError> {
        let bad = |key, value: String, expected| OptionError::BadValue {
            key,
            value: value.chars().take(64).collect(),
            expected,
        };
        if let Some(m) = self.mtu.filter(|m| *m < 68) {
            return Err(bad("mtu", m.to_string(), MTU_RULE));
        }
        if let Some(n) = self.vlan.filter(|n| !(1..=4094).contains(n)) {
            return Err(bad("vlan", n.to_string(), VLAN_RULE));
        }
        if let Some(n) = self.vni.filter(|n| !(1..1 << 24).contains(n)) {
            return Err(bad("vni", n.to_string(), VNI_RULE));
        }
        if let Some(m) = self
            .gateway_mode_ipv6
            .as_ref()
            .filter(|m| !matches!(m.as_str(), "nat" | "routed"))
        {
            return Err(bad("gateway_mode_ipv6", m.clone(), GATEWAY_MODE_RULE));
        }
        if self.max_flows_per_endpoint == Some(0) {
            return Err(bad("max_flows_per_endpoint", "0".into(), FLOWS_RULE));
        }
        if let Some(p) = self
            .parent
            .as_ref()
            .filter(|p| !crate::naming::valid_ifname(p))
        {
            return Err(bad(
                "parent",
                p.clone(),
                "an interface name of 1-15 letters, digits, _ . -",
            ));
        }
        Ok(())
    }

    /// The options as docker shows them in `inspect`.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        if let Some(v) = self.mtu {
            m.insert(OPT_MTU.to_string(), v.to_string());
        }
        if let Some(v) = self.icc {
            m.insert(OPT_ICC.to_string(), v.to_string());
        }
        if let Some(v) = self.vlan {
            m.insert("vlan".to_string(), v.to_string());
        }
        if let Some(v) = &self.parent {
            m.insert("parent".to_string(), v.clone());
        }
        if let Some(v) = self.vni {
            m.insert("vni".to_string(), v.to_string());
        }
        if let Some(v) = self.max_flows_per_endpoint {
            m.insert("max_flows_per_endpoint".to_string(), v.to_string());
        }
        if let Some(v) = self.ipvlan_mode {
            m.insert("ipvlan_mode".to_string(), v.as_str().to_string());
        }
        if let Some(v) = self.ipvlan_flag {
            m.insert("ipvlan_flag".to_string(), v.as_str().to_string());
        }
        if let Some(v) = &self.gateway_mode_ipv6 {
            m.insert(OPT_GATEWAY_MODE_V6.to_string(), v.clone());
        }
        m
    }
}

/// A network's own uplink (`network create --uplink IF --uplink-ip CIDR`): where its NAPT
/// traffic leaves and its published ports are reached, instead of the daemon's uplink.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkSpec {
    /// The interface, in sluiced's namespace.
    pub name: String,
    /// sluice's own address and prefix on it.
    pub ip: Ipv4Cidr,
    /// The next hop for everything off that subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// sluice's MAC on it (default: derived from the address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// sluice's v6 address and prefix on it (`--uplink-ip6`): the network's NAT66 source and
    /// where its published ports are reached over v6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Cidr>,
    /// The v6 next hop on it (`--uplink-gateway6`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
}

/// What `sluice network create` asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// The network's name, unique.
    pub name: String,
    /// The driver.
    #[serde(default)]
    pub driver: Driver,
    /// The subnet (none: the next free one of docker's default pools).
    #[serde(default)]
    pub subnet: Option<Ipv4Cidr>,
    /// The gateway (none: the subnet's first host address).
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// The part of the subnet dynamic addresses come from (none: the whole subnet).
    #[serde(default)]
    pub ip_range: Option<Ipv4Cidr>,
    /// Addresses the IPAM never hands out, by name (`--aux-address name=ip`).
    #[serde(default)]
    pub aux_addresses: BTreeMap<String, Ipv4Addr>,
    /// Not routed to the uplink.
    #[serde(default)]
    pub internal: bool,
    /// Driver options.
    #[serde(default)]
    pub options: NetworkOptions,
    /// Free-form labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The network's own uplink (none: the daemon's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<UplinkSpec>,
    /// Dual stack (`--ipv6`): endpoints get a v6 address too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enable_ipv6: bool,
    /// IPv4 on the network (docker 28's `--ipv4`); false with `enable_ipv6`: an IPv6-only
    /// network, no v4 subnet and no v4 address on its endpoints.
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub enable_ipv4: bool,
    /// The v6 subnet (none with `enable_ipv6`: a ULA /64 of the default pool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<Ipv6Cidr>,
    /// The v6 gateway (none: the v6 subnet's first address after the prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    /// The part of the v6 subnet dynamic addresses come from (none: the whole subnet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range6: Option<Ipv6Cidr>,
    /// v6 addresses the IPAM never hands out, by name (`--aux-address name=v6`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aux_addresses6: BTreeMap<String, Ipv6Addr>,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        NetworkSpec {
            name: String::new(),
            driver: Driver::default(),
            subnet: None,
            gateway: None,
            ip_range: None,
            aux_addresses: BTreeMap::new(),
            internal: false,
            options: NetworkOptions::default(),
            labels: BTreeMap::new(),
            uplink: None,
            enable_ipv6: false,
            enable_ipv4: true,
            subnet6: None,
            gateway6: None,
            ip_range6: None,
            aux_addresses6: BTreeMap::new(),
        }
    }
}

/// Serde's default for flags that are on unless turned off.
fn yes() -> bool {
    true
}

/// Leaves flags at their default (on) out of the JSON.
fn is_yes(b: &bool) -> bool {
    *b
}

/// A created network: the spec plus what the daemon decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// 64 hex characters, like docker's.
    pub id: String,
    /// Creation time, RFC 3339 (UTC, nanoseconds).
    pub created: String,
    /// What was asked for.
    pub spec: NetworkSpec,
    /// The subnet in use (given or allocated); none for `host` and `none`.
    pub subnet: Option<Ipv4Cidr>,
    /// The gateway in use (given or the first host address); none for `host` and `none`.
    pub gateway: Option<Ipv4Addr>,
    /// The network's index in the dataplane configuration, stable while it exists.
    pub dataplane_id: NetworkId,
    /// The v6 subnet in use on a dual-stack network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<Ipv6Cidr>,
    /// The v6 gateway in use on a dual-stack network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    /// A macvlan network's parent interface port in the dataplane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_port: Option<PortId>,
    /// The network's own uplink port in the dataplane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink_port: Option<PortId>,
}

impl Network {
    /// The dataplane ports the network itself owns (a macvlan parent, its own uplink), which
    /// are opened when it is created and closed when it is removed.
    pub fn own_ports(&self) -> impl Iterator<Item = PortId> {
        self.parent_port.into_iter().chain(self.uplink_port)
    }
}

impl NetworkOptions {
    /// A macvlan parent: the interface and, for `IF.VLAN`, the 802.1Q VLAN sluice tags with.
    pub fn parent_and_vlan(&self) -> Option<(&str, Option<u16>)> {
        let p = self.parent.as_deref()?;
        Some(match p.rsplit_once('.') {
            Some((base, v)) if !base.is_empty() => match v.parse::<u16>() {
                Ok(id) => (base, Some(id)),
                Err(_) => (p, None),
            },
            _ => (p, None),
        })
    }
}

/// Which network namespace an endpoint's interface goes into.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sandbox {
    /// A namespace file (`/run/netns/NAME`, `/proc/PID/ns/net`).
    Netns(PathBuf),
    /// The network namespace of a process.
    Pid(u32),
}

/// Who puts the endpoint's interface into its sandbox.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// sluice moves it there and configures it (address, MAC, MTU, routes): `sluice network
    /// connect` and CNI.
    #[default]
    Sandbox,
    /// sluice leaves the veth peer in its own namespace, named `sandbox_ifname`, for the
    /// container engine to move and configure (libnetwork's Join hands over `SrcName`).
    HandOff,
}

/// What `sluice network connect` asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// Network name or id (or a unique id prefix); the API takes it from the path.
    #[serde(default)]
    pub network: String,
    /// Where the interface goes.
    pub sandbox: Sandbox,
    /// The endpoint's name, unique within the network (docker's container name).
    pub name: String,
    /// A static address (`--ip`); none: the IPAM picks one.
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    /// A static v6 address (`--ip6`) on a dual-stack network; none: the IPAM picks one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    /// A static MAC; none: derived from the address (02:42:...).
    #[serde(default)]
    pub mac: Option<MacAddr>,
    /// Extra DNS names on this network.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Legacy links (`name:alias`).
    #[serde(default)]
    pub links: Vec<String>,
    /// Published ports.
    #[serde(default)]
    pub publish: Vec<PublishSpec>,
    /// `--hostname`, `--dns`, `--dns-search`, `--dns-option`, `--add-host`: what goes into the
    /// endpoint's resolv.conf and hosts files.
    #[serde(default)]
    pub names: NameOptions,
    /// The interface name inside the sandbox (CNI's `CNI_IFNAME`); none: the first free of
    /// `eth0`, `eth1`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// Who moves the interface into the sandbox.
    #[serde(default)]
    pub placement: Placement,
}

/// A connected endpoint: the spec plus what the daemon allocated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// 64 hex characters, like docker's endpoint ids.
    pub id: String,
    /// What was asked for.
    pub spec: EndpointSpec,
    /// The id of the network it is on (the spec may name it by name).
    pub network_id: String,
    /// The allocated or static address; none on an IPv6-only network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    /// The v6 address on a dual-stack network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    /// The derived or static MAC.
    pub mac: MacAddr,
    /// The host side of the veth pair (what the dataplane attaches to).
    pub host_ifname: String,
    /// The interface name inside the sandbox (`eth0`, `eth1`, ...).
    pub sandbox_ifname: String,
    /// The endpoint's port id in the dataplane configuration, stable while it exists.
    pub port: PortId,
}

impl Endpoint {
    /// The address hosts files name the endpoint by: its v4 address, or its v6 one on an
    /// IPv6-only network (the state gives every endpoint one of them; unspecified otherwise).
    pub fn host_ip(&self) -> IpAddr {
        match (self.ip, self.ip6) {
            (Some(ip), _) => IpAddr::V4(ip),
            (None, Some(ip6)) => IpAddr::V6(ip6),
            (None, None) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }
    }
}

/// One `IPAM.Config` entry of `docker network inspect`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamConfigView {
    /// The subnet.
    pub subnet: String,
    /// The gateway: the one given at create time, or the one picked with the subnet; none
    /// (left out, as docker 20.10 does) when the user gave a subnet without a gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// The dynamic range, if one was given.
    #[serde(rename = "IPRange", default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<String>,
    /// Reserved addresses by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub auxiliary_addresses: BTreeMap<String, String>,
}

/// `IPAM` of `docker network inspect`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamView {
    /// Always `default`.
    pub driver: String,
    /// IPAM driver options: none in sluice, shown as docker's `{}`.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// The network's subnets (none for `host` and `none`).
    pub config: Vec<IpamConfigView>,
}

/// One entry of `Containers` in `docker network inspect`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerView {
    /// The endpoint's name.
    pub name: String,
    /// The endpoint's id.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// The MAC.
    pub mac_address: String,
    /// Address with prefix, e.g. `172.18.0.2/16`.
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
    /// Address with prefix on a dual-stack network, else empty (as docker shows it).
    #[serde(rename = "IPv6Address")]
    pub ipv6_address: String,
    /// The resolv.conf sluiced wrote for the endpoint (for the runtime to bind-mount).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolv_conf_path: Option<String>,
    /// The hosts file sluiced wrote for the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts_path: Option<String>,
    /// On an overlay network of a cluster: the VTEP address of the host the endpoint lives
    /// on (one of `Peers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// One entry of `Peers` in `docker network inspect` of an overlay network: a host taking
/// part in the network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PeerView {
    /// The host's name.
    pub name: String,
    /// Its VTEP address.
    #[serde(rename = "IP")]
    pub ip: String,
}

/// The fields of `docker network inspect` that only swarm, overlay and config-only networks
/// set: present so that templates and scripts written for docker find them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SwarmFields {
    /// Always true: any sandbox may connect (docker's `--attachable`).
    pub attachable: bool,
    /// Always false: sluice has no routing mesh.
    pub ingress: bool,
    /// Always `{"Network": ""}`: no config-only network.
    pub config_from: ConfigFrom,
    /// Always false.
    pub config_only: bool,
    /// The hosts of an overlay network of a cluster (absent on other networks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<PeerView>>,
}

impl Default for SwarmFields {
    fn default() -> Self {
        SwarmFields {
            attachable: true,
            ingress: false,
            config_from: ConfigFrom::default(),
            config_only: false,
            peers: None,
        }
    }
}

/// `ConfigFrom` of `docker network inspect`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConfigFrom {
    /// The config-only network this one takes its configuration from (none: empty).
    pub network: String,
}

/// `docker network inspect`'s shape, so that scripts written for docker read sluice's output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkInspect {
    /// The network's name.
    pub name: String,
    /// The network's id.
    pub id: String,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Always `local`.
    pub scope: String,
    /// The driver's name.
    pub driver: String,
    /// The network has a v4 subnet (false: IPv6 only).
    #[serde(rename = "EnableIPv4", default = "yes")]
    pub enable_ipv4: bool,
    /// Dual stack: the network has a v6 subnet.
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    /// Addressing.
    #[serde(rename = "IPAM")]
    pub ipam: IpamView,
    /// Not routed to the uplink.
    pub internal: bool,
    /// docker's swarm-era fields, always the same for sluice's networks.
    #[serde(flatten)]
    pub swarm: SwarmFields,
    /// Endpoints by endpoint id.
    pub containers: BTreeMap<String, ContainerView>,
    /// Driver options.
    pub options: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

impl NetworkInspect {
    /// Whether the network's endpoints take their default route on the link, with no gateway
    /// (ipvlan's `l3` and `l3s`): docker shows them no `Gateway`, and its plugin join gives
    /// them a connected default route instead.
    pub fn routes_on_link(&self) -> bool {
        self.driver == Driver::Ipvlan.as_str()
            && self
                .options
                .get("ipvlan_mode")
                .is_some_and(|m| m != IpvlanMode::L2.as_str())
    }
}

/// The `Gateway` of an `IPAM.Config` entry as docker 20.10 shows it: the user's own entry
/// (a subnet was `given`) shows only the gateway the user gave; a subnet the daemon picked
/// shows the gateway picked with it (`in_use`).
fn shown_gateway<A: std::fmt::Display>(given: bool, asked: Option<A>, in_use: A) -> Option<String> {
    match asked {
        Some(g) => Some(g.to_string()),
        None => (!given).then(|| in_use.to_string()),
    }
}

/// Aux addresses as inspect shows them (name to address text), either family.
fn aux_view<A: std::fmt::Display>(aux: &BTreeMap<String, A>) -> BTreeMap<String, String> {
    aux.iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect()
}

impl Network {
    /// The `docker network inspect` view of the network with `endpoints` attached (the
    /// daemon's driver adds the options only it knows, see `driver::inspect`).
    pub fn inspect<'a>(&self, endpoints: impl IntoIterator<Item = &'a Endpoint>) -> NetworkInspect {
        let config: Vec<IpamConfigView> = match (self.subnet, self.gateway) {
            (Some(subnet), Some(gateway)) => vec![IpamConfigView {
                subnet: subnet.to_string(),
                gateway: shown_gateway(self.spec.subnet.is_some(), self.spec.gateway, gateway),
                ip_range: self.spec.ip_range.map(|r| r.to_string()),
                auxiliary_addresses: aux_view(&self.spec.aux_addresses),
            }],
            _ => Vec::new(),
        }
        .into_iter()
        .chain(
            self.subnet6
                .zip(self.gateway6)
                .map(|(subnet, gateway)| IpamConfigView {
                    subnet: subnet.to_string(),
                    gateway: shown_gateway(
                        self.spec.subnet6.is_some(),
                        self.spec.gateway6,
                        gateway,
                    ),
                    ip_range: self.spec.ip_range6.map(|r| r.to_string()),
                    auxiliary_addresses: aux_view(&self.spec.aux_addresses6),
                }),
        )
        .collect();
        let prefix = self.subnet.map_or(32, |s| s.prefix);
        let prefix6 = self.subnet6.map_or(128, |s| s.prefix);
        NetworkInspect {
            name: self.spec.name.clone(),
            id: self.id.clone(),
            created: self.created.clone(),
            scope: "local".into(),
            driver: self.spec.driver.as_str().into(),
            enable_ipv4: self.spec.enable_ipv4,
            enable_ipv6: self.subnet6.is_some(),
            ipam: IpamView {
                driver: "default".into(),
                options: BTreeMap::new(),
                config,
            },
            internal: self.spec.internal,
            swarm: SwarmFields::default(),
            containers: endpoints
                .into_iter()
                .map(|e| {
                    (
                        e.id.clone(),
                        ContainerView {
                            name: e.spec.name.clone(),
                            endpoint_id: e.id.clone(),
                            mac_address: e.mac.to_string(),
                            ipv4_address: e
                                .ip
                                .map(|ip| format!("{ip}/{prefix}"))
                                .unwrap_or_default(),
                            ipv6_address: e
                                .ip6
                                .map(|ip| format!("{ip}/{prefix6}"))
                                .unwrap_or_default(),
                            resolv_conf_path: None,
                            hosts_path: None,
                            host: None,
                        },
                    )
                })
                .collect(),
            options: self.spec.options.to_map(),
            labels: self.spec.labels.clone(),
        }
    }
}

/// A new object's identity: a docker-style id and its creation time. Operations take it as an
/// argument so that they stay deterministic under test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// 64 hex characters.
    pub id: String,
    /// RFC 3339 time.
    pub created: String,
}

impl Stamp {
    /// A random id and the current time.
    pub fn fresh() -> Stamp {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Stamp {
            id: random_id(),
            created: rfc3339(now.as_secs(), now.subsec_nanos()),
        }
    }
}

/// 64 random hex characters (std's randomly keyed SipHash over a counter and the time; ids
/// need uniqueness, not secrecy).
pub fn random_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let mut out = String::with_capacity(64);
    for i in 0..4u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(n);
        h.write_u64(i);
        h.write_u128(t);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// `2006-01-02T15:04:05.999999999Z`, the form docker prints.
pub fn rfc3339(unix_secs: u64, nanos: u32) -> String {
    let (y, mo, d, h, mi, s) = crate::clock::utc_parts(unix_secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{nanos:09}Z")
}

impl fmt::Display for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sandbox::Netns(p) => write!(f, "netns {}", p.display()),
            Sandbox::Pid(p) => write!(f, "pid {p}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_accept_short_and_docker_keys() {
        let mut o = NetworkOptions::default();
        o.set("mtu=1400").unwrap();
        o.set("com.docker.network.bridge.enable_icc=false").unwrap();
        o.set("vlan=10").unwrap();
        o.set("parent=eth1").unwrap();
        assert_eq!(o.mtu, Some(1400));
        assert_eq!(o.icc, Some(false));
        assert_eq!(o.vlan, Some(10));
        assert_eq!(o.parent.as_deref(), Some("eth1"));
        assert_eq!(o.to_map()[OPT_MTU], "1400");
        assert_eq!(o.to_map()[OPT_ICC], "false");
        o.set("vni=4097").unwrap();
        assert_eq!((o.vni, o.to_map()["vni"].as_str()), (Some(4097), "4097"));
    }

    #[test]
    fn flow_quota_option_is_a_positive_count() {
        let mut o = NetworkOptions::default();
        o.set("max_flows_per_endpoint=4096").unwrap();
        assert_eq!(o.max_flows_per_endpoint, Some(4096));
        assert_eq!(o.to_map()["max_flows_per_endpoint"], "4096");
        for bad in ["max_flows_per_endpoint=0", "max_flows_per_endpoint=x"] {
            assert!(
                matches!(o.set(bad), Err(OptionError::BadValue { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn option_errors_name_the_problem() {
        let mut o = NetworkOptions::default();
        assert_eq!(o.set("mtu"), Err(OptionError::NotKeyValue("mtu".into())));
        assert_eq!(
            o.set("foo=1"),
            Err(OptionError::UnknownOption("foo".into()))
        );
        assert!(matches!(
            o.set("vlan=4095"),
            Err(OptionError::BadValue { key: "vlan", .. })
        ));
        assert!(matches!(
            o.set("mtu=20"),
            Err(OptionError::BadValue { key: "mtu", .. })
        ));
        for bad in ["vni=0", "vni=16777216", "vni=x"] {
            assert!(matches!(
                o.set(bad),
                Err(OptionError::BadValue { key: "vni", .. })
            ));
        }
        assert!(matches!(
            o.set("icc=yes"),
            Err(OptionError::BadValue { key: "icc", .. })
        ));
        assert!(matches!(
            o.set("parent=a-very-long-interface"),
            Err(OptionError::BadValue { key: "parent", .. })
        ));
        assert_eq!(
            o,
            NetworkOptions::default(),
            "failed options change nothing"
        );
        assert_eq!(
            o.set("vlan=0").unwrap_err().to_string(),
            "option vlan=\"0\" is invalid: a VLAN id from 1 to 4094"
        );
    }

    #[test]
    fn drivers_parse() {
        assert_eq!("bridge".parse::<Driver>(), Ok(Driver::Bridge));
        assert_eq!("null".parse::<Driver>(), Ok(Driver::None));
        assert_eq!("overlay".parse::<Driver>(), Ok(Driver::Overlay));
        assert_eq!("ipvlan".parse::<Driver>(), Ok(Driver::Ipvlan));
        assert!("vxlan".parse::<Driver>().is_err());
    }

    #[test]
    fn ipvlan_options_take_dockers_words() {
        let mut o = NetworkOptions::default();
        o.set("ipvlan_mode=l3s").unwrap();
        o.set("ipvlan_flag=private").unwrap();
        assert_eq!(o.ipvlan_mode, Some(IpvlanMode::L3s));
        assert!(o.ipvlan_mode.unwrap().routed() && !IpvlanMode::L2.routed());
        assert_eq!(o.to_map()["ipvlan_mode"], "l3s");
        assert_eq!(o.to_map()["ipvlan_flag"], "private");
        assert_eq!(
            o.set("ipvlan_mode=l4").unwrap_err().to_string(),
            "option ipvlan_mode=\"l4\" is invalid: l2, l3 or l3s; l2 is the ipvlan driver's default"
        );
        assert!(matches!(
            o.set("ipvlan_flag=shared"),
            Err(OptionError::BadValue {
                key: "ipvlan_flag",
                ..
            })
        ));
        assert_eq!(o.ipvlan_flag, Some(IpvlanFlag::Private), "unchanged");
    }

    #[test]
    fn ids_are_64_hex_and_distinct() {
        let a = random_id();
        let b = random_id();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn rfc3339_formats_like_docker() {
        assert_eq!(rfc3339(0, 5), "1970-01-01T00:00:00.000000005Z");
        assert_eq!(rfc3339(1_700_000_000, 0), "2023-11-14T22:13:20.000000000Z");
    }

    #[test]
    fn v4_only_records_read_and_write_as_before() {
        let old = r#"{"network":"n","name":"a","sandbox":{"pid":1},"ip":"10.1.0.5"}"#;
        let spec: EndpointSpec = serde_json::from_str(old).unwrap();
        assert_eq!(spec.ip6, None);
        assert!(!serde_json::to_string(&spec).unwrap().contains("ip6"));
        let n: NetworkSpec = serde_json::from_str(r#"{"name":"a"}"#).unwrap();
        assert!(!n.enable_ipv6);
        assert!(n.enable_ipv4, "networks stored before --ipv4 have IPv4");
        assert!(!serde_json::to_string(&n).unwrap().contains("ipv6"));
        assert!(!serde_json::to_string(&n).unwrap().contains("ipv4"));
    }

    #[test]
    fn endpoint_records_keep_their_v4_address_and_v6_only_ones_have_none() {
        let old = r#"{"id":"e","spec":{"network":"n","name":"a","sandbox":{"pid":1}},
            "network_id":"n","ip":"10.1.0.5","mac":"02:42:0a:01:00:05","host_ifname":"h",
            "sandbox_ifname":"eth0","port":1}"#;
        let e: Endpoint = serde_json::from_str(old).unwrap();
        assert_eq!(e.ip, Some(Ipv4Addr::new(10, 1, 0, 5)));
        assert!(serde_json::to_string(&e)
            .unwrap()
            .contains(r#""ip":"10.1.0.5""#));
        let v6 = Endpoint {
            ip: None,
            ip6: Some("fd00:9::2".parse().unwrap()),
            ..e
        };
        let text = serde_json::to_string(&v6).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value.get("ip"), None, "{text}");
        assert_eq!(serde_json::from_str::<Endpoint>(&text).unwrap(), v6);
        let off: NetworkSpec = serde_json::from_str(r#"{"name":"a","enable_ipv4":false}"#).unwrap();
        assert!(!off.enable_ipv4);
        assert!(serde_json::to_string(&off)
            .unwrap()
            .contains(r#""enable_ipv4":false"#));
    }

    #[test]
    fn inspect_of_a_v6_only_network_has_only_the_v6_config() {
        let n = Network {
            id: "ab".repeat(32),
            created: rfc3339(0, 0),
            spec: NetworkSpec {
                name: "six".into(),
                enable_ipv4: false,
                enable_ipv6: true,
                ..NetworkSpec::default()
            },
            subnet: None,
            gateway: None,
            subnet6: Some("fd00:9::/64".parse().unwrap()),
            gateway6: Some("fd00:9::1".parse().unwrap()),
            dataplane_id: NetworkId(1),
            parent_port: None,
            uplink_port: None,
        };
        let v = serde_json::to_value(n.inspect([])).unwrap();
        assert_eq!(v["EnableIPv4"], false);
        assert_eq!(v["EnableIPv6"], true);
        let cfg = v["IPAM"]["Config"].as_array().unwrap();
        assert_eq!(cfg.len(), 1);
        assert_eq!(cfg[0]["Subnet"], "fd00:9::/64");
        assert_eq!(cfg[0]["Gateway"], "fd00:9::1");
    }

    #[test]
    fn inspect_has_dockers_shape() {
        let n = Network {
            id: "ab".repeat(32),
            created: rfc3339(0, 0),
            spec: NetworkSpec {
                name: "a".into(),
                ip_range: Some("10.1.0.128/25".parse().unwrap()),
                aux_addresses: [("r".to_string(), Ipv4Addr::new(10, 1, 0, 9))].into(),
                ..NetworkSpec::default()
            },
            subnet: Some("10.1.0.0/24".parse().unwrap()),
            gateway: Some(Ipv4Addr::new(10, 1, 0, 1)),
            subnet6: Some("fd00:1::/64".parse().unwrap()),
            gateway6: Some("fd00:1::1".parse().unwrap()),
            dataplane_id: NetworkId(1),
            parent_port: None,
            uplink_port: None,
        };
        let e = Endpoint {
            id: "cd".repeat(32),
            spec: EndpointSpec {
                network: "a".into(),
                sandbox: Sandbox::Pid(1),
                name: "web".into(),
                ip: None,
                ip6: None,
                mac: None,
                aliases: vec![],
                links: vec![],
                publish: vec![],
                names: NameOptions::default(),
                ifname: None,
                placement: Placement::Sandbox,
            },
            network_id: n.id.clone(),
            ip: Some(Ipv4Addr::new(10, 1, 0, 128)),
            ip6: Some("fd00:1::2".parse().unwrap()),
            mac: MacAddr::from_ipv4(Ipv4Addr::new(10, 1, 0, 128)),
            host_ifname: "slcdcdcdcdcd".into(),
            sandbox_ifname: "eth0".into(),
            port: PortId(1),
        };
        let v = serde_json::to_value(n.inspect([&e])).unwrap();
        assert_eq!(v["Name"], "a");
        assert_eq!(v["Driver"], "bridge");
        assert_eq!(v["IPAM"]["Config"][0]["Subnet"], "10.1.0.0/24");
        assert_eq!(v["IPAM"]["Config"][0]["Gateway"], "10.1.0.1");
        assert_eq!(v["IPAM"]["Config"][0]["IPRange"], "10.1.0.128/25");
        assert_eq!(
            v["IPAM"]["Config"][0]["AuxiliaryAddresses"]["r"],
            "10.1.0.9"
        );
        let c = &v["Containers"][&e.id];
        assert_eq!(c["IPv4Address"], "10.1.0.128/24");
        assert_eq!(c["IPv6Address"], "fd00:1::2/64");
        assert_eq!(v["EnableIPv6"], true);
        assert_eq!(v["EnableIPv4"], true);
        assert_eq!(v["IPAM"]["Config"][1]["Subnet"], "fd00:1::/64");
        assert_eq!(v["IPAM"]["Config"][1]["Gateway"], "fd00:1::1");
        let mut given = n.clone();
        given.spec.subnet = n.subnet;
        given.spec.subnet6 = n.subnet6;
        given.spec.gateway6 = n.gateway6;
        let cfg = serde_json::to_value(given.inspect([])).unwrap()["IPAM"]["Config"].clone();
        assert_eq!(
            cfg[0].get("Gateway"),
            None,
            "docker 20.10 leaves out a gateway the user did not give with a subnet"
        );
        assert_eq!(cfg[1]["Gateway"], "fd00:1::1", "and shows one given");
        assert_eq!(c["MacAddress"], "02:42:0a:01:00:80");
        assert_eq!(v["Internal"], false);
        assert!(v["Options"].as_object().unwrap().is_empty());
        assert_eq!(v["Attachable"], true);
        assert_eq!(v["Ingress"], false);
        assert_eq!(v["ConfigFrom"], serde_json::json!({"Network": ""}));
        assert_eq!(v["ConfigOnly"], false);
        // docker 20.10's key order.
        let text = serde_json::to_string(&n.inspect([&e])).unwrap();
        let keys = [
            "Name",
            "Id",
            "Created",
            "Scope",
            "Driver",
            "EnableIPv4",
            "EnableIPv6",
            "IPAM",
            "Internal",
            "Attachable",
            "Ingress",
            "ConfigFrom",
            "ConfigOnly",
            "Containers",
            "Options",
            "Labels",
        ];
        // `IPAM` has `Options` of its own, before the network's.
        let at: Vec<usize> = keys
            .iter()
            .map(|k| match *k {
                "Options" => text.rfind("\"Options\":").unwrap(),
                _ => text.find(&format!("\"{k}\":")).unwrap(),
            })
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(
            text.contains(r#""IPAM":{"Driver":"default","Options":{},"Config":["#),
            "{text}"
        );
    }
}
