//! What the commands check before they work: model and run directories, dataset splits, what
//! the data is annotated with, labels a model never saw, and the run's provenance.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use mtl::burn::tensor::Device;
use mtl::data::{
    Encoder, Example, Format, ReadOptions, ReadReport, iob2_to_spans, read_examples, read_split,
};
use mtl::model::MultitaskTransformer;
use mtl::model::io::CONFIG_FILE;
use mtl::train::rundir::STATE_FILE;
use mtl::train::trainer::{LAST_DIR, load_model_dir, resolve_model_dir};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::config::{DataSection, FileConfig};

/// What a model directory is, for messages.
const MODEL_DIR: &str = "a run directory written by `mtl train --out` (holding best/ or last/) \
                         or a model directory (holding config.json, model.bpk, encoder.json)";

/// Loads the model of a run or model directory, saying what was expected when `path` is
/// neither.
pub fn load_model(path: &Path, device: &Device) -> Result<(MultitaskTransformer, Encoder)> {
    if !path.exists() {
        bail!(
            "model {} does not exist: expected {MODEL_DIR}",
            path.display()
        );
    }
    if !resolve_model_dir(path).join(CONFIG_FILE).is_file() {
        bail!("{} is not a model: expected {MODEL_DIR}", path.display());
    }
    Ok(load_model_dir(path, device)?)
}

/// Checks that `out` holds a run that `--resume` can continue; its last checkpoint.
pub fn check_resumable(out: &Path) -> Result<PathBuf> {
    let Some(last) = mtl::train::rundir::last_checkpoint(out) else {
        if !out.exists() {
            bail!(
                "nothing to resume: {} does not exist; start the run without --resume",
                out.display()
            );
        }
        bail!(
            "nothing to resume in {}: it has no {LAST_DIR}/{STATE_FILE} (no epoch finished, or \
             not a run directory); start the run again with --overwrite",
            out.display()
        );
    };
    Ok(last)
}

/// The CLI's configuration inside a run directory.
pub const RUN_CONFIG_FILE: &str = "config.toml";

/// Options that do not change what a resumed run computes: how many epochs (the library
/// re-plans the schedule and says so), progress display, devices.
const RESUME_FREE: [&str; 4] = [
    "train.epochs",
    "train.min_steps",
    "train.progress",
    "train.devices",
];

/// Flattens a JSON value into `dotted.key = value` pairs.
fn flatten(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_owned(), other.to_string());
        }
    }
}

/// Refuses `--resume` with a configuration (`--config`, `--lr`, `--batch-size`, `--seed`,
/// `--sampling`, `--pretrained`) that differs from the run's own: a resumed run continues with
/// the run's configuration, so a changed one would be silently ignored. Paths compare by what
/// they point to.
pub fn check_resume_flags(out: &Path, given: &FileConfig, has_config: bool) -> Result<()> {
    let run_toml = out.join(RUN_CONFIG_FILE);
    let run = if run_toml.is_file() {
        FileConfig::load(&run_toml)?
    } else {
        // A run written by the library: only its training options are known.
        let mut run = given.clone();
        run.train = mtl::train::rundir::read_train_config(out)?;
        if has_config {
            eprintln!(
                "warning: {} has no {RUN_CONFIG_FILE}: only [train] of --config is checked \
                 against the run",
                out.display()
            );
        }
        run
    };
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    flatten("", &serde_json::to_value(&run)?, &mut a);
    flatten("", &serde_json::to_value(given)?, &mut b);
    let same_path = |x: &str, y: &str| {
        let canon = |s: &str| {
            let p = PathBuf::from(s.trim_matches('"'));
            fs::canonicalize(&p).unwrap_or(p)
        };
        x == y || canon(x) == canon(y)
    };
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut changes = Vec::new();
    for key in keys {
        if RESUME_FREE.contains(&key.as_str()) {
            continue;
        }
        let (then, now) = (
            a.get(key).map_or("unset", String::as_str),
            b.get(key).map_or("unset", String::as_str),
        );
        let is_path = key == "model.pretrained" || key == "tokenizer.path";
        if then != now && !(is_path && same_path(then, now)) {
            changes.push(format!("{key}: the run has {then}, given {now}"));
        }
    }
    if !changes.is_empty() {
        bail!(
            "{}: --resume continues the run as it was configured, but {}; start a new run \
             (another --out, or --overwrite) to train with them",
            out.display(),
            changes.join("; ")
        );
    }
    Ok(())
}

