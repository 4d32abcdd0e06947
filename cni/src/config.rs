//! The plugin's network configuration (a `bridge`-shaped object, spec: "Network configuration")
//! and the pure translations into sluice's API types: the network to create, the ports to
//! publish, the endpoint's name.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;
use sluice_dataplane::config::{Ipv4Cidr, Ipv6Cidr, L4Proto, PortRange};
use sluice_dataplane::wire::MacAddr;

use super::error::{
    CniError, DECODE_FAILURE, INCOMPATIBLE_VERSION, INVALID_CONFIG, UNSUPPORTED_FIELD,
};
use super::SUPPORTED_VERSIONS;
use sluice_api::api::{CNI_CREATOR, DEFAULT_SOCKET};
use sluice_api::model::{Driver, NetworkOptions, NetworkSpec};
use sluice_api::publish::PublishSpec;

/// The label put on networks the plugin creates, so an operator (and sluiced's restore) sees
/// where they came from.
pub use sluice_api::api::CREATED_BY_LABEL;

/// What every endpoint name the plugin makes starts with: GC only touches these.
pub const ENDPOINT_PREFIX: &str = "cni-";

/// Longest endpoint name made from the container id; longer ones are hashed.
const NAME_MAX: usize = 128;

/// The `ipam` object, read the way the `bridge` plugin's host-local configurations are written.
/// sluiced allocates the addresses itself; only the addressing is taken from here: one IPv4 and
/// one IPv6 subnet at most (a v6 subnet makes the network dual stack).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamConf {
    /// The IPAM plugin's name (`host-local`, ...): accepted and not executed.
    #[serde(default, rename = "type")]
    pub ipam_type: Option<String>,
    /// host-local's old single-subnet form.
    #[serde(default)]
    pub subnet: Option<String>,
    /// host-local's old single-subnet gateway.
    #[serde(default)]
    pub gateway: Option<String>,
    /// host-local's range sets.
    #[serde(default)]
    pub ranges: Vec<Vec<RangeConf>>,
}

/// One range of a range set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeConf {
    /// The subnet.
    pub subnet: String,
    /// Its gateway.
    #[serde(default)]
    pub gateway: Option<String>,
    /// Not supported (sluice's dynamic range is a CIDR).
    #[serde(default)]
    pub range_start: Option<String>,
    /// Not supported.
    #[serde(default)]
    pub range_end: Option<String>,
}

/// One entry of the `portMappings` capability (the `portmap` plugin's shape).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// The port on the host (sluice's uplink).
    pub host_port: i64,
    /// The port inside the container.
    pub container_port: i64,
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub protocol: Option<String>,
    /// The host address; empty or absent means every address.
    #[serde(default, rename = "hostIP")]
    pub host_ip: Option<String>,
}

/// `runtimeConfig`: the capability arguments the runtime passes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    /// Ports to publish.
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    /// podman's `aliases` capability: DNS names by network name.
    #[serde(default)]
    pub aliases: BTreeMap<String, Vec<String>>,
    /// The `ips` capability: static addresses (`10.1.0.5/24`, `fd00::5/64`).
    #[serde(default)]
    pub ips: Vec<String>,
    /// The `mac` capability: a static MAC.
    #[serde(default)]
    pub mac: Option<String>,
}

/// One live attachment GC must keep.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    /// The container id.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// The interface name.
    pub ifname: String,
}

