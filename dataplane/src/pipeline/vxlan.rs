//! The VXLAN stage (RFC 7348): an overlay network spans hosts, each host's part an ordinary
//! bridge domain whose remote endpoints sit behind their hosts' VTEPs (the uplink addresses).
//!
//! - Decapsulation, from `uplink`: a UDP datagram to port 4789 of the uplink address whose VNI
//!   is an overlay network's; its inner frame enters that network as if from a tunnel port
//!   (delivered by FDB lookup or flooded to the local ports only), once its source MAC and
//!   address are found in the remote table behind the datagram's source VTEP.
//! - Encapsulation, from `bridge`: a unicast frame to a remote endpoint's MAC leaves through the
//!   network's uplink to that endpoint's VTEP (outer Ethernet to the underlay next hop, resolved
//!   by the uplink's ARP cache like routed traffic; UDP source port from the inner flow).
//! - ARP for a remote endpoint is answered from the remote table, so no broadcast crosses hosts
//!   (libnetwork's peerdb, VPP's `l2_arp_term`); unknown unicast is dropped, never flooded.
//!
//! Its drops: VXLAN malformed (truncated header, no I flag, bad inner frame), unknown VNI,
//! spoofed (an inner source the remote table does not list for that VTEP), unknown destination;
//! and too big (frames over the uplink MTU once encapsulated, super-frames other than
//! TCP, which the runtime cuts into segments that fit once encapsulated and sends packed
//! into UDP GSO frames; received UDP GSO datagrams whose chunks do not join into one TCP
//! super-frame, see `coalesce`),
//! unsupported (tagged inner frames), ARP pending (the underlay next hop is being resolved).

use std::net::Ipv4Addr;
use std::ops::Range;

use super::classify::check_source_ip;
use super::coalesce::{coalesce_tcp, partial_super_frame, Coalesced};
use super::flow::Ipv4Info;
use super::gateway::arp_for;
use super::ipv6;
use super::segment::{self, L4Layout};
use super::state::BatchState;
use crate::counters::DropReason as R;
use crate::counters::DropReason;
use crate::frame::{Frame, GsoType, NetworkId, Offload, Verdict};
use crate::overlay::OverlayEntry;
use crate::tables::{NetworkEntry, PortEntry};
use crate::wire::arp::ArpPacket;
use crate::wire::ethernet::{self, parse_l2, L2Header, ETHERTYPE_ARP, ETHERTYPE_IPV6};
use crate::wire::vxlan::{self, OuterV4, VxlanHeader};
use crate::wire::{udp, UdpPacket, IPPROTO_UDP};

impl<'t> BatchState<'t> {
    /// A datagram to the uplink address `ip` describes: when it is VXLAN and some network is an
    /// overlay, its verdict after decapsulation; `None` lets the uplink handle it.
    #[inline]
    pub(super) fn vxlan_decap(
        &mut self,
        f: &mut Frame<'_>,
        ip: &Ipv4Info,
    ) -> Option<Result<Verdict, DropReason>> {
        if self.t.overlays().is_empty() || ip.proto != IPPROTO_UDP || ip.later_fragment {
            return None;
        }
        let l4 = f.data().get(ip.l4()..ip.l3 + ip.total)?;
        let udp = UdpPacket::new_checked(l4).ok()?;
        (udp.dst_port() == vxlan::UDP_PORT).then(|| self.decap(f, ip))
    }

    /// Checks a VXLAN datagram, strips the outer headers and delivers the inner frame.
    fn decap(&mut self, f: &mut Frame<'_>, ip: &Ipv4Info) -> Result<Verdict, DropReason> {
        let t = self.t;
        let (net_id, l2, inner_len) = {
            let l4 = &f.data()[ip.l4()..ip.l3 + ip.total];
            let udp = UdpPacket::new_checked(l4).map_err(|_| R::Malformed)?;
            let vx = VxlanHeader::new_checked(udp.payload()).map_err(|_| R::VxlanMalformed)?;
            if !vx.vni_valid() {
                return Err(R::VxlanMalformed);
            }
            let net_id = t
                .overlays()
                .network_of_vni(vx.vni())
                .ok_or(R::VxlanUnknownVni)?;
            let ov = t.overlays().of(net_id).ok_or(R::VxlanUnknownVni)?;
            let inner = vx.payload();
            let l2 = parse_l2(inner).map_err(|_| R::VxlanMalformed)?;
            check_inner_source(inner, &l2, ov, ip.src)?;
            (net_id, l2, inner.len())
        };
        let net = t.network(net_id).ok_or(R::VxlanUnknownVni)?;
        let inner_at = ip.l4() + udp::HEADER_LEN + vxlan::HEADER_LEN;
        let inner_len = match udp_gso_chunk(&f.meta.offload, inner_len + vxlan::HEADER_LEN) {
            Some(_) if wrapped_whole(&f.meta.offload, inner_at) => {
                f.meta.offload = inner_datagrams(f, inner_at..inner_at + inner_len)?;
                inner_len
            }
            Some(chunk) => {
                let payload = ip.l4() + udp::HEADER_LEN..ip.l3 + ip.total;
                let Some(joined) = join(f, payload.clone(), chunk) else {
                    self.counters.unjoined(payload.len().div_ceil(chunk) as u64);
                    return Ok(Verdict::Split);
                };
                f.meta.offload = joined.offload;
                joined.len
            }
            None if matches!(f.meta.offload.gso, GsoType::TcpV4 | GsoType::TcpV6) => {
                f.meta.offload = inner_super_frame(f, inner_at..inner_at + inner_len)?;
                inner_len
            }
            None => {
                f.meta.offload = inner_offload(f.meta.offload, inner_at)?;
                inner_len
            }
        };
        f.pull_front(inner_at);
        f.set_len(inner_len).map_err(|_| R::VxlanMalformed)?;
        f.meta.vlan = net.config.vlan;
        self.deliver_decapsulated(f, &l2, net_id, net)
    }

    /// Delivers a decapsulated frame inside its network: to the local port its destination
    /// was learned on, or flooded to the local ports (never back across hosts).
    fn deliver_decapsulated(
        &mut self,
        f: &Frame<'_>,
        l2: &L2Header,
        net_id: NetworkId,
        net: &'t NetworkEntry,
    ) -> Result<Verdict, DropReason> {
        let vlan = f.meta.vlan;
        if l2.dst.is_multicast() {
            return Ok(Verdict::Flood {
                network: net_id,
                vlan,
            });
        }
        let port = self
            .fdb(net_id, net)
            .lookup(vlan, l2.dst)
            .ok_or(R::VxlanUnknownDst)?;
        if !net.config.icc && self.t.port(port).is_some_and(PortEntry::is_endpoint) {
            return Err(R::IccDenied);
        }
        Ok(Verdict::Forward(port))
    }

    /// A frame of overlay network `net` from a local port: ARP for a remote endpoint is
    /// answered, unicast to a remote endpoint encapsulated to its VTEP. `None`: the bridge
    /// goes on locally.
    #[inline]
    pub(super) fn vxlan_egress(
        &mut self,
        f: &mut Frame<'_>,
        l2: &L2Header,
        net: &'t NetworkEntry,
        ov: &'t OverlayEntry,
    ) -> Result<Option<Verdict>, DropReason> {
        if l2.dst.is_broadcast() && l2.ethertype == ETHERTYPE_ARP {
            let arp = f.data().get(l2.l3_offset..).ok_or(R::Malformed)?;
            let target = ArpPacket::new_checked(arp)
                .map_err(|_| R::Malformed)?
                .target_ip();
            return match ov.mac_of(target) {
                Some(mac) => arp_for(f, l2, mac, target),
                None => Ok(None),
            };
        }
        match ov.remote(l2.dst) {
            Some(r) => self.encap(f, l2, net, ov.vni, r.vtep).map(Some),
            None => Ok(None),
        }
    }

