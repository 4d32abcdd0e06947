//! Overlay networks: the part of a network's configuration that spans hosts (its VXLAN VNI and
//! the endpoints that live on other hosts, each behind its host's VTEP), and the lookup tables
//! the VXLAN stage reads, compiled with the rest of `Tables` and swapped with them.
//!
//! The remote table plays the role of libnetwork's peerdb: the control plane learns remote
//! endpoints from the cluster store, the dataplane encapsulates to them, answers ARP (and, on
//! dual-stack networks, neighbour solicitations) for them and accepts decapsulated frames only
//! from the VTEP that owns their source.

use std::net::{Ipv4Addr, Ipv6Addr};

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use crate::frame::NetworkId;
use crate::hash::KeyHasherBuilder;
use crate::wire::vxlan::MAX_VNI;
use crate::wire::MacAddr;

/// An endpoint of an overlay network that lives on another host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteEndpoint {
    /// The endpoint's MAC.
    pub mac: MacAddr,
    /// The endpoint's IPv4 address (inside the network's subnet).
    pub ipv4: Ipv4Addr,
    /// Its IPv6 address on a dual-stack network (neighbour solicitations for it are answered
    /// locally, as ARP is for `ipv4`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
    /// The VTEP (uplink address) of the host it lives on.
    pub vtep: Ipv4Addr,
}

/// The multi-host part of one network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayConfig {
    /// The network (its local part is an ordinary `NetworkConfig`).
    pub network: NetworkId,
    /// Its VXLAN network identifier (24 bits).
    pub vni: u32,
    /// Its endpoints on other hosts.
    #[serde(default)]
    pub remotes: Vec<RemoteEndpoint>,
}

/// Why an overlay configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverlayError {
    /// The overlay names a network that is not configured.
    #[error("overlay VNI {vni} names network {network}, which does not exist")]
    UnknownNetwork {
        /// The VNI.
        vni: u32,
        /// The network id.
        network: u16,
    },
    /// A VNI does not fit 24 bits.
    #[error("VNI {0} is out of range (at most {MAX_VNI})")]
    BadVni(u32),
    /// Two overlays share a VNI or a network.
    #[error("VNI {vni} (network {network}) is configured twice")]
    Duplicate {
        /// The VNI.
        vni: u32,
        /// The network id.
        network: u16,
    },
    /// A remote endpoint's address is outside its network's subnet, or its MAC is a group one.
    #[error("remote endpoint {mac} {ip} does not belong to overlay VNI {vni}")]
    BadRemote {
        /// The VNI.
        vni: u32,
        /// The endpoint's MAC.
        mac: MacAddr,
        /// The endpoint's address.
        ip: Ipv4Addr,
    },
}

/// A remote endpoint as the fast path reads it, keyed by MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Remote {
    /// Its address.
    pub ipv4: Ipv4Addr,
    /// Its IPv6 address on a dual-stack network (decapsulated IPv6 frames must come from it
    /// or a link-local address).
    pub ipv6: Option<Ipv6Addr>,
    /// Its host's VTEP.
    pub vtep: Ipv4Addr,
}

/// One overlay network's compiled tables.
#[derive(Debug, Default)]
pub struct OverlayEntry {
    /// The VNI.
    pub vni: u32,
    by_mac: HashMap<u64, Remote, KeyHasherBuilder>,
    by_ip: HashMap<u32, MacAddr, KeyHasherBuilder>,
    by_ip6: HashMap<u128, MacAddr, KeyHasherBuilder>,
}

impl OverlayEntry {
    /// The remote endpoint with MAC `mac`.
    #[inline]
    pub fn remote(&self, mac: MacAddr) -> Option<&Remote> {
        self.by_mac.get(&mac.to_u64())
    }

    /// The MAC of the remote endpoint with address `ip` (to answer ARP for it locally).
    #[inline]
    pub fn mac_of(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.by_ip.get(&u32::from(ip)).copied()
    }

    /// The MAC of the remote endpoint with v6 address `ip` (to answer its neighbour
    /// solicitations locally).
    #[inline]
    pub fn mac_of6(&self, ip: Ipv6Addr) -> Option<MacAddr> {
        self.by_ip6.get(&u128::from(ip)).copied()
    }

    /// Number of remote endpoints.
    pub fn len(&self) -> usize {
        self.by_mac.len()
    }

    /// True without remote endpoints.
    pub fn is_empty(&self) -> bool {
        self.by_mac.is_empty()
    }
}

/// Every overlay network's tables, by network and by VNI.
#[derive(Debug, Default)]
pub struct OverlayTables {
    by_net: Vec<Option<OverlayEntry>>,
    by_vni: HashMap<u32, NetworkId, KeyHasherBuilder>,
}

