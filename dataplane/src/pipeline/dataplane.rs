//! The state every worker shares: the configuration snapshot (swapped whole by `apply`), the
//! learned tables (conntrack, uplink neighbours; each network's FDB lives in its `Tables`
//! entry), the shortcut epoch, and upkeep (`housekeeping`, next-hop probes).

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use hashbrown::HashMap;
use parking_lot::{Mutex, MutexGuard, RwLock};

use super::pending::Pending;
use super::Worker;
use crate::config::{Config, NatConfig};
use crate::counters::WorkerCounters;
use crate::frame::PortId;
use crate::nat::v6::Conntrack6;
use crate::nat::{Conntrack, Timeouts};
use crate::offload::Offloads;
use crate::tables::{ConfigError, PortMode, Tables};
use crate::time::Millis;
use crate::wire::arp;
use crate::wire::MacAddr;

/// The uplinks' learned neighbours: (uplink port, address) to MAC.
pub(super) type Neighbors = HashMap<(PortId, Ipv4Addr), MacAddr>;

/// When a batch stages its conntrack lookups (and so may take shortcuts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Staging {
    /// When the worker's previous batch routed a frame: traffic with NAT flows stages (which
    /// pays at every table size once shortcuts exist), purely bridged traffic skips the
    /// pre-pass.
    Adaptive,
    /// Every batch (tests).
    #[cfg(test)]
    Always,
    /// No batch (tests: the full pipeline alone).
    #[cfg(test)]
    Never,
}

impl Staging {
    /// Whether a batch stages, given that the worker's previous batch `routed` a frame.
    pub(super) fn wanted(self, routed: bool) -> bool {
        match self {
            Staging::Adaptive => routed,
            #[cfg(test)]
            Staging::Always => true,
            #[cfg(test)]
            Staging::Never => false,
        }
    }
}

/// The state all workers share: configuration snapshot and learned tables.
#[derive(Debug)]
pub struct Dataplane {
    pub(super) tables: ArcSwap<Tables>,
    apply_lock: Mutex<()>,
    pub(super) conntrack: Mutex<Conntrack>,
    /// The v6 flows and neighbours (see `nat6`).
    pub(super) v6: Mutex<super::nat6::V6Shared>,
    /// When batches stage their lookups.
    pub(super) staging: Staging,
    pub(super) neighbors: RwLock<Neighbors>,
    /// Advanced after every table swap and neighbour change: shortcuts of an older epoch are
    /// ignored. Starts at 1 (0 marks a flow direction without shortcut).
    pub(super) epoch: AtomicU64,
    /// Packets waiting for an uplink neighbour's MAC (see `pending`).
    pub(super) pending: Mutex<Pending>,
    /// How many packets `pending` holds, read without its lock: a batch that learns a
    /// neighbour looks at the pool only when something waits.
    pub(super) pending_held: AtomicUsize,
    workers: Mutex<Vec<Arc<WorkerCounters>>>,
    /// The kernel flow offload's shared state (off unless the runtime runs it).
    pub(super) offloads: Offloads,
}

impl Dataplane {
    /// A dataplane running `config`.
    pub fn new(config: &Config) -> Result<Arc<Self>, ConfigError> {
        let tables = Tables::build(config, None)?;
        sync_static_macs(&tables, None);
        Ok(Arc::new(Dataplane {
            tables: ArcSwap::from_pointee(tables),
            apply_lock: Mutex::new(()),
            conntrack: Mutex::new(Conntrack::new(&config.nat, Timeouts::default())),
            v6: Mutex::new(super::nat6::V6Shared::new(&config.nat)),
            staging: Staging::Adaptive,
            neighbors: RwLock::new(HashMap::new()),
            epoch: AtomicU64::new(1),
            pending: Mutex::new(Pending::new()),
            pending_held: AtomicUsize::new(0),
            workers: Mutex::new(Vec::new()),
            offloads: Offloads::default(),
        }))
    }

