//! Frames longer than a V2 slot: with `PACKET_COPY_THRESH` the kernel writes what fits into the
//! slot, marks it `TP_STATUS_COPY` and queues the whole frame on the socket, in slot order
//! (`tpacket_rcv` queues it before it sets the slot's status). The RX half receives each such
//! frame into a buffer of its own when it reaches the slot, so a ring of small slots carries
//! small-frame bursts and GSO super-frames alike.

use std::os::fd::RawFd;
use std::slice::ChunksExactMut;

use super::super::egress::VLAN_TAG_LEN;
use super::config::{tpacket_align, LONG_BUF};
use super::rx::{rx_frame, RxHdr};
use super::socket::recv_queued;
use crate::frame::{Frame, PortId, HEADROOM};
use crate::wire::vnet::VNET_HDR_LEN;

/// Where a long frame's Ethernet header starts in its buffer: room for the headroom and a
/// written-back tag, with the network header of a plain frame on a 16-byte boundary.
const LONG_MAC: usize = tpacket_align(HEADROOM + VLAN_TAG_LEN + 14) - 14;

// A long frame has its headroom after a tag is written back, its virtio-net header in front,
// an aligned network header, and a 64 KiB GSO frame with two tags fits its buffer.
const _: () = assert!(LONG_MAC - VLAN_TAG_LEN >= HEADROOM && LONG_MAC >= VNET_HDR_LEN);
const _: () = assert!((LONG_MAC + 14).is_multiple_of(16));
const _: () = assert!(LONG_MAC + 65535 + 14 + 2 * VLAN_TAG_LEN <= LONG_BUF);

/// The buffers of one RX half for frames longer than a slot ([`LONG_BUF`] bytes each). They
/// are allocated zeroed, so the pages of buffers no long frame ever used are never touched.
#[derive(Debug)]
pub(super) struct LongFrames {
    bufs: Vec<u8>,
}

impl LongFrames {
    /// `count` buffers.
    pub(super) fn new(count: usize) -> LongFrames {
        LongFrames {
            bufs: vec![0; count * LONG_BUF],
        }
    }

    /// The buffers, all free again: the frames of the previous batch are gone.
    pub(super) fn spare(&mut self, fd: RawFd) -> Spare<'_> {
        Spare {
            chunks: self.bufs.chunks_exact_mut(LONG_BUF),
            fd,
        }
    }
}

/// The buffers a batch has not used yet.
pub(super) struct Spare<'a> {
    chunks: ChunksExactMut<'a, u8>,
    fd: RawFd,
}

impl<'a> Spare<'a> {
    /// Whether a long frame can still be taken.
    #[inline]
    pub(super) fn any(&self) -> bool {
        self.chunks.len() > 0
    }

    /// Receives the queued frame of slot header `slot` (a V2 header of `hdrlen` bytes whose
    /// status has `TP_STATUS_COPY`) into the next buffer; `None` when it is inconsistent (the
    /// queued frame is consumed anyway, so queue and ring stay in step).
    pub(super) fn take(&mut self, slot: &RxHdr, hdrlen: usize, id: PortId) -> Option<Frame<'a>> {
        let buf = self.chunks.next()?;
        let room = buf.len() - (LONG_MAC - VNET_HDR_LEN);
        let got = recv_queued(self.fd, &mut buf[LONG_MAC - VNET_HDR_LEN..]).ok()?;
        let len = got.checked_sub(VNET_HDR_LEN)?;
        if got > room || len != slot.len as usize {
            return None;
        }
        let hdr = RxHdr {
            snaplen: slot.len,
            mac: u16::try_from(hdrlen + LONG_MAC).ok()?,
            ..*slot
        };
        rx_frame(buf, &hdr, hdrlen, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_gets_every_buffer_once() {
        let mut long = LongFrames::new(3);
        let mut spare = long.spare(-1);
        assert!(spare.any());
        for _ in 0..3 {
            assert!(spare.chunks.next().is_some());
        }
        assert!(!spare.any());
    }
}
