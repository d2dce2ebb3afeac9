//! The device-tree fuzzer: seed trees (QEMU's own virt trees for GICv2/v3 and 1 to 17 CPUs, a
//! Pi 4 shaped tree with firmware NOPs, the cached Debian Pi 4 tree when there is one, trees
//! like the kernel's tests build, small versions of the two slow shapes) are mutated token by
//! token through [`Fdt`] (tokens deleted, duplicated, swapped or invented; values set to edge
//! values or copied from other properties; names swapped for the ones the kernel looks for;
//! nodes nested past the limit or repeated thousands of times; reservations added), and one
//! input in five is then damaged as bytes too (header fields, a byte, the length). Each input
//! goes through everything the kernel and the boards call: `DeviceTree::new`, a full walk,
//! `system_info`, `find_compatible`, `compatible_property`, `remove_nops`. An input that is
//! accepted must satisfy every promise of `kernel::devtree` (see [`check_info`]); one that is
//! not must be refused with an error, never a panic.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::Instant;

use kernel::cpu::MAXCPUS;
use kernel::devtree::{
    self, DeviceTree, MAX_BOOTARGS, PHYS_ADDR_LIMIT, SystemInfo, Walk, synth::TreeBuilder,
};
use kernel::platform::PhysRange;

use super::{Budget, Outcome, Report, Rng, note_input};
use crate::fdt::{Fdt, Token, cells, string};
use crate::workspace::Workspace;

/// QEMU's own trees (`-machine dumpdtb`), as the kernel's tests keep them.
const QEMU_TREES: &[(&str, &[u8])] = &[
    (
        "virt-gic3-smp1",
        include_bytes!("../../../kernel/testdata/virt-gic3-smp1.dtb"),
    ),
    (
        "virt-gic3-smp4",
        include_bytes!("../../../kernel/testdata/virt-gic3-smp4.dtb"),
    ),
    (
        "virt-gic3-smp17",
        include_bytes!("../../../kernel/testdata/virt-gic3-smp17.dtb"),
    ),
    (
        "virt-gic3-el2",
        include_bytes!("../../../kernel/testdata/virt-gic3-el2.dtb"),
    ),
    (
        "virt-gic2-smp2",
        include_bytes!("../../../kernel/testdata/virt-gic2-smp2.dtb"),
    ),
    (
        "virt-gic2-smp4",
        include_bytes!("../../../kernel/testdata/virt-gic2-smp4.dtb"),
    ),
    (
        "virt-gic2-smp8",
        include_bytes!("../../../kernel/testdata/virt-gic2-smp8.dtb"),
    ),
];

/// A tree shaped like the Pi 4's after the firmware edited it: `#size-cells` 1 at the root,
/// two memory ranges, four spin-table CPUs with release addresses, the GIC-400, timer and
/// UART under `/soc` with `ranges`, a reservation, and NOPs where properties were deleted.
pub fn pi4_like() -> Vec<u8> {
    let mut b = TreeBuilder::new();
    b.reserve(0, 0x1000);
    b.begin_node("");
    b.property_cells("#address-cells", &[2]);
    b.property_cells("#size-cells", &[1]);
    b.property_str("model", "Raspberry Pi 4 Model B Rev 1.4");
    b.nop();
    b.property_strs("compatible", &["raspberrypi,4-model-b", "brcm,bcm2711"]);
    b.begin_node("chosen");
    b.property_str(
        "bootargs",
        "coherent_pool=1M 8250.nr_uarts=1 console=ttyAMA0,115200",
    );
    b.nop();
    b.end_node();
    b.begin_node("memory@0");
    b.property_str("device_type", "memory");
    b.property_cells("reg", &[0, 0, 0x3b40_0000, 0, 0x4000_0000, 0xbc00_0000]);
    b.end_node();
    b.begin_node("cpus");
    b.property_cells("#address-cells", &[1]);
    b.property_cells("#size-cells", &[0]);
    b.nop();
    for n in 0..4u32 {
        b.begin_node(&format!("cpu@{n}"));
        b.property_str("device_type", "cpu");
        b.property_str("compatible", "arm,cortex-a72");
        b.property_cells("reg", &[n]);
        b.property_str("enable-method", "spin-table");
        b.property_cells("cpu-release-addr", &[0, 0xd8 + 8 * n]);
        b.nop();
        b.end_node();
    }
    b.end_node();
    b.begin_node("soc");
    b.property_strs("compatible", &["simple-bus"]);
    b.property_cells("#address-cells", &[1]);
    b.property_cells("#size-cells", &[1]);
    b.property_cells("ranges", &[0x7e00_0000, 0, 0xfe00_0000, 0x0180_0000]);
    b.begin_node("interrupt-controller@40041000");
    b.property_strs("compatible", &["arm,gic-400"]);
    b.property_cells(
        "reg",
        &[
            0x4004_1000,
            0x1000,
            0x4004_2000,
            0x2000,
            0x4004_4000,
            0x2000,
        ],
    );
    b.property_cells("#interrupt-cells", &[3]);
    b.end_node();
    b.begin_node("serial@7e201000");
    b.property_strs("compatible", &["arm,pl011", "arm,primecell"]);
    b.property_cells("reg", &[0x7e20_1000, 0x200]);
    b.property_cells("interrupts", &[0, 0x79, 4]);
    b.nop();
    b.end_node();
    b.end_node();
    b.begin_node("timer");
    b.property_str("compatible", "arm,armv8-timer");
    b.property_cells(
        "interrupts",
        &[1, 13, 0xf08, 1, 14, 0xf08, 1, 11, 0xf08, 1, 10, 0xf08],
    );
    b.end_node();
    b.end_node();
    b.finish()
}

