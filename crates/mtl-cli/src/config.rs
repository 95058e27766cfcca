//! The TOML configuration of `mtl train`: every model and training option, documented in
//! `configs/example.toml`. Flags override it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use mtl::data::{CharSpec, TagScheme, WordSplit};
use mtl::model::hf::HfConfig;
use mtl::model::{
    Activation, CharFeatures, MultitaskConfig, NormPosition, Pooling, PositionalEncoding,
};
use mtl::train::TrainConfig;
use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// Model architecture (sizes of vocabulary, classes and tags come from the data).
    pub model: ModelSection,
    /// Tokenizer.
    pub tokenizer: TokenizerSection,
    /// Reading the data.
    pub data: DataSection,
    /// Training options (see `mtl::train::TrainConfig`).
    pub train: TrainConfig,
}

/// `[model]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSection {
    /// A HuggingFace checkpoint directory (config.json, model.safetensors or
    /// pytorch_model.bin, tokenizer.json), relative to the config file: its encoder is
    /// fine-tuned and the architecture fields below are read from it instead.
    pub pretrained: Option<PathBuf>,
    pub d_model: usize,
    pub nhead: usize,
    pub num_encoder_layers: usize,
    pub dim_feedforward: usize,
    pub dropout: f64,
    pub max_seq_length: usize,
    pub positional_encoding: PositionalEncoding,
    pub pooling: Pooling,
    pub activation: Activation,
    pub norm: NormPosition,
    pub layer_norm_eps: f64,
    pub scale_embedding: bool,
    pub char_features: Option<CharFeatures>,
    pub sentence_to_tokens: bool,
}

impl Default for ModelSection {
    fn default() -> Self {
        // A small model that trains from scratch on two CPU cores; the seed's defaults
        // (512 / 8 / 6 / 2048) are one `[model]` section away.
        Self {
            pretrained: None,
            d_model: 128,
            nhead: 4,
            num_encoder_layers: 2,
            dim_feedforward: 512,
            dropout: 0.1,
            max_seq_length: 128,
            positional_encoding: PositionalEncoding::Sinusoidal,
            pooling: Pooling::Mean,
            activation: Activation::Relu,
            norm: NormPosition::Post,
            layer_norm_eps: 1e-5,
            scale_embedding: true,
            char_features: None,
            sentence_to_tokens: false,
        }
    }
}

impl ModelSection {
    /// The model configuration for the data's sizes.
    pub fn to_config(
        &self,
        vocab_size: usize,
        num_classes: usize,
        num_tags: usize,
        pad: u32,
    ) -> MultitaskConfig {
        let mut c = MultitaskConfig::new(vocab_size, num_classes.max(1), num_tags.max(1))
            .with_d_model(self.d_model)
            .with_nhead(self.nhead)
            .with_num_encoder_layers(self.num_encoder_layers)
            .with_dim_feedforward(self.dim_feedforward)
            .with_dropout(self.dropout)
            .with_max_seq_length(self.max_seq_length)
            .with_positional_encoding(self.positional_encoding)
            .with_pooling(self.pooling)
            .with_activation(self.activation)
            .with_norm(self.norm)
            .with_pad_token_id(pad as usize);
        c.layer_norm_eps = self.layer_norm_eps;
        c.scale_embedding = self.scale_embedding;
        c.with_char_features(self.char_features.clone())
            .with_sentence_to_tokens(self.sentence_to_tokens)
    }

    /// The model configuration of a pretrained encoder `hf` under heads of the data's sizes:
    /// the architecture comes from the checkpoint; pooling, dropout, character features and
    /// `sentence_to_tokens` from this section.
    pub fn to_pretrained_config(
        &self,
        hf: &HfConfig,
        num_classes: usize,
        num_tags: usize,
    ) -> MultitaskConfig {
        hf.to_model_config(num_classes.max(1), num_tags.max(1), self.pooling)
            .with_dropout(self.dropout)
            .with_char_features(self.char_features.clone())
            .with_sentence_to_tokens(self.sentence_to_tokens)
    }

    /// The character ids the encoder must make for this model.
    pub fn char_spec(&self) -> Result<Option<CharSpec>> {
        self.char_features
            .as_ref()
            .map(|c| {
                Ok(CharSpec {
                    max_chars: c.max_chars,
                    buckets: u32::try_from(c.buckets)
                        .context("[model.char_features] buckets is too large")?,
                })
            })
            .transpose()
    }
}

/// `[tokenizer]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenizerSection {
    /// `word` (a vocabulary built from the training data) or `huggingface` (a `tokenizer.json`).
    pub kind: TokenizerKind,
    /// Path of the `tokenizer.json` (for `huggingface`), relative to the config file.
    pub path: Option<PathBuf>,
    /// Lower-case words (word tokenizer).
    pub lowercase: bool,
    /// Minimum count of a word to enter the vocabulary.
    pub min_freq: usize,
    /// Maximum vocabulary size (most frequent words first).
    pub max_size: Option<usize>,
    /// How raw text (JSONL `text`, `mtl predict` input) is split into words: `punctuation`
    /// (the default: punctuation and symbols are words of their own, CJK ideographs one word
    /// each) or `whitespace`. Saved in the model's `encoder.json`.
    pub words: WordSplit,
}

