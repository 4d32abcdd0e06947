//! Scenario tests of the whole pipeline: bridging, gateway, NAPT, port forwarding, hairpin,
//! isolation, ICC, anti-spoofing, VLANs and bad input, through `Worker::process`.

use std::net::Ipv4Addr;

use proptest::prelude::*;

use super::flow;
use crate::counters::DropReason as R;
use crate::frame::{PortId, Verdict};
use crate::pipeline::{Dataplane, Worker};
use crate::testkit::*;
use crate::time::Millis;
use crate::wire::MacAddr;

type S = Scenario;

const T0: Millis = Millis(1_000_000);

fn worker_for(s: &Scenario) -> Worker {
    Dataplane::new(&s.config).unwrap().worker()
}

fn ip_of(frame: &[u8]) -> flow::Ipv4Info {
    flow::parse_ipv4(frame, 14).unwrap()
}

fn tuple_of(frame: &[u8]) -> crate::nat::Tuple {
    flow::flow_of(frame, &ip_of(frame)).unwrap().tuple
}

fn checksums_valid(frame: &[u8]) -> bool {
    use crate::wire::checksum::{fold, internet_checksum, ones_sum, pseudo_header_sum_v4};
    let ip = ip_of(frame);
    let l4 = &frame[ip.l4()..ip.l3 + ip.total];
    let header_ok = internet_checksum(&frame[14..14 + ip.hl]) == 0;
    let l4_ok = match ip.proto {
        1 => internet_checksum(l4) == 0,
        17 if l4[6..8] == [0, 0] => true,
        p => {
            fold(ones_sum(
                l4,
                pseudo_header_sum_v4(ip.src, ip.dst, p, l4.len() as u16),
            )) == 0xffff
        }
    };
    header_ok && l4_ok
}

/// Teaches the uplink the next hop's MAC, as an ARP reply from it would.
fn learn_next_hop(w: &mut Worker) {
    let reply = arp_reply(S::HOP_MAC, S::HOP, S::UP_MAC, S::UP);
    assert_eq!(run_one(w, UPLINK, &reply, T0).0, Verdict::Consumed);
}

#[test]
fn gateway_answers_arp_and_ping() {
    let s = S::new();
    let mut w = worker_for(&s);
    let (v, out) = run_one(&mut w, PORT_A, &arp_request(S::mac(S::A), S::A, S::GW), T0);
    assert_eq!(v, Verdict::Forward(PORT_A));
    assert_eq!(&out[0..6], &S::mac(S::A).0);
    assert_eq!(&out[22..28], &S::GW_MAC.0);
    let ping = S::from_endpoint(S::A, &icmp_echo(S::A, S::GW, true, 7, 1));
    let (v, out) = run_one(&mut w, PORT_A, &ping, T0);
    assert_eq!(v, Verdict::Forward(PORT_A));
    let ip = ip_of(&out);
    assert_eq!((ip.src, ip.dst), (S::GW, S::A));
    assert_eq!(out[34], 0);
    assert!(checksums_valid(&out));
}

#[test]
fn an_external_gateway_is_left_to_the_segment() {
    let mut s = S::new();
    s.config.networks[0].external_gateway = true;
    let mut w = worker_for(&s);
    let (v, _) = run_one(&mut w, PORT_A, &arp_request(S::mac(S::A), S::A, S::GW), T0);
    assert!(
        matches!(v, Verdict::Flood { .. }),
        "the ARP request goes to the segment's router, sluice does not answer: {v:?}"
    );
    let ping = S::from_endpoint(S::A, &icmp_echo(S::A, S::GW, true, 7, 1));
    let (v, _) = run_one(&mut w, PORT_A, &ping, T0);
    assert!(
        matches!(v, Verdict::Flood { .. }),
        "frames to the gateway MAC are bridged, not routed: {v:?}"
    );
}

#[test]
fn endpoints_bridge_to_each_other_and_unknown_floods() {
    let s = S::new();
    let mut w = worker_for(&s);
    let f = eth(
        S::mac(S::B),
        S::mac(S::A),
        0x0800,
        &udp(S::A, 1, S::B, 2, b"x"),
    );
    let (v, out) = run_one(&mut w, PORT_A, &f, T0);
    assert_eq!(v, Verdict::Forward(PORT_B));
    assert_eq!(out, f);
    let unknown = eth(
        MacAddr([2, 9, 9, 9, 9, 9]),
        S::mac(S::A),
        0x0800,
        &udp(S::A, 1, S::B, 2, b"x"),
    );
    assert!(matches!(
        run_one(&mut w, PORT_A, &unknown, T0).0,
        Verdict::Flood { vlan: 0, .. }
    ));
    let bcast = arp_request(S::mac(S::A), S::A, S::B);
    assert!(matches!(
        run_one(&mut w, PORT_A, &bcast, T0).0,
        Verdict::Flood { .. }
    ));
}

#[test]
fn trunk_learns_per_vlan_and_refuses_other_vlans() {
    let s = S::new();
    let mut w = worker_for(&s);
    let m1 = MacAddr([2, 1, 1, 1, 1, 1]);
    let m2 = MacAddr([2, 2, 2, 2, 2, 2]);
    let f = tagged(&eth(m2, m1, 0x0800, &udp(S::A, 1, S::B, 2, b"x")), 10);
    assert_eq!(
        run_one(&mut w, TRUNK, &f, T0).0,
        Verdict::Flood {
            network: crate::frame::NetworkId(0),
            vlan: 10
        }
    );
    let back = tagged(&eth(m1, m2, 0x0800, &udp(S::B, 2, S::A, 1, b"y")), 10);
    // m1 was learned on the trunk in VLAN 10: the answer from the same port is a hairpin.
    assert_eq!(
        run_one(&mut w, TRUNK, &back, T0).0,
        Verdict::Drop(R::Hairpin)
    );
    let other_vlan = tagged(&eth(m1, m2, 0x0800, &udp(S::B, 2, S::A, 1, b"y")), 20);
    assert!(matches!(
        run_one(&mut w, TRUNK, &other_vlan, T0).0,
        Verdict::Flood { vlan: 20, .. }
    ));
    let bad = tagged(&eth(m2, m1, 0x0800, &udp(S::A, 1, S::B, 2, b"x")), 30);
    assert_eq!(
        run_one(&mut w, TRUNK, &bad, T0).0,
        Verdict::Drop(R::VlanNotAllowed)
    );
    let tagged_on_access = tagged(
        &eth(
            S::mac(S::B),
            S::mac(S::A),
            0x0800,
            &udp(S::A, 1, S::B, 2, b"x"),
        ),
        10,
    );
    assert_eq!(
        run_one(&mut w, PORT_A, &tagged_on_access, T0).0,
        Verdict::Drop(R::VlanNotAllowed)
    );
}

