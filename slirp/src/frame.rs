//! Building frames to the guest: Ethernet + IPv4 headers around an L4 payload that the caller
//! already placed at a fixed offset of the buffer (so socket reads land in place).
#![forbid(unsafe_code)]

use std::net::Ipv4Addr;

use sluice_dataplane::wire::{ethernet, EthernetFrame, Ipv4Packet, MacAddr};

/// Length of the Ethernet header.
pub const ETH_LEN: usize = ethernet::HEADER_LEN;
/// Where the IPv4 payload starts (no IP options).
pub const L4_AT: usize = ETH_LEN + 20;
/// The largest frame the engine builds or reads (MTU 65520 + Ethernet header).
pub const MAX_FRAME: usize = 65536;

/// The two ends of a frame to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ends {
    /// Source MAC (the gateway's or the DNS forwarder's).
    pub src_mac: MacAddr,
    /// Destination MAC (the guest's).
    pub dst_mac: MacAddr,
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
}

/// Writes the Ethernet and IPv4 headers for `l4_len` bytes of protocol `proto` at [`L4_AT`];
/// returns the frame length.
pub fn ipv4_headers(buf: &mut [u8], ends: &Ends, proto: u8, l4_len: usize, ident: u16) -> usize {
    let total = L4_AT + l4_len;
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..total]);
    eth.set_dst(ends.dst_mac);
    eth.set_src(ends.src_mac);
    eth.set_ethertype(ethernet::ETHERTYPE_IPV4);
    let mut ip = Ipv4Packet::new_unchecked(&mut buf[ETH_LEN..total]);
    ip.init_header();
    ip.set_tos(0);
    ip.set_total_len((20 + l4_len) as u16);
    ip.set_ident(ident);
    ip.set_flags_frag(true, false, 0);
    ip.set_ttl(64);
    ip.set_protocol(proto);
    ip.set_src(ends.src);
    ip.set_dst(ends.dst);
    ip.fill_checksum();
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_back() {
        let mut buf = vec![0u8; 100];
        let ends = Ends {
            src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
            src: Ipv4Addr::new(10, 0, 2, 2),
            dst: Ipv4Addr::new(10, 0, 2, 100),
        };
        let n = ipv4_headers(&mut buf, &ends, 17, 8, 7);
        assert_eq!(n, L4_AT + 8);
        let eth = EthernetFrame::new_checked(&buf[..n]).unwrap();
        assert_eq!(eth.dst(), ends.dst_mac);
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(
            (ip.src(), ip.dst(), ip.protocol()),
            (ends.src, ends.dst, 17)
        );
        assert_eq!(ip.payload().len(), 8);
    }
}
