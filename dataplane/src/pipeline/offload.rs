//! The offload stage: offers established flows the userspace path just forwarded to the
//! kernel flow offload (see `crate::offload`): a tracked flow from the shortcut stage (both
//! directions' shortcuts of this epoch, TCP established or UDP answered; its FIN or RST takes
//! it back), a bridged flow between two endpoints from the bridge stage (both directions seen
//! past the handshake, in `Seen`; v4 or v6). An offer is one push on a lock-free queue, once per flow;
//! any doubt (a port without interface index, a smaller MTU out, a tagged egress) offers
//! nothing and the flow stays in userspace. It drops nothing.

use super::offload6::plain6;
use super::plain;
use super::state::BatchState;
use crate::frame::{Frame, PortId};
use crate::nat::{Hit, OffloadPair, Shortcut, Timeouts};
use crate::offload::{self, Direction, FlowTuple, PortOut, Request, Tracked};
use crate::tables::PortEntry;
use crate::wire::ethernet::EthernetFrame;
use crate::wire::tcp::{ACK, FIN, RST, SYN};
use crate::wire::{MacAddr, IPPROTO_TCP};

impl BatchState<'_> {
    /// After a frame of `hit`'s flow, `len` bytes long, took its shortcut with TCP flags
    /// `tcp_flags` (0 for UDP): offers the flow when it qualifies now (a bulk-sized frame, see
    /// `offload::offers`), or asks for its removal when it closes.
    #[inline(always)]
    pub(super) fn offer_routed(&mut self, hit: &Hit, tcp_flags: u8, len: usize) {
        if tcp_flags & (FIN | RST) != 0 {
            self.take_back_routed(hit);
            return;
        }
        if !offload::offers(len) {
            return;
        }
        let epoch = self.epoch;
        let Some(ct) = self.ct.as_mut() else {
            return;
        };
        let Some(pair) = ct.offload_candidate(hit, epoch) else {
            return;
        };
        if let Some(dirs) = self.routed_dirs(&pair) {
            self.dp.offloads().offer(Request::Install {
                dirs,
                tracked: Tracked::Conntrack(pair.flow),
                epoch,
            });
        }
    }

    /// A FIN or RST of `hit`'s flow reached userspace (by its shortcut or the full path):
    /// when the flow was offered, asks for both its directions to leave the kernel.
    pub(super) fn take_back_routed(&mut self, hit: &Hit) {
        let Some(ct) = self.ct.as_mut() else {
            return;
        };
        if let Some(dirs) = ct.offload_closing(hit).and_then(|p| self.routed_dirs(&p)) {
            self.dp.offloads().offer(Request::Remove {
                keys: [dirs[0].key, dirs[1].key],
            });
        }
    }

    /// Both directions of tracked flow `pair` as the kernel would forward them, if its ports
    /// allow.
    fn routed_dirs(&self, pair: &OffloadPair) -> Option<[Direction; 2]> {
        let ends = |s: &Shortcut| {
            Some((
                self.port_out(s.ingress, None)?,
                self.port_out(s.egress, Some(s.vlan))?,
            ))
        };
        let [s0, s1] = &pair.shortcuts;
        offload::routed(pair, [ends(s0)?, ends(s1)?])
    }

    /// Port `id` as the offload sees it: `None` when it has no interface index (not an
    /// AF_PACKET port with the TC program) or, as an egress of internal VLAN `egress_vlan`,
    /// would tag frames.
    pub(super) fn port_out(&self, id: PortId, egress_vlan: Option<u16>) -> Option<PortOut> {
        let ifindex = self.dp.offloads().ifindex(id);
        let port = self.t.port(id).filter(|_| ifindex != 0)?;
        if egress_vlan.is_some_and(|v| port.egress_tag(v) != Some(None)) {
            return None;
        }
        let mtu = match port.network {
            Some(n) => self.t.network(n)?.config.mtu,
            None => self.t.uplink_on(id)?.mtu,
        };
        Some(PortOut { ifindex, mtu })
    }

    /// After frame `f` from endpoint port `from` was bridged to port `to` (on a network of
    /// MTU `mtu`, no overlay): records the flow's direction and offers the flow once both
    /// were seen past the handshake, by a bulk-sized frame (`offload::offers`); a FIN or RST
    /// takes an offered flow back. IPv4 and IPv6 (`offload6::plain6`) alike.
    #[inline(always)]
    pub(super) fn offer_bridged(&mut self, f: &Frame<'_>, from: &PortEntry, to: PortId, mtu: u16) {
        let o = self.dp.offloads();
        let (ia, ib) = (o.ifindex(f.meta.ingress), o.ifindex(to));
        if ia == 0 || ib == 0 {
            return;
        }
        let Some(to_port) = self.t.port(to) else {
            return;
        };
        let (Some((a_mac, a_ip)), Some((b_mac, b_ip))) = (from.endpoint, to_port.endpoint) else {
            return;
        };
        let eth = EthernetFrame::new_unchecked(f.data());
        if (eth.src(), eth.dst()) != (a_mac, b_mac) || to_port.egress_tag(f.meta.vlan) != Some(None)
        {
            return;
        }
        let a = (PortOut { ifindex: ia, mtu }, a_mac);
        let b = (PortOut { ifindex: ib, mtu }, b_mac);
        if let Some(p) = plain::parse(f.data()) {
            if (Some(p.tuple.src), Some(p.tuple.dst)) == (a_ip, b_ip) {
                self.offer_bridged_flow(&p.tuple, p.tcp_flags, (a, b), f.len());
            }
        } else if let Some((t, tcp_flags)) = plain6(f.data()) {
            if (Some(t.src), Some(t.dst)) == (from.endpoint_v6, to_port.endpoint_v6) {
                self.offer_bridged_flow(&t, tcp_flags, (a, b), f.len());
            }
        }
    }

    /// [`BatchState::offer_bridged`] for the flow `t` of a frame of `len` bytes with TCP
    /// flags `tcp_flags`, from endpoint `a` to endpoint `b`.
    #[inline(always)]
    fn offer_bridged_flow<T: FlowTuple>(
        &self,
        t: &T,
        tcp_flags: u8,
        (a, b): ((PortOut, MacAddr), (PortOut, MacAddr)),
        len: usize,
    ) {
        let o = self.dp.offloads();
        let tcp = t.proto() == IPPROTO_TCP;
        if tcp && tcp_flags & (FIN | RST) != 0 {
            if let Some(dirs) = o
                .seen()
                .forget(t)
                .then(|| offload::bridged(t, a, b))
                .flatten()
            {
                o.offer(Request::Remove {
                    keys: [dirs[0].key, dirs[1].key],
                });
            }
            return;
        }
        let past_handshake = !tcp || tcp_flags & (SYN | ACK) == ACK;
        let ready = offload::offers(len);
        if self.epoch == 0 || !past_handshake || !o.seen().observe(t, self.epoch, ready) {
            return;
        }
        let timeouts = Timeouts::default();
        let idle_secs = if tcp {
            timeouts.tcp_established
        } else {
            timeouts.udp_replied
        };
        if let Some(dirs) = offload::bridged(t, a, b) {
            o.offer(Request::Install {
                dirs,
                tracked: Tracked::Bridged { idle_secs },
                epoch: self.epoch,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::Arc;

    use crate::offload::{Direction, FlowAction, FlowKey, Request, Tracked};
    use crate::pipeline::tests::*;

    /// A payload long enough for its frame to offer the flow (`offload::offers`).
    const BULK: &[u8] = &[0x5a; 1200];

    /// A dataplane that stages every batch (so established flows take their shortcuts) with
    /// the offload on and interface index 100 + id for every port.
    fn offloading(s: &Scenario) -> (Arc<Dataplane>, Worker) {
        let mut dp = Dataplane::new(&s.config).unwrap();
        dp.set_staging(true);
        dp.offloads().set_enabled(true);
        for p in 0..5 {
            dp.offloads().set_ifindex(PortId(p), 100 + u32::from(p));
        }
        let w = dp.worker();
        (dp, w)
    }

    fn drain(dp: &Dataplane) -> Vec<Request> {
        std::iter::from_fn(|| dp.offloads().next_request()).collect()
    }

    fn key(port: PortId, (src, sport): (Ipv4Addr, u16), (dst, dport): (Ipv4Addr, u16)) -> FlowKey {
        FlowKey {
            ifindex: 100 + u32::from(port.0),
            src: IpAddr::V4(src),
            dst: IpAddr::V4(dst),
            proto: 6,
            sport,
            dport,
        }
    }

    /// A direction from `key` out of `egress` with Ethernet addresses (`dst`, `src`).
    fn dir(key: FlowKey, egress: PortId, (dst, src): (MacAddr, MacAddr)) -> Direction {
        Direction {
            key,
            action: FlowAction {
                egress_ifindex: 100 + u32::from(egress.0),
                eth_src: src.0,
                eth_dst: dst.0,
                decrement_ttl: true,
                snat: None,
                dnat: None,
            },
            tunnel: None,
        }
    }

    fn at(ip: Ipv4Addr, port: u16) -> Option<(IpAddr, u16)> {
        Some((IpAddr::V4(ip), port))
    }

    /// A TCP frame bridged from endpoint `from` (port 40000) to endpoint `to` (port 80), or
    /// back with `back`.
    fn bridged(from: Ipv4Addr, to: Ipv4Addr, back: bool, flags: u8, data: &[u8]) -> Vec<u8> {
        let (sport, dport) = if back { (80, 40000) } else { (40000, 80) };
        let seg = tcp(from, sport, to, dport, flags, data);
        eth(S::mac(to), S::mac(from), 0x0800, &seg)
    }

    #[test]
    fn a_bridged_tcp_flow_is_offered_once_both_ways_are_past_the_handshake() {
        let s = S::new();
        let (dp, mut w) = offloading(&s);
        let ab = |flags, data: &[u8]| bridged(S::A, S::B, false, flags, data);
        let ba = |flags, data: &[u8]| bridged(S::B, S::A, true, flags, data);
        let v = Frames::new()
            .push(PORT_A, &ab(SYN, b""))
            .push(PORT_B, &ba(SYN | ACK, b""))
            .push(PORT_A, &ab(ACK, b""))
            .push(PORT_A, &ab(ACK, b"get"))
            .run(&mut w, T0);
        assert!(v.iter().all(|(v, _)| matches!(v, Verdict::Forward(_))));
        assert_eq!(drain(&dp), vec![], "one direction only so far");
        // Both directions now, but small frames (request/response) stay in userspace.
        run_one(&mut w, PORT_B, &ba(ACK, b"pong"), T0);
        run_one(&mut w, PORT_A, &ab(ACK, b"ping"), T0);
        assert_eq!(drain(&dp), vec![], "small frames offer nothing");
        Frames::new()
            .push(PORT_B, &ba(ACK, BULK))
            .push(PORT_B, &ba(ACK, BULK))
            .push(PORT_A, &ab(ACK, b""))
            .run(&mut w, T0);
        let mut b_to_a = dir(
            key(PORT_B, (S::B, 80), (S::A, 40000)),
            PORT_A,
            (S::mac(S::A), S::mac(S::B)),
        );
        let mut a_to_b = dir(
            key(PORT_A, (S::A, 40000), (S::B, 80)),
            PORT_B,
            (S::mac(S::B), S::mac(S::A)),
        );
        b_to_a.action.decrement_ttl = false;
        a_to_b.action.decrement_ttl = false;
        let idle_secs = crate::nat::Timeouts::default().tcp_established;
        assert_eq!(
            drain(&dp),
            vec![Request::Install {
                dirs: [b_to_a, a_to_b],
                tracked: Tracked::Bridged { idle_secs },
                epoch: dp.epoch32(),
            }],
            "offered once, by the frame that completed both directions"
        );
        run_one(&mut w, PORT_A, &ab(0x01 | ACK, b""), T0);
        assert_eq!(
            drain(&dp),
            vec![Request::Remove {
                keys: [a_to_b.key, b_to_a.key]
            }]
        );
    }

    /// A UDP query from endpoint A's port `sport` to B's port 53, bridged, and its answer.
    fn udp_query(sport: u16) -> (Vec<u8>, Vec<u8>) {
        let q = udp(S::A, sport, S::B, 53, b"q");
        let a = udp(S::B, 53, S::A, sport, BULK);
        (
            eth(S::mac(S::B), S::mac(S::A), 0x0800, &q),
            eth(S::mac(S::A), S::mac(S::B), 0x0800, &a),
        )
    }

    #[test]
    fn bridged_udp_needs_an_answer_and_ports_with_interfaces() {
        let s = S::new();
        let (dp, mut w) = offloading(&s);
        let (ab, ba) = udp_query(5000);
        Frames::new()
            .push(PORT_A, &ab)
            .push(PORT_A, &ab)
            .run(&mut w, T0);
        assert_eq!(drain(&dp), vec![]);
        run_one(&mut w, PORT_B, &ba, T0);
        let got = drain(&dp);
        assert!(matches!(
            got[..],
            [Request::Install { dirs, tracked: Tracked::Bridged { idle_secs: 120 }, .. }]
                if dirs[0].key.proto == 17 && dirs[1].key.ifindex == 101
        ));
        // A port without an interface (a TAP port, or the offload not attached): nothing.
        dp.offloads().set_ifindex(PORT_B, 0);
        let (other, back) = udp_query(5001);
        Frames::new()
            .push(PORT_A, &other)
            .push(PORT_B, &back)
            .run(&mut w, T0);
        assert_eq!(drain(&dp), vec![]);
    }

    /// Builds a frame of one side of a flow from its TCP flags and payload.
    type Segment<'a> = &'a dyn Fn(u8, &[u8]) -> Vec<u8>;

    /// Runs a TCP handshake of a tracked flow: SYN from `from`, SYN-ACK back from `back_port`,
    /// ACK from `from` again (a small frame: no offer yet), then a full-size segment; returns
    /// the SYN as it left.
    fn handshake(
        w: &mut Worker,
        (from, syn): (PortId, Segment<'_>),
        (back_port, synack): (PortId, &dyn Fn(u16, u8) -> Vec<u8>),
    ) -> Vec<u8> {
        let (_, out) = run_one(w, from, &syn(SYN, b""), T0);
        let sport = tuple_of(&out).src_port;
        run_one(w, back_port, &synack(sport, SYN | ACK), T0);
        for data in [&b""[..], BULK] {
            let v = run_one(w, from, &syn(ACK, data), T0).0;
            assert!(matches!(v, Verdict::Forward(_)));
        }
        out
    }

    /// A segment from endpoint A (port 40000) to the remote host's port 80.
    fn to_remote(flags: u8, data: &[u8]) -> Vec<u8> {
        S::from_endpoint(S::A, &tcp(S::A, 40000, S::REMOTE, 80, flags, data))
    }

    /// A segment from the remote host back to NAT port `port`.
    fn from_remote(port: u16, flags: u8) -> Vec<u8> {
        S::from_outside(&tcp(S::REMOTE, 80, S::UP, port, flags, b""))
    }

    /// A flow from endpoint A out through NAPT in scenario `s`, its handshake and a full-size
    /// segment done; the dataplane, the worker and the flow's NAT port.
    fn napt_flow(s: &Scenario) -> (Arc<Dataplane>, Worker, u16) {
        let (dp, mut w) = offloading(s);
        learn_next_hop(&mut w);
        let out = handshake(&mut w, (PORT_A, &to_remote), (UPLINK, &from_remote));
        (dp, w, tuple_of(&out).src_port)
    }

    #[test]
    fn a_flow_out_through_napt_is_offered_with_both_rewrites() {
        let (dp, mut w, nat_port) = napt_flow(&S::new());
        let mut o = dir(
            key(PORT_A, (S::A, 40000), (S::REMOTE, 80)),
            UPLINK,
            (S::HOP_MAC, S::UP_MAC),
        );
        o.action.snat = at(S::UP, nat_port);
        let mut r = dir(
            key(UPLINK, (S::REMOTE, 80), (S::UP, nat_port)),
            PORT_A,
            (S::mac(S::A), S::GW_MAC),
        );
        r.action.dnat = at(S::A, 40000);
        let got = drain(&dp);
        assert!(
            matches!(got[..], [Request::Install { dirs, tracked: Tracked::Conntrack(_), epoch }]
                if dirs == [o, r] && epoch == dp.epoch32()),
            "{got:?}"
        );
        // Later packets do not offer it again; its RST takes it back.
        run_one(&mut w, PORT_A, &to_remote(ACK, BULK), T0);
        assert_eq!(drain(&dp), vec![]);
        run_one(&mut w, UPLINK, &from_remote(nat_port, 0x04), T0);
        assert_eq!(
            drain(&dp),
            vec![Request::Remove {
                keys: [o.key, r.key]
            }]
        );
    }

    #[test]
    fn a_fin_on_the_full_path_takes_the_flow_back_too() {
        let (dp, mut w, nat_port) = napt_flow(&S::new());
        assert_eq!(drain(&dp).len(), 1);
        // TTL 1: no shortcut serves it, the full path accounts the FIN (and drops the packet).
        let mut fin = from_remote(nat_port, 0x01 | ACK);
        let mut ip = crate::wire::ipv4::Ipv4Packet::new_unchecked(&mut fin[14..]);
        ip.set_ttl(1);
        ip.fill_checksum();
        run_one(&mut w, UPLINK, &fin, T0);
        assert!(matches!(drain(&dp)[..], [Request::Remove { .. }]));
    }

    #[test]
    fn a_connection_to_a_published_port_is_offered_with_its_dnat() {
        let s = S::new();
        let (dp, mut w) = offloading(&s);
        learn_next_hop(&mut w);
        let syn = |f, d: &[u8]| S::from_outside(&tcp(S::REMOTE, 50000, S::UP, 8080, f, d));
        let back = |_, f| S::from_endpoint(S::B, &tcp(S::B, 80, S::REMOTE, 50000, f, b""));
        handshake(&mut w, (UPLINK, &syn), (PORT_B, &back));
        let mut o = dir(
            key(UPLINK, (S::REMOTE, 50000), (S::UP, 8080)),
            PORT_B,
            (S::mac(S::B), S::GW_MAC),
        );
        o.action.dnat = at(S::B, 80);
        let mut r = dir(
            key(PORT_B, (S::B, 80), (S::REMOTE, 50000)),
            UPLINK,
            (S::HOP_MAC, S::UP_MAC),
        );
        r.action.snat = at(S::UP, 8080);
        let got = drain(&dp);
        assert!(
            matches!(got[..], [Request::Install { dirs, .. }] if dirs == [o, r]),
            "{got:?}"
        );
    }

    #[test]
    fn no_offer_past_a_smaller_mtu_or_with_the_offload_off() {
        let mut s = S::new();
        s.config.uplink.as_mut().unwrap().mtu = 9000;
        let (dp, _, _) = napt_flow(&s);
        assert_eq!(drain(&dp), vec![], "replies would leave by a smaller MTU");

        let s = S::new();
        let (dp, mut w) = offloading(&s);
        dp.offloads().set_enabled(false);
        learn_next_hop(&mut w);
        handshake(&mut w, (PORT_A, &to_remote), (UPLINK, &from_remote));
        let ab = |f| bridged(S::A, S::B, false, f, BULK);
        let ba = |f| bridged(S::B, S::A, true, f, BULK);
        Frames::new()
            .push(PORT_A, &ab(ACK))
            .push(PORT_B, &ba(ACK))
            .run(&mut w, T0);
        assert_eq!(drain(&dp), vec![]);
    }
}
