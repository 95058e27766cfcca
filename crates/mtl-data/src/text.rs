//! Text encoders: the word-level vocabulary or a HuggingFace tokenizer.

use std::path::Path;

use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::vocab::WordVocab;

/// File name of a saved [`WordVocab`].
pub const VOCAB_FILE: &str = "vocab.json";
/// File name of a saved HuggingFace tokenizer.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// The ids of an encoded sentence and the word each id came from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WordPieces {
    /// Token ids, special tokens included.
    pub ids: Vec<u32>,
    /// For each id, the index of its word; `None` for special tokens.
    pub word_ids: Vec<Option<usize>>,
}

/// Turns words into token ids.
#[derive(Debug, Clone)]
pub enum TextEncoder {
    /// One token per word, no special tokens.
    Word(WordVocab),
    /// A HuggingFace tokenizer (WordPiece, BPE, ...) from a `tokenizer.json`, with the special
    /// tokens its post-processor adds (such as `[CLS]` and `[SEP]`). Its own truncation is
    /// turned off by [`TextEncoder::from_tokenizer`]; the [`crate::Encoder`] truncates.
    HuggingFace(Box<Tokenizer>),
}

impl TextEncoder {
    /// Wraps a HuggingFace tokenizer, turning its truncation off.
    pub fn from_tokenizer(mut tokenizer: Tokenizer) -> Self {
        // Only fails for a stride larger than the maximum length, which `None` cannot have.
        let _ = tokenizer.with_truncation(None);
        // Padding is the batcher's job (with its mask); a tokenizer.json saved with padding on
        // would otherwise put unmasked pad tokens into every example.
        tokenizer.with_padding(None);
        Self::HuggingFace(Box::new(tokenizer))
    }

    /// Loads a HuggingFace `tokenizer.json`.
    ///
    /// # Errors
    ///
    /// [`Error::Tokenizer`] naming the file if it cannot be read or parsed.
    pub fn from_tokenizer_file(path: &Path) -> Result<Self> {
        let tokenizer = Tokenizer::from_file(path).map_err(|source| Error::Tokenizer {
            path: Some(path.into()),
            source,
        })?;
        Ok(Self::from_tokenizer(tokenizer))
    }

