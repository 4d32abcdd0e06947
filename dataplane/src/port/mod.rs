//! I/O ports: the thin layer that moves frames between interfaces and [`Batch`]es.
//!
//! A port is opened as two owned halves, an [`RxPort`] and a [`TxPort`], that share the
//! underlying socket or file descriptor. The split is what makes the worker loop borrow-check:
//! a batch borrows the memory of the RX half it came from (ring slots or buffers), while the
//! pipeline's verdicts send frames through the TX halves of any port, including the ingress
//! port's own TX half (hairpin). A worker keeps its RX halves and TX halves in two tables.
//!
//! One worker iteration:
//!
//! ```text
//! let mut batch = Batch::new();
//! rx.rx(&mut batch)?;              // frames borrow `rx` (zero-copy for AF_PACKET)
//! pipeline(&mut batch);            // rewrites in place, may use the headroom
//! for f in batch.frames() { txs[out].send(f, tag) }  // the one copy, retagged
//! drop(batch);                     // ends the borrow of `rx`
//! rx.release();                    // slots go back to the kernel
//! for tx in touched { tx.flush()? }  // one kick per TX port per batch
//! ```
//!
//! Frames handed out by `rx` always have at least [`HEADROOM`](crate::frame::HEADROOM) bytes in
//! front of the Ethernet header, carry the bytes as they were on the wire (an 802.1Q tag the
//! kernel took out into metadata is put back), `meta.ingress` set to the port's id and
//! `meta.offload` decoded from the virtio-net header.
//!
//! Ports: [`afpacket`] (veth and physical uplinks, TPACKET_V2/V3 rings), [`tap`] (TAP devices,
//! one read/write per frame), [`memory`] (tests and benchmarks).

use std::io;
use std::os::fd::RawFd;

use crate::batch::Batch;
use crate::frame::Frame;
use crate::wire::WireError;

pub mod afpacket;
pub mod egress;
pub mod memory;
pub mod poll;
pub mod tap;
#[cfg(test)]
#[allow(unsafe_code)]
pub(crate) mod testnet;

pub use egress::{copy_retagged, retag_offload, EgressError};

/// The receiving half of a port.
pub trait RxPort {
    /// Fills `batch` with up to `MAX_BATCH` frames borrowed from the port's memory (headroom in
    /// front, `meta.ingress` = the port's id, `meta.offload` from the virtio-net header) and
    /// returns how many were added. Never blocks: 0 means nothing is pending (wait on
    /// [`raw_fd`](RxPort::raw_fd)).
    ///
    /// The frames borrow `self` mutably, so the batch must be dropped before the next `rx` or
    /// [`release`](RxPort::release).
    fn rx<'a>(&'a mut self, batch: &mut Batch<'a>) -> io::Result<usize>;

    /// Gives the memory of the frames of the last `rx` back (to the kernel for a ring). Call it
    /// once the batch is dropped; `rx` also does it first, so forgetting it only delays the
    /// return of ring slots.
    fn release(&mut self);

    /// The descriptor to wait on for readability (poll/epoll), `None` for ports that have none
    /// (in-memory ports: call `rx` when frames were injected).
    fn raw_fd(&self) -> Option<RawFd>;

    /// What the kernel counted for this port since the last call (read at housekeeping rate,
    /// never per batch): frames lost before sluice could see them. Ports whose kernel side
    /// counts nothing per reader report zeros.
    fn kernel_stats(&self) -> io::Result<KernelPortStats> {
        Ok(KernelPortStats::default())
    }
}

/// A port's counters kept by the kernel (an AF_PACKET ring's `PACKET_STATISTICS`), as deltas
/// or sums of deltas: the drops that happen before a frame reaches sluice's own counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelPortStats {
    /// Frames the kernel queued for the port's ring, dropped ones included.
    pub packets: u64,
    /// Frames the kernel dropped because the ring was full.
    pub drops: u64,
    /// Times a V3 ring froze because user space held every block (0 for V2).
    pub freezes: u64,
}

impl std::ops::AddAssign for KernelPortStats {
    fn add_assign(&mut self, d: KernelPortStats) {
        self.packets += d.packets;
        self.drops += d.drops;
        self.freezes += d.freezes;
    }
}

/// Why a frame could not be queued on a TX half.
#[derive(Debug, thiserror::Error)]
pub enum TxError {
    /// The TX ring or the device queue is full; the frame was not queued (count a
    /// `DropReason::TxFull`).
    #[error("TX ring or queue is full")]
    Full,
    /// The frame could not be copied (too short, too long for a slot, bad VLAN id).
    #[error(transparent)]
    Egress(#[from] EgressError),
    /// The frame's offload state cannot be expressed as a virtio-net header.
    #[error("offload state: {0}")]
    Offload(#[from] WireError),
    /// The kernel refused the frame (TAP write error other than a full queue).
    #[error("write: {0}")]
    Io(#[from] io::Error),
}

/// The transmitting half of a port.
pub trait TxPort {
    /// Queues one frame: copies it (retagged so that it carries exactly `tag`) with a virtio-net
    /// header made from `frame.meta.offload` (offsets shifted by the retagging). Never blocks: a
    /// full ring or queue is `Err(TxError::Full)`.
    fn send(&mut self, frame: &Frame<'_>, tag: Option<u16>) -> Result<(), TxError>;

    /// Hands everything queued since the last flush to the kernel: one syscall per batch for a
    /// TX ring, nothing for ports whose `send` already wrote.
    fn flush(&mut self) -> io::Result<()>;
}

/// Returns `Err(last OS error)` when a libc call returned -1.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Sets an integer socket option.
fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    val: libc::c_int,
) -> io::Result<()> {
    setsockopt_raw(fd, level, name, &val)
}

/// Sets a socket option from a plain-old-data value.
#[allow(unsafe_code)]
fn setsockopt_raw<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: `val` points to `size_of::<T>()` readable bytes for the duration of the call.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (val as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    cvt(ret).map(drop)
}

impl<T: TxPort + ?Sized> TxPort for Box<T> {
    fn send(&mut self, frame: &Frame<'_>, tag: Option<u16>) -> Result<(), TxError> {
        (**self).send(frame, tag)
    }

    fn flush(&mut self) -> io::Result<()> {
        (**self).flush()
    }
}
