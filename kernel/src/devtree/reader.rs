//! The device-tree reader: [`DeviceTree::new`] checks a whole flattened tree once, in one pass
//! linear in its size, and the walk ([`DeviceTree::walk`]) then visits its nodes with their
//! properties and the `#address-cells`/`#size-cells` their `reg` is decoded with.
//!
//! What the check guarantees, so that nothing later can index out of bounds, loop or recurse
//! without end:
//! - the header's blocks lie inside the tree; the structure block is 4-byte aligned and the
//!   memory reservation block 8-byte aligned and ended by a (0, 0) entry inside the tree;
//! - every token is known and lies, with its name or value, inside the structure block;
//! - END_NODEs never outnumber BEGIN_NODEs, nesting stays within [`MAX_DEPTH`], there is
//!   exactly one root, every node is closed before FDT_END, and properties come before a
//!   node's subnodes;
//! - every property name offset lies inside the strings block, and that block ends with a
//!   NUL, so every name ends inside it.
//!
//! Costs stay linear in the tree's size however it is shaped: a node's properties are
//! scanned a fixed number of times, a parent's cells are kept on a stack (not re-read for each
//! child), and property names are compared with the name looked for (its length, not the
//! stored name's) instead of being measured.

use super::error::{DtbError, NodePath, Rule};
use super::{FDT_MAGIC, MAX_DEPTH, be32, total_size};

pub(super) const FDT_BEGIN_NODE: u32 = 1;
pub(super) const FDT_END_NODE: u32 = 2;
pub(super) const FDT_PROP: u32 = 3;
pub(super) const FDT_NOP: u32 = 4;
pub(super) const FDT_END: u32 = 9;

/// How a node's children encode addresses and sizes (`#address-cells`, `#size-cells`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cells {
    /// Cells per address.
    pub address: u32,
    /// Cells per size.
    pub size: u32,
}

impl Cells {
    /// What the specification says applies when a node does not say: 2 and 1.
    pub const DEFAULT: Self = Self {
        address: 2,
        size: 1,
    };
}

/// A device tree that passed the checks of [`DeviceTree::new`].
#[derive(Clone, Copy, Debug)]
pub struct DeviceTree<'a> {
    data: &'a [u8],
    off_struct: usize,
    structure: &'a [u8],
    strings: &'a [u8],
    /// The reservation entries before the (0, 0) one.
    reservations: &'a [u8],
}

/// What a walk's visitor wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Walk {
    /// Go on to the next node.
    Continue,
    /// Stop the walk.
    Stop,
}

fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

impl<'a> DeviceTree<'a> {
    /// Checks the tree at the start of `data` (header, reservation block, structure block,
    /// strings block; see the module documentation) in one linear pass.
    pub fn new(data: &'a [u8]) -> Result<Self, DtbError> {
        let total = total_size(data)?;
        if data.len() < total {
            return Err(DtbError::Truncated {
                claimed: total,
                available: data.len(),
            });
        }
        let data = &data[..total];
        let field = |i: usize| be32(data, i * 4).map_or(0, |v| v as usize);
        debug_assert_eq!(field(0), FDT_MAGIC as usize);
        let (off_struct, off_strings, off_rsvmap) = (field(2), field(3), field(4));
        let (size_strings, size_struct) = (field(8), field(9));
        if !off_struct.is_multiple_of(4) {
            return Err(DtbError::BadHeader("structure block not 4-byte aligned"));
        }
        if !off_rsvmap.is_multiple_of(8) || off_rsvmap < 40 {
            return Err(DtbError::BadHeader(
                "memory reservation block not 8-byte aligned after the header",
            ));
        }
        // `total_size` checked that both blocks end inside the tree.
        let structure = data
            .get(off_struct..off_struct + size_struct)
            .ok_or(DtbError::BadHeader("a block lies outside the tree"))?;
        let strings = data
            .get(off_strings..off_strings + size_strings)
            .ok_or(DtbError::BadHeader("a block lies outside the tree"))?;
        let rsv_place = || NodePath::text("the memory reservation block");
        let mut at = off_rsvmap;
        loop {
            let entry = data
                .get(at..at.saturating_add(16))
                .ok_or(DtbError::Malformed {
                    node: rsv_place(),
                    offset: at as u32,
                    rule: Rule::ReservationsUnterminated,
                })?;
            if entry.iter().all(|&b| b == 0) {
                break;
            }
            at += 16;
        }
        let tree = Self {
            data,
            off_struct,
            structure,
            strings,
            reservations: &data[off_rsvmap..at],
        };
        if !strings.is_empty() && strings.last() != Some(&0) {
            return Err(DtbError::Malformed {
                node: NodePath::text("the strings block"),
                offset: (off_strings + size_strings - 1) as u32,
                rule: Rule::StringsUnterminated,
            });
        }
        tree.check_structure()?;
        Ok(tree)
    }

