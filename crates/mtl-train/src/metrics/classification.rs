//! Sentence-classification scores that reproduce scikit-learn.
//!
//! The labels scored are the sorted union of the gold and predicted labels, as scikit-learn
//! does when `labels=None`; a label that is predicted but never gold gets recall 0 and support
//! 0, a gold label that is never predicted gets precision 0 (`zero_division=0`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{MetricsError, TypeScores, ratio};

/// Confusion matrix over a fixed, sorted list of labels (scikit-learn's `confusion_matrix`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    /// The labels, sorted; they index both the rows and the columns.
    pub labels: Vec<String>,
    /// `counts[g][p]`: number of examples with gold label `labels[g]` predicted as `labels[p]`
    /// (rows = gold, columns = predicted).
    pub counts: Vec<Vec<usize>>,
}

/// Classification report: accuracy, macro and weighted F1, per-class scores and the confusion
/// matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassReport {
    /// Share of examples whose predicted label is the gold label (`accuracy_score`).
    pub accuracy: f64,
    /// Unweighted mean of the per-class F1 (`f1_score(average="macro", zero_division=0)`).
    pub macro_f1: f64,
    /// Mean of the per-class F1 weighted by gold support
    /// (`f1_score(average="weighted", zero_division=0)`).
    pub weighted_f1: f64,
    /// Precision, recall, F1 and gold support of every label of the union of gold and
    /// predicted labels (`precision_recall_fscore_support(average=None, zero_division=0)`).
    pub per_class: BTreeMap<String, TypeScores>,
    /// Confusion matrix over the same labels.
    pub confusion: ConfusionMatrix,
}

