//! The embedded resolver in a real network namespace: the daemon's `DnsServer` opens
//! 127.0.0.11:53 inside a lab namespace (whose loopback is down, as in a fresh sandbox), and a
//! client inside that namespace resolves an endpoint name and an alias over UDP and TCP, gets
//! SERVFAIL for an unknown name when there is no upstream, and finds the address free again
//! once the sandbox is removed. Needs root; skipped otherwise.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use sluice_control::dns::names::NameTable;
use sluice_control::dns::server::{DnsServer, DNS_PORT};
use sluice_control::dns::wire::{build_query, parse, Rcode, TYPE_A, TYPE_AAAA};
use sluice_control::dns::RESOLVER_IP;
use sluice_control::model::{EndpointSpec, NetworkSpec, Sandbox, Stamp};
use sluice_control::state::State;
use sluice_lab::lab::Lab;
use sluice_tests::netns::in_ns;

fn resolver() -> SocketAddr {
    SocketAddr::from((RESOLVER_IP, DNS_PORT))
}

/// Asks the resolver for `name` (A) over UDP from inside `ns`: (rcode, addresses).
fn ask_udp(ns: &Path, name: &str) -> (u8, Vec<Ipv4Addr>) {
    let mut q = Vec::new();
    build_query(0x5151, name, TYPE_A, &mut q).unwrap();
    let r = sluice_tests::udp::ask(ns, resolver(), &q)
        .unwrap_or_else(|| panic!("no answer from the resolver for {name}"));
    decode(&r)
}

/// Asks for `name`'s v6 addresses (AAAA) over UDP from inside `ns`: (rcode, addresses).
fn ask_aaaa(ns: &Path, name: &str) -> (u8, Vec<Ipv6Addr>) {
    let mut q = Vec::new();
    build_query(0x5252, name, TYPE_AAAA, &mut q).unwrap();
    let r = sluice_tests::udp::ask(ns, resolver(), &q)
        .unwrap_or_else(|| panic!("no answer from the resolver for {name}"));
    let m = parse(&r).unwrap();
    let ips = m
        .answers()
        .unwrap()
        .iter()
        .filter_map(|r| r.aaaa())
        .collect();
    (m.header.rcode(), ips)
}

/// The same over TCP.
fn ask_tcp(ns: &Path, name: &str) -> (u8, Vec<Ipv4Addr>) {
    let mut q = Vec::new();
    build_query(0x6262, name, TYPE_A, &mut q).unwrap();
    let r = in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&resolver(), Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut msg = (q.len() as u16).to_be_bytes().to_vec();
        msg.extend_from_slice(&q);
        s.write_all(&msg).unwrap();
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut r = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut r).unwrap();
        r
    });
    decode(&r)
}

fn decode(reply: &[u8]) -> (u8, Vec<Ipv4Addr>) {
    let m = parse(reply).unwrap();
    assert!(m.header.is_response());
    let ips = m.answers().unwrap().iter().filter_map(|r| r.a()).collect();
    (m.header.rcode(), ips)
}

#[test]
fn embedded_resolver_answers_inside_the_namespace() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to create network namespaces");
        return;
    }
    let mut lab = Lab::new("dns").unwrap();
    lab.add_ns("c1").unwrap();
    lab.ip("c1", &["link", "set", "lo", "down"]).unwrap();
    let ns = PathBuf::from("/var/run/netns").join(lab.ns_name("c1").unwrap());
    let sandbox = Sandbox::Netns(ns.clone());

    let mut state = State::with_defaults(Stamp::fresh);
    let net = NetworkSpec {
        name: "front".into(),
        subnet: Some("10.77.0.0/24".parse().unwrap()),
        enable_ipv6: true,
        subnet6: Some("fd00:77::/64".parse().unwrap()),
        ..NetworkSpec::default()
    };
    state.create_network(net, Stamp::fresh()).unwrap();
    // Built from JSON so that new optional fields of EndpointSpec need no change here.
    let ep: EndpointSpec = serde_json::from_value(serde_json::json!({
        "network": "front", "sandbox": sandbox, "name": "web", "aliases": ["www"]
    }))
    .unwrap();
    let web = state.connect(ep, Stamp::fresh()).unwrap();
    let (web_ip, web_ip6) = (web.ip.unwrap(), web.ip6.unwrap());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _in_rt = rt.enter();
    let dns = DnsServer::with_timeout(vec![], Duration::from_millis(300));
    let failed = dns.sync(NameTable::from_state(&state));
    assert!(failed.is_empty(), "resolver not started: {failed:?}");
    assert_eq!(dns.sandboxes(), std::slice::from_ref(&sandbox));
    assert!(
        lab.ip("c1", &["link", "show", "lo"])
            .unwrap()
            .contains(",UP"),
        "the resolver brings the sandbox's loopback up"
    );

    assert_eq!(ask_udp(&ns, "web"), (0, vec![web_ip]));
    assert_eq!(ask_udp(&ns, "WWW."), (0, vec![web_ip]));
    assert_eq!(ask_udp(&ns, "web.front"), (0, vec![web_ip]));
    assert_eq!(ask_tcp(&ns, "www"), (0, vec![web_ip]));
    // A dual-stack network's names and aliases have AAAA records too.
    assert_eq!(web_ip6, "fd00:77::2".parse::<Ipv6Addr>().unwrap());
    assert_eq!(ask_aaaa(&ns, "web"), (0, vec![web_ip6]));
    assert_eq!(ask_aaaa(&ns, "WWW"), (0, vec![web_ip6]));
    assert_eq!(ask_aaaa(&ns, "web.front"), (0, vec![web_ip6]));
    assert_eq!(
        ask_udp(&ns, "nothere.invalid"),
        (Rcode::ServFail as u8, vec![])
    );
    assert_eq!(
        ask_tcp(&ns, "nothere.invalid"),
        (Rcode::ServFail as u8, vec![])
    );

    // Removing the sandbox closes both sockets: the address can be bound again inside it.
    assert!(dns.remove_sandbox(&sandbox));
    assert!(dns.sandboxes().is_empty());
    let start = Instant::now();
    loop {
        let free = in_ns(&ns, || {
            UdpSocket::bind(resolver()).is_ok() && std::net::TcpListener::bind(resolver()).is_ok()
        });
        if free {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "127.0.0.11:53 still bound after remove_sandbox"
        );
        sleep(Duration::from_millis(50));
    }
    // And a sync with an empty table stops nothing else and starts nothing.
    assert!(dns.sync(NameTable::default()).is_empty());
    assert!(dns.sandboxes().is_empty());
}
