//! The seed's API: `MultitaskDataset(texts, classification_labels, ner_labels, tokenizer=None)`
//! and `train_model(model, train_dataset, val_dataset, num_epochs, learning_rate, warmup_steps,
//! weight_decay) -> history`.

use burn::tensor::Device;
use mtl_data::{Encoder, Example, TextEncoder, WordVocab, WordVocabConfig};
use mtl_model::MultitaskTransformer;

use crate::error::Result;
use crate::trainer::{History, TrainConfig, fit};

/// A dataset of (text, class label, NER labels) as the seed's; either label may be missing.
#[derive(Debug, Clone, Default)]
pub struct MultitaskDataset {
    /// The examples.
    pub examples: Vec<Example>,
}

impl MultitaskDataset {
    /// Builds a dataset from whitespace-tokenised texts, optional sentence labels and optional
    /// per-word IOB2 tags (one per whitespace-separated word).
    pub fn new(
        texts: &[&str],
        labels: &[Option<&str>],
        ner_labels: &[Option<Vec<&str>>],
    ) -> Result<Self> {
        let mut examples = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            let words: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
            let label = labels.get(i).copied().flatten().map(str::to_owned);
            let tags = ner_labels
                .get(i)
                .cloned()
                .flatten()
                .map(|t| t.into_iter().map(str::to_owned).collect());
            examples.push(Example::from_words(words, label, tags)?);
        }
        Ok(Self { examples })
    }

    /// The seed's `tokenizer=None`: a lower-cased word vocabulary and label maps built from this
    /// (training) dataset.
    pub fn build_encoder(&self, max_seq_length: usize) -> Result<Encoder> {
        let vocab = WordVocab::build(&self.examples, &WordVocabConfig::default());
        Ok(Encoder::build(
            &self.examples,
            TextEncoder::Word(vocab),
            max_seq_length,
        )?)
    }
}

/// The seed's `train_model`: trains with AdamW, `warmup_steps` of linear warmup then linear
/// decay, and the given weight decay, sampling a random task per batch as the seed's trainer;
/// returns the trained model (evaluation mode) and the per-epoch history.
#[allow(clippy::too_many_arguments)]
pub fn train_model(
    model: MultitaskTransformer,
    encoder: &Encoder,
    train_dataset: &MultitaskDataset,
    val_dataset: &MultitaskDataset,
    num_epochs: usize,
    learning_rate: f64,
    warmup_steps: u64,
    weight_decay: f64,
    device: &Device,
) -> Result<(MultitaskTransformer, History)> {
    let config = TrainConfig {
        epochs: num_epochs,
        learning_rate,
        warmup_steps,
        weight_decay,
        sampling: crate::SamplingStrategy::Random,
        ..TrainConfig::default()
    };
    let out = fit(
        model,
        encoder,
        &train_dataset.examples,
        Some(&val_dataset.examples),
        &config,
        None,
        std::slice::from_ref(device),
    )?;
    Ok((out.model, out.history))
}
