//! The ipvlan stage: sluice's own ipvlan (this kernel has none), for the frames of a network
//! with an `IpvlanConfig`, in place of the bridge. Every endpoint shows the parent's MAC on
//! the wire: sluice answers ARP for the endpoints' addresses with it, delivers what arrives for
//! it by destination address (rewriting the destination MAC to the endpoint's own, inside its
//! namespace), and rewrites the source MAC (and an ARP sender's) of what endpoints send.
//! Endpoints see each other at the parent's MAC too, and reach each other by address. L2 mode
//! floods broadcast and multicast (from the parent and from endpoints); L3 mode carries none,
//! but an endpoint's ARP request for an address on the parent's segment, which goes to the
//! parent only. IPv6 goes the same way, neighbour discovery standing for ARP: solicitations
//! for an endpoint's address (global, or the link-local of its MAC) are answered with the
//! parent's MAC, and the link-layer address options of what endpoints send carry it too.
//! Other ethertypes are bridged. Its drops: unknown destination (an address no endpoint has,
//! a MAC not the parent's), filtered (L3 broadcast and multicast), ICC denied, hairpin.

use std::net::IpAddr;

use super::flow::Ipv4Info;
use super::ipv6::{self as v6, advertise};
use super::state::BatchState;
use crate::config::{IpvlanConfig, IpvlanMode};
use crate::counters::DropReason as R;
use crate::counters::DropReason;
use crate::frame::{Frame, NetworkId, PortId, Verdict};
use crate::tables::{NetworkEntry, PortEntry};
use crate::wire::arp::{self, ArpPacket};
use crate::wire::ethernet::{
    EthernetFrame, L2Header, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6,
};
use crate::wire::ndisc::{self, NdiscPacket, NEIGHBOR_ADVERT, NEIGHBOR_SOLICIT};
use crate::wire::{ipv4, MacAddr};

impl<'t> BatchState<'t> {
    /// A classified frame of ipvlan network `net` that arrived on `port`: IPv4, ARP and IPv6
    /// by address, the rest to the bridge.
    #[inline]
    pub(super) fn ipvlan(
        &mut self,
        f: &mut Frame<'_>,
        l2: &L2Header,
        port: &'t PortEntry,
        (net_id, net): (NetworkId, &'t NetworkEntry),
        ip: Option<Ipv4Info>,
        iv: &IpvlanConfig,
    ) -> Result<Verdict, DropReason> {
        if !matches!(
            l2.ethertype,
            ETHERTYPE_IPV4 | ETHERTYPE_ARP | ETHERTYPE_IPV6
        ) {
            return self.bridge(f, l2, port, (net_id, net), ip);
        }
        let flood = Verdict::Flood {
            network: net_id,
            vlan: f.meta.vlan,
        };
        let sw = Switch {
            net,
            mac: iv.mac(&net.config),
            l2_mode: iv.mode == IpvlanMode::L2,
            flood,
        };
        if Some(f.meta.ingress) == iv.parent {
            sw.arriving(f, l2)
        } else {
            sw.leaving(f, l2, iv.parent)
        }
    }
}

/// What one frame's decision reads of its ipvlan network.
struct Switch<'t> {
    net: &'t NetworkEntry,
    /// The parent's MAC: what every endpoint is on the wire.
    mac: MacAddr,
    l2_mode: bool,
    /// The network's flood verdict for the frame's VLAN.
    flood: Verdict,
}

/// What the switch decides on of an ARP, IPv4 or IPv6 frame.
struct Ask {
    /// The address asked for (ARP, neighbour solicitation) or the destination.
    target: Option<IpAddr>,
    /// An ARP request or a neighbour solicitation, which sluice answers for endpoints.
    request: bool,
    /// Whether it may be delivered by `target` (not a request, nor an ARP packet but a reply).
    deliver: bool,
}

