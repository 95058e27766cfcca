//! Parity of every backend compiled in with the pure-Rust CPU default: the same weights and
//! input give the same logits (within 1e-4 on libtorch's CPU device, 1e-3 on wgpu and CUDA), and
//! a short training run from the same weights gives the same loss curve.
//!
//! These tests exist only in builds with a second backend (`--features mtl/tch,mtl/wgpu`, as
//! `cargo xtask ci --all-backends` builds). `MTL_TEST_CUDA=1` adds `libtorch-cuda` to the
//! devices compared, on a machine with a GPU.
#![cfg(all(feature = "flex", any(feature = "wgpu", feature = "tch")))]

use std::path::Path;

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use mtl::data::{
    CharSpec, Encoder, Format, ReadOptions, TextEncoder, WordVocab, WordVocabConfig, read_split,
};
use mtl::model::{
    Activation, CharFeatures, MultitaskConfig, MultitaskTransformer, NormPosition, Pooling,
};
use mtl::model::{PositionalEncoding, Task, TaskLogits};
use mtl::train::sampler::SamplingStrategy;
use mtl::train::trainer::{ProgressMode, TrainConfig};
use mtl::train::{History, fit};

/// Burn's CPU backend has one random generator per process: runs that are compared must not
/// overlap.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A backend under test: its device name, and the logits tolerance the issue sets for it.
struct Backend {
    name: String,
    device: Device,
    logits_tol: f32,
}

/// Every non-default backend compiled in.
fn backends() -> Vec<Backend> {
    let mut names: Vec<(&str, f32)> = Vec::new();
    if cfg!(feature = "tch") {
        names.push(("libtorch", 1e-4));
    }
    if cfg!(feature = "wgpu") {
        names.push(("wgpu", 1e-3));
    }
    if cfg!(feature = "tch") && std::env::var("MTL_TEST_CUDA").is_ok_and(|v| v == "1") {
        names.push(("libtorch-cuda", 1e-3));
    }
    names
        .into_iter()
        .map(|(name, logits_tol)| Backend {
            name: name.to_string(),
            device: mtl::device::parse(name).expect("backend compiled in"),
            logits_tol,
        })
        .collect()
}

fn cpu() -> Device {
    mtl::device::parse("cpu").expect("flex is compiled in")
}

/// The same weights on another device, through burnpack bytes.
fn copy_to(model: &MultitaskTransformer, device: &Device) -> MultitaskTransformer {
    let bytes = model.to_bytes().expect("serialises").to_vec();
    MultitaskTransformer::new(model.config(), device)
        .expect("valid config")
        .load_bytes(bytes, Path::new("<cpu model>"))
        .expect("loads")
}

