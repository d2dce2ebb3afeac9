//! Kernel IPL to GIC priority: `0x80 + (7 - ipl) * 0x10`.
//!
//! On the GIC a numerically lower priority is more urgent, so IPL_HIGH (7) gets 0x80, IPL_SCHED
//! 0x90, IPL_VM 0xa0. The values are multiples of 16, so they survive GICs that implement only
//! the top four priority bits, and all stay below 0xff, the fully open priority mask the kernel
//! runs with. Soft levels (1-4) and IPL_NONE never reach the GIC, but map consistently too.
//!
//! The Pi 4's GIC-400 implements five priority bits and the Security Extensions, and the kernel
//! sees its non-secure view (`gic.rs`): a priority `p` it writes is stored as `0x80 | (p >> 1)`,
//! of which the GIC keeps the top five bits, so four bits of the kernel's value count (the tests
//! below model this: [`nonsecure_stored`]). The mapping stays distinct and ordered there, the
//! hardware levels stay below the stored mask, and each is its own preemption group at the
//! binary point the non-secure CPU interface resets to. QEMU's GICv3 also implements five bits.
//! Pure arithmetic, host-tested.

/// Highest kernel IPL (IPL_HIGH).
pub const IPL_MAX: u8 = 7;

/// GIC priority for kernel IPL `ipl` (levels above IPL_HIGH are treated as IPL_HIGH).
pub const fn ipl_to_priority(ipl: u8) -> u8 {
    let ipl = if ipl > IPL_MAX { IPL_MAX } else { ipl };
    0x80 + (IPL_MAX - ipl) * 0x10
}

/// The priority a GIC with `bits` implemented priority bits stores when non-secure software
/// writes `p` (GICv2 and GICv3 with two security states: `0x80 | (p >> 1)`, then the
/// unimplemented low bits read as zero). Used to check [`ipl_to_priority`] against the Pi 4's
/// GIC-400 (five bits).
pub const fn nonsecure_stored(p: u8, bits: u32) -> u8 {
    let implemented = (0xff00u16 >> bits) as u8;
    (0x80 | (p >> 1)) & implemented
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The GIC-400's implemented priority bits (GIC-400 TRM, GICD_IPRIORITYRn).
    const GIC400_BITS: u32 = 5;

    #[test]
    fn the_nonsecure_view_of_five_bits_keeps_every_level_distinct_and_ordered() {
        for ipl in 0..IPL_MAX {
            let lower = nonsecure_stored(ipl_to_priority(ipl), GIC400_BITS);
            let higher = nonsecure_stored(ipl_to_priority(ipl + 1), GIC400_BITS);
            assert!(
                higher < lower,
                "ipl {} stored as {higher:#x}, ipl {ipl} as {lower:#x}: not strictly more urgent",
                ipl + 1
            );
        }
    }

    #[test]
    fn the_nonsecure_view_leaves_every_level_above_ipl_none_unmasked() {
        // The kernel writes 0xff to the priority mask; an interrupt is signalled only when its
        // stored priority is below the stored mask.
        let mask = nonsecure_stored(0xff, GIC400_BITS);
        for ipl in 1..=IPL_MAX {
            let p = nonsecure_stored(ipl_to_priority(ipl), GIC400_BITS);
            assert!(
                p < mask,
                "ipl {ipl} stored as {p:#x} is masked by {mask:#x}"
            );
        }
    }

    #[test]
    fn the_hardware_levels_are_separate_preemption_groups_at_the_reset_binary_point() {
        // The GIC-400's non-secure binary point resets to 3 (GIC-400 TRM, GICC_BPR): for group 1
        // the group priority is bits [7:3] of the stored value (GICv2 architecture, priority
        // grouping), so a more urgent level preempts a running handler of a less urgent one.
        let group = |ipl: u8| nonsecure_stored(ipl_to_priority(ipl), GIC400_BITS) & 0xf8;
        // IPL_VM, IPL_SCHED, IPL_HIGH.
        assert!(group(7) < group(6) && group(6) < group(5));
    }

    #[test]
    fn the_model_of_the_nonsecure_view_matches_the_architecture() {
        assert_eq!(nonsecure_stored(0x00, 8), 0x80);
        assert_eq!(nonsecure_stored(0xff, 8), 0xff);
        assert_eq!(nonsecure_stored(0xff, 5), 0xf8);
        assert_eq!(nonsecure_stored(0x80, 5), 0xc0);
        assert_eq!(nonsecure_stored(0x90, 5), 0xc8);
        // Neighbours 0x10 apart stay apart; 0x08 apart they would merge.
        assert_ne!(nonsecure_stored(0x80, 5), nonsecure_stored(0x90, 5));
        assert_eq!(nonsecure_stored(0x80, 5), nonsecure_stored(0x88, 5));
    }

    #[test]
    fn higher_ipl_is_a_strictly_more_urgent_priority() {
        for ipl in 0..IPL_MAX {
            assert!(ipl_to_priority(ipl + 1) < ipl_to_priority(ipl), "ipl {ipl}");
        }
    }

    #[test]
    fn netbsd_hardware_levels_get_the_documented_priorities() {
        assert_eq!(ipl_to_priority(7), 0x80); // IPL_HIGH
        assert_eq!(ipl_to_priority(6), 0x90); // IPL_SCHED
        assert_eq!(ipl_to_priority(5), 0xa0); // IPL_VM
    }

    #[test]
    fn priorities_fit_four_implemented_bits_and_stay_below_the_open_mask() {
        for ipl in 0..=IPL_MAX {
            let p = ipl_to_priority(ipl);
            assert_eq!(p & 0x0f, 0, "ipl {ipl} -> {p:#x} uses low bits");
            assert!(p < 0xff, "ipl {ipl} -> {p:#x} would be masked by PMR 0xff");
        }
    }

    #[test]
    fn out_of_range_levels_clamp_to_ipl_high() {
        assert_eq!(ipl_to_priority(8), ipl_to_priority(7));
        assert_eq!(ipl_to_priority(255), 0x80);
    }
}
