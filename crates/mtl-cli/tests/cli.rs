//! End-to-end tests of the `mtl` binary: train on a tiny dataset, eval, predict, score, and the
//! error cases (one clear line, non-zero exit, never a panic).

use std::path::Path;
use std::process::{Command, Output, Stdio};

mod common;
use common::{mtl, scratch, stderr, trained_run, workspace};

/// `mtl score --gold GOLD --pred PRED`.
fn score(gold: &Path, pred: &Path) -> Output {
    mtl(&[
        "score",
        "--gold",
        gold.to_str().expect("utf8"),
        "--pred",
        pred.to_str().expect("utf8"),
    ])
}

/// Asserts a clean failure: non-zero exit, an `error:` line naming `needle`, no panic.
fn assert_clean_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "should fail: {err}");
    assert!(
        !err.contains("panicked"),
        "panic instead of an error: {err}"
    );
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in {err}"));
    assert!(
        line.contains(needle),
        "{line:?} does not mention {needle:?}"
    );
}

#[test]
fn train_eval_writes_every_metric_and_predictions() {
    let run = trained_run();
    let preds = scratch("eval").join("pred.conll");
    let o = mtl(&[
        "eval",
        "--model",
        run.to_str().expect("utf8"),
        "--data",
        "data/quickstart",
        "--split",
        "test",
        "--predictions",
        preds.to_str().expect("utf8"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    for path in [
        "/classification/accuracy",
        "/classification/macro_f1",
        "/classification/loss",
        "/ner/precision",
        "/ner/recall",
        "/ner/f1",
        "/ner/token_accuracy",
        "/ner/loss",
        "/frame_accuracy",
    ] {
        let v = r.pointer(path).and_then(|v| v.as_f64());
        assert!(
            v.is_some_and(|v| v.is_finite() && v >= 0.0),
            "eval output {path}: {v:?}"
        );
    }
    assert!(
        r.pointer("/ner/per_type").is_some_and(|v| v.is_object()),
        "per_type"
    );
    let acc = r
        .pointer("/classification/accuracy")
        .and_then(|v| v.as_f64())
        .expect("accuracy");
    assert!((0.0..=1.0).contains(&acc));
    // The predictions file scores to the same entity F1 with `mtl score`.
    let gold = scratch("eval").join("gold.conll");
    let text = std::fs::read_to_string(&preds).expect("predictions");
    let gold_text: String = text
        .lines()
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            if cols.len() == 3 {
                format!("{}\t{}\n", cols[0], cols[1])
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&gold, gold_text).expect("gold");
    let s = score(&gold, &preds);
    assert!(s.status.success(), "{}", stderr(&s));
    let sr: serde_json::Value = serde_json::from_slice(&s.stdout).expect("JSON");
    let f1 = |v: &serde_json::Value, p: &str| v.pointer(p).and_then(|x| x.as_f64()).expect("f1");
    assert!((f1(&sr, "/f1") - f1(&r, "/ner/f1")).abs() < 1e-12);
}

#[test]
fn predict_gives_offsets_into_the_raw_text() {
    let run = trained_run();
    let texts = [
        "set an alarm for 7 am tomorrow",
        "  play  Ed Sheeran’s song  ",
        "what's the weather in new york",
    ];
    let mut args = vec!["predict", "--model", run.to_str().expect("utf8")];
    args.extend(texts);
    let o = mtl(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), texts.len());
    for (line, text) in lines.iter().zip(texts) {
        assert_eq!(line["text"], text);
        assert!(line["label"]["name"].is_string() && line["label"]["score"].is_number());
        assert_eq!(line["top_k"].as_array().expect("top_k").len(), 3);
        let chars: Vec<char> = text.chars().collect();
        for e in line["entities"].as_array().expect("entities") {
            let (s, t) = (
                e["start"].as_u64().expect("start") as usize,
                e["end"].as_u64().expect("end") as usize,
            );
            let covered: String = chars[s..t].iter().collect();
            assert_eq!(covered, e["text"].as_str().expect("text"));
        }
    }
    // stdin, with an empty line kept in place.
    let mut child = Command::new(env!("CARGO_BIN_EXE_mtl"))
        .args(["predict", "--model", run.to_str().expect("utf8")])
        .current_dir(workspace())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"call mom\n\nplay jazz\n").expect("write");
    }
    let out = child.wait_with_output().expect("output");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
}

