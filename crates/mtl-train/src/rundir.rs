//! Run directories: their layout, the atomic swap of checkpoint directories, recovery after a
//! kill, the lock a writing process holds, the replacement of an earlier run, and the
//! consistency checks of a model directory when it is loaded.
//!
//! ```text
//! .mtl.lock           the lock a writing process holds (flock; the kernel drops it on exit)
//! config.toml         the CLI's configuration (written by `mtl train`)
//! train_config.json   the TrainConfig
//! history.jsonl       one EpochRecord per line
//! last/               model.bpk, config.json, encoder files, optimizer.bin, trainer_state.json
//! best/               model.bpk, config.json, encoder files of the best epoch
//! ```
//!
//! The rules, each tested (`docs/RELIABILITY.md`):
//!
//! - Every file is written whole ([`mtl_fs::write_atomic`]); a checkpoint directory is written
//!   as `<name>.tmp`, renamed `<name>.new` once complete, and swapped in by two renames
//!   (`<name>` → `<name>.old`, `<name>.new` → `<name>`). A `.new` directory is therefore always
//!   complete, and recovery prefers it to `.old`.
//! - `best/` is swapped in before `last/`: the trainer state in `last/` never names a best
//!   checkpoint that a kill kept from being written. A kill between the two leaves `last/` one
//!   epoch behind; the resumed run replays that epoch exactly and writes the same `best/`.
//! - A process writing a run directory holds `.mtl.lock`; a second writer gets
//!   [`Error::Locked`]. The lock is an `flock`, which the kernel releases when the process
//!   dies, however it dies.
//! - An existing run is replaced (`--overwrite`) only once the new run has written its first
//!   checkpoint: until then the new run lives in `<out>.replacing/`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use mtl_data::{Encoder, Example};
use mtl_fs::{rename_durable, sync_dir, write_atomic};
use mtl_model::io::CONFIG_FILE;
use mtl_model::{MultitaskTransformer, SavedModel};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::optim::AdamW;
use crate::trainer::{History, TrainConfig};

/// File of the training config inside a run directory.
pub const TRAIN_CONFIG_FILE: &str = "train_config.json";
/// File of the history inside a run directory.
pub const HISTORY_FILE: &str = "history.jsonl";
/// Sub-directory with the last checkpoint (model, encoder, optimizer and trainer state).
pub const LAST_DIR: &str = "last";
/// Sub-directory with the best model (model and encoder).
pub const BEST_DIR: &str = "best";
/// File of the optimizer state in `last/`.
pub const OPTIMIZER_FILE: &str = "optimizer.bin";
/// File of the trainer state (what `resume` needs besides the weights) in `last/`.
pub const STATE_FILE: &str = "trainer_state.json";
/// The lock file of a run directory.
pub const LOCK_FILE: &str = ".mtl.lock";

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `<dir>.<suffix>`, a sibling of `dir`.
fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    dir.with_file_name(name)
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(dir)(e)),
    }
}

/// Writes a complete directory next to `dir` and swaps it in, so that `dir` (or, after a kill,
/// [`checkpoint_dir`]) always holds a complete directory: the previous one or the new one.
pub(crate) fn swap_in_dir(dir: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = sibling(dir, "tmp");
    let fresh = sibling(dir, "new");
    let old = sibling(dir, "old");
    remove_dir_if_present(&tmp)?;
    fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    write(&tmp)?;
    sync_dir(&tmp).map_err(io(&tmp))?;
    // A `.new` left by a kill was complete, but recovery kept `dir`, which is just as complete.
    remove_dir_if_present(&fresh)?;
    rename_durable(&tmp, &fresh).map_err(io(&tmp))?;
    // From here on `fresh` is complete: recovery prefers it to `old`.
    remove_dir_if_present(&old)?;
    if dir.exists() {
        rename_durable(dir, &old).map_err(io(dir))?;
    }
    rename_durable(&fresh, dir).map_err(io(&fresh))?;
    remove_dir_if_present(&old)?;
    sync_dir(parent_of(dir)).map_err(io(dir))
}

/// Resolves a checkpoint directory after a possible kill inside a swap: the directory itself,
/// else its complete `.new` copy, else its `.old` copy (without changing anything on disk).
pub fn checkpoint_dir(dir: &Path) -> PathBuf {
    if dir.exists() {
        return dir.to_path_buf();
    }
    let fresh = sibling(dir, "new");
    if fresh.exists() {
        return fresh;
    }
    let old = sibling(dir, "old");
    if old.exists() { old } else { dir.to_path_buf() }
}

