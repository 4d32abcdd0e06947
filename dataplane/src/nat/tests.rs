use std::collections::HashSet;
use std::net::Ipv4Addr;

use proptest::prelude::*;

use super::tcp::{ACK, FIN, RST, SYN};
use super::*;
use crate::config::{L4Proto, NatConfig, PortRange};

const GW: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const T0: Millis = Millis(1_000_000);

fn table(first: u16, last: u16, max_flows: usize) -> Conntrack {
    let cfg = NatConfig {
        ports: PortRange { first, last },
        max_flows,
    };
    Conntrack::new(&cfg, Timeouts::default())
}

fn default_table() -> Conntrack {
    Conntrack::new(&NatConfig::default(), Timeouts::default())
}

fn tup(proto: L4Proto, src: [u8; 4], src_port: u16, dst: [u8; 4], dst_port: u16) -> Tuple {
    Tuple {
        proto,
        src: src.into(),
        src_port,
        dst: dst.into(),
        dst_port,
    }
}

fn masq() -> NatAction {
    NatAction {
        snat: Some(GW),
        dnat: None,
    }
}

fn at(secs: u32) -> Millis {
    T0.plus_secs(secs)
}

fn info(ct: &Conntrack, id: FlowId) -> FlowInfo {
    ct.flows().find(|f| f.id == id).expect("flow is listed")
}

/// Checks both lookups of a live flow against its listing: translate then reverse is the
/// identity.
fn assert_round_trip(ct: &Conntrack, f: &FlowInfo) {
    let o = ct.lookup(&f.original).expect("original tuple is found");
    assert_eq!((o.flow, o.dir), (f.id, Dir::Original));
    assert_eq!(o.rewrite, f.reply.reversed());
    let r = ct.lookup(&f.reply).expect("reply tuple is found");
    if f.reply != f.original {
        assert_eq!((r.flow, r.dir), (f.id, Dir::Reply));
        assert_eq!(r.rewrite, f.original.reversed());
    }
}

#[test]
fn flow_is_two_whole_cache_lines() {
    assert_eq!(std::mem::size_of::<super::conntrack::Flow>(), 128);
    assert_eq!(std::mem::align_of::<super::conntrack::Flow>(), 64);
}

/// Heap bytes per flow after creating `n` UDP flows.
fn bytes_per_flow(n: u32) -> usize {
    let mut ct = table(32768, 60999, 1 << 20);
    for i in 0..n {
        let [_, a, b, c] = i.to_be_bytes();
        let t = tup(L4Proto::Udp, [10, a, b, c], 40000, [1, a, b, c], 53);
        ct.create(&t, masq(), T0).unwrap();
    }
    ct.memory_bytes() / n as usize
}

#[test]
fn memory_stays_under_200_bytes_per_flow_with_a_full_slab() {
    // As at 1M flows (2^20 slab entries): the slab just fits, the index is half full.
    let per_flow = bytes_per_flow(1 << 17);
    println!("bytes per v4 flow: {per_flow}");
    assert!(per_flow <= 200, "{per_flow} bytes per flow");
}

#[test]
fn memory_at_the_worst_growth_point_is_bounded() {
    // Just past a power of two: the slab has just doubled and the index is a quarter full.
    let per_flow = bytes_per_flow((1 << 17) + 1);
    assert!(per_flow <= 2 * 128 + 64 + 8, "{per_flow} bytes per flow");
}

#[test]
fn snat_keeps_an_in_range_port_and_replies_map_back() {
    let mut ct = default_table();
    let orig = tup(L4Proto::Tcp, [10, 0, 0, 2], 40000, [1, 1, 1, 1], 80);
    let hit = ct.create(&orig, masq(), T0).unwrap();
    assert_eq!(hit.dir, Dir::Original);
    assert_eq!(
        hit.rewrite,
        tup(L4Proto::Tcp, [203, 0, 113, 1], 40000, [1, 1, 1, 1], 80)
    );
    assert_eq!(ct.lookup(&orig), Some(hit));
    let reply = ct.lookup(&hit.rewrite.reversed()).unwrap();
    assert_eq!(reply.flow, hit.flow);
    assert_eq!(reply.dir, Dir::Reply);
    assert_eq!(reply.rewrite.reversed(), orig);
    assert_eq!(ct.lookup(&orig.reversed()), None);
    assert_eq!(ct.len(), 1);
    ct.check();
}

