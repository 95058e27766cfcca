//! The model configuration: the seed's parameters plus the choices users expect.

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, Result};

/// How token positions enter the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PositionalEncoding {
    /// Fixed sine/cosine table (Vaswani et al.), as the seed.
    #[default]
    Sinusoidal,
    /// A learned embedding per position, as BERT.
    Learned,
}

/// How the classification head summarises the encoder output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Mean over the real (non-padding) tokens.
    #[default]
    Mean,
    /// The first token's vector (`[CLS]` style).
    First,
    /// Element-wise maximum over the real tokens.
    Max,
}

/// The feed-forward activation of the encoder layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// ReLU, PyTorch's `TransformerEncoderLayer` default.
    #[default]
    Relu,
    /// GELU (exact, erf-based), as BERT (HuggingFace `hidden_act = "gelu"`).
    Gelu,
    /// GELU's tanh approximation (HuggingFace `gelu_new`, `gelu_pytorch_tanh`), about 5e-4
    /// from the exact form.
    GeluTanh,
}

/// Where layer normalisation sits in each encoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NormPosition {
    /// After each residual sum (PyTorch's default, `norm_first=False`).
    #[default]
    Post,
    /// Before each sub-layer (`norm_first=True`); adds a final LayerNorm.
    Pre,
}

/// Character-level word features: each token gets a vector computed from the characters of
/// its word (character embeddings, a 1-D convolution over them, max over the word, a linear
/// map to `d_model`), added to its token embedding. Such features let the model read words
/// it never saw in training (names, numbers, inflections), as the character CNNs of Ma & Hovy
/// (2016) and spaCy's prefix/suffix features.
///
/// The model reads the character ids an encoder makes with the same `max_chars` and
/// `buckets` (`mtl_data::CharSpec`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CharFeatures {
    /// Number of character ids (hash buckets), the padding id 0 included.
    #[serde(default = "defaults::char_buckets")]
    pub buckets: usize,
    /// Characters read per word.
    #[serde(default = "defaults::max_chars")]
    pub max_chars: usize,
    /// Width of the character embeddings.
    #[serde(default = "defaults::char_embedding_dim")]
    pub embedding_dim: usize,
    /// Number of convolution filters (width of the word's character vector).
    #[serde(default = "defaults::char_filters")]
    pub filters: usize,
    /// Convolution window, in characters (odd).
    #[serde(default = "defaults::char_kernel_size")]
    pub kernel_size: usize,
}

impl Default for CharFeatures {
    fn default() -> Self {
        Self {
            buckets: defaults::char_buckets(),
            max_chars: defaults::max_chars(),
            embedding_dim: defaults::char_embedding_dim(),
            filters: defaults::char_filters(),
            kernel_size: defaults::char_kernel_size(),
        }
    }
}

