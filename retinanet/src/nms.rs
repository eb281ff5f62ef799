//! Non-maximum suppression: of overlapping detections of one class keep the best.
//!
//! Greedy, class by class: walk the boxes of a class from the highest score down; keep a
//! box unless its IoU with a box already kept is **strictly** above the threshold (0.5),
//! as torchvision's kernel does. Boxes of different classes never suppress each other.
//!
//! **Ties.** Boxes with equal scores are taken in input order: the one listed first
//! counts as the higher. (torchvision leaves this order unspecified.) The returned
//! indices are sorted by descending score, ties again by input order, so the result is a
//! function of the input alone.

use crate::boxes::{iou, Box4};

/// Input indices ordered by descending score, ties by ascending index.
pub fn order_by_score(scores: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    // A stable sort keeps equal scores in input order.
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
}

/// Greedy NMS of boxes that all belong to one class: the kept indices, best first.
pub fn nms(boxes: &[Box4], scores: &[f32], iou_threshold: f32) -> Vec<usize> {
    assert_eq!(
        boxes.len(),
        scores.len(),
        "nms: boxes and scores differ in length"
    );
    let mut kept: Vec<usize> = Vec::new();
    for i in order_by_score(scores) {
        if kept
            .iter()
            .all(|&k| iou(&boxes[k], &boxes[i]) <= iou_threshold)
        {
            kept.push(i);
        }
    }
    kept
}

/// Class-wise NMS: NMS within each class separately. Returns the kept indices sorted by
/// descending score (ties by input order).
pub fn batched_nms(
    boxes: &[Box4],
    scores: &[f32],
    classes: &[usize],
    iou_threshold: f32,
) -> Vec<usize> {
    assert!(
        boxes.len() == scores.len() && scores.len() == classes.len(),
        "batched_nms: boxes, scores and classes differ in length"
    );
    // Group the indices by class, keeping input order inside each group.
    let num_classes = classes.iter().map(|&c| c + 1).max().unwrap_or(0);
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); num_classes];
    for (i, &c) in classes.iter().enumerate() {
        groups[c].push(i);
    }
    let mut kept: Vec<usize> = Vec::new();
    for group in groups.iter().filter(|g| !g.is_empty()) {
        let b: Vec<Box4> = group.iter().map(|&i| boxes[i]).collect();
        let s: Vec<f32> = group.iter().map(|&i| scores[i]).collect();
        kept.extend(nms(&b, &s, iou_threshold).into_iter().map(|j| group[j]));
    }
    // Best first; equal scores by input index.
    kept.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use focal_engine::Rng;

    /// The textbook formulation, written independently: repeatedly take the best
    /// remaining box (ties: lowest index), emit it, and delete every remaining box of its
    /// class that overlaps it by more than the threshold.
    fn naive(boxes: &[Box4], scores: &[f32], classes: &[usize], t: f32) -> Vec<usize> {
        let mut alive: Vec<bool> = vec![true; boxes.len()];
        let mut out = Vec::new();
        loop {
            let mut best: Option<usize> = None;
            for i in 0..boxes.len() {
                if alive[i] && best.is_none_or(|b| scores[i] > scores[b]) {
                    best = Some(i);
                }
            }
            let Some(b) = best else { break };
            out.push(b);
            alive[b] = false;
            for i in 0..boxes.len() {
                if alive[i] && classes[i] == classes[b] && iou(&boxes[i], &boxes[b]) > t {
                    alive[i] = false;
                }
            }
        }
        out
    }

    #[test]
    fn matches_a_naive_reference_on_random_boxes() {
        let mut rng = Rng::new(21);
        for trial in 0..200 {
            let n = 1 + rng.below(120);
            let boxes: Vec<Box4> = (0..n)
                .map(|_| {
                    let (x, y) = (rng.uniform_range(0., 100.), rng.uniform_range(0., 100.));
                    [
                        x,
                        y,
                        x + rng.uniform_range(5., 60.),
                        y + rng.uniform_range(5., 60.),
                    ]
                })
                .collect();
            // Coarse scores so that ties happen.
            let scores: Vec<f32> = (0..n).map(|_| rng.below(20) as f32 / 20.0).collect();
            let classes: Vec<usize> = (0..n).map(|_| rng.below(3)).collect();
            let t = [0.3, 0.5, 0.7][trial % 3];
            let got = batched_nms(&boxes, &scores, &classes, t);
            let want = naive(&boxes, &scores, &classes, t);
            assert_eq!(got, want, "trial {trial}");
        }
    }

    #[test]
    fn suppression_is_strictly_above_the_threshold() {
        // [0,0,10,10] and [0,0,10,20]: IoU 100/200 = 0.5 exactly, so both stay at 0.5.
        let boxes = [[0., 0., 10., 10.], [0., 0., 10., 20.]];
        assert_eq!(nms(&boxes, &[0.9, 0.8], 0.5), vec![0, 1]);
        assert_eq!(nms(&boxes, &[0.9, 0.8], 0.49), vec![0]);
        // Different classes never suppress each other; equal scores keep input order.
        let same = [[0., 0., 10., 10.], [0., 0., 10., 10.], [0., 0., 10., 10.]];
        assert_eq!(
            batched_nms(&same, &[0.5, 0.5, 0.5], &[1, 0, 1], 0.5),
            vec![0, 1]
        );
    }
}
