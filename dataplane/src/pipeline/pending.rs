//! Packets held while their uplink next hop is being resolved, as the kernel's neighbour
//! table holds them (`unres_qlen`): at most [`PER_NEIGHBOR`] frames of at most
//! [`SLOT_BYTES`] bytes per unresolved neighbour, [`SLOTS`] in all, each for at most
//! [`HOLD_MS`]. A packet that finds no room is dropped (`arp_pending`), as before.
//!
//! Design: the frames are copied into a fixed pool of buffers allocated once with the
//! dataplane (no allocation per packet), shared by all workers under one mutex that a batch
//! takes only when it meets an unresolved next hop or learns a neighbour while frames wait.
//! The route stage copies a frame here (already translated, TTL decremented, source MAC set)
//! and turns the frame itself into the ARP request. The batch that learns the neighbour from
//! its ARP reply marks the worker, and the runtime, right after transmitting that batch, calls
//! [`Worker::release_pending`](super::Worker::release_pending): it completes each waiting
//! frame's destination MAC and sends it on the uplink from the pool buffer, on the TX of the
//! worker that learned the neighbour. No frame waits for housekeeping.

use std::net::Ipv4Addr;

use crate::counters::{DropReason, WorkerCounters};
use crate::frame::{Frame, Meta, Offload, PortId, Verdict, HEADROOM};
use crate::time::Millis;
use crate::wire::ethernet::EthernetFrame;
use crate::wire::MacAddr;

/// Most frames held for one neighbour (the kernel's historical `unres_qlen` of 3).
pub(super) const PER_NEIGHBOR: usize = 3;
/// Frames held in all (so at least 21 neighbours wait at once at the full quota each).
pub(super) const SLOTS: usize = 64;
/// Longest frame held: a full 1500-byte packet with its (tagged) Ethernet header; larger
/// (GSO) frames are not held.
pub(super) const SLOT_BYTES: usize = 2048;
/// How long a frame waits for its neighbour before its slot may be reused (the kernel gives
/// up after 3 probes a second apart).
pub(super) const HOLD_MS: u64 = 3000;

/// The neighbour a frame waits for: (uplink port, next-hop address).
pub(super) type NeighborKey = (PortId, Ipv4Addr);

/// One held frame's bookkeeping; its bytes are in the pool at the same index.
#[derive(Clone, Copy, Debug)]
struct Slot {
    key: Option<NeighborKey>,
    ingress: PortId,
    len: usize,
    offload: Offload,
    since: Millis,
}

/// The pool of held frames.
#[derive(Debug)]
pub(super) struct Pending {
    slots: Vec<Slot>,
    bufs: Box<[u8]>,
    held: usize,
}

/// Bytes of one pool buffer: headroom (ports may write in front of a frame) and the frame.
const STRIDE: usize = HEADROOM + SLOT_BYTES;

impl Pending {
    /// An empty pool, its buffers allocated now.
    pub(super) fn new() -> Self {
        let free = Slot {
            key: None,
            ingress: PortId(0),
            len: 0,
            offload: Offload::default(),
            since: Millis(0),
        };
        Pending {
            slots: vec![free; SLOTS],
            bufs: vec![0; SLOTS * STRIDE].into_boxed_slice(),
            held: 0,
        }
    }

    /// Frames held now.
    pub(super) fn len(&self) -> usize {
        self.held
    }

