//! `cargo xtask`: builds kernel images, boots them in QEMU, runs the host and in-kernel tests
//! and the benchmarks. Run `cargo xtask help` for the commands.
//!
//! This file only dispatches; each command lives in its own module.

mod args;
mod badtree;
mod bench;
mod board;
mod console;
mod disk;
mod error;
mod fdt;
mod firmware;
mod flash;
mod fuzz;
mod gdb;
mod image;
mod kvm;
mod monitor;
mod mtools;
mod premmu;
mod proc;
mod progress;
mod qemu;
mod sdcard;
mod symbolize;
mod table;
mod test;
mod tools;
mod torture;
mod workspace;

use std::process::ExitCode;

use args::Command;
use error::Result;
use workspace::Workspace;

fn main() -> ExitCode {
    // A bad command line exits 2 with clap's message; `--help` prints and exits 0.
    let command = match args::parse(std::env::args_os().skip(1)) {
        Ok(command) => command,
        Err(e) => e.exit(),
    };
    match dispatch(&command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one parsed command.
fn dispatch(command: &Command) -> Result<ExitCode> {
    let ws = Workspace::locate();
    match command {
        Command::Help => {
            args::command()
                .print_help()
                .map_err(|e| error::Error::new(format!("printing the help: {e}")))?;
            println!();
            Ok(ExitCode::SUCCESS)
        }
        Command::Build(args) => image::run(&ws, args),
        Command::Qemu(args) => qemu::run(&ws, args),
        Command::Test(args) => test::run(&ws, args),
        Command::Bench(args) => bench::run(&ws, args),
        Command::Gdb(args) => gdb::run(&ws, args),
        Command::Dump(args) => kvm::dump::run(&ws, args),
        Command::Kvm(args) => kvm::run(&ws, args),
        Command::Trace(args) => kvm::trace::run(&ws, args),
        Command::Sdcard(args) => sdcard::run(&ws, args),
        Command::Flash(args) => flash::run(&ws, args),
        Command::Fuzz(args) => fuzz::run(&ws, args),
        Command::Doctor => tools::doctor(&ws),
        Command::Completions(args) => {
            use std::io::Write;
            std::io::stdout()
                .write_all(&args::completions(args))
                .map_err(|e| error::Error::new(format!("writing the completions: {e}")))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Torture(args) => torture::run(&ws, args),
    }
}