    /// Validates and swaps in a new configuration while workers keep running. On error nothing
    /// changes. Learned MACs of surviving networks are kept; ports that disappeared lose theirs.
    /// A changed NAT port range or flow limit starts a fresh conntrack table.
    pub fn apply(&self, config: &Config) -> Result<(), ConfigError> {
        let _serial = self.apply_lock.lock();
        let old = self.tables.load_full();
        let new = Tables::build(config, Some(&old))?;
        sync_static_macs(&new, Some(&old));
        let nat_changed = old.config().nat != config.nat;
        self.tables.store(Arc::new(new));
        // After the store: a batch that reads the new epoch also loads the new tables.
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if nat_changed {
            *self.conntrack.lock() = Conntrack::new(&config.nat, Timeouts::default());
        }
        Ok(())
    }

    /// The kernel flow offload's shared state: requests, ports' interface indexes, counters.
    pub fn offloads(&self) -> &Offloads {
        &self.offloads
    }

    /// The epoch's low 32 bits (what shortcuts and offload requests keep).
    pub(crate) fn epoch32(&self) -> u32 {
        self.epoch.load(Ordering::Acquire) as u32
    }

    /// Runs `f` on the conntrack table under its lock (the offload thread's aging).
    pub(crate) fn with_conntrack<R>(&self, f: impl FnOnce(&mut Conntrack) -> R) -> R {
        f(&mut self.conntrack.lock())
    }

    /// Runs `f` on the v6 conntrack table under its lock (the offload thread's aging).
    pub(crate) fn with_conntrack6<R>(&self, f: impl FnOnce(&mut Conntrack6) -> R) -> R {
        f(&mut self.v6.lock().ct)
    }

    /// The configuration snapshot workers currently use.
    pub fn tables(&self) -> Arc<Tables> {
        self.tables.load_full()
    }

    /// A new worker context; its counters are registered for `counters()`.
    pub fn worker(self: &Arc<Self>) -> Worker {
        let counters = Arc::new(WorkerCounters::default());
        self.workers.lock().push(Arc::clone(&counters));
        Worker::new(Arc::clone(self), counters)
    }

    /// Makes every batch stage its lookups (`true`) or none (`false`), so that tests compare
    /// the staged path and its shortcuts with the full pipeline. Only before workers exist.
    #[cfg(test)]
    pub(crate) fn set_staging(self: &mut Arc<Self>, always: bool) {
        Arc::get_mut(self).expect("no worker yet").staging = if always {
            Staging::Always
        } else {
            Staging::Never
        };
    }

    /// Every worker's counters, for summing.
    pub fn counters(&self) -> Vec<Arc<WorkerCounters>> {
        self.workers.lock().clone()
    }

    /// Periodic upkeep (a control thread, about once a second): ages FDB entries and expires
    /// flows. Returns (MACs aged out, flows expired).
    pub fn housekeeping(&self, now: Millis) -> (usize, usize) {
        let tables = self.tables.load();
        let aged = tables.networks().map(|n| n.fdb.age(now)).sum();
        let mut ct = self.conntrack.lock();
        let expired = ct.expire(now);
        drop(ct);
        (aged, expired + self.v6.lock().ct.expire(now))
    }

    /// The v6 flows and neighbours, locked (for listings and tests).
    pub fn v6(&self) -> super::nat6::V6Guard<'_> {
        self.v6.lock()
    }

    /// The conntrack table, locked (for listings; holds up workers' routed traffic meanwhile).
    pub fn conntrack(&self) -> MutexGuard<'_, Conntrack> {
        self.conntrack.lock()
    }

    /// ARP requests for every uplink next hop whose MAC is not known yet, as (uplink port,
    /// frame): the runtime sends them from its housekeeping, so that the first packet to the
    /// outside finds the next hop resolved instead of being lost to an ARP round trip.
    pub fn next_hop_probes(&self) -> Vec<(PortId, Vec<u8>)> {
        let tables = self.tables.load();
        let known = self.neighbors.read();
        tables
            .uplinks()
            .filter_map(|u| {
                let hop = u.next_hop?;
                (!known.contains_key(&(u.port, hop)))
                    .then(|| (u.port, arp::request_frame(u.mac, u.ip.addr, hop)))
            })
            .collect()
    }

    /// The uplinks' learned neighbours: (uplink port, address, MAC).
    pub fn neighbors(&self) -> Vec<(PortId, Ipv4Addr, MacAddr)> {
        self.neighbors
            .read()
            .iter()
            .map(|((p, i), m)| (*p, *i, *m))
            .collect()
    }

    /// The NAT limits in force.
    pub fn nat_config(&self) -> NatConfig {
        self.tables.load().config().nat.clone()
    }
}

