//! Kernel event tracing: a fixed-size ring of fixed-size records per CPU (FreeBSD's KTR,
//! Linux's ftrace ring), read from outside by the kvm reader (`kvm::trace`).
//!
//! Each CPU owns one [`TraceRing`] in DPCPU ([`TRACE_RING`]). A record ([`TraceRecord`], 32
//! bytes) holds the virtual counter (`CNTVCT_EL0`) at the event, the event [`Kind`], a small
//! `aux` value and two arguments. Only the owning CPU writes its ring, through the record
//! routine of `arch::aarch64::trace` (13 instructions: one load from `CpuInfo::trace_head`
//! finds the ring), which is a restartable sequence: an interrupt that lands inside it makes
//! it start over when the interrupted code resumes, so a writer at any IPL (hard interrupt
//! handlers included) never meets a half-written record of its own CPU, no record is lost,
//! timestamps rise in ring order, and no lock, atomic read-modify-write or IRQ masking is
//! needed. `head` counts the records ever written; the record of sequence number `n` lives in
//! slot `n % RING_RECORDS` and carries the low 32 bits of `n` in its `info` word, so a reader
//! can tell a record of the window `[head - RING_RECORDS, head)` from a stale or corrupt one,
//! and knows that `head - RING_RECORDS` records were lost when the ring wrapped.
//!
//! Cost when disabled: static keys, as Linux's jump labels. Every event belongs to a
//! [`Class`]; a site ([`event!`], [`event_with!`]) is one `nop` listed in the `.trace_sites`
//! section with its class and the address of its out-of-line block (arguments, a call of the
//! record routine). [`set_mask`](crate::trace_control::set_mask) patches the sites of each class it turns on into a `b` to
//! their block and those it turns off back into `nop`; after turning one off it has every
//! CPU synchronize its instruction stream. The global mask [`kern_trace_mask`] (exported)
//! stays the truth that readers print; writing it from a debugger does not turn sites on or
//! off. Enabled, one event costs 18 guest instructions (`trace_event_cost`).
//!
//! Thread names: the rings name threads by their LWP id. [`kern_trace_names`] (exported) holds
//! [`NAME_SLOTS`] slots of an id and up to 24 bytes of name: living threads' (the first that
//! many; a thread created while every slot names a living one stays unnamed) and, in the
//! rest, the most recently exited ones' (id marked [`NAME_EXITED`]), so a reader can label
//! threads that have exited since.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Records per CPU ring (a power of two).
pub const RING_RECORDS: usize = 2048;
/// Bytes per record.
pub const RECORD_SIZE: usize = 32;
/// Bytes of a ring's header, before the first record.
pub const RING_HEADER: usize = 64;
/// Bytes of a whole ring (the DPCPU variable's size).
pub const RING_SIZE: usize = RING_HEADER + RING_RECORDS * RECORD_SIZE;
/// `TraceRing::magic`: "KTRACE01" as a little-endian word.
pub const RING_MAGIC: u64 = u64::from_le_bytes(*b"KTRACE01");
/// Slots of the thread-name table.
pub const NAME_SLOTS: usize = 256;
/// Name bytes kept per thread.
pub const NAME_BYTES: usize = 24;
/// Bytes per name slot (u64 id + name).
pub const NAME_SLOT_SIZE: usize = 8 + NAME_BYTES;

/// Offsets in a [`TraceRing`] (checked against the definition below).
pub mod offsets {
    /// `magic` (u64).
    pub const MAGIC: usize = 0;
    /// `capacity` (u32).
    pub const CAPACITY: usize = 8;
    /// `record_size` (u32).
    pub const RECORD_SIZE: usize = 12;
    /// `head` (u64).
    pub const HEAD: usize = 16;
    /// First record.
    pub const RECORDS: usize = super::RING_HEADER;
}

/// Event classes: one bit each in the enable mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Class {
    /// Hard interrupt entry/exit.
    Intr = 0,
    /// `splx` slow path running a deferred interrupt.
    Spl = 1,
    /// Soft interrupt schedule/run.
    Softint = 2,
    /// Context switches.
    Switch = 3,
    /// Thread create/exit.
    Thread = 4,
    /// Work queue enqueue/run.
    Work = 5,
    /// Cross call issue/run/done.
    Xcall = 6,
    /// IPI send/receive.
    Ipi = 7,
    /// Idle enter/exit.
    Idle = 8,
}

