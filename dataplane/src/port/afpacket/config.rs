//! The ring geometry and socket options of an AF_PACKET port, the constants the kernel's frame
//! headers imply, and the errors of opening one.

use std::io;

use super::super::egress::VLAN_TAG_LEN;
use crate::frame::HEADROOM;
use crate::wire::vnet::VNET_HDR_LEN;

/// `TPACKET_ALIGN`.
pub(super) const fn tpacket_align(x: usize) -> usize {
    (x + libc::TPACKET_ALIGNMENT - 1) & !(libc::TPACKET_ALIGNMENT - 1)
}

/// Size of `tpacket2_hdr` + `sockaddr_ll` (52): where a V2 slot's frame area begins.
pub(super) const V2_HDRLEN: usize = libc::TPACKET2_HDRLEN;
/// Size of `tpacket3_hdr` + `sockaddr_ll` (68): where a V3 frame's area begins.
pub(super) const V3_HDRLEN: usize = libc::TPACKET3_HDRLEN;

/// The `PACKET_RESERVE` a header of `hdrlen` bytes needs: enough that a frame whose header
/// already holds one tag (maclen 18) still has `HEADROOM` bytes after a second tag is written
/// back, rounded up so that the network header (`tp_net`) of a plain frame is 16-byte aligned.
pub(super) const fn reserve_for(hdrlen: usize) -> usize {
    // `tp_mac` for a plain Ethernet header (maclen 14) without reserve.
    let mac_no_reserve = tpacket_align(hdrlen + 16) + VNET_HDR_LEN - 14;
    let needed = HEADROOM + VLAN_TAG_LEN + VLAN_TAG_LEN + hdrlen - mac_no_reserve;
    let net = tpacket_align(hdrlen + 16) + VNET_HDR_LEN + needed;
    needed + (libc::TPACKET_ALIGNMENT - net % libc::TPACKET_ALIGNMENT) % libc::TPACKET_ALIGNMENT
}

/// `PACKET_RESERVE` for the RX ring (54), valid for both header versions (they need the same).
pub const RX_RESERVE: usize = {
    let (v2, v3) = (reserve_for(V2_HDRLEN), reserve_for(V3_HDRLEN));
    if v2 > v3 {
        v2
    } else {
        v3
    }
};

/// The RX ring flavour, which also sets the socket's `PACKET_VERSION` (and so the TX ring's
/// frame header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxRing {
    /// TPACKET_V2: fixed slots, each handed over as soon as the kernel wrote it (low latency).
    V2 {
        /// Size of a slot (a multiple of 16). A frame longer than
        /// `frame_size - (tp_mac offset, ~130 bytes)` is truncated and skipped (counted in
        /// [`AfPacketRx::malformed`](super::AfPacketRx::malformed)), so 64 KiB GSO frames need about 66 KiB.
        frame_size: usize,
        /// Number of slots wanted; rounded up to whole blocks (see [`v2_geometry`]). At most
        /// half of them are handed out at once, so a batch holds at most `frame_count / 2`
        /// frames.
        frame_count: usize,
    },
    /// TPACKET_V3: frames packed into blocks, handed over per block (high density, latency up
    /// to `retire_ms` under light load).
    V3 {
        /// Size of a block (a multiple of the page size); one frame must fit a block, so at
        /// least 128 KiB for 64 KiB GSO frames. Under light load the kernel hands over a block
        /// per retire timeout however little it holds, so the ring absorbs
        /// `block_count x retire_ms` of reader stall: prefer many moderate blocks.
        block_size: usize,
        /// Number of blocks.
        block_count: usize,
        /// Block retire timeout in milliseconds: the latency bound under light load.
        retire_ms: u32,
    },
}

impl RxRing {
    /// `HDRLEN` of the socket's frame header version.
    pub(super) fn hdrlen(&self) -> usize {
        match self {
            RxRing::V2 { .. } => V2_HDRLEN,
            RxRing::V3 { .. } => V3_HDRLEN,
        }
    }
}

