//! Little-endian fields read out of byte copies of kernel memory: a `CpuInfo`, a trace ring,
//! the embedded symbol table, an array of per-CPU offsets. The kernel stores them
//! little-endian, and their readers (the kvm reader on the target or the host, the monitor)
//! decode them from plain bytes with these, so that the reads are written once.

/// The `u64` at byte `off` of `bytes`. Panics if `bytes` has fewer than `off + 8` bytes: the
/// callers check a copy's length before they decode it. Context: any.
pub fn u64_at(bytes: &[u8], off: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[off..off + 8]);
    u64::from_le_bytes(b)
}

/// The `u32` at byte `off` of `bytes`. Panics if `bytes` has fewer than `off + 4` bytes, as
/// [`u64_at`]. Context: any.
pub fn u32_at(bytes: &[u8], off: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[off..off + 4]);
    u32::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_little_endian_at_their_offsets() {
        let bytes = [1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        assert_eq!(u64_at(&bytes, 0), 0x0807_0605_0403_0201);
        assert_eq!(u64_at(&bytes, 4), 0x0c0b_0a09_0807_0605);
        assert_eq!(u32_at(&bytes, 8), 0x0c0b_0a09);
    }

    #[test]
    #[should_panic]
    fn a_field_past_the_end_is_refused() {
        let _ = u64_at(&[0u8; 7], 0);
    }
}
