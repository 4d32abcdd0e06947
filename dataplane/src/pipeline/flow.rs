//! What the stages read of an IPv4 packet, once: the header fields routing and NAT need
//! ([`Ipv4Info`]) and the flow tuple NAT looks up ([`FlowOf`]; for an ICMP error, the tuple of
//! the packet it quotes). Read through the `wire` views.
//!
//! Fragments: a first fragment carries the L4 header and is translated like any packet; later
//! fragments carry no ports and are dropped, counted as `DropReason::Fragment` (sluice does not
//! reassemble). Path MTU discovery (DF set) keeps this off the common path.

use std::net::Ipv4Addr;

use crate::config::L4Proto;
use crate::counters::DropReason;
use crate::nat::Tuple;
use crate::wire::icmpv4::{self, Icmpv4Packet};
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::tcp::{self, TcpPacket};
use crate::wire::udp::UdpPacket;

/// What kind of L4 a tuple was read from; decides where ports live and which checksum to fix.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum L4Kind {
    /// TCP: ports, checksum with pseudo header.
    Tcp,
    /// UDP: ports, checksum with pseudo header (0 = none).
    Udp,
    /// ICMP echo request (`true`) or reply: the identifier acts as both ports; checksum
    /// without pseudo header.
    Echo(bool),
    /// An ICMP error quoting another packet.
    Error,
}

/// The IPv4 header fields routing and NAT need, read once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Info {
    /// Offset of the IPv4 header in the frame.
    pub l3: usize,
    /// Header length with options.
    pub hl: usize,
    /// Total length (header + payload) as the header says.
    pub total: usize,
    /// Protocol number.
    pub proto: u8,
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Time to live.
    pub ttl: u8,
    /// Don't-fragment bit.
    pub df: bool,
    /// A fragment other than the first (no L4 header).
    pub later_fragment: bool,
}

impl Ipv4Info {
    /// Offset of the L4 header in the frame.
    pub fn l4(&self) -> usize {
        self.l3 + self.hl
    }

    /// Offset of the end of the packet in frame `d`: its total length, clamped to the frame.
    pub fn end(&self, d: &[u8]) -> usize {
        (self.l3 + self.total).min(d.len())
    }
}

/// A packet's flow as NAT sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowOf {
    /// The tuple (for an ICMP error: the quoted packet's tuple).
    pub tuple: Tuple,
    /// Where it came from.
    pub kind: L4Kind,
    /// TCP flags (0 otherwise).
    pub tcp_flags: u8,
    /// For an ICMP error: offset of the quoted IPv4 header in the frame.
    pub quoted_l3: usize,
    /// For an ICMP error: kind of the quoted packet.
    pub quoted_kind: Option<L4Kind>,
}

/// Reads and checks the IPv4 header at `l3` (version, lengths, header checksum): what routing
/// and NAT need before they touch a packet.
pub fn parse_ipv4(d: &[u8], l3: usize) -> Result<Ipv4Info, DropReason> {
    let ip = parse_ipv4_unverified(d, l3)?;
    if header_checksum_ok(d, &ip) {
        Ok(ip)
    } else {
        Err(DropReason::Malformed)
    }
}

/// True when the header checksum of the IPv4 header `ip` describes is right.
#[inline(always)]
pub fn header_checksum_ok(d: &[u8], ip: &Ipv4Info) -> bool {
    Ipv4Packet::new_unchecked(&d[ip.l3..]).verify_checksum()
}

/// Reads the IPv4 header at `l3`, checking version and lengths but not the header checksum:
/// enough for bridging decisions (anti-spoofing), which forward the bytes unchanged.
#[inline(always)]
pub fn parse_ipv4_unverified(d: &[u8], l3: usize) -> Result<Ipv4Info, DropReason> {
    let h = d.get(l3..).ok_or(DropReason::Malformed)?;
    let ip = Ipv4Packet::new_checked(h).map_err(|_| DropReason::Malformed)?;
    Ok(Ipv4Info {
        l3,
        hl: ip.header_len(),
        total: usize::from(ip.total_len()),
        proto: ip.protocol(),
        src: ip.src(),
        dst: ip.dst(),
        ttl: ip.ttl(),
        df: ip.dont_frag(),
        later_fragment: ip.frag_offset() != 0,
    })
}

