//! Reading the checkpoints the trainer writes: a model rebuilt for `focal eval`,
//! `focal detect` and `focal loss-cdf` ([`load_trained_model`]), and the checked
//! configuration and metadata a resumed run starts from ([`read_checkpoint`]).
//!
//! A trainer checkpoint is a `focal_nn::Checkpoint` whose configuration text is the run's
//! [`TrainConfig`] as TOML and whose metadata is a [`RunMetadata`] as JSON, so the file
//! alone rebuilds its model.

use std::path::Path;

use focal_engine::Rng;
use focal_nn::Checkpoint;

use super::config::TrainConfig;
use super::records::RunMetadata;
use crate::error::{Error, Result};
use crate::model::RetinaNet;

/// A model rebuilt from a checkpoint written by the trainer, with its configuration and
/// metadata (class names). For `focal eval` and `focal detect`.
pub struct TrainedModel {
    pub model: RetinaNet,
    pub config: TrainConfig,
    pub metadata: RunMetadata,
    pub step: u64,
}

/// Reads a trainer checkpoint and rebuilds its model in evaluation mode.
pub fn load_trained_model(path: &Path) -> Result<TrainedModel> {
    let (ckpt, config, metadata) = read_checkpoint(path)?;
    let mut model = rebuild_model(&ckpt, &config, path)?;
    model.set_train(false);
    Ok(TrainedModel {
        model,
        config,
        metadata,
        step: ckpt.step,
    })
}

/// A checkpoint with its configuration and metadata, checked against each other.
pub fn read_checkpoint(path: &Path) -> Result<(Checkpoint, TrainConfig, RunMetadata)> {
    let ckpt = Checkpoint::read(path)?;
    let config = TrainConfig::from_toml(&ckpt.config).map_err(|e| {
        ckpt_error(
            path,
            Error::context("its configuration is not a focal training configuration", e),
        )
    })?;
    let metadata: RunMetadata = serde_json::from_str(&ckpt.metadata).map_err(|e| {
        ckpt_error(
            path,
            Error::Json {
                what: "its metadata is not a focal training record".into(),
                source: e,
            },
        )
    })?;
    if metadata.categories.len() != config.model.num_classes {
        return Err(ckpt_error(
            path,
            Error::invalid(format!(
                "it names {} classes but its model has {}",
                metadata.categories.len(),
                config.model.num_classes
            )),
        ));
    }
    Ok((ckpt, config, metadata))
}

/// The model of `config` (built from its seed, as the trainer builds it) with the
/// checkpoint's weights.
pub fn rebuild_model(ckpt: &Checkpoint, config: &TrainConfig, path: &Path) -> Result<RetinaNet> {
    let mut model = RetinaNet::new(&config.retinanet(), &mut Rng::new(config.seed))
        .map_err(|e| ckpt_error(path, e))?;
    ckpt.restore_model(&mut model)
        .map_err(|e| ckpt_error(path, e))?;
    Ok(model)
}

/// An error about the checkpoint at `path`: "checkpoint PATH: " and the cause.
pub fn ckpt_error(path: &Path, cause: impl Into<Error>) -> Error {
    Error::in_checkpoint(path, cause)
}