/// Configuration of a [`MultitaskTransformer`](crate::MultitaskTransformer).
///
/// The first nine fields are the seed's constructor arguments with its defaults; the rest are
/// choices with defaults that reproduce the seed (and `torch.nn.TransformerEncoder`).
/// Saved as JSON beside every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultitaskConfig {
    /// Number of token ids.
    pub vocab_size: usize,
    /// Number of sentence classes.
    pub num_classes: usize,
    /// Number of NER (BIO) tags.
    pub num_ner_tags: usize,
    /// Width of the embeddings and of every encoder layer.
    #[serde(default = "defaults::d_model")]
    pub d_model: usize,
    /// Number of attention heads; must divide `d_model`.
    #[serde(default = "defaults::nhead")]
    pub nhead: usize,
    /// Number of encoder layers.
    #[serde(default = "defaults::num_encoder_layers")]
    pub num_encoder_layers: usize,
    /// Width of the feed-forward sub-layer.
    #[serde(default = "defaults::dim_feedforward")]
    pub dim_feedforward: usize,
    /// Dropout probability, in `[0, 1)`.
    #[serde(default = "defaults::dropout")]
    pub dropout: f64,
    /// Longest sequence the model accepts (size of the position table).
    #[serde(default = "defaults::max_seq_length")]
    pub max_seq_length: usize,
    /// Sinusoidal (seed) or learned positions.
    #[serde(default)]
    pub positional_encoding: PositionalEncoding,
    /// Pooling for the classification head.
    #[serde(default)]
    pub pooling: Pooling,
    /// Feed-forward activation.
    #[serde(default)]
    pub activation: Activation,
    /// Post-norm (seed) or pre-norm layers.
    #[serde(default)]
    pub norm: NormPosition,
    /// Id of the padding token (its embedding row is zero at init, like `padding_idx`).
    #[serde(default)]
    pub pad_token_id: usize,
    /// Epsilon of every LayerNorm.
    #[serde(default = "defaults::layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Multiply token embeddings by `sqrt(d_model)` before adding positions (seed: yes).
    #[serde(default = "defaults::scale_embedding")]
    pub scale_embedding: bool,
    /// Character-level word features (`None`: token embeddings only, as the seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub char_features: Option<CharFeatures>,
    /// Condition the NER head on the sentence: the pooled sentence vector, through a linear
    /// map, is added to every token's vector before the NER head (as the slot gate of Goo et
    /// al., 2018, in additive form). Off in the seed.
    #[serde(default)]
    pub sentence_to_tokens: bool,
    /// A LayerNorm over the summed embeddings, before the first layer (BERT's
    /// `embeddings.LayerNorm`). Off in the seed.
    #[serde(default)]
    pub embedding_norm: bool,
    /// Number of token types (segment ids) with a learned embedding each (BERT's
    /// `token_type_embeddings`); 0 for none. Single-sentence inputs use type 0.
    #[serde(default)]
    pub type_vocab_size: usize,
    /// Added to every position id before the learned position table is read: RoBERTa counts
    /// positions from `pad_token_id + 1` (2), so its table has `max_seq_length + 2` rows.
    #[serde(default)]
    pub position_offset: usize,
    /// Where the encoder came from, when it was imported from a HuggingFace checkpoint; kept
    /// so that `mtl export` can write it back in the same layout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<crate::hf::PretrainedOrigin>,
}

mod defaults {
    pub fn d_model() -> usize {
        512
    }
    pub fn nhead() -> usize {
        8
    }
    pub fn num_encoder_layers() -> usize {
        6
    }
    pub fn dim_feedforward() -> usize {
        2048
    }
    pub fn dropout() -> f64 {
        0.1
    }
    pub fn max_seq_length() -> usize {
        512
    }
    pub fn layer_norm_eps() -> f64 {
        1e-5
    }
    pub fn scale_embedding() -> bool {
        true
    }
    pub fn char_buckets() -> usize {
        256
    }
    pub fn max_chars() -> usize {
        16
    }
    pub fn char_embedding_dim() -> usize {
        32
    }
    pub fn char_filters() -> usize {
        128
    }
    pub fn char_kernel_size() -> usize {
        3
    }
}

impl MultitaskConfig {
    /// A configuration with the seed's defaults for everything but the three sizes.
    pub fn new(vocab_size: usize, num_classes: usize, num_ner_tags: usize) -> Self {
        Self {
            vocab_size,
            num_classes,
            num_ner_tags,
            d_model: defaults::d_model(),
            nhead: defaults::nhead(),
            num_encoder_layers: defaults::num_encoder_layers(),
            dim_feedforward: defaults::dim_feedforward(),
            dropout: defaults::dropout(),
            max_seq_length: defaults::max_seq_length(),
            positional_encoding: PositionalEncoding::default(),
            pooling: Pooling::default(),
            activation: Activation::default(),
            norm: NormPosition::default(),
            pad_token_id: 0,
            layer_norm_eps: defaults::layer_norm_eps(),
            scale_embedding: defaults::scale_embedding(),
            char_features: None,
            sentence_to_tokens: false,
            embedding_norm: false,
            type_vocab_size: 0,
            position_offset: 0,
            pretrained: None,
        }
    }

    /// Number of rows of the learned position table: `max_seq_length + position_offset`.
    pub fn position_table_size(&self) -> usize {
        self.max_seq_length + self.position_offset
    }

