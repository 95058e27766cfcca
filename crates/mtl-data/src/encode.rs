//! Turning examples into model inputs and targets, and predictions back into words.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::chars::CharSpec;
use crate::error::{Error, Problem, Result};
use crate::example::Example;
use crate::labels::LabelMap;
use crate::text::{TOKENIZER_FILE, TextEncoder, VOCAB_FILE};
use crate::vocab::WordVocab;
use crate::words::WordSplit;

/// The target of a position or example that has no (known) annotation; losses skip it.
pub const IGNORE_INDEX: i64 = -100;

/// File names inside a saved encoder directory.
pub const LABELS_FILE: &str = "labels.json";
/// File name of the saved tag map.
pub const TAGS_FILE: &str = "tags.json";
/// File name of the saved encoder settings.
pub const ENCODER_FILE: &str = "encoder.json";

/// One encoded example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids, special tokens included, at most `max_seq_length`.
    pub ids: Vec<u32>,
    /// For each id, the index of its word in [`Example::words`]; `None` for special tokens.
    pub word_ids: Vec<Option<usize>>,
    /// The sentence label's index, or [`IGNORE_INDEX`] if the example has no label or a label
    /// training never saw.
    pub label_target: i64,
    /// Per token (same length as `ids`): the tag index on the first sub-token of each word,
    /// [`IGNORE_INDEX`] on other sub-tokens, special tokens, words with a tag training never
    /// saw, and everywhere if the example has no tags.
    pub tag_targets: Vec<i64>,
    /// Whether the example has a sentence label (known or not).
    pub has_label: bool,
    /// Whether the example has tags (known or not).
    pub has_tags: bool,
    /// Whether tokens were cut to fit `max_seq_length`.
    pub truncated: bool,
    /// Character ids, [`CharSpec::max_chars`] per token (those of the token's word; padding
    /// for special tokens), when the encoder has a [`CharSpec`]; empty otherwise.
    pub chars: Vec<u32>,
}

impl Encoded {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Counts from [`Encoder::encode_all`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EncodeReport {
    /// Examples cut to `max_seq_length`.
    pub truncated: usize,
    /// Examples whose sentence label training never saw.
    pub unknown_labels: usize,
    /// Words whose tag training never saw.
    pub unknown_tags: usize,
}

impl EncodeReport {
    /// Adds another report's counts.
    pub fn merge(&mut self, other: EncodeReport) {
        self.truncated += other.truncated;
        self.unknown_labels += other.unknown_labels;
        self.unknown_tags += other.unknown_tags;
    }
}

/// Which text encoder a saved encoder uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum TextKind {
    Word,
    HuggingFace,
}

/// The contents of `encoder.json`.
#[derive(Debug, Serialize, Deserialize)]
struct EncoderFile {
    max_seq_length: usize,
    text_encoder: TextKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chars: Option<CharSpec>,
    /// How raw text is split into words; absent in encoders saved before it was
    /// configurable, which split on whitespace.
    #[serde(default = "whitespace")]
    words: WordSplit,
}

/// The word splitting of encoders saved without one.
fn whitespace() -> WordSplit {
    WordSplit::Whitespace
}

/// Encodes examples for the multitask model: token ids, the sentence-label target and the
/// per-token tag targets, aligned to the first sub-token of each word.
#[derive(Debug, Clone)]
pub struct Encoder {
    /// The tokenizer.
    pub text: TextEncoder,
    /// Sentence labels.
    pub labels: LabelMap,
    /// IOB2 tags.
    pub tags: LabelMap,
    /// The most tokens an encoded example has (special tokens included); longer examples are
    /// truncated, keeping the tokenizer's trailing special tokens (such as `[SEP]`).
    pub max_seq_length: usize,
    /// Character ids for character-level word features; `None`: no character ids.
    pub chars: Option<CharSpec>,
    /// How raw text is split into words ([`Encoder::example`]), saved in `encoder.json` so
    /// that a model splits text at prediction time as its training data was split. New
    /// encoders split off punctuation ([`WordSplit::default`]); an `encoder.json` saved
    /// without the setting loads as [`WordSplit::Whitespace`], the rule it was trained with.
    pub words: WordSplit,
}

impl Encoder {
    /// An encoder with the given parts.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSetting`] if `max_seq_length` is 0.
    pub fn new(
        text: TextEncoder,
        labels: LabelMap,
        tags: LabelMap,
        max_seq_length: usize,
    ) -> Result<Self> {
        if max_seq_length == 0 {
            return Err(Error::InvalidSetting {
                name: "max_seq_length",
                value: "0".into(),
                expected: "at least 1",
            });
        }
        Ok(Self {
            text,
            labels,
            tags,
            max_seq_length,
            chars: None,
            words: WordSplit::default(),
        })
    }

