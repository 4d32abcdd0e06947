//! The rows that show how the forwarding cost grows (`--tests flows,endpoints`): NAT with
//! 1,000 and 100,000 flows established through it before the run, a bridge with 64 endpoints,
//! a bridge that learned 10,000 MACs before the run.
//!
//! The MACs come from an access port (`m`, no anti-spoofing, like a link to another switch):
//! trafgen sends one frame from each source MAC to a MAC nobody has, so both forwarders learn
//! the source and flood the frame.
//! The flows are UDP, one packet each from an endpoint to addresses beyond the uplink (where
//! nothing answers), written by trafgen with a source port per flow: each creates a tracked,
//! unreplied flow that both the kernel and sluice keep for 30 s, longer than one run. They
//! are spread so that sluice's per-endpoint limits (a quarter of its 262,144 flows per
//! endpoint, half of the NAPT ports per destination) never refuse one.

use std::thread::sleep;
use std::time::Duration;

use sluice_lab::lab::{DockerLikeSpec, Lab, SluiceLaunch, BRIDGE_IF, SW};

use super::{metrics, Metric};

/// Flows one endpoint opens at most (sluice lets one endpoint hold 65,536).
pub const FLOWS_PER_ENDPOINT: usize = 50_000;
/// Flows from one endpoint towards one destination address at most (sluice gives an endpoint
/// at most half of the 28,232 NAPT ports towards one destination).
pub const FLOWS_PER_DESTINATION: usize = 10_000;
/// The first source port of the generated flows.
const FIRST_PORT: usize = 10_000;
/// Endpoints on the wide bridge.
pub const WIDE_ENDPOINTS: usize = 64;

/// Source MACs learned on the MACs bed before its row.
pub const LEARNED_MACS: usize = 10_000;
/// The access port's namespace on the MACs bed.
const MACS_NS: &str = "m";

/// The bed a metric is measured on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BedKind {
    /// Two endpoints (every row but the ones below).
    Main,
    /// [`WIDE_ENDPOINTS`] endpoints.
    Wide,
    /// Two endpoints and an access port that fills the FDB ([`LEARNED_MACS`]).
    Macs,
}

impl BedKind {
    /// The bed of `m`.
    pub fn of(m: &Metric) -> BedKind {
        match *m {
            metrics::TCP1_64_ENDPOINTS => BedKind::Wide,
            metrics::TCP1_10K_MACS => BedKind::Macs,
            _ => BedKind::Main,
        }
    }

    /// `base` (a two-endpoint spec) shaped for this bed.
    pub fn spec(self, base: DockerLikeSpec) -> DockerLikeSpec {
        match self {
            BedKind::Main => base,
            BedKind::Wide => DockerLikeSpec {
                endpoints: endpoint_names(WIDE_ENDPOINTS),
                ..base
            },
            BedKind::Macs => DockerLikeSpec {
                access: vec![MACS_NS.into()],
                fdb_max: Some(2 * LEARNED_MACS),
                ..base
            },
        }
    }
}

/// The trafgen configuration that fills the FDB: one frame from each of `n` source MACs
/// (02:10:00:00:00:00 upwards) to 02:00:00:00:00:99, ethertype 0x88b5 (local experimental).
pub fn mac_frames(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "{{ eth(da=02:00:00:00:00:99, sa=02:10:00:{:02x}:{:02x}:{:02x}, type=0x88b5), \
                 fill(0x41, 46) }}\n",
                (i >> 16) & 0xff,
                (i >> 8) & 0xff,
                i & 0xff
            )
        })
        .collect()
}

/// Fills the FDB of the MACs bed before `m` (nothing for other metrics); Ok with a note saying
/// how many of the MACs the forwarder holds.
pub fn fill_macs(lab: &Lab, m: &Metric) -> Result<Option<String>, String> {
    if BedKind::of(m) != BedKind::Macs {
        return Ok(None);
    }
    let cfg = lab.dir().join("macs.trafgen");
    std::fs::write(&cfg, mac_frames(LEARNED_MACS))
        .map_err(|e| format!("{}: {e}", cfg.display()))?;
    trafgen(lab, MACS_NS, &cfg.to_string_lossy(), LEARNED_MACS)?;
    // sluice writes its counters every 200 ms.
    sleep(Duration::from_millis(500));
    Ok(Some(match learned_macs(lab) {
        Some(n) => format!("{n} MACs learned before the run"),
        None => format!("{LEARNED_MACS} MACs sent before the run"),
    }))
}

