//! Guest datagrams of one flow gathered while the TAP is drained, so they leave in one
//! `sendmmsg` instead of one `send` each; runs of equal-sized datagrams travel as one UDP GSO
//! message (`UDP_SEGMENT`), which the host's stack carries as one packet as far as it can.
//! This module only plans the messages; [`crate::sys::send_messages`] sends them.
#![forbid(unsafe_code)]

/// Most datagrams in a batch (and GSO segments in one message: the kernel takes 64 at least).
pub const MAX_DATAGRAMS: usize = 64;
/// Bytes of payload a batch holds (a GSO message is at most this, under IP's 64 KiB).
pub const MAX_BYTES: usize = 60 * 1024;
/// The largest datagram sent as a GSO segment: one that fits a 1500-byte path MTU with IPv6's
/// headers; larger ones, where fragmenting is the host stack's business, go one by one.
pub const MAX_GSO_SEGMENT: usize = 1500 - 48;

/// One message of a batch: `len` payload bytes at `at` of the batch's buffer, cut into
/// `seg`-byte datagrams by the kernel when `seg` is not 0 (the last may be shorter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutMsg {
    /// Offset in the batch's buffer.
    pub at: usize,
    /// Length in bytes.
    pub len: usize,
    /// The GSO segment size, or 0 for a single datagram.
    pub seg: u16,
    /// How many datagrams the message carries.
    pub count: usize,
}

/// The datagrams waiting for one flow (by its handle).
#[derive(Debug, Default)]
pub struct UdpBatch {
    flow: Option<usize>,
    buf: Vec<u8>,
    lens: Vec<u16>,
}

impl UdpBatch {
    /// An empty batch (its buffer grows on first use).
    pub fn new() -> Self {
        Self::default()
    }

    /// The flow whose datagrams wait, if any.
    pub fn flow(&self) -> Option<usize> {
        self.flow
    }

    /// True when a datagram of `len` bytes for `flow` can join without a flush first.
    pub fn fits(&self, flow: usize, len: usize) -> bool {
        self.flow.is_none_or(|f| f == flow)
            && self.lens.len() < MAX_DATAGRAMS
            && self.buf.len() + len <= MAX_BYTES
    }

    /// Adds a datagram for `flow`; the caller checked [`UdpBatch::fits`] (false otherwise,
    /// and nothing is added).
    pub fn push(&mut self, flow: usize, payload: &[u8]) -> bool {
        if !self.fits(flow, payload.len()) {
            return false;
        }
        self.flow = Some(flow);
        self.buf.extend_from_slice(payload);
        self.lens.push(payload.len() as u16);
        true
    }

    /// The payload bytes of the waiting datagrams, back to back.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Plans the messages carrying the waiting datagrams in order into `out` (cleared first):
    /// with `gso`, each run of datagrams of one size (up to [`MAX_GSO_SEGMENT`], the run's
    /// last one possibly shorter) is one message; otherwise one message per datagram.
    pub fn plan(&self, gso: bool, out: &mut Vec<OutMsg>) {
        out.clear();
        let mut at = 0;
        let mut i = 0;
        while i < self.lens.len() {
            let seg = usize::from(self.lens[i]);
            let mut msg = OutMsg {
                at,
                len: seg,
                seg: 0,
                count: 1,
            };
            i += 1;
            if gso && seg > 0 && seg <= MAX_GSO_SEGMENT {
                while let Some(&next) = self.lens.get(i) {
                    let next = usize::from(next);
                    if next > seg || next == 0 {
                        break;
                    }
                    msg.len += next;
                    msg.count += 1;
                    i += 1;
                    if next < seg {
                        break;
                    }
                }
                if msg.count > 1 {
                    msg.seg = seg as u16;
                }
            }
            at += msg.len;
            out.push(msg);
        }
    }

    /// Empties the batch.
    pub fn clear(&mut self) {
        self.flow = None;
        self.buf.clear();
        self.lens.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(lens: &[usize]) -> UdpBatch {
        let mut b = UdpBatch::new();
        for &n in lens {
            assert!(b.push(7, &vec![n as u8; n]));
        }
        b
    }

    fn msg(at: usize, len: usize, seg: u16, count: usize) -> OutMsg {
        OutMsg {
            at,
            len,
            seg,
            count,
        }
    }

    #[test]
    fn runs_of_one_size_become_gso_messages() {
        let b = batch(&[64, 64, 64, 10, 64, 100, 5, 2000, 2000, 5]);
        let mut out = Vec::new();
        b.plan(true, &mut out);
        assert_eq!(
            out,
            [
                msg(0, 202, 64, 4),
                msg(202, 64, 0, 1),
                msg(266, 105, 100, 2),
                msg(371, 2000, 0, 1),
                msg(2371, 2000, 0, 1),
                msg(4371, 5, 0, 1),
            ]
        );
        b.plan(false, &mut out);
        assert_eq!(out.len(), 10);
        assert!(out.iter().all(|m| m.seg == 0 && m.count == 1));
        assert_eq!(out[9], msg(4371, 5, 0, 1));
        assert_eq!(b.bytes().len(), 4376);
        assert_eq!(&b.bytes()[202..204], &[64, 64]);
    }

    #[test]
    fn empty_datagrams_stay_alone() {
        let b = batch(&[0, 0, 8, 0]);
        let mut out = Vec::new();
        b.plan(true, &mut out);
        assert_eq!(
            out,
            [
                msg(0, 0, 0, 1),
                msg(0, 0, 0, 1),
                msg(0, 8, 0, 1),
                msg(8, 0, 0, 1)
            ]
        );
    }

    #[test]
    fn a_batch_holds_one_flow_and_has_limits() {
        let mut b = UdpBatch::new();
        assert_eq!(b.flow(), None);
        assert!(b.push(3, b"abc"));
        assert_eq!(b.flow(), Some(3));
        assert!(!b.fits(4, 1));
        assert!(!b.push(4, b"x"));
        assert!(!b.fits(3, MAX_BYTES));
        for _ in 1..MAX_DATAGRAMS {
            assert!(b.push(3, b"y"));
        }
        assert!(!b.push(3, b"z"));
        let mut out = Vec::new();
        b.plan(true, &mut out);
        assert_eq!(out.iter().map(|m| m.count).sum::<usize>(), MAX_DATAGRAMS);
        b.clear();
        assert_eq!((b.flow(), b.bytes().len()), (None, 0));
        assert!(b.fits(4, MAX_BYTES));
    }
}
