//! Ethernet II frames and 802.1Q / 802.1ad VLAN tags.

use super::view::{at_least, fields, view};
use super::{read_mac, read_u16, write_u16, MacAddr, WireError};

/// Offsets of the Ethernet header's fields (and of the VLAN tag after it).
mod field {
    pub const DST: usize = 0;
    pub const SRC: usize = 6;
    pub const ETHERTYPE: usize = 12;
    pub const TCI: usize = 14;
    pub const INNER_ETHERTYPE: usize = 16;
}

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Tag protocol identifier of an 802.1Q (customer) VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// Tag protocol identifier of an 802.1ad (service, "QinQ" outer) VLAN tag.
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

/// Length of the untagged Ethernet header (two addresses + EtherType).
pub const HEADER_LEN: usize = 14;
/// Length of one VLAN tag (TPID + TCI).
pub const VLAN_TAG_LEN: usize = 4;
/// Length of the two addresses (destination then source) that start every frame.
pub const ADDRS_LEN: usize = field::ETHERTYPE;

/// Both addresses as they lie on the wire, destination first: what a flow's shortcut writes
/// into each frame it serves.
pub type Addresses = [u8; ADDRS_LEN];

/// The [`Addresses`] of a frame from `src` to `dst`.
#[inline]
pub fn addresses(dst: MacAddr, src: MacAddr) -> Addresses {
    let mut a = [0u8; ADDRS_LEN];
    a[field::DST..field::SRC].copy_from_slice(&dst.0);
    a[field::SRC..].copy_from_slice(&src.0);
    a
}

view! {
    /// A zero-copy view of an Ethernet II frame: the bridge reads the addresses to learn and forward,
    /// and the gateway rewrites them when it routes.
    pub struct EthernetFrame;
    /// Wraps `buffer` after checking it holds the 14-byte header, so no accessor can panic.
    checked by |b| at_least(b, HEADER_LEN, "Ethernet");
}

fields! { EthernetFrame:
    /// Destination address.
    dst, set_dst: MacAddr = field::DST;
    /// Source address.
    src, set_src: MacAddr = field::SRC;
    /// The EtherType field at offset 12 (a TPID when the frame is tagged; see [`parse_l2`]).
    ethertype, set_ethertype: u16 = field::ETHERTYPE;
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Everything after the 14-byte header (starts with the tag's TCI on tagged frames).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets both addresses at once (one copy).
    #[inline]
    pub fn set_addresses(&mut self, addrs: &Addresses) {
        self.buffer.as_mut()[..ADDRS_LEN].copy_from_slice(addrs);
    }

    /// Mutable access to everything after the 14-byte header.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// The tag control information of an 802.1Q tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct VlanTag {
    /// Priority code point (3 bits).
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
    /// VLAN identifier (12 bits).
    pub vid: u16,
}

impl VlanTag {
    /// Splits a 16-bit TCI into its fields.
    #[inline]
    pub fn from_tci(tci: u16) -> Self {
        VlanTag {
            pcp: (tci >> 13) as u8,
            dei: tci & 0x1000 != 0,
            vid: tci & 0x0fff,
        }
    }

    /// Packs the fields into a TCI (out-of-range bits of `pcp` and `vid` are dropped).
    #[inline]
    pub fn to_tci(&self) -> u16 {
        (u16::from(self.pcp & 7) << 13) | (u16::from(self.dei) << 12) | (self.vid & 0x0fff)
    }
}

/// What the pipeline needs from the L2 header of a frame, with the VLAN tag (if any) decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L2Header {
    /// Destination address.
    pub dst: MacAddr,
    /// Source address.
    pub src: MacAddr,
    /// The frame's single VLAN tag (0x8100 or 0x88a8), if it has one.
    pub vlan: Option<VlanTag>,
    /// The EtherType of the L3 payload (after the tag).
    pub ethertype: u16,
    /// Where the L3 header starts: 14 untagged, 18 tagged.
    pub l3_offset: usize,
}

/// Decodes the Ethernet header and at most one VLAN tag, so every stage after the bridge works
/// from `l3_offset` whether or not the frame is tagged.
///
/// Stacked tags (QinQ) are not supported and give `Malformed`, never a misparsed frame.
#[inline]
pub fn parse_l2(data: &[u8]) -> Result<L2Header, WireError> {
    if data.len() < HEADER_LEN {
        return Err(WireError::Truncated("Ethernet"));
    }
    let dst = read_mac(data, field::DST);
    let src = read_mac(data, field::SRC);
    let outer = read_u16(data, field::ETHERTYPE);
    if outer != ETHERTYPE_VLAN && outer != ETHERTYPE_QINQ {
        return Ok(L2Header {
            dst,
            src,
            vlan: None,
            ethertype: outer,
            l3_offset: HEADER_LEN,
        });
    }
    if data.len() < HEADER_LEN + VLAN_TAG_LEN {
        return Err(WireError::Truncated("802.1Q"));
    }
    let tci = read_u16(data, field::TCI);
    let inner = read_u16(data, field::INNER_ETHERTYPE);
    if inner == ETHERTYPE_VLAN || inner == ETHERTYPE_QINQ {
        return Err(WireError::Malformed(
            "802.1Q (stacked VLAN tags are unsupported)",
        ));
    }
    Ok(L2Header {
        dst,
        src,
        vlan: Some(VlanTag::from_tci(tci)),
        ethertype: inner,
        l3_offset: HEADER_LEN + VLAN_TAG_LEN,
    })
}