    /// The same encoder, splitting raw text into words by `words`.
    pub fn with_words(mut self, words: WordSplit) -> Self {
        self.words = words;
        self
    }

    /// An unannotated example of raw `text`, split into words as this encoder's training data
    /// was ([`Encoder::words`]).
    ///
    /// ```
    /// use mtl_data::{Encoder, Example, LabelMap, TextEncoder, WordSplit, WordVocab, WordVocabConfig};
    /// let vocab = WordVocab::build(&[], &WordVocabConfig::default());
    /// let encoder = Encoder::new(TextEncoder::Word(vocab), LabelMap::default(), LabelMap::default(), 16)?;
    /// assert_eq!(encoder.example("Kindle, please").words, ["Kindle", ",", "please"]);
    /// let old = encoder.with_words(WordSplit::Whitespace);
    /// assert_eq!(old.example("Kindle, please").words, ["Kindle,", "please"]);
    /// # Ok::<(), mtl_data::Error>(())
    /// ```
    pub fn example(&self, text: &str) -> Example {
        Example::from_text_with(text, self.words)
    }

    /// The same encoder, giving every token the character ids of its word as `spec` says
    /// (`None`: no character ids).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSetting`] if `spec` is invalid (see [`CharSpec::validate`]).
    pub fn with_chars(mut self, spec: Option<CharSpec>) -> Result<Self> {
        if let Some(spec) = &spec {
            spec.validate()?;
        }
        self.chars = spec;
        Ok(self)
    }

    /// An encoder whose label and tag maps are built from training examples (see
    /// [`LabelMap::build`]); `"O"` is always in the tag map when any example has tags.
    ///
    /// # Errors
    ///
    /// As [`Encoder::new`].
    pub fn build(train: &[Example], text: TextEncoder, max_seq_length: usize) -> Result<Self> {
        let labels = LabelMap::build(train.iter().filter_map(|e| e.label.as_deref()));
        let tagged = train.iter().filter_map(|e| e.tags.as_deref());
        let outside = train.iter().any(|e| e.tags.is_some()).then_some("O");
        let tags = LabelMap::build(tagged.flatten().map(String::as_str).chain(outside));
        Self::new(text, labels, tags, max_seq_length)
    }

