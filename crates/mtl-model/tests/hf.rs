//! HuggingFace checkpoints against HuggingFace transformers: tiny random BERT, RoBERTa and
//! DistilBERT models (hidden 32, 2 layers) saved with `save_pretrained`, and the
//! `last_hidden_state` transformers computed for a padded batch of mixed lengths
//! (`scripts/hf_golden/make_hf_golden.py`, versions in each `golden.json`). Also: the packed
//! CPU path on the same encoders, export round trips, and every broken checkpoint's error.

use std::fs;
use std::path::{Path, PathBuf};

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use mtl_model::hf::{self, Family, HfConfig, PretrainedError};
use mtl_model::{Error, MultitaskTransformer, PackedInput, PackedModel, Pooling, SharedEncoder};
use serde::Deserialize;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(name)
}

#[derive(Deserialize)]
struct Golden {
    input_ids: Vec<Vec<i64>>,
    attention_mask: Vec<Vec<i64>>,
    token_type_ids: Option<Vec<Vec<i64>>>,
    last_hidden_state: Vec<Vec<Vec<f32>>>,
}

fn golden(name: &str) -> Golden {
    let text = fs::read_to_string(fixture(name).join("golden.json")).expect("golden.json");
    serde_json::from_str(&text).expect("golden.json parses")
}

fn load(name: &str, device: &Device) -> (MultitaskTransformer, hf::ImportReport) {
    hf::from_pretrained(&fixture(name), 3, 5, Pooling::First, device).expect("imports")
}

fn int2(rows: &[Vec<i64>], device: &Device) -> Tensor<2, Int> {
    let (b, s) = (rows.len(), rows[0].len());
    let flat: Vec<i64> = rows.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [b, s]), device)
}

fn padding_mask(g: &Golden, device: &Device) -> Tensor<2, Bool> {
    let (b, s) = (g.attention_mask.len(), g.attention_mask[0].len());
    // HuggingFace's attention mask (1 = keep) is the negation of ours (true = padding).
    let flat: Vec<bool> = g.attention_mask.iter().flatten().map(|&m| m == 0).collect();
    Tensor::from_data(TensorData::new(flat, [b, s]), device)
}

fn hidden(model: &MultitaskTransformer, g: &Golden, device: &Device) -> Vec<f32> {
    let SharedEncoder::Transformer(encoder) = &model.encoder;
    let types = g.token_type_ids.as_ref().map(|t| int2(t, device));
    encoder
        .forward_typed(
            int2(&g.input_ids, device),
            padding_mask(g, device),
            None,
            types,
        )
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32")
}

/// Largest difference from transformers over the real positions.
fn max_diff(ours: &[f32], g: &Golden) -> f32 {
    let d = g.last_hidden_state[0][0].len();
    let seq = g.input_ids[0].len();
    let mut worst = 0.0f32;
    for (b, rows) in g.last_hidden_state.iter().enumerate() {
        for (s, row) in rows.iter().enumerate() {
            if g.attention_mask[b][s] == 0 {
                continue;
            }
            for (j, want) in row.iter().enumerate() {
                worst = worst.max((ours[(b * seq + s) * d + j] - want).abs());
            }
        }
    }
    worst
}

#[test]
fn hidden_states_match_transformers() {
    let device = Device::flex();
    for name in [
        "bert",
        "roberta",
        "distilbert",
        "bert_prefixed",
        "bert_bf16",
        "bert_bin",
    ] {
        let g = golden(name);
        let (model, report) = load(name, &device);
        let diff = max_diff(&hidden(&model, &g, &device), &g);
        eprintln!("{name}: max |diff| {diff:e}, unused {:?}", report.unused);
        assert!(diff < 1e-5, "{name}: max |diff| {diff} from transformers");
    }
}

