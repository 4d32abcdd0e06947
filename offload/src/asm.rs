//! A typed builder for eBPF instructions: one constructor per instruction form the offload
//! programs use, and labels whose jump offsets are fixed up when the program is finished, so no
//! offset is ever counted by hand.

/// A register: `R0` return value, `R1`..`R5` helper arguments (clobbered by calls), `R6`..`R9`
/// kept across calls, `R10` the read-only frame pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reg(u8);

/// Return value of helpers and of the program.
pub const R0: Reg = Reg(0);
/// First helper argument (the context on entry).
pub const R1: Reg = Reg(1);
/// Second helper argument.
pub const R2: Reg = Reg(2);
/// Third helper argument.
pub const R3: Reg = Reg(3);
/// Fourth helper argument.
pub const R4: Reg = Reg(4);
/// Fifth helper argument.
pub const R5: Reg = Reg(5);
/// Kept across calls.
pub const R6: Reg = Reg(6);
/// Kept across calls.
pub const R7: Reg = Reg(7);
/// Kept across calls.
pub const R8: Reg = Reg(8);
/// Kept across calls.
pub const R9: Reg = Reg(9);
/// The frame pointer (stack grows down from it, 512 bytes).
pub const R10: Reg = Reg(10);

/// Access width of a load or store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// 1 byte.
    B = 0x10,
    /// 2 bytes.
    H = 0x08,
    /// 4 bytes.
    W = 0x00,
    /// 8 bytes.
    DW = 0x18,
}

/// A 64-bit ALU operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alu {
    /// `dst += src`.
    Add = 0x00,
    /// `dst -= src`.
    Sub = 0x10,
    /// `dst |= src`.
    Or = 0x40,
    /// `dst &= src`.
    And = 0x50,
    /// `dst <<= src`.
    Lsh = 0x60,
    /// `dst = src`.
    Mov = 0xb0,
}

/// A conditional jump's comparison (unsigned, 64 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cond {
    /// `==`.
    Eq = 0x10,
    /// `!=`.
    Ne = 0x50,
    /// `<=`.
    Le = 0xb0,
}

const CLASS_LD: u8 = 0x00;
const CLASS_LDX: u8 = 0x01;
const CLASS_ST: u8 = 0x02;
const CLASS_STX: u8 = 0x03;
const CLASS_ALU: u8 = 0x04;
const CLASS_JMP: u8 = 0x05;
const CLASS_ALU64: u8 = 0x07;
const MODE_IMM: u8 = 0x00;
const MODE_MEM: u8 = 0x60;
const MODE_ATOMIC: u8 = 0xc0;
/// The byte-swap ALU operation, and its flag "to big endian".
const ALU_END: u8 = 0xd0;
const END_TO_BE: u8 = 0x08;
const SRC_X: u8 = 0x08;
const JMP_JA: u8 = 0x00;
const JMP_CALL: u8 = 0x80;
const JMP_EXIT: u8 = 0x90;
/// `src_reg` of a 64-bit immediate load whose immediate is a map's file descriptor.
const PSEUDO_MAP_FD: u8 = 1;
/// The `imm` of an atomic instruction that adds (and does not fetch).
const ATOMIC_ADD: i32 = 0x00;

/// One 8-byte eBPF instruction (`struct bpf_insn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    dst: Reg,
    src: Reg,
    off: i16,
    imm: i32,
}