/// Repairs a checkpoint directory after a kill: the copy [`checkpoint_dir`] picks is renamed
/// into place and the other leftovers (`.tmp`, `.new`, `.old`) are removed.
fn recover_checkpoint(dir: &Path) -> Result<()> {
    let picked = checkpoint_dir(dir);
    if picked != dir {
        rename_durable(&picked, dir).map_err(io(&picked))?;
    }
    for suffix in ["tmp", "new", "old"] {
        remove_dir_if_present(&sibling(dir, suffix))?;
    }
    Ok(())
}

/// Resolves a run directory after a possible kill while an `--overwrite` swapped it in: a
/// `.replacing` run with a checkpoint (it was due to replace the directory), else the
/// directory itself, else the `.replaced` one.
fn run_dir_after_kill(dir: &Path) -> PathBuf {
    let staging = sibling(dir, "replacing");
    if checkpoint_dir(&staging.join(LAST_DIR))
        .join(STATE_FILE)
        .is_file()
    {
        return staging;
    }
    let replaced = sibling(dir, "replaced");
    if !dir.exists() && replaced.exists() {
        return replaced;
    }
    dir.to_path_buf()
}

/// The last checkpoint of the run in `run_dir` that `resume` would continue from (recovered
/// from a kill inside a swap or a replacement), if it has one.
pub fn last_checkpoint(run_dir: &Path) -> Option<PathBuf> {
    let last = checkpoint_dir(&run_dir_after_kill(run_dir).join(LAST_DIR));
    last.join(STATE_FILE).is_file().then_some(last)
}

/// Where a run stands, from its last checkpoint's trainer state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumePoint {
    /// Epochs finished.
    pub epochs_done: usize,
    /// Optimizer steps taken.
    pub step: u64,
    /// Epochs the run was configured for.
    pub epochs: usize,
}

/// Reads and checks the trainer state of the run in `run_dir` (what `resume` would continue
/// from), without loading any weights.
///
/// # Errors
///
/// [`Error::Io`] when there is no checkpoint, [`Error::State`] naming the file when it is
/// invalid.
pub fn resume_point(run_dir: &Path) -> Result<ResumePoint> {
    let last = last_checkpoint(run_dir).unwrap_or_else(|| run_dir.join(LAST_DIR));
    let state = TrainerState::read(&last.join(STATE_FILE))?;
    Ok(ResumePoint {
        epochs_done: state.epochs_done,
        step: state.step,
        epochs: state.config.epochs,
    })
}

/// Whether `dir` is absent or holds nothing but a lock file.
fn is_empty(dir: &Path) -> Result<bool> {
    match fs::read_dir(dir) {
        Ok(entries) => Ok(entries
            .flatten()
            .all(|e| e.file_name() == std::ffi::OsStr::new(LOCK_FILE))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(io(dir)(e)),
    }
}

/// Whether `dir` is a run directory mtl wrote (or began to write).
pub fn is_run_dir(dir: &Path) -> bool {
    [TRAIN_CONFIG_FILE, LOCK_FILE, LAST_DIR]
        .iter()
        .any(|f| dir.join(f).exists())
}

/// Takes the lock of the run directory `dir` (created if needed).
fn lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(Error::Locked {
            path: dir.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(io(&path)(e)),
    }
}

/// A run directory open for writing: locked for as long as it lives, and recovered from any
/// kill of an earlier writer.
///
/// When it replaces an earlier run, every file goes to a sibling `<dir>.replacing/` until
/// [`commit`](Self::commit), which the trainer calls once the first checkpoint is written:
/// the earlier run is lost only once the new one has a model.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    staging: Option<PathBuf>,
    _locks: Vec<File>,
}

impl RunDir {
    /// Opens `path` for a new run. An absent or empty directory is used as it is; an earlier
    /// run is replaced only with `overwrite` (and only once the new run has written its first
    /// checkpoint); any other directory is refused.
    ///
    /// # Errors
    ///
    /// [`Error::RunExists`], [`Error::NotARunDir`], [`Error::Locked`] or an I/O error.
    pub fn create(path: &Path, overwrite: bool) -> Result<Self> {
        // Nothing is written into a directory that is not mtl's, not even the lock.
        Self::check_new(path, overwrite)?;
        let mut locks = Self::lock_and_recover(path)?;
        if is_empty(path)? {
            if locks.is_empty() {
                fs::create_dir_all(path).map_err(io(path))?;
                locks.push(lock(path)?);
            }
            return Ok(Self {
                path: path.to_path_buf(),
                staging: None,
                _locks: locks,
            });
        }
        // Recovery may have finished an interrupted replacement: check what is there now.
        Self::check_new(path, overwrite)?;
        let staging = sibling(path, "replacing");
        remove_dir_if_present(&staging)?;
        fs::create_dir_all(&staging).map_err(io(&staging))?;
        locks.push(lock(&staging)?);
        Ok(Self {
            path: path.to_path_buf(),
            staging: Some(staging),
            _locks: locks,
        })
    }

