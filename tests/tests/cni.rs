//! The `sluice-cni` plugin end to end: a CNI runtime (the harness's runner) attaches namespaces
//! to a sluiced in namespaces (DaemonLab), and traffic flows through sluice's bridge, NAPT and
//! published ports. Needs root and the release binaries (`cargo build --release
//! --bins`; `SLUICE_BIN` names the `sluice` binary, `sluiced` and `sluice-cni` are
//! expected beside it).
#![forbid(unsafe_code)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_lab::daemonlab::{DaemonLab, OUTSIDE_IP, UPLINK_IP};
use sluice_tests::engines::cni::plugin_config;
use sluice_tests::engines::{missing_tool, CniCommand, CniRunner, CniRuntime, EngineError, Podman};

fn bin_dir() -> Option<PathBuf> {
    sluice_tests::bins::release_bin_dir(&["sluice", "sluiced", "sluice-cni"])
}

/// A directory holding only the plugin (as `sluice-cni`), the runner's CNI_PATH.
fn plugin_dir(d: &DaemonLab, bin: &Path) -> PathBuf {
    let dir = d.lab().dir().join("cni-bin");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(bin.join("sluice-cni"), dir.join("sluice-cni")).unwrap();
    dir
}

fn runtime(id: &str, netns: &str) -> CniRuntime {
    let mut rt = CniRuntime {
        container_id: id.into(),
        netns: PathBuf::from(netns),
        ifname: "eth0".into(),
        args: vec![("IgnoreUnknown".into(), "1".into())],
        ..CniRuntime::default()
    };
    rt.capability_args.insert(
        "portMappings".into(),
        json!([{"hostPort": 18081, "containerPort": 80, "protocol": "tcp"}]),
    );
    rt
}

fn ip_of(result: &Value) -> Ipv4Addr {
    result["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {result}"))
}

/// What a client in the lab's "out" namespace reads from the uplink address at `port` (a
/// published port).
fn fetch_from_outside(lab: &sluice_lab::lab::Lab, port: u16) -> String {
    let target = format!("TCP:{UPLINK_IP}:{port}");
    lab.exec("out", &["socat", "-t", "2", "-T", "5", "-", &target])
        .unwrap()
}

fn cni_code(e: EngineError) -> u64 {
    match e {
        EngineError::Cni { error, .. } => error.code,
        other => panic!("not a CNI error: {other}"),
    }
}

