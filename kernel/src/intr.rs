//! Hardware interrupts: `intr_establish`/`intr_disestablish`, dispatch at the handler's IPL
//! with nesting, deferral of interrupts whose level is blocked, per-CPU per-interrupt
//! statistics, and inter-processor interrupts (IPIs).
//!
//! # The flow of one interrupt
//!
//! The IRQ vector saves a trap frame and calls [`irq_entry`] with IRQs masked. It acknowledges
//! interrupts through the platform until none is pending. For each: if its level is above the
//! CPU's IPL, it raises the IPL to that level, unmasks IRQs (so an interrupt of higher
//! priority can nest; the GIC's running priority holds back the rest), runs the handler, masks
//! IRQs, ends the interrupt (EOI) and restores the IPL. If its level is blocked, it is
//! *deferred*: remembered per CPU and level, left active at the GIC (no EOI) so that nothing
//! of the same or lower priority is signalled meanwhile, and run by `splx` when the level
//! drops (see `crate::spl` for why this is correct). At most one interrupt per level can be
//! deferred at a time, because while it is active no other interrupt of that priority can be
//! signalled. On the way out, soft work made runnable by the handlers runs through the spl
//! lower hook.
//!
//! # IPIs
//!
//! IPIs are SGIs; each [`Ipi`] kind has its own SGI number (within 0-7; 8-15 are reserved for
//! secure firmware), so a kind needs no message queue. Two sends of one kind to a CPU that has
//! not taken the first arrive as one interrupt (one pending bit per SGI and CPU).
//!
//! # Private interrupts on every CPU
//!
//! SGIs and PPIs have a copy per CPU, and on GICv2 only the CPU itself can program its copy.
//! Establishing or disestablishing one therefore bumps a generation number and sends a `Nop`
//! IPI to every other online CPU; each CPU brings its own copies up to date when it takes that
//! IPI (and when it comes online), and the caller waits until every online CPU has.

use crate::cpu::{CpuInfo, CpuState, IPI_KINDS, MAXCPUS, cpus, curcpu};
use crate::platform::{IpiTarget, IrqAck, platform};
use crate::spl::{IPL_HIGH, IPL_SCHED, Ipl, NIPL, PENDING_IN_INTR, splraise, splx};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Interrupt identifiers handled: SGIs 0-15, PPIs 16-31, SPIs 32-1019.
pub const NIRQ: usize = 1020;
/// First shared (SPI) interrupt identifier.
pub const FIRST_SPI: u32 = 32;

/// Flag for [`intr_establish`]: the handler needs no kernel lock (all handlers are run
/// without one today; the flag is recorded for when the kernel lock exists).
pub const INTR_MPSAFE: u32 = 1;

/// A handler: called with its argument at its IPL, in hard interrupt context (no sleeping).
/// Returns whether the interrupt was for it (NetBSD's convention; recorded in the statistics).
pub type IntrHandler = fn(usize) -> bool;

/// Why [`intr_establish`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntrError {
    /// The identifier is not an interrupt the kernel handles (>= [`NIRQ`]).
    BadIrq(u32),
    /// The level is not a hardware level (IPL_VM, IPL_SCHED or IPL_HIGH).
    BadIpl(Ipl),
    /// A handler is already established for this interrupt.
    Busy(u32),
    /// Some online CPU did not take the new setting within the time limit.
    Timeout(usize),
}

/// A handle returned by [`intr_establish`], passed to [`intr_disestablish`].
#[derive(Debug, PartialEq, Eq)]
#[must_use = "keep the handle to pass it to intr_disestablish"]
pub struct IntrHandle {
    irq: u32,
}

impl IntrHandle {
    /// The interrupt identifier.
    pub fn irq(&self) -> u32 {
        self.irq
    }
}

