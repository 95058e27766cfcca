//! Model directories: `config.json` (the [`MultitaskConfig`]) beside `model.bpk` (burnpack
//! weights). Files are written atomically (a temporary file unique to the call, `fsync`, rename,
//! `fsync` of the directory), so a process killed at any moment leaves either the old file or
//! the new one.

use std::fs;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device};
use serde::{Deserialize, Serialize};

use crate::config::MultitaskConfig;
use crate::error::{Error, Result};
use crate::model::MultitaskTransformer;

/// File name of the configuration inside a model directory.
pub const CONFIG_FILE: &str = "config.json";
/// File name of the weights inside a model directory.
pub const WEIGHTS_FILE: &str = "model.bpk";
/// Version of the model-directory layout this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct ConfigFile {
    format_version: u32,
    model: MultitaskConfig,
}

#[derive(Deserialize)]
struct VersionProbe {
    format_version: Option<u32>,
}

/// Writes `bytes` to `path` atomically and durably (see [`mtl_fs::write_atomic`]).
pub use mtl_fs::write_atomic;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl MultitaskTransformer {
    /// The weights as burnpack bytes.
    pub fn to_bytes(&self) -> Result<Bytes> {
        self.clone()
            .into_record()
            .into_bytes()
            .map_err(|e| Error::Weights {
                path: PathBuf::from("<memory>"),
                message: e.to_string(),
            })
    }

    /// Saves the model into `dir` (created if needed) as `config.json` + `model.bpk`.
    pub fn save_dir(&self, dir: &Path) -> Result<()> {
        let weights = dir.join(WEIGHTS_FILE);
        let saved = self.serialize().map_err(|e| match e {
            Error::Weights { message, .. } => Error::Weights {
                path: weights.clone(),
                message,
            },
            other => other,
        })?;
        saved.save_dir(dir)
    }

    /// The model as [`save_dir`](Self::save_dir) writes it, in memory: what is saved can be
    /// made in one place (a training loop) and written in another (a thread of its own).
    pub fn serialize(&self) -> Result<SavedModel> {
        Ok(SavedModel {
            config: self.config.clone(),
            weights: self.to_bytes()?,
        })
    }

    /// Loads a model saved by [`save_dir`](Self::save_dir) onto `device`.
    ///
    /// A config from another format version, a config that does not match the weights, or a
    /// truncated weights file is an [`Error`], never a panic.
    pub fn load_dir(dir: &Path, device: &Device) -> Result<Self> {
        let config = load_config(dir)?;
        let weights = dir.join(WEIGHTS_FILE);
        let bytes = fs::read(&weights).map_err(io_err(&weights))?;
        // Weights are stored as f32 (at least 2 bytes a value for any float type): a config
        // asking for more values than the file can hold is refused before it is allocated.
        let needed = config.min_values();
        if needed.saturating_mul(2) > bytes.len() as u128 {
            return Err(Error::Weights {
                path: weights,
                message: format!(
                    "{CONFIG_FILE} describes at least {needed} weights, more than the file's {} \
                     bytes hold",
                    bytes.len()
                ),
            });
        }
        Self::new(&config, device)?.load_bytes(bytes, &weights)
    }

    /// Replaces this model's weights with burnpack `bytes` (`origin` names them in errors).
    pub fn load_bytes(self, bytes: Vec<u8>, origin: &Path) -> Result<Self> {
        let weights_err = |e: burn::store::RecordError| Error::Weights {
            path: origin.to_path_buf(),
            message: e.to_string(),
        };
        // Burn's reader trusts the header's offsets; a truncated or corrupt file must not
        // reach a panic inside it.
        let record =
            std::panic::catch_unwind(|| ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes)))
                .map_err(|_| Error::Weights {
                    path: origin.to_path_buf(),
                    message: "corrupt burnpack data".into(),
                })?
                .map_err(weights_err)?;
        self.try_load_record(record).map_err(weights_err)
    }
}

/// A model serialised by [`MultitaskTransformer::serialize`]: its configuration and burnpack
/// weights.
#[derive(Debug)]
pub struct SavedModel {
    config: MultitaskConfig,
    weights: Bytes,
}

impl SavedModel {
    /// Writes the model directory [`MultitaskTransformer::save_dir`] writes.
    pub fn save_dir(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let weights = dir.join(WEIGHTS_FILE);
        write_atomic(&weights, &self.weights).map_err(io_err(&weights))?;
        save_config(&self.config, dir)
    }
}

/// Writes `config.json` into `dir`.
pub fn save_config(config: &MultitaskConfig, dir: &Path) -> Result<()> {
    let path = dir.join(CONFIG_FILE);
    let file = ConfigFile {
        format_version: FORMAT_VERSION,
        model: config.clone(),
    };
    let json = serde_json::to_vec_pretty(&file).map_err(|source| Error::ConfigFile {
        path: path.clone(),
        source,
    })?;
    write_atomic(&path, &json).map_err(io_err(&path))
}

/// Reads and validates `config.json` from a model directory.
pub fn load_config(dir: &Path) -> Result<MultitaskConfig> {
    let path = dir.join(CONFIG_FILE);
    let text = fs::read_to_string(&path).map_err(io_err(&path))?;
    let probe: VersionProbe = serde_json::from_str(&text).map_err(|source| Error::ConfigFile {
        path: path.clone(),
        source,
    })?;
    match probe.format_version {
        Some(FORMAT_VERSION) => {}
        found => {
            return Err(Error::FormatVersion {
                path,
                found,
                expected: FORMAT_VERSION,
            });
        }
    }
    let file: ConfigFile = serde_json::from_str(&text).map_err(|source| Error::ConfigFile {
        path: path.clone(),
        source,
    })?;
    file.model.validate()?;
    Ok(file.model)
}
