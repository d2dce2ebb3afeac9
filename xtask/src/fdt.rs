//! A flattened device tree as a list of tokens, for the tools that edit trees on the host: the
//! structure-aware fuzzer (`fuzz::dtb`) and the damaged-tree boots of `cargo xtask test`
//! (`badtree`). [`Fdt::parse`] reads a well-formed tree (QEMU's, the Pi's, the tests'), the
//! edits work on tokens, and [`Fdt::to_bytes`] writes a compact version 17 tree back, with
//! every offset and size recomputed, so an edit breaks exactly the rule it means to break.

use kernel::devtree::synth::TreeBuilder;

/// One structure-block token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// FDT_BEGIN_NODE with the node's name.
    Begin(Vec<u8>),
    /// FDT_END_NODE.
    End,
    /// FDT_PROP: name and value.
    Prop(Vec<u8>, Vec<u8>),
    /// FDT_NOP.
    Nop,
    /// FDT_END.
    EndTree,
    /// Any other word, written as it is (an unknown token).
    Raw(u32),
}

/// A tree: its memory reservations and structure tokens.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fdt {
    /// `/memreserve/` entries (address, size).
    pub reservations: Vec<(u64, u64)>,
    /// The structure block, FDT_END included.
    pub tokens: Vec<Token>,
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn be64(bytes: &[u8], at: usize) -> Option<u64> {
    Some((u64::from(be32(bytes, at)?) << 32) | u64::from(be32(bytes, at + 4)?))
}

