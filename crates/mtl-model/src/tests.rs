//! Shape, padding-invariance, batch-independence and save/load tests of the model.

use burn::tensor::{Bool, Device, Int, Tensor, TensorData, Tolerance};
use proptest::prelude::*;

use crate::*;

fn small(pooling: Pooling, norm: NormPosition, pos: PositionalEncoding) -> MultitaskConfig {
    MultitaskConfig::new(30, 3, 5)
        .with_d_model(16)
        .with_nhead(2)
        .with_num_encoder_layers(2)
        .with_dim_feedforward(32)
        .with_max_seq_length(24)
        .with_pooling(pooling)
        .with_norm(norm)
        .with_positional_encoding(pos)
}

/// Builds `[batch, seq]` tokens and mask from rows of real token ids, padded with 0 to `seq`.
fn batch(rows: &[Vec<i64>], seq: usize, device: &Device) -> (Tensor<2, Int>, Tensor<2, Bool>) {
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    for row in rows {
        for i in 0..seq {
            ids.push(row.get(i).copied().unwrap_or(0));
            mask.push(i >= row.len());
        }
    }
    (
        Tensor::from_data(TensorData::new(ids, [rows.len(), seq]), device),
        Tensor::from_data(TensorData::new(mask, [rows.len(), seq]), device),
    )
}

/// A model of `small` with mean pooling, post-norm and learned positions.
fn learned_model(device: &Device) -> MultitaskTransformer {
    let config = small(
        Pooling::Mean,
        NormPosition::Post,
        PositionalEncoding::Learned,
    );
    MultitaskTransformer::new(&config, device).expect("valid")
}

fn all_configs() -> Vec<MultitaskConfig> {
    let mut out = Vec::new();
    for pooling in [Pooling::Mean, Pooling::First, Pooling::Max] {
        for norm in [NormPosition::Post, NormPosition::Pre] {
            for pos in [PositionalEncoding::Sinusoidal, PositionalEncoding::Learned] {
                out.push(small(pooling, norm, pos));
            }
        }
    }
    out
}

#[test]
fn shapes_of_every_head() {
    let device = Device::flex();
    for config in all_configs() {
        let model = MultitaskTransformer::new(&config, &device).expect("valid");
        let (tokens, mask) = batch(&[vec![1, 2, 3], vec![4]], 6, &device);
        model.check_input(&tokens, &mask).expect("fits");
        let out = model.forward_joint(tokens.clone(), mask.clone());
        assert_eq!(out.classification.dims(), [2, 3]);
        assert_eq!(out.ner.dims(), [2, 6, 5]);
        assert_eq!(out.pooled.dims(), [2, 16]);
        assert_eq!(out.hidden.dims(), [2, 6, 16]);
        match model.forward(tokens.clone(), mask.clone(), Task::Classification) {
            TaskLogits::Classification(t) => t.into_data().assert_approx_eq::<f32>(
                &out.classification.clone().into_data(),
                Tolerance::absolute(1e-6),
            ),
            TaskLogits::Ner(_) => panic!("wrong head"),
        }
        match model.forward(tokens, mask, Task::Ner) {
            TaskLogits::Ner(t) => t
                .into_data()
                .assert_approx_eq::<f32>(&out.ner.into_data(), Tolerance::absolute(1e-6)),
            TaskLogits::Classification(_) => panic!("wrong head"),
        }
    }
}

#[test]
fn check_input_rejects_mismatched_and_long_batches() {
    let device = Device::flex();
    let model = learned_model(&device);
    let (tokens, _) = batch(&[vec![1, 2]], 3, &device);
    let (_, mask) = batch(&[vec![1, 2]], 4, &device);
    assert!(matches!(
        model.check_input(&tokens, &mask),
        Err(Error::MaskShape { .. })
    ));
    let (tokens, mask) = batch(&[vec![1; 25]], 25, &device);
    assert!(matches!(
        model.check_input(&tokens, &mask),
        Err(Error::TooLong { seq: 25, max: 24 })
    ));
}

