//! The flow offload end to end (`sluiced --offload tc`, issue 16): bulk TCP between two
//! endpoints, out through NAPT and in through a published port arrives intact while the
//! kernel forwards most of its bytes (`sluice stats`: offloaded flows and kernel-forwarded
//! bytes); a network disconnect takes the receiver's flows out of the kernel; small
//! request/response stays in userspace and the offload thread sleeps while it has no flow; with
//! `--offload off` nothing is offloaded. The same over IPv6 on a dual-stack network: bridged,
//! out through NAT66, in through a published port on the uplink's v6 address, and out of a
//! routed v6 network (`gateway_mode_ipv6=routed`). Needs root and the release binaries
//! (`cargo build --release --bins`).
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use sluice_lab::daemonlab::{DaemonLab, OUTSIDE_IP, UPLINK_IP};
use sluice_tests::cli::eventually;

/// Bytes each transfer sends.
const SIZE: u64 = 16 << 20;

/// A daemon with one worker and the flow offload as `mode` (`tc` or `off`).
fn start(tag: &str, mode: &str) -> Option<DaemonLab> {
    let bin = sluice_tests::bins::release_bin_dir(&["sluice", "sluiced"])?;
    Some(DaemonLab::start(tag, &bin, &["--workers", "1", "--offload", mode]).unwrap())
}

fn ok(d: &DaemonLab, args: &[&str]) -> String {
    d.sluice_ok(args)
        .unwrap_or_else(|e| panic!("{e}; daemon log: {}", d.log()))
}