#[test]
fn snat_replaces_out_of_range_or_taken_ports_per_destination() {
    let mut ct = default_table();
    let range = NatConfig::default().ports;
    let a = tup(L4Proto::Udp, [10, 0, 0, 2], 1000, [1, 1, 1, 1], 53);
    let pa = ct.create(&a, masq(), T0).unwrap().rewrite.src_port;
    assert!(range.contains(pa));
    let b = tup(L4Proto::Udp, [10, 0, 0, 2], 40000, [1, 1, 1, 1], 53);
    let c = tup(L4Proto::Udp, [10, 0, 0, 3], 40000, [1, 1, 1, 1], 53);
    let d = tup(L4Proto::Udp, [10, 0, 0, 3], 40000, [9, 9, 9, 9], 53);
    assert_eq!(ct.create(&b, masq(), T0).unwrap().rewrite.src_port, 40000);
    let pc = ct.create(&c, masq(), T0).unwrap().rewrite.src_port;
    assert!(range.contains(pc) && pc != 40000 && pc != pa);
    // Endpoint-dependent: another destination may reuse the same external port.
    assert_eq!(ct.create(&d, masq(), T0).unwrap().rewrite.src_port, 40000);
    ct.check();
}

#[test]
fn icmp_echo_ids_are_allocated_from_the_range() {
    let mut ct = table(50000, 50001, 16);
    let e = tup(L4Proto::Icmp, [10, 0, 0, 2], 7, [1, 1, 1, 1], 7);
    let hit = ct.create(&e, masq(), T0).unwrap();
    let id = hit.rewrite.src_port;
    assert!((50000..=50001).contains(&id));
    assert_eq!(hit.rewrite.dst_port, id);
    let back = ct.lookup(&hit.rewrite.reversed()).unwrap();
    assert_eq!(back.dir, Dir::Reply);
    assert_eq!((back.rewrite.src_port, back.rewrite.dst_port), (7, 7));
    assert_eq!(back.rewrite.dst, e.src);
    let f = info(&ct, hit.flow);
    assert_eq!((f.state, f.expires), ("UNREPLIED", at(30)));
    let e2 = tup(L4Proto::Icmp, [10, 0, 0, 3], 7, [1, 1, 1, 1], 7);
    let e3 = tup(L4Proto::Icmp, [10, 0, 0, 4], 7, [1, 1, 1, 1], 7);
    assert_ne!(ct.create(&e2, masq(), T0).unwrap().rewrite.src_port, id);
    assert_eq!(ct.create(&e3, masq(), T0), Err(NatError::PortsExhausted));
    ct.check();
}

#[test]
fn dnat_only_allocates_nothing_and_reply_clashes_are_refused() {
    let mut ct = table(40000, 40000, 16);
    let publish = NatAction {
        snat: None,
        dnat: Some((Ipv4Addr::new(172, 17, 0, 2), 80)),
    };
    let a = tup(L4Proto::Tcp, [8, 8, 8, 8], 5555, [203, 0, 113, 1], 8080);
    let hit = ct.create(&a, publish, T0).unwrap();
    assert_eq!(
        hit.rewrite,
        tup(L4Proto::Tcp, [8, 8, 8, 8], 5555, [172, 17, 0, 2], 80)
    );
    // The single NAT port is still free: a masqueraded flow gets it.
    let m = tup(L4Proto::Tcp, [172, 17, 0, 2], 1, [1, 1, 1, 1], 80);
    assert_eq!(ct.create(&m, masq(), T0).unwrap().rewrite.src_port, 40000);
    // Another published port to the same endpoint port from the same client port: replies
    // would be indistinguishable.
    let b = tup(L4Proto::Tcp, [8, 8, 8, 8], 5555, [203, 0, 113, 1], 8081);
    assert_eq!(ct.create(&b, publish, T0), Err(NatError::Clash));
    ct.check();
}

