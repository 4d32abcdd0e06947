//! The CNI result (spec: "Success" of ADD) and the VERSION answer, and how sluiced's view of an
//! endpoint becomes one: a pure function of the endpoint, its network and the resolver it got.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::error::{CniError, CHECK_MISMATCH};
use sluice_api::api::EndpointView;
use sluice_api::files::ResolvConf;
use sluice_api::model::NetworkInspect;
use sluice_dataplane::config::Ipv4Cidr;
use sluice_netlink::SandboxRoute;

/// One interface of the result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Its MAC, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The namespace path for the container side; absent for the host side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// One address of the result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Address with prefix (`10.1.0.2/24`).
    pub address: String,
    /// The subnet's gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces` of the interface carrying it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// One route of the result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination prefix.
    pub dst: String,
    /// Next hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// The resolver configuration of the result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Nameservers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    fn is_empty(&self) -> bool {
        self.nameservers.is_empty() && self.search.is_empty() && self.options.is_empty()
    }
}

/// ADD's result, also what CHECK and DEL get back as `prevResult`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    /// The configuration's version.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Host side first, then the container side.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// The endpoint's addresses: v4, then v6 on a dual-stack network.
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    /// The routes this attachment created: the default routes via the gateways (`0.0.0.0/0`,
    /// and `::/0` on a dual-stack network) when it was the sandbox's first routed network,
    /// else none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// The resolver sluice set up for the endpoint, if any.
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

/// The VERSION answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// The version of this answer.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Every configuration version the plugin accepts.
    #[serde(rename = "supportedVersions")]
    pub supported_versions: Vec<String>,
}

