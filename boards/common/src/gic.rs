//! The GIC glue: one type over `arm-gic`'s GICv2 and GICv3 drivers, chosen at boot from the
//! device tree, implementing the interrupt half of the kernel's `Platform` trait.
//!
//! - Kernel IPLs map to GIC priorities as `0x80 + (7 - ipl) * 0x10` (IPL_HIGH 7 -> 0x80, the
//!   most urgent priority the kernel uses; lower numbers are more urgent). The priority mask
//!   starts fully open (0xff). `priority.rs` shows the values stay distinct and ordered in the
//!   non-secure view of a GIC with five priority bits, the Pi 4's GIC-400.
//! - GICv3: interrupts are non-secure group 1, acknowledged through ICC_IAR1_EL1. Each kernel
//!   CPU is matched to its redistributor by MPIDR (GICR_TYPER), not by position.
//! - GICv2 comes in two views, and one set of register writes serves both (as Linux's
//!   `irq-gic.c` does): bit 0 of GICD_CTLR and of GICC_CTLR enables "the kernel's group".
//!   - Without the Security Extensions (QEMU's virt and, by default, raspi4b) the kernel owns
//!     the whole GIC: every interrupt is put in group 0 (its reset value) and signalled as
//!     an IRQ.
//!   - With them (GICD_TYPER.SecurityExtn), the kernel sees the non-secure view: the Pi 4's
//!     GIC-400 implements the Security Extensions and five priority bits (GIC-400 TRM), its
//!     secure firmware (the armstub, `armstub8.S` `setup_gic`) puts every interrupt in group
//!     1 and enables both groups, and the kernel, entered at non-secure EL2, can neither
//!     read nor change the groups (GICD_IGROUPRn is RAZ/WI) and sees bit 0 of both CTLRs as
//!     EnableGrp1. `arm-gic`'s `GicV2::setup` assumes the secure view there: it writes the
//!     groups and sets bit 1 of GICD_CTLR, which in the non-secure view clears EnableGrp1: on
//!     the Pi no interrupt would ever arrive. The registers are written here instead.
//!     Priorities written in this view land in the upper half of the range, `0x80 | (p >> 1)`,
//!     so only four bits of the kernel's value count (`priority.rs`); the priority mask
//!     likewise.
//!   - In both views GICC_IAR acknowledges the kernel's group (`InterruptGroup::Group0` in
//!     `arm-gic`'s terms). The IAR of an SGI carries the source CPU in bits 12:10: the kernel
//!     dispatches on bits 9:0 and EOIs with the raw value. The banked registers of SGIs and
//!     PPIs act on the calling CPU only, so per-CPU setup runs on the CPU itself (the kernel's
//!     boot path does this). CPU interface n is assumed to be the CPU with MPIDR Aff0 = n (true
//!     on QEMU virt and on the Pi 4).
//!     `arm-gic`'s GICv2 driver writes a whole priority word when setting one interrupt's
//!     priority (zeroing its three neighbours), so priorities are set here with a
//!     read-modify-write of the crate's own `ipriorityr` register definition instead, under a
//!     lock for the shared (SPI) words.
//!     `GicV2` holds nothing but two register pointers and is not `Send`, so a fresh instance is
//!     made per call instead of sharing one behind a lock.

use crate::priority::ipl_to_priority;
use arm_gic::gicv2::registers::{Gicc as GiccV2, Gicd as GicdV2, GicdCtlr};
use arm_gic::gicv2::{GicV2, SgiTarget as SgiTargetV2, SgiTargetListFilter};
use arm_gic::gicv3::{GicCpuInterface, GicV3, SgiTarget, SgiTargetGroup};
use arm_gic::{IntId, InterruptGroup};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use kernel::cpu::{MAXCPUS, cpu_lookup};
pub use kernel::platform::{IpiTarget, IrqAck};
use kernel::sync::SpinLock;
use safe_mmio::{UniqueMmioPointer, field};

