//! The kvm reader's `trace`: every CPU's trace ring (`crate::trace`) and the thread-name
//! table, read through any [`Source`] — the running kernel, an ELF core or a live guest — by
//! this one code path, and checked record by record.
//!
//! A ring is believed only if its header says what this reader expects (magic, capacity,
//! record size) and every record of the window `[head - capacity, head)` carries its own
//! sequence number and a known kind; anything else is a [`KvmError::Inconsistent`] naming the
//! CPU and the slot. A ring that wrapped reports how many records it lost.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::{Kvm, KvmError, Source};
use crate::trace::{
    Kind, NAME_BYTES, NAME_EXITED, NAME_SLOT_SIZE, NAME_SLOTS, RECORD_SIZE, RING_MAGIC, RING_NAME,
    RING_RECORDS, RING_SIZE, offsets, symbols,
};

/// One decoded record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// Sequence number in its CPU's ring (0 = the first record since the ring was cleared).
    pub seq: u64,
    /// Virtual counter value.
    pub ts: u64,
    /// What happened.
    pub kind: Kind,
    /// Kind-specific small value (the switch reason).
    pub aux: u8,
    /// First argument.
    pub a: u64,
    /// Second argument.
    pub b: u64,
}

/// One CPU's ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuTrace {
    /// The CPU.
    pub cpu: u32,
    /// Records ever written.
    pub head: u64,
    /// Records overwritten because the ring wrapped.
    pub lost: u64,
    /// The records still in the ring, oldest first.
    pub events: Vec<Event>,
}

/// Every CPU's ring plus what a reader needs to label it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceDump {
    /// Counter frequency in Hz.
    pub freq: u64,
    /// The enable mask at the time of reading.
    pub mask: u32,
    /// One entry per CPU with a DPCPU copy.
    pub cpus: Vec<CpuTrace>,
    /// (LWP id, name) of the threads in the name table.
    pub names: Vec<(u64, String)>,
}

impl TraceDump {
    /// The name of thread `id`, if the name table has it.
    pub fn name_of(&self, id: u64) -> Option<&str> {
        self.names
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, n)| n.as_str())
    }

    /// Records of `kind` on CPU `cpu` for which `filter(a, b)` holds.
    pub fn count(&self, cpu: u32, kind: Kind, filter: impl Fn(u64, u64) -> bool) -> usize {
        self.cpus
            .iter()
            .filter(|c| c.cpu == cpu)
            .flat_map(|c| c.events.iter())
            .filter(|e| e.kind == kind && filter(e.a, e.b))
            .count()
    }

    /// A 64-bit FNV-1a digest of one CPU's ring (head, lost and every record), to compare
    /// readings from different sources cheaply.
    pub fn digest(&self, cpu: u32) -> Option<u64> {
        let c = self.cpus.iter().find(|c| c.cpu == cpu)?;
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |v: u64| {
            for b in v.to_le_bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        eat(c.head);
        eat(c.lost);
        for e in &c.events {
            eat(e.seq);
            eat(e.ts);
            eat(e.kind as u64 | u64::from(e.aux) << 8);
            eat(e.a);
            eat(e.b);
        }
        Some(h)
    }

    /// Problems with the trace as a timeline: timestamps that go backwards on a CPU, and
    /// switch events that do not chain (each switch on a CPU must start from the thread the
    /// previous one switched to). Empty if none.
    pub fn check_order(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for c in &self.cpus {
            let mut last_ts = 0;
            let mut running: Option<u64> = None;
            for e in &c.events {
                if e.ts < last_ts {
                    problems.push(format!(
                        "cpu{}: record {} at {} is earlier than the one before ({last_ts})",
                        c.cpu, e.seq, e.ts
                    ));
                }
                last_ts = e.ts;
                if e.kind == Kind::Switch {
                    if let Some(r) = running
                        && r != e.a
                    {
                        problems.push(format!(
                            "cpu{}: record {} switches away from thread {} but thread {r} was \
                             running",
                            c.cpu, e.seq, e.a
                        ));
                    }
                    running = Some(e.b);
                }
            }
        }
        problems
    }
}

