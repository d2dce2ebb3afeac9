//! Interrupt facts a board takes from its device tree, checked against what every GIC can
//! have: the `arm,gic` binding's specifier (type, number) to an interrupt ID, and how many
//! GICv3 redistributors the driver may be told about. Pure arithmetic, host-tested.

/// PPIs a GIC has (INTIDs 16-31).
pub const PPI_COUNT: u32 = 16;
/// SPIs the largest GIC has (INTIDs 32-1019).
pub const SPI_COUNT: u32 = 988;

/// The interrupt ID of the `arm,gic` specifier (`kind` 0 SPI, 1 PPI; `number` counted from
/// the first of its kind), or `None` if it is neither or lies outside the GIC's range.
pub const fn intid(kind: u32, number: u32) -> Option<u32> {
    match kind {
        0 if number < SPI_COUNT => Some(32 + number),
        1 if number < PPI_COUNT => Some(16 + number),
        _ => None,
    }
}

/// The interrupt ID of a specifier that must name a PPI (a per-CPU timer), or `None`.
pub const fn ppi_intid(kind: u32, number: u32) -> Option<u32> {
    if kind == 1 { intid(kind, number) } else { None }
}

/// Bytes per GICv3 redistributor (RD_base and SGI_base frames).
pub const GICV3_REDISTRIBUTOR_STRIDE: usize = 0x2_0000;
/// Bytes per GICv4 redistributor (two more frames for virtual LPIs).
pub const GICV4_REDISTRIBUTOR_STRIDE: usize = 0x4_0000;

/// The most redistributors the GICv3 driver may be told about: one per CPU node of the tree,
/// but never more than the redistributor region holds at the stride of its architecture
/// revision (`GICR_PIDR2.ArchRev`: 4 means GICv4 frames).
pub const fn redistributor_limit(cpu_nodes: usize, region_size: usize, arch_rev: u32) -> usize {
    let fit = region_size / redistributor_stride(arch_rev);
    if cpu_nodes < fit { cpu_nodes } else { fit }
}

/// Bytes per redistributor for architecture revision `arch_rev`.
pub const fn redistributor_stride(arch_rev: u32) -> usize {
    if arch_rev >= 4 {
        GICV4_REDISTRIBUTOR_STRIDE
    } else {
        GICV3_REDISTRIBUTOR_STRIDE
    }
}

/// How many redistributors are there: frames 0, 1, ... up to `limit`, stopping after the one
/// whose `GICR_TYPER.Last` is set (`is_last(n)` reads frame n's). Frame n is read only if
/// frame n - 1 was not the last, so nothing past the hardware's last redistributor is
/// touched, whatever the tree says: the driver configures every redistributor it is told of,
/// and a count from the tree alone (5,000 CPU nodes) would send it past the region, or (QEMU
/// virt's region has room for 123) into frames no redistributor answers.
pub fn redistributors_present(limit: usize, mut is_last: impl FnMut(usize) -> bool) -> usize {
    let mut n = 0;
    while n < limit {
        let last = is_last(n);
        n += 1;
        if last {
            break;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specifiers_map_to_interrupt_ids_inside_the_gic_range() {
        assert_eq!(intid(1, 14), Some(30), "the EL1 physical timer");
        assert_eq!(intid(0, 1), Some(33), "QEMU virt's PL011");
        assert_eq!(intid(1, 15), Some(31));
        assert_eq!(intid(1, 16), None);
        assert_eq!(intid(0, 987), Some(1019));
        assert_eq!(intid(0, 988), None);
        // The timer specifier the fuzzer found: the board added 16 in u32.
        assert_eq!(intid(1, u32::MAX), None);
        assert_eq!(intid(2, 1), None);
        assert_eq!(ppi_intid(1, 14), Some(30));
        assert_eq!(ppi_intid(0, 14), None, "an SPI is no per-CPU timer");
    }

    #[test]
    fn redistributors_are_capped_by_the_region_and_the_last_frame() {
        // QEMU virt's GICv3 region: 0xf60000 bytes, 123 frames.
        assert_eq!(redistributor_limit(17, 0xf6_0000, 3), 17);
        assert_eq!(redistributor_limit(5000, 0xf6_0000, 3), 123);
        assert_eq!(redistributor_limit(5000, 0xf6_0000, 4), 61);
        assert_eq!(
            redistributor_limit(4, 0x1_0000, 3),
            0,
            "smaller than one frame"
        );
        // Four redistributors (Last on frame 3), 5,000 CPU nodes: frames 0-3 are read.
        let mut read = Vec::new();
        let n = redistributors_present(123, |f| {
            read.push(f);
            f == 3
        });
        assert_eq!(n, 4);
        assert_eq!(read, [0, 1, 2, 3]);
        // No Last bit inside the limit: the limit.
        assert_eq!(redistributors_present(17, |_| false), 17);
        assert_eq!(redistributors_present(0, |_| true), 0);
    }
}
