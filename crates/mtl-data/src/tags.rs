//! Tag schemes, the conversion to IOB2 and entity spans.
//!
//! Everything this crate hands out is IOB2 (also called BIO): an entity of type `X` is `B-X`
//! followed by zero or more `I-X`, every other word is `O`. Readers accept IOB2, IOB1 and
//! IOBES (with the BILOU spellings `L-X` for `E-X` and `U-X` for `S-X`) and convert with
//! [`to_iob2`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Problem};

/// The tagging scheme of the tags in a data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TagScheme {
    /// IOB1: `I-X` starts an entity unless it follows `B-X` or `I-X`; `B-X` only separates two
    /// adjacent entities of the same type. Reading IOB1 never counts as a repair.
    Iob1,
    /// IOB2 (BIO): every entity starts with `B-X`. `I-X` after `O` or after another type is
    /// ill-formed and repaired.
    #[default]
    Iob2,
    /// IOBES (BIOES, BILOU): `B-X I-X* E-X` or `S-X`. `I-X`/`E-X` that do not continue an open
    /// `B-X`/`I-X` are ill-formed and repaired.
    Iobes,
}

impl TagScheme {
    /// The tags this scheme accepts, in words (used in error messages).
    fn expected(self) -> String {
        match self {
            Self::Iob1 | Self::Iob2 => format!(
                "`O`, `B-TYPE` or `I-TYPE` ({self}; read files with E-/S- tags with the iobes \
                 scheme)"
            ),
            Self::Iobes => {
                "`O`, `B-TYPE`, `I-TYPE`, `E-TYPE`, `S-TYPE` (or `L-TYPE`, `U-TYPE`) (iobes)".into()
            }
        }
    }
}

impl fmt::Display for TagScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Iob1 => "iob1",
            Self::Iob2 => "iob2",
            Self::Iobes => "iobes",
        })
    }
}

impl FromStr for TagScheme {
    type Err = Error;

    /// Parses `iob1`, `iob2` (or `bio`), `iobes` (or `bioes`, `bilou`), ignoring case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "iob1" => Ok(Self::Iob1),
            "iob2" | "bio" => Ok(Self::Iob2),
            "iobes" | "bioes" | "bilou" => Ok(Self::Iobes),
            _ => Err(Error::UnknownScheme { name: s.into() }),
        }
    }
}

/// One tag, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tag<'a> {
    Outside,
    Begin(&'a str),
    Inside(&'a str),
    End(&'a str),
    Single(&'a str),
}

impl<'a> Tag<'a> {
    /// Parses `O` or `P-TYPE` with `P` one of `B I E S L U` and a non-empty `TYPE`.
    pub(crate) fn parse(tag: &'a str) -> Option<Self> {
        if tag == "O" {
            return Some(Self::Outside);
        }
        let kind = tag.get(2..).filter(|kind| !kind.is_empty())?;
        match tag.get(..2)? {
            "B-" => Some(Self::Begin(kind)),
            "I-" => Some(Self::Inside(kind)),
            "E-" | "L-" => Some(Self::End(kind)),
            "S-" | "U-" => Some(Self::Single(kind)),
            _ => None,
        }
    }

    /// The entity type, `None` for `O`.
    fn kind(self) -> Option<&'a str> {
        match self {
            Self::Outside => None,
            Self::Begin(k) | Self::Inside(k) | Self::End(k) | Self::Single(k) => Some(k),
        }
    }
}

/// Checks that `tag` is a tag of `scheme`.
pub(crate) fn check_tag(tag: &str, scheme: TagScheme) -> Result<(), Problem> {
    let ok = match Tag::parse(tag) {
        Some(Tag::Outside | Tag::Begin(_) | Tag::Inside(_)) => true,
        Some(Tag::End(_) | Tag::Single(_)) => scheme == TagScheme::Iobes,
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Problem::InvalidTag {
            tag: tag.into(),
            expected: scheme.expected(),
        })
    }
}

/// Checks every tag of a sentence and converts the sentence to IOB2; on failure gives the index
/// of the first bad tag.
pub(crate) fn normalize_tags<S: AsRef<str>>(
    tags: &[S],
    scheme: TagScheme,
) -> Result<(Vec<String>, bool), (usize, Problem)> {
    for (i, tag) in tags.iter().enumerate() {
        check_tag(tag.as_ref(), scheme).map_err(|problem| (i, problem))?;
    }
    Ok(to_iob2(tags, scheme))
}

/// Converts a tag sequence to IOB2, reading it the way `conlleval` does.
///
/// An `I-X` (or IOBES `E-X`) continues an entity only when the previous tag is `B-X` or `I-X`;
/// otherwise it starts a new entity and becomes `B-X`. In IOB1 that is the scheme's rule; in
/// IOB2 and IOBES it is a repair, and the returned flag is `true`. IOBES `S-X` becomes `B-X`,
/// `E-X` that closes an entity becomes `I-X`. Tags that do not parse (neither `O` nor
/// `P-TYPE`) are kept unchanged and end any open entity; the readers reject them before they
/// get here.
///
/// ```
/// use mtl_data::{to_iob2, TagScheme};
/// let tags: Vec<String> = ["O", "I-PER", "I-PER", "B-LOC"].map(String::from).into();
/// let (iob2, repaired) = to_iob2(&tags, TagScheme::Iob2);
/// assert_eq!(iob2, ["O", "B-PER", "I-PER", "B-LOC"]);
/// assert!(repaired);
/// let (iob2, repaired) = to_iob2(&tags, TagScheme::Iob1);
/// assert_eq!(iob2, ["O", "B-PER", "I-PER", "B-LOC"]);
/// assert!(!repaired);
/// ```
pub fn to_iob2<S: AsRef<str>>(tags: &[S], scheme: TagScheme) -> (Vec<String>, bool) {
    let mut out = Vec::with_capacity(tags.len());
    let mut repaired = false;
    let mut previous: Option<Tag<'_>> = None;
    for raw in tags {
        let raw = raw.as_ref();
        let parsed = Tag::parse(raw);
        let converted = match parsed {
            None => raw.to_owned(),
            Some(Tag::Outside) => "O".to_owned(),
            Some(Tag::Begin(kind) | Tag::Single(kind)) => format!("B-{kind}"),
            Some(Tag::Inside(kind) | Tag::End(kind)) => {
                let continues = matches!(
                    previous,
                    Some(Tag::Begin(p) | Tag::Inside(p)) if p == kind
                );
                if continues {
                    format!("I-{kind}")
                } else {
                    repaired |= scheme != TagScheme::Iob1;
                    format!("B-{kind}")
                }
            }
        };
        out.push(converted);
        previous = parsed;
    }
    (out, repaired)
}

/// An entity over whole words: `words[start..end]` has type `label`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EntitySpan {
    /// Index of the first word.
    pub start: usize,
    /// Index one past the last word.
    pub end: usize,
    /// The entity type (`artist`, not `B-artist`).
    pub label: String,
}

