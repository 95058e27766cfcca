//! A word-level vocabulary built from training data.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::example::Example;

/// How to build a [`WordVocab`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WordVocabConfig {
    /// Lower-case words before counting and looking them up.
    pub lowercase: bool,
    /// Keep words seen at least this often in training.
    pub min_freq: usize,
    /// Keep at most this many entries, counting `[PAD]` and `[UNK]` (the most frequent words
    /// win; ties go to the alphabetically first). Values below 2 keep only the two specials.
    pub max_size: Option<usize>,
}

impl Default for WordVocabConfig {
    fn default() -> Self {
        Self {
            lowercase: true,
            min_freq: 1,
            max_size: None,
        }
    }
}

/// A word-level tokenizer: each word is one token; unknown words are `[UNK]`.
///
/// Ids: `[PAD]` = [`WordVocab::PAD_ID`] = 0, `[UNK]` = [`WordVocab::UNK_ID`] = 1, then the
/// training words by decreasing frequency. A literal `[PAD]` or `[UNK]` in the data is an
/// ordinary (unknown) word, never mapped to the special ids.
///
/// Serialized as `{"lowercase": .., "min_freq": .., "max_size": .., "tokens": [...]}` with
/// `tokens[id]` the token of each id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WordVocabFile", into = "WordVocabFile")]
pub struct WordVocab {
    config: WordVocabConfig,
    tokens: Vec<String>,
    index: HashMap<String, u32>,
}

/// The serialized form of a [`WordVocab`].
#[derive(Serialize, Deserialize)]
struct WordVocabFile {
    #[serde(flatten)]
    config: WordVocabConfig,
    tokens: Vec<String>,
}

impl From<WordVocab> for WordVocabFile {
    fn from(vocab: WordVocab) -> Self {
        Self {
            config: vocab.config,
            tokens: vocab.tokens,
        }
    }
}

impl TryFrom<WordVocabFile> for WordVocab {
    type Error = Error;

    fn try_from(file: WordVocabFile) -> Result<Self> {
        let specials_ok = file
            .tokens
            .get(..2)
            .is_some_and(|s| s[0] == WordVocab::PAD_TOKEN && s[1] == WordVocab::UNK_TOKEN);
        if !specials_ok {
            return Err(Error::InvalidSetting {
                name: "vocabulary tokens",
                value: format!("{:?}", file.tokens.get(..2)),
                expected: "[\"[PAD]\", \"[UNK]\", ...]",
            });
        }
        let vocab = WordVocab::from_parts(file.config, file.tokens);
        if vocab.index.len() + 2 != vocab.tokens.len() {
            return Err(Error::InvalidSetting {
                name: "vocabulary tokens",
                value: "a repeated token".into(),
                expected: "distinct tokens",
            });
        }
        Ok(vocab)
    }
}

impl WordVocab {
    /// Id of the padding token.
    pub const PAD_ID: u32 = 0;
    /// Id of the unknown-word token.
    pub const UNK_ID: u32 = 1;
    /// The padding token.
    pub const PAD_TOKEN: &'static str = "[PAD]";
    /// The unknown-word token.
    pub const UNK_TOKEN: &'static str = "[UNK]";

