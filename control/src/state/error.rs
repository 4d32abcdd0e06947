//! Why the state refuses a request: one variant per rule, worded like docker's messages.

use sluice_dataplane::config::{Ipv4Cidr, Ipv6Cidr, PortRange};
use sluice_dataplane::counters::MAX_PORTS;
use sluice_dataplane::wire::MacAddr;

use crate::ipam::IpamError;
use crate::ipam6::Ipam6Error;
use crate::publish::PublishSpec;

/// Why a request is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// A name docker would not accept.
    #[error("invalid name {0:?}: use letters, digits and _ . - (starting with a letter or digit)")]
    InvalidName(String),
    /// A network of that name exists.
    #[error("network with name {0} already exists")]
    NameTaken(String),
    /// The id of a new object (or the interface name derived from it) is taken: retry with a
    /// fresh id.
    #[error("id {0} (or its interface name) is already in use; retry")]
    IdTaken(String),
    /// No network has that name, id or id prefix.
    #[error("network {0} not found")]
    NoSuchNetwork(String),
    /// An id prefix that matches several networks.
    #[error("network {0} is ambiguous: give more of the id or the name")]
    AmbiguousNetwork(String),
    /// Only the predefined `host` and `none` networks use those drivers.
    #[error("only one instance of {0:?} network is allowed")]
    OnlyOneInstance(&'static str),
    /// A predefined network cannot be removed.
    #[error("{0} is a pre-defined network and cannot be removed")]
    Predefined(String),
    /// A network with endpoints cannot be removed.
    #[error("network {network} has {count} active endpoint(s); disconnect them first")]
    HasEndpoints {
        /// The network.
        network: String,
        /// How many endpoints it has.
        count: usize,
    },
    /// The subnet overlaps another network's.
    #[error("subnet {subnet} overlaps network {other:?} ({other_subnet})")]
    Overlap {
        /// The requested subnet.
        subnet: Ipv4Cidr,
        /// The other network's name.
        other: String,
        /// The other network's subnet.
        other_subnet: Ipv4Cidr,
    },
    /// A subnet without room for a gateway and an endpoint.
    #[error("subnet {0} is too small (use a prefix of /30 or shorter)")]
    SubnetTooSmall(Ipv4Cidr),
    /// Every default pool overlaps an existing network.
    #[error("all predefined address pools have been fully subnetted; give --subnet")]
    PoolsExhausted,
    /// `--gateway`, `--ip-range` or `--aux-address` without `--subnet`.
    #[error("{0} needs --subnet")]
    NeedsSubnet(&'static str),
    /// A `host` or `none` network given addressing options.
    #[error("the {0} driver takes no subnet, gateway, ip range or aux addresses")]
    NoIpam(&'static str),
    /// An address or range outside the subnet, or on its network/broadcast address.
    #[error("{what} {value} is not a usable address of subnet {subnet}")]
    NotInSubnet {
        /// What it is (`gateway`, `ip range`, `auxiliary address "x"`).
        what: String,
        /// The address or range.
        value: String,
        /// The subnet.
        subnet: Ipv4Cidr,
    },
    /// Endpoints cannot be connected to `host` or `none` (docker's semantics: a container on
    /// `none` has only loopback, one on `host` shares the host's stack; neither gets an
    /// interface, and published ports are meaningless on `host`).
    #[error("cannot connect an endpoint to the {0} network: {hint}", hint = connect_hint(.0))]
    CannotConnect(String),
    /// `--uplink` on a network that is not routed (macvlan, internal).
    #[error("--uplink is only for routed bridge networks (not macvlan or --internal)")]
    UplinkNeedsRouting,
    /// `--uplink-gateway6` without sluice's own v6 address on that uplink.
    #[error("--uplink-gateway6 needs --uplink-ip6 (sluice's v6 address on the uplink)")]
    UplinkGateway6NeedsIp6,
    /// An uplink address inside a network's subnet.
    #[error("uplink address {ip} overlaps network {other:?}")]
    UplinkOverlaps {
        /// The uplink address.
        ip: Ipv4Cidr,
        /// The network.
        other: String,
    },
    /// A macvlan network without `--opt parent=IF`.
    #[error("the macvlan driver needs --opt parent=IF (or parent=IF.VLAN)")]
    MacvlanNeedsParent,
    /// `parent` on a driver that has none.
    #[error("--opt parent is only for the macvlan and ipvlan drivers")]
    ParentNeedsMacvlan,
    /// `ipvlan_mode` or `ipvlan_flag` on another driver.
    #[error("--opt ipvlan_mode and ipvlan_flag are only for the ipvlan driver")]
    IpvlanOptionNeedsIpvlan,
    /// `parent=lo` (docker's words).
    #[error("loopback interface is not a valid {0} parent link")]
    LoopbackParent(&'static str),
    /// `ipvlan_flag=vepa`, which sluice cannot do yet.
    #[error("ipvlan_flag=vepa is not supported: sluice cannot send endpoint to endpoint traffic out through the parent and back yet (use bridge or private)")]
    IpvlanVepa,
    /// `vni` on a driver that has none.
    #[error("--opt vni is only for the overlay driver")]
    VniNeedsOverlay,
    /// An overlay network's VNI is another's.
    #[error("VNI {vni} is in use by network {other}")]
    VniTaken {
        /// The VNI asked for.
        vni: u32,
        /// The network that has it.
        other: String,
    },
    /// Every VNI from 4096 up is in use.
    #[error("no free VNI left")]
    VnisExhausted,
    /// An option overlay networks do not take (they reach other hosts through the daemon's
    /// uplink).
    #[error("overlay networks do not take {0}")]
    NotForOverlay(&'static str),
    /// `parent=IF.VLAN` with a VLAN out of range or unlike `--opt vlan`.
    #[error("--opt parent={0}: the VLAN must be 1-4094 and match --opt vlan if both are given")]
    BadParentVlan(String),
    /// Two networks (macvlan or ipvlan) on one parent.
    #[error("parent interface {parent} is already used by network {other:?}")]
    ParentInUse {
        /// The interface.
        parent: String,
        /// The network using it.
        other: String,
    },
    /// Published ports on a macvlan or ipvlan network.
    #[error("network {0} is a macvlan or ipvlan network: its endpoints are reached directly, ports are not published")]
    PublishOnMacvlan(String),
    /// An interface name Linux would refuse.
    #[error("invalid interface name {0:?}: 1-15 letters, digits, _ . -")]
    InvalidIfname(String),
    /// The sandbox already has an interface of that name from sluice.
    #[error("{sandbox} already has an interface {ifname} from sluice")]
    IfnameTaken {
        /// The name.
        ifname: String,
        /// The sandbox.
        sandbox: String,
    },
    /// An endpoint of that name is on the network.
    #[error("endpoint with name {name} already exists in network {network}")]
    EndpointNameTaken {
        /// The endpoint name.
        name: String,
        /// The network.
        network: String,
    },
    /// The sandbox is already connected to the network.
    #[error("{sandbox} is already connected to network {network}")]
    AlreadyConnected {
        /// The sandbox.
        sandbox: String,
        /// The network.
        network: String,
    },
    /// No endpoint of that name or id on the network.
    #[error("endpoint {endpoint} is not connected to network {network}")]
    NoSuchEndpoint {
        /// The endpoint name or id.
        endpoint: String,
        /// The network.
        network: String,
    },
    /// An address problem on a network.
    #[error("network {network}: {err}")]
    Ipam {
        /// The network.
        network: String,
        /// What is wrong.
        #[source]
        err: IpamError,
    },
    /// docker allows `--ip` only where the operator chose the subnet.
    #[error("user specified IP address is supported only when connecting to networks with user configured subnets")]
    StaticIpNeedsSubnet,
    /// docker allows aliases only on user-defined networks.
    #[error("network-scoped alias is supported only for containers in user defined networks")]
    AliasOnDefaultBridge,
    /// A MAC that cannot be an endpoint's.
    #[error("MAC {0} cannot be an endpoint's (it must be unicast and not all zero)")]
    BadMac(MacAddr),
    /// A MAC another endpoint of the network has.
    #[error("MAC {mac} is already used by endpoint {other} in network {network}")]
    MacInUse {
        /// The MAC.
        mac: MacAddr,
        /// The endpoint that has it.
        other: String,
        /// The network.
        network: String,
    },
    /// Ports cannot be published from an internal network.
    #[error("network {0} is internal: ports cannot be published from it")]
    PublishOnInternal(String),
    /// A published port clashes with one already published.
    #[error("port {port} is already published by endpoint {other} ({other_port}); pick another host port")]
    PortClash {
        /// The requested mapping.
        port: PublishSpec,
        /// The endpoint that publishes the clashing one (or the same endpoint).
        other: String,
        /// The clashing mapping.
        other_port: PublishSpec,
    },
    /// Every host port of the daemon's range is published already.
    #[error("no free host port for {port}: the daemon's host-port range {range} is used up (free one, or start sluiced with a wider --host-port-range)")]
    HostPortsExhausted {
        /// The mapping that needs a host port.
        port: PublishSpec,
        /// The daemon's host-port range.
        range: PortRange,
    },
    /// The v6 subnet overlaps another network's.
    #[error("subnet {subnet} overlaps network {other:?} ({other_subnet})")]
    Overlap6 {
        /// The requested subnet.
        subnet: Ipv6Cidr,
        /// The other network's name.
        other: String,
        /// The other network's v6 subnet.
        other_subnet: Ipv6Cidr,
    },
    /// A v6 gateway or range outside the v6 subnet, or a prefix without room for endpoints.
    #[error("{what} {value} is not usable in subnet {subnet}")]
    NotInSubnet6 {
        /// What it is (`gateway`, `ip range`, `subnet`).
        what: &'static str,
        /// The address or range.
        value: String,
        /// The subnet.
        subnet: Ipv6Cidr,
    },
    /// v6 addressing (`--subnet`/`--gateway`/`--ip-range` with a v6 value, `--ip6`) where IPv6
    /// is not enabled.
    #[error("{0} needs a network created with --ipv6")]
    NeedsIpv6(&'static str),
    /// IPv4 addressing (a v4 `--subnet`, `--gateway`, `--ip-range`, `--aux-address`, `--ip`)
    /// on a network created with `--ipv4=false`.
    #[error("{0} needs IPv4, and the network is IPv6-only (--ipv4=false)")]
    Ipv4Disabled(&'static str),
    /// `--ipv4=false` with a driver other than bridge.
    #[error("--ipv4=false is supported only by the bridge driver, not {0}")]
    V6OnlyNeedsBridge(String),
    /// A v6 address problem on a network.
    #[error("network {network}: {err}")]
    Ipam6 {
        /// The network.
        network: String,
        /// What is wrong.
        #[source]
        err: Ipam6Error,
    },
    /// The dataplane has no port id left.
    #[error("too many endpoints (at most {} ports)", MAX_PORTS - 1)]
    TooManyEndpoints,
    /// The dataplane has no network id left.
    #[error("too many networks (at most {})", u16::MAX)]
    TooManyNetworks,
    /// A value breaks a rule of `crate::validate` (a name, a length, a subnet).
    #[error(transparent)]
    Invalid(#[from] crate::validate::Invalid),
}

fn connect_hint(network: &str) -> &'static str {
    match network {
        "host" => "a container on it uses the host's own network stack, so there is no interface to create (and -p is not needed: its ports are the host's)",
        "none" => "a container on it has only loopback, so there is no interface to create",
        _ => "the network has no address pool",
    }
}
