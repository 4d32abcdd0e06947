//! `sluiced` and the `sluice` CLI end to end, in namespaces: every verb and flag and what it
//! does to the namespaces, refused input (one line, nonzero exit, nothing changed), behaviour
//! (ICC off, internal networks, published ports, embedded DNS), restart recovery under
//! traffic, 100 concurrent connects, and 1000 connect/disconnect cycles without leaks. Needs
//! root and the release binaries (`cargo build --release --bins`; `SLUICE_BIN`
//! names the `sluice` binary, `sluiced` is expected beside it).
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sluice_control::client::Client;
use sluice_control::dns::server::DNS_PORT;
use sluice_control::dns::wire::{build_query, parse, TYPE_A};
use sluice_control::dns::RESOLVER_IP;
use sluice_lab::daemonlab::{DaemonLab, OUTSIDE_IP, UPLINK_IP};
use sluice_tests::udp;

fn bin_dir() -> Option<PathBuf> {
    sluice_tests::bins::release_bin_dir(&["sluice", "sluiced"])
}

/// A daemon with one dataplane worker (the machine has two CPUs and tests run in pairs).
fn start(tag: &str) -> Option<DaemonLab> {
    let bin = bin_dir()?;
    Some(DaemonLab::start(tag, &bin, &["--workers", "1"]).unwrap())
}

fn ok(d: &DaemonLab, args: &[&str]) -> String {
    d.sluice_ok(args)
        .unwrap_or_else(|e| panic!("{e}; daemon log: {}", d.log()))
}

fn json_of(d: &DaemonLab, args: &[&str]) -> Value {
    let out = ok(d, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("sluice {args:?}: {e}: {out}"))
}

/// Runs a command that must fail: nonzero exit, nothing on stdout, exactly one line on
/// stderr (returned).
fn fails(d: &DaemonLab, args: &[&str]) -> String {
    let o = d.sluice(args);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success(),
        "sluice {args:?} succeeded: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(
        o.stdout.is_empty(),
        "sluice {args:?} printed {:?}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "sluice {args:?}: not one line: {stderr:?}"
    );
    stderr.trim().to_string()
}

