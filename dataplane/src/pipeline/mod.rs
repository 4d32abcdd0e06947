//! The packet pipeline: a graph of named stages every frame of a batch runs through once, in
//! the manner of VPP's graph nodes and OVS's `dp_netdev_input__`, ending with a verdict.
//!
//! ```text
//! rx batch ─► shortcut (staged plain frames of a NAPT flow whose decision is cached)
//!         └─► classify (port, parse_l2, VLAN admission, anti-spoofing)
//!               ├─ network port ─► bridge (learn, forward, flood) ─► gateway (ARP, ping,
//!               │      isolation, TTL/MTU → ICMP) ─► dnat (hairpin) ────────────────┐
//!               └─ uplink port ──► uplink (ARP, ping, replies) ─► dnat (published) ─┤
//!                                               nat (translate) ◄───────────────────┤
//!                                               route (next hop) ◄──────────────────┘
//! ─► verdicts (Forward / Flood / Drop(reason) / Consumed) for the runtime to transmit
//! ```
//!
//! Each stage is one file that owns its state and its drop reasons (`DropReason`, counted
//! per port by the driver); stages hand a frame on, never back:
//! - `shortcut`: the staged fast path (see "Shortcuts" below); `plain` is the frame shape it
//!   serves.
//! - `classify`: unknown port, malformed, VLAN not allowed, spoofed MAC/IP.
//! - `bridge`: FDB full, hairpin, ICC denied; floods and forwards.
//! - `gateway`: not for us, unsupported, isolated, no route, TTL exceeded, too big (with their
//!   ICMP errors); answers ARP and pings of the gateway.
//! - `ipv6` (dual-stack networks, from `classify`, `bridge` and `gateway`): spoofed MAC/IP,
//!   not for us, no route, TTL exceeded, too big (with their ICMPv6 errors); answers NDP and
//!   pings of the v6 gateway; `nat6` (NAT66, routed v6, ICMPv6 errors through their quote,
//!   `frag6` for later fragments): no flow, fragment, conntrack full, NAT ports exhausted.
//! - `uplink`: not for us, unsupported; answers ARP and pings of the uplink address.
//! - `dnat`: the DNAT (and hairpin SNAT) of new connections to published ports.
//! - `offload` (with `--offload tc`, from `shortcut`, `nat` and `bridge`): offers established
//!   flows to the kernel flow offload (`crate::offload`), takes them back on FIN or RST.
//! - `nat`: no flow, conntrack full, NAT ports exhausted, fragment (via `flow`).
//! - `route`: no route, ARP pending (the ARP request leaves in the packet's place).
//! - `ipvlan`: ipvlan networks in place of `bridge` (endpoints at the parent's MAC, delivered
//!   by address); ipvlan unknown destination, ipvlan filtered (L3 broadcast).
//! - `vxlan`: overlay networks across hosts; decapsulates for `uplink`, encapsulates and
//!   answers ARP for remote endpoints for `bridge`; VXLAN malformed, unknown VNI, spoofed,
//!   unknown destination. A TCP super-frame leaves it whole, marked for `segment` (software
//!   TCP segmentation), whose segments the runtime packs into UDP GSO frames (`udp_gso`) when
//!   it transmits the frame; a received UDP GSO datagram's chunks are joined into one TCP
//!   super-frame for the endpoint (`coalesce`).
//!
//! `dataplane` holds the state all workers share, `state` the per-batch snapshot and guards,
//! `flow` the IPv4 header and flow tuple the stages read, `stats` the operators' view.
//!
//! Where a new stage goes: a new file here with an `impl BatchState` method taking the frame
//! and the headers read so far, and one line in `BatchState::handle` (a new ingress kind,
//! e.g. a VXLAN decap stage before `classify`) or in the stage that hands frames to it (e.g.
//! IPv6 routing from `gateway` on its ethertype).
//!
//! Threading: `Dataplane` is shared by all workers. Its configuration is an immutable `Tables`
//! snapshot swapped atomically (`apply`); a worker loads it once per batch. Learned state is
//! shared: each network's FDB (read guard once per batch, new MACs applied under one write lock
//! at batch end), the conntrack table (one mutex guard per batch, taken only if the batch has
//! routed traffic, or looks like it has when staging) and the uplink's ARP cache (read guard
//! per batch, updates at batch end). Nothing is allocated per frame.
//!
//! Staged conntrack lookups: when the table is large (beyond the CPU caches), each lookup is
//! two dependent cache misses, and one frame after the other they would be paid in series. So
//! a pre-pass first picks the frames that will probably be routed (cheap checks, parsing each
//! once), takes the conntrack guard and looks all their tuples up at once
//! (`Conntrack::lookup_batch`, which overlaps the misses); the frames then run as usual and NAT
//! uses the staged hit of its frame. A worker stages a batch when its previous batch routed a
//! frame, so purely bridged traffic never pays for the pre-pass.
//!
//! Shortcuts: the full path decides a routed packet from the tables (port, VLAN, anti-spoofing,
//! gateway, isolation, published ports, uplink, next hop). For a NAPT flow that decision
//! depends only on the tables, the neighbours, the ingress port, the Ethernet header and the
//! tuple, so it is cached in the flow (`Shortcut`, one per direction) under an epoch that
//! every table swap and every moved neighbour advances. Shortcuts serve plain packets only
//! (untagged TCP or UDP without IP options or fragmentation, see `plain`), arriving on an
//! endpoint or an uplink (whose routed path learns nothing). Staging reads a plain frame at
//! fixed offsets, checking its header checksum and TTL as it goes; a staged plain frame whose
//! flow holds a shortcut of the current epoch for its ingress port, and which carries the
//! Ethernet addresses that port's routed frames carry, is then checked only for its length
//! (its TCP flags still drive the flow's state) and rewritten at once. v6 flows cache theirs
//! the same way (`shortcut6`), looked up unstaged under the v6 lock.

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arrayvec::ArrayVec;