/// Scores predicted sentence labels against gold ones, as scikit-learn does.
///
/// # Errors
///
/// [`MetricsError::LabelCountMismatch`] when the lists differ in length, and
/// [`MetricsError::EmptyInput`] when they are empty (scikit-learn raises on both).
///
/// ```
/// use mtl_train::metrics::class_report;
///
/// let gold = ["greet", "book", "book", "weather"];
/// let pred = ["greet", "book", "weather", "weather"];
/// let report = class_report(&gold, &pred)?;
/// assert_eq!(report.accuracy, 0.75);
/// assert_eq!(report.per_class["book"].recall, 0.5);
/// assert_eq!(report.confusion.labels, ["book", "greet", "weather"]);
/// assert_eq!(report.confusion.counts[0], [1, 0, 1]);
/// # Ok::<(), mtl_train::metrics::MetricsError>(())
/// ```
pub fn class_report<G: AsRef<str>, P: AsRef<str>>(
    gold: &[G],
    pred: &[P],
) -> Result<ClassReport, MetricsError> {
    if gold.len() != pred.len() {
        return Err(MetricsError::LabelCountMismatch {
            gold: gold.len(),
            pred: pred.len(),
        });
    }
    if gold.is_empty() {
        return Err(MetricsError::EmptyInput);
    }

    let labels: Vec<&str> = gold
        .iter()
        .map(AsRef::as_ref)
        .chain(pred.iter().map(AsRef::as_ref))
        .collect::<BTreeSet<&str>>()
        .into_iter()
        .collect();
    let index: BTreeMap<&str, usize> = labels.iter().enumerate().map(|(i, &l)| (l, i)).collect();

    let n = labels.len();
    let mut counts = vec![vec![0usize; n]; n];
    for (g, p) in gold.iter().zip(pred) {
        // Every label is in `index` by construction; `get` keeps this free of panics.
        if let (Some(&gi), Some(&pi)) = (index.get(g.as_ref()), index.get(p.as_ref()))
            && let Some(cell) = counts.get_mut(gi).and_then(|row| row.get_mut(pi))
        {
            *cell += 1;
        }
    }

    let mut per_class = BTreeMap::new();
    let mut correct = 0;
    for (k, label) in labels.iter().enumerate() {
        let tp = counts[k][k];
        let true_sum: usize = counts[k].iter().sum();
        let pred_sum: usize = counts.iter().map(|row| row[k]).sum();
        correct += tp;
        // scikit-learn computes F1 from counts: 2 tp / (2 tp + fn + fp) = 2 tp / (true + pred).
        let scores = TypeScores {
            precision: ratio(tp, pred_sum),
            recall: ratio(tp, true_sum),
            f1: ratio(2 * tp, true_sum + pred_sum),
            support: true_sum,
        };
        per_class.insert(label.to_string(), scores);
    }

    let total = gold.len();
    let macro_f1 = per_class.values().map(|s: &TypeScores| s.f1).sum::<f64>() / n as f64;
    let weighted_f1 = per_class
        .values()
        .map(|s: &TypeScores| s.f1 * s.support as f64)
        .sum::<f64>()
        / total as f64;

    Ok(ClassReport {
        accuracy: ratio(correct, total),
        macro_f1,
        weighted_f1,
        per_class,
        confusion: ConfusionMatrix {
            labels: labels.into_iter().map(str::to_string).collect(),
            counts,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    const TOL: f64 = 1e-12;

    #[test]
    fn shape_errors() {
        assert_eq!(
            class_report(&["a", "b"], &["a"]),
            Err(MetricsError::LabelCountMismatch { gold: 2, pred: 1 })
        );
        let none: [&str; 0] = [];
        assert_eq!(class_report(&none, &none), Err(MetricsError::EmptyInput));
    }

    #[test]
    fn predicted_only_labels_are_scored() {
        let report = class_report(&["a", "a"], &["a", "b"]).expect("same length");
        assert_eq!(report.confusion.labels, ["a", "b"]);
        assert_eq!(report.confusion.counts, [[1, 1], [0, 0]]);
        let b = report.per_class["b"];
        assert_eq!((b.precision, b.recall, b.f1, b.support), (0.0, 0.0, 0.0, 0));
        // macro over {a: 2/3, b: 0}; weighted only counts a.
        assert!((report.macro_f1 - 1.0 / 3.0).abs() < TOL);
        assert!((report.weighted_f1 - 2.0 / 3.0).abs() < TOL);
    }

    // ----- golden tests against scikit-learn -----------------------------------------

    #[derive(Debug, Deserialize)]
    struct Fixture {
        cases: Vec<Case>,
    }

    #[derive(Debug, Deserialize)]
    struct Case {
        name: String,
        gold: Vec<String>,
        pred: Vec<String>,
        accuracy: f64,
        macro_f1: f64,
        weighted_f1: f64,
        labels: Vec<String>,
        precision: Vec<f64>,
        recall: Vec<f64>,
        f1: Vec<f64>,
        support: Vec<usize>,
        confusion: Vec<Vec<usize>>,
    }

    #[test]
    fn golden_classification() {
        let fixture: Fixture = serde_json::from_str(include_str!(
            "../../tests/fixtures/metrics/classification.json"
        ))
        .expect("fixture parses");
        assert!(fixture.cases.len() >= 20);
        for case in &fixture.cases {
            let ctx = &case.name;
            let r = class_report(&case.gold, &case.pred).expect("fixture cases are valid");
            assert!((r.accuracy - case.accuracy).abs() <= TOL, "{ctx}: accuracy");
            assert!((r.macro_f1 - case.macro_f1).abs() <= TOL, "{ctx}: macro f1");
            assert!(
                (r.weighted_f1 - case.weighted_f1).abs() <= TOL,
                "{ctx}: weighted f1"
            );
            assert_eq!(r.confusion.labels, case.labels, "{ctx}: labels");
            assert_eq!(r.confusion.counts, case.confusion, "{ctx}: confusion");
            for (k, label) in case.labels.iter().enumerate() {
                let s = r.per_class[label];
                assert!(
                    (s.precision - case.precision[k]).abs() <= TOL,
                    "{ctx}/{label}: precision"
                );
                assert!(
                    (s.recall - case.recall[k]).abs() <= TOL,
                    "{ctx}/{label}: recall"
                );
                assert!((s.f1 - case.f1[k]).abs() <= TOL, "{ctx}/{label}: f1");
                assert_eq!(s.support, case.support[k], "{ctx}/{label}: support");
            }
        }
    }

    // ----- property tests -------------------------------------------------------------

    fn labels() -> impl Strategy<Value = (Vec<String>, Vec<String>)> {
        let label = prop::sample::select(vec!["a", "b", "c", "d"]).prop_map(String::from);
        prop::collection::vec((label.clone(), label), 1..40)
            .prop_map(|pairs| pairs.into_iter().unzip())
    }

    proptest! {
        #[test]
        fn confusion_matrix_accounts_for_every_example((gold, pred) in labels()) {
            let r = class_report(&gold, &pred).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let total: usize = r.confusion.counts.iter().flatten().sum();
            prop_assert_eq!(total, gold.len());
            let diagonal: usize = (0..r.confusion.labels.len()).map(|k| r.confusion.counts[k][k]).sum();
            prop_assert!((r.accuracy - diagonal as f64 / gold.len() as f64).abs() < TOL);
            prop_assert_eq!(r.per_class.values().map(|s| s.support).sum::<usize>(), gold.len());
            for s in r.per_class.values() {
                prop_assert!([s.precision, s.recall, s.f1].iter().all(|v| (0.0..=1.0).contains(v)));
            }
            prop_assert!((0.0..=1.0).contains(&r.macro_f1) && (0.0..=1.0).contains(&r.weighted_f1));
        }

        #[test]
        fn perfect_prediction_scores_one((gold, _) in labels()) {
            let r = class_report(&gold, &gold).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(r.accuracy, 1.0);
            prop_assert!((r.macro_f1 - 1.0).abs() < TOL && (r.weighted_f1 - 1.0).abs() < TOL);
        }

        #[test]
        fn example_order_does_not_matter((gold, pred) in labels()) {
            let r = class_report(&gold, &pred).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let rg: Vec<_> = gold.iter().rev().collect();
            let rp: Vec<_> = pred.iter().rev().collect();
            let r2 = class_report(&rg, &rp).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(r.confusion, r2.confusion);
            prop_assert!((r.macro_f1 - r2.macro_f1).abs() < TOL);
        }
    }
}
