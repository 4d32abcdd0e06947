//! The daemon's netlink layer (`sluice_netlink`, re-exported as `sluice_control::netlink`)
//! against the real kernel: attach a sandbox namespace (by path and by pid), check the result
//! with `ip -j`, detach, and make sure failures leave no interface behind.
//!
//! The "current namespace" of the calls under test is never the root namespace: each test runs
//! its netlink calls on a thread that first joins the lab's `host` namespace, so the host ends
//! of the veths are created there and vanish with the lab. The tests need root; without it they
//! are skipped with a message.

use std::fs::File;
use std::future::Future;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_control::model::Sandbox;
use sluice_control::netlink::{self, NetlinkError, SandboxIface, SandboxIpv6};
use sluice_dataplane::config::Ipv4Cidr;
use sluice_dataplane::wire::MacAddr;
use sluice_lab::lab::Lab;

const HOST: &str = "host";
const SB: &str = "sb";

fn skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to create network namespaces");
        return true;
    }
    let ip = Command::new("ip").arg("-V").output();
    if !ip.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: ip is not installed");
        return true;
    }
    false
}

/// A lab with the two namespaces every test uses: `host` (where the calls run) and `sb`.
fn lab(tag: &str) -> Lab {
    let mut lab = Lab::new(tag).unwrap();
    lab.add_ns(HOST).unwrap();
    lab.add_ns(SB).unwrap();
    lab
}

fn ns_path(lab: &Lab, short: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(lab.ns_name(short).unwrap())
}

/// Runs `fut` to completion on a thread that joined the lab namespace `short`, under a
/// current-thread runtime of its own (the netlink calls' "current namespace").
fn in_ns<T: Send>(lab: &Lab, short: &str, fut: impl Future<Output = T> + Send) -> T {
    let ns = File::open(ns_path(lab, short)).unwrap();
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns on a namespace file we opened; it changes only this thread, which
            // the scope ends right after the future completes.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(fut)
        })
        .join()
        .unwrap()
    })
}

/// `ip -n NS -j ARGS...` parsed.
fn ip_json(lab: &Lab, ns: &str, args: &[&str]) -> Value {
    let mut full = vec!["-j"];
    full.extend_from_slice(args);
    serde_json::from_str(&lab.ip(ns, &full).unwrap()).unwrap()
}

/// The `ip -j addr show dev DEV` object of an interface, `None` if it does not exist.
fn link(lab: &Lab, ns: &str, dev: &str) -> Option<Value> {
    let all = ip_json(lab, ns, &["addr", "show"]);
    all.as_array()
        .unwrap()
        .iter()
        .find(|l| l["ifname"] == dev)
        .cloned()
}

fn is_up(link: &Value) -> bool {
    link["flags"].as_array().unwrap().iter().any(|f| f == "UP")
}

fn ipv4_addrs(link: &Value) -> Vec<String> {
    link["addr_info"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|i| i["family"] == "inet")
                .map(|i| format!("{}/{}", i["local"].as_str().unwrap(), i["prefixlen"]))
                .collect()
        })
        .unwrap_or_default()
}

