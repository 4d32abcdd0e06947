//! The engine harness against the engines' own reference networking: a private dockerd (plain
//! run, plugin discovery, a user bridge network), a private podman with the CNI bridge plugin,
//! and the CNI runner with bridge + portmap. Everything must be gone afterwards.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{json, Value};
use sluice_lab::lab::Lab;
use sluice_tests::engines::cni::plugin_config;
use sluice_tests::engines::{
    is_root, missing_tool, CniCommand, CniRunner, CniRuntime, Dockerd, EngineError, Podman, Residue,
};

fn skip(tools: &[&str]) -> bool {
    if !is_root() {
        eprintln!("skipped: needs root");
        return true;
    }
    if let Some(t) = missing_tool(tools) {
        eprintln!("skipped: {t} is not installed (scripts/setup-engines.sh)");
        return true;
    }
    false
}

fn assert_clean(residue: &Residue) {
    let left = residue.leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
    let root_links = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&root_links.stdout).contains("docker0"),
        "a docker0 appeared in the root namespace"
    );
}

/// A libnetwork remote driver that accepts everything and records the paths it was called on,
/// serving HTTP/1.1 (keep-alive) on a unix socket from a thread.
fn stub_driver(path: &Path) -> Arc<Mutex<Vec<String>>> {
    let listener = UnixListener::bind(path).unwrap();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&calls);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                    let mut len = 0;
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        if h == "\r\n" {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                len = v.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    let reply = match path.as_str() {
                        "/Plugin.Activate" => json!({"Implements": ["NetworkDriver"]}),
                        "/NetworkDriver.GetCapabilities" => {
                            json!({"Scope": "local", "ConnectivityScope": "local"})
                        }
                        _ => json!({}),
                    }
                    .to_string();
                    seen.lock().unwrap().push(path);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.plugins.v1+json\r\nContent-Length: {}\r\n\r\n",
                        reply.len()
                    );
                    if w.write_all(head.as_bytes()).is_err()
                        || w.write_all(reply.as_bytes()).is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    calls
}

#[test]
fn dockerd_runs_a_container_finds_per_test_plugins_and_leaves_nothing() {
    if skip(&["dockerd", "nsenter", "unshare", "busybox"]) {
        return;
    }
    let t = Instant::now();
    let d = Dockerd::start("dka").unwrap();
    eprintln!(
        "dockerd {} ready in {:?}",
        d.version().unwrap(),
        d.started_in()
    );
    let img = d.import_busybox().unwrap();
    let run = Instant::now();
    d.docker(&["run", "--rm", "--network", "none", img, "true"])
        .unwrap();
    eprintln!("docker run --rm --network none: {:?}", run.elapsed());
    let out = d
        .docker_unchecked(&["run", "--rm", "--network", "none", img, "false"])
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "exit codes come through");

    // Plugin discovery through both of dockerd's ways, in this dockerd's directory only.
    let by_sock = stub_driver(&d.plugin_socket("sluice"));
    let spec_target = d.lab().dir().join("spec-plugin.sock");
    let by_spec = stub_driver(&spec_target);
    d.write_plugin_spec("sluicespec", &format!("unix://{}", spec_target.display()))
        .unwrap();
    d.docker(&["network", "create", "-d", "sluice", "plugnet1"])
        .unwrap();
    d.docker(&["network", "create", "-d", "sluicespec", "plugnet2"])
        .unwrap();
    d.docker(&["network", "rm", "plugnet1", "plugnet2"])
        .unwrap();
    for calls in [by_sock, by_spec] {
        let calls = calls.lock().unwrap().clone();
        assert_eq!(
            calls,
            [
                "/Plugin.Activate",
                "/NetworkDriver.GetCapabilities",
                "/NetworkDriver.CreateNetwork",
                "/NetworkDriver.DeleteNetwork"
            ]
        );
    }
    assert!(!Path::new("/run/docker/plugins/sluice.sock").exists());

    let residue = d.residue();
    let stop = Instant::now();
    drop(d);
    eprintln!("dockerd stop and cleanup: {:?}", stop.elapsed());
    assert_clean(&residue);
    eprintln!("test total: {:?}", t.elapsed());
}