    /// Checks, without writing anything, that [`create`](Self::create) may start a new run in
    /// `path`: it is absent or empty, or it holds a run and `overwrite` is given (commands call
    /// it before loading data, so that a forgotten `--overwrite` is said at once).
    ///
    /// # Errors
    ///
    /// [`Error::NotARunDir`] or [`Error::RunExists`].
    pub fn check_new(path: &Path, overwrite: bool) -> Result<()> {
        let empty = is_empty(path)?;
        // A replacement a kill interrupted counts as the run it was about to become.
        let has_run = run_dir_after_kill(path) != path || (!empty && is_run_dir(path));
        if !has_run {
            return if empty {
                Ok(())
            } else {
                Err(Error::NotARunDir {
                    path: path.to_path_buf(),
                })
            };
        }
        if !overwrite {
            return Err(Error::RunExists {
                path: path.to_path_buf(),
            });
        }
        Ok(())
    }

    /// Opens the existing run in `path` to continue it: locks it and repairs what a kill left
    /// (a checkpoint swap or a replacement cut in two, temporary files).
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] or an I/O error.
    pub fn open(path: &Path) -> Result<Self> {
        if path.exists() && !is_run_dir(path) {
            return Err(Error::NotARunDir {
                path: path.to_path_buf(),
            });
        }
        let mut locks = Self::lock_and_recover(path)?;
        if locks.is_empty() {
            locks.push(lock(path)?);
        }
        for sub in [BEST_DIR, LAST_DIR] {
            recover_checkpoint(&path.join(sub))?;
        }
        for entry in fs::read_dir(path).map_err(io(path))?.flatten() {
            if mtl_fs::is_temp_name(&entry.file_name().to_string_lossy()) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            staging: None,
            _locks: locks,
        })
    }

    /// Locks `path` (when it exists) and finishes or discards a replacement a kill
    /// interrupted: a `.replacing` run that has written its first checkpoint was due to be
    /// swapped in, and is; one without a checkpoint is removed. Returns the locks held on the
    /// resulting `path` (none when it does not exist).
    fn lock_and_recover(path: &Path) -> Result<Vec<File>> {
        let staging = sibling(path, "replacing");
        let replaced = sibling(path, "replaced");
        let mut locks = Vec::new();
        if path.exists() {
            locks.push(lock(path)?);
        } else if staging.exists() {
            // The other writer, if alive, holds this one.
            lock(&staging)?;
        }
        if checkpoint_dir(&staging.join(LAST_DIR))
            .join(STATE_FILE)
            .is_file()
        {
            remove_dir_if_present(&replaced)?;
            if path.exists() {
                rename_durable(path, &replaced).map_err(io(path))?;
            }
            rename_durable(&staging, path).map_err(io(&staging))?;
            locks.clear();
            locks.push(lock(path)?);
        } else if !path.exists() && replaced.exists() {
            rename_durable(&replaced, path).map_err(io(&replaced))?;
            locks.push(lock(path)?);
        }
        remove_dir_if_present(&staging)?;
        remove_dir_if_present(&replaced)?;
        Ok(locks)
    }

    /// Where files go now: the staging directory of a replacement until
    /// [`commit`](Self::commit), then the run directory itself.
    pub fn path(&self) -> &Path {
        self.staging.as_deref().unwrap_or(&self.path)
    }

    /// The run directory this ends up in.
    pub fn final_path(&self) -> &Path {
        &self.path
    }

    /// Whether this run replaces an earlier one that [`commit`](Self::commit) has not yet
    /// swapped out.
    pub fn replacing(&self) -> bool {
        self.staging.is_some()
    }

    /// Swaps a replacing run in for the earlier one (nothing to do otherwise). The earlier run
    /// is renamed aside, the new one into place, and the earlier one deleted.
    ///
    /// # Errors
    ///
    /// An I/O error of the renames.
    pub fn commit(&mut self) -> Result<()> {
        let Some(staging) = self.staging.take() else {
            return Ok(());
        };
        let replaced = sibling(&self.path, "replaced");
        rename_durable(&self.path, &replaced).map_err(io(&self.path))?;
        rename_durable(&staging, &self.path).map_err(io(&staging))?;
        eprintln!("replaced the run directory {}", self.path.display());
        remove_dir_if_present(&replaced)
    }
}

/// What `resume` needs besides the weights and the optimizer (`last/trainer_state.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TrainerState {
    pub(crate) epochs_done: usize,
    pub(crate) step: u64,
    pub(crate) best_score: Option<f64>,
    /// The epoch `best/` holds (absent in runs written before it was recorded).
    #[serde(default)]
    pub(crate) best_epoch: Option<usize>,
    pub(crate) bad_epochs: usize,
    pub(crate) history: History,
    pub(crate) config: TrainConfig,
    /// The validation data the best checkpoint was chosen on (absent in runs written before
    /// it was recorded).
    #[serde(default)]
    pub(crate) validation: Option<ValidationId>,
}