    /// Sets `d_model`.
    pub fn with_d_model(mut self, d_model: usize) -> Self {
        self.d_model = d_model;
        self
    }
    /// Sets `nhead`.
    pub fn with_nhead(mut self, nhead: usize) -> Self {
        self.nhead = nhead;
        self
    }
    /// Sets `num_encoder_layers`.
    pub fn with_num_encoder_layers(mut self, n: usize) -> Self {
        self.num_encoder_layers = n;
        self
    }
    /// Sets `dim_feedforward`.
    pub fn with_dim_feedforward(mut self, n: usize) -> Self {
        self.dim_feedforward = n;
        self
    }
    /// Sets `dropout`.
    pub fn with_dropout(mut self, p: f64) -> Self {
        self.dropout = p;
        self
    }
    /// Sets `max_seq_length`.
    pub fn with_max_seq_length(mut self, n: usize) -> Self {
        self.max_seq_length = n;
        self
    }
    /// Sets the positional encoding.
    pub fn with_positional_encoding(mut self, p: PositionalEncoding) -> Self {
        self.positional_encoding = p;
        self
    }
    /// Sets the pooling of the classification head.
    pub fn with_pooling(mut self, p: Pooling) -> Self {
        self.pooling = p;
        self
    }
    /// Sets the feed-forward activation.
    pub fn with_activation(mut self, a: Activation) -> Self {
        self.activation = a;
        self
    }
    /// Sets pre- or post-norm.
    pub fn with_norm(mut self, n: NormPosition) -> Self {
        self.norm = n;
        self
    }
    /// Sets the character-level word features.
    pub fn with_char_features(mut self, c: Option<CharFeatures>) -> Self {
        self.char_features = c;
        self
    }
    /// Sets whether the NER head sees the pooled sentence vector.
    pub fn with_sentence_to_tokens(mut self, on: bool) -> Self {
        self.sentence_to_tokens = on;
        self
    }
    /// Sets the padding token id.
    pub fn with_pad_token_id(mut self, id: usize) -> Self {
        self.pad_token_id = id;
        self
    }

    /// A lower bound of the number of values the model's tensors hold (embedding tables,
    /// position table, every layer's projections, the heads, the character CNN), computed
    /// without overflow. Loading checks it against the size of the weights file before
    /// anything is allocated, so a corrupt `config.json` cannot ask for terabytes.
    pub fn min_values(&self) -> u128 {
        let d = self.d_model as u128;
        let ff = self.dim_feedforward as u128;
        let embeddings = (self.vocab_size as u128 + self.type_vocab_size as u128) * d;
        let positions = (self.max_seq_length as u128 + self.position_offset as u128) * d;
        let layer = 4 * d * d + 2 * d * ff;
        let layers = self.num_encoder_layers as u128 * layer;
        let heads = (self.num_classes as u128 + self.num_ner_tags as u128) * d;
        let chars = self.char_features.as_ref().map_or(0, |c| {
            c.buckets as u128 * c.embedding_dim as u128
                + c.filters as u128 * c.embedding_dim as u128 * c.kernel_size as u128
        });
        embeddings
            .saturating_add(positions)
            .saturating_add(layers)
            .saturating_add(heads)
            .saturating_add(chars)
    }

