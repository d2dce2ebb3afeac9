//! The console's receive ring: a single-producer, single-consumer byte queue that needs no
//! lock, so the receive interrupt handler can fill it at IPL_TTY while the reader (a thread)
//! empties it.
//!
//! The producer owns `head`, the consumer owns `tail`; both only grow (wrapping), and
//! `head - tail` is the fill. A byte is written before `head` is published with Release, and
//! read after `head` is loaded with Acquire; a slot is reused only after the consumer
//! published the `tail` past it. One producer at a time (the UART's interrupt is handled by
//! one CPU at a time: the GIC does not signal it again while it is active) and one consumer
//! (the console reader token) are the invariant callers keep. A full ring refuses the byte;
//! the caller counts it as dropped. Pure logic, host-tested.

use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// A ring of `N` bytes (`N` a power of two).
pub struct RxRing<const N: usize> {
    buf: [AtomicU8; N],
    head: AtomicUsize,
    tail: AtomicUsize,
}

impl<const N: usize> RxRing<N> {
    const SIZE_IS_A_POWER_OF_TWO: () = assert!(N.is_power_of_two());

    /// An empty ring.
    pub const fn new() -> Self {
        let () = Self::SIZE_IS_A_POWER_OF_TWO;
        Self {
            buf: [const { AtomicU8::new(0) }; N],
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
        }
    }

    /// The ring's capacity in bytes.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Appends `b`; false (and nothing stored) when the ring is full. Producer only.
    pub fn push(&self, b: u8) -> bool {
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Acquire);
        if head.wrapping_sub(tail) >= N {
            return false;
        }
        self.buf[head % N].store(b, Ordering::Relaxed);
        self.head.store(head.wrapping_add(1), Ordering::Release);
        true
    }

    /// Takes the oldest byte, if any. Consumer only.
    pub fn pop(&self) -> Option<u8> {
        let tail = self.tail.load(Ordering::Relaxed);
        let head = self.head.load(Ordering::Acquire);
        if head == tail {
            return None;
        }
        let b = self.buf[tail % N].load(Ordering::Relaxed);
        self.tail.store(tail.wrapping_add(1), Ordering::Release);
        Some(b)
    }

    /// Bytes waiting now (a snapshot). Any context.
    pub fn len(&self) -> usize {
        let head = self.head.load(Ordering::Acquire);
        let tail = self.tail.load(Ordering::Acquire);
        head.wrapping_sub(tail)
    }

    /// Whether nothing waits (a snapshot). Any context.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<const N: usize> Default for RxRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::RxRing;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn a_full_ring_refuses_and_keeps_what_it_has_in_order() {
        let r = RxRing::<4>::new();
        for b in 1..=4 {
            assert!(r.push(b));
        }
        assert!(!r.push(5), "the fifth byte of a 4-byte ring is refused");
        assert_eq!(r.len(), 4);
        assert_eq!(r.pop(), Some(1));
        assert!(r.push(6));
        let got: Vec<u8> = std::iter::from_fn(|| r.pop()).collect();
        assert_eq!(got, [2, 3, 4, 6]);
        assert!(r.is_empty());
        assert_eq!(r.pop(), None);
    }

    #[test]
    fn indices_wrap_past_usize_max() {
        let r = RxRing::<8>::new();
        r.head.store(usize::MAX - 2, Ordering::Relaxed);
        r.tail.store(usize::MAX - 2, Ordering::Relaxed);
        for b in 0..8 {
            assert!(r.push(b));
        }
        assert!(!r.push(9));
        for b in 0..8 {
            assert_eq!(r.pop(), Some(b));
        }
        assert_eq!(r.pop(), None);
    }

    /// A producer thread pushes 0..N (mod 251) as fast as it can while a consumer pops; every
    /// byte is either received, in order among the received, or counted as dropped, and
    /// received + dropped is exactly N.
    #[test]
    fn concurrent_push_and_pop_lose_nothing_uncounted() {
        const TOTAL: usize = 1_000_000;
        let ring = Arc::new(RxRing::<64>::new());
        let done = Arc::new(AtomicBool::new(false));
        let producer = {
            let ring = ring.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut dropped = Vec::new();
                for i in 0..TOTAL {
                    if !ring.push((i % 251) as u8) {
                        dropped.push(i);
                    }
                }
                done.store(true, Ordering::Release);
                dropped
            })
        };
        let mut received = Vec::new();
        loop {
            match ring.pop() {
                Some(b) => received.push(b),
                None if done.load(Ordering::Acquire) && ring.is_empty() => break,
                None => std::hint::spin_loop(),
            }
        }
        let dropped = producer.join().unwrap();
        assert_eq!(received.len() + dropped.len(), TOTAL);
        // The received bytes are exactly the sent ones minus the dropped, in order.
        let mut d = dropped.iter().peekable();
        let expected = (0..TOTAL).filter(|i| {
            if d.peek() == Some(&i) {
                d.next();
                false
            } else {
                true
            }
        });
        for (got, i) in received.iter().zip(expected) {
            assert_eq!(*got, (i % 251) as u8, "byte {i} out of order");
        }
    }
}