fn names(lab: &Lab, ns: &str) -> Vec<String> {
    let mut v: Vec<String> = ip_json(lab, ns, &["link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn default_routes(lab: &Lab, ns: &str) -> Vec<Value> {
    ip_json(lab, ns, &["-4", "route", "show", "default"])
        .as_array()
        .unwrap()
        .clone()
}

fn iface(host: &str, sandbox: &str, ip: [u8; 4], prefix: u8, gw: Option<[u8; 4]>) -> SandboxIface {
    let addr = Ipv4Addr::from(ip);
    SandboxIface {
        host_ifname: host.into(),
        sandbox_ifname: sandbox.into(),
        mac: MacAddr::from_ipv4(addr),
        ip: Ipv4Cidr::new(addr, prefix),
        gateway: gw.map(Ipv4Addr::from),
        default_on_link: false,
        mtu: 1500,
        ipv6: None,
    }
}

#[test]
fn attach_configures_the_sandbox_and_detach_removes_it() {
    if skip() {
        return;
    }
    let lab = lab("nla");
    let sb = Sandbox::Netns(ns_path(&lab, SB));
    // Lab namespaces start with lo up: take it down so that attach has to bring it up.
    lab.ip(SB, &["link", "set", "lo", "down"]).unwrap();
    let first = SandboxIface {
        mtu: 1450,
        ..iface("slv0", "eth0", [10, 88, 0, 2], 24, Some([10, 88, 0, 1]))
    };
    in_ns(&lab, HOST, netlink::attach(&sb, &first)).unwrap();

    let eth0 = link(&lab, SB, "eth0").expect("eth0 in the sandbox");
    assert_eq!(eth0["address"], "02:42:0a:58:00:02");
    assert_eq!(eth0["mtu"], 1450);
    assert!(is_up(&eth0), "{eth0}");
    assert_eq!(ipv4_addrs(&eth0), ["10.88.0.2/24"]);
    assert!(is_up(&link(&lab, SB, "lo").unwrap()));
    let routes = default_routes(&lab, SB);
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert_eq!(routes[0]["gateway"], "10.88.0.1");
    assert_eq!(routes[0]["dev"], "eth0");

    let host = link(&lab, HOST, "slv0").expect("host end in the host namespace");
    assert!(is_up(&host), "{host}");
    assert_eq!(host["operstate"], "UP", "{host}");
    assert_eq!(host["mtu"], 1450);
    assert!(ipv4_addrs(&host).is_empty(), "{host}");
    assert_eq!(names(&lab, HOST), ["lo", "slv0"]);

    let second = iface("slv1", "eth1", [10, 99, 3, 4], 16, None);
    in_ns(&lab, HOST, netlink::attach(&sb, &second)).unwrap();
    let eth1 = link(&lab, SB, "eth1").expect("eth1 in the sandbox");
    assert_eq!(ipv4_addrs(&eth1), ["10.99.3.4/16"]);
    assert_eq!(eth1["mtu"], 1500);
    assert!(is_up(&eth1));
    assert_eq!(default_routes(&lab, SB).len(), 1);
    assert_eq!(names(&lab, SB), ["eth0", "eth1", "lo"]);

    let (exists, missing, listed) = in_ns(&lab, HOST, async {
        (
            netlink::link_exists("slv1").await.unwrap(),
            netlink::link_exists("slv2").await.unwrap(),
            netlink::link_names_with_prefix("slv").await.unwrap(),
        )
    });
    assert!(exists && !missing);
    assert_eq!(listed, ["slv0", "slv1"]);

    assert!(in_ns(&lab, HOST, netlink::detach("slv0")).unwrap());
    assert_eq!(names(&lab, SB), ["eth1", "lo"]);
    assert_eq!(names(&lab, HOST), ["lo", "slv1"]);
    assert!(default_routes(&lab, SB).is_empty());
    assert!(!in_ns(&lab, HOST, netlink::detach("slv0")).unwrap());
    assert!(in_ns(&lab, HOST, netlink::detach("slv1")).unwrap());
    assert_eq!(names(&lab, SB), ["lo"]);
    assert_eq!(names(&lab, HOST), ["lo"]);
}

#[test]
fn attach_sets_the_ipv6_address_and_default_route() {
    if skip() {
        return;
    }
    // Lab namespaces start with IPv6 off: attach turns it on for the interface.
    let lab = lab("nlsx");
    let sb = Sandbox::Netns(ns_path(&lab, SB));
    let dual = SandboxIface {
        ipv6: Some(SandboxIpv6 {
            addr: "fd00:88::2".parse().unwrap(),
            prefix: 64,
            gateway: Some("fd00:88::1".parse().unwrap()),
        }),
        ..iface("slv0", "eth0", [10, 88, 0, 2], 24, Some([10, 88, 0, 1]))
    };
    in_ns(&lab, HOST, netlink::attach(&sb, &dual)).unwrap();
    let eth0 = link(&lab, SB, "eth0").expect("eth0 in the sandbox");
    assert_eq!(ipv4_addrs(&eth0), ["10.88.0.2/24"]);
    let global: Vec<_> = eth0["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["family"] == "inet6" && i["scope"] == "global")
        .collect();
    assert_eq!(global.len(), 1, "{eth0}");
    assert_eq!(global[0]["local"], "fd00:88::2");
    assert_eq!(global[0]["prefixlen"], 64);
    assert!(global[0].get("tentative").is_none(), "no DAD: {eth0}");
    let routes = ip_json(&lab, SB, &["-6", "route", "show", "default"]);
    let routes = routes.as_array().unwrap();
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert_eq!(routes[0]["gateway"], "fd00:88::1");
    assert_eq!(routes[0]["dev"], "eth0");
    assert!(in_ns(&lab, HOST, netlink::detach("slv0")).unwrap());
}

#[test]
fn failed_attaches_leave_nothing_behind() {
    if skip() {
        return;
    }
    let lab = lab("nlf");
    let sb = Sandbox::Netns(ns_path(&lab, SB));
    let good = iface("slv0", "eth0", [10, 88, 0, 2], 24, Some([10, 88, 0, 1]));

    let missing = Sandbox::Netns(lab.dir().join("no-such-netns"));
    let e = in_ns(&lab, HOST, netlink::attach(&missing, &good)).unwrap_err();
    assert!(matches!(e, NetlinkError::Netns { .. }), "{e}");
    assert!(e.to_string().contains("no-such-netns"), "{e}");

    let long = SandboxIface {
        host_ifname: "slv-much-too-long".into(),
        ..good.clone()
    };
    let e = in_ns(&lab, HOST, netlink::attach(&sb, &long)).unwrap_err();
    assert!(matches!(e, NetlinkError::BadName { .. }), "{e}");
    assert!(e.to_string().contains("slv-much-too-long"), "{e}");

    // The kernel refuses the peer's name inside the sandbox: the whole pair is refused, and
    // the error names the clash inside the sandbox.
    let clash = SandboxIface {
        sandbox_ifname: "lo".into(),
        ..good.clone()
    };
    let e = in_ns(&lab, HOST, netlink::attach(&sb, &clash)).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST), "{e}");
    assert!(matches!(e, NetlinkError::NameInUse { .. }), "{e}");
    assert!(e.to_string().contains("already has an interface lo"), "{e}");
    assert_eq!(names(&lab, HOST), ["lo"]);
    assert_eq!(names(&lab, SB), ["lo"]);

    in_ns(&lab, HOST, netlink::attach(&sb, &good)).unwrap();

    // A host name in use: refused, and the existing interface is left alone.
    let taken = iface("slv0", "eth1", [10, 99, 0, 2], 24, None);
    let e = in_ns(&lab, HOST, netlink::attach(&sb, &taken)).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST), "{e}");
    assert_eq!(names(&lab, HOST), ["lo", "slv0"]);
    assert_eq!(names(&lab, SB), ["eth0", "lo"]);

    // Fails after the pair exists (a second default route): rolled back completely.
    let late = iface("slv1", "eth1", [10, 99, 0, 2], 24, Some([10, 99, 0, 1]));
    let e = in_ns(&lab, HOST, netlink::attach(&sb, &late)).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("default route") && msg.contains("eth1"),
        "{msg}"
    );
    assert_eq!(names(&lab, HOST), ["lo", "slv0"]);
    assert_eq!(names(&lab, SB), ["eth0", "lo"]);
    assert_eq!(default_routes(&lab, SB)[0]["dev"], "eth0");
}

