//! Turns the control plane's state into the dataplane's configuration: one `NetworkConfig` per
//! bridge or macvlan network, one endpoint port per endpoint (anti-spoofing with its MAC and
//! address), the uplink, and a `PortForward` per published port.

use std::net::{Ipv4Addr, Ipv6Addr};

use sluice_dataplane::config::{
    Config, Ipv4Cidr, Ipv6Cidr, NatConfig, NetworkConfig, NetworkV6, PortConfig, PortForward,
    PortIo, PortRole, UplinkConfig, UplinkV6,
};
use sluice_dataplane::frame::PortId;
use sluice_dataplane::wire::MacAddr;

use crate::driver;
use crate::model::Network;
use crate::state::State;

/// The uplink port's id: endpoints get ids from 1 up.
pub const UPLINK_PORT: PortId = PortId(0);

/// Where sluice meets the outside network (`sluiced --uplink ...`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UplinkSettings {
    /// The interface name.
    pub name: String,
    /// How frames reach it.
    pub io: PortIo,
    /// sluice's address and prefix on it.
    pub ip: Ipv4Cidr,
    /// sluice's MAC on it.
    pub mac: MacAddr,
    /// The next hop for everything off-link.
    pub next_hop: Option<Ipv4Addr>,
    /// The uplink's MTU.
    pub mtu: u16,
    /// sluice's v6 address and prefix on it (NAT66 source, published ports over v6).
    pub ip6: Option<Ipv6Cidr>,
    /// The v6 next hop for everything off-link.
    pub next_hop6: Option<Ipv6Addr>,
}

/// The dataplane configuration for `state`. Network and port ids are the ones stored with
/// each network and endpoint, so they stay the same across reconfigurations.
pub fn dataplane_config(state: &State, uplink: Option<&UplinkSettings>, nat: NatConfig) -> Config {
    let mut cfg = Config {
        nat,
        ..Config::default()
    };
    if let Some(u) = uplink {
        cfg.ports.push(PortConfig {
            id: UPLINK_PORT,
            name: u.name.clone(),
            io: u.io,
            role: PortRole::Uplink,
        });
        cfg.uplink = Some(UplinkConfig {
            port: UPLINK_PORT,
            ip: u.ip,
            mac: u.mac,
            next_hop: u.next_hop,
            mtu: u.mtu,
        });
        cfg.uplinks6.extend(u.ip6.map(|ip| UplinkV6 {
            port: UPLINK_PORT,
            ip,
            next_hop: u.next_hop6,
        }));
    }
    for n in state.networks() {
        let Some(mut nc) = addressed_network(n) else {
            continue;
        };
        let o = &n.spec.options;
        let vlan = o
            .parent_and_vlan()
            .and_then(|(_, v)| v)
            .or(o.vlan)
            .unwrap_or(0);
        nc.vlan = vlan;
        nc.internal = n.spec.internal;
        nc.icc = o.icc.unwrap_or(nc.icc);
        nc.mtu = o.mtu.unwrap_or(nc.mtu);
        nc.max_flows_per_endpoint = o.max_flows_per_endpoint;
        driver::of(n.spec.driver).compile(n, &mut nc, &mut cfg);
        cfg.networks.push(nc);
        for e in state.endpoints_of(&n.id) {
            cfg.ports.push(PortConfig {
                id: e.port,
                name: e.host_ifname.clone(),
                io: PortIo::AfPacket,
                role: PortRole::Endpoint {
                    network: n.dataplane_id,
                    vlan,
                    mac: e.mac,
                    ipv4: e.ip,
                    ipv6: e.ip6,
                },
            });
            // Connect picks every host port left open, so each stored mapping has one.
            for p in &e.spec.publish {
                let Some(host_ports) = p.host_ports else {
                    continue;
                };
                cfg.forwards.push(PortForward {
                    proto: p.proto,
                    host_ip: p.host_ip,
                    host_ip6: p.host_ip6,
                    host_ports,
                    network: n.dataplane_id,
                    target_ip: e.ip,
                    target_ip6: e.ip6,
                    target_ports: p.container_ports,
                });
            }
        }
    }
    cfg
}

