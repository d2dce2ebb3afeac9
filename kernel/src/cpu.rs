//! `cpu_info`: one [`CpuInfo`] per CPU, found in O(1) through TPIDR_EL1 ([`curcpu`]), plus CPU
//! iteration ([`cpus`], NetBSD's `CPU_INFO_FOREACH`), lookup by index and the count of CPUs.
//!
//! `CpuInfo` is `#[repr(C)]` with fixed-width fields at fixed offsets (checked at compile time
//! below and documented in docs/architecture.md) because something other than this kernel
//! reads it: the kvm reader, from a crash dump or a live guest. Everything a reader needs is
//! exported under a stable symbol name: [`kern_maxcpus`], [`kern_cpu_info_ptrs`] (the
//! index-to-`CpuInfo` pointer array, FreeBSD's `cpuid_to_pcpu`) and [`kern_cpuinfo_layout`].
//!
//! Fields are atomics so other CPUs (a test, the monitor) may read them while the owner
//! updates them; each is written only by its own CPU unless its doc says otherwise.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The largest number of CPUs the kernel supports. CPUs beyond it in the device tree are
/// reported on the console and left offline.
pub const MAXCPUS: usize = 16;

/// Version of the [`CpuInfo`] layout. Bump it whenever a field moves or changes meaning.
pub const CPUINFO_LAYOUT_VERSION: u32 = 3;

/// Number of IPI kinds counted separately in [`CpuInfo::ipi_count`].
pub const IPI_KINDS: usize = 4;

/// The life cycle of a CPU, as stored in [`CpuInfo::state`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum CpuState {
    /// Not started (absent, beyond MAXCPUS, or its start failed).
    Offline = 0,
    /// Asked to start; has not reported in yet.
    Starting = 1,
    /// Running the kernel.
    Online = 2,
    /// Stopped for good after a panic on some CPU.
    Halted = 3,
}

impl CpuState {
    /// Decodes a raw state value; unknown values read as `None`.
    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            0 => Some(Self::Offline),
            1 => Some(Self::Starting),
            2 => Some(Self::Online),
            3 => Some(Self::Halted),
            _ => None,
        }
    }

    /// Lower-case name for tables and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Offline => "offline",
            Self::Starting => "starting",
            Self::Online => "online",
            Self::Halted => "halted",
        }
    }
}

/// Per-CPU kernel state (NetBSD's `struct cpu_info`, conventionally named `ci`).
#[repr(C, align(64))]
#[derive(Debug)]
pub struct CpuInfo {
    /// Address of this structure (lets a reader of a dump check the pointer array). Offset 0.
    pub self_addr: AtomicU64,
    /// Kernel CPU index, 0 = boot CPU. Offset 8.
    pub index: AtomicU32,
    /// [`CpuState`] as `u32`. Written by the boot CPU and by the CPU itself. Offset 12.
    pub state: AtomicU32,
    /// MPIDR affinity (Aff3..Aff0) from the device tree. Offset 16.
    pub mpidr: AtomicU64,
    /// Current interrupt priority level (`crate::spl`). Offset 24.
    pub ipl: AtomicU32,
    /// Deferred work per IPL (bit L) plus the spl flags `PENDING_IN_INTR` (bit 30) and
    /// `PENDING_NOT_ONLINE` (bit 31); see `crate::spl`. Offset 28.
    pub ipending: AtomicU32,
    /// Address of the thread running on this CPU, 0 before threads exist. Offset 32.
    pub curlwp: AtomicU64,
    /// This CPU's DPCPU offset (copy address minus template address). Offset 40.
    pub dpcpu_off: AtomicU64,
    /// Hardware interrupts taken, all sources. Offset 48.
    pub intr_count: AtomicU64,
    /// Clock ticks taken. Offset 56.
    pub tick_count: AtomicU64,
    /// IPIs received, per kind (`crate::intr::Ipi`). Offset 64.
    pub ipi_count: [AtomicU64; IPI_KINDS],
    /// Lowest address of this CPU's boot/idle stack. Offset 96.
    pub stack_base: AtomicU64,
    /// Size in bytes of that stack. Offset 104.
    pub stack_size: AtomicU64,
    /// Context switches (filled by the scheduler issue). Offset 112.
    pub ctxsw_count: AtomicU64,
    /// Ticks spent idle (filled by the scheduler issue). Offset 120.
    pub idle_ticks: AtomicU64,
    /// IPL of the hard interrupt handler running on this CPU (valid while `intr_depth` > 0).
    /// Offset 128.
    pub intr_ipl: AtomicU32,
    /// Nesting depth of hard interrupt handlers on this CPU. Offset 132.
    pub intr_depth: AtomicU32,
    /// Top of this CPU's exception stack, used for synchronous exceptions so that a stack
    /// overflow can still be reported. Offset 136.
    pub exc_stack_top: AtomicU64,
    /// A reschedule is wanted on this CPU (set by wakeups and the tick). Offset 144.
    pub resched: AtomicU32,
    /// Spin mutexes held on this CPU. Offset 148.
    pub mtx_count: AtomicU32,
    /// IPL to restore when the last spin mutex is released. Offset 152.
    pub mtx_oldspl: AtomicU32,
    /// Reserved, 0. Offset 156.
    pub spare: AtomicU32,
    /// Address of this CPU's idle thread. Offset 160.
    pub idlelwp: AtomicU64,
    /// Room for later fields without moving the ones above. Offset 168.
    pub reserved: [AtomicU64; 3],
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(offset_of!(CpuInfo, self_addr) == 0);
    assert!(offset_of!(CpuInfo, index) == 8);
    assert!(offset_of!(CpuInfo, state) == 12);
    assert!(offset_of!(CpuInfo, mpidr) == 16);
    assert!(offset_of!(CpuInfo, ipl) == 24);
    assert!(offset_of!(CpuInfo, ipending) == 28);
    assert!(offset_of!(CpuInfo, curlwp) == 32);
    assert!(offset_of!(CpuInfo, dpcpu_off) == 40);
    assert!(offset_of!(CpuInfo, intr_count) == 48);
    assert!(offset_of!(CpuInfo, tick_count) == 56);
    assert!(offset_of!(CpuInfo, ipi_count) == 64);
    assert!(offset_of!(CpuInfo, stack_base) == 96);
    assert!(offset_of!(CpuInfo, stack_size) == 104);
    assert!(offset_of!(CpuInfo, ctxsw_count) == 112);
    assert!(offset_of!(CpuInfo, idle_ticks) == 120);
    assert!(offset_of!(CpuInfo, intr_ipl) == 128);
    assert!(offset_of!(CpuInfo, intr_depth) == 132);
    assert!(offset_of!(CpuInfo, exc_stack_top) == 136);
    assert!(offset_of!(CpuInfo, resched) == 144);
    assert!(offset_of!(CpuInfo, mtx_count) == 148);
    assert!(offset_of!(CpuInfo, mtx_oldspl) == 152);
    assert!(offset_of!(CpuInfo, idlelwp) == 160);
    assert!(offset_of!(CpuInfo, reserved) == 168);
    assert!(size_of::<CpuInfo>() == 192);
};

