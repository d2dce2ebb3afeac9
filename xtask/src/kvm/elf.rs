//! The kernel ELF on the host: its symbol table and build id for the kvm reader, and the
//! post-link step of every image build ([`patch_image`]), which fills in the embedded symbol
//! table (`kern_kvm_symtab`) and the build id (`kern_build_id`) at their file offsets.
//!
//! The build id is a 128-bit FNV-1a hash of every loadable segment's address, size and file
//! bytes, taken after the symbol table is written and with the build id's own 16 bytes
//! counted as zero: the same code and data give the same id, any other build another one.

use std::collections::HashMap;

use kernel::kvm::SymbolSection;
use kernel::kvm::symbols::{self, BUILD_ID_LEN};
use kernel::kvm::symtab::{self, SYMTAB_BYTES};
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::{Endianness, Object, ObjectSection, ObjectSymbol, SymbolKind, elf};

/// A kernel ELF's symbols and build id.
#[derive(Debug, Clone)]
pub struct KernelElf {
    /// Symbol name to (address, size, index in `sections` of the section that defines it).
    symbols: HashMap<String, (u64, u64, Option<usize>)>,
    /// The allocated sections symbols are defined in.
    sections: Vec<SymbolSection>,
    /// The build id stored in the file (`None` if the symbol is missing or not in the file).
    build_id: Option<[u8; BUILD_ID_LEN]>,
}

/// Where a symbol's bytes are in the file: (file offset, size of the symbol).
fn file_offset(file: &ElfFile64<'_, Endianness>, name: &str) -> Result<(usize, u64), String> {
    let symbol = file
        .symbols()
        .find(|s| s.name() == Ok(name))
        .ok_or_else(|| format!("symbol {name} not found in ELF"))?;
    let index = symbol
        .section_index()
        .ok_or_else(|| format!("symbol {name} is not defined in a section"))?;
    let section = file
        .section_by_index(index)
        .map_err(|e| format!("symbol {name}: {e}"))?;
    let (offset, size) = section
        .file_range()
        .ok_or_else(|| format!("symbol {name} is in a section without file bytes (.bss?)"))?;
    let within = symbol
        .address()
        .checked_sub(section.address())
        .filter(|w| w.saturating_add(symbol.size()) <= size)
        .ok_or_else(|| format!("symbol {name} lies outside its section"))?;
    let at = offset
        .checked_add(within)
        .and_then(|a| usize::try_from(a).ok())
        .ok_or_else(|| format!("symbol {name}: file offset overflows"))?;
    Ok((at, symbol.size()))
}

impl KernelElf {
    /// Parses an ELF image; never panics on bad bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let file = ElfFile64::<Endianness>::parse(bytes).map_err(|e| format!("not an ELF: {e}"))?;
        if file.elf_header().e_machine(file.endian()) != elf::EM_AARCH64 {
            return Err("not an AArch64 ELF".into());
        }
        let mut table: HashMap<String, (u64, u64, Option<usize>)> = HashMap::new();
        let mut sections: Vec<SymbolSection> = Vec::new();
        let mut section_slot: HashMap<usize, usize> = HashMap::new();
        for symbol in file.symbols() {
            let Ok(name) = symbol.name() else { continue };
            // `$x`/`$d` are AArch64 mapping symbols (thousands, never looked up).
            if name.is_empty()
                || name.starts_with('$')
                || symbol.kind() == SymbolKind::File
                || symbol.kind() == SymbolKind::Section
                || symbol.is_undefined()
            {
                continue;
            }
            // Global definitions win over local ones of the same name.
            if symbol.is_global() || !table.contains_key(name) {
                // The section it is defined in, if that is an allocated one (not absolute).
                let slot = symbol.section_index().and_then(|index| {
                    if let Some(&slot) = section_slot.get(&index.0) {
                        return Some(slot);
                    }
                    let section = file.section_by_index(index).ok()?;
                    let start = section.address();
                    let end = start.checked_add(section.size())?;
                    if start == 0 && end == 0 {
                        return None;
                    }
                    sections.push(SymbolSection {
                        name: section.name().unwrap_or("?").to_owned(),
                        start,
                        end,
                    });
                    section_slot.insert(index.0, sections.len() - 1);
                    Some(sections.len() - 1)
                });
                table.insert(name.to_owned(), (symbol.address(), symbol.size(), slot));
            }
        }
        let build_id = file_offset(&file, symbols::BUILD_ID)
            .ok()
            .and_then(|(at, _)| {
                let bytes = bytes.get(at..at.checked_add(BUILD_ID_LEN)?)?;
                bytes.try_into().ok()
            });
        Ok(Self {
            symbols: table,
            sections,
            build_id,
        })
    }

    /// Address of `name`.
    pub fn symbol(&self, name: &str) -> Option<u64> {
        self.symbols.get(name).map(|&(addr, _, _)| addr)
    }

    /// Size of `name` as the symbol table records it.
    pub fn symbol_size(&self, name: &str) -> Option<u64> {
        self.symbols.get(name).map(|&(_, size, _)| size)
    }

    /// The allocated section `name` is defined in (`None` for an absolute symbol).
    pub fn symbol_section(&self, name: &str) -> Option<&SymbolSection> {
        let (_, _, slot) = self.symbols.get(name)?;
        self.sections.get((*slot)?)
    }

    /// The build id stored in the file.
    pub fn build_id(&self) -> Option<[u8; BUILD_ID_LEN]> {
        self.build_id
    }
}

