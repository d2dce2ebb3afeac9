//! Wakeup ping-pong: two kernel threads hand a token back and forth, each sleeping on its own
//! sleep queue until the other gives it the token and wakes it. One sample is half a round trip
//! (the round trip measured by one thread, halved): one wakeup plus one switch, the work
//! Linux's `kthread_pingpong_*_rtt` peer does with completions (a completion is a wait queue
//! and a count under a spin lock, as a sleep queue and the token are here).
//!
//! - `wakeup_pingpong_samecpu`: both threads bound to one CPU (the last, as `ctx_switch`; CPU 0
//!   with one CPU) at the same priority, so a wakeup makes the other runnable and the switch
//!   happens when the waker sleeps.
//! - `wakeup_pingpong_xcpu`: the threads bound to CPU 0 and CPU 1. A wakeup reaches the other
//!   CPU through the scheduler IPI; between rounds that CPU is idle in `wfi`. Under `-icount`
//!   virtual time counts the instructions of both CPUs, so the figure is the work of both.

use super::{SAMPLES, WARMUP, figures, report};
use crate::arch::aarch64::counter;
use crate::clock::counter_to_ns;
use crate::kthread::{
    KTHREAD_IDLE, KTHREAD_MPSAFE, KTHREAD_MUSTJOIN, kthread_create, kthread_join, kthread_start,
};
use crate::sched::sleepq::SleepQueue;
use crate::sync::SpinLock;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Which thread holds the token: [`PING`] or [`PONG`].
static TOKEN: AtomicUsize = AtomicUsize::new(PING);
const PING: usize = 0;
const PONG: usize = 1;
/// Where each thread sleeps while the other holds the token.
static QUEUES: [SleepQueue; 2] = [SleepQueue::new(), SleepQueue::new()];
static SAMPLES_OUT: SpinLock<alloc::vec::Vec<u64>> = SpinLock::new(alloc::vec::Vec::new());
const ROUNDS: usize = WARMUP + SAMPLES;
/// Priority of both threads: equal, so that a wakeup does not preempt the waker on one CPU.
const PRI: i32 = 150;

/// Gives the token to `other` and wakes it.
fn pass(other: usize) {
    TOKEN.store(other, Ordering::Release);
    QUEUES[other].wake_one();
}

/// Sleeps until the token is `me`'s. The check runs under the queue's lock, after which a
/// `pass` to `me` finds the thread on the queue: no lost wakeup.
fn await_token(me: usize) {
    while TOKEN.load(Ordering::Acquire) != me {
        let _ = QUEUES[me].sleep(None, || TOKEN.load(Ordering::Acquire) != me);
    }
}

/// The measuring thread: passes the token and waits for it back, `ROUNDS` times.
fn ping(_: usize) {
    let mut samples = alloc::vec::Vec::with_capacity(SAMPLES);
    for round in 0..ROUNDS {
        let t0 = counter();
        pass(PONG);
        await_token(PING);
        let t = counter_to_ns(counter() - t0);
        if round >= WARMUP {
            samples.push(t / 2);
        }
    }
    *SAMPLES_OUT.lock() = samples;
}

/// The other thread: waits for the token and passes it back, `ROUNDS` times.
fn pong(_: usize) {
    for _ in 0..ROUNDS {
        await_token(PONG);
        pass(PING);
    }
}

/// Runs one ping-pong with the threads bound to `ping_cpu` and `pong_cpu` and prints `metric`.
fn run(metric: &str, ping_cpu: usize, pong_cpu: usize) {
    TOKEN.store(PING, Ordering::Relaxed);
    let flags = KTHREAD_MPSAFE | KTHREAD_MUSTJOIN | KTHREAD_IDLE;
    let mut a = None;
    let mut b = None;
    kthread_create(
        PRI,
        flags,
        Some(ping_cpu),
        ping,
        0,
        Some(&mut a),
        format_args!("ping"),
    )
    .expect("kthread_create");
    kthread_create(
        PRI,
        flags,
        Some(pong_cpu),
        pong,
        0,
        Some(&mut b),
        format_args!("pong"),
    )
    .expect("kthread_create");
    kthread_start(b.expect("pong"));
    kthread_start(a.expect("ping"));
    kthread_join(a.expect("ping"));
    kthread_join(b.expect("pong"));
    let mut samples = core::mem::take(&mut *SAMPLES_OUT.lock());
    report(metric, "insns", figures(&mut samples));
}

/// `wakeup_pingpong_samecpu` and, with a second CPU, `wakeup_pingpong_xcpu`.
pub fn pingpong() {
    let last = crate::cpu::ncpu_online() - 1;
    run("wakeup_pingpong_samecpu", last, last);
    if crate::cpu::ncpu_online() > 1 {
        run("wakeup_pingpong_xcpu", 0, 1);
    }
}
