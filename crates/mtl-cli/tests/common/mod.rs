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
        for key in ["valid", "test", "best_epoch"] {
            assert!(metrics.get(key).is_some(), "metrics lack {key}");
        }
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