/// Rewrites symbol `name`'s value and/or size in the symbol table of the ELF in `bytes` (for
/// tests and the fuzzer: a kernel ELF whose symbols contradict the dump).
pub fn set_symbol(
    bytes: &mut [u8],
    name: &str,
    value: Option<u64>,
    size: Option<u64>,
) -> Result<(), String> {
    let at = {
        let file =
            ElfFile64::<Endianness>::parse(&*bytes).map_err(|e| format!("not an ELF: {e}"))?;
        let symbol = file
            .symbols()
            .find(|s| s.name() == Ok(name))
            .ok_or_else(|| format!("symbol {name} not found in ELF"))?;
        let table = file
            .section_by_name(".symtab")
            .ok_or("no .symtab section")?;
        let (offset, _) = table.file_range().ok_or(".symtab has no file bytes")?;
        offset as usize + symbol.index().0 * 24
    };
    let entry = bytes
        .get_mut(at..at + 24)
        .ok_or("symbol entry outside the file")?;
    if let Some(value) = value {
        entry[8..16].copy_from_slice(&value.to_le_bytes());
    }
    if let Some(size) = size {
        entry[16..24].copy_from_slice(&size.to_le_bytes());
    }
    Ok(())
}

/// What [`patch_image`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patched {
    /// The build id.
    pub build_id: [u8; BUILD_ID_LEN],
    /// How many symbols went into the embedded table.
    pub symbols: usize,
}

/// 128-bit FNV-1a.
struct Fnv128(u128);

impl Fnv128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;

    fn new() -> Self {
        Self(Self::OFFSET)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u128::from(b);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }
}

/// The post-link step: fills in the embedded symbol table and the build id of the image in
/// `bytes`. Fails, naming the symbol, if the image lacks one the reader needs.
pub fn patch_image(bytes: &mut [u8]) -> Result<Patched, String> {
    let (symtab_at, build_id_at, entries) = {
        let file =
            ElfFile64::<Endianness>::parse(&*bytes).map_err(|e| format!("not an ELF: {e}"))?;
        let mut entries: Vec<(String, u64)> = Vec::new();
        for symbol in file.symbols() {
            let Ok(name) = symbol.name() else { continue };
            if symbols::embeddable(name)
                && !symbol.is_undefined()
                && !entries.iter().any(|(n, _)| n == name)
            {
                entries.push((name.to_owned(), symbol.address()));
            }
        }
        for required in symbols::REQUIRED {
            if !entries.iter().any(|(n, _)| n == required) {
                return Err(format!(
                    "symbol {required} not found in ELF (the kernel must export it)"
                ));
            }
        }
        entries.sort();
        let (symtab_at, symtab_size) = file_offset(&file, symbols::SYMTAB)?;
        if symtab_size != SYMTAB_BYTES as u64 {
            return Err(format!(
                "{} is {symtab_size} bytes, expected {SYMTAB_BYTES}",
                symbols::SYMTAB
            ));
        }
        let (build_id_at, build_id_size) = file_offset(&file, symbols::BUILD_ID)?;
        if build_id_size != BUILD_ID_LEN as u64 {
            return Err(format!(
                "{} is {build_id_size} bytes, expected {BUILD_ID_LEN}",
                symbols::BUILD_ID
            ));
        }
        (symtab_at, build_id_at, entries)
    };
    let table =
        symtab::encode(entries.iter().map(|(n, a)| (n.as_str(), *a))).map_err(|e| e.to_string())?;
    let outside = |name: &str| format!("{name} lies outside the file");
    bytes
        .get_mut(symtab_at..symtab_at + SYMTAB_BYTES)
        .ok_or_else(|| outside(symbols::SYMTAB))?
        .copy_from_slice(&table.0);
    bytes
        .get_mut(build_id_at..build_id_at + BUILD_ID_LEN)
        .ok_or_else(|| outside(symbols::BUILD_ID))?
        .fill(0);
    let build_id = hash_loadable(bytes)?;
    bytes[build_id_at..build_id_at + BUILD_ID_LEN].copy_from_slice(&build_id);
    Ok(Patched {
        build_id,
        symbols: entries.len(),
    })
}

