//! Inference on packed sequences in host memory: the CPU serving path.
//!
//! [`PackedModel`] copies a [`MultitaskTransformer`]'s weights out of their Burn tensors once
//! and runs the same computation as [`MultitaskTransformer::forward_joint_with`] on a batch
//! whose sequences are laid end to end, without padding: every Linear is one GEMM over the
//! batch's real tokens only, and attention runs per sequence over its own length, so no work is
//! spent on padded positions (a batch of lengths uniform in `32..=64` padded to 64 is a quarter
//! padding). GEMMs use the `gemm` crate on Rayon's pool; LayerNorm, activations, softmax and
//! the embeddings run in parallel over rows. Outputs agree with the Burn model's at every real
//! position (tests: within 1e-4 on every configuration family).
//!
//! ```
//! use burn::tensor::Device;
//! use mtl_model::{MultitaskConfig, MultitaskTransformer, PackedInput, PackedModel};
//!
//! let config = MultitaskConfig::new(100, 3, 5)
//!     .with_d_model(16).with_nhead(2).with_num_encoder_layers(1).with_dim_feedforward(32);
//! let model = MultitaskTransformer::new(&config, &Device::flex())?;
//! let packed = PackedModel::from_model(&model);
//! let mut input = PackedInput::new();
//! input.push(&[5, 6, 7]).push(&[8, 9]);
//! let out = packed.forward(&input)?;
//! assert_eq!(out.classification_row(1).len(), 3);
//! assert_eq!(out.ner_rows(0).len(), 3 * 5);
//! # Ok::<(), mtl_model::Error>(())
//! ```

mod gemm;

use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::Tensor;
use rayon::prelude::*;

use crate::chars::CharCnn;
use crate::config::{Activation, Pooling};
use crate::encoder::{EncoderLayer, TransformerEncoder, sinusoidal_values};
use crate::error::{Error, Result};
use crate::math;
use crate::model::{MultitaskTransformer, SharedEncoder};
use gemm::{Threads, View, matmul};

/// Rows per parallel task of the row-wise passes (LayerNorm, activations, bias fills).
const ROWS_PER_TASK: usize = 32;

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("converted to f32 above")
}

fn param<const D: usize>(p: &Param<Tensor<D>>) -> Vec<f32> {
    host(p.val())
}

/// A Linear's weights in host memory: `weight` is `[d_in, d_out]`, row-major, as Burn's.
#[derive(Debug, Clone)]
struct HostLinear {
    weight: Vec<f32>,
    bias: Vec<f32>,
    d_in: usize,
    d_out: usize,
}

impl HostLinear {
    fn new(linear: &Linear) -> Self {
        let [d_in, d_out] = linear.weight.dims();
        Self {
            weight: param(&linear.weight),
            bias: linear.bias.as_ref().map_or_else(|| vec![0.0; d_out], param),
            d_in,
            d_out,
        }
    }

    /// `dst = x W + b` (or `dst += x W + b` with `accumulate`) for `rows` rows of `x`.
    fn apply(&self, x: &[f32], rows: usize, dst: &mut [f32], accumulate: bool) {
        let dst = &mut dst[..rows * self.d_out];
        dst.par_chunks_mut(ROWS_PER_TASK * self.d_out)
            .for_each(|chunk| {
                for row in chunk.chunks_exact_mut(self.d_out) {
                    if accumulate {
                        row.iter_mut().zip(&self.bias).for_each(|(y, b)| *y += b);
                    } else {
                        row.copy_from_slice(&self.bias);
                    }
                }
            });
        matmul(
            dst,
            self.d_out,
            View::rows(x, rows, self.d_in, self.d_in),
            View::rows(&self.weight, self.d_in, self.d_out, self.d_out),
            1.0,
            true,
            Threads::All,
        );
    }
}

#[derive(Debug, Clone)]
struct HostNorm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

impl HostNorm {
    fn new(norm: &LayerNorm, eps: f64) -> Self {
        let gamma = param(&norm.gamma);
        let beta = norm
            .beta
            .as_ref()
            .map_or_else(|| vec![0.0; gamma.len()], param);
        Self {
            gamma,
            beta,
            eps: eps as f32,
        }
    }

