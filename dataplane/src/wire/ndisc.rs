//! Neighbour discovery (RFC 4861): neighbour solicitation and advertisement with their
//! source/target link-layer address options, so the v6 gateway can answer for its addresses
//! as it answers ARP for its v4 address. Also the address helpers NDP needs: solicited-node
//! multicast, its MAC, and the EUI-64 link-local address of a MAC.

use std::net::Ipv6Addr;

use super::ethernet::EthernetFrame;
use super::icmp::{self, icmp_head, icmpv6_checksum};
use super::ipv6::{self, Ipv6Packet, HEADER_LEN as IPV6_LEN};
use super::view::{at_least, view};
use super::{read_mac, write_mac, MacAddr, WireError, IPPROTO_ICMPV6};

/// Offsets of the neighbour solicitation/advertisement fields.
mod field {
    /// Advertisement flags (R, S, O); reserved (0) in a solicitation.
    pub const FLAGS: usize = 4;
    pub const TARGET: usize = 8;
    pub const OPTIONS: usize = 24;
}

/// Length of a solicitation or advertisement without options.
pub const HEADER_LEN: usize = field::OPTIONS;
/// Length of a link-layer address option for Ethernet (type, length 1, six bytes).
pub const LL_OPTION_LEN: usize = 8;

/// ICMPv6 type: neighbour solicitation.
pub const NEIGHBOR_SOLICIT: u8 = 135;
/// ICMPv6 type: neighbour advertisement.
pub const NEIGHBOR_ADVERT: u8 = 136;

/// Option type: source link-layer address.
pub const OPT_SOURCE_LL_ADDR: u8 = 1;
/// Option type: target link-layer address.
pub const OPT_TARGET_LL_ADDR: u8 = 2;

/// Advertisement flag: the sender is a router.
pub const FLAG_ROUTER: u8 = 0x80;
/// Advertisement flag: sent in answer to a solicitation.
pub const FLAG_SOLICITED: u8 = 0x40;
/// Advertisement flag: the receiver should override its cached link-layer address.
pub const FLAG_OVERRIDE: u8 = 0x20;

/// Hop limit of every NDP packet: receivers drop NDP with any other (RFC 4861 section 7.1),
/// so none can come from beyond the link.
pub const HOP_LIMIT: u8 = 255;

/// All-nodes multicast, where an advertisement answering duplicate address detection goes.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

view! {
    /// A zero-copy view of a neighbour solicitation or advertisement (the ICMPv6 message,
    /// exactly: the checksum covers all of it).
    ///
    /// After [`NdiscPacket::new_checked`] no accessor panics: the fixed part is present, the
    /// type is 135 or 136, and every option has a non-zero length and fits in the buffer.
    pub struct NdiscPacket;
    /// Wraps `buffer` after checking its length, type and options (a zero-length option makes
    /// the packet invalid, RFC 4861 section 4.6).
    checked by check;
}

icmp_head!(NdiscPacket);
icmpv6_checksum!(NdiscPacket);

/// The checks of [`NdiscPacket::new_checked`].
#[inline]
fn check(b: &[u8]) -> Result<(), WireError> {
    at_least(b, HEADER_LEN, "NDP")?;
    if !matches!(b[icmp::field::TYPE], NEIGHBOR_SOLICIT | NEIGHBOR_ADVERT) {
        return Err(WireError::Malformed("NDP (type)"));
    }
    let mut at = HEADER_LEN;
    // Each option is at least 8 bytes long, so this ends within len / 8 steps.
    while at < b.len() {
        let len = usize::from(*b.get(at + 1).ok_or(WireError::Truncated("NDP option"))?) * 8;
        if len == 0 {
            return Err(WireError::Malformed("NDP (option length 0)"));
        }
        if at + len > b.len() {
            return Err(WireError::Truncated("NDP option"));
        }
        at += len;
    }
    Ok(())
}

