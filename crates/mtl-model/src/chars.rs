//! Character-level word features: a character CNN over each token's word.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor};

use crate::config::CharFeatures;

/// Character embeddings, a 1-D convolution over each word's characters, the maximum over the
/// word, a ReLU and a linear map to `d_model`.
///
/// The convolution is written as one matrix product over all windows (the `kernel_size`
/// neighbouring character embeddings of every position, concatenated), so that every backend
/// runs it as a single GEMM, forward and backward. Windows reaching past the word's ends read
/// the padding character (id 0), whose embedding is learned like any other.
#[derive(Module, Debug)]
pub struct CharCnn {
    /// Character embeddings, `[buckets, embedding_dim]`.
    pub embedding: Embedding,
    /// The convolution filters, `kernel_size * embedding_dim -> filters`.
    pub conv: Linear,
    /// Map of the word's character vector to the model width, `filters -> d_model`.
    pub proj: Linear,
    /// Convolution window, in characters (odd).
    pub kernel_size: usize,
}

impl CharCnn {
    /// Builds the character CNN of `config` for a model of width `d_model`.
    pub fn new(config: &CharFeatures, d_model: usize, device: &Device) -> Self {
        Self {
            embedding: EmbeddingConfig::new(config.buckets, config.embedding_dim).init(device),
            conv: LinearConfig::new(config.kernel_size * config.embedding_dim, config.filters)
                .init(device),
            proj: LinearConfig::new(config.filters, d_model).init(device),
            kernel_size: config.kernel_size,
        }
    }

    /// One vector per token from the character ids of its word.
    ///
    /// # Shapes
    /// - `chars`: `[batch, seq, max_chars]`
    /// - output: `[batch, seq, d_model]`
    pub fn forward(&self, chars: Tensor<3, Int>) -> Tensor<3> {
        let [batch, seq, width] = chars.dims();
        let words = batch * seq;
        let device = chars.device();
        // Positions outside the word read the padding character, as do the padded ends of
        // short words; padding the ids rather than the embeddings keeps the copy small.
        let half = self.kernel_size / 2;
        let chars = if half > 0 {
            let pad = Tensor::<3, Int>::zeros([batch, seq, half], &device);
            Tensor::cat(vec![pad.clone(), chars, pad], 2)
        } else {
            chars
        };
        let x = self
            .embedding
            .forward(chars.reshape([words, width + 2 * half])); // [words, width + 2 half, dim]
        let [_, _, dim] = x.dims();
        // [words, width, kernel_size * dim]: window i of position p is x[p + i - half].
        let windows: Vec<Tensor<3>> = (0..self.kernel_size)
            .map(|i| x.clone().narrow(1, i, width))
            .collect();
        let windows = Tensor::cat(windows, 2).reshape([words * width, self.kernel_size * dim]);
        let filters = self.conv.forward(windows);
        let [_, n_filters] = filters.dims();
        let pooled = relu(
            filters
                .reshape([words, width, n_filters])
                .max_dim(1)
                .reshape([words, n_filters]),
        );
        let [_, d_model] = self.proj.weight.dims();
        self.proj.forward(pooled).reshape([batch, seq, d_model])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn floats<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().expect("f32 data")
    }

    /// The CNN against a direct loop over words, positions and windows.
    #[test]
    fn matches_a_direct_convolution() {
        let device = Device::flex();
        let config = CharFeatures {
            buckets: 11,
            max_chars: 5,
            embedding_dim: 3,
            filters: 4,
            kernel_size: 3,
        };
        let cnn = CharCnn::new(&config, 6, &device);
        let ids: Vec<i64> = vec![1, 2, 3, 0, 0, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 9, 10, 1, 2, 3];
        let chars = Tensor::<3, Int>::from_data(TensorData::new(ids.clone(), [2, 2, 5]), &device);
        let got = floats(cnn.forward(chars));

        let emb = floats(cnn.embedding.weight.val()); // [11, 3]
        let conv_w = floats(cnn.conv.weight.val()); // [9, 4]
        let conv_b = floats(cnn.conv.bias.clone().expect("bias").val());
        let proj_w = floats(cnn.proj.weight.val()); // [4, 6]
        let proj_b = floats(cnn.proj.bias.clone().expect("bias").val());
        for word in 0..4 {
            let mut best = [f32::NEG_INFINITY; 4];
            for p in 0..5 {
                for (f, best) in best.iter_mut().enumerate() {
                    let mut acc = conv_b[f];
                    for i in 0..3 {
                        let q = p as isize + i as isize - 1;
                        // Outside the word: the padding character 0.
                        let id = if (0..5).contains(&q) {
                            ids[word * 5 + q as usize] as usize
                        } else {
                            0
                        };
                        for e in 0..3 {
                            acc += emb[id * 3 + e] * conv_w[(i * 3 + e) * 4 + f];
                        }
                    }
                    *best = best.max(acc);
                }
            }
            for o in 0..6 {
                let want = proj_b[o]
                    + (0..4)
                        .map(|f| best[f].max(0.0) * proj_w[f * 6 + o])
                        .sum::<f32>();
                let have = got[word * 6 + o];
                assert!(
                    (want - have).abs() < 1e-4,
                    "word {word} out {o}: {want} vs {have}"
                );
            }
        }
    }
}
