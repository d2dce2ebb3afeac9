//! Damaged device trees booted on QEMU virt, part of `cargo xtask test`: QEMU's own tree for
//! virt GICv3 with 4 CPUs (`-machine dumpdtb`), edited one fault at a time through
//! [`Fdt`](crate::fdt::Fdt) and passed back with `-dtb`. Each tree the kernel must refuse has
//! to stop the boot with exactly one line naming the node and the rule (the board's
//! `qemu-virt: cannot boot: ...` for what it reads, the kernel's `kernel: cannot boot: ...`
//! for RAM, CPUs and reservations), before the kernel's banner, with no panic, and QEMU must
//! leave with status 1; the tree with 5,000 CPU nodes must
//! boot with the cap named (the GICv3 driver is never told 5,000 redistributors) and pass the
//! kernel test that counts CPU nodes. Each tree counts as one test.
//!
//! (QEMU rewrites a `-dtb` tree's memory nodes and checks its structure with libfdt before
//! booting, so damaged memory nodes and most structure faults never reach the guest; those are
//! the host tests' and the fuzzer's. An END_NODE in place of FDT_END does reach it.)

use std::path::Path;
use std::time::Duration;

use crate::board::{Gic, Machine, Variant};
use crate::error::{Context, Error, Result};
use crate::fdt::{Fdt, Token, cells, string};
use crate::proc::{self, Ending};
use crate::progress;
use crate::qemu::QemuRun;
use crate::test::{Counts, Verdict, report};
use crate::workspace::Workspace;

/// One damaged tree and what booting it must print.
pub struct Damage {
    /// Its name (file and result line).
    pub name: &'static str,
    /// The edit; false if the tree lacks what it edits.
    pub edit: fn(&mut Fdt) -> bool,
    /// Fragments of console lines that must appear.
    pub expect: &'static [&'static str],
    /// QEMU's exit status.
    pub status: i32,
    /// The kernel command line.
    pub append: Option<&'static str>,
}

/// How the one-line refusal starts: the board's (its devices, read with the MMU off) or the
/// kernel's (RAM, the CPUs and the reservations, parsed before the MMU is on).
const REFUSALS: [&str; 2] = ["qemu-virt: cannot boot: ", "kernel: cannot boot: "];

fn end_node_for_fdt_end(fdt: &mut Fdt) -> bool {
    // One changed byte: FDT_END (9) becomes END_NODE (2).
    match fdt.tokens.last_mut() {
        Some(last @ Token::EndTree) => {
            *last = Token::End;
            true
        }
        _ => false,
    }
}

fn nested_64_deep(fdt: &mut Fdt) -> bool {
    let mut nest: Vec<Token> = (0..63).map(|_| Token::Begin(b"a".to_vec())).collect();
    nest.extend((0..63).map(|_| Token::End));
    fdt.insert_children("/", nest)
}

fn duplicate_mpidr(fdt: &mut Fdt) -> bool {
    fdt.prop_mut("/cpus/cpu@1", "reg")
        .map(|reg| *reg = cells(&[0]))
        .is_some()
}

