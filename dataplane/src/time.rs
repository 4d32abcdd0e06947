//! Time as the fast path sees it: a monotonic millisecond count read once per batch by the I/O
//! layer and passed in, so the core stays deterministic and testable.

/// Milliseconds on a monotonic clock with an arbitrary origin.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Millis(pub u64);

impl Millis {
    /// The instant `secs` seconds later.
    pub fn plus_secs(self, secs: u32) -> Millis {
        Millis(self.0.saturating_add(u64::from(secs) * 1000))
    }

    /// Whole seconds since the origin.
    pub fn as_secs(self) -> u64 {
        self.0 / 1000
    }

    /// The current time of the process's monotonic clock (CLOCK_MONOTONIC).
    #[allow(unsafe_code)]
    pub fn now() -> Millis {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we pass and reads nothing else.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        Millis(ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_and_clock() {
        assert_eq!(Millis(1500).plus_secs(2), Millis(3500));
        assert_eq!(Millis(3999).as_secs(), 3);
        let a = Millis::now();
        let b = Millis::now();
        assert!(b >= a);
    }
}
