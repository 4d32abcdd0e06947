//! The two offload programs, written with [`crate::asm`]: one classifier (headers copied to the
//! stack with `bpf_skb_load_bytes`, so the verifier never sees packet pointers; the key built
//! zero-padded; one map lookup) followed by either the TC action (counters, rewrite, checksums,
//! `bpf_redirect`) or the socket-filter ending (drop exactly what TC will forward).

use crate::asm::{
    Alu, Asm, Cond, Insn, Label, Reg, Size, R0, R1, R10, R2, R3, R4, R5, R6, R7, R8, R9,
};
use crate::layout::{key, value, FAMILY_V4, FAMILY_V6};
use crate::tunnel_prog;

/// `BPF_PROG_TYPE_SOCKET_FILTER`.
pub(crate) const SOCKET_FILTER: u32 = 1;
/// `BPF_PROG_TYPE_SCHED_CLS`.
pub(crate) const SCHED_CLS: u32 = 3;

pub(crate) const HELPER_MAP_LOOKUP: i32 = 1;
const HELPER_KTIME_GET_NS: i32 = 5;
pub(crate) const HELPER_SKB_STORE_BYTES: i32 = 9;
pub(crate) const HELPER_L3_CSUM_REPLACE: i32 = 10;
const HELPER_L4_CSUM_REPLACE: i32 = 11;
pub(crate) const HELPER_REDIRECT: i32 = 23;
const HELPER_SKB_CHANGE_TYPE: i32 = 32;
const HELPER_REDIRECT_PEER: i32 = 155;
/// `PACKET_HOST`: the frame is addressed to the namespace that receives it.
const PACKET_HOST: i32 = 0;
const HELPER_SKB_LOAD_BYTES: i32 = 26;
/// Checksum helper flag: the field is covered by the pseudo header (an address).
const F_PSEUDO_HDR: i32 = 0x10;
/// Checksum helper flag: a UDP checksum of 0 (none) stays 0, and a result of 0 becomes 0xffff.
const F_MARK_MANGLED_0: i32 = 0x20;
pub(crate) const TC_ACT_OK: i32 = 0;

/// `struct __sk_buff` fields read.
pub(crate) const CTX_LEN: i16 = 0;
const CTX_VLAN_PRESENT: i16 = 20;
pub(crate) const CTX_IFINDEX: i16 = 40;
/// `gso_size`: non-zero for a GSO super-frame.
pub(crate) const CTX_GSO_SIZE: i16 = 176;
/// The size of `struct __sk_buff` (a test run's context).
#[cfg(test)]
pub(crate) const CTX_SIZE: usize = 192;

/// Stack layout (offsets from R10, each 8-byte aligned).
pub(crate) const KEY: i16 = -48;
pub(crate) const ETH: i16 = -64;
pub(crate) const IP: i16 = -104;
pub(crate) const SCRATCH: i16 = -112;
pub(crate) const ETH_LEN: i32 = 14;
const _: () = assert!(key::SIZE as i16 <= -KEY && ETH_LEN as i16 <= KEY - ETH && 40 <= ETH - IP);

/// What follows the classifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Update counters, rewrite, redirect.
    Tc,
    /// Return 0 (drop from the packet socket) on a hit, the frame's length otherwise.
    SocketFilter,
}