#[test]
fn dockerd_bridge_network_containers_ping_each_other_by_name() {
    if skip(&["dockerd", "nsenter", "unshare", "busybox"]) {
        return;
    }
    let t = Instant::now();
    let d = Dockerd::start("dkb").unwrap();
    let img = d.import_busybox().unwrap();
    d.docker(&["network", "create", "--subnet", "10.123.0.0/24", "slnet"])
        .unwrap();
    for name in ["sla", "slb"] {
        d.docker(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "slnet",
            img,
            "sleep",
            "60",
        ])
        .unwrap();
    }
    let ping = |from: &str, to: &str| {
        d.docker_stdout(&["exec", from, "ping", "-c", "1", "-W", "2", to])
            .unwrap()
    };
    assert!(ping("sla", "slb").contains("1 packets received"));
    assert!(ping("slb", "sla").contains("1 packets received"));
    let ip_a = d
        .docker_stdout(&[
            "inspect",
            "-f",
            "{{.NetworkSettings.Networks.slnet.IPAddress}}",
            "sla",
        ])
        .unwrap();
    assert!(ip_a.starts_with("10.123.0."), "{ip_a}");
    // A sandbox path from dockerd (the SandboxKey of libnetwork's Join) exists only in
    // dockerd's mount namespace: helpers started there (Dockerd::command, Dockerd::exec) enter it.
    let key = d
        .docker_stdout(&["inspect", "-f", "{{.NetworkSettings.SandboxKey}}", "sla"])
        .unwrap();
    let net = format!("--net={key}");
    let addrs = d
        .exec(&["nsenter", &net, "ip", "-o", "-4", "addr", "show"])
        .unwrap();
    assert!(String::from_utf8_lossy(&addrs.stdout).contains(&ip_a));
    // docker0, the user network's bridge and dockerd's rules live in dockerd's namespace.
    let links = d.exec(&["ip", "-o", "link", "show"]).unwrap();
    assert!(String::from_utf8_lossy(&links.stdout).contains("docker0"));
    let rules = d.exec(&["iptables", "-w", "-S", "FORWARD"]).unwrap();
    assert!(String::from_utf8_lossy(&rules.stdout).contains("DOCKER"));
    let residue = d.residue();
    drop(d);
    assert_clean(&residue);
    eprintln!("test total: {:?}", t.elapsed());
}

#[test]
fn podman_cni_bridge_container_pings_its_gateway() {
    if skip(&[
        "podman",
        "nsenter",
        "unshare",
        "busybox",
        "/usr/lib/cni/bridge",
    ]) {
        return;
    }
    let t = Instant::now();
    let p = Podman::start("pdc").unwrap();
    eprintln!("podman {}", p.version().unwrap());
    let img = p.import_busybox().unwrap();
    let net = p
        .add_cni_network(&json!({
            "cniVersion": "1.0.0",
            "name": "slpodnet",
            "plugins": [{
                "type": "bridge",
                "bridge": "slpbr0",
                "isGateway": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": "10.124.7.0/24", "gateway": "10.124.7.1"}]],
                    "routes": [{"dst": "0.0.0.0/0"}]
                }
            }]
        }))
        .unwrap();
    let run = Instant::now();
    let out = p
        .podman_stdout(&[
            "run",
            "--rm",
            "--network",
            &net,
            img,
            "sh",
            "-c",
            "ip -o -4 addr show eth0 && ping -c 1 -W 2 10.124.7.1",
        ])
        .unwrap();
    eprintln!("podman run --rm on a CNI network: {:?}", run.elapsed());
    assert!(out.contains("10.124.7."), "{out}");
    assert!(out.contains("1 packets received"), "{out}");
    let links = p.exec(&["ip", "-o", "link", "show", "slpbr0"]).unwrap();
    assert!(
        !links.stdout.is_empty(),
        "the CNI bridge is in podman's namespace"
    );
    let residue = p.residue();
    drop(p);
    assert_clean(&residue);
    eprintln!("test total: {:?}", t.elapsed());
}

