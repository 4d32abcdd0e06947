//! AF_PACKET port: a `SOCK_RAW` packet socket bound to one interface (in the network namespace
//! the opening thread is in), with an mmap'ed RX ring (TPACKET_V2 by default, TPACKET_V3 on
//! request) and a TX ring, and the virtio-net header on both (`PACKET_VNET_HDR`), so that GSO
//! super-frames (up to 64 KiB) and checksum-partial frames pass through sluice unsegmented and
//! unchecksummed.
//!
//! # Ring layout
//!
//! One `mmap` covers the RX ring followed by the TX ring. `PACKET_VERSION` is per socket, so it
//! decides the frame header of both rings: `tpacket2_hdr` (32 bytes, `TPACKET2_HDRLEN` = 52 with
//! the `sockaddr_ll`) or `tpacket3_hdr` (48 bytes, `TPACKET3_HDRLEN` = 68). Offsets below are
//! from the start of a frame's header.
//!
//! RX, TPACKET_V2 ([`RxRing::V2`]): fixed-size frame slots, slot `i` at `i * frame_size` inside
//! its block (slots never straddle blocks). Each slot has its own `tp_status`: the kernel sets
//! `TP_STATUS_USER` and wakes `poll` as soon as it has written the frame, and takes the slot
//! back when user space writes `TP_STATUS_KERNEL`. Every slot must hold the largest frame, so
//! the ring holds few frames for its size; the RX half therefore holds at most half of the
//! slots at once (a batch is cut short), leaving the kernel room for a burst while the pipeline
//! works.
//!
//! RX, TPACKET_V3 ([`RxRing::V3`]): variable-size frames packed into blocks. Each block starts
//! with a `tpacket_block_desc` (`block_status`, `num_pkts`, `offset_to_first_pkt`); frames are
//! chained by `tp_next_offset`. The kernel hands a whole block to user space (`TP_STATUS_USER`)
//! when it is full or when the retire timer fires, and takes it back when user space writes
//! `TP_STATUS_KERNEL`: under light load every frame waits for the timer.
//!
//! For `SOCK_RAW` both versions place the frame at
//! `tp_mac = TPACKET_ALIGN(HDRLEN + max(maclen, 16)) + reserve + vnet_hdr_len - maclen`
//! and write the virtio-net header immediately in front of it, at `tp_mac - 10`
//! (`tpacket_rcv`: `virtio_net_hdr_from_skb(skb, h.raw + macoff - sizeof(struct
//! virtio_net_hdr), ...)`, the same call for V2 and V3). `PACKET_RESERVE` ([`RX_RESERVE`])
//! widens the gap between the `sockaddr_ll` that follows the header and the frame, which is the
//! headroom the pipeline gets; it is chosen so that the network header lands on a 16-byte
//! boundary (with either header, as `TPACKET_ALIGN(HDRLEN + 16)` is 80 for V2 and 96 for V3).
//!
//! TX: fixed-size frames. Without `PACKET_TX_HAS_OFF` the kernel reads data at
//! `HDRLEN - sizeof(sockaddr_ll)` (32 for V2, 48 for V3), and with `PACKET_VNET_HDR` that data
//! begins with the 10-byte virtio-net header followed by the Ethernet frame; `tp_len` counts both
//! (`tpacket_snd`, `tpacket_parse_header`). The status and length words sit where the socket's
//! header version puts them (`TxLayout`). For V3 the TX ring request must have
//! `tp_retire_blk_tov`, `tp_sizeof_priv` and `tp_feature_req_word` zero and `tp_next_offset` of
//! every frame must stay 0. One `sendto(fd, NULL, 0, MSG_DONTWAIT)` per
//! [`flush`](TxPort::flush) transmits every frame marked `TP_STATUS_SEND_REQUEST`; the kernel
//! sets it back to `TP_STATUS_AVAILABLE` when the skb is freed. `PACKET_LOSS` makes the kernel
//! skip (rather than stall on) a frame it rejects.
//!
//! # V2 or V3
//!
//! V2 is the default: a frame is visible (and `poll` wakes) as soon as the kernel wrote it, which
//! request/response traffic needs. V3 packs frames back to back, so a 64 KiB GSO super-frame and
//! a 60-byte ARP each take what they need and a ring of the same size absorbs far more small
//! frames, but a block is handed over only when full or when the retire timer
//! (`RxRing::V3 { retire_ms }`) fires, at least 1 ms: fine for bulk traffic, not for latency.
//!
//! # VLAN tags
//!
//! The kernel strips a received 802.1Q tag into metadata before packet taps see the frame
//! (`skb_vlan_untag`) and reports it in the frame header (`tp_vlan_tci`/`tp_vlan_tpid` for V2,
//! `hv1.tp_vlan_tci`/`hv1.tp_vlan_tpid` for V3) with `TP_STATUS_VLAN_VALID`. The RX half writes
//! it back into the frame (using 4 bytes of the reserve) and shifts the offload offsets, so
//! frames are seen as they were on the wire.

use std::ffi::CString;
use std::io;
use std::mem::offset_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use super::egress::{copy_retagged, retag_offload, VLAN_TAG_LEN};
use super::{cvt, setsockopt_int, setsockopt_raw, RxPort, TxError, TxPort};
use crate::batch::Batch;
use crate::frame::{Frame, Meta, PortId, HEADROOM};
use crate::wire::vnet::{read_vnet, write_vnet, VNET_HDR_LEN};

/// `TPACKET_ALIGN`.
const fn tpacket_align(x: usize) -> usize {
    (x + libc::TPACKET_ALIGNMENT - 1) & !(libc::TPACKET_ALIGNMENT - 1)
}

/// Size of `tpacket2_hdr` + `sockaddr_ll` (52): where a V2 slot's frame area begins.
const V2_HDRLEN: usize = libc::TPACKET2_HDRLEN;
/// Size of `tpacket3_hdr` + `sockaddr_ll` (68): where a V3 frame's area begins.
const V3_HDRLEN: usize = libc::TPACKET3_HDRLEN;