impl Switch<'_> {
    /// Broadcast and multicast: flooded in L2 mode, filtered in L3.
    fn group(&self) -> Result<Verdict, DropReason> {
        if self.l2_mode {
            Ok(self.flood)
        } else {
            Err(R::IpvlanFiltered)
        }
    }

    /// The endpoint holding `ip`: its MAC and port.
    fn endpoint(&self, ip: IpAddr) -> Option<(MacAddr, PortId)> {
        match ip {
            IpAddr::V4(ip) => self.net.neighbors.get(&ip).copied(),
            IpAddr::V6(ip) => self.net.neighbors6.get(&ip).copied(),
        }
    }

    /// From the parent: ARP and neighbour solicitations for an endpoint answered, the rest
    /// delivered by address.
    fn arriving(&self, f: &mut Frame<'_>, l2: &L2Header) -> Result<Verdict, DropReason> {
        let a = read(f.data(), l2)?;
        let hit = a.target.and_then(|t| Some((t, self.endpoint(t)?)));
        if let Some((target, _)) = hit.filter(|_| a.request) {
            return self.answer(f, l2, target);
        }
        if l2.dst.is_multicast() {
            return self.group();
        }
        match hit {
            Some((_, (mac, port))) if l2.dst == self.mac && a.deliver => {
                rewrite(f, l2, (None, Some(mac)))?;
                Ok(Verdict::Forward(port))
            }
            _ => Err(R::IpvlanUnknownDst),
        }
    }

    /// From an endpoint: to another endpoint by address (at the parent's MAC), else to the
    /// parent's segment, leaving with the parent's MAC as its source.
    fn leaving(
        &self,
        f: &mut Frame<'_>,
        l2: &L2Header,
        parent: Option<PortId>,
    ) -> Result<Verdict, DropReason> {
        let ingress = f.meta.ingress;
        let Ask {
            target, request, ..
        } = read(f.data(), l2)?;
        let to_us = l2.dst == self.mac || (request && l2.dst.is_multicast());
        let hit = target
            .filter(|_| to_us)
            .and_then(|t| Some((t, self.endpoint(t)?)));
        if let Some((target, (mac, port))) = hit {
            if port == ingress {
                return Err(R::Hairpin);
            }
            if !self.net.config.icc {
                return Err(R::IccDenied);
            }
            if request {
                return self.answer(f, l2, target);
            }
            rewrite(f, l2, (Some(self.mac), Some(mac)))?;
            return Ok(Verdict::Forward(port));
        }
        if l2.dst.is_multicast() && !(request && parent.is_some()) {
            rewrite(f, l2, (Some(self.mac), None))?;
            return self.group();
        }
        let parent = parent.ok_or(R::IpvlanUnknownDst)?;
        rewrite(f, l2, (Some(self.mac), None))?;
        Ok(if l2.dst.is_multicast() && self.l2_mode {
            self.flood
        } else {
            Verdict::Forward(parent)
        })
    }

    /// Answers an ARP request or a neighbour solicitation for endpoint address `ip` with the
    /// parent's MAC, in place.
    fn answer(&self, f: &mut Frame<'_>, l2: &L2Header, ip: IpAddr) -> Result<Verdict, DropReason> {
        match ip {
            IpAddr::V4(ip) => {
                arp::write_reply(f.data_mut(), l2.l3_offset, self.mac, ip)
                    .map_err(|_| R::Malformed)?;
                Ok(Verdict::Forward(f.meta.ingress))
            }
            IpAddr::V6(ip) => advertise(f, l2.l3_offset, (self.mac, ip), false),
        }
    }
}

/// What the switch decides on of the ARP, IPv4 or IPv6 packet of `d`.
fn read(d: &[u8], l2: &L2Header) -> Result<Ask, DropReason> {
    let l3 = d.get(l2.l3_offset..).ok_or(R::Malformed)?;
    match l2.ethertype {
        ETHERTYPE_ARP => {
            let a = ArpPacket::new_checked(l3).map_err(|_| R::Malformed)?;
            Ok(Ask {
                target: Some(a.target_ip().into()),
                request: a.operation() == arp::OP_REQUEST,
                deliver: a.operation() == arp::OP_REPLY,
            })
        }
        ETHERTYPE_IPV6 => read_v6(d, l2),
        _ => Ok(Ask {
            target: ipv4::peek_dst(l3).map(IpAddr::V4),
            request: false,
            deliver: true,
        }),
    }
}

