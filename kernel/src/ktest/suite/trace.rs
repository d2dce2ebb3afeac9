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
        crate::trace::set_mask(0);
        kpreempt_disable();
        let cpu = curcpu().index() as u32;
        let before = crate::trace::TRACE_RING.get().head();
        crate::trace::event(Kind::ThreadCreate, 0x7ace, 0);
        let after = crate::trace::TRACE_RING.get().head();
        kpreempt_enable();
        assert_eq!(before, after, "cpu{cpu}: a record was written with tracing off");
    }
}

ktest! {
    fn a_wrapped_ring_reports_the_records_it_lost() {
        const MARK: u64 = 0x7ace_0001;
        crate::trace::set_mask(0);
        crate::stats::trace_clear();
        kpreempt_disable();
        let cpu = curcpu().index() as u32;
        crate::trace::set_mask(1 << Class::Thread as u32);
        for i in 0..RING_RECORDS as u64 + 100 {
            crate::trace::event(Kind::ThreadCreate, MARK, i);
        }
        crate::trace::set_mask(0);
        kpreempt_enable();
        let trace = read();
        let c = trace.cpus.iter().find(|c| c.cpu == cpu).expect("this CPU's ring");
        assert!(c.head >= RING_RECORDS as u64 + 100, "cpu{cpu}: head {}", c.head);
        assert_eq!(c.lost, c.head - RING_RECORDS as u64, "cpu{cpu}: lost");
        assert_eq!(c.events.len(), RING_RECORDS, "cpu{cpu}: records kept");
        let last = c.events.last().expect("records");
        assert_eq!((last.kind, last.a, last.b), (Kind::ThreadCreate, MARK, RING_RECORDS as u64 + 99));
    }
}
