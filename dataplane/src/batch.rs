//! A batch: the vector of frames every stage processes as a whole (VPP's vector of packets).
//!
//! The batch lives on the stack (an `ArrayVec`), so building one per RX burst allocates nothing.

use arrayvec::ArrayVec;

use crate::frame::Frame;

/// Most frames one batch holds. I/O layers read up to this many frames per burst.
pub const MAX_BATCH: usize = 256;

/// Frames processed together; each frame ends with its own verdict.
#[derive(Debug, Default)]
pub struct Batch<'a> {
    frames: ArrayVec<Frame<'a>, MAX_BATCH>,
}

impl<'a> Batch<'a> {
    /// An empty batch.
    pub fn new() -> Self {
        Batch {
            frames: ArrayVec::new(),
        }
    }

    /// Appends a frame; gives it back when the batch is full.
    pub fn push(&mut self, frame: Frame<'a>) -> Result<(), Frame<'a>> {
        self.frames.try_push(frame).map_err(|e| e.element())
    }

    /// True when no more frames fit.
    pub fn is_full(&self) -> bool {
        self.frames.is_full()
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// True when the batch holds no frame.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The frames, in arrival order.
    pub fn frames(&self) -> &[Frame<'a>] {
        &self.frames
    }

    /// The frames, writable.
    pub fn frames_mut(&mut self) -> &mut [Frame<'a>] {
        &mut self.frames
    }

    /// Removes every frame, keeping the storage.
    pub fn clear(&mut self) {
        self.frames.clear();
    }
}