#[test]
fn hairpin_rewrites_both_ends() {
    let mut ct = default_table();
    let gw = Ipv4Addr::new(172, 17, 0, 1);
    let hairpin = NatAction {
        snat: Some(gw),
        dnat: Some((Ipv4Addr::new(172, 17, 0, 2), 80)),
    };
    let orig = tup(L4Proto::Tcp, [172, 17, 0, 3], 40000, [203, 0, 113, 1], 8080);
    let hit = ct.create(&orig, hairpin, T0).unwrap();
    assert_eq!(
        hit.rewrite,
        tup(L4Proto::Tcp, [172, 17, 0, 1], 40000, [172, 17, 0, 2], 80)
    );
    let reply = ct
        .lookup(&tup(
            L4Proto::Tcp,
            [172, 17, 0, 2],
            80,
            [172, 17, 0, 1],
            40000,
        ))
        .unwrap();
    assert_eq!(reply.dir, Dir::Reply);
    assert_eq!(
        reply.rewrite,
        tup(L4Proto::Tcp, [203, 0, 113, 1], 8080, [172, 17, 0, 3], 40000)
    );
    ct.check();
}

#[test]
fn create_after_miss_makes_the_flow_create_for_makes() {
    let owner = Owner {
        port: crate::frame::PortId(3),
        max_flows: 8,
        max_ports_per_destination: 4,
    };
    let (mut a, mut b) = (table(40000, 40100, 16), table(40000, 40100, 16));
    for sport in [1000, 40007, 40007, 2000] {
        let t = tup(L4Proto::Tcp, [10, 0, 0, 2], sport, [1, 1, 1, 1], 80);
        let made = if a.lookup(&t).is_none() {
            a.create_after_miss(&t, masq(), T0, &owner)
        } else {
            Err(NatError::Exists)
        };
        assert_eq!(made, b.create_for(&t, masq(), T0, &owner));
    }
    assert_eq!(a.flows().collect::<Vec<_>>(), b.flows().collect::<Vec<_>>());
    assert_eq!(a.owned_by(owner.port), 3);
    a.check();
}

#[test]
fn a_miss_holds_until_a_flow_of_its_tag_is_added() {
    let mut ct = table(40000, 40100, 16);
    let t = tup(L4Proto::Udp, [10, 0, 0, 2], 5000, [1, 1, 1, 1], 53);
    ct.mark_inserts();
    assert!(ct.still_misses(&Probe::new(&t)));
    let hit = ct.create(&t, masq(), T0).unwrap();
    assert!(!ct.still_misses(&Probe::new(&t)));
    assert!(!ct.still_misses(&Probe::new(&hit.rewrite.reversed())));
    ct.remove(hit.flow);
    assert!(
        !ct.still_misses(&Probe::new(&t)),
        "removals do not clear the record"
    );
    ct.mark_inserts();
    assert!(ct.still_misses(&Probe::new(&t)));
}

#[test]
fn exists_and_table_full() {
    let mut ct = table(40000, 40100, 2);
    let a = tup(L4Proto::Udp, [10, 0, 0, 2], 40000, [1, 1, 1, 1], 53);
    let ha = ct.create(&a, masq(), T0).unwrap();
    assert_eq!(ct.create(&a, masq(), T0), Err(NatError::Exists));
    assert_eq!(
        ct.create(&ha.rewrite.reversed(), NatAction::default(), T0),
        Err(NatError::Exists)
    );
    let b = tup(L4Proto::Udp, [10, 0, 0, 3], 40000, [1, 1, 1, 1], 53);
    ct.create(&b, masq(), T0).unwrap();
    let c = tup(L4Proto::Udp, [10, 0, 0, 4], 40000, [1, 1, 1, 1], 53);
    assert_eq!(ct.create(&c, masq(), T0), Err(NatError::TableFull));
    ct.remove(ha.flow);
    assert_eq!(ct.lookup(&a), None);
    assert_eq!(ct.len(), 1);
    ct.create(&c, masq(), T0).unwrap();
    ct.check();
}

#[test]
fn expiry_frees_the_port_for_reuse() {
    let mut ct = table(40000, 40000, 16);
    let a = tup(L4Proto::Udp, [10, 0, 0, 2], 1, [1, 1, 1, 1], 53);
    let b = tup(L4Proto::Udp, [10, 0, 0, 3], 1, [1, 1, 1, 1], 53);
    assert_eq!(ct.create(&a, masq(), T0).unwrap().rewrite.src_port, 40000);
    assert_eq!(ct.create(&b, masq(), T0), Err(NatError::PortsExhausted));
    assert_eq!(ct.expire(at(29)), 0);
    assert_eq!(ct.create(&b, masq(), at(29)), Err(NatError::PortsExhausted));
    assert_eq!(ct.expire(at(31)), 1);
    assert!(ct.is_empty());
    assert_eq!(ct.lookup(&a), None);
    assert_eq!(
        ct.create(&b, masq(), at(31)).unwrap().rewrite.src_port,
        40000
    );
    ct.check();
}

