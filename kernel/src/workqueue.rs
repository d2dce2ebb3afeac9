//! `workqueue(9)`: work deferred to a kernel thread, so it may sleep.
//!
//! A [`Workqueue`] has one queue and one worker thread, or with WQ_PERCPU one of each per
//! online CPU (the worker bound to its CPU). A queue is a list of pending [`Work`]s under a
//! spin mutex at the IPL given at creation, so [`workqueue_enqueue`] may be called from a hard
//! interrupt handler at or below that IPL, from a softint or from a thread. The worker takes
//! the whole pending list as one batch and calls the queue's function for each work, with the
//! kernel lock held unless WQ_MPSAFE and inside an FP/SIMD section with WQ_FPU; a priority
//! below the kernel range (< 64) makes it timeshared.
//!
//! Each work carries its own state (idle, pending, running), so a double enqueue is caught
//! every time in O(1) (NetBSD's debug check only scans the pending list), a work may be
//! enqueued again from its own callback, and [`workqueue_wait`] waits exactly until the work is
//! neither pending nor running: it sleeps until the worker has returned from the callback of
//! that work (NetBSD's batch generation gives the same guarantee, a little later).
//! Waiting from the queue's own worker would deadlock and is a named assertion.
//! [`workqueue_destroy`] requires an empty queue, stops and joins the workers and frees it.
//!
//! A typed layer sits on top: [`WorkItem<T>`] embeds a `Work` and its payload, and
//! [`TypedWorkqueue<T>`] calls a `fn(&WorkItem<T>)`, so no `void *` is cast by users.

use crate::cpu::{MAXCPUS, cpu_lookup, curcpu};
use crate::kthread::{
    KTHREAD_MPSAFE, KTHREAD_MUSTJOIN, KTHREAD_TS, KthreadError, LwpRef, kthread_create,
    kthread_join,
};
use crate::sched::sleepq::SleepQueue;
use crate::spl::Ipl;
use crate::sync::mutex::KMutex;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};

/// The kernel lock is not needed: the function does its own locking.
pub const WQ_MPSAFE: u32 = 0x01;
/// One queue and one worker per CPU; works are enqueued on a chosen CPU.
pub const WQ_PERCPU: u32 = 0x02;
/// The worker runs each work inside `kthread_fpu_enter`/`kthread_fpu_exit`.
pub const WQ_FPU: u32 = 0x04;

const IDLE: u32 = 0;
const PENDING: u32 = 1;
const RUNNING: u32 = 2;

/// A unit of work (NetBSD's `struct work`), embedded in or owned by the caller. It must stay
/// alive from its enqueue until its callback has run (or `workqueue_wait` has returned).
pub struct Work {
    next: AtomicPtr<Work>,
    state: AtomicU32,
    /// The queue it was last enqueued on (null: never enqueued).
    queue: AtomicPtr<Queue>,
    name: &'static str,
}

impl Work {
    /// A new, idle work; `name` appears in misuse reports.
    pub const fn new(name: &'static str) -> Self {
        Self {
            next: AtomicPtr::new(core::ptr::null_mut()),
            state: AtomicU32::new(IDLE),
            queue: AtomicPtr::new(core::ptr::null_mut()),
            name,
        }
    }

    /// Its name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether it is enqueued and not yet started.
    pub fn is_pending(&self) -> bool {
        self.state.load(Ordering::Acquire) == PENDING
    }
}

/// The callback: `func(work, arg)`, in the worker thread.
pub type WorkFunc = fn(&'static Work, usize);

/// Why `workqueue_create` failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WqError {
    /// A worker thread could not be created (EAGAIN past the thread limit, ENOMEM).
    Thread(KthreadError),
}

/// The pending list of one queue, under the queue's spin mutex.
struct List {
    head: *const Work,
    tail: *const Work,
}

/// One queue (of a CPU with WQ_PERCPU) and its worker.
struct Queue {
    lock: KMutex,
    list: UnsafeCell<List>,
    npending: AtomicU64,
    /// The worker sleeps here while the list is empty.
    wake: SleepQueue,
    /// `workqueue_wait` sleeps here; the worker wakes it after a work it waits for ran.
    done: SleepQueue,
    waiters: AtomicU32,
    /// The worker thread (address), for the wait-from-the-worker check.
    worker: AtomicU64,
    exit: AtomicBool,
    wq: *const Inner,
    /// Enqueues onto this queue (counted under its lock).
    enqueued: AtomicU64,
    /// Callbacks its worker has run.
    ran: AtomicU64,
}

