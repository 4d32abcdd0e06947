//! Flow tuples, their packed 16-byte index key, and the hash of that key.

use std::net::Ipv4Addr;

use crate::config::L4Proto;

/// A flow's addresses as on the wire: what the pipeline parsed from a packet and what it writes
/// back after translation. ICMP echo: both `src_port` and `dst_port` hold the echo identifier.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Tuple {
    /// Transport protocol.
    pub proto: L4Proto,
    /// Source address.
    pub src: Ipv4Addr,
    /// Source port (ICMP: echo id).
    pub src_port: u16,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Destination port (ICMP: echo id).
    pub dst_port: u16,
}

impl Tuple {
    /// The tuple of a packet travelling the other way. For ICMP echo both ports hold the id,
    /// so the id stays in both.
    pub fn reversed(&self) -> Tuple {
        Tuple {
            proto: self.proto,
            src: self.dst,
            src_port: self.dst_port,
            dst: self.src,
            dst_port: self.src_port,
        }
    }

    /// The packed index key.
    pub(super) fn key(&self) -> Key {
        Key([
            u32::from(self.src),
            u32::from(self.dst),
            (u32::from(self.src_port) << 16) | u32::from(self.dst_port),
            u32::from(self.proto.number()),
        ])
    }
}

/// A tuple made ready for a lookup: its index key and tag, computed once where the tuple is
/// read (the pipeline's staging pass hashes each tuple as it parses its frame).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Probe {
    pub(super) key: Key,
    pub(super) tag: u32,
}

impl Probe {
    /// The probe of `t`.
    #[inline]
    pub fn new(t: &Tuple) -> Probe {
        let key = t.key();
        Probe {
            key,
            tag: super::index::tag_of(&key),
        }
    }

    /// True when this is the probe of `t`.
    #[inline]
    pub fn is_for(&self, t: &Tuple) -> bool {
        self.key == t.key()
    }
}

/// A tuple packed into four words (16 bytes, align 4): the conntrack index's key.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Key(pub(super) [u32; 4]);

/// One 64x64->128 multiply folded to 64 bits: the mixing step of the key hash.
fn fold_mul(a: u64, b: u64) -> u64 {
    let m = u128::from(a) * u128::from(b);
    (m as u64) ^ ((m >> 64) as u64)
}

impl Key {
    /// A well-mixed 64-bit hash (the high half the index tags and homes with and the low half
    /// the port allocator starts from both depend on every key bit). Not DoS-resistant: the
    /// keys are fixed constants.
    pub(super) fn mix(&self) -> u64 {
        let [a, b, c, d] = self.0;
        let lo = ((u64::from(a) << 32) | u64::from(b)) ^ 0x243f_6a88_85a3_08d3;
        let hi = ((u64::from(c) << 32) | u64::from(d)) ^ 0x1319_8a2e_0370_7344;
        fold_mul(
            fold_mul(lo, hi) ^ 0xa409_3822_299f_31d0,
            0x082e_fa98_ec4e_6c89,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(proto: L4Proto, s: [u8; 4], sp: u16, d: [u8; 4], dp: u16) -> Tuple {
        Tuple {
            proto,
            src: s.into(),
            src_port: sp,
            dst: d.into(),
            dst_port: dp,
        }
    }

    #[test]
    fn reversed_swaps_ends_and_keeps_icmp_id() {
        let a = t(L4Proto::Tcp, [10, 0, 0, 2], 1234, [1, 1, 1, 1], 80);
        assert_eq!(
            a.reversed(),
            t(L4Proto::Tcp, [1, 1, 1, 1], 80, [10, 0, 0, 2], 1234)
        );
        assert_eq!(a.reversed().reversed(), a);
        let e = t(L4Proto::Icmp, [10, 0, 0, 2], 7, [1, 1, 1, 1], 7);
        let r = e.reversed();
        assert_eq!((r.src_port, r.dst_port), (7, 7));
    }

    #[test]
    fn keys_differ_by_every_field() {
        let a = t(L4Proto::Udp, [10, 0, 0, 2], 1, [1, 1, 1, 1], 2);
        let variants = [
            Tuple {
                proto: L4Proto::Tcp,
                ..a
            },
            Tuple {
                src: [10, 0, 0, 3].into(),
                ..a
            },
            Tuple { src_port: 3, ..a },
            Tuple {
                dst: [1, 1, 1, 2].into(),
                ..a
            },
            Tuple { dst_port: 3, ..a },
            a.reversed(),
        ];
        for v in variants {
            assert_ne!(v.key(), a.key());
            assert_ne!(v.key().mix(), a.key().mix());
        }
    }
}
