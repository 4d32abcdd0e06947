//! Software segmentation of TCP and UDP super-frames over IPv4 or IPv6 (what Linux's
//! `tcp_gso_segment` and `__udp_gso_segment` do for a device without TSO or USO), so that the
//! 64 KiB frames an endpoint's TCP or UDP (`UDP_SEGMENT`) hands over with its offloads on can
//! cross a link no device segments for, such as a VXLAN tunnel through an AF_PACKET uplink.
//!
//! A super-frame is `[outer VXLAN/IPv4 headers] inner Ethernet | IPv4 or IPv6 | TCP or UDP |
//! payload` (the outer headers only for [`GsoType::TcpV4Vxlan`], [`GsoType::TcpV6Vxlan`] and
//! [`GsoType::UdpL4Vxlan`]; an inner IPv6 header without extension headers). Segment `i` is the
//! same headers followed by `mss` bytes of payload from `i * mss` (the last one shorter), with:
//! - inner IPv4: total length of the segment, identification `id + i`, header checksum;
//!   inner IPv6: payload length of the segment;
//! - TCP: sequence number `seq + i * mss`; FIN and PSH only on the last segment, CWR only on
//!   the first; UDP: the datagram's length. The checksum partial (the pseudo-header sum of the
//!   segment's length, the device completes it) when the super-frame's was, else complete;
//! - outer IPv4 and UDP (tunnel only): lengths of the segment, identification `id + i`, IPv4
//!   header checksum (the UDP checksum stays 0, as RFC 7348 allows).
//!
//! Sans-IO: [`Segmenter::write`] fills a caller's buffer, nothing is allocated. A tunnelled
//! super-frame's segments leave packed into UDP GSO frames (`pipeline::udp_gso`).

use crate::frame::{GsoType, Offload};
use crate::wire::checksum::{fold, pseudo_header_sum_v4, pseudo_header_sum_v6};
use crate::wire::ethernet::{self, EthernetFrame, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::wire::tcp::{self, TcpPacket};
use crate::wire::{
    ipv4, ipv6, udp, vxlan, Ipv4Packet, Ipv6Packet, UdpPacket, IPPROTO_TCP, IPPROTO_UDP,
};

/// Why a super-frame cannot be cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    /// The frame is not an untagged TCP or UDP super-frame of its offload's kind.
    #[error("not a segmentable super-frame: {0}")]
    Malformed(&'static str),
    /// The output buffer is smaller than one segment.
    #[error("segment needs {needed} bytes, buffer has {available}")]
    NoRoom {
        /// Length of the segment.
        needed: usize,
        /// Size of the buffer.
        available: usize,
    },
}

/// Where the headers of a super-frame are: offsets from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L4Layout {
    /// Bytes of outer encapsulation in front of the inner Ethernet header (0 without a tunnel).
    pub outer: usize,
    /// The inner IP header.
    pub ip: usize,
    /// The TCP or UDP header.
    pub l4: usize,
    /// The TCP or UDP payload (the end of the headers every segment repeats).
    pub payload: usize,
    /// The end of the inner IP packet (Ethernet padding excluded).
    pub end: usize,
    /// The inner IP header is IPv6 (without extension headers), else IPv4.
    pub v6: bool,
    /// The transport is UDP, else TCP.
    pub udp: bool,
}

impl L4Layout {
    /// The layout of an untagged TCP/IPv4 or TCP/IPv6 frame behind `outer` bytes of
    /// encapsulation.
    pub fn parse(frame: &[u8], outer: usize) -> Result<L4Layout, SegmentError> {
        L4Layout::parse_l4(frame, outer, IPPROTO_TCP)
    }

