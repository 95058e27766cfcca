//! The crate's error type.

use std::path::PathBuf;

/// Errors returned by this crate.
///
/// Errors about data name the file, the 1-based line and what was expected: they display as
/// `path:line: problem`, like a compiler diagnostic.
///
/// One convention holds for every error of the workspace: a message states its own context
/// (the file, the setting) and never formats its cause; the cause is its
/// [`source`](std::error::Error::source), printed once by whoever prints the chain (`mtl`
/// prints `error: {:#}`). `Io` displays as the path alone, so the chain reads
/// `data/x.jsonl: No such file or directory (os error 2)`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error("{}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line of a data file is not what the format expects.
    #[error("{}:{line}: {problem}", file.display())]
    Data {
        /// The data file.
        file: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong and what was expected (part of the message, not a source).
        problem: Problem,
    },
    /// An example built in code (not read from a file) is inconsistent.
    #[error("invalid example: {0}")]
    Example(Problem),
    /// The format of a path could not be detected from its name or contents.
    #[error(
        "{}: cannot detect the data format: expected a directory holding seq.in or \
         train/seq.in (JointBERT), a file ending in .jsonl or .json (JSONL), or a file ending \
         in .conll, .txt, .bio or .tsv (CoNLL); pass the format explicitly otherwise",
        path.display()
    )]
    UnknownFormat {
        /// The path whose format is unknown.
        path: PathBuf,
    },
    /// A format name given by the user is not one of the known names.
    #[error("unknown data format `{name}`: expected one of jointbert, conll, jsonl")]
    UnknownFormatName {
        /// The name as given.
        name: String,
    },
    /// A tag-scheme name given by the user is not one of the known names.
    #[error("unknown tag scheme `{name}`: expected one of iob1, iob2 (or bio), iobes (or bioes)")]
    UnknownScheme {
        /// The name as given.
        name: String,
    },
    /// A dataset split (train, dev, test) was asked for but is not there.
    #[error("{}: missing split `{split}`: expected {expected}", path.display())]
    MissingSplit {
        /// The dataset root.
        path: PathBuf,
        /// The split name.
        split: String,
        /// What would have been accepted.
        expected: String,
    },
    /// A path does not have the layout its format needs.
    #[error("{}: expected {expected}", path.display())]
    Layout {
        /// The offending path.
        path: PathBuf,
        /// What was expected there.
        expected: String,
    },
    /// A JSON artifact saved with a model (vocabulary, label map, encoder settings) is invalid.
    #[error("{}: invalid JSON", path.display())]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// The underlying parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The HuggingFace `tokenizers` library reported an error.
    #[error("{}: tokenizer error", path.as_deref().map_or_else(|| "<tokenizer>".into(), |p| p.display().to_string()))]
    Tokenizer {
        /// The `tokenizer.json` involved, when there is one.
        path: Option<PathBuf>,
        /// The error reported by `tokenizers`.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A setting is out of its valid range.
    #[error("invalid setting `{name}` = {value}: expected {expected}")]
    InvalidSetting {
        /// The setting's name.
        name: &'static str,
        /// The value given.
        value: String,
        /// The accepted range.
        expected: &'static str,
    },
}