/// Every class's bit: the mask that enables everything.
pub const ALL_CLASSES: u32 = (1 << 9) - 1;

/// Class names, by bit (for `trace on CLASS` and readers).
pub const CLASS_NAMES: [&str; 9] = [
    "intr", "spl", "softint", "switch", "thread", "work", "xcall", "ipi", "idle",
];

/// Event kinds. The meaning of `aux`, `a` and `b` is given per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Hard interrupt handler starts: a = interrupt id, b = its IPL.
    IntrEntry = 1,
    /// Hard interrupt handler returned: a = interrupt id, b = its IPL.
    IntrExit = 2,
    /// `splx` runs a deferred interrupt: a = interrupt id, b = its IPL.
    SplDeferred = 3,
    /// `softint_schedule*`: a = handle index, b = target CPU (`u64::MAX`: all others).
    SoftintSchedule = 4,
    /// A softint handler starts: a = handle index, b = level.
    SoftintRun = 5,
    /// A softint handler returned: a = handle index, b = level.
    SoftintDone = 6,
    /// This CPU's running thread changes: a = from LWP id (0 at start-up), b = to LWP id,
    /// aux = [`SwitchReason`].
    Switch = 7,
    /// A thread was created: a = LWP id, b = CPU it is bound to (`u64::MAX`: none).
    ThreadCreate = 8,
    /// A thread exits: a = LWP id, b = exit code.
    ThreadExit = 9,
    /// `workqueue_enqueue`: a = work address, b = target CPU (`u64::MAX`: the caller's).
    WorkEnqueue = 10,
    /// A work callback starts: a = work address.
    WorkRun = 11,
    /// A work callback returned: a = work address.
    WorkDone = 12,
    /// A cross call is published: a = ticket, b = target CPU mask.
    XcallIssue = 13,
    /// A cross call's function starts on this CPU: a = ticket.
    XcallRun = 14,
    /// A cross call's function returned on this CPU: a = ticket.
    XcallRunDone = 15,
    /// A cross call is done on all its targets (counted by the last): a = ticket.
    XcallDone = 16,
    /// An IPI is sent: a = IPI kind, b = target CPU (`u64::MAX`: all others).
    IpiSend = 17,
    /// An IPI is received: a = IPI kind.
    IpiReceive = 18,
    /// The idle loop waits for an interrupt.
    IdleEnter = 19,
    /// The idle loop's wait ended.
    IdleExit = 20,
}

impl Kind {
    /// Every kind, in number order.
    pub const ALL: [Kind; 20] = [
        Kind::IntrEntry,
        Kind::IntrExit,
        Kind::SplDeferred,
        Kind::SoftintSchedule,
        Kind::SoftintRun,
        Kind::SoftintDone,
        Kind::Switch,
        Kind::ThreadCreate,
        Kind::ThreadExit,
        Kind::WorkEnqueue,
        Kind::WorkRun,
        Kind::WorkDone,
        Kind::XcallIssue,
        Kind::XcallRun,
        Kind::XcallRunDone,
        Kind::XcallDone,
        Kind::IpiSend,
        Kind::IpiReceive,
        Kind::IdleEnter,
        Kind::IdleExit,
    ];

    /// The kind with number `n`, if there is one.
    pub const fn from_u8(n: u8) -> Option<Kind> {
        if n >= 1 && n as usize <= Self::ALL.len() {
            Some(Self::ALL[n as usize - 1])
        } else {
            None
        }
    }

    /// The class the kind belongs to.
    pub const fn class(self) -> Class {
        match self {
            Kind::IntrEntry | Kind::IntrExit => Class::Intr,
            Kind::SplDeferred => Class::Spl,
            Kind::SoftintSchedule | Kind::SoftintRun | Kind::SoftintDone => Class::Softint,
            Kind::Switch => Class::Switch,
            Kind::ThreadCreate | Kind::ThreadExit => Class::Thread,
            Kind::WorkEnqueue | Kind::WorkRun | Kind::WorkDone => Class::Work,
            Kind::XcallIssue | Kind::XcallRun | Kind::XcallRunDone | Kind::XcallDone => {
                Class::Xcall
            }
            Kind::IpiSend | Kind::IpiReceive => Class::Ipi,
            Kind::IdleEnter | Kind::IdleExit => Class::Idle,
        }
    }

    /// The kind's mask bit.
    pub const fn class_bit(self) -> u32 {
        1 << self.class() as u32
    }

