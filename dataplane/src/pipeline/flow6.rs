//! What NAT66 reads of an IPv6 packet (its flow tuple and TCP flags; for an ICMPv6 error the
//! tuple of the packet it quotes) and how it rewrites one (addresses, ports or echo id, hop
//! limit, the L4 checksum adjusted once, RFC 1624; an error's quote and its own checksum),
//! over the wire views. Beside `flow`, its v4 counterpart.

use std::net::Ipv6Addr;

use super::ipv6::V6Info;
use crate::config::L4Proto;
use crate::counters::DropReason as R;
use crate::counters::DropReason;
use crate::nat::v6::Tuple6;
use crate::wire::checksum::{change16, fold, udp_nonzero};
use crate::wire::icmpv6::{self, Icmpv6Packet};
use crate::wire::ipv6::{Ipv6Packet, NH_FRAGMENT};
use crate::wire::tcp::{self, TcpPacket};
use crate::wire::udp::{self, UdpPacket};
use crate::wire::{IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};

/// A v6 packet's flow: its tuple, TCP flags (0 otherwise), whether it is an echo request, and
/// for an ICMPv6 error where the packet it quotes lies (`tuple` is then that packet's).
#[derive(Clone, Copy, Debug)]
pub(super) struct Flow6 {
    pub(super) tuple: Tuple6,
    pub(super) tcp_flags: u8,
    pub(super) echo_request: bool,
    pub(super) quoted: Option<Quoted6>,
}

/// Where the packet an ICMPv6 error quotes lies in the frame.
#[derive(Clone, Copy, Debug)]
pub(super) struct Quoted6 {
    /// Offset of its IPv6 header.
    l3: usize,
    /// Offset of its upper-layer header.
    l4: usize,
}

impl Flow6 {
    /// The tuple conntrack knows the packet by: its own, or for an error the reverse of the
    /// quoted packet's (the quote is a packet of the flow going the other way).
    pub(super) fn key(&self) -> Tuple6 {
        if self.quoted.is_some() {
            self.tuple.reversed()
        } else {
            self.tuple
        }
    }

    /// The tuple to write for a flow whose rewrite (for the packet's direction, as conntrack
    /// returns it for [`Flow6::key`]) is `rewrite`: it, or for an error its reverse.
    pub(super) fn target(&self, rewrite: &Tuple6) -> Tuple6 {
        if self.quoted.is_some() {
            rewrite.reversed()
        } else {
            *rewrite
        }
    }
}

/// The flow of a non-first fragment whose first fragment had tuple `tuple`.
pub(super) fn later_fragment(tuple: Tuple6) -> Flow6 {
    Flow6 {
        tuple,
        tcp_flags: 0,
        echo_request: false,
        quoted: None,
    }
}

/// The tuple of the upper layer `l4` (protocol `proto`, from `src` to `dst`), with the TCP
/// flags and the ICMPv6 type; `Unsupported` for other protocols. Reads only the bytes a
/// rewrite touches (TCP through its checksum, UDP's and ICMPv6's 8-byte headers), so that a
/// first fragment (whose UDP length covers the whole datagram) and a quote are read alike.
fn l4_tuple6(
    l4: &[u8],
    proto: u8,
    (src, dst): (Ipv6Addr, Ipv6Addr),
) -> Result<(Tuple6, u8, Option<u8>), DropReason> {
    let need = match proto {
        IPPROTO_TCP => tcp::CHECKSUM_END,
        IPPROTO_UDP => udp::HEADER_LEN,
        IPPROTO_ICMPV6 => icmpv6::HEADER_LEN,
        NH_FRAGMENT => return Err(R::Fragment),
        _ => return Err(R::Unsupported),
    };
    if l4.len() < need {
        return Err(R::Malformed);
    }
    let (proto, sp, dp, flags, icmp) = match proto {
        IPPROTO_TCP => {
            let t = TcpPacket::new_unchecked(l4);
            (L4Proto::Tcp, t.src_port(), t.dst_port(), t.flags(), None)
        }
        IPPROTO_UDP => {
            let u = UdpPacket::new_unchecked(l4);
            (L4Proto::Udp, u.src_port(), u.dst_port(), 0, None)
        }
        _ => {
            let m = Icmpv6Packet::new_unchecked(l4);
            let id = m.echo_ident();
            (L4Proto::Icmp, id, id, 0, Some(m.msg_type()))
        }
    };
    let tuple = Tuple6 {
        proto,
        src,
        src_port: sp,
        dst,
        dst_port: dp,
    };
    Ok((tuple, flags, icmp))
}

