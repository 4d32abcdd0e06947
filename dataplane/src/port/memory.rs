//! An in-memory port for tests and benchmarks: frames injected as bytes are received in
//! batches exactly like frames from a device (headroom in front, offload metadata), and frames
//! sent are captured after the same retagging copy a device port does.
//!
//! All storage is preallocated: injecting, receiving, sending and clearing allocate nothing, so
//! a benchmark loop measures the pipeline, not the allocator.

use std::io;
use std::os::fd::RawFd;

use super::egress::{copy_retagged, retag_offload};
use super::{RxPort, TxError, TxPort};
use crate::batch::{Batch, MAX_BATCH};
use crate::frame::{Frame, Meta, Offload, PortId, HEADROOM};

/// Why a frame could not be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// Every slot holds a frame that was not received yet.
    #[error("all {0} receive slots are in use")]
    Full(usize),
    /// The frame is longer than a slot.
    #[error("frame of {len} bytes does not fit a slot of {slot_len}")]
    TooLong {
        /// Length of the frame.
        len: usize,
        /// Frame bytes a slot holds (without headroom).
        slot_len: usize,
    },
}

/// Opens an in-memory port with `slots` receive and `slots` transmit slots of `slot_len` frame
/// bytes each (plus headroom).
pub fn memory_port(id: PortId, slots: usize, slot_len: usize) -> (MemoryRx, MemoryTx) {
    (
        MemoryRx::new(id, slots, slot_len),
        MemoryTx::new(slots, slot_len),
    )
}

/// The receiving half: a FIFO of injected frames.
#[derive(Debug)]
pub struct MemoryRx {
    id: PortId,
    slot_len: usize,
    /// Slot buffers; the first `queued` hold frames in arrival order.
    slots: Vec<Box<[u8]>>,
    /// Frame length and offload of each slot.
    entries: Vec<(usize, Offload)>,
    queued: usize,
    /// Frames handed out by the last `rx`, freed by `release`.
    handed: usize,
}

impl MemoryRx {
    /// A receive half with `slots` slots of `slot_len` frame bytes.
    pub fn new(id: PortId, slots: usize, slot_len: usize) -> Self {
        MemoryRx {
            id,
            slot_len,
            slots: (0..slots)
                .map(|_| vec![0u8; HEADROOM + slot_len].into_boxed_slice())
                .collect(),
            entries: vec![(0, Offload::default()); slots],
            queued: 0,
            handed: 0,
        }
    }

    /// Queues a frame to be returned by a later `rx`, with the offload state a virtio-net
    /// header would have carried.
    pub fn inject(&mut self, frame: &[u8], offload: Offload) -> Result<(), InjectError> {
        if frame.len() > self.slot_len {
            return Err(InjectError::TooLong {
                len: frame.len(),
                slot_len: self.slot_len,
            });
        }
        if self.queued == self.slots.len() {
            return Err(InjectError::Full(self.slots.len()));
        }
        self.slots[self.queued][HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
        self.entries[self.queued] = (frame.len(), offload);
        self.queued += 1;
        Ok(())
    }

    /// Frames injected and not yet received.
    pub fn pending(&self) -> usize {
        self.queued - self.handed
    }
}

impl RxPort for MemoryRx {
    fn rx<'a>(&'a mut self, batch: &mut Batch<'a>) -> io::Result<usize> {
        self.release();
        let n = self.queued.min(MAX_BATCH - batch.len());
        let id = self.id;
        let mut handed = 0;
        for (slot, &(len, offload)) in self.slots.iter_mut().zip(&self.entries).take(n) {
            let meta = Meta {
                ingress: id,
                offload,
                ..Meta::default()
            };
            let frame = Frame::new(slot, HEADROOM, len, meta)
                .ok_or_else(|| io::Error::other("memory port slot shorter than its frame"))?;
            if batch.push(frame).is_err() {
                break;
            }
            handed += 1;
        }
        self.handed = handed;
        Ok(handed)
    }

    fn release(&mut self) {
        if self.handed == 0 {
            return;
        }
        // Moves buffer pointers only: the still-queued frames go to the front.
        self.slots[..self.queued].rotate_left(self.handed);
        self.entries[..self.queued].rotate_left(self.handed);
        self.queued -= self.handed;
        self.handed = 0;
    }

    fn raw_fd(&self) -> Option<RawFd> {
        None
    }
}

/// The transmitting half: captures what is sent.
#[derive(Debug)]
pub struct MemoryTx {
    slots: Vec<Box<[u8]>>,
    /// Length and offload (as a device would get it) of each captured frame.
    sent: Vec<(usize, Offload)>,
    flushes: u64,
}

impl MemoryTx {
    /// A transmit half capturing up to `slots` frames of `slot_len` bytes (tag included).
    pub fn new(slots: usize, slot_len: usize) -> Self {
        MemoryTx {
            slots: (0..slots)
                .map(|_| vec![0u8; slot_len].into_boxed_slice())
                .collect(),
            sent: Vec::with_capacity(slots),
            flushes: 0,
        }
    }

