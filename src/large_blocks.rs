//! The global allocator of the `focal` binary: mimalloc for everything below 64 KiB, and
//! for blocks of 64 KiB and more (the tensors, the convolutions' scratch buffers and
//! packed filters) one address range of its own, handed out **first fit in address
//! order**.
//!
//! **Why.** A training step allocates its activations one after the other, each kept
//! until the backward pass reaches it, with the convolutions' larger scratch buffers
//! (tens of MiB, freed when the call returns) in between. mimalloc, which never gives
//! freed memory back to the kernel here (see `keep_freed_memory` in `main.rs`), placed the
//! next activations inside the holes the scratch buffers left and the next scratch buffer
//! above them, so its memory grew by much more than what was alive: on the R18-FPN
//! training step at 512 px it held about 220 MiB more than the largest number of bytes
//! ever alive at once (`docs/memory.md`). Taking every large block from the lowest
//! address where it fits, and merging each freed block with its free neighbours, keeps
//! the step's blocks packed at the bottom of the range: the memory touched stays close to
//! the largest sum of large blocks alive at once.
//!
//! **How.** The range is reserved once (address space only, [`RESERVE`] bytes, no access)
//! and made readable and writable [`GROW`] bytes at a time as its top rises; a block is
//! the lowest free run of whole pages that is long enough, else the pages at the top. A
//! freed block joins its free neighbours; a free run that reaches the top lowers the top.
//! Memory is never handed back to the kernel (like mimalloc here), so a step that
//! allocates what the previous one did faults in nothing. Pages above the highest top so
//! far were never written and are still the kernel's zeros, so zeroed blocks there are not
//! cleared again. The bookkeeping (a map of free runs) is behind one lock, taken a few
//! thousand times per training step, each for a few map operations.
//!
//! When the range cannot be reserved (an address-space limit such as `ulimit -v` below
//! its size) or is full, or a block needs more than page alignment, the block comes from
//! mimalloc, as before; freeing tells the two apart by address.

use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Blocks of at least this many bytes come from the range. Measured on the R18-FPN
/// training step at 512 px (Intel Xeon Sapphire Rapids, 2 cores): peak resident size
/// 734-740 MiB with 1 MiB, 684-686 MiB with 256 KiB, 652 MiB with 64 KiB, 660 MiB with
/// 16 KiB, against 832-860 MiB with mimalloc alone; smaller blocks are many and small
/// enough for mimalloc's size classes.
pub const LARGE: usize = 1 << 16;
/// The unit of the range: blocks are whole pages, page-aligned.
const PAGE: usize = 4096;
/// Address space reserved for large blocks (no memory is committed by reserving it).
const RESERVE: usize = 1 << 40;
/// How much more of the range is made accessible when the top passes the accessible part.
const GROW: usize = 64 << 20;

/// The free runs and the top of the range, as offsets from its base.
#[derive(Debug, Default)]
pub struct FirstFit {
    /// Free runs below `top`: start → length, never two adjacent (they are merged).
    free: BTreeMap<usize, usize>,
    /// Everything at or above `top` is free.
    top: usize,
    /// The highest `top` so far: pages at or above it were never handed out.
    high: usize,
}

impl FirstFit {
    /// The offset of a block of `len` bytes (a multiple of [`PAGE`]): the lowest free run
    /// long enough, or the top. Also returns how many of its first bytes may have been
    /// written before (the rest lie above every earlier top).
    pub fn take(&mut self, len: usize) -> (usize, usize) {
        let fit = self
            .free
            .iter()
            .find(|&(_, &run)| run >= len)
            .map(|(&at, &run)| (at, run));
        let at = match fit {
            Some((at, run)) => {
                self.free.remove(&at);
                if run > len {
                    self.free.insert(at + len, run - len);
                }
                at
            }
            None => {
                let at = self.top;
                self.top += len;
                at
            }
        };
        let used = self.high.saturating_sub(at).min(len);
        self.high = self.high.max(self.top);
        (at, used)
    }

    /// Gives back the block of `len` bytes at `at`, merged with the free runs beside it.
    pub fn give(&mut self, mut at: usize, mut len: usize) {
        if let Some(next) = self.free.remove(&(at + len)) {
            len += next;
        }
        if let Some((&prev, &run)) = self.free.range(..at).next_back() {
            if prev + run == at {
                self.free.remove(&prev);
                at = prev;
                len += run;
            }
        }
        if at + len == self.top {
            self.top = at;
        } else {
            self.free.insert(at, len);
        }
    }

    /// The end of the highest block handed out so far: the bytes of the range touched.
    #[cfg(test)]
    pub fn high(&self) -> usize {
        self.high
    }
}

/// The reserved range and its bookkeeping.
struct Range {
    /// Base address; 0 until reserved.
    base: usize,
    /// Bytes from `base` that are readable and writable.
    accessible: usize,
    /// Set when reserving failed: every block then comes from mimalloc.
    unavailable: bool,
    fit: FirstFit,
}

/// mimalloc below [`LARGE`], the first-fit range above (see the module documentation).
pub struct Allocator {
    range: Mutex<Range>,
}