impl TrainerState {
    /// Reads and checks `path`: every number within what the run can have reached.
    pub(crate) fn read(path: &Path) -> Result<Self> {
        let bytes = fs::read(path).map_err(io(path))?;
        let bad = |message: String| Error::State {
            path: path.to_path_buf(),
            message,
        };
        let state: Self = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        state
            .config
            .validate()
            .map_err(|e| bad(format!("stored training configuration: {e}")))?;
        let epochs = state.history.epochs.len();
        if state.epochs_done != epochs {
            return Err(bad(format!(
                "epochs_done is {} but the history holds {epochs} epochs",
                state.epochs_done
            )));
        }
        for (i, record) in state.history.epochs.iter().enumerate() {
            if record.epoch != i + 1 {
                return Err(bad(format!(
                    "history entry {} is numbered epoch {}",
                    i + 1,
                    record.epoch
                )));
            }
        }
        if let Some(last) = state.history.epochs.last()
            && last.step != state.step
        {
            return Err(bad(format!(
                "step is {} but the last epoch ended at step {}",
                state.step, last.step
            )));
        }
        if state.best_epoch.is_some_and(|b| b == 0 || b > epochs) {
            return Err(bad(format!(
                "best_epoch {:?} is outside the {epochs} epochs done",
                state.best_epoch
            )));
        }
        if state.bad_epochs > epochs {
            return Err(bad(format!(
                "bad_epochs {} exceeds the {epochs} epochs done",
                state.bad_epochs
            )));
        }
        Ok(state)
    }

    fn to_json(&self, path: &Path) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| Error::State {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

/// What identifies a validation set: its size and a fingerprint of its words, labels and tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ValidationId {
    pub(crate) examples: usize,
    pub(crate) fingerprint: u64,
}

impl ValidationId {
    /// FNV-1a over each example's words, label and tags (a stable hash, unlike std's).
    pub(crate) fn of(valid: &[Example]) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes.iter().chain([0xff].iter()) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        for e in valid {
            e.words.iter().for_each(|w| eat(w.as_bytes()));
            eat(e.label.as_deref().unwrap_or("\u{0}").as_bytes());
            for t in e.tags.iter().flatten() {
                eat(t.as_bytes());
            }
            eat(b"\n");
        }
        Self {
            examples: valid.len(),
            fingerprint: h,
        }
    }
}

/// Writes `train_config.json`.
pub(crate) fn write_train_config(dir: &Path, config: &TrainConfig) -> Result<()> {
    let path = dir.join(TRAIN_CONFIG_FILE);
    let json = serde_json::to_vec_pretty(config).map_err(|e| Error::State {
        path: path.clone(),
        message: e.to_string(),
    })?;
    write_atomic(&path, &json).map_err(io(&path))
}

/// Reads and validates a run's `train_config.json`.
///
/// # Errors
///
/// [`Error::Io`], or [`Error::State`] naming the file when it is not a valid configuration.
pub fn read_train_config(run_dir: &Path) -> Result<TrainConfig> {
    let path = run_dir.join(TRAIN_CONFIG_FILE);
    let bytes = fs::read(&path).map_err(io(&path))?;
    let config: TrainConfig = serde_json::from_slice(&bytes).map_err(|e| Error::State {
        path: path.clone(),
        message: e.to_string(),
    })?;
    config.validate().map_err(|e| Error::State {
        path,
        message: e.to_string(),
    })?;
    Ok(config)
}

/// Writes `history.jsonl` from the state's history.
pub(crate) fn write_history(dir: &Path, history: &History) -> Result<()> {
    let path = dir.join(HISTORY_FILE);
    let mut lines = String::new();
    for record in &history.epochs {
        let line = serde_json::to_string(record).map_err(|e| Error::State {
            path: path.clone(),
            message: e.to_string(),
        })?;
        lines.push_str(&line);
        lines.push('\n');
    }
    write_atomic(&path, lines.as_bytes()).map_err(io(&path))
}

