//! An ELF core of the guest's memory, as QEMU's QMP `dump-guest-memory` writes it, read as kvm
//! memory.
//!
//! With `paging: false` QEMU writes one `PT_LOAD` segment per guest RAM block and records the
//! guest-physical address in `p_paddr` (`p_vaddr` is 0). The kernel maps itself 1:1, so a
//! kernel address is a physical address and is looked up in `p_paddr`. Only bytes the file
//! holds (`p_filesz`) are readable; anything else is "outside the dump". The file is read on
//! demand (cores are as large as the guest's RAM), or from a byte slice (tests, fuzzing).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use kernel::kvm::KvmError;
use object::elf::{self, FileHeader64, ProgramHeader64};
use object::read::elf::{FileHeader, ProgramHeader};
use object::{Endianness, pod};

/// Where a core's bytes come from.
pub trait CoreBytes {
    /// Length in bytes.
    fn len(&self) -> u64;
    /// Fills `buf` from file offset `offset` (which the caller has checked).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), String>;
}

impl CoreBytes for File {
    fn len(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        self.read_exact_at(buf, offset).map_err(|e| e.to_string())
    }
}

impl CoreBytes for &[u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        let start = usize::try_from(offset).map_err(|_| "offset too large".to_owned())?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or_else(|| "read past the end of the core".to_owned())?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// One `PT_LOAD` segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical address of the first byte.
    pub paddr: u64,
    /// File offset of the first byte.
    pub offset: u64,
    /// Bytes in the file.
    pub filesz: u64,
}

/// A parsed core.
#[derive(Debug)]
pub struct Core<B> {
    bytes: B,
    segments: Vec<Segment>,
}

/// Most program headers a core may have (QEMU writes a handful).
const MAX_SEGMENTS: usize = 4096;

impl Core<File> {
    /// Opens and checks a core file.
    pub fn open(path: &Path) -> Result<Self, String> {
        let file = File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
        Core::parse(file).map_err(|e| format!("{}: {e}", path.display()))
    }
}

impl<B: CoreBytes> Core<B> {
    /// Checks the ELF header and program headers; a truncated core is refused here.
    pub fn parse(bytes: B) -> Result<Self, String> {
        let len = bytes.len();
        let mut head = [0u8; 64];
        if len < head.len() as u64 {
            return Err(format!("not an ELF core: only {len} bytes"));
        }
        bytes.read_at(0, &mut head)?;
        let header = FileHeader64::<Endianness>::parse(&head[..])
            .map_err(|e| format!("not an ELF core: {e}"))?;
        let endian = header
            .endian()
            .map_err(|e| format!("not an ELF core: {e}"))?;
        if header.e_type(endian) != elf::ET_CORE {
            return Err("not an ELF core file (e_type is not ET_CORE)".into());
        }
        if header.e_machine(endian) != elf::EM_AARCH64 {
            return Err("not a core of an AArch64 machine".into());
        }
        let phnum = usize::from(header.e_phnum(endian));
        let phentsize = usize::from(header.e_phentsize(endian));
        if phnum == 0 || phnum > MAX_SEGMENTS {
            return Err(format!("core has {phnum} program headers"));
        }
        if phentsize != size_of::<ProgramHeader64<Endianness>>() {
            return Err(format!("program header size {phentsize}, expected 56"));
        }
        let phoff = header.e_phoff(endian);
        let table_len = (phnum * phentsize) as u64;
        if phoff.checked_add(table_len).is_none_or(|end| end > len) {
            return Err(format!(
                "core truncated: its program headers end past the file's {len} bytes"
            ));
        }
        let mut table = vec![0u8; phnum * phentsize];
        bytes.read_at(phoff, &mut table)?;
        let (headers, _) = pod::slice_from_bytes::<ProgramHeader64<Endianness>>(&table, phnum)
            .map_err(|()| "cannot read the program headers".to_owned())?;
        let mut segments = Vec::new();
        for (i, ph) in headers.iter().enumerate() {
            if ph.p_type(endian) != elf::PT_LOAD {
                continue;
            }
            let segment = Segment {
                paddr: ph.p_paddr(endian),
                offset: ph.p_offset(endian),
                filesz: ph.p_filesz(endian),
            };
            if segment
                .offset
                .checked_add(segment.filesz)
                .is_none_or(|end| end > len)
            {
                return Err(format!(
                    "core truncated: segment {i} (memory at {:#x}) needs file bytes up to {:#x}, \
                     the file has {len:#x}",
                    segment.paddr,
                    segment.offset.saturating_add(segment.filesz)
                ));
            }
            if segment.paddr.checked_add(segment.filesz).is_none() {
                return Err(format!("segment {i} wraps around the address space"));
            }
            segments.push((i, segment));
        }
        if segments.is_empty() {
            return Err("core has no memory segments (PT_LOAD)".into());
        }
        // Each guest-physical byte once: QEMU writes one segment per RAM block, and where two
        // overlapped, the first in the table would silently win.
        let mut by_address: Vec<&(usize, Segment)> =
            segments.iter().filter(|(_, s)| s.filesz > 0).collect();
        by_address.sort_by_key(|(_, s)| s.paddr);
        let mut furthest: Option<&(usize, Segment)> = None;
        for entry in by_address {
            let (i, s) = entry;
            if let Some((j, f)) = furthest
                && s.paddr < f.paddr + f.filesz
            {
                let (a, b) = if j < i { (j, i) } else { (i, j) };
                return Err(format!(
                    "PT_LOAD segments {a} and {b} both hold memory at {:#x} (segment {j}: \
                     {:#x}..{:#x}, segment {i}: {:#x}..{:#x}); a core holds each byte once",
                    s.paddr,
                    f.paddr,
                    f.paddr + f.filesz,
                    s.paddr,
                    s.paddr + s.filesz
                ));
            }
            if furthest.is_none_or(|(_, f)| s.paddr + s.filesz > f.paddr + f.filesz) {
                furthest = Some(entry);
            }
        }
        let segments = segments.into_iter().map(|(_, s)| s).collect();
        Ok(Self { bytes, segments })
    }

    /// The `PT_LOAD` segments, in table order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The file offset of guest address `addr`, if a segment holds it.
    pub fn file_offset(&self, addr: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| addr >= s.paddr && addr - s.paddr < s.filesz)
            .map(|s| s.offset + (addr - s.paddr))
    }

    /// Reads guest memory at kernel (= physical) address `addr`; the range may span adjacent
    /// segments but every byte must be in the file.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), KvmError> {
        let len = buf.len();
        let outside = || KvmError::OutsideDump { addr, len };
        if addr.checked_add(buf.len() as u64).is_none() {
            return Err(outside());
        }
        let mut done = 0usize;
        while done < buf.len() {
            let at = addr + done as u64;
            let segment = self
                .segments
                .iter()
                .find(|s| at >= s.paddr && at - s.paddr < s.filesz)
                .ok_or_else(outside)?;
            let within = at - segment.paddr;
            let n = (segment.filesz - within).min((buf.len() - done) as u64) as usize;
            self.bytes
                .read_at(segment.offset + within, &mut buf[done..done + n])
                .map_err(|e| KvmError::Source(format!("reading the core at {at:#x}: {e}")))?;
            done += n;
        }
        Ok(())
    }
}