#[test]
fn expiry_visits_only_due_flows() {
    let mut ct = default_table();
    for i in 0..10_000u32 {
        let [_, _, h, l] = i.to_be_bytes();
        let t = tup(L4Proto::Udp, [10, 1, h, l], 5000, [1, 1, 1, 1], 53);
        let hit = ct.create(&t, masq(), T0).unwrap();
        ct.update(hit.flow, Dir::Reply, 0, T0);
    }
    // Refreshed to 120 s lazily: still in the 30 s slot, re-slotted once when it fires.
    assert_eq!(ct.expire(at(31)), 0);
    assert_eq!(ct.timer_visits(), 10_000);
    for i in 0..10u16 {
        let t = tup(L4Proto::Udp, [10, 2, 0, 1], 5000 + i, [1, 1, 1, 1], 53);
        ct.create(&t, masq(), at(40)).unwrap();
    }
    assert_eq!(ct.expire(at(60)), 0);
    assert_eq!(ct.expire(at(71)), 10);
    assert_eq!(ct.timer_visits(), 10_010);
    assert_eq!(ct.expire(at(119)), 0);
    assert_eq!(ct.timer_visits(), 10_010);
    assert_eq!(ct.expire(at(121)), 10_000);
    assert_eq!(ct.timer_visits(), 20_010);
    assert!(ct.is_empty());
    ct.check();
}

#[test]
fn tcp_states_set_their_timeouts() {
    let mut ct = default_table();
    let orig = tup(L4Proto::Tcp, [10, 0, 0, 2], 40000, [1, 1, 1, 1], 80);
    let id = ct.create(&orig, masq(), T0).unwrap().flow;
    let steps: [(Dir, u8, &str, u32); 7] = [
        (Dir::Original, SYN, "SYN_SENT", 120),
        (Dir::Reply, SYN | ACK, "SYN_RECV", 60),
        (Dir::Original, ACK, "ESTABLISHED", 432_000),
        (Dir::Original, FIN | ACK, "FIN_WAIT", 120),
        (Dir::Reply, ACK, "CLOSE_WAIT", 60),
        (Dir::Reply, FIN | ACK, "LAST_ACK", 30),
        (Dir::Original, ACK, "TIME_WAIT", 120),
    ];
    for (n, (dir, flags, name, secs)) in steps.into_iter().enumerate() {
        let now = at(n as u32);
        ct.update(id, dir, flags, now);
        let f = info(&ct, id);
        assert_eq!((f.state, f.expires), (name, now.plus_secs(secs)));
        ct.check();
    }
    assert!(info(&ct, id).replied);
    assert_eq!(ct.expire(at(6 + 119)), 0);
    assert_eq!(ct.expire(at(6 + 121)), 1);
}

#[test]
fn rst_frees_an_established_flow_ten_seconds_later() {
    let mut ct = default_table();
    let orig = tup(L4Proto::Tcp, [10, 0, 0, 2], 40000, [1, 1, 1, 1], 80);
    let id = ct.create(&orig, masq(), T0).unwrap().flow;
    ct.update(id, Dir::Original, SYN, T0);
    ct.update(id, Dir::Reply, SYN | ACK, T0);
    ct.update(id, Dir::Original, ACK, T0);
    assert_eq!(info(&ct, id).expires, at(432_000));
    ct.update(id, Dir::Reply, RST | ACK, at(100));
    let f = info(&ct, id);
    assert_eq!((f.state, f.expires), ("CLOSE", at(110)));
    ct.check();
    assert_eq!(ct.expire(at(109)), 0);
    assert_eq!(ct.expire(at(111)), 1);
    assert!(ct.is_empty());
}

#[test]
fn invalid_tcp_segments_do_not_refresh() {
    let mut ct = default_table();
    let orig = tup(L4Proto::Tcp, [10, 0, 0, 2], 40000, [1, 1, 1, 1], 80);
    let id = ct.create(&orig, masq(), T0).unwrap().flow;
    ct.update(id, Dir::Original, SYN, T0);
    ct.update(id, Dir::Original, 0, at(100));
    assert_eq!(info(&ct, id).expires, at(120));
}