/// Decodes one CPU's ring from its bytes (a whole [`crate::trace::TraceRing`]).
pub fn decode_ring(cpu: u32, bytes: &[u8]) -> Result<CpuTrace, KvmError> {
    let bad = |what: String| KvmError::Inconsistent(format!("cpu{cpu} trace ring: {what}"));
    if bytes.len() != RING_SIZE {
        return Err(bad(format!(
            "{} bytes, the reader expects {RING_SIZE}",
            bytes.len()
        )));
    }
    let u64_at = |off: usize| crate::le::u64_at(bytes, off);
    let u32_at = |off: usize| crate::le::u32_at(bytes, off);
    let magic = u64_at(offsets::MAGIC);
    if magic != RING_MAGIC {
        return Err(bad(format!(
            "magic {magic:#018x}, expected {RING_MAGIC:#018x} (not a trace ring, or corrupt)"
        )));
    }
    let capacity = u32_at(offsets::CAPACITY);
    let record_size = u32_at(offsets::RECORD_SIZE);
    if capacity as usize != RING_RECORDS || record_size as usize != RECORD_SIZE {
        return Err(bad(format!(
            "{capacity} records of {record_size} bytes, the reader expects {RING_RECORDS} of \
             {RECORD_SIZE}"
        )));
    }
    let head = u64_at(offsets::HEAD);
    let cap = RING_RECORDS as u64;
    let first = head.saturating_sub(cap);
    let mut events = Vec::with_capacity((head - first) as usize);
    for seq in first..head {
        let slot = (seq % cap) as usize;
        let off = offsets::RECORDS + slot * RECORD_SIZE;
        let info = u64_at(off + 8);
        if info >> 32 != seq & 0xffff_ffff {
            return Err(bad(format!(
                "slot {slot} holds sequence number {}, expected {} (head {head}: torn or \
                 corrupt)",
                info >> 32,
                seq & 0xffff_ffff
            )));
        }
        let Some(kind) = Kind::from_u8(info as u8) else {
            return Err(bad(format!(
                "record {seq} (slot {slot}) has unknown kind {}",
                info as u8
            )));
        };
        events.push(Event {
            seq,
            ts: u64_at(off),
            kind,
            aux: (info >> 8) as u8,
            a: u64_at(off + 16),
            b: u64_at(off + 24),
        });
    }
    Ok(CpuTrace {
        cpu,
        head,
        lost: first,
        events,
    })
}

/// Decodes the thread-name table from its bytes.
pub fn decode_names(bytes: &[u8]) -> Vec<(u64, String)> {
    let mut names = Vec::new();
    for slot in bytes.chunks_exact(NAME_SLOT_SIZE) {
        // The exited mark does not change whose name it is.
        let id = crate::le::u64_at(slot, 0) & !NAME_EXITED;
        if id == 0 {
            continue;
        }
        let raw = &slot[8..8 + NAME_BYTES];
        let len = raw.iter().position(|&b| b == 0).unwrap_or(NAME_BYTES);
        names.push((id, String::from_utf8_lossy(&raw[..len]).into_owned()));
    }
    names
}

impl<S: Source> Kvm<S> {
    /// Reads every CPU's trace ring and the thread names (see the module doc).
    pub fn trace(&mut self) -> Result<TraceDump, KvmError> {
        let result = self.trace_inner();
        self.record(result)
    }

    fn trace_inner(&mut self) -> Result<TraceDump, KvmError> {
        let mask = read_sized(&mut self.source, symbols::MASK, 4)?;
        let freq = read_sized(&mut self.source, symbols::FREQ, 8)?;
        if freq == 0 {
            return Err(KvmError::Implausible {
                what: symbols::FREQ,
                value: 0,
            });
        }
        let names_len = NAME_SLOTS * NAME_SLOT_SIZE;
        let names_addr = super::require_sized(&mut self.source, symbols::NAMES, names_len as u64)?;
        let mut names = alloc::vec![0u8; names_len];
        self.source
            .read(names_addr, &mut names)
            .map_err(|e| super::in_dump(symbols::NAMES, e))?;
        if let Some(size) = self.symbol_size(RING_NAME)
            && size != 0
            && size != RING_SIZE as u64
        {
            return Err(KvmError::Inconsistent(format!(
                "{RING_NAME} is {size} bytes in {}, the reader expects {RING_SIZE}",
                self.source.symbol_origin()
            )));
        }
        let offs = self.dpcpu_init()?.off.clone();
        let mut cpus = Vec::new();
        for (cpu, off) in offs.iter().enumerate() {
            if *off == 0 {
                continue;
            }
            let (_, bytes) = self.read_dpcpu_inner(RING_NAME, cpu as u32, RING_SIZE)?;
            cpus.push(decode_ring(cpu as u32, &bytes)?);
        }
        Ok(TraceDump {
            freq,
            mask: mask as u32,
            cpus,
            names: decode_names(&names),
        })
    }
}

