//! Chaos test: `mtl train` killed with SIGKILL at many instants (inside epochs, inside
//! checkpoint writes, between the renames of a swap, while the final metrics are written),
//! continued each time as a user would (`--resume` when there is a checkpoint, else
//! `--overwrite`), ends with the run an uninterrupted one writes: the same history (apart from
//! wall-clock timings), the same `best/` and `last/` (tensor data to the bit, every other file
//! to the byte, the trainer state apart from timings), the same metrics and curve. Half the
//! runs replace the complete run before them with `--overwrite`, killed too: after every kill
//! a model still loads from the directory.
//!
//! Every write pauses `MTL_TEST_WRITE_PAUSE_MS` between writing its data and renaming it, so
//! that kills land inside writes often; the number that did is counted from the leftovers
//! they leave (temporary files, `.tmp`/`.new`/`.old` directories) and checked.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mtl::burn::module::{Module, ModuleVisitor, Param};
use mtl::burn::tensor::{Device, Tensor};
use serde_json::Value;

/// Kills at least this many processes.
const KILLS: usize = 32;
/// Milliseconds every write pauses before its rename.
const PAUSE_MS: &str = "15";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mtl-chaos-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn train_command(config: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mtl"));
    cmd.args([
        "train",
        "--data",
        "data/quickstart",
        "--format",
        "jointbert",
    ])
    .arg("--config")
    .arg(config)
    .arg("--out")
    .arg(out)
    .args(["--devices", "cpu", "--plain"])
    .args(extra)
    .env("MTL_TEST_WRITE_PAUSE_MS", PAUSE_MS)
    .current_dir(workspace())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    cmd
}

/// What a user does next with `out`: resume a run with a checkpoint, replace a run without
/// one, or start afresh.
fn next_step(out: &Path) -> &'static [&'static str] {
    let has_checkpoint = ["last", "last.new", "last.old"].iter().any(|d| {
        [out.to_path_buf(), out.with_file_name("run.replacing")]
            .iter()
            .any(|o| o.join(d).join("trainer_state.json").is_file())
    });
    if has_checkpoint {
        &["--resume"]
    } else if out.exists() {
        &["--overwrite"]
    } else {
        &[]
    }
}

/// Whether a kill left something half written in the run directory.
fn inside_a_write(out: &Path) -> bool {
    let mut dirs = vec![out.to_path_buf()];
    for sub in ["best", "last"] {
        for suffix in ["", ".tmp", ".new", ".old"] {
            let d = out.join(format!("{sub}{suffix}"));
            if !suffix.is_empty() && d.exists() {
                return true;
            }
            dirs.push(d);
        }
    }
    if out.with_file_name("run.replaced").exists() {
        return true;
    }
    dirs.iter().any(|d| {
        std::fs::read_dir(d).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().contains(".tmp."))
        })
    })
}

/// The parameters of a saved model, in module order, as bits.
fn tensors(dir: &Path) -> Vec<(String, Vec<u32>)> {
    struct Collect {
        path: Vec<String>,
        out: Vec<(String, Vec<u32>)>,
    }
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_owned());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let values = param
                .val()
                .into_data()
                .try_to_vec::<f32>()
                .expect("f32 weights");
            self.out.push((
                self.path.join("."),
                values.iter().map(|v| v.to_bits()).collect(),
            ));
        }
    }
    let (model, _) = mtl::train::load_model_dir(dir, &Device::flex())
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut c = Collect {
        path: Vec::new(),
        out: Vec::new(),
    };
    model.visit(&mut c);
    assert!(!c.out.is_empty());
    c.out
}