#[test]
fn udp_replied_flows_live_longer() {
    let mut ct = default_table();
    let a = tup(L4Proto::Udp, [10, 0, 0, 2], 40000, [1, 1, 1, 1], 53);
    let b = tup(L4Proto::Udp, [10, 0, 0, 3], 40000, [1, 1, 1, 1], 53);
    let ha = ct.create(&a, masq(), T0).unwrap().flow;
    let hb = ct.create(&b, masq(), T0).unwrap().flow;
    ct.update(ha, Dir::Original, 0, T0);
    ct.update(hb, Dir::Reply, 0, T0);
    assert_eq!(info(&ct, ha).state, "UNREPLIED");
    assert_eq!(info(&ct, hb).state, "REPLIED");
    assert_eq!(ct.expire(at(31)), 1);
    assert_eq!(ct.lookup(&a), None);
    ct.update(hb, Dir::Original, 0, at(100));
    assert_eq!(ct.expire(at(219)), 0);
    assert_eq!(ct.expire(at(221)), 1);
    assert!(ct.is_empty());
}

#[test]
fn deadlines_beyond_the_horizon_survive_wraps() {
    let mut ct = default_table();
    let orig = tup(L4Proto::Tcp, [10, 0, 0, 2], 40000, [1, 1, 1, 1], 80);
    let id = ct.create(&orig, masq(), T0).unwrap().flow;
    ct.update(id, Dir::Original, ACK, T0);
    for s in (1000..432_000).step_by(1000) {
        assert_eq!(ct.expire(at(s)), 0);
    }
    // Re-slotted about once per 4096 s horizon, not on every call.
    assert!(
        ct.timer_visits() <= 432_000 / 4000 + 2,
        "{}",
        ct.timer_visits()
    );
    // A day-long gap processes every slot once.
    assert_eq!(ct.expire(at(432_000 + 86_400)), 1);
    assert!(ct.is_empty());
    ct.check();
}

#[test]
fn a_stale_now_never_links_into_the_past() {
    let mut ct = default_table();
    assert_eq!(ct.expire(at(100)), 0);
    let a = tup(L4Proto::Udp, [10, 0, 0, 2], 40000, [1, 1, 1, 1], 53);
    ct.create(&a, masq(), at(50)).unwrap();
    assert_eq!(ct.expire(at(101)), 1);
    assert!(ct.is_empty());
}

#[test]
fn stale_ids_are_ignored() {
    let mut ct = default_table();
    let a = tup(L4Proto::Tcp, [10, 0, 0, 2], 40000, [1, 1, 1, 1], 80);
    let b = tup(L4Proto::Tcp, [10, 0, 0, 3], 40000, [1, 1, 1, 1], 80);
    let old = ct.create(&a, masq(), T0).unwrap().flow;
    ct.remove(old);
    let new = ct.create(&b, masq(), T0).unwrap().flow;
    assert_ne!(old, new);
    ct.update(old, Dir::Original, RST, T0);
    ct.remove(old);
    let f = info(&ct, new);
    assert_eq!((f.state, f.original), ("NONE", b));
    ct.check();
}

#[test]
fn retain_and_listing() {
    let mut ct = default_table();
    let publish = NatAction {
        snat: None,
        dnat: Some((Ipv4Addr::new(172, 17, 0, 2), 80)),
    };
    let p = tup(L4Proto::Tcp, [8, 8, 8, 8], 5555, [203, 0, 113, 1], 8080);
    let m = tup(L4Proto::Udp, [172, 17, 0, 3], 40000, [1, 1, 1, 1], 53);
    let hp = ct.create(&p, publish, T0).unwrap();
    let hm = ct.create(&m, masq(), T0).unwrap();
    ct.update(hm.flow, Dir::Reply, 0, T0);
    let mut all: Vec<FlowInfo> = ct.flows().collect();
    all.sort_by_key(|f| f.original.proto);
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].original, p);
    assert_eq!(all[0].reply, hp.rewrite.reversed());
    assert_eq!((all[0].state, all[0].replied), ("NONE", false));
    assert_eq!(all[0].expires, at(120));
    assert_eq!(all[1].original, m);
    assert_eq!((all[1].state, all[1].replied), ("REPLIED", true));
    assert_eq!(all[1].expires, at(120));
    for f in &all {
        assert_round_trip(&ct, f);
    }
    // Flush the flows of endpoint 172.17.0.2 (published-port traffic towards it).
    let gone = Ipv4Addr::new(172, 17, 0, 2);
    assert_eq!(
        ct.retain(|f| f.reply.src != gone && f.original.src != gone),
        1
    );
    assert_eq!(ct.len(), 1);
    assert_eq!(ct.lookup(&p), None);
    assert!(ct.lookup(&m).is_some());
    ct.check();
}

