//! Readers for JointBERT directories, CoNLL column files and JSONL files.
//!
//! Every reader returns [`Example`]s whose tags are IOB2 and a [`ReadReport`]. Bad input is an
//! [`Error::Data`] naming the file and line, or, with [`ReadOptions::lenient`], a skipped
//! example counted in the report with a warning; nothing is dropped silently. All readers accept
//! a UTF-8 byte-order mark, CRLF line ends and empty lines at the end of a file.

mod conll;
mod jointbert;
mod jsonl;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use conll::{NO_TAG, parse_conll};
pub use jsonl::parse_jsonl;

use crate::error::{Error, Problem, Result};
use crate::example::Example;
use crate::tags::TagScheme;
use crate::words::WordSplit;

/// A data format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// JointBERT layout: a split directory holding `seq.in` (space-separated tokens, one
    /// sentence a line), optionally `seq.out` (one tag per token) and `label` (one sentence
    /// label a line).
    JointBert,
    /// CoNLL columns: one token a line, the tag in the last column, sentences separated by
    /// blank lines; see [`parse_conll`] for comments and sentence labels.
    Conll,
    /// JSON lines: one object a line; see [`parse_jsonl`] for the fields.
    Jsonl,
}

impl Format {
    /// All formats.
    pub const ALL: [Format; 3] = [Format::JointBert, Format::Conll, Format::Jsonl];

    /// File extensions (lower case, without the dot) that mean this format; empty for
    /// JointBERT, which is a directory.
    pub fn extensions(self) -> &'static [&'static str] {
        match self {
            Self::JointBert => &[],
            Self::Conll => &["conll", "txt", "bio", "tsv"],
            Self::Jsonl => &["jsonl", "json"],
        }
    }

    /// The format a file name's extension means, if any.
    fn from_extension(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|f| f.extensions().contains(&ext.as_str()))
    }

    /// Detects the format of a path.
    ///
    /// A directory holding `seq.in` or `train/seq.in` is JointBERT; a directory holding
    /// `train.<ext>` has that file's format; a file ending in `.jsonl` or `.json` is JSONL; one
    /// ending in `.conll`, `.txt`, `.bio` or `.tsv` is CoNLL.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the path does not exist, [`Error::UnknownFormat`] naming the path
    /// otherwise.
    pub fn detect(path: &Path) -> Result<Format> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            if path.join("seq.in").is_file() || path.join("train").join("seq.in").is_file() {
                return Ok(Self::JointBert);
            }
            if let Some((format, _)) = find_split_file(path, "train", None)? {
                return Ok(format);
            }
        } else if let Some(format) = Self::from_extension(path) {
            return Ok(format);
        }
        Err(Error::UnknownFormat { path: path.into() })
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::JointBert => "jointbert",
            Self::Conll => "conll",
            Self::Jsonl => "jsonl",
        })
    }
}

impl FromStr for Format {
    type Err = Error;

    /// Parses `jointbert`, `conll` or `jsonl`, ignoring case.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "jointbert" => Ok(Self::JointBert),
            "conll" => Ok(Self::Conll),
            "jsonl" => Ok(Self::Jsonl),
            _ => Err(Error::UnknownFormatName { name: s.into() }),
        }
    }
}

/// How to read data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReadOptions {
    /// The tag scheme of the files; tags are converted to IOB2.
    pub scheme: TagScheme,
    /// Skip bad examples (counting each in [`ReadReport::skipped`] with a warning) instead of
    /// failing on the first one. Problems with the layout (missing files, JointBERT files of
    /// different lengths) are errors either way.
    pub lenient: bool,
    /// How the raw `text` of JSONL records is split into words (JointBERT and CoNLL input and
    /// JSONL `tokens` are already split and kept as given).
    #[serde(default)]
    pub words: WordSplit,
}

/// What a reader saw.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReadReport {
    /// Examples returned.
    pub examples: usize,
    /// Examples whose tag sequence was ill-formed and repaired (see [`crate::to_iob2`]).
    pub repaired_sequences: usize,
    /// Bad examples skipped (lenient mode only).
    pub skipped: usize,
    /// One `file:line: message` per skipped example, repaired sequence or other oddity.
    pub warnings: Vec<String>,
}

impl ReadReport {
    /// Adds another report's counts and warnings to this one.
    pub fn merge(&mut self, other: ReadReport) {
        self.examples += other.examples;
        self.repaired_sequences += other.repaired_sequences;
        self.skipped += other.skipped;
        self.warnings.extend(other.warnings);
    }
}

impl fmt::Display for ReadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} examples, {} repaired tag sequences, {} skipped, {} warnings",
            self.examples,
            self.repaired_sequences,
            self.skipped,
            self.warnings.len()
        )
    }
}

