//! Golden test against PyTorch: the fixture `fixtures/golden_small.json` is written by
//! `scripts/torch_golden/make_model_golden.py` (torch 2.9.0) from the seed's architecture
//! (`torch.nn.TransformerEncoder`, batch_first, post-norm, ReLU, sinusoidal positions, embeddings
//! scaled by sqrt(d_model), masked-mean classification head). Its weights are loaded into a
//! `MultitaskTransformer` and both heads must match within 1e-4 in eval mode. Two more
//! fixtures, from `scripts/torch_golden/make_variant_golden.py`, hold the pre-norm / GELU /
//! learned-position variant and max pooling to PyTorch the same way.

use std::collections::HashMap;

use burn::module::Param;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData, Tolerance};
use mtl_model::{
    Activation, MultitaskConfig, MultitaskTransformer, NormPosition, Pooling, PositionalEncoding,
    SharedEncoder,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Weight {
    shape: Vec<usize>,
    data: Vec<f32>,
}

#[derive(Deserialize)]
struct FixtureConfig {
    vocab_size: usize,
    d_model: usize,
    nhead: usize,
    num_layers: usize,
    dim_feedforward: usize,
    num_classes: usize,
    num_ner_tags: usize,
    max_seq_length: usize,
    layer_norm_eps: f64,
}

#[derive(Deserialize)]
struct Fixture {
    torch_version: String,
    config: FixtureConfig,
    weights: HashMap<String, Weight>,
    tokens: Vec<Vec<i64>>,
    padding_mask: Vec<Vec<bool>>,
    encoder_out: Vec<Vec<Vec<f32>>>,
    pooled: Vec<Vec<f32>>,
    cls_logits: Vec<Vec<f32>>,
    ner_logits: Vec<Vec<Vec<f32>>>,
}

struct Weights<'a> {
    map: &'a HashMap<String, Weight>,
    device: &'a Device,
}

impl Weights<'_> {
    fn get(&self, name: &str) -> &Weight {
        self.map
            .get(name)
            .unwrap_or_else(|| panic!("fixture lacks {name}"))
    }
    fn vector(&self, name: &str) -> Param<Tensor<1>> {
        let w = self.get(name);
        Param::from_tensor(Tensor::from_data(
            TensorData::new(w.data.clone(), [w.shape[0]]),
            self.device,
        ))
    }
    /// PyTorch stores Linear weights as `[out, in]`; Burn as `[in, out]`.
    fn linear(&self, name: &str) -> Param<Tensor<2>> {
        let w = self.get(name);
        let t = Tensor::<2>::from_data(
            TensorData::new(w.data.clone(), [w.shape[0], w.shape[1]]),
            self.device,
        );
        Param::from_tensor(t.transpose())
    }
    fn matrix(&self, name: &str) -> Param<Tensor<2>> {
        let w = self.get(name);
        Param::from_tensor(Tensor::from_data(
            TensorData::new(w.data.clone(), [w.shape[0], w.shape[1]]),
            self.device,
        ))
    }
}

fn flat3(v: &[Vec<Vec<f32>>]) -> (Vec<f32>, [usize; 3]) {
    let shape = [v.len(), v[0].len(), v[0][0].len()];
    (v.iter().flatten().flatten().copied().collect(), shape)
}

#[test]
fn matches_pytorch_transformer_encoder() {
    check_fixture(include_str!("fixtures/golden_small.json"), |c| c);
}

/// Pre-norm layers with exact GELU, a final LayerNorm and learned positions
/// (`scripts/torch_golden/make_variant_golden.py`).
#[test]
fn matches_pytorch_pre_norm_gelu_learned_positions() {
    check_fixture(
        include_str!("fixtures/golden_prenorm_gelu_learned.json"),
        |c| {
            c.with_norm(NormPosition::Pre)
                .with_activation(Activation::Gelu)
                .with_positional_encoding(PositionalEncoding::Learned)
        },
    );
}

/// Max pooling over the real tokens (same script).
#[test]
fn matches_pytorch_max_pooling() {
    check_fixture(include_str!("fixtures/golden_maxpool.json"), |c| {
        c.with_pooling(Pooling::Max)
    });
}