    /// Encodes one example. Also returns whether its label is unknown and how many of its
    /// tags are unknown.
    ///
    /// # Errors
    ///
    /// [`Error::Example`] if the example has no words or not one tag per word (naming its
    /// source when it has one, as [`Error::Data`]); [`Error::Tokenizer`] if the tokenizer
    /// fails; [`Error::InvalidSetting`] if `max_seq_length` is 0.
    pub fn encode(&self, ex: &Example) -> Result<(Encoded, bool, usize)> {
        let fail = |problem: Problem| match &ex.source {
            Some(source) => Error::Data {
                file: source.file.clone(),
                line: source.line,
                problem,
            },
            None => Error::Example(problem),
        };
        if ex.words.is_empty() {
            return Err(fail(Problem::EmptySentence));
        }
        if let Some(tags) = &ex.tags
            && tags.len() != ex.words.len()
        {
            return Err(fail(Problem::TagCountMismatch {
                words: ex.words.len(),
                tags: tags.len(),
            }));
        }
        if self.max_seq_length == 0 {
            return Err(Error::InvalidSetting {
                name: "max_seq_length",
                value: "0".into(),
                expected: "at least 1",
            });
        }
        let pieces = self.text.encode_words(&ex.words)?;
        let (ids, word_ids, truncated) = self.truncate(pieces.ids, pieces.word_ids);

        let (label_target, unknown_label) = match ex.label.as_deref() {
            Some(label) => match self.labels.get(label) {
                Some(index) => (index as i64, false),
                None => (IGNORE_INDEX, true),
            },
            None => (IGNORE_INDEX, false),
        };

        let mut tag_targets = vec![IGNORE_INDEX; ids.len()];
        let mut unknown_tags = 0;
        if let Some(tags) = &ex.tags {
            let known: Vec<Option<usize>> = tags.iter().map(|t| self.tags.get(t)).collect();
            unknown_tags = known.iter().filter(|k| k.is_none()).count();
            let mut seen = vec![false; tags.len()];
            for (target, word) in tag_targets.iter_mut().zip(&word_ids) {
                if let Some(w) = *word
                    && let Some(first) = seen.get_mut(w)
                    && !*first
                {
                    *first = true;
                    *target = known[w].map_or(IGNORE_INDEX, |k| k as i64);
                }
            }
        }
        let mut chars = Vec::new();
        if let Some(spec) = &self.chars {
            chars.reserve(word_ids.len() * spec.max_chars);
            for word in &word_ids {
                match word.and_then(|w| ex.words.get(w)) {
                    Some(word) => spec.push_word(word, &mut chars),
                    None => spec.push_none(&mut chars),
                }
            }
        }
        let encoded = Encoded {
            ids,
            word_ids,
            label_target,
            tag_targets,
            has_label: ex.label.is_some(),
            has_tags: ex.tags.is_some(),
            truncated,
            chars,
        };
        Ok((encoded, unknown_label, unknown_tags))
    }

    /// Cuts a sequence to `max_seq_length`, keeping its trailing special tokens when there is
    /// room for at least one other token.
    fn truncate(
        &self,
        mut ids: Vec<u32>,
        mut word_ids: Vec<Option<usize>>,
    ) -> (Vec<u32>, Vec<Option<usize>>, bool) {
        let max = self.max_seq_length;
        let n = ids.len();
        if n <= max {
            return (ids, word_ids, false);
        }
        let tail = word_ids.iter().rev().take_while(|w| w.is_none()).count();
        let tail = if tail < max { tail } else { 0 };
        let keep = max - tail;
        ids.drain(keep..n - tail);
        word_ids.drain(keep..n - tail);
        (ids, word_ids, true)
    }

    /// Encodes examples, counting truncations and unknown labels and tags.
    ///
    /// # Errors
    ///
    /// As [`Encoder::encode`], for the first example that fails.
    pub fn encode_all(&self, exs: &[Example]) -> Result<(Vec<Encoded>, EncodeReport)> {
        let mut report = EncodeReport::default();
        let mut out = Vec::with_capacity(exs.len());
        for ex in exs {
            let (encoded, unknown_label, unknown_tags) = self.encode(ex)?;
            report.truncated += usize::from(encoded.truncated);
            report.unknown_labels += usize::from(unknown_label);
            report.unknown_tags += unknown_tags;
            out.push(encoded);
        }
        Ok((out, report))
    }

