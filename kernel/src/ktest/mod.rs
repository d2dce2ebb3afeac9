//! The in-kernel test harness.
//!
//! Tests register themselves with [`ktest!`](crate::ktest!): the macro places a [`KTest`]
//! descriptor in the `.ktest` linker section, and [`run_all`] walks that section, so adding a
//! test never means editing a central list. A test is an ordinary function that checks with
//! `assert!`; it fails by panicking. Options, written as attributes inside the macro:
//!
//! - `#[all_cpus]`: run on every online CPU at once (CPU 0 included) instead of on CPU 0 only;
//! - `#[should_panic("text")]`: passes only if the test panics or faults with a message
//!   containing `text` (so the fault path itself is tested);
//! - `#[min_cpus(n)]`: skipped on machines with fewer online CPUs;
//! - `#[timeout_ms(n)]`: the watchdog limit, in virtual time (default [`DEFAULT_TIMEOUT_MS`];
//!   `ktest.timeout_ms=N` on the command line sets one limit for every test);
//! - `#[requires(f)]`: skipped when `f()` names something the machine lacks (`Some(reason)`),
//!   e.g. a device only some boards have.
//!
//! A panic or synchronous fault inside a test does not stop the run: each CPU runs its test
//! under a recovery point (`arch::aarch64::recover`), and the panic handler and the fault
//! handler hand control back to the harness, which records the message. A test that hangs is
//! caught by the watchdog, which every CPU's clock tick checks: it names the test, prints the
//! summary and leaves QEMU with a failure status (the hung CPU cannot be recovered).
//!
//! Output: one line per test (`ok`, `FAIL` with the message, or `skip` with the reason), then
//! exactly `N passed, N failed` (`, N skipped` when some were skipped). QEMU exits with status
//! 0 only when nothing failed. `ktest.filter=TEXT` on the command line runs only tests whose
//! name contains TEXT (`A,B`: contains A or B).

pub mod kvm_selftest;
mod suite;
pub mod trace_workload;

use crate::arch::aarch64::recover::{RecoveryPoint, call_with_recovery, resume};
use crate::arch::aarch64::vectors::TrapFrame;
use crate::arch::aarch64::{self as arch};
use crate::console::emergency_write;
use crate::cpu::{MAXCPUS, cpus, curcpu, ncpu_online};
use crate::sched::sleepq::SleepQueue;
use crate::sync::SpinLock;
use crate::{clock, kprintln};
use core::cell::UnsafeCell;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Watchdog limit for a test that sets none, in milliseconds of virtual time.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;

/// A registered test. Built by [`ktest!`](crate::ktest!) with the `const` builders below.
#[derive(Debug)]
pub struct KTest {
    /// `module::function`.
    pub name: &'static str,
    /// The test body.
    pub func: fn(),
    /// Run on every online CPU at once.
    pub all_cpus: bool,
    /// Passes only if it panics with a message containing this.
    pub should_panic: Option<&'static str>,
    /// Skip unless at least this many CPUs are online.
    pub min_cpus: usize,
    /// Watchdog limit in milliseconds.
    pub timeout_ms: u64,
    /// Skip when this returns `Some(reason)`.
    pub requires: Option<fn() -> Option<&'static str>>,
}

impl KTest {
    /// A single-CPU test with default options.
    pub const fn new(name: &'static str, func: fn()) -> Self {
        Self {
            name,
            func,
            all_cpus: false,
            should_panic: None,
            min_cpus: 1,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            requires: None,
        }
    }

    /// `#[all_cpus]`.
    pub const fn all_cpus(mut self) -> Self {
        self.all_cpus = true;
        self
    }

    /// `#[should_panic("text")]`.
    pub const fn should_panic(mut self, text: &'static str) -> Self {
        self.should_panic = Some(text);
        self
    }

    /// `#[min_cpus(n)]`.
    pub const fn min_cpus(mut self, n: usize) -> Self {
        self.min_cpus = n;
        self
    }

    /// `#[timeout_ms(n)]`.
    pub const fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = ms;
        self
    }

    /// `#[requires(f)]`.
    pub const fn requires(mut self, f: fn() -> Option<&'static str>) -> Self {
        self.requires = Some(f);
        self
    }

    /// The name without the suite's module prefix.
    pub fn short_name(&self) -> &'static str {
        self.name
            .strip_prefix("kernel::ktest::suite::")
            .unwrap_or(self.name)
    }
}