/// The offload's counters in `sluice stats`.
fn offload(d: &DaemonLab) -> Value {
    let out = ok(d, &["stats", "--output", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["offload"].clone()
}

fn counter(v: &Value, name: &str) -> u64 {
    v[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {name} in {v}"))
}

/// One network `net` (10.71.0.0/24) with containers `a` and `b` (b publishing its port 5001
/// on the uplink's 8080).
fn two_endpoints(d: &mut DaemonLab) {
    ok(d, &["network", "create", "--subnet", "10.71.0.0/24", "net"]);
    connect_a_and_b(d, "net");
    d.lab()
        .wait_ping("a", "10.71.0.3".parse().unwrap(), Duration::from_secs(5))
        .unwrap();
}

/// Containers `a` and `b` on network `net`, b publishing its port 5001 on the uplink's 8080.
fn connect_a_and_b(d: &mut DaemonLab, net: &str) {
    for c in ["a", "b"] {
        let ns = d.add_container(c).unwrap();
        let mut args = vec!["network", "connect", "--name", c];
        if c == "b" {
            args.extend(["-p", "8080:5001"]);
        }
        args.extend([net, &ns]);
        ok(d, &args);
    }
}

/// A file of `SIZE` random bytes in the lab's directory and its SHA-256.
fn payload(d: &DaemonLab) -> (PathBuf, String) {
    let path = d.lab().dir().join("payload");
    let p = path.display();
    let sum = d
        .lab()
        .exec(
            "a",
            &[
                "sh",
                "-c",
                &format!("head -c {SIZE} /dev/urandom > {p} && sha256sum < {p}"),
            ],
        )
        .unwrap();
    (path, sum)
}

/// Sends `file` from namespace `from` to `to_ip:to_port`, received by a listener on port
/// `listen` (of `to_ip`'s family) in namespace `server`; returns the SHA-256 of what arrived.
fn transfer(
    d: &mut DaemonLab,
    file: &Path,
    (from, server): (&str, &str),
    (to_ip, to_port, listen): (IpAddr, u16, u16),
    log: &str,
) -> String {
    let sum = d.lab().dir().join(format!("{log}.sum"));
    let (listener, to) = match to_ip {
        IpAddr::V4(ip) => (
            "TCP-LISTEN",
            format!("TCP:{ip}:{to_port},connect-timeout=5"),
        ),
        IpAddr::V6(ip) => (
            "TCP6-LISTEN",
            format!("TCP6:[{ip}]:{to_port},connect-timeout=5"),
        ),
    };
    let script = format!(
        "socat -u {listener}:{listen},reuseaddr - | sha256sum > {s}.tmp && mv {s}.tmp {s}",
        s = sum.display()
    );
    d.lab_mut()
        .spawn(server, &["sh", "-c", &script], log)
        .unwrap();
    d.lab()
        .wait_listen(server, listen, Duration::from_secs(5))
        .unwrap();
    let send = format!("FILE:{}", file.display());
    d.lab()
        .exec(from, &["timeout", "60", "socat", "-u", &send, &to])
        .unwrap();
    eventually("the receiver's checksum", Duration::from_secs(20), || {
        sum.is_file()
    });
    std::fs::read_to_string(&sum).unwrap()
}

/// Checks that a transfer of `SIZE` bytes went mostly through the kernel: one more flow
/// installed and at least 70 % of its bytes counted as kernel-forwarded.
fn mostly_offloaded(d: &DaemonLab, before: &Value, what: &str) {
    eventually(
        &format!("{what}: kernel-forwarded bytes counted"),
        Duration::from_secs(5),
        || {
            let now = offload(d);
            counter(&now, "kernel_bytes") - counter(before, "kernel_bytes") > SIZE * 7 / 10
        },
    );
    let now = offload(d);
    assert!(
        counter(&now, "installed") > counter(before, "installed"),
        "{what}: no flow installed: {now}"
    );
    eprintln!("{what}: {now}");
}

#[test]
fn bulk_tcp_bridged_through_napt_and_published_goes_through_the_kernel_intact() {
    let Some(mut d) = start("offl", "tc") else {
        return;
    };
    two_endpoints(&mut d);
    let st = offload(&d);
    assert_eq!(st["enabled"], true, "offload not running: {}", d.log());
    let (file, sum) = payload(&d);

    let b_ip: IpAddr = "10.71.0.3".parse().unwrap();
    let cases = [
        ("bridged", ("a", "b"), (b_ip, 5001, 5001)),
        ("napt-out", ("a", "out"), (OUTSIDE_IP.into(), 5002, 5002)),
        (
            "published-port",
            ("out", "b"),
            (UPLINK_IP.into(), 8080, 5001),
        ),
    ];
    for (what, ends, to) in cases {
        let before = offload(&d);
        let got = transfer(&mut d, &file, ends, to, what);
        assert_eq!(got, sum, "{what}: transfer corrupted");
        mostly_offloaded(&d, &before, what);
    }

    // Every flow closed with FIN: none left in the kernel.
    eventually("closed flows removed", Duration::from_secs(5), || {
        counter(&offload(&d), "active") == 0
    });
    d.stop();
}

/// The uplink's v6 address and the outside namespace's (its v6 next hop).
const UPLINK6: &str = "2001:db8:73::2";
const OUTSIDE6: &str = "2001:db8:73::1";

#[test]
fn bulk_tcp_over_v6_bridged_nat66_published_and_routed_goes_through_the_kernel_intact() {
    let Some(bin) = sluice_tests::bins::release_bin_dir(&["sluice", "sluiced"]) else {
        return;
    };
    let up6 = format!("{UPLINK6}/64");
    let flags = [
        "--workers",
        "1",
        "--offload",
        "tc",
        "--uplink-ip6",
        &up6,
        "--uplink-gateway6",
        OUTSIDE6,
    ];
    let mut d = DaemonLab::start("offs", &bin, &flags).unwrap();
    d.lab()
        .addr6("out", "eth0", &format!("{OUTSIDE6}/64"))
        .unwrap();
    let create = [
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.73.0.0/24",
        "--subnet",
        "fd00:73::/64",
        "net6",
    ];
    ok(&d, &create);
    connect_a_and_b(&mut d, "net6");
    // A routed v6 network (no NAT66): the outside routes its prefix to the uplink.
    let routed = "com.docker.network.bridge.gateway_mode_ipv6=routed";
    let create = [
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.74.0.0/24",
        "--subnet",
        "fd00:74::/64",
        "--opt",
        routed,
        "direct",
    ];
    ok(&d, &create);
    let ns = d.add_container("r").unwrap();
    ok(&d, &["network", "connect", "--name", "r", "direct", &ns]);
    d.lab()
        .ip(
            "out",
            &["-6", "route", "add", "fd00:74::/64", "via", UPLINK6],
        )
        .unwrap();
    let ping6 = |ns: &str, ip: &str| {
        let out = d
            .lab()
            .exec_output(ns, &["ping", "-6", "-c", "1", "-W", "1", "-q", ip]);
        out.is_ok_and(|o| o.status.success())
    };
    eventually("a reaches b over v6", Duration::from_secs(10), || {
        ping6("a", "fd00:73::3")
    });
    for ns in ["a", "r"] {
        eventually(
            &format!("{ns} reaches the outside over v6"),
            Duration::from_secs(10),
            || ping6(ns, OUTSIDE6),
        );
    }
    assert_eq!(
        offload(&d)["enabled"],
        true,
        "offload not running: {}",
        d.log()
    );
    let (file, sum) = payload(&d);
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let cases = [
        ("bridged-v6", ("a", "b"), (ip("fd00:73::3"), 5001, 5001)),
        ("nat66-out", ("a", "out"), (ip(OUTSIDE6), 5002, 5002)),
        ("published-v6", ("out", "b"), (ip(UPLINK6), 8080, 5001)),
        ("routed-v6-out", ("r", "out"), (ip(OUTSIDE6), 5003, 5003)),
    ];
    for (what, ends, to) in cases {
        let before = offload(&d);
        let got = transfer(&mut d, &file, ends, to, what);
        assert_eq!(got, sum, "{what}: transfer corrupted");
        mostly_offloaded(&d, &before, what);
    }
    eventually("closed v6 flows removed", Duration::from_secs(5), || {
        counter(&offload(&d), "active") == 0
    });
    d.stop();
}

#[test]
fn a_disconnected_receiver_s_flow_leaves_the_kernel() {
    let Some(mut d) = start("offd", "tc") else {
        return;
    };
    two_endpoints(&mut d);
    // A stream that does not end: a's zeros to b's sink, rate-limited by nothing.
    d.lab_mut()
        .spawn(
            "b",
            &["socat", "-u", "TCP-LISTEN:5003,reuseaddr", "OPEN:/dev/null"],
            "sink",
        )
        .unwrap();
    d.lab()
        .wait_listen("b", 5003, Duration::from_secs(5))
        .unwrap();
    d.lab_mut()
        .spawn(
            "a",
            &["socat", "-u", "OPEN:/dev/zero", "TCP:10.71.0.3:5003"],
            "source",
        )
        .unwrap();
    eventually("the stream offloaded", Duration::from_secs(10), || {
        let s = offload(&d);
        counter(&s, "active") == 1 && counter(&s, "kernel_packets") > 1000
    });
    ok(&d, &["network", "disconnect", "net", "b"]);
    eventually("the flow flushed", Duration::from_secs(5), || {
        counter(&offload(&d), "active") == 0
    });
    // Nothing forwards the old flow any more: the kernel's count stands still.
    let before = counter(&offload(&d), "kernel_packets");
    std::thread::sleep(Duration::from_millis(1500));
    let after = offload(&d);
    assert_eq!(counter(&after, "kernel_packets"), before, "{after}");
    assert_eq!(counter(&after, "active"), 0, "{after}");
    d.stop();
}

/// Context switches of the daemon's offload thread so far (`sluice-offload` in its tasks).
fn offload_thread_switches(d: &DaemonLab) -> u64 {
    let pid = d.pid().expect("the daemon runs");
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let task = tasks
        .flatten()
        .map(|t| t.path())
        .find(|t| {
            std::fs::read_to_string(t.join("comm")).is_ok_and(|c| c.trim() == "sluice-offload")
        })
        .expect("an offload thread");
    let status = std::fs::read_to_string(task.join("status")).unwrap();
    status
        .lines()
        .filter(|l| l.contains("ctxt_switches"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

#[test]
fn request_response_stays_in_userspace_and_the_idle_offload_thread_sleeps() {
    let Some(mut d) = start("offq", "tc") else {
        return;
    };
    two_endpoints(&mut d);
    let echo = ["socat", "TCP-LISTEN:5002,reuseaddr,fork", "EXEC:cat"];
    d.lab_mut().spawn("b", &echo, "echo").unwrap();
    d.lab()
        .wait_listen("b", 5002, Duration::from_secs(5))
        .unwrap();
    // 300 small messages, each answered before the next: a request/response flow.
    let talk = "for i in $(seq 300); do echo ping-$i; sleep 0.002; done \
        | timeout 20 socat -t 2 - TCP:10.71.0.3:5002 | wc -l";
    let answered = d.lab().exec("a", &["sh", "-c", talk]).unwrap();
    assert_eq!(answered.trim(), "300", "every message answered");
    let st = offload(&d);
    assert_eq!(st["enabled"], true, "{st}");
    assert_eq!(
        counter(&st, "offered"),
        0,
        "small messages offer nothing: {st}"
    );
    assert_eq!(counter(&st, "active"), 0, "{st}");
    // Idle, without flows: the thread waits for an offer instead of a round per millisecond.
    let before = offload_thread_switches(&d);
    std::thread::sleep(Duration::from_secs(2));
    let woke = offload_thread_switches(&d) - before;
    assert!(
        woke < 20,
        "the idle offload thread woke {woke} times in 2 s"
    );
    d.stop();
}

#[test]
fn with_offload_off_nothing_is_offloaded() {
    let Some(mut d) = start("offo", "off") else {
        return;
    };
    two_endpoints(&mut d);
    let (file, sum) = payload(&d);
    let b_ip: IpAddr = "10.71.0.3".parse().unwrap();
    let got = transfer(&mut d, &file, ("a", "b"), (b_ip, 5001, 5001), "bridged");
    assert_eq!(got, sum);
    let st = offload(&d);
    assert_eq!(st["enabled"], false, "{st}");
    assert_eq!(counter(&st, "installed"), 0, "{st}");
    assert_eq!(counter(&st, "kernel_bytes"), 0, "{st}");
    d.stop();
}
