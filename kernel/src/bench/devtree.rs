//! `devtree_parse`: one `devtree::parse` (the whole tree checked, then the walk for RAM, CPUs,
//! reservations and boot arguments) on trees built in memory by `devtree::synth`: one shaped
//! like QEMU virt's, of 20 KiB, and the two 2 MiB shapes that took the old parser more than
//! linear time (long names; a parent with many properties and many children). Linear cost
//! makes each 2 MiB figure about 100 times the 20 KiB one. One sample is one parse, in guest
//! instructions (icount virtual ns); the line carries `tree=` and `bytes=`.

use super::{WARMUP, figures};
use crate::arch::aarch64::counter;
use crate::clock::counter_to_ns;
use crate::devtree::{self, MAX_DTB_SIZE, synth};
use crate::kprintln;
use alloc::vec::Vec;

/// Times `samples` parses of each tree and prints a line per tree.
pub fn devtree_parse() {
    let trees = [
        ("virt-20k", synth::virt_like(4, 20 << 10), 1000),
        ("long-names-2m", synth::long_names(MAX_DTB_SIZE), 20),
        ("many-children-2m", synth::many_children(MAX_DTB_SIZE), 20),
    ];
    for (name, tree, samples) in trees {
        let warmup = WARMUP.min(samples);
        let mut times = Vec::with_capacity(samples);
        for i in 0..warmup + samples {
            let t0 = counter();
            let parsed = devtree::parse(&tree, 0);
            let t = counter_to_ns(counter() - t0);
            // A figure for a parse that failed would measure something else.
            if let Err(e) = parsed {
                panic!("devtree_parse: the {name} tree does not parse: {e}");
            }
            if i >= warmup {
                times.push(t);
            }
        }
        let f = figures(&mut times);
        kprintln!(
            "metric=devtree_parse smp={} unit=ns median={} min={} max={} n={} tree={name} \
             bytes={}",
            crate::cpu::ncpu_online(),
            f.median,
            f.min,
            f.max,
            f.n,
            tree.len()
        );
    }
}