/// A 16-bit constant as a native load of its network-order bytes reads it.
pub(crate) fn be16(x: u16) -> i32 {
    i32::from(u16::from_ne_bytes(x.to_be_bytes()))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn header_len(self) -> i32 {
        match self {
            Family::V4 => 20,
            Family::V6 => 40,
        }
    }
    fn l4(self) -> i32 {
        ETH_LEN + self.header_len()
    }
    fn addr_len(self) -> i32 {
        match self {
            Family::V4 => 4,
            Family::V6 => 16,
        }
    }
    /// Offset of the source address in the IP header (the destination follows it).
    fn src(self) -> i16 {
        match self {
            Family::V4 => 12,
            Family::V6 => 8,
        }
    }
    /// Offset of the next protocol in the IP header.
    fn proto(self) -> i16 {
        match self {
            Family::V4 => 9,
            Family::V6 => 6,
        }
    }
    /// Offset of the TTL / hop limit in the IP header.
    fn ttl(self) -> i16 {
        match self {
            Family::V4 => 8,
            Family::V6 => 7,
        }
    }
    fn key_family(self) -> i32 {
        i32::from(match self {
            Family::V4 => FAMILY_V4,
            Family::V6 => FAMILY_V6,
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn number(self) -> i32 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
    /// Offset of the checksum in the L4 header.
    fn csum(self) -> i32 {
        match self {
            Proto::Tcp => 16,
            Proto::Udp => 6,
        }
    }
    fn csum_flags(self) -> i32 {
        match self {
            Proto::Tcp => 0,
            Proto::Udp => F_MARK_MANGLED_0,
        }
    }
}

/// The maps a program reads, by descriptor.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Maps {
    /// The flow map.
    pub flows: i32,
    /// The one-`u32` array that is 1 while the flow map holds an entry.
    pub active: i32,
}

/// The whole program reading `maps`.
pub(crate) fn program(maps: Maps, ending: Ending) -> Vec<Insn> {
    let map_fd = maps.flows;
    let mut a = Asm::new();
    let miss = a.label();
    let (v4, v6) = (a.label(), a.label());
    a.emit([Insn::mov64_reg(R6, R1)]);
    // Nothing offloaded: every frame is userspace's, without a look at it.
    a.emit([Insn::st_mem(Size::W, R10, SCRATCH, 0)]);
    a.emit(Insn::ld_map_fd(R1, maps.active));
    a.emit(stack_ptr(R2, SCRATCH));
    a.emit([Insn::call(HELPER_MAP_LOOKUP)]);
    a.jmp_imm(Cond::Eq, R0, 0, miss);
    a.emit([Insn::ldx_mem(Size::W, R1, R0, 0)]);
    a.jmp_imm(Cond::Eq, R1, 0, miss);
    a.emit([Insn::ldx_mem(Size::W, R1, R6, CTX_VLAN_PRESENT)]);
    a.jmp_imm(Cond::Ne, R1, 0, miss);
    load_bytes(&mut a, 0, ETH, ETH_LEN, miss);
    a.emit([Insn::ldx_mem(Size::H, R1, R10, ETH + 12)]);
    a.jmp_imm(Cond::Eq, R1, be16(0x0800), v4);
    a.jmp_imm(Cond::Eq, R1, be16(0x86dd), v6);
    a.ja(miss);
    for (fam, at) in [(Family::V4, v4), (Family::V6, v6)] {
        a.bind(at);
        load_bytes(&mut a, ETH_LEN, IP, fam.header_len(), miss);
        a.emit([Insn::ldx_mem(Size::B, R1, R10, IP)]);
        if fam == Family::V4 {
            // Version 4, IHL 5; then neither more fragments nor a fragment offset.
            a.jmp_imm(Cond::Ne, R1, 0x45, miss);
            a.emit([
                Insn::ldx_mem(Size::H, R1, R10, IP + 6),
                Insn::alu64_imm(Alu::And, R1, be16(0x3fff)),
            ]);
            a.jmp_imm(Cond::Ne, R1, 0, miss);
        } else {
            a.emit([Insn::alu64_imm(Alu::And, R1, 0xf0)]);
            a.jmp_imm(Cond::Ne, R1, 0x60, miss);
        }
        let (tcp, udp) = (a.label(), a.label());
        a.emit([Insn::ldx_mem(Size::B, R1, R10, IP + fam.proto())]);
        a.jmp_imm(Cond::Eq, R1, Proto::Tcp.number(), tcp);
        a.jmp_imm(Cond::Eq, R1, Proto::Udp.number(), udp);
        a.ja(miss);
        for (proto, at) in [(Proto::Tcp, tcp), (Proto::Udp, udp)] {
            a.bind(at);
            if (fam, proto) == (Family::V4, Proto::Udp) {
                tunnel_prog::decap(&mut a, map_fd, ending);
            }
            lookup(&mut a, map_fd, fam, proto, miss);
            match ending {
                Ending::Tc => tc_action(&mut a, fam, proto),
                Ending::SocketFilter => {
                    a.emit([Insn::mov64_imm(R0, 0), Insn::exit()]);
                }
            }
        }
    }
    a.bind(miss);
    match ending {
        Ending::Tc => a.emit([Insn::mov64_imm(R0, TC_ACT_OK)]),
        Ending::SocketFilter => a.emit([Insn::ldx_mem(Size::W, R0, R6, CTX_LEN)]),
    };
    a.emit([Insn::exit()]);
    a.finish()
}

/// `R1 = R10 + off` style pointer set-up.
pub(crate) fn stack_ptr(reg: Reg, off: i16) -> [Insn; 2] {
    [
        Insn::mov64_reg(reg, R10),
        Insn::alu64_imm(Alu::Add, reg, off.into()),
    ]
}

/// Copies `len` bytes at `off` of the frame to the stack at `to`; short frames go to `miss`.
pub(crate) fn load_bytes(a: &mut Asm, off: i32, to: i16, len: i32, miss: Label) {
    a.emit([Insn::mov64_reg(R1, R6), Insn::mov64_imm(R2, off)]);
    a.emit(stack_ptr(R3, to));
    a.emit([Insn::mov64_imm(R4, len), Insn::call(HELPER_SKB_LOAD_BYTES)]);
    a.jmp_imm(Cond::Ne, R0, 0, miss);
}

/// Builds the key of a `fam`/`proto` frame whose IP header is on the stack, looks it up and
/// leaves the value in R7; what must stay with userspace goes to `miss`.
fn lookup(a: &mut Asm, map_fd: i32, fam: Family, proto: Proto, miss: Label) {
    for off in (0..key::SIZE as i16).step_by(4) {
        a.emit([Insn::st_mem(Size::W, R10, KEY + off, 0)]);
    }
    a.emit([
        Insn::ldx_mem(Size::W, R1, R6, CTX_IFINDEX),
        Insn::stx_mem(Size::W, R10, R1, KEY + key::IFINDEX),
        Insn::st_mem(Size::B, R10, KEY + key::PROTO, proto.number()),
        Insn::st_mem(Size::B, R10, KEY + key::FAMILY, fam.key_family()),
    ]);
    let len = fam.addr_len() as i16;
    for word in (0..len).step_by(4) {
        for (from, to) in [(fam.src(), key::SRC), (fam.src() + len, key::DST)] {
            a.emit([
                Insn::ldx_mem(Size::W, R1, R10, IP + from + word),
                Insn::stx_mem(Size::W, R10, R1, KEY + to + word),
            ]);
        }
    }
    load_bytes(a, fam.l4(), KEY + key::PORTS, 4, miss);
    if proto == Proto::Tcp {
        // FIN, SYN or RST: conntrack in userspace must see every opening and closing.
        load_bytes(a, fam.l4() + 13, SCRATCH, 1, miss);
        a.emit([
            Insn::ldx_mem(Size::B, R1, R10, SCRATCH),
            Insn::alu64_imm(Alu::And, R1, 0x07),
        ]);
        a.jmp_imm(Cond::Ne, R1, 0, miss);
    }
    a.emit(Insn::ld_map_fd(R1, map_fd));
    a.emit(stack_ptr(R2, KEY));
    a.emit([Insn::call(HELPER_MAP_LOOKUP)]);
    a.jmp_imm(Cond::Eq, R0, 0, miss);
    a.emit([Insn::mov64_reg(R7, R0)]);
    // A routed hop whose TTL would reach 0: userspace answers with ICMP time exceeded.
    let alive = a.label();
    if_flag_clear(a, value::DEC_TTL, alive);
    a.emit([Insn::ldx_mem(Size::B, R1, R10, IP + fam.ttl())]);
    a.jmp_imm(Cond::Le, R1, 1, miss);
    a.bind(alive);
}

/// Jumps to `skip` when the value in R7 does not have `flag`.
pub(crate) fn if_flag_clear(a: &mut Asm, flag: i32, skip: Label) {
    a.emit([
        Insn::ldx_mem(Size::W, R1, R7, value::FLAGS),
        Insn::alu64_imm(Alu::And, R1, flag),
    ]);
    a.jmp_imm(Cond::Eq, R1, 0, skip);
}

/// Calls a helper with the frame (R6) as its first argument, R2..R4 set by `args` and `r5` in R5.
pub(crate) fn skb_call(a: &mut Asm, helper: i32, args: &[Insn], r5: i32) {
    a.emit([Insn::mov64_reg(R1, R6)]);
    a.emit(args.iter().copied());
    a.emit([Insn::mov64_imm(R5, r5), Insn::call(helper)]);
}

/// `bpf_skb_store_bytes(skb, off, R7 + from, len, 0)`: writes part of the value into the frame.
pub(crate) fn store_from_value(a: &mut Asm, off: i32, from: i16, len: i32) {
    skb_call(
        a,
        HELPER_SKB_STORE_BYTES,
        &[
            Insn::mov64_imm(R2, off),
            Insn::mov64_reg(R3, R7),
            Insn::alu64_imm(Alu::Add, R3, from.into()),
            Insn::mov64_imm(R4, len),
        ],
        0,
    );
}

/// `helper(skb, off, R8 (old), R9 (new), flags)`.
fn csum_replace(a: &mut Asm, helper: i32, off: i32, flags: i32) {
    skb_call(
        a,
        helper,
        &[
            Insn::mov64_imm(R2, off),
            Insn::mov64_reg(R3, R8),
            Insn::mov64_reg(R4, R9),
        ],
        flags,
    );
}

/// Counts a hit of the value in R7: packets, bytes, last use.
pub(crate) fn count(a: &mut Asm) {
    a.emit([
        Insn::mov64_imm(R1, 1),
        Insn::atomic_add64(R7, R1, value::PACKETS),
        Insn::ldx_mem(Size::W, R1, R6, CTX_LEN),
        Insn::atomic_add64(R7, R1, value::BYTES),
        Insn::call(HELPER_KTIME_GET_NS),
        Insn::stx_mem(Size::DW, R7, R0, value::LAST_USED),
    ]);
}

/// Counters, then VXLAN encapsulation or MACs, TTL, NAT; then `bpf_redirect`.
fn tc_action(a: &mut Asm, fam: Family, proto: Proto) {
    count(a);
    tunnel_prog::encap(a);
    store_from_value(a, 0, value::MACS, 12);
    let skip = a.label();
    if_flag_clear(a, value::DEC_TTL, skip);
    let ttl = ETH_LEN + i32::from(fam.ttl());
    if fam == Family::V4 {
        // TTL and protocol form one 16-bit word of the header checksum.
        let one = i32::from(u16::from_ne_bytes([1, 0]));
        a.emit([
            Insn::ldx_mem(Size::H, R8, R10, IP + fam.ttl()),
            Insn::mov64_reg(R9, R8),
            Insn::alu64_imm(Alu::Sub, R9, one),
            Insn::stx_mem(Size::H, R10, R9, SCRATCH),
        ]);
        store_from_stack(a, ttl, 2);
        csum_replace(a, HELPER_L3_CSUM_REPLACE, ETH_LEN + 10, 2);
    } else {
        a.emit([
            Insn::ldx_mem(Size::B, R8, R10, IP + fam.ttl()),
            Insn::alu64_imm(Alu::Sub, R8, 1),
            Insn::stx_mem(Size::B, R10, R8, SCRATCH),
        ]);
        store_from_stack(a, ttl, 1);
    }
    a.bind(skip);
    let src = Rewrite {
        flag: value::SNAT,
        key_addr: key::SRC,
        new_addr: value::SNAT_ADDR,
        ip_off: fam.src(),
        key_port: key::PORTS,
        new_port: value::NAT_SPORT,
        l4_off: 0,
    };
    let dst = Rewrite {
        flag: value::DNAT,
        key_addr: key::DST,
        new_addr: value::DNAT_ADDR,
        ip_off: fam.src() + fam.addr_len() as i16,
        key_port: key::DPORT,
        new_port: value::NAT_DPORT,
        l4_off: 2,
    };
    for rw in [src, dst] {
        nat(a, fam, proto, &rw);
    }
    redirect(a);
}

/// `return bpf_redirect(value.egress_ifindex, 0)` for the value in R7, or, when the value has
/// [`value::PEER`], `bpf_redirect_peer` into that veth's peer: the frame then enters the other
/// namespace's receive path directly. The frame was classified on our side's ingress against
/// its destination MAC (a gateway's or another endpoint's, so "other host"); the peer receives
/// it without a new classification, so it is marked as addressed to the host first.
pub(crate) fn redirect(a: &mut Asm) {
    let plain = a.label();
    if_flag_clear(a, value::PEER, plain);
    skb_call(
        a,
        HELPER_SKB_CHANGE_TYPE,
        &[Insn::mov64_imm(R2, PACKET_HOST)],
        0,
    );
    redirect_call(a, HELPER_REDIRECT_PEER);
    a.bind(plain);
    redirect_call(a, HELPER_REDIRECT);
}

/// `return helper(value.egress_ifindex, 0)` for the value in R7.
fn redirect_call(a: &mut Asm, helper: i32) {
    a.emit([
        Insn::ldx_mem(Size::W, R1, R7, value::EGRESS),
        Insn::mov64_imm(R2, 0),
        Insn::call(helper),
        Insn::exit(),
    ]);
}

/// `bpf_skb_store_bytes(skb, off, R10 + SCRATCH, len, 0)`.
pub(crate) fn store_from_stack(a: &mut Asm, off: i32, len: i32) {
    let [fp, add] = stack_ptr(R3, SCRATCH);
    let args = [Insn::mov64_imm(R2, off), fp, add, Insn::mov64_imm(R4, len)];
    skb_call(a, HELPER_SKB_STORE_BYTES, &args, 0);
}

/// One side (source or destination) of a NAT rewrite.
struct Rewrite {
    flag: i32,
    /// The old address and port, in the key on the stack.
    key_addr: i16,
    key_port: i16,
    /// The new ones, in the value.
    new_addr: i16,
    new_port: i16,
    /// Where they are in the IP and L4 headers.
    ip_off: i16,
    l4_off: i32,
}

/// Rewrites one address and port when the value has `rw.flag`, fixing the IPv4 header checksum
/// and the L4 checksum (the address through the pseudo header) word by word.
fn nat(a: &mut Asm, fam: Family, proto: Proto, rw: &Rewrite) {
    let skip = a.label();
    if_flag_clear(a, rw.flag, skip);
    let l4_csum = fam.l4() + proto.csum();
    for word in (0..fam.addr_len() as i16).step_by(4) {
        a.emit([
            Insn::ldx_mem(Size::W, R8, R10, KEY + rw.key_addr + word),
            Insn::ldx_mem(Size::W, R9, R7, rw.new_addr + word),
        ]);
        if fam == Family::V4 {
            csum_replace(a, HELPER_L3_CSUM_REPLACE, ETH_LEN + 10, 4);
        }
        let flags = 4 | F_PSEUDO_HDR | proto.csum_flags();
        csum_replace(a, HELPER_L4_CSUM_REPLACE, l4_csum, flags);
    }
    store_from_value(
        a,
        ETH_LEN + i32::from(rw.ip_off),
        rw.new_addr,
        fam.addr_len(),
    );
    a.emit([
        Insn::ldx_mem(Size::H, R8, R10, KEY + rw.key_port),
        Insn::ldx_mem(Size::H, R9, R7, rw.new_port),
    ]);
    store_from_value(a, fam.l4() + rw.l4_off, rw.new_port, 2);
    csum_replace(a, HELPER_L4_CSUM_REPLACE, l4_csum, 2 | proto.csum_flags());
    a.bind(skip);
}
