//! Host tests of device-tree handling: QEMU's real trees (dumped with `-machine dumpdtb`) and
//! malformed trees built with `vm-fdt` or by damaging real ones.

use super::*;
use vm_fdt::FdtWriter;

const VIRT_GIC3_SMP4: &[u8] = include_bytes!("../../testdata/virt-gic3-smp4.dtb");
const VIRT_GIC2_SMP8: &[u8] = include_bytes!("../../testdata/virt-gic2-smp8.dtb");
const VIRT_GIC3_EL2: &[u8] = include_bytes!("../../testdata/virt-gic3-el2.dtb");

/// Builds a tree with the given memory regions and CPU MPIDRs.
fn build(memory: &[(u64, u64)], cpus: &[u64], bootargs: Option<&str>) -> Vec<u8> {
    let mut w = FdtWriter::new().expect("writer");
    let root = w.begin_node("").expect("root");
    w.property_u32("#address-cells", 2).expect("prop");
    w.property_u32("#size-cells", 2).expect("prop");
    if let Some(args) = bootargs {
        let chosen = w.begin_node("chosen").expect("chosen");
        w.property_string("bootargs", args).expect("prop");
        w.end_node(chosen).expect("end");
    }
    for (i, &(start, size)) in memory.iter().enumerate() {
        let m = w.begin_node(&format!("memory@{i:x}")).expect("memory");
        w.property_string("device_type", "memory").expect("prop");
        w.property_array_u64("reg", &[start, size]).expect("prop");
        w.end_node(m).expect("end");
    }
    if !cpus.is_empty() {
        let c = w.begin_node("cpus").expect("cpus");
        w.property_u32("#address-cells", 1).expect("prop");
        w.property_u32("#size-cells", 0).expect("prop");
        for &mpidr in cpus {
            let n = w.begin_node(&format!("cpu@{mpidr:x}")).expect("cpu");
            w.property_string("device_type", "cpu").expect("prop");
            w.property_string("enable-method", "psci").expect("prop");
            w.property_u32("reg", mpidr as u32).expect("prop");
            w.end_node(n).expect("end");
        }
        w.end_node(c).expect("end");
    }
    w.end_node(root).expect("end");
    w.finish().expect("finish")
}

#[test]
fn qemu_virt_tree_gives_memory_cpus_and_psci() {
    let info = parse(VIRT_GIC3_SMP4, 0x8000_0000).expect("parse");
    assert_eq!(
        info.memory(),
        &[PhysRange {
            start: 0x4000_0000,
            size: 1 << 30
        }]
    );
    let mpidrs: Vec<u64> = info.cpus().iter().map(|c| c.mpidr).collect();
    assert_eq!(mpidrs, [0, 1, 2, 3]);
    assert!(
        info.cpus()
            .iter()
            .all(|c| c.enable_method == EnableMethod::Psci)
    );
    assert_eq!(info.cpus_ignored, 0);
    assert!(!info.boot_cpu_missing);
    assert_eq!(
        compatible_property(VIRT_GIC3_SMP4, "arm,psci-1.0", "method"),
        Ok(Some("hvc"))
    );
    assert_eq!(
        compatible_property(VIRT_GIC3_EL2, "arm,psci-1.0", "method"),
        Ok(Some("smc"))
    );
}

#[test]
fn qemu_virt_gic_nodes_are_found_by_compatible() {
    let (hit, gic) = find_compatible(VIRT_GIC3_SMP4, &["arm,gic-v3", "arm,cortex-a15-gic"])
        .expect("parse")
        .expect("gic present");
    assert_eq!(hit, "arm,gic-v3");
    assert_eq!(gic.regs[0].start, 0x0800_0000);
    assert_eq!(gic.regs[1].start, 0x080a_0000);
    let (hit, gic) = find_compatible(VIRT_GIC2_SMP8, &["arm,gic-v3", "arm,cortex-a15-gic"])
        .expect("parse")
        .expect("gic present");
    assert_eq!(hit, "arm,cortex-a15-gic");
    assert_eq!(gic.regs[1].start, 0x0801_0000);
    let (_, timer) = find_compatible(VIRT_GIC2_SMP8, &["arm,armv8-timer"])
        .expect("parse")
        .expect("timer present");
    // Second specifier (non-secure physical timer): PPI 14 = INTID 30.
    assert_eq!(timer.interrupts[4], 14);
    assert_eq!(
        parse(VIRT_GIC2_SMP8, 0x8000_0000)
            .expect("parse")
            .cpus()
            .len(),
        8
    );
}

