//! The one copy on the TX path, shared by every port: the frame is copied from wherever the
//! pipeline left it (an RX ring slot, a pool buffer) into the egress slot (TX ring frame, TAP
//! staging buffer), and the 802.1Q tag is pushed, replaced or stripped on the way, so that
//! retagging costs nothing beyond the copy that has to happen anyway.

use crate::frame::{Frame, Offload};

/// The 802.1Q TPID.
const TPID_8021Q: u16 = 0x8100;
/// Destination and source MAC.
const MACS_LEN: usize = 12;
/// Length of an 802.1Q tag (TPID + TCI).
pub const VLAN_TAG_LEN: usize = 4;
/// Largest 802.1Q VLAN id.
const MAX_VID: u16 = 4095;

/// Why a frame could not be copied into an egress slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    /// The frame is shorter than an Ethernet header (or its 802.1Q tag is cut off).
    #[error("frame of {0} bytes is too short for its Ethernet header")]
    Truncated(usize),
    /// The requested VLAN id does not fit 12 bits.
    #[error("VLAN id {0} is out of range")]
    BadVlan(u16),
    /// The egress slot is smaller than the retagged frame.
    #[error("retagged frame needs {needed} bytes, slot has {available}")]
    NoRoom {
        /// Length of the retagged frame.
        needed: usize,
        /// Size of the slot.
        available: usize,
    },
}

/// The VLAN id of the 802.1Q tag an Ethernet frame carries, `Ok(None)` when untagged.
pub fn frame_tag(eth: &[u8]) -> Result<Option<u16>, EgressError> {
    let ethertype = eth
        .get(MACS_LEN..MACS_LEN + 2)
        .ok_or(EgressError::Truncated(eth.len()))?;
    if u16::from_be_bytes([ethertype[0], ethertype[1]]) != TPID_8021Q {
        return Ok(None);
    }
    let tci = eth
        .get(MACS_LEN + 2..MACS_LEN + VLAN_TAG_LEN)
        .ok_or(EgressError::Truncated(eth.len()))?;
    Ok(Some(u16::from_be_bytes([tci[0], tci[1]]) & MAX_VID))
}

/// Copies `frame`'s Ethernet frame into `dst` so that the copy carries exactly `want_tag`
/// (pushing, replacing or stripping the 802.1Q tag; a written tag has PCP and DEI 0) and
/// returns the copy's length.
///
/// The length difference to `frame.len()` is the shift to apply to the offload offsets with
/// [`retag_offload`].
pub fn copy_retagged(
    frame: &Frame<'_>,
    want_tag: Option<u16>,
    dst: &mut [u8],
) -> Result<usize, EgressError> {
    copy_retagged_bytes(frame.data(), want_tag, dst)
}

/// A frame retagged without copying it: its MACs, the tag to write (none, or 4 bytes) and
/// everything after its own tag, for a gathering write (`sendmsg`).
#[derive(Debug)]
pub struct RetaggedParts<'a> {
    /// Destination and source MAC.
    pub macs: &'a [u8],
    /// The 802.1Q tag (TPID and TCI) to write after the MACs; `tag_len` bytes of it count.
    pub tag: [u8; VLAN_TAG_LEN],
    /// 0 or [`VLAN_TAG_LEN`].
    pub tag_len: usize,
    /// Ethertype and payload.
    pub rest: &'a [u8],
}

impl RetaggedParts<'_> {
    /// Length of the retagged frame.
    pub fn len(&self) -> usize {
        self.macs.len() + self.tag_len + self.rest.len()
    }

    /// Whether the retagged frame is empty (never: it has its MACs).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Splits the Ethernet frame `src` into the parts of its copy that carries exactly
/// `want_tag` (see [`copy_retagged`]).
pub fn retagged_parts(src: &[u8], want_tag: Option<u16>) -> Result<RetaggedParts<'_>, EgressError> {
    if let Some(vid) = want_tag {
        if vid > MAX_VID {
            return Err(EgressError::BadVlan(vid));
        }
    }
    let have_tag = frame_tag(src)?.is_some();
    let mut tag = [0; VLAN_TAG_LEN];
    if let Some(vid) = want_tag {
        tag[..2].copy_from_slice(&TPID_8021Q.to_be_bytes());
        tag[2..].copy_from_slice(&vid.to_be_bytes());
    }
    Ok(RetaggedParts {
        macs: &src[..MACS_LEN],
        tag,
        tag_len: if want_tag.is_some() { VLAN_TAG_LEN } else { 0 },
        // Everything after the MACs and the tag (if any).
        rest: &src[MACS_LEN + if have_tag { VLAN_TAG_LEN } else { 0 }..],
    })
}

fn copy_retagged_bytes(
    src: &[u8],
    want_tag: Option<u16>,
    dst: &mut [u8],
) -> Result<usize, EgressError> {
    let parts = retagged_parts(src, want_tag)?;
    let needed = parts.len();
    let Some(out) = dst.get_mut(..needed) else {
        return Err(EgressError::NoRoom {
            needed,
            available: dst.len(),
        });
    };
    let (macs, out) = out.split_at_mut(MACS_LEN);
    macs.copy_from_slice(parts.macs);
    let (tag, rest) = out.split_at_mut(parts.tag_len);
    tag.copy_from_slice(&parts.tag[..parts.tag_len]);
    rest.copy_from_slice(parts.rest);
    Ok(needed)
}