/// The `PACKET_RESERVE` a header of `hdrlen` bytes needs: enough that a frame whose header
/// already holds one tag (maclen 18) still has `HEADROOM` bytes after a second tag is written
/// back, rounded up so that the network header (`tp_net`) of a plain frame is 16-byte aligned.
const fn reserve_for(hdrlen: usize) -> usize {
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

/// Offsets inside `tpacket_block_desc` (`version`, `offset_to_priv`, then `tpacket_hdr_v1`).
const BLOCK_STATUS_OFF: usize = 8;
const BLOCK_NUM_PKTS_OFF: usize = 12;
const BLOCK_FIRST_PKT_OFF: usize = 16;

/// The RX ring flavour, which also sets the socket's `PACKET_VERSION` (and so the TX ring's
/// frame header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxRing {
    /// TPACKET_V2: fixed slots, each handed over as soon as the kernel wrote it (low latency).
    V2 {
        /// Size of a slot (a multiple of 16). A frame longer than
        /// `frame_size - (tp_mac offset, ~130 bytes)` is truncated and skipped (counted in
        /// [`AfPacketRx::malformed`]), so 64 KiB GSO frames need about 66 KiB.
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
    fn hdrlen(&self) -> usize {
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
            Step::RxRing => "setting up the RX ring",
            Step::TxRing => "setting up the TX ring",
            Step::Mmap => "mapping the rings",
            Step::SndBuf => "sizing the send buffer",
            Step::QdiscBypass => "setting PACKET_QDISC_BYPASS",
            Step::IgnoreOutgoing => "setting PACKET_IGNORE_OUTGOING",
            Step::Bind => "binding to the interface",
            Step::Promisc => "enabling promiscuous mode",
            Step::Fanout => "joining the fanout group",
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

/// The socket and the ring mapping, shared by the two halves; unmapped and closed when both
/// are dropped (closing also leaves the fanout group and drops the promiscuous membership).
#[derive(Debug)]
struct Shared {
    fd: OwnedFd,
    map: NonNull<u8>,
    map_len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; which half touches which part of it
// is decided by the halves' own `&mut self` methods.
unsafe impl Send for Shared {}
// SAFETY: `Shared` itself never reads or writes the mapping.
unsafe impl Sync for Shared {}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: `map`/`map_len` are exactly what mmap returned; no half is alive any more.
        unsafe {
            libc::munmap(self.map.as_ptr().cast(), self.map_len);
        }
    }
}

/// Opens an AF_PACKET port on `ifname` and returns its two halves.
pub fn open(
    ifname: &str,
    id: PortId,
    config: &AfPacketConfig,
) -> Result<(AfPacketRx, AfPacketTx), AfPacketError> {
    prepare(ifname, config)?.bind(ifname, id, config.fanout)
}

/// An AF_PACKET socket with its rings set up and mapped but bound to no interface yet.
///
/// Setting up each ring costs the kernel an RCU grace period (`synchronize_net` in
/// `packet_set_ring`, several milliseconds), while binding a prepared socket costs none: a
/// runtime keeps a few prepared sockets spare so that attaching a port does not wait for them.
#[derive(Debug)]
pub struct Prepared {
    shared: Arc<Shared>,
    walk: RxWalk,
    rx_len: usize,
    tx_frame_size: usize,
    tx_frames_per_block: usize,
    tx_block_size: usize,
    tx_block_count: usize,
}

/// Sets up a socket with `config`'s rings; `label` names it in errors (the interface it is
/// for, or what it is for).
pub fn prepare(label: &str, config: &AfPacketConfig) -> Result<Prepared, AfPacketError> {
    let ifname = label;
    let os = |step: Step| {
        move |source: io::Error| AfPacketError::Os {
            ifname: ifname.to_owned(),
            step,
            source,
        }
    };
    let bad = |reason: &'static str| AfPacketError::Config {
        ifname: ifname.to_owned(),
        reason,
    };

    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let c = config;
    let hdrlen = c.rx_ring.hdrlen();
    let walk = match c.rx_ring {
        RxRing::V2 {
            frame_size,
            frame_count,
        } => {
            if !frame_size.is_multiple_of(libc::TPACKET_ALIGNMENT)
                || frame_size < hdrlen + RX_RESERVE
            {
                return Err(bad(
                    "RX slots must be 16-byte multiples larger than the slot header and reserve",
                ));
            }
            let (block_size, per_block, block_count) =
                v2_geometry(frame_size, frame_count, page)
                    .ok_or_else(|| bad("RX slot size or count is zero or overflows"))?;
            RxWalk::V2(V2Walk {
                frame_size,
                per_block,
                block_size,
                block_count,
                frame_count: per_block * block_count,
                max_held: (per_block * block_count / 2).max(1),
                head: 0,
                to_release: 0,
            })
        }
        RxRing::V3 {
            block_size,
            block_count,
            retire_ms,
        } => {
            if block_size == 0 || !block_size.is_multiple_of(page) || block_count == 0 {
                return Err(bad(
                    "RX blocks must be a non-zero multiple of the page size",
                ));
            }
            RxWalk::V3(V3Walk {
                block_size,
                block_count,
                retire_ms,
                cur: 0,
                in_block: false,
                pkts_left: 0,
                next_off: 0,
                to_release: 0,
            })
        }
    };
    if c.tx_block_size == 0 || !c.tx_block_size.is_multiple_of(page) || c.tx_block_count == 0 {
        return Err(bad(
            "TX blocks must be a non-zero multiple of the page size",
        ));
    }
    if !c.tx_frame_size.is_multiple_of(libc::TPACKET_ALIGNMENT)
        || c.tx_frame_size < hdrlen + RX_RESERVE
        || c.tx_frame_size > c.tx_block_size
    {
        return Err(bad("TX frames must be 16-byte multiples that fit a block"));
    }
    let (rx_block_size, rx_block_count) = walk.blocks();
    let rx_len = rx_block_size
        .checked_mul(rx_block_count)
        .ok_or_else(|| bad("RX ring size overflows"))?;
    let tx_frames_per_block = c.tx_block_size / c.tx_frame_size;
    let tx_len = c.tx_block_size * c.tx_block_count;
    let to_u32 = |v: usize| u32::try_from(v).map_err(|_| bad("ring size overflows 32 bits"));

    // Protocol 0: no packets are queued until `bind` names the interface and ETH_P_ALL, so the
    // ring never sees frames of other interfaces.
    // SAFETY: plain socket(2) call.
    let raw = cvt(unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    })
    .map_err(os(Step::Socket))?;
    // SAFETY: `raw` is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let s = fd.as_raw_fd();

    let version = match walk {
        RxWalk::V2(_) => libc::tpacket_versions::TPACKET_V2,
        RxWalk::V3(_) => libc::tpacket_versions::TPACKET_V3,
    };
    setsockopt_int(
        s,
        libc::SOL_PACKET,
        libc::PACKET_VERSION,
        version as libc::c_int,
    )
    .map_err(os(Step::Version))?;
    setsockopt_int(s, libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1).map_err(os(Step::VnetHdr))?;
    setsockopt_int(
        s,
        libc::SOL_PACKET,
        libc::PACKET_RESERVE,
        RX_RESERVE as libc::c_int,
    )
    .map_err(os(Step::Reserve))?;
    setsockopt_int(s, libc::SOL_PACKET, libc::PACKET_LOSS, 1).map_err(os(Step::Loss))?;

    // The ring requests: `tpacket_req` for V2, `tpacket_req3` for V3 (both rings).
    let tx_req = libc::tpacket_req {
        tp_block_size: to_u32(c.tx_block_size)?,
        tp_block_nr: to_u32(c.tx_block_count)?,
        tp_frame_size: to_u32(c.tx_frame_size)?,
        tp_frame_nr: to_u32(tx_frames_per_block * c.tx_block_count)?,
    };
    match &walk {
        RxWalk::V2(w) => {
            let rx_req = libc::tpacket_req {
                tp_block_size: to_u32(w.block_size)?,
                tp_block_nr: to_u32(w.block_count)?,
                tp_frame_size: to_u32(w.frame_size)?,
                tp_frame_nr: to_u32(w.frame_count)?,
            };
            setsockopt_raw(s, libc::SOL_PACKET, libc::PACKET_RX_RING, &rx_req)
                .map_err(os(Step::RxRing))?;
            setsockopt_raw(s, libc::SOL_PACKET, libc::PACKET_TX_RING, &tx_req)
                .map_err(os(Step::TxRing))?;
        }
        RxWalk::V3(w) => {
            // V3 ignores the RX frame size except for these consistency checks.
            let rx_nominal_frame = 2048;
            let rx_req = libc::tpacket_req3 {
                tp_block_size: to_u32(w.block_size)?,
                tp_block_nr: to_u32(w.block_count)?,
                tp_frame_size: rx_nominal_frame,
                tp_frame_nr: to_u32(w.block_size / rx_nominal_frame as usize * w.block_count)?,
                tp_retire_blk_tov: w.retire_ms,
                tp_sizeof_priv: 0,
                tp_feature_req_word: 0,
            };
            setsockopt_raw(s, libc::SOL_PACKET, libc::PACKET_RX_RING, &rx_req)
                .map_err(os(Step::RxRing))?;
            let tx_req3 = libc::tpacket_req3 {
                tp_block_size: tx_req.tp_block_size,
                tp_block_nr: tx_req.tp_block_nr,
                tp_frame_size: tx_req.tp_frame_size,
                tp_frame_nr: tx_req.tp_frame_nr,
                tp_retire_blk_tov: 0,
                tp_sizeof_priv: 0,
                tp_feature_req_word: 0,
            };
            setsockopt_raw(s, libc::SOL_PACKET, libc::PACKET_TX_RING, &tx_req3)
                .map_err(os(Step::TxRing))?;
        }
    }

    let map_len = rx_len + tx_len;
    // SAFETY: maps the socket's rings; the result is checked below.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            map_len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            s,
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return Err(os(Step::Mmap)(io::Error::last_os_error()));
    }
    let Some(map) = NonNull::new(map.cast::<u8>()) else {
        return Err(os(Step::Mmap)(io::Error::other("mmap returned NULL")));
    };
    let shared = Arc::new(Shared { fd, map, map_len });

    // Room for the whole TX ring in flight (the kernel charges every queued frame to the
    // socket); SO_SNDBUFFORCE needs CAP_NET_ADMIN, SO_SNDBUF is capped by wmem_max.
    let sndbuf = libc::c_int::try_from(tx_len).unwrap_or(libc::c_int::MAX);
    setsockopt_int(s, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, sndbuf)
        .or_else(|_| setsockopt_int(s, libc::SOL_SOCKET, libc::SO_SNDBUF, sndbuf))
        .map_err(os(Step::SndBuf))?;
    if c.qdisc_bypass {
        setsockopt_int(s, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1)
            .map_err(os(Step::QdiscBypass))?;
    }
    // Frames sent on this interface (by us or by the host stack) are not read back.
    setsockopt_int(s, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)
        .map_err(os(Step::IgnoreOutgoing))?;

    Ok(Prepared {
        shared,
        walk,
        rx_len,
        tx_frame_size: c.tx_frame_size,
        tx_frames_per_block,
        tx_block_size: c.tx_block_size,
        tx_block_count: c.tx_block_count,
    })
}

