//! Dropout with a cheap mask on the CPU backend.
//!
//! Burn's `Dropout` draws its mask from the backend's generator; on flex (the default CPU
//! backend) that is a ChaCha stream sampled one element at a time, and a profile of a training
//! step of the `small` benchmark configuration put about a quarter of the step there. On flex
//! this module expands one 64-bit seed per call into the mask with a counter-based hash
//! (SplitMix64's finaliser), four times cheaper per element and with one multiply instead of
//! two. Other backends keep Burn's dropout, whose generator runs on the device.
//!
//! **Masks do not depend on how a batch is split or padded.** The value at an element is a
//! hash of the call's seed, the example's index in the whole batch and the element's place
//! within its example in a layout that padding does not change: `[batch, width]` by unit,
//! `[batch, seq, width]` by `position * width + unit`, attention weights
//! `[batch, heads, seq, seq]` by `(head, query, key)` with a fixed stride. The seed comes from
//! a [`seeded`] stream when the caller opened one (the trainer does, per step and replica:
//! a replica holding examples `8..16` of a batch draws the masks those examples get when
//! the batch runs whole), else from two draws of the backend's generator (`Device::seed` still
//! fixes everything).

use std::cell::Cell;

use burn::nn::Dropout;
use burn::tensor::{Device, Distribution, Tensor, TensorData};

/// Stride of a sequence coordinate in an example's canonical mask layout (longer than any
/// sequence a model takes).
const SEQ_STRIDE: u64 = 1 << 20;

#[derive(Clone, Copy)]
struct Stream {
    seed: u64,
    calls: u64,
    first_example: u64,
}

thread_local! {
    static STREAM: Cell<Option<Stream>> = const { Cell::new(None) };
}

/// Runs `f` with this thread's dropout seeds taken from `seed` (the `k`-th dropout call
/// gets a hash of `seed` and `k`) and with the batch's first example counted as example
/// `first_example` of a larger batch. Two runs of the same forward pass under the same `seed`
/// drop the same units of the same examples, whichever examples share their batch.
pub fn seeded<R>(seed: u64, first_example: usize, f: impl FnOnce() -> R) -> R {
    let outer = STREAM.with(|s| {
        s.replace(Some(Stream {
            seed,
            calls: 0,
            first_example: first_example as u64,
        }))
    });
    let out = f();
    STREAM.with(|s| s.set(outer));
    out
}

/// The seed of this call and the index of the batch's first example.
fn call_seed(device: &Device) -> (u64, u64) {
    let from_stream = STREAM.with(|s| {
        let mut stream = s.get()?;
        stream.calls += 1;
        s.set(Some(stream));
        Some((
            mix(stream.seed ^ mix(stream.calls.wrapping_mul(GOLDEN))),
            stream.first_example,
        ))
    });
    from_stream.unwrap_or_else(|| (draw_seed(device), 0))
}

/// Applies `layer` to `x`: identity outside training (the layer's flag off, no autodiff on the
/// device, or `prob == 0`); on the CPU backend a hashed mask, elsewhere Burn's dropout.
///
/// # Shapes
/// - `x`: `[batch, width]`, `[batch, seq, width]` or `[batch, heads, seq, seq]` (attention
///   weights); output: the same
pub fn dropout<const D: usize>(layer: &Dropout, x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    if !layer.training.is_enabled() || !device.is_autodiff() || layer.prob == 0.0 {
        return x;
    }
    if !crate::is_cpu_backend(&device) {
        return layer.forward(x);
    }
    let shape = x.shape();
    let dims = shape.dims::<D>();
    let dims: &[usize] = &dims;
    let (seed, first) = call_seed(&device);
    let mut mask = vec![0.0f32; shape.num_elements()];
    let batch = dims.first().copied().unwrap_or(1).max(1);
    let per_example = mask.len() / batch;
    for (b, example) in mask.chunks_mut(per_example.max(1)).enumerate() {
        let seed = example_seed(seed, first + b as u64);
        if D == 4 {
            // [heads, seq, seq]: each (head, query) row at its canonical start.
            let [heads, seq] = [dims[1], dims[2]];
            for (r, row) in example.chunks_mut(dims[3].max(1)).enumerate() {
                let (h, q) = ((r / seq.max(1)) as u64, (r % seq.max(1)) as u64);
                debug_assert!(h < heads as u64);
                let start = (h * SEQ_STRIDE + q) * SEQ_STRIDE;
                keep_mask_at(seed, start as usize, layer.prob, row);
            }
        } else {
            // [width] or [seq, width]: position * width + unit already ignores padding.
            keep_mask_at(seed, 0, layer.prob, example);
        }
    }
    x * Tensor::<D>::from_data(TensorData::new(mask, shape), &device)
}