    /// Wraps a frame in VXLAN to `vtep` and sends it out of the network's uplink; while the
    /// underlay next hop is unresolved, an ARP request for it leaves instead.
    fn encap(
        &mut self,
        f: &mut Frame<'_>,
        l2: &L2Header,
        net: &'t NetworkEntry,
        vni: u32,
        vtep: Ipv4Addr,
    ) -> Result<Verdict, DropReason> {
        let up = self.t.uplink_of(&net.config).ok_or(R::NoRoute)?;
        if l2.vlan.is_some() {
            return Err(R::Unsupported);
        }
        let room = usize::from(up.mtu) + ethernet::HEADER_LEN;
        let gso = match f.meta.offload.gso {
            GsoType::None if f.len() + vxlan::OVERHEAD_V4 <= room => None,
            GsoType::TcpV4 => Some((GsoType::TcpV4Vxlan, tunnel_mss(f, room)?)),
            GsoType::TcpV6 => Some((GsoType::TcpV6Vxlan, tunnel_mss(f, room)?)),
            GsoType::UdpL4 => Some((GsoType::UdpL4Vxlan, tunnel_datagram(f, room)?)),
            _ => return Err(R::TooBig),
        };
        let hop = if up.ip.contains(vtep) {
            vtep
        } else {
            up.next_hop.ok_or(R::NoRoute)?
        };
        let Some(dst_mac) = self.neighbor(up.port, hop) else {
            // The request leaves in the frame's place; the inner frame is not held (it is not
            // encapsulated yet) and counts as `arp_pending`.
            return self.arp_in_place(f, up, hop, false).map(|(v, _)| v);
        };
        let outer = OuterV4 {
            dst_mac,
            src_mac: up.mac,
            src: up.ip.addr,
            dst: vtep,
            src_port: vxlan::source_port(f.data()),
            vni,
        };
        // No headroom left to grow into: the frame cannot be sent.
        let frame = f.push_front(vxlan::OVERHEAD_V4).map_err(|_| R::TooBig)?;
        // A super-frame's outer lengths are each segment's, written when it is cut.
        let outer_len = if gso.is_some() {
            vxlan::OVERHEAD_V4
        } else {
            frame.len()
        };
        vxlan::write_outer_v4(&mut frame[..outer_len], &outer).map_err(|_| R::TooBig)?;
        let off = &mut f.meta.offload;
        if off.csum_partial {
            off.csum_start += vxlan::OVERHEAD_V4 as u16;
        }
        if let Some((kind, mss)) = gso {
            off.gso = kind;
            off.gso_size = mss;
            off.hdr_len = 0;
        }
        f.meta.vlan = 0;
        Ok(Verdict::Forward(up.port))
    }
}

/// The payload bytes per segment of a TCP super-frame about to be encapsulated: its own
/// segment size, made smaller where a segment would not fit `room` bytes (the uplink MTU plus
/// the Ethernet header) once wrapped, so the overlay's MTU holds even when the endpoint's does
/// not. The runtime cuts the frame on transmission (`segment`).
fn tunnel_mss(f: &Frame<'_>, room: usize) -> Result<u16, DropReason> {
    let at = L4Layout::parse(f.data(), 0).map_err(|_| R::TooBig)?;
    let fits = room
        .min(segment::MAX_SEGMENT)
        .checked_sub(vxlan::OVERHEAD_V4 + at.headers())
        .filter(|n| *n > 0)
        .ok_or(R::TooBig)?;
    let mss = usize::from(f.meta.offload.gso_size).min(fits);
    u16::try_from(mss).ok().filter(|m| *m > 0).ok_or(R::TooBig)
}

/// The payload bytes per datagram of a UDP super-frame (USO) about to be encapsulated: its own
/// segment size, which must fit `room` bytes once wrapped (datagram boundaries are the
/// sender's, so unlike a TCP segment size this one cannot shrink). The runtime cuts the frame
/// on transmission (`segment`).
fn tunnel_datagram(f: &Frame<'_>, room: usize) -> Result<u16, DropReason> {
    let at = L4Layout::parse_l4(f.data(), 0, IPPROTO_UDP).map_err(|_| R::TooBig)?;
    let size = f.meta.offload.gso_size;
    let wrapped = vxlan::OVERHEAD_V4 + at.headers() + usize::from(size);
    (size > 0 && wrapped <= room.min(segment::MAX_SEGMENT))
        .then_some(size)
        .ok_or(R::TooBig)
}

/// Joins the chunks of the UDP GSO datagram `f` (its UDP payload at `payload`, `chunk` bytes
/// each) into one super-frame in place (`coalesce`); `None` (the frame untouched) when they do
/// not join. Only a datagram whose outer UDP checksum covers its chunks (partial from a local
/// sender, or verified) is joined: the inner checksums are not checked.
fn join(f: &mut Frame<'_>, payload: Range<usize>, chunk: usize) -> Option<Coalesced> {
    let off = &f.meta.offload;
    if !(off.csum_partial || off.data_valid) {
        return None;
    }
    coalesce_tcp(f.data_mut().get_mut(payload)?, chunk).ok()
}

/// The chunk size of a UDP GSO datagram of `udp_payload` bytes, whose chunks are joined into
/// one inner super-frame (`coalesce`) or delivered one by one; `None` for an ordinary datagram
/// (a GSO datagram of one chunk is one).
fn udp_gso_chunk(off: &Offload, udp_payload: usize) -> Option<usize> {
    let chunk = usize::from(off.gso_size);
    (off.gso == GsoType::UdpL4 && udp_payload > chunk).then_some(chunk)
}

/// The offload state of the inner frame at `inner` of a received TCP super-frame that another
/// host's kernel wrapped whole (UDP-tunnel GSO, as the flow offload's encapsulation makes it;
/// the packet socket reports it as TCP GSO with the checksum partial at the inner TCP header):
/// the inner frame stays one super-frame of the same segment size, its TCP checksum partial
/// over the inner segment, so it reaches the endpoint uncut. The outer GSO kind must be the
/// inner frame's.
fn inner_super_frame(f: &mut Frame<'_>, inner: Range<usize>) -> Result<Offload, DropReason> {
    let outer = f.meta.offload;
    let bytes = f.data_mut().get_mut(inner).ok_or(R::VxlanMalformed)?;
    let at = L4Layout::parse(bytes, 0).map_err(|_| R::TooBig)?;
    if at.v6 != (outer.gso == GsoType::TcpV6) || outer.gso_size == 0 {
        return Err(R::TooBig);
    }
    let off = partial_super_frame(&mut bytes[..at.end], &at, outer.gso_size)
        .map_err(|_| R::VxlanMalformed)?;
    Ok(Offload {
        gso_ecn: outer.gso_ecn,
        ..off
    })
}

/// True when a received UDP GSO datagram is one super-frame another host's kernel wrapped
/// whole (the flow offload's encapsulation of an endpoint's UDP super-frame): its checksum is
/// partial inside the inner frame, where a datagram of packed chunks (`udp_gso`) has it at its
/// own UDP header.
fn wrapped_whole(off: &Offload, inner_at: usize) -> bool {
    off.csum_partial && usize::from(off.csum_start) > inner_at
}

