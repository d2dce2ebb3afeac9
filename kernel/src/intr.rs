//! Interrupt dispatch and inter-processor interrupts (IPIs).
//!
//! The flow of one interrupt: the IRQ vector saves a trap frame and calls [`irq_entry`];
//! it acknowledges interrupts at the controller through the platform until none is pending,
//! dispatching each (the timer to `clock`, SGIs to [`ipi_dispatch`], anything else counted as
//! stray), and signals end-of-interrupt for each. Interrupts stay masked while a handler runs;
//! the spl issue adds priority levels and nesting on top of this loop.
//!
//! IPIs are SGIs; each [`Ipi`] kind has its own SGI number (kept within 0-7, since 8-15 are
//! reserved for secure firmware), so a kind needs no message queue: the handler knows what to
//! do from the number alone. Each CPU counts the IPIs it received per kind in its `CpuInfo`.
//! Two sends of the same kind to a CPU before it takes the first arrive as one interrupt (the
//! GIC keeps one pending bit per SGI and CPU); callers that count deliveries wait in between.

use crate::cpu::{CpuState, IPI_KINDS, curcpu};
use crate::platform::{IpiTarget, platform};
use core::sync::atomic::{AtomicU64, Ordering};

/// The kinds of IPI. The discriminant is the SGI number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Ipi {
    /// Does nothing but wake the CPU and count (tests, and kicking a CPU out of WFI).
    Nop = 0,
    /// Stop this CPU for good (sent by the panic path).
    Halt = 1,
    /// Reschedule (the scheduler issue uses it).
    Sched = 2,
    /// Run pending cross-calls (the xcall issue uses it).
    Xcall = 3,
}

impl Ipi {
    /// All kinds, in SGI order.
    pub const ALL: [Ipi; IPI_KINDS] = [Ipi::Nop, Ipi::Halt, Ipi::Sched, Ipi::Xcall];

    /// The IPL the IPI is delivered at (NetBSD: scheduler IPIs at IPL_SCHED, the rest at
    /// IPL_HIGH).
    pub const fn ipl(self) -> u8 {
        match self {
            Ipi::Sched => 6,
            _ => 7,
        }
    }
}

/// Interrupts that arrived with no handler.
static STRAY: AtomicU64 = AtomicU64::new(0);

/// Sends `ipi` to CPU `cpu` (which may be this CPU). Context: any.
pub fn ipi_send(cpu: usize, ipi: Ipi) {
    platform().send_ipi(IpiTarget::Cpu(cpu), ipi as u32);
}

/// Sends `ipi` to every online CPU but this one. Context: any.
pub fn ipi_broadcast(ipi: Ipi) {
    platform().send_ipi(IpiTarget::AllButSelf, ipi as u32);
}

/// Enables the IPI SGIs on this CPU. Boot code calls it once per CPU.
pub fn ipi_init_cpu(cpu: usize) {
    for ipi in Ipi::ALL {
        platform().irq_enable(ipi as u32, Some(cpu), ipi.ipl());
    }
}

/// Handles an IPI of SGI number `sgi` on this CPU.
fn ipi_dispatch(sgi: u32) {
    let ci = curcpu();
    let Some(&ipi) = Ipi::ALL.get(sgi as usize) else {
        STRAY.fetch_add(1, Ordering::Relaxed);
        return;
    };
    ci.ipi_count[ipi as usize].fetch_add(1, Ordering::Relaxed);
    match ipi {
        Ipi::Nop | Ipi::Sched | Ipi::Xcall => {}
        Ipi::Halt => halt_this_cpu(),
    }
}

/// Stops this CPU for good: marks it halted, masks interrupts and waits forever.
pub fn halt_this_cpu() -> ! {
    crate::arch::aarch64::irq_disable();
    curcpu().set_state(CpuState::Halted);
    loop {
        crate::arch::aarch64::wait_for_interrupt();
    }
}

/// Interrupts taken with no handler, since boot.
pub fn stray_count() -> u64 {
    STRAY.load(Ordering::Relaxed)
}

/// Called by the IRQ vector with IRQs masked: handles every pending interrupt.
pub fn irq_entry() {
    let platform = platform();
    let ci = curcpu();
    let timer = platform.timer_irq();
    while let Some(ack) = platform.irq_ack() {
        ci.intr_count.fetch_add(1, Ordering::Relaxed);
        if ack.irq == timer {
            crate::clock::tick();
        } else if ack.irq < 16 {
            ipi_dispatch(ack.irq);
        } else {
            STRAY.fetch_add(1, Ordering::Relaxed);
        }
        platform.irq_eoi(ack);
    }
}
