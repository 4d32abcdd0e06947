//! The IPv6 side of the docker-like topology ([`DockerLikeSpec::ipv6`]): a ULA /64 beside
//! docker's v4 subnet, a documentation prefix on the uplink, ip6tables NAT66 on the kernel
//! forwarder (docker 27's default: MASQUERADE out, DNAT of the published ports) and the
//! matching v6 part of sluice's configuration. Everything stays inside the lab's namespaces.

use std::net::Ipv6Addr;
use std::time::Duration;

use sluice_dataplane::config::{Config, Ipv6Cidr, NetworkV6, PortRole, UplinkV6};
use sluice_dataplane::frame::PortId;

use super::docker_like::{DockerLikeSpec, RuleAddrs, BRIDGE_IF, OUTSIDE, SW, UPLINK_IF};
use super::{Lab, Result};

impl DockerLikeSpec {
    /// The network's v6 prefix (a ULA /64, as docker's default pools hand out).
    pub fn subnet6(&self) -> Ipv6Cidr {
        Ipv6Cidr {
            addr: Ipv6Addr::new(0xfd00, 0x17, 0, 0, 0, 0, 0, 0),
            prefix: 64,
        }
    }

    /// The v6 gateway address (the bridge's, or the one sluice answers for).
    pub fn gateway6(&self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.subnet6().network()) + 1)
    }

    /// The v6 address of endpoint number `i` (::2, ::3, ...).
    pub fn endpoint_ip6(&self, i: usize) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.subnet6().network()) + i as u128 + 2)
    }

    /// The v6 address of the named endpoint.
    pub fn ip6_of(&self, endpoint: &str) -> Option<Ipv6Addr> {
        self.endpoints
            .iter()
            .position(|e| e == endpoint)
            .map(|i| self.endpoint_ip6(i))
    }

    /// The forwarder's v6 uplink address and prefix.
    pub fn uplink_ip6(&self) -> Ipv6Cidr {
        Ipv6Cidr {
            addr: Ipv6Addr::new(0x2001, 0xdb8, 0x18, 0, 0, 0, 0, 1),
            prefix: 64,
        }
    }

    /// The outside namespace's v6 address (also the uplink's v6 next hop).
    pub fn outside_ip6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 0x18, 0, 0, 0, 0, 2)
    }

    /// Adds the v6 side to sluice's configuration: the network's prefix and gateway (NAT66),
    /// each endpoint's v6 address and the uplink's v6 address (published ports without a
    /// host address are reached on both families).
    pub(super) fn add_v6(&self, cfg: &mut Config, uplink: PortId) {
        for n in &mut cfg.networks {
            n.ipv6 = Some(NetworkV6 {
                subnet: self.subnet6(),
                gateway: self.gateway6(),
                routed: false,
            });
        }
        for (i, p) in cfg.ports.iter_mut().enumerate() {
            if let PortRole::Endpoint { ipv6, .. } = &mut p.role {
                *ipv6 = Some(self.endpoint_ip6(i));
            }
        }
        cfg.uplinks6.push(UplinkV6 {
            port: uplink,
            ip: self.uplink_ip6(),
            next_hop: Some(self.outside_ip6()),
        });
    }

    /// The ip6tables rules docker 27 installs for a dual-stack network (run inside `sw`
    /// only): the same shape as [`DockerLikeSpec::kernel_iptables`] over the v6 addresses.
    pub fn kernel_ip6tables(&self) -> Result<Vec<Vec<String>>> {
        self.kernel_rules(&RuleAddrs {
            subnet: self.subnet6().to_string(),
            uplink_host: format!("{}/128", self.uplink_ip6().addr),
            endpoint: |s, e| {
                s.ip6_of(e)
                    .map(|ip| (format!("{ip}/128"), format!("[{ip}]")))
            },
        })
    }

    /// Gives the endpoints and the outside their v6 addresses and default routes.
    pub(super) fn address_v6(&self, lab: &Lab) -> Result<()> {
        let prefix = self.subnet6().prefix;
        let gw = self.gateway6().to_string();
        for (i, e) in self.endpoints.iter().enumerate() {
            lab.addr6(e, "eth0", &format!("{}/{prefix}", self.endpoint_ip6(i)))?;
            lab.ip(
                e,
                &["-6", "route", "add", "default", "via", &gw, "dev", "eth0"],
            )?;
        }
        let up = self.uplink_ip6().prefix;
        lab.addr6(OUTSIDE, "eth0", &format!("{}/{up}", self.outside_ip6()))
    }

    /// The kernel forwarder's v6 side: the bridge holds the v6 gateway, the uplink its v6
    /// address, v6 forwarding on and docker's ip6tables rules.
    pub(super) fn fill_kernel_v6(&self, lab: &Lab) -> Result<()> {
        let gw = format!("{}/{}", self.gateway6(), self.subnet6().prefix);
        lab.addr6(SW, BRIDGE_IF, &gw)?;
        let up = self.uplink_ip6();
        lab.addr6(SW, UPLINK_IF, &format!("{}/{}", up.addr, up.prefix))?;
        let next = self.outside_ip6().to_string();
        lab.ip(SW, &["-6", "route", "add", "default", "via", &next])?;
        lab.sysctl(SW, "net.ipv6.conf.all.forwarding", "1")?;
        for rule in self.kernel_ip6tables()? {
            let mut args = vec!["ip6tables", "-w"];
            args.extend(rule.iter().map(String::as_str));
            lab.exec(SW, &args)?;
        }
        Ok(())
    }

    /// Waits until each endpoint pings the v6 gateway and the outside the uplink's v6 address.
    pub(super) fn wait_ready_v6(&self, lab: &Lab, timeout: Duration) -> Result<()> {
        for e in &self.endpoints {
            lab.wait_ping6(e, self.gateway6(), timeout)?;
        }
        lab.wait_ping6(OUTSIDE, self.uplink_ip6().addr, timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::Publish;
    use sluice_dataplane::config::L4Proto;

    fn spec() -> DockerLikeSpec {
        DockerLikeSpec {
            endpoints: vec!["a".into(), "b".into()],
            publish: vec![Publish {
                proto: L4Proto::Tcp,
                host_port: 8080,
                endpoint: "b".into(),
                target_port: 80,
            }],
            ipv6: true,
            ..DockerLikeSpec::default()
        }
    }

    #[test]
    fn v6_addressing() {
        let s = spec();
        assert_eq!(s.gateway6(), "fd00:17::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(s.ip6_of("b"), Some("fd00:17::3".parse().unwrap()));
        assert_eq!(s.ip6_of("zz"), None);
        assert!(s.subnet6().contains(s.endpoint_ip6(1)));
        assert!(s.uplink_ip6().contains(s.outside_ip6()));
        assert!(!s.subnet6().overlaps(&s.uplink_ip6()));
    }

    #[test]
    fn sluice_config_is_dual_stack_only_when_asked() {
        let s = spec();
        let cfg = s.sluice_config().unwrap();
        let v6 = cfg.networks[0].ipv6.unwrap();
        assert_eq!(
            (v6.subnet, v6.gateway, v6.routed),
            (s.subnet6(), s.gateway6(), false)
        );
        assert!(matches!(
            cfg.ports[1].role,
            PortRole::Endpoint { ipv6: Some(ip), .. } if ip == s.endpoint_ip6(1)
        ));
        assert_eq!(cfg.uplinks6.len(), 1);
        assert_eq!(cfg.uplinks6[0].port, cfg.uplink.as_ref().unwrap().port);
        assert_eq!(cfg.uplinks6[0].next_hop, Some(s.outside_ip6()));
        let v4 = DockerLikeSpec {
            ipv6: false,
            ..spec()
        };
        let cfg = v4.sluice_config().unwrap();
        assert!(cfg.networks[0].ipv6.is_none() && cfg.uplinks6.is_empty());
    }

    #[test]
    fn kernel_nat66_rules_are_dockers() {
        let rules: Vec<String> = spec()
            .kernel_ip6tables()
            .unwrap()
            .iter()
            .map(|r| r.join(" "))
            .collect();
        assert!(
            rules.contains(&"-t nat -A POSTROUTING -s fd00:17::/64 ! -o br0 -j MASQUERADE".into())
        );
        assert!(rules.contains(
            &"-t nat -A PREROUTING -d 2001:db8:18::1/128 -p tcp --dport 8080 -j DNAT --to-destination [fd00:17::3]:80"
                .into()
        ));
        assert!(rules.contains(
            &"-A FORWARD -d fd00:17::3/128 ! -i br0 -o br0 -p tcp --dport 80 -j ACCEPT".into()
        ));
        assert!(rules.contains(&"-P FORWARD DROP".into()));
    }
}