#[test]
fn score_matches_seqeval_on_a_known_case() {
    let dir = scratch("score");
    let (gold, pred) = (dir.join("gold.txt"), dir.join("pred.txt"));
    // seqeval (default mode): gold PER, LOC (Paris), MISC; predicted PER, LOC (Paris), MISC and a
    // LOC from the sentence-initial I-LOC on "new" -> 3 correct of 4 predicted, 3 gold:
    // P = 3/4, R = 1, F1 = 6/7; LOC precision 1/2.
    std::fs::write(
        &gold,
        "-DOCSTART- O\n\nJohn B-PER\nSmith I-PER\nin O\nParis B-LOC\n\nnew O\nGerman B-MISC\n",
    )
    .expect("gold");
    std::fs::write(
        &pred,
        "John x B-PER\nSmith x I-PER\nin x O\nParis x B-LOC\n\nnew x I-LOC\nGerman x B-MISC\n",
    )
    .expect("pred");
    let o = score(&gold, &pred);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    for (key, want) in [
        ("/precision", 0.75),
        ("/recall", 1.0),
        ("/f1", 6.0 / 7.0),
        ("/per_type/LOC/precision", 0.5),
    ] {
        let got = r.pointer(key).and_then(|v| v.as_f64()).expect("number");
        assert!((got - want).abs() < 1e-12, "{key}: {r}");
    }
    assert_eq!(
        r.pointer("/per_type/LOC/support").and_then(|v| v.as_u64()),
        Some(1)
    );
    assert!(r.pointer("/accuracy").and_then(|v| v.as_f64()).is_some());
    for key in ["/macro", "/weighted", "/per_type"] {
        assert!(
            r.pointer(key).is_some_and(|v| v.is_object()),
            "score lacks {key}"
        );
    }
}

#[test]
fn errors_are_one_clear_line() {
    let missing = mtl(&[
        "eval",
        "--model",
        "runs/does-not-exist",
        "--data",
        "data/quickstart",
    ]);
    assert_clean_error(&missing, "does-not-exist");
    let no_data = mtl(&[
        "train",
        "--data",
        "no/such/file.conll",
        "--out",
        "/tmp/never",
    ]);
    assert_clean_error(&no_data, "no/such/file.conll");
    let bad_format = mtl(&[
        "train",
        "--data",
        "data/quickstart",
        "--format",
        "xml",
        "--out",
        "/tmp/never",
    ]);
    assert_clean_error(&bad_format, "xml");
    let bad_device = mtl(&["predict", "--model", "runs/x", "--device", "tpu", "hi"]);
    assert_clean_error(&bad_device, "tpu");
    let dir = scratch("err");
    let (gold, pred) = (dir.join("g.txt"), dir.join("p.txt"));
    std::fs::write(&gold, "a B-X\nb O\n").expect("gold");
    std::fs::write(&pred, "a B-X\n").expect("pred");
    let o = score(&gold, &pred);
    assert_clean_error(&o, "line up");

    // A model directory from another format version.
    let run = trained_run();
    let old = scratch("old-model");
    for f in std::fs::read_dir(run.join("best")).expect("best") {
        let f = f.expect("entry").path();
        std::fs::copy(&f, old.join(f.file_name().expect("name"))).expect("copy");
    }
    let cfg = old.join("config.json");
    let text = std::fs::read_to_string(&cfg)
        .expect("config")
        .replace("\"format_version\": 1", "\"format_version\": 7");
    std::fs::write(&cfg, text).expect("config");
    assert_clean_error(
        &mtl(&["predict", "--model", old.to_str().expect("utf8"), "hi"]),
        "format version",
    );

    // An existing run directory is never replaced silently.
    let again = mtl(&[
        "train",
        "--data",
        "data/quickstart",
        "--out",
        run.to_str().expect("utf8"),
        "--epochs",
        "1",
    ]);
    assert_clean_error(&again, "already exists");
}

