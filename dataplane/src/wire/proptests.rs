//! Property tests across the wire views: no panic on arbitrary or truncated input, field-by-field
//! agreement with `etherparse` on packets it builds, and incremental checksum updates that agree
//! with full recomputation.

use std::hint::black_box;
use std::net::Ipv4Addr;

use etherparse::{
    EtherType, Ethernet2Header, IcmpEchoHeader, Icmpv4Header, Icmpv4Type, IpAuthHeader,
    IpFragOffset, IpNumber, Ipv4Dscp, Ipv4Ecn, Ipv4Header, Ipv4Options, Ipv6FlowLabel, Ipv6Header,
    Ipv6RawExtHeader, SingleVlanHeader, TcpHeader, UdpHeader, VlanId, VlanPcp,
};
use proptest::collection::vec;
use proptest::prelude::*;

use super::checksum::{
    adjust16, adjust32, adjust_partial32, adjust_udp16, adjust_udp32, fold, ones_sum,
    pseudo_header_sum_v4,
};
use super::icmpv4::{self, Icmpv4Packet};
use super::ipv6::{self, Ipv6Packet};
use super::{
    arp, parse_l2, tcp, ArpPacket, EthernetFrame, Ipv4Packet, MacAddr, TcpPacket, UdpPacket,
};

// ---------------------------------------------------------------------------------------------
// No panics: every view over arbitrary bytes, every getter after a successful check, and the
// clamping setters (lengths) followed by the payload accessors.
// ---------------------------------------------------------------------------------------------

fn touch_ethernet(b: &[u8]) {
    if let Ok(e) = EthernetFrame::new_checked(b) {
        black_box((e.dst(), e.src(), e.ethertype(), e.payload().len()));
    }
    if let Ok(h) = parse_l2(b) {
        assert!(h.l3_offset <= b.len());
    }
}

fn touch_arp(b: &[u8]) {
    if let Ok(p) = ArpPacket::new_checked(b) {
        black_box((
            p.operation(),
            p.sender_mac(),
            p.sender_ip(),
            p.target_mac(),
            p.target_ip(),
        ));
    }
}

fn touch_ipv4_view<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) {
    black_box((
        p.version(),
        p.header_len(),
        p.tos(),
        p.total_len(),
        p.ident(),
    ));
    black_box((
        p.dont_frag(),
        p.more_frags(),
        p.frag_offset(),
        p.is_fragment(),
    ));
    black_box((
        p.is_first_fragment(),
        p.ttl(),
        p.protocol(),
        p.checksum(),
        p.src(),
        p.dst(),
    ));
    black_box((
        p.options().len(),
        p.payload().len(),
        p.quoted_payload().len(),
    ));
    black_box(p.verify_checksum());
}

fn touch_ipv4(b: &[u8], new_len: u16) {
    for quoted in [false, true] {
        let mut buf = b.to_vec();
        let checked = if quoted {
            Ipv4Packet::new_quoted(&mut buf[..])
        } else {
            Ipv4Packet::new_checked(&mut buf[..])
        };
        if let Ok(mut p) = checked {
            touch_ipv4_view(&p);
            if quoted {
                assert!(p.quoted_payload().len() >= 8);
            }
            p.set_total_len(new_len);
            touch_ipv4_view(&p);
            black_box((p.payload_mut().len(), p.quoted_payload_mut().len()));
            p.fill_checksum();
            assert!(p.verify_checksum());
        }
    }
}

fn touch_ipv6(b: &[u8], new_len: u16) {
    let mut buf = b.to_vec();
    if let Ok(mut p) = Ipv6Packet::new_checked(&mut buf[..]) {
        black_box((
            p.version(),
            p.traffic_class(),
            p.flow_label(),
            p.payload_len(),
        ));
        black_box((
            p.next_header(),
            p.hop_limit(),
            p.src(),
            p.dst(),
            p.payload().len(),
        ));
        if let Ok((_, off)) = p.walk_extensions() {
            assert!(off <= b.len());
        }
        p.set_payload_len(new_len);
        black_box((p.payload().len(), p.payload_mut().len()));
        let _ = black_box(p.walk_extensions());
    }
}

fn touch_tcp(b: &[u8]) {
    if let Ok(t) = TcpPacket::new_checked(b) {
        black_box((
            t.src_port(),
            t.dst_port(),
            t.seq(),
            t.ack(),
            t.header_len(),
            t.flags(),
        ));
        black_box((
            t.window(),
            t.checksum(),
            t.urgent(),
            t.options().len(),
            t.payload().len(),
        ));
        black_box(t.verify_checksum_v4(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST));
    }
}