/// A tree like the kernel's host tests build: `memory` ranges, CPUs, bootargs, reservations.
fn test_like(memory: &[(u64, u64)], cpus: &[u32], reservations: &[(u64, u64)]) -> Vec<u8> {
    let mut b = TreeBuilder::new();
    for &(a, s) in reservations {
        b.reserve(a, s);
    }
    b.begin_node("");
    b.property_cells("#address-cells", &[2]);
    b.property_cells("#size-cells", &[2]);
    b.begin_node("chosen");
    b.property_str("bootargs", "ktest.filter=cpu hz=100");
    b.end_node();
    for (i, &(start, size)) in memory.iter().enumerate() {
        b.begin_node(&format!("memory@{i:x}"));
        b.property_str("device_type", "memory");
        b.property_u64s("reg", &[start, size]);
        b.end_node();
    }
    b.begin_node("cpus");
    b.property_cells("#address-cells", &[1]);
    b.property_cells("#size-cells", &[0]);
    for &mpidr in cpus {
        b.begin_node(&format!("cpu@{mpidr:x}"));
        b.property_str("device_type", "cpu");
        b.property_str("enable-method", "psci");
        b.property_cells("reg", &[mpidr]);
        b.end_node();
    }
    b.end_node();
    b.end_node();
    b.finish()
}

/// A seed: its name and its tokens.
#[derive(Debug, Clone)]
pub struct Seed {
    /// Where it comes from.
    pub name: String,
    /// The tree.
    pub fdt: Fdt,
}

/// Every seed; the cached Debian Pi 4 tree too when `cargo xtask sdcard` fetched it.
pub fn seeds(ws: &Workspace) -> Vec<Seed> {
    let mut out = builtin_seeds();
    if let Some(path) = crate::firmware::cached_dtb(ws)
        && let Ok(bytes) = std::fs::read(&path)
        && let Ok(fdt) = Fdt::parse(&bytes)
    {
        out.push(Seed {
            name: crate::firmware::DTB.to_owned(),
            fdt,
        });
    }
    out
}

/// The seeds that need no file outside the repository.
pub fn builtin_seeds() -> Vec<Seed> {
    let mut trees: Vec<(String, Vec<u8>)> = QEMU_TREES
        .iter()
        .map(|(n, b)| ((*n).to_owned(), b.to_vec()))
        .collect();
    trees.push(("pi4-like".into(), pi4_like()));
    trees.push((
        "test-like".into(),
        test_like(
            &[(0x4000_0000, 0x1000_0000), (0x8000_0000, 0x1000_0000)],
            &[0, 1, 2, 3],
            &[(0x4800_0000, 0x1000)],
        ),
    ));
    trees.push((
        "test-like-17cpus".into(),
        test_like(&[(0, 0x4000_0000)], &(0..17).collect::<Vec<_>>(), &[]),
    ));
    trees.push((
        "virt-like-20k".into(),
        devtree::synth::virt_like(4, 20 << 10),
    ));
    trees.push((
        "long-names-32k".into(),
        devtree::synth::long_names(32 << 10),
    ));
    trees.push((
        "many-children-32k".into(),
        devtree::synth::many_children(32 << 10),
    ));
    trees
        .into_iter()
        .filter_map(|(name, bytes)| {
            let fdt = Fdt::parse(&bytes).ok()?;
            Some(Seed { name, fdt })
        })
        .collect()
}

