//! Character ids of words, the input of a model's character-level word features.
//!
//! Every token gets the characters of the word it belongs to (all its sub-tokens get the same
//! word), as a fixed number of ids: characters are hashed into `buckets - 1` ids (`1..buckets`),
//! `0` pads short words and marks tokens that belong to no word (special tokens, padding).
//! Hashing needs no character vocabulary, so a character never seen in training still has an
//! id; with 256 buckets every character below U+00FF has an id of its own.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The id of "no character": padding of short words and of tokens outside any word.
pub const CHAR_PAD: u32 = 0;

/// How words become character ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CharSpec {
    /// Ids per word: shorter words are padded with [`CHAR_PAD`]; longer words keep their
    /// first `ceil(max_chars / 2)` and last `floor(max_chars / 2)` characters (prefix and
    /// suffix carry the most).
    pub max_chars: usize,
    /// Number of character ids, [`CHAR_PAD`] included.
    pub buckets: u32,
}

impl Default for CharSpec {
    fn default() -> Self {
        Self {
            max_chars: 16,
            buckets: 256,
        }
    }
}

impl CharSpec {
    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSetting`] if `max_chars` is 0 or `buckets` is below 2.
    pub fn validate(&self) -> Result<()> {
        if self.max_chars == 0 {
            return Err(Error::InvalidSetting {
                name: "max_chars",
                value: "0".into(),
                expected: "at least 1",
            });
        }
        if self.buckets < 2 {
            return Err(Error::InvalidSetting {
                name: "char_buckets",
                value: self.buckets.to_string(),
                expected: "at least 2",
            });
        }
        Ok(())
    }

    /// The id of one character, in `1..buckets`.
    pub fn char_id(&self, c: char) -> u32 {
        1 + u32::from(c) % (self.buckets.max(2) - 1)
    }

    /// Appends exactly `max_chars` ids for `word` to `out`.
    pub fn push_word(&self, word: &str, out: &mut Vec<u32>) {
        let n = word.chars().count();
        let width = self.max_chars;
        if n <= width {
            out.extend(word.chars().map(|c| self.char_id(c)));
            out.extend(std::iter::repeat_n(CHAR_PAD, width - n));
        } else {
            let head = width.div_ceil(2);
            let tail = width - head;
            out.extend(word.chars().take(head).map(|c| self.char_id(c)));
            out.extend(word.chars().skip(n - tail).map(|c| self.char_id(c)));
        }
    }

    /// Appends `max_chars` padding ids (a token outside any word).
    pub fn push_none(&self, out: &mut Vec<u32>) {
        out.extend(std::iter::repeat_n(CHAR_PAD, self.max_chars));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_words_are_padded_and_long_words_keep_both_ends() {
        let spec = CharSpec {
            max_chars: 5,
            buckets: 256,
        };
        let mut out = Vec::new();
        spec.push_word("ab", &mut out);
        assert_eq!(out, [98, 99, 0, 0, 0]);
        out.clear();
        spec.push_word("abcdefg", &mut out);
        let ids = |s: &str| s.chars().map(|c| spec.char_id(c)).collect::<Vec<_>>();
        assert_eq!(out, [ids("abc"), ids("fg")].concat());
        out.clear();
        spec.push_none(&mut out);
        assert_eq!(out, [0; 5]);
    }

    #[test]
    fn latin1_characters_have_ids_of_their_own() {
        let spec = CharSpec::default();
        let ids: std::collections::HashSet<u32> = (0u32..255)
            .filter_map(char::from_u32)
            .map(|c| spec.char_id(c))
            .collect();
        assert_eq!(ids.len(), 255);
        assert!(!ids.contains(&CHAR_PAD));
    }

    #[test]
    fn invalid_settings_are_errors() {
        let bad = |max_chars, buckets| CharSpec { max_chars, buckets }.validate().is_err();
        assert!(bad(0, 256));
        assert!(bad(16, 1));
        assert!(!bad(1, 2));
    }

    proptest! {
        #[test]
        fn every_word_gets_max_chars_ids_in_range(
            word in "\\PC{0,40}", max_chars in 1usize..24, buckets in 2u32..600,
        ) {
            let spec = CharSpec { max_chars, buckets };
            let mut out = Vec::new();
            spec.push_word(&word, &mut out);
            prop_assert_eq!(out.len(), max_chars);
            prop_assert!(out.iter().all(|&id| id < buckets));
            let real = out.iter().filter(|&&id| id != CHAR_PAD).count();
            prop_assert_eq!(real, word.chars().count().min(max_chars));
        }
    }
}