#[test]
fn anti_spoofing_drops_foreign_sources() {
    let s = S::new();
    let mut w = worker_for(&s);
    let wrong_mac = eth(
        S::mac(S::B),
        MacAddr([2, 0x42, 1, 1, 1, 1]),
        0x0800,
        &udp(S::A, 1, S::B, 2, b"x"),
    );
    assert_eq!(
        run_one(&mut w, PORT_A, &wrong_mac, T0).0,
        Verdict::Drop(R::SpoofedMac)
    );
    let wrong_ip = eth(
        S::mac(S::B),
        S::mac(S::A),
        0x0800,
        &udp(Ipv4Addr::new(172, 17, 0, 99), 1, S::B, 2, b"x"),
    );
    assert_eq!(
        run_one(&mut w, PORT_A, &wrong_ip, T0).0,
        Verdict::Drop(R::SpoofedIp)
    );
    let arp_lie = arp_request(S::mac(S::A), S::B, S::GW);
    assert_eq!(
        run_one(&mut w, PORT_A, &arp_lie, T0).0,
        Verdict::Drop(R::SpoofedIp)
    );
    let probe = arp_request(S::mac(S::A), Ipv4Addr::UNSPECIFIED, S::B);
    assert!(matches!(
        run_one(&mut w, PORT_A, &probe, T0).0,
        Verdict::Flood { .. }
    ));
    // A trunk cannot steal an endpoint's MAC.
    let steal = eth(
        MacAddr([2, 3, 3, 3, 3, 3]),
        S::mac(S::A),
        0x0806,
        &[0u8; 28],
    );
    assert_eq!(
        run_one(&mut w, TRUNK, &steal, T0).0,
        Verdict::Drop(R::SpoofedMac)
    );
    let c = w.counters();
    assert_eq!(c.drops(R::SpoofedMac), 2);
    assert_eq!(c.drops(R::SpoofedIp), 2);
}

#[test]
fn icc_off_leaves_only_the_gateway() {
    let mut s = S::new();
    s.config.networks[0].icc = false;
    let mut w = worker_for(&s);
    let f = eth(
        S::mac(S::B),
        S::mac(S::A),
        0x0800,
        &udp(S::A, 1, S::B, 2, b"x"),
    );
    assert_eq!(
        run_one(&mut w, PORT_A, &f, T0).0,
        Verdict::Drop(R::IccDenied)
    );
    let routed = S::from_endpoint(S::A, &udp(S::A, 1, S::B, 2, b"x"));
    assert_eq!(
        run_one(&mut w, PORT_A, &routed, T0).0,
        Verdict::Drop(R::IccDenied)
    );
    let ping = S::from_endpoint(S::A, &icmp_echo(S::A, S::GW, true, 7, 1));
    assert_eq!(
        run_one(&mut w, PORT_A, &ping, T0).0,
        Verdict::Forward(PORT_A)
    );
    let tables = w.dataplane().tables();
    let flood: Vec<PortId> = tables
        .flood_targets(crate::frame::NetworkId(0), 0, PORT_A)
        .map(|(p, _)| p)
        .collect();
    assert_eq!(flood, vec![TRUNK]);
}

#[test]
fn a_network_with_its_own_uplink_is_translated_and_reached_there() {
    use crate::config::{PortConfig, PortForward, PortRange, PortRole, UplinkConfig};
    const UPLINK2: PortId = PortId(9);
    let up2 = Ipv4Addr::new(203, 0, 113, 1);
    let hop2 = Ipv4Addr::new(203, 0, 113, 254);
    let (up2_mac, hop2_mac) = (
        MacAddr([2, 0, 0, 0, 0, 0x21]),
        MacAddr([2, 0, 0, 0, 0, 0x2e]),
    );
    let mut s = S::new();
    s.config.ports.push(PortConfig {
        id: UPLINK2,
        name: "uplink2".into(),
        io: Default::default(),
        role: PortRole::Uplink,
    });
    s.config.network_uplinks.push(UplinkConfig {
        port: UPLINK2,
        ip: "203.0.113.1/24".parse().unwrap(),
        mac: up2_mac,
        next_hop: Some(hop2),
        mtu: 1500,
    });
    s.config.networks[1].uplink = Some(UPLINK2);
    s.config.forwards.push(PortForward {
        proto: crate::config::L4Proto::Tcp,
        host_ip: None,
        host_ports: PortRange::single(9090),
        network: crate::frame::NetworkId(1),
        target_ip: S::C,
        target_ports: PortRange::single(90),
    });
    let mut w = worker_for(&s);
    learn_next_hop(&mut w);
    let reply = arp_reply(hop2_mac, hop2, up2_mac, up2);
    assert_eq!(run_one(&mut w, UPLINK2, &reply, T0).0, Verdict::Consumed);

    // Network "other" leaves through uplink2 with uplink2's address; "bridge" through the
    // default uplink.
    let from_c = S::from_endpoint(S::C, &tcp(S::C, 40000, S::REMOTE, 80, SYN, b""));
    let (v, out) = run_one(&mut w, PORT_C, &from_c, T0);
    assert_eq!(v, Verdict::Forward(UPLINK2));
    assert_eq!((&out[0..6], &out[6..12]), (&hop2_mac.0[..], &up2_mac.0[..]));
    assert_eq!(tuple_of(&out).src, up2);
    let from_a = S::from_endpoint(S::A, &tcp(S::A, 40000, S::REMOTE, 80, SYN, b""));
    let (v, out) = run_one(&mut w, PORT_A, &from_a, T0);
    assert_eq!(v, Verdict::Forward(UPLINK));
    assert_eq!(tuple_of(&out).src, S::UP);

    // A port published for "other" is reached on uplink2's address, not the default one's.
    let inbound = |dst: Ipv4Addr, mac: MacAddr| {
        eth(
            mac,
            S::HOP_MAC,
            0x0800,
            &tcp(S::REMOTE, 5555, dst, 9090, SYN, b""),
        )
    };
    let (v, out) = run_one(&mut w, UPLINK2, &inbound(up2, up2_mac), T0);
    assert_eq!(v, Verdict::Forward(PORT_C));
    assert_eq!((tuple_of(&out).dst, tuple_of(&out).dst_port), (S::C, 90));
    let (v, _) = run_one(&mut w, UPLINK, &inbound(S::UP, S::UP_MAC), T0);
    assert!(
        !matches!(v, Verdict::Forward(PORT_C)),
        "the default uplink does not reach other's published port: {v:?}"
    );
    // Each uplink answers ARP for its own address only.
    let who = arp_request(S::HOP_MAC, S::REMOTE, up2);
    assert_eq!(
        run_one(&mut w, UPLINK2, &who, T0).0,
        Verdict::Forward(UPLINK2)
    );
}

#[test]
fn unresolved_next_hops_are_probed_until_learned() {
    let s = S::new();
    let mut w = worker_for(&s);
    let probes = w.dataplane().next_hop_probes();
    assert_eq!(probes.len(), 1);
    let (port, f) = &probes[0];
    assert_eq!(*port, UPLINK);
    assert_eq!(f.len(), 60);
    assert_eq!((&f[0..6], &f[6..12]), (&[0xff; 6][..], &S::UP_MAC.0[..]));
    assert_eq!(&f[12..14], &[8, 6]);
    assert_eq!(
        (&f[28..32], &f[38..42]),
        (&S::UP.octets()[..], &S::HOP.octets()[..])
    );
    learn_next_hop(&mut w);
    assert!(w.dataplane().next_hop_probes().is_empty());
}

