//! The FDB's table: (VLAN, MAC) keys packed in a `u64`, open addressing with linear probing over
//! 16-byte buckets, four to a 64-byte-aligned line, homed by the top bits of the key's hash.
//!
//! Owning the layout is what makes a lookup prefetchable, as for the conntrack index: the line
//! a key lives in is known from its hash alone, so a batch can request the lines of the frames
//! ahead before it reads them, and a lookup reads one line (a SwissTable reads a control
//! group, then a bucket: two dependent lines, and offers no prefetch). Deletion shifts later
//! entries of the cluster back (no tombstones, probe lengths stay those of a fresh table). The
//! load is kept at or below 1/2.

use std::hash::BuildHasher;

use crate::hash::KeyHasherBuilder;

/// The key of an empty bucket: never a real key, whose VLAN (the top 16 bits) is at most 4095.
const EMPTY: u64 = u64::MAX;
/// Buckets per cache line.
const PER_LINE: usize = 4;
/// Fewest buckets of a table (four lines).
const MIN_SLOTS: usize = 16;

/// A key and its value.
#[derive(Debug)]
struct Bucket<V> {
    key: u64,
    value: V,
}

/// A cache line of buckets, so that the line of a bucket is known and a prefetch fetches it.
#[derive(Debug)]
#[repr(C, align(64))]
struct Line<V>([Bucket<V>; PER_LINE]);

/// A map from packed (VLAN, MAC) keys to `V` (a small value: four buckets fit a line when
/// `V` has 8 bytes).
#[derive(Debug)]
pub(super) struct MacTable<V> {
    lines: Vec<Line<V>>,
    len: usize,
    /// log2 of the number of buckets.
    bits: u32,
    hasher: KeyHasherBuilder,
}

impl<V: Default> MacTable<V> {
    /// An empty table with room for `capacity` entries before it grows.
    pub(super) fn with_capacity(capacity: usize, hasher: KeyHasherBuilder) -> Self {
        let slots = (capacity.max(1) * 2).next_power_of_two().max(MIN_SLOTS);
        MacTable {
            lines: Self::empty_lines(slots),
            len: 0,
            bits: slots.trailing_zeros(),
            hasher,
        }
    }

    fn empty_lines(slots: usize) -> Vec<Line<V>> {
        (0..slots / PER_LINE)
            .map(|_| {
                Line(std::array::from_fn(|_| Bucket {
                    key: EMPTY,
                    value: V::default(),
                }))
            })
            .collect()
    }

    fn mask(&self) -> usize {
        (1 << self.bits) - 1
    }

    fn home(&self, key: u64) -> usize {
        (self.hasher.hash_one(key) >> (64 - self.bits)) as usize
    }

    fn bucket(&self, i: usize) -> &Bucket<V> {
        &self.lines[i / PER_LINE].0[i % PER_LINE]
    }

    fn bucket_mut(&mut self, i: usize) -> &mut Bucket<V> {
        &mut self.lines[i / PER_LINE].0[i % PER_LINE]
    }