    /// The captured frames (bytes as they would leave, offload as the virtio-net header would
    /// carry it), in send order.
    pub fn sent(&self) -> impl Iterator<Item = (&[u8], Offload)> + '_ {
        self.slots
            .iter()
            .zip(&self.sent)
            .map(|(slot, &(len, off))| (&slot[..len], off))
    }

    /// Number of captured frames.
    pub fn sent_count(&self) -> usize {
        self.sent.len()
    }

    /// Forgets the captured frames, keeping the storage (for benchmark loops).
    pub fn clear_sent(&mut self) {
        self.sent.clear();
    }

    /// Copies out and forgets the captured frames (for tests; allocates).
    pub fn take_sent(&mut self) -> Vec<(Vec<u8>, Offload)> {
        let out = self.sent().map(|(b, off)| (b.to_vec(), off)).collect();
        self.clear_sent();
        out
    }

    /// How many times `flush` was called (tests check one kick per batch).
    pub fn flushes(&self) -> u64 {
        self.flushes
    }
}

impl TxPort for MemoryTx {
    fn send(&mut self, frame: &Frame<'_>, tag: Option<u16>) -> Result<(), TxError> {
        let Some(slot) = self.slots.get_mut(self.sent.len()) else {
            return Err(TxError::Full);
        };
        let len = copy_retagged(frame, tag, slot)?;
        let delta = len as isize - frame.len() as isize;
        self.sent
            .push((len, retag_offload(&frame.meta.offload, delta)));
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flushes += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::GsoType;

    fn eth(n: u8) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, n]);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend(std::iter::repeat_n(n, 50));
        f
    }

    #[test]
    fn injected_frames_come_back_in_batches_with_headroom() {
        let (mut rx, _) = memory_port(PortId(3), 4, 128);
        let off = Offload {
            csum_partial: true,
            csum_start: 34,
            csum_offset: 16,
            ..Offload::default()
        };
        rx.inject(&eth(1), off).unwrap();
        rx.inject(&eth(2), Offload::default()).unwrap();
        {
            let mut batch = Batch::new();
            assert_eq!(rx.rx(&mut batch).unwrap(), 2);
            let f = &batch.frames()[0];
            assert_eq!(f.data(), &eth(1)[..]);
            assert!(f.headroom() >= HEADROOM);
            assert_eq!(f.meta.ingress, PortId(3));
            assert_eq!(f.meta.offload, off);
            assert_eq!(batch.frames()[1].data(), &eth(2)[..]);
        }
        rx.release();
        let mut batch = Batch::new();
        assert_eq!(rx.rx(&mut batch).unwrap(), 0);
    }

    #[test]
    fn inject_errors_and_fifo_order_across_release() {
        let mut rx = MemoryRx::new(PortId(0), 2, 64);
        assert_eq!(
            rx.inject(&[0; 65], Offload::default()),
            Err(InjectError::TooLong {
                len: 65,
                slot_len: 64
            })
        );
        rx.inject(&eth(1), Offload::default()).unwrap();
        rx.inject(&eth(2), Offload::default()).unwrap();
        assert_eq!(
            rx.inject(&eth(3), Offload::default()),
            Err(InjectError::Full(2))
        );
        {
            let mut batch = Batch::new();
            for _ in 0..MAX_BATCH - 1 {
                let _ = batch.push(Frame::new(&mut [], 0, 0, Meta::default()).unwrap());
            }
            // Only one more frame fits: the second stays queued.
            assert_eq!(rx.rx(&mut batch).unwrap(), 1);
            assert_eq!(batch.frames()[MAX_BATCH - 1].data(), &eth(1)[..]);
        }
        assert_eq!(rx.pending(), 1);
        assert!(
            rx.inject(&eth(3), Offload::default()).is_err(),
            "slot not released yet"
        );
        rx.release();
        rx.inject(&eth(3), Offload::default()).unwrap();
        let mut batch = Batch::new();
        assert_eq!(rx.rx(&mut batch).unwrap(), 2);
        assert_eq!(batch.frames()[0].data(), &eth(2)[..]);
        assert_eq!(batch.frames()[1].data(), &eth(3)[..]);
    }

    #[test]
    fn sent_frames_are_retagged_and_captured() {
        let mut tx = MemoryTx::new(2, 128);
        let mut buf = eth(7);
        let len = buf.len();
        let mut frame = Frame::new(&mut buf, 0, len, Meta::default()).unwrap();
        frame.meta.offload = Offload {
            gso: GsoType::TcpV4,
            gso_size: 1448,
            hdr_len: 66,
            csum_partial: true,
            csum_start: 34,
            csum_offset: 16,
            ..Offload::default()
        };
        tx.send(&frame, Some(10)).unwrap();
        tx.send(&frame, None).unwrap();
        assert!(matches!(tx.send(&frame, None), Err(TxError::Full)));
        tx.flush().unwrap();
        assert_eq!(tx.flushes(), 1);
        let sent = tx.take_sent();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].0.len(), len + 4);
        assert_eq!(&sent[0].0[12..16], &[0x81, 0x00, 0x00, 10]);
        assert_eq!((sent[0].1.csum_start, sent[0].1.hdr_len), (38, 70));
        assert_eq!(sent[1].0, eth(7));
        assert_eq!(sent[1].1, frame.meta.offload);
        assert_eq!(tx.sent_count(), 0);
        tx.send(&frame, None).unwrap();
        assert_eq!(tx.sent_count(), 1);
    }
}
