//! A frame in flight: a byte buffer with headroom, the Ethernet frame inside it, and the metadata
//! every pipeline stage reads and writes (ingress port, VLAN, offload state, verdict).
//!
//! Frames borrow their bytes: from an mmap'ed RX ring (zero-copy) or from a preallocated buffer
//! pool. Nothing here allocates.

use serde::{Deserialize, Serialize};

use crate::counters::DropReason;

/// Index of an attached interface in the dataplane's port table.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, Debug, Default, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct PortId(pub u16);

/// Index of a network (one bridge domain, one subnet, one gateway) in the configuration.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, Debug, Default, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct NetworkId(pub u16);

/// Bytes the I/O layers keep free in front of every frame, so that stages can prepend headers
/// (an 802.1Q tag, the 28 bytes an ICMP error grows by) without moving the frame.
pub const HEADROOM: usize = 64;

/// Segmentation offload kind, as carried by a virtio-net header (`VIRTIO_NET_HDR_GSO_*`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum GsoType {
    /// An ordinary frame, at most one MTU.
    #[default]
    None,
    /// A TCP/IPv4 super-frame to be cut into `gso_size` segments.
    TcpV4,
    /// A TCP/IPv6 super-frame.
    TcpV6,
    /// A UDP super-frame cut into datagrams (USO, `VIRTIO_NET_HDR_GSO_UDP_L4`).
    UdpL4,
    /// A TCP/IPv4 super-frame inside a VXLAN/IPv4 encapsulation (Linux's `SKB_GSO_UDP_TUNNEL`
    /// on `SKB_GSO_TCPV4`): no port takes it, so the runtime cuts it into encapsulated
    /// `gso_size` segments on transmission (see `pipeline::segment`) and sends them packed into
    /// UDP GSO frames ([`GsoType::UdpL4`], see `pipeline::udp_gso`).
    TcpV4Vxlan,
    /// A TCP/IPv6 super-frame inside a VXLAN/IPv4 encapsulation: cut and packed as
    /// [`GsoType::TcpV4Vxlan`] is.
    TcpV6Vxlan,
    /// A UDP super-frame (USO, inner IPv4 or IPv6) inside a VXLAN/IPv4 encapsulation: cut into
    /// encapsulated `gso_size` datagrams and packed as [`GsoType::TcpV4Vxlan`] is.
    UdpL4Vxlan,
}

impl GsoType {
    /// True for a super-frame inside a VXLAN encapsulation, which the runtime cuts itself.
    #[inline]
    pub fn is_tunnel(self) -> bool {
        matches!(
            self,
            GsoType::TcpV4Vxlan | GsoType::TcpV6Vxlan | GsoType::UdpL4Vxlan
        )
    }
}

/// Offload state of a frame: what the kernel still has to do when it leaves sluice.
///
/// Rewrites must keep it true: a checksum-partial frame keeps only the pseudo-header sum in its
/// L4 checksum field, so NAT updates that sum for address changes and leaves port changes to the
/// device that completes the checksum.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Offload {
    /// Segmentation still to be done.
    pub gso: GsoType,
    /// ECN bit of the GSO type (`VIRTIO_NET_HDR_GSO_ECN`).
    pub gso_ecn: bool,
    /// Payload bytes per segment when `gso` is not `None`.
    pub gso_size: u16,
    /// Length of the headers (Ethernet to L4) in front of the payload.
    pub hdr_len: u16,
    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the L4 checksum is partial (pseudo-header only).
    pub csum_partial: bool,
    /// Where checksumming starts, from the first byte of the Ethernet header.
    pub csum_start: u16,
    /// Where the checksum is stored, from `csum_start`.
    pub csum_offset: u16,
    /// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was already verified.
    pub data_valid: bool,
}

/// What happens to a frame once the pipeline is done with it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Verdict {
    /// Not decided yet (only seen inside the pipeline).
    #[default]
    Pending,
    /// Send out of one port.
    Forward(PortId),
    /// Send out of every port of this network that carries `vlan`, except the ingress port.
    Flood {
        /// The bridge domain to flood in.
        network: NetworkId,
        /// The VLAN inside that domain.
        vlan: u16,
    },
    /// Drop, counted under this reason.
    Drop(DropReason),
    /// Fully handled by sluice itself (e.g. an ARP reply it learned from); nothing to send.
    Consumed,
    /// A received VXLAN UDP GSO datagram whose chunks do not join into one super-frame (several
    /// flows, as a NIC's UDP GRO may mix them): the runtime cuts it into its datagrams and runs
    /// each through the pipeline on its own (`runtime::split_unjoined`).
    Split,
}

/// Everything the pipeline knows about a frame besides its bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Meta {
    /// The port the frame arrived on.
    pub ingress: PortId,
    /// The VLAN the frame belongs to inside sluice (0: untagged/none). Egress pushes or pops the
    /// 802.1Q tag to match each port's mode, so the bytes may still hold the ingress tag.
    pub vlan: u16,
    /// Offload state from the virtio-net header.
    pub offload: Offload,
    /// The decision.
    pub verdict: Verdict,
}

