//! Command-line parsing for `cargo xtask <command> [flags]`, on clap's derive API.
//!
//! The clap structs (`Cli`, `Cmd` and one `*Cli` struct a command) describe the flags, their
//! help text and what clap checks by itself (values, required flags, exclusions); `parse` then
//! turns them into the [`Command`] the rest of xtask runs, checking what clap cannot (a machine
//! the board cannot have, flags that only make sense together). Every error is a `clap::Error`,
//! so a bad command line always reads the same way, suggests the nearest flag when one was
//! misspelt, and exits with status 2; `--help` on any command prints its flags and exits 0.
//!
//! To add a command: add a [`Command`] variant with its argument struct, a `Cmd` variant with
//! its clap struct, an arm in `Cli::into_command`, the dispatch arm in `main.rs`, and a parser
//! test below.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::PossibleValue;
use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use clap_complete::Shell;

use crate::board::{Board, Gic, Machine, Profile, Variant};
pub use crate::fuzz::FuzzArgs;
use crate::kvm::dump::DumpArgs;
use crate::kvm::{CpuSel, KvmArgs, Query, Target};
pub use crate::sdcard::SdcardArgs;

/// Default host-side time limit in seconds for one QEMU run of `test`, `bench` or `dump`.
const DEFAULT_TIMEOUT_SECS: &str = "300";

/// Default GIC version for `qemu`, `gdb` and `dump`.
const DEFAULT_GIC: Gic = Gic::V3;

/// Default CPU count for `qemu`, `gdb` and `dump`.
const DEFAULT_SMP: u32 = 4;

/// The largest `kvm dpcpu --size`.
const MAX_DPCPU_SIZE: u64 = 1 << 20;

/// The name the generated help, usage and completions use for the program.
pub const BIN_NAME: &str = "cargo xtask";

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// No command: print the top-level help.
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
    /// `cargo xtask trace`.
    Trace(crate::kvm::trace::TraceArgs),
    /// `cargo xtask sdcard`.
    Sdcard(SdcardArgs),
    /// `cargo xtask flash`.
    Flash(FlashArgs),
    /// `cargo xtask fuzz`.
    Fuzz(FuzzArgs),
    /// `cargo xtask doctor`.
    Doctor,
    /// `cargo xtask completions SHELL`.
    Completions(CompletionsArgs),
    /// `cargo xtask torture`.
    Torture(TortureArgs),
}

/// The tortures, in the order `cargo xtask torture` runs them by default.
pub const TORTURES: &[&str] = &["sched", "locks", "intr", "softint", "wq", "xcall", "all"];

/// Default operations per torture for `cargo xtask torture`.
pub const TORTURE_DEFAULT_OPS: u64 = 100_000;

/// Default time limit of one torture run, in seconds.
const TORTURE_TIMEOUT_SECS: &str = "1800";

/// The budget of one torture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Operations, all CPUs together.
    Ops(u64),
    /// Minutes of virtual time.
    Minutes(u64),
}

/// A planted bug (`torture.bug=` on the kernel command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlantedBug {
    /// One `cv_signal` wakes nobody.
    Wakeup,
    /// One interrupt at IPL_VM is not ended.
    Eoi,
    /// One `xc_wait` returns before its call is done.
    Xcall,
}

impl PlantedBug {
    /// The value of `torture.bug=` and of `--bug`.
    pub fn name(self) -> &'static str {
        match self {
            PlantedBug::Wakeup => "wakeup",
            PlantedBug::Eoi => "eoi",
            PlantedBug::Xcall => "xcall",
        }
    }
}

/// The planted bugs (`--bug eoi`).
impl ValueEnum for PlantedBug {
    fn value_variants<'a>() -> &'a [Self] {
        &[PlantedBug::Wakeup, PlantedBug::Eoi, PlantedBug::Xcall]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()).help(match self {
            PlantedBug::Wakeup => "one cv_signal wakes nobody (locks catches it)",
            PlantedBug::Eoi => "one interrupt at IPL_VM is not ended (intr catches it)",
            PlantedBug::Xcall => "one xc_wait returns early (xcall catches it)",
        }))
    }
}

/// Flags of `torture`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TortureArgs {
    /// The tortures to run, in order.
    pub names: Vec<&'static str>,
    /// Machine to emulate (virt).
    pub machine: Machine,
    /// The budget of each torture.
    pub budget: Budget,
    /// The seed (`None`: from the clock).
    pub seed: Option<u64>,
    /// Fault injection on.
    pub inject: bool,
    /// A planted bug.
    pub bug: Option<PlantedBug>,
    /// Time limit per torture.
    pub timeout: Duration,
    /// Echo every kernel line.
    pub verbose: bool,
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
    /// The virtio-blk disk image for virt (`--disk FILE`); otherwise a generated one.
    pub disk: Option<PathBuf>,
    /// Monitor commands to type instead of an interactive session (`--cmd`, `--script`).
    pub script: Option<Script>,
    /// `--no-install`: never install a missing QEMU.
    pub no_install: bool,
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
    /// `--no-install`: never install a missing QEMU or mtools.
    pub no_install: bool,
}

/// Flags of `bench`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchArgs {
    /// Where to write the figures as JSON, if anywhere.
    pub json: Option<PathBuf>,
    /// A baseline written by an earlier `--json`, printed beside each figure with the ratio.
    pub compare: Option<PathBuf>,
    /// Time limit per QEMU configuration.
    pub timeout: Duration,
    /// Run only virt GICv3 with this many CPUs instead of the bench matrix.
    pub smp: Option<u32>,
    /// `--notrace`: build the bench image with the trace sites compiled out (the kernel's
    /// `notrace` feature), to compare a disabled site's cost with none.
    pub notrace: bool,
    /// `--no-install`: never install a missing QEMU.
    pub no_install: bool,
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
    /// `--no-install`: never install a missing QEMU or gdb-multiarch.
    pub no_install: bool,
}

/// Flags of `completions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletionsArgs {
    /// The shell to write the script for.
    pub shell: Shell,
    /// The command name the script completes.
    pub name: String,
}

/// Parses the arguments after `cargo xtask` (without the program name). Help requests come
/// back as a `clap::Error` of kind `DisplayHelp`, whose `exit` prints them and exits 0; every
/// other error exits 2.
pub fn parse<I, S>(args: I) -> Result<Command, clap::Error>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let argv = std::iter::once(OsString::from("cargo-xtask")).chain(live_defaults(args));
    Cli::try_parse_from(argv)?.into_command()
}

/// The clap description of the whole command line, for help and completions.
pub fn command() -> clap::Command {
    Cli::command()
}

