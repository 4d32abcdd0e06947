//! The life cycle of an AF_PACKET port: the socket and its options, the rings' set-up and
//! mapping ([`prepare`]), binding to an interface with promiscuous mode and fanout
//! ([`Prepared::bind`]), and the few socket calls the halves make afterwards.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::super::{cvt, setsockopt_int, setsockopt_raw, KernelPortStats};
use super::config::{AfPacketConfig, AfPacketError, Step, LONG_BUF, RX_RESERVE};
use super::ring::Ring;
use super::rx::{AfPacketRx, RxWalk};
use super::tx::{AfPacketTx, TxGeometry, TxLayout};
use crate::frame::PortId;

/// Opens an AF_PACKET port on `ifname` and returns its two halves.
pub fn open(
    ifname: &str,
    id: PortId,
    config: &AfPacketConfig,
) -> Result<(AfPacketRx, AfPacketTx), AfPacketError> {
    prepare(ifname, config)?.bind(ifname, id, config.fanout, None)
}

/// The index of interface `ifname` in the calling thread's network namespace (the flow
/// offload attaches its TC program by index).
pub fn interface_index(ifname: &str) -> io::Result<u32> {
    let name = CString::new(ifname).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    if_index(&name)
}

/// An AF_PACKET socket with its rings set up and mapped but bound to no interface yet.
///
/// Setting up each ring costs the kernel an RCU grace period (`synchronize_net` in
/// `packet_set_ring`, several milliseconds), while binding a prepared socket costs none: a
/// runtime keeps a few prepared sockets spare so that attaching a port does not wait for them.
#[derive(Debug)]
pub struct Prepared {
    /// The receiving socket and its RX ring.
    ring: Ring,
    /// The sending socket and its TX ring: a socket of its own, never registered with epoll,
    /// so that freeing each sent frame (`sock_wfree`) finds no waiter to wake on it.
    tx_ring: Ring,
    walk: RxWalk,
    /// Buffers for frames longer than a V2 slot (0 for V3).
    long: usize,
    tx: TxGeometry,
}

/// Makes `AfPacketError`s for the port on `ifname`.
fn os_error(ifname: &str, step: Step) -> impl FnOnce(io::Error) -> AfPacketError + '_ {
    move |source| AfPacketError::Os {
        ifname: ifname.to_owned(),
        step,
        source,
    }
}

/// Sets up a socket with `config`'s rings; `label` names it in errors (the interface it is
/// for, or what it is for).
pub fn prepare(label: &str, config: &AfPacketConfig) -> Result<Prepared, AfPacketError> {
    let bad = |reason: &'static str| AfPacketError::Config {
        ifname: label.to_owned(),
        reason,
    };
    let page = page_size();
    let walk = RxWalk::new(config.rx_ring, page).map_err(bad)?;
    let tx = TxGeometry::new(config, page, config.rx_ring.hdrlen()).map_err(bad)?;
    let (rx_block_size, rx_block_count) = walk.blocks();
    let rx_len = rx_block_size
        .checked_mul(rx_block_count)
        .ok_or_else(|| bad("RX ring size overflows"))?;
    let fd = packet_socket().map_err(os_error(label, Step::Socket))?;
    set_ring_options(fd.as_raw_fd(), &walk, true, label)?;
    let long = match walk {
        RxWalk::V2(_) => config.rx_long_buffers,
        RxWalk::V3(_) => 0,
    };
    if long > 0 {
        queue_long_frames(fd.as_raw_fd(), long).map_err(os_error(label, Step::CopyThresh))?;
    }
    let ring_error = |e| match e {
        RingSetupError::Os(step, source) => os_error(label, step)(source),
        RingSetupError::Overflow => bad("ring size overflows 32 bits"),
    };
    set_rx_ring(fd.as_raw_fd(), &walk).map_err(ring_error)?;
    let ring = Ring::map(fd, rx_len).map_err(os_error(label, Step::Mmap))?;
    // Frames sent on this interface (by us or by the host stack) are not read back.
    setsockopt_int(ring.fd(), libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)
        .map_err(os_error(label, Step::IgnoreOutgoing))?;
    if config.qdisc_bypass {
        // For the frames longer than a TX slot, which leave through this socket (`Direct`).
        setsockopt_int(ring.fd(), libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1)
            .map_err(os_error(label, Step::QdiscBypass))?;
    }
    let tx_fd = packet_socket().map_err(os_error(label, Step::Socket))?;
    set_ring_options(tx_fd.as_raw_fd(), &walk, false, label)?;
    set_tx_ring(tx_fd.as_raw_fd(), &walk, &tx).map_err(ring_error)?;
    let tx_ring = Ring::map(tx_fd, tx.len()).map_err(os_error(label, Step::Mmap))?;
    set_send_options(tx_ring.fd(), tx.len(), config.qdisc_bypass, label)?;
    Ok(Prepared {
        ring,
        tx_ring,
        walk,
        long,
        tx,
    })
}

