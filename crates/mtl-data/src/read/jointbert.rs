//! The JointBERT layout: `seq.in`, `seq.out`, `label` in a split directory.

use std::path::{Path, PathBuf};

use super::{ReadOptions, ReadReport, Sink, decode_lines};
use crate::error::{Error, Problem, Result};
use crate::example::{Example, Source, split_words};
use crate::tags::normalize_tags;

/// The decoded lines of one file, with empty lines at the end removed.
struct Lines<'a> {
    path: PathBuf,
    lines: Vec<(usize, std::result::Result<&'a str, usize>)>,
}

impl<'a> Lines<'a> {
    fn new(path: PathBuf, bytes: &'a [u8]) -> Self {
        let mut lines = decode_lines(bytes);
        while lines
            .last()
            .is_some_and(|(_, l)| l.as_ref().is_ok_and(|l| l.trim().is_empty()))
        {
            lines.pop();
        }
        Self { path, lines }
    }
}

/// Reads an optional companion file of `seq.in`.
fn read_optional(dir: &Path, name: &str) -> Result<Option<(PathBuf, Vec<u8>)>> {
    let path = dir.join(name);
    if !path.exists() {
        return Ok(None);
    }
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    Ok(Some((path, bytes)))
}

/// Reads one JointBERT split directory.
pub(super) fn read_split_dir(dir: &Path, opts: &ReadOptions) -> Result<(Vec<Example>, ReadReport)> {
    let seq_in_path = dir.join("seq.in");
    if !seq_in_path.is_file() {
        return Err(Error::Layout {
            path: dir.into(),
            expected: "a JointBERT split directory holding seq.in (and optionally seq.out and \
                       label)"
                .into(),
        });
    }
    let seq_in_bytes = std::fs::read(&seq_in_path).map_err(|e| Error::io(&seq_in_path, e))?;
    let seq_out_file = read_optional(dir, "seq.out")?;
    let label_file = read_optional(dir, "label")?;

    let seq_in = Lines::new(seq_in_path, &seq_in_bytes);
    let seq_out = seq_out_file.as_ref().map(|(p, b)| Lines::new(p.clone(), b));
    let labels = label_file.as_ref().map(|(p, b)| Lines::new(p.clone(), b));
    let n = seq_in.lines.len();
    for other in seq_out.iter().chain(labels.iter()) {
        let found = other.lines.len();
        if found != n {
            return Err(Error::Data {
                file: other.path.clone(),
                line: found.min(n) + 1,
                problem: Problem::LineCountMismatch { expected: n, found },
            });
        }
    }

    let mut sink = Sink::new(opts);
    for i in 0..n {
        let line = i + 1;
        match read_line(i, &seq_in, seq_out.as_ref(), labels.as_ref(), opts) {
            Ok((example, repaired)) => sink.accept(example, repaired),
            Err((file, problem)) => sink.problem(&file, line, problem)?,
        }
    }
    Ok(sink.finish())
}

/// Line `i` (0-based) of a file, or the problem naming the file.
fn line_at<'a>(lines: &Lines<'a>, i: usize) -> std::result::Result<&'a str, (PathBuf, Problem)> {
    match lines.lines.get(i) {
        Some((_, Ok(text))) => Ok(text),
        Some((_, Err(byte))) => Err((lines.path.clone(), Problem::InvalidUtf8 { byte: *byte })),
        None => Err((
            lines.path.clone(),
            Problem::LineCountMismatch {
                expected: i + 1,
                found: lines.lines.len(),
            },
        )),
    }
}

/// Builds the example of line `i` (0-based); on failure names the file at fault.
fn read_line<'a>(
    i: usize,
    seq_in: &Lines<'a>,
    seq_out: Option<&Lines<'a>>,
    labels: Option<&Lines<'a>>,
    opts: &ReadOptions,
) -> std::result::Result<(Example, bool), (PathBuf, Problem)> {
    let at = |lines: &Lines<'a>| line_at(lines, i);
    let text = at(seq_in)?;
    let (words, spans) = split_words(text);
    if words.is_empty() {
        return Err((seq_in.path.clone(), Problem::EmptySentence));
    }
    let mut repaired = false;
    let tags = match seq_out {
        Some(seq_out) => {
            let raw: Vec<&str> = at(seq_out)?.split_whitespace().collect();
            if raw.len() != words.len() {
                return Err((
                    seq_out.path.clone(),
                    Problem::TagCountMismatch {
                        words: words.len(),
                        tags: raw.len(),
                    },
                ));
            }
            let (tags, fixed) = normalize_tags(&raw, opts.scheme)
                .map_err(|(_, problem)| (seq_out.path.clone(), problem))?;
            repaired = fixed;
            Some(tags)
        }
        None => None,
    };
    let label = match labels {
        Some(labels) => {
            let label = at(labels)?.trim();
            if label.is_empty() {
                return Err((labels.path.clone(), Problem::EmptyLabel));
            }
            Some(label.to_owned())
        }
        None => None,
    };
    let example = Example {
        text: text.to_owned(),
        words,
        spans,
        label,
        tags,
        source: Some(Source {
            file: seq_in.path.clone(),
            line: i + 1,
        }),
    };
    Ok((example, repaired))
}