fn touch_udp(b: &[u8], new_len: u16) {
    let mut buf = b.to_vec();
    if let Ok(mut u) = UdpPacket::new_checked(&mut buf[..]) {
        black_box((
            u.src_port(),
            u.dst_port(),
            u.len(),
            u.is_empty(),
            u.checksum(),
        ));
        black_box((
            u.payload().len(),
            u.verify_checksum_v4(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST),
        ));
        u.set_len(new_len);
        black_box((u.payload().len(), u.payload_mut().len()));
        u.fill_checksum_v4(Ipv4Addr::LOCALHOST, Ipv4Addr::BROADCAST);
    }
}

fn touch_icmpv4(b: &[u8]) {
    if let Ok(p) = Icmpv4Packet::new_checked(b) {
        black_box((
            p.msg_type(),
            p.code(),
            p.checksum(),
            p.echo_ident(),
            p.echo_seq(),
        ));
        black_box((
            p.rest_of_header(),
            p.is_error(),
            p.next_hop_mtu(),
            p.payload().len(),
        ));
        black_box(p.verify_checksum());
    }
}

fn touch_all(b: &[u8], new_len: u16) {
    touch_ethernet(b);
    touch_arp(b);
    touch_ipv4(b, new_len);
    touch_ipv6(b, new_len);
    touch_tcp(b);
    touch_udp(b, new_len);
    touch_icmpv4(b);
}

/// Arbitrary bytes whose first byte is often a plausible IPv4/IPv6/TCP header start, so the
/// checked constructors succeed often enough to exercise the getters.
fn fuzz_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        vec(any::<u8>(), 0..120),
        prop_oneof![Just(None), (0x40u8..0x70).prop_map(Some)],
    )
        .prop_map(|(mut v, first)| {
            if let (Some(f), Some(b)) = (first, v.first_mut()) {
                *b = f;
            }
            v
        })
}

// ---------------------------------------------------------------------------------------------
// Packets built with etherparse.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Ipv4Spec {
    header: Ipv4Header,
    payload: Vec<u8>,
    padding: usize,
}

impl Ipv4Spec {
    fn bytes(&self) -> Vec<u8> {
        let mut v = self.header.to_bytes().to_vec();
        v.extend_from_slice(&self.payload);
        v.resize(v.len() + self.padding, 0);
        v
    }
}

prop_compose! {
    fn ipv4_header(payload_len: usize)(
        dscp in 0u8..64, ecn in 0u8..4, ident in any::<u16>(), df in any::<bool>(),
        mf in any::<bool>(), frag in 0u16..0x2000, ttl in any::<u8>(), proto in any::<u8>(),
        src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), opt_words in 0usize..=10,
        opt_byte in any::<u8>(),
    ) -> Ipv4Header {
        let mut h = Ipv4Header {
            dscp: Ipv4Dscp::try_new(dscp).unwrap(),
            ecn: Ipv4Ecn::try_new(ecn).unwrap(),
            identification: ident,
            dont_fragment: df,
            more_fragments: mf,
            fragment_offset: IpFragOffset::try_new(frag).unwrap(),
            time_to_live: ttl,
            protocol: IpNumber(proto),
            source: src,
            destination: dst,
            ..Default::default()
        };
        h.options = Ipv4Options::try_from(&vec![opt_byte; opt_words * 4][..]).unwrap();
        h.total_len = (h.header_len() + payload_len) as u16;
        h.header_checksum = h.calc_header_checksum();
        h
    }
}

fn ipv4_spec() -> impl Strategy<Value = Ipv4Spec> {
    (vec(any::<u8>(), 0..64), 0usize..20).prop_flat_map(|(payload, padding)| {
        ipv4_header(payload.len()).prop_map(move |header| Ipv4Spec {
            header,
            payload: payload.clone(),
            padding,
        })
    })
}

/// One IPv6 extension header to chain: kind and a size/offset knob.
#[derive(Debug, Clone, Copy)]
enum Ext {
    HopByHop(u8),
    DestOpts(u8),
    Routing(u8),
    Fragment { offset: u16, more: bool },
    Auth(u8),
}

impl Ext {
    fn number(self) -> u8 {
        match self {
            Ext::HopByHop(_) => ipv6::NH_HOP_BY_HOP,
            Ext::DestOpts(_) => ipv6::NH_DEST_OPTS,
            Ext::Routing(_) => ipv6::NH_ROUTING,
            Ext::Fragment { .. } => ipv6::NH_FRAGMENT,
            Ext::Auth(_) => ipv6::NH_AUTH,
        }
    }

