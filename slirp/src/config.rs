//! The virtual network's addressing, derived from the command line as slirp4netns does.
#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddrV4};

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
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        let net = u32::from(addr) & mask;
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
        })
    }

    /// The netmask of the network.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(
            u32::MAX
                .checked_shl(32 - u32::from(self.prefix))
                .unwrap_or(0),
        )
    }

    /// True for addresses inside the virtual network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & u32::from(self.netmask()) == u32::from(self.network)
    }

    /// Where a guest packet to `dst` goes on the host: the gateway is the host's loopback
    /// (unless disabled), the DNS address is `resolver`'s port 53, other addresses inside the
    /// virtual network and multicast are refused, the rest of the world is itself.
    pub fn host_target(
        &self,
        dst: SocketAddrV4,
        resolver: Option<Ipv4Addr>,
    ) -> Result<SocketAddrV4, Drop> {
        let ip = *dst.ip();
        if ip == self.gateway {
            return if self.host_loopback {
                Ok(SocketAddrV4::new(Ipv4Addr::LOCALHOST, dst.port()))
            } else {
                Err(Drop::Refused)
            };
        }
        if ip == self.dns && self.dns_enabled && dst.port() == crate::dns::PORT {
            return resolver
                .map(|r| SocketAddrV4::new(r, dst.port()))
                .ok_or(Drop::Refused);
        }
        if self.contains(ip) || ip.is_multicast() || ip.is_broadcast() || ip.is_unspecified() {
            return Err(Drop::Refused);
        }
        Ok(dst)
    }

    /// The address a host peer appears as to the guest: loopback clients come from the
    /// gateway (slirp4netns's port handler does the same), others from their own address.
    pub fn guest_view(&self, peer: Ipv4Addr) -> Ipv4Addr {
        if peer.is_loopback() || peer.is_unspecified() {
            self.gateway
        } else {
            peer
        }
    }

    /// The broadcast address of the network.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !u32::from(self.netmask()))
    }
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
        let at = |ip: [u8; 4], port| SocketAddrV4::new(ip.into(), port);
        let dns = Some(Ipv4Addr::new(192, 0, 2, 53));
        assert_eq!(
            c.host_target(at([10, 0, 2, 2], 80), dns),
            Ok(at([127, 0, 0, 1], 80))
        );
        assert_eq!(
            c.host_target(at([10, 0, 2, 3], 53), dns),
            Ok(at([192, 0, 2, 53], 53))
        );
        assert_eq!(
            c.host_target(at([10, 0, 2, 3], 53), None),
            Err(Drop::Refused)
        );
        assert_eq!(
            c.host_target(at([10, 0, 2, 3], 80), dns),
            Err(Drop::Refused)
        );
        assert_eq!(
            c.host_target(at([10, 0, 2, 9], 80), dns),
            Err(Drop::Refused)
        );
        assert_eq!(
            c.host_target(at([224, 0, 0, 1], 80), dns),
            Err(Drop::Refused)
        );
        assert_eq!(
            c.host_target(at([192, 0, 2, 1], 80), dns),
            Ok(at([192, 0, 2, 1], 80))
        );
        c.host_loopback = false;
        c.dns_enabled = false;
        assert_eq!(
            c.host_target(at([10, 0, 2, 2], 80), dns),
            Err(Drop::Refused)
        );
        assert_eq!(
            c.host_target(at([10, 0, 2, 3], 53), dns),
            Err(Drop::Refused)
        );
        assert_eq!(c.guest_view(Ipv4Addr::LOCALHOST), c.gateway);
        assert_eq!(
            c.guest_view(Ipv4Addr::new(192, 0, 2, 7)),
            Ipv4Addr::new(192, 0, 2, 7)
        );
    }
}
