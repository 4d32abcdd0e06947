//! `sluice stats` as text: a table of ports and one of networks, then totals, drops by
//! reason, each port's drops and what the kernel dropped before sluice saw it.

use std::fmt::Write as _;

use sluice_api::api::{PortStatsView, StatsView};

use crate::cli::table;

/// A port's flows, with its quota when it has one: `12/65536`.
fn flows(p: &PortStatsView) -> String {
    match p.max_flows {
        Some(max) => format!("{}/{max}", p.flows),
        None => p.flows.to_string(),
    }
}

fn ports_table(s: &StatsView) -> String {
    let rows: Vec<Vec<String>> = s
        .ports
        .iter()
        .map(|p| {
            vec![
                p.port.clone(),
                p.endpoint.clone(),
                p.network.clone(),
                p.rx_packets.to_string(),
                p.rx_bytes.to_string(),
                p.tx_packets.to_string(),
                p.tx_bytes.to_string(),
                p.drops.values().sum::<u64>().to_string(),
                p.kernel_drops.to_string(),
                flows(p),
            ]
        })
        .collect();
    table(
        &[
            "PORT",
            "ENDPOINT",
            "NETWORK",
            "RX PKTS",
            "RX BYTES",
            "TX PKTS",
            "TX BYTES",
            "DROPS",
            "KERNEL DROPS",
            "FLOWS",
        ],
        &rows,
    )
}

