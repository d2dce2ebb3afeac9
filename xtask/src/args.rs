//! Command-line parsing for `cargo xtask <command> [flags]`, by hand (no argument-parsing crate).
//!
//! Each command has a `parse_*` function that accepts exactly its flags; anything else is an
//! error that names the command. Flags take values as `--flag VALUE` or `--flag=VALUE`.
//!
//! To add a command: add a [`Command`] variant
//! with its argument struct, a `parse_*` function, an arm in [`parse`], a paragraph in [`USAGE`],
//! remove its name from [`PLANNED`], and add the dispatch arm in `main.rs`.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use crate::board::{Board, Gic, Machine, Profile, Variant};
use crate::error::{Error, Result};
pub use crate::fuzz::FuzzArgs;
use crate::kvm::dump::DumpArgs;
use crate::kvm::{CpuSel, KvmArgs, Query, Target};
pub use crate::sdcard::SdcardArgs;

/// Usage text printed by `cargo xtask help`.
pub const USAGE: &str = "\
Usage: cargo xtask <command> [flags]

Commands:
  build   Build a kernel image and print its path (rpi4: the raw kernel8.img, `.img`)
          --board virt|rpi4       board to build for (default: virt)
          --release               build with the release profile (default: debug)
          --variant NAME          default | ktest | bench (default: default)

  qemu    Build the kernel and boot it in QEMU interactively (quit with Ctrl-A x)
          --board virt|rpi4       board to emulate (default: virt; rpi4 is raspi4b)
          --gic 2|3               interrupt controller version (default: 3; rpi4: 2, fixed)
          --smp N                 number of CPUs (default: 4; fixed for rpi4)
          --gic-security          rpi4: the GIC-400 as on the board (Security Extensions,
                                  5 priority bits, the kernel non-secure)
          --icount                deterministic virtual time (-icount shift=0,...)
          --gdb                   wait for a debugger on :1234 (-s -S)
          --gdbstub               run, with a gdbstub on :1234 (-s) for `kvm --live`
          --release               build with the release profile
          --test                  boot the in-kernel test image (ktest) instead
          --append ARGS           kernel command line (e.g. kvm.selftest=1 with --test)
          --dtb FILE              rpi4: the device tree to pass (default: the one
                                  `sdcard` cached, else none: built-in defaults)
          --cmd 'CMD; CMD'        type these monitor commands at the `kdb> ` prompt, one
                                  after the other, then `poweroff`; exit with QEMU's status
          --script FILE           the same with the lines of FILE

  test    Run the host unit tests, then the in-kernel tests on every QEMU configuration
          --verbose, -v           show the whole kernel output
          --timeout SECS          per-configuration time limit (default: 300)
          --filter STR            run only kernel tests matching STR (ktest.filter=STR)
          --monitor-only          run only the monitor sessions (default image, every
                                  command typed at the prompt and its output checked)

  bench   Run the benchmark image on every QEMU configuration and print metric= lines
          --json FILE             also write the figures to FILE as JSON
          --timeout SECS          per-configuration time limit (default: 300)
          --smp N                 run only virt GICv3 with N CPUs instead of the matrix

  gdb     Start QEMU halted and attach gdb-multiarch to it (QEMU stops when gdb exits)
          --board virt|rpi4       board to emulate (default: virt; rpi4 is raspi4b)
          --gic 2|3               interrupt controller version (default: 3; rpi4: 2, fixed)
          --smp N                 number of CPUs (default: 4; fixed for rpi4)
          --gic-security          rpi4: the GIC-400 as on the board (as for qemu)
          --release               build with the release profile
          --test                  debug the in-kernel test image (ktest)

  dump    Boot a kernel, wait for a console line, write an ELF core of the guest (QMP)
          --out FILE              the core (default: target/dumps/dump.core; the kernel ELF
                                  is copied beside it as FILE.elf)
          --board, --gic, --smp, --release, --test   as for qemu
          --append ARGS           kernel command line (e.g. kvm.selftest=1 with --test)
          --wait-for TEXT         dump after the first console line containing TEXT
                                  (default: the idle line; `kvm-selftest ready` for the
                                  self-test; the hold line with --dump-on-panic)
          --dump-on-panic         crash the kernel (crash=panic unless --append sets crash=),
                                  keep it halted (panic.hold=1) and dump the crashed machine
          --timeout SECS          time limit for the boot (default: 300)

  kvm     Read per-CPU data of a kernel with the kvm reader (kvm_getpcpu(3))
          cargo xtask kvm [--core FILE | --live [ADDR]] [--kernel ELF] [--json] QUERY
          --core FILE             an ELF core (default: target/dumps/dump.core)
          --live [ADDR]           a running QEMU's gdbstub (default: 127.0.0.1:1234; start
                                  QEMU with `cargo xtask qemu --gdbstub`)
          --kernel ELF            the kernel ELF (default: FILE.elf beside the core; for
                                  --live the default debug image)
          --json                  print JSON instead of a table
          QUERY is one of:
            maxcpu                          kvm_getmaxcpu
            pcpu [CPU]                      kvm_getpcpu: one row per active CPU
            dpcpu SYMBOL [--cpu N | --all] [--size N]
                                            a DPCPU variable on CPU N (default 0) or all
            nlist SYMBOL... [--cpu N]       kvm_nlist (DPCPU symbols moved to CPU N)
  sdcard  Build a flashable Raspberry Pi 4 SD card image (MBR, one bootable FAT32 partition
          with config.txt, kernel8.img, the Pi firmware and bcm2711-rpi-4-b.dtb); fetches the
          firmware and device tree from Debian into target/rpi4/firmware/ the first time
          --out FILE              where to write it (default: target/rpi4/sdcard.img)
          --boot-dir DIR          write just the files into DIR (a mounted FAT partition)
          --firmware DIR          take start4.elf, fixup4.dat, the licence and the .dtb
                                  from DIR instead of fetching them
          --test                  put the in-kernel test image on the card
          --firmware-log          add uart_2ndstage=1 to config.txt: the firmware prints
                                  what it loaded where on the serial console

  flash   Write the SD card image to a card, after showing its size and model and asking;
          refuses mounted devices and ones that look like a system disk
          --device /dev/sdX       the card's whole-disk device (required)
          --image FILE            the image to write (default: build it as `sdcard` does)
          --firmware DIR          as for `sdcard`, when building the image
          --firmware-log          as for `sdcard`, when building the image

  fuzz    Run the project's structure-aware fuzzer on the device-tree reader (dtb) or the
          kvm reader (kvm) for as long as asked; prints its seed, and on a failure how to
          replay it
          cargo xtask fuzz dtb|kvm [--seconds N] [--iterations N] [--seed HEX]
          --seconds N             run for N seconds (default: 60)
          --iterations N          run exactly N inputs
          --seed HEX              the seed (default: from the clock)
          --kernel ELF --core FILE   kvm: add this kernel and core to the synthetic ones

  help    Print this message
