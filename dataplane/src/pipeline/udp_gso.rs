//! Transmission of a tunnelled TCP or UDP super-frame ([`GsoType::TcpV4Vxlan`],
//! [`GsoType::TcpV6Vxlan`] or [`GsoType::UdpL4Vxlan`]) as UDP GSO frames
//! (`VIRTIO_NET_HDR_GSO_UDP_L4`, the kernel's `SKB_GSO_UDP_L4`): one outer Ethernet | IPv4 |
//! UDP header followed by equal chunks `[VXLAN | inner Ethernet | IPv4 or IPv6 | TCP or UDP |
//! payload]` (the last one shorter), which the
//! kernel (`__udp_gso_segment`, or the device) cuts into one UDP datagram per chunk. One
//! `sendmsg` then carries what took ~45 frames, each crossing the uplink's ring and the
//! underlay on its own.
//!
//! Each chunk is a segment as [`Segmenter`] writes it (inner IP lengths, IPv4 identification
//! and checksum, TCP sequence and flags or UDP length, and a complete checksum) without its
//! first 42 bytes. What
//! the kernel writes per datagram (`inet_gso_segment`, `__udp_gso_segment`): the outer IPv4
//! total length, identification (the frame's plus the datagram's index) and header checksum,
//! the UDP length, and the UDP checksum, which the frame leaves partial
//! (`VIRTIO_NET_HDR_F_NEEDS_CSUM`; the field holds the pseudo-header sum of the frame's UDP
//! length, which the kernel adjusts to each datagram's).
//!
//! Sans-IO: [`each_udp_frame`] fills a caller's buffer, nothing is allocated.

use std::cell::RefCell;

use super::segment::{write_outer_lengths, SegmentError, Segmenter, MAX_SEGMENT};
use super::Worker;
use crate::batch::Batch;
use crate::counters::WorkerCounters;
use crate::frame::{Frame, GsoType, Meta, Offload, Verdict, HEADROOM};
use crate::tables::Tables;
use crate::time::Millis;
use crate::wire::checksum::{fold, pseudo_header_sum_v4};
use crate::wire::{ethernet, ipv4, udp, Ipv4Packet, UdpPacket, IPPROTO_UDP};

/// Bytes of outer headers a UDP GSO frame carries once, in front of its chunks (Ethernet,
/// IPv4 without options, UDP).
pub const OUTER: usize = ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN + udp::HEADER_LEN;

/// The longest UDP GSO frame: the outer IPv4 total length is 16 bits.
pub const MAX_FRAME: usize = ethernet::HEADER_LEN + u16::MAX as usize;

/// Cuts the tunnelled super-frame `f` into segments and packs them, as chunks, into as few UDP
/// GSO frames as fit `buf` (at most [`MAX_FRAME`] bytes each); hands each to `emit` (which
/// transmits it) with `f`'s metadata and the frame's offload (UDP GSO, outer UDP checksum
/// partial). A frame of one chunk is an ordinary datagram (no GSO).
pub fn each_udp_frame(
    f: &Frame<'_>,
    buf: &mut [u8],
    mut emit: impl FnMut(&Frame<'_>),
) -> Result<(), SegmentError> {
    let plain = Offload {
        csum_partial: false,
        ..f.meta.offload
    };
    let s = Segmenter::new(f.data(), &plain)?;
    let chunk = s.segment_len(0) - OUTER;
    let room = buf.len().min(MAX_FRAME);
    let per_frame = room.saturating_sub(OUTER) / chunk;
    if per_frame == 0 {
        return Err(SegmentError::NoRoom {
            needed: OUTER + chunk,
            available: room,
        });
    }
    let count = s.count();
    let mut first = 0;
    while first < count {
        let n = per_frame.min(count - first);
        let (len, offload) = pack(&s, first..first + n, chunk, buf)?;
        let meta = Meta { offload, ..f.meta };
        if let Some(frame) = Frame::new(buf, 0, len, meta) {
            emit(&frame);
        }
        first += n;
    }
    Ok(())
}

thread_local! {
    /// Each thread's buffer for the frames [`each_packed_frame`] packs, allocated on its first
    /// tunnelled super-frame and reused for every later one.
    static PACKED: RefCell<Box<[u8]>> = RefCell::new(vec![0; MAX_FRAME].into_boxed_slice());
}

/// [`each_udp_frame`] into the calling thread's buffer (the runtime's transmission of a
/// tunnelled super-frame: no allocation per frame).
pub fn each_packed_frame(f: &Frame<'_>, emit: impl FnMut(&Frame<'_>)) -> Result<(), SegmentError> {
    PACKED.with_borrow_mut(|buf| each_udp_frame(f, buf, emit))
}

