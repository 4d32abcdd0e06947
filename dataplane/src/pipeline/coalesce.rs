//! Receive-side coalescing of a VXLAN UDP GSO datagram (`VIRTIO_NET_HDR_GSO_UDP_L4`: what
//! another sluice sends with `pipeline::udp_gso`, or what the kernel's UDP GRO makes of
//! consecutive datagrams) into one TCP/IPv4 or TCP/IPv6 super-frame for the local endpoint, the
//! inverse of segmentation: one frame crosses the endpoint's port and its kernel instead of ~45.
//!
//! The datagram's payload is chunks of `gso_size` bytes (the last one shorter), each a VXLAN
//! header and an inner Ethernet | IPv4 or IPv6 | TCP segment. They join when every chunk
//! carries the same VNI, the same inner Ethernet, IP header (IPv4: but length, identification,
//! checksum; IPv6: but payload length) and TCP header (but sequence, checksum and the PSH, FIN
//! and CWR flags), consecutive sequence numbers and a full segment in all but the last; no
//! chunk has SYN, RST or URG, only the last FIN and only the first CWR (Linux's
//! `tcp_gro_receive`, `inet_gro_receive` and `ipv6_gro_receive` rules). The super-frame keeps
//! the first chunk's headers with the joined length, the PSH and FIN of any chunk, its IPv4
//! checksum recomputed and its TCP checksum partial (the pseudo-header sum, as a veth hands
//! over a super-frame); its segment size is the first chunk's payload.
//!
//! The inner checksums are not verified: the caller joins only datagrams whose outer UDP
//! checksum covers them (verified by the kernel or partial from a local sender).
//! Sans-IO and in place: nothing is allocated.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use super::segment::{L4Layout, SegmentError};
use crate::frame::{GsoType, Offload};
use crate::wire::checksum::fold;
use crate::wire::ethernet::EthernetFrame;
use crate::wire::tcp::{self, TcpPacket};
use crate::wire::vxlan::{self, VxlanHeader};
use crate::wire::{Ipv4Packet, Ipv6Packet, MacAddr};

/// Why the chunks of a datagram cannot join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("VXLAN chunks do not join into one TCP super-frame: {0}")]
pub struct CoalesceError(&'static str);

/// A joined super-frame: the inner frame at `vxlan::HEADER_LEN` of the datagram's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coalesced {
    /// Length of the inner frame.
    pub len: usize,
    /// Its offload state (TCP/IPv4 or TCP/IPv6 GSO, checksum partial).
    pub offload: Offload,
}

/// What the IP headers of one flow's chunks repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IpKey {
    /// Type of service, TTL, don't fragment, source, destination.
    V4(u8, u8, bool, Ipv4Addr, Ipv4Addr),
    /// Traffic class, flow label, hop limit, source, destination.
    V6(u8, u32, u8, Ipv6Addr, Ipv6Addr),
}

/// What every chunk of one flow repeats (besides the IPv4 and TCP options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlowKey {
    vxlan: (u8, u32),
    eth: (MacAddr, MacAddr),
    ip: IpKey,
    tcp: (u16, u16, u32, u16, u16),
    flags: u8,
}

/// One chunk: its key, options, sequence number, flags and where its TCP payload is.
struct Chunk<'a> {
    key: FlowKey,
    v4: Option<Ipv4Packet<&'a [u8]>>,
    seg: TcpPacket<&'a [u8]>,
    seq: u32,
    flags: u8,
    payload: Range<usize>,
    layout: L4Layout,
}

/// The flags the chunks of one super-frame may differ in.
const VARYING: u8 = tcp::PSH | tcp::FIN | tcp::CWR;

/// The key of the inner IP header `ip` (IPv6 when `v6`), and its IPv4 view (options).
fn ip_key(ip: &[u8], v6: bool) -> (IpKey, Option<Ipv4Packet<&[u8]>>) {
    if v6 {
        let ip = Ipv6Packet::new_unchecked(ip);
        let key = IpKey::V6(
            ip.traffic_class(),
            ip.flow_label(),
            ip.hop_limit(),
            ip.src(),
            ip.dst(),
        );
        return (key, None);
    }
    let v4 = Ipv4Packet::new_unchecked(ip);
    let key = IpKey::V4(v4.tos(), v4.ttl(), v4.dont_frag(), v4.src(), v4.dst());
    (key, Some(v4))
}

