//! The packet pipeline: every frame of a batch goes through ingress checks (port, VLAN,
//! anti-spoofing), the bridge (learning, forwarding, flooding) or the routed uplink, the gateway
//! (ARP, ICMP, routing) and NAPT / port forwarding, and ends with a verdict.
//!
//! Threading: `Dataplane` is shared by all workers. Its configuration is an immutable `Tables`
//! snapshot swapped atomically (`apply`); a worker loads it once per batch. Learned state is
//! shared: each network's FDB (read guard once per batch, new MACs applied under one write lock
//! at batch end), the conntrack table (one mutex guard per batch, taken only if the batch has
//! routed traffic, or looks like it has when staging) and the uplink's ARP cache (read guard
//! per batch, updates at batch end).
//! Nothing is allocated per frame.
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
//! tuple, so it is cached in the flow ([`Shortcut`], one per direction) under an epoch that
//! every table swap and every moved neighbour advances. Shortcuts serve plain packets only
//! (untagged TCP or UDP without IP options or fragmentation, see `plain`), arriving on an
//! endpoint or an uplink (whose routed path learns nothing). Staging reads a plain frame at
//! fixed offsets, checking its header checksum and TTL as it goes; a staged plain frame whose
//! flow holds a shortcut of the current epoch for its ingress port, and which carries the
//! Ethernet addresses that port's routed frames carry, is then checked only for its length
//! (its TCP flags still drive the flow's state) and rewritten at once.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use arrayvec::ArrayVec;
use hashbrown::HashMap;
use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard};

use crate::batch::{Batch, MAX_BATCH};
use crate::bridge::{FdbEntry, FdbReader, Learn, SourceCheck};
use crate::config::{Config, L4Proto, NatConfig, UplinkConfig};
use crate::counters::{DropReason, PortStats, WorkerCounters};
use crate::frame::{Frame, GsoType, NetworkId, PortId, Verdict};
use crate::gateway;
use crate::nat::{Conntrack, FlowInfo, Hit, NatAction, NatError, Probe, Shortcut, Timeouts, Tuple};
use crate::plain::{self, Plain};
use crate::tables::{ConfigError, NetworkEntry, PortEntry, PortMode, Tables};
use crate::time::Millis;
use crate::translate::{self, FlowOf, Ipv4Info, L4Kind};
use crate::wire::arp::ArpPacket;
use crate::wire::ethernet::{parse_l2, L2Header, ETHERTYPE_ARP, ETHERTYPE_IPV4};
use crate::wire::MacAddr;

use DropReason as R;

/// How many frames ahead of the one being handled the bridge prefetches the FDB line of.
const FDB_AHEAD: usize = 4;

/// FDB size from which that prefetch pays: below it the table stays in the CPU caches.
const FDB_PREFETCH_FROM: usize = 16 * 1024;

/// Most uplink neighbours remembered; beyond it new ones are not learned.
const MAX_NEIGHBORS: usize = 4096;

/// When a batch stages its conntrack lookups (and so may take shortcuts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Staging {
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

/// The state all workers share: configuration snapshot and learned tables.
#[derive(Debug)]
pub struct Dataplane {
    tables: ArcSwap<Tables>,
    apply_lock: Mutex<()>,
    conntrack: Mutex<Conntrack>,
    /// When batches stage their lookups.
    staging: Staging,
    neighbors: RwLock<HashMap<(PortId, Ipv4Addr), MacAddr>>,
    /// Advanced after every table swap and neighbour change: shortcuts of an older epoch are
    /// ignored. Starts at 1 (0 marks a flow direction without shortcut).
    epoch: AtomicU64,
    workers: Mutex<Vec<Arc<WorkerCounters>>>,
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
            staging: Staging::Adaptive,
            neighbors: RwLock::new(HashMap::new()),
            epoch: AtomicU64::new(1),
            workers: Mutex::new(Vec::new()),
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

    /// The configuration snapshot workers currently use.
    pub fn tables(&self) -> Arc<Tables> {
        self.tables.load_full()
    }

