//! CoNLL column files.

use std::path::Path;

use super::{ReadOptions, ReadReport, Sink, decode_lines};
use crate::error::{Problem, Result};
use crate::example::{Example, Source};
use crate::tags::{check_tag, to_iob2};

/// The sentence being read.
#[derive(Default)]
struct Sentence {
    /// Line of the sentence's first line (label comment or token).
    start: Option<usize>,
    words: Vec<String>,
    tags: Vec<String>,
    /// Whether lines carry a tag (decided by the first token line).
    tagged: Option<(bool, usize)>,
    label: Option<(String, usize)>,
    /// A problem was reported (lenient mode): ignore the rest of the sentence.
    bad: bool,
}

impl Sentence {
    fn is_empty(&self) -> bool {
        self.words.is_empty() && self.label.is_none() && !self.bad
    }
}

/// The tag column of a word with no tag (a sentence not annotated for tagging), as `mtl eval
/// --predictions` writes it for gold.
pub const NO_TAG: &str = "_";

/// Whether a line is a comment: it starts with `#` followed by whitespace or nothing.
fn is_comment(line: &str) -> bool {
    line.strip_prefix('#')
        .is_some_and(|rest| rest.chars().next().is_none_or(char::is_whitespace))
}

/// Parses CoNLL column data; `file` names the data in errors and [`Source`]s.
///
/// - One token a line; columns are separated by spaces or tabs; the token is the first column
///   and its tag the last (middle columns, such as CoNLL-2003 POS and chunk tags, are ignored).
/// - Blank lines separate sentences; `-DOCSTART-` lines are skipped.
/// - A sentence whose lines all have one column, or whose tags are all `_`, has no tags (it
///   trains the sentence head only); a sentence mixing one-column and tagged lines, or `_`
///   and tags, is an error.
/// - Before a sentence's first token, lines starting with `#` followed by whitespace are
///   comments (as in CoNLL-U). `# label = PlayMusic` gives the sentence label `PlayMusic`;
///   other comments are ignored. Inside a sentence such a line is a token line (a `#` token).
///   A comment that looks like a token line (`# O`) is ignored with a warning.
///
/// ```
/// use std::path::Path;
/// use mtl_data::{parse_conll, ReadOptions};
/// let data = "# label = PlayMusic\nplay O\nqueen B-artist\n\nhello\n";
/// let (examples, report) = parse_conll(data.as_bytes(), Path::new("inline.conll"), &ReadOptions::default())?;
/// assert_eq!(examples[0].label.as_deref(), Some("PlayMusic"));
/// assert_eq!(examples[0].tags, Some(vec!["O".to_string(), "B-artist".to_string()]));
/// assert_eq!((examples[1].label.as_ref(), examples[1].tags.as_ref()), (None, None));
/// assert_eq!(report.examples, 2);
/// # Ok::<(), mtl_data::Error>(())
/// ```
///
/// # Errors
///
/// [`crate::Error::Data`] naming `file` and the line (unless [`ReadOptions::lenient`]).
pub fn parse_conll(
    bytes: &[u8],
    file: &Path,
    opts: &ReadOptions,
) -> Result<(Vec<Example>, ReadReport)> {
    let mut sink = Sink::new(opts);
    let mut sentence = Sentence::default();
    for (line, text) in decode_lines(bytes) {
        if sentence.bad && !text.is_ok_and(|t| t.trim().is_empty()) {
            continue;
        }
        let text = match text {
            Ok(text) => text.trim(),
            Err(byte) => {
                fail(
                    &mut sink,
                    &mut sentence,
                    file,
                    line,
                    Problem::InvalidUtf8 { byte },
                )?;
                continue;
            }
        };
        if text.is_empty() {
            flush(&mut sink, std::mem::take(&mut sentence), file, opts)?;
            continue;
        }
        let columns: Vec<&str> = text.split_whitespace().collect();
        if columns.first() == Some(&"-DOCSTART-") {
            flush(&mut sink, std::mem::take(&mut sentence), file, opts)?;
            continue;
        }
        if sentence.words.is_empty() && is_comment(text) {
            comment(&mut sink, &mut sentence, file, line, text, &columns, opts)?;
            continue;
        }
        token_line(&mut sink, &mut sentence, file, line, &columns, opts)?;
    }
    flush(&mut sink, sentence, file, opts)?;
    Ok(sink.finish())
}