/// The flow of the v6 packet `ip` in `d`: TCP, UDP, ICMPv6 echo, or an ICMPv6 error quoting
/// one of those. Non-first fragments are `Fragment` (see `frag6`), other upper layers
/// `Unsupported`.
pub(super) fn flow6_of(d: &[u8], ip: &V6Info) -> Result<Flow6, DropReason> {
    let end = ip.l3 + ip.total;
    let l4 = d.get(ip.l3 + ip.l4..end).ok_or(R::Malformed)?;
    let (tuple, tcp_flags, icmp) = l4_tuple6(l4, ip.proto, (ip.src, ip.dst))?;
    let echo_request = icmp == Some(icmpv6::ECHO_REQUEST);
    match icmp {
        None | Some(icmpv6::ECHO_REQUEST | icmpv6::ECHO_REPLY) => Ok(Flow6 {
            tuple,
            tcp_flags,
            echo_request,
            quoted: None,
        }),
        Some(t) if t < 128 => quoted_flow(d, ip.l3 + ip.l4 + icmpv6::HEADER_LEN, end),
        Some(_) => Err(R::Unsupported),
    }
}

/// The flow of the packet an ICMPv6 error quotes at `d[q3..end]`: TCP, UDP or echo (never
/// another error, nor a non-first fragment).
fn quoted_flow(d: &[u8], q3: usize, end: usize) -> Result<Flow6, DropReason> {
    let q =
        Ipv6Packet::new_quoted(d.get(q3..end).ok_or(R::Malformed)?).map_err(|_| R::Malformed)?;
    let ext = q.extensions().map_err(|_| R::Malformed)?;
    let l4 = d.get(q3 + ext.l4..end).ok_or(R::Malformed)?;
    let (tuple, _, icmp) = l4_tuple6(l4, ext.proto, (q.src(), q.dst())).map_err(|e| match e {
        R::Fragment => R::Unsupported,
        e => e,
    })?;
    if icmp.is_some_and(|t| t < 128) {
        return Err(R::Unsupported);
    }
    Ok(Flow6 {
        tuple,
        tcp_flags: 0,
        echo_request: false,
        quoted: Some(Quoted6 {
            l3: q3,
            l4: q3 + ext.l4,
        }),
    })
}

/// The checksum terms of an address changing from `old` to `new` (RFC 1624 eqn. 3).
fn addr_change(old: Ipv6Addr, new: Ipv6Addr) -> u32 {
    if old == new {
        return 0;
    }
    old.segments()
        .iter()
        .zip(new.segments())
        .map(|(o, n)| change16(*o, n))
        .sum()
}

/// An L4 checksum after the pseudo-header terms `addr` and the header terms `ports` changed:
/// a complete checksum takes both; a checksum-partial one (it holds the pseudo-header sum,
/// the rest is summed later by whoever completes it) only the pseudo-header's.
fn adjusted(csum: u16, addr: u32, ports: u32, partial: bool) -> u16 {
    if partial {
        fold(u32::from(csum) + addr)
    } else {
        !fold(u32::from(!csum) + addr + ports)
    }
}

/// Writes `to`'s addresses into the IPv6 header at `d[l3..]` (and `hop_limit` when given);
/// the checksum terms of the change.
fn set_addrs(d: &mut [u8], l3: usize, from: &Tuple6, to: &Tuple6, hop_limit: Option<u8>) -> u32 {
    let mut p = Ipv6Packet::new_unchecked(&mut d[l3..]);
    p.set_src(to.src);
    p.set_dst(to.dst);
    if let Some(h) = hop_limit {
        p.set_hop_limit(h);
    }
    addr_change(from.src, to.src) + addr_change(from.dst, to.dst)
}

