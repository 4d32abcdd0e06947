//! The VXLAN parts of the programs ([`crate::tunnel`]): the classifier of VXLAN frames on the
//! uplink (both programs) with the TC program's decapsulation, and the TC program's
//! encapsulation of an entry flagged `ENCAP`. Both keep GSO super-frames whole: the kernel
//! marks an encapsulated one as a UDP-tunnel super-frame and cuts it when it leaves.

use crate::asm::{Alu, Asm, Cond, Insn, Label, Size, R0, R1, R10, R2, R3, R4, R5, R6, R7, R8};
use crate::layout::{key, value, FAMILY_VXLAN4};
use crate::prog::{
    be16, count, if_flag_clear, load_bytes, redirect, skb_call, stack_ptr, store_from_stack,
    store_from_value, Ending, CTX_GSO_SIZE, CTX_IFINDEX, CTX_LEN, ETH, ETH_LEN,
    HELPER_L3_CSUM_REPLACE, HELPER_MAP_LOOKUP, HELPER_SKB_STORE_BYTES, IP, KEY, SCRATCH,
};
use crate::tunnel::{
    FAMILY_VXLAN6, OUTER_DST, OUTER_SRC, OUTER_VNI, VXLAN_OVERHEAD_V4, VXLAN_PORT,
};

const HELPER_CSUM_DIFF: i32 = 28;
const HELPER_SKB_ADJUST_ROOM: i32 = 50;
const TC_ACT_SHOT: i32 = 2;
/// `BPF_ADJ_ROOM_MAC`: room made or taken right after the Ethernet header.
const ADJ_ROOM_MAC: i32 = 1;
/// `bpf_skb_adjust_room` flags: keep the segment size (the overlay's MTU already leaves room
/// for the outer headers), outer IPv4 and UDP, an inner Ethernet header of 14 bytes.
const F_ADJ_ROOM_FIXED_GSO: i32 = 1 << 0;
const F_ADJ_ROOM_ENCAP_L3_IPV4: i32 = 1 << 1;
const F_ADJ_ROOM_ENCAP_L4_UDP: i32 = 1 << 4;
const F_ADJ_ROOM_ENCAP_L2_ETH: i32 = 1 << 6;
const F_ADJ_ROOM_DECAP_L3_IPV4: i32 = 1 << 7;
const F_ADJ_ROOM_DECAP_L3_IPV6: i32 = 1 << 8;
/// `BPF_F_ADJ_ROOM_ENCAP_L2(len)` is `len << 56`.
const ADJ_ROOM_ENCAP_L2_SHIFT: i32 = 56;

/// Where the outer headers are built (encap) or the VXLAN header is read (decap): 56 bytes.
const OUTER: i16 = -168;
/// The inner IPv4 header of a VXLAN frame, after the outer one in `IP`.
const INNER_IP: i16 = IP + 20;
const _: () = assert!(OUTER + 56 <= SCRATCH && INNER_IP + 20 <= ETH);

/// Outer header lengths and offsets (outer IPv4 without options).
const OUTER_L4: i32 = ETH_LEN + 20;
const VXLAN_HDR: i32 = OUTER_L4 + 8;
const INNER_ETH: i32 = VXLAN_HDR + 8;
const OVERHEAD: i32 = VXLAN_OVERHEAD_V4 as i32;
const _: () = assert!(INNER_ETH + ETH_LEN == ETH_LEN + OVERHEAD);

/// A VXLAN frame (outer IPv4 header in `IP`, UDP) of an entry on this interface: the socket
/// filter drops it, the TC program unwraps and redirects it. Anything else falls through to
/// the plain UDP lookup after this code.
pub(crate) fn decap(a: &mut Asm, map_fd: i32, ending: Ending) {
    let not = a.label();
    // One VXLAN packet: its outer length is the frame's, and so is its inner packet's
    // (`fills_the_frame`). A UDP GSO datagram (several packets in one frame, as a sender's
    // userspace path sends them) would lose only the first one's headers: userspace joins
    // those.
    a.emit([
        Insn::ldx_mem(Size::H, R1, R10, IP + 2),
        Insn::to_be(R1, 16),
        Insn::alu64_imm(Alu::Add, R1, ETH_LEN),
        Insn::ldx_mem(Size::W, R2, R6, CTX_LEN),
        Insn::alu64_reg(Alu::Sub, R1, R2),
    ]);
    a.jmp_imm(Cond::Ne, R1, 0, not);
    load_bytes(a, OUTER_L4, SCRATCH, 4, not);
    a.emit([Insn::ldx_mem(Size::H, R1, R10, SCRATCH + 2)]);
    a.jmp_imm(Cond::Ne, R1, be16(VXLAN_PORT), not);
    load_bytes(a, VXLAN_HDR, OUTER, 8, not);
    a.emit([
        Insn::ldx_mem(Size::B, R1, R10, OUTER),
        Insn::alu64_imm(Alu::And, R1, 0x08),
    ]);
    a.jmp_imm(Cond::Eq, R1, 0, not);
    let v6 = a.label();
    load_bytes(a, INNER_ETH + 12, SCRATCH, 2, not);
    a.emit([Insn::ldx_mem(Size::H, R1, R10, SCRATCH)]);
    a.jmp_imm(Cond::Eq, R1, be16(0x86dd), v6);
    a.jmp_imm(Cond::Ne, R1, be16(0x0800), not);
    inner_v4(a, not);
    hit(a, map_fd, ending, Inner::V4, not);
    a.bind(v6);
    inner_v6(a, not);
    hit(a, map_fd, ending, Inner::V6, not);
    a.bind(not);
}

