//! Evaluation metrics for the two tasks: sentence classification and slot filling / NER.
//!
//! Everything here is a pure function on label strings, so the numbers do not depend on a
//! model, a backend or a device:
//!
//! - [`entity_report`] scores tagged sequences at the entity level and gives exactly the
//!   numbers of [seqeval](https://github.com/chakki-works/seqeval) 1.2.2, both in its default
//!   (conlleval-compatible) mode and in its strict mode with the IOB2 or IOBES scheme.
//! - [`class_report`] scores sentence labels and gives exactly the numbers of scikit-learn's
//!   `accuracy_score`, `f1_score(average="macro" | "weighted", zero_division=0)`,
//!   `precision_recall_fscore_support` and `confusion_matrix`.
//! - [`token_accuracy`] and [`frame_accuracy`] are the per-token and per-sentence
//!   ("exact frame") accuracies of the joint task.
//!
//! The golden fixtures under `tests/fixtures/metrics/` are produced by
//! `scripts/metrics_golden/make_fixtures.py` (seqeval 1.2.2, scikit-learn 1.9.1) and checked
//! by the unit tests of each submodule.
//!
//! # Example
//!
//! ```
//! use mtl_train::metrics::{entity_report, Mode, Scheme};
//!
//! let gold = vec![vec!["B-PER".to_string(), "I-PER".into(), "O".into(), "B-LOC".into()]];
//! let pred = vec![vec!["B-PER".to_string(), "I-PER".into(), "O".into(), "O".into()]];
//! let report = entity_report(&gold, &pred, Scheme::Iob2, Mode::Default)?;
//! assert_eq!(report.precision, 1.0);
//! assert_eq!(report.recall, 0.5);
//! assert_eq!(report.per_type["PER"].f1, 1.0);
//! assert_eq!(report.accuracy, 0.75);
//! # Ok::<(), mtl_train::metrics::MetricsError>(())
//! ```

mod classification;
mod seqeval;

use serde::{Deserialize, Serialize};

pub use classification::{ClassReport, ConfusionMatrix, class_report};
pub use seqeval::{Entity, EntityReport, Mode, Scheme, entity_report, extract_entities};

/// Errors of the metric functions: inputs that do not line up, or tags that seqeval rejects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// Gold and predicted corpora hold a different number of sentences.
    #[error("gold has {gold} sentences but the prediction has {pred}")]
    SentenceCountMismatch {
        /// Number of gold sentences.
        gold: usize,
        /// Number of predicted sentences.
        pred: usize,
    },
    /// One sentence has a different number of gold and predicted tags.
    #[error("sentence {sentence}: gold has {gold} tags but the prediction has {pred}")]
    SentenceLengthMismatch {
        /// Index of the sentence (0-based) in the corpus.
        sentence: usize,
        /// Number of gold tags in that sentence.
        gold: usize,
        /// Number of predicted tags in that sentence.
        pred: usize,
    },
    /// A tag that seqeval refuses: an empty tag (in any mode), or, in strict mode, a tag
    /// whose prefix (its first character) the scheme does not allow, such as `E-PER` under
    /// IOB2 or `U-PER` under IOBES.
    #[error(
        "{side} sentence {sentence}, token {token}: tag {tag:?} is not valid for {scheme} in {mode} mode (expected `O` or a prefix in {allowed} followed by a type, e.g. `B-PER`)"
    )]
    InvalidTag {
        /// Which input holds the tag: `"gold"` or `"predicted"`.
        side: &'static str,
        /// Index of the sentence (0-based) in the corpus.
        sentence: usize,
        /// Index of the token (0-based) in the sentence.
        token: usize,
        /// The offending tag.
        tag: String,
        /// The scheme the tags were read with.
        scheme: Scheme,
        /// The mode the tags were read in.
        mode: Mode,
        /// The prefixes the scheme allows, e.g. `"B, I, O"`.
        allowed: &'static str,
    },
    /// Gold and predicted label lists differ in length.
    #[error("gold has {gold} labels but the prediction has {pred}")]
    LabelCountMismatch {
        /// Number of gold labels.
        gold: usize,
        /// Number of predicted labels.
        pred: usize,
    },
    /// No labels to score (scikit-learn raises on empty inputs too).
    #[error("cannot score an empty list of labels")]
    EmptyInput,
    /// A scheme name that is neither `iob2` nor `iobes`.
    #[error("unknown tagging scheme {name:?} (expected \"iob2\" or \"iobes\")")]
    UnknownScheme {
        /// The name that was given.
        name: String,
    },
    /// A mode name that is neither `default` nor `strict`.
    #[error("unknown evaluation mode {name:?} (expected \"default\" or \"strict\")")]
    UnknownMode {
        /// The name that was given.
        name: String,
    },
}