    /// Number of token ids (the embedding table's size): one more than the largest id, which
    /// for a HuggingFace tokenizer with gaps in its ids is more than its number of entries.
    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Word(vocab) => vocab.len(),
            Self::HuggingFace(tokenizer) => {
                let largest = tokenizer
                    .get_vocab(true)
                    .into_values()
                    .max()
                    .map_or(0, |id| id as usize + 1);
                largest.max(tokenizer.get_vocab_size(true))
            }
        }
    }

    /// The id of unknown tokens: [`WordVocab::UNK_ID`]; for a HuggingFace tokenizer, the id of
    /// `[UNK]`, `<unk>` or `<UNK>`, if it has one.
    pub fn unk_id(&self) -> Option<u32> {
        match self {
            Self::Word(_) => Some(WordVocab::UNK_ID),
            Self::HuggingFace(tokenizer) => ["[UNK]", "<unk>", "<UNK>"]
                .into_iter()
                .find_map(|t| tokenizer.token_to_id(t)),
        }
    }

    /// The id used for padding: [`WordVocab::PAD_ID`]; for a HuggingFace tokenizer, the pad id
    /// of its padding settings, else the id of `[PAD]`, `<pad>` or `<PAD>`, else 0. Padded
    /// positions are masked, so the choice only matters for models that embed them.
    pub fn pad_id(&self) -> u32 {
        match self {
            Self::Word(_) => WordVocab::PAD_ID,
            Self::HuggingFace(tokenizer) => tokenizer
                .get_padding()
                .map(|p| p.pad_id)
                .or_else(|| {
                    ["[PAD]", "<pad>", "<PAD>"]
                        .into_iter()
                        .find_map(|t| tokenizer.token_to_id(t))
                })
                .unwrap_or(0),
        }
    }

    /// Encodes pre-tokenized words, adding the tokenizer's special tokens.
    ///
    /// A word the tokenizer turns into no token at all (for instance one made only of
    /// characters its normalizer removes) has no sub-token and so no prediction.
    ///
    /// # Errors
    ///
    /// [`Error::Tokenizer`] if the HuggingFace tokenizer fails.
    pub fn encode_words(&self, words: &[String]) -> Result<WordPieces> {
        match self {
            Self::Word(vocab) => Ok(WordPieces {
                ids: words.iter().map(|w| vocab.id(w)).collect(),
                word_ids: (0..words.len()).map(Some).collect(),
            }),
            Self::HuggingFace(tokenizer) => {
                let encoding = tokenizer
                    .encode(words, true)
                    .map_err(|source| Error::Tokenizer { path: None, source })?;
                Ok(WordPieces {
                    ids: encoding.get_ids().to_vec(),
                    word_ids: encoding
                        .get_word_ids()
                        .iter()
                        .map(|w| w.map(|w| w as usize))
                        .collect(),
                })
            }
        }
    }

    /// The file this encoder is saved to inside a model directory.
    pub fn file_name(&self) -> &'static str {
        match self {
            Self::Word(_) => VOCAB_FILE,
            Self::HuggingFace(_) => TOKENIZER_FILE,
        }
    }

    /// Saves to `dir/vocab.json` or `dir/tokenizer.json`, creating `dir`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] or [`Error::Tokenizer`] naming the file.
    pub fn save(&self, dir: &Path) -> Result<()> {
        crate::json::create_dir(dir)?;
        let path = dir.join(self.file_name());
        match self {
            Self::Word(vocab) => vocab.save(&path),
            Self::HuggingFace(tokenizer) => {
                let text = tokenizer
                    .to_string(true)
                    .map_err(|source| Error::Tokenizer {
                        path: Some(path.clone()),
                        source,
                    })?;
                mtl_fs::write_atomic(&path, text.as_bytes()).map_err(|e| Error::io(&path, e))
            }
        }
    }

    /// Loads what [`TextEncoder::save`] wrote: `dir/tokenizer.json` or `dir/vocab.json`.
    ///
    /// # Errors
    ///
    /// [`Error::Layout`] if the directory holds neither file or both; the errors of the
    /// loaders otherwise.
    pub fn load(dir: &Path) -> Result<Self> {
        let vocab = dir.join(VOCAB_FILE);
        let tokenizer = dir.join(TOKENIZER_FILE);
        match (vocab.is_file(), tokenizer.is_file()) {
            (true, false) => Ok(Self::Word(WordVocab::load(&vocab)?)),
            (false, true) => Self::from_tokenizer_file(&tokenizer),
            (has_vocab, _) => Err(Error::Layout {
                path: dir.into(),
                expected: format!(
                    "exactly one of {VOCAB_FILE} and {TOKENIZER_FILE}, found {}",
                    if has_vocab { "both" } else { "neither" }
                ),
            }),
        }
    }
}

#[cfg(test)]
pub(crate) mod test_tokenizer {
    //! A small WordPiece tokenizer built in code, as a `bert-base-uncased` one would be.

    use tokenizers::Tokenizer;
    use tokenizers::models::wordpiece::WordPiece;
    use tokenizers::normalizers::bert::BertNormalizer;
    use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
    use tokenizers::processors::template::TemplateProcessing;

    /// Whole-word pieces of the test vocabulary.
    pub(crate) const WORDS: [&str; 6] = ["play", "the", "music", "new", "york", "un"];
    /// Letters available as first and continuing pieces, so every lower-case ASCII word (and
    /// `é`, which the normalizer strips to `e`) can be encoded.
    const LETTERS: &str = "abcdefghijklmnopqrstuvwxyz0123456789.,!?'";

    pub(crate) fn wordpiece() -> Tokenizer {
        // A vocab.txt in memory: one token a line, the id is the line number.
        let mut lines: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
            .into_iter()
            .chain(WORDS)
            .chain(["##ing"])
            .map(str::to_owned)
            .collect();
        for c in LETTERS.chars() {
            lines.push(c.to_string());
            lines.push(format!("##{c}"));
        }
        let vocab = WordPiece::read_bytes(lines.join("\n").as_bytes()).expect("vocab");
        let cls = vocab["[CLS]"];
        let sep = vocab["[SEP]"];
        let model = WordPiece::builder()
            .vocab(vocab)
            .unk_token("[UNK]".into())
            .build()
            .expect("wordpiece");
        let mut tokenizer = Tokenizer::new(model);
        tokenizer.with_normalizer(Some(BertNormalizer::default()));
        tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
        let template = TemplateProcessing::builder()
            .try_single("[CLS] $A [SEP]")
            .expect("template")
            .special_tokens(vec![("[CLS]", cls), ("[SEP]", sep)])
            .build()
            .expect("template");
        tokenizer.with_post_processor(Some(template));
        tokenizer
    }
}

