//! Device drivers. They sit on top of the primitives (intr, softint, workqueue, condvars,
//! kthreads) and find their devices in the device tree the kernel booted with; nothing below
//! them depends on them. Today: the virtio-blk driver on virtio-mmio (`virtio::blk`).

pub mod virtio;