/// Reads the chunk `c` (a VXLAN header and a TCP segment, nothing after it).
fn read_chunk(c: &[u8]) -> Result<Chunk<'_>, CoalesceError> {
    let bad = CoalesceError;
    let vx = VxlanHeader::new_checked(c).map_err(|_| bad("VXLAN header"))?;
    let inner = &c[vxlan::HEADER_LEN..];
    let at = L4Layout::parse(inner, 0).map_err(|_| bad("not TCP/IP"))?;
    if at.end != inner.len() {
        return Err(bad("chunk longer than its IP packet"));
    }
    let eth = EthernetFrame::new_unchecked(inner);
    let (ip, v4) = ip_key(&inner[at.ip..at.l4], at.v6);
    let seg = TcpPacket::new_unchecked(&inner[at.l4..at.payload]);
    let flags = seg.flags();
    if flags & (tcp::SYN | tcp::RST | tcp::URG) != 0 {
        return Err(bad("SYN, RST or URG"));
    }
    Ok(Chunk {
        key: FlowKey {
            vxlan: (vx.flags(), vx.vni()),
            eth: (eth.dst(), eth.src()),
            ip,
            tcp: (
                seg.src_port(),
                seg.dst_port(),
                seg.ack(),
                seg.window(),
                seg.urgent(),
            ),
            flags: flags & !VARYING,
        },
        v4,
        seg,
        seq: seg.seq(),
        flags,
        payload: vxlan::HEADER_LEN + at.payload..vxlan::HEADER_LEN + at.end,
        layout: at,
    })
}

impl Chunk<'_> {
    /// True when `other` belongs to the same flow's super-frame (same key and options).
    fn same_flow(&self, other: &Chunk<'_>) -> bool {
        self.key == other.key
            && self.v4.as_ref().map(Ipv4Packet::options)
                == other.v4.as_ref().map(Ipv4Packet::options)
            && self.seg.options() == other.seg.options()
    }
}
/// Checks that the chunks of `payload` (`chunk` bytes each, the last shorter) join; returns
/// the first chunk's layout, the segment size and the flags the joined TCP header carries.
fn check_chunks(payload: &[u8], chunk: usize) -> Result<(L4Layout, usize, u8), CoalesceError> {
    let bad = CoalesceError;
    let mut chunks = payload.chunks(chunk);
    let first = read_chunk(chunks.next().ok_or(bad("empty"))?)?;
    let mss = first.payload.len();
    if first.payload.end != chunk || mss == 0 {
        return Err(bad("first chunk not a full segment"));
    }
    let (mut seq, mut flags) = (first.seq, first.flags);
    let count = chunks.len();
    for (k, c) in chunks.enumerate() {
        let next = read_chunk(c)?;
        seq = seq.wrapping_add(mss as u32);
        let last = k + 1 == count;
        if !first.same_flow(&next) || next.seq != seq {
            return Err(bad("another flow or a gap"));
        }
        if flags & tcp::FIN != 0 || next.flags & tcp::CWR != 0 {
            return Err(bad("FIN before the last chunk or CWR after the first"));
        }
        if next.payload.len() > mss || (!last && next.payload.len() != mss) {
            return Err(bad("segments of unequal size"));
        }
        flags |= next.flags & (tcp::PSH | tcp::FIN);
    }
    Ok((first.layout, mss, flags))
}

/// Joins the chunks of `payload`, the payload of a UDP GSO datagram with segment size `chunk`,
/// into one TCP super-frame in place, at `vxlan::HEADER_LEN` (after the first chunk's
/// VXLAN header); the bytes after it are left over.
pub fn coalesce_tcp(payload: &mut [u8], chunk: usize) -> Result<Coalesced, CoalesceError> {
    if chunk <= vxlan::HEADER_LEN || payload.len() <= chunk {
        return Err(CoalesceError("not several chunks"));
    }
    let (at, mss, flags) = check_chunks(payload, chunk)?;
    let mut end = chunk;
    for start in (chunk..payload.len()).step_by(chunk) {
        let from = start + vxlan::HEADER_LEN + at.payload..(start + chunk).min(payload.len());
        let n = from.len();
        payload.copy_within(from, end);
        end += n;
    }
    let inner = &mut payload[vxlan::HEADER_LEN..end];
    TcpPacket::new_unchecked(&mut inner[at.l4..]).set_flags(flags);
    let offload = partial_super_frame(inner, &at, mss as u16)
        .map_err(|_| CoalesceError("longer than an IP packet"))?;
    Ok(Coalesced {
        len: inner.len(),
        offload,
    })
}

