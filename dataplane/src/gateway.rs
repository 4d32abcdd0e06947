//! The gateway's own answers, built in place in the frame that asked: ARP replies, ICMP echo
//! replies, and ICMP errors (time exceeded, fragmentation needed) that quote the offending header
//! where it already lies, growing the frame into its headroom. Nothing is allocated.

use std::net::Ipv4Addr;

use crate::frame::{Frame, Offload};
use crate::wire::arp::ArpPacket;
use crate::wire::checksum;
use crate::wire::ethernet::ETHERTYPE_IPV4;
use crate::wire::icmpv4::Icmpv4Packet;
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::{MacAddr, WireError};

/// Bytes an ICMP error puts in front of the quoted header: Ethernet, IPv4 and ICMP headers.
const ERROR_OVERHEAD: usize = 14 + 20 + 8;

/// ICMP type: echo reply.
pub const ICMP_ECHO_REPLY: u8 = 0;
/// ICMP type: destination unreachable.
pub const ICMP_DEST_UNREACHABLE: u8 = 3;
/// ICMP type: echo request.
pub const ICMP_ECHO_REQUEST: u8 = 8;
/// ICMP type: time exceeded.
pub const ICMP_TIME_EXCEEDED: u8 = 11;
/// Destination-unreachable code: fragmentation needed and DF set.
pub const ICMP_FRAG_NEEDED: u8 = 4;

/// Turns the ARP request at `l3` into the reply of `(mac, ip)`, addressed to the requester.
pub fn arp_reply(data: &mut [u8], l3: usize, mac: MacAddr, ip: Ipv4Addr) -> Result<(), WireError> {
    let (eth, rest) = data.split_at_mut(l3);
    let mut arp = ArpPacket::new_checked(rest)?;
    let (asker_mac, asker_ip) = (arp.sender_mac(), arp.sender_ip());
    arp.set_operation(2);
    arp.set_target_mac(asker_mac);
    arp.set_target_ip(asker_ip);
    arp.set_sender_mac(mac);
    arp.set_sender_ip(ip);
    eth[0..6].copy_from_slice(&asker_mac.0);
    eth[6..12].copy_from_slice(&mac.0);
    Ok(())
}

