//! Test-only helpers shared by sealkv's crates.
//!
//! [`CountingAlloc`] is a global allocator for test binaries that proves two memory claims:
//! decoders never request more than their input justifies ([`requested_during`], per thread), and
//! streaming jobs keep the heap's high-water mark bounded ([`peak_growth`], whole process).
//! Install it with `#[global_allocator] static A: CountingAlloc = CountingAlloc;`.
//! [`incompressible`] gives test data that LZ4 cannot shrink.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering};

thread_local! {
    static REQUESTED: Cell<usize> = const { Cell::new(0) };
}

static CURRENT: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn grew(bytes: usize) {
    // `try_with` so allocation during thread teardown never panics inside the allocator.
    let _ = REQUESTED.try_with(|c| c.set(c.get().saturating_add(bytes)));
    let now = CURRENT.fetch_add(bytes as isize, Ordering::Relaxed) + bytes as isize;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrank(bytes: usize) {
    CURRENT.fetch_sub(bytes as isize, Ordering::Relaxed);
}

/// Counts bytes requested per thread and live bytes (with a high-water mark) per process.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAlloc;

// SAFETY: every method forwards to `System` with exactly the caller's pointer and layout, so the
// `GlobalAlloc` contract is upheld by `System`. The added work is a const-initialized
// thread-local `Cell<usize>` (no lazy allocation, no destructor; `try_with` cannot panic) and
// relaxed atomics, none of which allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrank(layout.size());
        // SAFETY: `ptr` came from `System` through this allocator with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        shrank(layout.size());
        grew(new_size);
        // SAFETY: as in `dealloc`; `new_size` is the caller's, checked by the caller.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` and returns its result with the bytes this thread requested while it ran.
pub fn requested_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    REQUESTED.with(|c| c.set(0));
    let r = f();
    (r, REQUESTED.with(|c| c.get()))
}

/// Runs `f` and returns how far the process's live heap rose above where it started. Only
/// meaningful in a test binary where nothing else runs concurrently.
pub fn peak_growth(f: impl FnOnce()) -> usize {
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    f();
    (PEAK.load(Ordering::Relaxed) - base).max(0) as usize
}

/// `len` deterministic bytes that LZ4 cannot shrink (xorshift64 from `seed`), for tests of
/// "compress only when it helps" and for data that must take its full size on disk. Different
/// seeds give different bytes.
pub fn incompressible(seed: u64, len: usize) -> Vec<u8> {
    let mut x = (seed ^ 0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
