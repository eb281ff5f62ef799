//! Evaluation: run the detector over a dataset without recording anything, turn its
//! detections into COCO results (original pixels, COCO category ids) and score them with
//! focal's COCOeval against the dataset's own ground truth.

use std::sync::Arc;
use std::time::Instant;

use focal_data::{Batch, Dataset, Detection, EvalResult, Loader, LoaderConfig, Target};

use crate::error::Error;
use crate::model::RetinaNet;
use crate::postprocess::{Detections, ImageSize};

/// The outcome of [`evaluate`].
#[derive(Clone, Debug)]
pub struct Evaluation {
    pub result: EvalResult,
    /// Every detection, in dataset order, as a COCO results file holds them.
    pub detections: Vec<Detection>,
    /// Wall time of inference and scoring.
    pub seconds: f64,
}

/// The sizes `RetinaNet::detect` needs for one image of a batch.
pub fn image_size(t: &Target) -> ImageSize {
    ImageSize {
        resized_height: t.input_height,
        resized_width: t.input_width,
        original_height: t.orig_height as usize,
        original_width: t.orig_width as usize,
    }
}

/// Detections of one batch (in each image's original pixels, labels 0..K−1).
pub fn detect_batch(model: &mut RetinaNet, batch: &Batch) -> Vec<Detections> {
    let sizes: Vec<ImageSize> = batch.targets.iter().map(image_size).collect();
    model.detect(&batch.images, &sizes)
}

/// COCO results for the detections of one image: `[x1, y1, x2, y2]` becomes `[x, y, w, h]`,
/// label k becomes `category_ids[k]`.
pub fn to_coco_results(image_id: i64, dets: &Detections, category_ids: &[i64]) -> Vec<Detection> {
    (0..dets.len())
        .map(|i| {
            let [x1, y1, x2, y2] = dets.boxes[i];
            Detection {
                image_id,
                category_id: category_ids[dets.labels[i]],
                bbox: [x1 as f64, y1 as f64, (x2 - x1) as f64, (y2 - y1) as f64],
                score: dets.scores[i] as f64,
            }
        })
        .collect()
}

/// Runs `model` over every image of `dataset` (in order, no flips, resized with
/// `min_size`/`max_size`, `batch_size` at a time) and evaluates the detections against
/// `dataset.ground_truth()`. `category_ids[k]` is the COCO id of the model's label k.
/// `progress(done, total)` is called after each batch.
pub fn evaluate(
    model: &mut RetinaNet,
    dataset: &Arc<dyn Dataset>,
    category_ids: &[i64],
    min_size: usize,
    max_size: usize,
    batch_size: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Evaluation, Error> {
    let eval = evaluate_until(
        model,
        dataset,
        category_ids,
        min_size,
        max_size,
        batch_size,
        &mut |done, total| {
            progress(done, total);
            true
        },
    )?;
    Ok(eval.expect("an evaluation that is never told to stop finishes"))
}

/// [`evaluate`], where `progress(done, total)` returns whether to go on: `false` abandons
/// the evaluation after that batch (Ctrl-C need not wait for the whole validation set),
/// and the result is `None`.
pub fn evaluate_until(
    model: &mut RetinaNet,
    dataset: &Arc<dyn Dataset>,
    category_ids: &[i64],
    min_size: usize,
    max_size: usize,
    batch_size: usize,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Option<Evaluation>, Error> {
    let started = Instant::now();
    if category_ids.len() != model.config.model.num_classes {
        return Err(Error::invalid(format!(
            "the model has {} classes but {} category ids were given",
            model.config.model.num_classes,
            category_ids.len()
        )));
    }
    let loader = Loader::new(
        Arc::clone(dataset),
        LoaderConfig::eval(batch_size, min_size, max_size),
    )?;
    let total = dataset.len();
    let mut done = 0;
    let mut detections = Vec::new();
    for batch in loader.epoch(0) {
        let batch = batch?;
        let per_image = detect_batch(model, &batch);
        for (t, dets) in batch.targets.iter().zip(&per_image) {
            detections.extend(to_coco_results(t.image_id, dets, category_ids));
        }
        done += batch.len();
        if !progress(done, total) {
            return Ok(None);
        }
    }
    let result = focal_data::evaluate(&dataset.ground_truth(), &detections)
        .map_err(|e| Error::context(format!("evaluating on {}", dataset.describe()), e))?;
    Ok(Some(Evaluation {
        result,
        detections,
        seconds: started.elapsed().as_secs_f64(),
    }))
}
