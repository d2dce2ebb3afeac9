//! Symbols the board's linker script defines: the image's section bounds and the boot CPU's
//! stack. A leaf module (it imports nothing), so the boot sequence, the pre-MMU crash path
//! (`early`) and the tests all read them without depending on each other.

unsafe extern "C" {
    /// Start of `.text` (page aligned).
    pub static __text_start: u8;
    /// End of `.text` (page aligned).
    pub static __text_end: u8;
    /// Start of `.rodata` (page aligned).
    pub static __rodata_start: u8;
    /// End of `.rodata` (page aligned).
    pub static __rodata_end: u8;
    /// Start of `.data` (page aligned); data, bss and the boot stack follow.
    pub static __data_start: u8;
    /// End of the image (page aligned).
    pub static __kernel_end: u8;
    /// Lowest address of the boot CPU's stack.
    pub static __boot_stack_bottom: u8;
    /// Top of the boot CPU's stack.
    pub static __boot_stack_top: u8;
    /// Start of `.trace_sites` (8-byte aligned): the trace sites' entries (`trace::event!`).
    pub static __trace_sites_start: u8;
    /// End of `.trace_sites`.
    pub static __trace_sites_end: u8;
}