/// The completion script `cargo xtask completions` prints.
pub fn completions(args: &CompletionsArgs) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command(), args.name.clone(), &mut script);
    script
}

/// `kvm --live` takes an optional address: a bare `--live` followed by anything that is not an
/// address (`HOST:PORT`) means the default gdbstub, so `kvm --live maxcpu` keeps working
/// (clap would take `maxcpu` as the address).
fn live_defaults(args: Vec<OsString>) -> Vec<OsString> {
    if !matches!(args.first().and_then(|a| a.to_str()), Some("kvm" | "trace")) {
        return args;
    }
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.into_iter().peekable();
    while let Some(arg) = iter.next() {
        let next_is_address = iter
            .peek()
            .and_then(|a| a.to_str())
            .is_some_and(|a| a.contains(':') && !a.starts_with('-'));
        if arg == "--live" && !next_is_address {
            out.push(OsString::from(format!(
                "--live={}",
                crate::kvm::DEFAULT_LIVE
            )));
        } else {
            out.push(arg);
        }
    }
    out
}

/// Build, boot, test and inspect the kernel.
///
/// Start with `cargo xtask qemu` (boots the kernel; installs QEMU when it is missing) and
/// `cargo xtask test` (the host tests and the kernel tests on every machine configuration).
#[derive(Debug, Parser)]
#[command(
    name = "cargo-xtask",
    bin_name = BIN_NAME,
    disable_version_flag = true,
    after_help = "Run `cargo xtask help COMMAND` or `cargo xtask COMMAND --help` for a command's flags."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build a kernel image and print its path (rpi4: the raw kernel8.img)
    Build(BuildCli),
    /// Build the kernel and boot it in QEMU interactively (quit with Ctrl-A x)
    Qemu(QemuCli),
    /// Run the host unit tests, then the in-kernel tests on every QEMU configuration
    Test(TestCli),
    /// Run the benchmark image on every QEMU configuration and print metric= lines
    Bench(BenchCli),
    /// Start QEMU halted and attach gdb-multiarch to it (QEMU stops when gdb exits)
    Gdb(GdbCli),
    /// Boot a kernel, wait for a console line, write an ELF core of the guest (QMP)
    Dump(DumpCli),
    /// Read per-CPU data of a kernel with the kvm reader (kvm_getpcpu(3))
    Kvm(KvmCli),
    /// Read the kernel's event-trace rings with the kvm reader and convert them
    ///
    /// From a core, a live guest, or a workload it boots and runs traced (--run). Without
    /// --out, --text or --svg it prints the events per CPU and kind. A panic dump carries the
    /// rings: `cargo xtask dump --dump-on-panic --append trace=all`, then `trace --core`.
    Trace(TraceCli),
    /// Build a flashable Raspberry Pi 4 SD card image
    ///
    /// MBR, one bootable FAT32 partition with config.txt, kernel8.img, the Pi firmware and
    /// bcm2711-rpi-4-b.dtb; fetches the firmware and device tree from Debian into
    /// target/rpi4/firmware/ the first time.
    Sdcard(SdcardCli),
    /// Write the SD card image to a card, after showing its size and model and asking
    ///
    /// Refuses mounted devices and ones that look like a system disk.
    Flash(FlashCli),
    /// Fuzz the device-tree reader (dtb) or the kvm reader (kvm)
    ///
    /// Runs the project's structure-aware fuzzer for as long as asked; prints its seed, and on
    /// a failure how to replay it.
    Fuzz(FuzzCli),
    /// Run the torture suites of the test image under -icount, one QEMU run per torture
    ///
    /// Each run prints its seed first; the same seed, image and CPU count print the same log,
    /// bit for bit, so `--replay SEED` repeats a failure exactly. Default: every torture (sched,
    /// locks, intr, softint, wq, xcall, all) at 8 CPUs, 100000 operations each, about a minute.
    Torture(TortureCli),
    /// Show which host tools are present, missing or too old, and what installs them
    Doctor,
    /// Print a shell completion script
    ///
    /// bash: `source <(cargo xtask completions bash)` completes `xtask`, so add
    /// `alias xtask='cargo xtask'` too (or pass `--name` to complete another command name).
    Completions(CompletionsCli),
}

/// The board names, for clap's value checks, help and suggestions.
impl ValueEnum for Board {
    fn value_variants<'a>() -> &'a [Self] {
        Board::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()))
    }
}

/// The GIC versions as numbers (`--gic 2`).
impl ValueEnum for Gic {
    fn value_variants<'a>() -> &'a [Self] {
        &[Gic::V2, Gic::V3]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(match self {
            Gic::V2 => "2",
            Gic::V3 => "3",
        }))
    }
}

/// The image variants (`--variant ktest`).
impl ValueEnum for Variant {
    fn value_variants<'a>() -> &'a [Self] {
        Variant::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()))
    }
}

/// The fuzz targets (`cargo xtask fuzz dtb`).
impl ValueEnum for crate::fuzz::Target {
    fn value_variants<'a>() -> &'a [Self] {
        &[crate::fuzz::Target::Dtb, crate::fuzz::Target::Kvm]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            crate::fuzz::Target::Dtb => PossibleValue::new("dtb").help("the device-tree reader"),
            crate::fuzz::Target::Kvm => PossibleValue::new("kvm").help("the kvm reader"),
        })
    }
}

/// Board, GIC and CPU count, shared by `qemu`, `gdb` and `dump`.
#[derive(Debug, Args)]
struct MachineCli {
    /// Board to emulate (rpi4 is QEMU's raspi4b)
    #[arg(long, value_name = "BOARD", default_value_t = Board::Virt)]
    board: Board,
    /// Interrupt controller version [default: 3; rpi4: 2, fixed]
    #[arg(long, value_name = "VERSION")]
    gic: Option<Gic>,
    /// Number of CPUs [default: 4; rpi4: 4, fixed]
    #[arg(long, value_name = "N", value_parser = positive)]
    smp: Option<u32>,
    /// rpi4: the GIC-400 as on the board (Security Extensions, 5 priority bits, the kernel
    /// non-secure)
    #[arg(long)]
    gic_security: bool,
}

impl MachineCli {
    /// The machine, with the board's fixed GIC and CPU count (rpi4) or the defaults, checked.
    fn machine(&self) -> Result<Machine, String> {
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
        machine.validate().map_err(|e| e.to_string())?;
        Ok(machine)
    }
}