/// Keeps every endpoint's MAC as a static FDB entry on its port, and drops learned entries of
/// ports that are gone.
fn sync_static_macs(new: &Tables, old: Option<&Tables>) {
    for p in new.ports() {
        if let (Some(net), Some((mac, _))) = (p.network, p.endpoint) {
            if let (Some(n), PortMode::Access { vlan }) = (new.network(net), &p.mode) {
                n.fdb.add_static(*vlan, mac, p.config.id);
            }
        }
    }
    let Some(old) = old else { return };
    for p in old.ports() {
        let still = new
            .port(p.config.id)
            .is_some_and(|q| q.network == p.network && q.endpoint == p.endpoint);
        if still {
            continue;
        }
        let Some(n) = p.network.and_then(|id| new.network(id)) else {
            continue;
        };
        if let (Some((mac, _)), PortMode::Access { vlan }) = (p.endpoint, &p.mode) {
            n.fdb.remove_static(*vlan, mac);
        }
        n.fdb.flush_port(p.config.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::tests::*;

    #[test]
    fn reconfiguration_keeps_flows_and_learned_macs() {
        let s = S::new();
        let dp = Dataplane::new(&s.config).unwrap();
        let mut w = dp.worker();
        learn_next_hop(&mut w);
        let m1 = MacAddr([2, 1, 1, 1, 1, 1]);
        let f = eth(
            MacAddr([2, 2, 2, 2, 2, 2]),
            m1,
            0x0800,
            &udp(S::A, 1, S::B, 2, b"x"),
        );
        run_one(&mut w, TRUNK, &f, T0);
        let q = S::from_endpoint(S::A, &udp(S::A, 5353, S::REMOTE, 53, b"q"));
        let (_, out) = run_one(&mut w, PORT_A, &q, T0);
        let ext = tuple_of(&out).src_port;
        let mut c2 = s.config.clone();
        c2.forwards.clear();
        dp.apply(&c2).unwrap();
        let to_m1 = eth(m1, S::mac(S::A), 0x0800, &udp(S::A, 1, S::B, 2, b"x"));
        assert_eq!(
            run_one(&mut w, PORT_A, &to_m1, T0).0,
            Verdict::Forward(TRUNK)
        );
        let a = S::from_outside(&udp(S::REMOTE, 53, S::UP, ext, b"a"));
        assert_eq!(run_one(&mut w, UPLINK, &a, T0).0, Verdict::Forward(PORT_A));
        let syn = S::from_outside(&tcp(S::REMOTE, 50000, S::UP, 8080, SYN, b""));
        assert_eq!(
            run_one(&mut w, UPLINK, &syn, T0).0,
            Verdict::Drop(R::NoFlow)
        );
        let mut bad = c2.clone();
        bad.networks[1].subnet = "172.17.5.0/24".parse().unwrap();
        assert!(dp.apply(&bad).is_err());
        assert_eq!(dp.tables().config(), &c2);
    }

    #[test]
    fn housekeeping_expires_flows_and_frees_ports() {
        let s = S::new();
        let dp = Dataplane::new(&s.config).unwrap();
        let mut w = dp.worker();
        learn_next_hop(&mut w);
        let q = S::from_endpoint(S::A, &udp(S::A, 5353, S::REMOTE, 53, b"q"));
        run_one(&mut w, PORT_A, &q, T0);
        assert_eq!(dp.conntrack().len(), 1);
        assert_eq!(dp.housekeeping(T0.plus_secs(10)).1, 0);
        assert_eq!(dp.housekeeping(T0.plus_secs(31)).1, 1);
        assert_eq!(dp.conntrack().len(), 0);
    }
}
