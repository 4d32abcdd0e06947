//! The counters in Prometheus' text exposition format (0.0.4), served on an optional TCP
//! listener (`sluiced --metrics 127.0.0.1:9323`), off by default. Each scrape registers one
//! stats snapshot's values with `prometheus-client` and encodes them.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::prometheus_text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::api::{NetworkStatsView, PortStatsView, StatsView};
use sluice_dataplane::offload::OffloadStats;

/// The `Content-Type` of what [`render`] returns.
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The labels of a port's samples.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabels {
    port: String,
    endpoint: String,
    network: String,
}

impl PortLabels {
    fn of(p: &PortStatsView) -> PortLabels {
        PortLabels {
            port: p.port.clone(),
            endpoint: p.endpoint.clone(),
            network: p.network.clone(),
        }
    }
}

/// A port's labels and a drop reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortDropLabels {
    #[prometheus(flatten)]
    port: PortLabels,
    reason: String,
}

/// A drop reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// A network.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NetworkLabels {
    network: String,
}

/// Registers a counter family (`name` without `_total`, which the encoder appends).
fn counters<S>(reg: &mut Registry, name: &str, help: &str, rows: impl Iterator<Item = (S, u64)>)
where
    S: EncodeLabelSet + Clone + Hash + Eq + Debug + Send + Sync + 'static,
{
    let family = Family::<S, Counter>::default();
    for (labels, v) in rows {
        family.get_or_create(&labels).inc_by(v);
    }
    reg.register(name, help, family);
}

/// Registers a gauge family.
fn gauges<S>(reg: &mut Registry, name: &str, help: &str, rows: impl Iterator<Item = (S, usize)>)
where
    S: EncodeLabelSet + Clone + Hash + Eq + Debug + Send + Sync + 'static,
{
    let family = Family::<S, Gauge<u64, AtomicU64>>::default();
    for (labels, v) in rows {
        family.get_or_create(&labels).set(v as u64);
    }
    reg.register(name, help, family);
}

type PortCounter = fn(&PortStatsView) -> u64;
type PortGauge = fn(&PortStatsView) -> Option<usize>;
type NetworkGauge = fn(&NetworkStatsView) -> usize;

/// Counters of every port: sluice's own, then the kernel's for the port's rings or TAP queues.
const PORT_COUNTERS: [(&str, &str, PortCounter); 7] = [
    ("sluice_port_rx_packets", "Frames received on a port", |p| {
        p.rx_packets
    }),
    ("sluice_port_rx_bytes", "Bytes received on a port", |p| {
        p.rx_bytes
    }),
    ("sluice_port_tx_packets", "Frames sent on a port", |p| {
        p.tx_packets
    }),
    ("sluice_port_tx_bytes", "Bytes sent on a port", |p| p.tx_bytes),
    (
        "sluice_port_kernel_packets",
        "Frames the kernel had for sluice on a port (its rings or TAP queues), dropped ones included",
        |p| p.kernel_packets,
    ),
    (
        "sluice_port_kernel_drops",
        "Frames the kernel dropped on a port before sluice could read them (ring or TAP queue full)",
        |p| p.kernel_drops,
    ),
    (
        "sluice_port_kernel_freezes",
        "Times a port's TPACKET_V3 ring froze with every block held",
        |p| p.kernel_freezes,
    ),
];

/// Gauges of ports; ports without a value are left out.
const PORT_GAUGES: [(&str, &str, PortGauge); 2] = [
    (
        "sluice_port_flows",
        "NAPT flows charged to a port (its endpoint's)",
        |p| Some(p.flows),
    ),
    (
        "sluice_port_max_flows",
        "Most NAPT flows a port's endpoint may hold (its quota)",
        |p| p.max_flows,
    ),
];

/// Gauges of networks.
const NETWORK_GAUGES: [(&str, &str, NetworkGauge); 3] = [
    (
        "sluice_fdb_entries",
        "Learned and static FDB entries of a network",
        |n| n.fdb_entries,
    ),
    (
        "sluice_endpoints",
        "Endpoints connected to a network",
        |n| n.endpoints,
    ),
    (
        "sluice_network_conntrack_entries",
        "Tracked NAPT flows of a network's endpoints",
        |n| n.conntrack_entries,
    ),
];

/// `stats` as Prometheus text (exposition format 0.0.4, [`CONTENT_TYPE`]).
pub fn render(s: &StatsView) -> String {
    let mut reg = Registry::default();
    for (name, help, get) in PORT_COUNTERS {
        let rows = s.ports.iter().map(|p| (PortLabels::of(p), get(p)));
        counters(&mut reg, name, help, rows);
    }
    for (name, help, get) in PORT_GAUGES {
        let rows = s
            .ports
            .iter()
            .filter_map(|p| Some((PortLabels::of(p), get(p)?)));
        gauges(&mut reg, name, help, rows);
    }
    let drops = s.drops.iter().map(|(r, n)| {
        let reason = r.clone();
        (ReasonLabels { reason }, *n)
    });
    counters(&mut reg, "sluice_drops", "Frames dropped, by reason", drops);
    for (name, help, get) in NETWORK_GAUGES {
        let rows = s.networks.iter().map(|n| {
            let network = n.network.clone();
            (NetworkLabels { network }, get(n))
        });
        gauges(&mut reg, name, help, rows);
    }
    let port_drops = s.ports.iter().flat_map(|p| {
        p.drops.iter().map(move |(r, n)| {
            let port = PortLabels::of(p);
            let reason = r.clone();
            (PortDropLabels { port, reason }, *n)
        })
    });
    let port_drops_help = "Frames dropped on a port, by reason";
    counters(&mut reg, "sluice_port_drops", port_drops_help, port_drops);
    let flows = Gauge::<u64, AtomicU64>::default();
    flows.set(s.conntrack_entries as u64);
    reg.register("sluice_conntrack_entries", "Tracked NAPT flows", flows);
    let shortcut = Counter::<u64>::default();
    shortcut.inc_by(s.shortcut_packets);
    reg.register(
        "sluice_shortcut_packets",
        "Frames that took their NAPT flow's cached decision (the fast path)",
        shortcut,
    );
    offload_metrics(&mut reg, &s.offload);
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}