/// Which GIC and where its registers are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicConfig {
    /// GICv2: distributor and CPU interface bases.
    V2 {
        /// GICD base.
        gicd: usize,
        /// GICC base.
        gicc: usize,
    },
    /// GICv3: distributor and first redistributor bases, and the redistributor region's size.
    /// There is one redistributor per CPU node of the device tree, attached or not;
    /// [`Gic::init`] takes that count from the kernel's parse of the tree
    /// (`kernel::bootinfo::system_info`), so the board need not parse it again, and caps it by
    /// what the region holds and by the hardware's last redistributor
    /// ([`crate::irq::redistributors_present`]).
    V3 {
        /// GICD base.
        gicd: usize,
        /// GICR base.
        gicr: usize,
        /// Bytes of the redistributor region (the device tree's second `reg`).
        gicr_size: usize,
    },
}

/// Bit 0 of GICv2's GICD_CTLR and GICC_CTLR: enables the kernel's group in either view
/// (module documentation).
const GICV2_CTLR_ENABLE: u32 = 1;

/// GICC_CTLR's FIQ/IRQ bypass-disable bits (5-8; the non-secure view has 5 and 6).
const GICV2_GICC_CTLR_BYPASS_DISABLE: u32 = 0x1e0;

/// The interrupt controller of a board.
pub struct Gic {
    config: GicConfig,
    /// Serialises read-modify-writes of shared GICv2 distributor registers.
    v2_lock: SpinLock<()>,
    v3: SpinLock<Option<GicV3<'static>>>,
    /// Kernel CPU index -> GICv3 redistributor index.
    redistributor: [AtomicUsize; MAXCPUS],
}

impl Gic {
    /// A GIC described by `config`. Nothing is touched until [`Gic::init`].
    ///
    /// # Safety
    ///
    /// The addresses in `config` must be the GIC's registers, mapped as device memory before
    /// any method is called, and used by nothing else.
    pub const unsafe fn new(config: GicConfig) -> Self {
        Self {
            config,
            v2_lock: SpinLock::new(()),
            v3: SpinLock::new(None),
            redistributor: [const { AtomicUsize::new(0) }; MAXCPUS],
        }
    }

    /// The configuration.
    pub fn config(&self) -> GicConfig {
        self.config
    }

