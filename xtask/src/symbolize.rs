//! Names for the addresses in the kernel's backtraces.
//!
//! The kernel prints raw return addresses (`#3  0x0000000040204de8`): it carries no function
//! names. When a test run fails, xtask shows the end of its log with each backtrace line
//! followed by the function it points into (`kernel::sched::switch_away+0x1c4`), read from the
//! symbol table of the kernel ELF that ran. Lines that are not backtrace lines are unchanged.

use std::path::Path;

use object::{Object, ObjectSymbol, SymbolKind};

/// The function symbols of a kernel ELF, sorted by address.
pub struct Symbols {
    funcs: Vec<(u64, u64, String)>,
}

impl Symbols {
    /// Reads the function symbols of the ELF at `path`; `None` if it cannot be read or parsed
    /// (the log is then shown without names).
    pub fn load(path: &Path) -> Option<Self> {
        let bytes = std::fs::read(path).ok()?;
        Self::from_elf(&bytes)
    }

    /// Reads the function symbols of an ELF image.
    pub fn from_elf(bytes: &[u8]) -> Option<Self> {
        let file = object::File::parse(bytes).ok()?;
        let mut funcs: Vec<(u64, u64, String)> = file
            .symbols()
            .filter(|s| s.kind() == SymbolKind::Text && s.address() != 0)
            .filter_map(|s| {
                let name = s.name().ok()?;
                Some((
                    s.address(),
                    s.size(),
                    format!("{:#}", rustc_demangle::demangle(name)),
                ))
            })
            .collect();
        funcs.sort_by_key(|f| f.0);
        Some(Self { funcs })
    }

    /// Builds a table directly (for tests).
    #[cfg(test)]
    pub fn from_list(mut funcs: Vec<(u64, u64, String)>) -> Self {
        funcs.sort_by_key(|f| f.0);
        Self { funcs }
    }

    /// The function containing `addr` and the offset into it.
    pub fn lookup(&self, addr: u64) -> Option<(&str, u64)> {
        let i = self.funcs.partition_point(|f| f.0 <= addr).checked_sub(1)?;
        let (start, size, name) = &self.funcs[i];
        let inside = if *size == 0 {
            // Symbols without a size (assembly): accept up to the next symbol.
            self.funcs.get(i + 1).is_none_or(|next| addr < next.0)
        } else {
            addr < start + size
        };
        inside.then_some((name.as_str(), addr - start))
    }

    /// `line` with ` name+0xoff` appended when it is a backtrace line (`#N  0xADDR`) whose
    /// address falls inside a known function.
    pub fn annotate(&self, line: &str) -> String {
        let Some(addr) = backtrace_address(line) else {
            return line.to_owned();
        };
        match self.lookup(addr) {
            Some((name, off)) => format!("{line}  {name}+{off:#x}"),
            None => line.to_owned(),
        }
    }
}

/// The address of a kernel backtrace line (`    #3  0x0000000040204de8`).
pub fn backtrace_address(line: &str) -> Option<u64> {
    let rest = line.trim_start().strip_prefix('#')?;
    let (index, rest) = rest.split_once(char::is_whitespace)?;
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hex = rest.trim().strip_prefix("0x")?;
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Symbols {
        Symbols::from_list(vec![
            (0x1000, 0x100, "kernel::a".into()),
            (0x1200, 0, "asm_entry".into()),
            (0x1300, 0x10, "kernel::b".into()),
        ])
    }

    #[test]
    fn backtrace_lines_are_recognised_and_others_are_not() {
        assert_eq!(
            backtrace_address("    #3  0x0000000040204de8"),
            Some(0x4020_4de8)
        );
        assert_eq!(backtrace_address("#0 0x10"), Some(0x10));
        assert_eq!(backtrace_address("  backtrace:"), None);
        assert_eq!(backtrace_address("  #x 0x10"), None);
        assert_eq!(backtrace_address("  #1 10"), None);
        assert_eq!(backtrace_address("  #1 0xzz"), None);
    }

    #[test]
    fn lookup_finds_the_containing_function_and_offset() {
        let t = table();
        assert_eq!(t.lookup(0x1000), Some(("kernel::a", 0)));
        assert_eq!(t.lookup(0x10ff), Some(("kernel::a", 0xff)));
        assert_eq!(t.lookup(0x1100), None, "past the end of a sized symbol");
        assert_eq!(
            t.lookup(0x12f0),
            Some(("asm_entry", 0xf0)),
            "unsized: up to the next"
        );
        assert_eq!(t.lookup(0x0fff), None);
        assert_eq!(t.lookup(0x2000), None);
    }

    #[test]
    fn annotate_appends_the_name_only_to_backtrace_lines() {
        let t = table();
        assert_eq!(
            t.annotate("    #1  0x0000000000001304"),
            "    #1  0x0000000000001304  kernel::b+0x4"
        );
        assert_eq!(t.annotate("FAIL  x: y"), "FAIL  x: y");
        assert_eq!(
            t.annotate("    #2  0x0000000000009999"),
            "    #2  0x0000000000009999"
        );
    }
}