impl Prepared {
    /// Binds the socket to `ifname` (promiscuous, and in the interface's fanout group with
    /// `fanout`) and returns the port's two halves.
    pub fn bind(
        self,
        ifname: &str,
        id: PortId,
        fanout: bool,
    ) -> Result<(AfPacketRx, AfPacketTx), AfPacketError> {
        let os = |step: Step| {
            move |source: io::Error| AfPacketError::Os {
                ifname: ifname.to_owned(),
                step,
                source,
            }
        };
        let name = CString::new(ifname).map_err(|_| AfPacketError::Config {
            ifname: ifname.to_owned(),
            reason: "interface name contains a NUL byte",
        })?;
        // SAFETY: `name` is a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(os(Step::Ifindex)(io::Error::last_os_error()));
        }
        let Prepared {
            shared,
            walk,
            rx_len,
            tx_frame_size,
            tx_frames_per_block,
            tx_block_size,
            tx_block_count,
        } = self;
        let s = shared.fd.as_raw_fd();
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as libc::c_int;
        // SAFETY: `sll` is a valid sockaddr_ll of the given length.
        cvt(unsafe {
            libc::bind(
                s,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })
        .map_err(os(Step::Bind))?;

        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex as libc::c_int,
            mr_type: libc::PACKET_MR_PROMISC as u16,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        setsockopt_raw(s, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)
            .map_err(os(Step::Promisc))?;

        if fanout {
            // With fanout the group's hook replaces the socket's, so "ignore outgoing" must be
            // requested again as a group flag.
            let args = libc::fanout_args {
                id: ifindex as u16,
                type_flags: (libc::PACKET_FANOUT_HASH | libc::PACKET_FANOUT_FLAG_IGNORE_OUTGOING)
                    as u16,
                max_num_members: 0,
            };
            setsockopt_raw(s, libc::SOL_PACKET, libc::PACKET_FANOUT, &args)
                .map_err(os(Step::Fanout))?;
        }

        let base = shared.map.as_ptr();
        let layout = match walk {
            RxWalk::V2(_) => TxLayout::V2,
            RxWalk::V3(_) => TxLayout::V3,
        };
        let rx = AfPacketRx {
            id,
            ring: base,
            walk,
            malformed: 0,
            shared: Arc::clone(&shared),
        };
        let tx = AfPacketTx {
            // SAFETY: the TX ring follows the RX ring inside the mapping.
            ring: unsafe { base.add(rx_len) },
            layout,
            frame_size: tx_frame_size,
            frames_per_block: tx_frames_per_block,
            block_size: tx_block_size,
            frame_count: tx_frames_per_block * tx_block_count,
            head: 0,
            kick: false,
            shared,
        };
        Ok((rx, tx))
    }
}

/// Read position in a V2 RX ring.
#[derive(Debug)]
struct V2Walk {
    frame_size: usize,
    per_block: usize,
    block_size: usize,
    block_count: usize,
    /// `per_block * block_count`.
    frame_count: usize,
    /// Most slots user space holds at once (half the ring): the kernel keeps room for a burst
    /// while a batch is processed (a sender's `sendto` delivers its whole batch into the ring
    /// at once, and the slots are few).
    max_held: usize,
    /// The next slot to read.
    head: usize,
    /// Handed-out slots before `head` still owned by user space.
    to_release: usize,
}

/// Read position in a V3 RX ring.
#[derive(Debug)]
struct V3Walk {
    block_size: usize,
    block_count: usize,
    retire_ms: u32,
    /// The block being read.
    cur: usize,
    /// `cur` is owned by user space and `pkts_left`/`next_off` describe it.
    in_block: bool,
    /// Frames of `cur` not handed out yet.
    pkts_left: u32,
    /// Offset of the next frame's header inside `cur`.
    next_off: usize,
    /// Fully handed-out blocks before `cur` still owned by user space.
    to_release: usize,
}

/// How the RX half walks its ring: per slot (V2) or per block (V3).
#[derive(Debug)]
enum RxWalk {
    V2(V2Walk),
    V3(V3Walk),
}

impl RxWalk {
    /// `(block_size, block_count)` of the ring.
    fn blocks(&self) -> (usize, usize) {
        match self {
            RxWalk::V2(w) => (w.block_size, w.block_count),
            RxWalk::V3(w) => (w.block_size, w.block_count),
        }
    }
}

/// The fields of a V2 or V3 frame header the RX path uses.
#[derive(Clone, Copy, Debug)]
struct RxHdr {
    status: u32,
    len: u32,
    snaplen: u32,
    mac: u16,
    vlan_tci: u16,
    vlan_tpid: u16,
}

/// The receiving half of an AF_PACKET port: walks the RX ring slot by slot (V2) or block by
/// block (V3).
#[derive(Debug)]
pub struct AfPacketRx {
    id: PortId,
    ring: *mut u8,
    walk: RxWalk,
    /// Frames skipped because their ring header or virtio-net header was inconsistent.
    malformed: u64,
    shared: Arc<Shared>,
}

// SAFETY: the raw pointer points into the mapping kept alive by `shared`; the half is used by
// one thread at a time (`&mut self`).
unsafe impl Send for AfPacketRx {}

impl AfPacketRx {
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

