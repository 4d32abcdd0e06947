//! IPv4 headers (RFC 791), including the header an ICMP error quotes.

use std::net::Ipv4Addr;

use super::checksum::{adjust16, fold, internet_checksum, ones_sum};
use super::view::{at_least, fields, view, within};
use super::{read_4, read_u16, write_u16, WireError};

/// Offsets of the IPv4 header's fields.
mod field {
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

/// Length of an IPv4 header without options.
pub const MIN_HEADER_LEN: usize = 20;
/// Bytes of the original datagram after its header that an ICMP error must quote (RFC 792).
pub const QUOTED_MIN_PAYLOAD: usize = 8;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

view! {
    /// A zero-copy view of an IPv4 packet, read and rewritten in place by the gateway and NAT.
    ///
    /// After [`Ipv4Packet::new_checked`] or [`Ipv4Packet::new_quoted`] no accessor panics: the
    /// header (with options) lies inside the buffer, and payload accessors clamp `total_len` to the
    /// bytes present.
    pub struct Ipv4Packet;
    /// Wraps `buffer` (starting at the IPv4 header) after checking version 4, IHL >= 5, the
    /// header inside the buffer and `header_len <= total_len <= buffer length`. The buffer may
    /// be longer than `total_len` (Ethernet padding); [`Ipv4Packet::payload`] stops at
    /// `total_len`.
    checked by check;
}

/// The checks of [`Ipv4Packet::new_checked`].
#[inline(always)]
fn check(b: &[u8]) -> Result<(), WireError> {
    let hl = check_header(b)?;
    let total = usize::from(read_u16(b, field::TOTAL_LEN));
    within(b, total, hl, ("IPv4", "IPv4 (total length)"))
}

/// Checks version, IHL and that the header lies inside `b`; returns the header length.
#[inline(always)]
fn check_header(b: &[u8]) -> Result<usize, WireError> {
    at_least(b, MIN_HEADER_LEN, "IPv4")?;
    if b[field::VER_IHL] >> 4 != 4 {
        return Err(WireError::Malformed("IPv4 (version)"));
    }
    let hl = usize::from(b[field::VER_IHL] & 0x0f) * 4;
    within(b, hl, MIN_HEADER_LEN, ("IPv4", "IPv4 (IHL)"))?;
    Ok(hl)
}

fields! { Ipv4Packet:
    /// The DSCP/ECN byte.
    tos, set_tos: u8 = field::TOS;
    /// Total length field: header plus payload.
    total_len, set_total_len: u16 = field::TOTAL_LEN;
    /// Identification field (fragment reassembly key).
    ident, set_ident: u16 = field::IDENT;
    /// Time to live.
    ttl, set_ttl: u8 = field::TTL;
    /// Protocol of the payload (see `IPPROTO_*` in [`crate::wire`]).
    protocol, set_protocol: u8 = field::PROTOCOL;
    /// Header checksum field.
    checksum, set_checksum: u16 = field::CHECKSUM;
    /// Source address.
    src, set_src: Ipv4Addr = field::SRC;
    /// Destination address.
    dst, set_dst: Ipv4Addr = field::DST;
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps the datagram quoted inside an ICMP error: checks only the header (version, IHL,
    /// header inside the buffer) and that at least the 8 bytes RFC 792 requires follow it,
    /// because routers cut the quote short and `total_len` describes the original datagram.
    pub fn new_quoted(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        let hl = check_header(b)?;
        if b.len() < hl + QUOTED_MIN_PAYLOAD {
            return Err(WireError::Truncated("quoted IPv4"));
        }
        Ok(Ipv4Packet { buffer })
    }

    /// IP version (4 on every checked view).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes, options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    #[inline]
    fn flags_frag(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::FLAGS_FRAG)
    }

    /// Don't-fragment flag: a too-big packet gets an ICMP "fragmentation needed" instead.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.flags_frag() & FLAG_DF != 0
    }

