//! Prediction and evaluation: batched inference over examples, losses and metrics.

use std::collections::BTreeMap;

use burn::tensor::{Device, Tensor};
use mtl_data::{Encoded, Encoder, Example, MultitaskBatcher, plan_batches};
use mtl_model::{MultitaskTransformer, PackedInput, PackedModel};
use serde::{Deserialize, Serialize};

use crate::decode::{Iob2Constraints, TagDecoding, argmax};
use crate::error::Result;
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

/// Settings of [`predict`]: batch size, how many sentence labels to keep, how tags are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PredictOptions {
    /// Examples per forward pass (0 is read as 1).
    pub batch_size: usize,
    /// Number of sentence labels in [`Prediction::top_k`] (at least 1).
    pub top_k: usize,
    /// How tags are read off the NER head.
    pub decoding: TagDecoding,
    /// What runs the forward passes.
    pub engine: InferenceEngine,
}

impl Default for PredictOptions {
    fn default() -> Self {
        Self {
            batch_size: 64,
            top_k: 1,
            decoding: TagDecoding::default(),
            engine: InferenceEngine::default(),
        }
    }
}

/// What runs a prediction's forward passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InferenceEngine {
    /// The Burn model on the device given to [`predict`], on padded batches.
    #[default]
    Burn,
    /// [`PackedModel`]: a copy of the weights in host memory, run on the CPU over the batch's
    /// real tokens only (no padding); the device is not used. The fastest CPU path (see the
    /// README's speed table); its logits match the Burn model's within 1e-4 (tested; seen below
    /// 1e-6).
    Packed,
}

impl InferenceEngine {
    /// The engine for a model on `device`: the packed path on the CPU backend (the faster
    /// one there), the Burn model elsewhere (`--engine auto`).
    pub fn auto(device: &Device) -> Self {
        if mtl_model::is_cpu_backend(device) {
            Self::Packed
        } else {
            Self::Burn
        }
    }
}

impl PredictOptions {
    /// Default options with `batch_size`.
    pub fn new(batch_size: usize) -> Self {
        Self {
            batch_size,
            ..Self::default()
        }
    }
    /// Sets `top_k`.
    pub fn with_top_k(mut self, top_k: usize) -> Self {
        self.top_k = top_k;
        self
    }
    /// Sets the tag decoding.
    pub fn with_decoding(mut self, decoding: TagDecoding) -> Self {
        self.decoding = decoding;
        self
    }
    /// Sets the inference engine.
    pub fn with_engine(mut self, engine: InferenceEngine) -> Self {
        self.engine = engine;
        self
    }
}

/// Runs the model over `examples` in batches (sorted by length for speed; results come back in
/// input order) and returns predictions and the per-task losses against whatever labels exist.
///
/// `model` should be in evaluation mode (`model.valid()`), on `device`.
pub fn predict(
    model: &MultitaskTransformer,
    encoder: &Encoder,
    examples: &[Example],
    options: &PredictOptions,
    device: &Device,
) -> Result<(Vec<Prediction>, TaskLosses)> {
    let (encoded, _) = encoder.encode_all(examples)?;
    predict_encoded(model, encoder, examples, &encoded, options, device)
}

/// One batch's logits in host memory: classification `[batch, classes]`, NER rows of sequence
/// `i` from row `ner_start[i]` on (`[rows, tags]`).
struct HostLogits {
    classes: usize,
    n_tags: usize,
    classification: Vec<f32>,
    ner: Vec<f32>,
    ner_start: Vec<usize>,
}

/// Log-softmax of every `width`-wide row, in place.
fn log_softmax_rows(values: &mut [f32], width: usize) {
    for row in values.chunks_exact_mut(width.max(1)) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let log_sum = row.iter().map(|v| (v - max).exp()).sum::<f32>().ln() + max;
        row.iter_mut().for_each(|v| *v -= log_sum);
    }
}