/// The plugin's configuration as the runtime sends it on stdin.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// The configuration's spec version.
    pub cni_version: String,
    /// The network's name: also the sluice network's name.
    #[serde(default)]
    pub name: String,
    /// The plugin's name.
    #[serde(default, rename = "type")]
    pub plugin_type: String,
    /// The subnet (ipam-less form).
    #[serde(default)]
    pub subnet: Option<String>,
    /// The gateway (ipam-less form).
    #[serde(default)]
    pub gateway: Option<String>,
    /// bridge's `isGateway`: sluice is always the gateway; false makes the network internal.
    #[serde(default)]
    pub is_gateway: Option<bool>,
    /// bridge's `ipMasq`: NAPT to the uplink; false (bridge's default) makes the network internal.
    #[serde(default)]
    pub ip_masq: Option<bool>,
    /// The MTU.
    #[serde(default)]
    pub mtu: Option<i64>,
    /// bridge's `hairpinMode`: sluice always hairpins published ports, any value is accepted.
    #[serde(default)]
    pub hairpin_mode: Option<bool>,
    /// The VLAN inside sluice.
    #[serde(default)]
    pub vlan: Option<i64>,
    /// sluiced's API socket.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// bridge-style addressing.
    #[serde(default)]
    pub ipam: Option<IpamConf>,
    /// Capability arguments.
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    /// The previous plugin's (or ADD's) result.
    #[serde(default)]
    pub prev_result: Option<Value>,
    /// GC: the attachments that are still live.
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
}

fn invalid(msg: &str, details: impl Into<String>) -> CniError {
    CniError::new(INVALID_CONFIG, msg, details)
}

/// Reads the configuration: JSON of the right shape (else code 6), a supported version (else
/// code 1) and a network name sluice accepts (else code 7). Errors carry the config's version
/// when it could be read.
pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
    let conf: NetConf = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            DECODE_FAILURE,
            "cannot decode the network configuration",
            e.to_string(),
        )
    })?;
    let v = conf.cni_version.clone();
    if !SUPPORTED_VERSIONS.contains(&v.as_str()) {
        return Err(CniError::new(
            INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            format!(
                "config is {v:?}; sluice-cni supports {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ));
    }
    if !valid_name(&conf.name) {
        return Err(invalid(
            "invalid network name",
            format!("{:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*", conf.name),
        )
        .with_version(&v));
    }
    Ok(conf)
}

/// docker's (and CNI's) name rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn valid_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn cidr<C: std::str::FromStr<Err = String>>(what: &str, s: &str) -> Result<C, CniError> {
    s.parse::<C>()
        .map_err(|e| invalid(&format!("invalid {what}"), e))
}

/// An address of the family `A` (`family` names it in the error).
fn addr<A: std::str::FromStr>(what: &str, family: &str, s: &str) -> Result<A, CniError> {
    s.parse::<A>().map_err(|_| {
        invalid(
            &format!("invalid {what}"),
            format!("{s:?} is not an {family} address"),
        )
    })
}

fn ipv4(what: &str, s: &str) -> Result<Ipv4Addr, CniError> {
    addr(what, "IPv4", s)
}

/// The subnets and gateways a configuration asks for, at most one per family; none lets
/// sluiced pick (a v4 subnet from its pools; no v6 unless a v6 subnet is given).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Addressing {
    /// The IPv4 subnet.
    pub subnet: Option<Ipv4Cidr>,
    /// Its gateway.
    pub gateway: Option<Ipv4Addr>,
    /// The IPv6 subnet: the network is dual stack.
    pub subnet6: Option<Ipv6Cidr>,
    /// Its gateway.
    pub gateway6: Option<Ipv6Addr>,
}

impl Addressing {
    /// Takes one subnet (either family, by its text) and its gateway; false if that family
    /// already has one.
    fn take(&mut self, what: &str, subnet: &str, gw: Option<&String>) -> Result<bool, CniError> {
        let gw = gw.map(String::as_str);
        if subnet.contains(':') {
            let had = self.subnet6.is_some();
            self.subnet6 = Some(cidr(what, subnet)?);
            self.gateway6 = gw.map(|g| addr("gateway", "IPv6", g)).transpose()?;
            Ok(!had)
        } else {
            let had = self.subnet.is_some();
            self.subnet = Some(cidr(what, subnet)?);
            self.gateway = gw.map(|g| ipv4("gateway", g)).transpose()?;
            Ok(!had)
        }
    }
}

fn unsupported(msg: &str, details: impl Into<String>) -> CniError {
    CniError::new(UNSUPPORTED_FIELD, msg, details)
}

