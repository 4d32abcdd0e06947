//! AF_PACKET port: a `SOCK_RAW` packet socket bound to one interface (in the network namespace
//! the opening thread is in), with an mmap'ed TPACKET_V3 RX ring and a TX ring, and the
//! virtio-net header on both (`PACKET_VNET_HDR`), so that GSO super-frames (up to 64 KiB) and
//! checksum-partial frames pass through sluice unsegmented and unchecksummed.
//!
//! # Ring layout
//!
//! One `mmap` covers the RX ring (`block_count` blocks of `block_size` bytes) followed by the TX
//! ring. Offsets below are from the start of a frame's `tpacket3_hdr`.
//!
//! RX (TPACKET_V3, variable-size frames packed into blocks): each block starts with a
//! `tpacket_block_desc` (`block_status`, `num_pkts`, `offset_to_first_pkt`); frames are chained
//! by `tp_next_offset`. The kernel hands a whole block to user space (`TP_STATUS_USER`) when it
//! is full or when the retire timer fires, and takes it back when user space writes
//! `TP_STATUS_KERNEL`. For `SOCK_RAW` the kernel places the frame at
//! `tp_mac = TPACKET_ALIGN(TPACKET3_HDRLEN + max(maclen, 16)) + reserve + vnet_hdr_len - maclen`
//! and writes the virtio-net header immediately in front of it, at `tp_mac - 10`
//! (`tpacket_rcv`: `virtio_net_hdr_from_skb(skb, h.raw + macoff - sizeof(struct
//! virtio_net_hdr), ...)`). `PACKET_RESERVE` ([`RX_RESERVE`]) widens the gap between the
//! `sockaddr_ll` that follows the header and the frame, which is the headroom the pipeline gets;
//! it is chosen so that the network header lands on a 16-byte boundary.
//!
//! TX: fixed-size frames. Without `PACKET_TX_HAS_OFF` the kernel reads data at
//! `TPACKET3_HDRLEN - sizeof(sockaddr_ll)` = 48, and with `PACKET_VNET_HDR` that data begins
//! with the 10-byte virtio-net header followed by the Ethernet frame; `tp_len` counts both
//! (`tpacket_snd`). For V3 the TX ring request must have `tp_retire_blk_tov`, `tp_sizeof_priv`
//! and `tp_feature_req_word` zero and `tp_next_offset` of every frame must stay 0. One
//! `sendto(fd, NULL, 0, MSG_DONTWAIT)` per [`flush`](TxPort::flush) transmits every frame
//! marked `TP_STATUS_SEND_REQUEST`; the kernel sets it back to `TP_STATUS_AVAILABLE` when the
//! skb is freed. `PACKET_LOSS` makes the kernel skip (rather than stall on) a frame it rejects.
//!
//! # V2 or V3
//!
//! The vnet header placement is the same for V2 and V3 (both go through `tpacket_rcv` and
//! `tpacket_snd`). What V3 changes is RX only: frames are packed back to back inside large
//! blocks, so a 64 KiB GSO super-frame and a 60-byte ARP each take what they need, where V2
//! would need every slot sized for 64 KiB; and the kernel signals per block, not per frame. The
//! cost is latency under light load (a block is handed over when full or when the retire timer,
//! [`AfPacketConfig::retire_ms`], fires). V3 TX behaves like V2 TX.
//!
//! # VLAN tags
//!
//! The kernel strips a received 802.1Q tag into metadata before packet taps see the frame
//! (`skb_vlan_untag`), and V3 reports it in `hv1.tp_vlan_tci` with `TP_STATUS_VLAN_VALID`. The
//! RX half writes it back into the frame (using 4 bytes of the reserve) and shifts the offload
//! offsets, so frames are seen as they were on the wire.

use std::ffi::CString;
use std::io;
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

/// Size of `tpacket3_hdr` + `sockaddr_ll` (68): where the frame area of a ring slot begins.
const HDRLEN: usize = libc::TPACKET3_HDRLEN;
/// Where TX data starts in a TX frame (48).
const TX_DATA_OFF: usize = HDRLEN - std::mem::size_of::<libc::sockaddr_ll>();
/// `tp_mac` for a plain Ethernet header (maclen 14) without reserve.
const RX_MAC_OFF_NO_RESERVE: usize = tpacket_align(HDRLEN + 16) + VNET_HDR_LEN - 14;