fn proto() -> impl Strategy<Value = L4Proto> {
    prop_oneof![Just(L4Proto::Tcp), Just(L4Proto::Udp), Just(L4Proto::Icmp)]
}

/// A tuple from a small space, so that random flows collide often.
fn small_tuple() -> impl Strategy<Value = Tuple> {
    (proto(), 0u8..4, 39_999u16..40_003, 0u8..3, 1u16..3).prop_map(|(p, s, sp, d, dp)| {
        let dst_port = if p == L4Proto::Icmp { sp } else { dp };
        tup(p, [10, 0, 0, s], sp, [1, 1, 1, d], dst_port)
    })
}

fn action() -> impl Strategy<Value = NatAction> {
    (any::<bool>(), prop::option::of(0u8..2)).prop_map(|(snat, dnat)| NatAction {
        snat: snat.then_some(GW),
        dnat: dnat.map(|d| (Ipv4Addr::new(172, 17, 0, 2 + d), 80)),
    })
}

#[derive(Clone, Debug)]
enum Op {
    Create(Tuple, NatAction),
    Update(usize, bool, u8),
    Remove(usize),
    Advance(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (small_tuple(), action()).prop_map(|(t, a)| Op::Create(t, a)),
        3 => (any::<usize>(), any::<bool>(), prop_oneof![
            Just(0), Just(SYN), Just(SYN | ACK), Just(ACK), Just(FIN | ACK), Just(RST)
        ]).prop_map(|(i, r, f)| Op::Update(i, r, f)),
        1 => any::<usize>().prop_map(Op::Remove),
        2 => (0u32..200).prop_map(Op::Advance),
    ]
}

/// The translated tuple `create` must produce for `t` (source port aside).
fn expected_translation(t: &Tuple, a: NatAction) -> Tuple {
    let mut x = *t;
    if let Some((addr, port)) = a.dnat {
        x.dst = addr;
        if t.proto != L4Proto::Icmp {
            x.dst_port = port;
        }
    }
    if let Some(addr) = a.snat {
        x.src = addr;
    }
    x
}