/// The MACs the forwarder of the MACs bed holds: sluice's FDB size, else the kernel bridge's
/// learned entries of the generated MACs.
fn learned_macs(lab: &Lab) -> Option<u64> {
    let stats = SluiceLaunch::stats_path(&lab.dir().join("sluice.json"));
    if let Ok(text) = std::fs::read(stats) {
        let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
        return v["networks"][0]["fdb_entries"].as_u64();
    }
    let o = lab
        .exec_output(SW, &["bridge", "fdb", "show", "br", BRIDGE_IF])
        .ok()?;
    let text = String::from_utf8_lossy(&o.stdout);
    Some(text.lines().filter(|l| l.starts_with("02:10:00:")).count() as u64)
}

/// Runs trafgen in `ns` out of `eth0` on configuration file `cfg` for `packets` packets, one
/// every 20 us.
fn trafgen(lab: &Lab, ns: &str, cfg: &str, packets: usize) -> Result<(), String> {
    let n = packets.to_string();
    let args = [
        "trafgen",
        "-o",
        "eth0",
        "-i",
        cfg,
        "-n",
        &n,
        "-P",
        "1",
        "-t",
        "20us",
        "--no-sock-mem",
        "--notouch-irq",
    ];
    let o = lab
        .exec_output(ns, &args)
        .map_err(|e| format!("trafgen: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "trafgen: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(())
}

/// The flows established before a metric's timed run (0 for all other metrics).
pub fn flows_before(m: &Metric) -> usize {
    match *m {
        metrics::NAT_OUT_FLOWS_1K => 1_000,
        metrics::NAT_OUT_FLOWS_100K => 100_000,
        _ => 0,
    }
}

/// The endpoint names of a bridge with `n` endpoints: `a`, `b`, then `e2`, `e3`, ...
pub fn endpoint_names(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match i {
            0 => "a".to_string(),
            1 => "b".to_string(),
            i => format!("e{i}"),
        })
        .collect()
}

/// One trafgen run that opens flows from one endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowBatch {
    /// The endpoint's index in the spec.
    pub endpoint: usize,
    /// The trafgen configuration: one packet template per destination.
    pub config: String,
    /// Packets to send: one per flow.
    pub packets: usize,
}

/// The trafgen runs that open `flows` UDP flows through the NAT: from the spec's endpoints in
/// order ([`FLOWS_PER_ENDPOINT`] each at most), each endpoint's spread over destinations
/// 198.19.0.1, .2, ... port 9 ([`FLOWS_PER_DESTINATION`] each at most) with one source port
/// per flow. trafgen sends the templates in turn and counts each one's port separately.
/// Err when the spec has too few endpoints for `flows`.
pub fn flow_batches(spec: &DockerLikeSpec, flows: usize) -> Result<Vec<FlowBatch>, String> {
    let needed = flows.div_ceil(FLOWS_PER_ENDPOINT);
    if needed > spec.endpoints.len() {
        return Err(format!(
            "{flows} flows need {needed} endpoints, the bed has {}",
            spec.endpoints.len()
        ));
    }
    let mut out = Vec::new();
    let mut left = flows;
    for endpoint in 0..needed {
        let n = left.min(FLOWS_PER_ENDPOINT);
        left -= n;
        let templates = n.div_ceil(FLOWS_PER_DESTINATION);
        let ports = n.div_ceil(templates);
        let config: String = (0..templates)
            .map(|t| {
                format!(
                    "{{ eth(da={}, sa={}, type=0x0800), ipv4(saddr={}, daddr=198.19.0.{}, \
                     ttl=64), udp(sp=dinc({FIRST_PORT}, {}), dp=9), fill(0x41, 18) }}\n",
                    spec.gateway_mac(),
                    spec.endpoint_mac(endpoint),
                    spec.endpoint_ip(endpoint),
                    t + 1,
                    FIRST_PORT + ports - 1,
                )
            })
            .collect();
        out.push(FlowBatch {
            endpoint,
            config,
            packets: n,
        });
    }
    Ok(out)
}

/// Opens `flows` flows through the bed's NAT (see [`flow_batches`]) and says how many flows
/// the forwarder tracks afterwards.
pub fn fill_flows(lab: &Lab, spec: &DockerLikeSpec, flows: usize) -> Result<String, String> {
    for b in flow_batches(spec, flows)? {
        let cfg = lab.dir().join(format!("flows{}.trafgen", b.endpoint));
        std::fs::write(&cfg, &b.config).map_err(|e| format!("{}: {e}", cfg.display()))?;
        let ns = &spec.endpoints[b.endpoint];
        trafgen(lab, ns, &cfg.to_string_lossy(), b.packets)?;
    }
    // sluice writes its counters every 200 ms.
    sleep(Duration::from_millis(500));
    Ok(match tracked_flows(lab) {
        Some(n) => format!("{n} flows tracked before the run"),
        None => format!("{flows} flows sent before the run"),
    })
}