/// Reads the entities of an IOB2 sequence.
///
/// `I-X` that does not continue an entity of type `X` starts one (as `conlleval` reads it);
/// `O` and tags that do not parse end the open entity. The input is meant to be IOB2: convert
/// other schemes with [`to_iob2`] first.
///
/// ```
/// use mtl_data::{iob2_to_spans, EntitySpan};
/// let tags: Vec<String> = ["B-artist", "I-artist", "O", "B-service"].map(String::from).into();
/// let spans = iob2_to_spans(&tags);
/// assert_eq!(spans[0], EntitySpan { start: 0, end: 2, label: "artist".into() });
/// assert_eq!(spans[1], EntitySpan { start: 3, end: 4, label: "service".into() });
/// ```
pub fn iob2_to_spans<S: AsRef<str>>(tags: &[S]) -> Vec<EntitySpan> {
    let mut spans = Vec::new();
    let mut open: Option<EntitySpan> = None;
    for (i, tag) in tags.iter().enumerate() {
        let parsed = Tag::parse(tag.as_ref());
        let continues = match (parsed, open.as_ref()) {
            (Some(Tag::Inside(kind) | Tag::End(kind)), Some(span)) => span.label == kind,
            _ => false,
        };
        if continues {
            if let Some(span) = open.as_mut() {
                span.end = i + 1;
            }
            continue;
        }
        spans.extend(open.take());
        open = parsed.and_then(Tag::kind).map(|kind| EntitySpan {
            start: i,
            end: i + 1,
            label: kind.to_owned(),
        });
    }
    spans.extend(open);
    spans
}

