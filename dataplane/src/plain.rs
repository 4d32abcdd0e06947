//! Plain packets: the shape flow shortcuts serve. An untagged Ethernet frame carrying IPv4
//! without options, neither fragmented nor a fragment, with a whole TCP or UDP header and a
//! right header checksum. Every field a shortcut reads or writes then sits at a fixed offset,
//! so the frame is read in one pass after one length check and rewritten without parsing it
//! again (VPP's NAT keeps such a fast path for its common case).
//!
//! Anything else is not plain and goes to the general parse (`translate`), which reads every
//! plain frame the same way: a property test checks both.

use crate::config::L4Proto;
use crate::nat::Tuple;
use crate::wire::checksum;

/// Offset of the IPv4 header.
const L3: usize = 14;
/// Offset of the TCP or UDP header.
const L4: usize = L3 + 20;
/// Bytes every plain frame has: the Ethernet and IPv4 headers and a UDP header's worth.
const HEAD: usize = L4 + 8;

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
    let h: &[u8; HEAD] = d.first_chunk()?;
    // More-fragments and the fragment offset (the reserved bit and DF are ignored, as the
    // general parse does).
    let fragment = h[L3 + 6] & 0x3f != 0 || h[L3 + 7] != 0;
    if h[12..14] != [0x08, 0x00] || h[L3] != 0x45 || fragment {
        return None;
    }
    let (proto, l4_len) = match h[L3 + 9] {
        6 => (L4Proto::Tcp, 20),
        17 => (L4Proto::Udp, 8),
        _ => return None,
    };
    let total = u16::from_be_bytes([h[L3 + 2], h[L3 + 3]]);
    if usize::from(total) < 20 + l4_len || L3 + usize::from(total) > d.len() {
        return None;
    }
    if !header_checksum_ok(h) {
        return None;
    }
    let tcp_flags = match proto {
        L4Proto::Tcp => *d.get(L4 + 13)?,
        _ => 0,
    };
    Some(Plain {
        tuple: Tuple {
            proto,
            src: ip_at(h, L3 + 12).into(),
            src_port: u16::from_be_bytes([h[L4], h[L4 + 1]]),
            dst: ip_at(h, L3 + 16).into(),
            dst_port: u16::from_be_bytes([h[L4 + 2], h[L4 + 3]]),
        },
        total,
        ttl: h[L3 + 8],
        tcp_flags,
    })
}

/// True when the IPv4 header's words sum to 0xffff: its checksum is right. A loop over fixed
/// offsets, which the compiler unrolls (`checksum::internet_checksum` takes any length and
/// costs several times as many instructions).
fn header_checksum_ok(h: &[u8; HEAD]) -> bool {
    let mut sum = 0u32;
    for i in (L3..L4).step_by(2) {
        sum += u32::from(u16::from_be_bytes([h[i], h[i + 1]]));
    }
    checksum::fold(sum) == 0xffff
}

fn ip_at(h: &[u8; HEAD], at: usize) -> [u8; 4] {
    [h[at], h[at + 1], h[at + 2], h[at + 3]]
}

/// The terms of changing 16-bit word `old` to `new`, none when they are equal: an unchanged
/// word must not turn a checksum of 0 into 0xffff (the general rewrite skips it too).
fn changed16(old: u16, new: u16) -> u32 {
    if old == new {
        0
    } else {
        checksum::change16(old, new)
    }
}