/// The flows the forwarder of the docker-like bed tracks: sluice's counters file, else the
/// kernel's conntrack count in the switch namespace.
fn tracked_flows(lab: &Lab) -> Option<u64> {
    // The lab starts sluice on `sluice.json` in its directory.
    let stats = SluiceLaunch::stats_path(&lab.dir().join("sluice.json"));
    if let Ok(text) = std::fs::read(stats) {
        let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
        return v["conntrack_flows"].as_u64();
    }
    let o = lab
        .exec_output(SW, &["cat", "/proc/sys/net/netfilter/nf_conntrack_count"])
        .ok()?;
    String::from_utf8_lossy(&o.stdout).trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(n: usize) -> DockerLikeSpec {
        DockerLikeSpec {
            endpoints: endpoint_names(n),
            ..DockerLikeSpec::default()
        }
    }

    #[test]
    fn names_of_a_wide_bridge() {
        assert_eq!(endpoint_names(4), ["a", "b", "e2", "e3"]);
        assert_eq!(endpoint_names(WIDE_ENDPOINTS).len(), 64);
        assert_eq!(flows_before(&metrics::NAT_OUT_FLOWS_100K), 100_000);
        assert_eq!(flows_before(&metrics::NAT_OUT_FLOWS_1), 0);
    }

    #[test]
    fn the_macs_bed_learns_ten_thousand_distinct_macs() {
        assert_eq!(BedKind::of(&metrics::TCP1_10K_MACS), BedKind::Macs);
        assert_eq!(BedKind::of(&metrics::TCP1_64_ENDPOINTS), BedKind::Wide);
        assert_eq!(BedKind::of(&metrics::TCP1), BedKind::Main);
        let s = BedKind::Macs.spec(spec(2));
        assert_eq!(
            (s.endpoints.len(), s.access.as_slice()),
            (2, &["m".to_string()][..])
        );
        assert!(s.fdb_max.unwrap() >= LEARNED_MACS);
        assert_eq!(BedKind::Wide.spec(spec(2)).endpoints.len(), WIDE_ENDPOINTS);
        let cfg = mac_frames(LEARNED_MACS);
        let lines: Vec<&str> = cfg.lines().collect();
        assert_eq!(lines.len(), LEARNED_MACS);
        assert_eq!(
            lines[0],
            "{ eth(da=02:00:00:00:00:99, sa=02:10:00:00:00:00, type=0x88b5), fill(0x41, 46) }"
        );
        assert!(lines[9_999].contains("sa=02:10:00:00:27:0f,"));
        let distinct: std::collections::HashSet<&str> = lines.iter().copied().collect();
        assert_eq!(distinct.len(), LEARNED_MACS);
    }

    #[test]
    fn a_thousand_flows_from_one_endpoint_to_one_destination() {
        let b = flow_batches(&spec(2), 1_000).unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].packets, 1_000);
        assert_eq!(
            b[0].config,
            "{ eth(da=02:42:ac:11:00:01, sa=02:42:ac:11:00:02, type=0x0800), \
             ipv4(saddr=172.17.0.2, daddr=198.19.0.1, ttl=64), udp(sp=dinc(10000, 10999), \
             dp=9), fill(0x41, 18) }\n"
        );
    }

    #[test]
    fn many_flows_spread_over_endpoints_and_destinations() {
        let b = flow_batches(&spec(2), 100_000).unwrap();
        assert_eq!(b.len(), 2);
        for (i, batch) in b.iter().enumerate() {
            assert_eq!(batch.endpoint, i);
            assert_eq!(batch.packets, FLOWS_PER_ENDPOINT);
            assert_eq!(batch.config.lines().count(), 5);
            assert!(batch.config.contains("daddr=198.19.0.5,"));
            assert!(batch.config.contains("sp=dinc(10000, 19999)"));
        }
        assert!(b[1].config.contains("saddr=172.17.0.3,"));
        // Uneven: 12,345 flows in two templates of at most 6,173 ports.
        let b = flow_batches(&spec(2), 12_345).unwrap();
        assert_eq!(b[0].packets, 12_345);
        assert_eq!(b[0].config.matches("sp=dinc(10000, 16172)").count(), 2);
        assert!(flow_batches(&spec(2), 100_001).is_err());
        assert_eq!(flow_batches(&spec(2), 0).unwrap(), []);
    }
}
