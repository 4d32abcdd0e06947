//! The kernel (docker0-like) topology of the lab: bridging between endpoints, MASQUERADE to
//! the outside, a published port reached from outside, and complete removal afterwards.

use std::time::Duration;

use sluice_dataplane::config::L4Proto;
use sluice_lab::lab::{DockerLike, DockerLikeSpec, Forwarder, Publish, OUTSIDE};

fn have(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn netns_list() -> String {
    std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// A one-shot TCP server in `ns` on `port` that sends back the peer address it saw.
fn peer_echo_server(topo: &mut DockerLike, ns: &str, port: u16, log: &str) {
    let listen = format!("TCP-LISTEN:{port},reuseaddr");
    topo.lab
        .spawn(ns, &["socat", &listen, "SYSTEM:echo $SOCAT_PEERADDR"], log)
        .unwrap();
    topo.lab
        .wait_listen(ns, port, Duration::from_secs(5))
        .unwrap();
}

fn connect(topo: &DockerLike, ns: &str, ip: &str, port: u16) -> String {
    let target = format!("TCP:{ip}:{port},connect-timeout=3");
    topo.lab
        .exec(ns, &["timeout", "5", "socat", "-u", &target, "-"])
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn kernel_topology_bridges_masquerades_and_publishes() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to create network namespaces");
        return;
    }
    if let Some(t) = ["ip", "iptables", "socat", "ping", "ss"]
        .into_iter()
        .find(|t| !have(t))
    {
        eprintln!("skipped: {t} is not installed");
        return;
    }
    let spec = DockerLikeSpec {
        publish: vec![Publish {
            proto: L4Proto::Tcp,
            host_port: 8080,
            endpoint: "a".into(),
            target_port: 80,
        }],
        ..DockerLikeSpec::default()
    };
    let mut topo = DockerLike::build("kt", spec, Forwarder::Kernel).unwrap();
    let prefix = topo.lab.prefix().to_string();
    assert!(netns_list().contains(&prefix));

    let b = topo.ip("b").unwrap().to_string();
    topo.lab
        .exec("a", &["ping", "-c", "2", "-i", "0.2", "-W", "2", "-q", &b])
        .unwrap();

    let outside = topo.spec.outside_ip().to_string();
    peer_echo_server(&mut topo, OUTSIDE, 9000, "out_srv");
    assert_eq!(
        connect(&topo, "a", &outside, 9000),
        topo.spec.uplink_ip().addr.to_string(),
        "the outside sees the uplink address (MASQUERADE)"
    );

    peer_echo_server(&mut topo, "a", 80, "a_srv");
    let uplink = topo.spec.uplink_ip().addr.to_string();
    assert_eq!(
        connect(&topo, OUTSIDE, &uplink, 8080),
        outside,
        "the published port reaches a, which sees the real client (DNAT)"
    );

    drop(topo);
    assert!(
        !netns_list().contains(&prefix),
        "namespaces left behind: {}",
        netns_list()
    );
}

#[test]
fn lab_is_removed_when_a_test_panics() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !have("ip") {
        eprintln!("skipped: needs root and ip");
        return;
    }
    let mut prefix = String::new();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut lab = sluice_lab::lab::Lab::new("kp").unwrap();
        prefix = lab.prefix().to_string();
        lab.add_ns("x").unwrap();
        lab.add_ns("y").unwrap();
        lab.veth(("x", "eth0"), ("y", "eth0")).unwrap();
        lab.spawn("x", &["sleep", "30"], "sleeper").unwrap();
        assert!(netns_list().contains(&prefix));
        panic!("test failure inside a lab");
    }));
    assert!(r.is_err());
    assert!(!prefix.is_empty());
    assert!(
        !netns_list().contains(&prefix),
        "namespaces left behind: {}",
        netns_list()
    );
}
