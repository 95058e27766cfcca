//! Denormal floats flushed to zero on the CPU threads that compute.
//!
//! A float below `f32::MIN_POSITIVE` (about `1.2e-38`) is denormal. Intel CPUs handle
//! arithmetic on denormals in microcode: a matrix product whose operands are denormal runs about
//! 180 times slower there (the `gemm` crate's AVX-512 kernels, 64 x 32 x 64 products: 108 against
//! 0.6 GFLOP/s on one core). Training makes them: a tiny attention probability times a small
//! gradient, an AdamW moment of a tiny gradient squared. On such a CPU, denormals halved the
//! benchmark's training rate (small configuration 272-287 against 475-504 sentences/s with
//! flushing; the day before, on an AMD CPU, the same build had run at 427-589).
//!
//! With flushing on, the CPU writes zero wherever a result would be denormal (x86's
//! flush-to-zero bit, FTZ, in the MXCSR register), as TensorFlow's and XLA's CPU thread pools
//! and PyTorch's `torch.set_flush_denormal(True)` do. No computation then makes a denormal, so
//! none reaches a product. The difference is below `1.2e-38` in any one value; a run stays
//! deterministic on one machine, but its last digits differ from a run without it. Rust's
//! documentation of `_mm_setcsr` names the rounding mode, the exception masks and the
//! denormals-are-zero bit (DAZ, which would also read denormal inputs as zero) as bits a program
//! must not change, since the compiler assumes their defaults; FTZ is the only bit set here.
//! What still differs is arithmetic the compiler evaluates at build time, which keeps a
//! denormal where the CPU would write zero; no memory safety in mtl depends on a float's value.
//!
//! The mode is per thread. [`flush_to_zero`] sets it on the calling thread and on Rayon's global
//! pool (when that pool has not started yet); the threads mtl starts itself (training replicas'
//! pools, the server's batch workers) take the mode of the thread that starts them
//! ([`inherit`]). mtl's binaries call [`flush_to_zero`] first thing in `main` unless the
//! environment sets `MTL_KEEP_DENORMALS` (for IEEE arithmetic to the last bit, as a comparison
//! with another implementation may want); a program using the library decides for itself. On
//! CPUs other than x86-64 this does nothing.
#![allow(unsafe_code)]

/// MXCSR's flush-to-zero bit.
#[cfg(target_arch = "x86_64")]
const FTZ: u32 = 1 << 15;

#[cfg(target_arch = "x86_64")]
fn mxcsr() -> u32 {
    let mut value = 0u32;
    // SAFETY: `stmxcsr` stores the 32-bit MXCSR register to the address given, which is a
    // live, aligned `u32` on this stack frame; it touches nothing else.
    unsafe {
        std::arch::asm!("stmxcsr [{}]", in(reg) &mut value, options(nostack, preserves_flags));
    }
    value
}

/// Whether the calling thread flushes denormals to zero.
pub fn flushing() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        mxcsr() & FTZ != 0
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Turns flushing on or off for the calling thread (a no-op off x86-64).
pub fn set_flushing(on: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        let value = if on { mxcsr() | FTZ } else { mxcsr() & !FTZ };
        // SAFETY: `ldmxcsr` loads MXCSR from a live, aligned `u32`. Only the FTZ bit changes;
        // rounding mode, exception masks and DAZ are kept (see the module's documentation).
        unsafe {
            std::arch::asm!("ldmxcsr [{}]", in(reg) &value, options(nostack, preserves_flags));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = on;
}

/// A thread start handler (for `rayon::ThreadPoolBuilder::start_handler`, or to call first in
/// a spawned thread) that gives the new thread the calling thread's mode.
pub fn inherit() -> impl Fn(usize) + Send + Sync + 'static {
    let on = flushing();
    move |_| set_flushing(on)
}

/// The environment variable that keeps denormals in mtl's binaries.
pub const KEEP_VARIABLE: &str = "MTL_KEEP_DENORMALS";

/// Flushes denormals to zero on the calling thread and on Rayon's global pool, whose threads
/// run Burn's CPU kernels and mtl's own passes, unless [`KEEP_VARIABLE`] is set. Returns
/// whether both are flushing: `false` when the variable is set, or when the global pool had
/// already started (its threads then keep their mode; call this before any tensor work).
pub fn flush_to_zero() -> bool {
    if std::env::var_os(KEEP_VARIABLE).is_some() {
        return false;
    }
    set_flushing(true);
    rayon::ThreadPoolBuilder::new()
        .start_handler(inherit())
        .build_global()
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest normal f32 halved: a denormal, unless flushed.
    fn halved_minimum() -> f32 {
        std::hint::black_box(f32::MIN_POSITIVE) * std::hint::black_box(0.5)
    }

    #[test]
    fn flushing_is_per_thread_and_inherited() {
        std::thread::spawn(|| {
            set_flushing(false);
            assert!(!flushing());
            assert!(halved_minimum() > 0.0, "denormals kept when not flushing");
            set_flushing(true);
            if cfg!(target_arch = "x86_64") {
                assert!(flushing());
                assert_eq!(halved_minimum(), 0.0, "a denormal result is flushed");
                // An operand that is already denormal is read as it is (DAZ stays off).
                let denormal = std::hint::black_box(f32::from_bits(1));
                assert_eq!(denormal * 2.0f32.powi(30), 2.0f32.powi(-119));
                let start = inherit();
                let child = std::thread::spawn(move || {
                    start(0);
                    (flushing(), halved_minimum())
                });
                assert_eq!(child.join().expect("child thread"), (true, 0.0));
            }
            set_flushing(false);
            assert!(!flushing());
            assert!(halved_minimum() > 0.0);
        })
        .join()
        .expect("test thread");
    }
}
