//! Predictions for raw texts, as `mtl predict` prints them and `mtl serve` returns them.
//!
//! One home for the three steps both share: a text is split into words and encoded
//! ([`PreparedText`]), a [`Predictor`] (the model, prepared once for its engine) labels many
//! prepared texts in batches ([`Predictor::predict_texts`]), and each answer becomes the same
//! JSON object ([`TextPrediction::to_json`]), byte for byte, wherever it is printed.
//!
//! ```
//! use burn::tensor::Device;
//! use mtl_data::{Encoder, Example, TextEncoder, WordVocab, WordVocabConfig};
//! use mtl_model::{MultitaskConfig, MultitaskTransformer};
//! use mtl_train::texts::{PreparedText, Predictor};
//! use mtl_train::{InferenceEngine, PredictOptions};
//!
//! let words = vec!["play".to_string(), "jazz".to_string()];
//! let tags = vec!["O".to_string(), "B-genre".to_string()];
//! let train = [Example::from_words(words, Some("music".into()), Some(tags))?];
//! let vocab = WordVocab::build(&train, &WordVocabConfig::default());
//! let encoder = Encoder::build(&train, TextEncoder::Word(vocab), 16)?;
//! let config = MultitaskConfig::new(encoder.text.vocab_size(), encoder.labels.len(), encoder.tags.len())
//!     .with_d_model(16).with_nhead(2).with_num_encoder_layers(1).with_dim_feedforward(32);
//! let device = Device::flex();
//! let model = MultitaskTransformer::new(&config, &device)?;
//! let predictor = Predictor::new(model, InferenceEngine::Packed, &device);
//! let texts = vec![PreparedText::new(&encoder, "play some jazz")?, PreparedText::new(&encoder, " ")?];
//! let out = predictor.predict_texts(&encoder, texts, &PredictOptions::new(8))?;
//! assert_eq!(out[0].to_json()["text"], "play some jazz");
//! assert_eq!(out[1].to_json()["label"], serde_json::Value::Null); // no words, no prediction
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use burn::tensor::Device;
use mtl_data::{Encoded, Encoder, Example, TagScheme, iob2_to_spans, to_iob2};
use mtl_model::{MultitaskTransformer, PackedModel};
use serde_json::{Value, json};

use crate::error::Result;
use crate::eval::{Forward, InferenceEngine, PredictOptions, Prediction, predict_with};

/// A raw text split into words as the model's training text was (the encoder's
/// [`WordSplit`](mtl_data::WordSplit)) and encoded, ready for [`Predictor::predict_texts`].
#[derive(Debug, Clone)]
pub struct PreparedText {
    example: Example,
    /// `None` for a text without words (nothing to predict).
    encoded: Option<Encoded>,
}

impl PreparedText {
    /// Splits and encodes `text` (a text longer than the model's limit is cut, and says so in
    /// [`truncated`](Self::truncated)).
    ///
    /// # Errors
    /// The tokenizer fails on the text.
    pub fn new(encoder: &Encoder, text: &str) -> Result<Self> {
        let example = encoder.example(text);
        let encoded = if example.words.is_empty() {
            None
        } else {
            Some(encoder.encode(&example)?.0)
        };
        Ok(Self { example, encoded })
    }

    /// The text as given.
    pub fn text(&self) -> &str {
        &self.example.text
    }

    /// Whether the text has any word (a text of whitespace has none, and gets no prediction).
    pub fn has_words(&self) -> bool {
        self.encoded.is_some()
    }

    /// Tokens the model reads for this text (special tokens included; 0 without words).
    pub fn tokens(&self) -> usize {
        self.encoded.as_ref().map_or(0, Encoded::len)
    }

    /// Whether the text was longer than the model's `max_seq_length` and was cut.
    pub fn truncated(&self) -> bool {
        self.encoded.as_ref().is_some_and(|e| e.truncated)
    }
}

/// One text's answer: what `mtl predict` prints as a JSON line.
#[derive(Debug, Clone)]
pub struct TextPrediction {
    /// The text and its words.
    pub example: Example,
    /// The model's answer (`None` for a text without words).
    pub prediction: Option<Prediction>,
    /// Whether the text was cut to the model's limit (words past it get no entities).
    pub truncated: bool,
}

