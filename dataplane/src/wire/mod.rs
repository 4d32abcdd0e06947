//! Wire formats: zero-copy typed views over `&[u8]` / `&mut [u8]` with checked constructors and
//! in-place setters (smoltcp's `wire` style), plus checksum arithmetic.

use serde::{Deserialize, Serialize};

pub mod arp;
pub mod checksum;
pub mod ethernet;
mod icmp;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod ndisc;
pub mod plain;
pub mod radv;
pub mod tcp;
pub mod udp;
mod view;
pub mod vnet;
pub mod vxlan;

#[cfg(test)]
mod proptests;

pub use arp::ArpPacket;
pub use ethernet::{parse_l2, EthernetFrame, L2Header, VlanTag};
pub use icmpv4::Icmpv4Packet;
pub use icmpv6::Icmpv6Packet;
pub use ipv4::Ipv4Packet;
pub use ipv6::Ipv6Packet;
pub use ndisc::NdiscPacket;
pub use tcp::TcpPacket;
pub use udp::UdpPacket;
pub use vxlan::VxlanHeader;

/// IP protocol number of ICMPv4.
pub const IPPROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IP protocol number of ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;

/// Reads a big-endian `u16` at `at`. Views call it only on offsets their checked constructor
/// guaranteed, so the bounds check folds into the length check and this is one load + bswap.
#[inline(always)]
pub(crate) fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Reads a big-endian `u32` at `at` (see [`read_u16`]).
#[inline(always)]
pub(crate) fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads four bytes at `at` as an array (addresses are copied, never interpreted as numbers).
#[inline(always)]
pub(crate) fn read_4(b: &[u8], at: usize) -> [u8; 4] {
    [b[at], b[at + 1], b[at + 2], b[at + 3]]
}

/// Writes `v` big-endian at `at`.
#[inline(always)]
pub(crate) fn write_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Writes `v` big-endian at `at`.
#[inline(always)]
pub(crate) fn write_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Reads a MAC address at `at`.
#[inline(always)]
pub(crate) fn read_mac(b: &[u8], at: usize) -> MacAddr {
    MacAddr([b[at], b[at + 1], b[at + 2], b[at + 3], b[at + 4], b[at + 5]])
}

/// Writes a MAC address at `at`.
#[inline(always)]
pub(crate) fn write_mac(b: &mut [u8], at: usize, mac: MacAddr) {
    b[at..at + 6].copy_from_slice(&mac.0);
}

/// Why a view could not be built over a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer ends before the header (or the length it declares).
    #[error("truncated {0} header")]
    Truncated(&'static str),
    /// A field holds a value the format does not allow.
    #[error("malformed {0} header")]
    Malformed(&'static str),
}

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// True for group (multicast and broadcast) addresses.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    /// True for ff:ff:ff:ff:ff:ff.
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// The address as the low 48 bits of a number (for compact table keys).
    pub fn to_u64(&self) -> u64 {
        self.0
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    }

    /// Docker's MAC for an IPv4 address: 02:42 followed by the four address bytes.
    pub fn from_ipv4(ip: std::net::Ipv4Addr) -> Self {
        let o = ip.octets();
        MacAddr([0x02, 0x42, o[0], o[1], o[2], o[3]])
    }

    /// sluice's MAC for an address of an IPv6-only network (no v4 address to take it from):
    /// 02:42 followed by the four 32-bit words of the address XORed, so that the same host
    /// part in two prefixes gives two MACs.
    pub fn from_ipv6(ip: std::net::Ipv6Addr) -> Self {
        let v = u128::from(ip);
        let folded = (v ^ (v >> 32) ^ (v >> 64) ^ (v >> 96)) as u32;
        Self::from_ipv4(std::net::Ipv4Addr::from(folded))
    }
}

impl std::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl std::fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in out.iter_mut() {
            let p = parts.next().filter(|p| p.len() == 2).ok_or_else(|| {
                format!("{s:?} is not a MAC address (expected xx:xx:xx:xx:xx:xx)")
            })?;
            *b = u8::from_str_radix(p, 16)
                .map_err(|_| format!("{s:?} is not a MAC address (bad hex {p:?})"))?;
        }
        if parts.next().is_some() {
            return Err(format!("{s:?} is not a MAC address (too many bytes)"));
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parse_and_display() {
        let m: MacAddr = "02:42:ac:11:00:02".parse().unwrap();
        assert_eq!(m.to_string(), "02:42:ac:11:00:02");
        assert_eq!(m, MacAddr::from_ipv4("172.17.0.2".parse().unwrap()));
        assert!("02:42:ac:11:00".parse::<MacAddr>().is_err());
        assert!("02:42:ac:11:00:02:03".parse::<MacAddr>().is_err());
        assert!("zz:42:ac:11:00:02".parse::<MacAddr>().is_err());
        assert!(MacAddr::BROADCAST.is_multicast() && MacAddr::BROADCAST.is_broadcast());
        assert_eq!(MacAddr([0, 0, 0, 0, 1, 2]).to_u64(), 0x0102);
    }
}
