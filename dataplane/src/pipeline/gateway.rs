//! The gateway stage: a network's frames addressed to its gateway MAC. Answers ARP for the
//! gateway address and pings of it (in place, in the frame that asked), enforces isolation,
//! ICC and internal networks, picks the NAPT or published-port action, answers TTL expiry and
//! too-big packets with ICMP errors (built in place, growing into the headroom), and hands
//! the rest to `nat` or `route`; a new flow refused for want of a NAPT port is answered with
//! an ICMP administratively-prohibited. Its drops: not for us, unsupported, malformed, ICC
//! denied, isolated, no route, TTL exceeded, too big.

use std::net::Ipv4Addr;

use super::flow::{self, FlowOf, Ipv4Info, L4Kind};
use super::state::BatchState;
use crate::counters::DropReason as R;
use crate::counters::DropReason;
use crate::frame::{Frame, GsoType, Offload, Verdict};
use crate::nat::NatAction;
use crate::tables::{NetworkEntry, PortEntry};
use crate::wire::arp::{self, ArpPacket};
use crate::wire::ethernet::{
    EthernetFrame, L2Header, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6,
};
use crate::wire::icmpv4;
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::{MacAddr, WireError, IPPROTO_ICMP};

impl<'t> BatchState<'t> {
    /// A frame addressed to a network's gateway MAC: ARP, ping of the gateway, or routing.
    pub(super) fn gateway(
        &mut self,
        f: &mut Frame<'_>,
        l2: &L2Header,
        net: &'t NetworkEntry,
        port: &'t PortEntry,
        parsed: Option<Ipv4Info>,
    ) -> Result<Verdict, DropReason> {
        let cfg = &net.config;
        match l2.ethertype {
            ETHERTYPE_IPV4 => {}
            ETHERTYPE_ARP => {
                return arp_for(f, l2, cfg.gateway_mac, cfg.gateway)?.ok_or(R::NotForUs);
            }
            ETHERTYPE_IPV6 => return self.gateway6(f, l2, net, port),
            _ => return Err(R::Unsupported),
        }
        let ip = match parsed {
            Some(ip) if flow::header_checksum_ok(f.data(), &ip) => ip,
            Some(_) => return Err(R::Malformed),
            None => flow::parse_ipv4(f.data(), l2.l3_offset)?,
        };
        let ingress = f.meta.ingress;
        let t = self.t;
        let flow = flow::flow_of(f.data(), &ip);
        if ip.dst == cfg.gateway {
            if let Ok(FlowOf {
                kind: L4Kind::Echo(true),
                ..
            }) = flow
            {
                icmpv4::write_echo_reply(f.data_mut(), ip.l3, cfg.gateway_mac)
                    .map_err(|_| R::Malformed)?;
                return Ok(Verdict::Forward(ingress));
            }
            // Replies of hairpinned flows come back to the gateway address.
            let flow = flow?;
            return match self.lookup(&flow.tuple) {
                Some(_) => self.translate_and_route(f, &ip, &flow, None, u16::MAX),
                None => Err(R::NotForUs),
            };
        }
        if cfg.subnet.contains(ip.dst) {
            if !cfg.icc {
                return Err(R::IccDenied);
            }
            return self.route(f, ip.l3, ip.dst, ip.ttl);
        }
        if t.network_of(ip.dst).is_some() {
            return Err(R::Isolated);
        }
        self.outbound(f, &ip, &flow?, net, port)
    }