#[test]
fn boot_cpu_comes_first_whatever_its_place_in_the_tree() {
    let dtb = build(&[(0x4000_0000, 0x1000_0000)], &[0, 1, 2, 3], None);
    let info = parse(&dtb, 0x8000_0002).expect("parse");
    let mpidrs: Vec<u64> = info.cpus().iter().map(|c| c.mpidr).collect();
    assert_eq!(mpidrs, [2, 0, 1, 3]);
}

#[test]
fn more_cpus_than_maxcpus_keeps_maxcpus_and_counts_the_rest() {
    let cpus: Vec<u64> = (0..MAXCPUS as u64 + 4).collect();
    let dtb = build(&[(0x4000_0000, 0x1000_0000)], &cpus, None);
    let info = parse(&dtb, 0).expect("parse");
    assert_eq!(info.cpus().len(), MAXCPUS);
    assert_eq!(info.cpus_ignored, 4);
    assert_eq!(info.cpus()[0].mpidr, 0);
}

#[test]
fn boot_cpu_beyond_maxcpus_in_tree_order_is_still_kept() {
    let cpus: Vec<u64> = (0..MAXCPUS as u64 + 2).collect();
    let dtb = build(&[(0x4000_0000, 0x1000_0000)], &cpus, None);
    let boot = MAXCPUS as u64 + 1;
    let info = parse(&dtb, boot).expect("parse");
    assert_eq!(info.cpus()[0].mpidr, boot);
    assert_eq!(info.cpus().len(), MAXCPUS);
    assert_eq!(info.cpus_ignored, 2);
}

#[test]
fn boot_cpu_missing_from_tree_is_reported_and_kept() {
    let dtb = build(&[(0x4000_0000, 0x1000_0000)], &[1, 2], None);
    let info = parse(&dtb, 0).expect("parse");
    assert!(info.boot_cpu_missing);
    let mpidrs: Vec<u64> = info.cpus().iter().map(|c| c.mpidr).collect();
    assert_eq!(mpidrs, [0, 1, 2]);
}

#[test]
fn tree_without_memory_is_an_error() {
    let dtb = build(&[], &[0, 1], None);
    assert_eq!(parse(&dtb, 0).err(), Some(DtbError::NoMemory));
}

#[test]
fn tree_with_only_empty_memory_is_an_error() {
    let dtb = build(&[(0x4000_0000, 0)], &[0], None);
    assert_eq!(parse(&dtb, 0).err(), Some(DtbError::NoMemory));
}

#[test]
fn tree_without_cpus_is_an_error() {
    let dtb = build(&[(0x4000_0000, 0x1000_0000)], &[], None);
    assert_eq!(parse(&dtb, 0).err(), Some(DtbError::NoCpus));
}

#[test]
fn bootargs_are_read_from_chosen() {
    let dtb = build(
        &[(0x4000_0000, 0x1000_0000)],
        &[0],
        Some("ktest.filter=cpu"),
    );
    assert_eq!(
        parse(&dtb, 0).expect("parse").bootargs(),
        "ktest.filter=cpu"
    );
}

#[test]
fn bad_magic_is_reported_with_the_value_found() {
    let mut dtb = VIRT_GIC3_SMP4.to_vec();
    dtb[0] = 0;
    assert_eq!(parse(&dtb, 0).err(), Some(DtbError::BadMagic(0x000d_feed)));
    assert!(format!("{}", DtbError::BadMagic(0x000d_feed)).contains("0x000dfeed"));
}

#[test]
fn truncated_tree_is_reported_with_both_sizes() {
    let dtb = &VIRT_GIC3_SMP4[..VIRT_GIC3_SMP4.len() / 2];
    assert_eq!(
        parse(dtb, 0).err(),
        Some(DtbError::Truncated {
            claimed: VIRT_GIC3_SMP4.len(),
            available: dtb.len()
        })
    );
    assert!(matches!(
        parse(&VIRT_GIC3_SMP4[..20], 0),
        Err(DtbError::BadHeader(_))
    ));
    assert!(matches!(parse(&[], 0), Err(DtbError::BadHeader(_))));
}

#[test]
fn header_with_absurd_sizes_is_rejected_before_parsing() {
    let mut dtb = VIRT_GIC3_SMP4.to_vec();
    dtb[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(total_size(&dtb), Err(DtbError::BadHeader(_))));
    let mut dtb = VIRT_GIC3_SMP4.to_vec();
    dtb[8..12].copy_from_slice(&0xffff_0000u32.to_be_bytes()); // struct offset past the end
    assert!(matches!(total_size(&dtb), Err(DtbError::BadHeader(_))));
}

