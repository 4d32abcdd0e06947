//! `GET /v1/stats` (`sluice stats`, the metrics): the dataplane's counters, the kernel's counts
//! of its ports and the flows charged to each endpoint, named by endpoint and network.

use std::collections::BTreeMap;

use sluice_dataplane::frame::PortId;
use sluice_dataplane::pipeline::{DropsByReason, Stats};
use sluice_dataplane::port::KernelPortStats;
use sluice_dataplane::tables::Tables;

use crate::api::{NetworkStatsView, PortStatsView, StatsView};
use crate::compile::UPLINK_PORT;
use crate::state::State;

/// What the stats view is made of, read by the engine at one moment.
pub struct Sources<'a> {
    /// The dataplane's counters, with each network's flows counted.
    pub dataplane: &'a Stats,
    /// The configuration those counters are for (ports' networks, flow quotas).
    pub tables: &'a Tables,
    /// The kernel's counters of each attached port since it was attached.
    pub kernel: &'a [(PortId, KernelPortStats)],
    /// NAPT flows charged to each port (`Conntrack::owned_by`).
    pub flows: &'a BTreeMap<PortId, usize>,
}

fn named(d: &DropsByReason) -> BTreeMap<String, u64> {
    d.iter().map(|(k, v)| ((*k).to_string(), *v)).collect()
}

/// The flow quota of the endpoint on port `id`: its network's, or the table's default; none
/// for a port on no network (an uplink: only the table's limit holds it).
fn flow_quota(tables: &Tables, id: PortId) -> Option<usize> {
    let network = tables.port(id)?.network?;
    let net = tables.network(network)?;
    Some(
        net.config
            .max_flows_per_endpoint
            .unwrap_or_else(|| tables.config().nat.default_max_flows_per_endpoint()),
    )
}

/// The endpoint and network names of port `id`.
fn owner_names(state: &State, id: PortId) -> (String, String) {
    match state.endpoints().find(|e| e.port == id) {
        Some(e) => (
            e.spec.name.clone(),
            state
                .network(&e.network_id)
                .map(|n| n.spec.name.clone())
                .unwrap_or_default(),
        ),
        None if id == UPLINK_PORT => ("uplink".into(), String::new()),
        None => (String::new(), String::new()),
    }
}

/// One row per dataplane port.
fn ports(state: &State, src: &Sources<'_>) -> Vec<PortStatsView> {
    src.dataplane
        .ports
        .iter()
        .map(|p| {
            let (endpoint, network) = owner_names(state, p.id);
            let kernel = src
                .kernel
                .iter()
                .find(|(id, _)| *id == p.id)
                .map(|(_, k)| *k)
                .unwrap_or_default();
            PortStatsView {
                port: p.name.clone(),
                endpoint,
                network,
                rx_packets: p.stats.rx_packets,
                rx_bytes: p.stats.rx_bytes,
                tx_packets: p.stats.tx_packets,
                tx_bytes: p.stats.tx_bytes,
                drops: named(&p.drops),
                kernel_packets: kernel.packets,
                kernel_drops: kernel.drops,
                kernel_freezes: kernel.freezes,
                flows: src.flows.get(&p.id).copied().unwrap_or(0),
                max_flows: flow_quota(src.tables, p.id),
            }
        })
        .collect()
}

/// The stats view: per port, per network (sorted by name), totals.
pub fn view(state: &State, src: &Sources<'_>) -> StatsView {
    let st = src.dataplane;
    let ports = ports(state, src);
    let mut networks: Vec<NetworkStatsView> = state
        .networks()
        .filter(|n| n.subnet.is_some())
        .map(|n| {
            let row = st.networks.iter().find(|r| r.id == n.dataplane_id);
            let kernel_drops = ports
                .iter()
                .filter(|p| p.network == n.spec.name)
                .map(|p| p.kernel_drops)
                .sum();
            NetworkStatsView {
                network: n.spec.name.clone(),
                endpoints: state.endpoints_of(&n.id).count(),
                fdb_entries: st.fdb_entries.get(&n.spec.name).copied().unwrap_or(0),
                conntrack_entries: row.and_then(|r| r.conntrack_flows).unwrap_or(0),
                rx_packets: row.map_or(0, |r| r.traffic.rx_packets),
                tx_packets: row.map_or(0, |r| r.traffic.tx_packets),
                drops: row.map(|r| named(&r.drops)).unwrap_or_default(),
                kernel_drops,
            }
        })
        .collect();
    networks.sort_by(|a, b| a.network.cmp(&b.network));
    StatsView {
        kernel_drops: ports.iter().map(|p| p.kernel_drops).sum(),
        ports,
        networks,
        drops: named(&st.drops),
        conntrack_entries: st.conntrack_flows,
        shortcut_packets: st.shortcuts,
        offload: st.offload,
    }
}