impl TextPrediction {
    /// The JSON object: `text`, `label` (`{name, score}`, or `null` without words), `top_k`,
    /// `entities` (`{start, end, text, label, score}`, character offsets into `text`, end
    /// exclusive; the score is the mean of the entity's word-tag probabilities) and, only when
    /// the text was cut, `"truncated": true`. Keys are sorted.
    pub fn to_json(&self) -> Value {
        let ex = &self.example;
        let Some(p) = &self.prediction else {
            return json!({"text": ex.text, "label": null, "top_k": [], "entities": []});
        };
        let (tags, _) = to_iob2(&p.tags, TagScheme::Iob2);
        let entities: Vec<Value> = iob2_to_spans(&tags)
            .into_iter()
            .map(|span| {
                let (start, end) = ex.char_span(span.start, span.end);
                let text: String = ex.text.chars().skip(start).take(end - start).collect();
                let scores = &p.tag_scores[span.start..span.end];
                let score = scores.iter().sum::<f32>() / scores.len().max(1) as f32;
                json!({"start": start, "end": end, "text": text, "label": span.label, "score": score})
            })
            .collect();
        let mut line =
            json!({"text": ex.text, "label": p.label, "top_k": p.top_k, "entities": entities});
        if self.truncated {
            line["truncated"] = json!(true);
        }
        line
    }
}

/// A model prepared once for one [`InferenceEngine`]: the packed copy of its weights (the Burn
/// model itself is dropped), or the Burn model on its device.
#[derive(Debug)]
pub enum Predictor {
    /// The Burn model (in evaluation mode) on `device`.
    Burn {
        /// The model.
        model: Box<MultitaskTransformer>,
        /// Its device.
        device: Device,
    },
    /// The packed CPU path.
    Packed(Box<PackedModel>),
}

impl Predictor {
    /// Prepares `model` (in evaluation mode, on `device`) for `engine`.
    pub fn new(model: MultitaskTransformer, engine: InferenceEngine, device: &Device) -> Self {
        match engine {
            InferenceEngine::Packed => Self::Packed(Box::new(PackedModel::from_model(&model))),
            InferenceEngine::Burn => Self::Burn {
                model: Box::new(model),
                device: device.clone(),
            },
        }
    }

    /// The engine it runs.
    pub fn engine(&self) -> InferenceEngine {
        match self {
            Self::Burn { .. } => InferenceEngine::Burn,
            Self::Packed(_) => InferenceEngine::Packed,
        }
    }

    /// The forward passes, borrowed for [`predict_with`].
    pub fn forward(&self) -> Forward<'_> {
        match self {
            Self::Burn { model, device } => Forward::Burn {
                model: model.as_ref(),
                device,
            },
            Self::Packed(packed) => Forward::Packed(packed),
        }
    }

    /// Labels `texts` (in batches of `options.batch_size`, sorted by length; answers in input
    /// order). Texts without words get an answer without a prediction.
    ///
    /// # Errors
    /// The forward pass fails (see [`predict_with`]).
    pub fn predict_texts(
        &self,
        encoder: &Encoder,
        texts: Vec<PreparedText>,
        options: &PredictOptions,
    ) -> Result<Vec<TextPrediction>> {
        let mut examples = Vec::with_capacity(texts.len());
        let mut encoded = Vec::with_capacity(texts.len());
        let mut kept_at = Vec::with_capacity(texts.len());
        let mut out: Vec<Option<TextPrediction>> = Vec::with_capacity(texts.len());
        for t in texts {
            match t.encoded {
                Some(e) => {
                    kept_at.push(out.len());
                    examples.push(t.example);
                    encoded.push(e);
                    out.push(None);
                }
                None => out.push(Some(TextPrediction {
                    example: t.example,
                    prediction: None,
                    truncated: false,
                })),
            }
        }
        let (predictions, _) = predict_with(self.forward(), encoder, &examples, &encoded, options)?;
        for ((at, example), (prediction, enc)) in kept_at
            .into_iter()
            .zip(examples)
            .zip(predictions.into_iter().zip(&encoded))
        {
            out[at] = Some(TextPrediction {
                example,
                prediction: Some(prediction),
                truncated: enc.truncated,
            });
        }
        Ok(out.into_iter().flatten().collect())
    }
}