/// The inner frame's IP version.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Inner {
    V4,
    V6,
}

impl Inner {
    /// Offset of the inner L4 header in the VXLAN frame.
    fn l4(self) -> i32 {
        INNER_ETH
            + ETH_LEN
            + match self {
                Inner::V4 => 20,
                Inner::V6 => 40,
            }
    }
}

/// An inner IPv4 frame (version 4, IHL 5, not a fragment) of TCP or UDP: its key, inner
/// protocol in R8; ports not yet filled.
fn inner_v4(a: &mut Asm, not: Label) {
    load_bytes(a, INNER_ETH + ETH_LEN, INNER_IP, 20, not);
    a.emit([Insn::ldx_mem(Size::B, R1, R10, INNER_IP)]);
    a.jmp_imm(Cond::Ne, R1, 0x45, not);
    a.emit([
        Insn::ldx_mem(Size::H, R1, R10, INNER_IP + 6),
        Insn::alu64_imm(Alu::And, R1, be16(0x3fff)),
    ]);
    a.jmp_imm(Cond::Ne, R1, 0, not);
    fills_the_frame(a, INNER_IP + 2, 0, not);
    a.emit([Insn::ldx_mem(Size::B, R8, R10, INNER_IP + 9)]);
    tcp_or_udp(a, not);
    no_udp_super_frame(a, not);
    key_head(a, FAMILY_VXLAN4);
    let words = [
        (INNER_IP + 12, key::SRC),
        (IP + 12, key::SRC + 4),
        (OUTER + 4, key::SRC + 8),
        (INNER_IP + 16, key::DST),
        (IP + 16, key::DST + 4),
    ];
    for (from, to) in words {
        a.emit([
            Insn::ldx_mem(Size::W, R1, R10, from),
            Insn::stx_mem(Size::W, R10, R1, KEY + to),
        ]);
    }
}

/// An inner IPv6 frame with TCP or UDP right after its fixed header: its key (the inner
/// addresses loaded straight into it), inner protocol in R8; ports not yet filled.
fn inner_v6(a: &mut Asm, not: Label) {
    load_bytes(a, INNER_ETH + ETH_LEN, SCRATCH, 8, not);
    a.emit([
        Insn::ldx_mem(Size::B, R1, R10, SCRATCH),
        Insn::alu64_imm(Alu::And, R1, 0xf0),
    ]);
    a.jmp_imm(Cond::Ne, R1, 0x60, not);
    fills_the_frame(a, SCRATCH + 4, 40, not);
    a.emit([Insn::ldx_mem(Size::B, R8, R10, SCRATCH + 6)]);
    tcp_or_udp(a, not);
    no_udp_super_frame(a, not);
    key_head(a, FAMILY_VXLAN6);
    load_bytes(a, INNER_ETH + ETH_LEN + 8, KEY + key::SRC, 32, not);
    a.emit([
        Insn::ldx_mem(Size::W, R1, R10, OUTER + 4),
        Insn::stx_mem(Size::W, R10, R1, KEY + key::VNI),
    ]);
}

/// Goes to `not` unless the inner IP packet ends where the frame does: its 16-bit length
/// field (on the stack at `len_at`) plus `fixed` bytes not counted in it is the rest of the
/// frame. The outer length matched the frame's too, so this is one VXLAN packet, even where
/// the outer lengths cover several (a UDP GSO frame, as a userspace sender writes one: its
/// first inner packet is one segment) or a kernel-wrapped TCP super-frame (one packet).
fn fills_the_frame(a: &mut Asm, len_at: i16, fixed: i32, not: Label) {
    a.emit([
        Insn::ldx_mem(Size::H, R1, R10, len_at),
        Insn::to_be(R1, 16),
        Insn::alu64_imm(Alu::Add, R1, INNER_ETH + ETH_LEN + fixed),
        Insn::ldx_mem(Size::W, R2, R6, CTX_LEN),
        Insn::alu64_reg(Alu::Sub, R1, R2),
    ]);
    a.jmp_imm(Cond::Ne, R1, 0, not);
}