    /// The whole tree (its header's total size).
    pub fn bytes(&self) -> &'a [u8] {
        self.data
    }

    /// The memory reservation block's entries: (address, size), the (0, 0) end excluded.
    pub fn reservations(&self) -> impl Iterator<Item = (u64, u64)> + 'a {
        self.reservations.chunks_exact(16).map(|e| {
            let word = |i: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&e[i..i + 8]);
                u64::from_be_bytes(b)
            };
            (word(0), word(8))
        })
    }

    fn malformed(&self, names: &[&[u8]], pos: usize, rule: Rule) -> DtbError {
        DtbError::Malformed {
            node: if names.is_empty() {
                NodePath::text("the structure block")
            } else {
                NodePath::from_names(names)
            },
            offset: (self.off_struct + pos) as u32,
            rule,
        }
    }

    fn token(&self, names: &[&[u8]], pos: usize) -> Result<u32, DtbError> {
        be32(self.structure, pos).ok_or_else(|| self.malformed(names, pos, Rule::Overrun))
    }

    /// The name of the BEGIN_NODE at `pos` and the position after it.
    fn node_name(&self, names: &[&[u8]], pos: usize) -> Result<(&'a [u8], usize), DtbError> {
        let rest = self.structure.get(pos + 4..).unwrap_or(&[]);
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.malformed(names, pos, Rule::NameUnterminated))?;
        Ok((&rest[..len], align4(pos + 4 + len + 1)))
    }

    /// The property at `pos`: its name offset, value, and the position after it.
    fn property_at(&self, names: &[&[u8]], pos: usize) -> Result<(u32, &'a [u8], usize), DtbError> {
        let len = be32(self.structure, pos + 4)
            .ok_or_else(|| self.malformed(names, pos, Rule::Overrun))? as usize;
        let name_off = be32(self.structure, pos + 8)
            .ok_or_else(|| self.malformed(names, pos, Rule::Overrun))?;
        let value = (pos + 12)
            .checked_add(len)
            .and_then(|end| self.structure.get(pos + 12..end))
            .ok_or_else(|| self.malformed(names, pos, Rule::Overrun))?;
        if name_off as usize >= self.strings.len() {
            return Err(self.malformed(names, pos, Rule::NameOffsetOutside(name_off)));
        }
        Ok((name_off, value, align4(pos + 12 + len)))
    }

    /// The structure check: one pass over every token.
    fn check_structure(&self) -> Result<(), DtbError> {
        let mut names: [&[u8]; MAX_DEPTH] = [&[]; MAX_DEPTH];
        let mut depth = 0;
        let mut seen_root = false;
        // Whether the open node may still get properties (none of its subnodes seen yet).
        let mut in_props = false;
        let mut pos = 0;
        loop {
            let open = &names[..depth];
            match self.token(open, pos)? {
                FDT_BEGIN_NODE => {
                    if depth == 0 && seen_root {
                        return Err(self.malformed(open, pos, Rule::SecondRoot));
                    }
                    let (name, next) = self.node_name(open, pos)?;
                    if depth == MAX_DEPTH {
                        return Err(self.malformed(open, pos, Rule::TooDeep));
                    }
                    names[depth] = name;
                    depth += 1;
                    seen_root = true;
                    in_props = true;
                    pos = next;
                }
                FDT_END_NODE => {
                    if depth == 0 {
                        return Err(self.malformed(open, pos, Rule::EndWithoutBegin));
                    }
                    depth -= 1;
                    in_props = false;
                    pos += 4;
                }
                FDT_PROP => {
                    if depth == 0 {
                        return Err(self.malformed(open, pos, Rule::PropertyOutsideNode));
                    }
                    if !in_props {
                        return Err(self.malformed(open, pos, Rule::PropertyAfterSubnode));
                    }
                    let (_, _, next) = self.property_at(open, pos)?;
                    pos = next;
                }
                FDT_NOP => pos += 4,
                FDT_END => {
                    if depth != 0 {
                        return Err(self.malformed(open, pos, Rule::Unclosed));
                    }
                    if !seen_root {
                        return Err(self.malformed(open, pos, Rule::NoRoot));
                    }
                    return Ok(());
                }
                other => return Err(self.malformed(open, pos, Rule::UnknownToken(other))),
            }
        }
    }

    /// The properties starting at `pos` (NOPs skipped): their region's end, and the cells the
    /// node declares for its children.
    fn scan_properties(&self, names: &[&[u8]], mut pos: usize) -> Result<(usize, Cells), DtbError> {
        let mut cells = Cells::DEFAULT;
        loop {
            match self.token(names, pos)? {
                FDT_NOP => pos += 4,
                FDT_PROP => {
                    let (name_off, value, next) = self.property_at(names, pos)?;
                    let property = Property {
                        name_at: &self.strings[name_off as usize..],
                        value,
                    };
                    if let Some(v) = property.is("#address-cells").then(|| be32(value, 0)) {
                        cells.address = v.unwrap_or(u32::MAX);
                    } else if let Some(v) = property.is("#size-cells").then(|| be32(value, 0)) {
                        cells.size = v.unwrap_or(u32::MAX);
                    }
                    pos = next;
                }
                _ => return Ok((pos, cells)),
            }
        }
    }

    /// Visits every node in tree order until `visit` says stop or fails (its error is
    /// returned). The tree was checked by `new`; the walk still checks each step and returns
    /// an error rather than panic if that were ever wrong.
    pub fn walk<F>(&self, mut visit: F) -> Result<(), DtbError>
    where
        F: FnMut(&Node<'_, 'a>) -> Result<Walk, DtbError>,
    {
        let mut names: [&[u8]; MAX_DEPTH] = [&[]; MAX_DEPTH];
        // cells[d]: what the node at depth d (1 = root) declares for its children; cells[0]
        // applies to the root itself.
        let mut cells = [Cells::DEFAULT; MAX_DEPTH + 1];
        let mut depth = 0;
        let mut pos = 0;
        loop {
            let open = &names[..depth];
            match self.token(open, pos)? {
                FDT_BEGIN_NODE => {
                    let (name, props) = self.node_name(open, pos)?;
                    if depth == MAX_DEPTH {
                        return Err(self.malformed(open, pos, Rule::TooDeep));
                    }
                    names[depth] = name;
                    let (end, own) = self.scan_properties(&names[..=depth], props)?;
                    cells[depth + 1] = own;
                    let node = Node {
                        strings: self.strings,
                        names: &names[..=depth],
                        props: self.structure.get(props..end).unwrap_or(&[]),
                        parent_cells: cells[depth],
                    };
                    depth += 1;
                    if visit(&node)? == Walk::Stop {
                        return Ok(());
                    }
                    pos = end;
                }
                FDT_END_NODE => {
                    depth = depth
                        .checked_sub(1)
                        .ok_or_else(|| self.malformed(open, pos, Rule::EndWithoutBegin))?;
                    pos += 4;
                }
                FDT_NOP => pos += 4,
                FDT_END => return Ok(()),
                FDT_PROP => return Err(self.malformed(open, pos, Rule::PropertyAfterSubnode)),
                other => return Err(self.malformed(open, pos, Rule::UnknownToken(other))),
            }
        }
    }
}