";

/// Command names that are reserved for later and rejected with a clear message for now.
pub const PLANNED: &[&str] = &[];

/// Default host-side time limit for one QEMU run of `test` or `bench`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Default GIC version for `qemu` and `gdb`.
const DEFAULT_GIC: Gic = Gic::V3;

/// Default CPU count for `qemu` and `gdb`.
const DEFAULT_SMP: u32 = 4;

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Print the usage text.
    Help,
    /// `cargo xtask build`.
    Build(BuildArgs),
    /// `cargo xtask qemu`.
    Qemu(QemuArgs),
    /// `cargo xtask test`.
    Test(TestArgs),
    /// `cargo xtask bench`.
    Bench(BenchArgs),
    /// `cargo xtask gdb`.
    Gdb(GdbArgs),
    /// `cargo xtask dump`.
    Dump(DumpArgs),
    /// `cargo xtask kvm`.
    Kvm(KvmArgs),
    /// `cargo xtask sdcard`.
    Sdcard(SdcardArgs),
    /// `cargo xtask flash`.
    Flash(FlashArgs),
    /// `cargo xtask fuzz`.
    Fuzz(FuzzArgs),
}

/// Flags of `flash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlashArgs {
    /// The whole-disk device to write (`/dev/sdX`, `/dev/mmcblkN`).
    pub device: PathBuf,
    /// The image to write (default: build it as `sdcard` does).
    pub image: Option<PathBuf>,
    /// Firmware directory for building the image.
    pub firmware: Option<PathBuf>,
    /// `uart_2ndstage=1` in the built image's config.txt.
    pub firmware_log: bool,
}

/// Flags of `build`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildArgs {
    /// Board to build for.
    pub board: Board,
    /// Build profile.
    pub profile: Profile,
    /// Image variant.
    pub variant: Variant,
}

/// Flags of `qemu`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuArgs {
    /// Machine to emulate.
    pub machine: Machine,
    /// Run with deterministic instruction counting.
    pub icount: bool,
    /// Start halted with a gdb stub on :1234.
    pub gdb: bool,
    /// Run (not halted) with a gdb stub on :1234.
    pub gdbstub: bool,
    /// Build profile.
    pub profile: Profile,
    /// Boot the ktest image instead of the default one.
    pub test: bool,
    /// Kernel command line.
    pub append: Option<String>,
    /// The device tree for rpi4 (`--dtb FILE`); otherwise the cached one, if any.
    pub dtb: Option<PathBuf>,
    /// Monitor commands to type instead of an interactive session (`--cmd`, `--script`).
    pub script: Option<Script>,
}

/// Monitor commands for a scripted `cargo xtask qemu`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Script {
    /// `--cmd "cpus; ps"`: `;`-separated commands.
    Commands(String),
    /// `--script FILE`: one command line per line of the file.
    File(PathBuf),
}

/// Flags of `test`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestArgs {
    /// Echo every line of kernel output.
    pub verbose: bool,
    /// Time limit per QEMU configuration.
    pub timeout: Duration,
    /// Kernel test filter, passed as `ktest.filter=STR`.
    pub filter: Option<String>,
    /// Run only the monitor sessions.
    pub monitor_only: bool,
}

/// Flags of `bench`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchArgs {
    /// Where to write the figures as JSON, if anywhere.
    pub json: Option<PathBuf>,
    /// Time limit per QEMU configuration.
    pub timeout: Duration,
    /// Run only virt GICv3 with this many CPUs instead of the bench matrix.
    pub smp: Option<u32>,
}

/// Flags of `gdb`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GdbArgs {
    /// Machine to emulate.
    pub machine: Machine,
    /// Build profile.
    pub profile: Profile,
    /// Debug the ktest image instead of the default one.
    pub test: bool,
}

