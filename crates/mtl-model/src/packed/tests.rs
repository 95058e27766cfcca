//! The packed path against the Burn model: same logits at every real position.

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use proptest::prelude::*;

use crate::*;

/// Every configuration family: pooling x norm position x positions x activation, plus
/// embedding scaling off, character features and the sentence vector fed to the NER head.
fn configs() -> Vec<MultitaskConfig> {
    let mut out = Vec::new();
    for pooling in [Pooling::Mean, Pooling::First, Pooling::Max] {
        for norm in [NormPosition::Post, NormPosition::Pre] {
            for pos in [PositionalEncoding::Sinusoidal, PositionalEncoding::Learned] {
                for activation in [Activation::Relu, Activation::Gelu] {
                    out.push(
                        MultitaskConfig::new(40, 4, 6)
                            .with_d_model(16)
                            .with_nhead(4)
                            .with_num_encoder_layers(2)
                            .with_dim_feedforward(24)
                            .with_max_seq_length(20)
                            .with_pooling(pooling)
                            .with_norm(norm)
                            .with_positional_encoding(pos)
                            .with_activation(activation),
                    );
                }
            }
        }
    }
    let mut unscaled = out[0].clone();
    unscaled.scale_embedding = false;
    out.push(unscaled);
    out.push(chars_config());
    out
}

fn chars_config() -> MultitaskConfig {
    MultitaskConfig::new(40, 4, 6)
        .with_d_model(16)
        .with_nhead(2)
        .with_num_encoder_layers(2)
        .with_dim_feedforward(24)
        .with_max_seq_length(20)
        .with_positional_encoding(PositionalEncoding::Learned)
        .with_char_features(Some(CharFeatures {
            buckets: 11,
            max_chars: 4,
            embedding_dim: 3,
            filters: 5,
            kernel_size: 3,
        }))
        .with_sentence_to_tokens(true)
}

/// A word's character ids, derived from its token id (`max_chars` of them, trailing padding).
fn chars_for(id: u32, max_chars: usize) -> Vec<u32> {
    (0..max_chars)
        .map(|i| {
            if i < 3 {
                1 + (id * 7 + i as u32) % 10
            } else {
                0
            }
        })
        .collect()
}

/// Runs the Burn model on `rows` padded to the longest, and the packed model on them packed;
/// returns the largest absolute difference over classification logits and real NER rows.
fn max_difference(model: &MultitaskTransformer, rows: &[Vec<u32>]) -> f32 {
    let device = Device::flex();
    let config = model.config();
    let seq = rows.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let max_chars = config.char_features.as_ref().map(|c| c.max_chars);
    let (mut ids, mut mask, mut chars) = (Vec::new(), Vec::new(), Vec::new());
    let mut input = PackedInput::new();
    for row in rows {
        let mut row_chars = Vec::new();
        for i in 0..seq {
            let id = row.get(i).copied();
            ids.push(i64::from(id.unwrap_or(0)));
            mask.push(id.is_none());
            if let Some(m) = max_chars {
                let c = id.map_or(vec![0; m], |id| chars_for(id, m));
                if id.is_some() {
                    row_chars.extend_from_slice(&c);
                }
                chars.extend(c.into_iter().map(i64::from));
            }
        }
        input.push_with_chars(row, &row_chars);
    }
    let b = rows.len();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, seq]), &device);
    let mask = Tensor::<2, Bool>::from_data(TensorData::new(mask, [b, seq]), &device);
    let chars = max_chars
        .map(|m| Tensor::<3, Int>::from_data(TensorData::new(chars, [b, seq, m]), &device));
    let want = model.forward_joint_with(tokens, mask, chars);
    let want_cls: Vec<f32> = want.classification.into_data().try_into_vec().expect("f32");
    let want_ner: Vec<f32> = want.ner.into_data().try_into_vec().expect("f32");

    let got = PackedModel::from_model(model)
        .forward(&input)
        .expect("valid input");
    assert_eq!(got.offsets.len(), b + 1);
    let tags = config.num_ner_tags;
    let mut worst = 0.0f32;
    for (x, y) in got.classification.iter().zip(&want_cls) {
        worst = worst.max((x - y).abs());
    }
    assert_eq!(got.classification.len(), want_cls.len());
    for (s, row) in rows.iter().enumerate() {
        let packed = got.ner_rows(s);
        assert_eq!(packed.len(), row.len() * tags);
        let padded = &want_ner[s * seq * tags..(s * seq + row.len()) * tags];
        for (x, y) in packed.iter().zip(padded) {
            worst = worst.max((x - y).abs());
        }
    }
    worst
}

fn fixed_rows() -> Vec<Vec<u32>> {
    vec![
        (1..=20).collect(),
        vec![5],
        vec![3, 9, 27, 39, 2, 2, 8],
        (10..22).rev().collect(),
    ]
}

#[test]
fn matches_the_burn_model_on_every_configuration() {
    let device = Device::flex();
    for (i, config) in configs().iter().enumerate() {
        device.seed(i as u64);
        let model = MultitaskTransformer::new(config, &device).expect("valid config");
        let worst = max_difference(&model, &fixed_rows());
        assert!(worst < 1e-4, "config {i}: max |diff| {worst}");
    }
}

