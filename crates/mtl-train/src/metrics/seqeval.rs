//! Entity-level scores that reproduce seqeval 1.2.2 exactly.
//!
//! Two ways of reading a tag sequence are supported, as in seqeval:
//!
//! - [`Mode::Default`] follows seqeval's `get_entities`, itself a port of the chunking rules
//!   of `conlleval.pl`. It never rejects a non-empty tag: a tag is split into a prefix (its
//!   first character) and a type (what follows the first `-` after it, or the whole rest when
//!   there is no `-`; `_` when that is empty), and ill-formed sequences still yield chunks
//!   (`O I-PER` starts a `PER` chunk, `B-PER I-LOC` yields two chunks, `E-`/`S-` close chunks,
//!   `PER` alone is read as prefix `P`, type `ER`). The scheme is ignored in this mode.
//! - [`Mode::Strict`] follows seqeval's `mode="strict"` (`seqeval.scheme.Entities`): a chunk
//!   counts only if it starts, continues and ends as the scheme prescribes (`B-X I-X` under
//!   IOBES is dropped because it lacks `E-X`); tags whose prefix the scheme does not know are
//!   an error in [`entity_report`].
//!
//! In both modes an entity is matched by its type and its span; a predicted entity is correct
//! only if gold has an entity of the same type over the same tokens.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::iter;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{MetricsError, TypeScores, ratio};

/// Tagging scheme of a sequence of tags.
///
/// Only [`Mode::Strict`] looks at it; [`Mode::Default`] reads any scheme with the same
/// conlleval rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// `B-` begins an entity, `I-` continues it, `O` is outside.
    Iob2,
    /// IOB2 plus `E-` (last token of a multi-token entity) and `S-` (single-token entity).
    Iobes,
}

impl Scheme {
    /// The prefixes the scheme allows, as [`MetricsError::InvalidTag`] reports them.
    fn allowed(self) -> &'static str {
        match self {
            Scheme::Iob2 => "B, I, O",
            Scheme::Iobes => "B, I, E, S, O",
        }
    }

    /// Whether strict reading accepts `prefix` (seqeval's `Token.is_valid`).
    fn allows(self, prefix: Prefix) -> bool {
        match self {
            Scheme::Iob2 => matches!(prefix, Prefix::B | Prefix::I | Prefix::O),
            Scheme::Iobes => {
                matches!(
                    prefix,
                    Prefix::B | Prefix::I | Prefix::E | Prefix::S | Prefix::O
                )
            }
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scheme::Iob2 => "iob2",
            Scheme::Iobes => "iobes",
        })
    }
}

impl FromStr for Scheme {
    type Err = MetricsError;

    /// Parses `"iob2"` or `"iobes"`, ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("iob2") {
            Ok(Scheme::Iob2)
        } else if s.eq_ignore_ascii_case("iobes") {
            Ok(Scheme::Iobes)
        } else {
            Err(MetricsError::UnknownScheme {
                name: s.to_string(),
            })
        }
    }
}

/// How chunks are read from tags: seqeval's default (conlleval) mode or its strict mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// conlleval-compatible chunking (`seqeval.metrics.*` with `mode=None`), the usual
    /// number reported for CoNLL and ATIS/SNIPS slot filling.
    #[default]
    Default,
    /// Only well-formed chunks of the scheme count (`mode="strict"`, `scheme=IOB2|IOBES`).
    Strict,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Default => "default",
            Mode::Strict => "strict",
        })
    }
}

impl FromStr for Mode {
    type Err = MetricsError;

    /// Parses `"default"` or `"strict"`, ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("default") {
            Ok(Mode::Default)
        } else if s.eq_ignore_ascii_case("strict") {
            Ok(Mode::Strict)
        } else {
            Err(MetricsError::UnknownMode {
                name: s.to_string(),
            })
        }
    }
}

/// One entity (chunk) of a tag sequence.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Entity {
    /// Entity type, e.g. `PER` for `B-PER` (`_` for a tag with no type, such as `B`).
    pub label: String,
    /// Index of the first token.
    pub start: usize,
    /// Index one past the last token (exclusive).
    pub end: usize,
}

/// Entity-level report of a tagged corpus, as seqeval's `classification_report`,
/// `precision_score`, `recall_score`, `f1_score` and `accuracy_score` give it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityReport {
    /// Micro-averaged precision (seqeval's `precision_score`).
    pub precision: f64,
    /// Micro-averaged recall (seqeval's `recall_score`).
    pub recall: f64,
    /// Micro-averaged F1 (seqeval's `f1_score`), the headline number.
    pub f1: f64,
    /// Token accuracy over all tokens (seqeval's `accuracy_score`; `0.0` for a corpus
    /// without tokens, where seqeval divides by zero).
    pub accuracy: f64,
    /// Scores of each entity type found in gold or prediction, sorted by type name.
    pub per_type: BTreeMap<String, TypeScores>,
    /// Micro average (same numbers as `precision`, `recall` and `f1`).
    pub micro: TypeScores,
    /// Unweighted mean over the types (`0.0` when there is no type, where seqeval gives NaN).
    pub macro_avg: TypeScores,
    /// Mean over the types weighted by their gold support.
    pub weighted: TypeScores,
    /// Number of predicted entities.
    pub predicted: usize,
    /// Number of gold entities.
    pub gold: usize,
    /// Number of predicted entities that match a gold entity (type and span).
    pub correct: usize,
}

