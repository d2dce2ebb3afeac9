//! Turning trace classes on and off: [`set_mask`] patches the static-key sites of the classes
//! whose bit changes (`crate::trace` records; this module rewrites its sites), under an
//! adaptive mutex, and synchronizes the other CPUs' instruction streams through a hook a
//! higher layer installs ([`set_sync_hook`]: a cross call). Kept apart from `crate::trace`,
//! which the scheduler, the interrupt path and the locks record through, so that the recorder
//! depends on nothing above the per-CPU layer while this part may sleep.

use crate::trace::{ALL_CLASSES, Class, kern_trace_mask};
use core::sync::atomic::Ordering;

/// One entry of `.trace_sites`, as the [`event_with!`](crate::trace::event_with) block emits it.
#[repr(C)]
struct Site {
    /// Address of the site's `nop` (or `b`).
    addr: u64,
    /// Address of its out-of-line block.
    block: u64,
    /// Its [`Class`] number.
    class: u64,
}

/// Every trace site of the image.
fn sites() -> &'static [Site] {
    use crate::arch::aarch64::linker::{__trace_sites_end, __trace_sites_start};
    // SAFETY: the linker script collects exactly the 24-byte entries the `event_with!` blocks
    // emit (8-byte aligned) between these two symbols, in read-only data that lives as long as
    // the kernel.
    unsafe {
        let start = core::ptr::addr_of!(__trace_sites_start) as *const Site;
        let end = core::ptr::addr_of!(__trace_sites_end) as *const Site;
        core::slice::from_raw_parts(start, end.offset_from(start) as usize)
    }
}

/// For each trace site of `class`: whether it is patched on, i.e. holds the `b` to its own
/// out-of-line block (otherwise it must hold a `nop`; anything else panics). Context: any.
pub fn site_states(class: Class) -> impl Iterator<Item = bool> {
    use crate::arch::aarch64::trace::{NOP, branch};
    sites()
        .iter()
        .filter(move |s| s.class == class as u64)
        .map(|s| {
            // SAFETY: a site's address is an aligned word of kernel text (readable).
            let insn = unsafe { (s.addr as *const u32).read_volatile() };
            let on = branch(s.addr, s.block);
            assert!(
                insn == on || insn == NOP,
                "trace site at {:#x} holds {insn:#010x}: neither nop nor b to its block {:#x}",
                s.addr,
                s.block
            );
            insn == on
        })
}

/// Serializes [`set_mask`]s (the patching and the mask store).
static PATCHING: crate::sync::mutex::KMutex = crate::sync::mutex::KMutex::adaptive();

/// Sets the enable mask (bits of [`Class`]; [`ALL_CLASSES`] for everything): patches the sites
/// of every class whose bit changes (a `b` to the site's block when enabled, a `nop` when
/// disabled), stores [`kern_trace_mask`], and, if it turned a class off, makes every online
/// CPU synchronize its instruction stream (the hook of [`set_sync_hook`]: a high-priority
/// cross call running `isb`), so that when it returns no CPU records a class outside `mask`
/// any more. A class turned on records on the calling CPU at once and on the others from
/// their next exception entry or return (an interrupt, at the latest the next tick). Context:
/// thread, IPL_NONE, no spin mutex held (the cross call and an adaptive mutex), after
/// `trace::init`; may sleep.
pub fn set_mask(mask: u32) {
    let mask = mask & ALL_CLASSES;
    assert!(
        crate::trace::initialized(),
        "trace_control::set_mask: called before trace::init (the CPUs' rings are not set up)"
    );
    PATCHING.mutex_enter();
    let old = kern_trace_mask.load(Ordering::Relaxed);
    #[cfg(not(feature = "notrace"))]
    for site in sites() {
        let bit = 1u32 << site.class;
        if (old ^ mask) & bit != 0 {
            use crate::arch::aarch64::trace::{NOP, branch, patch_text};
            let insn = if mask & bit != 0 {
                branch(site.addr, site.block)
            } else {
                NOP
            };
            // SAFETY: `site.addr` is a site's instruction in kernel text, a `nop` or a `b`
            // to its block, and becomes the other.
            unsafe { patch_text(site.addr, insn) };
        }
    }
    kern_trace_mask.store(mask, Ordering::Release);
    PATCHING.mutex_exit();
    // Only a class turned off needs the other CPUs to wait for: one turned on starts
    // recording there at the CPU's next exception entry or return (a tick at the latest),
    // and synchronizing then would put the cross call itself into the new trace.
    let hook = SYNC_HOOK.load(Ordering::Acquire);
    if old & !mask != 0 && hook != 0 && crate::cpu::ncpu_online() > 1 {
        // SAFETY: only `set_sync_hook` stores here, from a `fn()`.
        let hook = unsafe { core::mem::transmute::<usize, fn()>(hook) };
        hook();
    }
}

/// What [`set_mask`] calls to make every other online CPU execute a context synchronization
/// event (an `isb`) and wait for it: a high-priority cross call, installed by `xcall::init`
/// (a hook, so this module does not depend on the one above it). 0 = none yet (before it,
/// only the calling CPU is synchronized).
static SYNC_HOOK: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Installs the hook [`set_mask`] uses to synchronize the other CPUs' instruction streams
/// (once; `xcall::init` does). Boot CPU.
pub fn set_sync_hook(hook: fn()) {
    let _ = SYNC_HOOK.compare_exchange(0, hook as usize, Ordering::AcqRel, Ordering::Relaxed);
}
