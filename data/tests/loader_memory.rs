//! The loader's prefetch queue is bounded, and queued batches are not counted as tensor
//! memory until the consumer takes them. (Its own test binary: `live_bytes` is
//! process-wide, so no other test may make tensors meanwhile.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use focal_data::{
    Category, CocoFile, Dataset, Loader, LoaderConfig, Result, Sample, ShapesConfig, ShapesDataset,
    Split,
};

/// The shapes dataset, counting how many images were loaded.
struct Counting {
    inner: ShapesDataset,
    loads: AtomicUsize,
}

impl Dataset for Counting {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn load(&self, index: usize) -> Result<Option<Sample>> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.inner.load(index)
    }
    fn categories(&self) -> &[Category] {
        self.inner.categories()
    }
    fn image_id(&self, index: usize) -> i64 {
        self.inner.image_id(index)
    }
    fn image_size(&self, index: usize) -> (u32, u32) {
        self.inner.image_size(index)
    }
    fn ground_truth(&self) -> CocoFile {
        self.inner.ground_truth()
    }
    fn describe(&self) -> String {
        "counting shapes".into()
    }
}

#[test]
fn prefetch_is_bounded_and_queued_batches_are_not_tensors() {
    let ds = Arc::new(Counting {
        inner: ShapesDataset::new(ShapesConfig {
            size: 64,
            ..ShapesConfig::new(Split::Train, 40, 0)
        })
        .unwrap(),
        loads: AtomicUsize::new(0),
    });
    let mut config = LoaderConfig::train(2, 64, 64, 0);
    config.prefetch = 3;
    let loader = Loader::new(ds.clone(), config).unwrap();
    let before = focal_engine::live_bytes();

    let mut epoch = loader.epoch(0);
    let first = epoch.next().unwrap().unwrap();
    // Give the background thread ample time to run as far ahead as it may.
    std::thread::sleep(Duration::from_millis(500));
    let loads = ds.loads.load(Ordering::SeqCst);
    // Taken (1) + queued (prefetch = 3) + being built and blocked on the full queue (1),
    // 2 images each: at most 10 of the 40 images.
    assert!(loads <= 10, "{loads} images loaded ahead");
    assert!(loads >= 4, "the queue did not fill ({loads} loads)");
    // Only the batch we hold is tensor memory: 2 x 3 x 64 x 64 floats.
    assert_eq!(focal_engine::live_bytes() - before, 2 * 3 * 64 * 64 * 4);

    drop(first);
    assert_eq!(focal_engine::live_bytes(), before);
    // The rest of the epoch still arrives in full.
    assert_eq!(epoch.count(), 19);
    assert_eq!(ds.loads.load(Ordering::SeqCst), 40);
}