/// Rewrites plain packet `d` (one `parse` accepted) to carry `new` and decrements its TTL
/// (which must be above 1), adjusting each checksum once for all its changes. The bytes are
/// exactly those `translate::rewrite` then `translate::decrement_ttl` write: one's-complement
/// folding in between or only at the end gives the same value. `partial`: the L4 checksum
/// field holds the pseudo-header sum of a checksum-offloaded frame (see `wire::checksum`).
pub fn rewrite(d: &mut [u8], new: &Tuple, partial: bool) {
    let Some(h) = d.first_chunk_mut::<HEAD>() else {
        return;
    };
    let (at, udp) = match h[L3 + 9] {
        6 => (L4 + 16, false),
        17 => (L4 + 6, true),
        _ => return,
    };
    let old_src = u32::from_be_bytes(ip_at(h, L3 + 12));
    let old_dst = u32::from_be_bytes(ip_at(h, L3 + 16));
    let (ns, nd) = (u32::from(new.src), u32::from(new.dst));
    // The address changes, in both the IPv4 header's checksum and the pseudo header's.
    let mut addrs = 0;
    if old_src != ns {
        addrs += checksum::change32(old_src, ns);
        h[L3 + 12..L3 + 16].copy_from_slice(&ns.to_be_bytes());
    }
    if old_dst != nd {
        addrs += checksum::change32(old_dst, nd);
        h[L3 + 16..L3 + 20].copy_from_slice(&nd.to_be_bytes());
    }
    // TTL and protocol share a word.
    let old_word = u16::from_be_bytes([h[L3 + 8], h[L3 + 9]]);
    h[L3 + 8] -= 1;
    let ttl = checksum::change16(old_word, old_word - 0x100);
    let c = u32::from(!u16::from_be_bytes([h[L3 + 10], h[L3 + 11]])) + addrs + ttl;
    h[L3 + 10..L3 + 12].copy_from_slice(&(!checksum::fold(c)).to_be_bytes());
    let old_sport = u16::from_be_bytes([h[L4], h[L4 + 1]]);
    let old_dport = u16::from_be_bytes([h[L4 + 2], h[L4 + 3]]);
    h[L4..L4 + 2].copy_from_slice(&new.src_port.to_be_bytes());
    h[L4 + 2..L4 + 4].copy_from_slice(&new.dst_port.to_be_bytes());
    let Some(field) = d.get_mut(at..at + 2) else {
        return;
    };
    let c = u16::from_be_bytes([field[0], field[1]]);
    if udp && c == 0 {
        return;
    }
    let mut c = if partial {
        checksum::fold(u32::from(c) + addrs)
    } else {
        let ports = changed16(old_sport, new.src_port) + changed16(old_dport, new.dst_port);
        !checksum::fold(u32::from(!c) + addrs + ports)
    };
    if udp && c == 0 {
        c = 0xffff;
    }
    field.copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{self, Scenario as S};
    use crate::translate::{self, L4Kind};
    use crate::wire::ethernet::parse_l2;
    use proptest::prelude::*;

    /// What the general parse reads of `d` in the fields a `Plain` has, when it takes `d` for
    /// an untagged, unfragmented TCP or UDP packet without options and a right checksum (the
    /// general parse accepts TCP and UDP headers cut short by the total length; plain does not).
    fn general(d: &[u8]) -> Option<Plain> {
        let l2 = parse_l2(d).ok()?;
        if l2.vlan.is_some() || l2.ethertype != 0x0800 {
            return None;
        }
        let ip = translate::parse_ipv4(d, l2.l3_offset).ok()?;
        let flow = translate::flow_of(d, &ip).ok()?;
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
                    let ip = translate::parse_ipv4(&f, L3).unwrap();
                    let flow = translate::flow_of(&f, &ip).unwrap();
                    let mut two = f.clone();
                    translate::rewrite(&mut two, &ip, &flow, &new, partial);
                    translate::decrement_ttl(&mut two, L3);
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
            let ip = translate::parse_ipv4_unverified(&f, L3).unwrap();
            let flow = translate::flow_of(&f, &ip).unwrap();
            let t = flow.tuple;
            let new = Tuple {
                src: if keep[0] { t.src } else { new.0.into() },
                dst: if keep[1] { t.dst } else { new.1.into() },
                src_port: if keep[2] { t.src_port } else { new.2 },
                dst_port: if keep[3] { t.dst_port } else { new.3 },
                ..t
            };
            let mut two = f.clone();
            translate::rewrite(&mut two, &ip, &flow, &new, partial);
            translate::decrement_ttl(&mut two, L3);
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