/// How many queued long frames the receive buffer allows per long-frame buffer.
const QUEUED_PER_LONG_BUF: usize = 4;

/// Makes the kernel queue frames longer than a V2 slot on the socket (`PACKET_COPY_THRESH`)
/// instead of truncating them, with a receive buffer for [`QUEUED_PER_LONG_BUF`] x `long`
/// of them. The kernel charges each queued frame's `truesize`, but a queued frame is a clone
/// sharing its data with the sender's skb (for TCP, its retransmit queue): with a receive
/// buffer for only `long` frames, bursts of super-frames were truncated (and dropped) while
/// the worker still had room in the ring.
fn queue_long_frames(s: RawFd, long: usize) -> io::Result<()> {
    setsockopt_int(s, libc::SOL_PACKET, libc::PACKET_COPY_THRESH, 1)?;
    let bytes = long.saturating_mul(LONG_BUF * QUEUED_PER_LONG_BUF);
    let rcvbuf = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    setsockopt_int(s, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, rcvbuf)
        .or_else(|_| setsockopt_int(s, libc::SOL_SOCKET, libc::SO_RCVBUF, rcvbuf))
}

/// The options that must be set before the rings are created (`EBUSY` afterwards): the
/// header version, the virtio-net header, `PACKET_LOSS` and, on the receiving socket
/// (`rx`), the reserve in front of each frame.
fn set_ring_options(s: RawFd, walk: &RxWalk, rx: bool, label: &str) -> Result<(), AfPacketError> {
    let version = match walk {
        RxWalk::V2(_) => libc::tpacket_versions::TPACKET_V2,
        RxWalk::V3(_) => libc::tpacket_versions::TPACKET_V3,
    };
    let sol = libc::SOL_PACKET;
    setsockopt_int(s, sol, libc::PACKET_VERSION, version as libc::c_int)
        .map_err(os_error(label, Step::Version))?;
    setsockopt_int(s, sol, libc::PACKET_VNET_HDR, 1).map_err(os_error(label, Step::VnetHdr))?;
    if rx {
        setsockopt_int(s, sol, libc::PACKET_RESERVE, RX_RESERVE as libc::c_int)
            .map_err(os_error(label, Step::Reserve))?;
    }
    setsockopt_int(s, sol, libc::PACKET_LOSS, 1).map_err(os_error(label, Step::Loss))
}

/// Why `set_rings` failed.
enum RingSetupError {
    Os(Step, io::Error),
    Overflow,
}

/// Creates the RX ring: `tpacket_req` for V2, `tpacket_req3` for V3.
fn set_rx_ring(s: RawFd, walk: &RxWalk) -> Result<(), RingSetupError> {
    match walk {
        RxWalk::V2(w) => {
            let rx_req = libc::tpacket_req {
                tp_block_size: to_u32(w.block_size)?,
                tp_block_nr: to_u32(w.block_count)?,
                tp_frame_size: to_u32(w.frame_size)?,
                tp_frame_nr: to_u32(w.frame_count)?,
            };
            ring_option(s, libc::PACKET_RX_RING, Step::RxRing, &rx_req)
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
            ring_option(s, libc::PACKET_RX_RING, Step::RxRing, &rx_req)
        }
    }
}

/// Creates the TX ring, with the request type of the socket's header version (`walk`'s).
fn set_tx_ring(s: RawFd, walk: &RxWalk, tx: &TxGeometry) -> Result<(), RingSetupError> {
    let (block_size, block_count, frame_size, frame_count) = tx.request();
    let tx_req = libc::tpacket_req {
        tp_block_size: to_u32(block_size)?,
        tp_block_nr: to_u32(block_count)?,
        tp_frame_size: to_u32(frame_size)?,
        tp_frame_nr: to_u32(frame_count)?,
    };
    match walk {
        RxWalk::V2(_) => ring_option(s, libc::PACKET_TX_RING, Step::TxRing, &tx_req),
        RxWalk::V3(_) => {
            let tx_req3 = libc::tpacket_req3 {
                tp_block_size: tx_req.tp_block_size,
                tp_block_nr: tx_req.tp_block_nr,
                tp_frame_size: tx_req.tp_frame_size,
                tp_frame_nr: tx_req.tp_frame_nr,
                tp_retire_blk_tov: 0,
                tp_sizeof_priv: 0,
                tp_feature_req_word: 0,
            };
            ring_option(s, libc::PACKET_TX_RING, Step::TxRing, &tx_req3)
        }
    }
}

