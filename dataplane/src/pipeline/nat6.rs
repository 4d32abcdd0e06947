//! The NAT66 stage: IPv6 between dual-stack networks and an uplink with a v6 side
//! (`Config::uplinks6`). Outbound (from `ipv6`'s gateway, after its hop-limit and MTU checks)
//! an endpoint's flow is masqueraded to the uplink's v6 address, or on a routed network
//! (`NetworkV6::routed`) tracked untranslated, and sent to the v6 next hop. Inbound (from
//! `uplink`, for frames that are not IPv4) the stage answers neighbour solicitations and
//! pings of the uplink's v6 address, learns the uplink's v6 neighbours, translates replies
//! (and ICMPv6 errors quoting a flow's packets, either way) back, and opens flows to published ports (a `-p` mapping on every address reaches the
//! endpoint's v6 address on the uplink's v6 address, as docker with ip6tables does) and, on
//! routed networks, to published container ports and pings of endpoints.
//!
//! The v6 flows and neighbours ([`V6Shared`]) sit under one mutex, taken once per batch by
//! the first frame that needs it; v4 frames never touch it. An unresolved next hop turns the
//! packet into a neighbour solicitation in its place (the packet is lost, counted as
//! `arp_pending`). Fragments follow their first fragment's flow (`frag6`). Its drops: not
//! for us, unsupported, malformed, fragment (a later fragment whose first was not seen), no
//! flow, no route, TTL exceeded, conntrack full, NAT ports exhausted.

use std::net::Ipv6Addr;

use hashbrown::HashMap;
use parking_lot::MutexGuard;

use super::flow6::{flow6_of, later_fragment, rewrite6, Flow6};
use super::frag6::Frags6;
use super::ipv6::{icmp_type, parse, V6Info};
use super::state::BatchState;
use super::MAX_NEIGHBORS;
use crate::config::{L4Proto, NatConfig, UplinkConfig, UplinkV6};
use crate::counters::DropReason as R;
use crate::counters::DropReason;
use crate::frame::{Frame, Offload, PortId, Verdict};
use crate::nat::v6::{Conntrack6, Hit6, Inside, Translate6};
use crate::nat::{Dir, NatError, Timeouts};
use crate::portfwd::Endpoint6;
use crate::tables::{NetworkEntry, PortEntry, PortMode, Tables};
use crate::wire::ethernet::{self, EthernetFrame, L2Header, ETHERTYPE_IPV6};
use crate::wire::icmpv6;
use crate::wire::ipv6::NH_FRAGMENT;
use crate::wire::ndisc::{self, NdiscPacket};
use crate::wire::tcp;
use crate::wire::MacAddr;

/// The v6 state all workers share: flows and the uplinks' v6 neighbours.
#[derive(Debug)]
pub struct V6Shared {
    /// NAT66, published-port and routed v6 flows.
    pub(super) ct: Conntrack6,
    /// (uplink port, address) to MAC, learned from neighbour discovery on the uplinks.
    pub(super) neighbors: HashMap<(PortId, Ipv6Addr), MacAddr>,
    /// The flows of fragmented packets' first fragments, for the later ones.
    pub(super) frags: Frags6,
}

impl V6Shared {
    /// Empty tables with the NAT limits of `nat`.
    pub(super) fn new(nat: &NatConfig) -> Self {
        V6Shared {
            ct: Conntrack6::new(nat.ports, nat.max_flows, Timeouts::default()),
            neighbors: HashMap::new(),
            frags: Frags6::default(),
        }
    }

    /// The v6 flow table (for listings and tests).
    pub fn conntrack(&self) -> &Conntrack6 {
        &self.ct
    }
}

/// The v6 side of uplink `port`, if it has one.
fn uplink6(t: &Tables, port: PortId) -> Option<&UplinkV6> {
    t.config().uplinks6.iter().find(|u| u.port == port)
}

/// The conntrack error's drop reason.
fn nat_drop(e: NatError) -> DropReason {
    match e {
        NatError::TableFull => R::ConntrackFull,
        NatError::PortsExhausted => R::NatPortsExhausted,
        _ => R::NoFlow,
    }
}

impl<'t> BatchState<'t> {
    /// The shared v6 state, locked once for the rest of the batch.
    pub(super) fn v6(&mut self) -> &mut V6Shared {
        let dp = self.dp;
        self.v6.get_or_insert_with(|| dp.v6.lock())
    }

    /// A routed v6 packet from endpoint `port` of `net` to beyond its prefix: masqueraded (or
    /// tracked, routed mode) and sent out of the network's uplink. `None` when the network has
    /// no v6 way out (internal, no uplink or no v6 side on it): the caller answers no-route.
    pub(super) fn nat6_out(
        &mut self,
        f: &mut Frame<'_>,
        ip: &V6Info,
        net: &'t NetworkEntry,
        port: &'t PortEntry,
    ) -> Result<Option<Verdict>, DropReason> {
        let t = self.t;
        let cfg = &net.config;
        let (Some(v6), false) = (cfg.ipv6, cfg.internal) else {
            return Ok(None);
        };
        let Some((up, up6)) = t
            .uplink_of(cfg)
            .and_then(|u| Some((u, uplink6(t, u.port)?)))
        else {
            return Ok(None);
        };
        let (mac, _) = port.endpoint.ok_or(R::Unsupported)?;
        if ip.l3 != ethernet::HEADER_LEN {
            return Err(R::Unsupported);
        }
        let flow = self.flow6(f.data(), ip)?;
        let how = if v6.routed {
            Translate6::None
        } else {
            Translate6::Masquerade(up6.ip.addr)
        };
        let inside = Inside {
            port: port.config.id,
            mac,
            uplink: up.port,
        };
        let opens = flow.quoted.is_none()
            && ip.proto != NH_FRAGMENT
            && (flow.tuple.proto != L4Proto::Icmp || flow.echo_request);
        let hit = self.track6(&flow, opens.then_some((how, inside, true)))?;
        if hit.outbound != (hit.dir == Dir::Original) || hit.inside.port != port.config.id {
            return Err(R::NoFlow);
        }
        let dst = hit.rewrite.dst;
        let hop = if up6.ip.contains(dst) {
            dst
        } else {
            up6.next_hop.ok_or(R::NoRoute)?
        };
        let Some(hop_mac) = self.v6().neighbors.get(&(up.port, hop)).copied() else {
            return self.solicit(f, up, up6, hop).map(Some);
        };
        let cache = self.may_remember6(f, ip, &flow);
        self.translate6(f, ip, &flow, &hit);
        set_l2(f, hop_mac, up.mac);
        f.meta.vlan = 0;
        if cache {
            // `gateway6` sent packets above the uplink's MTU to the too-big path.
            self.remember6(f, &hit, up.port, up.mtu);
        }
        Ok(Some(Verdict::Forward(up.port)))
    }

