//! UDP headers (RFC 768): ports for NAT, and the checksum with its "0 = none" rule.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::checksum::{fold, ones_sum, pseudo_header_sum_v4, pseudo_header_sum_v6, udp_nonzero};
use super::view::{at_least, fields, ports, view, within};
use super::{read_u16, WireError, IPPROTO_UDP};

/// Offsets of the UDP header's fields.
mod field {
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

/// Offset of the checksum field (a checksum-partial datagram's `csum_offset`).
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM;

view! {
    /// A zero-copy view of a UDP datagram, starting at the UDP header.
    ///
    /// After [`UdpPacket::new_checked`] no accessor panics: the header is present and the
    /// length field lies between 8 and the buffer length (the buffer may be longer).
    pub struct UdpPacket;
    /// Wraps `buffer` after checking the header is present and `8 <= length <= buffer length`.
    checked by check;
}

/// The checks of [`UdpPacket::new_checked`].
#[inline]
fn check(b: &[u8]) -> Result<(), WireError> {
    at_least(b, HEADER_LEN, "UDP")?;
    let len = usize::from(read_u16(b, field::LENGTH));
    within(b, len, HEADER_LEN, ("UDP", "UDP (length)"))
}

ports!(UdpPacket);

fields! { UdpPacket:
    /// Length field: header plus payload.
    len, set_len: u16 = field::LENGTH;
    /// Checksum field; 0 means the sender did not compute one.
    checksum, set_checksum: u16 = field::CHECKSUM;
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// True when the length field says there is no payload.
    #[inline]
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// The datagram (header + payload) as the length field delimits it, clamped to the buffer.
    #[inline]
    fn datagram(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[..usize::from(self.len()).clamp(HEADER_LEN, b.len())]
    }

    /// Payload up to the length field.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.datagram()[HEADER_LEN..]
    }

    /// True when there is no checksum (0) or it is correct for IPv4 `src` to `dst`.
    #[inline]
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let init = pseudo_header_sum_v4(src, dst, IPPROTO_UDP, self.len());
        fold(ones_sum(self.datagram(), init)) == 0xffff
    }

    /// True when the checksum is correct for IPv6 `src` to `dst` (mandatory in IPv6: 0 fails).
    #[inline]
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        if self.checksum() == 0 {
            return false;
        }
        let init = pseudo_header_sum_v6(src, dst, IPPROTO_UDP, u32::from(self.len()));
        fold(ones_sum(self.datagram(), init)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Mutable payload up to the length field.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len()).clamp(HEADER_LEN, self.buffer.as_ref().len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    /// Computes the checksum over the IPv4 pseudo header and the datagram; a computed 0 is
    /// written as 0xffff because 0 means "none".
    #[inline]
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let init = pseudo_header_sum_v4(src, dst, IPPROTO_UDP, self.len());
        let c = udp_nonzero(!fold(ones_sum(self.datagram(), init)));
        self.set_checksum(c);
    }

    /// Computes the checksum over the datagram from `pseudo`, the pseudo-header sum of either
    /// IP version (0 becomes 0xffff).
    #[inline]
    pub fn fill_checksum_from(&mut self, pseudo: u32) {
        self.set_checksum(0);
        let c = udp_nonzero(!fold(ones_sum(self.datagram(), pseudo)));
        self.set_checksum(c);
    }

    /// Computes the checksum over the IPv6 pseudo header and the datagram (0 becomes 0xffff).
    #[inline]
    pub fn fill_checksum_v6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let init = pseudo_header_sum_v6(src, dst, IPPROTO_UDP, u32::from(self.len()));
        let c = udp_nonzero(!fold(ones_sum(self.datagram(), init)));
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_checksum() {
        let mut buf = [0u8; 8 + 4 + 6]; // 6 bytes beyond the datagram
        let mut u = UdpPacket::new_unchecked(&mut buf[..]);
        u.set_src_port(5353);
        u.set_dst_port(53);
        u.set_len(12);
        u.payload_mut().copy_from_slice(b"ping");
        let (s, d) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        u.fill_checksum_v4(s, d);
        assert!(u.verify_checksum_v4(s, d));
        assert!(!u.verify_checksum_v4(s, s));
        let u = UdpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(
            (u.src_port(), u.dst_port(), u.len(), u.payload()),
            (5353, 53, 12, &b"ping"[..])
        );
        assert!(!u.is_empty());
    }

    #[test]
    fn zero_checksum_means_none() {
        let mut buf = [0u8; 8];
        let mut u = UdpPacket::new_unchecked(&mut buf[..]);
        u.set_len(8);
        assert!(u.verify_checksum_v4(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST));
        assert!(!u.verify_checksum_v6(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST));
        assert!(u.is_empty());
    }

    #[test]
    fn computed_zero_is_sent_as_ffff() {
        // Choose a port so the sum over pseudo header + datagram is 0xffff, i.e. checksum 0.
        let (s, d) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let mut buf = [0u8; 8];
        let mut u = UdpPacket::new_unchecked(&mut buf[..]);
        u.set_len(8);
        let partial = fold(ones_sum(
            &[0, 0, 0, 0, 0, 8, 0, 0],
            pseudo_header_sum_v4(s, d, 17, 8),
        ));
        u.set_src_port(0xffff - partial);
        u.fill_checksum_v4(s, d);
        assert_eq!(u.checksum(), 0xffff);
        assert!(u.verify_checksum_v4(s, d));
    }

    #[test]
    fn checks() {
        let mut buf = [0u8; 10];
        buf[5] = 7;
        assert!(matches!(
            UdpPacket::new_checked(&buf[..]),
            Err(WireError::Malformed(_))
        ));
        buf[5] = 11;
        assert_eq!(
            UdpPacket::new_checked(&buf[..]),
            Err(WireError::Truncated("UDP"))
        );
        buf[5] = 10;
        assert!(UdpPacket::new_checked(&buf[..]).is_ok());
        assert_eq!(
            UdpPacket::new_checked(&buf[..7]),
            Err(WireError::Truncated("UDP"))
        );
    }
}
