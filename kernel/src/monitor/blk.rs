//! `blk read SECTOR` and `blk stat`: the virtio-blk disk the boot attached
//! (`drivers::virtio::blk::autoconf`).

use super::{CmdResult, Command};
use crate::drivers::virtio::blk::{SECTOR_SIZE, boot_disk};
use crate::kprintln;
use alloc::string::String;

/// The commands of this group.
pub const COMMANDS: &[Command] = &[Command {
    name: "blk",
    args: "read SECTOR | stat",
    summary: "virtio-blk disk: one sector, or counters",
    detail: "read SECTOR dumps one 512-byte sector (hex and text) through the driver's \
             synchronous read (interrupt, softint, workqueue, condvar); stat shows the slot, \
             the size and the counters.",
    run: blk,
}];

fn blk(args: &[&str]) -> CmdResult {
    let Some(d) = boot_disk() else {
        return Err("no disk attached (virt with a virtio-blk device only)".into());
    };
    match args {
        ["stat"] => {
            let slot = d.slot();
            let s = d.stats();
            kprintln!(
                "vioblk0 at {:#x} irq {}: {} sectors{}",
                slot.regs.start,
                slot.irq,
                d.capacity(),
                if d.readonly() { ", read-only" } else { "" }
            );
            kprintln!(
                "interrupts {}  softint runs {}  completed {}  errors {}  tag waits {}",
                s.intr,
                s.softint,
                s.completed,
                s.errors,
                s.tag_waits
            );
            Ok(())
        }
        ["read", n] => {
            let sector = match n.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => n.parse(),
            }
            .map_err(|_| String::from("SECTOR is a number (decimal or 0x hex)"))?;
            let mut buf = [0u8; SECTOR_SIZE];
            d.read(sector, &mut buf)
                .map_err(|e| alloc::format!("read sector {sector}: {e}"))?;
            for (i, row) in buf.chunks(16).enumerate() {
                let mut line = alloc::format!("{:03x}:", i * 16);
                for b in row {
                    line.push_str(&alloc::format!(" {b:02x}"));
                }
                line.push_str("  ");
                line.extend(row.iter().map(|&b| {
                    if (0x20..0x7f).contains(&b) {
                        b as char
                    } else {
                        '.'
                    }
                }));
                kprintln!("{line}");
            }
            Ok(())
        }
        _ => Err("usage: blk read SECTOR | blk stat".into()),
    }
}
