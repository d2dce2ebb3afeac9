//! Torture suites: long seeded randomized runs of one primitive (or all at once) on every CPU,
//! with exact counts and seeded fault injection, in the manner of Linux's rcutorture,
//! locktorture and scftorture.
//!
//! A torture ([`Kind`]) is a set of operations on shared state: [`run`] sets it up, starts one
//! bound worker thread per online CPU, and each worker draws operations from its own
//! [`Rng`] (seeded from the run's seed and the CPU index) until the run's budget (a number of
//! operations, or milliseconds of virtual time) is spent. Every operation keeps exact counts:
//! what was asked for (schedules, enqueues, calls, wakeups) and what happened (handler runs,
//! callbacks, wakeups received). The driver checks each torture's invariants at intervals while
//! the workers run, watches that the operation count keeps moving (a lost wakeup or interrupt
//! shows up as a stall), then joins the workers, lets the torture drain (everything asked for
//! has happened) and checks the final counts: nothing lost, nothing duplicated, and the kernel's
//! thread count, stack slots, soft interrupts and heap back where they were (nothing leaked).
//!
//! The seed is printed first. Nothing but the seed, the configuration and virtual time drives
//! the run, so under QEMU's `-icount` the same seed, image and CPU count give the same log, bit
//! for bit (`cargo xtask torture --replay SEED`). With injection on ([`faults`]) the kernel's
//! injection points delay, preempt and send spurious interrupts at seeded random, and
//! `kthread_create` and `softint_establish` fail at a seeded rate; every caller must handle the
//! error and leave nothing behind. A planted bug (`crate::inject::Bug`) breaks one operation so
//! that a test can show the matching torture fails, with the seed printed.
//!
//! Compiled into the test image only (feature `ktest`); the tests in `ktest/suite/torture.rs`
//! run short versions and `cargo xtask torture` long ones.

mod faults;
mod intr;
mod locks;
mod sched;
mod softint;
mod wq;
mod xcall;

use crate::cpu::{MAXCPUS, cpus, curcpu};
use crate::inject::Bug;
use crate::kprintln;
use crate::kthread::{KTHREAD_MPSAFE, KTHREAD_MUSTJOIN, LwpRef, kthread_create, kthread_join};
use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A small fast generator (splitmix64): every random choice of a torture comes from one.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Starts from `seed`.
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `n / d`.
    pub fn chance(&mut self, n: u64, d: u64) -> bool {
        self.below(d) < n
    }
}

/// One torture: a primitive (or `All`, every one of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Thread churn, yields, sleeps, preemption windows, FP/SIMD state across switches.
    Sched,
    /// Adaptive and spin mutexes, condition variables, the kernel lock, spl nesting.
    Locks,
    /// SGI storms at three levels against spl sections, deferred delivery.
    Intr,
    /// Soft interrupts scheduled from threads, interrupts and other CPUs.
    Softint,
    /// Work queues fed from threads, softints and interrupts; create and destroy under load.
    Wq,
    /// Cross calls of every class, unicast and broadcast, from every CPU at once.
    Xcall,
    /// All of the above at once.
    All,
}

impl Kind {
    /// Every torture, `All` last.
    pub const EVERY: [Kind; 7] = [
        Kind::Sched,
        Kind::Locks,
        Kind::Intr,
        Kind::Softint,
        Kind::Wq,
        Kind::Xcall,
        Kind::All,
    ];

    /// The primitives `All` mixes.
    const PRIMITIVES: [Kind; 6] = [
        Kind::Sched,
        Kind::Locks,
        Kind::Intr,
        Kind::Softint,
        Kind::Wq,
        Kind::Xcall,
    ];