    /// A new worker context; its counters are registered for `counters()`.
    pub fn worker(self: &Arc<Self>) -> Worker {
        let counters = Arc::new(WorkerCounters::default());
        self.workers.lock().push(Arc::clone(&counters));
        Worker {
            dp: Arc::clone(self),
            counters,
            learn: ArrayVec::new(),
            arp_learn: ArrayVec::new(),
            staged_flows: vec![None; MAX_BATCH].into_boxed_slice(),
            staged_hits: vec![None; MAX_BATCH].into_boxed_slice(),
            routed: false,
        }
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
        (aged, expired)
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
                (!known.contains_key(&(u.port, hop))).then(|| (u.port, arp_request_frame(u, hop)))
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

    /// A snapshot of every counter, summed over workers: per port (traffic, drops by reason),
    /// per network (its ports' sums, FDB size), per drop reason, and the sizes of the learned
    /// tables. Cheap enough to call often: it does not walk the conntrack table, so the
    /// networks' `conntrack_flows` are left out (see [`stats_with_flows`](Self::stats_with_flows)).
    pub fn stats(&self) -> Stats {
        let workers = self.counters();
        let refs: Vec<&WorkerCounters> = workers.iter().map(Arc::as_ref).collect();
        let tables = self.tables.load();
        let ports: Vec<PortStatsRow> = tables
            .ports()
            .map(|p| {
                let id = p.config.id;
                PortStatsRow {
                    id,
                    name: p.config.name.clone(),
                    network: p.network,
                    stats: crate::counters::sum_port(&refs, id),
                    drops: drops_by_reason(|r| crate::counters::sum_port_drops(&refs, id, r)),
                }
            })
            .collect();
        let networks = tables
            .networks()
            .map(|n| {
                let mine = || ports.iter().filter(|p| p.network == Some(n.config.id));
                let traffic = mine().fold(PortStats::default(), |a, p| PortStats {
                    rx_packets: a.rx_packets + p.stats.rx_packets,
                    rx_bytes: a.rx_bytes + p.stats.rx_bytes,
                    tx_packets: a.tx_packets + p.stats.tx_packets,
                    tx_bytes: a.tx_bytes + p.stats.tx_bytes,
                });
                let drops = drops_by_reason(|r| {
                    mine()
                        .map(|p| p.drops.get(r.name()).copied().unwrap_or(0))
                        .sum()
                });
                NetworkStatsRow {
                    id: n.config.id,
                    name: n.config.name.clone(),
                    traffic,
                    drops,
                    fdb_entries: n.fdb.len(),
                    conntrack_flows: None,
                }
            })
            .collect();
        let drops = drops_by_reason(|r| crate::counters::sum_drops(&refs, r));
        let fdb_entries = tables
            .networks()
            .map(|n| (n.config.name.clone(), n.fdb.len()))
            .collect();
        Stats {
            ports,
            networks,
            drops,
            conntrack_flows: self.conntrack.lock().len(),
            fdb_entries,
            shortcuts: refs.iter().map(|w| w.shortcuts()).sum(),
        }
    }

    /// [`stats`](Self::stats) with each network's tracked flows counted, for `sluice stats`.
    /// Walks the conntrack table under its lock (O(flows), during which routed traffic waits):
    /// for an operator's request, not for periodic polling.
    pub fn stats_with_flows(&self) -> Stats {
        let mut stats = self.stats();
        let tables = self.tables.load();
        let mut per_net: HashMap<NetworkId, usize> = HashMap::new();
        let mut total = 0;
        {
            let ct = self.conntrack.lock();
            for f in ct.flows() {
                total += 1;
                if let Some(n) = flow_network(&tables, &f) {
                    *per_net.entry(n).or_default() += 1;
                }
            }
        }
        for n in &mut stats.networks {
            n.conntrack_flows = Some(per_net.get(&n.id).copied().unwrap_or(0));
        }
        stats.conntrack_flows = total;
        stats
    }

    /// Every tracked flow as `sluice conntrack ls` shows it, sorted by network then original
    /// tuple. Copies the flows under one conntrack lock (O(flows); routed traffic waits
    /// meanwhile).
    pub fn conntrack_entries(&self, now: Millis) -> Vec<ConntrackEntry> {
        let flows: Vec<FlowInfo> = self.conntrack.lock().flows().collect();
        let tables = self.tables.load();
        let mut out: Vec<ConntrackEntry> = flows
            .iter()
            .map(|f| ConntrackEntry {
                protocol: f.original.proto,
                original: FlowEnds::of(&f.original),
                reply: FlowEnds::of(&f.reply),
                state: f.state,
                replied: f.replied,
                expires_in_secs: f.expires.0.saturating_sub(now.0).div_ceil(1000),
                network: flow_network(&tables, f),
            })
            .collect();
        out.sort_unstable_by_key(|e| {
            let o = &e.original;
            (
                e.network,
                e.protocol,
                *o.src.ip(),
                o.src.port(),
                *o.dst.ip(),
                o.dst.port(),
            )
        });
        out
    }

    /// Every FDB entry of every network, as `sluice fdb ls` shows them, sorted by network,
    /// VLAN and MAC; ages as of `now`. Takes each network's FDB read lock once.
    pub fn fdb_entries(&self, now: Millis) -> Vec<NetworkFdbEntry> {
        let tables = self.tables.load();
        let mut out: Vec<NetworkFdbEntry> = tables
            .networks()
            .flat_map(|n| {
                let network = n.config.id;
                n.fdb
                    .entries(now)
                    .into_iter()
                    .map(move |entry| NetworkFdbEntry { network, entry })
            })
            .collect();
        out.sort_unstable_by_key(|e| (e.network, e.entry.vlan, e.entry.mac));
        out
    }

    /// The NAT limits in force.
    pub fn nat_config(&self) -> NatConfig {
        self.tables.load().config().nat.clone()
    }
}

/// Drops by reason name, reasons with none left out.
pub type DropsByReason = BTreeMap<&'static str, u64>;

fn drops_by_reason(count: impl Fn(DropReason) -> u64) -> DropsByReason {
    DropReason::ALL
        .iter()
        .map(|r| (r.name(), count(*r)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// The network a flow belongs to, for listings: that of its endpoint, which is the original
/// source (outbound, hairpin) or the translated destination (published port).
fn flow_network(tables: &Tables, f: &FlowInfo) -> Option<NetworkId> {
    tables
        .network_of(f.original.src)
        .or_else(|| tables.network_of(f.reply.src))
        .map(|n| n.config.id)
}

/// One port's counters in a `Stats` snapshot.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PortStatsRow {
    /// The port.
    pub id: PortId,
    /// Its interface name.
    pub name: String,
    /// Its bridge domain (none for the uplink), to group ports by network.
    pub network: Option<NetworkId>,
    /// Its counters.
    #[serde(flatten)]
    pub stats: PortStats,
    /// Frames dropped that arrived on this port, or could not leave by it, by reason.
    pub drops: DropsByReason,
}

/// One network's counters in a `Stats` snapshot: what its ports saw, and its learned state.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NetworkStatsRow {
    /// The network.
    pub id: NetworkId,
    /// Its name.
    pub name: String,
    /// Its ports' traffic, summed.
    #[serde(flatten)]
    pub traffic: PortStats,
    /// Its ports' drops by reason, summed.
    pub drops: DropsByReason,
    /// Entries in its FDB (static and learned).
    pub fdb_entries: usize,
    /// Tracked flows of its endpoints; only counted by `Dataplane::stats_with_flows`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conntrack_flows: Option<usize>,
}

/// Both ends of a flow tuple (ICMP echo: the echo id in place of both ports).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FlowEnds {
    /// Source address and port.
    pub src: SocketAddrV4,
    /// Destination address and port.
    pub dst: SocketAddrV4,
}

impl FlowEnds {
    fn of(t: &Tuple) -> FlowEnds {
        FlowEnds {
            src: SocketAddrV4::new(t.src, t.src_port),
            dst: SocketAddrV4::new(t.dst, t.dst_port),
        }
    }
}

/// One tracked NAPT flow as `sluice conntrack ls` shows it (like a line of `conntrack -L`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ConntrackEntry {
    /// Transport protocol.
    pub protocol: L4Proto,
    /// The tuple of the flow's first packet, as it arrived.
    pub original: FlowEnds,
    /// The tuple replies arrive with (the translated tuple reversed): shows the NAT mapping.
    pub reply: FlowEnds,
    /// TCP state name (e.g. ESTABLISHED), or UNREPLIED/REPLIED for UDP and ICMP.
    pub state: &'static str,
    /// A packet was seen in the reply direction.
    pub replied: bool,
    /// Seconds until the flow expires unless traffic refreshes it (rounded up).
    pub expires_in_secs: u64,
    /// The network of the flow's endpoint (none if its network is gone).
    pub network: Option<NetworkId>,
}