/// The `[data]` options of the run a model belongs to (its `config.toml`, in the model
/// directory or the run directory above `best/` or `last/`); the defaults for a model
/// directory without one.
pub fn run_data_options(model: &Path) -> Result<DataSection> {
    let mut candidates = vec![model.join(RUN_CONFIG_FILE)];
    if let Some(parent) = resolve_model_dir(model).parent() {
        candidates.push(parent.join(RUN_CONFIG_FILE));
    }
    match candidates.iter().find(|p| p.is_file()) {
        Some(path) => Ok(FileConfig::load(path)?.data),
        None => Ok(DataSection::default()),
    }
}

/// The files of a model or run directory that mtl reads or writes itself.
const MODEL_FILES: [&str; 16] = [
    "config.json",
    "model.bpk",
    "encoder.json",
    "labels.json",
    "tags.json",
    "vocab.json",
    "tokenizer.json",
    "optimizer.bin",
    "trainer_state.json",
    "train_config.json",
    "history.jsonl",
    RUN_CONFIG_FILE,
    "metrics.json",
    PROVENANCE_FILE,
    "training_curve.svg",
    ".mtl.lock",
];

/// Refuses an output file that is one of the inputs: a data file the examples were read
/// from, the data path itself, or one of mtl's own files in the model's directories, so that
/// `--predictions` never overwrites gold data or a model.
pub fn check_output(path: &Path, examples: &[Example], data: &Path, model: &Path) -> Result<()> {
    let Ok(target) = fs::canonicalize(path) else {
        return Ok(()); // A new file is no input.
    };
    if target.is_dir() {
        bail!(
            "--predictions {} is a directory: name a file",
            path.display()
        );
    }
    let mut files: Vec<PathBuf> = split_files(examples);
    files.push(data.to_path_buf());
    for dir in [model.to_path_buf(), resolve_model_dir(model)] {
        files.extend(MODEL_FILES.iter().map(|f| dir.join(f)));
    }
    for input in files {
        let Ok(input) = fs::canonicalize(&input) else {
            continue;
        };
        if target == input {
            bail!(
                "--predictions {} is an input ({}): refusing to overwrite it; name another file",
                path.display(),
                input.display()
            );
        }
    }
    Ok(())
}

/// Names accepted for the dev split, as `mtl::data::read_splits` accepts them.
const DEV_NAMES: [&str; 3] = ["dev", "valid", "validation"];

/// The splits of a dataset root: sub-directories holding `seq.in` and files
/// `<split>.<ext>` of a known format.
pub fn splits_in(root: &Path) -> Vec<String> {
    let mut found = BTreeSet::new();
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if path.is_dir() && path.join("seq.in").is_file() {
            found.insert(name.to_owned());
        } else if path.is_file()
            && let (Some(stem), Some(ext)) = (
                path.file_stem().and_then(|s| s.to_str()),
                path.extension().and_then(|e| e.to_str()),
            )
            && Format::ALL
                .iter()
                .any(|f| f.extensions().contains(&ext.to_ascii_lowercase().as_str()))
        {
            found.insert(stem.to_owned());
        }
    }
    found.into_iter().collect()
}

/// Reads the data `mtl eval` scores: split `split` (default `test`) of a dataset root, or a
/// whole file or JointBERT split directory (where `--split` is ignored, with a warning).
pub fn read_eval_data(
    path: &Path,
    split: Option<&str>,
    format: Option<Format>,
    opts: &ReadOptions,
) -> Result<(Vec<Example>, ReadReport)> {
    let is_root = path.is_dir() && !path.join("seq.in").is_file();
    if !is_root {
        if !path.exists() {
            bail!("evaluation data {} does not exist", path.display());
        }
        if let Some(split) = split {
            eprintln!(
                "warning: --split {split} ignored: {} is one {}, evaluated whole",
                path.display(),
                if path.is_dir() {
                    "split directory"
                } else {
                    "file"
                }
            );
        }
        return Ok(read_examples(path, format, opts)?);
    }
    let split = split.unwrap_or("test");
    let mut names = vec![split];
    if DEV_NAMES.contains(&split) {
        names.extend(DEV_NAMES.iter().filter(|n| **n != split));
    }
    for name in names {
        match read_split(path, name, format, opts) {
            Err(mtl::data::Error::MissingSplit { .. }) => {}
            other => return Ok(other?),
        }
    }
    let found = splits_in(path);
    if found.is_empty() {
        bail!(
            "{}: no split `{split}` and no splits at all: expected directories holding seq.in \
             (JointBERT) or files such as {split}.jsonl or {split}.conll",
            path.display()
        );
    }
    bail!(
        "{}: no split `{split}`: the splits found are {}; pick one with --split",
        path.display(),
        found.join(", ")
    )
}