/// `PACKET_RESERVE` for the RX ring: enough that a frame whose header already holds one tag
/// (maclen 18) still has `HEADROOM` bytes after a second tag is written back, rounded up so
/// that the network header (`tp_net`) of a plain frame is 16-byte aligned.
pub const RX_RESERVE: usize = {
    let needed = HEADROOM + VLAN_TAG_LEN + VLAN_TAG_LEN + HDRLEN - RX_MAC_OFF_NO_RESERVE;
    let net = tpacket_align(HDRLEN + 16) + VNET_HDR_LEN + needed;
    needed + (libc::TPACKET_ALIGNMENT - net % libc::TPACKET_ALIGNMENT) % libc::TPACKET_ALIGNMENT
};

/// Offsets inside `tpacket_block_desc` (`version`, `offset_to_priv`, then `tpacket_hdr_v1`).
const BLOCK_STATUS_OFF: usize = 8;
const BLOCK_NUM_PKTS_OFF: usize = 12;
const BLOCK_FIRST_PKT_OFF: usize = 16;
/// Offsets inside `tpacket3_hdr`.
const TP_LEN_OFF: usize = 16;
const TP_STATUS_OFF: usize = 20;

/// Ring geometry and socket options of an AF_PACKET port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AfPacketConfig {
    /// Size of an RX block (a multiple of the page size); one frame must fit a block, so at
    /// least 128 KiB for 64 KiB GSO frames. Under light load the kernel hands over a block
    /// per retire timeout however little it holds, so the ring absorbs
    /// `rx_block_count x retire_ms` of reader stall: prefer many moderate blocks.
    pub rx_block_size: usize,
    /// Number of RX blocks.
    pub rx_block_count: usize,
    /// RX block retire timeout in milliseconds: the latency bound under light load.
    pub retire_ms: u32,
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