use crate::batch::{Batch, MAX_BATCH};
use crate::bridge::Learn;
use crate::counters::WorkerCounters;
use crate::frame::{Frame, NetworkId, PortId, Verdict};
use crate::nat::Hit;
use crate::tables::Tables;
use crate::time::Millis;
use crate::wire::MacAddr;

mod bridge;
mod classify;
mod coalesce;
mod dataplane;
mod dnat;
mod flow;
mod flow6;
mod frag6;
mod gateway;
mod ipv6;
mod ipvlan;
mod nat;
mod nat6;
mod offload;
mod offload6;
mod offload_overlay;
mod pending;
mod plain;
mod route;
pub(crate) mod segment;
mod shortcut;
mod shortcut6;
mod state;
mod stats;
#[cfg(test)]
mod tests;
pub(crate) mod udp_gso;
mod uplink;
mod vxlan;

pub use dataplane::Dataplane;
pub use nat6::{V6Guard, V6Shared};
pub use stats::{
    ConntrackEntry, DropsByReason, FlowEnds, NetworkFdbEntry, NetworkStatsRow, PortStatsRow, Stats,
};

use classify::Ingress;
use shortcut::Staged;
use state::BatchState;

/// How many frames ahead of the one being handled the bridge prefetches the FDB line of.
const FDB_AHEAD: usize = 4;

/// Most uplink neighbours remembered; beyond it new ones are not learned.
const MAX_NEIGHBORS: usize = 4096;

/// One worker thread's context: runs batches through the pipeline.
#[derive(Debug)]
pub struct Worker {
    dp: Arc<Dataplane>,
    counters: Arc<WorkerCounters>,
    learn: ArrayVec<(NetworkId, Learn), MAX_BATCH>,
    arp_learn: ArrayVec<((PortId, Ipv4Addr), MacAddr), MAX_BATCH>,
    /// Per frame of the batch: the IPv4 header and flow the staged tuple was read from.
    staged_flows: Box<[Option<Staged>]>,
    /// Per frame of the batch: the staged lookup's result.
    staged_hits: Box<[Option<Hit>]>,
    /// The previous batch routed a frame through NAT: this one stages (adaptive staging).
    routed: bool,
    /// The last batch learned a neighbour while packets waited for one: `release_pending`
    /// has work.
    release_due: bool,
}

impl Worker {
    fn new(dp: Arc<Dataplane>, counters: Arc<WorkerCounters>) -> Worker {
        Worker {
            dp,
            counters,
            learn: ArrayVec::new(),
            arp_learn: ArrayVec::new(),
            staged_flows: vec![None; MAX_BATCH].into_boxed_slice(),
            staged_hits: vec![None; MAX_BATCH].into_boxed_slice(),
            routed: false,
            release_due: false,
        }
    }

    /// This worker's counters.
    pub fn counters(&self) -> &WorkerCounters {
        &self.counters
    }

    /// The dataplane this worker belongs to.
    pub fn dataplane(&self) -> &Arc<Dataplane> {
        &self.dp
    }

