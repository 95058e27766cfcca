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
use crate::dropout::dropout;

/// Additive bias given to padded keys before the attention softmax. Finite, so that a row whose
/// keys are all padding still gives finite (uniform) weights instead of NaN.
const MASK_BIAS: f32 = -1.0e9;

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
    /// GELU (`true`) or ReLU feed-forward activation.
    pub gelu: bool,
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
            gelu: config.activation == Activation::Gelu,
        }
    }

    /// Applies the layer.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]`
    /// - `mask_bias`: `[batch, 1, 1, seq]`, `0` for real keys and a large negative value for padding
    /// - output: `[batch, seq, d_model]`
    pub fn forward(&self, x: Tensor<3>, mask_bias: Tensor<4>) -> Tensor<3> {
        let [batch, seq, d_model] = x.dims();
        // Everything but the attention scores works on `[batch * seq, d_model]` rows, so each
        // Linear is one 2-D GEMM over all rows. (Burn runs a 3-D Linear whose rows per batch
        // are a multiple of 32 as a batched matmul, one small GEMM per sequence.)
        let x = x.reshape([batch * seq, d_model]);
        let y = if self.pre_norm {
            let a = self.attention(self.norm_attn.forward(x.clone()), batch, mask_bias);
            let x = x + dropout(&self.dropout, a);
            let f = self.feed_forward(self.norm_ff.forward(x.clone()));
            x + dropout(&self.dropout, f)
        } else {
            let a = self.attention(x.clone(), batch, mask_bias);
            let x = self.norm_attn.forward(x + dropout(&self.dropout, a));
            let f = self.feed_forward(x.clone());
            self.norm_ff.forward(x + dropout(&self.dropout, f))
        };
        y.reshape([batch, seq, d_model])
    }

    /// Self-attention over `x`, `[batch * seq, d_model]` rows; `mask_bias` is
    /// `[batch, 1, 1, seq]` on an autodiff device and `[batch, 1, seq, seq]` elsewhere (see
    /// [`TransformerEncoder::forward`]).
    fn attention(&self, x: Tensor<2>, batch: usize, mask_bias: Tensor<4>) -> Tensor<2> {
        let [rows, d_model] = x.dims();
        let seq = rows / batch;
        let heads = self.n_heads;
        let head_dim = d_model / heads;
        // [batch * seq, 3 * d_model] -> [batch, 3 * heads, seq, head_dim]
        let qkv = self
            .qkv
            .forward(x)
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
            let weights = dropout(&self.dropout, softmax(scores, 3));
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
        let context = context.swap_dims(1, 2).reshape([rows, d_model]);
        self.out.forward(context)
    }

    fn feed_forward(&self, x: Tensor<2>) -> Tensor<2> {
        let h = self.ff_in.forward(x);
        let h = if self.gelu { gelu(h) } else { relu(h) };
        self.ff_out.forward(dropout(&self.dropout, h))
    }
}

/// The shared Transformer encoder of the seed.
#[derive(Module, Debug)]
pub struct TransformerEncoder {
    /// Token embeddings, `[vocab_size, d_model]`.
    pub token_embedding: Embedding,
    /// Learned positions, `[max_seq_length, d_model]`; `None` for sinusoidal positions.
    pub position_embedding: Option<Embedding>,
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
        let position_embedding = (config.positional_encoding == PositionalEncoding::Learned)
            .then(|| EmbeddingConfig::new(config.max_seq_length, config.d_model).init(device));
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
            char_cnn,
            layers: (0..config.num_encoder_layers)
                .map(|_| EncoderLayer::new(config, device))
                .collect(),
            final_norm,
            dropout: DropoutConfig::new(config.dropout).init(),
            d_model: config.d_model,
            max_seq_length: config.max_seq_length,
            scale_embedding: config.scale_embedding,
        }
    }

    /// Encodes a batch.
    ///
    /// # Shapes
    /// - `tokens`: `[batch, seq]`
    /// - `padding_mask`: `[batch, seq]`, `true` = padding
    /// - `chars`: `[batch, seq, max_chars]` character ids, read when the encoder has
    ///   character features (and ignored otherwise)
    /// - output: `[batch, seq, d_model]`
    ///
    /// # Panics
    /// If the encoder has character features and `chars` is `None`.
    pub fn forward(
        &self,
        tokens: Tensor<2, Int>,
        padding_mask: Tensor<2, Bool>,
        chars: Option<Tensor<3, Int>>,
    ) -> Tensor<3> {
        let [batch, seq] = tokens.dims();
        let device = tokens.device();
        let mut x = self.token_embedding.forward(tokens);
        if self.scale_embedding {
            x = x.mul_scalar((self.d_model as f64).sqrt());
        }
        if let Some(cnn) = &self.char_cnn {
            let chars = chars.expect("a model with character features needs character ids");
            x = x + cnn.forward(chars);
        }
        let positions = match &self.position_embedding {
            Some(table) => {
                let ids = Tensor::<1, Int>::arange(0..seq as i64, &device).reshape([1, seq]);
                table.forward(ids)
            }
            None => sinusoidal_table(seq, self.d_model, &device).reshape([1, seq, self.d_model]),
        };
        let mut x = dropout(&self.dropout, x + positions);
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
            x = layer.forward(x, mask_bias.clone());
        }
        match &self.final_norm {
            Some(norm) => norm.forward(x),
            None => x,
        }
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
