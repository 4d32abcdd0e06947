//! Plain frames: the shape flow shortcuts serve, read and rewritten at fixed offsets. An
//! untagged Ethernet frame carrying IPv4 without options, neither fragmented nor a fragment,
//! with a whole TCP or UDP header: every field a shortcut reads or writes then sits at a fixed
//! offset, so the frame is read in one pass after one length check and rewritten without
//! parsing it again (VPP's NAT keeps such a fast path for its common case). The getters index
//! a fixed-size array, so each compiles to one load without a bounds check.

use std::net::Ipv4Addr;

use super::checksum;
use super::{read_4, IPPROTO_TCP, IPPROTO_UDP};

/// Offsets of the fields in a plain frame.
mod field {
    /// EtherType (untagged).
    pub const ETHERTYPE: usize = 12;
    /// IPv4 version and header length.
    pub const VER_IHL: usize = super::L3;
    /// IPv4 total length.
    pub const TOTAL_LEN: usize = super::L3 + 2;
    /// IPv4 flags and fragment offset.
    pub const FLAGS_FRAG: usize = super::L3 + 6;
    /// IPv4 time to live.
    pub const TTL: usize = super::L3 + 8;
    /// IPv4 protocol.
    pub const PROTOCOL: usize = super::L3 + 9;
    /// IPv4 header checksum.
    pub const CHECKSUM: usize = super::L3 + 10;
    /// IPv4 source address.
    pub const SRC: usize = super::L3 + 12;
    /// IPv4 destination address.
    pub const DST: usize = super::L3 + 16;
    /// TCP or UDP source port.
    pub const SRC_PORT: usize = super::L4;
    /// TCP or UDP destination port.
    pub const DST_PORT: usize = super::L4 + 2;
    /// TCP flags.
    pub const TCP_FLAGS: usize = super::L4 + 13;
    /// TCP checksum.
    pub const TCP_CHECKSUM: usize = super::L4 + 16;
    /// UDP checksum.
    pub const UDP_CHECKSUM: usize = super::L4 + 6;
}

/// Offset of the IPv4 header.
pub const L3: usize = 14;
/// Offset of the TCP or UDP header.
pub const L4: usize = L3 + 20;
/// Bytes every plain frame has: the Ethernet and IPv4 headers and a UDP header's worth.
pub const HEAD: usize = L4 + 8;

/// The first [`HEAD`] bytes of a frame that may be plain, with a getter per field.
#[derive(Clone, Copy, Debug)]
pub struct PlainHead<'a> {
    h: &'a [u8; HEAD],
}

impl<'a> PlainHead<'a> {
    /// The head of frame `d`; `None` when it is shorter than [`HEAD`].
    #[inline]
    pub fn new(d: &'a [u8]) -> Option<Self> {
        Some(PlainHead {
            h: d.first_chunk()?,
        })
    }

    /// True for EtherType IPv4 with version 4 and a 20-byte header, neither a fragment nor
    /// fragmented: more-fragments and the fragment offset clear (the reserved bit and DF are
    /// ignored, as the general parse does).
    #[inline]
    pub fn is_whole_ipv4_without_options(&self) -> bool {
        let h = self.h;
        let fragment = h[field::FLAGS_FRAG] & 0x3f != 0 || h[field::FLAGS_FRAG + 1] != 0;
        h[field::ETHERTYPE..field::ETHERTYPE + 2] == [0x08, 0x00]
            && h[field::VER_IHL] == 0x45
            && !fragment
    }

    /// IPv4 protocol.
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.h[field::PROTOCOL]
    }

    /// IPv4 total length.
    #[inline]
    pub fn total_len(&self) -> u16 {
        u16::from_be_bytes([self.h[field::TOTAL_LEN], self.h[field::TOTAL_LEN + 1]])
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.h[field::TTL]
    }

    /// IPv4 source address.
    #[inline]
    pub fn src(&self) -> Ipv4Addr {
        read_4(self.h, field::SRC).into()
    }

    /// IPv4 destination address.
    #[inline]
    pub fn dst(&self) -> Ipv4Addr {
        read_4(self.h, field::DST).into()
    }

    /// TCP or UDP source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        u16::from_be_bytes([self.h[field::SRC_PORT], self.h[field::SRC_PORT + 1]])
    }

    /// TCP or UDP destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        u16::from_be_bytes([self.h[field::DST_PORT], self.h[field::DST_PORT + 1]])
    }

    /// True when the IPv4 header's words sum to 0xffff: its checksum is right. A loop over
    /// fixed offsets, which the compiler unrolls (`checksum::internet_checksum` takes any
    /// length and costs several times as many instructions).
    #[inline]
    pub fn header_checksum_ok(&self) -> bool {
        let h = self.h;
        let mut sum = 0u32;
        for i in (L3..L4).step_by(2) {
            sum += u32::from(u16::from_be_bytes([h[i], h[i + 1]]));
        }
        checksum::fold(sum) == 0xffff
    }
}