/// `(text, embedding)` of each JSON line `mtl embed` printed.
fn embeddings(o: &Output) -> Vec<(String, Vec<f64>)> {
    assert!(o.status.success(), "embed failed: {}", stderr(o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            let text = v["text"].as_str().expect("text").to_string();
            let e = v["embedding"]
                .as_array()
                .expect("embedding")
                .iter()
                .map(|x| x.as_f64().expect("number"))
                .collect();
            (text, e)
        })
        .collect()
}

/// Fine-tunes the tiny random BERT fixture (config.json, model.safetensors, tokenizer.json)
/// for an epoch, exports it in HuggingFace layout, and reads both back through `embed`.
#[test]
fn pretrained_fine_tune_export_and_embed() {
    let ckpt = workspace().join("crates/mtl-model/tests/fixtures/hf/bert");
    let ckpt = ckpt.to_str().expect("utf8");
    let dir = scratch("pretrained");
    let run = dir.join("run");
    let run = run.to_str().expect("utf8");
    let o = mtl(&[
        "train",
        "--pretrained",
        ckpt,
        "--data",
        "data/quickstart",
        "--out",
        run,
        "--epochs",
        "1",
        "--plain",
        "--overwrite",
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "train failed: {err}");
    assert!(err.contains("pretrained encoder: 37 tensors"), "{err}");
    assert!(
        err.contains("unused tensors") && err.contains("pooler.dense.weight"),
        "unused tensors are listed: {err}"
    );
    // The run directory is self-contained: predict needs nothing else.
    let o = mtl(&["predict", "--model", run, "wake me up at 6 30 am"]);
    assert!(o.status.success(), "predict failed: {}", stderr(&o));

    let export = dir.join("export");
    let export = export.to_str().expect("utf8");
    let o = mtl(&["export", "--model", run, "--out", export]);
    assert!(o.status.success(), "export failed: {}", stderr(&o));
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "labels.json",
    ] {
        assert!(Path::new(export).join(file).is_file(), "{file} exported");
    }

    let texts = ["wake me up at 6 30 am", "play some jazz"];
    let from_run = embeddings(&mtl(&["embed", "--model", run, texts[0], texts[1]]));
    let from_export = embeddings(&mtl(&["embed", "--pretrained", export, texts[0], texts[1]]));
    assert_eq!(from_run.len(), 2);
    for ((ta, a), (tb, b)) in from_run.iter().zip(&from_export) {
        assert_eq!(ta, tb);
        assert_eq!(a.len(), 32, "hidden size of the tiny BERT");
        let diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        assert!(diff < 1e-6, "export changed the encoder: {diff}");
    }
    // The fine-tuned encoder is not the checkpoint's any more.
    let original = embeddings(&mtl(&["embed", "--pretrained", ckpt, texts[0]]));
    let moved = original[0]
        .1
        .iter()
        .zip(&from_run[0].1)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(
        moved > 1e-4,
        "one epoch of fine-tuning moved the encoder: {moved}"
    );
    let unit = embeddings(&mtl(&["embed", "--model", run, "--normalize", texts[0]]));
    let norm: f64 = unit[0].1.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "unit length: {norm}");
}

