//! The pre-MMU check of `cargo xtask test`: no load/store-exclusive or atomic
//! read-modify-write instruction may be reachable before the MMU is on.
//!
//! With the MMU off every data access is to Device memory, where an exclusive needs a global
//! monitor that the Raspberry Pi 4 does not have: the store-exclusive never succeeds and the
//! CPU retries for ever, printing nothing. QEMU does not model that, so no boot under QEMU can
//! show it; this check reads the kernel ELF instead.
//!
//! From the boot path's symbols ([`ROOTS`]) it follows every direct branch and call (`b`, `bl`,
//! `b.cond`, `cbz`, `tbz`...), every function address formed in code (`adr`, `adrp` + `add`)
//! and the fall-through from one assembly label into the next, and decodes every instruction
//! of every function it reaches. It stops at the places where the MMU is known to be on
//! ([`STOPS`]): the rest of `kernel_main` after `mmu::enable`, the secondary CPUs' Rust entry
//! (called by the trampoline after its SCTLR write), and the panic handler's and exception
//! entry's MMU-on halves, the latter two only when called from a function that reads SCTLR_EL1
//! (the test of SCTLR_EL1.M that chooses `early.rs`). Every root and stop must exist, so a
//! rename cannot quietly shrink what is checked. Calls through `dyn` are not followed except
//! the trait methods the early paths are known to call that way, which are roots themselves.
//!
//! Flagged: LDXR/LDAXR/STXR/STLXR (and their byte, halfword and pair forms), CAS/CASP and
//! their variants, and the LSE atomics (LDADD, LDCLR, LDEOR, LDSET, LD{S,U}{MAX,MIN}, SWP and
//! their ST aliases). Not flagged: LDAR/STLR and the other ordered plain loads and stores.

use std::collections::{HashMap, VecDeque};
use std::path::Path;

use object::{Object, ObjectSection, ObjectSymbol, SectionKind, SymbolKind};

/// `nop`, which assemblers use to pad code.
const NOP: u32 = 0xd503_201f;

use crate::error::{Context, Error, Result};

/// How a root or stop symbol is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name {
    /// Exactly this (demangled, without the hash).
    Exact(&'static str),
    /// Every symbol ending with this; at least one must exist.
    Suffix(&'static str),
    /// This, if the image has it.
    Optional(&'static str),
}

impl Name {
    fn matches(self, name: &str) -> bool {
        match self {
            Name::Exact(n) | Name::Optional(n) => name == n,
            Name::Suffix(s) => name.ends_with(s),
        }
    }

    fn text(self) -> &'static str {
        match self {
            Name::Exact(n) | Name::Suffix(n) | Name::Optional(n) => n,
        }
    }
}

/// Where code runs, or may run, before the MMU is on.
pub const ROOTS: &[Name] = &[
    // The boot CPU's entry (board-common entry.rs), which calls `board_main`.
    Name::Exact("_start"),
    // Secondary CPUs: their entries and the kernel's trampoline (MMU off until its SCTLR write).
    Name::Exact("board_secondary_entry"),
    Name::Exact("board_spin_table_entry"),
    Name::Exact("kernel_secondary_entry"),
    // Installed before the MMU is on: the exception vectors and the panic handler.
    Name::Exact("kernel_vectors"),
    Name::Suffix("rust_begin_unwind"),
    // Called through `dyn` on the early paths.
    Name::Exact("<kernel::early::Console as core::fmt::Write>::write_str"),
    Name::Suffix(" as kernel::platform::Platform>::console_write"),
    Name::Suffix(" as kernel::platform::Platform>::exit"),
    Name::Suffix(" as kernel::platform::Platform>::device_ranges"),
    Name::Optional("<board_common::uart::Pl011 as core::fmt::Write>::write_str"),
];

/// Where the MMU is on.
pub const STOPS: &[Stop] = &[
    Stop {
        name: "kernel::boot::kernel_main_mmu_on",
        guarded: false,
    },
    Stop {
        name: "kernel_secondary_main",
        guarded: false,
    },
    Stop {
        name: "kernel::fault::panic_mmu_on",
        guarded: true,
    },
    Stop {
        name: "kernel::fault::exception_mmu_on",
        guarded: true,
    },
    // The IRQ vector's short path (`irq_common`) calls it only after SCTLR_EL1 says the MMU
    // is on; before, it branches to the full path.
    Stop {
        name: "kernel_irq",
        guarded: true,
    },
];

/// A function where the walk stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop {
    /// Its demangled name.
    pub name: &'static str,
    /// Honoured only on calls from a function that reads SCTLR_EL1 (`mrs xN, sctlr_el1`).
    pub guarded: bool,
}