/// Parses the arguments after `cargo xtask` (without the program name).
pub fn parse<I, S>(args: I) -> Result<Command>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut args: VecDeque<String> = args.into_iter().map(Into::into).collect();
    let Some(name) = args.pop_front() else {
        return Ok(Command::Help);
    };
    match name.as_str() {
        "help" | "-h" | "--help" => Ok(Command::Help),
        "build" => parse_build(Flags::new("build", args)),
        "qemu" => parse_qemu(Flags::new("qemu", args)),
        "test" => parse_test(Flags::new("test", args)),
        "bench" => parse_bench(Flags::new("bench", args)),
        "gdb" => parse_gdb(Flags::new("gdb", args)),
        "dump" => parse_dump(Flags::new("dump", args)),
        "kvm" => parse_kvm(args),
        "sdcard" => parse_sdcard(Flags::new("sdcard", args)),
        "flash" => parse_flash(Flags::new("flash", args)),
        "fuzz" => parse_fuzz(args),
        planned if PLANNED.contains(&planned) => Err(Error::new(format!(
            "`cargo xtask {planned}` is planned but not implemented yet"
        ))),
        other => Err(Error::new(format!(
            "unknown command `{other}` (run `cargo xtask help` for the list)"
        ))),
    }
}

/// Board, GIC and CPU count flags shared by `qemu` and `gdb`. A board with a fixed machine
/// (rpi4) takes its GIC and CPU count as defaults.
struct MachineFlags {
    board: Board,
    gic: Option<Gic>,
    smp: Option<u32>,
    gic_security: bool,
}

impl Default for MachineFlags {
    fn default() -> Self {
        Self {
            board: Board::Virt,
            gic: None,
            smp: None,
            gic_security: false,
        }
    }
}

