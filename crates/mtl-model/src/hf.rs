//! HuggingFace BERT-family checkpoints: BERT and MiniLM, RoBERTa and XLM-R, DistilBERT.
//!
//! A checkpoint directory holds `config.json` and `model.safetensors` (or
//! `pytorch_model.bin`). [`HfConfig::read`] reads every hyper-parameter from `config.json`
//! (nothing falls back to a framework default: epsilon and activation come from the file),
//! [`HfConfig::to_model_config`] maps it onto a [`MultitaskConfig`] (a post-norm encoder with
//! learned positions, token types and an embedding LayerNorm), and [`load_encoder`] copies the
//! checkpoint's tensors into a model's encoder through burn-store (key remapping for the
//! `bert.`/`roberta.`/`distilbert.` prefixes and old `gamma`/`beta` names, F16/BF16 cast to
//! F32), joining the separate query/key/value projections into the fused one. [`save_encoder`]
//! writes the encoder back in the HuggingFace layout (the fused projection split again).
//!
//! The key table of each family, [`family_keys`], is the one place where HuggingFace names
//! are spelled out; import and export both read it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{KeyRemapper, ModuleStore, PytorchStore, SafetensorsStore};
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{Activation, MultitaskConfig, NormPosition, Pooling, PositionalEncoding};
use crate::encoder::{EncoderLayer, TransformerEncoder};
use crate::error::{Error, Result};
use crate::model::{MultitaskTransformer, SharedEncoder};

/// File name of a HuggingFace model configuration.
pub const HF_CONFIG_FILE: &str = "config.json";
/// File name of HuggingFace weights in safetensors format (preferred).
pub const HF_SAFETENSORS_FILE: &str = "model.safetensors";
/// File name of HuggingFace weights in PyTorch's pickle format.
pub const HF_PYTORCH_FILE: &str = "pytorch_model.bin";
/// Prefix of the head tensors `mtl export` adds to a HuggingFace weights file.
pub const HEAD_PREFIX: &str = "mtl.";

/// A problem with a HuggingFace checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum PretrainedError {
    /// `config.json` names a `model_type` this version does not import.
    #[error(
        "{}: unknown model_type {model_type:?}; mtl imports bert, roberta, xlm-roberta, camembert and distilbert",
        path.display()
    )]
    UnknownModelType {
        /// The config file.
        path: PathBuf,
        /// The `model_type` found (empty when missing).
        model_type: String,
    },
    /// A field `config.json` must have is missing or has the wrong JSON type.
    #[error("{}: field {field:?} is missing or not {expected}", path.display())]
    Field {
        /// The config file.
        path: PathBuf,
        /// The field.
        field: &'static str,
        /// What it should be (`"a positive integer"`).
        expected: &'static str,
    },
    /// An activation this version cannot compute exactly.
    #[error(
        "{}: hidden activation {activation:?} is not supported (gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu)",
        path.display()
    )]
    Activation {
        /// The config file.
        path: PathBuf,
        /// The activation named.
        activation: String,
    },
    /// Fields that contradict each other or the encoder mtl builds.
    #[error("{}: inconsistent configuration: {message}", path.display())]
    Inconsistent {
        /// The config file.
        path: PathBuf,
        /// What does not fit.
        message: String,
    },
    /// Neither `model.safetensors` nor `pytorch_model.bin` in the directory.
    #[error("{}: no model.safetensors or pytorch_model.bin", dir.display())]
    NoWeights {
        /// The checkpoint directory.
        dir: PathBuf,
    },
    /// The weights file cannot be read.
    #[error("{}: cannot read the weights: {message}", path.display())]
    Read {
        /// The weights file.
        path: PathBuf,
        /// What burn-store reported.
        message: String,
    },
    /// A tensor the encoder needs is not in the file.
    #[error("{}: tensor {name:?} is missing", path.display())]
    MissingTensor {
        /// The weights file.
        path: PathBuf,
        /// Its name (without the model prefix).
        name: String,
    },
    /// A tensor of the wrong shape.
    #[error("{}: tensor {name:?} has shape {found:?}, the configuration needs {expected:?}", path.display())]
    TensorShape {
        /// The weights file.
        path: PathBuf,
        /// Its name.
        name: String,
        /// The shape in the file.
        found: Vec<usize>,
        /// The shape the config implies.
        expected: Vec<usize>,
    },
    /// A tensor that is not floating point where weights are expected.
    #[error("{}: tensor {name:?} has dtype {dtype}, expected a float type", path.display())]
    TensorDtype {
        /// The weights file.
        path: PathBuf,
        /// Its name.
        name: String,
        /// The dtype in the file.
        dtype: String,
    },
    /// The model to export was not imported from a HuggingFace checkpoint.
    #[error(
        "the model was not built from a pretrained checkpoint, so it has no HuggingFace layout"
    )]
    NotPretrained,
    /// Writing the export failed.
    #[error("{}: cannot write the weights: {message}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        message: String,
    },
}