    /// The kernel's counters since the last call (`PACKET_STATISTICS`, clear on read): frames
    /// received and frames dropped because the ring was full.
    pub fn kernel_stats(&self) -> io::Result<(u32, u32)> {
        // V2 sockets fill only the first two fields (`tpacket_stats`) and report that length.
        let mut st = libc::tpacket_stats_v3 {
            tp_packets: 0,
            tp_drops: 0,
            tp_freeze_q_cnt: 0,
        };
        let mut len = std::mem::size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // SAFETY: `st` and `len` are valid for writes of the advertised size.
        cvt(unsafe {
            libc::getsockopt(
                self.shared.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats_v3).cast(),
                &mut len,
            )
        })?;
        Ok((st.tp_packets, st.tp_drops))
    }

    /// Start of V2 slot `i` (`i < frame_count`).
    fn v2_slot(ring: *mut u8, w: &V2Walk, i: usize) -> *mut u8 {
        // SAFETY: i < frame_count, so the slot lies inside the RX ring.
        unsafe { ring.add(i / w.per_block * w.block_size + i % w.per_block * w.frame_size) }
    }

    /// Start of V3 block `i` (`i < block_count`).
    fn v3_block(ring: *mut u8, w: &V3Walk, i: usize) -> *mut u8 {
        // SAFETY: i < block_count, so the block lies inside the RX ring.
        unsafe { ring.add(i * w.block_size) }
    }

    /// The status word at `at` (a slot's `tp_status` or a block's `block_status`).
    fn status<'s>(at: *mut u8) -> &'s AtomicU32 {
        // SAFETY: slots and blocks are 16-byte aligned and the status words 4-byte aligned
        // inside them; the word is shared with the kernel and only accessed atomically.
        unsafe { &*at.cast::<AtomicU32>() }
    }

    fn rx_v2<'a>(&'a mut self, batch: &mut Batch<'a>) -> usize {
        let RxWalk::V2(w) = &mut self.walk else {
            return 0;
        };
        let mut n = 0;
        while !batch.is_full() && w.to_release < w.max_held {
            let slot = Self::v2_slot(self.ring, w, w.head);
            let status = Self::status(slot).load(Ordering::Acquire);
            if status & libc::TP_STATUS_USER == 0 {
                break;
            }
            w.head = (w.head + 1) % w.frame_count;
            w.to_release += 1;
            // SAFETY: the slot is ours (TP_STATUS_USER, acquired above) and holds a header.
            let h = unsafe { slot.cast::<libc::tpacket2_hdr>().read_unaligned() };
            let hdr = RxHdr {
                status,
                len: h.tp_len,
                snaplen: h.tp_snaplen,
                mac: h.tp_mac,
                vlan_tci: h.tp_vlan_tci,
                vlan_tpid: h.tp_vlan_tpid,
            };
            // SAFETY: [V2_HDRLEN, frame_size) of the slot, which user space owns until
            // `release`; slots are disjoint, and the `&'a mut self` borrow keeps `release` from
            // running while the frames live.
            let area: &'a mut [u8] = unsafe {
                std::slice::from_raw_parts_mut(slot.add(V2_HDRLEN), w.frame_size - V2_HDRLEN)
            };
            match rx_frame(area, &hdr, V2_HDRLEN, self.id) {
                Some(frame) => {
                    if batch.push(frame).is_err() {
                        break;
                    }
                    n += 1;
                }
                None => self.malformed += 1,
            }
        }
        n
    }

    fn rx_v3<'a>(&'a mut self, batch: &mut Batch<'a>) -> usize {
        let RxWalk::V3(w) = &mut self.walk else {
            return 0;
        };
        let mut n = 0;
        while !batch.is_full() {
            let block = Self::v3_block(self.ring, w, w.cur);
            if !w.in_block {
                if w.to_release == w.block_count {
                    break;
                }
                // SAFETY: block descriptors are page aligned.
                let status = Self::status(unsafe { block.add(BLOCK_STATUS_OFF) });
                if status.load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
                    break;
                }
                // SAFETY: the descriptor lies at the start of the block, which is ours now.
                unsafe {
                    w.pkts_left = block.add(BLOCK_NUM_PKTS_OFF).cast::<u32>().read_unaligned();
                    w.next_off = block
                        .add(BLOCK_FIRST_PKT_OFF)
                        .cast::<u32>()
                        .read_unaligned() as usize;
                }
                w.in_block = true;
            }
            if w.pkts_left == 0 {
                w.in_block = false;
                w.to_release += 1;
                w.cur = (w.cur + 1) % w.block_count;
                continue;
            }
            let Some((off, end, h)) = v3_next_frame(w, block) else {
                self.malformed += 1;
                continue;
            };
            let hdr = RxHdr {
                status: h.tp_status,
                len: h.tp_len,
                snaplen: h.tp_snaplen,
                mac: h.tp_mac,
                vlan_tci: h.hv1.tp_vlan_tci as u16,
                vlan_tpid: h.hv1.tp_vlan_tpid,
            };
            let area_start = off + V3_HDRLEN;
            // SAFETY: [area_start, end) lies inside block `cur` (end <= block_size), which user
            // space owns until `release`; areas of different frames are disjoint, and the
            // `&'a mut self` borrow keeps `release` from running while the frames live.
            let area: &'a mut [u8] = unsafe {
                std::slice::from_raw_parts_mut(
                    block.add(area_start),
                    end.saturating_sub(area_start),
                )
            };
            match rx_frame(area, &hdr, V3_HDRLEN, self.id) {
                Some(frame) => {
                    if batch.push(frame).is_err() {
                        break;
                    }
                    n += 1;
                }
                None => self.malformed += 1,
            }
        }
        n
    }
}

/// The next frame of the current V3 block (starting at `block`) as (header offset, end of its
/// area, header). Consumes it from the block even when it is then found malformed.
fn v3_next_frame(w: &mut V3Walk, block: *mut u8) -> Option<(usize, usize, libc::tpacket3_hdr)> {
    let off = w.next_off;
    w.pkts_left -= 1;
    if off + V3_HDRLEN > w.block_size {
        w.pkts_left = 0;
        return None;
    }
    // SAFETY: the header lies inside the block (checked above); the block is ours.
    let hdr = unsafe { block.add(off).cast::<libc::tpacket3_hdr>().read_unaligned() };
    let next = hdr.tp_next_offset as usize;
    let end = if w.pkts_left > 0 && next >= V3_HDRLEN && off + next <= w.block_size {
        w.next_off = off + next;
        off + next
    } else {
        // Last frame, or a chain that would leave the block: stop after this frame.
        w.pkts_left = 0;
        w.block_size
    };
    Some((off, end, hdr))
}

impl RxPort for AfPacketRx {
    fn rx<'a>(&'a mut self, batch: &mut Batch<'a>) -> io::Result<usize> {
        self.release();
        Ok(match self.walk {
            RxWalk::V2(_) => self.rx_v2(batch),
            RxWalk::V3(_) => self.rx_v3(batch),
        })
    }

    fn release(&mut self) {
        match &mut self.walk {
            RxWalk::V2(w) => {
                let first = w.head + w.frame_count - w.to_release;
                for i in 0..w.to_release {
                    let slot = Self::v2_slot(self.ring, w, (first + i) % w.frame_count);
                    Self::status(slot).store(libc::TP_STATUS_KERNEL, Ordering::Release);
                }
                w.to_release = 0;
            }
            RxWalk::V3(w) => {
                let first = w.cur + w.block_count - w.to_release;
                for i in 0..w.to_release {
                    let block = Self::v3_block(self.ring, w, (first + i) % w.block_count);
                    // SAFETY: the status word lies inside the block descriptor.
                    Self::status(unsafe { block.add(BLOCK_STATUS_OFF) })
                        .store(libc::TP_STATUS_KERNEL, Ordering::Release);
                }
                w.to_release = 0;
            }
        }
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.shared.fd.as_raw_fd())
    }
}

/// Turns the area of one ring frame (which starts right after its `sockaddr_ll`, `hdrlen`
/// bytes after its header) into a pipeline frame: reads the virtio-net header, writes a
/// stripped VLAN tag back and checks the headroom. `None` for an inconsistent frame.
fn rx_frame<'a>(area: &'a mut [u8], hdr: &RxHdr, hdrlen: usize, id: PortId) -> Option<Frame<'a>> {
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

/// Where a TX slot's fields are for the socket's header version (`tpacket_parse_header` reads
/// `tp_len` from the version's header and the data at `HDRLEN - sizeof(sockaddr_ll)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TxLayout {
    /// Offset of `tp_status`.
    status: usize,
    /// Offset of `tp_len`.
    len: usize,
    /// Offset of the data (virtio-net header, then the frame).
    data: usize,
    /// V3: `tp_next_offset` (offset 0) must be written 0.
    zero_next_offset: bool,
}

impl TxLayout {
    const V2: TxLayout = TxLayout {
        status: offset_of!(libc::tpacket2_hdr, tp_status),
        len: offset_of!(libc::tpacket2_hdr, tp_len),
        data: V2_HDRLEN - std::mem::size_of::<libc::sockaddr_ll>(),
        zero_next_offset: false,
    };
    const V3: TxLayout = TxLayout {
        status: offset_of!(libc::tpacket3_hdr, tp_status),
        len: offset_of!(libc::tpacket3_hdr, tp_len),
        data: V3_HDRLEN - std::mem::size_of::<libc::sockaddr_ll>(),
        zero_next_offset: true,
    };
}

