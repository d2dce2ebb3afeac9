//! The QEMU `virt` board.
//!
//! One image for every configuration of the machine: the GIC version and addresses, the PSCI
//! conduit, the UART, the timer interrupt, the memory and the CPUs all come from the device
//! tree at boot. `board_main` reads them, builds the [`Platform`] object and hands over to the
//! kernel. The entry assembly, GIC glue, PSCI and UART code live in `board-common`.

#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod board {
    use board_common::gic::{Gic, GicConfig};
    use board_common::irq;
    use board_common::psci::Conduit;
    use board_common::semihosting;
    use board_common::uart::Pl011;
    use core::cell::UnsafeCell;
    use core::fmt::Write;
    use core::mem::MaybeUninit;
    use kernel::devtree::{self, DeviceTree, DtbError};
    use kernel::platform::{CpuStartError, PhysRange, Platform};

    /// Where QEMU puts the device tree for an ELF kernel (it passes x0 = 0 then).
    const DTB_FALLBACK: u64 = 0x4000_0000;
    /// QEMU virt's PL011, used only to report a device tree that cannot be read.
    const UART_FALLBACK: usize = 0x0900_0000;
    /// EL1 physical timer PPI, when the tree has no timer node.
    const TIMER_IRQ_FALLBACK: u32 = 30;

    /// The QEMU virt machine as the device tree describes it.
    struct Virt {
        uart: Pl011,
        gic: Gic,
        psci: Option<Conduit>,
        timer_irq: u32,
        /// The PL011's interrupt (an SPI), if the tree gives one.
        uart_irq: Option<u32>,
        devices: [PhysRange; 5],
        device_count: usize,
    }

    impl Platform for Virt {
        fn name(&self) -> &'static str {
            "qemu-virt"
        }

        fn console_write(&self, bytes: &[u8]) {
            self.uart.write(bytes);
        }

        fn device_ranges(&self) -> &[PhysRange] {
            &self.devices[..self.device_count]
        }

        board_common::gic_platform_methods!(gic);

        fn timer_irq(&self) -> u32 {
            self.timer_irq
        }

        fn start_cpu(&self, _index: usize, mpidr: u64, context: u64) -> Result<(), CpuStartError> {
            let conduit = self.psci.ok_or(CpuStartError::Unsupported)?;
            conduit.cpu_on(
                mpidr,
                board_common::entry::secondary_entry_address(),
                context,
            )
        }

        fn console_rx_irq(&self) -> Option<u32> {
            self.uart_irq
        }

        fn console_rx_enable(&self, on: bool) {
            self.uart.rx_interrupts(on);
        }

        fn console_read(&self) -> Option<u8> {
            self.uart.read_byte()
        }

        fn power_off(&self) -> ! {
            if let Some(conduit) = self.psci {
                conduit.system_off();
            }
            self.exit(0)
        }

        fn reboot(&self) -> ! {
            if let Some(conduit) = self.psci {
                conduit.system_reset();
            }
            self.exit(0)
        }

        fn exit(&self, code: i32) -> ! {
            semihosting::exit(code);
            if let Some(conduit) = self.psci {
                conduit.system_off();
            }
            loop {
                kernel::arch::aarch64::wait_for_interrupt();
            }
        }
    }

    /// The platform object, written once by `board_main` on the boot CPU before anything else
    /// runs. Not a `spin::Once`: that needs an atomic read-modify-write, and with the MMU still
    /// off exclusives are not reliable on real hardware (see `kernel::boot::kernel_main`).
    struct PlatformSlot(UnsafeCell<MaybeUninit<Virt>>);

    // SAFETY: written once by the boot CPU before any other CPU runs or any reference to the
    // contents exists; read-only (through `&'static Virt`) afterwards.
    unsafe impl Sync for PlatformSlot {}

    static PLATFORM: PlatformSlot = PlatformSlot(UnsafeCell::new(MaybeUninit::uninit()));

    /// Reports, in one line on QEMU's UART, why the board cannot boot, and leaves QEMU with
    /// status 1.
    fn fail(why: &dyn core::fmt::Display) -> ! {
        // SAFETY: QEMU virt's PL011 is at this address; the MMU is still off.
        let mut uart = unsafe { Pl011::new(UART_FALLBACK) };
        let _ = write!(uart, "qemu-virt: cannot boot: {why}\r\n");
        semihosting::exit(1);
        loop {
            kernel::arch::aarch64::wait_for_interrupt();
        }
    }

    /// The device tree at `addr`, after checking its header.
    fn locate_dtb(x0: u64) -> Result<&'static [u8], DtbError> {
        let addr = if x0 != 0 { x0 } else { DTB_FALLBACK };
        // SAFETY: with the MMU off every address reads RAM or a device; `addr` is QEMU's
        // device-tree address (x0 or the start of RAM), where at least 40 bytes of RAM exist.
        let header = unsafe { core::slice::from_raw_parts(addr as *const u8, 40) };
        let size = devtree::total_size(header)?;
        // SAFETY: the header says the tree is `size` bytes long and `total_size` bounded it;
        // QEMU wrote that much at `addr`, and the kernel never frees or reuses it (reserved).
        Ok(unsafe { core::slice::from_raw_parts(addr as *const u8, size) })
    }

    fn page_range(r: PhysRange) -> PhysRange {
        PhysRange {
            start: r.start,
            size: r.size.max(0x1000),
        }
    }

    /// What the board takes from the tree, every value checked: the GIC, the UART, PSCI, the
    /// timer PPI and the devices to map. Any error names the node and the rule. (RAM and the
    /// CPUs are the kernel's parse; the GICv3 redistributor count comes from it.)
    fn read_tree(tree: &DeviceTree<'static>) -> Result<Virt, DtbError> {
        let mut devices = [PhysRange::default(); 5];
        let mut device_count = 0;
        let mut add = |r: PhysRange| {
            if device_count < devices.len() {
                devices[device_count] = page_range(r);
                device_count += 1;
            }
        };

        // One walk for either GIC (each lookup walks the tree from its start).
        let gic_config = match tree.find_compatible(&[
            "arm,gic-v3",
            "arm,cortex-a15-gic",
            "arm,gic-400",
            "arm,cortex-a9-gic",
        ])? {
            Some(("arm,gic-v3", gic)) => {
                let (gicd, gicr) = (gic.reg(0, 2)?, gic.reg(1, 2)?);
                let frame = irq::GICV3_REDISTRIBUTOR_STRIDE as u64;
                if gicr.size < frame {
                    return Err(gic.too_small(gicr, frame));
                }
                add(gicd);
                add(gicr);
                GicConfig::V3 {
                    gicd: gicd.start as usize,
                    gicr: gicr.start as usize,
                    gicr_size: gicr.size as usize,
                }
            }
            Some((_, gic)) => {
                let (gicd, gicc) = (gic.reg(0, 2)?, gic.reg(1, 2)?);
                add(gicd);
                add(gicc);
                GicConfig::V2 {
                    gicd: gicd.start as usize,
                    gicc: gicc.start as usize,
                }
            }
            None => fail(&"device tree: no GICv2 or GICv3 node"),
        };

        // Interrupt specifier: three cells (type, number, flags); type 0 is an SPI.
        let (uart_base, uart_irq) = match tree.find_compatible(&["arm,pl011"])? {
            Some((_, uart)) if uart.reg_count > 0 => {
                let irq = if uart.interrupt_cells >= 3 {
                    let (kind, number) = (uart.interrupts[0], uart.interrupts[1]);
                    Some(irq::intid(kind, number).ok_or_else(|| uart.bad_interrupt(kind, number))?)
                } else {
                    None
                };
                (uart.regs[0], irq)
            }
            _ => (
                PhysRange {
                    start: UART_FALLBACK as u64,
                    size: 0x1000,
                },
                None,
            ),
        };
        add(uart_base);
        if let Some(window) = virtio_window(tree)? {
            add(window);
        }

        let mut psci = None;
        for c in ["arm,psci-1.0", "arm,psci-0.2", "arm,psci"] {
            if let Some(method) = tree.compatible_property(c, "method")? {
                psci = Conduit::from_method(method);
                break;
            }
        }

        // Timer specifiers: secure, non-secure physical, virtual, hypervisor; three cells each
        // (type, number, flags). The non-secure physical timer is PPI `number`, INTID 16 + it.
        let timer_irq = match tree.find_compatible(&["arm,armv8-timer", "arm,armv7-timer"])? {
            Some((_, t)) if t.interrupt_cells < 6 => return Err(t.too_few_interrupt_cells()),
            Some((_, t)) => {
                let (kind, number) = (t.interrupts[3], t.interrupts[4]);
                irq::ppi_intid(kind, number).ok_or_else(|| t.bad_interrupt(kind, number))?
            }
            None => TIMER_IRQ_FALLBACK,
        };

        Ok(Virt {
            // SAFETY: the address is the PL011 the device tree names, mapped as a device range.
            uart: unsafe { Pl011::new(uart_base.start as usize) },
            // SAFETY: the GIC addresses come from the device tree and are mapped as device
            // ranges before the kernel calls `irq_init`; nothing else uses them.
            gic: unsafe { Gic::new(gic_config) },
            psci,
            timer_irq,
            uart_irq,
            devices,
            device_count,
        })
    }

    /// The pages that hold every enabled `virtio,mmio` node's registers (QEMU virt: 32 slots of
    /// 0x200 bytes from 0x0a00_0000), to be mapped as one device range; `None` without such
    /// nodes. The kernel's driver reads the slots themselves from the tree (`drivers::virtio`).
    fn virtio_window(tree: &DeviceTree<'static>) -> Result<Option<PhysRange>, DtbError> {
        let (mut low, mut high) = (u64::MAX, 0u64);
        tree.walk(|node| {
            if node.prop_str("status") != Some("disabled")
                && node.prop_strings("compatible").any(|c| c == "virtio,mmio")
                && let Some(reg) = node.reg()?
            {
                for (start, size) in reg {
                    let r = devtree::checked_range(node.path(), start, size)?;
                    low = low.min(r.start);
                    high = high.max(r.end());
                }
            }
            Ok(devtree::Walk::Continue)
        })?;
        Ok((low < high).then(|| {
            let start = low & !0xfff;
            PhysRange {
                start,
                size: ((high + 0xfff) & !0xfff) - start,
            }
        }))
    }

    /// Called by the entry assembly on the boot CPU with the MMU off.
    #[unsafe(no_mangle)]
    extern "C" fn board_main(x0: u64) -> ! {
        kernel::boot::mark(kernel::boot::BootPhase::Entry);
        let dtb = match locate_dtb(x0) {
            Ok(dtb) => dtb,
            Err(e) => fail(&e),
        };
        // The whole tree is checked once, here; every value is checked as it is read.
        let virt = match DeviceTree::new(dtb).and_then(|tree| read_tree(&tree)) {
            Ok(virt) => virt,
            Err(e) => fail(&e),
        };
        // SAFETY: `board_main` runs once, on the boot CPU, before the other CPUs start; nothing
        // has a reference to the slot yet, and after this write it is only read.
        let platform: &'static Virt = unsafe { (*PLATFORM.0.get()).write(virt) };
        kernel::boot::kernel_main(platform, dtb)
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("qemu-virt is a kernel image: build and run it with `cargo xtask qemu`");
}
