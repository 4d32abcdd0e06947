//! Which bridged flows were seen both ways: bridged traffic has no conntrack entry, so the
//! offload keeps its own small record, one slot of a fixed table of atomics per flow (both
//! directions share it), written without a lock by whichever worker forwards the flow's
//! frames. A slot holds a tag of the flow, the epoch it was seen under, a bit per direction
//! and whether the flow was offered. Two flows sharing a slot only delay each other's offer;
//! an older epoch's record counts as none (the kernel entries were flushed with it).
//! Flows of either family share the table ([`FlowTuple`]).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use super::build::FlowTuple;

/// Slots of the table (a power of two).
const SLOTS: usize = 4096;
/// Slot bits: the direction from the lower (address, port) to the higher was seen.
const UP: u64 = 1;
/// Slot bits: the other direction was seen.
const DOWN: u64 = 2;
/// Slot bits: the flow was offered to the offload thread.
const OFFERED: u64 = 4;
/// Slot bits: a frame ready to offer was recorded where no offer could be made (see
/// [`Seen::record`]); the flow's next frame that can offer does, whatever its size.
const READY: u64 = 8;
/// Slot bits below the tag and the epoch.
const FLAGS: u64 = 0xff;

/// The bridged flows' record; see the module documentation.
#[derive(Debug)]
pub struct Seen {
    slots: Box<[AtomicU64]>,
}