    /// Maps per-token tag predictions back to words: each word gets the prediction of its
    /// first sub-token. Words without a sub-token (cut by truncation) get `None`.
    ///
    /// `token_tag_ids` holds one predicted tag index per token of `enc` (extra entries, such
    /// as predictions on padding, are ignored).
    pub fn word_predictions(
        &self,
        enc: &Encoded,
        token_tag_ids: &[usize],
        n_words: usize,
    ) -> Vec<Option<usize>> {
        let mut out = vec![None; n_words];
        for (word, &tag) in enc.word_ids.iter().zip(token_tag_ids) {
            if let Some(w) = *word
                && let Some(slot) = out.get_mut(w)
                && slot.is_none()
            {
                *slot = Some(tag);
            }
        }
        out
    }

    /// As [`Encoder::word_predictions`], with tag names; words cut by truncation and unknown
    /// indices read `"O"`. The result can be given to [`Example::text_entities`].
    pub fn word_tags(&self, enc: &Encoded, token_tag_ids: &[usize], n_words: usize) -> Vec<String> {
        self.word_predictions(enc, token_tag_ids, n_words)
            .into_iter()
            .map(|p| {
                p.and_then(|id| self.tags.name(id))
                    .unwrap_or("O")
                    .to_owned()
            })
            .collect()
    }

    /// Saves to `dir` (created if needed): `labels.json`, `tags.json`, `vocab.json` or
    /// `tokenizer.json`, and `encoder.json` holding `max_seq_length` and the [`CharSpec`].
    ///
    /// # Errors
    ///
    /// [`Error::Io`], [`Error::Json`] or [`Error::Tokenizer`] naming the file.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.text.save(dir)?;
        self.labels.save(&dir.join(LABELS_FILE))?;
        self.tags.save(&dir.join(TAGS_FILE))?;
        let text_encoder = match self.text {
            TextEncoder::Word(_) => TextKind::Word,
            TextEncoder::HuggingFace(_) => TextKind::HuggingFace,
        };
        let file = EncoderFile {
            max_seq_length: self.max_seq_length,
            text_encoder,
            chars: self.chars,
            words: self.words,
        };
        crate::json::write(&dir.join(ENCODER_FILE), &file)
    }

    /// Loads what [`Encoder::save`] wrote.
    ///
    /// # Errors
    ///
    /// [`Error::Io`], [`Error::Json`] or [`Error::Tokenizer`] naming the file;
    /// [`Error::InvalidSetting`] if `max_seq_length` is 0.
    pub fn load(dir: &Path) -> Result<Self> {
        let file: EncoderFile = crate::json::read(&dir.join(ENCODER_FILE))?;
        let text = match file.text_encoder {
            TextKind::Word => TextEncoder::Word(WordVocab::load(&dir.join(VOCAB_FILE))?),
            TextKind::HuggingFace => TextEncoder::from_tokenizer_file(&dir.join(TOKENIZER_FILE))?,
        };
        let labels = LabelMap::load(&dir.join(LABELS_FILE))?;
        let tags = LabelMap::load(&dir.join(TAGS_FILE))?;
        Ok(Self::new(text, labels, tags, file.max_seq_length)?
            .with_chars(file.chars)?
            .with_words(file.words))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::test_util::TempDir;
    use crate::text::test_tokenizer::{WORDS, wordpiece};
    use crate::vocab::WordVocabConfig;
    use proptest::prelude::*;

    fn strings(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|x| (*x).to_owned()).collect()
    }

    fn train() -> Result<Vec<Example>> {
        Ok(vec![
            Example::from_words(
                strings(&["play", "new", "york"]),
                Some("PlayMusic".into()),
                Some(strings(&["O", "B-city", "I-city"])),
            )?,
            Example::from_words(strings(&["hello"]), Some("Greet".into()), None)?,
        ])
    }

    fn hf_encoder(max: usize) -> Result<Encoder> {
        Encoder::build(&train()?, TextEncoder::from_tokenizer(wordpiece()), max)
    }

