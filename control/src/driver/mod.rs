//! Network drivers, after netavark's driver trait: one small trait, one file per driver, and a
//! factory from the stored driver name. `model::Driver` stays the name (what the API and the
//! database hold); what a driver does lives behind [`NetworkDriver`]. A new driver (overlay,
//! ipvlan) is one file here, one `Driver` name and one line in [`of`].

mod bridge;
mod host;
mod ipvlan;
mod macvlan;
mod none;
mod overlay;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use sluice_dataplane::config::{Config, Ipv4Cidr, NetworkConfig};
use sluice_dataplane::frame::PortId;

use crate::model::{
    Driver, Endpoint, EndpointSpec, Network, NetworkInspect, NetworkOptions, NetworkSpec,
};
use crate::state::{State, StateError};

/// What a driver decided for a new network: its addressing and the dataplane ports it owns
/// (opened when it is created, closed when it is removed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Created {
    /// The subnet in use; none on an IPv6-only network.
    pub subnet: Option<Ipv4Cidr>,
    /// The gateway in use; none on an IPv6-only network.
    pub gateway: Option<Ipv4Addr>,
    /// The parent interface's port (macvlan).
    pub parent_port: Option<PortId>,
    /// The network's own uplink port (bridge with `--uplink`).
    pub uplink_port: Option<PortId>,
    /// An overlay network's VXLAN id (given or allocated), kept in its options.
    pub vni: Option<u32>,
}

/// What the control plane asks of a network driver.
pub trait NetworkDriver: Sync {
    /// Whether the driver's networks have a subnet, an address pool and dataplane state, and
    /// take endpoints. Without, only the predefined network of the driver exists.
    fn has_ipam(&self) -> bool {
        true
    }

    /// Validates a new network's options against `state` (create time: nothing is made yet)
    /// and decides its addressing and own ports.
    fn create(&self, state: &State, spec: &NetworkSpec) -> Result<Created, StateError>;

    /// Checks what the driver rules on in an endpoint joining `net`, after the common rules
    /// passed. Every endpoint accepted gets a veth pair into its sandbox, its host end opened
    /// by the dataplane (the one attachment all drivers use today).
    fn connect(&self, _net: &Network, _spec: &EndpointSpec) -> Result<(), StateError> {
        Ok(())
    }

    /// Whether `net`'s endpoints take their default route on the link itself, with no gateway
    /// (ipvlan's routed modes).
    fn default_route_on_link(&self, _net: &Network) -> bool {
        false
    }

    /// The MTU of `net`'s endpoints (their sandbox interfaces): `-o mtu`, else 1500.
    fn mtu(&self, net: &Network) -> u16 {
        net.spec.options.mtu.unwrap_or(1500)
    }

    /// Adds the options only the driver knows to `net`'s inspect view.
    fn inspect_options(&self, _net: &Network, _options: &mut BTreeMap<String, String>) {}

    /// Adds the driver's part of `net`'s dataplane configuration (flags, the ports it owns)
    /// to `nc` and `cfg`, before the network's endpoints are added. Drivers without
    /// addressing have no dataplane state.
    fn compile(&self, _net: &Network, _nc: &mut NetworkConfig, _cfg: &mut Config) {}
}

static BRIDGE: bridge::Bridge = bridge::Bridge;
static MACVLAN: macvlan::Macvlan = macvlan::Macvlan;
static HOST: host::Host = host::Host;
static NONE: none::Null = none::Null;
static OVERLAY: overlay::Overlay = overlay::Overlay;
static IPVLAN: ipvlan::Ipvlan = ipvlan::Ipvlan;

/// The driver behind a stored driver name.
pub fn of(d: Driver) -> &'static dyn NetworkDriver {
    match d {
        Driver::Bridge => &BRIDGE,
        Driver::Macvlan => &MACVLAN,
        Driver::Host => &HOST,
        Driver::None => &NONE,
        Driver::Overlay => &OVERLAY,
        Driver::Ipvlan => &IPVLAN,
    }
}

