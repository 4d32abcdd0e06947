//! The receiving half of an AF_PACKET port: walks the RX ring with the socket's TPACKET
//! version ([`V2Walk`] or [`V3Walk`]) and turns each ring frame into a pipeline frame.

use std::io;
use std::os::fd::RawFd;

use super::super::egress::{retag_offload, VLAN_TAG_LEN};
use super::super::{KernelPortStats, RxPort};
use super::config::RxRing;
use super::long::{LongFrames, Spare};
use super::ring::{Claims, RingArea};
use super::socket::packet_statistics;
use super::v2::V2Walk;
use super::v3::V3Walk;
use crate::batch::Batch;
use crate::frame::{Frame, Meta, PortId, HEADROOM};
use crate::wire::vnet::{read_vnet, VNET_HDR_LEN};

/// The fields of a V2 or V3 frame header the RX path uses.
#[derive(Clone, Copy, Debug)]
pub(super) struct RxHdr {
    pub(super) status: u32,
    pub(super) len: u32,
    pub(super) snaplen: u32,
    pub(super) mac: u16,
    pub(super) vlan_tci: u16,
    pub(super) vlan_tpid: u16,
}

/// What a walk found at its read position.
pub(super) enum Next<'a> {
    /// A frame's header and its area (from right after its `sockaddr_ll` to the end of what
    /// the ring gives it), user space's until the walk's `release`.
    Frame(RxHdr, &'a mut [u8]),
    /// A frame whose ring header was inconsistent: skipped.
    Malformed,
    /// Nothing more for now (the kernel owns the next slot or block, or user space holds as
    /// much as it may).
    Empty,
}

/// How one TPACKET version walks the RX ring.
pub(super) trait Walk {
    /// Where a frame's area starts after its header (`TPACKET2_HDRLEN`/`TPACKET3_HDRLEN`).
    const HDRLEN: usize;
    /// The frame at the read position, consumed; `Empty` instead when it is a long frame
    /// (`TP_STATUS_COPY`) and `long_ok` is false.
    fn next<'a>(&mut self, claims: &mut Claims<'a>, long_ok: bool) -> Next<'a>;
    /// Gives everything handed out so far back to the kernel.
    fn release(&mut self, area: &RingArea);
}

/// How the RX half walks its ring: per slot (V2) or per block (V3).
#[derive(Debug)]
pub(super) enum RxWalk {
    V2(V2Walk),
    V3(V3Walk),
}

impl RxWalk {
    /// The walk of `ring` (pages of `page` bytes); the reason when the ring is not valid.
    pub(super) fn new(ring: RxRing, page: usize) -> Result<RxWalk, &'static str> {
        Ok(match ring {
            RxRing::V2 {
                frame_size,
                frame_count,
            } => RxWalk::V2(V2Walk::new(frame_size, frame_count, page)?),
            RxRing::V3 {
                block_size,
                block_count,
                retire_ms,
            } => RxWalk::V3(V3Walk::new(block_size, block_count, retire_ms, page)?),
        })
    }

    /// `(block_size, block_count)` of the ring.
    pub(super) fn blocks(&self) -> (usize, usize) {
        match self {
            RxWalk::V2(w) => (w.block_size, w.block_count),
            RxWalk::V3(w) => (w.block_size, w.block_count),
        }
    }
}

/// The receiving half of an AF_PACKET port: walks the RX ring slot by slot (V2) or block by
/// block (V3).
#[derive(Debug)]
pub struct AfPacketRx {
    id: PortId,
    area: RingArea,
    walk: RxWalk,
    /// Buffers for the frames longer than a V2 slot.
    long: LongFrames,
    /// Frames skipped because their ring header or virtio-net header was inconsistent.
    malformed: u64,
}

impl AfPacketRx {
    /// The RX half of port `id` over the RX ring `area`, read with `walk`, with `long`
    /// buffers for frames longer than a V2 slot.
    pub(super) fn new(id: PortId, area: RingArea, walk: RxWalk, long: usize) -> AfPacketRx {
        AfPacketRx {
            id,
            area,
            walk,
            long: LongFrames::new(long),
            malformed: 0,
        }
    }

