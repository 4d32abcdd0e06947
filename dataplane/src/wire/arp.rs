//! ARP for IPv4 over Ethernet (RFC 826), the only kind the gateway answers.

use std::net::Ipv4Addr;

use super::ethernet::{EthernetFrame, ETHERTYPE_ARP, HEADER_LEN as ETH_LEN};
use super::view::{at_least, fields, view};
use super::{read_u16, write_u16, MacAddr, WireError};

/// Offsets of the Ethernet/IPv4 ARP packet's fields.
mod field {
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: usize = 8;
    pub const SPA: usize = 14;
    pub const THA: usize = 18;
    pub const TPA: usize = 24;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;
/// Operation: who has `target_ip`?
pub const OP_REQUEST: u16 = 1;
/// Operation: `sender_ip` is at `sender_mac`.
pub const OP_REPLY: u16 = 2;

/// Length of an Ethernet frame carrying an ARP packet, without padding.
pub const FRAME_LEN: usize = ETH_LEN + PACKET_LEN;
/// Length of the padded frame a host sends (the Ethernet minimum without FCS).
pub const MIN_FRAME_LEN: usize = 60;

const HTYPE_ETHERNET: u16 = 1;
const PTYPE_IPV4: u16 = 0x0800;

view! {
    /// A zero-copy view of an Ethernet/IPv4 ARP packet, so the gateway can answer requests for its
    /// address and the bridge can learn from them without copying.
    pub struct ArpPacket;
    /// Wraps `buffer` after checking it holds 28 bytes of Ethernet/IPv4 ARP (hardware type 1,
    /// protocol 0x0800, lengths 6 and 4). Trailing bytes (Ethernet padding) are allowed.
    checked by check;
}

/// The checks of [`ArpPacket::new_checked`].
#[inline]
fn check(b: &[u8]) -> Result<(), WireError> {
    at_least(b, PACKET_LEN, "ARP")?;
    if read_u16(b, field::HTYPE) != HTYPE_ETHERNET
        || read_u16(b, field::PTYPE) != PTYPE_IPV4
        || b[field::HLEN] != 6
        || b[field::PLEN] != 4
    {
        return Err(WireError::Malformed("ARP"));
    }
    Ok(())
}

fields! { ArpPacket:
    /// The operation ([`OP_REQUEST`], [`OP_REPLY`] or something the gateway ignores).
    operation, set_operation: u16 = field::OPER;
    /// Sender hardware address.
    sender_mac, set_sender_mac: MacAddr = field::SHA;
    /// Sender protocol address.
    sender_ip, set_sender_ip: Ipv4Addr = field::SPA;
    /// Target hardware address.
    target_mac, set_target_mac: MacAddr = field::THA;
    /// Target protocol address.
    target_ip, set_target_ip: Ipv4Addr = field::TPA;
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Writes the fixed Ethernet/IPv4 fields (types and lengths), for building a packet in a
    /// fresh buffer wrapped with [`ArpPacket::new_unchecked`].
    #[inline]
    pub fn init_ethernet_ipv4(&mut self) {
        let b = self.buffer.as_mut();
        write_u16(b, field::HTYPE, HTYPE_ETHERNET);
        write_u16(b, field::PTYPE, PTYPE_IPV4);
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
    }
}

/// Writes a broadcast ARP request from `(mac, ip)` asking for `target` over the first
/// [`FRAME_LEN`] bytes of `frame` (Ethernet header included); the rest is left as it is.
pub fn write_request(
    frame: &mut [u8],
    mac: MacAddr,
    ip: Ipv4Addr,
    target: Ipv4Addr,
) -> Result<(), WireError> {
    let frame = frame
        .get_mut(..FRAME_LEN)
        .ok_or(WireError::Truncated("ARP"))?;
    let (eth, body) = frame.split_at_mut(ETH_LEN);
    let mut eth = EthernetFrame::new_unchecked(eth);
    eth.set_dst(MacAddr::BROADCAST);
    eth.set_src(mac);
    eth.set_ethertype(ETHERTYPE_ARP);
    let mut arp = ArpPacket::new_unchecked(body);
    arp.init_ethernet_ipv4();
    arp.set_operation(OP_REQUEST);
    arp.set_sender_mac(mac);
    arp.set_sender_ip(ip);
    arp.set_target_mac(MacAddr::default());
    arp.set_target_ip(target);
    Ok(())
}

/// Turns the ARP request at `l3` in `frame` into the reply of `(mac, ip)`, addressed to the
/// requester (Ethernet header included), in place.
pub fn write_reply(
    frame: &mut [u8],
    l3: usize,
    mac: MacAddr,
    ip: Ipv4Addr,
) -> Result<(), WireError> {
    let (eth, rest) = frame.split_at_mut(l3);
    let mut arp = ArpPacket::new_checked(rest)?;
    let (asker_mac, asker_ip) = (arp.sender_mac(), arp.sender_ip());
    arp.set_operation(OP_REPLY);
    arp.set_target_mac(asker_mac);
    arp.set_target_ip(asker_ip);
    arp.set_sender_mac(mac);
    arp.set_sender_ip(ip);
    let mut eth = EthernetFrame::new_checked(eth)?;
    eth.set_dst(asker_mac);
    eth.set_src(mac);
    Ok(())
}

/// A broadcast ARP request from `(mac, ip)` for `target`, padded to [`MIN_FRAME_LEN`] bytes.
pub fn request_frame(mac: MacAddr, ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0; MIN_FRAME_LEN];
    // Cannot fail: the buffer is longer than the request.
    let _ = write_request(&mut f, mac, ip, target);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_then_parse() {
        let mut buf = [0u8; 42];
        let mut p = ArpPacket::new_unchecked(&mut buf[..]);
        p.init_ethernet_ipv4();
        p.set_operation(OP_REQUEST);
        p.set_sender_mac(MacAddr([2, 0x42, 0xac, 0x11, 0, 2]));
        p.set_sender_ip(Ipv4Addr::new(172, 17, 0, 2));
        p.set_target_mac(MacAddr::default());
        p.set_target_ip(Ipv4Addr::new(172, 17, 0, 1));
        assert_eq!(
            &buf[..8],
            &[0, 1, 8, 0, 6, 4, 0, 1],
            "fixed fields on the wire"
        );
        let p = ArpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(p.operation(), OP_REQUEST);
        assert_eq!(
            p.sender_mac(),
            MacAddr::from_ipv4(Ipv4Addr::new(172, 17, 0, 2))
        );
        assert_eq!(p.sender_ip(), Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(p.target_mac(), MacAddr::default());
        assert_eq!(p.target_ip(), Ipv4Addr::new(172, 17, 0, 1));
    }

    #[test]
    fn request_frames_ask_for_the_target_by_broadcast() {
        let (mac, ip) = (MacAddr([2, 0, 0, 0, 0, 1]), Ipv4Addr::new(192, 0, 2, 1));
        let target = Ipv4Addr::new(192, 0, 2, 254);
        let f = request_frame(mac, ip, target);
        assert_eq!(f.len(), MIN_FRAME_LEN);
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(
            (eth.dst(), eth.src(), eth.ethertype()),
            (MacAddr::BROADCAST, mac, ETHERTYPE_ARP)
        );
        let arp = ArpPacket::new_checked(eth.payload()).unwrap();
        assert_eq!(arp.operation(), OP_REQUEST);
        assert_eq!((arp.sender_mac(), arp.sender_ip()), (mac, ip));
        assert_eq!(
            (arp.target_mac(), arp.target_ip()),
            (MacAddr::default(), target)
        );
        assert!(f[FRAME_LEN..].iter().all(|b| *b == 0), "zero padding");
        assert!(write_request(&mut [0u8; FRAME_LEN - 1], mac, ip, target).is_err());
    }

    #[test]
    fn reply_answers_the_asker() {
        let gw_mac = MacAddr([2, 0x42, 0, 0, 0, 1]);
        let gw = Ipv4Addr::new(172, 17, 0, 1);
        let mut v = vec![0u8; 42];
        v[0..6].copy_from_slice(&[0xff; 6]);
        v[6..12].copy_from_slice(&[2, 0x42, 172, 17, 0, 2]);
        v[12..14].copy_from_slice(&[8, 6]);
        v[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        v[22..28].copy_from_slice(&[2, 0x42, 172, 17, 0, 2]);
        v[28..32].copy_from_slice(&[172, 17, 0, 2]);
        v[38..42].copy_from_slice(&gw.octets());
        write_reply(&mut v, 14, gw_mac, gw).unwrap();
        assert_eq!(&v[0..6], &[2, 0x42, 172, 17, 0, 2]);
        assert_eq!(&v[6..12], &gw_mac.0);
        assert_eq!(&v[20..22], &[0, 2]);
        assert_eq!(&v[22..28], &gw_mac.0);
        assert_eq!(&v[28..32], &gw.octets());
        assert_eq!(&v[32..38], &[2, 0x42, 172, 17, 0, 2]);
        assert_eq!(&v[38..42], &[172, 17, 0, 2]);
    }

    #[test]
    fn rejects_other_kinds_and_short_buffers() {
        let mut buf = [0u8; 28];
        ArpPacket::new_unchecked(&mut buf[..]).init_ethernet_ipv4();
        assert!(ArpPacket::new_checked(&buf[..]).is_ok());
        assert_eq!(
            ArpPacket::new_checked(&buf[..27]),
            Err(WireError::Truncated("ARP"))
        );
        for (i, v) in [(1, 6), (2, 0x86), (4, 8), (5, 16)] {
            let mut bad = buf;
            bad[i] = v;
            assert_eq!(
                ArpPacket::new_checked(&bad[..]),
                Err(WireError::Malformed("ARP"))
            );
        }
    }
}
