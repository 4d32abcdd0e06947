//! The ipvlan driver (docker's `-d ipvlan`): endpoints on a parent interface's segment, all
//! at the parent's MAC, in docker's modes. `l2` switches onto the parent with its router as
//! gateway (broadcast and multicast flooded); `l3` and `l3s` give endpoints a default route on
//! the link, with no gateway, and carry no broadcast or multicast. `ipvlan_flag=private` keeps
//! endpoints from reaching each other. Without `parent`, as docker does with its dummy parent,
//! the endpoints reach only each other. This kernel has no ipvlan module, so the driver is
//! sluice's own: the dataplane's `ipvlan` stage answers ARP for the endpoints with the
//! parent's MAC and delivers by address (see `IpvlanConfig`), for IPv6 too (neighbour
//! discovery answered and rewritten to the parent's MAC).

use sluice_dataplane::config::{Config, IpvlanConfig, IpvlanMode, NetworkConfig};
use sluice_dataplane::wire::MacAddr;

use super::macvlan::{check_parent, on_parent, parent_port, refuse_published};
use super::{Created, NetworkDriver};
use crate::model::{EndpointSpec, IpvlanFlag, Network, NetworkSpec};
use crate::state::{State, StateError};

/// The ipvlan driver.
pub(super) struct Ipvlan;

impl NetworkDriver for Ipvlan {
    fn create(&self, state: &State, spec: &NetworkSpec) -> Result<Created, StateError> {
        on_parent(state, spec, || {
            if spec.options.ipvlan_flag == Some(IpvlanFlag::Vepa) {
                return Err(StateError::IpvlanVepa);
            }
            match spec.options.parent_and_vlan() {
                None => Ok(None),
                Some(("lo", _)) => Err(StateError::LoopbackParent("ipvlan")),
                Some(_) => check_parent(state, spec),
            }
        })
    }

    fn connect(&self, net: &Network, spec: &EndpointSpec) -> Result<(), StateError> {
        refuse_published(net, spec)
    }

    fn default_route_on_link(&self, net: &Network) -> bool {
        net.spec.options.ipvlan_mode.unwrap_or_default().routed()
    }

    fn compile(&self, net: &Network, nc: &mut NetworkConfig, cfg: &mut Config) {
        nc.external_gateway = true;
        if net.spec.options.ipvlan_flag == Some(IpvlanFlag::Private) {
            nc.icc = false;
        }
        let parent = parent_port(net);
        nc.ipvlan = Some(IpvlanConfig {
            mode: if self.default_route_on_link(net) {
                IpvlanMode::L3
            } else {
                IpvlanMode::L2
            },
            parent: parent.as_ref().map(|p| p.id),
            parent_mac: parent.as_ref().and_then(|p| interface_mac(&p.name)),
        });
        cfg.ports.extend(parent);
    }
}