/// The offload state of the inner frame at `inner` of a [`wrapped_whole`] datagram: a UDP
/// super-frame of the sender's datagram size, its checksum partial at its own UDP header, so
/// it reaches the endpoint whole (its stack cuts it).
fn inner_datagrams(f: &Frame<'_>, inner: Range<usize>) -> Result<Offload, DropReason> {
    let outer = f.meta.offload;
    let bytes = f.data().get(inner.clone()).ok_or(R::VxlanMalformed)?;
    let at = L4Layout::parse_l4(bytes, 0, IPPROTO_UDP).map_err(|_| R::TooBig)?;
    let start = usize::from(outer.csum_start) - inner.start;
    if start != at.l4 || usize::from(outer.csum_offset) != udp::CHECKSUM_OFFSET {
        return Err(R::TooBig);
    }
    Ok(Offload {
        gso: GsoType::UdpL4,
        gso_ecn: false,
        gso_size: outer.gso_size,
        hdr_len: at.payload as u16,
        csum_partial: true,
        csum_start: at.l4 as u16,
        csum_offset: outer.csum_offset,
        data_valid: false,
    })
}

/// The offload state of the inner frame at `inner_at` of a received VXLAN packet. A sender on
/// the same machine (a veth peer) leaves the inner L4 checksum partial: its start moves with the
/// frame, and a partial sum in front of the inner frame (the outer UDP's) leaves the inner one
/// complete. A TCP super-frame is `inner_super_frame`'s, another super-frame cannot be
/// segmented once decapsulated; a UDP GSO datagram here is one datagram (`udp_gso_chunk`).
fn inner_offload(outer: Offload, inner_at: usize) -> Result<Offload, DropReason> {
    if !matches!(outer.gso, GsoType::None | GsoType::UdpL4) {
        return Err(R::TooBig);
    }
    let at = u16::try_from(inner_at).map_err(|_| R::VxlanMalformed)?;
    let mut off = Offload {
        data_valid: outer.data_valid,
        ..Offload::default()
    };
    if outer.csum_partial {
        if let Some(start) = outer.csum_start.checked_sub(at) {
            off.csum_partial = true;
            off.csum_start = start;
            off.csum_offset = outer.csum_offset;
        }
    }
    Ok(off)
}