/// The layout families mtl imports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// BERT, MiniLM and other `BertModel`s.
    Bert,
    /// RoBERTa, XLM-R, CamemBERT (`roberta.` keys, positions offset by `pad_token_id + 1`).
    Roberta,
    /// DistilBERT (its own key names, no token types).
    DistilBert,
}

impl Family {
    /// The family of a `model_type`.
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "bert" => Some(Self::Bert),
            "roberta" | "xlm-roberta" | "camembert" => Some(Self::Roberta),
            "distilbert" => Some(Self::DistilBert),
            _ => None,
        }
    }

    /// The prefix task models put before the base model's keys.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Bert => "bert.",
            Self::Roberta => "roberta.",
            Self::DistilBert => "distilbert.",
        }
    }
}

/// Where an imported encoder came from: enough to write it back in the same layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainedOrigin {
    /// The layout family.
    pub family: Family,
    /// The checkpoint's `config.json`, as read.
    pub hf_config: Value,
}

/// The hyper-parameters of a HuggingFace encoder, read from its `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct HfConfig {
    /// Layout family.
    pub family: Family,
    /// `vocab_size`.
    pub vocab_size: usize,
    /// `hidden_size` (DistilBERT: `dim`).
    pub hidden_size: usize,
    /// `num_hidden_layers` (`n_layers`).
    pub num_layers: usize,
    /// `num_attention_heads` (`n_heads`).
    pub num_heads: usize,
    /// `intermediate_size` (`hidden_dim`).
    pub intermediate_size: usize,
    /// `hidden_act` (`activation`).
    pub activation: Activation,
    /// `layer_norm_eps` (DistilBERT: 1e-12, fixed in its code).
    pub layer_norm_eps: f64,
    /// `max_position_embeddings`: rows of the position table.
    pub max_position_embeddings: usize,
    /// `type_vocab_size` (DistilBERT: 0).
    pub type_vocab_size: usize,
    /// `pad_token_id`.
    pub pad_token_id: usize,
    /// `hidden_dropout_prob` (`dropout`).
    pub dropout: f64,
    /// The file as read.
    pub raw: Value,
}