/// Extracts the entities of one sentence.
///
/// In [`Mode::Default`] this is seqeval's `get_entities(tags)` (the scheme is ignored); in
/// [`Mode::Strict`] it is `seqeval.scheme.Tokens(tags, scheme).entities`, with the chunks that
/// the scheme calls ill-formed dropped.
///
/// Unlike [`entity_report`], this function never fails: an empty tag is read as `O`, and in
/// strict mode a tag with a prefix the scheme does not allow (seqeval raises there) simply
/// neither starts nor continues nor ends a chunk.
///
/// ```
/// use mtl_train::metrics::{extract_entities, Entity, Mode, Scheme};
///
/// let tags = ["O", "I-PER", "I-PER", "B-LOC", "I-ORG"];
/// let conll = extract_entities(&tags, Scheme::Iob2, Mode::Default);
/// let labels: Vec<_> = conll.iter().map(|e| (e.label.as_str(), e.start, e.end)).collect();
/// assert_eq!(labels, [("PER", 1, 3), ("LOC", 3, 4), ("ORG", 4, 5)]);
///
/// let strict = extract_entities(&tags, Scheme::Iob2, Mode::Strict);
/// assert_eq!(strict, [Entity { label: "LOC".into(), start: 3, end: 4 }]);
/// ```
pub fn extract_entities<S: AsRef<str>>(tags: &[S], scheme: Scheme, mode: Mode) -> Vec<Entity> {
    match mode {
        Mode::Default => conll_chunks(tags.iter().map(|t| t.as_ref()).chain(iter::once("O")))
            .into_iter()
            .map(|(label, start, end)| Entity {
                label: label.to_string(),
                start,
                end,
            })
            .collect(),
        Mode::Strict => {
            let tokens: Vec<StrictToken<'_>> = tags
                .iter()
                .map(|t| StrictToken::parse(t.as_ref()))
                .collect();
            strict_chunks(&tokens, scheme)
                .into_iter()
                .map(|(label, start, end)| Entity {
                    label: label.to_string(),
                    start,
                    end,
                })
                .collect()
        }
    }
}

/// Scores predicted tag sequences against gold ones at the entity level, as seqeval 1.2.2
/// does.
///
/// `mode` and `scheme` select seqeval's call: [`Mode::Default`] is
/// `classification_report(gold, pred)` (the scheme is ignored), [`Mode::Strict`] is
/// `classification_report(gold, pred, mode="strict", scheme=IOB2 | IOBES)`. Scores whose
/// denominator is zero are `0.0`, as with seqeval's default `zero_division`.
///
/// In default mode seqeval joins the sentences with an `O` between them and reads the whole
/// corpus as one sequence; this function does the same, so a well-formed entity never
/// crosses a sentence boundary, and the rare ill-formed input for which conlleval's rules let
/// a chunk run on (a tag with neither a known prefix nor a type, such as `X`, at the end of a
/// sentence) scores as in seqeval. In strict mode every sentence is read on its own.
///
/// # Errors
///
/// - [`MetricsError::SentenceCountMismatch`] or [`MetricsError::SentenceLengthMismatch`]
///   (naming the first sentence that differs) when the shapes of `gold` and `pred` differ;
/// - [`MetricsError::InvalidTag`] for an empty tag, or in strict mode for a tag whose prefix
///   the scheme does not allow (seqeval raises on both).
///
/// ```
/// use mtl_train::metrics::{entity_report, Mode, Scheme};
///
/// let gold = vec![vec!["B-PER", "I-PER", "O"], vec!["B-LOC", "O"]];
/// let pred = vec![vec!["I-PER", "I-PER", "O"], vec!["B-LOC", "O"]];
/// let conll = entity_report(&gold, &pred, Scheme::Iob2, Mode::Default)?;
/// assert_eq!(conll.f1, 1.0);
/// let strict = entity_report(&gold, &pred, Scheme::Iob2, Mode::Strict)?;
/// assert_eq!((strict.correct, strict.predicted, strict.gold), (1, 1, 2));
/// # Ok::<(), mtl_train::metrics::MetricsError>(())
/// ```
pub fn entity_report<G: AsRef<str>, P: AsRef<str>>(
    gold: &[Vec<G>],
    pred: &[Vec<P>],
    scheme: Scheme,
    mode: Mode,
) -> Result<EntityReport, MetricsError> {
    if gold.len() != pred.len() {
        return Err(MetricsError::SentenceCountMismatch {
            gold: gold.len(),
            pred: pred.len(),
        });
    }
    for (sentence, (g, p)) in gold.iter().zip(pred).enumerate() {
        if g.len() != p.len() {
            return Err(MetricsError::SentenceLengthMismatch {
                sentence,
                gold: g.len(),
                pred: p.len(),
            });
        }
    }
    validate(gold, "gold", scheme, mode)?;
    validate(pred, "predicted", scheme, mode)?;

    // Entities are keyed by (sentence, type, start, end). In default mode the sentence is
    // always 0 and the offsets are global, as in seqeval's flattened corpus.
    let (gold_entities, pred_entities) = match mode {
        Mode::Default => (corpus_conll_entities(gold), corpus_conll_entities(pred)),
        Mode::Strict => (
            corpus_strict_entities(gold, scheme),
            corpus_strict_entities(pred, scheme),
        ),
    };

    let mut counts: BTreeMap<&str, Counts> = BTreeMap::new();
    for &(_, label, _, _) in &gold_entities {
        counts.entry(label).or_default().gold += 1;
    }
    for key in &pred_entities {
        let entry = counts.entry(key.1).or_default();
        entry.predicted += 1;
        if gold_entities.contains(key) {
            entry.correct += 1;
        }
    }

    let total = Counts {
        predicted: counts.values().map(|c| c.predicted).sum(),
        gold: counts.values().map(|c| c.gold).sum(),
        correct: counts.values().map(|c| c.correct).sum(),
    };
    let per_type: BTreeMap<String, TypeScores> = counts
        .iter()
        .map(|(label, c)| (label.to_string(), c.scores()))
        .collect();
    let micro = total.scores();
    let macro_avg = macro_average(&per_type, total.gold);
    let weighted = weighted_average(&per_type, &total);

    let tokens: usize = gold.iter().map(Vec::len).sum();
    let right_tokens: usize = gold
        .iter()
        .zip(pred)
        .map(|(g, p)| {
            g.iter()
                .zip(p)
                .filter(|(g, p)| g.as_ref() == p.as_ref())
                .count()
        })
        .sum();

    Ok(EntityReport {
        precision: micro.precision,
        recall: micro.recall,
        f1: micro.f1,
        accuracy: ratio(right_tokens, tokens),
        per_type,
        micro,
        macro_avg,
        weighted,
        predicted: total.predicted,
        gold: total.gold,
        correct: total.correct,
    })
}