/// Block layout of a V2 RX ring for `frame_size`-byte slots: `(block_size, frames_per_block,
/// block_count)`, or `None` when the sizes overflow. The kernel allocates each block as a
/// power-of-two number of pages (`get_order(tp_block_size)`), so blocks are powers of two, at
/// least a page and at least 8 slots: the tail of a block that holds no whole slot, wasted
/// memory, then stays below 1/8 of the ring. `frame_count` is rounded up to whole blocks.
pub fn v2_geometry(
    frame_size: usize,
    frame_count: usize,
    page: usize,
) -> Option<(usize, usize, usize)> {
    if frame_size == 0 || frame_count == 0 {
        return None;
    }
    let block_size = frame_size
        .checked_mul(8)?
        .max(page)
        .checked_next_power_of_two()?;
    let per_block = block_size / frame_size;
    Some((block_size, per_block, frame_count.div_ceil(per_block)))
}

/// Ring geometry and socket options of an AF_PACKET port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AfPacketConfig {
    /// The RX ring, and with it the socket's TPACKET version.
    pub rx_ring: RxRing,
    /// Size of a TX frame slot (a multiple of 16); the default holds a 64 KiB GSO frame.
    pub tx_frame_size: usize,
    /// Size of a TX block (a multiple of the page size, holding whole frames).
    pub tx_block_size: usize,
    /// Number of TX blocks.
    pub tx_block_count: usize,
    /// Join the interface's `PACKET_FANOUT_HASH` group (group id = ifindex), for several
    /// workers reading the same interface: each flow goes to one socket.
    pub fanout: bool,
    /// `PACKET_QDISC_BYPASS`: transmit straight to the driver, skipping the qdisc layer.
    pub qdisc_bypass: bool,
    /// V2 only: buffers of [`LONG_BUF`] bytes for frames longer than a slot. With any, the
    /// kernel queues such a frame on the socket (`PACKET_COPY_THRESH`) and marks its slot
    /// `TP_STATUS_COPY`, and the RX half receives it into a buffer, so a ring of small slots
    /// still passes GSO super-frames (see [`mixed_rx`]); with none they are dropped.
    pub rx_long_buffers: usize,
}

/// Size of a buffer for an RX frame longer than a V2 slot: a 64 KiB GSO frame with its
/// virtio-net header and headroom.
pub const LONG_BUF: usize = 68 << 10;

/// The slot size of a mixed V2 ring: a 1500-byte-MTU frame with a tag fits behind the slot
/// header, the reserve and the virtio-net header (~130 bytes).
pub const SMALL_SLOT: usize = 2048;

/// The mixed RX layout for `budget` bytes per port and worker, as `(ring, long buffers)`:
/// [`SMALL_SLOT`]-byte V2 slots, so that bursts of small frames find many slots, and
/// [`LONG_BUF`]-byte buffers for the GSO super-frames the slots cannot hold. Half of the budget
/// (at least one buffer) goes to the buffers, the rest to slots in whole blocks (at least one
/// block), so the total stays within the budget unless the budget is below one buffer and one
/// block. A V2 ring of 68 KiB slots spends 68 KiB on every 64-byte frame: the old default of
/// 30 such slots (2 MiB) becomes 512 slots and 15 buffers.
pub fn mixed_rx(budget: usize, page: usize) -> (RxRing, usize) {
    let long = (budget / 2 / LONG_BUF).max(1);
    let per_block = v2_geometry(SMALL_SLOT, 1, page).map_or(1, |(_, per_block, _)| per_block);
    let slots = budget.saturating_sub(long * LONG_BUF) / SMALL_SLOT / per_block * per_block;
    let ring = RxRing::V2 {
        frame_size: SMALL_SLOT,
        frame_count: slots.max(per_block),
    };
    (ring, long)
}

/// The default V2 RX ring: 68 KiB slots (a 64 KiB GSO frame plus the ~130 bytes in front of it),
/// 256 wanted, which [`v2_geometry`] lays out as 18 blocks of 1 MiB holding 15 slots each:
/// 270 slots, 18 MiB.
pub const DEFAULT_RX_V2: RxRing = RxRing::V2 {
    frame_size: 68 << 10,
    frame_count: 256,
};