    /// A short name (`trace-cmd report` style).
    pub const fn name(self) -> &'static str {
        match self {
            Kind::IntrEntry => "irq_entry",
            Kind::IntrExit => "irq_exit",
            Kind::SplDeferred => "spl_deferred",
            Kind::SoftintSchedule => "softint_schedule",
            Kind::SoftintRun => "softint_run",
            Kind::SoftintDone => "softint_done",
            Kind::Switch => "switch",
            Kind::ThreadCreate => "thread_create",
            Kind::ThreadExit => "thread_exit",
            Kind::WorkEnqueue => "work_enqueue",
            Kind::WorkRun => "work_run",
            Kind::WorkDone => "work_done",
            Kind::XcallIssue => "xcall_issue",
            Kind::XcallRun => "xcall_run",
            Kind::XcallRunDone => "xcall_run_done",
            Kind::XcallDone => "xcall_done",
            Kind::IpiSend => "ipi_send",
            Kind::IpiReceive => "ipi_receive",
            Kind::IdleEnter => "idle_enter",
            Kind::IdleExit => "idle_exit",
        }
    }
}

/// Why a CPU's running thread changed (`aux` of [`Kind::Switch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SwitchReason {
    /// The old thread stays runnable (preempted or yielded).
    Preempt = 0,
    /// The old thread went to sleep.
    Sleep = 1,
    /// The old thread exited.
    Exit = 2,
    /// The old thread is the idle thread.
    Idle = 3,
    /// A soft interrupt borrows the CPU from the old thread.
    SoftintLend = 4,
    /// A soft interrupt thread is done and gives the CPU back.
    SoftintReturn = 5,
    /// The CPU's first thread.
    Start = 6,
}

impl SwitchReason {
    /// The reason's name.
    pub const fn name(raw: u8) -> &'static str {
        match raw {
            0 => "preempt",
            1 => "sleep",
            2 => "exit",
            3 => "idle",
            4 => "softint",
            5 => "softint-done",
            6 => "start",
            _ => "?",
        }
    }
}

/// One record. `info` = kind | aux << 8 | (sequence number mod 2^32) << 32.
#[repr(C)]
pub struct TraceRecord {
    ts: AtomicU64,
    info: AtomicU64,
    a: AtomicU64,
    b: AtomicU64,
}

impl TraceRecord {
    const fn new() -> Self {
        Self {
            ts: AtomicU64::new(0),
            info: AtomicU64::new(0),
            a: AtomicU64::new(0),
            b: AtomicU64::new(0),
        }
    }
}

/// The `info` word of a record.
pub const fn pack_info(kind: u8, aux: u8, seq: u64) -> u64 {
    kind as u64 | (aux as u64) << 8 | (seq & 0xffff_ffff) << 32
}

/// One CPU's ring (a DPCPU variable: [`TRACE_RING`]).
#[repr(C, align(64))]
pub struct TraceRing {
    magic: AtomicU64,
    capacity: AtomicU32,
    record_size: AtomicU32,
    head: AtomicU64,
    _pad: [u64; 5],
    records: [TraceRecord; RING_RECORDS],
}

impl TraceRing {
    const fn new() -> Self {
        Self {
            magic: AtomicU64::new(RING_MAGIC),
            capacity: AtomicU32::new(RING_RECORDS as u32),
            record_size: AtomicU32::new(RECORD_SIZE as u32),
            head: AtomicU64::new(0),
            _pad: [0; 5],
            records: [const { TraceRecord::new() }; RING_RECORDS],
        }
    }

    /// Records ever written to this ring.
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }
}

const _: () = {
    assert!(RING_RECORDS.is_power_of_two());
    assert!(core::mem::size_of::<TraceRecord>() == RECORD_SIZE);
    assert!(core::mem::size_of::<TraceRing>() == RING_SIZE);
    assert!(core::mem::offset_of!(TraceRing, magic) == offsets::MAGIC);
    assert!(core::mem::offset_of!(TraceRing, capacity) == offsets::CAPACITY);
    assert!(core::mem::offset_of!(TraceRing, record_size) == offsets::RECORD_SIZE);
    assert!(core::mem::offset_of!(TraceRing, head) == offsets::HEAD);
    assert!(core::mem::offset_of!(TraceRing, records) == offsets::RECORDS);
};

