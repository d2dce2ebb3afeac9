//! Small ELF files made from scratch: ELF cores (one `PT_LOAD` per memory range, like QEMU's
//! dumps) and a synthetic kernel ELF with a matching core, whose every exported structure is
//! known. The fuzz test mutates them; the end-to-end test uses [`write_core`] to cut the pages
//! the reader touched out of a real 256 MiB core.

use kernel::cpu::{CPUINFO_LAYOUT_VERSION, CpuInfoSnapshot, MAXCPUS};
use kernel::kvm::symbols;

const EHDR: usize = 64;
const PHDR: usize = 56;
const SHDR: usize = 64;
const SYM: usize = 24;
const EM_AARCH64: u16 = 183;

fn ehdr(out: &mut Vec<u8>, e_type: u16, phnum: u16, shoff: u64, shnum: u16, shstrndx: u16) {
    out.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    out.extend_from_slice(&e_type.to_le_bytes());
    out.extend_from_slice(&EM_AARCH64.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // e_version
    out.extend_from_slice(&0u64.to_le_bytes()); // e_entry
    out.extend_from_slice(&(if phnum > 0 { EHDR as u64 } else { 0 }).to_le_bytes());
    out.extend_from_slice(&shoff.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    out.extend_from_slice(&(EHDR as u16).to_le_bytes());
    out.extend_from_slice(&(PHDR as u16).to_le_bytes());
    out.extend_from_slice(&phnum.to_le_bytes());
    out.extend_from_slice(&(SHDR as u16).to_le_bytes());
    out.extend_from_slice(&shnum.to_le_bytes());
    out.extend_from_slice(&shstrndx.to_le_bytes());
}

fn phdr(out: &mut Vec<u8>, p_type: u32, offset: u64, addr: u64, size: u64) {
    out.extend_from_slice(&p_type.to_le_bytes());
    out.extend_from_slice(&6u32.to_le_bytes()); // RW
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes()); // p_vaddr: 0, as QEMU writes without paging
    out.extend_from_slice(&addr.to_le_bytes()); // p_paddr
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&1u64.to_le_bytes());
}

/// An ELF core holding `ranges` (guest-physical address, bytes), plus an empty `PT_NOTE`.
pub fn write_core(ranges: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let phnum = ranges.len() + 1;
    let mut out = Vec::new();
    ehdr(&mut out, 4, phnum as u16, 0, 0, 0);
    let mut offset = (EHDR + phnum * PHDR) as u64;
    phdr(&mut out, 4, offset, 0, 0); // PT_NOTE
    for (addr, bytes) in ranges {
        phdr(&mut out, 1, offset, *addr, bytes.len() as u64);
        offset += bytes.len() as u64;
    }
    for (_, bytes) in ranges {
        out.extend_from_slice(bytes);
    }
    out
}