/// True when two subnets name the same prefix (whatever host bits were written).
pub fn same_subnet(a: &Ipv4Cidr, b: &Ipv4Cidr) -> bool {
    a.prefix == b.prefix && a.network() == b.network()
}

impl NetConf {
    /// The socket sluiced listens on.
    pub fn socket(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
    }

    /// The subnets and gateways asked for: the top-level pair, or `ipam.subnet`/`ipam.gateway`,
    /// or the ranges of `ipam.ranges` (host-local's dual-stack form: one range set per
    /// family); none lets sluiced pick from its pools.
    pub fn addressing(&self) -> Result<Addressing, CniError> {
        let mut found: Vec<(&str, &str, Option<&String>)> = Vec::new();
        if let Some(s) = &self.subnet {
            found.push(("subnet", s, self.gateway.as_ref()));
        } else if self.gateway.is_some() {
            return Err(invalid("gateway without subnet", "give subnet too"));
        }
        if let Some(ipam) = &self.ipam {
            if let Some(s) = &ipam.subnet {
                found.push(("ipam.subnet", s, ipam.gateway.as_ref()));
            } else if ipam.gateway.is_some() {
                return Err(invalid(
                    "ipam.gateway without ipam.subnet",
                    "give ipam.subnet too",
                ));
            }
            for r in ipam.ranges.iter().flatten() {
                if r.range_start.is_some() || r.range_end.is_some() {
                    return Err(unsupported(
                        "rangeStart/rangeEnd are not supported",
                        "sluiced allocates from the whole subnet",
                    ));
                }
                found.push(("ipam range subnet", &r.subnet, r.gateway.as_ref()));
            }
        }
        let mut a = Addressing::default();
        for (what, subnet, gw) in found {
            if !a.take(what, subnet, gw)? {
                return Err(unsupported(
                    "more than one subnet",
                    "a sluice network has at most one IPv4 and one IPv6 subnet",
                ));
            }
        }
        Ok(a)
    }

    /// The sluice network this configuration describes: a bridge network named like the CNI
    /// network, routed with NAPT when `ipMasq` is true (and `isGateway` not false), internal
    /// otherwise, with the MTU and VLAN options; dual stack when a v6 subnet is given.
    pub fn network_spec(&self) -> Result<NetworkSpec, CniError> {
        let a = self.addressing()?;
        let is_gateway = self.is_gateway.unwrap_or(true);
        let ip_masq = self.ip_masq.unwrap_or(false);
        if ip_masq && !is_gateway {
            return Err(invalid(
                "ipMasq needs isGateway",
                "masquerading goes through the gateway; set isGateway true or ipMasq false",
            ));
        }
        let mtu = self
            .mtu
            .map(|m| {
                u16::try_from(m)
                    .ok()
                    .filter(|m| *m >= sluice_netlink::MTU_MIN)
                    .ok_or_else(|| invalid("invalid mtu", format!("{m}: use 68 to 65535")))
            })
            .transpose()?;
        let vlan = self
            .vlan
            .filter(|v| *v != 0)
            .map(|v| {
                u16::try_from(v)
                    .ok()
                    .filter(|v| *v <= 4094)
                    .ok_or_else(|| invalid("invalid vlan", format!("{v}: use 1 to 4094")))
            })
            .transpose()?;
        Ok(NetworkSpec {
            name: self.name.clone(),
            driver: Driver::Bridge,
            subnet: a.subnet,
            gateway: a.gateway,
            enable_ipv6: a.subnet6.is_some(),
            subnet6: a.subnet6,
            gateway6: a.gateway6,
            internal: !ip_masq,
            options: NetworkOptions {
                mtu,
                vlan,
                ..NetworkOptions::default()
            },
            labels: [(CREATED_BY_LABEL.to_string(), CNI_CREATOR.to_string())].into(),
            ..NetworkSpec::default()
        })
    }

