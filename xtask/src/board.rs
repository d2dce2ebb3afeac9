//! What gets built and what it runs on: boards, image variants, build profiles and the emulated
//! machine configurations (board + GIC version + CPU count).
//!
//! Adding a board means adding a [`Board`] variant and filling in the `match`es here and in
//! `qemu.rs`; everything else (CLI parsing, image names, log names) follows from these tables.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// The Rust target every kernel image is built for.
pub const KERNEL_TARGET: &str = "aarch64-unknown-none-softfloat";

/// A board crate under `boards/`, producing one kernel binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Board {
    /// QEMU's `virt` machine (`boards/qemu-virt`).
    Virt,
    /// The Raspberry Pi 4 (`boards/rpi4`), emulated by QEMU's `raspi4b`.
    Rpi4,
}

impl Board {
    /// Every board xtask knows, in the order they are listed in messages.
    pub const ALL: &[Board] = &[Board::Virt, Board::Rpi4];

    /// The name used on the command line and in image and log file names.
    pub fn name(self) -> &'static str {
        match self {
            Board::Virt => "virt",
            Board::Rpi4 => "rpi4",
        }
    }

    /// The cargo package (and binary) name of the board crate.
    pub fn package(self) -> &'static str {
        match self {
            Board::Virt => "qemu-virt",
            Board::Rpi4 => "rpi4",
        }
    }

    /// The interrupt controller and CPU count of a board whose machine cannot be changed
    /// (the Pi 4 has a GIC-400 and four cores), or `None` when `--gic`/`--smp` choose them.
    pub fn fixed_machine(self) -> Option<(Gic, u32)> {
        match self {
            Board::Virt => None,
            Board::Rpi4 => Some((Gic::V2, 4)),
        }
    }

    /// Whether QEMU boots the raw binary (`kernel8.img`) rather than the ELF file.
    pub fn boots_raw_image(self) -> bool {
        matches!(self, Board::Rpi4)
    }

    /// The largest CPU count the board supports with the given interrupt controller.
    pub fn max_cpus(self, gic: Gic) -> u32 {
        match (self, gic) {
            // QEMU's virt machine: GICv2 handles at most 8 CPUs, GICv3 up to 512.
            (Board::Virt, Gic::V2) => 8,
            (Board::Virt, Gic::V3) => 512,
            // QEMU's raspi4b: the BCM2711's GIC-400 and its four cores.
            (Board::Rpi4, Gic::V2) => 4,
            (Board::Rpi4, Gic::V3) => 0,
        }
    }
}

impl fmt::Display for Board {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Board {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Board::ALL
            .iter()
            .copied()
            .find(|b| b.name() == s)
            .ok_or_else(|| {
                Error::new(format!(
                    "unknown board `{s}` (known: {})",
                    known(Board::ALL)
                ))
            })
    }
}

/// The interrupt controller version of an emulated machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gic {
    /// GICv2 (memory-mapped CPU interface).
    V2,
    /// GICv3 (system-register CPU interface).
    V3,
}

impl Gic {
    /// The version number, as QEMU's `gic-version=` and file names spell it.
    pub fn number(self) -> u8 {
        match self {
            Gic::V2 => 2,
            Gic::V3 => 3,
        }
    }
}

impl fmt::Display for Gic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number())
    }
}

impl FromStr for Gic {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "2" => Ok(Gic::V2),
            "3" => Ok(Gic::V3),
            _ => Err(Error::new(format!(
                "unknown GIC version `{s}` (known: 2, 3)"
            ))),
        }
    }
}

/// Which kernel image to build: the same board crate with different cargo features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The normal kernel, no extra features.
    Default,
    /// The in-kernel test image (feature `ktest`).
    Ktest,
    /// The benchmark image (feature `bench`).
    Bench,
}

impl Variant {
    /// Every variant, in the order they are listed in messages.
    pub const ALL: &[Variant] = &[Variant::Default, Variant::Ktest, Variant::Bench];

    /// The name used on the command line and in file names.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Default => "default",
            Variant::Ktest => "ktest",
            Variant::Bench => "bench",
        }
    }

    /// The cargo feature of the board crate that selects this variant, if any.
    pub fn feature(self) -> Option<&'static str> {
        match self {
            Variant::Default => None,
            Variant::Ktest => Some("ktest"),
            Variant::Bench => Some("bench"),
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Variant {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Variant::ALL
            .iter()
            .copied()
            .find(|v| v.name() == s)
            .ok_or_else(|| {
                Error::new(format!(
                    "unknown variant `{s}` (known: {})",
                    known(Variant::ALL)
                ))
            })
    }
}

/// The cargo build profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// `dev` profile, output in `debug/`.
    #[default]
    Debug,
    /// `release` profile (`--release`), output in `release/`.
    Release,
}

impl Profile {
    /// The name of cargo's output directory for this profile, also used in image names.
    pub fn dir_name(self) -> &'static str {
        match self {
            Profile::Debug => "debug",
            Profile::Release => "release",
        }
    }
}

/// One emulated machine configuration: a board with an interrupt controller and a CPU count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    /// The board.
    pub board: Board,
    /// The interrupt controller version.
    pub gic: Gic,
    /// The number of CPUs.
    pub smp: u32,
    /// rpi4 only: QEMU's GIC-400 as the board's really is, with the Security Extensions and
    /// five priority bits (QEMU's default has neither), the kernel in its non-secure view and
    /// every interrupt in group 1, where the firmware's armstub puts them (QEMU does that for
    /// a kernel it boots directly).
    pub gic_security: bool,
}

