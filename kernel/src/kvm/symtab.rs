//! The embedded symbol table: the kernel's own copy of the symbols the kvm reader needs, so
//! that the in-kernel source can answer `nlist` without an ELF file.
//!
//! The image reserves [`SYMTAB_BYTES`] bytes (the static `kern_kvm_symtab`); after linking,
//! `cargo xtask` writes into it, at the symbol's file offset, the (name, address) pairs of
//! every exported `kern_*` symbol, the DPCPU section bounds and every `dpcpu_entry_*` variable
//! ([`symbols::embeddable`](super::symbols::embeddable)). The format is a plain array a reader
//! can draw on paper, all little-endian:
//!
//! ```text
//! offset 0   magic "KVMSYM01" (an unfilled table has "KVMSYM--")
//! offset 8   u32 count of entries
//! offset 12  u32 entry size (64)
//! offset 16  entries: u64 address, u8 name length, 55 bytes of name (UTF-8, zero padded)
//! ```

use core::fmt;

/// Magic of a filled table.
pub const MAGIC: [u8; 8] = *b"KVMSYM01";
/// Magic of a table that was never filled (the image's initial value).
pub const MAGIC_UNFILLED: [u8; 8] = *b"KVMSYM--";
/// Bytes before the first entry.
pub const HEADER_BYTES: usize = 16;
/// Bytes per entry.
pub const ENTRY_BYTES: usize = 64;
/// Longest symbol name an entry holds.
pub const NAME_MAX: usize = ENTRY_BYTES - 9;
/// Entries the table holds.
pub const CAPACITY: usize = 64;
/// Size of the whole table.
pub const SYMTAB_BYTES: usize = HEADER_BYTES + CAPACITY * ENTRY_BYTES;

/// The table as it sits in the image.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct SymtabImage(pub [u8; SYMTAB_BYTES]);

impl SymtabImage {
    /// An unfilled table: only the magic, so that the static is not all zero (and therefore
    /// stored in the image file, where it can be patched).
    pub const EMPTY: Self = {
        let mut bytes = [0u8; SYMTAB_BYTES];
        let mut i = 0;
        while i < MAGIC_UNFILLED.len() {
            bytes[i] = MAGIC_UNFILLED[i];
            i += 1;
        }
        Self(bytes)
    };
}

/// What is wrong with a table, or with symbols that do not fit one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SymtabError {
    /// The image was not post-processed by `cargo xtask`.
    Unfilled,
    /// The bytes are not a table (bad magic, size or count).
    Corrupt(&'static str),
    /// More symbols than [`CAPACITY`].
    TooMany(usize),
    /// A name longer than [`NAME_MAX`] bytes.
    NameTooLong(usize),
}

impl fmt::Display for SymtabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unfilled => f.write_str(
                "the embedded symbol table was never filled in (image not built by cargo xtask)",
            ),
            Self::Corrupt(what) => write!(f, "the embedded symbol table is corrupt: {what}"),
            Self::TooMany(n) => write!(
                f,
                "{n} symbols do not fit the embedded symbol table ({CAPACITY} entries)"
            ),
            Self::NameTooLong(n) => write!(
                f,
                "a symbol name of {n} bytes does not fit the embedded symbol table \
                 ({NAME_MAX} bytes)"
            ),
        }
    }
}

/// Builds a filled table from (name, address) pairs.
pub fn encode<'a>(
    symbols: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<SymtabImage, SymtabError> {
    let mut image = SymtabImage([0; SYMTAB_BYTES]);
    let bytes = &mut image.0;
    bytes[..8].copy_from_slice(&MAGIC);
    bytes[12..16].copy_from_slice(&(ENTRY_BYTES as u32).to_le_bytes());
    let mut count = 0usize;
    for (name, addr) in symbols {
        if count == CAPACITY {
            return Err(SymtabError::TooMany(count + 1));
        }
        if name.len() > NAME_MAX {
            return Err(SymtabError::NameTooLong(name.len()));
        }
        let entry = &mut bytes[HEADER_BYTES + count * ENTRY_BYTES..][..ENTRY_BYTES];
        entry[..8].copy_from_slice(&addr.to_le_bytes());
        entry[8] = name.len() as u8;
        entry[9..9 + name.len()].copy_from_slice(name.as_bytes());
        count += 1;
    }
    bytes[8..12].copy_from_slice(&(count as u32).to_le_bytes());
    Ok(image)
}