/// One interrupt's handler. `ipl` 0 means none established.
struct Slot {
    ipl: AtomicU32,
    func: AtomicUsize,
    arg: AtomicUsize,
    flags: AtomicU32,
    /// CPUs running the handler right now.
    running: AtomicU32,
    /// Installed at boot by [`init`] (the IPIs, the clock): no `IntrHandle` exists for it, so
    /// it is never disestablished and dispatch skips the `running` handshake.
    permanent: AtomicBool,
    /// The handler's name (`intr_establish_xname`): address and length of a `&'static str`.
    name_ptr: AtomicUsize,
    name_len: AtomicUsize,
}

static HANDLERS: [Slot; NIRQ] = [const {
    Slot {
        ipl: AtomicU32::new(0),
        func: AtomicUsize::new(0),
        arg: AtomicUsize::new(0),
        flags: AtomicU32::new(0),
        running: AtomicU32::new(0),
        permanent: AtomicBool::new(false),
        name_ptr: AtomicUsize::new(0),
        name_len: AtomicUsize::new(0),
    }
}; NIRQ];

/// Serialises establish/disestablish.
static ESTABLISH_LOCK: crate::sync::SpinLock<()> = crate::sync::SpinLock::new(());
/// Generation of the private-interrupt settings; each CPU applies it to its own copies.
static PRIVATE_GEN: AtomicU64 = AtomicU64::new(0);
/// Interrupts that arrived with no handler, all CPUs.
static STRAY: AtomicU64 = AtomicU64::new(0);

crate::dpcpu_define! {
    /// Interrupts taken per identifier on this CPU (`vmstat -i`).
    static INTR_COUNT: [AtomicU64; NIRQ] = [const { AtomicU64::new(0) }; NIRQ];
}
crate::dpcpu_define! {
    /// Deferred interrupt per level: raw acknowledge value + 1, 0 = none.
    static DEFERRED: [AtomicU32; NIPL] = [const { AtomicU32::new(0) }; NIPL];
}
crate::dpcpu_define! {
    /// Interrupt whose handler is running per level: raw acknowledge value + 1, 0 = none.
    static ACTIVE: [AtomicU32; NIPL] = [const { AtomicU32::new(0) }; NIPL];
}
crate::dpcpu_define! {
    /// The private-interrupt generation this CPU has applied.
    static PRIVATE_SEEN: AtomicU64 = AtomicU64::new(0);
}
crate::dpcpu_define! {
    /// The private interrupts (bit = identifier 0-31) this CPU has enabled.
    static PRIVATE_ON: AtomicU32 = AtomicU32::new(0);
}

/// The kinds of IPI. The discriminant is the SGI number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Ipi {
    /// Wakes the CPU, applies private-interrupt changes, and counts (tests use it too).
    Nop = 0,
    /// Stops this CPU for good (sent by the panic path).
    Halt = 1,
    /// Reschedule: a thread made runnable here should preempt the running one.
    Sched = 2,
    /// Soft interrupts scheduled here from another CPU (`softint_schedule_cpu`, and so
    /// xcall's high-priority calls): the handler does nothing, the interrupt's exit runs them.
    Xcall = 3,
}

impl Ipi {
    /// All kinds, in SGI order.
    pub const ALL: [Ipi; IPI_KINDS] = [Ipi::Nop, Ipi::Halt, Ipi::Sched, Ipi::Xcall];

    /// The name its handler is listed under (`intr` in the monitor).
    pub const fn name(self) -> &'static str {
        match self {
            Ipi::Nop => "ipi nop",
            Ipi::Halt => "ipi halt",
            Ipi::Sched => "ipi sched",
            Ipi::Xcall => "ipi xcall",
        }
    }

    /// The level the IPI is delivered at (NetBSD: scheduler IPIs at IPL_SCHED, the rest at
    /// IPL_HIGH).
    pub const fn ipl(self) -> Ipl {
        match self {
            Ipi::Sched => IPL_SCHED,
            _ => IPL_HIGH,
        }
    }
}

/// Sends `ipi` to CPU `cpu` (which may be this CPU). Context: any.
pub fn ipi_send(cpu: usize, ipi: Ipi) {
    crate::trace::event!(crate::trace::Kind::IpiSend, ipi as u64, cpu as u64);
    platform().send_ipi(IpiTarget::Cpu(cpu), ipi as u32);
}