    /// A packet from network `net` to a destination beyond the uplink: to a published port
    /// (hairpin, translated to the target) or out of the uplink (NAPT to the uplink address),
    /// unless the network is internal; TTL and MTU checked first, answered with ICMP errors.
    fn outbound(
        &mut self,
        f: &mut Frame<'_>,
        ip: &Ipv4Info,
        flow: &FlowOf,
        net: &'t NetworkEntry,
        port: &'t PortEntry,
    ) -> Result<Verdict, DropReason> {
        let cfg = &net.config;
        let up = self.t.uplink_of(cfg).ok_or(R::NoRoute)?;
        let published = self.hairpin_dnat(flow, ip.dst)?;
        let action = match published {
            Some(action) => action,
            None if cfg.internal => return Err(R::NoRoute),
            None => NatAction {
                snat: Some(up.ip.addr),
                dnat: None,
            },
        };
        if ip.ttl <= 1 {
            return self.icmp_back(f, ip, cfg.gateway_mac, cfg.gateway, port, R::TtlExceeded);
        }
        if published.is_none()
            && f.meta.offload.gso == GsoType::None
            && ip.total > usize::from(up.mtu)
        {
            if ip.df {
                return self.icmp_back(f, ip, cfg.gateway_mac, cfg.gateway, port, R::TooBig);
            }
            return Err(R::TooBig);
        }
        // The largest packet routed without the too-big path just above.
        let mtu = if published.is_none() {
            up.mtu
        } else {
            u16::MAX
        };
        match self.translate_and_route(f, ip, flow, Some(action), mtu) {
            // No NAPT port left for this endpoint there: tell the sender at once rather than
            // let it retry into silence.
            Err(r @ (R::NatPortsExhausted | R::NatPortShare)) => {
                self.icmp_back(f, ip, cfg.gateway_mac, cfg.gateway, port, r)
            }
            v => v,
        }
    }

    /// Answers the sender with an ICMP error instead of forwarding, counting `reason`.
    fn icmp_back(
        &mut self,
        f: &mut Frame<'_>,
        ip: &Ipv4Info,
        mac: MacAddr,
        from: Ipv4Addr,
        port: &PortEntry,
        reason: DropReason,
    ) -> Result<Verdict, DropReason> {
        let (ty, code, rest) = match reason {
            R::TooBig => (
                icmpv4::DEST_UNREACHABLE,
                icmpv4::CODE_FRAG_NEEDED,
                port.network
                    .and_then(|n| self.t.network(n))
                    .and_then(|n| self.t.uplink_of(&n.config))
                    .map_or(1500, |u| u32::from(u.mtu)),
            ),
            R::NatPortsExhausted | R::NatPortShare => {
                (icmpv4::DEST_UNREACHABLE, icmpv4::CODE_ADMIN_PROHIBITED, 0)
            }
            _ => (icmpv4::TIME_EXCEEDED, 0, 0),
        };
        // Never answer an ICMP error with another.
        if ip.proto == IPPROTO_ICMP
            && matches!(
                flow::flow_of(f.data(), ip),
                Ok(FlowOf {
                    kind: L4Kind::Error,
                    ..
                })
            )
        {
            return Err(reason);
        }
        icmp_error(f, ip.l3, (mac, from), (ty, code, rest)).map_err(|_| reason)?;
        // The packet itself was dropped; what leaves is the error sent in its place.
        self.counters.drop_n(f.meta.ingress, reason, 1);
        Ok(Verdict::Forward(port.config.id))
    }
}

/// Answers an ARP request for `ip` with `mac` in place; `None` when it is not such a request.
pub(super) fn arp_for(
    f: &mut Frame<'_>,
    l2: &L2Header,
    mac: MacAddr,
    ip: Ipv4Addr,
) -> Result<Option<Verdict>, DropReason> {
    let l3 = l2.l3_offset;
    let arp = ArpPacket::new_checked(f.data().get(l3..).ok_or(R::Malformed)?)
        .map_err(|_| R::Malformed)?;
    if arp.operation() != arp::OP_REQUEST || arp.target_ip() != ip {
        return Ok(None);
    }
    arp::write_reply(f.data_mut(), l3, mac, ip).map_err(|_| R::Malformed)?;
    Ok(Some(Verdict::Forward(f.meta.ingress)))
}