/// The splits of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Splits {
    /// Training examples.
    pub train: Vec<Example>,
    /// Development examples, if the dataset has a dev split.
    pub dev: Option<Vec<Example>>,
    /// Test examples, if the dataset has a test split.
    pub test: Option<Vec<Example>>,
}

/// Reads one data file (CoNLL, JSONL) or one JointBERT split directory.
///
/// With `format` `None` the format is [detected](Format::detect).
///
/// # Errors
///
/// [`Error::Io`] if the path cannot be read, [`Error::UnknownFormat`] if the format cannot be
/// detected, [`Error::Layout`] if the path is a directory where a file is expected (or the
/// reverse, or a JointBERT split lacks `seq.in`), [`Error::Data`] for bad data.
pub fn read_examples(
    path: &Path,
    format: Option<Format>,
    opts: &ReadOptions,
) -> Result<(Vec<Example>, ReadReport)> {
    let format = match format {
        Some(format) => format,
        None => Format::detect(path)?,
    };
    match format {
        Format::JointBert => jointbert::read_split_dir(path, opts),
        Format::Conll | Format::Jsonl => {
            if path.is_dir() {
                return Err(Error::Layout {
                    path: path.into(),
                    expected: format!("a {format} file, found a directory"),
                });
            }
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            if format == Format::Conll {
                parse_conll(&bytes, path, opts)
            } else {
                parse_jsonl(&bytes, path, opts)
            }
        }
    }
}

/// Finds `root/<split>.<ext>` for the extensions of `format` (or of every format).
fn find_split_file(
    root: &Path,
    split: &str,
    format: Option<Format>,
) -> Result<Option<(Format, PathBuf)>> {
    let formats: &[Format] = match &format {
        Some(f) => std::slice::from_ref(f),
        None => &Format::ALL,
    };
    let mut found = Vec::new();
    for &f in formats {
        for ext in f.extensions() {
            let candidate = root.join(format!("{split}.{ext}"));
            if candidate.is_file() {
                found.push((f, candidate));
            }
        }
    }
    if found.len() > 1 {
        let names: Vec<String> = found.iter().map(|(_, p)| p.display().to_string()).collect();
        return Err(Error::Layout {
            path: root.into(),
            expected: format!(
                "one file for split `{split}`, found {}; pass the format explicitly",
                names.join(", ")
            ),
        });
    }
    Ok(found.pop())
}

/// Where a split of a dataset root lives, if it is there.
fn locate_split(
    root: &Path,
    split: &str,
    format: Option<Format>,
) -> Result<Option<(Format, PathBuf)>> {
    let dir = root.join(split);
    if matches!(format, None | Some(Format::JointBert)) && dir.is_dir() {
        return Ok(Some((Format::JointBert, dir)));
    }
    if format == Some(Format::JointBert) {
        return Ok(None);
    }
    find_split_file(root, split, format)
}

/// What a split may look like, in words.
fn split_expectation(split: &str, format: Option<Format>) -> String {
    let exts = |f: Format| f.extensions().join("|");
    match format {
        Some(Format::JointBert) => format!("a directory `{split}/` holding seq.in"),
        Some(f) => format!("a file `{split}.<{}>`", exts(f)),
        None => format!(
            "a directory `{split}/` holding seq.in (JointBERT) or a file `{split}.<{}|{}>`",
            exts(Format::Jsonl),
            exts(Format::Conll)
        ),
    }
}

/// Reads one split (`train`, `dev`, `test`, ...) of a dataset root: the JointBERT directory
/// `root/<split>/` or the file `root/<split>.<ext>`.
///
/// # Errors
///
/// [`Error::MissingSplit`] if the split is not there, and the errors of [`read_examples`].
pub fn read_split(
    path: &Path,
    split: &str,
    format: Option<Format>,
    opts: &ReadOptions,
) -> Result<(Vec<Example>, ReadReport)> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let located = if meta.is_dir() {
        locate_split(path, split, format)?
    } else {
        None
    };
    let Some((format, split_path)) = located else {
        return Err(Error::MissingSplit {
            path: path.into(),
            split: split.into(),
            expected: split_expectation(split, format),
        });
    };
    read_examples(&split_path, Some(format), opts)
}

/// Names accepted for the dev split, in order of preference.
const DEV_NAMES: [&str; 3] = ["dev", "valid", "validation"];