    /// Checks the configuration before anything is built.
    pub fn validate(&self) -> Result<()> {
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("num_classes", self.num_classes),
            ("num_ner_tags", self.num_ner_tags),
            ("d_model", self.d_model),
            ("nhead", self.nhead),
            ("num_encoder_layers", self.num_encoder_layers),
            ("dim_feedforward", self.dim_feedforward),
            ("max_seq_length", self.max_seq_length),
        ];
        for (field, value) in sizes {
            if value == 0 {
                return Err(ConfigError::Zero { field }.into());
            }
        }
        if !self.d_model.is_multiple_of(self.nhead) {
            return Err(ConfigError::HeadsDoNotDivide {
                d_model: self.d_model,
                nhead: self.nhead,
            }
            .into());
        }
        if self.positional_encoding == PositionalEncoding::Sinusoidal
            && !self.d_model.is_multiple_of(2)
        {
            return Err(ConfigError::OddSinusoidal {
                d_model: self.d_model,
            }
            .into());
        }
        if !self.dropout.is_finite() || !(0.0..1.0).contains(&self.dropout) {
            return Err(ConfigError::Dropout {
                dropout: self.dropout,
            }
            .into());
        }
        if !self.layer_norm_eps.is_finite() || self.layer_norm_eps <= 0.0 {
            return Err(ConfigError::LayerNormEps {
                eps: self.layer_norm_eps,
            }
            .into());
        }
        if let Some(c) = &self.char_features {
            let sizes = [
                ("char_features.max_chars", c.max_chars),
                ("char_features.embedding_dim", c.embedding_dim),
                ("char_features.filters", c.filters),
            ];
            for (field, value) in sizes {
                if value == 0 {
                    return Err(ConfigError::Zero { field }.into());
                }
            }
            if c.buckets < 2 {
                return Err(ConfigError::CharBuckets { buckets: c.buckets }.into());
            }
            if c.kernel_size.is_multiple_of(2) {
                return Err(ConfigError::CharKernel {
                    kernel_size: c.kernel_size,
                }
                .into());
            }
        }
        if self.position_offset > 0 && self.positional_encoding != PositionalEncoding::Learned {
            return Err(ConfigError::PositionOffset {
                offset: self.position_offset,
            }
            .into());
        }
        if self.pad_token_id >= self.vocab_size {
            return Err(ConfigError::PadOutOfVocab {
                pad_token_id: self.pad_token_id,
                vocab_size: self.vocab_size,
            }
            .into());
        }
        Ok(())
    }

    /// The size of each attention head.
    pub fn head_dim(&self) -> usize {
        self.d_model / self.nhead
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn seed_defaults() {
        let c = MultitaskConfig::new(1000, 3, 5);
        assert_eq!(
            (
                c.d_model,
                c.nhead,
                c.num_encoder_layers,
                c.dim_feedforward,
                c.max_seq_length
            ),
            (512, 8, 6, 2048, 512)
        );
        assert_eq!(c.dropout, 0.1);
        c.validate().expect("seed defaults are valid");
    }

    #[test]
    fn json_fills_defaults_and_rejects_unknown_fields() {
        let c: MultitaskConfig =
            serde_json::from_str(r#"{"vocab_size": 10, "num_classes": 2, "num_ner_tags": 3}"#)
                .expect("parses");
        assert_eq!(c, MultitaskConfig::new(10, 2, 3));
        let bad = serde_json::from_str::<MultitaskConfig>(
            r#"{"vocab_size": 10, "num_classes": 2, "num_ner_tags": 3, "d_modle": 4}"#,
        );
        assert!(bad.is_err());
    }

    #[test]
    fn validate_rejects_bad_values() {
        let base = MultitaskConfig::new(10, 2, 3);
        let cases = [
            (base.clone().with_nhead(7), "divisible"),
            (base.clone().with_d_model(0), "d_model"),
            (base.clone().with_dropout(1.0), "dropout"),
            (base.clone().with_dropout(f64::NAN), "dropout"),
            (base.clone().with_max_seq_length(0), "max_seq_length"),
            (base.clone().with_pad_token_id(10), "pad_token_id"),
            (MultitaskConfig::new(0, 2, 3), "vocab_size"),
            (
                base.clone().with_char_features(Some(CharFeatures {
                    kernel_size: 4,
                    ..CharFeatures::default()
                })),
                "odd",
            ),
            (
                base.clone().with_char_features(Some(CharFeatures {
                    buckets: 1,
                    ..CharFeatures::default()
                })),
                "buckets",
            ),
            (
                base.clone().with_char_features(Some(CharFeatures {
                    filters: 0,
                    ..CharFeatures::default()
                })),
                "char_features.filters",
            ),
            (
                base.clone().with_d_model(9).with_nhead(3),
                "sinusoidal positions need an even d_model",
            ),
        ];
        for (cfg, needle) in cases {
            let err = cfg.validate().expect_err("must be rejected");
            assert!(matches!(err, Error::Config(_)));
            // The message names the context, the cause is the source (printed once).
            let cause = std::error::Error::source(&err).map(ToString::to_string);
            assert!(
                cause.as_deref().is_some_and(|c| c.contains(needle)),
                "{err}: {cause:?} does not mention {needle}"
            );
            assert_eq!(err.to_string(), "invalid model configuration");
        }
    }
}
