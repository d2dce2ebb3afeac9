//! Reading what the kernel needs from a flattened device tree (DTB): RAM, the CPUs and how
//! to start them, reserved memory and the boot arguments. Boards look up their own devices
//! (interrupt controller, UART, PSCI) with the helpers at the end.
//!
//! A device tree comes from outside (firmware, QEMU, a user's file), so nothing here trusts
//! it: the header is checked before the tree is parsed, every value is bounds-checked, and
//! problems come back as a [`DtbError`] naming what is wrong, never as a panic. The tree is
//! walked node by node (`all_nodes`) instead of by path, because QEMU's raspi4b tree contains
//! NOP tokens that path lookups in `flat_device_tree` trip over. The node walk stops at a NOP
//! that follows a property, too (QEMU's raspi4b and the Pi firmware leave such NOPs where they
//! deleted properties); a board whose firmware edits the tree first compacts it in place with
//! [`remove_nops`].

use crate::cpu::MAXCPUS;
use crate::platform::PhysRange;
use core::fmt;
use flat_device_tree::Fdt;
use flat_device_tree::node::FdtNode;

/// The FDT header magic.
pub const FDT_MAGIC: u32 = 0xd00d_feed;
/// The largest device tree accepted (QEMU's are < 64 KiB; the Pi's < 64 KiB).
pub const MAX_DTB_SIZE: usize = 2 << 20;
/// Memory regions kept (more are reported as ignored).
pub const MAX_MEMORY_REGIONS: usize = 8;
/// Reserved ranges kept (the DTB itself plus `/memreserve/` entries).
pub const MAX_RESERVED: usize = 8;
/// Longest boot-argument string kept.
pub const MAX_BOOTARGS: usize = 256;

/// What is wrong with a device tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtbError {
    /// No device tree at the given address (wrong magic).
    BadMagic(u32),
    /// The header's sizes or offsets are inconsistent.
    BadHeader(&'static str),
    /// The buffer is shorter than the header's total size.
    Truncated {
        /// Size the header claims.
        claimed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The structure could not be parsed.
    Malformed(&'static str),
    /// No usable `memory` node.
    NoMemory,
    /// No `cpu` node under `/cpus`.
    NoCpus,
}

impl fmt::Display for DtbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic(m) => write!(f, "no device tree: magic {m:#010x}, expected 0xd00dfeed"),
            Self::BadHeader(what) => write!(f, "device tree header is invalid: {what}"),
            Self::Truncated { claimed, available } => write!(
                f,
                "device tree is truncated: header says {claimed} bytes, only {available} present"
            ),
            Self::Malformed(what) => write!(f, "device tree is malformed: {what}"),
            Self::NoMemory => write!(f, "device tree has no usable memory node"),
            Self::NoCpus => write!(f, "device tree has no cpu nodes under /cpus"),
        }
    }
}