    fn bytes(self, next: u8) -> Vec<u8> {
        let next = IpNumber(next);
        match self {
            Ext::HopByHop(n) | Ext::DestOpts(n) | Ext::Routing(n) => {
                let body = vec![n; 6 + 8 * usize::from(n % 4)];
                Ipv6RawExtHeader::new_raw(next, &body)
                    .unwrap()
                    .to_bytes()
                    .to_vec()
            }
            Ext::Fragment { offset, more } => {
                // Hand-built: etherparse 0.16 puts the offset's low bits and the M flag at the
                // wrong bit positions (etherparse issue #150, fixed in 0.20); RFC 8200 4.5 has
                // the 13-bit offset on top of a big-endian word and M as its lowest bit.
                let word = (offset << 3) | u16::from(more);
                let mut h = vec![next.0, 0];
                h.extend_from_slice(&word.to_be_bytes());
                h.extend_from_slice(&0x1234_5678u32.to_be_bytes());
                h
            }
            Ext::Auth(n) => {
                let icv = vec![n; 4 * usize::from(n % 5)];
                IpAuthHeader::new(next, 7, 9, &icv)
                    .unwrap()
                    .to_bytes()
                    .to_vec()
            }
        }
    }
}

fn ext() -> impl Strategy<Value = Ext> {
    prop_oneof![
        any::<u8>().prop_map(Ext::HopByHop),
        any::<u8>().prop_map(Ext::DestOpts),
        any::<u8>().prop_map(Ext::Routing),
        (prop_oneof![Just(0u16), 0u16..0x2000], any::<bool>())
            .prop_map(|(offset, more)| Ext::Fragment { offset, more }),
        any::<u8>().prop_map(Ext::Auth),
    ]
}

#[derive(Debug, Clone)]
struct Ipv6Spec {
    header: Ipv6Header,
    exts: Vec<Ext>,
    upper: u8,
    payload: Vec<u8>,
}

impl Ipv6Spec {
    /// The bytes, and the (protocol, L4 offset) the walk must report.
    fn build(&self) -> (Vec<u8>, (u8, usize)) {
        let mut body = Vec::new();
        let mut expect = None;
        for (i, e) in self.exts.iter().enumerate() {
            let next = self.exts.get(i + 1).map_or(self.upper, |n| n.number());
            body.extend_from_slice(&e.bytes(next));
            if let (None, Ext::Fragment { offset, .. }) = (expect, e) {
                if *offset != 0 {
                    expect = Some((ipv6::NH_FRAGMENT, ipv6::HEADER_LEN + body.len()));
                }
            }
        }
        let expect = expect.unwrap_or((self.upper, ipv6::HEADER_LEN + body.len()));
        body.extend_from_slice(&self.payload);
        let mut header = self.header.clone();
        header.next_header = IpNumber(self.exts.first().map_or(self.upper, |e| e.number()));
        header.payload_length = body.len() as u16;
        let mut v = header.to_bytes().to_vec();
        v.extend_from_slice(&body);
        (v, expect)
    }
}

fn ipv6_spec() -> impl Strategy<Value = Ipv6Spec> {
    (
        any::<u8>(),
        0u32..(1 << 20),
        any::<u8>(),
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        vec(ext(), 0..8),
        prop_oneof![Just(6u8), Just(17u8), Just(58u8), Just(50u8), Just(59u8)],
        vec(any::<u8>(), 0..32),
    )
        .prop_map(|(tc, flow, hop, src, dst, exts, upper, payload)| Ipv6Spec {
            header: Ipv6Header {
                traffic_class: tc,
                flow_label: Ipv6FlowLabel::try_new(flow).unwrap(),
                payload_length: 0,
                next_header: IpNumber(upper),
                hop_limit: hop,
                source: src,
                destination: dst,
            },
            exts,
            upper,
            payload,
        })
}

#[derive(Debug, Clone)]
struct TcpSpec {
    header: TcpHeader,
    payload: Vec<u8>,
    src: [u8; 4],
    dst: [u8; 4],
}

impl TcpSpec {
    fn bytes(&self) -> Vec<u8> {
        let mut v = self.header.to_bytes().to_vec();
        v.extend_from_slice(&self.payload);
        v
    }
}