    fn v2(&self) -> Option<GicV2<'static>> {
        match self.config {
            GicConfig::V2 { gicd, gicc } => {
                // SAFETY: `new`'s caller promised these are the GICv2 registers; see the
                // module documentation for why a fresh instance per call is sound.
                let gic = unsafe { GicV2::new(gicd as *mut _, gicc as *mut _) };
                Some(gic)
            }
            GicConfig::V3 { .. } => None,
        }
    }

    /// Boot CPU, before secondaries start: resets and configures the distributor (and on
    /// GICv3 every redistributor), and maps the attached CPUs to redistributors.
    pub fn init(&self) {
        match self.config {
            GicConfig::V2 { gicd, .. } => Self::v2_init_distributor(gicd),
            GicConfig::V3 {
                gicd,
                gicr,
                gicr_size,
            } => {
                let redistributors = kernel::bootinfo::system_info().cpu_nodes();
                /// GICR_PIDR2 in the first redistributor's RD_base frame.
                const GICR_PIDR2: usize = 0xffe8;
                /// GICR_TYPER and its Last bit (the last redistributor of the region).
                const GICR_TYPER: usize = 0x8;
                const TYPER_LAST: u64 = 1 << 4;
                // SAFETY: `new`'s caller promised `gicr` is the first redistributor frame,
                // mapped as device memory; GICR_PIDR2 is a read-only identification register.
                let pidr2 = unsafe { core::ptr::read_volatile((gicr + GICR_PIDR2) as *const u32) };
                let arch_rev = (pidr2 >> 4) & 0xf;
                let stride = crate::irq::redistributor_stride(arch_rev);
                let limit = crate::irq::redistributor_limit(redistributors, gicr_size, arch_rev);
                let redistributors = crate::irq::redistributors_present(limit, |n| {
                    // SAFETY: frame n lies inside the mapped region (n < limit) and is read only
                    // if frame n - 1 was not the last one, so a redistributor answers there;
                    // GICR_TYPER is read-only.
                    let typer = unsafe {
                        core::ptr::read_volatile((gicr + n * stride + GICR_TYPER) as *const u64)
                    };
                    typer & TYPER_LAST != 0
                });
                // SAFETY: `new`'s caller promised these are the GICv3 registers, mapped and
                // not used by anything else; the driver is created once and kept. The count
                // of redistributors stays inside the mapped region (capped above).
                let mut gic = unsafe {
                    GicV3::new(
                        UniqueMmioPointer::new(NonNull::new(gicd as *mut _).expect("GICD")),
                        NonNull::new(gicr as *mut _).expect("GICR"),
                        redistributors,
                    )
                }
                .expect("GICv3 redistributor frames");
                for cpu in 0..MAXCPUS {
                    let Some(ci) = cpu_lookup(cpu) else { break };
                    let index = (0..redistributors)
                        .find(|&r| {
                            gic.gicr_typer(r).map(|t| t.core_mpidr()).ok() == Some(ci.mpidr())
                        })
                        .unwrap_or(cpu);
                    self.redistributor[cpu].store(index, Ordering::Relaxed);
                }
                gic.setup(self.redistributor[0].load(Ordering::Relaxed));
                *self.v3.lock() = Some(gic);
            }
        }
    }

    /// Per-CPU setup, on the CPU `cpu` itself: wakes its redistributor / CPU interface,
    /// enables group signalling and opens the priority mask.
    pub fn init_cpu(&self, cpu: usize) {
        match self.config {
            GicConfig::V2 { gicd, gicc } => Self::v2_init_cpu_interface(gicd, gicc),
            GicConfig::V3 { .. } => {
                if cpu != 0
                    && let Some(gic) = self.v3.lock().as_mut()
                {
                    gic.init_cpu(self.redistributor[cpu].load(Ordering::Relaxed));
                }
                GicCpuInterface::enable_group1(true);
                GicCpuInterface::set_priority_mask(0xff);
            }
        }
    }

    /// The GICv2 distributor's registers.
    fn v2_distributor(gicd: usize) -> UniqueMmioPointer<'static, GicdV2> {
        // SAFETY: `new`'s caller promised `gicd` is the GICv2 distributor, mapped as device
        // memory. A fresh pointer per call aliases the registers as the fresh `GicV2` instances
        // do (module documentation): every access is one volatile register access, and the
        // read-modify-writes of shared registers hold `v2_lock`.
        unsafe { UniqueMmioPointer::new(NonNull::new(gicd as *mut GicdV2).expect("GICD")) }
    }

    /// Puts every interrupt of a GICv2 without the Security Extensions in group 0 (banked
    /// GICD_IGROUPR0 for the calling CPU when `all` is false). With them, the non-secure view
    /// cannot change groups (RAZ/WI) and the firmware has chosen group 1: nothing is written.
    fn v2_groups(regs: &mut UniqueMmioPointer<'static, GicdV2>, all: bool) {
        let typer = field!(*regs, typer).read();
        if typer.has_security_extension() {
            return;
        }
        let words = if all { typer.num_irqs() / 32 } else { 1 };
        let mut igroupr = field!(*regs, igroupr);
        for i in 0..words as usize {
            if let Some(mut word) = igroupr.get(i) {
                word.write(0);
            }
        }
    }

    /// GICv2, boot CPU: the interrupts in the kernel's group (see [`Gic::v2_groups`]), then the
    /// distributor enabled for it: GICD_CTLR bit 0 is EnableGrp0 without the Security
    /// Extensions and the non-secure alias of EnableGrp1 with them.
    fn v2_init_distributor(gicd: usize) {
        let mut regs = Self::v2_distributor(gicd);
        Self::v2_groups(&mut regs, true);
        field!(regs, ctlr).write(GicdCtlr::from_bits_retain(GICV2_CTLR_ENABLE));
    }

    /// GICv2, on each CPU: its banked group register, then its CPU interface enabled for the
    /// kernel's group (GICC_CTLR bit 0, read as GICD_CTLR's) with the bypass-disable bits the
    /// firmware set kept (as Linux does), and the priority mask fully open.
    fn v2_init_cpu_interface(gicd: usize, gicc: usize) {
        Self::v2_groups(&mut Self::v2_distributor(gicd), false);
        // SAFETY: `new`'s caller promised `gicc` is the GICv2 CPU interface, mapped as device
        // memory; its registers are banked, so this CPU touches only its own.
        let mut cpu =
            unsafe { UniqueMmioPointer::new(NonNull::new(gicc as *mut GiccV2).expect("GICC")) };
        let bypass = field!(cpu, ctlr).read() & GICV2_GICC_CTLR_BYPASS_DISABLE;
        field!(cpu, ctlr).write(bypass | GICV2_CTLR_ENABLE);
        field!(cpu, pmr).write(0xff);
    }

    /// Enables `irq` at kernel IPL `ipl`; private interrupts on CPU `cpu` (which, on GICv2,
    /// must be the calling CPU).
    pub fn enable(&self, irq: u32, cpu: Option<usize>, ipl: u8) {
        let Ok(intid) = IntId::try_from(irq) else {
            return;
        };
        let priority = ipl_to_priority(ipl);
        match self.config {
            GicConfig::V2 { gicd, .. } => {
                self.v2_set_priority(gicd, irq, priority);
                if irq >= 32 {
                    self.v2_target_this_cpu(gicd, irq);
                }
                if let Some(mut gic) = self.v2() {
                    // SGIs may be permanently enabled (enable bits read-only): not an error.
                    let _ = gic.enable_interrupt(intid, true);
                }
            }
            GicConfig::V3 { .. } => {
                let redist = cpu.map(|c| self.redistributor[c].load(Ordering::Relaxed));
                if let Some(gic) = self.v3.lock().as_mut() {
                    let _ = gic.set_interrupt_priority(intid, redist, priority);
                    let _ = gic.enable_interrupt(intid, redist, true);
                }
            }
        }
    }

    /// Routes GICv2 shared interrupt `irq` to the calling CPU's interface: its GICD_ITARGETSR
    /// byte (reset value 0, "no CPU", on the GIC-400 and QEMU's models, so an SPI is never
    /// delivered until it is set) gets the calling CPU's bit, which the banked first byte of
    /// GICD_ITARGETSR0 reads back (GICv2 architecture, 4.3.12). The registers are
    /// byte-accessible, so no read-modify-write of a neighbour's byte is needed.
    fn v2_target_this_cpu(&self, gicd: usize, irq: u32) {
        const ITARGETSR: usize = 0x800;
        let base = (gicd + ITARGETSR) as *mut u8;
        // SAFETY: `new`'s caller promised `gicd` is the GICv2 distributor, mapped as device
        // memory; GICD_ITARGETSR is byte-accessible, byte 0 is this CPU's banked (read-only)
        // mask and byte `irq` (an SPI, below the 1020 the register file covers) is the one
        // routing this interrupt, which only its establisher writes.
        unsafe {
            let me = base.read_volatile();
            base.add(irq as usize).write_volatile(me);
        }
    }

    /// Sets one GICv2 priority byte with a read-modify-write of its 32-bit register (the
    /// registers of interrupts 0-31 are banked per CPU: this CPU's copy). In the non-secure
    /// view the neighbours' bytes read back as `p << 1` and are written back as
    /// `0x80 | (p >> 1)`, which is the value they had (or, for one still at its reset value 0,
    /// 0x80 until the kernel sets it up): the write changes only `irq`'s byte.
    fn v2_set_priority(&self, gicd: usize, irq: u32, priority: u8) {
        // The lock serialises this read-modify-write against other CPUs.
        let _guard = self.v2_lock.lock();
        let mut regs = Self::v2_distributor(gicd);
        let mut ipriorityr = field!(regs, ipriorityr);
        let Some(mut word) = ipriorityr.get((irq / 4) as usize) else {
            return;
        };
        let shift = (irq % 4) * 8;
        let value = (word.read() & !(0xff << shift)) | (u32::from(priority) << shift);
        word.write(value);
    }

    /// Disables `irq`; private interrupts on CPU `cpu` (on GICv2, the calling CPU).
    pub fn disable(&self, irq: u32, cpu: Option<usize>) {
        let Ok(intid) = IntId::try_from(irq) else {
            return;
        };
        match self.config {
            GicConfig::V2 { .. } => {
                if let Some(mut gic) = self.v2() {
                    let _ = gic.enable_interrupt(intid, false);
                }
            }
            GicConfig::V3 { .. } => {
                let redist = cpu.map(|c| self.redistributor[c].load(Ordering::Relaxed));
                if let Some(gic) = self.v3.lock().as_mut() {
                    let _ = gic.enable_interrupt(intid, redist, false);
                }
            }
        }
    }

    /// Clears the pending state of private interrupt `irq` (an SGI or PPI) on this CPU, CPU
    /// `cpu`, so that one sent while it was disabled is not delivered to the next handler
    /// established on it. The arm-gic crate has no call for it; the registers are written
    /// directly: GICv3 GICR_ICPENDR0 in the CPU's SGI frame, GICv2 GICD_CPENDSGIR (one byte per
    /// SGI, a bit per source CPU) or GICD_ICPENDR0 for a PPI, both banked per CPU.
    pub fn clear_pending_private(&self, irq: u32, cpu: usize) {
        if irq >= 32 {
            return;
        }
        match self.config {
            GicConfig::V2 { gicd, .. } => {
                let (offset, value) = if irq < 16 {
                    (0xf10 + (irq as usize & !3), 0xffu32 << ((irq % 4) * 8))
                } else {
                    (0x280, 1u32 << irq)
                };
                // SAFETY: `new`'s caller promised `gicd` is the GICv2 distributor, mapped as
                // device memory; GICD_CPENDSGIRn and GICD_ICPENDR0 are write-1-to-clear
                // registers banked for the calling CPU, so the write touches only this CPU's
                // pending bits of this interrupt.
                unsafe { core::ptr::write_volatile((gicd + offset) as *mut u32, value) };
            }
            GicConfig::V3 { gicr, .. } => {
                /// Bytes per redistributor (RD frame + SGI frame, GICv3 without VLPIs).
                const GICR_STRIDE: usize = 0x2_0000;
                /// GICR_ICPENDR0 in the SGI frame.
                const ICPENDR0: usize = 0x1_0000 + 0x280;
                let index = self.redistributor[cpu].load(Ordering::Relaxed);
                // SAFETY: `new`'s caller promised `gicr` is the first of the redistributor
                // frames, mapped as device memory, and `index` is this CPU's (matched by MPIDR
                // in `init`); GICR_ICPENDR0 is write-1-to-clear for this interrupt only.
                unsafe {
                    core::ptr::write_volatile(
                        (gicr + index * GICR_STRIDE + ICPENDR0) as *mut u32,
                        1u32 << irq,
                    )
                };
            }
        }
    }

    /// Acknowledges the highest-priority pending interrupt on this CPU.
    #[inline]
    pub fn ack(&self) -> Option<IrqAck> {
        match self.config {
            GicConfig::V2 { .. } => {
                // GICC_IAR: the kernel's group in either view (module documentation).
                let raw = u32::from(
                    self.v2()?
                        .get_and_acknowledge_interrupt(InterruptGroup::Group0)?,
                );
                // The acknowledge before anything the handler reads (an IPI's message).
                kernel::arch::aarch64::dmb_ish();
                let irq = raw & 0x3ff;
                (irq < 1020).then_some(IrqAck { irq, raw })
            }
            GicConfig::V3 { .. } => {
                let id = GicCpuInterface::get_and_acknowledge_interrupt(InterruptGroup::Group1)?;
                // A system-register read: only a DSB orders it before the handler's loads.
                kernel::arch::aarch64::dsb_sy();
                let raw = u32::from(id);
                (raw < 1020).then_some(IrqAck { irq: raw, raw })
            }
        }
    }

    /// Ends an interrupt acknowledged with [`Gic::ack`] on this CPU.
    #[inline]
    pub fn eoi(&self, ack: IrqAck) {
        match self.config {
            GicConfig::V2 { .. } => self.eoi_v2(ack),
            GicConfig::V3 { .. } => kernel::arch::aarch64::write_icc_eoir1(ack.raw),
        }
    }

    /// GICv2's half of [`Gic::eoi`], out of line so that GICv3's stays a leaf.
    #[inline(never)]
    fn eoi_v2(&self, ack: IrqAck) {
        // SAFETY: `IntId` is `#[repr(transparent)]` over `u32`; the value is what the
        // controller returned from GICC_IAR (with the source CPU bits an SGI needs written
        // back), which `IntId::try_from` would reject.
        let id: IntId = unsafe { core::mem::transmute::<u32, IntId>(ack.raw) };
        if let Some(mut gic) = self.v2() {
            gic.end_interrupt(id, InterruptGroup::Group0);
        }
    }

    /// Sends SGI `sgi` to `target`.
    pub fn send_sgi(&self, target: IpiTarget, sgi: u32) {
        assert!(sgi < 16, "send_sgi: SGI {sgi} does not exist (0-15)");
        match self.config {
            GicConfig::V2 { .. } => {
                let intid = IntId::sgi(sgi);
                let target = match target {
                    IpiTarget::AllButSelf => SgiTargetV2::List {
                        target_list_filter: SgiTargetListFilter::ForwardOthersOnly,
                        target_list: 0,
                    },
                    IpiTarget::Cpu(cpu) => {
                        let Some(ci) = cpu_lookup(cpu) else { return };
                        SgiTargetV2::List {
                            target_list_filter: SgiTargetListFilter::CPUTargetList,
                            target_list: 1 << (ci.mpidr() & 0x7),
                        }
                    }
                };
                if let Some(mut gic) = self.v2() {
                    // The sender's stores (the message) before the SGI register write.
                    kernel::arch::aarch64::dmb_ishst();
                    gic.send_sgi(intid, target);
                }
            }
            GicConfig::V3 { .. } => {
                let target = match target {
                    IpiTarget::AllButSelf => SgiTarget::All,
                    IpiTarget::Cpu(cpu) => {
                        let Some(target) = sgi1r_target(cpu) else {
                            return;
                        };
                        kernel::arch::aarch64::dsb_ishst();
                        kernel::arch::aarch64::write_icc_sgi1r(target | u64::from(sgi & 0xf) << 24);
                        return;
                    }
                };
                // A system-register write is not ordered by DMB: complete the stores first.
                kernel::arch::aarch64::dsb_ishst();
                let _ = GicCpuInterface::send_sgi(
                    IntId::sgi(sgi),
                    target,
                    SgiTargetGroup::CurrentGroup1,
                );
            }
        }
    }
}

