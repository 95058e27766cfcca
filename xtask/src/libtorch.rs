//! `cargo xtask setup-libtorch`, and the environment that builds and runs the `tch` feature.
//!
//! burn-tch 0.22.1 builds against libtorch 2.9.0. Its build script (torch-sys) downloads
//! libtorch unless told otherwise; here it is told to use the PyTorch 2.9.0 wheel of a virtual
//! environment (`LIBTORCH_USE_PYTORCH=1`, with that environment's `python` first on `PATH`), and
//! programs find the libraries through `LD_LIBRARY_PATH`.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The PyTorch version burn-tch 0.22.1 (torch-sys 0.22) is built for.
pub const TORCH_VERSION: &str = "2.9.0";

/// The virtual environment, relative to the workspace root, unless `MTL_TORCH_VENV` names one.
pub const DEFAULT_VENV: &str = ".venv-torch";

/// The virtual environment to use: `MTL_TORCH_VENV`, else `.venv-torch` in `root`.
pub fn venv_dir(root: &Path) -> PathBuf {
    match env::var_os("MTL_TORCH_VENV") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join(DEFAULT_VENV),
    }
}

/// Variables for cargo and for programs linked with libtorch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibtorchEnv {
    /// Variables set to a value.
    pub set: Vec<(String, String)>,
    /// Directories put in front of a path-list variable (`PATH`, `LD_LIBRARY_PATH`).
    pub prepend: Vec<(String, PathBuf)>,
}

impl LibtorchEnv {
    /// The environment for the PyTorch install in `venv`, or an error that says how to make it.
    pub fn from_venv(venv: &Path) -> Result<Self> {
        let lib = torch_lib_dir(venv).with_context(|| {
            format!(
                "no PyTorch in {}: run `cargo xtask setup-libtorch` first (the `tch` feature \
                 needs libtorch {TORCH_VERSION}), or set LIBTORCH to a libtorch {TORCH_VERSION} \
                 directory",
                venv.display()
            )
        })?;
        Ok(Self {
            set: vec![
                ("LIBTORCH_USE_PYTORCH".into(), "1".into()),
                ("VIRTUAL_ENV".into(), venv.display().to_string()),
            ],
            prepend: vec![
                ("PATH".into(), venv.join("bin")),
                ("LD_LIBRARY_PATH".into(), lib),
            ],
        })
    }

    /// `export` lines for a POSIX shell.
    pub fn shell_exports(&self) -> String {
        let mut out = String::new();
        for (key, value) in &self.set {
            out.push_str(&format!("export {key}={}\n", crate::shell_quote(value)));
        }
        for (key, dir) in &self.prepend {
            out.push_str(&format!(
                "export {key}={}${{{key}:+:${key}}}\n",
                crate::shell_quote(&dir.display().to_string())
            ));
        }
        out
    }

    /// Applies the variables to `cmd`.
    pub fn apply(&self, cmd: &mut Command) {
        for (key, value) in &self.set {
            cmd.env(key, value);
        }
        for (key, dir) in &self.prepend {
            cmd.env(key, prepended(key, dir));
        }
    }
}

/// `dir` in front of the current value of the path-list variable `key`.
pub fn prepended(key: &str, dir: &Path) -> std::ffi::OsString {
    let mut dirs = vec![dir.to_path_buf()];
    if let Some(current) = env::var_os(key) {
        dirs.extend(env::split_paths(&current));
    }
    env::join_paths(dirs).unwrap_or_else(|_| dir.as_os_str().to_owned())
}

/// Whether `features` turn on the libtorch backend.
pub fn wants_tch(features: &[String]) -> bool {
    features
        .iter()
        .flat_map(|f| f.split([',', ' ']))
        .any(|f| f == "tch" || f.ends_with("/tch"))
}

/// The libtorch environment for a build with `features`: `None` when the build has no `tch`, or
/// when the user already chose libtorch (`LIBTORCH` or `LIBTORCH_USE_PYTORCH` set).
pub fn env_for(root: &Path, features: &[String]) -> Result<Option<LibtorchEnv>> {
    if !wants_tch(features)
        || env::var_os("LIBTORCH").is_some()
        || env::var_os("LIBTORCH_USE_PYTORCH").is_some()
    {
        return Ok(None);
    }
    LibtorchEnv::from_venv(&venv_dir(root)).map(Some)
}

