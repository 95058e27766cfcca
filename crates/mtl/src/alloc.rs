//! The binaries' global allocator (feature `mimalloc`): mimalloc, told to keep freed memory.
//!
//! A training or inference step frees and reallocates the same large tensor buffers every
//! step. glibc's allocator unmaps each large block on free and the kernel zeroes fresh pages on
//! the next touch; mimalloc keeps them, but by default still returns ("purges") memory that
//! stays free for 10 ms, which a step's gaps exceed, so a `perf` profile of the `seed`
//! benchmark configuration still had about 11% of its samples zeroing pages. With purging off
//! the process keeps what it has freed (its peak resident memory is unchanged: it is the peak).
//!
//! ```no_run
//! #[global_allocator]
//! static GLOBAL: mtl::alloc::MiMalloc = mtl::alloc::MiMalloc;
//!
//! fn main() {
//!     mtl::alloc::keep_freed_memory();
//! }
//! ```
#![allow(unsafe_code)]

pub use mimalloc::MiMalloc;

/// `mi_option_purge_delay` in `mimalloc.h` (v2 and v3): the delay before freed memory goes
/// back to the OS, in milliseconds; `-1` never.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Stops mimalloc from returning freed memory to the OS (when [`MiMalloc`] is the global
/// allocator; harmless otherwise). Call it first thing in `main`.
pub fn keep_freed_memory() {
    // SAFETY: `mi_option_set` stores an option value; -1 is a documented value of this option,
    // and mimalloc's options may be set at any time from any thread.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}
