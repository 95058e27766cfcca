//! JSON lines.

use std::path::Path;

use serde::Deserialize;

use super::{ReadOptions, ReadReport, Sink, decode_lines};
use crate::error::{Problem, Result};
use crate::example::{Example, Source, Span};
use crate::tags::{EntitySpan, normalize_tags, spans_to_iob2};
use crate::words::WordSplit;

/// One line of a JSONL file.
#[derive(Deserialize)]
struct Record {
    text: Option<String>,
    tokens: Option<Vec<String>>,
    tags: Option<Vec<String>>,
    label: Option<String>,
    entities: Option<Vec<Entity>>,
}

/// The keys a record may have: its fields, and `id` and `meta`, which are for the user and
/// ignored.
pub(crate) const RECORD_KEYS: [&str; 7] =
    ["text", "tokens", "tags", "label", "entities", "id", "meta"];

/// The keys an entity may have.
const ENTITY_KEYS: [&str; 3] = ["start", "end", "label"];

/// An entity of a `text` record, in character offsets.
#[derive(Deserialize)]
struct Entity {
    start: usize,
    end: usize,
    label: String,
}

/// The key meant by a common other name for it, to suggest in the error.
fn meant(key: &str) -> Option<&'static str> {
    match key.to_ascii_lowercase().as_str() {
        "intent" | "labels" | "category" | "class" | "cats" | "sentence_label" | "topic" => {
            Some("label")
        }
        "spans" | "ents" | "ner" | "annotations" | "slots" => Some("entities"),
        "words" => Some("tokens"),
        "ner_tags" | "slot_tags" | "bio" => Some("tags"),
        "sentence" | "utterance" | "query" => Some("text"),
        _ => None,
    }
}

/// Checks an object's keys against `allowed`.
fn check_keys(
    object: &serde_json::Map<String, serde_json::Value>,
    allowed: &'static [&'static str],
    entity: Option<usize>,
) -> std::result::Result<(), Problem> {
    match object.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(key) => Err(Problem::UnknownKey {
            key: key.clone(),
            entity,
            allowed,
            meant: meant(key),
        }),
        None => Ok(()),
    }
}

/// Parses one line: a JSON object with known keys only.
fn parse_record(line: &str) -> std::result::Result<Record, Problem> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|error| Problem::Json { error })?;
    if let serde_json::Value::Object(object) = &value {
        check_keys(object, &RECORD_KEYS, None)?;
        if let Some(serde_json::Value::Array(entities)) = object.get("entities") {
            for (index, entity) in entities.iter().enumerate() {
                if let serde_json::Value::Object(entity) = entity {
                    check_keys(entity, &ENTITY_KEYS, Some(index))?;
                }
            }
        }
    }
    serde_json::from_value(value).map_err(|error| Problem::Json { error })
}