/// Damaging real trees at random never panics: every result is a tree or an error.
#[test]
fn randomly_damaged_trees_never_panic() {
    // (The structure-aware fuzzer is `cargo xtask fuzz dtb`; this is the quick byte-level one.)
    let seed = 0x5eed_d7b0_u64;
    println!("randomly_damaged_trees_never_panic: seed {seed:#x}");
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    };
    let mut outcomes = [0usize; 2];
    for round in 0..3000 {
        let base = [VIRT_GIC3_SMP4, VIRT_GIC2_SMP8, VIRT_GIC3_EL2][round % 3];
        let mut dtb = base.to_vec();
        let flips = 1 + next() as usize % 8;
        for _ in 0..flips {
            let at = next() as usize % dtb.len();
            dtb[at] = next() as u8;
        }
        if next() % 4 == 0 {
            let keep = next() as usize % dtb.len();
            dtb.truncate(keep);
        }
        let result = std::panic::catch_unwind(|| {
            let parsed = parse(&dtb, 0x8000_0000).is_ok();
            let _ = find_compatible(&dtb, &["arm,gic-v3", "arm,cortex-a15-gic", "arm,pl011"]);
            let _ = compatible_property(&dtb, "arm,psci-1.0", "method");
            parsed
        });
        match result {
            Ok(parsed) => outcomes[parsed as usize] += 1,
            Err(_) => panic!("round {round} (seed {seed:#x}): the device-tree parser panicked"),
        }
    }
    // Both outcomes must occur, or the damage was too weak (or too strong) to test anything.
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "outcomes {outcomes:?}");
}

/// `tree` with a NOP token after every property and before every END_NODE, as firmware that
/// deletes properties leaves them; offsets and sizes adjusted.
fn with_nops(tree: &[u8]) -> Vec<u8> {
    let word = |o: usize| u32::from_be_bytes(tree[o..o + 4].try_into().unwrap());
    let (off_struct, off_strings) = (word(8) as usize, word(12) as usize);
    let (size_strings, size_struct) = (word(32) as usize, word(36) as usize);
    let mut out = Vec::new();
    let mut p = off_struct;
    let nop = 4u32.to_be_bytes();
    loop {
        let token = word(p);
        let len = match token {
            1 => 4 + (tree[p + 4..].iter().position(|&b| b == 0).unwrap() + 1).next_multiple_of(4),
            3 => 12 + (word(p + 4) as usize).next_multiple_of(4),
            _ => 4,
        };
        if token == 2 {
            out.extend(nop);
        }
        out.extend(&tree[p..p + len]);
        if token == 3 {
            out.extend(nop);
        }
        p += len;
        if token == 9 {
            break;
        }
    }
    assert!(p <= off_struct + size_struct);
    let mut result = tree[..off_struct].to_vec();
    let new_struct_size = out.len();
    result.extend(out);
    let new_off_strings = result.len();
    result.extend(&tree[off_strings..off_strings + size_strings]);
    let total = result.len();
    result[4..8].copy_from_slice(&(total as u32).to_be_bytes());
    result[12..16].copy_from_slice(&(new_off_strings as u32).to_be_bytes());
    result[36..40].copy_from_slice(&(new_struct_size as u32).to_be_bytes());
    result
}

#[test]
fn nops_anywhere_are_skipped_and_can_be_removed() {
    let tree = build(&[(0x4000_0000, 0x4000_0000)], &[0, 1, 2, 3], Some("a=b"));
    let mut edited = with_nops(&tree);
    let reference = parse(&tree, 0).unwrap();
    // The reader skips NOPs after properties and before END_NODE (flat_device_tree stopped
    // at the first one and saw no memory node).
    let info = parse(&edited, 0).expect("NOPs are skipped");
    assert_eq!(info.cpus(), reference.cpus());
    assert_eq!(info.memory(), reference.memory());
    let nops = remove_nops(&mut edited).expect("well-formed");
    assert!(nops > 10, "only {nops} NOPs removed");
    let info = parse(&edited, 0).expect("parses after compaction");
    assert_eq!(info.cpus(), reference.cpus());
    assert_eq!(info.memory(), reference.memory());
    assert_eq!(info.bootargs(), "a=b");
    // A compacted tree has nothing left to remove.
    assert_eq!(remove_nops(&mut edited), Ok(0));
}

