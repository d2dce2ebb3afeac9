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
pub const MAXCPUS: usize = 64;

/// Version of the [`CpuInfo`] layout. Bump it whenever a field moves or changes meaning.
pub const CPUINFO_LAYOUT_VERSION: u32 = 4;

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

/// `ipending` flag: the CPU is not online; an spl call there is a bug (`crate::spl`, which
/// re-exports it). Here because a `CpuInfo` starts with it set.
pub const PENDING_NOT_ONLINE: u32 = 1 << 31;

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
    /// Context switches on this CPU. Offset 112.
    pub ctxsw_count: AtomicU64,
    /// Ticks taken while the idle thread ran. Offset 120.
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
    /// Priority of the thread running on this CPU (`u32::MAX` while it idles), published at
    /// each switch so that a waker can compare priorities without touching a thread that may
    /// exit at any moment. Offset 156.
    pub curpri: AtomicU32,
    /// Address of this CPU's idle thread. Offset 160.
    pub idlelwp: AtomicU64,
    /// Address of the `head` word of this CPU's trace ring (`trace::TRACE_RING`), so the
    /// record routine (`arch::aarch64::trace`) reaches the ring in one load from TPIDR_EL1;
    /// 0 until `trace::init`. Offset 168.
    pub trace_head: AtomicU64,
    /// Room for later fields without moving the ones above. Offset 176.
    pub reserved: [AtomicU64; 2],
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
    assert!(offset_of!(CpuInfo, trace_head) == 168);
    assert!(offset_of!(CpuInfo, reserved) == 176);
    // Where the architecture's assembly expects the words it touches.
    #[cfg(target_arch = "aarch64")]
    {
        use crate::arch::aarch64::cpu_offsets;
        assert!(offset_of!(CpuInfo, ipl) == cpu_offsets::IPL);
        assert!(offset_of!(CpuInfo, ipending) == cpu_offsets::IPENDING);
        assert!(offset_of!(CpuInfo, trace_head) == cpu_offsets::TRACE_HEAD);
    }
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
        ipending: AtomicU32::new(PENDING_NOT_ONLINE),
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
        curpri: AtomicU32::new(u32::MAX),
        idlelwp: AtomicU64::new(0),
        trace_head: AtomicU64::new(0),
        reserved: [const { AtomicU64::new(0) }; 2],
    };

    /// Kernel CPU index.
    pub fn index(&self) -> usize {
        self.index.load(Ordering::Relaxed) as usize
    }

    /// MPIDR affinity.
    #[inline]
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
        let bit = 1u64 << (self.index() % MAXCPUS);
        if state == CpuState::Online {
            ONLINE_CPUS.fetch_or(bit, Ordering::Release);
        } else {
            ONLINE_CPUS.fetch_and(!bit, Ordering::Release);
        }
    }

    /// Whether this CPU is online.
    pub fn is_online(&self) -> bool {
        self.state() == CpuState::Online
    }
}

/// A plain copy of a [`CpuInfo`]: what the kvm reader returns for a CPU of a dump or a live
/// guest ([`kvm_getpcpu`](crate::kvm::kvm_getpcpu)), and what [`CpuInfo::snapshot`] takes of a
/// running CPU. It is decoded field by field at the offsets of the one `CpuInfo` definition
/// (`offset_of!`), so the layout is written down exactly once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuInfoSnapshot {
    /// See [`CpuInfo::self_addr`].
    pub self_addr: u64,
    /// See [`CpuInfo::index`].
    pub index: u32,
    /// See [`CpuInfo::state`] (raw, may be a value [`CpuState`] does not know).
    pub state: u32,
    /// See [`CpuInfo::mpidr`].
    pub mpidr: u64,
    /// See [`CpuInfo::ipl`].
    pub ipl: u32,
    /// See [`CpuInfo::ipending`].
    pub ipending: u32,
    /// See [`CpuInfo::curlwp`].
    pub curlwp: u64,
    /// See [`CpuInfo::dpcpu_off`].
    pub dpcpu_off: u64,
    /// See [`CpuInfo::intr_count`].
    pub intr_count: u64,
    /// See [`CpuInfo::tick_count`].
    pub tick_count: u64,
    /// See [`CpuInfo::ipi_count`].
    pub ipi_count: [u64; IPI_KINDS],
    /// See [`CpuInfo::stack_base`].
    pub stack_base: u64,
    /// See [`CpuInfo::stack_size`].
    pub stack_size: u64,
    /// See [`CpuInfo::ctxsw_count`].
    pub ctxsw_count: u64,
    /// See [`CpuInfo::idle_ticks`].
    pub idle_ticks: u64,
    /// See [`CpuInfo::intr_ipl`].
    pub intr_ipl: u32,
    /// See [`CpuInfo::intr_depth`].
    pub intr_depth: u32,
}

