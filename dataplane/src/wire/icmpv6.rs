//! ICMPv6 messages (RFC 4443): echo for the v6 gateway's ping replies, and the errors it sends
//! for routed packets (packet too big, time exceeded, destination unreachable). Neighbour
//! discovery, also ICMPv6, has its own view in [`super::ndisc`].
//!
//! Unlike ICMPv4, the checksum covers the IPv6 pseudo-header, so the checksum methods take the
//! packet's source and destination addresses.

use std::net::Ipv6Addr;

use super::checksum::{adjust16, fold, ones_sum, pseudo_header_sum_v6};
use super::ethernet::{self, EthernetFrame, ETHERTYPE_IPV6, HEADER_LEN as ETH_LEN};
use super::icmp::{icmp_header, icmpv6_checksum};
use super::ipv6::{self, Ipv6Packet, HEADER_LEN as IPV6_LEN};
use super::view::{at_least, view};
use super::{MacAddr, WireError, IPPROTO_ICMPV6};

pub use super::icmp::HEADER_LEN;

/// Type: destination unreachable.
pub const DEST_UNREACHABLE: u8 = 1;
/// Type: packet too big (carries the MTU of the next hop).
pub const PACKET_TOO_BIG: u8 = 2;
/// Type: time exceeded.
pub const TIME_EXCEEDED: u8 = 3;
/// Type: parameter problem.
pub const PARAMETER_PROBLEM: u8 = 4;
/// Type: echo request.
pub const ECHO_REQUEST: u8 = 128;
/// Type: echo reply.
pub const ECHO_REPLY: u8 = 129;

/// Destination-unreachable code: no route to destination.
pub const CODE_NO_ROUTE: u8 = 0;
/// Destination-unreachable code: communication administratively prohibited.
pub const CODE_ADMIN_PROHIBITED: u8 = 1;
/// Destination-unreachable code: address unreachable.
pub const CODE_ADDR_UNREACHABLE: u8 = 3;
/// Destination-unreachable code: port unreachable.
pub const CODE_PORT_UNREACHABLE: u8 = 4;
/// Time-exceeded code: hop limit exceeded in transit.
pub const CODE_HOP_LIMIT_EXCEEDED: u8 = 0;

/// The IPv6 minimum link MTU (RFC 8200): an ICMPv6 error never makes a packet larger.
pub const MIN_MTU: usize = 1280;

view! {
    /// A zero-copy view of an ICMPv6 message. The buffer must be exactly the message (the upper
    /// layer payload), because the checksum covers all of it.
    ///
    /// After [`Icmpv6Packet::new_checked`] no accessor panics: the 8-byte header is present.
    pub struct Icmpv6Packet;
    /// Wraps `buffer` after checking the 8-byte header is present.
    checked by |b| at_least(b, HEADER_LEN, "ICMPv6");
}

icmp_header!(Icmpv6Packet);
icmpv6_checksum!(Icmpv6Packet);

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// True for error messages (types below 128, RFC 4443 section 2.1): they quote the
    /// offending packet, NAT must translate the quote, and no error may answer one.
    #[inline]
    pub fn is_error(&self) -> bool {
        self.msg_type() < 128
    }

    /// The MTU a packet-too-big message reports.
    #[inline]
    pub fn mtu(&self) -> Option<u32> {
        (self.msg_type() == PACKET_TOO_BIG).then(|| self.rest_of_header())
    }
}