#[cfg(test)]
mod tests {
    use super::super::test_util::TempDir;
    use super::super::{Format, read_examples, read_split, read_splits};
    use super::*;
    use crate::tags::TagScheme;

    fn strict() -> ReadOptions {
        ReadOptions::default()
    }

    /// Writes a split directory `name/` with the given files (`None` = absent).
    fn split(tmp: &TempDir, name: &str, seq_in: &str, seq_out: Option<&str>, label: Option<&str>) {
        tmp.write(&format!("{name}/seq.in"), seq_in);
        if let Some(seq_out) = seq_out {
            tmp.write(&format!("{name}/seq.out"), seq_out);
        }
        if let Some(label) = label {
            tmp.write(&format!("{name}/label"), label);
        }
    }

    /// Asserts a data error at `file:line`, and returns its problem.
    fn error_at(result: Result<(Vec<Example>, ReadReport)>, file: &Path, line: usize) -> Problem {
        match result {
            Err(Error::Data {
                file: got_file,
                line: got_line,
                problem,
            }) => {
                assert_eq!((got_file.as_path(), got_line), (file, line), "{problem}");
                problem
            }
            other => panic!(
                "expected a data error at {}:{line}, got {other:?}",
                file.display()
            ),
        }
    }

    #[test]
    fn reads_a_split_with_trailing_spaces_crlf_and_bom() -> Result<()> {
        let tmp = TempDir::new("jb");
        split(
            &tmp,
            "train",
            "\u{feff}listen to westbam \r\nadd  Björk to  mix \r\n\r\n",
            Some("O O B-artist \r\nO B-artist O B-playlist\r\n"),
            Some("PlayMusic\r\nAddToPlaylist \n\n\n"),
        );
        let (examples, report) = read_examples(&tmp.0.join("train"), None, &strict())?;
        assert_eq!(report.examples, 2);
        assert_eq!(examples[1].words, ["add", "Björk", "to", "mix"]);
        assert_eq!(examples[1].text, "add  Björk to  mix ");
        assert_eq!(examples[1].char_span(1, 2), (5, 10));
        assert_eq!(examples[1].label.as_deref(), Some("AddToPlaylist"));
        assert_eq!(
            examples[1].tags.as_deref(),
            Some(
                &[
                    "O".to_owned(),
                    "B-artist".into(),
                    "O".into(),
                    "B-playlist".into()
                ][..]
            )
        );
        let source = examples[1].source.as_ref().map(ToString::to_string);
        assert_eq!(
            source,
            Some(format!("{}:2", tmp.0.join("train/seq.in").display()))
        );
        Ok(())
    }

    #[test]
    fn missing_label_or_tags_means_unannotated() -> Result<()> {
        let tmp = TempDir::new("jb-partial");
        split(&tmp, "labels-only", "a b\n", None, Some("X\n"));
        split(&tmp, "tags-only", "a b\n", Some("O B-x\n"), None);
        let (examples, _) = read_examples(&tmp.0.join("labels-only"), None, &strict())?;
        assert_eq!(
            (examples[0].label.as_deref(), examples[0].tags.as_ref()),
            (Some("X"), None)
        );
        let (examples, _) = read_examples(&tmp.0.join("tags-only"), None, &strict())?;
        assert_eq!(examples[0].label, None);
        assert!(examples[0].tags.is_some());
        Ok(())
    }

    #[test]
    fn splits_and_missing_parts() -> Result<()> {
        let tmp = TempDir::new("jb-splits");
        split(&tmp, "train", "a\nb\n", Some("O\nO\n"), Some("X\nY\n"));
        split(&tmp, "test", "c\n", Some("O\n"), Some("X\n"));
        let (splits, report) = read_splits(&tmp.0, None, &strict())?;
        assert_eq!(splits.train.len(), 2);
        assert!(splits.dev.is_none());
        assert_eq!(splits.test.as_ref().map(Vec::len), Some(1));
        assert_eq!(report.examples, 3);
        let err = read_split(&tmp.0, "dev", None, &strict()).expect_err("no dev");
        assert!(matches!(&err, Error::MissingSplit { split, .. } if split == "dev"));
        assert!(err.to_string().contains("dev"));
        let err =
            read_split(&tmp.0, "dev", Some(Format::JointBert), &strict()).expect_err("no dev");
        assert!(matches!(err, Error::MissingSplit { .. }));
        // A split directory without seq.in.
        tmp.write("dev/label", "X\n");
        let err = read_splits(&tmp.0, None, &strict()).expect_err("dev lacks seq.in");
        assert!(
            matches!(&err, Error::Layout { path, .. } if path.ends_with("dev")),
            "{err}"
        );
        assert!(err.to_string().contains("seq.in"));
        // A split directory given as the dataset is the train split.
        let (splits, _) = read_splits(&tmp.0.join("test"), None, &strict())?;
        assert_eq!(splits.train.len(), 1);
        Ok(())
    }

