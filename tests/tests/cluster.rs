//! Overlay networks across three hosts kept in one etcd (`sluiced --cluster-store`): hosts
//! `h1`..`h3` are namespaces, each running its own sluiced with uplink `up0` (its VTEP,
//! 192.0.2.N) and a management interface `mg0` (10.99.0.N) that reaches etcd; namespace `ul`
//! is the underlay, a bridge joining every `up0` and `mg0`, where the test runs etcd (Debian's
//! `etcd-server`) on 10.99.0.254 with a data directory in the lab's. A network created on one
//! host appears on all; endpoints connected on the three hosts at once get distinct
//! addresses and ping each other over VXLAN; `network rm` is refused while endpoints exist;
//! a killed host's endpoints leave the others' tables within its lease TTL and come back when
//! it restarts; `network rm` on one host removes the network everywhere. Needs root, etcd and the release binaries (see
//! tests/tests/daemon.rs).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sluice_lab::lab::Lab;

const ETCD_IP: &str = "10.99.0.254";
const HOSTS: [&str; 3] = ["h1", "h2", "h3"];
/// The hosts' lease TTL, short so that a dead host is noticed quickly.
const TTL_S: u64 = 3;

fn vtep(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, i as u8 + 1)
}

/// The underlay bridge with etcd on it.
fn underlay(lab: &mut Lab) {
    lab.add_ns("ul").unwrap();
    lab.ip("ul", &["link", "add", "br0", "type", "bridge"])
        .unwrap();
    lab.addr("ul", "br0", &format!("{ETCD_IP}/24")).unwrap();
    lab.up("ul", "br0").unwrap();
    let data = lab.dir().join("etcd");
    let client = format!("http://{ETCD_IP}:2379");
    let etcd = Command::new("etcd").arg("--version").output();
    assert!(
        etcd.is_ok_and(|o| o.status.success()),
        "etcd is missing: run scripts/setup-engines.sh (Debian's etcd-server)"
    );
    lab.spawn_os(
        "ul",
        &[
            "etcd".into(),
            "--name".into(),
            "ul".into(),
            "--data-dir".into(),
            data.into(),
            "--listen-client-urls".into(),
            client.clone().into(),
            "--advertise-client-urls".into(),
            client.into(),
            "--listen-peer-urls".into(),
            "http://127.0.0.1:2380".into(),
            "--initial-advertise-peer-urls".into(),
            "http://127.0.0.1:2380".into(),
            "--initial-cluster".into(),
            "ul=http://127.0.0.1:2380".into(),
        ],
        "etcd",
    )
    .unwrap();
    lab.wait_listen("ul", 2379, Duration::from_secs(20))
        .unwrap();
}

/// Host `i`: its uplink and management interface on the underlay, and its sluiced (its API
/// socket and pid).
fn host(lab: &mut Lab, bin: &Path, i: usize) -> (PathBuf, u32) {
    let h = HOSTS[i];
    lab.add_ns(h).unwrap();
    for (dev, port) in [("up0", format!("up{i}")), ("mg0", format!("mg{i}"))] {
        lab.veth((h, dev), ("ul", &port)).unwrap();
        lab.ip("ul", &["link", "set", &port, "master", "br0"])
            .unwrap();
        lab.up("ul", &port).unwrap();
        lab.up(h, dev).unwrap();
    }
    lab.addr(h, "mg0", &format!("10.99.0.{}/24", i + 1))
        .unwrap();
    let pid = start_sluiced(lab, bin, i, h);
    (socket(lab, i), pid)
}

fn socket(lab: &Lab, i: usize) -> PathBuf {
    lab.dir().join(format!("{}.sock", HOSTS[i]))
}

/// Starts host `i`'s sluiced (again, after a kill), logging to `log`; its pid.
fn start_sluiced(lab: &mut Lab, bin: &Path, i: usize, log: &str) -> u32 {
    let h = HOSTS[i];
    let args: Vec<std::ffi::OsString> = vec![
        bin.join("sluiced").into(),
        "--socket".into(),
        socket(lab, i).into(),
        "--state-dir".into(),
        lab.dir().join(format!("{h}-state")).into(),
        "--uplink".into(),
        "up0".into(),
        "--uplink-ip".into(),
        format!("{}/24", vtep(i)).into(),
        "--cluster-store".into(),
        format!("etcd://{ETCD_IP}:2379").into(),
        "--cluster-advertise".into(),
        vtep(i).to_string().into(),
        "--cluster-ttl".into(),
        TTL_S.to_string().into(),
        "--workers".into(),
        "1".into(),
        "--spare-ports".into(),
        "1".into(),
        "--no-dns".into(),
    ];
    lab.spawn_os(h, &args, log).unwrap()
}