    /// Its name on the command line (`cargo xtask torture NAME`).
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Sched => "sched",
            Kind::Locks => "locks",
            Kind::Intr => "intr",
            Kind::Softint => "softint",
            Kind::Wq => "wq",
            Kind::Xcall => "xcall",
            Kind::All => "all",
        }
    }

    /// The torture called `name`.
    pub fn from_name(name: &str) -> Option<Kind> {
        Self::EVERY.into_iter().find(|k| k.name() == name)
    }

    fn parts(self) -> &'static [Kind] {
        match self {
            Kind::All => &Self::PRIMITIVES,
            Kind::Sched => &[Kind::Sched],
            Kind::Locks => &[Kind::Locks],
            Kind::Intr => &[Kind::Intr],
            Kind::Softint => &[Kind::Softint],
            Kind::Wq => &[Kind::Wq],
            Kind::Xcall => &[Kind::Xcall],
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What one run does.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// The seed of every random choice.
    pub seed: u64,
    /// Operations in all, shared among the workers (0: no limit, `ms` ends the run).
    pub ops: u64,
    /// Milliseconds of virtual time after which the workers stop (0: no limit).
    pub ms: u64,
    /// Fault injection on (delays, preemptions, spurious interrupts, allocation failures).
    pub inject: bool,
    /// A planted bug to arm once the workers run.
    pub bug: Option<Bug>,
    /// Polled by the driver every tick: once it returns true the workers stop after their
    /// current operation and the run ends with its usual checks (the monitor's Ctrl-C).
    pub cancel: Option<fn() -> bool>,
}

/// A torture's failure: what went wrong (the driver adds the seed and the counts).
pub type Failure = String;

/// How often the driver checks the invariants while the workers run, in virtual ms.
const CHECK_EVERY_MS: u64 = 100;
/// How long the operation count may stand still before the run is declared stalled.
const STALL_MS: u64 = 10_000;
/// How long draining (everything asked for has happened) may take.
const DRAIN_MS: u64 = 5_000;

/// Operations done, per primitive.
static OPS: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];
/// Set when the workers should stop early (a failure seen by a check).
static STOP: AtomicBool = AtomicBool::new(false);
/// Workers still running.
static RUNNING: AtomicU64 = AtomicU64::new(0);
/// Set once every worker exists: they wait for it, so that no worker's own thread or queue
/// creation competes with the driver's creation of the others.
static START: AtomicBool = AtomicBool::new(false);
/// Per worker: operations it must do, and its seed.
static BUDGET: [AtomicU64; MAXCPUS] = [const { AtomicU64::new(0) }; MAXCPUS];
static WORKER_SEED: [AtomicU64; MAXCPUS] = [const { AtomicU64::new(0) }; MAXCPUS];
static DEADLINE: AtomicU64 = AtomicU64::new(0);
static KIND: AtomicU64 = AtomicU64::new(0);

/// The first failure a worker or handler saw (checked by the driver).
static FIRST_FAILURE: crate::sync::SpinLock<Option<String>> = crate::sync::SpinLock::new(None);

/// Records a failure seen by a worker or a handler (any context); the run fails with it.
fn report(what: impl FnOnce() -> String) {
    if !STOP.swap(true, Ordering::AcqRel) {
        let msg = what();
        *FIRST_FAILURE.lock() = Some(msg);
    }
}

/// Whether the run is being stopped.
fn stopping() -> bool {
    STOP.load(Ordering::Acquire)
}

/// The online CPUs, as indices.
fn online() -> impl Iterator<Item = usize> {
    cpus().filter(|ci| ci.is_online()).map(|ci| ci.index())
}

/// How many CPUs are online.
fn nonline() -> u64 {
    online().count() as u64
}

/// A random online CPU.
fn random_cpu(rng: &mut Rng) -> usize {
    let n = nonline();
    online().nth(rng.below(n) as usize).unwrap_or(0)
}

/// The current CPU's index, read with IRQs masked (it may be stale once returned unless the
/// caller is pinned).
fn this_cpu() -> usize {
    let daif = crate::arch::aarch64::irq_save();
    let c = curcpu().index();
    crate::arch::aarch64::irq_restore(daif);
    c
}

/// Spins for about `n` relax rounds (under `-icount` each ends this vCPU's turn).
fn relax(n: u64) {
    for _ in 0..n {
        crate::arch::aarch64::cpu_relax();
    }
}

/// Waits (sleeping a tick at a time) until `cond` holds or `ms` of virtual time pass.
fn wait_for(ms: u64, mut cond: impl FnMut() -> bool) -> bool {
    let end = crate::arch::aarch64::counter() + crate::clock::ms_to_counter(ms);
    loop {
        if cond() {
            return true;
        }
        if crate::arch::aarch64::counter() > end {
            return cond();
        }
        crate::kthread::kpause(1);
    }
}

