//! End-to-end training tests on a small synthetic dataset: the model learns under every sampling
//! strategy, training is reproducible, and resume equals an unbroken run.

use burn::tensor::Device;
use mtl_data::{CharSpec, Encoder};
use mtl_model::{CharFeatures, MultitaskConfig, MultitaskTransformer};
use mtl_train::sampler::SamplingStrategy;
use mtl_train::trainer::{ProgressMode, TrainConfig};
use mtl_train::{
    InferenceEngine, MultitaskDataset, PredictOptions, evaluate, fit, predict, resume,
};

/// Intent from the verb, slots from the city / day words; 48 sentences.
fn synthetic() -> MultitaskDataset {
    let verbs = [
        ("fly", "travel"),
        ("weather", "forecast"),
        ("call", "phone"),
    ];
    let cities = ["paris", "new york", "rome", "san jose"];
    let days = ["monday", "friday"];
    let mut texts = Vec::new();
    let mut labels = Vec::new();
    let mut tags = Vec::new();
    for (verb, intent) in verbs {
        for city in cities {
            for day in days {
                for order in 0..2 {
                    let mut words = vec![verb.to_string()];
                    let mut t = vec!["O".to_string()];
                    let add =
                        |span: &str, ty: &str, words: &mut Vec<String>, t: &mut Vec<String>| {
                            for (i, w) in span.split(' ').enumerate() {
                                words.push(w.to_string());
                                t.push(format!("{}-{ty}", if i == 0 { "B" } else { "I" }));
                            }
                        };
                    if order == 0 {
                        words.push("to".into());
                        t.push("O".into());
                        add(city, "city", &mut words, &mut t);
                        words.push("on".into());
                        t.push("O".into());
                        add(day, "day", &mut words, &mut t);
                    } else {
                        add(day, "day", &mut words, &mut t);
                        words.push("in".into());
                        t.push("O".into());
                        add(city, "city", &mut words, &mut t);
                    }
                    texts.push(words.join(" "));
                    labels.push(intent);
                    tags.push(t);
                }
            }
        }
    }
    let text_refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let label_refs: Vec<Option<&str>> = labels.iter().map(|l| Some(*l)).collect();
    let tag_refs: Vec<Option<Vec<&str>>> = tags
        .iter()
        .map(|t| Some(t.iter().map(String::as_str).collect()))
        .collect();
    MultitaskDataset::new(&text_refs, &label_refs, &tag_refs).expect("valid data")
}

/// Burn's CPU backend has one random generator per process (dropout, initialisation): tests that
/// compare runs must not train concurrently.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn small_model(encoder: &Encoder, device: &Device) -> MultitaskTransformer {
    let config = MultitaskConfig::new(
        encoder.text.vocab_size(),
        encoder.labels.len(),
        encoder.tags.len(),
    )
    .with_d_model(32)
    .with_nhead(2)
    .with_num_encoder_layers(1)
    .with_dim_feedforward(64)
    .with_dropout(0.1)
    .with_max_seq_length(32);
    device.seed(7);
    MultitaskTransformer::new(&config, device).expect("valid config")
}

fn config(sampling: SamplingStrategy, epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 8,
        learning_rate: 3e-3,
        warmup_steps: 5,
        weight_decay: 0.01,
        sampling,
        seed: 3,
        progress: ProgressMode::Off,
        ..TrainConfig::default()
    }
}

#[test]
fn learns_both_heads_under_every_sampling_strategy() {
    let _guard = serial();
    let device = Device::flex();
    let data = synthetic();
    let encoder = data.build_encoder(32).expect("encoder");
    for sampling in [
        SamplingStrategy::Random,
        SamplingStrategy::Proportional,
        SamplingStrategy::Temperature { temperature: 2.0 },
        SamplingStrategy::RoundRobin,
        SamplingStrategy::Joint,
    ] {
        // Task-sampled strategies train each head on about half the steps.
        let epochs = if sampling == SamplingStrategy::Joint {
            15
        } else {
            25
        };
        let out = fit(
            small_model(&encoder, &device),
            &encoder,
            &data.examples,
            None,
            &config(sampling, epochs),
            None,
            std::slice::from_ref(&device),
        )
        .expect("trains");
        let (report, _) =
            evaluate(&out.model, &encoder, &data.examples, 64, &device).expect("evaluates");
        let acc = report.classification.as_ref().expect("cls").accuracy;
        let f1 = report.ner.as_ref().expect("ner").f1;
        assert_eq!(
            (acc, f1),
            (1.0, 1.0),
            "{sampling:?}: accuracy {acc}, entity F1 {f1}, history {:?}",
            out.history
                .epochs
                .iter()
                .map(|e| e.train_loss)
                .collect::<Vec<_>>()
        );
        let first = out.history.epochs.first().expect("epochs").train_loss;
        let last = out.history.epochs.last().expect("epochs").train_loss;
        assert!(last < first / 4.0, "{sampling:?}: loss {first} -> {last}");
    }
}

