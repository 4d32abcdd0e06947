//! The dataplane's counters and learned tables as operators read them: `sluice stats`,
//! `sluice conntrack ls`, `sluice fdb ls`, the API's JSON and the Prometheus exposition. The
//! rows' field names and the drop reasons' names are what those read: keep them.

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::sync::Arc;

use hashbrown::HashMap;

use super::Dataplane;
use crate::bridge::FdbEntry;
use crate::config::L4Proto;
use crate::counters::{self, DropReason, PortStats, WorkerCounters};
use crate::frame::{NetworkId, PortId};
use crate::nat::{FlowInfo, Tuple};
use crate::tables::Tables;
use crate::time::Millis;

impl Dataplane {
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
                    stats: counters::sum_port(&refs, id),
                    drops: drops_by_reason(|r| counters::sum_port_drops(&refs, id, r)),
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
        let drops = drops_by_reason(|r| counters::sum_drops(&refs, r));
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