impl Insn {
    fn new(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            dst,
            src,
            off,
            imm,
        }
    }

    /// `dst = imm` (sign-extended to 64 bits).
    pub fn mov64_imm(dst: Reg, imm: i32) -> Insn {
        Insn::alu64_imm(Alu::Mov, dst, imm)
    }

    /// `dst = src`.
    pub fn mov64_reg(dst: Reg, src: Reg) -> Insn {
        Insn::alu64_reg(Alu::Mov, dst, src)
    }

    /// `dst op= imm`.
    pub fn alu64_imm(op: Alu, dst: Reg, imm: i32) -> Insn {
        Insn::new(CLASS_ALU64 | op as u8, dst, R0, 0, imm)
    }

    /// `dst op= src`.
    pub fn alu64_reg(op: Alu, dst: Reg, src: Reg) -> Insn {
        Insn::new(CLASS_ALU64 | op as u8 | SRC_X, dst, src, 0, 0)
    }

    /// `dst = *(size *)(src + off)`, zero-extended.
    pub fn ldx_mem(size: Size, dst: Reg, src: Reg, off: i16) -> Insn {
        Insn::new(CLASS_LDX | MODE_MEM | size as u8, dst, src, off, 0)
    }

    /// `*(size *)(dst + off) = src`.
    pub fn stx_mem(size: Size, dst: Reg, src: Reg, off: i16) -> Insn {
        Insn::new(CLASS_STX | MODE_MEM | size as u8, dst, src, off, 0)
    }

    /// `*(size *)(dst + off) = imm`.
    pub fn st_mem(size: Size, dst: Reg, off: i16, imm: i32) -> Insn {
        Insn::new(CLASS_ST | MODE_MEM | size as u8, dst, R0, off, imm)
    }

    /// `lock *(u64 *)(dst + off) += src`.
    pub fn atomic_add64(dst: Reg, src: Reg, off: i16) -> Insn {
        Insn::new(
            CLASS_STX | MODE_ATOMIC | Size::DW as u8,
            dst,
            src,
            off,
            ATOMIC_ADD,
        )
    }

    /// `dst = htobe(dst)` of its low `bits` (16, 32 or 64) bits, zero-extended.
    pub fn to_be(dst: Reg, bits: i32) -> Insn {
        Insn::new(CLASS_ALU | ALU_END | END_TO_BE, dst, R0, 0, bits)
    }

    /// Calls helper number `helper`: arguments in `R1`..`R5`, result in `R0`.
    pub fn call(helper: i32) -> Insn {
        Insn::new(CLASS_JMP | JMP_CALL, R0, R0, 0, helper)
    }

    /// Ends the program with `R0`.
    pub fn exit() -> Insn {
        Insn::new(CLASS_JMP | JMP_EXIT, R0, R0, 0, 0)
    }

    /// `dst = map` (the two-slot `BPF_LD_IMM64` the kernel turns into the map's address).
    pub fn ld_map_fd(dst: Reg, fd: i32) -> [Insn; 2] {
        [
            Insn::new(
                CLASS_LD | MODE_IMM | Size::DW as u8,
                dst,
                Reg(PSEUDO_MAP_FD),
                0,
                fd,
            ),
            Insn::new(0, R0, R0, 0, 0),
        ]
    }

    /// The `struct bpf_insn` bytes (little-endian host layout: `dst` in the low nibble).
    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = if cfg!(target_endian = "little") {
            self.dst.0 | self.src.0 << 4
        } else {
            self.dst.0 << 4 | self.src.0
        };
        b[2..4].copy_from_slice(&self.off.to_ne_bytes());
        b[4..8].copy_from_slice(&self.imm.to_ne_bytes());
        b
    }
}

/// A jump target inside one [`Asm`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label(usize);

/// A program being written: instructions, and jumps waiting for their labels.
#[derive(Debug, Default)]
pub struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, Label)>,
}

impl Asm {
    /// An empty program.
    pub fn new() -> Asm {
        Asm::default()
    }

    /// Appends instructions.
    pub fn emit(&mut self, insns: impl IntoIterator<Item = Insn>) -> &mut Asm {
        self.insns.extend(insns);
        self
    }

    /// A label to be placed later with [`Asm::bind`].
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Places `label` at the next instruction.
    pub fn bind(&mut self, label: Label) {
        debug_assert!(self.labels[label.0].is_none(), "label bound twice");
        self.labels[label.0] = Some(self.insns.len());
    }

    /// `if dst cond imm goto label`.
    pub fn jmp_imm(&mut self, cond: Cond, dst: Reg, imm: i32, label: Label) -> &mut Asm {
        let at = self.insns.len();
        self.fixups.push((at, label));
        self.emit([Insn::new(CLASS_JMP | cond as u8, dst, R0, 0, imm)])
    }

    /// `goto label`.
    pub fn ja(&mut self, label: Label) -> &mut Asm {
        let at = self.insns.len();
        self.fixups.push((at, label));
        self.emit([Insn::new(CLASS_JMP | JMP_JA, R0, R0, 0, 0)])
    }

    /// The finished program, jumps resolved. Panics on a label never bound or out of range:
    /// both are bugs of the program's writer, not of its input.
    pub fn finish(mut self) -> Vec<Insn> {
        for (at, label) in self.fixups {
            let target = self.labels[label.0].expect("jump to a label never bound");
            let off = target as i64 - at as i64 - 1;
            self.insns[at].off = i16::try_from(off).expect("jump out of range");
        }
        self.insns
    }
}