/// The transmitting half of an AF_PACKET port: fills TX ring slots, kicks once per flush.
#[derive(Debug)]
pub struct AfPacketTx {
    ring: *mut u8,
    layout: TxLayout,
    frame_size: usize,
    frames_per_block: usize,
    block_size: usize,
    frame_count: usize,
    /// The next slot to fill.
    head: usize,
    /// Slots were marked for sending since the last successful kick.
    kick: bool,
    shared: Arc<Shared>,
}

// SAFETY: as for `AfPacketRx`.
unsafe impl Send for AfPacketTx {}

impl AfPacketTx {
    fn slot(&self, i: usize) -> *mut u8 {
        let block = i / self.frames_per_block;
        let pos = i % self.frames_per_block;
        // SAFETY: i < frame_count, so the slot lies inside the TX ring.
        unsafe {
            self.ring
                .add(block * self.block_size + pos * self.frame_size)
        }
    }

    /// Number of TX slots.
    pub fn slots(&self) -> usize {
        self.frame_count
    }
}

impl TxPort for AfPacketTx {
    fn send(&mut self, frame: &Frame<'_>, tag: Option<u16>) -> Result<(), TxError> {
        let slot = self.slot(self.head);
        let l = self.layout;
        // SAFETY: slots are 16-byte aligned and `tp_status` 4-byte aligned in them; the status
        // word is shared with the kernel.
        let status = unsafe { &*slot.add(l.status).cast::<AtomicU32>() };
        if status.load(Ordering::Acquire) != libc::TP_STATUS_AVAILABLE {
            return Err(TxError::Full);
        }
        // SAFETY: the slot is AVAILABLE, so the kernel does not touch it until we mark it; the
        // data area lies inside the slot.
        let data =
            unsafe { std::slice::from_raw_parts_mut(slot.add(l.data), self.frame_size - l.data) };
        let (vnet, eth) = data.split_at_mut(VNET_HDR_LEN);
        let len = copy_retagged(frame, tag, eth)?;
        let delta = len as isize - frame.len() as isize;
        write_vnet(&retag_offload(&frame.meta.offload, delta), vnet)?;
        let tp_len = (VNET_HDR_LEN + len) as u32;
        // SAFETY: header fields inside the slot, distinct from the status word.
        unsafe {
            if l.zero_next_offset {
                slot.cast::<u32>().write_unaligned(0);
            }
            slot.add(l.len).cast::<u32>().write_unaligned(tp_len);
        }
        status.store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.head = (self.head + 1) % self.frame_count;
        self.kick = true;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.kick {
            return Ok(());
        }
        // SAFETY: sendto with no buffer: transmits the TX ring.
        let ret = unsafe {
            libc::sendto(
                self.shared.fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if ret >= 0 {
            self.kick = false;
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            // The send buffer or the device queue is full: the remaining slots stay marked and
            // go out with the next flush.
            Some(libc::EAGAIN) | Some(libc::ENOBUFS) | Some(libc::EINTR) => Ok(()),
            _ => Err(err),
        }
    }
}

/// Largest Ethernet frame (tag included) a TX slot of `config` holds (the data offset depends
/// on the header version the RX ring selects).
pub fn max_tx_frame(config: &AfPacketConfig) -> usize {
    let data = config.rx_ring.hdrlen() - std::mem::size_of::<libc::sockaddr_ll>();
    config.tx_frame_size.saturating_sub(data + VNET_HDR_LEN)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::frame::GsoType;
    use crate::port::testnet::{
        collect, forward, is_test_frame, test_frame, with_headroom, Netns, RawSock,
    };

    /// Largest frame the kernel hands over for 64 KiB GSO: 65535 bytes of IP packet, an
    /// Ethernet header and one tag kept in the bytes.
    const MAX_GSO_FRAME: usize = 65535 + 14 + VLAN_TAG_LEN;

    /// V2 slots for frames up to 2 KiB: 4 MiB, 2048 slots.
    const V2_SMALL_SLOTS: RxRing = RxRing::V2 {
        frame_size: 2048,
        frame_count: 2048,
    };
    /// V3, 4 MiB.
    const V3_SMALL: RxRing = RxRing::V3 {
        block_size: 256 << 10,
        block_count: 16,
        retire_ms: 1,
    };

    fn small(rx_ring: RxRing) -> AfPacketConfig {
        AfPacketConfig {
            rx_ring,
            tx_block_count: 4,
            ..AfPacketConfig::default()
        }
    }

    fn page() -> usize {
        // SAFETY: sysconf has no preconditions.
        unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
    }

    #[test]
    fn geometry() {
        assert_eq!((V2_HDRLEN, V3_HDRLEN), (52, 68));
        assert_eq!(reserve_for(V2_HDRLEN), reserve_for(V3_HDRLEN));
        for hdrlen in [V2_HDRLEN, V3_HDRLEN] {
            // tp_net of a plain frame is 16-byte aligned and the headroom covers a written-back
            // tag on top of one already in the bytes.
            let net = tpacket_align(hdrlen + 16) + RX_RESERVE + VNET_HDR_LEN;
            assert_eq!(net % 16, 0);
            let mac_with_tag = net - 18;
            assert!(mac_with_tag - hdrlen >= HEADROOM + VLAN_TAG_LEN);
        }
        // The TX header fields as `tpacket_parse_header` reads them.
        assert_eq!(
            (TxLayout::V2.status, TxLayout::V2.len, TxLayout::V2.data),
            (0, 4, 32)
        );
        assert_eq!(
            (TxLayout::V3.status, TxLayout::V3.len, TxLayout::V3.data),
            (20, 16, 48)
        );
        for ring in [DEFAULT_RX_V2, DEFAULT_RX_V3] {
            let cfg = AfPacketConfig {
                rx_ring: ring,
                ..AfPacketConfig::default()
            };
            assert!(max_tx_frame(&cfg) >= MAX_GSO_FRAME);
        }
        assert_eq!(AfPacketConfig::default().rx_ring, DEFAULT_RX_V2);

        // The default V2 slot holds a 64 KiB GSO frame behind the slot header, reserve and
        // vnet header; 18 blocks of 1 MiB, 15 slots each.
        let RxRing::V2 {
            frame_size,
            frame_count,
        } = DEFAULT_RX_V2
        else {
            unreachable!()
        };
        let mac = tpacket_align(V2_HDRLEN + 16) + RX_RESERVE + VNET_HDR_LEN - 14;
        assert!(mac + MAX_GSO_FRAME <= frame_size);
        assert_eq!(
            v2_geometry(frame_size, frame_count, 4096),
            Some((1 << 20, 15, 18))
        );
        assert_eq!(v2_geometry(2048, 2048, 4096), Some((16 << 10, 8, 256)));
        assert_eq!(v2_geometry(2048, 0, 4096), None);
        assert_eq!(v2_geometry(usize::MAX / 4, 1, 4096), None);
        for (size, count) in [(2048, 1), (68 << 10, 300), (1 << 20, 3), (4000, 7)] {
            let (block, per_block, blocks) = v2_geometry(size, count, 4096).unwrap();
            assert!(block.is_power_of_two() && block >= 4096 && per_block >= 8);
            assert!(per_block * blocks >= count && per_block * (blocks - 1) < count);
        }

        for ring in [
            RxRing::V2 {
                frame_size: 2050,
                frame_count: 16,
            },
            RxRing::V2 {
                frame_size: 64,
                frame_count: 16,
            },
            RxRing::V2 {
                frame_size: 2048,
                frame_count: 0,
            },
            RxRing::V3 {
                block_size: 1000,
                block_count: 4,
                retire_ms: 1,
            },
        ] {
            assert!(
                matches!(
                    open("lo", PortId(0), &small(ring)),
                    Err(AfPacketError::Config { .. })
                ),
                "{ring:?}"
            );
        }
        for ring in [V2_SMALL_SLOTS, V3_SMALL] {
            let bad = AfPacketConfig {
                tx_frame_size: 1000,
                ..small(ring)
            };
            assert!(matches!(
                open("lo", PortId(0), &bad),
                Err(AfPacketError::Config { .. })
            ));
            let err = open("sl-no-such-if", PortId(0), &small(ring)).unwrap_err();
            assert!(err.to_string().contains("sl-no-such-if"), "{err}");
        }
    }

    #[test]
    fn rx_and_tx_over_veth_v2() {
        rx_and_tx_over_veth(V2_SMALL_SLOTS);
    }

    #[test]
    fn rx_and_tx_over_veth_v3() {
        rx_and_tx_over_veth(V3_SMALL);
    }

    fn rx_and_tx_over_veth(ring: RxRing) {
        let ns = Netns::new("ap");
        ns.ip("link add name a type veth peer name b");
        ns.ip("link set dev a up");
        ns.ip("link set dev b up");
        let (mut rx, mut tx) = ns.enter(|| open("b", PortId(7), &small(ring))).unwrap();
        assert_eq!(
            rx.ring(),
            match ring {
                RxRing::V2 { frame_size, .. } => RxRing::V2 {
                    frame_size,
                    frame_count: v2_geometry(2048, 2048, page()).map_or(0, |(_, p, b)| p * b),
                },
                v3 => v3,
            }
        );
        let raw = ns.enter(|| RawSock::open("a"));
        assert!(ns.ip("-d link show dev b").contains("promiscuity 1"));

        // Kernel -> port: to a foreign MAC, untagged and tagged (PCP 3, VLAN 5).
        let plain = test_frame(None, 1, 100);
        let tagged = test_frame(Some((3 << 13) | 5), 2, 100);
        raw.send(&plain);
        raw.send(&tagged);
        let got = collect(&mut rx, 2, Duration::from_secs(3), |f, m| {
            assert_eq!(m.ingress, PortId(7));
            is_test_frame(f, 1) || is_test_frame(f, 2)
        });
        let frames: Vec<_> = got.into_iter().map(|(b, _)| b).collect();
        assert_eq!(
            frames,
            vec![plain.clone(), tagged],
            "stripped tag written back"
        );

        // Port -> kernel: pushed and stripped tags, one kick.
        let mut b1 = with_headroom(&test_frame(None, 3, 60));
        let mut b2 = with_headroom(&test_frame(Some(4), 4, 60));
        let len1 = b1.len() - HEADROOM;
        let f1 = Frame::new(&mut b1, HEADROOM, len1, Meta::default()).unwrap();
        let len2 = b2.len() - HEADROOM;
        let f2 = Frame::new(&mut b2, HEADROOM, len2, Meta::default()).unwrap();
        tx.send(&f1, Some(9)).unwrap();
        tx.send(&f2, None).unwrap();
        tx.flush().unwrap();
        let seen = raw.capture(2, |f| is_test_frame(f, 3) || is_test_frame(f, 4));
        assert_eq!(
            seen,
            vec![test_frame(Some(9), 3, 60), test_frame(None, 4, 60)]
        );

        // What we sent is not read back (PACKET_IGNORE_OUTGOING).
        let echo = collect(&mut rx, 1, Duration::from_millis(100), |f, _| {
            is_test_frame(f, 3) || is_test_frame(f, 4)
        });
        assert!(echo.is_empty());

        // Many frames while reading: slots or blocks are returned to the kernel and reused
        // (6.6 MB through a 4 MiB ring; bursts of 200 stay below the veth's backlog queue).
        let received = std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..30 {
                    for _ in 0..200 {
                        raw.send(&test_frame(None, 10, 1000));
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            });
            collect(&mut rx, 6000, Duration::from_secs(10), |f, _| {
                is_test_frame(f, 10)
            })
        });
        assert_eq!(received.len(), 6000);
        let (_, drops) = rx.kernel_stats().unwrap();
        assert_eq!(drops, 0);
        assert_eq!(rx.malformed(), 0);

        // A full TX ring says so instead of blocking.
        let mut full = false;
        for _ in 0..=tx.slots() {
            if let Err(e) = tx.send(&f1, None) {
                assert!(matches!(e, TxError::Full));
                full = true;
                break;
            }
        }
        assert!(full);
        tx.flush().unwrap();
    }