/// The TCP flags of plain TCP frame `d`; `None` when the frame ends before them.
#[inline]
pub fn tcp_flags(d: &[u8]) -> Option<u8> {
    d.get(field::TCP_FLAGS).copied()
}

/// The terms of changing 16-bit word `old` to `new`, none when they are equal: an unchanged
/// word must not turn a checksum of 0 into 0xffff (the general rewrite skips it too).
fn changed16(old: u16, new: u16) -> u32 {
    if old == new {
        0
    } else {
        checksum::change16(old, new)
    }
}

/// Rewrites plain frame `d` (a TCP or UDP one whose head [`PlainHead`] reads) to carry the
/// addresses and ports `src` and `dst`, and decrements its TTL (which must be above 1),
/// adjusting each checksum once for all its changes. The bytes are exactly those of the
/// general NAT rewrite followed by `Ipv4Packet::decrement_ttl`: one's-complement folding in
/// between or only at the end gives the same value. `partial`: the L4 checksum field holds
/// the pseudo-header sum of a checksum-offloaded frame (see `checksum`).
pub fn rewrite(d: &mut [u8], src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), partial: bool) {
    let Some(h) = d.first_chunk_mut::<HEAD>() else {
        return;
    };
    let (at, udp) = match h[field::PROTOCOL] {
        IPPROTO_TCP => (field::TCP_CHECKSUM, false),
        IPPROTO_UDP => (field::UDP_CHECKSUM, true),
        _ => return,
    };
    let old_src = u32::from_be_bytes(read_4(h, field::SRC));
    let old_dst = u32::from_be_bytes(read_4(h, field::DST));
    let (ns, nd) = (u32::from(src.0), u32::from(dst.0));
    // The address changes, in both the IPv4 header's checksum and the pseudo header's.
    let mut addrs = 0;
    if old_src != ns {
        addrs += checksum::change32(old_src, ns);
        h[field::SRC..field::SRC + 4].copy_from_slice(&ns.to_be_bytes());
    }
    if old_dst != nd {
        addrs += checksum::change32(old_dst, nd);
        h[field::DST..field::DST + 4].copy_from_slice(&nd.to_be_bytes());
    }
    // TTL and protocol share a word.
    let old_word = u16::from_be_bytes([h[field::TTL], h[field::PROTOCOL]]);
    h[field::TTL] -= 1;
    let ttl = checksum::change16(old_word, old_word - 0x100);
    let c = u32::from(!u16::from_be_bytes([
        h[field::CHECKSUM],
        h[field::CHECKSUM + 1],
    ])) + addrs
        + ttl;
    h[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&(!checksum::fold(c)).to_be_bytes());
    let old_sport = u16::from_be_bytes([h[field::SRC_PORT], h[field::SRC_PORT + 1]]);
    let old_dport = u16::from_be_bytes([h[field::DST_PORT], h[field::DST_PORT + 1]]);
    h[field::SRC_PORT..field::SRC_PORT + 2].copy_from_slice(&src.1.to_be_bytes());
    h[field::DST_PORT..field::DST_PORT + 2].copy_from_slice(&dst.1.to_be_bytes());
    let Some(field) = d.get_mut(at..at + 2) else {
        return;
    };
    let c = u16::from_be_bytes([field[0], field[1]]);
    if udp && c == 0 {
        return;
    }
    let mut c = if partial {
        checksum::fold(u32::from(c) + addrs)
    } else {
        let ports = changed16(old_sport, src.1) + changed16(old_dport, dst.1);
        !checksum::fold(u32::from(!c) + addrs + ports)
    };
    if udp && c == 0 {
        c = 0xffff;
    }
    field.copy_from_slice(&c.to_be_bytes());
}
