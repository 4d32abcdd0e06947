//! What NAT66 reads of an IPv6 packet (its flow tuple and TCP flags) and how it rewrites one
//! (addresses, ports or echo id, hop limit, the L4 checksum adjusted once, RFC 1624), over
//! the wire views. Beside `flow`, its v4 counterpart.

use std::net::Ipv6Addr;

use super::ipv6::V6Info;
use crate::config::L4Proto;
use crate::counters::DropReason as R;
use crate::counters::DropReason;
use crate::nat::v6::Tuple6;
use crate::wire::checksum::{change16, fold, udp_nonzero};
use crate::wire::icmpv6::{self, Icmpv6Packet};
use crate::wire::ipv6::{Ipv6Packet, NH_FRAGMENT};
use crate::wire::tcp::TcpPacket;
use crate::wire::udp::UdpPacket;
use crate::wire::{IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};

/// A v6 packet's flow: its tuple, TCP flags (0 otherwise), and whether it is an echo request.
#[derive(Clone, Copy, Debug)]
pub(super) struct Flow6 {
    pub(super) tuple: Tuple6,
    pub(super) tcp_flags: u8,
    pub(super) echo_request: bool,
}

/// The flow of the v6 packet `ip` in `d`: TCP, UDP or ICMPv6 echo. Non-first fragments are
/// `Fragment`, other upper layers (ICMPv6 errors among them) `Unsupported`.
pub(super) fn flow6_of(d: &[u8], ip: &V6Info) -> Result<Flow6, DropReason> {
    let l4 = d.get(ip.l3 + ip.l4..ip.l3 + ip.total).ok_or(R::Malformed)?;
    let (proto, sp, dp, tcp_flags, echo_request) = match ip.proto {
        IPPROTO_TCP => {
            let t = TcpPacket::new_checked(l4).map_err(|_| R::Malformed)?;
            (L4Proto::Tcp, t.src_port(), t.dst_port(), t.flags(), false)
        }
        IPPROTO_UDP => {
            let u = UdpPacket::new_checked(l4).map_err(|_| R::Malformed)?;
            (L4Proto::Udp, u.src_port(), u.dst_port(), 0, false)
        }
        IPPROTO_ICMPV6 => {
            let m = Icmpv6Packet::new_checked(l4).map_err(|_| R::Malformed)?;
            let t = m.msg_type();
            if t != icmpv6::ECHO_REQUEST && t != icmpv6::ECHO_REPLY {
                return Err(R::Unsupported);
            }
            let id = m.echo_ident();
            (L4Proto::Icmp, id, id, 0, t == icmpv6::ECHO_REQUEST)
        }
        NH_FRAGMENT => return Err(R::Fragment),
        _ => return Err(R::Unsupported),
    };
    Ok(Flow6 {
        tuple: Tuple6 {
            proto,
            src: ip.src,
            src_port: sp,
            dst: ip.dst,
            dst_port: dp,
        },
        tcp_flags,
        echo_request,
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

/// Rewrites the v6 packet `ip` of flow `from` in `d` to carry `to`: addresses, ports (echo:
/// id), hop limit decremented, the L4 checksum adjusted (`partial`: the frame's checksum is
/// checksum-partial). The caller checked the hop limit.
pub(super) fn rewrite6(d: &mut [u8], ip: &V6Info, from: &Tuple6, to: &Tuple6, partial: bool) {
    let addr = addr_change(from.src, to.src) + addr_change(from.dst, to.dst);
    {
        let mut p = Ipv6Packet::new_unchecked(&mut d[ip.l3..]);
        p.set_src(to.src);
        p.set_dst(to.dst);
        p.set_hop_limit(ip.hop_limit.saturating_sub(1));
    }
    let l4 = &mut d[ip.l3 + ip.l4..ip.l3 + ip.total];
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

#[cfg(test)]
mod tests {
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
    fn checksum_ok(frame: &[u8]) -> bool {
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
            let old = flow6_of(&f, &ip).unwrap().tuple;
            let mut new = Tuple6 { proto: old.proto, src: to.0, src_port: to.1, dst: to.2, dst_port: to.3 };
            if old.proto == L4Proto::Icmp {
                new.dst_port = new.src_port;
            }
            rewrite6(&mut f, &ip, &old, &new, false);
            prop_assert!(checksum_ok(&f));
            let back = flow6_of(&f, &parse(&f, 14).unwrap()).unwrap().tuple;
            prop_assert_eq!(back, new);
            prop_assert_eq!(f[14 + 7], 63);
        }
    }
}