impl CpuInfoSnapshot {
    /// Bytes of a `CpuInfo` in memory.
    pub const SIZE: usize = core::mem::size_of::<CpuInfo>();

    /// Decodes the first [`Self::SIZE`] bytes of `bytes` (little-endian, as the kernel stores
    /// them); `None` if there are fewer.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        use core::mem::offset_of;
        if bytes.len() < Self::SIZE {
            return None;
        }
        let u64_at = |off: usize| crate::le::u64_at(bytes, off);
        let u32_at = |off: usize| crate::le::u32_at(bytes, off);
        let ipi = offset_of!(CpuInfo, ipi_count);
        Some(Self {
            self_addr: u64_at(offset_of!(CpuInfo, self_addr)),
            index: u32_at(offset_of!(CpuInfo, index)),
            state: u32_at(offset_of!(CpuInfo, state)),
            mpidr: u64_at(offset_of!(CpuInfo, mpidr)),
            ipl: u32_at(offset_of!(CpuInfo, ipl)),
            ipending: u32_at(offset_of!(CpuInfo, ipending)),
            curlwp: u64_at(offset_of!(CpuInfo, curlwp)),
            dpcpu_off: u64_at(offset_of!(CpuInfo, dpcpu_off)),
            intr_count: u64_at(offset_of!(CpuInfo, intr_count)),
            tick_count: u64_at(offset_of!(CpuInfo, tick_count)),
            ipi_count: core::array::from_fn(|k| u64_at(ipi + 8 * k)),
            stack_base: u64_at(offset_of!(CpuInfo, stack_base)),
            stack_size: u64_at(offset_of!(CpuInfo, stack_size)),
            ctxsw_count: u64_at(offset_of!(CpuInfo, ctxsw_count)),
            idle_ticks: u64_at(offset_of!(CpuInfo, idle_ticks)),
            intr_ipl: u32_at(offset_of!(CpuInfo, intr_ipl)),
            intr_depth: u32_at(offset_of!(CpuInfo, intr_depth)),
        })
    }

    /// Encodes the snapshot as a `CpuInfo` in memory (reserved bytes zero): the inverse of
    /// [`Self::from_bytes`], used to build test dumps.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        use core::mem::offset_of;
        let mut out = [0u8; Self::SIZE];
        let mut put = |off: usize, bytes: &[u8]| out[off..off + bytes.len()].copy_from_slice(bytes);
        put(
            offset_of!(CpuInfo, self_addr),
            &self.self_addr.to_le_bytes(),
        );
        put(offset_of!(CpuInfo, index), &self.index.to_le_bytes());
        put(offset_of!(CpuInfo, state), &self.state.to_le_bytes());
        put(offset_of!(CpuInfo, mpidr), &self.mpidr.to_le_bytes());
        put(offset_of!(CpuInfo, ipl), &self.ipl.to_le_bytes());
        put(offset_of!(CpuInfo, ipending), &self.ipending.to_le_bytes());
        put(offset_of!(CpuInfo, curlwp), &self.curlwp.to_le_bytes());
        put(
            offset_of!(CpuInfo, dpcpu_off),
            &self.dpcpu_off.to_le_bytes(),
        );
        put(
            offset_of!(CpuInfo, intr_count),
            &self.intr_count.to_le_bytes(),
        );
        put(
            offset_of!(CpuInfo, tick_count),
            &self.tick_count.to_le_bytes(),
        );
        for (k, count) in self.ipi_count.iter().enumerate() {
            put(offset_of!(CpuInfo, ipi_count) + 8 * k, &count.to_le_bytes());
        }
        put(
            offset_of!(CpuInfo, stack_base),
            &self.stack_base.to_le_bytes(),
        );
        put(
            offset_of!(CpuInfo, stack_size),
            &self.stack_size.to_le_bytes(),
        );
        put(
            offset_of!(CpuInfo, ctxsw_count),
            &self.ctxsw_count.to_le_bytes(),
        );
        put(
            offset_of!(CpuInfo, idle_ticks),
            &self.idle_ticks.to_le_bytes(),
        );
        put(offset_of!(CpuInfo, intr_ipl), &self.intr_ipl.to_le_bytes());
        put(
            offset_of!(CpuInfo, intr_depth),
            &self.intr_depth.to_le_bytes(),
        );
        out
    }

    /// The state decoded, `None` for a value no kernel writes.
    pub fn cpu_state(&self) -> Option<CpuState> {
        CpuState::from_raw(self.state)
    }
}