/// A node met during a walk.
#[derive(Clone, Copy, Debug)]
pub struct Node<'w, 'a> {
    strings: &'a [u8],
    /// The names from the root down to this node.
    names: &'w [&'a [u8]],
    /// The node's property tokens (and NOPs).
    props: &'a [u8],
    parent_cells: Cells,
}

impl<'a> Node<'_, 'a> {
    /// The node's name (`cpu@1`; empty for the root).
    pub fn name(&self) -> &'a [u8] {
        self.names.last().copied().unwrap_or(&[])
    }

    /// The name before any `@unit-address`.
    pub fn base_name(&self) -> &'a [u8] {
        let name = self.name();
        name.split(|&b| b == b'@').next().unwrap_or(name)
    }

    /// Nesting level: 1 for the root, 2 for its children, ...
    pub fn depth(&self) -> usize {
        self.names.len()
    }

    /// The node's path, for messages.
    pub fn path(&self) -> NodePath {
        NodePath::from_names(self.names)
    }

    /// The cells this node's `reg` is decoded with (its parent's `#address-cells` and
    /// `#size-cells`).
    pub fn parent_cells(&self) -> Cells {
        self.parent_cells
    }

    /// The node's properties, in order.
    pub fn properties(&self) -> Properties<'a> {
        Properties {
            strings: self.strings,
            rest: self.props,
        }
    }

    /// The value of the first property called `name`.
    pub fn property(&self, name: &str) -> Option<&'a [u8]> {
        self.properties().find(|p| p.is(name)).map(|p| p.value)
    }

    /// The property `name` as one string: a NUL-terminated UTF-8 value without other NULs.
    /// `None` if absent or not such a string.
    pub fn prop_str(&self, name: &str) -> Option<&'a str> {
        let value = self.property(name)?;
        let (last, text) = value.split_last()?;
        if *last != 0 || text.contains(&0) {
            return None;
        }
        core::str::from_utf8(text).ok()
    }

    /// The property `name` as a list of NUL-terminated strings (`compatible`); empty if absent
    /// or not such a list. Strings that are not UTF-8 are left out.
    pub fn prop_strings(&self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let value = self
            .property(name)
            .filter(|v| v.last() == Some(&0))
            .unwrap_or(&[]);
        let body = value.split_last().map_or(&[][..], |(_, b)| b);
        body.split(|&b| b == 0)
            .filter(move |_| !value.is_empty())
            .filter_map(|s| core::str::from_utf8(s).ok())
    }

    /// The property `name` as one u32 or u64 (4 or 8 bytes, big-endian).
    pub fn prop_u64(&self, name: &str) -> Option<u64> {
        let value = self.property(name)?;
        match value.len() {
            4 => be32(value, 0).map(u64::from),
            8 => Some((u64::from(be32(value, 0)?) << 32) | u64::from(be32(value, 4)?)),
            _ => None,
        }
    }

    /// The `reg` entries as (address, size) pairs, decoded with the parent's cells; `None`
    /// without a `reg`. Errors: cells the kernel cannot decode, a length that is not a whole
    /// number of entries.
    pub fn reg(&self) -> Result<Option<Reg<'a>>, DtbError> {
        let Some(value) = self.property("reg") else {
            return Ok(None);
        };
        let Cells { address, size } = self.parent_cells;
        if !(1..=2).contains(&address) || size > 2 {
            return Err(DtbError::Invalid {
                node: self.path(),
                rule: Rule::Cells { address, size },
            });
        }
        let entry = 4 * (address + size) as usize;
        if !value.len().is_multiple_of(entry) {
            return Err(DtbError::Invalid {
                node: self.path(),
                rule: Rule::RegLength {
                    len: value.len(),
                    entry,
                },
            });
        }
        Ok(Some(Reg {
            rest: value,
            address,
            size,
        }))
    }
}