/// Goes to `not` unless R8 is TCP or UDP.
fn tcp_or_udp(a: &mut Asm, not: Label) {
    let l4 = a.label();
    a.jmp_imm(Cond::Eq, R8, 6, l4);
    a.jmp_imm(Cond::Ne, R8, 17, not);
    a.bind(l4);
}

/// Goes to `not` for a UDP super-frame (R8 is UDP, the frame GSO): unwrapped here it would
/// keep the tunnel's GSO state (this kernel's `bpf_skb_adjust_room` cannot clear it), and the
/// endpoint's stack, which cuts a UDP super-frame into datagrams, would cut it as a tunnel and
/// lose it. Userspace unwraps it instead and hands on a clean super-frame.
fn no_udp_super_frame(a: &mut Asm, not: Label) {
    let tcp = a.label();
    a.jmp_imm(Cond::Ne, R8, 17, tcp);
    a.emit([Insn::ldx_mem(Size::W, R1, R6, CTX_GSO_SIZE)]);
    a.jmp_imm(Cond::Ne, R1, 0, not);
    a.bind(tcp);
}

/// A zeroed key with the interface, the inner protocol (R8) and `family`.
fn key_head(a: &mut Asm, family: u8) {
    for off in (0..key::SIZE as i16).step_by(4) {
        a.emit([Insn::st_mem(Size::W, R10, KEY + off, 0)]);
    }
    a.emit([
        Insn::ldx_mem(Size::W, R1, R6, CTX_IFINDEX),
        Insn::stx_mem(Size::W, R10, R1, KEY + key::IFINDEX),
        Insn::stx_mem(Size::B, R10, R8, KEY + key::PROTO),
        Insn::st_mem(Size::B, R10, KEY + key::FAMILY, family.into()),
    ]);
}

/// The inner ports into the key, TCP's FIN, SYN and RST left to userspace, the lookup and (for
/// an IPv6 inner flow) the entry's tunnel checked; then the ending.
fn hit(a: &mut Asm, map_fd: i32, ending: Ending, inner: Inner, not: Label) {
    load_bytes(a, inner.l4(), KEY + key::PORTS, 4, not);
    let look = a.label();
    a.jmp_imm(Cond::Ne, R8, 6, look);
    // FIN, SYN or RST: userspace's conntrack sees them.
    load_bytes(a, inner.l4() + 13, SCRATCH, 1, not);
    a.emit([
        Insn::ldx_mem(Size::B, R1, R10, SCRATCH),
        Insn::alu64_imm(Alu::And, R1, 0x07),
    ]);
    a.jmp_imm(Cond::Ne, R1, 0, not);
    a.bind(look);
    a.emit(Insn::ld_map_fd(R1, map_fd));
    a.emit(stack_ptr(R2, KEY));
    a.emit([Insn::call(HELPER_MAP_LOOKUP)]);
    a.jmp_imm(Cond::Eq, R0, 0, not);
    a.emit([Insn::mov64_reg(R7, R0)]);
    if inner == Inner::V6 {
        // Outer source, outer destination, VNI word: as the entry's tunnel says.
        let words = [
            (IP + 12, OUTER_SRC),
            (IP + 16, OUTER_DST),
            (OUTER + 4, OUTER_VNI),
        ];
        for (from, at) in words {
            a.emit([
                Insn::ldx_mem(Size::W, R1, R10, from),
                Insn::ldx_mem(Size::W, R2, R7, value::OUTER + at),
                Insn::alu64_reg(Alu::Sub, R1, R2),
            ]);
            a.jmp_imm(Cond::Ne, R1, 0, not);
        }
    }
    match ending {
        Ending::SocketFilter => {
            a.emit([Insn::mov64_imm(R0, 0), Insn::exit()]);
        }
        Ending::Tc => decap_action(a, inner),
    }
}

/// `bpf_skb_adjust_room(skb, R2, BPF_ADJ_ROOM_MAC, R4)`; a failure drops the frame (the socket
/// filter already kept it from userspace).
fn adjust_room(a: &mut Asm, len_diff: i32, flags: &[Insn]) {
    a.emit([
        Insn::mov64_reg(R1, R6),
        Insn::mov64_imm(R2, len_diff),
        Insn::mov64_imm(R3, ADJ_ROOM_MAC),
    ]);
    a.emit(flags.iter().copied());
    a.emit([Insn::mov64_imm(R5, 0), Insn::call(HELPER_SKB_ADJUST_ROOM)]);
    let ok = a.label();
    a.jmp_imm(Cond::Eq, R0, 0, ok);
    a.emit([Insn::mov64_imm(R0, TC_ACT_SHOT), Insn::exit()]);
    a.bind(ok);
}