/// The kernel's resources a torture must give back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Resources {
    threads: usize,
    stacks: usize,
    softints: usize,
    heap: usize,
}

impl Resources {
    fn now() -> Self {
        Self {
            threads: crate::kthread::thread_count(),
            stacks: crate::sched::stack::free_count(),
            softints: crate::softint::established_count(),
            // Less what the scheduler's tables grew to (capacity kept after a peak).
            heap: crate::heap::stats().user
                - crate::sched::table_bytes()
                - crate::workqueue::table_bytes(),
        }
    }
}

fn setup(k: Kind) -> Result<(), Failure> {
    match k {
        Kind::Sched => sched::setup(),
        Kind::Locks => locks::setup(),
        Kind::Intr => intr::setup(),
        Kind::Softint => softint::setup(),
        Kind::Wq => wq::setup(),
        Kind::Xcall => xcall::setup(),
        Kind::All => Ok(()),
    }
}

fn op(k: Kind, rng: &mut Rng) {
    match k {
        Kind::Sched => sched::op(rng),
        Kind::Locks => locks::op(rng),
        Kind::Intr => intr::op(rng),
        Kind::Softint => softint::op(rng),
        Kind::Wq => wq::op(rng),
        Kind::Xcall => xcall::op(rng),
        Kind::All => {}
    }
}

/// Invariants that hold at any moment (checked while the workers run).
fn check_now(k: Kind) -> Result<(), Failure> {
    match k {
        Kind::Locks => locks::check_now(),
        Kind::Softint => softint::check_now(),
        Kind::Wq => wq::check_now(),
        Kind::Xcall => xcall::check_now(),
        _ => Ok(()),
    }
}

/// Waits until everything asked for has happened, then checks the final counts.
fn drain_and_check(k: Kind) -> Result<(), Failure> {
    match k {
        Kind::Sched => sched::finish(),
        Kind::Locks => locks::finish(),
        Kind::Intr => intr::finish(),
        Kind::Softint => softint::finish(),
        Kind::Wq => wq::finish(),
        Kind::Xcall => xcall::finish(),
        Kind::All => Ok(()),
    }
}

/// Gives back what `setup` made.
fn teardown(k: Kind) {
    match k {
        Kind::Locks => locks::teardown(),
        Kind::Softint => softint::teardown(),
        Kind::Wq => wq::teardown(),
        // Nothing to give back (the SGIs stay established, see `ensure_sgi`).
        Kind::Sched | Kind::Intr | Kind::Xcall | Kind::All => {}
    }
}

fn counts_line(k: Kind) -> String {
    match k {
        Kind::Sched => sched::counts(),
        Kind::Locks => locks::counts(),
        Kind::Intr => intr::counts(),
        Kind::Softint => softint::counts(),
        Kind::Wq => wq::counts(),
        Kind::Xcall => xcall::counts(),
        Kind::All => String::new(),
    }
}

/// Counts runs, so that a worker left behind by a stalled run cannot touch a later run's count.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// One worker: bound to CPU `arg & 0xff`, it does its share of the operations of run
/// `arg >> 8`.
fn worker(arg: usize) {
    let cpu = arg & 0xff;
    let generation = (arg >> 8) as u64;
    let mut rng = Rng::new(WORKER_SEED[cpu].load(Ordering::Relaxed));
    let kind = Kind::EVERY[KIND.load(Ordering::Relaxed) as usize];
    let parts = kind.parts();
    let budget = BUDGET[cpu].load(Ordering::Relaxed);
    let deadline = DEADLINE.load(Ordering::Relaxed);
    while !START.load(Ordering::Acquire) {
        crate::kthread::kpause(1);
    }
    let mut done = 0u64;
    while (budget == 0 || done < budget) && !stopping() {
        if deadline != 0 && done.is_multiple_of(16) && crate::arch::aarch64::counter() > deadline {
            break;
        }
        let k = parts[rng.below(parts.len() as u64) as usize];
        op(k, &mut rng);
        OPS[k.index()].fetch_add(1, Ordering::Relaxed);
        done += 1;
    }
    if GENERATION.load(Ordering::Acquire) == generation {
        RUNNING.fetch_sub(1, Ordering::AcqRel);
    }
}