impl Default for TokenizerSection {
    fn default() -> Self {
        Self {
            kind: TokenizerKind::Word,
            path: None,
            lowercase: true,
            min_freq: 1,
            max_size: None,
            words: WordSplit::default(),
        }
    }
}

/// Tokenizer families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenizerKind {
    /// Whole words.
    Word,
    /// A HuggingFace `tokenizer.json` (WordPiece, BPE, ...).
    Huggingface,
}

/// `[data]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSection {
    /// Tag scheme of the input files: `iob2`, `iob1` or `iobes`.
    pub scheme: String,
    /// Skip (and count) bad examples instead of stopping at the first.
    pub lenient: bool,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            scheme: "iob2".into(),
            lenient: false,
        }
    }
}

impl DataSection {
    pub fn scheme(&self) -> Result<TagScheme> {
        Ok(self.scheme.parse::<TagScheme>()?)
    }
}

impl FileConfig {
    /// The defaults of `mtl train --pretrained DIR` without `--config`: the recipe of
    /// `configs/snips-minilm.toml`, chosen on SNIPS dev (batches of 16, encoder 2e-4, heads
    /// 1e-3, warmup over 10% of the steps, frozen embedding tables, `[CLS]` pooling, 5 epochs
    /// and at least 3200 steps, early stopping after 2 epochs without better dev frame
    /// accuracy).
    pub fn fine_tuning() -> Self {
        let mut c = Self::default();
        c.model.pooling = Pooling::First;
        c.model.max_seq_length = 128;
        c.train = TrainConfig {
            epochs: 5,
            min_steps: Some(3200),
            batch_size: 16,
            learning_rate: 2e-4,
            head_learning_rate: Some(1e-3),
            warmup_ratio: Some(0.1),
            freeze_embeddings: true,
            patience: Some(2),
            select_metric: mtl::train::SelectMetric::FrameAccuracy,
            ..TrainConfig::default()
        };
        c
    }

    /// Reads a TOML file; relative paths inside it are made relative to the file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let mut config: FileConfig =
            toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?;
        if let Some(dir) = path.parent() {
            for p in [&mut config.tokenizer.path, &mut config.model.pretrained]
                .into_iter()
                .flatten()
            {
                if p.is_relative() {
                    *p = dir.join(&*p);
                }
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `config.toml` (a run's, or `--config`), mutated: truncated, bytes replaced, bytes
    /// inserted; loading and checking it is a value or an error, never a panic. Cases:
    /// `MTL_FUZZ_CASES` (`cargo xtask fuzz`), 300 by default.
    #[test]
    fn config_toml_never_panics() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        let dir = std::env::temp_dir().join(format!("mtl-config-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("config.toml");
        let original = toml::to_string_pretty(&FileConfig::fine_tuning()).expect("toml");
        let cases = std::env::var("MTL_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300);
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        let edits = prop::collection::vec((0.0..1.0f64, any::<u8>(), 0u8..3), 1..4);
        let result = runner.run(&edits, |edits| {
            let mut bytes = original.clone().into_bytes();
            for (at, byte, kind) in edits {
                let i = ((bytes.len() as f64 * at) as usize).min(bytes.len());
                match kind {
                    0 => bytes.truncate(i),
                    1 if i < bytes.len() => bytes[i] = byte,
                    _ => bytes.insert(i, byte),
                }
            }
            std::fs::write(&path, &bytes).expect("write");
            let checked = std::panic::catch_unwind(|| -> Result<()> {
                let config = FileConfig::load(&path)?;
                config.train.validate()?;
                config.data.scheme()?;
                config.model.char_spec()?;
                Ok(())
            });
            prop_assert!(
                checked.is_ok(),
                "panicked on {:?}",
                String::from_utf8_lossy(&bytes)
            );
            Ok(())
        });
        std::fs::remove_dir_all(&dir).ok();
        if let Err(e) = result {
            panic!("{e}");
        }
    }

    /// Every shipped config parses (unknown keys are errors), and the documented example
    /// holds the defaults.
    #[test]
    fn shipped_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("configs/") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                FileConfig::load(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                n += 1;
            }
        }
        assert!(n >= 3, "{n} configs");
        let example = FileConfig::load(&dir.join("example.toml")).expect("example");
        assert_eq!(example.train, TrainConfig::default());
        let minilm = FileConfig::load(&dir.join("snips-minilm.toml")).expect("snips-minilm");
        let pretrained = minilm.model.pretrained.expect("a checkpoint");
        assert!(
            pretrained.ends_with("models/all-minilm-l6-v2"),
            "relative to the config file: {}",
            pretrained.display()
        );
        assert!(pretrained.starts_with(&dir));
        // `mtl train --pretrained` without a config trains as the shipped recipe does.
        let defaults = FileConfig::fine_tuning();
        assert_eq!(defaults.train, minilm.train);
        assert_eq!(defaults.model.pooling, minilm.model.pooling);
    }
}