/// [`dropout`] on `[tokens, width]` rows packed out of a padded `[batch * seq, width]` tensor:
/// `rows[i]` is the padded row (`b * seq + position`) of packed row `i`. On the CPU backend
/// each element gets the mask value its place in the padded `[batch, seq, width]` tensor
/// would have had, so packing does not change which units drop; elsewhere Burn's dropout on
/// the packed tensor.
///
/// # Shapes
/// - `x`: `[tokens, width]`; output: the same
pub fn dropout_rows(layer: &Dropout, x: Tensor<2>, rows: &[usize], seq: usize) -> Tensor<2> {
    let device = x.device();
    if !layer.training.is_enabled() || !device.is_autodiff() || layer.prob == 0.0 {
        return x;
    }
    if !crate::is_cpu_backend(&device) {
        return layer.forward(x);
    }
    let [tokens, width] = x.dims();
    debug_assert_eq!(rows.len(), tokens, "one padded row per packed row");
    let (seed, first) = call_seed(&device);
    let seq = seq.max(1);
    let mut mask = vec![0.0f32; tokens * width];
    for (out, &row) in mask.chunks_exact_mut(width.max(1)).zip(rows) {
        let seed = example_seed(seed, first + (row / seq) as u64);
        keep_mask_at(seed, (row % seq) * width, layer.prob, out);
    }
    x * Tensor::<2>::from_data(TensorData::new(mask, [tokens, width]), &device)
}

/// 48 bits from the backend's generator (two draws of its default distribution, 24 bits each).
fn draw_seed(device: &Device) -> u64 {
    let draws = Tensor::<1>::random([2], Distribution::Default, device)
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_default();
    draws.iter().fold(0u64, |acc, &u| {
        (acc << 24) | (u.clamp(0.0, 1.0) * 16_777_216.0) as u64
    })
}