    /// Normalises every row of `src` (width `gamma.len()`) into `dst`.
    fn apply(&self, src: &[f32], dst: &mut [f32]) {
        let d = self.gamma.len();
        dst.par_chunks_mut(ROWS_PER_TASK * d)
            .zip(src.par_chunks(ROWS_PER_TASK * d))
            .for_each(|(out, inp)| {
                out.copy_from_slice(inp);
                self.rows(out);
            });
    }

    /// Normalises every row of `x` in place.
    fn apply_in_place(&self, x: &mut [f32]) {
        let d = self.gamma.len();
        x.par_chunks_mut(ROWS_PER_TASK * d)
            .for_each(|chunk| self.rows(chunk));
    }

    /// Normalises every row of `chunk` in place, in vector code.
    fn rows(&self, chunk: &mut [f32]) {
        let d = self.gamma.len();
        math::vectorized(
            #[inline(always)]
            || chunk.chunks_exact_mut(d).for_each(|row| self.row(row)),
        );
    }

    /// LayerNorm of one row (biased variance, `eps` inside the root), as Burn's.
    #[inline(always)]
    fn row(&self, x: &mut [f32]) {
        let n = x.len() as f32;
        let mean = math::sum_of(x, |v| v) / n;
        let var = math::sum_of(x, |v| (v - mean) * (v - mean)) / n;
        let inv = 1.0 / (var + self.eps).sqrt();
        for (v, (g, b)) in x.iter_mut().zip(self.gamma.iter().zip(&self.beta)) {
            *v = (*v - mean) * inv * g + b;
        }
    }
}

#[derive(Debug, Clone)]
struct HostLayer {
    qkv: HostLinear,
    out: HostLinear,
    ff_in: HostLinear,
    ff_out: HostLinear,
    norm_attn: HostNorm,
    norm_ff: HostNorm,
    heads: usize,
    pre_norm: bool,
    activation: Activation,
}

impl HostLayer {
    fn new(layer: &EncoderLayer, eps: f64) -> Self {
        Self {
            qkv: HostLinear::new(&layer.qkv),
            out: HostLinear::new(&layer.out),
            ff_in: HostLinear::new(&layer.ff_in),
            ff_out: HostLinear::new(&layer.ff_out),
            norm_attn: HostNorm::new(&layer.norm_attn, eps),
            norm_ff: HostNorm::new(&layer.norm_ff, eps),
            heads: layer.n_heads,
            pre_norm: layer.pre_norm,
            activation: layer.activation,
        }
    }

    /// Applies the layer to `x` (`[tokens, d_model]`, sequences at `offsets`) in place.
    fn forward(&self, x: &mut [f32], offsets: &[usize], scratch: &mut Scratch) {
        let d = self.qkv.d_in;
        let n = x.len() / d;
        let ff = self.ff_in.d_out;
        if self.pre_norm {
            self.norm_attn.apply(x, &mut scratch.normed);
            self.attention(
                &scratch.normed,
                offsets,
                &mut scratch.qkv,
                &mut scratch.context,
            );
            self.out.apply(&scratch.context, n, x, true);
            self.norm_ff.apply(x, &mut scratch.normed);
            self.ff_in
                .apply(&scratch.normed, n, &mut scratch.hidden, false);
            self.activate(&mut scratch.hidden[..n * ff]);
            self.ff_out.apply(&scratch.hidden, n, x, true);
        } else {
            self.attention(x, offsets, &mut scratch.qkv, &mut scratch.context);
            self.out.apply(&scratch.context, n, x, true);
            self.norm_attn.apply_in_place(x);
            self.ff_in.apply(x, n, &mut scratch.hidden, false);
            self.activate(&mut scratch.hidden[..n * ff]);
            self.ff_out.apply(&scratch.hidden, n, x, true);
            self.norm_ff.apply_in_place(x);
        }
    }