/// A property: its value, and its name where the strings block holds it.
#[derive(Clone, Copy, Debug)]
pub struct Property<'a> {
    /// The strings block from the name's first byte (the name ends at the first NUL, which
    /// the check made sure exists).
    name_at: &'a [u8],
    /// The value.
    pub value: &'a [u8],
}

impl<'a> Property<'a> {
    /// Whether the property is called `name`; costs `name.len()`, whatever the stored name's
    /// length.
    pub fn is(&self, name: &str) -> bool {
        let n = name.len();
        self.name_at.get(..n) == Some(name.as_bytes()) && self.name_at.get(n) == Some(&0)
    }

    /// The name (costs its length; for messages and listings).
    pub fn name(&self) -> &'a [u8] {
        let len = self
            .name_at
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.name_at.len());
        &self.name_at[..len]
    }
}

/// The properties of a node.
#[derive(Clone, Debug)]
pub struct Properties<'a> {
    strings: &'a [u8],
    rest: &'a [u8],
}

impl<'a> Iterator for Properties<'a> {
    type Item = Property<'a>;

    fn next(&mut self) -> Option<Property<'a>> {
        loop {
            match be32(self.rest, 0)? {
                FDT_NOP => self.rest = self.rest.get(4..)?,
                FDT_PROP => {
                    let len = be32(self.rest, 4)? as usize;
                    let name_off = be32(self.rest, 8)? as usize;
                    let value = self.rest.get(12..12usize.checked_add(len)?)?;
                    let name_at = self.strings.get(name_off..)?;
                    self.rest = self.rest.get(align4(12 + len).min(self.rest.len())..)?;
                    return Some(Property { name_at, value });
                }
                _ => return None,
            }
        }
    }
}

/// The entries of a `reg` property.
#[derive(Clone, Debug)]
pub struct Reg<'a> {
    rest: &'a [u8],
    address: u32,
    size: u32,
}

impl Iterator for Reg<'_> {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        let mut read = |cells: u32| -> Option<u64> {
            let mut value = 0u64;
            for _ in 0..cells {
                value = (value << 32) | u64::from(be32(self.rest, 0)?);
                self.rest = self.rest.get(4..)?;
            }
            Some(value)
        };
        let address = read(self.address)?;
        let size = read(self.size)?;
        Some((address, size))
    }
}
