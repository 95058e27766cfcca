//! Splitting raw text into words, keeping each word's byte offsets.
//!
//! One rule serves every place that turns raw text into words: the JSONL reader (`text`
//! records), `mtl predict`, `mtl eval` and `mtl embed`. The rule a model was trained with is
//! saved in its `encoder.json` ([`crate::Encoder::words`]), so it splits at prediction time as
//! it did in training.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::example::Span;

/// How raw text is split into words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WordSplit {
    /// On Unicode whitespace only, as Python's `str.split()`: `"A91362,"` is one word. The
    /// rule of models trained before word splitting was configurable.
    Whitespace,
    /// On whitespace, and every punctuation mark or symbol is a word of its own, as
    /// HuggingFace's BERT pre-tokenizer does: `"Refund A91362, please"` is `Refund`, `A91362`,
    /// `,`, `please`. Each CJK ideograph is a word of its own (as BERT's pre-tokenizer does);
    /// emoji are symbols, kept whole with their modifiers and zero-width-joined parts.
    /// Letters with combining marks (any script) stay in their word.
    #[default]
    Punctuation,
}

impl WordSplit {
    /// Both rules.
    pub const ALL: [WordSplit; 2] = [WordSplit::Whitespace, WordSplit::Punctuation];

    /// The words of `text` and their byte offsets in it.
    ///
    /// ```
    /// use mtl_data::WordSplit;
    /// let (words, spans) = WordSplit::Punctuation.split("Refund A91362, please: it broke 😀!");
    /// assert_eq!(words, ["Refund", "A91362", ",", "please", ":", "it", "broke", "😀", "!"]);
    /// assert_eq!((spans[1].start, spans[1].end), (7, 13));
    /// let (words, _) = WordSplit::Whitespace.split("Refund A91362, please");
    /// assert_eq!(words, ["Refund", "A91362,", "please"]);
    /// ```
    pub fn split(self, text: &str) -> (Vec<String>, Vec<Span>) {
        let spans = match self {
            Self::Whitespace => split_whitespace(text),
            Self::Punctuation => split_punctuation(text),
        };
        let words = spans
            .iter()
            .map(|s| text[s.start..s.end].to_owned())
            .collect();
        (words, spans)
    }
}

impl fmt::Display for WordSplit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Whitespace => "whitespace",
            Self::Punctuation => "punctuation",
        })
    }
}

impl FromStr for WordSplit {
    type Err = Error;

    /// Parses `whitespace` or `punctuation`, ignoring case.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "whitespace" => Ok(Self::Whitespace),
            "punctuation" => Ok(Self::Punctuation),
            _ => Err(Error::InvalidSetting {
                name: "words",
                value: format!("{s:?}"),
                expected: "whitespace or punctuation",
            }),
        }
    }
}

fn split_whitespace(text: &str) -> Vec<Span> {
    let mut spans = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                spans.push(Span { start: s, end: i });
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        spans.push(Span {
            start: s,
            end: text.len(),
        });
    }
    spans
}

/// What the word being built is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Letters, digits, marks: anything that is not whitespace, punctuation or a symbol.
    Word,
    /// One punctuation mark or symbol (an emoji with its modifiers and joined parts).
    Symbol {
        /// The previous character was a zero-width joiner: the next symbol joins this one.
        joining: bool,
    },
}

fn split_punctuation(text: &str) -> Vec<Span> {
    let mut spans = Vec::new();
    let mut current: Option<(usize, Kind)> = None;
    let close = |current: &mut Option<(usize, Kind)>, spans: &mut Vec<Span>, end: usize| {
        if let Some((start, _)) = current.take() {
            spans.push(Span { start, end });
        }
    };
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            close(&mut current, &mut spans, i);
        } else if is_joiner(c) {
            match &mut current {
                Some((_, Kind::Symbol { joining })) => *joining = c == ZWJ,
                Some((_, Kind::Word)) => {}
                None => current = Some((i, Kind::Word)),
            }
        } else if is_cjk_ideograph(c) {
            close(&mut current, &mut spans, i);
            spans.push(Span {
                start: i,
                end: i + c.len_utf8(),
            });
        } else if is_punctuation(c) {
            if let Some((_, Kind::Symbol { joining: true })) = current {
                current = current.map(|(s, _)| (s, Kind::Symbol { joining: false }));
            } else {
                close(&mut current, &mut spans, i);
                current = Some((i, Kind::Symbol { joining: false }));
            }
        } else {
            match current {
                Some((_, Kind::Word)) => {}
                Some((s, Kind::Symbol { joining: true })) => {
                    current = Some((s, Kind::Symbol { joining: false }));
                }
                _ => {
                    close(&mut current, &mut spans, i);
                    current = Some((i, Kind::Word));
                }
            }
        }
    }
    close(&mut current, &mut spans, text.len());
    spans
}

