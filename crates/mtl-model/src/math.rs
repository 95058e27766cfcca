//! Elementwise and row functions in straight-line arithmetic that the compiler vectorises, for
//! the CPU paths that run on host memory: the packed inference path ([`crate::packed`]) and the
//! exact GELU and attention softmax of training on the CPU backend ([`gelu_tensor`],
//! [`softmax_tensor`]).
//!
//! The C library's `expf` and `erff` are one call per element. A profile of a MiniLM training
//! step on two CPU replicas had Burn's GELU (libm's `erff`, forward and backward) at 12% of the
//! samples; the packed path's exponential was about a tenth of a `small` inference profile.
//!
//! The crate is built for baseline x86-64 (SSE2, four lanes); [`vectorized`] runs a loop as
//! AVX2 code where the CPU has it. The packed path's GELU, softmax and LayerNorm, the two
//! tensor functions here, the dropout hashes and the optimizer's fused update and deferred
//! replay run through it: a MiniLM inference batch went from about 80 to 70 ms, its GELU from
//! 7.6 to 3.2 ms. [`softmax_tensor`] does for the attention softmax of training what
//! [`gelu_tensor`] does for the GELU.

use burn::tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;

/// `e^x`. Cephes' `expf` method: `x = n ln 2 + r` with `|r| <= ln 2 / 2`, a degree-6
/// polynomial for `e^r`, `2^n` put into the exponent bits; within 2.5e-7 relative of `expf`
/// for `x <= 0` (tested); inputs below -87.3 give about `1e-38` rather than a denormal or zero,
/// inputs are capped at 88.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that `n * LN2_HI` is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.0);
    let t = x * LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    // `t` is `ROUND + n` exactly, so its bits are ROUND's plus `n` (two's complement): the
    // integer without a float-to-int conversion, which has no vector form for this.
    let k = t.to_bits().wrapping_sub(ROUND.to_bits());
    e_r * f32::from_bits(k.wrapping_add(127) << 23)
}

/// The error function, Abramowitz & Stegun 7.1.26: `1 - p(t) e^(-x^2)` with
/// `t = 1 / (1 + 0.3275911 |x|)`, whose bound is 1.5e-7; within 6e-7 of `libm::erff` in f32
/// (tested).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    erf_abs(a, exp(-a * a)).copysign(x)
}

/// `erf(a)` for `a >= 0`, given `e^(-a^2)`.
#[inline(always)]
fn erf_abs(a: f32, exp_neg_a2: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let p = ((((1.061_405_4 * t - 1.453_152) * t + 1.421_413_8) * t - 0.284_496_72) * t
        + 0.254_829_6)
        * t;
    1.0 - p * exp_neg_a2
}

/// The exact (erf) GELU, `x Φ(x)`, as Burn's and PyTorch's default.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    gelu_and_slope(x).0
}

/// `(gelu(x), gelu'(x))` with one exponential: `Φ(x) = (1 + erf(x / √2)) / 2` and
/// `gelu'(x) = Φ(x) + x φ(x)`, where `φ(x) = e^(-x²/2) / √(2π)` is the `e^(-a²)` the error
/// function needs anyway.
#[inline(always)]
pub fn gelu_and_slope(x: f32) -> (f32, f32) {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    let a = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let e = exp(-a * a);
    let cdf = 0.5 * (1.0 + erf_abs(a, e).copysign(x));
    (x * cdf, cdf + x * INV_SQRT_2PI * e)
}

/// `sum f(x_i)` in eight interleaved partial sums, which the compiler can turn into vector
/// code (a plain running sum must be added in order, one element at a time).
#[inline(always)]
pub fn sum_of(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v);
        }
    }
    let rest: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    lanes.iter().sum::<f32>() + rest
}

/// `sum x_i²` in f64 (each square exact), in eight interleaved partial sums as [`sum_of`].
#[inline(always)]
pub fn sum_of_squares(x: &[f32]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let mut chunks = x.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f64::from(v) * f64::from(v);
        }
    }
    let rest: f64 = chunks
        .remainder()
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum();
    lanes.iter().sum::<f64>() + rest
}

/// Runs `f` compiled for the widest vector instructions this CPU has: AVX2 where present
/// (detected at run time; the crate itself is built for baseline x86-64, SSE2), else as is.
/// Rust never fuses a multiply and an add on its own, so the results are the same bits on
/// either path; only the width of the vector loops changes.
#[inline(always)]
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(f)
}

/// Elements per Rayon task of the host passes.
const CHUNK: usize = 1 << 14;