#[test]
fn remove_nops_refuses_broken_structure_blocks_and_leaves_them_alone() {
    let tree = build(&[(0, 0x1000_0000)], &[0], None);
    let off_struct = u32::from_be_bytes(tree[8..12].try_into().unwrap()) as usize;
    let mut unknown = tree.clone();
    unknown[off_struct..off_struct + 4].copy_from_slice(&7u32.to_be_bytes());
    let before = unknown.clone();
    assert_eq!(
        remove_nops(&mut unknown).unwrap_err().rule(),
        Some(Rule::UnknownToken(7))
    );
    assert_eq!(unknown, before, "a refused tree is not touched");
    // A property whose length runs past the block.
    let mut long = tree.clone();
    let first_prop = off_struct + 8; // after BEGIN_NODE "" (4 + 4)
    assert_eq!(&long[first_prop..first_prop + 4], &3u32.to_be_bytes());
    long[first_prop + 4..first_prop + 8].copy_from_slice(&0x00ff_ffffu32.to_be_bytes());
    assert_eq!(
        remove_nops(&mut long).unwrap_err().rule(),
        Some(Rule::Overrun)
    );
    let mut short = tree[..tree.len() - 1].to_vec();
    assert!(matches!(
        remove_nops(&mut short),
        Err(DtbError::Truncated { .. })
    ));
}

// ---- Issue #19: every class the fuzzer found, each with its specific error. ----

use super::synth::{self, TreeBuilder};

/// The structure block's offset and size in `tree`.
fn struct_block(tree: &[u8]) -> (usize, usize) {
    let word = |o: usize| u32::from_be_bytes(tree[o..o + 4].try_into().unwrap()) as usize;
    (word(8), word(36))
}

/// A minimal valid tree around `body` (called with the root node open; it must leave it
/// open): 1 GiB of RAM and one CPU first.
fn tree_with(body: impl FnOnce(&mut TreeBuilder)) -> Vec<u8> {
    let mut b = TreeBuilder::new();
    b.begin_node("");
    b.property_cells("#address-cells", &[2]);
    b.property_cells("#size-cells", &[2]);
    b.begin_node("memory@40000000");
    b.property_str("device_type", "memory");
    b.property_u64s("reg", &[0x4000_0000, 0x4000_0000]);
    b.end_node();
    b.begin_node("cpus");
    b.property_cells("#address-cells", &[1]);
    b.property_cells("#size-cells", &[0]);
    b.begin_node("cpu@0");
    b.property_str("device_type", "cpu");
    b.property_cells("reg", &[0]);
    b.end_node();
    b.end_node();
    body(&mut b);
    b.end_node();
    b.finish()
}

fn rule(result: Result<SystemInfo, DtbError>) -> (Option<String>, Option<Rule>) {
    let e = result.expect_err("the tree must be refused");
    (e.node().map(|n| n.to_string()), e.rule())
}

#[test]
fn one_end_node_too_many_in_qemus_tree_is_named_not_a_panic() {
    // One changed byte: QEMU's FDT_END (9) becomes END_NODE (2), closing a node that is not
    // open. flat_device_tree's node walk subtracted with overflow here.
    let mut dtb = VIRT_GIC3_SMP4.to_vec();
    let (off, size) = struct_block(&dtb);
    let last = off + size - 4;
    assert_eq!(&dtb[last..last + 4], &9u32.to_be_bytes());
    dtb[last + 3] = 2;
    let e = parse(&dtb, 0).unwrap_err();
    assert_eq!(e.rule(), Some(Rule::EndWithoutBegin));
    assert_eq!(
        e.to_string(),
        format!(
            "device tree is malformed at byte {last:#x} in the structure block: END_NODE \
             without a matching BEGIN_NODE"
        )
    );
    for f in [
        |d: &[u8]| find_compatible(d, &["arm,gic-v3"]).map(|_| ()),
        |d: &[u8]| compatible_property(d, "arm,psci-1.0", "method").map(|_| ()),
    ] {
        assert_eq!(f(&dtb).unwrap_err().rule(), Some(Rule::EndWithoutBegin));
    }
}

/// A tree whose node `/a/a/.../a` is `levels` deep counting the root.
fn nested(levels: usize) -> Vec<u8> {
    tree_with(|b| {
        for _ in 1..levels {
            b.begin_node("a");
        }
        for _ in 1..levels {
            b.end_node();
        }
    })
}

#[test]
fn nesting_is_capped_at_max_depth_with_a_named_error() {
    assert!(parse(&nested(MAX_DEPTH), 0).is_ok());
    let (node, rule) = self::rule(parse(&nested(MAX_DEPTH + 1), 0));
    assert_eq!(rule, Some(Rule::TooDeep));
    let deepest = format!("/{}", vec!["a"; MAX_DEPTH - 1].join("/"));
    assert!(deepest.len() > PATH_BYTES);
    assert_eq!(node, Some(format!("{}...", &deepest[..PATH_BYTES])));
    // 64 deep made flat_device_tree index past its 64-entry array.
    assert_eq!(rule_of(&nested(64)), Some(Rule::TooDeep));
}