    /// More-fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        self.flags_frag() & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (self.flags_frag() & FRAG_OFFSET_MASK) << 3
    }

    /// True for any fragment (first, middle or last), i.e. not a whole datagram.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.flags_frag() & (FLAG_MF | FRAG_OFFSET_MASK) != 0
    }

    /// True for the first fragment of a fragmented datagram, the only one carrying L4 ports.
    #[inline]
    pub fn is_first_fragment(&self) -> bool {
        self.flags_frag() & (FLAG_MF | FRAG_OFFSET_MASK) == FLAG_MF
    }

    /// The options bytes (empty when IHL is 5).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[MIN_HEADER_LEN..self.header_len()]
    }

    /// End of the payload: `total_len` clamped to the bytes present and to the header end.
    #[inline]
    fn payload_end(&self) -> usize {
        let len = self.buffer.as_ref().len();
        usize::from(self.total_len())
            .min(len)
            .max(self.header_len())
    }

    /// The payload: bytes after the header up to `total_len` (Ethernet padding excluded).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..self.payload_end()]
    }

    /// The part of a quoted datagram's payload that is present: from the header end to
    /// `total_len` or the end of the buffer, whichever comes first, but never less than the
    /// 8 bytes [`Ipv4Packet::new_quoted`] guaranteed.
    #[inline]
    pub fn quoted_payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let hl = self.header_len();
        let end = usize::from(self.total_len())
            .max(hl + QUOTED_MIN_PAYLOAD)
            .min(b.len())
            .max(hl);
        &b[hl..end]
    }

    /// True when the header checksum is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        let b = self.buffer.as_ref();
        fold(ones_sum(&b[..self.header_len()], 0)) == 0xffff
    }
}

/// Bytes of header up to the source address included.
const SRC_END: usize = field::SRC + 4;

/// The source address of the IPv4 header at the start of `b`, checking only what reading it
/// needs (version 4, IHL of at least 5, the bytes up to the address present): what the
/// bridge's anti-spoofing reads of a frame it forwards unchanged, and routing of a header it
/// already parsed.
#[inline]
pub fn peek_src(b: &[u8]) -> Option<Ipv4Addr> {
    let h = b.get(..SRC_END)?;
    let vihl = h[field::VER_IHL];
    (vihl >> 4 == 4 && usize::from(vihl & 0x0f) * 4 >= MIN_HEADER_LEN)
        .then(|| Ipv4Addr::from(read_4(h, field::SRC)))
}