fn be32(bytes: &[u8], offset: usize) -> Option<u32> {
    let b = bytes.get(offset..offset + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Checks the 40-byte header at the start of `header` and returns the tree's total size.
/// Use it on a raw pointer's first 40 bytes before building a slice of the whole tree.
pub fn total_size(header: &[u8]) -> Result<usize, DtbError> {
    let magic = be32(header, 0).ok_or(DtbError::BadHeader("shorter than 40 bytes"))?;
    if magic != FDT_MAGIC {
        return Err(DtbError::BadMagic(magic));
    }
    let field = |i: usize| be32(header, i * 4).ok_or(DtbError::BadHeader("shorter than 40 bytes"));
    let total = field(1)? as usize;
    let off_struct = field(2)? as usize;
    let off_strings = field(3)? as usize;
    let off_rsvmap = field(4)? as usize;
    let version = field(5)?;
    let size_strings = field(8)? as usize;
    let size_struct = field(9)? as usize;
    if !(40..=MAX_DTB_SIZE).contains(&total) {
        return Err(DtbError::BadHeader("total size out of range"));
    }
    if version < 16 {
        return Err(DtbError::BadHeader("version older than 16"));
    }
    if off_struct.saturating_add(size_struct) > total
        || off_strings.saturating_add(size_strings) > total
        || off_rsvmap >= total
        || off_struct < 40
    {
        return Err(DtbError::BadHeader("a block lies outside the tree"));
    }
    Ok(total)
}

const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

/// Removes every NOP token from the structure block of the tree in `data`, in place: later
/// tokens move down, FDT_END follows the last one and the header's structure size shrinks
/// (the total size and the other blocks stay where they are). Returns how many NOPs went.
///
/// The header is checked as by [`total_size`] and every token is bounds-checked; on an error
/// `data` may be partly compacted, but the tree is then unusable anyway.
pub fn remove_nops(data: &mut [u8]) -> Result<usize, DtbError> {
    let total = total_size(data)?;
    if data.len() < total {
        return Err(DtbError::Truncated {
            claimed: total,
            available: data.len(),
        });
    }
    let malformed = DtbError::Malformed("structure block overruns its size");
    let off_struct = be32(data, 8).ok_or(malformed)? as usize;
    let size_struct = be32(data, 36).ok_or(malformed)? as usize;
    let end = off_struct + size_struct;
    let (mut read, mut write, mut removed) = (off_struct, off_struct, 0);
    loop {
        let token = be32(&data[..end], read).ok_or(malformed)?;
        let len = match token {
            FDT_BEGIN_NODE => {
                let name = data.get(read + 4..end).ok_or(malformed)?;
                let nul = name.iter().position(|&b| b == 0).ok_or(malformed)?;
                4 + (nul + 1).next_multiple_of(4)
            }
            FDT_PROP => {
                let value_len = be32(&data[..end], read + 4).ok_or(malformed)? as usize;
                12 + value_len.next_multiple_of(4)
            }
            FDT_END_NODE | FDT_END => 4,
            FDT_NOP => {
                read += 4;
                removed += 1;
                continue;
            }
            _ => return Err(DtbError::Malformed("unknown structure token")),
        };
        if read + len > end {
            return Err(malformed);
        }
        data.copy_within(read..read + len, write);
        read += len;
        write += len;
        if token == FDT_END {
            break;
        }
    }
    let new_size = (write - off_struct) as u32;
    data[36..40].copy_from_slice(&new_size.to_be_bytes());
    Ok(removed)
}

/// How a CPU is started, from its `enable-method` property.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnableMethod {
    /// `psci`: PSCI CPU_ON.
    Psci,
    /// `spin-table`: write the entry to `cpu-release-addr` and `sev`.
    SpinTable,
    /// Absent or unknown (the boot CPU often has none).
    Unknown,
}

/// One CPU from the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuNode {
    /// MPIDR affinity (`reg`).
    pub mpidr: u64,
    /// How to start it.
    pub enable_method: EnableMethod,
    /// `cpu-release-addr`, when present.
    pub release_addr: Option<u64>,
}

/// What the kernel needs from the device tree.
#[derive(Clone, Debug)]
pub struct SystemInfo {
    memory: [PhysRange; MAX_MEMORY_REGIONS],
    memory_count: usize,
    /// Memory regions beyond [`MAX_MEMORY_REGIONS`] that were ignored.
    pub memory_ignored: usize,
    reserved: [PhysRange; MAX_RESERVED],
    reserved_count: usize,
    cpus: [CpuNode; MAXCPUS],
    cpu_count: usize,
    /// CPUs found in the tree beyond [`MAXCPUS`], which stay offline.
    pub cpus_ignored: usize,
    /// Whether the boot CPU's MPIDR was missing from the tree (it is CPU 0 regardless).
    pub boot_cpu_missing: bool,
    bootargs: [u8; MAX_BOOTARGS],
    bootargs_len: usize,
}

impl SystemInfo {
    /// RAM regions, in tree order.
    pub fn memory(&self) -> &[PhysRange] {
        &self.memory[..self.memory_count]
    }

    /// Ranges the kernel must not allocate from (the tree itself, `/memreserve/` entries).
    pub fn reserved(&self) -> &[PhysRange] {
        &self.reserved[..self.reserved_count]
    }