/// [`predict`] on examples already encoded by `encoder`.
///
/// # Errors
/// With [`InferenceEngine::Packed`], encoded ids the model cannot read (a token id outside
/// its vocabulary, a sequence longer than `max_seq_length`, character ids that do not fit).
pub fn predict_encoded(
    model: &MultitaskTransformer,
    encoder: &Encoder,
    examples: &[Example],
    encoded: &[Encoded],
    options: &PredictOptions,
    device: &Device,
) -> Result<(Vec<Prediction>, TaskLosses)> {
    // One check for both engines: they run only a model and encoder that agree.
    crate::rundir::check_chars(model, encoder)?;
    let packed;
    let forward = match options.engine {
        InferenceEngine::Packed => {
            packed = PackedModel::from_model(model);
            Forward::Packed(&packed)
        }
        InferenceEngine::Burn => Forward::Burn { model, device },
    };
    predict_with(forward, encoder, examples, encoded, options)
}

/// What runs the forward passes of [`predict_with`]: a model already prepared for one
/// [`InferenceEngine`], so that a caller predicting many times (a server) builds its
/// [`PackedModel`] once.
#[derive(Debug, Clone, Copy)]
pub enum Forward<'a> {
    /// The Burn model (in evaluation mode) on its device, on padded batches.
    Burn {
        /// The model.
        model: &'a MultitaskTransformer,
        /// The device the model is on.
        device: &'a Device,
    },
    /// The packed CPU path, on each batch's real tokens only.
    Packed(&'a PackedModel),
}