impl CpuInfo {
    /// An all-zero, offline `CpuInfo`.
    #[allow(
        clippy::declare_interior_mutable_const,
        reason = "used only as an array initialiser"
    )]
    pub const ZERO: Self = Self {
        self_addr: AtomicU64::new(0),
        index: AtomicU32::new(0),
        state: AtomicU32::new(CpuState::Offline as u32),
        mpidr: AtomicU64::new(0),
        ipl: AtomicU32::new(0),
        ipending: AtomicU32::new(crate::spl::PENDING_NOT_ONLINE),
        curlwp: AtomicU64::new(0),
        dpcpu_off: AtomicU64::new(0),
        intr_count: AtomicU64::new(0),
        tick_count: AtomicU64::new(0),
        ipi_count: [const { AtomicU64::new(0) }; IPI_KINDS],
        stack_base: AtomicU64::new(0),
        stack_size: AtomicU64::new(0),
        ctxsw_count: AtomicU64::new(0),
        idle_ticks: AtomicU64::new(0),
        intr_ipl: AtomicU32::new(0),
        intr_depth: AtomicU32::new(0),
        exc_stack_top: AtomicU64::new(0),
        resched: AtomicU32::new(0),
        mtx_count: AtomicU32::new(0),
        mtx_oldspl: AtomicU32::new(0),
        spare: AtomicU32::new(0),
        idlelwp: AtomicU64::new(0),
        reserved: [const { AtomicU64::new(0) }; 3],
    };

    /// Kernel CPU index.
    pub fn index(&self) -> usize {
        self.index.load(Ordering::Relaxed) as usize
    }

    /// MPIDR affinity.
    pub fn mpidr(&self) -> u64 {
        self.mpidr.load(Ordering::Relaxed)
    }

    /// Current life-cycle state.
    pub fn state(&self) -> CpuState {
        CpuState::from_raw(self.state.load(Ordering::Acquire)).unwrap_or(CpuState::Offline)
    }

    /// Sets the life-cycle state (release, so data written before is visible to whoever sees
    /// the new state).
    pub fn set_state(&self, state: CpuState) {
        self.state.store(state as u32, Ordering::Release);
    }

    /// Whether this CPU is online.
    pub fn is_online(&self) -> bool {
        self.state() == CpuState::Online
    }
}

/// The `CpuInfo` of every possible CPU, indexed by kernel CPU index.
static CPU_INFO: [CpuInfo; MAXCPUS] = [const { CpuInfo::ZERO }; MAXCPUS];