/// Zero-width joiner.
const ZWJ: char = '\u{200D}';

/// Characters that extend the character before them: the zero-width joiner, variation
/// selectors, emoji skin-tone modifiers, combining marks for symbols (the keycap), tag
/// characters of flag sequences.
fn is_joiner(c: char) -> bool {
    matches!(c,
        ZWJ
        | '\u{FE00}'..='\u{FE0F}'
        | '\u{1F3FB}'..='\u{1F3FF}'
        | '\u{20D0}'..='\u{20FF}'
        | '\u{E0020}'..='\u{E007F}'
        | '\u{E0100}'..='\u{E01EF}')
}

/// CJK ideographs, the ranges of BERT's `_is_chinese_char`.
fn is_cjk_ideograph(c: char) -> bool {
    matches!(c,
        '\u{4E00}'..='\u{9FFF}'
        | '\u{3400}'..='\u{4DBF}'
        | '\u{20000}'..='\u{2A6DF}'
        | '\u{2A700}'..='\u{2B73F}'
        | '\u{2B740}'..='\u{2B81F}'
        | '\u{2B820}'..='\u{2CEAF}'
        | '\u{F900}'..='\u{FAFF}'
        | '\u{2F800}'..='\u{2FA1F}')
}

/// Punctuation marks and symbols: ASCII punctuation (BERT's rule, `$`, `+`, `^` included) and
/// the Unicode blocks of punctuation, currency, arrows, mathematical and miscellaneous symbols,
/// dingbats and emoji. Letters and digits inside those blocks (`ª`, `²`, `ℕ`, `Ⅻ`, `々`) are
/// not punctuation, nor is anything outside them (so marks of any script stay in their word).
fn is_punctuation(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_punctuation();
    }
    if c.is_alphanumeric() || c.is_whitespace() || is_joiner(c) {
        return false;
    }
    matches!(c,
        '\u{00A1}'..='\u{00BF}'         // Latin-1 punctuation and symbols
        | '\u{00D7}' | '\u{00F7}'       // × ÷
        | '\u{037E}' | '\u{0387}'       // Greek question mark, ano teleia
        | '\u{055A}'..='\u{055F}' | '\u{0589}' | '\u{058A}' // Armenian
        | '\u{05BE}' | '\u{05C0}' | '\u{05C3}' | '\u{05C6}' | '\u{05F3}' | '\u{05F4}' // Hebrew
        | '\u{060C}' | '\u{060D}' | '\u{061B}' | '\u{061E}' | '\u{061F}'
        | '\u{066A}'..='\u{066D}' | '\u{06D4}' // Arabic
        | '\u{0964}' | '\u{0965}' | '\u{0970}' // Devanagari danda
        | '\u{0E4F}' | '\u{0E5A}' | '\u{0E5B}' // Thai
        | '\u{10FB}' | '\u{1360}'..='\u{1368}' // Georgian, Ethiopic
        | '\u{2010}'..='\u{2027}'       // dashes, quotes, bullets, ellipsis
        | '\u{2030}'..='\u{205E}'       // per mille, primes, guillemets, ...
        | '\u{2070}'..='\u{209F}'       // super- and subscript signs
        | '\u{20A0}'..='\u{20CF}'       // currency
        | '\u{2100}'..='\u{2BFF}'       // letterlike, arrows, maths, technical, shapes, dingbats
        | '\u{2E00}'..='\u{2E7F}'       // supplemental punctuation
        | '\u{3000}'..='\u{303F}'       // CJK symbols and punctuation
        | '\u{30FB}'                    // katakana middle dot
        | '\u{FE10}'..='\u{FE19}' | '\u{FE30}'..='\u{FE6F}' // vertical, compatibility, small forms
        | '\u{FF01}'..='\u{FF0F}' | '\u{FF1A}'..='\u{FF20}' | '\u{FF3B}'..='\u{FF40}'
        | '\u{FF5B}'..='\u{FF65}' | '\u{FFE0}'..='\u{FFEE}' // fullwidth forms
        | '\u{1F000}'..='\u{1FAFF}'     // mahjong, cards, emoji, pictographs, symbols
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn words(split: WordSplit, text: &str) -> Vec<String> {
        split.split(text).0
    }

    #[test]
    fn punctuation_is_split_from_words() {
        let p = WordSplit::Punctuation;
        assert_eq!(
            words(p, "Refund A91362, please: it broke."),
            ["Refund", "A91362", ",", "please", ":", "it", "broke", "."]
        );
        assert_eq!(
            words(p, "\"Kindle,\" (2nd) don't e-mail 3.5$"),
            [
                "\"", "Kindle", ",", "\"", "(", "2nd", ")", "don", "'", "t", "e", "-", "mail", "3",
                ".", "5", "$"
            ]
        );
        assert_eq!(words(p, "wait..."), ["wait", ".", ".", "."]);
        // Accents (precomposed or combining) and other scripts stay in their word.
        assert_eq!(
            words(p, "café cafe\u{301}! «Straße» हिन्दी, привет?"),
            [
                "café",
                "cafe\u{301}",
                "!",
                "«",
                "Straße",
                "»",
                "हिन्दी",
                ",",
                "привет",
                "?"
            ]
        );
        // Curly quotes, dashes, currency, fullwidth and CJK punctuation.
        assert_eq!(
            words(p, "Ed Sheeran’s song — 5€ ２，日本"),
            [
                "Ed", "Sheeran", "’", "s", "song", "—", "5", "€", "２", "，", "日", "本"
            ]
        );
    }

    #[test]
    fn cjk_ideographs_are_one_word_each_and_kana_hangul_are_words() {
        let p = WordSplit::Punctuation;
        assert_eq!(
            words(p, "我想去北京。"),
            ["我", "想", "去", "北", "京", "。"]
        );
        assert_eq!(
            words(p, "東京へ行きたい 서울 가고"),
            ["東", "京", "へ", "行", "きたい", "서울", "가고"]
        );
    }

    #[test]
    fn emoji_are_symbols_kept_whole() {
        let p = WordSplit::Punctuation;
        assert_eq!(
            words(p, "great😀😀 👍🏽ok ❤️ 👨‍👩‍👧 done"),
            ["great", "😀", "😀", "👍🏽", "ok", "❤️", "👨‍👩‍👧", "done"]
        );
    }

    #[test]
    fn whitespace_split_keeps_punctuation() {
        let w = WordSplit::Whitespace;
        assert_eq!(
            words(w, "  Refund A91362,\tplease\u{3000}日本 "),
            ["Refund", "A91362,", "please", "日本"]
        );
        assert!(words(w, " \t ").is_empty());
        assert!(words(WordSplit::Punctuation, "").is_empty());
    }

    #[test]
    fn names_parse_and_print() -> Result<(), Error> {
        for split in WordSplit::ALL {
            assert_eq!(split.to_string().parse::<WordSplit>()?, split);
        }
        assert_eq!(
            " Punctuation ".parse::<WordSplit>()?,
            WordSplit::Punctuation
        );
        assert!("spacy".parse::<WordSplit>().is_err());
        assert_eq!(WordSplit::default(), WordSplit::Punctuation);
        Ok(())
    }

    proptest! {
        /// Every word is its own slice of the text, in order, without overlap, and nothing but
        /// whitespace is left between words.
        #[test]
        fn offsets_cover_the_text(text in "[a-zA-Z0-9é日本😀👍🏽\u{200D}\u{301}.,!'’ \t-]{0,30}") {
            for split in WordSplit::ALL {
                let (words, spans) = split.split(&text);
                let mut at = 0;
                for (word, span) in words.iter().zip(&spans) {
                    prop_assert!(span.start >= at && span.start < span.end);
                    prop_assert_eq!(&text[span.start..span.end], word.as_str());
                    prop_assert!(text[at..span.start].chars().all(char::is_whitespace));
                    at = span.end;
                }
                prop_assert!(text[at..].chars().all(char::is_whitespace));
            }
        }
    }
}
