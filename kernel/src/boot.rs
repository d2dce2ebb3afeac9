//! Bringing the kernel up: [`kernel_main`] on the boot CPU, [`kernel_secondary_main`] on the
//! others.
//!
//! The boot CPU, entered from the board with the MMU off: registers the platform, makes itself
//! CPU 0, installs the exception vectors, reads the device tree, turns the MMU on, starts the
//! heap, attaches every CPU, gives each its DPCPU copy and checks the copies, sets up the
//! interrupt controller and the clock tick, then starts the other CPUs through the platform
//! (PSCI or spin table) and waits for them; each checks its DPCPU offset as it comes online. What it runs next depends on the image: the normal kernel idles, the test image
//! runs the in-kernel tests, the bench image the benchmarks.
//!
//! The board's linker script must define the symbols declared in [`arch::linker`].

use crate::arch::aarch64::linker;
use crate::arch::aarch64::mmu::{self, ImageLayout, MmuConfig};
use crate::arch::aarch64::secondary::SecondaryBoot;
use crate::arch::aarch64::{self as arch, vectors};
use crate::cpu::{self, CpuState, cpu_lookup, cpus, curcpu};
use crate::devtree;
use crate::platform::{PhysRange, Platform, platform, set_platform};
use crate::{boottime, clock, heap, intr, kprintln, percpu, sched};
use alloc::boxed::Box;
use core::sync::atomic::Ordering;

fn sym(s: &u8) -> u64 {
    s as *const u8 as u64
}

/// The image's sections from the linker symbols.
fn image_layout() -> ImageLayout {
    // SAFETY: linker-script symbols; only their addresses are taken.
    unsafe {
        use linker::*;
        let range = |a: &u8, b: &u8| PhysRange {
            start: sym(a),
            size: sym(b) - sym(a),
        };
        ImageLayout {
            text: range(&__text_start, &__text_end),
            rodata: range(&__rodata_start, &__rodata_end),
            data: range(&__data_start, &__kernel_end),
        }
    }
}

/// The whole image: text to the end of data, bss, the boot stack and the page-table pool.
fn image_range(image: &ImageLayout) -> PhysRange {
    PhysRange {
        start: image.text.start,
        size: image.data.end() - image.text.start,
    }
}

/// Size of each CPU's exception stack (synchronous exceptions run on it); the vectors'
/// nesting check in `arch/aarch64/vectors.rs` uses the same size.
pub const EXCEPTION_STACK_SIZE: usize = 0x4000;

/// Size of each secondary CPU's boot stack.
pub const SECONDARY_STACK_SIZE: usize = 64 * 1024;

/// The most ranges a board may return from [`Platform::reserved_ranges`].
pub const MAX_BOARD_RESERVED: usize = 4;

/// How long the boot CPU waits for a started CPU to report online.
const CPU_START_TIMEOUT_MS: u64 = 2000;

static MMU_CONFIG: spin::Once<MmuConfig> = spin::Once::new();

pub use crate::bootinfo::{bootarg, device_tree, system_info};
pub use crate::boottime::{BootPhase, mark};