impl HfConfig {
    /// Reads `dir/config.json`.
    ///
    /// # Errors
    /// The file cannot be read ([`Error::Io`]) or parsed ([`Error::ConfigFile`]), or any
    /// [`PretrainedError`] about its contents.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(HF_CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let raw: Value = serde_json::from_str(&text).map_err(|source| Error::ConfigFile {
            path: path.clone(),
            source,
        })?;
        Self::from_json(raw, &path)
    }

    /// Interprets a parsed `config.json` (`path` names it in errors).
    ///
    /// # Errors
    /// [`PretrainedError`]: an unknown `model_type`, a missing field, an unsupported
    /// activation, or sizes that contradict each other.
    pub fn from_json(raw: Value, path: &Path) -> Result<Self> {
        let model_type = raw
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let family = Family::from_model_type(&model_type).ok_or_else(|| {
            PretrainedError::UnknownModelType {
                path: path.into(),
                model_type: model_type.clone(),
            }
        })?;
        let size = |field: &'static str| -> Result<usize> {
            raw.get(field)
                .and_then(Value::as_u64)
                .filter(|&v| v > 0)
                .map(|v| v as usize)
                .ok_or_else(|| {
                    PretrainedError::Field {
                        path: path.into(),
                        field,
                        expected: "a positive integer",
                    }
                    .into()
                })
        };
        let float = |field: &'static str, default: Option<f64>| -> Result<f64> {
            match raw.get(field) {
                Some(v) => v.as_f64().ok_or_else(|| {
                    PretrainedError::Field {
                        path: path.into(),
                        field,
                        expected: "a number",
                    }
                    .into()
                }),
                None => default.ok_or_else(|| {
                    PretrainedError::Field {
                        path: path.into(),
                        field,
                        expected: "a number",
                    }
                    .into()
                }),
            }
        };
        let (hidden, layers, heads, ff, act_field) = match family {
            Family::DistilBert => (
                size("dim")?,
                size("n_layers")?,
                size("n_heads")?,
                size("hidden_dim")?,
                "activation",
            ),
            _ => (
                size("hidden_size")?,
                size("num_hidden_layers")?,
                size("num_attention_heads")?,
                size("intermediate_size")?,
                "hidden_act",
            ),
        };
        let act_name =
            raw.get(act_field)
                .and_then(Value::as_str)
                .ok_or_else(|| PretrainedError::Field {
                    path: path.into(),
                    field: act_field,
                    expected: "a string",
                })?;
        let activation = match act_name {
            "gelu" => Activation::Gelu,
            // `gelu_fast` is the same tanh formula written differently.
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            other => {
                return Err(PretrainedError::Activation {
                    path: path.into(),
                    activation: other.to_string(),
                }
                .into());
            }
        };
        let (layer_norm_eps, type_vocab_size, dropout) = match family {
            // DistilBERT's code fixes epsilon at 1e-12; it has no token types.
            Family::DistilBert => (1e-12, 0, float("dropout", Some(0.1))?),
            _ => (
                float("layer_norm_eps", None)?,
                size("type_vocab_size")?,
                float("hidden_dropout_prob", Some(0.1))?,
            ),
        };
        let pad_token_id = match raw.get("pad_token_id") {
            None | Some(Value::Null) => 0,
            Some(v) => v.as_u64().ok_or(PretrainedError::Field {
                path: path.into(),
                field: "pad_token_id",
                expected: "an integer",
            })? as usize,
        };
        if let Some(kind) = raw.get("position_embedding_type").and_then(Value::as_str)
            && kind != "absolute"
        {
            return Err(PretrainedError::Inconsistent {
                path: path.into(),
                message: format!(
                    "position_embedding_type {kind:?}: only absolute positions are supported"
                ),
            }
            .into());
        }
        let config = Self {
            family,
            vocab_size: size("vocab_size")?,
            hidden_size: hidden,
            num_layers: layers,
            num_heads: heads,
            intermediate_size: ff,
            activation,
            layer_norm_eps,
            max_position_embeddings: size("max_position_embeddings")?,
            type_vocab_size,
            pad_token_id,
            dropout,
            raw,
        };
        config.check(path)?;
        Ok(config)
    }

    fn check(&self, path: &Path) -> Result<()> {
        let fail = |message: String| -> Result<()> {
            Err(PretrainedError::Inconsistent {
                path: path.into(),
                message,
            }
            .into())
        };
        if !self.hidden_size.is_multiple_of(self.num_heads) {
            return fail(format!(
                "hidden size {} is not divisible by {} attention heads",
                self.hidden_size, self.num_heads
            ));
        }
        if self.pad_token_id >= self.vocab_size {
            return fail(format!(
                "pad_token_id {} is outside the vocabulary of {}",
                self.pad_token_id, self.vocab_size
            ));
        }
        if self.max_position_embeddings <= self.position_offset() {
            return fail(format!(
                "max_position_embeddings {} leaves no position after the offset {}",
                self.max_position_embeddings,
                self.position_offset()
            ));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return fail(format!(
                "layer_norm_eps must be positive, got {}",
                self.layer_norm_eps
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return fail(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        Ok(())
    }

    /// First row of the position table real tokens use: RoBERTa counts positions from
    /// `pad_token_id + 1`; the others from 0.
    pub fn position_offset(&self) -> usize {
        match self.family {
            Family::Roberta => self.pad_token_id + 1,
            _ => 0,
        }
    }

    /// Longest input the position table allows.
    pub fn max_seq_length(&self) -> usize {
        self.max_position_embeddings - self.position_offset()
    }

    /// The [`MultitaskConfig`] of this encoder under heads of the given sizes.
    pub fn to_model_config(
        &self,
        num_classes: usize,
        num_ner_tags: usize,
        pooling: Pooling,
    ) -> MultitaskConfig {
        let mut c = MultitaskConfig::new(self.vocab_size, num_classes, num_ner_tags)
            .with_d_model(self.hidden_size)
            .with_nhead(self.num_heads)
            .with_num_encoder_layers(self.num_layers)
            .with_dim_feedforward(self.intermediate_size)
            .with_dropout(self.dropout)
            .with_max_seq_length(self.max_seq_length())
            .with_positional_encoding(PositionalEncoding::Learned)
            .with_pooling(pooling)
            .with_activation(self.activation)
            .with_norm(NormPosition::Post)
            .with_pad_token_id(self.pad_token_id);
        c.layer_norm_eps = self.layer_norm_eps;
        c.scale_embedding = false;
        c.embedding_norm = true;
        c.type_vocab_size = self.type_vocab_size;
        c.position_offset = self.position_offset();
        c.pretrained = Some(PretrainedOrigin {
            family: self.family,
            hf_config: self.raw.clone(),
        });
        c
    }
}

/// HuggingFace names (without the model prefix) of one family's tensors.
#[derive(Debug, Clone, Copy)]
pub struct FamilyKeys {
    /// Token embeddings.
    pub word_embeddings: &'static str,
    /// Position embeddings.
    pub position_embeddings: &'static str,
    /// Token-type embeddings (`None`: the family has none).
    pub token_type_embeddings: Option<&'static str>,
    /// The embedding LayerNorm (`.weight`/`.bias` follow).
    pub embedding_norm: &'static str,
    /// Prefix of layer `i`'s keys, with `{}` for `i`.
    pub layer: &'static str,
    /// Query, key and value projections, inside a layer.
    pub qkv: [&'static str; 3],
    /// Attention output projection.
    pub attention_out: &'static str,
    /// LayerNorm after attention.
    pub norm_attn: &'static str,
    /// First feed-forward projection.
    pub ff_in: &'static str,
    /// Second feed-forward projection.
    pub ff_out: &'static str,
    /// LayerNorm after the feed-forward block.
    pub norm_ff: &'static str,
}

impl FamilyKeys {
    /// Layer `i`'s key for `part` (one of this table's layer fields).
    pub fn in_layer(&self, i: usize, part: &str) -> String {
        format!("{}.{part}", self.layer.replace("{}", &i.to_string()))
    }
}

/// The key table of `family`.
pub fn family_keys(family: Family) -> FamilyKeys {
    match family {
        Family::Bert | Family::Roberta => FamilyKeys {
            word_embeddings: "embeddings.word_embeddings",
            position_embeddings: "embeddings.position_embeddings",
            token_type_embeddings: Some("embeddings.token_type_embeddings"),
            embedding_norm: "embeddings.LayerNorm",
            layer: "encoder.layer.{}",
            qkv: [
                "attention.self.query",
                "attention.self.key",
                "attention.self.value",
            ],
            attention_out: "attention.output.dense",
            norm_attn: "attention.output.LayerNorm",
            ff_in: "intermediate.dense",
            ff_out: "output.dense",
            norm_ff: "output.LayerNorm",
        },
        Family::DistilBert => FamilyKeys {
            word_embeddings: "embeddings.word_embeddings",
            position_embeddings: "embeddings.position_embeddings",
            token_type_embeddings: None,
            embedding_norm: "embeddings.LayerNorm",
            layer: "transformer.layer.{}",
            qkv: ["attention.q_lin", "attention.k_lin", "attention.v_lin"],
            attention_out: "attention.out_lin",
            norm_attn: "sa_layer_norm",
            ff_in: "ffn.lin1",
            ff_out: "ffn.lin2",
            norm_ff: "output_layer_norm",
        },
    }
}

/// The weights file of a checkpoint directory: `model.safetensors`, else
/// `pytorch_model.bin`.
///
/// # Errors
/// [`PretrainedError::NoWeights`] when there is neither.
pub fn weights_file(dir: &Path) -> Result<PathBuf> {
    [HF_SAFETENSORS_FILE, HF_PYTORCH_FILE]
        .into_iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| PretrainedError::NoWeights { dir: dir.into() }.into())
}

/// What [`load_encoder`] did with the file's tensors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// The weights file read.
    pub path: PathBuf,
    /// Tensors copied into the encoder (names after prefix removal).
    pub used: Vec<String>,
    /// Tensors in the file the encoder has no place for (pooler, `position_ids`, task heads).
    pub unused: Vec<String>,
}

/// The tensors of a weights file, by name, with the model prefix removed and old LayerNorm
/// names (`gamma`, `beta`) renamed.
struct Tensors {
    path: PathBuf,
    /// Read lazily: only the tensors the encoder takes are ever loaded and converted.
    data: BTreeMap<String, PackTensor>,
    used: BTreeSet<String>,
}

impl Tensors {
    fn read(path: &Path, family: Family) -> Result<Self> {
        let read_err = |message: String| PretrainedError::Read {
            path: path.into(),
            message,
        };
        let prefix = regex_escape(family.prefix());
        let remapper = KeyRemapper::from_patterns(vec![
            (format!("^{prefix}"), String::new()),
            (r"\.gamma$".to_string(), ".weight".to_string()),
            (r"\.beta$".to_string(), ".bias".to_string()),
        ])
        .map_err(|e| read_err(e.to_string()))?;
        let is_pickle = path.extension().is_some_and(|e| e == "bin" || e == "pt");
        let tensors = if is_pickle {
            let mut store = PytorchStore::from_file(path).remap(remapper);
            let all = store
                .get_all_tensors()
                .map_err(|e| read_err(e.to_string()))?;
            all.clone()
        } else {
            let mut store = SafetensorsStore::from_file(path).remap(remapper);
            let all = store
                .get_all_tensors()
                .map_err(|e| read_err(e.to_string()))?;
            all.clone()
        };
        Ok(Self {
            path: path.into(),
            data: tensors,
            used: BTreeSet::new(),
        })
    }

    /// The float tensor `name` as F32, which must have shape `shape`.
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<TensorData> {
        let data = self
            .data
            .get(name)
            .ok_or_else(|| PretrainedError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
            })?;
        if data.shape.as_slice() != shape {
            return Err(PretrainedError::TensorShape {
                path: self.path.clone(),
                name: name.to_string(),
                found: data.shape.as_slice().to_vec(),
                expected: shape.to_vec(),
            }
            .into());
        }
        if !data.dtype.is_float() {
            return Err(PretrainedError::TensorDtype {
                path: self.path.clone(),
                name: name.to_string(),
                dtype: format!("{:?}", data.dtype),
            }
            .into());
        }
        let values = burn::store::bridge::to_data(data).map_err(|e| PretrainedError::Read {
            path: self.path.clone(),
            message: format!("tensor {name:?}: {e}"),
        })?;
        self.used.insert(name.to_string());
        Ok(values.convert::<f32>())
    }

    fn report(self) -> ImportReport {
        let unused = self
            .data
            .keys()
            .filter(|k| !self.used.contains(*k))
            .cloned()
            .collect();
        ImportReport {
            path: self.path,
            used: self.used.into_iter().collect(),
            unused,
        }
    }
}

fn regex_escape(s: &str) -> String {
    s.replace('.', r"\.")
}

fn tensor<const D: usize>(data: TensorData, device: &Device) -> Tensor<D> {
    Tensor::from_data(data, device)
}

/// A PyTorch Linear (`[out, in]` weight) into a Burn one (`[in, out]`).
fn set_linear(linear: &mut Linear, weight: TensorData, bias: TensorData, device: &Device) {
    linear.weight = Param::from_tensor(tensor::<2>(weight, device).transpose());
    linear.bias = Some(Param::from_tensor(tensor::<1>(bias, device)));
}

fn set_norm(norm: &mut LayerNorm, weight: TensorData, bias: TensorData, device: &Device) {
    norm.gamma = Param::from_tensor(tensor::<1>(weight, device));
    norm.beta = Some(Param::from_tensor(tensor::<1>(bias, device)));
}

fn set_embedding(embedding: &mut Embedding, weight: TensorData, device: &Device) {
    embedding.weight = Param::from_tensor(tensor::<2>(weight, device));
}

/// Copies the encoder of the checkpoint in `dir` into `model`, whose configuration must come
/// from [`HfConfig::to_model_config`] of the same checkpoint; the heads are left as they are.
///
/// # Errors
/// [`PretrainedError`]: no weights file, an unreadable file, a missing tensor, a tensor of the
/// wrong shape or dtype; [`PretrainedError::NotPretrained`] if `model` was not configured from
/// a checkpoint.
pub fn load_encoder(
    dir: &Path,
    model: MultitaskTransformer,
) -> Result<(MultitaskTransformer, ImportReport)> {
    let path = weights_file(dir)?;
    load_encoder_file(&path, model)
}

/// [`load_encoder`] from a given weights file (`.safetensors`, or `.bin`/`.pt` pickles).
///
/// # Errors
/// As [`load_encoder`].
pub fn load_encoder_file(
    path: &Path,
    mut model: MultitaskTransformer,
) -> Result<(MultitaskTransformer, ImportReport)> {
    let config = model.config().clone();
    let origin = config
        .pretrained
        .as_ref()
        .ok_or(PretrainedError::NotPretrained)?;
    let keys = family_keys(origin.family);
    let mut file = Tensors::read(path, origin.family)?;
    let device = model.classifier.weight.device();
    let d = config.d_model;
    let SharedEncoder::Transformer(encoder) = &mut model.encoder;
    let vector = |file: &mut Tensors, name: String, n: usize| file.take(&name, &[n]);

    set_embedding(
        &mut encoder.token_embedding,
        file.take(
            &format!("{}.weight", keys.word_embeddings),
            &[config.vocab_size, d],
        )?,
        &device,
    );
    if let Some(table) = &mut encoder.position_embedding {
        let w = file.take(
            &format!("{}.weight", keys.position_embeddings),
            &[config.position_table_size(), d],
        )?;
        set_embedding(table, w, &device);
    }
    if let (Some(table), Some(name)) = (
        &mut encoder.token_type_embedding,
        keys.token_type_embeddings,
    ) {
        let w = file.take(&format!("{name}.weight"), &[config.type_vocab_size, d])?;
        set_embedding(table, w, &device);
    }
    if let Some(norm) = &mut encoder.embedding_norm {
        let w = vector(&mut file, format!("{}.weight", keys.embedding_norm), d)?;
        let b = vector(&mut file, format!("{}.bias", keys.embedding_norm), d)?;
        set_norm(norm, w, b, &device);
    }
    let ff = config.dim_feedforward;
    for (i, layer) in encoder.layers.iter_mut().enumerate() {
        let name = |part: &str, what: &str| format!("{}.{what}", keys.in_layer(i, part));
        // q, k, v: three [d, d] PyTorch weights become one [d, 3d] Burn weight.
        let mut weights = Vec::with_capacity(3);
        let mut biases = Vec::with_capacity(3);
        for part in keys.qkv {
            weights.push(tensor::<2>(
                file.take(&name(part, "weight"), &[d, d])?,
                &device,
            ));
            biases.push(tensor::<1>(file.take(&name(part, "bias"), &[d])?, &device));
        }
        layer.qkv.weight = Param::from_tensor(Tensor::cat(weights, 0).transpose());
        layer.qkv.bias = Some(Param::from_tensor(Tensor::cat(biases, 0)));
        let linear = |file: &mut Tensors, part: &str, d_in: usize, d_out: usize| {
            Ok::<_, Error>((
                file.take(&name(part, "weight"), &[d_out, d_in])?,
                file.take(&name(part, "bias"), &[d_out])?,
            ))
        };
        let (w, b) = linear(&mut file, keys.attention_out, d, d)?;
        set_linear(&mut layer.out, w, b, &device);
        let (w, b) = linear(&mut file, keys.ff_in, d, ff)?;
        set_linear(&mut layer.ff_in, w, b, &device);
        let (w, b) = linear(&mut file, keys.ff_out, ff, d)?;
        set_linear(&mut layer.ff_out, w, b, &device);
        let w = file.take(&name(keys.norm_attn, "weight"), &[d])?;
        let b = file.take(&name(keys.norm_attn, "bias"), &[d])?;
        set_norm(&mut layer.norm_attn, w, b, &device);
        let w = file.take(&name(keys.norm_ff, "weight"), &[d])?;
        let b = file.take(&name(keys.norm_ff, "bias"), &[d])?;
        set_norm(&mut layer.norm_ff, w, b, &device);
    }
    Ok((model, file.report()))
}

/// Builds a model for the checkpoint in `dir`: its encoder with the checkpoint's weights,
/// fresh heads of the given sizes.
///
/// # Errors
/// As [`HfConfig::read`] and [`load_encoder`].
pub fn from_pretrained(
    dir: &Path,
    num_classes: usize,
    num_ner_tags: usize,
    pooling: Pooling,
    device: &Device,
) -> Result<(MultitaskTransformer, ImportReport)> {
    let hf = HfConfig::read(dir)?;
    let config = hf.to_model_config(num_classes, num_ner_tags, pooling);
    let model = MultitaskTransformer::new(&config, device)?;
    load_encoder(dir, model)
}

/// A tensor in host memory under its HuggingFace name, PyTorch layout.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// The name (without the model prefix).
    pub name: String,
    /// The shape.
    pub shape: Vec<usize>,
    /// The values, row-major.
    pub values: Vec<f32>,
}

