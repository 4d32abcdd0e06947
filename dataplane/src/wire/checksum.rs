//! Internet checksum arithmetic (RFC 1071) and incremental updates (RFC 1624).
//!
//! Every rewrite sluice does (NAT, port forwarding, TTL decrement) changes a few header words;
//! recomputing the checksum over the whole packet would touch every payload byte, so rewrites
//! patch the checksum field instead. Which helper to use depends on what the field holds:
//!
//! - A normal, complete checksum (the IPv4 header checksum, ICMP, and TCP/UDP of frames whose
//!   checksum is complete): [`adjust16`] / [`adjust32`] for every changed word, whether it is
//!   covered by the pseudo header (addresses) or by the segment itself (ports).
//! - UDP with a complete checksum: [`adjust_udp16`] / [`adjust_udp32`], which keep the
//!   "0 = no checksum" value and send a computed 0 as 0xffff (RFC 768).
//! - A checksum-partial frame (`CHECKSUM_PARTIAL` / `VIRTIO_NET_HDR_F_NEEDS_CSUM`): the L4 field
//!   holds only the folded, un-complemented pseudo-header sum and the device completes it later
//!   over the segment. An address change updates that sum with [`adjust_partial32`]; a port
//!   change must leave the field alone (the device sums the new port itself). This is Linux's
//!   `inet_proto_csum_replace4(.., pseudohdr = true)` on a `CHECKSUM_PARTIAL` skb.
//!   The 0/0xffff UDP rule does not apply: a folded sum of non-zero data is never 0.

use std::net::{Ipv4Addr, Ipv6Addr};

/// One's-complement partial sum of `data` as big-endian 16-bit words, added to `initial`.
///
/// An odd trailing byte is padded with a zero byte. The result is not folded: chain calls by
/// passing one result as the next `initial`, then [`fold`] once at the end.
#[inline]
pub fn ones_sum(data: &[u8], initial: u32) -> u32 {
    // 32-bit words summed into 64 bits are congruent to the 16-bit sum modulo 0xffff
    // (2^16 = 1 mod 0xffff), and a u64 cannot overflow before 2^32 words. They are read in
    // the host's byte order, which the compiler vectorizes (no swap per word): the sum of
    // byte-swapped words is the byte-swapped sum (RFC 1071 section 2(B)), so the folded sum
    // is swapped once at the end.
    let mut acc = 0u64;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    acc += u64::from(u32::from_ne_bytes(tail));
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    let sum = u16::from_be(acc as u16);
    let total = u64::from(initial) + u64::from(sum);
    // End-around carry down to 32 bits (2^32 - 1 is a multiple of 0xffff).
    ((total & 0xffff_ffff) + (total >> 32)) as u32
}

/// Folds a partial sum to 16 bits with end-around carry. Not complemented: this is the value a
/// checksum-partial frame stores, and `!fold(..)` is the checksum.
#[inline]
pub fn fold(sum: u32) -> u16 {
    let s = (sum & 0xffff) + (sum >> 16);
    let s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// The Internet checksum of `data`: the complemented folded sum.
#[inline]
pub fn internet_checksum(data: &[u8]) -> u16 {
    !fold(ones_sum(data, 0))
}

/// Partial sum of the IPv4 pseudo header (RFC 793/768) for an L4 segment of `l4_len` bytes.
#[inline]
pub fn pseudo_header_sum_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4_len: u16) -> u32 {
    let s = u32::from(src);
    let d = u32::from(dst);
    (s >> 16) + (s & 0xffff) + (d >> 16) + (d & 0xffff) + u32::from(proto) + u32::from(l4_len)
}

