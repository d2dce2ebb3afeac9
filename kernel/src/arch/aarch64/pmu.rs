//! The PMU's retired-instruction count (PMUv3 event 0x08, `INST_RETIRED`), for the benchmarks
//! that must count guest work across a wait.
//!
//! The generic timer cannot: under QEMU's `-icount ... sleep=off` a wait for the host (a disk
//! read) shows as a jump of the virtual clock to the next timer deadline, not as guest work.
//! QEMU counts `INST_RETIRED` from its instruction counter without the jumps
//! (`icount_get_raw`), and that counter is one for the whole machine: every vCPU's event
//! counter counts the instructions of *all* vCPUs, and a CPU idle in WFI adds none. On real
//! hardware (the Pi 4's Cortex-A72) the same event counts only its own CPU's instructions.
//!
//! Hand-written because `aarch64-cpu` (11.x) has no PMU registers. Only event counter 0 is
//! used; nothing else in the kernel programs the PMU.

use core::arch::asm;

/// `PMCR_EL0.E`: the counters are enabled.
const PMCR_E: u64 = 1 << 0;
/// `PMCR_EL0.P`: writing 1 resets the event counters to zero.
const PMCR_P: u64 = 1 << 1;
/// The architectural event number of `INST_RETIRED`.
const INST_RETIRED: u64 = 0x08;

/// Whether this CPU's PMU has `INST_RETIRED` (PMCEID0_EL0 bit 8). QEMU sets it only in
/// precise icount mode (`-icount shift=N`), where the count is exact.
pub fn inst_retired_supported() -> bool {
    let ceid: u64;
    // SAFETY: reading PMCEID0_EL0 has no side effect; EL1 may always read it.
    unsafe { asm!("mrs {}, pmceid0_el0", out(reg) ceid, options(nomem, nostack)) };
    ceid & (1 << INST_RETIRED) != 0
}

/// Starts event counter 0 counting `INST_RETIRED` at EL0 and EL1 on this CPU, from zero.
/// Context: any, on the CPU whose counter it programs (bind the thread first). Returns false
/// (and programs nothing) when the event is not implemented.
pub fn start_inst_retired() -> bool {
    if !inst_retired_supported() {
        return false;
    }
    // SAFETY: programs only this CPU's event counter 0, which no other kernel code uses:
    // select it, count event 0x08 with no exception-level filter (PMEVTYPER0 bits 31:24 = 0:
    // EL0 and EL1 both counted), enable it, then reset and enable the PMU; `isb` makes the
    // writes take effect before the first read.
    unsafe {
        asm!(
            "msr pmevtyper0_el0, {ev}",
            "msr pmcntenset_el0, {one}",
            "mrs {t}, pmcr_el0",
            "orr {t}, {t}, {ep}",
            "msr pmcr_el0, {t}",
            "isb",
            ev = in(reg) INST_RETIRED,
            one = in(reg) 1u64,
            ep = in(reg) PMCR_E | PMCR_P,
            t = out(reg) _,
            options(nomem, nostack)
        )
    };
    true
}

/// Event counter 0 now (32 bits; differences are taken with wrapping arithmetic). Context:
/// any, on the CPU [`start_inst_retired`] programmed.
#[inline(always)]
pub fn inst_retired() -> u32 {
    let v: u64;
    // SAFETY: reading this CPU's event counter 0 has no side effect; `isb` keeps the read in
    // program order with the instructions it measures.
    unsafe { asm!("isb", "mrs {}, pmevcntr0_el0", out(reg) v, options(nomem, nostack)) };
    v as u32
}