/// Rewrites the upper-layer header `l4` (its first bytes as [`l4_tuple6`] checked them) of
/// a packet from `from` to `to`, after address changes worth `addr`.
fn set_l4(l4: &mut [u8], (from, to): (&Tuple6, &Tuple6), addr: u32, partial: bool) {
    let ports = change16(from.src_port, to.src_port) + change16(from.dst_port, to.dst_port);
    match from.proto {
        L4Proto::Tcp => {
            let mut t = TcpPacket::new_unchecked(l4);
            t.set_src_port(to.src_port);
            t.set_dst_port(to.dst_port);
            t.set_checksum(adjusted(t.checksum(), addr, ports, partial));
        }
        L4Proto::Udp => {
            let mut u = UdpPacket::new_unchecked(l4);
            u.set_src_port(to.src_port);
            u.set_dst_port(to.dst_port);
            let c = adjusted(u.checksum(), addr, ports, partial);
            u.set_checksum(if partial { c } else { udp_nonzero(c) });
        }
        L4Proto::Icmp => {
            let mut m = Icmpv6Packet::new_unchecked(l4);
            m.set_echo_ident(to.src_port);
            let id = change16(from.src_port, to.src_port);
            m.set_checksum(adjusted(m.checksum(), addr, id, partial));
        }
    }
}