impl CpuInfo {
    /// A copy of every field (each loaded on its own, so the copy is not one atomic snapshot
    /// of a CPU that is running).
    pub fn snapshot(&self) -> CpuInfoSnapshot {
        let r = Ordering::Relaxed;
        CpuInfoSnapshot {
            self_addr: self.self_addr.load(r),
            index: self.index.load(r),
            state: self.state.load(Ordering::Acquire),
            mpidr: self.mpidr.load(r),
            ipl: self.ipl.load(r),
            ipending: self.ipending.load(r),
            curlwp: self.curlwp.load(r),
            dpcpu_off: self.dpcpu_off.load(r),
            intr_count: self.intr_count.load(r),
            tick_count: self.tick_count.load(r),
            ipi_count: core::array::from_fn(|k| self.ipi_count[k].load(r)),
            stack_base: self.stack_base.load(r),
            stack_size: self.stack_size.load(r),
            ctxsw_count: self.ctxsw_count.load(r),
            idle_ticks: self.idle_ticks.load(r),
            intr_ipl: self.intr_ipl.load(r),
            intr_depth: self.intr_depth.load(r),
        }
    }
}

/// The `CpuInfo` of every possible CPU, indexed by kernel CPU index.
static CPU_INFO: [CpuInfo; MAXCPUS] = [const { CpuInfo::ZERO }; MAXCPUS];

/// Exported: the maximum CPU count (FreeBSD's `mp_maxcpus`).
#[allow(non_upper_case_globals, reason = "an exported C-style symbol")]
#[unsafe(export_name = crate::kvm_symbol!(maxcpus))]
#[used]
pub static kern_maxcpus: u32 = MAXCPUS as u32;

/// Exported: the [`CpuInfo`] layout version, checked by the kvm reader.
#[allow(non_upper_case_globals, reason = "an exported C-style symbol")]
#[unsafe(export_name = crate::kvm_symbol!(cpuinfo_layout))]
#[used]
pub static kern_cpuinfo_layout: u32 = CPUINFO_LAYOUT_VERSION;

/// Exported: `size_of::<CpuInfo>()`, checked by the kvm reader.
#[allow(non_upper_case_globals, reason = "an exported C-style symbol")]
#[unsafe(export_name = crate::kvm_symbol!(cpuinfo_size))]
#[used]
pub static kern_cpuinfo_size: u32 = core::mem::size_of::<CpuInfo>() as u32;

/// Exported: the number of CPUs attached (present in the device tree and within MAXCPUS).
#[allow(non_upper_case_globals, reason = "an exported C-style symbol")]
#[unsafe(export_name = crate::kvm_symbol!(ncpu))]
#[used]
pub static kern_ncpu: AtomicU32 = AtomicU32::new(0);

/// Exported: CPU index to `CpuInfo` address, 0 for CPUs that were never attached (FreeBSD's
/// `cpuid_to_pcpu`).
#[allow(non_upper_case_globals, reason = "an exported C-style symbol")]
#[unsafe(export_name = crate::kvm_symbol!(cpu_info_ptrs))]
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
#[inline]
pub fn ncpu() -> usize {
    kern_ncpu.load(Ordering::Acquire) as usize
}

