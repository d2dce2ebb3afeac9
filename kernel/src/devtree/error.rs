//! What can be wrong with a device tree, and where: every error names the place (a node's
//! path, or the block of the tree) and the rule that was broken, in one line fit for the
//! console. Nothing here allocates (the tree is read before the heap exists), so a node's
//! path is copied into a small fixed buffer.

use crate::platform::PhysRange;
use core::fmt;

/// Bytes of a node path kept for messages; a longer path is cut and marked with `...`.
pub const PATH_BYTES: usize = 48;

/// The place in a tree an error is about: a node's path (`/cpus/cpu@1`) or a named place
/// outside the structure block (`the memory reservation block`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NodePath {
    bytes: [u8; PATH_BYTES],
    len: u8,
    truncated: bool,
}

impl NodePath {
    /// No place (errors about the tree as a whole).
    pub const fn none() -> Self {
        Self {
            bytes: [0; PATH_BYTES],
            len: 0,
            truncated: false,
        }
    }

    /// A place described in words.
    pub fn text(what: &str) -> Self {
        let mut path = Self::none();
        path.push(what.as_bytes());
        path
    }

    /// The path of the node whose names from the root down are `names` (the root's own name
    /// is empty and is written as `/`).
    pub fn from_names(names: &[&[u8]]) -> Self {
        let mut path = Self::none();
        match names {
            [] => {}
            [_root] => path.push(b"/"),
            [_root, rest @ ..] => {
                for name in rest {
                    path.push(b"/");
                    path.push(name);
                }
            }
        }
        path
    }

    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            let len = usize::from(self.len);
            if len == PATH_BYTES {
                self.truncated = true;
                return;
            }
            self.bytes[len] = b;
            self.len += 1;
        }
    }

    /// The path as raw bytes (without the `...` of a cut path).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Whether this is [`NodePath::none`].
    pub fn is_none(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Display for NodePath {
    /// Printable ASCII as it is, any other byte as `?` (names come from outside and go to a
    /// console).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.as_bytes() {
            let c = if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '?'
            };
            fmt::Write::write_char(f, c)?;
        }
        if self.truncated {
            f.write_str("...")?;
        }
        Ok(())
    }
}

impl fmt::Debug for NodePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// The rule a tree breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// A structure-block token that is none of BEGIN_NODE, END_NODE, PROP, NOP, END.
    UnknownToken(u32),
    /// An END_NODE with no node open (more END_NODEs than BEGIN_NODEs).
    EndWithoutBegin,
    /// Nodes nested deeper than [`MAX_DEPTH`](super::MAX_DEPTH) levels (the root is level 1).
    TooDeep,
    /// A node name without its NUL inside the structure block.
    NameUnterminated,
    /// A token, or a property's value, runs past the end of the structure block.
    Overrun,
    /// A property's name offset lies outside the strings block.
    NameOffsetOutside(u32),
    /// A property before the root node or after it was closed.
    PropertyOutsideNode,
    /// A property after a subnode of its node (the format puts properties first).
    PropertyAfterSubnode,
    /// A second top-level node (a tree has one root).
    SecondRoot,
    /// FDT_END while a node is still open.
    Unclosed,
    /// The structure block holds no root node.
    NoRoot,
    /// The strings block does not end with a NUL, so a name in it could run past its end.
    StringsUnterminated,
    /// The memory reservation block has no (0, 0) entry before the end of the tree.
    ReservationsUnterminated,
    /// More non-empty memory reservations than the kernel keeps.
    TooManyReservations(usize),
    /// `#address-cells`/`#size-cells` that the kernel cannot decode `reg` with (address 1 or
    /// 2 cells, size 0 to 2).
    Cells {
        /// `#address-cells`.
        address: u32,
        /// `#size-cells`.
        size: u32,
    },
    /// A `reg` whose length is not a whole number of (address, size) entries.
    RegLength {
        /// The property's length in bytes.
        len: usize,
        /// The size of one entry in bytes.
        entry: usize,
    },
    /// No `reg` where one is required.
    RegMissing,
    /// Fewer `reg` entries than the kernel needs.
    TooFewRegs {
        /// Entries present.
        found: usize,
        /// Entries needed.
        needed: usize,
    },
    /// A register range smaller than the device needs.
    TooSmall {
        /// Its size in bytes.
        size: u64,
        /// The least the device needs.
        needed: u64,
    },
    /// An address range whose end lies past 2^64.
    Wraps(PhysRange),
    /// An address range that ends past [`PHYS_ADDR_LIMIT`](super::PHYS_ADDR_LIMIT).
    OutsidePhysical(PhysRange),
    /// A memory range overlapping another one.
    Overlaps(PhysRange, PhysRange),
    /// A cpu `reg` with bits outside the MPIDR affinity fields.
    NotAnMpidr(u64),
    /// Two cpu nodes with the same MPIDR.
    DuplicateMpidr(u64),
    /// A `cpu-release-addr` that is not an 8-byte aligned address inside RAM.
    ReleaseAddr(u64),
    /// An interrupt specifier the kernel cannot use.
    Interrupt {
        /// The specifier's type cell (0 SPI, 1 PPI).
        kind: u32,
        /// Its number cell.
        number: u32,
    },
    /// An interrupt specifier with too few cells.
    InterruptCells(usize),
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let range =
            |f: &mut fmt::Formatter<'_>, r: &PhysRange| write!(f, "{:#x} + {:#x}", r.start, r.size);
        match self {
            Self::UnknownToken(t) => write!(f, "unknown structure token {t:#x}"),
            Self::EndWithoutBegin => f.write_str("END_NODE without a matching BEGIN_NODE"),
            Self::TooDeep => write!(f, "nodes nested deeper than {} levels", super::MAX_DEPTH),
            Self::NameUnterminated => {
                f.write_str("node name without a NUL inside the structure block")
            }
            Self::Overrun => f.write_str("a token runs past the end of the structure block"),
            Self::NameOffsetOutside(off) => write!(
                f,
                "property name offset {off:#x} lies outside the strings block"
            ),
            Self::PropertyOutsideNode => f.write_str("property outside the root node"),
            Self::PropertyAfterSubnode => f.write_str("property after a subnode"),
            Self::SecondRoot => f.write_str("a second root node"),
            Self::Unclosed => f.write_str("FDT_END while a node is still open"),
            Self::NoRoot => f.write_str("no root node"),
            Self::StringsUnterminated => f.write_str("the strings block does not end with a NUL"),
            Self::ReservationsUnterminated => {
                f.write_str("no (0, 0) entry ends it inside the tree")
            }
            Self::TooManyReservations(max) => {
                write!(
                    f,
                    "more than {max} reserved ranges (the kernel keeps {max})"
                )
            }
            Self::Cells { address, size } => write!(
                f,
                "#address-cells {address} / #size-cells {size}: reg needs 1-2 address cells \
                 and 0-2 size cells"
            ),
            Self::RegLength { len, entry } => write!(
                f,
                "reg of {len} bytes is not a whole number of {entry}-byte entries"
            ),
            Self::RegMissing => f.write_str("no reg property"),
            Self::TooFewRegs { found, needed } => {
                write!(f, "{found} reg entries, {needed} needed")
            }
            Self::TooSmall { size, needed } => write!(
                f,
                "a reg entry of {size:#x} bytes, the device needs at least {needed:#x}"
            ),
            Self::Wraps(r) => {
                f.write_str("range ")?;
                range(f, r)?;
                f.write_str(" wraps past 2^64")
            }
            Self::OutsidePhysical(r) => {
                f.write_str("range ")?;
                range(f, r)?;
                write!(
                    f,
                    " ends past the {}-bit physical address space",
                    super::PHYS_ADDR_LIMIT.trailing_zeros()
                )
            }
            Self::Overlaps(a, b) => {
                f.write_str("memory ")?;
                range(f, a)?;
                f.write_str(" overlaps memory ")?;
                range(f, b)
            }
            Self::NotAnMpidr(reg) => write!(
                f,
                "reg {reg:#x} has bits outside the MPIDR affinity fields (0xff00ffffff)"
            ),
            Self::DuplicateMpidr(m) => write!(f, "MPIDR {m:#x} is also another cpu node's"),
            Self::ReleaseAddr(a) => write!(
                f,
                "cpu-release-addr {a:#x} is not an 8-byte aligned address inside RAM"
            ),
            Self::Interrupt { kind, number } => write!(
                f,
                "interrupt specifier (type {kind:#x}, number {number:#x}) is outside the GIC's \
                 range (PPI 0-15, SPI 0-987)"
            ),
            Self::InterruptCells(n) => write!(f, "interrupts has {n} cells, too few"),
        }
    }
}