/// A JSON value without its wall-clock fields.
fn timeless(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.remove("seconds");
                map.remove("train_seconds");
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

fn json_file(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    timeless(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn history(out: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(out.join("history.jsonl")).expect("history.jsonl");
    text.lines()
        .map(|l| timeless(serde_json::from_str(l).expect("history line")))
        .collect()
}

/// Asserts that two runs are the same, file by file.
fn assert_same_run(a: &Path, b: &Path) {
    let (ha, hb) = (history(a), history(b));
    assert_eq!(ha.len(), 3, "three epochs");
    assert_eq!(ha, hb, "history.jsonl");
    for sub in ["best", "last"] {
        let (da, db) = (a.join(sub), b.join(sub));
        let mut names: Vec<String> = std::fs::read_dir(&da)
            .expect("checkpoint")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut other: Vec<String> = std::fs::read_dir(&db)
            .expect("checkpoint")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        other.sort();
        assert_eq!(names, other, "{sub}/ holds the same files");
        for name in &names {
            let (fa, fb) = (da.join(name), db.join(name));
            match name.as_str() {
                // Burnpack headers carry per-process parameter ids: compare the tensors.
                "model.bpk" => assert!(tensors(&da) == tensors(&db), "{sub}/model.bpk tensors"),
                "trainer_state.json" => assert_eq!(json_file(&fa), json_file(&fb), "{sub}/{name}"),
                _ => assert!(
                    std::fs::read(&fa).ok() == std::fs::read(&fb).ok(),
                    "{sub}/{name} differs"
                ),
            }
        }
    }
    let (mut ma, mut mb) = (
        json_file(&a.join("metrics.json")),
        json_file(&b.join("metrics.json")),
    );
    // The path of the best model names each run's own directory.
    for m in [&mut ma, &mut mb] {
        m.as_object_mut().expect("metrics object").remove("model");
    }
    assert_eq!(ma, mb, "metrics.json");
    assert!(
        std::fs::read(a.join("training_curve.svg")).ok()
            == std::fs::read(b.join("training_curve.svg")).ok(),
        "training_curve.svg"
    );
    for leftover in [
        "best.tmp", "best.new", "best.old", "last.tmp", "last.new", "last.old",
    ] {
        assert!(!b.join(leftover).exists(), "{leftover} left behind");
    }
}

#[test]
fn killed_and_resumed_runs_equal_an_unbroken_run() {
    let started = Instant::now();
    let base = scratch("runs");
    let config = base.join("tiny.toml");
    // Three epochs of 13 steps, warmup across the first epoch boundary, dropout and word
    // dropout on: a resume that replayed anything differently would show.
    std::fs::write(
        &config,
        "[model]\nd_model = 16\nnhead = 2\nnum_encoder_layers = 1\ndim_feedforward = 32\n\
         max_seq_length = 32\ndropout = 0.1\n\
         [train]\nepochs = 3\nbatch_size = 64\nlearning_rate = 3e-3\nwarmup_steps = 17\n\
         word_dropout = 0.1\nseed = 5\n",
    )
    .expect("config");
    let reference = base.join("reference");
    let t0 = Instant::now();
    let o = train_command(&config, &reference, &[])
        .output()
        .expect("mtl runs");
    assert!(
        o.status.success(),
        "reference run failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let full = t0.elapsed();

    let out = base.join("run");
    let (mut kills, mut inside, mut attempts, mut cycles) = (0, 0, 0, 0);
    let (mut fresh_kills, mut replace_kills) = (0, 0);
    // Kill instants spread over a process's life (golden-ratio steps through [0, 1)), up to
    // 70% of an unbroken run (160% when replacing): each process starts from the last checkpoint, so they land in
    // startup, training, validation, checkpoint writes and the final evaluation.
    //
    // Odd cycles start in an empty directory and continue as a user would (`--resume` with a
    // checkpoint, else `--overwrite`); even cycles replace the complete run of the cycle
    // before with `--overwrite`, repeated until it succeeds: after every kill there, a model
    // must still load from the directory (the earlier run's, or the new one's once it has
    // its first checkpoint). Every cycle ends with the reference's run.
    let mut frac = 0.0f64;
    while kills < KILLS || fresh_kills < 5 || replace_kills < 5 {
        cycles += 1;
        let replacing = cycles % 2 == 0;
        if !replacing {
            for d in [out.clone(), out.with_file_name("run.replacing")] {
                let _ = std::fs::remove_dir_all(d);
            }
        }
        loop {
            attempts += 1;
            assert!(attempts < 800, "no progress after {attempts} attempts");
            frac = (frac + 0.618_033_988_75) % 1.0;
            let step = if replacing {
                &["--overwrite"][..]
            } else {
                next_step(&out)
            };
            let had_model = mtl::train::load_model_dir(&out, &Device::flex()).is_ok();
            let mut child = train_command(&config, &out, step)
                .spawn()
                .expect("mtl starts");
            // A replacement starts from scratch every time: some must live long enough to end.
            let span = if replacing { 1.6 } else { 0.7 };
            let deadline = Instant::now() + full.mul_f64(span * frac);
            let mut finished = None;
            while Instant::now() < deadline {
                if let Some(status) = child.try_wait().expect("wait") {
                    finished = Some(status);
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            if let Some(status) = finished {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                assert!(status.success(), "{step:?} failed: {err}");
                assert!(!err.contains("panicked"), "{err}");
                break;
            }
            child.kill().expect("SIGKILL");
            child.wait().expect("reaped");
            kills += 1;
            inside += usize::from(inside_a_write(&out));
            if replacing {
                replace_kills += 1;
            } else {
                fresh_kills += 1;
            }
            // A model that was there is there after the kill (read without any repair).
            if had_model {
                let loaded = mtl::train::load_model_dir(&out, &Device::flex());
                assert!(loaded.is_ok(), "a kill lost the model: {:?}", loaded.err());
            }
        }
        assert_same_run(&reference, &out);
    }
    eprintln!(
        "chaos: {kills} kills ({inside} inside a write; {fresh_kills} continuing a run, \
         {replace_kills} replacing one) over {attempts} processes and {cycles} runs; unbroken \
         run {:.1}s, test {:.1}s",
        full.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        inside >= 5,
        "only {inside} of {kills} kills landed inside a write"
    );
    let _ = std::fs::remove_dir_all(&base);
}
