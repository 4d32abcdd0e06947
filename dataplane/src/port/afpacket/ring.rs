//! The mmap'ed memory of a packet socket's rings, and all the unsafe code that touches it.
//!
//! [`Ring`] owns a socket and its mapping until it becomes the [`RingArea`] of one half of the
//! port (each half has a socket of its own), or is split into two areas; the mapping is
//! unmapped when its areas are dropped. An area is a byte region shared with the kernel under the TPACKET protocol:
//! status words are only accessed atomically ([`RingArea::status`], [`RingArea::set_status`]),
//! a slot's other bytes are read or written only while its status says user space owns it.
//! Which offsets are slots and which status values mean "ours" is the business of the TPACKET
//! walks (`v2`, `v3`, `tx`); this module only guarantees that no access leaves the area and
//! that the byte slices it hands out never overlap one another.

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Plain-old-data types a ring header may be read as.
///
/// # Safety
///
/// Every bit pattern of `size_of::<Self>()` bytes must be a valid value of the type.
pub(super) unsafe trait Plain: Copy {}

// SAFETY: integers accept every bit pattern.
unsafe impl Plain for u32 {}
// SAFETY: a C struct of integers (and a struct of integers); every bit pattern is valid.
unsafe impl Plain for libc::tpacket2_hdr {}
// SAFETY: a C struct of integers (and a struct of integers); every bit pattern is valid.
unsafe impl Plain for libc::tpacket3_hdr {}

/// The socket and its ring mapping.
#[derive(Debug)]
struct Mapping {
    fd: OwnedFd,
    map: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; which area touches which part of it
// is decided by the areas' own methods, each area covering a disjoint range.
unsafe impl Send for Mapping {}
// SAFETY: `Mapping` itself never reads or writes the mapped memory.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `map`/`len` are exactly what mmap returned, and no area (the only users of
        // the memory) is alive any more: each holds an `Arc` of this value.
        unsafe {
            libc::munmap(self.map.as_ptr().cast(), self.len);
        }
    }
}

/// A packet socket with its rings mapped, not yet split into the halves' areas.
#[derive(Debug)]
pub(super) struct Ring(Mapping);

impl Ring {
    /// Maps `len` bytes of `fd`'s rings (set up before with `PACKET_RX_RING` or
    /// `PACKET_TX_RING`), read-write and shared with the kernel.
    pub(super) fn map(fd: OwnedFd, len: usize) -> io::Result<Ring> {
        // SAFETY: a fresh shared mapping chosen by the kernel; nothing else is affected, and
        // the result is checked below.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map = NonNull::new(map.cast::<u8>()).ok_or_else(|| io::Error::other("mmap NULL"))?;
        Ok(Ring(Mapping { fd, map, len }))
    }

    /// The socket.
    pub(super) fn fd(&self) -> RawFd {
        self.0.fd.as_raw_fd()
    }

    /// The socket, borrowed.
    pub(super) fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.fd.as_fd()
    }

    /// The whole mapping as one area (a socket with one ring).
    pub(super) fn into_area(self) -> RingArea {
        let len = self.0.len;
        self.split(len).0
    }

    /// Splits the mapping into the RX ring (its first `rx_len` bytes) and the TX ring (the
    /// rest). Panics if `rx_len` exceeds the mapping.
    pub(super) fn split(self, rx_len: usize) -> (RingArea, RingArea) {
        let Ring(mapping) = self;
        assert!(rx_len <= mapping.len, "RX ring beyond the mapping");
        let tx_len = mapping.len - rx_len;
        let base = mapping.map;
        let mapping = Arc::new(mapping);
        // SAFETY: `rx_len <= len` (checked above), so the TX area starts inside the mapping
        // or one past its end (then with length 0).
        let tx_base = unsafe { base.add(rx_len) };
        let rx = RingArea {
            base,
            len: rx_len,
            mapping: Arc::clone(&mapping),
        };
        let tx = RingArea {
            base: tx_base,
            len: tx_len,
            mapping,
        };
        (rx, tx)
    }
}

/// One half's part of the mapping: `len` bytes at `base`, touched only through `&mut self`
/// (or the [`Claims`] borrowed from it), so one thread at a time.
#[derive(Debug)]
pub(super) struct RingArea {
    base: NonNull<u8>,
    len: usize,
    mapping: Arc<Mapping>,
}