/// The mask seed of example `index` under the call seed `seed`.
fn example_seed(seed: u64, index: u64) -> u64 {
    mix(seed ^ mix(index.wrapping_add(1).wrapping_mul(GOLDEN)))
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function.
#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
/// `n` mask values: `0` with probability `prob`, else `1 / (1 - prob)`. Each 64-bit hash of
/// `seed + k * golden` gives two 32-bit uniforms, for elements `2k` and `2k + 1`.
fn keep_mask(seed: u64, n: usize, prob: f64) -> Vec<f32> {
    let mut out = vec![0.0f32; n];
    keep_mask_at(seed, 0, prob, &mut out);
    out
}

/// Elements `start..start + out.len()` of [`keep_mask`]`(seed, .., prob)`, into `out`: one
/// hash per pair of elements, as the whole mask.
fn keep_mask_at(seed: u64, start: usize, prob: f64, out: &mut [f32]) {
    let scale = (1.0 / (1.0 - prob)) as f32;
    // Drop when the uniform u32 is below prob * 2^32.
    let threshold = (prob * 4_294_967_296.0).min(4_294_967_295.0) as u32;
    let base = mix(seed);
    let halves = |k: usize| {
        let h = mix(base.wrapping_add((k as u64).wrapping_mul(GOLDEN)));
        [h as u32, (h >> 32) as u32]
    };
    let value = |u: u32| if u < threshold { 0.0 } else { scale };
    // An odd start takes the second half of its pair; the rest goes pair by pair.
    let (first, rest) = if start % 2 == 1 && !out.is_empty() {
        let (first, rest) = out.split_at_mut(1);
        first[0] = value(halves(start / 2)[1]);
        (start / 2 + 1, rest)
    } else {
        (start / 2, out)
    };
    crate::math::vectorized(
        #[inline(always)]
        || {
            let mut pairs = rest.chunks_exact_mut(2);
            let mut k = first;
            for pair in &mut pairs {
                let [a, b] = halves(k);
                pair[0] = value(a);
                pair[1] = value(b);
                k += 1;
            }
            if let [last] = pairs.into_remainder() {
                *last = value(halves(k)[0]);
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::DropoutConfig;
    use proptest::prelude::*;

    /// The backend's generator is one per process: the two tests that seed it and draw from it
    /// must not interleave their draws.
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn mask_rate_and_scale() {
        let mask = keep_mask(7, 200_001, 0.1);
        let dropped = mask.iter().filter(|&&v| v == 0.0).count() as f64 / mask.len() as f64;
        assert!((dropped - 0.1).abs() < 0.005, "dropped {dropped}");
        assert!(
            mask.iter()
                .all(|&v| v == 0.0 || (v - 1.0 / 0.9).abs() < 1e-6)
        );
        // Different seeds give different masks; the same seed the same one.
        assert_ne!(keep_mask(7, 64, 0.5), keep_mask(8, 64, 0.5));
        assert_eq!(keep_mask(7, 64, 0.5), keep_mask(7, 64, 0.5));
    }

    #[test]
    fn identity_outside_training_and_seeded_in_training() {
        let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
        let layer = DropoutConfig::new(0.5).init();
        let plain = Device::flex();
        let x = Tensor::<2>::ones([8, 16], &plain);
        let same = dropout(&layer, x.clone()).into_data();
        assert_eq!(same, x.into_data(), "no autodiff: identity");

        let ad = Device::flex().autodiff();
        let run = |seed: u64| {
            ad.seed(seed);
            dropout(&layer, Tensor::<2>::ones([8, 16], &ad))
                .into_data()
                .try_to_vec::<f32>()
                .expect("f32")
        };
        let (a, b, c) = (run(3), run(3), run(4));
        assert_eq!(a, b, "Device::seed fixes the mask");
        assert_ne!(a, c);
        assert!(a.iter().all(|&v| v == 0.0 || v == 2.0));
        let kept = a.iter().filter(|&&v| v == 2.0).count();
        assert!((32..=96).contains(&kept), "kept {kept} of 128");
    }

    #[test]
    fn gradients_flow_through_kept_elements_only() {
        let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
        let layer = DropoutConfig::new(0.3).init();
        let ad = Device::flex().autodiff();
        ad.seed(1);
        let x = Tensor::<1>::ones([64], &ad).require_grad();
        let y = dropout(&layer, x.clone());
        let out = y.clone().into_data().try_to_vec::<f32>().expect("f32");
        let grads = y.sum().backward();
        let g = x
            .grad(&grads)
            .expect("x has a gradient")
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        assert_eq!(out, g, "d(x * mask)/dx = mask, and x = 1");
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().expect("f32")
    }

    /// A batch split in two, each half padded to its own length, gets the masks the whole
    /// batch gets: by example, not by place in the padded tensor.
    #[test]
    fn masks_follow_examples_not_batch_split_or_padding() {
        let layer = DropoutConfig::new(0.5).init();
        let ad = Device::flex().autodiff();
        let ones3 = |b, s| Tensor::<3>::ones([b, s, 3], &ad);
        let whole = values(seeded(9, 0, || dropout(&layer, ones3(4, 5))));
        // Examples 2 and 3 alone, padded to 7 positions.
        let half = values(seeded(9, 2, || dropout(&layer, ones3(2, 7))));
        for b in 0..2 {
            let w = &whole[(2 + b) * 15..(3 + b) * 15];
            assert_eq!(w, &half[b * 21..b * 21 + 15], "example {}", 2 + b);
        }
        assert!(whole.contains(&0.0) && whole.contains(&2.0));

        // Attention weights [batch, heads, seq, seq]: (head, query, key) keep their mask.
        let ones4 = |b, s| Tensor::<4>::ones([b, 2, s, s], &ad);
        let whole = values(seeded(3, 0, || dropout(&layer, ones4(2, 3))));
        let half = values(seeded(3, 1, || dropout(&layer, ones4(1, 4))));
        for h in 0..2 {
            for q in 0..3 {
                let w = &whole[((2 + h) * 3 + q) * 3..][..3];
                assert_eq!(w, &half[(h * 4 + q) * 4..][..3], "head {h} query {q}");
            }
        }

        // Packed rows: example 1's position p sits at padded row seq + p in any packing.
        let rows_whole: Vec<usize> = vec![0, 1, 4, 5, 6];
        let x = Tensor::<2>::ones([5, 3], &ad);
        let whole = values(seeded(5, 0, || {
            dropout_rows(&layer, x.clone(), &rows_whole, 4)
        }));
        let padded = values(seeded(5, 0, || dropout(&layer, ones3(2, 4))));
        for (i, &row) in rows_whole.iter().enumerate() {
            assert_eq!(&whole[i * 3..i * 3 + 3], &padded[row * 3..row * 3 + 3]);
        }
        let x = Tensor::<2>::ones([3, 3], &ad);
        let half = values(seeded(5, 1, || dropout_rows(&layer, x, &[0, 1, 2], 6)));
        assert_eq!(&half[..], &whole[6..15], "example 1 alone, padded to 6");
    }

    /// Each call of a stream gets its own seed; the same stream replays the same masks.
    #[test]
    fn a_seeded_stream_replays_and_moves_on() {
        let layer = DropoutConfig::new(0.5).init();
        let ad = Device::flex().autodiff();
        let two = || {
            let x = Tensor::<2>::ones([4, 16], &ad);
            (
                values(dropout(&layer, x.clone())),
                values(dropout(&layer, x)),
            )
        };
        let (a1, a2) = seeded(1, 0, two);
        let (b1, b2) = seeded(1, 0, two);
        assert_eq!((&a1, &a2), (&b1, &b2));
        assert_ne!(a1, a2, "the second call has its own seed");
        assert_ne!(a1, seeded(2, 0, two).0);
    }

    proptest! {
        /// Any window of the mask, computed on its own, is that window of the whole mask.
        #[test]
        fn windows_of_the_mask_agree(seed in any::<u64>(), start in 0usize..100, len in 0usize..60) {
            let whole = keep_mask(seed, start + len, 0.3);
            let mut part = vec![0.0; len];
            keep_mask_at(seed, start, 0.3, &mut part);
            prop_assert_eq!(&whole[start..], &part[..]);
        }

        #[test]
        fn mask_values_are_zero_or_scale(seed in any::<u64>(), n in 0usize..300, p in 0.0f64..0.95) {
            let mask = keep_mask(seed, n, p);
            prop_assert_eq!(mask.len(), n);
            let scale = (1.0 / (1.0 - p)) as f32;
            prop_assert!(mask.iter().all(|&v| v == 0.0 || v == scale));
        }
    }
}