    #[test]
    fn builds_maps_from_training_data() -> Result<()> {
        let enc = hf_encoder(16)?;
        assert_eq!(enc.labels.names(), ["Greet", "PlayMusic"]);
        assert_eq!(enc.tags.names(), ["O", "B-city", "I-city"]);
        assert!(matches!(
            Encoder::new(
                TextEncoder::from_tokenizer(wordpiece()),
                LabelMap::default(),
                LabelMap::default(),
                0
            ),
            Err(Error::InvalidSetting {
                name: "max_seq_length",
                ..
            })
        ));
        Ok(())
    }

    #[test]
    fn first_sub_token_carries_the_tag() -> Result<()> {
        let enc = hf_encoder(16)?;
        let ex = Example::from_words(
            strings(&["Playing", "newyork", "York"]),
            Some("PlayMusic".into()),
            Some(strings(&["B-city", "I-city", "B-person"])),
        )?;
        let (e, unknown_label, unknown_tags) = enc.encode(&ex)?;
        // [CLS] play ##ing new ##y ##o ##r ##k york [SEP]
        assert_eq!(
            e.word_ids,
            [
                None,
                Some(0),
                Some(0),
                Some(1),
                Some(1),
                Some(1),
                Some(1),
                Some(1),
                Some(2),
                None
            ]
        );
        assert_eq!(
            e.tag_targets,
            [-100, 1, -100, 2, -100, -100, -100, -100, -100, -100]
        );
        assert_eq!(e.label_target, 1);
        assert!(!unknown_label);
        assert_eq!(unknown_tags, 1);
        assert!(e.has_label && e.has_tags && !e.truncated);

        let unlabeled = Example::from_text("play");
        let (e, unknown_label, unknown_tags) = enc.encode(&unlabeled)?;
        assert_eq!(
            (e.label_target, e.has_label, e.has_tags),
            (IGNORE_INDEX, false, false)
        );
        assert!(e.tag_targets.iter().all(|&t| t == IGNORE_INDEX));
        assert_eq!((unknown_label, unknown_tags), (false, 0));

        let mut other = Example::from_text("play");
        other.label = Some("Unseen".into());
        let (e, unknown_label, _) = enc.encode(&other)?;
        assert_eq!(
            (e.label_target, e.has_label, unknown_label),
            (IGNORE_INDEX, true, true)
        );
        Ok(())
    }

    #[test]
    fn truncation_keeps_sep_and_is_counted() -> Result<()> {
        let enc = hf_encoder(5)?;
        let ex = Example::from_words(
            strings(&["play", "the", "music", "new", "york"]),
            None,
            Some(strings(&["O", "O", "O", "B-city", "I-city"])),
        )?;
        let (encoded, report) = enc.encode_all(&[ex.clone(), Example::from_text("play")])?;
        let e = &encoded[0];
        assert_eq!(e.ids.len(), 5);
        assert_eq!(e.word_ids, [None, Some(0), Some(1), Some(2), None]);
        assert_eq!(e.ids.last(), enc.text.encode_words(&ex.words)?.ids.last());
        assert!(e.truncated && !encoded[1].truncated);
        assert_eq!(
            report,
            EncodeReport {
                truncated: 1,
                unknown_labels: 0,
                unknown_tags: 0
            }
        );
        let predictions: Vec<usize> = (0..e.ids.len()).collect();
        assert_eq!(
            enc.word_predictions(e, &predictions, 5),
            [Some(1), Some(2), Some(3), None, None]
        );
        assert_eq!(
            enc.word_tags(e, &[0, 0, 0, 1, 0], 5),
            ["O", "O", "B-city", "O", "O"]
        );

        // No room for [SEP] beside a word: plain cut.
        let tiny = hf_encoder(1)?;
        let (e, _, _) = tiny.encode(&ex)?;
        assert_eq!(e.word_ids, [None]);
        Ok(())
    }

