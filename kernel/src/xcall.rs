//! `xcall(9)`: cross calls, a function run on one CPU (`xc_unicast`) or on every CPU
//! (`xc_broadcast`), with a ticket to wait for (`xc_wait`).
//!
//! # Classes
//!
//! A low-priority call runs in the target CPU's `xcall/N` thread (bound, priority
//! [`PRI_XCALL`], the top of the kernel-thread range), so it has the CPU to itself among
//! ordinary threads. A high-priority call (`XC_HIGHPRI`, or `XC_HIGHPRI_IPL(ipl)` for
//! IPL_SOFTNET, IPL_SOFTBIO or IPL_SOFTCLOCK instead of the default IPL_SOFTSERIAL) runs in a
//! soft interrupt at that level on each target: the others get `softint_schedule_cpu` (an IPI
//! whose interrupt exit runs it), and the caller runs its own CPU's share itself
//! (`softint::run_inline`: in its own thread, at the level's IPL, as the level's soft
//! interrupt, so excluded from the level's handlers there and allowed to block as they are),
//! falling back to scheduling the softint when the level is busy on its CPU.
//!
//! # Several calls in flight, and the ticket rule
//!
//! NetBSD lets one call of each class be in flight system-wide. Here every class (low, and high
//! at each of the four levels) is a ring of [`RING`] call records indexed by ticket, so callers
//! on different CPUs publish calls at the same time:
//!
//! - A caller takes the next ticket `t` of the class under the class's lock, waits (asleep,
//!   without the lock) if the ring is full (the record `t - RING` not yet done), fills the
//!   record `t % RING`, publishes it by storing `t` in its `ready` word (a sequence lock:
//!   `ready` is cleared before the fields are written) and then `head`. So records are
//!   published in ticket order; only this short step is serialised, the calls themselves run
//!   and are waited for concurrently. Then the caller kicks the targets.
//! - Each CPU keeps, per class, the last ticket it has looked at (`seen`). When kicked it walks
//!   the records after `seen` in ticket order, runs those that name it and steps over the
//!   others, and stops at `head`.
//!   A record whose `ready` already shows a later ticket was reused, so it was done, so it did
//!   not name this CPU (it could not be done without it); and every ticket up to the class's
//!   `done` is done, so a CPU that was not kicked for a while jumps its `seen` there.
//! - The last target to run a record counts it done (each clears its bit in the record's
//!   `remaining` mask; the one that clears the last bit is the last). `done` is the highest
//!   ticket up to which *every* record is done: a record finishing out of order marks its
//!   slot, and `done` advances (under the class's lock) over every consecutive marked slot.
//!   `xc_wait(t)` returns when `done >= t` (a lock-free check, a few `yield` rounds, then
//!   sleep), so it never returns before every call up to and including `t` has returned on all
//!   its targets, and waits for other callers' calls only when they carry smaller tickets.
//!
//! Tickets carry their class: bit 63 for high priority (as NetBSD), the level in bits 60..62.
//!
//! # Rules
//!
//! Callers are threads that may sleep: not in a hard or soft interrupt handler, IPL_NONE, no
//! spin mutex held, preemption enabled (each asserted, naming the call). A unicast needs an
//! online CPU. A callback must return with preemption enabled and no spin mutex held
//! (asserted, naming the callback). Before [`init`] (the secondary CPUs not yet up) a call runs
//! inline on the boot CPU and returns ticket 0.

use crate::arch::aarch64 as arch;
use crate::cpu::{CpuInfo, MAXCPUS, cpu_lookup, curcpu};
use crate::kthread::{KTHREAD_MPSAFE, kthread_create};
use crate::sched::sleepq::SleepQueue;
use crate::softint::{
    SOFTINT_BIO, SOFTINT_CLOCK, SOFTINT_MPSAFE, SOFTINT_NET, SOFTINT_SERIAL, SoftintHandle,
    softint_establish, softint_schedule, softint_schedule_cpu, softint_schedule_others,
};
use crate::spl::{IPL_NONE, IPL_SOFTBIO, IPL_SOFTCLOCK, IPL_SOFTNET, IPL_SOFTSERIAL, Ipl};
use crate::sync::SpinLock;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};

/// A cross-call function: called with the two arguments given to the call.
pub type XcFunc = fn(usize, usize);

