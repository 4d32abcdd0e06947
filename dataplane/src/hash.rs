//! A cheap hasher for the fast path's tables, whose keys are small integers packed into one
//! `u64` (FDB: VLAN + MAC; published ports: protocol + port + address).
//!
//! std's SipHash costs about as much as the whole per-packet budget; one folded multiply (the
//! full 128-bit product, high half xor low half) mixes every key bit into both ends of the hash,
//! which is what hashbrown needs (low bits pick the bucket, the top 7 bits are the tag).
//!
//! Tables whose keys come from traffic (the FDB learns source MACs an attacker chooses) use a
//! random seed, so colliding key sets cannot be computed in advance; their size is also capped.

use std::hash::{BuildHasher, Hasher, RandomState};

/// The multiplier (wyhash's first prime): of the usual constants, the one that spread sequential
/// MACs best over both the low bits and the top bits in `tests`.
const MUL: u64 = 0xa076_1d64_78bd_642f;

/// Multiplies to 128 bits and folds the halves together.
#[inline]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// Builds [`KeyHasher`]s from a seed; `Default` is seed 0, for tables built from configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyHasherBuilder {
    seed: u64,
}

impl KeyHasherBuilder {
    /// A builder with a random seed, for tables whose keys come from traffic.
    pub fn random() -> Self {
        KeyHasherBuilder {
            seed: RandomState::new().hash_one(0x5eed_u64),
        }
    }
}

impl BuildHasher for KeyHasherBuilder {
    type Hasher = KeyHasher;

    #[inline]
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher { state: self.seed }
    }
}

/// The hasher: one folded multiply per `u64` written.
#[derive(Clone, Copy, Debug)]
pub struct KeyHasher {
    state: u64,
}

impl Hasher for KeyHasher {
    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.state = folded_multiply(self.state ^ v, MUL);
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Largest bucket over the average bucket when `keys` are spread by `pick`.
    fn worst_ratio(
        b: KeyHasherBuilder,
        keys: impl Iterator<Item = u64>,
        buckets: usize,
        pick: impl Fn(u64) -> usize,
    ) -> f64 {
        let mut counts = vec![0usize; buckets];
        let mut n = 0usize;
        for k in keys {
            counts[pick(b.hash_one(k))] += 1;
            n += 1;
        }
        let max = counts.iter().copied().max().unwrap_or(0);
        max as f64 / (n as f64 / buckets as f64)
    }

    #[test]
    fn sequential_keys_spread_over_low_and_top_bits() {
        // docker's MACs differ only in their last bytes; the VLAN sits in the top bits. A
        // random hash gives ratios of about 1.4 (MACs) and 1.75 / 1.5 (VLANs) here.
        let macs = || (0..65_536u64).map(|i| 0x0242_ac11_0000 | i);
        let vlans = || (0..4096u64).map(|v| (v << 48) | 0x0242_ac11_0002);
        for seed in [0, 0x1234_5678_9abc_def1, 0xdead_beef_cafe_f00d] {
            let b = KeyHasherBuilder { seed };
            let low = |buckets: u64| move |h: u64| (h & (buckets - 1)) as usize;
            let top = |h: u64| (h >> 57) as usize;
            assert!(worst_ratio(b, macs(), 1024, low(1024)) < 1.6, "{seed:x}");
            assert!(worst_ratio(b, macs(), 128, top) < 1.2, "{seed:x}");
            assert!(worst_ratio(b, vlans(), 256, low(256)) < 2.0, "{seed:x}");
            assert!(worst_ratio(b, vlans(), 128, top) < 2.0, "{seed:x}");
        }
    }

    #[test]
    fn seeds_change_the_hash_and_bytes_hash_like_words() {
        let fixed = KeyHasherBuilder::default();
        let other = KeyHasherBuilder { seed: 1 };
        assert_ne!(fixed.hash_one(42u64), other.hash_one(42u64));
        let mut h = fixed.build_hasher();
        h.write(&42u64.to_le_bytes());
        let mut w = fixed.build_hasher();
        w.write_u64(42);
        assert_eq!(h.finish(), w.finish());
        let mut short = fixed.build_hasher();
        short.write(&[1, 2, 3]);
        assert_ne!(short.finish(), fixed.build_hasher().finish());
    }
}
