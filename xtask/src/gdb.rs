//! `cargo xtask gdb`: starts QEMU halted with its gdb stub (`-s -S`) in the background, its
//! serial console on this terminal, runs `gdb-multiarch` attached to it, and stops QEMU when
//! gdb exits.

use std::ffi::c_int;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};
use std::thread;
use std::time::Duration;

use crate::args::GdbArgs;
use crate::board::Variant;
use crate::error::{Context, Error, Result};
use crate::qemu::{self, GDB_PORT, QemuRun};
use crate::workspace::Workspace;
use crate::{image, tools};

/// How long QEMU gets to start (or fail to) before gdb connects.
const QEMU_STARTUP: Duration = Duration::from_millis(300);

/// `cargo xtask gdb`.
pub fn run(ws: &Workspace, args: &GdbArgs) -> Result<ExitCode> {
    let allowed = tools::install_allowed_here(args.no_install);
    tools::ensure_qemu(allowed)?;
    tools::ensure(tools::Tool::Gdb, allowed)?;
    let variant = if args.test {
        Variant::Ktest
    } else {
        Variant::Default
    };
    let kernel = image::build(ws, args.machine.board, variant, args.profile)?;
    // QEMU boots the raw image on rpi4; gdb reads the symbols from the ELF either way.
    let boot = image::boot_image(ws, args.machine.board, variant, args.profile)?;
    let dtb = qemu::rpi4_dtb(ws, args.machine.board, None)?;
    let run = QemuRun {
        gdb: true,
        dtb: dtb.as_deref(),
        ..QemuRun::new(args.machine, &boot)
    };
    eprintln!("xtask: {}", run.display());
    // Its own process group keeps Ctrl-C (meant for gdb) from killing QEMU; gdb stops the
    // guest through the remote protocol instead.
    let mut qemu = run
        .command()
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .context("starting QEMU")?;
    thread::sleep(QEMU_STARTUP);
    if let Some(status) = qemu.try_wait().context("waiting for QEMU")? {
        return Err(Error::new(format!(
            "QEMU exited at once with {} (is port {GDB_PORT} in use?)",
            crate::proc::describe(status)
        )));
    }

    let target = format!("target remote :{GDB_PORT}");
    eprintln!("xtask: {} {} -ex '{target}'", tools::GDB, kernel.display());
    let gdb = Command::new(tools::GDB)
        .arg(&kernel)
        .args(["-ex", &target])
        .spawn();
    let status = match gdb {
        Ok(mut gdb) => {
            ignore_ctrl_c();
            gdb.wait().context("waiting for gdb")
        }
        Err(e) => Err(Error::new(format!("starting {}: {e}", tools::GDB))),
    };
    // QEMU may already have exited (e.g. the guest powered off); that is fine.
    let _ = qemu.kill();
    let _ = qemu.wait();
    Ok(qemu::exit_code(status?))
}

/// Makes this process ignore SIGINT, so that Ctrl-C in gdb does not end xtask (and with it the
/// clean-up of QEMU). Called only after the children are started, which keep the default.
fn ignore_ctrl_c() {
    const SIGINT: c_int = 2;
    const SIG_IGN: usize = 1;
    unsafe extern "C" {
        fn signal(signum: c_int, handler: usize) -> usize;
    }
    // SAFETY: setting SIGINT's disposition to SIG_IGN installs no handler code and touches no
    // memory; `signal` is async-signal-safe and the arguments are valid constants.
    unsafe {
        signal(SIGINT, SIG_IGN);
    }
}