impl OverlayTables {
    /// Compiles `overlays`; `subnet_of` gives a configured network's subnet test.
    pub fn build(
        overlays: &[OverlayConfig],
        subnet_of: impl Fn(NetworkId) -> Option<crate::config::Ipv4Cidr>,
    ) -> Result<OverlayTables, OverlayError> {
        let mut t = OverlayTables::default();
        for o in overlays {
            if o.vni > MAX_VNI {
                return Err(OverlayError::BadVni(o.vni));
            }
            let subnet = subnet_of(o.network).ok_or(OverlayError::UnknownNetwork {
                vni: o.vni,
                network: o.network.0,
            })?;
            let idx = usize::from(o.network.0);
            if t.by_vni.insert(o.vni, o.network).is_some()
                || t.by_net.get(idx).is_some_and(Option::is_some)
            {
                return Err(OverlayError::Duplicate {
                    vni: o.vni,
                    network: o.network.0,
                });
            }
            let mut e = OverlayEntry {
                vni: o.vni,
                ..OverlayEntry::default()
            };
            for r in &o.remotes {
                if !subnet.contains(r.ipv4) || r.mac.is_multicast() {
                    return Err(OverlayError::BadRemote {
                        vni: o.vni,
                        mac: r.mac,
                        ip: r.ipv4,
                    });
                }
                let remote = Remote {
                    ipv4: r.ipv4,
                    ipv6: r.ipv6,
                    vtep: r.vtep,
                };
                e.by_mac.insert(r.mac.to_u64(), remote);
                e.by_ip.insert(u32::from(r.ipv4), r.mac);
                if let Some(ip6) = r.ipv6 {
                    e.by_ip6.insert(u128::from(ip6), r.mac);
                }
            }
            if t.by_net.len() <= idx {
                t.by_net.resize_with(idx + 1, || None);
            }
            t.by_net[idx] = Some(e);
        }
        Ok(t)
    }

    /// The overlay part of network `net`, if it is an overlay network.
    #[inline]
    pub fn of(&self, net: NetworkId) -> Option<&OverlayEntry> {
        self.by_net.get(usize::from(net.0)).and_then(Option::as_ref)
    }

    /// The network of VNI `vni`.
    #[inline]
    pub fn network_of_vni(&self, vni: u32) -> Option<NetworkId> {
        self.by_vni.get(&vni).copied()
    }

    /// True when no network is an overlay (decapsulation is then never tried).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.by_vni.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Ipv4Cidr;

    fn remote(last: u8, vtep: u8) -> RemoteEndpoint {
        RemoteEndpoint {
            mac: MacAddr([2, 0x42, 10, 20, 0, last]),
            ipv4: Ipv4Addr::new(10, 20, 0, last),
            ipv6: last
                .is_multiple_of(2)
                .then(|| Ipv6Addr::new(0xfd00, 0x20, 0, 0, 0, 0, 0, last.into())),
            vtep: Ipv4Addr::new(192, 0, 2, vtep),
        }
    }

    fn subnets(id: NetworkId) -> Option<Ipv4Cidr> {
        (id.0 < 2).then(|| "10.20.0.0/24".parse().unwrap())
    }

    #[test]
    fn compiles_lookups_by_vni_mac_and_address() {
        let o = OverlayConfig {
            network: NetworkId(1),
            vni: 4096,
            remotes: vec![remote(5, 2), remote(6, 3)],
        };
        let t = OverlayTables::build(&[o], subnets).unwrap();
        assert_eq!(t.network_of_vni(4096), Some(NetworkId(1)));
        assert_eq!(t.network_of_vni(4097), None);
        assert!(t.of(NetworkId(0)).is_none());
        let e = t.of(NetworkId(1)).unwrap();
        assert_eq!(e.len(), 2);
        let r = remote(6, 3);
        assert_eq!(e.remote(r.mac).unwrap().vtep, r.vtep);
        assert_eq!(e.mac_of(r.ipv4), Some(r.mac));
        assert_eq!(e.mac_of(Ipv4Addr::new(10, 20, 0, 7)), None);
        assert_eq!(e.mac_of6(r.ipv6.unwrap()), Some(r.mac));
        let v4_only = remote(5, 2);
        assert_eq!(v4_only.ipv6, None);
        let not_there = Ipv6Addr::new(0xfd00, 0x20, 0, 0, 0, 0, 0, 5);
        assert_eq!(e.mac_of6(not_there), None);
    }

    #[test]
    fn refuses_bad_overlays() {
        let o = |network: u16, vni: u32, remotes: Vec<RemoteEndpoint>| OverlayConfig {
            network: NetworkId(network),
            vni,
            remotes,
        };
        let build = |v: Vec<OverlayConfig>| OverlayTables::build(&v, subnets).unwrap_err();
        assert_eq!(
            build(vec![o(0, 1 << 24, vec![])]),
            OverlayError::BadVni(1 << 24)
        );
        assert!(matches!(
            build(vec![o(7, 1, vec![])]),
            OverlayError::UnknownNetwork { .. }
        ));
        assert!(matches!(
            build(vec![o(0, 1, vec![]), o(1, 1, vec![])]),
            OverlayError::Duplicate { .. }
        ));
        assert!(matches!(
            build(vec![o(0, 1, vec![]), o(0, 2, vec![])]),
            OverlayError::Duplicate { .. }
        ));
        let mut outside = remote(5, 2);
        outside.ipv4 = Ipv4Addr::new(10, 99, 0, 1);
        assert!(matches!(
            build(vec![o(0, 1, vec![outside])]),
            OverlayError::BadRemote { .. }
        ));
    }
}
