//! The multitask model: a shared encoder under a classification head and an NER head.

use std::fmt;
use std::str::FromStr;

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::{Bool, Device, Int, Tensor};

use crate::config::{MultitaskConfig, Pooling};
use crate::dropout::dropout;
use crate::encoder::TransformerEncoder;
use crate::error::{Error, Result};

/// Which head a [`MultitaskTransformer::forward`] call runs, as the seed's `task=` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Task {
    /// Sentence classification (intent, topic, sentiment).
    Classification,
    /// Per-token tagging (NER, slot filling).
    Ner,
}

impl Task {
    /// Both tasks, in a fixed order.
    pub const ALL: [Task; 2] = [Task::Classification, Task::Ner];

    /// The task's name as used in configs, logs and history files.
    pub fn name(self) -> &'static str {
        match self {
            Task::Classification => "classification",
            Task::Ner => "ner",
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A task name that is neither `classification` nor `ner`.
#[derive(Debug, thiserror::Error)]
#[error("unknown task {0:?}: expected \"classification\" or \"ner\"")]
pub struct UnknownTask(pub String);

impl FromStr for Task {
    type Err = UnknownTask;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "classification" | "cls" => Ok(Task::Classification),
            "ner" | "tagging" | "slots" => Ok(Task::Ner),
            _ => Err(UnknownTask(s.to_string())),
        }
    }
}

/// The logits of the head a [`Task`] selects.
#[derive(Debug, Clone)]
pub enum TaskLogits {
    /// `[batch, num_classes]`
    Classification(Tensor<2>),
    /// `[batch, seq, num_ner_tags]`
    Ner(Tensor<3>),
}

/// Everything one encoder pass gives: both heads' logits and the representations under them.
#[derive(Debug, Clone)]
pub struct MultitaskOutput {
    /// Classification logits, `[batch, num_classes]`.
    pub classification: Tensor<2>,
    /// NER logits, `[batch, seq, num_ner_tags]`.
    pub ner: Tensor<3>,
    /// The pooled sentence vector, `[batch, d_model]`.
    pub pooled: Tensor<2>,
    /// The encoder output, `[batch, seq, d_model]`.
    pub hidden: Tensor<3>,
}

/// The encoder shared by both heads. An enum so that other encoder families (a BERT-style
/// encoder loaded from HuggingFace checkpoints) can sit under the same heads.
#[derive(Module, Debug)]
pub enum SharedEncoder {
    /// The seed's Transformer encoder.
    Transformer(TransformerEncoder),
}

impl SharedEncoder {
    /// # Shapes
    /// - `tokens`, `padding_mask`: `[batch, seq]` (`true` = padding)
    /// - `chars`: `[batch, seq, max_chars]`, for encoders with character features
    /// - output: `[batch, seq, d_model]`
    pub fn forward(
        &self,
        tokens: Tensor<2, Int>,
        padding_mask: Tensor<2, Bool>,
        chars: Option<Tensor<3, Int>>,
    ) -> Tensor<3> {
        match self {
            SharedEncoder::Transformer(encoder) => encoder.forward(tokens, padding_mask, chars),
        }
    }
}

/// The seed's `MultitaskTransformer`: a shared encoder, a classification head on the pooled
/// encoder output and an NER head on every token. It returns logits, never a loss.
#[derive(Module, Debug)]
pub struct MultitaskTransformer {
    /// The shared encoder.
    pub encoder: SharedEncoder,
    /// Classification head, `d_model -> num_classes`.
    pub classifier: Linear,
    /// NER head, `d_model -> num_ner_tags`.
    pub ner_head: Linear,
    /// Dropout before each head.
    pub head_dropout: Dropout,
    /// Map of the pooled sentence vector added to every token before the NER head
    /// (`d_model -> d_model`), when [`MultitaskConfig::sentence_to_tokens`] is on.
    pub sentence_to_tokens: Option<Linear>,
    /// The configuration the model was built from.
    #[module(skip)]
    pub config: MultitaskConfig,
}