    /// Self-attention of every sequence over its own tokens; the heads' outputs land in
    /// `context` (`[tokens, d_model]`); `qkv` is scratch space (`[tokens, 3 * d_model]`).
    fn attention(&self, x: &[f32], offsets: &[usize], qkv: &mut [f32], context: &mut [f32]) {
        let d = self.qkv.d_in;
        let n = x.len() / d;
        self.qkv.apply(x, n, qkv, false);
        let qkv: &[f32] = qkv;
        let heads = self.heads;
        let head_dim = d / heads;
        let scale = 1.0 / (head_dim as f32).sqrt();
        let width = 3 * d;
        split_rows(context, offsets, d)
            .into_par_iter()
            .enumerate()
            .for_each(|(s, context)| {
                let (start, len) = (offsets[s], offsets[s + 1] - offsets[s]);
                if len == 0 {
                    return;
                }
                let rows = &qkv[start * width..(start + len) * width];
                let mut scores = vec![0.0f32; len * len];
                for h in 0..heads {
                    let q = View::rows(&rows[h * head_dim..], len, head_dim, width);
                    let k = View::rows(&rows[d + h * head_dim..], len, head_dim, width);
                    let v = View::rows(&rows[2 * d + h * head_dim..], len, head_dim, width);
                    matmul(&mut scores, len, q, k.t(), scale, false, Threads::One);
                    math::vectorized(
                        #[inline(always)]
                        || {
                            scores
                                .chunks_exact_mut(len)
                                .for_each(math::softmax_in_place)
                        },
                    );
                    matmul(
                        &mut context[h * head_dim..],
                        d,
                        View::rows(&scores, len, len, len),
                        v,
                        1.0,
                        false,
                        Threads::One,
                    );
                }
            });
    }

    fn activate(&self, h: &mut [f32]) {
        let activation = self.activation;
        h.par_chunks_mut(ROWS_PER_TASK * self.ff_in.d_out)
            .for_each(|chunk| {
                math::vectorized(
                    #[inline(always)]
                    || match activation {
                        // The exact (erf) GELU, as Burn's and PyTorch's default.
                        Activation::Gelu => {
                            for v in chunk {
                                *v = math::gelu(*v);
                            }
                        }
                        Activation::GeluTanh => {
                            // sqrt(2 / pi)
                            const K: f32 = 0.797_884_6;
                            for v in chunk {
                                let x = *v;
                                *v = 0.5 * x * (1.0 + libm::tanhf(K * (x + 0.044_715 * x * x * x)));
                            }
                        }
                        Activation::Relu => {
                            for v in chunk {
                                *v = v.max(0.0);
                            }
                        }
                    },
                )
            });
    }
}

/// Buffers reused by every layer of one forward pass.
#[derive(Debug)]
struct Scratch {
    qkv: Vec<f32>,
    context: Vec<f32>,
    hidden: Vec<f32>,
    normed: Vec<f32>,
}

/// Splits `buf` (rows of `width`) into one mutable slice per sequence of `offsets`.
fn split_rows<'a>(buf: &'a mut [f32], offsets: &[usize], width: usize) -> Vec<&'a mut [f32]> {
    let mut out = Vec::with_capacity(offsets.len().saturating_sub(1));
    let mut rest = &mut buf[..offsets.last().copied().unwrap_or(0) * width];
    for pair in offsets.windows(2) {
        let (head, tail) = rest.split_at_mut((pair[1] - pair[0]) * width);
        out.push(head);
        rest = tail;
    }
    out
}

#[derive(Debug, Clone)]
struct HostCharCnn {
    embedding: Vec<f32>,
    embedding_dim: usize,
    buckets: usize,
    kernel_size: usize,
    max_chars: usize,
    conv: HostLinear,
    proj: HostLinear,
}

impl HostCharCnn {
    fn new(cnn: &CharCnn, max_chars: usize) -> Self {
        let [buckets, embedding_dim] = cnn.embedding.weight.dims();
        Self {
            embedding: param(&cnn.embedding.weight),
            embedding_dim,
            buckets,
            kernel_size: cnn.kernel_size,
            max_chars,
            conv: HostLinear::new(&cnn.conv),
            proj: HostLinear::new(&cnn.proj),
        }
    }