/// The folded sum of ICMPv6 message `msg` (any type, NDP too) from `src` to `dst` and its
/// pseudo-header: 0xffff when the checksum inside is right, its complement the checksum when
/// the field holds 0.
pub(crate) fn message_sum(msg: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> u16 {
    let pseudo = pseudo_header_sum_v6(src, dst, IPPROTO_ICMPV6, msg.len() as u32);
    fold(ones_sum(msg, pseudo))
}

/// Bytes an ICMPv6 error frame puts in front of the packet it quotes: Ethernet, IPv6 and
/// ICMPv6 headers.
pub const ERROR_OVERHEAD: usize = ETH_LEN + IPV6_LEN + HEADER_LEN;

/// Hop limit of the packets sluice originates.
pub const HOP_LIMIT: u8 = 64;

/// How much of packet `orig` an ICMPv6 error quotes: as much as fits without the error
/// exceeding the minimum MTU (RFC 4443 section 2.4 (c)).
pub fn quote_len<T: AsRef<[u8]>>(orig: &Ipv6Packet<T>) -> usize {
    (IPV6_LEN + usize::from(orig.payload_len())).min(MIN_MTU - IPV6_LEN - HEADER_LEN)
}

/// Writes the headers of an ICMPv6 error from `from` to `to` over the first [`ERROR_OVERHEAD`]
/// bytes of `frame`, whose rest is the quote already in place: Ethernet, IPv6 (hop limit 64)
/// and ICMPv6 with `rest` as its body word (the MTU of packet-too-big), checksum filled.
/// `frame` must be at least [`ERROR_OVERHEAD`] bytes long.
pub fn write_error(
    frame: &mut [u8],
    to: (MacAddr, Ipv6Addr),
    from: (MacAddr, Ipv6Addr),
    (msg_type, code, rest): (u8, u8, u32),
) {
    let packet = ethernet::write_header(frame, to.0, from.0, ETHERTYPE_IPV6);
    let message = ipv6::write_header(packet, (from.1, to.1), IPPROTO_ICMPV6, HOP_LIMIT);
    let mut icmp = Icmpv6Packet::new_unchecked(message);
    icmp.set_msg_type(msg_type);
    icmp.set_code(code);
    icmp.set_rest_of_header(rest);
    icmp.fill_checksum(from.1, to.1);
}

/// Turns the ICMPv6 echo request at `l3` in `frame` into the reply from `(mac, ip)`, in place:
/// Ethernet destination the asker, IPv6 source `ip` and destination the asker, hop limit 64,
/// type echo reply, checksum updated. The request must carry ICMPv6 right after the fixed
/// header (no extension headers) and be addressed to `ip`; anything else is `Malformed`.
pub fn write_echo_reply(
    frame: &mut [u8],
    l3: usize,
    (mac, ip): (MacAddr, Ipv6Addr),
) -> Result<(), WireError> {
    let (eth, rest) = frame.split_at_mut(l3);
    let mut packet = Ipv6Packet::new_checked(&mut *rest)?;
    if packet.next_header() != IPPROTO_ICMPV6 || packet.dst() != ip {
        return Err(WireError::Malformed("ICMPv6 echo request"));
    }
    let asker = packet.src();
    packet.set_dst(asker);
    packet.set_hop_limit(HOP_LIMIT);
    let mut icmp = Icmpv6Packet::new_checked(packet.payload_mut())?;
    if icmp.msg_type() != ECHO_REQUEST {
        return Err(WireError::Malformed("ICMPv6 echo request"));
    }
    // The pseudo-header holds the same two addresses, swapped: its sum does not change.
    let old = u16::from_be_bytes([ECHO_REQUEST, icmp.code()]);
    icmp.set_msg_type(ECHO_REPLY);
    let new = u16::from_be_bytes([ECHO_REPLY, icmp.code()]);
    let c = adjust16(icmp.checksum(), old, new);
    icmp.set_checksum(c);
    packet.set_src(ip);
    let mut eth = EthernetFrame::new_checked(eth)?;
    let asker_mac = eth.src();
    eth.set_dst(asker_mac);
    eth.set_src(mac);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{Icmpv6Header, Icmpv6Type, PacketBuilder, SlicedPacket, TransportSlice};
    use proptest::prelude::*;

    const A: Ipv6Addr = Ipv6Addr::new(0xfd00, 9, 0, 0, 0, 0, 0, 2);
    const GW: Ipv6Addr = Ipv6Addr::new(0xfd00, 9, 0, 0, 0, 0, 0, 1);
    const A_MAC: MacAddr = MacAddr([2, 0x42, 0, 0, 0, 2]);
    const GW_MAC: MacAddr = MacAddr([2, 0x42, 0, 0, 0, 1]);

    fn echo_request(payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(A_MAC.0, GW_MAC.0)
            .ipv6(A.octets(), GW.octets(), 7)
            .icmpv6_echo_request(0x1234, 9)
            .write(&mut v, payload)
            .unwrap();
        v
    }

    #[test]
    fn echo_fields_and_checksum_agree_with_etherparse() {
        let v = echo_request(b"hello");
        let p = Icmpv6Packet::new_checked(&v[54..]).unwrap();
        assert_eq!(
            (p.msg_type(), p.code(), p.echo_ident(), p.echo_seq()),
            (ECHO_REQUEST, 0, 0x1234, 9)
        );
        assert_eq!(p.payload(), b"hello");
        assert!(p.verify_checksum(A, GW));
        assert!(!p.verify_checksum(GW, GW));
        assert!(!p.is_error() && p.mtu().is_none());
        let mut mine = v[54..].to_vec();
        let mut m = Icmpv6Packet::new_unchecked(&mut mine[..]);
        m.set_checksum(0xdead);
        m.fill_checksum(A, GW);
        assert_eq!(mine, v[54..]);
        assert_eq!(
            Icmpv6Packet::new_checked(&v[..7]),
            Err(WireError::Truncated("ICMPv6"))
        );
    }

    #[test]
    fn echo_reply_in_place() {
        let mut v = echo_request(b"hello");
        write_echo_reply(&mut v, 14, (GW_MAC, GW)).unwrap();
        assert_eq!((&v[0..6], &v[6..12]), (&A_MAC.0[..], &GW_MAC.0[..]));
        let parsed = SlicedPacket::from_ethernet(&v).unwrap();
        let Some(etherparse::NetSlice::Ipv6(ip)) = parsed.net else {
            panic!("not ipv6")
        };
        let h = ip.header();
        assert_eq!((h.source_addr(), h.destination_addr()), (GW, A));
        assert_eq!(h.hop_limit(), HOP_LIMIT);
        let Some(TransportSlice::Icmpv6(icmp)) = parsed.transport else {
            panic!("not icmpv6")
        };
        assert_eq!(icmp.type_u8(), ECHO_REPLY);
        let want =
            Icmpv6Header::with_checksum(icmp.icmp_type(), GW.octets(), A.octets(), icmp.payload())
                .unwrap();
        assert_eq!(icmp.checksum(), want.checksum);
        // Not for this address, or not an echo request: refused, frame untouched.
        let mut v = echo_request(b"x");
        let orig = v.clone();
        assert!(write_echo_reply(&mut v, 14, (GW_MAC, A)).is_err());
        assert_eq!(v, orig);
        write_echo_reply(&mut v, 14, (GW_MAC, GW)).unwrap();
        assert!(write_echo_reply(&mut v, 14, (GW_MAC, A)).is_err());
    }

    #[test]
    fn errors_in_place_agree_with_etherparse() {
        let orig = echo_request(&[0xab; 1400]);
        let quoted = quote_len(&Ipv6Packet::new_checked(&orig[14..]).unwrap());
        assert_eq!(quoted, MIN_MTU - 48);
        let cases = [
            (
                PACKET_TOO_BIG,
                0,
                1280,
                Icmpv6Type::PacketTooBig { mtu: 1280 },
            ),
            (
                TIME_EXCEEDED,
                CODE_HOP_LIMIT_EXCEEDED,
                0,
                Icmpv6Type::TimeExceeded(etherparse::icmpv6::TimeExceededCode::HopLimitExceeded),
            ),
            (
                DEST_UNREACHABLE,
                CODE_ADDR_UNREACHABLE,
                0,
                Icmpv6Type::DestinationUnreachable(
                    etherparse::icmpv6::DestUnreachableCode::Address,
                ),
            ),
        ];
        for (ty, code, rest, theirs) in cases {
            let mut frame = vec![0u8; ERROR_OVERHEAD];
            frame.extend_from_slice(&orig[14..14 + quoted]);
            write_error(&mut frame, (A_MAC, A), (GW_MAC, GW), (ty, code, rest));
            assert_eq!(frame.len() - 14, MIN_MTU);
            let mut want = Vec::new();
            PacketBuilder::ethernet2(GW_MAC.0, A_MAC.0)
                .ipv6(GW.octets(), A.octets(), HOP_LIMIT)
                .icmpv6(theirs)
                .write(&mut want, &orig[14..14 + quoted])
                .unwrap();
            assert_eq!(frame, want, "type {ty}");
            let p = Icmpv6Packet::new_checked(&frame[54..]).unwrap();
            assert!(p.is_error() && p.verify_checksum(GW, A));
            assert_eq!(p.mtu(), (ty == PACKET_TOO_BIG).then_some(1280));
        }
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(p) = Icmpv6Packet::new_checked(&data[..]) {
                std::hint::black_box((p.msg_type(), p.code(), p.checksum(), p.echo_ident(),
                    p.echo_seq(), p.rest_of_header(), p.is_error(), p.mtu(), p.payload().len(),
                    p.verify_checksum(A, GW)));
            }
            let mut frame = data.clone();
            let _ = write_echo_reply(&mut frame, data.len().min(14), (GW_MAC, GW));
        }

        #[test]
        fn fill_checksum_matches_etherparse(ty in any::<u8>(), code in any::<u8>(),
                                            rest in any::<[u8; 4]>(),
                                            body in proptest::collection::vec(any::<u8>(), 0..80),
                                            src in any::<u128>(), dst in any::<u128>()) {
            let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
            let mut msg = vec![ty, code, 0, 0];
            msg.extend_from_slice(&rest);
            msg.extend_from_slice(&body);
            let mut p = Icmpv6Packet::new_checked(&mut msg[..]).unwrap();
            p.fill_checksum(src, dst);
            prop_assert!(p.verify_checksum(src, dst));
            let theirs = Icmpv6Type::Unknown { type_u8: ty, code_u8: code, bytes5to8: rest };
            let want = theirs.calc_checksum(src.octets(), dst.octets(), &body).unwrap();
            prop_assert_eq!(p.checksum(), want);
        }
    }
}