/// An AArch64 executable with one `.data` section at `data_addr` holding `data`, and a symbol
/// table: (name, address, size); symbols inside `.data` are defined there, the rest absolute.
pub fn write_kernel_elf(data_addr: u64, data: &[u8], syms: &[(String, u64, u64)]) -> Vec<u8> {
    let shstrtab = b"\0.data\0.symtab\0.strtab\0.shstrtab\0".to_vec();
    let mut strtab = vec![0u8];
    let mut symtab = vec![0u8; SYM];
    let data_end = data_addr + data.len() as u64;
    for (name, addr, size) in syms {
        let st_name = strtab.len() as u32;
        strtab.extend_from_slice(name.as_bytes());
        strtab.push(0);
        let shndx: u16 = if (data_addr..data_end).contains(addr) {
            1
        } else {
            0xfff1
        };
        symtab.extend_from_slice(&st_name.to_le_bytes());
        symtab.push(0x11); // global object
        symtab.push(0);
        symtab.extend_from_slice(&shndx.to_le_bytes());
        symtab.extend_from_slice(&addr.to_le_bytes());
        symtab.extend_from_slice(&size.to_le_bytes());
    }
    let data_off = (EHDR + PHDR) as u64;
    let symtab_off = data_off + data.len() as u64;
    let strtab_off = symtab_off + symtab.len() as u64;
    let shstrtab_off = strtab_off + strtab.len() as u64;
    let shoff = shstrtab_off + shstrtab.len() as u64;
    let mut out = Vec::new();
    ehdr(&mut out, 2, 1, shoff, 5, 4);
    phdr(&mut out, 1, data_off, data_addr, data.len() as u64);
    out.extend_from_slice(data);
    out.extend_from_slice(&symtab);
    out.extend_from_slice(&strtab);
    out.extend_from_slice(&shstrtab);
    #[allow(
        clippy::too_many_arguments,
        reason = "one ELF section header, field by field"
    )]
    fn shdr(
        out: &mut Vec<u8>,
        name: u32,
        sh_type: u32,
        flags: u64,
        addr: u64,
        offset: u64,
        size: u64,
        link: u32,
        entsize: u64,
    ) {
        out.extend_from_slice(&name.to_le_bytes());
        out.extend_from_slice(&sh_type.to_le_bytes());
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&addr.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&link.to_le_bytes());
        out.extend_from_slice(&(if sh_type == 2 { 1u32 } else { 0 }).to_le_bytes());
        out.extend_from_slice(&8u64.to_le_bytes());
        out.extend_from_slice(&entsize.to_le_bytes());
    }
    shdr(&mut out, 0, 0, 0, 0, 0, 0, 0, 0);
    shdr(
        &mut out,
        1,
        1,
        3,
        data_addr,
        data_off,
        data.len() as u64,
        0,
        0,
    );
    shdr(
        &mut out,
        7,
        2,
        0,
        0,
        symtab_off,
        symtab.len() as u64,
        3,
        SYM as u64,
    );
    shdr(&mut out, 15, 3, 0, 0, strtab_off, strtab.len() as u64, 0, 0);
    shdr(
        &mut out,
        23,
        3,
        0,
        0,
        shstrtab_off,
        shstrtab.len() as u64,
        0,
        0,
    );
    out
}

/// Where the synthetic kernel's data lives.
pub const DATA: u64 = 0x4020_0000;

/// Where its DPCPU copies live.
pub const COPIES: u64 = 0x4100_0000;

/// The DPCPU variable of the synthetic kernel (without the prefix).
pub const COUNTER: &str = "COUNTER";

/// A synthetic kernel with `ncpu` CPUs: its ELF, a core of it, each CPU's `CpuInfo` and
/// DPCPU counter value.
pub struct Synthetic {
    /// The kernel ELF.
    pub elf: Vec<u8>,
    /// A core of the running kernel.
    pub core: Vec<u8>,
    /// What `getpcpu` must return for each attached CPU.
    #[cfg_attr(not(test), expect(dead_code, reason = "the tests compare with it"))]
    pub cpus: Vec<CpuInfoSnapshot>,
    /// Each CPU's `COUNTER`.
    #[cfg_attr(not(test), expect(dead_code, reason = "the tests compare with it"))]
    pub counters: Vec<u64>,
}

/// Builds [`Synthetic`] (1 <= `ncpu` <= MAXCPUS).
pub fn synthetic(ncpu: usize) -> Synthetic {
    synthetic_with(ncpu, |_| {})
}