/// What one instruction means to the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insn {
    /// A direct branch or call to `target`; `falls_through` unless it is an unconditional `b`.
    Branch {
        /// Where it goes.
        target: u64,
        /// Whether execution may continue with the next instruction.
        falls_through: bool,
    },
    /// `adr` (an address) or `adrp` (a 4 KiB page) into register `rd`.
    Address {
        /// The register written.
        rd: u8,
        /// The address, or the page's address for `adrp`.
        value: u64,
        /// Whether it is an `adrp` page (an `add` completes it).
        page: bool,
    },
    /// `add xd, xn, #imm` (64-bit, immediate).
    AddImmediate {
        /// The register written.
        rd: u8,
        /// The register read.
        rn: u8,
        /// The immediate, shifted.
        imm: u64,
    },
    /// `ret`, `br` or `eret`: execution does not continue with the next instruction.
    End,
    /// `mrs xN, sctlr_el1`.
    ReadSctlr,
    /// A load/store-exclusive, compare-and-swap or atomic read-modify-write.
    Exclusive(&'static str),
    /// Anything else.
    Other,
}

fn sign_extend(value: u32, bits: u32) -> i64 {
    let shift = 64 - bits;
    (i64::from(value) << shift) >> shift
}

/// Decodes the instruction `insn` at address `pc`.
pub fn decode(insn: u32, pc: u64) -> Insn {
    let rel = |offset: i64| pc.wrapping_add_signed(offset);
    // B, BL.
    if insn & 0x7c00_0000 == 0x1400_0000 {
        return Insn::Branch {
            target: rel(sign_extend(insn & 0x03ff_ffff, 26) * 4),
            falls_through: insn >> 31 == 1,
        };
    }
    // B.cond.
    if insn & 0xff00_0010 == 0x5400_0000 {
        return Insn::Branch {
            target: rel(sign_extend((insn >> 5) & 0x7_ffff, 19) * 4),
            falls_through: true,
        };
    }
    // CBZ, CBNZ.
    if insn & 0x7e00_0000 == 0x3400_0000 {
        return Insn::Branch {
            target: rel(sign_extend((insn >> 5) & 0x7_ffff, 19) * 4),
            falls_through: true,
        };
    }
    // TBZ, TBNZ.
    if insn & 0x7e00_0000 == 0x3600_0000 {
        return Insn::Branch {
            target: rel(sign_extend((insn >> 5) & 0x3fff, 14) * 4),
            falls_through: true,
        };
    }
    // ADR, ADRP.
    if insn & 0x1f00_0000 == 0x1000_0000 {
        let imm = sign_extend((((insn >> 5) & 0x7_ffff) << 2) | ((insn >> 29) & 3), 21);
        let page = insn >> 31 == 1;
        let value = if page {
            (pc & !0xfff).wrapping_add_signed(imm << 12)
        } else {
            rel(imm)
        };
        return Insn::Address {
            rd: (insn & 31) as u8,
            value,
            page,
        };
    }
    // ADD (immediate), 64-bit, not setting flags.
    if insn & 0xff00_0000 == 0x9100_0000 {
        let imm = u64::from((insn >> 10) & 0xfff) << if insn & (1 << 22) != 0 { 12 } else { 0 };
        return Insn::AddImmediate {
            rd: (insn & 31) as u8,
            rn: ((insn >> 5) & 31) as u8,
            imm,
        };
    }
    // RET, BR, ERET.
    if insn & 0xffff_fc1f == 0xd65f_0000 || insn & 0xffff_fc1f == 0xd61f_0000 || insn == 0xd69f_03e0
    {
        return Insn::End;
    }
    // MRS Xt, SCTLR_EL1 (op0 3, op1 0, CRn 1, CRm 0, op2 0).
    if insn & 0xffff_ffe0 == 0xd538_1000 {
        return Insn::ReadSctlr;
    }
    if let Some(name) = exclusive(insn) {
        return Insn::Exclusive(name);
    }
    Insn::Other
}

