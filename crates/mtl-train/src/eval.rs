//! Prediction and evaluation: batched inference over examples, losses and metrics.

use std::collections::BTreeMap;

use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};
use mtl_data::{Encoded, Encoder, Example, MultitaskBatcher, plan_batches};
use mtl_model::MultitaskTransformer;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::loss::{cross_entropy, token_cross_entropy};
use crate::metrics::{self, ClassReport, ConfusionMatrix, Mode, Scheme, TypeScores};

/// A label with its probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    /// Label name.
    pub name: String,
    /// Softmax probability.
    pub score: f32,
}

/// The model's answer for one example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Best sentence label.
    pub label: Scored,
    /// The `k` best sentence labels, best first.
    pub top_k: Vec<Scored>,
    /// One IOB2 tag per word (`O` for words cut off by truncation).
    pub tags: Vec<String>,
    /// Probability of each word's tag.
    pub tag_scores: Vec<f32>,
}

/// Per-task mean losses over a dataset (`None` where no example carries that task's labels).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskLosses {
    /// Mean classification cross-entropy.
    pub classification: Option<f64>,
    /// Mean token cross-entropy of the NER head.
    pub ner: Option<f64>,
}

/// Runs the model over `examples` in batches (sorted by length for speed; results come back in
/// input order) and returns predictions and the per-task losses against whatever labels exist.
///
/// `model` should be in evaluation mode (`model.valid()`), on `device`.
pub fn predict(
    model: &MultitaskTransformer,
    encoder: &Encoder,
    examples: &[Example],
    batch_size: usize,
    top_k: usize,
    device: &Device,
) -> Result<(Vec<Prediction>, TaskLosses)> {
    let (encoded, _) = encoder.encode_all(examples)?;
    Ok(predict_encoded(
        model, encoder, examples, &encoded, batch_size, top_k, device,
    ))
}

/// [`predict`] on examples already encoded by `encoder`.
pub fn predict_encoded(
    model: &MultitaskTransformer,
    encoder: &Encoder,
    examples: &[Example],
    encoded: &[Encoded],
    batch_size: usize,
    top_k: usize,
    device: &Device,
) -> (Vec<Prediction>, TaskLosses) {
    let batcher = MultitaskBatcher {
        pad_id: encoder.text.pad_id(),
    };
    let lengths: Vec<usize> = encoded.iter().map(Encoded::len).collect();
    let plan = plan_batches(&lengths, batch_size, None::<&mut rand::rngs::StdRng>, true);
    let mut out: Vec<Option<Prediction>> = vec![None; examples.len()];
    let (mut cls_sum, mut cls_n, mut ner_sum, mut ner_n) = (0.0f64, 0usize, 0.0f64, 0usize);
    for indices in plan {
        let items: Vec<&Encoded> = indices.iter().map(|&i| &encoded[i]).collect();
        let batch = batcher.batch(&items, device);
        let [b, s] = batch.tokens.dims();
        let output = model.forward_joint(batch.tokens.clone(), batch.padding_mask.clone());
        let cls_loss = cross_entropy(output.classification.clone(), batch.label_targets.clone());
        if cls_loss.count > 0 {
            cls_sum += cls_loss.mean.into_scalar::<f32>() as f64 * cls_loss.count as f64;
            cls_n += cls_loss.count;
        }
        let ner_loss = token_cross_entropy(output.ner.clone(), batch.tag_targets.clone());
        if ner_loss.count > 0 {
            ner_sum += ner_loss.mean.into_scalar::<f32>() as f64 * ner_loss.count as f64;
            ner_n += ner_loss.count;
        }
        let classes = model.config().num_classes;
        let cls_probs = to_vec(softmax(output.classification, 1));
        let ner_probs = softmax(output.ner, 2);
        let (best, best_ids) = ner_probs.max_dim_with_indices(2);
        let best = to_vec(best.reshape([b * s]));
        let best_ids: Vec<i64> = best_ids
            .reshape([b * s])
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .unwrap_or_default();
        for (row, &i) in indices.iter().enumerate() {
            let probs = &cls_probs[row * classes..(row + 1) * classes];
            let mut order: Vec<usize> = (0..classes).collect();
            order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
            let scored = |c: usize| Scored {
                name: encoder.labels.name(c).unwrap_or("<unknown>").to_string(),
                score: probs[c],
            };
            let n_words = examples[i].words.len();
            let len = encoded[i].len();
            let token_ids: Vec<usize> = best_ids[row * s..row * s + len]
                .iter()
                .map(|&t| t.max(0) as usize)
                .collect();
            let token_scores = &best[row * s..row * s + len];
            let tags = encoder.word_tags(&encoded[i], &token_ids, n_words);
            let mut tag_scores = vec![0.0f32; n_words];
            let mut seen = vec![false; n_words];
            for (w, &p) in encoded[i].word_ids.iter().zip(token_scores) {
                if let Some(w) = *w
                    && w < n_words
                    && !seen[w]
                {
                    seen[w] = true;
                    tag_scores[w] = p;
                }
            }
            out[i] = Some(Prediction {
                label: scored(order[0]),
                top_k: order
                    .iter()
                    .take(top_k.max(1))
                    .map(|&c| scored(c))
                    .collect(),
                tags,
                tag_scores,
            });
        }
    }
    let losses = TaskLosses {
        classification: (cls_n > 0).then(|| cls_sum / cls_n as f64),
        ner: (ner_n > 0).then(|| ner_sum / ner_n as f64),
    };
    (out.into_iter().flatten().collect(), losses)
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_default()
}

