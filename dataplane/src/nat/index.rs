//! The conntrack's tuple index: open addressing with linear probing over a power-of-two array
//! of 8-byte slots (32-bit hash tag, 32-bit value), eight to a 64-byte-aligned cache line.
//!
//! It stores no keys: a tag match is a candidate the caller verifies against the key kept in
//! the flow slab. Owning the layout is what makes lookups prefetchable: the slot line of a
//! tuple is known from its hash alone, so a batch can request all its lines (then all its
//! flows) before it reads any of them, and pay one memory latency per stage instead of one per
//! packet and stage.
//!
//! The home slot of an entry is the top `bits` bits of its tag, so the tag alone locates it:
//! growth re-slots entries without touching the slab, and deletion shifts later entries of the
//! cluster back (no tombstones, probe lengths stay those of a fresh table). The load factor is
//! kept at or below 1/2: a hit reads 1.5 slots on average, a miss 2.5, nearly always within
//! one or two lines.

use super::tuple::Key;
use crate::prefetch::prefetch;

/// `Slot::val` of an empty slot (never a value: flow indexes stay below 2^30).
const EMPTY: u32 = u32::MAX;
/// Slots per cache line.
const PER_LINE: usize = 8;
/// Fewest slot bits of an allocated table (16 slots).
const MIN_BITS: u32 = 4;
/// Most slot bits: the home is taken from the 32-bit tag.
pub(super) const MAX_BITS: u32 = 32;

/// One entry: the tag (upper half of the key's hash) and the caller's value.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Slot {
    tag: u32,
    val: u32,
}

const FREE: Slot = Slot { tag: 0, val: EMPTY };

/// A cache line of slots, so that the line a slot lies in is known and a prefetch fetches it
/// whole.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([Slot; PER_LINE]);

/// The tag of a key: the part of its hash the index keeps and homes by.
pub(super) fn tag_of(key: &Key) -> u32 {
    tag_from_mix(key.mix())
}

/// The tag of a key whose `Key::mix` is `mix` (for a caller that needs the hash besides).
#[inline(always)]
pub(super) fn tag_from_mix(mix: u64) -> u32 {
    (mix >> 32) as u32
}

/// The table: `2^bits` slots in lines, and how many hold an entry.
pub(super) struct Index {
    lines: Vec<Line>,
    len: usize,
    bits: u32,
}

impl Index {
    /// An empty index; nothing is allocated before the first insert.
    pub(super) fn new() -> Self {
        Index {
            lines: Vec::new(),
            len: 0,
            bits: 0,
        }
    }

    fn slots(&self) -> usize {
        self.lines.len() * PER_LINE
    }

    fn mask(&self) -> usize {
        self.slots().wrapping_sub(1)
    }

    fn home(&self, tag: u32) -> usize {
        // Only called with a table allocated (bits >= MIN_BITS).
        (tag >> (32 - self.bits)) as usize
    }

    fn slot(&self, i: usize) -> Slot {
        self.lines[i / PER_LINE].0[i % PER_LINE]
    }

    fn set(&mut self, i: usize, s: Slot) {
        self.lines[i / PER_LINE].0[i % PER_LINE] = s;
    }

    /// The value of the entry tagged `tag` that `is_key` accepts. Stops at the first empty
    /// slot; `is_key` sees only values whose tag matches.
    #[inline(always)]
    pub(super) fn find(&self, tag: u32, mut is_key: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        let mask = self.mask();
        let mut i = self.home(tag);
        loop {
            let s = self.slot(i);
            if s.val == EMPTY {
                return None;
            }
            if s.tag == tag && is_key(s.val) {
                return Some(s.val);
            }
            i = (i + 1) & mask;
        }
    }

    /// The value of the first entry tagged `tag`, unverified: a guess of which flow to
    /// prefetch.
    #[inline]
    pub(super) fn first_candidate(&self, tag: u32) -> Option<u32> {
        self.find(tag, |_| true)
    }

    /// Starts loading the slot line(s) where the search for `tag` begins: the home's line,
    /// and the next one when the home is the last slot of its line.
    #[inline]
    pub(super) fn prefetch(&self, tag: u32) {
        if self.len == 0 {
            return;
        }
        let i = self.home(tag);
        let line = i / PER_LINE;
        prefetch(&self.lines[line]);
        if i % PER_LINE == PER_LINE - 1 {
            prefetch(&self.lines[(line + 1) & (self.lines.len() - 1)]);
        }
    }

    /// Adds an entry. The caller guarantees no entry with the same key is present. Grows the
    /// table (doubling, re-slotting by tag) to keep the load at or below 1/2.
    pub(super) fn insert(&mut self, tag: u32, val: u32) {
        if (self.len + 1) * 2 > self.slots() {
            self.grow();
        }
        self.place(Slot { tag, val });
        self.len += 1;
    }

    /// Puts `s` into the first empty slot from its home.
    fn place(&mut self, s: Slot) {
        let mask = self.mask();
        let mut i = self.home(s.tag);
        while self.slot(i).val != EMPTY {
            i = (i + 1) & mask;
        }
        self.set(i, s);
    }