    /// Adds every token's character vector to its row of `x`, as [`CharCnn::forward`].
    fn add_to(&self, chars: &[u32], x: &mut [f32]) {
        let (width, dim, k) = (self.max_chars, self.embedding_dim, self.kernel_size);
        let n = chars.len() / width;
        let half = k / 2;
        // Every window of every token: [n * width, k * dim]; outside the word, the padding
        // character 0.
        let mut windows = vec![0.0f32; n * width * k * dim];
        windows
            .par_chunks_mut(width * k * dim)
            .zip(chars.par_chunks(width))
            .for_each(|(out, ids)| {
                for p in 0..width {
                    for i in 0..k {
                        let q = (p + i).checked_sub(half).filter(|&q| q < width);
                        let id = q.map_or(0, |q| ids[q] as usize);
                        out[(p * k + i) * dim..(p * k + i + 1) * dim]
                            .copy_from_slice(&self.embedding[id * dim..(id + 1) * dim]);
                    }
                }
            });
        let filters = self.conv.d_out;
        let mut conv = vec![0.0f32; n * width * filters];
        self.conv.apply(&windows, n * width, &mut conv, false);
        let mut pooled = vec![0.0f32; n * filters];
        pooled
            .par_chunks_mut(filters)
            .zip(conv.par_chunks(width * filters))
            .for_each(|(best, rows)| {
                best.fill(f32::NEG_INFINITY);
                for row in rows.chunks_exact(filters) {
                    best.iter_mut().zip(row).for_each(|(b, v)| *b = b.max(*v));
                }
                best.iter_mut().for_each(|b| *b = b.max(0.0));
            });
        self.proj.apply(&pooled, n, x, true);
    }
}

/// A batch of sequences laid end to end, the input of [`PackedModel::forward`].
#[derive(Debug, Clone)]
pub struct PackedInput {
    ids: Vec<u32>,
    /// Where each sequence starts, then the token count: `[0]` for an empty batch, never empty.
    offsets: Vec<usize>,
    chars: Vec<u32>,
    char_counts: Vec<usize>,
}

impl Default for PackedInput {
    fn default() -> Self {
        Self::new()
    }
}

impl PackedInput {
    /// An empty batch.
    pub fn new() -> Self {
        Self {
            ids: Vec::new(),
            offsets: vec![0],
            chars: Vec::new(),
            char_counts: Vec::new(),
        }
    }

    /// Appends a sequence of token ids (for models without character features).
    pub fn push(&mut self, ids: &[u32]) -> &mut Self {
        self.push_with_chars(ids, &[])
    }

    /// Appends a sequence with the character ids of each token's word, `max_chars` per token
    /// as `mtl-data` encodes them (for models with character features).
    pub fn push_with_chars(&mut self, ids: &[u32], chars: &[u32]) -> &mut Self {
        self.ids.extend_from_slice(ids);
        self.offsets.push(self.ids.len());
        self.chars.extend_from_slice(chars);
        self.char_counts.push(chars.len());
        self
    }

    /// Number of sequences.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Whether the batch has no sequences.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of tokens, all sequences together.
    pub fn tokens(&self) -> usize {
        self.ids.len()
    }
}

/// What [`PackedModel::forward`] returns: both heads' logits, for real tokens only.
#[derive(Debug, Clone)]
pub struct PackedOutput {
    /// Classification logits, `[sequences, num_classes]`, row-major.
    pub classification: Vec<f32>,
    /// NER logits, `[tokens, num_ner_tags]`, row-major, sequence after sequence.
    pub ner: Vec<f32>,
    /// Where each sequence's tokens start (and, last, the token count): `sequences + 1` entries.
    pub offsets: Vec<usize>,
    /// Number of classes.
    pub num_classes: usize,
    /// Number of NER tags.
    pub num_ner_tags: usize,
}

impl PackedOutput {
    /// Sequence `i`'s classification logits.
    pub fn classification_row(&self, i: usize) -> &[f32] {
        &self.classification[i * self.num_classes..(i + 1) * self.num_classes]
    }

    /// Sequence `i`'s NER logits, `[len, num_ner_tags]`.
    pub fn ner_rows(&self, i: usize) -> &[f32] {
        &self.ner[self.offsets[i] * self.num_ner_tags..self.offsets[i + 1] * self.num_ner_tags]
    }
}

/// A [`MultitaskTransformer`] in host memory, for inference on packed sequences (see the
/// [module docs](self)). Build it once per model; it does not follow later changes to the model.
#[derive(Debug, Clone)]
pub struct PackedModel {
    d_model: usize,
    vocab_size: usize,
    max_seq_length: usize,
    embedding_scale: Option<f32>,
    pooling: Pooling,
    token_embedding: Vec<f32>,
    /// `[max_seq_length, d_model]`: the learned table (from its offset on) or the sinusoids,
    /// plus the embedding of token type 0 where the model has token types.
    positions: Vec<f32>,
    embedding_norm: Option<HostNorm>,
    chars: Option<HostCharCnn>,
    layers: Vec<HostLayer>,
    final_norm: Option<HostNorm>,
    classifier: HostLinear,
    ner_head: HostLinear,
    sentence_to_tokens: Option<HostLinear>,
}

