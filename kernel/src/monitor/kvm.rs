//! `kvm pcpu [CPU]` and `dpcpu [NAME [CPU] [BYTES]]`: per-CPU data read through the kvm
//! reader (`crate::kvm`) over the running kernel's own memory (`kvm::local::LocalSource`), the
//! same code `cargo xtask kvm` runs on a core or a live guest, so its answers can be compared.

use super::units::count;
use super::{CmdResult, Command, parse_cpu};
use crate::kprintln;
use crate::kvm::local::LocalSource;
use crate::kvm::{Kvm, symbols, symtab};
use alloc::string::String;

/// The commands of this group.
pub const COMMANDS: &[Command] = &[
    Command {
        name: "kvm",
        args: "pcpu [CPU]",
        summary: "kvm_getpcpu(3) on this kernel (kvm reader)",
        detail: "Opens the running kernel as a kvm source (its RAM and the embedded symbol \
                 table), checks build id and layout as for a core, and prints what \
                 kvm_getpcpu returns for every CPU, or one.",
        run: kvm,
    },
    Command {
        name: "dpcpu",
        args: "[NAME [CPU] [BYTES]]",
        summary: "a DPCPU variable on a CPU (kvm reader)",
        detail: "NAME is a DPCPU variable (e.g. INTR_COUNT, SOFTINT, XCALL, CLOCK_NEXT); the \
                 reader finds it as dpcpu_entry_NAME in the embedded symbol table and moves \
                 it to the CPU's copy. BYTES defaults to 8 (shown as a little-endian u64 too).",
        run: dpcpu,
    },
];

fn open() -> Result<Kvm<LocalSource>, String> {
    Kvm::open(LocalSource::new()).map_err(|e| alloc::format!("kvm_open: {e}"))
}

fn kvm(args: &[&str]) -> CmdResult {
    let one = match args {
        ["pcpu"] => None,
        ["pcpu", cpu] => Some(parse_cpu(cpu)?),
        _ => return Err("usage: kvm pcpu [CPU]".into()),
    };
    let mut k = open()?;
    let maxcpu = k.getmaxcpu().map_err(|e| e.to_string())?;
    kprintln!("kvm_getmaxcpu: {maxcpu}");
    kprintln!("CPU CPU_INFO     STATE MPIDR  IPL CURLWP         INTR  TICKS   IPIS    CSW");
    let range = match one {
        Some(c) => c..c + 1,
        None => 0..maxcpu as usize,
    };
    for cpu in range {
        match k.getpcpu(cpu).map_err(|e| e.to_string())? {
            None => {}
            Some(s) => kprintln!(
                "{:>3} {:#12x} {:>5} {:<6} {:>3} {:#12x} {:>6} {:>6} {:>6} {:>6}",
                s.index,
                s.self_addr,
                s.state,
                alloc::format!("{:#x}", s.mpidr),
                s.ipl,
                s.curlwp,
                count(s.intr_count),
                count(s.tick_count),
                count(s.ipi_count.iter().sum()),
                count(s.ctxsw_count)
            ),
        }
    }
    Ok(())
}

use alloc::string::ToString;

fn dpcpu(args: &[&str]) -> CmdResult {
    let (name, cpu, len) = match args {
        [] => {
            let entries = symtab::entries(symbols::symtab_bytes())
                .map_err(|e| alloc::format!("embedded symbol table: {e}"))?;
            let mut names: alloc::vec::Vec<&str> = entries
                .filter_map(|(n, _)| n.strip_prefix("dpcpu_entry_"))
                .collect();
            names.sort_unstable();
            kprintln!("DPCPU variables in the embedded symbol table:");
            for n in names {
                kprintln!("  {n}");
            }
            return Ok(());
        }
        [name] => (*name, 0, 8),
        [name, cpu] => (*name, parse_cpu(cpu)?, 8),
        [name, cpu, len] => (
            *name,
            parse_cpu(cpu)?,
            len.parse::<usize>()
                .ok()
                .filter(|&n| (1..=256).contains(&n))
                .ok_or("BYTES must be 1-256")?,
        ),
        _ => return Err("usage: dpcpu [NAME [CPU] [BYTES]]".into()),
    };
    let mut k = open()?;
    let (addr, bytes) = k
        .read_dpcpu(name, cpu as u32, len)
        .map_err(|e| e.to_string())?;
    kprintln!("{name} on cpu{cpu} at {addr:#x}, {len} bytes:");
    for (i, chunk) in bytes.chunks(16).enumerate() {
        let mut hex = String::new();
        for b in chunk {
            hex.push_str(&alloc::format!(" {b:02x}"));
        }
        kprintln!("  +{:#05x}:{hex}", i * 16);
    }
    if len == 8 {
        let v = crate::le::u64_at(&bytes, 0);
        kprintln!("  as u64: {v}");
    }
    Ok(())
}