/// The MAC of interface `ifname` in sluiced's namespace, as sysfs shows it (the parent's, which
/// every endpoint shows on the wire); none when it cannot be read, and the dataplane uses the
/// network's own MAC instead.
fn interface_mac(ifname: &str) -> Option<MacAddr> {
    if !crate::naming::valid_ifname(ifname) {
        return None;
    }
    let s = std::fs::read_to_string(format!("/sys/class/net/{ifname}/address")).ok()?;
    s.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::interface_mac;
    use sluice_dataplane::config::{IpvlanMode, NatConfig, PortRole};
    use sluice_dataplane::tables::Tables;
    use sluice_dataplane::wire::MacAddr;

    use crate::compile::dataplane_config;
    use crate::driver;
    use crate::model::{Driver, NetworkSpec};
    use crate::state::tests::{ep, fresh, net};
    use crate::state::StateError;

    fn ipvlan(name: &str, subnet: &str, opts: &[&str]) -> NetworkSpec {
        let mut n = net(name, Some(subnet));
        n.driver = Driver::Ipvlan;
        for o in opts {
            n.options.set(o).unwrap();
        }
        n
    }

    #[test]
    fn options_are_checked_as_docker_does() {
        let (mut s, mut st) = fresh();
        let lo = ipvlan("i", "10.40.0.0/24", &["parent=lo"]);
        assert_eq!(
            s.create_network(lo, st()).unwrap_err().to_string(),
            "loopback interface is not a valid ipvlan parent link"
        );
        let vepa = ipvlan("i", "10.40.0.0/24", &["parent=eth1", "ipvlan_flag=vepa"]);
        assert_eq!(s.create_network(vepa, st()), Err(StateError::IpvlanVepa));
        let mut bridge = net("b", Some("10.41.0.0/24"));
        bridge.options.set("ipvlan_mode=l3").unwrap();
        assert_eq!(
            s.create_network(bridge, st()),
            Err(StateError::IpvlanOptionNeedsIpvlan)
        );
        s.create_network(ipvlan("i", "10.40.0.0/24", &["parent=eth1"]), st())
            .unwrap();
        let shared = ipvlan("j", "10.42.0.0/24", &["parent=eth1", "ipvlan_mode=l3"]);
        assert_eq!(
            s.create_network(shared, st()),
            Err(StateError::ParentInUse {
                parent: "eth1".into(),
                other: "i".into()
            })
        );
        let clash = ipvlan("j", "10.40.0.128/25", &["parent=eth2"]);
        assert!(matches!(
            s.create_network(clash, st()),
            Err(StateError::Overlap { .. })
        ));
        let mut published = ep("i", "a", 1);
        published.publish = vec!["8080:80".parse().unwrap()];
        assert!(matches!(
            s.connect(published, st()),
            Err(StateError::PublishOnMacvlan(_))
        ));
    }

    #[test]
    fn modes_decide_the_route_and_flags_the_switching() {
        let (mut s, mut st) = fresh();
        let l2 = s
            .create_network(ipvlan("l2", "10.43.0.0/24", &["parent=eth1.7"]), st())
            .unwrap()
            .clone();
        let l3 = ipvlan(
            "l3",
            "10.44.0.0/24",
            &["ipvlan_mode=l3", "ipvlan_flag=private"],
        );
        let l3 = s.create_network(l3, st()).unwrap().clone();
        assert_eq!(
            l3.parent_port, None,
            "no parent: endpoints reach each other only"
        );
        let d = driver::of(Driver::Ipvlan);
        assert!(!d.default_route_on_link(&l2) && d.default_route_on_link(&l3));

        let cfg = dataplane_config(&s, None, NatConfig::default());
        Tables::build(&cfg, None).expect("valid dataplane config");
        let nc = |n: &str| cfg.networks.iter().find(|c| c.name == n).unwrap();
        assert!(nc("l2").external_gateway && nc("l2").icc);
        assert!(nc("l3").external_gateway && !nc("l3").icc);
        let iv = |n: &str| nc(n).ipvlan.expect("an ipvlan stage");
        assert_eq!(
            (iv("l2").mode, iv("l2").parent),
            (IpvlanMode::L2, l2.parent_port)
        );
        assert_eq!((iv("l3").mode, iv("l3").parent), (IpvlanMode::L3, None));
        let parent = cfg.ports.iter().find(|p| Some(p.id) == l2.parent_port);
        assert!(matches!(
            parent.map(|p| (p.name.as_str(), &p.role)),
            Some(("eth1", PortRole::Trunk { allowed, .. })) if allowed == &[7]
        ));
    }

    #[test]
    fn the_parents_mac_is_read_from_sysfs() {
        assert_eq!(interface_mac("../lo"), None, "only interface names");
        assert_eq!(interface_mac("nope-xyz0"), None);
        assert_eq!(
            interface_mac("lo"),
            Some(MacAddr::default()),
            "lo's is all zeros"
        );
    }
}
