//! Router discovery (RFC 4861 section 4.1-4.2, RFC 8106): recognising a router solicitation
//! and writing a router advertisement with the options a user-mode router hands out (source
//! link-layer address, MTU, one prefix for SLAAC, one recursive DNS server).

use std::net::Ipv6Addr;

use super::ethernet::{self, ETHERTYPE_IPV6};
use super::icmpv6::Icmpv6Packet;
use super::ipv6::{Ipv6Packet, HEADER_LEN as IPV6_LEN};
use super::ndisc::{multicast_mac, ALL_NODES, HOP_LIMIT, OPT_SOURCE_LL_ADDR};
use super::{write_mac, write_u16, write_u32, MacAddr, WireError, IPPROTO_ICMPV6};

/// ICMPv6 type of a router solicitation.
pub const ROUTER_SOLICIT: u8 = 133;
/// ICMPv6 type of a router advertisement.
pub const ROUTER_ADVERT: u8 = 134;

mod field {
    pub const CUR_HOP_LIMIT: usize = 4;
    pub const FLAGS: usize = 5;
    pub const LIFETIME: usize = 6;
    pub const REACHABLE: usize = 8;
    pub const RETRANS: usize = 12;
    pub const OPTIONS: usize = 16;
}

const OPT_PREFIX_INFO: u8 = 3;
const OPT_MTU: u8 = 5;
const OPT_RDNSS: u8 = 25;
const LL_LEN: usize = 8;
const MTU_LEN: usize = 8;
const PREFIX_LEN: usize = 32;
const RDNSS_LEN: usize = 24;
/// Prefix information flags: on-link (L) and autonomous address configuration (A).
const PREFIX_ON_LINK_AUTO: u8 = 0xc0;

/// Length of the ICMPv6 message [`write_advert`] writes.
pub const ADVERT_LEN: usize = field::OPTIONS + LL_LEN + MTU_LEN + PREFIX_LEN + RDNSS_LEN;

/// What a router advertisement announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advert {
    /// How long the router is a default router, in seconds.
    pub router_lifetime: u16,
    /// The link MTU.
    pub mtu: u32,
    /// The /64 prefix the guest builds its address in.
    pub prefix: Ipv6Addr,
    /// Valid lifetime of the prefix, in seconds.
    pub valid_lifetime: u32,
    /// Preferred lifetime of the prefix, in seconds.
    pub preferred_lifetime: u32,
    /// The DNS server (RDNSS), when there is one.
    pub dns: Option<Ipv6Addr>,
    /// Lifetime of the DNS server, in seconds.
    pub dns_lifetime: u32,
}

/// True when the IPv6 packet `ip` is a router solicitation that may be answered: ICMPv6 with
/// hop limit 255, code 0 and a right checksum.
pub fn is_solicitation<T: AsRef<[u8]>>(ip: &Ipv6Packet<T>) -> bool {
    if ip.next_header() != IPPROTO_ICMPV6 || ip.hop_limit() != HOP_LIMIT {
        return false;
    }
    Icmpv6Packet::new_checked(ip.payload()).is_ok_and(|m| {
        m.msg_type() == ROUTER_SOLICIT && m.code() == 0 && m.verify_checksum(ip.src(), ip.dst())
    })
}