/// The mnemonic of a load/store-exclusive, compare-and-swap or LSE atomic, without the size
/// suffix, or `None`.
fn exclusive(insn: u32) -> Option<&'static str> {
    let bit = |n: u32| (insn >> n) & 1 == 1;
    // Load/store exclusive class (bits 29:24 = 001000): size, o2, L, o1, Rs, o0, Rt2, Rn, Rt.
    if insn & 0x3f00_0000 == 0x0800_0000 {
        let (o2, load, o1, o0) = (bit(23), bit(22), bit(21), bit(15));
        let pair = insn >> 30 >= 2;
        return match (o2, o1) {
            // LDAR, STLR, LDLAR, STLLR: ordered plain accesses, no monitor.
            (true, false) => None,
            (false, false) => Some(match (load, o0) {
                (true, false) => "ldxr",
                (true, true) => "ldaxr",
                (false, false) => "stxr",
                (false, true) => "stlxr",
            }),
            (false, true) if pair => Some(match (load, o0) {
                (true, false) => "ldxp",
                (true, true) => "ldaxp",
                (false, false) => "stxp",
                (false, true) => "stlxp",
            }),
            (false, true) => Some(match (load, o0) {
                (false, false) => "casp",
                (true, false) => "caspa",
                (false, true) => "caspl",
                (true, true) => "caspal",
            }),
            (true, true) => Some(match (load, o0) {
                (false, false) => "cas",
                (true, false) => "casa",
                (false, true) => "casl",
                (true, true) => "casal",
            }),
        };
    }
    // Atomic memory operations (LSE): size 111 V=0 00 A R 1 Rs o3 opc 00 Rn Rt.
    if insn & 0x3f20_0c00 == 0x3820_0000 {
        let opc = (insn >> 12) & 7;
        return if bit(15) {
            // o3 = 1: SWP with opc 0; opc 4 is LDAPR (a plain acquire load).
            (opc == 0).then_some("swp")
        } else {
            Some(
                [
                    "ldadd", "ldclr", "ldeor", "ldset", "ldsmax", "ldsmin", "ldumax", "ldumin",
                ][opc as usize],
            )
        };
    }
    None
}

/// One function (or assembly label, up to the next symbol) of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Demangled name without the hash.
    pub name: String,
    /// Whether it is an assembly label (no size in the symbol table): execution may run on
    /// into the next symbol.
    pub label: bool,
}

/// The executable code of an image: its functions and the bytes behind them.
#[derive(Debug, Clone, Default)]
pub struct Program {
    functions: Vec<Function>,
    sections: Vec<(u64, Vec<u8>)>,
}

impl Program {
    /// A program from executable sections (address, bytes) and function symbols (start,
    /// size, name; size 0 for an assembly label, which then extends to the next symbol or the
    /// end of its section).
    pub fn new(sections: Vec<(u64, Vec<u8>)>, symbols: &[(u64, u64, String)]) -> Self {
        let mut symbols: Vec<&(u64, u64, String)> = symbols
            .iter()
            .filter(|(addr, _, _)| sections.iter().any(|(s, b)| within(*addr, *s, b.len())))
            .collect();
        // One function per start address: prefer the one with a size.
        symbols.sort_by_key(|(addr, size, _)| (*addr, u64::MAX - size));
        symbols.dedup_by_key(|(addr, _, _)| *addr);
        let mut functions = Vec::with_capacity(symbols.len());
        for (i, (addr, size, name)) in symbols.iter().enumerate() {
            let section_end = sections
                .iter()
                .find(|(s, b)| within(*addr, *s, b.len()))
                .map(|(s, b)| s + b.len() as u64)
                .unwrap_or(*addr);
            let next = symbols
                .get(i + 1)
                .map_or(section_end, |n| n.0.min(section_end));
            let end = if *size > 0 {
                (addr + size).min(section_end)
            } else {
                next
            };
            functions.push(Function {
                start: *addr,
                end,
                name: name.clone(),
                label: *size == 0,
            });
        }
        Self {
            functions,
            sections,
        }
    }