/// The entries of a table, after checking its header.
pub fn entries(table: &[u8]) -> Result<impl Iterator<Item = (&str, u64)>, SymtabError> {
    if table.len() < HEADER_BYTES {
        return Err(SymtabError::Corrupt("shorter than its header"));
    }
    if table[..8] == MAGIC_UNFILLED {
        return Err(SymtabError::Unfilled);
    }
    if table[..8] != MAGIC {
        return Err(SymtabError::Corrupt("bad magic"));
    }
    let word = |at: usize| crate::le::u32_at(table, at);
    let count = word(8) as usize;
    if word(12) as usize != ENTRY_BYTES {
        return Err(SymtabError::Corrupt("unexpected entry size"));
    }
    if count > CAPACITY || HEADER_BYTES + count * ENTRY_BYTES > table.len() {
        return Err(SymtabError::Corrupt("count beyond the table"));
    }
    Ok(table[HEADER_BYTES..HEADER_BYTES + count * ENTRY_BYTES]
        .chunks_exact(ENTRY_BYTES)
        .filter_map(|entry| {
            let len = usize::from(entry[8]).min(NAME_MAX);
            let name = core::str::from_utf8(&entry[9..9 + len]).ok()?;
            Some((name, crate::le::u64_at(entry, 0)))
        }))
}

/// The address of `name` in a table, `None` if it is not there.
pub fn lookup(table: &[u8], name: &str) -> Result<Option<u64>, SymtabError> {
    Ok(entries(table)?.find(|(n, _)| *n == name).map(|(_, a)| a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_symbols_are_found() {
        let table = encode([
            ("kern_maxcpus", 0x4020_1000),
            ("__dpcpu_start", 0x4030_0000),
        ])
        .unwrap();
        assert_eq!(lookup(&table.0, "kern_maxcpus"), Ok(Some(0x4020_1000)));
        assert_eq!(lookup(&table.0, "__dpcpu_start"), Ok(Some(0x4030_0000)));
        assert_eq!(lookup(&table.0, "kern_ncpu"), Ok(None));
        assert_eq!(entries(&table.0).unwrap().count(), 2);
    }

    #[test]
    fn unfilled_and_corrupt_tables_are_named() {
        assert_eq!(
            lookup(&SymtabImage::EMPTY.0, "x"),
            Err(SymtabError::Unfilled)
        );
        assert_eq!(
            lookup(&[0u8; 4], "x"),
            Err(SymtabError::Corrupt("shorter than its header"))
        );
        let mut table = encode([("a", 1)]).unwrap();
        table.0[8] = 200;
        assert_eq!(
            lookup(&table.0, "a"),
            Err(SymtabError::Corrupt("count beyond the table"))
        );
        table.0[0] = b'X';
        assert_eq!(
            lookup(&table.0, "a"),
            Err(SymtabError::Corrupt("bad magic"))
        );
    }

    #[test]
    fn limits_are_enforced() {
        let long = "x".repeat(NAME_MAX + 1);
        assert_eq!(
            encode([(long.as_str(), 1)]).err(),
            Some(SymtabError::NameTooLong(NAME_MAX + 1))
        );
        let names: Vec<String> = (0..=CAPACITY).map(|i| format!("s{i}")).collect();
        assert_eq!(
            encode(names.iter().map(|n| (n.as_str(), 0))).err(),
            Some(SymtabError::TooMany(CAPACITY + 1))
        );
        let exact = encode(names[..CAPACITY].iter().map(|n| (n.as_str(), 7))).unwrap();
        assert_eq!(lookup(&exact.0, &names[CAPACITY - 1]), Ok(Some(7)));
    }
}
