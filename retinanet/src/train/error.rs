//! The error of a training run: a sentence naming the file, field or step.

use focal_nn::CheckpointError;

/// A training error: a sentence naming the file, field or step.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainError(pub String);

impl std::fmt::Display for TrainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TrainError {}

impl From<String> for TrainError {
    fn from(s: String) -> Self {
        TrainError(s)
    }
}

impl From<CheckpointError> for TrainError {
    fn from(e: CheckpointError) -> Self {
        TrainError(e.to_string())
    }
}

impl From<focal_data::Error> for TrainError {
    fn from(e: focal_data::Error) -> Self {
        TrainError(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, TrainError>;
