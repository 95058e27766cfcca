//! Data for `mtl`: readers, tokenizers, label alignment, padding masks and batching for
//! multitask sentence classification and sequence tagging (NER, slot filling).
//!
//! An [`Example`] is a sentence with its words (and their offsets in the text), optionally a
//! sentence label and optionally one IOB2 tag per word; corpora where some examples carry only
//! one of the two are normal. [`read_splits`] and friends read JointBERT directories, CoNLL
//! column files and JSONL files (tag schemes IOB1, IOB2, IOBES, all converted to IOB2), report
//! every problem with its file and line, and never drop data silently. Raw text (JSONL `text`,
//! text to predict on) is split into words by one rule, [`WordSplit`] (punctuation split off
//! words by default), which the [`Encoder`] saves with the model. An [`Encoder`] turns
//! examples into token ids with a word-level [`WordVocab`] or a HuggingFace `tokenizer.json`,
//! puts each word's tag on its first sub-token (other positions get [`IGNORE_INDEX`]), and maps
//! predictions back to words and character spans. [`plan_batches`] and [`MultitaskBatcher`]
//! make padded Burn tensors with a padding mask (`true` = padding, Burn's convention).
//!
//! The crate never picks a Burn backend: batching takes a `&Device`.
//!
//! # Example
//!
//! ```
//! use burn::tensor::Device;
//! use mtl_data::{
//!     Encoder, Example, MultitaskBatcher, ReadOptions, TextEncoder, WordVocab, WordVocabConfig,
//!     plan_batches, read_examples,
//! };
//!
//! // A small JSONL file: one example with a label and entities, one with a label only.
//! let path = std::env::temp_dir().join(format!("mtl-data-doc-{}.jsonl", std::process::id()));
//! std::fs::write(&path, concat!(
//!     r#"{"text": "play Für Elise", "label": "PlayMusic", "entities": [{"start": 5, "end": 14, "label": "track"}]}"#, "\n",
//!     r#"{"text": "rate this book", "label": "RateBook"}"#, "\n",
//! )).map_err(|e| mtl_data::Error::Io { path: path.clone(), source: e })?;
//! let (train, report) = read_examples(&path, None, &ReadOptions::default())?;
//! assert_eq!(report.examples, 2);
//! assert_eq!(train[1].tags, None); // no entities given: not tagged
//!
//! // Word-level tokenizer and label maps from the training data.
//! let vocab = WordVocab::build(&train, &WordVocabConfig::default());
//! let encoder = Encoder::build(&train, TextEncoder::Word(vocab), 128)?;
//! assert_eq!(encoder.tags.names(), ["O", "B-track", "I-track"]);
//! let (encoded, _report) = encoder.encode_all(&train)?;
//!
//! // Batches padded to their longest example.
//! let lengths: Vec<usize> = encoded.iter().map(|e| e.len()).collect();
//! let batcher = MultitaskBatcher::new(encoder.text.pad_id());
//! let device = Device::flex();
//! for indices in plan_batches(&lengths, 32, None::<&mut rand::rngs::StdRng>, true) {
//!     let items: Vec<_> = indices.iter().map(|&i| &encoded[i]).collect();
//!     let batch = batcher.batch(&items, &device);
//!     assert_eq!(batch.tokens.dims(), [2, 3]);
//!     assert_eq!(batch.has_tags, [true, false]);
//! }
//!
//! // Predictions (here: the targets) back to words and character spans.
//! let predicted: Vec<usize> = encoded[0].tag_targets.iter().map(|&t| t.max(0) as usize).collect();
//! let tags = encoder.word_tags(&encoded[0], &predicted, train[0].len());
//! let entities = train[0].text_entities(&tags);
//! assert_eq!((entities[0].start, entities[0].end), (5, 14));
//! assert_eq!(entities[0].text, "Für Elise");
//! # std::fs::remove_file(&path).ok();
//! # Ok::<(), mtl_data::Error>(())
//! ```

#![deny(missing_docs)]

mod batch;
mod chars;
mod encode;
mod error;
mod example;
mod json;
mod labels;
mod read;
mod tags;
mod text;
mod vocab;
mod words;

pub use batch::{Batch, BatchPlan, MultitaskBatcher, plan_batches};
pub use chars::{CHAR_PAD, CharSpec};
pub use encode::{
    ENCODER_FILE, EncodeReport, Encoded, Encoder, IGNORE_INDEX, LABELS_FILE, TAGS_FILE,
};
pub use error::{Error, Problem, Result};
pub use example::{Example, Source, Span, TextEntity};
pub use labels::LabelMap;
pub use read::{
    Format, NO_TAG, ReadOptions, ReadReport, Splits, parse_conll, parse_jsonl, read_examples,
    read_split, read_splits,
};
pub use tags::{EntitySpan, TagScheme, iob2_to_spans, spans_to_iob2, to_iob2};
pub use text::{TOKENIZER_FILE, TextEncoder, VOCAB_FILE, WordPieces};
pub use vocab::{WordVocab, WordVocabConfig};
pub use words::WordSplit;