/// Rejects the tags seqeval would raise on: empty tags, and in strict mode unknown prefixes.
fn validate<S: AsRef<str>>(
    corpus: &[Vec<S>],
    side: &'static str,
    scheme: Scheme,
    mode: Mode,
) -> Result<(), MetricsError> {
    for (sentence, tags) in corpus.iter().enumerate() {
        for (token, tag) in tags.iter().enumerate() {
            let tag = tag.as_ref();
            let ok = match mode {
                Mode::Default => !tag.is_empty(),
                Mode::Strict => scheme.allows(StrictToken::parse(tag).prefix) && !tag.is_empty(),
            };
            if !ok {
                return Err(MetricsError::InvalidTag {
                    side,
                    sentence,
                    token,
                    tag: tag.to_string(),
                    scheme,
                    mode,
                    allowed: scheme.allowed(),
                });
            }
        }
    }
    Ok(())
}

/// An entity keyed for matching: (sentence, type, start, end).
type Key<'a> = (usize, &'a str, usize, usize);

/// seqeval's default-mode extraction over a corpus: sentences joined by an `O`, global offsets.
fn corpus_conll_entities<S: AsRef<str>>(corpus: &[Vec<S>]) -> HashSet<Key<'_>> {
    let flat = corpus
        .iter()
        .flat_map(|sentence| sentence.iter().map(|t| t.as_ref()).chain(iter::once("O")))
        .chain(iter::once("O"));
    conll_chunks(flat)
        .into_iter()
        .map(|(label, start, end)| (0, label, start, end))
        .collect()
}

/// seqeval's strict-mode extraction over a corpus: each sentence on its own.
fn corpus_strict_entities<S: AsRef<str>>(corpus: &[Vec<S>], scheme: Scheme) -> HashSet<Key<'_>> {
    let mut entities = HashSet::new();
    for (sentence, tags) in corpus.iter().enumerate() {
        let tokens: Vec<StrictToken<'_>> = tags
            .iter()
            .map(|t| StrictToken::parse(t.as_ref()))
            .collect();
        entities.extend(
            strict_chunks(&tokens, scheme)
                .into_iter()
                .map(|(label, start, end)| (sentence, label, start, end)),
        );
    }
    entities
}

/// Entity counts of one type, or of all types together.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    predicted: usize,
    gold: usize,
    correct: usize,
}

impl Counts {
    /// Precision, recall and F1 as seqeval computes them (`2 p r / (p + r)`, 0 when undefined).
    fn scores(&self) -> TypeScores {
        let precision = ratio(self.correct, self.predicted);
        let recall = ratio(self.correct, self.gold);
        let denom = precision + recall;
        let f1 = if denom == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / denom
        };
        TypeScores {
            precision,
            recall,
            f1,
            support: self.gold,
        }
    }
}

/// Unweighted mean over the types; `0.0` when there is no type.
fn macro_average(per_type: &BTreeMap<String, TypeScores>, support: usize) -> TypeScores {
    let n = per_type.len();
    if n == 0 {
        return TypeScores {
            support,
            ..TypeScores::default()
        };
    }
    let mean = |f: fn(&TypeScores) -> f64| per_type.values().map(f).sum::<f64>() / n as f64;
    TypeScores {
        precision: mean(|s| s.precision),
        recall: mean(|s| s.recall),
        f1: mean(|s| s.f1),
        support,
    }
}

/// Mean over the types weighted by gold support; all `0.0` without gold entities (seqeval's
/// value with the default `zero_division`).
fn weighted_average(per_type: &BTreeMap<String, TypeScores>, total: &Counts) -> TypeScores {
    if total.gold == 0 {
        return TypeScores {
            support: 0,
            ..TypeScores::default()
        };
    }
    let weight = total.gold as f64;
    let mean = |f: fn(&TypeScores) -> f64| {
        per_type
            .values()
            .map(|s| f(s) * s.support as f64)
            .sum::<f64>()
            / weight
    };
    TypeScores {
        precision: mean(|s| s.precision),
        recall: mean(|s| s.recall),
        f1: mean(|s| s.f1),
        support: total.gold,
    }
}

