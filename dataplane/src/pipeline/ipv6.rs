//! The IPv6 stage of a dual-stack network (one with `NetworkConfig::ipv6`): anti-spoofing of
//! endpoints' v6 frames (for `classify`), neighbour solicitations for the gateway's addresses
//! answered in place (for `bridge`, whatever the destination MAC), and the v6 gateway (for
//! `gateway`, frames to the gateway MAC): pings of its addresses answered in place, and routed
//! packets answered with ICMPv6 errors built in place (hop limit exceeded, packet too big, no
//! route, and admin-prohibited when NAT66 has no port left) or handed to `nat6`. Its drops:
//! not for us, unsupported, malformed, spoofed MAC or IP, TTL exceeded, too big, no route.
//!
//! The gateway answers for its global address and for its link-local address, the EUI-64 one
//! of the gateway MAC ([`ndisc::link_local`]). Routing between endpoints of one network is
//! bridging: their neighbour discovery is flooded and answered by the endpoints themselves.

use std::net::Ipv6Addr;

use super::gateway::wrap_quote;
use super::state::BatchState;
use crate::counters::DropReason as R;
use crate::counters::DropReason;
use crate::frame::{Frame, GsoType, Offload, Verdict};
use crate::overlay::OverlayEntry;
use crate::tables::{NetworkEntry, PortEntry};
use crate::wire::ethernet::{EthernetFrame, L2Header};
use crate::wire::icmpv6;
use crate::wire::ipv6::{Fragment, Ipv6Packet};
use crate::wire::ndisc::{self, NdiscPacket};
use crate::wire::{MacAddr, WireError, IPPROTO_ICMPV6};

/// ICMPv6 type of router advertisements, which only the gateway may send on a network.
const ROUTER_ADVERT: u8 = 134;
/// ICMPv6 type of redirects, which only the gateway may send on a network.
const REDIRECT: u8 = 137;

/// What the stage reads of an IPv6 packet: its addresses, hop limit, length, and its upper
/// layer (protocol and offset from the IPv6 header, after the extension headers).
pub(super) struct V6Info {
    /// Offset of the IPv6 header in the frame.
    pub(super) l3: usize,
    pub(super) src: Ipv6Addr,
    pub(super) dst: Ipv6Addr,
    pub(super) hop_limit: u8,
    /// IPv6 header plus payload.
    pub(super) total: usize,
    pub(super) proto: u8,
    /// Offset of the upper layer from `l3` (a non-first fragment: of its data).
    pub(super) l4: usize,
    /// The fragment header, when the packet is a fragment.
    pub(super) frag: Option<Fragment>,
}

/// Parses the IPv6 packet at `l3` of `d`.
pub(super) fn parse(d: &[u8], l3: usize) -> Result<V6Info, DropReason> {
    let ip = Ipv6Packet::new_checked(d.get(l3..).ok_or(R::Malformed)?).map_err(|_| R::Malformed)?;
    let ext = ip.extensions().map_err(|_| R::Malformed)?;
    Ok(V6Info {
        l3,
        src: ip.src(),
        dst: ip.dst(),
        hop_limit: ip.hop_limit(),
        total: ip.payload().len() + 40,
        proto: ext.proto,
        l4: ext.l4,
        frag: ext.fragment,
    })
}

/// The ICMPv6 type of the packet, when its upper layer is ICMPv6 with a whole header.
pub(super) fn icmp_type(d: &[u8], ip: &V6Info) -> Option<u8> {
    let at = ip.l3 + ip.l4;
    (ip.proto == IPPROTO_ICMPV6 && ip.l4 + icmpv6::HEADER_LEN <= ip.total).then(|| d[at])
}

