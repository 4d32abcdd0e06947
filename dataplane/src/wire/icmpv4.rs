//! ICMPv4 messages (RFC 792, RFC 1191): echo for the gateway's ping replies, errors that NAT
//! translates and the gateway generates.

use std::net::Ipv4Addr;

use super::checksum::{adjust16, fold, internet_checksum, ones_sum};
use super::ethernet::{self, EthernetFrame, ETHERTYPE_IPV4, HEADER_LEN as ETH_LEN};
use super::icmp::icmp_header;
use super::ipv4::{Ipv4Packet, MIN_HEADER_LEN as IPV4_LEN, QUOTED_MIN_PAYLOAD};
use super::view::{at_least, view};
use super::{read_u16, write_u16, MacAddr, WireError, IPPROTO_ICMP};

/// Offset of the next-hop MTU of "fragmentation needed" (the rest-of-header's second half).
const NEXT_HOP_MTU: usize = 6;

pub use super::icmp::HEADER_LEN;

/// Type: echo reply.
pub const ECHO_REPLY: u8 = 0;
/// Type: destination unreachable.
pub const DEST_UNREACHABLE: u8 = 3;
/// Type: source quench (deprecated, still an error that quotes a datagram).
pub const SOURCE_QUENCH: u8 = 4;
/// Type: redirect.
pub const REDIRECT: u8 = 5;
/// Type: echo request.
pub const ECHO_REQUEST: u8 = 8;
/// Type: time exceeded.
pub const TIME_EXCEEDED: u8 = 11;
/// Type: parameter problem.
pub const PARAMETER_PROBLEM: u8 = 12;

/// Destination-unreachable code: network unreachable.
pub const CODE_NET_UNREACHABLE: u8 = 0;
/// Destination-unreachable code: host unreachable.
pub const CODE_HOST_UNREACHABLE: u8 = 1;
/// Destination-unreachable code: protocol unreachable.
pub const CODE_PROTO_UNREACHABLE: u8 = 2;
/// Destination-unreachable code: port unreachable.
pub const CODE_PORT_UNREACHABLE: u8 = 3;
/// Destination-unreachable code: fragmentation needed and DF set (carries the next-hop MTU).
pub const CODE_FRAG_NEEDED: u8 = 4;
/// Destination unreachable code: communication administratively prohibited (RFC 1812).
pub const CODE_ADMIN_PROHIBITED: u8 = 13;
/// Time-exceeded code: TTL exceeded in transit.
pub const CODE_TTL_EXCEEDED: u8 = 0;

view! {
    /// A zero-copy view of an ICMPv4 message. The buffer must be exactly the message (the IPv4
    /// payload), because the checksum covers all of it.
    ///
    /// After [`Icmpv4Packet::new_checked`] no accessor panics: the 8-byte header is present.
    pub struct Icmpv4Packet;
    /// Wraps `buffer` after checking the 8-byte header is present.
    checked by |b| at_least(b, HEADER_LEN, "ICMPv4");
}

icmp_header!(Icmpv4Packet);

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// True for the error types that quote the offending datagram (3, 4, 5, 11, 12): NAT must
    /// translate the quote, and no error may be sent in reply to one.
    #[inline]
    pub fn is_error(&self) -> bool {
        matches!(
            self.msg_type(),
            DEST_UNREACHABLE | SOURCE_QUENCH | REDIRECT | TIME_EXCEEDED | PARAMETER_PROBLEM
        )
    }

    /// The next-hop MTU of a "fragmentation needed" message (type 3 code 4, bytes 6..8).
    #[inline]
    pub fn next_hop_mtu(&self) -> Option<u16> {
        (self.msg_type() == DEST_UNREACHABLE && self.code() == CODE_FRAG_NEEDED)
            .then(|| read_u16(self.buffer.as_ref(), NEXT_HOP_MTU))
    }

    /// True when the checksum over the whole message is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        fold(ones_sum(self.buffer.as_ref(), 0)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    /// Sets the next-hop MTU (bytes 6..8; byte 4..6 stay as they are, normally 0).
    #[inline]
    pub fn set_next_hop_mtu(&mut self, mtu: u16) {
        write_u16(self.buffer.as_mut(), NEXT_HOP_MTU, mtu);
    }

    /// Recomputes the checksum over the whole message.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = internet_checksum(self.buffer.as_ref());
        self.set_checksum(c);
    }
}

/// Bytes an ICMP error frame puts in front of the datagram it quotes: Ethernet, IPv4 (without
/// options) and ICMP headers.
pub const ERROR_OVERHEAD: usize = ETH_LEN + IPV4_LEN + HEADER_LEN;

/// TOS of the errors sluice sends: precedence "internetwork control", as routers send them.
const ERROR_TOS: u8 = 0xc0;
/// TTL of the packets sluice originates.
const TTL: u8 = 64;

/// How much of datagram `orig` an ICMP error quotes: its header and first 8 payload bytes
/// (RFC 792), or all of it when it is shorter.
pub fn quote_len<T: AsRef<[u8]>>(orig: &Ipv4Packet<T>) -> usize {
    (orig.header_len() + QUOTED_MIN_PAYLOAD).min(usize::from(orig.total_len()))
}