/// The exact GELU of a tensor on the CPU backend, computed on host memory with [`gelu_and_slope`]
/// (Burn's flex backend calls libm's `erff` per element, twice with the backward pass).
///
/// Without autodiff the values are computed and returned. Under autodiff the output is built
/// from differentiable operations whose gradient is the GELU's: `x * slope + offset`, with
/// `slope = gelu'(x)` and `offset = gelu(x) - x * slope` both constants, so the value is
/// `gelu(x)` (to a rounding) and the backward pass is one multiplication by `slope`.
/// Tensors that are not `f32` get Burn's GELU.
pub fn gelu_tensor<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if x.dtype() != DType::F32 {
        return burn::tensor::activation::gelu(x);
    }
    let device = x.device();
    let shape = x.shape();
    if !device.is_autodiff() {
        // `x` is not needed afterwards: flex hands its buffer over when nothing else holds it.
        let data = x.into_data();
        let out: Vec<f32> = match data.as_slice::<f32>() {
            Ok(values) => {
                let mut out = vec![0.0f32; values.len()];
                out.par_chunks_mut(CHUNK)
                    .zip(values.par_chunks(CHUNK))
                    .for_each(|(out, values)| {
                        vectorized(
                            #[inline(always)]
                            || {
                                for (o, &v) in out.iter_mut().zip(values) {
                                    *o = gelu(v);
                                }
                            },
                        );
                    });
                out
            }
            Err(_) => return burn::tensor::activation::gelu(Tensor::from_data(data, &device)),
        };
        return Tensor::from_data(TensorData::new(out, shape), &device);
    }
    let data = x.clone().into_data();
    let Ok(values) = data.as_slice::<f32>() else {
        return burn::tensor::activation::gelu(x);
    };
    let mut slope = vec![0.0f32; values.len()];
    let mut offset = vec![0.0f32; values.len()];
    slope
        .par_chunks_mut(CHUNK)
        .zip(offset.par_chunks_mut(CHUNK))
        .zip(values.par_chunks(CHUNK))
        .for_each(|((slope, offset), values)| {
            vectorized(
                #[inline(always)]
                || {
                    for ((s, o), &v) in slope.iter_mut().zip(offset.iter_mut()).zip(values) {
                        let (g, d) = gelu_and_slope(v);
                        *s = d;
                        *o = g - v * d;
                    }
                },
            );
        });
    let constant = |v: Vec<f32>| Tensor::<D>::from_data(TensorData::new(v, shape.clone()), &device);
    x * constant(slope) + constant(offset)
}

/// Softmax of one row, in place: `e^(x - max) / sum`, with probabilities below the smallest
/// normal `f32` (masked scores, whose [`exp`] is about `1e-38` before the division) set to zero.
/// Denormal probabilities would be multiplied on in the attention products and their gradients,
/// and on CPUs that handle denormals in microcode (Intel's) that multiplies a product's time by
/// about 180.
#[inline(always)]
pub fn softmax_in_place(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // Two loops: the first (no calls, no reduction) vectorises.
    row.iter_mut().for_each(|v| *v = exp(*v - max));
    let inv = 1.0 / sum_of(row, |v| v);
    row.iter_mut().for_each(|v| {
        let p = *v * inv;
        *v = if p < f32::MIN_POSITIVE { 0.0 } else { p };
    });
}