#[test]
fn pretrained_errors_are_one_clear_line() {
    let o = mtl(&[
        "train",
        "--pretrained",
        "no/such/checkpoint",
        "--data",
        "data/quickstart",
        "--out",
        scratch("pretrained-missing")
            .join("run")
            .to_str()
            .expect("utf8"),
    ]);
    assert_clean_error(&o, "no/such/checkpoint/config.json");
    let o = mtl(&["embed", "--pretrained", "data/quickstart", "hello"]);
    assert_clean_error(&o, "config.json");
    let o = mtl(&[
        "export",
        "--model",
        trained_run().to_str().expect("utf8"),
        "--out",
        "/tmp/x",
    ]);
    assert_clean_error(&o, "not built from a pretrained checkpoint");
}

/// The last `error:` line of a failed command; asserts a clean failure naming `needle` whose
/// clauses (the parts between `: `) are each said once.
fn error_said_once(o: &Output, needle: &str) -> String {
    assert_clean_error(o, needle);
    let err = stderr(o);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {err}");
    let line = errors[0].trim_start_matches("error:").trim();
    let clauses: Vec<&str> = line.split(": ").map(str::trim).collect();
    for (i, clause) in clauses.iter().enumerate() {
        assert!(
            !clauses[..i]
                .iter()
                .any(|c| c.contains(clause) || clause.contains(c)),
            "clause {clause:?} repeats in {line:?}"
        );
    }
    line.to_owned()
}

/// Every failing command a user is likely to meet prints one error line, naming what is
/// wrong and what was expected, with no clause said twice.
#[test]
fn errors_are_said_once() {
    let run = trained_run().to_str().expect("utf8").to_owned();
    let dir = scratch("said-once");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path.to_str().expect("utf8").to_owned()
    };
    let typo = write(
        "typo.jsonl",
        "{\"text\": \"refund please\", \"label\": \"Refund\"}\n{\"text\": \"hi\", \"intent\": \"Greet\"}\n",
    );
    let malformed = write("bad.jsonl", "{\"text\": \"hi\", \"label\": }\n");
    let prefixed = write(
        "prefixed.jsonl",
        "{\"text\": \"buy kindle\", \"entities\": [{\"start\": 4, \"end\": 10, \"label\": \"B-product\"}]}\n",
    );
    let no_labels = write("none.conll", "hello\nworld\n");
    let out = dir.join("out").to_str().expect("utf8").to_owned();
    let catalogue: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["train", "--data", "data/x.jsonl", "--out", &out],
            "data/x.jsonl: No such file or directory",
        ),
        (
            vec!["train", "--data", &typo, "--out", &out],
            "typo.jsonl:2: unknown key `intent`: expected only text, tokens, tags, label, entities, id, meta (did you mean `label`?)",
        ),
        (
            vec!["train", "--data", &malformed, "--out", &out],
            "bad.jsonl:1: malformed JSON line",
        ),
        (
            vec!["train", "--data", &prefixed, "--out", &out],
            "without a B-/I- prefix, such as `product`",
        ),
        (
            vec!["train", "--data", &no_labels, "--out", &out],
            "no sentence labels and no tags",
        ),
        (
            vec![
                "train",
                "--data",
                "data/quickstart",
                "--out",
                &out,
                "--devices",
                "cpu,tpu",
            ],
            "unknown device \"tpu\"",
        ),
        (
            vec![
                "train",
                "--data",
                "data/quickstart",
                "--out",
                "runs/never-trained-here",
                "--resume",
            ],
            "nothing to resume",
        ),
        (
            vec!["eval", "--model", "data", "--data", "data/quickstart"],
            "data is not a model: expected a run directory",
        ),
        (
            vec![
                "eval",
                "--model",
                "runs/does-not-exist",
                "--data",
                "data/quickstart",
            ],
            "model runs/does-not-exist does not exist",
        ),
        (
            vec![
                "eval",
                "--model",
                &run,
                "--data",
                "data/quickstart",
                "--split",
                "testing",
            ],
            "no split `testing`: the splits found are dev, test, train",
        ),
        (
            vec!["predict", "--model", &run, "--device", "gpu", "hi"],
            "unknown device \"gpu\"",
        ),
        (
            vec!["predict", "--model", &run, "--top-k", "0", "hi"],
            "--top-k",
        ),
        (
            vec!["score", "--predictions", "no/such.conll"],
            "no/such.conll: No such file or directory",
        ),
        (
            vec!["score", "--gold", "a.conll", "--pred", "a.conll"],
            "use --predictions FILE",
        ),
    ];
    for (args, needle) in catalogue {
        let o = mtl(&args);
        let line = error_said_once(&o, needle);
        eprintln!("{args:?}\n  -> {line}");
    }
}