#[test]
fn napt_outbound_arp_then_translate_and_back() {
    let s = S::new();
    let mut w = worker_for(&s);
    let syn = S::from_endpoint(S::A, &tcp(S::A, 40000, S::REMOTE, 80, SYN, b""));
    let (v, out) = run_one(&mut w, PORT_A, &syn, T0);
    assert_eq!(v, Verdict::Forward(UPLINK));
    assert_eq!(
        &out[12..14],
        &[8, 6],
        "an ARP request for the next hop leaves first"
    );
    assert_eq!(&out[38..42], &S::HOP.octets());
    assert_eq!(w.counters().drops(R::ArpPending), 1);
    learn_next_hop(&mut w);
    let (v, out) = run_one(&mut w, PORT_A, &syn, T0);
    assert_eq!(v, Verdict::Forward(UPLINK));
    assert_eq!(&out[0..6], &S::HOP_MAC.0);
    assert_eq!(&out[6..12], &S::UP_MAC.0);
    let t = tuple_of(&out);
    assert_eq!((t.src, t.dst, t.dst_port), (S::UP, S::REMOTE, 80));
    assert!(s.config.nat.ports.contains(t.src_port));
    assert_eq!(ip_of(&out).ttl, 63);
    assert!(checksums_valid(&out));
    let reply = S::from_outside(&tcp(S::REMOTE, 80, S::UP, t.src_port, SYN | ACK, b""));
    let (v, back) = run_one(&mut w, UPLINK, &reply, T0);
    assert_eq!(v, Verdict::Forward(PORT_A));
    assert_eq!(&back[0..6], &S::mac(S::A).0);
    assert_eq!(&back[6..12], &S::GW_MAC.0);
    let bt = tuple_of(&back);
    assert_eq!(
        (bt.src, bt.src_port, bt.dst, bt.dst_port),
        (S::REMOTE, 80, S::A, 40000)
    );
    assert!(checksums_valid(&back));
    assert_eq!(w.dataplane().conntrack().len(), 1);
}

#[test]
fn napt_udp_and_ping_round_trip() {
    let s = S::new();
    let mut w = worker_for(&s);
    learn_next_hop(&mut w);
    let q = S::from_endpoint(S::A, &udp(S::A, 5353, S::REMOTE, 53, b"query"));
    let (v, out) = run_one(&mut w, PORT_A, &q, T0);
    assert_eq!(v, Verdict::Forward(UPLINK));
    let t = tuple_of(&out);
    let a = S::from_outside(&udp(S::REMOTE, 53, S::UP, t.src_port, b"answer"));
    let (v, back) = run_one(&mut w, UPLINK, &a, T0);
    assert_eq!(v, Verdict::Forward(PORT_A));
    assert_eq!(tuple_of(&back).dst_port, 5353);
    let ping = S::from_endpoint(S::A, &icmp_echo(S::A, S::REMOTE, true, 99, 1));
    let (v, out) = run_one(&mut w, PORT_A, &ping, T0);
    assert_eq!(v, Verdict::Forward(UPLINK));
    let pt = tuple_of(&out);
    assert_eq!(pt.src, S::UP);
    assert!(checksums_valid(&out));
    let pong = S::from_outside(&icmp_echo(S::REMOTE, S::UP, false, pt.src_port, 1));
    let (v, back) = run_one(&mut w, UPLINK, &pong, T0);
    assert_eq!(v, Verdict::Forward(PORT_A));
    let bt = tuple_of(&back);
    assert_eq!((bt.dst, bt.src_port), (S::A, 99));
    assert!(checksums_valid(&back));
}

#[test]
fn icmp_errors_are_translated_inbound() {
    let s = S::new();
    let mut w = worker_for(&s);
    learn_next_hop(&mut w);
    let q = S::from_endpoint(S::A, &udp(S::A, 5353, S::REMOTE, 53, b"query"));
    let (_, out) = run_one(&mut w, PORT_A, &q, T0);
    // The remote answers with port unreachable quoting what it received.
    let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&out[14..14 + 28]);
    let c = crate::wire::checksum::internet_checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let err = S::from_outside(&ipv4(S::REMOTE, S::UP, 1, 64, &icmp));
    let (v, back) = run_one(&mut w, UPLINK, &err, T0);
    assert_eq!(v, Verdict::Forward(PORT_A));
    let ip = ip_of(&back);
    assert_eq!((ip.src, ip.dst), (S::REMOTE, S::A));
    let quoted = flow::flow_of(&back, &ip).unwrap().tuple;
    assert_eq!(
        (quoted.src, quoted.src_port, quoted.dst_port),
        (S::A, 5353, 53)
    );
    assert!(checksums_valid(&back));
}

#[test]
fn published_port_dnat_and_reply() {
    let s = S::new();
    let mut w = worker_for(&s);
    learn_next_hop(&mut w);
    let syn = S::from_outside(&tcp(S::REMOTE, 50000, S::UP, 8080, SYN, b""));
    let (v, out) = run_one(&mut w, UPLINK, &syn, T0);
    assert_eq!(v, Verdict::Forward(PORT_B));
    let t = tuple_of(&out);
    assert_eq!(
        (t.src, t.src_port, t.dst, t.dst_port),
        (S::REMOTE, 50000, S::B, 80)
    );
    assert_eq!(&out[0..6], &S::mac(S::B).0);
    assert!(checksums_valid(&out));
    let synack = S::from_endpoint(S::B, &tcp(S::B, 80, S::REMOTE, 50000, SYN | ACK, b""));
    let (v, back) = run_one(&mut w, PORT_B, &synack, T0);
    assert_eq!(v, Verdict::Forward(UPLINK));
    let bt = tuple_of(&back);
    assert_eq!(
        (bt.src, bt.src_port, bt.dst, bt.dst_port),
        (S::UP, 8080, S::REMOTE, 50000)
    );
    let closed = S::from_outside(&tcp(S::REMOTE, 50000, S::UP, 8081, SYN, b""));
    assert_eq!(
        run_one(&mut w, UPLINK, &closed, T0).0,
        Verdict::Drop(R::NoFlow)
    );
    let ping_up = S::from_outside(&icmp_echo(S::REMOTE, S::UP, true, 1, 1));
    let (v, pong) = run_one(&mut w, UPLINK, &ping_up, T0);
    assert_eq!(v, Verdict::Forward(UPLINK));
    assert_eq!(ip_of(&pong).dst, S::REMOTE);
}