fn tcp_spec() -> impl Strategy<Value = TcpSpec> {
    (
        (
            any::<u16>(),
            any::<u16>(),
            any::<u32>(),
            any::<u32>(),
            any::<u16>(),
            any::<u16>(),
        ),
        any::<u8>(),
        0usize..=10,
        vec(any::<u8>(), 0..64),
        any::<[u8; 4]>(),
        any::<[u8; 4]>(),
    )
        .prop_map(
            |((sp, dp, seq, ack, win, urg), flags, opt_words, payload, src, dst)| {
                let mut h = TcpHeader::new(sp, dp, seq, win);
                h.acknowledgment_number = ack;
                h.urgent_pointer = urg;
                h.fin = flags & tcp::FIN != 0;
                h.syn = flags & tcp::SYN != 0;
                h.rst = flags & tcp::RST != 0;
                h.psh = flags & tcp::PSH != 0;
                h.ack = flags & tcp::ACK != 0;
                h.urg = flags & tcp::URG != 0;
                h.ece = flags & tcp::ECE != 0;
                h.cwr = flags & tcp::CWR != 0;
                // NOP options: any length that is a multiple of 4.
                h.set_options_raw(&vec![1u8; opt_words * 4]).unwrap();
                h.checksum = h.calc_checksum_ipv4_raw(src, dst, &payload).unwrap();
                TcpSpec {
                    header: h,
                    payload,
                    src,
                    dst,
                }
            },
        )
}

#[derive(Debug, Clone)]
struct UdpSpec {
    header: UdpHeader,
    payload: Vec<u8>,
    src: [u8; 4],
    dst: [u8; 4],
}

impl UdpSpec {
    fn bytes(&self) -> Vec<u8> {
        let mut v = self.header.to_bytes().to_vec();
        v.extend_from_slice(&self.payload);
        v
    }
}

fn udp_spec() -> impl Strategy<Value = UdpSpec> {
    (
        any::<u16>(),
        any::<u16>(),
        vec(any::<u8>(), 0..64),
        any::<[u8; 4]>(),
        any::<[u8; 4]>(),
    )
        .prop_map(|(sp, dp, payload, src, dst)| {
            let mut h = UdpHeader {
                source_port: sp,
                destination_port: dp,
                length: (8 + payload.len()) as u16,
                checksum: 0,
            };
            h.checksum = h.calc_checksum_ipv4_raw(src, dst, &payload).unwrap();
            UdpSpec {
                header: h,
                payload,
                src,
                dst,
            }
        })
}

fn icmp_type() -> impl Strategy<Value = Icmpv4Type> {
    use etherparse::icmpv4::{DestUnreachableHeader, TimeExceededCode};
    prop_oneof![
        (any::<u16>(), any::<u16>())
            .prop_map(|(id, seq)| Icmpv4Type::EchoRequest(IcmpEchoHeader { id, seq })),
        (any::<u16>(), any::<u16>())
            .prop_map(|(id, seq)| Icmpv4Type::EchoReply(IcmpEchoHeader { id, seq })),
        Just(Icmpv4Type::DestinationUnreachable(
            DestUnreachableHeader::Port
        )),
        Just(Icmpv4Type::DestinationUnreachable(
            DestUnreachableHeader::Host
        )),
        any::<u16>().prop_map(|next_hop_mtu| Icmpv4Type::DestinationUnreachable(
            DestUnreachableHeader::FragmentationNeeded { next_hop_mtu }
        )),
        Just(Icmpv4Type::TimeExceeded(
            TimeExceededCode::TtlExceededInTransit
        )),
    ]
}

fn mac() -> impl Strategy<Value = [u8; 6]> {
    any::<[u8; 6]>()
}