/// Turns the ARP-resolving need for `target` into an ARP request from `(mac, ip)`, written over
/// the frame that needed it (that packet is lost, as in any host stack waiting for ARP).
pub fn arp_request(
    frame: &mut Frame<'_>,
    mac: MacAddr,
    ip: Ipv4Addr,
    target: Ipv4Addr,
) -> Result<(), WireError> {
    const LEN: usize = 14 + 28;
    if frame.set_len(LEN).is_err() {
        return Err(WireError::Truncated("arp"));
    }
    let d = frame.data_mut();
    d[0..6].copy_from_slice(&MacAddr::BROADCAST.0);
    d[6..12].copy_from_slice(&mac.0);
    d[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    d[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    d[22..28].copy_from_slice(&mac.0);
    d[28..32].copy_from_slice(&ip.octets());
    d[32..38].copy_from_slice(&[0; 6]);
    d[38..42].copy_from_slice(&target.octets());
    frame.meta.offload = Offload::default();
    Ok(())
}

/// Turns the ICMP echo request at `l3` into the reply from `mac`: addresses swapped, type 0.
pub fn echo_reply(data: &mut [u8], l3: usize, mac: MacAddr) -> Result<(), WireError> {
    let (eth, rest) = data.split_at_mut(l3);
    let mut ip = Ipv4Packet::new_checked(&mut *rest)?;
    let (src, dst) = (ip.src(), ip.dst());
    ip.set_src(dst);
    ip.set_dst(src);
    ip.set_ttl(64);
    ip.fill_checksum();
    let hl = ip.header_len();
    let total = usize::from(ip.total_len());
    let mut icmp = Icmpv4Packet::new_checked(&mut rest[hl..total])?;
    let old = u16::from_be_bytes([icmp.msg_type(), icmp.code()]);
    icmp.set_msg_type(ICMP_ECHO_REPLY);
    let new = u16::from_be_bytes([ICMP_ECHO_REPLY, icmp.code()]);
    let c = checksum::adjust16(icmp.checksum(), old, new);
    icmp.set_checksum(c);
    let mut asker = [0u8; 6];
    asker.copy_from_slice(&eth[6..12]);
    eth[0..6].copy_from_slice(&asker);
    eth[6..12].copy_from_slice(&mac.0);
    Ok(())
}

/// Replaces the IPv4 packet at `l3` by an ICMP error from `(mac, ip)` to its sender, quoting its
/// header and first 8 payload bytes in place (RFC 792). `rest` is the ICMP header's second word
/// (the next-hop MTU for fragmentation-needed). Needs 28 bytes of headroom for an untagged
/// frame; fails, leaving the frame as it was, when the headroom or the packet is too short.
pub fn icmp_error(
    frame: &mut Frame<'_>,
    l3: usize,
    mac: MacAddr,
    ip: Ipv4Addr,
    msg_type: u8,
    code: u8,
    rest: u32,
) -> Result<(), WireError> {
    let (quoted, asker_mac, asker_ip) = {
        let d = frame.data();
        let orig = Ipv4Packet::new_checked(d.get(l3..).ok_or(WireError::Truncated("ipv4"))?)?;
        let quoted = (orig.header_len() + 8).min(usize::from(orig.total_len()));
        let mut m = [0u8; 6];
        m.copy_from_slice(&d[6..12]);
        (quoted, MacAddr(m), orig.src())
    };
    let (buf, head, _) = frame.raw_parts();
    let ip_at = head + l3;
    let new_head = ip_at
        .checked_sub(ERROR_OVERHEAD)
        .ok_or(WireError::Truncated("headroom"))?;
    let out = &mut buf[new_head..ip_at + quoted];
    out[0..6].copy_from_slice(&asker_mac.0);
    out[6..12].copy_from_slice(&mac.0);
    out[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    let total = (20 + 8 + quoted) as u16;
    let hdr = &mut out[14..34];
    hdr.copy_from_slice(&[
        0x45, 0xc0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    hdr[2..4].copy_from_slice(&total.to_be_bytes());
    hdr[12..16].copy_from_slice(&ip.octets());
    hdr[16..20].copy_from_slice(&asker_ip.octets());
    let c = checksum::internet_checksum(hdr);
    hdr[10..12].copy_from_slice(&c.to_be_bytes());
    let icmp = &mut out[34..];
    icmp[0] = msg_type;
    icmp[1] = code;
    icmp[2..4].copy_from_slice(&[0, 0]);
    icmp[4..8].copy_from_slice(&rest.to_be_bytes());
    let c = checksum::internet_checksum(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    frame
        .set_bounds(new_head, ERROR_OVERHEAD + quoted)
        .map_err(|_| WireError::Truncated("frame"))?;
    frame.meta.offload = Offload::default();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Meta, HEADROOM};
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

    const GW_MAC: MacAddr = MacAddr([2, 0x42, 0, 0, 0, 1]);
    const GW: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);

    fn udp_frame(ttl: u8) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0x42, 172, 17, 0, 2], GW_MAC.0)
            .ipv4([172, 17, 0, 2], [8, 8, 8, 8], ttl)
            .udp(5000, 53);
        let mut v = Vec::new();
        b.write(&mut v, &[7u8; 30]).unwrap();
        v
    }

    #[test]
    fn time_exceeded_quotes_the_header_in_place() {
        let pkt = udp_frame(1);
        let mut buf = vec![0u8; HEADROOM + pkt.len()];
        buf[HEADROOM..].copy_from_slice(&pkt);
        let mut f = Frame::new(&mut buf, HEADROOM, pkt.len(), Meta::default()).unwrap();
        icmp_error(&mut f, 14, GW_MAC, GW, ICMP_TIME_EXCEEDED, 0, 0).unwrap();
        let parsed = SlicedPacket::from_ethernet(f.data()).unwrap();
        let ip = match parsed.net.unwrap() {
            etherparse::NetSlice::Ipv4(ip) => ip,
            _ => panic!("not ipv4"),
        };
        assert_eq!(ip.header().source(), GW.octets());
        assert_eq!(ip.header().destination(), [172, 17, 0, 2]);
        match parsed.transport.unwrap() {
            TransportSlice::Icmpv4(icmp) => {
                assert_eq!(icmp.type_u8(), ICMP_TIME_EXCEEDED);
                let full = f.data()[34..].to_vec();
                assert_eq!(checksum::internet_checksum(&full), 0);
                assert_eq!(&full[8..8 + 28], &pkt[14..14 + 28]);
            }
            _ => panic!("not icmp"),
        }
        assert_eq!(f.len(), 42 + 28);
    }

    #[test]
    fn icmp_error_needs_headroom() {
        let pkt = udp_frame(1);
        let mut buf = pkt.clone();
        let mut f = Frame::new(&mut buf, 0, pkt.len(), Meta::default()).unwrap();
        assert!(icmp_error(&mut f, 14, GW_MAC, GW, ICMP_TIME_EXCEEDED, 0, 0).is_err());
        assert_eq!(f.data(), &pkt[..]);
    }

    #[test]
    fn echo_reply_swaps_and_keeps_checksums_valid() {
        let b = PacketBuilder::ethernet2([2, 0x42, 172, 17, 0, 2], GW_MAC.0)
            .ipv4([172, 17, 0, 2], GW.octets(), 64)
            .icmpv4_echo_request(7, 9);
        let mut v = Vec::new();
        b.write(&mut v, b"hello").unwrap();
        echo_reply(&mut v, 14, GW_MAC).unwrap();
        let parsed = SlicedPacket::from_ethernet(&v).unwrap();
        assert_eq!(&v[0..6], &[2, 0x42, 172, 17, 0, 2]);
        match parsed.transport.unwrap() {
            TransportSlice::Icmpv4(icmp) => {
                assert_eq!(icmp.type_u8(), ICMP_ECHO_REPLY);
                assert_eq!(checksum::internet_checksum(&v[34..]), 0);
            }
            _ => panic!("not icmp"),
        }
        assert_eq!(checksum::internet_checksum(&v[14..34]), 0);
    }

    #[test]
    fn arp_reply_answers_the_asker() {
        let mut v = vec![0u8; 42];
        v[0..6].copy_from_slice(&[0xff; 6]);
        v[6..12].copy_from_slice(&[2, 0x42, 172, 17, 0, 2]);
        v[12..14].copy_from_slice(&[8, 6]);
        v[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        v[22..28].copy_from_slice(&[2, 0x42, 172, 17, 0, 2]);
        v[28..32].copy_from_slice(&[172, 17, 0, 2]);
        v[38..42].copy_from_slice(&GW.octets());
        arp_reply(&mut v, 14, GW_MAC, GW).unwrap();
        assert_eq!(&v[0..6], &[2, 0x42, 172, 17, 0, 2]);
        assert_eq!(&v[6..12], &GW_MAC.0);
        assert_eq!(&v[20..22], &[0, 2]);
        assert_eq!(&v[22..28], &GW_MAC.0);
        assert_eq!(&v[28..32], &GW.octets());
        assert_eq!(&v[32..38], &[2, 0x42, 172, 17, 0, 2]);
        assert_eq!(&v[38..42], &[172, 17, 0, 2]);
    }
}