/// The kernel's entry on the boot CPU. `dtb` is the device tree the firmware passed (the board
/// has checked its header). Runs with the MMU off and IRQs masked; never returns.
pub fn kernel_main(board: &'static dyn Platform, dtb: &'static [u8]) -> ! {
    // Until the MMU is on, no atomic read-modify-write, no lock, no `spin::Once` and no
    // `kprintln!`: with the MMU off every data access is Device memory, where exclusives need a
    // global monitor that the Raspberry Pi's interconnect does not have (they would never
    // succeed). Only registering the board (a plain store, so that a panic reaches the console
    // through `early`), the device tree parse and the map come first; `cargo xtask test`
    // checks the code reachable from here to `kernel_main_mmu_on` for exclusives.
    // SAFETY: the first thing the boot CPU does in the kernel; no other CPU runs yet.
    unsafe { set_platform(board) };
    mark(BootPhase::Board);
    let mpidr = crate::cpu_affinity(arch::read_mpidr());
    vectors::install();
    let info = match devtree::parse(dtb, mpidr) {
        Ok(info) => info,
        Err(e) => crate::early::fail(format_args!("cannot boot: {e}")),
    };
    crate::early::crash_on_request(info.bootargs());
    mark(BootPhase::DeviceTree);
    let image = image_layout();
    // The thread stacks stay clear of the image, the tree, its reserved ranges and the board's.
    let mut avoid = [PhysRange::default(); 1 + devtree::MAX_RESERVED + MAX_BOARD_RESERVED];
    avoid[0] = image_range(&image);
    let mut avoid_count = 1;
    for r in info
        .reserved()
        .iter()
        .chain(board.reserved_ranges().iter().take(MAX_BOARD_RESERVED))
    {
        avoid[avoid_count] = *r;
        avoid_count += 1;
    }
    // Plain stores only (no read-modify-write): fine with the MMU off.
    let stacks = sched::stack::reserve(info.memory(), &avoid[..avoid_count]).unwrap_or_default();
    // SAFETY: boot CPU, MMU off, first use of the page-table pool; RAM from the device tree
    // covers the image and boot stack, and the board lists its devices.
    let mmu_config = match unsafe {
        mmu::enable(
            info.memory(),
            &image,
            board.device_ranges(),
            mmu::GuardedSlots {
                range: stacks,
                slot: sched::stack::SLOT_SIZE,
                guard: sched::stack::GUARD_SIZE,
            },
        )
    } {
        Ok(config) => config,
        Err(mmu::MapFailed(what, range)) => crate::early::fail(format_args!(
            "cannot map {what} {:#x}..{:#x}",
            range.start,
            range.end()
        )),
    };

    mark(BootPhase::PageTables);
    kernel_main_mmu_on(board, dtb, info, image, stacks, mmu_config)
}