impl Default for AfPacketConfig {
    /// 16 MiB RX (64 x 256 KiB: with the 1 ms retire timer, a worker may stall for about 64 ms
    /// under light load before the ring overflows), 270 TX slots of 68 KiB (18 blocks of 1 MiB, 15 slots each).
    fn default() -> Self {
        AfPacketConfig {
            rx_block_size: 256 << 10,
            rx_block_count: 64,
            retire_ms: 1,
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
    /// `PACKET_VERSION` = TPACKET_V3.
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
            Step::Version => "setting PACKET_VERSION to TPACKET_V3",
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
    if c.rx_block_size == 0 || !c.rx_block_size.is_multiple_of(page) || c.rx_block_count == 0 {
        return Err(bad(
            "RX blocks must be a non-zero multiple of the page size",
        ));
    }
    if c.tx_block_size == 0 || !c.tx_block_size.is_multiple_of(page) || c.tx_block_count == 0 {
        return Err(bad(
            "TX blocks must be a non-zero multiple of the page size",
        ));
    }
    if !c.tx_frame_size.is_multiple_of(libc::TPACKET_ALIGNMENT)
        || c.tx_frame_size < HDRLEN + RX_RESERVE
        || c.tx_frame_size > c.tx_block_size
    {
        return Err(bad("TX frames must be 16-byte multiples that fit a block"));
    }
    let rx_len = c.rx_block_size * c.rx_block_count;
    let tx_frames_per_block = c.tx_block_size / c.tx_frame_size;
    let tx_len = c.tx_block_size * c.tx_block_count;
    let to_u32 = |v: usize| u32::try_from(v).map_err(|_| bad("ring size overflows 32 bits"));

    let name = CString::new(ifname).map_err(|_| bad("interface name contains a NUL byte"))?;
    // SAFETY: `name` is a valid C string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(os(Step::Ifindex)(io::Error::last_os_error()));
    }

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

    setsockopt_int(
        s,
        libc::SOL_PACKET,
        libc::PACKET_VERSION,
        libc::tpacket_versions::TPACKET_V3 as libc::c_int,
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

    // RX: V3 ignores the frame size except for these consistency checks.
    let rx_nominal_frame = 2048;
    let rx_req = libc::tpacket_req3 {
        tp_block_size: to_u32(c.rx_block_size)?,
        tp_block_nr: to_u32(c.rx_block_count)?,
        tp_frame_size: rx_nominal_frame,
        tp_frame_nr: to_u32(c.rx_block_size / rx_nominal_frame as usize * c.rx_block_count)?,
        tp_retire_blk_tov: c.retire_ms,
        tp_sizeof_priv: 0,
        tp_feature_req_word: 0,
    };
    setsockopt_raw(s, libc::SOL_PACKET, libc::PACKET_RX_RING, &rx_req).map_err(os(Step::RxRing))?;
    let tx_req = libc::tpacket_req3 {
        tp_block_size: to_u32(c.tx_block_size)?,
        tp_block_nr: to_u32(c.tx_block_count)?,
        tp_frame_size: to_u32(c.tx_frame_size)?,
        tp_frame_nr: to_u32(tx_frames_per_block * c.tx_block_count)?,
        tp_retire_blk_tov: 0,
        tp_sizeof_priv: 0,
        tp_feature_req_word: 0,
    };
    setsockopt_raw(s, libc::SOL_PACKET, libc::PACKET_TX_RING, &tx_req).map_err(os(Step::TxRing))?;

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

    if c.fanout {
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

    let base = map.as_ptr();
    let rx = AfPacketRx {
        id,
        ring: base,
        block_size: c.rx_block_size,
        block_count: c.rx_block_count,
        cur: 0,
        in_block: false,
        pkts_left: 0,
        next_off: 0,
        to_release: 0,
        malformed: 0,
        shared: Arc::clone(&shared),
    };
    let tx = AfPacketTx {
        // SAFETY: the TX ring follows the RX ring inside the mapping.
        ring: unsafe { base.add(rx_len) },
        frame_size: c.tx_frame_size,
        frames_per_block: tx_frames_per_block,
        block_size: c.tx_block_size,
        frame_count: tx_frames_per_block * c.tx_block_count,
        head: 0,
        kick: false,
        shared,
    };
    Ok((rx, tx))
}

/// The receiving half of an AF_PACKET port: walks the V3 RX ring block by block.
#[derive(Debug)]
pub struct AfPacketRx {
    id: PortId,
    ring: *mut u8,
    block_size: usize,
    block_count: usize,
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
    /// Frames skipped because their ring header or virtio-net header was inconsistent.
    malformed: u64,
    shared: Arc<Shared>,
}

// SAFETY: the raw pointer points into the mapping kept alive by `shared`; the half is used by
// one thread at a time (`&mut self`).
unsafe impl Send for AfPacketRx {}

impl AfPacketRx {
    /// Frames skipped since opening because the ring or virtio-net header was inconsistent (or
    /// the frame was truncated to fit a block).
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// The kernel's counters since the last call (`PACKET_STATISTICS`, clear on read): frames
    /// received and frames dropped because the ring was full.
    pub fn kernel_stats(&self) -> io::Result<(u32, u32)> {
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

    fn block(&self, i: usize) -> *mut u8 {
        // SAFETY: i < block_count, so the block lies inside the RX ring.
        unsafe { self.ring.add(i * self.block_size) }
    }

    fn block_status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: block descriptors are page aligned; the status word is shared with the kernel
        // and only accessed atomically.
        unsafe { &*self.block(i).add(BLOCK_STATUS_OFF).cast::<AtomicU32>() }
    }

    fn read_u32(&self, block: usize, off: usize) -> u32 {
        // SAFETY: callers keep `off + 4 <= block_size`.
        unsafe { self.block(block).add(off).cast::<u32>().read_unaligned() }
    }

    /// The next frame of the current block as (header offset, end of its area, header).
    /// Consumes it from the block even when it is then found malformed.
    fn next_frame(&mut self) -> Option<(usize, usize, libc::tpacket3_hdr)> {
        let off = self.next_off;
        self.pkts_left -= 1;
        if off + HDRLEN > self.block_size {
            self.pkts_left = 0;
            return None;
        }
        // SAFETY: the header lies inside the block (checked above); the block is ours.
        let hdr = unsafe {
            self.block(self.cur)
                .add(off)
                .cast::<libc::tpacket3_hdr>()
                .read_unaligned()
        };
        let next = hdr.tp_next_offset as usize;
        let end = if self.pkts_left > 0 && next >= HDRLEN && off + next <= self.block_size {
            self.next_off = off + next;
            off + next
        } else {
            // Last frame, or a chain that would leave the block: stop after this frame.
            self.pkts_left = 0;
            self.block_size
        };
        Some((off, end, hdr))
    }
}

impl RxPort for AfPacketRx {
    fn rx<'a>(&'a mut self, batch: &mut Batch<'a>) -> io::Result<usize> {
        self.release();
        let mut n = 0;
        while !batch.is_full() {
            if !self.in_block {
                if self.to_release == self.block_count {
                    break;
                }
                if self.block_status(self.cur).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
                    break;
                }
                self.pkts_left = self.read_u32(self.cur, BLOCK_NUM_PKTS_OFF);
                self.next_off = self.read_u32(self.cur, BLOCK_FIRST_PKT_OFF) as usize;
                self.in_block = true;
            }
            if self.pkts_left == 0 {
                self.in_block = false;
                self.to_release += 1;
                self.cur = (self.cur + 1) % self.block_count;
                continue;
            }
            let Some((off, end, hdr)) = self.next_frame() else {
                self.malformed += 1;
                continue;
            };
            let area_start = off + HDRLEN;
            // SAFETY: [area_start, end) lies inside block `cur` (end <= block_size), which user
            // space owns until `release`; areas of different frames are disjoint, and the
            // `&'a mut self` borrow keeps `release` from running while the frames live.
            let area: &'a mut [u8] = unsafe {
                std::slice::from_raw_parts_mut(
                    self.block(self.cur).add(area_start),
                    end.saturating_sub(area_start),
                )
            };
            match rx_frame(area, &hdr, self.id) {
                Some(frame) => {
                    if batch.push(frame).is_err() {
                        break;
                    }
                    n += 1;
                }
                None => self.malformed += 1,
            }
        }
        Ok(n)
    }