#[test]
fn hairpin_reaches_the_published_target_via_the_gateway() {
    let s = S::new();
    let mut w = worker_for(&s);
    let syn = S::from_endpoint(S::A, &tcp(S::A, 41000, S::UP, 8080, SYN, b""));
    let (v, out) = run_one(&mut w, PORT_A, &syn, T0);
    assert_eq!(v, Verdict::Forward(PORT_B));
    let t = tuple_of(&out);
    assert_eq!((t.src, t.dst, t.dst_port), (S::GW, S::B, 80));
    assert!(checksums_valid(&out));
    let synack = S::from_endpoint(S::B, &tcp(S::B, 80, S::GW, t.src_port, SYN | ACK, b""));
    let (v, back) = run_one(&mut w, PORT_B, &synack, T0);
    assert_eq!(v, Verdict::Forward(PORT_A));
    let bt = tuple_of(&back);
    assert_eq!(
        (bt.src, bt.src_port, bt.dst, bt.dst_port),
        (S::UP, 8080, S::A, 41000)
    );
    assert!(checksums_valid(&back));
}

#[test]
fn networks_are_isolated_and_internal_networks_stay_inside() {
    let mut s = S::new();
    let mut w = worker_for(&s);
    let to_c = S::from_endpoint(S::A, &udp(S::A, 1, S::C, 2, b"x"));
    assert_eq!(
        run_one(&mut w, PORT_A, &to_c, T0).0,
        Verdict::Drop(R::Isolated)
    );
    s.config.networks[0].internal = true;
    let mut w = worker_for(&s);
    let out = S::from_endpoint(S::A, &udp(S::A, 1, S::REMOTE, 2, b"x"));
    assert_eq!(
        run_one(&mut w, PORT_A, &out, T0).0,
        Verdict::Drop(R::NoRoute)
    );
}

#[test]
fn ttl_expiry_and_too_big_answer_with_icmp() {
    let s = S::new();
    let mut w = worker_for(&s);
    learn_next_hop(&mut w);
    let mut p = udp(S::A, 1, S::REMOTE, 2, b"x");
    p[8] = 1;
    p[10] = 0;
    p[11] = 0;
    let c = crate::wire::checksum::internet_checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let (v, out) = run_one(&mut w, PORT_A, &S::from_endpoint(S::A, &p), T0);
    assert_eq!(v, Verdict::Forward(PORT_A));
    assert_eq!(out[34], 11);
    assert_eq!(ip_of(&out).dst, S::A);
    assert!(checksums_valid(&out));
    let big = S::from_endpoint(S::A, &udp(S::A, 1, S::REMOTE, 2, &[0u8; 1600]));
    let (v, out) = run_one(&mut w, PORT_A, &big, T0);
    assert_eq!(v, Verdict::Forward(PORT_A));
    assert_eq!((out[34], out[35]), (3, 4));
    assert_eq!(u16::from_be_bytes([out[40], out[41]]), 1500);
    assert_eq!(w.counters().drops(R::TtlExceeded), 1);
    assert_eq!(w.counters().drops(R::TooBig), 1);
}

#[test]
fn bad_frames_are_counted_drops() {
    let s = S::new();
    let mut w = worker_for(&s);
    assert_eq!(
        run_one(&mut w, PORT_A, &[1, 2, 3], T0).0,
        Verdict::Drop(R::Malformed)
    );
    assert_eq!(
        run_one(&mut w, PortId(99), &[0u8; 60], T0).0,
        Verdict::Drop(R::UnknownPort)
    );
    let mut bad = S::from_endpoint(S::A, &udp(S::A, 1, S::REMOTE, 2, b"x"));
    bad[24] ^= 0x55;
    assert_eq!(
        run_one(&mut w, PORT_A, &bad, T0).0,
        Verdict::Drop(R::Malformed)
    );
    let unsolicited = S::from_outside(&udp(S::REMOTE, 1, S::UP, 40000, b"x"));
    assert_eq!(
        run_one(&mut w, UPLINK, &unsolicited, T0).0,
        Verdict::Drop(R::NoFlow)
    );
    let other_proto = S::from_endpoint(S::A, &ipv4(S::A, S::REMOTE, 47, 64, &[0u8; 8]));
    learn_next_hop(&mut w);
    assert_eq!(
        run_one(&mut w, PORT_A, &other_proto, T0).0,
        Verdict::Drop(R::Unsupported)
    );
}

#[test]
fn reconfiguration_keeps_flows_and_learned_macs() {
    let s = S::new();
    let dp = Dataplane::new(&s.config).unwrap();
    let mut w = dp.worker();
    learn_next_hop(&mut w);
    let m1 = MacAddr([2, 1, 1, 1, 1, 1]);
    let f = eth(
        MacAddr([2, 2, 2, 2, 2, 2]),
        m1,
        0x0800,
        &udp(S::A, 1, S::B, 2, b"x"),
    );
    run_one(&mut w, TRUNK, &f, T0);
    let q = S::from_endpoint(S::A, &udp(S::A, 5353, S::REMOTE, 53, b"q"));
    let (_, out) = run_one(&mut w, PORT_A, &q, T0);
    let ext = tuple_of(&out).src_port;
    let mut c2 = s.config.clone();
    c2.forwards.clear();
    dp.apply(&c2).unwrap();
    let to_m1 = eth(m1, S::mac(S::A), 0x0800, &udp(S::A, 1, S::B, 2, b"x"));
    assert_eq!(
        run_one(&mut w, PORT_A, &to_m1, T0).0,
        Verdict::Forward(TRUNK)
    );
    let a = S::from_outside(&udp(S::REMOTE, 53, S::UP, ext, b"a"));
    assert_eq!(run_one(&mut w, UPLINK, &a, T0).0, Verdict::Forward(PORT_A));
    let syn = S::from_outside(&tcp(S::REMOTE, 50000, S::UP, 8080, SYN, b""));
    assert_eq!(
        run_one(&mut w, UPLINK, &syn, T0).0,
        Verdict::Drop(R::NoFlow)
    );
    let mut bad = c2.clone();
    bad.networks[1].subnet = "172.17.5.0/24".parse().unwrap();
    assert!(dp.apply(&bad).is_err());
    assert_eq!(dp.tables().config(), &c2);
}

#[test]
fn housekeeping_expires_flows_and_frees_ports() {
    let s = S::new();
    let dp = Dataplane::new(&s.config).unwrap();
    let mut w = dp.worker();
    learn_next_hop(&mut w);
    let q = S::from_endpoint(S::A, &udp(S::A, 5353, S::REMOTE, 53, b"q"));
    run_one(&mut w, PORT_A, &q, T0);
    assert_eq!(dp.conntrack().len(), 1);
    assert_eq!(dp.housekeeping(T0.plus_secs(10)).1, 0);
    assert_eq!(dp.housekeeping(T0.plus_secs(31)).1, 1);
    assert_eq!(dp.conntrack().len(), 0);
}