/// Defines and registers an in-kernel test; see the [module documentation](crate::ktest).
///
/// ```ignore
/// ktest! {
///     #[all_cpus]
///     fn curcpu_matches_mpidr() { assert_eq!(curcpu().mpidr(), ...); }
/// }
/// ```
#[macro_export]
macro_rules! ktest {
    ($(#[$attr:ident $(($($arg:expr),*))?])* fn $name:ident() $body:block) => {
        fn $name() $body
        const _: () = {
            #[used]
            #[unsafe(link_section = ".ktest")]
            static TEST: $crate::ktest::KTest =
                $crate::ktest::KTest::new(concat!(module_path!(), "::", stringify!($name)), $name)
                $(.$attr($($($arg),*)?))*;
        };
    };
}

unsafe extern "C" {
    static __ktest_start: u8;
    static __ktest_end: u8;
}

/// Every registered test, in link order.
pub fn tests() -> &'static [KTest] {
    // SAFETY: the linker script collects exactly the `KTest` statics of the `.ktest` section
    // between these symbols; they are 8-byte aligned and their size is a multiple of 8, so
    // the section is an array of `KTest`.
    unsafe {
        let start = core::ptr::addr_of!(__ktest_start) as *const KTest;
        let end = core::ptr::addr_of!(__ktest_end) as *const KTest;
        core::slice::from_raw_parts(start, end.offset_from(start) as usize)
    }
}

/// A fixed-size message buffer (no allocation on the panic path).
#[derive(Clone)]
struct Message {
    buf: [u8; 240],
    len: usize,
}

impl Message {
    const fn new() -> Self {
        Self {
            buf: [0; 240],
            len: 0,
        }
    }
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("<message not UTF-8>")
    }
}

impl Write for Message {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for ch in s.chars() {
            let ch = if ch == '\n' { ' ' } else { ch };
            let mut tmp = [0u8; 4];
            let bytes = ch.encode_utf8(&mut tmp).as_bytes();
            if self.len + bytes.len() > self.buf.len() {
                break;
            }
            self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
        }
        Ok(())
    }
}

/// One CPU's test state.
struct Slot {
    /// Where a panic or fault in the running test resumes.
    point: UnsafeCell<RecoveryPoint>,
    /// A test is running on this CPU under `point`.
    active: AtomicBool,
    /// The last run ended by panic or fault, with this message.
    message: SpinLock<Message>,
    /// The worker thread of this CPU (runs the tests posted here).
    owner: AtomicUsize,
    /// Where the worker waits for a test.
    wake: SleepQueue,
    /// Test posted to this CPU's worker by the harness.
    job: AtomicPtr<KTest>,
    /// The posted test has finished.
    done: AtomicBool,
    /// How it ended: true = returned normally.
    returned: AtomicBool,
}

// SAFETY: `point` is only touched by the CPU that owns the slot (in `run_here` and in that
// CPU's panic/fault path); everything else is atomic or locked.
unsafe impl Sync for Slot {}

static SLOTS: [Slot; MAXCPUS] = [const {
    Slot {
        point: UnsafeCell::new(RecoveryPoint::new()),
        active: AtomicBool::new(false),
        message: SpinLock::new(Message::new()),
        owner: AtomicUsize::new(0),
        wake: SleepQueue::new(),
        job: AtomicPtr::new(core::ptr::null_mut()),
        done: AtomicBool::new(false),
        returned: AtomicBool::new(false),
    }
}; MAXCPUS];

/// A panic or fault in a thread a test created (not the test's own thread): it fails the
/// running test; the thread is ended.
static HELPER_FAILURE: SpinLock<Option<Message>> = SpinLock::new(None);

/// Counter value after which the running test is declared hung; 0 = no test running.
static DEADLINE: AtomicU64 = AtomicU64::new(0);
static CURRENT: AtomicPtr<KTest> = AtomicPtr::new(core::ptr::null_mut());
/// Set when a CPU's part of an `#[all_cpus]` test panicked or faulted: the other CPUs' waits
/// in [`all_cpus_barrier`] and [`wait_until`] then give up instead of waiting forever.
static ABORT: AtomicBool = AtomicBool::new(false);
/// How the panic of a CPU that gave up because of [`ABORT`] begins.
const ABANDONED: &str = "abandoned: another CPU failed this test";
static PASSED: AtomicU32 = AtomicU32::new(0);
static FAILED: AtomicU32 = AtomicU32::new(0);
static SKIPPED: AtomicU32 = AtomicU32::new(0);

