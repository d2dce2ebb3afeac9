//! Synthetic device trees, built in memory (after boot: this uses the heap): a small writer,
//! a tree shaped like QEMU virt's of about a given size, and the two shapes that made the old
//! parser take more than linear time, [`long_names`] and [`many_children`]. The benchmark
//! (`devtree_parse`) times parsing them, the host tests check what they parse to, and the
//! fuzzer (`cargo xtask fuzz dtb`) starts from them.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::vec::Vec;

use super::reader::{FDT_BEGIN_NODE, FDT_END, FDT_END_NODE, FDT_NOP, FDT_PROP};
use super::{FDT_MAGIC, MAX_DTB_SIZE};

/// Builds a version 17 tree token by token. Property names are stored once each. Nothing is
/// checked: tests use it to write broken trees too.
#[derive(Debug, Default)]
pub struct TreeBuilder {
    structure: Vec<u8>,
    strings: Vec<u8>,
    names: BTreeMap<Vec<u8>, u32>,
    reservations: Vec<(u64, u64)>,
}

impl TreeBuilder {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The size the tree would have if finished now.
    pub fn len(&self) -> usize {
        40 + 16 * (self.reservations.len() + 1) + self.structure.len() + 4 + self.strings.len()
    }

    /// Whether nothing was added yet.
    pub fn is_empty(&self) -> bool {
        self.structure.is_empty()
    }

    /// Adds a `/memreserve/` entry.
    pub fn reserve(&mut self, start: u64, size: u64) {
        self.reservations.push((start, size));
    }

    /// Appends a raw big-endian word to the structure block (a token of the caller's choice).
    pub fn token(&mut self, word: u32) {
        self.structure.extend_from_slice(&word.to_be_bytes());
    }

    fn pad(&mut self) {
        while !self.structure.len().is_multiple_of(4) {
            self.structure.push(0);
        }
    }

    /// Opens a node (`""` for the root).
    pub fn begin_node(&mut self, name: &str) {
        self.begin_node_bytes(name.as_bytes());
    }

    /// Opens a node whose name is any bytes (the host fuzzer writes names that are not UTF-8).
    pub fn begin_node_bytes(&mut self, name: &[u8]) {
        self.token(FDT_BEGIN_NODE);
        self.structure.extend_from_slice(name);
        self.structure.push(0);
        self.pad();
    }

    /// Closes a node.
    pub fn end_node(&mut self) {
        self.token(FDT_END_NODE);
    }

    /// A NOP token.
    pub fn nop(&mut self) {
        self.token(FDT_NOP);
    }

    /// An FDT_END token (for [`finish_as_is`](Self::finish_as_is); `finish` adds its own).
    pub fn end_tree(&mut self) {
        self.token(FDT_END);
    }

    /// The strings-block offset of `name`, adding it if new.
    pub fn name_offset(&mut self, name: &str) -> u32 {
        self.name_offset_bytes(name.as_bytes())
    }