/// Rewrites the v6 packet `ip` of flow `flow` in `d` to carry `to`: addresses, ports (echo:
/// id), hop limit decremented, the L4 checksum adjusted (`partial`: the frame's checksum is
/// checksum-partial). A non-first fragment has only its addresses rewritten (its first
/// fragment carries the checksum). For an ICMPv6 error `to` is the quoted packet's new
/// tuple: the quote is rewritten, the error goes to the quoted packet's source (from its
/// destination, or from the router that sent it, whose address stays), and its checksum is
/// computed anew. The caller checked the hop limit.
pub(super) fn rewrite6(d: &mut [u8], ip: &V6Info, flow: &Flow6, to: &Tuple6, partial: bool) {
    let from = &flow.tuple;
    let end = ip.l3 + ip.total;
    let hop = Some(ip.hop_limit.saturating_sub(1));
    let Some(q) = flow.quoted else {
        let addr = set_addrs(d, ip.l3, from, to, hop);
        if ip.proto != NH_FRAGMENT {
            set_l4(&mut d[ip.l3 + ip.l4..end], (from, to), addr, partial);
        }
        return;
    };
    let addr = set_addrs(d, q.l3, from, to, None);
    set_l4(&mut d[q.l4..end], (from, to), addr, false);
    let outer = Tuple6 {
        src: crate::nat::error_source(ip.src, from.dst, to.dst),
        dst: to.src,
        ..*from
    };
    set_addrs(d, ip.l3, from, &outer, hop);
    Icmpv6Packet::new_unchecked(&mut d[ip.l3 + ip.l4..end]).fill_checksum(outer.src, outer.dst);
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::pipeline::ipv6::parse;
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    fn packet(
        proto: u8,
        (src, sp): (Ipv6Addr, u16),
        (dst, dp): (Ipv6Addr, u16),
        body: &[u8],
    ) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2; 6], [4; 6]).ipv6(src.octets(), dst.octets(), 64);
        let mut v = Vec::new();
        match proto {
            IPPROTO_TCP => b.tcp(sp, dp, 7, 1000).syn().write(&mut v, body),
            IPPROTO_UDP => b.udp(sp, dp).write(&mut v, body),
            _ => b.icmpv6_echo_request(sp, 3).write(&mut v, body),
        }
        .unwrap();
        v
    }

    /// True when the frame's L4 checksum is right (etherparse's own verification).
    pub(crate) fn checksum_ok(frame: &[u8]) -> bool {
        let p = etherparse::SlicedPacket::from_ethernet(frame).unwrap();
        let Some(etherparse::NetSlice::Ipv6(ip)) = p.net else {
            return false;
        };
        let (s, d) = (ip.header().source(), ip.header().destination());
        match p.transport {
            Some(etherparse::TransportSlice::Tcp(t)) => {
                t.to_header()
                    .calc_checksum_ipv6_raw(s, d, t.payload())
                    .unwrap()
                    == t.checksum()
            }
            Some(etherparse::TransportSlice::Udp(u)) => {
                u.to_header()
                    .calc_checksum_ipv6_raw(s, d, u.payload())
                    .unwrap()
                    == u.checksum()
            }
            Some(etherparse::TransportSlice::Icmpv6(m)) => {
                m.header()
                    .icmp_type
                    .calc_checksum(s, d, m.payload())
                    .unwrap()
                    == m.checksum()
            }
            _ => false,
        }
    }

    fn addr() -> impl Strategy<Value = Ipv6Addr> {
        any::<u128>().prop_map(Ipv6Addr::from)
    }

    proptest! {
        /// Rewriting any TCP, UDP or echo packet to any tuple keeps its checksum right, and
        /// what is read back is the tuple written.
        #[test]
        fn rewrite_keeps_checksums_and_reads_back(
            proto in prop::sample::select(vec![IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6]),
            from in (addr(), any::<u16>(), addr(), any::<u16>()),
            to in (addr(), any::<u16>(), addr(), any::<u16>()),
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut f = packet(proto, (from.0, from.1), (from.2, from.3), &body);
            let ip = parse(&f, 14).unwrap();
            let flow = flow6_of(&f, &ip).unwrap();
            let old = flow.tuple;
            let mut new = Tuple6 { proto: old.proto, src: to.0, src_port: to.1, dst: to.2, dst_port: to.3 };
            if old.proto == L4Proto::Icmp {
                new.dst_port = new.src_port;
            }
            rewrite6(&mut f, &ip, &flow, &new, false);
            prop_assert!(checksum_ok(&f));
            let back = flow6_of(&f, &parse(&f, 14).unwrap()).unwrap().tuple;
            prop_assert_eq!(back, new);
            prop_assert_eq!(f[14 + 7], 63);
        }

        /// Translating an ICMPv6 error about any TCP, UDP or echo packet to any new tuple keeps
        /// both checksums right (the error's and the quote's, checked by etherparse), the quote
        /// reads back as the new tuple, and the error goes to the new source, from the new
        /// destination when the quoted packet's destination sent it.
        #[test]
        fn error_rewrite_keeps_both_checksums(
            proto in prop::sample::select(vec![IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6]),
            from in (addr(), any::<u16>(), addr(), any::<u16>()),
            to in (addr(), any::<u16>(), addr(), any::<u16>()),
            router in proptest::option::of(addr()),
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let quoted = packet(proto, (from.0, from.1), (from.2, from.3), &body);
            let sender = router.unwrap_or(from.2);
            let mut f = Vec::new();
            PacketBuilder::ethernet2([2; 6], [4; 6])
                .ipv6(sender.octets(), from.0.octets(), 64)
                .icmpv6_raw(icmpv6::DEST_UNREACHABLE, 4, [0; 4])
                .write(&mut f, &quoted[14..])
                .unwrap();
            let ip = parse(&f, 14).unwrap();
            let flow = flow6_of(&f, &ip).unwrap();
            prop_assert!(flow.quoted.is_some());
            let old = flow.tuple;
            let mut new = Tuple6 { proto: old.proto, src: to.0, src_port: to.1, dst: to.2, dst_port: to.3 };
            if old.proto == L4Proto::Icmp {
                new.dst_port = new.src_port;
            }
            rewrite6(&mut f, &ip, &flow, &new, false);
            prop_assert!(checksum_ok(&f), "ICMPv6 checksum");
            let mut quote = f[..14].to_vec();
            quote.extend_from_slice(&f[62..]);
            prop_assert!(checksum_ok(&quote), "quoted checksum");
            prop_assert_eq!(flow6_of(&quote, &parse(&quote, 14).unwrap()).unwrap().tuple, new);
            let outer = parse(&f, 14).unwrap();
            let want_src = if sender == from.2 { new.dst } else { sender };
            prop_assert_eq!((outer.src, outer.dst), (want_src, new.src));
            prop_assert_eq!(f[14 + 7], 63);
        }
    }
}
