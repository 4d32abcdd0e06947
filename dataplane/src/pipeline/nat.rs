//! The NAT stage: finds or creates the frame's flow in conntrack, rewrites the packet to the
//! tuple conntrack chose (NAPT on bytes, incremental RFC 1624 checksum updates; ICMP errors
//! through the header they quote), then hands it to `route`. Its drops: no flow, conntrack
//! full, NAT ports exhausted, endpoint flow quota, NAT port share (new flows are charged to
//! the endpoint they come from, see `Owner`), TTL exceeded (after translation; `gateway` answers the others).
//!
//! Checksum-partial frames (virtio-net `NEEDS_CSUM`) hold only the pseudo-header sum in their
//! TCP/UDP checksum field: an address change updates that sum, a port change leaves it alone
//! (the device that completes the checksum covers the ports).

use std::net::Ipv4Addr;

use super::flow::{FlowOf, Ipv4Info, L4Kind};
use super::route::NextHop;
use super::state::BatchState;
use crate::counters::DropReason as R;
use crate::counters::DropReason;
use crate::frame::{Frame, PortId, Verdict};
use crate::nat::{Hit, NatAction, NatError, Owner, Tuple};
use crate::wire::checksum;
use crate::wire::icmpv4::Icmpv4Packet;
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::tcp::{self, TcpPacket};
use crate::wire::udp::{self, UdpPacket};

impl BatchState<'_> {
    /// Looks up or creates the flow, rewrites the packet and routes it to its new destination.
    /// `mtu` is the largest total length the caller let through without the too-big path
    /// (`u16::MAX`: it checked none), which a shortcut must check in its place.
    pub(super) fn translate_and_route(
        &mut self,
        f: &mut Frame<'_>,
        ip: &Ipv4Info,
        flow: &FlowOf,
        create: Option<NatAction>,
        mtu: u16,
    ) -> Result<Verdict, DropReason> {
        let now = self.now;
        self.routed = true;
        // An ICMP error quotes a packet of the flow as it was sent: look up its reverse.
        let key = if flow.kind == L4Kind::Error {
            flow.tuple.reversed()
        } else {
            flow.tuple
        };
        let (hit, created) = match self.lookup(&key) {
            Some(h) => (h, false),
            None => {
                let action = create.ok_or(R::NoFlow)?;
                if matches!(flow.kind, L4Kind::Error | L4Kind::Echo(false)) {
                    return Err(R::NoFlow);
                }
                let owner = self.owner(f.meta.ingress);
                let hit = self
                    .ct()
                    // `lookup` just missed `key`, which is `flow.tuple` here.
                    .create_after_miss(&flow.tuple, action, now, &owner)
                    .map_err(|e| match e {
                        NatError::TableFull => R::ConntrackFull,
                        NatError::PortsExhausted => R::NatPortsExhausted,
                        NatError::OwnerQuota => R::EndpointFlowQuota,
                        NatError::PortShare => R::NatPortShare,
                        NatError::Exists => R::NoFlow,
                        NatError::Clash => R::NatPortsExhausted,
                    })?;
                (hit, true)
            }
        };
        let sent = self.rewrite_and_send(f, ip, flow, &hit, mtu);
        if created && !matches!(sent, Ok((_, true))) {
            // The first packet never left (nor waits to): no flow for it, as the kernel
            // confirms a conntrack entry only once its packet leaves.
            self.ct().remove(hit.flow);
        }
        sent.map(|(v, _)| v)
    }

    /// Who a new flow arriving on `port` is charged to (`PortEntry::owner`: an endpoint's
    /// port is held to its quota and port share, an uplink only to the table's limit). Read
    /// on flow creation only, never for packets of existing flows.
    #[inline(always)]
    fn owner(&self, port: PortId) -> Owner {
        self.t
            .port(port)
            .map_or_else(|| Owner::unlimited(port), |p| p.owner)
    }

    /// Accounts the packet to its flow, rewrites it to the flow's tuple and routes it; tells
    /// whether the packet itself left (or waits for its next hop). Inlined: one caller, on
    /// every routed packet's path.
    #[inline(always)]
    fn rewrite_and_send(
        &mut self,
        f: &mut Frame<'_>,
        ip: &Ipv4Info,
        flow: &FlowOf,
        hit: &Hit,
        mtu: u16,
    ) -> Result<(Verdict, bool), DropReason> {
        let now = self.now;
        if flow.kind != L4Kind::Error {
            self.ct().update(hit.flow, hit.dir, flow.tcp_flags, now);
            if self.offload && flow.tcp_flags & (tcp::FIN | tcp::RST) != 0 {
                self.take_back_routed(hit);
            }
        }
        let new = if flow.kind == L4Kind::Error {
            hit.rewrite.reversed()
        } else {
            hit.rewrite
        };
        let partial = f.meta.offload.csum_partial;
        rewrite(f.data_mut(), ip, flow, &new, partial);
        let dst = if flow.kind == L4Kind::Error {
            new.src
        } else {
            new.dst
        };
        if ip.ttl <= 1 {
            return Err(R::TtlExceeded);
        }
        let next = self.next_hop(f.data(), ip.l3, dst)?;
        if let NextHop::Known(adj) = next {
            self.remember(f, ip, flow, hit, mtu, &adj);
        }
        self.send_or_hold(f, ip.l3, next)
    }
}

