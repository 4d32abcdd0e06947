//! The TPACKET_V3 RX walk: variable-size frames packed into blocks, each block handed over by
//! the kernel when it is full or its retire timer fires (see the module docs of `afpacket`).

use super::config::V3_HDRLEN;
use super::ring::{Claims, RingArea};
use super::rx::{Next, RxHdr, Walk};

/// Offsets inside `tpacket_block_desc` (`version`, `offset_to_priv`, then `tpacket_hdr_v1`).
const BLOCK_STATUS_OFF: usize = 8;
const BLOCK_NUM_PKTS_OFF: usize = 12;
const BLOCK_FIRST_PKT_OFF: usize = 16;

/// Read position in a V3 RX ring.
#[derive(Debug)]
pub(super) struct V3Walk {
    pub(super) block_size: usize,
    pub(super) block_count: usize,
    pub(super) retire_ms: u32,
    /// The block being read.
    cur: usize,
    /// `cur` is owned by user space and `pkts_left`/`next_off` describe it.
    in_block: bool,
    /// Frames of `cur` not handed out yet.
    pkts_left: u32,
    /// Offset of the next frame's header inside `cur`.
    next_off: usize,
    /// Fully handed-out blocks before `cur` still owned by user space.
    to_release: usize,
}

impl V3Walk {
    /// The walk of a ring of `block_count` blocks of `block_size` bytes; the reason when the
    /// sizes cannot make a ring.
    pub(super) fn new(
        block_size: usize,
        block_count: usize,
        retire_ms: u32,
        page: usize,
    ) -> Result<V3Walk, &'static str> {
        if block_size == 0 || !block_size.is_multiple_of(page) || block_count == 0 {
            return Err("RX blocks must be a non-zero multiple of the page size");
        }
        Ok(V3Walk {
            block_size,
            block_count,
            retire_ms,
            cur: 0,
            in_block: false,
            pkts_left: 0,
            next_off: 0,
            to_release: 0,
        })
    }

    /// The next frame of the current block (at offset `block` in the ring) as (header offset
    /// in the block, end of its area in the block, header). Consumes it from the block even
    /// when it is then found malformed.
    fn next_frame(
        &mut self,
        claims: &Claims<'_>,
        block: usize,
    ) -> Option<(usize, usize, libc::tpacket3_hdr)> {
        let off = self.next_off;
        self.pkts_left -= 1;
        if off + V3_HDRLEN > self.block_size {
            self.pkts_left = 0;
            return None;
        }
        let hdr: libc::tpacket3_hdr = claims.read(block + off);
        let next = hdr.tp_next_offset as usize;
        let end = if self.pkts_left > 0 && next >= V3_HDRLEN && off + next <= self.block_size {
            self.next_off = off + next;
            off + next
        } else {
            // Last frame, or a chain that would leave the block: stop after this frame.
            self.pkts_left = 0;
            self.block_size
        };
        Some((off, end, hdr))
    }
}

impl Walk for V3Walk {
    const HDRLEN: usize = V3_HDRLEN;

    #[inline]
    fn next<'a>(&mut self, claims: &mut Claims<'a>, _long_ok: bool) -> Next<'a> {
        loop {
            let block = self.cur * self.block_size;
            if !self.in_block {
                if self.to_release == self.block_count {
                    return Next::Empty;
                }
                if claims.status(block + BLOCK_STATUS_OFF) & libc::TP_STATUS_USER == 0 {
                    return Next::Empty;
                }
                // The descriptor lies at the start of the block, which is ours now.
                self.pkts_left = claims.read::<u32>(block + BLOCK_NUM_PKTS_OFF);
                self.next_off = claims.read::<u32>(block + BLOCK_FIRST_PKT_OFF) as usize;
                self.in_block = true;
            }
            if self.pkts_left == 0 {
                self.in_block = false;
                self.to_release += 1;
                self.cur = (self.cur + 1) % self.block_count;
                continue;
            }
            let Some((off, end, h)) = self.next_frame(claims, block) else {
                return Next::Malformed;
            };
            let hdr = RxHdr {
                status: h.tp_status,
                len: h.tp_len,
                snaplen: h.tp_snaplen,
                mac: h.tp_mac,
                vlan_tci: h.hv1.tp_vlan_tci as u16,
                vlan_tpid: h.hv1.tp_vlan_tpid,
            };
            // [area_start, end) lies inside block `cur` (end <= block_size), which user space
            // owns until `release`.
            let area_start = off + V3_HDRLEN;
            let area = claims.claim(block + area_start, end.saturating_sub(area_start));
            return Next::Frame(hdr, area);
        }
    }

    fn release(&mut self, area: &RingArea) {
        let first = self.cur + self.block_count - self.to_release;
        for i in 0..self.to_release {
            let block = (first + i) % self.block_count * self.block_size;
            area.set_status(block + BLOCK_STATUS_OFF, libc::TP_STATUS_KERNEL);
        }
        self.to_release = 0;
    }
}
