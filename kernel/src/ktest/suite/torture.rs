//! The torture suites (`crate::torture`), one test per torture. In `cargo xtask test` each runs
//! a short budget ([`SHORT_OPS`] operations) with a fresh seed and fault injection on;
//! `cargo xtask torture` runs them one at a time with a longer budget under `-icount`. The
//! command line sets everything: `torture.seed=HEX`, `torture.ops=N`, `torture.ms=N` (virtual
//! time), `torture.inject=0|1`, `torture.bug=wakeup|eoi|xcall` (a planted bug the run must
//! catch).

use crate::bootinfo::bootarg;
use crate::inject::Bug;
use crate::ktest;
use crate::torture::{Config, Kind, run};

/// Operations per torture in the test matrix.
const SHORT_OPS: u64 = 2_000;

/// The run's configuration from the command line.
fn config() -> Config {
    let number = |key: &str| bootarg(key).and_then(|v| v.parse::<u64>().ok());
    let bug = bootarg("torture.bug").map(|b| match b {
        "wakeup" => Bug::DropWakeup,
        "eoi" => Bug::SkipEoi,
        "xcall" => Bug::XcallDoneEarly,
        other => panic!("torture.bug={other}: unknown planted bug (wakeup, eoi or xcall)"),
    });
    Config {
        seed: bootarg("torture.seed")
            .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
            .unwrap_or_else(super::seed),
        ops: number("torture.ops").unwrap_or(SHORT_OPS),
        ms: number("torture.ms").unwrap_or(0),
        inject: number("torture.inject") != Some(0),
        bug,
        cancel: None,
    }
}

fn torture(kind: Kind) {
    let cfg = config();
    if let Err(e) = run(kind, &cfg) {
        panic!("{e}");
    }
}

ktest! {
    fn sched() { torture(Kind::Sched) }
}
ktest! {
    fn locks() { torture(Kind::Locks) }
}
ktest! {
    fn intr() { torture(Kind::Intr) }
}
ktest! {
    fn softint() { torture(Kind::Softint) }
}
ktest! {
    fn wq() { torture(Kind::Wq) }
}
ktest! {
    fn xcall() { torture(Kind::Xcall) }
}
ktest! {
    fn all() { torture(Kind::All) }
}
