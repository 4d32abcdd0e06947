//! The CNI result (spec: "Success" of ADD) and the VERSION answer, and how sluiced's view of an
//! endpoint becomes one: a pure function of the endpoint, its network and the resolver it got.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::error::{CniError, CHECK_MISMATCH};
use sluice_api::api::EndpointView;
use sluice_api::files::ResolvConf;
use sluice_api::model::NetworkInspect;

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
    /// The endpoint's address.
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    /// The default route via the gateway (routed networks only).
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

/// The network's gateway as `inspect` shows it.
pub fn gateway_of(net: &NetworkInspect) -> Option<Ipv4Addr> {
    net.ipam.config.first()?.gateway.parse().ok()
}

/// The result of an endpoint `ep` on `net` whose sandbox is `netns`, with the resolver
/// configuration sluiced wrote for it (`dns`, if it could be read).
pub fn build(
    version: &str,
    ep: &EndpointView,
    net: &NetworkInspect,
    netns: &str,
    dns: Option<&ResolvConf>,
) -> CniResult {
    let gateway = gateway_of(net);
    let routes = match gateway {
        Some(gw) if !net.internal => vec![Route {
            dst: "0.0.0.0/0".into(),
            gw: Some(gw.to_string()),
        }],
        _ => Vec::new(),
    };
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
        ips: vec![IpConfig {
            address: ep.ipv4.clone(),
            gateway: gateway.map(|g| g.to_string()),
            interface: Some(1),
        }],
        routes,
        dns,
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
            enable_ipv6: false,
            ipam: IpamView {
                driver: "default".into(),
                config: vec![IpamConfigView {
                    subnet: "10.7.0.0/24".into(),
                    gateway: "10.7.0.1".into(),
                    ip_range: None,
                    auxiliary_addresses: Default::default(),
                }],
            },
            internal,
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
    fn internal_networks_get_no_default_route() {
        let r = build("1.1.0", &ep(), &net(true), "/run/netns/c1", None);
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