/// Parses JSON lines; `file` names the data in errors and [`Source`]s.
///
/// Each non-blank line is one object, in one of two shapes:
///
/// - `{"text": "play queen", "label": "PlayMusic", "entities": [{"start": 5, "end": 10,
///   "label": "artist"}]}`: `text` is split into words by [`ReadOptions::words`] (by default
///   punctuation is split from words, see [`WordSplit`]); entity offsets are *character*
///   offsets (Unicode scalar values, as in Python) into `text`, end exclusive, and must fall
///   on word boundaries without overlapping. An entity's label is its type (`artist`), never a
///   tag (`B-artist`). The entities become IOB2 tags; an empty `entities` list means "tagged,
///   no entities" (all `O`).
/// - `{"tokens": ["play", "queen"], "tags": ["O", "B-artist"], "label": "PlayMusic"}`: tags
///   are in [`ReadOptions::scheme`] and converted to IOB2.
///
/// `label`, `entities` and `tags` may each be absent (or `null`): an example without them is
/// not annotated for that task. `id` and `meta` may hold anything and are ignored; any other
/// key is an error naming it (a typo such as `"intent"` for `"label"` would otherwise train
/// without sentence labels), or, with [`ReadOptions::lenient`], a skipped example.
///
/// ```
/// use std::path::Path;
/// use mtl_data::{parse_jsonl, ReadOptions};
/// let data = r#"{"text": "play Für Elise", "entities": [{"start": 5, "end": 14, "label": "track"}]}
/// {"tokens": ["hi"], "label": "Greet"}"#;
/// let (examples, _) = parse_jsonl(data.as_bytes(), Path::new("inline.jsonl"), &ReadOptions::default())?;
/// assert_eq!(examples[0].tags.as_deref(), Some(&["O".to_string(), "B-track".into(), "I-track".into()][..]));
/// assert_eq!(examples[1].label.as_deref(), Some("Greet"));
/// # Ok::<(), mtl_data::Error>(())
/// ```
///
/// # Errors
///
/// [`crate::Error::Data`] naming `file` and the line (unless [`ReadOptions::lenient`]).
pub fn parse_jsonl(
    bytes: &[u8],
    file: &Path,
    opts: &ReadOptions,
) -> Result<(Vec<Example>, ReadReport)> {
    let mut sink = Sink::new(opts);
    for (line, text) in decode_lines(bytes) {
        let parsed = match text {
            Ok(text) if text.trim().is_empty() => continue,
            Ok(text) => parse_record(text).and_then(|record| build(record, opts)),
            Err(byte) => Err(Problem::InvalidUtf8 { byte }),
        };
        match parsed {
            Ok((mut example, repaired)) => {
                example.source = Some(Source {
                    file: file.into(),
                    line,
                });
                sink.accept(example, repaired);
            }
            Err(problem) => sink.problem(file, line, problem)?,
        }
    }
    Ok(sink.finish())
}

/// Builds the example of one record.
fn build(record: Record, opts: &ReadOptions) -> std::result::Result<(Example, bool), Problem> {
    let label = record.label;
    let (example, repaired) = match (record.text, record.tokens) {
        (Some(_), Some(_)) => {
            return Err(Problem::Fields {
                expected: "either `text` or `tokens`, not both",
            });
        }
        (None, None) => {
            return Err(Problem::Fields {
                expected: "a `text` field (with optional `entities`) or a `tokens` field (with \
                           optional `tags`)",
            });
        }
        (Some(text), None) => {
            if record.tags.is_some() {
                return Err(Problem::Fields {
                    expected: "`entities` with `text` (`tags` go with `tokens`)",
                });
            }
            let (words, spans) = opts.words.split(&text);
            if words.is_empty() {
                return Err(Problem::EmptySentence);
            }
            let tags = match record.entities {
                Some(entities) => Some(entities_to_tags(&text, &spans, &entities, opts.words)?),
                None => None,
            };
            let example = Example {
                text,
                words,
                spans,
                label: None,
                tags,
                source: None,
            };
            (example, false)
        }
        (None, Some(tokens)) => {
            if record.entities.is_some() {
                return Err(Problem::Fields {
                    expected: "`tags` with `tokens` (`entities` go with `text`)",
                });
            }
            if tokens.is_empty() {
                return Err(Problem::EmptySentence);
            }
            let (tags, repaired) = match record.tags {
                Some(tags) => {
                    if tags.len() != tokens.len() {
                        return Err(Problem::TagCountMismatch {
                            words: tokens.len(),
                            tags: tags.len(),
                        });
                    }
                    let (tags, repaired) =
                        normalize_tags(&tags, opts.scheme).map_err(|(_, problem)| problem)?;
                    (Some(tags), repaired)
                }
                None => (None, false),
            };
            Example::check_parts(&tokens, None, tags.as_deref())?;
            (Example::joined(tokens, None, tags), repaired)
        }
    };
    if label.as_deref().is_some_and(|l| l.trim().is_empty()) {
        return Err(Problem::EmptyLabel);
    }
    let label = label.map(|l| l.trim().to_owned());
    Ok((Example { label, ..example }, repaired))
}

