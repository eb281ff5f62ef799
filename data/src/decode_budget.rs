//! One memory budget for every image being decoded in the process, whatever the number of
//! threads.
//!
//! A decoded image costs far more than its file: a 480 kB PNG of 13 000 x 13 000 pixels
//! is 507 MB of RGB once decoded. With one decoding thread per core, memory would grow
//! with the cores. Instead, whoever decodes an image first takes its cost from this
//! budget ([`DecodeBudget::reserve`]) and gives it back when the pixels are gone (the
//! [`Reservation`] is dropped); a thread whose image does not fit waits until enough is
//! given back. An image that costs more than the whole budget waits until nothing else
//! is being decoded and is then decoded alone. So the pixels of images being decoded
//! never take more than `max(budget, the largest single image)` at once, and a single
//! image is itself bounded by [`crate::image_io::MAX_IMAGE_BYTES`].
//!
//! The budget is 2 GiB by default, or `FOCAL_DECODE_BUDGET_MB` megabytes (2^20 bytes)
//! when that variable is set. Ordinary photographs (a 640 x 480 COCO image costs 2.8 MB)
//! never wait.

use std::sync::{Condvar, Mutex, OnceLock};

/// The default budget: 2 GiB.
pub const DEFAULT_BUDGET: u64 = 2 << 30;

/// A shared budget of bytes; see the module documentation.
#[derive(Debug)]
pub struct DecodeBudget {
    limit: u64,
    state: Mutex<State>,
    freed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    used: u64,
    peak: u64,
}

/// Bytes taken from a [`DecodeBudget`], given back when dropped.
#[derive(Debug)]
pub struct Reservation<'a> {
    budget: &'a DecodeBudget,
    bytes: u64,
}

impl DecodeBudget {
    pub fn new(limit: u64) -> DecodeBudget {
        DecodeBudget {
            limit: limit.max(1),
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
        }
    }

    /// The process-wide budget (see the module documentation for its size).
    pub fn global() -> &'static DecodeBudget {
        static GLOBAL: OnceLock<DecodeBudget> = OnceLock::new();
        GLOBAL.get_or_init(|| {
            let limit = std::env::var("FOCAL_DECODE_BUDGET_MB")
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|&mb| mb > 0)
                .map_or(DEFAULT_BUDGET, |mb| mb << 20);
            DecodeBudget::new(limit)
        })
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The most bytes held at once since the budget was made.
    pub fn peak(&self) -> u64 {
        self.lock().peak
    }

    /// Takes `bytes`, waiting until they fit; more than the whole budget waits until
    /// nothing else is held and is then counted as the whole budget (decoded alone).
    pub fn reserve(&self, bytes: u64) -> Reservation<'_> {
        let bytes = bytes.min(self.limit);
        let mut state = self.lock();
        while state.used + bytes > self.limit {
            state = self.freed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.used += bytes;
        state.peak = state.peak.max(state.used);
        Reservation {
            budget: self,
            bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut state = self.budget.lock();
        state.used -= self.bytes;
        drop(state);
        self.budget.freed.notify_all();
    }
}

/// What decoding an image of `width` x `height` may cost before its header is read (the
/// format unknown): an RGBA 16-bit PNG's buffer (8 bytes a pixel) plus the RGB copy.
pub fn worst_case_decode_bytes(width: u32, height: u32) -> u64 {
    width as u64 * height as u64 * (8 + 3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn reservations_never_exceed_the_budget_and_an_oversized_one_runs_alone() {
        let budget = DecodeBudget::new(100);
        let held = AtomicU64::new(0);
        let most = AtomicU64::new(0);
        std::thread::scope(|s| {
            for i in 0..8u64 {
                let (budget, held, most) = (&budget, &held, &most);
                s.spawn(move || {
                    // 30, 60 and 500 (over the budget: counted as 100, alone).
                    let want = [30, 60, 500][i as usize % 3];
                    let _r = budget.reserve(want);
                    let now = held.fetch_add(want.min(100), Ordering::SeqCst) + want.min(100);
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    held.fetch_sub(want.min(100), Ordering::SeqCst);
                });
            }
        });
        assert!(most.load(Ordering::SeqCst) <= 100);
        assert!(budget.peak() <= 100);
        assert_eq!(budget.lock().used, 0, "everything was given back");
    }
}
