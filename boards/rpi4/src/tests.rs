//! Host tests of the board's pure logic, reading trees back with the kernel's own parser.

use super::*;
use kernel::devtree::EnableMethod;

fn default_tree(bootargs: &str) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let size = build_default_tree(&mut buf, bootargs).expect("fits in 4 KiB");
    buf.truncate(size);
    buf
}

#[test]
fn the_default_tree_describes_the_pi4_defaults() {
    let tree = default_tree("ktest.filter=spl exit=semihosting");
    assert_eq!(devtree::total_size(&tree), Ok(tree.len()));
    let info = devtree::parse(&tree, 0x8000_0000).expect("the kernel can parse it");
    assert_eq!(info.memory(), &[layout::DEFAULT_RAM]);
    assert_eq!(info.memory_size(), 948 << 20);
    assert_eq!(info.bootargs(), "ktest.filter=spl exit=semihosting");
    let cpus = info.cpus();
    assert_eq!(cpus.len(), 4);
    for (n, cpu) in cpus.iter().enumerate() {
        assert_eq!(cpu.mpidr, n as u64);
        assert_eq!(cpu.enable_method, EnableMethod::SpinTable);
        assert_eq!(cpu.release_addr, Some(0xd8 + 8 * n as u64), "cpu{n}");
        assert_eq!(
            release_address(cpu),
            Ok(ReleaseAddress::FromTree(0xd8 + 8 * n as u64))
        );
    }
    assert!(!info.boot_cpu_missing);
}

#[test]
fn the_default_tree_fits_the_boards_buffer_with_long_bootargs() {
    let long = "x".repeat(kernel::devtree::MAX_BOOTARGS);
    let mut buf = [0u8; 2048];
    let size = build_default_tree(&mut buf, &long).expect("fits the board's 2 KiB buffer");
    assert!(
        size < 1536,
        "{size} bytes: keep a margin below the board's buffer"
    );
    let mut small = [0u8; 200];
    assert_eq!(build_default_tree(&mut small, ""), Err(NoRoom));
}

#[test]
fn x0_must_be_a_plausible_address() {
    assert_eq!(check_address(0), Err(NoTree::Null));
    assert_eq!(check_address(0x0800_0000), Ok(()));
    assert_eq!(
        check_address(0x100),
        Ok(()),
        "QEMU's ATAG address is readable RAM"
    );
    assert_eq!(
        check_address(0x0800_0004),
        Err(NoTree::Implausible(0x0800_0004))
    );
    assert_eq!(
        check_address(0xfe00_0000),
        Err(NoTree::Implausible(0xfe00_0000))
    );
    assert_eq!(
        check_address(u64::MAX - 7),
        Err(NoTree::Implausible(u64::MAX - 7))
    );
}