/// Classification metrics of an evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationEval {
    /// Mean cross-entropy over examples whose label the model knows.
    pub loss: Option<f64>,
    /// Accuracy (labels unseen in training count as wrong).
    pub accuracy: f64,
    /// Macro-averaged F1 over the gold and predicted labels.
    pub macro_f1: f64,
    /// Weighted F1.
    pub weighted_f1: f64,
    /// Per-label precision, recall, F1 and support.
    pub per_class: BTreeMap<String, TypeScores>,
    /// Confusion matrix (rows gold, columns predicted).
    pub confusion: ConfusionMatrix,
    /// Number of labelled examples.
    pub examples: usize,
}

/// NER metrics of an evaluation (seqeval's numbers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NerEval {
    /// Mean token cross-entropy.
    pub loss: Option<f64>,
    /// Entity-level micro precision.
    pub precision: f64,
    /// Entity-level micro recall.
    pub recall: f64,
    /// Entity-level micro F1.
    pub f1: f64,
    /// Word-level tag accuracy, padding excluded (the seed's NER accuracy).
    pub token_accuracy: f64,
    /// Per entity type scores.
    pub per_type: BTreeMap<String, TypeScores>,
    /// Macro average over entity types.
    pub macro_avg: TypeScores,
    /// Support-weighted average over entity types.
    pub weighted: TypeScores,
    /// Number of tagged examples.
    pub examples: usize,
}

/// The result of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Present when some examples carry sentence labels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classification: Option<ClassificationEval>,
    /// Present when some examples carry tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ner: Option<NerEval>,
    /// Share of examples (with both annotations) whose label and every tag are right.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame_accuracy: Option<f64>,
    /// Number of examples evaluated.
    pub examples: usize,
}

impl EvalReport {
    /// The default model-selection score: the mean of classification accuracy and entity F1
    /// (whichever exist).
    pub fn combined_score(&self) -> f64 {
        let parts: Vec<f64> = self
            .classification
            .as_ref()
            .map(|c| c.accuracy)
            .into_iter()
            .chain(self.ner.as_ref().map(|n| n.f1))
            .collect();
        if parts.is_empty() {
            0.0
        } else {
            parts.iter().sum::<f64>() / parts.len() as f64
        }
    }
}

/// Scores predictions against the examples' gold annotations.
pub fn score(
    examples: &[Example],
    predictions: &[Prediction],
    losses: TaskLosses,
) -> Result<EvalReport> {
    let mut gold_labels = Vec::new();
    let mut pred_labels = Vec::new();
    let mut gold_tags = Vec::new();
    let mut pred_tags = Vec::new();
    let (mut frames, mut frames_right) = (0usize, 0usize);
    for (ex, p) in examples.iter().zip(predictions) {
        if let Some(label) = &ex.label {
            gold_labels.push(label.as_str());
            pred_labels.push(p.label.name.as_str());
        }
        if let Some(tags) = &ex.tags {
            gold_tags.push(tags.clone());
            pred_tags.push(p.tags.clone());
        }
        if let (Some(label), Some(tags)) = (&ex.label, &ex.tags) {
            frames += 1;
            if *label == p.label.name && *tags == p.tags {
                frames_right += 1;
            }
        }
    }
    let classification = if gold_labels.is_empty() {
        None
    } else {
        let r: ClassReport = metrics::class_report(&gold_labels, &pred_labels)?;
        Some(ClassificationEval {
            loss: losses.classification,
            accuracy: r.accuracy,
            macro_f1: r.macro_f1,
            weighted_f1: r.weighted_f1,
            per_class: r.per_class,
            confusion: r.confusion,
            examples: gold_labels.len(),
        })
    };
    let ner = if gold_tags.is_empty() {
        None
    } else {
        let r = metrics::entity_report(&gold_tags, &pred_tags, Scheme::Iob2, Mode::Default)?;
        Some(NerEval {
            loss: losses.ner,
            precision: r.precision,
            recall: r.recall,
            f1: r.f1,
            token_accuracy: metrics::token_accuracy(&gold_tags, &pred_tags),
            per_type: r.per_type,
            macro_avg: r.macro_avg,
            weighted: r.weighted,
            examples: gold_tags.len(),
        })
    };
    Ok(EvalReport {
        classification,
        ner,
        frame_accuracy: (frames > 0).then(|| frames_right as f64 / frames as f64),
        examples: examples.len(),
    })
}

/// Predicts and scores in one go: losses per task and every metric.
pub fn evaluate(
    model: &MultitaskTransformer,
    encoder: &Encoder,
    examples: &[Example],
    batch_size: usize,
    device: &Device,
) -> Result<(EvalReport, Vec<Prediction>)> {
    let (predictions, losses) = predict(model, encoder, examples, batch_size, 1, device)?;
    Ok((score(examples, &predictions, losses)?, predictions))
}