    fn release(&mut self) {
        let first = (self.cur + self.block_count - self.to_release) % self.block_count;
        for i in 0..self.to_release {
            self.block_status((first + i) % self.block_count)
                .store(libc::TP_STATUS_KERNEL, Ordering::Release);
        }
        self.to_release = 0;
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.shared.fd.as_raw_fd())
    }
}

/// Turns the area of one ring frame (which starts right after its `sockaddr_ll`, `HDRLEN`
/// bytes after its header) into a pipeline frame: reads the virtio-net header, writes a
/// stripped VLAN tag back and checks the headroom. `None` for an inconsistent frame.
fn rx_frame<'a>(area: &'a mut [u8], hdr: &libc::tpacket3_hdr, id: PortId) -> Option<Frame<'a>> {
    let snaplen = hdr.tp_snaplen as usize;
    if snaplen != hdr.tp_len as usize {
        return None;
    }
    let mac = (hdr.tp_mac as usize).checked_sub(HDRLEN)?;
    let vnet_at = mac.checked_sub(VNET_HDR_LEN)?;
    if mac.checked_add(snaplen)? > area.len() {
        return None;
    }
    let mut offload = read_vnet(&area[vnet_at..mac]).ok()?;
    let mut head = mac;
    let mut len = snaplen;
    if hdr.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
        let tpid = if hdr.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
            hdr.hv1.tp_vlan_tpid
        } else {
            libc::ETH_P_8021Q as u16
        };
        let tci = hdr.hv1.tp_vlan_tci as u16;
        if len < 12 || head < VLAN_TAG_LEN {
            return None;
        }
        area.copy_within(head..head + 12, head - VLAN_TAG_LEN);
        head -= VLAN_TAG_LEN;
        len += VLAN_TAG_LEN;
        area[head + 12..head + 14].copy_from_slice(&tpid.to_be_bytes());
        area[head + 14..head + 16].copy_from_slice(&tci.to_be_bytes());
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