fn rule_of(dtb: &[u8]) -> Option<Rule> {
    parse(dtb, 0).err().and_then(|e| e.rule())
}

#[test]
fn memory_that_wraps_is_past_the_physical_space_or_overlaps_is_refused() {
    let two = |a: (u64, u64), b: (u64, u64)| build(&[a, b], &[0], None);
    // Sizes adding up past 2^64 (parse was Ok, then memory_size() overflowed at boot).
    let dtb = two((0, 1 << 63), (1 << 63, 1 << 63));
    let e = parse(&dtb, 0).unwrap_err();
    assert_eq!(
        e.rule(),
        Some(Rule::OutsidePhysical(PhysRange {
            start: 0,
            size: 1 << 63
        }))
    );
    assert_eq!(e.node().unwrap().to_string(), "/memory@0");
    // A region that wraps past 2^64.
    let wrap = PhysRange {
        start: u64::MAX - 0xfff,
        size: 0x2000,
    };
    let dtb = build(&[(wrap.start, wrap.size)], &[0], None);
    assert_eq!(rule_of(&dtb), Some(Rule::Wraps(wrap)));
    assert!(
        parse(&dtb, 0)
            .unwrap_err()
            .to_string()
            .ends_with("/memory@0: range 0xfffffffffffff000 + 0x2000 wraps past 2^64")
    );
    // 4 EiB.
    let dtb = build(&[(0x4000_0000, 4 << 60)], &[0], None);
    assert!(matches!(rule_of(&dtb), Some(Rule::OutsidePhysical(_))));
    // Overlapping regions, named by the second.
    let dtb = two((0x4000_0000, 0x2000_0000), (0x5000_0000, 0x2000_0000));
    let e = parse(&dtb, 0).unwrap_err();
    assert_eq!(e.node().unwrap().to_string(), "/memory@1");
    assert_eq!(
        e.rule(),
        Some(Rule::Overlaps(
            PhysRange {
                start: 0x5000_0000,
                size: 0x2000_0000
            },
            PhysRange {
                start: 0x4000_0000,
                size: 0x2000_0000
            }
        ))
    );
    // Adjacent regions are fine, and the sum is theirs.
    let info = parse(
        &two((0x4000_0000, 0x1000_0000), (0x5000_0000, 0x1000_0000)),
        0,
    )
    .unwrap();
    assert_eq!(info.memory_size(), 0x2000_0000);
}

#[test]
fn reserved_ranges_that_wrap_or_are_too_many_are_refused() {
    let with_reservations = |list: &[(u64, u64)]| {
        let mut b = TreeBuilder::new();
        for &(start, size) in list {
            b.reserve(start, size);
        }
        synth::begin_virt(&mut b, 1);
        b.end_node();
        b.finish()
    };
    let ok = with_reservations(&[(0x4800_0000, 0x1000)]);
    let info = parse(&ok, 0).unwrap();
    assert_eq!(
        info.reserved()[1],
        PhysRange {
            start: 0x4800_0000,
            size: 0x1000
        }
    );
    let wrap = with_reservations(&[(u64::MAX, 2)]);
    let e = parse(&wrap, 0).unwrap_err();
    assert_eq!(
        e.node().unwrap().to_string(),
        "the memory reservation block"
    );
    assert_eq!(
        e.rule(),
        Some(Rule::Wraps(PhysRange {
            start: u64::MAX,
            size: 2
        }))
    );
    let many: Vec<(u64, u64)> = (0..MAX_RESERVED as u64)
        .map(|i| (i << 20, 0x1000))
        .collect();
    assert_eq!(
        rule_of(&with_reservations(&many)),
        Some(Rule::TooManyReservations(MAX_RESERVED - 1))
    );
    assert!(parse(&with_reservations(&many[1..]), 0).is_ok());
}

