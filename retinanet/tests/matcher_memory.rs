//! The matcher's memory does not grow with boxes × anchors. Counted with an allocator
//! that records the peak of the heap (its own test binary: the count is process-wide, so
//! no other test may allocate meanwhile).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use focal_retinanet::anchors::Anchors;
use focal_retinanet::config::{AnchorConfig, MatcherConfig};
use focal_retinanet::matcher::{match_anchors, Match};
use focal_retinanet::targets::{assign_targets, GroundTruth};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the counters only
// observe the sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes of heap the call took at its peak, above what was live before it.
fn peak_of<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = LIVE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let r = f();
    (r, PEAK.load(Ordering::SeqCst) - before)
}

#[test]
fn matching_memory_is_bounded_independently_of_the_boxes() {
    // A 512-px image: 49 104 anchors (9 per cell on P3..P7).
    let anchors = Anchors::generate(&AnchorConfig::default(), 512, 512);
    let n = anchors.boxes.len();
    assert_eq!(n, 49_104);
    let boxes = |count: usize| -> Vec<[f32; 4]> {
        (0..count)
            .map(|i| {
                let (x, y) = ((i * 37 % 480) as f32, (i * 91 % 480) as f32);
                [x, y, x + 8.0 + (i % 24) as f32, y + 8.0 + (i % 17) as f32]
            })
            .collect()
    };
    let config = MatcherConfig::default();
    let few = boxes(10);
    let many = boxes(1000);
    let (m_few, peak_few) = peak_of(|| match_anchors(&config, &few, &anchors.boxes));
    let (m_many, peak_many) = peak_of(|| match_anchors(&config, &many, &anchors.boxes));
    assert!(
        m_many
            .iter()
            .filter(|m| matches!(m, Match::Object(_)))
            .count()
            > 1000
    );
    assert!(m_few.iter().any(|m| matches!(m, Match::Object(_))));
    // Per anchor: the match (16 bytes), its best box (8) and IoU (4), plus one f32 per
    // box. The IoU matrix of 1000 boxes alone would be 1000 × 49 104 × 4 = 196 MB.
    let bound = n * (16 + 8 + 4) + 1000 * 4 + (1 << 16);
    assert!(peak_few <= bound, "10 boxes: {peak_few} bytes > {bound}");
    assert!(
        peak_many <= bound,
        "1000 boxes: {peak_many} bytes > {bound}"
    );
    eprintln!("peak heap of matching: {peak_few} bytes (10 boxes), {peak_many} (1000 boxes)");

    // Beyond the cap, a clear error instead.
    let gt = GroundTruth {
        boxes: boxes(focal_data::MAX_BOXES_PER_IMAGE + 1),
        labels: vec![0; focal_data::MAX_BOXES_PER_IMAGE + 1],
    };
    let e = assign_targets(&config, &anchors, &[gt], 1)
        .unwrap_err()
        .chain();
    assert!(
        e.contains("1001 boxes") && e.contains("1000 per image"),
        "{e}"
    );
}