/// One FDB entry with its network, as `sluice fdb ls` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NetworkFdbEntry {
    /// The network (bridge domain) whose FDB holds it.
    pub network: NetworkId,
    /// VLAN, MAC, port, static or learned, idle seconds.
    #[serde(flatten)]
    pub entry: FdbEntry,
}

/// Every counter of the dataplane at one moment, for `sluice stats` and the stats file.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Stats {
    /// Per port.
    pub ports: Vec<PortStatsRow>,
    /// Per network.
    pub networks: Vec<NetworkStatsRow>,
    /// Drops by reason (reasons with none are left out).
    pub drops: DropsByReason,
    /// Tracked NAPT flows.
    pub conntrack_flows: usize,
    /// FDB entries per network.
    pub fdb_entries: BTreeMap<String, usize>,
    /// Frames that took a flow's shortcut (the fast path), of all workers.
    pub shortcuts: u64,
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
}

impl Worker {
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
            let wanted = match self.dp.staging {
                Staging::Adaptive => self.routed,
                #[cfg(test)]
                Staging::Always => true,
                #[cfg(test)]
                Staging::Never => false,
            };
            let (ct, staged) = stage(
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
                neigh: None,
                learn: &mut self.learn,
                arp_learn: &mut self.arp_learn,
                staged_flows: &self.staged_flows[..staged],
                staged_hits: &self.staged_hits[..staged],
                cur: 0,
                epoch,
                routed: false,
            };
            let frames = batch.frames_mut();
            for i in 0..frames.len() {
                if let Some(ahead) = frames.get(i + FDB_AHEAD) {
                    st.prefetch_fdb(ahead);
                }
                let f = &mut frames[i];
                st.cur = i;
                self.counters.rx(f.meta.ingress, f.len());
                let v = match st.shortcut(f) {
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

/// Per-batch state: the snapshot, and the guards taken at most once per batch.
struct BatchState<'t> {
    t: &'t Tables,
    dp: &'t Dataplane,
    counters: &'t WorkerCounters,
    now: Millis,
    fdb: Option<(NetworkId, FdbReader<'t>)>,
    ct: Option<MutexGuard<'t, Conntrack>>,
    neigh: Option<RwLockReadGuard<'t, HashMap<(PortId, Ipv4Addr), MacAddr>>>,
    learn: &'t mut ArrayVec<(NetworkId, Learn), MAX_BATCH>,
    arp_learn: &'t mut ArrayVec<((PortId, Ipv4Addr), MacAddr), MAX_BATCH>,
    /// Per frame: the IPv4 header and flow of the staged tuple.
    staged_flows: &'t [Option<Staged>],
    /// Per frame: the staged lookup's result.
    staged_hits: &'t [Option<Hit>],
    /// Index of the frame being handled.
    cur: usize,
    /// The dataplane's epoch (low 32 bits) when the batch started: shortcuts of it are valid.
    epoch: u32,
    /// Some frame of the batch reached NAT (decides whether the next batch stages).
    routed: bool,
}

/// The staging pre-pass (when `wanted`): looks up at once the tuples of the frames that will
/// probably be routed, into `flows` and `hits` (one entry per frame). Returns the
/// conntrack guard (taken only then) and how many frames have a staged entry (0 when nothing
/// was staged).
fn stage<'d>(
    dp: &'d Dataplane,
    wanted: bool,
    tables: &Tables,
    batch: &Batch<'_>,
    flows: &mut [Option<Staged>],
    hits: &mut [Option<Hit>],
) -> (Option<MutexGuard<'d, Conntrack>>, usize) {
    if !wanted {
        return (None, 0);
    }
    let frames = batch.frames();
    let n = frames.len().min(flows.len()).min(hits.len());
    let mut any = false;
    // The frames of a batch mostly come from one port: its rule is looked up once per run.
    let mut port: Option<(PortId, Option<RoutedFrom>)> = None;
    for (flow, f) in flows.iter_mut().zip(&frames[..n]) {
        let ingress = f.meta.ingress;
        let from = match port {
            Some((p, from)) if p == ingress => from,
            _ => {
                let from = RoutedFrom::of(tables, ingress);
                port = Some((ingress, from));
                from
            }
        };
        *flow = from.and_then(|from| staged(&from, f));
        any |= flow.is_some();
    }
    if !any {
        return (None, 0);
    }
    let ct = dp.conntrack.lock();
    let flows = &flows[..n];
    ct.lookup_batch(|i| flows[i].as_ref().map(|s| &s.probe), &mut hits[..n]);
    (Some(ct), n)
}

/// What NAT will probably look frame `f` (from a port whose routed frames `from` describes)
/// up by: the flow of an IPv4 packet (not an ICMP error) sent to the port's routed MAC. Cheap
/// checks only (the header checksum only of a plain packet): a wrong guess costs a wasted
/// lookup, never a wrong result, since a staged hit is used only for the very tuple it was
/// staged for.
#[inline(always)]
fn staged(from: &RoutedFrom, f: &Frame<'_>) -> Option<Staged> {
    let d = f.data();
    if let Some(p) = plain::parse(d) {
        let (dst, src) = macs(d)?;
        if dst != from.ours {
            return None;
        }
        return Some(Staged {
            probe: Probe::new(&p.tuple),
            plain: (p.ttl > 1 && from.shortcut_from(src)).then_some(p),
        });
    }
    let l2 = parse_l2(d).ok()?;
    if l2.ethertype != ETHERTYPE_IPV4 || l2.dst != from.ours {
        return None;
    }
    let ip = translate::parse_ipv4_unverified(d, l2.l3_offset).ok()?;
    let flow = translate::flow_of(d, &ip).ok()?;
    (flow.kind != L4Kind::Error).then(|| Staged {
        probe: Probe::new(&flow.tuple),
        plain: None,
    })
}

/// A frame's destination and source MAC addresses.
#[inline(always)]
fn macs(d: &[u8]) -> Option<(MacAddr, MacAddr)> {
    let (dst, rest) = d.split_first_chunk::<6>()?;
    Some((MacAddr(*dst), MacAddr(*rest.first_chunk::<6>()?)))
}

/// Which source MACs a shortcut may serve on a port.
#[derive(Clone, Copy, Debug)]
enum ShortcutSource {
    /// Any: an uplink.
    Any,
    /// Only the endpoint's own.
    Only(MacAddr),
    /// None: a port of a network that is no endpoint (its frames feed learning).
    Never,
}

/// How the frames the full path routes from one port look, and which of them a shortcut may
/// serve.
#[derive(Clone, Copy, Debug)]
struct RoutedFrom {
    /// Their destination MAC: the port's network's gateway MAC, or the uplink's.
    ours: MacAddr,
    /// The source MACs a shortcut may serve.
    source: ShortcutSource,
}

impl RoutedFrom {
    /// The rule of port `ingress` (`None` for an unknown port or one with no routed frames).
    fn of(t: &Tables, ingress: PortId) -> Option<RoutedFrom> {
        let port = t.port(ingress)?;
        Some(match (port.network, port.endpoint) {
            (Some(net), endpoint) => RoutedFrom {
                ours: t.network(net)?.config.gateway_mac,
                source: endpoint
                    .map_or(ShortcutSource::Never, |(mac, _)| ShortcutSource::Only(mac)),
            },
            (None, _) => RoutedFrom {
                ours: t.uplink_on(ingress)?.mac,
                source: ShortcutSource::Any,
            },
        })
    }

    /// True when a shortcut may serve this port's routed frames sent from `src`.
    fn shortcut_from(&self, src: MacAddr) -> bool {
        match self.source {
            ShortcutSource::Any => true,
            ShortcutSource::Only(mac) => mac == src,
            ShortcutSource::Never => false,
        }
    }
}

/// What the staging pre-pass read from a frame that looks routed.
#[derive(Clone, Copy, Debug)]
struct Staged {
    /// The tuple it is looked up by.
    probe: Probe,
    /// Set when a shortcut may serve it: a plain packet (see `plain`) with a TTL above 1,
    /// from a source MAC its port's shortcuts serve.
    plain: Option<Plain>,
}

/// True for the packets whose decision a shortcut may cache: untagged TCP or UDP without IPv4
/// options (later packets of the flow are served only when plain).
fn shortcut_shape(ip: &Ipv4Info, flow: &FlowOf) -> bool {
    ip.l3 == 14 && ip.hl == 20 && matches!(flow.kind, L4Kind::Tcp | L4Kind::Udp)
}

/// A resolved next hop: send to `dst_mac` from `src_mac` on `port`, leaving with `vlan`.
#[derive(Clone, Copy)]
struct Adjacency {
    port: PortId,
    dst_mac: MacAddr,
    src_mac: MacAddr,
    vlan: u16,
}

/// Where a routed packet goes: a known MAC on a port, or an uplink next hop still to resolve.
enum NextHop<'t> {
    /// Resolved.
    Known(Adjacency),
    /// Ask `hop`'s MAC on uplink `up` (the packet itself is lost).
    Unresolved { up: &'t UplinkConfig, hop: Ipv4Addr },
}

fn eth_rewrite(d: &mut [u8], dst: MacAddr, src: MacAddr) {
    d[0..6].copy_from_slice(&dst.0);
    d[6..12].copy_from_slice(&src.0);
}

/// Checks that an endpoint's IPv4 or ARP frame carries its own address (or 0.0.0.0 in ARP
/// probes). For a frame to the gateway (`routed`) it returns the parsed IPv4 header (checksum
/// not verified yet), so routing does not parse it again; a bridged frame passes unchanged, so
/// only its version, header length and source address are read.
fn check_source_ip(
    d: &[u8],
    l2: &L2Header,
    mac: MacAddr,
    ip: Option<Ipv4Addr>,
    routed: bool,
) -> Result<Option<Ipv4Info>, DropReason> {
    let payload = d.get(l2.l3_offset..).ok_or(R::Malformed)?;
    match l2.ethertype {
        ETHERTYPE_IPV4 if routed => {
            let parsed = translate::parse_ipv4_unverified(d, l2.l3_offset)?;
            match ip {
                Some(own) if own == parsed.src => Ok(Some(parsed)),
                _ => Err(R::SpoofedIp),
            }
        }
        ETHERTYPE_IPV4 => match payload {
            [vihl, _, _, _, _, _, _, _, _, _, _, _, a, b, c, e, ..]
                if vihl >> 4 == 4 && usize::from(vihl & 0x0f) * 4 >= 20 =>
            {
                if Some(Ipv4Addr::new(*a, *b, *c, *e)) == ip {
                    Ok(None)
                } else {
                    Err(R::SpoofedIp)
                }
            }
            _ => Err(R::Malformed),
        },
        ETHERTYPE_ARP => {
            let arp = ArpPacket::new_checked(payload).map_err(|_| R::Malformed)?;
            if arp.sender_mac() != mac {
                return Err(R::SpoofedMac);
            }
            let s = arp.sender_ip();
            if s.is_unspecified() || Some(s) == ip {
                Ok(None)
            } else {
                Err(R::SpoofedIp)
            }
        }
        _ => Ok(None),
    }
}

impl<'t> BatchState<'t> {
    /// The fast path: a frame that staging found plain (header checksum, TTL and Ethernet
    /// addresses checked there) and whose staged lookup hit a flow holding a shortcut of this
    /// epoch for its ingress port is checked for its length and rewritten as the flow's
    /// earlier packets were. `None` sends it down the full path, which checks everything again
    /// (and drops, or answers with ICMP, what fails here).
    #[inline(always)]
    fn shortcut(&mut self, f: &mut Frame<'_>) -> Option<Verdict> {
        let (i, hits, flows) = (self.cur, self.staged_hits, self.staged_flows);
        let hit = hits.get(i)?.as_ref()?;
        let p = flows.get(i)?.as_ref()?.plain?;
        let (epoch, ingress) = (self.epoch, f.meta.ingress);
        let gso = f.meta.offload.gso != GsoType::None;
        let s = self
            .ct
            .as_mut()?
            .follow_shortcut(hit, p.tcp_flags, self.now, |s| {
                s.epoch == epoch && epoch != 0 && s.ingress == ingress && (gso || p.total <= s.mtu)
            })?;
        let partial = f.meta.offload.csum_partial;
        let d = f.data_mut();
        plain::rewrite(d, &hit.rewrite, partial);
        d[..12].copy_from_slice(&s.l2_out);
        f.meta.vlan = s.vlan;
        self.routed = true;
        Some(Verdict::Forward(s.egress))
    }

    /// Prefetches the FDB line a bridged frame `f` (further on in the batch) will look its
    /// destination up in, when its network's FDB guard is the one held and the table is large.
    /// A guess from the raw header: a wrong one costs a wasted prefetch, never a wrong result.
    #[inline(always)]
    fn prefetch_fdb(&self, f: &Frame<'_>) {
        let Some((held, fdb)) = &self.fdb else {
            return;
        };
        if fdb.len() < FDB_PREFETCH_FROM {
            return;
        }
        let d = f.data();
        let Some(port) = self.t.port(f.meta.ingress) else {
            return;
        };
        if port.network != Some(*held) || d.len() < 18 || d[0] & 1 != 0 {
            return;
        }
        let tag = (u16::from_be_bytes([d[12], d[13]]) == crate::wire::ethernet::ETHERTYPE_VLAN)
            .then(|| u16::from_be_bytes([d[14], d[15]]) & 0x0fff);
        if let Some(vlan) = port.ingress_vlan(tag) {
            let mut dst = [0u8; 6];
            dst.copy_from_slice(&d[..6]);
            fdb.prefetch(vlan, MacAddr(dst));
        }
    }

    fn handle(&mut self, f: &mut Frame<'_>) -> Verdict {
        let t = self.t;
        let Some(port) = t.port(f.meta.ingress) else {
            return Verdict::Drop(R::UnknownPort);
        };
        let Ok(l2) = parse_l2(f.data()) else {
            return Verdict::Drop(R::Malformed);
        };
        let Some(vlan) = port.ingress_vlan(l2.vlan.map(|v| v.vid)) else {
            return Verdict::Drop(R::VlanNotAllowed);
        };
        f.meta.vlan = vlan;
        let v = match port.network {
            Some(net) => self.bridge_in(f, &l2, port, net),
            None => self.uplink_in(f, &l2),
        };
        v.unwrap_or_else(Verdict::Drop)
    }

    fn fdb(&mut self, id: NetworkId, net: &'t NetworkEntry) -> &FdbReader<'t> {
        if self.fdb.as_ref().map(|(n, _)| *n) != Some(id) {
            // Release the other network's guard before taking this one's.
            self.fdb = None;
        }
        &self.fdb.get_or_insert_with(|| (id, net.fdb.read())).1
    }

    fn ct(&mut self) -> &mut Conntrack {
        let dp = self.dp;
        self.ct.get_or_insert_with(|| dp.conntrack.lock())
    }

    /// The conntrack lookup of `key` for the current frame, from the staged lookups when this
    /// frame staged `key` and it hit. A staged hit stays right for the whole batch: flows are
    /// only removed under the conntrack lock, which the batch holds from staging on. A staged
    /// miss is looked up again, as an earlier frame of the batch may have created the flow.
    #[inline(always)]
    fn lookup(&mut self, key: &Tuple) -> Option<Hit> {
        let i = self.cur;
        if let (Some(Some(staged)), Some(Some(hit))) =
            (self.staged_flows.get(i), self.staged_hits.get(i))
        {
            if staged.probe.is_for(key) {
                return Some(*hit);
            }
        }
        self.ct().lookup(key)
    }

    fn neighbor(&mut self, port: PortId, ip: Ipv4Addr) -> Option<MacAddr> {
        let dp = self.dp;
        self.neigh
            // Recursive for the same reason as the FDB's batch guard (`Fdb::read`).
            .get_or_insert_with(|| dp.neighbors.read_recursive())
            .get(&(port, ip))
            .copied()
    }

    fn bridge_in(
        &mut self,
        f: &mut Frame<'_>,
        l2: &L2Header,
        port: &'t PortEntry,
        net_id: NetworkId,
    ) -> Result<Verdict, DropReason> {
        let t = self.t;
        let net = t.network(net_id).ok_or(R::UnknownPort)?;
        if l2.src.is_multicast() {
            return Err(R::Malformed);
        }
        let mut parsed = None;
        if let Some((mac, ip)) = port.endpoint {
            if l2.src != mac {
                return Err(R::SpoofedMac);
            }
            let routed = l2.dst == net.config.gateway_mac;
            parsed = check_source_ip(f.data(), l2, mac, ip, routed)?;
        }
        let (vlan, ingress, now) = (f.meta.vlan, f.meta.ingress, self.now);
        // An endpoint's source MAC was just checked to be its own, which is a static FDB entry
        // on this port (never aged): learning could only answer `Known`, so it is skipped.
        let check = if port.endpoint.is_some() {
            SourceCheck::Known
        } else {
            self.fdb(net_id, net)
                .check_source(vlan, l2.src, ingress, now)
        };
        match check {
            SourceCheck::Known => {}
            SourceCheck::Learn => {
                let item = Learn {
                    vlan,
                    mac: l2.src,
                    port: ingress,
                };
                let _ = self.learn.try_push((net_id, item));
            }
            SourceCheck::Full => return Err(R::FdbFull),
            SourceCheck::StaticElsewhere => return Err(R::SpoofedMac),
            SourceCheck::Group => return Err(R::Malformed),
        }
        let cfg = &net.config;
        if vlan == cfg.vlan && !cfg.external_gateway {
            if l2.dst == cfg.gateway_mac {
                return self.gateway_in(f, l2, net, port, parsed);
            }
            if l2.dst.is_broadcast() && l2.ethertype == ETHERTYPE_ARP {
                if let Some(v) = arp_for(f, l2, cfg.gateway_mac, cfg.gateway)? {
                    return Ok(v);
                }
            }
        }
        if l2.dst.is_multicast() {
            return Ok(Verdict::Flood {
                network: net_id,
                vlan,
            });
        }
        match self.fdb(net_id, net).lookup(vlan, l2.dst) {
            Some(p) if p == ingress => {
                if cfg.hairpin {
                    Ok(Verdict::Forward(p))
                } else {
                    Err(R::Hairpin)
                }
            }
            Some(p) => {
                let both_endpoints =
                    port.is_endpoint() && t.port(p).is_some_and(PortEntry::is_endpoint);
                if !cfg.icc && both_endpoints {
                    Err(R::IccDenied)
                } else {
                    Ok(Verdict::Forward(p))
                }
            }
            None => Ok(Verdict::Flood {
                network: net_id,
                vlan,
            }),
        }
    }

    /// A frame addressed to a network's gateway MAC: ARP, ping of the gateway, or routing.
    fn gateway_in(
        &mut self,
        f: &mut Frame<'_>,
        l2: &L2Header,
        net: &'t NetworkEntry,
        port: &'t PortEntry,
        parsed: Option<Ipv4Info>,
    ) -> Result<Verdict, DropReason> {
        let cfg = &net.config;
        match l2.ethertype {
            ETHERTYPE_IPV4 => {}
            ETHERTYPE_ARP => {
                return arp_for(f, l2, cfg.gateway_mac, cfg.gateway)?.ok_or(R::NotForUs);
            }
            _ => return Err(R::Unsupported),
        }
        let ip = match parsed {
            Some(ip) if translate::header_checksum_ok(f.data(), &ip) => ip,
            Some(_) => return Err(R::Malformed),
            None => translate::parse_ipv4(f.data(), l2.l3_offset)?,
        };
        let ingress = f.meta.ingress;
        let t = self.t;
        let flow = translate::flow_of(f.data(), &ip);
        if ip.dst == cfg.gateway {
            if let Ok(FlowOf {
                kind: L4Kind::Echo(true),
                ..
            }) = flow
            {
                gateway::echo_reply(f.data_mut(), ip.l3, cfg.gateway_mac)
                    .map_err(|_| R::Malformed)?;
                return Ok(Verdict::Forward(ingress));
            }
            // Replies of hairpinned flows come back to the gateway address.
            let flow = flow?;
            return match self.lookup(&flow.tuple) {
                Some(_) => self.translate_and_route(f, &ip, &flow, None, u16::MAX),
                None => Err(R::NotForUs),
            };
        }
        if cfg.subnet.contains(ip.dst) {
            if !cfg.icc {
                return Err(R::IccDenied);
            }
            return self.route(f, ip.l3, ip.dst, ip.ttl);
        }
        if t.network_of(ip.dst).is_some() {
            return Err(R::Isolated);
        }
        let up = t.uplink_of(cfg).ok_or(R::NoRoute)?;
        let flow = flow?;
        let published = t.published(flow.tuple.proto, ip.dst, flow.tuple.dst_port);
        let action = match published {
            Some(target) => {
                let gw = t.network(target.network).ok_or(R::NoRoute)?.config.gateway;
                NatAction {
                    snat: Some(gw),
                    dnat: Some((target.ip, target.port)),
                }
            }
            None if cfg.internal => return Err(R::NoRoute),
            None => NatAction {
                snat: Some(up.ip.addr),
                dnat: None,
            },
        };
        if ip.ttl <= 1 {
            return self.icmp_back(f, &ip, cfg.gateway_mac, cfg.gateway, port, R::TtlExceeded);
        }
        if published.is_none()
            && f.meta.offload.gso == GsoType::None
            && ip.total > usize::from(up.mtu)
        {
            if ip.df {
                return self.icmp_back(f, &ip, cfg.gateway_mac, cfg.gateway, port, R::TooBig);
            }
            return Err(R::TooBig);
        }
        // The largest packet routed without the too-big path just above.
        let mtu = if published.is_none() {
            up.mtu
        } else {
            u16::MAX
        };
        self.translate_and_route(f, &ip, &flow, Some(action), mtu)
    }

    /// Answers the sender with an ICMP error instead of forwarding, counting `reason`.
    fn icmp_back(
        &mut self,
        f: &mut Frame<'_>,
        ip: &Ipv4Info,
        mac: MacAddr,
        from: Ipv4Addr,
        port: &PortEntry,
        reason: DropReason,
    ) -> Result<Verdict, DropReason> {
        let (ty, code, rest) = match reason {
            R::TooBig => (
                gateway::ICMP_DEST_UNREACHABLE,
                gateway::ICMP_FRAG_NEEDED,
                port.network
                    .and_then(|n| self.t.network(n))
                    .and_then(|n| self.t.uplink_of(&n.config))
                    .map_or(1500, |u| u32::from(u.mtu)),
            ),
            _ => (gateway::ICMP_TIME_EXCEEDED, 0, 0),
        };
        // Never answer an ICMP error with another.
        if ip.proto == 1
            && matches!(
                translate::flow_of(f.data(), ip),
                Ok(FlowOf {
                    kind: L4Kind::Error,
                    ..
                })
            )
        {
            return Err(reason);
        }
        gateway::icmp_error(f, ip.l3, mac, from, ty, code, rest).map_err(|_| reason)?;
        // The packet itself was dropped; what leaves is the error sent in its place.
        self.counters.drop_n(f.meta.ingress, reason, 1);
        Ok(Verdict::Forward(port.config.id))
    }

    /// Looks up or creates the flow, rewrites the packet and routes it to its new destination.
    /// `mtu` is the largest total length the caller let through without the too-big path
    /// (`u16::MAX`: it checked none), which a shortcut must check in its place.
    fn translate_and_route(
        &mut self,
        f: &mut Frame<'_>,
        ip: &Ipv4Info,
        flow: &FlowOf,
        create: Option<NatAction>,
        mtu: u16,
    ) -> Result<Verdict, DropReason> {
        let now = self.now;
        self.routed = true;
        // An ICMP error quotes a packet of the flow as it was sent: look up its reverse.
        let key = if flow.kind == L4Kind::Error {
            flow.tuple.reversed()
        } else {
            flow.tuple
        };
        let hit = match self.lookup(&key) {
            Some(h) => h,
            None => {
                let action = create.ok_or(R::NoFlow)?;
                if matches!(flow.kind, L4Kind::Error | L4Kind::Echo(false)) {
                    return Err(R::NoFlow);
                }
                self.ct()
                    .create(&flow.tuple, action, now)
                    .map_err(|e| match e {
                        NatError::TableFull => R::ConntrackFull,
                        NatError::PortsExhausted => R::NatPortsExhausted,
                        NatError::Exists => R::NoFlow,
                        NatError::Clash => R::NatPortsExhausted,
                    })?
            }
        };
        if flow.kind != L4Kind::Error {
            self.ct().update(hit.flow, hit.dir, flow.tcp_flags, now);
        }
        let new = if flow.kind == L4Kind::Error {
            hit.rewrite.reversed()
        } else {
            hit.rewrite
        };
        let partial = f.meta.offload.csum_partial;
        translate::rewrite(f.data_mut(), ip, flow, &new, partial);
        let dst = if flow.kind == L4Kind::Error {
            new.src
        } else {
            new.dst
        };
        if ip.ttl <= 1 {
            return Err(R::TtlExceeded);
        }
        let next = self.next_hop(f.data(), ip.l3, dst)?;
        if let NextHop::Known(adj) = next {
            self.remember(f, ip, flow, &hit, mtu, &adj);
        }
        self.send(f, ip.l3, next)
    }

    /// Caches the decision just taken for `hit`'s direction when later packets can reuse it
    /// (see the module's "Shortcuts"): the frame arrived on an endpoint or an uplink, with the
    /// Ethernet addresses a shortcut checks (`RoutedFrom`).
    fn remember(
        &mut self,
        f: &Frame<'_>,
        ip: &Ipv4Info,
        flow: &FlowOf,
        hit: &Hit,
        mtu: u16,
        adj: &Adjacency,
    ) {
        let ingress = f.meta.ingress;
        let Ok(l2) = parse_l2(f.data()) else {
            return;
        };
        let allowed = RoutedFrom::of(self.t, ingress)
            .is_some_and(|from| from.ours == l2.dst && from.shortcut_from(l2.src));
        if self.epoch == 0 || !shortcut_shape(ip, flow) || !allowed {
            return;
        }
        let mut l2_out = [0u8; 12];
        l2_out[..6].copy_from_slice(&adj.dst_mac.0);
        l2_out[6..].copy_from_slice(&adj.src_mac.0);
        let epoch = self.epoch;
        self.ct().set_shortcut(
            hit,
            Shortcut {
                epoch,
                ingress,
                egress: adj.port,
                vlan: adj.vlan,
                mtu,
                l2_out,
            },
        );
    }

    /// Sends a routed IPv4 packet towards `dst`: to an endpoint of a network, or out of the
    /// uplink to `dst` or the next hop. Decrements the TTL and rewrites the Ethernet header.
    fn route(
        &mut self,
        f: &mut Frame<'_>,
        l3: usize,
        dst: Ipv4Addr,
        ttl: u8,
    ) -> Result<Verdict, DropReason> {
        if ttl <= 1 {
            return Err(R::TtlExceeded);
        }
        let next = self.next_hop(f.data(), l3, dst)?;
        self.send(f, l3, next)
    }

    /// Where a routed IPv4 packet (header at `l3`, source already translated) to `dst` goes: to
    /// an endpoint of a network, or out of the uplink to `dst` or the next hop.
    fn next_hop(&mut self, d: &[u8], l3: usize, dst: Ipv4Addr) -> Result<NextHop<'t>, DropReason> {
        let t = self.t;
        if let Some(net) = t.network_of(dst) {
            let (mac, port) = *net.neighbors.get(&dst).ok_or(R::NoRoute)?;
            let entry = t.port(port).ok_or(R::UnknownPort)?;
            let vlan = match entry.mode {
                PortMode::Access { vlan } => vlan,
                _ => net.config.vlan,
            };
            return Ok(NextHop::Known(Adjacency {
                port,
                dst_mac: mac,
                src_mac: net.config.gateway_mac,
                vlan,
            }));
        }
        // Routed out through the uplink whose address the (translated) source is: each
        // network's NAPT uses its own uplink's address.
        let src = d
            .get(l3 + 12..l3 + 16)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(Ipv4Addr::from)
            .ok_or(R::Malformed)?;
        let up: &'t UplinkConfig = t
            .uplink_with_ip(src)
            .or_else(|| t.uplink())
            .ok_or(R::NoRoute)?;
        let hop = if up.ip.contains(dst) {
            dst
        } else {
            up.next_hop.ok_or(R::NoRoute)?
        };
        Ok(match self.neighbor(up.port, hop) {
            Some(mac) => NextHop::Known(Adjacency {
                port: up.port,
                dst_mac: mac,
                src_mac: up.mac,
                vlan: 0,
            }),
            None => NextHop::Unresolved { up, hop },
        })
    }

    /// Sends a routed packet to `next`: TTL decremented, ingress tag removed, Ethernet header
    /// rewritten; or, while the next hop is unresolved, an ARP request in its place.
    fn send(
        &mut self,
        f: &mut Frame<'_>,
        l3: usize,
        next: NextHop<'t>,
    ) -> Result<Verdict, DropReason> {
        match next {
            NextHop::Known(adj) => {
                f.meta.vlan = adj.vlan;
                translate::decrement_ttl(f.data_mut(), l3);
                self.strip_tag(f, l3)?;
                eth_rewrite(f.data_mut(), adj.dst_mac, adj.src_mac);
                Ok(Verdict::Forward(adj.port))
            }
            NextHop::Unresolved { up, hop } => {
                f.meta.vlan = 0;
                gateway::arp_request(f, up.mac, up.ip.addr, hop).map_err(|_| R::ArpPending)?;
                // The packet is lost (as in any host stack); the ARP request leaves instead.
                self.counters.drop_n(f.meta.ingress, R::ArpPending, 1);
                Ok(Verdict::Forward(up.port))
            }
        }
    }

    /// Routed frames leave without the ingress 802.1Q tag: move the Ethernet addresses up to
    /// the IP header so the frame is untagged; egress tags it again for its port.
    fn strip_tag(&mut self, f: &mut Frame<'_>, l3: usize) -> Result<(), DropReason> {
        if l3 == 14 {
            return Ok(());
        }
        let d = f.data_mut();
        d.copy_within(0..12, l3 - 14);
        d[l3 - 2..l3].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        f.pull_front(l3 - 14);
        let off = &mut f.meta.offload;
        if off.csum_partial || off.gso != GsoType::None {
            let delta = (l3 - 14) as u16;
            off.csum_start = off.csum_start.saturating_sub(delta);
            off.hdr_len = off.hdr_len.saturating_sub(delta);
        }
        Ok(())
    }

    /// A frame from the outside: ARP for the uplink address, ping of it, replies of NAPT flows
    /// and new connections to published ports.
    fn uplink_in(&mut self, f: &mut Frame<'_>, l2: &L2Header) -> Result<Verdict, DropReason> {
        let t = self.t;
        let up = t.uplink_on(f.meta.ingress).ok_or(R::UnknownPort)?;
        if l2.ethertype == ETHERTYPE_ARP {
            let arp = ArpPacket::new_checked(f.data().get(l2.l3_offset..).ok_or(R::Malformed)?)
                .map_err(|_| R::Malformed)?;
            let (sip, smac) = (arp.sender_ip(), arp.sender_mac());
            if up.ip.contains(sip) && !sip.is_unspecified() && !smac.is_multicast() {
                let _ = self.arp_learn.try_push(((up.port, sip), smac));
            }
            return Ok(arp_for(f, l2, up.mac, up.ip.addr)?.unwrap_or(Verdict::Consumed));
        }
        if l2.dst != up.mac && !l2.dst.is_multicast() {
            return Err(R::NotForUs);
        }
        if l2.ethertype != ETHERTYPE_IPV4 {
            return Err(R::Unsupported);
        }
        let ip = translate::parse_ipv4(f.data(), l2.l3_offset)?;
        if ip.dst != up.ip.addr {
            return Err(R::NotForUs);
        }
        let flow = translate::flow_of(f.data(), &ip)?;
        if flow.kind == L4Kind::Echo(true) && self.lookup(&flow.tuple).is_none() {
            gateway::echo_reply(f.data_mut(), ip.l3, up.mac).map_err(|_| R::Malformed)?;
            return Ok(Verdict::Forward(up.port));
        }
        let action = match flow.kind {
            L4Kind::Tcp | L4Kind::Udp => t
                .published(flow.tuple.proto, ip.dst, flow.tuple.dst_port)
                .map(|target| NatAction {
                    snat: None,
                    dnat: Some((target.ip, target.port)),
                }),
            _ => None,
        };
        self.translate_and_route(f, &ip, &flow, action, u16::MAX)
    }
}

/// A broadcast ARP request from uplink `u` for `target` (60 bytes: the Ethernet minimum).
fn arp_request_frame(u: &UplinkConfig, target: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&MacAddr::BROADCAST.0);
    f.extend_from_slice(&u.mac.0);
    f.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&u.mac.0);
    f.extend_from_slice(&u.ip.addr.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f.resize(60, 0);
    f
}

/// Answers an ARP request for `ip` with `mac` in place; `None` when it is not such a request.
fn arp_for(
    f: &mut Frame<'_>,
    l2: &L2Header,
    mac: MacAddr,
    ip: Ipv4Addr,
) -> Result<Option<Verdict>, DropReason> {
    let l3 = l2.l3_offset;
    let arp = ArpPacket::new_checked(f.data().get(l3..).ok_or(R::Malformed)?)
        .map_err(|_| R::Malformed)?;
    if arp.operation() != 1 || arp.target_ip() != ip {
        return Ok(None);
    }
    gateway::arp_reply(f.data_mut(), l3, mac, ip).map_err(|_| R::Malformed)?;
    Ok(Some(Verdict::Forward(f.meta.ingress)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Meta, PortId, HEADROOM};
    use crate::testkit::{self, Scenario as S, PORT_A, PORT_B, UPLINK};

    fn guess(t: &Tables, port: PortId, frame: &[u8]) -> Option<Probe> {
        let mut buf = vec![0u8; HEADROOM + frame.len()];
        buf[HEADROOM..].copy_from_slice(frame);
        let meta = Meta {
            ingress: port,
            ..Meta::default()
        };
        let f = Frame::new(&mut buf, HEADROOM, frame.len(), meta).unwrap();
        let from = RoutedFrom::of(t, port)?;
        staged(&from, &f).map(|s| s.probe)
    }

    #[test]
    fn staging_picks_frames_for_the_gateway_or_the_uplink() {
        let t = Tables::build(&S::new().config, None).unwrap();
        let tcp = testkit::tcp(S::A, 40000, S::REMOTE, 80, testkit::SYN, b"");
        let out = S::from_endpoint(S::A, &tcp);
        let expected = translate::flow_of(&out, &translate::parse_ipv4(&out, 14).unwrap());
        assert_eq!(
            guess(&t, PORT_A, &out),
            Some(Probe::new(&expected.unwrap().tuple))
        );
        let back = S::from_outside(&testkit::udp(S::REMOTE, 53, S::UP, 40000, b"x"));
        assert!(guess(&t, UPLINK, &back).is_some());
        // Bridged, ARP, ICMP errors, and a gateway MAC on a port of no network: not staged.
        let bridged = testkit::eth(S::mac(S::B), S::mac(S::A), 0x0800, &tcp);
        assert_eq!(guess(&t, PORT_A, &bridged), None);
        let arp = testkit::arp_request(S::mac(S::A), S::A, S::GW);
        assert_eq!(guess(&t, PORT_A, &arp), None);
        let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&testkit::ipv4(S::UP, S::REMOTE, 17, 64, &[0; 8]));
        let err = S::from_outside(&testkit::ipv4(S::REMOTE, S::UP, 1, 64, &icmp));
        assert_eq!(guess(&t, UPLINK, &err), None);
        assert_eq!(guess(&t, UPLINK, &out), None);
        assert_eq!(guess(&t, PORT_B, &back), None);
    }
}
