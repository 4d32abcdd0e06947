//! The ipvlan driver end to end: `l2` endpoints on a parent interface's segment with its router
//! as gateway, `l3` endpoints with a default route on the link and no gateway, each mode's
//! endpoints reaching each other and the segment, every endpoint at the parent's MAC in the
//! segment's neighbour table (and in each other's), broadcast carried in `l2` and not in `l3`,
//! 802.1Q on a tagged parent, docker's option rules refused with clear errors, and nothing left
//! behind. The parent is a veth into a namespace of the test's own (this kernel has no ipvlan
//! module: the driver is sluice's own). Needs root and the release binaries (see
//! tests/tests/daemon.rs).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use sluice_lab::daemonlab::DaemonLab;

fn bin_dir() -> Option<PathBuf> {
    sluice_tests::bins::release_bin_dir(&["sluice", "sluiced"])
}

/// A daemon plus namespace `lan` (the parent's segment) wired to `host`'s interface `lan0`.
fn lab(tag: &str) -> Option<DaemonLab> {
    let bin = bin_dir()?;
    let mut d = DaemonLab::start(tag, &bin, &["--workers", "1"]).unwrap();
    let lab = d.lab_mut();
    lab.add_ns("lan").unwrap();
    lab.veth(("host", "lan0"), ("lan", "eth0")).unwrap();
    lab.up("host", "lan0").unwrap();
    lab.up("lan", "eth0").unwrap();
    Some(d)
}

fn ok(d: &DaemonLab, args: &[&str]) -> String {
    d.sluice_ok(args)
        .unwrap_or_else(|e| panic!("{e}; daemon log: {}", d.log()))
}

/// `sluice network create -d ipvlan EXTRA... NAME`.
fn create(d: &DaemonLab, extra: &[&str], name: &str) -> std::process::Output {
    let mut args = vec!["network", "create", "-d", "ipvlan"];
    args.extend_from_slice(extra);
    args.push(name);
    d.sluice(&args)
}

/// Like [`create`], and it must succeed.
fn create_ok(d: &DaemonLab, extra: &[&str], name: &str) {
    let o = create(d, extra, name);
    assert!(
        o.status.success(),
        "{}; daemon log: {}",
        String::from_utf8_lossy(&o.stderr),
        d.log()
    );
}

/// Connects two containers `c1` and `c2` to `net` and waits until each pings the other
/// (`ips`: their addresses, given in the order the IPAM hands them out).
fn two_that_ping(d: &mut DaemonLab, net: &str, ips: [&str; 2]) {
    for c in ["c1", "c2"] {
        let ns = d.add_container(c).unwrap();
        ok(d, &["network", "connect", "--name", c, net, &ns]);
    }
    for (from, to) in [("c1", ips[1]), ("c2", ips[0])] {
        d.lab()
            .wait_ping(from, to.parse().unwrap(), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{from} -> {to}: {e}; daemon log: {}", d.log()));
    }
}

/// The MAC of `dev` in namespace `ns`.
fn mac_of(d: &DaemonLab, ns: &str, dev: &str) -> String {
    let link = d.lab().ip(ns, &["-o", "link", "show", dev]).unwrap();
    let mac = link
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1);
    mac.unwrap_or_else(|| panic!("no MAC in {link}"))
        .to_string()
}

/// The MAC namespace `ns` holds for `ip` in its IPv4 or IPv6 neighbour table, if any.
fn neighbour(d: &DaemonLab, ns: &str, ip: &str) -> Option<String> {
    let family = if ip.contains(':') { "-6" } else { "-4" };
    let table = d.lab().ip(ns, &[family, "neigh", "show", ip]).unwrap();
    let mac = table
        .split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1);
    mac.map(str::to_string)
}

/// Whether a broadcast ping from `from` to `bcast` gets a reply from `ip` (which answers
/// broadcast pings for the test).
fn broadcast_reaches(d: &DaemonLab, from: &str, bcast: &str, who: &str, ip: &str) -> bool {
    d.lab()
        .sysctl(who, "net.ipv4.icmp_echo_ignore_broadcasts", "0")
        .unwrap();
    let o = d
        .lab()
        .exec_output(
            from,
            &["ping", "-b", "-c", "3", "-i", "0.3", "-W", "1", bcast],
        )
        .unwrap();
    String::from_utf8_lossy(&o.stdout).contains(&format!("from {ip}"))
}

