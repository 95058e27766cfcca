//! The shared Transformer encoder: embeddings, positions and a stack of encoder layers.
//!
//! Numerically the seed's encoder: `torch.nn.TransformerEncoder` with `batch_first=True`
//! (fused QKV projection as PyTorch's `in_proj`, post- or pre-norm, ReLU or GELU), fed by token
//! embeddings scaled by `sqrt(d_model)` plus sinusoidal (or learned) positions.

use burn::module::Module;
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig,
    Linear, LinearConfig,
};
use burn::tensor::activation::{gelu, relu, softmax};
use burn::tensor::module::attention as fused_attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use crate::chars::CharCnn;
use crate::config::{Activation, MultitaskConfig, NormPosition, PositionalEncoding};
use crate::dropout::{dropout, dropout_rows};

/// Additive bias given to padded keys before the attention softmax. Finite, so that a row whose
/// keys are all padding still gives finite (uniform) weights instead of NaN.
const MASK_BIAS: f32 = -1.0e9;

/// Where a batch's real tokens sit, built once per batch from its padding mask.
///
/// Between attentions the encoder works on the real tokens only, `[tokens, d_model]` rows
/// (packed): Linears, LayerNorms, activations and dropouts then skip padding, a quarter of the
/// work for lengths uniform in `32..=64` padded to 64. Attention unpacks its queries, keys and
/// values into the padded `[batch, seq, ..]` layout (padding rows zero) and packs its output
/// again. Padded positions never influence real ones (their keys are masked, heads and losses
/// ignore them), so this changes no real position's value.
#[derive(Debug, Clone)]
pub struct Packing {
    batch: usize,
    seq: usize,
    /// Padded row (`b * seq + s`) of each real token, in order.
    rows: Vec<usize>,
    /// `[tokens]`: `rows` on the device.
    gather: Tensor<1, Int>,
    /// `[batch * seq]`: the packed row of each padded position; `tokens` (a zero row appended
    /// before the lookup) for padding.
    scatter: Tensor<1, Int>,
}

impl Packing {
    /// Reads `padding_mask` (`[batch, seq]`, `true` = padding) once.
    pub fn new(padding_mask: &Tensor<2, Bool>) -> Self {
        let [batch, seq] = padding_mask.dims();
        let device = padding_mask.device();
        let mask = padding_mask
            .clone()
            .into_data()
            .convert::<bool>()
            .try_to_vec::<bool>()
            .expect("a Bool tensor reads back as bools");
        let rows: Vec<usize> = (0..batch * seq).filter(|&i| !mask[i]).collect();
        let mut scatter = vec![rows.len() as i64; batch * seq];
        for (packed, &row) in rows.iter().enumerate() {
            scatter[row] = packed as i64;
        }
        let gather: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
        Self {
            batch,
            seq,
            gather: Tensor::from_data(TensorData::new(gather, [rows.len()]), &device),
            scatter: Tensor::from_data(TensorData::new(scatter, [batch * seq]), &device),
            rows,
        }
    }

    /// Number of real tokens.
    pub fn tokens(&self) -> usize {
        self.rows.len()
    }

    /// Padded row of each real token.
    pub fn rows(&self) -> &[usize] {
        &self.rows
    }

    /// Whether the batch has no padding (packing is then the identity and costs nothing).
    pub fn is_dense(&self) -> bool {
        self.rows.len() == self.batch * self.seq
    }

    /// `[batch * seq, w]` -> `[tokens, w]`: the real tokens' rows.
    pub fn pack(&self, x: Tensor<2>) -> Tensor<2> {
        if self.is_dense() {
            x
        } else {
            x.select(0, self.gather.clone())
        }
    }

    /// `[batch * seq, ..]` integer rows -> `[tokens, ..]`.
    fn pack_int<const D: usize>(&self, x: Tensor<D, Int>) -> Tensor<D, Int> {
        if self.is_dense() {
            x
        } else {
            x.select(0, self.gather.clone())
        }
    }

