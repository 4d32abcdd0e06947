//! The rows that show how the forwarding cost grows (`--tests flows,endpoints`): NAT with
//! 1,000 and 100,000 flows established through it before the run, a bridge with 64 endpoints.
//!
//! The flows are UDP, one packet each from an endpoint to addresses beyond the uplink (where
//! nothing answers), written by trafgen with a source port per flow: each creates a tracked,
//! unreplied flow that both the kernel and sluice keep for 30 s, longer than one run. They
//! are spread so that sluice's per-endpoint limits (a quarter of its 262,144 flows per
//! endpoint, half of the NAPT ports per destination) never refuse one.

use std::thread::sleep;
use std::time::Duration;

use sluice_lab::lab::{DockerLikeSpec, Lab, SluiceLaunch, SW};

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

/// The flows established before a metric's timed run (0 for all other metrics).
pub fn flows_before(m: &Metric) -> usize {
    match *m {
        metrics::NAT_OUT_FLOWS_1K => 1_000,
        metrics::NAT_OUT_FLOWS_100K => 100_000,
        _ => 0,
    }
}

/// The endpoints on the bridge a metric is measured on.
pub fn endpoints_of(m: &Metric) -> usize {
    if *m == metrics::TCP1_64_ENDPOINTS {
        WIDE_ENDPOINTS
    } else {
        2
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
        let (cfg, n) = (cfg.to_string_lossy().into_owned(), b.packets.to_string());
        let args = [
            "trafgen",
            "-o",
            "eth0",
            "-i",
            &cfg,
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
            .exec_output(&spec.endpoints[b.endpoint], &args)
            .map_err(|e| format!("trafgen: {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "trafgen: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
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
        assert_eq!(endpoints_of(&metrics::TCP1_64_ENDPOINTS), 64);
        assert_eq!(endpoints_of(&metrics::TCP1_2_ENDPOINTS), 2);
        assert_eq!(flows_before(&metrics::NAT_OUT_FLOWS_100K), 100_000);
        assert_eq!(flows_before(&metrics::NAT_OUT_FLOWS_1), 0);
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