fn networks_table(s: &StatsView) -> String {
    let rows: Vec<Vec<String>> = s
        .networks
        .iter()
        .map(|n| {
            vec![
                n.network.clone(),
                n.endpoints.to_string(),
                n.rx_packets.to_string(),
                n.tx_packets.to_string(),
                n.drops.values().sum::<u64>().to_string(),
                n.kernel_drops.to_string(),
                n.fdb_entries.to_string(),
                n.conntrack_entries.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "NETWORK",
            "ENDPOINTS",
            "RX PKTS",
            "TX PKTS",
            "DROPS",
            "KERNEL DROPS",
            "FDB",
            "CONNTRACK",
        ],
        &rows,
    )
}

/// Each port's drops by reason (e.g. which endpoint hit its flow quota), ports without drops
/// left out.
fn port_drops(s: &StatsView, out: &mut String) {
    let mut ports = s.ports.iter().filter(|p| !p.drops.is_empty()).peekable();
    if ports.peek().is_none() {
        return;
    }
    out.push_str("drops by port:\n");
    for p in ports {
        let reasons: Vec<String> = p.drops.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(out, "  {} ({}): {}", p.port, p.endpoint, reasons.join(", "));
    }
}

/// What the kernel lost on each port before sluice could read it (full rings or TAP queues),
/// ports that lost nothing left out.
fn kernel_drops(s: &StatsView, out: &mut String) {
    let mut ports = s
        .ports
        .iter()
        .filter(|p| p.kernel_drops > 0 || p.kernel_freezes > 0)
        .peekable();
    if ports.peek().is_none() {
        return;
    }
    out.push_str("kernel drops by port (ring or TAP queue full):\n");
    for p in ports {
        let _ = write!(
            out,
            "  {} ({}): {} of {} frames",
            p.port, p.endpoint, p.kernel_drops, p.kernel_packets
        );
        if p.kernel_freezes > 0 {
            let _ = write!(out, ", {} ring freezes", p.kernel_freezes);
        }
        out.push('\n');
    }
}

/// The whole text of `sluice stats`.
pub fn render(s: &StatsView) -> String {
    let mut out = ports_table(s);
    out.push('\n');
    out.push_str(&networks_table(s));
    let _ = writeln!(out, "\nconntrack entries: {}", s.conntrack_entries);
    let _ = writeln!(
        out,
        "fast path (flow shortcuts): {} packets",
        s.shortcut_packets
    );
    let o = &s.offload;
    if o.enabled || o.installed > 0 {
        let _ = writeln!(
            out,
            "offloaded flows: {} active, {} installed, {} removed, {} offered; skipped: {} queue full, {} map full, {} failed",
            o.active, o.installed, o.removed, o.offered, o.skipped_queue_full, o.skipped_map_full, o.failed
        );
        let _ = writeln!(
            out,
            "kernel-forwarded (offloaded flows): {} packets, {} bytes",
            o.kernel_packets, o.kernel_bytes
        );
    }
    let _ = writeln!(out, "kernel drops: {}", s.kernel_drops);
    if !s.drops.is_empty() {
        out.push_str("drops:\n");
        for (k, v) in &s.drops {
            let _ = writeln!(out, "  {k}: {v}");
        }
    }
    port_drops(s, &mut out);
    kernel_drops(s, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_api::api::NetworkStatsView;

    fn stats() -> StatsView {
        StatsView {
            ports: vec![
                PortStatsView {
                    port: "uplink0".into(),
                    endpoint: "uplink".into(),
                    rx_packets: 5,
                    kernel_packets: 5,
                    flows: 1,
                    ..PortStatsView::default()
                },
                PortStatsView {
                    port: "sl01".into(),
                    endpoint: "web".into(),
                    network: "front".into(),
                    rx_packets: 2_000_000,
                    drops: [("spoofed".to_string(), 7)].into(),
                    kernel_packets: 2_000_000,
                    kernel_drops: 1_450_000,
                    kernel_freezes: 3,
                    flows: 12,
                    max_flows: Some(65536),
                    ..PortStatsView::default()
                },
            ],
            networks: vec![NetworkStatsView {
                network: "front".into(),
                endpoints: 1,
                conntrack_entries: 12,
                kernel_drops: 1_450_000,
                ..NetworkStatsView::default()
            }],
            drops: [("spoofed".to_string(), 7)].into(),
            conntrack_entries: 13,
            shortcut_packets: 0,
            kernel_drops: 1_450_000,
            offload: Default::default(),
        }
    }

    #[test]
    fn ports_show_kernel_drops_and_flows_against_their_quota() {
        let t = render(&stats());
        let lines: Vec<&str> = t.lines().collect();
        let header: Vec<&str> = lines[0]
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        let web: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(header[8..], ["KERNEL DROPS", "FLOWS"], "{t}");
        assert_eq!(web[0], "sl01", "{t}");
        assert_eq!(web[web.len() - 2..], ["1450000", "12/65536"], "{t}");
        let uplink: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(uplink[uplink.len() - 2..], ["0", "1"], "no quota: {t}");
        assert!(lines[4].contains("KERNEL DROPS"), "{t}");
        let front: Vec<&str> = lines[5].split_whitespace().collect();
        assert_eq!((front[0], front[5]), ("front", "1450000"), "{t}");
    }

    #[test]
    fn the_offload_shows_only_when_it_runs() {
        let mut s = stats();
        assert!(!render(&s).contains("offloaded"));
        s.offload.enabled = true;
        s.offload.installed = 3;
        s.offload.kernel_bytes = 4096;
        let t = render(&s);
        assert!(t.contains("offloaded flows: 0 active, 3 installed"), "{t}");
        assert!(
            t.contains("kernel-forwarded (offloaded flows): 0 packets, 4096 bytes"),
            "{t}"
        );
    }

    #[test]
    fn kernel_drops_are_listed_per_port() {
        let t = render(&stats());
        assert!(t.contains("kernel drops: 1450000\n"), "{t}");
        assert!(
            t.contains(
                "kernel drops by port (ring or TAP queue full):\n  \
                 sl01 (web): 1450000 of 2000000 frames, 3 ring freezes\n"
            ),
            "{t}"
        );
        assert!(!t.contains("uplink0 (uplink):"), "{t}");
        assert!(
            t.contains("drops by port:\n  sl01 (web): spoofed 7\n"),
            "{t}"
        );
        let quiet = StatsView {
            ports: vec![PortStatsView::default()],
            ..StatsView::default()
        };
        assert!(!render(&quiet).contains("by port"));
    }
}
