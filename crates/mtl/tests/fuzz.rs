//! Fuzzing: real files, mutated byte by byte and structurally (truncated, bytes flipped,
//! chunks spliced, numbers made huge or negative, values given the wrong type), for every
//! data reader (JointBERT, CoNLL, JSONL) and every file of a run directory (`config.json`,
//! `encoder.json`, `vocab.json`, `labels.json`, `tags.json`, `model.bpk`, `optimizer.bin`,
//! `trainer_state.json`, `train_config.json`; `config.toml` is the CLI's, fuzzed by
//! `config::tests::config_toml_never_panics` in mtl-cli). Whatever the bytes, the reader returns a value or a typed
//! error: never a panic, never an abort, and never an allocation past [`CAP`] (this binary's
//! allocator refuses one, which aborts the test).
//!
//! Cases per file kind: `MTL_FUZZ_CASES` (`cargo xtask fuzz --cases N`), 300 by default.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mtl::burn::tensor::Device;
use mtl::data::{Encoder, Format, ReadOptions, read_examples};
use mtl::model::{MultitaskConfig, MultitaskTransformer};
use mtl::train::trainer::{ProgressMode, TrainConfig};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// The largest single allocation allowed: a reader that sizes a buffer from a corrupt header
/// must check it against the bytes it has first.
const CAP: usize = 256 << 20;

/// The system allocator, refusing single allocations past [`CAP`].
struct Capped;

// SAFETY: forwards to `System`, only returning null (an allowed answer) for huge layouts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > CAP {
            eprintln!("refused an allocation of {} bytes", layout.size());
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > CAP {
            eprintln!("refused a reallocation to {new_size} bytes");
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Capped = Capped;

fn cases() -> u32 {
    std::env::var("MTL_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One mutation: what, where (a fraction of the length) and with what.
#[derive(Debug, Clone)]
enum Mutation {
    Truncate(f64),
    Flip(f64, u8),
    Insert(f64, Vec<u8>),
    Splice(f64, f64, f64),
    Number(f64, &'static str),
    WrongType(f64, &'static str),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = 0.0..1.0f64;
    prop_oneof![
        at.clone().prop_map(Mutation::Truncate),
        (at.clone(), any::<u8>()).prop_map(|(a, b)| Mutation::Flip(a, b)),
        (at.clone(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(a, b)| Mutation::Insert(a, b)),
        (at.clone(), at.clone(), 0.0..0.3f64).prop_map(|(a, b, c)| Mutation::Splice(a, b, c)),
        (
            at.clone(),
            prop::sample::select(vec![
                "18446744073709551615",
                "99999999999999999999999",
                "4294967296",
                "-1",
                "0",
                "1e308",
                "-0",
                "NaN",
            ])
        )
            .prop_map(|(a, n)| Mutation::Number(a, n)),
        (
            at,
            prop::sample::select(vec![
                "[]",
                "{}",
                "\"x\"",
                "null",
                "true",
                "[[1,2]]",
                "{\"a\":1}"
            ])
        )
            .prop_map(|(a, t)| Mutation::WrongType(a, t)),
    ]
}

fn index(bytes: &[u8], at: f64) -> usize {
    ((bytes.len() as f64 * at) as usize).min(bytes.len())
}

/// The span of the number or JSON scalar at or after `i` (digits, or a quoted string, or a
/// bare word).
fn token_at(bytes: &[u8], i: usize) -> (usize, usize) {
    let start = (i..bytes.len())
        .find(|&j| bytes[j].is_ascii_alphanumeric() || bytes[j] == b'"' || bytes[j] == b'-')
        .unwrap_or(bytes.len());
    if start < bytes.len() && bytes[start] == b'"' {
        let end = (start + 1..bytes.len())
            .find(|&j| bytes[j] == b'"')
            .map_or(bytes.len(), |j| j + 1);
        return (start, end);
    }
    let end = (start..bytes.len())
        .find(|&j| !(bytes[j].is_ascii_alphanumeric() || b"-+.".contains(&bytes[j])))
        .unwrap_or(bytes.len());
    (start, end)
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        match m {
            Mutation::Truncate(at) => bytes.truncate(index(&bytes, *at)),
            Mutation::Flip(at, b) => {
                let i = index(&bytes, *at);
                if i < bytes.len() {
                    bytes[i] ^= b | 1;
                }
            }
            Mutation::Insert(at, new) => {
                let i = index(&bytes, *at);
                bytes.splice(i..i, new.iter().copied());
            }
            Mutation::Splice(from, to, len) => {
                let (a, b) = (index(&bytes, *from), index(&bytes, *to));
                let n = ((bytes.len() as f64 * len) as usize).min(bytes.len() - a);
                let chunk = bytes[a..a + n].to_vec();
                bytes.splice(b..b, chunk);
            }
            Mutation::Number(at, n) | Mutation::WrongType(at, n) => {
                let (s, e) = token_at(&bytes, index(&bytes, *at));
                bytes.splice(s..e, n.bytes());
            }
        }
    }
    bytes
}

/// Runs `check` on `cases()` mutations of `original`, written to `path` each time; the
/// file is restored afterwards.
fn fuzz(name: &str, path: &Path, check: impl Fn(&Path) -> Result<(), String>) {
    let original = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // The unmutated file reads.
    check(path).unwrap_or_else(|e| panic!("{name}: the original file fails: {e}"));
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let (ok, refused) = (std::cell::Cell::new(0usize), std::cell::Cell::new(0usize));
    let result = runner.run(&prop::collection::vec(mutation(), 1..4), |mutations| {
        std::fs::write(path, apply(original.clone(), &mutations)).expect("write");
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(path))) {
            Ok(Ok(())) => ok.set(ok.get() + 1),
            Ok(Err(message)) => {
                prop_assert!(!message.is_empty(), "an error without a message");
                refused.set(refused.get() + 1);
            }
            Err(_) => prop_assert!(false, "{name}: panicked on {mutations:?}"),
        }
        Ok(())
    });
    std::fs::write(path, &original).expect("restore");
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    let (ok, refused) = (ok.get(), refused.get());
    eprintln!("{name}: {ok} read, {refused} refused with an error");
    assert!(refused > 0, "{name}: no mutation was refused");
}

/// A tiny run directory (one epoch on 48 quickstart examples), made once.
fn run_dir() -> &'static PathBuf {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("mtl-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (train, _) = read_examples(
            &workspace().join("data/quickstart/train"),
            Some(Format::JointBert),
            &ReadOptions::default(),
        )
        .expect("quickstart");
        let train = &train[..48];
        let (vocab, words) = (
            mtl::data::WordVocab::build(train, &mtl::data::WordVocabConfig::default()),
            train,
        );
        let encoder = Encoder::build(words, mtl::data::TextEncoder::Word(vocab), 16)
            .expect("encoder")
            .with_chars(Some(mtl::data::CharSpec {
                max_chars: 8,
                buckets: 32,
            }))
            .expect("chars");
        let mut config = MultitaskConfig::new(
            encoder.text.vocab_size(),
            encoder.labels.len(),
            encoder.tags.len(),
        )
        .with_d_model(8)
        .with_nhead(2)
        .with_num_encoder_layers(1)
        .with_dim_feedforward(8)
        .with_max_seq_length(16);
        config.char_features = Some(mtl::model::CharFeatures {
            buckets: 32,
            max_chars: 8,
            embedding_dim: 4,
            filters: 4,
            kernel_size: 3,
        });
        let device = Device::flex();
        let model = MultitaskTransformer::new(&config, &device).expect("model");
        let train_config = TrainConfig {
            epochs: 1,
            batch_size: 16,
            progress: ProgressMode::Off,
            ..TrainConfig::default()
        };
        mtl::train::fit(
            model,
            &encoder,
            train,
            Some(&train[..8]),
            &train_config,
            Some(&dir),
            &[device],
        )
        .expect("tiny run");
        dir
    })
}