    /// The CPUs, boot CPU first, at most [`MAXCPUS`].
    pub fn cpus(&self) -> &[CpuNode] {
        &self.cpus[..self.cpu_count]
    }

    /// `/chosen/bootargs`, or "" (truncated to [`MAX_BOOTARGS`] bytes).
    pub fn bootargs(&self) -> &str {
        core::str::from_utf8(&self.bootargs[..self.bootargs_len]).unwrap_or("")
    }

    /// Total RAM in bytes.
    pub fn memory_size(&self) -> u64 {
        self.memory().iter().map(|r| r.size).sum()
    }
}

fn parse_fdt(data: &[u8]) -> Result<Fdt<'_>, DtbError> {
    let total = total_size(data)?;
    if data.len() < total {
        return Err(DtbError::Truncated {
            claimed: total,
            available: data.len(),
        });
    }
    Fdt::new(&data[..total]).map_err(|_| DtbError::Malformed("flat_device_tree rejected it"))
}

fn node_base_name<'a>(node: &FdtNode<'_, 'a>) -> &'a str {
    node.name.split('@').next().unwrap_or("")
}

fn prop_str<'a>(node: &FdtNode<'_, 'a>, name: &str) -> Option<&'a str> {
    node.property(name).and_then(|p| p.as_str())
}

/// Reads a `u32` or `u64` big-endian property value (1 or 2 cells).
fn prop_cells(node: &FdtNode<'_, '_>, name: &str) -> Option<u64> {
    let p = node.property(name)?;
    match p.value.len() {
        4 => be32(p.value, 0).map(u64::from),
        8 => Some((u64::from(be32(p.value, 0)?) << 32) | u64::from(be32(p.value, 4)?)),
        _ => None,
    }
}

/// Parses `data` for the boot CPU whose MPIDR affinity is `boot_mpidr`.
pub fn parse(data: &[u8], boot_mpidr: u64) -> Result<SystemInfo, DtbError> {
    let fdt = parse_fdt(data)?;
    let mut info = SystemInfo {
        memory: [PhysRange::default(); MAX_MEMORY_REGIONS],
        memory_count: 0,
        memory_ignored: 0,
        reserved: [PhysRange::default(); MAX_RESERVED],
        reserved_count: 0,
        cpus: [CpuNode {
            mpidr: 0,
            enable_method: EnableMethod::Unknown,
            release_addr: None,
        }; MAXCPUS],
        cpu_count: 0,
        cpus_ignored: 0,
        boot_cpu_missing: false,
        bootargs: [0; MAX_BOOTARGS],
        bootargs_len: 0,
    };

    // Reserve the tree itself; the caller adjusts the start if it knows the load address.
    info.reserved[0] = PhysRange {
        start: data.as_ptr() as u64,
        size: fdt.total_size() as u64,
    };
    info.reserved_count = 1;
    for r in fdt.memory_reservations() {
        if info.reserved_count < MAX_RESERVED && r.size() > 0 {
            info.reserved[info.reserved_count] = PhysRange {
                start: r.address() as u64,
                size: r.size() as u64,
            };
            info.reserved_count += 1;
        }
    }

    let mut boot_found = false;
    let mut others = [CpuNode {
        mpidr: 0,
        enable_method: EnableMethod::Unknown,
        release_addr: None,
    }; MAXCPUS];
    let mut other_count = 0;
    let mut boot_node = None;

    for node in fdt.all_nodes() {
        let base = node_base_name(&node);
        let device_type = prop_str(&node, "device_type");
        if base == "memory" || device_type == Some("memory") {
            if device_type.is_some_and(|t| t != "memory") {
                continue;
            }
            for reg in node.reg() {
                let size = reg.size.unwrap_or(0) as u64;
                if size == 0 {
                    continue;
                }
                if info.memory_count < MAX_MEMORY_REGIONS {
                    info.memory[info.memory_count] = PhysRange {
                        start: reg.starting_address as u64,
                        size,
                    };
                    info.memory_count += 1;
                } else {
                    info.memory_ignored += 1;
                }
            }
        } else if device_type == Some("cpu") || (base == "cpu" && device_type.is_none()) {
            if prop_str(&node, "status").is_some_and(|s| s != "okay" && s != "ok") {
                continue;
            }
            let Some(reg) = node.reg().next() else {
                return Err(DtbError::Malformed("a cpu node has no reg property"));
            };
            let mpidr = crate::cpu_affinity(reg.starting_address as u64);
            let enable_method = match prop_str(&node, "enable-method") {
                Some("psci") => EnableMethod::Psci,
                Some("spin-table") => EnableMethod::SpinTable,
                _ => EnableMethod::Unknown,
            };
            let cpu = CpuNode {
                mpidr,
                enable_method,
                release_addr: prop_cells(&node, "cpu-release-addr"),
            };
            if mpidr == crate::cpu_affinity(boot_mpidr) && !boot_found {
                boot_found = true;
                boot_node = Some(cpu);
            } else if other_count < MAXCPUS - 1 {
                others[other_count] = cpu;
                other_count += 1;
            } else {
                info.cpus_ignored += 1;
            }
        } else if base == "chosen"
            && let Some(args) = prop_str(&node, "bootargs")
        {
            let n = args.len().min(MAX_BOOTARGS);
            info.bootargs[..n].copy_from_slice(&args.as_bytes()[..n]);
            info.bootargs_len = n;
        }
    }

    if info.memory_count == 0 {
        return Err(DtbError::NoMemory);
    }
    if !boot_found && other_count == 0 {
        return Err(DtbError::NoCpus);
    }
    info.boot_cpu_missing = !boot_found;
    info.cpus[0] = boot_node.unwrap_or(CpuNode {
        mpidr: crate::cpu_affinity(boot_mpidr),
        enable_method: EnableMethod::Unknown,
        release_addr: None,
    });
    // When the boot CPU was missing, one of the others must make room for it.
    let keep = other_count.min(MAXCPUS - 1);
    info.cpus_ignored += other_count - keep;
    info.cpus[1..1 + keep].copy_from_slice(&others[..keep]);
    info.cpu_count = 1 + keep;
    Ok(info)
}