/// Flag: a high-priority call, run in a soft interrupt (IPL_SOFTSERIAL unless
/// [`XC_HIGHPRI_IPL`] names another soft level).
pub const XC_HIGHPRI: u32 = 0x01;

#[allow(non_snake_case, reason = "NetBSD's name for the macro")]
/// Flags: a high-priority call run at soft level `ipl` (IPL_SOFTSERIAL, IPL_SOFTNET,
/// IPL_SOFTBIO or IPL_SOFTCLOCK; any other level is refused when the call is made).
pub const fn XC_HIGHPRI_IPL(ipl: Ipl) -> u32 {
    XC_HIGHPRI | (ipl.as_u8() as u32) << 8
}

/// Priority of the `xcall/N` threads (NetBSD's PRI_XCALL: the top of the kernel-thread range).
pub const PRI_XCALL: u32 = 127;

/// Records per class ring: calls of one class that may be in flight at once.
pub const RING: usize = 64;

/// How long `xc_wait` waits before it reports the CPUs that have not answered (then it keeps
/// waiting).
pub const REPORT_AFTER_MS: u64 = 5_000;

/// Classes: 0 = low priority, 1..=4 = high priority at IPL_SOFTCLOCK..IPL_SOFTSERIAL.
const NCLASSES: usize = 5;
const HIGH_BIT: u64 = 1 << 63;
const LEVEL_SHIFT: u32 = 60;
const SEQ_MASK: u64 = (1 << LEVEL_SHIFT) - 1;

/// One call record.
struct Record {
    /// The ticket (sequence number) published here, 0 while being written.
    ready: AtomicU64,
    /// The ticket of the last call recorded here that is done.
    done: AtomicU64,
    func: AtomicUsize,
    arg1: AtomicUsize,
    arg2: AtomicUsize,
    /// CPUs that run it (bit = CPU index).
    targets: AtomicU64,
    /// Targets that have not run it yet (bit = CPU index): each clears its own bit, and the
    /// one that clears the last counts the call done (no population count on the way in).
    remaining: AtomicU64,
}

/// One class: its ring, its counters and where its waiters sleep.
struct Class {
    records: [Record; RING],
    /// The last ticket handed out.
    head: AtomicU64,
    /// Every ticket up to this one is done.
    done: AtomicU64,
    /// Serialises advancing `done`.
    lock: SpinLock<()>,
    /// Waiters for `done` (xc_wait, and callers waiting for a free record).
    waiters: SleepQueue,
    /// Threads about to sleep or asleep on `waiters`, so that `complete` takes the queue's
    /// lock only when someone may need waking (see [`sleep_until`]).
    sleepers: AtomicU32,
}

static CLASSES: [Class; NCLASSES] = [const {
    Class {
        records: [const {
            Record {
                ready: AtomicU64::new(0),
                done: AtomicU64::new(0),
                func: AtomicUsize::new(0),
                arg1: AtomicUsize::new(0),
                arg2: AtomicUsize::new(0),
                targets: AtomicU64::new(0),
                remaining: AtomicU64::new(0),
            }
        }; RING],
        head: AtomicU64::new(0),
        done: AtomicU64::new(0),
        lock: SpinLock::new(()),
        waiters: SleepQueue::new(),
        sleepers: AtomicU32::new(0),
    }
}; NCLASSES];

/// Set by [`init`]: calls go to the other CPUs from then on.
static READY: AtomicBool = AtomicBool::new(false);
/// The softint of each high class (index = class - 1), as raw handles.
static SOFTINTS: [AtomicU64; NCLASSES - 1] = [const { AtomicU64::new(0) }; NCLASSES - 1];

/// One CPU's cross-call state and counters.
pub struct XcallCpu {
    /// Per class: the last ticket this CPU has looked at (written only by the context that
    /// runs the class here).
    seen: [AtomicU64; NCLASSES],
    /// The `xcall/N` thread sleeps here.
    wake: SleepQueue,
    /// Calls run here per class (low priority, then high priority at each soft level), each
    /// written only by that class's runner on this CPU.
    received: [AtomicU64; NCLASSES],
    /// Calls issued by threads on this CPU.
    issued: AtomicU64,
}

crate::dpcpu_define! {
    /// Cross-call state and counters of this CPU.
    pub static XCALL: XcallCpu = XcallCpu {
        seen: [const { AtomicU64::new(0) }; NCLASSES],
        wake: SleepQueue::new(),
        received: [const { AtomicU64::new(0) }; NCLASSES],
        issued: AtomicU64::new(0),
    };
}

