//! Everything that can go wrong while reading a kernel, each with a message that names the
//! problem (what `kvm_geterr` returns).

use alloc::string::String;
use core::fmt;

use super::symbols::BUILD_ID_LEN;

/// A failed kvm operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvmError {
    /// A symbol the reader needs is not in the symbol source (`origin`: "ELF", "the embedded
    /// symbol table", ...).
    SymbolNotFound {
        /// The symbol.
        name: String,
        /// Where it was looked for.
        origin: String,
    },
    /// The address range is not in the dump (or not readable memory for the in-kernel source).
    OutsideDump {
        /// First address asked for.
        addr: u64,
        /// Bytes asked for.
        len: usize,
    },
    /// The source failed in its own way (a truncated core, a closed connection, ...).
    Source(String),
    /// The dump or guest runs another build than the kernel ELF describes.
    BuildIdMismatch {
        /// Build id in the kernel ELF.
        image: [u8; BUILD_ID_LEN],
        /// Build id in the dump or guest memory.
        memory: [u8; BUILD_ID_LEN],
    },
    /// The kernel's build id was never filled in (an image not built by `cargo xtask`).
    BuildIdUnset,
    /// `kern_cpuinfo_layout` differs from the reader's `CPUINFO_LAYOUT_VERSION`.
    LayoutMismatch {
        /// In the kernel.
        found: u32,
        /// In the reader.
        expected: u32,
    },
    /// `kern_cpuinfo_size` differs from the reader's `size_of::<CpuInfo>()`.
    SizeMismatch {
        /// In the kernel.
        found: u32,
        /// In the reader.
        expected: u32,
    },
    /// A kernel variable holds a value no kernel would (garbage, or the wrong address).
    Implausible {
        /// The variable.
        what: &'static str,
        /// Its value.
        value: u64,
    },
    /// A CPU index at or beyond the kernel's maximum (or negative).
    CpuTooBig {
        /// The index asked for.
        cpu: i64,
        /// The kernel's maximum CPU count.
        maxcpu: u32,
    },
    /// A CPU without a DPCPU copy (its offset is zero).
    CpuNotFound {
        /// The index asked for.
        cpu: u32,
    },
    /// DPCPU access before the kernel (or the reader) set DPCPU up.
    NotInitialised(String),
    /// A `CpuInfo` that does not describe the CPU it was reached for.
    Inconsistent(String),
}

impl fmt::Display for KvmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SymbolNotFound { name, origin } => {
                write!(f, "symbol {name} not found in {origin}")
            }
            Self::OutsideDump { addr, len } => {
                write!(f, "address {addr:#x} ({len} bytes) outside the dump")
            }
            Self::Source(message) => f.write_str(message),
            Self::BuildIdMismatch { image, memory } => write!(
                f,
                "build id mismatch: the kernel ELF is {}, the memory holds {} (a dump or guest \
                 of another build?)",
                Hex(image),
                Hex(memory)
            ),
            Self::BuildIdUnset => f.write_str(
                "the kernel's build id was never filled in (image not built by cargo xtask)",
            ),
            Self::LayoutMismatch { found, expected } => write!(
                f,
                "CpuInfo layout version {found} in the kernel, this reader knows version {expected}"
            ),
            Self::SizeMismatch { found, expected } => write!(
                f,
                "CpuInfo is {found} bytes in the kernel, {expected} bytes in this reader"
            ),
            Self::Implausible { what, value } => {
                write!(
                    f,
                    "{what} = {value:#x} is not plausible (wrong kernel or garbage?)"
                )
            }
            Self::CpuTooBig { cpu, maxcpu } => write!(f, "CPU {cpu} too big (maxcpu {maxcpu})"),
            Self::CpuNotFound { cpu } => write!(f, "CPU {cpu} not found (it has no DPCPU copy)"),
            Self::NotInitialised(why) => write!(f, "DPCPU not initialised: {why}"),
            Self::Inconsistent(what) => f.write_str(what),
        }
    }
}

/// Bytes as lower-case hex.
pub struct Hex<'a>(pub &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn messages_name_the_problem() {
        assert_eq!(
            KvmError::CpuTooBig { cpu: 7, maxcpu: 4 }.to_string(),
            "CPU 7 too big (maxcpu 4)"
        );
        assert_eq!(
            KvmError::SymbolNotFound {
                name: "kern_cpu_info_ptrs".into(),
                origin: "ELF".into()
            }
            .to_string(),
            "symbol kern_cpu_info_ptrs not found in ELF"
        );
        assert_eq!(
            KvmError::OutsideDump {
                addr: 0x1234,
                len: 8
            }
            .to_string(),
            "address 0x1234 (8 bytes) outside the dump"
        );
        assert!(
            KvmError::BuildIdMismatch {
                image: [0xab; 16],
                memory: [0; 16]
            }
            .to_string()
            .contains("abababab")
        );
    }
}
