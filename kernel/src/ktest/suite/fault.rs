//! The fault path: a data abort, an undefined instruction and a panic are reported with the
//! exception class and the harness's recovery brings the CPU back.

use crate::fault::Describe;
use crate::ktest;

ktest! {
    #[should_panic("data abort: translation fault, level 1, on read")]
    fn data_abort_on_an_unmapped_address_is_reported() {
        // 64 GiB: inside the 39-bit address space, far from RAM and devices, never mapped.
        let p = 0x10_0000_0000 as *const u64;
        // SAFETY: deliberately faulting; the harness catches the abort.
        let value = unsafe { p.read_volatile() };
        panic!("read {value:#x} from an unmapped address");
    }
}

ktest! {
    #[should_panic("unknown reason (undefined instruction)")]
    fn undefined_instruction_is_reported() {
        // SAFETY: deliberately executes a permanently undefined encoding (UDF #0).
        unsafe { core::arch::asm!("udf #0") };
    }
}

ktest! {
    #[all_cpus]
    #[should_panic("data abort: translation fault")]
    fn data_abort_on_every_cpu_at_once_is_reported_for_each() {
        crate::ktest::all_cpus_barrier();
        let p = (0x10_0000_0000u64 + 4096 * crate::cpu::curcpu().index() as u64) as *const u64;
        // SAFETY: deliberately faulting; the harness catches the abort.
        unsafe { p.read_volatile() };
    }
}

ktest! {
    fn exception_syndromes_are_described_in_words() {
        use alloc::string::ToString;
        // EC 0x25 data abort, WnR set, DFSC 0x0f permission fault level 3.
        let esr = (0x25 << 26) | (1 << 6) | 0x0f;
        assert_eq!(Describe(esr).to_string(), "data abort: permission fault, level 3, on write");
        // EC 0x21 instruction abort, IFSC 0x06 translation fault level 2.
        let esr = (0x21 << 26) | 0x06;
        assert_eq!(
            Describe(esr).to_string(),
            "instruction abort: translation fault, level 2, on instruction fetch"
        );
        assert_eq!(Describe(0x07 << 26).to_string(), "FP/SIMD access trap");
    }
}