/// Builds [`Synthetic`] after `edit` changed its symbol table: (name, address, size).
pub fn synthetic_with(ncpu: usize, edit: impl FnOnce(&mut Vec<(String, u64, u64)>)) -> Synthetic {
    const BUILD_ID: u64 = 0;
    const LAYOUT: u64 = 16;
    const SIZE: u64 = 20;
    const MAX: u64 = 24;
    const NCPU: u64 = 28;
    const PTRS: u64 = 64;
    const OFFS: u64 = PTRS + 8 * MAXCPUS as u64;
    const CPU_INFO: u64 = (OFFS + 8 * MAXCPUS as u64).next_multiple_of(0x40);
    const DPCPU: u64 = CPU_INFO + (CpuInfoSnapshot::SIZE * MAXCPUS) as u64;
    const DPCPU_LEN: u64 = 64;
    let len = (DPCPU + DPCPU_LEN) as usize;
    let build_id: [u8; 16] = *b"synthetic-build!";
    let mut image = vec![0u8; len];
    let put = |image: &mut Vec<u8>, at: u64, bytes: &[u8]| {
        image[at as usize..at as usize + bytes.len()].copy_from_slice(bytes)
    };
    put(&mut image, BUILD_ID, &build_id);
    put(&mut image, LAYOUT, &CPUINFO_LAYOUT_VERSION.to_le_bytes());
    put(
        &mut image,
        SIZE,
        &(CpuInfoSnapshot::SIZE as u32).to_le_bytes(),
    );
    put(&mut image, MAX, &(MAXCPUS as u32).to_le_bytes());
    let elf_data = image.clone();
    put(&mut image, NCPU, &(ncpu as u32).to_le_bytes());
    let mut copies = vec![0u8; ncpu * DPCPU_LEN as usize];
    let mut cpus = Vec::new();
    let mut counters = Vec::new();
    for cpu in 0..ncpu {
        let copy = COPIES + cpu as u64 * DPCPU_LEN;
        let off = copy.wrapping_sub(DATA + DPCPU);
        let ci = CpuInfoSnapshot {
            self_addr: DATA + CPU_INFO + (cpu * CpuInfoSnapshot::SIZE) as u64,
            index: cpu as u32,
            state: 2,
            mpidr: cpu as u64,
            ipending: 0,
            dpcpu_off: off,
            intr_count: 100 * cpu as u64,
            tick_count: 7 + cpu as u64,
            ipi_count: [cpu as u64, 0, 1, 2],
            stack_base: 0x4800_0000 + 0x1_0000 * cpu as u64,
            stack_size: 0x1_0000,
            ..CpuInfoSnapshot::default()
        };
        put(
            &mut image,
            PTRS + 8 * cpu as u64,
            &ci.self_addr.to_le_bytes(),
        );
        put(&mut image, OFFS + 8 * cpu as u64, &off.to_le_bytes());
        put(&mut image, ci.self_addr - DATA, &ci.to_bytes());
        let counter = 1000 * (cpu as u64 + 1) + 7 * cpu as u64;
        let at = cpu * DPCPU_LEN as usize;
        copies[at..at + 8].copy_from_slice(&counter.to_le_bytes());
        cpus.push(ci);
        counters.push(counter);
    }
    let syms: Vec<(String, u64, u64)> = [
        (symbols::BUILD_ID.to_owned(), BUILD_ID, 16),
        (symbols::CPUINFO_LAYOUT.to_owned(), LAYOUT, 4),
        (symbols::CPUINFO_SIZE.to_owned(), SIZE, 4),
        (symbols::MAXCPUS.to_owned(), MAX, 4),
        (symbols::NCPU.to_owned(), NCPU, 4),
        (symbols::CPU_INFO_PTRS.to_owned(), PTRS, 8 * MAXCPUS as u64),
        (symbols::DPCPU_OFF.to_owned(), OFFS, 8 * MAXCPUS as u64),
        (symbols::DPCPU_START.to_owned(), DPCPU, 0),
        (symbols::DPCPU_END.to_owned(), DPCPU + DPCPU_LEN, 0),
        (format!("{}{COUNTER}", symbols::DPCPU_PREFIX), DPCPU, 8),
    ]
    .into_iter()
    .map(|(n, off, size)| (n, DATA + off, size))
    .collect();
    let mut syms = syms;
    edit(&mut syms);
    Synthetic {
        elf: write_kernel_elf(DATA, &elf_data, &syms),
        core: write_core(&[(DATA, image), (COPIES, copies)]),
        cpus,
        counters,
    }
}