/// The offload state of a frame whose headers grew by `delta` bytes in front of the L3 header
/// (+4 for a pushed tag, -4 for a stripped one): `csum_start` (when the checksum is partial) and
/// `hdr_len` (when set) count from the start of the Ethernet header and move with it.
/// Saturates instead of wrapping.
pub fn retag_offload(off: &Offload, delta: isize) -> Offload {
    let shift = |v: u16| -> u16 {
        let moved = (v as isize).saturating_add(delta);
        moved.clamp(0, u16::MAX as isize) as u16
    };
    let mut out = *off;
    if off.csum_partial {
        out.csum_start = shift(off.csum_start);
    }
    if off.hdr_len != 0 {
        out.hdr_len = shift(off.hdr_len);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{GsoType, Meta};
    use proptest::prelude::*;

    const UNTAGGED: [u8; 18] = [
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x08, 0x00, 0x45, 0, 0, 20,
    ];

    fn tagged(vid: u16, pcp: u8) -> Vec<u8> {
        let mut v = UNTAGGED[..12].to_vec();
        let tci = (u16::from(pcp) << 13) | vid;
        v.extend_from_slice(&[0x81, 0x00]);
        v.extend_from_slice(&tci.to_be_bytes());
        v.extend_from_slice(&UNTAGGED[12..]);
        v
    }

    fn copy(src: &[u8], tag: Option<u16>) -> Result<Vec<u8>, EgressError> {
        let mut buf = src.to_vec();
        let frame = Frame::new(&mut buf, 0, src.len(), Meta::default()).unwrap();
        let mut dst = [0u8; 64];
        let n = copy_retagged(&frame, tag, &mut dst)?;
        Ok(dst[..n].to_vec())
    }

    #[test]
    fn push_strip_replace_keep() {
        assert_eq!(copy(&UNTAGGED, Some(100)).unwrap(), tagged(100, 0));
        assert_eq!(copy(&tagged(100, 0), None).unwrap(), UNTAGGED.to_vec());
        assert_eq!(copy(&tagged(100, 5), Some(7)).unwrap(), tagged(7, 0));
        assert_eq!(copy(&tagged(100, 5), Some(100)).unwrap(), tagged(100, 0));
        assert_eq!(copy(&UNTAGGED, None).unwrap(), UNTAGGED.to_vec());
    }

    #[test]
    fn errors() {
        assert_eq!(copy(&UNTAGGED[..13], None), Err(EgressError::Truncated(13)));
        assert_eq!(
            copy(&tagged(1, 0)[..15], None),
            Err(EgressError::Truncated(15))
        );
        assert_eq!(copy(&UNTAGGED, Some(4096)), Err(EgressError::BadVlan(4096)));
        let mut buf = UNTAGGED;
        let frame = Frame::new(&mut buf, 0, 18, Meta::default()).unwrap();
        assert_eq!(
            copy_retagged(&frame, Some(1), &mut [0u8; 21]),
            Err(EgressError::NoRoom {
                needed: 22,
                available: 21
            })
        );
        assert_eq!(copy_retagged(&frame, None, &mut [0u8; 18]), Ok(18));
    }

    #[test]
    fn offload_moves_with_the_tag() {
        let off = Offload {
            gso: GsoType::TcpV4,
            gso_size: 1448,
            hdr_len: 66,
            csum_partial: true,
            csum_start: 34,
            csum_offset: 16,
            ..Offload::default()
        };
        let pushed = retag_offload(&off, 4);
        assert_eq!((pushed.csum_start, pushed.hdr_len), (38, 70));
        assert_eq!(pushed.csum_offset, 16);
        assert_eq!(retag_offload(&pushed, -4), off);
        let plain = Offload::default();
        assert_eq!(retag_offload(&plain, 4), plain, "nothing to move");
        let low = Offload {
            csum_partial: true,
            csum_start: 2,
            ..Offload::default()
        };
        assert_eq!(retag_offload(&low, -4).csum_start, 0);
    }

    proptest! {
        #[test]
        fn retag_round_trips(
            payload in proptest::collection::vec(any::<u8>(), 2..40),
            macs in any::<[u8; 12]>(),
            vid in 0u16..4096,
            other in 0u16..4096,
        ) {
            // Untagged frames whose ethertype is not 0x8100.
            let mut plain = macs.to_vec();
            plain.extend_from_slice(&payload);
            prop_assume!(frame_tag(&plain) == Ok(None));
            let pushed = copy(&plain, Some(vid)).unwrap();
            prop_assert_eq!(pushed.len(), plain.len() + VLAN_TAG_LEN);
            prop_assert_eq!(frame_tag(&pushed), Ok(Some(vid)));
            let replaced = copy(&pushed, Some(other)).unwrap();
            prop_assert_eq!(frame_tag(&replaced), Ok(Some(other)));
            prop_assert_eq!(copy(&replaced, None).unwrap(), plain);
        }

        #[test]
        fn never_panics(
            src in proptest::collection::vec(any::<u8>(), 0..40),
            tag in proptest::option::of(any::<u16>()),
            dst_len in 0usize..64,
        ) {
            let mut buf = src.clone();
            let frame = Frame::new(&mut buf, 0, src.len(), Meta::default()).unwrap();
            let mut dst = vec![0u8; dst_len];
            if let Ok(n) = copy_retagged(&frame, tag, &mut dst) {
                prop_assert!(n <= dst_len);
                if tag.is_some() {
                    prop_assert_eq!(frame_tag(&dst[..n]), Ok(tag));
                }
            }
        }
    }
}
