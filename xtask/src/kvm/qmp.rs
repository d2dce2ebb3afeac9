//! A minimal QMP (QEMU Machine Protocol) client over TCP: enough to stop the guest, have QEMU
//! write an ELF core of its memory (`dump-guest-memory`, `paging: false`) and quit.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

/// How long QEMU may take to write a dump (one pass over the guest's RAM).
const DUMP_TIMEOUT: Duration = Duration::from_secs(120);

/// A QMP session in command mode.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<TcpStream>,
    peer: String,
}

impl Qmp {
    /// Connects, reads the greeting and enters command mode.
    pub fn connect(addr: &str, timeout: Duration) -> Result<Self, String> {
        let target = addr
            .to_socket_addrs()
            .map_err(|e| format!("QMP address {addr}: {e}"))?
            .next()
            .ok_or_else(|| format!("QMP address {addr} resolves to nothing"))?;
        let stream = TcpStream::connect_timeout(&target, timeout)
            .map_err(|e| format!("connecting to QMP at {addr}: {e}"))?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| format!("QMP at {addr}: {e}"))?;
        let mut qmp = Self {
            reader: BufReader::new(stream),
            peer: addr.to_owned(),
        };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(format!("{addr} did not greet like QMP: {greeting}"));
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Runs one command and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, String> {
        let mut request = json!({ "execute": command });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let line = format!("{request}\n");
        self.reader
            .get_mut()
            .write_all(line.as_bytes())
            .map_err(|e| format!("QMP {command}: {e}"))?;
        loop {
            let message = self.read_message()?;
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = message.get("error") {
                let desc = error
                    .get("desc")
                    .and_then(Value::as_str)
                    .unwrap_or("no description");
                return Err(format!("QMP {command} failed: {desc}"));
            }
            // Anything else is an asynchronous event (STOP, DUMP_COMPLETED, ...).
        }
    }

    /// Pauses every guest CPU.
    pub fn stop(&mut self) -> Result<(), String> {
        self.execute("stop", None).map(|_| ())
    }

    /// Writes an ELF core of the guest's memory to `path` (synchronously).
    pub fn dump(&mut self, path: &Path) -> Result<(), String> {
        let path = std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let stream = self.reader.get_ref();
        let old = stream.read_timeout().ok().flatten();
        let _ = stream.set_read_timeout(Some(DUMP_TIMEOUT));
        let result = self.execute(
            "dump-guest-memory",
            Some(json!({ "paging": false, "protocol": format!("file:{}", path.display()) })),
        );
        let _ = self.reader.get_ref().set_read_timeout(old);
        result.map(|_| ())
    }

    /// Asks QEMU to exit.
    pub fn quit(&mut self) -> Result<(), String> {
        // QEMU may close the connection before or after answering.
        match self.execute("quit", None) {
            Ok(_) => Ok(()),
            Err(e) if e.contains("closed the connection") => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn read_message(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err(format!("QMP at {} closed the connection", self.peer)),
            Ok(_) => serde_json::from_str(&line)
                .map_err(|e| format!("QMP at {} sent something that is not JSON: {e}", self.peer)),
            Err(e) => Err(format!("QMP at {}: {e}", self.peer)),
        }
    }
}