impl PackedModel {
    /// Copies `model`'s weights into host memory.
    pub fn from_model(model: &MultitaskTransformer) -> Self {
        let config = model.config();
        let SharedEncoder::Transformer(encoder) = &model.encoder;
        let TransformerEncoder {
            token_embedding,
            position_embedding,
            token_type_embedding,
            embedding_norm,
            char_cnn,
            layers,
            final_norm,
            d_model,
            max_seq_length,
            scale_embedding,
            position_offset,
            ..
        } = encoder;
        let (d_model, max_seq_length) = (*d_model, *max_seq_length);
        let mut positions = match position_embedding {
            Some(table) => {
                let mut rows = param(&table.weight);
                rows.drain(..(*position_offset * d_model).min(rows.len()));
                rows
            }
            None => sinusoidal_values(max_seq_length, d_model),
        };
        // Inputs here are single sentences: every token has type 0, whose embedding is then
        // one more row added to every position.
        if let Some(types) = token_type_embedding {
            let type0 = param(&types.weight);
            for row in positions.chunks_exact_mut(d_model) {
                row.iter_mut()
                    .zip(&type0[..d_model])
                    .for_each(|(p, t)| *p += t);
            }
        }
        let eps = config.layer_norm_eps;
        // Limits from the tables themselves, so that ids are checked against what is there.
        let [vocab_size, _] = token_embedding.weight.dims();
        let max_seq_length = max_seq_length.min(positions.len() / d_model.max(1));
        Self {
            d_model,
            vocab_size,
            max_seq_length,
            embedding_scale: scale_embedding.then(|| (d_model as f64).sqrt() as f32),
            pooling: config.pooling,
            token_embedding: param(&token_embedding.weight),
            positions,
            embedding_norm: embedding_norm.as_ref().map(|n| HostNorm::new(n, eps)),
            chars: char_cnn
                .as_ref()
                .zip(config.char_features.as_ref())
                .map(|(cnn, features)| HostCharCnn::new(cnn, features.max_chars)),
            layers: layers.iter().map(|l| HostLayer::new(l, eps)).collect(),
            final_norm: final_norm.as_ref().map(|n| HostNorm::new(n, eps)),
            classifier: HostLinear::new(&model.classifier),
            ner_head: HostLinear::new(&model.ner_head),
            sentence_to_tokens: model.sentence_to_tokens.as_ref().map(HostLinear::new),
        }
    }

    /// Checks ids, lengths and character ids against the model.
    fn check(&self, input: &PackedInput) -> Result<()> {
        for (s, pair) in input.offsets.windows(2).enumerate() {
            let ids = &input.ids[pair[0]..pair[1]];
            if ids.len() > self.max_seq_length {
                return Err(Error::TooLong {
                    seq: ids.len(),
                    max: self.max_seq_length,
                });
            }
            if let Some((position, &id)) = ids
                .iter()
                .enumerate()
                .find(|(_, id)| **id as usize >= self.vocab_size)
            {
                return Err(Error::TokenId {
                    sequence: s,
                    position,
                    id,
                    vocab_size: self.vocab_size,
                });
            }
            let expected = self.chars.as_ref().map_or(0, |c| c.max_chars * ids.len());
            let given = input.char_counts[s];
            if given != expected {
                return Err(Error::PackedChars {
                    sequence: s,
                    given,
                    expected,
                });
            }
        }
        if let Some(cnn) = &self.chars {
            let mut start = 0;
            for (s, &count) in input.char_counts.iter().enumerate() {
                let chars = &input.chars[start..start + count];
                if let Some(&id) = chars.iter().find(|&&c| c as usize >= cnn.buckets) {
                    return Err(Error::CharId {
                        sequence: s,
                        id,
                        buckets: cnn.buckets,
                    });
                }
                start += count;
            }
        }
        Ok(())
    }