/// Replaces the IPv4 packet at `l3` by an ICMP error from `(mac, ip)` to its sender, quoting its
/// header and first 8 payload bytes in place (RFC 792). `rest` is the ICMP header's second word
/// (the next-hop MTU for fragmentation-needed). Needs 28 bytes of headroom for an untagged
/// frame; fails, leaving the frame as it was, when the headroom or the packet is too short.
fn icmp_error(
    frame: &mut Frame<'_>,
    l3: usize,
    (mac, ip): (MacAddr, Ipv4Addr),
    message: (u8, u8, u32),
) -> Result<(), WireError> {
    let (quoted, asker) = {
        let d = frame.data();
        let orig = Ipv4Packet::new_checked(d.get(l3..).ok_or(WireError::Truncated("ipv4"))?)?;
        let asker_mac = EthernetFrame::new_checked(d)?.src();
        (icmpv4::quote_len(&orig), (asker_mac, orig.src()))
    };
    wrap_quote(frame, l3, quoted, icmpv4::ERROR_OVERHEAD, |error| {
        icmpv4::write_error(error, asker, (mac, ip), message)
    })
}

/// Rebuilds `frame` as an ICMP error around the first `quoted` bytes of its packet at `l3`:
/// moves the frame's start `overhead` bytes before the packet (into the headroom), lets `write`
/// fill the headers over the whole new frame, and drops the offload metadata. Fails, leaving
/// the frame as it was, when the headroom is too short.
pub(super) fn wrap_quote(
    frame: &mut Frame<'_>,
    l3: usize,
    quoted: usize,
    overhead: usize,
    write: impl FnOnce(&mut [u8]),
) -> Result<(), WireError> {
    let (buf, head, _) = frame.raw_parts();
    let ip_at = head + l3;
    let new_head = ip_at
        .checked_sub(overhead)
        .ok_or(WireError::Truncated("headroom"))?;
    write(&mut buf[new_head..ip_at + quoted]);
    frame
        .set_bounds(new_head, overhead + quoted)
        .map_err(|_| WireError::Truncated("frame"))?;
    frame.meta.offload = Offload::default();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Meta, HEADROOM};
    use crate::pipeline::tests::*;
    use crate::wire::checksum;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

    const GW_MAC: MacAddr = MacAddr([2, 0x42, 0, 0, 0, 1]);
    const GW: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);

    fn udp_frame(ttl: u8) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0x42, 172, 17, 0, 2], GW_MAC.0)
            .ipv4([172, 17, 0, 2], [8, 8, 8, 8], ttl)
            .udp(5000, 53);
        let mut v = Vec::new();
        b.write(&mut v, &[7u8; 30]).unwrap();
        v
    }

    #[test]
    fn time_exceeded_quotes_the_header_in_place() {
        let pkt = udp_frame(1);
        let mut buf = vec![0u8; HEADROOM + pkt.len()];
        buf[HEADROOM..].copy_from_slice(&pkt);
        let mut f = Frame::new(&mut buf, HEADROOM, pkt.len(), Meta::default()).unwrap();
        icmp_error(&mut f, 14, (GW_MAC, GW), (icmpv4::TIME_EXCEEDED, 0, 0)).unwrap();
        let parsed = SlicedPacket::from_ethernet(f.data()).unwrap();
        let ip = match parsed.net.unwrap() {
            etherparse::NetSlice::Ipv4(ip) => ip,
            _ => panic!("not ipv4"),
        };
        assert_eq!(ip.header().source(), GW.octets());
        assert_eq!(ip.header().destination(), [172, 17, 0, 2]);
        match parsed.transport.unwrap() {
            TransportSlice::Icmpv4(icmp) => {
                assert_eq!(icmp.type_u8(), icmpv4::TIME_EXCEEDED);
                let full = f.data()[34..].to_vec();
                assert_eq!(checksum::internet_checksum(&full), 0);
                assert_eq!(&full[8..8 + 28], &pkt[14..14 + 28]);
            }
            _ => panic!("not icmp"),
        }
        assert_eq!(f.len(), 42 + 28);
    }

    #[test]
    fn icmp_error_needs_headroom() {
        let pkt = udp_frame(1);
        let mut buf = pkt.clone();
        let mut f = Frame::new(&mut buf, 0, pkt.len(), Meta::default()).unwrap();
        assert!(icmp_error(&mut f, 14, (GW_MAC, GW), (icmpv4::TIME_EXCEEDED, 0, 0)).is_err());
        assert_eq!(f.data(), &pkt[..]);
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
}
