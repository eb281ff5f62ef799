//! Evaluation: run the detector over a dataset without recording anything, turn its
//! detections into COCO results (original pixels, COCO category ids) and score them with
//! focal's COCOeval against the dataset's own ground truth.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use focal_data::{Batch, BatchPart, Dataset, Detection, EvalResult, Loader, LoaderConfig, Target};

use super::comm::{any, Comm};
use super::distributed::first_failure;
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

/// [`evaluate_until`] shared by the ranks of `comm`: the evaluation loader's batches are
/// dealt out in turn (rank r runs batches r, r + N, r + 2N, ..., and loads only their
/// images), so that every image is in the same batch, padded alike, as in one process and
/// gets the same detections; the detections are then gathered and put back in dataset
/// order (each image's in the order its rank found them), and scored. Every rank scores
/// them (COCOeval of the gathered detections, the same bits everywhere), so every rank
/// holds the same result and takes the same decisions (the best AP) without another
/// message. `left_out` are the images the check before the run left out, the same on
/// every rank (one process's loader skips them; here the batches are cut without them).
///
/// After every round of one batch per rank, the ranks agree whether to go on: if
/// `progress` (called with this rank's images done and to do) returned `false` on any
/// rank, or an image failed to load on any rank, every rank stops there (`None`, or that
/// error). Collective. With one rank, exactly [`evaluate_until`].
#[allow(clippy::too_many_arguments)]
pub fn evaluate_on_until(
    comm: &dyn Comm,
    model: &mut RetinaNet,
    dataset: &Arc<dyn Dataset>,
    left_out: &Arc<BTreeSet<usize>>,
    category_ids: &[i64],
    min_size: usize,
    max_size: usize,
    batch_size: usize,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Option<Evaluation>, Error> {
    let (rank, size) = (comm.rank(), comm.size());
    if size == 1 {
        return evaluate_until(
            model,
            dataset,
            category_ids,
            min_size,
            max_size,
            batch_size,
            progress,
        );
    }
    if category_ids.len() != model.config.model.num_classes {
        return Err(Error::invalid(format!(
            "the model has {} classes but {} category ids were given",
            model.config.model.num_classes,
            category_ids.len()
        )));
    }
    let started = Instant::now();
    let loader = Loader::new(
        Arc::clone(dataset),
        LoaderConfig::eval(batch_size, min_size, max_size),
    )?;
    // This rank's images, for its progress: those of its batches, left-out ones aside.
    let total = (0..dataset.len())
        .filter(|i| (i / batch_size.max(1)) % size == rank && !left_out.contains(i))
        .count();
    let part = BatchPart {
        range: Arc::new(move |b, n| if b % size == rank { 0..n } else { n..n }),
        left_out: Arc::clone(left_out),
    };
    let mut local = Vec::new();
    let mut done = 0;
    let mut go_on = true;
    let mut failure = None;
    let mut batches = loader.epoch_part(0, part);
    // Every rank sees the same sequence of batches (its own full, the others' empty);
    // after each round of `size` of them, and after the last, the ranks agree.
    let mut seen = 0usize;
    loop {
        let next = batches.next();
        let finished = next.is_none();
        match next {
            Some(Ok(batch)) if !batch.is_empty() => {
                let per_image = detect_batch(model, &batch);
                for (t, dets) in batch.targets.iter().zip(&per_image) {
                    local.extend(to_coco_results(t.image_id, dets, category_ids));
                }
                done += batch.len();
                go_on &= progress(done, total);
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => failure = Some(e),
            None => {}
        }
        if !finished {
            seen += 1;
        }
        let round_over = if finished {
            !seen.is_multiple_of(size)
        } else {
            seen.is_multiple_of(size)
        };
        if round_over {
            let message = failure.as_ref().map(|e| e.to_string());
            if let Some((r, message)) = first_failure(comm, message)? {
                return Err(match failure {
                    Some(mine) => Error::from(mine),
                    None => Error::invalid(format!(
                        "rank {r} could not load an image to evaluate: {message}"
                    )),
                });
            }
            if any(comm, !go_on)? {
                return Ok(None);
            }
        }
        if finished {
            break;
        }
    }
    let mut detections = Vec::new();
    for (r, bytes) in comm
        .all_gather(&detections_to_bytes(&local))?
        .iter()
        .enumerate()
    {
        detections.extend(detections_from_bytes(bytes).ok_or_else(|| {
            Error::invalid(format!("rank {r} sent a malformed list of detections"))
        })?);
    }
    // Back in dataset order, as one process finds them (a stable sort keeps each image's
    // detections in their order).
    let position: HashMap<i64, usize> = (0..dataset.len())
        .map(|i| (dataset.image_id(i), i))
        .collect();
    detections.sort_by_key(|d| position.get(&d.image_id).copied().unwrap_or(usize::MAX));
    let result = focal_data::evaluate(&dataset.ground_truth(), &detections)
        .map_err(|e| Error::context(format!("evaluating on {}", dataset.describe()), e))?;
    Ok(Some(Evaluation {
        result,
        detections,
        seconds: started.elapsed().as_secs_f64(),
    }))
}

/// Bytes of one detection on the wire: image id, category id (i64), box and score (f64),
/// little-endian.
const DETECTION_BYTES: usize = 2 * 8 + 5 * 8;

fn detections_to_bytes(dets: &[Detection]) -> Vec<u8> {
    let mut out = Vec::with_capacity(dets.len() * DETECTION_BYTES);
    for d in dets {
        out.extend(d.image_id.to_le_bytes());
        out.extend(d.category_id.to_le_bytes());
        for v in d.bbox.iter().chain([&d.score]) {
            out.extend(v.to_le_bytes());
        }
    }
    out
}

fn detections_from_bytes(bytes: &[u8]) -> Option<Vec<Detection>> {
    if !bytes.len().is_multiple_of(DETECTION_BYTES) {
        return None;
    }
    let word = |c: &[u8], k: usize| -> [u8; 8] { c[8 * k..8 * k + 8].try_into().expect("8 bytes") };
    Some(
        bytes
            .chunks_exact(DETECTION_BYTES)
            .map(|c| Detection {
                image_id: i64::from_le_bytes(word(c, 0)),
                category_id: i64::from_le_bytes(word(c, 1)),
                bbox: [2, 3, 4, 5].map(|k| f64::from_le_bytes(word(c, k))),
                score: f64::from_le_bytes(word(c, 6)),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detections_travel_as_bytes_unchanged() {
        let dets = vec![
            Detection {
                image_id: 7,
                category_id: -3,
                bbox: [1.5, -0.0, f64::MAX, 1e-300],
                score: 0.25,
            },
            Detection {
                image_id: i64::MAX,
                category_id: 90,
                bbox: [0.0, 2.0, 3.0, 4.0],
                score: f64::MIN_POSITIVE,
            },
        ];
        let bytes = detections_to_bytes(&dets);
        assert_eq!(bytes.len(), 2 * DETECTION_BYTES);
        let back = detections_from_bytes(&bytes).unwrap();
        assert_eq!(back, dets);
        assert_eq!(back[0].bbox[1].to_bits(), (-0.0f64).to_bits());
        assert!(detections_from_bytes(&bytes[1..]).is_none());
    }
}
