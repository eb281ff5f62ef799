//! The error of focal-retinanet: one enum for the detector, its configuration, training,
//! evaluation and the ablation. Every message is a sentence naming the file, field or
//! step. Errors of the crates below (a dataset, a checkpoint) pass through unchanged
//! ([`Error::Data`], [`Error::Nn`]); a cause from outside (an I/O, JSON or TOML error) is
//! kept as the [`source`](std::error::Error::source), and `focal` prints the whole chain:
//! `checkpoint runs/a/last.ckpt: its configuration is not a focal training configuration:
//! unknown field ...`.
//!
//! What stays a panic: a shape that breaks an engine op's contract (a programming error
//! inside focal, not a user's input); see the engine's documentation.

use std::path::{Path, PathBuf};

/// An error of focal-retinanet.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value out of range; the message names the field.
    #[error("{0}")]
    Config(String),
    /// A configuration text that is not TOML of the expected shape (an unknown key, a
    /// wrong type, a misspelt value).
    #[error(transparent)]
    Toml(#[from] toml::de::Error),
    /// A dataset, image, annotation or results file (focal-data).
    #[error(transparent)]
    Data(#[from] focal_data::Error),
    /// A checkpoint or weights file, a model or optimiser state (focal-nn).
    #[error(transparent)]
    Nn(#[from] focal_nn::Error),
    /// What is wrong with the trainer checkpoint at `path`.
    #[error("checkpoint {}", path.display())]
    Checkpoint {
        path: PathBuf,
        #[source]
        source: Box<Error>,
    },
    /// What went wrong at a higher level (`what`), caused by `source`: "its configuration is
    /// not a focal training configuration", "cell γ = 2, α = 0.25".
    #[error("{what}")]
    Context {
        what: String,
        #[source]
        source: Box<Error>,
    },
    /// A file or folder could not be read, written, created or removed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// "read", "write", "create the run folder", ...
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// JSON that does not parse (a line of `metrics.jsonl`, a cell record) or cannot be
    /// written.
    #[error("{what}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// The loss became NaN or infinite: the step, the two losses, what was kept, and what
    /// to try.
    #[error(
        "the loss is not finite at step {step} (epoch {epoch}): classification \
         {classification}, box {box_regression}; training stopped and {kept}. Try a lower \
         learning rate (--lr), a longer warm-up or gradient clipping (--clip-grad-norm)."
    )]
    NonFiniteLoss {
        step: u64,
        /// 1-based.
        epoch: u64,
        classification: f32,
        box_regression: f32,
        /// "the last good checkpoint PATH is intact", or that none was written yet.
        kept: String,
    },
    /// Any other sentence: ground truth that does not fit, a run folder already in use, a
    /// grid without cells, ...
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// A configuration error naming the field.
    pub fn config(message: impl Into<String>) -> Error {
        Error::Config(message.into())
    }

    /// A sentence of its own.
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::Invalid(message.into())
    }

    /// `source`, about the trainer checkpoint `path`.
    pub fn in_checkpoint(path: &Path, source: impl Into<Error>) -> Error {
        Error::Checkpoint {
            path: path.to_path_buf(),
            source: Box::new(source.into()),
        }
    }

    /// `what`, caused by `source`.
    pub fn context(what: impl Into<String>, source: impl Into<Error>) -> Error {
        Error::Context {
            what: what.into(),
            source: Box::new(source.into()),
        }
    }

    /// "cannot {action} {path}", caused by `source`.
    pub fn io(action: &'static str, path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The message with every cause after it, joined by ": " (as `focal` prints it).
    pub fn chain(&self) -> String {
        focal_data::error::chain(self)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_from_other_crates_and_outside_are_chained() {
        let inner = focal_nn::Error::invalid("it holds no optimiser state");
        let e = Error::in_checkpoint(Path::new("best.ckpt"), inner);
        assert_eq!(e.to_string(), "checkpoint best.ckpt");
        assert_eq!(
            e.chain(),
            "checkpoint best.ckpt: it holds no optimiser state"
        );
        let toml_error = toml::from_str::<toml::Table>("a = ").unwrap_err();
        let e = Error::in_checkpoint(Path::new("x.ckpt"), toml_error);
        assert!(
            e.chain().starts_with("checkpoint x.ckpt: "),
            "{}",
            e.chain()
        );
        // A wrapped error of the crates below shows as itself.
        let data = focal_data::Error::new("a.json: entry 3: no bbox");
        assert_eq!(Error::from(data).to_string(), "a.json: entry 3: no bbox");
    }
}