// SAFETY: the pointer points into the mapping kept alive by `mapping`; the two areas cover
// disjoint ranges and each is used by one thread at a time (its methods take `&mut self` for
// non-atomic writes).
unsafe impl Send for RingArea {}

impl RingArea {
    /// The socket the rings belong to.
    pub(super) fn fd(&self) -> RawFd {
        self.mapping.fd.as_raw_fd()
    }

    /// Panics unless `[off, off + n)` lies inside the area.
    #[inline]
    fn check(&self, off: usize, n: usize) {
        assert!(
            off <= self.len && n <= self.len - off,
            "ring access out of bounds"
        );
    }

    /// The status word at `off` (a slot's `tp_status` or a block's `block_status`), shared
    /// with the kernel. Panics if it is out of the area or not 4-byte aligned.
    #[inline]
    fn status_word(&self, off: usize) -> &AtomicU32 {
        self.check(off, 4);
        assert!(off.is_multiple_of(4), "misaligned ring status word");
        // SAFETY: inside the area (checked), 4-byte aligned (the mapping is page aligned and
        // `off` a multiple of 4); the kernel and user space access the word only atomically.
        unsafe { &*self.base.as_ptr().add(off).cast::<AtomicU32>() }
    }

    /// Loads the status word at `off` (acquire: the slot's contents written by the kernel
    /// before it are visible after).
    #[inline]
    pub(super) fn status(&self, off: usize) -> u32 {
        self.status_word(off).load(Ordering::Acquire)
    }

    /// Stores the status word at `off` (release: everything written to the slot before is
    /// visible to the kernel once it sees the new status).
    #[inline]
    pub(super) fn set_status(&self, off: usize, status: u32) {
        self.status_word(off).store(status, Ordering::Release);
    }

    /// Writes `v` at `off` (any alignment). Panics if it is out of the area.
    #[inline]
    pub(super) fn write_u32(&mut self, off: usize, v: u32) {
        self.check(off, 4);
        // SAFETY: inside the area (checked); `&mut self` excludes every other reference into
        // the area.
        unsafe { self.base.as_ptr().add(off).cast::<u32>().write_unaligned(v) }
    }

    /// The `n` bytes at `off`. Panics if they are out of the area.
    #[inline]
    pub(super) fn bytes_mut(&mut self, off: usize, n: usize) -> &mut [u8] {
        self.check(off, n);
        // SAFETY: inside the area (checked); the slice borrows `self` mutably, so no other
        // reference into the area exists while it lives.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().add(off), n) }
    }

    /// Starts handing out byte slices that live as long as the borrow of the area (a batch of
    /// frames): see [`Claims`].
    #[inline]
    pub(super) fn claims(&mut self) -> Claims<'_> {
        Claims {
            base: self.base,
            len: self.len,
            first: self.len,
            end: 0,
            wrapped: false,
            area: PhantomData,
        }
    }
}

/// Hands out disjoint byte slices of an area for as long as the area stays borrowed.
///
/// Slices are claimed in ring order: each starts at or after the end of the one before, and
/// once the ring wraps around (a claim before the previous one) every further claim must end
/// at or before the start of the first. That keeps all of them disjoint with two comparisons
/// per claim. Status words and headers are read only where no claimed slice lies.
#[derive(Debug)]
pub(super) struct Claims<'a> {
    base: NonNull<u8>,
    len: usize,
    /// Start of the first claimed slice (`len` while none is claimed: a slice claimed at the
    /// very end is empty and leaves nothing to protect).
    first: usize,
    /// End of the last claimed slice.
    end: usize,
    /// A claim started before `end`: the ring wrapped around.
    wrapped: bool,
    area: PhantomData<&'a mut RingArea>,
}

impl<'a> Claims<'a> {
    /// Whether `[off, off + n)` lies inside the area and overlaps no claimed slice.
    #[inline]
    fn free(&self, off: usize, n: usize) -> bool {
        if off > self.len || n > self.len - off {
            return false;
        }
        let (after, before) = (off >= self.end, off + n <= self.first);
        if self.wrapped {
            after && before
        } else {
            after || before
        }
    }

    /// Loads the status word at `off` (acquire). Panics if it is claimed, out of the area or
    /// misaligned.
    #[inline]
    pub(super) fn status(&self, off: usize) -> u32 {
        assert!(
            self.free(off, 4) && off.is_multiple_of(4),
            "claimed ring status word"
        );
        // SAFETY: inside the area, overlapping no handed-out slice (checked) and 4-byte aligned
        // (page-aligned mapping); the kernel and user space access the word only atomically.
        let word = unsafe { &*self.base.as_ptr().add(off).cast::<AtomicU32>() };
        word.load(Ordering::Acquire)
    }

