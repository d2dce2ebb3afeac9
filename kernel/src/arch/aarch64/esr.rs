//! Exception syndromes in words: the exception class and fault status of ESR_EL1, and the
//! register block of a fault report. Pure decoding with no lock and no per-CPU data, shared
//! by the fault report (`fault`) and the pre-MMU crash path (`early`).

use super::vectors::TrapFrame;
use core::fmt::{self, Write};

/// The exception class (ESR_EL1.EC) in words.
pub fn exception_class_name(ec: u64) -> &'static str {
    match ec {
        0x00 => "unknown reason (undefined instruction)",
        0x01 => "WFI/WFE trap",
        0x07 => "FP/SIMD access trap",
        0x0e => "illegal execution state",
        0x15 => "SVC",
        0x18 => "system register access trap",
        0x20 => "instruction abort from a lower EL",
        0x21 => "instruction abort",
        0x22 => "PC alignment fault",
        0x24 => "data abort from a lower EL",
        0x25 => "data abort",
        0x26 => "SP alignment fault",
        0x2f => "SError",
        0x30 | 0x31 => "breakpoint",
        0x32 | 0x33 => "software step",
        0x34 | 0x35 => "watchpoint",
        0x3c => "BRK instruction",
        _ => "other exception",
    }
}

/// The fault status code of an abort (ISS.DFSC/IFSC) in words.
pub fn fault_status_name(fsc: u64) -> &'static str {
    match fsc & 0x3f {
        0x00..=0x03 => "address size fault",
        0x04..=0x07 => "translation fault",
        0x09..=0x0b => "access flag fault",
        0x0d..=0x0f => "permission fault",
        0x10 => "synchronous external abort",
        0x21 => "alignment fault",
        0x30 => "TLB conflict abort",
        _ => "other fault",
    }
}

/// One-line description of a synchronous exception: class, and for aborts the fault kind,
/// level and access (e.g. "data abort: permission fault, level 3, on write").
pub struct Describe(pub u64);

impl fmt::Display for Describe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let esr = self.0;
        let ec = (esr >> 26) & 0x3f;
        write!(f, "{}", exception_class_name(ec))?;
        if matches!(ec, 0x20 | 0x21 | 0x24 | 0x25) {
            let fsc = esr & 0x3f;
            write!(f, ": {}", fault_status_name(fsc))?;
            if fsc < 0x10 {
                write!(f, ", level {}", fsc & 3)?;
            }
            if matches!(ec, 0x24 | 0x25) {
                let access = if esr & (1 << 6) != 0 { "write" } else { "read" };
                write!(f, ", on {access}")?;
            } else {
                write!(f, ", on instruction fetch")?;
            }
        }
        Ok(())
    }
}

/// Writes the register part of a fault report through `out`: the exception class, ESR, FAR,
/// ELR, SPSR and SP on two lines, then x0-x30 four to a line. No lock, no per-CPU data (the
/// early path uses it too).
pub fn write_fault_registers(out: &mut dyn FnMut(fmt::Arguments<'_>), frame: &TrapFrame) {
    let ec = (frame.esr >> 26) & 0x3f;
    out(format_args!(
        "  exception class {ec:#04x}  ESR {:#010x}  FAR {:#018x}\n  \
         ELR {:#018x}  SPSR {:#010x}  SP {:#018x}\n",
        frame.esr, frame.far, frame.elr, frame.spsr, frame.sp
    ));
    for row in 0..8 {
        let mut line = Line::new();
        for col in 0..4 {
            let r = row * 4 + col;
            if r < 31 {
                let _ = write!(line, "  x{r:<2} {:#018x}", frame.x[r]);
            }
        }
        out(format_args!("{}\n", line.as_str()));
    }
}

/// A small stack buffer for composing one line without allocating.
struct Line {
    buf: [u8; 160],
    len: usize,
}

impl Line {
    fn new() -> Self {
        Self {
            buf: [0; 160],
            len: 0,
        }
    }
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}
