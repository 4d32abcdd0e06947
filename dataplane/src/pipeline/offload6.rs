//! The offload stage for IPv6 flows, as `offload` is for v4: a tracked v6 flow (NAT66
//! masquerade, a published v6 port, a routed v6 network) is offered from the v6 shortcut once
//! established with both directions' shortcuts of this epoch, and taken back by its FIN or
//! RST (by its shortcut or the full path); a bridged v6 flow between two endpoints is read
//! here for `offload`'s bridged offer. Same rules as v4: a bulk-sized frame offers, once.

use super::flow6::flow6_of;
use super::ipv6::parse;
use super::shortcut6::shortcut_shape;
use super::state::BatchState;
use crate::nat::v6::{Hit6, OffloadPair6, Tuple6};
use crate::offload::{self, Direction, Request, Tracked};
use crate::wire::ethernet::{self, ETHERTYPE_IPV6};
use crate::wire::tcp::{FIN, RST};

/// The tuple and TCP flags of frame `d` when it is a v6 packet of the shape the offload
/// forwards: untagged, TCP or UDP right after the fixed header.
pub(super) fn plain6(d: &[u8]) -> Option<(Tuple6, u8)> {
    if d.len() < ethernet::HEADER_LEN || d[12..14] != ETHERTYPE_IPV6.to_be_bytes() {
        return None;
    }
    let ip = parse(d, ethernet::HEADER_LEN).ok()?;
    if !shortcut_shape(&ip) {
        return None;
    }
    let flow = flow6_of(d, &ip).ok()?;
    Some((flow.tuple, flow.tcp_flags))
}

