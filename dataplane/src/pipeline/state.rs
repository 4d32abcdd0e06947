//! The per-batch state every stage works with: the configuration snapshot, the staged
//! lookups, and the shared tables' guards, each taken at most once per batch and only when a
//! frame needs it.

use std::net::Ipv4Addr;

use arrayvec::ArrayVec;
use parking_lot::{MutexGuard, RwLockReadGuard};

use super::dataplane::{Dataplane, Neighbors};
use super::shortcut::Staged;
use crate::batch::MAX_BATCH;
use crate::bridge::{FdbReader, Learn};
use crate::counters::WorkerCounters;
use crate::frame::{NetworkId, PortId};
use crate::nat::{Conntrack, Hit, Tuple};
use crate::tables::{NetworkEntry, Tables};
use crate::time::Millis;
use crate::wire::MacAddr;

/// Per-batch state: the snapshot, and the guards taken at most once per batch.
pub(super) struct BatchState<'t> {
    pub(super) t: &'t Tables,
    pub(super) dp: &'t Dataplane,
    pub(super) counters: &'t WorkerCounters,
    pub(super) now: Millis,
    pub(super) fdb: Option<(NetworkId, FdbReader<'t>)>,
    pub(super) ct: Option<MutexGuard<'t, Conntrack>>,
    /// The v6 flows and neighbours (`nat6`), taken by the first v6 frame that needs them.
    pub(super) v6: Option<MutexGuard<'t, super::nat6::V6Shared>>,
    pub(super) neigh: Option<RwLockReadGuard<'t, Neighbors>>,
    pub(super) learn: &'t mut ArrayVec<(NetworkId, Learn), MAX_BATCH>,
    pub(super) arp_learn: &'t mut ArrayVec<((PortId, Ipv4Addr), MacAddr), MAX_BATCH>,
    /// Per frame: the IPv4 header and flow of the staged tuple.
    pub(super) staged_flows: &'t [Option<Staged>],
    /// Per frame: the staged lookup's result.
    pub(super) staged_hits: &'t [Option<Hit>],
    /// Index of the frame being handled.
    pub(super) cur: usize,
    /// The dataplane's epoch (low 32 bits) when the batch started: shortcuts of it are valid.
    pub(super) epoch: u32,
    /// Some frame of the batch reached NAT (decides whether the next batch stages).
    pub(super) routed: bool,
    /// The kernel flow offload runs: forwarded flows are offered to it (`offload`).
    pub(super) offload: bool,
}

impl<'t> BatchState<'t> {
    /// The read guard of network `id`'s FDB, taken once for a run of its frames.
    #[inline(always)]
    pub(super) fn fdb(&mut self, id: NetworkId, net: &'t NetworkEntry) -> &FdbReader<'t> {
        if self.fdb.as_ref().map(|(n, _)| *n) != Some(id) {
            // Release the other network's guard before taking this one's.
            self.fdb = None;
        }
        &self.fdb.get_or_insert_with(|| (id, net.fdb.read())).1
    }

    /// The conntrack table, locked once for the rest of the batch.
    #[inline(always)]
    pub(super) fn ct(&mut self) -> &mut Conntrack {
        let dp = self.dp;
        self.ct.get_or_insert_with(|| dp.conntrack.lock())
    }

    /// The conntrack lookup of `key` for the current frame, from the staged lookups when this
    /// frame staged `key` and it hit. A staged hit stays right for the whole batch: flows are
    /// only removed under the conntrack lock, which the batch holds from staging on. A staged
    /// miss is looked up again when an earlier frame of the batch may have created the flow
    /// (`Conntrack::still_misses`).
    #[inline(always)]
    pub(super) fn lookup(&mut self, key: &Tuple) -> Option<Hit> {
        let (i, flows, hits) = (self.cur, self.staged_flows, self.staged_hits);
        if let (Some(Some(staged)), Some(hit)) = (flows.get(i), hits.get(i)) {
            if staged.probe.is_for(key) {
                match hit {
                    Some(hit) => return Some(*hit),
                    None if self.ct().still_misses(&staged.probe) => return None,
                    None => {}
                }
            }
        }
        self.ct().lookup(key)
    }

    /// The MAC of uplink neighbour `ip` on `port`, under a read guard taken once per batch.
    #[inline(always)]
    pub(super) fn neighbor(&mut self, port: PortId, ip: Ipv4Addr) -> Option<MacAddr> {
        let dp = self.dp;
        self.neigh
            // Recursive for the same reason as the FDB's batch guard (`Fdb::read`).
            .get_or_insert_with(|| dp.neighbors.read_recursive())
            .get(&(port, ip))
            .copied()
    }
}