/// `_` gold (no tags) is skipped, and `mtl score --predictions` gives `mtl eval`'s figures on
/// partially annotated data.
#[test]
fn score_reads_eval_predictions_with_eval_figures() {
    let run = trained_run().to_str().expect("utf8").to_owned();
    let dir = scratch("score-eval");
    // The quickstart test split as JSONL tokens, every third example without tags and every
    // fifth without a label.
    let root = workspace().join("data/quickstart/test");
    let read = |f: &str| std::fs::read_to_string(root.join(f)).expect("quickstart");
    let (words, tags, labels) = (read("seq.in"), read("seq.out"), read("label"));
    let mut jsonl = String::new();
    for (i, ((w, t), l)) in words
        .lines()
        .zip(tags.lines())
        .zip(labels.lines())
        .enumerate()
    {
        let mut record = serde_json::json!({"tokens": w.split_whitespace().collect::<Vec<_>>()});
        if i % 3 != 0 {
            record["tags"] = serde_json::json!(t.split_whitespace().collect::<Vec<_>>());
        }
        if i % 5 != 0 {
            record["label"] = serde_json::json!(l);
        }
        jsonl.push_str(&format!("{record}\n"));
    }
    let data = dir.join("partial.jsonl");
    std::fs::write(&data, jsonl).expect("data");
    let preds = dir.join("pred.conll");
    let o = mtl(&[
        "eval",
        "--model",
        &run,
        "--data",
        data.to_str().expect("utf8"),
        "--predictions",
        preds.to_str().expect("utf8"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let eval: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(
        eval.pointer("/ner/examples").and_then(|v| v.as_u64()),
        Some(100)
    );
    assert_eq!(eval["truncated"], 0);
    let s = mtl(&["score", "--predictions", preds.to_str().expect("utf8")]);
    assert!(s.status.success(), "{}", stderr(&s));
    let score: serde_json::Value = serde_json::from_slice(&s.stdout).expect("JSON");
    assert_eq!(score["sentences"], 100);
    assert_eq!(score["untagged_sentences"], 50);
    for (e, k) in [
        ("/ner/precision", "/precision"),
        ("/ner/recall", "/recall"),
        ("/ner/f1", "/f1"),
        ("/ner/token_accuracy", "/token_accuracy"),
    ] {
        let (a, b) = (
            eval.pointer(e).and_then(|v| v.as_f64()),
            score.pointer(k).and_then(|v| v.as_f64()),
        );
        assert!(a.is_some() && a == b, "{e} {a:?} vs {k} {b:?}");
    }
    // Columns named explicitly: gold against gold is perfect.
    let s = mtl(&[
        "score",
        "--predictions",
        preds.to_str().expect("utf8"),
        "--pred-column",
        "2",
    ]);
    let same: serde_json::Value = serde_json::from_slice(&s.stdout).expect("JSON");
    assert_eq!(same["f1"], 1.0);
    // Training on the file reads `_` as "no tags" (and the predicted column as tags).
    let o = mtl(&[
        "train",
        "--data",
        preds.to_str().expect("utf8"),
        "--format",
        "conll",
        "--epochs",
        "0",
        "--out",
        dir.join("run").to_str().expect("utf8"),
        "--overwrite",
    ]);
    assert!(!stderr(&o).contains("invalid tag `_`"), "{}", stderr(&o));
}

/// Raw text with punctuation, accents and CJK trains (entities next to punctuation are on
/// word boundaries), predicts with the same splitting, and says what it trains.
#[test]
fn raw_text_with_punctuation_trains_and_predicts() {
    let dir = scratch("raw-text");
    let texts = [
        (
            "Refund A91362, please: it broke.",
            "refund",
            Some((7, 13, "order")),
        ),
        (
            "My Kindle, the new one, won't start!",
            "broken",
            Some((3, 9, "product")),
        ),
        ("Where is order B7781?", "status", Some((15, 20, "order"))),
        ("Café crème ordered, no receipt 😕", "refund", None),
        ("我的订单A55在哪里？", "status", None),
    ];
    let mut ner_only = String::new();
    let mut both = String::new();
    for (text, label, entity) in texts {
        let entities: Vec<serde_json::Value> = entity
            .map(|(s, e, l)| serde_json::json!({"start": s, "end": e, "label": l}))
            .into_iter()
            .collect();
        ner_only.push_str(&format!(
            "{}\n",
            serde_json::json!({"text": text, "entities": entities})
        ));
        both.push_str(&format!(
            "{}\n",
            serde_json::json!({"text": text, "label": label, "entities": entities})
        ));
    }
    let config = dir.join("tiny.toml");
    std::fs::write(
        &config,
        "[model]\nd_model = 16\nnhead = 2\nnum_encoder_layers = 1\ndim_feedforward = 32\nmax_seq_length = 8\n\
         [train]\nepochs = 1\nbatch_size = 4\nprogress = \"off\"\n",
    )
    .expect("config");
    let ner_file = dir.join("ner.jsonl");
    std::fs::write(&ner_file, ner_only).expect("data");
    let ner_run = dir.join("ner-run");
    let o = mtl(&[
        "train",
        "--data",
        ner_file.to_str().expect("utf8"),
        "--config",
        config.to_str().expect("utf8"),
        "--out",
        ner_run.to_str().expect("utf8"),
        "--overwrite",
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "no sentence labels in {}: training the NER head only",
            ner_file.display()
        )),
        "{err}"
    );
    assert!(err.contains("warning: no validation data"), "{err}");
    assert!(err.contains("0 sentence labels, 3 tags"), "{err}");
    let labels = std::fs::read_to_string(ner_run.join("best/labels.json")).expect("labels");
    assert!(!labels.contains("refund"), "{labels}");

    let file = dir.join("both.jsonl");
    std::fs::write(&file, both).expect("data");
    let run = dir.join("run");
    let o = mtl(&[
        "train",
        "--data",
        file.to_str().expect("utf8"),
        "--config",
        config.to_str().expect("utf8"),
        "--out",
        run.to_str().expect("utf8"),
        "--overwrite",
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    // Words past max_seq_length 8 are counted.
    assert!(
        err.contains("of 5 training examples truncated to max_seq_length 8"),
        "{err}"
    );
    let encoder: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("best/encoder.json")).expect("encoder"),
    )
    .expect("JSON");
    assert_eq!(encoder["words"], "punctuation");
    let vocab = std::fs::read_to_string(run.join("best/vocab.json")).expect("vocab");
    for word in ["\"a91362\"", "\"kindle\"", "\"订\"", "\"😕\""] {
        assert!(vocab.contains(word), "{word} in {vocab}");
    }
    // Provenance: the data file with its size, sha256 and counts, the version and command.
    let p: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("provenance.json")).expect("provenance"),
    )
    .expect("JSON");
    let f = &p["data"]["train"]["files"][0];
    assert_eq!(
        f["bytes"].as_u64(),
        Some(std::fs::metadata(&file).expect("meta").len())
    );
    assert_eq!(f["sha256"].as_str().map(str::len), Some(64));
    assert_eq!(p["data"]["train"]["examples"], 5);
    assert_eq!(p["data"]["train"]["with_tags"], 5);
    assert_eq!(p["mtl_version"], env!("CARGO_PKG_VERSION"));
    assert!(
        p["command"]
            .as_array()
            .is_some_and(|c| c.iter().any(|a| a == "--overwrite"))
    );

    // Predict splits as training did, and says which texts were truncated.
    let long = format!("{} Kindle, please", "word ".repeat(10));
    let o = mtl(&[
        "predict",
        "--model",
        run.to_str().expect("utf8"),
        "Kindle, please",
        &long,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines[0].get("truncated"), None);
    assert_eq!(lines[1]["truncated"], true);
    assert!(
        stderr(&o).contains("warning: 1 texts longer than the model's 8 tokens were truncated"),
        "{}",
        stderr(&o)
    );
    // Entities start and end on the words `Kindle` [0, 6), `,` [6, 7), `please` [8, 14).
    for e in lines[0]["entities"].as_array().expect("entities") {
        let (start, end) = (e["start"].as_u64(), e["end"].as_u64());
        assert!(
            matches!(start, Some(0 | 6 | 8)) && matches!(end, Some(6 | 7 | 14)),
            "{e}"
        );
    }
}

/// Labels and entity types the model never saw are counted and named; `--split` on a single
/// file is said to be ignored.
#[test]
fn eval_names_unseen_labels_and_an_ignored_split() {
    let run = trained_run().to_str().expect("utf8").to_owned();
    let dir = scratch("unseen");
    let data = dir.join("new.jsonl");
    std::fs::write(
        &data,
        "{\"tokens\": [\"refund\", \"my\", \"kindle\"], \"tags\": [\"O\", \"O\", \"B-product\"], \"label\": \"refund\"}\n\
         {\"tokens\": [\"refund\", \"it\"], \"label\": \"refund\"}\n\
         {\"tokens\": [\"play\", \"jazz\"], \"label\": \"play_music\"}\n",
    )
    .expect("data");
    let o = mtl(&[
        "eval",
        "--model",
        &run,
        "--data",
        data.to_str().expect("utf8"),
        "--split",
        "dev",
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(r["unseen"]["labels"], serde_json::json!({"refund": 2}));
    assert_eq!(
        r["unseen"]["entity_types"],
        serde_json::json!({"product": 1})
    );
    assert!(
        err.contains(
            "warning: 2 evaluation examples have sentence labels the model never saw: refund (2)"
        ),
        "{err}"
    );
    assert!(
        err.contains("warning: 1 evaluation entities have types the model never saw: product (1)"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "warning: --split dev ignored: {} is one file, evaluated whole",
            data.display()
        )),
        "{err}"
    );
}

/// A copy of the shared trained run at `to`, for a test that changes or breaks it.
fn copy_of_trained_run(to: &Path) -> std::path::PathBuf {
    let status = Command::new("cp")
        .arg("-r")
        .arg(trained_run())
        .arg(to)
        .status()
        .expect("cp");
    assert!(status.success());
    to.to_path_buf()
}

/// What a careful user expects of a run directory: `--overwrite` with a bad option leaves the
/// earlier run whole, flags that would change a resumed run are refused, a second writer is
/// refused, and `--predictions` never overwrites an input.
#[test]
fn run_directories_are_never_lost() {
    let copy = copy_of_trained_run(&scratch("keep").join("run"));
    let model = std::fs::read(copy.join("best/model.bpk")).expect("model");
    let out = copy.to_str().expect("utf8");
    let train = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--data",
            "data/quickstart",
            "--format",
            "jointbert",
            "--out",
            out,
        ];
        args.extend_from_slice(extra);
        mtl(&args)
    };
    // A bad option with --overwrite: refused before the run is touched.
    let o = train(&["--overwrite", "--batch-size", "0", "--epochs", "1"]);
    assert_clean_error(&o, "batch_size");
    let o = train(&["--overwrite", "--sampling", "nonsense"]);
    assert!(!o.status.success());
    assert_eq!(
        std::fs::read(copy.join("best/model.bpk")).ok().as_ref(),
        Some(&model)
    );
    assert!(copy.join("last/trainer_state.json").is_file());
    // --resume with a flag that would change the run.
    let o = train(&["--resume", "--lr", "0.5"]);
    assert_clean_error(&o, "train.learning_rate: the run has 0.002, given 0.5");
    // Without --overwrite or --resume, an existing run is refused.
    let o = train(&["--epochs", "1"]);
    assert_clean_error(&o, "already exists");
    // --predictions onto the gold data or the model: refused, nothing written.
    let gold = workspace().join("data/quickstart/test/seq.out");
    let before = std::fs::read(&gold).expect("gold");
    for target in [gold.clone(), copy.join("best/config.json")] {
        let o = mtl(&[
            "eval",
            "--model",
            out,
            "--data",
            "data/quickstart",
            "--split",
            "test",
            "--predictions",
            target.to_str().expect("utf8"),
        ]);
        assert_clean_error(&o, "is an input");
    }
    assert_eq!(std::fs::read(&gold).expect("gold"), before);
    std::fs::remove_dir_all(copy.parent().expect("parent")).ok();
}