#[cfg(test)]
mod tests {
    use super::test_tokenizer::wordpiece;
    use super::*;
    use crate::example::Example;
    use crate::read::test_util::TempDir;
    use crate::vocab::WordVocabConfig;

    fn words(ws: &[&str]) -> Vec<String> {
        ws.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn word_encoder_is_one_id_per_word() -> Result<()> {
        let vocab = WordVocab::build(&[Example::from_text("a b")], &WordVocabConfig::default());
        let encoder = TextEncoder::Word(vocab);
        let pieces = encoder.encode_words(&words(&["B", "zz"]))?;
        assert_eq!(pieces.ids, [3, WordVocab::UNK_ID]);
        assert_eq!(pieces.word_ids, [Some(0), Some(1)]);
        assert_eq!((encoder.vocab_size(), encoder.pad_id()), (4, 0));
        Ok(())
    }

    #[test]
    fn wordpiece_saved_and_loaded_from_tokenizer_json() -> Result<()> {
        let tmp = TempDir::new("wordpiece");
        let encoder = TextEncoder::from_tokenizer(wordpiece());
        encoder.save(&tmp.0)?;
        let loaded = TextEncoder::load(&tmp.0)?;
        let direct = TextEncoder::from_tokenizer_file(&tmp.0.join(TOKENIZER_FILE))?;
        let input = words(&["Playing", "New", "York,", "café"]);
        let pieces = loaded.encode_words(&input)?;
        assert_eq!(pieces, direct.encode_words(&input)?);
        assert_eq!(pieces, encoder.encode_words(&input)?);
        let TextEncoder::HuggingFace(tok) = &loaded else {
            panic!("expected a HuggingFace encoder");
        };
        let tokens: Vec<String> = pieces
            .ids
            .iter()
            .map(|&id| tok.id_to_token(id).unwrap_or_default())
            .collect();
        assert_eq!(
            tokens,
            [
                "[CLS]", "play", "##ing", "new", "york", ",", "c", "##a", "##f", "##e", "[SEP]"
            ]
        );
        assert_eq!(
            pieces.word_ids,
            [
                None,
                Some(0),
                Some(0),
                Some(1),
                Some(2),
                Some(2),
                Some(3),
                Some(3),
                Some(3),
                Some(3),
                None
            ]
        );
        assert_eq!(loaded.pad_id(), 0);
        assert_eq!(loaded.vocab_size(), encoder.vocab_size());
        Ok(())
    }

    /// A tokenizer whose ids skip numbers needs a row for its largest id, not one per entry.
    #[test]
    fn a_tokenizer_with_id_gaps_is_sized_by_its_largest_id() -> Result<()> {
        let tmp = TempDir::new("text-gaps");
        let path = tmp.write(
            "tokenizer.json",
            r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
               "normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,
               "decoder":null,"model":{"type":"WordLevel",
               "vocab":{"[UNK]":0,"a":1,"b":7},"unk_token":"[UNK]"}}"#,
        );
        let text = TextEncoder::from_tokenizer_file(&path)?;
        assert_eq!(text.vocab_size(), 8);
        Ok(())
    }

    #[test]
    fn load_needs_exactly_one_file() -> Result<()> {
        let tmp = TempDir::new("text-load");
        assert!(matches!(
            TextEncoder::load(&tmp.0),
            Err(Error::Layout { .. })
        ));
        TextEncoder::from_tokenizer(wordpiece()).save(&tmp.0)?;
        let vocab = WordVocab::build(&[], &WordVocabConfig::default());
        TextEncoder::Word(vocab).save(&tmp.0)?;
        assert!(matches!(
            TextEncoder::load(&tmp.0),
            Err(Error::Layout { .. })
        ));
        let bad = tmp.write("bad/tokenizer.json", "{not json");
        let err = TextEncoder::load(&tmp.0.join("bad")).expect_err("bad tokenizer");
        assert!(matches!(&err, Error::Tokenizer { path: Some(p), .. } if *p == bad));
        Ok(())
    }
}