impl<T: AsRef<[u8]>> NdiscPacket<T> {
    /// Advertisement flags ([`FLAG_ROUTER`], [`FLAG_SOLICITED`], [`FLAG_OVERRIDE`]).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS] & (FLAG_ROUTER | FLAG_SOLICITED | FLAG_OVERRIDE)
    }

    /// The target address: the address being resolved or advertised.
    #[inline]
    pub fn target(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::TARGET..field::TARGET + 16]);
        Ipv6Addr::from(a)
    }

    /// The options after the fixed part.
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..]
    }

    /// The MAC of the first link-layer address option of type `kind`, if any.
    fn ll_option(&self, kind: u8) -> Option<MacAddr> {
        let o = self.options();
        let mut at = 0;
        while at + LL_OPTION_LEN <= o.len() {
            let len = usize::from(o[at + 1]) * 8;
            if o[at] == kind && len >= LL_OPTION_LEN {
                return Some(read_mac(o, at + 2));
            }
            at += len.max(LL_OPTION_LEN);
        }
        None
    }

    /// The source link-layer address option (solicitations): the asker's MAC.
    #[inline]
    pub fn source_ll_addr(&self) -> Option<MacAddr> {
        self.ll_option(OPT_SOURCE_LL_ADDR)
    }

    /// The target link-layer address option (advertisements): the target's MAC.
    #[inline]
    pub fn target_ll_addr(&self) -> Option<MacAddr> {
        self.ll_option(OPT_TARGET_LL_ADDR)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> NdiscPacket<T> {
    /// Sets the flags byte and clears the 3 reserved bytes after it.
    #[inline]
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS..field::TARGET].copy_from_slice(&[flags, 0, 0, 0]);
    }

    /// Sets the target address.
    #[inline]
    pub fn set_target(&mut self, ip: Ipv6Addr) {
        self.buffer.as_mut()[field::TARGET..field::TARGET + 16].copy_from_slice(&ip.octets());
    }

    /// Writes a link-layer address option of type `kind` with `mac` at the start of the
    /// options (which must hold at least [`LL_OPTION_LEN`] bytes).
    #[inline]
    pub fn set_ll_option(&mut self, kind: u8, mac: MacAddr) {
        let o = &mut self.buffer.as_mut()[field::OPTIONS..];
        o[0] = kind;
        o[1] = (LL_OPTION_LEN / 8) as u8;
        write_mac(o, 2, mac);
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> NdiscPacket<T> {
    /// Sets the MAC of every source and target link-layer address option to `mac`; true when
    /// there was one (the checksum is then stale).
    fn set_ll_addrs(&mut self, mac: MacAddr) -> bool {
        let o = &mut self.buffer.as_mut()[field::OPTIONS..];
        let (mut at, mut any) = (0, false);
        // Checked: every option has a non-zero length and fits.
        while at + LL_OPTION_LEN <= o.len() {
            let len = usize::from(o[at + 1]) * 8;
            if matches!(o[at], OPT_SOURCE_LL_ADDR | OPT_TARGET_LL_ADDR) {
                write_mac(o, at + 2, mac);
                any = true;
            }
            at += len.max(LL_OPTION_LEN);
        }
        any
    }
}

/// Rewrites the link-layer address options of the neighbour solicitation or advertisement
/// in IPv6 packet `packet` to `mac`, refilling its checksum; any other packet is left as it
/// is. How an ipvlan endpoint's neighbour discovery shows the parent's MAC.
pub fn rewrite_ll_addrs(packet: &mut [u8], mac: MacAddr) -> Result<(), WireError> {
    let mut ip = Ipv6Packet::new_checked(packet)?;
    let ext = ip.extensions()?;
    if ext.proto != IPPROTO_ICMPV6 || ext.fragment.is_some() {
        return Ok(());
    }
    let (src, dst) = (ip.src(), ip.dst());
    let Some(msg) = ip.payload_mut().get_mut(ext.l4 - IPV6_LEN..) else {
        return Ok(());
    };
    if !matches!(msg.first(), Some(&(NEIGHBOR_SOLICIT | NEIGHBOR_ADVERT))) {
        return Ok(());
    }
    let mut nd = NdiscPacket::new_checked(msg)?;
    if nd.set_ll_addrs(mac) {
        nd.fill_checksum(src, dst);
    }
    Ok(())
}

/// The solicited-node multicast address of `ip` (ff02::1:ffXX:XXXX), where solicitations
/// for it are sent.
pub fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ])
}