/// A ring request field as the kernel's 32 bits.
fn to_u32(v: usize) -> Result<u32, RingSetupError> {
    u32::try_from(v).map_err(|_| RingSetupError::Overflow)
}

/// Sets ring option `name` to `req`, failing as `step`.
fn ring_option<T>(s: RawFd, name: libc::c_int, step: Step, req: &T) -> Result<(), RingSetupError> {
    setsockopt_raw(s, libc::SOL_PACKET, name, req).map_err(|e| RingSetupError::Os(step, e))
}

/// The options of the sending socket, set once its ring exists: a send buffer for the whole
/// TX ring, and qdisc bypass.
fn set_send_options(
    s: RawFd,
    tx_len: usize,
    qdisc_bypass: bool,
    label: &str,
) -> Result<(), AfPacketError> {
    // Room for the whole TX ring in flight (the kernel charges every queued frame to the
    // socket); SO_SNDBUFFORCE needs CAP_NET_ADMIN, SO_SNDBUF is capped by wmem_max.
    let sndbuf = libc::c_int::try_from(tx_len).unwrap_or(libc::c_int::MAX);
    setsockopt_int(s, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, sndbuf)
        .or_else(|_| setsockopt_int(s, libc::SOL_SOCKET, libc::SO_SNDBUF, sndbuf))
        .map_err(os_error(label, Step::SndBuf))?;
    if qdisc_bypass {
        setsockopt_int(s, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1)
            .map_err(os_error(label, Step::QdiscBypass))?;
    }
    Ok(())
}

impl Prepared {
    /// Binds the socket to `ifname` (promiscuous, and in the interface's fanout group with
    /// `fanout`) and returns the port's two halves. `filter`, the flow offload's socket
    /// filter (an eBPF program), is attached first: it drops the frames the kernel forwards
    /// itself, so they are not forwarded twice. Every socket of a fanout group needs it (the
    /// filter runs per socket, after the group picked one).
    pub fn bind(
        self,
        ifname: &str,
        id: PortId,
        fanout: bool,
        filter: Option<BorrowedFd<'_>>,
    ) -> Result<(AfPacketRx, AfPacketTx), AfPacketError> {
        let name = CString::new(ifname).map_err(|_| AfPacketError::Config {
            ifname: ifname.to_owned(),
            reason: "interface name contains a NUL byte",
        })?;
        let ifindex = if_index(&name).map_err(os_error(ifname, Step::Ifindex))?;
        let s = self.ring.fd();
        if let Some(prog) = filter {
            // SO_ATTACH_BPF takes the program's descriptor as an int; `prog` stays open for
            // the call, and the kernel holds its own reference to the program afterwards.
            setsockopt_int(s, libc::SOL_SOCKET, libc::SO_ATTACH_BPF, prog.as_raw_fd())
                .map_err(os_error(ifname, Step::Filter))?;
        }
        bind_to(s, ifindex).map_err(os_error(ifname, Step::Bind))?;
        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex as libc::c_int,
            mr_type: libc::PACKET_MR_PROMISC as u16,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        setsockopt_raw(s, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)
            .map_err(os_error(ifname, Step::Promisc))?;
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
                .map_err(os_error(ifname, Step::Fanout))?;
        }
        let Prepared {
            ring,
            tx_ring,
            walk,
            long,
            tx,
        } = self;
        let layout = match walk {
            RxWalk::V2(_) => TxLayout::V2,
            RxWalk::V3(_) => TxLayout::V3,
        };
        let direct = if tx.frame_size() >= LONG_BUF {
            None
        } else {
            Some(Direct::over(ring.as_fd(), ifindex).map_err(os_error(ifname, Step::Socket))?)
        };
        Ok((
            AfPacketRx::new(id, ring.into_area(), walk, long),
            AfPacketTx::new(tx_ring.into_area(), layout, tx, Kick::new(ifindex), direct),
        ))
    }
}

