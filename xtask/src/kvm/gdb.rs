//! A live QEMU guest as kvm memory, through QEMU's gdbstub: a minimal GDB remote serial
//! protocol client over TCP (`qSupported`, `Qqemu.PhyMemMode`, `m addr,len`, `D`).
//!
//! QEMU's gdbstub stops the guest when a debugger connects and lets it run again when the
//! debugger detaches (`D`, sent by [`GdbRemote::detach`] and on drop), so everything read
//! through one connection comes from one consistent, paused machine. Reads go to physical
//! memory (`Qqemu.PhyMemMode:1`) when QEMU supports it, so they do not depend on the MMU
//! state of the CPU the stub happens to select; this kernel maps itself 1:1 either way.
//!
//! Every wait has a time limit, and a stub that closes the connection, answers garbage or
//! says `Exx` gives an error naming the address, never a hang or a panic.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use kernel::kvm::KvmError;

/// The largest memory read sent as one `m` packet.
const MAX_READ: usize = 0x800;

/// How many times a packet the stub did not acknowledge (`-`) is sent again.
const RETRIES: usize = 3;

/// A connection to a gdbstub.
#[derive(Debug)]
pub struct GdbRemote {
    stream: TcpStream,
    peer: String,
    timeout: Duration,
    max_read: usize,
    attached: bool,
    /// Bytes received but not consumed yet.
    pending: Vec<u8>,
}

impl GdbRemote {
    /// Connects to the gdbstub at `addr` (`host:port`), which stops the guest.
    pub fn connect(addr: &str, timeout: Duration) -> Result<Self, String> {
        let target = addr
            .to_socket_addrs()
            .map_err(|e| format!("gdbstub address {addr}: {e}"))?
            .next()
            .ok_or_else(|| format!("gdbstub address {addr} resolves to nothing"))?;
        let stream = TcpStream::connect_timeout(&target, timeout)
            .map_err(|e| format!("connecting to the gdbstub at {addr}: {e}"))?;
        Self::over(stream, addr, timeout)
    }

    /// Speaks the protocol over an open stream (tests use a fake stub).
    pub fn over(stream: TcpStream, peer: &str, timeout: Duration) -> Result<Self, String> {
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .and_then(|()| stream.set_nodelay(true))
            .map_err(|e| format!("gdbstub at {peer}: {e}"))?;
        let mut remote = Self {
            stream,
            peer: peer.to_owned(),
            timeout,
            max_read: MAX_READ,
            attached: true,
            pending: Vec::new(),
        };
        let features = remote.transact("qSupported:multiprocess-;swbreak+")?;
        if let Some(size) = features
            .split(';')
            .find_map(|f| f.strip_prefix("PacketSize="))
            .and_then(|hex| usize::from_str_radix(hex, 16).ok())
        {
            // A reply carries two hex digits per byte plus framing.
            remote.max_read = (size.saturating_sub(16) / 2).clamp(16, MAX_READ);
        }
        // Physical addresses when QEMU offers it; an empty reply means unsupported.
        let _ = remote.transact("Qqemu.PhyMemMode:1")?;
        Ok(remote)
    }