/// Rewrites the addresses of the IPv4 header at `l3` and its header checksum; returns the
/// pseudo-header deltas applied (for the L4 checksum).
fn rewrite_addrs(d: &mut [u8], l3: usize, src: Ipv4Addr, dst: Ipv4Addr) -> [(u32, u32); 2] {
    let mut ip = Ipv4Packet::new_unchecked(&mut d[l3..]);
    let old_src = u32::from(ip.src());
    let old_dst = u32::from(ip.dst());
    let (ns, nd) = (u32::from(src), u32::from(dst));
    let mut c = ip.checksum();
    if old_src != ns {
        c = checksum::adjust32(c, old_src, ns);
        ip.set_src(src);
    }
    if old_dst != nd {
        c = checksum::adjust32(c, old_dst, nd);
        ip.set_dst(dst);
    }
    ip.set_checksum(c);
    [(old_src, ns), (old_dst, nd)]
}

/// One L4 header rewrite: from `old` to `new` ports/ids, after the address changes `addrs`
/// (old, new) already made to the IP header, over `present` bytes of L4 header.
struct L4Change<'a> {
    old: &'a Tuple,
    new: &'a Tuple,
    addrs: [(u32, u32); 2],
    partial: bool,
    present: usize,
}

/// The TCP or UDP header at the start of `h` (at least its 8 first bytes): its checksum when
/// `present` bytes cover it.
fn l4_checksum(h: &[u8], kind: L4Kind, present: usize) -> Option<u16> {
    match kind {
        L4Kind::Tcp => {
            (present >= tcp::CHECKSUM_END).then(|| TcpPacket::new_unchecked(h).checksum())
        }
        _ => (present >= udp::HEADER_LEN).then(|| UdpPacket::new_unchecked(h).checksum()),
    }
}

/// Writes the ports and, when given, the checksum of the TCP or UDP header at the start of `h`.
fn set_l4_ports(h: &mut [u8], kind: L4Kind, new: &Tuple, csum: Option<u16>) {
    if kind == L4Kind::Tcp {
        let mut t = TcpPacket::new_unchecked(h);
        if let Some(c) = csum {
            t.set_checksum(c);
        }
        t.set_src_port(new.src_port);
        t.set_dst_port(new.dst_port);
    } else {
        let mut u = UdpPacket::new_unchecked(h);
        if let Some(c) = csum {
            u.set_checksum(c);
        }
        u.set_src_port(new.src_port);
        u.set_dst_port(new.dst_port);
    }
}

/// The TCP or UDP checksum `c` after change `ch` (addresses, then ports unless partial).
fn adjust_l4_checksum(mut c: u16, kind: L4Kind, ch: &L4Change<'_>) -> u16 {
    for (o, n) in ch.addrs {
        if o != n {
            c = if ch.partial {
                checksum::adjust_partial32(c, o, n)
            } else {
                checksum::adjust32(c, o, n)
            };
        }
    }
    if !ch.partial {
        if ch.old.src_port != ch.new.src_port {
            c = checksum::adjust16(c, ch.old.src_port, ch.new.src_port);
        }
        if ch.old.dst_port != ch.new.dst_port {
            c = checksum::adjust16(c, ch.old.dst_port, ch.new.dst_port);
        }
    }
    if kind == L4Kind::Udp && c == 0 {
        c = 0xffff;
    }
    c
}