impl MachineFlags {
    /// Handles `flag` if it is one of the machine flags; returns whether it was.
    fn accept(&mut self, flags: &mut Flags, flag: &Flag) -> Result<bool> {
        match flag.name.as_str() {
            "--board" => self.board = flags.value(flag)?.parse()?,
            "--gic" => self.gic = Some(flags.value(flag)?.parse()?),
            "--smp" => self.smp = Some(parse_number(flag, &flags.value(flag)?)?),
            "--gic-security" => self.gic_security = flags.switch(flag)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The validated machine.
    fn finish(self) -> Result<Machine> {
        let (gic, smp) = self
            .board
            .fixed_machine()
            .unwrap_or((DEFAULT_GIC, DEFAULT_SMP));
        let machine = Machine {
            board: self.board,
            gic: self.gic.unwrap_or(gic),
            smp: self.smp.unwrap_or(smp),
            gic_security: self.gic_security,
        };
        machine.validate()?;
        Ok(machine)
    }
}

fn parse_build(mut flags: Flags) -> Result<Command> {
    let mut out = BuildArgs {
        board: Board::Virt,
        profile: Profile::Debug,
        variant: Variant::Default,
    };
    while let Some(flag) = flags.next_flag()? {
        match flag.name.as_str() {
            "--board" => out.board = flags.value(&flag)?.parse()?,
            "--variant" => out.variant = flags.value(&flag)?.parse()?,
            "--release" => {
                flags.switch(&flag)?;
                out.profile = Profile::Release;
            }
            _ => return Err(flags.unknown(&flag)),
        }
    }
    Ok(Command::Build(out))
}

fn parse_qemu(mut flags: Flags) -> Result<Command> {
    let mut machine = MachineFlags::default();
    let (mut icount, mut gdb, mut test, mut profile) = (false, false, false, Profile::Debug);
    let (mut gdbstub, mut append) = (false, None);
    let mut dtb = None;
    let mut script = None;
    while let Some(flag) = flags.next_flag()? {
        if machine.accept(&mut flags, &flag)? {
            continue;
        }
        match flag.name.as_str() {
            "--cmd" | "--script" if script.is_some() => {
                return Err(Error::new("--cmd and --script: give one of them, once"));
            }
            "--cmd" => script = Some(Script::Commands(flags.value(&flag)?)),
            "--script" => script = Some(Script::File(PathBuf::from(flags.value(&flag)?))),
            "--icount" => icount = flags.switch(&flag)?,
            "--gdb" => gdb = flags.switch(&flag)?,
            "--gdbstub" => gdbstub = flags.switch(&flag)?,
            "--append" => append = Some(flags.value(&flag)?),
            "--test" => test = flags.switch(&flag)?,
            "--dtb" => dtb = Some(PathBuf::from(flags.value(&flag)?)),
            "--release" => {
                flags.switch(&flag)?;
                profile = Profile::Release;
            }
            _ => return Err(flags.unknown(&flag)),
        }
    }
    if gdb && gdbstub {
        return Err(Error::new("--gdb and --gdbstub exclude each other"));
    }
    if script.is_some() && (test || gdb) {
        return Err(Error::new(
            "--cmd/--script talk to the monitor of the default image: not with --test or --gdb",
        ));
    }
    Ok(Command::Qemu(QemuArgs {
        machine: machine.finish()?,
        icount,
        gdb,
        gdbstub,
        profile,
        test,
        append,
        dtb,
        script,
    }))
}

fn parse_test(mut flags: Flags) -> Result<Command> {
    let mut out = TestArgs {
        verbose: false,
        timeout: DEFAULT_TIMEOUT,
        filter: None,
        monitor_only: false,
    };
    while let Some(flag) = flags.next_flag()? {
        match flag.name.as_str() {
            "--verbose" | "-v" => out.verbose = flags.switch(&flag)?,
            "--monitor-only" => out.monitor_only = flags.switch(&flag)?,
            "--timeout" => out.timeout = parse_timeout(&flag, &flags.value(&flag)?)?,
            "--filter" => {
                let filter = flags.value(&flag)?;
                if filter.is_empty() || filter.chars().any(char::is_whitespace) {
                    return Err(Error::new(format!(
                        "--filter `{filter}`: the filter must be non-empty and contain no \
                         whitespace (it is passed on the kernel command line)"
                    )));
                }
                out.filter = Some(filter);
            }
            _ => return Err(flags.unknown(&flag)),
        }
    }
    Ok(Command::Test(out))
}

fn parse_bench(mut flags: Flags) -> Result<Command> {
    let mut out = BenchArgs {
        json: None,
        timeout: DEFAULT_TIMEOUT,
        smp: None,
    };
    while let Some(flag) = flags.next_flag()? {
        match flag.name.as_str() {
            "--json" => out.json = Some(PathBuf::from(flags.value(&flag)?)),
            "--timeout" => out.timeout = parse_timeout(&flag, &flags.value(&flag)?)?,
            "--smp" => out.smp = Some(parse_number(&flag, &flags.value(&flag)?)?),
            _ => return Err(flags.unknown(&flag)),
        }
    }
    Ok(Command::Bench(out))
}

fn parse_sdcard(mut flags: Flags) -> Result<Command> {
    let mut out = SdcardArgs::default();
    while let Some(flag) = flags.next_flag()? {
        match flag.name.as_str() {
            "--out" => out.out = Some(PathBuf::from(flags.value(&flag)?)),
            "--boot-dir" => out.boot_dir = Some(PathBuf::from(flags.value(&flag)?)),
            "--firmware" => out.firmware = Some(PathBuf::from(flags.value(&flag)?)),
            "--test" => out.test = flags.switch(&flag)?,
            "--firmware-log" => out.firmware_log = flags.switch(&flag)?,
            _ => return Err(flags.unknown(&flag)),
        }
    }
    if out.out.is_some() && out.boot_dir.is_some() {
        return Err(Error::new(
            "`cargo xtask sdcard`: --out and --boot-dir exclude each other",
        ));
    }
    Ok(Command::Sdcard(out))
}

fn parse_flash(mut flags: Flags) -> Result<Command> {
    let (mut device, mut image, mut firmware) = (None, None, None);
    let mut firmware_log = false;
    while let Some(flag) = flags.next_flag()? {
        match flag.name.as_str() {
            "--device" => device = Some(PathBuf::from(flags.value(&flag)?)),
            "--image" => image = Some(PathBuf::from(flags.value(&flag)?)),
            "--firmware" => firmware = Some(PathBuf::from(flags.value(&flag)?)),
            "--firmware-log" => firmware_log = flags.switch(&flag)?,
            _ => return Err(flags.unknown(&flag)),
        }
    }
    let device = device.ok_or_else(|| {
        Error::new("`cargo xtask flash` needs --device /dev/sdX (the card's whole-disk device)")
    })?;
    if firmware_log && image.is_some() {
        return Err(Error::new(
            "`cargo xtask flash`: --firmware-log changes the image it builds; with --image, \
             build that image with `cargo xtask sdcard --firmware-log`",
        ));
    }
    Ok(Command::Flash(FlashArgs {
        device,
        image,
        firmware,
        firmware_log,
    }))
}

fn parse_gdb(mut flags: Flags) -> Result<Command> {
    let mut machine = MachineFlags::default();
    let (mut test, mut profile) = (false, Profile::Debug);
    while let Some(flag) = flags.next_flag()? {
        if machine.accept(&mut flags, &flag)? {
            continue;
        }
        match flag.name.as_str() {
            "--test" => test = flags.switch(&flag)?,
            "--release" => {
                flags.switch(&flag)?;
                profile = Profile::Release;
            }
            _ => return Err(flags.unknown(&flag)),
        }
    }
    Ok(Command::Gdb(GdbArgs {
        machine: machine.finish()?,
        profile,
        test,
    }))
}

fn parse_dump(mut flags: Flags) -> Result<Command> {
    let mut machine = MachineFlags::default();
    let mut out = DumpArgs {
        machine: Machine::virt(DEFAULT_GIC, DEFAULT_SMP),
        profile: Profile::Debug,
        test: false,
        append: None,
        wait_for: None,
        on_panic: false,
        out: None,
        timeout: DEFAULT_TIMEOUT,
    };
    while let Some(flag) = flags.next_flag()? {
        if machine.accept(&mut flags, &flag)? {
            continue;
        }
        match flag.name.as_str() {
            "--test" => out.test = flags.switch(&flag)?,
            "--release" => {
                flags.switch(&flag)?;
                out.profile = Profile::Release;
            }
            "--append" => out.append = Some(flags.value(&flag)?),
            "--wait-for" => out.wait_for = Some(flags.value(&flag)?),
            "--dump-on-panic" => out.on_panic = flags.switch(&flag)?,
            "--out" => out.out = Some(PathBuf::from(flags.value(&flag)?)),
            "--timeout" => out.timeout = parse_timeout(&flag, &flags.value(&flag)?)?,
            _ => return Err(flags.unknown(&flag)),
        }
    }
    out.machine = machine.finish()?;
    Ok(Command::Dump(out))
}

/// `cargo xtask kvm [--core FILE | --live [ADDR]] [--kernel ELF] [--json] QUERY [ARGS]`: flags
/// anywhere, the query word and its arguments in order.
fn parse_kvm(mut args: VecDeque<String>) -> Result<Command> {
    let err = |m: String| Error::new(format!("cargo xtask kvm: {m} (see `cargo xtask help`)"));
    let (mut target, mut kernel, mut json) = (None, None, false);
    let (mut cpu, mut all, mut size) = (None, false, None);
    let mut words: Vec<String> = Vec::new();
    let value = |args: &mut VecDeque<String>, flag: &str, inline: Option<String>| {
        inline
            .or_else(|| args.pop_front())
            .ok_or_else(|| err(format!("{flag} needs a value")))
    };
    let number = |flag: &str, v: &str| {
        v.parse::<u32>()
            .map_err(|_| err(format!("{flag} needs a whole number, not `{v}`")))
    };
    while let Some(arg) = args.pop_front() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let set_target = |target: &mut Option<Target>, t: Target| {
            if target.replace(t).is_some() {
                Err(err("give one of --core and --live".into()))
            } else {
                Ok(())
            }
        };
        match name.as_str() {
            "--core" => {
                let path = value(&mut args, "--core", inline)?;
                set_target(&mut target, Target::Core(PathBuf::from(path)))?;
            }
            "--live" => {
                let addr = match inline {
                    Some(v) => v,
                    None if args.front().is_some_and(|a| a.contains(':')) => {
                        args.pop_front().unwrap_or_default()
                    }
                    None => crate::kvm::DEFAULT_LIVE.to_owned(),
                };
                set_target(&mut target, Target::Live(addr))?;
            }
            "--kernel" => kernel = Some(PathBuf::from(value(&mut args, "--kernel", inline)?)),
            "--json" => json = true,
            "--all" => all = true,
            "--cpu" => cpu = Some(number("--cpu", &value(&mut args, "--cpu", inline)?)?),
            "--size" => {
                let n = number("--size", &value(&mut args, "--size", inline)?)?;
                if n == 0 || n > 1 << 20 {
                    return Err(err(format!("--size {n} is out of range (1..=1048576)")));
                }
                size = Some(n as usize);
            }
            flag if flag.starts_with('-')
                && flag.len() > 1
                && !flag[1..].starts_with(|c: char| c.is_ascii_digit()) =>
            {
                return Err(err(format!("unknown flag `{flag}`")));
            }
            _ => words.push(arg),
        }
    }
    let Some(word) = words.first() else {
        return Err(err("say what to read: maxcpu, pcpu, dpcpu or nlist".into()));
    };
    let rest = &words[1..];
    let query = match word.as_str() {
        "maxcpu" if rest.is_empty() => Query::MaxCpu,
        "pcpu" if rest.len() <= 1 => Query::Pcpu(match rest.first() {
            Some(n) => Some(
                n.parse()
                    .map_err(|_| err(format!("pcpu takes a CPU number, not `{n}`")))?,
            ),
            None => None,
        }),
        "dpcpu" if rest.len() == 1 => {
            if cpu.is_some() && all {
                return Err(err("give one of --cpu and --all".into()));
            }
            Query::Dpcpu {
                symbol: rest[0].clone(),
                cpus: if all {
                    CpuSel::All
                } else {
                    CpuSel::One(cpu.unwrap_or(0))
                },
                size,
            }
        }
        "nlist" if !rest.is_empty() => Query::Nlist {
            symbols: rest.to_vec(),
            cpu,
        },
        "maxcpu" | "pcpu" | "dpcpu" | "nlist" => {
            return Err(err(format!(
                "wrong arguments for `{word}`: {}",
                rest.join(" ")
            )));
        }
        other => return Err(err(format!("unknown query `{other}`"))),
    };
    if (all || size.is_some()) && !matches!(query, Query::Dpcpu { .. })
        || cpu.is_some() && matches!(query, Query::MaxCpu | Query::Pcpu(_))
    {
        return Err(err(format!(
            "--cpu, --all and --size do not apply to `{word}`"
        )));
    }
    Ok(Command::Kvm(KvmArgs {
        target,
        kernel,
        json,
        query,
    }))
}

fn parse_fuzz(mut args: VecDeque<String>) -> Result<Command> {
    let target = match args.pop_front().as_deref() {
        Some("dtb") => crate::fuzz::Target::Dtb,
        Some("kvm") => crate::fuzz::Target::Kvm,
        Some(other) => {
            return Err(Error::new(format!(
                "`cargo xtask fuzz` fuzzes `dtb` or `kvm`, not `{other}`"
            )));
        }
        None => return Err(Error::new("`cargo xtask fuzz` needs a target: dtb or kvm")),
    };
    let mut flags = Flags::new("fuzz", args);
    let mut out = FuzzArgs {
        target,
        seconds: None,
        iterations: None,
        seed: None,
        kernel: None,
        core: None,
    };
    while let Some(flag) = flags.next_flag()? {
        match flag.name.as_str() {
            "--seconds" => out.seconds = Some(parse_number(&flag, &flags.value(&flag)?)?.into()),
            "--iterations" => {
                let value = flags.value(&flag)?;
                out.iterations = Some(value.parse().map_err(|_| {
                    Error::new(format!(
                        "flag `--iterations` needs a whole number, not `{value}`"
                    ))
                })?);
            }
            "--seed" => {
                let value = flags.value(&flag)?;
                out.seed = Some(
                    u64::from_str_radix(value.trim_start_matches("0x"), 16).map_err(|_| {
                        Error::new(format!("flag `--seed` needs a hex number, not `{value}`"))
                    })?,
                );
            }
            "--kernel" => out.kernel = Some(PathBuf::from(flags.value(&flag)?)),
            "--core" => out.core = Some(PathBuf::from(flags.value(&flag)?)),
            _ => return Err(flags.unknown(&flag)),
        }
    }
    if out.target == crate::fuzz::Target::Dtb && (out.kernel.is_some() || out.core.is_some()) {
        return Err(Error::new(
            "--kernel and --core are for `cargo xtask fuzz kvm`",
        ));
    }
    Ok(Command::Fuzz(out))
}

/// One flag as written: its name and, for `--flag=value`, the inline value.
#[derive(Debug)]
struct Flag {
    name: String,
    inline: Option<String>,
}

/// The remaining arguments of one command, consumed flag by flag.
struct Flags {
    command: &'static str,
    args: VecDeque<String>,
}

impl Flags {
    fn new(command: &'static str, args: VecDeque<String>) -> Self {
        Self { command, args }
    }

