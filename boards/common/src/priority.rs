//! Kernel IPL to GIC priority: `0x80 + (7 - ipl) * 0x10`.
//!
//! On the GIC a numerically lower priority is more urgent, so IPL_HIGH (7) gets 0x80, IPL_SCHED
//! 0x90, IPL_VM 0xa0. The values are multiples of 16, so they survive GICs that implement only
//! the top four priority bits (the GIC-400 implements five, QEMU's GICv3 five), and all stay
//! below 0xff, the fully open priority mask the kernel runs with. Soft levels (1-4) and
//! IPL_NONE never reach the GIC, but map consistently too. Pure arithmetic, host-tested.

/// Highest kernel IPL (IPL_HIGH).
pub const IPL_MAX: u8 = 7;

/// GIC priority for kernel IPL `ipl` (levels above IPL_HIGH are treated as IPL_HIGH).
pub const fn ipl_to_priority(ipl: u8) -> u8 {
    let ipl = if ipl > IPL_MAX { IPL_MAX } else { ipl };
    0x80 + (IPL_MAX - ipl) * 0x10
}

#[cfg(test)]
mod tests {
    use super::*;

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