// SAFETY: `list` is only touched with `lock` held; the rest is atomic or immutable, and `wq`
// points at the `Inner` that owns this queue and outlives its worker.
unsafe impl Sync for Queue {}
// SAFETY: as above.
unsafe impl Send for Queue {}

struct Inner {
    name: &'static str,
    func: WorkFunc,
    arg: usize,
    flags: u32,
    prio: u32,
    ipl: Ipl,
    /// One queue, or one per CPU index (empty slots for CPUs that were offline) with WQ_PERCPU.
    queues: Vec<Option<Box<Queue>>>,
    workers: Vec<LwpRef>,
}

/// A work queue (NetBSD's `struct workqueue *`). Destroy it with [`workqueue_destroy`].
pub struct Workqueue {
    inner: Box<Inner>,
}

// SAFETY: the queue is designed to be used from every CPU (its state is locked or atomic).
unsafe impl Sync for Workqueue {}
// SAFETY: as above.
unsafe impl Send for Workqueue {}

impl Workqueue {
    /// The name given at creation.
    pub fn name(&self) -> &'static str {
        self.inner.name
    }
}

/// `workqueue_create(name, func, arg, prio, ipl, flags)`: a queue whose worker(s) call
/// `func(work, arg)` at priority `prio` (below 64: timeshared), with a queue lock at `ipl` (the
/// highest IPL it will be enqueued from). Context: thread.
pub fn workqueue_create(
    name: &'static str,
    func: WorkFunc,
    arg: usize,
    prio: u32,
    ipl: Ipl,
    flags: u32,
) -> Result<Workqueue, WqError> {
    assert!(
        flags & !(WQ_MPSAFE | WQ_PERCPU | WQ_FPU) == 0,
        "workqueue_create({name}): unknown flags {flags:#x}"
    );
    let mut inner = Box::new(Inner {
        name,
        func,
        arg,
        flags,
        prio,
        ipl,
        queues: Vec::new(),
        workers: Vec::new(),
    });
    let wq_ptr: *const Inner = &*inner;
    let cpus: Vec<Option<usize>> = if flags & WQ_PERCPU != 0 {
        (0..crate::cpu::ncpu())
            .map(|c| cpu_lookup(c).filter(|ci| ci.is_online()).map(|_| c))
            .collect()
    } else {
        alloc::vec![None]
    };
    for &cpu in &cpus {
        let wanted = flags & WQ_PERCPU == 0 || cpu.is_some();
        inner.queues.push(wanted.then(|| {
            Box::new(Queue {
                lock: KMutex::spin(ipl.max(crate::spl::IPL_SOFTCLOCK)),
                list: UnsafeCell::new(List {
                    head: core::ptr::null(),
                    tail: core::ptr::null(),
                }),
                npending: AtomicU64::new(0),
                wake: SleepQueue::new(),
                done: SleepQueue::new(),
                waiters: AtomicU32::new(0),
                worker: AtomicU64::new(0),
                exit: AtomicBool::new(false),
                wq: wq_ptr,
                enqueued: AtomicU64::new(0),
                ran: AtomicU64::new(0),
            })
        }));
    }
    let mut kflags = KTHREAD_MUSTJOIN | KTHREAD_MPSAFE;
    if prio < 64 {
        kflags |= KTHREAD_TS;
    }
    for (i, q) in inner.queues.iter().enumerate() {
        let Some(q) = q else { continue };
        let bind = if flags & WQ_PERCPU != 0 {
            Some(i)
        } else {
            None
        };
        let mut lp = None;
        let made = kthread_create(
            prio as i32,
            kflags,
            bind,
            worker,
            &**q as *const Queue as usize,
            Some(&mut lp),
            format_args!("{name}/{}", bind.map_or(0, |c| c)),
        );
        match made {
            Ok(()) => inner.workers.push(lp.expect("newlp")),
            Err(e) => {
                stop_and_join(&mut inner);
                return Err(WqError::Thread(e));
            }
        }
    }
    REGISTRY.lock().push(&*inner as *const Inner as usize);
    Ok(Workqueue { inner })
}

/// Every live workqueue's `Inner` (address), for [`workqueue_list`]; an entry is removed
/// before its queue is freed, under this lock.
static REGISTRY: crate::sync::SpinLock<Vec<usize>> = crate::sync::SpinLock::new(Vec::new());

