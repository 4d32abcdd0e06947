//! The control plane's state and its rules: which networks and endpoints exist, and what
//! creating, removing, connecting and disconnecting may do (docker's semantics). Every
//! operation validates completely before it changes anything, so a refused request leaves the
//! state as it was.

mod endpoint;
mod error;
mod hostports;
mod ipv6;
mod network;

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use sluice_dataplane::config::Ipv4Cidr;
use sluice_dataplane::frame::NetworkId;

pub use error::StateError;
pub use hostports::{check_range, RangeOverlapsNapt, DEFAULT_HOST_PORTS};

use crate::driver;
use crate::ipam::Pool;
use crate::ipam6::Pool6;
use crate::model::{Driver, Endpoint, Network, NetworkInspect, NetworkSpec, Stamp};
use crate::validate::shown;

/// The predefined networks, which always exist and cannot be removed.
pub const PREDEFINED: [&str; 3] = ["bridge", "host", "none"];

/// Networks and endpoints, with the address pools derived from them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    networks: BTreeMap<String, Network>,
    endpoints: BTreeMap<String, Endpoint>,
    pools: HashMap<String, Pool>,
    /// sluice's own addresses outside the networks (the daemon's uplink), by owner.
    own: Vec<(String, Ipv4Cidr)>,
    host_ports: hostports::HostPorts,
    pools6: HashMap<String, Pool6>,
}

fn pool_of(n: &Network) -> Option<Pool> {
    Some(Pool::new(
        n.subnet?,
        n.spec.ip_range,
        n.gateway?,
        &n.spec.aux_addresses,
    ))
}

impl State {
    /// An empty state (no networks at all); `with_defaults` is what a daemon starts from.
    pub fn new() -> State {
        State::default()
    }

    /// docker's predefined networks: `bridge` (172.17.0.0/16, gateway 172.17.0.1), `host` and
    /// `none`, with identities from `stamp`.
    pub fn with_defaults(mut stamp: impl FnMut() -> Stamp) -> State {
        let mut s = State::new();
        for (name, driver, subnet) in [
            (
                "bridge",
                Driver::Bridge,
                Some(Ipv4Cidr {
                    addr: Ipv4Addr::new(172, 17, 0, 0),
                    prefix: 16,
                }),
            ),
            ("host", Driver::Host, None),
            ("none", Driver::None, None),
        ] {
            let st = stamp();
            let n = Network {
                id: st.id,
                created: st.created,
                spec: NetworkSpec {
                    name: name.into(),
                    driver,
                    ..NetworkSpec::default()
                },
                subnet,
                gateway: subnet.map(|s| Ipv4Addr::from(u32::from(s.network()) + 1)),
                subnet6: None,
                gateway6: None,
                dataplane_id: NetworkId(s.networks.len() as u16),
                parent_port: None,
                uplink_port: None,
            };
            s.insert_network(n);
        }
        s
    }

    /// Rebuilds a state from stored records, checking that they are consistent (addresses
    /// unique and inside their networks).
    pub fn from_parts(
        networks: impl IntoIterator<Item = Network>,
        endpoints: impl IntoIterator<Item = Endpoint>,
    ) -> Result<State, StateError> {
        let mut s = State::new();
        for n in networks {
            s.insert_network(n);
        }
        for e in endpoints {
            let net = s
                .networks
                .get(&e.network_id)
                .ok_or_else(|| StateError::NoSuchNetwork(e.network_id.clone()))?;
            let name = net.spec.name.clone();
            if let Some(ip) = e.ip {
                let pool = s
                    .pools
                    .get_mut(&e.network_id)
                    .ok_or_else(|| StateError::CannotConnect(name.clone()))?;
                pool.claim(ip).map_err(|err| StateError::Ipam {
                    network: name.clone(),
                    err,
                })?;
            }
            if let (Some(ip), Some(p6)) = (e.ip6, s.pools6.get_mut(&e.network_id)) {
                p6.claim(ip)
                    .map_err(|err| StateError::Ipam6 { network: name, err })?;
            }
            s.endpoints.insert(e.id.clone(), e);
        }
        Ok(s)
    }

