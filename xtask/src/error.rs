//! The error type shared by every xtask command: a message meant for a human, built up with
//! context as it travels outwards.

use std::fmt;

/// A failed step, with a message that says what was being done and why it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

/// Result type used throughout xtask.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Creates an error from a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// Adds a description of what was being attempted to any displayable error.
pub trait Context<T> {
    /// Wraps the error as `<what>: <error>`.
    fn context(self, what: impl fmt::Display) -> Result<T>;

    /// Like [`Context::context`], but only builds the description on failure.
    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error(format!("{what}: {e}")))
    }

    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| Error(format!("{}: {e}", what())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_prefixes_the_cause() {
        let r: std::result::Result<(), &str> = Err("no such file");
        assert_eq!(
            r.context("reading foo").unwrap_err().to_string(),
            "reading foo: no such file"
        );
    }

    #[test]
    fn with_context_is_lazy_and_prefixes() {
        let ok: std::result::Result<u8, &str> = Ok(3);
        let value = ok.with_context(|| -> String { panic!("must not be called on success") });
        assert_eq!(value, Ok(3));
        let err: std::result::Result<u8, &str> = Err("boom");
        assert_eq!(
            err.with_context(|| "step").unwrap_err().to_string(),
            "step: boom"
        );
    }
}