/// What is wrong with a device tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtbError {
    /// No device tree at the given address (wrong magic).
    BadMagic(u32),
    /// The header's sizes or offsets are inconsistent.
    BadHeader(&'static str),
    /// The buffer is shorter than the header's total size.
    Truncated {
        /// Size the header claims.
        claimed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The tree breaks a rule of the format, at byte `offset` of the tree, inside `node` (the
    /// innermost open node, or the block).
    Malformed {
        /// Where.
        node: NodePath,
        /// Byte offset in the tree (trees are at most 2 MiB).
        offset: u32,
        /// What.
        rule: Rule,
    },
    /// A value the kernel would use is absurd.
    Invalid {
        /// The node it is in.
        node: NodePath,
        /// What.
        rule: Rule,
    },
    /// No usable `memory` node.
    NoMemory,
    /// No `cpu` node under `/cpus`.
    NoCpus,
}

impl DtbError {
    /// The rule broken, for the two kinds of error that name one.
    pub fn rule(&self) -> Option<Rule> {
        match self {
            Self::Malformed { rule, .. } | Self::Invalid { rule, .. } => Some(*rule),
            _ => None,
        }
    }

    /// The node (or block) named, for the two kinds of error that name one.
    pub fn node(&self) -> Option<NodePath> {
        match self {
            Self::Malformed { node, .. } | Self::Invalid { node, .. } => Some(*node),
            _ => None,
        }
    }
}

impl fmt::Display for DtbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic(m) => write!(f, "no device tree: magic {m:#010x}, expected 0xd00dfeed"),
            Self::BadHeader(what) => write!(f, "device tree header is invalid: {what}"),
            Self::Truncated { claimed, available } => write!(
                f,
                "device tree is truncated: header says {claimed} bytes, only {available} present"
            ),
            Self::Malformed { node, offset, rule } => {
                write!(f, "device tree is malformed at byte {offset:#x}")?;
                if !node.is_none() {
                    write!(f, " in {node}")?;
                }
                write!(f, ": {rule}")
            }
            Self::Invalid { node, rule } => write!(f, "device tree: {node}: {rule}"),
            Self::NoMemory => write!(f, "device tree has no usable memory node"),
            Self::NoCpus => write!(f, "device tree has no cpu nodes under /cpus"),
        }
    }
}