/// Reports a problem in the current sentence.
fn fail(
    sink: &mut Sink<'_>,
    sentence: &mut Sentence,
    file: &Path,
    line: usize,
    problem: Problem,
) -> Result<()> {
    sink.problem(file, line, problem)?;
    sentence.bad = true;
    Ok(())
}

/// Handles a comment line before a sentence's first token.
fn comment(
    sink: &mut Sink<'_>,
    sentence: &mut Sentence,
    file: &Path,
    line: usize,
    text: &str,
    columns: &[&str],
    opts: &ReadOptions,
) -> Result<()> {
    let body = text[1..].trim();
    if let Some((key, value)) = body.split_once('=')
        && key.trim() == "label"
    {
        let value = value.trim();
        if value.is_empty() {
            return fail(sink, sentence, file, line, Problem::EmptyLabel);
        }
        if sentence.label.is_some() {
            let label = value.to_owned();
            return fail(
                sink,
                sentence,
                file,
                line,
                Problem::DuplicateLabel { label },
            );
        }
        sentence.label = Some((value.to_owned(), line));
        sentence.start.get_or_insert(line);
    } else if columns.len() == 2 && check_tag(columns[1], opts.scheme).is_ok() {
        sink.warn(
            file,
            line,
            "line looks like a `#` token with a tag but starts a sentence, so it is read as a \
             comment and ignored",
        );
    }
    Ok(())
}

/// Handles a token line.
fn token_line(
    sink: &mut Sink<'_>,
    sentence: &mut Sentence,
    file: &Path,
    line: usize,
    columns: &[&str],
    opts: &ReadOptions,
) -> Result<()> {
    let (Some(&token), Some(&tag)) = (columns.first(), columns.last()) else {
        return Ok(());
    };
    let tagged = columns.len() > 1;
    match sentence.tagged {
        None => sentence.tagged = Some((tagged, columns.len())),
        Some((previous, previous_columns)) if previous != tagged => {
            let problem = Problem::MixedColumns {
                found: columns.len(),
                previous: previous_columns,
            };
            return fail(sink, sentence, file, line, problem);
        }
        Some(_) => {}
    }
    if tagged {
        if tag == NO_TAG {
            sentence.tags.push(tag.to_owned());
            sentence.start.get_or_insert(line);
            sentence.words.push(token.to_owned());
            return Ok(());
        }
        if let Err(problem) = check_tag(tag, opts.scheme) {
            return fail(sink, sentence, file, line, problem);
        }
        sentence.tags.push(tag.to_owned());
    }
    sentence.start.get_or_insert(line);
    sentence.words.push(token.to_owned());
    Ok(())
}