/// The destination address of the IPv4 header at the start of `b`, checking what [`peek_src`]
/// checks: what ipvlan reads to deliver a frame it forwards unchanged but for its MACs.
#[inline]
pub fn peek_dst(b: &[u8]) -> Option<Ipv4Addr> {
    let h = b.get(..field::DST + 4)?;
    let vihl = h[field::VER_IHL];
    (vihl >> 4 == 4 && usize::from(vihl & 0x0f) * 4 >= MIN_HEADER_LEN)
        .then(|| Ipv4Addr::from(read_4(h, field::DST)))
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Writes version 4 and IHL 5 (no options), for building a header in a fresh buffer of at
    /// least 20 bytes wrapped with [`Ipv4Packet::new_unchecked`].
    #[inline]
    pub fn init_header(&mut self) {
        self.buffer.as_mut()[field::VER_IHL] = 0x45;
    }

    /// Sets the flags and fragment offset: `frag_offset` is in bytes (a multiple of 8).
    #[inline]
    pub fn set_flags_frag(&mut self, dont_frag: bool, more_frags: bool, frag_offset: u16) {
        let mut v = (frag_offset >> 3) & FRAG_OFFSET_MASK;
        if dont_frag {
            v |= FLAG_DF;
        }
        if more_frags {
            v |= FLAG_MF;
        }
        write_u16(self.buffer.as_mut(), field::FLAGS_FRAG, v);
    }

    /// Decrements the time to live (not below 0), adjusting the header checksum (RFC 1624):
    /// what every router does to a packet it forwards.
    #[inline]
    pub fn decrement_ttl(&mut self) {
        let b = self.buffer.as_mut();
        // TTL and protocol share the word the checksum adjusts for.
        let old = read_u16(b, field::TTL);
        b[field::TTL] = b[field::TTL].saturating_sub(1);
        let new = read_u16(b, field::TTL);
        let c = adjust16(read_u16(b, field::CHECKSUM), old, new);
        write_u16(b, field::CHECKSUM, c);
    }

    /// Recomputes the header checksum from scratch.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len();
        let c = internet_checksum(&self.buffer.as_ref()[..hl]);
        self.set_checksum(c);
    }

    /// Mutable payload (see [`Ipv4Packet::payload`]).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = (self.header_len(), self.payload_end());
        &mut self.buffer.as_mut()[start..end]
    }

    /// Mutable quoted payload (see [`Ipv4Packet::quoted_payload`]), for NAT of ICMP errors.
    #[inline]
    pub fn quoted_payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        let end = start + self.quoted_payload().len();
        &mut self.buffer.as_mut()[start..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::adjust16;

    /// A 20-byte header (example from RFC 1071 discussions) plus an 8-byte payload.
    fn sample() -> Vec<u8> {
        let mut p = vec![
            0x45, 0x00, 0x00, 0x1c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xac, 0x11,
            0x00, 0x02, 0x08, 0x08, 0x08, 0x08,
        ];
        p.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00]);
        p
    }

    #[test]
    fn fields() {
        let mut buf = sample();
        Ipv4Packet::new_unchecked(&mut buf[..]).fill_checksum();
        buf.extend_from_slice(&[0; 18]); // Ethernet padding
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!((p.version(), p.header_len(), p.total_len()), (4, 20, 28));
        assert_eq!(
            (p.ident(), p.dont_frag(), p.more_frags(), p.frag_offset()),
            (0x1c46, true, false, 0)
        );
        assert!(!p.is_fragment() && !p.is_first_fragment());
        assert_eq!((p.ttl(), p.protocol()), (64, 17));
        assert_eq!(p.src(), Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(p.dst(), Ipv4Addr::new(8, 8, 8, 8));
        assert!(p.options().is_empty());
        assert_eq!(p.payload().len(), 8, "padding is not payload");
        assert!(p.verify_checksum());
    }

    #[test]
    fn checks() {
        let buf = sample();
        assert_eq!(
            Ipv4Packet::new_checked(&buf[..19]),
            Err(WireError::Truncated("IPv4"))
        );
        assert_eq!(
            Ipv4Packet::new_checked(&buf[..27]),
            Err(WireError::Truncated("IPv4"))
        );
        let mut bad = buf.clone();
        bad[0] = 0x65;
        assert!(matches!(
            Ipv4Packet::new_checked(&bad[..]),
            Err(WireError::Malformed(_))
        ));
        bad[0] = 0x44;
        assert!(matches!(
            Ipv4Packet::new_checked(&bad[..]),
            Err(WireError::Malformed(_))
        ));
        bad[0] = 0x48; // 32-byte header in a 28-byte buffer
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]),
            Err(WireError::Truncated("IPv4"))
        );
        let mut bad = buf.clone();
        bad[3] = 19;
        assert!(matches!(
            Ipv4Packet::new_checked(&bad[..]),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn fragments() {
        let mut buf = sample();
        let mut p = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        p.set_flags_frag(false, true, 0);
        assert!(p.is_fragment() && p.is_first_fragment());
        p.set_flags_frag(false, true, 1480);
        assert!(p.is_fragment() && !p.is_first_fragment() && p.more_frags());
        assert_eq!(p.frag_offset(), 1480);
        p.set_flags_frag(true, false, 2960);
        assert!(p.is_fragment() && !p.is_first_fragment() && p.dont_frag());
    }

    #[test]
    fn quoted_header_may_be_cut_short() {
        let mut buf = sample();
        buf[3] = 200; // the original datagram was 200 bytes; only 8 were quoted
        assert!(Ipv4Packet::new_checked(&buf[..]).is_err());
        let q = Ipv4Packet::new_quoted(&buf[..]).unwrap();
        assert_eq!(q.quoted_payload(), &sample()[20..28]);
        assert_eq!(q.payload().len(), 8, "payload clamps to the buffer");
        assert_eq!(
            Ipv4Packet::new_quoted(&buf[..27]),
            Err(WireError::Truncated("quoted IPv4"))
        );
    }

    #[test]
    fn peek_src_reads_only_what_it_needs() {
        let buf = sample();
        assert_eq!(peek_src(&buf[..16]), Some(Ipv4Addr::new(172, 17, 0, 2)));
        assert_eq!(peek_src(&buf[..15]), None);
        let mut bad = buf.clone();
        bad[0] = 0x44;
        assert_eq!(peek_src(&bad), None);
        bad[0] = 0x65;
        assert_eq!(peek_src(&bad), None);
    }

    #[test]
    fn ttl_decrement_by_adjust16() {
        let mut buf = sample();
        let mut p = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        p.fill_checksum();
        let old = read_u16(&p.buffer[..], 8);
        p.set_ttl(p.ttl() - 1);
        let new = read_u16(&p.buffer[..], 8);
        let c = adjust16(p.checksum(), old, new);
        p.set_checksum(c);
        assert!(p.verify_checksum());
    }
}