/// Writes the headers of an ICMP error from `from` to `to` over the first [`ERROR_OVERHEAD`]
/// bytes of `frame`, whose rest is the quote already in place: Ethernet, IPv4 (TOS 0xc0, TTL
/// 64) and ICMP with `rest` as its second word (the next-hop MTU of fragmentation-needed),
/// both checksums filled. `frame` must be at least [`ERROR_OVERHEAD`] bytes long.
pub fn write_error(
    frame: &mut [u8],
    to: (MacAddr, Ipv4Addr),
    from: (MacAddr, Ipv4Addr),
    (msg_type, code, rest): (u8, u8, u32),
) {
    let packet = ethernet::write_header(frame, to.0, from.0, ETHERTYPE_IPV4);
    let (header, message) = packet.split_at_mut(IPV4_LEN);
    let mut ip = Ipv4Packet::new_unchecked(header);
    ip.init_header();
    ip.set_tos(ERROR_TOS);
    ip.set_total_len((IPV4_LEN + message.len()) as u16);
    ip.set_ident(0);
    ip.set_flags_frag(false, false, 0);
    ip.set_ttl(TTL);
    ip.set_protocol(IPPROTO_ICMP);
    ip.set_src(from.1);
    ip.set_dst(to.1);
    ip.fill_checksum();
    let mut icmp = Icmpv4Packet::new_unchecked(message);
    icmp.set_msg_type(msg_type);
    icmp.set_code(code);
    icmp.set_rest_of_header(rest);
    icmp.fill_checksum();
}

/// Turns the ICMP echo request at `l3` in `frame` into the reply from `mac`, in place:
/// addresses swapped (Ethernet and IPv4), TTL 64, type echo reply, checksums adjusted.
pub fn write_echo_reply(frame: &mut [u8], l3: usize, mac: MacAddr) -> Result<(), WireError> {
    let (eth, rest) = frame.split_at_mut(l3);
    let mut ip = Ipv4Packet::new_checked(&mut *rest)?;
    let (src, dst) = (ip.src(), ip.dst());
    ip.set_src(dst);
    ip.set_dst(src);
    ip.set_ttl(TTL);
    ip.fill_checksum();
    let hl = ip.header_len();
    let total = usize::from(ip.total_len());
    let mut icmp = Icmpv4Packet::new_checked(&mut rest[hl..total])?;
    let old = u16::from_be_bytes([icmp.msg_type(), icmp.code()]);
    icmp.set_msg_type(ECHO_REPLY);
    let new = u16::from_be_bytes([ECHO_REPLY, icmp.code()]);
    let c = adjust16(icmp.checksum(), old, new);
    icmp.set_checksum(c);
    let mut eth = EthernetFrame::new_checked(eth)?;
    let asker = eth.src();
    eth.set_dst(asker);
    eth.set_src(mac);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo() {
        let mut buf = [0u8; 8 + 4];
        let mut p = Icmpv4Packet::new_checked(&mut buf[..]).unwrap();
        p.set_msg_type(ECHO_REQUEST);
        p.set_echo_ident(0x1234);
        p.set_echo_seq(7);
        p.payload_mut().copy_from_slice(b"abcd");
        p.fill_checksum();
        assert!(p.verify_checksum());
        let p = Icmpv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(
            (p.msg_type(), p.code(), p.echo_ident(), p.echo_seq()),
            (8, 0, 0x1234, 7)
        );
        assert_eq!(p.rest_of_header(), 0x1234_0007);
        assert!(!p.is_error());
        assert_eq!(p.next_hop_mtu(), None);
        assert_eq!(p.payload(), b"abcd");
    }

    #[test]
    fn echo_reply_swaps_and_keeps_checksums_valid() {
        use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
        let gw_mac = MacAddr([2, 0x42, 0, 0, 0, 1]);
        let b = PacketBuilder::ethernet2([2, 0x42, 172, 17, 0, 2], gw_mac.0)
            .ipv4([172, 17, 0, 2], [172, 17, 0, 1], 64)
            .icmpv4_echo_request(7, 9);
        let mut v = Vec::new();
        b.write(&mut v, b"hello").unwrap();
        write_echo_reply(&mut v, 14, gw_mac).unwrap();
        let parsed = SlicedPacket::from_ethernet(&v).unwrap();
        assert_eq!(&v[0..6], &[2, 0x42, 172, 17, 0, 2]);
        match parsed.transport.unwrap() {
            TransportSlice::Icmpv4(icmp) => {
                assert_eq!(icmp.type_u8(), ECHO_REPLY);
                assert_eq!(internet_checksum(&v[34..]), 0);
            }
            _ => panic!("not icmp"),
        }
        assert_eq!(internet_checksum(&v[14..34]), 0);
    }

    #[test]
    fn errors() {
        let mut buf = [0u8; 8 + 28];
        let mut p = Icmpv4Packet::new_checked(&mut buf[..]).unwrap();
        p.set_msg_type(DEST_UNREACHABLE);
        p.set_code(CODE_FRAG_NEEDED);
        p.set_rest_of_header(0);
        p.set_next_hop_mtu(1400);
        assert!(p.is_error());
        assert_eq!(p.next_hop_mtu(), Some(1400));
        p.set_code(CODE_PORT_UNREACHABLE);
        assert_eq!(p.next_hop_mtu(), None);
        for t in [SOURCE_QUENCH, REDIRECT, TIME_EXCEEDED, PARAMETER_PROBLEM] {
            p.set_msg_type(t);
            assert!(p.is_error());
        }
        p.set_msg_type(ECHO_REPLY);
        assert!(!p.is_error());
        assert_eq!(
            Icmpv4Packet::new_checked(&buf[..7]),
            Err(WireError::Truncated("ICMPv4"))
        );
    }
}