/// Heap bytes the registry of live workqueues holds (its capacity, kept after a peak), for
/// heap leak checks. Context: any.
pub fn table_bytes() -> usize {
    REGISTRY.lock().capacity() * core::mem::size_of::<usize>()
}

/// One workqueue, as [`workqueue_list`] shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WqInfo {
    /// The name given at creation.
    pub name: &'static str,
    /// The flags given at creation (WQ_MPSAFE, WQ_PERCPU, WQ_FPU).
    pub flags: u32,
    /// Its workers' priority.
    pub prio: u32,
    /// The IPL of its queue lock.
    pub ipl: Ipl,
    /// Queues (one, or one per online CPU at creation with WQ_PERCPU).
    pub queues: usize,
    /// Works pending now, all queues.
    pub pending: u64,
    /// Enqueues since creation, all queues.
    pub enqueued: u64,
    /// Callbacks run since creation, all queues.
    pub ran: u64,
}

/// Every live workqueue with its counters (a snapshot; for the monitor). Context: thread.
pub fn workqueue_list() -> Vec<WqInfo> {
    let reg = REGISTRY.lock();
    reg.iter()
        .map(|&p| {
            // SAFETY: registered queues are alive while the registry lock is held
            // (`workqueue_destroy` unregisters under it before freeing).
            let inner = unsafe { &*(p as *const Inner) };
            let queues = || inner.queues.iter().flatten();
            WqInfo {
                name: inner.name,
                flags: inner.flags,
                prio: inner.prio,
                ipl: inner.ipl,
                queues: queues().count(),
                pending: queues().map(|q| q.npending.load(Ordering::Relaxed)).sum(),
                enqueued: queues().map(|q| q.enqueued.load(Ordering::Relaxed)).sum(),
                ran: queues().map(|q| q.ran.load(Ordering::Relaxed)).sum(),
            }
        })
        .collect()
}

/// The queue of `wq` for `cpu` (`None`: the only one, or this CPU with WQ_PERCPU).
fn queue_for(wq: &Workqueue, cpu: Option<usize>, call: &str, wk: &Work) -> &'static Queue {
    let inner = &*wq.inner;
    let index = if inner.flags & WQ_PERCPU != 0 {
        match cpu {
            Some(c) => {
                assert!(
                    cpu_lookup(c).is_some_and(|ci| ci.is_online()),
                    "{call}({}, {}): cpu{c} is not online",
                    inner.name,
                    wk.name
                );
                c
            }
            None => {
                let daif = crate::arch::aarch64::irq_save();
                let c = curcpu().index();
                crate::arch::aarch64::irq_restore(daif);
                c
            }
        }
    } else {
        assert!(
            cpu.is_none(),
            "{call}({}, {}): a CPU was given but the queue was not created with WQ_PERCPU",
            inner.name,
            wk.name
        );
        0
    };
    let q = inner.queues.get(index).and_then(|q| q.as_deref());
    let Some(q) = q else {
        panic!(
            "{call}({}): no queue for cpu{index} (it was offline at creation)",
            inner.name
        )
    };
    // SAFETY: the queue lives as long as the workqueue, which the caller holds; the 'static is
    // for storing it in the work, which may not outlive the workqueue either (destroy requires
    // no pending work).
    unsafe { &*(q as *const Queue) }
}

/// `workqueue_enqueue(wq, wk, ci)`: queues `wk` for the worker (of CPU `cpu`, or of this CPU,
/// with WQ_PERCPU; `cpu` must be `None` otherwise). Enqueueing a work that is pending is a
/// bug, reported with the queue's and the work's names; a work may be enqueued again from its
/// own callback. Context: thread, softint or hard interrupt at or below the queue's IPL; never
/// blocks.
pub fn workqueue_enqueue(wq: &Workqueue, wk: &'static Work, cpu: Option<usize>) {
    crate::trace::event!(
        crate::trace::Kind::WorkEnqueue,
        wk as *const Work as u64,
        cpu.map_or(u64::MAX, |c| c as u64),
    );
    let q = queue_for(wq, cpu, "workqueue_enqueue", wk);
    let already = {
        let _g = q.lock.lock();
        let prev = wk.state.swap(PENDING, Ordering::AcqRel);
        if prev != PENDING {
            link(q, wk);
            q.enqueued.fetch_add(1, Ordering::Relaxed);
        }
        prev == PENDING
    };
    // Reported outside the queue lock, so that the queue stays usable.
    if already {
        panic!(
            "workqueue_enqueue({}, {}): the work is already pending; a work may be enqueued \
             again only once its callback has started",
            wq.inner.name, wk.name
        );
    }
    q.wake.wake_one();
}

