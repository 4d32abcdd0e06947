//! The IPv6 side of networks and endpoints (dual stack, `--ipv6`): a network's v6 prefix and
//! gateway (given, or a ULA /64 of the default pool), unique among networks, and its endpoints'
//! v6 addresses from a sparse [`Pool6`], static (`--ip6`) or allocated.

use std::net::Ipv6Addr;

use sluice_dataplane::config::Ipv6Cidr;

use super::{State, StateError};
use crate::ipam6::{next_free_subnet6, Pool6};
use crate::model::{Driver, EndpointSpec, Network, NetworkSpec};

/// The v6 pool of a dual-stack network, as its record says.
pub(super) fn pool6_of(n: &Network) -> Option<Pool6> {
    Some(Pool6::new(
        n.subnet6?,
        n.spec.ip_range6,
        n.gateway6?,
        &n.spec.aux_addresses6,
    ))
}

/// The rules of an IPv6-only network (`--ipv4=false`): it needs `--ipv6` and the bridge
/// driver, and takes no v4 addressing.
pub(super) fn check_v6_only(spec: &NetworkSpec) -> Result<(), StateError> {
    if !spec.enable_ipv6 {
        return Err(StateError::NeedsIpv6("--ipv4=false"));
    }
    if spec.driver != Driver::Bridge {
        return Err(StateError::V6OnlyNeedsBridge(spec.driver.as_str().into()));
    }
    let given = [
        (spec.subnet.is_some(), "an IPv4 --subnet"),
        (spec.gateway.is_some(), "an IPv4 --gateway"),
        (spec.ip_range.is_some(), "an IPv4 --ip-range"),
        (!spec.aux_addresses.is_empty(), "an IPv4 --aux-address"),
    ];
    match given.into_iter().find(|(given, _)| *given) {
        Some((_, what)) => Err(StateError::Ipv4Disabled(what)),
        None => Ok(()),
    }
}

impl State {
    /// The v6 subnet and gateway a new network gets (none when IPv6 is not enabled), after
    /// checking the v6 rules: given values need `--ipv6`, the prefix leaves room for endpoints,
    /// the gateway and range lie inside it, and it overlaps no other network's.
    pub(super) fn addressing6(
        &self,
        spec: &NetworkSpec,
    ) -> Result<Option<(Ipv6Cidr, Ipv6Addr)>, StateError> {
        if !spec.enable_ipv6 {
            return match (spec.subnet6, spec.gateway6, spec.ip_range6) {
                (None, None, None) if spec.aux_addresses6.is_empty() => Ok(None),
                _ => Err(StateError::NeedsIpv6(
                    "an IPv6 --subnet, --gateway, --ip-range or --aux-address",
                )),
            };
        }
        let subnet = match spec.subnet6 {
            Some(s) => Ipv6Cidr {
                addr: s.network(),
                prefix: s.prefix,
            },
            None => {
                if spec.gateway6.is_some()
                    || spec.ip_range6.is_some()
                    || !spec.aux_addresses6.is_empty()
                {
                    return Err(StateError::NeedsSubnet(
                        "an IPv6 --gateway, --ip-range or --aux-address",
                    ));
                }
                let used: Vec<Ipv6Cidr> =
                    self.networks.values().filter_map(|n| n.subnet6).collect();
                next_free_subnet6(used.iter()).ok_or(StateError::PoolsExhausted)?
            }
        };
        let bad = |what, value: String| StateError::NotInSubnet6 {
            what,
            value,
            subnet,
        };
        if subnet.prefix > 126 {
            return Err(bad("subnet", subnet.to_string()));
        }
        let others = self.networks.values().filter_map(|n| Some((n, n.subnet6?)));
        if let Some((other, other_subnet)) = others.into_iter().find(|(_, o)| o.overlaps(&subnet)) {
            return Err(StateError::Overlap6 {
                subnet,
                other: other.spec.name.clone(),
                other_subnet,
            });
        }
        let first = Ipv6Addr::from(u128::from(subnet.network()) + 1);
        let gateway = spec.gateway6.unwrap_or(first);
        if !subnet.contains(gateway) || gateway == subnet.network() {
            return Err(bad("gateway", gateway.to_string()));
        }
        for (name, ip) in &spec.aux_addresses6 {
            if !subnet.contains(*ip) || *ip == gateway || *ip == subnet.network() {
                return Err(bad("auxiliary address", format!("{name}={ip}")));
            }
        }
        if let Some(r) = spec.ip_range6 {
            if r.prefix < subnet.prefix || !subnet.contains(r.network()) {
                return Err(bad("ip range", r.to_string()));
            }
        }
        Ok(Some((subnet, gateway)))
    }