/// The Ethernet MAC of IPv6 multicast address `ip`: 33:33 and its low 32 bits (RFC 2464).
pub fn multicast_mac(ip: Ipv6Addr) -> MacAddr {
    let o = ip.octets();
    MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// The link-local address fe80::/64 with the modified EUI-64 interface identifier of `mac`
/// (RFC 4291 appendix A), as the kernel forms it: the gateway's link-local address.
pub fn link_local(mac: MacAddr) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 0x02,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

/// Length of the advertisement [`write_advert`] writes after the Ethernet header: IPv6 header,
/// the fixed part and a target link-layer address option.
pub const ADVERT_LEN: usize = IPV6_LEN + HEADER_LEN + LL_OPTION_LEN;

/// What a valid solicitation asks, read before the frame is overwritten.
struct Solicitation {
    asker: Ipv6Addr,
    asker_mac: MacAddr,
}

/// Reads the neighbour solicitation at `l3` and checks it asks for `target`: ICMPv6 right
/// after the fixed header, hop limit 255, code 0, checksum valid (RFC 4861 section 7.1.1).
fn read_solicitation(frame: &[u8], l3: usize, target: Ipv6Addr) -> Result<Solicitation, WireError> {
    let eth = EthernetFrame::new_checked(frame)?;
    let ip = Ipv6Packet::new_checked(frame.get(l3..).ok_or(WireError::Truncated("IPv6"))?)?;
    if ip.next_header() != IPPROTO_ICMPV6 || ip.hop_limit() != HOP_LIMIT {
        return Err(WireError::Malformed("NDP (not on link)"));
    }
    let ns = NdiscPacket::new_checked(ip.payload())?;
    if ns.msg_type() != NEIGHBOR_SOLICIT || ns.code() != 0 || ns.target() != target {
        return Err(WireError::Malformed("NDP (not a solicitation for us)"));
    }
    if !ns.verify_checksum(ip.src(), ip.dst()) {
        return Err(WireError::Malformed("NDP (checksum)"));
    }
    Ok(Solicitation {
        asker: ip.src(),
        asker_mac: ns.source_ll_addr().unwrap_or(eth.src()),
    })
}

/// Turns the neighbour solicitation for `target` at `l3` in `frame` into the advertisement of
/// `(mac, target)`, in place, and returns the new frame length (`l3 + ADVERT_LEN`): solicited
/// and override flags (router with `router`) and a target link-layer address option, sent
/// to the asker, or to all nodes when the asker is unspecified (duplicate address detection,
/// RFC 4861 section 7.2.4). `frame` must be at least `l3 + ADVERT_LEN` bytes long (the
/// solicitation may be shorter). Anything else than a valid solicitation for `target` is an
/// error and leaves the frame as it was.
pub fn write_advert(
    frame: &mut [u8],
    l3: usize,
    (mac, target): (MacAddr, Ipv6Addr),
    router: bool,
) -> Result<usize, WireError> {
    let ask = read_solicitation(frame, l3, target)?;
    let end = l3 + ADVERT_LEN;
    if frame.len() < end {
        return Err(WireError::Truncated("NDP advertisement"));
    }
    let (to, to_mac, solicited) = if ask.asker.is_unspecified() {
        (ALL_NODES, multicast_mac(ALL_NODES), 0)
    } else {
        (ask.asker, ask.asker_mac, FLAG_SOLICITED)
    };
    let (eth, rest) = frame[..end].split_at_mut(l3);
    let mut eth = EthernetFrame::new_checked(eth)?;
    eth.set_dst(to_mac);
    eth.set_src(mac);
    let mut na = nd_message(rest, (target, to), NEIGHBOR_ADVERT);
    let r = if router { FLAG_ROUTER } else { 0 };
    na.set_flags(r | solicited | FLAG_OVERRIDE);
    na.set_target(target);
    na.set_ll_option(OPT_TARGET_LL_ADDR, mac);
    na.fill_checksum(target, to);
    Ok(end)
}

/// Writes the IPv6 header of an NDP message with one link-layer option from `src` to `dst` over
/// the start of `packet`, and the message's type and code; the message, for its fields.
fn nd_message(
    packet: &mut [u8],
    (src, dst): (Ipv6Addr, Ipv6Addr),
    kind: u8,
) -> NdiscPacket<&mut [u8]> {
    let message = ipv6::write_header(packet, (src, dst), IPPROTO_ICMPV6, HOP_LIMIT);
    let mut nd = NdiscPacket::new_unchecked(message);
    nd.set_msg_type(kind);
    nd.set_code(0);
    nd
}

/// Length of the solicitation [`write_solicit`] writes: Ethernet and IPv6 headers, the fixed
/// part and a source link-layer address option.
pub const SOLICIT_FRAME_LEN: usize = super::ethernet::HEADER_LEN + ADVERT_LEN;

/// Writes over the start of `frame` the untagged neighbour solicitation from `(mac, ip)` for
/// `target`, to its solicited-node group, with a source link-layer address option; returns
/// its length ([`SOLICIT_FRAME_LEN`]). `frame` must be at least that long. How the v6 uplink
/// resolves a next hop, as an ARP request does for v4.
pub fn write_solicit(frame: &mut [u8], (mac, ip): (MacAddr, Ipv6Addr), target: Ipv6Addr) -> usize {
    let group = solicited_node(target);
    let frame = &mut frame[..SOLICIT_FRAME_LEN];
    let packet = super::ethernet::write_header(
        frame,
        multicast_mac(group),
        mac,
        super::ethernet::ETHERTYPE_IPV6,
    );
    let mut ns = nd_message(packet, (ip, group), NEIGHBOR_SOLICIT);
    ns.set_flags(0);
    ns.set_target(target);
    ns.set_ll_option(OPT_SOURCE_LL_ADDR, mac);
    ns.fill_checksum(ip, group);
    SOLICIT_FRAME_LEN
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
    use proptest::prelude::*;

    const A: Ipv6Addr = Ipv6Addr::new(0xfd00, 9, 0, 0, 0, 0, 0, 2);
    const GW: Ipv6Addr = Ipv6Addr::new(0xfd00, 9, 0, 0, 0, 0, 0, 1);
    const A_MAC: MacAddr = MacAddr([2, 0x42, 0, 0, 0, 2]);
    const GW_MAC: MacAddr = MacAddr([2, 0x42, 0xac, 0x11, 0, 1]);

    /// A solicitation for `target` from `src` built by etherparse (checksum included).
    fn solicit(src: Ipv6Addr, target: Ipv6Addr, slla: bool, hop_limit: u8) -> Vec<u8> {
        let dst = solicited_node(target);
        let mut body = target.octets().to_vec();
        if slla {
            body.extend_from_slice(&[OPT_SOURCE_LL_ADDR, 1]);
            body.extend_from_slice(&A_MAC.0);
        }
        let mut v = Vec::new();
        PacketBuilder::ethernet2(A_MAC.0, multicast_mac(dst).0)
            .ipv6(src.octets(), dst.octets(), hop_limit)
            .icmpv6_raw(NEIGHBOR_SOLICIT, 0, [0; 4])
            .write(&mut v, &body)
            .unwrap();
        v
    }

    #[test]
    fn solicit_is_what_etherparse_builds() {
        let mut frame = vec![0xee; SOLICIT_FRAME_LEN + 10];
        let n = write_solicit(&mut frame, (A_MAC, A), GW);
        assert_eq!(&frame[..n], &solicit(A, GW, true, HOP_LIMIT)[..]);
    }

    #[test]
    fn address_helpers() {
        let ip: Ipv6Addr = "fd00:9::12:3456".parse().unwrap();
        assert_eq!(
            solicited_node(ip),
            "ff02::1:ff12:3456".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            multicast_mac(solicited_node(ip)),
            MacAddr([0x33, 0x33, 0xff, 0x12, 0x34, 0x56])
        );
        assert_eq!(
            link_local(GW_MAC),
            "fe80::42:acff:fe11:1".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn solicitation_fields() {
        let v = solicit(A, GW, true, HOP_LIMIT);
        let ns = NdiscPacket::new_checked(&v[54..]).unwrap();
        assert_eq!(
            (ns.msg_type(), ns.code(), ns.flags()),
            (NEIGHBOR_SOLICIT, 0, 0)
        );
        assert_eq!(ns.target(), GW);
        assert_eq!(ns.source_ll_addr(), Some(A_MAC));
        assert_eq!(ns.target_ll_addr(), None);
        assert!(ns.verify_checksum(A, solicited_node(GW)));
        assert!(!ns.verify_checksum(A, GW));
        let mut bad = v[54..].to_vec();
        bad[25] = 0; // option length 0
        assert_eq!(
            NdiscPacket::new_checked(&bad[..]),
            Err(WireError::Malformed("NDP (option length 0)"))
        );
        bad[25] = 2; // 16 bytes in an 8-byte tail
        assert!(matches!(
            NdiscPacket::new_checked(&bad[..]),
            Err(WireError::Truncated(_))
        ));
        bad[0] = 128;
        assert!(NdiscPacket::new_checked(&bad[..]).is_err());
        assert!(NdiscPacket::new_checked(&v[54..77]).is_err());
    }

    /// Checks the advertisement in `v` against etherparse and returns its destinations and flags.
    fn parse_advert(v: &[u8]) -> (MacAddr, Ipv6Addr, u8) {
        let parsed = SlicedPacket::from_ethernet(v).unwrap();
        let Some(etherparse::NetSlice::Ipv6(ip)) = parsed.net else {
            panic!("not ipv6")
        };
        let h = ip.header();
        assert_eq!((h.source_addr(), h.hop_limit()), (GW, HOP_LIMIT));
        let Some(TransportSlice::Icmpv6(icmp)) = parsed.transport else {
            panic!("not icmpv6")
        };
        let want = icmp
            .icmp_type()
            .calc_checksum(GW.octets(), h.destination_addr().octets(), icmp.payload())
            .unwrap();
        assert_eq!(icmp.checksum(), want);
        let na = NdiscPacket::new_checked(&v[54..]).unwrap();
        assert_eq!((na.msg_type(), na.target()), (NEIGHBOR_ADVERT, GW));
        assert_eq!(na.target_ll_addr(), Some(GW_MAC));
        assert_eq!(&v[6..12], &GW_MAC.0);
        (
            EthernetFrame::new_checked(v).unwrap().dst(),
            h.destination_addr(),
            na.flags(),
        )
    }

    #[test]
    fn advert_in_place() {
        let mut v = solicit(A, GW, true, HOP_LIMIT);
        v.resize(14 + ADVERT_LEN, 0);
        assert_eq!(
            write_advert(&mut v, 14, (GW_MAC, GW), true),
            Ok(14 + ADVERT_LEN)
        );
        assert_eq!(
            parse_advert(&v),
            (A_MAC, A, FLAG_ROUTER | FLAG_SOLICITED | FLAG_OVERRIDE)
        );
        // Duplicate address detection: from ::, without the option, answered to all nodes.
        let mut v = solicit(Ipv6Addr::UNSPECIFIED, GW, false, HOP_LIMIT);
        assert_eq!(v.len(), 14 + 64);
        v.resize(14 + ADVERT_LEN, 0);
        assert_eq!(
            write_advert(&mut v, 14, (GW_MAC, GW), false),
            Ok(14 + ADVERT_LEN)
        );
        assert_eq!(
            parse_advert(&v),
            (multicast_mac(ALL_NODES), ALL_NODES, FLAG_OVERRIDE)
        );
    }

    #[test]
    fn advert_refuses_what_is_not_a_solicitation_for_us() {
        let mut cases = vec![solicit(A, A, true, HOP_LIMIT), solicit(A, GW, true, 64)];
        let mut zero_option = solicit(A, GW, true, HOP_LIMIT);
        zero_option[14 + 40 + 25] = 0;
        cases.push(zero_option);
        let mut bad_sum = solicit(A, GW, true, HOP_LIMIT);
        bad_sum[14 + 40 + 2] ^= 1;
        cases.push(bad_sum);
        for mut v in cases {
            v.resize(14 + ADVERT_LEN, 0);
            let orig = v.clone();
            assert!(write_advert(&mut v, 14, (GW_MAC, GW), true).is_err());
            assert_eq!(v, orig);
        }
        // A valid solicitation in a buffer too short for the answer.
        let mut v = solicit(Ipv6Addr::UNSPECIFIED, GW, false, HOP_LIMIT);
        assert_eq!(
            write_advert(&mut v, 14, (GW_MAC, GW), true),
            Err(WireError::Truncated("NDP advertisement"))
        );
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..96)) {
            if let Ok(p) = NdiscPacket::new_checked(&data[..]) {
                std::hint::black_box((p.msg_type(), p.code(), p.checksum(), p.flags(),
                    p.target(), p.source_ll_addr(), p.target_ll_addr(), p.options().len(),
                    p.verify_checksum(A, GW)));
            }
            let mut frame = data.clone();
            frame.resize(data.len().max(14 + ADVERT_LEN), 0);
            let _ = write_advert(&mut frame, 14, (GW_MAC, GW), true);
        }

        #[test]
        fn options_found_anywhere(before in 0usize..4, mac in any::<[u8; 6]>()) {
            let mut msg = vec![0u8; HEADER_LEN];
            msg[0] = NEIGHBOR_ADVERT;
            for _ in 0..before {
                msg.extend_from_slice(&[14, 1, 0, 0, 0, 0, 0, 0]); // a nonce option
            }
            msg.extend_from_slice(&[OPT_TARGET_LL_ADDR, 1]);
            msg.extend_from_slice(&mac);
            let p = NdiscPacket::new_checked(&msg[..]).unwrap();
            prop_assert_eq!(p.target_ll_addr(), Some(MacAddr(mac)));
            prop_assert_eq!(p.source_ll_addr(), None);
        }
    }
}