fn timer_ppi_out_of_range(fdt: &mut Fdt) -> bool {
    // The second specifier's number: the non-secure physical timer.
    match fdt.prop_mut("/timer", "interrupts") {
        Some(v) if v.len() >= 24 => {
            v[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
            true
        }
        _ => false,
    }
}

fn uart_wraps(fdt: &mut Fdt) -> bool {
    match fdt.prop_mut("/pl011@9000000", "reg") {
        Some(v) if v.len() == 16 => {
            v[..8].copy_from_slice(&0xffff_ffff_ffff_f000u64.to_be_bytes());
            true
        }
        _ => false,
    }
}

fn reservation_wraps(fdt: &mut Fdt) -> bool {
    fdt.reservations.push((u64::MAX - 0xfff, 0x2000));
    true
}

fn five_thousand_cpus(fdt: &mut Fdt) -> bool {
    let mut nodes = Vec::new();
    for n in 4u32..5000 {
        let mpidr = ((n / 256) << 8) | (n % 256);
        nodes.push(Token::Begin(format!("cpu@{mpidr:x}").into_bytes()));
        nodes.push(Token::Prop(b"device_type".to_vec(), string("cpu")));
        nodes.push(Token::Prop(b"reg".to_vec(), cells(&[mpidr])));
        nodes.push(Token::Prop(b"enable-method".to_vec(), string("psci")));
        nodes.push(Token::End);
    }
    fdt.insert_children("/cpus", nodes)
}

/// The damaged trees.
pub const DAMAGES: &[Damage] = &[
    Damage {
        name: "end-node-for-fdt-end",
        edit: end_node_for_fdt_end,
        expect: &[
            "device tree is malformed at byte",
            "in the structure block: END_NODE without a matching BEGIN_NODE",
        ],
        status: 1,
        append: None,
    },
    Damage {
        name: "nested-64-deep",
        edit: nested_64_deep,
        expect: &["nodes nested deeper than 32 levels"],
        status: 1,
        append: None,
    },
    Damage {
        name: "duplicate-mpidr",
        edit: duplicate_mpidr,
        expect: &["device tree: /cpus/cpu@1: MPIDR 0x0 is also another cpu node's"],
        status: 1,
        append: None,
    },
    Damage {
        name: "timer-ppi-0xffffffff",
        edit: timer_ppi_out_of_range,
        expect: &[
            "device tree: /timer: interrupt specifier (type 0x1, number 0xffffffff) is outside",
        ],
        status: 1,
        append: None,
    },
    Damage {
        name: "uart-reg-wraps",
        edit: uart_wraps,
        expect: &["device tree: /pl011@9000000: range 0xfffffffffffff000 + 0x1000 wraps past 2^64"],
        status: 1,
        append: None,
    },
    Damage {
        name: "reservation-wraps",
        edit: reservation_wraps,
        expect: &["device tree: the memory reservation block: range 0xfffffffffffff000 + 0x2000"],
        status: 1,
        append: None,
    },
    Damage {
        name: "5000-cpu-nodes",
        edit: five_thousand_cpus,
        expect: &[
            "warning: 4936 more CPUs in the device tree than MAXCPUS = 64; they stay offline",
            "5000 CPUs in the device tree",
            "ok    cpu::cpus_beyond_maxcpus_are_counted_and_left_offline",
            "1 passed, 0 failed",
        ],
        status: 0,
        append: Some("ktest.filter=cpus_beyond_maxcpus"),
    },
];

/// Judges one boot: the status, every expected fragment, and for a refusal exactly one line
/// from the board, no kernel banner and no panic.
pub fn judge<S: AsRef<str>>(
    damage: &Damage,
    lines: &[S],
    ending: Ending,
    timeout: Duration,
) -> Option<String> {
    let missing = damage
        .expect
        .iter()
        .find(|e| !lines.iter().any(|l| l.as_ref().contains(*e)));
    let refusals = lines
        .iter()
        .filter(|l| REFUSALS.iter().any(|r| l.as_ref().starts_with(r)))
        .count();
    let status = match ending {
        Ending::TimedOut => return Some(format!("timeout after {} s", timeout.as_secs())),
        Ending::Exited(status) => status,
    };
    if status.code() != Some(damage.status) {
        return Some(format!(
            "QEMU exited with {}, expected status {}",
            proc::describe(status),
            damage.status
        ));
    }
    if let Some(line) = missing {
        return Some(format!("no output line contains {line:?}"));
    }
    if let Some(l) = lines.iter().find(|l| l.as_ref().contains("panic")) {
        return Some(format!("a panic: {:?}", l.as_ref()));
    }
    if damage.status != 0 {
        if refusals != 1 {
            return Some(format!(
                "{refusals} lines start with {REFUSALS:?}, expected 1"
            ));
        }
        if lines.iter().any(|l| l.as_ref().starts_with("kernel ")) {
            return Some("the kernel started on a tree the board must refuse".into());
        }
    }
    None
}

/// QEMU's own tree for `machine` (`-machine ...,dumpdtb=`), compacted.
fn qemu_tree(machine: Machine, kernel: &Path, dir: &Path) -> Result<Fdt> {
    let path = dir.join("qemu.dtb");
    let run = QemuRun::new(machine, kernel);
    let mut args = run.args();
    let at = args
        .iter()
        .position(|a| a == "-M")
        .ok_or_else(|| Error::new("no -M in the QEMU command line"))?;
    let mut value = args[at + 1].clone();
    value.push(format!(",dumpdtb={}", path.display()));
    args[at + 1] = value;
    let status = std::process::Command::new(crate::tools::QEMU)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .context("running QEMU to dump its device tree")?;
    let bytes = std::fs::read(&path)
        .with_context(|| format!("QEMU ({status}) wrote no device tree to {}", path.display()))?;
    Fdt::parse(&bytes).map_err(|e| Error::new(format!("QEMU's own tree: {e}")))
}

/// Boots every damaged tree with the test image `kernel`; prints a result line for each.
pub fn run(ws: &Workspace, kernel: &Path, timeout: Duration, verbose: bool) -> Result<Counts> {
    let machine = Machine::virt(Gic::V3, 4);
    let dir = ws.target_dir.join("badtree");
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    let mut total = Counts::default();
    let base = qemu_tree(machine, kernel, &dir);
    for damage in DAMAGES {
        let label = format!("{} bad tree {}", machine.label(), damage.name);
        progress::running(&label);
        let (note, elapsed) = match &base {
            Err(e) => (Some(e.to_string()), None),
            Ok(base) => boot(
                ws, machine, kernel, &dir, base, damage, timeout, verbose, &label,
            )?,
        };
        let failed = u64::from(note.is_some());
        let verdict = Verdict {
            counts: Counts {
                passed: 1 - failed,
                failed,
                skipped: 0,
            },
            note,
        };
        report(&label, &verdict, elapsed);
        total += verdict.counts;
    }
    Ok(total)
}

#[allow(
    clippy::too_many_arguments,
    reason = "one boot, its inputs spelled out"
)]
fn boot(
    ws: &Workspace,
    machine: Machine,
    kernel: &Path,
    dir: &Path,
    base: &Fdt,
    damage: &Damage,
    timeout: Duration,
    verbose: bool,
    label: &str,
) -> Result<(Option<String>, Option<Duration>)> {
    let mut fdt = base.clone();
    if !(damage.edit)(&mut fdt) {
        return Ok((
            Some("QEMU's tree lacks what this damage edits".into()),
            None,
        ));
    }
    let path = dir.join(format!("{}.dtb", damage.name));
    std::fs::write(&path, fdt.to_bytes()).with_context(|| path.display().to_string())?;
    let run = QemuRun {
        dtb: Some(&path),
        append: damage.append,
        ..QemuRun::new(machine, kernel)
    };
    let log = ws.log_path(&format!(
        "{}-badtree-{}",
        machine.log_stem(Variant::Ktest),
        damage.name
    ));
    progress::eprintln(&format!("xtask: {label}: {}", run.display()));
    let captured = proc::run_captured(&mut run.command(), &log, timeout, |line| {
        if verbose {
            println!("{line}");
        }
    })?;
    let note = judge(damage, &captured.lines, captured.ending, timeout);
    if note.is_some() && !verbose {
        for line in captured.lines.iter().rev().take(10).rev() {
            println!("[{label}]   {line}");
        }
    }
    Ok((note, Some(captured.elapsed)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    const VIRT: &[u8] = include_bytes!("../../kernel/testdata/virt-gic3-smp4.dtb");

    fn exited(code: i32) -> Ending {
        Ending::Exited(std::process::ExitStatus::from_raw(code << 8))
    }

    #[test]
    fn every_damage_applies_to_qemus_tree_and_the_kernel_refuses_or_caps_it() {
        let base = Fdt::parse(VIRT).unwrap();
        for damage in DAMAGES {
            let mut fdt = base.clone();
            assert!((damage.edit)(&mut fdt), "{}", damage.name);
            let bytes = fdt.to_bytes();
            let parsed = kernel::devtree::parse(&bytes, 0);
            match damage.name {
                "5000-cpu-nodes" => assert_eq!(parsed.unwrap().cpu_nodes(), 5000),
                // The board refuses it (board-common's `irq` tests); the tree itself is sound.
                "timer-ppi-0xffffffff" => {
                    let (_, timer) = kernel::devtree::find_compatible(&bytes, &["arm,armv8-timer"])
                        .unwrap()
                        .unwrap();
                    assert_eq!(timer.interrupts[4], u32::MAX);
                }
                _ => {
                    let text = match parsed {
                        Err(e) => e.to_string(),
                        Ok(_) => kernel::devtree::find_compatible(&bytes, &["arm,pl011"])
                            .unwrap_err()
                            .to_string(),
                    };
                    for e in damage.expect {
                        assert!(text.contains(e), "{}: {text:?} lacks {e:?}", damage.name);
                    }
                }
            }
        }
    }

    #[test]
    fn a_refusal_is_one_line_before_the_banner_and_status_1() {
        let d = &DAMAGES[2];
        let t = Duration::from_secs(5);
        let good = [format!("{}{}", REFUSALS[0], d.expect[0])];
        assert_eq!(judge(d, &good, exited(1), t), None);
        assert!(
            judge(d, &good, exited(0), t)
                .unwrap()
                .contains("expected status 1")
        );
        let by_kernel = [format!("{}{}", REFUSALS[1], d.expect[0])];
        assert_eq!(judge(d, &by_kernel, exited(1), t), None);
        let twice = [good[0].clone(), by_kernel[0].clone()];
        assert!(judge(d, &twice, exited(1), t).unwrap().contains("2 lines"));
        let booted = [good[0].clone(), "kernel 0.1.0 on qemu-virt".into()];
        assert!(
            judge(d, &booted, exited(1), t)
                .unwrap()
                .contains("kernel started")
        );
        let panicked = [good[0].clone(), "panic on cpu0: x".into()];
        assert!(judge(d, &panicked, exited(1), t).unwrap().contains("panic"));
        assert!(judge(d, &["other".to_owned()], exited(1), t).is_some());
        assert!(
            judge(d, &good, Ending::TimedOut, t)
                .unwrap()
                .contains("timeout")
        );
    }
}