fn total_ops() -> u64 {
    OPS.iter().map(|o| o.load(Ordering::Relaxed)).sum()
}

/// Prints what a failed run leaves to go on: the counts, every CPU's state and every thread.
fn print_state(kind: Kind) {
    let name = kind.name();
    kprintln!("torture {name}: operations: {}", ops_line());
    for &k in kind.parts() {
        let line = counts_line(k);
        if !line.is_empty() {
            kprintln!("torture {name}: {}: {line}", k.name());
        }
    }
    for ci in cpus().filter(|ci| ci.is_online()) {
        kprintln!(
            "torture {name}: cpu{}: ipl {}, intr depth {}, ipending {:#x}, ticks {}",
            ci.index(),
            ci.ipl.load(Ordering::Relaxed),
            ci.intr_depth.load(Ordering::Relaxed),
            ci.ipending.load(Ordering::Relaxed),
            ci.tick_count.load(Ordering::Relaxed)
        );
    }
    for l in crate::sched::lwp_list() {
        if l.name.starts_with("torture") {
            kprintln!(
                "torture {name}: thread {:<14} {:<6} pri {:>3} cpu{}",
                l.name,
                l.state.name(),
                l.pri,
                l.cpu
            );
        }
    }
}

fn ops_line() -> String {
    let mut s = String::new();
    for k in Kind::PRIMITIVES {
        let n = OPS[k.index()].load(Ordering::Relaxed);
        if n != 0 {
            s += &format!("{} {n}, ", k.name());
        }
    }
    s += &format!("total {}", total_ops());
    s
}

/// Runs torture `kind` with `cfg` on every online CPU. Prints the seed first, then one line
/// of counts per primitive and a verdict; returns a failure (with the seed in it) if anything
/// was lost, duplicated, leaked or stalled. Context: thread, IPL_NONE; it sleeps; one run at a
/// time.
pub fn run(kind: Kind, cfg: &Config) -> Result<(), Failure> {
    let name = kind.name();
    kprintln!("torture {name}: seed {:#x}", cfg.seed);
    let result = run_inner(kind, cfg);
    match &result {
        Ok(()) => {
            kprintln!("torture {name}: operations: {}", ops_line());
            for k in kind.parts() {
                kprintln!("torture {name}: {}: {}", k.name(), counts_line(*k));
            }
            if cfg.inject {
                kprintln!("torture {name}: injected: {}", faults::counts());
            }
            kprintln!("torture {name}: passed: 0 lost, 0 duplicated, 0 leaked");
        }
        Err(e) => {
            kprintln!("torture {name}: FAILED (seed {:#x}): {e}", cfg.seed);
            print_state(kind);
        }
    }
    result.map_err(|e| format!("torture {name} failed with seed {:#x}: {e}", cfg.seed))
}

fn run_inner(kind: Kind, cfg: &Config) -> Result<(), Failure> {
    let name = kind.name();
    if !cfg!(feature = "ktest") && (cfg.inject || cfg.bug.is_some()) {
        return Err(String::from(
            "fault injection and planted bugs exist only in the test image \
             (cargo xtask torture); run without them here",
        ));
    }
    for o in &OPS {
        o.store(0, Ordering::Relaxed);
    }
    STOP.store(false, Ordering::Release);
    *FIRST_FAILURE.lock() = None;
    let n = nonline();
    kprintln!(
        "torture {name}: {n} CPUs, {} ops{}, injection {}{}, {} of {} threads in use",
        cfg.ops,
        if cfg.ms != 0 {
            format!(" or {} ms", cfg.ms)
        } else {
            String::new()
        },
        if cfg.inject { "on" } else { "off" },
        match cfg.bug {
            Some(b) => format!(", planted bug {b:?}"),
            None => String::new(),
        },
        crate::kthread::thread_count(),
        crate::kthread::thread_limit()
    );
    let before = Resources::now();
    for (made, &k) in kind.parts().iter().enumerate() {
        if let Err(e) = setup(k) {
            for &k in &kind.parts()[..made] {
                teardown(k);
            }
            return Err(e);
        }
    }
    let result = run_workers(kind, cfg);
    match result {
        // Workers stuck: what they hold cannot be taken apart.
        Err(Outcome::Stalled(e)) => Err(e),
        Err(Outcome::Failed(e)) => {
            for &k in kind.parts() {
                teardown(k);
            }
            Err(e)
        }
        Ok(()) => {
            for &k in kind.parts() {
                teardown(k);
            }
            if !wait_for(DRAIN_MS, || Resources::now() == before) {
                let after = Resources::now();
                return Err(format!(
                    "leaked: threads {} -> {}, free stack slots {} -> {}, soft interrupts {} -> \
                     {}, heap bytes {} -> {}",
                    before.threads,
                    after.threads,
                    before.stacks,
                    after.stacks,
                    before.softints,
                    after.softints,
                    before.heap,
                    after.heap
                ));
            }
            Ok(())
        }
    }
}

