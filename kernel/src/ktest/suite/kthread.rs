//! kthread(9): creation, exit codes, joins, limits and the rules of the API.

use crate::heap::stats;
use crate::ktest;
use crate::ktest::suite::spawn_joinable;
use crate::kthread::*;
use crate::sched::lwp::LwpState;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

fn empty(_: usize) {}

fn spawn(func: fn(usize), arg: usize, pri: i32, flags: u32, cpu: Option<usize>) -> LwpRef {
    spawn_joinable(func, arg, pri, flags | KTHREAD_MPSAFE, cpu)
}

fn exit_with(code: usize) {
    kthread_exit(code as i32);
}

ktest! {
    fn mustjoin_hands_the_exit_code_to_the_joiner() {
        for code in [0usize, 1, 42, 0x7fff_ffff] {
            let l = spawn(exit_with, code, PRI_NONE, 0, None);
            assert_eq!(kthread_join(l), code as i32, "exit code {code}");
        }
        // Returning from the function is kthread_exit(0).
        let l = spawn(empty, 0, PRI_NONE, 0, None);
        assert_eq!(kthread_join(l), 0);
    }
}

ktest! {
    #[timeout_ms(120_000)]
    fn ten_thousand_create_exit_join_cycles_leave_heap_and_thread_counts_unchanged() {
        // Warm up once so lazily grown structures (the thread list) have their final size.
        let l = spawn(empty, 0, PRI_NONE, 0, None);
        kthread_join(l);
        let heap0 = stats();
        let threads0 = thread_count();
        let lwps0 = crate::sched::lwp_count();
        let slots0 = crate::sched::stack::free_count();
        for i in 0..10_000usize {
            let l = spawn(exit_with, i, PRI_NONE, 0, None);
            assert_eq!(kthread_join(l), i as i32);
        }
        assert_eq!(thread_count(), threads0, "kernel thread count");
        assert_eq!(crate::sched::lwp_count(), lwps0, "LWP count");
        assert_eq!(crate::sched::stack::free_count(), slots0, "free stack slots");
        assert_eq!(stats(), heap0, "heap accounting");
    }
}

static STARTED: AtomicU64 = AtomicU64::new(0);

fn count_start(_: usize) {
    STARTED.fetch_add(1, Ordering::AcqRel);
}

ktest! {
    fn idle_thread_does_not_run_until_started() {
        let before = STARTED.load(Ordering::Acquire);
        let l = spawn(count_start, 1, PRI_NONE, KTHREAD_IDLE, None);
        crate::kthread::kpause(3);
        assert_eq!(STARTED.load(Ordering::Acquire), before, "a KTHREAD_IDLE thread ran");
        assert_eq!(l.lwp().expect("alive").state(), LwpState::Idle);
        kthread_start(l);
        kthread_join(l);
        assert_eq!(STARTED.load(Ordering::Acquire), before + 1);
    }
}

ktest! {
    fn creating_past_the_thread_limit_returns_eagain() {
        let n = thread_count();
        let old = thread_limit();
        set_thread_limit(n);
        let r = kthread_create(PRI_NONE, KTHREAD_MPSAFE, None, empty, 0, None, format_args!("over"));
        set_thread_limit(old);
        assert_eq!(r, Err(KthreadError::Again));
        assert_eq!(thread_count(), n, "a refused create changed the count");
    }
}

/// Where the threads of the next test wait until [`RELEASED`].
static HOLD: crate::sched::sleepq::SleepQueue = crate::sched::sleepq::SleepQueue::new();
static RELEASED: AtomicBool = AtomicBool::new(false);

fn hold_until_released(_: usize) {
    while !RELEASED.load(Ordering::Acquire) {
        // The flag is re-checked under the queue's lock, which the releaser's wake_all takes.
        let _ = HOLD.sleep(None, || !RELEASED.load(Ordering::Acquire));
    }
}