/// Turns character-offset entities into IOB2 tags over the words (split by `words`).
fn entities_to_tags(
    text: &str,
    spans: &[Span],
    entities: &[Entity],
    words: WordSplit,
) -> std::result::Result<Vec<String>, Problem> {
    // Character offsets of each word's start and end, in one pass.
    let mut starts = Vec::with_capacity(spans.len());
    let mut ends = Vec::with_capacity(spans.len());
    let mut chars = 0;
    let mut byte = 0;
    for span in spans {
        chars += text[byte..span.start].chars().count();
        starts.push(chars);
        chars += text[span.start..span.end].chars().count();
        ends.push(chars);
        byte = span.end;
    }
    let len = chars + text[byte..].chars().count();

    let mut located: Vec<(EntitySpan, usize)> = Vec::with_capacity(entities.len());
    for (index, entity) in entities.iter().enumerate() {
        let (start, end) = (entity.start, entity.end);
        if start >= end {
            return Err(Problem::EmptySpan { index, start, end });
        }
        if end > len {
            return Err(Problem::SpanOutOfBounds {
                index,
                start,
                end,
                len,
            });
        }
        let label = entity.label.trim();
        if label.is_empty() || label.chars().any(char::is_whitespace) {
            return Err(Problem::InvalidEntityLabel {
                index,
                label: entity.label.clone(),
            });
        }
        if let Some(bare) = scheme_prefixed(label) {
            return Err(Problem::PrefixedEntityLabel {
                index,
                label: label.to_owned(),
                bare: bare.to_owned(),
            });
        }
        let (Ok(first), Ok(last)) = (starts.binary_search(&start), ends.binary_search(&end)) else {
            return Err(Problem::SpanNotOnBoundary {
                index,
                start,
                end,
                covered: text.chars().skip(start).take(end - start).collect(),
                words,
            });
        };
        let span = EntitySpan {
            start: first,
            end: last + 1,
            label: label.to_owned(),
        };
        located.push((span, index));
    }
    located.sort_by_key(|(span, _)| span.start);
    for pair in located.windows(2) {
        if let [(a, a_index), (b, b_index)] = pair
            && b.start < a.end
        {
            return Err(Problem::SpanOverlap {
                index: *b_index,
                other: *a_index,
            });
        }
    }
    let spans: Vec<EntitySpan> = located.into_iter().map(|(span, _)| span).collect();
    Ok(spans_to_iob2(starts.len(), &spans))
}