impl Fdt {
    /// Reads a well-formed tree; an error names what could not be read.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let field = |i: usize| be32(bytes, i * 4).ok_or("shorter than its header");
        if field(0)? != 0xd00d_feed {
            return Err("not a device tree (magic)".into());
        }
        let (off_struct, off_strings, off_rsvmap) =
            (field(2)? as usize, field(3)? as usize, field(4)? as usize);
        let (size_strings, size_struct) = (field(8)? as usize, field(9)? as usize);
        let strings = bytes
            .get(off_strings..off_strings + size_strings)
            .ok_or("strings block outside the file")?;
        let structure = bytes
            .get(off_struct..off_struct + size_struct)
            .ok_or("structure block outside the file")?;
        let mut fdt = Self::default();
        let mut at = off_rsvmap;
        loop {
            let (a, s) = (
                be64(bytes, at).ok_or("reservation block runs off")?,
                be64(bytes, at + 8).ok_or("reservation block runs off")?,
            );
            if (a, s) == (0, 0) {
                break;
            }
            fdt.reservations.push((a, s));
            at += 16;
        }
        let mut pos = 0;
        loop {
            let token = be32(structure, pos).ok_or("structure block ends without FDT_END")?;
            match token {
                1 => {
                    let rest = structure.get(pos + 4..).unwrap_or(&[]);
                    let len = rest
                        .iter()
                        .position(|&b| b == 0)
                        .ok_or("unterminated node name")?;
                    fdt.tokens.push(Token::Begin(rest[..len].to_vec()));
                    pos += 4 + (len + 1).next_multiple_of(4);
                }
                2 => {
                    fdt.tokens.push(Token::End);
                    pos += 4;
                }
                3 => {
                    let len = be32(structure, pos + 4).ok_or("property runs off")? as usize;
                    let name_off = be32(structure, pos + 8).ok_or("property runs off")? as usize;
                    let value = structure
                        .get(pos + 12..pos + 12 + len)
                        .ok_or("property value runs off")?;
                    let name = strings.get(name_off..).ok_or("name offset outside")?;
                    let name_len = name.iter().position(|&b| b == 0).ok_or("unterminated")?;
                    fdt.tokens
                        .push(Token::Prop(name[..name_len].to_vec(), value.to_vec()));
                    pos += 12 + len.next_multiple_of(4);
                }
                4 => {
                    fdt.tokens.push(Token::Nop);
                    pos += 4;
                }
                9 => {
                    fdt.tokens.push(Token::EndTree);
                    return Ok(fdt);
                }
                other => return Err(format!("unknown token {other:#x}")),
            }
        }
    }

    /// The tree as bytes: header, reservation block (with its (0, 0) end), structure block,
    /// strings block (each name once), written by the kernel's own tree builder.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = TreeBuilder::new();
        for &(start, size) in &self.reservations {
            b.reserve(start, size);
        }
        for token in &self.tokens {
            match token {
                Token::Begin(name) => b.begin_node_bytes(name),
                Token::End => b.end_node(),
                Token::Prop(name, value) => {
                    let off = b.name_offset_bytes(name);
                    b.property_at(off, value);
                }
                Token::Nop => b.nop(),
                Token::EndTree => b.end_tree(),
                Token::Raw(w) => b.token(*w),
            }
        }
        b.finish_as_is()
    }

    /// The path (`/cpus/cpu@1`, `/` for the root) of every token's innermost open node.
    pub fn paths(&self) -> Vec<String> {
        let mut open: Vec<String> = Vec::new();
        let mut out = Vec::with_capacity(self.tokens.len());
        for token in &self.tokens {
            if let Token::Begin(name) = token {
                open.push(String::from_utf8_lossy(name).into_owned());
            }
            let path = match open.len() {
                0 => String::new(),
                1 => "/".to_owned(),
                _ => open[1..].iter().map(|n| format!("/{n}")).collect(),
            };
            out.push(path);
            if *token == Token::End {
                open.pop();
            }
        }
        out
    }

    /// The index of property `name` of the node at `path`.
    pub fn prop_index(&self, path: &str, name: &str) -> Option<usize> {
        let paths = self.paths();
        self.tokens.iter().enumerate().position(|(i, t)| {
            matches!(t, Token::Prop(n, _) if n == name.as_bytes()) && paths[i] == path
        })
    }

    /// The value of property `name` of the node at `path`, to edit.
    pub fn prop_mut(&mut self, path: &str, name: &str) -> Option<&mut Vec<u8>> {
        let i = self.prop_index(path, name)?;
        match &mut self.tokens[i] {
            Token::Prop(_, value) => Some(value),
            _ => None,
        }
    }

    /// The index of the END_NODE that closes the node at `path`.
    pub fn end_index(&self, path: &str) -> Option<usize> {
        let paths = self.paths();
        self.tokens
            .iter()
            .enumerate()
            .position(|(i, t)| *t == Token::End && paths[i] == path)
    }

    /// Inserts `tokens` just before the END_NODE of the node at `path` (as its last
    /// children); false if there is no such node.
    pub fn insert_children(&mut self, path: &str, tokens: Vec<Token>) -> bool {
        match self.end_index(path) {
            Some(i) => {
                self.tokens.splice(i..i, tokens);
                true
            }
            None => false,
        }
    }
}

/// Big-endian cells as property bytes.
pub fn cells(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

/// A NUL-terminated string as property bytes.
pub fn string(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIRT: &[u8] = include_bytes!("../../kernel/testdata/virt-gic3-smp4.dtb");

    #[test]
    fn qemus_tree_reads_back_to_the_same_parse() {
        let fdt = Fdt::parse(VIRT).unwrap();
        let again = fdt.to_bytes();
        assert_eq!(Fdt::parse(&again).unwrap(), fdt);
        let a = kernel::devtree::parse(VIRT, 0).unwrap();
        let b = kernel::devtree::parse(&again, 0).unwrap();
        assert_eq!(a.cpus(), b.cpus());
        assert_eq!(a.memory(), b.memory());
        assert_eq!(a.bootargs(), b.bootargs());
        assert_eq!(
            fdt.paths()[fdt.prop_index("/cpus/cpu@1", "reg").unwrap()],
            "/cpus/cpu@1"
        );
        assert!(fdt.end_index("/timer").is_some());
        assert!(fdt.prop_index("/nowhere", "reg").is_none());
    }
}
