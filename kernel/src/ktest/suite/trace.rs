//! Event tracing (`crate::trace`), read back through the kvm reader on the running kernel.

use crate::cpu::curcpu;
use crate::ktest;
use crate::ktest::trace_workload;
use crate::kvm::Kvm;
use crate::kvm::local::LocalSource;
use crate::kvm::trace::TraceDump;
use crate::sched::{kpreempt_disable, kpreempt_enable};
use crate::trace::{Class, Kind, RING_RECORDS};

fn read() -> TraceDump {
    let mut kd = Kvm::open(LocalSource::new()).expect("Kvm::open on the running kernel");
    match kd.trace() {
        Ok(t) => t,
        Err(e) => panic!("kvm trace on the running kernel: {e}"),
    }
}

ktest! {
    #[timeout_ms(60_000)]
    fn trace_of_a_known_workload_holds_exactly_its_events_in_order() {
        let expect = trace_workload::run(40, 30, 20);
        let trace = read();
        let problems = expect.check(&trace);
        assert!(problems.is_empty(), "{} problems; first: {}", problems.len(), problems[0]);
        // Every thread a CPU switched to has a name in the table.
        for c in &trace.cpus {
            for e in c.events.iter().filter(|e| e.kind == Kind::Switch) {
                assert!(trace.name_of(e.b).is_some(), "cpu{}: thread {} has no name", c.cpu, e.b);
            }
        }
    }
}

ktest! {
    fn a_disabled_class_records_nothing() {
        crate::trace_control::set_mask(0);
        kpreempt_disable();
        let cpu = curcpu().index() as u32;
        let before = crate::trace::TRACE_RING.get().head();
        crate::trace::event!(Kind::ThreadCreate, 0x7ace, 0);
        let after = crate::trace::TRACE_RING.get().head();
        kpreempt_enable();
        assert_eq!(before, after, "cpu{cpu}: a record was written with tracing off");
    }
}

ktest! {
    fn a_wrapped_ring_reports_the_records_it_lost() {
        const MARK: u64 = 0x7ace_0001;
        crate::trace_control::set_mask(0);
        crate::stats::trace_clear();
        crate::trace_control::set_mask(1 << Class::Thread as u32);
        kpreempt_disable();
        let cpu = curcpu().index() as u32;
        for i in 0..RING_RECORDS as u64 + 100 {
            crate::trace::event!(Kind::ThreadCreate, MARK, i);
        }
        kpreempt_enable();
        crate::trace_control::set_mask(0);
        let trace = read();
        let c = trace.cpus.iter().find(|c| c.cpu == cpu).expect("this CPU's ring");
        assert!(c.head >= RING_RECORDS as u64 + 100, "cpu{cpu}: head {}", c.head);
        assert_eq!(c.lost, c.head - RING_RECORDS as u64, "cpu{cpu}: lost");
        assert_eq!(c.events.len(), RING_RECORDS, "cpu{cpu}: records kept");
        let last = c.events.last().expect("records");
        assert_eq!((last.kind, last.a, last.b), (Kind::ThreadCreate, MARK, RING_RECORDS as u64 + 99));
    }
}

ktest! {
    fn set_mask_patches_exactly_the_sites_of_enabled_classes() {
        let classes = [
            Class::Intr,
            Class::Spl,
            Class::Softint,
            Class::Switch,
            Class::Thread,
            Class::Work,
            Class::Xcall,
            Class::Ipi,
            Class::Idle,
        ];
        let check = |mask: u32| {
            for c in classes {
                let want = mask & 1 << c as u32 != 0;
                let (n, on) = crate::trace_control::site_states(c)
                    .fold((0, 0), |(n, on), s| (n + 1, on + s as usize));
                assert!(n > 0, "class {c:?} has no trace site");
                let expect = if want { n } else { 0 };
                assert_eq!(on, expect, "mask {mask:#x}: class {c:?} has {on} of {n} sites on");
            }
            assert_eq!(crate::trace::mask(), mask, "kern_trace_mask after set_mask({mask:#x})");
        };
        crate::trace_control::set_mask(0);
        check(0);
        for c in classes {
            crate::trace_control::set_mask(1 << c as u32);
            check(1 << c as u32);
        }
        crate::trace_control::set_mask(crate::trace::ALL_CLASSES);
        check(crate::trace::ALL_CLASSES);
        crate::trace_control::set_mask(1 << Class::Xcall as u32 | 1 << Class::Idle as u32);
        check(1 << Class::Xcall as u32 | 1 << Class::Idle as u32);
        crate::trace_control::set_mask(0);
        check(0);
    }
}

