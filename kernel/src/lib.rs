//! The portable kernel: per-CPU `cpu_info` and DPCPU storage, interrupt dispatch and IPIs, the
//! clock tick, the kernel heap, the console, fault reporting and the in-kernel test harness.
//!
//! The crate knows nothing of a particular board. A board crate parses its device tree, builds
//! an object implementing [`platform::Platform`] and calls [`boot::kernel_main`]; everything
//! else happens here. The NetBSD names used throughout (`ci` for a `cpu_info`, `ipl` for an
//! interrupt priority level) are explained in the module that introduces them.
//!
//! Only `arch::aarch64` contains assembly or touches system registers. Everything else also
//! builds for the host, where the pure logic (device-tree handling, per-CPU address arithmetic,
//! the `cpu_info` layout) is unit-tested with `cargo test`.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod arch;
pub mod console;
pub mod cpu;
pub mod devtree;
pub mod kvm;
pub mod le;
pub mod monitor;
pub mod percpu;
pub mod platform;
pub mod spl;
pub mod sync;
pub mod trace;

#[cfg(target_arch = "aarch64")]
pub mod boot;
pub mod bootinfo;
#[cfg(target_arch = "aarch64")]
pub mod boottime;
#[cfg(target_arch = "aarch64")]
pub mod clock;
#[cfg(target_arch = "aarch64")]
pub mod drivers;
#[cfg(target_arch = "aarch64")]
pub mod early;
#[cfg(target_arch = "aarch64")]
pub mod fault;
#[cfg(target_arch = "aarch64")]
pub mod heap;
#[cfg(target_arch = "aarch64")]
pub mod inject;
#[cfg(target_arch = "aarch64")]
pub mod intr;
#[cfg(target_arch = "aarch64")]
pub mod kthread;
#[cfg(target_arch = "aarch64")]
pub mod sched;
#[cfg(target_arch = "aarch64")]
pub mod softint;
#[cfg(target_arch = "aarch64")]
pub mod stats;
#[cfg(target_arch = "aarch64")]
pub mod trace_control;
#[cfg(target_arch = "aarch64")]
pub mod workqueue;
#[cfg(target_arch = "aarch64")]
pub mod xcall;

#[cfg(all(target_arch = "aarch64", feature = "bench"))]
pub mod bench;
#[cfg(all(target_arch = "aarch64", feature = "ktest"))]
pub mod ktest;
#[cfg(target_arch = "aarch64")]
pub mod torture;

/// The affinity fields of an MPIDR (Aff3..Aff0), the form device trees and PSCI use.
pub const fn cpu_affinity(mpidr: u64) -> u64 {
    mpidr & 0xff_00ff_ffff
}