/// A cheap guess at where a frame goes, for prefetching: its destination address and the VID
/// of an 802.1Q (0x8100) tag, read from a frame of at least 18 bytes without further checks.
#[inline(always)]
pub fn peek_dst_vid(data: &[u8]) -> Option<(MacAddr, Option<u16>)> {
    let h = data.get(..HEADER_LEN + VLAN_TAG_LEN)?;
    let vid =
        (read_u16(h, field::ETHERTYPE) == ETHERTYPE_VLAN).then(|| read_u16(h, field::TCI) & 0x0fff);
    Some((read_mac(h, field::DST), vid))
}

/// Writes an untagged Ethernet header (`dst`, `src`, `ethertype`) at the start of `frame` and
/// returns the rest, for the builders that make a whole frame in place (ICMP and ICMPv6
/// errors). `frame` must be at least [`HEADER_LEN`] bytes long.
pub fn write_header(frame: &mut [u8], dst: MacAddr, src: MacAddr, ethertype: u16) -> &mut [u8] {
    let (eth, rest) = frame.split_at_mut(HEADER_LEN);
    let mut eth = EthernetFrame::new_unchecked(eth);
    eth.set_dst(dst);
    eth.set_src(src);
    eth.set_ethertype(ethertype);
    rest
}

/// Turns a frame whose L3 header starts at `l3` behind one VLAN tag into an untagged one
/// ending at the same place: the addresses move up next to the L3 header and `ethertype` is
/// written before it. The first `l3 - HEADER_LEN` bytes are then stale, for the caller to
/// drop. `l3` must be at least [`HEADER_LEN`] and inside the frame.
#[inline]
pub fn untag(data: &mut [u8], l3: usize, ethertype: u16) {
    data.copy_within(0..ADDRS_LEN, l3 - HEADER_LEN);
    write_u16(data, l3 - 2, ethertype);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tags: &[(u16, u16)], ethertype: u16) -> Vec<u8> {
        let mut f = vec![1, 2, 3, 4, 5, 6, 0x02, 0x42, 0xac, 0x11, 0, 2];
        for (tpid, tci) in tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(&[0x45, 0, 0, 20]);
        f
    }

    #[test]
    fn untagged() {
        let f = frame(&[], ETHERTYPE_IPV4);
        let h = parse_l2(&f).unwrap();
        assert_eq!(h.dst, MacAddr([1, 2, 3, 4, 5, 6]));
        assert_eq!(h.src.to_string(), "02:42:ac:11:00:02");
        assert_eq!(
            (h.vlan, h.ethertype, h.l3_offset),
            (None, ETHERTYPE_IPV4, 14)
        );
    }

    #[test]
    fn tagged_8021q_and_8021ad() {
        for tpid in [ETHERTYPE_VLAN, ETHERTYPE_QINQ] {
            let f = frame(&[(tpid, 0xb064)], ETHERTYPE_ARP);
            let h = parse_l2(&f).unwrap();
            let tag = h.vlan.unwrap();
            assert_eq!((tag.pcp, tag.dei, tag.vid), (5, true, 0x064));
            assert_eq!(tag.to_tci(), 0xb064);
            assert_eq!((h.ethertype, h.l3_offset), (ETHERTYPE_ARP, 18));
        }
    }

    #[test]
    fn stacked_tags_are_rejected() {
        let f = frame(
            &[(ETHERTYPE_QINQ, 10), (ETHERTYPE_VLAN, 20)],
            ETHERTYPE_IPV4,
        );
        assert!(matches!(parse_l2(&f), Err(WireError::Malformed(_))));
    }

    #[test]
    fn truncations() {
        let f = frame(&[(ETHERTYPE_VLAN, 7)], ETHERTYPE_IPV4);
        assert_eq!(parse_l2(&f[..13]), Err(WireError::Truncated("Ethernet")));
        assert_eq!(parse_l2(&f[..17]), Err(WireError::Truncated("802.1Q")));
        assert!(parse_l2(&f[..18]).is_ok());
    }

    #[test]
    fn untag_moves_the_addresses_next_to_the_l3_header() {
        let mut f = frame(&[(ETHERTYPE_VLAN, 0x0064)], ETHERTYPE_ARP);
        assert_eq!(
            peek_dst_vid(&f),
            Some((MacAddr([1, 2, 3, 4, 5, 6]), Some(0x064)))
        );
        untag(&mut f, 18, ETHERTYPE_IPV4);
        let h = parse_l2(&f[4..]).unwrap();
        assert_eq!(
            (h.vlan, h.ethertype, h.l3_offset),
            (None, ETHERTYPE_IPV4, 14)
        );
        assert_eq!(h.dst, MacAddr([1, 2, 3, 4, 5, 6]));
        assert_eq!(peek_dst_vid(&f[4..]).unwrap().1, None);
        assert_eq!(peek_dst_vid(&f[..17]), None);
    }

    #[test]
    fn setters_write_in_place() {
        let mut f = frame(&[], ETHERTYPE_IPV4);
        let mut e = EthernetFrame::new_checked(&mut f[..]).unwrap();
        e.set_dst(MacAddr::BROADCAST);
        e.set_src(MacAddr([9; 6]));
        e.set_ethertype(ETHERTYPE_IPV6);
        e.set_addresses(&addresses(MacAddr::BROADCAST, MacAddr([9; 6])));
        e.payload_mut()[0] = 0x60;
        let e = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(
            (e.dst(), e.src(), e.ethertype()),
            (MacAddr::BROADCAST, MacAddr([9; 6]), ETHERTYPE_IPV6)
        );
        assert_eq!(e.payload()[0], 0x60);
        assert!(EthernetFrame::new_checked(&f[..13]).is_err());
    }
}