/// Counters, the outer 50 bytes gone, the inner MACs (and for IPv6 the ethertype: the outer
/// one stays in place) written, redirected.
fn decap_action(a: &mut Asm, inner: Inner) {
    count(a);
    // The segment size stays the inner one (without the flag the kernel would grow it by 50).
    let l3 = match inner {
        Inner::V4 => F_ADJ_ROOM_DECAP_L3_IPV4,
        Inner::V6 => F_ADJ_ROOM_DECAP_L3_IPV6,
    };
    let flags = [Insn::mov64_imm(R4, F_ADJ_ROOM_FIXED_GSO | l3)];
    adjust_room(a, -OVERHEAD, &flags);
    store_from_value(a, 0, value::MACS, 12);
    if inner == Inner::V6 {
        a.emit([Insn::st_mem(Size::H, R10, SCRATCH, be16(0x86dd))]);
        store_from_stack(a, 12, 2);
    }
    redirect(a);
}

/// For an entry flagged `ENCAP` (value in R7, the frame's Ethernet header in `ETH`): room for
/// the outer headers, the template and the frame's own Ethernet header written after the
/// outer MACs, lengths and the outer IPv4 checksum filled in, redirected to the uplink.
pub(crate) fn encap(a: &mut Asm) {
    let skip = a.label();
    if_flag_clear(a, value::ENCAP, skip);
    for w in (0..value::OUTER_LEN as i16).step_by(4) {
        a.emit([
            Insn::ldx_mem(Size::W, R1, R7, value::OUTER + w),
            Insn::stx_mem(Size::W, R10, R1, OUTER + w),
        ]);
    }
    let inner_eth = OUTER + value::OUTER_LEN as i16;
    for w in [0, 4, 8] {
        a.emit([
            Insn::ldx_mem(Size::W, R1, R10, ETH + w),
            Insn::stx_mem(Size::W, R10, R1, inner_eth + w),
        ]);
    }
    a.emit([
        Insn::ldx_mem(Size::H, R1, R10, ETH + 12),
        Insn::stx_mem(Size::H, R10, R1, inner_eth + 12),
    ]);
    let flags = [
        Insn::mov64_imm(R4, ETH_LEN),
        Insn::alu64_imm(Alu::Lsh, R4, ADJ_ROOM_ENCAP_L2_SHIFT),
        Insn::alu64_imm(
            Alu::Or,
            R4,
            F_ADJ_ROOM_FIXED_GSO
                | F_ADJ_ROOM_ENCAP_L3_IPV4
                | F_ADJ_ROOM_ENCAP_L4_UDP
                | F_ADJ_ROOM_ENCAP_L2_ETH,
        ),
    ];
    adjust_room(a, OVERHEAD, &flags);
    // IPv4 total length and UDP length, from the grown frame's length.
    for (minus, at) in [(ETH_LEN, OUTER + 2), (OUTER_L4, OUTER + 24)] {
        a.emit([
            Insn::ldx_mem(Size::W, R1, R6, CTX_LEN),
            Insn::alu64_imm(Alu::Sub, R1, minus),
            Insn::to_be(R1, 16),
            Insn::stx_mem(Size::H, R10, R1, at),
        ]);
    }
    // The header's sum (its checksum field still 0) becomes the checksum once stored.
    a.emit([Insn::mov64_imm(R1, 0), Insn::mov64_imm(R2, 0)]);
    a.emit(stack_ptr(R3, OUTER));
    a.emit([
        Insn::mov64_imm(R4, 20),
        Insn::mov64_imm(R5, 0),
        Insn::call(HELPER_CSUM_DIFF),
        Insn::mov64_reg(R8, R0),
    ]);
    let [fp, add] = stack_ptr(R3, OUTER);
    let args = [
        Insn::mov64_imm(R2, ETH_LEN),
        fp,
        add,
        Insn::mov64_imm(R4, OVERHEAD),
    ];
    skb_call(a, HELPER_SKB_STORE_BYTES, &args, 0);
    let args = [
        Insn::mov64_imm(R2, ETH_LEN + 10),
        Insn::mov64_imm(R3, 0),
        Insn::mov64_reg(R4, R8),
    ];
    skb_call(a, HELPER_L3_CSUM_REPLACE, &args, 0);
    store_from_value(a, 0, value::MACS, 12);
    a.emit([Insn::st_mem(Size::H, R10, SCRATCH, be16(0x0800))]);
    store_from_stack(a, 12, 2);
    redirect(a);
    a.bind(skip);
}