extern "C" fn trampoline(arg: usize) {
    // SAFETY: `run_here` passes the address of a `KTest` that lives in the static section.
    let test = unsafe { &*(arg as *const KTest) };
    (test.func)();
}

/// Runs `test` on this CPU under a recovery point. Returns true if it returned normally (and
/// at the IPL it was entered at).
fn run_here(test: &'static KTest) -> bool {
    let slot = &SLOTS[curcpu().index()];
    slot.message.lock().len = 0;
    let ipl = crate::spl::curipl();
    slot.active.store(true, Ordering::Release);
    // SAFETY: the slot's recovery point belongs to this CPU and outlives the call.
    let returned =
        unsafe { call_with_recovery(slot.point.get(), trampoline, test as *const KTest as usize) };
    slot.active.store(false, Ordering::Release);
    if !returned {
        // The test was abandoned, possibly inside an interrupt handler, at a raised IPL,
        // holding spin mutexes (which stay locked: they belonged to the test), the kernel lock
        // or with preemption disabled.
        curcpu().mtx_count.store(0, Ordering::Relaxed);
        crate::intr::reset_after_abandon(ipl);
        reset_thread_after_abandon();
        return false;
    }
    let after = crate::spl::curipl();
    if after != ipl {
        crate::intr::reset_after_abandon(ipl);
        let mut m = slot.message.lock();
        m.len = 0;
        let _ = write!(
            m,
            "returned at {after}, entered at {ipl}: an spl raise was not undone"
        );
        return false;
    }
    true
}

/// Called by the panic handler. If a test is running on this CPU, records the message and
/// resumes the harness; otherwise returns and the panic proceeds.
pub fn on_panic(info: &core::panic::PanicInfo<'_>) {
    if arch::read_tpidr() == 0 || !crate::sched::started() {
        return;
    }
    let slot = &SLOTS[curcpu().index()];
    if !is_test_thread(slot) {
        let mut m = Message::new();
        let _ = write!(
            m,
            "thread {}: {}",
            crate::sched::curlwp().name(),
            info.message()
        );
        end_helper(m);
        return;
    }
    if !slot.active.swap(false, Ordering::AcqRel) {
        return;
    }
    ABORT.store(true, Ordering::Release);
    if let Some(mut m) = slot.message.try_lock() {
        m.len = 0;
        let _ = write!(m, "{}", info.message());
        if let Some(loc) = info.location() {
            let _ = write!(m, " (at {}:{})", loc.file(), loc.line());
        }
    }
    // SAFETY: the slot was active, so `run_here` on this CPU is inside `call_with_recovery`
    // with this point, on this stack.
    unsafe { resume(slot.point.get()) }
}

/// Whether the running thread is this CPU's test worker inside a test.
fn is_test_thread(slot: &Slot) -> bool {
    slot.active.load(Ordering::Acquire)
        && slot.owner.load(Ordering::Relaxed) == crate::sched::curlwp_ptr() as usize
}

/// A thread created by a test panicked or faulted: fail the running test with `m` and end the
/// thread (returns only if it cannot be ended that way, and the panic proceeds).
fn end_helper(m: Message) {
    let l = crate::sched::curlwp();
    let ci = curcpu();
    if CURRENT.load(Ordering::Acquire).is_null()
        || l.stack_index().is_none()
        || ci.intr_depth.load(Ordering::Relaxed) != 0
    {
        return;
    }
    emergency_write(format_args!("      {}\n", m.as_str()));
    *HELPER_FAILURE.lock() = Some(m);
    // Work it ran inline as a soft interrupt (a cross call's own share): the level is given
    // back and the thread ends as an ordinary one.
    crate::softint::abandon_inline();
    if l.softint_level().is_some() {
        // A soft interrupt handler: end that handler only; the thread it interrupted (whose
        // IPL and spin mutexes are its own) resumes.
        crate::sync::kernel_lock::release_abandoned(l);
        crate::softint::abandon_handler();
    }
    ci.mtx_count.store(0, Ordering::Relaxed);
    crate::intr::reset_after_abandon(crate::spl::IPL_NONE);
    reset_thread_after_abandon();
    crate::kthread::kthread_exit(-1)
}

/// The running thread's part of recovering from an abandoned test: a soft level it held for
/// work run inline given back, preemption enabled again, and the kernel lock released if the
/// thread held it (or was taking it).
fn reset_thread_after_abandon() {
    crate::softint::abandon_inline();
    let l = crate::sched::curlwp();
    l.nopreempt.store(0, Ordering::Relaxed);
    crate::sync::kernel_lock::release_abandoned(l);
}