    /// The ports to publish, from the `portMappings` capability. `::` is every address (as
    /// `0.0.0.0` is: sluice publishes on its uplink's v4 and v6 addresses); a specific IPv6
    /// host address publishes there only.
    pub fn publish(&self) -> Result<Vec<PublishSpec>, CniError> {
        let mut out = Vec::new();
        for m in &self.runtime_config.port_mappings {
            let port = |what: &str, p: i64| {
                u16::try_from(p)
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| invalid(&format!("invalid {what}"), format!("{p}")))
            };
            let (host_ip, host_ip6) = match m.host_ip.as_deref().unwrap_or("") {
                "" => (None, None),
                s => match s.parse::<IpAddr>() {
                    Ok(ip) if ip.is_unspecified() => (None, None),
                    Ok(IpAddr::V4(ip)) => (Some(ip), None),
                    Ok(IpAddr::V6(ip)) => (None, Some(ip)),
                    Err(_) => return Err(invalid("invalid hostIP", s.to_string())),
                },
            };
            let proto = match m
                .protocol
                .as_deref()
                .unwrap_or("tcp")
                .to_ascii_lowercase()
                .as_str()
            {
                "tcp" | "" => L4Proto::Tcp,
                "udp" => L4Proto::Udp,
                other => {
                    return Err(unsupported(
                        "unsupported port mapping protocol",
                        format!("{other}: use tcp or udp"),
                    ))
                }
            };
            let spec = PublishSpec {
                host_ip,
                host_ip6,
                host_ports: Some(PortRange::single(port("hostPort", m.host_port)?)),
                container_ports: PortRange::single(port("containerPort", m.container_port)?),
                proto,
            };
            // A runtime that lists `0.0.0.0` and `::` separately means one mapping here.
            if !out.contains(&spec) {
                out.push(spec);
            }
        }
        Ok(out)
    }

    /// Extra DNS names: podman's `aliases` capability for this network, and the pod name of
    /// `CNI_ARGS` (`K8S_POD_NAME`); names that are not valid aliases (see
    /// `crate::validate::alias`) are left out.
    pub fn aliases(&self, cni_args: &BTreeMap<String, String>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let candidates = self
            .runtime_config
            .aliases
            .get(&self.name)
            .into_iter()
            .flatten()
            .chain(cni_args.get("K8S_POD_NAME"));
        for a in candidates {
            if sluice_api::validate::alias(a).is_ok() && !out.contains(a) {
                out.push(a.clone());
            }
        }
        out
    }

    /// A static address: the `ips` capability's first IPv4 address, else `CNI_ARGS` `IP=`.
    pub fn static_ip(
        &self,
        cni_args: &BTreeMap<String, String>,
    ) -> Result<Option<Ipv4Addr>, CniError> {
        let from_caps = self.runtime_config.ips.iter().find(|s| !s.contains(':'));
        let raw = from_caps.or_else(|| cni_args.get("IP"));
        raw.map(|s| ipv4("static IP", s.split('/').next().unwrap_or(s)))
            .transpose()
    }

    /// A static v6 address: the `ips` capability's first IPv6 address.
    pub fn static_ip6(&self) -> Result<Option<Ipv6Addr>, CniError> {
        let raw = self.runtime_config.ips.iter().find(|s| s.contains(':'));
        raw.map(|s| addr("static IP", "IPv6", s.split('/').next().unwrap_or(s)))
            .transpose()
    }

    /// A static MAC: the `mac` capability, else `CNI_ARGS` `MAC=`.
    pub fn static_mac(
        &self,
        cni_args: &BTreeMap<String, String>,
    ) -> Result<Option<MacAddr>, CniError> {
        self.runtime_config
            .mac
            .as_ref()
            .or_else(|| cni_args.get("MAC"))
            .map(|s| parse_mac(s).ok_or_else(|| invalid("invalid MAC", s.clone())))
            .transpose()
    }
}

/// `aa:bb:cc:dd:ee:ff` (either case).
pub fn parse_mac(s: &str) -> Option<MacAddr> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(MacAddr(mac))
}

