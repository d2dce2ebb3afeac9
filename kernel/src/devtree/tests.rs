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
fn nops_after_properties_hide_later_nodes_until_removed() {
    let tree = build(&[(0x4000_0000, 0x4000_0000)], &[0, 1, 2, 3], Some("a=b"));
    let mut edited = with_nops(&tree);
    // The flat_device_tree node walk stops at the first such NOP, in the root node here:
    // neither the memory node nor the CPUs after it are seen.
    assert_eq!(parse(&edited, 0).unwrap_err(), DtbError::NoMemory);
    let nops = remove_nops(&mut edited).expect("well-formed");
    assert!(nops > 10, "only {nops} NOPs removed");
    let info = parse(&edited, 0).expect("parses after compaction");
    let reference = parse(&tree, 0).unwrap();
    assert_eq!(info.cpus(), reference.cpus());
    assert_eq!(info.memory(), reference.memory());
    assert_eq!(info.bootargs(), "a=b");
    // A compacted tree has nothing left to remove.
    assert_eq!(remove_nops(&mut edited), Ok(0));
}

#[test]
fn remove_nops_refuses_broken_structure_blocks() {
    let tree = build(&[(0, 0x1000_0000)], &[0], None);
    let off_struct = u32::from_be_bytes(tree[8..12].try_into().unwrap()) as usize;
    let mut unknown = tree.clone();
    unknown[off_struct..off_struct + 4].copy_from_slice(&7u32.to_be_bytes());
    assert_eq!(
        remove_nops(&mut unknown),
        Err(DtbError::Malformed("unknown structure token"))
    );
    // A property whose length runs past the block.
    let mut long = tree.clone();
    let first_prop = off_struct + 8; // after BEGIN_NODE "" (4 + 4)
    assert_eq!(&long[first_prop..first_prop + 4], &3u32.to_be_bytes());
    long[first_prop + 4..first_prop + 8].copy_from_slice(&0x00ff_ffffu32.to_be_bytes());
    assert!(matches!(
        remove_nops(&mut long),
        Err(DtbError::Malformed(_))
    ));
    let mut short = tree[..tree.len() - 1].to_vec();
    assert!(matches!(
        remove_nops(&mut short),
        Err(DtbError::Truncated { .. })
    ));
}