// ---------------------------------------------------------------------------------------
// Default mode: conlleval chunking rules (seqeval's get_entities, start_of_chunk, end_of_chunk)
// ---------------------------------------------------------------------------------------

/// Splits a tag the way seqeval's `get_entities` does (`suffix=False`): the prefix is the
/// first character, the type is what follows the first `-` of the rest (the whole rest when
/// it holds no `-`), or `_` when that is empty. An empty tag reads as `O`.
fn conll_split(tag: &str) -> (char, &str) {
    let mut chars = tag.chars();
    let Some(prefix) = chars.next() else {
        return ('O', "_");
    };
    let rest = chars.as_str();
    let kind = rest.split_once('-').map_or(rest, |(_, after)| after);
    (prefix, if kind.is_empty() { "_" } else { kind })
}

/// Whether a chunk ended just before the current tag (conlleval's `endOfChunk`).
fn end_of_chunk(prev_tag: char, tag: char, prev_type: &str, kind: &str) -> bool {
    matches!(prev_tag, 'E' | 'S')
        || (matches!(prev_tag, 'B' | 'I') && matches!(tag, 'B' | 'S' | 'O'))
        || (prev_tag != 'O' && prev_tag != '.' && prev_type != kind)
}

/// Whether a chunk starts at the current tag (conlleval's `startOfChunk`).
fn start_of_chunk(prev_tag: char, tag: char, prev_type: &str, kind: &str) -> bool {
    matches!(tag, 'B' | 'S')
        || (matches!(prev_tag, 'E' | 'S' | 'O') && matches!(tag, 'E' | 'I'))
        || (tag != 'O' && tag != '.' && prev_type != kind)
}

/// Runs the conlleval chunker over `tags` (which the caller ends with an `O`, as seqeval does)
/// and returns `(type, start, end)` with `end` exclusive.
fn conll_chunks<'a>(tags: impl Iterator<Item = &'a str>) -> Vec<(&'a str, usize, usize)> {
    let mut chunks = Vec::new();
    let mut prev_tag = 'O';
    // seqeval starts from an empty type, which differs from every parsed type.
    let mut prev_type = "";
    let mut begin = 0;
    for (i, chunk) in tags.enumerate() {
        let (tag, kind) = conll_split(chunk);
        if end_of_chunk(prev_tag, tag, prev_type, kind) {
            // seqeval's inclusive end is `i - 1`; `end_of_chunk` is false at i = 0 because
            // the initial previous tag is `O`.
            chunks.push((prev_type, begin, i));
        }
        if start_of_chunk(prev_tag, tag, prev_type, kind) {
            begin = i;
        }
        prev_tag = tag;
        prev_type = kind;
    }
    chunks
}

// ---------------------------------------------------------------------------------------
// Strict mode: seqeval.scheme (Token patterns, Tokens.entities) for IOB2 and IOBES
// ---------------------------------------------------------------------------------------

/// Prefix of a tag in strict mode (seqeval's `Prefix`, plus `Other` for characters seqeval
/// has no member for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prefix {
    I,
    O,
    B,
    E,
    S,
    U,
    L,
    Other,
}

/// A tag read as seqeval's `Token` reads it.
#[derive(Debug, Clone, Copy)]
struct StrictToken<'a> {
    prefix: Prefix,
    /// The type: the rest of the tag with `-` stripped from both ends, or `_` when empty.
    kind: &'a str,
}

impl<'a> StrictToken<'a> {
    /// The `O` that seqeval appends to every sentence and uses as the first "previous" token.
    const OUTSIDE: StrictToken<'static> = StrictToken {
        prefix: Prefix::O,
        kind: "_",
    };

    fn parse(tag: &'a str) -> Self {
        let mut chars = tag.chars();
        let Some(first) = chars.next() else {
            return StrictToken {
                prefix: Prefix::O,
                kind: "_",
            };
        };
        let prefix = match first {
            'I' => Prefix::I,
            'O' => Prefix::O,
            'B' => Prefix::B,
            'E' => Prefix::E,
            'S' => Prefix::S,
            'U' => Prefix::U,
            'L' => Prefix::L,
            _ => Prefix::Other,
        };
        let kind = chars.as_str().trim_matches('-');
        StrictToken {
            prefix,
            kind: if kind.is_empty() { "_" } else { kind },
        }
    }
}

/// Whether `cur` starts a chunk after `prev` (the scheme's `start_patterns`).
fn strict_is_start(scheme: Scheme, cur: StrictToken<'_>) -> bool {
    match scheme {
        Scheme::Iob2 => cur.prefix == Prefix::B,
        Scheme::Iobes => matches!(cur.prefix, Prefix::B | Prefix::S),
    }
}

/// Whether `cur` continues the chunk that `prev` belongs to (the scheme's `inside_patterns`).
fn strict_is_inside(scheme: Scheme, prev: StrictToken<'_>, cur: StrictToken<'_>) -> bool {
    let prev_ok = matches!(prev.prefix, Prefix::B | Prefix::I);
    let cur_ok = match scheme {
        Scheme::Iob2 => cur.prefix == Prefix::I,
        Scheme::Iobes => matches!(cur.prefix, Prefix::I | Prefix::E),
    };
    prev_ok && cur_ok && prev.kind == cur.kind
}

