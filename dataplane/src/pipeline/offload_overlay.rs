//! The offload stage for overlay flows (see `crate::offload::overlay`): a flow between a local
//! overlay endpoint and a remote one, seen both ways past the handshake, is offered from its
//! next outbound frame, right after userspace wrapped it in VXLAN, because that frame carries
//! everything the kernel must write (outer MACs of the resolved next hop, both VTEPs, VNI, UDP
//! source port). A FIN or RST either way takes an offered flow back. It drops nothing.

use std::net::IpAddr;

use sluice_offload::FlowKey;

use super::offload6::plain6;
use super::plain;
use super::state::BatchState;
use crate::frame::{Frame, PortId};
use crate::nat::Timeouts;
use crate::offload::{self, LocalEnd, PortOut, Request, Tracked};
use crate::tables::PortEntry;
use crate::wire::ethernet::{self, EthernetFrame, ETHERTYPE_IPV4};
use crate::wire::ipv4::{self, Ipv4Packet};
use crate::wire::tcp::{ACK, FIN, RST, SYN};
use crate::wire::udp::{self, UdpPacket};
use crate::wire::vxlan::{self, OuterV4, VxlanHeader};
use crate::wire::IPPROTO_UDP;

/// What a frame of an overlay flow means for its offload.
enum Step {
    /// A FIN or RST: the flow leaves the kernel.
    Close,
    /// Past the handshake (or UDP): the flow may be offered.
    Established,
    /// A handshake frame: nothing yet.
    Opening,
}

/// The flow of an inner frame of the shape the offload forwards (untagged IPv4 or IPv6, TCP
/// or UDP right after the IP header), as a key without interface, and what it means.
fn inner_flow(d: &[u8]) -> Option<(FlowKey, Step)> {
    let (t, tcp_flags) = match plain::parse(d) {
        Some(p) => (offload::flow_key(&p.tuple, 0), p.tcp_flags),
        None => plain6(d).map(|(t, flags)| (offload::flow_key(&t, 0), flags))?,
    };
    let step = match tcp_flags {
        _ if t.proto != 6 => Step::Established,
        f if f & (FIN | RST) != 0 => Step::Close,
        f if f & (SYN | ACK) == ACK => Step::Established,
        _ => Step::Opening,
    };
    Some((t, step))
}

/// True when `ip` is local endpoint `port`'s own address (IPv4 or IPv6).
fn owns(port: &PortEntry, ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => port.endpoint.is_some_and(|(_, own)| own == Some(ip)),
        IpAddr::V6(ip) => port.endpoint_v6 == Some(ip),
    }
}

impl BatchState<'_> {
    /// After frame `f` from local overlay endpoint `from` was wrapped in VXLAN to leave by
    /// uplink port `to`: records its direction and offers the flow once both were seen.
    pub(super) fn offer_overlay_out(&mut self, f: &Frame<'_>, from: &PortEntry, to: PortId) {
        let o = self.dp.offloads();
        let (ia, iu) = (o.ifindex(f.meta.ingress), o.ifindex(to));
        let Some((outer, inner)) = read_outer(f.data()).filter(|_| ia != 0 && iu != 0) else {
            return;
        };
        let (Some((t, step)), Some((a_mac, _))) = (inner_flow(inner), from.endpoint) else {
            return;
        };
        let eth = EthernetFrame::new_unchecked(inner);
        let net = from.network.and_then(|n| self.t.network(n));
        let (Some(net), Some(up)) = (net, self.t.uplink_on(to)) else {
            return;
        };
        if eth.src() != a_mac || !owns(from, t.src) {
            return;
        }
        let local = LocalEnd {
            port: PortOut {
                ifindex: ia,
                mtu: net.config.mtu,
            },
            mac: a_mac,
        };
        let uplink = PortOut {
            ifindex: iu,
            mtu: up.mtu,
        };
        match step {
            Step::Close if o.seen().forget(&t) => {
                let keys = offload::overlay_keys(&t, ia, iu);
                o.offer(Request::Remove { keys });
            }
            // As for bridged flows, only a flow that carried a bulk-sized frame either way is
            // offered: request/response is faster through userspace (bench/RESULTS.md,
            // overlay shape after wave 7: 28 us in userspace against 61 us offloaded).
            Step::Established
                if self.epoch != 0
                    && o.seen()
                        .observe(&t, self.epoch, offload::offers(inner.len())) =>
            {
                let timeouts = Timeouts::default();
                let idle_secs = if t.proto == 6 {
                    timeouts.tcp_established
                } else {
                    timeouts.udp_replied
                };
                if let Some(dirs) = offload::overlay(&t, local, eth.dst(), uplink, &outer) {
                    o.offer(Request::Install {
                        dirs,
                        tracked: Tracked::Bridged { idle_secs },
                        epoch: self.epoch,
                    });
                }
            }
            _ => {}
        }
    }

    /// After a VXLAN frame from the uplink was unwrapped (`f` is now the inner frame) to go to
    /// local endpoint port `to`: records its direction, never offering (only an outbound frame
    /// knows the outer headers), or on FIN/RST takes an offered flow back.
    pub(super) fn offer_overlay_in(&mut self, f: &Frame<'_>, to: PortId) {
        let o = self.dp.offloads();
        let (iu, ia) = (o.ifindex(f.meta.ingress), o.ifindex(to));
        let Some((t, step)) = inner_flow(f.data()).filter(|_| ia != 0 && iu != 0) else {
            return;
        };
        if !self.t.port(to).is_some_and(|port| owns(port, t.dst)) {
            return;
        }
        let out = offload::FlowTuple::reversed(&t);
        match step {
            Step::Close if o.seen().forget(&out) => {
                let keys = offload::overlay_keys(&out, ia, iu);
                o.offer(Request::Remove { keys });
            }
            Step::Established if self.epoch != 0 => {
                o.seen().record(&t, self.epoch, offload::offers(f.len()));
            }
            _ => {}
        }
    }
}

