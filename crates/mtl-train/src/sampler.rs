//! Task sampling: which head a batch trains.

use mtl_model::Task;
use rand::RngExt;
use serde::{Deserialize, Serialize};

/// How each training batch picks its task.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum SamplingStrategy {
    /// A uniformly random task per batch (the seed's behaviour).
    Random,
    /// Probability proportional to each task's number of labelled training examples.
    Proportional,
    /// Probability proportional to `size^(1/temperature)` (1 = proportional, large = uniform).
    Temperature {
        /// The temperature `T`.
        temperature: f64,
    },
    /// Alternate between the tasks.
    RoundRobin,
    /// Both heads on every batch: a weighted sum of the losses, each head only on the examples
    /// that carry its labels.
    #[default]
    Joint,
}

impl std::str::FromStr for SamplingStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.to_ascii_lowercase();
        if let Some(t) = s.strip_prefix("temperature") {
            let t = t.trim_start_matches([':', '=']);
            let temperature = if t.is_empty() {
                2.0
            } else {
                t.parse().map_err(|_| format!("bad temperature in {s:?}"))?
            };
            return Ok(Self::Temperature { temperature });
        }
        match s.as_str() {
            "random" => Ok(Self::Random),
            "proportional" => Ok(Self::Proportional),
            "round-robin" | "round_robin" | "roundrobin" => Ok(Self::RoundRobin),
            "joint" => Ok(Self::Joint),
            _ => Err(format!(
                "unknown sampling strategy {s:?}: expected random, proportional, temperature[:T], round-robin or joint"
            )),
        }
    }
}

/// What a batch trains: one task, or both jointly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// One head.
    One(Task),
    /// Both heads.
    Both,
}

/// Picks tasks per batch; deterministic given the random generator it is handed.
#[derive(Debug, Clone)]
pub struct TaskSampler {
    strategy: SamplingStrategy,
    /// Sampling weight of [classification, ner], already normalised.
    weights: [f64; 2],
}

impl TaskSampler {
    /// `sizes` = number of labelled training examples for [classification, ner].
    pub fn new(strategy: SamplingStrategy, sizes: [usize; 2]) -> Self {
        let raw = match strategy {
            SamplingStrategy::Proportional => sizes.map(|n| n as f64),
            SamplingStrategy::Temperature { temperature } => sizes.map(|n| {
                if n == 0 {
                    0.0
                } else {
                    (n as f64).powf(1.0 / temperature.max(1e-6))
                }
            }),
            _ => sizes.map(|n| if n == 0 { 0.0 } else { 1.0 }),
        };
        let total: f64 = raw.iter().sum();
        let weights = if total > 0.0 {
            raw.map(|w| w / total)
        } else {
            [0.5, 0.5]
        };
        Self { strategy, weights }
    }

    /// The normalised sampling weights of [classification, ner].
    pub fn weights(&self) -> [f64; 2] {
        self.weights
    }

    /// The pick for global step `step`, given which tasks have labels in this batch.
    pub fn pick(&self, step: u64, available: [bool; 2], rng: &mut impl rand::Rng) -> Option<Pick> {
        let task = |i: usize| Task::ALL[i];
        match available {
            [false, false] => return None,
            [true, false] => return Some(Pick::One(task(0))),
            [false, true] => return Some(Pick::One(task(1))),
            [true, true] => {}
        }
        Some(match self.strategy {
            SamplingStrategy::Joint => Pick::Both,
            SamplingStrategy::RoundRobin => Pick::One(task((step % 2) as usize)),
            _ => {
                let u: f64 = rng.random();
                Pick::One(if u < self.weights[0] {
                    task(0)
                } else {
                    task(1)
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn parses_every_strategy() {
        for (s, want) in [
            ("random", SamplingStrategy::Random),
            ("proportional", SamplingStrategy::Proportional),
            (
                "temperature:3",
                SamplingStrategy::Temperature { temperature: 3.0 },
            ),
            ("round-robin", SamplingStrategy::RoundRobin),
            ("joint", SamplingStrategy::Joint),
        ] {
            assert_eq!(s.parse::<SamplingStrategy>(), Ok(want));
        }
        assert!("sometimes".parse::<SamplingStrategy>().is_err());
    }

    #[test]
    fn weights_follow_the_strategy() {
        let p = TaskSampler::new(SamplingStrategy::Proportional, [300, 100]).weights();
        assert!((p[0] - 0.75).abs() < 1e-12);
        let t = TaskSampler::new(
            SamplingStrategy::Temperature { temperature: 2.0 },
            [400, 100],
        )
        .weights();
        assert!((t[0] - 20.0 / 30.0).abs() < 1e-12);
        let r = TaskSampler::new(SamplingStrategy::Random, [400, 100]).weights();
        assert_eq!(r, [0.5, 0.5]);
    }

    #[test]
    fn picks_are_seeded_and_frequencies_match_weights() {
        let s = TaskSampler::new(SamplingStrategy::Proportional, [300, 100]);
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..4000)
                .map(|i| s.pick(i, [true, true], &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        let cls = run(7)
            .iter()
            .filter(|p| **p == Some(Pick::One(Task::Classification)))
            .count();
        assert!((2800..3200).contains(&cls), "{cls}");
        let rr = TaskSampler::new(SamplingStrategy::RoundRobin, [1, 1]);
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(
            rr.pick(0, [true, true], &mut rng),
            Some(Pick::One(Task::Classification))
        );
        assert_eq!(
            rr.pick(1, [true, true], &mut rng),
            Some(Pick::One(Task::Ner))
        );
        assert_eq!(
            rr.pick(1, [true, false], &mut rng),
            Some(Pick::One(Task::Classification))
        );
        assert_eq!(rr.pick(1, [false, false], &mut rng), None);
    }
}