    /// A frame from uplink `up` that is not IPv4 or ARP: IPv6 to the uplink's v6 side.
    pub(super) fn uplink6(
        &mut self,
        f: &mut Frame<'_>,
        l2: &L2Header,
        up: &'t UplinkConfig,
    ) -> Result<Verdict, DropReason> {
        let t = self.t;
        let up6 = uplink6(t, up.port).filter(|_| l2.ethertype == ETHERTYPE_IPV6);
        let up6 = up6.ok_or(R::Unsupported)?;
        let ip = parse(f.data(), l2.l3_offset)?;
        if let Some(v) = self.ndp6(f, &ip, up, up6)? {
            return Ok(v);
        }
        if ip.dst.is_multicast() {
            return Ok(Verdict::Consumed);
        }
        if ip.l3 != ethernet::HEADER_LEN {
            return Err(R::Unsupported);
        }
        let flow = self.flow6(f.data(), &ip)?;
        let hit = match self.v6().ct.lookup(&flow.key()) {
            Some(hit) => hit,
            None if flow.echo_request && ip.dst == up6.ip.addr => {
                icmpv6::write_echo_reply(f.data_mut(), ip.l3, (up.mac, ip.dst))
                    .map_err(|_| R::Malformed)?;
                return Ok(Verdict::Forward(up.port));
            }
            None if flow.quoted.is_some() || ip.proto == NH_FRAGMENT => return Err(R::NoFlow),
            None => {
                let new = self.inbound6(&flow, up, up6).ok_or(R::NoFlow)?;
                self.track6(&flow, Some(new))?
            }
        };
        if hit.outbound != (hit.dir == Dir::Reply) || hit.inside.uplink != up.port {
            return Err(R::NoFlow);
        }
        if ip.hop_limit <= 1 {
            return Err(R::TtlExceeded);
        }
        let inside = hit.inside;
        let port = t
            .port(inside.port)
            .filter(|p| p.endpoint_v6 == Some(hit.rewrite.dst));
        let port = port.ok_or(R::NoRoute)?;
        let net = port.network.and_then(|n| t.network(n)).ok_or(R::NoRoute)?;
        let cache = self.may_remember6(f, &ip, &flow);
        self.translate6(f, &ip, &flow, &hit);
        set_l2(f, inside.mac, net.config.gateway_mac);
        f.meta.vlan = match port.mode {
            PortMode::Access { vlan } => vlan,
            _ => net.config.vlan,
        };
        if cache {
            self.remember6(f, &hit, inside.port, u16::MAX);
        }
        Ok(Verdict::Forward(inside.port))
    }

    /// The flow of packet `ip` in `d`: read from it, or for a later fragment the flow its
    /// first fragment had (which is remembered here).
    fn flow6(&mut self, d: &[u8], ip: &V6Info) -> Result<Flow6, DropReason> {
        let now = self.now;
        if ip.proto == NH_FRAGMENT {
            let first = self.v6().frags.lookup(ip, now).ok_or(R::Fragment)?;
            return Ok(later_fragment(first));
        }
        let flow = flow6_of(d, ip)?;
        if flow.quoted.is_none() {
            self.v6().frags.remember(ip, flow.tuple, now);
        }
        Ok(flow)
    }

    /// Accounts the packet to its flow (not an ICMPv6 error about it) and rewrites it to the
    /// flow's tuple.
    fn translate6(&mut self, f: &mut Frame<'_>, ip: &V6Info, flow: &Flow6, hit: &Hit6) {
        let now = self.now;
        if flow.quoted.is_none() {
            self.v6().ct.update(hit.flow, hit.dir, flow.tcp_flags, now);
            if self.offload && flow.tcp_flags & (tcp::FIN | tcp::RST) != 0 {
                self.take_back_routed6(hit);
            }
        }
        let partial = f.meta.offload.csum_partial;
        rewrite6(f.data_mut(), ip, flow, &flow.target(&hit.rewrite), partial);
    }

    /// The flow of `flow`: found, or created with `new` (translation, endpoint side, opened
    /// by the endpoint) when given.
    fn track6(
        &mut self,
        flow: &Flow6,
        new: Option<(Translate6, Inside, bool)>,
    ) -> Result<Hit6, DropReason> {
        let now = self.now;
        let ct = &mut self.v6().ct;
        if let Some(hit) = ct.lookup(&flow.key()) {
            return Ok(hit);
        }
        let (how, inside, outbound) = new.ok_or(R::NoFlow)?;
        ct.create(flow.tuple, how, (inside, outbound), now)
            .map_err(nat_drop)
    }

    /// What a new flow from the outside opens, if anything: a published port on the uplink's
    /// v6 address (a `-p` mapping on every address, to the endpoint's v6 address), or on a
    /// routed network a published container port or a ping of an endpoint.
    fn inbound6(
        &self,
        flow: &Flow6,
        up: &UplinkConfig,
        up6: &UplinkV6,
    ) -> Option<(Translate6, Inside, bool)> {
        let t = self.t;
        let tu = &flow.tuple;
        let routed_through_up =
            |n: &NetworkEntry| t.uplink_of(&n.config).is_some_and(|u| u.port == up.port);
        if tu.dst == up6.ip.addr {
            if tu.proto == L4Proto::Icmp {
                return None;
            }
            let target = t.forwards().lookup6(tu.proto, tu.dst, tu.dst_port)?;
            let net = t.network(target.network).filter(|n| routed_through_up(n))?;
            let ep = t.ports().find(|p| {
                p.network == Some(net.config.id)
                    && match target.endpoint {
                        Endpoint6::V6(ip6) => p.endpoint_v6 == Some(ip6),
                        Endpoint6::V4(ip) => p.endpoint.and_then(|(_, v4)| v4) == Some(ip),
                    }
            })?;
            let inside = inside_of(ep, up.port)?;
            return Some((
                Translate6::Publish(ep.endpoint_v6?, target.port),
                inside,
                false,
            ));
        }
        let net = t.networks().find(|n| {
            let v6 = n
                .config
                .ipv6
                .filter(|v| v.routed && v.subnet.contains(tu.dst));
            v6.is_some() && !n.config.internal && routed_through_up(n)
        })?;
        let ep = t
            .ports()
            .find(|p| p.network == Some(net.config.id) && p.endpoint_v6 == Some(tu.dst))?;
        let v4 = ep.endpoint.and_then(|(_, v4)| v4);
        let published = t.forwards().rules().iter().any(|r| {
            r.network == net.config.id
                && r.targets(v4, ep.endpoint_v6)
                && r.proto == tu.proto
                && r.target_ports.contains(tu.dst_port)
        });
        if !(published || flow.echo_request) {
            return None;
        }
        Some((Translate6::None, inside_of(ep, up.port)?, false))
    }