const EDGE_U32: &[u32] = &[
    0,
    1,
    2,
    3,
    15,
    16,
    987,
    988,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fff0,
    u32::MAX,
];
const EDGE_U64: &[u64] = &[
    0,
    1,
    0x1000,
    0x4000_0000,
    (1 << 48) - 0x1000,
    1 << 48,
    1 << 62,
    1 << 63,
    u64::MAX - 0xfff,
    u64::MAX,
];
const PROP_NAMES: &[&str] = &[
    "reg",
    "device_type",
    "status",
    "compatible",
    "interrupts",
    "#address-cells",
    "#size-cells",
    "cpu-release-addr",
    "enable-method",
    "bootargs",
    "method",
];
const NODE_NAMES: &[&str] = &[
    "memory@0", "memory", "cpu@1", "cpu", "cpus", "chosen", "timer", "psci", "",
];
const STRINGS: &[&str] = &[
    "okay",
    "disabled",
    "psci",
    "spin-table",
    "memory",
    "cpu",
    "arm,gic-v3",
    "arm,pl011",
    "arm,armv8-timer",
    "hvc",
];

/// The index of the END_NODE matching the BEGIN_NODE at `begin`, if it is one.
fn subtree_end(tokens: &[Token], begin: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, t) in tokens.iter().enumerate().skip(begin) {
        match t {
            Token::Begin(_) => depth += 1,
            Token::End => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

fn random_index<T>(rng: &mut Rng, items: &[T], pick: impl Fn(&T) -> bool) -> Option<usize> {
    let candidates: Vec<usize> = (0..items.len()).filter(|&i| pick(&items[i])).collect();
    (!candidates.is_empty()).then(|| candidates[rng.below(candidates.len())])
}

/// One token-level change to `fdt`.
fn mutate_tokens(rng: &mut Rng, fdt: &mut Fdt, donors: &[Seed]) {
    let n = fdt.tokens.len().max(1);
    match rng.below(13) {
        0 => {
            let i = rng.below(n).min(fdt.tokens.len().saturating_sub(1));
            if !fdt.tokens.is_empty() {
                fdt.tokens.remove(i);
            }
        }
        1 => {
            if let Some(t) = fdt.tokens.get(rng.below(n)).cloned() {
                let at = rng.below(n + 1).min(fdt.tokens.len());
                fdt.tokens.insert(at, t);
            }
        }
        2 => {
            let t = match rng.below(6) {
                0 => Token::End,
                1 => Token::Begin(b"x".to_vec()),
                2 => Token::Nop,
                3 => Token::EndTree,
                4 => Token::Raw(EDGE_U32[rng.below(EDGE_U32.len())]),
                _ => Token::Prop(
                    PROP_NAMES[rng.below(PROP_NAMES.len())].as_bytes().to_vec(),
                    cells(&[1]),
                ),
            };
            let at = rng.below(n + 1).min(fdt.tokens.len());
            fdt.tokens.insert(at, t);
        }
        3 => {
            let (a, b) = (rng.below(n), rng.below(n));
            if a < fdt.tokens.len() && b < fdt.tokens.len() {
                fdt.tokens.swap(a, b);
            }
        }
        4..=6 => mutate_value(rng, fdt, donors),
        7 => {
            if let Some(i) = random_index(rng, &fdt.tokens, |t| matches!(t, Token::Prop(..))) {
                let name = match rng.below(8) {
                    0 => "p".repeat(1 + rng.below(5000)),
                    _ => PROP_NAMES[rng.below(PROP_NAMES.len())].to_owned(),
                };
                if let Token::Prop(n, _) = &mut fdt.tokens[i] {
                    *n = name.into_bytes();
                }
            }
        }
        8 => {
            if let Some(i) = random_index(rng, &fdt.tokens, |t| matches!(t, Token::Begin(_))) {
                let name = match rng.below(8) {
                    0 => vec![b'n'; 1 + rng.below(5000)],
                    1 => vec![0xff, 0xfe, b'@', 0x07],
                    _ => NODE_NAMES[rng.below(NODE_NAMES.len())].as_bytes().to_vec(),
                };
                fdt.tokens[i] = Token::Begin(name);
            }
        }
        9 => {
            // Nest past (or just to) the depth limit.
            let levels = [30, 31, 32, 33, 63, 64, 65, 200][rng.below(8)];
            let at = random_index(rng, &fdt.tokens, |t| *t == Token::End).unwrap_or(0);
            let mut nest: Vec<Token> = (0..levels).map(|_| Token::Begin(b"a".to_vec())).collect();
            nest.extend((0..levels).map(|_| Token::End));
            fdt.tokens.splice(at..at, nest);
        }
        10 => {
            // Repeat a node: a CPU or memory node many times, same or distinct reg.
            let Some(begin) = random_index(rng, &fdt.tokens, |t| matches!(t, Token::Begin(_)))
            else {
                return;
            };
            let Some(end) = subtree_end(&fdt.tokens, begin) else {
                return;
            };
            if end - begin > 64 {
                return;
            }
            let copies = [1, 2, 3, 15, 16, 17, 100, 5000][rng.below(8)];
            let copies = if copies == 5000 && !rng.one_in(8) {
                300
            } else {
                copies
            };
            let distinct = rng.one_in(2);
            let mut added = Vec::new();
            for c in 0..copies {
                for t in &fdt.tokens[begin..=end] {
                    match t {
                        Token::Prop(name, value) if distinct && name == b"reg" => {
                            let mut v = value.clone();
                            if let Some(last) = v.len().checked_sub(4) {
                                let bump = (c as u32 + 1).to_be_bytes();
                                if value.len() >= 16 {
                                    // (address, size) pairs: move the address by the size.
                                    v[value.len() / 2 - 4..value.len() / 2].copy_from_slice(
                                        &(0x1000_0000u32 + c as u32).to_be_bytes(),
                                    );
                                } else {
                                    v[last..].copy_from_slice(&bump);
                                }
                            }
                            added.push(Token::Prop(name.clone(), v));
                        }
                        other => added.push(other.clone()),
                    }
                }
            }
            fdt.tokens.splice(end + 1..end + 1, added);
        }
        11 => {
            let pair = (
                EDGE_U64[rng.below(EDGE_U64.len())],
                EDGE_U64[rng.below(EDGE_U64.len())],
            );
            let most = if rng.one_in(4) { 12 } else { 2 };
            for _ in 0..1 + rng.below(most) {
                fdt.reservations.push(pair);
            }
        }
        _ => {
            // Splice a token run from another seed.
            let donor = &donors[rng.below(donors.len())].fdt.tokens;
            if donor.is_empty() {
                return;
            }
            let from = rng.below(donor.len());
            let len = 1 + rng.below(32);
            let run: Vec<Token> = donor[from..(from + len).min(donor.len())].to_vec();
            let at = rng.below(n + 1).min(fdt.tokens.len());
            fdt.tokens.splice(at..at, run);
        }
    }
}

/// Changes one property value: a cell or a 64-bit value to an edge value, the length, or the
/// whole value (a string the kernel looks for, another property's value).
fn mutate_value(rng: &mut Rng, fdt: &mut Fdt, donors: &[Seed]) {
    let Some(i) = random_index(rng, &fdt.tokens, |t| matches!(t, Token::Prop(..))) else {
        return;
    };
    let donor_value = {
        let d = &donors[rng.below(donors.len())].fdt.tokens;
        random_index(rng, d, |t| matches!(t, Token::Prop(..))).and_then(|j| match &d[j] {
            Token::Prop(_, v) => Some(v.clone()),
            _ => None,
        })
    };
    let Token::Prop(_, value) = &mut fdt.tokens[i] else {
        return;
    };
    match rng.below(6) {
        0 | 1 if value.len() >= 4 => {
            let at = 4 * rng.below(value.len() / 4);
            value[at..at + 4].copy_from_slice(&EDGE_U32[rng.below(EDGE_U32.len())].to_be_bytes());
        }
        2 if value.len() >= 8 => {
            let at = 4 * rng.below((value.len() - 4) / 4);
            value[at..at + 8].copy_from_slice(&EDGE_U64[rng.below(EDGE_U64.len())].to_be_bytes());
        }
        3 => value.truncate(rng.below(value.len() + 1)),
        4 => *value = string(STRINGS[rng.below(STRINGS.len())]),
        _ => {
            if let Some(v) = donor_value {
                *value = v;
            }
        }
    }
}

/// Byte-level damage to a serialized tree: a header field, a byte, the length.
fn mutate_bytes(rng: &mut Rng, bytes: &mut Vec<u8>) {
    match rng.below(4) {
        0 => {
            let field = 1 + rng.below(9);
            let value = match rng.below(3) {
                0 => EDGE_U32[rng.below(EDGE_U32.len())],
                1 => rng.below(bytes.len() + 64) as u32,
                _ => rng.next_u64() as u32,
            };
            bytes[field * 4..field * 4 + 4].copy_from_slice(&value.to_be_bytes());
        }
        1 | 2 => {
            let at = rng.below(bytes.len());
            bytes[at] = rng.next_u64() as u8;
        }
        _ => bytes.truncate(rng.below(bytes.len() + 1)),
    }
}

/// One input: 1 to 4 token-level changes to a seed, then (one time in five) byte damage.
pub fn input(rng: &mut Rng, seeds: &[Seed]) -> Vec<u8> {
    let mut fdt = seeds[rng.below(seeds.len())].fdt.clone();
    for _ in 0..1 + rng.below(4) {
        mutate_tokens(rng, &mut fdt, seeds);
    }
    let mut bytes = fdt.to_bytes();
    if rng.one_in(5) {
        mutate_bytes(rng, &mut bytes);
    }
    bytes
}

fn disjoint(a: &PhysRange, b: &PhysRange) -> bool {
    a.start.saturating_add(a.size) <= b.start || b.start.saturating_add(b.size) <= a.start
}

fn inside(r: &PhysRange) -> bool {
    r.start
        .checked_add(r.size)
        .is_some_and(|end| end <= PHYS_ADDR_LIMIT)
}

/// What `kernel::devtree` promises about a tree it accepted; the first promise broken.
pub fn check_info(info: &SystemInfo) -> Result<(), String> {
    let memory = info.memory();
    if memory.is_empty() {
        return Err("no memory".into());
    }
    for (i, r) in memory.iter().enumerate() {
        if r.size == 0 || !inside(r) {
            return Err(format!("memory {r:x?}"));
        }
        if let Some(o) = memory[..i].iter().find(|o| !disjoint(o, r)) {
            return Err(format!("memory {r:x?} overlaps {o:x?}"));
        }
    }
    let sum: u128 = memory.iter().map(|r| u128::from(r.size)).sum();
    if u128::from(info.memory_size()) != sum {
        return Err(format!("memory_size {} != {sum}", info.memory_size()));
    }
    // reserved()[0] is the tree itself, at a host address.
    if let Some(r) = info.reserved().iter().skip(1).find(|r| !inside(r)) {
        return Err(format!("reserved {r:x?}"));
    }
    let cpus = info.cpus();
    if cpus.is_empty() || cpus.len() > MAXCPUS || info.cpu_nodes() < cpus.len() {
        return Err(format!("{} CPUs, {} nodes", cpus.len(), info.cpu_nodes()));
    }
    for (i, c) in cpus.iter().enumerate() {
        if kernel::cpu_affinity(c.mpidr) != c.mpidr {
            return Err(format!("MPIDR {:#x}", c.mpidr));
        }
        if cpus[..i].iter().any(|o| o.mpidr == c.mpidr) {
            return Err(format!("MPIDR {:#x} twice", c.mpidr));
        }
        if let Some(a) = c.release_addr
            && (!a.is_multiple_of(8) || !memory.iter().any(|m| a >= m.start && a + 8 <= m.end()))
        {
            return Err(format!("release address {a:#x}"));
        }
    }
    if info.bootargs().len() > MAX_BOOTARGS {
        return Err("bootargs too long".into());
    }
    Ok(())
}

/// The kind of an error, for the run's tally: the rule broken, else the error's kind.
fn class(e: &devtree::DtbError) -> String {
    let text = match e.rule() {
        Some(rule) => format!("{rule:?}"),
        None => format!("{e:?}"),
    };
    text.split(['(', ' ']).next().unwrap_or("").to_owned()
}

/// Runs one input through every entry point and judges the answers.
pub fn exercise(bytes: &[u8]) -> Outcome {
    let tree = match DeviceTree::new(bytes) {
        Ok(tree) => tree,
        Err(e) => {
            // The free functions must say the same.
            return match devtree::parse(bytes, 0) {
                Err(same) if same == e => Outcome::Refused(class(&e)),
                other => Outcome::Believed(format!("new said {e}, parse said {other:?}")),
            };
        }
    };
    let mut nodes = 0u64;
    if let Err(e) = tree.walk(|_| {
        nodes += 1;
        Ok(Walk::Continue)
    }) {
        return Outcome::Believed(format!("a checked tree failed its walk: {e}"));
    }
    for list in [
        &["arm,gic-v3"][..],
        &["arm,cortex-a15-gic", "arm,gic-400", "arm,cortex-a9-gic"],
        &["arm,pl011"],
        &["arm,armv8-timer", "arm,armv7-timer"],
    ] {
        if let Ok(Some((_, dev))) = tree.find_compatible(list)
            && let Some(r) = dev.regs[..dev.reg_count].iter().find(|r| !inside(r))
        {
            return Outcome::Believed(format!("{} reg {r:x?}", dev.node));
        }
    }
    let _ = tree.compatible_property("arm,psci-1.0", "method");
    let _ = devtree::parse(bytes, 2);
    let result = tree.system_info(0);
    let mut compacted = bytes.to_vec();
    match (devtree::remove_nops(&mut compacted), &result) {
        (Err(e), _) => {
            return Outcome::Believed(format!("remove_nops refused a checked tree: {e}"));
        }
        (Ok(_), Ok(before)) => match devtree::parse(&compacted, 0) {
            Ok(after) if after.cpus() == before.cpus() && after.memory() == before.memory() => {}
            other => {
                return Outcome::Believed(format!("removing NOPs changed the parse: {other:?}"));
            }
        },
        (Ok(_), Err(_)) => {}
    }
    match result {
        Err(e) => Outcome::Refused(class(&e)),
        Ok(info) => match check_info(&info) {
            Ok(()) => Outcome::Accepted,
            Err(why) => Outcome::Believed(why),
        },
    }
}

/// Runs the fuzzer on `seeds` within `budget`; `note` records each input for the CLI's
/// panic hook. Inputs that break an invariant are written to `save` when given.
pub fn run(seeds: &[Seed], budget: Budget, seed: u64, save: Option<&Path>) -> Report {
    let mut rng = Rng::new(seed);
    let mut report = Report::default();
    let mut i = 0;
    while budget.allows(i) {
        let bytes = input(&mut rng, seeds);
        if save.is_some() {
            note_input(i, Some(&bytes));
        }
        let start = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| exercise(&bytes)));
        let believed = matches!(outcome, Ok(Outcome::Believed(_)));
        report.record(i, outcome, start.elapsed());
        if believed && let Some(dir) = save {
            let _ = std::fs::write(dir.join(format!("dtb-{seed:x}-{i}.dtb")), &bytes);
        }
        i += 1;
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs of the bounded run in the host tests (about 3 s in a debug build;
    /// `DTB_FUZZ_ITERS` overrides).
    const TEST_ITERATIONS: u64 = 2000;

    #[test]
    fn every_seed_is_accepted_unmutated() {
        let seeds = builtin_seeds();
        assert!(seeds.len() >= QEMU_TREES.len() + 5, "{} seeds", seeds.len());
        for s in &seeds {
            assert_eq!(exercise(&s.fdt.to_bytes()), Outcome::Accepted, "{}", s.name);
        }
    }

    #[test]
    fn the_invariant_check_catches_what_the_old_parser_believed() {
        let base = devtree::parse(&pi4_like(), 0).unwrap();
        assert_eq!(check_info(&base), Ok(()));
        let dup = test_like(&[(0x4000_0000, 0x1000)], &[0, 0, 0, 0], &[]);
        assert!(
            devtree::parse(&dup, 0).is_err(),
            "duplicate MPIDRs are refused"
        );
    }

    /// The bounded run of `cargo xtask test`: prints its seed; `DTB_FUZZ_SEED` (hex) and
    /// `DTB_FUZZ_ITERS` replay or lengthen it (`cargo xtask fuzz dtb` runs for a time).
    #[test]
    fn fuzz_dtb_bounded() {
        let iterations = std::env::var("DTB_FUZZ_ITERS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(TEST_ITERATIONS);
        let seed = std::env::var("DTB_FUZZ_SEED")
            .ok()
            .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
            .unwrap_or_else(super::super::clock_seed);
        let start = Instant::now();
        let report = run(&builtin_seeds(), Budget::inputs(iterations), seed, None);
        println!("{}", report.summary("dtb", seed, start.elapsed()));
        assert_eq!(report.iterations, iterations);
        if let Some((i, message)) = report.failures.first() {
            panic!(
                "input {i} {message} (replay: DTB_FUZZ_SEED={seed:#x} DTB_FUZZ_ITERS={})",
                i + 1
            );
        }
        assert!(
            report.ok > 0,
            "no input was accepted: the mutations break everything"
        );
        assert!(
            report.errors > 0,
            "no input was refused: the mutations do nothing"
        );
    }
}
