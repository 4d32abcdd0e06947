//! Overlay networks over real interfaces: two hosts (namespaces `ha` and `hb`, their uplinks
//! the two ends of one veth pair, the underlay), each running the standalone dataplane
//! (`sluice dataplane`) with one endpoint of network `ov` (VNI 4096) and the other host's
//! endpoint in its remote table, as the cluster store will keep it (static here). Endpoints
//! reach each other through VXLAN: ARP answered locally, the underlay next hop resolved by ARP,
//! full-size frames of the 1450-byte overlay MTU, and TCP bulk both ways with the endpoints'
//! offloads on (their 64 KiB super-frames cut into segments that fit the overlay). Needs root
//! and the release binaries (see tests/tests/daemon.rs).

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use sluice_dataplane::wire::MacAddr;
use sluice_lab::lab::overlay::{self, EP_A, EP_B};
use sluice_lab::lab::{Lab, SluiceLaunch};

/// Bytes of TCP bulk each way between the endpoints.
const BULK: u64 = 20_000_000;

/// Sends [`BULK`] bytes of TCP with iperf3 from `client` to the server at `server_ip` in
/// `server` (from the server when `reverse`); returns the bytes the receiver got.
fn bulk_tcp(
    lab: &mut Lab,
    (client, server): (&str, &str),
    server_ip: Ipv4Addr,
    reverse: bool,
) -> u64 {
    let ip = server_ip.to_string();
    let log = format!("iperf3-{server}-{reverse}");
    let pid = lab
        .spawn(server, &["iperf3", "-s", "-1", "-B", &ip], &log)
        .unwrap();
    lab.wait_listen(server, 5201, Duration::from_secs(5))
        .unwrap();
    let bytes = BULK.to_string();
    let mut args = vec!["timeout", "60", "iperf3", "-c", &ip, "-n", &bytes, "-J"];
    if reverse {
        args.push("-R");
    }
    let out = lab.exec_output(client, &args).unwrap();
    lab.stop(pid);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "iperf3 failed: {text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0)
}

/// A drop counter of the stats file at `path`, once the file is there.
fn drops(path: &Path, reason: &str) -> u64 {
    let start = Instant::now();
    loop {
        if let Some(v) = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        {
            // Reasons without drops are left out.
            assert!(v["drops"].is_object(), "no drops in {v}");
            return v["drops"][reason].as_u64().unwrap_or(0);
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no stats in {path:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn endpoints_on_two_hosts_reach_each_other_over_vxlan() {
    let Some(bin) = sluice_tests::bins::release_bin_dir(&["sluice"]) else {
        return;
    };
    let mut lab = Lab::new("ovl").unwrap();
    overlay::wire(&mut lab).unwrap();
    let launch = SluiceLaunch {
        bin: bin.join("sluice"),
        args: vec!["--workers".into(), "1".into()],
    };
    let hosts = overlay::start_sluice(&mut lab, &launch).unwrap();

    let wait = Duration::from_secs(10);
    lab.wait_ping("ea", EP_B, wait)
        .unwrap_or_else(|e| panic!("{e}; a: {}", lab.log_path("ha").display()));
    lab.wait_ping("eb", EP_A, wait).unwrap();
    // A full overlay MTU (1422 + 28 = 1450 bytes) crosses without fragmenting.
    let big = lab
        .exec_output(
            "ea",
            &[
                "ping",
                "-c",
                "2",
                "-W",
                "2",
                "-M",
                "do",
                "-s",
                "1422",
                "-q",
                &EP_B.to_string(),
            ],
        )
        .unwrap();
    assert!(
        big.status.success(),
        "{}",
        String::from_utf8_lossy(&big.stdout)
    );
    // The neighbour entry came from the local ARP answer for the remote endpoint.
    let neigh = lab.ip("ea", &["neigh", "show", &EP_B.to_string()]).unwrap();
    assert!(
        neigh.contains(&MacAddr::from_ipv4(EP_B).to_string()),
        "{neigh}"
    );
    let offloads = lab.exec("ea", &["ethtool", "-k", "eth0"]).unwrap();
    assert!(
        offloads.contains("tcp-segmentation-offload: on"),
        "{offloads}"
    );
    assert!(bulk_tcp(&mut lab, ("ea", "eb"), EP_B, false) >= BULK);
    assert!(bulk_tcp(&mut lab, ("ea", "eb"), EP_B, true) >= BULK);
    for (_, stats) in &hosts {
        for reason in [
            "too_big",
            "vxlan_malformed",
            "vxlan_unknown_vni",
            "vxlan_spoofed",
            "vxlan_unknown_dst",
        ] {
            assert_eq!(drops(stats, reason), 0, "{reason} in {stats:?}");
        }
    }
}