/// Counters of CPU `cpu`: (low-priority calls run, high-priority calls run, calls issued).
/// Context: any.
pub fn counters(cpu: usize) -> (u64, u64, u64) {
    if cpu_lookup(cpu).is_none() {
        return (0, 0, 0);
    }
    let x = XCALL.on_cpu(cpu);
    (
        x.received[0].load(Ordering::Relaxed),
        x.received[1..]
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .sum(),
        x.issued.load(Ordering::Relaxed),
    )
}

/// The class of `flags`, or a named refusal.
fn class_of(flags: u32, call: &str) -> usize {
    if flags & XC_HIGHPRI == 0 {
        assert!(
            flags == 0,
            "{call}: unknown flags {flags:#x} (0, XC_HIGHPRI or XC_HIGHPRI_IPL(ipl))"
        );
        return 0;
    }
    let ipl = match (flags >> 8) & 0xff {
        0 => IPL_SOFTSERIAL,
        n => Ipl::from_u8(n as u8).unwrap_or(crate::spl::IPL_HIGH),
    };
    assert!(
        flags & !(XC_HIGHPRI | 0xff00) == 0 && ipl.is_soft(),
        "{call}: XC_HIGHPRI_IPL({ipl}) is not a soft level (IPL_SOFTSERIAL, IPL_SOFTNET, \
         IPL_SOFTBIO or IPL_SOFTCLOCK)"
    );
    ipl.as_u8() as usize
}

/// The ticket of sequence number `seq` in class `class`.
const fn ticket(class: usize, seq: u64) -> u64 {
    if class == 0 {
        seq
    } else {
        HIGH_BIT | (class as u64) << LEVEL_SHIFT | seq
    }
}

/// The class and sequence number of `t`.
const fn untick(t: u64) -> (usize, u64) {
    if t & HIGH_BIT == 0 {
        (0, t & SEQ_MASK)
    } else {
        (((t >> LEVEL_SHIFT) & 7) as usize, t & SEQ_MASK)
    }
}

/// The caller may make a cross call: a thread that may sleep. The reads are the fast path;
/// the messages are built only when a rule is broken.
#[inline(always)]
fn assert_caller(call: &'static str) {
    let daif = arch::irq_save();
    let ci = curcpu();
    let depth = ci.intr_depth.load(Ordering::Relaxed);
    let ipl = ci.ipl.load(Ordering::Relaxed);
    let held = ci.mtx_count.load(Ordering::Relaxed);
    arch::irq_restore(daif);
    let l = crate::sched::curlwp();
    let nopreempt = l.nopreempt.load(Ordering::Relaxed);
    if depth | ipl | held | nopreempt != 0 || l.softint_level().is_some() {
        caller_refused(call, depth, ipl, held);
    }
}

#[cold]
#[inline(never)]
fn caller_refused(call: &str, depth: u32, ipl: u32, held: u32) -> ! {
    assert!(
        depth == 0,
        "{call}: called from a hard interrupt handler; cross calls need a thread that may sleep"
    );
    assert!(
        crate::sched::curlwp().softint_level().is_none(),
        "{call}: called from a soft interrupt handler; cross calls need a thread that may sleep"
    );
    assert!(
        held == 0,
        "{call}: called with {held} spin mutex(es) held; a callback on another CPU may need them"
    );
    assert!(
        ipl == 0,
        "{call}: called at {}; cross calls need IPL_NONE",
        Ipl::from_u8(ipl as u8).unwrap_or(crate::spl::IPL_HIGH)
    );
    panic!("{call}: called with preemption disabled; cross calls need a thread that may sleep")
}

/// `xc_broadcast(flags, func, arg1, arg2)`: calls `func(arg1, arg2)` on every online CPU and
/// returns a ticket for [`xc_wait`]. Context: thread, IPL_NONE, no spin mutex, preemption
/// enabled (asserted); may sleep if the class has [`RING`] calls in flight.
pub fn xc_broadcast(flags: u32, func: XcFunc, arg1: usize, arg2: usize) -> u64 {
    let class = class_of(flags, "xc_broadcast");
    assert_caller("xc_broadcast");
    let targets = crate::cpu::online_cpus();
    issue(class, func, arg1, arg2, targets, true)
}