/// The kernel flow offload's counters: flows installed and removed, offers skipped, and
/// what the kernel forwarded for them (next to the ports' userspace traffic).
fn offload_metrics(reg: &mut Registry, o: &OffloadStats) {
    let rows = [
        (
            "sluice_offload_flows_installed",
            "Flows handed to the kernel offload",
            o.installed,
        ),
        (
            "sluice_offload_flows_removed",
            "Flows taken back from the kernel offload",
            o.removed,
        ),
        (
            "sluice_offload_skipped_queue_full",
            "Flow offers skipped: the offload queue was full",
            o.skipped_queue_full,
        ),
        (
            "sluice_offload_skipped_map_full",
            "Flow offloads skipped: the kernel flow map was full",
            o.skipped_map_full,
        ),
        (
            "sluice_offload_kernel_packets",
            "Packets the kernel forwarded for offloaded flows",
            o.kernel_packets,
        ),
        (
            "sluice_offload_kernel_bytes",
            "Bytes the kernel forwarded for offloaded flows",
            o.kernel_bytes,
        ),
    ];
    for (name, help, n) in rows {
        let c = Counter::<u64>::default();
        c.inc_by(n);
        reg.register(name, help, c);
    }
    let active = Gauge::<u64, AtomicU64>::default();
    active.set(o.active);
    reg.register(
        "sluice_offload_flows_active",
        "Flows in the kernel offload now",
        active,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::NetworkStatsView;

    #[test]
    fn renders_the_exposition_format() {
        let s = StatsView {
            ports: vec![
                PortStatsView {
                    port: "sl0123".into(),
                    endpoint: "web".into(),
                    network: "a\"b".into(),
                    rx_packets: 3,
                    rx_bytes: 180,
                    tx_packets: 2,
                    tx_bytes: 120,
                    drops: [("ttl".to_string(), 7)].into(),
                    kernel_packets: 1000,
                    kernel_drops: 720,
                    kernel_freezes: 2,
                    flows: 6,
                    max_flows: Some(1024),
                },
                PortStatsView {
                    port: "up0".into(),
                    endpoint: "uplink".into(),
                    flows: 2,
                    ..PortStatsView::default()
                },
            ],
            networks: vec![NetworkStatsView {
                network: "a".into(),
                endpoints: 1,
                fdb_entries: 4,
                conntrack_entries: 5,
                ..NetworkStatsView::default()
            }],
            drops: [("ttl".to_string(), 7)].into(),
            conntrack_entries: 5,
            shortcut_packets: 9,
            kernel_drops: 720,
            offload: OffloadStats {
                kernel_bytes: 4096,
                ..OffloadStats::default()
            },
        };
        let t = render(&s);
        assert!(t.contains(
            "sluice_port_rx_packets_total{port=\"sl0123\",endpoint=\"web\",network=\"a\\\"b\"} 3\n"
        ));
        assert!(t.contains("# TYPE sluice_port_tx_bytes_total counter\n"));
        assert!(t.contains("# TYPE sluice_fdb_entries gauge\n"));
        assert!(t.contains("# HELP sluice_drops_total Frames dropped, by reason.\n"));
        assert!(t.contains("sluice_drops_total{reason=\"ttl\"} 7\n"));
        assert!(t.contains("sluice_fdb_entries{network=\"a\"} 4\n"));
        assert!(t.contains("sluice_conntrack_entries 5\n"));
        assert!(t.contains("sluice_shortcut_packets_total 9\n"));
        assert!(t.contains("sluice_offload_kernel_bytes_total 4096\n"));
        assert!(t.contains("sluice_network_conntrack_entries{network=\"a\"} 5\n"));
        assert!(t.contains(
            "sluice_port_drops_total{port=\"sl0123\",endpoint=\"web\",network=\"a\\\"b\",reason=\"ttl\"} 7\n"
        ));
        let labels = "{port=\"sl0123\",endpoint=\"web\",network=\"a\\\"b\"}";
        for sample in [
            format!("sluice_port_kernel_packets_total{labels} 1000\n"),
            format!("sluice_port_kernel_drops_total{labels} 720\n"),
            format!("sluice_port_kernel_freezes_total{labels} 2\n"),
            format!("sluice_port_flows{labels} 6\n"),
            format!("sluice_port_max_flows{labels} 1024\n"),
        ] {
            assert!(t.contains(&sample), "{sample} in {t}");
        }
        assert!(t.contains("sluice_port_flows{port=\"up0\",endpoint=\"uplink\",network=\"\"} 2\n"));
        assert!(
            !t.contains("sluice_port_max_flows{port=\"up0\""),
            "an uplink has no quota: {t}"
        );
        assert!(t.contains("# TYPE sluice_port_kernel_drops_total counter\n"));
        assert!(t.contains("# TYPE sluice_port_flows gauge\n"));
        assert!(t.contains("sluice_endpoints{network=\"a\"} 1\n"));
        for line in t.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<u64>().is_ok(), "{line}");
        }
    }
}