/// The rest of [`kernel_main`], with the MMU and caches on: everything else may run. Kept out
/// of line: the pre-MMU check of `cargo xtask test` stops here.
#[inline(never)]
fn kernel_main_mmu_on(
    board: &'static dyn Platform,
    dtb: &'static [u8],
    info: devtree::SystemInfo,
    image: ImageLayout,
    stacks: PhysRange,
    mmu_config: MmuConfig,
) -> ! {
    crate::bootinfo::set_device_tree(dtb);
    let mmu_config = MMU_CONFIG.call_once(|| mmu_config);
    let mpidr = crate::cpu_affinity(arch::read_mpidr());
    let ci0 = cpu::attach(0, mpidr);
    cpu::set_curcpu(ci0);
    // SAFETY: linker symbols; only addresses are taken.
    let (stack_lo, stack_hi) = unsafe {
        (
            sym(&linker::__boot_stack_bottom),
            sym(&linker::__boot_stack_top),
        )
    };
    ci0.stack_base.store(stack_lo, Ordering::Relaxed);
    ci0.stack_size.store(stack_hi - stack_lo, Ordering::Relaxed);

    kprintln!("");
    kprintln!(
        "kernel {} on {}: booting at EL{} on MPIDR {:#x}",
        env!("CARGO_PKG_VERSION"),
        board.name(),
        arch::current_el(),
        mpidr
    );

    let info = crate::bootinfo::set_system_info(info);
    mark(BootPhase::Console);
    if info.boot_cpu_missing {
        kprintln!("warning: the boot CPU (MPIDR {mpidr:#x}) is not in the device tree");
    }
    if info.cpus_ignored > 0 {
        kprintln!(
            "warning: {} more CPUs in the device tree than MAXCPUS = {}; they stay offline",
            info.cpus_ignored,
            cpu::MAXCPUS
        );
    }
    if info.memory_ignored > 0 {
        kprintln!("warning: {} memory regions ignored", info.memory_ignored);
    }

    let mut holes = [PhysRange::default(); 2 + devtree::MAX_RESERVED + MAX_BOARD_RESERVED];
    holes[0] = image_range(&image);
    holes[1] = stacks;
    let board_reserved = board.reserved_ranges();
    if board_reserved.len() > MAX_BOARD_RESERVED {
        panic!(
            "the board reserves {} ranges, at most {MAX_BOARD_RESERVED} are supported",
            board_reserved.len()
        );
    }
    let mut hole_count = 2;
    for r in info.reserved().iter().chain(board_reserved) {
        holes[hole_count] = *r;
        hole_count += 1;
    }
    // SAFETY: the holes cover the image (with bss, boot stack and page tables), the thread
    // stacks, the device tree, its reserved ranges and the board's; the rest of RAM is unused
    // and mapped read-write.
    let heap_bytes = unsafe { heap::init(info.memory(), &holes[..hole_count]) };
    sched::stack::init();
    mark(BootPhase::Heap);
    kprintln!(
        "memory: {} MiB RAM, heap {} MiB; {} CPUs in the device tree",
        info.memory_size() >> 20,
        heap_bytes >> 20,
        info.cpus().len() + info.cpus_ignored
    );

    for (index, node) in info.cpus().iter().enumerate().skip(1) {
        cpu::attach(index, node.mpidr);
    }
    percpu::init();
    percpu::check_copies();
    percpu::check_this_cpu(0);
    for ci in cpu::cpus() {
        let base = leak_stack(EXCEPTION_STACK_SIZE);
        ci.exc_stack_top
            .store(base + EXCEPTION_STACK_SIZE as u64, Ordering::Relaxed);
    }

    mark(BootPhase::PerCpu);

    board.irq_init();
    board.irq_init_cpu(0);
    intr::init();
    intr::init_cpu();
    clock::init(
        bootarg("hz")
            .and_then(|v| v.parse().ok())
            .unwrap_or(clock::DEFAULT_HZ),
    );
    clock::start_this_cpu();
    crate::spl::set_online(ci0, true);
    ci0.set_state(CpuState::Online);
    boottime::online(0);
    sched::init_boot_cpu();
    // The idle threads have their stack slots: what is left bounds the kernel threads.
    crate::kthread::init(bootarg("kthread.max").and_then(|v| v.parse().ok()));
    arch::irq_enable();
    mark(BootPhase::Interrupts);

    start_secondaries(board, mmu_config);
    report_cpus();
    crate::softint::init();
    crate::xcall::init();
    crate::trace::init();
    if let Some(spec) = bootarg("trace") {
        match crate::trace::parse_classes(spec) {
            Some(mask) => crate::trace_control::set_mask(mask),
            None => kprintln!(
                "trace: unknown class in trace={spec} (classes: all, none, {})",
                crate::trace::CLASS_NAMES.join(",")
            ),
        }
    }
    if let Some(kind) = bootarg("crash") {
        crate::fault::crash_on_request(kind);
    }

    #[cfg(feature = "ktest")]
    if let Some(name) = bootarg("trace.run") {
        crate::ktest::trace_workload::run_named(name);
    }
    #[cfg(feature = "ktest")]
    if bootarg("kvm.selftest") == Some("1") {
        crate::ktest::kvm_selftest::run();
    }
    #[cfg(feature = "ktest")]
    crate::ktest::run_all();
    #[cfg(all(feature = "bench", not(feature = "ktest")))]
    crate::bench::run_all();
    #[cfg(not(any(feature = "ktest", feature = "bench")))]
    {
        crate::drivers::virtio::blk::autoconf();
        crate::monitor::start();
        // lwp0 has nothing left to do: it sleeps for good and the CPUs idle.
        let forever = sched::sleepq::SleepQueue::new();
        loop {
            let _ = forever.sleep(None, || true);
        }
    }
}

