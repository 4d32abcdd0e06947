//! Dual-stack networks end to end with a real `sluiced`: `network create --ipv6` with a v4 and
//! a v6 subnet, two endpoints that ping6 each other and the v6 gateway, a static `--ip6`, and
//! what inspect and `ps` show. Needs root and the release binaries (`SLUICE_BIN` names the
//! `sluice` binary, `sluiced` is expected beside it).

use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_lab::daemonlab::DaemonLab;

/// Runs the CLI; a failure panics with the daemon's log.
fn ok(d: &DaemonLab, args: &[&str]) -> String {
    d.sluice_ok(args)
        .unwrap_or_else(|e| panic!("{e}; log: {}", d.log()))
}

/// Pings `ip` over IPv6 from container `ns` until one reply comes back or `within` passes.
fn wait_ping6(d: &DaemonLab, ns: &str, ip: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let replied = d
            .lab()
            .exec_output(ns, &["ping", "-6", "-c", "1", "-W", "1", "-q", ip])
            .unwrap()
            .status
            .success();
        if replied {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}

#[test]
fn dual_stack_endpoints_ping6_each_other_and_the_gateway() {
    let Some(bin) = sluice_tests::bins::release_bin_dir(&["sluice", "sluiced"]) else {
        return;
    };
    let mut d = DaemonLab::start("six", &bin, &["--workers", "1"]).unwrap();
    ok(
        &d,
        &[
            "network",
            "create",
            "--ipv6",
            "--subnet",
            "10.70.0.0/24",
            "--subnet",
            "fd00:70::/64",
            "dual",
        ],
    );
    let v: Value = serde_json::from_str(&ok(&d, &["network", "inspect", "dual"])).unwrap();
    let n = &v[0];
    assert_eq!(n["EnableIPv6"], true, "{n:#}");
    assert_eq!(n["IPAM"]["Config"][0]["Subnet"], "10.70.0.0/24");
    assert_eq!(n["IPAM"]["Config"][1]["Subnet"], "fd00:70::/64");
    assert_eq!(n["IPAM"]["Config"][1]["Gateway"], "fd00:70::1");

    let c1 = d.add_container("c1").unwrap();
    let c2 = d.add_container("c2").unwrap();
    let c3 = d.add_container("c3").unwrap();
    ok(&d, &["network", "connect", "--name", "web", "dual", &c1]);
    ok(&d, &["network", "connect", "--name", "db", "dual", &c2]);
    ok(
        &d,
        &[
            "network",
            "connect",
            "--name",
            "st",
            "--ip6",
            "fd00:70::99",
            "dual",
            &c3,
        ],
    );
    let ps: Value = serde_json::from_str(&ok(&d, &["ps", "--output", "json"])).unwrap();
    let v6_of = |name: &str| {
        ps.as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["ipv6"].clone())
            .unwrap_or_else(|| panic!("no endpoint {name} in {ps:#}"))
    };
    assert_eq!(v6_of("web"), "fd00:70::2/64");
    assert_eq!(v6_of("db"), "fd00:70::3/64");
    assert_eq!(v6_of("st"), "fd00:70::99/64");
    let addrs = d.lab().ip("c1", &["-6", "addr", "show", "eth0"]).unwrap();
    assert!(addrs.contains("fd00:70::2/64"), "{addrs}");
    let routes = d
        .lab()
        .ip("c1", &["-6", "route", "show", "default"])
        .unwrap();
    assert!(routes.contains("via fd00:70::1"), "{routes}");

    let within = Duration::from_secs(10);
    assert!(
        wait_ping6(&d, "c1", "fd00:70::3", within),
        "web -> db; log: {}",
        d.log()
    );
    assert!(wait_ping6(&d, "c2", "fd00:70::2", within), "db -> web");
    assert!(wait_ping6(&d, "c1", "fd00:70::1", within), "web -> gateway");
    assert!(wait_ping6(&d, "c3", "fd00:70::2", within), "static -> web");
    d.lab()
        .wait_ping("c2", "10.70.0.2".parse().unwrap(), within)
        .unwrap();

    ok(&d, &["network", "disconnect", "dual", "st"]);
    let c4 = d.add_container("c4").unwrap();
    ok(
        &d,
        &[
            "network",
            "connect",
            "--name",
            "again",
            "--ip6",
            "fd00:70::99",
            "dual",
            &c4,
        ],
    );
    assert!(
        wait_ping6(&d, "c4", "fd00:70::1", within),
        "reused address -> gateway"
    );
}