proptest! {
    #[test]
    fn no_panic_on_arbitrary_bytes(data in fuzz_bytes(), new_len in any::<u16>()) {
        touch_all(&data, new_len);
    }

    #[test]
    fn no_panic_on_truncated_packets(ip in ipv4_spec(), v6 in ipv6_spec(), t in tcp_spec(),
                                     u in udp_spec(), new_len in any::<u16>()) {
        for bytes in [ip.bytes(), v6.build().0, t.bytes(), u.bytes()] {
            for cut in 0..=bytes.len() {
                touch_all(&bytes[..cut], new_len);
            }
        }
    }

    #[test]
    fn ethernet_matches_etherparse(dst in mac(), src in mac(), ethertype in any::<u16>(),
                                   tag in proptest::option::of((0u8..8, any::<bool>(), 0u16..4096,
                                                                any::<bool>())),
                                   payload in vec(any::<u8>(), 0..8)) {
        prop_assume!(ethertype != 0x8100 && ethertype != 0x88a8);
        let mut f = Ethernet2Header {
            source: src,
            destination: dst,
            ether_type: EtherType(ethertype),
        }
        .to_bytes()
        .to_vec();
        if let Some((pcp, dei, vid, ad)) = tag {
            f[12..14].copy_from_slice(&if ad { [0x88, 0xa8] } else { [0x81, 0x00] });
            let v = SingleVlanHeader {
                pcp: VlanPcp::try_new(pcp).unwrap(),
                drop_eligible_indicator: dei,
                vlan_id: VlanId::try_new(vid).unwrap(),
                ether_type: EtherType(ethertype),
            };
            f.extend_from_slice(&v.to_bytes());
        }
        f.extend_from_slice(&payload);
        let h = parse_l2(&f).unwrap();
        prop_assert_eq!(h.dst, MacAddr(dst));
        prop_assert_eq!(h.src, MacAddr(src));
        prop_assert_eq!(h.ethertype, ethertype);
        match tag {
            Some((pcp, dei, vid, _)) => {
                let t = h.vlan.unwrap();
                prop_assert_eq!((t.pcp, t.dei, t.vid, h.l3_offset), (pcp, dei, vid, 18));
            }
            None => prop_assert_eq!((h.vlan, h.l3_offset), (None, 14)),
        }
        let e = EthernetFrame::new_checked(&f[..]).unwrap();
        prop_assert_eq!((e.dst(), e.src()), (MacAddr(dst), MacAddr(src)));
        prop_assert_eq!(e.payload(), &f[14..]);
    }

    #[test]
    fn arp_round_trip(op in 1u16..3, smac in mac(), sip in any::<[u8; 4]>(), tmac in mac(),
                      tip in any::<[u8; 4]>(), pad in 0usize..18) {
        // Hand-built: etherparse 0.16 has no ARP type.
        let mut b = vec![0, 1, 8, 0, 6, 4];
        b.extend_from_slice(&op.to_be_bytes());
        b.extend_from_slice(&smac);
        b.extend_from_slice(&sip);
        b.extend_from_slice(&tmac);
        b.extend_from_slice(&tip);
        b.resize(b.len() + pad, 0);
        let p = ArpPacket::new_checked(&b[..]).unwrap();
        prop_assert_eq!(p.operation(), op);
        prop_assert_eq!((p.sender_mac(), p.sender_ip()), (MacAddr(smac), Ipv4Addr::from(sip)));
        prop_assert_eq!((p.target_mac(), p.target_ip()), (MacAddr(tmac), Ipv4Addr::from(tip)));
        let mut built = [0u8; arp::PACKET_LEN];
        let mut q = ArpPacket::new_unchecked(&mut built[..]);
        q.init_ethernet_ipv4();
        q.set_operation(op);
        q.set_sender_mac(MacAddr(smac));
        q.set_sender_ip(sip.into());
        q.set_target_mac(MacAddr(tmac));
        q.set_target_ip(tip.into());
        prop_assert_eq!(&built[..], &b[..arp::PACKET_LEN]);
    }

    #[test]
    fn ipv4_matches_etherparse(spec in ipv4_spec()) {
        let h = &spec.header;
        let bytes = spec.bytes();
        let p = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        prop_assert_eq!((p.header_len(), p.total_len()), (h.header_len(), h.total_len));
        prop_assert_eq!(p.tos(), (h.dscp.value() << 2) | h.ecn.value());
        prop_assert_eq!((p.ident(), p.dont_frag(), p.more_frags()),
                        (h.identification, h.dont_fragment, h.more_fragments));
        prop_assert_eq!(p.frag_offset(), h.fragment_offset.byte_offset());
        prop_assert_eq!(p.is_fragment(), h.is_fragmenting_payload());
        prop_assert_eq!(p.is_first_fragment(),
                        h.more_fragments && h.fragment_offset.value() == 0);
        prop_assert_eq!((p.ttl(), p.protocol()), (h.time_to_live, h.protocol.0));
        prop_assert_eq!((p.src(), p.dst()), (Ipv4Addr::from(h.source), Ipv4Addr::from(h.destination)));
        prop_assert_eq!(p.options(), h.options.as_slice());
        prop_assert_eq!(p.payload(), &spec.payload[..]);
        prop_assert_eq!(p.checksum(), h.header_checksum);
        prop_assert!(p.verify_checksum());
        let mut copy = bytes.clone();
        let mut q = Ipv4Packet::new_checked(&mut copy[..]).unwrap();
        q.set_checksum(0x5555);
        q.fill_checksum();
        prop_assert_eq!(q.checksum(), h.header_checksum);
        // Setters agree with etherparse's encoding.
        let mut copy = bytes[..h.header_len()].to_vec();
        copy[2..8].fill(0);
        let mut q = Ipv4Packet::new_unchecked(&mut copy[..]);
        q.set_flags_frag(h.dont_fragment, h.more_fragments, h.fragment_offset.byte_offset());
        q.set_total_len(h.total_len);
        q.set_ident(h.identification);
        prop_assert_eq!(&copy[..], &bytes[..h.header_len()]);
    }

    #[test]
    fn ipv4_quoted_matches_etherparse(spec in ipv4_spec(), extra in 0u16..1000) {
        prop_assume!(spec.payload.len() >= 8);
        let mut spec = spec;
        spec.header.total_len += extra; // the original datagram was longer than the quote
        let bytes = spec.bytes();
        let quote = &bytes[..spec.header.header_len() + 8];
        let q = Ipv4Packet::new_quoted(quote).unwrap();
        prop_assert_eq!(q.src(), Ipv4Addr::from(spec.header.source));
        prop_assert_eq!(q.dst(), Ipv4Addr::from(spec.header.destination));
        prop_assert_eq!(q.quoted_payload(), &spec.payload[..8]);
        prop_assert!(Ipv4Packet::new_quoted(&quote[..quote.len() - 1]).is_err());
    }

    #[test]
    fn ipv6_matches_etherparse(spec in ipv6_spec(), pad in 0usize..8) {
        let (mut bytes, expect) = spec.build();
        let payload_len = bytes.len() - ipv6::HEADER_LEN;
        bytes.resize(bytes.len() + pad, 0);
        let p = Ipv6Packet::new_checked(&bytes[..]).unwrap();
        let h = &spec.header;
        prop_assert_eq!((p.traffic_class(), p.flow_label(), p.hop_limit()),
                        (h.traffic_class, h.flow_label.value(), h.hop_limit));
        prop_assert_eq!(usize::from(p.payload_len()), payload_len);
        prop_assert_eq!(p.src(), std::net::Ipv6Addr::from(h.source));
        prop_assert_eq!(p.dst(), std::net::Ipv6Addr::from(h.destination));
        prop_assert_eq!(p.payload().len(), payload_len);
        prop_assert_eq!(p.walk_extensions(), Ok(expect));
        // Cutting the payload inside the extension chain must be noticed, not misread.
        if expect.1 > ipv6::HEADER_LEN {
            let mut cut = bytes[..expect.1 - 1].to_vec();
            let len = (cut.len() - ipv6::HEADER_LEN) as u16;
            Ipv6Packet::new_unchecked(&mut cut[..]).set_payload_len(len);
            let r = Ipv6Packet::new_checked(&cut[..]).unwrap().walk_extensions();
            prop_assert!(matches!(r, Err(super::WireError::Truncated(_))));
        }
    }

    #[test]
    fn tcp_matches_etherparse(spec in tcp_spec()) {
        let h = &spec.header;
        let bytes = spec.bytes();
        let t = TcpPacket::new_checked(&bytes[..]).unwrap();
        prop_assert_eq!((t.src_port(), t.dst_port()), (h.source_port, h.destination_port));
        prop_assert_eq!((t.seq(), t.ack()), (h.sequence_number, h.acknowledgment_number));
        prop_assert_eq!((t.window(), t.urgent(), t.checksum()),
                        (h.window_size, h.urgent_pointer, h.checksum));
        prop_assert_eq!(t.header_len(), h.header_len());
        let f = t.flags();
        prop_assert_eq!([f & tcp::FIN != 0, f & tcp::SYN != 0, f & tcp::RST != 0,
                         f & tcp::PSH != 0, f & tcp::ACK != 0, f & tcp::URG != 0,
                         f & tcp::ECE != 0, f & tcp::CWR != 0],
                        [h.fin, h.syn, h.rst, h.psh, h.ack, h.urg, h.ece, h.cwr]);
        prop_assert_eq!(t.options(), h.options.as_slice());
        prop_assert_eq!(t.payload(), &spec.payload[..]);
        let (s, d) = (Ipv4Addr::from(spec.src), Ipv4Addr::from(spec.dst));
        prop_assert!(t.verify_checksum_v4(s, d));
        let mut copy = bytes.clone();
        let mut m = TcpPacket::new_checked(&mut copy[..]).unwrap();
        m.fill_checksum_v4(s, d);
        prop_assert_eq!(m.checksum(), h.checksum);
        let (s6, d6) = ([1u8; 16], [2u8; 16]);
        m.fill_checksum_v6(s6.into(), d6.into());
        prop_assert_eq!(m.checksum(), h.calc_checksum_ipv6_raw(s6, d6, &spec.payload).unwrap());
        prop_assert!(m.verify_checksum_v6(s6.into(), d6.into()));
    }

    #[test]
    fn udp_matches_etherparse(spec in udp_spec(), pad in 0usize..8) {
        let h = &spec.header;
        let mut bytes = spec.bytes();
        bytes.resize(bytes.len() + pad, 0xaa);
        let u = UdpPacket::new_checked(&bytes[..]).unwrap();
        prop_assert_eq!((u.src_port(), u.dst_port()), (h.source_port, h.destination_port));
        prop_assert_eq!((u.len(), u.checksum()), (h.length, h.checksum));
        prop_assert_eq!(u.payload(), &spec.payload[..]);
        let (s, d) = (Ipv4Addr::from(spec.src), Ipv4Addr::from(spec.dst));
        prop_assert!(u.verify_checksum_v4(s, d));
        let mut copy = bytes.clone();
        let mut m = UdpPacket::new_checked(&mut copy[..]).unwrap();
        m.fill_checksum_v4(s, d);
        prop_assert_eq!(m.checksum(), h.checksum);
        let (s6, d6) = ([3u8; 16], [4u8; 16]);
        m.fill_checksum_v6(s6.into(), d6.into());
        prop_assert_eq!(m.checksum(), h.calc_checksum_ipv6_raw(s6, d6, &spec.payload).unwrap());
    }

    #[test]
    fn icmpv4_matches_etherparse(ty in icmp_type(), quoted in ipv4_spec()) {
        let is_error = !matches!(ty, Icmpv4Type::EchoRequest(_) | Icmpv4Type::EchoReply(_));
        let payload = if is_error { quoted.bytes() } else { quoted.payload.clone() };
        let h = Icmpv4Header::with_checksum(ty.clone(), &payload);
        let mut bytes = h.to_bytes().to_vec();
        bytes.extend_from_slice(&payload);
        let p = Icmpv4Packet::new_checked(&bytes[..]).unwrap();
        prop_assert_eq!(p.msg_type(), bytes[0]);
        prop_assert_eq!((p.checksum(), p.is_error()), (h.checksum, is_error));
        prop_assert!(p.verify_checksum());
        prop_assert_eq!(p.payload(), &payload[..]);
        match ty {
            Icmpv4Type::EchoRequest(e) | Icmpv4Type::EchoReply(e) => {
                prop_assert_eq!((p.echo_ident(), p.echo_seq()), (e.id, e.seq));
                let want = if matches!(ty, Icmpv4Type::EchoRequest(_)) {
                    icmpv4::ECHO_REQUEST
                } else {
                    icmpv4::ECHO_REPLY
                };
                prop_assert_eq!(p.msg_type(), want);
            }
            Icmpv4Type::DestinationUnreachable(d) => {
                use etherparse::icmpv4::DestUnreachableHeader as D;
                prop_assert_eq!(p.msg_type(), icmpv4::DEST_UNREACHABLE);
                let (code, mtu) = match d {
                    D::FragmentationNeeded { next_hop_mtu } => {
                        (icmpv4::CODE_FRAG_NEEDED, Some(next_hop_mtu))
                    }
                    D::Port => (icmpv4::CODE_PORT_UNREACHABLE, None),
                    _ => (icmpv4::CODE_HOST_UNREACHABLE, None),
                };
                prop_assert_eq!((p.code(), p.next_hop_mtu()), (code, mtu));
            }
            _ => prop_assert_eq!((p.msg_type(), p.code()),
                                 (icmpv4::TIME_EXCEEDED, icmpv4::CODE_TTL_EXCEEDED)),
        }
        if is_error && quoted.payload.len() >= 8 {
            let q = Ipv4Packet::new_quoted(p.payload()).unwrap();
            prop_assert_eq!(q.src(), Ipv4Addr::from(quoted.header.source));
            prop_assert_eq!(q.quoted_payload(), &quoted.payload[..]);
        }
        let mut copy = bytes.clone();
        let mut m = Icmpv4Packet::new_checked(&mut copy[..]).unwrap();
        m.set_checksum(0);
        m.fill_checksum();
        prop_assert_eq!(m.checksum(), h.checksum);
    }

    // -----------------------------------------------------------------------------------------
    // Incremental checksum updates equal full recomputation.
    // -----------------------------------------------------------------------------------------

    #[test]
    fn ipv4_header_adjust(spec in ipv4_spec(), new_src in any::<[u8; 4]>(), ttl in any::<u8>()) {
        let mut bytes = spec.bytes();
        let mut p = Ipv4Packet::new_checked(&mut bytes[..]).unwrap();
        let old_word = u16::from_be_bytes([p.ttl(), p.protocol()]);
        p.set_ttl(ttl);
        let c = adjust16(p.checksum(), old_word, u16::from_be_bytes([ttl, p.protocol()]));
        let c = adjust32(c, u32::from(p.src()), u32::from_be_bytes(new_src));
        p.set_src(new_src.into());
        p.set_checksum(c);
        let mut h = spec.header.clone();
        h.time_to_live = ttl;
        h.source = new_src;
        prop_assert_eq!(c, h.calc_header_checksum());
        prop_assert!(p.verify_checksum());
    }

    #[test]
    fn tcp_adjust(spec in tcp_spec(), new_src in any::<[u8; 4]>(), new_port in any::<u16>()) {
        let mut bytes = spec.bytes();
        let mut t = TcpPacket::new_checked(&mut bytes[..]).unwrap();
        let c = adjust32(t.checksum(), u32::from_be_bytes(spec.src), u32::from_be_bytes(new_src));
        let c = adjust16(c, t.src_port(), new_port);
        t.set_src_port(new_port);
        t.set_checksum(c);
        let mut h = spec.header.clone();
        h.source_port = new_port;
        prop_assert_eq!(c, h.calc_checksum_ipv4_raw(new_src, spec.dst, &spec.payload).unwrap());
        prop_assert!(t.verify_checksum_v4(new_src.into(), spec.dst.into()));
    }

    #[test]
    fn udp_adjust(spec in udp_spec(), new_dst in any::<[u8; 4]>(), new_port in any::<u16>(),
                  no_csum in any::<bool>(), force_zero in any::<bool>()) {
        let mut bytes = spec.bytes();
        let mut u = UdpPacket::new_checked(&mut bytes[..]).unwrap();
        if no_csum {
            u.set_checksum(0);
        }
        let c = adjust_udp32(u.checksum(), u32::from_be_bytes(spec.dst), u32::from_be_bytes(new_dst));
        let mut h = spec.header.clone();
        // Optionally pick the port that makes the full sum 0xffff, i.e. a computed checksum of 0
        // that must go out as 0xffff.
        let new_port = if force_zero && c != 0 {
            let full = h.calc_checksum_ipv4_raw(spec.src, new_dst, &spec.payload).unwrap();
            // full is never 0 (etherparse maps it to 0xffff); treat 0xffff as one's-complement 0.
            let full = if full == 0xffff { 0 } else { full };
            fold(u32::from(h.source_port) + u32::from(full))
        } else {
            new_port
        };
        let c = adjust_udp16(c, u.src_port(), new_port);
        u.set_src_port(new_port);
        u.set_checksum(c);
        h.source_port = new_port;
        if no_csum {
            prop_assert_eq!(c, 0);
        } else {
            let want = h.calc_checksum_ipv4_raw(spec.src, new_dst, &spec.payload).unwrap();
            prop_assert_eq!(c, want);
            prop_assert_ne!(c, 0);
            if force_zero {
                prop_assert_eq!(c, 0xffff);
            }
        }
        prop_assert!(u.verify_checksum_v4(spec.src.into(), new_dst.into()));
    }

    #[test]
    fn partial_checksum_address_and_port_change(spec in tcp_spec(), new_src in any::<[u8; 4]>(),
                                                new_port in any::<u16>()) {
        // A checksum-partial segment: the field holds the folded pseudo-header sum.
        let mut bytes = spec.bytes();
        let len = bytes.len() as u16;
        let (src, dst) = (Ipv4Addr::from(spec.src), Ipv4Addr::from(spec.dst));
        let psum = fold(pseudo_header_sum_v4(src, dst, 6, len));
        let mut t = TcpPacket::new_checked(&mut bytes[..]).unwrap();
        t.set_checksum(psum);
        // NAT: the address change updates the pseudo-header sum, the port change does nothing.
        let new_psum = adjust_partial32(psum, u32::from(src), u32::from_be_bytes(new_src));
        prop_assert_eq!(new_psum, fold(pseudo_header_sum_v4(new_src.into(), dst, 6, len)));
        t.set_checksum(new_psum);
        t.set_src_port(new_port);
        // The device completes the checksum over the segment from the L4 header on.
        let done = !fold(ones_sum(t.into_inner(), 0));
        let mut t = TcpPacket::new_checked(&mut bytes[..]).unwrap();
        t.set_checksum(done);
        prop_assert!(t.verify_checksum_v4(new_src.into(), dst));
    }
}