ktest! {
    #[timeout_ms(120_000)]
    fn creating_until_refused_ends_in_eagain_at_the_default_limit() {
        let before = thread_count();
        let limit = thread_limit();
        assert!(before < limit, "{before} kernel threads exist already, limit {limit}");
        RELEASED.store(false, Ordering::Release);
        let mut threads = alloc::vec::Vec::with_capacity(limit - before);
        let refusal = loop {
            let mut l = None;
            match kthread_create(PRI_NONE, KTHREAD_MPSAFE | KTHREAD_MUSTJOIN, None,
                hold_until_released, threads.len(), Some(&mut l),
                format_args!("hold/{}", threads.len()))
            {
                Ok(()) => threads.push(l.expect("kthread_create fills newlp")),
                Err(e) => break e,
            }
            // More than every stack slot: the limit is not enforced at all; stop before the
            // machine runs out of something else.
            if threads.len() > crate::sched::stack::MAX_SLOTS {
                break KthreadError::NoMem;
            }
        };
        let count_at_refusal = thread_count();
        let free_slots_at_refusal = crate::sched::stack::free_count();
        let created = threads.len();
        RELEASED.store(true, Ordering::Release);
        HOLD.wake_all();
        for l in threads {
            assert_eq!(kthread_join(l), 0, "exit code of a held thread");
        }
        assert_eq!(refusal, KthreadError::Again,
            "kthread_create refused with {refusal:?} after {created} threads ({before} existed, \
             limit {limit}, {free_slots_at_refusal} stack slots free); kthread(9) promises EAGAIN");
        assert_eq!(created, limit - before,
            "created {created} threads before EAGAIN; the limit {limit} minus the {before} that \
             existed is {}", limit - before);
        assert_eq!(count_at_refusal, limit, "thread_count() when kthread_create refused");
        if crate::bootinfo::bootarg("kthread.max").is_none() {
            // The default limit is every slot the kernel threads can have, not fewer.
            assert_eq!(free_slots_at_refusal, 0,
                "the default limit {limit} left {free_slots_at_refusal} stack slots unusable");
        }
        assert_eq!(thread_count(), before, "kernel threads after joining them all");
    }
}

ktest! {
    fn thread_names_are_formatted_and_listed() {
        let l = spawn(count_start, 77, PRI_NONE, KTHREAD_IDLE, None);
        let found = crate::sched::lwp_list().into_iter().any(|t| t.name == "test/77" && t.id == l.id());
        kthread_start(l);
        kthread_join(l);
        assert!(found, "test/77 missing from the thread list");
    }
}

ktest! {
    #[should_panic("was not created with KTHREAD_MUSTJOIN")]
    fn joining_a_thread_that_is_not_joinable_is_caught() {
        let mut l = None;
        kthread_create(PRI_NONE, KTHREAD_MPSAFE | KTHREAD_IDLE, None, empty, 0, Some(&mut l),
            format_args!("notjoinable")).expect("create");
        // Never started; the harness ends the test here.
        kthread_join(l.expect("newlp"));
    }
}

ktest! {
    #[should_panic("does not exist (already joined")]
    fn joining_twice_is_caught() {
        let l = spawn(empty, 0, PRI_NONE, 0, None);
        kthread_join(l);
        kthread_join(l);
    }
}

ktest! {
    #[should_panic("KTHREAD_INTR requires KTHREAD_MPSAFE")]
    fn intr_without_mpsafe_is_caught() {
        let _ = kthread_create(PRI_NONE, KTHREAD_INTR, None, empty, 0, None, format_args!("x"));
    }
}

ktest! {
    #[should_panic("KTHREAD_MUSTJOIN requires newlp")]
    fn mustjoin_without_newlp_is_caught() {
        let _ = kthread_create(PRI_NONE, KTHREAD_MUSTJOIN | KTHREAD_MPSAFE, None, empty, 0, None,
            format_args!("x"));
    }
}

fn recurse(depth: u64) -> u64 {
    let mut buf = [0u8; 512];
    for (i, b) in buf.iter_mut().enumerate() {
        // SAFETY: a plain volatile write into a local array, to keep the frame alive.
        unsafe { core::ptr::write_volatile(b, (depth as usize + i) as u8) };
    }
    if depth == u64::MAX {
        return 0;
    }
    // Called through an opaque pointer, with the buffer used after the call, so the compiler
    // can neither turn the recursion into a loop nor reuse the frame.
    let next: fn(u64) -> u64 = core::hint::black_box(recurse);
    let deeper = next(depth + 1);
    core::hint::black_box(&buf);
    deeper + u64::from(buf[depth as usize % 512])
}

ktest! {
    #[should_panic("stack overflow in thread ktest/0")]
    fn stack_overflow_in_a_thread_is_reported_as_such() {
        let n = recurse(0);
        panic!("recursion returned {n}");
    }
}
