//! virtio over memory-mapped I/O: finding the `virtio,mmio` slots in the device tree, and the
//! [`KernelHal`] through which the `virtio-drivers` crate gets DMA memory and addresses.
//!
//! The crate's rings are plain cacheable memory that the driver and the device both read and
//! write with no cache maintenance between them, so a slot is used only when its node says
//! `dma-coherent` (QEMU virt says so for every virtio-mmio slot): on AArch64 a coherent device
//! snoops the CPU caches, and the buffers need no maintenance either. A slot without it is
//! refused with [`ProbeError::NotCoherent`] rather than driven with stale data.

pub mod blk;

use crate::devtree::{DeviceTree, DtbError, Walk, checked_range};
use crate::platform::PhysRange;
use core::alloc::Layout;
use core::ptr::NonNull;
use virtio_drivers::{BufferDirection, Hal, PAGE_SIZE, PhysAddr};

/// The most virtio-mmio slots read from the tree (QEMU virt has 32).
pub const MAX_SLOTS: usize = 64;

/// One `virtio,mmio` node: its registers and interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioSlot {
    /// The register window.
    pub regs: PhysRange,
    /// The GIC interrupt identifier (an SPI: 32 + the specifier's number).
    pub irq: u32,
    /// Whether the node says `dma-coherent`.
    pub dma_coherent: bool,
}

/// Why the slots could not be read, or a slot cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeError {
    /// The device tree is malformed (the reader's error names the node and the rule).
    Tree(DtbError),
    /// The device tree has no enabled `virtio,mmio` node.
    NoVirtioNodes,
    /// A `virtio,mmio` node has no `reg` or no usable `interrupts` (GIC SPI specifier).
    BadNode {
        /// The register window (start 0 when `reg` is missing).
        regs: PhysRange,
    },
    /// The node does not say `dma-coherent` (see the module documentation).
    NotCoherent(PhysRange),
}

impl core::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Tree(e) => write!(f, "device tree: {e}"),
            Self::NoVirtioNodes => write!(f, "the device tree has no virtio,mmio node"),
            Self::BadNode { regs } => write!(
                f,
                "virtio,mmio node at {:#x}: no reg, or interrupts is not a GIC SPI specifier",
                regs.start
            ),
            Self::NotCoherent(r) => write!(
                f,
                "virtio,mmio node at {:#x} is not dma-coherent; this driver needs coherent DMA",
                r.start
            ),
        }
    }
}

/// Every enabled `virtio,mmio` node of the tree `dtb`, in tree order, up to [`MAX_SLOTS`].
/// Context: any (pure reading).
pub fn mmio_slots(dtb: &[u8]) -> Result<alloc::vec::Vec<MmioSlot>, ProbeError> {
    let tree = DeviceTree::new(dtb).map_err(ProbeError::Tree)?;
    let mut slots = alloc::vec::Vec::new();
    let mut bad = None;
    tree.walk(|node| {
        if node.prop_str("status") == Some("disabled")
            || !node.prop_strings("compatible").any(|c| c == "virtio,mmio")
        {
            return Ok(Walk::Continue);
        }
        let regs = match node.reg()?.and_then(|mut r| r.next()) {
            Some((start, size)) => checked_range(node.path(), start, size)?,
            None => {
                bad.get_or_insert(ProbeError::BadNode {
                    regs: PhysRange::default(),
                });
                return Ok(Walk::Continue);
            }
        };
        let cells: alloc::vec::Vec<u32> = node
            .property("interrupts")
            .unwrap_or(&[])
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        // GIC specifier: (0 = SPI, number, flags).
        match cells.as_slice() {
            [0, n, ..] if *n < 988 => {
                if slots.len() < MAX_SLOTS {
                    slots.push(MmioSlot {
                        regs,
                        irq: 32 + n,
                        dma_coherent: node.property("dma-coherent").is_some(),
                    });
                }
            }
            _ => {
                bad.get_or_insert(ProbeError::BadNode { regs });
            }
        }
        Ok(Walk::Continue)
    })
    .map_err(ProbeError::Tree)?;
    if slots.is_empty() {
        return Err(bad.unwrap_or(ProbeError::NoVirtioNodes));
    }
    Ok(slots)
}

/// The `virtio_drivers::Hal` of this kernel.
///
/// - DMA memory comes from the kernel heap (page-aligned, zeroed); the heap is identity-mapped
///   RAM, so its virtual address is its physical address.
/// - Device registers are identity-mapped too (the board lists the virtio-mmio window among
///   its device ranges, mapped Device-nGnRE).
/// - `share`/`unshare` only translate: the devices used are DMA-coherent (module doc), so no
///   cache maintenance is due. Buffers may also live on a thread stack: thread stacks are in
///   identity-mapped RAM as well.
pub struct KernelHal;

fn dma_layout(pages: usize) -> Layout {
    Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).expect("virtio dma layout")
}

// SAFETY: `dma_alloc` returns zeroed, page-aligned memory of the requested size that nothing
// else uses until `dma_dealloc`; every address handed out is identity-mapped, so the physical
// addresses given to the device are those of the very bytes the driver reads and writes, and
// the devices are DMA-coherent (checked at attach), so no cache maintenance is needed.
unsafe impl Hal for KernelHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        // SAFETY: the layout has a non-zero size (the crate never asks for 0 pages).
        let p = unsafe { alloc::alloc::alloc_zeroed(dma_layout(pages)) };
        let Some(p) = NonNull::new(p) else {
            alloc::alloc::handle_alloc_error(dma_layout(pages))
        };
        (p.as_ptr() as PhysAddr, p)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        // SAFETY: the crate passes back what `dma_alloc` returned for the same page count.
        unsafe { alloc::alloc::dealloc(vaddr.as_ptr(), dma_layout(pages)) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).expect("virtio: MMIO at physical address 0")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.cast::<u8>().as_ptr() as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}