/// The encoder's (and heads') tensors under HuggingFace names, in PyTorch layout, as
/// [`NamedTensor`]s: the inverse of [`load_encoder`]. Heads are named
/// [`HEAD_PREFIX`]`classifier.*`, `ner_head.*` and `sentence_to_tokens.*`.
///
/// # Errors
/// [`PretrainedError::NotPretrained`] if the model was not configured from a checkpoint.
pub fn hf_tensors(model: &MultitaskTransformer) -> Result<Vec<NamedTensor>> {
    let config = model.config();
    let origin = config
        .pretrained
        .as_ref()
        .ok_or(PretrainedError::NotPretrained)?;
    let keys = family_keys(origin.family);
    let SharedEncoder::Transformer(encoder) = &model.encoder;
    let mut out = Vec::new();
    // Vectors travel as `[1, n]` rows (`vector` true) to share one helper.
    let mut push = |name: String, t: Tensor<2>, vector: bool| {
        let [r, c] = t.dims();
        let shape = if vector { vec![c] } else { vec![r, c] };
        out.push(NamedTensor {
            name,
            shape,
            values: host(t),
        });
    };
    export_embeddings(encoder, &keys, &mut push);
    let d = config.d_model;
    for (i, layer) in encoder.layers.iter().enumerate() {
        export_layer(layer, &keys, i, d, &mut push);
    }
    let mut linear = |name: &str, l: &Linear| {
        push(
            format!("{HEAD_PREFIX}{name}.weight"),
            l.weight.val().transpose(),
            false,
        );
        if let Some(b) = &l.bias {
            push(
                format!("{HEAD_PREFIX}{name}.bias"),
                b.val().unsqueeze(),
                true,
            );
        }
    };
    linear("classifier", &model.classifier);
    linear("ner_head", &model.ner_head);
    if let Some(map) = &model.sentence_to_tokens {
        linear("sentence_to_tokens", map);
    }
    Ok(out)
}

