//! The virtual network's addressing, derived from the command line as slirp4netns does.
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use sluice_dataplane::wire::MacAddr;

use crate::counters::Drop;

/// Why the addressing options cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// `--cidr` is not `A.B.C.D/N` with a prefix that leaves room for the guest (.100).
    #[error("invalid --cidr {0:?} (expected A.B.C.D/N with N <= 25)")]
    Cidr(String),
}

/// The addresses of the virtual network and the policy switches that change translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// Network address (10.0.2.0 by default).
    pub network: Ipv4Addr,
    /// Prefix length (24 by default).
    pub prefix: u8,
    /// The gateway, which stands for the host (10.0.2.2).
    pub gateway: Ipv4Addr,
    /// The DNS forwarder (10.0.2.3).
    pub dns: Ipv4Addr,
    /// The address the guest is given (10.0.2.100).
    pub guest: Ipv4Addr,
    /// The link MTU.
    pub mtu: u16,
    /// Whether the gateway reaches the host's loopback.
    pub host_loopback: bool,
    /// Whether the DNS forwarder answers.
    pub dns_enabled: bool,
    /// The source address of outbound sockets, when set.
    pub outbound_addr: Option<Ipv4Addr>,
    /// `--enable-ipv6`: the guest gets [`PREFIX6`]/64 by router advertisements.
    pub ipv6: bool,
    /// The source address of outbound IPv6 sockets, when set.
    pub outbound_addr6: Option<Ipv6Addr>,
}

/// The IPv6 prefix (/64) of the virtual network, as slirp4netns has it.
pub const PREFIX6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0);
/// The IPv6 gateway, which stands for the host.
pub const GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
/// The IPv6 DNS forwarder.
pub const DNS6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3);
/// The router's link-local address: router advertisements come from it, so it is the
/// guest's default route (libslirp's choice too).
pub const ROUTER_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);

/// True for addresses in [`PREFIX6`]/64.
pub fn in_prefix6(ip: Ipv6Addr) -> bool {
    ip.segments()[..4] == PREFIX6.segments()[..4]
}

/// The MAC the gateway and the DNS forwarder answer ARP with (libslirp's 52:55 + address).
pub fn virtual_mac(ip: Ipv4Addr) -> MacAddr {
    let o = ip.octets();
    MacAddr([0x52, 0x55, o[0], o[1], o[2], o[3]])
}

impl NetConfig {
    /// The addressing for `cidr` (e.g. "10.0.2.0/24"): gateway .2, DNS .3, guest .100.
    pub fn from_cidr(cidr: &str, mtu: u16) -> Result<Self, ConfigError> {
        let bad = || ConfigError::Cidr(cidr.to_string());
        let (addr, len) = cidr.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = len.parse().map_err(|_| bad())?;
        if prefix > 25 {
            return Err(bad());
        }
        let net = u32::from(addr) & mask_of(prefix);
        Ok(NetConfig {
            network: Ipv4Addr::from(net),
            prefix,
            gateway: Ipv4Addr::from(net + 2),
            dns: Ipv4Addr::from(net + 3),
            guest: Ipv4Addr::from(net + 100),
            mtu,
            host_loopback: true,
            dns_enabled: true,
            outbound_addr: None,
            ipv6: false,
            outbound_addr6: None,
        })
    }

    /// The netmask of the network.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask_of(self.prefix))
    }

    /// True for addresses inside the virtual network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & u32::from(self.netmask()) == u32::from(self.network)
    }

    /// Where a guest packet to `dst` goes on the host: the gateway is the host's loopback
    /// (unless disabled), the DNS address is `resolver`'s port 53, other addresses inside the
    /// virtual network, the host's loopback under its own address, multicast and (IPv6)
    /// link-local ones are refused, the rest of the
    /// world is itself. IPv6 destinations are refused unless IPv6 is on.
    pub fn host_target(
        &self,
        dst: SocketAddr,
        resolver: Option<Ipv4Addr>,
    ) -> Result<SocketAddr, Drop> {
        let port = dst.port();
        let (gateway, dns, inside) = match dst.ip() {
            IpAddr::V4(ip) => (
                ip == self.gateway,
                ip == self.dns,
                self.contains(ip) || ip.is_broadcast() || ip.is_loopback(),
            ),
            IpAddr::V6(_) if !self.ipv6 => return Err(Drop::Refused),
            IpAddr::V6(ip) => (
                ip == GATEWAY6,
                ip == DNS6,
                in_prefix6(ip) || ip.is_unicast_link_local() || ip.is_loopback(),
            ),
        };
        if gateway {
            return match (self.host_loopback, dst) {
                (false, _) => Err(Drop::Refused),
                (true, SocketAddr::V4(_)) => Ok((Ipv4Addr::LOCALHOST, port).into()),
                (true, SocketAddr::V6(_)) => Ok((Ipv6Addr::LOCALHOST, port).into()),
            };
        }
        if dns && self.dns_enabled && port == crate::dns::PORT {
            return resolver.map(|r| (r, port).into()).ok_or(Drop::Refused);
        }
        let ip = dst.ip();
        if inside || ip.is_multicast() || ip.is_unspecified() {
            return Err(Drop::Refused);
        }
        Ok(dst)
    }

    /// The address a host peer appears as to a guest of family `v6`: loopback clients come
    /// from the gateway (slirp4netns's port handler does the same), others from their own
    /// address (an IPv4-mapped one as IPv4); a peer of the other family cannot be shown.
    pub fn guest_view(&self, peer: IpAddr, v6: bool) -> Result<IpAddr, Drop> {
        let peer = peer.to_canonical();
        if peer.is_loopback() || peer.is_unspecified() {
            return Ok(if v6 {
                GATEWAY6.into()
            } else {
                self.gateway.into()
            });
        }
        if peer.is_ipv6() != v6 {
            return Err(Drop::Unsupported);
        }
        Ok(peer)
    }

    /// The source address of outbound sockets to `to` (`--outbound-addr` or `-addr6`).
    pub fn outbound_for(&self, to: SocketAddr) -> Option<IpAddr> {
        match to {
            SocketAddr::V4(_) => self.outbound_addr.map(IpAddr::from),
            SocketAddr::V6(_) => self.outbound_addr6.map(IpAddr::from),
        }
    }

    /// The gateway's or DNS forwarder's MAC for frames from `from` (as the guest sees it).
    pub fn mac_for(&self, from: IpAddr) -> MacAddr {
        if from == IpAddr::V4(self.dns) || from == IpAddr::V6(DNS6) {
            virtual_mac(self.dns)
        } else {
            virtual_mac(self.gateway)
        }
    }

    /// The broadcast address of the network.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !u32::from(self.netmask()))
    }
}