#[test]
fn cni_plugin_attaches_routes_publishes_checks_and_collects() {
    let Some(bin) = bin_dir() else { return };
    let t = Instant::now();
    let mut d = DaemonLab::start("cni", &bin, &["--workers", "1"]).unwrap();
    let runner = CniRunner::new(vec![plugin_dir(&d, &bin)], None);
    let list = json!({
        "cniVersion": "1.1.0",
        "name": "slcni",
        "plugins": [{
            "type": "sluice-cni",
            "isGateway": true,
            "ipMasq": true,
            "mtu": 1500,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.62.0.0/24", "gateway": "10.62.0.1"}]]},
            "socket": d.socket(),
            "capabilities": {"portMappings": true}
        }]
    });
    let plugin = |rt: &CniRuntime, prev: Option<&Value>| {
        plugin_config(&list, &list["plugins"][0], prev, rt).unwrap()
    };

    // VERSION and STATUS.
    let rt0 = runtime("", "");
    let v = runner
        .exec(CniCommand::Version, &rt0, &plugin(&rt0, None))
        .unwrap()
        .unwrap();
    assert_eq!(v["supportedVersions"], json!(["1.0.0", "1.1.0"]));
    assert_eq!(
        runner
            .exec(CniCommand::Status, &rt0, &plugin(&rt0, None))
            .unwrap(),
        None
    );

    // ADD two containers: the network is created from the configuration.
    let c1 = d.add_container("c1").unwrap();
    let c2 = d.add_container("c2").unwrap();
    let rt1 = runtime("ctr1", &c1);
    let mut rt2 = runtime("ctr2", &c2);
    rt2.capability_args.clear();
    let add = Instant::now();
    let r1 = runner.add_list(&list, &rt1).unwrap();
    eprintln!("ADD: {:?}", add.elapsed());
    let r2 = runner.add_list(&list, &rt2).unwrap();
    assert_eq!(r1["cniVersion"], "1.1.0");
    assert_eq!(r1["interfaces"][1]["name"], "eth0");
    assert_eq!(r1["interfaces"][1]["sandbox"], c1.as_str());
    assert_eq!(r1["ips"][0]["gateway"], "10.62.0.1");
    assert_eq!(r1["ips"][0]["interface"], 1);
    assert_eq!(
        r1["routes"][0],
        json!({"dst": "0.0.0.0/0", "gw": "10.62.0.1"})
    );
    let (ip1, ip2) = (ip_of(&r1), ip_of(&r2));
    assert!(ip1.octets()[..3] == [10, 62, 0] && ip1 != ip2, "{r1} {r2}");
    let inspect = d.sluice_ok(&["network", "inspect", "slcni"]).unwrap();
    assert!(
        inspect.contains("10.62.0.0/24") && inspect.contains("cni-ctr1-eth0"),
        "{inspect}"
    );
    eprintln!("sluice_ps:\n{}", d.sluice_ok(&["ps"]).unwrap());

    // Traffic: container to container, to the outside through NAPT, and a published port.
    let lab = d.lab();
    lab.wait_ping("c1", ip2, Duration::from_secs(5)).unwrap();
    lab.wait_ping("c2", OUTSIDE_IP, Duration::from_secs(5))
        .unwrap();
    d.lab_mut()
        .spawn(
            "c1",
            &[
                "socat",
                "TCP-LISTEN:80,fork,reuseaddr",
                "SYSTEM:echo hello-from-cni",
            ],
            "listener",
        )
        .unwrap();
    d.lab()
        .wait_listen("c1", 80, Duration::from_secs(5))
        .unwrap();
    let got = fetch_from_outside(d.lab(), 18081);
    assert_eq!(got.trim(), "hello-from-cni");

    // CHECK passes, then fails once the interface is removed behind sluice's back.
    runner.check_list(&list, &rt1, &r1).unwrap();
    runner.check_list(&list, &rt2, &r2).unwrap();
    let mut wrong = r2.clone();
    wrong["ips"][0]["address"] = json!("10.62.0.250/24");
    assert_eq!(
        cni_code(runner.check_list(&list, &rt2, &wrong).unwrap_err()),
        101
    );

    // A second routed network as eth1 of c2: its result lists no route, since the sandbox's
    // default route stays the first network's; its last DEL removes that network.
    let mut list2 = list.clone();
    list2["name"] = json!("slcni2");
    list2["plugins"][0]["ipam"]["ranges"] =
        json!([[{"subnet": "10.64.0.0/24", "gateway": "10.64.0.1"}]]);
    let mut rt2b = runtime("ctr2", &c2);
    rt2b.ifname = "eth1".into();
    rt2b.capability_args.clear();
    let r2b = runner.add_list(&list2, &rt2b).unwrap();
    assert_eq!(r2b["interfaces"][1]["name"], "eth1");
    assert!(r2b.get("routes").is_none(), "{r2b}");
    let routes = d
        .lab()
        .exec("c2", &["ip", "-4", "route", "show", "default"])
        .unwrap();
    assert!(routes.contains("via 10.62.0.1 dev eth0"), "{routes}");
    runner.check_list(&list2, &rt2b, &r2b).unwrap();
    runner.del_list(&list2, &rt2b, Some(&r2b)).unwrap();
    let nets = d.sluice_ok(&["network", "ls"]).unwrap();
    assert!(!nets.contains(" slcni2 "), "{nets}");

    // CHECK compares the routes too: without its default route c2's attachment differs.
    d.lab()
        .exec("c2", &["ip", "route", "del", "default"])
        .unwrap();
    assert_eq!(
        cni_code(runner.check_list(&list, &rt2, &r2).unwrap_err()),
        101
    );
    d.lab()
        .exec("c2", &["ip", "route", "add", "default", "via", "10.62.0.1"])
        .unwrap();
    runner.check_list(&list, &rt2, &r2).unwrap();

    d.lab().exec("c1", &["ip", "link", "del", "eth0"]).unwrap();
    let e = runner.check_list(&list, &rt1, &r1).unwrap_err();
    eprintln!("CHECK after the interface went: {e}");
    assert!(matches!(cni_code(e), 3 | 101));

    // DEL twice succeeds; the endpoint is gone.
    runner.del_list(&list, &rt1, Some(&r1)).unwrap();
    runner.del_list(&list, &rt1, Some(&r1)).unwrap();
    assert!(!d.sluice_ok(&["ps"]).unwrap().contains("cni-ctr1-eth0"));
    assert_eq!(
        cni_code(runner.check_list(&list, &rt1, &r1).unwrap_err()),
        3
    );

    // GC keeps the valid attachment and removes the stale one.
    let c3 = d.add_container("c3").unwrap();
    let mut rt3 = runtime("ctr3", &c3);
    rt3.capability_args.clear();
    runner.add_list(&list, &rt3).unwrap();
    let mut gc = plugin(&rt0, None);
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "ctr2", "ifname": "eth0"}]);
    assert_eq!(runner.exec(CniCommand::Gc, &rt0, &gc).unwrap(), None);
    let ps = d.sluice_ok(&["ps"]).unwrap();
    assert!(
        ps.contains("cni-ctr2-eth0") && !ps.contains("cni-ctr3-eth0"),
        "{ps}"
    );
    assert!(d.lab().exec("c3", &["ip", "link", "show", "eth0"]).is_err());

    // Bad configurations: a subnet that differs from the existing network's (7), a value of
    // the wrong type (6), an unsupported version (1).
    let rt4 = runtime("ctr4", &c3);
    let mut bad = plugin(&rt4, None);
    bad["ipam"]["ranges"][0][0]["subnet"] = json!("10.63.0.0/24");
    bad["ipam"]["ranges"][0][0]["gateway"] = json!("10.63.0.1");
    assert_eq!(
        cni_code(runner.exec(CniCommand::Add, &rt4, &bad).unwrap_err()),
        7
    );
    let mut bad = plugin(&rt4, None);
    bad["mtu"] = json!("big");
    assert_eq!(
        cni_code(runner.exec(CniCommand::Add, &rt4, &bad).unwrap_err()),
        6
    );
    let mut bad = plugin(&rt4, None);
    bad["cniVersion"] = json!("0.3.1");
    assert_eq!(
        cni_code(runner.exec(CniCommand::Add, &rt4, &bad).unwrap_err()),
        1
    );

    // The last DEL removes the network sluice-cni made (a runtime's `network rm` calls no
    // plugin): nothing is left behind.
    let rt2 = runtime("ctr2", &c2);
    runner.del_list(&list, &rt2, None).unwrap();
    let nets = d.sluice_ok(&["network", "ls"]).unwrap();
    assert!(!nets.contains(" slcni "), "{nets}");

    // A restarted sluiced that releases the last endpoint of a network sluice-cni made
    // (its interface went while the daemon was down) removes the network, as that DEL would.
    let c5 = d.add_container("c5").unwrap();
    let mut rt5 = runtime("ctr5", &c5);
    rt5.capability_args.clear();
    runner.add_list(&list, &rt5).unwrap();
    d.stop();
    d.lab().exec("c5", &["ip", "link", "del", "eth0"]).unwrap();
    d.restart().unwrap();
    let nets = d.sluice_ok(&["network", "ls"]).unwrap();
    assert!(!nets.contains(" slcni "), "{nets}");
    assert!(d.log().contains("removed network slcni"), "{}", d.log());

    // STATUS with sluiced down: 50; DEL still succeeds.
    d.stop();
    assert_eq!(
        cni_code(
            runner
                .exec(CniCommand::Status, &rt0, &plugin(&rt0, None))
                .unwrap_err()
        ),
        50
    );
    runner.del_list(&list, &rt2, Some(&r2)).unwrap();
    eprintln!("test total: {:?}", t.elapsed());
}

