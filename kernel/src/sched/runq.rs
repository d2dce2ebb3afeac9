//! Per-CPU run queues: one FIFO per priority (0..=223, higher runs first), linked through
//! `Lwp::link`, and a bitmap of the non-empty ones so the highest is found in a few
//! instructions.

use super::NPRI;
use super::lwp::Lwp;

/// One CPU's runnable threads.
pub(crate) struct RunQueue {
    heads: [*mut Lwp; NPRI],
    tails: [*mut Lwp; NPRI],
    bitmap: [u64; NPRI.div_ceil(64)],
    /// Threads queued.
    pub(crate) count: usize,
    /// Threads queued that are not bound to a CPU (candidates for stealing).
    pub(crate) unbound: usize,
}

// SAFETY: the pointers are LWPs, alive until reaped, followed only under the queue's lock.
unsafe impl Send for RunQueue {}

impl RunQueue {
    pub(crate) const fn new() -> Self {
        Self {
            heads: [core::ptr::null_mut(); NPRI],
            tails: [core::ptr::null_mut(); NPRI],
            bitmap: [0; NPRI.div_ceil(64)],
            count: 0,
            unbound: 0,
        }
    }

    /// Appends `l` at the tail of its priority's list.
    pub(crate) fn push_back(&mut self, l: *mut Lwp) {
        // SAFETY: `l` is a live LWP on no other queue; its link is ours under the lock.
        let (pri, bound) = unsafe {
            (
                ((*l).pri() as usize).min(NPRI - 1),
                (*l).pinned_cpu().is_some(),
            )
        };
        // SAFETY: as above.
        unsafe { *(*l).link.get() = core::ptr::null_mut() };
        if self.tails[pri].is_null() {
            self.heads[pri] = l;
        } else {
            // SAFETY: the tail is a live LWP linked here.
            unsafe { *(*self.tails[pri]).link.get() = l };
        }
        self.tails[pri] = l;
        self.bitmap[pri / 64] |= 1 << (pri % 64);
        self.count += 1;
        if !bound {
            self.unbound += 1;
        }
    }

    /// The highest queued priority, if any.
    pub(crate) fn max_pri(&self) -> Option<u32> {
        for (i, &word) in self.bitmap.iter().enumerate().rev() {
            if word != 0 {
                return Some((i * 64 + 63 - word.leading_zeros() as usize) as u32);
            }
        }
        None
    }

    fn unlink_at(&mut self, pri: usize, prev: *mut Lwp, l: *mut Lwp) {
        // SAFETY: `l` (and `prev`, if non-null) are linked on list `pri` of this queue.
        unsafe {
            let next = *(*l).link.get();
            if prev.is_null() {
                self.heads[pri] = next;
            } else {
                *(*prev).link.get() = next;
            }
            if self.tails[pri] == l {
                self.tails[pri] = prev;
            }
            *(*l).link.get() = core::ptr::null_mut();
            if (*l).pinned_cpu().is_none() {
                self.unbound -= 1;
            }
        }
        if self.heads[pri].is_null() {
            self.bitmap[pri / 64] &= !(1 << (pri % 64));
        }
        self.count -= 1;
    }

    /// Removes and returns the first thread of the highest priority that is not still being
    /// switched out by another CPU (`on_cpu`); `me`, the thread running here, is always
    /// eligible. Skipping such threads (they are picked later) is what keeps two CPUs from
    /// waiting for each other's half-finished switches.
    pub(crate) fn pop_highest(&mut self, me: *mut Lwp) -> Option<*mut Lwp> {
        self.pop_where(|l| l == me || !on_cpu(l))
    }

    fn pop_where(&mut self, ok: impl Fn(*mut Lwp) -> bool) -> Option<*mut Lwp> {
        if self.count == 0 {
            return None;
        }
        for (w, &word) in self.bitmap.iter().enumerate().rev() {
            let mut bits = word;
            while bits != 0 {
                let pri = w * 64 + 63 - bits.leading_zeros() as usize;
                bits &= !(1 << (pri % 64));
                let mut prev = core::ptr::null_mut();
                let mut l = self.heads[pri];
                while !l.is_null() {
                    // SAFETY: linked LWPs are alive; links are ours under the lock.
                    let next = unsafe { *(*l).link.get() };
                    if ok(l) {
                        self.unlink_at(pri, prev, l);
                        return Some(l);
                    }
                    prev = l;
                    l = next;
                }
            }
        }
        None
    }

    /// Removes and returns the highest-priority thread that is not bound to a CPU and not
    /// still being switched out elsewhere.
    pub(crate) fn pop_unbound(&mut self) -> Option<*mut Lwp> {
        if self.unbound == 0 {
            return None;
        }
        // SAFETY: queued LWPs are alive.
        self.pop_where(|l| unsafe { (*l).pinned_cpu().is_none() } && !on_cpu(l))
    }
}

fn on_cpu(l: *mut Lwp) -> bool {
    // SAFETY: queued LWPs are alive.
    unsafe { (*l).on_cpu.load(core::sync::atomic::Ordering::Acquire) }
}