#[test]
fn one_batch_mixes_paths() {
    let s = S::new();
    let mut w = worker_for(&s);
    learn_next_hop(&mut w);
    let out = Frames::new()
        .push(PORT_A, &arp_request(S::mac(S::A), S::A, S::GW))
        .push(
            PORT_A,
            &eth(
                S::mac(S::B),
                S::mac(S::A),
                0x0800,
                &udp(S::A, 1, S::B, 2, b"x"),
            ),
        )
        .push(
            PORT_A,
            &S::from_endpoint(S::A, &udp(S::A, 9, S::REMOTE, 9, b"x")),
        )
        .push(
            UPLINK,
            &S::from_outside(&tcp(S::REMOTE, 1, S::UP, 8080, SYN, b"")),
        )
        .push(
            PORT_C,
            &S::from_endpoint(S::C, &udp(S::C, 1, S::A, 1, b"x")),
        )
        .run(&mut w, T0);
    let verdicts: Vec<Verdict> = out.iter().map(|(v, _)| *v).collect();
    assert_eq!(
        verdicts,
        vec![
            Verdict::Forward(PORT_A),
            Verdict::Forward(PORT_B),
            Verdict::Forward(UPLINK),
            Verdict::Forward(PORT_B),
            Verdict::Drop(R::Isolated),
        ]
    );
}

/// What a worker produced for a session: every frame's verdict and bytes, per batch, then the
/// flows left and the drop counters.
type Outcome = (Vec<Vec<(Verdict, Vec<u8>)>>, usize, Vec<u64>);

/// Runs a session of mixed batches (new flows, a flow's first packet twice in one batch,
/// replies, ICMP errors, published ports, hairpin, pings, bridged and bad frames) through a
/// dataplane staging its lookups in every batch (`true`) or none.
fn staged_session(staging: bool) -> Outcome {
    let s = S::new();
    let mut dp = Dataplane::new(&s.config).unwrap();
    dp.set_staging(staging);
    let mut w = dp.worker();
    learn_next_hop(&mut w);
    let syn = S::from_endpoint(S::A, &tcp(S::A, 40000, S::REMOTE, 80, SYN, b""));
    let query = S::from_endpoint(S::A, &udp(S::A, 5353, S::REMOTE, 53, b"query"));
    let mut bad_sum = syn.clone();
    bad_sum[24] ^= 0xff;
    let first = Frames::new()
        .push(PORT_A, &syn)
        .push(PORT_A, &syn)
        .push(PORT_A, &query)
        .push(
            PORT_A,
            &S::from_endpoint(S::A, &icmp_echo(S::A, S::REMOTE, true, 40001, 1)),
        )
        .push(
            PORT_A,
            &S::from_endpoint(S::A, &icmp_echo(S::A, S::GW, true, 7, 1)),
        )
        .push(
            PORT_A,
            &eth(
                S::mac(S::B),
                S::mac(S::A),
                0x0800,
                &udp(S::A, 1, S::B, 2, b"x"),
            ),
        )
        .push(PORT_A, &arp_request(S::mac(S::A), S::A, S::GW))
        .push(
            PORT_A,
            &S::from_endpoint(S::A, &tcp(S::A, 41000, S::UP, 8080, SYN, b"")),
        )
        .push(
            UPLINK,
            &S::from_outside(&tcp(S::REMOTE, 50000, S::UP, 8080, SYN, b"")),
        )
        .push(PORT_A, &bad_sum)
        .run(&mut w, T0);
    let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&first[2].1[14..14 + 28]);
    let c = crate::wire::checksum::internet_checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let hairpin_port = tuple_of(&first[7].1).src_port;
    let query_port = tuple_of(&first[2].1).src_port;
    let second = Frames::new()
        .push(
            UPLINK,
            &S::from_outside(&tcp(S::REMOTE, 80, S::UP, 40000, SYN | ACK, b"")),
        )
        .push(
            UPLINK,
            &S::from_outside(&udp(S::REMOTE, 53, S::UP, query_port, b"answer")),
        )
        .push(
            UPLINK,
            &S::from_outside(&icmp_echo(S::REMOTE, S::UP, false, 40001, 1)),
        )
        .push(
            UPLINK,
            &S::from_outside(&ipv4(S::REMOTE, S::UP, 1, 64, &icmp)),
        )
        .push(
            PORT_B,
            &S::from_endpoint(S::B, &tcp(S::B, 80, S::REMOTE, 50000, SYN | ACK, b"")),
        )
        .push(
            PORT_B,
            &S::from_endpoint(S::B, &tcp(S::B, 80, S::GW, hairpin_port, SYN | ACK, b"")),
        )
        .push(
            UPLINK,
            &S::from_outside(&icmp_echo(S::REMOTE, S::UP, true, 1, 1)),
        )
        .push(
            UPLINK,
            &S::from_outside(&tcp(S::REMOTE, 50000, S::UP, 8081, SYN, b"")),
        )
        .run(&mut w, T0);
    let third = Frames::new()
        .push(
            PORT_A,
            &S::from_endpoint(S::A, &tcp(S::A, 40000, S::REMOTE, 80, ACK, b"")),
        )
        .push(
            PORT_A,
            &S::from_endpoint(S::A, &tcp(S::A, 40000, S::REMOTE, 80, 0x04, b"")),
        )
        .push(
            PORT_A,
            &S::from_endpoint(S::A, &tcp(S::A, 40000, S::REMOTE, 80, ACK, b"")),
        )
        .run(&mut w, T0);
    let drops = R::ALL.iter().map(|r| w.counters().drops(*r)).collect();
    let flows = w.dataplane().conntrack().len();
    (vec![first, second, third], flows, drops)
}

#[test]
fn staged_lookups_change_nothing() {
    let staged = staged_session(true);
    let (batches, flows, _) = &staged;
    // The session exercises what it is meant to: a first packet twice in one batch, replies
    // and an ICMP error translated back, a bad checksum refused.
    assert_eq!(
        batches[0][..3].iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        [Verdict::Forward(UPLINK); 3]
    );
    assert_eq!(batches[0][9].0, Verdict::Drop(R::Malformed));
    assert!(batches[1][..4]
        .iter()
        .all(|(v, _)| *v == Verdict::Forward(PORT_A)));
    assert_eq!(*flows, 5);
    assert_eq!(staged, staged_session(false));
}

/// Sets the TTL of the IPv4 frame `f` (untagged) and recomputes its header checksum.
fn with_ttl(mut f: Vec<u8>, ttl: u8) -> Vec<u8> {
    f[22] = ttl;
    f[24..26].fill(0);
    let c = crate::wire::checksum::internet_checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

/// One step of a shortcut session.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// Adds frame `kind` (see `shortcut_frame`) in variant `variant` to the current batch.
    Frame(usize, usize),
    /// Runs the current batch.
    Flush,
    /// Applies configuration `n` of `shortcut_config`.
    Configure(usize),
}