proptest! {
    #[test]
    fn translate_then_reverse_is_the_identity(t in small_tuple(), a in action()) {
        let mut ct = default_table();
        let hit = ct.create(&t, a, T0).unwrap();
        let x = expected_translation(&t, a);
        prop_assert_eq!((hit.rewrite.src, hit.rewrite.dst), (x.src, x.dst));
        if t.proto == L4Proto::Icmp {
            prop_assert_eq!(hit.rewrite.dst_port, hit.rewrite.src_port);
        } else {
            prop_assert_eq!(hit.rewrite.dst_port, x.dst_port);
        }
        let back = ct.lookup(&hit.rewrite.reversed()).unwrap();
        prop_assert_eq!(back.rewrite.reversed(), t);
        prop_assert_eq!(ct.lookup(&t), Some(hit));
        for f in ct.flows() {
            assert_round_trip(&ct, &f);
        }
    }

    #[test]
    fn random_operations_keep_reply_tuples_unique(
        ops in prop::collection::vec(op(), 1..120),
        span in 0u16..3,
    ) {
        let range = PortRange { first: 40_000, last: 40_000 + span };
        let mut ct = table(range.first, range.last, 24);
        let mut ids: Vec<FlowId> = Vec::new();
        let mut now = T0;
        for op in ops {
            match op {
                Op::Create(t, a) => {
                    let x = expected_translation(&t, a);
                    match ct.create(&t, a, now) {
                        Ok(hit) => {
                            prop_assert_eq!(hit.rewrite.dst, x.dst);
                            prop_assert_eq!(hit.rewrite.src, x.src);
                            if a.snat.is_some() {
                                prop_assert!(range.contains(hit.rewrite.src_port));
                            } else {
                                prop_assert_eq!(hit.rewrite.src_port, t.src_port);
                            }
                            ids.push(hit.flow);
                        }
                        Err(NatError::Exists) => prop_assert!(ct.lookup(&t).is_some()),
                        Err(NatError::TableFull) => prop_assert_eq!(ct.len(), 24),
                        Err(NatError::Clash) => {
                            prop_assert!(a.snat.is_none());
                            prop_assert!(ct.lookup(&x.reversed()).is_some());
                        }
                        Err(e @ (NatError::OwnerQuota | NatError::PortShare)) => {
                            prop_assert!(false, "unowned flows have no quota: {}", e);
                        }
                        Err(NatError::PortsExhausted) => {
                            // Truly exhausted: every port's reply tuple is taken.
                            for p in range.first..=range.last {
                                let mut y = x;
                                y.src_port = p;
                                if y.proto == L4Proto::Icmp {
                                    y.dst_port = p;
                                }
                                prop_assert!(ct.lookup(&y.reversed()).is_some());
                            }
                        }
                    }
                }
                Op::Update(i, reply, flags) => {
                    if !ids.is_empty() {
                        let dir = if reply { Dir::Reply } else { Dir::Original };
                        ct.update(ids[i % ids.len()], dir, flags, now);
                    }
                }
                Op::Remove(i) => {
                    if !ids.is_empty() {
                        ct.remove(ids[i % ids.len()]);
                    }
                }
                Op::Advance(secs) => {
                    now = now.plus_secs(secs);
                    let floor = now.as_secs() * 1000;
                    let before: Vec<u64> = ct.flows().map(|f| f.expires.0).collect();
                    let freed = ct.expire(now);
                    let due = before.iter().filter(|&&e| e <= floor).count();
                    let past = before.iter().filter(|&&e| e <= now.0).count();
                    prop_assert!(due <= freed && freed <= past);
                    prop_assert!(ct.flows().all(|f| f.expires.0 > floor));
                }
            }
            ct.check();
            let flows: Vec<FlowInfo> = ct.flows().collect();
            prop_assert_eq!(flows.len(), ct.len());
            let replies: HashSet<Tuple> = flows.iter().map(|f| f.reply).collect();
            prop_assert_eq!(replies.len(), flows.len());
            for f in &flows {
                assert_round_trip(&ct, f);
            }
            let probes: Vec<Option<Tuple>> = flows
                .iter()
                .flat_map(|f| [Some(f.original), Some(f.reply), Some(f.original.reversed()), None])
                .collect();
            assert_batch_matches_lookup(&ct, &probes);
        }
    }
}

fn probes_of(tuples: &[Option<Tuple>]) -> Vec<Option<Probe>> {
    tuples.iter().map(|t| t.as_ref().map(Probe::new)).collect()
}

/// `lookup_batch` gives exactly what `lookup` gives, tuple by tuple.
fn assert_batch_matches_lookup(ct: &Conntrack, tuples: &[Option<Tuple>]) {
    let mut out = vec![None; tuples.len()];
    let probes = probes_of(tuples);
    ct.lookup_batch(|i| probes[i].as_ref(), &mut out);
    for (t, o) in tuples.iter().zip(&out) {
        assert_eq!(*o, t.and_then(|t| ct.lookup(&t)), "{t:?}");
    }
}

#[test]
fn batched_lookups_span_stages_and_mix_hits_and_misses() {
    let mut ct = default_table();
    let mut tuples = Vec::new();
    for i in 0..150u16 {
        let [a, b] = i.to_be_bytes();
        let t = tup(L4Proto::Tcp, [10, 0, a, b], 40000, [1, 1, 1, 1], 443);
        if i % 3 != 0 {
            let hit = ct.create(&t, masq(), T0).unwrap();
            tuples.push(Some(hit.rewrite.reversed()));
        }
        tuples.push(Some(t));
        if i % 7 == 0 {
            tuples.push(None);
        }
    }
    assert!(tuples.len() > 2 * 64);
    let hits = {
        let mut out = vec![None; tuples.len()];
        let probes = probes_of(&tuples);
        ct.lookup_batch(|i| probes[i].as_ref(), &mut out);
        out.iter().flatten().count()
    };
    assert_eq!(hits, 2 * ct.len());
    assert_batch_matches_lookup(&ct, &tuples);
    assert_batch_matches_lookup(&default_table(), &tuples);
}

