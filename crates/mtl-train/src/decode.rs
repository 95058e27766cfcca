//! Reading tags off the NER head: each word's best tag on its own, or the best tag sequence
//! that is valid IOB2 (Viterbi decoding under transition constraints, as AllenNLP's
//! `allowed_transitions` and the decoding of a CRF with forbidden transitions do).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How [`predict`](crate::predict) turns the NER head's per-word tag probabilities into tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TagDecoding {
    /// Each word's most probable tag on its own. It can give `I-x` after `O` or after `B-y`.
    Argmax,
    /// The most probable tag sequence that is valid IOB2: `I-x` only right after `B-x` or
    /// `I-x`. Viterbi over the per-word log-probabilities, with no learned weights, so an
    /// entity's words share one type: the one the whole span scores best.
    #[default]
    Iob2,
}

impl TagDecoding {
    /// The name used on the command line and in configs.
    pub fn name(self) -> &'static str {
        match self {
            TagDecoding::Argmax => "argmax",
            TagDecoding::Iob2 => "iob2",
        }
    }
}

impl fmt::Display for TagDecoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A decoding name that is neither `argmax` nor `iob2`.
#[derive(Debug, thiserror::Error)]
#[error("unknown tag decoding {0:?}: expected \"argmax\" or \"iob2\"")]
pub struct UnknownDecoding(pub String);

impl FromStr for TagDecoding {
    type Err = UnknownDecoding;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "argmax" | "greedy" => Ok(TagDecoding::Argmax),
            "iob2" | "bio" | "viterbi" | "constrained" => Ok(TagDecoding::Iob2),
            _ => Err(UnknownDecoding(s.to_string())),
        }
    }
}

/// Which tag may follow which under IOB2, for one tag set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iob2Constraints {
    n: usize,
    /// `start[j]`: tag `j` may open a sentence.
    start: Vec<bool>,
    /// `allowed[i * n + j]`: tag `j` may follow tag `i`.
    allowed: Vec<bool>,
}

enum Part<'a> {
    Begin(&'a str),
    Inside(&'a str),
    Other,
}

fn split(tag: &str) -> Part<'_> {
    if let Some(t) = tag.strip_prefix("B-") {
        Part::Begin(t)
    } else if let Some(t) = tag.strip_prefix("I-") {
        Part::Inside(t)
    } else {
        Part::Other
    }
}

impl Iob2Constraints {
    /// The constraints for tags named `tags` (index = tag id). `I-x` may follow only `B-x` or
    /// `I-x` and may not open a sentence; every other tag (`O`, `B-x`, anything not in IOB2
    /// form) may go anywhere.
    pub fn new<S: AsRef<str>>(tags: &[S]) -> Self {
        let n = tags.len();
        let parts: Vec<Part<'_>> = tags.iter().map(|t| split(t.as_ref())).collect();
        let start = parts
            .iter()
            .map(|p| !matches!(p, Part::Inside(_)))
            .collect();
        let mut allowed = vec![true; n * n];
        for (j, next) in parts.iter().enumerate() {
            if let Part::Inside(ty) = next {
                for (i, prev) in parts.iter().enumerate() {
                    allowed[i * n + j] =
                        matches!(prev, Part::Begin(t) | Part::Inside(t) if t == ty);
                }
            }
        }
        Self { n, start, allowed }
    }

    /// Number of tags.
    pub fn num_tags(&self) -> usize {
        self.n
    }

    /// Whether `next` may follow `prev`.
    pub fn allows(&self, prev: usize, next: usize) -> bool {
        self.allowed[prev * self.n + next]
    }

    /// Whether `tag` may open a sentence.
    pub fn may_start(&self, tag: usize) -> bool {
        self.start[tag]
    }

    /// The valid tag sequence with the highest total log-probability.
    ///
    /// `log_probs` holds `len` rows of [`num_tags`](Self::num_tags) log-probabilities, one
    /// row per word. When no valid sequence has a finite score (a row that puts all its mass
    /// on forbidden tags), the rows are read one by one instead (argmax).
    ///
    /// # Panics
    /// If `log_probs.len() != len * num_tags()`.
    pub fn viterbi(&self, log_probs: &[f32], len: usize) -> Vec<usize> {
        let n = self.n;
        assert_eq!(log_probs.len(), len * n, "log_probs must be len x num_tags");
        if len == 0 || n == 0 {
            return vec![0; len];
        }
        let mut score: Vec<f32> = (0..n)
            .map(|j| {
                if self.start[j] {
                    log_probs[j]
                } else {
                    f32::NEG_INFINITY
                }
            })
            .collect();
        let mut back = vec![0u32; len * n];
        let mut next = vec![f32::NEG_INFINITY; n];
        for t in 1..len {
            let row = &log_probs[t * n..(t + 1) * n];
            for j in 0..n {
                let (mut best, mut arg) = (f32::NEG_INFINITY, 0usize);
                for (i, &s) in score.iter().enumerate() {
                    if self.allowed[i * n + j] && s > best {
                        best = s;
                        arg = i;
                    }
                }
                next[j] = best + row[j];
                back[t * n + j] = arg as u32;
            }
            std::mem::swap(&mut score, &mut next);
        }
        let (last, best) = argmax(&score);
        if !best.is_finite() {
            return (0..len)
                .map(|t| argmax(&log_probs[t * n..(t + 1) * n]).0)
                .collect();
        }
        let mut path = vec![0usize; len];
        path[len - 1] = last;
        for t in (1..len).rev() {
            path[t - 1] = back[t * n + path[t]] as usize;
        }
        path
    }
}

