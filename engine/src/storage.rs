//! The one place where tensor memory is allocated and freed.
//!
//! Every tensor's floats live in a [`Storage`]. Creating one adds its size to a
//! process-wide counter and dropping it subtracts it again, so a test (or `focal bench`)
//! can ask how many tensor bytes are alive at any moment: after a training step the
//! number must be back to "parameters + gradients + optimiser state", which proves that
//! no activation saved for backward survived the step.

use std::sync::atomic::{AtomicUsize, Ordering};

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Bytes held by all tensors alive in this process right now.
pub fn live_bytes() -> usize {
    LIVE_BYTES.load(Ordering::SeqCst)
}

/// Highest value [`live_bytes`] reached since the last [`reset_peak_bytes`].
pub fn peak_bytes() -> usize {
    PEAK_BYTES.load(Ordering::SeqCst)
}

/// Start a new peak measurement at the current live size.
pub fn reset_peak_bytes() {
    PEAK_BYTES.store(live_bytes(), Ordering::SeqCst);
}

fn account_alloc(bytes: usize) {
    let now = LIVE_BYTES.fetch_add(bytes, Ordering::SeqCst) + bytes;
    PEAK_BYTES.fetch_max(now, Ordering::SeqCst);
}

/// A contiguous, counted buffer of f32.
#[derive(Debug)]
pub struct Storage {
    data: Vec<f32>,
}

impl Storage {
    pub fn new(data: Vec<f32>) -> Self {
        account_alloc(data.len() * 4);
        Storage { data }
    }

    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.data
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Give the vector back to the caller (its bytes stop being counted).
    pub fn into_vec(mut self) -> Vec<f32> {
        std::mem::take(&mut self.data)
    }
}

impl Clone for Storage {
    fn clone(&self) -> Self {
        Storage::new(self.data.clone())
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        LIVE_BYTES.fetch_sub(self.data.len() * 4, Ordering::SeqCst);
    }
}