/// The V3 RX ring sluice used before V2 became the default: 16 MiB (64 x 256 KiB blocks; with
/// the 1 ms retire timer a worker may stall for about 64 ms under light load before the ring
/// overflows).
pub const DEFAULT_RX_V3: RxRing = RxRing::V3 {
    block_size: 256 << 10,
    block_count: 64,
    retire_ms: 1,
};

impl Default for AfPacketConfig {
    /// RX: [`DEFAULT_RX_V2`] (18 MiB). TX: 270 slots of 68 KiB (18 blocks of 1 MiB, 15 slots
    /// each, 18 MiB).
    fn default() -> Self {
        AfPacketConfig {
            rx_ring: DEFAULT_RX_V2,
            tx_frame_size: 68 << 10,
            tx_block_size: 1 << 20,
            tx_block_count: 18,
            fanout: false,
            qdisc_bypass: true,
            rx_long_buffers: 0,
        }
    }
}

/// The setup step that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// `if_nametoindex`.
    Ifindex,
    /// `socket(AF_PACKET, SOCK_RAW)`.
    Socket,
    /// `PACKET_VERSION` (TPACKET_V2 or TPACKET_V3).
    Version,
    /// `PACKET_VNET_HDR`.
    VnetHdr,
    /// `PACKET_RESERVE`.
    Reserve,
    /// `PACKET_LOSS`.
    Loss,
    /// `PACKET_COPY_THRESH` and `SO_RCVBUF(FORCE)` for frames longer than a slot.
    CopyThresh,
    /// `PACKET_RX_RING`.
    RxRing,
    /// `PACKET_TX_RING`.
    TxRing,
    /// `mmap` of the rings.
    Mmap,
    /// `SO_SNDBUF(FORCE)`.
    SndBuf,
    /// `PACKET_QDISC_BYPASS`.
    QdiscBypass,
    /// `PACKET_IGNORE_OUTGOING`.
    IgnoreOutgoing,
    /// `bind` to the interface.
    Bind,
    /// `PACKET_ADD_MEMBERSHIP` (`PACKET_MR_PROMISC`).
    Promisc,
    /// `PACKET_FANOUT`.
    Fanout,
    /// `SO_ATTACH_BPF` of the flow offload's socket filter.
    Filter,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Step::Ifindex => "looking up the interface",
            Step::Socket => "creating the packet socket",
            Step::Version => "setting PACKET_VERSION",
            Step::VnetHdr => "enabling PACKET_VNET_HDR",
            Step::Reserve => "setting PACKET_RESERVE",
            Step::Loss => "setting PACKET_LOSS",
            Step::CopyThresh => "queueing long frames (PACKET_COPY_THRESH)",
            Step::RxRing => "setting up the RX ring",
            Step::TxRing => "setting up the TX ring",
            Step::Mmap => "mapping the rings",
            Step::SndBuf => "sizing the send buffer",
            Step::QdiscBypass => "setting PACKET_QDISC_BYPASS",
            Step::IgnoreOutgoing => "setting PACKET_IGNORE_OUTGOING",
            Step::Bind => "binding to the interface",
            Step::Promisc => "enabling promiscuous mode",
            Step::Fanout => "joining the fanout group",
            Step::Filter => "attaching the flow offload socket filter",
        };
        f.write_str(s)
    }
}

/// Why an AF_PACKET port could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AfPacketError {
    /// A system call failed.
    #[error("AF_PACKET port on {ifname}: {step}: {source}")]
    Os {
        /// The interface.
        ifname: String,
        /// What was being done.
        step: Step,
        /// The error.
        source: io::Error,
    },
    /// The configuration cannot describe valid rings.
    #[error("AF_PACKET port on {ifname}: bad ring geometry: {reason}")]
    Config {
        /// The interface.
        ifname: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Largest Ethernet frame (tag included) a TX slot of `config` holds (the data offset depends
/// on the header version the RX ring selects).
pub fn max_tx_frame(config: &AfPacketConfig) -> usize {
    let data = config.rx_ring.hdrlen() - std::mem::size_of::<libc::sockaddr_ll>();
    config.tx_frame_size.saturating_sub(data + VNET_HDR_LEN)
}