/// Partial sum of the IPv6 pseudo header (RFC 8200 section 8.1) for an upper-layer packet of
/// `l4_len` bytes.
#[inline]
pub fn pseudo_header_sum_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, l4_len: u32) -> u32 {
    let s = ones_sum(&src.octets(), 0);
    let s = ones_sum(&dst.octets(), s);
    let len = (l4_len >> 16) + (l4_len & 0xffff);
    // Each term stays below 2^18, so the plain additions cannot overflow.
    fold(s) as u32 + len + u32::from(next_header)
}

/// The unfolded one's-complement terms `~m + m'` that change a 16-bit word `m` of the covered
/// data to `m'` (RFC 1624 eqn. 3): add them to `~HC` (or to a partial sum), several changes
/// at once, and fold once.
#[inline]
pub fn change16(old: u16, new: u16) -> u32 {
    u32::from(!old) + u32::from(new)
}

/// [`change16`] for a 32-bit word (an IPv4 address): the terms of both halves.
#[inline]
pub fn change32(old: u32, new: u32) -> u32 {
    change16((old >> 16) as u16, (new >> 16) as u16) + change16(old as u16, new as u16)
}

/// RFC 1624 eqn. 3 update of a complete checksum field after a 16-bit word of the covered data
/// changed from `old` to `new`: `HC' = ~(~HC + ~m + m')`.
#[inline]
pub fn adjust16(csum: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!csum) + change16(old, new))
}

/// [`adjust16`] for a 32-bit field (an IPv4 address, or two adjacent ports).
#[inline]
pub fn adjust32(csum: u16, old: u32, new: u32) -> u16 {
    !fold(u32::from(!csum) + change32(old, new))
}

/// Update of a checksum-partial L4 field (it holds the folded, un-complemented pseudo-header
/// sum) after a 16-bit pseudo-header word changed. Use only for pseudo-header words; see the
/// module documentation.
#[inline]
pub fn adjust_partial16(psum: u16, old: u16, new: u16) -> u16 {
    fold(u32::from(psum) + change16(old, new))
}

/// [`adjust_partial16`] for an IPv4 address change (Linux `inet_proto_csum_replace4` with
/// `pseudohdr` on a `CHECKSUM_PARTIAL` skb).
#[inline]
pub fn adjust_partial32(psum: u16, old: u32, new: u32) -> u16 {
    fold(u32::from(psum) + change32(old, new))
}

/// [`adjust16`] for a complete UDP checksum: 0 means "no checksum" and stays 0, and a result of
/// 0 is written as 0xffff (RFC 768).
#[inline]
pub fn adjust_udp16(csum: u16, old: u16, new: u16) -> u16 {
    if csum == 0 {
        return 0;
    }
    udp_nonzero(adjust16(csum, old, new))
}

/// [`adjust32`] for a complete UDP checksum, with the rules of [`adjust_udp16`].
#[inline]
pub fn adjust_udp32(csum: u16, old: u32, new: u32) -> u16 {
    if csum == 0 {
        return 0;
    }
    udp_nonzero(adjust32(csum, old, new))
}

