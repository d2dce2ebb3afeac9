//! The Raspberry Pi 4 board (BCM2711), on the real board and on QEMU's `raspi4b`.
//!
//! The SoC is fixed, so the devices are too: a GIC-400 (GICv2) at 0xFF84_1000/0xFF84_2000, the
//! PL011 UART0 at 0xFE20_1000, the EL1 physical timer on PPI 30 (`lib.rs` `layout`). What
//! varies comes from the device tree the firmware passes in x0: the RAM, the CPUs and their
//! spin-table release addresses, the boot arguments. When x0 holds no usable tree (QEMU
//! without `-dtb` passes an ATAG list at 0x100) the board says why and builds a tree of safe
//! defaults itself (948 MiB of RAM, four CPUs on the firmware's spin table at 0xd8..0xf0, the
//! command line from the ATAGs), so the kernel boots the same way in both cases.
//!
//! `board_main` first routes the PL011 to the header pins (GPIO14/15 to ALT0; the firmware
//! gives them to the mini UART and the PL011 to Bluetooth) and programs 115200 8N1, then
//! prints its first line, `rpi4: kernel8.img started; device tree address x0 = ...`, before it
//! touches the tree: every later message, including a refusal, reaches the serial console, and
//! a board that prints nothing at all has not run this far (`docs/rpi4.md`, first boot). The
//! entry assembly, the EL2 -> EL1 drop, the GIC glue, the spin-table release and the UART
//! driver live in `board-common`; this file is the wiring.
//!
//! Leaving the machine: semihosting only when the command line says `exit=semihosting` (as
//! `cargo xtask` does under QEMU); on the board the `hlt` would trap, so it reports the status
//! and parks the CPU instead. The board reads that word itself, from the tree or the ATAGs, so
//! that even an exit before the MMU is on (the kernel has not parsed anything yet) knows.

