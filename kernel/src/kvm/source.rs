//! What the reader reads from: a [`Source`] reads bytes at kernel addresses and looks up the
//! kernel's symbols. One implementation per place a kernel can be: the running kernel itself
//! (`kvm::local`), and on the host (in xtask) an ELF core with the kernel ELF, or a live QEMU
//! guest through its gdbstub with the kernel ELF. The reader above it is the same code for all.

use alloc::string::String;

use super::error::KvmError;
use super::symbols::BUILD_ID_LEN;

/// The section a symbol is defined in, as the kernel ELF declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymbolSection {
    /// Its name (`.bss`, `.dpcpu`).
    pub name: String,
    /// Its first address.
    pub start: u64,
    /// One past its last address.
    pub end: u64,
}

/// A kernel's memory and symbols.
pub trait Source {
    /// Fills `buf` with the bytes at kernel address `addr` (this kernel maps itself 1:1, so a
    /// kernel address is also a physical address). Fails for any address the source does not
    /// hold, naming it.
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), KvmError>;

    /// The address of symbol `name`, `None` if the symbol table has no such symbol (an error
    /// only if the table itself cannot be read).
    fn symbol(&mut self, name: &str) -> Result<Option<u64>, KvmError>;

    /// The size of symbol `name` in bytes, if the symbol table records it.
    fn symbol_size(&mut self, _name: &str) -> Option<u64> {
        None
    }

    /// The section symbol `name` is defined in, if the symbol table says (an ELF does, the
    /// embedded table does not). The reader checks that a symbol it reads through lies inside
    /// its section.
    fn symbol_section(&mut self, _name: &str) -> Option<SymbolSection> {
        None
    }

    /// Where symbols come from, for messages ("ELF", "the embedded symbol table").
    fn symbol_origin(&self) -> &str;

    /// The build id stored in the kernel image the symbols come from, if the source has an
    /// image separate from the memory (an ELF file). The reader compares it with the build id
    /// in memory. The running kernel has no separate image and returns `None`.
    fn image_build_id(&mut self) -> Result<Option<[u8; BUILD_ID_LEN]>, KvmError>;
}

impl<S: Source + ?Sized> Source for &mut S {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), KvmError> {
        (**self).read(addr, buf)
    }
    fn symbol(&mut self, name: &str) -> Result<Option<u64>, KvmError> {
        (**self).symbol(name)
    }
    fn symbol_size(&mut self, name: &str) -> Option<u64> {
        (**self).symbol_size(name)
    }
    fn symbol_section(&mut self, name: &str) -> Option<SymbolSection> {
        (**self).symbol_section(name)
    }
    fn symbol_origin(&self) -> &str {
        (**self).symbol_origin()
    }
    fn image_build_id(&mut self) -> Result<Option<[u8; BUILD_ID_LEN]>, KvmError> {
        (**self).image_build_id()
    }
}
