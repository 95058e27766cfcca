//! `mtl-bench --config small|seed [--batch 32] [--seq 64] [--steps 10] [--warmup 2] [--device cpu]
//! [--devices LIST] [--skip-train]`
//! `mtl-bench --pretrained DIR --data SPLIT_DIR [--batch 32] [--batches 4] [--classes 7]
//! [--tags 72] [--freeze-embeddings] [--steps 10] [--warmup 2] [--device cpu] [--devices LIST]
//! [--skip-train]`
//!
//! The workload of `shared/bench/torch_ref.py`, through mtl's own model, loss and optimizer:
//! vocabulary 1000, 3 classes, 5 tags, random token ids with lengths uniform in `seq/2..=seq`
//! padded to `seq`; a training step is one task's forward (alternating classification / NER),
//! the masked loss, backward and an AdamW step; inference is one encoder pass feeding both heads.
//! Median of `steps` timings after `warmup` steps. Prints one JSON line with the reference's keys.
//!
//! With `--pretrained`, the workload of `shared/bench/hf_ref.py` instead: a HuggingFace
//! checkpoint directory (config.json, weights, tokenizer.json) imported into the multitask model
//! (first-token pooling, `classes` classes, `tags` tags), the first `batch * batches` sentences
//! of `SPLIT_DIR/seq.in` tokenised once (first sub-token tagged, padded to the longest of each
//! batch, at most 128 tokens), random labels and tags from a fixed seed; a training step is one
//! joint forward feeding both heads, the sum of both losses, backward and AdamW (lr 5e-5, weight
//! decay 0.01); inference as above. The JSON line also splits the training step into its
//! forward (with the loss), backward and optimizer parts (medians of each).
//!
//! Training runs on the devices `mtl train --device DEVICE` uses (on the CPU one data-parallel
//! replica per thread, at most one per 8 examples), or on `--devices` (`cpu` for one replica);
//! the JSON line says how many (`replicas`). Inference is one device.
//!
//! Thread count: `RAYON_NUM_THREADS` (set by `cargo xtask bench --threads N`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::{Bool, Device, Int, Tensor};
use mtl::data::{Encoded, Encoder, Example, MultitaskBatcher, TextEncoder};
use mtl::model::{MultitaskConfig, MultitaskTransformer, PackedInput, PackedModel, Pooling, Task};
use mtl::train::optim::{AdamW, AdamWConfig, LrScales};
use mtl::train::parallel::token_rows;
use mtl::train::sampler::Pick;
use mtl::train::{DataParallel, LossWeights};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// mimalloc reuses freed tensor buffers; glibc would mmap and unmap each large one, paying
/// page faults on every step (measured with `cargo xtask bench`, see the README and
/// `mtl::alloc`).
#[global_allocator]
static GLOBAL: mtl::alloc::MiMalloc = mtl::alloc::MiMalloc;

