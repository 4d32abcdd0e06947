//! Plain packets: the shape flow shortcuts serve (see `wire::plain`), read in one pass by
//! staging into what a shortcut needs, and rewritten in one pass when it takes one.
//!
//! Anything else is not plain and goes to the general parse (`flow`), which reads every plain
//! frame the same way: a property test checks both.

use crate::config::L4Proto;
use crate::nat::Tuple;
use crate::wire::plain::{self as view, PlainHead};
use crate::wire::{ipv4, tcp, udp, IPPROTO_TCP, IPPROTO_UDP};

/// What a shortcut needs of a plain packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plain {
    /// The packet's tuple, as on the wire.
    pub tuple: Tuple,
    /// IPv4 total length.
    pub total: u16,
    /// Time to live.
    pub ttl: u8,
    /// TCP flags (0 for UDP).
    pub tcp_flags: u8,
}

/// Reads frame `d` if it is a plain packet: ethertype IPv4, version 4 with a 20-byte header,
/// no fragment bits, TCP or UDP whose whole header lies inside the total length, the total
/// length inside the frame, and a right header checksum.
#[inline]
pub fn parse(d: &[u8]) -> Option<Plain> {
    let h = PlainHead::new(d)?;
    if !h.is_whole_ipv4_without_options() {
        return None;
    }
    let (proto, l4_len) = match h.protocol() {
        IPPROTO_TCP => (L4Proto::Tcp, tcp::MIN_HEADER_LEN),
        IPPROTO_UDP => (L4Proto::Udp, udp::HEADER_LEN),
        _ => return None,
    };
    let total = h.total_len();
    if usize::from(total) < ipv4::MIN_HEADER_LEN + l4_len || view::L3 + usize::from(total) > d.len()
    {
        return None;
    }
    if !h.header_checksum_ok() {
        return None;
    }
    let tcp_flags = match proto {
        L4Proto::Tcp => view::tcp_flags(d)?,
        _ => 0,
    };
    Some(Plain {
        tuple: Tuple {
            proto,
            src: h.src(),
            src_port: h.src_port(),
            dst: h.dst(),
            dst_port: h.dst_port(),
        },
        total,
        ttl: h.ttl(),
        tcp_flags,
    })
}