/// Sends `ipi` to every online CPU but this one. Context: any.
pub fn ipi_broadcast(ipi: Ipi) {
    crate::trace::event!(crate::trace::Kind::IpiSend, ipi as u64, u64::MAX);
    platform().send_ipi(IpiTarget::AllButSelf, ipi as u32);
}

fn ipi_handler(kind: usize) -> bool {
    let ci = curcpu();
    crate::trace::event!(crate::trace::Kind::IpiReceive, kind as u64, 0);
    // Only this kind's handler on this CPU writes its count, and it cannot nest in itself
    // (the GIC holds back an active interrupt's priority).
    let n = &ci.ipi_count[kind % IPI_KINDS];
    n.store(n.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    if kind == Ipi::Xcall as usize {
        // The common one first: nothing to do here, the interrupt's exit runs the softints.
        return true;
    }
    match Ipi::ALL[kind] {
        Ipi::Nop => sync_private(),
        Ipi::Halt => halt_this_cpu(),
        // The sender set `resched`; the flag in `ipending` is what makes the next `splx` to
        // IPL_NONE (or the end of a no-preemption window) take the slow path and switch, when
        // this IPI arrives while the CPU is at a raised level.
        Ipi::Sched => {
            ci.ipending
                .fetch_or(crate::sched::PENDING_RESCHED, Ordering::Relaxed);
        }
        Ipi::Xcall => {}
    }
    true
}

fn clock_handler(_: usize) -> bool {
    crate::clock::tick();
    true
}

/// Establishes the kernel's own interrupts: the IPIs and the clock. Boot CPU, before the
/// secondaries start.
pub fn init() {
    for ipi in Ipi::ALL {
        install(
            ipi as u32,
            ipi.ipl(),
            INTR_MPSAFE,
            ipi_handler,
            ipi as usize,
            ipi.name(),
        )
        .expect("IPI SGIs are free at boot");
        HANDLERS[ipi as usize]
            .permanent
            .store(true, Ordering::Release);
    }
    install(
        platform().timer_irq(),
        IPL_SCHED,
        INTR_MPSAFE,
        clock_handler,
        0,
        "clock",
    )
    .expect("the timer PPI is free at boot");
    HANDLERS[platform().timer_irq() as usize]
        .permanent
        .store(true, Ordering::Release);
    crate::sched::set_idle_intr_hook(idle_intr);
}

/// The idle loop's dispatcher: an idle CPU woken from `wfi` with IRQs masked handles what is
/// pending here, as the IRQ vector would (nothing is interrupted: no resume address inside a
/// no-preemption window), without the exception's entry and return.
fn idle_intr() {
    irq_entry(0);
}

/// Per-CPU setup: programs this CPU's copies of the private interrupts. Every CPU, boot CPU
/// included, as it comes up.
pub fn init_cpu() {
    sync_private();
}

/// Records a handler without the cross-CPU step (boot, and the first half of establish).
fn install(
    irq: u32,
    ipl: Ipl,
    flags: u32,
    func: IntrHandler,
    arg: usize,
    name: &'static str,
) -> Result<(), IntrError> {
    let slot = HANDLERS.get(irq as usize).ok_or(IntrError::BadIrq(irq))?;
    if !ipl.is_hardware() {
        return Err(IntrError::BadIpl(ipl));
    }
    if slot.ipl.load(Ordering::Acquire) != 0 {
        return Err(IntrError::Busy(irq));
    }
    slot.func.store(func as usize, Ordering::Relaxed);
    slot.arg.store(arg, Ordering::Relaxed);
    slot.flags.store(flags, Ordering::Relaxed);
    slot.name_ptr
        .store(name.as_ptr() as usize, Ordering::Relaxed);
    slot.name_len.store(name.len(), Ordering::Relaxed);
    slot.ipl.store(u32::from(ipl.as_u8()), Ordering::Release);
    if irq < FIRST_SPI {
        PRIVATE_GEN.fetch_add(1, Ordering::AcqRel);
    } else {
        platform().irq_enable(irq, None, ipl.as_u8());
    }
    Ok(())
}

/// Brings this CPU's copies of the private interrupts (SGIs, PPIs) up to date.
fn sync_private() {
    let seen = PRIVATE_SEEN.get();
    let generation = PRIVATE_GEN.load(Ordering::Acquire);
    if seen.load(Ordering::Relaxed) == generation {
        return;
    }
    let cpu = curcpu().index();
    let p = platform();
    let on = PRIVATE_ON.get();
    for irq in 0..FIRST_SPI {
        let bit = 1u32 << irq;
        match HANDLERS[irq as usize].ipl.load(Ordering::Acquire) {
            0 => {
                p.irq_disable(irq, Some(cpu));
                on.fetch_and(!bit, Ordering::Relaxed);
            }
            ipl => {
                if on.load(Ordering::Relaxed) & bit == 0 {
                    // Newly established here: one sent while it was off is not for this
                    // handler.
                    p.irq_clear_pending(irq, cpu);
                    on.fetch_or(bit, Ordering::Relaxed);
                }
                p.irq_enable(irq, Some(cpu), ipl as u8);
            }
        }
    }
    seen.store(generation, Ordering::Release);
}

/// Makes every online CPU apply the current private-interrupt generation, waiting up to
/// `TIMEOUT_MS`. Returns the first CPU that did not, if any.
fn propagate_private() -> Result<(), IntrError> {
    // Without icount, virtual time is host time: on a loaded host (many vCPUs on two cores) a
    // vCPU thread can go unscheduled for most of a second. A CPU that misses 5 s is stuck.
    const TIMEOUT_MS: u64 = 5000;
    {
        // Apply it here first, on the CPU we are on for the whole call.
        let daif = crate::arch::aarch64::irq_save();
        sync_private();
        crate::arch::aarch64::irq_restore(daif);
    }
    let generation = PRIVATE_GEN.load(Ordering::Acquire);
    // Every online CPU, this one included: the caller may have moved since (a Nop IPI to
    // oneself is taken as soon as IRQs are unmasked).
    let lagging = |ci: &CpuInfo| {
        ci.is_online() && PRIVATE_SEEN.on_cpu(ci.index()).load(Ordering::Acquire) < generation
    };
    for ci in cpus().filter(|ci| lagging(ci)) {
        ipi_send(ci.index(), Ipi::Nop);
    }
    let deadline = crate::arch::aarch64::counter() + crate::clock::ms_to_counter(TIMEOUT_MS);
    while let Some(ci) = cpus().find(|ci| lagging(ci)) {
        if crate::arch::aarch64::counter() > deadline {
            return Err(IntrError::Timeout(ci.index()));
        }
        crate::arch::aarch64::cpu_relax();
    }
    Ok(())
}

/// `intr_establish(irq, ipl, flags, handler, arg)`: calls `handler(arg)` at level `ipl`
/// whenever interrupt `irq` fires, and enables it (a private interrupt on every online CPU).
///
/// Context: thread, at IPL_NONE (it waits for the other CPUs to take an IPI). Errors: an
/// identifier out of range, a soft level, an interrupt already established, or a CPU that did
/// not apply the change (the handler is then established on the CPUs that did).
pub fn intr_establish(
    irq: u32,
    ipl: Ipl,
    flags: u32,
    handler: IntrHandler,
    arg: usize,
) -> Result<IntrHandle, IntrError> {
    intr_establish_xname(irq, ipl, flags, handler, arg, "")
}

/// `intr_establish_xname(irq, ipl, flags, handler, arg, xname)`: [`intr_establish`] with a
/// name for the handler, shown by the monitor's `intr` (NetBSD's `vmstat -i`). Same context
/// and errors.
pub fn intr_establish_xname(
    irq: u32,
    ipl: Ipl,
    flags: u32,
    handler: IntrHandler,
    arg: usize,
    xname: &'static str,
) -> Result<IntrHandle, IntrError> {
    assert_thread_at_ipl_none("intr_establish");
    {
        let _g = ESTABLISH_LOCK.lock();
        install(irq, ipl, flags, handler, arg, xname)?;
    }
    if irq < FIRST_SPI {
        propagate_private()?;
    }
    Ok(IntrHandle { irq })
}

/// `intr_disestablish(handle)`: disables the interrupt (on every CPU for a private one) and
/// returns once no CPU is running its handler, so the handler's data may be freed.
///
/// Context: thread, at IPL_NONE.
pub fn intr_disestablish(handle: IntrHandle) {
    assert_thread_at_ipl_none("intr_disestablish");
    let irq = handle.irq;
    let slot = &HANDLERS[irq as usize];
    {
        let _g = ESTABLISH_LOCK.lock();
        if irq < FIRST_SPI {
            slot.ipl.store(0, Ordering::SeqCst);
            PRIVATE_GEN.fetch_add(1, Ordering::AcqRel);
        } else {
            platform().irq_disable(irq, None);
            slot.ipl.store(0, Ordering::SeqCst);
        }
    }
    if irq < FIRST_SPI {
        // A CPU that misses the deadline still disables it when it next takes a Nop IPI; the
        // wait for running handlers below covers the rest.
        let _ = propagate_private();
    }
    // Pairs with `run_handler`, which counts itself in `running` *before* it reads the level
    // (both sequentially consistent): either it sees level 0 and does not call the handler, or
    // this loop sees it running and waits.
    while slot.running.load(Ordering::SeqCst) != 0 {
        crate::arch::aarch64::cpu_relax();
    }
}

fn assert_thread_at_ipl_none(call: &str) {
    assert!(
        !cpu_intr_p(),
        "{call}: called from a hard interrupt handler; it must be called from thread context"
    );
    let ipl = crate::spl::curipl();
    assert!(
        ipl == crate::spl::IPL_NONE,
        "{call}: called at {ipl}; it waits for other CPUs and must be called at IPL_NONE"
    );
}

/// Zeroes this CPU's per-interrupt counts (`intr_count`). Only this CPU writes them, without
/// atomic read-modify-writes, so another CPU must not: `stats::reset_cpu_counters` runs this
/// on every CPU with a cross call. Context: any, on the CPU whose counts are reset.
pub fn reset_this_cpu_counts() {
    for c in INTR_COUNT.get() {
        c.store(0, Ordering::Relaxed);
    }
}

/// Interrupts of identifier `irq` handled by CPU `cpu` since boot (0 for an absent CPU).
pub fn intr_count(cpu: usize, irq: u32) -> u64 {
    if crate::cpu::cpu_lookup(cpu).is_none() {
        return 0;
    }
    INTR_COUNT
        .on_cpu(cpu)
        .get(irq as usize)
        .map(|c| c.load(Ordering::Relaxed))
        .unwrap_or(0)
}

/// Interrupts taken with no handler, since boot, all CPUs.
pub fn stray_count() -> u64 {
    STRAY.load(Ordering::Relaxed)
}

/// Stops this CPU for good: marks it halted, masks interrupts and waits forever.
pub fn halt_this_cpu() -> ! {
    crate::arch::aarch64::irq_disable();
    let ci = curcpu();
    crate::spl::set_online(ci, false);
    ci.set_state(CpuState::Halted);
    loop {
        crate::arch::aarch64::wait_for_interrupt();
    }
}

/// Whether this CPU is running a hard interrupt handler. Context: any.
///
/// A thread may be preempted between finding its CPU and reading the depth, and then read
/// another CPU's; code inside a handler cannot be. So a zero read is the truth, and a non-zero
/// one is read again with IRQs masked.
pub fn cpu_intr_p() -> bool {
    if curcpu().intr_depth.load(Ordering::Relaxed) == 0 {
        return false;
    }
    let daif = crate::arch::aarch64::irq_save();
    let depth = curcpu().intr_depth.load(Ordering::Relaxed);
    crate::arch::aarch64::irq_restore(daif);
    depth != 0
}

/// Runs the handler of an acknowledged interrupt at level `ipl` and ends it; the IPL is
/// `prev` before and after. IRQs are masked on entry and exit; with `unmask` they are unmasked
/// while the handler runs (so higher levels can nest), otherwise (a deferred interrupt run by
/// an `splx` called with IRQs masked) they stay masked. `AT_EXIT`: called by `irq_entry`, so
/// the end of an outermost handler is the interrupt's exit, where soft interrupts run.
///
/// The handler's function and argument are read only after this CPU has counted itself in
/// `running` and seen the level still set, so `intr_disestablish` either waits for this call
/// or this call sees the interrupt gone (then it is counted as stray).
fn run_handler<const AT_EXIT: bool>(
    ci: &'static CpuInfo,
    ack: IrqAck,
    ipl: Ipl,
    prev: Ipl,
    unmask: bool,
) {
    let slot = &HANDLERS[ack.irq as usize];
    // A permanent handler (boot's IPIs and clock) is never disestablished: no handshake.
    let permanent = slot.permanent.load(Ordering::Relaxed);
    if !permanent {
        crate::inject::point(crate::inject::Point::IntrBeforeRunning);
        slot.running.fetch_add(1, Ordering::SeqCst);
        if slot.ipl.load(Ordering::SeqCst) != u32::from(ipl.as_u8()) {
            // Disestablished (or re-established at another level) since it was acknowledged.
            slot.running.fetch_sub(1, Ordering::Release);
            STRAY.fetch_add(1, Ordering::Relaxed);
            platform().irq_eoi(ack);
            return;
        }
    }
    // Only this CPU writes its interrupt bookkeeping, with IRQs masked (a nested handler puts
    // every field back before it returns): plain loads and stores.
    let saved_intr_ipl = ci.intr_ipl.load(Ordering::Relaxed);
    let depth = ci.intr_depth.load(Ordering::Relaxed);
    ci.intr_depth.store(depth + 1, Ordering::Relaxed);
    ci.intr_ipl.store(u32::from(ipl.as_u8()), Ordering::Relaxed);
    if depth == 0 {
        ci.ipending.fetch_or(PENDING_IN_INTR, Ordering::Relaxed);
    }
    ci.ipl.store(u32::from(ipl.as_u8()), Ordering::Relaxed);
    let active = &ACTIVE.get()[ipl.as_u8() as usize];
    active.store(ack.raw + 1, Ordering::Relaxed);
    let func = slot.func.load(Ordering::Relaxed);
    let arg = slot.arg.load(Ordering::Relaxed);

    if unmask {
        crate::arch::aarch64::irq_enable();
    }
    // SAFETY: `func` was stored from an `IntrHandler` by `install` before `ipl` was published
    // (release), and we saw that `ipl` after counting ourselves in `running`; it cannot change
    // until `running` drops (disestablish waits for that, and establish needs a free slot). A
    // permanent slot, set at boot before the other CPUs started, never changes.
    let handler: IntrHandler = unsafe { core::mem::transmute::<usize, IntrHandler>(func) };
    crate::trace::event!(
        crate::trace::Kind::IntrEntry,
        ack.irq.into(),
        ipl.as_u8().into(),
    );
    handler(arg);
    crate::trace::event!(
        crate::trace::Kind::IntrExit,
        ack.irq.into(),
        ipl.as_u8().into(),
    );
    crate::arch::aarch64::irq_disable();

    if !permanent {
        slot.running.fetch_sub(1, Ordering::Release);
    }
    // Only this CPU writes its own counts (IRQs masked here).
    let count = &INTR_COUNT.get()[ack.irq as usize];
    count.store(count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    active.store(0, Ordering::Relaxed);
    // Test image only: a planted bug leaves one interrupt at IPL_VM un-ended (below the clock
    // and the IPIs, so the CPU goes on and the loss can be reported).
    if !(ipl == crate::spl::IPL_VM && crate::inject::planted(crate::inject::Bug::SkipEoi)) {
        platform().irq_eoi(ack);
    }
    ci.ipl.store(u32::from(prev.as_u8()), Ordering::Relaxed);
    ci.intr_ipl.store(saved_intr_ipl, Ordering::Relaxed);
    if depth == 0 {
        ci.ipending.fetch_and(!PENDING_IN_INTR, Ordering::Relaxed);
    }
    ci.intr_depth.store(depth, Ordering::Relaxed);
    if AT_EXIT && depth == 0 {
        // The interrupt exit's soft interrupts, run here rather than after this function and
        // `irq_entry` have unwound (the same point of the exit: ended, IPL back at `prev`,
        // outside every handler), which keeps `softint_intr` short.
        crate::spl::run_soft_pending(ci, prev);
    }
}

/// Called by the IRQ vector with IRQs masked (or by an idle CPU woken from `wfi`, IRQs still
/// masked, with `pc` 0): handles or defers every pending interrupt, then
/// preempts the interrupted thread if a reschedule is wanted and allowed. `pc` is where the
/// interrupted code resumes (ELR): inside a no-preemption window (`arch::aarch64::nopreempt`)
/// the thread is not preempted.
pub fn irq_entry(pc: u64) {
    let ci = curcpu();
    let p = platform();
    // One interrupt per exception, as Linux's GIC drivers do: another pending one is taken
    // again as soon as this exception returns, and the common case reads IAR once.
    if let Some(ack) = p.irq_ack() {
        // Only this CPU writes it, with IRQs masked.
        ci.intr_count
            .store(ci.intr_count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        let raw_ipl = HANDLERS
            .get(ack.irq as usize)
            .map_or(0, |s| s.ipl.load(Ordering::Acquire));
        let cur = Ipl::from_u8(ci.ipl.load(Ordering::Relaxed) as u8).unwrap_or(IPL_HIGH);
        match Ipl::from_u8(raw_ipl as u8).filter(|_| raw_ipl != 0) {
            None => {
                STRAY.fetch_add(1, Ordering::Relaxed);
                p.irq_eoi(ack);
            }
            Some(ipl) if ipl <= cur => {
                // Blocked: leave it active so the GIC holds back its priority and below.
                DEFERRED.get()[ipl.as_u8() as usize].store(ack.raw + 1, Ordering::Relaxed);
                ci.ipending.fetch_or(1 << ipl.as_u8(), Ordering::Relaxed);
            }
            Some(ipl) => run_handler::<true>(ci, ack, ipl, cur, true),
        }
    }
    // Soft work a handler made runnable at a level the interrupted code does not block.
    let cur = Ipl::from_word(ci.ipl.load(Ordering::Relaxed));
    if ci.ipending.load(Ordering::Relaxed) & cur.unblocked_mask() != 0 {
        crate::spl::run_pending(ci, cur, false);
    }
    // Preemption point: the outermost interrupt returning to a thread at IPL_NONE, unless it
    // was interrupted inside a per-CPU read-modify-write (which then sees PENDING_RESCHED).
    if cur == crate::spl::IPL_NONE
        && ci.intr_depth.load(Ordering::Relaxed) == 0
        && ci.resched.load(Ordering::Relaxed) != 0
        && !crate::arch::aarch64::nopreempt::in_window(pc)
    {
        crate::sched::preempt_if_wanted();
    }
}

/// Runs the deferred interrupts above level `s` on this CPU, highest first (the reverse of
/// the order they were acknowledged in, as the GIC's EOI requires). Called by `splx` with the
/// IPL already at `s`.
pub(crate) fn run_deferred(ci: &'static CpuInfo, s: Ipl, masked: bool) {
    let saved = crate::arch::aarch64::irq_save();
    let deferred = DEFERRED.get();
    for level in (s.as_u8() as usize + 1..NIPL).rev() {
        let raw = deferred[level].swap(0, Ordering::Relaxed);
        if raw == 0 {
            continue;
        }
        ci.ipending.fetch_and(!(1 << level), Ordering::Relaxed);
        let ack = IrqAck {
            irq: (raw - 1) & 0x3ff,
            raw: raw - 1,
        };
        let ipl = Ipl::from_u8(level as u8).unwrap_or(IPL_HIGH);
        crate::trace::event!(
            crate::trace::Kind::SplDeferred,
            ack.irq.into(),
            level as u64,
        );
        // (A handler disestablished while its interrupt was deferred is counted as stray
        // there.)
        run_handler::<false>(ci, ack, ipl, s, !masked);
    }
    crate::arch::aarch64::irq_restore(saved);
}

/// Puts this CPU's interrupt state back in order after the test harness abandoned code that
/// may have been inside interrupt handlers or holding deferred interrupts: ends every
/// interrupt still active at the GIC (highest level first; deferred ones are dropped), clears
/// the handler bookkeeping and sets the IPL to `ipl`. Returns how many interrupts it ended.
/// Only for recovery from a failed or expected-panic test.
pub fn reset_after_abandon(ipl: Ipl) -> usize {
    let saved = crate::arch::aarch64::irq_save();
    let ci = curcpu();
    let mut ended = 0;
    for level in (0..NIPL).rev() {
        let running = ACTIVE.get()[level].swap(0, Ordering::Relaxed);
        let deferred = DEFERRED.get()[level].swap(0, Ordering::Relaxed);
        if running != 0 {
            let irq = (running - 1) & 0x3ff;
            HANDLERS[irq as usize]
                .running
                .fetch_sub(1, Ordering::Release);
        }
        for raw in [running, deferred].into_iter().filter(|&r| r != 0) {
            platform().irq_eoi(IrqAck {
                irq: (raw - 1) & 0x3ff,
                raw: raw - 1,
            });
            ended += 1;
        }
    }
    // Soft levels stay flagged: their pending handlers belong to nobody's abandoned work.
    ci.ipending.fetch_and(
        !(crate::spl::HARD_LEVELS | PENDING_IN_INTR),
        Ordering::Relaxed,
    );
    crate::spl::set_online(ci, ci.is_online());
    ci.intr_depth.store(0, Ordering::Relaxed);
    ci.intr_ipl.store(0, Ordering::Relaxed);
    ci.ipl.store(u32::from(ipl.as_u8()), Ordering::Relaxed);
    crate::arch::aarch64::irq_restore(saved);
    ended
}

/// Raises to `ipl` around `f` (a shorthand tests and drivers use). Context: any.
pub fn with_ipl<R>(ipl: Ipl, f: impl FnOnce() -> R) -> R {
    let s = splraise(ipl);
    let r = f();
    splx(s);
    r
}

/// Every CPU's count of interrupt `irq` (for tests and statistics), summed.
pub fn intr_count_all(irq: u32) -> u64 {
    (0..MAXCPUS)
        .filter(|&c| crate::cpu::cpu_lookup(c).is_some())
        .map(|c| intr_count(c, irq))
        .sum()
}

/// One established interrupt, as [`established`] lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntrInfo {
    /// Interrupt identifier.
    pub irq: u32,
    /// Level its handler runs at.
    pub ipl: Ipl,
    /// The name given to `intr_establish_xname` ("" without one).
    pub name: &'static str,
}

/// The interrupts with a handler now, by identifier (a snapshot; for the monitor).
/// Context: thread (it allocates).
pub fn established() -> alloc::vec::Vec<IntrInfo> {
    let _g = ESTABLISH_LOCK.lock();
    HANDLERS
        .iter()
        .enumerate()
        .filter_map(|(irq, slot)| {
            let ipl = slot.ipl.load(Ordering::Acquire);
            if ipl == 0 {
                return None;
            }
            let (ptr, len) = (
                slot.name_ptr.load(Ordering::Relaxed),
                slot.name_len.load(Ordering::Relaxed),
            );
            let name = if ptr == 0 {
                ""
            } else {
                // SAFETY: written together from a `&'static str` by `install` under the lock
                // held here, before the level that made the slot visible.
                unsafe {
                    core::str::from_utf8_unchecked(core::slice::from_raw_parts(
                        ptr as *const u8,
                        len,
                    ))
                }
            };
            Some(IntrInfo {
                irq: irq as u32,
                ipl: Ipl::from_word(ipl),
                name,
            })
        })
        .collect()
}