/// Exported: the maximum CPU count (FreeBSD's `mp_maxcpus`).
#[unsafe(no_mangle)]
#[used]
pub static kern_maxcpus: u32 = MAXCPUS as u32;

/// Exported: the [`CpuInfo`] layout version, checked by the kvm reader.
#[unsafe(no_mangle)]
#[used]
pub static kern_cpuinfo_layout: u32 = CPUINFO_LAYOUT_VERSION;

/// Exported: `size_of::<CpuInfo>()`, checked by the kvm reader.
#[unsafe(no_mangle)]
#[used]
pub static kern_cpuinfo_size: u32 = core::mem::size_of::<CpuInfo>() as u32;

/// Exported: the number of CPUs attached (present in the device tree and within MAXCPUS).
#[unsafe(no_mangle)]
#[used]
pub static kern_ncpu: AtomicU32 = AtomicU32::new(0);

/// Exported: CPU index to `CpuInfo` address, 0 for CPUs that were never attached (FreeBSD's
/// `cpuid_to_pcpu`).
#[unsafe(no_mangle)]
#[used]
pub static kern_cpu_info_ptrs: [AtomicU64; MAXCPUS] = [const { AtomicU64::new(0) }; MAXCPUS];

/// Attaches CPU `index` with affinity `mpidr`: fills its `CpuInfo` identity fields and
/// publishes it in the pointer array. Boot CPU only, before secondaries start; `index` must be
/// below [`MAXCPUS`] and attached in order 0, 1, 2, ...
pub fn attach(index: usize, mpidr: u64) -> &'static CpuInfo {
    assert!(
        index < MAXCPUS,
        "cpu::attach: index {index} >= MAXCPUS {MAXCPUS}"
    );
    let ci = &CPU_INFO[index];
    ci.self_addr
        .store(ci as *const CpuInfo as u64, Ordering::Relaxed);
    ci.index.store(index as u32, Ordering::Relaxed);
    ci.mpidr.store(mpidr, Ordering::Relaxed);
    kern_cpu_info_ptrs[index].store(ci as *const CpuInfo as u64, Ordering::Release);
    kern_ncpu.fetch_max(index as u32 + 1, Ordering::AcqRel);
    ci
}

/// The number of attached CPUs (NetBSD's `ncpu`). Valid once the boot CPU attached them all.
pub fn ncpu() -> usize {
    kern_ncpu.load(Ordering::Acquire) as usize
}

/// The `CpuInfo` of CPU `index`, if that CPU is attached (NetBSD's `cpu_lookup`).
pub fn cpu_lookup(index: usize) -> Option<&'static CpuInfo> {
    (index < ncpu()).then(|| &CPU_INFO[index])
}

/// Iterates over the attached CPUs in index order (NetBSD's `CPU_INFO_FOREACH`).
pub fn cpus() -> impl Iterator<Item = &'static CpuInfo> {
    CPU_INFO[..ncpu()].iter()
}

/// The number of CPUs currently online.
pub fn ncpu_online() -> usize {
    cpus().filter(|ci| ci.is_online()).count()
}

/// This CPU's `CpuInfo`, in O(1) through TPIDR_EL1.
///
/// Context: any, once the CPU has run [`set_curcpu`] (the first thing boot code does).
#[cfg(target_arch = "aarch64")]
#[inline(always)]
pub fn curcpu() -> &'static CpuInfo {
    let ptr = crate::arch::aarch64::read_tpidr() as *const CpuInfo;
    debug_assert!(!ptr.is_null(), "curcpu() before set_curcpu()");
    // SAFETY: TPIDR_EL1 is written only by `set_curcpu` with the address of an element of the
    // static `CPU_INFO` array, which lives forever.
    unsafe { &*ptr }
}

/// This CPU's index (shorthand for `curcpu().index()`).
#[cfg(target_arch = "aarch64")]
#[inline(always)]
pub fn cpu_number() -> usize {
    curcpu().index()
}

/// Makes `ci` this CPU's `curcpu()` (writes TPIDR_EL1).
#[cfg(target_arch = "aarch64")]
pub fn set_curcpu(ci: &'static CpuInfo) {
    crate::arch::aarch64::write_tpidr(ci as *const CpuInfo as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_rejects_unknown_values() {
        for s in [
            CpuState::Offline,
            CpuState::Starting,
            CpuState::Online,
            CpuState::Halted,
        ] {
            assert_eq!(CpuState::from_raw(s as u32), Some(s));
        }
        assert_eq!(CpuState::from_raw(4), None);
    }

    #[test]
    fn exported_layout_constants_match_the_struct() {
        assert_eq!(kern_cpuinfo_size as usize, core::mem::size_of::<CpuInfo>());
        assert_eq!(kern_maxcpus as usize, MAXCPUS);
        assert_eq!(core::mem::align_of::<CpuInfo>(), 64);
    }
}
