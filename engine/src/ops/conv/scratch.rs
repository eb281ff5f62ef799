//! Scratch buffers kept per thread between calls, so that the hot paths allocate
//! nothing.

use std::cell::Cell;
use std::thread::LocalKey;

/// Runs `f` on `len` floats of the thread-local buffer `key`, grown as needed and kept
/// for the next call, so a hot path allocates nothing. The contents are arbitrary:
/// every user writes before it reads. (A nested call on the same key finds the buffer
/// taken and simply allocates its own.)
pub(crate) fn with_buffer<R>(
    key: &'static LocalKey<Cell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    let mut buf = key.take();
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let r = f(&mut buf[..len]);
    key.set(buf);
    r
}
