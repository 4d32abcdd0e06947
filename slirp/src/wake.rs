//! How the event loop waits for its next events. Sleeping in `epoll_wait` costs whoever wakes
//! us: the guest's transmit path (its TAP write wakes this process) or the host peer's. On a
//! VM's vCPUs a wake-up is an inter-processor interrupt, and it dominated two of the bench's
//! rows (bench/RESULTS.md, "Rootless: naps in bulk, spins in request/response"):
//!
//! - bulk from the guest: after a drain that read a large TCP frame, the loop naps briefly
//!   (a timed sleep, off the TAP's wait queue, so the guest's next frames queue up without
//!   waking anyone) and then looks without blocking: one wake-up and one read per several
//!   frames, and fewer ACKs per byte;
//! - request/response: after a small exchange (TCP either way, UDP from the host), the loop
//!   polls without sleeping for a short while, so the answer (from the host or the guest)
//!   finds it awake.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

/// A frame from the TAP at least this long is bulk TCP (a TSO super-frame, or a segment of a
/// large-MTU guest): the next wait is a nap.
pub const BULK_FRAME: usize = 32 * 1024;
/// How long a nap lasts (the kernel's timer slack, 50 us for normal threads, comes on top).
/// Measured: 40-100 us level, 20 us and 200 us slower.
pub const NAP: Duration = Duration::from_micros(60);
/// An exchange ([`WakePolicy::on_exchange`]) shorter than this is small.
pub const SMALL_PAYLOAD: usize = 2048;
/// How long the loop polls without sleeping after a small exchange (30 us measured close; the
/// bench's round trips take 50-90 us).
pub const SPIN: Duration = Duration::from_micros(100);

/// What the loop does before its next look at the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Sleep this long, then look without blocking.
    Nap(Duration),
    /// Look without blocking, after yielding the CPU to whatever else is runnable on it (on a
    /// busy machine the answer's own process may be waiting behind the spin: measured, a spin
    /// that did not yield doubled TCP_RR's round trip and its p99 under load).
    Poll,
    /// Block until an event (or the loop's own timeout).
    Block,
}

/// The loop's recent traffic, deciding its next [`Wait`].
#[derive(Debug, Default)]
pub struct WakePolicy {
    nap_due: bool,
    spin_until: Option<Instant>,
}

impl WakePolicy {
    /// A frame of `len` bytes was read from the TAP.
    #[inline]
    pub fn on_guest_frame(&mut self, len: usize) {
        if len >= BULK_FRAME {
            self.nap_due = true;
        }
    }

    /// `len` bytes went between the guest and a host socket: a guest TCP segment's payload,
    /// the frames a TCP push from the host sent to the guest, or a datagram from a host UDP
    /// socket to the guest (not the guest's datagrams: a guest flooding small datagrams would
    /// keep the loop spinning beside the host's receiver).
    #[inline]
    pub fn on_exchange(&mut self, len: usize, now: impl FnOnce() -> Instant) {
        if len > 0 && len < SMALL_PAYLOAD {
            self.spin_until = Some(now() + SPIN);
        }
    }

    /// The wait before the next look; a nap is taken once per bulk drain.
    pub fn next(&mut self, now: Instant) -> Wait {
        if std::mem::take(&mut self.nap_due) {
            return Wait::Nap(NAP);
        }
        match self.spin_until {
            Some(until) if now < until => Wait::Poll,
            _ => {
                self.spin_until = None;
                Wait::Block
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bulk_frame_earns_one_nap() {
        let (mut w, now) = (WakePolicy::default(), Instant::now());
        w.on_guest_frame(BULK_FRAME - 1);
        assert_eq!(w.next(now), Wait::Block, "a small frame does not");
        w.on_guest_frame(65_000);
        w.on_guest_frame(BULK_FRAME);
        assert_eq!(w.next(now), Wait::Nap(NAP));
        assert_eq!(w.next(now), Wait::Block, "the next drain decides again");
    }

    #[test]
    fn a_small_exchange_polls_until_the_spin_ends() {
        let (mut w, t0) = (WakePolicy::default(), Instant::now());
        w.on_exchange(0, || t0);
        w.on_exchange(SMALL_PAYLOAD, || t0);
        assert_eq!(
            w.next(t0),
            Wait::Block,
            "no payload and bulk payloads do not spin"
        );
        w.on_exchange(64, || t0);
        assert_eq!(w.next(t0), Wait::Poll);
        assert_eq!(w.next(t0 + SPIN / 2), Wait::Poll);
        assert_eq!(w.next(t0 + SPIN), Wait::Block);
        assert_eq!(w.next(t0), Wait::Block, "a spin that ended is forgotten");
    }

    #[test]
    fn a_nap_comes_before_a_spin() {
        let (mut w, t0) = (WakePolicy::default(), Instant::now());
        w.on_exchange(1, || t0);
        w.on_guest_frame(BULK_FRAME);
        assert_eq!(w.next(t0), Wait::Nap(NAP));
        assert_eq!(w.next(t0), Wait::Poll);
    }
}