    /// Reads guest memory at `addr`.
    pub fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), KvmError> {
        if addr.checked_add(buf.len() as u64).is_none() {
            return Err(KvmError::OutsideDump {
                addr,
                len: buf.len(),
            });
        }
        let mut done = 0;
        while done < buf.len() {
            let at = addr + done as u64;
            let n = (buf.len() - done).min(self.max_read);
            let reply = self
                .transact(&format!("m{at:x},{n:x}"))
                .map_err(|e| KvmError::Source(format!("reading {at:#x} ({n} bytes): {e}")))?;
            if reply.starts_with('E') && reply.len() == 3 || reply.is_empty() {
                return Err(KvmError::Source(format!(
                    "address {at:#x} ({n} bytes) outside the guest's memory (gdbstub answered \
                     {reply:?})"
                )));
            }
            let bytes = decode_hex(&reply).ok_or_else(|| {
                KvmError::Source(format!(
                    "gdbstub at {} sent a malformed memory reply for {at:#x}",
                    self.peer
                ))
            })?;
            if bytes.is_empty() || bytes.len() > n {
                return Err(KvmError::Source(format!(
                    "gdbstub at {} sent {} bytes for a read of {n} at {at:#x}",
                    self.peer,
                    bytes.len()
                )));
            }
            buf[done..done + bytes.len()].copy_from_slice(&bytes);
            done += bytes.len();
        }
        Ok(())
    }

    /// Detaches; QEMU lets the guest run again.
    pub fn detach(&mut self) -> Result<(), String> {
        if !self.attached {
            return Ok(());
        }
        self.attached = false;
        self.transact("D").map(|_| ())
    }

    /// Sends a packet and returns the reply's payload.
    fn transact(&mut self, payload: &str) -> Result<String, String> {
        let checksum = payload.bytes().fold(0u8, |s, b| s.wrapping_add(b));
        let frame = format!("${payload}#{checksum:02x}");
        for _ in 0..RETRIES {
            self.stream
                .write_all(frame.as_bytes())
                .map_err(|e| self.io_error("sending to", &e))?;
            match self.next_byte_skipping(|b| b != b'+' && b != b'-')? {
                b'+' => return self.receive(),
                _ => continue,
            }
        }
        Err(format!(
            "gdbstub at {} refused the packet {RETRIES} times",
            self.peer
        ))
    }

    /// Receives one packet (`$payload#cs`), acknowledges it and returns the payload.
    fn receive(&mut self) -> Result<String, String> {
        for _ in 0..RETRIES {
            self.next_byte_skipping(|b| b != b'$')?;
            let mut raw = Vec::new();
            loop {
                match self.next_byte()? {
                    b'#' => break,
                    b => raw.push(b),
                }
                if raw.len() > 1 << 20 {
                    return Err(format!("gdbstub at {} sent an endless packet", self.peer));
                }
            }
            let hi = self.next_byte()?;
            let lo = self.next_byte()?;
            let sum = raw.iter().fold(0u8, |s, b| s.wrapping_add(*b));
            let ok = std::str::from_utf8(&[hi, lo])
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                == Some(sum);
            if !ok {
                self.stream
                    .write_all(b"-")
                    .map_err(|e| self.io_error("sending to", &e))?;
                continue;
            }
            self.stream
                .write_all(b"+")
                .map_err(|e| self.io_error("sending to", &e))?;
            let payload = expand_run_lengths(&raw)
                .ok_or_else(|| format!("gdbstub at {} sent a malformed packet", self.peer))?;
            return String::from_utf8(payload)
                .map_err(|_| format!("gdbstub at {} sent a packet that is not text", self.peer));
        }
        Err(format!(
            "gdbstub at {} sent {RETRIES} packets with bad checksums",
            self.peer
        ))
    }

    fn next_byte_skipping(&mut self, skip: impl Fn(u8) -> bool) -> Result<u8, String> {
        loop {
            let b = self.next_byte()?;
            if !skip(b) {
                return Ok(b);
            }
        }
    }

    fn next_byte(&mut self) -> Result<u8, String> {
        if self.pending.is_empty() {
            let mut chunk = [0u8; 4096];
            let n = match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.attached = false;
                    return Err(format!("gdbstub at {} closed the connection", self.peer));
                }
                Ok(n) => n,
                Err(e) => return Err(self.io_error("receiving from", &e)),
            };
            self.pending.extend_from_slice(&chunk[..n]);
            self.pending.reverse();
        }
        self.pending
            .pop()
            .ok_or_else(|| format!("gdbstub at {}: no data", self.peer))
    }

    fn io_error(&mut self, what: &str, e: &std::io::Error) -> String {
        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
            format!(
                "gdbstub at {} did not answer within {} s",
                self.peer,
                self.timeout.as_secs_f64()
            )
        } else {
            self.attached = false;
            format!("{what} the gdbstub at {}: {e}", self.peer)
        }
    }
}

impl Drop for GdbRemote {
    fn drop(&mut self) {
        // Let the guest run again; a dead connection has nothing to detach.
        let _ = self.detach();
    }
}