/// [`read`] for IPv6: a neighbour solicitation asks for its target.
fn read_v6(d: &[u8], l2: &L2Header) -> Result<Ask, DropReason> {
    let ip = v6::parse(d, l2.l3_offset)?;
    let solicit = match v6::icmp_type(d, &ip) {
        Some(NEIGHBOR_SOLICIT | NEIGHBOR_ADVERT) => {
            let m = d.get(ip.l3 + ip.l4..ip.l3 + ip.total).ok_or(R::Malformed)?;
            let nd = NdiscPacket::new_checked(m).map_err(|_| R::Malformed)?;
            (nd.msg_type() == NEIGHBOR_SOLICIT).then(|| nd.target())
        }
        _ => None,
    };
    Ok(Ask {
        target: Some(solicit.unwrap_or(ip.dst).into()),
        request: solicit.is_some(),
        deliver: solicit.is_none(),
    })
}

/// Rewrites the source and destination MACs given, in the Ethernet header and in what
/// stands for them inside: an ARP packet's sender and target hardware addresses, the
/// link-layer address options of an endpoint's neighbour discovery (a new source).
fn rewrite(
    f: &mut Frame<'_>,
    l2: &L2Header,
    (src, dst): (Option<MacAddr>, Option<MacAddr>),
) -> Result<(), DropReason> {
    let (head, rest) = f.data_mut().split_at_mut(l2.l3_offset);
    let mut eth = EthernetFrame::new_checked(head).map_err(|_| R::Malformed)?;
    if let Some(m) = src {
        eth.set_src(m);
    }
    if let Some(m) = dst {
        eth.set_dst(m);
    }
    match (l2.ethertype, src) {
        (ETHERTYPE_ARP, _) => {
            let mut a = ArpPacket::new_checked(rest).map_err(|_| R::Malformed)?;
            if let Some(m) = src {
                a.set_sender_mac(m);
            }
            if let Some(m) = dst {
                a.set_target_mac(m);
            }
        }
        (ETHERTYPE_IPV6, Some(m)) => {
            ndisc::rewrite_ll_addrs(rest, m).map_err(|_| R::Malformed)?;
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::pipeline::ipv6::tests::icmp6;
    use crate::pipeline::tests::*;
    use crate::tables::{ConfigError, Tables};

    /// The parent's MAC.
    const P: MacAddr = MacAddr([2, 0x50, 0, 0, 0, 1]);
    /// A neighbour on the parent's segment.
    const OUT_MAC: MacAddr = MacAddr([2, 0x60, 0, 0, 0, 1]);
    const OUT: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 200);
    /// Network 0's flood on its own VLAN.
    const FLOOD: Verdict = Verdict::Flood {
        network: NetworkId(0),
        vlan: 0,
    };

    /// The scenario's network 0 as ipvlan in `mode`, its trunk the parent (native VLAN 0).
    fn ipvlan(mode: IpvlanMode) -> Worker {
        ipvlan_of(S::new(), mode)
    }

    /// Network 0 of `s` as ipvlan in `mode`, its trunk the parent.
    fn ipvlan_of(mut s: Scenario, mode: IpvlanMode) -> Worker {
        let n = &mut s.config.networks[0];
        n.external_gateway = true;
        n.ipvlan = Some(IpvlanConfig {
            mode,
            parent: Some(TRUNK),
            parent_mac: Some(P),
        });
        worker_for(&s)
    }

    fn eth_of(f: &[u8]) -> (MacAddr, MacAddr) {
        let e = EthernetFrame::new_checked(f).unwrap();
        (e.dst(), e.src())
    }

    fn arp_of(f: &[u8]) -> (u16, MacAddr, Ipv4Addr, MacAddr) {
        let a = ArpPacket::new_checked(&f[14..]).unwrap();
        (a.operation(), a.sender_mac(), a.sender_ip(), a.target_mac())
    }

    #[test]
    fn the_parents_segment_sees_every_endpoint_at_the_parents_mac() {
        for mode in [IpvlanMode::L2, IpvlanMode::L3] {
            let mut w = ipvlan(mode);
            let (v, out) = run_one(&mut w, TRUNK, &arp_request(OUT_MAC, OUT, S::A), T0);
            assert_eq!(v, Verdict::Forward(TRUNK), "{mode:?}");
            assert_eq!(eth_of(&out), (OUT_MAC, P));
            assert_eq!(arp_of(&out), (arp::OP_REPLY, P, S::A, OUT_MAC));

            let to_a = eth(P, OUT_MAC, 0x0800, &udp(OUT, 1, S::A, 2, b"x"));
            let (v, out) = run_one(&mut w, TRUNK, &to_a, T0);
            assert_eq!(v, Verdict::Forward(PORT_A));
            assert_eq!(eth_of(&out), (S::mac(S::A), OUT_MAC));
            assert_eq!(out[12..], to_a[12..], "only the MAC changes");

            let reply = arp_reply(OUT_MAC, OUT, P, S::B);
            let (v, out) = run_one(&mut w, TRUNK, &reply, T0);
            assert_eq!(v, Verdict::Forward(PORT_B));
            assert_eq!(eth_of(&out).0, S::mac(S::B));
            assert_eq!(arp_of(&out).3, S::mac(S::B));

            let nobody = eth(P, OUT_MAC, 0x0800, &udp(OUT, 1, S::GW, 2, b"x"));
            let other_mac = eth(S::mac(S::A), OUT_MAC, 0x0800, &udp(OUT, 1, S::A, 2, b"x"));
            for f in [nobody, other_mac] {
                let v = run_one(&mut w, TRUNK, &f, T0).0;
                assert_eq!(v, Verdict::Drop(R::IpvlanUnknownDst));
            }
        }
    }

    #[test]
    fn endpoints_leave_with_the_parents_mac_and_meet_at_it() {
        for mode in [IpvlanMode::L2, IpvlanMode::L3] {
            let mut w = ipvlan(mode);
            let out_f = eth(OUT_MAC, S::mac(S::A), 0x0800, &udp(S::A, 1, OUT, 2, b"x"));
            let (v, out) = run_one(&mut w, PORT_A, &out_f, T0);
            assert_eq!(v, Verdict::Forward(TRUNK), "{mode:?}");
            assert_eq!(eth_of(&out), (OUT_MAC, P));

            let (v, out) = run_one(&mut w, PORT_A, &arp_request(S::mac(S::A), S::A, S::B), T0);
            assert_eq!(v, Verdict::Forward(PORT_A), "sluice answers for B");
            assert_eq!(arp_of(&out), (arp::OP_REPLY, P, S::B, S::mac(S::A)));

            let a_to_b = eth(P, S::mac(S::A), 0x0800, &udp(S::A, 1, S::B, 2, b"x"));
            let (v, out) = run_one(&mut w, PORT_A, &a_to_b, T0);
            assert_eq!(v, Verdict::Forward(PORT_B));
            assert_eq!(eth_of(&out), (S::mac(S::B), P));

            let (v, out) = run_one(&mut w, PORT_A, &arp_request(S::mac(S::A), S::A, OUT), T0);
            let want = match mode {
                IpvlanMode::L2 => FLOOD,
                IpvlanMode::L3 => Verdict::Forward(TRUNK),
            };
            assert_eq!(
                v, want,
                "an ARP request for the segment goes out at the parent's MAC"
            );
            assert_eq!(eth_of(&out), (MacAddr::BROADCAST, P));
            assert_eq!(arp_of(&out).1, P);
        }
    }

    #[test]
    fn l3_carries_no_broadcast_l2_floods_it() {
        let bcast = |from: Ipv4Addr, src: MacAddr| {
            eth(
                MacAddr::BROADCAST,
                src,
                0x0800,
                &udp(from, 1, Ipv4Addr::BROADCAST, 2, b"x"),
            )
        };
        let mut l2 = ipvlan(IpvlanMode::L2);
        let mut l3 = ipvlan(IpvlanMode::L3);
        for (port, f) in [
            (TRUNK, bcast(OUT, OUT_MAC)),
            (PORT_A, bcast(S::A, S::mac(S::A))),
            (TRUNK, arp_request(OUT_MAC, OUT, S::GW)),
        ] {
            assert_eq!(run_one(&mut l2, port, &f, T0).0, FLOOD);
            assert_eq!(
                run_one(&mut l3, port, &f, T0).0,
                Verdict::Drop(R::IpvlanFiltered)
            );
        }
        assert_eq!(l3.counters().drops(R::IpvlanFiltered), 3);
    }

    /// A neighbour on the parent's segment, by v6.
    const OUT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x17, 0, 0, 0, 0, 0, 0xc8);

    /// The dual-stack scenario's network 0 as ipvlan in `mode`.
    fn ipvlan6(mode: IpvlanMode) -> Worker {
        ipvlan_of(S::dual_stack(), mode)
    }

    /// A neighbour solicitation or advertisement from `(mac, src)` to `(dst_mac, dst)` for
    /// `target` with a link-layer address option of `mac`.
    fn nd(
        kind: u8,
        (mac, src): (MacAddr, Ipv6Addr),
        dst: (MacAddr, Ipv6Addr),
        target: Ipv6Addr,
    ) -> Vec<u8> {
        let (opt, flags) = match kind {
            NEIGHBOR_SOLICIT => (ndisc::OPT_SOURCE_LL_ADDR, 0),
            _ => (ndisc::OPT_TARGET_LL_ADDR, ndisc::FLAG_OVERRIDE),
        };
        let mut body = target.octets().to_vec();
        body.extend_from_slice(&[opt, 1]);
        body.extend_from_slice(&mac.0);
        icmp6(
            (dst.0, mac),
            (src, dst.1, 255),
            (kind, 0, [flags, 0, 0, 0]),
            &body,
        )
    }

    /// A solicitation from `(mac, src)` for `target`, to its solicited-node group.
    fn ns(from: (MacAddr, Ipv6Addr), target: Ipv6Addr) -> Vec<u8> {
        let group = ndisc::solicited_node(target);
        let to = (ndisc::multicast_mac(group), group);
        nd(NEIGHBOR_SOLICIT, from, to, target)
    }

    /// A ping from `src` to `(dst_mac, dst)`.
    fn ping6(src: (MacAddr, Ipv6Addr), (dst_mac, dst): (MacAddr, Ipv6Addr)) -> Vec<u8> {
        icmp6(
            (dst_mac, src.0),
            (src.1, dst, 64),
            (128, 0, [0, 1, 0, 1]),
            b"ping",
        )
    }

    /// The NDP message of `f` after checking its checksum: type, target and LL option's MAC.
    fn nd_of(f: &[u8]) -> (u8, Ipv6Addr, Option<MacAddr>) {
        let ip = crate::wire::ipv6::Ipv6Packet::new_checked(&f[14..]).unwrap();
        let m = NdiscPacket::new_checked(ip.payload()).unwrap();
        assert!(m.verify_checksum(ip.src(), ip.dst()), "checksum");
        let ll = m.source_ll_addr().or(m.target_ll_addr());
        (m.msg_type(), m.target(), ll)
    }

    #[test]
    fn the_parents_segment_solicits_endpoints_at_the_parents_mac_and_reaches_them_by_v6() {
        for mode in [IpvlanMode::L2, IpvlanMode::L3] {
            let mut w = ipvlan6(mode);
            for target in [S::A6, ndisc::link_local(S::mac(S::A))] {
                let (v, out) = run_one(&mut w, TRUNK, &ns((OUT_MAC, OUT6), target), T0);
                assert_eq!(v, Verdict::Forward(TRUNK), "{mode:?}");
                assert_eq!(eth_of(&out), (OUT_MAC, P));
                assert_eq!(nd_of(&out), (NEIGHBOR_ADVERT, target, Some(P)));
            }
            let to_b = ping6((OUT_MAC, OUT6), (P, S::B6));
            let (v, out) = run_one(&mut w, TRUNK, &to_b, T0);
            assert_eq!(v, Verdict::Forward(PORT_B));
            assert_eq!(eth_of(&out), (S::mac(S::B), OUT_MAC));
            assert_eq!(out[12..], to_b[12..], "only the MAC changes");

            let nobody = ping6((OUT_MAC, OUT6), (P, S::GW6));
            let other_mac = ping6((OUT_MAC, OUT6), (S::mac(S::B), S::B6));
            for f in [nobody, other_mac] {
                let v = run_one(&mut w, TRUNK, &f, T0).0;
                assert_eq!(v, Verdict::Drop(R::IpvlanUnknownDst));
            }
        }
    }

    #[test]
    fn endpoints_neighbour_discovery_leaves_with_the_parents_mac() {
        let a = (S::mac(S::A), S::A6);
        for mode in [IpvlanMode::L2, IpvlanMode::L3] {
            let mut w = ipvlan6(mode);
            let (v, out) = run_one(&mut w, PORT_A, &ns(a, OUT6), T0);
            let want = match mode {
                IpvlanMode::L2 => FLOOD,
                IpvlanMode::L3 => Verdict::Forward(TRUNK),
            };
            assert_eq!(v, want, "{mode:?}");
            assert_eq!(eth_of(&out).1, P);
            assert_eq!(nd_of(&out), (NEIGHBOR_SOLICIT, OUT6, Some(P)));

            let na = nd(NEIGHBOR_ADVERT, a, (OUT_MAC, OUT6), S::A6);
            let (v, out) = run_one(&mut w, PORT_A, &na, T0);
            assert_eq!(v, Verdict::Forward(TRUNK));
            assert_eq!(eth_of(&out), (OUT_MAC, P));
            assert_eq!(nd_of(&out), (NEIGHBOR_ADVERT, S::A6, Some(P)));

            let (v, out) = run_one(&mut w, PORT_A, &ns(a, S::B6), T0);
            assert_eq!(v, Verdict::Forward(PORT_A), "sluice answers for B");
            assert_eq!(eth_of(&out), (S::mac(S::A), P));
            assert_eq!(nd_of(&out), (NEIGHBOR_ADVERT, S::B6, Some(P)));

            let (v, out) = run_one(&mut w, PORT_A, &ping6(a, (P, S::B6)), T0);
            assert_eq!(v, Verdict::Forward(PORT_B));
            assert_eq!(eth_of(&out), (S::mac(S::B), P));

            let dad = ns((S::mac(S::A), Ipv6Addr::UNSPECIFIED), S::A6);
            let v = run_one(&mut w, PORT_A, &dad, T0).0;
            assert_eq!(v, Verdict::Drop(R::Hairpin));
        }
    }

    #[test]
    fn l3_carries_no_v6_multicast_l2_floods_it() {
        let all = (ndisc::multicast_mac(ndisc::ALL_NODES), ndisc::ALL_NODES);
        let mut l2 = ipvlan6(IpvlanMode::L2);
        let mut l3 = ipvlan6(IpvlanMode::L3);
        for (port, f) in [
            (TRUNK, ping6((OUT_MAC, OUT6), all)),
            (PORT_A, ping6((S::mac(S::A), S::A6), all)),
            (TRUNK, ns((OUT_MAC, OUT6), S::GW6)),
        ] {
            assert_eq!(run_one(&mut l2, port, &f, T0).0, FLOOD);
            assert_eq!(
                run_one(&mut l3, port, &f, T0).0,
                Verdict::Drop(R::IpvlanFiltered)
            );
        }
        assert_eq!(l3.counters().drops(R::IpvlanFiltered), 3);
    }

    #[test]
    fn private_endpoints_and_hairpins_are_refused() {
        let mut s = S::new();
        let n = &mut s.config.networks[0];
        n.external_gateway = true;
        n.icc = false;
        n.ipvlan = Some(IpvlanConfig {
            mode: IpvlanMode::L2,
            parent: Some(TRUNK),
            parent_mac: None,
        });
        let gw_mac = n.gateway_mac;
        let mut w = worker_for(&s);
        let a_to_b = eth(gw_mac, S::mac(S::A), 0x0800, &udp(S::A, 1, S::B, 2, b"x"));
        assert_eq!(
            run_one(&mut w, PORT_A, &a_to_b, T0).0,
            Verdict::Drop(R::IccDenied),
            "without a known parent MAC the gateway's stands in"
        );
        let a_to_a = eth(gw_mac, S::mac(S::A), 0x0800, &udp(S::A, 1, S::A, 2, b"x"));
        assert_eq!(
            run_one(&mut w, PORT_A, &a_to_a, T0).0,
            Verdict::Drop(R::Hairpin)
        );
        let (v, _) = run_one(&mut w, TRUNK, &arp_request(OUT_MAC, OUT, S::B), T0);
        assert_eq!(v, Verdict::Forward(TRUNK), "the segment still reaches them");
    }

    #[test]
    fn the_parent_must_be_the_networks_own_port() {
        let mut s = S::new();
        s.config.networks[1].ipvlan = Some(IpvlanConfig {
            mode: IpvlanMode::L3,
            parent: Some(TRUNK),
            parent_mac: None,
        });
        assert!(matches!(
            Tables::build(&s.config, None),
            Err(ConfigError::IpvlanParent { port: 3, .. })
        ));
    }
}