    /// The next flag, or `None` at the end; positional arguments are errors.
    fn next_flag(&mut self) -> Result<Option<Flag>> {
        let Some(arg) = self.args.pop_front() else {
            return Ok(None);
        };
        if arg == "-h" || arg == "--help" {
            return Err(Error::new(format!(
                "`cargo xtask {}` flags are listed by `cargo xtask help`",
                self.command
            )));
        }
        if !arg.starts_with('-') || arg == "-" {
            return Err(Error::new(format!(
                "unexpected argument `{arg}` for `cargo xtask {}` (it takes only flags; see \
                 `cargo xtask help`)",
                self.command
            )));
        }
        Ok(Some(match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => Flag {
                name: name.to_owned(),
                inline: Some(value.to_owned()),
            },
            _ => Flag {
                name: arg,
                inline: None,
            },
        }))
    }

    /// The value of a flag that takes one.
    fn value(&mut self, flag: &Flag) -> Result<String> {
        if let Some(value) = &flag.inline {
            return Ok(value.clone());
        }
        match self.args.front() {
            Some(next) if !next.starts_with("--") => Ok(self.args.pop_front().unwrap_or_default()),
            _ => Err(Error::new(format!(
                "flag `{}` of `cargo xtask {}` needs a value",
                flag.name, self.command
            ))),
        }
    }