/// A stack of `size` bytes from the heap, 16-byte aligned and never freed; returns its lowest
/// address. Not zeroed: a stack needs no initial contents, and zeroing each secondary's 64 KiB
/// cost 25 k guest instructions per CPU at boot.
fn leak_stack(size: usize) -> u64 {
    let layout = core::alloc::Layout::from_size_align(size, 16).expect("stack layout");
    // SAFETY: the size is not zero; the block is never freed.
    let base = unsafe { alloc::alloc::alloc(layout) };
    assert!(!base.is_null(), "out of memory for a {size}-byte stack");
    base as u64
}

fn start_secondaries(board: &dyn Platform, mmu_config: &MmuConfig) {
    let timeout = clock::ms_to_counter(CPU_START_TIMEOUT_MS);
    for ci in cpus().skip(1) {
        let stack_base = leak_stack(SECONDARY_STACK_SIZE);
        ci.stack_base.store(stack_base, Ordering::Relaxed);
        ci.stack_size
            .store(SECONDARY_STACK_SIZE as u64, Ordering::Relaxed);
        let boot = Box::leak(Box::new(SecondaryBoot {
            mmu: *mmu_config,
            stack_top: stack_base + SECONDARY_STACK_SIZE as u64,
            cpu_index: ci.index() as u64,
        }));
        let boot_addr = boot as *const SecondaryBoot as u64;
        // The CPU reads this with its caches off.
        arch::clean_dcache_range(boot_addr, core::mem::size_of::<SecondaryBoot>() as u64);
        ci.set_state(CpuState::Starting);
        arch::clean_dcache_range(ci as *const _ as u64, core::mem::size_of_val(ci) as u64);
        boottime::start_requested(ci.index());
        if let Err(e) = board.start_cpu(ci.index(), ci.mpidr(), boot_addr) {
            kprintln!(
                "cpu{} (MPIDR {:#x}): start failed: {e:?}",
                ci.index(),
                ci.mpidr()
            );
            ci.set_state(CpuState::Offline);
        }
    }
    let start = arch::counter();
    while cpus().any(|ci| ci.state() == CpuState::Starting) {
        if arch::counter() - start > timeout {
            for ci in cpus().filter(|ci| ci.state() == CpuState::Starting) {
                kprintln!(
                    "cpu{} (MPIDR {:#x}): did not come online within {CPU_START_TIMEOUT_MS} ms",
                    ci.index(),
                    ci.mpidr()
                );
                ci.set_state(CpuState::Offline);
            }
            break;
        }
        arch::wait_for_event();
    }
}

fn report_cpus() {
    for ci in cpus() {
        kprintln!(
            "cpu{}: MPIDR {:#x} {}",
            ci.index(),
            ci.mpidr(),
            ci.state().name()
        );
    }
    let online = cpu::ncpu_online();
    if online == cpu::ncpu() {
        kprintln!("all {online} CPUs online");
    } else {
        kprintln!("{online} of {} CPUs online", cpu::ncpu());
    }
}

/// The first Rust code of a secondary CPU, called by the trampoline with the MMU on and the
/// CPU's own stack. Never returns.
#[unsafe(no_mangle)]
extern "C" fn kernel_secondary_main(boot: &SecondaryBoot) -> ! {
    let index = boot.cpu_index as usize;
    let ci = cpu_lookup(index).expect("secondary CPU was attached");
    cpu::set_curcpu(ci);
    vectors::install();
    percpu::check_this_cpu(index);
    let board = platform();
    board.irq_init_cpu(index);
    intr::init_cpu();
    clock::start_this_cpu();
    boottime::online(index);
    crate::spl::set_online(ci, true);
    ci.set_state(CpuState::Online);
    arch::send_event();
    sched::start_secondary()
}

pub use crate::arch::aarch64::secondary::secondary_entry_address;

/// Shorthand used by diagnostics: this CPU's index.
pub fn this_cpu() -> usize {
    curcpu().index()
}