/// Called by the synchronous-exception handler. If a test is running on this CPU, prints the
/// fault report, records the description and resumes the harness; otherwise returns.
pub fn on_fault(frame: &TrapFrame, what: &dyn fmt::Display) {
    if !crate::sched::started() {
        return;
    }
    let slot = &SLOTS[curcpu().index()];
    if !is_test_thread(slot) {
        crate::fault::print_fault_report(frame, what);
        let mut m = Message::new();
        let _ = write!(
            m,
            "thread {}: {what} at {:#x}",
            crate::sched::curlwp().name(),
            frame.elr
        );
        end_helper(m);
        return;
    }
    if !slot.active.swap(false, Ordering::AcqRel) {
        return;
    }
    ABORT.store(true, Ordering::Release);
    crate::fault::print_fault_report(frame, what);
    if let Some(mut m) = slot.message.try_lock() {
        m.len = 0;
        let _ = write!(m, "{what} at {:#x} (FAR {:#x})", frame.elr, frame.far);
    }
    // SAFETY: as in `on_panic`; the exception frame below the recovery point is abandoned.
    unsafe { resume(slot.point.get()) }
}

/// The harness waits here for workers to finish their part of a test.
static DONE: SleepQueue = SleepQueue::new();

/// A worker: one bound kernel thread per CPU (priority 200, kernel real-time) that runs the
/// tests posted to its CPU, so that every test runs in a kernel thread with its own guarded
/// stack and may sleep.
fn worker_main(cpu: usize) {
    let slot = &SLOTS[cpu];
    slot.owner
        .store(crate::sched::curlwp_ptr() as usize, Ordering::Release);
    loop {
        let _ = slot
            .wake
            .sleep(None, || slot.job.load(Ordering::Acquire).is_null());
        let job = slot.job.swap(core::ptr::null_mut(), Ordering::AcqRel);
        if job.is_null() {
            continue;
        }
        // SAFETY: the harness posts only pointers to `KTest` statics.
        let test = unsafe { &*job };
        let returned = run_here(test);
        slot.returned.store(returned, Ordering::Relaxed);
        slot.done.store(true, Ordering::Release);
        DONE.wake_all();
    }
}

/// Creates the workers, one per online CPU.
pub(crate) fn start_workers() {
    for ci in cpus().filter(|ci| ci.is_online()) {
        let cpu = ci.index();
        crate::kthread::kthread_create(
            200,
            crate::kthread::KTHREAD_MPSAFE,
            Some(cpu),
            worker_main,
            cpu,
            None,
            format_args!("ktest/{cpu}"),
        )
        .expect("ktest: cannot create a worker thread");
    }
    for ci in cpus().filter(|ci| ci.is_online()) {
        let slot = &SLOTS[ci.index()];
        while slot.owner.load(Ordering::Acquire) == 0 {
            crate::kthread::kpause(1);
        }
    }
}