    /// Reads a kernel ELF: its executable sections and its function and label symbols.
    pub fn from_elf(bytes: &[u8]) -> Result<Self> {
        let file = object::File::parse(bytes).context("parsing the kernel ELF")?;
        let mut sections = Vec::new();
        for section in file.sections().filter(|s| s.kind() == SectionKind::Text) {
            let data = section
                .data()
                .with_context(|| format!("reading section {}", section.name().unwrap_or("?")))?;
            sections.push((section.address(), data.to_vec()));
        }
        let symbols: Vec<(u64, u64, String)> = file
            .symbols()
            // Functions, and assembly labels (no ELF type: `Unknown`) in a section.
            .filter(|s| {
                matches!(
                    s.kind(),
                    SymbolKind::Text | SymbolKind::Label | SymbolKind::Unknown
                ) && s.section_index().is_some()
            })
            .filter_map(|s| {
                let name = s.name().ok()?;
                // AArch64 ELF mapping symbols ($x, $d) mark code and data, not functions.
                if name.starts_with('$') || name.is_empty() {
                    return None;
                }
                Some((
                    s.address(),
                    s.size(),
                    format!("{:#}", rustc_demangle::demangle(name)),
                ))
            })
            .collect();
        Ok(Self::new(sections, &symbols))
    }

    fn word(&self, addr: u64) -> Option<u32> {
        let (start, bytes) = self
            .sections
            .iter()
            .find(|(s, b)| within(addr, *s, b.len()))?;
        let offset = (addr - start) as usize;
        let b = bytes.get(offset..offset + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The function containing `addr`.
    fn containing(&self, addr: u64) -> Option<usize> {
        let i = self
            .functions
            .partition_point(|f| f.start <= addr)
            .checked_sub(1)?;
        (addr < self.functions[i].end).then_some(i)
    }

    fn find(&self, name: Name) -> Vec<usize> {
        (0..self.functions.len())
            .filter(|&i| name.matches(&self.functions[i].name))
            .collect()
    }
}

fn within(addr: u64, start: u64, len: usize) -> bool {
    addr >= start && addr < start + len as u64
}

/// An exclusive reachable before the MMU is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The function it is in.
    pub function: String,
    /// Its address.
    pub address: u64,
    /// The instruction.
    pub mnemonic: &'static str,
    /// How the walk got there, from a root.
    pub path: Vec<String>,
}

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Functions reached before the MMU is on, in the order the walk reached them.
    pub functions: Vec<String>,
    /// Instructions decoded in them.
    pub instructions: usize,
    /// Exclusives among them.
    pub violations: Vec<Violation>,
}

