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
    fn next<'a>(&mut self, claims: &mut Claims<'a>, long_ok: bool) -> Next<'a> {
        if self.to_release >= self.max_held {
            return Next::Empty;
        }
        let slot = self.slot(self.head);
        let status = claims.status(slot);
        if status & libc::TP_STATUS_USER == 0 || (status & libc::TP_STATUS_COPY != 0 && !long_ok) {
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::tests::{small, V2_SMALL_SLOTS};
    use super::super::{open, AfPacketRx, RxRing, DEFAULT_RX_V2};
    use crate::batch::Batch;
    use crate::frame::PortId;
    use crate::port::testnet::{collect, is_test_frame, test_frame, wait_readable, Netns, RawSock};
    use crate::port::RxPort;

    /// A frame longer than a V2 slot is truncated by the kernel (`tp_snaplen < tp_len`): it is
    /// skipped and counted, and the slot is reused.
    #[test]
    fn v2_truncated_frames_are_counted() {
        let ns = Netns::new("t");
        ns.ip("link add name a mtu 4000 type veth peer name b mtu 4000");
        ns.ip("link set dev a up");
        ns.ip("link set dev b up");
        let (mut rx, _tx) = ns
            .enter(|| open("b", PortId(2), &small(V2_SMALL_SLOTS)))
            .unwrap();
        let raw = ns.enter(|| RawSock::open("a"));
        raw.send(&test_frame(None, 6, 3000));
        raw.send(&test_frame(None, 7, 100));
        let got = collect(&mut rx, 1, Duration::from_secs(3), |f, _| {
            is_test_frame(f, 6) || is_test_frame(f, 7)
        });
        assert_eq!(got.len(), 1);
        assert!(is_test_frame(&got[0].0, 7));
        assert_eq!(rx.malformed(), 1);
    }

    /// User space holds at most half of the V2 slots: a batch is cut short, the rest waits
    /// for the next `rx` (after the release of the first half).
    #[test]
    fn v2_hands_out_at_most_half_the_ring() {
        let ns = Netns::new("h");
        ns.ip("link add name a type veth peer name b");
        ns.ip("link set dev a up");
        ns.ip("link set dev b up");
        let ring = RxRing::V2 {
            frame_size: 2048,
            frame_count: 32,
        };
        let (mut rx, _tx) = ns.enter(|| open("b", PortId(2), &small(ring))).unwrap();
        assert_eq!(rx.ring(), ring);
        let raw = ns.enter(|| RawSock::open("a"));
        for _ in 0..24 {
            raw.send(&test_frame(None, 9, 60));
        }
        // Link-up noise (IPv6) may occupy slots too: count only ours, in batches.
        let mut sizes = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut total = 0;
        while total < 24 && Instant::now() < deadline {
            let mut batch = Batch::new();
            let n = rx.rx(&mut batch).unwrap();
            assert!(n <= 16, "{n} frames in one batch");
            let ours = batch
                .frames()
                .iter()
                .filter(|f| is_test_frame(f.data(), 9))
                .count();
            drop(batch);
            rx.release();
            if n > 0 {
                sizes.push(n);
            }
            total += ours;
        }
        assert_eq!(total, 24);
        assert!(sizes.len() >= 2, "{sizes:?}");
        let drops = rx.kernel_stats().unwrap().drops;
        assert_eq!(drops, 0);
    }

    /// Waits on the descriptor (`poll`, 50 ms at a time, like a worker) and reads until the
    /// frame with `marker` comes out of `rx`; the time from `since`, or `None` at `deadline`.
    fn arrival(
        rx: &mut AfPacketRx,
        marker: u8,
        since: Instant,
        deadline: Instant,
    ) -> Option<Duration> {
        while Instant::now() < deadline {
            wait_readable([rx.raw_fd().unwrap()], Duration::from_millis(50));
            let mut batch = Batch::new();
            rx.rx(&mut batch).unwrap();
            let seen = batch
                .frames()
                .iter()
                .any(|f| is_test_frame(f.data(), marker));
            drop(batch);
            rx.release();
            if seen {
                return Some(since.elapsed());
            }
        }
        None
    }

    /// The point of V2: a single frame is handed over (and `poll` wakes) as soon as the kernel
    /// wrote it, where V3 holds it in the open block until the retire timer fires. Both rings
    /// are on the same interface and see the same frame; the V3 timer is armed when the ring
    /// opens its first block, just before the frame is sent, so it fires about 1 s later.
    #[test]
    fn v2_hands_over_a_lone_frame_at_once() {
        let ns = Netns::new("w");
        ns.ip("link add name a type veth peer name b");
        ns.ip("link set dev a up");
        ns.ip("link set dev b up");
        let raw = ns.enter(|| RawSock::open("a"));
        let (mut r2, _t2) = ns
            .enter(|| open("b", PortId(2), &small(DEFAULT_RX_V2)))
            .unwrap();
        let v3 = RxRing::V3 {
            block_size: 256 << 10,
            block_count: 4,
            retire_ms: 1000,
        };
        let (mut r3, _t3) = ns.enter(|| open("b", PortId(3), &small(v3))).unwrap();
        let sent = Instant::now();
        raw.send(&test_frame(None, 8, 46));
        let window = sent + Duration::from_millis(200);
        let v2_at = arrival(&mut r2, 8, sent, window);
        let v3_early = arrival(&mut r3, 8, sent, window);
        let v3_at = arrival(&mut r3, 8, sent, sent + Duration::from_secs(3));
        eprintln!("V2: {v2_at:?}, V3 (retire 1000 ms): {v3_at:?}");
        assert!(v2_at.is_some(), "V2 did not deliver within 200 ms");
        assert_eq!(v3_early, None, "V3 delivered before its retire timer");
        assert!(v3_at.is_some(), "the frame never reached the V3 ring");
    }
}