/// Softmax over the last dimension on the CPU backend, its exponentials computed on host
/// memory with [`exp`] (Burn's flex calls libm's `expf` per element, in the forward pass and
/// again in the backward pass, and takes its slow underflow path on every masked score).
///
/// Under autodiff the output is built, as in [`gelu_tensor`], from differentiable operations
/// around constants: with `s = softmax(x)` and `c = s - s * (x - s·x)`, it returns
/// `s * (x - sum(s * x)) + c`, whose value is `s` (to a rounding) and whose Jacobian is the
/// softmax's, `diag(s) - s sᵀ`. Tensors that are not `f32` get Burn's softmax.
pub fn softmax_tensor<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if x.dtype() != DType::F32 || D == 0 {
        return burn::tensor::activation::softmax(x, D.saturating_sub(1));
    }
    let device = x.device();
    let shape = x.shape();
    let width = x.dims()[D - 1].max(1);
    let tracked = device.is_autodiff();
    // Training is the caller that matters; `x` is kept for the operations below.
    let data = x.clone().into_data();
    let Ok(values) = data.as_slice::<f32>() else {
        return burn::tensor::activation::softmax(x, D - 1);
    };
    let rows = (CHUNK / width).max(1) * width;
    let mut probs = values.to_vec();
    probs.par_chunks_mut(rows).for_each(|p| {
        vectorized(
            #[inline(always)]
            || p.chunks_exact_mut(width).for_each(softmax_in_place),
        );
    });
    let constant = |v: Vec<f32>| Tensor::<D>::from_data(TensorData::new(v, shape.clone()), &device);
    if !tracked {
        return constant(probs);
    }
    // c = s - s * (x - s·x), row by row.
    let mut offset = vec![0.0f32; values.len()];
    offset
        .par_chunks_mut(rows)
        .zip(probs.par_chunks(rows))
        .zip(values.par_chunks(rows))
        .for_each(|((offset, probs), values)| {
            vectorized(
                #[inline(always)]
                || {
                    let rows = offset
                        .chunks_exact_mut(width)
                        .zip(probs.chunks_exact(width));
                    for ((c, p), x) in rows.zip(values.chunks_exact(width)) {
                        let dot: f32 = p.iter().zip(x).map(|(p, x)| p * x).sum();
                        for ((c, &p), &v) in c.iter_mut().zip(p).zip(x) {
                            *c = p - p * (v - dot);
                        }
                    }
                },
            );
        });
    let probs = constant(probs);
    let weighted = x.clone() * probs.clone();
    (x - weighted.sum_dim(D - 1)) * probs + constant(offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    #[test]
    fn exponential_is_within_two_ulp_of_the_library() {
        let mut worst = 0.0f32;
        for i in 0..=200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let (want, got) = (x.exp(), exp(x));
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 2.5e-7, "max relative error {worst}");
        assert!(exp(-1e9) < 1e-37 && exp(0.0) == 1.0);
        // Positive inputs, up to the cap, through the same exponent bits.
        let mut worst = 0.0f32;
        for i in 0..=200_000 {
            let x = 88.0 * i as f32 / 200_000.0;
            let (want, got) = (x.exp(), exp(x));
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 2.5e-7, "max relative error {worst} for x > 0");
    }

    #[test]
    fn vector_code_gives_the_same_bits_as_scalar_code() {
        let x: Vec<f32> = (0..10_000)
            .map(|i| (i as f32 * 0.137).sin() * 9.0)
            .collect();
        let scalar: Vec<u32> = x.iter().map(|&v| gelu(v).to_bits()).collect();
        let vector: Vec<u32> = vectorized(
            #[inline(always)]
            || x.iter().map(|&v| gelu(v).to_bits()).collect(),
        );
        assert_eq!(scalar, vector);
    }

    #[test]
    fn lane_sums_equal_the_exact_sum() {
        for len in 0..40 {
            let x: Vec<f32> = (0..len).map(|i| 1.0 + (i as f32 * 0.71).cos()).collect();
            let want: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            let got = f64::from(sum_of(&x, |v| v * v));
            assert!(
                (got - want).abs() <= 1e-6 * want.max(1.0),
                "{len}: {got} vs {want}"
            );
            let got = sum_of_squares(&x);
            assert!(
                (got - want).abs() <= 1e-12 * want.max(1.0),
                "{len}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn error_function_is_within_6e7_of_the_library() {
        let mut worst = 0.0f32;
        for i in 0..=400_000 {
            let x = -10.0 + 20.0 * i as f32 / 400_000.0;
            worst = worst.max((erf(x) - libm::erff(x)).abs());
        }
        assert!(worst < 6e-7, "max absolute error {worst}");
        assert!(erf(0.0).abs() < 1e-6, "{}", erf(0.0));
        assert!(erf(9.0) == 1.0 && erf(-9.0) == -1.0);
        assert!(erf(f32::INFINITY) == 1.0);
    }

    #[test]
    fn gelu_and_its_slope_match_the_f64_formulas() {
        let (mut worst_value, mut worst_slope) = (0.0f64, 0.0f64);
        for i in 0..=200_000 {
            let x = -12.0 + 24.0 * i as f64 / 200_000.0;
            let cdf = 0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
            let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
            let (value, slope) = gelu_and_slope(x as f32);
            worst_value = worst_value.max((value as f64 - x * cdf).abs());
            worst_slope = worst_slope.max((slope as f64 - (cdf + x * pdf)).abs());
        }
        // |x| up to 12 scales the error function's 6e-7.
        assert!(worst_value < 2e-6, "value error {worst_value}");
        assert!(worst_slope < 1e-6, "slope error {worst_slope}");
        let (value, slope) = gelu_and_slope(0.0);
        assert!(
            value == 0.0 && (slope - 0.5).abs() < 1e-7,
            "{value} {slope}"
        );
    }

    /// `(values, gradients)` of `ours` and of `theirs` at `values` on flex autodiff, the
    /// gradient of `sum(f(x) * weights)`.
    #[allow(clippy::type_complexity)]
    fn against_burn<const D: usize>(
        values: &[f32],
        weights: &[f32],
        shape: [usize; D],
        ours: impl Fn(Tensor<D>) -> Tensor<D>,
        theirs: impl Fn(Tensor<D>) -> Tensor<D>,
    ) -> ((Vec<f32>, Vec<f32>), (Vec<f32>, Vec<f32>)) {
        let device = Device::flex().autodiff();
        let run = |f: &dyn Fn(Tensor<D>) -> Tensor<D>| {
            let x = Tensor::<D>::from_data(TensorData::new(values.to_vec(), shape), &device)
                .require_grad();
            let w = Tensor::<D>::from_data(TensorData::new(weights.to_vec(), shape), &device);
            let y = f(x.clone());
            let grads = (y.clone() * w).sum().backward();
            let grad = x.grad(&grads).expect("x is tracked").into_data();
            let to_vec = |d: TensorData| d.try_into_vec::<f32>().expect("f32");
            (to_vec(y.inner().into_data()), to_vec(grad))
        };
        (run(&ours), run(&theirs))
    }

    /// The largest absolute difference.
    fn worst(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
    }

    fn assert_close(got: &[f32], want: &[f32], tolerance: f32, what: &str) {
        let worst = worst(got, want);
        assert!(worst < tolerance, "{what} differs by {worst}");
    }

    #[test]
    fn softmax_gives_zero_not_denormals() {
        // Masked scores (-1e9), and scores whose probability would fall below the smallest
        // normal float after the division by the row's sum.
        let mut row = vec![0.0, -1e9, 0.0, -87.0, 0.0, -200.0, 0.0, 0.0];
        softmax_in_place(&mut row);
        assert!(row.iter().all(|&p| p == 0.0 || p.is_normal()), "{row:?}");
        assert_eq!([row[1], row[3], row[5]], [0.0; 3]);
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((row[0] - 0.2).abs() < 1e-7);
    }

    #[test]
    fn softmax_tensor_matches_burns_softmax_in_value_and_gradient() {
        // Rows of 7 with masked (-1e9) entries, as attention scores over padded keys.
        let values: Vec<f32> = (0..420)
            .map(|i| match i % 7 {
                5 | 6 if i % 3 == 0 => -1.0e9,
                _ => ((i * 37) % 41) as f32 * 0.3 - 6.0,
            })
            .collect();
        let weights: Vec<f32> = (0..420).map(|i| ((i * 11) % 17) as f32 - 8.0).collect();
        let ((value, grad), (want_value, want_grad)) =
            against_burn(&values, &weights, [6, 10, 7], softmax_tensor, |x| {
                burn::tensor::activation::softmax(x, 2)
            });
        assert_close(&value, &want_value, 1e-6, "value");
        assert_close(&grad, &want_grad, 1e-5, "gradient");
        // Masked entries: no weight, no gradient.
        for (i, (&v, &g)) in value.iter().zip(&grad).enumerate() {
            if values[i] < -1.0e8 {
                assert!(v.abs() < 1e-30 && g.abs() < 1e-20, "{i}: {v} {g}");
            }
        }
        // Without autodiff: the probabilities alone, rows summing to one.
        let plain =
            Tensor::<3>::from_data(TensorData::new(values.clone(), [6, 10, 7]), &Device::flex());
        let plain = softmax_tensor(plain)
            .into_data()
            .try_into_vec::<f32>()
            .expect("f32");
        assert!(worst(&plain, &want_value) < 1e-6);
        for row in plain.chunks_exact(7) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn gelu_tensor_matches_burns_gelu_in_value_and_gradient() {
        let values: Vec<f32> = (0..600).map(|i| (i as f32 - 300.0) * 0.027).collect();
        let weights: Vec<f32> = (0..600).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let ((value, grad), (want_value, want_grad)) = against_burn(
            &values,
            &weights,
            [20, 30],
            gelu_tensor,
            burn::tensor::activation::gelu,
        );
        assert_close(&value, &want_value, 2e-6, "value");
        assert_close(&grad, &want_grad, 1e-5, "gradient");
        // Without autodiff: the values alone.
        let plain =
            Tensor::<2>::from_data(TensorData::new(values.clone(), [20, 30]), &Device::flex());
        let plain = gelu_tensor(plain)
            .into_data()
            .try_into_vec::<f32>()
            .expect("f32");
        assert!(worst(&plain, &want_value) < 2e-6);
    }
}