/// Loads the fixture's weights into a model of its configuration (`variant` applied) and
/// checks every output within 1e-4.
fn check_fixture(text: &str, variant: impl Fn(MultitaskConfig) -> MultitaskConfig) {
    let fx: Fixture = serde_json::from_str(text).expect("fixture parses");
    assert!(
        fx.torch_version.starts_with("2.9"),
        "fixture made with torch {}",
        fx.torch_version
    );
    let c = &fx.config;
    let device = Device::flex();
    let mut config = variant(
        MultitaskConfig::new(c.vocab_size, c.num_classes, c.num_ner_tags)
            .with_d_model(c.d_model)
            .with_nhead(c.nhead)
            .with_num_encoder_layers(c.num_layers)
            .with_dim_feedforward(c.dim_feedforward)
            .with_max_seq_length(c.max_seq_length),
    );
    config.layer_norm_eps = c.layer_norm_eps;
    let mut model = MultitaskTransformer::new(&config, &device).expect("valid config");

    let w = Weights {
        map: &fx.weights,
        device: &device,
    };
    let SharedEncoder::Transformer(encoder) = &mut model.encoder;
    encoder.token_embedding.weight = w.matrix("emb.weight");
    match &mut encoder.position_embedding {
        Some(table) => table.weight = w.matrix("pos_emb.weight"),
        None => assert!(!fx.weights.contains_key("pos_emb.weight")),
    }
    match &mut encoder.final_norm {
        Some(norm) => {
            norm.gamma = w.vector("enc.norm.weight");
            norm.beta = Some(w.vector("enc.norm.bias"));
        }
        None => assert!(!fx.weights.contains_key("enc.norm.weight")),
    }
    for (i, layer) in encoder.layers.iter_mut().enumerate() {
        let p = format!("enc.layers.{i}.");
        layer.qkv.weight = w.linear(&format!("{p}self_attn.in_proj_weight"));
        layer.qkv.bias = Some(w.vector(&format!("{p}self_attn.in_proj_bias")));
        layer.out.weight = w.linear(&format!("{p}self_attn.out_proj.weight"));
        layer.out.bias = Some(w.vector(&format!("{p}self_attn.out_proj.bias")));
        layer.ff_in.weight = w.linear(&format!("{p}linear1.weight"));
        layer.ff_in.bias = Some(w.vector(&format!("{p}linear1.bias")));
        layer.ff_out.weight = w.linear(&format!("{p}linear2.weight"));
        layer.ff_out.bias = Some(w.vector(&format!("{p}linear2.bias")));
        layer.norm_attn.gamma = w.vector(&format!("{p}norm1.weight"));
        layer.norm_attn.beta = Some(w.vector(&format!("{p}norm1.bias")));
        layer.norm_ff.gamma = w.vector(&format!("{p}norm2.weight"));
        layer.norm_ff.beta = Some(w.vector(&format!("{p}norm2.bias")));
    }
    model.classifier.weight = w.linear("cls.1.weight");
    model.classifier.bias = Some(w.vector("cls.1.bias"));
    model.ner_head.weight = w.linear("ner.1.weight");
    model.ner_head.bias = Some(w.vector("ner.1.bias"));

    let [b, s] = [fx.tokens.len(), fx.tokens[0].len()];
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(fx.tokens.concat(), [b, s]), &device);
    let mask =
        Tensor::<2, Bool>::from_data(TensorData::new(fx.padding_mask.concat(), [b, s]), &device);
    let ner_bias: Vec<f32> = model
        .ner_head
        .bias
        .as_ref()
        .expect("bias")
        .val()
        .into_data()
        .try_to_vec()
        .expect("f32");
    let out = model.forward_joint(tokens, mask);

    // Real positions as PyTorch. Padded positions: PyTorch attends from them to the real keys
    // (values nobody reads); mtl's layers skip them, so the hidden state there is zero and the
    // NER logits are the head's bias.
    let padded = fx.padding_mask.concat();
    let tol = Tolerance::absolute(1e-4);
    let (mut enc, shape) = flat3(&fx.encoder_out);
    for (row, _) in padded.iter().enumerate().filter(|(_, p)| **p) {
        enc[row * c.d_model..(row + 1) * c.d_model].fill(0.0);
    }
    out.hidden
        .into_data()
        .assert_approx_eq::<f32>(&TensorData::new(enc, shape), tol);
    out.pooled
        .into_data()
        .assert_approx_eq::<f32>(&TensorData::new(fx.pooled.concat(), [b, c.d_model]), tol);
    out.classification.into_data().assert_approx_eq::<f32>(
        &TensorData::new(fx.cls_logits.concat(), [b, c.num_classes]),
        tol,
    );
    let (mut ner, shape) = flat3(&fx.ner_logits);
    let tags = c.num_ner_tags;
    for (row, _) in padded.iter().enumerate().filter(|(_, p)| **p) {
        ner[row * tags..(row + 1) * tags].copy_from_slice(&ner_bias);
    }
    assert!(padded.iter().any(|p| *p), "the fixture has padding");
    out.ner
        .into_data()
        .assert_approx_eq::<f32>(&TensorData::new(ner, shape), tol);
}