/// True for the link-local prefix fe80::/10.
pub(super) fn is_link_local(ip: Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

/// Checks that an endpoint's IPv6 frame comes from one of its addresses: `own`, a link-local
/// one, or the unspecified address towards a multicast group (duplicate address detection and
/// its MLD report). Neighbour discovery must carry the endpoint's MAC in its link-layer options
/// and advertise only its own addresses; router advertisements and redirects are refused (the
/// gateway is the network's only router).
pub(super) fn check_source(
    d: &[u8],
    l3: usize,
    mac: MacAddr,
    own: Option<Ipv6Addr>,
) -> Result<(), DropReason> {
    let ip = parse(d, l3)?;
    let mine = |a: Ipv6Addr| Some(a) == own || is_link_local(a);
    if !(mine(ip.src) || ip.src.is_unspecified() && ip.dst.is_multicast()) {
        return Err(R::SpoofedIp);
    }
    match icmp_type(d, &ip) {
        Some(ndisc::NEIGHBOR_SOLICIT | ndisc::NEIGHBOR_ADVERT) => {
            let nd = NdiscPacket::new_checked(&d[l3 + ip.l4..l3 + ip.total])
                .map_err(|_| R::Malformed)?;
            let ll = nd.source_ll_addr().into_iter().chain(nd.target_ll_addr());
            if ll.into_iter().any(|m| m != mac) {
                return Err(R::SpoofedMac);
            }
            if nd.msg_type() == ndisc::NEIGHBOR_ADVERT && !mine(nd.target()) {
                return Err(R::SpoofedIp);
            }
            Ok(())
        }
        Some(ROUTER_ADVERT | REDIRECT) => Err(R::SpoofedIp),
        _ => Ok(()),
    }
}

/// Answers a neighbour solicitation for one of the gateway's v6 addresses, or for an endpoint
/// of overlay network `overlay` that lives on another host (so no solicitation crosses hosts),
/// in place; `None` when the frame is something else (or the network has no v6 gateway).
pub(super) fn ndp_for(
    f: &mut Frame<'_>,
    l2: &L2Header,
    net: &NetworkEntry,
    overlay: Option<&OverlayEntry>,
) -> Result<Option<Verdict>, DropReason> {
    let cfg = &net.config;
    let Some(v6) = cfg.ipv6 else {
        return Ok(None);
    };
    let l3 = l2.l3_offset;
    let target = {
        let d = f.data();
        let ip = parse(d, l3)?;
        if icmp_type(d, &ip) != Some(ndisc::NEIGHBOR_SOLICIT) {
            return Ok(None);
        }
        NdiscPacket::new_checked(&d[l3 + ip.l4..l3 + ip.total])
            .map_err(|_| R::Malformed)?
            .target()
    };
    if target == v6.gateway || target == ndisc::link_local(cfg.gateway_mac) {
        return advertise(f, l3, (cfg.gateway_mac, target), true).map(Some);
    }
    match overlay.and_then(|o| o.mac_of6(target)) {
        Some(mac) => advertise(f, l3, (mac, target), false).map(Some),
        None => Ok(None),
    }
}

/// Turns the neighbour solicitation for `target` at `l3` into the advertisement of
/// `(mac, target)` back out of the port it came in on (see [`ndisc::write_advert`]).
pub(super) fn advertise(
    f: &mut Frame<'_>,
    l3: usize,
    (mac, target): (MacAddr, Ipv6Addr),
    router: bool,
) -> Result<Verdict, DropReason> {
    let old = f.len();
    let end = l3 + ndisc::ADVERT_LEN;
    f.set_len(end.max(old)).map_err(|_| R::Malformed)?;
    match ndisc::write_advert(f.data_mut(), l3, (mac, target), router) {
        Ok(len) => {
            f.set_len(len).map_err(|_| R::Malformed)?;
            f.meta.offload = Offload::default();
            Ok(Verdict::Forward(f.meta.ingress))
        }
        Err(_) => {
            f.set_len(old).map_err(|_| R::Malformed)?;
            Err(R::Malformed)
        }
    }
}

impl<'t> BatchState<'t> {
    /// An IPv6 frame addressed to a network's gateway MAC: neighbour solicitation (unicast
    /// reachability probes), ping of the gateway, or a packet to route.
    pub(super) fn gateway6(
        &mut self,
        f: &mut Frame<'_>,
        l2: &L2Header,
        net: &'t NetworkEntry,
        port: &'t PortEntry,
    ) -> Result<Verdict, DropReason> {
        let cfg = &net.config;
        let v6 = cfg.ipv6.ok_or(R::Unsupported)?;
        if let Some(v) = ndp_for(f, l2, net, None)? {
            return Ok(v);
        }
        let l3 = l2.l3_offset;
        let ip = parse(f.data(), l3)?;
        let link_local = ndisc::link_local(cfg.gateway_mac);
        if ip.dst == v6.gateway || ip.dst == link_local {
            if icmp_type(f.data(), &ip) != Some(icmpv6::ECHO_REQUEST) {
                return Err(R::NotForUs);
            }
            icmpv6::write_echo_reply(f.data_mut(), l3, (cfg.gateway_mac, ip.dst))
                .map_err(|_| R::Malformed)?;
            return Ok(Verdict::Forward(f.meta.ingress));
        }
        if v6.subnet.contains(ip.dst) || is_link_local(ip.dst) || ip.dst.is_multicast() {
            return Err(R::NotForUs);
        }
        let from = if is_link_local(ip.src) {
            link_local
        } else {
            v6.gateway
        };
        let back = (cfg.gateway_mac, from);
        if ip.hop_limit <= 1 {
            let msg = (icmpv6::TIME_EXCEEDED, icmpv6::CODE_HOP_LIMIT_EXCEEDED, 0);
            return self.icmp6_back(f, &ip, back, msg, port, R::TtlExceeded);
        }
        let up_mtu = self.t.uplink_of(cfg).map(|u| usize::from(u.mtu));
        if let Some(mtu) = up_mtu.filter(|m| f.meta.offload.gso == GsoType::None && ip.total > *m) {
            let msg = (icmpv6::PACKET_TOO_BIG, 0, mtu as u32);
            return self.icmp6_back(f, &ip, back, msg, port, R::TooBig);
        }
        match self.nat6_out(f, &ip, net, port) {
            Ok(Some(v)) => return Ok(v),
            // No NAT66 port left: tell the sender at once, as the v4 gateway does.
            Err(r @ R::NatPortsExhausted) => {
                let msg = (icmpv6::DEST_UNREACHABLE, icmpv6::CODE_ADMIN_PROHIBITED, 0);
                return self.icmp6_back(f, &ip, back, msg, port, r);
            }
            r => r?,
        };
        let msg = (icmpv6::DEST_UNREACHABLE, icmpv6::CODE_NO_ROUTE, 0);
        self.icmp6_back(f, &ip, back, msg, port, R::NoRoute)
    }

    /// Answers the sender with an ICMPv6 error instead of forwarding, counting `reason`;
    /// never in answer to an ICMPv6 error or to a source that cannot be answered.
    fn icmp6_back(
        &mut self,
        f: &mut Frame<'_>,
        ip: &V6Info,
        from: (MacAddr, Ipv6Addr),
        msg: (u8, u8, u32),
        port: &PortEntry,
        reason: DropReason,
    ) -> Result<Verdict, DropReason> {
        let is_error = icmp_type(f.data(), ip).is_some_and(|t| t < 128);
        if is_error || ip.src.is_unspecified() || ip.src.is_multicast() {
            return Err(reason);
        }
        icmp6_error(f, ip.l3, from, msg).map_err(|_| reason)?;
        // The packet itself was dropped; what leaves is the error sent in its place.
        self.counters.drop_n(f.meta.ingress, reason, 1);
        Ok(Verdict::Forward(port.config.id))
    }
}

/// Replaces the IPv6 packet at `l3` by an ICMPv6 error from `(mac, ip)` to its sender, quoting
/// as much of it as fits in the minimum MTU, in place (RFC 4443). Needs 48 bytes of headroom
/// for an untagged frame; fails, leaving the frame as it was, when the headroom is too short.
fn icmp6_error(
    frame: &mut Frame<'_>,
    l3: usize,
    (mac, ip): (MacAddr, Ipv6Addr),
    message: (u8, u8, u32),
) -> Result<(), WireError> {
    let (quoted, asker) = {
        let d = frame.data();
        let orig = Ipv6Packet::new_checked(d.get(l3..).ok_or(WireError::Truncated("IPv6"))?)?;
        let asker_mac = EthernetFrame::new_checked(d)?.src();
        (icmpv6::quote_len(&orig), (asker_mac, orig.src()))
    };
    wrap_quote(frame, l3, quoted, icmpv6::ERROR_OVERHEAD, |error| {
        icmpv6::write_error(error, asker, (mac, ip), message)
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::pipeline::tests::*;
    use crate::wire::icmpv6::Icmpv6Packet;
    use etherparse::PacketBuilder;

    pub(crate) const GW6: Ipv6Addr = S::GW6;
    pub(crate) const A6: Ipv6Addr = S::A6;
    pub(crate) const B6: Ipv6Addr = S::B6;
    pub(crate) const FAR: Ipv6Addr = S::FAR6;

    /// The scenario with network "bridge" dual stack (fd00:17::/64), A and B with v6 addresses.
    pub(crate) fn dual_stack() -> Scenario {
        S::dual_stack()
    }

    /// An ICMPv6 frame built by etherparse (checksum filled): `(type, code, body word)`.
    pub(crate) fn icmp6(
        (dst_mac, src_mac): (MacAddr, MacAddr),
        (src, dst, hop): (Ipv6Addr, Ipv6Addr, u8),
        (ty, code, rest): (u8, u8, [u8; 4]),
        payload: &[u8],
    ) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
            .ipv6(src.octets(), dst.octets(), hop)
            .icmpv6_raw(ty, code, rest)
            .write(&mut v, payload)
            .unwrap();
        v
    }

    pub(crate) fn solicit(src: Ipv6Addr, target: Ipv6Addr, slla: MacAddr) -> Vec<u8> {
        let group = ndisc::solicited_node(target);
        let mut body = target.octets().to_vec();
        body.extend_from_slice(&[ndisc::OPT_SOURCE_LL_ADDR, 1]);
        body.extend_from_slice(&slla.0);
        let macs = (ndisc::multicast_mac(group), S::mac(S::A));
        icmp6(
            macs,
            (src, group, 255),
            (ndisc::NEIGHBOR_SOLICIT, 0, [0; 4]),
            &body,
        )
    }

    fn echo(dst_mac: MacAddr, src: Ipv6Addr, dst: Ipv6Addr, hop: u8, len: usize) -> Vec<u8> {
        let m = (dst_mac, S::mac(S::A));
        icmp6(
            m,
            (src, dst, hop),
            (icmpv6::ECHO_REQUEST, 0, [0, 7, 0, 1]),
            &vec![0x5a; len],
        )
    }

    /// The ICMPv6 message of a frame: type, code, body word, after checking its checksum.
    fn icmp_of(frame: &[u8]) -> (Ipv6Addr, Ipv6Addr, (u8, u8, u32)) {
        let ip = Ipv6Packet::new_checked(&frame[14..]).unwrap();
        let m = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert!(m.verify_checksum(ip.src(), ip.dst()));
        (
            ip.src(),
            ip.dst(),
            (m.msg_type(), m.code(), m.rest_of_header()),
        )
    }

    #[test]
    fn gateway_answers_neighbour_solicitation_for_both_addresses() {
        let mut w = worker_for(&dual_stack());
        let ll = ndisc::link_local(S::GW_MAC);
        for (src, target) in [(A6, GW6), (ndisc::link_local(S::mac(S::A)), ll)] {
            let (v, out) = run_one(&mut w, PORT_A, &solicit(src, target, S::mac(S::A)), T0);
            assert_eq!(v, Verdict::Forward(PORT_A));
            assert_eq!(&out[..12], &[S::mac(S::A).0, S::GW_MAC.0].concat()[..]);
            let (from, to, (ty, _, flags)) = icmp_of(&out);
            assert_eq!((from, to, ty), (target, src, ndisc::NEIGHBOR_ADVERT));
            assert_eq!(flags >> 24, 0xe0);
            let na = NdiscPacket::new_checked(&out[54..]).unwrap();
            assert_eq!(na.target_ll_addr(), Some(S::GW_MAC));
        }
        // Another endpoint's address is flooded for it to answer.
        let (v, _) = run_one(&mut w, PORT_A, &solicit(A6, B6, S::mac(S::A)), T0);
        assert!(matches!(v, Verdict::Flood { .. }));
    }

    #[test]
    fn overlay_answers_neighbour_solicitation_for_remote_endpoints() {
        use crate::frame::NetworkId;
        use crate::overlay::{OverlayConfig, RemoteEndpoint};
        let far = Ipv6Addr::new(0xfd00, 0x17, 0, 0, 0, 0, 0, 9);
        let far_mac = MacAddr([2, 0x42, 0xac, 0x11, 0, 9]);
        let mut s = dual_stack();
        s.config.overlays.push(OverlayConfig {
            network: NetworkId(0),
            vni: 4096,
            remotes: vec![RemoteEndpoint {
                mac: far_mac,
                ipv4: std::net::Ipv4Addr::new(172, 17, 0, 9),
                ipv6: Some(far),
                vtep: std::net::Ipv4Addr::new(192, 0, 2, 2),
            }],
        });
        let mut w = worker_for(&s);
        let (v, out) = run_one(&mut w, PORT_A, &solicit(A6, far, S::mac(S::A)), T0);
        assert_eq!(v, Verdict::Forward(PORT_A), "answered on this host");
        assert_eq!(&out[..12], &[S::mac(S::A).0, far_mac.0].concat()[..]);
        let (from, to, (ty, _, flags)) = icmp_of(&out);
        assert_eq!((from, to, ty), (far, A6, ndisc::NEIGHBOR_ADVERT));
        assert_eq!(flags >> 24, 0x60, "solicited and override, not a router");
        let na = NdiscPacket::new_checked(&out[54..]).unwrap();
        assert_eq!((na.target(), na.target_ll_addr()), (far, Some(far_mac)));
        // An address no host lists is not answered (and not flooded across hosts).
        let unknown = Ipv6Addr::new(0xfd00, 0x17, 0, 0, 0, 0, 0, 10);
        let (v, _) = run_one(&mut w, PORT_A, &solicit(A6, unknown, S::mac(S::A)), T0);
        assert!(matches!(v, Verdict::Flood { .. }), "{v:?}");
    }

    #[test]
    fn gateway_answers_ping6_in_place() {
        let mut w = worker_for(&dual_stack());
        for dst in [GW6, ndisc::link_local(S::GW_MAC)] {
            let (v, out) = run_one(&mut w, PORT_A, &echo(S::GW_MAC, A6, dst, 64, 56), T0);
            assert_eq!(v, Verdict::Forward(PORT_A));
            assert_eq!(
                icmp_of(&out),
                (dst, A6, (icmpv6::ECHO_REPLY, 0, 0x0007_0001))
            );
            assert_eq!(&out[0..6], &S::mac(S::A).0);
        }
        let not_echo = icmp6(
            (S::GW_MAC, S::mac(S::A)),
            (A6, GW6, 64),
            (icmpv6::ECHO_REPLY, 0, [0; 4]),
            b"",
        );
        assert_eq!(
            run_one(&mut w, PORT_A, &not_echo, T0).0,
            Verdict::Drop(R::NotForUs)
        );
    }

    #[test]
    fn endpoints_ping6_each_other_bridged() {
        let mut w = worker_for(&dual_stack());
        let from_b = icmp6(
            (S::mac(S::A), S::mac(S::B)),
            (B6, A6, 64),
            (icmpv6::ECHO_REPLY, 0, [0; 4]),
            b"",
        );
        assert_eq!(
            run_one(&mut w, PORT_B, &from_b, T0).0,
            Verdict::Forward(PORT_A)
        );
        let (v, out) = run_one(&mut w, PORT_A, &echo(S::mac(S::B), A6, B6, 64, 8), T0);
        assert_eq!(v, Verdict::Forward(PORT_B));
        assert_eq!(out, echo(S::mac(S::B), A6, B6, 64, 8));
    }

    /// `icc=false` holds for v6 too: endpoints reach only the gateway.
    #[test]
    fn icc_off_keeps_v6_endpoints_apart_but_not_from_the_gateway() {
        let mut s = dual_stack();
        s.config.networks[0].icc = false;
        let mut w = worker_for(&s);
        let (v, _) = run_one(&mut w, PORT_A, &echo(S::mac(S::B), A6, B6, 64, 8), T0);
        assert_eq!(v, Verdict::Drop(R::IccDenied));
        let (v, out) = run_one(&mut w, PORT_A, &echo(S::GW_MAC, A6, GW6, 64, 8), T0);
        assert_eq!(v, Verdict::Forward(PORT_A));
        assert_eq!(icmp_of(&out).2 .0, icmpv6::ECHO_REPLY);
    }

    #[test]
    fn anti_spoofing_of_v6_sources_and_neighbour_discovery() {
        let mut w = worker_for(&dual_stack());
        let to_b = (S::mac(S::B), S::mac(S::A));
        let body = (icmpv6::ECHO_REQUEST, 0, [0; 4]);
        let cases = [
            (icmp6(to_b, (B6, B6, 64), body, b""), R::SpoofedIp),
            (solicit(A6, B6, S::mac(S::B)), R::SpoofedMac),
            (
                icmp6(
                    to_b,
                    (A6, B6, 255),
                    (ndisc::NEIGHBOR_ADVERT, 0, [0x60, 0, 0, 0]),
                    &B6.octets(),
                ),
                R::SpoofedIp,
            ),
            (
                icmp6(to_b, (A6, B6, 255), (ROUTER_ADVERT, 0, [0; 4]), &[0; 8]),
                R::SpoofedIp,
            ),
            // Its own address advertised with another endpoint's MAC as target link-layer.
            (
                icmp6(
                    to_b,
                    (A6, B6, 255),
                    (ndisc::NEIGHBOR_ADVERT, 0, [0x60, 0, 0, 0]),
                    &[
                        &A6.octets()[..],
                        &[ndisc::OPT_TARGET_LL_ADDR, 1],
                        &S::mac(S::B).0,
                    ]
                    .concat(),
                ),
                R::SpoofedMac,
            ),
            (
                icmp6(to_b, (Ipv6Addr::UNSPECIFIED, B6, 64), body, b""),
                R::SpoofedIp,
            ),
        ];
        for (frame, reason) in cases {
            assert_eq!(run_one(&mut w, PORT_A, &frame, T0).0, Verdict::Drop(reason));
        }
        // Link-local sources, duplicate address detection and the endpoint's own advertisement.
        let ll = ndisc::link_local(S::mac(S::A));
        let own_advert = icmp6(
            to_b,
            (A6, B6, 255),
            (ndisc::NEIGHBOR_ADVERT, 0, [0x60, 0, 0, 0]),
            &A6.octets(),
        );
        for frame in [
            icmp6(to_b, (ll, B6, 64), body, b""),
            solicit(Ipv6Addr::UNSPECIFIED, A6, S::mac(S::A)),
            own_advert,
        ] {
            assert!(!matches!(
                run_one(&mut w, PORT_A, &frame, T0).0,
                Verdict::Drop(_)
            ));
        }
        // A v4-only network keeps bridging v6 with MAC anti-spoofing alone.
        let mut w = worker_for(&S::new());
        let (v, _) = run_one(&mut w, PORT_A, &icmp6(to_b, (B6, B6, 64), body, b""), T0);
        assert_eq!(v, Verdict::Forward(PORT_B));
        let to_gw = echo(S::GW_MAC, A6, GW6, 64, 8);
        assert_eq!(
            run_one(&mut w, PORT_A, &to_gw, T0).0,
            Verdict::Drop(R::Unsupported)
        );
    }

    #[test]
    fn routed_packets_get_icmpv6_errors_built_in_place() {
        let mut w = worker_for(&dual_stack());
        let cases = [
            (
                echo(S::GW_MAC, A6, FAR, 1, 8),
                (icmpv6::TIME_EXCEEDED, 0, 0),
                R::TtlExceeded,
            ),
            (
                echo(S::GW_MAC, A6, FAR, 64, 1500),
                (icmpv6::PACKET_TOO_BIG, 0, 1500),
                R::TooBig,
            ),
            (
                echo(S::GW_MAC, A6, FAR, 64, 8),
                (icmpv6::DEST_UNREACHABLE, icmpv6::CODE_NO_ROUTE, 0),
                R::NoRoute,
            ),
        ];
        for (frame, want, reason) in cases {
            let (v, out) = run_one(&mut w, PORT_A, &frame, T0);
            assert_eq!(v, Verdict::Forward(PORT_A), "{reason:?}");
            assert_eq!(icmp_of(&out), (GW6, A6, want));
            let quoted = (frame.len() - 14).min(icmpv6::MIN_MTU - 48);
            assert_eq!(&out[62..], &frame[14..14 + quoted]);
        }
        let c = w.counters();
        assert_eq!((c.drops(R::TtlExceeded), c.drops(R::TooBig)), (1, 1));
        assert_eq!(c.drops(R::NoRoute), 1);
        // No error answers an error; on-link destinations are not routed.
        let error = icmp6(
            (S::GW_MAC, S::mac(S::A)),
            (A6, FAR, 64),
            (icmpv6::DEST_UNREACHABLE, 4, [0; 4]),
            &[0; 48],
        );
        assert_eq!(
            run_one(&mut w, PORT_A, &error, T0).0,
            Verdict::Drop(R::NoRoute)
        );
        let on_link = echo(S::GW_MAC, A6, B6, 64, 8);
        assert_eq!(
            run_one(&mut w, PORT_A, &on_link, T0).0,
            Verdict::Drop(R::NotForUs)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Mutated v6 frames (solicitations, pings, routed packets, advertisements) from an
        /// endpoint of a dual-stack network always end in a verdict, never a panic.
        #[test]
        fn mutated_v6_frames_never_panic(which in 0usize..5, flips in proptest::collection::vec((0usize..120, any::<u8>()), 0..6)) {
            let ll = ndisc::link_local(S::mac(S::A));
            let mut f = match which {
                0 => solicit(A6, GW6, S::mac(S::A)),
                1 => solicit(Ipv6Addr::UNSPECIFIED, ll, S::mac(S::A)),
                2 => echo(S::GW_MAC, A6, GW6, 64, 16),
                3 => echo(S::GW_MAC, A6, FAR, 1, 40),
                _ => icmp6(
                    (S::mac(S::B), S::mac(S::A)),
                    (A6, B6, 255),
                    (ndisc::NEIGHBOR_ADVERT, 0, [0x60, 0, 0, 0]),
                    &[A6.octets().as_slice(), &[2, 1], &S::mac(S::A).0].concat(),
                ),
            };
            for (at, val) in flips {
                if at < f.len() { f[at] ^= val; }
            }
            let mut w = worker_for(&dual_stack());
            prop_assert_ne!(run_one(&mut w, PORT_A, &f, T0).0, Verdict::Pending);
        }
    }

    #[test]
    fn v6_addresses_are_checked_against_the_network() {
        let mut s = dual_stack();
        s.config.networks[0].ipv6.as_mut().unwrap().gateway = FAR;
        assert!(Dataplane::new(&s.config).is_err());
        let mut s = dual_stack();
        s.config.networks[0].ipv6 = None;
        assert!(matches!(
            Dataplane::new(&s.config).err(),
            Some(crate::tables::ConfigError::OutsideSubnetV6 { subnet: None, .. })
        ));
    }
}
