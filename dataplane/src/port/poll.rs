//! What a worker does between poll rounds: the busy-poll back-off.
//!
//! Spinning on empty rings keeps request/response latency low (a frame that lands while the
//! worker spins is picked up at once, without an epoll wake-up), but on a small machine every
//! empty poll is CPU taken from the endpoints that produce the frames: with bulk TCP on two
//! CPUs, a worker that spins between super-frames slows the iperf3 sender and receiver down.
//! [`PollPolicy`] is the sans-IO state machine that decides: after a round that found frames
//! the worker polls again at once; after a few empty rounds it keeps polling but yields its
//! CPU between rounds (`sched_yield`: free when nothing else wants the CPU, so latency stays,
//! and the endpoints run when they are runnable); once the busy-poll budget since the last
//! frame is spent it blocks in epoll on the rings' descriptors.

use std::time::{Duration, Instant};

/// What the worker does before its next poll round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idle {
    /// Poll again at once (a CPU pause hint at most).
    Spin,
    /// Give the CPU to any runnable thread (`sched_yield`), then poll again.
    Yield,
    /// Sleep in epoll until a port is readable, a command arrives or the timeout passes.
    Block(Duration),
}

/// The busy-poll back-off of one worker: fed the frames found by each poll round, it answers
/// with what to do next ([`Idle`]).
#[derive(Clone, Debug)]
pub struct PollPolicy {
    /// Empty rounds spun before yielding.
    spin_polls: u32,
    /// How long after the last frame the worker keeps polling before it blocks.
    budget: Duration,
    /// The epoll timeout once blocked.
    block: Duration,
    /// Empty rounds since the last frame.
    empty: u32,
    /// When the last frame was found.
    last_frame: Instant,
}

impl PollPolicy {
    /// Empty rounds spun before the worker starts yielding: a round over a few empty rings
    /// costs well under a microsecond, so this covers the few microseconds in which the next
    /// frame of a burst usually lands.
    pub const SPIN_POLLS: u32 = 32;

    /// A policy that polls for `busy_poll` after the last frame (0: block at the first empty
    /// round) and then blocks for at most `block` at a time; `now` counts as the last frame.
    pub fn new(busy_poll: Duration, block: Duration, now: Instant) -> Self {
        PollPolicy {
            spin_polls: Self::SPIN_POLLS,
            budget: busy_poll,
            block,
            empty: 0,
            last_frame: now,
        }
    }

    /// The answer after a poll round that found `frames` frames at `now`.
    #[inline]
    pub fn after_round(&mut self, frames: usize, now: Instant) -> Idle {
        if frames > 0 {
            self.empty = 0;
            self.last_frame = now;
            return Idle::Spin;
        }
        self.empty = self.empty.saturating_add(1);
        if now.saturating_duration_since(self.last_frame) >= self.budget {
            Idle::Block(self.block)
        } else if self.empty <= self.spin_polls {
            Idle::Spin
        } else {
            Idle::Yield
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: Duration = Duration::from_millis(100);

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn spins_then_yields_then_blocks_when_no_frame_comes() {
        let t0 = Instant::now();
        let mut p = PollPolicy::new(us(50), BLOCK, t0);
        for i in 1..=PollPolicy::SPIN_POLLS {
            assert_eq!(
                p.after_round(0, t0 + Duration::from_nanos(i.into())),
                Idle::Spin
            );
        }
        assert_eq!(p.after_round(0, t0 + us(10)), Idle::Yield);
        assert_eq!(p.after_round(0, t0 + us(49)), Idle::Yield);
        assert_eq!(p.after_round(0, t0 + us(50)), Idle::Block(BLOCK));
        assert_eq!(p.after_round(0, t0 + us(150_000)), Idle::Block(BLOCK));
    }

    #[test]
    fn a_frame_starts_the_spin_again() {
        let t0 = Instant::now();
        let mut p = PollPolicy::new(us(50), BLOCK, t0);
        for _ in 0..100 {
            p.after_round(0, t0 + us(1));
        }
        assert_eq!(p.after_round(0, t0 + us(2)), Idle::Yield);
        assert_eq!(p.after_round(3, t0 + us(60)), Idle::Spin);
        assert_eq!(p.after_round(0, t0 + us(61)), Idle::Spin);
        // The budget counts from the last frame, not from the start.
        assert_eq!(p.after_round(0, t0 + us(109)), Idle::Spin);
        assert_eq!(p.after_round(0, t0 + us(110)), Idle::Block(BLOCK));
    }

    #[test]
    fn no_budget_blocks_at_the_first_empty_round() {
        let t0 = Instant::now();
        let mut p = PollPolicy::new(Duration::ZERO, BLOCK, t0);
        assert_eq!(p.after_round(1, t0), Idle::Spin);
        assert_eq!(p.after_round(0, t0), Idle::Block(BLOCK));
    }

    #[test]
    fn a_clock_that_goes_back_does_not_block_early_or_panic() {
        let t0 = Instant::now() + us(100);
        let mut p = PollPolicy::new(us(50), BLOCK, t0);
        assert_eq!(p.after_round(0, t0 - us(100)), Idle::Spin);
    }
}
