//! Starting CPUs through a firmware spin table (`enable-method = "spin-table"`), as on the
//! Raspberry Pi: each waiting CPU loops on `wfe` and reads its own 64-bit *release address*
//! (`cpu-release-addr` in the device tree); once that holds a non-zero value the CPU jumps
//! there, with the MMU and caches off, at the exception level it was left in (EL2 on the Pi),
//! and with x0 = 0.
//!
//! The kernel's secondary path needs x0 = its `SecondaryBoot` context, so the context travels
//! through a per-CPU *mailbox* instead: [`release`] stores the context in the mailbox slot of
//! the CPU (indexed by MPIDR Aff0), cleans it to the point of coherency, then writes the
//! address of `board_spin_table_entry` to the release address, cleans that too and sends an
//! event. `board_spin_table_entry` (below) loads its slot into x0, invalidates its private data
//! cache (level 1) and continues at `board_secondary_entry` like a PSCI-started CPU.
//!
//! The starting CPU runs with the MMU off, where exclusives and barriers to cacheable memory
//! behave differently: it only does plain loads of memory the boot CPU cleaned to the PoC.

/// The error [`release`] reports for a CPU released before (PSCI's ALREADY_ON, -4).
pub const ALREADY_RELEASED: i64 = -4;

/// Mailbox slots: CPUs whose MPIDR has Aff0 below this (and Aff1..Aff3 zero) can be started.
pub const MAILBOX_SLOTS: usize = 16;

/// The mailbox slot of the CPU with affinity `mpidr`, if it has one: single-cluster machines
/// only (Aff1, Aff2 and Aff3 zero), Aff0 below [`MAILBOX_SLOTS`]. Bit 31 (RES1) and the MT
/// and U bits are ignored.
pub fn mailbox_slot(mpidr: u64) -> Option<usize> {
    let affinity = mpidr & 0xff_00ff_ffff;
    let aff0 = (affinity & 0xff) as usize;
    (affinity >> 8 == 0 && aff0 < MAILBOX_SLOTS).then_some(aff0)
}

#[cfg(target_arch = "aarch64")]
pub use imp::*;

#[cfg(target_arch = "aarch64")]
mod imp {
    use super::{ALREADY_RELEASED, MAILBOX_SLOTS, mailbox_slot};
    use core::arch::global_asm;
    use core::sync::atomic::{AtomicU64, Ordering};
    use kernel::arch::aarch64::{clean_dcache_range, send_event};
    use kernel::platform::CpuStartError;

    /// Per-CPU context for `board_spin_table_entry`, by mailbox slot. Read by the starting CPU
    /// with plain loads (MMU off), written by the boot CPU before the release.
    #[unsafe(no_mangle)]
    static BOARD_SPIN_MAILBOX: [AtomicU64; MAILBOX_SLOTS] =
        [const { AtomicU64::new(0) }; MAILBOX_SLOTS];

    // `board_spin_table_entry`: entered from the firmware's spin loop, MMU and caches off, at
    // EL2 or EL1, any x0. Reads MPIDR_EL1.Aff0, and unless Aff1..Aff3 are zero, Aff0 is below
    // the slot count and the slot is non-zero, waits (`wfe`) and looks again. Otherwise puts
    // the slot's value in x0, invalidates its level-1 data cache and branches to
    // `board_secondary_entry` (which keeps x0). Uses x0-x11 and x19; no stack.
    global_asm!(
        r#"
    .section .text.boot, "ax"
    .global board_spin_table_entry
board_spin_table_entry:
    mrs     x19, mpidr_el1
    ubfx    x1, x19, #8, #16
    cbnz    x1, 2f
    ubfx    x1, x19, #32, #8
    cbnz    x1, 2f
    and     x19, x19, #0xff
    cmp     x19, #{slots}
    b.hs    2f
    adrp    x1, BOARD_SPIN_MAILBOX
    add     x1, x1, :lo12:BOARD_SPIN_MAILBOX
    ldr     x19, [x1, x19, lsl #3]
    cbz     x19, 2f
    mov     x0, #1
    bl      dcache_invalidate_set_way
    mov     x0, x19
    b       board_secondary_entry
2:  wfe
    b       board_spin_table_entry
"#,
        slots = const MAILBOX_SLOTS,
    );

    unsafe extern "C" {
        /// The spin-table entry above; its address is what [`release`] writes.
        fn board_spin_table_entry() -> !;
    }

    /// The physical address of `board_spin_table_entry` (the kernel runs identity mapped).
    pub fn spin_table_entry_address() -> u64 {
        board_spin_table_entry as *const () as u64
    }

    /// Releases the CPU with affinity `mpidr`, which waits on the spin table at
    /// `release_addr`, so that it enters the kernel's secondary path with x0 = `context`.
    ///
    /// A CPU leaves the spin table for good, so each can be released once: a second release
    /// fails with `CpuStartError::Firmware(`[`ALREADY_RELEASED`]`)` and writes nothing. Fails
    /// with [`CpuStartError::Unsupported`] when the CPU has no mailbox slot ([`mailbox_slot`]),
    /// `context` is 0, or the release address is zero or not 8-byte aligned.
    ///
    /// # Safety
    ///
    /// `release_addr` must be the CPU's release address from the firmware (mapped, and used
    /// by nothing but the firmware's spin loop), and `context` what the kernel's secondary path
    /// expects in x0.
    pub unsafe fn release(
        mpidr: u64,
        release_addr: u64,
        context: u64,
    ) -> Result<(), CpuStartError> {
        let slot = mailbox_slot(mpidr).ok_or(CpuStartError::Unsupported)?;
        if release_addr == 0 || !release_addr.is_multiple_of(8) || context == 0 {
            return Err(CpuStartError::Unsupported);
        }
        let mailbox = &BOARD_SPIN_MAILBOX[slot];
        // The MMU is on by now (the kernel starts CPUs after enabling it): exclusives work.
        mailbox
            .compare_exchange(0, context, Ordering::Relaxed, Ordering::Relaxed)
            .map_err(|_| CpuStartError::Firmware(ALREADY_RELEASED))?;
        // The CPU reads its slot with caches off: push it to the point of coherency first
        // (`clean_dcache_range` ends with `dsb sy`, ordering it before the release below).
        clean_dcache_range(mailbox.as_ptr() as u64, 8);
        // SAFETY: the caller promised this is the CPU's release address, a mapped u64 that
        // only the firmware's spin loop reads.
        unsafe { (release_addr as *mut u64).write_volatile(spin_table_entry_address()) };
        clean_dcache_range(release_addr, 8);
        send_event();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_cluster_cpus_get_their_aff0_slot() {
        assert_eq!(mailbox_slot(0), Some(0));
        assert_eq!(mailbox_slot(3), Some(3));
        // QEMU and the Pi report MPIDR with bit 31 (RES1) set.
        assert_eq!(mailbox_slot(0x8000_0002), Some(2));
        assert_eq!(mailbox_slot(15), Some(15));
    }

    #[test]
    fn cpus_without_a_slot_are_refused() {
        assert_eq!(mailbox_slot(16), None);
        assert_eq!(mailbox_slot(0x100), None, "Aff1 = 1");
        assert_eq!(mailbox_slot(0x1_0000), None, "Aff2 = 1");
        assert_eq!(mailbox_slot(0x1_0000_0000), None, "Aff3 = 1");
    }
}
