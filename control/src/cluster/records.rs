//! What sluice keeps in etcd and under which keys (all under [`ROOT`]):
//!
//! - `networks/NAME`: an overlay network's spec, with the subnet, gateway and VNI its first
//!   host decided (every host creates its local part from it);
//! - `vnis/VNI`: the network holding a VNI (reserved with the network, in one transaction);
//! - `ipam/NAME/IP`: the host holding an address, v4 or v6 (a compare-and-swap reservation,
//!   under that host's lease);
//! - `endpoints/NAME/ID`: an endpoint's MAC, addresses, DNS aliases and host VTEP (under the
//!   host's lease; records written before aliases and v6 addresses existed still read);
//! - `hosts/VTEP`: a live host (under its lease).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};
use sluice_dataplane::overlay::RemoteEndpoint;
use sluice_dataplane::wire::MacAddr;

use crate::model::NetworkSpec;

/// The prefix of every key sluice writes.
pub const ROOT: &str = "/sluice/v1/";

/// Key of network `name`'s record.
pub fn network_key(name: &str) -> String {
    format!("{ROOT}networks/{name}")
}

/// Key of the reservation of `vni`.
pub fn vni_key(vni: u32) -> String {
    format!("{ROOT}vnis/{vni}")
}

/// Prefix of network `name`'s address reservations.
pub fn ipam_prefix(name: &str) -> String {
    format!("{ROOT}ipam/{name}/")
}

/// Key of the reservation of `ip` (v4 or v6) in network `name`.
pub fn ipam_key(name: &str, ip: impl Into<IpAddr>) -> String {
    let ip: IpAddr = ip.into();
    format!("{}{ip}", ipam_prefix(name))
}

/// Prefix of network `name`'s endpoint records.
pub fn endpoints_prefix(name: &str) -> String {
    format!("{ROOT}endpoints/{name}/")
}

/// Key of endpoint `id` of network `name`.
pub fn endpoint_key(name: &str, id: &str) -> String {
    format!("{}{id}", endpoints_prefix(name))
}

/// Prefix of the records of what uses network `name` (docker networks of the hosts that
/// joined it with the docker plugin's `-o overlay=NAME`).
pub fn users_prefix(name: &str) -> String {
    format!("{ROOT}users/{name}/")
}

/// Key of `user`'s use of network `name` on the host whose VTEP is `vtep`.
pub fn user_key(name: &str, vtep: Ipv4Addr, user: &str) -> String {
    format!("{}{vtep}/{user}", users_prefix(name))
}

/// Key of the host whose VTEP is `vtep`.
pub fn host_key(vtep: Ipv4Addr) -> String {
    format!("{ROOT}hosts/{vtep}")
}

/// An endpoint as the other hosts need it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// Its id (from its key, not stored in the value).
    #[serde(skip)]
    pub id: String,
    /// Its name (for the other hosts' embedded DNS, `inspect` and logs).
    pub name: String,
    /// The VTEP of the host it lives on.
    pub host: Ipv4Addr,
    /// The name of the host it lives on (its hostname, for `inspect`'s `Peers`).
    #[serde(default)]
    pub node: String,
    /// Its MAC.
    pub mac: MacAddr,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its v6 address, on a dual-stack network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    /// Its network-scoped aliases (`--alias`), which the other hosts' embedded DNS resolves
    /// like its name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// The endpoints on other hosts, per overlay network name: what each host's VXLAN remote
/// table and embedded DNS hold.
pub type Remotes = BTreeMap<String, Vec<EndpointRecord>>;

/// The remote table of one overlay network for the dataplane.
pub fn remote_endpoints(records: &[EndpointRecord]) -> impl Iterator<Item = RemoteEndpoint> + '_ {
    records.iter().map(|e| RemoteEndpoint {
        mac: e.mac,
        ipv4: e.ip,
        ipv6: e.ip6,
        vtep: e.host,
    })
}