/// Owners' quotas: per-owner flow counts and per-destination port shares.
#[derive(Clone, Debug)]
enum OwnedOp {
    Create(Tuple, bool, u16),
    Remove(usize),
    Advance(u32),
    Flush(u16),
}

fn owned_op() -> impl Strategy<Value = OwnedOp> {
    prop_oneof![
        5 => (small_tuple(), any::<bool>(), 0u16..3).prop_map(|(t, s, o)| OwnedOp::Create(t, s, o)),
        1 => any::<usize>().prop_map(OwnedOp::Remove),
        1 => (0u32..60).prop_map(OwnedOp::Advance),
        1 => (0u16..3).prop_map(OwnedOp::Flush),
    ]
}

proptest! {
    #[test]
    fn owner_counts_equal_live_flows_and_stay_within_quota(
        ops in prop::collection::vec(owned_op(), 1..150),
        max_flows in 1usize..6,
        share in 1usize..3,
    ) {
        let mut ct = table(40_000, 40_003, 12);
        let owner = |o: u16| Owner {
            port: crate::frame::PortId(o),
            max_flows,
            max_ports_per_destination: share,
        };
        let mut ids: Vec<(FlowId, u16)> = Vec::new();
        let mut now = T0;
        for op in ops {
            match op {
                OwnedOp::Create(t, snat, o) => {
                    let a = NatAction { snat: snat.then_some(GW), dnat: None };
                    let before = ct.owned_by(owner(o).port);
                    match ct.create_for(&t, a, now, &owner(o)) {
                        Ok(hit) => ids.push((hit.flow, o)),
                        Err(NatError::OwnerQuota) => prop_assert_eq!(before, max_flows),
                        Err(NatError::PortShare) => {
                            let dport = if t.proto == L4Proto::Icmp { 0 } else { t.dst_port };
                            let held = ct.ports_held(owner(o).port, t.proto, GW, (t.dst, dport));
                            prop_assert_eq!(held, share);
                        }
                        Err(_) => {}
                    }
                }
                OwnedOp::Remove(i) => {
                    if !ids.is_empty() {
                        ct.remove(ids[i % ids.len()].0);
                    }
                }
                OwnedOp::Advance(secs) => {
                    now = now.plus_secs(secs);
                    ct.expire(now);
                }
                OwnedOp::Flush(o) => {
                    let gone: HashSet<FlowId> =
                        ids.iter().filter(|(_, w)| *w == o).map(|(id, _)| *id).collect();
                    ct.retain(|f| !gone.contains(&f.id));
                }
            }
            // `check` compares every owner's count and share with the live flows.
            ct.check();
            for o in 0..3 {
                prop_assert!(ct.owned_by(owner(o).port) <= max_flows);
            }
        }
    }
}

#[test]
fn an_owner_beyond_its_quota_leaves_the_table_to_the_others() {
    let mut ct = table(40_000, 40_009, 6);
    let quota = |port| Owner {
        port: crate::frame::PortId(port),
        max_flows: 3,
        max_ports_per_destination: 5,
    };
    for sp in 0..3 {
        let t = tup(L4Proto::Udp, [10, 0, 0, 1], 1000 + sp, [1, 1, 1, 1], 53);
        ct.create_for(&t, masq(), T0, &quota(1)).unwrap();
    }
    let t = tup(L4Proto::Udp, [10, 0, 0, 1], 2000, [1, 1, 1, 1], 53);
    assert_eq!(
        ct.create_for(&t, masq(), T0, &quota(1)),
        Err(NatError::OwnerQuota)
    );
    let other = tup(L4Proto::Udp, [10, 0, 0, 2], 1000, [1, 1, 1, 1], 53);
    let hit = ct.create_for(&other, masq(), T0, &quota(2)).unwrap();
    assert_eq!(ct.owned_by(crate::frame::PortId(1)), 3);
    ct.remove(hit.flow);
    assert_eq!(ct.owned_by(crate::frame::PortId(2)), 0);
    assert_eq!(ct.expire(at(31)), 3);
    assert_eq!(ct.owned_by(crate::frame::PortId(1)), 0);
    ct.check();
}
