//! Benchmark support for sluice: the end-to-end harness (kernel bridge vs sluice in namespaces) and
//! batches of test frames run through the pipeline without allocation in the measured part.
#![deny(missing_docs)]

pub mod e2e;
pub mod run;
pub mod soak;

use std::time::{Duration, Instant};

use sluice_dataplane::batch::Batch;
use sluice_dataplane::frame::{Frame, Meta, PortId, HEADROOM};
use sluice_dataplane::pipeline::Worker;
use sluice_dataplane::time::Millis;

/// Preallocated frame buffers (with headroom) that a batch borrows; refilled from templates
/// outside the measured part when the pipeline rewrites frames in place.
#[derive(Debug)]
pub struct BatchBufs {
    bufs: Vec<Vec<u8>>,
    lens: Vec<usize>,
}

impl BatchBufs {
    /// Room for `n` frames of at most `max_len` bytes.
    pub fn new(n: usize, max_len: usize) -> Self {
        BatchBufs {
            bufs: (0..n).map(|_| vec![0u8; HEADROOM + max_len]).collect(),
            lens: vec![0; n],
        }
    }

    /// Copies `frames` into the buffers (at most as many as there are buffers).
    pub fn fill<'f>(&mut self, frames: impl IntoIterator<Item = &'f [u8]>) {
        for ((buf, len), f) in self.bufs.iter_mut().zip(self.lens.iter_mut()).zip(frames) {
            buf[HEADROOM..HEADROOM + f.len()].copy_from_slice(f);
            *len = f.len();
        }
    }

    /// The buffers as one batch arriving on `ingress` (what an RX port hands the pipeline).
    fn batch(&mut self, ingress: PortId) -> Batch<'_> {
        let mut batch = Batch::new();
        for (buf, len) in self.bufs.iter_mut().zip(self.lens.iter()) {
            let meta = Meta {
                ingress,
                ..Meta::default()
            };
            if let Some(f) = Frame::new(buf, HEADROOM, *len, meta) {
                let _ = batch.push(f);
            }
        }
        batch
    }

    /// Runs the buffers as one batch through `Worker::process` and returns how long that call
    /// took: the pipeline's cost, without building the batch (the RX port's work) or reading
    /// the verdicts (the TX side's).
    pub fn time_process(&mut self, worker: &mut Worker, ingress: PortId, now: Millis) -> Duration {
        let mut batch = self.batch(ingress);
        let start = Instant::now();
        worker.process(&mut batch, now);
        let took = start.elapsed();
        std::hint::black_box(&batch);
        took
    }

    /// Runs the buffers as one batch arriving on `ingress`; returns how many frames were
    /// forwarded (not dropped), so the optimiser cannot discard the work.
    pub fn run(&mut self, worker: &mut Worker, ingress: PortId, now: Millis) -> usize {
        let mut batch = self.batch(ingress);
        worker.process(&mut batch, now);
        batch
            .frames()
            .iter()
            .filter(|f| {
                matches!(
                    f.meta.verdict,
                    sluice_dataplane::frame::Verdict::Forward(_)
                        | sluice_dataplane::frame::Verdict::Flood { .. }
                )
            })
            .count()
    }
}
