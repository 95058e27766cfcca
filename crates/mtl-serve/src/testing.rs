//! Small models for the unit tests (random weights: answers are deterministic, not good).

use std::sync::Arc;

use mtl::data::{Encoder, Example, TextEncoder, WordVocab, WordVocabConfig};
use mtl::model::{MultitaskConfig, MultitaskTransformer};
use mtl::prelude::Device;
use mtl::train::InferenceEngine;
use mtl::train::texts::Predictor;

use crate::batch::Engine;

fn encoder() -> Encoder {
    let train: Vec<Example> = [
        ("play jazz", "music", ["O", "B-genre"]),
        ("play rock", "music", ["O", "B-genre"]),
        ("book paris", "travel", ["O", "B-city"]),
    ]
    .into_iter()
    .map(|(text, label, tags)| {
        let words = text.split(' ').map(str::to_string).collect();
        let tags = tags.iter().map(|t| t.to_string()).collect();
        Example::from_words(words, Some(label.to_string()), Some(tags)).expect("example")
    })
    .collect();
    let vocab = WordVocab::build(&train, &WordVocabConfig::default());
    Encoder::build(&train, TextEncoder::Word(vocab), 16).expect("encoder")
}

fn engine_with_vocab(vocab_size: Option<usize>) -> Engine {
    let encoder = encoder();
    let config = MultitaskConfig::new(
        vocab_size.unwrap_or(encoder.text.vocab_size()),
        encoder.labels.len(),
        encoder.tags.len(),
    )
    .with_d_model(16)
    .with_nhead(2)
    .with_num_encoder_layers(1)
    .with_dim_feedforward(32)
    .with_max_seq_length(16);
    let device = Device::flex();
    let model = MultitaskTransformer::new(&config, &device).expect("model");
    Engine {
        predictor: Predictor::new(model, InferenceEngine::Packed, &device),
        encoder: Arc::new(encoder),
    }
}

/// A random model and the encoder it was sized for.
pub(crate) fn tiny_engine() -> Engine {
    engine_with_vocab(None)
}

/// A model whose embedding table is smaller than its encoder's vocabulary: every forward
/// pass over a known word fails.
pub(crate) fn broken_engine() -> Engine {
    engine_with_vocab(Some(2))
}