impl Allocator {
    pub const fn new() -> Allocator {
        Allocator {
            range: Mutex::new(Range {
                base: 0,
                accessible: 0,
                unavailable: false,
                fit: FirstFit {
                    free: BTreeMap::new(),
                    top: 0,
                    high: 0,
                },
            }),
        }
    }

    /// A block of `size` bytes from the range, zeroed if asked; `None` when the range is
    /// unavailable or full.
    fn large(&self, size: usize, zeroed: bool) -> Option<*mut u8> {
        let len = size.next_multiple_of(PAGE);
        let (ptr, used) = {
            let mut r = self.range.lock().unwrap_or_else(|e| e.into_inner());
            if r.unavailable {
                return None;
            }
            if r.base == 0 {
                match reserve() {
                    Some(base) => r.base = base,
                    None => {
                        r.unavailable = true;
                        return None;
                    }
                }
            }
            let (at, used) = r.fit.take(len);
            if at + len > r.accessible {
                let want = (at + len).next_multiple_of(GROW).min(RESERVE);
                if at + len > want || !make_accessible(r.base, r.accessible, want) {
                    r.fit.give(at, len);
                    return None;
                }
                r.accessible = want;
            }
            ((r.base + at) as *mut u8, used)
        };
        if zeroed && used > 0 {
            // SAFETY: the block [ptr, ptr + len) was just taken for this caller alone,
            // and lies in the readable and writable part of the range; `used <= len`.
            unsafe { std::ptr::write_bytes(ptr, 0, used) };
        }
        Some(ptr)
    }

    /// Whether `ptr` lies in the range, and if so gives its block of `size` bytes back.
    fn give_back(&self, ptr: *mut u8, size: usize) -> bool {
        let mut r = self.range.lock().unwrap_or_else(|e| e.into_inner());
        let p = ptr as usize;
        if r.base == 0 || p < r.base || p >= r.base + RESERVE {
            return false;
        }
        let at = p - r.base;
        r.fit.give(at, size.next_multiple_of(PAGE));
        true
    }

    /// Bytes of the range touched so far (the highest top): what its blocks add to the
    /// resident size at most.
    #[cfg(test)]
    pub fn touched(&self) -> usize {
        let r = self.range.lock().unwrap_or_else(|e| e.into_inner());
        r.fit.high()
    }
}

impl Default for Allocator {
    fn default() -> Self {
        Self::new()
    }
}

fn is_large(layout: Layout) -> bool {
    layout.size() >= LARGE && layout.align() <= PAGE
}

// SAFETY: every block handed out is either mimalloc's (whose `GlobalAlloc` contract holds)
// or a run of whole pages of the range, page-aligned (so aligned for every layout that
// `is_large` accepts), at least `layout.size()` long, readable and writable, and owned by
// one caller from `take` until it is given back: `FirstFit` never hands out a page that
// is in another live block, since a page is either below `top` and in no free run (taken),
// in one free run, or at/above `top`. `dealloc` and `realloc` tell the two kinds apart by
// address, so each block goes back to the allocator that made it.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_large(layout) {
            if let Some(p) = self.large(layout.size(), false) {
                return p;
            }
        }
        // SAFETY: the caller's contract (non-zero size) is passed on unchanged.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_large(layout) {
            if let Some(p) = self.large(layout.size(), true) {
                return p;
            }
        }
        // SAFETY: as in `alloc`.
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_large(layout) && self.give_back(ptr, layout.size()) {
            return;
        }
        // SAFETY: `ptr` is not in the range, so mimalloc made it, with this layout.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = Layout::from_size_align(new_size, layout.align());
        let in_range = {
            let r = self.range.lock().unwrap_or_else(|e| e.into_inner());
            let p = ptr as usize;
            r.base != 0 && p >= r.base && p < r.base + RESERVE
        };
        match new_layout {
            Ok(new_layout) if in_range || is_large(new_layout) => {
                // SAFETY: `new_layout` has a non-zero size (the caller's contract); the
                // old block holds `layout.size()` bytes and the new one `new_size`, so
                // copying the smaller count stays inside both; they are distinct blocks.
                unsafe {
                    let new = self.alloc(new_layout);
                    if !new.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    new
                }
            }
            // SAFETY: small to small: mimalloc made `ptr` with `layout`.
            _ => unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) },
        }
    }
}

/// Reserves [`RESERVE`] bytes of address space with no access (nothing is committed);
/// `None` when the kernel refuses.
#[cfg(target_os = "linux")]
fn reserve() -> Option<usize> {
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches
    // no existing memory; the result is checked against MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            RESERVE,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some(p as usize)
}

#[cfg(not(target_os = "linux"))]
fn reserve() -> Option<usize> {
    None
}

/// Makes bytes `[from, to)` of the range at `base` readable and writable (they are
/// inside the reservation: `to <= RESERVE`), asking for transparent huge pages where the
/// kernel leaves that to the program (fewer page faults, as mimalloc gets).
#[cfg(target_os = "linux")]
fn make_accessible(base: usize, from: usize, to: usize) -> bool {
    let (p, len) = ((base + from) as *mut libc::c_void, to - from);
    // SAFETY: [base + from, base + to) lies inside the mapping made by `reserve`, and no
    // block there has been handed out yet (they start below `from`), so changing its
    // protection affects no memory in use. A failed madvise is only a hint not taken.
    unsafe {
        if libc::mprotect(p, len, libc::PROT_READ | libc::PROT_WRITE) != 0 {
            return false;
        }
        libc::madvise(p, len, libc::MADV_HUGEPAGE);
    }
    true
}