/// Rewrites plain packet `d` (one `parse` accepted) to carry `new` and decrements its TTL
/// (which must be above 1), as the full path's NAT rewrite and routing would.
#[inline]
pub fn rewrite(d: &mut [u8], new: &Tuple, partial: bool) {
    view::rewrite(d, (new.src, new.src_port), (new.dst, new.dst_port), partial);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::flow::{self, L4Kind};
    use crate::pipeline::nat;
    use crate::testkit::{self, Scenario as S};
    use crate::wire::ethernet::parse_l2;
    use crate::wire::ipv4::Ipv4Packet;
    use crate::wire::plain::{L3, L4};
    use proptest::prelude::*;

    /// What the general parse reads of `d` in the fields a `Plain` has, when it takes `d` for
    /// an untagged, unfragmented TCP or UDP packet without options and a right checksum (the
    /// general parse accepts TCP and UDP headers cut short by the total length; plain does not).
    fn general(d: &[u8]) -> Option<Plain> {
        let l2 = parse_l2(d).ok()?;
        if l2.vlan.is_some() || l2.ethertype != 0x0800 {
            return None;
        }
        let ip = flow::parse_ipv4(d, l2.l3_offset).ok()?;
        let flow = flow::flow_of(d, &ip).ok()?;
        let frag = u16::from_be_bytes([d[20], d[21]]) & 0x3fff != 0;
        let shape = matches!(flow.kind, L4Kind::Tcp | L4Kind::Udp) && ip.hl == 20 && !frag;
        shape.then_some(Plain {
            tuple: flow.tuple,
            total: ip.total as u16,
            ttl: ip.ttl,
            tcp_flags: flow.tcp_flags,
        })
    }

    /// True when the general parse's packet `p` holds a whole TCP or UDP header.
    fn whole_header(p: &Plain) -> bool {
        let l4_len = if p.tuple.proto == L4Proto::Tcp { 20 } else { 8 };
        usize::from(p.total) >= 20 + l4_len
    }

    /// A TCP or UDP frame with random addresses, ports, TTL, flags and payload (a UDP one maybe
    /// without checksum), maybe with another total length, maybe damaged at one of its first
    /// 60 bytes (then maybe with the header checksum fixed), and maybe cut short.
    fn frames() -> impl Strategy<Value = Vec<u8>> {
        (
            (any::<bool>(), any::<bool>()),
            any::<([u8; 4], [u8; 4])>(),
            any::<(u16, u16, u8, u8)>(),
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::option::of(20u16..80),
            proptest::option::of((0usize..60, any::<u8>(), any::<bool>())),
            0usize..4,
        )
            .prop_map(
                |((tcp, no_csum), (s, d), (sp, dp, ttl, flags), payload, total, damage, cut)| {
                    let (s, d) = (s.into(), d.into());
                    let mut ip = if tcp {
                        testkit::tcp(s, sp, d, dp, flags, &payload)
                    } else {
                        testkit::udp(s, sp, d, dp, &payload)
                    };
                    if !tcp && no_csum {
                        ip[26..28].fill(0);
                    }
                    ip[8] = ttl;
                    if let Some(total) = total {
                        ip[2..4].copy_from_slice(&total.to_be_bytes());
                    }
                    fix_header_checksum(&mut ip);
                    if let Some((at, v, fix)) = damage {
                        if let Some(b) = ip.get_mut(at) {
                            *b = v;
                        }
                        if fix {
                            fix_header_checksum(&mut ip);
                        }
                    }
                    let mut f = S::from_outside(&ip);
                    f.truncate(f.len().saturating_sub(cut * 7));
                    f
                },
            )
    }

    fn fix_header_checksum(ip: &mut [u8]) {
        ip[10..12].fill(0);
        let c = crate::wire::checksum::internet_checksum(&ip[..20]);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    }

    proptest! {
        /// A plain frame reads as the general parse reads it and is rewritten to the same
        /// bytes; every frame of the shape with a whole L4 header is plain.
        #[test]
        fn plain_frames_read_and_rewrite_as_the_general_path_does(
            f in frames(),
            new in any::<([u8; 4], [u8; 4], u16, u16)>(),
            partial in any::<bool>(),
        ) {
            let plain = parse(&f);
            if let Some(p) = plain {
                prop_assert_eq!(Some(p), general(&f));
                if p.ttl > 1 {
                    let new = Tuple {
                        proto: p.tuple.proto,
                        src: new.0.into(),
                        dst: new.1.into(),
                        src_port: new.2,
                        dst_port: new.3,
                    };
                    let ip = flow::parse_ipv4(&f, L3).unwrap();
                    let flow = flow::flow_of(&f, &ip).unwrap();
                    let mut two = f.clone();
                    nat::rewrite(&mut two, &ip, &flow, &new, partial);
                    Ipv4Packet::new_unchecked(&mut two[L3..]).decrement_ttl();
                    let mut one = f.clone();
                    rewrite(&mut one, &new, partial);
                    prop_assert_eq!(one, two);
                }
            }
            if let Some(g) = general(&f).filter(whole_header) {
                prop_assert_eq!(plain, Some(g));
            }
        }

        /// The one-pass rewrite gives exactly the bytes of the general two-step one, whatever
        /// the checksums held (0, 0xffff, wrong), full or partial, with or without changes.
        #[test]
        fn rewrite_matches_rewrite_and_ttl_decrement(
            addrs in any::<([u8; 4], [u8; 4])>(), ports in any::<(u16, u16)>(),
            new in any::<([u8; 4], [u8; 4], u16, u16)>(),
            keep in any::<[bool; 4]>(), tcp in any::<bool>(), partial in any::<bool>(),
            ttl in 2u8.., csums in (any::<u16>(), prop_oneof![Just(0u16), Just(0xffff), any::<u16>()]),
            payload in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let ((s, d), (sp, dp)) = ((addrs.0.into(), addrs.1.into()), ports);
            let ip = if tcp {
                testkit::tcp(s, sp, d, dp, testkit::ACK, &payload)
            } else {
                testkit::udp(s, sp, d, dp, &payload)
            };
            let mut f = S::from_outside(&ip);
            f[22] = ttl;
            f[24..26].copy_from_slice(&csums.0.to_be_bytes());
            let at = if tcp { L4 + 16 } else { L4 + 6 };
            f[at..at + 2].copy_from_slice(&csums.1.to_be_bytes());
            let ip = flow::parse_ipv4_unverified(&f, L3).unwrap();
            let flow = flow::flow_of(&f, &ip).unwrap();
            let t = flow.tuple;
            let new = Tuple {
                src: if keep[0] { t.src } else { new.0.into() },
                dst: if keep[1] { t.dst } else { new.1.into() },
                src_port: if keep[2] { t.src_port } else { new.2 },
                dst_port: if keep[3] { t.dst_port } else { new.3 },
                ..t
            };
            let mut two = f.clone();
            nat::rewrite(&mut two, &ip, &flow, &new, partial);
            Ipv4Packet::new_unchecked(&mut two[L3..]).decrement_ttl();
            rewrite(&mut f, &new, partial);
            prop_assert_eq!(f, two);
        }
    }

    #[test]
    fn tagged_optioned_fragmented_or_icmp_frames_are_not_plain() {
        let ip = testkit::tcp(S::A, 40000, S::REMOTE, 80, testkit::ACK, b"x");
        let f = S::from_outside(&ip);
        assert!(parse(&f).is_some());
        let tagged = testkit::tagged(&f, 5);
        assert_eq!(parse(&tagged), None);
        // Changed in the IPv4 header (checksum fixed): byte, mask to OR in.
        for (at, bits) in [(6, 0x20), (6, 0x01), (7, 0x01), (0, 0x02), (9, 0x10)] {
            let mut changed = ip.clone();
            changed[at] |= bits;
            fix_header_checksum(&mut changed);
            assert_eq!(
                parse(&S::from_outside(&changed)),
                None,
                "byte {at} |= {bits:#x}"
            );
        }
        let mut reserved_and_df = ip.clone();
        reserved_and_df[6] |= 0xc0;
        fix_header_checksum(&mut reserved_and_df);
        assert!(parse(&S::from_outside(&reserved_and_df)).is_some());
        let echo = S::from_outside(&testkit::icmp_echo(S::A, S::REMOTE, true, 1, 1));
        assert_eq!(parse(&echo), None);
        let mut bad = f.clone();
        bad[24] ^= 1;
        assert_eq!(parse(&bad), None, "header checksum");
        assert_eq!(
            parse(&f[..f.len() - 1]),
            None,
            "total length beyond the frame"
        );
    }
}