/// The `docker network inspect` view of `net` with `endpoints` attached, with its driver's
/// options.
pub fn inspect<'a>(
    net: &Network,
    endpoints: impl IntoIterator<Item = &'a Endpoint>,
) -> NetworkInspect {
    let mut view = net.inspect(endpoints);
    of(net.spec.driver).inspect_options(net, &mut view.options);
    view
}

/// The driver of a network docker creates with `-d sluice`: `-o ipvlan_mode` or `-o
/// ipvlan_flag` ask for docker's ipvlan semantics, `-o parent=IF[.VLAN]` alone for macvlan's,
/// anything else is a bridge.
pub fn for_docker(options: &NetworkOptions) -> Driver {
    if options.ipvlan_mode.is_some() || options.ipvlan_flag.is_some() {
        Driver::Ipvlan
    } else if options.parent.is_some() {
        Driver::Macvlan
    } else {
        Driver::Bridge
    }
}

/// Why a network of a driver without addressing (`host`, `none`) cannot be created: only the
/// predefined one exists, and it takes no addressing options.
fn only_predefined(spec: &NetworkSpec) -> StateError {
    if spec.subnet.is_some()
        || spec.gateway.is_some()
        || spec.ip_range.is_some()
        || !spec.aux_addresses.is_empty()
    {
        return StateError::NoIpam(spec.driver.as_str());
    }
    StateError::OnlyOneInstance(spec.driver.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drivers_with_addressing() {
        assert!(of(Driver::Bridge).has_ipam() && of(Driver::Macvlan).has_ipam());
        assert!(!of(Driver::Host).has_ipam() && !of(Driver::None).has_ipam());
        let mut o = NetworkOptions::default();
        assert_eq!(for_docker(&o), Driver::Bridge);
        o.parent = Some("eth1.10".into());
        assert_eq!(for_docker(&o), Driver::Macvlan);
        o.set("ipvlan_mode=l3").unwrap();
        assert_eq!(for_docker(&o), Driver::Ipvlan);
        assert!(of(Driver::Ipvlan).has_ipam());
    }

    #[test]
    fn a_bridge_shows_its_own_uplink() {
        let (mut s, mut st) = crate::state::tests::fresh();
        let mut a = crate::state::tests::net("a", Some("10.30.0.0/24"));
        a.options.mtu = Some(1400);
        a.uplink = Some(crate::model::UplinkSpec {
            name: "up1".into(),
            ip: "203.0.113.2/24".parse().unwrap(),
            gateway: Some("203.0.113.1".parse().unwrap()),
            mac: None,
            ip6: Some("2001:db8:71::2/64".parse().unwrap()),
            gateway6: Some("2001:db8:71::1".parse().unwrap()),
        });
        s.create_network(a, st()).unwrap();
        let o = s.inspect("a").unwrap().options;
        assert_eq!(o["uplink"], "up1");
        assert_eq!(o["uplink_ip"], "203.0.113.2/24");
        assert_eq!(o["uplink_gateway"], "203.0.113.1");
        assert_eq!(o["uplink_ip6"], "2001:db8:71::2/64");
        assert_eq!(o["uplink_gateway6"], "2001:db8:71::1");
        // The dataplane gets the v6 side on the network's own uplink port.
        let port = s.network("a").unwrap().uplink_port.unwrap();
        let cfg = crate::compile::dataplane_config(&s, None, Default::default());
        let up6 = cfg.uplinks6.iter().find(|u| u.port == port).unwrap();
        assert_eq!(up6.ip, "2001:db8:71::2/64".parse().unwrap());
        assert_eq!(up6.next_hop, Some("2001:db8:71::1".parse().unwrap()));
        assert_eq!(o["com.docker.network.driver.mtu"], "1400");
    }
}
