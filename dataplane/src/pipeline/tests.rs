//! Scenario tests that cross stages (a network with its own uplink, bad input on every path,
//! mixed batches, the fuzz target), and the helpers every stage's scenario tests share
//! (`use crate::pipeline::tests::*`): each runs frames through `Worker::process`.

pub(super) use std::net::Ipv4Addr;

pub(super) use proptest::prelude::*;

pub(super) use super::flow;
pub(super) use crate::counters::DropReason as R;
pub(super) use crate::frame::{PortId, Verdict};
pub(super) use crate::pipeline::{Dataplane, Worker};
pub(super) use crate::testkit::*;
pub(super) use crate::time::Millis;
pub(super) use crate::wire::MacAddr;

pub(super) type S = Scenario;

pub(super) const T0: Millis = Millis(1_000_000);

pub(super) fn worker_for(s: &Scenario) -> Worker {
    Dataplane::new(&s.config).unwrap().worker()
}

pub(super) fn ip_of(frame: &[u8]) -> flow::Ipv4Info {
    flow::parse_ipv4(frame, 14).unwrap()
}

pub(super) fn tuple_of(frame: &[u8]) -> crate::nat::Tuple {
    flow::flow_of(frame, &ip_of(frame)).unwrap().tuple
}

pub(super) fn checksums_valid(frame: &[u8]) -> bool {
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

/// A UDP frame from endpoint A to endpoint B, bridged.
pub(super) fn bridged_a_to_b() -> Vec<u8> {
    eth(
        S::mac(S::B),
        S::mac(S::A),
        0x0800,
        &udp(S::A, 1, S::B, 2, b"x"),
    )
}

/// Teaches the uplink the next hop's MAC, as an ARP reply from it would.
pub(super) fn learn_next_hop(w: &mut Worker) {
    let reply = arp_reply(S::HOP_MAC, S::HOP, S::UP_MAC, S::UP);
    assert_eq!(run_one(w, UPLINK, &reply, T0).0, Verdict::Consumed);
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
        host_ip6: None,
        host_ports: PortRange::single(9090),
        network: crate::frame::NetworkId(1),
        target_ip: Some(S::C),
        target_ip6: None,
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
fn one_batch_mixes_paths() {
    let s = S::new();
    let mut w = worker_for(&s);
    learn_next_hop(&mut w);
    let out = Frames::new()
        .push(PORT_A, &arp_request(S::mac(S::A), S::A, S::GW))
        .push(PORT_A, &bridged_a_to_b())
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

/// Builds fuzz input records from (port, frame) pairs.
pub(super) fn records(items: &[(u8, Vec<u8>)]) -> Vec<u8> {
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