    #[test]
    fn bad_examples_are_errors() -> Result<()> {
        let enc = hf_encoder(8)?;
        let mut ex = Example::from_text("a b");
        ex.tags = Some(strings(&["O"]));
        assert!(matches!(
            enc.encode(&ex),
            Err(Error::Example(Problem::TagCountMismatch {
                words: 2,
                tags: 1
            }))
        ));
        ex.source = Some(crate::Source {
            file: "f.conll".into(),
            line: 7,
        });
        let err = enc.encode(&ex).map(|_| ()).expect_err("mismatch");
        assert!(err.to_string().starts_with("f.conll:7:"), "{err}");
        assert!(matches!(
            enc.encode(&Example::from_text(" ")),
            Err(Error::Example(Problem::EmptySentence))
        ));
        Ok(())
    }

    #[test]
    fn every_sub_token_gets_its_words_characters() -> Result<()> {
        let spec = CharSpec {
            max_chars: 4,
            buckets: 256,
        };
        let enc = hf_encoder(16)?.with_chars(Some(spec))?;
        let ex = Example::from_words(strings(&["Playing", "ab"]), None, None)?;
        let (e, _, _) = enc.encode(&ex)?;
        // [CLS] play ##ing ab [SEP] (the test vocabulary has no "ab": [UNK])
        let word = |w: &str| {
            let mut v = Vec::new();
            spec.push_word(w, &mut v);
            v
        };
        let none = vec![0; 4];
        let expected: Vec<Vec<u32>> = e
            .word_ids
            .iter()
            .map(|w| match w {
                Some(0) => word("Playing"),
                Some(1) => word("ab"),
                _ => none.clone(),
            })
            .collect();
        assert_eq!(e.chars, expected.concat());
        assert_eq!(e.chars.len(), e.ids.len() * 4);
        // "Playing" is longer than 4: "Pl" + "ng".
        assert_eq!(word("Playing")[..2], word("Pl")[..2]);
        assert_eq!(word("Playing")[2..], word("ng")[..2]);
        assert!(hf_encoder(16)?.encode(&ex)?.0.chars.is_empty());
        assert!(
            hf_encoder(16)?
                .with_chars(Some(CharSpec {
                    max_chars: 0,
                    buckets: 9
                }))
                .is_err()
        );
        Ok(())
    }

    #[test]
    fn save_and_load_both_kinds() -> Result<()> {
        let tmp = TempDir::new("encoder");
        let ex = Example::from_text("play new york");
        for (name, text) in [
            ("hf", TextEncoder::from_tokenizer(wordpiece())),
            (
                "word",
                TextEncoder::Word(WordVocab::build(&train()?, &WordVocabConfig::default())),
            ),
        ] {
            let enc = Encoder::build(&train()?, text.clone(), 7)?;
            let dir = tmp.0.join(name);
            enc.save(&dir)?;
            let back = Encoder::load(&dir)?;
            assert_eq!(back.chars, None);
            let with_chars =
                Encoder::build(&train()?, text, 7)?.with_chars(Some(CharSpec::default()))?;
            with_chars.save(&tmp.0.join(format!("{name}-chars")))?;
            let back_chars = Encoder::load(&tmp.0.join(format!("{name}-chars")))?;
            assert_eq!(back_chars.chars, Some(CharSpec::default()));
            assert_eq!(back_chars.encode(&ex)?.0, with_chars.encode(&ex)?.0);
            assert_eq!(back.labels, enc.labels);
            assert_eq!(back.tags, enc.tags);
            assert_eq!(back.max_seq_length, 7);
            assert_eq!(back.encode(&ex)?.0, enc.encode(&ex)?.0);
            assert_eq!(back.text.vocab_size(), enc.text.vocab_size());
        }
        let missing = tmp.0.join("nothing");
        assert!(
            matches!(Encoder::load(&missing), Err(Error::Io { path, .. }) if path.ends_with(ENCODER_FILE))
        );
        Ok(())
    }