/// Hands each datagram of the UDP GSO frame `f` to `emit` as the kernel would cut it (outer
/// IPv4 length, identification plus the datagram's index and checksum, UDP length), its UDP
/// checksum 0 (RFC 7348 allows it): the way out through a port that refuses UDP GSO (a kernel
/// whose packet sockets do not take it). One stack buffer serves every datagram.
pub fn each_datagram(f: &Frame<'_>, mut emit: impl FnMut(&Frame<'_>)) {
    let data = f.data();
    let chunk = match f.meta.offload.gso {
        GsoType::UdpL4 => usize::from(f.meta.offload.gso_size),
        _ => data.len().saturating_sub(OUTER),
    };
    let (Some(chunks), true) = (data.get(OUTER..), chunk > 0) else {
        return;
    };
    let mut buf = [0u8; MAX_SEGMENT];
    for (k, c) in chunks.chunks(chunk).enumerate() {
        let len = OUTER + c.len();
        let Some(out) = buf.get_mut(..len) else {
            return;
        };
        out[..OUTER].copy_from_slice(&data[..OUTER]);
        out[OUTER..].copy_from_slice(c);
        write_outer_lengths(out, len, k as u16);
        UdpPacket::new_unchecked(&mut out[OUTER - udp::HEADER_LEN..OUTER]).set_checksum(0);
        let meta = Meta {
            offload: Offload::default(),
            ..f.meta
        };
        if let Some(d) = Frame::new(&mut buf, 0, len, meta) {
            emit(&d);
        }
    }
}