/// Walks `program` from `roots`, stopping at `stops` (see the module documentation).
pub fn check(program: &Program, roots: &[Name], stops: &[Stop]) -> Result<Report> {
    let mut queue = VecDeque::new();
    let mut parent: HashMap<usize, Option<usize>> = HashMap::new();
    for &root in roots {
        let found = program.find(root);
        if found.is_empty() && !matches!(root, Name::Optional(_)) {
            return Err(Error::new(format!(
                "pre-MMU check: no function named {:?} in the image (renamed? the check must \
                 know where the boot path starts)",
                root.text()
            )));
        }
        for i in found {
            if parent.insert(i, None).is_none() {
                queue.push_back(i);
            }
        }
    }
    let mut stop_at: HashMap<usize, Stop> = HashMap::new();
    for &stop in stops {
        let found = program.find(Name::Exact(stop.name));
        if found.is_empty() {
            return Err(Error::new(format!(
                "pre-MMU check: no function named {:?} in the image (renamed or inlined? the \
                 check stops there because the MMU is on)",
                stop.name
            )));
        }
        for i in found {
            stop_at.insert(i, stop);
        }
    }

    let mut violations = Vec::new();
    let mut instructions = 0;
    let mut order = Vec::new();
    while let Some(f) = queue.pop_front() {
        order.push(f);
        let func = &program.functions[f];
        let mut targets = Vec::new();
        let mut hits = Vec::new();
        let mut reads_sctlr = false;
        // adrp pages by register, with the index of the instruction that formed them.
        let mut pages: [Option<(u64, usize)>; 32] = [None; 32];
        let mut last = Insn::Other;
        for (n, pc) in (func.start..func.end).step_by(4).enumerate() {
            let Some(word) = program.word(pc) else { break };
            instructions += 1;
            let insn = decode(word, pc);
            match insn {
                Insn::Branch { target, .. } => targets.push(target),
                Insn::Address {
                    value, page: false, ..
                } => targets.push(value),
                Insn::Address {
                    rd,
                    value,
                    page: true,
                } => pages[rd as usize] = Some((value, n)),
                Insn::AddImmediate { rn, imm, .. } => {
                    // An address formed by adrp + add a few instructions apart.
                    if let Some((page, at)) = pages[rn as usize]
                        && n - at <= 16
                    {
                        targets.push(page + imm);
                    }
                }
                Insn::ReadSctlr => reads_sctlr = true,
                Insn::Exclusive(mnemonic) => hits.push((pc, mnemonic)),
                Insn::End | Insn::Other => {}
            }
            // Alignment padding (NOPs, zeros) after the last instruction does not count.
            if word != NOP && word != 0 {
                last = insn;
            }
        }
        let falls_through = match last {
            Insn::End => false,
            Insn::Branch { falls_through, .. } => falls_through,
            _ => true,
        };
        if func.label && falls_through {
            targets.push(func.end);
        }
        if !hits.is_empty() {
            let path = path_to(program, &parent, f);
            for (address, mnemonic) in hits {
                violations.push(Violation {
                    function: func.name.clone(),
                    address,
                    mnemonic,
                    path: path.clone(),
                });
            }
        }
        for target in targets {
            let Some(t) = program.containing(target) else {
                continue;
            };
            if t == f {
                continue;
            }
            if let Some(stop) = stop_at.get(&t)
                && (!stop.guarded || reads_sctlr)
            {
                continue;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = parent.entry(t) {
                e.insert(Some(f));
                queue.push_back(t);
            }
        }
    }
    Ok(Report {
        functions: order
            .iter()
            .map(|&f| program.functions[f].name.clone())
            .collect(),
        instructions,
        violations,
    })
}

fn path_to(program: &Program, parent: &HashMap<usize, Option<usize>>, mut f: usize) -> Vec<String> {
    let mut path = vec![program.functions[f].name.clone()];
    while let Some(Some(p)) = parent.get(&f) {
        path.push(program.functions[*p].name.clone());
        f = *p;
        if path.len() > 64 {
            break;
        }
    }
    path.reverse();
    path
}

/// Runs the check on the kernel ELF at `elf` with the kernel's roots and stops.
pub fn check_file(elf: &Path) -> Result<Report> {
    let bytes = std::fs::read(elf).with_context(|| format!("reading {}", elf.display()))?;
    check(&Program::from_elf(&bytes)?, ROOTS, STOPS)
}

/// One line per violation: the function, the instruction and the path to it.
pub fn describe(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| {
            format!(
                "{} at {:#x} in {} (reached {})",
                v.mnemonic,
                v.address,
                v.function,
                v.path.join(" -> ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodings from `llvm-mc -triple=aarch64 -mattr=+lse,+rcpc -show-encoding`.
    const FLAGGED: &[(u32, &str)] = &[
        (0xc85f_7c20, "ldxr"),   // ldxr x0, [x1]
        (0x885f_fc62, "ldaxr"),  // ldaxr w2, [x3]
        (0x085f_7c20, "ldxr"),   // ldxrb w0, [x1]
        (0x485f_fc20, "ldaxr"),  // ldaxrh w0, [x1]
        (0xc804_7cc5, "stxr"),   // stxr w4, x5, [x6]
        (0x8801_fc02, "stlxr"),  // stlxr w1, w2, [x0]
        (0x0801_7c02, "stxr"),   // stxrb w1, w2, [x0]
        (0xc87f_0440, "ldxp"),   // ldxp x0, x1, [x2]
        (0xc823_8440, "stlxp"),  // stlxp w3, x0, x1, [x2]
        (0xc8a0_7c41, "cas"),    // cas x0, x1, [x2]
        (0x88e0_fc41, "casal"),  // casal w0, w1, [x2]
        (0x08e0_7c41, "casa"),   // casab w0, w1, [x2]
        (0x4820_7c82, "casp"),   // casp x0, x1, x2, x3, [x4]
        (0xf820_0041, "ldadd"),  // ldadd x0, x1, [x2]
        (0xb8e0_0041, "ldadd"),  // ldaddal w0, w1, [x2]
        (0xf860_1041, "ldclr"),  // ldclrl x0, x1, [x2]
        (0xb8a0_2041, "ldeor"),  // ldeora w0, w1, [x2]
        (0xf820_3041, "ldset"),  // ldset x0, x1, [x2]
        (0xb820_4041, "ldsmax"), // ldsmax w0, w1, [x2]
        (0xf820_7041, "ldumin"), // ldumin x0, x1, [x2]
        (0xf820_8041, "swp"),    // swp x0, x1, [x2]
        (0xb8e0_8041, "swp"),    // swpal w0, w1, [x2]
        (0xf820_005f, "ldadd"),  // stadd x0, [x2]
    ];

    /// Ordered or plain accesses and other instructions that must pass.
    const PLAIN: &[u32] = &[
        0xc8df_fc20, // ldar x0, [x1]
        0xc89f_fc20, // stlr x0, [x1]
        0x08df_fc20, // ldarb w0, [x1]
        0xc8df_7c20, // ldlar x0, [x1]
        0xc89f_7c20, // stllr x0, [x1]
        0xf8bf_c020, // ldapr x0, [x1]
        0xf940_0020, // ldr x0, [x1]
        0xf900_0420, // str x0, [x1, #8]
        0xa940_0440, // ldp x0, x1, [x2]
        0xd503_201f, // nop
        0xd503_3f5f, // clrex
    ];

    #[test]
    fn every_exclusive_and_atomic_form_is_flagged() {
        for &(insn, name) in FLAGGED {
            assert_eq!(decode(insn, 0), Insn::Exclusive(name), "{insn:#010x}");
        }
    }

    #[test]
    fn ordered_and_plain_accesses_are_not_flagged() {
        for &insn in PLAIN {
            assert_eq!(decode(insn, 0), Insn::Other, "{insn:#010x}");
        }
    }

    #[test]
    fn branches_and_addresses_decode_to_their_targets() {
        let pc = 0x8_0000;
        let branch = |target, falls_through| Insn::Branch {
            target,
            falls_through,
        };
        assert_eq!(decode(0x1400_0002, pc), branch(pc + 8, false)); // b #8
        assert_eq!(decode(0x97ff_ffff, pc), branch(pc - 4, true)); // bl #-4
        assert_eq!(decode(0x5400_0061, pc), branch(pc + 12, true)); // b.ne #12
        assert_eq!(decode(0xb400_0080, pc), branch(pc + 16, true)); // cbz x0, #16
        assert_eq!(decode(0x371f_ffc1, pc), branch(pc - 8, true)); // tbnz w1, #3, #-8
        let adr = Insn::Address {
            rd: 0,
            value: pc + 0x100,
            page: false,
        };
        assert_eq!(decode(0x1000_0800, pc), adr); // adr x0, #256
        let adrp = Insn::Address {
            rd: 1,
            value: 0x8_3000,
            page: true,
        };
        assert_eq!(decode(0xf000_0001, pc + 0x10), adrp); // adrp x1, #12288
        let add = |rd, rn, imm| Insn::AddImmediate { rd, rn, imm };
        assert_eq!(decode(0x9104_8c21, pc), add(1, 1, 0x123)); // add x1, x1, #291
        assert_eq!(decode(0x9140_4022, pc), add(2, 1, 0x10000)); // add x2, x1, #16, lsl #12
        for end in [0xd65f_03c0, 0xd69f_03e0, 0xd61f_0060] {
            assert_eq!(decode(end, pc), Insn::End); // ret, eret, br x3
        }
        assert_eq!(decode(0xd63f_0080, pc), Insn::Other); // blr x4 returns here
        assert_eq!(decode(0xd538_1008, pc), Insn::ReadSctlr); // mrs x8, sctlr_el1
    }

    const RET: u32 = 0xd65f_03c0;
    const LDAXR: u32 = 0x885f_fc62;
    const MRS_SCTLR: u32 = 0xd538_1008;

    fn bl(from: u64, to: u64) -> u32 {
        0x9400_0000 | (((to as i64 - from as i64) / 4) as u32 & 0x03ff_ffff)
    }

    fn b(from: u64, to: u64) -> u32 {
        0x1400_0000 | (((to as i64 - from as i64) / 4) as u32 & 0x03ff_ffff)
    }

    /// A program of functions laid out 0x100 apart from 0x1000, each given as its words.
    fn program(functions: &[(&str, bool, Vec<u32>)]) -> Program {
        let mut bytes = vec![0u8; functions.len() * 0x100];
        let mut symbols = Vec::new();
        for (i, (name, label, words)) in functions.iter().enumerate() {
            for (j, w) in words.iter().enumerate() {
                let at = i * 0x100 + j * 4;
                bytes[at..at + 4].copy_from_slice(&w.to_le_bytes());
            }
            let size = if *label { 0 } else { words.len() as u64 * 4 };
            symbols.push((0x1000 + i as u64 * 0x100, size, (*name).to_owned()));
        }
        Program::new(vec![(0x1000, bytes)], &symbols)
    }

    fn at(i: u64) -> u64 {
        0x1000 + i * 0x100
    }

    const ROOT: &[Name] = &[Name::Exact("root")];
    const STOP: &[Stop] = &[
        Stop {
            name: "after_mmu",
            guarded: false,
        },
        Stop {
            name: "guarded_half",
            guarded: true,
        },
    ];

    #[test]
    fn an_exclusive_reached_by_calls_is_named_with_its_path() {
        let p = program(&[
            ("root", false, vec![bl(at(0), at(1)), RET]),
            ("middle", false, vec![NOP, b(at(1) + 4, at(2))]),
            ("lock", false, vec![LDAXR, RET]),
            ("after_mmu", false, vec![LDAXR, RET]),
            ("guarded_half", false, vec![LDAXR, RET]),
        ]);
        let report = check(&p, ROOT, STOP).unwrap();
        assert_eq!(report.functions, ["root", "middle", "lock"]);
        assert_eq!(
            report.violations,
            vec![Violation {
                function: "lock".into(),
                address: at(2),
                mnemonic: "ldaxr",
                path: vec!["root".into(), "middle".into(), "lock".into()],
            }]
        );
        assert!(describe(&report.violations).contains("ldaxr at 0x1200 in lock"));
    }

    #[test]
    fn the_walk_stops_where_the_mmu_is_on() {
        let p = program(&[
            (
                "root",
                false,
                vec![bl(at(0), at(1)), MRS_SCTLR, bl(at(0) + 8, at(2)), RET],
            ),
            ("after_mmu", false, vec![LDAXR, RET]),
            ("guarded_half", false, vec![LDAXR, RET]),
        ]);
        let report = check(&p, ROOT, STOP).unwrap();
        assert!(report.violations.is_empty(), "{report:?}");
        assert_eq!(report.functions, ["root"]);
    }

    #[test]
    fn a_guarded_stop_without_the_sctlr_test_is_walked() {
        let p = program(&[
            ("root", false, vec![bl(at(0), at(2)), RET]),
            ("after_mmu", false, vec![RET]),
            ("guarded_half", false, vec![LDAXR, RET]),
        ]);
        let report = check(&p, ROOT, STOP).unwrap();
        assert_eq!(report.violations.len(), 1);
        assert_eq!(report.violations[0].function, "guarded_half");
    }

    #[test]
    fn function_addresses_and_assembly_fall_through_are_followed() {
        // root: adrp x1, page of `pointer`; add x1, x1, #offset; ret. `label` (an assembly
        // label) runs on into `next`.
        let target = at(1);
        let adrp = 0x9000_0001 | ((((target >> 12) - (at(0) >> 12)) as u32 & 3) << 29);
        let add = 0x9100_0021 | (((target & 0xfff) as u32) << 10);
        let p = program(&[
            ("root", false, vec![adrp, add, b(at(0) + 8, at(2))]),
            ("pointer", false, vec![LDAXR, RET]),
            ("label", true, vec![NOP; 64]),
            ("next", true, vec![LDAXR, RET]),
            ("after_mmu", false, vec![RET]),
            ("guarded_half", false, vec![RET]),
        ]);
        let report = check(&p, ROOT, STOP).unwrap();
        let names: Vec<&str> = report
            .violations
            .iter()
            .map(|v| v.function.as_str())
            .collect();
        assert_eq!(names, ["pointer", "next"]);
    }

    #[test]
    fn missing_roots_and_stops_are_errors() {
        let p = program(&[("root", false, vec![RET])]);
        let err = check(&p, &[Name::Exact("_start")], &[]).unwrap_err();
        assert!(err.to_string().contains("\"_start\""), "{err}");
        assert!(check(&p, &[Name::Optional("_start")], &[]).is_ok());
        let err = check(&p, ROOT, STOP).unwrap_err();
        assert!(err.to_string().contains("after_mmu"), "{err}");
    }
}