impl Default for Seen {
    fn default() -> Self {
        Seen {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// An address as one integer: an IPv4 one as its 32 bits, an IPv6 one as its 128.
#[inline]
fn number((ip, port): (IpAddr, u16)) -> (u128, u16) {
    match ip {
        IpAddr::V4(a) => (u128::from(u32::from(a)), port),
        IpAddr::V6(a) => (u128::from(a), port),
    }
}

/// 128 bits folded to 64 (an IPv4 address keeps its value).
#[inline]
fn fold(x: u128) -> u64 {
    (x as u64) ^ ((x >> 64) as u64).rotate_left(23)
}

/// The flow's slot index, its tag and epoch in a slot's upper bits, and which direction
/// `t` travels.
fn place(t: &impl FlowTuple, epoch: u32) -> (usize, u64, u64) {
    let a = number(t.src());
    let b = number(t.dst());
    let (lo, hi, dir) = if a <= b { (a, b, UP) } else { (b, a, DOWN) };
    let k1 = fold(lo.0).rotate_left(32) ^ fold(hi.0);
    let k2 = (u64::from(lo.1) << 32) | (u64::from(hi.1) << 16) | u64::from(t.proto());
    let h = (k1 ^ k2.rotate_left(29))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .rotate_left(31)
        .wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let head = (h & !0xffff_ffff) | ((u64::from(epoch) & 0x00ff_ffff) << 8);
    ((h as usize) & (SLOTS - 1), head, dir)
}

impl Seen {
    /// Records a frame of bridged flow `t` (TCP past its handshake, or UDP) under `epoch`;
    /// true exactly once per flow and epoch: for a frame that is `ready` to offer its flow
    /// (see `offload::offers`) once both directions have been seen; the caller then offers it.
    #[inline]
    pub fn observe(&self, t: &impl FlowTuple, epoch: u32, ready: bool) -> bool {
        let (i, head, dir) = place(t, epoch);
        let slot = &self.slots[i];
        let cur = slot.load(Ordering::Relaxed);
        if cur & !FLAGS != head {
            slot.store(head | dir, Ordering::Relaxed);
            return false;
        }
        if cur & OFFERED != 0 {
            return false;
        }
        let new = cur | dir;
        if new & (UP | DOWN) != UP | DOWN || !(ready || cur & READY != 0) {
            if new != cur {
                slot.store(new, Ordering::Relaxed);
            }
            return false;
        }
        slot.compare_exchange(cur, new | OFFERED, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Records a frame of flow `t` under `epoch` where no offer can be made (an overlay's
    /// inbound frame lacks the outer headers an offer needs): its direction, and whether it
    /// was `ready` to offer its flow, so that the flow's next frame that can offer does.
    #[inline]
    pub fn record(&self, t: &impl FlowTuple, epoch: u32, ready: bool) {
        let (i, head, dir) = place(t, epoch);
        let slot = &self.slots[i];
        let cur = slot.load(Ordering::Relaxed);
        let mark = dir | if ready { READY } else { 0 };
        if cur & !FLAGS != head {
            slot.store(head | mark, Ordering::Relaxed);
        } else if cur & OFFERED == 0 && cur | mark != cur {
            slot.store(cur | mark, Ordering::Relaxed);
        }
    }

    /// Forgets bridged flow `t` (it closed, or its kernel entries aged out) whatever its
    /// epoch; true when it had been offered.
    pub fn forget(&self, t: &impl FlowTuple) -> bool {
        let (i, head, _) = place(t, 0);
        let slot = &self.slots[i];
        let cur = slot.load(Ordering::Relaxed);
        let tag = !0xffff_ffff;
        if cur & tag != head & tag {
            return false;
        }
        slot.swap(0, Ordering::Relaxed) & OFFERED != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::L4Proto;
    use crate::nat::v6::Tuple6;
    use crate::nat::Tuple;
    use std::net::Ipv4Addr;

    fn t(src_port: u16, dst_port: u16) -> Tuple {
        Tuple {
            proto: L4Proto::Tcp,
            src: Ipv4Addr::new(10, 0, 0, 2),
            src_port,
            dst: Ipv4Addr::new(10, 0, 0, 3),
            dst_port,
        }
    }

    #[test]
    fn offered_once_when_both_directions_were_seen() {
        let s = Seen::default();
        let ab = t(40000, 80);
        assert!(!s.observe(&ab, 1, true));
        assert!(!s.observe(&ab, 1, true));
        assert!(s.observe(&ab.reversed(), 1, true));
        assert!(!s.observe(&ab.reversed(), 1, true));
        assert!(!s.observe(&ab, 1, true));
        // A frame not ready to offer (a small one) records, but does not offer.
        assert!(!s.observe(&ab, 3, true));
        assert!(!s.observe(&ab.reversed(), 3, false));
        assert!(s.observe(&ab, 3, true));
        // A new epoch starts over.
        assert!(!s.observe(&ab, 2, true));
        assert!(s.observe(&ab.reversed(), 2, true));
    }

    #[test]
    fn a_ready_frame_recorded_lets_the_next_frame_that_can_offer_do_so() {
        let s = Seen::default();
        let ab = t(40002, 80);
        // Small frames both ways (request/response): recorded, never offered.
        s.record(&ab.reversed(), 1, false);
        assert!(!s.observe(&ab, 1, false));
        s.record(&ab.reversed(), 1, false);
        assert!(!s.observe(&ab, 1, false));
        // A bulk-sized frame the other way: the next small frame this way offers, once.
        s.record(&ab.reversed(), 1, true);
        assert!(s.observe(&ab, 1, false));
        assert!(!s.observe(&ab, 1, false));
        // Recording after the offer changes nothing; a new epoch forgets the readiness.
        s.record(&ab.reversed(), 1, true);
        assert!(!s.observe(&ab, 1, true));
        s.record(&ab.reversed(), 2, false);
        assert!(!s.observe(&ab, 2, false));
        assert!(s.observe(&ab, 2, true));
    }

    #[test]
    fn forgetting_tells_whether_it_was_offered() {
        let s = Seen::default();
        let ab = t(40001, 80);
        assert!(!s.forget(&ab));
        s.observe(&ab, 1, true);
        assert!(!s.forget(&ab.reversed()));
        s.observe(&ab, 1, true);
        assert!(s.observe(&ab.reversed(), 1, true));
        assert!(s.forget(&ab.reversed()));
        assert!(!s.forget(&ab));
        // Seen again from scratch after forgetting.
        assert!(!s.observe(&ab, 1, true));
        assert!(s.observe(&ab.reversed(), 1, true));
    }

    #[test]
    fn v6_flows_and_keys_share_the_record() {
        let s = Seen::default();
        let ab = Tuple6 {
            proto: L4Proto::Tcp,
            src: "fd00:9::2".parse().unwrap(),
            src_port: 40000,
            dst: "fd00:9::3".parse().unwrap(),
            dst_port: 80,
        };
        assert!(!s.observe(&ab, 1, true));
        assert!(s.observe(&ab.reversed(), 1, true));
        // Another v6 flow (the hosts' upper 64 bits differ only) is another record.
        let other = Tuple6 {
            src: "fd00:8::2".parse().unwrap(),
            ..ab
        };
        assert!(!s.observe(&other.reversed(), 1, true));
        // The offload thread forgets a flow by its installed key.
        let key = sluice_offload::FlowKey {
            ifindex: 7,
            src: ab.src.into(),
            dst: ab.dst.into(),
            proto: 6,
            sport: ab.src_port,
            dport: ab.dst_port,
        };
        assert!(s.forget(&key));
        assert!(!s.forget(&ab));
    }
}