/// The size of a memory page.
pub(super) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// A new packet socket (protocol 0: no packets are queued until `bind` names the interface
/// and ETH_P_ALL, so the ring never sees frames of other interfaces).
fn packet_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call.
    let raw = cvt(unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    })?;
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The index of the interface `name` in the calling thread's network namespace.
fn if_index(name: &CString) -> io::Result<u32> {
    // SAFETY: `name` is a valid C string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        i => Ok(i),
    }
}

/// Binds packet socket `s` to interface `ifindex`, for every protocol.
fn bind_to(s: RawFd, ifindex: u32) -> io::Result<()> {
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
    .map(drop)
}

/// The `sendto` that transmits every TX slot marked `TP_STATUS_SEND_REQUEST`. The sending
/// socket is bound to no interface (a bound one would be listed as the interface's, and receive
/// nothing anyway), so each kick names it.
#[derive(Debug)]
pub(super) struct Kick {
    to: libc::sockaddr_ll,
}

impl Kick {
    /// The kick towards interface `ifindex` (protocol 0: the kernel reads each frame's from
    /// its Ethernet header).
    fn new(ifindex: u32) -> Kick {
        Kick {
            to: sockaddr_to(ifindex),
        }
    }

    /// Transmits the marked slots of the TX ring of socket `s`.
    pub(super) fn send(&self, s: RawFd) -> io::Result<()> {
        // SAFETY: sendto with no buffer reads only `self.to`, a valid sockaddr_ll of the given
        // length.
        let ret = unsafe {
            libc::sendto(
                s,
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                (&self.to as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if ret >= 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// The address of interface `ifindex` for `sendto`/`sendmsg`, protocol 0.
fn sockaddr_to(ifindex: u32) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_ifindex = ifindex as libc::c_int;
    to
}

/// The way out for the frames longer than a TX slot: `sendmsg` on the receiving socket (a
/// socket with a TX ring sends only the ring's frames, whatever `sendmsg` is given; the
/// receiving one has none), through a descriptor of its own, so that closing a port closes
/// no more sockets (each close waits for an RCU grace period).
#[derive(Debug)]
pub(super) struct Direct {
    fd: OwnedFd,
    to: libc::sockaddr_ll,
}

impl Direct {
    /// Sends through receiving socket `rx` towards interface `ifindex`.
    fn over(rx: BorrowedFd<'_>, ifindex: u32) -> io::Result<Direct> {
        Ok(Direct {
            fd: rx.try_clone_to_owned()?,
            to: sockaddr_to(ifindex),
        })
    }

    /// The descriptor frames leave through.
    #[cfg(test)]
    pub(super) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Sends one frame gathered from `parts` (virtio-net header first).
    pub(super) fn send(&self, parts: &[&[u8]; 4]) -> io::Result<()> {
        let mut iov = parts.map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        });
        // SAFETY: msghdr is plain data; all-zero (no control data) is a valid value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&self.to as *const libc::sockaddr_ll).cast_mut().cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len() as _;
        // SAFETY: `msg` points to `self.to` and to `iov`, whose entries describe the readable
        // slices of `parts`, all alive for the call; the kernel only reads them.
        let ret = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &msg, libc::MSG_DONTWAIT) };
        if ret >= 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// Receives the frame at the head of the socket's queue into `buf`, virtio-net header first;
/// returns its whole length, more than `buf.len()` when it was cut short.
pub(super) fn recv_queued(s: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    let ret = unsafe {
        libc::recv(
            s,
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_TRUNC,
        )
    };
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}

/// The socket's `PACKET_STATISTICS` since the last call (the kernel clears them on read).
/// V2 sockets fill only the first two fields (`tpacket_stats`); the kernel's `tp_packets`
/// counts the dropped frames too.
pub(super) fn packet_statistics(s: RawFd) -> io::Result<KernelPortStats> {
    let mut st = libc::tpacket_stats_v3 {
        tp_packets: 0,
        tp_drops: 0,
        tp_freeze_q_cnt: 0,
    };
    let mut len = std::mem::size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
    // SAFETY: `st` and `len` are valid for writes of the advertised size.
    cvt(unsafe {
        libc::getsockopt(
            s,
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut st as *mut libc::tpacket_stats_v3).cast(),
            &mut len,
        )
    })?;
    Ok(KernelPortStats {
        packets: u64::from(st.tp_packets),
        drops: u64::from(st.tp_drops),
        freezes: u64::from(st.tp_freeze_q_cnt),
    })
}