/// The IPv4 netmask of a prefix length.
fn mask_of(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_cidr_gives_slirp4netns_addresses() {
        let c = NetConfig::from_cidr("10.0.2.0/24", 1500).unwrap();
        assert_eq!(c.gateway, Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(c.dns, Ipv4Addr::new(10, 0, 2, 3));
        assert_eq!(c.guest, Ipv4Addr::new(10, 0, 2, 100));
        assert_eq!(c.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 0, 2, 255));
        assert!(c.contains(Ipv4Addr::new(10, 0, 2, 77)));
        assert!(!c.contains(Ipv4Addr::new(10, 0, 3, 1)));
    }

    #[test]
    fn other_cidr_and_bad_ones() {
        let c = NetConfig::from_cidr("192.168.7.9/16", 1500).unwrap();
        assert_eq!(c.network, Ipv4Addr::new(192, 168, 0, 0));
        assert_eq!(c.guest, Ipv4Addr::new(192, 168, 0, 100));
        assert!(NetConfig::from_cidr("10.0.2.0/26", 1500).is_err());
        assert!(NetConfig::from_cidr("10.0.2.0", 1500).is_err());
        assert!(NetConfig::from_cidr("x/24", 1500).is_err());
        assert_eq!(virtual_mac(c.gateway).to_string(), "52:55:c0:a8:00:02");
    }

    #[test]
    fn host_targets() {
        let mut c = NetConfig::from_cidr("10.0.2.0/24", 1500).unwrap();
        let dns = Some(Ipv4Addr::new(192, 0, 2, 53));
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        let check = |c: &NetConfig, cases: &[(&str, Result<&str, Drop>)]| {
            for (to, want) in cases {
                assert_eq!(c.host_target(at(to), dns), want.map(at), "{to}");
            }
        };
        let v4: &[(&str, Result<&str, Drop>)] = &[
            ("10.0.2.2:80", Ok("127.0.0.1:80")),
            ("10.0.2.3:53", Ok("192.0.2.53:53")),
            ("10.0.2.3:80", Err(Drop::Refused)),
            ("10.0.2.9:80", Err(Drop::Refused)),
            ("224.0.0.1:80", Err(Drop::Refused)),
            ("192.0.2.1:80", Ok("192.0.2.1:80")),
            ("127.0.0.1:80", Err(Drop::Refused)),
            ("[fd00::2]:80", Err(Drop::Refused)),
        ];
        let v6: &[(&str, Result<&str, Drop>)] = &[
            ("[fd00::2]:80", Ok("[::1]:80")),
            ("[fd00::3]:53", Ok("192.0.2.53:53")),
            ("[fd00::64]:80", Err(Drop::Refused)),
            ("[fe80::1]:80", Err(Drop::Refused)),
            ("[::1]:80", Err(Drop::Refused)),
            ("[ff02::1]:80", Err(Drop::Refused)),
            ("[2001:db8::1]:80", Ok("[2001:db8::1]:80")),
        ];
        let closed: &[(&str, Result<&str, Drop>)] = &[
            ("10.0.2.2:80", Err(Drop::Refused)),
            ("10.0.2.3:53", Err(Drop::Refused)),
            ("[fd00::2]:80", Err(Drop::Refused)),
        ];
        check(&c, v4);
        assert_eq!(c.host_target(at("10.0.2.3:53"), None), Err(Drop::Refused));
        c.ipv6 = true;
        check(&c, v6);
        c.host_loopback = false;
        c.dns_enabled = false;
        check(&c, closed);
    }

    #[test]
    fn guest_views() {
        let c = NetConfig::from_cidr("10.0.2.0/24", 1500).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let gw = IpAddr::from(c.gateway);
        for (peer, v6, want) in [
            ("127.0.0.1", false, Ok(gw)),
            ("::1", false, Ok(gw)),
            ("192.0.2.7", false, Ok(ip("192.0.2.7"))),
            ("::ffff:192.0.2.7", false, Ok(ip("192.0.2.7"))),
            ("2001:db8::7", false, Err(Drop::Unsupported)),
            ("127.0.0.1", true, Ok(ip("fd00::2"))),
            ("2001:db8::7", true, Ok(ip("2001:db8::7"))),
            ("192.0.2.7", true, Err(Drop::Unsupported)),
        ] {
            assert_eq!(c.guest_view(ip(peer), v6), want, "{peer}");
        }
        assert_eq!(c.mac_for(ip("fd00::3")), virtual_mac(c.dns));
        assert_eq!(c.mac_for(ip("fd00::2")), virtual_mac(c.gateway));
        assert!(in_prefix6("fd00::abcd".parse().unwrap()));
        assert!(!in_prefix6("fd00:0:0:1::abcd".parse().unwrap()));
    }
}