#[test]
fn invalid_config_is_refused_before_building() {
    let device = Device::flex();
    let config = small(
        Pooling::Mean,
        NormPosition::Post,
        PositionalEncoding::Sinusoidal,
    )
    .with_nhead(3);
    assert!(matches!(
        MultitaskTransformer::new(&config, &device),
        Err(Error::Config(_))
    ));
}

#[test]
fn sinusoidal_table_matches_formula() {
    let device = Device::flex();
    let t = sinusoidal_table(5, 8, &device)
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32");
    for pos in 0..5 {
        for i in 0..4 {
            let angle = pos as f64 / 10000f64.powf(2.0 * i as f64 / 8.0);
            assert!((t[pos * 8 + 2 * i] as f64 - angle.sin()).abs() < 1e-5);
            assert!((t[pos * 8 + 2 * i + 1] as f64 - angle.cos()).abs() < 1e-5);
        }
    }
}

#[test]
fn save_load_round_trip_gives_identical_logits() {
    let device = Device::flex();
    let dir = std::env::temp_dir().join(format!("mtl-model-rt-{}", std::process::id()));
    let config = small(Pooling::Max, NormPosition::Pre, PositionalEncoding::Learned);
    let model = MultitaskTransformer::new(&config, &device).expect("valid");
    model.save_dir(&dir).expect("saved");
    let loaded = MultitaskTransformer::load_dir(&dir, &device).expect("loaded");
    assert_eq!(loaded.config(), &config);
    let (tokens, mask) = batch(&[vec![3, 4, 5, 6], vec![7, 8]], 4, &device);
    let a = model.forward_joint(tokens.clone(), mask.clone());
    let b = loaded.forward_joint(tokens, mask);
    assert_eq!(a.classification.into_data(), b.classification.into_data());
    assert_eq!(a.ner.into_data(), b.ner.into_data());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn loading_mismatched_or_truncated_weights_is_an_error() {
    let device = Device::flex();
    let dir = std::env::temp_dir().join(format!("mtl-model-bad-{}", std::process::id()));
    let config = small(
        Pooling::Mean,
        NormPosition::Post,
        PositionalEncoding::Sinusoidal,
    );
    MultitaskTransformer::new(&config, &device)
        .expect("valid")
        .save_dir(&dir)
        .expect("saved");

    // A config that does not match the weights.
    save_config(&config.clone().with_dim_feedforward(48), &dir).expect("config written");
    let err = MultitaskTransformer::load_dir(&dir, &device).expect_err("mismatch");
    assert!(matches!(err, Error::Weights { .. }), "{err}");
    assert!(err.to_string().contains("model.bpk"), "{err}");

    // A truncated weights file.
    save_config(&config, &dir).expect("config written");
    let weights = dir.join(io::WEIGHTS_FILE);
    let bytes = std::fs::read(&weights).expect("read");
    for cut in [0, 10, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&weights, &bytes[..cut]).expect("write");
        let err = MultitaskTransformer::load_dir(&dir, &device).expect_err("truncated");
        assert!(matches!(err, Error::Weights { .. }), "cut {cut}: {err}");
    }

    // A config from another format version.
    std::fs::write(
        dir.join(io::CONFIG_FILE),
        r#"{"format_version": 99, "model": {}}"#,
    )
    .expect("write");
    let err = MultitaskTransformer::load_dir(&dir, &device).expect_err("version");
    assert!(
        matches!(
            err,
            Error::FormatVersion {
                found: Some(99),
                ..
            }
        ),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

fn rows_strategy() -> impl Strategy<Value = Vec<Vec<i64>>> {
    prop::collection::vec(prop::collection::vec(1i64..30, 1..8), 1..4)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Appending padding leaves the classification logits and the real tokens' NER logits unchanged.
    #[test]
    fn extra_padding_changes_nothing(rows in rows_strategy(), extra in 1usize..6, cfg in 0usize..12) {
        let device = Device::flex();
        let config = all_configs()[cfg].clone();
        let model = MultitaskTransformer::new(&config, &device).expect("valid");
        let longest = rows.iter().map(Vec::len).max().unwrap_or(1);
        let (t1, m1) = batch(&rows, longest, &device);
        let (t2, m2) = batch(&rows, longest + extra, &device);
        let a = model.forward_joint(t1, m1);
        let b = model.forward_joint(t2, m2);
        a.classification.into_data().assert_approx_eq::<f32>(&b.classification.into_data(), Tolerance::absolute(1e-4));
        let [n, _, tags] = a.ner.dims();
        b.ner.narrow(1, 0, longest).into_data()
            .assert_approx_eq::<f32>(&a.ner.clone().into_data(), Tolerance::absolute(1e-4));
        prop_assert_eq!(n, rows.len());
        prop_assert_eq!(tags, 5);
    }

    /// An example's logits do not depend on the other examples of its batch.
    #[test]
    fn examples_are_independent_of_their_batch(rows in rows_strategy(), cfg in 0usize..12) {
        let device = Device::flex();
        let config = all_configs()[cfg].clone();
        let model = MultitaskTransformer::new(&config, &device).expect("valid");
        let longest = rows.iter().map(Vec::len).max().unwrap_or(1);
        let (t, m) = batch(&rows, longest, &device);
        let together = model.forward_joint(t, m);
        for (i, row) in rows.iter().enumerate() {
            let (t1, m1) = batch(std::slice::from_ref(row), row.len(), &device);
            let alone = model.forward_joint(t1, m1);
            together.classification.clone().narrow(0, i, 1).into_data()
                .assert_approx_eq::<f32>(&alone.classification.into_data(), Tolerance::absolute(1e-4));
            together.ner.clone().narrow(0, i, 1).narrow(1, 0, row.len()).into_data()
                .assert_approx_eq::<f32>(&alone.ner.into_data(), Tolerance::absolute(1e-4));
        }
    }
}

/// `small` with character features (3 characters per word) and the sentence vector fed to
/// the NER head.
fn with_chars() -> MultitaskConfig {
    small(
        Pooling::Mean,
        NormPosition::Post,
        PositionalEncoding::Learned,
    )
    .with_char_features(Some(CharFeatures {
        buckets: 9,
        max_chars: 3,
        embedding_dim: 4,
        filters: 6,
        kernel_size: 3,
    }))
    .with_sentence_to_tokens(true)
}

/// Character ids `[rows, seq, 3]` for `rows` padded to `seq`: a word's ids depend on its token
/// id; padding gets the padding id 0.
fn chars_of(rows: &[Vec<i64>], seq: usize, device: &Device) -> Tensor<3, Int> {
    let mut ids = Vec::new();
    for row in rows {
        for i in 0..seq {
            match row.get(i) {
                Some(&t) => ids.extend([1 + t % 8, 1 + (t / 3) % 8, 0]),
                None => ids.extend([0, 0, 0]),
            }
        }
    }
    Tensor::from_data(TensorData::new(ids, [rows.len(), seq, 3]), device)
}

#[test]
fn character_features_are_read_checked_and_saved() {
    let device = Device::flex();
    let config = with_chars();
    let model = MultitaskTransformer::new(&config, &device).expect("valid");
    let rows = [vec![3, 4, 5, 6], vec![7, 8]];
    let (tokens, mask) = batch(&rows, 4, &device);
    let chars = chars_of(&rows, 4, &device);
    model
        .check_input_with(&tokens, &mask, Some(&chars))
        .expect("fits");
    assert!(matches!(
        model.check_input(&tokens, &mask),
        Err(Error::CharShape {
            chars: None,
            expected: Some([2, 4, 3])
        })
    ));
    let narrow = chars.clone().narrow(2, 0, 2);
    assert!(matches!(
        model.check_input_with(&tokens, &mask, Some(&narrow)),
        Err(Error::CharShape { .. })
    ));
    let plain = learned_model(&device);
    assert!(matches!(
        plain.check_input_with(&tokens, &mask, Some(&chars)),
        Err(Error::CharShape { expected: None, .. })
    ));

    let out = model.forward_joint_with(tokens.clone(), mask.clone(), Some(chars.clone()));
    assert_eq!(out.ner.dims(), [2, 4, 5]);
    // The single-head paths agree with the joint pass (the NER head pools the sentence too).
    model
        .tag_with(tokens.clone(), mask.clone(), Some(chars.clone()))
        .into_data()
        .assert_approx_eq::<f32>(&out.ner.clone().into_data(), Tolerance::absolute(1e-6));
    model
        .classify_with(tokens.clone(), mask.clone(), Some(chars.clone()))
        .into_data()
        .assert_approx_eq::<f32>(
            &out.classification.clone().into_data(),
            Tolerance::absolute(1e-6),
        );

    // The characters matter: other characters for the same tokens give other logits.
    let other = chars.clone().add_scalar(1).clamp_max(8);
    let changed = model.forward_joint_with(tokens.clone(), mask.clone(), Some(other));
    let diff = (changed.ner - out.ner.clone())
        .abs()
        .max()
        .into_scalar::<f32>();
    assert!(diff > 1e-4, "characters ignored (max diff {diff})");

    // Save and load keep the character CNN and the sentence map.
    let dir = std::env::temp_dir().join(format!("mtl-model-chars-{}", std::process::id()));
    model.save_dir(&dir).expect("saved");
    let loaded = MultitaskTransformer::load_dir(&dir, &device).expect("loaded");
    assert_eq!(loaded.config(), &config);
    let back = loaded.forward_joint_with(tokens, mask, Some(chars));
    assert_eq!(out.ner.into_data(), back.ner.into_data());
    std::fs::remove_dir_all(&dir).ok();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// With character features and the sentence vector in the NER head, appending padding
    /// still changes nothing and examples stay independent of their batch.
    #[test]
    fn character_model_ignores_padding_and_batch(rows in rows_strategy(), extra in 1usize..5) {
        let device = Device::flex();
        let model = MultitaskTransformer::new(&with_chars(), &device).expect("valid");
        let longest = rows.iter().map(Vec::len).max().unwrap_or(1);
        let run = |rows: &[Vec<i64>], seq: usize| {
            let (t, m) = batch(rows, seq, &device);
            model.forward_joint_with(t, m, Some(chars_of(rows, seq, &device)))
        };
        let a = run(&rows, longest);
        let b = run(&rows, longest + extra);
        a.classification.clone().into_data().assert_approx_eq::<f32>(&b.classification.into_data(), Tolerance::absolute(1e-4));
        b.ner.narrow(1, 0, longest).into_data()
            .assert_approx_eq::<f32>(&a.ner.clone().into_data(), Tolerance::absolute(1e-4));
        for (i, row) in rows.iter().enumerate() {
            let alone = run(std::slice::from_ref(row), row.len());
            a.ner.clone().narrow(0, i, 1).narrow(1, 0, row.len()).into_data()
                .assert_approx_eq::<f32>(&alone.ner.into_data(), Tolerance::absolute(1e-4));
        }
        prop_assert_eq!(a.ner.dims()[0], rows.len());
    }
}

/// A batch of nothing but padding encodes to zeros (the layers run on real tokens only).
#[test]
fn all_padding_batches_encode_to_zeros() {
    let device = Device::flex();
    let model = learned_model(&device);
    let tokens = Tensor::<2, Int>::zeros([2, 3], &device);
    let mask = Tensor::<2, Bool>::from_data(TensorData::new(vec![true; 6], [2, 3]), &device);
    let out = model.forward_joint(tokens, mask);
    let hidden: Vec<f32> = out.hidden.into_data().try_to_vec().expect("f32");
    assert_eq!(hidden.len(), 2 * 3 * 16);
    assert!(hidden.iter().all(|v| *v == 0.0));
    assert_eq!(out.ner.dims(), [2, 3, 5]);
}