crate::dpcpu_define! {
    /// This CPU's trace ring. Written only by its own CPU (the record routine's restartable
    /// sequence, or [`clear_this_cpu`] with IRQs masked).
    pub static TRACE_RING: TraceRing = TraceRing::new();
}

/// The ring's DPCPU name (for `kvm` `read_dpcpu`).
pub const RING_NAME: &str = "TRACE_RING";

/// Exported: the enable mask, one bit per [`Class`]. 0 at boot. Written only by [`set_mask`](crate::trace_control::set_mask),
/// after it patched the sites, so it names the classes whose sites record.
#[allow(non_upper_case_globals, reason = "an exported C-style symbol")]
#[unsafe(export_name = "kern_trace_mask")]
#[used]
pub static kern_trace_mask: AtomicU32 = AtomicU32::new(0);

/// Exported: the counter frequency in Hz (`CNTFRQ_EL0`), for readers to turn timestamps into
/// time. Set by [`init`]; non-zero initial value so that it is in `.data`.
#[allow(non_upper_case_globals, reason = "an exported C-style symbol")]
#[unsafe(export_name = "kern_trace_freq")]
#[used]
pub static kern_trace_freq: AtomicU64 = AtomicU64::new(1);

/// One thread-name slot: the LWP id (0: empty) and up to [`NAME_BYTES`] bytes of its name,
/// zero padded.
#[repr(C)]
pub struct NameSlot {
    id: AtomicU64,
    name: [AtomicU64; NAME_BYTES / 8],
}

/// Exported: the thread-name table (see the module doc).
#[allow(non_upper_case_globals, reason = "an exported C-style symbol")]
#[unsafe(export_name = "kern_trace_names")]
#[used]
pub static kern_trace_names: [NameSlot; NAME_SLOTS] = [const {
    NameSlot {
        id: AtomicU64::new(0),
        name: [const { AtomicU64::new(0) }; NAME_BYTES / 8],
    }
}; NAME_SLOTS];

const _: () = assert!(core::mem::size_of::<NameSlot>() == NAME_SLOT_SIZE);

/// Symbol names the reader uses.
pub mod symbols {
    /// The enable mask.
    pub const MASK: &str = "kern_trace_mask";
    /// The counter frequency.
    pub const FREQ: &str = "kern_trace_freq";
    /// The thread-name table.
    pub const NAMES: &str = "kern_trace_names";
}

/// Set in a name slot's id word once its thread has been freed: the name stays readable for
/// the records that still mention it, and the slot may be taken by a new thread.
pub const NAME_EXITED: u64 = 1 << 63;

/// Records thread `id`'s name in the name table: in the first slot from `id % NAME_SLOTS` on
/// that is empty or holds an exited thread, so threads that live long (idle, softint and
/// xcall threads) keep their names however many come and go; with every slot held by a
/// living thread, nowhere (the thread stays unnamed). Called by the thread list when it
/// registers a thread. Context: any; never blocks.
pub fn name_thread(id: u64, name: &str) {
    let start = (id % NAME_SLOTS as u64) as usize;
    let mut claimed = None;
    for k in 0..NAME_SLOTS {
        let slot = &kern_trace_names[(start + k) % NAME_SLOTS];
        let cur = slot.id.load(Ordering::Relaxed);
        if (cur == 0 || cur & NAME_EXITED != 0)
            && slot
                .id
                .compare_exchange(cur, 0, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            claimed = Some(slot);
            break;
        }
    }
    // Every slot names a living thread: this one goes unnamed rather than take a living
    // thread's name away (those that live long, created first, matter most to a reader).
    let Some(slot) = claimed else {
        return;
    };
    let bytes = name.as_bytes();
    for (i, word) in slot.name.iter().enumerate() {
        let mut w = [0u8; 8];
        for (j, b) in w.iter_mut().enumerate() {
            if let Some(&c) = bytes.get(i * 8 + j) {
                *b = c;
            }
        }
        word.store(u64::from_le_bytes(w), Ordering::Relaxed);
    }
    slot.id.store(id, Ordering::Release);
}

