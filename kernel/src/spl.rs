//! `spl(9)`: interrupt priority levels (IPLs).
//!
//! Each CPU runs at an IPL, kept in `CpuInfo::ipl`. A hardware interrupt of level L runs only
//! while the CPU's IPL is below L; raising the IPL (`splraise`, `splvm`, ...) blocks every
//! interrupt at or below the new level, and restoring it (`splx`) runs what was blocked
//! meanwhile, highest level first, before `splx` returns. Levels, lowest to highest:
//! IPL_NONE < IPL_SOFTCLOCK < IPL_SOFTBIO < IPL_SOFTNET < IPL_SOFTSERIAL < IPL_VM < IPL_SCHED <
//! IPL_HIGH. The soft levels block only soft interrupts (the softint issue), never hardware.
//!
//! # The lazy trick, and why it is correct
//!
//! Raising the level only stores the new value: no MMIO, no GIC system register. An interrupt
//! that arrives at a blocked level is still taken by the CPU; `intr::irq_entry` acknowledges
//! it, sees that its level is blocked, records it in this CPU's deferred set and sets its bit
//! in `CpuInfo::ipending`, and returns *without* ending it (no EOI). While it stays active the
//! GIC's running priority keeps every interrupt of the same or lower priority from being
//! signalled, so the hardware mask is synchronised exactly when it matters. Lowering the level
//! stores the new value and then checks `ipending`; only if it is non-zero does `splx` take the
//! slow path, which runs the deferred handlers whose level is now unblocked (highest first,
//! which is also the reverse order of acknowledgement the GIC needs for its EOIs). Since the
//! CPU observes its own stores and exceptions in program order, an interrupt either arrives
//! before the store of the lower level (and is deferred, so `ipending` is seen by the check)
//! or after it (and runs at once): none is lost, none runs twice.
//!
//! `ipending` also carries two flags that steer the slow path, so the common case pays for
//! none of the checks: [`PENDING_NOT_ONLINE`] (the CPU is not online: spl calls there are a
//! bug) and [`PENDING_IN_INTR`] (a hard interrupt handler is running: it must not lower the
//! IPL below its own level). A hook, [`set_lower_hook`], lets the softint issue run pending
//! soft interrupts on the way down.
//!
//! Context: any. These functions never sleep. Use the [`SplGuard`] form where a scope fits.

use core::fmt;

/// An interrupt priority level.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct Ipl(u32);

/// Nothing blocked.
pub const IPL_NONE: Ipl = Ipl(0);
/// Blocks soft clock interrupts (callouts).
pub const IPL_SOFTCLOCK: Ipl = Ipl(1);
/// Blocks soft block-I/O interrupts and below.
pub const IPL_SOFTBIO: Ipl = Ipl(2);
/// Blocks soft network interrupts and below.
pub const IPL_SOFTNET: Ipl = Ipl(3);
/// Blocks soft serial interrupts and below (every soft level).
pub const IPL_SOFTSERIAL: Ipl = Ipl(4);
/// Blocks device interrupts that may allocate memory (disk, network, tty) and all soft levels.
pub const IPL_VM: Ipl = Ipl(5);
/// Blocks the clock and scheduler interrupts and everything below.
pub const IPL_SCHED: Ipl = Ipl(6);
/// Blocks every interrupt.
pub const IPL_HIGH: Ipl = Ipl(7);

/// Alias: block-device interrupts (= IPL_VM).
pub const IPL_BIO: Ipl = IPL_VM;
/// Alias: network interrupts (= IPL_VM).
pub const IPL_NET: Ipl = IPL_VM;
/// Alias: tty interrupts (= IPL_VM).
pub const IPL_TTY: Ipl = IPL_VM;
/// Alias: the hardware clock (= IPL_SCHED).
pub const IPL_CLOCK: Ipl = IPL_SCHED;
/// Alias: the statistics clock (= IPL_SCHED).
pub const IPL_STATCLOCK: Ipl = IPL_SCHED;
/// Alias: audio (= IPL_SCHED).
pub const IPL_AUDIO: Ipl = IPL_SCHED;
/// Alias: serial hardware (= IPL_HIGH).
pub const IPL_SERIAL: Ipl = IPL_HIGH;
/// Alias: the level at which spin locks may be taken anywhere (= IPL_HIGH).
pub const IPL_LOCK: Ipl = IPL_HIGH;