/// Rewrites the L4 header at `l4` (at least 8 bytes present; the checksum only when
/// `present` covers it).
fn rewrite_l4(d: &mut [u8], l4: usize, kind: L4Kind, ch: &L4Change<'_>) {
    let h = &mut d[l4..];
    match kind {
        L4Kind::Tcp | L4Kind::Udp => {
            let csum = l4_checksum(h, kind, ch.present)
                // A UDP checksum of 0 means none: it stays 0.
                .filter(|c| kind != L4Kind::Udp || *c != 0)
                .map(|c| adjust_l4_checksum(c, kind, ch));
            set_l4_ports(h, kind, ch.new, csum);
        }
        L4Kind::Echo(_) => {
            let (old_id, new_id) = (ch.old.src_port, ch.new.src_port);
            if old_id != new_id {
                let mut icmp = Icmpv4Packet::new_unchecked(h);
                if !ch.partial {
                    let c = checksum::adjust16(icmp.checksum(), old_id, new_id);
                    icmp.set_checksum(c);
                }
                icmp.set_echo_ident(new_id);
            }
        }
        L4Kind::Error => {}
    }
}

/// Rewrites the packet described by `ip`/`flow` so that its tuple becomes `new`.
/// For an ICMP error `new` is the quoted packet's new tuple, and the outer header follows it:
/// the error travels back to the quoted packet's source. Inlined into its one caller on the
/// packet path.
#[inline(always)]
pub(super) fn rewrite(d: &mut [u8], ip: &Ipv4Info, flow: &FlowOf, new: &Tuple, partial: bool) {
    let end = ip.end(d);
    match (flow.kind, flow.quoted_kind) {
        (L4Kind::Error, Some(qk)) => {
            let q3 = flow.quoted_l3;
            let qhl = Ipv4Packet::new_unchecked(&d[q3..]).header_len();
            let addrs = rewrite_addrs(d, q3, new.src, new.dst);
            let q4 = q3 + qhl;
            rewrite_l4(
                d,
                q4,
                qk,
                &L4Change {
                    old: &flow.tuple,
                    new,
                    addrs,
                    partial: false,
                    present: end - q4,
                },
            );
            let outer_src = crate::nat::error_source(ip.src, flow.tuple.dst, new.dst);
            rewrite_addrs(d, ip.l3, outer_src, new.src);
            Icmpv4Packet::new_unchecked(&mut d[ip.l4()..end]).fill_checksum();
        }
        (kind, _) => {
            let addrs = rewrite_addrs(d, ip.l3, new.src, new.dst);
            rewrite_l4(
                d,
                ip.l4(),
                kind,
                &L4Change {
                    old: &flow.tuple,
                    new,
                    addrs,
                    partial,
                    present: end - ip.l4(),
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::flow::{flow_of, parse_ipv4};
    use crate::pipeline::tests::*;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
    use proptest::prelude::*;

    fn tcp_frame(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16, payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4(src, dst, 64)
            .tcp(sp, dp, 1000, 4000)
            .syn();
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    fn udp_frame(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16, payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4(src, dst, 64)
            .udp(sp, dp);
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    /// Checks every checksum of a frame by recomputing it (etherparse verifies nothing itself).
    fn checksums_ok(v: &[u8]) -> bool {
        let p = SlicedPacket::from_ethernet(v).unwrap();
        let ip = match p.net.unwrap() {
            etherparse::NetSlice::Ipv4(ip) => ip,
            _ => return false,
        };
        let h = ip.header();
        if checksum::internet_checksum(h.slice()) != 0 {
            return false;
        }
        let (s, d) = (Ipv4Addr::from(h.source()), Ipv4Addr::from(h.destination()));
        let l4 = &v[14 + h.slice().len()..14 + usize::from(h.total_len())];
        match p.transport.unwrap() {
            TransportSlice::Tcp(_) | TransportSlice::Udp(_) => {
                if h.protocol().0 == 17 && l4[6..8] == [0, 0] {
                    return true;
                }
                let ps = checksum::pseudo_header_sum_v4(s, d, h.protocol().0, l4.len() as u16);
                checksum::fold(checksum::ones_sum(l4, ps)) == 0xffff
            }
            TransportSlice::Icmpv4(_) => checksum::internet_checksum(l4) == 0,
            _ => false,
        }
    }

    #[test]
    fn tcp_rewrite_keeps_checksums_and_reads_back() {
        let mut v = tcp_frame([10, 0, 0, 2], 40000, [1, 2, 3, 4], 80, b"abc");
        let ip = parse_ipv4(&v, 14).unwrap();
        let f = flow_of(&v, &ip).unwrap();
        assert_eq!(f.kind, L4Kind::Tcp);
        assert_eq!(f.tcp_flags & 0x02, 0x02);
        let new = Tuple {
            src: Ipv4Addr::new(192, 0, 2, 1),
            src_port: 33000,
            ..f.tuple
        };
        rewrite(&mut v, &ip, &f, &new, false);
        assert!(checksums_ok(&v));
        let ip2 = parse_ipv4(&v, 14).unwrap();
        assert_eq!(flow_of(&v, &ip2).unwrap().tuple, new);
    }

    #[test]
    fn udp_zero_checksum_stays_zero() {
        let mut v = udp_frame([10, 0, 0, 2], 5000, [1, 2, 3, 4], 53, b"q");
        v[14 + 20 + 6] = 0;
        v[14 + 20 + 7] = 0;
        let ip = parse_ipv4(&v, 14).unwrap();
        let f = flow_of(&v, &ip).unwrap();
        let new = Tuple {
            src: Ipv4Addr::new(192, 0, 2, 1),
            src_port: 1,
            ..f.tuple
        };
        rewrite(&mut v, &ip, &f, &new, false);
        assert_eq!(&v[40..42], &[0, 0]);
        assert!(checksums_ok(&v));
    }

    #[test]
    fn partial_checksum_updates_only_the_pseudo_header() {
        let mut v = tcp_frame([10, 0, 0, 2], 40000, [1, 2, 3, 4], 80, b"payload");
        let l4 = 34;
        let len = (v.len() - l4) as u16;
        let ps = checksum::fold(checksum::pseudo_header_sum_v4(
            Ipv4Addr::new(10, 0, 0, 2),
            Ipv4Addr::new(1, 2, 3, 4),
            6,
            len,
        ));
        v[l4 + 16..l4 + 18].copy_from_slice(&ps.to_be_bytes());
        let ip = parse_ipv4(&v, 14).unwrap();
        let f = flow_of(&v, &ip).unwrap();
        let new = Tuple {
            src: Ipv4Addr::new(192, 0, 2, 1),
            src_port: 33000,
            ..f.tuple
        };
        rewrite(&mut v, &ip, &f, &new, true);
        let want = checksum::fold(checksum::pseudo_header_sum_v4(
            Ipv4Addr::new(192, 0, 2, 1),
            Ipv4Addr::new(1, 2, 3, 4),
            6,
            len,
        ));
        assert_eq!(u16::from_be_bytes([v[l4 + 16], v[l4 + 17]]), want);
    }

    #[test]
    fn icmp_error_quoting_a_translated_packet_maps_back() {
        // The outside answers a NATed UDP packet (192.0.2.1:33000 -> 1.2.3.4:53) with port
        // unreachable; it must reach 10.0.0.2 quoting 10.0.0.2:5000 -> 1.2.3.4:53.
        let quoted = udp_frame([192, 0, 2, 1], 33000, [1, 2, 3, 4], 53, b"q");
        let b = PacketBuilder::ethernet2([4; 6], [2; 6])
            .ipv4([1, 2, 3, 4], [192, 0, 2, 1], 64)
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::Port,
            ));
        let mut v = Vec::new();
        b.write(&mut v, &quoted[14..]).unwrap();
        let ip = parse_ipv4(&v, 14).unwrap();
        let f = flow_of(&v, &ip).unwrap();
        assert_eq!(f.kind, L4Kind::Error);
        assert_eq!(f.tuple.src_port, 33000);
        let orig = Tuple {
            src: Ipv4Addr::new(10, 0, 0, 2),
            src_port: 5000,
            ..f.tuple
        };
        rewrite(&mut v, &ip, &f, &orig, false);
        assert!(checksums_ok(&v));
        let ip2 = parse_ipv4(&v, 14).unwrap();
        assert_eq!(ip2.dst, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(ip2.src, Ipv4Addr::new(1, 2, 3, 4));
        let f2 = flow_of(&v, &ip2).unwrap();
        assert_eq!(f2.tuple, orig);
        let q4 = f2.quoted_l3 + 20;
        let quoted_udp = &v[q4..q4 + 9];
        let ps = checksum::pseudo_header_sum_v4(orig.src, orig.dst, 17, 9);
        assert_eq!(checksum::fold(checksum::ones_sum(quoted_udp, ps)), 0xffff);
    }

    #[test]
    fn ttl_decrement_keeps_header_valid() {
        let mut v = udp_frame([10, 0, 0, 2], 5000, [1, 2, 3, 4], 53, b"q");
        Ipv4Packet::new_unchecked(&mut v[14..]).decrement_ttl();
        let ip = parse_ipv4(&v, 14).unwrap();
        assert_eq!(ip.ttl, 63);
    }

    proptest! {
        #[test]
        fn rewrite_then_reverse_is_identity(
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), sp in 1u16.., dp in 1u16..,
            nsrc in any::<[u8; 4]>(), nsp in 1u16.., is_tcp in any::<bool>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut v = if is_tcp { tcp_frame(src, sp, dst, dp, &payload) } else { udp_frame(src, sp, dst, dp, &payload) };
            let orig = v.clone();
            let ip = parse_ipv4(&v, 14).unwrap();
            let f = flow_of(&v, &ip).unwrap();
            let new = Tuple { src: Ipv4Addr::from(nsrc), src_port: nsp, ..f.tuple };
            rewrite(&mut v, &ip, &f, &new, false);
            prop_assert!(checksums_ok(&v));
            let ip2 = parse_ipv4(&v, 14).unwrap();
            let f2 = flow_of(&v, &ip2).unwrap();
            rewrite(&mut v, &ip2, &f2, &f.tuple, false);
            prop_assert!(checksums_ok(&v));
            let ip3 = parse_ipv4(&v, 14).unwrap();
            prop_assert_eq!(flow_of(&v, &ip3).unwrap().tuple, f.tuple);
            // Bytes are equal except where a checksum may flip between 0x0000 and 0xffff.
            let differs: Vec<usize> = (0..v.len()).filter(|i| v[*i] != orig[*i]).collect();
            let csum_at = if is_tcp { 34 + 16 } else { 34 + 6 };
            prop_assert!(differs.iter().all(|i| *i == csum_at || *i == csum_at + 1));
        }

    }

    #[test]
    fn napt_outbound_arp_then_translate_and_back() {
        let s = S::new();
        let mut w = worker_for(&s);
        let syn = S::from_endpoint(S::A, &tcp(S::A, 40000, S::REMOTE, 80, SYN, b""));
        let (v, out) = run_one(&mut w, PORT_A, &syn, T0);
        assert_eq!(v, Verdict::Forward(UPLINK));
        assert_eq!(
            &out[12..14],
            &[8, 6],
            "an ARP request for the next hop leaves first"
        );
        assert_eq!(&out[38..42], &S::HOP.octets());
        assert_eq!(
            w.counters().drops(R::ArpPending),
            0,
            "the SYN waits for the next hop's MAC"
        );
        learn_next_hop(&mut w);
        let (v, out) = run_one(&mut w, PORT_A, &syn, T0);
        assert_eq!(v, Verdict::Forward(UPLINK));
        assert_eq!(&out[0..6], &S::HOP_MAC.0);
        assert_eq!(&out[6..12], &S::UP_MAC.0);
        let t = tuple_of(&out);
        assert_eq!((t.src, t.dst, t.dst_port), (S::UP, S::REMOTE, 80));
        assert!(s.config.nat.ports.contains(t.src_port));
        assert_eq!(ip_of(&out).ttl, 63);
        assert!(checksums_valid(&out));
        let reply = S::from_outside(&tcp(S::REMOTE, 80, S::UP, t.src_port, SYN | ACK, b""));
        let (v, back) = run_one(&mut w, UPLINK, &reply, T0);
        assert_eq!(v, Verdict::Forward(PORT_A));
        assert_eq!(&back[0..6], &S::mac(S::A).0);
        assert_eq!(&back[6..12], &S::GW_MAC.0);
        let bt = tuple_of(&back);
        assert_eq!(
            (bt.src, bt.src_port, bt.dst, bt.dst_port),
            (S::REMOTE, 80, S::A, 40000)
        );
        assert!(checksums_valid(&back));
        assert_eq!(w.dataplane().conntrack().len(), 1);
    }

    #[test]
    fn napt_udp_and_ping_round_trip() {
        let s = S::new();
        let mut w = worker_for(&s);
        learn_next_hop(&mut w);
        let q = S::from_endpoint(S::A, &udp(S::A, 5353, S::REMOTE, 53, b"query"));
        let (v, out) = run_one(&mut w, PORT_A, &q, T0);
        assert_eq!(v, Verdict::Forward(UPLINK));
        let t = tuple_of(&out);
        let a = S::from_outside(&udp(S::REMOTE, 53, S::UP, t.src_port, b"answer"));
        let (v, back) = run_one(&mut w, UPLINK, &a, T0);
        assert_eq!(v, Verdict::Forward(PORT_A));
        assert_eq!(tuple_of(&back).dst_port, 5353);
        let ping = S::from_endpoint(S::A, &icmp_echo(S::A, S::REMOTE, true, 99, 1));
        let (v, out) = run_one(&mut w, PORT_A, &ping, T0);
        assert_eq!(v, Verdict::Forward(UPLINK));
        let pt = tuple_of(&out);
        assert_eq!(pt.src, S::UP);
        assert!(checksums_valid(&out));
        let pong = S::from_outside(&icmp_echo(S::REMOTE, S::UP, false, pt.src_port, 1));
        let (v, back) = run_one(&mut w, UPLINK, &pong, T0);
        assert_eq!(v, Verdict::Forward(PORT_A));
        let bt = tuple_of(&back);
        assert_eq!((bt.dst, bt.src_port), (S::A, 99));
        assert!(checksums_valid(&back));
    }

    #[test]
    fn icmp_errors_are_translated_inbound() {
        let s = S::new();
        let mut w = worker_for(&s);
        learn_next_hop(&mut w);
        let q = S::from_endpoint(S::A, &udp(S::A, 5353, S::REMOTE, 53, b"query"));
        let (_, out) = run_one(&mut w, PORT_A, &q, T0);
        // The remote answers with port unreachable quoting what it received.
        let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&out[14..14 + 28]);
        let c = crate::wire::checksum::internet_checksum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let err = S::from_outside(&ipv4(S::REMOTE, S::UP, 1, 64, &icmp));
        let (v, back) = run_one(&mut w, UPLINK, &err, T0);
        assert_eq!(v, Verdict::Forward(PORT_A));
        let ip = ip_of(&back);
        assert_eq!((ip.src, ip.dst), (S::REMOTE, S::A));
        let quoted = flow::flow_of(&back, &ip).unwrap().tuple;
        assert_eq!(
            (quoted.src, quoted.src_port, quoted.dst_port),
            (S::A, 5353, 53)
        );
        assert!(checksums_valid(&back));
    }

    #[test]
    fn icmp_errors_are_translated_outbound() {
        // A remote sends to the published UDP port; B has nothing listening and answers port
        // unreachable, quoting what it received. The remote must see the error come from the
        // uplink address, quoting the packet it sent (to UP:8080).
        let s = S::new();
        let mut w = worker_for(&s);
        learn_next_hop(&mut w);
        let q = S::from_outside(&udp(S::REMOTE, 4444, S::UP, 8080, b"hello"));
        let (v, at_b) = run_one(&mut w, UPLINK, &q, T0);
        assert_eq!(v, Verdict::Forward(PORT_B));
        let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&at_b[14..14 + 28]);
        let c = crate::wire::checksum::internet_checksum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let err = S::from_endpoint(S::B, &ipv4(S::B, S::REMOTE, 1, 64, &icmp));
        let (v, out) = run_one(&mut w, PORT_B, &err, T0);
        assert_eq!(v, Verdict::Forward(UPLINK));
        let ip = ip_of(&out);
        assert_eq!((ip.src, ip.dst), (S::UP, S::REMOTE));
        let quoted = flow::flow_of(&out, &ip).unwrap().tuple;
        assert_eq!(
            (quoted.src, quoted.src_port, quoted.dst, quoted.dst_port),
            (S::REMOTE, 4444, S::UP, 8080)
        );
        assert!(checksums_valid(&out));
        // An error about no known flow is a counted drop, not a translation.
        let mut stray = icmp.clone();
        stray[8 + 20] ^= 0x40;
        let c = crate::wire::checksum::internet_checksum(&{
            let mut z = stray.clone();
            z[2] = 0;
            z[3] = 0;
            z
        });
        stray[2..4].copy_from_slice(&c.to_be_bytes());
        let err = S::from_endpoint(S::B, &ipv4(S::B, S::REMOTE, 1, 64, &stray));
        assert_eq!(
            run_one(&mut w, PORT_B, &err, T0).0,
            Verdict::Drop(R::NoFlow)
        );
    }

    #[test]
    fn one_endpoint_flooding_new_flows_leaves_nat_to_the_others() {
        let flood = |s: &S| {
            let mut w = worker_for(s);
            learn_next_hop(&mut w);
            for sport in 0..10u16 {
                let q = S::from_endpoint(S::A, &udp(S::A, 1000 + sport, S::REMOTE, 53, b"q"));
                run_one(&mut w, PORT_A, &q, T0);
            }
            let q = S::from_endpoint(S::B, &udp(S::B, 1000, S::REMOTE, 53, b"q"));
            let b = run_one(&mut w, PORT_B, &q, T0).0;
            let quota = w.counters().port_drops(PORT_A, R::EndpointFlowQuota);
            let flows = w.dataplane().conntrack().len();
            (flows, quota, b)
        };
        // A table of 8 flows: an endpoint holds at most half of it by default.
        let mut s = S::new();
        s.config.nat.max_flows = 8;
        assert_eq!(flood(&s), (5, 6, Verdict::Forward(UPLINK)));
        // The network's own quota.
        s.config.networks[0].max_flows_per_endpoint = Some(2);
        assert_eq!(flood(&s), (3, 8, Verdict::Forward(UPLINK)));
    }

    #[test]
    fn an_endpoint_beyond_its_port_share_is_told_and_the_others_still_get_ports() {
        use crate::config::PortRange;
        let mut s = S::new();
        s.config.nat.ports = PortRange {
            first: 40_000,
            last: 40_003,
        };
        let mut w = worker_for(&s);
        learn_next_hop(&mut w);
        for sport in 0..2u16 {
            let q = S::from_endpoint(S::A, &udp(S::A, 1000 + sport, S::REMOTE, 53, b"q"));
            assert_eq!(run_one(&mut w, PORT_A, &q, T0).0, Verdict::Forward(UPLINK));
        }
        let q = S::from_endpoint(S::A, &udp(S::A, 1002, S::REMOTE, 53, b"q"));
        let (v, err) = run_one(&mut w, PORT_A, &q, T0);
        assert_eq!(v, Verdict::Forward(PORT_A), "an ICMP error goes back");
        let ip = ip_of(&err);
        assert_eq!((ip.proto, ip.src, ip.dst), (1, S::GW, S::A));
        assert_eq!(
            (err[ip.l4()], err[ip.l4() + 1]),
            (3, 13),
            "admin prohibited"
        );
        assert!(checksums_valid(&err));
        assert_eq!(&err[0..6], &S::mac(S::A).0);
        assert_eq!(w.counters().port_drops(PORT_A, R::NatPortShare), 1);
        // Another endpoint still finds ports toward the same destination.
        for sport in 0..2u16 {
            let q = S::from_endpoint(S::B, &udp(S::B, 1000 + sport, S::REMOTE, 53, b"q"));
            assert_eq!(run_one(&mut w, PORT_B, &q, T0).0, Verdict::Forward(UPLINK));
        }
        // With every port taken, the sender is told too.
        let q = S::from_endpoint(S::C, &udp(S::C, 1000, S::REMOTE, 53, b"q"));
        let (v, err) = run_one(&mut w, PORT_C, &q, T0);
        assert_eq!(v, Verdict::Forward(PORT_C));
        assert_eq!(err[ip_of(&err).l4()], 3);
        assert_eq!(w.counters().port_drops(PORT_C, R::NatPortsExhausted), 1);
    }
}
