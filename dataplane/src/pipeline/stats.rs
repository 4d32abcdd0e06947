//! The dataplane's counters and learned tables as operators read them: `sluice stats`,
//! `sluice conntrack ls`, `sluice fdb ls`, the API's JSON and the Prometheus exposition. The
//! rows' field names and the drop reasons' names are what those read: keep them.

use std::collections::BTreeMap;
use std::net::{SocketAddr, SocketAddrV6};
use std::sync::Arc;

use hashbrown::HashMap;

use super::Dataplane;
use crate::bridge::FdbEntry;
use crate::config::L4Proto;
use crate::counters::{self, DropReason, PortStats, WorkerCounters};
use crate::frame::{NetworkId, PortId};
use crate::nat::v6::{FlowInfo6, Tuple6};
use crate::nat::{FlowInfo, Tuple};
use crate::offload::OffloadStats;
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
            conntrack_flows: self.conntrack.lock().len() + self.v6.lock().ct.len(),
            fdb_entries,
            shortcuts: refs.iter().map(|w| w.shortcuts()).sum(),
            offload: self.offloads.stats(),
            unjoined_chunks: refs.iter().map(|w| w.unjoined_chunks()).sum(),
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
        for f in self.v6.lock().ct.flows() {
            total += 1;
            if let Some(n) = flow_network6(&tables, &f) {
                *per_net.entry(n).or_default() += 1;
            }
        }
        for n in &mut stats.networks {
            n.conntrack_flows = Some(per_net.get(&n.id).copied().unwrap_or(0));
        }
        stats.conntrack_flows = total;
        stats
    }

    /// Every tracked flow as `sluice conntrack ls` shows it, v4 and v6, sorted by network then
    /// original tuple. Copies the flows under one conntrack lock per family (O(flows); routed
    /// traffic waits meanwhile).
    pub fn conntrack_entries(&self, now: Millis) -> Vec<ConntrackEntry> {
        let flows: Vec<FlowInfo> = self.conntrack.lock().flows().collect();
        let tables = self.tables.load();
        let entry = |protocol, (original, reply), (state, replied), expires: Millis, network| {
            ConntrackEntry {
                protocol,
                original,
                reply,
                state,
                replied,
                expires_in_secs: expires.0.saturating_sub(now.0).div_ceil(1000),
                network,
            }
        };
        let mut out: Vec<ConntrackEntry> = flows
            .iter()
            .map(|f| {
                let ends = (FlowEnds::of(&f.original), FlowEnds::of(&f.reply));
                let net = flow_network(&tables, f);
                entry(f.original.proto, ends, (f.state, f.replied), f.expires, net)
            })
            .collect();
        let flows6 = self.v6.lock().ct.flows();
        out.extend(flows6.iter().map(|f| {
            let ends = (FlowEnds::of6(&f.original), FlowEnds::of6(&f.reply));
            let net = flow_network6(&tables, f);
            entry(f.original.proto, ends, (f.state, f.replied), f.expires, net)
        }));
        out.sort_unstable_by_key(|e| {
            let o = &e.original;
            (
                e.network,
                e.protocol,
                o.src.ip(),
                o.src.port(),
                o.dst.ip(),
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

/// [`flow_network`] for a v6 flow: the network whose v6 prefix holds its endpoint.
fn flow_network6(tables: &Tables, f: &FlowInfo6) -> Option<NetworkId> {
    let inside = |n: &&crate::tables::NetworkEntry| {
        n.config
            .ipv6
            .is_some_and(|v| v.subnet.contains(f.original.src) || v.subnet.contains(f.reply.src))
    };
    tables.networks().find(inside).map(|n| n.config.id)
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

/// Both ends of a flow tuple, v4 or v6 (ICMP echo: the echo id in place of both ports).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FlowEnds {
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
}

impl FlowEnds {
    fn of(t: &Tuple) -> FlowEnds {
        FlowEnds {
            src: SocketAddr::from((t.src, t.src_port)),
            dst: SocketAddr::from((t.dst, t.dst_port)),
        }
    }

    fn of6(t: &Tuple6) -> FlowEnds {
        FlowEnds {
            src: SocketAddrV6::new(t.src, t.src_port, 0, 0).into(),
            dst: SocketAddrV6::new(t.dst, t.dst_port, 0, 0).into(),
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
    /// The kernel flow offload's stage: flows handed to the kernel, what it forwarded.
    pub offload: OffloadStats,
    /// Chunks of received VXLAN UDP GSO datagrams delivered one by one, not joined.
    pub unjoined_chunks: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::tests::*;

    #[test]
    fn stats_sum_ports_drops_and_tables() {
        let s = S::new();
        let dp = Dataplane::new(&s.config).unwrap();
        let mut w1 = dp.worker();
        let mut w2 = dp.worker();
        let f = bridged_a_to_b();
        run_one(&mut w1, PORT_A, &f, T0);
        run_one(&mut w2, PORT_A, &f, T0);
        run_one(&mut w2, PORT_A, &[0u8; 3], T0);
        let st = dp.stats();
        let a = st.ports.iter().find(|p| p.id == PORT_A).unwrap();
        assert_eq!(a.stats.rx_packets, 3);
        assert_eq!(st.drops.get("malformed"), Some(&1));
        assert_eq!(
            st.fdb_entries.get("bridge"),
            Some(&2),
            "A and B are static entries"
        );
        assert_eq!(st.conntrack_flows, 0);
        let json = serde_json::to_value(&st).unwrap();
        assert_eq!(json["ports"][1]["rx_packets"], 3);
    }

    #[test]
    fn stats_count_drops_per_port_and_network() {
        let s = S::new();
        let dp = Dataplane::new(&s.config).unwrap();
        let mut w = dp.worker();
        run_one(&mut w, PORT_A, &[0u8; 3], T0);
        run_one(&mut w, PORT_C, &[0u8; 3], T0);
        let spoofed = eth(S::mac(S::B), S::mac(S::B), 0x88b5, &[0u8; 46]);
        assert_eq!(
            run_one(&mut w, PORT_A, &spoofed, T0).0,
            Verdict::Drop(R::SpoofedMac)
        );
        let st = dp.stats();
        let a = st.ports.iter().find(|p| p.id == PORT_A).unwrap();
        assert_eq!(a.network, Some(crate::frame::NetworkId(0)));
        assert_eq!(a.drops.get("malformed"), Some(&1));
        assert_eq!(a.drops.get("spoofed_mac"), Some(&1));
        let b = st.ports.iter().find(|p| p.id == PORT_B).unwrap();
        assert!(b.drops.is_empty());
        let bridge = &st.networks[0];
        assert_eq!(
            (bridge.name.as_str(), bridge.traffic.rx_packets),
            ("bridge", 2)
        );
        assert_eq!(bridge.drops.get("malformed"), Some(&1));
        assert_eq!(bridge.fdb_entries, 2);
        assert_eq!(bridge.conntrack_flows, None);
        let other = &st.networks[1];
        assert_eq!(
            (other.name.as_str(), other.traffic.rx_packets),
            ("other", 1)
        );
        assert_eq!(other.drops.get("malformed"), Some(&1));
        assert_eq!(st.drops.get("malformed"), Some(&2));
        let json = serde_json::to_value(&st).unwrap();
        assert_eq!(json["networks"][0]["rx_packets"], 2);
        assert_eq!(json["ports"][1]["drops"]["spoofed_mac"], 1);
        assert!(json["networks"][0].get("conntrack_flows").is_none());
    }

    #[test]
    fn conntrack_listing_shows_tuples_state_expiry_and_network() {
        let s = S::new();
        let dp = Dataplane::new(&s.config).unwrap();
        let mut w = dp.worker();
        learn_next_hop(&mut w);
        let syn = S::from_endpoint(S::A, &tcp(S::A, 40000, S::REMOTE, 443, SYN, b""));
        assert_eq!(
            run_one(&mut w, PORT_A, &syn, T0).0,
            Verdict::Forward(UPLINK)
        );
        let q = S::from_endpoint(S::C, &udp(S::C, 5353, S::REMOTE, 53, b"q"));
        let (v, out) = run_one(&mut w, PORT_C, &q, T0);
        assert_eq!(v, Verdict::Forward(UPLINK));
        let nat_port = tuple_of(&out).src_port;
        let inbound = S::from_outside(&udp(S::REMOTE, 4444, S::UP, 8080, b"in"));
        assert_eq!(
            run_one(&mut w, UPLINK, &inbound, T0).0,
            Verdict::Forward(PORT_B)
        );

        let later = Millis(T0.0 + 10_500);
        let list = dp.conntrack_entries(later);
        assert_eq!(list.len(), 3);
        let sock = |ip: Ipv4Addr, port: u16| SocketAddr::from((ip, port));
        let (bridge, other) = (crate::frame::NetworkId(0), crate::frame::NetworkId(1));
        // Sorted by network: the two flows of "bridge" (UDP inbound sorts after TCP), then C's.
        let t = &list[0];
        assert_eq!(t.protocol, crate::config::L4Proto::Tcp);
        assert_eq!(
            (t.original.src, t.original.dst),
            (sock(S::A, 40000), sock(S::REMOTE, 443))
        );
        assert_eq!(
            (t.reply.src, t.reply.dst.ip()),
            (sock(S::REMOTE, 443), std::net::IpAddr::V4(S::UP))
        );
        assert_eq!(
            (t.state, t.replied, t.network),
            ("SYN_SENT", false, Some(bridge))
        );
        assert_eq!(
            t.expires_in_secs,
            120 - 10,
            "SYN_SENT lasts 120 s, 10.5 s passed"
        );
        let i = &list[1];
        assert_eq!(
            (i.original.src, i.original.dst),
            (sock(S::REMOTE, 4444), sock(S::UP, 8080))
        );
        assert_eq!(
            (i.reply.src, i.reply.dst),
            (sock(S::B, 80), sock(S::REMOTE, 4444))
        );
        assert_eq!(
            i.network,
            Some(bridge),
            "a published port's flow is its target's"
        );
        let u = &list[2];
        assert_eq!(
            (u.original.src, u.reply.dst),
            (sock(S::C, 5353), sock(S::UP, nat_port))
        );
        assert_eq!(
            (u.state, u.network, u.expires_in_secs),
            ("UNREPLIED", Some(other), 20)
        );
        let json = serde_json::to_value(&list[2]).unwrap();
        assert_eq!(json["protocol"], "udp");
        assert_eq!(json["original"]["src"], "172.18.0.2:5353");
        assert_eq!(json["network"], 1);

        let st = dp.stats_with_flows();
        assert_eq!(st.conntrack_flows, 3);
        let flows: Vec<_> = st.networks.iter().map(|n| n.conntrack_flows).collect();
        assert_eq!(flows, vec![Some(2), Some(1)]);
        assert!(dp
            .conntrack_entries(Millis(T0.0 + 500_000))
            .iter()
            .all(|e| e.expires_in_secs == 0));
    }

    #[test]
    fn fdb_listing_covers_every_network_with_static_and_learned_entries() {
        let s = S::new();
        let dp = Dataplane::new(&s.config).unwrap();
        let mut w = dp.worker();
        let learned = MacAddr([0x02, 0, 0, 0, 0x33, 0x44]);
        let frame = eth(MacAddr::BROADCAST, learned, 0x88b5, &[0u8; 46]);
        run_one(&mut w, TRUNK, &frame, T0);
        let list = dp.fdb_entries(Millis(T0.0 + 7_000));
        let rows: Vec<_> = list
            .iter()
            .map(|e| {
                (
                    e.network.0,
                    e.entry.mac,
                    e.entry.port,
                    e.entry.is_static,
                    e.entry.idle_secs,
                )
            })
            .collect();
        let mut want = vec![
            (0, S::mac(S::A), PORT_A, true, 0),
            (0, S::mac(S::B), PORT_B, true, 0),
            (0, learned, TRUNK, false, 7),
            (1, S::mac(S::C), PORT_C, true, 0),
        ];
        want[..3].sort_by_key(|r| r.1);
        assert_eq!(rows, want);
        let json = serde_json::to_value(list[3]).unwrap();
        assert_eq!(json["network"], 1);
        assert_eq!(json["vlan"], 0);
        assert_eq!(json["port"], PORT_C.0);
        assert_eq!(json["is_static"], true);
    }
}