/// Number of levels (IPL_NONE..=IPL_HIGH).
pub const NIPL: usize = 8;

/// `ipending` flag: the CPU is not online; an spl call there is a bug (defined with
/// `CpuInfo`, which starts with it set).
pub use crate::cpu::PENDING_NOT_ONLINE;
/// `ipending` flag: a hard interrupt handler is running on this CPU.
pub const PENDING_IN_INTR: u32 = 1 << 30;
/// `ipending` bits that mean deferred work at a level (bit L = level L).
pub const PENDING_LEVELS: u32 = (1 << NIPL) - 1;
/// `ipending` bits of the soft levels (pending soft interrupts, flagged by `softint`).
pub const SOFT_LEVELS: u32 = 0b1_1110;
/// `ipending` bits of the hardware levels (deferred device interrupts).
pub const HARD_LEVELS: u32 = PENDING_LEVELS & !SOFT_LEVELS & !1;

impl Ipl {
    /// The level with number `n` (0..=7), if it is one.
    pub const fn from_u8(n: u8) -> Option<Ipl> {
        if (n as usize) < NIPL {
            Some(Ipl(n as u32))
        } else {
            None
        }
    }

    /// The level of a raw `CpuInfo::ipl` word (anything above IPL_HIGH reads as IPL_HIGH).
    #[inline(always)]
    pub const fn from_word(w: u32) -> Ipl {
        if w < NIPL as u32 { Ipl(w) } else { IPL_HIGH }
    }

    /// The level's number, 0 (IPL_NONE) to 7 (IPL_HIGH).
    pub const fn as_u8(self) -> u8 {
        self.0 as u8
    }

    /// The NetBSD name.
    pub const fn name(self) -> &'static str {
        match self.0 {
            0 => "IPL_NONE",
            1 => "IPL_SOFTCLOCK",
            2 => "IPL_SOFTBIO",
            3 => "IPL_SOFTNET",
            4 => "IPL_SOFTSERIAL",
            5 => "IPL_VM",
            6 => "IPL_SCHED",
            _ => "IPL_HIGH",
        }
    }

    /// Whether this is a hardware level (IPL_VM and above), i.e. one a device interrupt may
    /// be established at.
    pub const fn is_hardware(self) -> bool {
        self.0 >= IPL_VM.0
    }

    /// Whether this is one of the soft levels (IPL_SOFTCLOCK..=IPL_SOFTSERIAL).
    pub const fn is_soft(self) -> bool {
        self.0 >= IPL_SOFTCLOCK.0 && self.0 <= IPL_SOFTSERIAL.0
    }

    /// `ipending` bits of the levels above this one (work this level does not block).
    pub const fn unblocked_mask(self) -> u32 {
        PENDING_LEVELS & !((2u32 << self.0) - 1)
    }
}

impl fmt::Debug for Ipl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Ipl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(target_arch = "aarch64")]
pub use imp::*;

#[cfg(target_arch = "aarch64")]
mod imp {
    use super::*;
    use crate::cpu::{CpuInfo, curcpu};
    use core::sync::atomic::{Ordering, compiler_fence};

    /// Raises this CPU's IPL to `ipl` if it is below, and returns the previous level for
    /// [`splx`]. Never lowers. Context: any; O(1), touches no hardware. Safe at IPL_NONE with
    /// preemption enabled: the read-modify-write is one window that the interrupt return path
    /// does not preempt in (`arch::aarch64::nopreempt`).
    #[inline(always)]
    pub fn splraise(ipl: Ipl) -> Ipl {
        crate::inject::point(crate::inject::Point::SplRaise);
        let old = crate::arch::aarch64::nopreempt::cpl_raise(ipl.0);
        compiler_fence(Ordering::SeqCst);
        Ipl(old)
    }

    /// Restores the IPL `s` returned by an earlier raise, running whatever interrupts (and,
    /// with the softint issue, soft interrupts) the lower level unblocks, and a preemption
    /// that was asked for meanwhile, before returning. Context: any; at interrupt level it may
    /// not go below the interrupt's own level.
    ///
    /// Panics if `s` is above the current level (splx restores; it never raises), if called
    /// in a hard interrupt handler with `s` below the handler's level, or on a CPU that is not
    /// online.
    #[inline(always)]
    pub fn splx(s: Ipl) {
        lower(s, "splx");
    }