/// A device found by `compatible`: its register ranges and interrupt specifiers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Device {
    /// Up to four `reg` entries.
    pub regs: [PhysRange; 4],
    /// How many of `regs` are valid.
    pub reg_count: usize,
    /// Up to eight raw `interrupts` cells.
    pub interrupts: [u32; 8],
    /// How many of `interrupts` are valid.
    pub interrupt_cells: usize,
}

/// Finds the first node (status not "disabled") whose `compatible` list contains one of
/// `compatible`, returning the matching string and the device's registers and interrupts.
pub fn find_compatible<'a>(
    data: &'a [u8],
    compatible: &[&str],
) -> Result<Option<(&'a str, Device)>, DtbError> {
    let fdt = parse_fdt(data)?;
    for node in fdt.all_nodes() {
        if prop_str(&node, "status").is_some_and(|s| s == "disabled") {
            continue;
        }
        let Some(list) = node.compatible() else {
            continue;
        };
        let Some(hit) = list.all().find(|c| compatible.contains(c)) else {
            continue;
        };
        let mut dev = Device::default();
        for reg in node.reg().take(4) {
            dev.regs[dev.reg_count] = PhysRange {
                start: reg.starting_address as u64,
                size: reg.size.unwrap_or(0) as u64,
            };
            dev.reg_count += 1;
        }
        if let Some(p) = node.property("interrupts") {
            for (i, chunk) in p.value.chunks_exact(4).take(8).enumerate() {
                dev.interrupts[i] = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                dev.interrupt_cells = i + 1;
            }
        }
        return Ok(Some((hit, dev)));
    }
    Ok(None)
}

/// The string property `name` of the first node whose `compatible` contains `compatible`.
pub fn compatible_property<'a>(
    data: &'a [u8],
    compatible: &str,
    name: &str,
) -> Result<Option<&'a str>, DtbError> {
    let fdt = parse_fdt(data)?;
    for node in fdt.all_nodes() {
        if node
            .compatible()
            .is_some_and(|l| l.all().any(|c| c == compatible))
        {
            return Ok(prop_str(&node, name));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