/// Makes `inner` (a TCP frame laid out as `at`, no bytes after its IP packet) a super-frame of
/// `mss`-byte segments as a local TCP stack hands one to a veth: its IP lengths and IPv4
/// checksum written, its TCP checksum partial (the pseudo-header sum of the whole segment).
pub(super) fn partial_super_frame(
    inner: &mut [u8],
    at: &L4Layout,
    mss: u16,
) -> Result<Offload, SegmentError> {
    let psum = at.fix_ip(inner, 0)?;
    TcpPacket::new_unchecked(&mut inner[at.l4..]).set_checksum(fold(psum));
    Ok(Offload {
        gso: if at.v6 {
            GsoType::TcpV6
        } else {
            GsoType::TcpV4
        },
        gso_ecn: false,
        gso_size: mss,
        hdr_len: at.payload as u16,
        csum_partial: true,
        csum_start: at.l4 as u16,
        csum_offset: tcp::CHECKSUM_OFFSET as u16,
        data_valid: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Frame, Meta};
    use crate::pipeline::segment::tests::super_frame_of;
    use crate::pipeline::udp_gso::{each_udp_frame, MAX_FRAME, OUTER};

    const MSS: usize = 1000;
    /// A chunk: VXLAN header, inner Ethernet, IPv4, TCP (no options) and MSS bytes.
    const CHUNK: usize = vxlan::HEADER_LEN + 54 + MSS;

    /// The UDP payload of the one UDP GSO frame that carries 3500 bytes with `flags` in
    /// segments of [`MSS`] bytes.
    fn chunks(flags: u8) -> Vec<u8> {
        chunks_of(false, flags)
    }

    /// [`chunks`] of an IPv6 flow when `v6`.
    fn chunks_of(v6: bool, flags: u8) -> Vec<u8> {
        let payload: Vec<u8> = (0..3500u32).map(|i| (i % 253) as u8).collect();
        let (mut frame, off) =
            super_frame_of(v6, &payload, MSS as u16, flags, (5, 9), (true, true));
        let len = frame.len();
        let meta = Meta {
            offload: off,
            ..Meta::default()
        };
        let f = Frame::new(&mut frame, 0, len, meta).unwrap();
        let mut out = Vec::new();
        each_udp_frame(&f, &mut vec![0u8; MAX_FRAME], |p| {
            out = p.data()[OUTER..].to_vec()
        })
        .unwrap();
        out
    }

    /// The TCP header of chunk `k`, writable.
    fn tcp_of(payload: &mut [u8], k: usize) -> TcpPacket<&mut [u8]> {
        let at = k * CHUNK + vxlan::HEADER_LEN + 34;
        TcpPacket::new_unchecked(&mut payload[at..at + 20])
    }

    #[test]
    fn joins_a_flows_chunks_with_the_flags_of_the_first_and_the_last() {
        let mut p = chunks(tcp::ACK | tcp::PSH | tcp::CWR);
        let c = coalesce_tcp(&mut p, CHUNK).unwrap();
        assert_eq!(c.len, 54 + 3500);
        assert_eq!(
            (
                c.offload.gso,
                usize::from(c.offload.gso_size),
                c.offload.hdr_len
            ),
            (GsoType::TcpV4, MSS, 54)
        );
        let inner = &p[vxlan::HEADER_LEN..vxlan::HEADER_LEN + c.len];
        let ip = Ipv4Packet::new_checked(&inner[14..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!((ip.total_len(), ip.ident()), (20 + 20 + 3500, 9));
        let seg = TcpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(seg.seq(), 5);
        assert_eq!(seg.flags(), tcp::ACK | tcp::PSH | tcp::CWR);
        let want: Vec<u8> = (0..3500u32).map(|i| (i % 253) as u8).collect();
        assert_eq!(seg.payload(), &want[..]);
    }

    #[test]
    fn refuses_chunks_that_are_not_one_flows_run() {
        let base = chunks(tcp::ACK);
        let refused = |edit: &dyn Fn(&mut Vec<u8>), chunk: usize| {
            let mut p = base.clone();
            edit(&mut p);
            coalesce_tcp(&mut p, chunk).is_err()
        };
        assert!(!refused(&|_| {}, CHUNK));
        assert!(refused(&|_| {}, base.len()), "one chunk");
        assert!(refused(&|_| {}, vxlan::HEADER_LEN), "chunks without room");
        assert!(refused(&|p| tcp_of(p, 2).set_seq(1), CHUNK), "a gap");
        assert!(
            refused(&|p| tcp_of(p, 1).set_src_port(1), CHUNK),
            "another flow"
        );
        assert!(refused(&|p| tcp_of(p, 1).set_ack(1), CHUNK), "another ack");
        let flag = |k, f| move |p: &mut Vec<u8>| tcp_of(p, k).set_flags(tcp::ACK | f);
        assert!(refused(&flag(1, tcp::FIN), CHUNK), "FIN before the last");
        assert!(refused(&flag(1, tcp::CWR), CHUNK), "CWR after the first");
        assert!(refused(&flag(3, tcp::SYN), CHUNK), "SYN");
        assert!(refused(&flag(0, tcp::RST), CHUNK), "RST");
        assert!(!refused(&flag(3, tcp::FIN | tcp::PSH), CHUNK), "FIN last");
        assert!(refused(&|p| p[CHUNK + 5] ^= 1, CHUNK), "another VNI");
        assert!(refused(&|p| p.truncate(p.len() - 1), CHUNK), "IPv4 length");
        // The first chunk shorter than the rest: not one super-frame's segments.
        assert!(refused(&|_| {}, CHUNK - 1));
    }

    #[test]
    fn joins_ipv6_chunks_of_one_flow_only() {
        const CHUNK6: usize = CHUNK + 20;
        let base = chunks_of(true, tcp::ACK | tcp::PSH);
        let mut p = base.clone();
        let c = coalesce_tcp(&mut p, CHUNK6).unwrap();
        assert_eq!(c.len, 74 + 3500);
        assert_eq!(
            (
                c.offload.gso,
                usize::from(c.offload.gso_size),
                c.offload.csum_start
            ),
            (GsoType::TcpV6, MSS, 54)
        );
        let inner = &p[vxlan::HEADER_LEN..vxlan::HEADER_LEN + c.len];
        let ip = Ipv6Packet::new_checked(&inner[14..]).unwrap();
        assert_eq!(usize::from(ip.payload_len()), 20 + 3500);
        let seg = TcpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!((seg.seq(), seg.flags()), (5, tcp::ACK | tcp::PSH));
        let want: Vec<u8> = (0..3500u32).map(|i| (i % 253) as u8).collect();
        assert_eq!(seg.payload(), &want[..]);
        // The second chunk's IPv6 header: another flow label, another hop limit.
        let refused = |edit: &dyn Fn(&mut Ipv6Packet<&mut [u8]>)| {
            let mut p = base.clone();
            let at = CHUNK6 + vxlan::HEADER_LEN + 14;
            edit(&mut Ipv6Packet::new_unchecked(&mut p[at..at + 40]));
            coalesce_tcp(&mut p, CHUNK6).is_err()
        };
        assert!(!refused(&|_| {}));
        assert!(refused(&|ip| ip.set_version_tc_flow(0, 1)), "flow label");
        assert!(refused(&|ip| ip.set_version_tc_flow(4, 9)), "traffic class");
        assert!(refused(&|ip| ip.set_hop_limit(1)), "hop limit");
        assert!(refused(&|ip| ip.set_src(Ipv6Addr::LOCALHOST)), "source");
        assert!(refused(&|ip| ip.set_next_header(17)), "not TCP");
    }
}