/// [`predict_encoded`] with the forward passes of `forward` (`options.engine` is not read).
///
/// # Errors
/// With [`Forward::Packed`], encoded ids the model cannot read (a token id outside its
/// vocabulary, a sequence longer than `max_seq_length`, character ids that do not fit).
pub fn predict_with(
    forward: Forward<'_>,
    encoder: &Encoder,
    examples: &[Example],
    encoded: &[Encoded],
    options: &PredictOptions,
) -> Result<(Vec<Prediction>, TaskLosses)> {
    let batcher = MultitaskBatcher::for_encoder(encoder);
    let tag_names: Vec<&str> = (0..encoder.tags.len())
        .map(|i| encoder.tags.name(i).unwrap_or("O"))
        .collect();
    let constraints = Iob2Constraints::new(&tag_names);
    let lengths: Vec<usize> = encoded.iter().map(Encoded::len).collect();
    let plan = plan_batches(
        &lengths,
        options.batch_size,
        None::<&mut rand::rngs::StdRng>,
        true,
    );
    let mut out: Vec<Option<Prediction>> = vec![None; examples.len()];
    let (mut cls_sum, mut cls_n, mut ner_sum, mut ner_n) = (0.0f64, 0usize, 0.0f64, 0usize);
    for indices in plan {
        let items: Vec<&Encoded> = indices.iter().map(|&i| &encoded[i]).collect();
        let mut logits = match forward {
            Forward::Packed(packed) => {
                let mut input = PackedInput::new();
                for item in &items {
                    input.push_with_chars(&item.ids, &item.chars);
                }
                let output = packed.forward(&input)?;
                let ner_start = output.offsets[..items.len()].to_vec();
                HostLogits {
                    classes: output.num_classes,
                    n_tags: output.num_ner_tags,
                    classification: output.classification,
                    ner: output.ner,
                    ner_start,
                }
            }
            Forward::Burn { model, device } => {
                let batch = batcher.batch(&items, device);
                let [_, s] = batch.tokens.dims();
                let output =
                    model.forward_joint_with(batch.tokens, batch.padding_mask, batch.chars);
                HostLogits {
                    classes: model.config().num_classes,
                    n_tags: model.config().num_ner_tags,
                    classification: to_vec(output.classification),
                    ner: to_vec(output.ner),
                    ner_start: (0..items.len()).map(|row| row * s).collect(),
                }
            }
        };
        let (classes, n_tags) = (logits.classes, logits.n_tags);
        log_softmax_rows(&mut logits.classification, classes);
        log_softmax_rows(&mut logits.ner, n_tags);
        for (row, &i) in indices.iter().enumerate() {
            let enc = &encoded[i];
            let cls_log_probs = &logits.classification[row * classes..(row + 1) * classes];
            let rows = &logits.ner[logits.ner_start[row] * n_tags..];
            // Losses against whatever targets exist (-100 = none), as the masked losses.
            if let Ok(target) = usize::try_from(enc.label_target)
                && target < classes
            {
                cls_sum -= f64::from(cls_log_probs[target]);
                cls_n += 1;
            }
            for (t, &target) in enc.tag_targets.iter().take(enc.len()).enumerate() {
                if let Ok(target) = usize::try_from(target)
                    && target < n_tags
                {
                    ner_sum -= f64::from(rows[t * n_tags + target]);
                    ner_n += 1;
                }
            }
            let probs: Vec<f32> = cls_log_probs.iter().map(|v| v.exp()).collect();
            let mut order: Vec<usize> = (0..classes).collect();
            order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
            let scored = |c: usize| Scored {
                name: encoder.labels.name(c).unwrap_or("<unknown>").to_string(),
                score: probs[c],
            };
            let n_words = examples[i].words.len();
            let (tags, tag_scores) = decode_words(
                encoder,
                enc,
                n_words,
                &rows[..enc.len() * n_tags],
                n_tags,
                &constraints,
                options.decoding,
            );
            out[i] = Some(Prediction {
                label: scored(order[0]),
                top_k: order
                    .iter()
                    .take(options.top_k.max(1))
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
    Ok((out.into_iter().flatten().collect(), losses))
}

/// One example's word tags and their probabilities, read at the first token of each word
/// from `rows` (`[seq, n_tags]` log-probabilities). Words cut off by truncation read `O` (0.0).
fn decode_words(
    encoder: &Encoder,
    enc: &Encoded,
    n_words: usize,
    rows: &[f32],
    n_tags: usize,
    constraints: &Iob2Constraints,
    decoding: TagDecoding,
) -> (Vec<String>, Vec<f32>) {
    // The first token of each word, in word order.
    let mut first = vec![None; n_words];
    for (t, w) in enc.word_ids.iter().enumerate() {
        if let Some(w) = *w
            && w < n_words
            && first[w].is_none()
        {
            first[w] = Some(t);
        }
    }
    let positions: Vec<(usize, usize)> = first
        .iter()
        .enumerate()
        .filter_map(|(w, t)| t.map(|t| (w, t)))
        .collect();
    let mut lp = Vec::with_capacity(positions.len() * n_tags);
    for &(_, t) in &positions {
        lp.extend_from_slice(&rows[t * n_tags..(t + 1) * n_tags]);
    }
    let ids: Vec<usize> = match decoding {
        TagDecoding::Iob2 if constraints.num_tags() == n_tags => {
            constraints.viterbi(&lp, positions.len())
        }
        _ => lp.chunks(n_tags.max(1)).map(|r| argmax(r).0).collect(),
    };
    let mut tags = vec!["O".to_string(); n_words];
    let mut scores = vec![0.0f32; n_words];
    for (k, (&(w, _), &id)) in positions.iter().zip(&ids).enumerate() {
        tags[w] = encoder.tags.name(id).unwrap_or("O").to_string();
        scores[w] = lp[k * n_tags + id].exp();
    }
    (tags, scores)
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
    evaluate_with(
        model,
        encoder,
        examples,
        &PredictOptions::new(batch_size),
        device,
    )
}

/// [`evaluate`] with every [`PredictOptions`] setting.
pub fn evaluate_with(
    model: &MultitaskTransformer,
    encoder: &Encoder,
    examples: &[Example],
    options: &PredictOptions,
    device: &Device,
) -> Result<(EvalReport, Vec<Prediction>)> {
    let (predictions, losses) = predict(model, encoder, examples, options, device)?;
    Ok((score(examples, &predictions, losses)?, predictions))
}

/// Sentence vectors: the encoder output averaged over each example's real tokens (special
/// tokens included, as sentence-transformers' mean pooling), optionally scaled to unit
/// length. One vector of `d_model` values per encoded example, in order.
///
/// # Errors
/// The batch does not fit the model (a sequence longer than `max_seq_length`).
pub fn embed(
    model: &MultitaskTransformer,
    encoder: &Encoder,
    encoded: &[Encoded],
    batch_size: usize,
    normalize: bool,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let batcher = MultitaskBatcher::for_encoder(encoder);
    let d = model.config().d_model;
    let lengths: Vec<usize> = encoded.iter().map(Encoded::len).collect();
    let plan = plan_batches(&lengths, batch_size, None::<&mut rand::rngs::StdRng>, true);
    let mut out = vec![Vec::new(); encoded.len()];
    for indices in plan {
        let items: Vec<&Encoded> = indices.iter().map(|&i| &encoded[i]).collect();
        let batch = batcher.batch(&items, device);
        model.check_input_with(&batch.tokens, &batch.padding_mask, batch.chars.as_ref())?;
        let [_, seq] = batch.tokens.dims();
        // The encoder output is zero at padded positions: sum the rows, divide by the length.
        let hidden = to_vec(model.encode_with(batch.tokens, batch.padding_mask, batch.chars));
        for (row, (&i, item)) in indices.iter().zip(&items).enumerate() {
            let len = item.ids.len();
            let mut v = vec![0.0f32; d];
            for s in 0..len {
                let h = &hidden[(row * seq + s) * d..(row * seq + s + 1) * d];
                v.iter_mut().zip(h).for_each(|(a, b)| *a += b);
            }
            let n = len.max(1) as f32;
            v.iter_mut().for_each(|a| *a /= n);
            if normalize {
                let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
                v.iter_mut().for_each(|a| *a /= norm);
            }
            out[i] = v;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mtl_data::{LabelMap, TextEncoder, WordVocab, WordVocabConfig};

    fn names(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|x| (*x).to_string()).collect()
    }

    #[test]
    fn words_are_decoded_at_their_first_token()
    -> std::result::Result<(), Box<dyn std::error::Error>> {
        let tags = LabelMap::from_names(names(&["O", "B-a", "I-a", "B-b"]))?;
        let labels = LabelMap::from_names(names(&["x"]))?;
        let vocab = WordVocab::build(&[] as &[Example], &WordVocabConfig::default());
        let encoder = Encoder::new(TextEncoder::Word(vocab), labels, tags, 8)?;
        // [CLS] w0 w1 w1' [SEP]; a third word was cut off by truncation.
        let enc = Encoded {
            ids: vec![1, 2, 3, 4, 5],
            word_ids: vec![None, Some(0), Some(1), Some(1), None],
            label_target: 0,
            tag_targets: vec![IGNORE; 5],
            has_label: false,
            has_tags: false,
            truncated: true,
            chars: Vec::new(),
        };
        let p = |row: [f32; 4]| row.map(f32::ln);
        let rows: Vec<f32> = [
            p([0.97, 0.01, 0.01, 0.01]), // [CLS]: never read
            p([0.6, 0.35, 0.0, 0.05]),   // w0: argmax O
            p([0.1, 0.1, 0.7, 0.1]),     // w1: argmax I-a
            p([0.0, 0.0, 0.0, 1.0]),     // w1': not its first token, never read
            p([1.0, 0.0, 0.0, 0.0]),
        ]
        .concat();
        let c = Iob2Constraints::new(encoder.tags.names());
        let (argmax_tags, argmax_scores) =
            decode_words(&encoder, &enc, 3, &rows, 4, &c, TagDecoding::Argmax);
        assert_eq!(argmax_tags, ["O", "I-a", "O"]);
        assert!((argmax_scores[1] - 0.7).abs() < 1e-6 && argmax_scores[2] == 0.0);
        let (tags, scores) = decode_words(&encoder, &enc, 3, &rows, 4, &c, TagDecoding::Iob2);
        // B-a I-a (0.35 * 0.7) beats O O (0.6 * 0.1) and O B-b (0.6 * 0.1).
        assert_eq!(tags, ["B-a", "I-a", "O"]);
        assert!((scores[0] - 0.35).abs() < 1e-6);
        Ok(())
    }

    const IGNORE: i64 = mtl_data::IGNORE_INDEX;
}