/// The frames of a shortcut session: both directions of a NAPT TCP flow and of a UDP flow, a
/// published port both ways, hairpin, and an ARP reply that may move the next hop; each in
/// variants that a shortcut must not serve (TTL 1, bad header checksum, oversize for a small
/// MTU, tagged, other source MAC, other port, FIN and RST, broadcast destination).
fn shortcut_frame(kind: usize, variant: usize) -> (PortId, Vec<u8>) {
    let flags = match variant {
        7 => 0x01 | ACK,
        8 => 0x04,
        _ => ACK,
    };
    let payload = if variant == 3 {
        vec![7u8; 1000]
    } else {
        vec![7u8; 6]
    };
    let (port, frame) = match kind {
        0 => (
            PORT_A,
            S::from_endpoint(S::A, &tcp(S::A, 40000, S::REMOTE, 80, flags, &payload)),
        ),
        1 => (
            UPLINK,
            S::from_outside(&tcp(S::REMOTE, 80, S::UP, 40000, flags, &payload)),
        ),
        2 => (
            PORT_A,
            S::from_endpoint(S::A, &udp(S::A, 5353, S::REMOTE, 53, &payload)),
        ),
        3 => (
            UPLINK,
            S::from_outside(&udp(S::REMOTE, 53, S::UP, 5353, &payload)),
        ),
        4 => (
            UPLINK,
            S::from_outside(&tcp(S::REMOTE, 50000, S::UP, 8080, flags, &payload)),
        ),
        5 => (
            PORT_B,
            S::from_endpoint(S::B, &tcp(S::B, 80, S::REMOTE, 50000, flags, &payload)),
        ),
        6 => (
            PORT_A,
            S::from_endpoint(S::A, &tcp(S::A, 41000, S::UP, 8080, flags, &payload)),
        ),
        _ => {
            let mac = MacAddr([0x02, 0, 0, 0, 0, 0xf0 | (variant as u8 & 1)]);
            return (UPLINK, arp_reply(mac, S::HOP, S::UP_MAC, S::UP));
        }
    };
    match variant {
        1 => (port, with_ttl(frame, 1)),
        2 => {
            let mut f = frame;
            f[24] ^= 0x5a;
            (port, f)
        }
        4 => (port, tagged(&frame, 10)),
        5 => {
            let mut f = frame;
            f[11] ^= 0x01;
            (port, f)
        }
        6 => (if port == PORT_A { PORT_B } else { PORT_A }, frame),
        9 => {
            let mut f = frame;
            f[..6].copy_from_slice(&MacAddr::BROADCAST.0);
            (port, f)
        }
        _ => (port, frame),
    }
}

/// Configuration `n` of a shortcut session: the scenario, without published ports, with the
/// network internal, or with a 576-byte uplink MTU.
fn shortcut_config(n: usize) -> crate::config::Config {
    let mut c = S::new().config;
    match n % 4 {
        1 => c.forwards.clear(),
        2 => c.networks[0].internal = true,
        3 => {
            if let Some(u) = c.uplink.as_mut() {
                u.mtu = 576;
            }
        }
        _ => {}
    }
    c
}

/// Runs `steps` through a dataplane staging its lookups in every batch (`true`: shortcuts are
/// taken) or none, and returns what came out, the flows left, the drop counters and how many
/// frames took a shortcut.
fn shortcut_session(staging: bool, steps: &[Step]) -> (Outcome, u64) {
    let mut dp = Dataplane::new(&S::new().config).unwrap();
    dp.set_staging(staging);
    let mut w = dp.worker();
    learn_next_hop(&mut w);
    let mut out = Vec::new();
    let mut batch = Frames::new();
    let mut now = T0;
    for step in steps.iter().copied().chain([Step::Flush]) {
        match step {
            Step::Frame(kind, variant) => {
                let (port, frame) = shortcut_frame(kind, variant);
                batch.push(port, &frame);
            }
            Step::Flush => {
                out.push(batch.run(&mut w, now));
                batch = Frames::new();
                now = Millis(now.0 + 300);
            }
            Step::Configure(n) => w.dataplane().apply(&shortcut_config(n)).unwrap(),
        }
    }
    let drops = R::ALL.iter().map(|r| w.counters().drops(*r)).collect();
    let flows = w.dataplane().conntrack().len();
    ((out, flows, drops), w.counters().shortcuts())
}

/// Batches of plain frames (variant 0) of the given kinds, each batch run in turn.
fn plain_batches(batches: &[&[usize]]) -> Vec<Step> {
    batches
        .iter()
        .flat_map(|b| b.iter().map(|&k| Step::Frame(k, 0)).chain([Step::Flush]))
        .collect()
}

#[test]
fn established_flows_take_their_shortcut_in_both_directions() {
    let steps = plain_batches(&[&[0, 4], &[1, 5], &[0, 1, 4, 5]]);
    let (fast, taken) = shortcut_session(true, &steps);
    let (full, never) = shortcut_session(false, &steps);
    // The first packet of each direction decides; every later one takes the shortcut.
    assert_eq!((taken, never), (4, 0));
    assert_eq!(fast, full);
    let last = &fast.0[2];
    assert_eq!(
        last.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        [
            Verdict::Forward(UPLINK),
            Verdict::Forward(PORT_A),
            Verdict::Forward(PORT_B),
            Verdict::Forward(UPLINK)
        ]
    );
    assert!(last.iter().all(|(_, f)| checksums_valid(f)));
    assert_eq!(&last[0].1[..6], &S::HOP_MAC.0, "to the next hop");
    assert_eq!(
        &last[2].1[..6],
        &S::mac(S::B).0,
        "to the published endpoint"
    );
}

#[test]
fn batches_stage_after_a_batch_that_routed() {
    let s = S::new();
    let mut w = worker_for(&s);
    learn_next_hop(&mut w);
    let out = S::from_endpoint(S::A, &tcp(S::A, 40000, S::REMOTE, 80, ACK, b"x"));
    let bridged = eth(
        S::mac(S::B),
        S::mac(S::A),
        0x0800,
        &udp(S::A, 1, S::B, 2, b"x"),
    );
    let mut run = |frame: &[u8]| {
        Frames::new().push(PORT_A, frame).run(&mut w, T0);
        w.counters().shortcuts()
    };
    // The flow's first packet decides (the ARP batch before it routed nothing), the second
    // comes after a routed batch: staged, shortcut. After a bridged batch nothing is staged.
    assert_eq!(
        [run(&out), run(&out), run(&bridged), run(&out), run(&out)],
        [0, 1, 1, 1, 2]
    );
}

#[test]
fn a_moved_next_hop_or_a_new_configuration_retires_shortcuts() {
    let mut steps = plain_batches(&[&[0], &[0, 7], &[0]]);
    steps.push(Step::Configure(2));
    steps.extend(plain_batches(&[&[0]]));
    let ((batches, _, _), taken) = shortcut_session(true, &steps);
    assert_eq!(taken, 1, "only the packet before the ARP reply");
    assert_eq!(
        &batches[2][0].1[..6],
        &[0x02, 0, 0, 0, 0, 0xf0],
        "the new next hop's MAC"
    );
    assert_eq!(batches[3][0].0, Verdict::Drop(R::NoRoute), "internal now");
}