/// Writes entities as an IOB2 sequence of `n_words` tags.
///
/// Spans should not overlap (a later span overwrites the words of an earlier one); the parts
/// of a span beyond `n_words` and empty spans are ignored.
///
/// ```
/// use mtl_data::{spans_to_iob2, EntitySpan};
/// let tags = spans_to_iob2(4, &[EntitySpan { start: 1, end: 3, label: "city".into() }]);
/// assert_eq!(tags, ["O", "B-city", "I-city", "O"]);
/// ```
pub fn spans_to_iob2(n_words: usize, spans: &[EntitySpan]) -> Vec<String> {
    let mut tags = vec!["O".to_owned(); n_words];
    for span in spans {
        let end = span.end.min(n_words);
        for (offset, tag) in tags.iter_mut().enumerate().take(end).skip(span.start) {
            let prefix = if offset == span.start { "B" } else { "I" };
            *tag = format!("{prefix}-{}", span.label);
        }
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn strings(tags: &[&str]) -> Vec<String> {
        tags.iter().map(|t| (*t).to_owned()).collect()
    }

    #[test]
    fn scheme_names_round_trip() {
        for scheme in [TagScheme::Iob1, TagScheme::Iob2, TagScheme::Iobes] {
            assert_eq!(scheme.to_string().parse::<TagScheme>().ok(), Some(scheme));
        }
        assert_eq!("BIO".parse::<TagScheme>().ok(), Some(TagScheme::Iob2));
        assert!(matches!(
            "bilu".parse::<TagScheme>(),
            Err(Error::UnknownScheme { name }) if name == "bilu"
        ));
    }

    #[test]
    fn iob2_repairs_like_conlleval() {
        let (tags, repaired) = to_iob2(
            &strings(&["I-A", "I-A", "B-B", "I-A", "O", "I-B"]),
            TagScheme::Iob2,
        );
        assert_eq!(tags, ["B-A", "I-A", "B-B", "B-A", "O", "B-B"]);
        assert!(repaired);
        let (tags, repaired) = to_iob2(&strings(&["B-A", "I-A", "O"]), TagScheme::Iob2);
        assert_eq!(tags, ["B-A", "I-A", "O"]);
        assert!(!repaired);
    }

    #[test]
    fn iob1_converts_without_repair() {
        let (tags, repaired) = to_iob2(
            &strings(&["I-A", "I-A", "B-A", "O", "I-B"]),
            TagScheme::Iob1,
        );
        assert_eq!(tags, ["B-A", "I-A", "B-A", "O", "B-B"]);
        assert!(!repaired);
    }

    #[test]
    fn iobes_converts_and_repairs() {
        let (tags, repaired) = to_iob2(
            &strings(&["S-A", "B-B", "I-B", "E-B", "O", "U-C", "B-D", "L-D"]),
            TagScheme::Iobes,
        );
        assert_eq!(tags, ["B-A", "B-B", "I-B", "I-B", "O", "B-C", "B-D", "I-D"]);
        assert!(!repaired);
        let (tags, repaired) = to_iob2(&strings(&["O", "E-A"]), TagScheme::Iobes);
        assert_eq!(tags, ["O", "B-A"]);
        assert!(repaired);
        let (tags, repaired) = to_iob2(&strings(&["B-A", "E-A", "I-A"]), TagScheme::Iobes);
        assert_eq!(tags, ["B-A", "I-A", "B-A"]);
        assert!(repaired);
    }

    #[test]
    fn check_tag_follows_scheme() {
        assert!(check_tag("O", TagScheme::Iob2).is_ok());
        assert!(check_tag("B-x-y", TagScheme::Iob2).is_ok());
        assert!(check_tag("S-x", TagScheme::Iob2).is_err());
        assert!(check_tag("S-x", TagScheme::Iobes).is_ok());
        for bad in ["", "B-", "PER", "o", "X-PER", "B_PER"] {
            assert!(check_tag(bad, TagScheme::Iobes).is_err(), "{bad}");
        }
        let Err((index, Problem::InvalidTag { tag, .. })) =
            normalize_tags(&["O", "B-A", "E-A"], TagScheme::Iob2)
        else {
            panic!("E-A accepted in IOB2");
        };
        assert_eq!((index, tag.as_str()), (2, "E-A"));
    }

    #[test]
    fn spans_read_ill_formed_sequences() {
        let spans = iob2_to_spans(&strings(&["I-A", "I-B", "I-B", "O", "B-A", "B-A"]));
        let got: Vec<(usize, usize, &str)> = spans
            .iter()
            .map(|s| (s.start, s.end, s.label.as_str()))
            .collect();
        assert_eq!(got, [(0, 1, "A"), (1, 3, "B"), (4, 5, "A"), (5, 6, "A")]);
        assert_eq!(
            spans_to_iob2(
                2,
                &[EntitySpan {
                    start: 1,
                    end: 9,
                    label: "A".into()
                }]
            ),
            ["O", "B-A"]
        );
    }

    fn arb_spans() -> impl Strategy<Value = (usize, Vec<EntitySpan>)> {
        // Words 0..n split into runs; each run is either outside or one entity.
        proptest::collection::vec((1usize..4, proptest::option::of(0usize..3)), 0..12).prop_map(
            |runs| {
                let mut spans = Vec::new();
                let mut at = 0;
                for (len, kind) in runs {
                    if let Some(kind) = kind {
                        spans.push(EntitySpan {
                            start: at,
                            end: at + len,
                            label: ["per", "loc", "b-x"][kind].to_owned(),
                        });
                    }
                    at += len;
                }
                (at, spans)
            },
        )
    }

    proptest! {
        #[test]
        fn entities_survive_bio((n, spans) in arb_spans()) {
            let tags = spans_to_iob2(n, &spans);
            prop_assert_eq!(tags.len(), n);
            prop_assert_eq!(iob2_to_spans(&tags), spans);
            let (again, repaired) = to_iob2(&tags, TagScheme::Iob2);
            prop_assert!(!repaired);
            prop_assert_eq!(again, tags);
        }

        #[test]
        fn iobes_round_trips_through_iob2((n, spans) in arb_spans()) {
            let mut iobes = vec!["O".to_owned(); n];
            for s in &spans {
                for (i, tag) in iobes.iter_mut().enumerate().take(s.end).skip(s.start) {
                    let p = match (i == s.start, i + 1 == s.end) {
                        (true, true) => "S",
                        (true, false) => "B",
                        (false, true) => "E",
                        (false, false) => "I",
                    };
                    *tag = format!("{p}-{}", s.label);
                }
            }
            let (iob2, repaired) = to_iob2(&iobes, TagScheme::Iobes);
            prop_assert!(!repaired);
            prop_assert_eq!(iob2_to_spans(&iob2), spans);
        }
    }
}