impl VersionInfo {
    /// sluice-cni's versions.
    pub fn ours() -> VersionInfo {
        VersionInfo {
            cni_version: super::LATEST_VERSION.to_string(),
            supported_versions: super::SUPPORTED_VERSIONS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

/// The gateway of endpoint `ep` on `net`: the endpoint's view names it (inspect's `IPAM.Config`
/// leaves out a gateway the user did not give, as docker does); older daemons' inspect.
pub fn gateway_of(ep: &EndpointView, net: &NetworkInspect) -> Option<Ipv4Addr> {
    let g = match &ep.gateway {
        Some(g) => g,
        None => net.ipam.config.first()?.gateway.as_ref()?,
    };
    g.parse().ok()
}

/// The v6 gateway of endpoint `ep` on a dual-stack `net`, found as [`gateway_of`] finds the v4 one.
pub fn gateway6_of(ep: &EndpointView, net: &NetworkInspect) -> Option<Ipv6Addr> {
    ep.ipv6.as_ref()?;
    match &ep.gateway6 {
        Some(g) => g.parse().ok(),
        None => net
            .ipam
            .config
            .iter()
            .find_map(|c| c.gateway.as_deref()?.parse().ok()),
    }
}

/// The result of an endpoint `ep` on `net` whose sandbox is `netns`, with the resolver
/// configuration sluiced wrote for it (`dns`, if it could be read). Its routes are those
/// connect reports it installed (`ep.default_route`), nothing more.
pub fn build(
    version: &str,
    ep: &EndpointView,
    net: &NetworkInspect,
    netns: &str,
    dns: Option<&ResolvConf>,
) -> CniResult {
    let gateway = gateway_of(ep, net);
    let gateway6 = gateway6_of(ep, net);
    // connect sets the v6 default route together with the v4 one.
    let route6 = gateway6
        .filter(|_| ep.default_route.is_some())
        .map(|g| Route {
            dst: "::/0".into(),
            gw: Some(g.to_string()),
        });
    let routes = ep
        .default_route
        .iter()
        .filter(|gw| !gw.contains(':'))
        .map(|gw| Route {
            dst: "0.0.0.0/0".into(),
            gw: Some(gw.clone()),
        })
        .chain(route6)
        .collect();
    let dns = dns.map_or_else(Dns::default, |r| Dns {
        nameservers: r.nameservers.iter().map(ToString::to_string).collect(),
        search: r.search.clone(),
        options: r.options.clone(),
    });
    CniResult {
        cni_version: version.to_string(),
        interfaces: vec![
            Interface {
                name: ep.host_ifname.clone(),
                mac: None,
                sandbox: None,
            },
            Interface {
                name: ep.ifname.clone(),
                mac: Some(ep.mac.clone()),
                sandbox: Some(netns.to_string()),
            },
        ],
        ips: (!ep.ipv4.is_empty())
            .then(|| IpConfig {
                address: ep.ipv4.clone(),
                gateway: gateway.map(|g| g.to_string()),
                interface: Some(1),
            })
            .into_iter()
            .chain(ep.ipv6.iter().map(|a| IpConfig {
                address: a.clone(),
                gateway: gateway6.map(|g| g.to_string()),
                interface: Some(1),
            }))
            .collect(),
        routes,
        dns,
    }
}

impl Route {
    /// Whether the kernel's route `r` is this one: same destination and, if this one names a
    /// next hop, the same next hop.
    pub fn is(&self, r: &SandboxRoute) -> bool {
        let dst = self.dst.parse::<Ipv4Cidr>().ok();
        let gw = self.gw.as_deref().map(str::parse::<Ipv4Addr>);
        dst.is_some_and(|d| d.addr == r.dst.addr && d.prefix == r.dst.prefix)
            && match gw {
                None => true,
                Some(Ok(g)) => r.gateway == Some(g),
                Some(Err(_)) => false,
            }
    }
}

/// What CHECK compares: the container interface's name, MAC and address in a result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// Interface name in the sandbox.
    pub ifname: String,
    /// MAC, lower case.
    pub mac: String,
    /// Address with prefix.
    pub address: String,
}

impl CniResult {
    /// The first route of this result that is not among `have` (the routes through the
    /// attachment's interface), as the reference bridge plugin's CHECK looks for each. Only
    /// v4 routes are compared: `have` holds the sandbox's v4 routes.
    pub fn missing_route(&self, have: &[SandboxRoute]) -> Option<&Route> {
        self.routes
            .iter()
            .filter(|r| !r.dst.contains(':'))
            .find(|r| !have.iter().any(|h| r.is(h)))
    }

    /// The sandbox interface called `ifname` and its address, as this result records them.
    pub fn expected(&self, ifname: &str) -> Result<Expected, CniError> {
        let mismatch = |d: String| CniError::new(CHECK_MISMATCH, "prevResult does not match", d);
        let (idx, iface) = self
            .interfaces
            .iter()
            .enumerate()
            .find(|(_, i)| i.name == ifname && i.sandbox.is_some())
            .ok_or_else(|| mismatch(format!("no sandbox interface {ifname} in prevResult")))?;
        let ip = self
            .ips
            .iter()
            .find(|ip| ip.interface == Some(idx))
            .ok_or_else(|| mismatch(format!("no address of {ifname} in prevResult")))?;
        Ok(Expected {
            ifname: ifname.to_string(),
            mac: iface.mac.clone().unwrap_or_default().to_ascii_lowercase(),
            address: ip.address.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_api::model::{IpamConfigView, IpamView, Sandbox};

    fn net(internal: bool) -> NetworkInspect {
        NetworkInspect {
            name: "n".into(),
            id: "ab".repeat(32),
            created: String::new(),
            scope: "local".into(),
            driver: "bridge".into(),
            enable_ipv4: true,
            enable_ipv6: false,
            ipam: IpamView {
                driver: "default".into(),
                options: Default::default(),
                config: vec![IpamConfigView {
                    subnet: "10.7.0.0/24".into(),
                    gateway: Some("10.7.0.1".into()),
                    ip_range: None,
                    auxiliary_addresses: Default::default(),
                }],
            },
            internal,
            swarm: Default::default(),
            containers: Default::default(),
            options: Default::default(),
            labels: Default::default(),
        }
    }

    fn ep() -> EndpointView {
        EndpointView {
            name: "cni-c1-eth0".into(),
            id: "cd".repeat(32),
            network: "n".into(),
            sandbox: Sandbox::Netns("/run/netns/c1".into()),
            ipv4: "10.7.0.2/24".into(),
            ipv6: None,
            mac: "02:42:0a:07:00:02".into(),
            ifname: "eth0".into(),
            host_ifname: "slcdcdcdcdcd".into(),
            ports: vec![],
            aliases: vec![],
            files: None,
            default_route: Some("10.7.0.1".into()),
            gateway: None,
            static_ipv4: None,
            gateway6: None,
            static_ipv6: None,
        }
    }

    #[test]
    fn result_has_both_interfaces_address_route_and_dns() {
        let dns = ResolvConf::parse("nameserver 127.0.0.11\noptions ndots:0\n");
        let r = build("1.0.0", &ep(), &net(false), "/run/netns/c1", Some(&dns));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "cniVersion": "1.0.0",
                "interfaces": [
                    {"name": "slcdcdcdcdcd"},
                    {"name": "eth0", "mac": "02:42:0a:07:00:02", "sandbox": "/run/netns/c1"}
                ],
                "ips": [{"address": "10.7.0.2/24", "gateway": "10.7.0.1", "interface": 1}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.7.0.1"}],
                "dns": {"nameservers": ["127.0.0.11"], "options": ["ndots:0"]}
            })
        );
        let back: CniResult = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
        let e = back.expected("eth0").unwrap();
        assert_eq!(
            (e.mac.as_str(), e.address.as_str()),
            ("02:42:0a:07:00:02", "10.7.0.2/24")
        );
        assert_eq!(back.expected("eth1").unwrap_err().code, CHECK_MISMATCH);
    }

    #[test]
    fn dual_stack_results_have_both_families() {
        let mut n = net(false);
        n.enable_ipv6 = true;
        n.ipam.config.push(IpamConfigView {
            subnet: "fd00:7::/64".into(),
            gateway: Some("fd00:7::1".into()),
            ip_range: None,
            auxiliary_addresses: Default::default(),
        });
        let e = EndpointView {
            ipv6: Some("fd00:7::2/64".into()),
            ..ep()
        };
        let r = build("1.1.0", &e, &n, "/run/netns/c1", None);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v["ips"],
            serde_json::json!([
                {"address": "10.7.0.2/24", "gateway": "10.7.0.1", "interface": 1},
                {"address": "fd00:7::2/64", "gateway": "fd00:7::1", "interface": 1}
            ])
        );
        assert_eq!(
            v["routes"],
            serde_json::json!([{"dst": "0.0.0.0/0", "gw": "10.7.0.1"}, {"dst": "::/0", "gw": "fd00:7::1"}])
        );
        assert_eq!(r.expected("eth0").unwrap().address, "10.7.0.2/24");
        let default = SandboxRoute {
            dst: "0.0.0.0/0".parse().unwrap(),
            gateway: Some("10.7.0.1".parse().unwrap()),
        };
        assert_eq!(r.missing_route(&[default]), None, "v6 routes are not read");
        let second = EndpointView {
            default_route: None,
            ..e
        };
        let r = build("1.1.0", &second, &n, "/run/netns/c1", None);
        assert!(
            r.routes.is_empty(),
            "no v6 default route without the v4 one"
        );
        assert_eq!(r.ips.len(), 2);
    }

    #[test]
    fn v6_only_results_have_only_the_v6_address_and_route() {
        let mut n = net(false);
        n.enable_ipv4 = false;
        n.enable_ipv6 = true;
        n.ipam.config = vec![IpamConfigView {
            subnet: "fd00:7::/64".into(),
            gateway: Some("fd00:7::1".into()),
            ip_range: None,
            auxiliary_addresses: Default::default(),
        }];
        let e = EndpointView {
            ipv4: String::new(),
            ipv6: Some("fd00:7::2/64".into()),
            gateway: None,
            gateway6: Some("fd00:7::1".into()),
            default_route: Some("fd00:7::1".into()),
            ..ep()
        };
        let r = build("1.1.0", &e, &n, "/run/netns/c1", None);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v["ips"],
            serde_json::json!([{"address": "fd00:7::2/64", "gateway": "fd00:7::1", "interface": 1}])
        );
        assert_eq!(
            v["routes"],
            serde_json::json!([{"dst": "::/0", "gw": "fd00:7::1"}])
        );
        assert_eq!(r.expected("eth0").unwrap().address, "fd00:7::2/64");
        assert_eq!(r.missing_route(&[]), None);
    }

    #[test]
    fn routes_are_only_those_connect_installed() {
        let second = EndpointView {
            default_route: None,
            ..ep()
        };
        let r = build("1.1.0", &second, &net(false), "/run/netns/c1", None);
        assert!(r.routes.is_empty(), "a sandbox's second routed network");
        assert!(serde_json::to_value(&r).unwrap().get("routes").is_none());
        assert_eq!(r.ips[0].gateway.as_deref(), Some("10.7.0.1"));
    }

    #[test]
    fn check_finds_a_missing_route() {
        let r = build("1.1.0", &ep(), &net(false), "/run/netns/c1", None);
        let route = |dst: &str, gw: Option<&str>| SandboxRoute {
            dst: dst.parse().unwrap(),
            gateway: gw.map(|g| g.parse().unwrap()),
        };
        let subnet = route("10.7.0.0/24", None);
        let default = route("0.0.0.0/0", Some("10.7.0.1"));
        assert_eq!(r.missing_route(&[subnet, default]), None);
        assert_eq!(
            r.missing_route(&[subnet]).map(|r| r.dst.as_str()),
            Some("0.0.0.0/0"),
            "the default route was deleted"
        );
        let elsewhere = route("0.0.0.0/0", Some("10.7.0.9"));
        assert!(r.missing_route(&[subnet, elsewhere]).is_some());
        let none = build(
            "1.1.0",
            &EndpointView {
                default_route: None,
                ..ep()
            },
            &net(false),
            "/n",
            None,
        );
        assert_eq!(none.missing_route(&[]), None);
    }

    #[test]
    fn internal_networks_get_no_default_route() {
        let internal = EndpointView {
            default_route: None,
            ..ep()
        };
        let r = build("1.1.0", &internal, &net(true), "/run/netns/c1", None);
        assert!(r.routes.is_empty());
        assert_eq!(r.ips[0].gateway.as_deref(), Some("10.7.0.1"));
        assert!(serde_json::to_value(&r).unwrap().get("dns").is_none());
    }

    #[test]
    fn version_info_lists_what_parse_accepts() {
        let v = serde_json::to_value(VersionInfo::ours()).unwrap();
        assert_eq!(
            v["supportedVersions"],
            serde_json::json!(["1.0.0", "1.1.0"])
        );
        assert_eq!(v["cniVersion"], "1.1.0");
    }
}