    /// Copies `f` (ready to leave but for its destination MAC) to wait for neighbour `key`.
    /// False, holding nothing, when the frame is too long or the neighbour's quota or the pool
    /// is full. Frames that waited longer than [`HOLD_MS`] are dropped first, counted as
    /// `arp_pending` on their ingress port.
    pub(super) fn hold(
        &mut self,
        key: NeighborKey,
        f: &Frame<'_>,
        now: Millis,
        counters: &WorkerCounters,
    ) -> bool {
        let mut same = 0;
        let mut free = None;
        for (i, s) in self.slots.iter_mut().enumerate() {
            if s.key.is_some() && s.since.0 + HOLD_MS <= now.0 {
                counters.drop_n(s.ingress, DropReason::ArpPending, 1);
                s.key = None;
                self.held -= 1;
            }
            match s.key {
                Some(k) if k == key => same += 1,
                None if free.is_none() => free = Some(i),
                _ => {}
            }
        }
        let Some(i) = free.filter(|_| same < PER_NEIGHBOR && f.len() <= SLOT_BYTES) else {
            return false;
        };
        let at = i * STRIDE + HEADROOM;
        self.bufs[at..at + f.len()].copy_from_slice(f.data());
        self.slots[i] = Slot {
            key: Some(key),
            ingress: f.meta.ingress,
            len: f.len(),
            offload: f.meta.offload,
            since: now,
        };
        self.held += 1;
        true
    }

    /// Hands every held frame whose neighbour `resolve` now knows to `send`, with that MAC as
    /// its destination and `Forward(uplink port)` as its verdict, and frees its slot.
    pub(super) fn release(
        &mut self,
        resolve: impl Fn(NeighborKey) -> Option<MacAddr>,
        mut send: impl FnMut(&Frame<'_>),
    ) {
        for (i, s) in self.slots.iter_mut().enumerate() {
            let Some(key) = s.key else { continue };
            let Some(mac) = resolve(key) else { continue };
            let buf = &mut self.bufs[i * STRIDE..(i + 1) * STRIDE];
            EthernetFrame::new_unchecked(&mut buf[HEADROOM..]).set_dst(mac);
            let meta = Meta {
                ingress: s.ingress,
                vlan: 0,
                offload: s.offload,
                verdict: Verdict::Forward(key.0),
            };
            if let Some(f) = Frame::new(buf, HEADROOM, s.len, meta) {
                send(&f);
            }
            s.key = None;
            self.held -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(buf: &mut [u8], len: usize) -> Frame<'_> {
        Frame::new(buf, HEADROOM, len, Meta::default()).unwrap()
    }

    #[test]
    fn holds_a_bounded_number_per_neighbor_and_releases_once_known() {
        let c = WorkerCounters::default();
        let mut p = Pending::new();
        let (a, b) = (
            (PortId(0), Ipv4Addr::new(192, 0, 2, 254)),
            (PortId(0), Ipv4Addr::new(192, 0, 2, 9)),
        );
        let mut buf = vec![7u8; HEADROOM + 100];
        for _ in 0..PER_NEIGHBOR {
            assert!(p.hold(a, &frame(&mut buf, 100), Millis(0), &c));
        }
        assert!(!p.hold(a, &frame(&mut buf, 100), Millis(0), &c));
        let mut big = vec![0u8; HEADROOM + SLOT_BYTES + 1];
        assert!(!p.hold(b, &frame(&mut big, SLOT_BYTES + 1), Millis(0), &c));
        assert!(p.hold(b, &frame(&mut buf, 60), Millis(0), &c));
        let mac = MacAddr([2, 0, 0, 0, 0, 0xfe]);
        let mut sent = Vec::new();
        p.release(
            |k| (k == a).then_some(mac),
            |f| sent.push((f.meta.verdict, f.data().to_vec())),
        );
        assert_eq!(sent.len(), PER_NEIGHBOR);
        assert!(sent
            .iter()
            .all(|(v, d)| *v == Verdict::Forward(PortId(0)) && d[..6] == mac.0 && d.len() == 100));
        assert_eq!(p.len(), 1);
        // b never answers: its frame is dropped (counted) when a later packet needs room.
        assert!(p.hold(a, &frame(&mut buf, 60), Millis(HOLD_MS), &c));
        assert_eq!(c.drops(DropReason::ArpPending), 1);
        assert_eq!(p.len(), 1);
    }
}