struct Args {
    config: String,
    batch: usize,
    seq: usize,
    steps: usize,
    warmup: usize,
    device: String,
    /// Inference only (for profiling); the training keys are then null.
    skip_train: bool,
    /// A HuggingFace checkpoint directory: the workload of `hf_ref.py` instead of `config`.
    pretrained: Option<PathBuf>,
    /// The JointBERT split whose `seq.in` feeds the pretrained workload.
    data: Option<PathBuf>,
    /// Distinct batches of the pretrained workload.
    batches: usize,
    classes: usize,
    tags: usize,
    /// Keep the token, position and token-type embeddings fixed (as `freeze_embeddings`).
    freeze_embeddings: bool,
    /// AdamW updates only the embedding rows a batch used (as `lazy_embeddings`).
    lazy_embeddings: bool,
    /// Training devices (`cpu,cpu`: two data-parallel replicas, `cpu`: one); default what
    /// `mtl train --device DEVICE` trains on.
    devices: Option<String>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        config: "small".into(),
        batch: 32,
        seq: 64,
        steps: 10,
        warmup: 2,
        device: "cpu".into(),
        skip_train: false,
        pretrained: None,
        data: None,
        batches: 4,
        classes: 7,
        tags: 72,
        freeze_embeddings: false,
        lazy_embeddings: false,
        devices: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--config" => a.config = value()?,
            "--batch" => a.batch = value()?.parse()?,
            "--seq" => a.seq = value()?.parse()?,
            "--steps" => a.steps = value()?.parse()?,
            "--warmup" => a.warmup = value()?.parse()?,
            "--device" => a.device = value()?,
            "--devices" => a.devices = Some(value()?),
            "--skip-train" => a.skip_train = true,
            "--pretrained" => a.pretrained = Some(value()?.into()),
            "--data" => a.data = Some(value()?.into()),
            "--batches" => a.batches = value()?.parse()?,
            "--classes" => a.classes = value()?.parse()?,
            "--tags" => a.tags = value()?.parse()?,
            "--freeze-embeddings" => a.freeze_embeddings = true,
            "--lazy-embeddings" => a.lazy_embeddings = true,
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

/// `b` random examples of `s` tokens at most (the first exactly `s`, so that a batch pads to
/// `s` as the reference's does): token ids in `1..vocab`, 3 classes, 5 tags on every token.
fn make_items(b: usize, s: usize, vocab: u32, rng: &mut StdRng) -> Vec<Encoded> {
    (0..b)
        .map(|i| {
            let len = if i == 0 {
                s
            } else {
                rng.random_range(s / 2..=s)
            };
            Encoded {
                ids: (0..len).map(|_| rng.random_range(1..vocab)).collect(),
                word_ids: (0..len).map(Some).collect(),
                label_target: rng.random_range(0..3i64),
                tag_targets: (0..len).map(|_| rng.random_range(0..5i64)).collect(),
                has_label: true,
                has_tags: true,
                truncated: false,
                chars: Vec::new(),
            }
        })
        .collect()
}

/// Times `a.steps` training steps after `a.warmup` on `a.devices` (else as `mtl train
/// --device` trains):
/// batch `i % batches.len()`, task `pick(i)`, both losses weighted 1, AdamW at `lr` with weight
/// decay 0.01. Returns the trained model (plain device), the medians of the whole step, of its
/// forward and backward passes (all replicas) and of the optimizer step, and the replica count.
fn time_training(
    a: &Args,
    model: MultitaskTransformer,
    batches: &[Vec<Encoded>],
    batcher: &MultitaskBatcher,
    pick: impl Fn(usize) -> Pick,
    lr: f64,
) -> Result<(MultitaskTransformer, [Option<f64>; 3], usize)> {
    // As `mtl train`: `--device cpu` trains one replica per core.
    let devices = match &a.devices {
        Some(list) => mtl::device::parse_list(list)?,
        None => mtl::device::training_devices(&a.device, a.batch)?,
    };
    let parallel = DataParallel::new(&devices)?;
    let ad = devices[0].clone().autodiff();
    // As the trainer: through the plain device, so parameters are leaves under autodiff.
    let mut model = model.valid().to_device(&ad).train();
    let mut opt = AdamW::new(AdamWConfig {
        weight_decay: 0.01,
        lazy_embeddings: a.lazy_embeddings,
        ..AdamWConfig::default()
    });
    // As the trainer: token-embedding rows updated when read (exact), and on the CPU the
    // backward pass computes the gradient of the batch's rows only.
    opt.defer_token_rows();
    let cut_token_table = mtl::model::is_cpu_backend(&devices[0]);
    let mut phases: [Vec<f64>; 3] = Default::default();
    let train_steps = if a.skip_train { 0 } else { a.warmup + a.steps };
    for i in 0..train_steps {
        let items: Vec<&Encoded> = batches[i % batches.len()].iter().collect();
        let t = Instant::now();
        let weights = LossWeights {
            classification: 1.0,
            ner: 1.0,
        };
        model = opt.catch_up(model, Some(&token_rows(&items, batcher.pad_id)));
        let step = parallel.step(
            &model,
            &items,
            pick(i),
            weights,
            i as u64,
            batcher,
            cut_token_table,
        );
        let grads = t.elapsed().as_secs_f64();
        let (next, _) = opt.step_scaled(
            lr,
            model,
            step.parts,
            step.token_rows.as_deref(),
            None,
            &LrScales::uniform(),
        );
        model = next;
        let total = t.elapsed().as_secs_f64();
        if i >= a.warmup {
            phases[0].push(total);
            phases[1].push(grads);
            phases[2].push(total - grads);
        }
    }
    Ok((model.valid(), phases.map(median), parallel.replicas()))
}

/// The batches as the packed path takes them (token rows) and as the Burn model does.
fn inference_inputs<'a>(
    batches: &'a [Vec<Encoded>],
    batcher: &MultitaskBatcher,
    device: &Device,
) -> (Vec<Vec<&'a [u32]>>, Vec<BurnInput>) {
    let rows = batches
        .iter()
        .map(|b| b.iter().map(|e| e.ids.as_slice()).collect())
        .collect();
    let inputs = batches
        .iter()
        .map(|b| {
            let batch = batcher.batch(&b.iter().collect::<Vec<_>>(), device);
            (batch.tokens, batch.padding_mask, batch.chars)
        })
        .collect();
    (rows, inputs)
}

