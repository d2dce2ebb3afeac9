//! A minimal flattened-device-tree writer into a caller's buffer (no allocation: it runs at
//! boot, before the heap, with the MMU off).
//!
//! The board uses it to describe the Pi 4's defaults as a device tree when the firmware
//! passed none, so the kernel's boot path reads memory, CPUs and boot arguments the same way
//! in both cases. It writes version 17 trees: the 40-byte header, an empty memory-reservation
//! block, the structure block and the strings block (property names are stored once each).

/// The writer ran out of room in the buffer (or in its table of property names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoRoom;

const FDT_MAGIC: u32 = 0xd00d_feed;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;
const HEADER_SIZE: usize = 40;
/// The empty memory-reservation block: one (0, 0) terminator pair.
const RSVMAP_SIZE: usize = 16;
/// Room for property names.
const STRINGS_CAPACITY: usize = 256;

/// Builds a tree node by node: `begin_node`, properties, `end_node`, ..., then `finish`.
pub struct FdtWriter<'a> {
    buf: &'a mut [u8],
    /// Next free byte of the structure block (which starts after header and rsvmap).
    pos: usize,
    strings: [u8; STRINGS_CAPACITY],
    strings_len: usize,
    depth: usize,
}

impl<'a> FdtWriter<'a> {
    /// A writer that builds a tree at the start of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Result<Self, NoRoom> {
        if buf.len() < HEADER_SIZE + RSVMAP_SIZE {
            return Err(NoRoom);
        }
        buf[..HEADER_SIZE + RSVMAP_SIZE].fill(0);
        Ok(Self {
            buf,
            pos: HEADER_SIZE + RSVMAP_SIZE,
            strings: [0; STRINGS_CAPACITY],
            strings_len: 0,
            depth: 0,
        })
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), NoRoom> {
        let end = self.pos.checked_add(bytes.len()).ok_or(NoRoom)?;
        self.buf
            .get_mut(self.pos..end)
            .ok_or(NoRoom)?
            .copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    fn put_u32(&mut self, value: u32) -> Result<(), NoRoom> {
        self.put(&value.to_be_bytes())
    }

    /// Zero bytes up to the next multiple of 4.
    fn pad(&mut self) -> Result<(), NoRoom> {
        while !self.pos.is_multiple_of(4) {
            self.put(&[0])?;
        }
        Ok(())
    }

    /// The offset of `name` in the strings block, adding it if new.
    fn string_offset(&mut self, name: &str) -> Result<u32, NoRoom> {
        let mut offset = 0;
        while offset < self.strings_len {
            let end = offset
                + self.strings[offset..self.strings_len]
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(self.strings_len - offset);
            if &self.strings[offset..end] == name.as_bytes() {
                return Ok(offset as u32);
            }
            offset = end + 1;
        }
        let end = self.strings_len + name.len() + 1;
        if end > STRINGS_CAPACITY {
            return Err(NoRoom);
        }
        self.strings[self.strings_len..end - 1].copy_from_slice(name.as_bytes());
        self.strings[end - 1] = 0;
        let offset = self.strings_len;
        self.strings_len = end;
        Ok(offset as u32)
    }

    /// Opens a node (`""` for the root).
    pub fn begin_node(&mut self, name: &str) -> Result<(), NoRoom> {
        self.put_u32(FDT_BEGIN_NODE)?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.depth += 1;
        Ok(())
    }

    /// A NOP token (firmware leaves these where it deleted something; tests use it to make
    /// such trees).
    pub fn nop(&mut self) -> Result<(), NoRoom> {
        self.put_u32(FDT_NOP)
    }

    /// Closes the innermost open node.
    pub fn end_node(&mut self) -> Result<(), NoRoom> {
        self.put_u32(FDT_END_NODE)?;
        self.depth = self.depth.saturating_sub(1);
        Ok(())
    }

    /// A property with a raw value.
    pub fn property(&mut self, name: &str, value: &[u8]) -> Result<(), NoRoom> {
        let name_offset = self.string_offset(name)?;
        self.put_u32(FDT_PROP)?;
        self.put_u32(u32::try_from(value.len()).map_err(|_| NoRoom)?)?;
        self.put_u32(name_offset)?;
        self.put(value)?;
        self.pad()
    }

    /// A property of big-endian 32-bit cells.
    pub fn property_cells(&mut self, name: &str, cells: &[u32]) -> Result<(), NoRoom> {
        let name_offset = self.string_offset(name)?;
        self.put_u32(FDT_PROP)?;
        self.put_u32(u32::try_from(cells.len() * 4).map_err(|_| NoRoom)?)?;
        self.put_u32(name_offset)?;
        for &cell in cells {
            self.put_u32(cell)?;
        }
        Ok(())
    }

    /// A string property (NUL-terminated in the tree).
    pub fn property_str(&mut self, name: &str, value: &str) -> Result<(), NoRoom> {
        let name_offset = self.string_offset(name)?;
        self.put_u32(FDT_PROP)?;
        self.put_u32(u32::try_from(value.len() + 1).map_err(|_| NoRoom)?)?;
        self.put_u32(name_offset)?;
        self.put(value.as_bytes())?;
        self.put(&[0])?;
        self.pad()
    }

    /// Closes any open nodes, writes the strings block and the header, and returns the tree's
    /// total size in bytes.
    pub fn finish(mut self) -> Result<usize, NoRoom> {
        while self.depth > 0 {
            self.end_node()?;
        }
        self.put_u32(FDT_END)?;
        let off_struct = HEADER_SIZE + RSVMAP_SIZE;
        let size_struct = self.pos - off_struct;
        let off_strings = self.pos;
        let strings = self.strings;
        self.put(&strings[..self.strings_len])?;
        let total = self.pos;
        let header = [
            FDT_MAGIC,
            total as u32,
            off_struct as u32,
            off_strings as u32,
            HEADER_SIZE as u32,
            17, // version
            16, // last compatible version
            0,  // boot CPU id
            self.strings_len as u32,
            size_struct as u32,
        ];
        for (i, word) in header.iter().enumerate() {
            self.buf[i * 4..i * 4 + 4].copy_from_slice(&word.to_be_bytes());
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_tree_has_a_valid_header() {
        let mut buf = [0xaa; 128];
        let size = FdtWriter::new(&mut buf).unwrap().finish().unwrap();
        // Header, rsvmap terminator, FDT_END.
        assert_eq!(size, 40 + 16 + 4);
        assert_eq!(kernel::devtree::total_size(&buf[..size]), Ok(size));
        assert_eq!(&buf[40..56], &[0; 16], "empty reservation map");
    }

    #[test]
    fn property_names_are_stored_once() {
        let mut buf = [0; 256];
        let mut w = FdtWriter::new(&mut buf).unwrap();
        w.begin_node("").unwrap();
        w.property_str("status", "okay").unwrap();
        w.begin_node("a").unwrap();
        w.property_str("status", "disabled").unwrap();
        let size = w.finish().unwrap();
        let size_strings = u32::from_be_bytes(buf[32..36].try_into().unwrap());
        assert_eq!(size_strings, 7, "\"status\\0\" once");
        assert_eq!(&buf[size - 7..size], b"status\0");
    }

    #[test]
    fn a_small_buffer_is_refused_not_overrun() {
        let mut tiny = [0; 50];
        assert!(FdtWriter::new(&mut tiny).is_err());
        let mut buf = [0; 80];
        let mut w = FdtWriter::new(&mut buf).unwrap();
        w.begin_node("").unwrap();
        assert_eq!(
            w.property_str("model", "a name much too long for 80 bytes"),
            Err(NoRoom)
        );
    }
}