/// `--no-install`, shared by the commands that need QEMU (and perhaps mtools or gdb-multiarch).
#[derive(Debug, Args)]
struct InstallCli {
    /// Never install a missing or too old tool (QEMU, mtools, gdb-multiarch): say what is
    /// missing and stop [also: XTASK_NO_INSTALL=1]
    #[arg(long)]
    no_install: bool,
}

#[derive(Debug, Args)]
struct BuildCli {
    /// Board to build for
    #[arg(long, value_name = "BOARD", default_value_t = Board::Virt)]
    board: Board,
    /// Build with the release profile (default: debug)
    #[arg(long)]
    release: bool,
    /// Which image: the kernel, the in-kernel test image or the benchmark image
    #[arg(long, value_name = "NAME", default_value_t = Variant::Default)]
    variant: Variant,
}

#[derive(Debug, Args)]
struct QemuCli {
    #[command(flatten)]
    machine: MachineCli,
    /// Deterministic virtual time (-icount shift=0,...)
    #[arg(long)]
    icount: bool,
    /// Wait for a debugger on :1234 (-s -S)
    #[arg(long, conflicts_with = "gdbstub")]
    gdb: bool,
    /// Run, with a gdbstub on :1234 (-s) for `kvm --live`
    #[arg(long)]
    gdbstub: bool,
    /// Build with the release profile
    #[arg(long)]
    release: bool,
    /// Boot the in-kernel test image (ktest) instead
    #[arg(long)]
    test: bool,
    /// Kernel command line (e.g. ktest.filter=NAME or kvm.selftest=1 with --test)
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    append: Option<String>,
    /// rpi4: the device tree to pass (default: the one `sdcard` cached, else none: built-in
    /// defaults)
    #[arg(long, value_name = "FILE")]
    dtb: Option<PathBuf>,
    /// virt: the raw disk image for the virtio-blk device (default: a generated 8 MiB one,
    /// target/disks/)
    #[arg(long, value_name = "FILE")]
    disk: Option<PathBuf>,
    /// Type these monitor commands at the `kdb> ` prompt, one after the other, then
    /// `poweroff`; exit with QEMU's status
    #[arg(long, value_name = "'CMD; CMD'", conflicts_with_all = ["script", "test", "gdb"])]
    cmd: Option<String>,
    /// The same with the lines of FILE
    #[arg(long, value_name = "FILE", conflicts_with_all = ["test", "gdb"])]
    script: Option<PathBuf>,
    #[command(flatten)]
    install: InstallCli,
}

#[derive(Debug, Args)]
struct TestCli {
    /// Show the whole kernel output
    #[arg(short, long)]
    verbose: bool,
    /// Per-configuration time limit in seconds
    #[arg(long, value_name = "SECS", default_value = DEFAULT_TIMEOUT_SECS, value_parser = seconds)]
    timeout: Duration,
    /// Run only kernel tests matching STR (ktest.filter=STR)
    #[arg(long, value_name = "STR", value_parser = kernel_filter)]
    filter: Option<String>,
    /// Run only the monitor sessions (default image, every command typed at the prompt and
    /// its output checked)
    #[arg(long)]
    monitor_only: bool,
    #[command(flatten)]
    install: InstallCli,
}

#[derive(Debug, Args)]
struct BenchCli {
    /// Also write the figures to FILE as JSON
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Print each figure beside the one in BASE.json (from an earlier --json) with the ratio
    #[arg(long, value_name = "BASE.json")]
    compare: Option<PathBuf>,
    /// Per-configuration time limit in seconds
    #[arg(long, value_name = "SECS", default_value = DEFAULT_TIMEOUT_SECS, value_parser = seconds)]
    timeout: Duration,
    /// Run only virt GICv3 with N CPUs instead of the matrix
    #[arg(long, value_name = "N", value_parser = positive)]
    smp: Option<u32>,
    /// Compile the trace sites out (to compare with the default build, where they are nops)
    #[arg(long)]
    notrace: bool,
    #[command(flatten)]
    install: InstallCli,
}

#[derive(Debug, Args)]
struct GdbCli {
    #[command(flatten)]
    machine: MachineCli,
    /// Build with the release profile
    #[arg(long)]
    release: bool,
    /// Debug the in-kernel test image (ktest)
    #[arg(long)]
    test: bool,
    #[command(flatten)]
    install: InstallCli,
}

#[derive(Debug, Args)]
struct DumpCli {
    #[command(flatten)]
    machine: MachineCli,
    /// Build with the release profile
    #[arg(long)]
    release: bool,
    /// Boot the in-kernel test image (ktest)
    #[arg(long)]
    test: bool,
    /// Kernel command line (e.g. kvm.selftest=1 with --test)
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    append: Option<String>,
    /// Dump after the first console line containing TEXT [default: the monitor's first line;
    /// `kvm-selftest ready` for the self-test; the hold line with --dump-on-panic]
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    wait_for: Option<String>,
    /// Crash the kernel (crash=panic unless --append sets crash=), keep it halted
    /// (panic.hold=1) and dump the crashed machine
    #[arg(long)]
    dump_on_panic: bool,
    /// The core [default: target/dumps/dump.core; the kernel ELF is copied beside it as
    /// FILE.elf]
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Time limit for the boot in seconds
    #[arg(long, value_name = "SECS", default_value = DEFAULT_TIMEOUT_SECS, value_parser = seconds)]
    timeout: Duration,
    #[command(flatten)]
    install: InstallCli,
}

#[derive(Debug, Args)]
#[command(after_help = "Flags may stand before or after the query: `cargo xtask kvm pcpu --json`.")]
struct KvmCli {
    /// An ELF core [default: target/dumps/dump.core]
    #[arg(long, value_name = "FILE", global = true, conflicts_with = "live")]
    core: Option<PathBuf>,
    /// A running QEMU's gdbstub [default: 127.0.0.1:1234; start QEMU with
    /// `cargo xtask qemu --gdbstub`]
    #[arg(long, value_name = "ADDR", global = true, num_args = 0..=1,
          default_missing_value = crate::kvm::DEFAULT_LIVE)]
    live: Option<String>,
    /// The kernel ELF [default: FILE.elf beside the core; for --live the default debug image]
    #[arg(long, value_name = "ELF", global = true)]
    kernel: Option<PathBuf>,
    /// Print JSON instead of a table
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    query: KvmQuery,
}