/// Marks thread `id`'s name slot exited (its name stays until the slot is taken again).
/// Called by the thread list when it frees a thread. Context: any; never blocks.
pub fn name_gone(id: u64) {
    let start = (id % NAME_SLOTS as u64) as usize;
    for k in 0..NAME_SLOTS {
        let slot = &kern_trace_names[(start + k) % NAME_SLOTS];
        if slot
            .id
            .compare_exchange(id, id | NAME_EXITED, Ordering::Release, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
    }
}

/// The enable mask now.
#[inline(always)]
pub fn mask() -> u32 {
    kern_trace_mask.load(Ordering::Relaxed)
}

/// Whether `kind`'s class is enabled.
#[inline(always)]
pub fn enabled(kind: Kind) -> bool {
    mask() & kind.class_bit() != 0
}

/// Records an event of kind `$kind` (a constant [`Kind`]) with arguments `$a` and `$b` on this
/// CPU's ring if its class is enabled; the arguments are evaluated only then. Context: any
/// (hard interrupt handlers, IRQs masked, any IPL); never blocks.
///
/// A static key (Linux's jump label): the site is one `nop`, listed with its class in the
/// `.trace_sites` section, which [`set_mask`](crate::trace_control::set_mask) patches into a `b` to the site's out-of-line
/// block (arguments, the call of the record routine, a `b` back) while the class is enabled.
/// Disabled, a site costs that `nop`. Built with the kernel feature `notrace`, sites are
/// compiled out altogether (to measure what the `nop` costs).
#[cfg_attr(
    not(target_arch = "aarch64"),
    allow(
        unused_macros,
        reason = "the sites are in modules built for aarch64 only"
    )
)]
macro_rules! event {
    ($kind:expr, $a:expr, $b:expr $(,)?) => {
        $crate::trace::event_with!($kind, || (0u8, $a, $b))
    };
}
#[cfg_attr(
    not(target_arch = "aarch64"),
    allow(
        unused_imports,
        reason = "the sites are in modules built for aarch64 only"
    )
)]
pub(crate) use event;

/// As [`event!`], with `(aux, a, b)` computed by the closure `$args` only when the class is
/// enabled.
#[cfg_attr(
    not(target_arch = "aarch64"),
    allow(
        unused_macros,
        reason = "the sites are in modules built for aarch64 only"
    )
)]
macro_rules! event_with {
    ($kind:expr, $args:expr $(,)?) => {{
        const KIND: $crate::trace::Kind = $kind;
        #[cfg(all(target_arch = "aarch64", not(feature = "notrace")))]
        // SAFETY: the block only emits a `nop` and a `.trace_sites` entry (its address, the
        // label block's address, the class) that `trace_control::set_mask` uses to patch it into a `b`
        // to the label block and back; both are instructions the compiler's control flow
        // already allows (the label block returns to after the `asm!`).
        unsafe {
            ::core::arch::asm!(
                "1: nop",
                ".pushsection .trace_sites, \"a\"",
                ".balign 8",
                ".quad 1b, {block}, {class}",
                ".popsection",
                class = const KIND.class() as u32,
                block = label { $crate::trace::record_with(KIND, $args) },
                options(nomem, nostack, preserves_flags),
            );
        }
        #[cfg(all(target_arch = "aarch64", feature = "notrace"))]
        if false {
            $crate::trace::record_with(KIND, $args)
        }
        #[cfg(not(target_arch = "aarch64"))]
        if $crate::trace::enabled(KIND) {
            $crate::trace::record_with(KIND, $args)
        }
    }};
}
#[cfg_attr(
    not(target_arch = "aarch64"),
    allow(
        unused_imports,
        reason = "the sites are in modules built for aarch64 only"
    )
)]
pub(crate) use event_with;

/// Writes one record of `kind` with the arguments `args` returns (a site's out-of-line
/// block; use [`event!`]). Context: any; never blocks.
#[doc(hidden)]
#[inline(always)]
pub fn record_with(kind: Kind, args: impl FnOnce() -> (u8, u64, u64)) {
    let (aux, a, b) = args();
    #[cfg(target_arch = "aarch64")]
    crate::arch::aarch64::trace::record(kind as u64 | (aux as u64) << 8, a, b);
    #[cfg(not(target_arch = "aarch64"))]
    let _ = (kind, aux, a, b);
}

#[cfg(target_arch = "aarch64")]
const _: () = {
    use crate::arch::aarch64::trace as arch;
    assert!(1 << arch::RECORD_SHIFT == RECORD_SIZE);
    assert!(1 << arch::RING_INDEX_BITS == RING_RECORDS);
    assert!(arch::HEAD_TO_RECORDS == offsets::RECORDS - offsets::HEAD);
    assert!(core::mem::offset_of!(TraceRecord, ts) == 0);
    assert!(core::mem::offset_of!(TraceRecord, info) == 8);
    assert!(core::mem::offset_of!(TraceRecord, a) == 16);
    assert!(core::mem::offset_of!(TraceRecord, b) == 24);
};