/// The dataplane network of `n` with its addressing: v4 (and v6 on a dual-stack network), or
/// v6 alone on an IPv6-only one; none for networks without addressing (`host`, `none`).
fn addressed_network(n: &Network) -> Option<NetworkConfig> {
    let v6 = n
        .subnet6
        .zip(n.gateway6)
        .map(|(subnet, gateway)| NetworkV6 {
            subnet,
            gateway,
            routed: n.spec.options.routed_ipv6(),
        });
    let name = n.spec.name.clone();
    match (n.subnet.zip(n.gateway), v6) {
        (Some((subnet, gateway)), _) => Some(NetworkConfig {
            ipv6: v6,
            ..NetworkConfig::new(n.dataplane_id, name, subnet, gateway)
        }),
        (None, Some(v6)) => Some(NetworkConfig::new_v6_only(n.dataplane_id, name, v6)),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Driver, NetworkSpec};
    use crate::state::tests::{ep, fresh, net, stamps};
    use proptest::prelude::*;
    use sluice_dataplane::config::L4Proto;
    use sluice_dataplane::tables::Tables;

    fn uplink() -> UplinkSettings {
        UplinkSettings {
            name: "eth9".into(),
            io: PortIo::AfPacket,
            ip: "192.0.2.10/24".parse().unwrap(),
            mac: "02:00:00:00:00:09".parse().unwrap(),
            next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
            mtu: 1500,
            ip6: Some("2001:db8:1::2/64".parse().unwrap()),
            next_hop6: Some("2001:db8:1::1".parse().unwrap()),
        }
    }

    #[test]
    fn dual_stack_networks_compile_their_v6_prefix_gateway_and_addresses() {
        let (mut s, mut st) = fresh();
        let a = NetworkSpec {
            enable_ipv6: true,
            subnet6: Some("fd00:9::/64".parse().unwrap()),
            ..net("a", Some("10.9.0.0/24"))
        };
        s.create_network(a, st()).unwrap();
        let mut routed = NetworkSpec {
            enable_ipv6: true,
            subnet6: Some("fd00:8::/64".parse().unwrap()),
            ..net("r", Some("10.8.0.0/24"))
        };
        routed
            .options
            .set("com.docker.network.bridge.gateway_mode_ipv6=routed")
            .unwrap();
        s.create_network(routed, st()).unwrap();
        let e = s.connect(ep("a", "web", 1), st()).unwrap().clone();
        let cfg = dataplane_config(&s, Some(&uplink()), NatConfig::default());
        let tables = Tables::build(&cfg, None).expect("valid dataplane config");
        let nc = cfg.networks.iter().find(|n| n.name == "a").unwrap();
        assert_eq!(
            nc.ipv6,
            Some(NetworkV6 {
                subnet: "fd00:9::/64".parse().unwrap(),
                gateway: "fd00:9::1".parse().unwrap(),
                routed: false,
            })
        );
        let r = cfg.networks.iter().find(|n| n.name == "r").unwrap();
        assert!(r.ipv6.unwrap().routed);
        assert_eq!(
            cfg.uplinks6,
            [UplinkV6 {
                port: UPLINK_PORT,
                ip: "2001:db8:1::2/64".parse().unwrap(),
                next_hop: Some("2001:db8:1::1".parse().unwrap()),
            }]
        );
        assert!(matches!(
            tables.port(e.port).unwrap().config.role,
            PortRole::Endpoint { ipv6: Some(ip), .. } if ip == "fd00:9::2".parse::<std::net::Ipv6Addr>().unwrap()
        ));
        let bridge = cfg.networks.iter().find(|n| n.name == "bridge").unwrap();
        assert_eq!(bridge.ipv6, None, "v4-only networks stay v4 only");
    }

    #[test]
    fn compiled_state_passes_the_dataplanes_validation() {
        let (mut s, mut st) = fresh();
        let mut a = net("a", Some("10.5.0.0/24"));
        a.options.set("vlan=10").unwrap();
        a.options.set("mtu=1400").unwrap();
        a.options.set("icc=false").unwrap();
        a.options.set("max_flows_per_endpoint=500").unwrap();
        s.create_network(a, st()).unwrap();
        let mut i = net("i", None);
        i.internal = true;
        s.create_network(i, st()).unwrap();
        let mut web = ep("a", "web", 1);
        web.publish = vec!["8080:80".parse().unwrap(), "5353:53/udp".parse().unwrap()];
        let web = s.connect(web, st()).unwrap().clone();
        s.connect(ep("i", "db", 2), st()).unwrap();
        let b = s.connect(ep("bridge", "x", 3), st()).unwrap().clone();

        let cfg = dataplane_config(&s, Some(&uplink()), NatConfig::default());
        let tables = Tables::build(&cfg, None).expect("valid dataplane config");
        assert_eq!(
            cfg.networks.len(),
            3,
            "host and none have no dataplane state"
        );
        let na = s.network("a").unwrap();
        let nca = cfg.networks.iter().find(|n| n.name == "a").unwrap();
        assert_eq!(nca.id, na.dataplane_id);
        assert_eq!((nca.vlan, nca.mtu, nca.icc), (10, 1400, false));
        assert_eq!(nca.max_flows_per_endpoint, Some(500));
        assert!(
            cfg.networks
                .iter()
                .find(|n| n.name == "i")
                .unwrap()
                .internal
        );
        let port = tables.port(web.port).unwrap();
        assert_eq!(
            port.config.role,
            PortRole::Endpoint {
                network: na.dataplane_id,
                vlan: 10,
                mac: web.mac,
                ipv4: web.ip,
                ipv6: None,
            }
        );
        assert_eq!(port.config.name, web.host_ifname);
        let t = tables
            .forwards()
            .lookup(L4Proto::Tcp, Ipv4Addr::new(192, 0, 2, 10), 8080)
            .unwrap();
        assert_eq!((t.ip, t.port), (web.ip.unwrap(), 80));
        assert!(tables
            .forwards()
            .lookup(L4Proto::Udp, Ipv4Addr::new(192, 0, 2, 10), 5353)
            .is_some());
        assert_eq!(tables.uplink().unwrap().port, UPLINK_PORT);

        s.disconnect("a", "web").unwrap();
        let cfg2 = dataplane_config(&s, Some(&uplink()), NatConfig::default());
        Tables::build(&cfg2, Some(&tables)).unwrap();
        let id_of = |c: &Config, name: &str| c.ports.iter().find(|p| p.name == name).map(|p| p.id);
        assert_eq!(
            id_of(&cfg2, &b.host_ifname),
            Some(b.port),
            "port ids stable"
        );
        assert_eq!(id_of(&cfg2, &web.host_ifname), None);
        assert!(cfg2.forwards.is_empty());
    }

    #[test]
    fn macvlan_networks_bridge_onto_their_parent() {
        let (mut s, mut st) = fresh();
        let mut tagged = net("m10", Some("10.8.0.0/24"));
        tagged.driver = Driver::Macvlan;
        tagged.options.set("parent=eth1.10").unwrap();
        let m10 = s.create_network(tagged, st()).unwrap().clone();
        let mut plain = net("m", Some("10.9.0.0/24"));
        plain.driver = Driver::Macvlan;
        plain.options.set("parent=eth2").unwrap();
        let m = s.create_network(plain, st()).unwrap().clone();
        let e = s.connect(ep("m10", "a", 1), st()).unwrap().clone();
        assert_ne!(
            Some(e.port),
            m10.parent_port,
            "parents and endpoints share the port space"
        );
        let mut published = ep("m", "b", 2);
        published.publish = vec!["8080:80".parse().unwrap()];
        assert!(matches!(
            s.connect(published, st()),
            Err(crate::state::StateError::PublishOnMacvlan(_))
        ));

        let cfg = dataplane_config(&s, Some(&uplink()), NatConfig::default());
        Tables::build(&cfg, None).expect("valid dataplane config");
        let nc = cfg.networks.iter().find(|n| n.name == "m10").unwrap();
        assert!(nc.external_gateway && nc.vlan == 10);
        let parent = cfg
            .ports
            .iter()
            .find(|p| Some(p.id) == m10.parent_port)
            .unwrap();
        assert_eq!(parent.name, "eth1");
        assert_eq!(
            parent.role,
            PortRole::Trunk {
                network: m10.dataplane_id,
                allowed: vec![10],
                native: None
            },
            "sluice tags the parent's frames itself (no 8021q here)"
        );
        let endpoint = cfg.ports.iter().find(|p| p.id == e.port).unwrap();
        assert!(matches!(endpoint.role, PortRole::Endpoint { vlan: 10, .. }));
        let parent = cfg
            .ports
            .iter()
            .find(|p| Some(p.id) == m.parent_port)
            .unwrap();
        assert_eq!(
            (parent.name.as_str(), &parent.role),
            (
                "eth2",
                &PortRole::Access {
                    network: m.dataplane_id,
                    vlan: 0
                }
            )
        );
    }

    #[test]
    fn without_uplink_there_is_no_uplink_port() {
        let s = State::with_defaults(stamps());
        let cfg = dataplane_config(&s, None, NatConfig::default());
        assert!(cfg.uplink.is_none() && cfg.ports.is_empty());
        assert_eq!(cfg.networks.len(), 1);
        Tables::build(&cfg, None).unwrap();
    }

    #[derive(Clone, Debug)]
    enum Op {
        Create(u8, Option<u8>, bool),
        Connect(u8, u8, Option<u8>, Option<u16>),
        Disconnect(u8, u8),
        Remove(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..4, proptest::option::of(0u8..4), any::<bool>())
                .prop_map(|(n, s, i)| Op::Create(n, s, i)),
            (
                0u8..5,
                0u8..6,
                proptest::option::of(0u8..8),
                proptest::option::of(8000u16..8004)
            )
                .prop_map(|(n, e, ip, p)| Op::Connect(n, e, ip, p)),
            (0u8..5, 0u8..6).prop_map(|(n, e)| Op::Disconnect(n, e)),
            (0u8..5).prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// Whatever sequence of requests the state accepts compiles into a configuration the
        /// dataplane accepts: the control plane's rules are at least as strict.
        #[test]
        fn accepted_states_always_compile(ops in proptest::collection::vec(op(), 0..40)) {
            let mut s = State::with_defaults(stamps());
            let mut st = stamps();
            for _ in 0..3 {
                st();
            }
            let name = |n: u8| if n == 4 { "bridge".to_string() } else { format!("n{n}") };
            for o in ops {
                let _ = match o {
                    Op::Create(n, subnet, internal) => {
                        let subnets = ["10.0.0.0/29", "10.0.0.0/24", "10.0.1.0/24", "10.0.0.0/16"];
                        let mut spec = net(&name(n), subnet.map(|i| subnets[usize::from(i)]));
                        spec.internal = internal;
                        s.create_network(spec, st()).map(|_| ())
                    }
                    Op::Connect(n, e, ip, port) => {
                        let mut spec = ep(&name(n), &format!("e{e}"), u32::from(e));
                        spec.ip = ip.map(|i| {
                            let base = s.network(&name(n)).ok().and_then(|n| n.subnet);
                            let base = base.map_or(0, |b| u32::from(b.network()));
                            Ipv4Addr::from(base + u32::from(i))
                        });
                        spec.publish = port
                            .map(|p| format!("{p}:80").parse().unwrap())
                            .into_iter()
                            .collect();
                        s.connect(spec, st()).map(|_| ())
                    }
                    Op::Disconnect(n, e) => s.disconnect(&name(n), &format!("e{e}")).map(|_| ()),
                    Op::Remove(n) => s.remove_network(&name(n)).map(|_| ()),
                };
                let cfg = dataplane_config(&s, Some(&uplink()), NatConfig::default());
                let built = Tables::build(&cfg, None);
                prop_assert!(built.is_ok(), "{:?}", built.err());
            }
        }
    }
}
