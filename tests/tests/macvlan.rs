//! The macvlan driver end to end: endpoints bridged onto a parent interface, the segment's
//! own router as gateway, and 802.1Q tagging by sluice for `parent=IF.VLAN`. Needs root and
//! the release binaries (see tests/tests/daemon.rs).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use sluice_lab::daemonlab::DaemonLab;

fn bin_dir() -> Option<PathBuf> {
    sluice_tests::bins::release_bin_dir(&["sluice", "sluiced"])
}

/// A daemon plus namespace `lan` (the parent's segment, with its router at 10.88.0.1) wired to
/// `host`'s interface `lan0`.
fn lab() -> Option<DaemonLab> {
    let bin = bin_dir()?;
    let mut d = DaemonLab::start("mvl", &bin, &["--workers", "1"]).unwrap();
    let lab = d.lab_mut();
    lab.add_ns("lan").unwrap();
    lab.veth(("host", "lan0"), ("lan", "eth0")).unwrap();
    lab.up("host", "lan0").unwrap();
    lab.up("lan", "eth0").unwrap();
    Some(d)
}

#[test]
fn macvlan_endpoints_sit_on_the_parents_segment() {
    let Some(mut d) = lab() else { return };
    d.lab().addr("lan", "eth0", "10.88.0.1/24").unwrap();
    let missing = d.sluice(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "10.88.0.0/24",
        "-o",
        "parent=nope0",
        "m",
    ]);
    assert!(!missing.status.success());
    let msg = String::from_utf8_lossy(&missing.stderr);
    assert!(msg.contains("nope0 does not exist"), "{msg}");
    d.sluice_ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "10.88.0.0/24",
        "--gateway",
        "10.88.0.1",
        "-o",
        "parent=lan0",
        "m",
    ])
    .unwrap();
    let c1 = d.add_container("c1").unwrap();
    d.sluice_ok(&["network", "connect", "--name", "a", "m", &c1])
        .unwrap();
    let route = d.lab().ip("c1", &["route"]).unwrap();
    assert!(route.contains("default via 10.88.0.1"), "{route}");
    d.lab()
        .wait_ping("c1", "10.88.0.1".parse().unwrap(), Duration::from_secs(5))
        .unwrap();
    d.lab()
        .wait_ping("lan", "10.88.0.2".parse().unwrap(), Duration::from_secs(5))
        .unwrap();
    let c2 = d.add_container("c2").unwrap();
    let published = d.sluice(&["network", "connect", "-p", "8080:80", "m", &c2]);
    assert!(
        !published.status.success(),
        "ports are not published on macvlan"
    );
    d.sluice_ok(&["network", "disconnect", "m", "a"]).unwrap();
    d.sluice_ok(&["network", "rm", "m"]).unwrap();
}

#[test]
fn a_tagged_parent_carries_the_vlan() {
    let Some(mut d) = lab() else { return };
    d.sluice_ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "10.89.0.0/24",
        "-o",
        "parent=lan0.42",
        "m42",
    ])
    .unwrap();
    let c1 = d.add_container("c1").unwrap();
    d.sluice_ok(&["network", "connect", "--name", "a", "m42", &c1])
        .unwrap();
    let seen =
        sluice_tests::capture::tcpdump_during(d.lab_mut(), "lan", "eth0", "vlan 42", |lab| {
            let _ = lab.exec_output(
                "c1",
                &["ping", "-c", "3", "-i", "0.2", "-W", "1", "10.89.0.1"],
            );
        });
    assert!(
        seen.contains("vlan 42") && seen.contains("10.89.0.1"),
        "the ARP for the gateway leaves the parent tagged with VLAN 42: {seen}"
    );
}