/// Waits until process `pid` has joined the namespace at `ns` (`ip netns exec` enters it
/// before it execs the program).
fn wait_in_ns(pid: u32, ns: &PathBuf) {
    let want = std::fs::metadata(ns).unwrap();
    let proc_ns = PathBuf::from(format!("/proc/{pid}/ns/net"));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(m) = std::fs::metadata(&proc_ns) {
            if m.ino() == want.ino() && m.dev() == want.dev() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "pid {pid} never entered {ns:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn attach_by_pid() {
    if skip() {
        return;
    }
    let mut lab = lab("nlp");
    let pid = lab.spawn(SB, &["sleep", "60"], "sleep").unwrap();
    wait_in_ns(pid, &ns_path(&lab, SB));
    let ifc = iface("slv0", "eth0", [10, 77, 0, 9], 24, Some([10, 77, 0, 1]));
    in_ns(&lab, HOST, netlink::attach(&Sandbox::Pid(pid), &ifc)).unwrap();
    let eth0 = link(&lab, SB, "eth0").expect("eth0 in the process's namespace");
    assert_eq!(ipv4_addrs(&eth0), ["10.77.0.9/24"]);
    assert_eq!(default_routes(&lab, SB)[0]["gateway"], "10.77.0.1");

    lab.stop(pid);
    let e = in_ns(&lab, HOST, netlink::attach(&Sandbox::Pid(pid), &ifc)).unwrap_err();
    assert!(e.to_string().contains(&format!("pid {pid}")), "{e}");
    assert!(in_ns(&lab, HOST, netlink::detach("slv0")).unwrap());
    assert_eq!(names(&lab, SB), ["lo"]);
}

#[test]
fn create_veth_pair_keeps_both_ends_here() {
    if skip() {
        return;
    }
    let lab = lab("nlv");
    let mac = MacAddr([0x02, 0x42, 0x0a, 0x00, 0x00, 0x05]);
    in_ns(
        &lab,
        HOST,
        netlink::create_veth_pair("slh0", "slp0", Some(mac), 1400),
    )
    .unwrap();
    let host = link(&lab, HOST, "slh0").unwrap();
    let peer = link(&lab, HOST, "slp0").unwrap();
    assert!(is_up(&host));
    assert!(!is_up(&peer));
    assert_eq!(host["mtu"], 1400);
    assert_eq!(peer["mtu"], 1400);
    assert_eq!(peer["address"], "02:42:0a:00:00:05");

    let e = in_ns(
        &lab,
        HOST,
        netlink::create_veth_pair("slh1", "slp0", None, 1400),
    )
    .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST), "{e}");
    assert_eq!(names(&lab, HOST), ["lo", "slh0", "slp0"]);

    assert!(in_ns(&lab, HOST, netlink::detach("slh0")).unwrap());
    assert_eq!(names(&lab, HOST), ["lo"]);
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

#[test]
fn attach_detach_timing() {
    if skip() {
        return;
    }
    let lab = lab("nlt");
    let sb = Sandbox::Netns(ns_path(&lab, SB));
    let ifc = iface("slv0", "eth0", [10, 66, 0, 2], 24, Some([10, 66, 0, 1]));
    let (mut att, mut det) = in_ns(&lab, HOST, async {
        let (mut att, mut det) = (Vec::new(), Vec::new());
        for _ in 0..50 {
            let t = Instant::now();
            netlink::attach(&sb, &ifc).await.unwrap();
            att.push(t.elapsed());
            let t = Instant::now();
            assert!(netlink::detach("slv0").await.unwrap());
            det.push(t.elapsed());
        }
        (att, det)
    });
    att.sort();
    det.sort();
    eprintln!(
        "netlink timing over 50 cycles: attach p50 {:?} p99 {:?}; detach p50 {:?} p99 {:?}",
        percentile(&att, 50),
        percentile(&att, 99),
        percentile(&det, 50),
        percentile(&det, 99)
    );
    assert_eq!(names(&lab, SB), ["lo"]);
    assert_eq!(names(&lab, HOST), ["lo"]);
}