fn sluice(bin: &Path, sock: &Path, args: &[&str]) -> Output {
    Command::new(bin.join("sluice"))
        .arg("--socket")
        .arg(sock)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn sluice_ok(bin: &Path, sock: &Path, args: &[&str]) -> String {
    let o = sluice(bin, sock, args);
    assert!(
        o.status.success(),
        "sluice {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Waits up to `within` for `what` to hold.
fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The overlay networks `sock`'s host lists.
fn networks(bin: &Path, sock: &Path) -> Vec<String> {
    sluice_ok(bin, sock, &["network", "ls", "--format", "{{.Name}}"])
        .lines()
        .map(str::to_string)
        .collect()
}

/// The address of `eth0` in namespace `ns`.
fn address(lab: &Lab, ns: &str) -> Ipv4Addr {
    let out = lab
        .exec(ns, &["ip", "-4", "-o", "addr", "show", "eth0"])
        .unwrap();
    let cidr = out.split_whitespace().nth(3).expect("an address");
    cidr.split('/').next().unwrap().parse().unwrap()
}

/// Whether `from` learns a MAC for `ip` (answered locally when `ip` is in its host's remote
/// table), after forgetting what it knew.
fn resolves(lab: &Lab, from: &str, ip: Ipv4Addr) -> bool {
    let ip = ip.to_string();
    lab.ip(from, &["neigh", "flush", "dev", "eth0"]).unwrap();
    let _ = lab.exec_output(from, &["ping", "-c", "1", "-W", "1", "-q", &ip]);
    let neigh = lab.ip(from, &["neigh", "show", &ip]).unwrap();
    neigh.contains("lladdr")
}

fn etcd_keys(lab: &Lab, prefix: &str) -> String {
    let endpoints = format!("http://{ETCD_IP}:2379");
    let args = [
        "env",
        "ETCDCTL_API=3",
        "etcdctl",
        "--endpoints",
        &endpoints,
        "get",
        "--prefix",
        "--keys-only",
        prefix,
    ];
    lab.exec("ul", &args).unwrap()
}

#[test]
fn overlay_across_three_hosts_through_etcd() {
    let Some(bin) = sluice_tests::bins::release_bin_dir(&["sluice", "sluiced"]) else {
        return;
    };
    let mut lab = Lab::new("clu").unwrap();
    underlay(&mut lab);
    let (socks, pids): (Vec<PathBuf>, Vec<u32>) = (0..3).map(|i| host(&mut lab, &bin, i)).unzip();
    for (i, s) in socks.iter().enumerate() {
        eventually(
            &format!("sluiced on {} answers", HOSTS[i]),
            Duration::from_secs(20),
            || sluice(&bin, s, &["network", "ls", "-q"]).status.success(),
        );
    }

    // Created on h1, seen on every host.
    sluice_ok(
        &bin,
        &socks[0],
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "10.20.0.0/24",
            "ov",
        ],
    );
    for s in &socks {
        eventually("ov on every host", Duration::from_secs(10), || {
            networks(&bin, s).contains(&"ov".to_string())
        });
        let vni = sluice_ok(
            &bin,
            s,
            &[
                "network",
                "inspect",
                "ov",
                "--format",
                "{{index .Options \"vni\"}}",
            ],
        );
        assert_eq!(vni.trim(), "4096");
    }
    // Without --subnet, the subnet the creating host picks is the one every host uses.
    sluice_ok(
        &bin,
        &socks[1],
        &["network", "create", "-d", "overlay", "ow"],
    );
    let subnet_on = |s: &Path| {
        let out = sluice_ok(&bin, s, &["network", "inspect", "ow"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0]["IPAM"]["Config"][0]["Subnet"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for s in &socks {
        eventually("ow on every host", Duration::from_secs(10), || {
            networks(&bin, s).contains(&"ow".to_string())
        });
    }
    let picked = subnet_on(&socks[1]);
    assert!(socks.iter().all(|s| subnet_on(s) == picked), "{picked}");
    sluice_ok(&bin, &socks[2], &["network", "rm", "ow"]);
    for s in &socks {
        eventually("ow leaves every host", Duration::from_secs(10), || {
            !networks(&bin, s).contains(&"ow".to_string())
        });
    }

    // A second create of the name on another host is refused.
    let again = sluice(
        &bin,
        &socks[1],
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "10.21.0.0/24",
            "ov",
        ],
    );
    assert!(!again.status.success());

    // Two containers per host, all connected at once: six distinct addresses.
    let containers: Vec<(usize, String)> = (0..3)
        .flat_map(|i| [(i, format!("c{i}a")), (i, format!("c{i}b"))])
        .collect();
    for (_, c) in &containers {
        lab.add_ns(c).unwrap();
    }
    std::thread::scope(|scope| {
        for (i, c) in &containers {
            let (bin, sock) = (&bin, &socks[*i]);
            let path = format!("/run/netns/{}", lab.ns_name(c).unwrap());
            scope.spawn(move || {
                sluice_ok(bin, sock, &["network", "connect", "--name", c, "ov", &path])
            });
        }
    });
    let ips: Vec<Ipv4Addr> = containers.iter().map(|(_, c)| address(&lab, c)).collect();
    let distinct: std::collections::BTreeSet<_> = ips.iter().collect();
    assert_eq!(distinct.len(), ips.len(), "duplicate addresses: {ips:?}");

    // Every host's first container reaches the others' over VXLAN.
    for a in [0, 2, 4] {
        for b in [0, 2, 4] {
            if a != b {
                lab.wait_ping(&containers[a].1, ips[b], Duration::from_secs(10))
                    .unwrap_or_else(|e| panic!("{e}; logs in {}", lab.dir().display()));
            }
        }
    }
    let rm = sluice(&bin, &socks[0], &["network", "rm", "ov"]);
    assert!(!rm.status.success(), "rm with endpoints must be refused");
    assert!(
        String::from_utf8_lossy(&rm.stderr).contains("endpoints"),
        "{rm:?}"
    );

    // h3 dies: its lease expires and its endpoints leave the store and the others' tables.
    assert!(resolves(&lab, "c0a", ips[4]));
    let count = |lab: &Lab| {
        etcd_keys(lab, "/sluice/v1/endpoints/")
            .lines()
            .filter(|l| !l.is_empty())
            .count()
    };
    assert_eq!(count(&lab), 6);
    lab.kill(pids[2]);
    let killed = Instant::now();
    eventually(
        "h3's endpoints leave etcd",
        Duration::from_secs(TTL_S + 3),
        || count(&lab) == 4,
    );
    eventually(
        "h3's endpoints leave h1's table",
        Duration::from_secs(TTL_S + 4),
        || !resolves(&lab, "c0a", ips[4]),
    );
    eprintln!(
        "h3's endpoints gone from h1 {:?} after the kill",
        killed.elapsed()
    );
    lab.wait_ping("c0a", ips[2], Duration::from_secs(5))
        .unwrap();

    // h3 comes back on its state: it publishes again the endpoints it still has.
    start_sluiced(&mut lab, &bin, 2, "h3-again");
    eventually(
        "h3's endpoints back in etcd",
        Duration::from_secs(20),
        || count(&lab) == 6,
    );
    lab.wait_ping("c0a", ips[4], Duration::from_secs(10))
        .unwrap();
    lab.wait_ping(&containers[4].1, ips[2], Duration::from_secs(10))
        .unwrap();

    // prune on h1 once its own endpoints are gone: an idle overlay goes from every host, ov
    // stays (h2 and h3 have endpoints on it).
    sluice_ok(
        &bin,
        &socks[2],
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "10.22.0.0/24",
            "oz",
        ],
    );
    eventually("oz on h1", Duration::from_secs(10), || {
        networks(&bin, &socks[0]).contains(&"oz".to_string())
    });
    for (i, c) in &containers[..2] {
        sluice_ok(&bin, &socks[*i], &["network", "disconnect", "ov", c]);
    }
    sluice_ok(&bin, &socks[0], &["network", "prune", "-f"]);
    for s in &socks {
        eventually("oz leaves every host", Duration::from_secs(10), || {
            !networks(&bin, s).contains(&"oz".to_string())
        });
    }
    assert!(networks(&bin, &socks[0]).contains(&"ov".to_string()));

    // With every endpoint gone, rm on h1 removes ov on h2 and h3 too.
    for (i, c) in &containers[2..] {
        sluice_ok(&bin, &socks[*i], &["network", "disconnect", "ov", c]);
    }
    sluice_ok(&bin, &socks[0], &["network", "rm", "ov"]);
    for s in &socks[1..] {
        eventually("ov leaves h2 and h3", Duration::from_secs(10), || {
            !networks(&bin, s).contains(&"ov".to_string())
        });
    }
    assert!(etcd_keys(&lab, "/sluice/v1/networks/").trim().is_empty());
}
