//! A network with its own uplink (`network create --uplink IF --uplink-ip CIDR`): its NAPT
//! traffic leaves there with that address and its published ports are reached there, while
//! other networks keep the daemon's uplink. Needs root and the release binaries (see
//! tests/tests/daemon.rs).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use sluice_lab::daemonlab::{DaemonLab, OUTSIDE_IP, UPLINK_IP};

/// What the echo servers answer: the client's address as they saw it.
const PEER: &str = "echo $SOCAT_PEERADDR";

fn bin_dir() -> Option<PathBuf> {
    sluice_tests::bins::release_bin_dir(&["sluice", "sluiced"])
}

/// sluiced (lab `tag`) plus a second outside namespace `out2` at 203.0.113.1/24 (and `v6`)
/// behind the host's interface `up1`, for a network's own uplink.
fn with_out2(tag: &str, bin: &std::path::Path, v6: Option<&str>) -> DaemonLab {
    let mut d = DaemonLab::start(tag, bin, &["--workers", "1"]).unwrap();
    let lab = d.lab_mut();
    lab.add_ns("out2").unwrap();
    lab.veth(("host", "up1"), ("out2", "eth0")).unwrap();
    lab.up("host", "up1").unwrap();
    lab.addr("out2", "eth0", "203.0.113.1/24").unwrap();
    if let Some(cidr) = v6 {
        lab.addr6("out2", "eth0", cidr).unwrap();
    }
    lab.up("out2", "eth0").unwrap();
    d
}

#[test]
fn a_network_routes_through_its_own_uplink() {
    let Some(bin) = bin_dir() else { return };
    let mut d = with_out2("upl", &bin, None);
    let missing = d.sluice(&[
        "network",
        "create",
        "--subnet",
        "10.91.0.0/24",
        "--uplink",
        "nope1",
        "--uplink-ip",
        "203.0.113.9/24",
        "bad",
    ]);
    assert!(
        !missing.status.success(),
        "a missing uplink interface is refused"
    );
    d.sluice_ok(&[
        "network",
        "create",
        "--subnet",
        "10.90.0.0/24",
        "--uplink",
        "up1",
        "--uplink-ip",
        "203.0.113.2/24",
        "--uplink-gateway",
        "203.0.113.1",
        "own",
    ])
    .unwrap();
    d.sluice_ok(&["network", "create", "--subnet", "10.92.0.0/24", "plain"])
        .unwrap();
    let c1 = d.add_container("c1").unwrap();
    let c2 = d.add_container("c2").unwrap();
    d.sluice_ok(&[
        "network", "connect", "--name", "a", "-p", "8085:80", "own", &c1,
    ])
    .unwrap();
    d.sluice_ok(&["network", "connect", "--name", "b", "plain", &c2])
        .unwrap();
    let inspect = d.sluice_ok(&["network", "inspect", "own"]).unwrap();
    assert!(
        inspect.contains("\"uplink_ip\": \"203.0.113.2/24\""),
        "{inspect}"
    );

    // Outbound: each network leaves through its uplink, with that uplink's address.
    let lab = d.lab_mut();
    let e1 = lab.serve("out2", (9000, false), PEER, "echo2").unwrap();
    let e0 = lab.serve("out", (9000, false), PEER, "echo1").unwrap();
    let lab = d.lab();
    lab.wait_ping("c1", "203.0.113.1".parse().unwrap(), Duration::from_secs(5))
        .unwrap();
    lab.wait_ping("c2", OUTSIDE_IP, Duration::from_secs(5))
        .unwrap();
    let seen = lab
        .exec(
            "c1",
            &["socat", "-u", "-T", "3", "TCP:203.0.113.1:9000", "-"],
        )
        .unwrap();
    assert_eq!(
        seen.trim(),
        "203.0.113.2",
        "own's NAPT source is its uplink's address"
    );
    let seen = lab
        .exec(
            "c2",
            &[
                "socat",
                "-u",
                "-T",
                "3",
                &format!("TCP:{OUTSIDE_IP}:9000"),
                "-",
            ],
        )
        .unwrap();
    assert_eq!(
        seen.trim(),
        UPLINK_IP.to_string(),
        "plain keeps the daemon's uplink"
    );
    assert!(
        lab.exec_output(
            "c1",
            &["ping", "-c", "1", "-W", "1", &OUTSIDE_IP.to_string()]
        )
        .unwrap()
        .status
        .code()
            != Some(0),
        "own does not leave through the daemon's uplink"
    );

    // Inbound: own's published port answers on its uplink's address only.
    let srv = d
        .lab_mut()
        .serve("c1", (80, false), "echo hello-from-own", "srv")
        .unwrap();
    let lab = d.lab();
    let got = lab
        .exec(
            "out2",
            &["socat", "-u", "-T", "3", "TCP:203.0.113.2:8085", "-"],
        )
        .unwrap();
    assert_eq!(got.trim(), "hello-from-own");
    let other = lab
        .exec_output(
            "out",
            &[
                "socat",
                "-T",
                "2",
                "-",
                &format!("TCP:{UPLINK_IP}:8085,connect-timeout=2"),
            ],
        )
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&other.stdout).contains("hello-from-own"),
        "the daemon's uplink does not reach own's published port"
    );
    let lab = d.lab_mut();
    for p in [e0, e1, srv] {
        lab.stop(p);
    }
    d.sluice_ok(&["network", "disconnect", "own", "a"]).unwrap();
    d.sluice_ok(&["network", "rm", "own"]).unwrap();
    let links = d.lab().ip("host", &["-br", "link"]).unwrap();
    assert!(
        links.contains("up1"),
        "removing the network leaves the interface: {links}"
    );
}

