//! NAPT on bytes: reads the flow tuple out of an IPv4 packet and rewrites the packet to the tuple
//! conntrack chose, with incremental (RFC 1624) checksum updates. ICMP errors are translated
//! through the header they quote.
//!
//! Checksum-partial frames (virtio-net `NEEDS_CSUM`) hold only the pseudo-header sum in their
//! TCP/UDP checksum field: an address change updates that sum, a port change leaves it alone
//! (the device that completes the checksum covers the ports).
//!
//! Fragments: a first fragment carries the L4 header and is translated like any packet; later
//! fragments carry no ports and are dropped, counted as `DropReason::Fragment` (sluice does not
//! reassemble). Path MTU discovery (DF set) keeps this off the common path.

use std::net::Ipv4Addr;

use crate::config::L4Proto;
use crate::counters::DropReason;
use crate::nat::Tuple;
use crate::wire::checksum;

/// What kind of L4 a tuple was read from; decides where ports live and which checksum to fix.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum L4Kind {
    /// TCP: ports at 0..4, checksum at 16 (with pseudo header).
    Tcp,
    /// UDP: ports at 0..4, checksum at 6 (with pseudo header; 0 = none).
    Udp,
    /// ICMP echo request (`true`) or reply: identifier at 4, checksum at 2 (no pseudo header).
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

#[inline(always)]
fn be16(d: &[u8], at: usize) -> Result<u16, DropReason> {
    d.get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or(DropReason::Malformed)
}