/// The L4 tuple of a packet from `src` to `dst` whose L4 header (maybe only its first 8 bytes)
/// lies at `d[l4..end]`.
#[inline(always)]
fn l4_tuple(
    d: &[u8],
    proto: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    l4: usize,
    end: usize,
) -> Result<(Tuple, L4Kind), DropReason> {
    let l4h = d.get(l4..end).unwrap_or_default();
    // The 8 bytes every quote holds: UDP's whole header, TCP's ports, ICMP's header.
    let whole = l4h.len() >= 8;
    match L4Proto::from_number(proto) {
        Some(p @ (L4Proto::Tcp | L4Proto::Udp)) if whole => {
            let (src_port, dst_port, kind) = if p == L4Proto::Tcp {
                let t = TcpPacket::new_unchecked(l4h);
                (t.src_port(), t.dst_port(), L4Kind::Tcp)
            } else {
                let u = UdpPacket::new_unchecked(l4h);
                (u.src_port(), u.dst_port(), L4Kind::Udp)
            };
            let tuple = Tuple {
                proto: p,
                src,
                src_port,
                dst,
                dst_port,
            };
            Ok((tuple, kind))
        }
        Some(L4Proto::Icmp) if whole => {
            let icmp = Icmpv4Packet::new_unchecked(l4h);
            let kind = match icmp.msg_type() {
                icmpv4::ECHO_REQUEST => L4Kind::Echo(true),
                icmpv4::ECHO_REPLY => L4Kind::Echo(false),
                _ if icmp.is_error() => L4Kind::Error,
                _ => return Err(DropReason::Unsupported),
            };
            let id = icmp.echo_ident();
            let tuple = Tuple {
                proto: L4Proto::Icmp,
                src,
                src_port: id,
                dst,
                dst_port: id,
            };
            Ok((tuple, kind))
        }
        Some(_) => Err(DropReason::Malformed),
        None => Err(DropReason::Unsupported),
    }
}

/// The flags of the TCP header at `d[l4..]` (which may extend into the Ethernet padding).
#[inline(always)]
fn tcp_flags(d: &[u8], l4: usize) -> Result<u8, DropReason> {
    d.get(l4..)
        .filter(|h| h.len() >= tcp::FLAGS_END)
        .map(|h| TcpPacket::new_unchecked(h).flags())
        .ok_or(DropReason::Malformed)
}

/// The flow of the packet described by `ip`: its own tuple, or for an ICMP error the tuple of
/// the packet it quotes.
#[inline(always)]
pub fn flow_of(d: &[u8], ip: &Ipv4Info) -> Result<FlowOf, DropReason> {
    if ip.later_fragment {
        return Err(DropReason::Fragment);
    }
    let end = ip.end(d);
    let (tuple, kind) = l4_tuple(d, ip.proto, ip.src, ip.dst, ip.l4(), end)?;
    let tcp_flags = if kind == L4Kind::Tcp {
        tcp_flags(d, ip.l4())?
    } else {
        0
    };
    if kind != L4Kind::Error {
        return Ok(FlowOf {
            tuple,
            kind,
            tcp_flags,
            quoted_l3: 0,
            quoted_kind: None,
        });
    }
    let q3 = ip.l4() + icmpv4::HEADER_LEN;
    let qh = d.get(q3..end).ok_or(DropReason::Malformed)?;
    let q = Ipv4Packet::new_quoted(qh).map_err(|_| DropReason::Malformed)?;
    let (qt, qk) = l4_tuple(d, q.protocol(), q.src(), q.dst(), q3 + q.header_len(), end)?;
    if qk == L4Kind::Error {
        return Err(DropReason::Unsupported);
    }
    Ok(FlowOf {
        tuple: qt,
        kind,
        tcp_flags: 0,
        quoted_l3: q3,
        quoted_kind: Some(qk),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{self, Scenario as S};
    use proptest::prelude::*;

    #[test]
    fn later_fragments_are_refused() {
        let mut ip = testkit::udp(S::A, 5000, S::REMOTE, 53, b"q");
        let mut p = Ipv4Packet::new_checked(&mut ip[..]).unwrap();
        p.set_flags_frag(false, false, 8);
        p.fill_checksum();
        let v = S::from_outside(&ip);
        let ip = parse_ipv4(&v, 14).unwrap();
        assert_eq!(flow_of(&v, &ip).unwrap_err(), DropReason::Fragment);
    }

    #[test]
    fn bad_header_checksum_is_malformed() {
        let mut v = S::from_outside(&testkit::udp(S::A, 5000, S::REMOTE, 53, b"q"));
        v[24] ^= 0xff;
        assert_eq!(parse_ipv4(&v, 14).unwrap_err(), DropReason::Malformed);
    }

    #[test]
    fn cut_tcp_headers_are_malformed_and_other_protocols_unsupported() {
        let tcp = testkit::tcp(S::A, 1, S::REMOTE, 2, testkit::SYN, b"");
        let mut cut = tcp[..20 + 13].to_vec();
        let mut p = Ipv4Packet::new_unchecked(&mut cut[..]);
        p.set_total_len(33);
        p.fill_checksum();
        let v = S::from_outside(&cut);
        let ip = parse_ipv4(&v, 14).unwrap();
        assert_eq!(flow_of(&v, &ip).unwrap_err(), DropReason::Malformed);
        let other = S::from_outside(&testkit::ipv4(S::A, S::REMOTE, 47, 64, &[0; 8]));
        let ip = parse_ipv4(&other, 14).unwrap();
        assert_eq!(flow_of(&other, &ip).unwrap_err(), DropReason::Unsupported);
    }

    proptest! {
        #[test]
        fn flow_of_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            if let Ok(ip) = parse_ipv4(&bytes, 0) {
                let _ = flow_of(&bytes, &ip);
            }
        }
    }
}