    #[test]
    fn fanout_group_shares_the_interface_v2() {
        fanout_group_shares_the_interface(DEFAULT_RX_V2);
    }

    #[test]
    fn fanout_group_shares_the_interface_v3() {
        fanout_group_shares_the_interface(V3_SMALL);
    }

    /// Two workers on one interface: each frame reaches exactly one of them.
    fn fanout_group_shares_the_interface(ring: RxRing) {
        let ns = Netns::new("f");
        ns.ip("link add name a type veth peer name b");
        ns.ip("link set dev a up");
        ns.ip("link set dev b up");
        let cfg = AfPacketConfig {
            fanout: true,
            ..small(ring)
        };
        let (mut r0, _t0) = ns.enter(|| open("b", PortId(0), &cfg)).unwrap();
        let (mut r1, _t1) = ns.enter(|| open("b", PortId(0), &cfg)).unwrap();
        let raw = ns.enter(|| RawSock::open("a"));
        for _ in 0..100 {
            raw.send(&test_frame(None, 5, 60));
        }
        let keep = |f: &[u8], _: &Meta| is_test_frame(f, 5);
        let n0 = collect(&mut r0, 100, Duration::from_millis(500), keep).len();
        let n1 = collect(&mut r1, 100, Duration::from_millis(500), keep).len();
        assert_eq!(n0 + n1, 100);
    }

    #[test]
    fn gso_super_frames_arrive_whole_v2() {
        gso_super_frames_arrive_whole(DEFAULT_RX_V2);
    }

    #[test]
    fn gso_super_frames_arrive_whole_v3() {
        gso_super_frames_arrive_whole(V3_SMALL);
    }

