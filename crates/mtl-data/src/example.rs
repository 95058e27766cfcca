//! Examples: text, words with offsets, and optional annotations.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Problem, Result};
use crate::tags::{EntitySpan, TagScheme, check_tag, iob2_to_spans};
use crate::words::WordSplit;

/// A byte range `start..end` of [`Example::text`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

/// Where an example was read from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Source {
    /// The data file (for JointBERT, the split's `seq.in`).
    pub file: PathBuf,
    /// The 1-based line where the example starts.
    pub line: usize,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One sentence: its text, its words, and what is known about it.
///
/// An example may carry a sentence label, a tag per word, both or neither; `None` means "not
/// annotated", never "negative". `words[i]` is `text[spans[i].start..spans[i].end]` for examples
/// made by this crate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    /// The sentence text.
    pub text: String,
    /// The words (tokens) of the sentence.
    pub words: Vec<String>,
    /// Byte offsets of each word in `text`.
    pub spans: Vec<Span>,
    /// The sentence label, if annotated.
    pub label: Option<String>,
    /// One IOB2 tag per word, if annotated.
    pub tags: Option<Vec<String>>,
    /// Where the example was read from, if it was read from a file.
    pub source: Option<Source>,
}

/// An entity located in the original text, in characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TextEntity {
    /// Character (Unicode scalar value) offset of the first character.
    pub start: usize,
    /// Character offset one past the last character.
    pub end: usize,
    /// The entity type.
    pub label: String,
    /// The covered text.
    pub text: String,
}

/// Splits `text` on Unicode whitespace, keeping byte offsets (already word-split input:
/// JointBERT lines).
pub(crate) fn split_words(text: &str) -> (Vec<String>, Vec<Span>) {
    WordSplit::Whitespace.split(text)
}

impl Example {
    /// Builds an example from words; `text` is the words joined by single spaces.
    ///
    /// # Errors
    ///
    /// [`Error::Example`] if a word is empty, the label is blank, `tags` does not have one tag
    /// per word, or a tag is not IOB2 (`O`, `B-X`, `I-X`).
    pub fn from_words(
        words: Vec<String>,
        label: Option<String>,
        tags: Option<Vec<String>>,
    ) -> Result<Example> {
        Self::check_parts(&words, label.as_deref(), tags.as_deref()).map_err(Error::Example)?;
        Ok(Self::joined(words, label, tags))
    }

    /// Checks the parts of an example (shared with the readers).
    pub(crate) fn check_parts(
        words: &[String],
        label: Option<&str>,
        tags: Option<&[String]>,
    ) -> std::result::Result<(), Problem> {
        if let Some(index) = words.iter().position(String::is_empty) {
            return Err(Problem::EmptyToken { index });
        }
        if label.is_some_and(|l| l.trim().is_empty()) {
            return Err(Problem::EmptyLabel);
        }
        if let Some(tags) = tags {
            if tags.len() != words.len() {
                return Err(Problem::TagCountMismatch {
                    words: words.len(),
                    tags: tags.len(),
                });
            }
            for tag in tags {
                check_tag(tag, TagScheme::Iob2)?;
            }
        }
        Ok(())
    }

    /// Joins checked words with spaces.
    pub(crate) fn joined(
        words: Vec<String>,
        label: Option<String>,
        tags: Option<Vec<String>>,
    ) -> Example {
        let mut text = String::with_capacity(words.iter().map(|w| w.len() + 1).sum());
        let mut spans = Vec::with_capacity(words.len());
        for word in &words {
            if !text.is_empty() {
                text.push(' ');
            }
            let start = text.len();
            text.push_str(word);
            spans.push(Span {
                start,
                end: text.len(),
            });
        }
        Example {
            text,
            words,
            spans,
            label,
            tags,
            source: None,
        }
    }

    /// Builds an unannotated example from raw text, split into words on Unicode whitespace
    /// (as Python's `str.split()` does); `text` is kept as given, with the words' offsets.
    ///
    /// ```
    /// let ex = mtl_data::Example::from_text("  play  Für Elise ");
    /// assert_eq!(ex.words, ["play", "Für", "Elise"]);
    /// assert_eq!(ex.char_span(1, 3), (8, 17));
    /// ```
    pub fn from_text(text: &str) -> Example {
        Self::from_text_with(text, WordSplit::Whitespace)
    }

    /// Builds an unannotated example from raw text, split into words by `split`; `text` is
    /// kept as given, with the words' offsets. This is how `mtl predict` reads a text, with the
    /// rule saved in the model's encoder ([`crate::Encoder::words`]).
    ///
    /// ```
    /// use mtl_data::{Example, WordSplit};
    /// let ex = Example::from_text_with("Where is A91362?", WordSplit::Punctuation);
    /// assert_eq!(ex.words, ["Where", "is", "A91362", "?"]);
    /// assert_eq!(ex.char_span(2, 3), (9, 15));
    /// ```
    pub fn from_text_with(text: &str, split: WordSplit) -> Example {
        let (words, spans) = split.split(text);
        Example {
            text: text.to_owned(),
            words,
            spans,
            label: None,
            tags: None,
            source: None,
        }
    }