/// `CNI_ARGS` (`K1=V1;K2=V2`) as a map; pieces without `=` are skipped.
pub fn parse_cni_args(s: &str) -> BTreeMap<String, String> {
    s.split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The sluice endpoint name of one attachment: `cni-CONTAINERID-IFNAME` when that is a valid
/// name of at most 128 characters, else `cni-` and a 64-bit hash of both (FNV-1a) in hex.
/// Deterministic, so DEL, CHECK and GC find the endpoint again from the runtime's ids alone.
pub fn endpoint_name(container_id: &str, ifname: &str) -> String {
    let plain = format!("{ENDPOINT_PREFIX}{container_id}-{ifname}");
    if plain.len() <= NAME_MAX && valid_name(&plain) {
        return plain;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in container_id.bytes().chain([0]).chain(ifname.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{ENDPOINT_PREFIX}{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn conf(v: Value) -> Result<NetConf, CniError> {
        parse(&serde_json::to_vec(&v).unwrap())
    }

    #[test]
    fn bridge_shaped_config_maps_to_a_network() {
        let c = conf(json!({
            "cniVersion": "1.0.0", "name": "web", "type": "sluice-cni",
            "isGateway": true, "ipMasq": true, "mtu": 1400, "vlan": 10, "hairpinMode": true,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"}]]}
        }))
        .unwrap();
        let n = c.network_spec().unwrap();
        assert_eq!(n.name, "web");
        assert_eq!(n.subnet, Some("10.88.0.0/16".parse().unwrap()));
        assert_eq!(n.gateway, Some(Ipv4Addr::new(10, 88, 0, 1)));
        assert!(!n.internal);
        assert_eq!((n.options.mtu, n.options.vlan), (Some(1400), Some(10)));
        assert_eq!(c.socket(), PathBuf::from(DEFAULT_SOCKET));
    }

    /// host-local's dual-stack form: one range set per family.
    #[test]
    fn v6_ranges_make_a_dual_stack_network() {
        let c = conf(json!({
            "cniVersion": "1.0.0", "name": "dual", "type": "sluice-cni", "ipMasq": true,
            "ipam": {"type": "host-local", "ranges": [
                [{"subnet": "10.89.0.0/24", "gateway": "10.89.0.1"}],
                [{"subnet": "fd00:89::/64", "gateway": "fd00:89::1"}]
            ]},
            "runtimeConfig": {"ips": ["10.89.0.7/24", "fd00:89::7/64"]}
        }))
        .unwrap();
        let n = c.network_spec().unwrap();
        assert!(n.enable_ipv6);
        assert_eq!(n.subnet, Some("10.89.0.0/24".parse().unwrap()));
        assert_eq!(n.subnet6, Some("fd00:89::/64".parse().unwrap()));
        assert_eq!(n.gateway6, Some("fd00:89::1".parse().unwrap()));
        assert_eq!(c.static_ip6().unwrap(), Some("fd00:89::7".parse().unwrap()));
        let v6only = conf(json!({"cniVersion": "1.0.0", "name": "d",
            "ipam": {"ranges": [[{"subnet": "fd00:89::/64"}]]}}))
        .unwrap()
        .network_spec()
        .unwrap();
        assert_eq!(
            (v6only.subnet, v6only.gateway6),
            (None, None),
            "sluiced picks"
        );
        assert!(v6only.enable_ipv6);
        let v4 =
            conf(json!({"cniVersion": "1.0.0", "name": "d", "subnet": "10.1.0.0/24"})).unwrap();
        assert!(!v4.network_spec().unwrap().enable_ipv6);
        assert_eq!(v4.static_ip6().unwrap(), None);
    }

    #[test]
    fn ipamless_and_defaults() {
        let c = conf(
            json!({"cniVersion": "1.1.0", "name": "n", "type": "sluice-cni",
            "subnet": "10.5.0.0/24", "socket": "/tmp/s.sock"}),
        )
        .unwrap();
        let n = c.network_spec().unwrap();
        assert_eq!(n.subnet, Some("10.5.0.0/24".parse().unwrap()));
        assert_eq!(n.gateway, None);
        assert!(n.internal, "ipMasq defaults to false, as in bridge");
        assert_eq!(c.socket(), PathBuf::from("/tmp/s.sock"));
        let c = conf(json!({"cniVersion": "1.1.0", "name": "n", "ipam": {"subnet": "10.6.0.0/24", "gateway": "10.6.0.9"}})).unwrap();
        assert_eq!(
            c.addressing().unwrap().gateway,
            Some(Ipv4Addr::new(10, 6, 0, 9))
        );
        let c = conf(json!({"cniVersion": "1.1.0", "name": "n"})).unwrap();
        assert_eq!(c.addressing().unwrap(), Addressing::default());
    }

    #[test]
    fn bad_configs_have_the_spec_codes() {
        let code = |v: Value| {
            conf(v)
                .and_then(|c| c.network_spec().map(drop))
                .unwrap_err()
                .code
        };
        assert_eq!(
            code(json!({"cniVersion": "0.4.0", "name": "n"})),
            INCOMPATIBLE_VERSION
        );
        assert_eq!(code(json!({"name": "n"})), DECODE_FAILURE);
        assert_eq!(
            code(json!({"cniVersion": "1.0.0", "name": "n", "mtu": "x"})),
            DECODE_FAILURE
        );
        assert_eq!(
            code(json!({"cniVersion": "1.0.0", "name": "-n"})),
            INVALID_CONFIG
        );
        assert_eq!(
            code(json!({"cniVersion": "1.0.0", "name": "n", "subnet": "10.0.0.0/33"})),
            INVALID_CONFIG
        );
        assert_eq!(
            code(json!({"cniVersion": "1.0.0", "name": "n", "gateway": "10.0.0.1"})),
            INVALID_CONFIG
        );
        assert_eq!(
            code(json!({"cniVersion": "1.0.0", "name": "n", "mtu": 20})),
            INVALID_CONFIG
        );
        assert_eq!(
            code(json!({"cniVersion": "1.0.0", "name": "n", "vlan": 4095})),
            INVALID_CONFIG
        );
        assert_eq!(
            code(json!({"cniVersion": "1.0.0", "name": "n", "ipMasq": true, "isGateway": false})),
            INVALID_CONFIG
        );
        assert_eq!(
            code(
                json!({"cniVersion": "1.0.0", "name": "n", "ipam": {"ranges": [[{"subnet": "fd00::/64"}], [{"subnet": "fd01::/64"}]]}})
            ),
            UNSUPPORTED_FIELD
        );
        assert_eq!(
            code(
                json!({"cniVersion": "1.0.0", "name": "n", "ipam": {"ranges": [[{"subnet": "fd00::/64", "gateway": "10.0.0.1"}]]}})
            ),
            INVALID_CONFIG
        );
        assert_eq!(
            code(
                json!({"cniVersion": "1.0.0", "name": "n", "ipam": {"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.5"}]]}})
            ),
            UNSUPPORTED_FIELD
        );
        assert_eq!(
            code(
                json!({"cniVersion": "1.0.0", "name": "n", "subnet": "10.0.0.0/24", "ipam": {"subnet": "10.1.0.0/24"}})
            ),
            UNSUPPORTED_FIELD
        );
        assert_eq!(parse(b"not json").unwrap_err().code, DECODE_FAILURE);
        let e = conf(json!({"cniVersion": "1.1.0", "name": "-"})).unwrap_err();
        assert_eq!(e.cni_version, "1.1.0");
    }

    #[test]
    fn port_mappings_become_publish_specs() {
        let c = conf(
            json!({"cniVersion": "1.0.0", "name": "n", "runtimeConfig": {"portMappings": [
                {"hostPort": 18081, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": 5353, "containerPort": 53, "protocol": "UDP", "hostIP": "127.0.0.1"},
                {"hostPort": 8080, "containerPort": 80, "hostIP": "0.0.0.0"},
                {"hostPort": 8080, "containerPort": 80, "hostIP": "::"},
                {"hostPort": 8081, "containerPort": 80, "hostIP": "2001:db8::2"}
            ]}}),
        )
        .unwrap();
        let p: Vec<String> = c
            .publish()
            .unwrap()
            .iter()
            .map(sluice_api::api::port_column)
            .collect();
        assert_eq!(
            p,
            [
                "0.0.0.0:18081->80/tcp",
                "127.0.0.1:5353->53/udp",
                "0.0.0.0:8080->80/tcp",
                "[2001:db8::2]:8081->80/tcp"
            ]
        );
        for bad in [
            json!({"hostPort": 0, "containerPort": 80}),
            json!({"hostPort": 70000, "containerPort": 80}),
            json!({"hostPort": 1, "containerPort": 80, "hostIP": "x"}),
            json!({"hostPort": 1, "containerPort": 80, "protocol": "sctp"}),
        ] {
            let c = conf(json!({"cniVersion": "1.0.0", "name": "n", "runtimeConfig": {"portMappings": [bad]}})).unwrap();
            assert!(c.publish().is_err());
        }
    }

    #[test]
    fn args_aliases_and_static_addressing() {
        let args = parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=web;IP=10.1.0.7;junk");
        assert_eq!(args.get("IgnoreUnknown").map(String::as_str), Some("1"));
        let c = conf(json!({"cniVersion": "1.0.0", "name": "n", "runtimeConfig": {
            "aliases": {"n": ["www", "web", "bad name", "a\nnameserver 6.6.6.6", "x-"], "other": ["x"]}, "mac": "02:00:00:00:00:0A"}}))
        .unwrap();
        assert_eq!(c.aliases(&args), ["www", "web"]);
        assert_eq!(
            c.static_ip(&args).unwrap(),
            Some(Ipv4Addr::new(10, 1, 0, 7))
        );
        assert_eq!(
            c.static_mac(&args).unwrap(),
            Some(MacAddr([2, 0, 0, 0, 0, 10]))
        );
        let c = conf(json!({"cniVersion": "1.0.0", "name": "n", "runtimeConfig": {"ips": ["fd00::2/64", "10.1.0.9/24"]}})).unwrap();
        assert_eq!(
            c.static_ip(&args).unwrap(),
            Some(Ipv4Addr::new(10, 1, 0, 9))
        );
        assert!(
            parse_mac("02:00:00:00:00").is_none() && parse_mac("02:00:00:00:00:00:00").is_none()
        );
    }

    #[test]
    fn endpoint_names_are_valid_and_distinct() {
        assert_eq!(endpoint_name("abc123", "eth0"), "cni-abc123-eth0");
        let long = "a".repeat(200);
        let h = endpoint_name(&long, "eth0");
        assert!(h.starts_with(ENDPOINT_PREFIX) && h.len() == 20 && valid_name(&h));
        assert_ne!(endpoint_name(&long, "eth1"), h);
        assert!(valid_name(&endpoint_name("c:1", "net@1")));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(c) = parse(&bytes) {
                let _ = c.network_spec();
                let _ = c.publish();
            }
        }

        #[test]
        fn json_with_random_fields_never_panics(
            subnet in "[0-9./:a-f]{0,20}", gw in "[0-9.]{0,16}", mtu in any::<i64>(), vlan in any::<i64>(),
            hp in any::<i64>(), cp in any::<i64>(), proto in "[a-zA-Z]{0,5}", hip in "[0-9.:]{0,16}",
        ) {
            let v = json!({"cniVersion": "1.0.0", "name": "n", "subnet": subnet, "gateway": gw,
                "mtu": mtu, "vlan": vlan, "ipMasq": true,
                "runtimeConfig": {"portMappings": [{"hostPort": hp, "containerPort": cp, "protocol": proto, "hostIP": hip}]}});
            let c = conf(v).unwrap();
            let _ = c.network_spec();
            let _ = c.publish();
        }

        #[test]
        fn endpoint_names_always_valid(cid in "\\PC{0,150}", ifname in "\\PC{0,15}") {
            let n = endpoint_name(&cid, &ifname);
            prop_assert!(valid_name(&n) && n.len() <= NAME_MAX);
        }
    }
}