/// Appends `wk` to `q`'s pending list. The queue lock is held.
fn link(q: &'static Queue, wk: &'static Work) {
    {
        wk.queue
            .store(q as *const Queue as *mut Queue, Ordering::Relaxed);
        wk.next.store(core::ptr::null_mut(), Ordering::Relaxed);
        // SAFETY: the list is ours under the queue lock; linked works stay alive while
        // pending (the caller's contract).
        let list = unsafe { &mut *q.list.get() };
        if list.tail.is_null() {
            list.head = wk;
        } else {
            // SAFETY: as above.
            unsafe {
                (*list.tail)
                    .next
                    .store(wk as *const Work as *mut Work, Ordering::Relaxed)
            };
        }
        list.tail = wk;
        q.npending.fetch_add(1, Ordering::Release);
    }
}

/// `workqueue_wait(wq, wk)`: returns once `wk` is neither pending nor running on `wq` (at once
/// if it is idle). The caller must not enqueue it again meanwhile. Waiting from the queue's own
/// worker, or on a work last enqueued on another queue, is a bug. Context: thread (sleeps).
pub fn workqueue_wait(wq: &Workqueue, wk: &'static Work) {
    let q = wk.queue.load(Ordering::Acquire);
    if q.is_null() {
        return;
    }
    let belongs = wq
        .inner
        .queues
        .iter()
        .flatten()
        .any(|mine| core::ptr::eq(&**mine, q));
    assert!(
        belongs,
        "workqueue_wait({}, {}): the work was enqueued on another workqueue",
        wq.inner.name, wk.name
    );
    // SAFETY: `q` is one of `wq`'s queues (checked), alive while `wq` is.
    let q = unsafe { &*q };
    let me = crate::sched::curlwp_ptr() as u64;
    assert!(
        q.worker.load(Ordering::Relaxed) != me,
        "workqueue_wait({}, {}): called from the queue's own worker, which would wait for itself",
        wq.inner.name,
        wk.name
    );
    if wk.state.load(Ordering::Acquire) == IDLE {
        return;
    }
    crate::sync::assert_sleepable("workqueue_wait");
    // Sequentially consistent with the worker's "idle, then are there waiters?": either the
    // worker sees this waiter and wakes it, or this waiter sees the work idle.
    q.waiters.fetch_add(1, Ordering::SeqCst);
    while wk.state.load(Ordering::SeqCst) != IDLE {
        let _ = q
            .done
            .sleep(None, || wk.state.load(Ordering::SeqCst) != IDLE);
    }
    q.waiters.fetch_sub(1, Ordering::AcqRel);
}

/// `workqueue_destroy(wq)`: the queue must have no work pending or running (asserted); stops
/// and joins the workers and frees everything. Context: thread.
pub fn workqueue_destroy(wq: Workqueue) {
    let mut inner = wq.inner;
    for q in inner.queues.iter().flatten() {
        let n = q.npending.load(Ordering::Acquire);
        assert!(
            n == 0,
            "workqueue_destroy({}): {n} work(s) still pending; wait for them first",
            inner.name
        );
    }
    let me = &*inner as *const Inner as usize;
    REGISTRY.lock().retain(|&p| p != me);
    stop_and_join(&mut inner);
}

fn stop_and_join(inner: &mut Inner) {
    for q in inner.queues.iter().flatten() {
        q.exit.store(true, Ordering::Release);
        q.wake.wake_all();
    }
    for l in inner.workers.drain(..) {
        kthread_join(l);
    }
}

