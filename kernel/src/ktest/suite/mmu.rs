//! The kernel map's permissions: text is not writable, data and stacks are not executable,
//! read-only data is read-only. Each is checked by faulting on purpose.

use crate::arch::aarch64::mmu::{is_readable, is_writable};
use crate::ktest;

/// A `ret` instruction placed in writable data.
static mut RET_IN_DATA: [u32; 4] = [0xd65f_03c0; 4];
static RODATA_WORD: u64 = 0x1234_5678;

fn text_address() -> u64 {
    text_address as fn() -> u64 as usize as u64
}

ktest! {
    fn address_translation_reports_text_read_only_and_data_writable() {
        assert!(!is_writable(text_address()), "text {:#x} is writable", text_address());
        assert!(!is_writable(&RODATA_WORD as *const u64 as u64), "rodata is writable");
        let data = core::ptr::addr_of!(RET_IN_DATA) as u64;
        assert!(is_writable(data), "data {data:#x} is not writable");
        let local = 0u64;
        assert!(is_writable(&local as *const u64 as u64), "the stack is not writable");
    }
}

ktest! {
    #[should_panic("data abort: permission fault, level 3, on write")]
    fn writing_to_kernel_text_faults() {
        let p = text_address() as *mut u32;
        // SAFETY: deliberately faulting; the harness catches the abort.
        unsafe { p.write_volatile(0) };
    }
}

ktest! {
    #[should_panic("data abort: permission fault, level 3, on write")]
    fn writing_to_read_only_data_faults() {
        let p = &RODATA_WORD as *const u64 as *mut u64;
        // SAFETY: deliberately faulting; the harness catches the abort.
        unsafe { p.write_volatile(0) };
    }
}

ktest! {
    #[should_panic("instruction abort: permission fault")]
    fn executing_from_data_faults() {
        let p = core::ptr::addr_of!(RET_IN_DATA) as *const ();
        // SAFETY: deliberately jumping into non-executable data; the instruction fetch faults
        // before anything runs and the harness catches the abort.
        let f: extern "C" fn() = unsafe { core::mem::transmute(p) };
        f();
    }
}

ktest! {
    #[should_panic("instruction abort: permission fault")]
    fn executing_from_the_stack_faults() {
        let code = [0xd65f_03c0u32; 2];
        // SAFETY: as above, on a stack page.
        let f: extern "C" fn() = unsafe { core::mem::transmute(code.as_ptr() as *const ()) };
        f();
    }
}

ktest! {
    fn thread_stack_guard_pages_are_unmapped() {
        let (base, _top) = crate::sched::curlwp().stack_bounds().expect("a worker has a stack slot");
        let guard = base - 8;
        assert_eq!(crate::sched::stack::guard_slot(guard), crate::sched::curlwp().stack_index());
        assert!(!is_writable(guard), "the guard page below {base:#x} is mapped");
        assert!(is_writable(base), "the stack's lowest page is not mapped");
    }
}

ktest! {
    fn every_stack_slot_has_its_guard_page_unmapped_and_its_stack_mapped() {
        use crate::sched::stack::{GUARD_SIZE, SLOT_SIZE, slot_count, slot_start};
        let slots = slot_count();
        assert!(slots > 0, "no stack slots");
        for i in 0..slots {
            let start = slot_start(i);
            let mut page = start;
            while page < start + SLOT_SIZE {
                let guard = page < start + GUARD_SIZE;
                for addr in [page, page + 4088] {
                    assert!(
                        is_writable(addr) != guard,
                        "slot {i}: {addr:#x} is {}",
                        if guard { "mapped (guard page)" } else { "not mapped (stack)" }
                    );
                }
                page += 4096;
            }
        }
        let below = slot_start(0) - 8;
        assert!(is_writable(below), "RAM just below the stack region {below:#x} is not mapped");
    }
}

ktest! {
    fn every_page_of_the_image_and_the_ram_beside_it_has_its_sections_permissions() {
        use crate::arch::aarch64::linker::{__kernel_end, __rodata_end, __text_start};
        // SAFETY: linker symbols; only their addresses are taken.
        let (start, rodata_end, end) = unsafe {
            (
                &__text_start as *const u8 as u64,
                &__rodata_end as *const u8 as u64,
                &__kernel_end as *const u8 as u64,
            )
        };
        let block = 2 << 20;
        let mut page = start & !(block - 1);
        while page < (end + block - 1) & !(block - 1) {
            let read_only = page >= start && page < rodata_end;
            assert!(is_readable(page), "{page:#x} is not mapped");
            assert!(
                is_writable(page) != read_only,
                "{page:#x} is {}",
                if read_only { "writable (text or rodata)" } else { "not writable (data or RAM)" }
            );
            page += 4096;
        }
    }
}