/// Called from every CPU's clock tick with the current counter value.
pub fn watchdog_check(now: u64) {
    let deadline = DEADLINE.load(Ordering::Relaxed);
    if deadline == 0 || now <= deadline {
        return;
    }
    if DEADLINE
        .compare_exchange(deadline, 0, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    let current = CURRENT.load(Ordering::Acquire);
    let (name, limit) = if current.is_null() {
        ("<unknown>", 0)
    } else {
        // SAFETY: CURRENT only ever holds pointers to `KTest` statics.
        let t = unsafe { &*current };
        (t.short_name(), t.timeout_ms)
    };
    emergency_write(format_args!(
        "FAIL  {name}: watchdog: not finished after {limit} ms of virtual time (noticed on cpu{})\n",
        curcpu().index()
    ));
    for ci in cpus() {
        let slot = &SLOTS[ci.index()];
        emergency_write(format_args!(
            "      cpu{}: {}, {} ticks\n",
            ci.index(),
            if slot.active.load(Ordering::Relaxed) {
                "still in the test"
            } else {
                "not in a test"
            },
            ci.tick_count.load(Ordering::Relaxed)
        ));
    }
    if crate::sched::started() {
        for l in crate::sched::lwp_list() {
            emergency_write(format_args!(
                "      thread {:<12} {:<6} pri {:>3} cpu{}{}\n",
                l.name,
                l.state.name(),
                l.pri,
                l.cpu,
                if l.bound.is_some() { " (bound)" } else { "" }
            ));
        }
    }
    FAILED.fetch_add(1, Ordering::Relaxed);
    print_summary(true);
    crate::platform::platform().exit(1);
}

fn print_summary(emergency: bool) {
    let (p, f, s) = (
        PASSED.load(Ordering::Relaxed),
        FAILED.load(Ordering::Relaxed),
        SKIPPED.load(Ordering::Relaxed),
    );
    let mut line = Message::new();
    let _ = write!(line, "{p} passed, {f} failed");
    if s > 0 {
        let _ = write!(line, ", {s} skipped");
    }
    if emergency {
        emergency_write(format_args!("{}\n", line.as_str()));
    } else {
        kprintln!("{}", line.as_str());
    }
}

/// Runs one test everywhere it should run; returns whether it passed, with the reason in
/// `failure` when it did not.
fn run_one(test: &'static KTest, failure: &mut Message) -> bool {
    let mut posted = [false; MAXCPUS];
    for ci in cpus().filter(|ci| ci.is_online() && (test.all_cpus || ci.index() == 0)) {
        let slot = &SLOTS[ci.index()];
        slot.done.store(false, Ordering::Relaxed);
        slot.job
            .store(test as *const KTest as *mut KTest, Ordering::Release);
        posted[ci.index()] = true;
    }
    // Wake them all before this CPU's worker (higher priority) preempts the harness.
    crate::sched::kpreempt_disable();
    for (cpu, _) in posted.iter().enumerate().filter(|(_, p)| **p) {
        SLOTS[cpu].wake.wake_one();
    }
    crate::sched::kpreempt_enable();
    let all_done = || {
        posted
            .iter()
            .enumerate()
            .all(|(cpu, p)| !p || SLOTS[cpu].done.load(Ordering::Acquire))
    };
    while !all_done() {
        let _ = DONE.sleep(None, || !all_done());
    }
    let mut outcomes = [true; MAXCPUS];
    for (cpu, _) in posted.iter().enumerate().filter(|(_, p)| **p) {
        outcomes[cpu] = SLOTS[cpu].returned.load(Ordering::Relaxed);
    }
    if let Some(m) = HELPER_FAILURE.lock().take() {
        outcomes[0] = false;
        *SLOTS[0].message.lock() = m;
    }

    let ran_on = |cpu: usize| posted[cpu];
    match test.should_panic {
        None => {
            // The CPUs' own failures first, then how many CPUs gave up because of them: on a
            // large machine the abandoned ones would otherwise fill the message before the
            // failure that caused them.
            let failed = |c: usize| ran_on(c) && !outcomes[c];
            let abandoned = |c: usize| SLOTS[c].message.lock().as_str().starts_with(ABANDONED);
            let mut gave_up = 0;
            for cpu in (0..MAXCPUS).filter(|&c| failed(c)) {
                if abandoned(cpu) {
                    gave_up += 1;
                } else {
                    let _ = write!(
                        failure,
                        "cpu{cpu}: {}; ",
                        SLOTS[cpu].message.lock().as_str()
                    );
                }
            }
            if gave_up != 0 {
                let _ = write!(failure, "{gave_up} other CPUs abandoned the test; ");
            }
            (0..MAXCPUS).all(|c| !failed(c))
        }
        Some(expected) => {
            let mut ok = true;
            for cpu in (0..MAXCPUS).filter(|&c| ran_on(c)) {
                let msg = SLOTS[cpu].message.lock();
                if outcomes[cpu] {
                    ok = false;
                    let _ = write!(
                        failure,
                        "cpu{cpu}: returned, expected a panic containing {expected:?}; "
                    );
                } else if !msg.as_str().contains(expected) {
                    ok = false;
                    let _ = write!(
                        failure,
                        "cpu{cpu}: panicked with {:?}, expected it to contain {expected:?}; ",
                        msg.as_str()
                    );
                }
            }
            ok
        }
    }
}

/// Whether `ktest.filter` selects the test called `name`: no filter selects every test; a filter
/// is a comma-separated list of fragments and selects the tests whose name contains any of them.
fn selected_by(filter: Option<&str>, name: &str) -> bool {
    filter.is_none_or(|f| f.is_empty() || f.split(',').any(|p| !p.is_empty() && name.contains(p)))
}

/// Runs every registered test (matching `ktest.filter`), prints the summary and leaves QEMU
/// with status 0 if nothing failed, 1 otherwise. Boot CPU, after all CPUs are up.
pub fn run_all() -> ! {
    let filter = crate::bootinfo::bootarg("ktest.filter");
    // `ktest.timeout_ms=N`: one watchdog limit for every test (long torture runs).
    let timeout_override =
        crate::bootinfo::bootarg("ktest.timeout_ms").and_then(|v| v.parse::<u64>().ok());
    let all = tests();
    let selected = all.iter().filter(|t| selected_by(filter, t.name)).count();
    let online = ncpu_online();
    kprintln!(
        "ktest: running {selected} of {} tests on {online} CPUs",
        all.len()
    );
    crate::fault::set_recovery_hooks(crate::fault::RecoveryHooks { on_panic, on_fault });
    clock::set_tick_hook(watchdog_check);
    start_workers();
    for test in all.iter().filter(|t| selected_by(filter, t.name)) {
        if online < test.min_cpus {
            SKIPPED.fetch_add(1, Ordering::Relaxed);
            kprintln!(
                "skip  {}: needs {} CPUs, {online} online",
                test.short_name(),
                test.min_cpus
            );
            continue;
        }
        if let Some(reason) = test.requires.and_then(|f| f()) {
            SKIPPED.fetch_add(1, Ordering::Relaxed);
            kprintln!("skip  {}: {reason}", test.short_name());
            continue;
        }
        CURRENT.store(test as *const KTest as *mut KTest, Ordering::Release);
        ABORT.store(false, Ordering::Release);
        BARRIER_COUNT.store(0, Ordering::Release);
        DEADLINE.store(
            arch::counter() + clock::ms_to_counter(timeout_override.unwrap_or(test.timeout_ms)),
            Ordering::Release,
        );
        let mut failure = Message::new();
        let started = arch::counter();
        let ok = run_one(test, &mut failure);
        DEADLINE.store(0, Ordering::Release);
        crate::inject::disarm_all();
        // Elapsed time is printed for people reading the log; no test judges it.
        let ms = clock::counter_to_ns(arch::counter() - started) / 1_000_000;
        if ok {
            PASSED.fetch_add(1, Ordering::Relaxed);
            kprintln!("ok    {} ({ms} ms)", test.short_name());
        } else {
            FAILED.fetch_add(1, Ordering::Relaxed);
            kprintln!(
                "FAIL  {}: {} ({ms} ms)",
                test.short_name(),
                failure.as_str().trim_end_matches("; ")
            );
        }
    }
    print_summary(false);
    let code = if FAILED.load(Ordering::Relaxed) == 0 {
        0
    } else {
        1
    };
    crate::platform::platform().exit(code)
}

/// A reusable barrier for `#[all_cpus]` tests: every online CPU waits in [`all_cpus_barrier`]
/// until all have arrived.
static BARRIER_COUNT: AtomicUsize = AtomicUsize::new(0);
static BARRIER_GENERATION: AtomicUsize = AtomicUsize::new(0);

/// Waits until every online CPU has called this (once per round). For `#[all_cpus]` tests.
pub fn all_cpus_barrier() {
    let n = ncpu_online();
    let generation = BARRIER_GENERATION.load(Ordering::Acquire);
    if BARRIER_COUNT.fetch_add(1, Ordering::AcqRel) + 1 == n {
        BARRIER_COUNT.store(0, Ordering::Relaxed);
        BARRIER_GENERATION.fetch_add(1, Ordering::Release);
        arch::send_event();
    } else {
        while BARRIER_GENERATION.load(Ordering::Acquire) == generation {
            if ABORT.load(Ordering::Acquire) {
                if BARRIER_GENERATION.load(Ordering::Acquire) != generation {
                    break;
                }
                // Leave the count as if we never came: the harness resets it for the next test.
                panic!(
                    "{ABANDONED} while cpu{} waited at a barrier",
                    curcpu().index()
                );
            }
            arch::wait_for_event();
        }
    }
}

/// Whether a CPU's part of the running test failed: threads a test started (storms, helpers)
/// stop when this turns true, so a failure does not spill into the next test.
pub fn aborted() -> bool {
    ABORT.load(Ordering::Acquire)
}

/// Spins (with `wfe`) until `cond` holds or `timeout_ms` of virtual time pass; returns whether
/// it held. Tests use it to wait for another CPU without hanging forever.
pub fn wait_until(timeout_ms: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = arch::counter() + clock::ms_to_counter(timeout_ms);
    loop {
        if cond() {
            return true;
        }
        if arch::counter() > deadline {
            return cond();
        }
        if ABORT.load(Ordering::Acquire) {
            panic!("{ABANDONED} while cpu{} waited", curcpu().index());
        }
        arch::cpu_relax();
    }
}
