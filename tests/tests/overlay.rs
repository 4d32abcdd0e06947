//! Overlay networks over real interfaces: two hosts (namespaces `ha` and `hb`, their uplinks
//! the two ends of one veth pair, the underlay), each running the standalone dataplane
//! (`sluice dataplane`) with one endpoint of network `ov` (VNI 4096) and the other host's
//! endpoint in its remote table, as the cluster store will keep it (static here). Endpoints
//! reach each other through VXLAN: ARP answered locally, the underlay next hop resolved by ARP,
//! full-size frames of the 1450-byte overlay MTU, and TCP bulk both ways, over IPv4 and over
//! IPv6, with the endpoints' offloads on (their 64 KiB super-frames cut into segments that fit
//! the overlay). Needs root
//! and the release binaries (see tests/tests/daemon.rs).

use std::path::Path;
use std::time::{Duration, Instant};

use sluice_dataplane::wire::MacAddr;
use sluice_lab::lab::overlay::{self, EP_A, EP_A6, EP_B, EP_B6};
use sluice_lab::lab::{Lab, SluiceLaunch};
use sluice_tests::bulk::{bulk_tcp, sha256};
use sluice_tests::udp::UdpFlow;

/// Bytes of TCP bulk each way between the endpoints.
const BULK: usize = 20_000_000;

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
    let file = lab.dir().join("bulk");
    let bytes: Vec<u8> = (0..BULK).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&file, bytes).unwrap();
    let want = sha256(&file);
    assert_eq!(bulk_tcp(&mut lab, &file, ("ea", "eb"), EP_B.into()), want);
    assert_eq!(bulk_tcp(&mut lab, &file, ("eb", "ea"), EP_A.into()), want);
    // The same over IPv6, TCP segmentation offload for v6 left on (the veth default).
    assert!(offloads.contains("tx-tcp6-segmentation: on"), "{offloads}");
    lab.wait_ping6("ea", EP_B6, wait).unwrap();
    assert_eq!(bulk_tcp(&mut lab, &file, ("ea", "eb"), EP_B6.into()), want);
    assert_eq!(bulk_tcp(&mut lab, &file, ("eb", "ea"), EP_A6.into()), want);
    // An endpoint's UDP super-frame (USO: one send cut into datagrams of the sender's size, as
    // a QUIC stack or wireguard-go sends) arrives as those datagrams, each whole, over both
    // families inside the tunnel (a one-way flow: wrapped and unwrapped by userspace).
    let ns = |short| Path::new("/run/netns").join(lab.ns_name(short).unwrap());
    let payload: Vec<u8> = (0..3500u32).map(|i| (i * 13 % 251) as u8).collect();
    for to in [(EP_B, 4433).into(), (EP_B6, 4434).into()] {
        let got = UdpFlow::new((&ns("ea"), &ns("eb")), to).segmented(&payload, 1200);
        let sizes: Vec<usize> = got.iter().map(Vec::len).collect();
        assert!(
            got.windows(3).any(|w| w.concat() == payload),
            "to {to}: datagrams of {sizes:?}"
        );
    }
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

/// A UDP flow from `ea` to `eb` seen both ways (a bulk-sized reply, so a host with the offload
/// offers it), then three UDP super-frames (USO) of 3500 bytes in 1200-byte datagrams: each
/// arrives as those datagrams.
fn uso_both_ways_seen(lab: &Lab) {
    let ns = |short| Path::new("/run/netns").join(lab.ns_name(short).unwrap());
    let uso = UdpFlow::new((&ns("ea"), &ns("eb")), (EP_B, 4433).into());
    assert!(uso.reply(&[7; 1200]), "a reply from eb");
    let payload: Vec<u8> = (0..3500u32).map(|i| (i * 23 % 251) as u8).collect();
    for _ in 0..3 {
        let got = uso.segmented(&payload, 1200);
        let sizes: Vec<usize> = got.iter().map(Vec::len).collect();
        assert!(got.windows(3).any(|w| w.concat() == payload), "{sizes:?}");
    }
}

