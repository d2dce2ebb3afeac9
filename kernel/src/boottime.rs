//! When each step of the boot happened: the counter at the end of each boot phase on the boot
//! CPU, and when each other CPU was asked to start and came online. `boot` records them; the
//! bench image prints them (`boot_phase_*`, `boot_all_cpus_online`). A leaf record, so readers
//! need not depend on the boot sequence itself.

use crate::arch::aarch64 as arch;
use crate::cpu::{self, cpus};
use core::sync::atomic::{AtomicU64, Ordering};

/// Counter value at which each CPU reported online (for `boot_all_cpus_online`).
static ONLINE_AT: [AtomicU64; cpu::MAXCPUS] = [const { AtomicU64::new(0) }; cpu::MAXCPUS];

/// Counter value at which the boot CPU asked the platform to start each CPU.
static START_AT: [AtomicU64; cpu::MAXCPUS] = [const { AtomicU64::new(0) }; cpu::MAXCPUS];

/// The steps of the boot CPU's part of the boot, in order. [`mark`] records the counter at the
/// end of each; the bench image prints the differences (`boot_phase_*`), so a change in
/// `boot_all_cpus_online` can be traced to a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootPhase {
    /// QEMU's start to the board's `board_main`: QEMU's boot stub, the data-cache invalidation
    /// by set/way, EL2 to EL1 and zeroing `.bss` (the board marks it).
    Entry,
    /// `board_main` up to `kernel_main`: the board reads the device tree for its devices.
    Board,
    /// The kernel's parse of the device tree (memory, CPUs, reserved ranges, bootargs).
    DeviceTree,
    /// The thread-stack region, the page tables and turning the MMU on.
    PageTables,
    /// Platform registered, CPU 0 attached, the banner.
    Console,
    /// The heap given the rest of RAM, the thread-stack free list.
    Heap,
    /// The other CPUs attached, the DPCPU copies and their checks, the exception stacks.
    PerCpu,
    /// Interrupt controller, IPIs and clock tick on CPU 0, the scheduler and kthread(9) set up.
    Interrupts,
}

impl BootPhase {
    /// Every phase, in boot order.
    pub const ALL: [BootPhase; 8] = [
        BootPhase::Entry,
        BootPhase::Board,
        BootPhase::DeviceTree,
        BootPhase::PageTables,
        BootPhase::Console,
        BootPhase::Heap,
        BootPhase::PerCpu,
        BootPhase::Interrupts,
    ];

    /// The phase's name in `boot_phase_<name>`.
    pub fn name(self) -> &'static str {
        match self {
            BootPhase::Entry => "entry",
            BootPhase::Board => "board",
            BootPhase::DeviceTree => "devtree",
            BootPhase::PageTables => "page_tables",
            BootPhase::Console => "console",
            BootPhase::Heap => "heap",
            BootPhase::PerCpu => "percpu",
            BootPhase::Interrupts => "interrupts",
        }
    }
}

/// Counter value at the end of each [`BootPhase`] (0 if it was not marked).
static PHASE_END: [AtomicU64; BootPhase::ALL.len()] =
    [const { AtomicU64::new(0) }; BootPhase::ALL.len()];

/// Records that `phase` ends now. Boot CPU; a plain store, so it may run with the MMU off.
pub fn mark(phase: BootPhase) {
    PHASE_END[phase as usize].store(arch::counter(), Ordering::Relaxed);
}

/// The counter ticks each marked [`BootPhase`] took, from the end of the previous marked one
/// (or from 0, QEMU's start), in boot order; unmarked phases are left out.
pub fn phase_ticks() -> impl Iterator<Item = (BootPhase, u64)> {
    let mut previous = 0;
    BootPhase::ALL.into_iter().filter_map(move |phase| {
        let end = PHASE_END[phase as usize].load(Ordering::Relaxed);
        if end == 0 {
            return None;
        }
        let ticks = end.saturating_sub(previous);
        previous = end;
        Some((phase, ticks))
    })
}

/// For each CPU the boot CPU started: its index, the counter when its start was requested
/// and the counter when it came online (0 if it never did).
pub fn secondary_ticks() -> impl Iterator<Item = (usize, u64, u64)> {
    cpus().skip(1).map(|ci| {
        let i = ci.index();
        (
            i,
            START_AT[i].load(Ordering::Relaxed),
            ONLINE_AT[i].load(Ordering::Relaxed),
        )
    })
}

/// The counter value at which the last CPU came online.
pub fn all_online_at() -> u64 {
    cpus()
        .map(|ci| ONLINE_AT[ci.index()].load(Ordering::Relaxed))
        .max()
        .unwrap_or(0)
}

/// Records that CPU `index` was asked to start now. Boot CPU.
pub(crate) fn start_requested(index: usize) {
    START_AT[index].store(arch::counter(), Ordering::Relaxed);
}

/// Records that CPU `index` came online now. That CPU, as it comes online.
pub(crate) fn online(index: usize) {
    ONLINE_AT[index].store(arch::counter(), Ordering::Relaxed);
}