    /// `[tokens, w]` -> `[batch * seq, w]`, padding rows zero.
    pub fn unpack(&self, x: Tensor<2>) -> Tensor<2> {
        if self.is_dense() {
            return x;
        }
        let [_, width] = x.dims();
        let zero = Tensor::<2>::zeros([1, width], &x.device());
        Tensor::cat(vec![x, zero], 0).select(0, self.scatter.clone())
    }
}

/// One encoder layer: self-attention and a feed-forward block, each with a residual connection.
#[derive(Module, Debug)]
pub struct EncoderLayer {
    /// Fused query/key/value projection, `d_model -> 3 * d_model` (PyTorch's `in_proj`).
    pub qkv: Linear,
    /// Attention output projection (PyTorch's `out_proj`).
    pub out: Linear,
    /// First feed-forward projection (`linear1`).
    pub ff_in: Linear,
    /// Second feed-forward projection (`linear2`).
    pub ff_out: Linear,
    /// LayerNorm of the attention block (`norm1`).
    pub norm_attn: LayerNorm,
    /// LayerNorm of the feed-forward block (`norm2`).
    pub norm_ff: LayerNorm,
    /// Dropout on attention weights, residual branches and inside the feed-forward block.
    pub dropout: Dropout,
    /// Number of attention heads.
    pub n_heads: usize,
    /// Pre-norm (`true`) or post-norm.
    pub pre_norm: bool,
    /// Feed-forward activation.
    #[module(skip)]
    pub activation: Activation,
}

impl EncoderLayer {
    fn new(config: &MultitaskConfig, device: &Device) -> Self {
        let d = config.d_model;
        // PyTorch: xavier_uniform for in_proj, zero biases; Linear default elsewhere.
        let linear = |i: usize, o: usize| LinearConfig::new(i, o).init(device);
        let norm = || {
            LayerNormConfig::new(d)
                .with_epsilon(config.layer_norm_eps)
                .init(device)
        };
        Self {
            qkv: LinearConfig::new(d, 3 * d)
                .with_initializer(Initializer::XavierUniform { gain: 1.0 })
                .init(device),
            out: linear(d, d),
            ff_in: linear(d, config.dim_feedforward),
            ff_out: linear(config.dim_feedforward, d),
            norm_attn: norm(),
            norm_ff: norm(),
            dropout: DropoutConfig::new(config.dropout).init(),
            n_heads: config.nhead,
            pre_norm: config.norm == NormPosition::Pre,
            activation: config.activation,
        }
    }

    /// Applies the layer to a batch's real tokens.
    ///
    /// # Shapes
    /// - `x`: `[tokens, d_model]`, the real tokens of the batch `packing` describes
    /// - `mask_bias`: `[batch, 1, 1, seq]` on an autodiff device, `[batch, 1, seq, seq]`
    ///   elsewhere; `0` for real keys and a large negative value for padding
    /// - output: `[tokens, d_model]`
    pub fn forward(&self, x: Tensor<2>, packing: &Packing, mask_bias: Tensor<4>) -> Tensor<2> {
        let (rows, seq) = (packing.rows(), packing.seq);
        if self.pre_norm {
            let a = self.attention(self.norm_attn.forward(x.clone()), packing, mask_bias);
            let x = x + dropout_rows(&self.dropout, a, rows, seq);
            let f = self.feed_forward(self.norm_ff.forward(x.clone()), packing);
            x + dropout_rows(&self.dropout, f, rows, seq)
        } else {
            let a = self.attention(x.clone(), packing, mask_bias);
            let x = self
                .norm_attn
                .forward(x + dropout_rows(&self.dropout, a, rows, seq));
            let f = self.feed_forward(x.clone(), packing);
            self.norm_ff
                .forward(x + dropout_rows(&self.dropout, f, rows, seq))
        }
    }

