//! Transparent huge pages for the large tables the fast path reads at random (the conntrack's
//! slab and index). At a million flows they span tens of megabytes: with 4 KiB pages nearly
//! every lookup also misses the TLB and pays a page walk, which a prefetch cannot hide as well
//! as a cache miss. Hosts usually run THP in `madvise` mode, so the tables ask for it.

/// Size of a huge page on x86_64 and aarch64 (4 KiB base pages).
const HUGE: usize = 2 << 20;

/// Asks the kernel to back the whole 2 MiB pages inside `v`'s buffer (its capacity, not only
/// its length) with huge pages. Pages not yet touched are then faulted in huge. A hint: it
/// does nothing on small buffers, and failure (THP off, another OS) changes nothing.
#[allow(unsafe_code)]
pub(crate) fn advise<T>(v: &Vec<T>) {
    let bytes = v.capacity() * std::mem::size_of::<T>();
    if bytes < HUGE {
        return;
    }
    let start = v.as_ptr() as usize;
    let first = start.next_multiple_of(HUGE);
    let end = (start + bytes) / HUGE * HUGE;
    if end <= first {
        return;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: the range lies inside the allocation `v` owns; MADV_HUGEPAGE changes how the
    // pages are backed, never their contents or the mapping's validity.
    unsafe {
        libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The `VmFlags` line of the mapping in `/proc/self/smaps` that holds address `at`.
    fn vm_flags(at: usize) -> Option<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            let range = line.split_whitespace().next().unwrap_or("");
            if let Some((lo, hi)) = range.split_once('-') {
                if let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                {
                    inside = lo <= at && at < hi;
                    continue;
                }
            }
            if inside {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    return Some(flags.to_string());
                }
            }
        }
        None
    }

    #[test]
    fn a_large_buffer_is_advised() {
        if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
            eprintln!("skipped: this kernel has no transparent huge pages");
            return;
        }
        let big: Vec<u8> = Vec::with_capacity(8 * HUGE);
        advise(&big);
        let inner = (big.as_ptr() as usize).next_multiple_of(HUGE);
        let flags = vm_flags(inner).expect("the buffer is mapped");
        assert!(flags.split_whitespace().any(|f| f == "hg"), "{flags}");
    }
}