/// What QEMU puts at 0x100 without `-dtb`: ATAG_CORE, ATAG_MEM, ATAG_CMDLINE, ATAG_NONE.
fn qemu_atags(cmdline: &str) -> Vec<u8> {
    let mut words: Vec<u32> = vec![5, 0x5441_0001, 1, 4096, 0];
    words.extend([4, 0x5441_0002, 0x8000_0000, 0]);
    let mut text = cmdline.as_bytes().to_vec();
    text.push(0);
    while !text.len().is_multiple_of(4) {
        text.push(0);
    }
    words.extend([2 + text.len() as u32 / 4, 0x5441_0009]);
    words.extend(
        text.chunks(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
    );
    words.extend([0, 0]);
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

#[test]
fn atags_are_not_a_device_tree() {
    let atags = qemu_atags("");
    let err = check_header(0x100, &atags[..40]).unwrap_err();
    assert_eq!(
        err,
        NoTree::NotATree(0x100, DtbError::BadMagic(5u32.to_be()))
    );
    assert_eq!(
        err.to_string(),
        "x0 = 0x100: no device tree: magic 0x05000000, expected 0xd00dfeed"
    );
}

#[test]
fn the_command_line_comes_from_atag_cmdline() {
    assert_eq!(
        atag_cmdline(&qemu_atags("exit=semihosting ktest.filter=spl")),
        Some("exit=semihosting ktest.filter=spl")
    );
    let no_cmdline: Vec<u8> = [5u32, 0x5441_0001, 1, 4096, 0, 0, 0]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    assert_eq!(atag_cmdline(&no_cmdline), None);
    // Not an ATAG list at all, a list cut short, a zero-sized tag.
    assert_eq!(atag_cmdline(&default_tree("")), None);
    let atags = qemu_atags("abc");
    assert_eq!(atag_cmdline(&atags[..40]), None);
    assert_eq!(atag_cmdline(&[1, 0, 0, 0, 1, 0, 0x41, 0x54]), None);
}

#[test]
fn broken_headers_are_reported_as_unusable() {
    let tree = default_tree("");
    assert_eq!(check_header(0x0800_0000, &tree[..40]), Ok(tree.len()));
    // Version 15.
    let mut old = tree.clone();
    old[20..24].copy_from_slice(&15u32.to_be_bytes());
    assert!(matches!(
        check_header(0x0800_0000, &old[..40]),
        Err(NoTree::Unusable(_, DtbError::BadHeader(_)))
    ));
    // A tree that would run past the end of RAM.
    assert!(matches!(
        check_header(0x3b40_0000 - 64, &tree[..40]),
        Err(NoTree::Unusable(_, DtbError::BadHeader(_)))
    ));
}

#[test]
fn a_truncated_tree_is_unusable() {
    let tree = default_tree("");
    let cut = &tree[..tree.len() - 8];
    assert_eq!(
        prepare_tree(0x0800_0000, &mut cut.to_vec()).unwrap_err(),
        NoTree::Unusable(
            0x0800_0000,
            DtbError::Truncated {
                claimed: tree.len(),
                available: tree.len() - 8
            }
        )
    );
}

/// A tree like the default one but built by hand: `release` says whether the CPUs have
/// `cpu-release-addr`, `memory` whether there is a memory node.
fn custom_tree(release: bool, memory: bool, method: &str) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let mut w = fdt_writer::FdtWriter::new(&mut buf).unwrap();
    w.begin_node("").unwrap();
    w.property_cells("#address-cells", &[1]).unwrap();
    // Where the firmware deleted a property (flat_device_tree, the kernel's parser before
    // issue #19, stopped here).
    w.nop().unwrap();
    w.property_cells("#size-cells", &[1]).unwrap();
    if memory {
        w.begin_node("memory@0").unwrap();
        w.property_str("device_type", "memory").unwrap();
        w.property_cells("reg", &[0, 0x3c00_0000]).unwrap();
        w.end_node().unwrap();
    }
    w.begin_node("cpus").unwrap();
    w.property_cells("#address-cells", &[1]).unwrap();
    w.property_cells("#size-cells", &[0]).unwrap();
    for n in 0..4u32 {
        w.begin_node(&format!("cpu@{n}")).unwrap();
        w.property_str("device_type", "cpu").unwrap();
        w.property_cells("reg", &[n]).unwrap();
        w.property_str("enable-method", method).unwrap();
        if release {
            w.property_cells("cpu-release-addr", &[0, 0x1000 + 8 * n])
                .unwrap();
        }
        w.end_node().unwrap();
    }
    let size = w.finish().unwrap();
    buf.truncate(size);
    buf
}

#[test]
fn a_tree_without_cpu_release_addr_gets_the_firmware_defaults() {
    let tree = custom_tree(false, true, "spin-table");
    let (info, _) = prepare_tree(0x0800_0000, &mut tree.clone()).unwrap();
    let found: Vec<_> = info.cpus().iter().map(release_address).collect();
    assert_eq!(
        found,
        [0xd8, 0xe0, 0xe8, 0xf0].map(|a| Ok(ReleaseAddress::Default(a)))
    );
}

#[test]
fn release_addresses_from_the_tree_win() {
    let tree = custom_tree(true, true, "spin-table");
    let (info, _) = prepare_tree(0x0800_0000, &mut tree.clone()).unwrap();
    assert_eq!(
        release_address(&info.cpus()[3]),
        Ok(ReleaseAddress::FromTree(0x1018))
    );
    assert_eq!(release_address(&info.cpus()[3]).unwrap().addr(), 0x1018);
}

#[test]
fn cpus_the_spin_table_cannot_start_are_refused() {
    let tree = custom_tree(false, true, "psci");
    let (info, _) = prepare_tree(0x0800_0000, &mut tree.clone()).unwrap();
    assert_eq!(
        release_address(&info.cpus()[1]),
        Err(NoRelease::NotSpinTable(EnableMethod::Psci))
    );
    let stranger = CpuNode {
        mpidr: 0x100,
        enable_method: EnableMethod::SpinTable,
        release_addr: None,
    };
    assert_eq!(
        release_address(&stranger),
        Err(NoRelease::UnknownCpu(0x100))
    );
}

#[test]
fn a_tree_without_memory_is_unusable() {
    let tree = custom_tree(true, false, "spin-table");
    assert_eq!(
        prepare_tree(0x0800_0000, &mut tree.clone()).unwrap_err(),
        NoTree::Unusable(0x0800_0000, DtbError::NoMemory)
    );
}

#[test]
fn gpio_14_and_15_become_the_pl011() {
    // Reset value: every pin an input.
    assert_eq!(gpfsel1_with_uart0(0), 0b100_100 << 12);
    // Other pins keep their functions; the old GPIO14/15 functions (ALT5, mini UART) go.
    let all_ones = u32::MAX;
    let value = gpfsel1_with_uart0(all_ones);
    assert_eq!(value & !(0b111_111 << 12), all_ones & !(0b111_111 << 12));
    assert_eq!((value >> 12) & 0b111_111, 0b100_100);
    assert_eq!(
        gpfsel1_with_uart0((0b010 << 12) | (0b010 << 15)),
        0b100_100 << 12
    );
    // Pulls: 14 none, 15 up, the rest unchanged.
    assert_eq!(pulls_with_uart0(0), 0b01 << 30);
    assert_eq!(pulls_with_uart0(u32::MAX), 0x4fff_ffff);
}

#[test]
fn gpio_registers_sit_at_the_bcm2711_offsets() {
    // BCM2711 ARM Peripherals, 5.2: GPFSEL1 at 0x04, GPIO_PUP_PDN_CNTRL_REG0 at 0xe4.
    assert_eq!(core::mem::offset_of!(GpioRegisters, gpfsel0), 0x00);
    assert_eq!(core::mem::offset_of!(GpioRegisters, gpfsel1), 0x04);
    assert_eq!(
        core::mem::offset_of!(GpioRegisters, pup_pdn_cntrl_reg0),
        0xe4
    );
    assert_eq!(core::mem::size_of::<GpioRegisters>(), 0xe8);
}

#[test]
fn route_uart0_changes_only_the_console_pins() {
    // A GPIO block in host memory: every pin ALT5 / pulled down, as a worst case.
    let mut block = [0u32; 0xe8 / 4];
    block[1] = 0x1249_2492; // GPFSEL1: ALT5 (0b010) on every pin of 10-19
    block[0xe4 / 4] = 0xaaaa_aaaa; // every pull down
    // SAFETY: the array is as large as and at least as aligned as GpioRegisters, whose fields
    // are u32 cells; it lives for the whole borrow.
    let gpio = unsafe { &*(block.as_mut_ptr() as *const GpioRegisters) };
    route_uart0(gpio);
    use tock_registers::interfaces::Readable;
    assert_eq!(gpio.gpfsel1.read(GPFSEL1::FSEL14), 0b100);
    assert!(gpio.gpfsel1.matches_all(GPFSEL1::FSEL15::Alt0));
    assert_eq!(
        gpio.gpfsel1.get() & !(0b111_111 << 12),
        0x1249_2492 & !(0b111_111 << 12)
    );
    assert!(
        gpio.pup_pdn_cntrl_reg0
            .matches_all(GPIO_PUP_PDN_CNTRL_REG0::GPIO_PUP_PDN_CNTRL15::Up)
    );
    assert_eq!(gpio.pup_pdn_cntrl_reg0.get(), 0x4aaa_aaaa);
    assert_eq!(block[0], 0);
}

#[test]
fn firmware_nops_are_removed_before_the_tree_is_handed_on() {
    let mut tree = custom_tree(true, true, "spin-table");
    let before = devtree::parse(&tree, 0).expect("the kernel's reader skips NOPs itself");
    let (info, nops) = prepare_tree(0x0800_0000, &mut tree).unwrap();
    assert_eq!(info.cpus(), before.cpus());
    assert_eq!(nops, 1);
    assert_eq!(info.cpus().len(), 4);
    assert_eq!(info.memory_size(), 0x3c00_0000);
}

#[test]
fn power_manager_registers_sit_at_the_bcm2711_offsets() {
    assert_eq!(core::mem::offset_of!(PmRegisters, rstc), 0x1c);
    assert_eq!(core::mem::offset_of!(PmRegisters, rsts), 0x20);
    assert_eq!(core::mem::offset_of!(PmRegisters, wdog), 0x24);
    assert_eq!(core::mem::size_of::<PmRegisters>(), 0x28);
}

#[test]
fn watchdog_values_carry_the_password_and_spread_the_partition() {
    // Partition 63 (halt): bits 0, 2, 4, 6, 8 and 10.
    assert_eq!(rsts_with_partition(0, 63), 0x5a00_0555);
    assert_eq!(rsts_with_partition(0, 0), 0x5a00_0000);
    assert_eq!(rsts_with_partition(0, 0b100101), 0x5a00_0411);
    // Other bits as read; the old partition and password replaced.
    assert_eq!(rsts_with_partition(u32::MAX, 0), 0x5aff_faaa);
    assert_eq!(rstc_full_reset(0), 0x5a00_0020);
    assert_eq!(rstc_full_reset(u32::MAX), 0x5aff_ffef);
}

#[test]
fn watchdog_reset_writes_all_three_registers() {
    let mut block = [0u32; 0x28 / 4];
    block[0x20 / 4] = 0x0000_1000; // PM_RSTS: some other status bit set
    // SAFETY: the array is as large as and at least as aligned as PmRegisters, whose fields
    // are u32 cells; it lives for the whole borrow.
    let pm = unsafe { &*(block.as_mut_ptr() as *const PmRegisters) };
    watchdog_reset(pm, 63);
    assert_eq!(block[0x20 / 4], 0x5a00_1555);
    assert_eq!(block[0x24 / 4], 0x5a00_000a);
    assert_eq!(block[0x1c / 4], 0x5a00_0020);
    assert_eq!(block[0], 0);
}