/// Index and value of the largest entry (the first on ties); `(0, -inf)` when empty.
pub(crate) fn argmax(row: &[f32]) -> (usize, f32) {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv { (i, v) } else { (bi, bv) }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TAGS: [&str; 5] = ["O", "B-a", "I-a", "B-b", "I-b"];

    fn valid(c: &Iob2Constraints, path: &[usize]) -> bool {
        path.first().is_none_or(|&t| c.may_start(t))
            && path.windows(2).all(|w| c.allows(w[0], w[1]))
    }

    fn total(lp: &[f32], n: usize, path: &[usize]) -> f32 {
        path.iter().enumerate().map(|(t, &j)| lp[t * n + j]).sum()
    }

    #[test]
    fn constraints_follow_iob2() {
        let c = Iob2Constraints::new(&TAGS);
        assert!(c.may_start(0) && c.may_start(1) && !c.may_start(2));
        assert!(c.allows(1, 2) && c.allows(2, 2) && c.allows(0, 1) && c.allows(2, 3));
        assert!(!c.allows(0, 2) && !c.allows(3, 2) && !c.allows(4, 2) && !c.allows(1, 4));
    }

    #[test]
    fn viterbi_repairs_a_broken_span() {
        // Argmax reads O I-a: the best valid path is B-a I-a (ln .4 + ln .6) rather than
        // O O (ln .6 + ln .1).
        let c = Iob2Constraints::new(&TAGS);
        let p = [[0.6, 0.4, 0.0, 0.0, 0.0], [0.1, 0.1, 0.6, 0.1, 0.1]];
        let lp: Vec<f32> = p.iter().flatten().map(|&x: &f32| x.ln()).collect();
        assert_eq!(c.viterbi(&lp, 2), vec![1, 2]);
        // A span whose words disagree on the type takes the type the span scores best.
        let p = [[0.1, 0.5, 0.0, 0.4, 0.0], [0.1, 0.0, 0.2, 0.0, 0.7]];
        let lp: Vec<f32> = p.iter().flatten().map(|&x: &f32| x.ln()).collect();
        assert_eq!(c.viterbi(&lp, 2), vec![3, 4]);
    }

    #[test]
    fn decoding_names_round_trip() {
        for d in [TagDecoding::Argmax, TagDecoding::Iob2] {
            assert_eq!(d.name().parse::<TagDecoding>().expect("parses"), d);
        }
        assert!("beam".parse::<TagDecoding>().is_err());
        assert_eq!(TagDecoding::default(), TagDecoding::Iob2);
    }

    /// Every valid path, by brute force.
    fn all_paths(len: usize, n: usize) -> Vec<Vec<usize>> {
        let mut paths = vec![vec![]];
        for _ in 0..len {
            paths = paths
                .into_iter()
                .flat_map(|p| {
                    (0..n).map(move |j| {
                        let mut q = p.clone();
                        q.push(j);
                        q
                    })
                })
                .collect();
        }
        paths
    }

    proptest! {
        /// Viterbi's path is valid and scores as well as the best valid path found by brute
        /// force; when argmax is already valid, it is argmax's.
        #[test]
        fn viterbi_is_the_best_valid_path(
            len in 1usize..5,
            raw in prop::collection::vec(0.01f32..1.0, 20),
        ) {
            let c = Iob2Constraints::new(&TAGS);
            let n = TAGS.len();
            let lp: Vec<f32> = raw[..len * n].iter().map(|x| x.ln()).collect();
            let path = c.viterbi(&lp, len);
            prop_assert!(valid(&c, &path));
            let best = all_paths(len, n)
                .into_iter()
                .filter(|p| valid(&c, p))
                .map(|p| total(&lp, n, &p))
                .fold(f32::NEG_INFINITY, f32::max);
            prop_assert!((total(&lp, n, &path) - best).abs() < 1e-4);
            let greedy: Vec<usize> = (0..len).map(|t| argmax(&lp[t * n..(t + 1) * n]).0).collect();
            if valid(&c, &greedy) {
                prop_assert!((total(&lp, n, &greedy) - total(&lp, n, &path)).abs() < 1e-4);
            }
        }
    }
}