/// How running the workers ended badly.
enum Outcome {
    /// Workers still stuck in their operations.
    Stalled(Failure),
    /// The workers are done (or stopped); the torture's state can be torn down.
    Failed(Failure),
}

/// Starts the workers, watches them, joins them and checks the final counts.
fn run_workers(kind: Kind, cfg: &Config) -> Result<(), Outcome> {
    let n = nonline();
    let mut rng = Rng::new(cfg.seed);
    KIND.store(kind as u64, Ordering::Relaxed);
    DEADLINE.store(
        if cfg.ms == 0 {
            0
        } else {
            crate::arch::aarch64::counter() + crate::clock::ms_to_counter(cfg.ms)
        },
        Ordering::Relaxed,
    );
    let cpus: alloc::vec::Vec<usize> = online().collect();
    for (i, &c) in cpus.iter().enumerate() {
        let share = cfg.ops / n + u64::from((i as u64) < cfg.ops % n);
        // A worker with no share would run unbounded (budget 0 means none): give it one.
        BUDGET[c].store(
            if cfg.ops == 0 { 0 } else { share.max(1) },
            Ordering::Relaxed,
        );
        WORKER_SEED[c].store(rng.next_u64(), Ordering::Relaxed);
    }
    if cfg.inject {
        faults::arm(rng.next_u64());
    }
    #[cfg(feature = "ktest")]
    if let Some(bug) = cfg.bug {
        crate::inject::plant(bug, 1 + rng.below(20));
    }
    let generation = GENERATION.fetch_add(1, Ordering::AcqRel) + 1;
    START.store(false, Ordering::Release);
    RUNNING.store(0, Ordering::Release);
    let mut workers: alloc::vec::Vec<LwpRef> = alloc::vec::Vec::new();
    for &c in &cpus {
        let mut l = None;
        RUNNING.fetch_add(1, Ordering::AcqRel);
        // Not subject to injected failures: the faults hook lets the driver's thread through.
        faults::exempt(true);
        let made = kthread_create(
            crate::sched::PRI_KTHREAD as i32,
            KTHREAD_MPSAFE | KTHREAD_MUSTJOIN,
            Some(c),
            worker,
            (generation as usize) << 8 | c,
            Some(&mut l),
            format_args!("torture/{c}"),
        );
        faults::exempt(false);
        if let Err(e) = made {
            RUNNING.fetch_sub(1, Ordering::AcqRel);
            // The workers made so far see STOP as soon as they start and end.
            STOP.store(true, Ordering::Release);
            START.store(true, Ordering::Release);
            faults::disarm();
            for l in workers {
                kthread_join(l);
            }
            return Err(Outcome::Failed(format!("cannot create worker {c}: {e:?}")));
        }
        workers.push(l.expect("newlp"));
    }
    START.store(true, Ordering::Release);
    let mut last = 0;
    let mut last_move = crate::arch::aarch64::counter();
    let stall = crate::clock::ms_to_counter(STALL_MS);
    let every = crate::clock::ms_to_counter(CHECK_EVERY_MS);
    let mut next_check = crate::arch::aarch64::counter() + every;
    while RUNNING.load(Ordering::Acquire) != 0 {
        crate::kthread::kpause(1);
        if cfg.cancel.is_some_and(|cancelled| cancelled()) && !STOP.load(Ordering::Relaxed) {
            kprintln!("torture {}: stopped on request", kind.name());
            STOP.store(true, Ordering::Release);
        }
        let now = crate::arch::aarch64::counter();
        let t = total_ops();
        if t != last {
            last = t;
            last_move = now;
        } else if now - last_move > stall {
            faults::disarm();
            STOP.store(true, Ordering::Release);
            return Err(Outcome::Stalled(format!(
                "stalled: no operation finished in {STALL_MS} ms of virtual time, {} \
                 worker(s) still running",
                RUNNING.load(Ordering::Relaxed)
            )));
        }
        if now >= next_check {
            next_check = now + every;
            for &k in kind.parts() {
                if let Err(e) = check_now(k) {
                    report(|| e);
                }
            }
        }
        if let Some(e) = FIRST_FAILURE.lock().clone() {
            faults::disarm();
            // Let the workers see STOP and finish their operation before judging.
            if !wait_for(DRAIN_MS, || RUNNING.load(Ordering::Acquire) == 0) {
                return Err(Outcome::Stalled(e));
            }
            for l in workers {
                kthread_join(l);
            }
            return Err(Outcome::Failed(e));
        }
    }
    for l in workers {
        kthread_join(l);
    }
    faults::disarm();
    if let Some(e) = FIRST_FAILURE.lock().clone() {
        return Err(Outcome::Failed(e));
    }
    for &k in kind.parts() {
        check_now(k).map_err(Outcome::Failed)?;
        drain_and_check(k).map_err(Outcome::Failed)?;
    }
    Ok(())
}