/// The data files the examples were read from, in order of first use.
fn source_files(examples: &[Example]) -> Vec<PathBuf> {
    let mut seen = BTreeSet::new();
    let mut files = Vec::new();
    for ex in examples {
        if let Some(source) = &ex.source
            && seen.insert(source.file.clone())
        {
            files.push(source.file.clone());
        }
    }
    files
}

/// The files named in messages about a split: its source files, else `fallback`.
fn describe(examples: &[Example], fallback: &Path) -> String {
    let files = source_files(examples);
    if files.is_empty() {
        fallback.display().to_string()
    } else {
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        names.join(", ")
    }
}

/// Says, before training, which heads the training data can train; an error when neither.
pub fn check_train_annotations(train: &[Example], path: &Path) -> Result<()> {
    let labels = train.iter().filter(|e| e.label.is_some()).count();
    let tagged = train.iter().filter(|e| e.tags.is_some()).count();
    let files = describe(train, path);
    match (labels, tagged) {
        (0, 0) => bail!(
            "no sentence labels and no tags in {files}: nothing to train (JSONL: \"label\", \
             \"entities\" or \"tags\"; CoNLL: `# label = ...` lines and a tag column; \
             JointBERT: label and seq.out files)"
        ),
        (0, _) => eprintln!("no sentence labels in {files}: training the NER head only"),
        (_, 0) => eprintln!("no tags in {files}: training the sentence classification head only"),
        _ => {}
    }
    Ok(())
}

/// Sentence labels and entity types of `examples` that `encoder` never saw in training, with
/// how many examples (labels) or entities (types) carry each.
pub fn unseen(
    examples: &[Example],
    encoder: &Encoder,
) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
    let mut labels = BTreeMap::new();
    let mut types = BTreeMap::new();
    for ex in examples {
        if let Some(label) = &ex.label
            && encoder.labels.get(label).is_none()
        {
            *labels.entry(label.clone()).or_insert(0) += 1;
        }
        for span in ex.tags.as_deref().map(iob2_to_spans).unwrap_or_default() {
            if encoder.tags.get(&format!("B-{}", span.label)).is_none() {
                *types.entry(span.label).or_insert(0) += 1;
            }
        }
    }
    (labels, types)
}

/// `name (count), ...`, most frequent first, at most ten.
pub fn counted(names: &BTreeMap<String, usize>) -> String {
    let mut list: Vec<(&String, &usize)> = names.iter().collect();
    list.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut parts: Vec<String> = list
        .iter()
        .take(10)
        .map(|(n, c)| format!("{n} ({c})"))
        .collect();
    if list.len() > 10 {
        parts.push(format!("and {} more", list.len() - 10));
    }
    parts.join(", ")
}

/// Warns about labels and entity types of evaluation data the model never saw: they can only
/// count as errors.
pub fn warn_unseen(what: &str, examples: &[Example], encoder: &Encoder) -> serde_json::Value {
    let (labels, types) = unseen(examples, encoder);
    if !labels.is_empty() {
        eprintln!(
            "warning: {} {what} examples have sentence labels the model never saw: {}; they \
             count as wrong in accuracy",
            labels.values().sum::<usize>(),
            counted(&labels)
        );
    }
    if !types.is_empty() {
        eprintln!(
            "warning: {} {what} entities have types the model never saw: {}; they count as \
             missed in recall",
            types.values().sum::<usize>(),
            counted(&types)
        );
    }
    json!({"labels": labels, "entity_types": types})
}

