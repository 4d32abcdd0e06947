//! The expiry timer wheel: 1 s ticks, `SLOTS` slots, each slot an intrusive doubly linked list
//! threaded through the flow slab by u32 index (`Flow::prev`, `Flow::next`, `Flow::slot`).
//!
//! A flow sits in the slot of the first tick at or after its deadline (modulo `SLOTS`; a
//! deadline beyond the horizon fires early and is re-slotted). Firing a slot detaches its whole
//! list first, so flows re-slotted while it is processed are not seen again in the same pass.

use super::conntrack::Flow;
use crate::time::Millis;

/// Number of slots: the horizon, in seconds, after which a deadline wraps around.
pub(super) const SLOTS: u64 = 4096;
/// "No flow" in a link field.
pub(super) const NIL: u32 = u32::MAX;
/// `Flow::slot` of a flow that is in no list.
pub(super) const UNLINKED: u16 = u16::MAX;

/// Slot heads and the last tick processed.
pub(super) struct Wheel {
    heads: Box<[u32]>,
    tick: u64,
}

/// The first tick at or after `ms`.
fn tick_at_or_after(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

impl Wheel {
    /// An empty wheel (the slot heads only: 16 KiB).
    pub(super) fn new() -> Self {
        Wheel {
            heads: vec![NIL; SLOTS as usize].into_boxed_slice(),
            tick: 0,
        }
    }

    /// Puts flow `idx` into the slot of its `expires`, never into an already processed tick.
    pub(super) fn link(&mut self, flows: &mut [Flow], idx: u32) {
        let tick = tick_at_or_after(flows[idx as usize].expires).max(self.tick + 1);
        let slot = (tick % SLOTS) as usize;
        let head = self.heads[slot];
        if head != NIL {
            flows[head as usize].prev = idx;
        }
        let f = &mut flows[idx as usize];
        f.prev = NIL;
        f.next = head;
        f.slot = slot as u16;
        self.heads[slot] = idx;
    }

    /// Takes flow `idx` out of its list (no-op when it is in none).
    pub(super) fn unlink(&mut self, flows: &mut [Flow], idx: u32) {
        let f = &mut flows[idx as usize];
        if f.slot == UNLINKED {
            return;
        }
        let (prev, next, slot) = (f.prev, f.next, f.slot);
        f.prev = NIL;
        f.next = NIL;
        f.slot = UNLINKED;
        if prev == NIL {
            self.heads[slot as usize] = next;
        } else {
            flows[prev as usize].next = next;
        }
        if next != NIL {
            flows[next as usize].prev = prev;
        }
    }

    /// The slots due at `now`, in tick order, and marks their ticks processed. Each slot comes
    /// at most once per call, however long ago the last call was.
    pub(super) fn due(&mut self, now: Millis) -> impl Iterator<Item = usize> {
        let target = now.as_secs();
        let first = self.tick + 1;
        let count = target.saturating_sub(self.tick).min(SLOTS);
        self.tick = self.tick.max(target);
        (first..first + count).map(|t| (t % SLOTS) as usize)
    }

    /// Heap bytes of the slot heads.
    pub(super) fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.heads)
    }

    /// Detaches the list of `slot` and returns its first flow. The caller walks it by `next`
    /// and must mark each flow `UNLINKED` (or re-link it) as it goes.
    pub(super) fn take(&mut self, slot: usize) -> u32 {
        std::mem::replace(&mut self.heads[slot], NIL)
    }
}

#[cfg(test)]
impl Wheel {
    /// The flows linked into `slot`, checking the back links on the way.
    pub(super) fn list(&self, flows: &[Flow], slot: usize) -> Vec<u32> {
        let mut out = Vec::new();
        let (mut prev, mut cur) = (NIL, self.heads[slot]);
        while cur != NIL {
            let f = &flows[cur as usize];
            assert_eq!(f.prev, prev, "broken back link");
            assert_eq!(usize::from(f.slot), slot, "flow in the wrong slot");
            out.push(cur);
            (prev, cur) = (cur, f.next);
        }
        out
    }
}
