//! The seed's `test_training()`, through the library API.
//!
//! The seed (a PyTorch project) ends `trainer.py` with a `test_training()` function that makes
//! dummy datasets, builds a `MultitaskTransformer` and calls
//! `train_model(model, train_dataset, val_dataset, num_epochs, learning_rate, warmup_steps,
//! weight_decay)`. This example does the same with mtl:
//!
//! 1. generates a small, deterministic, learnable dataset (3 sentence classes, 5 NER tags as
//!    the seed's `num_classes=3, num_ner_tags=5`): the class follows from the topic words,
//!    the tags mark person and location names;
//! 2. builds [`MultitaskDataset`]s and the seed's `tokenizer=None` encoder
//!    ([`MultitaskDataset::build_encoder`]: a lower-cased word vocabulary);
//! 3. builds a *small* [`MultitaskTransformer`] (the seed's defaults, d_model 512 and six
//!    layers, would take far longer on a CPU) and trains it with
//!    [`mtl::train::train_model`] on `Device::flex()` (Burn's CPU backend);
//! 4. prints the history per epoch: training loss, validation loss per task, classification
//!    accuracy and NER token accuracy (the seed's metrics), plus entity F1.
//!
//! ```text
//! cargo run --release -p example-seed-training
//! ```
//!
//! It runs in a few seconds on two CPU cores.

use anyhow::{Context, Result, ensure};
use mtl::prelude::*;
use mtl::train::{History, MultitaskDataset};

/// Sentence classes and the topic words that decide them.
const TOPICS: [(&str, [&str; 6]); 3] = [
    (
        "sports",
        ["match", "goal", "team", "coach", "league", "stadium"],
    ),
    (
        "politics",
        [
            "election",
            "minister",
            "vote",
            "senate",
            "policy",
            "parliament",
        ],
    ),
    (
        "tech",
        ["software", "startup", "chip", "robot", "laptop", "app"],
    ),
];

/// Person names (one or two words): tagged `B-PER` / `I-PER`.
const PEOPLE: [&str; 10] = [
    "alice",
    "bob",
    "carol smith",
    "dave",
    "erin lee",
    "frank",
    "grace hopper",
    "heidi",
    "ivan petrov",
    "judy",
];

/// Places (one or two words): tagged `B-LOC` / `I-LOC`.
const PLACES: [&str; 10] = [
    "paris",
    "london",
    "new york",
    "berlin",
    "tokyo",
    "san francisco",
    "madrid",
    "rio de janeiro",
    "oslo",
    "cape town",
];

/// Untagged filler words.
const FILLERS: [&str; 8] = [
    "today",
    "again",
    "yesterday",
    "finally",
    "really",
    "now",
    "quietly",
    "loudly",
];

/// A tiny deterministic generator (SplitMix64), so the example needs no random-number crate
/// and prints the same numbers on every run.
#[derive(Debug)]
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

/// The seed's three parallel lists: texts, class labels, per-word NER labels.
#[derive(Debug, Default)]
struct DummyData {
    texts: Vec<String>,
    labels: Vec<String>,
    tags: Vec<Vec<String>>,
}

impl DummyData {
    fn push_span(words: &mut Vec<String>, tags: &mut Vec<String>, span: &str, kind: &str) {
        for (i, w) in span.split(' ').enumerate() {
            words.push(w.to_owned());
            tags.push(format!("{}-{kind}", if i == 0 { "B" } else { "I" }));
        }
    }

    fn push_outside(words: &mut Vec<String>, tags: &mut Vec<String>, text: &str) {
        for w in text.split(' ') {
            words.push(w.to_owned());
            tags.push("O".to_owned());
        }
    }

    /// `n` sentences from one of four templates, e.g. "alice talked about the match in paris
    /// today" (sports; `alice` = PER, `paris` = LOC).
    fn generate(n: usize, seed: u64) -> Self {
        let mut rng = SplitMix(seed);
        let mut data = Self::default();
        for i in 0..n {
            let (label, topic_words) = &TOPICS[i % TOPICS.len()];
            let topic = *rng.pick(topic_words);
            let person = *rng.pick(&PEOPLE);
            let place = *rng.pick(&PLACES);
            let filler = *rng.pick(&FILLERS);
            let (mut words, mut tags) = (Vec::new(), Vec::new());
            let (w, t) = (&mut words, &mut tags);
            match rng.next() % 4 {
                0 => {
                    Self::push_span(w, t, person, "PER");
                    Self::push_outside(w, t, &format!("talked about the {topic} in"));
                    Self::push_span(w, t, place, "LOC");
                    Self::push_outside(w, t, filler);
                }
                1 => {
                    Self::push_outside(w, t, "in");
                    Self::push_span(w, t, place, "LOC");
                    Self::push_outside(w, t, &format!("the {topic} news reached"));
                    Self::push_span(w, t, person, "PER");
                }
                2 => {
                    Self::push_outside(w, t, &format!("{filler} the {topic} story from"));
                    Self::push_span(w, t, place, "LOC");
                }
                _ => {
                    Self::push_outside(w, t, "ask");
                    Self::push_span(w, t, person, "PER");
                    Self::push_outside(w, t, &format!("about the {topic}"));
                }
            }
            data.texts.push(words.join(" "));
            data.labels.push((*label).to_owned());
            data.tags.push(tags);
        }
        data
    }

