//! What the test binaries of the `mtl` CLI share: running the binary, scratch directories,
//! and a tiny model trained once per test binary on the quickstart data.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub fn mtl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mtl"))
        .args(args)
        .current_dir(workspace())
        .output()
        .expect("mtl runs")
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mtl-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A tiny model trained once on the quickstart data, shared by the tests.
pub fn trained_run() -> &'static PathBuf {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let out = scratch("run").join("quick");
        let config = scratch("cfg").join("tiny.toml");
        std::fs::write(
            &config,
            "[model]\nd_model = 32\nnhead = 2\nnum_encoder_layers = 1\ndim_feedforward = 64\nmax_seq_length = 32\n\
             [train]\nepochs = 3\nbatch_size = 32\nlearning_rate = 2e-3\nwarmup_steps = 10\nprogress = \"plain\"\n",
        )
        .expect("config");
        let o = mtl(&[
            "train", "--data", "data/quickstart", "--format", "jointbert", "--config", config.to_str().expect("utf8"),
            "--out", out.to_str().expect("utf8"), "--overwrite",
        ]);
        assert!(o.status.success(), "train failed: {}", stderr(&o));
        let metrics: serde_json::Value = serde_json::from_slice(&o.stdout).expect("metrics JSON on stdout");
        for key in ["valid", "test"] {
            assert!(metrics.get(key).is_some_and(|v| v.is_object()), "metrics lack {key}");
            for metric in ["/classification/accuracy", "/ner/f1", "/frame_accuracy"] {
                let v = metrics.pointer(&format!("/{key}{metric}")).and_then(|v| v.as_f64());
                assert!(v.is_some_and(|v| (0.0..=1.0).contains(&v)), "{key}{metric}: {v:?}");
            }
        }
        // The epoch best/ holds, as the trainer chose it: the first of the highest scores.
        let best = metrics["best_epoch"].as_u64().expect("best_epoch is a number");
        let history = std::fs::read_to_string(out.join("history.jsonl")).expect("history");
        let scores: Vec<f64> = history
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("line")["score"].as_f64().expect("score"))
            .collect();
        let top = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let first = scores.iter().position(|&s| s == top).expect("a best") + 1;
        assert_eq!(best as usize, first, "{scores:?}");
        assert_eq!(metrics["epochs"].as_u64(), Some(3));
        assert_eq!(metrics["stopped_early"].as_bool(), Some(false));
        // Truncated examples are counted per split (none at 32 tokens on the quickstart).
        assert_eq!(metrics.pointer("/valid/truncated").and_then(|v| v.as_u64()), Some(0));
        assert_eq!(metrics.pointer("/test/truncated").and_then(|v| v.as_u64()), Some(0));
        for f in ["metrics.json", "history.jsonl", "training_curve.svg", "config.toml", "best/model.bpk", "last/optimizer.bin"] {
            assert!(out.join(f).exists(), "{f} missing");
        }
        assert_eq!(std::fs::read_to_string(out.join("history.jsonl")).expect("history").lines().count(), 3);
        out
    })
}