#[test]
fn import_reads_the_config_and_reports_unused_tensors() {
    let device = Device::flex();
    let roberta = HfConfig::read(&fixture("roberta")).expect("config");
    assert_eq!(roberta.family, Family::Roberta);
    assert_eq!(
        (roberta.pad_token_id, roberta.position_offset()),
        (1, 2),
        "RoBERTa positions start after the padding id"
    );
    assert_eq!(
        roberta.max_seq_length(),
        roberta.max_position_embeddings - 2
    );
    assert_eq!(roberta.layer_norm_eps, 1e-5);
    assert_eq!(roberta.activation, mtl_model::Activation::GeluTanh);
    let bert = HfConfig::read(&fixture("bert")).expect("config");
    assert_eq!(
        (bert.layer_norm_eps, bert.activation),
        (1e-12, mtl_model::Activation::Gelu)
    );
    let distil = HfConfig::read(&fixture("distilbert")).expect("config");
    assert_eq!(
        (
            distil.hidden_size,
            distil.num_layers,
            distil.type_vocab_size
        ),
        (32, 2, 0)
    );

    let (_, report) = load("bert", &device);
    // 5 embedding tensors, 16 per layer.
    assert_eq!(report.used.len(), 5 + 2 * 16);
    assert!(
        report.unused.iter().any(|k| k.starts_with("pooler.")),
        "pooler listed as unused: {:?}",
        report.unused
    );
    let (_, report) = load("bert_prefixed", &device);
    assert_eq!(report.used.len(), 5 + 2 * 16);
    assert!(
        report.unused.iter().any(|k| k.starts_with("classifier.")),
        "task head listed as unused: {:?}",
        report.unused
    );
    let (_, report) = load("distilbert", &device);
    assert_eq!(report.used.len(), 4 + 2 * 16);
}

/// The packed CPU path on BERT-family encoders (post-norm, exact and tanh GELU, token type 0,
/// RoBERTa's offset positions, the embedding LayerNorm) gives the Burn model's logits.
#[test]
fn packed_model_matches_burn_on_pretrained_encoders() {
    let device = Device::flex();
    for name in ["bert", "roberta", "distilbert"] {
        let g = golden(name);
        for pooling in [Pooling::First, Pooling::Mean] {
            let (model, _) =
                hf::from_pretrained(&fixture(name), 3, 5, pooling, &device).expect("imports");
            let mask = padding_mask(&g, &device);
            let out = model.forward_joint(int2(&g.input_ids, &device), mask);
            let cls = out
                .classification
                .into_data()
                .try_to_vec::<f32>()
                .expect("f32");
            let ner = out.ner.into_data().try_to_vec::<f32>().expect("f32");
            let packed = PackedModel::from_model(&model);
            let mut input = PackedInput::new();
            for (ids, mask) in g.input_ids.iter().zip(&g.attention_mask) {
                let len = mask.iter().filter(|&&m| m == 1).count();
                let ids: Vec<u32> = ids[..len].iter().map(|&i| i as u32).collect();
                input.push(&ids);
            }
            let p = packed.forward(&input).expect("packed forward");
            let seq = g.input_ids[0].len();
            let mut worst = 0.0f32;
            for b in 0..g.input_ids.len() {
                for (x, y) in p.classification_row(b).iter().zip(&cls[b * 3..b * 3 + 3]) {
                    worst = worst.max((x - y).abs());
                }
                let rows = p.ner_rows(b);
                for (x, y) in rows.iter().zip(&ner[b * seq * 5..]) {
                    worst = worst.max((x - y).abs());
                }
            }
            assert!(worst < 1e-4, "{name} {pooling:?}: packed vs Burn {worst}");
        }
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mtl-hf-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn export_then_import_reproduces_the_weights_exactly() {
    let device = Device::flex();
    for name in ["bert", "roberta", "distilbert"] {
        let (model, _) = load(name, &device);
        let dir = temp_dir(&format!("export-{name}"));
        hf::save_encoder(&model, &dir).expect("export");
        let (again, report) = load_from(&dir, &device);
        assert!(
            report.unused.iter().all(|k| k.starts_with(hf::HEAD_PREFIX)),
            "only heads are extra: {:?}",
            report.unused
        );
        let a = hf::hf_tensors(&model).expect("tensors");
        let b = hf::hf_tensors(&again).expect("tensors");
        let encoder = |t: &[hf::NamedTensor]| {
            t.iter()
                .filter(|t| !t.name.starts_with(hf::HEAD_PREFIX))
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(encoder(&a), encoder(&b), "{name}: bit-identical encoder");
        // The exported config is the original one: transformers reads it unchanged.
        let original: serde_json::Value = serde_json::from_str(
            &fs::read_to_string(fixture(name).join("config.json")).expect("config"),
        )
        .expect("json");
        let exported: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(dir.join("config.json")).expect("config"))
                .expect("json");
        assert_eq!(original, exported);
        let _ = fs::remove_dir_all(&dir);
    }
}

fn load_from(dir: &Path, device: &Device) -> (MultitaskTransformer, hf::ImportReport) {
    hf::from_pretrained(dir, 3, 5, Pooling::First, device).expect("imports")
}

fn copy_fixture(name: &str, tag: &str) -> PathBuf {
    let dir = temp_dir(tag);
    for entry in fs::read_dir(fixture(name)).expect("fixture") {
        let entry = entry.expect("entry");
        fs::copy(entry.path(), dir.join(entry.file_name())).expect("copy");
    }
    dir
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).expect("config")).expect("json");
    edit(&mut config);
    fs::write(&path, serde_json::to_string(&config).expect("json")).expect("write");
}

