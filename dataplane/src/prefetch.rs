//! A software prefetch hint, for the tables whose lookups a batch issues ahead of use.

/// Asks the CPU to start loading the cache line at `p` (a hint: it never faults, whatever
/// the address). A no-op on other architectures.
#[inline(always)]
#[allow(unsafe_code)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of the x86_64 baseline, and a prefetch only hints the cache: it
    // neither reads into the program nor faults on any address.
    unsafe {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