/// The build id of an image: FNV-1a over each loadable segment's address, sizes and bytes.
fn hash_loadable(bytes: &[u8]) -> Result<[u8; BUILD_ID_LEN], String> {
    let header = elf::FileHeader64::<Endianness>::parse(bytes).map_err(|e| e.to_string())?;
    let endian = header.endian().map_err(|e| e.to_string())?;
    let mut hash = Fnv128::new();
    for segment in header
        .program_headers(endian, bytes)
        .map_err(|e| e.to_string())?
    {
        if segment.p_type(endian) != elf::PT_LOAD {
            continue;
        }
        hash.write(&segment.p_vaddr(endian).to_le_bytes());
        hash.write(&segment.p_memsz(endian).to_le_bytes());
        let data = segment
            .data(endian, bytes)
            .map_err(|()| "a loadable segment lies outside the file".to_owned())?;
        hash.write(data);
    }
    Ok(hash.0.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv128_matches_the_reference_vector() {
        // FNV-1a 128 of "a" (from the reference test vectors).
        let mut h = Fnv128::new();
        h.write(b"a");
        assert_eq!(h.0, 0xd228cb696f1a8caf78912b704e4a8964);
    }

    #[test]
    fn patching_fills_the_symbol_table_and_a_build_id_that_follows_the_contents() {
        const DATA: u64 = 0x4020_0000;
        let mut data = vec![0u8; 16 + SYMTAB_BYTES + 8];
        data[..16].copy_from_slice(&symbols::BUILD_ID_UNPATCHED);
        let mut syms = vec![
            (symbols::BUILD_ID.to_owned(), DATA, 16),
            (symbols::SYMTAB.to_owned(), DATA + 16, SYMTAB_BYTES as u64),
        ];
        for (i, name) in symbols::REQUIRED.iter().enumerate() {
            if !syms.iter().any(|(n, _, _)| n == name) {
                syms.push(((*name).to_owned(), 0x5000_0000 + 8 * i as u64, 4));
            }
        }
        syms.push(("dpcpu_entry_X".into(), 0x5000_1000, 8));
        syms.push(("unrelated".into(), 0x5000_2000, 8));
        let mut image = crate::kvm::fixture::write_kernel_elf(DATA, &data, &syms);
        let patched = patch_image(&mut image).unwrap();
        assert_eq!(patched.symbols, symbols::REQUIRED.len() + 1);
        let elf = KernelElf::parse(&image).unwrap();
        assert_eq!(elf.build_id(), Some(patched.build_id));
        assert_ne!(patched.build_id, symbols::BUILD_ID_UNPATCHED);
        let at = image.windows(8).position(|w| w == symtab::MAGIC).unwrap();
        let table = &image[at..at + SYMTAB_BYTES];
        assert_eq!(
            symtab::lookup(table, "dpcpu_entry_X"),
            Ok(Some(0x5000_1000))
        );
        assert_eq!(symtab::lookup(table, symbols::SYMTAB), Ok(Some(DATA + 16)));
        assert_eq!(symtab::lookup(table, "unrelated"), Ok(None));

        // Patching again gives the same id; other contents give another.
        let mut again = image.clone();
        assert_eq!(patch_image(&mut again).unwrap().build_id, patched.build_id);
        let mut changed = crate::kvm::fixture::write_kernel_elf(
            DATA,
            &{
                let mut d = data.clone();
                d[16 + SYMTAB_BYTES] = 1;
                d
            },
            &syms,
        );
        assert_ne!(
            patch_image(&mut changed).unwrap().build_id,
            patched.build_id
        );
    }

    #[test]
    fn an_image_without_the_exported_symbols_is_refused_by_name() {
        let mut bytes = crate::kvm::fixture::write_kernel_elf(0x4020_0000, &[0; 64], &[]);
        assert_eq!(
            patch_image(&mut bytes),
            Err("symbol kern_maxcpus not found in ELF (the kernel must export it)".into())
        );
    }

    #[test]
    fn garbage_is_not_an_elf() {
        assert!(KernelElf::parse(b"not an elf at all").is_err());
        assert!(patch_image(&mut [0u8; 100]).is_err());
    }

    #[test]
    fn set_symbol_rewrites_one_entry() {
        let mut bytes = crate::kvm::fixture::synthetic(2).elf;
        set_symbol(&mut bytes, "__dpcpu_end", Some(u64::MAX), Some(7)).unwrap();
        let elf = KernelElf::parse(&bytes).unwrap();
        assert_eq!(elf.symbol("__dpcpu_end"), Some(u64::MAX));
        assert_eq!(elf.symbol_size("__dpcpu_end"), Some(7));
        assert_eq!(
            elf.symbol("kern_ncpu"),
            KernelElf::parse(&crate::kvm::fixture::synthetic(2).elf)
                .unwrap()
                .symbol("kern_ncpu")
        );
        assert!(set_symbol(&mut bytes, "nope", None, None).is_err());
    }
}