#[test]
fn same_seed_same_history() {
    let _guard = serial();
    let device = Device::flex();
    let data = synthetic();
    let encoder = data.build_encoder(32).expect("encoder");
    let run = || {
        fit(
            small_model(&encoder, &device),
            &encoder,
            &data.examples,
            Some(&data.examples[..12]),
            &config(SamplingStrategy::Random, 2),
            None,
            std::slice::from_ref(&device),
        )
        .expect("trains")
        .history
    };
    let (a, b) = (run(), run());
    let strip = |h: &mtl_train::History| {
        h.epochs
            .iter()
            .map(|e| {
                (
                    e.train_loss,
                    e.valid_loss_classification,
                    e.valid_loss_ner,
                    e.steps_per_task,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&a), strip(&b));
}

#[test]
fn one_epoch_then_resume_equals_two_epochs() {
    let _guard = serial();
    let device = Device::flex();
    let data = synthetic();
    let encoder = data.build_encoder(32).expect("encoder");
    let base = std::env::temp_dir().join(format!("mtl-resume-{}", std::process::id()));
    let (full_dir, split_dir) = (base.join("full"), base.join("split"));
    let cfg = config(SamplingStrategy::Random, 2);
    let valid = Some(&data.examples[..12]);
    let full = fit(
        small_model(&encoder, &device),
        &encoder,
        &data.examples,
        valid,
        &cfg,
        Some(&full_dir),
        std::slice::from_ref(&device),
    )
    .expect("full");
    let one = TrainConfig {
        epochs: 1,
        ..cfg.clone()
    };
    fit(
        small_model(&encoder, &device),
        &encoder,
        &data.examples,
        valid,
        &one,
        Some(&split_dir),
        std::slice::from_ref(&device),
    )
    .expect("first epoch");
    // The best checkpoint was chosen on `valid`: no validation data, or other data, is refused
    // before anything is written.
    for (other, said) in [
        (
            None,
            "on 12 validation examples; resuming with no would replace best/ every epoch",
        ),
        (
            Some(&data.examples[12..24]),
            "on 12 validation examples; resuming with 12 different would compare scores",
        ),
        (
            Some(&data.examples[..11]),
            "on 12 validation examples; resuming with 11 would compare scores",
        ),
    ] {
        let err = resume(
            &split_dir,
            &data.examples,
            other,
            Some(2),
            std::slice::from_ref(&device),
        )
        .expect_err("other validation data");
        assert!(err.to_string().contains(said), "{err}");
    }
    let resumed = resume(
        &split_dir,
        &data.examples,
        valid,
        Some(2),
        std::slice::from_ref(&device),
    )
    .expect("resumed");
    assert_eq!(resumed.history.epochs.len(), 2);
    let a = full.history.epochs[1].train_loss;
    let b = resumed.history.epochs[1].train_loss;
    assert!((a - b).abs() < 1e-4, "train loss {a} vs {b}");
    let (ra, _) = evaluate(&full.model, &encoder, &data.examples, 64, &device).expect("eval");
    let (rb, _) = evaluate(&resumed.model, &encoder, &data.examples, 64, &device).expect("eval");
    let la = ra
        .classification
        .as_ref()
        .and_then(|c| c.loss)
        .expect("loss");
    let lb = rb
        .classification
        .as_ref()
        .and_then(|c| c.loss)
        .expect("loss");
    assert!((la - lb).abs() < 1e-4, "classification loss {la} vs {lb}");
    // Run directory contents.
    for f in [
        "train_config.json",
        "history.jsonl",
        "last/model.bpk",
        "last/optimizer.bin",
        "best/model.bpk",
        "best/config.json",
    ] {
        assert!(split_dir.join(f).exists(), "{f} missing");
    }
    let history = std::fs::read_to_string(split_dir.join("history.jsonl")).expect("history");
    assert_eq!(history.lines().count(), 2);
    let first: serde_json::Value =
        serde_json::from_str(history.lines().next().expect("line")).expect("json");
    for key in [
        "epoch",
        "train_loss",
        "train_loss_classification",
        "train_loss_ner",
        "valid_loss_classification",
        "valid_loss_ner",
        "lr",
        "valid_accuracy",
        "valid_entity_f1",
    ] {
        assert!(first.get(key).is_some(), "history lacks {key}");
    }
    std::fs::remove_dir_all(&base).ok();
}

#[test]
fn diverging_loss_is_a_clear_error() {
    let _guard = serial();
    let device = Device::flex();
    let data = synthetic();
    let encoder = data.build_encoder(32).expect("encoder");
    let mut cfg = config(SamplingStrategy::Joint, 3);
    cfg.learning_rate = 1e30;
    cfg.warmup_steps = 0;
    cfg.max_grad_norm = None;
    let err = fit(
        small_model(&encoder, &device),
        &encoder,
        &data.examples,
        None,
        &cfg,
        None,
        std::slice::from_ref(&device),
    )
    .expect_err("must diverge");
    assert!(
        matches!(err, mtl_train::Error::NonFiniteLoss { .. }),
        "{err}"
    );
}

#[test]
fn early_stopping_ends_a_run_that_stops_improving() {
    let _guard = serial();
    let device = Device::flex();
    let data = synthetic();
    let encoder = data.build_encoder(32).expect("encoder");
    // A learning rate this small cannot move the validation accuracy: every epoch after the
    // first is "no improvement", so patience 2 stops after epoch 3 of 10.
    let mut cfg = config(SamplingStrategy::Joint, 10);
    cfg.learning_rate = 1e-12;
    cfg.patience = Some(2);
    cfg.select_metric = mtl_train::SelectMetric::Accuracy;
    let out = fit(
        small_model(&encoder, &device),
        &encoder,
        &data.examples,
        Some(&data.examples[..12]),
        &cfg,
        None,
        std::slice::from_ref(&device),
    )
    .expect("trains");
    assert!(out.stopped_early);
    assert_eq!(out.history.epochs.len(), 3);
}

/// "meet <word> now": the word is a `place` when it ends in "ville" and a `code` when it is
/// made of digits. Test words never occur in training, so the word vocabulary reads them all
/// as `[UNK]`: only character features can tell the two kinds apart.
fn unseen_words() -> (MultitaskDataset, MultitaskDataset) {
    let stems = [
        "abbe", "bran", "cole", "dan", "eve", "fay", "gran", "hope", "iris", "jack", "kent",
        "lake", "mark", "nash", "oak", "pell", "quin", "rose", "saint", "troy",
    ];
    let make = |range: std::ops::Range<usize>| {
        let mut texts = Vec::new();
        let mut kinds = Vec::new();
        for i in range {
            texts.push(format!("meet {}ville now", stems[i % stems.len()]));
            kinds.push("place");
            texts.push(format!("meet {} now", 1000 + 37 * i));
            kinds.push("code");
        }
        let text_refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let labels: Vec<Option<&str>> = vec![Some("meet"); texts.len()];
        let tags: Vec<Option<Vec<&str>>> = kinds
            .iter()
            .map(|k| {
                Some(vec![
                    "O",
                    if *k == "place" { "B-place" } else { "B-code" },
                    "O",
                ])
            })
            .collect();
        MultitaskDataset::new(&text_refs, &labels, &tags).expect("valid data")
    };
    (make(0..14), make(14..20))
}

#[test]
fn character_features_tag_words_never_seen_in_training() {
    let _guard = serial();
    let device = Device::flex();
    let (train, test) = unseen_words();
    let spec = CharSpec {
        max_chars: 8,
        buckets: 64,
    };
    let f1 = |chars: bool| {
        let encoder = train
            .build_encoder(32)
            .expect("encoder")
            .with_chars(chars.then_some(spec))
            .expect("valid spec");
        let base = small_model(&encoder, &device);
        let model_config =
            base.config()
                .clone()
                .with_dropout(0.0)
                .with_char_features(chars.then_some(CharFeatures {
                    buckets: 64,
                    max_chars: 8,
                    embedding_dim: 8,
                    filters: 16,
                    kernel_size: 3,
                }));
        device.seed(7);
        let model = MultitaskTransformer::new(&model_config, &device).expect("valid config");
        let out = fit(
            model,
            &encoder,
            &train.examples,
            None,
            // Words replaced by [UNK] in training, so that the model learns to read an
            // unknown word from its characters (as Lample et al. train with singletons).
            &TrainConfig {
                word_dropout: 0.3,
                ..config(SamplingStrategy::Joint, 60)
            },
            None,
            std::slice::from_ref(&device),
        )
        .expect("trains");
        let (train_report, _) =
            evaluate(&out.model, &encoder, &train.examples, 64, &device).expect("evaluates");
        let (report, _) =
            evaluate(&out.model, &encoder, &test.examples, 64, &device).expect("evaluates");
        eprintln!(
            "characters {chars}: train F1 {}, test F1 {}",
            train_report.ner.expect("ner").f1,
            report.ner.as_ref().expect("ner").f1
        );
        report.ner.expect("ner").f1
    };
    let (without, with) = (f1(false), f1(true));
    assert!(with >= 0.99, "with characters: entity F1 {with}");
    assert!(without <= 0.6, "without characters: entity F1 {without}");
}

#[test]
fn model_and_encoder_must_agree_on_characters() {
    let _guard = serial();
    let device = Device::flex();
    let data = synthetic();
    let encoder = data.build_encoder(32).expect("encoder");
    let base = small_model(&encoder, &device);
    let model_config = base
        .config()
        .clone()
        .with_char_features(Some(CharFeatures::default()));
    let model = MultitaskTransformer::new(&model_config, &device).expect("valid config");
    let result = fit(
        model,
        &encoder,
        &data.examples,
        None,
        &config(SamplingStrategy::Joint, 1),
        None,
        std::slice::from_ref(&device),
    );
    let Err(err) = result else {
        panic!("a model reading characters trained with an encoder that makes none");
    };
    assert!(
        matches!(err, mtl_train::Error::CharMismatch { encoder: None, .. }),
        "{err}"
    );
}

/// `InferenceEngine::Packed` gives the Burn model's predictions: same labels and tags, same
/// probabilities and losses up to float rounding, on a trained model with character features.
#[test]
fn packed_inference_predicts_as_the_burn_model() {
    let _guard = serial();
    let device = Device::flex();
    let data = synthetic();
    let encoder = data
        .build_encoder(32)
        .expect("encoder")
        .with_chars(Some(CharSpec {
            max_chars: 6,
            buckets: 32,
        }))
        .expect("valid spec");
    let base = small_model(&encoder, &device);
    let model_config = base.config().clone().with_char_features(Some(CharFeatures {
        buckets: 32,
        max_chars: 6,
        embedding_dim: 4,
        filters: 8,
        kernel_size: 3,
    }));
    let model = MultitaskTransformer::new(&model_config, &device).expect("valid config");
    let out = fit(
        model,
        &encoder,
        &data.examples,
        None,
        &config(SamplingStrategy::Joint, 3),
        None,
        std::slice::from_ref(&device),
    )
    .expect("trains");
    let run = |engine: InferenceEngine| {
        let options = PredictOptions::new(5).with_top_k(3).with_engine(engine);
        predict(&out.model, &encoder, &data.examples, &options, &device).expect("predicts")
    };
    let (burn, burn_losses) = run(InferenceEngine::Burn);
    let (packed, packed_losses) = run(InferenceEngine::Packed);
    assert_eq!(burn.len(), data.examples.len());
    let close = |a: f64, b: f64| (a - b).abs() < 1e-5;
    for (a, b) in burn.iter().zip(&packed) {
        assert_eq!(a.label.name, b.label.name);
        assert_eq!(a.tags, b.tags);
        for (x, y) in a.top_k.iter().zip(&b.top_k) {
            assert!(
                close(f64::from(x.score), f64::from(y.score)),
                "{x:?} vs {y:?}"
            );
        }
        for (x, y) in a.tag_scores.iter().zip(&b.tag_scores) {
            assert!(close(f64::from(*x), f64::from(*y)), "{x} vs {y}");
        }
    }
    let (c1, c2) = (burn_losses.classification, packed_losses.classification);
    let (n1, n2) = (burn_losses.ner, packed_losses.ner);
    assert!(
        close(c1.expect("labels"), c2.expect("labels")),
        "{c1:?} vs {c2:?}"
    );
    assert!(
        close(n1.expect("tags"), n2.expect("tags")),
        "{n1:?} vs {n2:?}"
    );
}