    /// The way down shared by `splx`, `spl0` and `spllowersoftclock`: one store and one load in
    /// a no-preemption window, then the slow path only if something is pending.
    #[inline(always)]
    fn lower(s: Ipl, call: &'static str) {
        compiler_fence(Ordering::SeqCst);
        let (cur, pending) = crate::arch::aarch64::nopreempt::cpl_lower(s.0);
        compiler_fence(Ordering::SeqCst);
        if s.0 > cur {
            splx_raises(s, cur, call);
        }
        if pending != 0 {
            spl_lower_slow(s, call);
        }
    }

    #[cold]
    #[inline(never)]
    fn splx_raises(s: Ipl, cur: u32, call: &str) -> ! {
        // Put the level back before reporting (the store above already happened).
        crate::arch::aarch64::nopreempt::cpl_lower(cur);
        panic!(
            "{call}({s}) would raise the IPL from {}: splx only restores a level returned by an \
             earlier raise, innermost first",
            Ipl(cur)
        )
    }

    /// The way down when `ipending` is non-zero: checks the rules carried by the flags, then
    /// runs deferred interrupts (highest level first) and the lower hook, then preempts if a
    /// reschedule was asked for and the level is now IPL_NONE. Runs with IRQs masked (the
    /// deferred handlers themselves run with IRQs as the caller had them), so it cannot
    /// migrate: `curcpu()` is read afresh here, not taken from the window.
    #[cold]
    #[inline(never)]
    fn spl_lower_slow(s: Ipl, call: &str) {
        let daif = crate::arch::aarch64::irq_save();
        let ci = curcpu();
        let pending = ci.ipending.load(Ordering::Relaxed);
        if pending & PENDING_NOT_ONLINE != 0 {
            panic!(
                "{call}({s}) on cpu{}, which is {}: spl calls need an online CPU",
                ci.index(),
                ci.state().name()
            );
        }
        if pending & PENDING_IN_INTR != 0 {
            let intr_ipl = Ipl(ci.intr_ipl.load(Ordering::Relaxed));
            if s < intr_ipl {
                panic!(
                    "{call}({s}) in a hard interrupt handler at {intr_ipl}: a handler may not \
                     lower the IPL below its own level"
                );
            }
        }
        run_pending(ci, s, crate::arch::aarch64::daif_irqs_masked(daif));
        // Read again: a deferred Sched IPI that just ran asks for the preemption now.
        if s == IPL_NONE
            && ci.ipending.load(Ordering::Relaxed) & crate::sched::PENDING_RESCHED != 0
            && !crate::arch::aarch64::daif_irqs_masked(daif)
        {
            crate::sched::preempt_if_wanted();
        }
        crate::arch::aarch64::irq_restore(daif);
    }

    /// Runs the work pending above level `s` on this CPU (deferred hardware interrupts, then
    /// the lower hook for soft levels). Called with the IPL already at `s` and IRQs masked;
    /// `masked` says whether the code that lowered the level had IRQs masked, in which case the
    /// deferred handlers run masked too.
    pub(crate) fn run_pending(ci: &'static CpuInfo, s: Ipl, masked: bool) {
        let mut pending = ci.ipending.load(Ordering::Relaxed) & s.unblocked_mask();
        if pending & HARD_LEVELS != 0 {
            crate::intr::run_deferred(ci, s, masked);
            // The handlers may have scheduled soft interrupts.
            pending = ci.ipending.load(Ordering::Relaxed) & s.unblocked_mask();
        }
        if pending & SOFT_LEVELS != 0 && !masked {
            run_soft_pending(ci, s);
        }
    }

    /// At an interrupt's exit (IRQs masked, outside every handler, IPL back at the
    /// interrupted code's `s`): runs the soft interrupts pending above `s` through the lower
    /// hook, if any are.
    #[inline(always)]
    pub(crate) fn run_soft_pending(ci: &'static CpuInfo, s: Ipl) {
        if ci.ipending.load(Ordering::Relaxed) & s.unblocked_mask() & SOFT_LEVELS != 0 {
            let hook = LOWER_HOOK.load(Ordering::Relaxed);
            if hook != 0 {
                // SAFETY: only `set_lower_hook` stores here, from a `fn(Ipl, bool)`.
                let hook = unsafe { core::mem::transmute::<usize, fn(Ipl, bool)>(hook) };
                hook(s, false);
            }
        }
    }

    /// Lowers the IPL to IPL_NONE, running everything pending. Context: thread.
    #[inline]
    pub fn spl0() {
        lower(IPL_NONE, "spl0");
    }