/// Set by [`init`] once every CPU's `trace_head` points at its ring.
#[cfg(target_arch = "aarch64")]
static INITIALIZED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Whether [`init`] has run (every CPU's ring is set up). Context: any.
#[cfg(target_arch = "aarch64")]
pub fn initialized() -> bool {
    INITIALIZED.load(Ordering::Acquire)
}

/// Empties this CPU's ring. Context: any, on the CPU whose ring it empties (e.g. in a cross
/// call to every CPU; see `stats::trace_clear`).
#[cfg(target_arch = "aarch64")]
pub fn clear_this_cpu() {
    let daif = crate::arch::aarch64::irq_save();
    TRACE_RING.get().head.store(0, Ordering::Release);
    crate::arch::aarch64::irq_restore(daif);
}

/// Sets up what the record routine and readers need: each attached CPU's
/// `CpuInfo::trace_head` (the address of its ring's `head`, in its DPCPU copy) and
/// [`kern_trace_freq`]; the mask stays as it is. Boot CPU, at boot, after the DPCPU copies
/// exist and before [`set_mask`](crate::trace_control::set_mask).
#[cfg(target_arch = "aarch64")]
pub fn init() {
    for ci in crate::cpu::cpus() {
        let off = ci.dpcpu_off.load(Ordering::Acquire);
        assert!(
            off != 0,
            "trace::init: cpu{} has no DPCPU copy yet (percpu::init must run first)",
            ci.index()
        );
        let ring = crate::percpu::copy_address(TRACE_RING.template_address(), off);
        ci.trace_head
            .store(ring + offsets::HEAD as u64, Ordering::Release);
    }
    kern_trace_freq.store(crate::arch::aarch64::counter_frequency(), Ordering::Relaxed);
    INITIALIZED.store(true, Ordering::Release);
}

/// Parses a class list (`all`, `none`, or names separated by commas) into a mask.
pub fn parse_classes(spec: &str) -> Option<u32> {
    let mut mask = 0;
    for word in spec.split(',').map(str::trim) {
        match word {
            "all" | "on" => mask |= ALL_CLASSES,
            "none" | "off" | "" => {}
            name => mask |= 1 << CLASS_NAMES.iter().position(|&n| n == name)?,
        }
    }
    Some(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_lived_thread_keeps_its_name_while_many_come_and_go() {
        let slot_of = |id: u64| {
            kern_trace_names
                .iter()
                .position(|s| s.id.load(Ordering::Relaxed) & !NAME_EXITED == id)
        };
        name_thread(2, "idle/0");
        let first = 1_000_000;
        for id in first..first + 3 * NAME_SLOTS as u64 {
            name_thread(id, "short");
            name_gone(id);
        }
        assert!(
            slot_of(2).is_some(),
            "the living thread's name was overwritten"
        );
        // The last exited thread is still named, marked exited.
        let last = first + 3 * NAME_SLOTS as u64 - 1;
        let s = &kern_trace_names[slot_of(last).expect("the last one is named")];
        assert_eq!(s.id.load(Ordering::Relaxed), last | NAME_EXITED);
        name_gone(2);
    }

    #[test]
    fn kinds_round_trip_and_have_a_class() {
        for (i, k) in Kind::ALL.iter().enumerate() {
            assert_eq!(*k as u8 as usize, i + 1);
            assert_eq!(Kind::from_u8(*k as u8), Some(*k));
            assert!(k.class_bit() & ALL_CLASSES != 0);
        }
        assert_eq!(Kind::from_u8(0), None);
        assert_eq!(Kind::from_u8(21), None);
    }

    #[test]
    fn class_lists_parse() {
        assert_eq!(parse_classes("all"), Some(ALL_CLASSES));
        assert_eq!(parse_classes("intr,xcall"), Some(1 | 1 << 6));
        assert_eq!(parse_classes("bogus"), None);
    }

    #[test]
    fn info_packs_kind_aux_and_sequence() {
        let info = pack_info(7, 3, 0x1_0000_0005);
        assert_eq!(info & 0xff, 7);
        assert_eq!((info >> 8) & 0xff, 3);
        assert_eq!(info >> 32, 5);
    }
}