    /// Self-attention over the real tokens `x` (`[tokens, d_model]`), computed in the padded
    /// layout (see [`TransformerEncoder::forward`] for `mask_bias`).
    fn attention(&self, x: Tensor<2>, packing: &Packing, mask_bias: Tensor<4>) -> Tensor<2> {
        let [_, d_model] = x.dims();
        let (batch, seq) = (packing.batch, packing.seq);
        let heads = self.n_heads;
        let head_dim = d_model / heads;
        // [tokens, 3 * d_model] -> [batch * seq, 3 * d_model] -> [batch, 3 * heads, seq, head_dim]
        let qkv = packing
            .unpack(self.qkv.forward(x))
            .reshape([batch, seq, 3 * heads, head_dim])
            .swap_dims(1, 2);
        let q = qkv.clone().narrow(1, 0, heads);
        let k = qkv.clone().narrow(1, heads, heads);
        let v = qkv.narrow(1, 2 * heads, heads);
        let scale = 1.0 / (head_dim as f64).sqrt();
        let context = if mask_bias.device().is_autodiff() {
            // Training: explicit ops, so that autodiff sees them and dropout acts on the
            // attention weights (as PyTorch's MultiheadAttention). Scaling the (contiguous)
            // scores rather than the strided `q` view is one in-place pass.
            let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale) + mask_bias;
            let weights = if crate::is_cpu_backend(&scores.device()) {
                crate::math::softmax_tensor(scores)
            } else {
                softmax(scores, 3)
            };
            let weights = dropout(&self.dropout, weights);
            weights.matmul(v)
        } else {
            // No backward possible, so no dropout either: the backend's fused attention
            // (flex: one kernel per batch and head, scores never leave the cache).
            let options = AttentionModuleOptions {
                scale: Some(scale),
                ..AttentionModuleOptions::default()
            };
            fused_attention(q, k, v, None, Some(mask_bias), options)
        };
        let context = context.swap_dims(1, 2).reshape([batch * seq, d_model]);
        self.out.forward(packing.pack(context))
    }

    fn feed_forward(&self, x: Tensor<2>, packing: &Packing) -> Tensor<2> {
        let h = activate(self.activation, self.ff_in.forward(x));
        self.ff_out
            .forward(dropout_rows(&self.dropout, h, packing.rows(), packing.seq))
    }
}

/// Applies a feed-forward activation.
pub fn activate<const D: usize>(activation: Activation, x: Tensor<D>) -> Tensor<D> {
    match activation {
        Activation::Relu => relu(x),
        // On the CPU backend the exact GELU is computed on host memory (`math::gelu_tensor`).
        Activation::Gelu if crate::is_cpu_backend(&x.device()) => crate::math::gelu_tensor(x),
        Activation::Gelu => gelu(x),
        Activation::GeluTanh => gelu_tanh(x),
    }
}

/// GELU's tanh approximation, `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))` (HuggingFace's
/// `gelu_new`, PyTorch's `gelu(approximate="tanh")`), from differentiable ops.
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let inner = (x.clone() + x.clone().powi_scalar(3).mul_scalar(0.044715))
        .mul_scalar((2.0 / std::f64::consts::PI).sqrt());
    x.clone().mul(inner.tanh().add_scalar(1.0)).mul_scalar(0.5)
}

/// The shared Transformer encoder of the seed, with the options a BERT-family encoder needs
/// (learned positions with an offset, token types, a LayerNorm over the embeddings).
#[derive(Module, Debug)]
pub struct TransformerEncoder {
    /// Token embeddings, `[vocab_size, d_model]`.
    pub token_embedding: Embedding,
    /// Learned positions, `[max_seq_length + position_offset, d_model]`; `None` for
    /// sinusoidal positions.
    pub position_embedding: Option<Embedding>,
    /// Token-type (segment) embeddings, `[type_vocab_size, d_model]`, when configured.
    pub token_type_embedding: Option<Embedding>,
    /// LayerNorm over the summed embeddings (BERT), when configured.
    pub embedding_norm: Option<LayerNorm>,
    /// Character-level word features added to the token embeddings, when configured.
    pub char_cnn: Option<CharCnn>,
    /// The encoder layers.
    pub layers: Vec<EncoderLayer>,
    /// Final LayerNorm, present for pre-norm stacks only.
    pub final_norm: Option<LayerNorm>,
    /// Dropout after the embeddings.
    pub dropout: Dropout,
    /// Model width.
    pub d_model: usize,
    /// Length of the position table.
    pub max_seq_length: usize,
    /// Whether token embeddings are multiplied by `sqrt(d_model)`.
    pub scale_embedding: bool,
    /// Added to each position before the learned table is read (RoBERTa: 2).
    pub position_offset: usize,
}