#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod board {
    use board_common::gic::{Gic, GicConfig};
    use board_common::semihosting;
    use board_common::spin_table;
    use board_common::uart::Pl011;
    use core::cell::UnsafeCell;
    use core::fmt::Write;
    use core::sync::atomic::{AtomicBool, Ordering};
    use kernel::bootinfo::find_bootarg;
    use kernel::devtree;
    use kernel::platform::{CpuStartError, PhysRange, Platform};
    use rpi4::{NoTree, ReleaseAddress, layout};

    /// The Raspberry Pi 4.
    struct Rpi4 {
        uart: Pl011,
        gic: Gic,
    }

    impl Platform for Rpi4 {
        fn name(&self) -> &'static str {
            "rpi4"
        }

        fn console_write(&self, bytes: &[u8]) {
            self.uart.write(bytes);
        }

        fn device_ranges(&self) -> &[PhysRange] {
            &layout::DEVICES
        }

        fn reserved_ranges(&self) -> &[PhysRange] {
            core::slice::from_ref(&layout::FIRMWARE_RESERVED)
        }

        board_common::gic_platform_methods!(gic);

        fn timer_irq(&self) -> u32 {
            layout::TIMER_IRQ
        }

        fn start_cpu(&self, index: usize, mpidr: u64, context: u64) -> Result<(), CpuStartError> {
            let node = kernel::boot::system_info()
                .cpus()
                .get(index)
                .ok_or(CpuStartError::Unsupported)?;
            let release = rpi4::release_address(node).map_err(|_| CpuStartError::Unsupported)?;
            // SAFETY: the address is the CPU's release address from the device tree or the
            // firmware's default for this CPU; it lies in the reserved low RAM that only the
            // firmware's spin loop reads, and `context` is the kernel's `SecondaryBoot`.
            unsafe { spin_table::release(mpidr, release.addr(), context) }
        }

        fn console_rx_irq(&self) -> Option<u32> {
            Some(layout::UART0_IRQ)
        }

        fn console_rx_enable(&self, on: bool) {
            self.uart.rx_interrupts(on);
        }

        fn console_read(&self) -> Option<u8> {
            self.uart.read_byte()
        }

        fn power_off(&self) -> ! {
            // The firmware halts when it finds partition 63 in PM_RSTS after the reset.
            watchdog_reset(63)
        }

        fn reboot(&self) -> ! {
            watchdog_reset(0)
        }

        fn exit(&self, code: i32) -> ! {
            if SEMIHOSTING_EXIT.load(Ordering::Relaxed) {
                semihosting::exit(code);
            }
            let mut uart = self.uart;
            let _ = write!(
                uart,
                "rpi4: exit status {code}; halting this CPU (no semihosting without \
                 exit=semihosting on the command line)\r\n"
            );
            loop {
                kernel::arch::aarch64::wait_for_interrupt();
            }
        }
    }

    /// Resets the SoC through the power manager's watchdog (`rpi4::watchdog_reset`) and waits
    /// for it. Under QEMU (`-no-reboot`) the emulator exits.
    fn watchdog_reset(partition: u32) -> ! {
        // SAFETY: the BCM2711's power manager is at PM_BASE (mapped as a device range); its
        // registers are only reached through volatile accesses, and the writes only set the
        // reset partition and start the watchdog, which ends the machine as asked.
        let pm = unsafe { &*(layout::PM_BASE as *const rpi4::PmRegisters) };
        rpi4::watchdog_reset(pm, partition);
        loop {
            kernel::arch::aarch64::wait_for_interrupt();
        }
    }

    /// The board object: a constant, so that building it needs no lock or atomic while the
    /// MMU is off (exclusives are not reliable then on the real SoC).
    static PLATFORM: Rpi4 = Rpi4 {
        // SAFETY: UART0 of the BCM2711, mapped as a device range by the kernel.
        uart: unsafe { Pl011::new(layout::UART0_BASE) },
        // SAFETY: the GIC-400 of the BCM2711, mapped as device ranges before `irq_init`;
        // nothing else uses it.
        gic: unsafe {
            Gic::new(GicConfig::V2 {
                gicd: layout::GICD_BASE,
                gicc: layout::GICC_BASE,
            })
        },
    };

    /// Whether the command line says `exit=semihosting`: set by `board_main` (a plain store,
    /// before the kernel runs) from the tree's or the ATAGs' command line.
    static SEMIHOSTING_EXIT: AtomicBool = AtomicBool::new(false);

    /// Notes whether the kernel command line `bootargs` asks to leave through semihosting.
    fn note_exit_method(bootargs: &str) {
        SEMIHOSTING_EXIT.store(
            find_bootarg(bootargs, "exit") == Some("semihosting"),
            Ordering::Relaxed,
        );
    }

    /// Room for the built-in device tree (`lib.rs` tests that it fits with the longest boot
    /// arguments the kernel keeps).
    const TREE_CAPACITY: usize = 2048;

    /// The buffer the built-in device tree is written to.
    #[repr(C, align(8))]
    struct TreeBuffer(UnsafeCell<[u8; TREE_CAPACITY]>);

    // SAFETY: written only by the boot CPU in `board_main`, before any other CPU runs;
    // read-only afterwards.
    unsafe impl Sync for TreeBuffer {}

    static DEFAULT_TREE: TreeBuffer = TreeBuffer(UnsafeCell::new([0; TREE_CAPACITY]));

    /// Routes the PL011 to GPIO14/15 (header pins 8 and 10) and programs 115200 8N1 from the
    /// firmware's 48 MHz UART clock.
    fn console_on_header_pins() -> Pl011 {
        // SAFETY: the BCM2711's GPIO block is at GPIO_BASE, for the whole run (MMU off: device
        // memory); its registers are only reached through volatile accesses, and only this
        // CPU touches them now.
        let gpio = unsafe { &*(layout::GPIO_BASE as *const rpi4::GpioRegisters) };
        // Only GPIO14/15's fields change, which nothing else uses.
        rpi4::route_uart0(gpio);
        let uart = PLATFORM.uart;
        // The divisors for 115200 at 48 MHz are in range: this cannot fail.
        let _ = uart.enable(layout::BAUD, layout::UART_CLOCK_HZ);
        uart
    }

    /// The device tree at `x0`, checked as the kernel will read it.
    fn firmware_tree(x0: u64) -> Result<&'static [u8], NoTree> {
        rpi4::check_address(x0)?;
        // SAFETY: `check_address` bounded x0 to RAM every Pi 4 has, where 40 bytes can be read
        // (MMU off: every address reads memory or a device).
        let header = unsafe { core::slice::from_raw_parts(x0 as *const u8, 40) };
        let size = rpi4::check_header(x0, header)?;
        // SAFETY: `check_header` checked that the tree's claimed size stays inside that RAM;
        // the firmware handed the tree over (the kernel reserves it) and only this CPU runs.
        let tree = unsafe { core::slice::from_raw_parts_mut(x0 as *mut u8, size) };
        let (info, nops) = rpi4::prepare_tree(x0, tree)?;
        note_exit_method(info.bootargs());
        let mut uart = PLATFORM.uart;
        let _ = write!(
            uart,
            "rpi4: device tree at {x0:#x}, {size} bytes ({nops} NOP tokens removed)\r\n"
        );
        Ok(tree)
    }

    /// The kernel command line of an ATAG list at `x0` (QEMU without `-dtb`), or "".
    fn atag_bootargs(x0: u64) -> &'static str {
        const ATAG_WINDOW: u64 = 4096;
        if rpi4::check_address(x0).is_err() || x0 + ATAG_WINDOW > layout::LOAD_ADDRESS {
            return "";
        }
        // SAFETY: x0 is in the reserved RAM below the image (checked above), readable with the
        // MMU off and never written by the kernel.
        let atags = unsafe { core::slice::from_raw_parts(x0 as *const u8, ATAG_WINDOW as usize) };
        rpi4::atag_cmdline(atags).unwrap_or("")
    }

    /// Builds the built-in device tree (see the module documentation).
    fn default_tree(uart: &mut Pl011, x0: u64) -> &'static [u8] {
        let bootargs = atag_bootargs(x0);
        note_exit_method(bootargs);
        // SAFETY: only the boot CPU runs, once (see `TreeBuffer`).
        let buf = unsafe { &mut *DEFAULT_TREE.0.get() };
        let size = match rpi4::build_default_tree(buf, bootargs) {
            Ok(size) => size,
            Err(_) => {
                // Boot arguments too long for the buffer: drop them rather than fail.
                let _ = write!(uart, "rpi4: boot arguments too long, ignored\r\n");
                rpi4::build_default_tree(buf, "").unwrap_or(0)
            }
        };
        let _ = write!(
            uart,
            "rpi4: using built-in defaults: {} MiB RAM at 0, {} CPUs on the spin table at \
             {:#x}..{:#x}\r\n",
            layout::DEFAULT_RAM.size >> 20,
            layout::CPUS,
            layout::SPIN_TABLE_BASE,
            layout::SPIN_TABLE_BASE + 8 * (layout::CPUS as u64 - 1)
        );
        &buf[..size]
    }

    /// Notes the secondary CPUs of a firmware tree that have no `cpu-release-addr` or cannot be
    /// started.
    fn report_release_addresses(uart: &mut Pl011, tree: &[u8]) {
        let Ok(info) = devtree::parse(tree, 0) else {
            return;
        };
        // The boot CPU (first) is running already: only the others are released.
        for cpu in info.cpus().iter().skip(1) {
            match rpi4::release_address(cpu) {
                Ok(ReleaseAddress::FromTree(_)) => {}
                Ok(ReleaseAddress::Default(addr)) => {
                    let _ = write!(
                        uart,
                        "rpi4: cpu MPIDR {:#x} has no cpu-release-addr in the device tree; \
                         using the firmware's {addr:#x}\r\n",
                        cpu.mpidr
                    );
                }
                Err(why) => {
                    let _ = write!(
                        uart,
                        "rpi4: cpu MPIDR {:#x} cannot be started: {why:?}\r\n",
                        cpu.mpidr
                    );
                }
            }
        }
    }

    /// Called by the entry assembly on the boot CPU, at EL1 with the MMU off.
    #[unsafe(no_mangle)]
    extern "C" fn board_main(x0: u64) -> ! {
        kernel::boot::mark(kernel::boot::BootPhase::Entry);
        let mut uart = console_on_header_pins();
        // The first words, before anything that reads the tree can fail.
        let _ = write!(
            uart,
            "\r\nrpi4: kernel8.img started; device tree address x0 = {x0:#x}\r\n"
        );
        let tree = match firmware_tree(x0) {
            Ok(tree) => {
                report_release_addresses(&mut uart, tree);
                tree
            }
            Err(why) => {
                let _ = write!(uart, "rpi4: no usable device tree: {why}\r\n");
                default_tree(&mut uart, x0)
            }
        };
        kernel::boot::kernel_main(&PLATFORM, tree)
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("rpi4 is a kernel image: build and run it with `cargo xtask qemu --board rpi4`");
}