    /// [`name_offset`](Self::name_offset) for a name that is any bytes.
    pub fn name_offset_bytes(&mut self, name: &[u8]) -> u32 {
        if let Some(&off) = self.names.get(name) {
            return off;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(name);
        self.strings.push(0);
        self.names.insert(name.to_vec(), off);
        off
    }

    /// A property whose name is at `name_offset` in the strings block.
    pub fn property_at(&mut self, name_offset: u32, value: &[u8]) {
        self.token(FDT_PROP);
        self.token(value.len() as u32);
        self.token(name_offset);
        self.structure.extend_from_slice(value);
        self.pad();
    }

    /// A property with a raw value.
    pub fn property(&mut self, name: &str, value: &[u8]) {
        let off = self.name_offset(name);
        self.property_at(off, value);
    }

    /// A property of big-endian 32-bit cells.
    pub fn property_cells(&mut self, name: &str, cells: &[u32]) {
        let value: Vec<u8> = cells.iter().flat_map(|c| c.to_be_bytes()).collect();
        self.property(name, &value);
    }

    /// A property of big-endian 64-bit values (two cells each).
    pub fn property_u64s(&mut self, name: &str, values: &[u64]) {
        let value: Vec<u8> = values.iter().flat_map(|c| c.to_be_bytes()).collect();
        self.property(name, &value);
    }

    /// A string property.
    pub fn property_str(&mut self, name: &str, value: &str) {
        self.property_strs(name, &[value]);
    }

    /// A string-list property.
    pub fn property_strs(&mut self, name: &str, values: &[&str]) {
        let mut value = Vec::new();
        for v in values {
            value.extend_from_slice(v.as_bytes());
            value.push(0);
        }
        self.property(name, &value);
    }

    /// Ends the structure block with FDT_END and returns the tree: header, reservation block,
    /// structure block, strings block.
    pub fn finish(mut self) -> Vec<u8> {
        self.token(FDT_END);
        self.finish_as_is()
    }

    /// Returns the tree with the structure block exactly as written (the caller wrote its own
    /// FDT_END, or left it out on purpose): header, reservation block, structure, strings.
    pub fn finish_as_is(self) -> Vec<u8> {
        let off_rsvmap = 40usize;
        let off_struct = off_rsvmap + 16 * (self.reservations.len() + 1);
        let off_strings = off_struct + self.structure.len();
        let total = off_strings + self.strings.len();
        let header = [
            FDT_MAGIC,
            total as u32,
            off_struct as u32,
            off_strings as u32,
            off_rsvmap as u32,
            17,
            16,
            0,
            self.strings.len() as u32,
            self.structure.len() as u32,
        ];
        let mut out = Vec::with_capacity(total);
        for word in header {
            out.extend_from_slice(&word.to_be_bytes());
        }
        for (start, size) in self.reservations.iter().chain(&[(0, 0)]) {
            out.extend_from_slice(&start.to_be_bytes());
            out.extend_from_slice(&size.to_be_bytes());
        }
        out.extend_from_slice(&self.structure);
        out.extend_from_slice(&self.strings);
        out
    }
}

/// The nodes every synthetic tree starts with, as QEMU virt has them: the root's cells,
/// `/chosen`, 1 GiB of RAM at 0x4000_0000, `cpus` CPUs with PSCI, a GICv3, the timer, a PL011
/// and PSCI. The root node is left open.
pub fn begin_virt(b: &mut TreeBuilder, cpus: u32) {
    b.begin_node("");
    b.property_cells("#address-cells", &[2]);
    b.property_cells("#size-cells", &[2]);
    b.property_str("compatible", "linux,dummy-virt");
    b.property_cells("interrupt-parent", &[0x8002]);
    b.begin_node("chosen");
    b.property_str("bootargs", "console=ttyAMA0");
    b.end_node();
    b.begin_node("memory@40000000");
    b.property_str("device_type", "memory");
    b.property_u64s("reg", &[0x4000_0000, 0x4000_0000]);
    b.end_node();
    b.begin_node("cpus");
    b.property_cells("#address-cells", &[1]);
    b.property_cells("#size-cells", &[0]);
    for n in 0..cpus {
        b.begin_node(&format!("cpu@{n:x}"));
        b.property_str("device_type", "cpu");
        b.property_str("compatible", "arm,cortex-a72");
        b.property_cells("reg", &[n]);
        b.property_str("enable-method", "psci");
        b.end_node();
    }
    b.end_node();
    b.begin_node("intc@8000000");
    b.property_str("compatible", "arm,gic-v3");
    b.property_cells("#interrupt-cells", &[3]);
    b.property("interrupt-controller", &[]);
    b.property_u64s("reg", &[0x0800_0000, 0x1_0000, 0x080a_0000, 0xf6_0000]);
    b.property_cells("phandle", &[0x8002]);
    b.end_node();
    b.begin_node("timer");
    b.property_str("compatible", "arm,armv8-timer");
    b.property_cells("interrupts", &[1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4]);
    b.end_node();
    b.begin_node("pl011@9000000");
    b.property_strs("compatible", &["arm,pl011", "arm,primecell"]);
    b.property_u64s("reg", &[0x0900_0000, 0x1000]);
    b.property_cells("interrupts", &[0, 1, 4]);
    b.end_node();
    b.begin_node("psci");
    b.property_strs("compatible", &["arm,psci-1.0", "arm,psci-0.2", "arm,psci"]);
    b.property_str("method", "hvc");
    b.end_node();
}

/// A tree like QEMU virt's with `cpus` CPUs, padded with virtio-mmio nodes (as QEMU has 32
/// of) to about `size` bytes.
pub fn virt_like(cpus: u32, size: usize) -> Vec<u8> {
    let mut b = TreeBuilder::new();
    begin_virt(&mut b, cpus);
    let mut n = 0u64;
    while b.len() + 120 < size {
        let addr = 0x0a00_0000 + 0x200 * n;
        b.begin_node(&format!("virtio_mmio@{addr:x}"));
        b.property("dma-coherent", &[]);
        b.property_cells("interrupts", &[0, 0x10 + (n as u32 % 64), 1]);
        b.property_u64s("reg", &[addr, 0x200]);
        b.property_str("compatible", "virtio,mmio");
        b.end_node();
        n += 1;
    }
    b.end_node();
    b.finish()
}

/// A tree of about `size` bytes (at most [`MAX_DTB_SIZE`]) whose names are long: a quarter of
/// it is one property name shared by every filler property, and the filler nodes have names
/// of 2 KiB. A reader that measures a property's name on each look-up, or scans the strings
/// block per property, takes time in the square of the size.
pub fn long_names(size: usize) -> Vec<u8> {
    let size = size.min(MAX_DTB_SIZE);
    let mut b = TreeBuilder::new();
    begin_virt(&mut b, 4);
    let long_name: alloc::string::String = core::iter::repeat_n('p', size / 4).collect();
    let shared = b.name_offset(&long_name);
    let node_name: alloc::string::String = core::iter::repeat_n('n', 2048).collect();
    let mut n = 0;
    // Each filler node: 2 KiB name + 16 properties of 16 bytes.
    while b.len() + 2400 < size {
        b.begin_node(&format!("{node_name}@{n:x}"));
        for i in 0..16u32 {
            b.property_at(shared, &i.to_be_bytes());
        }
        b.end_node();
        n += 1;
    }
    b.end_node();
    b.finish()
}

/// A tree of about `size` bytes (at most [`MAX_DTB_SIZE`]) whose root has half of it in
/// properties and the other half in children, each a one-page memory node (the first eight
/// are kept, the rest counted as ignored). A reader that re-reads a parent's properties for
/// each child's `reg` takes time in the square of the size.
pub fn many_children(size: usize) -> Vec<u8> {
    let size = size.min(MAX_DTB_SIZE);
    let mut b = TreeBuilder::new();
    b.begin_node("");
    b.property_cells("#address-cells", &[2]);
    b.property_cells("#size-cells", &[2]);
    let mut p = 0u32;
    // Properties of 20 bytes plus a name of about 8 bytes each.
    while b.len() < size / 2 {
        b.property_cells(&format!("p{p}"), &[p, p]);
        p += 1;
    }
    b.begin_node("cpus");
    b.property_cells("#address-cells", &[1]);
    b.property_cells("#size-cells", &[0]);
    b.begin_node("cpu@0");
    b.property_str("device_type", "cpu");
    b.property_cells("reg", &[0]);
    b.end_node();
    b.end_node();
    let mut n = 0u64;
    // Children of 72 bytes each.
    while b.len() + 80 < size {
        let addr = 0x4000_0000 + 0x1000 * n;
        b.begin_node(&format!("memory@{addr:x}"));
        b.property_str("device_type", "memory");
        b.property_u64s("reg", &[addr, 0x1000]);
        b.end_node();
        n += 1;
    }
    b.end_node();
    b.finish()
}
