//! The counters in Prometheus' text exposition format, served on an optional TCP listener
//! (`sluiced --metrics 127.0.0.1:9323`), off by default.

use std::fmt::Write;

use crate::api::{PortStatsView, StatsView};

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes one metric family: HELP, TYPE and a sample per (labels, value).
fn family(out: &mut String, name: &str, kind: &str, help: &str, rows: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in rows {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

fn port_labels(p: &PortStatsView) -> String {
    format!(
        "port=\"{}\",endpoint=\"{}\",network=\"{}\"",
        escape(&p.port),
        escape(&p.endpoint),
        escape(&p.network)
    )
}

type PortCounter = fn(&PortStatsView) -> u64;

/// `stats` as Prometheus text (exposition format 0.0.4).
pub fn render(s: &StatsView) -> String {
    let mut out = String::new();
    let per_port: [(&str, &str, PortCounter); 4] = [
        (
            "sluice_port_rx_packets_total",
            "Frames received on a port.",
            |p| p.rx_packets,
        ),
        (
            "sluice_port_rx_bytes_total",
            "Bytes received on a port.",
            |p| p.rx_bytes,
        ),
        (
            "sluice_port_tx_packets_total",
            "Frames sent on a port.",
            |p| p.tx_packets,
        ),
        ("sluice_port_tx_bytes_total", "Bytes sent on a port.", |p| {
            p.tx_bytes
        }),
    ];
    for (name, help, get) in per_port {
        let rows: Vec<(String, u64)> = s.ports.iter().map(|p| (port_labels(p), get(p))).collect();
        family(&mut out, name, "counter", help, &rows);
    }
    let drops: Vec<(String, u64)> = s
        .drops
        .iter()
        .map(|(r, n)| (format!("reason=\"{}\"", escape(r)), *n))
        .collect();
    family(
        &mut out,
        "sluice_drops_total",
        "counter",
        "Frames dropped, by reason.",
        &drops,
    );
    let net = |f: fn(&crate::api::NetworkStatsView) -> usize| -> Vec<(String, u64)> {
        s.networks
            .iter()
            .map(|n| (format!("network=\"{}\"", escape(&n.network)), f(n) as u64))
            .collect()
    };
    family(
        &mut out,
        "sluice_fdb_entries",
        "gauge",
        "Learned and static FDB entries of a network.",
        &net(|n| n.fdb_entries),
    );
    family(
        &mut out,
        "sluice_endpoints",
        "gauge",
        "Endpoints connected to a network.",
        &net(|n| n.endpoints),
    );
    let port_drops: Vec<(String, u64)> = s
        .ports
        .iter()
        .flat_map(|p| {
            p.drops
                .iter()
                .map(move |(r, n)| (format!("{},reason=\"{}\"", port_labels(p), escape(r)), *n))
        })
        .collect();
    family(
        &mut out,
        "sluice_port_drops_total",
        "counter",
        "Frames dropped on a port, by reason.",
        &port_drops,
    );
    family(
        &mut out,
        "sluice_network_conntrack_entries",
        "gauge",
        "Tracked NAPT flows of a network's endpoints.",
        &net(|n| n.conntrack_entries),
    );
    family(
        &mut out,
        "sluice_conntrack_entries",
        "gauge",
        "Tracked NAPT flows.",
        &[(String::new(), s.conntrack_entries as u64)],
    );
    family(
        &mut out,
        "sluice_shortcut_packets_total",
        "counter",
        "Frames that took their NAPT flow's cached decision (the fast path).",
        &[(String::new(), s.shortcut_packets)],
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::NetworkStatsView;

    #[test]
    fn renders_the_exposition_format() {
        let s = StatsView {
            ports: vec![PortStatsView {
                port: "sl0123".into(),
                endpoint: "web".into(),
                network: "a\"b".into(),
                rx_packets: 3,
                rx_bytes: 180,
                tx_packets: 2,
                tx_bytes: 120,
                drops: [("ttl".to_string(), 7)].into(),
            }],
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
        };
        let t = render(&s);
        assert!(t.contains(
            "sluice_port_rx_packets_total{port=\"sl0123\",endpoint=\"web\",network=\"a\\\"b\"} 3\n"
        ));
        assert!(t.contains("# TYPE sluice_port_tx_bytes_total counter\n"));
        assert!(t.contains("sluice_drops_total{reason=\"ttl\"} 7\n"));
        assert!(t.contains("sluice_fdb_entries{network=\"a\"} 4\n"));
        assert!(t.contains("sluice_conntrack_entries 5\n"));
        assert!(t.contains("sluice_shortcut_packets_total 9\n"));
        assert!(t.contains("sluice_network_conntrack_entries{network=\"a\"} 5\n"));
        assert!(t.contains(
            "sluice_port_drops_total{port=\"sl0123\",endpoint=\"web\",network=\"a\\\"b\",reason=\"ttl\"} 7\n"
        ));
        for line in t.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<u64>().is_ok(), "{line}");
        }
    }
}
