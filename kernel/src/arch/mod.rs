//! Architecture support. Only `aarch64` exists; it is the one place with inline assembly and
//! system-register access. On the host (unit tests) this module is empty and the code that
//! needs it is compiled out.

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