    /// Checks that an on/off flag was given without a value; returns `true` to store.
    fn switch(&mut self, flag: &Flag) -> Result<bool> {
        match &flag.inline {
            None => Ok(true),
            Some(_) => Err(Error::new(format!(
                "flag `{}` of `cargo xtask {}` takes no value",
                flag.name, self.command
            ))),
        }
    }

    /// The error for a flag this command does not have.
    fn unknown(&self, flag: &Flag) -> Error {
        Error::new(format!(
            "unknown flag `{}` for `cargo xtask {}` (see `cargo xtask help`)",
            flag.name, self.command
        ))
    }
}

/// Parses a positive decimal number given to `flag`.
fn parse_number(flag: &Flag, value: &str) -> Result<u32> {
    match value.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Error::new(format!(
            "flag `{}` needs a positive whole number, not `{value}`",
            flag.name
        ))),
    }
}

/// Parses a `--timeout` value in whole seconds.
fn parse_timeout(flag: &Flag, value: &str) -> Result<Duration> {
    Ok(Duration::from_secs(parse_number(flag, value)?.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(args: &[&str]) -> Command {
        match parse(args.iter().copied()) {
            Ok(c) => c,
            Err(e) => panic!("{args:?} should parse, got: {e}"),
        }
    }

    fn parse_err(args: &[&str]) -> String {
        match parse(args.iter().copied()) {
            Ok(c) => panic!("{args:?} should fail, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn no_arguments_and_help_print_usage() {
        assert_eq!(parse_ok(&[]), Command::Help);
        assert_eq!(parse_ok(&["help"]), Command::Help);
        assert_eq!(parse_ok(&["--help"]), Command::Help);
    }

    #[test]
    fn build_defaults_and_flags() {
        assert_eq!(
            parse_ok(&["build"]),
            Command::Build(BuildArgs {
                board: Board::Virt,
                profile: Profile::Debug,
                variant: Variant::Default,
            })
        );
        assert_eq!(
            parse_ok(&["build", "--release", "--variant", "ktest", "--board=virt"]),
            Command::Build(BuildArgs {
                board: Board::Virt,
                profile: Profile::Release,
                variant: Variant::Ktest,
            })
        );
        assert_eq!(
            parse_ok(&["build", "--variant=bench"]),
            Command::Build(BuildArgs {
                board: Board::Virt,
                profile: Profile::Debug,
                variant: Variant::Bench,
            })
        );
    }

    #[test]
    fn qemu_defaults() {
        assert_eq!(
            parse_ok(&["qemu"]),
            Command::Qemu(QemuArgs {
                machine: Machine::virt(Gic::V3, 4),
                icount: false,
                gdb: false,
                gdbstub: false,
                profile: Profile::Debug,
                test: false,
                append: None,
                dtb: None,
                script: None,
            })
        );
        assert_eq!(
            parse_ok(&["qemu", "--board", "rpi4", "--dtb", "pi.dtb"]),
            Command::Qemu(QemuArgs {
                machine: Machine::rpi4(),
                icount: false,
                gdb: false,
                gdbstub: false,
                profile: Profile::Debug,
                test: false,
                append: None,
                dtb: Some(PathBuf::from("pi.dtb")),
                script: None,
            })
        );
        assert!(parse_err(&["qemu", "--board", "rpi4", "--smp", "2"]).contains("4 CPUs"));
        match parse_ok(&["qemu", "--board", "rpi4", "--gic-security"]) {
            Command::Qemu(args) => assert_eq!(args.machine, Machine::rpi4_gic_security()),
            other => panic!("{other:?}"),
        }
        assert!(parse_err(&["qemu", "--gic-security"]).contains("--board rpi4"));
    }

    #[test]
    fn qemu_scripts() {
        match parse_ok(&["qemu", "--cmd", "cpus; ps"]) {
            Command::Qemu(args) => {
                assert_eq!(args.script, Some(Script::Commands("cpus; ps".into())))
            }
            other => panic!("{other:?}"),
        }
        match parse_ok(&["qemu", "--board", "rpi4", "--script=s.kdb"]) {
            Command::Qemu(args) => {
                assert_eq!(args.script, Some(Script::File(PathBuf::from("s.kdb"))))
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_err(&["qemu", "--cmd", "ps", "--script", "f"]).contains("one of them"));
        assert!(parse_err(&["qemu", "--cmd", "ps", "--test"]).contains("default image"));
    }

    #[test]
    fn qemu_all_flags() {
        assert_eq!(
            parse_ok(&[
                "qemu",
                "--gic",
                "2",
                "--smp=8",
                "--icount",
                "--gdb",
                "--release",
                "--test"
            ]),
            Command::Qemu(QemuArgs {
                machine: Machine::virt(Gic::V2, 8),
                icount: true,
                gdb: true,
                gdbstub: false,
                profile: Profile::Release,
                test: true,
                append: None,
                dtb: None,
                script: None,
            })
        );
    }

    #[test]
    fn qemu_rejects_bad_machines() {
        assert!(parse_err(&["qemu", "--gic", "4"]).contains("unknown GIC version `4`"));
        assert!(parse_err(&["qemu", "--smp", "0"]).contains("positive whole number"));
        assert!(parse_err(&["qemu", "--smp", "four"]).contains("not `four`"));
        assert!(parse_err(&["qemu", "--gic", "2", "--smp", "16"]).contains("out of range"));
        assert!(parse_err(&["qemu", "--board", "pc"]).contains("unknown board `pc`"));
    }

    #[test]
    fn test_flags() {
        assert_eq!(
            parse_ok(&["test"]),
            Command::Test(TestArgs {
                verbose: false,
                timeout: DEFAULT_TIMEOUT,
                filter: None,
                monitor_only: false,
            })
        );
        assert_eq!(
            parse_ok(&[
                "test",
                "--verbose",
                "--timeout",
                "60",
                "--filter",
                "sched::"
            ]),
            Command::Test(TestArgs {
                verbose: true,
                timeout: Duration::from_secs(60),
                filter: Some("sched::".into()),
                monitor_only: false,
            })
        );
        match parse_ok(&["test", "--monitor-only"]) {
            Command::Test(args) => assert!(args.monitor_only),
            other => panic!("{other:?}"),
        }
        assert!(parse_err(&["test", "--filter", "a b"]).contains("no whitespace"));
        assert!(parse_err(&["test", "--timeout", "0"]).contains("positive"));
    }

    #[test]
    fn bench_flags() {
        assert_eq!(
            parse_ok(&["bench", "--json", "out.json", "--timeout=10"]),
            Command::Bench(BenchArgs {
                json: Some(PathBuf::from("out.json")),
                timeout: Duration::from_secs(10),
                smp: None,
            })
        );
        assert_eq!(
            parse_ok(&["bench", "--smp", "32"]),
            Command::Bench(BenchArgs {
                json: None,
                timeout: DEFAULT_TIMEOUT,
                smp: Some(32),
            })
        );
        assert!(parse_err(&["bench", "--smp", "0"]).contains("positive whole number"));
    }

    #[test]
    fn gdb_flags() {
        assert_eq!(
            parse_ok(&["gdb", "--smp", "2", "--gic", "2"]),
            Command::Gdb(GdbArgs {
                machine: Machine::virt(Gic::V2, 2),
                profile: Profile::Debug,
                test: false,
            })
        );
        assert!(parse_err(&["gdb", "--icount"]).contains("unknown flag `--icount`"));
    }

    #[test]
    fn unknown_flags_and_commands_are_errors() {
        assert_eq!(
            parse_err(&["build", "--fast"]),
            "unknown flag `--fast` for `cargo xtask build` (see `cargo xtask help`)"
        );
        assert!(parse_err(&["test", "--board", "virt"]).contains("unknown flag `--board`"));
        assert!(parse_err(&["frobnicate"]).contains("unknown command `frobnicate`"));
        assert!(parse_err(&["build", "extra"]).contains("unexpected argument `extra`"));
    }

    #[test]
    fn flag_values_are_checked() {
        assert!(parse_err(&["build", "--variant"]).contains("needs a value"));
        assert!(parse_err(&["bench", "--json", "--timeout", "5"]).contains("needs a value"));
        assert!(parse_err(&["build", "--release=yes"]).contains("takes no value"));
    }

    #[test]
    fn planned_commands_say_so_and_are_not_in_usage() {
        for name in PLANNED {
            assert!(parse_err(&[name]).contains("not implemented yet"));
            assert!(!USAGE.contains(&format!("  {name} ")));
        }
    }

    fn kvm(args: &[&str]) -> KvmArgs {
        let mut all = vec!["kvm"];
        all.extend_from_slice(args);
        match parse_ok(&all) {
            Command::Kvm(k) => k,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn kvm_queries_and_sources() {
        let k = kvm(&["--core", "d.core", "pcpu", "2", "--json"]);
        assert_eq!(k.target, Some(Target::Core(PathBuf::from("d.core"))));
        assert_eq!(k.query, Query::Pcpu(Some(2)));
        assert!(k.json);
        let k = kvm(&["--live", "maxcpu"]);
        assert_eq!(k.target, Some(Target::Live("127.0.0.1:1234".into())));
        assert_eq!(k.query, Query::MaxCpu);
        let k = kvm(&[
            "--live",
            "localhost:4321",
            "--kernel=k.elf",
            "dpcpu",
            "NEXT_TICK",
            "--all",
        ]);
        assert_eq!(k.target, Some(Target::Live("localhost:4321".into())));
        assert_eq!(k.kernel, Some(PathBuf::from("k.elf")));
        assert_eq!(
            k.query,
            Query::Dpcpu {
                symbol: "NEXT_TICK".into(),
                cpus: CpuSel::All,
                size: None
            }
        );
        let k = kvm(&["nlist", "kern_ncpu", "NEXT_TICK", "--cpu", "3"]);
        assert_eq!(k.target, None);
        assert_eq!(
            k.query,
            Query::Nlist {
                symbols: vec!["kern_ncpu".into(), "NEXT_TICK".into()],
                cpu: Some(3)
            }
        );
    }

    #[test]
    fn kvm_bad_command_lines() {
        assert!(parse_err(&["kvm"]).contains("say what to read"));
        assert!(parse_err(&["kvm", "pcpu", "x"]).contains("not `x`"));
        assert!(parse_err(&["kvm", "--core", "a", "--live", "pcpu"]).contains("one of --core"));
        assert!(parse_err(&["kvm", "dpcpu", "X", "--cpu", "1", "--all"]).contains("one of --cpu"));
        assert!(parse_err(&["kvm", "maxcpu", "--all"]).contains("do not apply"));
        assert!(parse_err(&["kvm", "frob"]).contains("unknown query"));
        assert!(parse_err(&["kvm", "--fast", "maxcpu"]).contains("unknown flag `--fast`"));
        assert!(parse_err(&["kvm", "nlist"]).contains("wrong arguments"));
    }

    #[test]
    fn dump_flags() {
        let Command::Dump(d) =
            parse_ok(&["dump", "--test", "--append", "kvm.selftest=1", "--smp", "2"])
        else {
            panic!("not a dump")
        };
        assert!(d.test);
        assert_eq!(d.machine, Machine::virt(Gic::V3, 2));
        assert_eq!(d.append.as_deref(), Some("kvm.selftest=1"));
        assert_eq!(crate::kvm::dump::wait_text(&d), "kvm-selftest ready");
        let Command::Dump(d) = parse_ok(&["dump", "--dump-on-panic"]) else {
            panic!("not a dump")
        };
        assert_eq!(
            crate::kvm::dump::command_line(&d).as_deref(),
            Some("crash=panic panic.hold=1")
        );
    }

    #[test]
    fn sdcard_and_flash_flags() {
        assert_eq!(
            parse_ok(&["sdcard"]),
            Command::Sdcard(SdcardArgs::default())
        );
        assert_eq!(
            parse_ok(&["sdcard", "--out", "a.img", "--firmware=fw", "--test"]),
            Command::Sdcard(SdcardArgs {
                out: Some(PathBuf::from("a.img")),
                boot_dir: None,
                firmware: Some(PathBuf::from("fw")),
                test: true,
                firmware_log: false,
            })
        );
        let Command::Sdcard(logged) = parse_ok(&["sdcard", "--firmware-log"]) else {
            panic!("not sdcard")
        };
        assert!(logged.firmware_log);
        assert!(parse_err(&["sdcard", "--out", "a", "--boot-dir", "b"]).contains("exclude"));
        assert_eq!(
            parse_ok(&["flash", "--device", "/dev/sdz"]),
            Command::Flash(FlashArgs {
                device: PathBuf::from("/dev/sdz"),
                image: None,
                firmware: None,
                firmware_log: false,
            })
        );
        let Command::Flash(logged) = parse_ok(&["flash", "--device", "/dev/sdz", "--firmware-log"])
        else {
            panic!("not flash")
        };
        assert!(logged.firmware_log);
        assert!(
            parse_err(&["flash", "--device", "d", "--image", "i", "--firmware-log"])
                .contains("sdcard --firmware-log")
        );
        assert!(parse_err(&["flash"]).contains("needs --device"));
        assert!(parse_err(&["flash", "--device"]).contains("needs a value"));
    }

    #[test]
    fn usage_lists_every_command() {
        for name in [
            "build", "qemu", "test", "bench", "gdb", "dump", "kvm", "help", "build", "qemu",
            "test", "bench", "gdb", "sdcard", "flash", "help",
        ] {
            assert!(
                USAGE.contains(&format!("\n  {name} ")),
                "{name} missing from usage"
            );
        }
    }

    #[test]
    fn fuzz_takes_a_target_and_a_budget() {
        assert_eq!(
            parse_ok(&["fuzz", "dtb", "--seconds", "30", "--seed", "0xbeef"]),
            Command::Fuzz(FuzzArgs {
                target: crate::fuzz::Target::Dtb,
                seconds: Some(30),
                iterations: None,
                seed: Some(0xbeef),
                kernel: None,
                core: None,
            })
        );
        assert_eq!(
            parse_ok(&["fuzz", "dtb", "--iterations=7"]),
            Command::Fuzz(FuzzArgs {
                target: crate::fuzz::Target::Dtb,
                seconds: None,
                iterations: Some(7),
                seed: None,
                kernel: None,
                core: None,
            })
        );
        let Command::Fuzz(k) = parse_ok(&["fuzz", "kvm", "--kernel", "k.elf", "--core", "c"])
        else {
            panic!("not fuzz");
        };
        assert_eq!(k.target, crate::fuzz::Target::Kvm);
        assert_eq!(k.core, Some(PathBuf::from("c")));
        assert!(parse_err(&["fuzz", "dtb", "--core", "c"]).contains("fuzz kvm"));
        assert!(parse_err(&["fuzz"]).contains("needs a target"));
        assert!(parse_err(&["fuzz", "png"]).contains("not `png`"));
        assert!(parse_err(&["fuzz", "dtb", "--seed", "xyz"]).contains("hex number"));
        assert!(parse_err(&["fuzz", "dtb", "--seconds", "0"]).contains("positive"));
    }
}