/// `<venv>/lib/python3.X/site-packages/torch/lib`, if it holds libtorch.
fn torch_lib_dir(venv: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(venv.join("lib"))
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("python"))
        })
        .map(|p| p.join("site-packages/torch/lib"))
        .filter(|lib| {
            lib.join("libtorch_cpu.so").is_file() || lib.join("libtorch_cpu.dylib").is_file()
        })
        .collect();
    found.sort();
    found.pop()
}

/// The `torch.__version__` that `python` imports, if it imports torch at all.
fn installed_torch(python: &Path) -> Option<String> {
    let out = Command::new(python)
        .args(["-c", "import torch; print(torch.__version__)"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `cargo xtask setup-libtorch [--venv DIR] [--python PYTHON] [--dry-run]`.
pub fn setup(root: &Path, args: &[String]) -> Result<()> {
    let mut venv = venv_dir(root);
    let mut python = "python3".to_string();
    let mut dry_run = false;
    crate::each_flag("setup-libtorch", args, |flag, value| {
        match flag {
            "--venv" => venv = root.join(value()?),
            "--python" => python = value()?,
            "--dry-run" => dry_run = true,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let venv_python = venv.join("bin/python");
    let wanted = |v: &str| v.split('+').next() == Some(TORCH_VERSION);
    match installed_torch(&venv_python) {
        Some(version) if wanted(&version) => {
            eprintln!(
                "PyTorch {version} is already in {}: reusing it",
                venv.display()
            );
        }
        found => {
            if let Some(version) = found {
                eprintln!(
                    "{} has PyTorch {version}; installing {TORCH_VERSION} over it",
                    venv.display()
                );
            }
            if !venv_python.exists() {
                run(
                    Command::new(&python).args(["-m", "venv"]).arg(&venv),
                    dry_run,
                )?;
            }
            run(
                Command::new(&venv_python).args([
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    &format!("torch=={TORCH_VERSION}"),
                ]),
                dry_run,
            )?;
        }
    }
    if dry_run {
        return Ok(());
    }
    let env = LibtorchEnv::from_venv(&venv)?;
    let env_file = venv.join("libtorch.env");
    fs::write(&env_file, env.shell_exports())
        .with_context(|| format!("cannot write {}", env_file.display()))?;
    eprintln!(
        "libtorch {TORCH_VERSION} is ready. `cargo xtask train|eval|predict|bench|ci` with \
         `--features tch` (or `--all-backends` for ci) set this up themselves; for plain cargo \
         or the `mtl` binary, `source {}`, which holds:",
        env_file.display()
    );
    print!("{}", env.shell_exports());
    Ok(())
}

/// Prints `cmd`, then runs it (unless `dry_run`); a failure names the command.
pub(crate) fn run(cmd: &mut Command, dry_run: bool) -> Result<()> {
    eprintln!("$ {cmd:?}");
    if dry_run {
        return Ok(());
    }
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tch_is_recognised_in_feature_lists() {
        let f = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(wants_tch(&f(&["tch"])));
        assert!(wants_tch(&f(&["mtl/wgpu,mtl/tch"])));
        assert!(!wants_tch(&f(&["wgpu", "mtl/flex"])));
        assert!(!wants_tch(&f(&["notch"])));
    }

    #[test]
    fn a_venv_without_torch_says_how_to_get_it() {
        let dir = env::temp_dir().join(format!("mtl-xtask-venv-{}", std::process::id()));
        fs::create_dir_all(dir.join("lib/python3.11/site-packages")).expect("temp dir");
        let err = LibtorchEnv::from_venv(&dir).expect_err("no torch there");
        assert!(err.to_string().contains("cargo xtask setup-libtorch"));
        let lib = dir.join("lib/python3.11/site-packages/torch/lib");
        fs::create_dir_all(&lib).expect("temp dir");
        fs::write(lib.join("libtorch_cpu.so"), b"").expect("temp file");
        let env = LibtorchEnv::from_venv(&dir).expect("torch found");
        assert!(env.prepend.contains(&("LD_LIBRARY_PATH".to_string(), lib)));
        let exports = env.shell_exports();
        assert!(exports.contains("export LIBTORCH_USE_PYTORCH=1\n"));
        assert!(exports.contains("${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"));
        fs::remove_dir_all(&dir).ok();
    }
}