/// A worker: `arg` is its `Queue`.
fn worker(arg: usize) {
    // SAFETY: `workqueue_create` passes a queue that outlives this thread (it is joined before
    // the queue is freed).
    let q = unsafe { &*(arg as *const Queue) };
    // SAFETY: the queue's workqueue outlives its workers for the same reason.
    let wq = unsafe { &*q.wq };
    q.worker
        .store(crate::sched::curlwp_ptr() as u64, Ordering::Relaxed);
    loop {
        let _ = q.wake.sleep(None, || {
            q.npending.load(Ordering::Acquire) == 0 && !q.exit.load(Ordering::Acquire)
        });
        if q.npending.load(Ordering::Acquire) == 0 {
            if q.exit.load(Ordering::Acquire) {
                return;
            }
            continue;
        }
        // Take the whole list as one batch.
        let mut wk = {
            let _g = q.lock.lock();
            // SAFETY: the list is ours under the lock.
            let list = unsafe { &mut *q.list.get() };
            let head = list.head;
            list.head = core::ptr::null();
            list.tail = core::ptr::null();
            q.npending.store(0, Ordering::Release);
            let mut w = head;
            while !w.is_null() {
                // SAFETY: pending works are alive (the enqueuer's contract).
                unsafe {
                    (*w).state.store(RUNNING, Ordering::Release);
                    w = (*w).next.load(Ordering::Relaxed);
                }
            }
            head
        };
        while !wk.is_null() {
            // SAFETY: as above; read the link before the callback may enqueue it again.
            let w: &'static Work = unsafe { &*wk };
            wk = w.next.load(Ordering::Relaxed);
            run_work(wq, w);
            q.ran.fetch_add(1, Ordering::Relaxed);
            // Idle unless the callback enqueued it again.
            let _ = w
                .state
                .compare_exchange(RUNNING, IDLE, Ordering::SeqCst, Ordering::SeqCst);
            if q.waiters.load(Ordering::SeqCst) != 0 {
                q.done.wake_all();
            }
        }
    }
}

fn run_work(wq: &Inner, w: &'static Work) {
    let fpu = (wq.flags & WQ_FPU != 0).then(crate::kthread::kthread_fpu_enter);
    let mpsafe = wq.flags & WQ_MPSAFE != 0;
    if !mpsafe {
        crate::sync::kernel_lock::kernel_lock();
    }
    crate::trace::event!(crate::trace::Kind::WorkRun, w as *const Work as u64, 0);
    (wq.func)(w, wq.arg);
    crate::trace::event!(crate::trace::Kind::WorkDone, w as *const Work as u64, 0);
    if !mpsafe {
        crate::sync::kernel_lock::kernel_unlock();
    }
    if let Some(cookie) = fpu {
        crate::kthread::kthread_fpu_exit(cookie);
    }
}

/// A work with a typed payload, for [`TypedWorkqueue`].
#[repr(C)]
pub struct WorkItem<T> {
    work: Work,
    /// The payload the callback receives with the item.
    pub data: T,
}

impl<T> WorkItem<T> {
    /// A new idle item.
    pub const fn new(name: &'static str, data: T) -> Self {
        Self {
            work: Work::new(name),
            data,
        }
    }

    /// The embedded work.
    pub fn work(&self) -> &Work {
        &self.work
    }
}

/// A workqueue whose callback receives `&WorkItem<T>` (typed access instead of `void *`).
pub struct TypedWorkqueue<T: Sync + 'static> {
    wq: Workqueue,
    _t: PhantomData<fn(&'static WorkItem<T>)>,
}

fn typed_trampoline<T: Sync + 'static>(wk: &'static Work, f: usize) {
    // SAFETY: a `TypedWorkqueue<T>` only ever enqueues the `work` field of a `WorkItem<T>`,
    // which is `#[repr(C)]` with `work` first, so the work's address is the item's.
    let item = unsafe { &*(wk as *const Work as *const WorkItem<T>) };
    // SAFETY: `f` was made from a `fn(&'static WorkItem<T>)` by `TypedWorkqueue::create`.
    let f: fn(&'static WorkItem<T>) = unsafe { core::mem::transmute(f) };
    f(item);
}

impl<T: Sync + 'static> TypedWorkqueue<T> {
    /// As [`workqueue_create`], with a typed callback.
    pub fn create(
        name: &'static str,
        f: fn(&'static WorkItem<T>),
        prio: u32,
        ipl: Ipl,
        flags: u32,
    ) -> Result<Self, WqError> {
        Ok(Self {
            wq: workqueue_create(name, typed_trampoline::<T>, f as usize, prio, ipl, flags)?,
            _t: PhantomData,
        })
    }

    /// As [`workqueue_enqueue`].
    pub fn enqueue(&self, item: &'static WorkItem<T>, cpu: Option<usize>) {
        workqueue_enqueue(&self.wq, &item.work, cpu);
    }

    /// As [`workqueue_wait`].
    pub fn wait(&self, item: &'static WorkItem<T>) {
        workqueue_wait(&self.wq, &item.work);
    }

    /// As [`workqueue_destroy`].
    pub fn destroy(self) {
        workqueue_destroy(self.wq);
    }
}

const _: () = assert!(MAXCPUS <= 64);
