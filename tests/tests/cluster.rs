//! Overlay networks across three hosts kept in a three-member etcd cluster (`sluiced
//! --cluster-store`): hosts `h1`..`h3` are namespaces, each running its own sluiced with uplink
//! `up0` (its VTEP, 192.0.2.N) and a management interface `mg0` (10.99.0.N) on which the test
//! runs that host's etcd member (Debian's `etcd-server`, data directories in the lab's);
//! namespace `ul` is the underlay, a bridge joining every `up0` and `mg0`. A network created on
//! one host appears on all; 50 endpoints connected at once on each host get 150 distinct
//! addresses; endpoints ping each other across hosts by name (the embedded DNS knows the other
//! hosts' endpoints) and `inspect` shows which endpoint lives on which host; `network rm` is
//! refused while endpoints exist; with one etcd member stopped everything keeps working; with
//! all stopped forwarding goes on and create/connect fail naming the store, and once etcd is
//! back every host follows it again; a member that hangs (SIGSTOP) under a host's watch is
//! noticed by the stall timeout; a killed host's endpoints leave the others' tables within its
//! lease TTL and come back when it restarts; `network rm` on one host removes the network
//! everywhere. Needs root, etcd and the release binaries (see tests/tests/daemon.rs).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use sluice_lab::lab::Lab;
use sluice_tests::cli::{cluster_sluiced, daemon_lab, eventually, host_socket, sluice, sluice_ok};

const HOSTS: [&str; 3] = ["h1", "h2", "h3"];
/// The hosts' lease TTL, short so that a dead host is noticed quickly (and a stalled watch,
/// after twice that).
const TTL_S: u64 = 3;
/// Endpoints connected at once on each host.
const PER_HOST: usize = 50;

fn vtep(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, i as u8 + 1)
}

/// Host `i`'s management address, where its etcd member listens.
fn mgmt(i: usize) -> String {
    format!("10.99.0.{}", i + 1)
}

/// Every member's client address, as `--cluster-store` and etcdctl take them.
fn members() -> Vec<String> {
    (0..3).map(|i| format!("{}:2379", mgmt(i))).collect()
}

/// The underlay bridge.
fn underlay(lab: &mut Lab) {
    lab.add_ns("ul").unwrap();
    lab.ip("ul", &["link", "add", "br0", "type", "bridge"])
        .unwrap();
    lab.up("ul", "br0").unwrap();
}

/// Host `i`'s namespace with its uplink and management interface on the underlay.
fn host_links(lab: &mut Lab, i: usize) {
    let h = HOSTS[i];
    lab.add_ns(h).unwrap();
    for (dev, port) in [("up0", format!("up{i}")), ("mg0", format!("mg{i}"))] {
        lab.veth((h, dev), ("ul", &port)).unwrap();
        lab.ip("ul", &["link", "set", &port, "master", "br0"])
            .unwrap();
        lab.up("ul", &port).unwrap();
        lab.up(h, dev).unwrap();
    }
    lab.addr(h, "mg0", &format!("{}/24", mgmt(i))).unwrap();
}

/// Starts (or, on its data directory, restarts) host `i`'s etcd member; its pid.
fn start_etcd(lab: &mut Lab, i: usize, log: &str) -> u32 {
    let h = HOSTS[i];
    let url = |port: u16| format!("http://{}:{port}", mgmt(i));
    let cluster: Vec<String> = (0..3)
        .map(|k| format!("{}=http://{}:2380", HOSTS[k], mgmt(k)))
        .collect();
    let args: Vec<std::ffi::OsString> = vec![
        "etcd".into(),
        "--name".into(),
        h.into(),
        "--data-dir".into(),
        lab.dir().join(format!("etcd-{h}")).into(),
        "--listen-client-urls".into(),
        url(2379).into(),
        "--advertise-client-urls".into(),
        url(2379).into(),
        "--listen-peer-urls".into(),
        url(2380).into(),
        "--initial-advertise-peer-urls".into(),
        url(2380).into(),
        "--initial-cluster".into(),
        cluster.join(",").into(),
        "--initial-cluster-token".into(),
        "sluice-lab".into(),
        // Idle watches hear from etcd every second, well within the hosts' stall timeout.
        "--experimental-watch-progress-notify-interval".into(),
        "1s".into(),
    ];
    lab.spawn_os(h, &args, log).unwrap()
}

