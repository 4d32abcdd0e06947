//! TCP headers (RFC 9293): what NAT reads and rewrites (ports, flags, checksum).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::checksum::{fold, ones_sum, pseudo_header_sum_v4, pseudo_header_sum_v6};
use super::view::{at_least, fields, ports, view, within};
use super::{WireError, IPPROTO_TCP};

/// Offsets of the TCP header's fields.
mod field {
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
}

/// Length of a TCP header without options.
pub const MIN_HEADER_LEN: usize = 20;
/// Bytes of header up to the flags included: what connection tracking needs.
pub const FLAGS_END: usize = field::FLAGS + 1;
/// Bytes of header up to the checksum included: what NAT needs to fix it.
pub const CHECKSUM_END: usize = field::CHECKSUM + 2;
/// Offset of the checksum field (a checksum-partial segment's `csum_offset`).
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM;

/// FIN flag bit.
pub const FIN: u8 = 0x01;
/// SYN flag bit.
pub const SYN: u8 = 0x02;
/// RST flag bit.
pub const RST: u8 = 0x04;
/// PSH flag bit.
pub const PSH: u8 = 0x08;
/// ACK flag bit.
pub const ACK: u8 = 0x10;
/// URG flag bit.
pub const URG: u8 = 0x20;
/// ECE flag bit.
pub const ECE: u8 = 0x40;
/// CWR flag bit.
pub const CWR: u8 = 0x80;

view! {
    /// A zero-copy view of a TCP segment. The buffer must be exactly the segment (the
    /// IPv4/IPv6 payload), because the checksum covers all of it.
    ///
    /// After [`TcpPacket::new_checked`] no accessor panics: the header, options included, is
    /// inside the buffer.
    pub struct TcpPacket;
    /// Wraps `buffer` after checking that the data offset is at least 5 and the header lies
    /// inside the buffer.
    checked by check;
}

/// The checks of [`TcpPacket::new_checked`].
#[inline]
fn check(b: &[u8]) -> Result<(), WireError> {
    at_least(b, MIN_HEADER_LEN, "TCP")?;
    let hl = usize::from(b[field::DATA_OFF] >> 4) * 4;
    within(b, hl, MIN_HEADER_LEN, ("TCP", "TCP (data offset)"))
}

ports!(TcpPacket);

fields! { TcpPacket:
    /// Sequence number.
    seq, set_seq: u32 = field::SEQ;
    /// Acknowledgment number.
    ack, set_ack: u32 = field::ACK;
    /// The flag byte: test it against [`FIN`], [`SYN`], [`RST`], [`ACK`], ...
    flags, set_flags: u8 = field::FLAGS;
    /// Receive window.
    window, set_window: u16 = field::WINDOW;
    /// Checksum field.
    checksum, set_checksum: u16 = field::CHECKSUM;
    /// Urgent pointer.
    urgent, set_urgent: u16 = field::URGENT;
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Header length in bytes (data offset * 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// Option bytes.
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[MIN_HEADER_LEN..self.header_len()]
    }

    /// Segment data after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// Partial sum of the whole segment as it is now, checksum field included.
    #[inline]
    fn segment_sum(&self, initial: u32) -> u32 {
        ones_sum(self.buffer.as_ref(), initial)
    }

    /// Segment length as the pseudo header carries it; `None` if it cannot be a TCP/IPv4
    /// segment (over 65535 bytes).
    #[inline]
    fn len_u16(&self) -> Option<u16> {
        u16::try_from(self.buffer.as_ref().len()).ok()
    }

    /// True when the checksum is correct for an IPv4 segment from `src` to `dst`.
    #[inline]
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.len_u16().is_some_and(|len| {
            fold(self.segment_sum(pseudo_header_sum_v4(src, dst, IPPROTO_TCP, len))) == 0xffff
        })
    }

    /// True when the checksum is correct for an IPv6 segment from `src` to `dst`.
    #[inline]
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let len = self.buffer.as_ref().len() as u32;
        fold(self.segment_sum(pseudo_header_sum_v6(src, dst, IPPROTO_TCP, len))) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Mutable segment data after the header.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[hl..]
    }

    /// Computes the checksum over the IPv4 pseudo header and the whole segment. A segment over
    /// 65535 bytes cannot be TCP/IPv4 and gets its length truncated in the pseudo header, so
    /// its checksum will not verify.
    #[inline]
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let len = self.buffer.as_ref().len() as u16;
        let c = !fold(self.segment_sum(pseudo_header_sum_v4(src, dst, IPPROTO_TCP, len)));
        self.set_checksum(c);
    }

    /// Computes the checksum over the whole segment from `pseudo`, the pseudo-header sum of
    /// either IP version.
    #[inline]
    pub fn fill_checksum_from(&mut self, pseudo: u32) {
        self.set_checksum(0);
        let c = !fold(self.segment_sum(pseudo));
        self.set_checksum(c);
    }

    /// Computes the checksum over the IPv6 pseudo header and the whole segment.
    #[inline]
    pub fn fill_checksum_v6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let len = self.buffer.as_ref().len() as u32;
        let c = !fold(self.segment_sum(pseudo_header_sum_v6(src, dst, IPPROTO_TCP, len)));
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_checksum() {
        let mut seg = [0u8; 24 + 5];
        seg[12] = 6 << 4;
        let mut t = TcpPacket::new_checked(&mut seg[..]).unwrap();
        t.set_src_port(40000);
        t.set_dst_port(80);
        t.set_seq(0xdead_beef);
        t.set_ack(7);
        t.set_flags(SYN | ACK);
        t.set_window(65535);
        t.set_urgent(3);
        t.payload_mut().copy_from_slice(b"hello");
        let (s, d) = (Ipv4Addr::new(172, 17, 0, 2), Ipv4Addr::new(1, 1, 1, 1));
        t.fill_checksum_v4(s, d);
        assert!(t.verify_checksum_v4(s, d));
        assert!(!t.verify_checksum_v4(d, d));
        let t = TcpPacket::new_checked(&seg[..]).unwrap();
        assert_eq!(
            (t.src_port(), t.dst_port(), t.seq(), t.ack()),
            (40000, 80, 0xdead_beef, 7)
        );
        assert_eq!(
            (t.header_len(), t.flags(), t.window(), t.urgent()),
            (24, SYN | ACK, 65535, 3)
        );
        assert_eq!((t.options().len(), t.payload()), (4, &b"hello"[..]));
    }

    #[test]
    fn checks() {
        let mut seg = [0u8; 20];
        seg[12] = 5 << 4;
        assert!(TcpPacket::new_checked(&seg[..]).is_ok());
        assert_eq!(
            TcpPacket::new_checked(&seg[..19]),
            Err(WireError::Truncated("TCP"))
        );
        seg[12] = 4 << 4;
        assert!(matches!(
            TcpPacket::new_checked(&seg[..]),
            Err(WireError::Malformed(_))
        ));
        seg[12] = 6 << 4;
        assert_eq!(
            TcpPacket::new_checked(&seg[..]),
            Err(WireError::Truncated("TCP"))
        );
    }

    #[test]
    fn v6_checksum() {
        let mut seg = [0u8; 20];
        seg[12] = 5 << 4;
        let mut t = TcpPacket::new_checked(&mut seg[..]).unwrap();
        let (s, d): (Ipv6Addr, Ipv6Addr) = ("fd00::2".parse().unwrap(), "fd00::1".parse().unwrap());
        t.fill_checksum_v6(s, d);
        assert!(t.verify_checksum_v6(s, d));
        assert!(!t.verify_checksum_v6(s, "fd00::3".parse().unwrap()));
    }
}