    /// Neighbour discovery on the uplink: learns the sender's (and an advertised target's)
    /// MAC, answers solicitations for the uplink's v6 addresses; `None` for other packets.
    fn ndp6(
        &mut self,
        f: &mut Frame<'_>,
        ip: &V6Info,
        up: &UplinkConfig,
        up6: &UplinkV6,
    ) -> Result<Option<Verdict>, DropReason> {
        let kind = icmp_type(f.data(), ip);
        if !matches!(kind, Some(ndisc::NEIGHBOR_SOLICIT | ndisc::NEIGHBOR_ADVERT)) {
            return Ok(None);
        }
        let (learn, target) = {
            let d = f.data();
            let nd = NdiscPacket::new_checked(&d[ip.l3 + ip.l4..ip.l3 + ip.total])
                .map_err(|_| R::Malformed)?;
            let learn = if kind == Some(ndisc::NEIGHBOR_ADVERT) {
                let mac = nd.target_ll_addr();
                mac.or_else(|| EthernetFrame::new_checked(d).ok().map(|e| e.src()))
                    .map(|m| (nd.target(), m))
            } else {
                let who = Some(ip.src).filter(|s| !s.is_unspecified());
                who.zip(nd.source_ll_addr())
            };
            (learn, nd.target())
        };
        if let Some((addr, mac)) = learn.filter(|(_, m)| !m.is_multicast()) {
            let n = &mut self.v6().neighbors;
            if n.len() < MAX_NEIGHBORS || n.contains_key(&(up.port, addr)) {
                // A moved neighbour retires the shortcuts taken with its old MAC.
                if n.insert((up.port, addr), mac).is_some_and(|old| old != mac) {
                    self.dp
                        .epoch
                        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                }
            }
        }
        let ours = target == up6.ip.addr || target == ndisc::link_local(up.mac);
        if kind != Some(ndisc::NEIGHBOR_SOLICIT) || !ours {
            return Ok(Some(Verdict::Consumed));
        }
        let old = f.len();
        f.set_len((ip.l3 + ndisc::ADVERT_LEN).max(old))
            .map_err(|_| R::Malformed)?;
        match ndisc::write_advert(f.data_mut(), ip.l3, (up.mac, target), false) {
            Ok(len) => {
                f.set_len(len).map_err(|_| R::Malformed)?;
                f.meta.offload = Offload::default();
                Ok(Some(Verdict::Forward(up.port)))
            }
            Err(_) => Err(R::Malformed),
        }
    }

    /// The frame becomes the neighbour solicitation for `hop` on `up`; the packet it carried
    /// is lost, counted as `arp_pending`.
    fn solicit(
        &mut self,
        f: &mut Frame<'_>,
        up: &UplinkConfig,
        up6: &UplinkV6,
        hop: Ipv6Addr,
    ) -> Result<Verdict, DropReason> {
        f.set_len(f.len().max(ndisc::SOLICIT_FRAME_LEN))
            .map_err(|_| R::ArpPending)?;
        let len = ndisc::write_solicit(f.data_mut(), (up.mac, up6.ip.addr), hop);
        f.set_len(len).map_err(|_| R::ArpPending)?;
        f.meta.offload = Offload::default();
        f.meta.vlan = 0;
        self.counters.drop_n(f.meta.ingress, R::ArpPending, 1);
        Ok(Verdict::Forward(up.port))
    }
}

/// The endpoint side of a flow to endpoint port `p` through uplink `uplink`.
fn inside_of(p: &PortEntry, uplink: PortId) -> Option<Inside> {
    let (mac, _) = p.endpoint?;
    Some(Inside {
        port: p.config.id,
        mac,
        uplink,
    })
}

/// Sets the Ethernet addresses of a routed frame.
fn set_l2(f: &mut Frame<'_>, dst: MacAddr, src: MacAddr) {
    let mut eth = EthernetFrame::new_unchecked(f.data_mut());
    eth.set_dst(dst);
    eth.set_src(src);
}