/// Precision, recall, F1 and support of one entity type or class, or of an average over them.
///
/// Scores whose denominator is zero are `0.0`, as with seqeval's and scikit-learn's default
/// `zero_division` (seqeval's "warn", scikit-learn's `0`).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct TypeScores {
    /// Correct predictions over all predictions.
    pub precision: f64,
    /// Correct predictions over all gold items.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Number of gold items (for an average: summed over the types or classes).
    pub support: usize,
}

/// Share of tokens whose predicted tag equals the gold tag, over all tokens of the corpus.
///
/// For inputs of equal shape this is seqeval's `accuracy_score` on the sentences. Nothing is
/// excluded: callers pass only real tokens (no padding, no sub-word continuations). Where the
/// shapes differ, a token present on one side only counts as wrong, so the denominator is the
/// larger of the two lengths, sentence by sentence. Returns `0.0` when there is no token at all
/// (seqeval divides by zero there).
///
/// ```
/// use mtl_train::metrics::token_accuracy;
///
/// let gold = vec![vec!["B-PER", "O"], vec!["O"]];
/// let pred = vec![vec!["B-PER", "B-LOC"], vec!["O"]];
/// assert!((token_accuracy(&gold, &pred) - 2.0 / 3.0).abs() < 1e-12);
/// ```
pub fn token_accuracy<G: AsRef<str>, P: AsRef<str>>(gold: &[Vec<G>], pred: &[Vec<P>]) -> f64 {
    let mut correct = 0usize;
    let mut total = 0usize;
    for i in 0..gold.len().max(pred.len()) {
        let g = gold.get(i).map_or(&[][..], Vec::as_slice);
        let p = pred.get(i).map_or(&[][..], Vec::as_slice);
        total += g.len().max(p.len());
        correct += g
            .iter()
            .zip(p)
            .filter(|(g, p)| g.as_ref() == p.as_ref())
            .count();
    }
    ratio(correct, total)
}

/// Share of sentences whose predicted label and all predicted tags are right (exact-match or
/// "frame" accuracy of the joint task).
///
/// A sentence whose tag sequences differ in length counts as wrong, and so does a sentence that
/// is missing from one of the inputs, so the denominator is the largest of the four lengths.
/// Returns `0.0` when there is no sentence.
///
/// ```
/// use mtl_train::metrics::frame_accuracy;
///
/// let gold_labels = ["book", "greet"];
/// let pred_labels = ["book", "greet"];
/// let gold_tags = vec![vec!["B-CITY", "O"], vec!["O"]];
/// let pred_tags = vec![vec!["B-CITY", "O"], vec!["B-CITY"]];
/// assert_eq!(frame_accuracy(&gold_labels, &pred_labels, &gold_tags, &pred_tags), 0.5);
/// ```
pub fn frame_accuracy<A, B, C, D>(
    gold_labels: &[A],
    pred_labels: &[B],
    gold_tags: &[Vec<C>],
    pred_tags: &[Vec<D>],
) -> f64
where
    A: AsRef<str>,
    B: AsRef<str>,
    C: AsRef<str>,
    D: AsRef<str>,
{
    let total = gold_labels
        .len()
        .max(pred_labels.len())
        .max(gold_tags.len())
        .max(pred_tags.len());
    let correct = (0..total)
        .filter(|&i| {
            let label_ok = match (gold_labels.get(i), pred_labels.get(i)) {
                (Some(g), Some(p)) => g.as_ref() == p.as_ref(),
                _ => false,
            };
            let tags_ok = match (gold_tags.get(i), pred_tags.get(i)) {
                (Some(g), Some(p)) => {
                    g.len() == p.len() && g.iter().zip(p).all(|(g, p)| g.as_ref() == p.as_ref())
                }
                _ => false,
            };
            label_ok && tags_ok
        })
        .count();
    ratio(correct, total)
}