/// Per CPU, the ICC_SGI1R_EL1 value that targets it (without the INTID), 0 until first used.
/// Computed once from the CPU's MPIDR, which never changes, so an IPI to one CPU is a load and
/// a register write.
static SGI1R_TARGET: [AtomicU64; MAXCPUS] = [const { AtomicU64::new(0) }; MAXCPUS];

/// The ICC_SGI1R_EL1 target bits of CPU `cpu` (see `write_icc_sgi1r`): Aff3 55:48, Aff2
/// 39:32, Aff1 23:16, range selector 47:44 (Aff0 / 16) and target list bit Aff0 % 16 (never
/// 0, so 0 means not computed yet). `None` if there is no such CPU.
#[inline(always)]
fn sgi1r_target(cpu: usize) -> Option<u64> {
    let cached = SGI1R_TARGET.get(cpu)?.load(Ordering::Relaxed);
    if cached != 0 {
        return Some(cached);
    }
    let m = cpu_lookup(cpu)?.mpidr();
    let aff0 = m & 0xff;
    let value = ((m >> 32) & 0xff) << 48
        | ((m >> 16) & 0xff) << 32
        | (aff0 >> 4) << 44
        | ((m >> 8) & 0xff) << 16
        | 1 << (aff0 & 0xf);
    SGI1R_TARGET[cpu].store(value, Ordering::Relaxed);
    Some(value)
}