fn read_sized<S: Source>(source: &mut S, name: &str, len: usize) -> Result<u64, KvmError> {
    let addr = super::require_sized(source, name, len as u64)?;
    let mut b = [0u8; 8];
    source
        .read(addr, &mut b[..len])
        .map_err(|e| super::in_dump(name, e))?;
    Ok(u64::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::pack_info;

    fn ring(head: u64, fill: impl Fn(u64) -> (u8, u8, u64, u64)) -> Vec<u8> {
        let mut b = alloc::vec![0u8; RING_SIZE];
        b[0..8].copy_from_slice(&RING_MAGIC.to_le_bytes());
        b[8..12].copy_from_slice(&(RING_RECORDS as u32).to_le_bytes());
        b[12..16].copy_from_slice(&(RECORD_SIZE as u32).to_le_bytes());
        b[16..24].copy_from_slice(&head.to_le_bytes());
        for seq in 0..head {
            let slot = (seq % RING_RECORDS as u64) as usize;
            let off = offsets::RECORDS + slot * RECORD_SIZE;
            let (kind, aux, a, bb) = fill(seq);
            b[off..off + 8].copy_from_slice(&(seq * 10).to_le_bytes());
            b[off + 8..off + 16].copy_from_slice(&pack_info(kind, aux, seq).to_le_bytes());
            b[off + 16..off + 24].copy_from_slice(&a.to_le_bytes());
            b[off + 24..off + 32].copy_from_slice(&bb.to_le_bytes());
        }
        b
    }

    #[test]
    fn a_ring_reads_back_in_order() {
        let b = ring(5, |s| (Kind::WorkRun as u8, 0, s, 0));
        let t = decode_ring(1, &b).unwrap();
        assert_eq!(t.lost, 0);
        assert_eq!(t.events.len(), 5);
        assert_eq!(t.events[3].a, 3);
        assert_eq!(t.events[3].ts, 30);
    }

    #[test]
    fn a_wrapped_ring_says_how_many_records_were_lost() {
        let head = RING_RECORDS as u64 + 123;
        let b = ring(head, |s| (Kind::IntrEntry as u8, 0, s, 0));
        let t = decode_ring(0, &b).unwrap();
        assert_eq!(t.lost, 123);
        assert_eq!(t.events.len(), RING_RECORDS);
        assert_eq!(t.events[0].seq, 123);
        assert_eq!(t.events.last().unwrap().seq, head - 1);
    }

    #[test]
    fn corrupt_rings_are_errors_naming_the_problem() {
        let good = ring(10, |_| (Kind::IdleEnter as u8, 0, 0, 0));
        let mut b = good.clone();
        b[0] ^= 1;
        assert!(
            decode_ring(2, &b)
                .unwrap_err()
                .to_string()
                .contains("magic")
        );
        let mut b = good.clone();
        b[8] = 7;
        assert!(
            decode_ring(2, &b)
                .unwrap_err()
                .to_string()
                .contains("records of")
        );
        let mut b = good.clone();
        b[offsets::RECORDS + 4 * RECORD_SIZE + 12] ^= 1;
        let e = decode_ring(2, &b).unwrap_err().to_string();
        assert!(e.contains("cpu2") && e.contains("slot 4"), "{e}");
        let mut b = good.clone();
        b[offsets::RECORDS + 3 * RECORD_SIZE + 8] = 200;
        assert!(
            decode_ring(2, &b)
                .unwrap_err()
                .to_string()
                .contains("unknown kind")
        );
        // A head far beyond what was written: the window's records do not carry it.
        let mut b = good;
        b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_ring(2, &b).is_err());
        assert!(decode_ring(2, &[0u8; 10]).is_err());
    }

    #[test]
    fn switch_chains_and_timestamps_are_checked() {
        let seq = [(1u64, 2u64), (2, 3), (3, 1)];
        let b = ring(3, |s| {
            let (a, bb) = seq[s as usize];
            (Kind::Switch as u8, 0, a, bb)
        });
        let t = decode_ring(0, &b).unwrap();
        let mut d = TraceDump {
            freq: 1,
            mask: 0,
            cpus: alloc::vec![t],
            names: Vec::new(),
        };
        assert!(d.check_order().is_empty());
        d.cpus[0].events[2].a = 9;
        assert_eq!(d.check_order().len(), 1);
        d.cpus[0].events[2].ts = 5;
        assert_eq!(d.check_order().len(), 2);
    }

    #[test]
    fn names_decode_with_or_without_the_exited_mark_and_skip_empty_slots() {
        let mut b = alloc::vec![0u8; NAME_SLOTS * NAME_SLOT_SIZE];
        let put = |b: &mut Vec<u8>, slot: usize, id: u64, name: &str| {
            let off = slot * NAME_SLOT_SIZE;
            b[off..off + 8].copy_from_slice(&id.to_le_bytes());
            b[off + 8..off + 8 + name.len()].copy_from_slice(name.as_bytes());
        };
        put(&mut b, 5, 5, "idle/0");
        // Probed past a slot a living thread holds: not at id % NAME_SLOTS.
        put(&mut b, 8, 263, "worker");
        put(&mut b, 9, 10 | NAME_EXITED, "gone");
        put(&mut b, 11, 0, "never named");
        let names = decode_names(&b);
        assert_eq!(
            names,
            alloc::vec![
                (5, "idle/0".into()),
                (263, "worker".into()),
                (10, "gone".into())
            ]
        );
    }
}
