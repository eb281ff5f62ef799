//! The error of focal-nn: one enum. Messages are sentences naming the file, parameter or
//! setting; an error about a checkpoint or weights file is a [`Error::Checkpoint`] or
//! [`Error::Weights`] naming the file, whose [`source`](std::error::Error::source) says
//! what is wrong with it (and an I/O or decoding error is, in turn, the source of that).
//! `focal` prints the chain: `checkpoint runs/a/last.ckpt: cannot read: No such file or
//! directory (os error 2)`.

use std::path::{Path, PathBuf};

/// An error of focal-nn.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The checkpoint file at `path` could not be written, read or restored.
    #[error("checkpoint {}", path.display())]
    Checkpoint {
        path: PathBuf,
        #[source]
        source: Box<Error>,
    },
    /// The safetensors file at `path` could not be read, written or loaded.
    #[error("weights {}", path.display())]
    Weights {
        path: PathBuf,
        #[source]
        source: Box<Error>,
    },
    /// The tensor `name` of a file could not be used.
    #[error("{name}")]
    InTensor {
        name: String,
        #[source]
        source: Box<Error>,
    },
    /// Reading or writing failed: "cannot read", "cannot write".
    #[error("cannot {action}")]
    Io {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint's payload did not decode.
    #[error("cannot decode the payload")]
    Decode {
        #[source]
        source: bincode::Error,
    },
    /// The safetensors library refused a file or a tensor.
    #[error("{what}")]
    Safetensors {
        what: String,
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// A sentence naming the parameter, shape, state or setting.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// A sentence of its own.
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::Invalid(message.into())
    }

    /// `source`, about the checkpoint file `path`.
    pub fn in_checkpoint(path: &Path, source: impl Into<Error>) -> Error {
        Error::Checkpoint {
            path: path.to_path_buf(),
            source: Box::new(source.into()),
        }
    }

    /// `source`, about the safetensors file `path`.
    pub fn in_weights(path: &Path, source: impl Into<Error>) -> Error {
        Error::Weights {
            path: path.to_path_buf(),
            source: Box::new(source.into()),
        }
    }
}

impl Error {
    /// The message with every cause after it, joined by ": " (as `focal` prints it).
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        text
    }
}

pub type Result<T> = std::result::Result<T, Error>;