/// The `CpuInfo` of CPU `index`, if that CPU is attached (NetBSD's `cpu_lookup`).
#[inline]
pub fn cpu_lookup(index: usize) -> Option<&'static CpuInfo> {
    (index < ncpu()).then(|| &CPU_INFO[index])
}

/// Iterates over the attached CPUs in index order (NetBSD's `CPU_INFO_FOREACH`).
pub fn cpus() -> impl Iterator<Item = &'static CpuInfo> {
    CPU_INFO[..ncpu()].iter()
}

/// The CPUs whose state is Online, one bit per index (NetBSD's `kcpuset_running`): kept by
/// [`CpuInfo::set_state`] after the state itself.
static ONLINE_CPUS: AtomicU64 = AtomicU64::new(0);

/// The online CPUs as a mask (bit = index), for code that sends to all of them without
/// walking every `CpuInfo`. A CPU changing state meanwhile may or may not be in it, as with
/// [`CpuInfo::is_online`]. Context: any.
#[inline]
pub fn online_cpus() -> u64 {
    ONLINE_CPUS.load(Ordering::Acquire)
}

/// The number of CPUs currently online.
pub fn ncpu_online() -> usize {
    cpus().filter(|ci| ci.is_online()).count()
}

/// This CPU's `CpuInfo`, in O(1) through TPIDR_EL1.
///
/// Context: any, once the CPU has run [`set_curcpu`] (the first thing boot code does). A
/// thread at IPL_NONE with preemption enabled may be moved to another CPU right after the
/// read, so the result names *a* CPU it ran on: per-CPU read-modify-writes happen at a raised
/// IPL, with preemption disabled or IRQs masked, or inside a no-preemption window
/// (`arch::aarch64::nopreempt`); the running thread is `sched::curlwp()`, which is never stale.
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
    // No thread runs here yet (the register's reset value is unknown).
    crate::arch::aarch64::write_curlwp(0);
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
    fn snapshot_bytes_round_trip_at_the_documented_offsets() {
        let snap = CpuInfoSnapshot {
            self_addr: 0x4021_0040,
            index: 3,
            state: 2,
            mpidr: 0x8000_0003,
            ipl: 5,
            ipending: 1 << 30,
            curlwp: 0xdead_beef,
            dpcpu_off: 0x1000,
            intr_count: 11,
            tick_count: 12,
            ipi_count: [1, 2, 3, 4],
            stack_base: 0x5000_0000,
            stack_size: 0x1_0000,
            ctxsw_count: 13,
            idle_ticks: 14,
            intr_ipl: 6,
            intr_depth: 1,
        };
        let bytes = snap.to_bytes();
        assert_eq!(CpuInfoSnapshot::from_bytes(&bytes), Some(snap));
        assert_eq!(bytes[8..12], 3u32.to_le_bytes(), "index at offset 8");
        assert_eq!(
            bytes[16..24],
            0x8000_0003u64.to_le_bytes(),
            "mpidr at offset 16"
        );
        assert_eq!(
            bytes[88..96],
            4u64.to_le_bytes(),
            "ipi_count[3] at offset 88"
        );
        assert_eq!(CpuInfoSnapshot::from_bytes(&bytes[..191]), None);
    }

    #[test]
    fn snapshot_of_a_cpu_info_copies_every_field() {
        let ci = CpuInfo::ZERO;
        ci.index.store(2, Ordering::Relaxed);
        ci.tick_count.store(99, Ordering::Relaxed);
        ci.ipi_count[1].store(4, Ordering::Relaxed);
        let snap = ci.snapshot();
        assert_eq!((snap.index, snap.tick_count, snap.ipi_count[1]), (2, 99, 4));
        assert_eq!(snap.ipending, PENDING_NOT_ONLINE);
        assert_eq!(snap.cpu_state(), Some(CpuState::Offline));
    }

    #[test]
    fn exported_layout_constants_match_the_struct() {
        assert_eq!(kern_cpuinfo_size as usize, core::mem::size_of::<CpuInfo>());
        assert_eq!(kern_maxcpus as usize, MAXCPUS);
        assert_eq!(core::mem::align_of::<CpuInfo>(), 64);
    }
}
