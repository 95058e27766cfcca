//! Data-parallel training equals one-device training: the quickstart model trained with the
//! same seed and batches on one CPU device, on two CPU replicas and on three (an uneven split
//! of each batch) gives the same per-epoch losses within 1e-5 relative and the same metrics.
//! Dropout is on: its masks follow examples, not the part of the batch a replica holds.
//!
//! Over 18 steps. A replica sums its part's gradients in another order than the whole batch's
//! backward pass does, so each step differs from the one-device step by float rounding (about
//! 1e-7 relative); training amplifies such differences as it amplifies any change of reduction
//! order (on the whole quickstart train split: below 4e-7 through step 45, 2e-3 by step 100,
//! when a ReLU unit near zero or an AdamW update of a near-zero gradient tips one way).

use std::path::Path;

use burn::tensor::Device;
use mtl::data::{
    Encoder, Format, ReadOptions, TextEncoder, WordVocab, WordVocabConfig, read_split,
};
use mtl::model::{MultitaskConfig, MultitaskTransformer};
use mtl::train::fit;
use mtl::train::sampler::SamplingStrategy;
use mtl::train::trainer::{EpochRecord, ProgressMode, TrainConfig};

fn losses(e: &EpochRecord) -> [f64; 5] {
    [
        e.train_loss.unwrap_or(f64::NAN),
        e.train_loss_classification.unwrap_or(f64::NAN),
        e.train_loss_ner.unwrap_or(f64::NAN),
        e.valid_loss_classification.unwrap_or(f64::NAN),
        e.valid_loss_ner.unwrap_or(f64::NAN),
    ]
}

#[test]
fn replicas_train_as_one_device_does() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/quickstart");
    let opts = ReadOptions::default();
    let (train, _) = read_split(&data, "train", Some(Format::JointBert), &opts).expect("train");
    let (valid, _) = read_split(&data, "dev", Some(Format::JointBert), &opts).expect("dev");
    let (train, valid) = (&train[..96], &valid[..100]);
    let vocab = WordVocab::build(train, &WordVocabConfig::default());
    let encoder = Encoder::build(train, TextEncoder::Word(vocab), 64).expect("encoder");
    // configs/quickstart.toml's model, dropout included.
    let config = MultitaskConfig::new(
        encoder.text.vocab_size(),
        encoder.labels.len(),
        encoder.tags.len(),
    )
    .with_d_model(128)
    .with_nhead(4)
    .with_num_encoder_layers(2)
    .with_dim_feedforward(256)
    .with_dropout(0.1)
    .with_max_seq_length(64);
    let train_config = TrainConfig {
        epochs: 3,
        batch_size: 16,
        learning_rate: 1e-3,
        warmup_steps: 10,
        sampling: SamplingStrategy::Joint,
        seed: 42,
        progress: ProgressMode::Off,
        ..TrainConfig::default()
    };
    let cpu = Device::flex();
    cpu.seed(42);
    let initial = MultitaskTransformer::new(&config, &cpu).expect("valid config");
    let run = |replicas: usize| {
        fit(
            initial.clone(),
            &encoder,
            train,
            Some(valid),
            &train_config,
            None,
            &vec![cpu.clone(); replicas],
        )
        .expect("trains")
        .history
    };
    let one = run(1);
    assert_eq!(one.epochs.len(), 3);
    let first = losses(&one.epochs[0]);
    let last = losses(&one.epochs[2]);
    assert!(
        last[0] < first[0] * 0.8,
        "the one-device run does not learn: {first:?} {last:?}"
    );
    for replicas in [2, 3] {
        let other = run(replicas);
        for (a, b) in one.epochs.iter().zip(&other.epochs) {
            let (la, lb) = (losses(a), losses(b));
            eprintln!(
                "epoch {}: 1 device {la:?}\n{replicas} replicas {lb:?}",
                a.epoch
            );
            for (x, y) in la.iter().zip(&lb) {
                assert!(
                    (x - y).abs() <= 1e-5 * x.abs(),
                    "epoch {}, {replicas} replicas: loss {y} against {x}",
                    a.epoch
                );
            }
            assert_eq!(
                (
                    a.valid_accuracy,
                    a.valid_entity_f1,
                    a.valid_frame_accuracy,
                    a.step
                ),
                (
                    b.valid_accuracy,
                    b.valid_entity_f1,
                    b.valid_frame_accuracy,
                    b.step
                ),
                "epoch {}, {replicas} replicas: metrics",
                a.epoch
            );
        }
    }
}