/// Checks that a decapsulated frame comes from a remote endpoint the remote table lists behind
/// `vtep`, with that endpoint's address in its IPv4 or ARP header, or its IPv6 address (or a
/// link-local one) in its IPv6 header, as a local endpoint's frames must (`ipv6::check_source`).
fn check_inner_source(
    inner: &[u8],
    l2: &L2Header,
    ov: &OverlayEntry,
    vtep: Ipv4Addr,
) -> Result<(), DropReason> {
    if l2.vlan.is_some() {
        return Err(R::VxlanMalformed);
    }
    let r = ov
        .remote(l2.src)
        .filter(|r| r.vtep == vtep)
        .ok_or(R::VxlanSpoofed)?;
    let checked = if l2.ethertype == ETHERTYPE_IPV6 {
        ipv6::check_source(inner, l2.l3_offset, l2.src, r.ipv6)
    } else {
        check_source_ip(inner, l2, l2.src, Some(r.ipv4), false).map(|_| ())
    };
    match checked {
        Ok(_) => Ok(()),
        Err(R::Malformed) => Err(R::VxlanMalformed),
        Err(_) => Err(R::VxlanSpoofed),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::config::{PortRole, UplinkConfig};
    use crate::frame::PortId;
    use crate::overlay::{OverlayConfig, RemoteEndpoint};
    use crate::pipeline::tests::*;
    use crate::pipeline::udp_gso;
    use crate::wire::ethernet::EthernetFrame;
    use crate::wire::{ArpPacket, Ipv4Packet, MacAddr};
    use std::net::Ipv6Addr;

    /// Host B's VTEP (host A's is the scenario's uplink address).
    pub(crate) const VTEP_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    pub(crate) const VTEP_B_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
    /// The endpoint of network "other" (VNI 4096) on host B; C lives on host A.
    pub(crate) const R: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 9);
    pub(crate) const VNI: u32 = 4096;
    const OTHER: NetworkId = NetworkId(1);

    /// One host of the overlay: the scenario with `local` as PORT_C's endpoint, the uplink at
    /// `up`, and `remote` behind `vtep` in network "other".
    fn host(up: (Ipv4Addr, MacAddr), local: Ipv4Addr, remote: Ipv4Addr, vtep: Ipv4Addr) -> S {
        let mut s = S::new();
        for p in &mut s.config.ports {
            if p.id == PORT_C {
                p.role = PortRole::Endpoint {
                    network: OTHER,
                    vlan: 0,
                    mac: S::mac(local),
                    ipv4: Some(local),
                    ipv6: None,
                };
            }
        }
        s.config.uplink = Some(UplinkConfig {
            ip: crate::config::Ipv4Cidr::new(up.0, 24).unwrap(),
            mac: up.1,
            ..s.config.uplink.clone().unwrap()
        });
        s.config.overlays.push(OverlayConfig {
            network: OTHER,
            vni: VNI,
            remotes: vec![RemoteEndpoint {
                mac: S::mac(remote),
                ipv4: remote,
                ipv6: None,
                vtep,
            }],
        });
        s
    }

    /// R's and C's IPv6 addresses on the dual-stack overlay of [`dual_stack`].
    const R6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 9);
    const C6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0xc);

    /// [`host`] on a dual-stack overlay: `local` for PORT_C's endpoint, `remote` for the
    /// remote one (`None`: the remote table has no IPv6 address for it).
    fn dual_stack(mut s: S, local: Ipv6Addr, remote: Option<Ipv6Addr>) -> Worker {
        use crate::config::{Ipv6Cidr, NetworkV6};
        s.config.networks[usize::from(OTHER.0)].ipv6 = Some(NetworkV6 {
            subnet: Ipv6Cidr::new(Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0), 64).unwrap(),
            gateway: Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 1),
            routed: false,
        });
        for p in &mut s.config.ports {
            if let PortRole::Endpoint { ipv6, .. } = &mut p.role {
                if p.id == PORT_C {
                    *ipv6 = Some(local);
                }
            }
        }
        s.config.overlays[0].remotes[0].ipv6 = remote;
        worker_for(&s)
    }

    /// An IPv6 frame of `macs` (destination, source) from `src` to `dst`: UDP with `payload`, or
    /// TCP (ACK, sequence 1) when `tcp`.
    fn frame6(
        macs: (MacAddr, MacAddr),
        (src, dst): (Ipv6Addr, Ipv6Addr),
        tcp: bool,
        payload: &[u8],
    ) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2(macs.1 .0, macs.0 .0).ipv6(
            src.octets(),
            dst.octets(),
            64,
        );
        let mut v = Vec::new();
        if tcp {
            b.tcp(40000, 5201, 1, 0xffff)
                .ack(1)
                .write(&mut v, payload)
                .unwrap();
        } else {
            b.udp(53, 1000).write(&mut v, payload).unwrap();
        }
        v
    }

    fn host_a() -> Worker {
        worker_for(&host((S::UP, S::UP_MAC), S::C, R, VTEP_B))
    }

    fn host_b() -> Worker {
        worker_for(&host((VTEP_B, VTEP_B_MAC), R, S::C, S::UP))
    }

    /// Teaches `w` (whose uplink is `own`) the MAC of the peer VTEP `peer`.
    fn learn_peer(w: &mut Worker, own: (Ipv4Addr, MacAddr), peer: (Ipv4Addr, MacAddr)) {
        let reply = arp_reply(peer.1, peer.0, own.1, own.0);
        assert_eq!(run_one(w, UPLINK, &reply, T0).0, Verdict::Consumed);
    }

    fn c_to_r(sport: u16, payload: &[u8]) -> Vec<u8> {
        eth(
            S::mac(R),
            S::mac(S::C),
            0x0800,
            &udp(S::C, sport, R, 53, payload),
        )
    }

    /// A VXLAN datagram from `vtep` to host A with `header` then `inner` as UDP payload.
    fn vxlan_to_a(vtep: Ipv4Addr, header: [u8; 8], inner: &[u8]) -> Vec<u8> {
        let mut payload = header.to_vec();
        payload.extend_from_slice(inner);
        eth(
            S::UP_MAC,
            VTEP_B_MAC,
            0x0800,
            &udp(vtep, 50000, S::UP, 4789, &payload),
        )
    }

    fn header(flags: u8, vni: u32) -> [u8; 8] {
        let v = vni.to_be_bytes();
        [flags, 0, 0, 0, v[1], v[2], v[3], 0]
    }

    fn r_to_c() -> Vec<u8> {
        eth(
            S::mac(S::C),
            S::mac(R),
            0x0800,
            &udp(R, 53, S::C, 1000, b"answer"),
        )
    }

    #[test]
    fn encapsulates_to_the_peer_vtep_and_the_peer_decapsulates() {
        let mut a = host_a();
        let inner = c_to_r(1000, b"hello");
        // The peer VTEP is not resolved yet: an ARP request for it leaves instead.
        let (v, out) = run_one(&mut a, PORT_C, &inner, T0);
        assert_eq!(v, Verdict::Forward(UPLINK));
        let ask = ArpPacket::new_checked(&out[14..]).unwrap();
        assert_eq!((ask.sender_ip(), ask.target_ip()), (S::UP, VTEP_B));
        assert_eq!(a.counters().drops(R::ArpPending), 1);
        learn_peer(&mut a, (S::UP, S::UP_MAC), (VTEP_B, VTEP_B_MAC));

        let (v, out) = run_one(&mut a, PORT_C, &inner, T0);
        assert_eq!(v, Verdict::Forward(UPLINK));
        assert_eq!(out.len(), inner.len() + vxlan::OVERHEAD_V4);
        let eth = EthernetFrame::new_checked(&out[..]).unwrap();
        assert_eq!((eth.dst(), eth.src()), (VTEP_B_MAC, S::UP_MAC));
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!((ip.src(), ip.dst()), (S::UP, VTEP_B));
        let u = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!((u.dst_port(), u.checksum()), (vxlan::UDP_PORT, 0));
        assert!(u.src_port() >= 49152);
        let vx = VxlanHeader::new_checked(u.payload()).unwrap();
        assert_eq!(
            (vx.vni_valid(), vx.vni(), vx.payload()),
            (true, VNI, &inner[..])
        );

        let mut b = host_b();
        let (v, delivered) = run_one(&mut b, UPLINK, &out, T0);
        assert_eq!(v, Verdict::Forward(PORT_C));
        assert_eq!(delivered, inner);
    }

    #[test]
    fn arp_for_a_remote_endpoint_is_answered_locally() {
        let mut a = host_a();
        let (v, out) = run_one(&mut a, PORT_C, &arp_request(S::mac(S::C), S::C, R), T0);
        assert_eq!(v, Verdict::Forward(PORT_C));
        let reply = ArpPacket::new_checked(&out[14..]).unwrap();
        assert_eq!(reply.operation(), crate::wire::arp::OP_REPLY);
        assert_eq!((reply.sender_mac(), reply.sender_ip()), (S::mac(R), R));
        assert_eq!(&out[..6], &S::mac(S::C).0);
        // Nobody known there: the request stays on this host's segment.
        let unknown = arp_request(S::mac(S::C), S::C, Ipv4Addr::new(172, 18, 0, 50));
        assert_eq!(
            run_one(&mut a, PORT_C, &unknown, T0).0,
            Verdict::Flood {
                network: OTHER,
                vlan: 0
            }
        );
    }

    #[test]
    fn unknown_unicast_of_an_overlay_is_dropped_not_flooded() {
        let mut a = host_a();
        let stray = eth(
            MacAddr([2, 9, 9, 9, 9, 9]),
            S::mac(S::C),
            0x0800,
            &udp(S::C, 1, R, 2, b"x"),
        );
        assert_eq!(
            run_one(&mut a, PORT_C, &stray, T0).0,
            Verdict::Drop(R::VxlanUnknownDst)
        );
        let to_nobody = eth(
            MacAddr([2, 9, 9, 9, 9, 9]),
            S::mac(R),
            0x0800,
            &udp(R, 1, S::C, 2, b"x"),
        );
        let f = vxlan_to_a(VTEP_B, header(vxlan::FLAG_I, VNI), &to_nobody);
        assert_eq!(
            run_one(&mut a, UPLINK, &f, T0).0,
            Verdict::Drop(R::VxlanUnknownDst)
        );
        assert_eq!(a.counters().drops(R::VxlanUnknownDst), 2);
    }

    #[test]
    fn a_remote_broadcast_floods_this_hosts_ports_only() {
        let mut a = host_a();
        let ask = arp_request(S::mac(R), R, S::C);
        let f = vxlan_to_a(VTEP_B, header(vxlan::FLAG_I, VNI), &ask);
        let (v, out) = run_one(&mut a, UPLINK, &f, T0);
        assert_eq!(
            v,
            Verdict::Flood {
                network: OTHER,
                vlan: 0
            }
        );
        assert_eq!(out, ask);
        let targets: Vec<PortId> = a
            .dataplane()
            .tables()
            .flood_targets(OTHER, 0, UPLINK)
            .map(|(p, _)| p)
            .collect();
        assert_eq!(targets, vec![PORT_C]);
    }

    #[test]
    fn bad_vxlan_input_is_counted() {
        let mut a = host_a();
        let good = r_to_c();
        let i = vxlan::FLAG_I;
        let stranger = Ipv4Addr::new(172, 18, 0, 77);
        let foreign = eth(
            S::mac(S::C),
            S::mac(stranger),
            0x0800,
            &udp(stranger, 1, S::C, 2, b"x"),
        );
        let lying_ip = eth(
            S::mac(S::C),
            S::mac(R),
            0x0800,
            &udp(stranger, 1, S::C, 2, b"x"),
        );
        let mut truncated = vxlan_to_a(VTEP_B, header(i, VNI), &[]);
        // UDP payload of 4 bytes: half a VXLAN header.
        truncated = eth(
            S::UP_MAC,
            VTEP_B_MAC,
            0x0800,
            &udp(VTEP_B, 1, S::UP, 4789, &truncated[42..46]),
        );
        let cases = [
            (
                vxlan_to_a(VTEP_B, header(i, VNI + 1), &good),
                R::VxlanUnknownVni,
            ),
            (truncated, R::VxlanMalformed),
            (vxlan_to_a(VTEP_B, header(0, VNI), &good), R::VxlanMalformed),
            (
                vxlan_to_a(VTEP_B, header(i, VNI), &good[..10]),
                R::VxlanMalformed,
            ),
            (
                vxlan_to_a(VTEP_B, header(i, VNI), &foreign),
                R::VxlanSpoofed,
            ),
            (
                vxlan_to_a(VTEP_B, header(i, VNI), &lying_ip),
                R::VxlanSpoofed,
            ),
            (
                vxlan_to_a(Ipv4Addr::new(192, 0, 2, 3), header(i, VNI), &good),
                R::VxlanSpoofed,
            ),
            (
                vxlan_to_a(VTEP_B, header(i, VNI), &tagged(&good, 5)),
                R::VxlanMalformed,
            ),
        ];
        for (frame, reason) in &cases {
            assert_eq!(
                run_one(&mut a, UPLINK, frame, T0).0,
                Verdict::Drop(*reason),
                "{reason:?}"
            );
        }
        let c = a.counters();
        assert_eq!(c.drops(R::VxlanUnknownVni), 1);
        assert_eq!(c.drops(R::VxlanMalformed), 4);
        assert_eq!(c.drops(R::VxlanSpoofed), 3);
        // The same datagram with the I flag and the right VNI is delivered.
        let f = vxlan_to_a(VTEP_B, header(i, VNI), &good);
        assert_eq!(run_one(&mut a, UPLINK, &f, T0).0, Verdict::Forward(PORT_C));
    }

    #[test]
    fn port_4789_is_plain_udp_without_overlays_and_other_ports_are_not_vxlan() {
        let f = vxlan_to_a(VTEP_B, header(vxlan::FLAG_I, VNI), &r_to_c());
        let mut plain = worker_for(&S::new());
        assert_eq!(
            run_one(&mut plain, UPLINK, &f, T0).0,
            Verdict::Drop(R::NoFlow)
        );
        let mut a = host_a();
        let other_port = eth(
            S::UP_MAC,
            VTEP_B_MAC,
            0x0800,
            &udp(VTEP_B, 1, S::UP, 4790, b"x"),
        );
        assert_eq!(
            run_one(&mut a, UPLINK, &other_port, T0).0,
            Verdict::Drop(R::NoFlow)
        );
    }

    #[test]
    fn frames_too_big_once_encapsulated_are_dropped() {
        let mut a = host_a();
        learn_peer(&mut a, (S::UP, S::UP_MAC), (VTEP_B, VTEP_B_MAC));
        // 1500-byte inner IPv4 packet: 50 bytes over the uplink's 1500 once wrapped.
        let big = c_to_r(1000, &[0u8; 1500 - 28]);
        assert_eq!(
            run_one(&mut a, PORT_C, &big, T0).0,
            Verdict::Drop(R::TooBig)
        );
        let fits = c_to_r(1000, &[0u8; 1450 - 28]);
        assert_eq!(
            run_one(&mut a, PORT_C, &fits, T0).0,
            Verdict::Forward(UPLINK)
        );
    }

    /// Runs `frame` from `ingress` through `w` with offload `off`; returns the processed frame's
    /// verdict, bytes and offload.
    fn run_offloaded(
        w: &mut Worker,
        ingress: PortId,
        frame: &[u8],
        off: Offload,
    ) -> (Verdict, Vec<u8>, Offload) {
        processed(w, ingress, (frame, off), |_, batch| {
            let f = &batch.frames()[0];
            (f.meta.verdict, f.data().to_vec(), f.meta.offload)
        })
    }

    /// Runs `frame` with offload `off` from `ingress` through `w` as a batch of its own, then
    /// `then` on the worker and the processed batch.
    fn processed<T>(
        w: &mut Worker,
        ingress: PortId,
        (frame, off): (&[u8], Offload),
        then: impl FnOnce(&mut Worker, &crate::batch::Batch<'_>) -> T,
    ) -> T {
        use crate::batch::Batch;
        use crate::frame::{Meta, HEADROOM};
        let mut buf = vec![0u8; HEADROOM + frame.len()];
        buf[HEADROOM..].copy_from_slice(frame);
        let meta = Meta {
            ingress,
            offload: off,
            ..Meta::default()
        };
        let mut batch = Batch::new();
        batch
            .push(Frame::new(&mut buf, HEADROOM, frame.len(), meta).unwrap())
            .unwrap();
        w.process(&mut batch, T0);
        then(w, &batch)
    }

    /// Runs `inner` from PORT_C through `w` as a super-frame with offload `off`; returns the
    /// verdict and the UDP GSO frames the runtime would send for it (`udp_gso`).
    fn pack_super_frame(
        w: &mut Worker,
        inner: &[u8],
        off: Offload,
    ) -> (Verdict, Vec<(Vec<u8>, Offload)>) {
        let (v, mut bytes, off) = run_offloaded(w, PORT_C, inner, off);
        let mut frames = Vec::new();
        if v == Verdict::Forward(UPLINK) {
            assert!(off.gso.is_tunnel());
            let meta = crate::frame::Meta {
                offload: off,
                ..Default::default()
            };
            let len = bytes.len();
            let f = Frame::new(&mut bytes, 0, len, meta).unwrap();
            let mut buf = vec![0u8; udp_gso::MAX_FRAME];
            udp_gso::each_udp_frame(&f, &mut buf, |p| {
                frames.push((p.data().to_vec(), p.meta.offload))
            })
            .unwrap();
        }
        (v, frames)
    }

    /// A TCP/IPv4 super-frame from C to R as a veth hands it over: the TCP checksum partial,
    /// the endpoint's MSS 1448.
    fn c_to_r_super_frame(payload: &[u8]) -> (Vec<u8>, Offload) {
        use crate::wire::checksum::{fold, pseudo_header_sum_v4};
        let mut inner = eth(
            S::mac(R),
            S::mac(S::C),
            0x0800,
            &tcp(S::C, 40000, R, 5201, ACK, payload),
        );
        let psum = fold(pseudo_header_sum_v4(S::C, R, 6, payload.len() as u16 + 20));
        inner[50..52].copy_from_slice(&psum.to_be_bytes());
        let off = Offload {
            gso: GsoType::TcpV4,
            gso_size: 1448,
            csum_partial: true,
            csum_start: 34,
            csum_offset: 16,
            ..Offload::default()
        };
        (inner, off)
    }

    /// Host A (its peer VTEP learned), 6000 bytes of payload, C's super-frame of them to R and
    /// what [`pack_super_frame`] makes of it on host A.
    #[allow(clippy::type_complexity)]
    fn c_to_r_packed() -> (Worker, Vec<u8>, Vec<u8>, (Verdict, Vec<(Vec<u8>, Offload)>)) {
        let mut a = host_a();
        learn_peer(&mut a, (S::UP, S::UP_MAC), (VTEP_B, VTEP_B_MAC));
        let payload: Vec<u8> = (0..6000u32).map(|i| (i * 7) as u8).collect();
        let (inner, off) = c_to_r_super_frame(&payload);
        let packed = pack_super_frame(&mut a, &inner, off);
        (a, payload, inner, packed)
    }

    #[test]
    fn a_tcp_super_frame_crosses_as_one_udp_gso_frame_and_arrives_whole() {
        use crate::wire::checksum::{fold, ones_sum};
        let (a, payload, inner, (v, frames)) = c_to_r_packed();
        assert_eq!(v, Verdict::Forward(UPLINK));
        // 1514 - 50 (VXLAN) - 54 (inner headers) = 1410 bytes a segment: 5 chunks, each
        // datagram the kernel cuts fits the uplink's MTU.
        assert_eq!(frames.len(), 1);
        let (frame, udp_off) = &frames[0];
        assert_eq!(udp_off.gso, GsoType::UdpL4);
        assert_eq!(usize::from(udp_off.gso_size), vxlan::HEADER_LEN + 54 + 1410);
        assert!(udp_gso::OUTER + usize::from(udp_off.gso_size) <= 1514);
        assert_eq!(frame.len(), udp_gso::OUTER + 4 * 1472 + 8 + 54 + 360);
        let mut b = host_b();
        let (v, mut delivered, got) = run_offloaded(&mut b, UPLINK, frame, *udp_off);
        assert_eq!(v, Verdict::Forward(PORT_C));
        assert_eq!(
            (got.gso, got.gso_size, got.csum_start, got.csum_offset),
            (GsoType::TcpV4, 1410, 34, 16)
        );
        let c = !fold(ones_sum(&delivered[34..], 0));
        delivered[50..52].copy_from_slice(&c.to_be_bytes());
        assert!(checksums_valid(&delivered));
        assert_eq!(&delivered[54..], &payload[..]);
        assert_eq!(&delivered[..50], &inner[..50], "the sender's headers");
        // Without a checksum covering its chunks, a GSO datagram is not joined but split.
        let bare = Offload {
            csum_partial: false,
            ..*udp_off
        };
        let (v, _, _) = run_offloaded(&mut b, UPLINK, frame, bare);
        assert_eq!(v, Verdict::Split);
        // Nor are chunks of another flow.
        let mut mixed = frame.clone();
        let second = udp_gso::OUTER + 1472 + 8 + 34;
        mixed[second] ^= 1;
        let (v, untouched, _) = run_offloaded(&mut b, UPLINK, &mixed, *udp_off);
        assert_eq!((v, &untouched), (Verdict::Split, &mixed));
        assert_eq!(b.counters().unjoined_chunks(), 10);
        assert_eq!(b.counters().drops(R::TooBig), 0);
        assert_eq!(a.counters().drops(R::TooBig), 0);
    }

    /// Runs the UDP GSO datagram `frame` (offload `off`) from the uplink through host `b`,
    /// which must split it, and each of its datagrams after: their verdicts, bytes and offloads.
    fn split_on(b: &mut Worker, frame: &[u8], off: Offload) -> Vec<(Verdict, Vec<u8>, Offload)> {
        processed(b, UPLINK, (frame, off), |b, batch| {
            assert_eq!(batch.frames()[0].meta.verdict, Verdict::Split);
            let mut delivered = Vec::new();
            udp_gso::split_unjoined(b, batch, T0, |_, one, _| {
                for f in one.frames() {
                    delivered.push((f.meta.verdict, f.data().to_vec(), f.meta.offload));
                }
            });
            delivered
        })
    }

    /// Sends C's UDP super-frame of `payload` in datagrams of `size` bytes (USO, the checksum
    /// partial as a veth hands it over) through host A: the verdict and the UDP GSO frames the
    /// runtime would send for it.
    fn c_to_r_uso(a: &mut Worker, payload: &[u8], size: u16) -> (Verdict, Vec<(Vec<u8>, Offload)>) {
        use crate::wire::checksum::{fold, pseudo_header_sum_v4};
        let mut inner = c_to_r(1000, payload);
        let psum = fold(pseudo_header_sum_v4(S::C, R, 17, payload.len() as u16 + 8));
        inner[40..42].copy_from_slice(&psum.to_be_bytes());
        let off = Offload {
            gso: GsoType::UdpL4,
            gso_size: size,
            csum_partial: true,
            csum_start: 34,
            csum_offset: 6,
            ..Offload::default()
        };
        pack_super_frame(a, &inner, off)
    }

    #[test]
    fn a_udp_super_frame_crosses_as_its_senders_datagrams() {
        let mut a = host_a();
        learn_peer(&mut a, (S::UP, S::UP_MAC), (VTEP_B, VTEP_B_MAC));
        let payload: Vec<u8> = (0..2500u32).map(|i| (i * 11) as u8).collect();
        let (v, frames) = c_to_r_uso(&mut a, &payload, 1000);
        assert_eq!(v, Verdict::Forward(UPLINK));
        // Three datagrams of the sender's 1000 bytes (the last 500), each wrapped whole: the
        // chunks of one UDP GSO frame.
        assert_eq!(frames.len(), 1);
        let (frame, udp_off) = &frames[0];
        let chunk = vxlan::HEADER_LEN + 42 + 1000;
        assert_eq!(
            (udp_off.gso, usize::from(udp_off.gso_size)),
            (GsoType::UdpL4, chunk)
        );
        assert_eq!(frame.len(), udp_gso::OUTER + 2 * chunk + chunk - 500);
        // Host B cannot join UDP datagrams into a TCP super-frame: it delivers them one by one.
        let mut b = host_b();
        let mut got = Vec::new();
        for (v, data, _) in split_on(&mut b, frame, *udp_off) {
            assert_eq!(v, Verdict::Forward(PORT_C));
            assert!(checksums_valid(&data));
            let d = UdpPacket::new_checked(&data[34..]).unwrap();
            assert_eq!((d.src_port(), d.dst_port()), (1000, 53));
            got.push(d.payload().to_vec());
        }
        assert_eq!(
            got.iter().map(Vec::len).collect::<Vec<_>>(),
            [1000, 1000, 500]
        );
        assert_eq!(got.concat(), payload);
        // Datagrams too big for the uplink once wrapped cannot be made smaller: dropped.
        let (v, _) = c_to_r_uso(&mut a, &payload, 1500 - 28 - 49);
        assert_eq!(v, Verdict::Drop(R::TooBig));
        let (v, _) = c_to_r_uso(&mut a, &payload, 1500 - 28 - 50);
        assert_eq!(v, Verdict::Forward(UPLINK));
        assert_eq!(a.counters().drops(R::TooBig), 1);
    }

    #[test]
    fn a_tcp6_super_frame_crosses_as_one_udp_gso_frame_and_arrives_whole() {
        use crate::wire::checksum::{fold, ones_sum, pseudo_header_sum_v6};
        let mut a = dual_stack(host((S::UP, S::UP_MAC), S::C, R, VTEP_B), C6, Some(R6));
        learn_peer(&mut a, (S::UP, S::UP_MAC), (VTEP_B, VTEP_B_MAC));
        let payload: Vec<u8> = (0..6000u32).map(|i| (i * 7) as u8).collect();
        let mut inner = frame6((S::mac(R), S::mac(S::C)), (C6, R6), true, &payload);
        // As a veth hands it over: the TCP checksum partial, the endpoint's MSS 1428.
        let psum = fold(pseudo_header_sum_v6(C6, R6, 6, payload.len() as u32 + 20));
        inner[70..72].copy_from_slice(&psum.to_be_bytes());
        let off = Offload {
            gso: GsoType::TcpV6,
            gso_size: 1428,
            csum_partial: true,
            csum_start: 54,
            csum_offset: 16,
            ..Offload::default()
        };
        let (v, frames) = pack_super_frame(&mut a, &inner, off);
        assert_eq!(v, Verdict::Forward(UPLINK));
        // 1514 - 50 (VXLAN) - 74 (inner headers) = 1390 bytes a segment: 5 chunks in one frame.
        assert_eq!(frames.len(), 1);
        let (frame, udp_off) = &frames[0];
        assert_eq!(udp_off.gso, GsoType::UdpL4);
        assert_eq!(usize::from(udp_off.gso_size), vxlan::HEADER_LEN + 74 + 1390);
        assert_eq!(frame.len(), udp_gso::OUTER + 5 * (8 + 74) + 6000);
        let mut b = dual_stack(host((VTEP_B, VTEP_B_MAC), R, S::C, S::UP), R6, Some(C6));
        let (v, mut delivered, got) = run_offloaded(&mut b, UPLINK, frame, *udp_off);
        assert_eq!(v, Verdict::Forward(PORT_C));
        assert_eq!(
            (got.gso, got.gso_size, got.csum_start, got.csum_offset),
            (GsoType::TcpV6, 1390, 54, 16)
        );
        let c = !fold(ones_sum(&delivered[54..], 0));
        delivered[70..72].copy_from_slice(&c.to_be_bytes());
        let seg = crate::wire::TcpPacket::new_checked(&delivered[54..]).unwrap();
        assert!(seg.verify_checksum_v6(C6, R6));
        assert_eq!(&delivered[74..], &payload[..]);
        assert_eq!(&delivered[..70], &inner[..70], "the sender's headers");
    }

    /// `inner` wrapped whole by host A's kernel for host B (the flow offload's encapsulation:
    /// outer lengths of the whole super-frame, UDP checksum 0), with the offload the packet
    /// socket reports for it: TCP GSO of `kind`, segments of 1400 bytes, the checksum partial at
    /// the inner TCP header at `tcp` of the inner frame when `partial`, else verified.
    fn kernel_wrapped(inner: &[u8], kind: GsoType, tcp: u16, partial: bool) -> (Vec<u8>, Offload) {
        let mut payload = header(vxlan::FLAG_I, VNI).to_vec();
        payload.extend_from_slice(inner);
        let mut dgram = udp(S::UP, 50000, VTEP_B, 4789, &payload);
        dgram[26..28].copy_from_slice(&[0, 0]);
        let frame = eth(VTEP_B_MAC, S::UP_MAC, 0x0800, &dgram);
        let off = Offload {
            gso: kind,
            gso_size: 1400,
            hdr_len: 128,
            csum_partial: partial,
            csum_start: if partial { 50 + tcp } else { 0 },
            csum_offset: if partial { 16 } else { 0 },
            data_valid: !partial,
            ..Offload::default()
        };
        (frame, off)
    }

    #[test]
    fn a_tcp_super_frame_the_other_kernel_wrapped_arrives_whole() {
        use crate::wire::checksum::{fold, ones_sum};
        let payload: Vec<u8> = (0..9000u32).map(|i| (i * 13) as u8).collect();
        let (inner, _) = c_to_r_super_frame(&payload);
        // Partial at the inner TCP header (a veth from the sender's TC program), or verified
        // with the inner checksum complete (a NIC's receive offload).
        let complete = eth(
            S::mac(R),
            S::mac(S::C),
            0x0800,
            &tcp(S::C, 40000, R, 5201, ACK, &payload),
        );
        for (sent, partial) in [(&inner, true), (&complete, false)] {
            let (frame, off) = kernel_wrapped(sent, GsoType::TcpV4, 34, partial);
            let mut b = host_b();
            let (v, mut delivered, got) = run_offloaded(&mut b, UPLINK, &frame, off);
            assert_eq!(v, Verdict::Forward(PORT_C), "partial: {partial}");
            let want = Offload {
                gso: GsoType::TcpV4,
                gso_size: 1400,
                hdr_len: 54,
                csum_partial: true,
                csum_start: 34,
                csum_offset: 16,
                ..Offload::default()
            };
            assert_eq!(got, want);
            assert_eq!(&delivered[..50], &inner[..50], "the sender's headers");
            assert_eq!(&delivered[50..52], &inner[50..52], "the pseudo-header sum");
            let c = !fold(ones_sum(&delivered[34..], 0));
            delivered[50..52].copy_from_slice(&c.to_be_bytes());
            assert!(checksums_valid(&delivered));
            assert_eq!(&delivered[54..], &payload[..]);
            assert_eq!(b.counters().drops(R::TooBig), 0);
        }
        // ECN stays with the super-frame.
        let (frame, off) = kernel_wrapped(&inner, GsoType::TcpV4, 34, true);
        let ecn = Offload {
            gso_ecn: true,
            ..off
        };
        let (v, _, got) = run_offloaded(&mut host_b(), UPLINK, &frame, ecn);
        assert_eq!((v, got.gso_ecn), (Verdict::Forward(PORT_C), true));
        // A GSO kind that is not the inner frame's, or a UDP inner frame: too big.
        let mut b = host_b();
        let (frame, off) = kernel_wrapped(&inner, GsoType::TcpV6, 34, true);
        let (v, _, _) = run_offloaded(&mut b, UPLINK, &frame, off);
        assert_eq!(v, Verdict::Drop(R::TooBig));
        let (frame, off) = kernel_wrapped(&c_to_r(1000, &payload), GsoType::TcpV4, 34, true);
        let (v, _, _) = run_offloaded(&mut b, UPLINK, &frame, off);
        assert_eq!(v, Verdict::Drop(R::TooBig));
        assert_eq!(b.counters().drops(R::TooBig), 2);
    }

    #[test]
    fn a_udp_super_frame_the_other_kernel_wrapped_arrives_whole() {
        use crate::wire::checksum::{fold, pseudo_header_sum_v4};
        let payload: Vec<u8> = (0..3000u32).map(|i| (i * 17) as u8).collect();
        let mut inner = c_to_r(1000, &payload);
        let psum = fold(pseudo_header_sum_v4(S::C, R, 17, payload.len() as u16 + 8));
        inner[40..42].copy_from_slice(&psum.to_be_bytes());
        // As the packet socket reports it: UDP GSO of the sender's datagram size, the checksum
        // partial at the inner UDP header.
        let (frame, off) = kernel_wrapped(&inner, GsoType::UdpL4, 34, true);
        let off = Offload {
            gso_size: 1200,
            csum_offset: 6,
            ..off
        };
        let mut b = host_b();
        let (v, delivered, got) = run_offloaded(&mut b, UPLINK, &frame, off);
        assert_eq!(v, Verdict::Forward(PORT_C));
        let want = Offload {
            gso: GsoType::UdpL4,
            gso_size: 1200,
            hdr_len: 42,
            csum_partial: true,
            csum_start: 34,
            csum_offset: 6,
            ..Offload::default()
        };
        assert_eq!((got, &delivered), (want, &inner));
        // Partial anywhere but at the inner UDP checksum: no super-frame to hand on.
        for odd in [
            Offload {
                csum_start: 50 + 20,
                ..off
            },
            Offload {
                csum_offset: 16,
                ..off
            },
        ] {
            let (v, _, _) = run_offloaded(&mut b, UPLINK, &frame, odd);
            assert_eq!(v, Verdict::Drop(R::TooBig));
        }
        assert_eq!(b.counters().unjoined_chunks(), 0);
    }

    #[test]
    fn a_tcp6_super_frame_the_other_kernel_wrapped_arrives_whole() {
        use crate::wire::checksum::{fold, ones_sum, pseudo_header_sum_v6};
        let payload: Vec<u8> = (0..9000u32).map(|i| (i * 13) as u8).collect();
        let mut inner = frame6((S::mac(R), S::mac(S::C)), (C6, R6), true, &payload);
        let psum = fold(pseudo_header_sum_v6(C6, R6, 6, payload.len() as u32 + 20));
        inner[70..72].copy_from_slice(&psum.to_be_bytes());
        let (frame, off) = kernel_wrapped(&inner, GsoType::TcpV6, 54, true);
        let mut b = dual_stack(host((VTEP_B, VTEP_B_MAC), R, S::C, S::UP), R6, Some(C6));
        let (v, mut delivered, got) = run_offloaded(&mut b, UPLINK, &frame, off);
        assert_eq!(v, Verdict::Forward(PORT_C));
        assert_eq!(
            (
                got.gso,
                got.gso_size,
                got.csum_partial,
                got.csum_start,
                got.csum_offset
            ),
            (GsoType::TcpV6, 1400, true, 54, 16)
        );
        assert_eq!(&delivered[..72], &inner[..72]);
        let c = !fold(ones_sum(&delivered[54..], 0));
        delivered[70..72].copy_from_slice(&c.to_be_bytes());
        let seg = crate::wire::TcpPacket::new_checked(&delivered[54..]).unwrap();
        assert!(seg.verify_checksum_v6(C6, R6));
        assert_eq!(&delivered[74..], &payload[..]);
        // Reported as TCP/IPv4 GSO: not the inner frame's kind.
        let (frame, off) = kernel_wrapped(&inner, GsoType::TcpV4, 54, true);
        let (v, _, _) = run_offloaded(&mut b, UPLINK, &frame, off);
        assert_eq!(v, Verdict::Drop(R::TooBig));
    }

    #[test]
    fn a_decapsulated_ipv6_frame_must_come_from_its_remote_address() {
        let mut a = dual_stack(host((S::UP, S::UP_MAC), S::C, R, VTEP_B), C6, Some(R6));
        let from = |src| {
            let inner = frame6((S::mac(S::C), S::mac(R)), (src, C6), false, b"x");
            vxlan_to_a(VTEP_B, header(vxlan::FLAG_I, VNI), &inner)
        };
        let link_local = crate::wire::ndisc::link_local(S::mac(R));
        let stranger = Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 0x77);
        assert_eq!(
            run_one(&mut a, UPLINK, &from(R6), T0).0,
            Verdict::Forward(PORT_C)
        );
        assert_eq!(
            run_one(&mut a, UPLINK, &from(link_local), T0).0,
            Verdict::Forward(PORT_C)
        );
        for src in [stranger, C6] {
            assert_eq!(
                run_one(&mut a, UPLINK, &from(src), T0).0,
                Verdict::Drop(R::VxlanSpoofed),
                "{src}"
            );
        }
        let mut inner = frame6((S::mac(S::C), S::mac(R)), (R6, C6), false, b"x");
        inner.truncate(inner.len() - 20);
        let short = vxlan_to_a(VTEP_B, header(vxlan::FLAG_I, VNI), &inner);
        assert_eq!(
            run_one(&mut a, UPLINK, &short, T0).0,
            Verdict::Drop(R::VxlanMalformed)
        );
        // A remote without an IPv6 address in the table sends from its link-local one only.
        let mut v4_only = dual_stack(host((S::UP, S::UP_MAC), S::C, R, VTEP_B), C6, None);
        assert_eq!(
            run_one(&mut v4_only, UPLINK, &from(R6), T0).0,
            Verdict::Drop(R::VxlanSpoofed)
        );
        assert_eq!(
            run_one(&mut v4_only, UPLINK, &from(link_local), T0).0,
            Verdict::Forward(PORT_C)
        );
        assert_eq!(a.counters().drops(R::VxlanSpoofed), 2);
        assert_eq!(v4_only.counters().drops(R::VxlanSpoofed), 1);
    }

    #[test]
    fn chunks_that_do_not_join_are_delivered_one_by_one() {
        let (_, payload, inner, (_, frames)) = c_to_r_packed();
        let (frame, udp_off) = &frames[0];
        // The third chunk's TCP sequence breaks the run (as another flow's chunk would): none
        // of the five joins, each reaches R on its own.
        let mut mixed = frame.clone();
        let chunk = usize::from(udp_off.gso_size);
        let third = udp_gso::OUTER + 2 * chunk + 8 + 34;
        let mut seg =
            crate::wire::TcpPacket::new_checked(&mut mixed[third..third - 42 + chunk]).unwrap();
        seg.set_seq(seg.seq() ^ 0x8000_0000);
        seg.fill_checksum_v4(S::C, R);
        let mut b = host_b();
        let delivered = split_on(&mut b, &mixed, *udp_off);
        assert_eq!(delivered.len(), 5);
        let mut got = Vec::new();
        for (k, (v, seg, off)) in delivered.iter().enumerate() {
            assert_eq!(*v, Verdict::Forward(PORT_C), "chunk {k}");
            assert_eq!(*off, Offload::default());
            assert!(checksums_valid(seg), "chunk {k}");
            assert_eq!(&seg[..12], &inner[..12]);
            got.extend_from_slice(&seg[54..]);
        }
        assert_eq!(got, payload);
        assert_eq!(b.counters().unjoined_chunks(), 5);
        // An ordinary batch has nothing to split.
        let mut calls = 0;
        udp_gso::split_unjoined(&mut b, &crate::batch::Batch::new(), T0, |_, _, _| {
            calls += 1
        });
        assert_eq!(calls, 0);
    }

    #[test]
    fn a_new_remote_table_takes_effect_at_the_next_batch() {
        let mut s = host((S::UP, S::UP_MAC), S::C, R, VTEP_B);
        let mut a = worker_for(&s);
        learn_peer(&mut a, (S::UP, S::UP_MAC), (VTEP_B, VTEP_B_MAC));
        let inner = c_to_r(1000, b"x");
        assert_eq!(
            run_one(&mut a, PORT_C, &inner, T0).0,
            Verdict::Forward(UPLINK)
        );
        // R moved to another host: the next frame asks for that host's VTEP.
        let vtep_c = Ipv4Addr::new(192, 0, 2, 3);
        s.config.overlays[0].remotes[0].vtep = vtep_c;
        a.dataplane().apply(&s.config).unwrap();
        let (v, out) = run_one(&mut a, PORT_C, &inner, T0);
        assert_eq!(v, Verdict::Forward(UPLINK));
        assert_eq!(
            ArpPacket::new_checked(&out[14..]).unwrap().target_ip(),
            vtep_c
        );
        // R left (its host's lease expired): unknown again, dropped.
        s.config.overlays[0].remotes.clear();
        a.dataplane().apply(&s.config).unwrap();
        assert_eq!(
            run_one(&mut a, PORT_C, &inner, T0).0,
            Verdict::Drop(R::VxlanUnknownDst)
        );
        let bad = RemoteEndpoint {
            mac: S::mac(S::A),
            ipv4: S::A,
            ipv6: None,
            vtep: VTEP_B,
        };
        s.config.overlays[0].remotes.push(bad);
        assert!(
            a.dataplane().apply(&s.config).is_err(),
            "outside the subnet"
        );
    }

    #[test]
    fn a_partial_inner_checksum_moves_with_the_inner_frame() {
        let inner_at = 50;
        let partial = |csum_start| Offload {
            csum_partial: true,
            csum_start,
            csum_offset: 16,
            data_valid: true,
            ..Offload::default()
        };
        // A veth peer's inner TCP checksum, partial from the inner L4 header (50 + 14 + 20).
        let off = inner_offload(partial(84), inner_at).unwrap();
        assert_eq!(
            (off.csum_partial, off.csum_start, off.csum_offset),
            (true, 34, 16)
        );
        assert!(off.data_valid);
        // A partial outer UDP checksum: the inner frame's own checksums are complete.
        let off = inner_offload(partial(34), inner_at).unwrap();
        assert!(!off.csum_partial);
        assert_eq!(off.csum_start, 0);
        let gso = Offload {
            gso: GsoType::TcpV4,
            ..Offload::default()
        };
        assert_eq!(inner_offload(gso, inner_at), Err(R::TooBig));
        let one_datagram = Offload {
            gso: GsoType::UdpL4,
            gso_size: 1400,
            ..partial(34)
        };
        assert_eq!(udp_gso_chunk(&one_datagram, 1400), None);
        assert_eq!(udp_gso_chunk(&one_datagram, 1401), Some(1400));
        assert!(!inner_offload(one_datagram, inner_at).unwrap().csum_partial);
    }

    proptest! {
        #[test]
        fn encap_then_decap_is_the_identity(
            payload in proptest::collection::vec(any::<u8>(), 0..1400),
            sport in any::<u16>(),
        ) {
            let mut a = host_a();
            learn_peer(&mut a, (S::UP, S::UP_MAC), (VTEP_B, VTEP_B_MAC));
            let mut b = host_b();
            let inner = c_to_r(sport, &payload);
            let (v, wrapped) = run_one(&mut a, PORT_C, &inner, T0);
            prop_assert_eq!(v, Verdict::Forward(UPLINK));
            let (v, out) = run_one(&mut b, UPLINK, &wrapped, T0);
            prop_assert_eq!(v, Verdict::Forward(PORT_C));
            prop_assert_eq!(out, inner);
        }

        #[test]
        fn random_bytes_into_decap_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            valid_header in any::<bool>(),
        ) {
            let mut a = host_a();
            let f = if valid_header {
                vxlan_to_a(VTEP_B, header(vxlan::FLAG_I, VNI), &bytes)
            } else {
                eth(S::UP_MAC, VTEP_B_MAC, 0x0800, &udp(VTEP_B, 1, S::UP, 4789, &bytes))
            };
            let (v, _) = run_one(&mut a, UPLINK, &f, T0);
            prop_assert!(v != Verdict::Pending);
        }
    }
}