/// Maps a computed UDP checksum of 0 to 0xffff, its one's-complement equal, because 0 on the
/// wire means "no checksum".
#[inline]
pub fn udp_nonzero(csum: u16) -> u16 {
    if csum == 0 {
        0xffff
    } else {
        csum
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The textbook 16-bit-at-a-time sum, as a reference for the 32-bit fast path.
    fn reference_sum(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for c in data.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            s += u32::from(w);
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(ones_sum(&data, 0)), 0xddf2);
        assert_eq!(internet_checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_is_zero_padded() {
        assert_eq!(fold(ones_sum(&[0x12, 0x34, 0x56], 0)), 0x1234 + 0x5600);
    }

    #[test]
    fn udp_zero_rule() {
        assert_eq!(adjust_udp16(0, 1, 2), 0);
        assert_eq!(adjust_udp32(0, 1, 2), 0);
        assert_eq!(udp_nonzero(0), 0xffff);
        assert_eq!(udp_nonzero(0x1234), 0x1234);
    }

    proptest! {
        #[test]
        fn ones_sum_matches_reference(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            prop_assert_eq!(fold(ones_sum(&data, 0)), reference_sum(&data));
        }

        #[test]
        fn ones_sum_chains(a in proptest::collection::vec(any::<u8>(), 0..64),
                           b in proptest::collection::vec(any::<u8>(), 0..64)) {
            // Chaining works when the first part has even length (as header boundaries do).
            let mut a = a;
            if a.len() % 2 == 1 { a.pop(); }
            let whole: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
            prop_assert_eq!(fold(ones_sum(&b, ones_sum(&a, 0))), fold(ones_sum(&whole, 0)));
        }

        #[test]
        fn pseudo_v4_matches_bytes(src in any::<u32>(), dst in any::<u32>(), proto in any::<u8>(),
                                   len in any::<u16>()) {
            let mut b = Vec::new();
            b.extend_from_slice(&src.to_be_bytes());
            b.extend_from_slice(&dst.to_be_bytes());
            b.extend_from_slice(&[0, proto]);
            b.extend_from_slice(&len.to_be_bytes());
            let got = pseudo_header_sum_v4(src.into(), dst.into(), proto, len);
            prop_assert_eq!(fold(got), reference_sum(&b));
        }

        #[test]
        fn pseudo_v6_matches_bytes(src in any::<u128>(), dst in any::<u128>(), nh in any::<u8>(),
                                   len in any::<u32>()) {
            let mut b = Vec::new();
            b.extend_from_slice(&src.to_be_bytes());
            b.extend_from_slice(&dst.to_be_bytes());
            b.extend_from_slice(&len.to_be_bytes());
            b.extend_from_slice(&[0, 0, 0, nh]);
            let got = pseudo_header_sum_v6(src.into(), dst.into(), nh, len);
            prop_assert_eq!(fold(got), reference_sum(&b));
        }

        #[test]
        fn adjust_equals_recompute(data in proptest::collection::vec(any::<u8>(), 8..100),
                                   at in any::<prop::sample::Index>(), new in any::<u32>()) {
            // Keep a fixed non-zero word so the data never sums to zero (the one input where
            // one's-complement -0 and +0 differ).
            let mut data = data;
            data[0] = 0x45;
            let at = 2 + 2 * at.index((data.len() - 6) / 2);
            let old = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
            let csum = internet_checksum(&data);
            let mut d32 = data.clone();
            d32[at..at + 4].copy_from_slice(&new.to_be_bytes());
            prop_assert_eq!(adjust32(csum, old, new), internet_checksum(&d32));
            let mut d16 = data.clone();
            d16[at..at + 2].copy_from_slice(&(new as u16).to_be_bytes());
            prop_assert_eq!(adjust16(csum, (old >> 16) as u16, new as u16),
                            internet_checksum(&d16));
        }

        #[test]
        fn partial_adjust_equals_recomputed_pseudo_sum(src in any::<u32>(), dst in any::<u32>(),
                                                       new in any::<u32>(), len in any::<u16>(),
                                                       udp in any::<bool>()) {
            let proto = if udp { 17 } else { 6 };
            let psum = fold(pseudo_header_sum_v4(src.into(), dst.into(), proto, len));
            let want_src = fold(pseudo_header_sum_v4(new.into(), dst.into(), proto, len));
            prop_assert_eq!(adjust_partial32(psum, src, new), want_src);
            let want_dst = fold(pseudo_header_sum_v4(src.into(), new.into(), proto, len));
            prop_assert_eq!(adjust_partial32(psum, dst, new), want_dst);
            prop_assert_ne!(want_dst, 0);
            // 16-bit variant: the length word.
            let new_len = new as u16;
            let want_len = fold(pseudo_header_sum_v4(src.into(), dst.into(), proto, new_len));
            prop_assert_eq!(adjust_partial16(psum, len, new_len), want_len);
        }
    }
}