fn host(t: Tensor<2>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default()
}

fn export_embeddings(
    encoder: &TransformerEncoder,
    keys: &FamilyKeys,
    push: &mut impl FnMut(String, Tensor<2>, bool),
) {
    push(
        format!("{}.weight", keys.word_embeddings),
        encoder.token_embedding.weight.val(),
        false,
    );
    if let Some(table) = &encoder.position_embedding {
        push(
            format!("{}.weight", keys.position_embeddings),
            table.weight.val(),
            false,
        );
    }
    if let (Some(table), Some(name)) = (&encoder.token_type_embedding, keys.token_type_embeddings) {
        push(format!("{name}.weight"), table.weight.val(), false);
    }
    if let Some(norm) = &encoder.embedding_norm {
        export_norm(norm, keys.embedding_norm, push);
    }
}

fn export_norm(norm: &LayerNorm, name: &str, push: &mut impl FnMut(String, Tensor<2>, bool)) {
    push(format!("{name}.weight"), norm.gamma.val().unsqueeze(), true);
    if let Some(b) = &norm.beta {
        push(format!("{name}.bias"), b.val().unsqueeze(), true);
    }
}

fn export_layer(
    layer: &EncoderLayer,
    keys: &FamilyKeys,
    i: usize,
    d: usize,
    push: &mut impl FnMut(String, Tensor<2>, bool),
) {
    let name = |part: &str, what: &str| format!("{}.{what}", keys.in_layer(i, part));
    // [d, 3d] Burn weight -> three [d, d] PyTorch weights.
    let w = layer.qkv.weight.val().transpose();
    let b = layer.qkv.bias.as_ref().map(|b| b.val());
    for (j, part) in keys.qkv.iter().enumerate() {
        push(name(part, "weight"), w.clone().narrow(0, j * d, d), false);
        if let Some(b) = &b {
            push(
                name(part, "bias"),
                b.clone().narrow(0, j * d, d).unsqueeze(),
                true,
            );
        }
    }
    for (part, linear) in [
        (keys.attention_out, &layer.out),
        (keys.ff_in, &layer.ff_in),
        (keys.ff_out, &layer.ff_out),
    ] {
        push(name(part, "weight"), linear.weight.val().transpose(), false);
        if let Some(b) = &linear.bias {
            push(name(part, "bias"), b.val().unsqueeze(), true);
        }
    }
    let norms = [
        (keys.norm_attn, &layer.norm_attn),
        (keys.norm_ff, &layer.norm_ff),
    ];
    for (part, norm) in norms {
        export_norm(norm, &keys.in_layer(i, part), push);
    }
}