/// `xc_unicast(flags, func, arg1, arg2, ci)`: calls `func(arg1, arg2)` on CPU `cpu`, which must
/// be online, and returns a ticket for [`xc_wait`]. Context: as [`xc_broadcast`].
pub fn xc_unicast(flags: u32, func: XcFunc, arg1: usize, arg2: usize, cpu: usize) -> u64 {
    let class = class_of(flags, "xc_unicast");
    assert_caller("xc_unicast");
    assert!(
        cpu_lookup(cpu).is_some_and(|ci| ci.is_online()),
        "xc_unicast: cpu{cpu} is not online"
    );
    issue(class, func, arg1, arg2, 1 << cpu, false)
}

/// Publishes a call of class `class` to the CPUs in `targets` (every online CPU if
/// `broadcast`) and kicks them.
fn issue(
    class: usize,
    func: XcFunc,
    arg1: usize,
    arg2: usize,
    targets: u64,
    broadcast: bool,
) -> u64 {
    if !READY.load(Ordering::Acquire) {
        // Boot: only this CPU runs.
        func(arg1, arg2);
        return 0;
    }
    let c = &CLASSES[class];
    let seq = match publish(c, func, arg1, arg2, targets) {
        Some(seq) => seq,
        None => publish_when_free(c, func, arg1, arg2, targets),
    };
    crate::trace::event!(crate::trace::Kind::XcallIssue, ticket(class, seq), targets);
    kick(class, targets, broadcast, seq);
    ticket(class, seq)
}

/// Takes the next ticket of class `c` and publishes its record, in ticket order, if the
/// record's previous call is done; `None` (nothing taken) if [`RING`] calls are in flight.
#[inline(always)]
fn publish(c: &Class, func: XcFunc, arg1: usize, arg2: usize, targets: u64) -> Option<u64> {
    let _g = c.lock.lock();
    let seq = c.head.load(Ordering::Relaxed) + 1;
    if c.done.load(Ordering::Acquire) + (RING as u64) < seq {
        return None;
    }
    let r = &c.records[(seq % RING as u64) as usize];
    r.ready.store(0, Ordering::Relaxed);
    fence(Ordering::Release);
    r.func.store(func as usize, Ordering::Relaxed);
    r.arg1.store(arg1, Ordering::Relaxed);
    r.arg2.store(arg2, Ordering::Relaxed);
    r.targets.store(targets, Ordering::Relaxed);
    r.remaining.store(targets, Ordering::Relaxed);
    r.ready.store(seq, Ordering::Release);
    c.head.store(seq, Ordering::Release);
    Some(seq)
}

/// [`publish`] when [`RING`] calls of the class are in flight: waits asleep for the oldest,
/// then tries again (out of line, so that the common case keeps its arguments in registers).
#[cold]
#[inline(never)]
fn publish_when_free(c: &Class, func: XcFunc, arg1: usize, arg2: usize, targets: u64) -> u64 {
    loop {
        let _ = sleep_until(c, None, || {
            c.done.load(Ordering::Acquire) + (RING as u64) < c.head.load(Ordering::Acquire) + 1
        });
        if let Some(seq) = publish(c, func, arg1, arg2, targets) {
            return seq;
        }
    }
}

