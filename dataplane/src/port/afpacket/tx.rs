//! The transmitting half of an AF_PACKET port: fills TX ring slots (with the frame header of
//! the socket's TPACKET version) and kicks the kernel once per flush; a frame longer than a
//! slot goes out on its own with `sendmsg`.

use std::io;
use std::mem::offset_of;

use super::super::egress::{
    copy_retagged, retag_offload, retagged_parts, EgressError, VLAN_TAG_LEN,
};
use super::super::{TxError, TxPort};
use super::config::{AfPacketConfig, RX_RESERVE, V2_HDRLEN, V3_HDRLEN};
use super::ring::RingArea;
use super::socket::{Direct, Kick};
use crate::frame::{Frame, GsoType, Offload};
use crate::wire::vnet::{write_vnet, VNET_HDR_LEN};

/// Frames up to this many bytes leave a TX slot copied whole into the skb's linear part.
///
/// `tpacket_snd` copies only the first `hdr_len` bytes of a slot (at least the Ethernet
/// header) and attaches the rest as a zero-copy fragment of the ring's page; a veth then copies
/// that fragment again into a newly allocated page before it hands the frame to its peer
/// (`skb_copy_ubufs`), and the slot's completion runs through the fragment's callback. For a
/// small frame the page allocation and the second copy cost more than the copy they save
/// (64-byte UDP: about a fifth of the worker's TX time), so a small frame without GSO says
/// `hdr_len` = its whole length. The bytes sent do not change.
pub(super) const LINEAR_TX_MAX: usize = 256;

/// `off` with `hdr_len` covering the whole frame of `len` bytes when it is small and not a
/// GSO super-frame (see [`LINEAR_TX_MAX`]); unchanged otherwise.
#[inline]
pub(super) fn linear_if_small(mut off: Offload, len: usize) -> Offload {
    if off.gso == GsoType::None && len <= LINEAR_TX_MAX {
        off.hdr_len = len as u16;
    }
    off
}

/// Where a TX slot's fields are for the socket's header version (`tpacket_parse_header` reads
/// `tp_len` from the version's header and the data at `HDRLEN - sizeof(sockaddr_ll)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct TxLayout {
    /// Offset of `tp_status`.
    pub(super) status: usize,
    /// Offset of `tp_len`.
    pub(super) len: usize,
    /// Offset of the data (virtio-net header, then the frame).
    pub(super) data: usize,
    /// V3: `tp_next_offset` (offset 0) must be written 0.
    zero_next_offset: bool,
}

impl TxLayout {
    pub(super) const V2: TxLayout = TxLayout {
        status: offset_of!(libc::tpacket2_hdr, tp_status),
        len: offset_of!(libc::tpacket2_hdr, tp_len),
        data: V2_HDRLEN - std::mem::size_of::<libc::sockaddr_ll>(),
        zero_next_offset: false,
    };
    pub(super) const V3: TxLayout = TxLayout {
        status: offset_of!(libc::tpacket3_hdr, tp_status),
        len: offset_of!(libc::tpacket3_hdr, tp_len),
        data: V3_HDRLEN - std::mem::size_of::<libc::sockaddr_ll>(),
        zero_next_offset: true,
    };
}

/// The TX ring's layout: fixed-size slots, whole slots per block.
#[derive(Clone, Copy, Debug)]
pub(super) struct TxGeometry {
    frame_size: usize,
    frames_per_block: usize,
    block_size: usize,
    block_count: usize,
}

impl TxGeometry {
    /// The TX ring of `c` (pages of `page` bytes, slot headers of `hdrlen` bytes); the reason
    /// when it is not valid.
    pub(super) fn new(
        c: &AfPacketConfig,
        page: usize,
        hdrlen: usize,
    ) -> Result<TxGeometry, &'static str> {
        if c.tx_block_size == 0 || !c.tx_block_size.is_multiple_of(page) || c.tx_block_count == 0 {
            return Err("TX blocks must be a non-zero multiple of the page size");
        }
        if !c.tx_frame_size.is_multiple_of(libc::TPACKET_ALIGNMENT)
            || c.tx_frame_size < hdrlen + RX_RESERVE
            || c.tx_frame_size > c.tx_block_size
        {
            return Err("TX frames must be 16-byte multiples that fit a block");
        }
        Ok(TxGeometry {
            frame_size: c.tx_frame_size,
            frames_per_block: c.tx_block_size / c.tx_frame_size,
            block_size: c.tx_block_size,
            block_count: c.tx_block_count,
        })
    }

    /// Size of a slot.
    pub(super) fn frame_size(&self) -> usize {
        self.frame_size
    }

    /// Size of the ring in bytes.
    pub(super) fn len(&self) -> usize {
        self.block_size * self.block_count
    }

    /// Number of slots.
    pub(super) fn frame_count(&self) -> usize {
        self.frames_per_block * self.block_count
    }

    /// `(block_size, block_count, frame_size, frame_count)`, for the ring request.
    pub(super) fn request(&self) -> (usize, usize, usize, usize) {
        (
            self.block_size,
            self.block_count,
            self.frame_size,
            self.frame_count(),
        )
    }

    /// Offset of slot `i` (`i < frame_count`) in the ring.
    #[inline]
    fn slot(&self, i: usize) -> usize {
        i / self.frames_per_block * self.block_size + i % self.frames_per_block * self.frame_size
    }
}