/// Retries `socat` in `ns` reading from `target` for a few seconds (the first packets wait for
/// neighbour discovery); what it read.
fn read_v6(d: &DaemonLab, ns: &str, target: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let o = d
            .lab()
            .exec_output(ns, &["socat", "-u", "-T", "3", target, "-"])
            .unwrap();
        if o.status.success() && !o.stdout.is_empty() {
            return String::from_utf8_lossy(&o.stdout).into_owned();
        }
        assert!(std::time::Instant::now() < deadline, "{target}: {o:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A dual-stack network's own uplink with a v6 side (`--uplink-ip6`, `--uplink-gateway6`):
/// its v6 leaves there through NAT66 with that address, and its published port answers on it.
#[test]
fn a_network_routes_v6_through_its_own_uplink() {
    let Some(bin) = bin_dir() else { return };
    let mut d = with_out2("upsx", &bin, Some("2001:db8:72::1/64"));
    d.sluice_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.93.0.0/24",
        "--subnet",
        "fd00:93::/64",
        "--uplink",
        "up1",
        "--uplink-ip",
        "203.0.113.2/24",
        "--uplink-gateway",
        "203.0.113.1",
        "--uplink-ip6",
        "2001:db8:72::2/64",
        "--uplink-gateway6",
        "2001:db8:72::1",
        "own6",
    ])
    .unwrap();
    let inspect = d.sluice_ok(&["network", "inspect", "own6"]).unwrap();
    assert!(
        inspect.contains("\"uplink_ip6\": \"2001:db8:72::2/64\""),
        "{inspect}"
    );
    let c1 = d.add_container("c1").unwrap();
    d.sluice_ok(&[
        "network", "connect", "--name", "a", "-p", "8086:80", "own6", &c1,
    ])
    .unwrap();
    let lab = d.lab_mut();
    let echo = lab.serve("out2", (9000, true), PEER, "echo6").unwrap();
    let srv = lab
        .serve("c1", (80, true), "echo hello-own6", "srv6")
        .unwrap();
    // socat writes the peer in full, bracketed.
    let seen = read_v6(&d, "c1", "TCP6:[2001:db8:72::1]:9000");
    let peer: std::net::Ipv6Addr = seen
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .unwrap_or_else(|_| panic!("{seen}; log: {}", d.log()));
    assert_eq!(
        peer,
        "2001:db8:72::2".parse::<std::net::Ipv6Addr>().unwrap(),
        "NAT66 to the network's own uplink's v6 address"
    );
    let got = read_v6(&d, "out2", "TCP6:[2001:db8:72::2]:8086");
    assert_eq!(got.trim(), "hello-own6");
    let lab = d.lab_mut();
    for p in [echo, srv] {
        lab.stop(p);
    }
    d.sluice_ok(&["network", "disconnect", "own6", "a"])
        .unwrap();
    d.sluice_ok(&["network", "rm", "own6"]).unwrap();
}