#[derive(Debug, Args)]
struct TraceCli {
    /// An ELF core [default: target/dumps/dump.core]
    #[arg(long, value_name = "FILE", conflicts_with_all = ["live", "run"])]
    core: Option<PathBuf>,
    /// A running QEMU's gdbstub [default: 127.0.0.1:1234; boot with --append trace=all to
    /// trace from the start]
    #[arg(long, value_name = "ADDR", num_args = 0..=1,
          default_missing_value = crate::kvm::DEFAULT_LIVE, conflicts_with = "run")]
    live: Option<String>,
    /// Boot the test image (virt GICv3, --smp N), run this workload traced, read it live
    #[arg(long, value_name = "WORKLOAD", value_parser = clap::builder::PossibleValuesParser::new(crate::kvm::trace::WORKLOADS))]
    run: Option<String>,
    /// CPUs for --run
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = positive)]
    smp: u32,
    /// The kernel ELF [default: FILE.elf beside the core; for --live the default debug image]
    #[arg(long, value_name = "ELF")]
    kernel: Option<PathBuf>,
    /// Write Chrome/Perfetto trace-event JSON (opens in ui.perfetto.dev)
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Print one line per record in time order (like trace-cmd report)
    #[arg(long)]
    text: bool,
    /// Draw a per-CPU timeline (threads; irq, softint, work and xcall slices) as SVG
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Time limit for --run in seconds
    #[arg(long, value_name = "SECS", default_value = DEFAULT_TIMEOUT_SECS, value_parser = seconds)]
    timeout: Duration,
}

#[derive(Debug, Subcommand)]
enum KvmQuery {
    /// kvm_getmaxcpu: the number of cpu_info slots
    Maxcpu,
    /// kvm_getpcpu: one row per active CPU, or CPU alone
    Pcpu {
        /// The CPU (default: every active one)
        cpu: Option<u32>,
    },
    /// A DPCPU variable on one CPU or all
    Dpcpu {
        /// The variable (with or without `dpcpu_entry_`)
        symbol: String,
        /// The CPU [default: 0]
        #[arg(long, value_name = "N", conflicts_with = "all")]
        cpu: Option<u32>,
        /// Every active CPU
        #[arg(long)]
        all: bool,
        /// Bytes to read [default: the symbol's size, else 8]
        #[arg(long, value_name = "N",
              value_parser = clap::value_parser!(u64).range(1..=MAX_DPCPU_SIZE))]
        size: Option<u64>,
    },
    /// kvm_nlist: symbol addresses, DPCPU symbols moved to CPU N
    Nlist {
        /// The symbols
        #[arg(required = true)]
        symbols: Vec<String>,
        /// The CPU for DPCPU symbols [default: 0]
        #[arg(long, value_name = "N")]
        cpu: Option<u32>,
    },
}

#[derive(Debug, Args)]
struct SdcardCli {
    /// Where to write the image [default: target/rpi4/sdcard.img]
    #[arg(long, value_name = "FILE", conflicts_with = "boot_dir")]
    out: Option<PathBuf>,
    /// Write just the files into DIR (a mounted FAT partition)
    #[arg(long, value_name = "DIR")]
    boot_dir: Option<PathBuf>,
    /// Take start4.elf, fixup4.dat, the licence and the .dtb from DIR instead of fetching them
    #[arg(long, value_name = "DIR")]
    firmware: Option<PathBuf>,
    /// Put the in-kernel test image on the card
    #[arg(long)]
    test: bool,
    /// Add uart_2ndstage=1 to config.txt: the firmware prints what it loaded where on the
    /// serial console
    #[arg(long)]
    firmware_log: bool,
}

#[derive(Debug, Args)]
struct FlashCli {
    /// The card's whole-disk device (/dev/sdX, /dev/mmcblkN)
    #[arg(long, value_name = "DEVICE", required = true)]
    device: PathBuf,
    /// The image to write [default: build it as `sdcard` does]
    #[arg(long, value_name = "FILE")]
    image: Option<PathBuf>,
    /// As for `sdcard`, when building the image
    #[arg(long, value_name = "DIR")]
    firmware: Option<PathBuf>,
    /// As for `sdcard`, when building the image
    #[arg(long)]
    firmware_log: bool,
}

#[derive(Debug, Args)]
struct FuzzCli {
    /// What to fuzz
    target: crate::fuzz::Target,
    /// Run for N seconds [default: 60]
    #[arg(long, value_name = "N", value_parser = positive_u64)]
    seconds: Option<u64>,
    /// Run exactly N inputs
    #[arg(long, value_name = "N")]
    iterations: Option<u64>,
    /// The seed, in hex [default: from the clock]
    #[arg(long, value_name = "HEX", value_parser = hex_seed)]
    seed: Option<u64>,
    /// kvm: add this kernel (with --core) to the synthetic ones
    #[arg(long, value_name = "ELF")]
    kernel: Option<PathBuf>,
    /// kvm: add this core (with --kernel) to the synthetic ones
    #[arg(long, value_name = "FILE")]
    core: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct TortureCli {
    /// The torture [default: every one of them, in order]
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(TORTURES))]
    name: Option<String>,
    /// Number of CPUs
    #[arg(long, value_name = "N", default_value = "8", value_parser = positive)]
    smp: u32,
    /// Interrupt controller version
    #[arg(long, default_value = "3")]
    gic: Gic,
    /// Operations per torture, all CPUs together [default: 100000]
    #[arg(long, value_name = "N", value_parser = positive_u64, conflicts_with = "minutes")]
    ops: Option<u64>,
    /// Instead of --ops: M minutes of virtual time per torture
    #[arg(long, value_name = "M", value_parser = positive_u64)]
    minutes: Option<u64>,
    /// The seed, in hex [default: from the clock]
    #[arg(long, value_name = "HEX", value_parser = hex_seed, conflicts_with = "replay")]
    seed: Option<u64>,
    /// Run again with the seed a failed run printed (as --seed)
    #[arg(long, value_name = "HEX", value_parser = hex_seed)]
    replay: Option<u64>,
    /// No fault injection (delays, preemptions, spurious IPIs, allocation failures)
    #[arg(long)]
    no_inject: bool,
    /// Plant a bug: the run must fail
    #[arg(long, value_name = "KIND")]
    bug: Option<PlantedBug>,
    /// Time limit per torture in seconds
    #[arg(long, value_name = "SECS", default_value = TORTURE_TIMEOUT_SECS, value_parser = seconds)]
    timeout: Duration,
    /// Show every kernel line
    #[arg(short, long)]
    verbose: bool,
}

#[derive(Debug, Args)]
struct CompletionsCli {
    /// The shell
    shell: Shell,
    /// The command name to complete
    #[arg(long, value_name = "NAME", default_value = "xtask")]
    name: String,
}