    /// The layout of an untagged frame of transport `proto` (TCP or UDP) over IPv4 or IPv6
    /// behind `outer` bytes of encapsulation.
    pub fn parse_l4(frame: &[u8], outer: usize, proto: u8) -> Result<L4Layout, SegmentError> {
        let bad = SegmentError::Malformed;
        let inner = frame.get(outer..).ok_or(bad("short outer headers"))?;
        let eth = EthernetFrame::new_checked(inner).map_err(|_| bad("Ethernet"))?;
        let ip_at = outer + ethernet::HEADER_LEN;
        let (ip_hlen, ip_len, v6) = match eth.ethertype() {
            ETHERTYPE_IPV4 => {
                let ip = Ipv4Packet::new_checked(eth.payload()).map_err(|_| bad("IPv4"))?;
                if ip.protocol() != proto || ip.is_fragment() {
                    return Err(bad("not a whole datagram of the transport"));
                }
                (ip.header_len(), usize::from(ip.total_len()), false)
            }
            ETHERTYPE_IPV6 => {
                let ip = Ipv6Packet::new_checked(eth.payload()).map_err(|_| bad("IPv6"))?;
                if ip.next_header() != proto {
                    return Err(bad("not the transport right after the IPv6 header"));
                }
                let len = ipv6::HEADER_LEN + usize::from(ip.payload_len());
                (ipv6::HEADER_LEN, len, true)
            }
            _ => return Err(bad("not untagged IP")),
        };
        let l4_at = ip_at + ip_hlen;
        let seg = inner
            .get(l4_at - outer..ip_at - outer + ip_len)
            .ok_or(bad("IP length"))?;
        let header_len = match proto {
            IPPROTO_TCP => TcpPacket::new_checked(seg)
                .map_err(|_| bad("TCP"))?
                .header_len(),
            IPPROTO_UDP if seg.len() >= udp::HEADER_LEN => udp::HEADER_LEN,
            _ => return Err(bad("transport")),
        };
        Ok(L4Layout {
            outer,
            ip: ip_at,
            l4: l4_at,
            payload: l4_at + header_len,
            end: ip_at + ip_len,
            v6,
            udp: proto == IPPROTO_UDP,
        })
    }

    /// Bytes of headers every segment carries (outer, Ethernet, IP, TCP or UDP).
    pub fn headers(&self) -> usize {
        self.payload
    }

    /// Sets the inner IP lengths of the segment `seg` (headers as this layout says) and moves an
    /// IPv4 identification on by `step`; returns the pseudo-header sum of its TCP segment or
    /// UDP datagram.
    pub fn fix_ip(&self, seg: &mut [u8], step: u16) -> Result<u32, SegmentError> {
        let long = || SegmentError::Malformed("length");
        let l4_len = u16::try_from(seg.len() - self.l4).map_err(|_| long())?;
        let ip_len = u16::try_from(seg.len() - self.ip).map_err(|_| long())?;
        if self.v6 {
            let mut ip = Ipv6Packet::new_unchecked(&mut seg[self.ip..self.l4]);
            ip.set_payload_len(ip_len - ipv6::HEADER_LEN as u16);
            let (src, dst) = (ip.src(), ip.dst());
            return Ok(pseudo_header_sum_v6(src, dst, self.proto(), l4_len.into()));
        }
        let mut ip = Ipv4Packet::new_unchecked(&mut seg[self.ip..self.l4]);
        ip.set_total_len(ip_len);
        ip.set_ident(ip.ident().wrapping_add(step));
        ip.fill_checksum();
        Ok(pseudo_header_sum_v4(
            ip.src(),
            ip.dst(),
            self.proto(),
            l4_len,
        ))
    }

    /// The transport's IP protocol number.
    fn proto(&self) -> u8 {
        if self.udp {
            IPPROTO_UDP
        } else {
            IPPROTO_TCP
        }
    }
}

/// Cuts one super-frame into segments, one [`write`](Segmenter::write) per segment.
#[derive(Debug, Clone, Copy)]
pub struct Segmenter<'a> {
    frame: &'a [u8],
    at: L4Layout,
    mss: usize,
    off: Offload,
}