    /// The endpoint's v6 address (`--ip6`, or the pool's next free one) and the network's v6
    /// pool with it taken; none on a network without IPv6 (where `--ip6` is refused).
    pub(super) fn address6(
        &self,
        net_id: &str,
        net_name: &str,
        spec: &EndpointSpec,
    ) -> Result<Option<(Pool6, Ipv6Addr)>, StateError> {
        let Some(mut pool) = self.pools6.get(net_id).cloned() else {
            return match spec.ip6 {
                Some(_) => Err(StateError::NeedsIpv6("--ip6")),
                None => Ok(None),
            };
        };
        let ip = match spec.ip6 {
            Some(ip) => pool.claim(ip).map(|()| ip),
            None => pool.allocate(),
        }
        .map_err(|err| StateError::Ipam6 {
            network: net_name.to_string(),
            err,
        })?;
        Ok(Some((pool, ip)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam6::DEFAULT_POOL6;
    use crate::model::Stamp;
    use crate::state::tests::{ep, fresh, net};
    use sluice_dataplane::wire::MacAddr;

    fn dual(name: &str, subnet6: Option<&str>) -> NetworkSpec {
        NetworkSpec {
            enable_ipv6: true,
            subnet6: subnet6.map(|s| s.parse().unwrap()),
            ..net(name, None)
        }
    }

    fn ip(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn v6_only_networks_have_no_v4_and_refuse_v4_settings() {
        let (mut s, mut st) = fresh();
        let six = |name: &str| NetworkSpec {
            enable_ipv4: false,
            ..dual(name, Some("fd00:9::/64"))
        };
        let bad = |spec: NetworkSpec, s: &mut State, st: &mut dyn FnMut() -> Stamp| {
            s.create_network(spec, st()).unwrap_err().to_string()
        };
        let no_v6 = NetworkSpec {
            enable_ipv4: false,
            ..net("x", None)
        };
        assert_eq!(
            bad(no_v6, &mut s, &mut st),
            "--ipv4=false needs a network created with --ipv6"
        );
        let with_v4 = NetworkSpec {
            subnet: Some("10.9.0.0/24".parse().unwrap()),
            ..six("x")
        };
        assert_eq!(
            bad(with_v4, &mut s, &mut st),
            "an IPv4 --subnet needs IPv4, and the network is IPv6-only (--ipv4=false)"
        );
        let macvlan = NetworkSpec {
            driver: crate::model::Driver::Macvlan,
            ..six("x")
        };
        assert!(bad(macvlan, &mut s, &mut st).contains("only by the bridge driver"));
        let n = s.create_network(six("six"), st()).unwrap().clone();
        assert_eq!((n.subnet, n.gateway), (None, None));
        assert_eq!(n.gateway6, Some(ip("fd00:9::1")));
        let a = s.connect(ep("six", "a", 1), st()).unwrap().clone();
        assert_eq!((a.ip, a.ip6), (None, Some(ip("fd00:9::2"))));
        assert_eq!(a.mac, MacAddr::from_ipv6(ip("fd00:9::2")));
        assert_eq!(a.mac.to_string(), "02:42:fd:00:00:0b", "fd00:0009 ^ 2");
        let b = s.connect(ep("six", "b", 2), st()).unwrap().clone();
        assert_ne!(a.mac, b.mac);
        let static_v4 = EndpointSpec {
            ip: Some("10.9.0.5".parse().unwrap()),
            ..ep("six", "c", 3)
        };
        assert!(matches!(
            s.connect(static_v4, st()),
            Err(StateError::Ipv4Disabled("--ip"))
        ));
        let restored = State::from_parts(s.networks().cloned(), s.endpoints().cloned()).unwrap();
        assert_eq!(restored.pools6[&n.id].used(), s.pools6[&n.id].used());
        assert!(!restored.pools.contains_key(&n.id));
        s.disconnect("six", "a").unwrap();
        assert_eq!(
            s.connect(ep("six", "d", 4), st()).unwrap().ip6,
            Some(ip("fd00:9::2"))
        );
        let cfg = crate::compile::dataplane_config(&s, None, Default::default());
        let nc = cfg.networks.iter().find(|c| c.name == "six").unwrap();
        assert!(!nc.ipv4);
        assert_eq!(nc.ipv6.unwrap().gateway, ip("fd00:9::1"));
        sluice_dataplane::tables::Tables::build(&cfg, None).unwrap();
    }

    /// `-p 8080:80` on an IPv6-only network is published over v6 only (to the endpoint's v6
    /// address); a v4 host address is refused.
    #[test]
    fn v6_only_networks_publish_ports_over_v6() {
        use sluice_dataplane::config::L4Proto;
        use sluice_dataplane::portfwd::Endpoint6;
        let (mut s, mut st) = fresh();
        let six = NetworkSpec {
            enable_ipv4: false,
            ..dual("six", Some("fd00:9::/64"))
        };
        s.create_network(six, st()).unwrap();
        let on_v4 = EndpointSpec {
            publish: vec!["127.0.0.1:8080:80".parse().unwrap()],
            ..ep("six", "a", 1)
        };
        assert_eq!(
            s.connect(on_v4, st()).unwrap_err().to_string(),
            "a port published on an IPv4 host address needs IPv4, and the network is IPv6-only \
             (--ipv4=false)"
        );
        let web = EndpointSpec {
            publish: vec![
                "8080:80".parse().unwrap(),
                "[2001:db8::9]:53:53/udp".parse().unwrap(),
            ],
            ..ep("six", "web", 2)
        };
        let web = s.connect(web, st()).unwrap().clone();
        let cfg = crate::compile::dataplane_config(&s, None, Default::default());
        assert_eq!(cfg.forwards.len(), 2);
        assert!(cfg.forwards.iter().all(|f| f.target_ip.is_none()));
        let tables = sluice_dataplane::tables::Tables::build(&cfg, None).unwrap();
        let t = tables.forwards();
        let on = |proto, ip: &str, port| t.lookup6(proto, ip.parse().unwrap(), port);
        let tcp = on(L4Proto::Tcp, "2001:db8::1", 8080).unwrap();
        assert_eq!(
            (tcp.endpoint, tcp.port),
            (Endpoint6::V6(web.ip6.unwrap()), 80)
        );
        assert!(on(L4Proto::Udp, "2001:db8::9", 53).is_some());
        assert!(
            on(L4Proto::Udp, "2001:db8::1", 53).is_none(),
            "that address only"
        );
        let v4 = t.lookup(L4Proto::Tcp, "192.0.2.1".parse().unwrap(), 8080);
        assert!(v4.is_none(), "not over v4");
    }

    #[test]
    fn dual_stack_networks_allocate_release_and_restore() {
        let (mut s, mut st) = fresh();
        let n = s
            .create_network(dual("a", Some("fd00:9::/64")), st())
            .unwrap();
        assert_eq!(n.subnet6, Some("fd00:9::/64".parse().unwrap()));
        assert_eq!(n.gateway6, Some(ip("fd00:9::1")));
        assert!(n.subnet.is_some(), "dual stack keeps the v4 subnet");
        let a = s.connect(ep("a", "a", 1), st()).unwrap().clone();
        assert_eq!(a.ip6, Some(ip("fd00:9::2")));
        let b = EndpointSpec {
            ip6: Some(ip("fd00:9::77")),
            ..ep("a", "b", 2)
        };
        assert_eq!(s.connect(b, st()).unwrap().ip6, Some(ip("fd00:9::77")));
        let taken = EndpointSpec {
            ip6: Some(ip("fd00:9::77")),
            ..ep("a", "c", 3)
        };
        assert!(matches!(
            s.connect(taken, st()),
            Err(StateError::Ipam6 { .. })
        ));
        let mut restored =
            State::from_parts(s.networks().cloned(), s.endpoints().cloned()).unwrap();
        assert_eq!(
            restored.pools6[&a.network_id].used(),
            s.pools6[&a.network_id].used()
        );
        assert_eq!(
            restored.connect(ep("a", "e", 6), st()).unwrap().ip6,
            Some(ip("fd00:9::3")),
            "the restored pool skips the stored addresses"
        );
        s.disconnect("a", "a").unwrap();
        assert_eq!(
            s.connect(ep("a", "d", 4), st()).unwrap().ip6,
            Some(ip("fd00:9::2")),
            "a released address is handed out again"
        );
        assert_eq!(s.connect(ep("bridge", "v4", 5), st()).unwrap().ip6, None);
    }

    #[test]
    fn ipv6_without_a_subnet_takes_ula_64s_and_prefixes_do_not_overlap() {
        let (mut s, mut st) = fresh();
        let a = s.create_network(dual("a", None), st()).unwrap().clone();
        let b = s.create_network(dual("b", None), st()).unwrap().clone();
        let (a6, b6) = (a.subnet6.unwrap(), b.subnet6.unwrap());
        assert!(DEFAULT_POOL6.contains(a6.network()) && a6.prefix == 64);
        assert!(!a6.overlaps(&b6));
        let err = s
            .create_network(
                dual("c", Some(&a6.network().to_string().replace("::", "::/80"))),
                st(),
            )
            .unwrap_err();
        assert!(matches!(err, StateError::Overlap6 { ref other, .. } if other == "a"));
        s.remove_network("a").unwrap();
        assert!(s
            .create_network(dual("c", Some(&format!("{a6}"))), st())
            .is_ok());
    }

    #[test]
    fn v6_rules() {
        let (mut s, mut st) = fresh();
        let mut no_flag = net("a", None);
        no_flag.subnet6 = Some("fd00:1::/64".parse().unwrap());
        assert_eq!(
            s.create_network(no_flag, st()).unwrap_err(),
            StateError::NeedsIpv6("an IPv6 --subnet, --gateway, --ip-range or --aux-address")
        );
        let mut gw = dual("a", Some("fd00:1::/64"));
        gw.gateway6 = Some(ip("fd00:2::1"));
        assert!(matches!(
            s.create_network(gw, st()),
            Err(StateError::NotInSubnet6 {
                what: "gateway",
                ..
            })
        ));
        let mut range = dual("a", Some("fd00:1::/64"));
        range.ip_range6 = Some("fd00:1::/48".parse().unwrap());
        assert!(matches!(
            s.create_network(range, st()),
            Err(StateError::NotInSubnet6 {
                what: "ip range",
                ..
            })
        ));
        assert!(matches!(
            s.create_network(dual("a", Some("fd00:1::/127")), st()),
            Err(StateError::NotInSubnet6 { what: "subnet", .. })
        ));
        let mut ranged = dual("a", Some("fd00:1::/64"));
        ranged.gateway6 = Some(ip("fd00:1::fe"));
        ranged.ip_range6 = Some("fd00:1::100/120".parse().unwrap());
        s.create_network(ranged, st()).unwrap();
        assert_eq!(
            s.connect(ep("a", "x", 1), st()).unwrap().ip6,
            Some(ip("fd00:1::100"))
        );
        let v4_only = EndpointSpec {
            ip6: Some(ip("fd00:1::5")),
            ..ep("bridge", "y", 2)
        };
        assert_eq!(
            s.connect(v4_only, st()).unwrap_err(),
            StateError::NeedsIpv6("--ip6")
        );
    }

    #[test]
    fn v6_aux_addresses_are_never_handed_out_and_must_lie_in_the_subnet() {
        let (mut s, mut st) = fresh();
        let mut aux = dual("a", Some("fd00:3::/64"));
        aux.aux_addresses6.insert("router".into(), ip("fd00:3::2"));
        s.create_network(aux.clone(), st()).unwrap();
        assert_eq!(
            s.connect(ep("a", "x", 1), st()).unwrap().ip6,
            Some(ip("fd00:3::3"))
        );
        let on_aux = EndpointSpec {
            ip6: Some(ip("fd00:3::2")),
            ..ep("a", "y", 2)
        };
        assert!(matches!(
            s.connect(on_aux, st()),
            Err(StateError::Ipam6 { .. })
        ));
        let mut outside = dual("b", Some("fd00:4::/64"));
        outside.aux_addresses6.insert("r".into(), ip("fd00:5::2"));
        assert!(matches!(
            s.create_network(outside, st()),
            Err(StateError::NotInSubnet6 {
                what: "auxiliary address",
                ..
            })
        ));
        let mut no_v6 = net("c", None);
        no_v6.aux_addresses6.insert("r".into(), ip("fd00:6::2"));
        assert!(matches!(
            s.create_network(no_v6, st()),
            Err(StateError::NeedsIpv6(_))
        ));
    }
}