#[cfg(not(target_os = "linux"))]
fn make_accessible(_base: usize, _from: usize, _to: usize) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: usize = PAGE;

    #[test]
    fn first_fit_takes_the_lowest_run_that_fits_and_merges_on_give() {
        let mut f = FirstFit::default();
        let a = f.take(4 * P).0;
        let b = f.take(2 * P).0;
        let c = f.take(4 * P).0;
        assert_eq!((a, b, c), (0, 4 * P, 6 * P));
        f.give(a, 4 * P);
        // 3 pages fit in a's hole: taken from its start, not from the top.
        assert_eq!(f.take(3 * P).0, 0);
        // 5 pages do not fit in the 1 page left: from the top.
        assert_eq!(f.take(5 * P).0, 10 * P);
        // b freed beside the 1-page run left of a: merged into pages 3..6.
        f.give(b, 2 * P);
        assert_eq!(f.take(3 * P).0, 3 * P);
        assert_eq!(f.high(), 15 * P);
    }

    #[test]
    fn a_free_run_at_the_top_lowers_it_and_reports_which_bytes_were_used() {
        let mut f = FirstFit::default();
        let a = f.take(2 * P).0;
        let b = f.take(3 * P).0;
        f.give(b, 3 * P);
        f.give(a, 2 * P);
        // Everything was merged back into the top: the next block starts at 0 again,
        // and its first 5 pages may hold old data, the rest is fresh.
        let (at, used) = f.take(8 * P);
        assert_eq!((at, used), (0, 5 * P));
        assert_eq!(f.high(), 8 * P);
        // Freed in the middle: neither neighbour free, a run of its own.
        let (x, _) = f.take(P);
        let (y, _) = f.take(P);
        f.give(x, P);
        assert_eq!(f.take(P), (x, P));
        let _ = y;
    }

    #[test]
    fn a_forward_pass_with_scratch_buffers_touches_no_more_than_it_holds() {
        // The pattern of a tower of convolutions: each layer allocates its output, then
        // a scratch buffer larger than it (freed when the call returns), then the ReLU's
        // output; the conv's output dies after the ReLU, the ReLU's output is kept for
        // the backward pass. A placement that puts the kept outputs inside the scratch
        // buffer's hole and the next scratch buffer above them grows by the kept bytes
        // *plus* a scratch buffer per layer; first fit keeps the scratch buffer above
        // the kept outputs, at the same place each time.
        let (out, scratch, layers) = (8 * P, 36 * P, 20);
        let mut f = FirstFit::default();
        let mut live = 0;
        let mut most = 0;
        for _ in 0..layers {
            let (y, _) = f.take(out);
            let (s, _) = f.take(scratch);
            most = most.max(live + out + scratch);
            f.give(s, scratch);
            let _kept = f.take(out);
            f.give(y, out);
            live += out;
        }
        // Everything ever touched is the most held at once (taking each block from the
        // top instead would touch every layer's three blocks: 52 pages a layer).
        assert_eq!(most, (layers - 1) * out + out + scratch);
        assert_eq!(f.high(), most);
    }

    #[test]
    fn blocks_come_from_the_range_are_usable_and_zeroed_when_asked() {
        let alloc = Allocator::new();
        let layout = Layout::from_size_align(3 * LARGE + 5, 64).unwrap();
        // SAFETY: non-zero size; each block is written within its size and freed once
        // with the layout it was made with.
        unsafe {
            let a = alloc.alloc(layout);
            assert!(!a.is_null());
            std::ptr::write_bytes(a, 0xAB, layout.size());
            alloc.dealloc(a, layout);
            // The same pages again (first fit), written before: zeroed on request.
            let b = alloc.alloc_zeroed(layout);
            assert_eq!(a, b);
            let s = std::slice::from_raw_parts(b, layout.size());
            assert!(s.iter().all(|&v| v == 0));
            // A small block is mimalloc's, outside the range.
            let small = Layout::from_size_align(100, 8).unwrap();
            let c = alloc.alloc(small);
            assert!(!alloc.give_back(c, small.size()));
            alloc.dealloc(c, small);
            // Grown by realloc into a large block: the contents move along.
            let d = alloc.alloc(small);
            std::ptr::write_bytes(d, 7, 100);
            let e = alloc.realloc(d, small, 2 * LARGE);
            assert_eq!(std::slice::from_raw_parts(e, 100), &[7u8; 100][..]);
            assert!(alloc.give_back(e, 2 * LARGE));
            alloc.dealloc(b, layout);
        }
        // The two large blocks side by side, the second freed first, then the first.
        assert_eq!(
            alloc.touched(),
            (3 * LARGE + 5).next_multiple_of(PAGE) + 2 * LARGE
        );
    }
}