    #[test]
    fn bad_inputs_name_file_and_line() {
        let tmp = TempDir::new("jb-bad");
        let path = |name: &str, file: &str| tmp.0.join(name).join(file);

        split(&tmp, "count", "a b\nc d\n", Some("O O\nO\n"), None);
        let problem = error_at(
            read_examples(&tmp.0.join("count"), None, &strict()),
            &path("count", "seq.out"),
            2,
        );
        assert!(matches!(
            problem,
            Problem::TagCountMismatch { words: 2, tags: 1 }
        ));

        split(&tmp, "short", "a\nb\nc\n", None, Some("X\nY\n"));
        let problem = error_at(
            read_examples(&tmp.0.join("short"), None, &strict()),
            &path("short", "label"),
            3,
        );
        assert!(matches!(
            problem,
            Problem::LineCountMismatch {
                expected: 3,
                found: 2
            }
        ));

        split(&tmp, "long", "a\n", Some("O\nO\n"), None);
        let problem = error_at(
            read_examples(&tmp.0.join("long"), None, &strict()),
            &path("long", "seq.out"),
            2,
        );
        assert!(matches!(
            problem,
            Problem::LineCountMismatch {
                expected: 1,
                found: 2
            }
        ));

        split(&tmp, "utf8", "a\n", None, None);
        tmp.write("utf8/seq.in", b"a\nb\xE9\n");
        let problem = error_at(
            read_examples(&tmp.0.join("utf8"), None, &strict()),
            &path("utf8", "seq.in"),
            2,
        );
        assert!(matches!(problem, Problem::InvalidUtf8 { byte: 1 }));

        split(&tmp, "empty", "a\n \nb\n", None, None);
        let problem = error_at(
            read_examples(&tmp.0.join("empty"), None, &strict()),
            &path("empty", "seq.in"),
            2,
        );
        assert!(matches!(problem, Problem::EmptySentence));

        split(&tmp, "nolabel", "a\nb\nc\n", None, Some("X\n\t\nZ\n"));
        let problem = error_at(
            read_examples(&tmp.0.join("nolabel"), None, &strict()),
            &path("nolabel", "label"),
            2,
        );
        assert!(matches!(problem, Problem::EmptyLabel));

        split(&tmp, "tag", "a b\n", Some("O E-x\n"), None);
        let problem = error_at(
            read_examples(&tmp.0.join("tag"), None, &strict()),
            &path("tag", "seq.out"),
            1,
        );
        assert!(matches!(problem, Problem::InvalidTag { .. }));

        tmp.write("noseq/seq.out", "O\n");
        let err = read_examples(&tmp.0.join("noseq"), Some(Format::JointBert), &strict())
            .expect_err("no seq.in");
        assert!(matches!(&err, Error::Layout { path, .. } if path.ends_with("noseq")));
    }

    #[test]
    fn lenient_skips_bad_lines_but_not_layout_errors() -> Result<()> {
        let tmp = TempDir::new("jb-lenient");
        split(
            &tmp,
            "s",
            "a b\nc\nd e\n",
            Some("O O\nO O\nI-x I-x\n"),
            Some("X\nY\nZ\n"),
        );
        let opts = ReadOptions {
            scheme: TagScheme::Iob2,
            lenient: true,
            ..ReadOptions::default()
        };
        let (examples, report) = read_examples(&tmp.0.join("s"), None, &opts)?;
        assert_eq!(examples.len(), 2);
        assert_eq!(
            (report.examples, report.skipped, report.repaired_sequences),
            (2, 1, 1)
        );
        let out = tmp.0.join("s/seq.out");
        assert!(
            report.warnings[0].starts_with(&format!("{}:2:", out.display())),
            "{:?}",
            report.warnings
        );
        assert_eq!(
            examples[1].tags.as_deref(),
            Some(&["B-x".to_owned(), "I-x".into()][..])
        );
        split(&tmp, "t", "a\nb\n", None, Some("X\n"));
        assert!(matches!(
            read_examples(&tmp.0.join("t"), None, &opts),
            Err(Error::Data {
                problem: Problem::LineCountMismatch { .. },
                ..
            })
        ));
        Ok(())
    }
}