impl Cli {
    /// The command to run, after the checks clap cannot make.
    fn into_command(self) -> Result<Command, clap::Error> {
        let Some(cmd) = self.command else {
            return Ok(Command::Help);
        };
        let name = cmd.name();
        let fail = |message: String| command_error(name, message);
        let profile = |release: bool| {
            if release {
                Profile::Release
            } else {
                Profile::Debug
            }
        };
        Ok(match cmd {
            Cmd::Build(b) => Command::Build(BuildArgs {
                board: b.board,
                profile: profile(b.release),
                variant: b.variant,
            }),
            Cmd::Qemu(q) => Command::Qemu(QemuArgs {
                machine: q.machine.machine().map_err(fail)?,
                icount: q.icount,
                gdb: q.gdb,
                gdbstub: q.gdbstub,
                profile: profile(q.release),
                test: q.test,
                append: q.append,
                dtb: q.dtb,
                disk: q.disk,
                script: match (q.cmd, q.script) {
                    (Some(commands), _) => Some(Script::Commands(commands)),
                    (None, Some(file)) => Some(Script::File(file)),
                    (None, None) => None,
                },
                no_install: q.install.no_install,
            }),
            Cmd::Test(t) => Command::Test(TestArgs {
                verbose: t.verbose,
                timeout: t.timeout,
                filter: t.filter,
                monitor_only: t.monitor_only,
                no_install: t.install.no_install,
            }),
            Cmd::Bench(b) => Command::Bench(BenchArgs {
                json: b.json,
                compare: b.compare,
                timeout: b.timeout,
                smp: b.smp,
                notrace: b.notrace,
                no_install: b.install.no_install,
            }),
            Cmd::Gdb(g) => Command::Gdb(GdbArgs {
                machine: g.machine.machine().map_err(fail)?,
                profile: profile(g.release),
                test: g.test,
                no_install: g.install.no_install,
            }),
            Cmd::Dump(d) => Command::Dump(DumpArgs {
                machine: d.machine.machine().map_err(fail)?,
                profile: profile(d.release),
                test: d.test,
                append: d.append,
                wait_for: d.wait_for,
                on_panic: d.dump_on_panic,
                out: d.out,
                timeout: d.timeout,
                no_install: d.install.no_install,
            }),
            Cmd::Kvm(k) => Command::Kvm(k.into_args()),
            Cmd::Trace(t) => {
                if t.smp as usize > kernel::cpu::MAXCPUS {
                    return Err(fail(format!(
                        "--smp {} is above MAXCPUS ({})",
                        t.smp,
                        kernel::cpu::MAXCPUS
                    )));
                }
                Command::Trace(crate::kvm::trace::TraceArgs {
                    target: match (t.core, t.live) {
                        (Some(core), _) => Some(Target::Core(core)),
                        (None, Some(addr)) => Some(Target::Live(addr)),
                        (None, None) => None,
                    },
                    kernel: t.kernel,
                    out: t.out,
                    text: t.text,
                    svg: t.svg,
                    run: t.run,
                    smp: t.smp,
                    timeout: t.timeout,
                })
            }
            Cmd::Sdcard(s) => Command::Sdcard(SdcardArgs {
                out: s.out,
                boot_dir: s.boot_dir,
                firmware: s.firmware,
                test: s.test,
                firmware_log: s.firmware_log,
            }),
            Cmd::Flash(f) => {
                if f.firmware_log && f.image.is_some() {
                    return Err(fail(
                        "--firmware-log changes the image `flash` builds; with --image, build \
                         that image with `cargo xtask sdcard --firmware-log`"
                            .into(),
                    ));
                }
                Command::Flash(FlashArgs {
                    device: f.device,
                    image: f.image,
                    firmware: f.firmware,
                    firmware_log: f.firmware_log,
                })
            }
            Cmd::Fuzz(f) => {
                if f.target == crate::fuzz::Target::Dtb && (f.kernel.is_some() || f.core.is_some())
                {
                    return Err(fail(
                        "--kernel and --core are for `cargo xtask fuzz kvm`".into(),
                    ));
                }
                Command::Fuzz(FuzzArgs {
                    target: f.target,
                    seconds: f.seconds,
                    iterations: f.iterations,
                    seed: f.seed,
                    kernel: f.kernel,
                    core: f.core,
                })
            }
            Cmd::Torture(t) => {
                let names = match t.name {
                    Some(n) => TORTURES.iter().copied().filter(|k| *k == n).collect(),
                    None => TORTURES.to_vec(),
                };
                let machine = Machine::virt(t.gic, t.smp);
                machine.validate().map_err(|e| fail(e.to_string()))?;
                Command::Torture(TortureArgs {
                    names,
                    machine,
                    budget: match (t.ops, t.minutes) {
                        (_, Some(m)) => Budget::Minutes(m),
                        (Some(n), None) => Budget::Ops(n),
                        (None, None) => Budget::Ops(TORTURE_DEFAULT_OPS),
                    },
                    seed: t.seed.or(t.replay),
                    inject: !t.no_inject,
                    bug: t.bug,
                    timeout: t.timeout,
                    verbose: t.verbose,
                })
            }
            Cmd::Doctor => Command::Doctor,
            Cmd::Completions(c) => Command::Completions(CompletionsArgs {
                shell: c.shell,
                name: c.name,
            }),
        })
    }
}

impl Cmd {
    /// The command's name on the command line.
    fn name(&self) -> &'static str {
        match self {
            Cmd::Build(_) => "build",
            Cmd::Qemu(_) => "qemu",
            Cmd::Test(_) => "test",
            Cmd::Bench(_) => "bench",
            Cmd::Gdb(_) => "gdb",
            Cmd::Dump(_) => "dump",
            Cmd::Kvm(_) => "kvm",
            Cmd::Trace(_) => "trace",
            Cmd::Sdcard(_) => "sdcard",
            Cmd::Flash(_) => "flash",
            Cmd::Fuzz(_) => "fuzz",
            Cmd::Torture(_) => "torture",
            Cmd::Doctor => "doctor",
            Cmd::Completions(_) => "completions",
        }
    }
}

impl KvmCli {
    fn into_args(self) -> KvmArgs {
        let target = match (self.core, self.live) {
            (Some(core), _) => Some(Target::Core(core)),
            (None, Some(addr)) => Some(Target::Live(addr)),
            (None, None) => None,
        };
        let query = match self.query {
            KvmQuery::Maxcpu => Query::MaxCpu,
            KvmQuery::Pcpu { cpu } => Query::Pcpu(cpu),
            KvmQuery::Dpcpu {
                symbol,
                cpu,
                all,
                size,
            } => Query::Dpcpu {
                symbol,
                cpus: if all {
                    CpuSel::All
                } else {
                    CpuSel::One(cpu.unwrap_or(0))
                },
                // At most MAX_DPCPU_SIZE (clap checked), so it fits.
                size: size.map(|n| n as usize),
            },
            KvmQuery::Nlist { symbols, cpu } => Query::Nlist { symbols, cpu },
        };
        KvmArgs {
            target,
            kernel: self.kernel,
            json: self.json,
            query,
        }
    }
}