/// The outer headers of a frame userspace just wrapped in VXLAN over IPv4, and the inner
/// frame. (A super-frame's outer lengths are its segments', so only the headers are read.)
fn read_outer(d: &[u8]) -> Option<(OuterV4, &[u8])> {
    let ip_at = ethernet::HEADER_LEN;
    let udp_at = ip_at + ipv4::MIN_HEADER_LEN;
    let vx_at = udp_at + udp::HEADER_LEN;
    let eth = EthernetFrame::new_checked(d).ok()?;
    let ip = Ipv4Packet::new_quoted(d.get(ip_at..)?).ok()?;
    if eth.ethertype() != ETHERTYPE_IPV4
        || ip.header_len() != ipv4::MIN_HEADER_LEN
        || ip.protocol() != IPPROTO_UDP
    {
        return None;
    }
    let udp = UdpPacket::new_unchecked(d.get(udp_at..vx_at)?);
    let vx = VxlanHeader::new_checked(d.get(vx_at..)?).ok()?;
    if udp.dst_port() != vxlan::UDP_PORT || vx.flags() & vxlan::FLAG_I == 0 {
        return None;
    }
    let outer = OuterV4 {
        dst_mac: eth.dst(),
        src_mac: eth.src(),
        src: ip.src(),
        dst: ip.dst(),
        src_port: udp.src_port(),
        vni: vx.vni(),
    };
    Some((outer, d.get(vx_at + vxlan::HEADER_LEN..)?))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::frame::NetworkId;
    use crate::offload::{Direction, Request, Tracked, Tunnel, Vxlan};
    use crate::overlay::{OverlayConfig, RemoteEndpoint};
    use crate::pipeline::tests::*;
    use crate::pipeline::vxlan::tests::{R, VNI, VTEP_B, VTEP_B_MAC};
    use crate::wire::tcp::{ACK, FIN, SYN};
    use crate::wire::MacAddr;
    use std::net::Ipv6Addr;

    /// Host A of an overlay of network "other" (MTU `mtu`) with the offload on, interface
    /// index 100 + id for every port, and host B's VTEP resolved.
    fn host_a(mtu: u16) -> (Arc<Dataplane>, Worker) {
        host_a_of(overlay_host(mtu))
    }

    /// The configuration of [`host_a`].
    fn overlay_host(mtu: u16) -> S {
        let mut s = S::new();
        s.config.networks[1].mtu = mtu;
        s.config.overlays.push(OverlayConfig {
            network: NetworkId(1),
            vni: VNI,
            remotes: vec![RemoteEndpoint {
                mac: S::mac(R),
                ipv4: R,
                ipv6: None,
                vtep: VTEP_B,
            }],
        });
        s
    }

    /// C's and R's IPv6 addresses on the dual-stack overlay of [`host_a6`].
    const C6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0xc);
    const R6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 9);

    /// [`host_a`] (MTU 1450) on a dual-stack overlay: C at [`C6`], R at [`R6`].
    fn host_a6() -> (Arc<Dataplane>, Worker) {
        use crate::config::{Ipv6Cidr, NetworkV6, PortRole};
        let mut s = overlay_host(1450);
        s.config.networks[1].ipv6 = Some(NetworkV6 {
            subnet: Ipv6Cidr::new(Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0), 64).unwrap(),
            gateway: Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 1),
            routed: false,
        });
        for p in &mut s.config.ports {
            if let (PortRole::Endpoint { ipv6, .. }, true) = (&mut p.role, p.id == PORT_C) {
                *ipv6 = Some(C6);
            }
        }
        s.config.overlays[0].remotes[0].ipv6 = Some(R6);
        host_a_of(s)
    }

    fn host_a_of(s: S) -> (Arc<Dataplane>, Worker) {
        let dp = Dataplane::new(&s.config).unwrap();
        dp.offloads().set_enabled(true);
        for p in 0..5 {
            dp.offloads().set_ifindex(PortId(p), 100 + u32::from(p));
        }
        let mut w = dp.worker();
        let learn = arp_reply(VTEP_B_MAC, VTEP_B, S::UP_MAC, S::UP);
        assert_eq!(run_one(&mut w, UPLINK, &learn, T0).0, Verdict::Consumed);
        (dp, w)
    }

    fn drain(dp: &Dataplane) -> Vec<Request> {
        std::iter::from_fn(|| dp.offloads().next_request()).collect()
    }

    /// C (port 40000) to R (port 5201), from PORT_C; over IPv6 when `v6`.
    fn c_to_r(v6: bool, flags: u8, data: &[u8]) -> Vec<u8> {
        let (seg, ethertype) = if v6 {
            (tcp6((C6, 40000), (R6, 5201), flags, data), 0x86dd)
        } else {
            (tcp(S::C, 40000, R, 5201, flags, data), 0x0800)
        };
        eth(S::mac(R), S::mac(S::C), ethertype, &seg)
    }

    /// R to C wrapped in VXLAN by host B, on the uplink; over IPv6 inside when `v6`.
    fn r_to_c(v6: bool, flags: u8, data: &[u8]) -> Vec<u8> {
        let (seg, ethertype) = if v6 {
            (tcp6((R6, 5201), (C6, 40000), flags, data), 0x86dd)
        } else {
            (tcp(R, 5201, S::C, 40000, flags, data), 0x0800)
        };
        let mut payload = vec![0x08, 0, 0, 0, 0, 0x10, 0, 0];
        payload.extend(eth(S::mac(S::C), S::mac(R), ethertype, &seg));
        let outer = udp(VTEP_B, 50000, S::UP, 4789, &payload);
        eth(S::UP_MAC, VTEP_B_MAC, 0x0800, &outer)
    }

    /// An IPv6 packet of TCP with `flags` and `data`, checksummed.
    fn tcp6(src: (Ipv6Addr, u16), dst: (Ipv6Addr, u16), flags: u8, data: &[u8]) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ipv6(src.0.octets(), dst.0.octets(), 64);
        let mut t = b.tcp(src.1, dst.1, 1, 0xffff);
        if flags & SYN != 0 {
            t = t.syn();
        }
        if flags & ACK != 0 {
            t = t.ack(1);
        }
        if flags & FIN != 0 {
            t = t.fin();
        }
        let mut v = Vec::new();
        t.write(&mut v, data).unwrap();
        v
    }

    /// Runs the handshake, a request from C and a bulk-sized answer from R, then one more
    /// frame from C: the verdicts (all forwarded) and the last frame as it left.
    fn established(w: &mut Worker, v6: bool) -> Vec<u8> {
        exchange(w, v6, &[b'd'; 1200])
    }

    /// [`established`] with R's answer `data`.
    fn exchange(w: &mut Worker, v6: bool, data: &[u8]) -> Vec<u8> {
        let v = Frames::new()
            .push(PORT_C, &c_to_r(v6, SYN, b""))
            .push(UPLINK, &r_to_c(v6, SYN | ACK, b""))
            .push(PORT_C, &c_to_r(v6, ACK, b""))
            .push(PORT_C, &c_to_r(v6, ACK, b"get"))
            .push(UPLINK, &r_to_c(v6, ACK, data))
            .push(PORT_C, &c_to_r(v6, ACK, b""))
            .run(w, T0);
        let ports: Vec<Verdict> = v.iter().map(|(v, _)| *v).collect();
        let (up, c) = (Verdict::Forward(UPLINK), Verdict::Forward(PORT_C));
        assert_eq!(ports, [up, c, up, up, c, up]);
        v.last().unwrap().1.clone()
    }

    #[test]
    fn an_overlay_flow_is_offered_by_its_outbound_frame_once_both_ways_were_seen() {
        let (dp, mut w) = host_a(1450);
        let last = established(&mut w, false);
        let vxlan = Vxlan {
            local: S::UP,
            remote: VTEP_B,
            vni: VNI,
        };
        let udp_sport = u16::from_be_bytes([last[34], last[35]]);
        let key = |ifindex, src, sport, dst, dport| crate::offload::FlowKey {
            ifindex,
            src: std::net::IpAddr::V4(src),
            dst: std::net::IpAddr::V4(dst),
            proto: 6,
            sport,
            dport,
        };
        let action = |egress, dst: MacAddr, src: MacAddr| crate::offload::FlowAction {
            egress_ifindex: egress,
            eth_src: src.0,
            eth_dst: dst.0,
            decrement_ttl: false,
            snat: None,
            dnat: None,
        };
        let out = Direction {
            key: key(104, S::C, 40000, R, 5201),
            action: action(100, VTEP_B_MAC, S::UP_MAC),
            tunnel: Some(Tunnel::Encap { vxlan, udp_sport }),
        };
        let back = Direction {
            key: key(100, R, 5201, S::C, 40000),
            action: action(104, S::mac(S::C), S::mac(R)),
            tunnel: Some(Tunnel::Decap(vxlan)),
        };
        let idle_secs = crate::nat::Timeouts::default().tcp_established;
        assert_eq!(
            drain(&dp),
            vec![Request::Install {
                dirs: [out, back],
                tracked: Tracked::Bridged { idle_secs },
                epoch: dp.epoch32(),
            }]
        );
        run_one(&mut w, PORT_C, &c_to_r(false, ACK, b"more"), T0);
        assert_eq!(drain(&dp), vec![], "offered once");
        run_one(&mut w, UPLINK, &r_to_c(false, FIN | ACK, b""), T0);
        assert_eq!(
            drain(&dp),
            vec![Request::Remove {
                keys: [out.key, back.key]
            }]
        );
        // The rest of the close (C's last data and FIN, R's ACKs) offers nothing again.
        Frames::new()
            .push(PORT_C, &c_to_r(false, ACK, b"tail"))
            .push(UPLINK, &r_to_c(false, ACK, b""))
            .push(PORT_C, &c_to_r(false, FIN | ACK, b""))
            .push(UPLINK, &r_to_c(false, ACK, b""))
            .run(&mut w, T0);
        assert_eq!(drain(&dp), vec![]);
    }

    #[test]
    fn a_flow_of_small_frames_both_ways_stays_in_userspace() {
        let (dp, mut w) = host_a(1450);
        exchange(&mut w, false, b"data");
        run_one(&mut w, PORT_C, &c_to_r(false, ACK, b"more"), T0);
        assert_eq!(drain(&dp), vec![]);
        run_one(&mut w, UPLINK, &r_to_c(false, ACK, &[b'd'; 1200]), T0);
        assert_eq!(drain(&dp), vec![], "an inbound frame never offers");
        run_one(&mut w, PORT_C, &c_to_r(false, ACK, b""), T0);
        assert!(matches!(drain(&dp)[..], [Request::Install { .. }]));
    }

    #[test]
    fn no_offer_where_the_endpoint_mtu_leaves_no_room_for_the_outer_headers() {
        let (dp, mut w) = host_a(1500);
        established(&mut w, false);
        assert_eq!(drain(&dp), vec![]);
        let (dp, mut w) = host_a(1450);
        dp.offloads().set_enabled(false);
        established(&mut w, false);
        assert_eq!(drain(&dp), vec![]);
    }

    #[test]
    fn an_overlay_flow_over_ipv6_is_offered_and_taken_back_as_over_ipv4() {
        let (dp, mut w) = host_a6();
        let last = established(&mut w, true);
        let vxlan = Vxlan {
            local: S::UP,
            remote: VTEP_B,
            vni: VNI,
        };
        let udp_sport = u16::from_be_bytes([last[34], last[35]]);
        let key = |ifindex, (src, sport), (dst, dport)| crate::offload::FlowKey {
            ifindex,
            src: std::net::IpAddr::V6(src),
            dst: std::net::IpAddr::V6(dst),
            proto: 6,
            sport,
            dport,
        };
        let (out_key, back_key) = (
            key(104, (C6, 40000), (R6, 5201)),
            key(100, (R6, 5201), (C6, 40000)),
        );
        let requests = drain(&dp);
        let [Request::Install { dirs, tracked, .. }] = &requests[..] else {
            panic!("one install: {requests:?}");
        };
        assert_eq!((dirs[0].key, dirs[1].key), (out_key, back_key));
        assert_eq!(dirs[0].tunnel, Some(Tunnel::Encap { vxlan, udp_sport }));
        assert_eq!(dirs[1].tunnel, Some(Tunnel::Decap(vxlan)));
        assert_eq!(dirs[1].action.egress_ifindex, 104);
        assert!(matches!(tracked, Tracked::Bridged { .. }));
        run_one(&mut w, UPLINK, &r_to_c(true, FIN | ACK, b""), T0);
        assert_eq!(
            drain(&dp),
            vec![Request::Remove {
                keys: [out_key, back_key]
            }]
        );
    }
}