impl<'a> Segmenter<'a> {
    /// The segmenter of `frame`, a super-frame whose offload `off` is [`GsoType::TcpV4`],
    /// [`GsoType::TcpV6`], their VXLAN kinds or [`GsoType::UdpL4Vxlan`] with a non-zero
    /// `gso_size` (the payload bytes per segment or datagram).
    pub fn new(frame: &'a [u8], off: &Offload) -> Result<Segmenter<'a>, SegmentError> {
        let (outer, v6) = match off.gso {
            GsoType::TcpV4 => (0, Some(false)),
            GsoType::TcpV6 => (0, Some(true)),
            GsoType::TcpV4Vxlan => (vxlan::OVERHEAD_V4, Some(false)),
            GsoType::TcpV6Vxlan => (vxlan::OVERHEAD_V4, Some(true)),
            GsoType::UdpL4Vxlan => (vxlan::OVERHEAD_V4, None),
            _ => {
                return Err(SegmentError::Malformed(
                    "not a TCP or tunnelled UDP super-frame",
                ))
            }
        };
        if off.gso_size == 0 {
            return Err(SegmentError::Malformed("segment size 0"));
        }
        let at = match v6 {
            Some(v6) => L4Layout::parse(frame, outer).and_then(|at| {
                (at.v6 == v6)
                    .then_some(at)
                    .ok_or(SegmentError::Malformed("IP version of another offload"))
            })?,
            None => L4Layout::parse_l4(frame, outer, IPPROTO_UDP)?,
        };
        if at.end > frame.len() || at.end < at.payload {
            return Err(SegmentError::Malformed("IP length"));
        }
        Ok(Segmenter {
            frame,
            at,
            mss: usize::from(off.gso_size),
            off: *off,
        })
    }

    /// Number of segments (at least one, even for a super-frame without payload).
    pub fn count(&self) -> usize {
        (self.at.end - self.at.payload).div_ceil(self.mss).max(1)
    }

    /// Length of segment `i` (`i < count()`), headers included.
    pub fn segment_len(&self, i: usize) -> usize {
        let start = self.at.payload + i * self.mss;
        self.at.payload + (start + self.mss).min(self.at.end).saturating_sub(start)
    }

    /// Writes segment `i` (`i < count()`) at the start of `out`; returns its length and its
    /// offload state (no GSO; the checksum partial as the super-frame's was).
    pub fn write(&self, i: usize, out: &mut [u8]) -> Result<(usize, Offload), SegmentError> {
        let at = &self.at;
        let start = at.payload + i * self.mss;
        let stop = (start + self.mss).min(at.end);
        if start > stop {
            return Err(SegmentError::Malformed("segment index"));
        }
        let len = at.payload + (stop - start);
        let Some(out) = out.get_mut(..len) else {
            return Err(SegmentError::NoRoom {
                needed: len,
                available: out.len(),
            });
        };
        out[..at.payload].copy_from_slice(&self.frame[..at.payload]);
        out[at.payload..].copy_from_slice(&self.frame[start..stop]);
        let step = i as u16;
        let psum = at.fix_ip(out, step)?;
        if at.udp {
            let mut d = UdpPacket::new_unchecked(&mut out[at.l4..]);
            d.set_len((len - at.l4) as u16);
            if self.off.csum_partial {
                d.set_checksum(fold(psum));
            } else {
                d.fill_checksum_from(psum);
            }
        } else {
            let last = i + 1 >= self.count();
            tcp_segment(
                &mut out[at.l4..],
                i,
                self.mss,
                last,
                self.off.csum_partial,
                psum,
            );
        }
        if at.outer != 0 {
            write_outer_lengths(&mut out[..at.outer], len, step);
        }
        let off = Offload {
            gso: GsoType::None,
            gso_ecn: false,
            gso_size: 0,
            hdr_len: 0,
            ..self.off
        };
        Ok((len, off))
    }
}

/// Writes what TCP segment `i` of `mss` bytes each (the `last` one or not) changes of the
/// super-frame's header in `seg`: its sequence number, flags and checksum (partial, or complete
/// from the pseudo-header sum `psum`).
fn tcp_segment(seg: &mut [u8], i: usize, mss: usize, last: bool, partial: bool, psum: u32) {
    let mut seg = TcpPacket::new_unchecked(seg);
    seg.set_seq(seg.seq().wrapping_add((i * mss) as u32));
    let mut flags = seg.flags();
    if !last {
        flags &= !(tcp::FIN | tcp::PSH);
    }
    if i > 0 {
        flags &= !tcp::CWR;
    }
    seg.set_flags(flags);
    if partial {
        seg.set_checksum(fold(psum));
    } else {
        seg.fill_checksum_from(psum);
    }
}

/// The largest segment an encapsulation makes (a 9000-byte MTU with room to spare): it
/// clamps its segment size to it.
pub const MAX_SEGMENT: usize = 9216;

/// Sets the outer IPv4 and UDP lengths of a VXLAN segment of `len` bytes (outer Ethernet
/// included), moves the outer identification on by `step` and recomputes its checksum.
pub(super) fn write_outer_lengths(outer: &mut [u8], len: usize, step: u16) {
    let ip_at = ethernet::HEADER_LEN;
    let udp_at = ip_at + ipv4::MIN_HEADER_LEN;
    let ip_len = (len - ip_at) as u16;
    let mut ip = Ipv4Packet::new_unchecked(&mut outer[ip_at..udp_at]);
    ip.set_total_len(ip_len);
    ip.set_ident(ip.ident().wrapping_add(step));
    ip.fill_checksum();
    let mut u = UdpPacket::new_unchecked(&mut outer[udp_at..udp_at + udp::HEADER_LEN]);
    u.set_len(ip_len - ipv4::MIN_HEADER_LEN as u16);
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::testkit::{eth, tcp};
    use crate::wire::checksum::ones_sum;
    use crate::wire::vxlan::{write_outer_v4, OuterV4};
    use crate::wire::MacAddr;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 2);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 3);
    const SRC6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
    const DST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3);

    /// A TCP/IPv4 super-frame with `flags`, sequence `seq`, IPv4 identification `id` and
    /// `payload`; its checksum partial (as a veth hands it over) when `partial`, behind VXLAN
    /// headers when `tunnel`. Returns the frame and its offload.
    pub(in crate::pipeline) fn super_frame(
        payload: &[u8],
        mss: u16,
        flags: u8,
        seq_id: (u32, u16),
        mode: (bool, bool),
    ) -> (Vec<u8>, Offload) {
        super_frame_of(false, payload, mss, flags, seq_id, mode)
    }

    /// The inner Ethernet | IPv4 (identification `id`) or IPv6 (when `v6`; flow label `id`)
    /// | TCP frame of [`super_frame_of`], every checksum complete; returns it, the TCP pseudo-
    /// header sum and the checksum offload of its TCP segment.
    fn inner_frame(
        v6: bool,
        payload: &[u8],
        flags: u8,
        (seq, id): (u32, u16),
    ) -> (Vec<u8>, u32, Offload) {
        let v4 = tcp(SRC, 40000, DST, 5201, flags, payload);
        let (ethertype, ip) = if v6 {
            let mut ip = vec![0u8; ipv6::HEADER_LEN + v4.len() - 20];
            let seg = ipv6::write_header(&mut ip, (SRC6, DST6), IPPROTO_TCP, 64);
            seg.copy_from_slice(&v4[20..]);
            Ipv6Packet::new_unchecked(&mut ip[..]).set_version_tc_flow(0, u32::from(id));
            (0x86dd, ip)
        } else {
            let mut ip = v4;
            let mut h = Ipv4Packet::new_checked(&mut ip[..]).unwrap();
            h.set_ident(id);
            h.fill_checksum();
            (0x0800, ip)
        };
        let mut inner = eth(
            MacAddr([2, 0, 0, 0, 0, 3]),
            MacAddr([2, 0, 0, 0, 0, 2]),
            ethertype,
            &ip,
        );
        let at = L4Layout::parse(&inner, 0).unwrap();
        let psum = at.fix_ip(&mut inner, 0).unwrap();
        let mut seg = TcpPacket::new_checked(&mut inner[at.l4..]).unwrap();
        seg.set_seq(seq);
        seg.fill_checksum_from(psum);
        let off = Offload {
            gso: if v6 { GsoType::TcpV6 } else { GsoType::TcpV4 },
            csum_start: at.l4 as u16,
            csum_offset: 16,
            ..Offload::default()
        };
        (inner, psum, off)
    }

    /// [`super_frame`] over IPv6 when `v6` (the flow label `id`, no identification).
    pub(in crate::pipeline) fn super_frame_of(
        v6: bool,
        payload: &[u8],
        mss: u16,
        flags: u8,
        seq_id: (u32, u16),
        (partial, tunnel): (bool, bool),
    ) -> (Vec<u8>, Offload) {
        let (mut inner, psum, mut off) = inner_frame(v6, payload, flags, seq_id);
        off.gso_size = mss;
        if partial {
            let at = usize::from(off.csum_start + off.csum_offset);
            inner[at..at + 2].copy_from_slice(&fold(psum).to_be_bytes());
            off.csum_partial = true;
        }
        if !tunnel {
            return (inner, off);
        }
        let frame = wrapped(&inner);
        off.gso = if v6 {
            GsoType::TcpV6Vxlan
        } else {
            GsoType::TcpV4Vxlan
        };
        off.csum_start += vxlan::OVERHEAD_V4 as u16;
        (frame, off)
    }

    /// `inner` behind the outer headers of a VXLAN tunnel (their lengths left to the cutting).
    fn wrapped(inner: &[u8]) -> Vec<u8> {
        let mut frame = vec![0u8; vxlan::OVERHEAD_V4];
        let outer = OuterV4 {
            dst_mac: MacAddr([2, 0, 0, 0, 0, 0x12]),
            src_mac: MacAddr([2, 0, 0, 0, 0, 0x11]),
            src: Ipv4Addr::new(192, 0, 2, 1),
            dst: Ipv4Addr::new(192, 0, 2, 2),
            src_port: 50000,
            vni: 4096,
        };
        write_outer_v4(&mut frame, &outer).unwrap();
        frame.extend_from_slice(inner);
        frame
    }

    /// Completes a partial checksum as a device does: the sum from `csum_start` to the end,
    /// complemented, into the field at `csum_start + csum_offset`.
    pub(in crate::pipeline) fn complete(seg: &mut [u8], off: &Offload) {
        if off.csum_partial {
            let (start, at) = (
                usize::from(off.csum_start),
                usize::from(off.csum_start + off.csum_offset),
            );
            let c = !fold(ones_sum(&seg[start..], 0));
            seg[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
    }

    /// The segments of a super-frame, each with its checksums completed, and their offloads.
    fn cut(frame: &[u8], off: &Offload) -> Vec<(Vec<u8>, Offload)> {
        let s = Segmenter::new(frame, off).unwrap();
        let mut buf = [0u8; 4096];
        (0..s.count())
            .map(|i| {
                let (n, o) = s.write(i, &mut buf).unwrap();
                let mut seg = buf[..n].to_vec();
                complete(&mut seg, &o);
                (seg, o)
            })
            .collect()
    }

    /// What etherparse reads of a segment's inner (after a VXLAN tunnel's outer headers, which
    /// it checks too): IPv4 identification (IPv6: the flow label's low bits), TCP sequence,
    /// flags byte and payload, once every checksum verifies.
    pub(in crate::pipeline) fn read_segment(frame: &[u8], tunnel: bool) -> (u16, u32, u8, Vec<u8>) {
        let p = SlicedPacket::from_ethernet(frame).unwrap();
        let (id, ip_len, checksum) = match &p.net {
            Some(NetSlice::Ipv4(ip)) => {
                let h = ip.header().to_header();
                assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 checksum");
                let t = p.transport.as_ref().and_then(|t| match t {
                    TransportSlice::Tcp(t) => {
                        Some(t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap())
                    }
                    _ => None,
                });
                (h.identification, usize::from(h.total_len), t)
            }
            Some(NetSlice::Ipv6(ip)) => {
                assert!(!tunnel, "IPv6 underlay");
                let h = ip.header().to_header();
                let t = p.transport.as_ref().and_then(|t| match t {
                    TransportSlice::Tcp(t) => {
                        Some(t.to_header().calc_checksum_ipv6(&h, t.payload()).unwrap())
                    }
                    _ => None,
                });
                (
                    h.flow_label.value() as u16,
                    40 + usize::from(h.payload_length),
                    t,
                )
            }
            other => panic!("not IP: {other:?}"),
        };
        assert_eq!(ip_len, frame.len() - 14, "IP length");
        match p.transport {
            Some(TransportSlice::Udp(u)) if tunnel => {
                assert_eq!(usize::from(u.length()), frame.len() - 34);
                read_segment(&u.payload()[8..], false)
            }
            Some(TransportSlice::Tcp(t)) if !tunnel => {
                let th = t.to_header();
                assert_eq!(Some(th.checksum), checksum, "TCP checksum");
                let flags = t.slice()[13];
                (id, th.sequence_number, flags, t.payload().to_vec())
            }
            other => panic!("unexpected transport {other:?}"),
        }
    }

    #[test]
    fn cuts_with_sequence_ids_and_flags_of_each_segment() {
        let payload: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let flags = tcp::ACK | tcp::PSH | tcp::FIN | tcp::CWR;
        let (frame, off) =
            super_frame(&payload, 1000, flags, (u32::MAX - 10, 0xffff), (true, true));
        let segs = cut(&frame, &off);
        assert_eq!(segs.len(), 3);
        let read: Vec<_> = segs.iter().map(|(s, _)| read_segment(s, true)).collect();
        assert_eq!(
            read.iter()
                .map(|r| (r.0, r.1, r.2, r.3.len()))
                .collect::<Vec<_>>(),
            vec![
                (0xffff, u32::MAX - 10, tcp::ACK | tcp::CWR, 1000),
                (0, 989, tcp::ACK, 1000),
                (1, 1989, tcp::ACK | tcp::PSH | tcp::FIN, 500),
            ]
        );
        for (seg, o) in &segs {
            assert_eq!(
                seg.len(),
                vxlan::OVERHEAD_V4 + 54 + read_segment(seg, true).3.len()
            );
            assert_eq!(o.gso, GsoType::None);
            assert!(o.csum_partial && o.csum_start == off.csum_start);
        }
    }

    #[test]
    fn refuses_what_it_cannot_cut() {
        let (frame, off) = super_frame(b"abc", 1, tcp::ACK, (1, 1), (false, false));
        let s = Segmenter::new(&frame, &off).unwrap();
        assert_eq!(s.count(), 3);
        assert_eq!(
            s.write(0, &mut [0u8; 54]),
            Err(SegmentError::NoRoom {
                needed: 55,
                available: 54
            })
        );
        assert!(s.write(4, &mut [0u8; 100]).is_err());
        let zero = Offload { gso_size: 0, ..off };
        assert!(Segmenter::new(&frame, &zero).is_err());
        let plain = Offload {
            gso: GsoType::None,
            ..off
        };
        assert!(Segmenter::new(&frame, &plain).is_err());
        let tunnel = Offload {
            gso: GsoType::TcpV4Vxlan,
            ..off
        };
        assert!(Segmenter::new(&frame, &tunnel).is_err(), "no outer headers");
        let udp = eth(
            MacAddr([2; 6]),
            MacAddr([4; 6]),
            0x0800,
            &crate::testkit::udp(SRC, 1, DST, 2, b"x"),
        );
        assert!(Segmenter::new(&udp, &off).is_err());
        assert!(Segmenter::new(&frame[..40], &off).is_err());
        // An IPv6 super-frame under an IPv4 offload, and the other way round.
        let (frame6, off6) = super_frame_of(true, b"abc", 1, tcp::ACK, (1, 1), (false, false));
        assert_eq!(Segmenter::new(&frame6, &off6).unwrap().count(), 3);
        assert!(Segmenter::new(&frame6, &off).is_err());
        assert!(Segmenter::new(&frame, &off6).is_err());
    }

    /// A UDP super-frame (USO) of `payload` in datagrams of `size` bytes from SRC to DST
    /// (IPv6 when `v6`; IPv4 identification 7) behind VXLAN headers, its checksum partial when
    /// `partial`.
    fn udp_super_frame(v6: bool, payload: &[u8], size: u16, partial: bool) -> (Vec<u8>, Offload) {
        let v4 = crate::testkit::udp(SRC, 4000, DST, 443, payload);
        let (ethertype, ip) = if v6 {
            let mut ip = vec![0u8; ipv6::HEADER_LEN + v4.len() - 20];
            let d = ipv6::write_header(&mut ip, (SRC6, DST6), IPPROTO_UDP, 64);
            d.copy_from_slice(&v4[20..]);
            (0x86dd, ip)
        } else {
            let mut ip = v4;
            let mut h = Ipv4Packet::new_checked(&mut ip[..]).unwrap();
            h.set_ident(7);
            h.fill_checksum();
            (0x0800, ip)
        };
        let inner = eth(MacAddr([2, 0, 0, 0, 0, 3]), MacAddr([2; 6]), ethertype, &ip);
        let mut frame = wrapped(&inner);
        let at = L4Layout::parse_l4(&frame, vxlan::OVERHEAD_V4, IPPROTO_UDP).unwrap();
        let psum = at.fix_ip(&mut frame, 0).unwrap();
        let mut u = UdpPacket::new_unchecked(&mut frame[at.l4..]);
        if partial {
            u.set_checksum(fold(psum));
        } else {
            u.fill_checksum_from(psum);
        }
        let off = Offload {
            gso: GsoType::UdpL4Vxlan,
            gso_size: size,
            csum_partial: partial,
            csum_start: at.l4 as u16,
            csum_offset: 6,
            ..Offload::default()
        };
        (frame, off)
    }

    proptest! {
        #[test]
        fn udp_datagrams_reassemble_and_every_checksum_verifies(
            payload in proptest::collection::vec(any::<u8>(), 0..6000),
            size in 1u16..1400,
            partial in any::<bool>(),
            v6 in any::<bool>(),
        ) {
            let (frame, off) = udp_super_frame(v6, &payload, size, partial);
            let segs = cut(&frame, &off);
            prop_assert_eq!(segs.len(), payload.len().div_ceil(usize::from(size)).max(1));
            let mut got = Vec::new();
            for (k, (seg, o)) in segs.iter().enumerate() {
                prop_assert_eq!(o.gso, GsoType::None);
                let outer = SlicedPacket::from_ethernet(seg).unwrap();
                let Some(TransportSlice::Udp(vx)) = outer.transport else {
                    panic!("outer UDP");
                };
                prop_assert_eq!(usize::from(vx.length()), seg.len() - 34);
                let inner = &vx.payload()[8..];
                let p = SlicedPacket::from_ethernet(inner).unwrap();
                let Some(TransportSlice::Udp(u)) = &p.transport else {
                    panic!("inner UDP");
                };
                let h = u.to_header();
                let want = match &p.net {
                    Some(NetSlice::Ipv4(ip)) => {
                        let ih = ip.header().to_header();
                        prop_assert_eq!(ih.header_checksum, ih.calc_header_checksum());
                        prop_assert_eq!(ih.identification, 7u16.wrapping_add(k as u16));
                        h.calc_checksum_ipv4(&ih, u.payload()).unwrap()
                    }
                    Some(NetSlice::Ipv6(ip)) => {
                        h.calc_checksum_ipv6(&ip.header().to_header(), u.payload()).unwrap()
                    }
                    other => panic!("not IP: {other:?}"),
                };
                prop_assert_eq!(h.checksum, want);
                prop_assert_eq!((h.source_port, h.destination_port), (4000, 443));
                got.extend_from_slice(u.payload());
            }
            prop_assert_eq!(got, payload);
        }
    }

    proptest! {
        #[test]
        fn segments_reassemble_and_every_checksum_verifies(
            payload in proptest::collection::vec(any::<u8>(), 0..12000),
            mss in 1u16..2000,
            flags in any::<u8>(),
            seq_id in any::<(u32, u16)>(),
            mode in any::<(bool, bool)>(),
            v6 in any::<bool>(),
        ) {
            let (frame, off) = super_frame_of(v6, &payload, mss, flags, seq_id, mode);
            let segs = cut(&frame, &off);
            prop_assert_eq!(segs.len(), payload.len().div_ceil(usize::from(mss)).max(1));
            let mut joined = Vec::new();
            for (i, (seg, o)) in segs.iter().enumerate() {
                let (id, seq, f, data) = read_segment(seg, mode.1);
                // IPv4 identifications count up; an IPv6 flow label stays.
                let step = if v6 { 0 } else { i as u16 };
                prop_assert_eq!(id, seq_id.1.wrapping_add(step));
                prop_assert_eq!(seq, seq_id.0.wrapping_add(joined.len() as u32));
                let last = i + 1 == segs.len();
                let gone = if last { 0 } else { tcp::FIN | tcp::PSH } | if i > 0 { tcp::CWR } else { 0 };
                prop_assert_eq!(f, flags & !gone);
                prop_assert!(data.len() <= usize::from(mss));
                prop_assert_eq!(o.csum_partial, mode.0);
                joined.extend_from_slice(&data);
            }
            prop_assert_eq!(joined, payload);
        }
    }
}