impl MultitaskTransformer {
    /// Validates `config` and builds a freshly initialised model on `device`.
    pub fn new(config: &MultitaskConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        let model = Self {
            encoder: SharedEncoder::Transformer(TransformerEncoder::new(config, device)),
            classifier: LinearConfig::new(config.d_model, config.num_classes).init(device),
            ner_head: LinearConfig::new(config.d_model, config.num_ner_tags).init(device),
            head_dropout: DropoutConfig::new(config.dropout).init(),
            sentence_to_tokens: config
                .sentence_to_tokens
                .then(|| LinearConfig::new(config.d_model, config.d_model).init(device)),
            config: config.clone(),
        };
        // Burn initialises parameters lazily, on first use; draw them all now, so that the
        // weights depend only on the backend's seed at construction time.
        struct Materialize;
        impl ModuleVisitor for Materialize {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let _ = param.val();
            }
        }
        model.visit(&mut Materialize);
        Ok(model)
    }

    /// The model with the encoder's embedding tables (token, position, token type) frozen:
    /// on an autodiff device no gradient is computed for them, so optimizers leave them as
    /// they are. Persistent: [`Module::train`] does not undo it.
    pub fn freeze_embeddings(mut self) -> Self {
        let SharedEncoder::Transformer(encoder) = &mut self.encoder;
        encoder.token_embedding = encoder.token_embedding.clone().no_grad();
        encoder.position_embedding = encoder.position_embedding.take().map(Module::no_grad);
        encoder.token_type_embedding = encoder.token_type_embedding.take().map(Module::no_grad);
        self
    }

    /// The model with its token-embedding table cut to the rows `rows` (distinct, in range):
    /// row `i` of the cut table is row `rows[i]` of the whole one, held by a leaf of its own
    /// under the table's parameter id. Fed token ids remapped to positions in `rows`, it
    /// computes what the whole model computes, and a backward pass gives the gradient of
    /// those rows only, `[rows.len(), d_model]`, instead of a dense table of zeros and a few
    /// hundred written rows. `None` when the table is frozen (no gradient to cut) or a row
    /// is out of range.
    pub fn with_token_rows(&self, rows: &[u32]) -> Option<Self> {
        let SharedEncoder::Transformer(encoder) = &self.encoder;
        let table = &encoder.token_embedding.weight;
        let [vocab, _] = table.dims();
        if !table.is_require_grad() || rows.iter().any(|&r| r as usize >= vocab) {
            return None;
        }
        let whole = table.val().inner();
        let index = Tensor::<1, Int>::from_data(
            burn::tensor::TensorData::new(rows.iter().map(|&r| r as i64).collect(), [rows.len()]),
            &whole.device(),
        );
        let cut = Tensor::from_inner(whole.select(0, index)).require_grad();
        let mut model = self.clone();
        let SharedEncoder::Transformer(encoder) = &mut model.encoder;
        encoder.token_embedding.weight = Param::initialized(table.id, cut);
        Some(model)
    }

    /// The configuration of this model.
    pub fn config(&self) -> &MultitaskConfig {
        &self.config
    }

    /// Checks that a batch without character ids fits this model: see
    /// [`check_input_with`](Self::check_input_with).
    pub fn check_input(
        &self,
        tokens: &Tensor<2, Int>,
        padding_mask: &Tensor<2, Bool>,
    ) -> Result<()> {
        self.check_input_with(tokens, padding_mask, None)
    }

    /// Checks that a batch fits this model: mask and tokens of one shape, no longer than
    /// `max_seq_length`, and character ids `[batch, seq, max_chars]` exactly when the model
    /// has character features. The forward passes assume this.
    pub fn check_input_with(
        &self,
        tokens: &Tensor<2, Int>,
        padding_mask: &Tensor<2, Bool>,
        chars: Option<&Tensor<3, Int>>,
    ) -> Result<()> {
        let (t, m) = (tokens.dims(), padding_mask.dims());
        if t != m {
            return Err(Error::MaskShape { tokens: t, mask: m });
        }
        let expected = self
            .config
            .char_features
            .as_ref()
            .map(|c| [t[0], t[1], c.max_chars]);
        let given = chars.map(Tensor::dims);
        if given != expected {
            return Err(Error::CharShape {
                chars: given,
                expected,
            });
        }
        if t[1] > self.config.max_seq_length {
            return Err(Error::TooLong {
                seq: t[1],
                max: self.config.max_seq_length,
            });
        }
        Ok(())
    }

    /// Runs the shared encoder once.
    ///
    /// # Shapes
    /// - `tokens`: `[batch, seq]`, `padding_mask`: `[batch, seq]` (`true` = padding)
    /// - output: `[batch, seq, d_model]`
    ///
    /// # Panics
    /// If the model has character features (use [`encode_with`](Self::encode_with)).
    pub fn encode(&self, tokens: Tensor<2, Int>, padding_mask: Tensor<2, Bool>) -> Tensor<3> {
        self.encoder.forward(tokens, padding_mask, None)
    }

    /// Runs the shared encoder once, with the character ids of each token's word (needed by
    /// models with character features, ignored by others).
    ///
    /// # Shapes
    /// - `tokens`, `padding_mask`: `[batch, seq]`; `chars`: `[batch, seq, max_chars]`
    /// - output: `[batch, seq, d_model]`
    pub fn encode_with(
        &self,
        tokens: Tensor<2, Int>,
        padding_mask: Tensor<2, Bool>,
        chars: Option<Tensor<3, Int>>,
    ) -> Tensor<3> {
        self.encoder.forward(tokens, padding_mask, chars)
    }

    /// Pools the encoder output into one vector per sentence, ignoring padding.
    ///
    /// # Shapes
    /// - `hidden`: `[batch, seq, d_model]`, `padding_mask`: `[batch, seq]`
    /// - output: `[batch, d_model]`
    pub fn pool(&self, hidden: Tensor<3>, padding_mask: Tensor<2, Bool>) -> Tensor<2> {
        let [batch, seq, d_model] = hidden.dims();
        match self.config.pooling {
            Pooling::First => hidden.narrow(1, 0, 1).reshape([batch, d_model]),
            Pooling::Mean => {
                let keep = padding_mask.bool_not().float().reshape([batch, seq, 1]);
                let count = keep.clone().sum_dim(1).clamp_min(1.0); // [batch, 1, 1]
                (hidden * keep)
                    .sum_dim(1)
                    .div(count)
                    .reshape([batch, d_model])
            }
            Pooling::Max => hidden
                .mask_fill(
                    padding_mask
                        .reshape([batch, seq, 1])
                        .expand([batch, seq, d_model]),
                    -1.0e9,
                )
                .max_dim(1)
                .reshape([batch, d_model]),
        }
    }

    /// Classification logits from the encoder output.
    ///
    /// # Shapes
    /// - `hidden`: `[batch, seq, d_model]`, `padding_mask`: `[batch, seq]`
    /// - output: `[batch, num_classes]`
    pub fn classification_head(
        &self,
        hidden: Tensor<3>,
        padding_mask: Tensor<2, Bool>,
    ) -> Tensor<2> {
        let pooled = self.pool(hidden, padding_mask);
        self.classifier.forward(dropout(&self.head_dropout, pooled))
    }

    /// NER logits from the encoder output (and, with
    /// [`MultitaskConfig::sentence_to_tokens`], the pooled sentence vector).
    ///
    /// # Shapes
    /// - `hidden`: `[batch, seq, d_model]`, `padding_mask`: `[batch, seq]`
    /// - output: `[batch, seq, num_ner_tags]`
    pub fn ner_head(&self, hidden: Tensor<3>, padding_mask: Tensor<2, Bool>) -> Tensor<3> {
        let pooled = self
            .sentence_to_tokens
            .is_some()
            .then(|| self.pool(hidden.clone(), padding_mask));
        self.ner_logits(hidden, pooled)
    }

    fn ner_logits(&self, hidden: Tensor<3>, pooled: Option<Tensor<2>>) -> Tensor<3> {
        let hidden = match (&self.sentence_to_tokens, pooled) {
            (Some(map), Some(pooled)) => {
                let [batch, d_model] = pooled.dims();
                hidden + map.forward(pooled).reshape([batch, 1, d_model])
            }
            _ => hidden,
        };
        self.ner_head.forward(dropout(&self.head_dropout, hidden))
    }

    /// The seed's `model(src, task=..., src_padding_mask=...)`: the selected head's logits.
    ///
    /// # Shapes
    /// - `tokens`: `[batch, seq]` token ids
    /// - `padding_mask`: `[batch, seq]`, `true` = padding (Burn's convention; PyTorch's
    ///   `src_key_padding_mask`)
    /// - output: [`TaskLogits::Classification`] `[batch, num_classes]` or
    ///   [`TaskLogits::Ner`] `[batch, seq, num_ner_tags]`
    ///
    /// # Panics
    /// If the input fails [`check_input`](Self::check_input) (models with character features
    /// are run with the `*_with` methods).
    pub fn forward(
        &self,
        tokens: Tensor<2, Int>,
        padding_mask: Tensor<2, Bool>,
        task: Task,
    ) -> TaskLogits {
        let hidden = self.encode(tokens, padding_mask.clone());
        match task {
            Task::Classification => {
                TaskLogits::Classification(self.classification_head(hidden, padding_mask))
            }
            Task::Ner => TaskLogits::Ner(self.ner_head(hidden, padding_mask)),
        }
    }

    /// Classification logits: [`forward`](Self::forward) with [`Task::Classification`].
    ///
    /// # Shapes
    /// - `tokens`, `padding_mask`: `[batch, seq]`
    /// - output: `[batch, num_classes]`
    pub fn classify(&self, tokens: Tensor<2, Int>, padding_mask: Tensor<2, Bool>) -> Tensor<2> {
        self.classify_with(tokens, padding_mask, None)
    }

    /// [`classify`](Self::classify) with character ids (see [`encode_with`](Self::encode_with)).
    pub fn classify_with(
        &self,
        tokens: Tensor<2, Int>,
        padding_mask: Tensor<2, Bool>,
        chars: Option<Tensor<3, Int>>,
    ) -> Tensor<2> {
        let hidden = self.encode_with(tokens, padding_mask.clone(), chars);
        self.classification_head(hidden, padding_mask)
    }

    /// NER logits: [`forward`](Self::forward) with [`Task::Ner`].
    ///
    /// # Shapes
    /// - `tokens`, `padding_mask`: `[batch, seq]`
    /// - output: `[batch, seq, num_ner_tags]`
    pub fn tag(&self, tokens: Tensor<2, Int>, padding_mask: Tensor<2, Bool>) -> Tensor<3> {
        self.tag_with(tokens, padding_mask, None)
    }

    /// [`tag`](Self::tag) with character ids (see [`encode_with`](Self::encode_with)).
    pub fn tag_with(
        &self,
        tokens: Tensor<2, Int>,
        padding_mask: Tensor<2, Bool>,
        chars: Option<Tensor<3, Int>>,
    ) -> Tensor<3> {
        let hidden = self.encode_with(tokens, padding_mask.clone(), chars);
        self.ner_head(hidden, padding_mask)
    }

    /// Runs the encoder once and both heads on it, for joint training and inference.
    ///
    /// # Shapes
    /// - `tokens`, `padding_mask`: `[batch, seq]`
    /// - output: see [`MultitaskOutput`]
    pub fn forward_joint(
        &self,
        tokens: Tensor<2, Int>,
        padding_mask: Tensor<2, Bool>,
    ) -> MultitaskOutput {
        self.forward_joint_with(tokens, padding_mask, None)
    }

    /// [`forward_joint`](Self::forward_joint) with character ids (see
    /// [`encode_with`](Self::encode_with)).
    pub fn forward_joint_with(
        &self,
        tokens: Tensor<2, Int>,
        padding_mask: Tensor<2, Bool>,
        chars: Option<Tensor<3, Int>>,
    ) -> MultitaskOutput {
        let hidden = self.encode_with(tokens, padding_mask.clone(), chars);
        let pooled = self.pool(hidden.clone(), padding_mask);
        let classification = self
            .classifier
            .forward(dropout(&self.head_dropout, pooled.clone()));
        let ner = self.ner_logits(hidden.clone(), Some(pooled.clone()));
        MultitaskOutput {
            classification,
            ner,
            pooled,
            hidden,
        }
    }
}