    /// Decides every frame's verdict, rewriting frames in place. Counts received frames and
    /// drops; transmission (and its counters) is the caller's.
    pub fn process(&mut self, batch: &mut Batch<'_>, now: Millis) -> Arc<Tables> {
        // Before the tables: an epoch never runs ahead of the tables loaded after it. Shortcuts
        // keep its low 32 bits (0, once per 2^32 changes, takes and leaves no shortcut).
        let epoch = self.dp.epoch.load(Ordering::Acquire) as u32;
        let tables = self.dp.tables.load_full();
        {
            let wanted = self.dp.staging.wanted(self.routed);
            let (ct, staged) = shortcut::stage(
                &self.dp,
                wanted,
                &tables,
                batch,
                &mut self.staged_flows,
                &mut self.staged_hits,
            );
            let mut st = BatchState {
                t: &tables,
                dp: &self.dp,
                counters: &self.counters,
                now,
                fdb: None,
                ct,
                v6: None,
                neigh: None,
                learn: &mut self.learn,
                arp_learn: &mut self.arp_learn,
                staged_flows: &self.staged_flows[..staged],
                staged_hits: &self.staged_hits[..staged],
                cur: 0,
                epoch,
                routed: false,
                offload: self.dp.offloads.enabled(),
            };
            let frames = batch.frames_mut();
            for i in 0..frames.len() {
                if let Some(ahead) = frames.get(i + FDB_AHEAD) {
                    st.prefetch_fdb(ahead);
                }
                let f = &mut frames[i];
                st.cur = i;
                self.counters.rx(f.meta.ingress, f.len());
                let v = match st.shortcut(f).or_else(|| st.shortcut6(f)) {
                    Some(v) => {
                        self.counters.shortcut();
                        v
                    }
                    None => st.handle(f),
                };
                if let Verdict::Drop(r) = v {
                    self.counters.drop_n(f.meta.ingress, r, 1);
                }
                f.meta.verdict = v;
            }
            self.routed = st.routed;
        }
        self.flush_learning(&tables, now);
        tables
    }

    /// Hands `send` the packets that waited for a neighbour the last batch learned (see
    /// `pending`), each with its verdict (`Forward` to its uplink) and its Ethernet header
    /// complete, and this worker's counters. The caller transmits them right after that
    /// batch. Takes the pool's lock only when the batch learned a neighbour while packets
    /// waited.
    pub fn release_pending(&mut self, mut send: impl FnMut(&Frame<'_>, &WorkerCounters)) {
        if !std::mem::take(&mut self.release_due) {
            return;
        }
        let mut pending = self.dp.pending.lock();
        {
            let known = self.dp.neighbors.read_recursive();
            let counters = &*self.counters;
            pending.release(|k| known.get(&k).copied(), |f| send(f, counters));
        }
        self.dp.pending_held.store(pending.len(), Ordering::Release);
    }

    /// Applies what the batch learned, each table under one write lock: new or moved MACs per
    /// network, then uplink neighbours (a moved one retires the shortcuts).
    fn flush_learning(&mut self, tables: &Tables, now: Millis) {
        if !self.learn.is_empty() {
            self.learn.sort_unstable_by_key(|(n, _)| *n);
            let mut rest = &self.learn[..];
            while let Some((net, _)) = rest.first() {
                let n = rest.iter().take_while(|(m, _)| m == net).count();
                if let Some(entry) = tables.network(*net) {
                    let items: ArrayVec<Learn, MAX_BATCH> =
                        rest[..n].iter().map(|(_, l)| *l).collect();
                    entry.fdb.learn(&items, now);
                }
                rest = &rest[n..];
            }
            self.learn.clear();
        }
        if !self.arp_learn.is_empty() {
            self.release_due |= self.dp.pending_held.load(Ordering::Acquire) > 0;
            let mut map = self.dp.neighbors.write();
            let mut changed = false;
            for (key, mac) in self.arp_learn.drain(..) {
                if map.len() < MAX_NEIGHBORS || map.contains_key(&key) {
                    // A new neighbour changes no shortcut (those were taken with a known
                    // MAC); a moved one does.
                    changed |= map.insert(key, mac).is_some_and(|old| old != mac);
                }
            }
            if changed {
                self.dp.epoch.fetch_add(1, Ordering::AcqRel);
            }
        }
    }
}

impl BatchState<'_> {
    /// The full path of one frame: classify, then the stage its ingress port leads to.
    /// Inlined into the batch loop, its one caller: out of line, every frame pays a call and
    /// the spills around it (L2 forwarding +13% instructions a frame).
    #[inline(always)]
    fn handle(&mut self, f: &mut Frame<'_>) -> Verdict {
        let v = match self.classify(f) {
            Ok(Ingress::Network { l2, port, net, ip }) => match &net.1.config.ipvlan {
                Some(iv) => self.ipvlan(f, &l2, port, net, ip, iv),
                None => self.bridge(f, &l2, port, net, ip),
            },
            Ok(Ingress::Uplink { l2, up }) => self.uplink(f, &l2, up),
            Err(r) => Err(r),
        };
        v.unwrap_or_else(Verdict::Drop)
    }
}