/// Whether `prev` properly ends a chunk, given the token `cur` after it (the scheme's
/// `end_patterns`).
fn strict_is_end(scheme: Scheme, prev: StrictToken<'_>, cur: StrictToken<'_>) -> bool {
    match scheme {
        Scheme::Iob2 => {
            let same = prev.kind == cur.kind;
            match (prev.prefix, cur.prefix) {
                (Prefix::B | Prefix::I, Prefix::O | Prefix::B) => true,
                (Prefix::B | Prefix::I, Prefix::I) => !same,
                _ => false,
            }
        }
        Scheme::Iobes => matches!(prev.prefix, Prefix::S | Prefix::E),
    }
}

/// seqeval's `Tokens.entities` for one sentence: `(type, start, end)`, `end` exclusive.
fn strict_chunks<'a>(tokens: &[StrictToken<'a>], scheme: Scheme) -> Vec<(&'a str, usize, usize)> {
    let extended: Vec<StrictToken<'a>> = tokens
        .iter()
        .copied()
        .chain(iter::once(StrictToken::OUTSIDE))
        .collect();
    let mut chunks = Vec::new();
    let mut i = 0;
    while let Some(&token) = extended.get(i) {
        if strict_is_start(scheme, token) {
            // Walk forward while the chunk continues. The appended `O` is never "inside",
            // so the walk always stops on a token.
            let mut prev = token;
            let mut end = i + 1;
            while let Some(&next) = extended.get(end) {
                if !strict_is_inside(scheme, prev, next) {
                    break;
                }
                prev = next;
                end += 1;
            }
            if let Some(&after) = extended.get(end)
                && strict_is_end(scheme, prev, after)
            {
                chunks.push((token.kind, i, end));
            }
            i = end;
        } else {
            i += 1;
        }
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    const TOL: f64 = 1e-12;

    fn strings(tags: &[&str]) -> Vec<String> {
        tags.iter().map(|t| t.to_string()).collect()
    }

    fn spans(entities: &[Entity]) -> Vec<(&str, usize, usize)> {
        entities
            .iter()
            .map(|e| (e.label.as_str(), e.start, e.end))
            .collect()
    }

    // ----- unit tests ---------------------------------------------------------------

    #[test]
    fn scheme_and_mode_round_trip_through_strings() {
        for scheme in [Scheme::Iob2, Scheme::Iobes] {
            assert_eq!(scheme.to_string().parse::<Scheme>(), Ok(scheme));
        }
        for mode in [Mode::Default, Mode::Strict] {
            assert_eq!(mode.to_string().parse::<Mode>(), Ok(mode));
        }
        assert_eq!("IOBES".parse::<Scheme>(), Ok(Scheme::Iobes));
        assert!(matches!(
            "bio".parse::<Scheme>(),
            Err(MetricsError::UnknownScheme { .. })
        ));
        assert!(matches!(
            "lenient".parse::<Mode>(),
            Err(MetricsError::UnknownMode { .. })
        ));
        assert_eq!(
            serde_json::to_string(&Scheme::Iobes).ok().as_deref(),
            Some("\"iobes\"")
        );
    }

    #[test]
    fn conll_reads_ill_formed_sequences_like_seqeval() {
        let tags = [
            "O", "I-PER", "B-LOC", "I-ORG", "E-ORG", "S-MISC", "I-MISC", "B", "PER",
        ];
        let e = extract_entities(&tags, Scheme::Iob2, Mode::Default);
        assert_eq!(
            spans(&e),
            [
                ("PER", 1, 2),
                ("LOC", 2, 3),
                ("ORG", 3, 5),
                ("MISC", 5, 6),
                ("MISC", 6, 7),
                ("_", 7, 8),
                ("ER", 8, 9)
            ]
        );
    }

    #[test]
    fn strict_iobes_drops_unfinished_chunks() {
        let tags = [
            "B-PER", "I-PER", "O", "B-LOC", "E-LOC", "S-ORG", "I-ORG", "E-ORG",
        ];
        let e = extract_entities(&tags, Scheme::Iobes, Mode::Strict);
        assert_eq!(spans(&e), [("LOC", 3, 5), ("ORG", 5, 6)]);
    }

    #[test]
    fn strict_iob2_checks_types_inside_chunks() {
        let tags = ["B-PER", "I-LOC", "B-ORG", "I-ORG", "I-ORG", "B-X"];
        let e = extract_entities(&tags, Scheme::Iob2, Mode::Strict);
        assert_eq!(spans(&e), [("PER", 0, 1), ("ORG", 2, 5), ("X", 5, 6)]);
    }

    #[test]
    fn shape_errors_name_the_sentence() {
        let gold = vec![strings(&["O"]), strings(&["B-X", "O"])];
        let pred = vec![strings(&["O"]), strings(&["B-X"])];
        assert_eq!(
            entity_report(&gold, &pred, Scheme::Iob2, Mode::Default),
            Err(MetricsError::SentenceLengthMismatch {
                sentence: 1,
                gold: 2,
                pred: 1
            })
        );
        assert_eq!(
            entity_report(&gold, &pred[..1], Scheme::Iob2, Mode::Default),
            Err(MetricsError::SentenceCountMismatch { gold: 2, pred: 1 })
        );
    }

    #[test]
    fn strict_mode_rejects_prefixes_outside_the_scheme() {
        let gold = vec![strings(&["O", "S-X"])];
        let pred = vec![strings(&["O", "O"])];
        let err = entity_report(&gold, &pred, Scheme::Iob2, Mode::Strict);
        assert!(matches!(
            err,
            Err(MetricsError::InvalidTag {
                side: "gold",
                sentence: 0,
                token: 1,
                ..
            })
        ));
        assert!(entity_report(&gold, &pred, Scheme::Iobes, Mode::Strict).is_ok());
        assert!(entity_report(&gold, &pred, Scheme::Iob2, Mode::Default).is_ok());
    }

    #[test]
    fn empty_tags_are_rejected_in_both_modes() {
        let gold = vec![strings(&["O", ""])];
        let pred = vec![strings(&["O", "O"])];
        for mode in [Mode::Default, Mode::Strict] {
            assert!(matches!(
                entity_report(&pred, &gold, Scheme::Iob2, mode),
                Err(MetricsError::InvalidTag {
                    side: "predicted",
                    token: 1,
                    ..
                })
            ));
        }
    }

    #[test]
    fn empty_corpus_gives_an_all_zero_report() {
        // seqeval raises TypeError on `[]`; an empty evaluation set scores zero here.
        let empty: Vec<Vec<String>> = Vec::new();
        for mode in [Mode::Default, Mode::Strict] {
            let r = entity_report(&empty, &empty, Scheme::Iob2, mode);
            let r = r.expect("an empty corpus is valid");
            assert_eq!(
                (r.f1, r.accuracy, r.macro_avg.f1, r.gold, r.predicted),
                (0.0, 0.0, 0.0, 0, 0)
            );
            assert!(r.per_type.is_empty());
        }
    }

    #[test]
    fn well_formed_entities_stop_at_sentence_ends() {
        // `I-PER` opening sentence 1 starts a new chunk; it does not extend sentence 0's.
        let gold = vec![strings(&["O", "B-PER"]), strings(&["I-PER", "O"])];
        let pred = vec![strings(&["O", "B-PER"]), strings(&["B-PER", "O"])];
        let r = entity_report(&gold, &pred, Scheme::Iob2, Mode::Default).expect("same shape");
        assert_eq!((r.correct, r.gold, r.predicted), (2, 2, 2));
    }

    #[test]
    fn untyped_tags_can_run_across_sentences_as_in_seqeval() {
        // seqeval joins sentences with `O`; conlleval's rules do not close a chunk of an
        // unprefixed, untyped tag such as `X` at that `O`, so the chunk of sentence 0 ends in
        // sentence 1 (seqeval: ('_', 0, 2) on the joined corpus).
        let corpus = vec![strings(&["X"]), strings(&["X", "B-PER"])];
        let r = entity_report(&corpus, &corpus, Scheme::Iob2, Mode::Default).expect("same shape");
        assert_eq!(r.per_type.keys().collect::<Vec<_>>(), ["PER", "_"]);
        assert_eq!(
            extract_entities(&corpus[0], Scheme::Iob2, Mode::Default),
            []
        );
    }

    #[test]
    fn report_serializes_to_json() {
        let gold = vec![strings(&["B-PER", "O"])];
        let report = entity_report(&gold, &gold, Scheme::Iob2, Mode::Default);
        let json = report.ok().and_then(|r| serde_json::to_value(r).ok());
        assert_eq!(
            json.as_ref()
                .and_then(|j| j["per_type"]["PER"]["f1"].as_f64()),
            Some(1.0)
        );
    }

    // ----- golden tests against seqeval 1.2.2 ----------------------------------------

    #[derive(Debug, Deserialize)]
    struct ExtractFixture {
        cases: Vec<ExtractCase>,
    }

    #[derive(Debug, Deserialize)]
    struct ExtractCase {
        tags: Vec<String>,
        default: Vec<(String, usize, usize)>,
        strict_iob2: Option<Vec<(String, usize, usize)>>,
        strict_iobes: Option<Vec<(String, usize, usize)>>,
    }

    #[derive(Debug, Deserialize)]
    struct ReportFixture {
        cases: Vec<ReportCase>,
    }

    #[derive(Debug, Deserialize)]
    struct ReportCase {
        name: String,
        gold: Vec<Vec<String>>,
        pred: Vec<Vec<String>>,
        expected: BTreeMap<String, Expected>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(untagged)]
    enum Expected {
        Error { error: String },
        Report(Box<ExpectedReport>),
    }

    /// seqeval's numbers; `None` marks a NaN or a ZeroDivisionError in seqeval, for which
    /// this module returns 0.0.
    #[derive(Debug, Deserialize)]
    struct ExpectedReport {
        precision: f64,
        recall: f64,
        f1: f64,
        accuracy: Option<f64>,
        per_type: BTreeMap<String, [f64; 4]>,
        micro: [Option<f64>; 4],
        macro_avg: [Option<f64>; 4],
        weighted: [Option<f64>; 4],
        predicted: usize,
        gold: usize,
        correct: usize,
    }

    fn close(actual: f64, expected: Option<f64>) -> bool {
        (actual - expected.unwrap_or(0.0)).abs() <= TOL
    }

    fn check_scores(ctx: &str, actual: &TypeScores, expected: [Option<f64>; 4]) {
        assert!(
            close(actual.precision, expected[0]),
            "{ctx}: precision {actual:?} vs {expected:?}"
        );
        assert!(
            close(actual.recall, expected[1]),
            "{ctx}: recall {actual:?} vs {expected:?}"
        );
        assert!(
            close(actual.f1, expected[2]),
            "{ctx}: f1 {actual:?} vs {expected:?}"
        );
        assert!(
            close(actual.support as f64, expected[3]),
            "{ctx}: support {actual:?} vs {expected:?}"
        );
    }

    fn config(key: &str) -> (Scheme, Mode) {
        match key {
            "default" => (Scheme::Iob2, Mode::Default),
            "strict_iob2" => (Scheme::Iob2, Mode::Strict),
            "strict_iobes" => (Scheme::Iobes, Mode::Strict),
            other => panic!("unknown configuration {other} in fixture"),
        }
    }

    fn check_report_fixture(json: &str) -> usize {
        let fixture: ReportFixture = serde_json::from_str(json).expect("fixture parses");
        let mut checked = 0;
        for case in &fixture.cases {
            for (key, expected) in &case.expected {
                let (scheme, mode) = config(key);
                let ctx = format!("case {:?}, {key}", case.name);
                let actual = entity_report(&case.gold, &case.pred, scheme, mode);
                match (expected, actual) {
                    (Expected::Error { error }, Err(MetricsError::InvalidTag { .. })) => {
                        assert!(!error.is_empty(), "{ctx}");
                    }
                    (Expected::Error { error }, other) => {
                        panic!("{ctx}: seqeval raised {error:?}, we returned {other:?}")
                    }
                    (Expected::Report(_), Err(e)) => panic!("{ctx}: unexpected error {e}"),
                    (Expected::Report(exp), Ok(act)) => {
                        assert!(
                            close(act.precision, Some(exp.precision)),
                            "{ctx}: precision"
                        );
                        assert!(close(act.recall, Some(exp.recall)), "{ctx}: recall");
                        assert!(close(act.f1, Some(exp.f1)), "{ctx}: f1");
                        assert!(close(act.accuracy, exp.accuracy), "{ctx}: accuracy");
                        assert_eq!(
                            act.per_type.keys().collect::<Vec<_>>(),
                            exp.per_type.keys().collect::<Vec<_>>(),
                            "{ctx}: types"
                        );
                        for (label, scores) in &exp.per_type {
                            let exp4 = scores.map(Some);
                            check_scores(&format!("{ctx}, {label}"), &act.per_type[label], exp4);
                        }
                        check_scores(&format!("{ctx}, micro"), &act.micro, exp.micro);
                        check_scores(&format!("{ctx}, macro"), &act.macro_avg, exp.macro_avg);
                        check_scores(&format!("{ctx}, weighted"), &act.weighted, exp.weighted);
                        assert_eq!(
                            (act.predicted, act.gold, act.correct),
                            (exp.predicted, exp.gold, exp.correct),
                            "{ctx}: counts"
                        );
                    }
                }
                checked += 1;
            }
        }
        checked
    }

    #[test]
    fn golden_reports_random() {
        let n = check_report_fixture(include_str!(
            "../../tests/fixtures/metrics/seqeval_reports_random.json"
        ));
        assert!(n >= 200, "only {n} reports checked");
    }

    #[test]
    fn golden_reports_edge_cases() {
        let n = check_report_fixture(include_str!(
            "../../tests/fixtures/metrics/seqeval_reports_edge.json"
        ));
        assert!(n >= 40, "only {n} reports checked");
    }

    #[test]
    fn golden_entity_extraction() {
        let fixture: ExtractFixture = serde_json::from_str(include_str!(
            "../../tests/fixtures/metrics/seqeval_extract.json"
        ))
        .expect("fixture parses");
        assert!(fixture.cases.len() >= 100);
        for case in &fixture.cases {
            let checks = [
                (Scheme::Iob2, Mode::Default, Some(&case.default)),
                (Scheme::Iobes, Mode::Default, Some(&case.default)),
                (Scheme::Iob2, Mode::Strict, case.strict_iob2.as_ref()),
                (Scheme::Iobes, Mode::Strict, case.strict_iobes.as_ref()),
            ];
            for (scheme, mode, expected) in checks {
                let Some(expected) = expected else { continue };
                let actual = extract_entities(&case.tags, scheme, mode);
                let actual: Vec<(String, usize, usize)> = actual
                    .into_iter()
                    .map(|e| (e.label, e.start, e.end))
                    .collect();
                assert_eq!(&actual, expected, "{:?} {scheme} {mode}", case.tags);
            }
        }
    }

    // ----- property tests -------------------------------------------------------------

    const TYPES: [&str; 3] = ["PER", "LOC", "ORG"];

    /// A tag of the scheme's vocabulary (only prefixes strict mode accepts).
    fn tag(scheme: Scheme) -> impl Strategy<Value = String> {
        let prefixes: &[&str] = match scheme {
            Scheme::Iob2 => &["B", "I"],
            Scheme::Iobes => &["B", "I", "E", "S"],
        };
        prop_oneof![
            2 => Just("O".to_string()),
            3 => (prop::sample::select(prefixes.to_vec()), prop::sample::select(TYPES.to_vec()))
                .prop_map(|(p, t)| format!("{p}-{t}")),
        ]
    }

    fn any_scheme() -> impl Strategy<Value = Scheme> {
        prop_oneof![Just(Scheme::Iob2), Just(Scheme::Iobes)]
    }

    fn any_mode() -> impl Strategy<Value = Mode> {
        prop_oneof![Just(Mode::Default), Just(Mode::Strict)]
    }

    /// Gold and a corrupted prediction of the same shape, with their scheme.
    fn paired_corpus() -> impl Strategy<Value = (Scheme, Vec<Vec<String>>, Vec<Vec<String>>)> {
        any_scheme().prop_flat_map(|scheme| {
            prop::collection::vec(
                prop::collection::vec((tag(scheme), tag(scheme), 0u8..4), 0..10),
                0..6,
            )
            .prop_map(move |sentences| {
                let gold = sentences
                    .iter()
                    .map(|s| s.iter().map(|(g, _, _)| g.clone()).collect())
                    .collect();
                // Keep three quarters of the gold tags so that scores are not all zero.
                let pred = sentences
                    .iter()
                    .map(|s| {
                        s.iter()
                            .map(|(g, p, k)| if *k == 0 { p.clone() } else { g.clone() })
                            .collect()
                    })
                    .collect();
                (scheme, gold, pred)
            })
        })
    }

    fn in_unit(s: &TypeScores) -> bool {
        [s.precision, s.recall, s.f1]
            .iter()
            .all(|v| (0.0..=1.0).contains(v))
    }

    proptest! {
        #[test]
        fn scores_are_shares((scheme, gold, pred) in paired_corpus(), mode in any_mode()) {
            let r = entity_report(&gold, &pred, scheme, mode).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(in_unit(&r.micro) && in_unit(&r.macro_avg) && in_unit(&r.weighted));
            prop_assert!(r.per_type.values().all(in_unit));
            prop_assert!((0.0..=1.0).contains(&r.accuracy));
            prop_assert!(r.correct <= r.predicted.min(r.gold));
            prop_assert_eq!(r.per_type.values().map(|s| s.support).sum::<usize>(), r.gold);
            prop_assert_eq!(r.micro.support, r.gold);
            prop_assert_eq!((r.precision, r.recall, r.f1), (r.micro.precision, r.micro.recall, r.micro.f1));
        }

        #[test]
        fn perfect_prediction_scores_one((scheme, gold, _) in paired_corpus(), mode in any_mode()) {
            let r = entity_report(&gold, &gold, scheme, mode).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(r.correct, r.gold);
            prop_assert_eq!(r.predicted, r.gold);
            if r.gold > 0 {
                prop_assert_eq!(r.f1, 1.0);
                prop_assert_eq!(r.macro_avg.f1, 1.0);
                prop_assert_eq!(r.weighted.f1, 1.0);
            } else {
                prop_assert_eq!(r.f1, 0.0);
            }
            let has_tokens = gold.iter().any(|s| !s.is_empty());
            prop_assert_eq!(r.accuracy, if has_tokens { 1.0 } else { 0.0 });
        }

        #[test]
        fn sentence_order_does_not_matter(
            (scheme, gold, pred) in paired_corpus(),
            mode in any_mode(),
            seed in any::<u64>(),
        ) {
            let r = entity_report(&gold, &pred, scheme, mode).map_err(|e| TestCaseError::fail(e.to_string()))?;
            // A deterministic shuffle of the sentence order.
            let mut order: Vec<usize> = (0..gold.len()).collect();
            order.sort_by_key(|&i| (i as u64 + 1).wrapping_mul(seed | 1).rotate_left(17));
            let gold2: Vec<_> = order.iter().map(|&i| gold[i].clone()).collect();
            let pred2: Vec<_> = order.iter().map(|&i| pred[i].clone()).collect();
            let r2 = entity_report(&gold2, &pred2, scheme, mode).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(r, r2);
        }

        #[test]
        fn entities_are_ordered_disjoint_spans(
            tags in prop::collection::vec(tag(Scheme::Iobes), 0..16),
            scheme in any_scheme(),
            mode in any_mode(),
        ) {
            let entities = extract_entities(&tags, scheme, mode);
            let mut last_end = 0;
            for e in &entities {
                prop_assert!(e.start >= last_end && e.start < e.end && e.end <= tags.len());
                last_end = e.end;
            }
        }

        #[test]
        fn corpus_extraction_is_per_sentence((scheme, gold, _) in paired_corpus(), mode in any_mode()) {
            // With prefixed tags, the entities seqeval finds in the joined corpus are those of
            // each sentence on its own: the report counts exactly the per-sentence entities.
            let per_sentence: usize = gold.iter().map(|s| extract_entities(s, scheme, mode).len()).sum();
            let r = entity_report(&gold, &gold, scheme, mode).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(r.gold, per_sentence);
        }

        #[test]
        fn never_panics_on_arbitrary_tags(
            tags in prop::collection::vec("[BIESOUL.X]?-?[A-Z]{0,2}|\\PC{0,3}", 0..12),
            scheme in any_scheme(),
            mode in any_mode(),
        ) {
            let entities = extract_entities(&tags, scheme, mode);
            prop_assert!(entities.iter().all(|e| e.start < e.end && e.end <= tags.len()));
            let corpus = vec![tags.clone(), tags];
            let _ = entity_report(&corpus, &corpus, scheme, mode);
        }
    }
}