    /// Reads a `T` at `off` (any alignment). Panics if it is claimed or out of the area.
    #[inline]
    pub(super) fn read<T: Plain>(&self, off: usize) -> T {
        assert!(
            self.free(off, std::mem::size_of::<T>()),
            "claimed ring header"
        );
        // SAFETY: inside the area and overlapping no handed-out slice (checked); `T: Plain`
        // accepts whatever bytes are there.
        unsafe { self.base.as_ptr().add(off).cast::<T>().read_unaligned() }
    }

    /// The `n` bytes at `off`, for as long as the area stays borrowed. Panics if they are out
    /// of the area or not in ring order after the slices claimed before (see [`Claims`]).
    #[inline]
    pub(super) fn claim(&mut self, off: usize, n: usize) -> &'a mut [u8] {
        assert!(
            self.free(off, n),
            "ring slice claimed twice or out of order"
        );
        if self.first == self.len {
            self.first = off;
        } else if off < self.end {
            self.wrapped = true;
        }
        self.end = off + n;
        // SAFETY: inside the area and disjoint from every slice handed out before (checked
        // above; the order rule keeps it so for every later one); the area stays mutably
        // borrowed for `'a`, so nothing else reaches these bytes meanwhile.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().add(off), n) }
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use super::*;

    /// The RX and TX areas of a `len`-byte mapping of a scratch file, split in the middle.
    fn areas(tag: &str, len: usize) -> (RingArea, RingArea) {
        let name = format!("sluice-ring-{}-{tag}", std::process::id());
        let path = std::env::temp_dir().join(name);
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        file.set_len(len as u64).unwrap();
        Ring::map(OwnedFd::from(file), len).unwrap().split(len / 2)
    }

    #[test]
    fn areas_and_claims_over_a_mapping() {
        let (mut rx, mut tx) = areas("ok", 8192);
        assert_eq!(rx.fd(), tx.fd());
        tx.bytes_mut(0, 4096).fill(0xaa);
        tx.set_status(0, 7);
        assert_eq!(tx.status(0), 7);
        rx.write_u32(4, 5);
        rx.set_status(600, 9);
        let mut c = rx.claims();
        assert_eq!(c.read::<u32>(4), 5);
        let a = c.claim(1000, 1000);
        let b = c.claim(3000, 1000);
        let wrapped = c.claim(0, 500);
        a.fill(1);
        b.fill(2);
        wrapped.fill(3);
        assert_eq!(c.status(600), 9, "between the wrapped claim and the first");
        assert_eq!((a[999], b[0], wrapped[499]), (1, 2, 3));
        assert_eq!(
            tx.status(4),
            u32::from_ne_bytes([0xaa; 4]),
            "TX area untouched"
        );
    }

    #[test]
    #[should_panic(expected = "claimed twice or out of order")]
    fn an_overlapping_claim_panics() {
        let (mut rx, _tx) = areas("overlap", 8192);
        let mut c = rx.claims();
        c.claim(1000, 1000);
        c.claim(3000, 100);
        c.claim(1500, 10);
    }

    #[test]
    #[should_panic(expected = "claimed ring header")]
    fn reading_inside_a_claim_panics() {
        let (mut rx, _tx) = areas("read", 8192);
        let mut c = rx.claims();
        c.claim(1000, 1000);
        c.claim(0, 100);
        c.read::<u32>(2500);
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn access_beyond_the_area_panics() {
        let (_rx, mut tx) = areas("bounds", 8192);
        tx.write_u32(4094, 1);
    }

    fn claims(len: usize) -> Claims<'static> {
        Claims {
            base: NonNull::dangling(),
            len,
            first: len,
            end: 0,
            wrapped: false,
            area: PhantomData,
        }
    }

    #[test]
    fn claims_stay_disjoint_in_ring_order() {
        let mut c = claims(100);
        c.first = 40;
        c.end = 60;
        assert!(c.free(60, 10) && c.free(0, 40) && !c.free(30, 20) && !c.free(50, 5));
        assert!(!c.free(95, 10) && !c.free(usize::MAX, 2), "out of the area");
        c.wrapped = true;
        c.end = 20;
        assert!(c.free(20, 20) && !c.free(10, 5) && !c.free(30, 20) && !c.free(70, 5));
    }
}
