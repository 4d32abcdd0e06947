//! The TPACKET_V2 RX walk: fixed-size slots, each with its own `tp_status`, handed over by the
//! kernel one by one as soon as it has written them (see the module docs of `afpacket`).

use super::config::{v2_geometry, RX_RESERVE, V2_HDRLEN};
use super::ring::{Claims, RingArea};
use super::rx::{Next, RxHdr, Walk};

/// Read position in a V2 RX ring.
#[derive(Debug)]
pub(super) struct V2Walk {
    pub(super) frame_size: usize,
    per_block: usize,
    pub(super) block_size: usize,
    pub(super) block_count: usize,
    /// `per_block * block_count`.
    pub(super) frame_count: usize,
    /// Most slots user space holds at once (half the ring): the kernel keeps room for a burst
    /// while a batch is processed (a sender's `sendto` delivers its whole batch into the ring
    /// at once, and the slots are few).
    max_held: usize,
    /// The next slot to read.
    head: usize,
    /// Handed-out slots before `head` still owned by user space.
    to_release: usize,
}

impl V2Walk {
    /// The walk of a ring of `frame_size`-byte slots, at least `frame_count` of them, laid out
    /// by [`v2_geometry`]; the reason when the sizes cannot make a ring.
    pub(super) fn new(
        frame_size: usize,
        frame_count: usize,
        page: usize,
    ) -> Result<V2Walk, &'static str> {
        if !frame_size.is_multiple_of(libc::TPACKET_ALIGNMENT)
            || frame_size < V2_HDRLEN + RX_RESERVE
        {
            return Err(
                "RX slots must be 16-byte multiples larger than the slot header and reserve",
            );
        }
        let (block_size, per_block, block_count) = v2_geometry(frame_size, frame_count, page)
            .ok_or("RX slot size or count is zero or overflows")?;
        Ok(V2Walk {
            frame_size,
            per_block,
            block_size,
            block_count,
            frame_count: per_block * block_count,
            max_held: (per_block * block_count / 2).max(1),
            head: 0,
            to_release: 0,
        })
    }

    /// Offset of slot `i` (`i < frame_count`) in the ring: slots never straddle blocks.
    #[inline]
    fn slot(&self, i: usize) -> usize {
        i / self.per_block * self.block_size + i % self.per_block * self.frame_size
    }
}

impl Walk for V2Walk {
    const HDRLEN: usize = V2_HDRLEN;

    #[inline]
    fn next<'a>(&mut self, claims: &mut Claims<'a>) -> Next<'a> {
        if self.to_release >= self.max_held {
            return Next::Empty;
        }
        let slot = self.slot(self.head);
        let status = claims.status(slot);
        if status & libc::TP_STATUS_USER == 0 {
            return Next::Empty;
        }
        self.head = (self.head + 1) % self.frame_count;
        self.to_release += 1;
        // The slot is ours (TP_STATUS_USER, acquired above) and starts with its header.
        let h: libc::tpacket2_hdr = claims.read(slot);
        let hdr = RxHdr {
            status,
            len: h.tp_len,
            snaplen: h.tp_snaplen,
            mac: h.tp_mac,
            vlan_tci: h.tp_vlan_tci,
            vlan_tpid: h.tp_vlan_tpid,
        };
        // [V2_HDRLEN, frame_size) of the slot is user space's until `release`.
        let area = claims.claim(slot + V2_HDRLEN, self.frame_size - V2_HDRLEN);
        Next::Frame(hdr, area)
    }

    fn release(&mut self, area: &RingArea) {
        let first = self.head + self.frame_count - self.to_release;
        for i in 0..self.to_release {
            let slot = self.slot((first + i) % self.frame_count);
            area.set_status(slot, libc::TP_STATUS_KERNEL);
        }
        self.to_release = 0;
    }
}