/// A usage error for `cargo xtask NAME`, formatted (and exiting 2) like clap's own.
fn command_error(name: &str, message: String) -> clap::Error {
    let mut cli = Cli::command();
    cli.build();
    match cli.find_subcommand_mut(name) {
        Some(sub) => sub.error(ErrorKind::ArgumentConflict, message),
        None => cli.error(ErrorKind::ArgumentConflict, message),
    }
}

/// A positive whole number (`--smp`).
fn positive(value: &str) -> Result<u32, String> {
    match value.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("needs a positive whole number, not `{value}`")),
    }
}

/// A positive whole number, 64 bits (`--seconds`).
fn positive_u64(value: &str) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("needs a positive whole number, not `{value}`")),
    }
}

/// A `--timeout` in whole seconds.
fn seconds(value: &str) -> Result<Duration, String> {
    positive(value).map(|n| Duration::from_secs(n.into()))
}

/// A `--filter` for the kernel command line: not empty, no whitespace.
fn kernel_filter(value: &str) -> Result<String, String> {
    if value.is_empty() || value.chars().any(char::is_whitespace) {
        return Err(format!(
            "`{value}`: the filter must be non-empty and contain no whitespace (it is passed \
             on the kernel command line)"
        ));
    }
    Ok(value.to_owned())
}