/// The three members, started together; once every one answers.
fn etcd_cluster(lab: &mut Lab) -> Vec<u32> {
    let etcd = Command::new("etcd").arg("--version").output();
    assert!(
        etcd.is_ok_and(|o| o.status.success()),
        "etcd is missing: run scripts/setup-engines.sh (Debian's etcd-server)"
    );
    let pids: Vec<u32> = (0..3)
        .map(|i| start_etcd(lab, i, &format!("etcd-{}", HOSTS[i])))
        .collect();
    wait_healthy(lab);
    pids
}

/// Waits until every member answers and the cluster has a leader.
fn wait_healthy(lab: &Lab) {
    eventually(
        "etcd's three members are healthy",
        Duration::from_secs(30),
        || etcdctl(lab, &["endpoint", "health"]).is_ok_and(|o| o.status.success()),
    );
}

fn etcdctl(lab: &Lab, args: &[&str]) -> sluice_lab::lab::Result<Output> {
    let endpoints = members().join(",");
    let mut full = vec![
        "env",
        "ETCDCTL_API=3",
        "etcdctl",
        "--dial-timeout",
        "2s",
        "--command-timeout",
        "3s",
        "--endpoints",
        &endpoints,
    ];
    full.extend(args);
    lab.exec_output("h1", &full)
}

/// Host `i`'s sluiced (its API socket and pid).
fn host(lab: &mut Lab, bin: &Path, i: usize) -> (PathBuf, u32) {
    let pid = start_sluiced(lab, bin, i, HOSTS[i]);
    (host_socket(lab, HOSTS[i]), pid)
}