#[test]
fn reserved_memory_children_with_reg_are_reserved_like_memreserve() {
    // As a Pi firmware might write it: two address cells, one size cell, a `no-map` region
    // with `reg`, one without `no-map`, a dynamically placed pool (`size` only) and a disabled
    // node, which reserve nothing.
    let dtb = tree_with(|b| {
        b.begin_node("reserved-memory");
        b.property_cells("#address-cells", &[2]);
        b.property_cells("#size-cells", &[1]);
        b.property("ranges", &[]);
        b.begin_node("nvram@7ff00000");
        b.property_cells("reg", &[0, 0x7ff0_0000, 0x1000]);
        b.property("no-map", &[]);
        b.end_node();
        b.begin_node("firmware@7fe00000");
        b.property_cells("reg", &[0, 0x7fe0_0000, 0x2_0000]);
        b.end_node();
        b.begin_node("linux,cma");
        b.property_str("compatible", "shared-dma-pool");
        b.property_cells("size", &[0x400_0000]);
        b.property("reusable", &[]);
        b.end_node();
        b.begin_node("off@7fd00000");
        b.property_cells("reg", &[0, 0x7fd0_0000, 0x1000]);
        b.property_str("status", "disabled");
        b.end_node();
        b.end_node();
        // A node of the same name deeper down is not /reserved-memory.
        b.begin_node("soc");
        b.property_cells("#address-cells", &[2]);
        b.property_cells("#size-cells", &[2]);
        b.begin_node("reserved-memory");
        b.begin_node("not@1000");
        b.property_u64s("reg", &[0x1000, 0x1000]);
        b.end_node();
        b.end_node();
        b.end_node();
    });
    let info = parse(&dtb, 0).unwrap();
    assert_eq!(
        info.reserved()[1..],
        [
            PhysRange {
                start: 0x7ff0_0000,
                size: 0x1000
            },
            PhysRange {
                start: 0x7fe0_0000,
                size: 0x2_0000
            },
        ]
    );
}

#[test]
fn reserved_memory_ranges_are_checked_and_counted_with_memreserve() {
    let with_children = |n: u64, start: u64, size: u64| {
        tree_with(|b| {
            b.begin_node("reserved-memory");
            b.property_cells("#address-cells", &[2]);
            b.property_cells("#size-cells", &[2]);
            for i in 0..n {
                b.begin_node(&format!("r@{i:x}"));
                b.property_u64s("reg", &[start + (i << 20), size]);
                b.end_node();
            }
            b.end_node();
        })
    };
    assert_eq!(
        rule_of(&with_children(1, u64::MAX, 2)),
        Some(Rule::Wraps(PhysRange {
            start: u64::MAX,
            size: 2
        }))
    );
    let e = parse(&with_children(1, u64::MAX, 2), 0).unwrap_err();
    assert_eq!(e.node().unwrap().to_string(), "/reserved-memory/r@0");
    // The tree itself takes one of the MAX_RESERVED slots.
    let fits = MAX_RESERVED as u64 - 1;
    assert!(parse(&with_children(fits, 0x4800_0000, 0x1000), 0).is_ok());
    assert_eq!(
        rule_of(&with_children(fits + 1, 0x4800_0000, 0x1000)),
        Some(Rule::TooManyReservations(MAX_RESERVED - 1))
    );
}

#[test]
fn cpu_nodes_sharing_an_mpidr_are_refused() {
    // Four CPU nodes with the same MPIDR were four CPUs.
    let dtb = tree_with(|b| {
        b.begin_node("more-cpus");
        b.property_cells("#address-cells", &[1]);
        b.property_cells("#size-cells", &[0]);
        for n in 1..4 {
            b.begin_node(&format!("cpu@{n}"));
            b.property_str("device_type", "cpu");
            b.property_cells("reg", &[0]);
            b.end_node();
        }
        b.end_node();
    });
    let (node, rule) = rule(parse(&dtb, 0));
    assert_eq!(node.as_deref(), Some("/more-cpus/cpu@1"));
    assert_eq!(rule, Some(Rule::DuplicateMpidr(0)));
    // Duplicates of a non-boot CPU too.
    let dtb = build(&[(0x4000_0000, 0x1000_0000)], &[0, 1, 2, 1], None);
    assert_eq!(rule_of(&dtb), Some(Rule::DuplicateMpidr(1)));
    // A reg that is not an affinity value.
    let dtb = build(&[(0x4000_0000, 0x1000_0000)], &[0, 0x0100_0000], None);
    assert_eq!(rule_of(&dtb), Some(Rule::NotAnMpidr(0x0100_0000)));
}

#[test]
fn five_thousand_cpu_nodes_keep_maxcpus_and_count_all() {
    let cpus: Vec<u64> = (0..5000u64).map(|n| ((n / 256) << 8) | (n % 256)).collect();
    let dtb = build(&[(0x4000_0000, 0x1000_0000)], &cpus, None);
    let info = parse(&dtb, 0).unwrap();
    assert_eq!(info.cpus().len(), MAXCPUS);
    assert_eq!(info.cpus_ignored, 5000 - MAXCPUS);
    assert_eq!(info.cpu_nodes(), 5000);
}