/// Disconnects `c1` and `c2`, removes `net`, and checks that no veth of sluice's is left.
fn tear_down(d: &DaemonLab, net: &str) {
    for c in ["c1", "c2"] {
        ok(d, &["network", "disconnect", net, c]);
    }
    ok(d, &["network", "rm", net]);
    let links = d.lab().ip("host", &["-o", "link"]).unwrap();
    assert!(
        !links.lines().any(|l| l.contains(": sl")),
        "veths left behind: {links}"
    );
    assert_eq!(
        ok(d, &["network", "ls", "--format", "{{.Name}}"]),
        "bridge\nhost\nnone\n"
    );
}

#[test]
fn l2_endpoints_sit_on_the_parents_segment() {
    let Some(mut d) = lab("ivl") else { return };
    d.lab().addr("lan", "eth0", "10.91.0.1/24").unwrap();
    d.lab().addr6("lan", "eth0", "fd00:91::1/64").unwrap();
    create_ok(
        &d,
        &[
            "--ipv6",
            "--subnet",
            "10.91.0.0/24",
            "--gateway",
            "10.91.0.1",
            "--subnet",
            "fd00:91::/64",
            "-o",
            "parent=lan0",
            "-o",
            "ipvlan_mode=l2",
        ],
        "iv",
    );
    assert_eq!(
        ok(
            &d,
            &[
                "network",
                "inspect",
                "-f",
                "{{.Driver}} {{json .Options}}",
                "iv"
            ]
        ),
        "ipvlan {\"ipvlan_mode\":\"l2\",\"parent\":\"lan0\"}\n"
    );
    two_that_ping(&mut d, "iv", ["10.91.0.2", "10.91.0.3"]);
    let route = d.lab().ip("c1", &["route"]).unwrap();
    assert!(route.contains("default via 10.91.0.1"), "{route}");
    d.lab()
        .wait_ping("c1", "10.91.0.1".parse().unwrap(), Duration::from_secs(5))
        .unwrap();
    d.lab()
        .wait_ping("lan", "10.91.0.3".parse().unwrap(), Duration::from_secs(5))
        .unwrap();
    let parent = mac_of(&d, "host", "lan0");
    for (from, to) in [
        ("lan", "fd00:91::3"),
        ("c1", "fd00:91::3"),
        ("c2", "fd00:91::1"),
    ] {
        d.lab()
            .wait_ping6(from, to.parse().unwrap(), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{from} -> {to}: {e}; daemon log: {}", d.log()));
    }
    assert_eq!(
        neighbour(&d, "lan", "fd00:91::3").as_ref(),
        Some(&parent),
        "over IPv6 too"
    );
    assert_eq!(
        neighbour(&d, "c1", "fd00:91::3").as_ref(),
        Some(&parent),
        "and between endpoints"
    );
    for ip in ["10.91.0.2", "10.91.0.3"] {
        assert_eq!(
            neighbour(&d, "lan", ip).as_ref(),
            Some(&parent),
            "{ip} is at the parent's MAC on the wire"
        );
    }
    assert_eq!(
        neighbour(&d, "c1", "10.91.0.3"),
        Some(parent),
        "endpoints meet at the parent's MAC too"
    );
    assert_eq!(
        neighbour(&d, "c1", "10.91.0.1"),
        Some(mac_of(&d, "lan", "eth0")),
        "the router keeps its own"
    );
    assert!(
        broadcast_reaches(&d, "lan", "10.91.0.255", "c1", "10.91.0.2"),
        "the parent's broadcast reaches endpoints in l2"
    );
    assert!(
        broadcast_reaches(&d, "c1", "10.91.0.255", "c2", "10.91.0.3"),
        "and an endpoint's reaches the others"
    );
    tear_down(&d, "iv");
}

#[test]
fn l3_endpoints_route_on_the_link_without_a_gateway() {
    let Some(mut d) = lab("ivr") else { return };
    let l3 = ["-o", "parent=lan0", "-o", "ipvlan_mode=l3"];
    create_ok(
        &d,
        &[&["--subnet", "10.92.0.0/24"], &l3[..]].concat(),
        "iv3",
    );
    d.lab().addr("lan", "eth0", "10.92.0.254/24").unwrap();
    two_that_ping(&mut d, "iv3", ["10.92.0.2", "10.92.0.3"]);
    for (from, to) in [("c1", "10.92.0.254"), ("lan", "10.92.0.3")] {
        d.lab()
            .wait_ping(from, to.parse().unwrap(), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{from} -> {to}: {e}; daemon log: {}", d.log()));
    }
    assert_eq!(
        neighbour(&d, "lan", "10.92.0.3"),
        Some(mac_of(&d, "host", "lan0")),
        "the segment reaches l3 endpoints at the parent's MAC"
    );
    assert!(
        !broadcast_reaches(&d, "lan", "10.92.0.255", "c1", "10.92.0.2"),
        "no broadcast from the parent in l3"
    );
    assert!(
        !broadcast_reaches(&d, "c1", "10.92.0.255", "c2", "10.92.0.3"),
        "nor across endpoints"
    );
    let drops = ok(&d, &["stats", "--output", "json"]);
    assert!(drops.contains("ipvlan_filtered"), "{drops}");
    let route = d
        .lab()
        .ip("c1", &["-4", "route", "show", "default"])
        .unwrap();
    let route = route.trim();
    assert!(
        route.starts_with("default dev eth0") && route.ends_with("scope link"),
        "a default route on the link, no gateway: {route}"
    );
    assert_eq!(
        ok(
            &d,
            &[
                "inspect",
                "-f",
                "{{.NetworkSettings.Networks.iv3.Gateway}}",
                "c1"
            ]
        ),
        "\n",
        "no gateway, as docker shows l3 endpoints"
    );
    tear_down(&d, "iv3");
}

#[test]
fn bad_ipvlan_options_are_refused() {
    let Some(mut d) = lab("ivb") else { return };
    create_ok(&d, &["--subnet", "10.93.0.0/24", "-o", "parent=lan0"], "iv");
    let cases: [(&[&str], &str); 7] = [
        (
            &["-o", "ipvlan_mode=l4"],
            "option ipvlan_mode=\"l4\" is invalid: l2, l3 or l3s",
        ),
        (
            &["-o", "ipvlan_flag=shared"],
            "option ipvlan_flag=\"shared\" is invalid: bridge, private or vepa",
        ),
        (
            &["-o", "parent=lo", "-o", "ipvlan_flag=vepa"],
            "ipvlan_flag=vepa is not supported",
        ),
        (
            &["-o", "parent=lo"],
            "loopback interface is not a valid ipvlan parent link",
        ),
        (&["-o", "parent=nope0"], "nope0 does not exist"),
        (
            &["-o", "parent=lan0", "-o", "ipvlan_mode=l3"],
            "parent interface lan0 is already used by network \"iv\"",
        ),
        (
            &["--subnet", "10.93.0.128/25"],
            "subnet 10.93.0.128/25 overlaps network \"iv\"",
        ),
    ];
    for (extra, want) in cases {
        let o = create(&d, extra, "x");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(want),
            "{extra:?}: {err}"
        );
    }
    let o = d.sluice(&["network", "create", "-o", "ipvlan_mode=l3", "x"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("only for the ipvlan driver"), "{err}");
    let c1 = d.add_container("c1").unwrap();
    let o = d.sluice(&["network", "connect", "-p", "8080:80", "iv", &c1]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ports are not published"), "{err}");
    ok(&d, &["network", "rm", "iv"]);
    assert_eq!(
        ok(&d, &["network", "ls", "--format", "{{.Name}}"]),
        "bridge\nhost\nnone\n",
        "nothing half-made"
    );
}

#[test]
fn a_tagged_parent_carries_the_vlan_at_the_parents_mac() {
    let Some(mut d) = lab("ivt") else { return };
    create_ok(
        &d,
        &["--subnet", "10.94.0.0/24", "-o", "parent=lan0.42"],
        "iv42",
    );
    let c1 = d.add_container("c1").unwrap();
    ok(&d, &["network", "connect", "--name", "c1", "iv42", &c1]);
    let seen =
        sluice_tests::capture::tcpdump_during(d.lab_mut(), "lan", "eth0", "vlan 42", |lab| {
            let _ = lab.exec_output(
                "c1",
                &["ping", "-c", "3", "-i", "0.2", "-W", "1", "10.94.0.1"],
            );
        });
    let parent = mac_of(&d, "host", "lan0");
    let from_parent = format!("{parent} > ff:ff:ff:ff:ff:ff");
    assert!(
        seen.contains("vlan 42") && seen.contains("10.94.0.1") && seen.contains(&from_parent),
        "the ARP for the gateway leaves tagged with VLAN 42, from the parent's MAC: {seen}"
    );
}