    /// The bucket index of `key`, if present.
    #[inline]
    fn find(&self, key: u64) -> Option<usize> {
        let mask = self.mask();
        let mut i = self.home(key);
        loop {
            let b = self.bucket(i);
            if b.key == key {
                return Some(i);
            }
            if b.key == EMPTY {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    /// The value of `key`.
    #[inline]
    pub(super) fn get(&self, key: u64) -> Option<&V> {
        self.find(key).map(|i| &self.bucket(i).value)
    }

    /// The value of `key`, writable.
    pub(super) fn get_mut(&mut self, key: u64) -> Option<&mut V> {
        self.find(key).map(|i| &mut self.bucket_mut(i).value)
    }

    /// Starts loading the line(s) where the search for `key` begins.
    #[inline]
    pub(super) fn prefetch(&self, key: u64) {
        let i = self.home(key);
        crate::prefetch::prefetch(&self.lines[i / PER_LINE]);
        if i % PER_LINE == PER_LINE - 1 {
            crate::prefetch::prefetch(&self.lines[(i / PER_LINE + 1) & (self.lines.len() - 1)]);
        }
    }

    /// Sets `key` to `value`; returns the value it replaces. Grows (doubling) to keep the load
    /// at or below 1/2.
    pub(super) fn insert(&mut self, key: u64, value: V) -> Option<V> {
        if let Some(i) = self.find(key) {
            return Some(std::mem::replace(&mut self.bucket_mut(i).value, value));
        }
        if (self.len + 1) * 2 > 1 << self.bits {
            self.grow();
        }
        self.place(key, value);
        self.len += 1;
        None
    }

    /// Puts an absent key into the first empty bucket from its home.
    fn place(&mut self, key: u64, value: V) {
        let mask = self.mask();
        let mut i = self.home(key);
        while self.bucket(i).key != EMPTY {
            i = (i + 1) & mask;
        }
        *self.bucket_mut(i) = Bucket { key, value };
    }

    fn grow(&mut self) {
        let old = std::mem::replace(&mut self.lines, Self::empty_lines(2 << self.bits));
        self.bits += 1;
        for b in old.into_iter().flat_map(|l| l.0) {
            if b.key != EMPTY {
                self.place(b.key, b.value);
            }
        }
    }

    /// Removes `key`; returns its value. Later entries of the cluster that may move closer to
    /// their home are shifted back into the hole.
    pub(super) fn remove(&mut self, key: u64) -> Option<V> {
        let mut hole = self.find(key)?;
        let mask = self.mask();
        let removed = std::mem::take(&mut self.bucket_mut(hole).value);
        self.bucket_mut(hole).key = EMPTY;
        self.len -= 1;
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let k = self.bucket(j).key;
            if k == EMPTY {
                return Some(removed);
            }
            // The entry at j may fill the hole unless its home lies cyclically in (hole, j].
            let home = self.home(k);
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                let value = std::mem::take(&mut self.bucket_mut(j).value);
                self.bucket_mut(j).key = EMPTY;
                *self.bucket_mut(hole) = Bucket { key: k, value };
                hole = j;
            }
        }
    }

    /// Keeps the entries for which `keep` is true (it may change them). O(table).
    pub(super) fn retain(&mut self, mut keep: impl FnMut(u64, &mut V) -> bool) {
        let mut gone = Vec::new();
        for b in self.lines.iter_mut().flat_map(|l| l.0.iter_mut()) {
            if b.key != EMPTY && !keep(b.key, &mut b.value) {
                gone.push(b.key);
            }
        }
        for k in gone {
            self.remove(k);
        }
    }

    /// Every entry, in table order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &V)> {
        self.lines
            .iter()
            .flat_map(|l| l.0.iter())
            .filter(|b| b.key != EMPTY)
            .map(|b| (b.key, &b.value))
    }

    /// Number of entries.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// True when the table holds no entry.
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    /// A small table (16 buckets to start) with a fixed seed: clusters form early.
    fn table() -> MacTable<u32> {
        MacTable::with_capacity(4, KeyHasherBuilder::default())
    }

    #[test]
    fn insert_get_replace_remove_and_grow() {
        let mut t = table();
        for k in 0..1000u64 {
            assert_eq!(t.insert(k * 7919, k as u32), None);
        }
        assert_eq!(t.len(), 1000);
        assert_eq!(t.insert(7919, 5), Some(1));
        assert_eq!(t.get(7919), Some(&5));
        for k in (0..1000u64).step_by(2) {
            assert!(t.remove(k * 7919).is_some());
        }
        assert_eq!(t.remove(0), None);
        assert_eq!(t.len(), 500);
        for k in 0..1000u64 {
            let want = (k % 2 == 1).then_some(if k == 1 { 5 } else { k as u32 });
            assert_eq!(t.get(k * 7919).copied(), want, "key {k}");
        }
        t.retain(|k, v| {
            *v += 1;
            k % 3 == 0
        });
        assert!(t.iter().all(|(k, v)| k % 3 == 0 && *v > 0));
        assert_eq!(t.len(), t.iter().count());
    }

    proptest! {
        /// Against a `HashMap` model: any sequence of inserts and removes (on a small key
        /// space, so that clusters form, wrap around the end and get shifted) gives the same
        /// lookups, length and contents.
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec((any::<bool>(), 0u64..64, any::<u32>()), 0..300)) {
            let mut t = table();
            let mut model = HashMap::new();
            for (insert, k, v) in ops {
                let key = k << 40 | k;
                if insert {
                    prop_assert_eq!(t.insert(key, v), model.insert(key, v));
                } else {
                    prop_assert_eq!(t.remove(key), model.remove(&key));
                }
                prop_assert_eq!(t.len(), model.len());
            }
            for k in 0..64u64 {
                let key = k << 40 | k;
                prop_assert_eq!(t.get(key), model.get(&key));
            }
            let mut all: Vec<(u64, u32)> = t.iter().map(|(k, v)| (k, *v)).collect();
            all.sort_unstable();
            let mut want: Vec<(u64, u32)> = model.into_iter().collect();
            want.sort_unstable();
            prop_assert_eq!(all, want);
        }
    }
}
