//! One fine-tuning step of a tiny pretrained BERT with both heads against PyTorch +
//! transformers (`scripts/hf_golden/make_hf_golden.py`, fixture `bert_step.json` beside the
//! model fixtures of mtl-model): masked cross-entropy of both heads, backward (the exact GELU
//! derivative), AdamW with weight decay on matrices only. Loss and every updated parameter
//! within 1e-5.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use mtl_model::hf::{self, HfConfig};
use mtl_model::{MultitaskTransformer, Pooling, SharedEncoder};
use mtl_train::loss::{cross_entropy, token_cross_entropy};
use mtl_train::optim::{AdamW, AdamWConfig};
use serde::Deserialize;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../mtl-model/tests/fixtures/hf")
}

#[derive(Deserialize)]
struct Step {
    input_ids: Vec<Vec<i64>>,
    attention_mask: Vec<Vec<i64>>,
    token_type_ids: Vec<Vec<i64>>,
    labels: Vec<i64>,
    tags: Vec<Vec<i64>>,
    loss: f32,
}

/// `name -> (shape, values)` of a safetensors file of F32 tensors.
fn read_tensors(path: &Path) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    hf::from_safetensors(&fs::read(path).expect("fixture"))
        .expect("safetensors")
        .into_iter()
        .map(|t| (t.name, (t.shape, t.values)))
        .collect()
}

/// The largest difference between `got` and `want` (by name, same shapes, every tensor
/// compared), less `slack(name)`, and where it is.
fn worst_difference(
    got: Vec<hf::NamedTensor>,
    want: &HashMap<String, (Vec<usize>, Vec<f32>)>,
    slack: impl Fn(&str) -> f32,
) -> (f32, String) {
    assert_eq!(got.len(), want.len(), "every tensor compared");
    let mut worst = (0.0f32, String::new());
    for t in got {
        let (shape, values) = want
            .get(&t.name)
            .unwrap_or_else(|| panic!("{} missing", t.name));
        assert_eq!(&t.shape, shape, "{}", t.name);
        let slack = slack(&t.name);
        for (x, y) in t.values.iter().zip(values) {
            if (x - y).abs() - slack > worst.0 {
                worst = ((x - y).abs() - slack, t.name.clone());
            }
        }
    }
    worst
}

fn int2(rows: &[Vec<i64>], device: &Device) -> Tensor<2, Int> {
    let (b, s) = (rows.len(), rows[0].len());
    let flat: Vec<i64> = rows.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [b, s]), device)
}

fn set_head(
    linear: &mut burn::nn::Linear,
    heads: &HashMap<String, (Vec<usize>, Vec<f32>)>,
    name: &str,
    device: &Device,
) {
    let (shape, w) = &heads[&format!("{name}.weight")];
    let (_, b) = &heads[&format!("{name}.bias")];
    let w = Tensor::<2>::from_data(TensorData::new(w.clone(), [shape[0], shape[1]]), device);
    linear.weight = Param::from_tensor(w.transpose());
    linear.bias = Some(Param::from_tensor(Tensor::<1>::from_data(
        TensorData::new(b.clone(), [b.len()]),
        device,
    )));
}