/// The files of a split as read: each source file, and for a JointBERT `seq.in` its
/// `seq.out` and `label` beside it.
fn split_files(examples: &[Example]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for file in source_files(examples) {
        let siblings = file.file_name().is_some_and(|n| n == "seq.in");
        if siblings && let Some(dir) = file.parent() {
            files.push(file.clone());
            for name in ["seq.out", "label"] {
                if dir.join(name).is_file() {
                    files.push(dir.join(name));
                }
            }
        } else {
            files.push(file);
        }
    }
    files
}

/// Size and sha256 of a file.
fn digest(path: &Path) -> Result<(u64, String)> {
    let mut file =
        fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((size, hex))
}

/// File of the run's provenance inside a run directory.
pub const PROVENANCE_FILE: &str = "provenance.json";

/// What a run was trained on: per split, the examples and each file read (path, size,
/// sha256); the mtl version and the command line.
pub fn provenance(splits: &[(&str, Option<&[Example]>)]) -> Result<serde_json::Value> {
    let mut data = serde_json::Map::new();
    for (name, examples) in splits {
        let Some(examples) = examples else {
            continue;
        };
        let mut files = Vec::new();
        for file in split_files(examples) {
            let (bytes, sha256) = digest(&file)?;
            let path = fs::canonicalize(&file).unwrap_or(file);
            files.push(json!({"path": path, "bytes": bytes, "sha256": sha256}));
        }
        let labelled = examples.iter().filter(|e| e.label.is_some()).count();
        let tagged = examples.iter().filter(|e| e.tags.is_some()).count();
        data.insert(
            (*name).to_owned(),
            json!({"examples": examples.len(), "with_label": labelled, "with_tags": tagged, "files": files}),
        );
    }
    Ok(json!({
        "mtl_version": env!("CARGO_PKG_VERSION"),
        "command": std::env::args().collect::<Vec<_>>(),
        "working_directory": std::env::current_dir().ok(),
        "data": data,
    }))
}

/// Writes the provenance of a new run, or adds a resumed session's to the run's list.
pub fn write_provenance(out: &Path, record: serde_json::Value, resumed: bool) -> Result<()> {
    let path = out.join(PROVENANCE_FILE);
    let value = if resumed && let Ok(text) = fs::read_to_string(&path) {
        let mut first: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: invalid JSON", path.display()))?;
        if let Some(object) = first.as_object_mut() {
            let resumes = object.entry("resumed").or_insert_with(|| json!([]));
            if let Some(list) = resumes.as_array_mut() {
                list.push(record);
            }
        }
        first
    } else {
        record
    };
    let text = serde_json::to_string_pretty(&value)?;
    mtl::model::write_atomic(&path, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_a_known_text() -> Result<()> {
        let path = std::env::temp_dir().join(format!("mtl-sha-{}", std::process::id()));
        fs::write(&path, "abc")?;
        let (bytes, sha) = digest(&path)?;
        fs::remove_file(&path)?;
        assert_eq!(bytes, 3);
        // FIPS 180-2, example B.1.
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        Ok(())
    }

    #[test]
    fn unseen_labels_and_types_are_counted() -> Result<()> {
        use mtl::data::{TextEncoder, WordVocab, WordVocabConfig};
        let train = vec![Example::from_words(
            vec!["play".into(), "jazz".into()],
            Some("Play".into()),
            Some(vec!["O".into(), "B-genre".into()]),
        )?];
        let vocab = WordVocab::build(&train, &WordVocabConfig::default());
        let encoder = Encoder::build(&train, TextEncoder::Word(vocab), 8)?;
        let eval = vec![
            Example::from_words(
                vec!["buy".into(), "kindle".into(), "jazz".into()],
                Some("Buy".into()),
                Some(vec!["O".into(), "B-product".into(), "B-genre".into()]),
            )?,
            Example::from_words(vec!["buy".into()], Some("Buy".into()), None)?,
            Example::from_words(vec!["play".into()], Some("Play".into()), None)?,
        ];
        let (labels, types) = unseen(&eval, &encoder);
        assert_eq!(labels, BTreeMap::from([("Buy".to_owned(), 2)]));
        assert_eq!(types, BTreeMap::from([("product".to_owned(), 1)]));
        assert_eq!(counted(&labels), "Buy (2)");
        Ok(())
    }
}