/// The transmitting half of an AF_PACKET port: fills TX ring slots, kicks once per flush.
#[derive(Debug)]
pub struct AfPacketTx {
    area: RingArea,
    layout: TxLayout,
    geometry: TxGeometry,
    frame_count: usize,
    /// The next slot to fill.
    head: usize,
    /// Slots were marked for sending since the last successful kick.
    kick: bool,
    /// The `sendto` that sends them.
    kicker: Kick,
    /// The socket for frames longer than a slot (none when a slot holds a GSO frame).
    direct: Option<Direct>,
}

impl AfPacketTx {
    /// The TX half over the TX ring `area`, laid out as `geometry` with slot headers of
    /// `layout`.
    pub(super) fn new(
        area: RingArea,
        layout: TxLayout,
        geometry: TxGeometry,
        kicker: Kick,
        direct: Option<Direct>,
    ) -> AfPacketTx {
        AfPacketTx {
            area,
            layout,
            geometry,
            frame_count: geometry.frame_count(),
            head: 0,
            kick: false,
            kicker,
            direct,
        }
    }

    /// Number of TX slots.
    pub fn slots(&self) -> usize {
        self.frame_count
    }

    /// The socket of the TX ring and the one frames longer than a slot leave through.
    #[cfg(test)]
    pub(super) fn sockets(&self) -> (std::os::fd::RawFd, Option<std::os::fd::RawFd>) {
        (self.area.fd(), self.direct.as_ref().map(Direct::fd))
    }
}

impl AfPacketTx {
    /// Sends a frame longer than a slot with `sendmsg` on the direct socket, gathered from the
    /// frame itself (no copy in user space; the kernel copies it once into the skb, as it
    /// copies a ring slot's pages again when veth forwards them). The slots marked before it
    /// are kicked first, so the frames of a flow leave in order.
    fn send_long(&mut self, frame: &Frame<'_>, tag: Option<u16>) -> Result<(), TxError> {
        let parts = retagged_parts(frame.data(), tag)?;
        let delta = parts.len() as isize - frame.len() as isize;
        let mut vnet = [0; VNET_HDR_LEN];
        write_vnet(&retag_offload(&frame.meta.offload, delta), &mut vnet)?;
        self.flush()?;
        let Some(direct) = &self.direct else {
            return Err(EgressError::NoRoom {
                needed: parts.len(),
                available: self.geometry.frame_size - self.layout.data - VNET_HDR_LEN,
            }
            .into());
        };
        let all = [
            &vnet[..],
            parts.macs,
            &parts.tag[..parts.tag_len],
            parts.rest,
        ];
        direct.send(&all).map_err(|e| match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::ENOBUFS) | Some(libc::EINTR) => TxError::Full,
            _ => TxError::Io(e),
        })
    }
}

impl TxPort for AfPacketTx {
    fn send(&mut self, frame: &Frame<'_>, tag: Option<u16>) -> Result<(), TxError> {
        let l = self.layout;
        if frame.len() + VLAN_TAG_LEN > self.geometry.frame_size - l.data - VNET_HDR_LEN {
            return self.send_long(frame, tag);
        }
        let slot = self.geometry.slot(self.head);
        if self.area.status(slot + l.status) != libc::TP_STATUS_AVAILABLE {
            return Err(TxError::Full);
        }
        // The slot is AVAILABLE, so the kernel does not touch it until we mark it.
        let data = self
            .area
            .bytes_mut(slot + l.data, self.geometry.frame_size - l.data);
        let (vnet, eth) = data.split_at_mut(VNET_HDR_LEN);
        let len = copy_retagged(frame, tag, eth)?;
        let delta = len as isize - frame.len() as isize;
        write_vnet(
            &linear_if_small(retag_offload(&frame.meta.offload, delta), len),
            vnet,
        )?;
        let tp_len = (VNET_HDR_LEN + len) as u32;
        if l.zero_next_offset {
            self.area.write_u32(slot, 0);
        }
        self.area.write_u32(slot + l.len, tp_len);
        self.area
            .set_status(slot + l.status, libc::TP_STATUS_SEND_REQUEST);
        self.head = (self.head + 1) % self.frame_count;
        self.kick = true;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.kick {
            return Ok(());
        }
        match self.kicker.send(self.area.fd()) {
            Ok(()) => {
                self.kick = false;
                Ok(())
            }
            // The send buffer or the device queue is full: the remaining slots stay marked and
            // go out with the next flush.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EAGAIN) | Some(libc::ENOBUFS) | Some(libc::EINTR)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csum_partial(hdr_len: u16) -> Offload {
        Offload {
            hdr_len,
            csum_partial: true,
            csum_start: 34,
            csum_offset: 6,
            ..Offload::default()
        }
    }

    /// A small frame without GSO asks for a whole linear copy; its other fields stay.
    #[test]
    fn small_frames_are_sent_linear() {
        let off = linear_if_small(csum_partial(0), 64);
        assert_eq!(
            off,
            Offload {
                hdr_len: 64,
                ..csum_partial(0)
            }
        );
        assert_eq!(
            linear_if_small(Offload::default(), LINEAR_TX_MAX).hdr_len,
            LINEAR_TX_MAX as u16
        );
    }

    /// Larger frames and GSO super-frames keep the header length they came with.
    #[test]
    fn large_and_gso_frames_keep_their_header_length() {
        assert_eq!(
            linear_if_small(csum_partial(42), LINEAR_TX_MAX + 1),
            csum_partial(42)
        );
        let gso = Offload {
            gso: GsoType::TcpV4,
            gso_size: 1448,
            ..csum_partial(66)
        };
        assert_eq!(linear_if_small(gso, 200), gso);
    }
}