/// Builds fuzz input records from (port, frame) pairs.
fn records(items: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut v = Vec::new();
    for (p, f) in items {
        v.push(*p);
        v.extend_from_slice(&(f.len() as u16).to_be_bytes());
        v.extend_from_slice(f);
    }
    v
}

proptest! {
    /// The fuzz target itself (`fuzz/fuzz_targets/pipeline.rs`) on arbitrary input.
    #[test]
    fn fuzz_target_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        fuzz_frames(&data);
    }

    /// The fuzz target on sequences of mutated valid frames (flows, replies, errors).
    #[test]
    fn fuzz_target_on_mutated_sessions(flips in proptest::collection::vec((0usize..7, 0usize..90, any::<u8>()), 0..6)) {
        let mut items = vec![
            (0u8, arp_reply(S::HOP_MAC, S::HOP, S::UP_MAC, S::UP)),
            (1, S::from_endpoint(S::A, &tcp(S::A, 40000, S::REMOTE, 80, SYN, b"x"))),
            (0, S::from_outside(&tcp(S::REMOTE, 80, S::UP, 40000, SYN | ACK, b""))),
            (1, S::from_endpoint(S::A, &icmp_echo(S::A, S::REMOTE, true, 5, 1))),
            (0, S::from_outside(&tcp(S::REMOTE, 9, S::UP, 8080, SYN, b""))),
            (2, S::from_endpoint(S::B, &tcp(S::B, 80, S::REMOTE, 9, SYN | ACK, b""))),
            (3, tagged(&eth(MacAddr::BROADCAST, MacAddr([2, 5, 5, 5, 5, 5]), 0x0806, &[0u8; 28]), 10)),
        ];
        for (i, at, val) in flips {
            let f = &mut items[i].1;
            if at < f.len() { f[at] ^= val; }
        }
        fuzz_frames(&records(&items));
    }

    /// Shortcuts change nothing: any session of established and perturbed packets, ARP
    /// replies and configuration changes gives the same frames, verdicts, flows and counters
    /// with them as through the full pipeline alone.
    #[test]
    fn shortcuts_change_nothing(steps in proptest::collection::vec(
        prop_oneof![
            6 => (0usize..8, 0usize..10).prop_map(|(k, v)| Step::Frame(k, v)),
            2 => Just(Step::Flush),
            1 => (0usize..4).prop_map(Step::Configure),
        ],
        0..40,
    )) {
        let (fast, _) = shortcut_session(true, &steps);
        let (full, never) = shortcut_session(false, &steps);
        prop_assert_eq!(never, 0);
        prop_assert_eq!(fast, full);
    }

    /// The fuzz target's property: any bytes on any port end in a verdict, never a panic.
    #[test]
    fn arbitrary_frames_never_panic(port in 0u16..6, bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let s = S::new();
        let mut w = worker_for(&s);
        let (v, _) = run_one(&mut w, PortId(port), &bytes, T0);
        prop_assert_ne!(v, Verdict::Pending);
    }

    /// Mutations of valid frames (the interesting inputs) never panic either.
    #[test]
    fn mutated_frames_never_panic(kind in 0usize..4, at in 0usize..80, val in any::<u8>(), cut in 0usize..90) {
        let s = S::new();
        let mut w = worker_for(&s);
        learn_next_hop(&mut w);
        let (port, mut f) = match kind {
            0 => (PORT_A, S::from_endpoint(S::A, &tcp(S::A, 40000, S::REMOTE, 80, SYN, b"data"))),
            1 => (UPLINK, S::from_outside(&tcp(S::REMOTE, 5, S::UP, 8080, SYN, b"data"))),
            2 => (PORT_A, arp_request(S::mac(S::A), S::A, S::GW)),
            _ => (UPLINK, S::from_outside(&ipv4(S::REMOTE, S::UP, 1, 64, &[3, 3, 0, 0, 0, 0, 0, 0, 0x45, 0, 0, 28]))),
        };
        if at < f.len() { f[at] = val; }
        f.truncate(f.len().saturating_sub(cut));
        let (v, _) = run_one(&mut w, port, &f, T0);
        prop_assert_ne!(v, Verdict::Pending);
    }
}

#[test]
fn stats_sum_ports_drops_and_tables() {
    let s = S::new();
    let dp = Dataplane::new(&s.config).unwrap();
    let mut w1 = dp.worker();
    let mut w2 = dp.worker();
    let f = eth(
        S::mac(S::B),
        S::mac(S::A),
        0x0800,
        &udp(S::A, 1, S::B, 2, b"x"),
    );
    run_one(&mut w1, PORT_A, &f, T0);
    run_one(&mut w2, PORT_A, &f, T0);
    run_one(&mut w2, PORT_A, &[0u8; 3], T0);
    let st = dp.stats();
    let a = st.ports.iter().find(|p| p.id == PORT_A).unwrap();
    assert_eq!(a.stats.rx_packets, 3);
    assert_eq!(st.drops.get("malformed"), Some(&1));
    assert_eq!(
        st.fdb_entries.get("bridge"),
        Some(&2),
        "A and B are static entries"
    );
    assert_eq!(st.conntrack_flows, 0);
    let json = serde_json::to_value(&st).unwrap();
    assert_eq!(json["ports"][1]["rx_packets"], 3);
}

#[test]
fn icmp_errors_are_translated_outbound() {
    // A remote sends to the published UDP port; B has nothing listening and answers port
    // unreachable, quoting what it received. The remote must see the error come from the
    // uplink address, quoting the packet it sent (to UP:8080).
    let s = S::new();
    let mut w = worker_for(&s);
    learn_next_hop(&mut w);
    let q = S::from_outside(&udp(S::REMOTE, 4444, S::UP, 8080, b"hello"));
    let (v, at_b) = run_one(&mut w, UPLINK, &q, T0);
    assert_eq!(v, Verdict::Forward(PORT_B));
    let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&at_b[14..14 + 28]);
    let c = crate::wire::checksum::internet_checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let err = S::from_endpoint(S::B, &ipv4(S::B, S::REMOTE, 1, 64, &icmp));
    let (v, out) = run_one(&mut w, PORT_B, &err, T0);
    assert_eq!(v, Verdict::Forward(UPLINK));
    let ip = ip_of(&out);
    assert_eq!((ip.src, ip.dst), (S::UP, S::REMOTE));
    let quoted = flow::flow_of(&out, &ip).unwrap().tuple;
    assert_eq!(
        (quoted.src, quoted.src_port, quoted.dst, quoted.dst_port),
        (S::REMOTE, 4444, S::UP, 8080)
    );
    assert!(checksums_valid(&out));
    // An error about no known flow is a counted drop, not a translation.
    let mut stray = icmp.clone();
    stray[8 + 20] ^= 0x40;
    let c = crate::wire::checksum::internet_checksum(&{
        let mut z = stray.clone();
        z[2] = 0;
        z[3] = 0;
        z
    });
    stray[2..4].copy_from_slice(&c.to_be_bytes());
    let err = S::from_endpoint(S::B, &ipv4(S::B, S::REMOTE, 1, 64, &stray));
    assert_eq!(
        run_one(&mut w, PORT_B, &err, T0).0,
        Verdict::Drop(R::NoFlow)
    );
}