#[test]
fn wider_models_match_too() {
    // Several heads of width 32 and a feed-forward wider than a GEMM tile.
    let device = Device::flex();
    device.seed(7);
    let config = MultitaskConfig::new(300, 5, 9)
        .with_d_model(128)
        .with_nhead(4)
        .with_num_encoder_layers(2)
        .with_dim_feedforward(512)
        .with_max_seq_length(64);
    let model = MultitaskTransformer::new(&config, &device).expect("valid config");
    let rows: Vec<Vec<u32>> = (0..9)
        .map(|s| {
            (0..(7 * s + 5) % 64 + 1)
                .map(|t| (t * 37 + s) as u32 % 299 + 1)
                .collect()
        })
        .collect();
    let worst = max_difference(&model, &rows);
    assert!(worst < 1e-4, "max |diff| {worst}");
}

#[test]
fn bad_input_is_a_typed_error() {
    let device = Device::flex();
    let plain = MultitaskTransformer::new(&configs()[0], &device).expect("valid");
    let packed = PackedModel::from_model(&plain);
    let mut input = PackedInput::new();
    input.push(&[1, 2]).push(&[3, 40]);
    assert!(matches!(
        packed.forward(&input),
        Err(Error::TokenId {
            sequence: 1,
            position: 1,
            id: 40,
            vocab_size: 40
        })
    ));
    let mut input = PackedInput::new();
    input.push(&[1; 21]);
    assert!(matches!(
        packed.forward(&input),
        Err(Error::TooLong { seq: 21, max: 20 })
    ));
    let mut input = PackedInput::new();
    input.push_with_chars(&[1], &[1, 2, 3, 0]);
    assert!(matches!(
        packed.forward(&input),
        Err(Error::PackedChars {
            sequence: 0,
            given: 4,
            expected: 0
        })
    ));

    let with_chars = MultitaskTransformer::new(&chars_config(), &device).expect("valid");
    let packed = PackedModel::from_model(&with_chars);
    let mut input = PackedInput::new();
    input.push(&[1, 2]);
    assert!(matches!(
        packed.forward(&input),
        Err(Error::PackedChars {
            sequence: 0,
            given: 0,
            expected: 8
        })
    ));
    let mut input = PackedInput::new();
    input
        .push_with_chars(&[1], &[1, 2, 3, 4])
        .push_with_chars(&[1], &[1, 11, 0, 0]);
    assert!(matches!(
        packed.forward(&input),
        Err(Error::CharId {
            sequence: 1,
            id: 11,
            buckets: 11
        })
    ));
}

#[test]
fn empty_batches_and_sequences() {
    let device = Device::flex();
    let model = MultitaskTransformer::new(&configs()[0], &device).expect("valid");
    let packed = PackedModel::from_model(&model);
    let out = packed.forward(&PackedInput::new()).expect("empty batch");
    assert!(out.classification.is_empty() && out.ner.is_empty());
    let mut input = PackedInput::new();
    input.push(&[]).push(&[4, 5]);
    let out = packed.forward(&input).expect("empty sequence");
    assert!(out.ner_rows(0).is_empty());
    assert_eq!(out.ner_rows(1).len(), 2 * 6);
    // A zero sentence vector: the classifier's bias.
    let bias: Vec<f32> = model
        .classifier
        .bias
        .as_ref()
        .expect("bias")
        .val()
        .into_data()
        .try_into_vec()
        .expect("f32");
    assert_eq!(out.classification_row(0), &bias[..]);
}

/// A sequence's logits, bit for bit, whatever else shares its batch: alone, first, last, with
/// one-token neighbours (so `mtl serve`'s dynamic batches answer as `mtl predict` does).
#[test]
fn batching_does_not_change_a_sequences_bits() {
    let device = Device::flex();
    for config in [configs()[0].clone(), configs()[13].clone(), chars_config()] {
        let model = MultitaskTransformer::new(&config, &device).expect("valid");
        let packed = PackedModel::from_model(&model);
        let max_chars = config.char_features.as_ref().map_or(0, |c| c.max_chars);
        let input = |rows: &[Vec<u32>]| {
            let mut input = PackedInput::new();
            for row in rows {
                let chars: Vec<u32> = row
                    .iter()
                    .flat_map(|&id| chars_for(id, max_chars))
                    .collect();
                input.push_with_chars(row, &chars);
            }
            input
        };
        let rows = fixed_rows();
        let together = packed.forward(&input(&rows)).expect("valid");
        for (s, row) in rows.iter().enumerate() {
            let alone = packed
                .forward(&input(std::slice::from_ref(row)))
                .expect("valid");
            assert_eq!(
                alone.classification_row(0),
                together.classification_row(s),
                "{s}"
            );
            assert_eq!(alone.ner_rows(0), together.ner_rows(s), "{s}");
            let mut mixed = vec![vec![7], row.clone(), vec![1, 2]];
            mixed.reverse();
            let out = packed.forward(&input(&mixed)).expect("valid");
            assert_eq!(
                out.classification_row(1),
                together.classification_row(s),
                "{s}"
            );
            assert_eq!(out.ner_rows(1), together.ner_rows(s), "{s}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Whatever the lengths and their mix, packed and padded inference agree.
    #[test]
    fn any_batch_matches(
        rows in prop::collection::vec(prop::collection::vec(1u32..40, 1..=20), 1..6),
        cfg in 0usize..26,
    ) {
        let device = Device::flex();
        let model = MultitaskTransformer::new(&configs()[cfg], &device).expect("valid");
        let worst = max_difference(&model, &rows);
        prop_assert!(worst < 1e-4, "config {}: max |diff| {}", cfg, worst);
    }
}