/// sluice's v6 address on the uplink in the dual-stack test, and the outside namespace's.
const UPLINK6: &str = "2001:db8:62::2";
const OUTSIDE6: &str = "2001:db8:62::1";

/// Pings `ip` over IPv6 from namespace `ns` until a reply comes back (DAD and NDP first).
fn wait_ping6(lab: &sluice_lab::lab::Lab, ns: &str, ip: &str) {
    lab.wait_ping6(ns, ip.parse().unwrap(), Duration::from_secs(10))
        .unwrap();
}

/// host-local's dual-stack configuration (one range set per family): both addresses, both
/// default routes in the result, ping6 between containers and out through NAT66, a static v6
/// address from the `ips` capability, a published port on the uplink's v6 address, CHECK.
#[test]
fn cni_dual_stack_ranges() {
    let Some(bin) = bin_dir() else { return };
    let mut d = DaemonLab::start_dual_stack("cnsx", &bin, UPLINK6, OUTSIDE6).unwrap();
    let runner = CniRunner::new(vec![plugin_dir(&d, &bin)], None);
    let list = json!({
        "cniVersion": "1.1.0",
        "name": "slcni6",
        "plugins": [{
            "type": "sluice-cni",
            "isGateway": true,
            "ipMasq": true,
            "ipam": {"type": "host-local", "ranges": [
                [{"subnet": "10.65.0.0/24", "gateway": "10.65.0.1"}],
                [{"subnet": "fd00:65::/64", "gateway": "fd00:65::1"}]
            ]},
            "socket": d.socket(),
            "capabilities": {"portMappings": true, "ips": true}
        }]
    });
    let c1 = d.add_container("c1").unwrap();
    let c2 = d.add_container("c2").unwrap();
    let rt1 = runtime("ctr1", &c1);
    let mut rt2 = runtime("ctr2", &c2);
    rt2.capability_args.clear();
    rt2.capability_args
        .insert("ips".into(), json!(["fd00:65::99/64"]));
    let r1 = runner.add_list(&list, &rt1).unwrap();
    let r2 = runner.add_list(&list, &rt2).unwrap();
    assert_eq!(
        r1["ips"],
        json!([
            {"address": "10.65.0.2/24", "gateway": "10.65.0.1", "interface": 1},
            {"address": "fd00:65::2/64", "gateway": "fd00:65::1", "interface": 1}
        ])
    );
    assert_eq!(
        r1["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": "10.65.0.1"}, {"dst": "::/0", "gw": "fd00:65::1"}])
    );
    assert_eq!(
        r2["ips"][1]["address"], "fd00:65::99/64",
        "the ips capability"
    );
    let inspect = d.sluice_ok(&["network", "inspect", "slcni6"]).unwrap();
    assert!(
        inspect.contains("\"EnableIPv6\": true") && inspect.contains("fd00:65::/64"),
        "{inspect}"
    );
    let lab = d.lab();
    let route = lab
        .exec("c1", &["ip", "-6", "route", "show", "default"])
        .unwrap();
    assert!(route.contains("via fd00:65::1"), "{route}");
    wait_ping6(lab, "c1", "fd00:65::99");
    wait_ping6(lab, "c2", "fd00:65::2");
    wait_ping6(lab, "c1", OUTSIDE6);

    // The published port (runtime()'s 18081 -> 80) also on the uplink's v6 address.
    d.lab_mut()
        .spawn(
            "c1",
            &[
                "socat",
                "TCP6-LISTEN:80,fork,reuseaddr",
                "SYSTEM:echo hello-v6",
            ],
            "listener6",
        )
        .unwrap();
    d.lab()
        .wait_listen("c1", 80, Duration::from_secs(5))
        .unwrap();
    let target = format!("TCP6:[{UPLINK6}]:18081");
    let deadline = Instant::now() + Duration::from_secs(10);
    let got = loop {
        let o = d
            .lab()
            .exec_output("out", &["socat", "-t", "2", "-T", "5", "-", &target])
            .unwrap();
        if o.status.success() && !o.stdout.is_empty() {
            break String::from_utf8_lossy(&o.stdout).into_owned();
        }
        assert!(Instant::now() < deadline, "{target}: {o:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(got.trim(), "hello-v6");

    runner.check_list(&list, &rt1, &r1).unwrap();
    runner.check_list(&list, &rt2, &r2).unwrap();
    // A configuration whose v6 subnet differs from the existing network's: 7.
    let mut bad = plugin_config(&list, &list["plugins"][0], None, &rt2).unwrap();
    bad["ipam"]["ranges"][1][0]["subnet"] = json!("fd00:66::/64");
    bad["ipam"]["ranges"][1][0]["gateway"] = json!("fd00:66::1");
    assert_eq!(
        cni_code(runner.exec(CniCommand::Add, &rt2, &bad).unwrap_err()),
        7
    );
    runner.del_list(&list, &rt1, Some(&r1)).unwrap();
    runner.del_list(&list, &rt2, Some(&r2)).unwrap();
    let nets = d.sluice_ok(&["network", "ls"]).unwrap();
    assert!(!nets.contains(" slcni6 "), "{nets}");
}

/// sluiced inside podman's namespaces: podman's netns files live in its private mount namespace,
/// so the daemon that opens them must run there too (its uplink `up0` in podman's network
/// namespace, wired to a namespace `out` at 192.0.2.1).
struct PodSluiced {
    child: std::process::Child,
    socket: PathBuf,
}

impl PodSluiced {
    /// With `dual`, the uplink also has [`UPLINK6`] and `out` [`OUTSIDE6`].
    fn start(p: &mut Podman, bin: &Path, dual: bool) -> PodSluiced {
        let lab = p.lab_mut();
        lab.add_ns("out").unwrap();
        lab.veth(("pod", "up0"), ("out", "eth0")).unwrap();
        lab.up("pod", "up0").unwrap();
        lab.addr("out", "eth0", &format!("{OUTSIDE_IP}/24"))
            .unwrap();
        lab.up("out", "eth0").unwrap();
        let mut v6_args = Vec::new();
        if dual {
            lab.addr6("out", "eth0", &format!("{OUTSIDE6}/64")).unwrap();
            v6_args = vec![
                "--uplink-ip6".to_string(),
                format!("{UPLINK6}/64"),
                "--uplink-gateway6".into(),
                OUTSIDE6.into(),
            ];
        }
        let socket = p.dir().join("sluice.sock");
        let log = std::fs::File::create(p.dir().join("sluiced.log")).unwrap();
        let mut cmd = p.command(bin.join("sluiced"));
        cmd.arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(p.dir().join("sluiced-state"))
            .args(["--uplink", "up0", "--uplink-ip", &format!("{UPLINK_IP}/24")])
            .args([
                "--uplink-gateway",
                &OUTSIDE_IP.to_string(),
                "--workers",
                "1",
            ])
            .args(v6_args)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = cmd.spawn().unwrap();
        let start = Instant::now();
        while !socket.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "sluiced did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        PodSluiced { child, socket }
    }
}

impl Drop for PodSluiced {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// podman (lab `tag`) with sluiced in its namespaces (v6 on the uplink when `dual`),
/// sluice-cni among its CNI plugins, and the busybox image; `None` (said why) where the test
/// cannot run.
fn start_podman(tag: &str, dual: bool) -> Option<(Podman, PodSluiced, &'static str)> {
    let bin = bin_dir()?;
    if let Some(t) = missing_tool(&["podman", "nsenter", "unshare", "busybox", "socat"]) {
        eprintln!("skipped: {t} is not installed (scripts/setup-engines.sh)");
        return None;
    }
    let mut p = Podman::start(tag).unwrap();
    eprintln!("podman {}", p.version().unwrap());
    let sd = PodSluiced::start(&mut p, &bin, dual);
    std::os::unix::fs::symlink(
        bin.join("sluice-cni"),
        p.cni_plugin_dir().join("sluice-cni"),
    )
    .unwrap();
    let img = p.import_busybox().unwrap();
    Some((p, sd, img))
}

/// `podman run -d` of `pa` and `pb` (published as `-p publish`) on `net`, each answering
/// `reply` on port 80.
fn run_pa_pb(p: &Podman, net: &str, img: &str, publish: &str, reply: &str) {
    let serve = format!("while true; do echo {reply} | nc -l -p 80; done");
    for (name, extra) in [("pa", None), ("pb", Some(publish))] {
        let mut args = vec!["run", "-d", "--name", name, "--network", net];
        if let Some(pub_) = extra {
            args.extend(["-p", pub_]);
        }
        args.extend([img, "sh", "-c", &serve]);
        p.podman(&args).unwrap();
    }
}

#[test]
fn podman_with_the_cni_backend_uses_sluice() {
    let t = Instant::now();
    let Some((p, sd, img)) = start_podman("pds", false) else {
        return;
    };
    let bin = bin_dir().unwrap();
    let net = p
        .add_cni_network(&json!({
            "cniVersion": "1.0.0",
            "name": "slpod",
            "plugins": [{
                "type": "sluice-cni",
                "subnet": "10.64.0.0/24",
                "isGateway": true,
                "ipMasq": true,
                "socket": sd.socket,
                "capabilities": {"portMappings": true, "aliases": true}
            }]
        }))
        .unwrap();
    let run = Instant::now();
    run_pa_pb(&p, &net, img, "18082:80", "hello-from-podman");
    eprintln!(
        "two podman run -d on the sluice network: {:?}",
        run.elapsed()
    );
    let ip = |c: &str| -> String {
        p.podman_stdout(&[
            "inspect",
            "-f",
            "{{.NetworkSettings.Networks.slpod.IPAddress}}",
            c,
        ])
        .unwrap()
    };
    let (ipa, ipb) = (ip("pa"), ip("pb"));
    assert!(ipa.starts_with("10.64.0.") && ipb.starts_with("10.64.0.") && ipa != ipb);
    // The sluice CLI inside podman's namespaces, talking to this test's daemon.
    let sluice_cli = |args: &[&str]| {
        let out = p
            .command(bin.join("sluice"))
            .arg("--socket")
            .arg(&sd.socket)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ps = sluice_cli(&["ps"]);
    eprintln!("sluice ps:\n{ps}");
    assert!(
        ps.contains(&ipa) && ps.contains("0.0.0.0:18082->80/tcp"),
        "{ps}"
    );
    p.podman(&["exec", "pa", "ping", "-c", "1", "-W", "2", &ipb])
        .unwrap();
    // The first packets to the outside wait for sluice's ARP of the uplink's next hop.
    let outside =
        format!("for i in 1 2 3 4 5; do ping -c 1 -W 1 {OUTSIDE_IP} && exit 0; done; exit 1");
    let o = p
        .podman_unchecked(&["exec", "pa", "sh", "-c", &outside])
        .unwrap();
    assert!(
        o.status.success(),
        "no NAPT to the outside: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let files = p
        .podman_stdout(&["exec", "pa", "sh", "-c", "cat /etc/resolv.conf /etc/hosts"])
        .unwrap();
    eprintln!("pa's resolv.conf and hosts:\n{files}");
    let by_name = p
        .podman_unchecked(&["exec", "pa", "ping", "-c", "1", "-W", "2", "pb"])
        .unwrap();
    assert!(
        by_name.status.success(),
        "ping by name through sluice's embedded DNS: {}",
        String::from_utf8_lossy(&by_name.stderr).trim()
    );

    // podman network connect / disconnect: a second sluice network, as eth1.
    let net2 = p
        .add_cni_network(&json!({
            "cniVersion": "1.0.0",
            "name": "slpod2",
            "plugins": [{
                "type": "sluice-cni",
                "subnet": "10.66.0.0/24",
                "isGateway": true,
                "ipMasq": true,
                "socket": sd.socket,
            }]
        }))
        .unwrap();
    p.podman(&["network", "connect", &net2, "pa"]).unwrap();
    let addrs = p
        .podman_stdout(&["exec", "pa", "ip", "-4", "addr"])
        .unwrap();
    assert!(addrs.contains("10.66.0."), "{addrs}");
    p.podman(&["network", "disconnect", &net2, "pa"]).unwrap();
    let addrs = p
        .podman_stdout(&["exec", "pa", "ip", "-4", "addr"])
        .unwrap();
    assert!(!addrs.contains("10.66.0."), "{addrs}");
    let got = fetch_from_outside(p.lab(), 18082);
    assert_eq!(got.trim(), "hello-from-podman");
    p.podman(&["rm", "-f", "-t", "0", "pa", "pb"]).unwrap();
    let ps = sluice_cli(&["ps"]);
    assert!(!ps.contains(&ipa), "podman rm ran DEL: {ps}");
    p.podman(&["network", "rm", &net2]).unwrap();
    p.podman(&["network", "rm", &net]).unwrap();
    let nets = sluice_cli(&["network", "ls"]);
    assert!(
        !nets.contains("slpod"),
        "the last DEL removed the networks sluice-cni made: {nets}"
    );
    drop(sd);
    let residue = p.residue();
    drop(p);
    let left = residue.leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
    eprintln!("test total: {:?}", t.elapsed());
}

/// podman (CNI backend) on a dual-stack sluice network: host-local's two range sets, the
/// containers' v6 addresses as podman shows them, ping6 by name through sluice's embedded DNS
/// (AAAA), out through NAT66, and `-p` on the uplink's v6 address.
#[test]
fn podman_with_the_cni_backend_on_a_dual_stack_network() {
    let t = Instant::now();
    let Some((p, sd, img)) = start_podman("pdsx", true) else {
        return;
    };
    let net = p
        .add_cni_network(&json!({
            "cniVersion": "1.0.0",
            "name": "slpod6",
            "plugins": [{
                "type": "sluice-cni",
                "ipam": {"type": "host-local", "ranges": [
                    [{"subnet": "10.67.0.0/24", "gateway": "10.67.0.1"}],
                    [{"subnet": "fd00:67::/64", "gateway": "fd00:67::1"}]
                ]},
                "isGateway": true,
                "ipMasq": true,
                "socket": sd.socket,
                "capabilities": {"portMappings": true, "aliases": true}
            }]
        }))
        .unwrap();
    run_pa_pb(&p, &net, img, "18083:80", "hello-v6-podman");
    let v6 = |c: &str| -> String {
        p.podman_stdout(&[
            "inspect",
            "-f",
            "{{.NetworkSettings.Networks.slpod6.GlobalIPv6Address}}",
            c,
        ])
        .unwrap()
    };
    let (a6, b6) = (v6("pa"), v6("pb"));
    assert!(
        a6.starts_with("fd00:67::") && b6.starts_with("fd00:67::") && a6 != b6,
        "{a6} {b6}"
    );
    let ping6 = |from: &str, to: &str| {
        let cmd = format!("for i in 1 2 3 4 5 6 7 8 9 10; do ping6 -c 1 -W 1 {to} && exit 0; sleep 0.5; done; exit 1");
        let o = p
            .podman_unchecked(&["exec", from, "sh", "-c", &cmd])
            .unwrap();
        assert!(
            o.status.success(),
            "{from} -> {to}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let out = ping6("pa", "pb");
    assert!(out.contains(&b6), "by name, over v6: {out}");
    ping6("pa", OUTSIDE6);
    let target = format!("TCP6:[{UPLINK6}]:18083");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = p
            .lab()
            .exec_output("out", &["socat", "-t", "2", "-T", "5", "-", &target])
            .unwrap();
        if String::from_utf8_lossy(&o.stdout).contains("hello-v6-podman") {
            break;
        }
        assert!(Instant::now() < deadline, "{target}: {o:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    p.podman(&["rm", "-f", "-t", "0", "pa", "pb"]).unwrap();
    p.podman(&["network", "rm", &net]).unwrap();
    drop(sd);
    let residue = p.residue();
    drop(p);
    let left = residue.leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
    eprintln!("test total: {:?}", t.elapsed());
}
