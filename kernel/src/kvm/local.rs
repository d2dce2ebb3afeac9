//! The running kernel as a kvm [`Source`]: it reads its own memory and answers symbol
//! look-ups from the embedded symbol table (`kern_kvm_symtab`, filled by `cargo xtask` after
//! linking). Used by the in-kernel tests and, later, the monitor: the same reader code that
//! reads a crash dump then runs on the kernel itself, so its answers can be compared.
//!
//! Only RAM the device tree describes is readable (the kernel maps all of it, image
//! included); any other address is refused with the same "outside the dump" error a core
//! gives, never dereferenced.

use alloc::string::ToString;

use super::error::KvmError;
use super::source::Source;
use super::symbols::{self, BUILD_ID_LEN};
use super::symtab;
use crate::platform::PhysRange;

/// The running kernel's memory and embedded symbols.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalSource;

impl LocalSource {
    /// The source. Needs the device tree parsed (boot has done that before any caller runs).
    pub fn new() -> Self {
        Self
    }

    fn ram() -> &'static [PhysRange] {
        crate::bootinfo::system_info().memory()
    }
}

impl Source for LocalSource {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), KvmError> {
        let outside = KvmError::OutsideDump {
            addr,
            len: buf.len(),
        };
        let Some(last) = addr.checked_add(buf.len() as u64) else {
            return Err(outside);
        };
        if !Self::ram()
            .iter()
            .any(|r| addr >= r.start && last <= r.start.saturating_add(r.size))
        {
            return Err(outside);
        }
        for (i, byte) in buf.iter_mut().enumerate() {
            // SAFETY: `addr..last` lies inside RAM from the device tree, which the kernel maps
            // read-write for its whole life (identity map); reading any byte of it is
            // defined, and volatile because other CPUs may be writing it.
            *byte = unsafe { core::ptr::read_volatile((addr as usize + i) as *const u8) };
        }
        Ok(())
    }

    fn symbol(&mut self, name: &str) -> Result<Option<u64>, KvmError> {
        symtab::lookup(symbols::symtab_bytes(), name).map_err(|e| KvmError::Source(e.to_string()))
    }

    fn symbol_origin(&self) -> &str {
        "the embedded symbol table"
    }

    fn image_build_id(&mut self) -> Result<Option<[u8; BUILD_ID_LEN]>, KvmError> {
        Ok(None)
    }
}