    /// Lowers the IPL to IPL_SOFTCLOCK if it is above (unblocking everything but soft clock
    /// interrupts); never raises. Context: thread or soft interrupt.
    #[inline]
    pub fn spllowersoftclock() {
        if curipl() <= IPL_SOFTCLOCK {
            return;
        }
        lower(IPL_SOFTCLOCK, "spllowersoftclock");
    }

    /// This CPU's current IPL. Context: any.
    ///
    /// A thread at IPL_NONE may be preempted between finding its CPU and reading the level and
    /// then read another CPU's level; a thread above IPL_NONE cannot be preempted. So a zero
    /// read is the truth, and a non-zero one is read again with IRQs masked (no migration).
    #[inline]
    pub fn curipl() -> Ipl {
        let v = curcpu().ipl.load(Ordering::Relaxed);
        if v == 0 {
            return IPL_NONE;
        }
        let daif = crate::arch::aarch64::irq_save();
        let v = curcpu().ipl.load(Ordering::Relaxed);
        crate::arch::aarch64::irq_restore(daif);
        Ipl(v)
    }

    /// `splhigh()`: raises to IPL_HIGH (blocks everything).
    #[inline(always)]
    pub fn splhigh() -> Ipl {
        splraise(IPL_HIGH)
    }
    /// `splsched()`: raises to IPL_SCHED (the clock and scheduler interrupts).
    #[inline(always)]
    pub fn splsched() -> Ipl {
        splraise(IPL_SCHED)
    }
    /// `splvm()`: raises to IPL_VM (devices that allocate memory).
    #[inline(always)]
    pub fn splvm() -> Ipl {
        splraise(IPL_VM)
    }
    /// `splsoftserial()`: raises to IPL_SOFTSERIAL (every soft interrupt).
    #[inline(always)]
    pub fn splsoftserial() -> Ipl {
        splraise(IPL_SOFTSERIAL)
    }
    /// `splsoftnet()`: raises to IPL_SOFTNET.
    #[inline(always)]
    pub fn splsoftnet() -> Ipl {
        splraise(IPL_SOFTNET)
    }
    /// `splsoftbio()`: raises to IPL_SOFTBIO.
    #[inline(always)]
    pub fn splsoftbio() -> Ipl {
        splraise(IPL_SOFTBIO)
    }
    /// `splsoftclock()`: raises to IPL_SOFTCLOCK (since NetBSD 1.5 it raises; see
    /// [`spllowersoftclock`] for the old lowering meaning).
    #[inline(always)]
    pub fn splsoftclock() -> Ipl {
        splraise(IPL_SOFTCLOCK)
    }
    /// `splbio()`: old name, = `splvm()` (IPL_BIO is IPL_VM).
    #[inline(always)]
    pub fn splbio() -> Ipl {
        splraise(IPL_BIO)
    }
    /// `splnet()`: old name, = `splvm()` (IPL_NET is IPL_VM).
    #[inline(always)]
    pub fn splnet() -> Ipl {
        splraise(IPL_NET)
    }
    /// `spltty()`: old name, = `splvm()` (IPL_TTY is IPL_VM).
    #[inline(always)]
    pub fn spltty() -> Ipl {
        splraise(IPL_TTY)
    }
    /// `splclock()`: old name, = `splsched()` (IPL_CLOCK is IPL_SCHED).
    #[inline(always)]
    pub fn splclock() -> Ipl {
        splraise(IPL_CLOCK)
    }
    /// `splstatclock()`: old name, = `splsched()` (IPL_STATCLOCK is IPL_SCHED).
    #[inline(always)]
    pub fn splstatclock() -> Ipl {
        splraise(IPL_STATCLOCK)
    }
    /// `splserial()`: old name, = `splhigh()` (IPL_SERIAL is IPL_HIGH).
    #[inline(always)]
    pub fn splserial() -> Ipl {
        splraise(IPL_SERIAL)
    }
    /// `spllock()`: old name, = `splhigh()` (IPL_LOCK is IPL_HIGH).
    #[inline(always)]
    pub fn spllock() -> Ipl {
        splraise(IPL_LOCK)
    }