/// Reads a dataset.
///
/// - A JointBERT root with `train/` (required), `dev/` and `test/` (optional).
/// - A directory holding `train.<ext>` (required), `dev.<ext>` and `test.<ext>` (optional);
///   `valid` and `validation` are accepted for `dev`.
/// - A single file, or a single JointBERT split directory: that is `train`, with no dev or
///   test split.
///
/// The format of `dev` and `test` is the format found for `train`. The report covers all
/// splits.
///
/// # Errors
///
/// [`Error::MissingSplit`] if a directory has no train split, and the errors of
/// [`read_examples`].
pub fn read_splits(
    path: &Path,
    format: Option<Format>,
    opts: &ReadOptions,
) -> Result<(Splits, ReadReport)> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let single_split_dir = meta.is_dir()
        && matches!(format, None | Some(Format::JointBert))
        && path.join("seq.in").is_file();
    if !meta.is_dir() || single_split_dir {
        let (train, report) = read_examples(path, format, opts)?;
        let splits = Splits {
            train,
            dev: None,
            test: None,
        };
        return Ok((splits, report));
    }
    let Some((format, train_path)) = locate_split(path, "train", format)? else {
        return Err(Error::MissingSplit {
            path: path.into(),
            split: "train".into(),
            expected: split_expectation("train", format),
        });
    };
    let (train, mut report) = read_examples(&train_path, Some(format), opts)?;
    let mut read_optional = |names: &[&str]| -> Result<Option<Vec<Example>>> {
        for name in names {
            if let Some((format, split_path)) = locate_split(path, name, Some(format))? {
                let (examples, split_report) = read_examples(&split_path, Some(format), opts)?;
                report.merge(split_report);
                return Ok(Some(examples));
            }
        }
        Ok(None)
    };
    let dev = read_optional(&DEV_NAMES)?;
    let test = read_optional(&["test"])?;
    Ok((Splits { train, dev, test }, report))
}

/// The lines of a file: BOM stripped, `\r\n` and `\n` accepted, each decoded on its own so an
/// invalid byte is reported on its line (as the offset of that byte in the line). Numbers are
/// 1-based.
pub(crate) fn decode_lines(bytes: &[u8]) -> Vec<(usize, std::result::Result<&str, usize>)> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut pieces: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if pieces.last().is_some_and(|last| last.is_empty()) {
        pieces.pop();
    }
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, piece)| {
            let piece = piece.strip_suffix(b"\r").unwrap_or(piece);
            let line = std::str::from_utf8(piece).map_err(|e| e.valid_up_to());
            (i + 1, line)
        })
        .collect()
}

/// Collects examples and the report while a reader runs; applies [`ReadOptions::lenient`].
pub(crate) struct Sink<'a> {
    opts: &'a ReadOptions,
    examples: Vec<Example>,
    report: ReadReport,
}

impl<'a> Sink<'a> {
    pub(crate) fn new(opts: &'a ReadOptions) -> Self {
        Self {
            opts,
            examples: Vec::new(),
            report: ReadReport::default(),
        }
    }

    /// A bad example: an error, or in lenient mode a counted warning.
    pub(crate) fn problem(&mut self, file: &Path, line: usize, problem: Problem) -> Result<()> {
        if self.opts.lenient {
            self.report.skipped += 1;
            self.report.warnings.push(format!(
                "{}:{line}: {problem} (example skipped)",
                file.display()
            ));
            Ok(())
        } else {
            Err(Error::Data {
                file: file.into(),
                line,
                problem,
            })
        }
    }

    /// A note that does not skip anything.
    pub(crate) fn warn(&mut self, file: &Path, line: usize, message: &str) {
        self.report
            .warnings
            .push(format!("{}:{line}: {message}", file.display()));
    }

    /// A good example; `repaired` if its tags were repaired.
    pub(crate) fn accept(&mut self, example: Example, repaired: bool) {
        if repaired {
            self.report.repaired_sequences += 1;
            if let Some(source) = &example.source {
                self.report.warnings.push(format!(
                    "{source}: ill-formed tag sequence repaired (I-X not continuing an X \
                     entity read as B-X)"
                ));
            }
        }
        self.report.examples += 1;
        self.examples.push(example);
    }

    pub(crate) fn finish(self) -> (Vec<Example>, ReadReport) {
        (self.examples, self.report)
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh, empty directory under the system temp dir, removed on drop.
    pub(crate) struct TempDir(pub(crate) PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("mtl-data-test-{}-{tag}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create temp dir");
            Self(dir)
        }

        /// Writes `name` (creating parent dirs) and returns its path.
        pub(crate) fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
            let path = self.0.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("create parent");
            }
            std::fs::write(&path, bytes).expect("write test file");
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::TempDir;
    use super::*;

    #[test]
    fn format_names_round_trip() {
        for f in Format::ALL {
            assert_eq!(f.to_string().parse::<Format>().ok(), Some(f));
        }
        assert!(matches!(
            "csv".parse::<Format>(),
            Err(Error::UnknownFormatName { name }) if name == "csv"
        ));
    }