/// A hex seed, with or without `0x`.
fn hex_seed(value: &str) -> Result<u64, String> {
    u64::from_str_radix(value.trim_start_matches("0x"), 16)
        .map_err(|_| format!("needs a hex number, not `{value}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

    fn parse_ok(args: &[&str]) -> Command {
        match parse(args.iter().copied()) {
            Ok(c) => c,
            Err(e) => panic!("{args:?} should parse, got: {e}"),
        }
    }

    fn parse_err(args: &[&str]) -> clap::Error {
        match parse(args.iter().copied()) {
            Ok(c) => panic!("{args:?} should fail, got {c:?}"),
            Err(e) => e,
        }
    }

    /// The error's text, as the user sees it (without colour).
    fn err_text(args: &[&str]) -> String {
        let e = parse_err(args);
        assert_eq!(e.exit_code(), 2, "{args:?}: usage errors exit 2:\n{e}");
        e.render().to_string()
    }

    fn qemu_default() -> QemuArgs {
        QemuArgs {
            machine: Machine::virt(Gic::V3, 4),
            icount: false,
            gdb: false,
            gdbstub: false,
            profile: Profile::Debug,
            test: false,
            append: None,
            dtb: None,
            disk: None,
            script: None,
            no_install: false,
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn no_arguments_prints_help() {
        assert_eq!(parse_ok(&[]), Command::Help);
    }

    /// Every command, `help COMMAND` and `COMMAND --help` print help and exit 0.
    #[test]
    fn every_command_has_help() {
        let mut cli = command();
        cli.build();
        let names: Vec<String> = cli
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .collect();
        for name in [
            "build",
            "qemu",
            "test",
            "bench",
            "gdb",
            "dump",
            "kvm",
            "sdcard",
            "flash",
            "fuzz",
            "torture",
            "doctor",
            "completions",
            "help",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} missing: {names:?}");
        }
        for name in names.iter().filter(|n| *n != "help") {
            for args in [vec![name.as_str(), "--help"], vec!["help", name.as_str()]] {
                let e = parse_err(&args);
                assert_eq!(e.kind(), ErrorKind::DisplayHelp, "{args:?}");
                assert_eq!(e.exit_code(), 0, "{args:?}");
                let text = e.render().to_string();
                assert!(
                    text.contains(&format!("Usage: cargo xtask {name}")),
                    "{args:?}:\n{text}"
                );
            }
        }
        for args in [&["--help"][..], &["help"], &["-h"]] {
            let e = parse_err(args);
            assert_eq!(e.exit_code(), 0);
            assert!(e.render().to_string().contains("Commands:"));
        }
        // The kvm queries have their own help.
        let e = parse_err(&["kvm", "dpcpu", "--help"]);
        assert_eq!(e.exit_code(), 0);
        assert!(e.render().to_string().contains("--all"));
        assert_eq!(parse_err(&["help", "kvm", "nlist"]).exit_code(), 0);
    }

    #[test]
    fn misspelt_flags_exit_2_with_a_suggestion() {
        let text = err_text(&["qemu", "--relase"]);
        assert!(text.contains("unexpected argument '--relase'"), "{text}");
        assert!(
            text.contains("similar argument exists: '--release'"),
            "{text}"
        );
        let text = err_text(&["test", "--filtr", "x"]);
        assert!(text.contains("'--filter'"), "{text}");
        let text = err_text(&["bench", "--jsn", "a.json"]);
        assert!(text.contains("'--json'"), "{text}");
        let text = err_text(&["tset"]);
        assert!(text.contains("similar subcommand exists: 'test'"), "{text}");
        let text = err_text(&["qemu", "--board", "rpi3"]);
        assert!(text.contains("possible values: virt, rpi4"), "{text}");
        let text = err_text(&["kvm", "pcup"]);
        assert!(text.contains("'pcpu'"), "{text}");
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
            parse_ok(&["build", "--release", "--variant", "ktest", "--board=rpi4"]),
            Command::Build(BuildArgs {
                board: Board::Rpi4,
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
        assert!(err_text(&["build", "--variant", "fast"]).contains("default, ktest, bench"));
        assert!(err_text(&["build", "extra"]).contains("unexpected argument 'extra'"));
        assert!(err_text(&["build", "--variant"]).contains("a value is required"));
        assert!(err_text(&["build", "--release=yes"]).contains("unexpected value"));
    }

    #[test]
    fn qemu_defaults() {
        assert_eq!(parse_ok(&["qemu"]), Command::Qemu(qemu_default()));
        assert_eq!(
            parse_ok(&["qemu", "--board", "rpi4", "--dtb", "pi.dtb"]),
            Command::Qemu(QemuArgs {
                machine: Machine::rpi4(),
                dtb: Some(PathBuf::from("pi.dtb")),
                ..qemu_default()
            })
        );
        match parse_ok(&["qemu", "--board", "rpi4", "--gic-security"]) {
            Command::Qemu(args) => assert_eq!(args.machine, Machine::rpi4_gic_security()),
            other => panic!("{other:?}"),
        }
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
                "--test",
                "--append",
                "ktest.filter=spl",
                "--no-install",
            ]),
            Command::Qemu(QemuArgs {
                machine: Machine::virt(Gic::V2, 8),
                icount: true,
                gdb: true,
                profile: Profile::Release,
                test: true,
                append: Some("ktest.filter=spl".into()),
                no_install: true,
                ..qemu_default()
            })
        );
        let Command::Qemu(q) = parse_ok(&["qemu", "--gdbstub"]) else {
            panic!("not qemu")
        };
        assert!(q.gdbstub && !q.gdb);
        assert!(err_text(&["qemu", "--gdb", "--gdbstub"]).contains("cannot be used with"));
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
        for bad in [
            &["qemu", "--cmd", "ps", "--script", "f"][..],
            &["qemu", "--cmd", "ps", "--test"],
            &["qemu", "--script", "f", "--gdb"],
        ] {
            assert!(err_text(bad).contains("cannot be used with"), "{bad:?}");
        }
    }

    #[test]
    fn qemu_rejects_bad_machines() {
        assert!(err_text(&["qemu", "--gic", "4"]).contains("invalid value '4'"));
        assert!(err_text(&["qemu", "--smp", "0"]).contains("positive whole number"));
        assert!(err_text(&["qemu", "--smp", "four"]).contains("not `four`"));
        assert!(err_text(&["qemu", "--gic", "2", "--smp", "16"]).contains("out of range"));
        assert!(err_text(&["qemu", "--board", "pc"]).contains("invalid value 'pc'"));
        let text = err_text(&["qemu", "--board", "rpi4", "--smp", "2"]);
        assert!(text.contains("4 CPUs"), "{text}");
        assert!(text.contains("Usage: cargo xtask qemu"), "{text}");
        assert!(err_text(&["qemu", "--gic-security"]).contains("--board rpi4"));
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
                no_install: false,
            })
        );
        assert_eq!(
            parse_ok(&[
                "test",
                "--verbose",
                "--timeout",
                "60",
                "--filter",
                "sched::",
                "--no-install",
            ]),
            Command::Test(TestArgs {
                verbose: true,
                timeout: Duration::from_secs(60),
                filter: Some("sched::".into()),
                monitor_only: false,
                no_install: true,
            })
        );
        match parse_ok(&["test", "--monitor-only"]) {
            Command::Test(args) => assert!(args.monitor_only),
            other => panic!("{other:?}"),
        }
        let Command::Test(t) = parse_ok(&["test", "-v"]) else {
            panic!("not test")
        };
        assert!(t.verbose);
        assert!(err_text(&["test", "--filter", "a b"]).contains("no whitespace"));
        assert!(err_text(&["test", "--timeout", "0"]).contains("positive"));
        assert!(err_text(&["test", "--board", "virt"]).contains("unexpected argument '--board'"));
    }

    #[test]
    fn bench_flags() {
        assert_eq!(
            parse_ok(&["bench", "--json", "out.json", "--timeout=10"]),
            Command::Bench(BenchArgs {
                json: Some(PathBuf::from("out.json")),
                compare: None,
                timeout: Duration::from_secs(10),
                smp: None,
                notrace: false,
                no_install: false,
            })
        );
        assert_eq!(
            parse_ok(&["bench", "--smp", "32"]),
            Command::Bench(BenchArgs {
                json: None,
                compare: None,
                timeout: DEFAULT_TIMEOUT,
                smp: Some(32),
                notrace: false,
                no_install: false,
            })
        );
        assert_eq!(
            parse_ok(&["bench", "--smp", "2", "--notrace"]),
            Command::Bench(BenchArgs {
                json: None,
                compare: None,
                timeout: DEFAULT_TIMEOUT,
                smp: Some(2),
                notrace: true,
                no_install: false,
            })
        );
        assert!(err_text(&["bench", "--smp", "0"]).contains("positive whole number"));
        assert_eq!(
            parse_ok(&["bench", "--compare", "base.json", "--no-install"]),
            Command::Bench(BenchArgs {
                json: None,
                compare: Some(PathBuf::from("base.json")),
                timeout: DEFAULT_TIMEOUT,
                smp: None,
                notrace: false,
                no_install: true,
            })
        );
        assert!(err_text(&["bench", "--json", "--timeout", "5"]).contains("a value is required"));
    }

    #[test]
    fn gdb_flags() {
        assert_eq!(
            parse_ok(&["gdb", "--smp", "2", "--gic", "2"]),
            Command::Gdb(GdbArgs {
                machine: Machine::virt(Gic::V2, 2),
                profile: Profile::Debug,
                test: false,
                no_install: false,
            })
        );
        assert_eq!(
            parse_ok(&[
                "gdb",
                "--board",
                "rpi4",
                "--release",
                "--test",
                "--no-install"
            ]),
            Command::Gdb(GdbArgs {
                machine: Machine::rpi4(),
                profile: Profile::Release,
                test: true,
                no_install: true,
            })
        );
        assert!(err_text(&["gdb", "--icount"]).contains("unexpected argument '--icount'"));
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
        assert!(d.on_panic);
        assert_eq!(d.timeout, DEFAULT_TIMEOUT);
        assert_eq!(
            crate::kvm::dump::command_line(&d).as_deref(),
            Some("crash=panic panic.hold=1")
        );
        let Command::Dump(d) = parse_ok(&[
            "dump",
            "--out",
            "x.core",
            "--wait-for",
            "idle",
            "--timeout",
            "9",
            "--release",
            "--board",
            "rpi4",
            "--no-install",
        ]) else {
            panic!("not a dump")
        };
        assert_eq!(d.out, Some(PathBuf::from("x.core")));
        assert_eq!(d.wait_for.as_deref(), Some("idle"));
        assert_eq!(d.timeout, Duration::from_secs(9));
        assert_eq!(d.profile, Profile::Release);
        assert_eq!(d.machine, Machine::rpi4());
        assert!(d.no_install);
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
        let k = kvm(&["maxcpu", "--live"]);
        assert_eq!(k.target, Some(Target::Live("127.0.0.1:1234".into())));
        let k = kvm(&["pcpu", "--live=host:1"]);
        assert_eq!(k.target, Some(Target::Live("host:1".into())));
        assert_eq!(k.query, Query::Pcpu(None));
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
        let k = kvm(&["dpcpu", "X", "--cpu", "2", "--size", "16"]);
        assert_eq!(
            k.query,
            Query::Dpcpu {
                symbol: "X".into(),
                cpus: CpuSel::One(2),
                size: Some(16)
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
        assert!(err_text(&["kvm"]).contains("maxcpu"));
        assert!(err_text(&["kvm", "pcpu", "x"]).contains("invalid value 'x'"));
        assert!(err_text(&["kvm", "--core", "a", "--live", "pcpu"]).contains("cannot be used"));
        assert!(err_text(&["kvm", "dpcpu", "X", "--cpu", "1", "--all"]).contains("cannot be used"));
        assert!(err_text(&["kvm", "maxcpu", "--all"]).contains("unexpected argument '--all'"));
        assert!(err_text(&["kvm", "pcpu", "--cpu", "1"]).contains("unexpected argument '--cpu'"));
        assert!(err_text(&["kvm", "dpcpu", "X", "--size", "0"]).contains("--size"));
        assert!(err_text(&["kvm", "dpcpu", "X", "--size", "1048577"]).contains("--size"));
        assert!(err_text(&["kvm", "frob"]).contains("unrecognized subcommand 'frob'"));
        assert!(err_text(&["kvm", "--fast", "maxcpu"]).contains("unexpected argument '--fast'"));
        assert!(err_text(&["kvm", "nlist"]).contains("<SYMBOLS>..."));
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
        let Command::Sdcard(logged) = parse_ok(&["sdcard", "--firmware-log", "--boot-dir", "b"])
        else {
            panic!("not sdcard")
        };
        assert!(logged.firmware_log);
        assert_eq!(logged.boot_dir, Some(PathBuf::from("b")));
        assert!(err_text(&["sdcard", "--out", "a", "--boot-dir", "b"]).contains("cannot be used"));
        assert_eq!(
            parse_ok(&["flash", "--device", "/dev/sdz"]),
            Command::Flash(FlashArgs {
                device: PathBuf::from("/dev/sdz"),
                image: None,
                firmware: None,
                firmware_log: false,
            })
        );
        assert_eq!(
            parse_ok(&[
                "flash",
                "--device",
                "/dev/sdz",
                "--image",
                "i",
                "--firmware",
                "f"
            ]),
            Command::Flash(FlashArgs {
                device: PathBuf::from("/dev/sdz"),
                image: Some(PathBuf::from("i")),
                firmware: Some(PathBuf::from("f")),
                firmware_log: false,
            })
        );
        let Command::Flash(logged) = parse_ok(&["flash", "--device", "/dev/sdz", "--firmware-log"])
        else {
            panic!("not flash")
        };
        assert!(logged.firmware_log);
        assert!(
            err_text(&["flash", "--device", "d", "--image", "i", "--firmware-log"])
                .contains("sdcard --firmware-log")
        );
        assert!(err_text(&["flash"]).contains("--device <DEVICE>"));
        assert!(err_text(&["flash", "--device"]).contains("a value is required"));
    }

    #[test]
    fn torture_defaults_to_every_torture_on_8_cpus() {
        let Command::Torture(t) = parse_ok(&["torture"]) else {
            panic!("not torture");
        };
        assert_eq!(t.names, TORTURES.to_vec());
        assert_eq!(t.machine, Machine::virt(Gic::V3, 8));
        assert_eq!(t.budget, Budget::Ops(TORTURE_DEFAULT_OPS));
        assert!(t.inject && t.seed.is_none() && t.bug.is_none());
    }

    #[test]
    fn torture_takes_a_name_a_machine_a_budget_and_a_seed() {
        let Command::Torture(t) = parse_ok(&[
            "torture",
            "all",
            "--smp",
            "4",
            "--gic",
            "2",
            "--ops",
            "1000000",
            "--replay",
            "0x5eed",
            "--no-inject",
            "--bug",
            "eoi",
        ]) else {
            panic!("not torture");
        };
        assert_eq!(t.names, vec!["all"]);
        assert_eq!(t.machine, Machine::virt(Gic::V2, 4));
        assert_eq!(t.budget, Budget::Ops(1_000_000));
        assert_eq!(t.seed, Some(0x5eed));
        assert!(!t.inject);
        assert_eq!(t.bug, Some(PlantedBug::Eoi));
        let Command::Torture(t) = parse_ok(&["torture", "wq", "--minutes=3"]) else {
            panic!("not torture");
        };
        assert_eq!(t.budget, Budget::Minutes(3));
        assert!(err_text(&["torture", "rcu"]).contains("invalid value 'rcu'"));
        assert!(err_text(&["torture", "--ops", "5", "--minutes", "1"]).contains("cannot be used"));
        assert!(err_text(&["torture", "--seed", "1", "--replay", "2"]).contains("cannot be used"));
        assert!(err_text(&["torture", "--bug", "oops"]).contains("invalid value 'oops'"));
        assert!(err_text(&["torture", "--seed", "xyz"]).contains("hex number"));
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
        assert_eq!(k.kernel, Some(PathBuf::from("k.elf")));
        assert!(err_text(&["fuzz", "dtb", "--core", "c"]).contains("fuzz kvm"));
        assert!(err_text(&["fuzz"]).contains("<TARGET>"));
        assert!(err_text(&["fuzz", "png"]).contains("invalid value 'png'"));
        assert!(err_text(&["fuzz", "dtb", "--seed", "xyz"]).contains("hex number"));
        assert!(err_text(&["fuzz", "dtb", "--seconds", "0"]).contains("positive"));
    }

    #[test]
    fn doctor_and_completions() {
        assert_eq!(parse_ok(&["doctor"]), Command::Doctor);
        assert!(err_text(&["doctor", "--all"]).contains("unexpected argument"));
        assert_eq!(
            parse_ok(&["completions", "bash"]),
            Command::Completions(CompletionsArgs {
                shell: Shell::Bash,
                name: "xtask".into(),
            })
        );
        assert_eq!(
            parse_ok(&["completions", "zsh", "--name", "cx"]),
            Command::Completions(CompletionsArgs {
                shell: Shell::Zsh,
                name: "cx".into(),
            })
        );
        assert!(err_text(&["completions", "tcsh"]).contains("invalid value 'tcsh'"));
        let Command::Completions(bash) = parse_ok(&["completions", "bash"]) else {
            panic!("not completions")
        };
        let script = String::from_utf8(completions(&bash)).unwrap();
        assert!(script.contains("complete -F _xtask"), "{script}");
        for word in [
            "--no-install",
            "--gic-security",
            "dpcpu",
            "--compare",
            "doctor",
        ] {
            assert!(
                script.contains(word),
                "{word} missing from the bash completions"
            );
        }
    }
}