    /// A TCP transfer over a veth whose sender has TSO on: the port on the receiving end sees
    /// the super-frames whole, with the GSO and checksum-partial state in the offload.
    fn gso_super_frames_arrive_whole(ring: RxRing) {
        let ns1 = Netns::new("g");
        let ns2 = Netns::new("g");
        ns1.ip(&format!(
            "link add name a type veth peer name b netns {}",
            ns2.name
        ));
        ns1.ip("addr add 198.18.0.1/24 dev a");
        ns2.ip("addr add 198.18.0.2/24 dev b");
        ns1.ip("link set dev a up");
        ns2.ip("link set dev b up");
        let (mut rx, _tx) = ns2.enter(|| open("b", PortId(1), &small(ring))).unwrap();
        let listener = ns2.enter(|| TcpListener::bind("198.18.0.2:5201")).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                let (mut c, _) = listener.accept().unwrap();
                let mut sink = vec![0u8; 1 << 16];
                while c.read(&mut sink).unwrap_or(0) > 0 {}
            });
            s.spawn(|| {
                ns1.setns();
                let mut c = TcpStream::connect("198.18.0.2:5201").unwrap();
                let chunk = vec![0x5a; 1 << 20];
                for _ in 0..16 {
                    if c.write_all(&chunk).is_err() {
                        break;
                    }
                }
            });
            let got = collect(&mut rx, 1, Duration::from_secs(10), |f, m| {
                f.len() > 1514 && m.offload.gso != GsoType::None
            });
            let (bytes, off) = got.first().expect("no GSO frame seen");
            assert_eq!(off.gso, GsoType::TcpV4);
            assert!(off.gso_size > 500 && off.gso_size <= 1460, "{off:?}");
            assert!(off.csum_partial, "{off:?}");
            assert_eq!((off.csum_start, off.csum_offset), (34, 16));
            assert!(off.hdr_len >= 54 && usize::from(off.hdr_len) <= bytes.len());
            assert_eq!(&bytes[12..14], &[0x08, 0x00]);
            drop(got);
        });
        assert_eq!(rx.malformed(), 0, "a GSO frame did not fit");
    }

    #[test]
    fn forwards_tcp_between_two_veths_v2() {
        forwards_tcp_between_two_veths(DEFAULT_RX_V2);
    }

    #[test]
    fn forwards_tcp_between_two_veths_v3() {
        forwards_tcp_between_two_veths(V3_SMALL);
    }

    /// sluice in the middle: frames read from one veth are sent out of another, both ways; a
    /// TCP transfer (GSO super-frames, partial checksums, ARP) crosses it intact (through TX
    /// rings with the V2 or V3 slot header).
    fn forwards_tcp_between_two_veths(ring: RxRing) {
        let left = Netns::new("l");
        let mid = Netns::new("m");
        let right = Netns::new("r");
        left.ip(&format!(
            "link add name a type veth peer name x netns {}",
            mid.name
        ));
        right.ip(&format!(
            "link add name b type veth peer name y netns {}",
            mid.name
        ));
        left.ip("addr add 198.18.1.1/24 dev a");
        right.ip("addr add 198.18.1.2/24 dev b");
        for (ns, dev) in [(&left, "a"), (&right, "b"), (&mid, "x"), (&mid, "y")] {
            ns.ip(&format!("link set dev {dev} up"));
        }
        let (mut xr, mut xt) = mid.enter(|| open("x", PortId(0), &small(ring))).unwrap();
        let (mut yr, mut yt) = mid.enter(|| open("y", PortId(1), &small(ring))).unwrap();
        let listener = right
            .enter(|| TcpListener::bind("198.18.1.2:5201"))
            .unwrap();
        let total: usize = 256 << 20;
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let fwd = s.spawn(|| forward(&stop, [(&mut xr, &mut xt), (&mut yr, &mut yt)]));
            let server = s.spawn(|| {
                let (mut c, _) = listener.accept().unwrap();
                let mut sink = vec![0u8; 1 << 16];
                let mut got = 0;
                loop {
                    match c.read(&mut sink) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n,
                    }
                }
                got
            });
            let start = Instant::now();
            let left = &left;
            let sent = s
                .spawn(move || {
                    left.setns();
                    let mut c = TcpStream::connect("198.18.1.2:5201").unwrap();
                    c.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
                    let chunk = vec![0xa5; 1 << 20];
                    let mut sent = 0;
                    while sent < total && start.elapsed() < Duration::from_secs(8) {
                        c.write_all(&chunk).unwrap();
                        sent += chunk.len();
                    }
                    sent
                })
                .join()
                .unwrap();
            let received = server.join().unwrap();
            let secs = start.elapsed().as_secs_f64();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let st = fwd.join().unwrap();
            eprintln!(
                "{ring:?}: forwarded {received} bytes in {secs:.2} s ({:.2} Gbit/s): {st:?}",
                received as f64 * 8.0 / secs / 1e9
            );
            assert_eq!(received, sent);
            assert!(st.gso[0] > 0, "no GSO frame from the sender side");
            assert!(sent >= 16 << 20, "only {sent} bytes in 8 s");
        });
    }

    /// Forward rate of one worker between two veths with 64-byte frames (a measurement, not a
    /// check of speed): `cargo test -p sluice-dataplane --release forward_rate -- --ignored
    /// --nocapture`. A generator port blasts frames into one veth, the worker forwards them to
    /// the other, a counter port drains the far end.
    #[test]
    #[ignore = "measurement; run in release"]
    fn forward_rate_small_frames() {
        forward_rate(DEFAULT_RX_V2);
        forward_rate(DEFAULT_RX_V3);
    }

    fn forward_rate(ring: RxRing) {
        let left = Netns::new("pl");
        let mid = Netns::new("pm");
        let right = Netns::new("pr");
        left.ip(&format!(
            "link add name a type veth peer name x netns {}",
            mid.name
        ));
        right.ip(&format!(
            "link add name b type veth peer name y netns {}",
            mid.name
        ));
        for (ns, dev) in [(&left, "a"), (&right, "b"), (&mid, "x"), (&mid, "y")] {
            ns.ip(&format!("link set dev {dev} up"));
        }
        let cfg = AfPacketConfig {
            rx_ring: ring,
            ..AfPacketConfig::default()
        };
        let (_ar, mut gen) = left.enter(|| open("a", PortId(9), &cfg)).unwrap();
        let (mut xr, mut xt) = mid.enter(|| open("x", PortId(0), &cfg)).unwrap();
        let (mut yr, mut yt) = mid.enter(|| open("y", PortId(1), &cfg)).unwrap();
        let (mut br, _bt) = right.enter(|| open("b", PortId(8), &cfg)).unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let secs = 3.0;
        let result = std::thread::scope(|s| {
            let fwd = s.spawn(|| forward(&stop, [(&mut xr, &mut xt), (&mut yr, &mut yt)]));
            let sink = s.spawn(|| {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut batch = Batch::new();
                    n += br.rx(&mut batch).unwrap() as u64;
                    drop(batch);
                    br.release();
                }
                n
            });
            let mut frame = with_headroom(&test_frame(None, 1, 46));
            let len = frame.len() - HEADROOM;
            let f = Frame::new(&mut frame, HEADROOM, len, Meta::default()).unwrap();
            let start = Instant::now();
            let mut generated = 0u64;
            while start.elapsed().as_secs_f64() < secs {
                for _ in 0..256 {
                    if tx_full(gen.send(&f, None)) {
                        break;
                    }
                    generated += 1;
                }
                gen.flush().unwrap();
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            (generated, fwd.join().unwrap(), sink.join().unwrap())
        });
        let (generated, st, sunk) = result;
        let (_, x_drops) = xr.kernel_stats().unwrap();
        eprintln!(
            "{ring:?}: generated {generated}, forwarded {} ({:.0} kpps), received {sunk}, \
             TX full {}, x ring drops {x_drops}",
            st.frames,
            st.frames as f64 / secs / 1e3,
            st.full
        );
        assert!(st.frames > 0 && sunk > 0);
    }

    /// A frame longer than a V2 slot is truncated by the kernel (`tp_snaplen < tp_len`): it is
    /// skipped and counted, and the slot is reused.
    #[test]
    fn v2_truncated_frames_are_counted() {
        let ns = Netns::new("t");
        ns.ip("link add name a mtu 4000 type veth peer name b mtu 4000");
        ns.ip("link set dev a up");
        ns.ip("link set dev b up");
        let (mut rx, _tx) = ns
            .enter(|| open("b", PortId(2), &small(V2_SMALL_SLOTS)))
            .unwrap();
        let raw = ns.enter(|| RawSock::open("a"));
        raw.send(&test_frame(None, 6, 3000));
        raw.send(&test_frame(None, 7, 100));
        let got = collect(&mut rx, 1, Duration::from_secs(3), |f, _| {
            is_test_frame(f, 6) || is_test_frame(f, 7)
        });
        assert_eq!(got.len(), 1);
        assert!(is_test_frame(&got[0].0, 7));
        assert_eq!(rx.malformed(), 1);
    }

    /// User space holds at most half of the V2 slots: a batch is cut short, the rest waits
    /// for the next `rx` (after the release of the first half).
    #[test]
    fn v2_hands_out_at_most_half_the_ring() {
        let ns = Netns::new("h");
        ns.ip("link add name a type veth peer name b");
        ns.ip("link set dev a up");
        ns.ip("link set dev b up");
        let ring = RxRing::V2 {
            frame_size: 2048,
            frame_count: 32,
        };
        let (mut rx, _tx) = ns.enter(|| open("b", PortId(2), &small(ring))).unwrap();
        assert_eq!(rx.ring(), ring);
        let raw = ns.enter(|| RawSock::open("a"));
        for _ in 0..24 {
            raw.send(&test_frame(None, 9, 60));
        }
        // Link-up noise (IPv6) may occupy slots too: count only ours, in batches.
        let mut sizes = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut total = 0;
        while total < 24 && Instant::now() < deadline {
            let mut batch = Batch::new();
            let n = rx.rx(&mut batch).unwrap();
            assert!(n <= 16, "{n} frames in one batch");
            let ours = batch
                .frames()
                .iter()
                .filter(|f| is_test_frame(f.data(), 9))
                .count();
            drop(batch);
            rx.release();
            if n > 0 {
                sizes.push(n);
            }
            total += ours;
        }
        assert_eq!(total, 24);
        assert!(sizes.len() >= 2, "{sizes:?}");
        let (_, drops) = rx.kernel_stats().unwrap();
        assert_eq!(drops, 0);
    }

    /// Waits on the descriptor (`poll`, 50 ms at a time, like a worker) and reads until the
    /// frame with `marker` comes out of `rx`; the time from `since`, or `None` at `deadline`.
    fn arrival(
        rx: &mut AfPacketRx,
        marker: u8,
        since: Instant,
        deadline: Instant,
    ) -> Option<Duration> {
        while Instant::now() < deadline {
            let mut pfd = libc::pollfd {
                fd: rx.raw_fd().unwrap(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, 50) };
            let mut batch = Batch::new();
            rx.rx(&mut batch).unwrap();
            let seen = batch
                .frames()
                .iter()
                .any(|f| is_test_frame(f.data(), marker));
            drop(batch);
            rx.release();
            if seen {
                return Some(since.elapsed());
            }
        }
        None
    }

    /// The point of V2: a single frame is handed over (and `poll` wakes) as soon as the kernel
    /// wrote it, where V3 holds it in the open block until the retire timer fires. Both rings
    /// are on the same interface and see the same frame; the V3 timer is armed when the ring
    /// opens its first block, just before the frame is sent, so it fires about 1 s later.
    #[test]
    fn v2_hands_over_a_lone_frame_at_once() {
        let ns = Netns::new("w");
        ns.ip("link add name a type veth peer name b");
        ns.ip("link set dev a up");
        ns.ip("link set dev b up");
        let raw = ns.enter(|| RawSock::open("a"));
        let (mut r2, _t2) = ns
            .enter(|| open("b", PortId(2), &small(DEFAULT_RX_V2)))
            .unwrap();
        let v3 = RxRing::V3 {
            block_size: 256 << 10,
            block_count: 4,
            retire_ms: 1000,
        };
        let (mut r3, _t3) = ns.enter(|| open("b", PortId(3), &small(v3))).unwrap();
        let sent = Instant::now();
        raw.send(&test_frame(None, 8, 46));
        let window = sent + Duration::from_millis(200);
        let v2_at = arrival(&mut r2, 8, sent, window);
        let v3_early = arrival(&mut r3, 8, sent, window);
        let v3_at = arrival(&mut r3, 8, sent, sent + Duration::from_secs(3));
        eprintln!("V2: {v2_at:?}, V3 (retire 1000 ms): {v3_at:?}");
        assert!(v2_at.is_some(), "V2 did not deliver within 200 ms");
        assert_eq!(v3_early, None, "V3 delivered before its retire timer");
        assert!(v3_at.is_some(), "the frame never reached the V3 ring");
    }

    /// UDP request/response round trips (1-byte payload) between two namespaces through the
    /// middle one, which is a kernel bridge or a polling two-port sluice loop with a V2 or V3
    /// ring (a measurement, not a check of speed): `cargo test -p sluice-dataplane --release
    /// request_response -- --ignored --nocapture`.
    #[test]
    #[ignore = "measurement; run in release"]
    fn request_response_rtt() {
        for ring in [None, Some(DEFAULT_RX_V2), Some(DEFAULT_RX_V3)] {
            let rtts = udp_rtts(ring, 3000);
            let pct = |p: usize| rtts[(rtts.len() - 1) * p / 100].as_secs_f64() * 1e6;
            let mean = rtts.iter().sum::<Duration>().as_secs_f64() * 1e6 / rtts.len() as f64;
            eprintln!(
                "{}: {} round trips, mean {mean:.0} us, p50 {:.0} us, p90 {:.0} us, p99 {:.0} us",
                ring.map_or("kernel bridge".to_owned(), |r| format!("{r:?}")),
                rtts.len(),
                pct(50),
                pct(90),
                pct(99)
            );
        }
    }

    /// Sorted round-trip times of `count` UDP request/responses through the middle namespace
    /// (`None`: a kernel bridge).
    fn udp_rtts(ring: Option<RxRing>, count: usize) -> Vec<Duration> {
        use std::net::UdpSocket;
        use std::sync::atomic::AtomicBool;

        let left = Netns::new("ql");
        let mid = Netns::new("qm");
        let right = Netns::new("qr");
        left.ip(&format!(
            "link add name a type veth peer name x netns {}",
            mid.name
        ));
        right.ip(&format!(
            "link add name b type veth peer name y netns {}",
            mid.name
        ));
        left.ip("addr add 198.18.3.1/24 dev a");
        right.ip("addr add 198.18.3.2/24 dev b");
        if ring.is_none() {
            mid.ip("link add name br0 type bridge");
            mid.ip("link set dev x master br0");
            mid.ip("link set dev y master br0");
            mid.ip("link set dev br0 up");
        }
        for (ns, dev) in [(&left, "a"), (&right, "b"), (&mid, "x"), (&mid, "y")] {
            ns.ip(&format!("link set dev {dev} up"));
        }
        let ports = ring.map(|r| {
            let cfg = small(r);
            let x = mid.enter(|| open("x", PortId(0), &cfg)).unwrap();
            let y = mid.enter(|| open("y", PortId(1), &cfg)).unwrap();
            (x, y)
        });
        let server = right.enter(|| UdpSocket::bind("198.18.3.2:7000")).unwrap();
        let client = left.enter(|| UdpSocket::bind("198.18.3.1:0")).unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        server
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        client.connect("198.18.3.2:7000").unwrap();
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            if let Some(((mut xr, mut xt), (mut yr, mut yt))) = ports {
                let stop = &stop;
                s.spawn(move || {
                    let fds = [xr.raw_fd().unwrap(), yr.raw_fd().unwrap()];
                    while !stop.load(Ordering::Relaxed) {
                        let mut pfds = fds.map(|fd| libc::pollfd {
                            fd,
                            events: libc::POLLIN,
                            revents: 0,
                        });
                        // SAFETY: two valid pollfds.
                        unsafe { libc::poll(pfds.as_mut_ptr(), 2, 10) };
                        for (rx, tx) in [(&mut xr, &mut yt), (&mut yr, &mut xt)] {
                            let mut batch = Batch::new();
                            rx.rx(&mut batch).unwrap();
                            for f in batch.frames() {
                                let _ = tx.send(f, None);
                            }
                            drop(batch);
                            rx.release();
                            tx.flush().unwrap();
                        }
                    }
                });
            }
            s.spawn(|| {
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, peer)) = server.recv_from(&mut buf) {
                        server.send_to(&buf[..n], peer).unwrap();
                    }
                }
            });
            // Ends the other threads also when the client panics.
            struct StopOnDrop<'s>(&'s AtomicBool);
            impl Drop for StopOnDrop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Relaxed);
                }
            }
            let _stop = StopOnDrop(&stop);
            // One request until its own response (numbered: a late answer to a retried request
            // is skipped); `None` after 200 ms.
            let round_trip = |seq: u32| {
                let mut buf = [0u8; 64];
                let start = Instant::now();
                client.send(&seq.to_be_bytes()).unwrap();
                while let Ok(n) = client.recv(&mut buf) {
                    if buf[..n] == seq.to_be_bytes() {
                        return Some(start.elapsed());
                    }
                }
                None
            };
            // Until the path works (links coming up, ARP), then warm-up, then measured.
            let mut seq = 0;
            while round_trip(seq).is_none() {
                assert!(seq < 25, "no response through the middle namespace");
                seq += 1;
            }
            let mut rtts: Vec<Duration> = (seq + 1..seq + 101 + count as u32)
                .map(|i| round_trip(i).expect("no response"))
                .skip(100)
                .collect();
            rtts.sort();
            rtts
        })
    }

    fn tx_full(r: Result<(), TxError>) -> bool {
        match r {
            Ok(()) => false,
            Err(TxError::Full) => true,
            Err(e) => panic!("send: {e}"),
        }
    }
}