/// Writes one epoch's checkpoint: `best/` (when the epoch is the best so far), then `last/`
/// with the optimizer and trainer state, then `history.jsonl`.
fn write_checkpoint(
    dir: &Path,
    model: &SavedModel,
    encoder: &Encoder,
    optimizer: &[u8],
    state: &TrainerState,
    best: bool,
) -> Result<()> {
    let save_model = |d: &Path| write_model_dir(model, encoder, d);
    // `best/` before `last/`: the trainer state in `last/` is what a resume believes, so it
    // must never name a best checkpoint that a kill kept from being written.
    if best {
        swap_in_dir(&dir.join(BEST_DIR), save_model)?;
    }
    swap_in_dir(&dir.join(LAST_DIR), |d| {
        save_model(d)?;
        let path = d.join(OPTIMIZER_FILE);
        write_atomic(&path, optimizer).map_err(io(&path))?;
        let path = d.join(STATE_FILE);
        write_atomic(&path, &state.to_json(&path)?).map_err(io(&path))
    })?;
    write_history(dir, &state.history)
}

/// Writes epoch checkpoints ([`write_checkpoint`]) on a thread of their own, so that training
/// goes on while the files are written and synced. The model and the optimizer state are
/// serialised first, by the caller: the thread holds their bytes, not their tensors, which
/// the next steps would otherwise have to copy instead of updating in place (on the SNIPS
/// recipe, handing the tensors over raised the peak RSS from 357 to 459 MiB). One checkpoint
/// at a time: the next waits for the one before. A failed write surfaces at the next
/// training step ([`check`](Self::check)), the next checkpoint, or the end of training
/// ([`wait`](Self::wait)). Dropped with a write in flight (training failed meanwhile), it
/// waits for the write, so a failed run still keeps its last checkpoint.
#[derive(Debug, Default)]
pub(crate) struct CheckpointWriter {
    pending: Option<JoinHandle<Result<()>>>,
}

impl CheckpointWriter {
    /// Starts writing a checkpoint into `dir` once the one in flight is written.
    pub(crate) fn start(
        &mut self,
        dir: &Path,
        model: &MultitaskTransformer,
        encoder: &Encoder,
        optimizer: &AdamW,
        state: &TrainerState,
        best: bool,
    ) -> Result<()> {
        self.wait()?;
        let last = dir.join(LAST_DIR);
        let model = model.serialize()?;
        let optimizer = optimizer.to_bytes()?;
        let (dir, encoder, state) = (dir.to_path_buf(), encoder.clone(), state.clone());
        let write = move || write_checkpoint(&dir, &model, &encoder, &optimizer, &state, best);
        let handle = std::thread::Builder::new()
            .name("mtl-checkpoint".into())
            .spawn(write)
            .map_err(io(&last))?;
        self.pending = Some(handle);
        Ok(())
    }

    /// The error of a write that has ended, if it failed; a write in flight is left to go on.
    pub(crate) fn check(&mut self) -> Result<()> {
        if self.pending.as_ref().is_some_and(JoinHandle::is_finished) {
            self.wait()
        } else {
            Ok(())
        }
    }

    /// Waits for the write in flight, if any: its error if it failed (a panic in it goes on
    /// in the caller).
    pub(crate) fn wait(&mut self) -> Result<()> {
        match self.pending.take() {
            Some(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            None => Ok(()),
        }
    }
}

impl Drop for CheckpointWriter {
    fn drop(&mut self) {
        if let Some(handle) = self.pending.take() {
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("the last checkpoint was not written: {e}"),
                Err(_) => eprintln!("the last checkpoint was not written: its writer panicked"),
            }
        }
    }
}

/// Saves a model with its encoder (tokenizer and label maps) into `dir`.
pub fn save_model_dir(model: &MultitaskTransformer, encoder: &Encoder, dir: &Path) -> Result<()> {
    write_model_dir(&model.serialize()?, encoder, dir)
}

/// [`save_model_dir`] of a model serialised beforehand.
fn write_model_dir(model: &SavedModel, encoder: &Encoder, dir: &Path) -> Result<()> {
    model.save_dir(dir)?;
    encoder.save(dir)?;
    Ok(())
}

/// Loads a model directory written by [`save_model_dir`] (or a run directory: its `best/`,
/// else its `last/`), and checks that its files agree ([`check_model_dir`]).
pub fn load_model_dir(dir: &Path, device: &Device) -> Result<(MultitaskTransformer, Encoder)> {
    let dir = resolve_model_dir(dir);
    let config = mtl_model::load_config(&dir)?;
    let encoder = Encoder::load(&dir)?;
    check_model_dir(&config, &encoder, &dir)?;
    let model = MultitaskTransformer::load_dir(&dir, device)?;
    Ok((model, encoder))
}

/// A run directory resolves to its best model, else its last (each recovered from a kill
/// inside its swap); a model directory to itself.
pub fn resolve_model_dir(dir: &Path) -> PathBuf {
    let run = run_dir_after_kill(dir);
    for sub in [BEST_DIR, LAST_DIR] {
        let d = checkpoint_dir(&run.join(sub));
        if d.join(CONFIG_FILE).exists() {
            return d;
        }
    }
    dir.to_path_buf()
}

