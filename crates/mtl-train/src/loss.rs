//! Cross-entropy losses with PyTorch's `ignore_index` semantics (Burn's `CrossEntropyLoss` has
//! none): targets equal to [`IGNORE_INDEX`] contribute nothing, and the mean is over the rest.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};

/// Targets with this value are ignored, as PyTorch's `ignore_index=-100`.
pub const IGNORE_INDEX: i64 = -100;

/// A masked mean loss and the number of targets it averages.
#[derive(Debug, Clone)]
pub struct MaskedLoss {
    /// Mean loss over the non-ignored targets, shape `[1]`; `0` when there are none.
    pub mean: Tensor<1>,
    /// Number of non-ignored targets.
    pub count: usize,
}

/// `F.cross_entropy(logits, targets, ignore_index=-100)` for `[N, C]` logits.
///
/// Where every target is ignored PyTorch returns NaN; this returns a zero loss with `count = 0`,
/// so a batch without labels for a task cannot poison training.
///
/// # Shapes
/// - `logits`: `[n, classes]`
/// - `targets`: `[n]`, class ids or [`IGNORE_INDEX`]
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> MaskedLoss {
    let count = targets
        .clone()
        .greater_equal_elem(0)
        .int()
        .sum()
        .into_scalar::<i64>()
        .max(0) as usize;
    MaskedLoss {
        mean: cross_entropy_sum(logits, targets).div_scalar(count.max(1) as f64),
        count,
    }
}

/// The sum of the cross-entropy over the non-ignored targets: what a part of a batch
/// contributes to the whole batch's mean, once divided by the whole batch's count (data-parallel
/// replicas divide by it, not by their own count).
///
/// # Shapes
/// - `logits`: `[n, classes]`
/// - `targets`: `[n]`, class ids or [`IGNORE_INDEX`]
/// - output: `[1]`
pub fn cross_entropy_sum(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [n, _] = logits.dims();
    let ignore = targets.clone().lower_elem(0);
    let safe_targets = targets.clamp_min(0).reshape([n, 1]);
    log_softmax(logits, 1)
        .gather(1, safe_targets)
        .reshape([n])
        .neg()
        .mask_fill(ignore, 0.0)
        .sum()
}

/// Token-level cross-entropy for NER logits, ignoring [`IGNORE_INDEX`] (padding, continuation
/// sub-tokens, words without tags).
///
/// # Shapes
/// - `logits`: `[batch, seq, tags]`
/// - `targets`: `[batch, seq]`
pub fn token_cross_entropy(logits: Tensor<3>, targets: Tensor<2, Int>) -> MaskedLoss {
    let [batch, seq, tags] = logits.dims();
    cross_entropy(
        logits.reshape([batch * seq, tags]),
        targets.reshape([batch * seq]),
    )
}

/// [`cross_entropy_sum`] over tokens, as [`token_cross_entropy`] is over tokens.
///
/// # Shapes
/// - `logits`: `[batch, seq, tags]`
/// - `targets`: `[batch, seq]`
/// - output: `[1]`
pub fn token_cross_entropy_sum(logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<1> {
    let [batch, seq, tags] = logits.dims();
    cross_entropy_sum(
        logits.reshape([batch * seq, tags]),
        targets.reshape([batch * seq]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Case {
        name: String,
        logits_shape: Vec<usize>,
        logits: serde_json::Value,
        targets: serde_json::Value,
        loss: Option<f32>,
        n_valid: usize,
    }
    #[derive(Deserialize)]
    struct Fixture {
        cross_entropy: Vec<Case>,
    }

    fn flat_f32(v: &serde_json::Value, out: &mut Vec<f32>) {
        match v {
            serde_json::Value::Array(a) => a.iter().for_each(|x| flat_f32(x, out)),
            serde_json::Value::Number(n) => out.push(n.as_f64().unwrap_or(f64::NAN) as f32),
            _ => out.push(f32::NAN),
        }
    }

    /// Golden values from PyTorch 2.9 (`scripts/torch_golden/make_train_golden.py`).
    #[test]
    fn matches_pytorch_cross_entropy_with_ignore_index() {
        let fx: Fixture = serde_json::from_str(include_str!("../tests/fixtures/torch/losses.json"))
            .expect("fixture");
        let device = Device::flex();
        assert!(fx.cross_entropy.len() >= 5);
        for case in fx.cross_entropy {
            let mut logits = Vec::new();
            flat_f32(&case.logits, &mut logits);
            let mut t = Vec::new();
            flat_f32(&case.targets, &mut t);
            let targets: Vec<i64> = t.iter().map(|&x| x as i64).collect();
            let classes = *case.logits_shape.last().expect("shape");
            let n = logits.len() / classes;
            let loss = if case.logits_shape.len() == 3 {
                let [b, s] = [case.logits_shape[0], case.logits_shape[1]];
                token_cross_entropy(
                    Tensor::from_data(TensorData::new(logits, [b, s, classes]), &device),
                    Tensor::from_data(TensorData::new(targets, [b, s]), &device),
                )
            } else {
                cross_entropy(
                    Tensor::from_data(TensorData::new(logits, [n, classes]), &device),
                    Tensor::from_data(TensorData::new(targets, [n]), &device),
                )
            };
            assert_eq!(loss.count, case.n_valid, "{}", case.name);
            let got = loss.mean.into_scalar::<f32>();
            match case.loss {
                Some(expected) => assert!(
                    (got - expected).abs() <= 1e-5 * expected.abs().max(1.0),
                    "{}: {got} vs {expected}",
                    case.name
                ),
                // PyTorch: NaN when every target is ignored; ours: 0 with count 0.
                None => assert_eq!((got, loss.count), (0.0, 0), "{}", case.name),
            }
        }
    }
}