/// The v6 flows and neighbours, for the control plane.
pub type V6Guard<'a> = MutexGuard<'a, V6Shared>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::flow6::tests::checksum_ok;
    use crate::pipeline::ipv6::tests::{icmp6, A6, B6, FAR, GW6};
    use crate::pipeline::tests::*;
    use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

    const UP6: Ipv6Addr = S::UP6;
    const HOP6: Ipv6Addr = S::HOP6;

    /// The dual-stack scenario with a v6 side on the default uplink; `routed`: the network
    /// is in routed mode.
    fn nat66(routed: bool) -> Scenario {
        Scenario::nat66(routed)
    }

    /// A TCP segment between two v6 sockets in an Ethernet frame.
    fn tcp6(
        macs: (MacAddr, MacAddr),
        src: (Ipv6Addr, u16),
        dst: (Ipv6Addr, u16),
        syn: bool,
    ) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(macs.1 .0, macs.0 .0)
            .ipv6(src.0.octets(), dst.0.octets(), 64)
            .tcp(src.1, dst.1, 1, 1000);
        let b = if syn { b.syn() } else { b.ack(1) };
        let mut v = Vec::new();
        b.write(&mut v, b"hello").unwrap();
        v
    }

    /// A v6 address and port.
    type Sock6 = (Ipv6Addr, u16);

    /// The frame's v6 tuple, after checking its L4 checksum with etherparse.
    fn tuple6(frame: &[u8]) -> (Sock6, Sock6) {
        let p = SlicedPacket::from_ethernet(frame).unwrap();
        let Some(NetSlice::Ipv6(ip)) = p.net else {
            panic!("not IPv6")
        };
        let (s, d) = (ip.header().source(), ip.header().destination());
        let Some(TransportSlice::Tcp(t)) = p.transport else {
            panic!("not TCP")
        };
        let want = t
            .to_header()
            .calc_checksum_ipv6_raw(s, d, t.payload())
            .unwrap();
        assert_eq!(want, t.checksum(), "checksum");
        (
            (Ipv6Addr::from(s), t.source_port()),
            (Ipv6Addr::from(d), t.destination_port()),
        )
    }

    /// The next hop's advertisement of itself, as the outside router answers.
    fn advert_of_hop() -> Vec<u8> {
        let mut body = HOP6.octets().to_vec();
        body.extend_from_slice(&[ndisc::OPT_TARGET_LL_ADDR, 1]);
        body.extend_from_slice(&S::HOP_MAC.0);
        icmp6(
            (S::UP_MAC, S::HOP_MAC),
            (HOP6, UP6, 255),
            (ndisc::NEIGHBOR_ADVERT, 0, [0x60, 0, 0, 0]),
            &body,
        )
    }

    fn worker_with_hop(s: &Scenario) -> Worker {
        let mut w = worker_for(s);
        assert_eq!(
            run_one(&mut w, UPLINK, &advert_of_hop(), T0).0,
            Verdict::Consumed
        );
        w
    }

    #[test]
    fn outbound_flows_are_masqueraded_and_replies_translated_back() {
        let mut w = worker_with_hop(&nat66(false));
        let out = tcp6((S::GW_MAC, S::mac(S::A)), (A6, 40000), (FAR, 443), true);
        let (v, sent) = run_one(&mut w, PORT_A, &out, T0);
        assert_eq!(v, Verdict::Forward(UPLINK));
        assert_eq!(&sent[..12], &[S::HOP_MAC.0, S::UP_MAC.0].concat()[..]);
        assert_eq!(tuple6(&sent), ((UP6, 40000), (FAR, 443)));
        assert_eq!(sent[21], 63, "hop limit");
        let back = tcp6((S::UP_MAC, S::HOP_MAC), (FAR, 443), (UP6, 40000), false);
        let (v, got) = run_one(&mut w, UPLINK, &back, T0);
        assert_eq!(v, Verdict::Forward(PORT_A));
        assert_eq!(&got[..12], &[S::mac(S::A).0, S::GW_MAC.0].concat()[..]);
        assert_eq!(tuple6(&got), ((FAR, 443), (A6, 40000)));
        // B's flow from the same port towards the same destination gets another port.
        let from_b = tcp6((S::GW_MAC, S::mac(S::B)), (B6, 40000), (FAR, 443), true);
        let (_, sent_b) = run_one(&mut w, PORT_B, &from_b, T0);
        let (src, _) = tuple6(&sent_b);
        assert_eq!(src.0, UP6);
        assert_ne!(src.1, 40000);
        let dp = w.dataplane().clone();
        assert_eq!(dp.v6().conntrack().len(), 2);
        // Unsolicited traffic to the uplink's v6 address finds no flow.
        let stray = tcp6((S::UP_MAC, S::HOP_MAC), (FAR, 443), (UP6, 40001), false);
        assert_eq!(
            run_one(&mut w, UPLINK, &stray, T0).0,
            Verdict::Drop(R::NoFlow)
        );
        assert_eq!(dp.housekeeping(T0.plus_secs(200)).1, 2);
        assert!(dp.v6().conntrack().is_empty());
    }

    #[test]
    fn an_unresolved_next_hop_is_solicited_in_the_packets_place() {
        let mut w = worker_for(&nat66(false));
        let out = tcp6((S::GW_MAC, S::mac(S::A)), (A6, 40000), (FAR, 443), true);
        let (v, ns) = run_one(&mut w, PORT_A, &out, T0);
        assert_eq!(v, Verdict::Forward(UPLINK));
        let mut want = vec![0; ndisc::SOLICIT_FRAME_LEN];
        ndisc::write_solicit(&mut want, (S::UP_MAC, UP6), HOP6);
        assert_eq!(ns, want);
        assert_eq!(w.counters().drops(R::ArpPending), 1);
        assert_eq!(
            run_one(&mut w, UPLINK, &advert_of_hop(), T0).0,
            Verdict::Consumed
        );
        assert_eq!(
            run_one(&mut w, PORT_A, &out, T0).0,
            Verdict::Forward(UPLINK)
        );
    }

    #[test]
    fn published_ports_are_reached_on_the_uplinks_v6_address() {
        let mut w = worker_with_hop(&nat66(false));
        let syn = tcp6((S::UP_MAC, S::HOP_MAC), (FAR, 50000), (UP6, 8080), true);
        let (v, got) = run_one(&mut w, UPLINK, &syn, T0);
        assert_eq!(v, Verdict::Forward(PORT_B));
        assert_eq!(tuple6(&got), ((FAR, 50000), (B6, 80)));
        let answer = tcp6((S::GW_MAC, S::mac(S::B)), (B6, 80), (FAR, 50000), false);
        let (v, sent) = run_one(&mut w, PORT_B, &answer, T0);
        assert_eq!(v, Verdict::Forward(UPLINK));
        assert_eq!(tuple6(&sent), ((UP6, 8080), (FAR, 50000)));
        // Not published: nothing opens.
        let other = tcp6((S::UP_MAC, S::HOP_MAC), (FAR, 50000), (UP6, 8081), true);
        assert_eq!(
            run_one(&mut w, UPLINK, &other, T0).0,
            Verdict::Drop(R::NoFlow)
        );
    }

    /// A TCPv6 super-frame (GSO, checksum partial) longer than the uplink's MTU is masqueraded
    /// whole: no packet too big, and its pseudo-header sum follows the new source for the
    /// device that completes the checksum.
    #[test]
    fn tcp6_super_frames_cross_unsegmented() {
        use crate::batch::Batch;
        use crate::frame::{GsoType, Meta, HEADROOM};
        use crate::wire::checksum::{fold, ones_sum, pseudo_header_sum_v6};
        let mut w = worker_with_hop(&nat66(false));
        let syn = tcp6((S::GW_MAC, S::mac(S::A)), (A6, 40000), (FAR, 443), true);
        assert_eq!(
            run_one(&mut w, PORT_A, &syn, T0).0,
            Verdict::Forward(UPLINK)
        );
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(S::mac(S::A).0, S::GW_MAC.0)
            .ipv6(A6.octets(), FAR.octets(), 64)
            .tcp(40000, 443, 2, 1000)
            .ack(1)
            .write(&mut frame, &[0x5a; 4000])
            .unwrap();
        let psum = fold(pseudo_header_sum_v6(A6, FAR, 6, 4020));
        frame[70..72].copy_from_slice(&psum.to_be_bytes());
        let offload = Offload {
            gso: GsoType::TcpV6,
            gso_size: 1440,
            csum_partial: true,
            csum_start: 54,
            csum_offset: 16,
            ..Offload::default()
        };
        let mut buf = vec![0u8; HEADROOM + frame.len()];
        buf[HEADROOM..].copy_from_slice(&frame);
        let meta = Meta {
            ingress: PORT_A,
            offload,
            ..Meta::default()
        };
        let mut batch = Batch::new();
        let f = Frame::new(&mut buf, HEADROOM, frame.len(), meta).unwrap();
        batch.push(f).unwrap();
        w.process(&mut batch, T0);
        let f = &batch.frames()[0];
        assert_eq!(f.meta.verdict, Verdict::Forward(UPLINK));
        assert_eq!(f.meta.offload.gso, GsoType::TcpV6);
        let mut out = f.data().to_vec();
        assert_eq!(out.len(), frame.len(), "not segmented");
        // Completed as the device does, the checksum is right for the masqueraded segment.
        let c = !fold(ones_sum(&out[54..], 0));
        out[70..72].copy_from_slice(&c.to_be_bytes());
        assert_eq!(tuple6(&out), ((UP6, 40000), (FAR, 443)));
    }

    /// An IPv6-only network's rule names its endpoint by its v6 address alone.
    #[test]
    fn published_ports_without_a_v4_target_lead_to_the_v6_address() {
        let mut s = nat66(false);
        for f in &mut s.config.forwards {
            f.target_ip = None;
            f.target_ip6 = Some(B6);
        }
        let mut w = worker_with_hop(&s);
        let syn = tcp6((S::UP_MAC, S::HOP_MAC), (FAR, 50000), (UP6, 8080), true);
        let (v, got) = run_one(&mut w, UPLINK, &syn, T0);
        assert_eq!(v, Verdict::Forward(PORT_B));
        assert_eq!(tuple6(&got), ((FAR, 50000), (B6, 80)));
        let syn4 = S::from_outside(&tcp(S::REMOTE, 50000, S::UP, 8080, SYN, b""));
        assert_eq!(
            run_one(&mut w, UPLINK, &syn4, T0).0,
            Verdict::Drop(R::NoFlow),
            "not published over v4"
        );
    }

    #[test]
    fn the_uplinks_v6_address_answers_solicitations_and_pings() {
        let mut w = worker_for(&nat66(false));
        let group = ndisc::solicited_node(UP6);
        let mut body = UP6.octets().to_vec();
        body.extend_from_slice(&[ndisc::OPT_SOURCE_LL_ADDR, 1]);
        body.extend_from_slice(&S::HOP_MAC.0);
        let ns = icmp6(
            (ndisc::multicast_mac(group), S::HOP_MAC),
            (HOP6, group, 255),
            (ndisc::NEIGHBOR_SOLICIT, 0, [0; 4]),
            &body,
        );
        let (v, na) = run_one(&mut w, UPLINK, &ns, T0);
        assert_eq!(v, Verdict::Forward(UPLINK));
        assert_eq!(&na[..12], &[S::HOP_MAC.0, S::UP_MAC.0].concat()[..]);
        // The solicitation taught the asker's MAC: traffic out needs no solicitation.
        let out = tcp6((S::GW_MAC, S::mac(S::A)), (A6, 40000), (FAR, 443), true);
        assert_eq!(
            run_one(&mut w, PORT_A, &out, T0).0,
            Verdict::Forward(UPLINK)
        );
        let ping = icmp6(
            (S::UP_MAC, S::HOP_MAC),
            (FAR, UP6, 64),
            (icmpv6::ECHO_REQUEST, 0, [0, 9, 0, 1]),
            b"ping",
        );
        let (v, pong) = run_one(&mut w, UPLINK, &ping, T0);
        assert_eq!(v, Verdict::Forward(UPLINK));
        assert_eq!(pong[54], icmpv6::ECHO_REPLY);
    }

    #[test]
    fn routed_networks_keep_their_addresses_and_open_only_published_ports() {
        let mut w = worker_with_hop(&nat66(true));
        let out = tcp6((S::GW_MAC, S::mac(S::A)), (A6, 40000), (FAR, 443), true);
        let (v, sent) = run_one(&mut w, PORT_A, &out, T0);
        assert_eq!(v, Verdict::Forward(UPLINK));
        assert_eq!(tuple6(&sent), ((A6, 40000), (FAR, 443)));
        let back = tcp6((S::UP_MAC, S::HOP_MAC), (FAR, 443), (A6, 40000), false);
        assert_eq!(
            run_one(&mut w, UPLINK, &back, T0).0,
            Verdict::Forward(PORT_A)
        );
        let closed = tcp6((S::UP_MAC, S::HOP_MAC), (FAR, 50000), (A6, 22), true);
        assert_eq!(
            run_one(&mut w, UPLINK, &closed, T0).0,
            Verdict::Drop(R::NoFlow)
        );
        let published = tcp6((S::UP_MAC, S::HOP_MAC), (FAR, 50000), (B6, 80), true);
        let (v, got) = run_one(&mut w, UPLINK, &published, T0);
        assert_eq!(v, Verdict::Forward(PORT_B));
        assert_eq!(tuple6(&got), ((FAR, 50000), (B6, 80)));
        let ping = icmp6(
            (S::UP_MAC, S::HOP_MAC),
            (FAR, A6, 64),
            (icmpv6::ECHO_REQUEST, 0, [0, 9, 0, 1]),
            b"ping",
        );
        assert_eq!(
            run_one(&mut w, UPLINK, &ping, T0).0,
            Verdict::Forward(PORT_A)
        );
    }

    #[test]
    fn without_a_v6_uplink_or_internal_v6_is_not_routed() {
        let mut s = nat66(false);
        s.config.networks[0].internal = true;
        let mut w = worker_with_hop(&s);
        let out = tcp6((S::GW_MAC, S::mac(S::A)), (A6, 40000), (FAR, 443), true);
        let (v, err) = run_one(&mut w, PORT_A, &out, T0);
        assert_eq!(v, Verdict::Forward(PORT_A));
        assert_eq!(err[54], icmpv6::DEST_UNREACHABLE);
        assert_eq!(&err[22..38], &GW6.octets());
    }

    /// A UDP datagram between two v6 sockets in an Ethernet frame.
    fn udp6(
        macs: (MacAddr, MacAddr),
        src: (Ipv6Addr, u16),
        dst: (Ipv6Addr, u16),
        body: &[u8],
    ) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(macs.1 .0, macs.0 .0)
            .ipv6(src.0.octets(), dst.0.octets(), 64)
            .udp(src.1, dst.1)
            .write(&mut v, body)
            .unwrap();
        v
    }

    /// The ICMPv6 error `(type, code)` from `src` about `packet` (an Ethernet frame), sent to
    /// that packet's source on the Ethernet link `macs`.
    fn error_about(
        macs: (MacAddr, MacAddr),
        src: Ipv6Addr,
        msg: (u8, u8),
        packet: &[u8],
    ) -> Vec<u8> {
        let to = Ipv6Addr::from(<[u8; 16]>::try_from(&packet[22..38]).unwrap());
        icmp6(macs, (src, to, 64), (msg.0, msg.1, [0; 4]), &packet[14..])
    }

    /// The outer addresses of ICMPv6 error `frame` and the tuple of the packet it quotes, after
    /// checking both checksums with etherparse.
    fn error_parts(frame: &[u8]) -> ((Ipv6Addr, Ipv6Addr), (Sock6, Sock6)) {
        assert!(checksum_ok(frame), "ICMPv6 checksum");
        let mut quote = frame[..14].to_vec();
        quote.extend_from_slice(&frame[62..]);
        let addr = |at: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&frame[at..at + 16]).unwrap());
        ((addr(22), addr(38)), tuple6(&quote))
    }

    #[test]
    fn icmpv6_errors_about_outbound_flows_reach_the_endpoint() {
        let mut w = worker_with_hop(&nat66(false));
        let out = tcp6((S::GW_MAC, S::mac(S::A)), (A6, 40000), (FAR, 443), true);
        let (_, sent) = run_one(&mut w, PORT_A, &out, T0);
        let outside = (S::UP_MAC, S::HOP_MAC);
        let unreachable = (icmpv6::DEST_UNREACHABLE, icmpv6::CODE_PORT_UNREACHABLE);
        let err = error_about(outside, FAR, unreachable, &sent);
        let (v, got) = run_one(&mut w, UPLINK, &err, T0);
        assert_eq!(v, Verdict::Forward(PORT_A));
        assert_eq!(&got[..12], &[S::mac(S::A).0, S::GW_MAC.0].concat()[..]);
        let (outer, quoted) = error_parts(&got);
        assert_eq!(outer, (FAR, A6));
        assert_eq!(quoted, ((A6, 40000), (FAR, 443)));
        // A router on the way keeps its own address.
        let exceeded = (icmpv6::TIME_EXCEEDED, icmpv6::CODE_HOP_LIMIT_EXCEEDED);
        let err = error_about(outside, HOP6, exceeded, &sent);
        let (v, got) = run_one(&mut w, UPLINK, &err, T0);
        assert_eq!(v, Verdict::Forward(PORT_A));
        assert_eq!(error_parts(&got).0, (HOP6, A6));
        // An error about no flow, or about an error, goes nowhere.
        let stray = tcp6(outside, (UP6, 40001), (FAR, 443), true);
        let err = error_about(outside, FAR, unreachable, &stray);
        assert_eq!(
            run_one(&mut w, UPLINK, &err, T0).0,
            Verdict::Drop(R::NoFlow)
        );
        let nested = error_about(outside, FAR, unreachable, &err);
        assert_eq!(
            run_one(&mut w, UPLINK, &nested, T0).0,
            Verdict::Drop(R::Unsupported)
        );
    }

    #[test]
    fn icmpv6_errors_about_inbound_flows_reach_the_outside() {
        let mut w = worker_with_hop(&nat66(false));
        let syn = udp6((S::UP_MAC, S::HOP_MAC), (FAR, 50000), (UP6, 8080), b"q");
        let (v, at_b) = run_one(&mut w, UPLINK, &syn, T0);
        assert_eq!(v, Verdict::Forward(PORT_B));
        let unreachable = (icmpv6::DEST_UNREACHABLE, icmpv6::CODE_PORT_UNREACHABLE);
        let err = error_about((S::GW_MAC, S::mac(S::B)), B6, unreachable, &at_b);
        let (v, sent) = run_one(&mut w, PORT_B, &err, T0);
        assert_eq!(v, Verdict::Forward(UPLINK));
        assert_eq!(&sent[..12], &[S::HOP_MAC.0, S::UP_MAC.0].concat()[..]);
        let mut quote = sent[..14].to_vec();
        quote.extend_from_slice(&sent[62..]);
        assert!(checksum_ok(&sent) && checksum_ok(&quote), "checksums");
        assert_eq!(&sent[22..38], &UP6.octets(), "outer source");
        assert_eq!(&sent[38..54], &FAR.octets(), "outer destination");
        assert_eq!(&sent[62 + 24..62 + 40], &UP6.octets(), "quoted destination");
        assert_eq!(
            &sent[62 + 42..62 + 44],
            &8080u16.to_be_bytes(),
            "quoted port"
        );
        // An error from the other endpoint about B's flow is refused.
        let err = error_about((S::GW_MAC, S::mac(S::A)), A6, unreachable, &at_b);
        assert_eq!(
            run_one(&mut w, PORT_A, &err, T0).0,
            Verdict::Drop(R::NoFlow)
        );
    }

    /// `frame` (Ethernet, IPv6, upper layer) cut into two fragments of packet `ident`, the
    /// first carrying `split` bytes of the upper layer (a multiple of 8).
    fn fragments(frame: &[u8], split: usize, ident: u32) -> [Vec<u8>; 2] {
        let (head, upper) = (&frame[..54], &frame[54..]);
        let part = |data: &[u8], offset: usize, more: bool| {
            let mut v = head.to_vec();
            v[20] = crate::wire::ipv6::NH_FRAGMENT;
            v[18..20].copy_from_slice(&((8 + data.len()) as u16).to_be_bytes());
            let word = offset as u16 | u16::from(more);
            v.extend_from_slice(&[frame[20], 0]);
            v.extend_from_slice(&word.to_be_bytes());
            v.extend_from_slice(&ident.to_be_bytes());
            v.extend_from_slice(data);
            v
        };
        [
            part(&upper[..split], 0, true),
            part(&upper[split..], split, false),
        ]
    }

    /// The packet two fragments carry, reassembled (fragment header dropped).
    fn reassembled(first: &[u8], later: &[u8]) -> Vec<u8> {
        assert_eq!(first[8 + 14..54], later[8 + 14..54], "addresses");
        let mut v = first[..54].to_vec();
        v[20] = first[54];
        v.extend_from_slice(&first[62..]);
        v.extend_from_slice(&later[62..]);
        let len = (v.len() - 54) as u16;
        v[18..20].copy_from_slice(&len.to_be_bytes());
        v
    }

    #[test]
    fn fragments_follow_their_first_fragments_flow() {
        let mut w = worker_with_hop(&nat66(false));
        let body = [7u8; 100];
        let inside = (S::GW_MAC, S::mac(S::A));
        let [first, later] = fragments(&udp6(inside, (A6, 40000), (FAR, 53), &body), 48, 77);
        // A later fragment before its first one: counted, dropped.
        assert_eq!(
            run_one(&mut w, PORT_A, &later, T0).0,
            Verdict::Drop(R::Fragment)
        );
        let (v, out1) = run_one(&mut w, PORT_A, &first, T0);
        assert_eq!(v, Verdict::Forward(UPLINK));
        let (v, out2) = run_one(&mut w, PORT_A, &later, T0);
        assert_eq!(v, Verdict::Forward(UPLINK));
        let whole = reassembled(&out1, &out2);
        assert!(
            checksum_ok(&whole),
            "UDP checksum over the reassembled datagram"
        );
        assert_eq!(&whole[22..38], &UP6.octets());
        assert_eq!(out2[21], 63, "hop limit");
        // The reply, fragmented too, comes back to A.
        let outside = (S::UP_MAC, S::HOP_MAC);
        let [first, later] = fragments(&udp6(outside, (FAR, 53), (UP6, 40000), &body), 56, 9);
        assert_eq!(
            run_one(&mut w, UPLINK, &first, T0).0,
            Verdict::Forward(PORT_A)
        );
        let (v, back2) = run_one(&mut w, UPLINK, &later, T0);
        assert_eq!(v, Verdict::Forward(PORT_A));
        assert_eq!(&back2[38..54], &A6.octets());
        // Another packet's later fragment finds nothing.
        let [_, stray] = fragments(&udp6(outside, (FAR, 53), (UP6, 40000), &body), 56, 10);
        assert_eq!(
            run_one(&mut w, UPLINK, &stray, T0).0,
            Verdict::Drop(R::Fragment)
        );
    }

    #[test]
    fn an_exhausted_nat66_port_range_is_answered_admin_prohibited() {
        let mut s = nat66(false);
        s.config.nat.ports = crate::config::PortRange::single(40000);
        let mut w = worker_with_hop(&s);
        let out = tcp6((S::GW_MAC, S::mac(S::A)), (A6, 40000), (FAR, 443), true);
        assert_eq!(
            run_one(&mut w, PORT_A, &out, T0).0,
            Verdict::Forward(UPLINK)
        );
        let from_b = tcp6((S::GW_MAC, S::mac(S::B)), (B6, 40000), (FAR, 443), true);
        let (v, err) = run_one(&mut w, PORT_B, &from_b, T0);
        assert_eq!(v, Verdict::Forward(PORT_B));
        assert_eq!(
            (err[54], err[55]),
            (icmpv6::DEST_UNREACHABLE, icmpv6::CODE_ADMIN_PROHIBITED)
        );
        assert_eq!(w.counters().drops(R::NatPortsExhausted), 1);
    }

    #[test]
    fn conntrack_listings_show_v6_flows() {
        let s = nat66(false);
        let mut w = worker_with_hop(&s);
        let out = udp6((S::GW_MAC, S::mac(S::A)), (A6, 40000), (FAR, 53), b"q");
        assert_eq!(
            run_one(&mut w, PORT_A, &out, T0).0,
            Verdict::Forward(UPLINK)
        );
        let dp = w.dataplane().clone();
        let e = dp.conntrack_entries(T0);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].original.src.to_string(), "[fd00:17::2]:40000");
        assert_eq!(e[0].reply.dst.to_string(), "[2001:db8:1::1]:40000");
        assert_eq!(e[0].network, Some(s.config.networks[0].id));
        assert_eq!((e[0].state, e[0].protocol), ("UNREPLIED", L4Proto::Udp));
        assert_eq!(dp.stats().conntrack_flows, 1);
        let with = dp.stats_with_flows();
        assert_eq!(with.networks[0].conntrack_flows, Some(1));
    }

    /// A v6 session as records of the pipeline fuzz target: the next hop's advertisement, a
    /// masqueraded flow and its reply, an ICMPv6 error about it, a fragmented datagram, a
    /// published port and the endpoint's error about it, the flow's next packet (shortcut). Also the target's seed
    /// `fuzz/seeds/pipeline/v6_session`.
    fn v6_session() -> Vec<(u8, Vec<u8>)> {
        let (a, b) = ((S::GW_MAC, S::mac(S::A)), (S::GW_MAC, S::mac(S::B)));
        let outside = (S::UP_MAC, S::HOP_MAC);
        let [p_a, p_b, up] = [PORT_A, PORT_B, UPLINK].map(|p| p.0 as u8);
        let out = tcp6(a, (A6, 40000), (FAR, 443), true);
        let sent = tcp6(outside, (UP6, 40000), (FAR, 443), true);
        let unreachable = (icmpv6::DEST_UNREACHABLE, icmpv6::CODE_PORT_UNREACHABLE);
        let [first, later] = fragments(&udp6(a, (A6, 40001), (FAR, 53), &[7; 100]), 48, 77);
        let published = udp6(outside, (FAR, 50000), (UP6, 8080), b"q");
        let at_b = udp6(b, (FAR, 50000), (B6, 80), b"q");
        vec![
            (up, advert_of_hop()),
            (p_a, out.clone()),
            (up, tcp6(outside, (FAR, 443), (UP6, 40000), false)),
            (up, error_about(outside, FAR, unreachable, &sent)),
            (p_a, first),
            (p_a, later),
            (up, published),
            (p_b, error_about(b, B6, unreachable, &at_b)),
            (p_a, out),
        ]
    }

    #[test]
    fn the_v6_fuzz_seed_is_the_v6_session() {
        let mut w = worker_for(&nat66(false));
        for (p, f) in v6_session() {
            let (v, _) = run_one(&mut w, PortId(p.into()), &f, T0);
            assert!(
                matches!(v, Verdict::Forward(_) | Verdict::Consumed),
                "{v:?}"
            );
        }
        let seed = include_bytes!("../../../fuzz/seeds/pipeline/v6_session");
        assert_eq!(&seed[..], &records(&v6_session())[..]);
    }

    proptest::proptest! {
        /// A UDP datagram of any length cut at any 8-byte boundary leaves as two fragments
        /// whose reassembly carries the masqueraded source and a right checksum (etherparse).
        #[test]
        fn any_fragmented_datagram_is_masqueraded_whole(
            len in 9usize..400,
            cut in 1usize..50,
            ident in proptest::prelude::any::<u32>(),
        ) {
            let split = (cut * 8).min(len.div_ceil(8) * 8);
            let body: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let a = (S::GW_MAC, S::mac(S::A));
            let frame = udp6(a, (A6, 40000), (FAR, 53), &body);
            let [first, later] = fragments(&frame, split, ident);
            let mut w = worker_with_hop(&nat66(false));
            let (v1, out1) = run_one(&mut w, PORT_A, &first, T0);
            let (v2, out2) = run_one(&mut w, PORT_A, &later, T0);
            proptest::prop_assert_eq!((v1, v2), (Verdict::Forward(UPLINK), Verdict::Forward(UPLINK)));
            let whole = reassembled(&out1, &out2);
            proptest::prop_assert!(checksum_ok(&whole));
            proptest::prop_assert_eq!(&whole[22..38], &UP6.octets()[..]);
        }

        /// The pipeline fuzz target on mutations of the v6 session (ICMPv6 errors, fragments).
        #[test]
        fn fuzz_target_on_mutated_v6_sessions(
            flips in proptest::collection::vec((0usize..9, 0usize..120, proptest::prelude::any::<u8>()), 0..6),
        ) {
            let mut items = v6_session();
            for (i, at, val) in flips {
                let f = &mut items[i].1;
                if at < f.len() {
                    f[at] ^= val;
                }
            }
            crate::testkit::fuzz_frames(&records(&items));
        }
    }

    #[test]
    fn established_v6_flows_take_the_shortcut_both_ways() {
        let mut w = worker_with_hop(&nat66(false));
        let a = (S::GW_MAC, S::mac(S::A));
        let outside = (S::UP_MAC, S::HOP_MAC);
        let out = tcp6(a, (A6, 40000), (FAR, 443), true);
        let back = tcp6(outside, (FAR, 443), (UP6, 40000), false);
        let (_, full_out) = run_one(&mut w, PORT_A, &out, T0);
        let (_, full_back) = run_one(&mut w, UPLINK, &back, T0);
        assert_eq!(
            w.counters().shortcuts(),
            0,
            "first packets take the full path"
        );
        let (v, fast_out) = run_one(&mut w, PORT_A, &out, T0);
        assert_eq!((v, &fast_out), (Verdict::Forward(UPLINK), &full_out));
        let (v, fast_back) = run_one(&mut w, UPLINK, &back, T0);
        assert_eq!((v, &fast_back), (Verdict::Forward(PORT_A), &full_back));
        assert_eq!(w.counters().shortcuts(), 2);
        // Too big for the uplink: the full path answers packet too big.
        let big = udp6(a, (A6, 40000), (FAR, 443), &[0; 1500]);
        let mut big_tcp = tcp6(a, (A6, 40000), (FAR, 443), false);
        big_tcp.extend_from_slice(&big[62..]);
        let len = (big_tcp.len() - 54) as u16;
        big_tcp[18..20].copy_from_slice(&len.to_be_bytes());
        let (v, err) = run_one(&mut w, PORT_A, &big_tcp, T0);
        assert_eq!(
            (v, err[54]),
            (Verdict::Forward(PORT_A), icmpv6::PACKET_TOO_BIG)
        );
        // Another source MAC on A's port is not served.
        let mut spoofed = out.clone();
        spoofed[6..12].copy_from_slice(&S::mac(S::B).0);
        run_one(&mut w, PORT_A, &spoofed, T0);
        assert_eq!(w.counters().shortcuts(), 2);
        // The next hop moves: the shortcut is retired, packets go to its new MAC.
        let moved = MacAddr([2, 0, 0, 0, 0, 0x77]);
        let mut advert = advert_of_hop();
        let n = advert.len();
        advert[n - 6..].copy_from_slice(&moved.0);
        let c = icmpv6::message_sum(
            &{
                let mut m = advert[54..].to_vec();
                m[2..4].fill(0);
                m
            },
            HOP6,
            UP6,
        );
        advert[56..58].copy_from_slice(&(!c).to_be_bytes());
        assert_eq!(run_one(&mut w, UPLINK, &advert, T0).0, Verdict::Consumed);
        let (_, sent) = run_one(&mut w, PORT_A, &out, T0);
        assert_eq!(&sent[..6], &moved.0);
        assert_eq!(w.counters().shortcuts(), 2);
        let (_, sent) = run_one(&mut w, PORT_A, &out, T0);
        assert_eq!(&sent[..6], &moved.0);
        assert_eq!(
            w.counters().shortcuts(),
            3,
            "cached again under the new epoch"
        );
    }
}
