//! The error of focal-data: one enum, every message a sentence that names the file and,
//! where possible, the offending entry. A cause from outside (an I/O error, a JSON syntax
//! error, an image decoder's error, the error of one image of a dataset) is kept as the
//! error's [`source`](std::error::Error::source), not copied into its text; `focal` prints
//! the whole chain (`file: cannot read the image: No such file or directory`).

use std::fmt;
use std::path::{Path, PathBuf};

/// An error of focal-data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder could not be read, written or created.
    #[error("{}: cannot {action}", path.display())]
    Io {
        path: PathBuf,
        /// What was being done: "read the image", "write the file", ...
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// An image could not be decoded (or encoded, without a path).
    #[error("{}cannot {action}", at(path))]
    Image {
        path: Option<PathBuf>,
        action: &'static str,
        #[source]
        source: image::ImageError,
    },
    /// A JSON file that does not parse, or JSON that could not be written.
    #[error("{}: {what}", path.display())]
    Json {
        path: PathBuf,
        /// What the file should have been, and where it went wrong.
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// The error of one image of a COCO dataset, with the image's id and annotation file.
    #[error("image id {id} listed in {}", annotation_file.display())]
    InImage {
        id: i64,
        annotation_file: PathBuf,
        #[source]
        source: Box<Error>,
    },
    /// Images of a dataset that cannot be used, all of them, found by the check before
    /// training ([`crate::check::check_dataset`]).
    #[error("{}", bad_images(dataset, *total, problems))]
    BadImages {
        /// The dataset, as [`crate::Dataset::describe`] gives it.
        dataset: String,
        total: usize,
        problems: Vec<crate::check::ImageProblem>,
    },
    /// Anything else: a sentence naming the file, entry or setting.
    #[error("{0}")]
    Invalid(String),
}

/// "3 of 50 images of DATASET cannot be used:" and one line per image.
fn bad_images(dataset: &str, total: usize, problems: &[crate::check::ImageProblem]) -> String {
    let mut s = format!(
        "{} of {total} images of {dataset} cannot be used:",
        problems.len()
    );
    for p in problems {
        s.push_str(&format!("\n  {p}"));
    }
    s.push_str(
        "\nfix or remove them, or leave them out with --skip-bad-images (data.skip_bad_images)",
    );
    s
}

/// `"PATH: "`, or nothing.
fn at(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map_or(String::new(), |p| format!("{}: ", p.display()))
}

impl Error {
    /// A sentence of its own.
    pub fn new(message: impl Into<String>) -> Error {
        Error::Invalid(message.into())
    }

    /// `"{path}: {message}"`.
    pub fn in_file(path: &Path, message: impl fmt::Display) -> Error {
        Error::Invalid(format!("{}: {message}", path.display()))
    }

    /// `"{path}: cannot {action}"`, caused by `source`.
    pub fn io(path: &Path, action: &'static str, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            action,
            source,
        }
    }

    /// `"{path}: {what}"`, caused by a JSON error.
    pub fn json(path: &Path, what: impl Into<String>, source: serde_json::Error) -> Error {
        Error::Json {
            path: path.to_path_buf(),
            what: what.into(),
            source,
        }
    }

    /// The message with every cause after it, joined by ": " (as `focal` prints it).
    pub fn chain(&self) -> String {
        chain(self)
    }
}

/// An error's message followed by those of its causes ([`source`](std::error::Error::source)
/// after source), joined by ": ".
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_kept_as_sources_and_chained() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = Error::io(Path::new("a.png"), "read the image", io);
        assert_eq!(e.to_string(), "a.png: cannot read the image");
        let source = std::error::Error::source(&e).expect("the I/O error is the source");
        assert_eq!(source.to_string(), "no such file");
        let wrapped = Error::InImage {
            id: 7,
            annotation_file: PathBuf::from("ann.json"),
            source: Box::new(e),
        };
        assert_eq!(
            wrapped.chain(),
            "image id 7 listed in ann.json: a.png: cannot read the image: no such file"
        );
        assert_eq!(Error::new("plain").chain(), "plain");
    }
}