impl Machine {
    /// Shorthand for a `virt` machine, used by the test and bench matrices.
    pub const fn virt(gic: Gic, smp: u32) -> Self {
        Self {
            board: Board::Virt,
            gic,
            smp,
            gic_security: false,
        }
    }

    /// A human-readable label such as `virt gic3 smp4` (`rpi4 gic2 smp4 security` with the
    /// GIC's Security Extensions).
    pub fn label(&self) -> String {
        let security = if self.gic_security { " security" } else { "" };
        format!("{} gic{} smp{}{security}", self.board, self.gic, self.smp)
    }

    /// The log file stem for a run of `variant` on this machine, e.g. `virt-gic3-smp4-ktest`.
    pub fn log_stem(&self, variant: Variant) -> String {
        let security = if self.gic_security { "-security" } else { "" };
        format!(
            "{}-gic{}-smp{}{security}-{variant}",
            self.board, self.gic, self.smp
        )
    }

    /// Shorthand for the Raspberry Pi 4 as QEMU models it by default (GIC-400 without the
    /// Security Extensions, four CPUs).
    pub const fn rpi4() -> Self {
        Self {
            board: Board::Rpi4,
            gic: Gic::V2,
            smp: 4,
            gic_security: false,
        }
    }

    /// The Raspberry Pi 4 with its GIC-400 as on the board: Security Extensions, five priority
    /// bits, the kernel non-secure (see [`Machine::gic_security`]).
    pub const fn rpi4_gic_security() -> Self {
        Self {
            gic_security: true,
            ..Self::rpi4()
        }
    }

    /// Checks that the CPU count is one the board supports with this interrupt controller.
    pub fn validate(&self) -> Result<(), Error> {
        if let Some((gic, smp)) = self.board.fixed_machine()
            && (gic, smp) != (self.gic, self.smp)
        {
            return Err(Error::new(format!(
                "{} has GICv{gic} and {smp} CPUs; --gic {} --smp {} cannot change that",
                self.board, self.gic, self.smp
            )));
        }
        if self.gic_security && self.board != Board::Rpi4 {
            return Err(Error::new(format!(
                "--gic-security is for --board rpi4 (the GIC-400 as on the board); {} has no \
                 such setting",
                self.board
            )));
        }
        let max = self.board.max_cpus(self.gic);
        if self.smp == 0 || self.smp > max {
            return Err(Error::new(format!(
                "--smp {} is out of range for {} with GICv{} (1..={max})",
                self.smp, self.board, self.gic
            )));
        }
        Ok(())
    }
}

/// Joins the names of a list of CLI values for an error message.
fn known<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn board_names_round_trip() {
        for &b in Board::ALL {
            assert_eq!(b.name().parse::<Board>(), Ok(b));
        }
        assert_eq!(Board::Virt.package(), "qemu-virt");
        let err = "pc".parse::<Board>().unwrap_err();
        assert_eq!(err.to_string(), "unknown board `pc` (known: virt, rpi4)");
        assert_eq!(Board::Rpi4.package(), "rpi4");
        assert!(Board::Rpi4.boots_raw_image() && !Board::Virt.boots_raw_image());
    }

    #[test]
    fn variants_map_to_features() {
        assert_eq!("ktest".parse::<Variant>(), Ok(Variant::Ktest));
        assert_eq!(Variant::Default.feature(), None);
        assert_eq!(Variant::Ktest.feature(), Some("ktest"));
        assert_eq!(Variant::Bench.feature(), Some("bench"));
        assert!(
            "test"
                .parse::<Variant>()
                .unwrap_err()
                .to_string()
                .contains("default, ktest, bench")
        );
    }

    #[test]
    fn gic_parses_only_2_and_3() {
        assert_eq!("2".parse::<Gic>(), Ok(Gic::V2));
        assert_eq!("3".parse::<Gic>(), Ok(Gic::V3));
        assert!("4".parse::<Gic>().is_err());
        assert!("v3".parse::<Gic>().is_err());
    }

    #[test]
    fn machine_names() {
        let m = Machine::virt(Gic::V2, 8);
        assert_eq!(m.label(), "virt gic2 smp8");
        assert_eq!(m.log_stem(Variant::Ktest), "virt-gic2-smp8-ktest");
    }

    #[test]
    fn machine_cpu_limits() {
        assert!(Machine::virt(Gic::V2, 8).validate().is_ok());
        assert!(Machine::virt(Gic::V2, 9).validate().is_err());
        assert!(Machine::virt(Gic::V3, 0).validate().is_err());
        assert!(Machine::virt(Gic::V3, 64).validate().is_ok());
    }

    #[test]
    fn the_pi_machine_is_fixed() {
        assert!(Machine::rpi4().validate().is_ok());
        assert_eq!(Machine::rpi4().label(), "rpi4 gic2 smp4");
        let v3 = Machine {
            gic: Gic::V3,
            ..Machine::rpi4()
        };
        assert_eq!(
            v3.validate().unwrap_err().to_string(),
            "rpi4 has GICv2 and 4 CPUs; --gic 3 --smp 4 cannot change that"
        );
        let two = Machine {
            smp: 2,
            ..Machine::rpi4()
        };
        assert!(two.validate().is_err());
        let secure = Machine::rpi4_gic_security();
        assert!(secure.validate().is_ok());
        assert_eq!(secure.label(), "rpi4 gic2 smp4 security");
        assert_eq!(
            secure.log_stem(Variant::Ktest),
            "rpi4-gic2-smp4-security-ktest"
        );
        let virt = Machine {
            gic_security: true,
            ..Machine::virt(Gic::V2, 4)
        };
        assert!(virt.validate().unwrap_err().to_string().contains("rpi4"));
    }
}