    /// Counts the words of `examples` and keeps those `config` allows.
    ///
    /// ```
    /// use mtl_data::{Example, WordVocab, WordVocabConfig};
    /// let train = [Example::from_text("Play it"), Example::from_text("play that")];
    /// let vocab = WordVocab::build(&train, &WordVocabConfig { min_freq: 2, ..Default::default() });
    /// assert_eq!(vocab.len(), 3);
    /// assert_eq!(vocab.id("PLAY"), 2);
    /// assert_eq!(vocab.id("it"), WordVocab::UNK_ID);
    /// ```
    pub fn build<'a>(
        examples: impl IntoIterator<Item = &'a Example>,
        config: &WordVocabConfig,
    ) -> Self {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for example in examples {
            for word in &example.words {
                let key = Self::normalize(config, word);
                if let Some(count) = counts.get_mut(key.as_str()) {
                    *count += 1;
                } else {
                    counts.insert(key, 1);
                }
            }
        }
        let mut words: Vec<(String, usize)> = counts
            .into_iter()
            .filter(|(_, count)| *count >= config.min_freq)
            .collect();
        words.sort_unstable_by(|(a, ca), (b, cb)| cb.cmp(ca).then_with(|| a.cmp(b)));
        let room = config.max_size.map_or(usize::MAX, |m| m.saturating_sub(2));
        let tokens = [Self::PAD_TOKEN.to_owned(), Self::UNK_TOKEN.to_owned()]
            .into_iter()
            .chain(words.into_iter().take(room).map(|(w, _)| w))
            .collect();
        Self::from_parts(*config, tokens)
    }

    fn from_parts(config: WordVocabConfig, tokens: Vec<String>) -> Self {
        let index = tokens
            .iter()
            .enumerate()
            .skip(2)
            .filter_map(|(i, t)| Some((t.clone(), u32::try_from(i).ok()?)))
            .collect();
        Self {
            config,
            tokens,
            index,
        }
    }

    fn normalize(config: &WordVocabConfig, word: &str) -> String {
        if config.lowercase {
            word.to_lowercase()
        } else {
            word.to_owned()
        }
    }

    /// The id of `word` ([`WordVocab::UNK_ID`] if unknown).
    pub fn id(&self, word: &str) -> u32 {
        let found = if self.config.lowercase {
            self.index.get(word.to_lowercase().as_str())
        } else {
            self.index.get(word)
        };
        found.copied().unwrap_or(Self::UNK_ID)
    }

    /// The token of `id`.
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// Number of ids, specials included.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Always `false`: the specials are always there.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The settings the vocabulary was built with.
    pub fn config(&self) -> &WordVocabConfig {
        &self.config
    }

    /// Writes the vocabulary as JSON.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file cannot be written.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::json::write(path, self)
    }

    /// Reads a vocabulary written by [`WordVocab::save`].
    ///
    /// # Errors
    ///
    /// [`Error::Io`] or [`Error::Json`] naming the file.
    pub fn load(path: &Path) -> Result<Self> {
        crate::json::read(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples() -> Vec<Example> {
        ["The cat the dog", "the Dog", "[PAD] bird"]
            .into_iter()
            .map(Example::from_text)
            .collect()
    }

    #[test]
    fn frequency_order_and_limits() {
        let vocab = WordVocab::build(&examples(), &WordVocabConfig::default());
        assert_eq!(vocab.token(2), Some("the"));
        assert_eq!(vocab.token(3), Some("dog"));
        assert_eq!(vocab.id("THE"), 2);
        assert_eq!(vocab.id("[PAD]"), vocab.id("[pad]"));
        assert_ne!(vocab.id("[PAD]"), WordVocab::PAD_ID);
        assert_eq!(vocab.id("zebra"), WordVocab::UNK_ID);
        assert_eq!(vocab.len(), 7);

        let cased = WordVocabConfig {
            lowercase: false,
            min_freq: 1,
            max_size: Some(4),
        };
        let vocab = WordVocab::build(&examples(), &cased);
        assert_eq!(vocab.len(), 4);
        assert_eq!(vocab.id("the"), 2);
        assert_eq!(vocab.id("The"), WordVocab::UNK_ID);
        let tiny = WordVocabConfig {
            max_size: Some(0),
            ..cased
        };
        assert_eq!(WordVocab::build(&examples(), &tiny).len(), 2);
        let frequent = WordVocabConfig {
            min_freq: 2,
            ..WordVocabConfig::default()
        };
        assert_eq!(WordVocab::build(&examples(), &frequent).len(), 4);
    }

    #[test]
    fn json_round_trip() -> Result<()> {
        let vocab = WordVocab::build(&examples(), &WordVocabConfig::default());
        let dir = std::env::temp_dir().join(format!("mtl-data-vocab-{}", std::process::id()));
        crate::json::create_dir(&dir)?;
        let path = dir.join("vocab.json");
        vocab.save(&path)?;
        let back = WordVocab::load(&path)?;
        assert_eq!(back, vocab);
        std::fs::write(
            &path,
            r#"{"lowercase":true,"min_freq":1,"max_size":null,"tokens":["a"]}"#,
        )
        .map_err(|e| Error::io(&path, e))?;
        assert!(matches!(WordVocab::load(&path), Err(Error::Json { .. })));
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