    /// Runs the encoder once over every sequence and both heads on it.
    ///
    /// A sequence of length zero gets a zero sentence vector (classification logits equal the
    /// classifier's bias; the Burn model's max pooling gives -1e9 there instead) and no NER
    /// rows.
    ///
    /// # Errors
    /// A sequence longer than `max_seq_length` ([`Error::TooLong`]), a token id outside the
    /// vocabulary ([`Error::TokenId`]), character ids missing, unexpected or miscounted
    /// ([`Error::PackedChars`]) or outside the buckets ([`Error::CharId`]).
    pub fn forward(&self, input: &PackedInput) -> Result<PackedOutput> {
        self.check(input)?;
        let d = self.d_model;
        let offsets = input.offsets.clone();
        let n = input.ids.len();
        let batch = offsets.len() - 1;

        // Embeddings: token (scaled) + characters + position, in Burn's order.
        let mut x = vec![0.0f32; n * d];
        split_rows(&mut x, &offsets, d)
            .into_par_iter()
            .enumerate()
            .for_each(|(s, rows)| {
                let ids = &input.ids[offsets[s]..offsets[s + 1]];
                for (row, &id) in rows.chunks_exact_mut(d).zip(ids) {
                    let emb = &self.token_embedding[id as usize * d..(id as usize + 1) * d];
                    match self.embedding_scale {
                        Some(scale) => row.iter_mut().zip(emb).for_each(|(r, e)| *r = e * scale),
                        None => row.copy_from_slice(emb),
                    }
                }
            });
        if let Some(cnn) = &self.chars {
            cnn.add_to(&input.chars, &mut x);
        }
        split_rows(&mut x, &offsets, d)
            .into_par_iter()
            .for_each(|rows| {
                for (row, pos) in rows.chunks_exact_mut(d).zip(self.positions.chunks_exact(d)) {
                    row.iter_mut().zip(pos).for_each(|(r, p)| *r += p);
                }
            });
        if let Some(norm) = &self.embedding_norm {
            norm.apply_in_place(&mut x);
        }

        let ff = self.layers.first().map_or(0, |l| l.ff_in.d_out);
        let mut scratch = Scratch {
            qkv: vec![0.0; n * 3 * d],
            context: vec![0.0; n * d],
            hidden: vec![0.0; n * ff],
            // Only pre-norm layers normalise into a copy.
            normed: if self.layers.iter().any(|l| l.pre_norm) {
                vec![0.0; n * d]
            } else {
                Vec::new()
            },
        };
        for layer in &self.layers {
            layer.forward(&mut x, &offsets, &mut scratch);
        }
        if let Some(norm) = &self.final_norm {
            norm.apply_in_place(&mut x);
        }

        // Pooling over each sequence's real tokens.
        let mut pooled = vec![0.0f32; batch * d];
        pooled.par_chunks_mut(d).enumerate().for_each(|(s, out)| {
            let rows = &x[offsets[s] * d..offsets[s + 1] * d];
            let len = offsets[s + 1] - offsets[s];
            if len == 0 {
                return;
            }
            match self.pooling {
                Pooling::First => out.copy_from_slice(&rows[..d]),
                Pooling::Mean => {
                    for row in rows.chunks_exact(d) {
                        out.iter_mut().zip(row).for_each(|(o, v)| *o += v);
                    }
                    out.iter_mut().for_each(|o| *o /= len as f32);
                }
                Pooling::Max => {
                    out.fill(f32::NEG_INFINITY);
                    for row in rows.chunks_exact(d) {
                        out.iter_mut().zip(row).for_each(|(o, v)| *o = o.max(*v));
                    }
                }
            }
        });
        let classes = self.classifier.d_out;
        let mut classification = vec![0.0f32; batch * classes];
        self.classifier
            .apply(&pooled, batch, &mut classification, false);

        let tags = self.ner_head.d_out;
        let mut ner = vec![0.0f32; n * tags];
        match &self.sentence_to_tokens {
            Some(map) => {
                let mut sentence = vec![0.0f32; batch * d];
                map.apply(&pooled, batch, &mut sentence, false);
                split_rows(&mut x, &offsets, d)
                    .into_par_iter()
                    .zip(sentence.par_chunks(d))
                    .for_each(|(rows, add)| {
                        for row in rows.chunks_exact_mut(d) {
                            row.iter_mut().zip(add).for_each(|(r, a)| *r += a);
                        }
                    });
                self.ner_head.apply(&x, n, &mut ner, false);
            }
            None => self.ner_head.apply(&x, n, &mut ner, false),
        }
        Ok(PackedOutput {
            classification,
            ner,
            offsets,
            num_classes: classes,
            num_ner_tags: tags,
        })
    }
}

#[cfg(test)]
mod tests;