/// Writes a router advertisement from `from` (a link-local address and its MAC) to all nodes
/// into `frame` and returns the frame length; `frame` must hold the Ethernet and IPv6 headers
/// and [`ADVERT_LEN`] bytes.
pub fn write_advert(
    frame: &mut [u8],
    from: (MacAddr, Ipv6Addr),
    ra: &Advert,
) -> Result<usize, WireError> {
    let len = ethernet::HEADER_LEN + IPV6_LEN + ADVERT_LEN;
    let frame = frame
        .get_mut(..len)
        .ok_or(WireError::Truncated("router advertisement"))?;
    let packet = ethernet::write_header(frame, multicast_mac(ALL_NODES), from.0, ETHERTYPE_IPV6);
    let (header, m) = packet.split_at_mut(IPV6_LEN);
    let mut ip = Ipv6Packet::new_unchecked(header);
    ip.set_version_tc_flow(0, 0);
    ip.set_payload_len(ADVERT_LEN as u16);
    ip.set_next_header(IPPROTO_ICMPV6);
    ip.set_hop_limit(HOP_LIMIT);
    ip.set_src(from.1);
    ip.set_dst(ALL_NODES);
    m.fill(0);
    m[field::CUR_HOP_LIMIT] = 64;
    m[field::FLAGS] = 0;
    write_u16(m, field::LIFETIME, ra.router_lifetime);
    write_u32(m, field::REACHABLE, 0);
    write_u32(m, field::RETRANS, 0);
    let o = &mut m[field::OPTIONS..];
    o[0] = OPT_SOURCE_LL_ADDR;
    o[1] = (LL_LEN / 8) as u8;
    write_mac(o, 2, from.0);
    let o = &mut o[LL_LEN..];
    o[0] = OPT_MTU;
    o[1] = (MTU_LEN / 8) as u8;
    write_u32(o, 4, ra.mtu);
    let o = &mut o[MTU_LEN..];
    o[0] = OPT_PREFIX_INFO;
    o[1] = (PREFIX_LEN / 8) as u8;
    o[2] = 64;
    o[3] = PREFIX_ON_LINK_AUTO;
    write_u32(o, 4, ra.valid_lifetime);
    write_u32(o, 8, ra.preferred_lifetime);
    o[16..32].copy_from_slice(&ra.prefix.octets());
    let o = &mut o[PREFIX_LEN..];
    if let Some(dns) = ra.dns {
        o[0] = OPT_RDNSS;
        o[1] = (RDNSS_LEN / 8) as u8;
        write_u32(o, 4, ra.dns_lifetime);
        o[8..24].copy_from_slice(&dns.octets());
    }
    let used = if ra.dns.is_some() {
        ADVERT_LEN
    } else {
        ADVERT_LEN - RDNSS_LEN
    };
    let mut ip = Ipv6Packet::new_unchecked(&mut packet[..IPV6_LEN]);
    ip.set_payload_len(used as u16);
    let mut icmp = Icmpv6Packet::new_unchecked(&mut packet[IPV6_LEN..IPV6_LEN + used]);
    icmp.set_msg_type(ROUTER_ADVERT);
    icmp.set_code(0);
    icmp.fill_checksum(from.1, ALL_NODES);
    Ok(ethernet::HEADER_LEN + IPV6_LEN + used)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{Icmpv6Type, SlicedPacket, TransportSlice};

    const ROUTER: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
    const MAC: MacAddr = MacAddr([0x52, 0x55, 10, 0, 2, 2]);

    fn advert(dns: Option<Ipv6Addr>) -> Advert {
        Advert {
            router_lifetime: 1800,
            mtu: 65520,
            prefix: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0),
            valid_lifetime: 86400,
            preferred_lifetime: 14400,
            dns,
            dns_lifetime: 600,
        }
    }

    #[test]
    fn advert_parses_with_its_options() {
        let mut f = vec![0u8; 200];
        let dns = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3);
        let n = write_advert(&mut f, (MAC, ROUTER), &advert(Some(dns))).unwrap();
        assert_eq!(n, 14 + 40 + ADVERT_LEN);
        let p = SlicedPacket::from_ethernet(&f[..n]).unwrap();
        let Some(TransportSlice::Icmpv6(icmp)) = p.transport else {
            panic!("not ICMPv6");
        };
        assert!(matches!(
            icmp.icmp_type(),
            Icmpv6Type::Unknown { type_u8: 134, .. }
        ));
        let ip = Ipv6Packet::new_checked(&f[14..n]).unwrap();
        assert_eq!(
            (ip.src(), ip.dst(), ip.hop_limit()),
            (ROUTER, ALL_NODES, 255)
        );
        let m = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert!(m.verify_checksum(ROUTER, ALL_NODES));
        let o = &ip.payload()[field::OPTIONS..];
        assert_eq!((o[0], &o[2..8]), (OPT_SOURCE_LL_ADDR, &MAC.0[..]));
        assert_eq!(&o[12..16], &65520u32.to_be_bytes());
        assert_eq!((o[16], o[18], o[19]), (OPT_PREFIX_INFO, 64, 0xc0));
        assert_eq!(&o[32..34], &[0xfd, 0]);
        assert_eq!((o[48], &o[56..72]), (OPT_RDNSS, &dns.octets()[..]));
        let short = write_advert(&mut f, (MAC, ROUTER), &advert(None)).unwrap();
        assert_eq!(short, n - RDNSS_LEN);
        assert!(write_advert(&mut f[..60], (MAC, ROUTER), &advert(None)).is_err());
    }

    #[test]
    fn solicitations_are_recognised() {
        let guest = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x64);
        let all_routers = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
        let mut b = [0u8; IPV6_LEN + 8];
        let mut ip = Ipv6Packet::new_unchecked(&mut b[..]);
        ip.set_version_tc_flow(0, 0);
        ip.set_payload_len(8);
        ip.set_next_header(IPPROTO_ICMPV6);
        ip.set_hop_limit(HOP_LIMIT);
        ip.set_src(guest);
        ip.set_dst(all_routers);
        let mut m = Icmpv6Packet::new_unchecked(&mut b[IPV6_LEN..]);
        m.set_msg_type(ROUTER_SOLICIT);
        m.fill_checksum(guest, all_routers);
        assert!(is_solicitation(&Ipv6Packet::new_checked(&b[..]).unwrap()));
        b[IPV6_LEN + 7] ^= 1;
        assert!(!is_solicitation(&Ipv6Packet::new_checked(&b[..]).unwrap()));
        b[IPV6_LEN + 7] ^= 1;
        b[7] = 64;
        assert!(!is_solicitation(&Ipv6Packet::new_checked(&b[..]).unwrap()));
    }
}