    fn insert_network(&mut self, n: Network) {
        if let Some(p) = pool_of(&n) {
            self.pools.insert(n.id.clone(), p);
        }
        if let Some(p) = ipv6::pool6_of(&n) {
            self.pools6.insert(n.id.clone(), p);
        }
        self.networks.insert(n.id.clone(), n);
    }

    /// Tells the rules which addresses sluice owns outside the state (the daemon's uplink): no
    /// new network overlaps them, no endpoint of an existing one (`bridge`) is given one.
    pub fn set_own_addresses(&mut self, own: Vec<(String, Ipv4Cidr)>) {
        for (_, c) in &own {
            self.pools.values_mut().for_each(|p| _ = p.claim(c.addr));
        }
        self.own = own;
    }

    /// sluice's addresses a network `spec` must not overlap: the daemon's and every uplink's.
    pub(crate) fn own_addresses(&self, spec: &NetworkSpec) -> Vec<(String, Ipv4Cidr)> {
        let specs = self.networks.values().map(|n| &n.spec).chain([spec]);
        crate::validate::own_addresses(&self.own, specs)
    }

    /// All networks, by id.
    pub fn networks(&self) -> impl Iterator<Item = &Network> {
        self.networks.values()
    }

    /// All endpoints, by id.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.values()
    }

    /// The endpoints of the network with id `network_id`.
    pub fn endpoints_of<'a>(&'a self, network_id: &'a str) -> impl Iterator<Item = &'a Endpoint> {
        self.endpoints
            .values()
            .filter(move |e| e.network_id == network_id)
    }

    /// A network by name, full id or unique id prefix (docker's lookup order).
    pub fn network(&self, key: &str) -> Result<&Network, StateError> {
        if let Some(n) = self.networks.values().find(|n| n.spec.name == key) {
            return Ok(n);
        }
        if let Some(n) = self.networks.get(key) {
            return Ok(n);
        }
        let mut hits = self.networks.values().filter(|n| n.id.starts_with(key));
        match (key.is_empty(), hits.next(), hits.next()) {
            (false, Some(n), None) => Ok(n),
            (false, Some(_), Some(_)) => Err(StateError::AmbiguousNetwork(shown(key))),
            _ => Err(StateError::NoSuchNetwork(shown(key))),
        }
    }

    /// `docker network inspect` of a network.
    pub fn inspect(&self, key: &str) -> Result<NetworkInspect, StateError> {
        let n = self.network(key)?;
        Ok(driver::inspect(n, self.endpoints_of(&n.id)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{EndpointSpec, Placement, Sandbox, UplinkSpec};
    use std::cell::Cell;

    /// Deterministic stamps: id = the counter in hex, padded to 64.
    pub(crate) fn stamps() -> impl FnMut() -> Stamp {
        let n = Cell::new(0u64);
        move || {
            n.set(n.get() + 1);
            Stamp {
                id: format!("{:010x}{:054x}", n.get(), n.get()),
                created: crate::model::rfc3339(n.get(), 0),
            }
        }
    }

    /// docker's predefined networks and a stamp source past their ids.
    pub(crate) fn fresh() -> (State, impl FnMut() -> Stamp) {
        let s = State::with_defaults(stamps());
        let mut st = stamps();
        for _ in 0..3 {
            st();
        }
        (s, st)
    }

    pub(crate) fn net(name: &str, subnet: Option<&str>) -> NetworkSpec {
        NetworkSpec {
            name: name.into(),
            subnet: subnet.map(|s| s.parse().unwrap()),
            ..NetworkSpec::default()
        }
    }

    pub(crate) fn ep(network: &str, name: &str, pid: u32) -> EndpointSpec {
        EndpointSpec {
            network: network.into(),
            sandbox: Sandbox::Pid(pid),
            name: name.into(),
            ip: None,
            ip6: None,
            mac: None,
            aliases: vec![],
            links: vec![],
            publish: vec![],
            names: Default::default(),
            ifname: None,
            placement: Default::default(),
        }
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_are_dockers() {
        let s = State::with_defaults(stamps());
        let b = s.network("bridge").unwrap();
        assert_eq!(b.subnet.unwrap().to_string(), "172.17.0.0/16");
        assert_eq!(b.gateway, Some(ip("172.17.0.1")));
        assert_eq!(s.network("host").unwrap().spec.driver, Driver::Host);
        assert_eq!(s.network("none").unwrap().subnet, None);
    }

    #[test]
    fn auto_subnets_skip_overlaps() {
        let mut s = State::with_defaults(stamps());
        let mut st = stamps();
        st();
        st();
        st();
        let a = s.create_network(net("a", None), st()).unwrap();
        assert_eq!(a.subnet.unwrap().to_string(), "172.18.0.0/16");
        assert_eq!(a.gateway, Some(ip("172.18.0.1")));
        s.create_network(net("b", Some("172.19.3.0/24")), st())
            .unwrap();
        let c = s.create_network(net("c", None), st()).unwrap();
        assert_eq!(c.subnet.unwrap().to_string(), "172.20.0.0/16");
        let ids: Vec<u16> = s.networks().map(|n| n.dataplane_id.0).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len(), "dataplane ids distinct");
    }

    #[test]
    fn overlap_names_the_other_network() {
        let mut s = State::new();
        let mut st = stamps();
        s.create_network(net("a", Some("10.1.2.0/24")), st())
            .unwrap();
        let before = s.clone();
        let e = s
            .create_network(net("b", Some("10.1.0.0/16")), st())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"subnet 10.1.0.0/16 overlaps network "a" (10.1.2.0/24)"#
        );
        assert_eq!(s, before, "refused request changes nothing");
    }

    #[test]
    fn sluices_own_addresses_are_never_a_networks() {
        let (mut s, mut st) = fresh();
        s.set_own_addresses(vec![(
            "uplink eth1".into(),
            "172.18.0.2/16".parse().unwrap(),
        )]);
        let e = s
            .create_network(net("a", Some("172.18.0.0/24")), st())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "subnet 172.18.0.0/24 overlaps uplink eth1 (172.18.0.2/16), an address sluice owns"
        );
        assert!(matches!(e, StateError::Invalid(ref i) if i.status() == 409));
        let auto = s.create_network(net("b", None), st()).unwrap();
        assert_eq!(
            auto.subnet.unwrap().to_string(),
            "172.19.0.0/16",
            "the next free pool skips the uplink's"
        );
        let mut own = net("c", Some("203.0.113.0/24"));
        own.uplink = Some(UplinkSpec {
            name: "up1".into(),
            ip: "203.0.113.2/24".parse().unwrap(),
            gateway: None,
            mac: None,
            ip6: None,
            gateway6: None,
        });
        assert!(matches!(
            s.create_network(own.clone(), st()),
            Err(StateError::Invalid(_))
        ));
        own.subnet = Some("10.30.0.0/24".parse().unwrap());
        s.create_network(own, st()).unwrap();
        assert!(
            s.create_network(net("d", Some("203.0.113.128/25")), st())
                .is_err(),
            "another network's uplink is sluice's too"
        );
        let (mut s, mut st) = fresh();
        s.set_own_addresses(vec![(
            "uplink eth1".into(),
            "172.17.0.2/16".parse().unwrap(),
        )]);
        let e = s.connect(ep("bridge", "web", 1), st()).unwrap();
        assert_eq!(
            e.ip,
            Some(ip("172.17.0.3")),
            "never the uplink's own address"
        );
    }

    #[test]
    fn unusable_subnets_and_options_are_refused_at_create() {
        let (mut s, mut st) = fresh();
        for bad in [
            "127.0.0.0/8",
            "0.0.0.0/8",
            "224.0.0.0/4",
            "240.0.0.0/4",
            "255.255.255.0/24",
        ] {
            let e = s.create_network(net("x", Some(bad)), st()).unwrap_err();
            assert!(
                matches!(e, StateError::Invalid(ref i) if i.status() == 400),
                "{bad}: {e}"
            );
        }
        let mut m = net("m", Some("10.40.0.0/24"));
        m.options.mtu = Some(0);
        assert!(s.create_network(m.clone(), st()).is_err());
        m.options.mtu = None;
        m.options.vlan = Some(5000);
        assert!(s.create_network(m, st()).is_err());
    }

    #[test]
    fn connect_refuses_injections_and_long_names() {
        let (mut s, mut st) = fresh();
        s.create_network(net("a", Some("10.41.0.0/24")), st())
            .unwrap();
        let before = s.clone();
        let mut e = ep("a", "web", 1);
        e.names.hostname = Some("a\nnameserver 6.6.6.6".into());
        assert!(matches!(s.connect(e, st()), Err(StateError::Invalid(_))));
        let mut e = ep("a", "web", 1);
        e.aliases = vec!["x\n1.2.3.4 y".into()];
        assert!(matches!(s.connect(e, st()), Err(StateError::Invalid(_))));
        let long = "n".repeat(100_000);
        let msg = s.connect(ep("a", &long, 1), st()).unwrap_err().to_string();
        assert!(msg.len() < 200, "{msg}");
        let msg = s
            .connect(ep(&long, "web", 1), st())
            .unwrap_err()
            .to_string();
        assert!(msg.len() < 200, "{msg}");
        assert!(s.network(&long).unwrap_err().to_string().len() < 200);
        assert!(s.disconnect("a", &long).unwrap_err().to_string().len() < 200);
        assert_eq!(s, before);
    }

    #[test]
    fn create_rules() {
        let (mut s, mut st) = fresh();
        let err = |s: &mut State, spec, stamp| s.create_network(spec, stamp).unwrap_err();
        assert_eq!(
            err(&mut s, net("bridge", None), st()),
            StateError::NameTaken("bridge".into())
        );
        assert_eq!(
            err(&mut s, net("-x", None), st()),
            StateError::InvalidName("-x".into())
        );
        assert_eq!(
            err(&mut s, net("", None), st()),
            StateError::InvalidName("".into())
        );
        let mut h = net("h2", None);
        h.driver = Driver::Host;
        assert_eq!(
            err(&mut s, h.clone(), st()),
            StateError::OnlyOneInstance("host")
        );
        h.subnet = Some("10.0.0.0/8".parse().unwrap());
        assert_eq!(err(&mut s, h, st()), StateError::NoIpam("host"));
        assert!(matches!(
            err(&mut s, net("t", Some("10.0.0.0/31")), st()),
            StateError::SubnetTooSmall(_)
        ));
        let mut g = net("g", None);
        g.gateway = Some(ip("10.0.0.1"));
        assert_eq!(
            err(&mut s, g.clone(), st()),
            StateError::NeedsSubnet("--gateway")
        );
        g.subnet = Some("10.0.0.0/24".parse().unwrap());
        g.gateway = Some(ip("10.0.1.1"));
        assert!(matches!(
            err(&mut s, g.clone(), st()),
            StateError::NotInSubnet { .. }
        ));
        g.gateway = Some(ip("10.0.0.255"));
        assert!(matches!(
            err(&mut s, g.clone(), st()),
            StateError::NotInSubnet { .. }
        ));
        g.gateway = None;
        g.ip_range = Some("10.0.0.0/23".parse().unwrap());
        assert_eq!(
            err(&mut s, g.clone(), st()).to_string(),
            "ip range 10.0.0.0/23 is not a usable address of subnet 10.0.0.0/24"
        );
        g.ip_range = Some("10.0.1.0/25".parse().unwrap());
        assert!(matches!(
            err(&mut s, g.clone(), st()),
            StateError::NotInSubnet { .. }
        ));
        g.ip_range = Some("10.0.0.128/25".parse().unwrap());
        g.aux_addresses.insert("x".into(), ip("10.0.5.5"));
        assert!(matches!(
            err(&mut s, g.clone(), st()),
            StateError::NotInSubnet { .. }
        ));
        g.aux_addresses.insert("x".into(), ip("10.0.0.5"));
        let n = s.create_network(g, st()).unwrap();
        assert_eq!(
            n.gateway,
            Some(ip("10.0.0.1")),
            "default gateway: first host"
        );
        let id = n.id.clone();
        let again = Stamp {
            id: id.clone(),
            created: String::new(),
        };
        assert_eq!(
            err(&mut s, net("dup", None), again),
            StateError::IdTaken(id)
        );
    }

    #[test]
    fn lookup_by_name_id_and_prefix() {
        let mut s = State::new();
        let stamp = |id: String| Stamp {
            id,
            created: String::new(),
        };
        let (id_a, id_b) = (
            format!("ab{}", "0".repeat(62)),
            format!("ac{}", "0".repeat(62)),
        );
        s.create_network(net("a", None), stamp(id_a.clone()))
            .unwrap();
        s.create_network(net("b", None), stamp(id_b.clone()))
            .unwrap();
        assert_eq!(s.network(&id_a).unwrap().spec.name, "a");
        assert_eq!(s.network("ab").unwrap().spec.name, "a");
        assert_eq!(s.network("ac0").unwrap().spec.name, "b");
        assert_eq!(
            s.network("a").unwrap().spec.name,
            "a",
            "name before id prefix"
        );
        assert_eq!(s.network("0"), Err(StateError::NoSuchNetwork("0".into())));
        let c = s.create_network(net("c", None), stamp(format!("ba{}", "0".repeat(62))));
        assert!(c.is_ok());
        s.create_network(net("d", None), stamp(format!("bb{}", "0".repeat(62))))
            .unwrap();
        assert_eq!(s.network("b").unwrap().spec.name, "b");
        assert_eq!(s.network("bx"), Err(StateError::NoSuchNetwork("bx".into())));
        assert_eq!(s.network("ba").unwrap().spec.name, "c");
        assert_eq!(
            s.remove_network("c").map(|n| n.spec.name),
            Ok("c".to_string())
        );
        s.create_network(net("e", None), stamp(format!("bab{}", "0".repeat(61))))
            .unwrap();
        s.create_network(net("f", None), stamp(format!("baa{}", "0".repeat(61))))
            .unwrap();
        assert_eq!(
            s.network("ba"),
            Err(StateError::AmbiguousNetwork("ba".into()))
        );
        assert_eq!(s.network(""), Err(StateError::NoSuchNetwork("".into())));
    }

    #[test]
    fn own_uplink_rules() {
        let (mut s, mut st) = fresh();
        let up = |name: &str, ip: &str| UplinkSpec {
            name: name.into(),
            ip: ip.parse().unwrap(),
            gateway: None,
            mac: None,
            ip6: None,
            gateway6: None,
        };
        let mut a = net("a", Some("10.30.0.0/24"));
        a.uplink = Some(up("up1", "172.17.5.2/24"));
        assert!(matches!(
            s.create_network(a.clone(), st()),
            Err(StateError::UplinkOverlaps { .. })
        ));
        a.internal = true;
        a.uplink = Some(up("up1", "203.0.113.2/24"));
        assert_eq!(
            s.create_network(a.clone(), st()),
            Err(StateError::UplinkNeedsRouting)
        );
        a.internal = false;
        let mut v6 = up("up1", "203.0.113.2/24");
        v6.gateway6 = Some("2001:db8::1".parse().unwrap());
        a.uplink = Some(v6);
        assert_eq!(
            s.create_network(a.clone(), st()),
            Err(StateError::UplinkGateway6NeedsIp6)
        );
        a.uplink = Some(up("up1", "203.0.113.2/24"));
        let made = s.create_network(a, st()).unwrap().clone();
        assert!(made.uplink_port.is_some());
        let mut b = net("b", Some("10.31.0.0/24"));
        b.uplink = Some(up("up1", "198.51.100.2/24"));
        assert!(matches!(
            s.create_network(b, st()),
            Err(StateError::ParentInUse { .. })
        ));
        let e = s.connect(ep("a", "x", 1), st()).unwrap();
        assert_ne!(Some(e.port), made.uplink_port, "ports are not shared");
    }

    #[test]
    fn macvlan_rules() {
        let (mut s, mut st) = fresh();
        let mut m = net("m", Some("10.8.0.0/24"));
        m.driver = Driver::Macvlan;
        assert_eq!(
            s.create_network(m.clone(), st()),
            Err(StateError::MacvlanNeedsParent)
        );
        m.options.set("parent=eth1.5000").unwrap();
        assert!(matches!(
            s.create_network(m.clone(), st()),
            Err(StateError::BadParentVlan(_))
        ));
        m.options.set("parent=eth1.10").unwrap();
        m.options.set("vlan=11").unwrap();
        assert!(matches!(
            s.create_network(m.clone(), st()),
            Err(StateError::BadParentVlan(_))
        ));
        m.options.vlan = None;
        s.create_network(m, st()).unwrap();
        let mut again = net("m2", Some("10.9.0.0/24"));
        again.driver = Driver::Macvlan;
        again.options.set("parent=eth1").unwrap();
        assert_eq!(
            s.create_network(again, st()),
            Err(StateError::ParentInUse {
                parent: "eth1".into(),
                other: "m".into()
            })
        );
        let mut bridge = net("b", Some("10.10.0.0/24"));
        bridge.options.set("parent=eth3").unwrap();
        assert_eq!(
            s.create_network(bridge, st()),
            Err(StateError::ParentNeedsMacvlan)
        );
    }

    #[test]
    fn interface_names_are_chosen_checked_or_handed_off() {
        let (mut s, mut st) = fresh();
        s.create_network(net("a", Some("10.5.0.0/24")), st())
            .unwrap();
        let mut named = ep("a", "cni", 9);
        named.ifname = Some("net1".into());
        assert_eq!(
            s.connect(named.clone(), st()).unwrap().sandbox_ifname,
            "net1"
        );
        named.name = "cni2".into();
        named.sandbox = Sandbox::Pid(11);
        named.ifname = Some("a/b".into());
        assert_eq!(
            s.connect(named.clone(), st()),
            Err(StateError::InvalidIfname("a/b".into()))
        );
        let mut handed = ep("a", "docker", 10);
        handed.placement = Placement::HandOff;
        let h = s.connect(handed, st()).unwrap();
        assert_eq!(h.sandbox_ifname, format!("sp{}", &h.host_ifname[2..]));
    }

    #[test]
    fn connect_allocates_and_disconnect_releases() {
        let (mut s, mut st) = fresh();
        let mut spec = net("a", Some("10.5.0.0/24"));
        spec.aux_addresses.insert("r".into(), ip("10.5.0.2"));
        s.create_network(spec, st()).unwrap();
        let e1 = s.connect(ep("a", "one", 1), st()).unwrap().clone();
        assert_eq!(
            e1.ip,
            Some(ip("10.5.0.3")),
            "skips network, gateway and aux"
        );
        assert_eq!(e1.mac.to_string(), "02:42:0a:05:00:03");
        assert_eq!(e1.sandbox_ifname, "eth0");
        assert!(e1.host_ifname.len() <= 15 && e1.host_ifname.starts_with("sl"));
        let mut two = ep("a", "two", 2);
        two.ip = Some(ip("10.5.0.4"));
        let e2 = s.connect(two, st()).unwrap().clone();
        assert_eq!(e2.ip, Some(ip("10.5.0.4")));
        assert_ne!(e1.port, e2.port);
        assert_eq!(
            s.connect(ep("a", "three", 3), st()).unwrap().ip,
            Some(ip("10.5.0.5"))
        );
        let e4 = s.connect(ep("bridge", "one", 1), st()).unwrap().clone();
        assert_eq!(
            e4.sandbox_ifname, "eth1",
            "second network of the same sandbox"
        );
        assert_eq!(e4.ip, Some(ip("172.17.0.2")));
        s.disconnect("a", "one").unwrap();
        let again = s.connect(ep("a", "one", 1), st()).unwrap();
        assert_eq!(
            again.sandbox_ifname, "eth0",
            "a freed interface name is reused, never a taken one"
        );
        s.disconnect("a", "one").unwrap();
        s.connect(ep("a", "one", 1), st()).unwrap();

        let mut on_bridge = ep("bridge", "two", 2);
        on_bridge.ip = Some(ip("172.17.0.9"));
        assert_eq!(
            s.connect(on_bridge.clone(), st()),
            Err(StateError::StaticIpNeedsSubnet)
        );
        on_bridge.ip = None;
        on_bridge.aliases = vec!["db".into()];
        assert_eq!(
            s.connect(on_bridge, st()),
            Err(StateError::AliasOnDefaultBridge)
        );
        assert_eq!(s.disconnect("a", "one").unwrap().ip, Some(ip("10.5.0.3")));
        assert_eq!(
            s.connect(ep("a", "four", 4), st()).unwrap().ip,
            Some(ip("10.5.0.3"))
        );
        assert!(matches!(
            s.disconnect("a", "one"),
            Err(StateError::NoSuchEndpoint { .. })
        ));
        assert_eq!(
            s.remove_network("a"),
            Err(StateError::HasEndpoints {
                network: "a".into(),
                count: 3
            })
        );
        for n in ["two", "three", "four"] {
            s.disconnect("a", n).unwrap();
        }
        s.remove_network("a").unwrap();
        assert_eq!(
            s.remove_network("a"),
            Err(StateError::NoSuchNetwork("a".into()))
        );
        assert_eq!(
            s.remove_network("bridge"),
            Err(StateError::Predefined("bridge".into()))
        );
    }

    #[test]
    fn connect_rules() {
        let (mut s, mut st) = fresh();
        s.create_network(net("a", Some("10.5.0.0/24")), st())
            .unwrap();
        let mut internal = net("i", Some("10.6.0.0/24"));
        internal.internal = true;
        s.create_network(internal, st()).unwrap();
        s.connect(ep("a", "one", 1), st()).unwrap();
        let before = s.clone();
        let err = |s: &mut State, spec, stamp| s.connect(spec, stamp).unwrap_err();
        assert_eq!(
            err(&mut s, ep("host", "x", 9), st()),
            StateError::CannotConnect("host".into())
        );
        assert_eq!(
            err(&mut s, ep("nope", "x", 9), st()),
            StateError::NoSuchNetwork("nope".into())
        );
        assert!(matches!(
            err(&mut s, ep("a", "one", 9), st()),
            StateError::EndpointNameTaken { .. }
        ));
        assert!(matches!(
            err(&mut s, ep("a", "x", 1), st()),
            StateError::AlreadyConnected { .. }
        ));
        let with_ip = |a: &str| {
            let mut e = ep("a", "x", 9);
            e.ip = Some(ip(a));
            e
        };
        for (a, bad) in [
            ("10.5.0.2", "in use"),
            ("10.5.0.1", "gateway"),
            ("10.5.0.255", "broadcast"),
            ("10.5.0.0", "network"),
            ("10.6.0.9", "outside"),
        ] {
            assert!(
                matches!(err(&mut s, with_ip(a), st()), StateError::Ipam { .. }),
                "{bad}"
            );
        }
        assert_eq!(
            err(&mut s, with_ip("10.5.0.2"), st()).to_string(),
            "network a: address 10.5.0.2 is already in use; pick another --ip or leave it out"
        );
        let with_mac = |m: &str| {
            let mut e = ep("a", "x", 9);
            e.mac = Some(m.parse().unwrap());
            e
        };
        assert!(matches!(
            err(&mut s, with_mac("01:00:5e:00:00:01"), st()),
            StateError::BadMac(_)
        ));
        assert!(matches!(
            err(&mut s, with_mac("00:00:00:00:00:00"), st()),
            StateError::BadMac(_)
        ));
        assert!(matches!(
            err(&mut s, with_mac("02:42:0a:05:00:02"), st()),
            StateError::MacInUse { .. }
        ));
        let mut p = ep("i", "x", 9);
        p.publish = vec!["80:80".parse().unwrap()];
        assert_eq!(
            err(&mut s, p, st()),
            StateError::PublishOnInternal("i".into())
        );
        assert_eq!(s, before, "refused connects change nothing");
        let mut m = with_mac("02:00:00:00:00:01");
        m.ip = Some(ip("10.5.0.200"));
        let e = s.connect(m, st()).unwrap();
        assert_eq!(e.mac.to_string(), "02:00:00:00:00:01");
        assert_eq!(e.ip, Some(ip("10.5.0.200")));
    }

    #[test]
    fn interface_names_are_unique() {
        let mut s = State::with_defaults(stamps());
        let stamp = |id: String| Stamp {
            id,
            created: String::new(),
        };
        let a = format!("{}{}", "1".repeat(10), "0".repeat(54));
        let b = format!("{}{}", "1".repeat(10), "2".repeat(54));
        let e = s.connect(ep("bridge", "one", 1), stamp(a.clone())).unwrap();
        assert_eq!(e.host_ifname, "sl1111111111");
        assert_eq!(
            s.connect(ep("bridge", "two", 2), stamp(b.clone())),
            Err(StateError::IdTaken(b))
        );
        assert_eq!(
            s.connect(ep("bridge", "two", 2), stamp(a.clone())),
            Err(StateError::IdTaken(a))
        );
    }

    #[test]
    fn published_ports_clash_across_endpoints() {
        let (mut s, mut st) = fresh();
        s.create_network(net("a", None), st()).unwrap();
        let with = |name: &str, pid, ports: &[&str]| {
            let mut e = ep("a", name, pid);
            e.publish = ports.iter().map(|p| p.parse().unwrap()).collect();
            e
        };
        s.connect(with("web", 1, &["8080:80", "127.0.0.1:53:53/udp"]), st())
            .unwrap();
        let e = s
            .connect(with("x", 2, &["1.2.3.4:8080:80"]), st())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "port 1.2.3.4:8080:80/tcp is already published by endpoint web (8080:80/tcp); pick another host port"
        );
        assert!(matches!(
            s.connect(with("x", 2, &["53:53/udp"]), st()),
            Err(StateError::PortClash { .. })
        ));
        assert!(matches!(
            s.connect(with("x", 2, &["9000-9001:80", "9001:80"]), st()),
            Err(StateError::PortClash { .. })
        ));
        s.connect(
            with("x", 2, &["8080:80/udp", "127.0.0.2:53:53/udp", "8081:80"]),
            st(),
        )
        .unwrap();
        s.disconnect("a", "web").unwrap();
        s.connect(with("y", 3, &["8080:80"]), st()).unwrap();
    }

    #[test]
    fn from_parts_rebuilds_pools() {
        let (mut s, mut st) = fresh();
        s.create_network(net("a", Some("10.5.0.0/24")), st())
            .unwrap();
        s.connect(ep("a", "one", 1), st()).unwrap();
        let mut r = State::from_parts(s.networks().cloned(), s.endpoints().cloned()).unwrap();
        assert_eq!(r, s);
        assert_eq!(
            r.connect(ep("a", "two", 2), st()).unwrap().ip,
            Some(ip("10.5.0.3"))
        );
        let dup: Vec<Endpoint> = s.endpoints().chain(s.endpoints()).cloned().collect();
        assert!(matches!(
            State::from_parts(s.networks().cloned(), dup),
            Err(StateError::Ipam { .. })
        ));
    }

    #[test]
    fn inspect_lists_endpoints() {
        let (mut s, mut st) = fresh();
        s.create_network(net("a", None), st()).unwrap();
        let e = s.connect(ep("a", "one", 1), st()).unwrap().clone();
        let v = s.inspect("a").unwrap();
        assert_eq!(v.containers.len(), 1);
        assert_eq!(v.containers[&e.id].ipv4_address, "172.18.0.2/16");
        assert!(s.inspect("bridge").unwrap().containers.is_empty());
    }
}