ktest! {
    fn ras_restart_sends_only_the_window_back_to_its_start() {
        use crate::arch::aarch64::trace::{RESTARTS, ras_restart, ras_window};
        let (start, commit) = ras_window();
        let before = RESTARTS.load(core::sync::atomic::Ordering::Relaxed);
        assert_eq!(ras_restart(start - 4), start - 4, "the instruction before the routine");
        assert_eq!(ras_restart(start), start, "the first instruction");
        assert_eq!(ras_restart(start + 8), start, "inside the window");
        assert_eq!(ras_restart(commit), start, "the publishing store (not yet done)");
        assert_eq!(ras_restart(commit + 4), commit + 4, "after the publishing store");
        assert_eq!(ras_restart(0), 0, "address 0");
        let after = RESTARTS.load(core::sync::atomic::Ordering::Relaxed);
        // Interrupts may restart records of this CPU meanwhile; the two above count at least.
        assert!(after - before >= 2, "restarts counted: {}", after - before);
    }
}

ktest! {
    #[timeout_ms(60_000)]
    fn an_interrupted_record_starts_over_and_nothing_is_lost() {
        use crate::arch::aarch64::trace::RESTARTS;
        use core::sync::atomic::Ordering::Relaxed;
        const MARK: u64 = 0x7ace_0002;
        // Interrupt entries (the tick) are recorded too, between this thread's records.
        crate::trace_control::set_mask(0);
        crate::stats::trace_clear();
        crate::trace_control::set_mask(1 << Class::Thread as u32 | 1 << Class::Intr as u32);
        kpreempt_disable();
        let cpu = curcpu().index() as u32;
        let start = RESTARTS.load(Relaxed);
        let t0 = crate::arch::aarch64::counter();
        let limit = 30 * crate::arch::aarch64::counter_frequency();
        // Record until an interrupt has landed inside the routine, then 1,000 more, so the
        // ring's window (2,048 records) holds the restarted record and its neighbours.
        let mut i = 0u64;
        let mut stop_at = u64::MAX;
        while i < stop_at {
            crate::trace::event!(Kind::ThreadCreate, MARK, i);
            i += 1;
            if stop_at == u64::MAX && RESTARTS.load(Relaxed) != start {
                stop_at = i + 1000;
            }
            if i.is_multiple_of(1024) && crate::arch::aarch64::counter() - t0 > limit {
                break;
            }
        }
        kpreempt_enable();
        crate::trace_control::set_mask(0);
        assert!(
            stop_at != u64::MAX,
            "cpu{cpu}: no interrupt landed inside the record routine in {i} records"
        );
        let trace = read();
        let c = trace.cpus.iter().find(|c| c.cpu == cpu).expect("this CPU's ring");
        // The reader checked every slot's sequence number; here: no mark is missing or
        // doubled, and timestamps never fall.
        let marks: alloc::vec::Vec<_> = c
            .events
            .iter()
            .filter(|e| e.kind == Kind::ThreadCreate && e.a == MARK)
            .collect();
        assert!(marks.len() > 1000, "cpu{cpu}: {} marks in the ring", marks.len());
        for w in marks.windows(2) {
            assert_eq!(w[1].b, w[0].b + 1, "cpu{cpu}: mark {} follows mark {}", w[1].b, w[0].b);
        }
        assert_eq!(marks.last().map(|e| e.b), Some(i - 1), "cpu{cpu}: the last mark");
        for w in c.events.windows(2) {
            assert!(w[1].ts >= w[0].ts, "cpu{cpu}: timestamp {} after {}", w[1].ts, w[0].ts);
        }
    }
}