#[test]
fn cpu_release_addresses_must_be_aligned_and_in_ram() {
    let with_release = |addr: u64| {
        tree_with(|b| {
            b.begin_node("cpus2");
            b.property_cells("#address-cells", &[1]);
            b.property_cells("#size-cells", &[0]);
            b.begin_node("cpu@1");
            b.property_str("device_type", "cpu");
            b.property_cells("reg", &[1]);
            b.property_str("enable-method", "spin-table");
            b.property_u64s("cpu-release-addr", &[addr]);
            b.end_node();
            b.end_node();
        })
    };
    let info = parse(&with_release(0x4000_00d8), 0).unwrap();
    assert_eq!(info.cpus()[1].release_addr, Some(0x4000_00d8));
    assert_eq!(
        rule_of(&with_release(0x4000_00d9)),
        Some(Rule::ReleaseAddr(0x4000_00d9))
    );
    let (node, rule) = rule(parse(&with_release(0xd8), 0));
    assert_eq!(node.as_deref(), Some("/cpus2/cpu@1"));
    assert_eq!(rule, Some(Rule::ReleaseAddr(0xd8)), "outside RAM");
    assert_eq!(
        rule_of(&with_release(u64::MAX - 7)),
        Some(Rule::ReleaseAddr(u64::MAX - 7))
    );
}

#[test]
fn reg_needs_decodable_cells_and_whole_entries() {
    let dtb = tree_with(|b| {
        b.begin_node("bus");
        b.property_cells("#address-cells", &[3]);
        b.begin_node("memory@0");
        b.property_str("device_type", "memory");
        b.property_cells("reg", &[0, 0, 0, 1]);
        b.end_node();
        b.end_node();
    });
    let (node, rule) = rule(parse(&dtb, 0));
    assert_eq!(node.as_deref(), Some("/bus/memory@0"));
    assert_eq!(
        rule,
        Some(Rule::Cells {
            address: 3,
            size: 1
        })
    );
    let dtb = tree_with(|b| {
        b.begin_node("memory@80000000");
        b.property_str("device_type", "memory");
        b.property_cells("reg", &[0, 0x8000_0000, 0]);
        b.end_node();
    });
    assert_eq!(rule_of(&dtb), Some(Rule::RegLength { len: 12, entry: 16 }));
    let dtb = tree_with(|b| {
        b.begin_node("cpus3");
        b.begin_node("cpu@9");
        b.property_str("device_type", "cpu");
        b.end_node();
        b.end_node();
    });
    assert_eq!(rule_of(&dtb), Some(Rule::RegMissing));
}

/// `tree` with the word at structure-block offset `at` replaced.
fn patched(tree: &[u8], at: usize, word: u32) -> Vec<u8> {
    let (off, _) = struct_block(tree);
    let mut out = tree.to_vec();
    out[off + at..off + at + 4].copy_from_slice(&word.to_be_bytes());
    out
}

#[test]
fn structure_rules_are_named() {
    let base = tree_with(|_| {});
    let (off, size) = struct_block(&base);
    // Root: BEGIN_NODE "" (8 bytes), then PROP #address-cells at 8.
    assert_eq!(
        rule_of(&patched(&base, 0, 0x77)),
        Some(Rule::UnknownToken(0x77))
    );
    assert_eq!(
        rule_of(&patched(&base, 12, 0x7fff_fff0)),
        Some(Rule::Overrun),
        "a value length past the block"
    );
    assert_eq!(
        rule_of(&patched(&base, 16, 0x10_0000)),
        Some(Rule::NameOffsetOutside(0x10_0000))
    );
    // FDT_END -> END_NODE; before it, the root's END_NODE -> FDT_END.
    assert_eq!(rule_of(&patched(&base, size - 8, 9)), Some(Rule::Unclosed));
    let mut b = TreeBuilder::new();
    b.property_str("early", "x");
    assert_eq!(rule_of(&b.finish()), Some(Rule::PropertyOutsideNode));
    // A second root node.
    let mut b = TreeBuilder::new();
    b.begin_node("");
    b.end_node();
    b.begin_node("");
    b.end_node();
    assert_eq!(rule_of(&b.finish()), Some(Rule::SecondRoot));
    let mut b = TreeBuilder::new();
    b.nop();
    assert_eq!(rule_of(&b.finish()), Some(Rule::NoRoot));
    // A property after a subnode.
    let dtb = tree_with(|b| b.property_str("late", "x"));
    let e = parse(&dtb, 0).unwrap_err();
    assert_eq!(e.rule(), Some(Rule::PropertyAfterSubnode));
    assert_eq!(e.node().unwrap().to_string(), "/");
    // A node name running to the end of the block: every byte after BEGIN_NODE non-zero.
    let mut unterminated = base.clone();
    let cpus_at = base.windows(8).position(|w| w == b"cpu@0\0\0\0").unwrap();
    unterminated[cpus_at..off + size].fill(b'x');
    assert_eq!(rule_of(&unterminated), Some(Rule::NameUnterminated));
    // The strings block's last byte.
    let mut strings = base.clone();
    *strings.last_mut().unwrap() = b'x';
    assert_eq!(rule_of(&strings), Some(Rule::StringsUnterminated));
    // The structure block ends without FDT_END.
    let mut short = base.clone();
    short[36..40].copy_from_slice(&((size - 4) as u32).to_be_bytes());
    assert_eq!(rule_of(&short), Some(Rule::Overrun));
    // A reservation block without its (0, 0) entry before the tree ends: point it at the
    // last 8 bytes.
    let mut rsv = base.clone();
    let near_end = (base.len() - 8) & !7;
    rsv[16..20].copy_from_slice(&(near_end as u32).to_be_bytes());
    let e = parse(&rsv, 0).unwrap_err();
    assert_eq!(e.rule(), Some(Rule::ReservationsUnterminated));
    assert_eq!(
        e.node().unwrap().to_string(),
        "the memory reservation block"
    );
}

