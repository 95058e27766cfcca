//! Crash-safe file writes, the one place mtl writes files that must survive a kill.
//!
//! [`write_atomic`] replaces a file whole: the bytes go to a temporary file whose name is
//! unique to the process and the call, which is flushed to disk (`fsync`) and renamed over the
//! target, and the directory is flushed so that the rename itself survives a power cut. A
//! process killed at any instant leaves the old file or the new one, never a mixture, and no
//! two processes (or threads) ever write the same temporary file. [`rename_durable`] and
//! [`sync_dir`] are the same steps for whole directories, which the run directories of
//! `mtl-train` swap in.
//!
//! ```
//! let dir = std::env::temp_dir().join(format!("mtl-fs-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let path = dir.join("labels.json");
//! mtl_fs::write_atomic(&path, b"[\"a\"]")?;
//! mtl_fs::write_atomic(&path, b"[\"a\",\"b\"]")?;
//! assert_eq!(std::fs::read(&path)?, b"[\"a\",\"b\"]");
//! std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Tests that kill a process inside its writes set [`PAUSE_ENV`] to a number of milliseconds:
//! every write then sleeps that long after its data is written and before it is renamed, so
//! a kill lands inside a write often. Nothing else reads it.

#![deny(missing_docs)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Environment variable, for tests only: milliseconds every write sleeps between writing its
/// data and renaming it into place (so a kill can land inside it).
pub const PAUSE_ENV: &str = "MTL_TEST_WRITE_PAUSE_MS";

/// Sleeps for [`PAUSE_ENV`] milliseconds when that variable is set (tests only).
pub fn test_pause() {
    static PAUSE: OnceLock<Option<Duration>> = OnceLock::new();
    let pause = PAUSE.get_or_init(|| {
        std::env::var(PAUSE_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis)
    });
    if let Some(d) = pause {
        std::thread::sleep(*d);
    }
}

/// A name for a temporary sibling of `path`, unique to this process and this call:
/// `.<name>.tmp.<pid>.<n>`.
pub fn temp_sibling(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".tmp.{}.{n}", std::process::id()));
    path.with_file_name(name)
}

/// Whether `name` is one [`temp_sibling`] makes (a leftover of a killed writer).
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp.")
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Flushes a directory's entries (creations, renames, removals) to disk.
///
/// # Errors
///
/// The directory cannot be opened or flushed.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` atomically and durably: a temporary sibling unique to this call,
/// written and flushed (`fsync`), renamed over `path`, then the directory flushed. A kill at
/// any instant leaves either the previous file or the new one.
///
/// # Errors
///
/// Any I/O error; the temporary file is removed when writing it fails.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_sibling(path);
    let written = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    test_pause();
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(parent_of(path))
}

/// Renames `from` to `to` (files or directories) and flushes the directories of both.
///
/// # Errors
///
/// Any I/O error of the rename or the flushes.
pub fn rename_durable(from: &Path, to: &Path) -> std::io::Result<()> {
    test_pause();
    fs::rename(from, to)?;
    sync_dir(parent_of(to))?;
    if parent_of(from) != parent_of(to) {
        sync_dir(parent_of(from))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_unique_and_recognised() {
        let a = temp_sibling(Path::new("/x/model.bpk"));
        let b = temp_sibling(Path::new("/x/model.bpk"));
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(Path::new("/x")));
        let name = a.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert!(name.starts_with(".model.bpk.tmp."), "{name}");
        assert!(is_temp_name(name));
        assert!(!is_temp_name("model.bpk"));
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_temporary_file() -> std::io::Result<()> {
        let dir = std::env::temp_dir().join(format!("mtl-fs-test-{}", std::process::id()));
        fs::create_dir_all(&dir)?;
        let path = dir.join("f.json");
        write_atomic(&path, b"one")?;
        write_atomic(&path, b"two two")?;
        assert_eq!(fs::read(&path)?, b"two two");
        let names: Vec<String> = fs::read_dir(&dir)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()?;
        assert_eq!(names, vec!["f.json".to_owned()]);
        // A failed write (no such directory) leaves nothing behind and says so.
        assert!(write_atomic(&dir.join("missing/f.json"), b"x").is_err());
        fs::remove_dir_all(&dir)
    }
}