impl BatchState<'_> {
    /// After a frame of `hit`'s v6 flow, `len` bytes long, took its shortcut with TCP flags
    /// `tcp_flags` (0 for UDP): offers the flow when it qualifies now, or asks for its
    /// removal when it closes.
    pub(super) fn offer_routed6(&mut self, hit: &Hit6, tcp_flags: u8, len: usize) {
        if tcp_flags & (FIN | RST) != 0 {
            self.take_back_routed6(hit);
            return;
        }
        if !offload::offers(len) {
            return;
        }
        let epoch = self.epoch;
        let Some(pair) = self.v6().ct.offload_candidate(hit, epoch) else {
            return;
        };
        if let Some(dirs) = self.routed_dirs6(&pair) {
            self.dp.offloads().offer(Request::Install {
                dirs,
                tracked: Tracked::Conntrack6(pair.flow),
                epoch,
            });
        }
    }

    /// A FIN or RST of `hit`'s v6 flow reached userspace: when the flow was offered, asks for
    /// both its directions to leave the kernel.
    pub(super) fn take_back_routed6(&mut self, hit: &Hit6) {
        let pair = self.v6().ct.offload_closing(hit);
        if let Some(dirs) = pair.and_then(|p| self.routed_dirs6(&p)) {
            self.dp.offloads().offer(Request::Remove {
                keys: [dirs[0].key, dirs[1].key],
            });
        }
    }

    /// Both directions of tracked v6 flow `pair` as the kernel would forward them, if its
    /// ports allow.
    fn routed_dirs6(&self, pair: &OffloadPair6) -> Option<[Direction; 2]> {
        let ends = |s: &crate::nat::Shortcut| {
            Some((
                self.port_out(s.ingress, None)?,
                self.port_out(s.egress, Some(s.vlan))?,
            ))
        };
        let [s0, s1] = &pair.shortcuts;
        offload::routed6(pair, [ends(s0)?, ends(s1)?])
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use etherparse::PacketBuilder;

    use crate::offload::{Direction, Request, Tracked};
    use crate::pipeline::ipv6::tests::{icmp6, A6, B6, FAR};
    use crate::pipeline::offload::tests::{at, dir, drain, key, offloading, BULK};
    use crate::pipeline::tests::*;
    use crate::wire::ndisc;

    const FIN: u8 = 0x01;
    const RST: u8 = 0x04;

    /// A TCP segment with flags `flags` (SYN, FIN, RST, ACK) between two v6 sockets, from
    /// MAC `macs.1` to `macs.0`.
    fn seg6(
        macs: (MacAddr, MacAddr),
        (src, sport): (Ipv6Addr, u16),
        (dst, dport): (Ipv6Addr, u16),
        flags: u8,
        data: &[u8],
    ) -> Vec<u8> {
        let mut b = PacketBuilder::ethernet2(macs.1 .0, macs.0 .0)
            .ipv6(src.octets(), dst.octets(), 64)
            .tcp(sport, dport, 1, 1000);
        if flags & SYN != 0 {
            b = b.syn();
        }
        if flags & FIN != 0 {
            b = b.fin();
        }
        if flags & RST != 0 {
            b = b.rst();
        }
        if flags & ACK != 0 {
            b = b.ack(1);
        }
        let mut v = Vec::new();
        b.write(&mut v, data).unwrap();
        v
    }

    /// The v6 next hop's advertisement of itself.
    fn advert_of_hop() -> Vec<u8> {
        let mut body = S::HOP6.octets().to_vec();
        body.extend_from_slice(&[ndisc::OPT_TARGET_LL_ADDR, 1]);
        body.extend_from_slice(&S::HOP_MAC.0);
        icmp6(
            (S::UP_MAC, S::HOP_MAC),
            (S::HOP6, S::UP6, 255),
            (ndisc::NEIGHBOR_ADVERT, 0, [0x60, 0, 0, 0]),
            &body,
        )
    }

    /// From endpoint A's MAC to the gateway, and from the next hop to the uplink.
    const FROM_A: (MacAddr, MacAddr) = (S::GW_MAC, MacAddr([0x02, 0x42, 0xac, 0x11, 0, 2]));
    const FROM_HOP: (MacAddr, MacAddr) = (S::UP_MAC, S::HOP_MAC);

    /// The only request queued: an install, its directions, tracking and epoch.
    fn installed(dp: &Dataplane) -> ([Direction; 2], Tracked, u32) {
        match drain(dp)[..] {
            [Request::Install {
                dirs,
                tracked,
                epoch,
            }] => (dirs, tracked, epoch),
            ref other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_bridged_v6_flow_is_offered_once_both_ways_are_past_the_handshake() {
        assert_eq!(FROM_A.1, S::mac(S::A));
        let s = S::dual_stack();
        let (dp, mut w) = offloading(&s);
        let (ma, mb) = (S::mac(S::A), S::mac(S::B));
        let ab = |flags, data: &[u8]| seg6((mb, ma), (A6, 40000), (B6, 80), flags, data);
        let ba = |flags, data: &[u8]| seg6((ma, mb), (B6, 80), (A6, 40000), flags, data);
        let v = Frames::new()
            .push(PORT_A, &ab(SYN, b""))
            .push(PORT_B, &ba(SYN | ACK, b""))
            .push(PORT_A, &ab(ACK, b""))
            .push(PORT_B, &ba(ACK, b"small"))
            .run(&mut w, T0);
        assert!(
            v.iter().all(|(v, _)| matches!(v, Verdict::Forward(_))),
            "{v:?}"
        );
        assert_eq!(drain(&dp), vec![], "small frames offer nothing");
        Frames::new()
            .push(PORT_B, &ba(ACK, BULK))
            .push(PORT_B, &ba(ACK, BULK))
            .run(&mut w, T0);
        let mut b_to_a = dir(key(PORT_B, (B6, 80), (A6, 40000)), PORT_A, (ma, mb));
        let mut a_to_b = dir(key(PORT_A, (A6, 40000), (B6, 80)), PORT_B, (mb, ma));
        b_to_a.action.decrement_ttl = false;
        a_to_b.action.decrement_ttl = false;
        let idle_secs = crate::nat::Timeouts::default().tcp_established;
        assert_eq!(
            installed(&dp),
            (
                [b_to_a, a_to_b],
                Tracked::Bridged { idle_secs },
                dp.epoch32()
            )
        );
        run_one(&mut w, PORT_A, &ab(FIN | ACK, b""), T0);
        assert_eq!(
            drain(&dp),
            vec![Request::Remove {
                keys: [a_to_b.key, b_to_a.key]
            }]
        );
        // A source address that is not the endpoint's own: nothing.
        let spoofed = |flags| seg6((mb, ma), (FAR, 40001), (B6, 80), flags, BULK);
        let back = seg6((ma, mb), (B6, 80), (FAR, 40001), ACK, BULK);
        Frames::new()
            .push(PORT_A, &spoofed(ACK))
            .push(PORT_B, &back)
            .push(PORT_A, &spoofed(ACK))
            .run(&mut w, T0);
        assert_eq!(drain(&dp), vec![]);
    }

    /// Builds a frame of the opening side from its TCP flags and payload.
    type Opening<'a> = &'a dyn Fn(u8, &[u8]) -> Vec<u8>;

    /// The handshake of a tracked v6 flow: SYN from `from`, SYN-ACK back from `to`, ACK (a
    /// small frame: no offer yet), then a full-size segment, all forwarded.
    fn handshake(
        w: &mut Worker,
        (from, out): (PortId, Opening<'_>),
        to: (PortId, &dyn Fn(u8) -> Vec<u8>),
    ) {
        let f = [
            (from, out(SYN, b"")),
            (to.0, to.1(SYN | ACK)),
            (from, out(ACK, b"")),
            (from, out(ACK, BULK)),
        ];
        for (port, frame) in f {
            let v = run_one(w, port, &frame, T0).0;
            assert!(matches!(v, Verdict::Forward(_)), "{v:?}");
        }
    }

    /// Scenario `s` with the offload on and the v6 next hop learned.
    fn nat66_offloading(s: &Scenario) -> (std::sync::Arc<Dataplane>, Worker) {
        let (dp, mut w) = offloading(s);
        assert_eq!(
            run_one(&mut w, UPLINK, &advert_of_hop(), T0).0,
            Verdict::Consumed
        );
        (dp, w)
    }

    /// A segment from A's port 40000 to the far host's port 443.
    fn to_far(flags: u8, data: &[u8]) -> Vec<u8> {
        seg6(FROM_A, (A6, 40000), (FAR, 443), flags, data)
    }

    #[test]
    fn a_v6_flow_out_through_nat66_is_offered_with_both_rewrites() {
        let (dp, mut w) = nat66_offloading(&S::nat66(false));
        // The original port is free: NAT66 keeps it.
        let back = |flags| seg6(FROM_HOP, (FAR, 443), (S::UP6, 40000), flags, b"");
        handshake(&mut w, (PORT_A, &to_far), (UPLINK, &back));
        let mut o = dir(
            key(PORT_A, (A6, 40000), (FAR, 443)),
            UPLINK,
            (S::HOP_MAC, S::UP_MAC),
        );
        o.action.snat = at(S::UP6, 40000);
        let mut r = dir(
            key(UPLINK, (FAR, 443), (S::UP6, 40000)),
            PORT_A,
            (S::mac(S::A), S::GW_MAC),
        );
        r.action.dnat = at(A6, 40000);
        let (dirs, tracked, epoch) = installed(&dp);
        assert_eq!((dirs, epoch), ([o, r], dp.epoch32()));
        let Tracked::Conntrack6(slot) = tracked else {
            panic!("{tracked:?}")
        };
        let orig = crate::nat::v6::Tuple6 {
            proto: crate::config::L4Proto::Tcp,
            src: A6,
            src_port: 40000,
            dst: FAR,
            dst_port: 443,
        };
        assert!(dp.with_conntrack6(|ct| ct.is_tracked(slot, &orig)));
        // Later packets do not offer it again; its RST takes it back.
        run_one(&mut w, PORT_A, &to_far(ACK, BULK), T0);
        assert_eq!(drain(&dp), vec![]);
        run_one(&mut w, UPLINK, &back(RST), T0);
        assert_eq!(
            drain(&dp),
            vec![Request::Remove {
                keys: [o.key, r.key]
            }]
        );
    }

    #[test]
    fn a_fin_on_the_v6_full_path_takes_the_flow_back_too() {
        let s = S::nat66(false);
        let (dp, mut w) = nat66_offloading(&s);
        let back = |flags| seg6(FROM_HOP, (FAR, 443), (S::UP6, 40000), flags, b"");
        handshake(&mut w, (PORT_A, &to_far), (UPLINK, &back));
        assert_eq!(drain(&dp).len(), 1);
        // New tables: the shortcuts are of another epoch, the FIN takes the full path.
        dp.apply(&s.config).unwrap();
        let shortcuts = w.counters().shortcuts();
        run_one(&mut w, UPLINK, &back(FIN | ACK), T0);
        assert_eq!(w.counters().shortcuts(), shortcuts);
        assert!(matches!(drain(&dp)[..], [Request::Remove { .. }]));
    }

    #[test]
    fn a_connection_to_a_published_v6_port_is_offered_with_its_dnat() {
        let (dp, mut w) = nat66_offloading(&S::nat66(false));
        let syn = |f, d: &[u8]| seg6(FROM_HOP, (FAR, 50000), (S::UP6, 8080), f, d);
        let from_b = (S::GW_MAC, S::mac(S::B));
        let answer = |f| seg6(from_b, (B6, 80), (FAR, 50000), f, b"");
        handshake(&mut w, (UPLINK, &syn), (PORT_B, &answer));
        let mut o = dir(
            key(UPLINK, (FAR, 50000), (S::UP6, 8080)),
            PORT_B,
            (S::mac(S::B), S::GW_MAC),
        );
        o.action.dnat = at(B6, 80);
        let mut r = dir(
            key(PORT_B, (B6, 80), (FAR, 50000)),
            UPLINK,
            (S::HOP_MAC, S::UP_MAC),
        );
        r.action.snat = at(S::UP6, 8080);
        let (dirs, tracked, _) = installed(&dp);
        assert_eq!(dirs, [o, r]);
        assert!(matches!(tracked, Tracked::Conntrack6(_)));
    }

    #[test]
    fn a_routed_v6_network_flow_is_offered_untranslated() {
        let (dp, mut w) = nat66_offloading(&S::nat66(true));
        let back = |flags| seg6(FROM_HOP, (FAR, 443), (A6, 40000), flags, b"");
        handshake(&mut w, (PORT_A, &to_far), (UPLINK, &back));
        let o = dir(
            key(PORT_A, (A6, 40000), (FAR, 443)),
            UPLINK,
            (S::HOP_MAC, S::UP_MAC),
        );
        let r = dir(
            key(UPLINK, (FAR, 443), (A6, 40000)),
            PORT_A,
            (S::mac(S::A), S::GW_MAC),
        );
        assert_eq!(installed(&dp).0, [o, r]);
    }

    #[test]
    fn no_v6_offer_past_a_smaller_mtu_or_with_the_offload_off() {
        let mut s = S::nat66(false);
        s.config.uplink.as_mut().unwrap().mtu = 9000;
        let (dp, mut w) = nat66_offloading(&s);
        let back = |flags| seg6(FROM_HOP, (FAR, 443), (S::UP6, 40000), flags, b"");
        handshake(&mut w, (PORT_A, &to_far), (UPLINK, &back));
        assert_eq!(drain(&dp), vec![], "replies would leave by a smaller MTU");

        let s = S::nat66(false);
        let (dp, mut w) = nat66_offloading(&s);
        dp.offloads().set_enabled(false);
        handshake(&mut w, (PORT_A, &to_far), (UPLINK, &back));
        run_one(&mut w, PORT_A, &to_far(ACK, BULK), T0);
        assert_eq!(drain(&dp), vec![]);
    }
}