    fn grow(&mut self) {
        let bits = (self.bits + 1).max(MIN_BITS);
        assert!(bits <= MAX_BITS, "conntrack index beyond 2^32 slots");
        let n = (1 << bits) / PER_LINE;
        let mut lines = Vec::with_capacity(n);
        // Advised before the first touch, so that the pages are faulted in huge.
        crate::hugepage::advise(&lines);
        lines.resize(n, Line([FREE; PER_LINE]));
        let old = std::mem::replace(&mut self.lines, lines);
        self.bits = bits;
        for s in old.iter().flat_map(|l| l.0) {
            if s.val != EMPTY {
                self.place(s);
            }
        }
    }

    /// Removes the entry `(tag, val)` and returns whether it was there. Later entries of the
    /// cluster that may move closer to their home are shifted back into the hole.
    pub(super) fn remove(&mut self, tag: u32, val: u32) -> bool {
        if self.len == 0 {
            return false;
        }
        let mask = self.mask();
        let mut hole = self.home(tag);
        loop {
            let s = self.slot(hole);
            if s.val == EMPTY {
                return false;
            }
            if s.val == val && s.tag == tag {
                break;
            }
            hole = (hole + 1) & mask;
        }
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let s = self.slot(j);
            if s.val == EMPTY {
                break;
            }
            // `s` may fill the hole unless its home lies cyclically in (hole, j].
            let home = self.home(s.tag);
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.set(hole, s);
                hole = j;
            }
        }
        self.set(hole, FREE);
        self.len -= 1;
        true
    }

    /// Heap bytes held.
    pub(super) fn memory_bytes(&self) -> usize {
        self.lines.capacity() * std::mem::size_of::<Line>()
    }
}

#[cfg(test)]
impl Index {
    /// Number of entries.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Asserts the probing invariant (every entry is reachable from its home without crossing
    /// an empty slot), the entry count and the load bound; returns the entries.
    pub(super) fn check(&self) -> Vec<(u32, u32)> {
        let mask = self.mask();
        let mut out = Vec::new();
        for i in 0..self.slots() {
            let s = self.slot(i);
            if s.val == EMPTY {
                continue;
            }
            let mut k = self.home(s.tag);
            while k != i {
                assert_ne!(
                    self.slot(k).val,
                    EMPTY,
                    "entry {i} unreachable from its home"
                );
                k = (k + 1) & mask;
            }
            out.push((s.tag, s.val));
        }
        assert_eq!(out.len(), self.len);
        assert!(self.len * 2 <= self.slots());
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn lines_are_cache_lines() {
        assert_eq!(std::mem::size_of::<Line>(), 64);
        assert_eq!(std::mem::align_of::<Line>(), 64);
    }

    #[test]
    fn empty_index_allocates_nothing_and_finds_nothing() {
        let mut ix = Index::new();
        assert_eq!(ix.memory_bytes(), 0);
        assert_eq!(ix.find(7, |_| true), None);
        assert!(!ix.remove(7, 1));
        ix.prefetch(7);
    }

    #[test]
    fn equal_tags_are_told_apart_by_the_verifier() {
        let mut ix = Index::new();
        ix.insert(42, 1);
        ix.insert(42, 2);
        assert_eq!(ix.find(42, |v| v == 2), Some(2));
        assert_eq!(ix.find(42, |v| v == 1), Some(1));
        assert_eq!(ix.find(42, |v| v == 3), None);
        assert_eq!(ix.first_candidate(42), Some(1));
        assert!(ix.remove(42, 1));
        assert_eq!(ix.first_candidate(42), Some(2));
        ix.check();
    }

    #[test]
    fn clusters_wrap_around_the_end_and_shift_back() {
        let mut ix = Index::new();
        // All homed at the last slot of a 16-slot table: the cluster wraps to the start.
        let top = u32::MAX;
        for v in 0..5 {
            ix.insert(top - v, v);
        }
        assert_eq!(ix.slots(), 16);
        ix.check();
        assert!(ix.remove(top, 0));
        ix.check();
        for v in 1..5 {
            assert_eq!(ix.find(top - v, |x| x == v), Some(v));
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u32),
        Remove(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few distinct tag values (high bits only) make long clusters and tag collisions.
        prop_oneof![
            (0u32..64).prop_map(|t| Op::Insert(t << 26 | t)),
            any::<u32>().prop_map(Op::Insert),
            any::<usize>().prop_map(Op::Remove),
        ]
    }

    proptest! {
        #[test]
        fn matches_a_model(ops in proptest::collection::vec(op(), 1..400)) {
            let mut ix = Index::new();
            let mut model: HashMap<u32, u32> = HashMap::new();
            let mut next = 0u32;
            for op in ops {
                match op {
                    Op::Insert(tag) => {
                        ix.insert(tag, next);
                        model.insert(next, tag);
                        next += 1;
                    }
                    Op::Remove(k) if !model.is_empty() => {
                        let mut vals: Vec<u32> = model.keys().copied().collect();
                        vals.sort_unstable();
                        let v = vals[k % vals.len()];
                        let tag = model.remove(&v).unwrap();
                        prop_assert!(ix.remove(tag, v));
                        prop_assert!(!ix.remove(tag, v));
                    }
                    Op::Remove(_) => {}
                }
                let mut got = ix.check();
                got.sort_unstable_by_key(|&(_, v)| v);
                let mut want: Vec<(u32, u32)> = model.iter().map(|(&v, &t)| (t, v)).collect();
                want.sort_unstable_by_key(|&(_, v)| v);
                prop_assert_eq!(got, want);
                for (&v, &t) in &model {
                    prop_assert_eq!(ix.find(t, |x| x == v), Some(v));
                }
            }
        }
    }
}