/// A frame: `buf[head..head + len]` is the Ethernet frame, the bytes before it are headroom and
/// the bytes after it tailroom.
#[derive(Debug)]
pub struct Frame<'a> {
    buf: &'a mut [u8],
    head: usize,
    len: usize,
    /// Metadata carried beside the bytes.
    pub meta: Meta,
}

/// Why a frame could not be resized inside its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not enough headroom in front of the frame.
    #[error("frame needs {needed} bytes of headroom, has {available}")]
    NoHeadroom {
        /// Bytes asked for.
        needed: usize,
        /// Bytes there.
        available: usize,
    },
    /// The buffer ends before the requested length.
    #[error("frame of {requested} bytes does not fit a buffer of {capacity}")]
    TooLong {
        /// Length asked for.
        requested: usize,
        /// Bytes available from the head.
        capacity: usize,
    },
}

impl<'a> Frame<'a> {
    /// Wraps `buf[head..head + len]` as a frame. Returns `None` when the range is outside `buf`.
    pub fn new(buf: &'a mut [u8], head: usize, len: usize, meta: Meta) -> Option<Self> {
        if head.checked_add(len)? > buf.len() {
            return None;
        }
        Some(Frame {
            buf,
            head,
            len,
            meta,
        })
    }

    /// The Ethernet frame.
    #[inline(always)]
    pub fn data(&self) -> &[u8] {
        &self.buf[self.head..self.head + self.len]
    }

    /// The Ethernet frame, writable in place.
    #[inline(always)]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.head..self.head + self.len]
    }

    /// Length of the Ethernet frame.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-length frame.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Free bytes in front of the frame.
    pub fn headroom(&self) -> usize {
        self.head
    }

    /// Bytes the frame could grow to at the back without moving.
    pub fn capacity(&self) -> usize {
        self.buf.len() - self.head
    }

    /// Moves the start of the frame `n` bytes earlier (the new bytes keep whatever the buffer
    /// held) and returns the whole frame.
    pub fn push_front(&mut self, n: usize) -> Result<&mut [u8], FrameError> {
        if n > self.head {
            return Err(FrameError::NoHeadroom {
                needed: n,
                available: self.head,
            });
        }
        self.head -= n;
        self.len += n;
        Ok(self.data_mut())
    }

    /// Drops `n` bytes from the front of the frame (clamped to its length).
    pub fn pull_front(&mut self, n: usize) {
        let n = n.min(self.len);
        self.head += n;
        self.len -= n;
    }

    /// Sets the frame's length, growing into tailroom or truncating.
    pub fn set_len(&mut self, len: usize) -> Result<(), FrameError> {
        if len > self.capacity() {
            return Err(FrameError::TooLong {
                requested: len,
                capacity: self.capacity(),
            });
        }
        self.len = len;
        Ok(())
    }

    /// The whole buffer and the frame's position in it, for stages that rebuild a frame around
    /// bytes it already holds (ICMP errors quote the original header in place).
    pub fn raw_parts(&mut self) -> (&mut [u8], usize, usize) {
        (self.buf, self.head, self.len)
    }

    /// Re-points the frame inside its buffer after a `raw_parts` rebuild.
    pub fn set_bounds(&mut self, head: usize, len: usize) -> Result<(), FrameError> {
        if head + len > self.buf.len() {
            return Err(FrameError::TooLong {
                requested: head + len,
                capacity: self.buf.len(),
            });
        }
        self.head = head;
        self.len = len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_rejects_out_of_range() {
        let mut buf = [0u8; 10];
        assert!(Frame::new(&mut buf, 4, 7, Meta::default()).is_none());
        assert!(Frame::new(&mut buf, usize::MAX, 2, Meta::default()).is_none());
        assert!(Frame::new(&mut buf, 4, 6, Meta::default()).is_some());
    }

    #[test]
    fn push_and_pull_front_move_the_head() {
        let mut buf = [0u8; 16];
        buf[4] = 0xaa;
        let mut f = Frame::new(&mut buf, 4, 8, Meta::default()).unwrap();
        assert_eq!(f.data()[0], 0xaa);
        assert!(f.push_front(5).is_err());
        f.push_front(4).unwrap()[0] = 0x11;
        assert_eq!((f.headroom(), f.len()), (0, 12));
        f.pull_front(4);
        assert_eq!(f.data()[0], 0xaa);
        f.pull_front(100);
        assert!(f.is_empty());
    }

    #[test]
    fn set_len_respects_tailroom() {
        let mut buf = [0u8; 16];
        let mut f = Frame::new(&mut buf, 4, 8, Meta::default()).unwrap();
        assert!(f.set_len(12).is_ok());
        assert!(f.set_len(13).is_err());
        assert_eq!(f.len(), 12);
    }
}