/// `num / den`, or `0.0` when `den == 0`.
fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn token_accuracy_counts_all_tokens() {
        let gold = vec![vec!["O", "B-X"], vec![], vec!["I-X"]];
        let pred = vec![vec!["O", "O"], vec![], vec!["I-X"]];
        assert_eq!(token_accuracy(&gold, &pred), 2.0 / 3.0);
    }

    #[test]
    fn token_accuracy_of_nothing_is_zero() {
        let empty: Vec<Vec<String>> = Vec::new();
        assert_eq!(token_accuracy(&empty, &empty), 0.0);
        assert_eq!(
            token_accuracy(&[Vec::<&str>::new()], &[Vec::<&str>::new()]),
            0.0
        );
    }

    #[test]
    fn token_accuracy_counts_missing_tokens_as_wrong() {
        let gold = vec![vec!["O", "O", "O"]];
        let pred = vec![vec!["O"], vec!["O"]];
        // Sentence 0: 1 right out of 3; sentence 1 exists only in pred: 0 out of 1.
        assert_eq!(token_accuracy(&gold, &pred), 0.25);
    }

    #[test]
    fn frame_accuracy_needs_label_and_every_tag() {
        let gl = ["a", "b", "c"];
        let pl = ["a", "x", "c"];
        let gt = vec![vec!["O"], vec!["O"], vec!["B-X", "O"]];
        let pt = vec![vec!["O"], vec!["O"], vec!["B-X", "I-X"]];
        assert_eq!(frame_accuracy(&gl, &pl, &gt, &pt), 1.0 / 3.0);
    }

    #[test]
    fn frame_accuracy_mismatched_shapes_count_as_wrong() {
        let gt = vec![vec!["O"], vec!["O"]];
        let pt = vec![vec!["O", "O"], vec!["O"]];
        assert_eq!(frame_accuracy(&["a", "a"], &["a", "a"], &gt, &pt), 0.5);
        assert_eq!(
            frame_accuracy(&["a", "a", "a"], &["a", "a"], &gt, &gt),
            2.0 / 3.0
        );
        let none: [&str; 0] = [];
        let no_tags: Vec<Vec<&str>> = Vec::new();
        assert_eq!(frame_accuracy(&none, &none, &no_tags, &no_tags), 0.0);
    }

    #[test]
    fn errors_name_the_sentence() {
        let err = MetricsError::SentenceLengthMismatch {
            sentence: 7,
            gold: 3,
            pred: 2,
        };
        assert!(err.to_string().contains("sentence 7"));
    }

    fn corpus() -> impl Strategy<Value = Vec<Vec<String>>> {
        let tag =
            prop::sample::select(vec!["O", "B-A", "I-A", "B-B", "I-B"]).prop_map(String::from);
        prop::collection::vec(prop::collection::vec(tag, 0..8), 0..6)
    }

    proptest! {
        #[test]
        fn token_accuracy_is_a_share(gold in corpus(), pred in corpus()) {
            let acc = token_accuracy(&gold, &pred);
            prop_assert!((0.0..=1.0).contains(&acc));
            let self_acc = token_accuracy(&gold, &gold);
            let has_tokens = gold.iter().any(|s| !s.is_empty());
            prop_assert_eq!(self_acc, if has_tokens { 1.0 } else { 0.0 });
        }

        #[test]
        fn frame_accuracy_is_at_most_label_and_token_exactness(
            gold in corpus(),
            flips in prop::collection::vec(any::<bool>(), 6),
        ) {
            let labels: Vec<String> = (0..gold.len()).map(|i| format!("l{}", i % 2)).collect();
            let pred_labels: Vec<String> = labels
                .iter()
                .zip(&flips)
                .map(|(l, &flip)| if flip { "other".to_string() } else { l.clone() })
                .collect();
            let frame = frame_accuracy(&labels, &pred_labels, &gold, &gold);
            let label_acc = ratio(
                labels.iter().zip(&pred_labels).filter(|(a, b)| a == b).count(),
                labels.len(),
            );
            prop_assert!((frame - label_acc).abs() < 1e-12);
        }
    }
}