impl TransformerEncoder {
    /// Builds the encoder of `config` (which the caller has validated).
    pub fn new(config: &MultitaskConfig, device: &Device) -> Self {
        let mut token_embedding = EmbeddingConfig::new(config.vocab_size, config.d_model)
            .with_initializer(Initializer::Normal {
                mean: 0.0,
                std: 1.0,
            })
            .init(device);
        // Like PyTorch's `padding_idx`: the padding row starts at zero.
        let pad = config.pad_token_id;
        token_embedding.weight = token_embedding.weight.map(|w| {
            let [_, d] = w.dims();
            // `detach`: on an autodiff device the result must stay a leaf that can be trained.
            w.slice_assign([pad..pad + 1, 0..d], Tensor::zeros([1, d], device))
                .detach()
        });
        let position_embedding =
            (config.positional_encoding == PositionalEncoding::Learned).then(|| {
                EmbeddingConfig::new(config.position_table_size(), config.d_model).init(device)
            });
        let token_type_embedding = (config.type_vocab_size > 0)
            .then(|| EmbeddingConfig::new(config.type_vocab_size, config.d_model).init(device));
        let embedding_norm = config.embedding_norm.then(|| {
            LayerNormConfig::new(config.d_model)
                .with_epsilon(config.layer_norm_eps)
                .init(device)
        });
        let final_norm = (config.norm == NormPosition::Pre).then(|| {
            LayerNormConfig::new(config.d_model)
                .with_epsilon(config.layer_norm_eps)
                .init(device)
        });
        let char_cnn = config
            .char_features
            .as_ref()
            .map(|c| CharCnn::new(c, config.d_model, device));
        Self {
            token_embedding,
            position_embedding,
            token_type_embedding,
            embedding_norm,
            char_cnn,
            layers: (0..config.num_encoder_layers)
                .map(|_| EncoderLayer::new(config, device))
                .collect(),
            final_norm,
            dropout: DropoutConfig::new(config.dropout).init(),
            d_model: config.d_model,
            max_seq_length: config.max_seq_length,
            scale_embedding: config.scale_embedding,
            position_offset: config.position_offset,
        }
    }

    /// Encodes a batch.
    ///
    /// # Shapes
    /// - `tokens`: `[batch, seq]`
    /// - `padding_mask`: `[batch, seq]`, `true` = padding
    /// - `chars`: `[batch, seq, max_chars]` character ids, read when the encoder has
    ///   character features (and ignored otherwise)
    /// - output: `[batch, seq, d_model]`, zero at padded positions (the layers run on the real
    ///   tokens only, see [`Packing`])
    ///
    /// # Panics
    /// If the encoder has character features and `chars` is `None`.
    pub fn forward(
        &self,
        tokens: Tensor<2, Int>,
        padding_mask: Tensor<2, Bool>,
        chars: Option<Tensor<3, Int>>,
    ) -> Tensor<3> {
        self.forward_typed(tokens, padding_mask, chars, None)
    }