#[test]
fn names_in_messages_are_printable_and_bounded() {
    let dtb = tree_with(|b| {
        b.begin_node(&format!("{}\u{7}@1", "x".repeat(200)));
        b.property_cells("reg", &[0]);
        b.property_str("device_type", "cpu");
        b.end_node();
    });
    let e = parse(&dtb, 0).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(&format!("/{}...", "x".repeat(PATH_BYTES - 1))),
        "{text}"
    );
    assert!(!text.contains('\u{7}'));
    assert_eq!(e.rule(), Some(Rule::RegLength { len: 4, entry: 16 }));
}

#[test]
fn the_synthetic_shapes_parse() {
    let small = synth::virt_like(4, 20 << 10);
    assert!(
        (19 << 10..=20 << 10).contains(&small.len()),
        "{}",
        small.len()
    );
    let info = parse(&small, 0).unwrap();
    assert_eq!(info.cpus().len(), 4);
    assert_eq!(info.memory_size(), 1 << 30);
    assert_eq!(info.bootargs(), "console=ttyAMA0");
    for (name, tree) in [
        ("long_names", synth::long_names(MAX_DTB_SIZE)),
        ("many_children", synth::many_children(MAX_DTB_SIZE)),
    ] {
        assert!(
            (MAX_DTB_SIZE - (8 << 10)..=MAX_DTB_SIZE).contains(&tree.len()),
            "{name}: {} bytes",
            tree.len()
        );
        let info = parse(&tree, 0).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(info.cpus()[0].mpidr, 0, "{name}");
    }
    let many = parse(&synth::many_children(MAX_DTB_SIZE), 0).unwrap();
    assert_eq!(many.memory().len(), MAX_MEMORY_REGIONS);
    assert!(many.memory_ignored > 10_000, "{}", many.memory_ignored);
    let tree = DeviceTree::new(&small).unwrap();
    let (hit, gic) = tree.find_compatible(&["arm,gic-v3"]).unwrap().unwrap();
    assert_eq!(hit, "arm,gic-v3");
    assert_eq!(gic.node.to_string(), "/intc@8000000");
    assert_eq!(gic.reg(1, 2).unwrap().size, 0xf6_0000);
    assert_eq!(
        gic.reg(2, 3).unwrap_err().rule(),
        Some(Rule::TooFewRegs {
            found: 2,
            needed: 3
        })
    );
}

#[test]
fn device_registers_are_range_checked_where_read() {
    let dtb = tree_with(|b| {
        b.begin_node("uart@9000000");
        b.property_str("compatible", "arm,pl011");
        b.property_u64s("reg", &[u64::MAX - 0xff, 0x1000]);
        b.end_node();
    });
    let e = find_compatible(&dtb, &["arm,pl011"]).unwrap_err();
    assert_eq!(e.node().unwrap().to_string(), "/uart@9000000");
    assert!(matches!(e.rule(), Some(Rule::Wraps(_))));
    // A disabled node is skipped, whatever its registers.
    let dtb = tree_with(|b| {
        b.begin_node("uart@9000000");
        b.property_str("compatible", "arm,pl011");
        b.property_str("status", "disabled");
        b.property_u64s("reg", &[u64::MAX - 0xff, 0x1000]);
        b.end_node();
    });
    assert_eq!(
        find_compatible(&dtb, &["arm,pl011"]).unwrap().map(|f| f.0),
        None
    );
}