/// A padded batch of `lengths.len()` sequences of random ids in 2..vocab.
fn batch(vocab: usize, lengths: &[usize], seed: u64) -> (TensorData, TensorData) {
    let max = lengths.iter().copied().max().unwrap_or(0);
    let mut state = seed;
    let mut next = || {
        // splitmix64: a fixed, dependency-free id stream.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut ids = Vec::new();
    let mut pad = Vec::new();
    for &len in lengths {
        for pos in 0..max {
            let real = pos < len;
            ids.push(if real {
                2 + (next() % (vocab as u64 - 2)) as i64
            } else {
                0
            });
            pad.push(!real);
        }
    }
    let shape = [lengths.len(), max];
    (TensorData::new(ids, shape), TensorData::new(pad, shape))
}

/// Character ids `[batch, seq, width]` for token ids `[batch, seq]`: two characters that
/// depend on the id, then padding; padding tokens (id 0) get no characters.
fn char_ids(ids: &TensorData, width: usize, buckets: usize) -> TensorData {
    let values = ids.try_to_vec::<i64>().expect("int ids");
    let mut chars = Vec::with_capacity(values.len() * width);
    for &id in &values {
        for c in 0..width {
            let real = id != 0 && c < 2;
            let b = buckets as i64 - 1;
            chars.push(if real {
                1 + (id * (c as i64 + 3)) % b
            } else {
                0
            });
        }
    }
    let shape = ids.shape();
    let [batch, seq] = [shape[0], shape[1]];
    TensorData::new(chars, [batch, seq, width])
}

fn logits(
    model: &MultitaskTransformer,
    ids: &TensorData,
    pad: &TensorData,
    device: &Device,
) -> (Vec<f32>, Vec<f32>) {
    let tokens = Tensor::<2, Int>::from_data(ids.clone(), device);
    let mask = Tensor::<2, Bool>::from_data(pad.clone(), device);
    let chars = model
        .config()
        .char_features
        .as_ref()
        .map(|c| Tensor::<3, Int>::from_data(char_ids(ids, c.max_chars, c.buckets), device));
    let out = model.forward_joint_with(tokens.clone(), mask.clone(), chars.clone());
    let cls = out
        .classification
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32");
    let ner = out.ner.into_data().try_to_vec::<f32>().expect("f32");
    // `forward` by task must agree with the joint pass on every backend too.
    let by_task = match chars {
        Some(chars) => model.classify_with(tokens, mask, Some(chars)),
        None => match model.forward(tokens, mask, Task::Classification) {
            TaskLogits::Classification(l) => l,
            TaskLogits::Ner(_) => panic!("asked for classification"),
        },
    };
    assert_close(
        &cls,
        &by_task.into_data().try_to_vec::<f32>().expect("f32"),
        1e-5,
    );
    (cls, ner)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "shapes differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn assert_close(a: &[f32], b: &[f32], tol: f32) {
    let diff = max_abs_diff(a, b);
    assert!(diff <= tol, "max |a - b| = {diff:e} > {tol:e}");
}

/// The configurations compared: the seed's architecture (post-norm, sinusoidal, mean pooling,
/// ReLU) and the other options (pre-norm, learned positions, GELU, first/max pooling,
/// character features with the sentence vector in the NER head).
fn configs() -> Vec<MultitaskConfig> {
    let base = MultitaskConfig::new(97, 4, 7)
        .with_d_model(32)
        .with_nhead(4)
        .with_num_encoder_layers(2)
        .with_dim_feedforward(64)
        .with_max_seq_length(24);
    vec![
        base.clone(),
        base.clone()
            .with_norm(NormPosition::Pre)
            .with_positional_encoding(PositionalEncoding::Learned)
            .with_activation(Activation::Gelu)
            .with_pooling(Pooling::First),
        MultitaskConfig {
            scale_embedding: false,
            ..base.clone().with_pooling(Pooling::Max)
        },
        // A BERT-family encoder as a checkpoint import configures it: embedding LayerNorm,
        // token types, RoBERTa's offset positions, tanh GELU, BERT's epsilon, unscaled
        // embeddings.
        MultitaskConfig {
            scale_embedding: false,
            embedding_norm: true,
            type_vocab_size: 2,
            position_offset: 2,
            layer_norm_eps: 1e-12,
            ..base
                .clone()
                .with_positional_encoding(PositionalEncoding::Learned)
                .with_activation(Activation::GeluTanh)
                .with_pad_token_id(1)
        },
        base.with_char_features(Some(CharFeatures {
            buckets: 50,
            max_chars: 6,
            embedding_dim: 8,
            filters: 16,
            kernel_size: 3,
        }))
        .with_sentence_to_tokens(true),
    ]
}

#[test]
fn same_weights_same_logits_on_every_backend() {
    let _guard = serial();
    let cpu = cpu();
    for (i, config) in configs().into_iter().enumerate() {
        cpu.seed(11 + i as u64);
        let reference = MultitaskTransformer::new(&config, &cpu).expect("valid config");
        let (ids, pad) = batch(config.vocab_size, &[5, 24, 1, 13, 9], 3 + i as u64);
        let (cls, ner) = logits(&reference, &ids, &pad, &cpu);
        for backend in backends() {
            let model = copy_to(&reference, &backend.device);
            let (other_cls, other_ner) = logits(&model, &ids, &pad, &backend.device);
            let (d_cls, d_ner) = (
                max_abs_diff(&cls, &other_cls),
                max_abs_diff(&ner, &other_ner),
            );
            eprintln!(
                "config {i} on {}: max |diff| classification {d_cls:e}, ner {d_ner:e}",
                backend.name
            );
            assert!(
                d_cls <= backend.logits_tol && d_ner <= backend.logits_tol,
                "config {i} on {}: classification {d_cls:e}, ner {d_ner:e} > {:e}",
                backend.name,
                backend.logits_tol
            );
        }
    }
}

/// The per-epoch losses that are compared: train loss per task, validation loss per task.
fn curve(history: &History) -> Vec<f64> {
    history
        .epochs
        .iter()
        .flat_map(|e| {
            [
                e.train_loss.unwrap_or(f64::NAN),
                e.train_loss_classification.unwrap_or(f64::NAN),
                e.train_loss_ner.unwrap_or(f64::NAN),
                e.valid_loss_classification.unwrap_or(f64::NAN),
                e.valid_loss_ner.unwrap_or(f64::NAN),
            ]
        })
        .collect()
}

#[test]
fn short_training_gives_the_same_loss_curve_on_every_backend() {
    let _guard = serial();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/quickstart");
    let opts = ReadOptions::default();
    let (train, _) = read_split(&data, "train", Some(Format::JointBert), &opts).expect("train");
    let (valid, _) = read_split(&data, "dev", Some(Format::JointBert), &opts).expect("dev");
    let (train, valid) = (&train[..96], &valid[..48]);
    let vocab = WordVocab::build(train, &WordVocabConfig::default());
    // With character features, so that their backward pass is compared too.
    let spec = CharSpec {
        max_chars: 10,
        buckets: 64,
    };
    let encoder = Encoder::build(train, TextEncoder::Word(vocab), 32)
        .expect("encoder")
        .with_chars(Some(spec))
        .expect("valid spec");
    // No dropout: each backend draws its own random numbers, so dropout masks would differ.
    let config = MultitaskConfig::new(
        encoder.text.vocab_size(),
        encoder.labels.len(),
        encoder.tags.len(),
    )
    .with_d_model(32)
    .with_nhead(4)
    .with_num_encoder_layers(2)
    .with_dim_feedforward(64)
    .with_dropout(0.0)
    .with_max_seq_length(32)
    // Exact GELU, as BERT: its backward must be the exact derivative on every backend.
    .with_activation(Activation::Gelu)
    .with_char_features(Some(CharFeatures {
        buckets: 64,
        max_chars: 10,
        embedding_dim: 8,
        filters: 16,
        kernel_size: 3,
    }));
    let train_config = TrainConfig {
        epochs: 4,
        batch_size: 8,
        learning_rate: 3e-3,
        warmup_steps: 4,
        sampling: SamplingStrategy::Random,
        seed: 5,
        progress: ProgressMode::Off,
        ..TrainConfig::default()
    };
    let cpu = cpu();
    cpu.seed(21);
    let initial = MultitaskTransformer::new(&config, &cpu).expect("valid config");
    let run = |model: MultitaskTransformer, device: &Device| {
        fit(
            model,
            &encoder,
            train,
            Some(valid),
            &train_config,
            None,
            std::slice::from_ref(device),
        )
        .expect("trains")
        .history
    };
    let reference = curve(&run(initial.clone(), &cpu));
    assert!(
        reference[reference.len() - 5] < reference[0] * 0.8,
        "the reference run does not learn: {reference:?}"
    );
    for backend in backends() {
        let other = curve(&run(copy_to(&initial, &backend.device), &backend.device));
        eprintln!(
            "{}: cpu {reference:?}\n{}: {other:?}",
            backend.name, backend.name
        );
        // Rounding differences grow over the steps; 0.1% of the loss is far below what a wrong
        // gradient, optimizer step or mask would give.
        for (i, (a, b)) in reference.iter().zip(&other).enumerate() {
            assert!(
                (a - b).abs() <= 1e-3 * a.abs().max(1.0),
                "{} loss {i} differs: cpu {a}, {} {b}",
                backend.name,
                backend.name
            );
        }
    }
}