    /// [`forward`](Self::forward) with token-type (segment) ids, for encoders with a
    /// token-type table; `None` means type 0 everywhere (one sentence per input).
    ///
    /// # Shapes
    /// - `token_types`: `[batch, seq]`, each below `type_vocab_size`
    pub fn forward_typed(
        &self,
        tokens: Tensor<2, Int>,
        padding_mask: Tensor<2, Bool>,
        chars: Option<Tensor<3, Int>>,
        token_types: Option<Tensor<2, Int>>,
    ) -> Tensor<3> {
        let [batch, seq] = tokens.dims();
        let device = tokens.device();
        let packing = Packing::new(&padding_mask);
        let n = packing.tokens();
        let d = self.d_model;
        if n == 0 {
            // Nothing but padding: nothing to encode.
            return Tensor::zeros([batch, seq, d], &device);
        }
        // Embeddings of the real tokens only: [tokens, d_model].
        let ids = packing
            .pack_int(tokens.reshape([batch * seq, 1]))
            .reshape([1, n]);
        let mut x = self.token_embedding.forward(ids).reshape([n, d]);
        if self.scale_embedding {
            x = x.mul_scalar((d as f64).sqrt());
        }
        if let Some(cnn) = &self.char_cnn {
            let chars = chars.expect("a model with character features needs character ids");
            let [_, _, width] = chars.dims();
            let chars = packing
                .pack_int(chars.reshape([batch * seq, width]))
                .reshape([1, n, width]);
            x = x + cnn.forward(chars).reshape([n, d]);
        }
        let positions = match &self.position_embedding {
            Some(table) => {
                let offset = self.position_offset;
                let ids: Vec<i64> = packing
                    .rows()
                    .iter()
                    .map(|&r| (r % seq + offset) as i64)
                    .collect();
                let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, n]), &device);
                table.forward(ids).reshape([n, d])
            }
            None => {
                let ids: Vec<i64> = packing.rows().iter().map(|&r| (r % seq) as i64).collect();
                let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [n]), &device);
                sinusoidal_table(seq, d, &device).select(0, ids)
            }
        };
        x = x + positions;
        if let Some(table) = &self.token_type_embedding {
            x = match token_types {
                Some(types) => {
                    let types = packing
                        .pack_int(types.reshape([batch * seq, 1]))
                        .reshape([1, n]);
                    x + table.forward(types).reshape([n, d])
                }
                // One sentence per input: every token has type 0.
                None => x + table.weight.val().narrow(0, 0, 1),
            };
        }
        if let Some(norm) = &self.embedding_norm {
            x = norm.forward(x);
        }
        let mut x = dropout_rows(&self.dropout, x, packing.rows(), seq);
        // Built once per batch, shared by every layer. The fused attention used for inference
        // wants it per query row ([batch, 1, seq, seq], broadcast over heads); it would
        // otherwise expand a [batch, 1, 1, seq] bias in every layer.
        let mask_bias = Tensor::<2>::zeros([batch, seq], &device)
            .mask_fill(padding_mask, MASK_BIAS)
            .reshape([batch, 1, 1, seq]);
        let mask_bias = if device.is_autodiff() {
            mask_bias
        } else {
            mask_bias.repeat_dim(2, seq)
        };
        for layer in &self.layers {
            x = layer.forward(x, &packing, mask_bias.clone());
        }
        if let Some(norm) = &self.final_norm {
            x = norm.forward(x);
        }
        packing.unpack(x).reshape([batch, seq, d])
    }
}

/// The sine/cosine position table of Vaswani et al.: `pe[p, 2i] = sin(p / 10000^(2i/d))`,
/// `pe[p, 2i + 1] = cos(p / 10000^(2i/d))`.
///
/// # Shapes
/// - output: `[seq, d_model]`
pub fn sinusoidal_table(seq: usize, d_model: usize, device: &Device) -> Tensor<2> {
    let data = sinusoidal_values(seq, d_model);
    Tensor::from_data(TensorData::new(data, [seq, d_model]), device)
}

/// [`sinusoidal_table`]'s values in host memory, row-major `[seq, d_model]`.
pub(crate) fn sinusoidal_values(seq: usize, d_model: usize) -> Vec<f32> {
    let mut data = vec![0.0f32; seq * d_model];
    for pos in 0..seq {
        for i in (0..d_model).step_by(2) {
            // Same formula as PyTorch's tutorial: exp(2i * -ln(10000) / d), in f32.
            let div = ((i as f32) * (-(10000.0f32).ln() / d_model as f32)).exp();
            let angle = pos as f32 * div;
            data[pos * d_model + i] = angle.sin();
            if i + 1 < d_model {
                data[pos * d_model + i + 1] = angle.cos();
            }
        }
    }
    data
}