    #[test]
    fn detect_formats() -> Result<()> {
        let tmp = TempDir::new("detect");
        let jsonl = tmp.write("a.JSONL", "");
        let conll = tmp.write("a.bio", "");
        let other = tmp.write("a.csv", "");
        tmp.write("jb/train/seq.in", "a\n");
        tmp.write("files/train.tsv", "a O\n");
        assert_eq!(Format::detect(&jsonl)?, Format::Jsonl);
        assert_eq!(Format::detect(&conll)?, Format::Conll);
        assert_eq!(Format::detect(&tmp.0.join("jb"))?, Format::JointBert);
        assert_eq!(Format::detect(&tmp.0.join("jb/train"))?, Format::JointBert);
        assert_eq!(Format::detect(&tmp.0.join("files"))?, Format::Conll);
        let err = Format::detect(&other).map(|_| ()).expect_err("should fail");
        assert!(matches!(&err, Error::UnknownFormat { path } if *path == other));
        assert!(err.to_string().contains("a.csv"));
        assert!(matches!(
            Format::detect(&tmp.0.join("nope")),
            Err(Error::Io { .. })
        ));
        let err = read_examples(&other, None, &ReadOptions::default()).expect_err("should fail");
        assert!(matches!(err, Error::UnknownFormat { .. }));
        Ok(())
    }

    #[test]
    fn decode_lines_handles_bom_crlf_and_bad_bytes() {
        let lines = decode_lines(b"\xEF\xBB\xBFa b\r\nc\xFF\n\n");
        assert_eq!(lines.len(), 3);
        assert!(matches!(lines[0], (1, Ok("a b"))));
        assert!(matches!(lines[1], (2, Err(1))));
        assert!(matches!(lines[2], (3, Ok(""))));
        assert!(decode_lines(b"").is_empty());
    }

    #[test]
    fn splits_from_files_and_missing_splits() -> Result<()> {
        let tmp = TempDir::new("splits");
        tmp.write("d/train.jsonl", "{\"tokens\": [\"a\"], \"label\": \"x\"}\n");
        tmp.write(
            "d/valid.jsonl",
            "{\"tokens\": [\"b\"]}\n{\"tokens\": [\"c\"]}\n",
        );
        let opts = ReadOptions::default();
        let (splits, report) = read_splits(&tmp.0.join("d"), None, &opts)?;
        assert_eq!(splits.train.len(), 1);
        assert_eq!(splits.dev.as_ref().map(Vec::len), Some(2));
        assert!(splits.test.is_none());
        assert_eq!(report.examples, 3);

        let err = read_split(&tmp.0.join("d"), "test", None, &opts).expect_err("should fail");
        assert!(matches!(&err, Error::MissingSplit { split, .. } if split == "test"));
        assert!(err.to_string().contains("test"), "{err}");

        tmp.write("empty/readme.md", "");
        let err = read_splits(&tmp.0.join("empty"), None, &opts).expect_err("should fail");
        assert!(matches!(&err, Error::MissingSplit { split, .. } if split == "train"));

        // A single file is the train split.
        let file = tmp.write("one.conll", "a O\n");
        let (splits, _) = read_splits(&file, None, &opts)?;
        assert_eq!(splits.train.len(), 1);
        assert!(splits.dev.is_none() && splits.test.is_none());

        // Two train files of different formats are ambiguous.
        tmp.write("two/train.jsonl", "");
        tmp.write("two/train.conll", "");
        assert!(matches!(
            read_splits(&tmp.0.join("two"), None, &opts),
            Err(Error::Layout { .. })
        ));
        assert_eq!(
            read_splits(&tmp.0.join("two"), Some(Format::Conll), &opts)?
                .0
                .train
                .len(),
            0
        );

        // A file where a directory is expected, and the reverse.
        assert!(matches!(
            read_examples(&file, Some(Format::JointBert), &opts),
            Err(Error::Layout { .. })
        ));
        assert!(matches!(
            read_examples(&tmp.0.join("d"), Some(Format::Jsonl), &opts),
            Err(Error::Layout { .. })
        ));
        Ok(())
    }

    #[test]
    fn report_merges() {
        let mut a = ReadReport {
            examples: 1,
            repaired_sequences: 1,
            skipped: 0,
            warnings: vec!["x".into()],
        };
        a.merge(ReadReport {
            examples: 2,
            repaired_sequences: 0,
            skipped: 3,
            warnings: vec!["y".into()],
        });
        assert_eq!((a.examples, a.repaired_sequences, a.skipped), (3, 1, 3));
        assert_eq!(a.warnings, ["x", "y"]);
        assert!(a.to_string().starts_with("3 examples"));
    }
}
