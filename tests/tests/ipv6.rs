//! Dual-stack networks end to end with a real `sluiced`: `network create --ipv6` with a v4 and
//! a v6 subnet, two endpoints that ping6 each other and the v6 gateway, a static `--ip6`, and
//! what inspect and `ps` show; NAT66 and routed v6 to the lab's outside namespace (standing for
//! the uplink's network), ICMPv6 errors back through NAT66, and published ports reached over
//! v6; an IPv6-only network (`--ipv4=false`) whose endpoints ping6 each other by name,
//! reach the outside via NAT66 and publish a port on the uplink's v6 address; ICMPv6 packet
//! too big (an uplink with a smaller MTU) and time exceeded reaching the sender. Needs root and
//! the release
//! binaries (`SLUICE_BIN` names the `sluice` binary, `sluiced` is expected beside it).

use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_lab::daemonlab::DaemonLab;

/// Runs the CLI; a failure panics with the daemon's log.
fn ok(d: &DaemonLab, args: &[&str]) -> String {
    d.sluice_ok(args)
        .unwrap_or_else(|e| panic!("{e}; log: {}", d.log()))
}

/// Creates dual-stack network `name` with subnets `v4` and `v6` and the `opts` flags.
fn create_dual(d: &DaemonLab, name: &str, v4: &str, v6: &str, opts: &[&str]) {
    let mut a = vec![
        "network", "create", "--ipv6", "--subnet", v4, "--subnet", v6,
    ];
    a.extend_from_slice(opts);
    a.push(name);
    ok(d, &a);
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
    create_dual(&d, "dual", "10.70.0.0/24", "fd00:70::/64", &[]);
    let v: Value = serde_json::from_str(&ok(&d, &["network", "inspect", "dual"])).unwrap();
    let n = &v[0];
    assert_eq!(n["EnableIPv6"], true, "{n:#}");
    assert_eq!(n["IPAM"]["Config"][0]["Subnet"], "10.70.0.0/24");
    assert_eq!(n["IPAM"]["Config"][1]["Subnet"], "fd00:70::/64");
    assert_eq!(
        n["IPAM"]["Config"][1].get("Gateway"),
        None,
        "not given: left out, as docker"
    );

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
    let table = ok(&d, &["ps"]);
    assert!(
        table.contains("IPV6") && table.contains("fd00:70::2/64"),
        "{table}"
    );
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

/// sluice's v6 address on the uplink in the NAT66 test, and the outside namespace's.
const UPLINK6: &str = "2001:db8:66::2";
const OUTSIDE6: &str = "2001:db8:66::1";

/// What a TCP client in `ns` reads from `[ip]:port`, retried for a few seconds (the first
/// packet to an unresolved neighbour is lost to its solicitation); `None` if nothing came.
fn tcp6_read(d: &DaemonLab, ns: &str, ip: &str, port: u16) -> Option<String> {
    let target = format!("TCP6:[{ip}]:{port},connect-timeout=3");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = d
            .lab()
            .exec_output(ns, &["socat", "-u", "-T", "3", &target, "-"])
            .unwrap();
        if out.status.success() && !out.stdout.is_empty() {
            return Some(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Starts a TCP server on `port` in `ns` that answers each connection with `reply`, and waits
/// until it listens.
fn serve(d: &mut DaemonLab, ns: &str, port: u16, reply: &str) {
    let listen = format!("TCP6-LISTEN:{port},reuseaddr,fork");
    let cmd = format!("SYSTEM:{reply}");
    d.lab_mut()
        .spawn(ns, &["socat", &listen, &cmd], &format!("{ns}-{port}"))
        .unwrap();
    d.lab()
        .wait_listen(ns, port, Duration::from_secs(5))
        .unwrap();
}

/// True once a UDP datagram from `ns` to a closed port `[ip]:port` is answered by an ICMPv6
/// port unreachable that the sender's kernel matches to its socket (the error's quote
/// translated back, its checksums right), retried for a few seconds (the first datagram to
/// an unresolved neighbour is lost to its solicitation, and the outside rate-limits errors).
fn udp6_refused(d: &DaemonLab, ns: &str, ip: &str, port: u16) -> bool {
    let probe = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n\
         s.settimeout(1.5)\n\
         s.connect(('{ip}', {port}))\n\
         s.send(b'x')\n\
         try:\n    s.recv(16)\n    print('answered')\n\
         except ConnectionRefusedError:\n    print('refused')\n\
         except OSError as e:\n    print(e)\n"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = d
            .lab()
            .exec_output(ns, &["/usr/bin/python3", "-c", &probe])
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).trim() == "refused" {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}

#[test]
fn nat66_routed_v6_and_published_ports_over_v6() {
    let Some(bin) = sluice_tests::bins::release_bin_dir(&["sluice", "sluiced"]) else {
        return;
    };
    let mut d = DaemonLab::start_dual_stack("nsix", &bin, UPLINK6, OUTSIDE6).unwrap();
    d.lab()
        .ip(
            "out",
            &["-6", "route", "add", "fd00:72::/64", "via", UPLINK6],
        )
        .unwrap();
    create_dual(&d, "masq", "10.71.0.0/24", "fd00:71::/64", &[]);
    let routed = [
        "--opt",
        "com.docker.network.bridge.gateway_mode_ipv6=routed",
    ];
    create_dual(&d, "direct", "10.72.0.0/24", "fd00:72::/64", &routed);
    let c1 = d.add_container("c1").unwrap();
    let c2 = d.add_container("c2").unwrap();
    ok(
        &d,
        &[
            "network", "connect", "--name", "m1", "-p", "8080:80", "masq", &c1,
        ],
    );
    ok(
        &d,
        &[
            "network", "connect", "--name", "r1", "-p", "8081:81", "direct", &c2,
        ],
    );
    serve(&mut d, "out", 7000, "echo from $SOCAT_PEERADDR");
    serve(&mut d, "c1", 80, "echo web6");
    serve(&mut d, "c2", 81, "echo routed6");

    // NAT66: the outside sees the uplink's v6 address; routed: the container's own.
    // socat writes the peer in full, bracketed: `from [2001:0db8:...]`.
    let peer = |ns: &str| {
        let seen = tcp6_read(&d, ns, OUTSIDE6, 7000).unwrap_or_default();
        let text = seen
            .trim()
            .trim_start_matches("from [")
            .trim_end_matches(']');
        text.parse::<std::net::Ipv6Addr>().ok()
    };
    assert_eq!(
        peer("c1"),
        UPLINK6.parse().ok(),
        "masqueraded; log: {}",
        d.log()
    );
    assert_eq!(peer("c2"), "fd00:72::2".parse().ok(), "routed");
    assert!(
        wait_ping6(&d, "c1", OUTSIDE6, Duration::from_secs(5)),
        "ping6 out"
    );
    // An ICMPv6 error about a masqueraded datagram reaches its sender: port unreachable from
    // the outside's closed UDP port, translated back through NAT66.
    assert!(
        udp6_refused(&d, "c1", OUTSIDE6, 9),
        "no port unreachable through NAT66; log: {}",
        d.log()
    );

    // Published ports: `-p 8080:80` on the uplink's v6 address; a routed network's container
    // port directly, and nothing that is not published.
    assert_eq!(
        tcp6_read(&d, "out", UPLINK6, 8080).as_deref(),
        Some("web6\n")
    );
    assert_eq!(
        tcp6_read(&d, "out", "fd00:72::2", 81).as_deref(),
        Some("routed6\n")
    );
    let closed = d
        .lab()
        .exec_output(
            "out",
            &[
                "socat",
                "-T",
                "2",
                "-",
                "TCP6:[fd00:72::2]:82,connect-timeout=2",
            ],
        )
        .unwrap();
    assert!(
        !closed.status.success(),
        "an unpublished routed port answered"
    );
    // Only v6 crossed the dataplane here: its established TCP flows took the shortcut.
    let st: Value = serde_json::from_str(&ok(&d, &["stats", "--output", "json"])).unwrap();
    assert!(
        st["shortcut_packets"].as_u64().unwrap_or(0) > 0,
        "no v6 shortcut taken: {st:#}"
    );
}

#[test]
fn v6_only_endpoints_ping6_by_name_and_reach_the_outside_through_nat66() {
    let Some(bin) = sluice_tests::bins::release_bin_dir(&["sluice", "sluiced"]) else {
        return;
    };
    let mut d = DaemonLab::start_dual_stack("vsix", &bin, UPLINK6, OUTSIDE6).unwrap();
    let refused = d.sluice(&["network", "create", "--ipv4=false", "nov6"]);
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && why.contains("--ipv6"),
        "--ipv4=false without --ipv6: {why}"
    );
    let create = [
        "network",
        "create",
        "--ipv4=false",
        "--ipv6",
        "--subnet",
        "fd00:73::/64",
        "six",
    ];
    ok(&d, &create);
    let v: Value = serde_json::from_str(&ok(&d, &["network", "inspect", "six"])).unwrap();
    let n = &v[0];
    assert_eq!(n["EnableIPv4"], false, "{n:#}");
    assert_eq!(n["EnableIPv6"], true);
    assert_eq!(n["IPAM"]["Config"].as_array().unwrap().len(), 1, "{n:#}");
    assert_eq!(n["IPAM"]["Config"][0]["Subnet"], "fd00:73::/64");

    let c1 = d.add_container("web").unwrap();
    let c2 = d.add_container("db").unwrap();
    let v4_host = d.sluice(&[
        "network",
        "connect",
        "--name",
        "web",
        "-p",
        "127.0.0.1:8080:80",
        "six",
        &c1,
    ]);
    let why = String::from_utf8_lossy(&v4_host.stderr);
    assert!(
        !v4_host.status.success() && why.contains("IPv6-only"),
        "-p on a v4 host address: {why}"
    );
    ok(
        &d,
        &[
            "network", "connect", "--name", "web", "-p", "8080:80", "six", &c1,
        ],
    );
    ok(&d, &["network", "connect", "--name", "db", "six", &c2]);
    let ps: Value = serde_json::from_str(&ok(&d, &["ps", "--output", "json"])).unwrap();
    for e in ps.as_array().unwrap() {
        assert_eq!(e["ipv4"], "", "{e:#}");
        let ports = if e["name"] == "web" {
            serde_json::json!(["[::]:8080->80/tcp"])
        } else {
            serde_json::json!([])
        };
        assert_eq!(e["ports"], ports, "published on v6 alone: {e:#}");
        // Names resolve through the resolv.conf sluiced wrote, as a runtime mounts it.
        let resolv_conf = e["files"]["resolv_conf"].as_str().unwrap();
        d.use_resolv_conf(e["name"].as_str().unwrap(), resolv_conf.as_ref())
            .unwrap();
    }
    let v4 = d.lab().ip("web", &["-4", "addr", "show", "eth0"]).unwrap();
    assert!(!v4.contains("inet "), "no v4 address: {v4}");
    let routes = d
        .lab()
        .ip("web", &["-6", "route", "show", "default"])
        .unwrap();
    assert!(routes.contains("via fd00:73::1"), "{routes}");

    let within = Duration::from_secs(10);
    assert!(
        wait_ping6(&d, "web", "db", within),
        "web -> db by name; log: {}",
        d.log()
    );
    assert!(wait_ping6(&d, "db", "web.six", within), "db -> web.six");
    assert!(
        wait_ping6(&d, "web", "fd00:73::1", within),
        "web -> gateway"
    );

    serve(&mut d, "out", 7000, "echo from $SOCAT_PEERADDR");
    let seen = tcp6_read(&d, "web", OUTSIDE6, 7000).unwrap_or_default();
    let peer = seen
        .trim()
        .trim_start_matches("from [")
        .trim_end_matches(']');
    assert_eq!(
        peer.parse::<std::net::Ipv6Addr>().ok(),
        UPLINK6.parse().ok(),
        "masqueraded to the uplink's v6 address; log: {}",
        d.log()
    );
    assert!(wait_ping6(&d, "db", OUTSIDE6, within), "ping6 out");

    // `-p 8080:80` on an IPv6-only network: published on the uplink's v6 address.
    serve(&mut d, "web", 80, "echo web6only");
    assert_eq!(
        tcp6_read(&d, "out", UPLINK6, 8080).as_deref(),
        Some("web6only\n"),
        "log: {}",
        d.log()
    );
}

#[test]
fn icmpv6_packet_too_big_and_time_exceeded_reach_the_sender() {
    let Some(bin) = sluice_tests::bins::release_bin_dir(&["sluice", "sluiced"]) else {
        return;
    };
    // The uplink's MTU is lower than the endpoints' (1500): the next link's MTU.
    let uplink6 = format!("{UPLINK6}/64");
    let args = [
        "--workers",
        "1",
        "--uplink-mtu",
        "1400",
        "--uplink-ip6",
        &uplink6,
        "--uplink-gateway6",
        OUTSIDE6,
    ];
    let mut d = DaemonLab::start("esix", &bin, &args).unwrap();
    d.lab()
        .addr6("out", "eth0", &format!("{OUTSIDE6}/64"))
        .unwrap();
    create_dual(&d, "err", "10.74.0.0/24", "fd00:74::/64", &[]);
    let c1 = d.add_container("c1").unwrap();
    ok(&d, &["network", "connect", "--name", "e1", "err", &c1]);
    assert!(
        wait_ping6(&d, "c1", OUTSIDE6, Duration::from_secs(10)),
        "ping6 out; log: {}",
        d.log()
    );
    let pmtu = || d.lab().ip("c1", &["-6", "route", "get", OUTSIDE6]).unwrap();
    assert!(!pmtu().contains("mtu 1400"), "{}", pmtu());
    // One ping from c1 to the outside with extra flags: whether it was answered, and what
    // ping wrote.
    let ping = |flags: &[&str]| {
        let mut args = vec!["ping", "-6", "-c", "1", "-W", "2"];
        args.extend_from_slice(flags);
        args.push(OUTSIDE6);
        let out = d.lab().exec_output("c1", &args).unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success(), said)
    };
    // 1452 B of payload: a 1500 B packet, over the uplink's 1400, and not to be fragmented.
    let (answered, said) = ping(&["-M", "do", "-s", "1452"]);
    assert!(!answered, "a too big packet got an answer: {said}");
    // The sender's kernel took the error (checksums right, quote its own): its path MTU.
    assert!(pmtu().contains("mtu 1400"), "{said}; {}", pmtu());
    let (answered, said) = ping(&["-M", "do", "-s", "1352"]);
    assert!(answered, "1400 B packets pass: {said}");

    let (_, said) = ping(&["-t", "1"]);
    assert!(
        said.contains("From fd00:74::1") && said.contains("Time exceeded"),
        "hop limit 1: {said}"
    );
    let st: Value = serde_json::from_str(&ok(&d, &["stats", "--output", "json"])).unwrap();
    for why in ["too_big", "ttl_exceeded"] {
        assert!(st["drops"][why].as_u64() >= Some(1), "{why}: {st:#}");
    }
}