/// The entity type of a label written with a tag-scheme prefix (`B-product`, `I-product`,
/// `E-`, `S-`, `L-`, `U-`), if it has one.
fn scheme_prefixed(label: &str) -> Option<&str> {
    let (prefix, rest) = label.split_once('-')?;
    (matches!(prefix, "B" | "I" | "E" | "S" | "L" | "U") && !rest.is_empty()).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::TempDir;
    use super::super::{Format, read_examples};
    use super::*;
    use crate::error::Error;
    use crate::tags::{TagScheme, iob2_to_spans};
    use proptest::prelude::*;

    fn parse(data: &str) -> Result<(Vec<Example>, ReadReport)> {
        parse_jsonl(
            data.as_bytes(),
            Path::new("t.jsonl"),
            &ReadOptions::default(),
        )
    }

    fn error_at(result: Result<(Vec<Example>, ReadReport)>, line: usize) -> Problem {
        match result {
            Err(Error::Data {
                file,
                line: got,
                problem,
            }) => {
                assert_eq!(file, Path::new("t.jsonl"));
                assert_eq!(got, line, "{problem}");
                problem
            }
            other => panic!("expected a data error at line {line}, got {other:?}"),
        }
    }

    fn strings(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn reads_both_shapes() -> Result<()> {
        let data = "\u{feff}{\"text\": \"  listen to Björk  now\", \"label\": \"PlayMusic\", \
                    \"entities\": [{\"start\": 12, \"end\": 17, \"label\": \"artist\"}], \"id\": 7}\r\n\
                    \r\n\
                    {\"tokens\": [\"a\", \"b\"], \"tags\": [\"I-X\", \"I-X\"]}\n\
                    {\"text\": \"no annotations\", \"label\": null}\n\
                    {\"text\": \"tagged none\", \"entities\": []}\n\n\n";
        let (examples, report) = parse(data)?;
        assert_eq!(examples.len(), 4);
        let e = &examples[0];
        assert_eq!(e.words, ["listen", "to", "Björk", "now"]);
        assert_eq!(e.text, "  listen to Björk  now");
        assert_eq!(
            e.tags.as_deref(),
            Some(&strings(&["O", "O", "B-artist", "O"])[..])
        );
        assert_eq!(e.label.as_deref(), Some("PlayMusic"));
        assert_eq!(e.char_span(2, 3), (12, 17));
        assert_eq!(e.source.as_ref().map(|s| s.line), Some(1));
        assert_eq!(
            examples[1].tags.as_deref(),
            Some(&strings(&["B-X", "I-X"])[..])
        );
        assert_eq!(examples[1].text, "a b");
        assert_eq!(examples[1].source.as_ref().map(|s| s.line), Some(3));
        assert_eq!(
            (examples[2].label.as_ref(), examples[2].tags.as_ref()),
            (None, None)
        );
        assert_eq!(examples[3].tags.as_deref(), Some(&strings(&["O", "O"])[..]));
        assert_eq!(report.repaired_sequences, 1);
        Ok(())
    }

    #[test]
    fn bad_inputs_name_file_and_line() {
        let ok = "{\"tokens\": [\"a\"]}\n";
        type Check = fn(&Problem) -> bool;
        let cases: Vec<(String, Check)> = vec![
            (format!("{ok}{{\"tokens\": [\"a\"], \"tags\": []}}"), |p| {
                matches!(p, Problem::TagCountMismatch { words: 1, tags: 0 })
            }),
            (format!("{ok}{{\"tokens\": [\"a\"]"), |p| {
                matches!(p, Problem::Json { .. })
            }),
            (format!("{ok}[1, 2]"), |p| matches!(p, Problem::Json { .. })),
            (format!("{ok}{{\"text\": 3}}"), |p| {
                matches!(p, Problem::Json { .. })
            }),
            (format!("{ok}{{\"label\": \"x\"}}"), |p| {
                matches!(p, Problem::Fields { .. })
            }),
            (
                format!("{ok}{{\"text\": \"a\", \"tokens\": [\"a\"]}}"),
                |p| matches!(p, Problem::Fields { .. }),
            ),
            (format!("{ok}{{\"text\": \"a\", \"tags\": [\"O\"]}}"), |p| {
                matches!(p, Problem::Fields { .. })
            }),
            (
                format!("{ok}{{\"tokens\": [\"a\"], \"entities\": []}}"),
                |p| matches!(p, Problem::Fields { .. }),
            ),
            (format!("{ok}{{\"text\": \" \"}}"), |p| {
                matches!(p, Problem::EmptySentence)
            }),
            (format!("{ok}{{\"tokens\": []}}"), |p| {
                matches!(p, Problem::EmptySentence)
            }),
            (format!("{ok}{{\"tokens\": [\"a\", \"\"]}}"), |p| {
                matches!(p, Problem::EmptyToken { index: 1 })
            }),
            (
                format!("{ok}{{\"tokens\": [\"a\"], \"label\": \"\"}}"),
                |p| matches!(p, Problem::EmptyLabel),
            ),
            (
                format!("{ok}{{\"tokens\": [\"a\"], \"tags\": [\"S-X\"]}}"),
                |p| matches!(p, Problem::InvalidTag { .. }),
            ),
            (
                format!(
                    "{ok}{{\"text\": \"ab cd\", \"entities\": [{{\"start\": 3, \"end\": 6, \"label\": \"x\"}}]}}"
                ),
                |p| {
                    matches!(
                        p,
                        Problem::SpanOutOfBounds {
                            index: 0,
                            len: 5,
                            ..
                        }
                    )
                },
            ),
            (
                format!(
                    "{ok}{{\"text\": \"ab cd\", \"entities\": [{{\"start\": 1, \"end\": 5, \"label\": \"x\"}}]}}"
                ),
                |p| matches!(p, Problem::SpanNotOnBoundary { covered, .. } if covered == "b cd"),
            ),
            (
                format!(
                    "{ok}{{\"text\": \"ab cd\", \"entities\": [{{\"start\": 0, \"end\": 3, \"label\": \"x\"}}]}}"
                ),
                |p| matches!(p, Problem::SpanNotOnBoundary { .. }),
            ),
            (
                format!(
                    "{ok}{{\"text\": \"ab cd\", \"entities\": [{{\"start\": 3, \"end\": 3, \"label\": \"x\"}}]}}"
                ),
                |p| matches!(p, Problem::EmptySpan { .. }),
            ),
            (
                format!(
                    "{ok}{{\"text\": \"ab cd\", \"entities\": [{{\"start\": -1, \"end\": 2, \"label\": \"x\"}}]}}"
                ),
                |p| matches!(p, Problem::Json { .. }),
            ),
            (
                format!(
                    "{ok}{{\"text\": \"ab cd ef\", \"entities\": [{{\"start\": 3, \"end\": 8, \"label\": \"x\"}}, {{\"start\": 0, \"end\": 5, \"label\": \"y\"}}]}}"
                ),
                |p| matches!(p, Problem::SpanOverlap { index: 0, other: 1 }),
            ),
            (
                format!(
                    "{ok}{{\"text\": \"ab\", \"entities\": [{{\"start\": 0, \"end\": 2, \"label\": \"a b\"}}]}}"
                ),
                |p| matches!(p, Problem::InvalidEntityLabel { index: 0, .. }),
            ),
        ];
        for (data, check) in cases {
            let problem = error_at(parse(&data), 2);
            assert!(check(&problem), "{data}: {problem}");
        }
        let mut bad_utf8 = b"{\"tokens\": [\"a\"]}\r\n".to_vec();
        bad_utf8.extend_from_slice(b"{\"tokens\": [\"\xFF\"]}\n");
        let result = parse_jsonl(&bad_utf8, Path::new("t.jsonl"), &ReadOptions::default());
        assert!(matches!(
            error_at(result, 2),
            Problem::InvalidUtf8 { byte: 13 }
        ));
    }

    #[test]
    fn unknown_keys_are_named_with_the_allowed_ones() -> Result<()> {
        let data = "{\"text\": \"hi\", \"label\": \"Greet\", \"id\": 1, \"meta\": {\"a\": 2}}\n\
                    {\"text\": \"refund please\", \"intent\": \"Refund\"}\n";
        let problem = error_at(parse(data), 2);
        assert!(
            matches!(&problem, Problem::UnknownKey { key, entity: None, meant: Some("label"), .. } if key == "intent"),
            "{problem}"
        );
        assert_eq!(
            problem.to_string(),
            "unknown key `intent`: expected only text, tokens, tags, label, entities, id, meta \
             (did you mean `label`?)"
        );
        let data = r#"{"text": "ab", "entities": [{"start": 0, "end": 2, "type": "x"}]}"#;
        let problem = error_at(parse(&format!("\n{data}")), 2);
        assert_eq!(
            problem.to_string(),
            "unknown key `type` in entity 0: expected only start, end, label"
        );
        // Lenient: counted and skipped.
        let opts = ReadOptions {
            lenient: true,
            ..ReadOptions::default()
        };
        let data = "{\"text\": \"a\", \"intent\": \"x\"}\n{\"text\": \"b\", \"label\": \"y\"}\n";
        let (examples, report) = parse_jsonl(data.as_bytes(), Path::new("t.jsonl"), &opts)?;
        assert_eq!((examples.len(), report.skipped), (1, 1));
        assert!(report.warnings[0].contains("t.jsonl:1: unknown key `intent`"));
        Ok(())
    }

    #[test]
    fn prefixed_entity_labels_are_refused() {
        let data = r#"{"text": "buy kindle", "entities": [{"start": 4, "end": 10, "label": "B-product"}]}"#;
        let problem = error_at(parse(&format!("{{\"tokens\": [\"a\"]}}\n{data}")), 2);
        assert!(
            matches!(&problem, Problem::PrefixedEntityLabel { bare, .. } if bare == "product"),
            "{problem}"
        );
        // A type that merely contains a hyphen is fine.
        let data =
            r#"{"text": "buy kindle", "entities": [{"start": 4, "end": 10, "label": "e-reader"}]}"#;
        assert!(parse(data).is_ok());
    }

    #[test]
    fn punctuation_next_to_entities_is_split_off() -> Result<()> {
        let data = r#"{"text": "Refund A91362, please: my Kindle broke!", "entities": [{"start": 7, "end": 13, "label": "order"}, {"start": 26, "end": 32, "label": "product"}]}"#;
        let (examples, _) = parse(data)?;
        let e = &examples[0];
        assert_eq!(
            e.words,
            [
                "Refund", "A91362", ",", "please", ":", "my", "Kindle", "broke", "!"
            ]
        );
        assert_eq!(
            e.tags.as_deref(),
            Some(&strings(&["O", "B-order", "O", "O", "O", "O", "B-product", "O", "O"])[..])
        );
        assert_eq!(e.char_span(1, 2), (7, 13));
        // The same line split on whitespace only: the entity cuts the word `A91362,`.
        let whitespace = ReadOptions {
            words: WordSplit::Whitespace,
            ..ReadOptions::default()
        };
        let err = parse_jsonl(data.as_bytes(), Path::new("t.jsonl"), &whitespace)
            .expect_err("not on boundaries");
        assert!(
            err.to_string()
                .contains("`A91362` is not on word boundaries")
                && err.to_string().contains("words split on whitespace"),
            "{err}"
        );
        // CJK: one word per ideograph, so an entity of two ideographs is fine.
        let data =
            r#"{"text": "我想去北京。", "entities": [{"start": 3, "end": 5, "label": "city"}]}"#;
        let (examples, _) = parse(data)?;
        assert_eq!(
            examples[0].tags.as_deref(),
            Some(&strings(&["O", "O", "O", "B-city", "I-city", "O"])[..])
        );
        Ok(())
    }

    #[test]
    fn offsets_are_characters_not_bytes() -> Result<()> {
        // "é" is 2 bytes and "日本" 6: offsets count characters.
        let data =
            r#"{"text": "café 日本 x", "entities": [{"start": 5, "end": 7, "label": "loc"}]}"#;
        let (examples, _) = parse(data)?;
        // Each ideograph is a word.
        assert_eq!(
            examples[0].tags.as_deref(),
            Some(&strings(&["O", "B-loc", "I-loc", "O"])[..])
        );
        Ok(())
    }

    #[test]
    fn lenient_skips_with_warnings() -> Result<()> {
        let opts = ReadOptions {
            scheme: TagScheme::Iob2,
            lenient: true,
            ..ReadOptions::default()
        };
        let data = "{\"tokens\": [\"a\"]}\nnot json\n{\"tokens\": [\"b\"], \"tags\": [\"O\", \"O\"]}\n{\"tokens\": [\"c\"]}\n";
        let (examples, report) = parse_jsonl(data.as_bytes(), Path::new("t.jsonl"), &opts)?;
        assert_eq!(examples.len(), 2);
        assert_eq!((report.examples, report.skipped), (2, 2));
        assert!(report.warnings[0].starts_with("t.jsonl:2:"));
        assert!(report.warnings[1].starts_with("t.jsonl:3:"));
        Ok(())
    }

    #[test]
    fn reads_from_disk() -> Result<()> {
        let tmp = TempDir::new("jsonl");
        let path = tmp.write("x.json", "{\"tokens\": [\"a\"]}\n{oops}\n");
        let err = read_examples(&path, None, &ReadOptions::default()).expect_err("bad json");
        assert!(matches!(&err, Error::Data { file, line: 2, .. } if *file == path));
        assert!(err.to_string().contains("x.json:2:"), "{err}");
        let err = read_examples(
            &tmp.0.join("missing.jsonl"),
            Some(Format::Jsonl),
            &ReadOptions::default(),
        )
        .expect_err("missing file");
        assert!(matches!(err, Error::Io { .. }));
        Ok(())
    }

    fn arb_text_and_spans()
    -> impl Strategy<Value = (String, Vec<(usize, usize, String)>, Vec<EntitySpan>)> {
        let word = proptest::string::string_regex("[a-zé日本ß]{1,4}").expect("regex");
        let sep = proptest::string::string_regex("[ \t\u{3000}]{1,2}").expect("regex");
        proptest::collection::vec(
            (word, sep, 1usize..3, proptest::option::of(0usize..2)),
            1..8,
        )
        .prop_map(|parts| {
            // Group words into runs; a run with a kind is one entity.
            let mut text = String::new();
            let mut entities = Vec::new();
            let mut spans = Vec::new();
            let mut word_index = 0;
            for (w, sep, run, kind) in parts {
                let start_chars = text.chars().count();
                for k in 0..run {
                    if k > 0 {
                        text.push(' ');
                    }
                    text.push_str(&w);
                }
                let end_chars = text.chars().count();
                if let Some(kind) = kind {
                    let label = ["city", "b-x"][kind].to_owned();
                    entities.push((start_chars, end_chars, label.clone()));
                    spans.push(EntitySpan {
                        start: word_index,
                        end: word_index + run,
                        label,
                    });
                }
                word_index += run;
                text.push_str(&sep);
            }
            (text, entities, spans)
        })
    }

    proptest! {
        /// Entities next to punctuation (no space between) are on word boundaries when
        /// punctuation is split off, and come back at the same character offsets.
        #[test]
        fn entities_next_to_punctuation_round_trip(
            parts in proptest::collection::vec(
                ("[a-zé]{1,5}|[A-Z][0-9]{2,4}|日本", "[,.:!?)(\"]{0,2}", " {0,1}", proptest::bool::ANY),
                1..8,
            )
        ) {
            let mut text = String::new();
            let mut entities = Vec::new();
            for (word, punct, space, entity) in &parts {
                // A word glued to the previous punctuation would merge with a previous word.
                if !text.is_empty() && !text.ends_with(' ') && !text.ends_with(|c: char| ",.:!?)(\"".contains(c)) {
                    text.push(' ');
                }
                let start = text.chars().count();
                text.push_str(word);
                if *entity {
                    entities.push((start, text.chars().count(), "thing".to_owned()));
                }
                text.push_str(punct);
                text.push_str(space);
            }
            let record = serde_json::json!({
                "text": text,
                "entities": entities.iter().map(|(s, e, l)| serde_json::json!({"start": s, "end": e, "label": l})).collect::<Vec<_>>(),
            });
            let (examples, _) = parse(&record.to_string()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let tags = examples[0].tags.clone().unwrap_or_default();
            let back: Vec<(usize, usize, String)> = examples[0]
                .text_entities(&tags)
                .into_iter()
                .map(|t| (t.start, t.end, t.label))
                .collect();
            // Adjacent entities of one type merge into one span only if IOB2 said so; each
            // entity is its own B- here, so they come back one by one.
            prop_assert_eq!(back, entities);
        }

        #[test]
        fn character_entities_round_trip((text, entities, spans) in arb_text_and_spans()) {
            let record = serde_json::json!({
                "text": text,
                "entities": entities.iter().map(|(s, e, l)| serde_json::json!({"start": s, "end": e, "label": l})).collect::<Vec<_>>(),
            });
            let line = record.to_string();
            let opts = ReadOptions { words: WordSplit::Whitespace, ..ReadOptions::default() };
            let (examples, _) = parse_jsonl(line.as_bytes(), Path::new("t.jsonl"), &opts)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let tags = examples[0].tags.clone().unwrap_or_default();
            prop_assert_eq!(iob2_to_spans(&tags), spans.clone());
            let found = examples[0].text_entities(&tags);
            let back: Vec<(usize, usize, String)> = found.into_iter().map(|t| (t.start, t.end, t.label)).collect();
            prop_assert_eq!(back, entities);
        }
    }
}