/// What is wrong with one example or one line of data; located by [`Error::Data`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// The bytes of the line are not UTF-8.
    #[error("invalid UTF-8: expected UTF-8 text (error at byte {byte} of the line)")]
    InvalidUtf8 {
        /// Byte offset of the first invalid byte within the line.
        byte: usize,
    },
    /// The number of tags differs from the number of tokens.
    #[error("expected one tag per token, found {words} tokens and {tags} tags")]
    TagCountMismatch {
        /// Number of tokens.
        words: usize,
        /// Number of tags.
        tags: usize,
    },
    /// A companion file of a JointBERT split has a different number of lines than `seq.in`.
    #[error("expected {expected} lines (one per line of seq.in), found {found}")]
    LineCountMismatch {
        /// Lines in `seq.in`.
        expected: usize,
        /// Lines in this file.
        found: usize,
    },
    /// A sentence has no tokens.
    #[error("empty sentence: expected at least one token")]
    EmptySentence,
    /// A token is the empty string.
    #[error("token {index} is empty: expected a non-empty token")]
    EmptyToken {
        /// 0-based token index.
        index: usize,
    },
    /// A sentence label is empty.
    #[error("empty sentence label: expected a label")]
    EmptyLabel,
    /// A tag is not valid in the tag scheme being read.
    #[error("invalid tag `{tag}`: expected {expected}")]
    InvalidTag {
        /// The tag as found.
        tag: String,
        /// The tags the scheme accepts.
        expected: String,
    },
    /// A CoNLL sentence mixes one-column lines (no tag) with tagged lines.
    #[error(
        "{found} columns where earlier lines of this sentence have {previous}: expected a tag \
         on every line of the sentence or on none"
    )]
    MixedColumns {
        /// Columns on this line.
        found: usize,
        /// Columns on the sentence's first line.
        previous: usize,
    },
    /// A CoNLL sentence has two `# label = ...` comments.
    #[error("second sentence label `{label}`: expected one `# label = ...` line per sentence")]
    DuplicateLabel {
        /// The second label.
        label: String,
    },
    /// A CoNLL `# label = ...` comment is not followed by a sentence.
    #[error("sentence label `{label}` with no sentence after it: expected token lines")]
    DanglingLabel {
        /// The label.
        label: String,
    },
    /// A JSONL line is not valid JSON or has the wrong field types.
    #[error("malformed JSON line: {error}")]
    Json {
        /// The parse error (part of the message, not a source).
        error: serde_json::Error,
    },
    /// A JSONL object lacks the fields this reader needs or combines them wrongly.
    #[error("expected {expected}")]
    Fields {
        /// What fields were expected.
        expected: &'static str,
    },
    /// An entity's offsets do not fit its text.
    #[error(
        "entity {index} [{start}, {end}) is outside its text of {len} characters: expected \
         start < end <= {len} (character offsets)"
    )]
    SpanOutOfBounds {
        /// 0-based index of the entity in the `entities` list.
        index: usize,
        /// Character start.
        start: usize,
        /// Character end (exclusive).
        end: usize,
        /// Text length in characters.
        len: usize,
    },
    /// An entity starts or ends inside a word.
    #[error(
        "entity {index} [{start}, {end}) `{covered}` is not on word boundaries: expected it \
         to start where a word starts and end where one ends (words split on {words})"
    )]
    SpanNotOnBoundary {
        /// 0-based index of the entity in the `entities` list.
        index: usize,
        /// Character start.
        start: usize,
        /// Character end (exclusive).
        end: usize,
        /// The text the span covers.
        covered: String,
        /// How the text was split into words.
        words: crate::WordSplit,
    },
    /// Two entities share words.
    #[error("entity {index} overlaps entity {other}: expected non-overlapping entities")]
    SpanOverlap {
        /// 0-based index of one entity.
        index: usize,
        /// 0-based index of the other.
        other: usize,
    },
    /// An entity is empty or reversed.
    #[error("entity {index} [{start}, {end}) is empty: expected start < end")]
    EmptySpan {
        /// 0-based index of the entity in the `entities` list.
        index: usize,
        /// Character start.
        start: usize,
        /// Character end (exclusive).
        end: usize,
    },
    /// An entity label carries a tag-scheme prefix (`B-product`).
    #[error(
        "entity {index} has label `{label}`: expected the entity type without a B-/I- prefix, \
         such as `{bare}` (the reader makes the tags)"
    )]
    PrefixedEntityLabel {
        /// 0-based index of the entity.
        index: usize,
        /// The label as found.
        label: String,
        /// The label without its prefix.
        bare: String,
    },
    /// A JSONL object (or one of its entities) has a key the reader does not know.
    #[error(
        "unknown key `{key}`{}: expected only {}{}",
        entity.map(|i| format!(" in entity {i}")).unwrap_or_default(),
        allowed.join(", "),
        meant.map(|m| format!(" (did you mean `{m}`?)")).unwrap_or_default()
    )]
    UnknownKey {
        /// The key as found.
        key: String,
        /// The entity's 0-based index, when the key is in an entity.
        entity: Option<usize>,
        /// The keys accepted there.
        allowed: &'static [&'static str],
        /// The accepted key the user probably meant.
        meant: Option<&'static str>,
    },
    /// A CoNLL sentence mixes `_` (no tag) with tags.
    #[error(
        "`_` (no tag) on some words of this sentence and tags on others: expected a tag on \
         every word or `_` on every word"
    )]
    PartialTags,
    /// An entity label is empty or contains whitespace.
    #[error(
        "entity {index} has label `{label}`: expected a non-empty label without whitespace, such \
         as `artist`"
    )]
    InvalidEntityLabel {
        /// 0-based index of the entity.
        index: usize,
        /// The label as found.
        label: String,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Builds an [`Error::Io`].
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message and its causes joined as `mtl` prints them (`anyhow`'s `{:#}`).
    fn chain(e: &dyn std::error::Error) -> String {
        let mut parts = vec![e.to_string()];
        let mut source = e.source();
        while let Some(s) = source {
            parts.push(s.to_string());
            source = s.source();
        }
        parts.join(": ")
    }

    #[test]
    fn every_cause_is_printed_once() {
        let json = || serde_json::from_str::<u32>("x").expect_err("not JSON");
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let cases: Vec<(Error, &str)> = vec![
            (
                Error::io("data/x.jsonl", io()),
                "data/x.jsonl: No such file",
            ),
            (
                Error::Data {
                    file: "t.jsonl".into(),
                    line: 3,
                    problem: Problem::Json { error: json() },
                },
                "t.jsonl:3: malformed JSON line: expected value at line 1 column 1",
            ),
            (
                Error::Json {
                    path: "labels.json".into(),
                    source: json(),
                },
                "labels.json: invalid JSON: expected value at line 1 column 1",
            ),
            (
                Error::Example(Problem::EmptyLabel),
                "invalid example: empty sentence label: expected a label",
            ),
            (
                Error::Tokenizer {
                    path: Some("tokenizer.json".into()),
                    source: "bad vocab".into(),
                },
                "tokenizer.json: tokenizer error: bad vocab",
            ),
        ];
        for (error, want) in cases {
            assert_eq!(chain(&error), want);
        }
    }
}