/// Writes `model`'s encoder (and heads, as [`HEAD_PREFIX`] tensors) into `dir` in the
/// HuggingFace layout of the checkpoint it came from: `config.json` (the original one) and
/// `model.safetensors` (F32, base-model keys without prefix), so that `transformers` loads the
/// encoder and [`load_encoder`] reads back the same values. Files are written atomically.
///
/// # Errors
/// [`PretrainedError::NotPretrained`] for a model not built from a checkpoint; I/O errors.
pub fn save_encoder(model: &MultitaskTransformer, dir: &Path) -> Result<()> {
    let origin = model
        .config()
        .pretrained
        .as_ref()
        .ok_or(PretrainedError::NotPretrained)?;
    let tensors = hf_tensors(model)?;
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.into(),
        source,
    })?;
    let config_path = dir.join(HF_CONFIG_FILE);
    let config_text =
        serde_json::to_vec_pretty(&origin.hf_config).map_err(|source| Error::ConfigFile {
            path: config_path.clone(),
            source,
        })?;
    crate::io::write_atomic(&config_path, &config_text).map_err(|source| Error::Io {
        path: config_path.clone(),
        source,
    })?;
    let path = dir.join(HF_SAFETENSORS_FILE);
    let serialized = to_safetensors(&tensors).map_err(|message| PretrainedError::Write {
        path: path.clone(),
        message,
    })?;
    crate::io::write_atomic(&path, &serialized).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    Ok(())
}

/// F32 tensors as a safetensors file (metadata `format = pt`, as transformers writes).
///
/// # Errors
/// A shape that does not match the number of values, as the safetensors crate reports it.
pub fn to_safetensors(tensors: &[NamedTensor]) -> std::result::Result<Vec<u8>, String> {
    let raw: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| t.values.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&raw)
        .map(|(t, bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, t.shape.clone(), bytes)
                .map(|view| (t.name.clone(), view))
                .map_err(|e| e.to_string())
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut metadata = std::collections::HashMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    safetensors::serialize(views, Some(metadata)).map_err(|e| e.to_string())
}

/// The F32 tensors of a safetensors file's bytes, in file order (tensors of other dtypes,
/// such as `position_ids`, are left out); the inverse of [`to_safetensors`].
///
/// # Errors
/// Bytes that are not a safetensors file.
pub fn from_safetensors(bytes: &[u8]) -> std::result::Result<Vec<NamedTensor>, String> {
    let file = safetensors::SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
    Ok(file
        .tensors()
        .into_iter()
        .filter(|(_, t)| t.dtype() == safetensors::Dtype::F32)
        .map(|(name, t)| NamedTensor {
            name,
            shape: t.shape().to_vec(),
            values: t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        })
        .collect())
}