#[test]
fn cni_runner_adds_checks_and_deletes_bridge_and_portmap() {
    if skip(&[
        "nsenter",
        "iptables",
        "/usr/lib/cni/bridge",
        "/usr/lib/cni/portmap",
    ]) {
        return;
    }
    let t = Instant::now();
    let mut lab = Lab::new("cnd").unwrap();
    lab.add_ns("host").unwrap();
    lab.add_ns("ctr").unwrap();
    let ipam_dir = lab.dir().join("ipam");
    let list = json!({
        "cniVersion": "1.0.0",
        "name": "slcninet",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "slcbr0",
                "isGateway": true,
                "ipMasq": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": "10.124.8.0/24"}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": ipam_dir
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    });
    let mut rt = CniRuntime {
        container_id: "sluice-cni-test".into(),
        netns: PathBuf::from("/run/netns").join(lab.ns_name("ctr").unwrap()),
        ifname: "eth0".into(),
        args: vec![("IgnoreUnknown".into(), "1".into())],
        ..CniRuntime::default()
    };
    rt.capability_args.insert(
        "portMappings".into(),
        json!([{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]),
    );
    let runner = CniRunner::new(
        vec![PathBuf::from("/usr/lib/cni")],
        Some(lab.ns_name("host").unwrap()),
    );
    let result: Value = runner.add_list(&list, &rt).unwrap();
    assert_eq!(result["cniVersion"], "1.0.0");
    let addr = result["ips"][0]["address"].as_str().unwrap();
    let gw = result["ips"][0]["gateway"].as_str().unwrap();
    assert!(addr.starts_with("10.124.8."), "{result}");
    assert!(lab
        .exec("ctr", &["ip", "-o", "-4", "addr", "show", "eth0"])
        .unwrap()
        .contains(addr));
    lab.exec("ctr", &["ping", "-c", "1", "-W", "2", gw])
        .unwrap();
    let nat = lab
        .exec("host", &["iptables", "-w", "-t", "nat", "-S"])
        .unwrap();
    assert!(nat.contains("--dport 18080"), "{nat}");

    // CHECK: the bridge's must pass. portmap 1.1.1 (Debian 12) fails CHECK on every
    // IPv4-only attachment, looking for an IPv6 chain it never made (containernetworking/plugins
    // issue 819, fixed in later releases): the list's CHECK passes or fails exactly so.
    let bridge = plugin_config(&list, &list["plugins"][0], Some(&result), &rt).unwrap();
    runner.exec(CniCommand::Check, &rt, &bridge).unwrap();
    match runner.check_list(&list, &rt, &result) {
        Ok(()) => {}
        Err(EngineError::Cni { plugin, error, .. })
            if plugin == "portmap" && error.msg.contains("could not check ipv6 dnat") =>
        {
            eprintln!("portmap CHECK: known IPv6 bug: {error}");
        }
        Err(e) => panic!("CHECK failed: {e}"),
    }
    runner.del_list(&list, &rt, Some(&result)).unwrap();
    assert!(lab.exec("ctr", &["ip", "link", "show", "eth0"]).is_err());
    let nat = lab
        .exec("host", &["iptables", "-w", "-t", "nat", "-S"])
        .unwrap();
    assert!(!nat.contains("--dport 18080"), "{nat}");
    let lease = ipam_dir
        .join("slcninet")
        .join(addr.split('/').next().unwrap());
    assert!(!lease.exists(), "host-local released the address");
    // CHECK of a deleted attachment fails; a second DEL succeeds (spec: DEL is idempotent).
    assert!(matches!(
        runner.check_list(&list, &rt, &result),
        Err(EngineError::Cni { plugin, command: CniCommand::Check, .. }) if plugin == "bridge"
    ));
    runner.del_list(&list, &rt, Some(&result)).unwrap();
    eprintln!("test total: {:?}", t.elapsed());
}