/// Starts host `i`'s sluiced (again, after a kill), logging to `log`; its pid.
fn start_sluiced(lab: &mut Lab, bin: &Path, i: usize, log: &str) -> u32 {
    let h = HOSTS[i];
    let store = format!("etcd://{}", members().join(","));
    let vtep = vtep(i).to_string();
    let extra = ["--cluster-advertise".to_string(), vtep.clone()];
    let args = cluster_sluiced(bin, lab, h, (&vtep, &store, TTL_S), &extra);
    lab.spawn_os(h, &args, log).unwrap()
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
    let o = etcdctl(lab, &["get", "--prefix", "--keys-only", prefix]).unwrap();
    assert!(o.status.success(), "{o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// How many keys etcd holds under `prefix`.
fn etcd_count(lab: &Lab, prefix: &str) -> usize {
    etcd_keys(lab, prefix)
        .lines()
        .filter(|l| !l.is_empty())
        .count()
}

/// The resolv.conf sluiced wrote for endpoint `name` of `ov` on `sock`'s host.
fn resolv_conf(bin: &Path, sock: &Path, name: &str) -> String {
    let out = sluice_ok(bin, sock, &["network", "inspect", "ov"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let entry = v[0]["Containers"]
        .as_object()
        .unwrap()
        .values()
        .find(|c| c["Name"] == name)
        .unwrap_or_else(|| panic!("{name} is not in {out}"));
    entry["ResolvConfPath"].as_str().unwrap().to_string()
}

/// Whether `from` pings `name`, resolved through its own resolv.conf (`resolv`, bind-mounted
/// over /etc/resolv.conf in a mount namespace of the ping's own, as a runtime does).
fn pings_by_name(lab: &Lab, from: &str, resolv: &str, name: &str) -> bool {
    let script = format!("mount --bind {resolv} /etc/resolv.conf && ping -c 1 -W 1 -q {name}");
    lab.exec_output(from, &["unshare", "-m", "sh", "-c", &script])
        .is_ok_and(|o| o.status.success())
}

/// `network connect`s every `(host, name)` of `eps` to `ov` at once; how long they took.
fn connect_all(lab: &Lab, bin: &Path, socks: &[PathBuf], eps: &[(usize, String)]) -> Duration {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for (i, c) in eps {
            let (bin, sock) = (bin, &socks[*i]);
            let path = format!("/run/netns/{}", lab.ns_name(c).unwrap());
            scope.spawn(move || {
                sluice_ok(bin, sock, &["network", "connect", "--name", c, "ov", &path])
            });
        }
    });
    start.elapsed()
}

/// `network disconnect`s every `(host, name)` of `eps` from `ov` at once.
fn disconnect_all(bin: &Path, socks: &[PathBuf], eps: &[(usize, String)]) {
    std::thread::scope(|scope| {
        for (i, c) in eps {
            let (bin, sock) = (bin, &socks[*i]);
            scope.spawn(move || sluice_ok(bin, sock, &["network", "disconnect", "ov", c]));
        }
    });
}

#[test]
fn overlay_across_three_hosts_through_etcd() {
    let Some((bin, mut lab)) = daemon_lab("clu") else {
        return;
    };
    let began = Instant::now();
    underlay(&mut lab);
    for i in 0..3 {
        host_links(&mut lab, i);
    }
    let mut etcd = etcd_cluster(&mut lab);
    let (socks, pids): (Vec<PathBuf>, Vec<u32>) = (0..3).map(|i| host(&mut lab, &bin, i)).unzip();
    for (i, s) in socks.iter().enumerate() {
        eventually(
            &format!("sluiced on {} answers", HOSTS[i]),
            Duration::from_secs(20),
            || sluice(&bin, s, &["network", "ls", "-q"]).status.success(),
        );
    }
    eventually("every host registered", Duration::from_secs(20), || {
        etcd_count(&lab, "/sluice/v1/hosts/") == 3
    });

    created_everywhere(&bin, &socks);
    let (containers, ips) = fifty_per_host(&mut lab, &bin, &socks);
    by_name_and_inspect(&lab, &bin, &socks, &containers, &ips);
    let rm = sluice(&bin, &socks[0], &["network", "rm", "ov"]);
    assert!(!rm.status.success(), "rm with endpoints must be refused");
    assert!(
        String::from_utf8_lossy(&rm.stderr).contains("endpoints"),
        "{rm:?}"
    );
    etcd_faults(&mut lab, &bin, &socks, &mut etcd, &ips);
    compacted_while_away(&mut lab, &bin, &socks, &mut etcd, pids[0]);
    host_dies(&mut lab, &bin, &socks, pids[2], &containers, &ips);
    removed_everywhere(&lab, &bin, &socks, &containers);
    eprintln!("cluster test took {:?}", began.elapsed());
}

/// `ov` (and `ow`, without a subnet) created on one host and seen on every host; a second
/// create of the name refused.
fn created_everywhere(bin: &Path, socks: &[PathBuf]) {
    sluice_ok(
        bin,
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
    for s in socks {
        eventually("ov on every host", Duration::from_secs(10), || {
            networks(bin, s).contains(&"ov".to_string())
        });
        let vni = sluice_ok(
            bin,
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
        bin,
        &socks[1],
        &["network", "create", "-d", "overlay", "ow"],
    );
    let subnet_on = |s: &Path| {
        let out = sluice_ok(bin, s, &["network", "inspect", "ow"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0]["IPAM"]["Config"][0]["Subnet"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for s in socks {
        eventually("ow on every host", Duration::from_secs(10), || {
            networks(bin, s).contains(&"ow".to_string())
        });
    }
    let picked = subnet_on(&socks[1]);
    assert!(socks.iter().all(|s| subnet_on(s) == picked), "{picked}");
    sluice_ok(bin, &socks[2], &["network", "rm", "ow"]);
    for s in socks {
        eventually("ow leaves every host", Duration::from_secs(10), || {
            !networks(bin, s).contains(&"ow".to_string())
        });
    }
    let again = sluice(
        bin,
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
}

/// 50 containers per host connected at once: 150 distinct addresses. All but two per host
/// (`cNa`, `cNb`, returned with their addresses) are disconnected again, at once.
fn fifty_per_host(
    lab: &mut Lab,
    bin: &Path,
    socks: &[PathBuf],
) -> (Vec<(usize, String)>, Vec<Ipv4Addr>) {
    let all: Vec<(usize, String)> = (0..3)
        .flat_map(|i| {
            let named = [format!("c{i}a"), format!("c{i}b")];
            let bulk = (0..PER_HOST - 2).map(move |k| format!("b{i}x{k}"));
            named.into_iter().chain(bulk).map(move |c| (i, c))
        })
        .collect();
    for (_, c) in &all {
        lab.add_ns(c).unwrap();
    }
    let took = connect_all(lab, bin, socks, &all);
    eprintln!(
        "{} connects on three hosts at once took {took:?}",
        all.len()
    );
    let ips: Vec<Ipv4Addr> = all.iter().map(|(_, c)| address(lab, c)).collect();
    let distinct: std::collections::BTreeSet<_> = ips.iter().collect();
    assert_eq!(distinct.len(), 3 * PER_HOST, "duplicate addresses: {ips:?}");
    assert_eq!(etcd_count(lab, "/sluice/v1/endpoints/ov/"), 3 * PER_HOST);
    let (named, bulk): (Vec<_>, Vec<_>) = all
        .into_iter()
        .zip(ips)
        .partition(|((_, c), _)| c.starts_with('c'));
    let bulk: Vec<(usize, String)> = bulk.into_iter().map(|(c, _)| c).collect();
    disconnect_all(bin, socks, &bulk);
    assert_eq!(etcd_count(lab, "/sluice/v1/endpoints/ov/"), 6);
    assert_eq!(etcd_count(lab, "/sluice/v1/ipam/ov/"), 6);
    named.into_iter().unzip()
}

/// Every host's containers ping the others' by name (through the embedded resolver, which
/// knows the other hosts' endpoints), and `inspect` shows the peers.
fn by_name_and_inspect(
    lab: &Lab,
    bin: &Path,
    socks: &[PathBuf],
    containers: &[(usize, String)],
    ips: &[Ipv4Addr],
) {
    for (a, (ha, ca)) in containers.iter().enumerate().step_by(2) {
        let resolv = resolv_conf(bin, &socks[*ha], ca);
        for (hb, cb) in containers.iter().step_by(2) {
            if hb != ha {
                eventually(
                    &format!("{ca} pings {cb} by name"),
                    Duration::from_secs(10),
                    || pings_by_name(lab, ca, &resolv, cb),
                );
            }
        }
        lab.wait_ping(ca, ips[(a + 3) % 6], Duration::from_secs(5))
            .unwrap();
    }
    let out = sluice_ok(bin, &socks[0], &["network", "inspect", "ov"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let peers: Vec<String> = v[0]["Peers"]
        .as_array()
        .unwrap_or_else(|| panic!("no Peers in {out}"))
        .iter()
        .map(|p| p["IP"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(peers, ["192.0.2.1", "192.0.2.2", "192.0.2.3"]);
    let entries = v[0]["Containers"].as_object().unwrap();
    assert_eq!(entries.len(), 6, "{out}");
    for (i, c) in containers {
        let e = entries
            .iter()
            .find(|(_, e)| e["Name"] == c.as_str())
            .unwrap_or_else(|| panic!("{c} not in {out}"));
        assert_eq!(e.1["Host"], vtep(*i).to_string().as_str(), "{c}");
        assert_eq!(
            e.0.starts_with("ep-"),
            *i != 0,
            "{c}: remote entries are ep-ID"
        );
    }
}

/// One etcd member stopped: create and connect still work. All stopped: forwarding goes on,
/// create and connect fail naming the store; back: every host follows the store again. A
/// member that hangs under h1's watch: the stall timeout moves the watch to another member.
fn etcd_faults(lab: &mut Lab, bin: &Path, socks: &[PathBuf], etcd: &mut [u32], ips: &[Ipv4Addr]) {
    let create = |s: &Path, name: &str, subnet: &str| {
        sluice(
            bin,
            s,
            &[
                "network", "create", "-d", "overlay", "--subnet", subnet, name,
            ],
        )
    };
    for c in ["f1", "f2"] {
        lab.add_ns(c).unwrap();
    }
    let paths: Vec<String> = ["f1", "f2"]
        .iter()
        .map(|c| format!("/run/netns/{}", lab.ns_name(c).unwrap()))
        .collect();
    let connect = |s: &Path, c: &str| {
        let path = &paths[usize::from(c == "f2")];
        sluice(bin, s, &["network", "connect", "--name", c, "ov", path])
    };

    // h1's member (the first every host tries) stops.
    lab.kill(etcd[0]);
    let o = create(&socks[1], "of1", "10.31.0.0/24");
    assert!(o.status.success(), "create with a member down: {o:?}");
    let o = connect(&socks[2], "f1");
    assert!(o.status.success(), "connect with a member down: {o:?}");
    for s in socks {
        eventually("of1 on every host", Duration::from_secs(10), || {
            networks(bin, s).contains(&"of1".to_string())
        });
    }
    let f1 = address(lab, "f1");
    lab.wait_ping("c0a", f1, Duration::from_secs(10)).unwrap();
    etcd[0] = start_etcd(lab, 0, "etcd-h1-again");
    wait_healthy(lab);

    // Every member stops: forwarding goes on with the last known state.
    for pid in etcd.iter() {
        lab.kill(*pid);
    }
    for (from, to) in [
        ("c0a", ips[2]),
        ("c1a", ips[4]),
        ("c2a", ips[0]),
        ("c0a", f1),
    ] {
        lab.wait_ping(from, to, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("forwarding without etcd: {e}"));
    }
    for o in [
        create(&socks[0], "of2", "10.32.0.0/24"),
        connect(&socks[1], "f2"),
    ] {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{o:?}");
        assert!(
            err.contains("cluster store") && err.contains(&members().join(",")),
            "the error names the store: {err}"
        );
    }
    assert!(
        networks(bin, &socks[0]).iter().all(|n| n != "of2"),
        "undone"
    );

    // etcd returns: every host watches again (from where it was) and follows the changes.
    for (i, pid) in etcd.iter_mut().enumerate() {
        *pid = start_etcd(lab, i, &format!("etcd-{}-back", HOSTS[i]));
    }
    wait_healthy(lab);
    eventually("create works again", Duration::from_secs(20), || {
        create(&socks[0], "of2", "10.32.0.0/24").status.success()
    });
    eventually("connect works again", Duration::from_secs(20), || {
        connect(&socks[1], "f2").status.success()
    });
    sluice_ok(bin, &socks[2], &["network", "disconnect", "ov", "f1"]);
    for s in socks {
        eventually("of2 on every host", Duration::from_secs(15), || {
            networks(bin, s).contains(&"of2".to_string())
        });
    }
    eventually("f1 leaves h1's table", Duration::from_secs(15), || {
        !resolves(lab, "c0a", f1)
    });
    lab.wait_ping("c0a", address(lab, "f2"), Duration::from_secs(10))
        .unwrap();

    // The member under h1's watch hangs: no reset, no answer. h1 notices within its stall
    // timeout (twice the TTL) and watches through another member.
    let lease = host_lease(lab, 0);
    let watched = watch_member(lab);
    lab.pause(etcd[watched]);
    let o = create(&socks[1], "of3", "10.33.0.0/24");
    assert!(o.status.success(), "create with a hung member: {o:?}");
    eventually(
        "of3 on h1 despite its hung watch",
        Duration::from_secs(2 * TTL_S + 15),
        || networks(bin, &socks[0]).contains(&"of3".to_string()),
    );
    assert_eq!(
        host_lease(lab, 0),
        lease,
        "h1 kept its lease: renewed through another member in time"
    );
    lab.resume(etcd[watched]);
    for n in ["of1", "of2", "of3"] {
        sluice_ok(bin, &socks[0], &["network", "rm", n]);
    }
    sluice_ok(bin, &socks[1], &["network", "disconnect", "ov", "f2"]);
}

/// h1 is frozen while its watch's member dies and, meanwhile, one network is removed, another
/// created on its VNI and the history compacted: once thawed, h1 cannot resume its watch from
/// its revision, reads the store again and catches up with both changes (the removal first).
fn compacted_while_away(lab: &mut Lab, bin: &Path, socks: &[PathBuf], etcd: &mut [u32], h1: u32) {
    let create = |s: &Path, name: &str, subnet: &str| {
        let args = [
            "network", "create", "-d", "overlay", "--subnet", subnet, name,
        ];
        sluice_ok(bin, s, &args)
    };
    create(&socks[1], "ox", "10.34.0.0/24");
    eventually("ox on h1", Duration::from_secs(10), || {
        networks(bin, &socks[0]).contains(&"ox".to_string())
    });
    let vni = |s: &Path, name: &str| {
        let format = "{{index .Options \"vni\"}}";
        let out = sluice_ok(bin, s, &["network", "inspect", name, "--format", format]);
        out.trim().to_string()
    };
    let ox_vni = vni(&socks[1], "ox");
    let watched = watch_member(lab);
    lab.pause(h1);
    lab.kill(etcd[watched]);
    sluice_ok(bin, &socks[1], &["network", "rm", "ox"]);
    // Once h3 has let ox go, oy takes its VNI: h1 must remove ox before it can create oy.
    eventually("ox leaves h3", Duration::from_secs(10), || {
        !networks(bin, &socks[2]).contains(&"ox".to_string())
    });
    create(&socks[2], "oy", "10.35.0.0/24");
    assert_eq!(vni(&socks[2], "oy"), ox_vni, "oy reuses ox's VNI");
    let o = etcdctl(lab, &["get", "--prefix", "--keys-only", "-w", "json", "/"]).unwrap();
    let header: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let revision = header["header"]["revision"].as_i64().expect("a revision");
    let o = etcdctl(lab, &["compact", &revision.to_string()]).unwrap();
    assert!(o.status.success(), "{o:?}");
    lab.resume(h1);
    eventually(
        "h1 catches up after the compaction",
        Duration::from_secs(20),
        || {
            let have = networks(bin, &socks[0]);
            have.contains(&"oy".to_string()) && !have.contains(&"ox".to_string())
        },
    );
    etcd[watched] = start_etcd(lab, watched, "etcd-after-compaction");
    wait_healthy(lab);
    sluice_ok(bin, &socks[0], &["network", "rm", "oy"]);
}

/// The lease host `i`'s records live under (its host record's).
fn host_lease(lab: &Lab, i: usize) -> i64 {
    let key = format!("/sluice/v1/hosts/{}", vtep(i));
    let o = etcdctl(lab, &["get", &key, "-w", "json"]).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["kvs"][0]["lease"]
        .as_i64()
        .unwrap_or_else(|| panic!("no lease for host {i}: {v}"))
}

/// The member h1's sluiced watches through: its one long-lived connection to a client port
/// (h1's etcd member has connections of its own to its client port: only sluiced's count).
fn watch_member(lab: &Lab) -> usize {
    let mut seen = String::new();
    for _ in 0..50 {
        let ss = ["ss", "-Htnp", "state", "established", "dport", "= :2379"];
        seen = lab.exec("h1", &ss).unwrap();
        let ours: Vec<&str> = seen.lines().filter(|l| l.contains("\"sluiced\"")).collect();
        let peers: Vec<usize> = (0..3)
            .filter(|i| {
                let member = format!("{}:2379", mgmt(*i));
                ours.iter().any(|l| l.contains(&member))
            })
            .collect();
        if let [one] = peers.as_slice() {
            return *one;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("h1's watch is not on one member: {seen}");
}

/// h3 dies: its lease expires and its endpoints leave the store and the others' tables; it
/// comes back on its state and publishes them again.
fn host_dies(
    lab: &mut Lab,
    bin: &Path,
    socks: &[PathBuf],
    pid: u32,
    containers: &[(usize, String)],
    ips: &[Ipv4Addr],
) {
    // Leases lost while a member hung have been taken again.
    let count = |lab: &Lab| etcd_count(lab, "/sluice/v1/endpoints/");
    eventually("every endpoint published", Duration::from_secs(15), || {
        count(lab) == 6
    });
    assert!(resolves(lab, "c0a", ips[4]));
    let on_h3 = |s: &Path| {
        let out = sluice_ok(bin, s, &["network", "inspect", "ov"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let entries = v[0]["Containers"].as_object().unwrap().clone();
        entries
            .values()
            .filter(|e| e["Host"] == "192.0.2.3")
            .count()
    };
    assert_eq!(on_h3(&socks[0]), 2);
    lab.kill(pid);
    let killed = Instant::now();
    // The bound: gone from the other hosts' tables within the lease TTL plus 1 s.
    eventually(
        "h3's endpoints leave h1's table",
        Duration::from_secs(TTL_S + 1),
        || on_h3(&socks[0]) == 0,
    );
    let gone = killed.elapsed();
    eventually("h3's endpoints leave etcd", Duration::from_secs(3), || {
        count(lab) == 4
    });
    assert!(
        !resolves(lab, "c0a", ips[4]),
        "ARP for h3's endpoint is no longer answered"
    );
    eprintln!("h3's endpoints gone from h1's table {gone:?} after the kill");
    lab.wait_ping("c0a", ips[2], Duration::from_secs(5))
        .unwrap();
    start_sluiced(lab, bin, 2, "h3-again");
    eventually(
        "h3's endpoints back in etcd",
        Duration::from_secs(20),
        || count(lab) == 6,
    );
    lab.wait_ping("c0a", ips[4], Duration::from_secs(10))
        .unwrap();
    lab.wait_ping(&containers[4].1, ips[2], Duration::from_secs(10))
        .unwrap();
    eventually(
        "sluiced on h3 answers again",
        Duration::from_secs(20),
        || {
            sluice(bin, &socks[2], &["network", "ls", "-q"])
                .status
                .success()
        },
    );
}

/// prune on h1 once its own endpoints are gone: an idle overlay goes from every host, ov stays
/// (h2 and h3 have endpoints on it); with every endpoint gone, rm on h1 removes ov everywhere.
fn removed_everywhere(lab: &Lab, bin: &Path, socks: &[PathBuf], containers: &[(usize, String)]) {
    sluice_ok(
        bin,
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
        networks(bin, &socks[0]).contains(&"oz".to_string())
    });
    for (i, c) in &containers[..2] {
        sluice_ok(bin, &socks[*i], &["network", "disconnect", "ov", c]);
    }
    sluice_ok(bin, &socks[0], &["network", "prune", "-f"]);
    for s in socks {
        eventually("oz leaves every host", Duration::from_secs(10), || {
            !networks(bin, s).contains(&"oz".to_string())
        });
    }
    assert!(networks(bin, &socks[0]).contains(&"ov".to_string()));
    for (i, c) in &containers[2..] {
        sluice_ok(bin, &socks[*i], &["network", "disconnect", "ov", c]);
    }
    sluice_ok(bin, &socks[0], &["network", "rm", "ov"]);
    for s in &socks[1..] {
        eventually("ov leaves h2 and h3", Duration::from_secs(10), || {
            !networks(bin, s).contains(&"ov".to_string())
        });
    }
    assert!(etcd_keys(lab, "/sluice/v1/networks/").trim().is_empty());
}