#[test]
fn stats_count_drops_per_port_and_network() {
    let s = S::new();
    let dp = Dataplane::new(&s.config).unwrap();
    let mut w = dp.worker();
    run_one(&mut w, PORT_A, &[0u8; 3], T0);
    run_one(&mut w, PORT_C, &[0u8; 3], T0);
    let spoofed = eth(S::mac(S::B), S::mac(S::B), 0x88b5, &[0u8; 46]);
    assert_eq!(
        run_one(&mut w, PORT_A, &spoofed, T0).0,
        Verdict::Drop(R::SpoofedMac)
    );
    let st = dp.stats();
    let a = st.ports.iter().find(|p| p.id == PORT_A).unwrap();
    assert_eq!(a.network, Some(crate::frame::NetworkId(0)));
    assert_eq!(a.drops.get("malformed"), Some(&1));
    assert_eq!(a.drops.get("spoofed_mac"), Some(&1));
    let b = st.ports.iter().find(|p| p.id == PORT_B).unwrap();
    assert!(b.drops.is_empty());
    let bridge = &st.networks[0];
    assert_eq!(
        (bridge.name.as_str(), bridge.traffic.rx_packets),
        ("bridge", 2)
    );
    assert_eq!(bridge.drops.get("malformed"), Some(&1));
    assert_eq!(bridge.fdb_entries, 2);
    assert_eq!(bridge.conntrack_flows, None);
    let other = &st.networks[1];
    assert_eq!(
        (other.name.as_str(), other.traffic.rx_packets),
        ("other", 1)
    );
    assert_eq!(other.drops.get("malformed"), Some(&1));
    assert_eq!(st.drops.get("malformed"), Some(&2));
    let json = serde_json::to_value(&st).unwrap();
    assert_eq!(json["networks"][0]["rx_packets"], 2);
    assert_eq!(json["ports"][1]["drops"]["spoofed_mac"], 1);
    assert!(json["networks"][0].get("conntrack_flows").is_none());
}

#[test]
fn conntrack_listing_shows_tuples_state_expiry_and_network() {
    let s = S::new();
    let dp = Dataplane::new(&s.config).unwrap();
    let mut w = dp.worker();
    learn_next_hop(&mut w);
    let syn = S::from_endpoint(S::A, &tcp(S::A, 40000, S::REMOTE, 443, SYN, b""));
    assert_eq!(
        run_one(&mut w, PORT_A, &syn, T0).0,
        Verdict::Forward(UPLINK)
    );
    let q = S::from_endpoint(S::C, &udp(S::C, 5353, S::REMOTE, 53, b"q"));
    let (v, out) = run_one(&mut w, PORT_C, &q, T0);
    assert_eq!(v, Verdict::Forward(UPLINK));
    let nat_port = tuple_of(&out).src_port;
    let inbound = S::from_outside(&udp(S::REMOTE, 4444, S::UP, 8080, b"in"));
    assert_eq!(
        run_one(&mut w, UPLINK, &inbound, T0).0,
        Verdict::Forward(PORT_B)
    );

    let later = Millis(T0.0 + 10_500);
    let list = dp.conntrack_entries(later);
    assert_eq!(list.len(), 3);
    let sock = |ip: Ipv4Addr, port: u16| std::net::SocketAddrV4::new(ip, port);
    let (bridge, other) = (crate::frame::NetworkId(0), crate::frame::NetworkId(1));
    // Sorted by network: the two flows of "bridge" (UDP inbound sorts after TCP), then C's.
    let t = &list[0];
    assert_eq!(t.protocol, crate::config::L4Proto::Tcp);
    assert_eq!(
        (t.original.src, t.original.dst),
        (sock(S::A, 40000), sock(S::REMOTE, 443))
    );
    assert_eq!(
        (t.reply.src, t.reply.dst.ip()),
        (sock(S::REMOTE, 443), &S::UP)
    );
    assert_eq!(
        (t.state, t.replied, t.network),
        ("SYN_SENT", false, Some(bridge))
    );
    assert_eq!(
        t.expires_in_secs,
        120 - 10,
        "SYN_SENT lasts 120 s, 10.5 s passed"
    );
    let i = &list[1];
    assert_eq!(
        (i.original.src, i.original.dst),
        (sock(S::REMOTE, 4444), sock(S::UP, 8080))
    );
    assert_eq!(
        (i.reply.src, i.reply.dst),
        (sock(S::B, 80), sock(S::REMOTE, 4444))
    );
    assert_eq!(
        i.network,
        Some(bridge),
        "a published port's flow is its target's"
    );
    let u = &list[2];
    assert_eq!(
        (u.original.src, u.reply.dst),
        (sock(S::C, 5353), sock(S::UP, nat_port))
    );
    assert_eq!(
        (u.state, u.network, u.expires_in_secs),
        ("UNREPLIED", Some(other), 20)
    );
    let json = serde_json::to_value(&list[2]).unwrap();
    assert_eq!(json["protocol"], "udp");
    assert_eq!(json["original"]["src"], "172.18.0.2:5353");
    assert_eq!(json["network"], 1);

    let st = dp.stats_with_flows();
    assert_eq!(st.conntrack_flows, 3);
    let flows: Vec<_> = st.networks.iter().map(|n| n.conntrack_flows).collect();
    assert_eq!(flows, vec![Some(2), Some(1)]);
    assert!(dp
        .conntrack_entries(Millis(T0.0 + 500_000))
        .iter()
        .all(|e| e.expires_in_secs == 0));
}

#[test]
fn fdb_listing_covers_every_network_with_static_and_learned_entries() {
    let s = S::new();
    let dp = Dataplane::new(&s.config).unwrap();
    let mut w = dp.worker();
    let learned = MacAddr([0x02, 0, 0, 0, 0x33, 0x44]);
    let frame = eth(MacAddr::BROADCAST, learned, 0x88b5, &[0u8; 46]);
    run_one(&mut w, TRUNK, &frame, T0);
    let list = dp.fdb_entries(Millis(T0.0 + 7_000));
    let rows: Vec<_> = list
        .iter()
        .map(|e| {
            (
                e.network.0,
                e.entry.mac,
                e.entry.port,
                e.entry.is_static,
                e.entry.idle_secs,
            )
        })
        .collect();
    let mut want = vec![
        (0, S::mac(S::A), PORT_A, true, 0),
        (0, S::mac(S::B), PORT_B, true, 0),
        (0, learned, TRUNK, false, 7),
        (1, S::mac(S::C), PORT_C, true, 0),
    ];
    want[..3].sort_by_key(|r| r.1);
    assert_eq!(rows, want);
    let json = serde_json::to_value(list[3]).unwrap();
    assert_eq!(json["network"], 1);
    assert_eq!(json["vlan"], 0);
    assert_eq!(json["port"], PORT_C.0);
    assert_eq!(json["is_static"], true);
}