/// Decodes a run-length-encoded packet body (`X*n` repeats X n-29 more times).
fn expand_run_lengths(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'*' {
            let last = *out.last()?;
            let count = raw.get(i + 1)?.checked_sub(29)?;
            out.extend(std::iter::repeat_n(last, usize::from(count)));
            i += 2;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Decodes hex digits into bytes.
fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    /// A fake gdbstub serving `memory` at address 0x1000, which closes the connection after
    /// answering `reads_before_close` memory reads.
    fn fake_stub(memory: Vec<u8>, reads_before_close: usize) -> (String, thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let handle = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut reads = 0;
            let mut buf = Vec::new();
            let mut byte = [0u8; 1];
            loop {
                buf.clear();
                // Read one packet.
                loop {
                    if s.read(&mut byte).unwrap_or(0) == 0 {
                        return;
                    }
                    if byte[0] == b'$' {
                        break;
                    }
                }
                loop {
                    if s.read(&mut byte).unwrap_or(0) == 0 {
                        return;
                    }
                    if byte[0] == b'#' {
                        break;
                    }
                    buf.push(byte[0]);
                }
                let mut cs = [0u8; 2];
                if s.read_exact(&mut cs).is_err() {
                    return;
                }
                let _ = s.write_all(b"+");
                let packet = String::from_utf8_lossy(&buf).into_owned();
                let reply = if packet.starts_with("qSupported") {
                    "PacketSize=40".to_owned()
                } else if let Some(args) = packet.strip_prefix('m') {
                    if reads == reads_before_close {
                        // Half a reply, then gone.
                        let _ = s.write_all(b"$0102");
                        return;
                    }
                    reads += 1;
                    let (a, n) = args.split_once(',').unwrap();
                    let a = u64::from_str_radix(a, 16).unwrap();
                    let n = usize::from_str_radix(n, 16).unwrap();
                    match a.checked_sub(0x1000).map(|o| o as usize) {
                        Some(o) if o + n <= memory.len() => memory[o..o + n]
                            .iter()
                            .map(|b| format!("{b:02x}"))
                            .collect(),
                        _ => "E14".to_owned(),
                    }
                } else if packet == "D" {
                    "OK".to_owned()
                } else {
                    String::new()
                };
                let sum = reply.bytes().fold(0u8, |s, b| s.wrapping_add(b));
                let _ = s.write_all(format!("${reply}#{sum:02x}").as_bytes());
                // Swallow the client's ack.
                let _ = s.read(&mut byte);
            }
        });
        (addr, handle)
    }

    #[test]
    fn reads_memory_in_packet_sized_pieces() {
        let memory: Vec<u8> = (0..200u8).collect();
        let (addr, stub) = fake_stub(memory.clone(), usize::MAX);
        let mut gdb = GdbRemote::connect(&addr, Duration::from_secs(5)).unwrap();
        assert_eq!(gdb.max_read, 24, "PacketSize=0x40 limits reads");
        let mut buf = vec![0u8; 150];
        gdb.read(0x1010, &mut buf).unwrap();
        assert_eq!(buf, memory[0x10..0x10 + 150]);
        let e = gdb.read(0x900, &mut [0u8; 4]).unwrap_err().to_string();
        assert!(
            e.contains("address 0x900 (4 bytes) outside the guest's memory"),
            "{e}"
        );
        gdb.detach().unwrap();
        drop(gdb);
        stub.join().unwrap();
    }

    #[test]
    fn a_stub_that_disconnects_mid_read_is_an_error() {
        let (addr, stub) = fake_stub(vec![0; 100], 1);
        let mut gdb = GdbRemote::connect(&addr, Duration::from_secs(5)).unwrap();
        let e = gdb.read(0x1000, &mut [0u8; 60]).unwrap_err().to_string();
        assert!(e.contains("closed the connection"), "{e}");
        assert!(e.starts_with("reading 0x1018 (24 bytes)"), "{e}");
        stub.join().unwrap();
    }

    #[test]
    fn a_silent_stub_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let e = GdbRemote::connect(&addr, Duration::from_millis(200)).unwrap_err();
        assert!(e.contains("did not answer within 0.2 s"), "{e}");
    }

    #[test]
    fn packet_bodies_decode() {
        assert_eq!(expand_run_lengths(b"0* "), Some(b"0000".to_vec()));
        assert_eq!(expand_run_lengths(b"*!"), None);
        assert_eq!(decode_hex("0aff"), Some(vec![0x0a, 0xff]));
        assert_eq!(decode_hex("0af"), None);
        assert_eq!(decode_hex("zz"), None);
    }
}