/// The offload counters of the stats file at `path` once `done` holds for them (or after 10 s).
fn offload_stats(path: &Path, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let v = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .map(|v| v["offload"].clone())
            .unwrap_or_default();
        if done(&v) || start.elapsed() > Duration::from_secs(10) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// True when offload counters `o` show at least `installed` flows installed and `bytes` bytes
/// forwarded by the kernel. The stats file is rewritten about once a second, so a test waits
/// for both: a flow offered at the end of a short transfer shows up a rewrite later.
fn at_least(o: &serde_json::Value, installed: u64, bytes: u64) -> bool {
    o["installed"].as_u64() >= Some(installed) && o["kernel_bytes"].as_u64() >= Some(bytes)
}

/// With the flow offload on both hosts (`--offload tc`), the same bulk both ways arrives
/// intact while the kernel wraps and unwraps most of it: each host installed the flows (an
/// encapsulating and a decapsulating direction each) and counts the kernel's bytes.
#[test]
fn overlay_flows_are_wrapped_and_unwrapped_by_the_kernel_with_offload_tc() {
    let Some(bin) = sluice_tests::bins::release_bin_dir(&["sluice"]) else {
        return;
    };
    let mut lab = Lab::new("ovo").unwrap();
    overlay::wire(&mut lab).unwrap();
    let launch = SluiceLaunch {
        bin: bin.join("sluice"),
        args: ["--workers", "1", "--offload", "tc"]
            .map(String::from)
            .into(),
    };
    let hosts = overlay::start_sluice(&mut lab, &launch).unwrap();
    let wait = Duration::from_secs(10);
    lab.wait_ping("ea", EP_B, wait)
        .unwrap_or_else(|e| panic!("{e}; a: {}", lab.log_path("ha").display()));
    let file = lab.dir().join("bulk");
    let bytes: Vec<u8> = (0..BULK).map(|i| (i * 37 % 253) as u8).collect();
    std::fs::write(&file, bytes).unwrap();
    let want = sha256(&file);
    assert_eq!(bulk_tcp(&mut lab, &file, ("ea", "eb"), EP_B.into()), want);
    assert_eq!(bulk_tcp(&mut lab, &file, ("eb", "ea"), EP_A.into()), want);
    // Each host's kernel carried most of both transfers: out wrapped, in unwrapped.
    let most = 2 * 9 * BULK as u64 / 10;
    for (_, stats) in &hosts {
        let o = offload_stats(stats, |o| at_least(o, 2, most));
        eprintln!("{stats:?}: {o}, too_big {}", drops(stats, "too_big"));
        assert_eq!(o["enabled"], true, "{o} in {stats:?}");
        assert!(o["installed"].as_u64() >= Some(2), "{o}");
        assert!(o["kernel_bytes"].as_u64() >= Some(most), "{o}");
    }
    // The same over IPv6 inside the tunnel: two more flows, as much again in the kernel.
    lab.wait_ping6("ea", EP_B6, wait).unwrap();
    assert_eq!(bulk_tcp(&mut lab, &file, ("ea", "eb"), EP_B6.into()), want);
    assert_eq!(bulk_tcp(&mut lab, &file, ("eb", "ea"), EP_A6.into()), want);
    for (_, stats) in &hosts {
        let o = offload_stats(stats, |o| at_least(o, 4, 2 * most));
        eprintln!("{stats:?} after v6: {o}");
        assert!(o["installed"].as_u64() >= Some(4), "{o}");
        assert!(o["kernel_bytes"].as_u64() >= Some(2 * most), "{o}");
        assert_eq!(drops(stats, "too_big"), 0, "{stats:?}");
    }
    // UDP super-frames (USO) wrapped and unwrapped by the kernels: each of the sender's
    // datagrams arrives.
    uso_both_ways_seen(&lab);
    for (_, stats) in &hosts {
        let o = offload_stats(stats, |o| at_least(o, 5, 0));
        assert!(
            o["installed"].as_u64() >= Some(5),
            "the UDP flow offloaded: {o}"
        );
    }
}

/// One host with the flow offload (`ha`, `--offload tc`) and one without (`hb`): `ha`'s kernel
/// wraps its endpoint's TCP super-frames whole (UDP-tunnel GSO) and `hb`'s userspace
/// decapsulates them into super-frames for its endpoint; `hb`'s userspace-wrapped frames are
/// unwrapped by `ha`'s kernel. The bulk arrives intact both ways, over IPv4 and IPv6 inside the
/// tunnel, nothing is dropped as too big.
#[test]
fn a_host_without_the_offload_takes_the_kernel_wrapped_super_frames_of_one_with_it() {
    let Some(bin) = sluice_tests::bins::release_bin_dir(&["sluice"]) else {
        return;
    };
    let mut lab = Lab::new("ovm").unwrap();
    overlay::wire(&mut lab).unwrap();
    let launch = |offload: &str| SluiceLaunch {
        bin: bin.join("sluice"),
        args: ["--workers", "1", "--offload", offload]
            .map(String::from)
            .into(),
    };
    let hosts = overlay::start_sluice_each(&mut lab, [&launch("tc"), &launch("off")]).unwrap();
    let wait = Duration::from_secs(10);
    lab.wait_ping("ea", EP_B, wait)
        .unwrap_or_else(|e| panic!("{e}; a: {}", lab.log_path("ha").display()));
    let file = lab.dir().join("bulk");
    let bytes: Vec<u8> = (0..BULK).map(|i| (i * 41 % 241) as u8).collect();
    std::fs::write(&file, bytes).unwrap();
    let want = sha256(&file);
    assert_eq!(bulk_tcp(&mut lab, &file, ("ea", "eb"), EP_B.into()), want);
    assert_eq!(bulk_tcp(&mut lab, &file, ("eb", "ea"), EP_A.into()), want);
    lab.wait_ping6("ea", EP_B6, wait).unwrap();
    assert_eq!(bulk_tcp(&mut lab, &file, ("ea", "eb"), EP_B6.into()), want);
    assert_eq!(bulk_tcp(&mut lab, &file, ("eb", "ea"), EP_A6.into()), want);
    // UDP super-frames: offloaded on `ha`, whose kernel wraps each whole; `hb`'s userspace
    // hands the unwrapped super-frame to `eb` whole.
    uso_both_ways_seen(&lab);
    let (offloading, plain) = (&hosts[0].1, &hosts[1].1);
    let o = offload_stats(offloading, |o| at_least(o, 5, 0));
    assert!(
        o["installed"].as_u64() >= Some(5),
        "the UDP flow offloaded: {o}"
    );
    // `ha`'s kernel wrapped most of what `ea` sent (both families); what `eb` sent arrives as
    // `hb`'s userspace UDP GSO frames, which `ha`'s userspace joins.
    let most = 2 * 8 * BULK as u64 / 10;
    let o = offload_stats(offloading, |o| at_least(o, 4, most));
    eprintln!("{offloading:?}: {o}");
    assert!(o["installed"].as_u64() >= Some(4), "{o}");
    assert!(o["kernel_bytes"].as_u64() >= Some(most), "{o}");
    assert_eq!(offload_stats(plain, |_| true)["enabled"], false);
    // `hb`'s packet socket read `ha`'s kernel-wrapped frames whole: super-frames, far larger
    // on average than one 1514-byte datagram.
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(plain).unwrap()).unwrap();
    let up = v["ports"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "up0"))
        .unwrap_or_else(|| panic!("no up0 in {v}"));
    let (bytes, packets) = (up["rx_bytes"].as_u64(), up["rx_packets"].as_u64());
    assert!(bytes > packets.map(|n| n * 4000), "{up}");
    for stats in [offloading, plain] {
        for reason in ["too_big", "vxlan_malformed"] {
            assert_eq!(drops(stats, reason), 0, "{reason} in {stats:?}");
        }
    }
}