#[inline(always)]
fn ip_at(d: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(d[at], d[at + 1], d[at + 2], d[at + 3])
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
pub fn header_checksum_ok(d: &[u8], ip: &Ipv4Info) -> bool {
    checksum::internet_checksum(&d[ip.l3..ip.l3 + ip.hl]) == 0
}

/// Reads the IPv4 header at `l3`, checking version and lengths but not the header checksum:
/// enough for bridging decisions (anti-spoofing), which forward the bytes unchanged.
#[inline(always)]
pub fn parse_ipv4_unverified(d: &[u8], l3: usize) -> Result<Ipv4Info, DropReason> {
    let h = d.get(l3..).ok_or(DropReason::Malformed)?;
    let ip = crate::wire::ipv4::Ipv4Packet::new_checked(h).map_err(|_| DropReason::Malformed)?;
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

/// The quoted L4 tuple of a packet whose IPv4 header starts at `l3` and whose L4 header (maybe
/// only its first 8 bytes) follows at `l4`.
#[inline(always)]
fn l4_tuple(
    d: &[u8],
    proto: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    l4: usize,
    end: usize,
) -> Result<(Tuple, L4Kind), DropReason> {
    let avail = end.saturating_sub(l4);
    match L4Proto::from_number(proto) {
        Some(p @ (L4Proto::Tcp | L4Proto::Udp)) if avail >= 8 => Ok((
            Tuple {
                proto: p,
                src,
                src_port: be16(d, l4)?,
                dst,
                dst_port: be16(d, l4 + 2)?,
            },
            if p == L4Proto::Tcp {
                L4Kind::Tcp
            } else {
                L4Kind::Udp
            },
        )),
        Some(L4Proto::Icmp) if avail >= 8 => {
            let t = d[l4];
            let kind = match t {
                8 => L4Kind::Echo(true),
                0 => L4Kind::Echo(false),
                3 | 4 | 5 | 11 | 12 => L4Kind::Error,
                _ => return Err(DropReason::Unsupported),
            };
            let id = be16(d, l4 + 4)?;
            Ok((
                Tuple {
                    proto: L4Proto::Icmp,
                    src,
                    src_port: id,
                    dst,
                    dst_port: id,
                },
                kind,
            ))
        }
        Some(_) => Err(DropReason::Malformed),
        None => Err(DropReason::Unsupported),
    }
}

/// The flow of the packet described by `ip`: its own tuple, or for an ICMP error the tuple of
/// the packet it quotes.
#[inline(always)]
pub fn flow_of(d: &[u8], ip: &Ipv4Info) -> Result<FlowOf, DropReason> {
    if ip.later_fragment {
        return Err(DropReason::Fragment);
    }
    let end = (ip.l3 + ip.total).min(d.len());
    let (tuple, kind) = l4_tuple(d, ip.proto, ip.src, ip.dst, ip.l4(), end)?;
    let tcp_flags = if kind == L4Kind::Tcp {
        *d.get(ip.l4() + 13).ok_or(DropReason::Malformed)?
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
    let q3 = ip.l4() + 8;
    let qh = d.get(q3..end).ok_or(DropReason::Malformed)?;
    let q = crate::wire::ipv4::Ipv4Packet::new_quoted(qh).map_err(|_| DropReason::Malformed)?;
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

/// Rewrites the addresses of the IPv4 header at `l3` and its header checksum; returns the
/// pseudo-header deltas applied (for the L4 checksum).
fn rewrite_addrs(d: &mut [u8], l3: usize, src: Ipv4Addr, dst: Ipv4Addr) -> [(u32, u32); 2] {
    let old_src = u32::from(ip_at(d, l3 + 12));
    let old_dst = u32::from(ip_at(d, l3 + 16));
    let (ns, nd) = (u32::from(src), u32::from(dst));
    let mut c = u16::from_be_bytes([d[l3 + 10], d[l3 + 11]]);
    if old_src != ns {
        c = checksum::adjust32(c, old_src, ns);
        d[l3 + 12..l3 + 16].copy_from_slice(&src.octets());
    }
    if old_dst != nd {
        c = checksum::adjust32(c, old_dst, nd);
        d[l3 + 16..l3 + 20].copy_from_slice(&dst.octets());
    }
    d[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    [(old_src, ns), (old_dst, nd)]
}

fn read16(d: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([d[at], d[at + 1]])
}

fn write16(d: &mut [u8], at: usize, v: u16) {
    d[at..at + 2].copy_from_slice(&v.to_be_bytes());
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

/// Rewrites the L4 header at `l4` (at least 8 bytes present; the checksum only when
/// `present` covers it).
fn rewrite_l4(d: &mut [u8], l4: usize, kind: L4Kind, ch: &L4Change<'_>) {
    let L4Change {
        old,
        new,
        addrs,
        partial,
        present,
    } = *ch;
    match kind {
        L4Kind::Tcp | L4Kind::Udp => {
            let at = if kind == L4Kind::Tcp { l4 + 16 } else { l4 + 6 };
            let has_csum = present >= at - l4 + 2;
            let mut c = if has_csum { read16(d, at) } else { 0 };
            let udp_none = kind == L4Kind::Udp && c == 0;
            if has_csum && !udp_none {
                for (o, n) in addrs {
                    if o != n {
                        c = if partial {
                            checksum::adjust_partial32(c, o, n)
                        } else {
                            checksum::adjust32(c, o, n)
                        };
                    }
                }
                if !partial {
                    if old.src_port != new.src_port {
                        c = checksum::adjust16(c, old.src_port, new.src_port);
                    }
                    if old.dst_port != new.dst_port {
                        c = checksum::adjust16(c, old.dst_port, new.dst_port);
                    }
                }
                if kind == L4Kind::Udp && c == 0 {
                    c = 0xffff;
                }
                write16(d, at, c);
            }
            write16(d, l4, new.src_port);
            write16(d, l4 + 2, new.dst_port);
        }
        L4Kind::Echo(_) => {
            let (old_id, new_id) = (old.src_port, new.src_port);
            if old_id != new_id {
                if !partial {
                    let c = checksum::adjust16(read16(d, l4 + 2), old_id, new_id);
                    write16(d, l4 + 2, c);
                }
                write16(d, l4 + 4, new_id);
            }
        }
        L4Kind::Error => {}
    }
}

/// Rewrites the packet described by `ip`/`flow` so that its tuple becomes `new`.
/// For an ICMP error `new` is the quoted packet's new tuple, and the outer header follows it:
/// the error travels back to the quoted packet's source.
pub fn rewrite(d: &mut [u8], ip: &Ipv4Info, flow: &FlowOf, new: &Tuple, partial: bool) {
    let end = (ip.l3 + ip.total).min(d.len());
    match (flow.kind, flow.quoted_kind) {
        (L4Kind::Error, Some(qk)) => {
            let q3 = flow.quoted_l3;
            let qhl = usize::from(d[q3] & 0x0f) * 4;
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
            // An error goes back to the quoted packet's sender; it comes from that packet's
            // destination or from a router on the way, whose address stays.
            let outer_src = if ip.src == flow.tuple.dst {
                new.dst
            } else {
                ip.src
            };
            rewrite_addrs(d, ip.l3, outer_src, new.src);
            let l4 = ip.l4();
            write16(d, l4 + 2, 0);
            let c = checksum::internet_checksum(&d[l4..end]);
            write16(d, l4 + 2, c);
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

/// Decrements the TTL of the IPv4 header at `l3`, fixing its checksum.
pub fn decrement_ttl(d: &mut [u8], l3: usize) {
    let old = read16(d, l3 + 8);
    d[l3 + 8] = d[l3 + 8].saturating_sub(1);
    let new = read16(d, l3 + 8);
    let c = checksum::adjust16(read16(d, l3 + 10), old, new);
    write16(d, l3 + 10, c);
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
    use proptest::prelude::*;

    fn tcp(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16, payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4(src, dst, 64)
            .tcp(sp, dp, 1000, 4000)
            .syn();
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    fn udp(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16, payload: &[u8]) -> Vec<u8> {
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
        let mut v = tcp([10, 0, 0, 2], 40000, [1, 2, 3, 4], 80, b"abc");
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
        let mut v = udp([10, 0, 0, 2], 5000, [1, 2, 3, 4], 53, b"q");
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
        let mut v = tcp([10, 0, 0, 2], 40000, [1, 2, 3, 4], 80, b"payload");
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
        assert_eq!(read16(&v, l4 + 16), want);
    }

    #[test]
    fn later_fragments_are_refused() {
        let mut v = udp([10, 0, 0, 2], 5000, [1, 2, 3, 4], 53, b"q");
        v[14 + 6] = 0x00;
        v[14 + 7] = 0x10;
        let c = {
            v[24] = 0;
            v[25] = 0;
            checksum::internet_checksum(&v[14..34])
        };
        v[24..26].copy_from_slice(&c.to_be_bytes());
        let ip = parse_ipv4(&v, 14).unwrap();
        assert_eq!(flow_of(&v, &ip).unwrap_err(), DropReason::Fragment);
    }

    #[test]
    fn bad_header_checksum_is_malformed() {
        let mut v = udp([10, 0, 0, 2], 5000, [1, 2, 3, 4], 53, b"q");
        v[24] ^= 0xff;
        assert_eq!(parse_ipv4(&v, 14).unwrap_err(), DropReason::Malformed);
    }

    #[test]
    fn icmp_error_quoting_a_translated_packet_maps_back() {
        // The outside answers a NATed UDP packet (192.0.2.1:33000 -> 1.2.3.4:53) with port
        // unreachable; it must reach 10.0.0.2 quoting 10.0.0.2:5000 -> 1.2.3.4:53.
        let quoted = udp([192, 0, 2, 1], 33000, [1, 2, 3, 4], 53, b"q");
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
        let mut v = udp([10, 0, 0, 2], 5000, [1, 2, 3, 4], 53, b"q");
        decrement_ttl(&mut v, 14);
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
            let mut v = if is_tcp { tcp(src, sp, dst, dp, &payload) } else { udp(src, sp, dst, dp, &payload) };
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

        #[test]
        fn flow_of_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            if let Ok(ip) = parse_ipv4(&bytes, 0) {
                let _ = flow_of(&bytes, &ip);
            }
        }
    }
}