/// Ends the current sentence.
fn flush(sink: &mut Sink<'_>, sentence: Sentence, file: &Path, opts: &ReadOptions) -> Result<()> {
    if sentence.bad || sentence.is_empty() {
        return Ok(());
    }
    if sentence.words.is_empty() {
        if let Some((label, line)) = sentence.label {
            sink.problem(file, line, Problem::DanglingLabel { label })?;
        }
        return Ok(());
    }
    let no_tag = sentence.tags.iter().filter(|t| *t == NO_TAG).count();
    if no_tag > 0 && no_tag < sentence.tags.len() {
        let line = sentence.start.unwrap_or(1);
        return sink.problem(file, line, Problem::PartialTags);
    }
    let (tags, repaired) = match sentence.tagged {
        Some((true, _)) if no_tag == 0 => {
            let (tags, repaired) = to_iob2(&sentence.tags, opts.scheme);
            (Some(tags), repaired)
        }
        _ => (None, false),
    };
    let mut example = Example::joined(sentence.words, sentence.label.map(|(l, _)| l), tags);
    example.source = sentence.start.map(|line| Source {
        file: file.into(),
        line,
    });
    sink.accept(example, repaired);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_util::TempDir;
    use super::super::{Format, read_examples};
    use super::*;
    use crate::error::Error;
    use crate::tags::TagScheme;

    fn parse(data: &str) -> Result<(Vec<Example>, ReadReport)> {
        parse_conll(
            data.as_bytes(),
            Path::new("t.conll"),
            &ReadOptions::default(),
        )
    }

    fn lenient(data: &str) -> Result<(Vec<Example>, ReadReport)> {
        let opts = ReadOptions {
            lenient: true,
            ..ReadOptions::default()
        };
        parse_conll(data.as_bytes(), Path::new("t.conll"), &opts)
    }

    /// Asserts a data error at `line` of `t.conll`, and returns its problem.
    fn error_at(result: Result<(Vec<Example>, ReadReport)>, line: usize) -> Problem {
        match result {
            Err(Error::Data {
                file,
                line: got,
                problem,
            }) => {
                assert_eq!(file, Path::new("t.conll"));
                assert_eq!(got, line, "{problem}");
                problem
            }
            other => panic!("expected a data error at line {line}, got {other:?}"),
        }
    }

    #[test]
    fn underscore_means_no_tags() -> Result<()> {
        // As `mtl eval --predictions` writes gold for a sentence without tags.
        let data = "# label = Greet\nhi _\nthere _\n\nplay O\njazz B-genre\n";
        let (examples, _) = parse(data)?;
        assert_eq!(examples[0].tags, None);
        assert_eq!(examples[0].label.as_deref(), Some("Greet"));
        assert_eq!(
            examples[1].tags.as_deref(),
            Some(&["O".to_owned(), "B-genre".into()][..])
        );
        let problem = error_at(parse("play O\n\nhi _\nthere O\n"), 3);
        assert!(matches!(problem, Problem::PartialTags), "{problem}");
        let (examples, report) = lenient("hi _\nthere O\n\nok O\n")?;
        assert_eq!((examples.len(), report.skipped), (1, 1));
        Ok(())
    }

    #[test]
    fn reads_columns_comments_and_labels() -> Result<()> {
        let data = "\u{feff}-DOCSTART- -X- O O\r\n\r\n# sent_id = 1\r\n# label = PlayMusic\r\n\
                    play VB O\r\nthe DT\tB-artist\r\n#\tI-artist\r\n\r\n\r\nhello\r\nworld\r\n\n\n";
        let (examples, report) = parse(data)?;
        assert_eq!(examples.len(), 2);
        let first = &examples[0];
        assert_eq!(first.words, ["play", "the", "#"]);
        assert_eq!(first.text, "play the #");
        assert_eq!(first.label.as_deref(), Some("PlayMusic"));
        assert_eq!(
            first.tags.as_deref(),
            Some(&["O".to_owned(), "B-artist".into(), "I-artist".into()][..])
        );
        assert_eq!(first.source.as_ref().map(|s| s.line), Some(4));
        let second = &examples[1];
        assert_eq!((second.label.as_ref(), second.tags.as_ref()), (None, None));
        assert_eq!(second.source.as_ref().map(|s| s.line), Some(10));
        assert_eq!(report.examples, 2);
        assert!(report.warnings.is_empty());
        Ok(())
    }

    #[test]
    fn label_only_and_hash_tokens() -> Result<()> {
        let (examples, report) = parse("# label = A\nx\n\n# O\n#hashtag O\n# O\n")?;
        assert_eq!(examples[0].label.as_deref(), Some("A"));
        assert_eq!(examples[0].tags, None);
        assert_eq!(examples[1].words, ["#hashtag", "#"]);
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        assert!(report.warnings[0].starts_with("t.conll:4:"));
        Ok(())
    }

    #[test]
    fn schemes_and_repairs() -> Result<()> {
        let (examples, report) = parse("a I-X\nb I-X\nc O\nd I-Y\n")?;
        assert_eq!(
            examples[0].tags.as_deref(),
            Some(&["B-X".to_owned(), "I-X".into(), "O".into(), "B-Y".into()][..])
        );
        assert_eq!(report.repaired_sequences, 1);
        assert!(report.warnings[0].starts_with("t.conll:1:"));
        let opts = ReadOptions {
            scheme: TagScheme::Iobes,
            lenient: false,
            ..ReadOptions::default()
        };
        let (examples, report) = parse_conll(b"a S-X\nb B-Y\nc E-Y\n", Path::new("t"), &opts)?;
        assert_eq!(
            examples[0].tags.as_deref(),
            Some(&["B-X".to_owned(), "B-Y".into(), "I-Y".into()][..])
        );
        assert_eq!(report.repaired_sequences, 0);
        Ok(())
    }

    #[test]
    fn bad_inputs_name_file_and_line() {
        assert!(matches!(
            error_at(parse("a O\nb\nc O\n"), 2),
            Problem::MixedColumns {
                found: 1,
                previous: 2
            }
        ));
        assert!(matches!(
            error_at(parse("a\nb O\n"), 2),
            Problem::MixedColumns {
                found: 2,
                previous: 1
            }
        ));
        assert!(matches!(
            error_at(parse("a O\n\nb E-X\n"), 3),
            Problem::InvalidTag { .. }
        ));
        assert!(matches!(
            error_at(parse("a PER\n"), 1),
            Problem::InvalidTag { .. }
        ));
        assert!(matches!(
            error_at(parse("x O\n\n# label = A\n# label = B\ny O\n"), 4),
            Problem::DuplicateLabel { .. }
        ));
        assert!(matches!(
            error_at(parse("# label = A\n\nx O\n"), 1),
            Problem::DanglingLabel { .. }
        ));
        assert!(matches!(
            error_at(parse("# label =  \nx O\n"), 1),
            Problem::EmptyLabel
        ));
        let bad_utf8 = parse_conll(
            b"a O\n\nb\xC3 O\n",
            Path::new("t.conll"),
            &ReadOptions::default(),
        );
        assert!(matches!(
            error_at(bad_utf8, 3),
            Problem::InvalidUtf8 { byte: 1 }
        ));
        let err = parse("a O\nb\n").expect_err("mixed columns");
        assert!(err.to_string().starts_with("t.conll:2: "), "{err}");
    }

    #[test]
    fn lenient_skips_and_counts() -> Result<()> {
        let data = "a O\nb\nc O\n\nd O\n\n# label = A\n\ne X\nf O\n\ng\u{e9} O\n";
        let (examples, report) = lenient(data)?;
        let words: Vec<&str> = examples.iter().map(|e| e.words[0].as_str()).collect();
        assert_eq!(words, ["d", "g\u{e9}"]);
        assert_eq!(report.skipped, 3);
        assert_eq!(report.examples, 2);
        assert_eq!(report.warnings.len(), 3);
        assert!(
            report.warnings[0].starts_with("t.conll:2:"),
            "{:?}",
            report.warnings
        );
        assert!(report.warnings[1].starts_with("t.conll:7:"));
        assert!(report.warnings[2].starts_with("t.conll:9:"));
        let (examples, report) = parse_conll(
            b"a O\nb\xFF O\nc O\n\nd O\n",
            Path::new("t"),
            &ReadOptions {
                lenient: true,
                ..ReadOptions::default()
            },
        )?;
        assert_eq!(examples.len(), 1);
        assert_eq!(report.skipped, 1);
        Ok(())
    }

    #[test]
    fn reads_from_disk() -> Result<()> {
        let tmp = TempDir::new("conll");
        let path = tmp.write("x.tsv", "a\tB-X\n");
        let (examples, _) = read_examples(&path, None, &ReadOptions::default())?;
        assert_eq!(
            examples[0].source.as_ref().map(|s| s.file.clone()),
            Some(path.clone())
        );
        let bad = tmp.write("bad.txt", "a O\nb O O\nc\n");
        let err = read_examples(&bad, Some(Format::Conll), &ReadOptions::default())
            .expect_err("mixed columns");
        assert!(matches!(&err, Error::Data { file, line: 3, .. } if *file == bad));
        assert!(err.to_string().contains("bad.txt:3:"));
        Ok(())
    }
}