/// Expands, inside `impl kernel::platform::Platform for Board`, to the interrupt-controller
/// methods of the trait, forwarded to the [`Gic`] in field `$gic`: the part of the platform
/// every GIC board shares (`board_common::gic_platform_methods!(gic);`).
#[macro_export]
macro_rules! gic_platform_methods {
    ($gic:ident) => {
        fn irq_init(&self) {
            self.$gic.init();
        }

        fn irq_init_cpu(&self, cpu: usize) {
            self.$gic.init_cpu(cpu);
        }

        fn irq_enable(&self, irq: u32, cpu: Option<usize>, ipl: u8) {
            self.$gic.enable(irq, cpu, ipl);
        }

        fn irq_disable(&self, irq: u32, cpu: Option<usize>) {
            self.$gic.disable(irq, cpu);
        }

        fn irq_clear_pending(&self, irq: u32, cpu: usize) {
            self.$gic.clear_pending_private(irq, cpu);
        }

        fn irq_ack(&self) -> Option<$crate::gic::IrqAck> {
            self.$gic.ack()
        }

        fn irq_eoi(&self, ack: $crate::gic::IrqAck) {
            self.$gic.eoi(ack);
        }

        fn send_ipi(&self, target: $crate::gic::IpiTarget, sgi: u32) {
            self.$gic.send_sgi(target, sgi);
        }
    };
}