/// The transmitting half of an AF_PACKET port: fills TX ring slots, kicks once per flush.
#[derive(Debug)]
pub struct AfPacketTx {
    ring: *mut u8,
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
        // SAFETY: slots are 16-byte aligned; the status word is shared with the kernel.
        let status = unsafe { &*slot.add(TP_STATUS_OFF).cast::<AtomicU32>() };
        if status.load(Ordering::Acquire) != libc::TP_STATUS_AVAILABLE {
            return Err(TxError::Full);
        }
        // SAFETY: the slot is AVAILABLE, so the kernel does not touch it until we mark it; the
        // data area lies inside the slot.
        let data = unsafe {
            std::slice::from_raw_parts_mut(slot.add(TX_DATA_OFF), self.frame_size - TX_DATA_OFF)
        };
        let (vnet, eth) = data.split_at_mut(VNET_HDR_LEN);
        let len = copy_retagged(frame, tag, eth)?;
        let delta = len as isize - frame.len() as isize;
        write_vnet(&retag_offload(&frame.meta.offload, delta), vnet)?;
        let tp_len = (VNET_HDR_LEN + len) as u32;
        // SAFETY: header fields inside the slot; tp_next_offset (offset 0) must be 0 for V3 TX.
        unsafe {
            slot.cast::<u32>().write_unaligned(0);
            slot.add(TP_LEN_OFF).cast::<u32>().write_unaligned(tp_len);
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

/// Largest Ethernet frame (tag included) a TX slot of `config` holds.
pub fn max_tx_frame(config: &AfPacketConfig) -> usize {
    config
        .tx_frame_size
        .saturating_sub(TX_DATA_OFF + VNET_HDR_LEN)
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

    fn small() -> AfPacketConfig {
        AfPacketConfig {
            rx_block_size: 256 << 10,
            rx_block_count: 16,
            tx_block_count: 4,
            ..AfPacketConfig::default()
        }
    }

    #[test]
    fn geometry() {
        assert_eq!(HDRLEN, 68);
        assert_eq!(TX_DATA_OFF, 48);
        // tp_net of a plain frame is 16-byte aligned and the headroom covers a written-back tag
        // on top of one already in the bytes.
        let net = tpacket_align(HDRLEN + 16) + RX_RESERVE + VNET_HDR_LEN;
        assert_eq!(net % 16, 0);
        let mac_with_tag = net - 18;
        assert!(mac_with_tag - HDRLEN >= HEADROOM + VLAN_TAG_LEN);
        assert!(max_tx_frame(&AfPacketConfig::default()) >= 65535 + 14 + VLAN_TAG_LEN);
        let bad = AfPacketConfig {
            tx_frame_size: 1000,
            ..small()
        };
        assert!(matches!(
            open("lo", PortId(0), &bad),
            Err(AfPacketError::Config { .. })
        ));
        let err = open("sl-no-such-if", PortId(0), &small()).unwrap_err();
        assert!(err.to_string().contains("sl-no-such-if"), "{err}");
    }

    #[test]
    fn rx_and_tx_over_veth() {
        let ns = Netns::new("ap");
        ns.ip("link add name a type veth peer name b");
        ns.ip("link set dev a up");
        ns.ip("link set dev b up");
        let (mut rx, mut tx) = ns.enter(|| open("b", PortId(7), &small())).unwrap();
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

        // Many frames while reading: blocks are returned to the kernel and reused (6.6 MB
        // through a 4 MiB ring; bursts of 200 stay below the veth's backlog queue).
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

    /// Two workers on one interface: each frame reaches exactly one of them.
    #[test]
    fn fanout_group_shares_the_interface() {
        let ns = Netns::new("f");
        ns.ip("link add name a type veth peer name b");
        ns.ip("link set dev a up");
        ns.ip("link set dev b up");
        let cfg = AfPacketConfig {
            fanout: true,
            ..small()
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

    /// A TCP transfer over a veth whose sender has TSO on: the port on the receiving end sees
    /// the super-frames whole, with the GSO and checksum-partial state in the offload.
    #[test]
    fn gso_super_frames_arrive_whole() {
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
        let (mut rx, _tx) = ns2.enter(|| open("b", PortId(1), &small())).unwrap();
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
    }

    /// sluice in the middle: frames read from one veth are sent out of another, both ways; a
    /// TCP transfer (GSO super-frames, partial checksums, ARP) crosses it intact.
    #[test]
    fn forwards_tcp_between_two_veths() {
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
        let (mut xr, mut xt) = mid.enter(|| open("x", PortId(0), &small())).unwrap();
        let (mut yr, mut yt) = mid.enter(|| open("y", PortId(1), &small())).unwrap();
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
                "forwarded {received} bytes in {secs:.2} s ({:.2} Gbit/s): {st:?}",
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
        let cfg = AfPacketConfig::default();
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
            "generated {generated}, forwarded {} ({:.0} kpps), received {sunk}, TX full {}, \
             x ring drops {x_drops}",
            st.frames,
            st.frames as f64 / secs / 1e3,
            st.full
        );
        assert!(st.frames > 0 && sunk > 0);
    }

    fn tx_full(r: Result<(), TxError>) -> bool {
        match r {
            Ok(()) => false,
            Err(TxError::Full) => true,
            Err(e) => panic!("send: {e}"),
        }
    }
}