/// Creates a MUSTJOIN helper thread for a torture's setup (never failed by injection, which is
/// off during setup).
fn spawn_helper(func: fn(usize), arg: usize, cpu: Option<usize>) -> Result<LwpRef, Failure> {
    let mut l = None;
    kthread_create(
        crate::sched::PRI_KTHREAD as i32,
        KTHREAD_MPSAFE | KTHREAD_MUSTJOIN,
        cpu,
        func,
        arg,
        Some(&mut l),
        format_args!("torture/h{arg}"),
    )
    .map_err(|e| format!("cannot create a helper thread: {e:?}"))?;
    Ok(l.expect("newlp"))
}

/// The SGIs the tortures have established (bit = SGI number).
static SGIS_MADE: AtomicU64 = AtomicU64::new(0);

/// Establishes SGI `sgi` with `handler(arg)` at `ipl` the first time a torture needs it; it
/// stays established for later runs (its handler does nothing while no torture feeds it), so
/// that runs do not make every CPU apply a private-interrupt change each time (which waits for
/// every CPU, and on a host with many more virtual CPUs than cores may time out).
fn ensure_sgi(
    sgi: u32,
    ipl: crate::spl::Ipl,
    handler: crate::intr::IntrHandler,
    arg: usize,
) -> Result<(), Failure> {
    let bit = 1u64 << sgi;
    if SGIS_MADE.load(Ordering::Acquire) & bit != 0 {
        return Ok(());
    }
    match crate::intr::intr_establish(sgi, ipl, crate::intr::INTR_MPSAFE, handler, arg) {
        Ok(_) => {}
        // Established on the CPUs that answered; the others apply it with the next change.
        Err(crate::intr::IntrError::Timeout(_)) => {}
        Err(e) => return Err(format!("cannot establish SGI {sgi}: {e:?}")),
    }
    SGIS_MADE.fetch_or(bit, Ordering::AcqRel);
    Ok(())
}

/// Checks `got == want` for a named count.
fn expect_eq(what: &str, got: u64, want: u64) -> Result<(), Failure> {
    if got == want {
        Ok(())
    } else if got < want {
        Err(format!(
            "{what}: {got}, expected {want}: {} lost",
            want - got
        ))
    } else {
        Err(format!(
            "{what}: {got}, expected {want}: {} duplicated",
            got - want
        ))
    }
}

/// Sums a per-CPU array of counters.
fn sum(a: &[AtomicU64]) -> u64 {
    a.iter().map(|x| x.load(Ordering::Relaxed)).sum()
}
