//! The error type of focal-data: always a sentence that names the file and, where
//! possible, the offending entry.

use std::fmt;
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    message: String,
}

impl Error {
    pub fn new(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
        }
    }

    /// `"{path}: {message}"`.
    pub fn in_file(path: &Path, message: impl fmt::Display) -> Error {
        Error::new(format!("{}: {message}", path.display()))
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