#[test]
fn one_fine_tuning_step_matches_pytorch() {
    let device = Device::flex();
    let dir = fixtures();
    let step: Step = serde_json::from_str(
        &fs::read_to_string(dir.join("bert_step.json")).expect("bert_step.json"),
    )
    .expect("parses");
    let hf_config = HfConfig::read(&dir.join("bert")).expect("config");
    let config = hf_config
        .to_model_config(3, 5, Pooling::First)
        .with_dropout(0.0);
    let model = MultitaskTransformer::new(&config, &device).expect("model");
    let (mut model, _) = hf::load_encoder(&dir.join("bert"), model).expect("imports");
    let heads = read_tensors(&dir.join("bert_step/heads_init.safetensors"));
    set_head(&mut model.classifier, &heads, "cls", &device);
    set_head(&mut model.ner_head, &heads, "ner", &device);

    let ad = device.clone().autodiff();
    let model = model.valid().to_device(&ad).train();
    let tokens = int2(&step.input_ids, &ad);
    let [b, s] = tokens.dims();
    let mask: Vec<bool> = step
        .attention_mask
        .iter()
        .flatten()
        .map(|&m| m == 0)
        .collect();
    let mask = Tensor::<2, Bool>::from_data(TensorData::new(mask, [b, s]), &ad);
    let SharedEncoder::Transformer(encoder) = &model.encoder;
    let hidden = encoder.forward_typed(
        tokens,
        mask.clone(),
        None,
        Some(int2(&step.token_type_ids, &ad)),
    );
    let cls = model.classification_head(hidden.clone(), mask.clone());
    let ner = model.ner_head(hidden, mask);
    let labels = Tensor::<1, Int>::from_data(TensorData::new(step.labels.clone(), [b]), &ad);
    let loss =
        cross_entropy(cls, labels).mean + token_cross_entropy(ner, int2(&step.tags, &ad)).mean;
    let value = loss.clone().into_scalar::<f32>();
    assert!(
        (value - step.loss).abs() < 1e-5,
        "loss {value} vs PyTorch {}",
        step.loss
    );
    let grads = GradientsParams::from_grads(loss.backward(), &model);

    // The gradients themselves (the first AdamW step only moves each weight by about
    // lr * sign(g), so the update alone would not test their size): the model with every
    // parameter replaced by its gradient, named as HuggingFace names the parameters.
    struct ToGrad<'a>(&'a GradientsParams);
    impl ModuleMapper for ToGrad<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, value, mapper) = param.consume();
            let grad = self
                .0
                .get::<D>(id)
                .unwrap_or_else(|| value.inner().zeros_like());
            Param::from_mapped_value(id, Tensor::from_inner(grad), mapper)
        }
    }
    let as_grads = model.clone().map(&mut ToGrad(&grads)).valid();
    let mut want_grads = read_tensors(&dir.join("bert_step/grads.safetensors"));
    rename_heads(&mut want_grads);
    let worst = worst_difference(
        hf::hf_tensors(&as_grads).expect("tensors"),
        &want_grads,
        |_| 0.0,
    );
    eprintln!("largest gradient difference: {:e} ({})", worst.0, worst.1);
    assert!(
        worst.0 < 1e-5,
        "gradient of {} differs by {}",
        worst.1,
        worst.0
    );

    let mut opt = AdamW::new(AdamWConfig {
        weight_decay: 0.01,
        ..AdamWConfig::default()
    });
    let (model, _) = opt.step(1e-3, model, grads, None);
    let model = model.valid();

    let mut want = read_tensors(&dir.join("bert_step/updated.safetensors"));
    want.extend(read_tensors(
        &dir.join("bert_step/heads_updated.safetensors"),
    ));
    rename_heads(&mut want);
    // The key bias has no true gradient (a constant added to every score of a query leaves
    // its softmax unchanged): both sides hold rounding noise near AdamW's eps, and the first
    // step moves each value by an arbitrary fraction of lr, in either direction. Held to 2 lr.
    let worst = worst_difference(hf::hf_tensors(&model).expect("tensors"), &want, |name| {
        if name.ends_with("attention.self.key.bias") {
            2e-3
        } else {
            0.0
        }
    });
    eprintln!(
        "largest difference after one step: {:e} ({})",
        worst.0, worst.1
    );
    assert!(worst.0 < 1e-5, "{} differs by {}", worst.1, worst.0);
}

/// The fixture's head names (`cls.*`, `ner.*`) as [`hf::hf_tensors`] names them.
fn rename_heads(tensors: &mut HashMap<String, (Vec<usize>, Vec<f32>)>) {
    for (theirs, ours) in [("cls", "classifier"), ("ner", "ner_head")] {
        for what in ["weight", "bias"] {
            if let Some(v) = tensors.remove(&format!("{theirs}.{what}")) {
                tensors.insert(format!("{}{ours}.{what}", hf::HEAD_PREFIX), v);
            }
        }
    }
}