/// One batch for the Burn model on the plain device: tokens, padding mask, character ids.
type BurnInput = (Tensor<2, Int>, Tensor<2, Bool>, Option<Tensor<3, Int>>);

/// Inference as `mtl predict` runs it, batch after batch (`rows` and `inputs` are the same
/// batches): on the CPU device the packed path (weights copied to host memory once, padding
/// skipped), elsewhere the Burn model, which is also timed on its own. Each engine runs in a
/// loop of its own, as a process serving with one of them would. Medians of `a.steps` steps
/// after `a.warmup`: `(product path, Burn model, name of the product path)`.
fn time_inference(
    model: &MultitaskTransformer,
    a: &Args,
    rows: &[Vec<&[u32]>],
    inputs: &[BurnInput],
) -> Result<(f64, f64, &'static str)> {
    let packed = mtl::device::is_cpu(&a.device).then(|| PackedModel::from_model(model));
    let mut infer_times = Vec::new();
    if let Some(packed) = &packed {
        for i in 0..a.warmup + a.steps {
            let t = Instant::now();
            let mut input = PackedInput::new();
            for row in &rows[i % rows.len()] {
                input.push(row);
            }
            let out = packed.forward(&input)?;
            std::hint::black_box(&out);
            if i >= a.warmup {
                infer_times.push(t.elapsed().as_secs_f64());
            }
        }
    }
    let mut burn_times = Vec::new();
    for i in 0..a.warmup + a.steps {
        let (tokens, mask, chars) = inputs[i % inputs.len()].clone();
        let t = Instant::now();
        let out = model.forward_joint_with(tokens, mask, chars);
        let _ = out.classification.into_data();
        let _ = out.ner.into_data();
        if i >= a.warmup {
            burn_times.push(t.elapsed().as_secs_f64());
        }
    }
    let burn_infer = median(burn_times.clone()).context("no inference steps")?;
    if infer_times.is_empty() {
        infer_times = burn_times;
    }
    let infer = median(infer_times).context("no inference steps")?;
    let path = if packed.is_some() { "packed" } else { "burn" };
    Ok((infer, burn_infer, path))
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn round(x: f64, digits: i32) -> f64 {
    (x * 10f64.powi(digits)).round() / 10f64.powi(digits)
}

fn main() -> Result<()> {
    mtl::alloc::keep_freed_memory();
    mtl::model::denormals::flush_to_zero();
    let a = parse_args()?;
    if let Some(dir) = &a.pretrained {
        return pretrained(&a, dir);
    }
    let (d_model, nhead, layers, ff) = match a.config.as_str() {
        "small" => (128, 4, 2, 512),
        "seed" => (512, 8, 6, 2048),
        other => bail!("unknown config {other}: small or seed"),
    };
    let device = mtl::device::parse(&a.device)?;
    device.seed(0);
    let config = MultitaskConfig::new(1000, 3, 5)
        .with_d_model(d_model)
        .with_nhead(nhead)
        .with_num_encoder_layers(layers)
        .with_dim_feedforward(ff)
        .with_dropout(0.1);
    let model = MultitaskTransformer::new(&config, &device)?;
    let params = model.num_params();
    let mut rng = StdRng::seed_from_u64(0);
    let batches: Vec<Vec<Encoded>> = (0..4)
        .map(|_| make_items(a.batch, a.seq, 1000, &mut rng))
        .collect();
    let batcher = MultitaskBatcher::new(0);
    // Alternating tasks, as the reference.
    let pick = |i: usize| {
        Pick::One(if i.is_multiple_of(2) {
            Task::Classification
        } else {
            Task::Ner
        })
    };
    let (model, [train, _, _], replicas) =
        time_training(&a, model, &batches, &batcher, pick, 2e-5)?;
    let (rows, inputs) = inference_inputs(&batches, &batcher, &device);
    let (infer, burn_infer, infer_path) = time_inference(&model, &a, &rows, &inputs)?;
    let threads = threads();
    println!(
        "{}",
        serde_json::json!({
            "impl": format!("mtl-burn-0.22.1-{}", a.device), "config": a.config, "params": params,
            "batch": a.batch, "seq": a.seq, "threads": threads, "replicas": replicas,
            "train_step_s": train.map(|t| round(t, 5)),
            "train_sent_per_s": train.map(|t| round(a.batch as f64 / t, 1)),
            "infer_step_s": round(infer, 5), "infer_sent_per_s": round(a.batch as f64 / infer, 1),
            "peak_rss_mib": round(peak_rss_mib(), 1),
            "infer_path": infer_path,
            "infer_burn_sent_per_s": round(a.batch as f64 / burn_infer, 1),
        })
    );
    Ok(())
}

/// The first `need` sentences of `SPLIT_DIR/seq.in`, encoded, with random sentence labels and
/// a random tag on each word's first sub-token (as `hf_ref.py` draws them).
fn pretrained_items(a: &Args, encoder: &Encoder, data: &Path, need: usize) -> Result<Vec<Encoded>> {
    let path = data.join("seq.in");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() < need {
        bail!(
            "{} has {} sentences, {need} needed",
            path.display(),
            lines.len()
        );
    }
    let mut rng = StdRng::seed_from_u64(0);
    let mut items = Vec::with_capacity(need);
    for (i, line) in lines[..need].iter().enumerate() {
        let (mut e, _, _) = encoder
            .encode(&Example::from_text(line))
            .with_context(|| format!("{}:{}", path.display(), i + 1))?;
        let mut prev = None;
        for (target, &word) in e.tag_targets.iter_mut().zip(&e.word_ids) {
            if word.is_some() && word != prev {
                *target = rng.random_range(0..a.tags as i64);
            }
            prev = word;
        }
        e.label_target = rng.random_range(0..a.classes as i64);
        e.has_label = true;
        e.has_tags = true;
        items.push(e);
    }
    Ok(items)
}

/// The workload of `shared/bench/hf_ref.py` (see the module documentation).
fn pretrained(a: &Args, dir: &Path) -> Result<()> {
    let data = a
        .data
        .as_deref()
        .context("--pretrained needs --data SPLIT_DIR (a directory holding seq.in)")?;
    if a.batch == 0 || a.batches == 0 {
        bail!("--batch and --batches must be positive");
    }
    let device = mtl::device::parse(&a.device)?;
    device.seed(0);
    let (model, report) =
        mtl::model::hf::from_pretrained(dir, a.classes, a.tags, Pooling::First, &device)
            .with_context(|| format!("cannot import {}", dir.display()))?;
    eprintln!(
        "imported {} tensors from {} ({} unused)",
        report.used.len(),
        report.path.display(),
        report.unused.len()
    );
    let text = TextEncoder::from_tokenizer_file(&dir.join("tokenizer.json"))?;
    let encoder = Encoder::build(&[], text, 128)?;
    let need = a.batch * a.batches;
    let items = pretrained_items(a, &encoder, data, need)?;
    let tokens: usize = items.iter().map(Encoded::len).sum();
    let params = model.num_params();

    let batcher = MultitaskBatcher::for_encoder(&encoder);
    let batches: Vec<Vec<Encoded>> = items.chunks(a.batch).map(<[Encoded]>::to_vec).collect();
    let model = if a.freeze_embeddings {
        model.freeze_embeddings()
    } else {
        model
    };
    let (model, [train, grads, optim], replicas) =
        time_training(a, model, &batches, &batcher, |_| Pick::Both, 5e-5)?;
    let (rows, inputs) = inference_inputs(&batches, &batcher, &device);
    let (infer, burn_infer, infer_path) = time_inference(&model, a, &rows, &inputs)?;
    // The directory's own name, as `hf_ref.py` prints it (`.` and the like: the real one).
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .or_else(|| {
            let real = dir.canonicalize().ok()?;
            Some(real.file_name()?.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    println!(
        "{}",
        serde_json::json!({
            "impl": format!("mtl-burn-0.22.1-{}", a.device), "config": format!("pretrained:{name}"),
            "params": params, "batch": a.batch, "seq": round(tokens as f64 / need as f64, 1),
            "threads": threads(), "replicas": replicas,
            "train_step_s": train.map(|t| round(t, 5)),
            "train_sent_per_s": train.map(|t| round(a.batch as f64 / t, 1)),
            "infer_step_s": round(infer, 5), "infer_sent_per_s": round(a.batch as f64 / infer, 1),
            "peak_rss_mib": round(peak_rss_mib(), 1),
            "infer_path": infer_path,
            "infer_burn_sent_per_s": round(a.batch as f64 / burn_infer, 1),
            "frozen_embeddings": a.freeze_embeddings,
            "lazy_embeddings": a.lazy_embeddings,
            "train_grads_s": grads.map(|t| round(t, 5)),
            "train_optim_s": optim.map(|t| round(t, 5)),
        })
    );
    Ok(())
}
