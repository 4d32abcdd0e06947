//! The overlay's flow offload as users run it: one etcd member (namespace `ul`, on the
//! underlay bridge), two hosts (`h1`, `h2`), each its own `sluiced --cluster-store etcd://...
//! --offload tc`; a dual-stack overlay created on `h1`, an endpoint on each host, and bulk
//! TCP between them both ways over IPv4 and over IPv6 inside the tunnel: the data arrives
//! intact (SHA-256 at the receiver) while each host's `sluice stats` shows the overlay flows
//! installed and most of their bytes forwarded by the kernel (wrapped out, unwrapped in).
//! Needs root, etcd and the release binaries (see tests/tests/daemon.rs).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use sluice_lab::lab::Lab;
use sluice_tests::bulk::{bulk_tcp, sha256};
use sluice_tests::cli::{
    cluster_etcd, cluster_host, cluster_sluiced, daemon_lab, etcd_hosts, eventually, host_socket,
    sluice, sluice_ok,
};

/// Where the etcd member listens (on the underlay bridge, in namespace `ul`).
const ETCD: &str = "10.99.0.100:2379";
/// Bytes of each transfer.
const BULK: usize = 16_000_000;

/// Host `i` (`h1`, `h2`) on the underlay, running sluiced with the flow offload against the
/// store; its API socket.
fn host(lab: &mut Lab, bin: &Path, i: usize) -> PathBuf {
    let h = cluster_host(lab, i);
    let store = format!("etcd://{ETCD}");
    let extra = ["--offload".to_string(), "tc".to_string()];
    let vtep = format!("192.0.2.{}", i + 1);
    let args = cluster_sluiced(bin, lab, &h, (&vtep, &store, 3), &extra);
    lab.spawn_os(&h, &args, &h).unwrap();
    host_socket(lab, &h)
}

/// Endpoint `name`'s IPv4 and IPv6 addresses, as `network inspect ov` on its host shows them.
fn addresses(bin: &Path, sock: &Path, name: &str) -> (IpAddr, IpAddr) {
    let out = sluice_ok(bin, sock, &["network", "inspect", "ov"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let e = v[0]["Containers"]
        .as_object()
        .unwrap()
        .values()
        .find(|c| c["Name"] == name)
        .unwrap_or_else(|| panic!("{name} is not in {out}"));
    let ip = |field: &str| {
        e[field]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .parse()
    };
    (ip("IPv4Address").unwrap(), ip("IPv6Address").unwrap())
}

/// The offload's counters in `sluice stats` of `sock`'s host.
fn offload(bin: &Path, sock: &Path) -> Value {
    let v: Value =
        serde_json::from_str(&sluice_ok(bin, sock, &["stats", "--output", "json"])).unwrap();
    v["offload"].clone()
}

fn counter(v: &Value, name: &str) -> u64 {
    v[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {name} in {v}"))
}

#[test]
fn overlay_flows_between_cluster_hosts_are_offloaded_and_arrive_intact() {
    let Some((bin, mut lab)) = daemon_lab("clo") else {
        return;
    };
    cluster_etcd(&mut lab, ETCD);
    let socks: Vec<PathBuf> = (0..2).map(|i| host(&mut lab, &bin, i)).collect();
    eventually("both hosts registered", Duration::from_secs(30), || {
        etcd_hosts(&lab, ETCD) == Some(2)
    });
    let create = [
        "network",
        "create",
        "-d",
        "overlay",
        "--ipv6",
        "--subnet",
        "10.41.0.0/24",
        "--subnet",
        "fd00:41::/64",
        "ov",
    ];
    sluice_ok(&bin, &socks[0], &create);
    let eps = [("a1", "bulk-a"), ("a2", "bulk-b")];
    for (i, (ns, name)) in eps.iter().enumerate() {
        lab.add_ns(ns).unwrap();
        let path = format!("/run/netns/{}", lab.ns_name(ns).unwrap());
        eventually("ov on the host", Duration::from_secs(10), || {
            sluice(&bin, &socks[i], &["network", "inspect", "ov"])
                .status
                .success()
        });
        sluice_ok(
            &bin,
            &socks[i],
            &["network", "connect", "--name", name, "ov", &path],
        );
    }
    let (a4, a6) = addresses(&bin, &socks[0], "bulk-a");
    let (b4, b6) = addresses(&bin, &socks[1], "bulk-b");
    let wait = Duration::from_secs(10);
    let (IpAddr::V4(b4v), IpAddr::V6(b6v)) = (b4, b6) else {
        panic!("addresses of both families: {b4} {b6}");
    };
    lab.wait_ping("a1", b4v, wait).unwrap();
    lab.wait_ping6("a1", b6v, wait).unwrap();
    let file = lab.dir().join("bulk");
    let bytes: Vec<u8> = (0..BULK).map(|i| (i * 43 % 239) as u8).collect();
    std::fs::write(&file, &bytes).unwrap();
    let want = sha256(&file);
    for (from, to, ip) in [
        ("a1", "a2", b4),
        ("a2", "a1", a4),
        ("a1", "a2", b6),
        ("a2", "a1", a6),
    ] {
        assert_eq!(
            bulk_tcp(&mut lab, &file, (from, to), ip),
            want,
            "{from} to {ip}"
        );
    }
    // Each host's kernel wrapped what its endpoint sent and unwrapped what it received: four
    // flows (two per family), most of the 64 MB.
    let most = 4 * 8 * BULK as u64 / 10;
    for sock in &socks {
        eventually("the kernel's bytes counted", Duration::from_secs(5), || {
            counter(&offload(&bin, sock), "kernel_bytes") >= most
        });
        let o = offload(&bin, sock);
        eprintln!("{sock:?}: {o}");
        assert_eq!(o["enabled"], true, "{o}");
        assert!(counter(&o, "installed") >= 4, "{o}");
        assert_eq!(counter(&o, "failed"), 0, "{o}");
    }
}