fn show(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Reads `path` (a file, or the JointBERT split directory) strictly and leniently.
fn read(format: Format, path: PathBuf) -> impl Fn(&Path) -> Result<(), String> {
    move |_| {
        for lenient in [false, true] {
            let opts = ReadOptions {
                lenient,
                ..ReadOptions::default()
            };
            read_examples(&path, Some(format), &opts).map_err(show)?;
        }
        Ok(())
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mtl-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch");
    dir
}

/// The first examples of the quickstart data, in each format.
fn data_files() -> (PathBuf, PathBuf, PathBuf) {
    let dir = scratch("data");
    let split = dir.join("train");
    std::fs::create_dir_all(&split).expect("split");
    let src = workspace().join("data/quickstart/train");
    for name in ["seq.in", "seq.out", "label"] {
        let text = std::fs::read_to_string(src.join(name)).expect("quickstart");
        let head: Vec<&str> = text.lines().take(20).collect();
        std::fs::write(split.join(name), head.join("\n") + "\n").expect("write");
    }
    let (examples, _) =
        read_examples(&split, Some(Format::JointBert), &ReadOptions::default()).expect("read");
    let mut conll = String::new();
    let mut jsonl = String::new();
    for (i, e) in examples.iter().enumerate() {
        let tags = e.tags.clone().unwrap_or_default();
        conll.push_str(&format!(
            "# label = {}\n",
            e.label.as_deref().unwrap_or("_")
        ));
        for (w, t) in e.words.iter().zip(&tags) {
            conll.push_str(&format!("{w}\t{t}\n"));
        }
        conll.push('\n');
        let record = if i % 2 == 0 {
            serde_json::json!({"tokens": e.words, "tags": tags, "label": e.label})
        } else {
            let text = e.words.join(" ");
            let mut entities = Vec::new();
            let mut offset = 0;
            for (w, t) in e.words.iter().zip(&tags) {
                if let Some(kind) = t.strip_prefix("B-") {
                    entities.push(
                        serde_json::json!({"start": offset, "end": offset + w.len(), "label": kind}),
                    );
                }
                offset += w.len() + 1;
            }
            serde_json::json!({"text": text, "entities": entities, "label": e.label})
        };
        jsonl.push_str(&record.to_string());
        jsonl.push('\n');
    }
    let conll_path = dir.join("train.conll");
    let jsonl_path = dir.join("train.jsonl");
    std::fs::write(&conll_path, conll).expect("conll");
    std::fs::write(&jsonl_path, jsonl).expect("jsonl");
    (split, conll_path, jsonl_path)
}

#[test]
fn readers_never_panic() {
    let (jointbert, conll, jsonl) = data_files();
    for name in ["seq.in", "seq.out", "label"] {
        fuzz(
            &format!("jointbert {name}"),
            &jointbert.join(name),
            read(Format::JointBert, jointbert.clone()),
        );
    }
    fuzz("conll", &conll, read(Format::Conll, conll.clone()));
    fuzz("jsonl", &jsonl, read(Format::Jsonl, jsonl.clone()));
}

#[test]
fn run_directory_files_never_panic() {
    let run = run_dir();
    let device = Device::flex();
    let best = run.join("best");
    let load = |_: &Path| -> Result<(), String> {
        mtl::train::load_model_dir(&best, &device)
            .map(|_| ())
            .map_err(show)
    };
    for name in [
        "config.json",
        "encoder.json",
        "vocab.json",
        "labels.json",
        "tags.json",
        "model.bpk",
    ] {
        fuzz(&format!("best/{name}"), &best.join(name), load);
    }
    let last = run.join("last");
    fuzz("last/optimizer.bin", &last.join("optimizer.bin"), |p| {
        let optimizer =
            mtl::train::optim::AdamW::load(p, &device.clone().autodiff()).map_err(show)?;
        let _ = optimizer.steps();
        Ok(())
    });
    fuzz(
        "last/trainer_state.json",
        &last.join("trainer_state.json"),
        |_| {
            mtl::train::rundir::resume_point(run)
                .map(|_| ())
                .map_err(show)
        },
    );
    fuzz("train_config.json", &run.join("train_config.json"), |_| {
        mtl::train::rundir::read_train_config(run)
            .map(|_| ())
            .map_err(show)
    });
}

/// A resume from a corrupt optimizer state whose entries do not match the model is refused
/// with a typed error naming the file and both sizes (no panic at the first step).
#[test]
fn an_optimizer_state_of_another_model_is_refused_at_resume() {
    let run = run_dir();
    let copy = scratch("mismatch").join("run");
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(run)
        .arg(&copy)
        .status()
        .expect("cp");
    assert!(status.success());
    let optimizer = copy.join("last/optimizer.bin");
    let bytes = std::fs::read(&optimizer).expect("optimizer");
    let len = u64::from_le_bytes(bytes[10..18].try_into().expect("8")) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[18..18 + len]).expect("header");
    // The classifier's weight renamed to a parameter the model does not have.
    let entries = header["entries"].as_array().expect("entries");
    let (key, n) = entries
        .iter()
        .filter_map(|e| Some((e[0].as_str()?.to_owned(), e[1].as_u64()?)))
        .find(|(k, _)| k.starts_with("classifier") && k.ends_with("weight"))
        .expect("classifier.weight");
    let text = String::from_utf8(bytes[18..18 + len].to_vec()).expect("utf8");
    let renamed = text.replacen(&format!("\"{key}\""), "\"classifier.nothing\"", 1);
    let mut corrupt = bytes[..10].to_vec();
    corrupt.extend_from_slice(&(renamed.len() as u64).to_le_bytes());
    corrupt.extend_from_slice(renamed.as_bytes());
    corrupt.extend_from_slice(&bytes[18 + len..]);
    std::fs::write(&optimizer, corrupt).expect("write");
    let (train, _) = read_examples(
        &workspace().join("data/quickstart/train"),
        Some(Format::JointBert),
        &ReadOptions::default(),
    )
    .expect("quickstart");
    let err = mtl::train::resume(
        &copy,
        &train[..48],
        Some(&train[..8]),
        Some(2),
        &[Device::flex()],
    )
    .expect_err("a foreign optimizer state");
    let said = err.to_string();
    assert!(
        matches!(err, mtl::train::Error::Inconsistent { .. })
            && said.contains("optimizer.bin")
            && said.contains("classifier.nothing"),
        "{said} ({n} values)"
    );
}