/// Rewrites `dir/model.safetensors` through `edit` on its (name, shape, f32 values).
fn edit_weights(dir: &Path, edit: impl FnOnce(&mut Vec<hf::NamedTensor>)) {
    let path = dir.join("model.safetensors");
    let mut tensors = hf::from_safetensors(&fs::read(&path).expect("weights")).expect("parses");
    edit(&mut tensors);
    fs::write(&path, hf::to_safetensors(&tensors).expect("serializes")).expect("write");
}

fn import_err(dir: &Path) -> PretrainedError {
    match hf::from_pretrained(dir, 3, 5, Pooling::First, &Device::flex()) {
        Err(Error::Pretrained(e)) => e,
        Err(other) => panic!("expected a PretrainedError, got {other}"),
        Ok(_) => panic!("a broken checkpoint in {} was accepted", dir.display()),
    }
}

#[test]
fn broken_checkpoints_give_typed_errors_naming_the_problem() {
    let dir = copy_fixture("bert", "unknown-type");
    edit_config(&dir, |c| c["model_type"] = "gpt2".into());
    let e = import_err(&dir);
    assert!(
        matches!(&e, PretrainedError::UnknownModelType { model_type, .. } if model_type == "gpt2"),
        "{e}"
    );
    assert!(e.to_string().contains("config.json"), "{e}");

    let dir = copy_fixture("bert", "missing-field");
    edit_config(&dir, |c| {
        c.as_object_mut().expect("object").remove("hidden_size");
    });
    let e = import_err(&dir);
    assert!(
        matches!(
            e,
            PretrainedError::Field {
                field: "hidden_size",
                ..
            }
        ),
        "{e}"
    );

    let dir = copy_fixture("bert", "no-eps");
    edit_config(&dir, |c| {
        c.as_object_mut().expect("object").remove("layer_norm_eps");
    });
    let e = import_err(&dir);
    assert!(
        matches!(
            e,
            PretrainedError::Field {
                field: "layer_norm_eps",
                ..
            }
        ),
        "epsilon never falls back to a default: {e}"
    );

    let dir = copy_fixture("bert", "heads");
    edit_config(&dir, |c| c["num_attention_heads"] = 5.into());
    let e = import_err(&dir);
    assert!(
        matches!(&e, PretrainedError::Inconsistent { message, .. } if message.contains("divisible")),
        "{e}"
    );

    let dir = copy_fixture("bert", "activation");
    edit_config(&dir, |c| c["hidden_act"] = "swish".into());
    let e = import_err(&dir);
    assert!(
        matches!(&e, PretrainedError::Activation { activation, .. } if activation == "swish"),
        "{e}"
    );

    let dir = copy_fixture("bert", "missing-tensor");
    edit_weights(&dir, |t| {
        t.retain(|t| t.name != "encoder.layer.1.attention.self.key.weight")
    });
    let e = import_err(&dir);
    assert!(
        matches!(&e, PretrainedError::MissingTensor { name, .. } if name == "encoder.layer.1.attention.self.key.weight"),
        "{e}"
    );

    // A config that says more layers than the file has: the first missing tensor is named.
    let dir = copy_fixture("bert", "more-layers");
    edit_config(&dir, |c| c["num_hidden_layers"] = 3.into());
    let e = import_err(&dir);
    assert!(
        matches!(&e, PretrainedError::MissingTensor { name, .. } if name.starts_with("encoder.layer.2.")),
        "{e}"
    );

    let dir = copy_fixture("bert", "shape");
    edit_config(&dir, |c| c["intermediate_size"] = 48.into());
    let e = import_err(&dir);
    assert!(
        matches!(&e, PretrainedError::TensorShape { name, found, expected, .. }
            if name == "encoder.layer.0.intermediate.dense.weight" && found == &[64, 32] && expected == &[48, 32]),
        "{e}"
    );

    let dir = temp_dir("no-weights");
    fs::copy(fixture("bert").join("config.json"), dir.join("config.json")).expect("copy");
    let e = import_err(&dir);
    assert!(matches!(e, PretrainedError::NoWeights { .. }), "{e}");

    fs::write(dir.join("model.safetensors"), b"not a safetensors file").expect("write");
    let e = import_err(&dir);
    assert!(
        matches!(&e, PretrainedError::Read { path, .. } if path.ends_with("model.safetensors")),
        "{e}"
    );
}