fn mismatch(
    dir: &Path,
    file: &str,
    what: &str,
    found: impl ToString,
    expected: impl ToString,
) -> Error {
    Error::Inconsistent {
        path: dir.join(file),
        what: what.to_owned(),
        found: found.to_string(),
        against: CONFIG_FILE.to_owned(),
        expected: expected.to_string(),
    }
}

/// The one consistency check of a model directory (`dir` names it in errors): the encoder's
/// files against the model's `config.json`. Every token id the tokenizer makes has a row in
/// the embedding table, the encoder's sequence limit is within the model's, `labels.json` and
/// `tags.json` have as many entries as the heads have outputs, and the encoder makes the
/// character ids the model reads. Both inference engines run only models that pass it.
///
/// # Errors
///
/// [`Error::Inconsistent`] naming the file and the two numbers.
pub fn check_model_dir(
    config: &mtl_model::MultitaskConfig,
    encoder: &Encoder,
    dir: &Path,
) -> Result<()> {
    let vocab = encoder.text.vocab_size();
    if vocab > config.vocab_size {
        return Err(mismatch(
            dir,
            encoder.text.file_name(),
            "token ids (vocab_size)",
            vocab,
            config.vocab_size,
        ));
    }
    if encoder.max_seq_length > config.max_seq_length {
        return Err(mismatch(
            dir,
            mtl_data::ENCODER_FILE,
            "max_seq_length",
            encoder.max_seq_length,
            config.max_seq_length,
        ));
    }
    // A head has at least one output, even for a task without labels.
    let labels = encoder.labels.len().max(1);
    if labels != config.num_classes {
        return Err(mismatch(
            dir,
            mtl_data::LABELS_FILE,
            "sentence labels (num_classes)",
            labels,
            config.num_classes,
        ));
    }
    let tags = encoder.tags.len().max(1);
    if tags != config.num_ner_tags {
        return Err(mismatch(
            dir,
            mtl_data::TAGS_FILE,
            "tags (num_ner_tags)",
            tags,
            config.num_ner_tags,
        ));
    }
    let reads = config
        .char_features
        .as_ref()
        .map(|c| (c.max_chars, c.buckets));
    let makes = encoder.chars.map(|c| (c.max_chars, c.buckets as usize));
    if reads != makes {
        let show = |c: Option<(usize, usize)>| {
            c.map_or("none".to_owned(), |(m, b)| {
                format!("max_chars {m}, buckets {b}")
            })
        };
        return Err(mismatch(
            dir,
            mtl_data::ENCODER_FILE,
            "character ids (char_features)",
            show(makes),
            show(reads),
        ));
    }
    Ok(())
}

/// [`check_model_dir`] for a model and encoder in memory.
///
/// # Errors
///
/// [`Error::Inconsistent`].
pub fn check_chars(model: &MultitaskTransformer, encoder: &Encoder) -> Result<()> {
    check_model_dir(model.config(), encoder, Path::new("(in memory)"))
}