    fn dataset(&self) -> mtl::train::Result<MultitaskDataset> {
        let texts: Vec<&str> = self.texts.iter().map(String::as_str).collect();
        let labels: Vec<Option<&str>> = self.labels.iter().map(|l| Some(l.as_str())).collect();
        let tags: Vec<Option<Vec<&str>>> = self
            .tags
            .iter()
            .map(|t| Some(t.iter().map(String::as_str).collect()))
            .collect();
        MultitaskDataset::new(&texts, &labels, &tags)
    }
}

fn print_history(history: &History) {
    println!(
        "\n{:>5} {:>10} {:>12} {:>12} {:>8} {:>10} {:>9}",
        "epoch", "train_loss", "val_loss_cls", "val_loss_ner", "val_acc", "val_tokacc", "val_f1"
    );
    let show = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.4}"));
    for r in &history.epochs {
        println!(
            "{:>5} {:>10} {:>12} {:>12} {:>8} {:>10} {:>9}",
            r.epoch,
            show(r.train_loss),
            show(r.valid_loss_classification),
            show(r.valid_loss_ner),
            show(r.valid_accuracy),
            show(r.valid_token_accuracy),
            show(r.valid_entity_f1),
        );
    }
}

fn main() -> Result<()> {
    // Denormal results written as zero on this thread and Rayon's pool: on Intel CPUs
    // training over denormals runs at half the rate or less (`mtl::model::denormals`).
    mtl::model::denormals::flush_to_zero();
    // The seed's hyper-parameters, scaled to a CPU demo (the seed: 10 epochs, lr 2e-5,
    // 1000 warmup steps, weight decay 0.01 — far more steps than this small dataset has).
    let num_epochs = 20;
    let learning_rate = 2e-3;
    let warmup_steps = 10;
    let weight_decay = 0.01;
    let max_seq_length = 32;

    let train_data = DummyData::generate(300, 1);
    let val_data = DummyData::generate(60, 2);
    println!("example sentences:");
    for i in 0..3 {
        println!(
            "  [{}] {}\n        {}",
            train_data.labels[i],
            train_data.texts[i],
            train_data.tags[i].join(" ")
        );
    }
    let train = train_data.dataset()?;
    let val = val_data.dataset()?;
    let encoder = train
        .build_encoder(max_seq_length)
        .context("building the word-level encoder")?;
    println!(
        "train {} / val {} sentences; vocabulary {} words, {} classes {:?}, {} tags {:?}",
        train.examples.len(),
        val.examples.len(),
        encoder.text.vocab_size(),
        encoder.labels.len(),
        encoder.labels.names(),
        encoder.tags.len(),
        encoder.tags.names(),
    );

    let seed_defaults = MultitaskConfig::new(1000, 3, 5);
    println!(
        "seed defaults: d_model {}, nhead {}, num_encoder_layers {}, dim_feedforward {}, \
         dropout {}, max_seq_length {} (too slow for a CPU demo; using a small model)",
        seed_defaults.d_model,
        seed_defaults.nhead,
        seed_defaults.num_encoder_layers,
        seed_defaults.dim_feedforward,
        seed_defaults.dropout,
        seed_defaults.max_seq_length,
    );
    let config = MultitaskConfig::new(
        encoder.text.vocab_size(),
        encoder.labels.len(),
        encoder.tags.len(),
    )
    .with_d_model(64)
    .with_nhead(4)
    .with_num_encoder_layers(2)
    .with_dim_feedforward(128)
    .with_dropout(0.1)
    .with_max_seq_length(max_seq_length)
    .with_pad_token_id(encoder.text.pad_id() as usize);
    println!(
        "this model:    d_model {}, nhead {}, num_encoder_layers {}, dim_feedforward {}, \
         dropout {}, max_seq_length {}",
        config.d_model,
        config.nhead,
        config.num_encoder_layers,
        config.dim_feedforward,
        config.dropout,
        config.max_seq_length,
    );

    let device = Device::flex();
    // Initialisation draws from the backend's generator: seed it for a reproducible run.
    device.seed(7);
    let model = MultitaskTransformer::new(&config, &device)?;
    println!(
        "training {num_epochs} epochs (lr {learning_rate}, warmup {warmup_steps}, \
         weight decay {weight_decay}, a random task per batch as the seed)\n"
    );
    let (model, history) = mtl::train::train_model(
        model,
        &encoder,
        &train,
        &val,
        num_epochs,
        learning_rate,
        warmup_steps,
        weight_decay,
        &device,
    )?;
    print_history(&history);

    let loss = |e: Option<&mtl::train::EpochRecord>| e.and_then(|e| e.train_loss);
    let first = loss(history.epochs.first()).context("no epoch took a training step")?;
    let last = loss(history.epochs.last()).context("no epoch took a training step")?;
    println!("\ntrain loss {first:.4} -> {last:.4}");
    ensure!(
        last < first,
        "the training loss did not decrease ({first:.4} -> {last:.4})"
    );

    // The trained model answers the seed's inference calls.
    let (report, predictions) = mtl::train::evaluate(&model, &encoder, &val.examples, 64, &device)?;
    let example = &val.examples[0];
    println!(
        "val: \"{}\" -> {} / {}",
        example.text,
        predictions[0].label.name,
        predictions[0].tags.join(" ")
    );
    println!(
        "val combined score (mean of accuracy and entity F1): {:.4}",
        report.combined_score()
    );
    Ok(())
}