/// Makes every CPU in `targets` look at class `class` (`broadcast`: every online CPU), and
/// counts the call as issued on this CPU.
#[inline(always)]
fn kick(class: usize, mut targets: u64, broadcast: bool, seq: u64) {
    crate::inject::point(crate::inject::Point::IpiSending);
    // IRQs masked, so that "this CPU" stays this CPU for the count and for choosing the
    // others; the others are named by index, so they need no pinning beyond that.
    let daif = arch::irq_save();
    let x = XCALL.get();
    // Only threads on this CPU write it, here with IRQs masked: a plain increment.
    x.issued
        .store(x.issued.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    if class == 0 {
        arch::irq_restore(daif);
        // This CPU's `xcall/N` outranks the caller and would take the CPU at the first wakeup
        // that names it, before the rest were woken: pinned, the others first, this CPU last.
        crate::sched::kpreempt_disable();
        let me = 1u64 << curcpu().index();
        let mine = targets & me;
        targets &= !me;
        while targets != 0 {
            let cpu = targets.trailing_zeros() as usize;
            targets &= targets - 1;
            XCALL.on_cpu(cpu).wake.wake_one();
        }
        if mine != 0 {
            XCALL.get().wake.wake_one();
        }
        crate::sched::kpreempt_enable();
        return;
    }
    let h = SoftintHandle::from_raw(SOFTINTS[class - 1].load(Ordering::Acquire));
    let me = curcpu().index();
    // Others first, so they are on their way while this CPU runs its own.
    let mut others = targets & !(1 << me);
    if broadcast && others & others.wrapping_sub(1) != 0 {
        // Every other online CPU: one broadcast IPI.
        softint_schedule_others(h);
        others = 0;
    }
    while others != 0 {
        let cpu = others.trailing_zeros() as usize;
        others &= others - 1;
        softint_schedule_cpu(h, cpu);
    }
    arch::irq_restore(daif);
    if targets & (1 << me) != 0 {
        // This CPU's share: the caller runs it itself, as the level's softint (at its IPL,
        // excluded from the level's handlers here, allowed to block), with no softint thread
        // entered.
        let ipl = Ipl::from_u8(class as u8).unwrap_or(IPL_SOFTSERIAL);
        if crate::softint::run_inline(ipl, me, || run_own(class, seq)) {
            return;
        }
        // The level's softint thread is busy here (a handler running or blocked), or the
        // thread moved since the IRQs were unmasked: through the softint, queued behind it, on
        // `me`.
        crate::sched::kpreempt_disable();
        if curcpu().index() == me {
            softint_schedule(h);
        } else {
            softint_schedule_cpu(h, me);
        }
        crate::sched::kpreempt_enable();
    }
}

/// The caller's own share of its call `seq` of class `class`, run inline as the class's
/// softint on this CPU: when this CPU has looked at every earlier call of the class (the
/// common case) that call alone, without the checks a CPU reading someone else's record
/// needs; otherwise every call that names this CPU in ticket order, as the softint would
/// ([`run_class`]). Later calls for this CPU are not its business: their publishers kick this
/// CPU themselves.
#[inline(always)]
fn run_own(class: usize, seq: u64) {
    let c = &CLASSES[class];
    let x = XCALL.get();
    if x.seen[class]
        .load(Ordering::Relaxed)
        .max(c.done.load(Ordering::Acquire))
        + 1
        != seq
    {
        return run_class(class);
    }
    // The caller's own record, published by this thread, and not reused before this CPU
    // counts itself done.
    run_call(c, x, class, seq, 1u64 << curcpu().index());
}

/// Runs call `seq` of class `class` (`c`) on this CPU (bit `bit`), whose record names this
/// CPU and so cannot be reused before this CPU counts itself done; then checks what the
/// callback left behind and counts the call run here (and done, if this CPU was the last).
/// Only the class's runner on this CPU calls it (`x` is this CPU's state).
#[inline(always)]
fn run_call(c: &Class, x: &XcallCpu, class: usize, seq: u64, bit: u64) {
    let r = &c.records[(seq % RING as u64) as usize];
    let func = r.func.load(Ordering::Relaxed);
    let arg1 = r.arg1.load(Ordering::Relaxed);
    let arg2 = r.arg2.load(Ordering::Relaxed);
    // SAFETY: `publish` stored an `XcFunc` there before publishing the record.
    let f: XcFunc = unsafe { core::mem::transmute::<usize, XcFunc>(func) };
    // Only this class's runner on this CPU writes it (`xcall/N`, one softint level, or the
    // caller holding that level).
    let n = &x.received[class];
    n.store(n.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    crate::trace::event!(crate::trace::Kind::XcallRun, ticket(class, seq), 0);
    f(arg1, arg2);
    crate::trace::event!(crate::trace::Kind::XcallRunDone, ticket(class, seq), 0);
    let left = left_behind();
    if left != (0, 0) {
        callback_misbehaved(c, class, seq, bit, left);
    }
    x.seen[class].store(seq, Ordering::Relaxed);
    count_done(c, class, seq, bit);
}

/// Runs, on this CPU, every published call of class `class` that names it. Called by the
/// `xcall/N` thread (low) or, as the class's softint handler, by its softint thread or a
/// caller running its own share inline as that softint (high; the two exclude each other on a
/// CPU): the only writers of this CPU's `seen` for the class.
fn run_class(class: usize) {
    let c = &CLASSES[class];
    let x = XCALL.get();
    let me = curcpu().index();
    let bit = 1u64 << me;
    let mut seen = x.seen[class]
        .load(Ordering::Relaxed)
        .max(c.done.load(Ordering::Acquire));
    loop {
        let next = seen + 1;
        let r = &c.records[(next % RING as u64) as usize];
        let t1 = r.ready.load(Ordering::Acquire);
        if t1 < next {
            break; // not published yet (or nothing more): its publisher kicks us again
        }
        let targets = r.targets.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        let t2 = r.ready.load(Ordering::Relaxed);
        if t1 == next && t2 == next && targets & bit != 0 {
            // Named here: the record cannot be reused before this CPU counts itself done.
            run_call(c, x, class, next, bit);
        }
        // Otherwise reused (so done, so not ours), or not ours.
        seen = next;
        x.seen[class].store(seen, Ordering::Relaxed);
    }
}

/// What a callback left behind: (kpreempt_disable depth, spin mutexes held). Read in the
/// `xcall/N` thread or a softint thread, both bound to this CPU, so `curcpu()` stays right
/// without masking IRQs.
#[inline(always)]
fn left_behind() -> (u32, u32) {
    (
        crate::sched::curlwp().nopreempt.load(Ordering::Relaxed),
        curcpu().mtx_count.load(Ordering::Relaxed),
    )
}

/// This CPU has run call `seq` of class `class` (`c`): clears its bit in the record, and the
/// CPU that clears the last counts the call done.
#[inline(always)]
fn count_done(c: &Class, class: usize, seq: u64, bit: u64) {
    let r = &c.records[(seq % RING as u64) as usize];
    if r.remaining.fetch_and(!bit, Ordering::AcqRel) == bit {
        crate::trace::event!(crate::trace::Kind::XcallDone, ticket(class, seq), 0);
        complete(c, seq);
    }
}

/// A callback of call `seq` broke a rule: counts the call run and done first, so a
/// misbehaving callback still runs once and its caller's wait ends, then says which rule.
#[cold]
#[inline(never)]
fn callback_misbehaved(c: &Class, class: usize, seq: u64, bit: u64, left: (u32, u32)) -> ! {
    // Still this CPU's to read: the record is not reused before it counts itself done.
    let func = c.records[(seq % RING as u64) as usize]
        .func
        .load(Ordering::Relaxed);
    XCALL.get().seen[class].store(seq, Ordering::Relaxed);
    count_done(c, class, seq, bit);
    let (nopreempt, held) = left;
    assert!(
        nopreempt == 0,
        "xcall: callback at {func:#x} returned with preemption disabled"
    );
    panic!("xcall: callback at {func:#x} returned holding {held} spin mutex(es)")
}

/// Counts call `seq` of class `c` done and advances the class's `done` over every
/// consecutive finished call; wakes the waiters if it moved.
fn complete(c: &Class, seq: u64) {
    let r = &c.records[(seq % RING as u64) as usize];
    let g = c.lock.lock();
    r.done.store(seq, Ordering::Relaxed);
    if c.done.load(Ordering::Relaxed) + 1 != seq {
        // Finished ahead of an earlier call: whoever completes that one advances over this.
        return;
    }
    let mut done = seq;
    while c.records[((done + 1) % RING as u64) as usize]
        .done
        .load(Ordering::Relaxed)
        == done + 1
    {
        done += 1;
    }
    c.done.store(done, Ordering::Release);
    drop(g);
    // Pairs with the fence in `sleep_until`: either the sleeper's count is seen here, or the
    // sleeper's check sees the new `done` and does not sleep.
    fence(Ordering::SeqCst);
    if c.sleepers.load(Ordering::Relaxed) != 0 {
        c.waiters.wake_all();
    }
}

/// Sleeps on class `c`'s queue while `check` holds (as `SleepQueue::sleep`), counted in
/// `sleepers` so that [`complete`] skips the queue when nobody sleeps. The count is raised
/// and fenced before `check` reads `done`; `complete` stores `done` and fences before it
/// reads the count (Dekker's handshake), so a completion is never missed.
fn sleep_until(
    c: &Class,
    deadline: Option<u64>,
    check: impl FnOnce() -> bool,
) -> crate::sched::sleepq::Wake {
    c.sleepers.fetch_add(1, Ordering::Relaxed);
    fence(Ordering::SeqCst);
    let w = c.waiters.sleep(deadline, check);
    c.sleepers.fetch_sub(1, Ordering::Relaxed);
    w
}

/// `xc_wait(ticket)`: returns once every call of the ticket's class up to and including
/// `ticket` is done on all its targets (at once for ticket 0 or an old ticket). A wait that
/// lasts [`REPORT_AFTER_MS`] reports, once, which CPUs have not answered. Context: thread,
/// IPL_NONE (it sleeps).
pub fn xc_wait(t: u64) {
    // Test image only: a planted bug takes a call that no target has finished for done
    // (callers of `xc_wait` only: `xc_barrier` and the `_with` calls, whose callbacks borrow
    // from the caller, wait with `wait_done`).
    #[cfg(feature = "ktest")]
    {
        let (class, seq) = untick(t);
        let r = &CLASSES[class.min(NCLASSES - 1)].records[(seq % RING as u64) as usize];
        if seq != 0
            && r.ready.load(Ordering::Acquire) == seq
            && r.remaining.load(Ordering::Acquire) == r.targets.load(Ordering::Relaxed)
            && crate::inject::planted(crate::inject::Bug::XcallDoneEarly)
        {
            return;
        }
    }
    wait_done(t);
}

/// [`xc_wait`] itself: the lock-free check here, the waiting out of line.
#[inline(always)]
fn wait_done(t: u64) {
    let (class, seq) = untick(t);
    let c = &CLASSES[class.min(NCLASSES - 1)];
    if seq == 0 || c.done.load(Ordering::Acquire) >= seq {
        return;
    }
    // One `yield` round here: a high-priority call to another CPU is usually done by then
    // (in QEMU the `yield` hands the turn to the other vCPUs).
    arch::cpu_relax();
    if c.done.load(Ordering::Acquire) >= seq {
        return;
    }
    wait_slow(class, seq);
}

/// Waits for `done` of class `class` to reach `seq`: a few `yield` rounds, then asleep (out
/// of line, so that the short wait saves few registers).
#[inline(never)]
fn wait_slow(class: usize, seq: u64) {
    let c = &CLASSES[class.min(NCLASSES - 1)];
    // A short wait is the common case (a high-priority call is a few hundred instructions
    // away): look again a few times, each `yield` letting the other CPUs run (in QEMU it ends
    // this vCPU's turn). Not `wfe`: with no event pending it may sleep until the next tick.
    for _ in 0..32 {
        arch::cpu_relax();
        if c.done.load(Ordering::Acquire) >= seq {
            return;
        }
    }
    wait_asleep(class, seq);
}

/// The rest of [`wait_slow`]: asleep on the class's queue, with the stuck-call report.
#[inline(never)]
fn wait_asleep(class: usize, seq: u64) {
    let c = &CLASSES[class.min(NCLASSES - 1)];
    crate::sync::assert_sleepable("xc_wait");
    let deadline = arch::counter() + crate::clock::ms_to_counter(REPORT_AFTER_MS);
    let w = sleep_until(c, Some(deadline), || c.done.load(Ordering::Acquire) < seq);
    if w == crate::sched::sleepq::Wake::TimedOut && c.done.load(Ordering::Acquire) < seq {
        report_stuck(class, seq);
    }
    while c.done.load(Ordering::Acquire) < seq {
        let _ = sleep_until(c, None, || c.done.load(Ordering::Acquire) < seq);
    }
}

/// Prints which CPUs have not run which calls of class `class` up to `seq`.
fn report_stuck(class: usize, seq: u64) {
    let c = &CLASSES[class];
    let done = c.done.load(Ordering::Acquire);
    crate::kprintln!(
        "xc_wait: ticket {:#x} not done after {} ms (class done up to {done}); not answered:",
        ticket(class, seq),
        REPORT_AFTER_MS
    );
    for s in done + 1..=seq.min(done + RING as u64) {
        let r = &c.records[(s % RING as u64) as usize];
        if r.ready.load(Ordering::Acquire) != s || r.done.load(Ordering::Acquire) == s {
            continue;
        }
        let targets = r.targets.load(Ordering::Relaxed);
        for cpu in (0..MAXCPUS).filter(|&cpu| targets & (1 << cpu) != 0) {
            let seen = XCALL.on_cpu(cpu).seen[class].load(Ordering::Relaxed);
            if seen < s {
                crate::kprintln!(
                    "  ticket {:#x}: cpu{cpu} (has looked up to {seen})",
                    ticket(class, s)
                );
            }
        }
    }
}

/// `xc_barrier(flags)`: an empty broadcast of the class in `flags`, waited for: every call of
/// that class issued before it has run everywhere, and (for a high class) every CPU has
/// passed through its softint level once. Context: as [`xc_broadcast`].
pub fn xc_barrier(flags: u32) {
    fn nothing(_: usize, _: usize) {}
    wait_done(xc_broadcast(flags, nothing, 0, 0));
}

/// Runs `f` on every online CPU (in the class of `flags`) and returns when it has run
/// everywhere, so `f` may borrow from the caller. Context: as [`xc_broadcast`].
pub fn xc_broadcast_with<F: Fn(&CpuInfo) + Sync>(flags: u32, f: F) {
    fn tramp<F: Fn(&CpuInfo) + Sync>(p: usize, _: usize) {
        // SAFETY: `xc_broadcast_with` passes `&F` and waits for every call before `f` goes
        // out of scope; `F: Sync` makes sharing it between CPUs sound.
        let f = unsafe { &*(p as *const F) };
        f(curcpu());
    }
    wait_done(xc_broadcast(flags, tramp::<F>, &f as *const F as usize, 0));
}

/// Runs `f` on CPU `cpu` (in the class of `flags`) and returns when it has run. Context: as
/// [`xc_unicast`].
pub fn xc_unicast_with<F: Fn(&CpuInfo) + Sync>(flags: u32, cpu: usize, f: F) {
    fn tramp<F: Fn(&CpuInfo) + Sync>(p: usize, _: usize) {
        // SAFETY: as in `xc_broadcast_with`.
        let f = unsafe { &*(p as *const F) };
        f(curcpu());
    }
    wait_done(xc_unicast(
        flags,
        tramp::<F>,
        &f as *const F as usize,
        0,
        cpu,
    ));
}

/// The body of `xcall/N`: runs low-priority calls for this CPU as they are published.
fn xcall_thread(cpu: usize) {
    let x = XCALL.get();
    let c = &CLASSES[0];
    loop {
        // Calls are published in ticket order, so `head` past what this CPU has looked at
        // (or past `done`, which it may skip to) means work to look at.
        let _ = x.wake.sleep(None, || {
            x.seen[0]
                .load(Ordering::Relaxed)
                .max(c.done.load(Ordering::Acquire))
                >= c.head.load(Ordering::Acquire)
        });
        run_class(0);
        debug_assert_eq!(curcpu().index(), cpu);
    }
}

/// Creates the `xcall/N` threads and the high-priority softints; calls go to every CPU from
/// then on. Boot CPU, after `softint::init`.
pub fn init() {
    for (i, (flags, ipl)) in [
        (SOFTINT_CLOCK, IPL_SOFTCLOCK),
        (SOFTINT_BIO, IPL_SOFTBIO),
        (SOFTINT_NET, IPL_SOFTNET),
        (SOFTINT_SERIAL, IPL_SOFTSERIAL),
    ]
    .into_iter()
    .enumerate()
    {
        debug_assert_eq!(ipl.as_u8() as usize, i + 1);
        let h = softint_establish(flags | SOFTINT_MPSAFE, run_class, i + 1)
            .expect("xcall: no softint slot left");
        SOFTINTS[i].store(h.to_raw(), Ordering::Release);
    }
    for ci in crate::cpu::cpus().filter(|ci| ci.is_online()) {
        let cpu = ci.index();
        kthread_create(
            PRI_XCALL as i32,
            KTHREAD_MPSAFE,
            Some(cpu),
            xcall_thread,
            cpu,
            None,
            format_args!("xcall/{cpu}"),
        )
        .expect("xcall: cannot create the xcall threads");
    }
    READY.store(true, Ordering::Release);
    crate::softint::set_barrier_hook(|ipl| xc_barrier(XC_HIGHPRI_IPL(ipl)));
    // `trace_control::set_mask` has every CPU execute an `isb` after it patched the trace sites.
    crate::trace_control::set_sync_hook(|| {
        xc_broadcast_with(XC_HIGHPRI, |_| crate::arch::aarch64::trace::isb())
    });
}

/// Whether cross calls reach the other CPUs yet ([`init`] has run).
pub fn ready() -> bool {
    READY.load(Ordering::Acquire)
}

const _: () = assert!(MAXCPUS <= 64, "a record's targets are one 64-bit mask");
const _: () = assert!(IPL_NONE.as_u8() == 0);