/// Checks the optimizer state read from `path` against the parameters of `model`: every
/// entry names a parameter and has as many values as it.
///
/// # Errors
///
/// [`Error::Inconsistent`] naming the entry and the two sizes.
pub(crate) fn check_optimizer<M: Module>(optimizer: &AdamW, model: &M, path: &Path) -> Result<()> {
    struct Sizes {
        path: Vec<String>,
        sizes: std::collections::HashMap<String, usize>,
    }
    impl ModuleVisitor for Sizes {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_owned());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let n = param.shape().num_elements();
            self.sizes.insert(self.path.join("."), n);
        }
    }
    let mut sizes = Sizes {
        path: Vec::new(),
        sizes: Default::default(),
    };
    model.visit(&mut sizes);
    for (key, n) in optimizer.entries() {
        match sizes.sizes.get(key) {
            Some(&expected) if expected == n => {}
            Some(&expected) => {
                return Err(Error::Inconsistent {
                    path: path.to_path_buf(),
                    what: format!("the moments of {key}"),
                    found: format!("{n} values"),
                    against: mtl_model::io::WEIGHTS_FILE.to_owned(),
                    expected: format!("{expected} values"),
                });
            }
            None => {
                return Err(Error::Inconsistent {
                    path: path.to_path_buf(),
                    what: format!("entry {key}"),
                    found: "present".into(),
                    against: mtl_model::io::WEIGHTS_FILE.to_owned(),
                    expected: "no such parameter".into(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mtl-rundir-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn write_dir(dir: &Path, text: &str) -> Result<()> {
        write_atomic(&dir.join("f"), text.as_bytes()).map_err(io(dir))
    }

    fn read(dir: &Path) -> String {
        fs::read_to_string(dir.join("f")).unwrap_or_default()
    }

    /// Every state a kill can leave a swap in resolves to a complete directory, the new one
    /// as soon as it is complete.
    #[test]
    fn recovery_prefers_a_complete_new_copy_to_the_old_one() -> Result<()> {
        let base = temp("recover");
        let dir = base.join("best");
        swap_in_dir(&dir, |d| write_dir(d, "one"))?;
        swap_in_dir(&dir, |d| write_dir(d, "two"))?;
        assert_eq!(read(&dir), "two");
        let (new, old, tmp) = (
            sibling(&dir, "new"),
            sibling(&dir, "old"),
            sibling(&dir, "tmp"),
        );
        for d in [&new, &old, &tmp] {
            assert!(!d.exists(), "{} left behind", d.display());
        }
        // Killed between `best` → `best.old` and `best.new` → `best`.
        fs::create_dir_all(&new).map_err(io(&new))?;
        write_dir(&new, "three")?;
        fs::rename(&dir, &old).map_err(io(&dir))?;
        assert_eq!(read(&checkpoint_dir(&dir)), "three");
        recover_checkpoint(&dir)?;
        assert_eq!(read(&dir), "three");
        assert!(!old.exists() && !new.exists());
        // Killed while the new copy was still being written: the old one stays.
        fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        write_dir(&tmp, "half")?;
        assert_eq!(read(&checkpoint_dir(&dir)), "three");
        recover_checkpoint(&dir)?;
        assert!(!tmp.exists());
        // Killed after the first rename of a swap of a directory with only `.old`.
        fs::rename(&dir, &old).map_err(io(&dir))?;
        assert_eq!(read(&checkpoint_dir(&dir)), "three");
        fs::remove_dir_all(&base).map_err(io(&base))
    }

    /// A checkpoint written in the background is complete once waited for, also when the
    /// writer is dropped with the write in flight; a write that fails is an error of the
    /// writer's next call, naming the path, not a silent loss.
    #[test]
    fn a_background_checkpoint_is_written_whole_or_its_error_surfaces() -> Result<()> {
        let base = temp("writer");
        let data = crate::MultitaskDataset::new(
            &["fly to paris", "call mom"],
            &[Some("travel"), Some("phone")],
            &[Some(vec!["O", "O", "B-city"]), Some(vec!["O", "B-who"])],
        )?;
        let encoder = data.build_encoder(16)?;
        let device = Device::flex();
        let config = mtl_model::MultitaskConfig::new(
            encoder.text.vocab_size(),
            encoder.labels.len(),
            encoder.tags.len(),
        )
        .with_d_model(8)
        .with_nhead(2)
        .with_num_encoder_layers(1)
        .with_dim_feedforward(16)
        .with_max_seq_length(16);
        let model = MultitaskTransformer::new(&config, &device)?;
        let state = TrainerState {
            epochs_done: 0,
            step: 3,
            best_score: None,
            best_epoch: None,
            bad_epochs: 0,
            history: History::default(),
            config: TrainConfig::default(),
            validation: None,
        };
        let start = |writer: &mut CheckpointWriter, dir: &Path| {
            writer.start(
                dir,
                &model,
                &encoder,
                &AdamW::new(Default::default()),
                &state,
                true,
            )
        };
        let mut writer = CheckpointWriter::default();
        start(&mut writer, &base)?;
        writer.wait()?;
        let point = resume_point(&base)?;
        assert_eq!((point.epochs_done, point.step), (0, 3));
        let (saved, _) = load_model_dir(&base.join(BEST_DIR), &device)?;
        assert!(
            saved.to_bytes()? == model.to_bytes()?,
            "best/ holds other weights"
        );

        // Dropped while writing into a fresh directory: the drop waits for the files.
        let dropped = base.join("dropped");
        fs::create_dir_all(&dropped).map_err(io(&dropped))?;
        let mut writer = CheckpointWriter::default();
        start(&mut writer, &dropped)?;
        drop(writer);
        assert_eq!(resume_point(&dropped)?.step, 3);

        // A file where the run directory should be: the write fails, and says where.
        let blocked = base.join("blocked");
        fs::write(&blocked, b"not a directory").map_err(io(&blocked))?;
        let mut writer = CheckpointWriter::default();
        start(&mut writer, &blocked)?;
        let err = writer.wait().expect_err("cannot write under a file");
        assert!(
            matches!(&err, Error::Io { path, .. } if path.starts_with(&blocked)),
            "{err}"
        );
        // The next checkpoint, after a failed one, is written as if nothing had happened.
        start(&mut writer, &base)?;
        assert!(writer.wait().is_ok() && writer.check().is_ok());
        fs::remove_dir_all(&base).map_err(io(&base))
    }

    /// A stored configuration that could never have trained (a batch size of 0 would divide
    /// by zero) or numbers that contradict the history are refused naming the file.
    #[test]
    fn a_trainer_state_is_checked_when_read() -> Result<()> {
        let base = temp("state");
        let path = base.join(STATE_FILE);
        let state = |config: TrainConfig, epochs_done: usize| TrainerState {
            epochs_done,
            step: 0,
            best_score: None,
            best_epoch: None,
            bad_epochs: 0,
            history: History::default(),
            config,
            validation: None,
        };
        let write = |s: &TrainerState| {
            fs::write(&path, serde_json::to_vec(s).expect("json")).map_err(io(&path))
        };
        write(&state(TrainConfig::default(), 0))?;
        assert!(TrainerState::read(&path).is_ok());
        for (bad, said) in [
            (
                state(
                    TrainConfig {
                        batch_size: 0,
                        ..TrainConfig::default()
                    },
                    0,
                ),
                "batch_size",
            ),
            (state(TrainConfig::default(), usize::MAX), "epochs_done"),
        ] {
            write(&bad)?;
            match TrainerState::read(&path) {
                Err(Error::State { path: p, message }) => {
                    assert_eq!(p, path);
                    assert!(message.contains(said), "{message}");
                }
                other => panic!("expected a state error about {said}, got {other:?}"),
            }
        }
        fs::remove_dir_all(&base).map_err(io(&base))
    }

    #[test]
    fn a_second_writer_is_refused_and_the_lock_dies_with_its_holder() -> Result<()> {
        let base = temp("lock");
        let run = base.join("run");
        let first = RunDir::create(&run, false)?;
        fs::write(run.join(TRAIN_CONFIG_FILE), "{}").map_err(io(&run))?;
        let err = RunDir::open(&run).expect_err("locked");
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        assert!(err.to_string().contains("another process"), "{err}");
        drop(first);
        let second = RunDir::open(&run)?;
        drop(second);
        let err = RunDir::create(&run, false).expect_err("exists");
        assert!(matches!(err, Error::RunExists { .. }), "{err}");
        fs::remove_dir_all(&base).map_err(io(&base))
    }

    /// `--overwrite` keeps the earlier run until the new one commits; a kill between the two
    /// renames of the commit finishes the replacement.
    #[test]
    fn an_earlier_run_is_replaced_only_at_commit() -> Result<()> {
        let base = temp("replace");
        let run = base.join("run");
        let other = base.join("other");
        fs::create_dir_all(&other).map_err(io(&other))?;
        fs::write(other.join("notes.txt"), "mine").map_err(io(&other))?;
        let err = RunDir::create(&other, true).expect_err("not a run");
        assert!(matches!(err, Error::NotARunDir { .. }), "{err}");
        {
            let first = RunDir::create(&run, false)?;
            write_atomic(&first.path().join(TRAIN_CONFIG_FILE), b"old").map_err(io(&run))?;
        }
        {
            let second = RunDir::create(&run, true)?;
            assert_ne!(second.path(), run.as_path());
            write_atomic(&second.path().join(TRAIN_CONFIG_FILE), b"new").map_err(io(&run))?;
            // Dropped without commit (a failure before the first checkpoint).
            assert_eq!(
                fs::read(run.join(TRAIN_CONFIG_FILE)).ok(),
                Some(b"old".to_vec())
            );
        }
        assert_eq!(
            fs::read(run.join(TRAIN_CONFIG_FILE)).ok(),
            Some(b"old".to_vec())
        );
        let mut third = RunDir::create(&run, true)?;
        write_atomic(&third.path().join(TRAIN_CONFIG_FILE), b"new").map_err(io(&run))?;
        fs::create_dir_all(third.path().join(LAST_DIR)).map_err(io(&run))?;
        fs::write(third.path().join(LAST_DIR).join(STATE_FILE), "{}").map_err(io(&run))?;
        third.commit()?;
        assert_eq!(third.path(), run.as_path());
        assert_eq!(
            fs::read(run.join(TRAIN_CONFIG_FILE)).ok(),
            Some(b"new".to_vec())
        );
        drop(third);
        // A kill between the renames of a commit: the earlier run aside, a `run.replacing`
        // with its first checkpoint.
        fs::rename(&run, sibling(&run, "replacing")).map_err(io(&run))?;
        fs::create_dir_all(sibling(&run, "replaced")).map_err(io(&run))?;
        assert_eq!(
            resolve_model_dir(&run),
            run.clone(),
            "no model in it, the path itself"
        );
        let reopened = RunDir::open(&run)?;
        assert_eq!(
            fs::read(run.join(TRAIN_CONFIG_FILE)).ok(),
            Some(b"new".to_vec())
        );
        drop(reopened);
        fs::remove_dir_all(&base).map_err(io(&base))
    }
}
