//! IPv6 fixed header (RFC 8200) and a bounded walk over its extension headers.
//!
//! The view the IPv6 stage and NAT66 parse with: its extension walk finds a packet's L4 header
//! and its fragment header, and [`Ipv6Packet::new_quoted`] reads the packet an ICMPv6 error
//! quotes.

use std::net::Ipv6Addr;

use super::view::{at_least, view};
use super::{read_u16, read_u32, write_u16, write_u32, WireError};

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;

/// Next header: hop-by-hop options.
pub const NH_HOP_BY_HOP: u8 = 0;
/// Next header: routing header.
pub const NH_ROUTING: u8 = 43;
/// Next header: fragment header. Also what [`Ipv6Packet::walk_extensions`] reports for a
/// non-first fragment, which carries no upper-layer header.
pub const NH_FRAGMENT: u8 = 44;
/// Next header: encapsulating security payload (opaque: the walk stops there).
pub const NH_ESP: u8 = 50;
/// Next header: authentication header.
pub const NH_AUTH: u8 = 51;
/// Next header: nothing follows.
pub const NH_NO_NEXT: u8 = 59;
/// Next header: destination options.
pub const NH_DEST_OPTS: u8 = 60;

/// Most extension headers [`Ipv6Packet::walk_extensions`] steps over before it gives up.
pub const MAX_EXTENSIONS: usize = 16;

view! {
    /// A zero-copy view of an IPv6 packet, so the bridge and gateway can classify IPv6 frames.
    ///
    /// After [`Ipv6Packet::new_checked`] no accessor panics: the fixed header is present and
    /// `40 + payload_len` fits in the buffer (the buffer may be longer: Ethernet padding).
    /// Jumbograms (payload length 0 plus a jumbo option) are not supported: their payload is empty.
    pub struct Ipv6Packet;
    /// Wraps `buffer` after checking version 6 and that the declared payload fits.
    checked by check;
}

/// What a fragment header says (RFC 8200 section 4.5).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Fragment {
    /// Offset of the fragment's data in the original packet, in bytes.
    pub offset: u16,
    /// More fragments follow.
    pub more: bool,
    /// The identification all fragments of the original packet share.
    pub ident: u32,
}

/// Where [`Ipv6Packet::extensions`] ended: the upper layer and the fragment header on the way.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Extensions {
    /// The upper-layer protocol ([`NH_FRAGMENT`] for a non-first fragment).
    pub proto: u8,
    /// Offset of the upper layer (a non-first fragment: of its data) from the IPv6 header.
    pub l4: usize,
    /// The fragment header, when the packet is a fragment.
    pub fragment: Option<Fragment>,
}

/// The version check of both constructors.
#[inline]
fn check_header(b: &[u8]) -> Result<(), WireError> {
    at_least(b, HEADER_LEN, "IPv6")?;
    if b[0] >> 4 != 6 {
        return Err(WireError::Malformed("IPv6 (version)"));
    }
    Ok(())
}