/// IOB2 tags of one sentence written as IOBES.
fn to_iobes(tags: &[&str]) -> Vec<String> {
    (0..tags.len())
        .map(|i| {
            let t = tags[i];
            let kind = t.get(2..).unwrap_or("");
            let continues = tags.get(i + 1).is_some_and(|n| *n == format!("I-{kind}"));
            match (t.get(..2), continues) {
                (Some("B-"), false) => format!("S-{kind}"),
                (Some("I-"), false) => format!("E-{kind}"),
                _ => t.to_owned(),
            }
        })
        .collect()
}

/// `mtl eval` reads data with the run's own `[data]` options: a run whose config says IOBES
/// scores IOBES files exactly as the IOB2 originals.
#[test]
fn eval_reads_data_with_the_runs_options() {
    let run = trained_run();
    let base = scratch("iobes");
    let copy = copy_of_trained_run(&base.join("run"));
    let config = std::fs::read_to_string(copy.join("config.toml")).expect("config.toml");
    assert!(config.contains("scheme = \"iob2\""), "{config}");
    std::fs::write(
        copy.join("config.toml"),
        config.replace("scheme = \"iob2\"", "scheme = \"iobes\""),
    )
    .expect("config");
    let src = workspace().join("data/quickstart/test");
    let split = base.join("data/test");
    std::fs::create_dir_all(&split).expect("split");
    for name in ["seq.in", "label"] {
        std::fs::copy(src.join(name), split.join(name)).expect("copy");
    }
    let tags = std::fs::read_to_string(src.join("seq.out")).expect("seq.out");
    let iobes: Vec<String> = tags
        .lines()
        .map(|l| to_iobes(&l.split_whitespace().collect::<Vec<_>>()).join(" "))
        .collect();
    assert!(iobes.iter().any(|l| l.contains("S-") || l.contains("E-")));
    std::fs::write(split.join("seq.out"), iobes.join("\n") + "\n").expect("seq.out");
    let eval = |model: &Path, data: &Path| {
        mtl(&[
            "eval",
            "--model",
            model.to_str().expect("utf8"),
            "--data",
            data.to_str().expect("utf8"),
            "--split",
            "test",
        ])
    };
    let f1 = |o: &Output| -> f64 {
        assert!(o.status.success(), "{}", stderr(o));
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
        r.pointer("/ner/f1").and_then(|v| v.as_f64()).expect("f1")
    };
    let original = f1(&eval(run, Path::new("data/quickstart")));
    let as_iobes = f1(&eval(&copy, &base.join("data")));
    assert_eq!(original, as_iobes);
    // The run trained on IOB2 reads the IOBES file as IOB2: S-/E- tags are not IOB2.
    let o = eval(run, &base.join("data"));
    assert!(!o.status.success() || f1(&o) != original);
    std::fs::remove_dir_all(&base).ok();
}
