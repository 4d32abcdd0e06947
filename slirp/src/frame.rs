//! Building frames to the guest: Ethernet + IPv4 or IPv6 headers around an L4 payload that the
//! caller already placed at the family's fixed offset of the buffer (so socket reads land in
//! place), and the L4 checksums of either family.
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv6Addr};

use sluice_dataplane::wire::{
    checksum, ethernet, ipv6, EthernetFrame, Ipv4Packet, Ipv6Packet, MacAddr, TcpPacket, UdpPacket,
};

/// Length of the Ethernet header.
pub const ETH_LEN: usize = ethernet::HEADER_LEN;
/// Where the IPv4 payload starts (no IP options).
pub const L4_AT: usize = ETH_LEN + 20;
/// Where the IPv6 payload starts (no extension headers).
pub const L4_AT_V6: usize = ETH_LEN + ipv6::HEADER_LEN;
/// The largest frame the engine builds or reads (MTU 65520 + Ethernet header).
pub const MAX_FRAME: usize = 65536;
/// Hop limit (TTL) of the packets the engine originates.
pub const HOP_LIMIT: u8 = 64;

/// The two ends of a frame to the guest (both addresses of one family).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ends {
    /// Source MAC (the gateway's or the DNS forwarder's).
    pub src_mac: MacAddr,
    /// Destination MAC (the guest's).
    pub dst_mac: MacAddr,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
}

/// `ip` as IPv6 (IPv4 mapped), for the code paths that take either family.
pub fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

impl Ends {
    /// True for IPv6 frames.
    pub fn is_v6(&self) -> bool {
        self.dst.is_ipv6()
    }

    /// Where the L4 header starts in frames between these ends.
    pub fn l4_at(&self) -> usize {
        if self.is_v6() {
            L4_AT_V6
        } else {
            L4_AT
        }
    }

    /// The pseudo-header sum of an L4 message of `proto` and `l4_len` bytes.
    pub fn pseudo_sum(&self, proto: u8, l4_len: usize) -> u32 {
        pseudo_sum(self.src, self.dst, proto, l4_len)
    }
}

/// The pseudo-header sum of an L4 message of `proto` and `l4_len` bytes from `src` to `dst`.
pub fn pseudo_sum(src: IpAddr, dst: IpAddr, proto: u8, l4_len: usize) -> u32 {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            checksum::pseudo_header_sum_v4(s, d, proto, l4_len as u16)
        }
        (s, d) => checksum::pseudo_header_sum_v6(v6(s), v6(d), proto, l4_len as u32),
    }
}

/// True when the TCP segment `p` from `src` to `dst` has a right checksum.
pub fn tcp_checksum_ok(p: &TcpPacket<&[u8]>, src: IpAddr, dst: IpAddr) -> bool {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => p.verify_checksum_v4(s, d),
        (s, d) => p.verify_checksum_v6(v6(s), v6(d)),
    }
}

/// True when the UDP datagram `p` from `src` to `dst` has a right checksum.
pub fn udp_checksum_ok(p: &UdpPacket<&[u8]>, src: IpAddr, dst: IpAddr) -> bool {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => p.verify_checksum_v4(s, d),
        (s, d) => p.verify_checksum_v6(v6(s), v6(d)),
    }
}

/// Fills the checksum of the TCP segment `p` between `ends`.
pub fn fill_tcp_checksum(p: &mut TcpPacket<&mut [u8]>, ends: &Ends) {
    match (ends.src, ends.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => p.fill_checksum_v4(s, d),
        (s, d) => p.fill_checksum_v6(v6(s), v6(d)),
    }
}

/// Fills the checksum of the UDP datagram `p` between `ends`.
pub fn fill_udp_checksum(p: &mut UdpPacket<&mut [u8]>, ends: &Ends) {
    match (ends.src, ends.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => p.fill_checksum_v4(s, d),
        (s, d) => p.fill_checksum_v6(v6(s), v6(d)),
    }
}

/// Writes the Ethernet and IP headers for `l4_len` bytes of protocol `proto` at
/// [`Ends::l4_at`]; returns the frame length. `ident` is the IPv4 identification.
pub fn ip_headers(buf: &mut [u8], ends: &Ends, proto: u8, l4_len: usize, ident: u16) -> usize {
    let total = ends.l4_at() + l4_len;
    let ethertype = if ends.is_v6() {
        ethernet::ETHERTYPE_IPV6
    } else {
        ethernet::ETHERTYPE_IPV4
    };
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..total]);
    eth.set_dst(ends.dst_mac);
    eth.set_src(ends.src_mac);
    eth.set_ethertype(ethertype);
    match (ends.src, ends.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let mut ip = Ipv4Packet::new_unchecked(&mut buf[ETH_LEN..total]);
            ip.init_header();
            ip.set_tos(0);
            ip.set_total_len((20 + l4_len) as u16);
            ip.set_ident(ident);
            ip.set_flags_frag(true, false, 0);
            ip.set_ttl(HOP_LIMIT);
            ip.set_protocol(proto);
            ip.set_src(src);
            ip.set_dst(dst);
            ip.fill_checksum();
        }
        (src, dst) => {
            let mut ip = Ipv6Packet::new_unchecked(&mut buf[ETH_LEN..total]);
            ip.set_version_tc_flow(0, 0);
            ip.set_payload_len(l4_len as u16);
            ip.set_next_header(proto);
            ip.set_hop_limit(HOP_LIMIT);
            ip.set_src(v6(src));
            ip.set_dst(v6(dst));
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn headers_parse_back() {
        let mut buf = vec![0u8; 100];
        let ends = Ends {
            src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
            src: Ipv4Addr::new(10, 0, 2, 2).into(),
            dst: Ipv4Addr::new(10, 0, 2, 100).into(),
        };
        let n = ip_headers(&mut buf, &ends, 17, 8, 7);
        assert_eq!(n, L4_AT + 8);
        let eth = EthernetFrame::new_checked(&buf[..n]).unwrap();
        assert_eq!(eth.dst(), ends.dst_mac);
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(
            (ip.src().into(), ip.dst().into(), ip.protocol()),
            (ends.src, ends.dst, 17)
        );
        assert_eq!(ip.payload().len(), 8);
    }

    #[test]
    fn v6_headers_parse_back() {
        let mut buf = vec![0u8; 120];
        let ends = Ends {
            src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
            src: "fd00::2".parse().unwrap(),
            dst: "fd00::64".parse().unwrap(),
        };
        assert!(ends.is_v6());
        let n = ip_headers(&mut buf, &ends, 17, 8, 7);
        assert_eq!(n, L4_AT_V6 + 8);
        let eth = EthernetFrame::new_checked(&buf[..n]).unwrap();
        assert_eq!(eth.ethertype(), ethernet::ETHERTYPE_IPV6);
        let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
        assert_eq!(
            (IpAddr::from(ip.src()), IpAddr::from(ip.dst())),
            (ends.src, ends.dst)
        );
        assert_eq!((ip.next_header(), ip.payload().len()), (17, 8));
    }
}
