//! The IPv6 part of the dataplane configuration: a network's v6 prefix and gateway. Kept beside
//! `config` so a v4-only configuration reads exactly as before (the field is optional).

use std::net::Ipv6Addr;

use serde::{Deserialize, Serialize};

use crate::config::parse_cidr;
use crate::frame::PortId;

/// An IPv6 prefix such as fd00:9::/64.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Ipv6Cidr {
    /// Any address inside the prefix (normalised by `network()`).
    pub addr: Ipv6Addr,
    /// Prefix length, 0 to 128.
    pub prefix: u8,
}

impl Ipv6Cidr {
    /// A prefix; `None` when `prefix` > 128.
    pub fn new(addr: Ipv6Addr, prefix: u8) -> Option<Self> {
        (prefix <= 128).then_some(Ipv6Cidr { addr, prefix })
    }

    /// The netmask as a number.
    pub fn mask(&self) -> u128 {
        match self.prefix {
            0 => 0,
            p => u128::MAX << (128 - u32::from(p.min(128))),
        }
    }

    /// The first address of the prefix.
    pub fn network(&self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.addr) & self.mask())
    }

    /// True when `ip` lies inside the prefix.
    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        u128::from(ip) & self.mask() == u128::from(self.network())
    }

    /// True when the two prefixes share an address.
    pub fn overlaps(&self, other: &Ipv6Cidr) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }
}

impl std::fmt::Display for Ipv6Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

impl std::str::FromStr for Ipv6Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = parse_cidr(s, "IPv6", 128)?;
        Ok(Ipv6Cidr { addr, prefix })
    }
}

/// A network's IPv6 side: its prefix and the gateway address sluice answers for (neighbour
/// discovery and ping, as for the v4 gateway; also its link-local address, derived from the
/// gateway MAC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkV6 {
    /// The network's v6 prefix.
    pub subnet: Ipv6Cidr,
    /// The v6 gateway address, inside `subnet`.
    pub gateway: Ipv6Addr,
    /// docker's `gateway_mode_ipv6=routed`: the network's prefix is routed through the uplink
    /// untranslated (only replies and published container ports come in); false: NAT66
    /// masquerade to the uplink's v6 address.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub routed: bool,
}

/// An uplink's IPv6 side (`sluiced --uplink-ip6 --uplink-gateway6`): the NAT66 source, where
/// published ports are reached over v6, and the next hop of the networks' v6 traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkV6 {
    /// The uplink port this belongs to (one of `Config::uplink`, `Config::network_uplinks`).
    pub port: PortId,
    /// sluice's v6 address on the uplink and its on-link prefix.
    pub ip: Ipv6Cidr,
    /// Next hop for v6 destinations outside `ip`'s prefix (none: only on-link ones).
    #[serde(default)]
    pub next_hop: Option<Ipv6Addr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_math() {
        let c: Ipv6Cidr = "fd00:9::1/64".parse().unwrap();
        assert_eq!(c.network(), "fd00:9::".parse::<Ipv6Addr>().unwrap());
        assert!(c.contains("fd00:9::ffff:1".parse().unwrap()));
        assert!(!c.contains("fd00:a::1".parse().unwrap()));
        assert_eq!(c.to_string(), "fd00:9::/64");
        let wide: Ipv6Cidr = "fd00::/16".parse().unwrap();
        assert!(c.overlaps(&wide) && wide.overlaps(&c));
        let all: Ipv6Cidr = "::/0".parse().unwrap();
        assert!(all.contains("2001:db8::1".parse().unwrap()));
        let host: Ipv6Cidr = "fd00::5/128".parse().unwrap();
        assert!(host.contains("fd00::5".parse().unwrap()));
        assert!(!host.contains("fd00::6".parse().unwrap()));
        assert!("fd00::/129".parse::<Ipv6Cidr>().is_err());
        assert!("10.0.0.0/8".parse::<Ipv6Cidr>().is_err());
        assert!(Ipv6Cidr::new(Ipv6Addr::UNSPECIFIED, 129).is_none());
    }
}
