//! A safe, bounds-checked matrix product over strided views of `f32` slices, on the `gemm`
//! crate (the GEMM kernels Burn's flex backend uses, AVX-512 included with `x86-v4`).
//!
//! The only `unsafe` code of mtl: `gemm::gemm` takes raw pointers and strides. Every view is
//! checked to lie inside its slice before the call, and the destination is a `&mut` borrow, so
//! it cannot alias the inputs.
#![allow(unsafe_code)]

use gemm::Parallelism;

/// A `rows x cols` matrix read from `data`: element `(r, c)` is
/// `data[r * row_stride + c * col_stride]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> View<'a> {
    /// A row-major matrix whose rows are `row_stride` apart (`row_stride >= cols`).
    pub fn rows(data: &'a [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride,
            col_stride: 1,
        }
    }

    /// The transpose of this view (no copy).
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }
}

/// Whether every element of a `rows x cols` view with these strides lies in `len` elements.
fn fits(len: usize, rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    (rows - 1)
        .checked_mul(row_stride)
        .and_then(|a| (cols - 1).checked_mul(col_stride).map(|b| (a, b)))
        .and_then(|(a, b)| a.checked_add(b))
        .is_some_and(|last| last < len)
}

/// How a product uses the cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Threads {
    /// One thread (for products already run inside a parallel loop).
    One,
    /// Rayon's pool.
    All,
}

/// `dst = scale * lhs * rhs` (or `dst += scale * lhs * rhs` with `accumulate`), where `dst` is
/// row-major with rows `dst_row_stride` apart.
///
/// # Panics
/// If the shapes disagree or a view reaches past its slice (a bug in the caller, never a
/// property of user input).
pub(crate) fn matmul(
    dst: &mut [f32],
    dst_row_stride: usize,
    lhs: View<'_>,
    rhs: View<'_>,
    scale: f32,
    accumulate: bool,
    threads: Threads,
) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(rhs.rows, k, "inner dimensions differ");
    assert!(
        fits(dst.len(), m, n, dst_row_stride, 1),
        "dst out of bounds"
    );
    // Overlapping destination rows would be written by several threads at once.
    assert!(m <= 1 || dst_row_stride >= n, "dst rows overlap");
    assert!(
        fits(lhs.data.len(), m, k, lhs.row_stride, lhs.col_stride),
        "lhs out of bounds"
    );
    assert!(
        fits(rhs.data.len(), k, n, rhs.row_stride, rhs.col_stride),
        "rhs out of bounds"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * dst_row_stride..r * dst_row_stride + n].fill(0.0);
            }
        }
        return;
    }
    if m == 1 {
        // gemm runs a one-row product as a matrix-vector product, which sums in another order
        // than its matrix kernels: a row alone would not get the bits it gets among other rows.
        // With a second, zero row it takes the matrix path, so what a row gets does not depend
        // on how many rows share the call (a batch of one sentence, or one token).
        let mut rows = vec![0.0f32; 2 * k];
        for (c, x) in rows[..k].iter_mut().enumerate() {
            *x = lhs.data[c * lhs.col_stride];
        }
        let mut out = vec![0.0f32; 2 * n];
        if accumulate {
            out[..n].copy_from_slice(&dst[..n]);
        }
        matmul(
            &mut out,
            n,
            View::rows(&rows, 2, k, k),
            rhs,
            scale,
            accumulate,
            threads,
        );
        dst[..n].copy_from_slice(&out[..n]);
        return;
    }
    let parallelism = match threads {
        Threads::One => Parallelism::None,
        Threads::All => Parallelism::Rayon(0),
    };
    let signed = |s: usize| isize::try_from(s).expect("stride fits isize");
    // SAFETY: the three views were checked above to lie inside their slices; `dst` is an
    // exclusive borrow, so it overlaps neither input; strides are non-negative.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            signed(dst_row_stride),
            accumulate,
            lhs.data.as_ptr(),
            signed(lhs.col_stride),
            signed(lhs.row_stride),
            rhs.data.as_ptr(),
            signed(rhs.col_stride),
            signed(rhs.row_stride),
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        out
    }

    #[test]
    fn products_match_a_loop_with_strides_transposes_and_accumulation() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let want = naive(&a, &b, m, k, n);
        for threads in [Threads::One, Threads::All] {
            let mut dst = vec![0.0; m * n];
            matmul(
                &mut dst,
                n,
                View::rows(&a, m, k, k),
                View::rows(&b, k, n, n),
                1.0,
                false,
                threads,
            );
            for (x, y) in dst.iter().zip(&want) {
                assert!((x - y).abs() < 1e-5, "{x} vs {y}");
            }
        }
        // b stored transposed ([n, k]) and read through `t()`; scaled; accumulated into a
        // destination whose rows are wider than n.
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let mut dst = vec![1.0; m * (n + 2)];
        matmul(
            &mut dst,
            n + 2,
            View::rows(&a, m, k, k),
            View::rows(&bt, n, k, k).t(),
            0.5,
            true,
            Threads::One,
        );
        for i in 0..m {
            for j in 0..n {
                let got = dst[i * (n + 2) + j];
                assert!((got - (1.0 + 0.5 * want[i * n + j])).abs() < 1e-5);
            }
            assert_eq!(dst[i * (n + 2) + n], 1.0, "columns past n untouched");
        }
    }

    #[test]
    #[should_panic(expected = "lhs out of bounds")]
    fn views_past_their_slice_are_refused() {
        let a = vec![0.0; 5];
        let b = vec![0.0; 4];
        let mut dst = vec![0.0; 4];
        matmul(
            &mut dst,
            2,
            View::rows(&a, 2, 3, 3),
            View::rows(&b, 3, 2, 2),
            1.0,
            false,
            Threads::One,
        );
    }
}
