//! The subcommands.

use std::fs;
use std::io::{BufRead, BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use mtl::burn::module::Module;
use mtl::burn::tensor::Device;
use mtl::data::{
    Encoder, Example, Format, NO_TAG, ReadOptions, ReadReport, TOKENIZER_FILE, TextEncoder,
    WordVocab, WordVocabConfig, read_examples, read_splits,
};
use mtl::model::MultitaskTransformer;
use mtl::model::hf::{self, HfConfig};
use mtl::train::TagDecoding;
use mtl::train::eval::{
    EvalReport, PredictOptions, Prediction, predict_encoded, score as score_predictions,
};
use mtl::train::metrics::{Mode, Scheme, entity_report, token_accuracy};
use mtl::train::texts::{Predictor, PreparedText};
use mtl::train::trainer::{BEST_DIR, ProgressMode, TrainConfig};
use mtl::train::{
    InferenceEngine, RunDir, embed as embed_encoded, evaluate_with, fit_in, resume_in,
};
use serde_json::json;

use crate::config::{FileConfig, TokenizerKind};
use crate::inputs;
use crate::{EmbedArgs, EvalArgs, ExportArgs, PredictArgs, ScoreArgs, TrainArgs, plot};
use mtl::device;

fn format_arg(format: &Option<String>) -> Result<Option<Format>> {
    format
        .as_deref()
        .map(|f| f.parse::<Format>().map_err(anyhow::Error::from))
        .transpose()
}

fn report_reading(what: &str, report: &ReadReport) {
    if report.repaired_sequences > 0 || report.skipped > 0 {
        eprintln!(
            "{what}: {} examples, {} tag sequences repaired, {} skipped",
            report.examples, report.repaired_sequences, report.skipped
        );
        for w in report.warnings.iter().take(5) {
            eprintln!("  warning: {w}");
        }
        if report.warnings.len() > 5 {
            eprintln!("  ... and {} more warnings", report.warnings.len() - 5);
        }
    }
}

/// Data for training: train, validation and (when the data has one) test examples.
struct TrainData {
    train: Vec<Example>,
    valid: Option<Vec<Example>>,
    test: Option<Vec<Example>>,
}

fn load_train_data(args: &TrainArgs, opts: &ReadOptions) -> Result<TrainData> {
    let format = format_arg(&args.data.format)?;
    let (splits, report) = read_splits(&args.data.data, format, opts)?;
    report_reading("training data", &report);
    let valid = match &args.valid {
        Some(path) => {
            let (v, report) = read_examples(path, format, opts)?;
            report_reading("validation data", &report);
            Some(v)
        }
        None => splits.dev,
    };
    Ok(TrainData {
        train: splits.train,
        valid,
        test: splits.test,
    })
}

pub fn train(args: TrainArgs) -> Result<()> {
    let started = Instant::now();
    // A new run: a forgotten --overwrite (or a directory that is not a run) is said at once.
    if !args.resume {
        RunDir::check_new(&args.out, args.overwrite)?;
    }
    // A run to resume is locked and recovered from any kill before anything is read from it.
    let mut resumed = if args.resume {
        inputs::check_resumable(&args.out)?;
        let run = RunDir::open(&args.out)?;
        let point = mtl::train::rundir::resume_point(run.path())?;
        eprintln!(
            "resuming {} after epoch {} of {} (step {})",
            args.out.display(),
            point.epochs_done,
            point.epochs,
            point.step
        );
        Some(run)
    } else {
        None
    };
    let run_config = args.out.join(inputs::RUN_CONFIG_FILE);
    let mut file = match (&args.config, &args.pretrained) {
        (Some(path), _) => FileConfig::load(path)?,
        // Resuming: the run's own configuration, which the flags must then leave as it is.
        (None, _) if args.resume && run_config.is_file() => FileConfig::load(&run_config)?,
        // No config file: fine-tuning a checkpoint wants other defaults than training from
        // scratch.
        (None, Some(_)) => FileConfig::fine_tuning(),
        (None, None) => FileConfig::default(),
    };
    let t: &mut TrainConfig = &mut file.train;
    if let Some(v) = args.epochs {
        // Exactly the epochs asked for: no more for `min_steps`.
        t.epochs = v;
        t.min_steps = None;
    }
    if let Some(v) = args.seed {
        t.seed = v;
    }
    if let Some(v) = args.lr {
        t.learning_rate = v;
    }
    if let Some(v) = args.batch_size {
        t.batch_size = v;
    }
    if let Some(s) = &args.sampling {
        t.sampling = s.parse().map_err(anyhow::Error::msg)?;
    }
    if args.plain {
        t.progress = ProgressMode::Plain;
    }
    if let Some(dir) = &args.pretrained {
        file.model.pretrained = Some(dir.clone());
    }
    // Everything is checked before a run directory is touched.
    t.validate()?;
    let devices = match args
        .devices
        .clone()
        .or_else(|| t.devices.as_ref().map(|d| d.join(",")))
    {
        Some(list) => device::parse_list(&list)?,
        None => device::training_devices(&args.device, t.batch_size)?,
    };
    let device = devices[0].clone();
    if devices.len() > 1 {
        eprintln!("data-parallel training on {} replicas", devices.len());
    }
    let words = if args.resume {
        let last = inputs::check_resumable(&args.out)?;
        inputs::check_resume_flags(&args.out, &file, args.config.is_some())?;
        // Split raw text as the run was trained to, whatever the config now says.
        Encoder::load(&last)?.words
    } else {
        file.tokenizer.words
    };
    let opts = ReadOptions {
        scheme: file.data.scheme()?,
        lenient: file.data.lenient,
        words,
    };
    let data = load_train_data(&args, &opts)?;
    eprintln!(
        "data: {} train, {} validation, {} test examples",
        data.train.len(),
        data.valid.as_ref().map_or(0, Vec::len),
        data.test.as_ref().map_or(0, Vec::len)
    );
    inputs::check_train_annotations(&data.train, &args.data.data)?;
    file.train.select_metric.check_data(data.valid.as_deref())?;
    if data.valid.is_none() {
        eprintln!(
            "warning: no validation data ({} has no dev split and --valid is not given): no \
             early stopping, no best epoch (best/ is the last epoch), and no validation metrics",
            args.data.data.display()
        );
    }
    let provenance = inputs::provenance(&[
        ("train", Some(&data.train)),
        ("valid", data.valid.as_deref()),
        ("test", data.test.as_deref()),
    ])?;

    let (outcome, run) = if let Some(mut run) = resumed.take() {
        inputs::write_provenance(run.path(), provenance, true)?;
        let outcome = resume_in(
            &mut run,
            &data.train,
            data.valid.as_deref(),
            args.epochs,
            None,
            &devices,
        )?;
        (outcome, run)
    } else {
        let hf = file
            .model
            .pretrained
            .as_ref()
            .map(|dir| HfConfig::read(dir))
            .transpose()?;
        let max_seq_length = match &hf {
            Some(hf) => file.model.max_seq_length.min(hf.max_seq_length()),
            None => file.model.max_seq_length,
        };
        let text = match (file.tokenizer.kind, &file.model.pretrained) {
            // A checkpoint brings its tokenizer, unless [tokenizer] names another file.
            (TokenizerKind::Word, Some(dir)) => {
                let path = dir.join(TOKENIZER_FILE);
                if !path.is_file() {
                    bail!(
                        "the pretrained checkpoint {} has no {TOKENIZER_FILE}; name one with \
                         [tokenizer] kind = \"huggingface\", path = ...",
                        dir.display()
                    );
                }
                TextEncoder::from_tokenizer_file(&path)?
            }
            (TokenizerKind::Word, None) => {
                let cfg = WordVocabConfig {
                    lowercase: file.tokenizer.lowercase,
                    min_freq: file.tokenizer.min_freq,
                    max_size: file.tokenizer.max_size,
                };
                TextEncoder::Word(WordVocab::build(&data.train, &cfg))
            }
            (TokenizerKind::Huggingface, _) => {
                let path = file
                    .tokenizer
                    .path
                    .as_ref()
                    .context("[tokenizer] kind = \"huggingface\" needs a path")?;
                TextEncoder::from_tokenizer_file(path)?
            }
        };
        let encoder = Encoder::build(&data.train, text, max_seq_length)?
            .with_chars(file.model.char_spec()?)?
            .with_words(words);
        for (what, examples) in [
            ("training", Some(&data.train)),
            ("validation", data.valid.as_ref()),
        ] {
            let Some(examples) = examples else { continue };
            let (_, enc_report) = encoder.encode_all(examples)?;
            if enc_report.truncated > 0 {
                eprintln!(
                    "{} of {} {what} examples truncated to max_seq_length {max_seq_length} \
                     (words past it are not {})",
                    enc_report.truncated,
                    examples.len(),
                    if what == "training" {
                        "learned from"
                    } else {
                        "scored as predicted"
                    }
                );
            }
        }
        if let Some(valid) = &data.valid {
            inputs::warn_unseen("validation", valid, &encoder);
        }
        let config = match &hf {
            Some(hf) => {
                file.model
                    .to_pretrained_config(hf, encoder.labels.len(), encoder.tags.len())
            }
            None => file.model.to_config(
                encoder.text.vocab_size(),
                encoder.labels.len(),
                encoder.tags.len(),
                encoder.text.pad_id(),
            ),
        };
        // The counts of labels.json and tags.json (the heads have at least one output).
        eprintln!(
            "model: vocab {}, {} sentence labels, {} tags, d_model {}, {} heads, {} layers, ff {}",
            config.vocab_size,
            encoder.labels.len(),
            encoder.tags.len(),
            config.d_model,
            config.nhead,
            config.num_encoder_layers,
            config.dim_feedforward
        );
        device.seed(file.train.seed);
        let model = MultitaskTransformer::new(&config, &device)?;
        let model = match &file.model.pretrained {
            Some(dir) => {
                let (model, report) = hf::load_encoder(dir, model)?;
                eprintln!(
                    "pretrained encoder: {} tensors from {}",
                    report.used.len(),
                    report.path.display()
                );
                if !report.unused.is_empty() {
                    eprintln!(
                        "unused tensors in {} ({}): {}",
                        report.path.display(),
                        report.unused.len(),
                        report.unused.join(", ")
                    );
                }
                model
            }
            None => model,
        };
        // An earlier run in --out is replaced only once this one has written its first
        // checkpoint; until then this run lives beside it.
        let mut run = RunDir::create(&args.out, args.overwrite)?;
        if args.overwrite && run.path() != args.out {
            eprintln!(
                "training beside the run in {}: it is replaced once the first epoch is saved",
                args.out.display()
            );
        }
        inputs::write_provenance(run.path(), provenance, false)?;
        let toml = toml::to_string_pretty(&file).context("cannot serialise the config")?;
        let config_path = run.path().join(inputs::RUN_CONFIG_FILE);
        mtl::model::write_atomic(&config_path, toml.as_bytes())
            .with_context(|| format!("cannot write {}", config_path.display()))?;
        let outcome = fit_in(
            model,
            &encoder,
            &data.train,
            data.valid.as_deref(),
            &file.train,
            Some(&mut run),
            None,
            &devices,
        )?;
        (outcome, run)
    };
    let out = run.final_path().to_path_buf();

    // The epoch `best/` holds, as the trainer chose it (ties go to the first).
    let best_epoch = outcome.best_epoch;
    let curve = out.join("training_curve.svg");
    plot::training_curve(&outcome.history, best_epoch, &curve)?;
    // Final figures come from the best checkpoint, as `mtl eval` would load it.
    let (model, encoder) = mtl::train::trainer::load_model_dir(&out, &device)?;
    let model = model.valid();
    let batch = file.train.eval_batch_size;
    let mut metrics = serde_json::Map::new();
    metrics.insert("epochs".into(), json!(outcome.history.epochs.len()));
    metrics.insert("best_epoch".into(), json!(best_epoch));
    metrics.insert("stopped_early".into(), json!(outcome.stopped_early));
    metrics.insert("model".into(), json!(out.join(BEST_DIR)));
    for (name, examples) in [("valid", &data.valid), ("test", &data.test)] {
        if let Some(examples) = examples {
            let options = PredictOptions::new(batch).with_engine(InferenceEngine::auto(&device));
            let (report, _) = evaluate_with(&model, &encoder, examples, &options, &device)?;
            let mut split = eval_json(&report);
            if let Some(object) = split.as_object_mut() {
                let (_, encode_report) = encoder.encode_all(examples)?;
                object.insert("truncated".into(), json!(encode_report.truncated));
            }
            metrics.insert(name.into(), split);
        }
    }
    metrics.insert(
        "train_seconds".into(),
        json!(started.elapsed().as_secs_f64()),
    );
    let text = serde_json::to_string_pretty(&metrics)?;
    let path = out.join("metrics.json");
    mtl::model::write_atomic(&path, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("{text}");
    eprintln!(
        "run written to {} (best model in {}/best, curve in {})",
        out.display(),
        out.display(),
        curve.display()
    );
    drop(run);
    Ok(())
}

fn eval_json(report: &EvalReport) -> serde_json::Value {
    let mut v = serde_json::to_value(report).unwrap_or_default();
    if let Some(ner) = v.get_mut("ner").and_then(|n| n.as_object_mut())
        && let Some(m) = ner.remove("macro_avg")
    {
        ner.insert("macro".into(), m);
    }
    v
}

pub fn eval(args: EvalArgs) -> Result<()> {
    let device = device::parse(&args.device)?;
    let (model, encoder) = inputs::load_model(&args.model, &device)?;
    let model = model.valid();
    // The data is read as the run read its own: tag scheme and lenient mode from its
    // config.toml (when the model is a run's), words split as the encoder was trained to.
    let data = inputs::run_data_options(&args.model)?;
    let opts = ReadOptions {
        scheme: data.scheme()?,
        lenient: data.lenient,
        words: encoder.words,
    };
    let (examples, report) = inputs::read_eval_data(
        &args.data.data,
        args.split.as_deref(),
        format_arg(&args.data.format)?,
        &opts,
    )?;
    report_reading("evaluation data", &report);
    if let Some(path) = &args.predictions {
        inputs::check_output(path, &examples, &args.data.data, &args.model)?;
    }
    let unseen = inputs::warn_unseen("evaluation", &examples, &encoder);
    let (encoded, encode_report) = encoder.encode_all(&examples)?;
    if encode_report.truncated > 0 {
        eprintln!(
            "warning: {} of {} evaluation examples truncated to max_seq_length {}: words past \
             it are predicted O",
            encode_report.truncated,
            examples.len(),
            encoder.max_seq_length
        );
    }
    let options = PredictOptions::new(args.batch_size)
        .with_decoding(decoding_arg(&args.decoding)?)
        .with_engine(engine_arg(&args.engine, &device)?);
    let (predictions, losses) =
        predict_encoded(&model, &encoder, &examples, &encoded, &options, &device)?;
    let report = score_predictions(&examples, &predictions, losses)?;
    if let Some(path) = &args.predictions {
        write_conll(path, &examples, &predictions)?;
        eprintln!("predictions written to {}", path.display());
    }
    let mut out = eval_json(&report);
    if let Some(object) = out.as_object_mut() {
        object.insert("truncated".into(), json!(encode_report.truncated));
        object.insert("unseen".into(), unseen);
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn decoding_arg(name: &str) -> Result<TagDecoding> {
    Ok(name.parse::<TagDecoding>()?)
}

/// `--engine`: `auto` is the packed path on the CPU device and the Burn model elsewhere
/// ([`InferenceEngine::auto`]).
pub(crate) fn engine_arg(name: &str, device: &Device) -> Result<InferenceEngine> {
    match name {
        "auto" => Ok(InferenceEngine::auto(device)),
        "burn" => Ok(InferenceEngine::Burn),
        "packed" => Ok(InferenceEngine::Packed),
        other => bail!("unknown --engine {other:?}: expected auto, packed or burn"),
    }
}

/// Writes the predictions whole, replacing `path` only once they are all written (an earlier
/// file there is never truncated first).
fn write_conll(path: &Path, examples: &[Example], predictions: &[Prediction]) -> Result<()> {
    let mut w: Vec<u8> = Vec::new();
    for (ex, p) in examples.iter().zip(predictions) {
        if let Some(label) = &ex.label {
            writeln!(w, "# gold_label = {label}")?;
        }
        writeln!(w, "# label = {}", p.label.name)?;
        for (i, word) in ex.words.iter().enumerate() {
            let gold = ex
                .tags
                .as_ref()
                .and_then(|t| t.get(i))
                .map_or("_", String::as_str);
            let pred = p.tags.get(i).map_or("O", String::as_str);
            writeln!(w, "{word}\t{gold}\t{pred}")?;
        }
        writeln!(w)?;
    }
    mtl::model::write_atomic(path, &w).with_context(|| format!("cannot write {}", path.display()))
}

pub fn predict(args: PredictArgs) -> Result<()> {
    let device = device::parse(&args.device)?;
    let (model, encoder) = inputs::load_model(&args.model, &device)?;
    let predictor = Predictor::new(model.valid(), engine_arg(&args.engine, &device)?, &device);
    let options = PredictOptions::new(args.batch_size)
        .with_top_k(args.top_k as usize)
        .with_decoding(decoding_arg(&args.decoding)?);
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut truncated = 0;
    if !args.texts.is_empty() {
        truncated += predict_chunk(&predictor, &encoder, &args.texts, &options, &mut out)?;
    } else {
        let stdin = std::io::stdin();
        let mut chunk = Vec::with_capacity(1024);
        for line in stdin.lock().lines() {
            chunk.push(line.context("cannot read stdin")?);
            if chunk.len() == 1024 {
                truncated += predict_chunk(&predictor, &encoder, &chunk, &options, &mut out)?;
                chunk.clear();
            }
        }
        truncated += predict_chunk(&predictor, &encoder, &chunk, &options, &mut out)?;
    }
    out.flush()?;
    if truncated > 0 {
        eprintln!(
            "warning: {truncated} texts longer than the model's {} tokens were truncated \
             (\"truncated\": true): words past the limit get no entities",
            encoder.max_seq_length
        );
    }
    Ok(())
}

/// Labels `texts` and writes one JSON line each; returns how many were truncated.
fn predict_chunk(
    predictor: &Predictor,
    encoder: &Encoder,
    texts: &[String],
    options: &PredictOptions,
    out: &mut impl Write,
) -> Result<usize> {
    let prepared = texts
        .iter()
        .map(|t| PreparedText::new(encoder, t))
        .collect::<Result<Vec<_>, _>>()?;
    let truncated = prepared.iter().filter(|t| t.truncated()).count();
    for answer in predictor.predict_texts(encoder, prepared, options)? {
        writeln!(out, "{}", answer.to_json())?;
    }
    Ok(truncated)
}

/// One sentence of a column file: the line it starts on and, for each requested column, its
/// tags.
struct TagSentence {
    line: usize,
    columns: Vec<Vec<String>>,
}

/// Reads CoNLL columns: blank lines between sentences, `-DOCSTART-` and sentence-initial `# `
/// comment lines skipped. For each of `columns` (1-based; `None`: the last column) the tags
/// as written.
fn read_tag_columns(path: &Path, columns: &[Option<usize>]) -> Result<Vec<TagSentence>> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{}: invalid UTF-8 at byte {}",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut sentences = Vec::new();
    let mut current: Option<TagSentence> = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            sentences.extend(current.take());
            continue;
        }
        if line.starts_with("-DOCSTART-") || (current.is_none() && line.starts_with("# ")) {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let sentence = current.get_or_insert_with(|| TagSentence {
            line: i + 1,
            columns: vec![Vec::new(); columns.len()],
        });
        for (column, tags) in columns.iter().zip(&mut sentence.columns) {
            let tag = match column {
                None if fields.len() >= 2 => fields[fields.len() - 1],
                None => bail!(
                    "{}:{}: expected a word and a tag, found {line:?}",
                    path.display(),
                    i + 1
                ),
                Some(c) => match fields.get(c - 1) {
                    Some(tag) => *tag,
                    None => bail!(
                        "{}:{}: expected a tag in column {c}, found {} columns in {line:?}",
                        path.display(),
                        i + 1,
                        fields.len()
                    ),
                },
            };
            tags.push(tag.to_owned());
        }
    }
    sentences.extend(current);
    Ok(sentences)
}

pub fn score(args: ScoreArgs) -> Result<()> {
    let scheme: Scheme = args.scheme.parse()?;
    let mode: Mode = args.mode.parse()?;
    let column = |c: Option<u32>| c.map(|c| c as usize);
    let (gold, pred, gold_path, pred_path) = match (&args.predictions, &args.gold, &args.pred) {
        (Some(path), _, _) => {
            let columns = [
                Some(column(args.gold_column).unwrap_or(2)),
                Some(column(args.pred_column).unwrap_or(3)),
            ];
            let sentences = read_tag_columns(path, &columns)?;
            let mut gold = Vec::with_capacity(sentences.len());
            let mut pred = Vec::with_capacity(sentences.len());
            for s in sentences {
                let mut columns = s.columns.into_iter();
                let (Some(g), Some(p)) = (columns.next(), columns.next()) else {
                    continue;
                };
                gold.push(TagSentence {
                    line: s.line,
                    columns: vec![g],
                });
                pred.push(TagSentence {
                    line: s.line,
                    columns: vec![p],
                });
            }
            (gold, pred, path.clone(), path.clone())
        }
        (None, Some(g), Some(p))
            if g == p && args.gold_column.is_none() && args.pred_column.is_none() =>
        {
            bail!(
                "--gold and --pred are the same file {}: both would read its last column; \
                 for a file of `mtl eval --predictions` use --predictions FILE (or name the \
                 columns with --gold-column and --pred-column)",
                g.display()
            )
        }
        (None, Some(g), Some(p)) => (
            read_tag_columns(g, &[column(args.gold_column)])?,
            read_tag_columns(p, &[column(args.pred_column)])?,
            g.clone(),
            p.clone(),
        ),
        _ => bail!("give --predictions FILE, or --gold FILE and --pred FILE"),
    };
    if gold.len() != pred.len() {
        bail!(
            "{} and {} do not line up: {} gold sentences, {} predicted",
            gold_path.display(),
            pred_path.display(),
            gold.len(),
            pred.len()
        );
    }
    // `_` gold (as `mtl eval --predictions` writes for sentences without tags) is not scored,
    // as `mtl eval` does not score them.
    let mut gold_tags = Vec::with_capacity(gold.len());
    let mut pred_tags = Vec::with_capacity(pred.len());
    let mut untagged = 0;
    for (g, p) in gold.into_iter().zip(pred) {
        let (Some(g_tags), Some(p_tags)) =
            (g.columns.into_iter().next(), p.columns.into_iter().next())
        else {
            continue;
        };
        let no_tag = g_tags.iter().filter(|t| *t == NO_TAG).count();
        if no_tag == g_tags.len() {
            untagged += 1;
            continue;
        }
        if no_tag > 0 {
            bail!(
                "{}:{}: `_` (no tag) on some words of this sentence and tags on others: \
                 expected a tag on every word or `_` on every word",
                gold_path.display(),
                g.line
            );
        }
        if let Some(bad) = p_tags.iter().find(|t| *t == NO_TAG) {
            bail!(
                "{}:{}: predicted tag {bad:?}: expected a tag on every word of a sentence with \
                 gold tags",
                pred_path.display(),
                p.line
            );
        }
        gold_tags.push(g_tags);
        pred_tags.push(p_tags);
    }
    if gold_tags.is_empty() {
        bail!(
            "{}: no sentence with gold tags to score ({untagged} sentences have `_` only)",
            gold_path.display()
        );
    }
    let report = entity_report(&gold_tags, &pred_tags, scheme, mode).with_context(|| {
        format!(
            "{} and {} do not line up",
            gold_path.display(),
            pred_path.display()
        )
    })?;
    let out = json!({
        "precision": report.precision,
        "recall": report.recall,
        "f1": report.f1,
        "accuracy": report.accuracy,
        "token_accuracy": token_accuracy(&gold_tags, &pred_tags),
        "per_type": report.per_type,
        "micro": report.micro,
        "macro": report.macro_avg,
        "weighted": report.weighted,
        "predicted": report.predicted,
        "gold": report.gold,
        "correct": report.correct,
        "sentences": gold_tags.len(),
        "untagged_sentences": untagged,
        "scheme": scheme.to_string(),
        "mode": mode.to_string(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// Texts from the arguments, else one per line from stdin.
fn input_texts(texts: &[String]) -> Result<Vec<String>> {
    if !texts.is_empty() {
        return Ok(texts.to_vec());
    }
    std::io::stdin()
        .lock()
        .lines()
        .collect::<std::io::Result<Vec<_>>>()
        .context("cannot read stdin")
}

pub fn embed(args: EmbedArgs) -> Result<()> {
    let device = device::parse(&args.device)?;
    let (model, encoder) = match (&args.model, &args.pretrained) {
        (Some(dir), _) => inputs::load_model(dir, &device)?,
        (None, Some(dir)) => {
            let (model, _) = hf::from_pretrained(dir, 1, 1, mtl::model::Pooling::Mean, &device)?;
            let text = TextEncoder::from_tokenizer_file(&dir.join(TOKENIZER_FILE))?;
            let limit = model.config().max_seq_length.min(512);
            let encoder = Encoder::build(&[], text, limit)?;
            mtl::train::check_chars(&model, &encoder)?;
            (model, encoder)
        }
        (None, None) => bail!("give --model or --pretrained"),
    };
    let mut encoder = encoder;
    match args.max_length {
        Some(n) if n == 0 || n > model.config().max_seq_length => bail!(
            "--max-length {n} is outside 1..={}",
            model.config().max_seq_length
        ),
        Some(n) => encoder.max_seq_length = n,
        None => {}
    }
    let texts = input_texts(&args.texts)?;
    let examples: Vec<Example> = texts.iter().map(|t| encoder.example(t)).collect();
    let (encoded, report) = encoder.encode_all(&examples)?;
    if report.truncated > 0 {
        eprintln!(
            "{} texts truncated to {} tokens",
            report.truncated, encoder.max_seq_length
        );
    }
    let vectors = embed_encoded(
        &model,
        &encoder,
        &encoded,
        args.batch_size.max(1),
        args.normalize,
        &device,
    )?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for (text, v) in texts.iter().zip(vectors) {
        writeln!(out, "{}", json!({"text": text, "embedding": v}))?;
    }
    out.flush()?;
    Ok(())
}

pub fn export(args: ExportArgs) -> Result<()> {
    if args.format != "hf" {
        bail!("unknown --format {:?}: expected hf", args.format);
    }
    let device = device::parse("cpu")?;
    let (model, encoder) = inputs::load_model(&args.model, &device)?;
    hf::save_encoder(&model, &args.out)
        .with_context(|| format!("cannot export to {}", args.out.display()))?;
    encoder.save(&args.out)?;
    eprintln!(
        "encoder and heads written to {} (config.json, model.safetensors, tokenizer files)",
        args.out.display()
    );
    Ok(())
}