/// Runs each datagram of every frame of the processed `batch` whose verdict is
/// [`Verdict::Split`] (a received VXLAN UDP GSO datagram whose chunks did not join: several
/// flows, as a NIC's UDP GRO may mix them) through `worker` on its own, as [`each_datagram`]
/// cuts it, and hands each one-frame batch to `send` (which transmits it) with its tables and
/// the worker's counters. The uplink's receive counters count the datagram and each of its
/// parts. No allocation: one stack buffer serves every datagram.
pub fn split_unjoined(
    worker: &mut Worker,
    batch: &Batch<'_>,
    now: Millis,
    mut send: impl FnMut(&Tables, &Batch<'_>, &WorkerCounters),
) {
    let mut buf = [0u8; HEADROOM + MAX_SEGMENT];
    for f in batch
        .frames()
        .iter()
        .filter(|f| f.meta.verdict == Verdict::Split)
    {
        each_datagram(f, |d| {
            let len = d.len();
            buf[HEADROOM..HEADROOM + len].copy_from_slice(d.data());
            let meta = Meta {
                verdict: Verdict::Pending,
                ..d.meta
            };
            let mut one = Batch::new();
            if let Some(frame) = Frame::new(&mut buf, HEADROOM, len, meta) {
                let _ = one.push(frame);
                let tables = worker.process(&mut one, now);
                send(&tables, &one, worker.counters());
            }
        });
    }
}

/// Writes segments `range` of `s` as one UDP GSO frame of `chunk`-byte chunks at the start of
/// `out`; returns its length and offload. Segment `i` is written whole (outer headers
/// included) where its chunk's outer headers would be, last segment first, so each one's
/// outer headers land on the tail of the chunk before it, which is written afterwards: the
/// first segment's become the frame's.
fn pack(
    s: &Segmenter<'_>,
    range: std::ops::Range<usize>,
    chunk: usize,
    out: &mut [u8],
) -> Result<(usize, Offload), SegmentError> {
    let mut end = 0;
    for (k, i) in range.clone().enumerate().rev() {
        let at = k * chunk;
        let (len, _) = s.write(i, &mut out[at..])?;
        end = end.max(at + len);
    }
    let udp_len = (end - ethernet::HEADER_LEN - ipv4::MIN_HEADER_LEN) as u16;
    let mut ip = Ipv4Packet::new_unchecked(&mut out[ethernet::HEADER_LEN..]);
    ip.set_total_len(udp_len + ipv4::MIN_HEADER_LEN as u16);
    ip.fill_checksum();
    let (src, dst) = (ip.src(), ip.dst());
    let mut u = UdpPacket::new_unchecked(&mut out[OUTER - udp::HEADER_LEN..end]);
    u.set_len(udp_len);
    u.set_checksum(fold(pseudo_header_sum_v4(src, dst, IPPROTO_UDP, udp_len)));
    let gso = range.len() > 1;
    let off = Offload {
        gso: if gso { GsoType::UdpL4 } else { GsoType::None },
        gso_ecn: false,
        gso_size: if gso { chunk as u16 } else { 0 },
        hdr_len: OUTER as u16,
        csum_partial: true,
        csum_start: (OUTER - udp::HEADER_LEN) as u16,
        csum_offset: udp::CHECKSUM_OFFSET as u16,
        data_valid: false,
    };
    Ok((end, off))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::coalesce::coalesce_tcp;
    use crate::pipeline::segment::tests::{complete, read_segment, super_frame, super_frame_of};
    use crate::wire::checksum::ones_sum;
    use crate::wire::tcp;
    use crate::wire::vxlan::{self, OVERHEAD_V4};
    use proptest::prelude::*;

    /// The UDP GSO frames of a tunnelled super-frame, packed into a buffer of `room` bytes.
    fn pack_all(frame: &[u8], off: Offload, room: usize) -> Vec<(Vec<u8>, Offload)> {
        let mut bytes = frame.to_vec();
        let meta = Meta {
            offload: off,
            ..Meta::default()
        };
        let f = Frame::new(&mut bytes, 0, frame.len(), meta).unwrap();
        let mut out = Vec::new();
        each_udp_frame(&f, &mut vec![0u8; room], |p| {
            out.push((p.data().to_vec(), p.meta.offload))
        })
        .unwrap();
        out
    }

    /// What the kernel's UDP GSO makes of a frame: one datagram per chunk, with the outer
    /// IPv4 length, identification and checksum, the UDP length and a complete UDP checksum.
    fn kernel_split(frame: &[u8], off: &Offload) -> Vec<Vec<u8>> {
        let chunk = if off.gso == GsoType::UdpL4 {
            usize::from(off.gso_size)
        } else {
            frame.len() - OUTER
        };
        frame[OUTER..]
            .chunks(chunk)
            .enumerate()
            .map(|(k, c)| {
                let mut d = frame[..OUTER].to_vec();
                d.extend_from_slice(c);
                let udp_len = (c.len() + udp::HEADER_LEN) as u16;
                let mut ip = Ipv4Packet::new_unchecked(&mut d[14..]);
                ip.set_total_len(udp_len + 20);
                ip.set_ident(ip.ident().wrapping_add(k as u16));
                ip.fill_checksum();
                let (src, dst) = (ip.src(), ip.dst());
                let mut u = UdpPacket::new_unchecked(&mut d[34..]);
                u.set_len(udp_len);
                u.set_checksum(fold(pseudo_header_sum_v4(src, dst, IPPROTO_UDP, udp_len)));
                let c = !fold(ones_sum(&d[34..], 0));
                d[40..42].copy_from_slice(&c.to_be_bytes());
                d
            })
            .collect()
    }

    #[test]
    fn packs_segments_into_gso_frames_of_equal_chunks() {
        let payload: Vec<u8> = (0..5000u32).map(|i| (i * 3) as u8).collect();
        let (frame, off) = super_frame(&payload, 1000, tcp::ACK, (7, 100), (true, true));
        let packed = pack_all(&frame, off, MAX_FRAME);
        assert_eq!(packed.len(), 1);
        let (bytes, o) = &packed[0];
        let chunk = vxlan::HEADER_LEN + 54 + 1000;
        assert_eq!(bytes.len(), OUTER + 5 * chunk);
        assert_eq!(
            (o.gso, usize::from(o.gso_size), o.csum_partial),
            (GsoType::UdpL4, chunk, true)
        );
        assert_eq!((o.csum_start, o.csum_offset, o.hdr_len), (34, 6, 42));
        let datagrams = kernel_split(bytes, o);
        assert_eq!(datagrams.len(), 5);
        for (k, d) in datagrams.iter().enumerate() {
            let (id, seq, _, data) = read_segment(d, true);
            assert_eq!((id, seq), (100 + k as u16, 7 + 1000 * k as u32));
            assert_eq!(data, &payload[k * 1000..(k + 1) * 1000]);
            let outer_id = Ipv4Packet::new_checked(&d[14..]).unwrap().ident();
            let first = Ipv4Packet::new_checked(&frame[14..]).unwrap().ident();
            assert_eq!(outer_id, first.wrapping_add(k as u16));
        }
        // Cut in user space for a port without UDP GSO: the kernel's datagrams, UDP checksum 0.
        let f = Frame::new(
            &mut bytes.clone(),
            0,
            bytes.len(),
            Meta {
                offload: *o,
                ..Meta::default()
            },
        )
        .map(|f| {
            let mut own = Vec::new();
            each_datagram(&f, |d| own.push((d.data().to_vec(), d.meta.offload)));
            own
        })
        .unwrap();
        assert_eq!(f.len(), datagrams.len());
        for ((own, off), kernel) in f.iter().zip(&datagrams) {
            assert_eq!(read_segment(own, true), read_segment(kernel, true));
            assert_eq!((&own[..40], &own[42..]), (&kernel[..40], &kernel[42..]));
            assert_eq!((own[40], own[41], *off), (0, 0, Offload::default()));
        }
        // A buffer for two chunks: three frames, the last an ordinary datagram.
        let small = pack_all(&frame, off, OUTER + 2 * chunk);
        let shapes: Vec<_> = small.iter().map(|(b, o)| (b.len(), o.gso)).collect();
        assert_eq!(
            shapes,
            vec![
                (OUTER + 2 * chunk, GsoType::UdpL4),
                (OUTER + 2 * chunk, GsoType::UdpL4),
                (OUTER + chunk, GsoType::None)
            ]
        );
    }

    #[test]
    fn refuses_what_does_not_fit_or_is_not_a_tunnel() {
        let (frame, off) = super_frame(&[1; 3000], 1000, tcp::ACK, (1, 1), (false, true));
        let mut bytes = frame.clone();
        let meta = Meta {
            offload: off,
            ..Meta::default()
        };
        let f = Frame::new(&mut bytes, 0, frame.len(), meta).unwrap();
        let mut sent = 0;
        let r = each_udp_frame(&f, &mut [0u8; 1000], |_| sent += 1);
        assert!(matches!(r, Err(SegmentError::NoRoom { .. })));
        let bare = Offload {
            gso: GsoType::TcpV4,
            ..off
        };
        let f = Frame::new(
            &mut bytes,
            0,
            frame.len(),
            Meta {
                offload: bare,
                ..meta
            },
        )
        .unwrap();
        assert!(each_udp_frame(&f, &mut [0u8; 9000], |_| sent += 1).is_err());
        assert_eq!(sent, 0);
    }

    proptest! {
        /// Segmenting, packing, the kernel's split and the receiver's join: every datagram's
        /// checksums verify and the joined super-frame is the one the endpoint sent.
        #[test]
        fn pack_split_and_join_give_back_the_super_frame(
            payload in proptest::collection::vec(any::<u8>(), 1..20000),
            mss in 200u16..1500,
            flags in any::<u8>(),
            seq_id in any::<(u32, u16)>(),
            partial in any::<bool>(),
            room in 2000usize..MAX_FRAME,
            v6 in any::<bool>(),
        ) {
            let flags = flags & !(tcp::SYN | tcp::RST | tcp::URG);
            let (frame, off) = super_frame_of(v6, &payload, mss, flags, seq_id, (partial, true));
            // VXLAN, inner Ethernet, IP and TCP headers in front of each chunk's payload.
            let headers = vxlan::HEADER_LEN + 14 + if v6 { 40 } else { 20 } + 20;
            let mut joined = Vec::new();
            let mut seq = seq_id.0;
            for (bytes, o) in pack_all(&frame, off, room) {
                prop_assert!(bytes.len() <= room);
                for d in kernel_split(&bytes, &o) {
                    let (_, s, _, data) = read_segment(&d, true);
                    prop_assert_eq!(s, seq);
                    seq = seq.wrapping_add(data.len() as u32);
                }
                if o.gso != GsoType::UdpL4 {
                    joined.extend_from_slice(&bytes[OUTER + headers..]);
                    continue;
                }
                let mut rx = bytes.clone();
                let c = coalesce_tcp(&mut rx[OUTER..], usize::from(o.gso_size)).unwrap();
                let inner = &mut rx[OVERHEAD_V4..OVERHEAD_V4 + c.len];
                complete(inner, &c.offload);
                let kind = if v6 { GsoType::TcpV6 } else { GsoType::TcpV4 };
                prop_assert_eq!(c.offload.gso, kind);
                prop_assert_eq!(usize::from(c.offload.gso_size), usize::from(o.gso_size) - headers);
                let (_, _, _, data) = read_segment(inner, false);
                joined.extend_from_slice(&data);
            }
            prop_assert_eq!(&joined, &payload);
            // One frame for all: the joined super-frame is the sent one, byte for byte.
            let all = pack_all(&frame, off, MAX_FRAME);
            if all.len() == 1 && all[0].1.gso == GsoType::UdpL4 {
                let mut rx = all[0].0.clone();
                let c = coalesce_tcp(&mut rx[OUTER..], usize::from(all[0].1.gso_size)).unwrap();
                let inner = &mut rx[OVERHEAD_V4..OVERHEAD_V4 + c.len];
                complete(inner, &c.offload);
                let mut sent = frame.clone();
                complete(&mut sent, &off);
                prop_assert_eq!(&inner[..], &sent[OVERHEAD_V4..]);
            }
        }
    }
}