    #[test]
    fn word_splitting_is_saved_and_old_encoders_split_on_whitespace() -> Result<()> {
        let tmp = TempDir::new("encoder-words");
        let vocab = WordVocab::build(&train()?, &WordVocabConfig::default());
        let enc = Encoder::build(&train()?, TextEncoder::Word(vocab), 8)?;
        assert_eq!(enc.words, WordSplit::Punctuation);
        enc.save(&tmp.0)?;
        let saved: serde_json::Value = crate::json::read(&tmp.0.join(ENCODER_FILE))?;
        assert_eq!(saved["words"], "punctuation");
        assert_eq!(Encoder::load(&tmp.0)?.words, WordSplit::Punctuation);
        assert_eq!(
            Encoder::load(&tmp.0)?.example("play, york!").words,
            ["play", ",", "york", "!"]
        );
        // An encoder.json written before the setting existed.
        let mut old = saved;
        old.as_object_mut().map(|o| o.remove("words"));
        crate::json::write(&tmp.0.join(ENCODER_FILE), &old)?;
        let loaded = Encoder::load(&tmp.0)?;
        assert_eq!(loaded.words, WordSplit::Whitespace);
        assert_eq!(loaded.example("play, york!").words, ["play,", "york!"]);
        Ok(())
    }

    fn arb_sentence() -> impl Strategy<Value = (Vec<String>, Vec<String>)> {
        let word = prop_oneof![
            proptest::sample::select(WORDS.to_vec()).prop_map(str::to_owned),
            proptest::string::string_regex("[a-zA-Z0-9éÉ]{1,6}").expect("regex"),
            proptest::string::string_regex("[a-z]{1,3}[,.!?][a-z]{0,2}").expect("regex"),
        ];
        let tag =
            proptest::sample::select(vec!["O", "B-city", "I-city", "B-x"]).prop_map(str::to_owned);
        proptest::collection::vec((word, tag), 1..12).prop_map(|pairs| pairs.into_iter().unzip())
    }

    proptest! {
        #[test]
        fn alignment_round_trips((words, tags) in arb_sentence(), max in 3usize..40) {
            let enc = Encoder::new(
                TextEncoder::from_tokenizer(wordpiece()),
                LabelMap::default(),
                LabelMap::build(["O", "B-city", "I-city", "B-x"]),
                max,
            ).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let ex = Example::from_words(words.clone(), None, Some(tags.clone()))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let (e, _, unknown) = enc.encode(&ex).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(unknown, 0);
            prop_assert!(e.ids.len() <= max);
            prop_assert_eq!(e.tag_targets.len(), e.ids.len());
            // Tag targets read back as per-token predictions give every kept word its tag.
            let predicted: Vec<usize> = e.tag_targets.iter().map(|&t| t.max(0) as usize).collect();
            let back = enc.word_predictions(&e, &predicted, words.len());
            for (w, got) in back.iter().enumerate() {
                let kept = e.word_ids.contains(&Some(w));
                prop_assert_eq!(got.is_some(), kept);
                if let Some(id) = got {
                    prop_assert_eq!(enc.tags.name(*id), Some(tags[w].as_str()));
                    // The word's first sub-token maps back to exactly its characters.
                    let (a, b) = ex.char_span(w, w + 1);
                    let text: String = ex.text.chars().skip(a).take(b - a).collect();
                    prop_assert_eq!(&text, &words[w]);
                }
            }
            // Kept words are a prefix: truncation cuts from the end.
            let kept = back.iter().take_while(|p| p.is_some()).count();
            prop_assert!(back[kept..].iter().all(Option::is_none));
            let full = enc.text.encode_words(&words).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(e.truncated, full.ids.len() > max);
            if !e.truncated {
                prop_assert_eq!(kept, words.len());
                prop_assert_eq!(e.ids.first(), Some(&2));
                prop_assert_eq!(e.ids.last(), Some(&3));
            }
        }
    }
}