/// The program as the bytes `BPF_PROG_LOAD` reads.
pub fn encode(insns: &[Insn]) -> Vec<u8> {
    insns.iter().flat_map(|i| i.to_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected bytes are the ones clang / the kernel's filter.h macros produce (llvm-objdump).
    #[test]
    fn encodings_match_the_kernel_macros() {
        let cases: [(Insn, [u8; 8]); 10] = [
            // r0 = 0
            (Insn::mov64_imm(R0, 0), [0xb7, 0x00, 0, 0, 0, 0, 0, 0]),
            // r6 = r1
            (Insn::mov64_reg(R6, R1), [0xbf, 0x16, 0, 0, 0, 0, 0, 0]),
            // r2 += -48
            (
                Insn::alu64_imm(Alu::Add, R2, -48),
                [0x07, 0x02, 0, 0, 0xd0, 0xff, 0xff, 0xff],
            ),
            // r1 = *(u32 *)(r6 + 40)
            (
                Insn::ldx_mem(Size::W, R1, R6, 40),
                [0x61, 0x61, 40, 0, 0, 0, 0, 0],
            ),
            // *(u16 *)(r10 - 8) = r9
            (
                Insn::stx_mem(Size::H, R10, R9, -8),
                [0x6b, 0x9a, 0xf8, 0xff, 0, 0, 0, 0],
            ),
            // *(u64 *)(r10 - 48) = 0
            (
                Insn::st_mem(Size::DW, R10, -48, 0),
                [0x7a, 0x0a, 0xd0, 0xff, 0, 0, 0, 0],
            ),
            // lock *(u64 *)(r7 + 8) += r1
            (
                Insn::atomic_add64(R7, R1, 8),
                [0xdb, 0x17, 8, 0, 0, 0, 0, 0],
            ),
            // call bpf_redirect
            (Insn::call(23), [0x85, 0, 0, 0, 23, 0, 0, 0]),
            (Insn::exit(), [0x95, 0, 0, 0, 0, 0, 0, 0]),
            // *(u8 *)(r10 - 1) = 7
            (
                Insn::st_mem(Size::B, R10, -1, 7),
                [0x72, 0x0a, 0xff, 0xff, 7, 0, 0, 0],
            ),
        ];
        for (insn, bytes) in cases {
            assert_eq!(insn.to_bytes(), bytes, "{insn:?}");
        }
        let [lo, hi] = Insn::ld_map_fd(R1, 5);
        assert_eq!(lo.to_bytes(), [0x18, 0x11, 0, 0, 5, 0, 0, 0]);
        assert_eq!(hi.to_bytes(), [0; 8]);
    }

    #[test]
    fn shifts_ors_and_byte_swaps_match_the_kernel_macros() {
        // r5 <<= 56; r5 |= 83; r1 = be16 r1
        let cases = [
            (
                Insn::alu64_imm(Alu::Lsh, R5, 56),
                [0x67, 0x05, 0, 0, 56, 0, 0, 0],
            ),
            (
                Insn::alu64_imm(Alu::Or, R5, 83),
                [0x47, 0x05, 0, 0, 83, 0, 0, 0],
            ),
            (Insn::to_be(R1, 16), [0xdc, 0x01, 0, 0, 16, 0, 0, 0]),
        ];
        for (insn, bytes) in cases {
            assert_eq!(insn.to_bytes(), bytes, "{insn:?}");
        }
    }

    #[test]
    fn jumps_are_fixed_up_relative_to_the_next_instruction() {
        let mut asm = Asm::new();
        let out = asm.label();
        let back = asm.label();
        asm.bind(back);
        asm.jmp_imm(Cond::Ne, R1, 0x45, out); // 0: skips 1 and 2
        asm.emit([Insn::mov64_imm(R0, 1), Insn::exit()]);
        asm.bind(out);
        asm.ja(back); // 3: back to 0
        let insns = asm.finish();
        assert_eq!(insns[0].to_bytes(), [0x55, 0x01, 2, 0, 0x45, 0, 0, 0]);
        assert_eq!(insns[3].to_bytes(), [0x05, 0, 0xfc, 0xff, 0, 0, 0, 0]);
        assert_eq!(encode(&insns).len(), 32);
    }

    #[test]
    #[should_panic(expected = "never bound")]
    fn an_unbound_label_is_a_bug() {
        let mut asm = Asm::new();
        let nowhere = asm.label();
        asm.ja(nowhere);
        asm.finish();
    }
}