/// What the cluster holds, as the watch keeps it: every key under [`ROOT`] and its value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mirror {
    keys: BTreeMap<String, Vec<u8>>,
}

impl Mirror {
    /// Replaces everything (after a full read); the networks that were there and are gone.
    pub fn reset(&mut self, kvs: impl IntoIterator<Item = (String, Vec<u8>)>) -> Vec<String> {
        let before = self.networks();
        self.keys = kvs.into_iter().collect();
        let after = self.networks();
        before
            .into_keys()
            .filter(|n| !after.contains_key(n))
            .collect()
    }

    /// A key was written.
    pub fn put(&mut self, key: String, value: Vec<u8>) {
        self.keys.insert(key, value);
    }

    /// A key was deleted.
    pub fn delete(&mut self, key: &str) {
        self.keys.remove(key);
    }

    fn under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        self.keys
            .range(prefix.to_string()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Every overlay network's spec, by name (records that do not parse are skipped).
    pub fn networks(&self) -> BTreeMap<String, NetworkSpec> {
        let prefix = format!("{ROOT}networks/");
        self.under(&prefix)
            .filter_map(|(_, v)| serde_json::from_slice::<NetworkSpec>(v).ok())
            .map(|s| (s.name.clone(), s))
            .collect()
    }

    /// Network `name`'s endpoints, by id.
    pub fn endpoints(&self, name: &str) -> BTreeMap<String, EndpointRecord> {
        let prefix = endpoints_prefix(name);
        self.under(&prefix)
            .filter_map(|(k, v)| {
                let id = k[prefix.len()..].to_string();
                let rec = serde_json::from_slice::<EndpointRecord>(v).ok()?;
                Some((id.clone(), EndpointRecord { id, ..rec }))
            })
            .collect()
    }

    /// The endpoints on other hosts than `me`, per overlay network name.
    pub fn remotes(&self, me: Ipv4Addr) -> Remotes {
        self.networks()
            .into_keys()
            .map(|name| {
                let remotes = self
                    .endpoints(&name)
                    .into_values()
                    .filter(|e| e.host != me)
                    .collect();
                (name, remotes)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Driver;

    fn rec(name: &str, host: [u8; 4], ip: [u8; 4]) -> Vec<u8> {
        serde_json::to_vec(&EndpointRecord {
            id: String::new(),
            name: name.into(),
            host: host.into(),
            node: format!("node{}", host[3]),
            mac: MacAddr::from_ipv4(ip.into()),
            ip: ip.into(),
            ip6: None,
            aliases: Vec::new(),
        })
        .unwrap()
    }

    #[test]
    fn keys_nest_under_the_root() {
        assert_eq!(network_key("ov"), "/sluice/v1/networks/ov");
        assert_eq!(vni_key(4096), "/sluice/v1/vnis/4096");
        assert_eq!(
            ipam_key("ov", Ipv4Addr::new(10, 20, 0, 2)),
            "/sluice/v1/ipam/ov/10.20.0.2"
        );
        assert_eq!(
            ipam_key("ov", "fd00:20::2".parse::<Ipv6Addr>().unwrap()),
            "/sluice/v1/ipam/ov/fd00:20::2"
        );
        assert_eq!(endpoint_key("ov", "ab"), "/sluice/v1/endpoints/ov/ab");
        assert_eq!(
            user_key("ov", Ipv4Addr::new(192, 0, 2, 1), "d1"),
            "/sluice/v1/users/ov/192.0.2.1/d1"
        );
        assert!(
            !user_key("ov2", Ipv4Addr::new(192, 0, 2, 1), "d1").starts_with(&users_prefix("ov"))
        );
        assert_eq!(
            host_key(Ipv4Addr::new(192, 0, 2, 1)),
            "/sluice/v1/hosts/192.0.2.1"
        );
    }

    #[test]
    fn remotes_are_the_other_hosts_endpoints() {
        let spec = |name: &str| NetworkSpec {
            name: name.into(),
            driver: Driver::Overlay,
            ..NetworkSpec::default()
        };
        let mut m = Mirror::default();
        let gone = m.reset([
            (network_key("ov"), serde_json::to_vec(&spec("ov")).unwrap()),
            (network_key("ow"), serde_json::to_vec(&spec("ow")).unwrap()),
            (network_key("oy"), serde_json::to_vec(&spec("oy")).unwrap()),
            (network_key("bad"), b"{".to_vec()),
        ]);
        assert!(gone.is_empty());
        // A full read after a gap: oy went meanwhile.
        let gone = m.reset([
            (network_key("ov"), serde_json::to_vec(&spec("ov")).unwrap()),
            (network_key("ow"), serde_json::to_vec(&spec("ow")).unwrap()),
        ]);
        assert_eq!(gone, ["oy"]);
        // "ovx" starts with "ov": its endpoints must not count as ov's.
        for (net, id, host, ip) in [
            ("ov", "a", 1, 2),
            ("ov", "b", 2, 3),
            ("ov", "c", 3, 4),
            ("ovx", "d", 3, 5),
        ] {
            m.put(
                endpoint_key(net, id),
                rec(id, [192, 0, 2, host], [10, 20, 0, ip]),
            );
        }
        m.delete(&endpoint_key("ov", "c"));
        let r = m.remotes(Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(r.keys().collect::<Vec<_>>(), ["ov", "ow"]);
        assert_eq!(r["ov"].len(), 1);
        let b = &r["ov"][0];
        assert_eq!(
            (b.id.as_str(), b.name.as_str(), b.node.as_str()),
            ("b", "b", "node2")
        );
        assert_eq!(
            remote_endpoints(&r["ov"]).collect::<Vec<_>>(),
            vec![RemoteEndpoint {
                mac: MacAddr::from_ipv4(Ipv4Addr::new(10, 20, 0, 3)),
                ipv4: Ipv4Addr::new(10, 20, 0, 3),
                ipv6: None,
                vtep: Ipv4Addr::new(192, 0, 2, 2),
            }]
        );
        assert!(r["ow"].is_empty());
        assert_eq!(m.endpoints("ov").len(), 2);
    }

    #[test]
    fn records_carry_aliases_and_v6_and_old_ones_still_read() {
        let old = br#"{"name":"web","host":"192.0.2.2","node":"h2","mac":"02:42:0a:14:00:05","ip":"10.20.0.5"}"#;
        let mut m = Mirror::default();
        m.put(endpoint_key("ov", "a"), old.to_vec());
        let new = EndpointRecord {
            id: String::new(),
            name: "db".into(),
            host: Ipv4Addr::new(192, 0, 2, 3),
            node: "h3".into(),
            mac: MacAddr::from_ipv4(Ipv4Addr::new(10, 20, 0, 6)),
            ip: Ipv4Addr::new(10, 20, 0, 6),
            ip6: Some("fd00:20::6".parse().unwrap()),
            aliases: vec!["pg".into(), "store".into()],
        };
        m.put(endpoint_key("ov", "b"), serde_json::to_vec(&new).unwrap());
        let eps = m.endpoints("ov");
        assert_eq!((eps["a"].name.as_str(), eps["a"].ip6), ("web", None));
        assert!(eps["a"].aliases.is_empty());
        assert_eq!(eps["b"].aliases, ["pg", "store"]);
        assert_eq!(eps["b"].ip6, new.ip6);
        let r: Vec<RemoteEndpoint> = remote_endpoints(&[eps["b"].clone()]).collect();
        assert_eq!(r[0].ipv6, new.ip6);
        // A v4-only record without aliases writes what older hosts read.
        let plain = EndpointRecord {
            ip6: None,
            aliases: Vec::new(),
            ..new
        };
        let text = String::from_utf8(serde_json::to_vec(&plain).unwrap()).unwrap();
        assert!(!text.contains("ip6") && !text.contains("aliases"), "{text}");
    }
}