    /// Raises the IPL for a scope: `let _s = SplGuard::raise(IPL_VM);` restores the previous
    /// level when dropped, on every path out of the scope. Guards must be dropped in the
    /// reverse order of creation (Rust's scoping does this unless one is moved out).
    #[must_use = "the level is restored as soon as the guard is dropped"]
    pub struct SplGuard {
        saved: Ipl,
        // Not Send: the level belongs to this CPU.
        _not_send: core::marker::PhantomData<*const ()>,
    }

    impl SplGuard {
        /// Raises to `ipl` (never lowers) until the guard is dropped.
        #[inline(always)]
        pub fn raise(ipl: Ipl) -> Self {
            Self {
                saved: splraise(ipl),
                _not_send: core::marker::PhantomData,
            }
        }

        /// The level that will be restored.
        pub fn saved(&self) -> Ipl {
            self.saved
        }
    }

    impl Drop for SplGuard {
        #[inline(always)]
        fn drop(&mut self) {
            splx(self.saved);
        }
    }

    /// The lower hook as a plain word (a `fn(Ipl, bool)`, 0 = none): read on every interrupt
    /// exit with soft work, where a `spin::Once`'s state check would cost more than the call.
    static LOWER_HOOK: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

    /// Installs the function that runs pending soft work on the way down (once; `softint`
    /// installs its dispatch). It is called with IRQs masked, the IPL at the new level `s`,
    /// some soft level above `s` flagged in `ipending`, and whether the code that lowered the
    /// IPL had IRQs masked (soft interrupts then wait for a lowering that had not).
    pub fn set_lower_hook(hook: fn(Ipl, bool)) {
        let _ = LOWER_HOOK.compare_exchange(0, hook as usize, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// Marks this CPU online or not for the spl rules. Boot code only.
    pub fn set_online(ci: &CpuInfo, online: bool) {
        if online {
            ci.ipending
                .fetch_and(!PENDING_NOT_ONLINE, Ordering::Relaxed);
        } else {
            ci.ipending.fetch_or(PENDING_NOT_ONLINE, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_strictly_ordered() {
        let levels = [
            IPL_NONE,
            IPL_SOFTCLOCK,
            IPL_SOFTBIO,
            IPL_SOFTNET,
            IPL_SOFTSERIAL,
            IPL_VM,
            IPL_SCHED,
            IPL_HIGH,
        ];
        for (i, pair) in levels.windows(2).enumerate() {
            assert!(pair[0] < pair[1], "{:?} !< {:?}", pair[0], pair[1]);
            assert_eq!(pair[0].as_u8() as usize, i);
        }
        assert_eq!(levels.len(), NIPL);
    }

    #[test]
    fn aliases_map_as_netbsd_does() {
        assert_eq!(IPL_BIO, IPL_VM);
        assert_eq!(IPL_NET, IPL_VM);
        assert_eq!(IPL_TTY, IPL_VM);
        assert_eq!(IPL_CLOCK, IPL_SCHED);
        assert_eq!(IPL_STATCLOCK, IPL_SCHED);
        assert_eq!(IPL_AUDIO, IPL_SCHED);
        assert_eq!(IPL_SERIAL, IPL_HIGH);
        assert_eq!(IPL_LOCK, IPL_HIGH);
    }

    #[test]
    fn soft_and_hardware_levels_partition_the_rest() {
        assert!(!IPL_NONE.is_soft() && !IPL_NONE.is_hardware());
        for n in 1..=4 {
            let l = Ipl::from_u8(n).expect("level");
            assert!(l.is_soft() && !l.is_hardware(), "{l}");
        }
        for n in 5..=7 {
            let l = Ipl::from_u8(n).expect("level");
            assert!(l.is_hardware() && !l.is_soft(), "{l}");
        }
        assert_eq!(Ipl::from_u8(8), None);
    }

    #[test]
    fn unblocked_mask_selects_strictly_higher_levels() {
        assert_eq!(IPL_NONE.unblocked_mask(), 0b1111_1110);
        assert_eq!(IPL_VM.unblocked_mask(), 0b1100_0000);
        assert_eq!(IPL_HIGH.unblocked_mask(), 0);
        assert_eq!(
            IPL_NONE.unblocked_mask() & (PENDING_IN_INTR | PENDING_NOT_ONLINE),
            0
        );
    }

    #[test]
    fn names_are_netbsd_names() {
        assert_eq!(format!("{IPL_SOFTSERIAL}"), "IPL_SOFTSERIAL");
        assert_eq!(format!("{:?}", IPL_SCHED), "IPL_SCHED");
    }
}