/// Interface names in namespace `ns` of the lab (without the `@peer` suffix).
fn links(d: &DaemonLab, ns: &str) -> BTreeSet<String> {
    d.lab()
        .ip(ns, &["-o", "link", "show"])
        .unwrap()
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

/// The daemon's endpoint interfaces (`sl` + 10 hex) in `host`.
fn sl_links(d: &DaemonLab) -> BTreeSet<String> {
    links(d, "host")
        .into_iter()
        .filter(|n| n.starts_with("sl"))
        .collect()
}

/// What a refused command must not change: networks, endpoints, interfaces.
fn snapshot(d: &DaemonLab) -> (Value, Value, BTreeSet<String>) {
    (
        json_of(d, &["network", "ls", "--output", "json"]),
        json_of(d, &["ps", "--output", "json"]),
        sl_links(d),
    )
}

fn endpoint<'a>(ps: &'a Value, name: &str) -> &'a Value {
    ps.as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no endpoint {name} in {ps:#}"))
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn spec(name: &str, netns: &str) -> Value {
    json!({"network": "", "sandbox": {"netns": netns}, "name": name})
}

/// Asks the embedded resolver for `name` (A) from inside `ns`: the addresses answered.
fn resolve(ns: &str, name: &str) -> Vec<Ipv4Addr> {
    let mut q = Vec::new();
    build_query(0x4242, name, TYPE_A, &mut q).unwrap();
    let reply = udp::ask(ns, SocketAddr::from((RESOLVER_IP, DNS_PORT)), &q)
        .unwrap_or_else(|| panic!("no answer from the resolver in {ns} for {name}"));
    let m = parse(&reply).unwrap();
    m.answers().unwrap().iter().filter_map(|r| r.a()).collect()
}

fn pings(d: &DaemonLab, ns: &str, ip: &str) -> bool {
    d.lab()
        .exec_output(ns, &["ping", "-c", "2", "-i", "0.2", "-W", "1", "-q", ip])
        .unwrap()
        .status
        .success()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn connect_bridges_routes_and_survives_kill_9() {
    let Some(bin) = bin_dir() else { return };
    let mut d = DaemonLab::start("dmn", &bin, &["--workers", "1"]).unwrap();
    d.sluice_ok(&["network", "create", "--subnet", "10.60.0.0/24", "front"])
        .unwrap();
    let c1 = d.add_container("c1").unwrap();
    let c2 = d.add_container("c2").unwrap();
    d.sluice_ok(&["network", "connect", "--name", "web", "front", &c1])
        .unwrap();
    d.sluice_ok(&["network", "connect", "--name", "db", "front", &c2])
        .unwrap();
    let lab = d.lab();
    lab.wait_ping(
        "c1",
        "10.60.0.3".parse().unwrap(),
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    lab.wait_ping("c1", OUTSIDE_IP, std::time::Duration::from_secs(5))
        .unwrap();
    d.kill9();
    d.restart().unwrap();
    let ps = d.sluice_ok(&["ps"]).unwrap();
    assert!(ps.contains("web") && ps.contains("db"), "{ps}");
    d.lab()
        .wait_ping(
            "c2",
            "10.60.0.2".parse().unwrap(),
            std::time::Duration::from_secs(5),
        )
        .unwrap();
}

#[test]
fn network_create_inspect_ls_rm_prune() {
    let Some(mut d) = start("dnet") else { return };
    let id = ok(
        &d,
        &[
            "network",
            "create",
            "--driver",
            "bridge",
            "--subnet",
            "10.61.0.0/16",
            "--gateway",
            "10.61.0.254",
            "--ip-range",
            "10.61.1.0/24",
            "--aux-address",
            "router=10.61.1.1",
            "--internal",
            "--opt",
            "mtu=1400",
            "--opt",
            "icc=false",
            "-o",
            "vlan=7",
            "--label",
            "team=net",
            "--label",
            "tier=back",
            "full",
        ],
    );
    let id = id.trim().to_string();
    assert!(
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    let v = json_of(&d, &["network", "inspect", "full"]);
    let n = &v[0];
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(n["Name"], "full");
    assert_eq!(n["Id"], id.as_str());
    assert!(n["Created"].as_str().unwrap().contains('T'), "{n}");
    assert_eq!(n["Driver"], "bridge");
    assert_eq!(n["Scope"], "local");
    assert_eq!(n["EnableIPv6"], false);
    assert_eq!(n["IPAM"]["Driver"], "default");
    assert_eq!(
        n["IPAM"]["Config"],
        json!([{"Subnet": "10.61.0.0/16", "Gateway": "10.61.0.254", "IPRange": "10.61.1.0/24",
                "AuxiliaryAddresses": {"router": "10.61.1.1"}}])
    );
    assert_eq!(n["Internal"], true);
    assert_eq!(n["Containers"], json!({}));
    assert_eq!(
        n["Options"],
        json!({"com.docker.network.driver.mtu": "1400",
               "com.docker.network.bridge.enable_icc": "false", "vlan": "7"})
    );
    assert_eq!(n["Labels"], json!({"team": "net", "tier": "back"}));
    // By id and by id prefix too.
    assert_eq!(json_of(&d, &["network", "inspect", &id])[0]["Name"], "full");
    assert_eq!(
        json_of(&d, &["network", "inspect", &id[..12]])[0]["Name"],
        "full"
    );

    // An endpoint gets its dynamic address from the range (not the aux address), the MTU,
    // and no default route (internal); inspect lists it under Containers.
    let c1 = d.add_container("c1").unwrap();
    let line = ok(&d, &["network", "connect", "--name", "e1", "full", &c1]);
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(f[..2], ["e1", "eth0"], "{line}");
    let ip: Ipv4Addr = f[2].trim_end_matches("/16").parse().unwrap();
    assert!(
        ip.octets()[..3] == [10, 61, 1] && ip != Ipv4Addr::new(10, 61, 1, 1),
        "{ip} not from the range, or the aux address"
    );
    let link = d.lab().ip("c1", &["link", "show", "eth0"]).unwrap();
    assert!(link.contains("mtu 1400"), "{link}");
    let routes = d.lab().ip("c1", &["route"]).unwrap();
    assert!(!routes.contains("default"), "internal: {routes}");
    let n = &json_of(&d, &["network", "inspect", "full"])[0];
    let cs = n["Containers"].as_object().unwrap();
    assert_eq!(cs.len(), 1);
    let (eid, c) = cs.iter().next().unwrap();
    assert_eq!(c["Name"], "e1");
    assert_eq!(c["EndpointID"], eid.as_str());
    assert_eq!(c["IPv4Address"], format!("{ip}/16"));
    assert_eq!(c["MacAddress"], f[3]);

    // Default subnets: docker's pools in order.
    ok(&d, &["network", "create", "a1"]);
    ok(&d, &["network", "create", "a2"]);
    let v = json_of(&d, &["network", "inspect", "a1", "a2"]);
    assert_eq!(v[0]["IPAM"]["Config"][0]["Subnet"], "172.18.0.0/16");
    assert_eq!(v[0]["IPAM"]["Config"][0]["Gateway"], "172.18.0.1");
    assert_eq!(v[1]["IPAM"]["Config"][0]["Subnet"], "172.19.0.0/16");
    assert_eq!(v[0]["Internal"], false);

    // ls: table, JSON, ids.
    let table = ok(&d, &["network", "ls"]);
    let mut rows = table.lines();
    let header = rows.next().unwrap();
    for h in ["NETWORK ID", "NAME", "DRIVER", "SCOPE", "SUBNET"] {
        assert!(header.contains(h), "{header}");
    }
    let names: BTreeSet<&str> = rows.filter_map(|r| r.split_whitespace().nth(1)).collect();
    assert_eq!(
        names,
        BTreeSet::from(["a1", "a2", "bridge", "full", "host", "none"])
    );
    assert!(table.contains("172.17.0.0/16") && table.contains("172.19.0.0/16"));
    let ls = json_of(&d, &["network", "ls", "--output", "json"]);
    let ls_names: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["Name"].as_str().unwrap())
        .collect();
    assert_eq!(ls_names, ["a1", "a2", "bridge", "full", "host", "none"]);
    let q = ok(&d, &["network", "ls", "-q"]);
    let ids: Vec<&str> = q.lines().collect();
    assert_eq!(ids.len(), 6);
    for (short, n) in ids.iter().zip(ls.as_array().unwrap()) {
        assert_eq!(short.len(), 12);
        assert!(n["Id"].as_str().unwrap().starts_with(short));
    }

    // rm: several at once, predefined refused, unknown refused.
    assert_eq!(ok(&d, &["network", "rm", "a1", "a2"]), "a1\na2\n");
    let e = fails(&d, &["network", "rm", "bridge"]);
    assert!(e.contains("pre-defined"), "{e}");
    let e = fails(&d, &["network", "rm", "nothere"]);
    assert!(e.contains("nothere not found"), "{e}");
    let v = json_of(&d, &["network", "ls", "--output", "json"]);
    assert_eq!(v.as_array().unwrap().len(), 4);

    // prune: idle user networks only (not `full`, which has an endpoint; not predefined).
    ok(&d, &["network", "create", "p1"]);
    ok(&d, &["network", "create", "--subnet", "10.62.0.0/24", "p2"]);
    assert_eq!(
        ok(&d, &["network", "prune", "-f"]),
        "Deleted Networks:\np1\np2\n"
    );
    assert_eq!(ok(&d, &["network", "prune"]), "");
    ok(&d, &["network", "disconnect", "full", "e1"]);
    assert!(!links(&d, "c1").contains("eth0"));
    ok(&d, &["network", "rm", &id[..12]]);
    let v = json_of(&d, &["network", "ls", "--output", "json"]);
    assert_eq!(v.as_array().unwrap().len(), 3);
    // A removed pool is free again.
    ok(&d, &["network", "create", "again"]);
    let v = json_of(&d, &["network", "inspect", "again"]);
    assert_eq!(v[0]["IPAM"]["Config"][0]["Subnet"], "172.18.0.0/16");
    d.stop();
}

#[test]
fn connect_flags_and_what_the_namespace_sees() {
    let Some(mut d) = start("dcon") else { return };
    ok(
        &d,
        &[
            "network",
            "create",
            "--subnet",
            "10.63.0.0/24",
            "--opt",
            "mtu=1400",
            "front",
        ],
    );
    ok(
        &d,
        &["network", "create", "--subnet", "10.64.0.0/24", "back"],
    );
    let c1 = d.add_container("c1").unwrap();
    d.add_container("c2").unwrap();
    let c2_name = d.lab().ns_name("c2").unwrap();
    d.add_container("c3").unwrap();
    let sleeper = d.lab_mut().spawn("c3", &["sleep", "600"], "sleep").unwrap();

    // By path, with every endpoint flag.
    let line = ok(
        &d,
        &[
            "network",
            "connect",
            "--ip",
            "10.63.0.10",
            "--mac",
            "02:00:00:00:00:10",
            "--alias",
            "www",
            "--alias",
            "web2",
            "--publish",
            "8080:80",
            "-p",
            "192.0.2.2:5353:53/udp",
            "-p",
            "9000-9001:7000-7001",
            "--name",
            "web",
            "--hostname",
            "webhost",
            "--dns",
            "192.0.2.53",
            "--add-host",
            "db.example:10.9.9.9",
            "front",
            &c1,
        ],
    );
    assert_eq!(line, "web eth0 10.63.0.10/24 02:00:00:00:00:10\n");
    let addr = d.lab().ip("c1", &["-o", "addr", "show", "eth0"]).unwrap();
    assert!(addr.contains("inet 10.63.0.10/24"), "{addr}");
    let link = d.lab().ip("c1", &["link", "show", "eth0"]).unwrap();
    assert!(
        link.contains("mtu 1400") && link.contains("link/ether 02:00:00:00:00:10"),
        "{link}"
    );
    let routes = d.lab().ip("c1", &["route"]).unwrap();
    assert!(
        routes.contains("default via 10.63.0.1 dev eth0"),
        "{routes}"
    );

    // By name under /run/netns, with an interface name: the next free address.
    let line = ok(
        &d,
        &["network", "connect", "--ifname", "net0", "front", &c2_name],
    );
    assert_eq!(
        line,
        format!("{c2_name} net0 10.63.0.2/24 02:42:0a:3f:00:02\n")
    );
    assert!(links(&d, "c2").contains("net0"));

    // By pid: the process's namespace, named pid-N.
    let line = ok(&d, &["network", "connect", "front", &sleeper.to_string()]);
    assert_eq!(
        line,
        format!("pid-{sleeper} eth0 10.63.0.3/24 02:42:0a:3f:00:03\n")
    );
    let addr = d.lab().ip("c3", &["-o", "addr", "show", "eth0"]).unwrap();
    assert!(addr.contains("inet 10.63.0.3/24"), "{addr}");

    // A second network: eth1, and no second default route.
    let line = ok(&d, &["network", "connect", "--name", "web-b", "back", &c1]);
    assert_eq!(line, "web-b eth1 10.64.0.2/24 02:42:0a:40:00:02\n");
    let addr = d.lab().ip("c1", &["-o", "addr", "show", "eth1"]).unwrap();
    assert!(addr.contains("inet 10.64.0.2/24"), "{addr}");
    let routes = d.lab().ip("c1", &["route"]).unwrap();
    assert_eq!(routes.matches("default").count(), 1, "{routes}");
    let link = d.lab().ip("c1", &["link", "show", "eth1"]).unwrap();
    assert!(link.contains("mtu 1500"), "{link}");

    // --link on the default bridge network: the target in the hosts file.
    ok(
        &d,
        &["network", "connect", "--name", "b2", "bridge", &c2_name],
    );
    let line = ok(
        &d,
        &[
            "network",
            "connect",
            "--name",
            "b3",
            "--link",
            "b2:peer",
            "bridge",
            &sleeper.to_string(),
        ],
    );
    assert_eq!(line, "b3 eth1 172.17.0.3/16 02:42:ac:11:00:03\n");

    // Traffic: the bridge, the gateway and NAPT out (for conntrack and fdb below).
    d.lab()
        .wait_ping("c1", "10.63.0.2".parse().unwrap(), Duration::from_secs(5))
        .unwrap();
    d.lab()
        .wait_ping("c1", OUTSIDE_IP, Duration::from_secs(5))
        .unwrap();

    // ps: table and JSON.
    let table = ok(&d, &["ps"]);
    let header = table.lines().next().unwrap();
    for h in [
        "ENDPOINT ID",
        "NAME",
        "NETWORK",
        "IPV4",
        "MAC",
        "IFACE",
        "PORTS",
    ] {
        assert!(header.contains(h), "{header}");
    }
    assert_eq!(table.lines().count(), 1 + 6, "{table}");
    assert!(table.contains("0.0.0.0:8080->80/tcp"), "{table}");
    let ps = json_of(&d, &["ps", "--output", "json"]);
    assert_eq!(ps.as_array().unwrap().len(), 6);
    let web = endpoint(&ps, "web");
    assert_eq!(web["network"], "front");
    assert_eq!(web["ipv4"], "10.63.0.10/24");
    assert_eq!(web["mac"], "02:00:00:00:00:10");
    assert_eq!(web["ifname"], "eth0");
    assert_eq!(web["sandbox"], json!({"netns": c1}));
    assert_eq!(
        web["ports"],
        json!([
            "0.0.0.0:8080->80/tcp",
            "192.0.2.2:5353->53/udp",
            "0.0.0.0:9000-9001->7000-7001/tcp"
        ])
    );
    assert_eq!(web["aliases"], json!(["www", "web2"]));
    let host_if = web["host_ifname"].as_str().unwrap();
    assert!(sl_links(&d).contains(host_if));
    assert_eq!(
        endpoint(&ps, &format!("pid-{sleeper}"))["sandbox"],
        json!({ "pid": sleeper })
    );

    // The endpoint's files: the embedded resolver (user network), its --dns as upstream
    // only; hosts with --add-host and --hostname.
    let resolv = std::fs::read_to_string(web["files"]["resolv_conf"].as_str().unwrap()).unwrap();
    assert!(resolv.contains("nameserver 127.0.0.11\n"), "{resolv}");
    assert!(!resolv.contains("192.0.2.53"), "{resolv}");
    let hosts = std::fs::read_to_string(web["files"]["hosts"].as_str().unwrap()).unwrap();
    assert!(hosts.contains("10.9.9.9\tdb.example\n"), "{hosts}");
    assert!(hosts.contains("10.63.0.10\twebhost\n"), "{hosts}");
    assert!(Path::new(web["files"]["hosts"].as_str().unwrap()).starts_with(d.state_dir()));
    let b3 = endpoint(&ps, "b3");
    let hosts = std::fs::read_to_string(b3["files"]["hosts"].as_str().unwrap()).unwrap();
    assert!(hosts.contains("172.17.0.2\tpeer b2\n"), "{hosts}");
    assert!(hosts.contains("172.17.0.3\tb3\n"), "{hosts}");
    let resolv = std::fs::read_to_string(b3["files"]["resolv_conf"].as_str().unwrap()).unwrap();
    assert!(
        resolv.contains("nameserver 127.0.0.11"),
        "the sandbox is also on a user network: {resolv}"
    );

    // port: all, one endpoint (docker port's form), JSON.
    let all = ok(&d, &["port"]);
    assert!(all.contains("web\t0.0.0.0:8080->80/tcp"), "{all}");
    assert_eq!(
        ok(&d, &["port", "web"]),
        "80/tcp -> 0.0.0.0:8080\n53/udp -> 192.0.2.2:5353\n7000-7001/tcp -> 0.0.0.0:9000-9001\n"
    );
    let pj = json_of(&d, &["port", "web", "--output", "json"]);
    assert_eq!(pj["web"].as_array().unwrap().len(), 3, "{pj}");
    let e = fails(&d, &["port", "nobody"]);
    assert!(e.contains("no endpoint named nobody"), "{e}");

    // stats: per port named by endpoint, per network.
    let table = ok(&d, &["stats"]);
    assert!(
        table.contains("RX PKTS") && table.contains("FDB") && table.contains("CONNTRACK"),
        "{table}"
    );
    let st = json_of(&d, &["stats", "--output", "json"]);
    let row = st["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == host_if)
        .unwrap_or_else(|| panic!("{st:#}"));
    assert_eq!(
        (row["endpoint"].as_str(), row["network"].as_str()),
        (Some("web"), Some("front"))
    );
    assert!(row["rx_packets"].as_u64().unwrap() >= 2, "{row}");
    assert!(row["tx_packets"].as_u64().unwrap() >= 2, "{row}");
    let front = st["networks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["network"] == "front")
        .unwrap();
    assert_eq!(front["endpoints"], 3);
    assert!(st["ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["endpoint"] == "uplink"));

    // conntrack: the ping out is a tracked ICMP flow from web, translated to the uplink.
    let ct = json_of(&d, &["conntrack", "ls", "--output", "json"]);
    let flow = ct
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["protocol"] == "icmp" && c["src"].as_str().unwrap().starts_with("10.63.0.10"))
        .unwrap_or_else(|| panic!("{ct:#}"));
    assert_eq!(flow["network"], "front");
    assert!(
        flow["reply_dst"].as_str().unwrap().starts_with("192.0.2.2"),
        "{flow}"
    );
    let table = ok(&d, &["conntrack", "ls"]);
    assert!(
        table.starts_with("PROTO") && table.contains("icmp"),
        "{table}"
    );

    // fdb: endpoint MACs are static.
    let fdb = json_of(&d, &["fdb", "ls", "--output", "json"]);
    let entry = fdb
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["mac"] == "02:00:00:00:00:10")
        .unwrap_or_else(|| panic!("{fdb:#}"));
    assert_eq!(entry["network"], "front");
    assert_eq!(entry["endpoint"], "web");
    assert_eq!(entry["is_static"], true);
    assert_eq!(entry["port"], host_if);
    let table = ok(&d, &["fdb", "ls"]);
    assert!(
        table.contains("02:00:00:00:00:10") && table.contains("static"),
        "{table}"
    );

    // disconnect (by name and by full id): the interface leaves the namespace, the files go.
    let files_dir = Path::new(web["files"]["hosts"].as_str().unwrap())
        .parent()
        .unwrap()
        .to_path_buf();
    ok(&d, &["network", "disconnect", "front", "web"]);
    assert!(!links(&d, "c1").contains("eth0"));
    assert!(!files_dir.exists());
    let b = endpoint(&ps, "web-b")["id"].as_str().unwrap().to_string();
    ok(&d, &["network", "disconnect", "back", &b]);
    assert!(!links(&d, "c1").contains("eth1"));
    assert!(!sl_links(&d).contains(host_if));
    assert_eq!(
        json_of(&d, &["ps", "--output", "json"])
            .as_array()
            .unwrap()
            .len(),
        4
    );
    d.stop();
}

#[test]
fn icc_internal_published_ports_and_embedded_dns() {
    let Some(mut d) = start("dbeh") else { return };
    ok(
        &d,
        &[
            "network",
            "create",
            "--subnet",
            "10.65.0.0/24",
            "-o",
            "icc=false",
            "iso",
        ],
    );
    ok(
        &d,
        &[
            "network",
            "create",
            "--subnet",
            "10.66.0.0/24",
            "--internal",
            "priv",
        ],
    );
    ok(
        &d,
        &["network", "create", "--subnet", "10.67.0.0/24", "pub"],
    );
    let mut ns = BTreeMap::new();
    for c in ["i1", "i2", "p1", "w1", "w2"] {
        ns.insert(c, d.add_container(c).unwrap());
    }
    ok(
        &d,
        &["network", "connect", "--name", "i1", "iso", &ns["i1"]],
    );
    ok(
        &d,
        &["network", "connect", "--name", "i2", "iso", &ns["i2"]],
    );
    ok(
        &d,
        &["network", "connect", "--name", "p1", "priv", &ns["p1"]],
    );
    ok(
        &d,
        &[
            "network",
            "connect",
            "--name",
            "w1",
            "-p",
            "8080:80",
            "-p",
            "5353:5000/udp",
            "pub",
            &ns["w1"],
        ],
    );
    ok(
        &d,
        &[
            "network", "connect", "--name", "w2", "--alias", "api", "pub", &ns["w2"],
        ],
    );

    // ICC off: the gateway answers, the other endpoint does not; the outside does.
    d.lab()
        .wait_ping("i1", "10.65.0.1".parse().unwrap(), Duration::from_secs(5))
        .unwrap();
    d.lab()
        .wait_ping("i1", OUTSIDE_IP, Duration::from_secs(5))
        .unwrap();
    assert!(!pings(&d, "i1", "10.65.0.3"), "icc=false lets i1 reach i2");
    assert!(!pings(&d, "i2", "10.65.0.2"), "icc=false lets i2 reach i1");

    // Internal: no default route, nothing out; the gateway is still there.
    let routes = d.lab().ip("p1", &["route"]).unwrap();
    assert!(!routes.contains("default"), "{routes}");
    assert!(!pings(&d, "p1", &OUTSIDE_IP.to_string()));
    d.lab()
        .wait_ping("p1", "10.66.0.1".parse().unwrap(), Duration::from_secs(5))
        .unwrap();

    // Published ports, TCP and UDP, answered from the outside at the uplink address.
    d.lab_mut()
        .spawn(
            "w1",
            &[
                "socat",
                "TCP-LISTEN:80,reuseaddr,fork",
                "SYSTEM:echo tcp-pong",
            ],
            "tcp80",
        )
        .unwrap();
    d.lab_mut()
        .spawn(
            "w1",
            &[
                "socat",
                "UDP-LISTEN:5000,reuseaddr,fork",
                "SYSTEM:echo udp-pong",
            ],
            "udp5000",
        )
        .unwrap();
    d.lab()
        .wait_listen("w1", 80, Duration::from_secs(5))
        .unwrap();
    d.lab()
        .wait_listen("w1", 5000, Duration::from_secs(5))
        .unwrap();
    let tcp = format!("TCP:{UPLINK_IP}:8080,connect-timeout=3");
    let got = d
        .lab()
        .exec("out", &["socat", "-u", "-T", "3", &tcp, "-"])
        .unwrap();
    assert_eq!(got, "tcp-pong\n");
    let out = format!("/run/netns/{}", d.lab().ns_name("out").unwrap());
    let got = udp::ask(&out, SocketAddr::from((UPLINK_IP, 5353)), b"ping\n");
    assert_eq!(
        got.as_deref(),
        Some(&b"udp-pong\n"[..]),
        "UDP published port; counters: {}",
        ok(&d, &["stats", "--output", "json"])
    );
    eprintln!(
        "drops after the published-port checks: {}",
        json_of(&d, &["stats", "--output", "json"])["drops"]
    );
    // Another port is not forwarded.
    let closed = format!("TCP:{UPLINK_IP}:8081,connect-timeout=2");
    assert!(!d
        .lab()
        .exec_output("out", &["socat", "-T", "2", "-", &closed])
        .unwrap()
        .status
        .success());

    // Embedded DNS: names and aliases of the network, from inside the namespace.
    let w2_ip: Ipv4Addr = "10.67.0.3".parse().unwrap();
    assert_eq!(resolve(&ns["w1"], "w2"), vec![w2_ip]);
    assert_eq!(resolve(&ns["w1"], "api"), vec![w2_ip]);
    assert_eq!(resolve(&ns["w1"], "w2.pub"), vec![w2_ip]);
    assert_eq!(
        resolve(&ns["w2"], "w1"),
        vec!["10.67.0.2".parse::<Ipv4Addr>().unwrap()]
    );
    assert!(
        resolve(&ns["w1"], "i1").is_empty(),
        "other networks' names leak"
    );
    let ps = json_of(&d, &["ps", "--output", "json"]);
    let files = &endpoint(&ps, "w1")["files"];
    let resolv = std::fs::read_to_string(files["resolv_conf"].as_str().unwrap()).unwrap();
    assert!(
        resolv.starts_with("# Generated by sluice.\nnameserver 127.0.0.11\n"),
        "{resolv}"
    );
    assert!(resolv.contains("ndots:0"), "{resolv}");
    let hosts = std::fs::read_to_string(files["hosts"].as_str().unwrap()).unwrap();
    assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"), "{hosts}");
    assert!(hosts.ends_with("10.67.0.2\tw1\n"), "{hosts}");
    // A name that goes away stops resolving.
    ok(&d, &["network", "disconnect", "pub", "w2"]);
    assert!(resolve(&ns["w1"], "api").is_empty());
    d.stop();
}

#[test]
fn refused_input_is_one_line_and_changes_nothing() {
    let Some(mut d) = start("dbad") else { return };
    ok(&d, &["network", "create", "--subnet", "10.70.0.0/24", "a"]);
    ok(
        &d,
        &[
            "network",
            "create",
            "--subnet",
            "10.71.0.0/24",
            "--internal",
            "in",
        ],
    );
    let c1 = d.add_container("c1").unwrap();
    let c2 = d.add_container("c2").unwrap();
    ok(
        &d,
        &[
            "network", "connect", "--name", "one", "-p", "8080:80", "a", &c1,
        ],
    );
    ok(&d, &["network", "connect", "--name", "b1", "bridge", &c1]);
    let c2_links = links(&d, "c2");
    let before = snapshot(&d);
    let cases: &[(&[&str], &str)] = &[
        (
            &["network", "create", "--subnet", "10.70.0.0/16", "b"],
            r#"subnet 10.70.0.0/16 overlaps network "a" (10.70.0.0/24)"#,
        ),
        (
            &["network", "create", "--subnet", "10.72.0.0/24", "a"],
            "network with name a already exists",
        ),
        (
            &["network", "create", "--subnet", "10.72.0.0/33", "b"],
            "--subnet \"10.72.0.0/33\" is not an IPv4 CIDR",
        ),
        (
            &["network", "create", "--subnet", "nonsense", "b"],
            "--subnet \"nonsense\" is not an IPv4 CIDR",
        ),
        (
            &[
                "network",
                "create",
                "--subnet",
                "10.72.0.0/24",
                "--gateway",
                "10.73.0.1",
                "b",
            ],
            "10.73.0.1 is not a usable address of subnet 10.72.0.0/24",
        ),
        (
            &[
                "network",
                "create",
                "--subnet",
                "10.72.0.0/24",
                "--ip-range",
                "10.73.0.0/25",
                "b",
            ],
            "10.73.0.0/25",
        ),
        (
            &["network", "create", "--driver", "vxlan9", "b"],
            "unknown driver \"vxlan9\"",
        ),
        (
            &["network", "create", "-o", "mtu=abc", "b"],
            "option mtu=\"abc\" is invalid",
        ),
        (
            &["network", "create", "-o", "mtu=20", "b"],
            "option mtu=\"20\" is invalid",
        ),
        (
            &["network", "create", "-o", "icc=maybe", "b"],
            "option icc=\"maybe\" is invalid",
        ),
        (
            &["network", "create", "-o", "vlan=5000", "b"],
            "option vlan=\"5000\" is invalid",
        ),
        (
            &["network", "create", "-o", "colour=red", "b"],
            "unknown option \"colour\"",
        ),
        (&["network", "create", "-o", "mtu", "b"], "is not KEY=VALUE"),
        (
            &["network", "create", "--label", "nolabel", "b"],
            "--label \"nolabel\" is not KEY=VALUE",
        ),
        (&["network", "create", "bad/name"], "invalid name"),
        (
            &["network", "connect", "nope", &c2],
            "network nope not found",
        ),
        (
            &["network", "connect", "a", "/run/netns/sl-no-such-ns"],
            "does not exist",
        ),
        (&["network", "connect", "a", "4194303"], "4194303"),
        (
            &["network", "connect", "--ip", "10.70.0.2", "a", &c2],
            "address 10.70.0.2 is already in use",
        ),
        (
            &["network", "connect", "--ip", "10.99.0.2", "a", &c2],
            "address 10.99.0.2 is outside subnet 10.70.0.0/24",
        ),
        (
            &["network", "connect", "--ip", "10.70.0.1", "a", &c2],
            "10.70.0.1 is reserved",
        ),
        (
            &["network", "connect", "--ip", "10.70.0.x", "a", &c2],
            "--ip \"10.70.0.x\" is not an IPv4 address",
        ),
        (
            &["network", "connect", "--mac", "zz:00", "a", &c2],
            "--mac \"zz:00\" is not a MAC address",
        ),
        (
            &["network", "connect", "--mac", "01:00:5e:00:00:01", "a", &c2],
            "must be unicast",
        ),
        (
            &["network", "connect", "--mac", "02:42:0a:46:00:02", "a", &c2],
            "already used by endpoint one",
        ),
        (
            &["network", "connect", "-p", "8080:81", "a", &c2],
            "port 8080:81/tcp is already published by endpoint one (8080:80/tcp)",
        ),
        (
            &["network", "connect", "-p", "http", "a", &c2],
            "--publish \"http\"",
        ),
        (
            &["network", "connect", "-p", "70000:80", "a", &c2],
            "not a port number",
        ),
        (
            &["network", "connect", "-p", "80:80/sctp", "a", &c2],
            "unknown protocol",
        ),
        (
            &["network", "connect", "-p", "8081:80", "in", &c2],
            "network in is internal",
        ),
        (
            &["network", "connect", "--name", "one", "a", &c2],
            "endpoint with name one already exists in network a",
        ),
        (
            &["network", "connect", "a", &c1],
            "is already connected to network a",
        ),
        (
            &["network", "connect", "--name", "bad name", "a", &c2],
            "invalid name",
        ),
        (
            &[
                "network",
                "connect",
                "--ifname",
                "much-too-long-ifname",
                "a",
                &c2,
            ],
            "invalid interface name",
        ),
        (
            &["network", "connect", "--alias", "x", "bridge", &c2],
            "network-scoped alias",
        ),
        (
            &["network", "connect", "--link", "ghost:g", "bridge", &c2],
            "--link \"ghost:g\": no endpoint \"ghost\"",
        ),
        (
            &["network", "connect", "--add-host", "nocolon", "a", &c2],
            "--add-host \"nocolon\"",
        ),
        (
            &["network", "connect", "--dns", "resolver", "a", &c2],
            "--dns \"resolver\"",
        ),
        (
            &["network", "connect", "host", &c2],
            "cannot connect an endpoint to the host network",
        ),
        (
            &["network", "disconnect", "a", "ghost"],
            "endpoint ghost is not connected to network a",
        ),
        (
            &["network", "disconnect", "nope", "one"],
            "network nope not found",
        ),
        (
            &["network", "rm", "a"],
            "network a has 1 active endpoint(s); disconnect them first",
        ),
        (&["network", "inspect", "nope"], "network nope not found"),
    ];
    for (args, want) in cases {
        let e = fails(&d, args);
        assert!(
            e.contains(want),
            "sluice {args:?}: {e:?} does not say {want:?}"
        );
        assert_eq!(snapshot(&d), before, "sluice {args:?} changed something");
    }
    assert_eq!(links(&d, "c2"), c2_links);

    // Failures after the veth exists: the sandbox already has an interface of that name, or
    // a default route (the endpoint's cannot be added). Rolled back: no veth, no address.
    d.lab()
        .ip(
            "c2",
            &[
                "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
            ],
        )
        .unwrap();
    let e = fails(&d, &["network", "connect", "a", &c2]);
    assert!(
        e.contains("already has an interface eth0; pick another name with --ifname"),
        "{e}"
    );
    assert_eq!(snapshot(&d), before);
    d.lab().ip("c2", &["link", "del", "eth0"]).unwrap();
    d.lab()
        .ip(
            "c2",
            &["link", "add", "d0", "type", "veth", "peer", "name", "d0p"],
        )
        .unwrap();
    d.lab()
        .ip("c2", &["addr", "add", "10.98.0.1/24", "dev", "d0"])
        .unwrap();
    d.lab().ip("c2", &["link", "set", "d0", "up"]).unwrap();
    d.lab()
        .ip(
            "c2",
            &[
                "route",
                "add",
                "default",
                "via",
                "10.98.0.2",
                "dev",
                "d0",
                "onlink",
            ],
        )
        .unwrap();
    let e = fails(&d, &["network", "connect", "a", &c2]);
    assert!(e.contains("default route"), "{e}");
    assert_eq!(snapshot(&d), before);
    assert!(!links(&d, "c2").contains("eth0"), "the sandbox end stayed");
    d.lab().ip("c2", &["link", "del", "d0"]).unwrap();

    // A CLI without a daemon: one line naming the fix.
    let o = std::process::Command::new(bin_dir().unwrap().join("sluice"))
        .args(["--socket", "/nonexistent/sluice.sock", "ps"])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.trim().lines().count() == 1, "{e}");
    assert!(e.contains("is the daemon running?"), "{e}");

    // The next connect gets the next address, as if nothing had been tried.
    let line = ok(&d, &["network", "connect", "a", &c2]);
    assert!(line.contains(" eth0 10.70.0.3/24 "), "{line}");
    let addr = d.lab().ip("c2", &["-o", "addr", "show", "eth0"]).unwrap();
    assert!(addr.contains("10.70.0.3/24"), "{addr}");
    assert_eq!(sl_links(&d).len(), 3);
    d.stop();
}

/// Replies in a `ping -D` log: (unix time, icmp_seq).
fn ping_replies(log: &str) -> Vec<(f64, u32)> {
    log.lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| {
            let t = l.strip_prefix('[')?.split(']').next()?.parse().ok()?;
            let seq = l.split("icmp_seq=").nth(1)?.split_whitespace().next()?;
            Some((t, seq.parse().ok()?))
        })
        .collect()
}

#[test]
fn kill_9_under_traffic_keeps_state_and_traffic_resumes() {
    let Some(mut d) = start("drst") else { return };
    ok(&d, &["network", "create", "--subnet", "10.80.0.0/24", "r"]);
    ok(
        &d,
        &[
            "network",
            "create",
            "--subnet",
            "10.81.0.0/24",
            "-o",
            "icc=false",
            "s",
        ],
    );
    let c1 = d.add_container("c1").unwrap();
    let c2 = d.add_container("c2").unwrap();
    let c3 = d.add_container("c3").unwrap();
    ok(
        &d,
        &[
            "network", "connect", "--name", "c1", "-p", "8080:80", "r", &c1,
        ],
    );
    ok(
        &d,
        &[
            "network", "connect", "--name", "c2", "--alias", "two", "r", &c2,
        ],
    );
    ok(&d, &["network", "connect", "--name", "c3", "r", &c3]);
    ok(&d, &["network", "connect", "--name", "c1s", "s", &c1]);
    d.lab()
        .wait_ping("c1", "10.80.0.3".parse().unwrap(), Duration::from_secs(5))
        .unwrap();
    d.lab()
        .wait_ping("c2", OUTSIDE_IP, Duration::from_secs(5))
        .unwrap();

    let ps_before = json_of(&d, &["ps", "--output", "json"]);
    let inspect_before = json_of(&d, &["network", "inspect", "r", "s"]);
    let ls_before = json_of(&d, &["network", "ls", "--output", "json"]);
    let c3_ip = endpoint(&ps_before, "c3")["ipv4"]
        .as_str()
        .unwrap()
        .to_string();

    // Traffic across the crash: endpoint to endpoint (bridge) and endpoint to the outside
    // (NAPT), 20 pings a second each for 7 seconds.
    let bridge_ping = d
        .lab_mut()
        .spawn(
            "c1",
            &["ping", "-D", "-n", "-i", "0.05", "-w", "7", "10.80.0.3"],
            "ping-bridge",
        )
        .unwrap();
    let nat_ping = d
        .lab_mut()
        .spawn(
            "c2",
            &[
                "ping",
                "-D",
                "-n",
                "-i",
                "0.05",
                "-w",
                "7",
                &OUTSIDE_IP.to_string(),
            ],
            "ping-nat",
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let killed_at = unix_now();
    d.kill9();
    // While it is down: a sandbox goes away, and a stray endpoint veth appears.
    d.lab()
        .ip(
            "host",
            &[
                "link",
                "add",
                "slfeedface00",
                "type",
                "veth",
                "peer",
                "name",
                "strayp",
            ],
        )
        .unwrap();
    let c3_full = d.lab().ns_name("c3").unwrap();
    let o = std::process::Command::new("ip")
        .args(["netns", "del", &c3_full])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    d.restart().unwrap();
    let restarted_at = unix_now();
    eprintln!(
        "daemon down for {:.0} ms",
        (restarted_at - killed_at) * 1000.0
    );

    // State: what it was, minus the endpoint whose sandbox is gone.
    let mut ps_want = ps_before.clone();
    ps_want
        .as_array_mut()
        .unwrap()
        .retain(|e| e["name"] != "c3");
    assert_eq!(json_of(&d, &["ps", "--output", "json"]), ps_want);
    let mut inspect_want = inspect_before.clone();
    inspect_want[0]["Containers"]
        .as_object_mut()
        .unwrap()
        .retain(|_, c| c["Name"] != "c3");
    assert_eq!(inspect_want[0]["Containers"].as_object().unwrap().len(), 2);
    assert_eq!(json_of(&d, &["network", "inspect", "r", "s"]), inspect_want);
    let mut ls_want = ls_before.clone();
    for n in ls_want.as_array_mut().unwrap() {
        if n["Name"] == "r" {
            n["Containers"] = inspect_want[0]["Containers"].clone();
        }
    }
    assert_eq!(json_of(&d, &["network", "ls", "--output", "json"]), ls_want);
    let log = d.log();
    assert!(log.contains("released endpoint r/c3"), "{log}");
    assert!(
        log.contains("deleted leftover interface slfeedface00"),
        "{log}"
    );
    let host = links(&d, "host");
    assert!(
        !host.contains("slfeedface00") && !host.contains("strayp"),
        "{host:?}"
    );
    assert_eq!(sl_links(&d).len(), 3);

    // The released address is the next one given.
    let c4 = d.add_container("c4").unwrap();
    let line = ok(&d, &["network", "connect", "--name", "c4", "r", &c4]);
    assert!(
        line.contains(&format!(" {c3_ip} ")),
        "{line} did not reuse {c3_ip}"
    );

    // Both flows resume: the pings (which ran through the crash) get replies after the
    // restart, and ICC is still off on `s`.
    for pid in [bridge_ping, nat_ping] {
        let start = Instant::now();
        while d.lab_mut().alive(pid) {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "ping {pid} hangs"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    for log in ["ping-bridge", "ping-nat"] {
        let text = std::fs::read_to_string(d.lab().log_path(log)).unwrap();
        let replies = ping_replies(&text);
        let before = replies.iter().filter(|(t, _)| *t < killed_at).count();
        let after: Vec<&(f64, u32)> = replies.iter().filter(|(t, _)| *t > restarted_at).collect();
        let gap = replies
            .windows(2)
            .map(|w| w[1].0 - w[0].0)
            .fold(0.0, f64::max);
        eprintln!(
            "{log}: {} replies before the kill, {} after the restart, longest gap {:.0} ms",
            before,
            after.len(),
            gap * 1000.0
        );
        assert!(before >= 10, "{log}: {text}");
        assert!(
            after.len() >= 10,
            "{log}: no traffic after the restart: {text}"
        );
    }
    d.lab()
        .wait_ping("c4", "10.80.0.2".parse().unwrap(), Duration::from_secs(5))
        .unwrap();
    d.lab()
        .wait_ping("c2", OUTSIDE_IP, Duration::from_secs(5))
        .unwrap();
    d.stop();
}

#[test]
fn hundred_concurrent_connects_get_distinct_addresses() {
    let Some(mut d) = start("dcc") else { return };
    ok(
        &d,
        &["network", "create", "--subnet", "10.90.0.0/24", "many"],
    );
    let paths: Vec<String> = (0..100)
        .map(|i| d.add_container(&format!("c{i}")).unwrap())
        .collect();
    let client = Client::new(d.socket());
    let rt = runtime();
    let started = Instant::now();
    let views: Vec<Value> = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for (i, p) in paths.iter().enumerate() {
            let (c, s) = (client.clone(), spec(&format!("e{i}"), p));
            set.spawn(async move { (i, c.post("/networks/many/connect", &s).await) });
        }
        let mut out = vec![Value::Null; 100];
        while let Some(r) = set.join_next().await {
            let (i, v) = r.unwrap();
            out[i] = v.unwrap_or_else(|e| panic!("connect e{i}: {e}"));
        }
        out
    });
    eprintln!("100 concurrent connects: {:?}", started.elapsed());
    let ips: BTreeSet<&str> = views.iter().map(|v| v["ipv4"].as_str().unwrap()).collect();
    assert_eq!(ips.len(), 100, "addresses handed out twice");
    let want: BTreeSet<String> = (2..102).map(|i| format!("10.90.0.{i}/24")).collect();
    assert_eq!(ips, want.iter().map(String::as_str).collect());
    let ps = json_of(&d, &["ps", "--output", "json"]);
    assert_eq!(ps.as_array().unwrap().len(), 100);
    assert_eq!(sl_links(&d).len(), 100);
    for (i, v) in views.iter().enumerate() {
        let addr = d
            .lab()
            .ip(&format!("c{i}"), &["-o", "addr", "show", "eth0"])
            .unwrap();
        assert!(addr.contains(v["ipv4"].as_str().unwrap()), "c{i}: {addr}");
    }
    d.lab()
        .wait_ping("c0", "10.90.0.101".parse().unwrap(), Duration::from_secs(5))
        .unwrap();

    let started = Instant::now();
    rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..100 {
            let c = client.clone();
            set.spawn(async move {
                let r = c
                    .post(
                        "/networks/many/disconnect",
                        &json!({"endpoint": format!("e{i}")}),
                    )
                    .await;
                (i, r)
            });
        }
        while let Some(r) = set.join_next().await {
            let (i, r) = r.unwrap();
            r.unwrap_or_else(|e| panic!("disconnect e{i}: {e}"));
        }
    });
    eprintln!("100 concurrent disconnects: {:?}", started.elapsed());
    assert_eq!(json_of(&d, &["ps", "--output", "json"]), json!([]));
    assert!(sl_links(&d).is_empty(), "{:?}", sl_links(&d));
    assert!(!links(&d, "c7").contains("eth0"));
    let n = &json_of(&d, &["network", "inspect", "many"])[0];
    assert_eq!(n["Containers"], json!({}));
    d.stop();
}

#[test]
fn thousand_connect_disconnect_cycles_leak_nothing() {
    let Some(mut d) = start("dlk") else { return };
    ok(&d, &["network", "create", "--subnet", "10.91.0.0/24", "l"]);
    let c1 = d.add_container("c1").unwrap();
    let pid = d.pid().unwrap();
    let client = Client::new(d.socket());
    let rt = runtime();
    let mut s = spec("cyc", &c1);
    s["publish"] = json!(["8080:80", "5353:53/udp"]);
    s["aliases"] = json!(["cyc-alias"]);
    let cycle = |n: usize| {
        rt.block_on(async {
            for i in 0..n {
                let v = client
                    .post("/networks/l/connect", &s)
                    .await
                    .unwrap_or_else(|e| panic!("connect {i}: {e}"));
                assert_eq!(v["ipv4"], "10.91.0.2/24", "cycle {i}: an address leaked");
                client
                    .post("/networks/l/disconnect", &json!({"endpoint": "cyc"}))
                    .await
                    .unwrap_or_else(|e| panic!("disconnect {i}: {e}"));
            }
        })
    };
    cycle(100);
    let warm = rss_kib(pid);
    let started = Instant::now();
    cycle(1000);
    let took = started.elapsed();
    let after = rss_kib(pid);
    eprintln!(
        "1000 connect/disconnect cycles in {took:?} ({:.1} ms/cycle); daemon RSS {warm} KiB after \
         100 warm-up cycles, {after} KiB after 1000 more ({:+} KiB)",
        took.as_secs_f64() * 1000.0 / 1000.0,
        after as i64 - warm as i64
    );
    assert!(
        after < warm + 8 * 1024,
        "RSS grew from {warm} to {after} KiB"
    );
    assert!(sl_links(&d).is_empty(), "{:?}", sl_links(&d));
    assert_eq!(links(&d, "c1"), BTreeSet::from(["lo".to_string()]));
    assert_eq!(json_of(&d, &["ps", "--output", "json"]), json!([]));
    let dirs = std::fs::read_dir(d.state_dir().join("containers"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(dirs, 0, "per-endpoint files leaked");
    let line = ok(&d, &["network", "connect", "l", &c1]);
    assert!(line.contains(" 10.91.0.2/24 "), "{line}");
    d.stop();
}

/// The hostile client of issue 19, straight at the API: names that would write a `nameserver`
/// line into a container's files, a 100,000-character name, unusable or owned subnets,
/// options that used to fail only at connect, unknown fields, missing sandboxes and an
/// oversize body. Each gets the right 4xx in the JSON error shape and changes nothing; the
/// state is private on disk.
#[test]
fn hostile_api_requests_are_refused_with_the_right_status() {
    use std::os::unix::fs::PermissionsExt;
    let Some(mut d) = start("dhst") else { return };
    ok(&d, &["network", "create", "--subnet", "10.93.0.0/24", "h"]);
    let c1 = d.add_container("c1").unwrap();
    let before = snapshot(&d);
    let client = Client::new(d.socket());
    let rt = runtime();
    let refused = |path: &str, body: Value| -> (u16, String) {
        match rt.block_on(client.post(path, &body)) {
            Err(sluice_control::client::ClientError::Refused { status, message }) => {
                (status, message)
            }
            other => panic!("POST {path} was not refused: {other:?}"),
        }
    };
    let net = |extra: Value| {
        let mut n = json!({"name": "x"});
        n.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        n
    };
    let subnet = |a: &str, p: u8| json!({"addr": a, "prefix": p});
    let mut ep = spec("e", &c1);
    let with = |k: &str, v: Value| {
        let mut e = spec("e", &c1);
        e[k] = v;
        e
    };
    let long = "n".repeat(100_000);
    let cases: Vec<(&str, Value, u16)> = vec![
        (
            "/networks",
            net(json!({"subnet": subnet("127.0.0.0", 8)})),
            400,
        ),
        (
            "/networks",
            net(json!({"subnet": subnet("0.0.0.0", 8)})),
            400,
        ),
        (
            "/networks",
            net(json!({"subnet": subnet("224.0.0.0", 4)})),
            400,
        ),
        (
            "/networks",
            net(json!({"subnet": subnet("240.0.0.0", 4)})),
            400,
        ),
        (
            "/networks",
            net(json!({"subnet": subnet("255.255.255.0", 24)})),
            400,
        ),
        (
            "/networks",
            net(json!({"subnet": subnet("192.0.2.0", 24)})),
            409,
        ),
        (
            "/networks",
            net(json!({"subnet": subnet("192.0.0.0", 16)})),
            409,
        ),
        ("/networks", net(json!({"options": {"mtu": 0}})), 400),
        ("/networks", net(json!({"options": {"vlan": 5000}})), 400),
        ("/networks", net(json!({"subnets": "10.1.0.0/24"})), 400),
        ("/networks", json!({"name": long}), 400),
        (
            "/networks",
            net(json!({"labels": {"k": "v".repeat(5000)}})),
            400,
        ),
        (
            "/networks/h/connect",
            with("names", json!({"hostname": "a\nnameserver 6.6.6.6"})),
            400,
        ),
        (
            "/networks/h/connect",
            with(
                "names",
                json!({"dns_search": ["x.com\nnameserver 6.6.6.6"]}),
            ),
            400,
        ),
        (
            "/networks/h/connect",
            with(
                "names",
                json!({"dns_options": ["ndots:1\nnameserver 7.7.7.7"]}),
            ),
            400,
        ),
        (
            "/networks/h/connect",
            with("names", json!({"add_hosts": [["a\n6.6.6.6 b", "1.2.3.4"]]})),
            400,
        ),
        (
            "/networks/h/connect",
            with("aliases", json!(["a\nnameserver 6.6.6.6"])),
            400,
        ),
        ("/networks/h/connect", with("name", json!(long)), 400),
        ("/networks/h/connect", with("colour", json!("red")), 400),
        (
            "/networks/h/connect",
            with("sandbox", json!({"netns": "/run/netns/sl-none-here"})),
            404,
        ),
        (
            "/networks/h/connect",
            with("sandbox", json!({"pid": 4_194_303})),
            404,
        ),
        (
            "/networks/h/disconnect",
            json!({"endpoint": "e", "force": true}),
            400,
        ),
    ];
    for (path, body, want) in cases {
        let (status, message) = refused(path, body.clone());
        assert_eq!(status, want, "POST {path} {body}: {message}");
        assert!(
            message.len() < 300,
            "the message repeats the value: {message}"
        );
        assert_eq!(snapshot(&d), before, "POST {path} {body} changed something");
    }
    ep["name"] = json!("x".repeat(3 << 20));
    let (status, message) = refused("/networks/h/connect", ep);
    assert_eq!(status, 413);
    assert!(
        message.contains("length limit"),
        "not the JSON shape: {message}"
    );

    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&d.state_dir()), 0o711);
    assert_eq!(mode(&d.state_dir().join("sluice.redb")), 0o600);
    assert_eq!(mode(&d.socket()), 0o660);
    ok(&d, &["network", "connect", "--name", "w", "h", &c1]);
    let ps = json_of(&d, &["ps", "--output", "json"]);
    let files = &endpoint(&ps, "w")["files"];
    let resolv = Path::new(files["resolv_conf"].as_str().unwrap());
    assert_eq!(mode(resolv), 0o644, "the container reads it");
    assert_eq!(mode(resolv.parent().unwrap()), 0o711);
    d.stop();
}
