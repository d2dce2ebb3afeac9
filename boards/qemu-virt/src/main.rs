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
    use board_common::psci::Conduit;
    use board_common::semihosting;
    use board_common::uart::Pl011;
    use core::cell::UnsafeCell;
    use core::fmt::Write;
    use core::mem::MaybeUninit;
    use kernel::devtree::{self, Device, DtbError};
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
        devices: [PhysRange; 4],
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

    /// Reports a device tree the board cannot use and leaves QEMU with status 1.
    fn fail(what: &str, err: &dyn core::fmt::Display) -> ! {
        // SAFETY: QEMU virt's PL011 is at this address; the MMU is still off.
        let mut uart = unsafe { Pl011::new(UART_FALLBACK) };
        let _ = write!(uart, "qemu-virt: cannot boot: {what}: {err}\r\n");
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

    fn find(dtb: &'static [u8], compatible: &[&str]) -> Option<(&'static str, Device)> {
        match devtree::find_compatible(dtb, compatible) {
            Ok(found) => found,
            Err(e) => fail("reading the device tree", &e),
        }
    }

    fn page_range(r: PhysRange) -> PhysRange {
        PhysRange {
            start: r.start,
            size: r.size.max(0x1000),
        }
    }

    /// Called by the entry assembly on the boot CPU with the MMU off.
    #[unsafe(no_mangle)]
    extern "C" fn board_main(x0: u64) -> ! {
        kernel::boot::mark(kernel::boot::BootPhase::Entry);
        let dtb = match locate_dtb(x0) {
            Ok(dtb) => dtb,
            Err(e) => fail("no usable device tree", &e),
        };
        let mut devices = [PhysRange::default(); 4];
        let mut device_count = 0;
        let mut add = |r: PhysRange| {
            if device_count < devices.len() {
                devices[device_count] = page_range(r);
                device_count += 1;
            }
        };

        // One walk for either GIC: each lookup walks the tree from the start (about 0.2 M
        // guest instructions for QEMU's tree), so the board makes as few as it can.
        let gic_config = match find(
            dtb,
            &[
                "arm,gic-v3",
                "arm,cortex-a15-gic",
                "arm,gic-400",
                "arm,cortex-a9-gic",
            ],
        ) {
            Some((compatible, gic)) if gic.reg_count >= 2 => {
                add(gic.regs[0]);
                add(gic.regs[1]);
                if compatible == "arm,gic-v3" {
                    GicConfig::V3 {
                        gicd: gic.regs[0].start as usize,
                        gicr: gic.regs[1].start as usize,
                    }
                } else {
                    GicConfig::V2 {
                        gicd: gic.regs[0].start as usize,
                        gicc: gic.regs[1].start as usize,
                    }
                }
            }
            Some(_) => fail(
                "device tree",
                &"the GIC node has fewer than two reg entries",
            ),
            None => fail("device tree", &"no GICv2 or GICv3 node"),
        };

        let uart_base = match find(dtb, &["arm,pl011"]) {
            Some((_, uart)) if uart.reg_count > 0 => uart.regs[0],
            _ => PhysRange {
                start: UART_FALLBACK as u64,
                size: 0x1000,
            },
        };
        add(uart_base);

        let psci = ["arm,psci-1.0", "arm,psci-0.2", "arm,psci"]
            .iter()
            .find_map(|c| {
                devtree::compatible_property(dtb, c, "method")
                    .ok()
                    .flatten()
            })
            .and_then(Conduit::from_method);

        // Timer specifiers: secure, non-secure physical, virtual, hypervisor; three cells each
        // (type, number, flags). The non-secure physical timer is PPI `number`, INTID 16 + it.
        let timer_irq = match find(dtb, &["arm,armv8-timer", "arm,armv7-timer"]) {
            Some((_, t)) if t.interrupt_cells >= 6 => 16 + t.interrupts[4],
            _ => TIMER_IRQ_FALLBACK,
        };

        let virt = Virt {
            // SAFETY: the address is the PL011 the device tree names, mapped as a device range.
            uart: unsafe { Pl011::new(uart_base.start as usize) },
            // SAFETY: the GIC addresses come from the device tree and are mapped as device
            // ranges before the kernel calls `irq_init`; nothing else uses them.
            gic: unsafe { Gic::new(gic_config) },
            psci,
            timer_irq,
            devices,
            device_count,
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