    /// Frames skipped since opening because the ring or virtio-net header was inconsistent (or
    /// the frame was truncated to fit a slot or block).
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// The ring in use, as opened: for V2 the slot count is the one laid out (whole blocks).
    pub fn ring(&self) -> RxRing {
        match &self.walk {
            RxWalk::V2(w) => RxRing::V2 {
                frame_size: w.frame_size,
                frame_count: w.frame_count,
            },
            RxWalk::V3(w) => RxRing::V3 {
                block_size: w.block_size,
                block_count: w.block_count,
                retire_ms: w.retire_ms,
            },
        }
    }
}

/// Fills `batch` from the ring with walk `W`, long frames into `long`'s buffers; returns how
/// many frames were added.
#[inline]
fn fill<'a, W: Walk>(
    walk: &mut W,
    mut claims: Claims<'a>,
    long: &mut Spare<'a>,
    batch: &mut Batch<'a>,
    id: PortId,
    malformed: &mut u64,
) -> usize {
    let mut n = 0;
    while !batch.is_full() {
        let frame = match walk.next(&mut claims, long.any()) {
            Next::Frame(hdr, _) if hdr.status & libc::TP_STATUS_COPY != 0 => {
                long.take(&hdr, W::HDRLEN, id)
            }
            Next::Frame(hdr, area) => rx_frame(area, &hdr, W::HDRLEN, id),
            Next::Malformed => None,
            Next::Empty => break,
        };
        match frame {
            Some(frame) => {
                if batch.push(frame).is_err() {
                    break;
                }
                n += 1;
            }
            None => *malformed += 1,
        }
    }
    n
}

impl RxPort for AfPacketRx {
    fn rx<'a>(&'a mut self, batch: &mut Batch<'a>) -> io::Result<usize> {
        self.release();
        let AfPacketRx {
            id,
            area,
            walk,
            long,
            malformed,
        } = self;
        let mut spare = long.spare(area.fd());
        let claims = area.claims();
        Ok(match walk {
            RxWalk::V2(w) => fill(w, claims, &mut spare, batch, *id, malformed),
            RxWalk::V3(w) => fill(w, claims, &mut spare, batch, *id, malformed),
        })
    }

    fn release(&mut self) {
        match &mut self.walk {
            RxWalk::V2(w) => w.release(&self.area),
            RxWalk::V3(w) => w.release(&self.area),
        }
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.area.fd())
    }

    /// `PACKET_STATISTICS` (the kernel clears them on read).
    fn kernel_stats(&self) -> io::Result<KernelPortStats> {
        packet_statistics(self.area.fd())
    }
}

/// Turns the area of one ring frame (which starts right after its `sockaddr_ll`, `hdrlen`
/// bytes after its header) into a pipeline frame: reads the virtio-net header, writes a
/// stripped VLAN tag back and checks the headroom. `None` for an inconsistent frame.
pub(super) fn rx_frame<'a>(
    area: &'a mut [u8],
    hdr: &RxHdr,
    hdrlen: usize,
    id: PortId,
) -> Option<Frame<'a>> {
    let snaplen = hdr.snaplen as usize;
    if snaplen != hdr.len as usize {
        return None;
    }
    let mac = usize::from(hdr.mac).checked_sub(hdrlen)?;
    let vnet_at = mac.checked_sub(VNET_HDR_LEN)?;
    if mac.checked_add(snaplen)? > area.len() {
        return None;
    }
    let mut offload = read_vnet(&area[vnet_at..mac]).ok()?;
    let mut head = mac;
    let mut len = snaplen;
    if hdr.status & libc::TP_STATUS_VLAN_VALID != 0 {
        let tpid = if hdr.status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
            hdr.vlan_tpid
        } else {
            libc::ETH_P_8021Q as u16
        };
        if len < 12 || head < VLAN_TAG_LEN {
            return None;
        }
        area.copy_within(head..head + 12, head - VLAN_TAG_LEN);
        head -= VLAN_TAG_LEN;
        len += VLAN_TAG_LEN;
        area[head + 12..head + 14].copy_from_slice(&tpid.to_be_bytes());
        area[head + 14..head + 16].copy_from_slice(&hdr.vlan_tci.to_be_bytes());
        offload = retag_offload(&offload, VLAN_TAG_LEN as isize);
    }
    if head < HEADROOM {
        return None;
    }
    let meta = Meta {
        ingress: id,
        offload,
        ..Meta::default()
    };
    Frame::new(area, head, len, meta)
}