/// The checks of [`Ipv6Packet::new_checked`].
#[inline]
fn check(b: &[u8]) -> Result<(), WireError> {
    check_header(b)?;
    if HEADER_LEN + usize::from(read_u16(b, 4)) > b.len() {
        return Err(WireError::Truncated("IPv6"));
    }
    Ok(())
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps the packet quoted inside an ICMPv6 error: checks only the fixed header (present,
    /// version 6), because the quote is cut short and the payload length describes the
    /// original packet; the payload accessors clamp to the bytes present.
    pub fn new_quoted(buffer: T) -> Result<Self, WireError> {
        check_header(buffer.as_ref())?;
        Ok(Ipv6Packet { buffer })
    }

    /// IP version (6 on every checked view).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// Traffic class (DSCP + ECN).
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (read_u16(self.buffer.as_ref(), 0) >> 4) as u8
    }

    /// Flow label (20 bits).
    #[inline]
    pub fn flow_label(&self) -> u32 {
        read_u32(self.buffer.as_ref(), 0) & 0x000f_ffff
    }

    /// Payload length: everything after the fixed header, extension headers included.
    #[inline]
    pub fn payload_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 4)
    }

    /// The next header field of the fixed header.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[6]
    }

    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[7]
    }

    /// Source address.
    #[inline]
    pub fn src(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.addr_at(8))
    }

    /// Destination address.
    #[inline]
    pub fn dst(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.addr_at(24))
    }

    #[inline]
    fn addr_at(&self, at: usize) -> [u8; 16] {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[at..at + 16]);
        a
    }

    /// End of the payload: `40 + payload_len`, clamped to the buffer.
    #[inline]
    fn payload_end(&self) -> usize {
        (HEADER_LEN + usize::from(self.payload_len())).min(self.buffer.as_ref().len())
    }

    /// Everything after the fixed header up to `payload_len` (padding excluded).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.payload_end().max(HEADER_LEN)]
    }

    /// Walks the extension headers to the upper layer, so NAT and filters find the L4 header.
    ///
    /// Returns the upper-layer protocol and the offset of its header from the start of the
    /// IPv6 header, as [`Ipv6Packet::extensions`] does.
    pub fn walk_extensions(&self) -> Result<(u8, usize), WireError> {
        self.extensions().map(|e| (e.proto, e.l4))
    }

    /// Walks the extension headers to the upper layer and reports the fragment header met.
    ///
    /// Steps over hop-by-hop (0), routing (43), destination options (60), authentication (51)
    /// and first fragments (44, offset 0). It stops at ESP (50) and no-next-header (59),
    /// returning them as the protocol, and at a non-first fragment, returning [`NH_FRAGMENT`]
    /// with the offset of the fragment's data (no L4 header there). More than
    /// [`MAX_EXTENSIONS`] headers is `Malformed`; a header running past the payload is
    /// `Truncated`.
    pub fn extensions(&self) -> Result<Extensions, WireError> {
        let b = &self.buffer.as_ref()[..self.payload_end().max(HEADER_LEN)];
        let mut nh = self.next_header();
        let mut off = HEADER_LEN;
        let mut fragment = None;
        // One pass per extension header plus the final one that reaches the upper layer.
        for _ in 0..=MAX_EXTENSIONS {
            let len = match nh {
                NH_HOP_BY_HOP | NH_ROUTING | NH_DEST_OPTS => {
                    let hdr = b
                        .get(off..off + 2)
                        .ok_or(WireError::Truncated("IPv6 extension"))?;
                    (usize::from(hdr[1]) + 1) * 8
                }
                NH_AUTH => {
                    let hdr = b
                        .get(off..off + 2)
                        .ok_or(WireError::Truncated("IPv6 authentication"))?;
                    (usize::from(hdr[1]) + 2) * 4
                }
                NH_FRAGMENT => {
                    let hdr = b
                        .get(off..off + 8)
                        .ok_or(WireError::Truncated("IPv6 fragment"))?;
                    let word = read_u16(hdr, 2);
                    let frag = Fragment {
                        offset: word & 0xfff8,
                        more: word & 1 != 0,
                        ident: read_u32(hdr, 4),
                    };
                    if frag.offset != 0 {
                        return Ok(Extensions {
                            proto: NH_FRAGMENT,
                            l4: off + 8,
                            fragment: Some(frag),
                        });
                    }
                    fragment = Some(frag);
                    8
                }
                _ => {
                    return Ok(Extensions {
                        proto: nh,
                        l4: off,
                        fragment,
                    })
                }
            };
            if off + len > b.len() {
                return Err(WireError::Truncated("IPv6 extension"));
            }
            nh = b[off];
            off += len;
        }
        Err(WireError::Malformed("IPv6 (extension chain too long)"))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Writes version 6, traffic class and flow label, for building a header in a fresh buffer
    /// wrapped with [`Ipv6Packet::new_unchecked`].
    #[inline]
    pub fn set_version_tc_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let v = (6 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0x000f_ffff);
        write_u32(self.buffer.as_mut(), 0, v);
    }

    /// Sets the payload length.
    #[inline]
    pub fn set_payload_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), 4, len);
    }

    /// Sets the next header field of the fixed header.
    #[inline]
    pub fn set_next_header(&mut self, nh: u8) {
        self.buffer.as_mut()[6] = nh;
    }

    /// Sets the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        self.buffer.as_mut()[7] = hop_limit;
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src(&mut self, ip: Ipv6Addr) {
        self.buffer.as_mut()[8..24].copy_from_slice(&ip.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst(&mut self, ip: Ipv6Addr) {
        self.buffer.as_mut()[24..40].copy_from_slice(&ip.octets());
    }

    /// Mutable payload (see [`Ipv6Packet::payload`]).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.payload_end().max(HEADER_LEN);
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// Writes an IPv6 header (no traffic class or flow label) from `src` to `dst` at the start of
/// `packet` and returns the rest, whose length becomes the payload length: for the builders
/// that make a whole packet in place (ICMPv6 errors, NDP advertisements). `packet` must be at
/// least [`HEADER_LEN`] bytes long and at most `HEADER_LEN + 65535`.
pub fn write_header(
    packet: &mut [u8],
    (src, dst): (Ipv6Addr, Ipv6Addr),
    next_header: u8,
    hop_limit: u8,
) -> &mut [u8] {
    let (header, payload) = packet.split_at_mut(HEADER_LEN);
    let mut ip = Ipv6Packet::new_unchecked(header);
    ip.set_version_tc_flow(0, 0);
    ip.set_payload_len(payload.len() as u16);
    ip.set_next_header(next_header);
    ip.set_hop_limit(hop_limit);
    ip.set_src(src);
    ip.set_dst(dst);
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(chain: &[(u8, Vec<u8>)], upper: u8) -> Vec<u8> {
        let mut p = vec![0u8; HEADER_LEN];
        let mut v = Ipv6Packet::new_unchecked(&mut p[..]);
        v.set_version_tc_flow(0xb8, 0x12345);
        v.set_hop_limit(64);
        v.set_src("fd00::2".parse().unwrap());
        v.set_dst("2001:db8::1".parse().unwrap());
        v.set_next_header(chain.first().map_or(upper, |c| c.0));
        for (i, (_, body)) in chain.iter().enumerate() {
            let next = chain.get(i + 1).map_or(upper, |c| c.0);
            let start = p.len();
            p.extend_from_slice(body);
            p[start] = next;
        }
        p.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, 0, 8, 0, 0]);
        let len = (p.len() - HEADER_LEN) as u16;
        Ipv6Packet::new_unchecked(&mut p[..]).set_payload_len(len);
        p
    }

    fn opts(len8: u8) -> Vec<u8> {
        let mut h = vec![0u8; (usize::from(len8) + 1) * 8];
        h[1] = len8;
        h
    }

    #[test]
    fn fixed_header_fields() {
        let p = packet(&[], 17);
        let v = Ipv6Packet::new_checked(&p[..]).unwrap();
        assert_eq!(
            (v.version(), v.traffic_class(), v.flow_label()),
            (6, 0xb8, 0x12345)
        );
        assert_eq!(
            (v.payload_len(), v.next_header(), v.hop_limit()),
            (8, 17, 64)
        );
        assert_eq!(v.src(), "fd00::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(v.dst(), "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(v.walk_extensions(), Ok((17, 40)));
        assert_eq!(v.payload().len(), 8);
        assert!(Ipv6Packet::new_checked(&p[..47]).is_err());
    }

    #[test]
    fn walks_every_kind() {
        let mut ah = vec![0u8; 16];
        ah[1] = 2; // (2 + 2) * 4 = 16 bytes
        let frag_first = vec![0, 0, 0, 1, 0, 0, 0, 7]; // offset 0, M = 1
        let chain = vec![
            (NH_HOP_BY_HOP, opts(0)),
            (NH_DEST_OPTS, opts(1)),
            (NH_ROUTING, opts(0)),
            (NH_FRAGMENT, frag_first),
            (NH_AUTH, ah),
        ];
        let p = packet(&chain, 6);
        let v = Ipv6Packet::new_checked(&p[..]).unwrap();
        assert_eq!(v.walk_extensions(), Ok((6, 40 + 8 + 16 + 8 + 8 + 16)));
        let first = Fragment {
            offset: 0,
            more: true,
            ident: 7,
        };
        assert_eq!(v.extensions().unwrap().fragment, Some(first));
    }

    #[test]
    fn non_first_fragment_esp_and_no_next() {
        let frag_later = vec![0, 0, 0x05, 0xc8, 0, 0, 0, 7]; // offset 185 * 8
        let p = packet(&[(NH_FRAGMENT, frag_later)], 17);
        assert_eq!(
            Ipv6Packet::new_checked(&p[..]).unwrap().walk_extensions(),
            Ok((NH_FRAGMENT, 48))
        );
        let later = Fragment {
            offset: 185 * 8,
            more: false,
            ident: 7,
        };
        let v = Ipv6Packet::new_checked(&p[..]).unwrap();
        assert_eq!(v.extensions().unwrap().fragment, Some(later));
        // A quote cut after the fixed header is still read; a short or non-v6 one is not.
        assert!(Ipv6Packet::new_checked(&p[..44]).is_err());
        assert_eq!(Ipv6Packet::new_quoted(&p[..44]).unwrap().payload().len(), 4);
        assert!(Ipv6Packet::new_quoted(&p[..39]).is_err());
        assert!(Ipv6Packet::new_quoted(&[0x40; 40][..]).is_err());
        let p = packet(&[(NH_HOP_BY_HOP, opts(0))], NH_ESP);
        assert_eq!(
            Ipv6Packet::new_checked(&p[..]).unwrap().walk_extensions(),
            Ok((NH_ESP, 48))
        );
        let p = packet(&[], NH_NO_NEXT);
        assert_eq!(
            Ipv6Packet::new_checked(&p[..]).unwrap().walk_extensions(),
            Ok((NH_NO_NEXT, 40))
        );
    }

    #[test]
    fn bounded_and_truncated() {
        let chain: Vec<_> = (0..MAX_EXTENSIONS + 1)
            .map(|_| (NH_DEST_OPTS, opts(0)))
            .collect();
        let p = packet(&chain, 6);
        assert!(matches!(
            Ipv6Packet::new_checked(&p[..]).unwrap().walk_extensions(),
            Err(WireError::Malformed(_))
        ));
        let chain: Vec<_> = (0..MAX_EXTENSIONS)
            .map(|_| (NH_DEST_OPTS, opts(0)))
            .collect();
        let p = packet(&chain, 6);
        assert_eq!(
            Ipv6Packet::new_checked(&p[..]).unwrap().walk_extensions(),
            Ok((6, 40 + 8 * MAX_EXTENSIONS))
        );
        // An options header claiming 8 * 10 bytes in a short payload.
        let p = packet(&[(NH_HOP_BY_HOP, opts(0))], 6);
        let mut p = p;
        p[41] = 9;
        assert!(matches!(
            Ipv6Packet::new_checked(&p[..]).unwrap().walk_extensions(),
            Err(WireError::Truncated(_))
        ));
    }
}