    /// Character (Unicode scalar value) offsets `(start, end)` in `text` of the words
    /// `words[word_start..word_end_exclusive]`.
    ///
    /// Indices past the last word are clamped; an empty word range gives an empty span where
    /// the range would start.
    pub fn char_span(&self, word_start: usize, word_end_exclusive: usize) -> (usize, usize) {
        let n = self.spans.len();
        let end_word = word_end_exclusive.min(n);
        let start_word = word_start.min(end_word);
        let start_byte = self
            .spans
            .get(start_word)
            .map_or(self.text.len(), |s| s.start);
        let end_byte = if end_word > start_word {
            self.spans[end_word - 1].end
        } else {
            start_byte
        };
        let start = self.char_offset(start_byte);
        let end = start + self.char_count(start_byte, end_byte);
        (start, end)
    }

    /// Number of characters before byte `byte` (robust to offsets inside a character).
    fn char_offset(&self, byte: usize) -> usize {
        self.char_count(0, byte)
    }

    /// Number of characters starting in `from..to`.
    fn char_count(&self, from: usize, to: usize) -> usize {
        self.text
            .char_indices()
            .skip_while(|(i, _)| *i < from)
            .take_while(|(i, _)| *i < to)
            .count()
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether the example has no words.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The annotated entities (from [`Example::tags`]), or `None` if the example has no tags.
    pub fn entities(&self) -> Option<Vec<EntitySpan>> {
        self.tags.as_deref().map(iob2_to_spans)
    }

    /// Locates the entities of an IOB2 sequence (for instance predicted tags, one per word) in
    /// the original text, in characters.
    ///
    /// ```
    /// let ex = mtl_data::Example::from_text("play Für Elise by beethoven");
    /// let tags = ["O", "B-track", "I-track", "O", "B-artist"];
    /// let found = ex.text_entities(&tags);
    /// assert_eq!((found[0].start, found[0].end, found[0].text.as_str()), (5, 14, "Für Elise"));
    /// assert_eq!(found[1].label, "artist");
    /// ```
    pub fn text_entities<S: AsRef<str>>(&self, tags: &[S]) -> Vec<TextEntity> {
        iob2_to_spans(tags)
            .into_iter()
            .map(|span| {
                let (start, end) = self.char_span(span.start, span.end);
                let text = self.text.chars().skip(start).take(end - start).collect();
                TextEntity {
                    start,
                    end,
                    label: span.label,
                    text,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn words(ws: &[&str]) -> Vec<String> {
        ws.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn from_words_joins_and_checks() -> Result<()> {
        let ex = Example::from_words(
            words(&["add", "Björk"]),
            Some("AddToPlaylist".into()),
            Some(words(&["O", "B-artist"])),
        )?;
        assert_eq!(ex.text, "add Björk");
        assert_eq!(
            ex.spans,
            [Span { start: 0, end: 3 }, Span { start: 4, end: 10 }]
        );
        assert_eq!(ex.char_span(1, 2), (4, 9));
        assert!(matches!(
            Example::from_words(words(&["a"]), None, Some(words(&["O", "O"]))),
            Err(Error::Example(Problem::TagCountMismatch {
                words: 1,
                tags: 2
            }))
        ));
        assert!(matches!(
            Example::from_words(words(&["a", ""]), None, None),
            Err(Error::Example(Problem::EmptyToken { index: 1 }))
        ));
        assert!(matches!(
            Example::from_words(words(&["a"]), Some(" ".into()), None),
            Err(Error::Example(Problem::EmptyLabel))
        ));
        assert!(matches!(
            Example::from_words(words(&["a"]), None, Some(words(&["S-x"]))),
            Err(Error::Example(Problem::InvalidTag { .. }))
        ));
        Ok(())
    }

    #[test]
    fn char_span_clamps() {
        let ex = Example::from_text("日本 語");
        assert_eq!(ex.char_span(0, 1), (0, 2));
        assert_eq!(ex.char_span(1, 9), (3, 4));
        assert_eq!(ex.char_span(5, 2), (4, 4));
        assert_eq!(Example::from_text("").char_span(0, 1), (0, 0));
    }

    #[test]
    fn text_entities_and_entities() -> Result<()> {
        let ex = Example::from_words(
            words(&["to", "new", "york"]),
            None,
            Some(words(&["O", "B-city", "I-city"])),
        )?;
        assert_eq!(
            ex.entities(),
            Some(vec![EntitySpan {
                start: 1,
                end: 3,
                label: "city".into()
            }])
        );
        let found = ex.text_entities(ex.tags.as_deref().unwrap_or_default());
        assert_eq!(found[0].text, "new york");
        Ok(())
    }

    proptest! {
        #[test]
        fn from_text_offsets_match_python_split(text in "[ a\u{e9}\u{65e5}\t\u{3000}\n]{0,24}") {
            let ex = Example::from_text(&text);
            let expected: Vec<&str> = text.split_whitespace().collect();
            prop_assert_eq!(&ex.words, &expected);
            for (i, (w, s)) in ex.words.iter().zip(&ex.spans).enumerate() {
                prop_assert_eq!(&text[s.start..s.end], w.as_str());
                let (a, b) = ex.char_span(i, i + 1);
                let chars: String = text.chars().skip(a).take(b - a).collect();
                prop_assert_eq!(&chars, w);
            }
        }
    }
}
