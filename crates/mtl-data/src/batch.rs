//! Padding, masks and batch planning.

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use rand::Rng;
use rand::seq::SliceRandom;

use crate::chars::CHAR_PAD;
use crate::encode::{Encoded, Encoder, IGNORE_INDEX};

/// A padded batch of encoded examples.
///
/// # Shapes
///
/// - `tokens`: `[batch, seq]`, padded with the batcher's `pad_id`.
/// - `padding_mask`: `[batch, seq]`, Burn's convention: **`true` = padding** (a position to
///   ignore), `false` = a real token. This is the opposite of a HuggingFace `attention_mask`
///   (`1` = keep); convert with `padding_mask.bool_not()` where one is needed.
/// - `label_targets`: `[batch]`, [`IGNORE_INDEX`] where an example has no known label.
/// - `tag_targets`: `[batch, seq]`, [`IGNORE_INDEX`] on padding and on every position that
///   carries no tag.
///
/// - `chars`: `[batch, seq, max_chars]` character ids of each token's word ([`CHAR_PAD`] on
///   padding and special tokens), when the batcher has a character width.
///
/// `seq` is the length of the longest example of the batch (dynamic padding), never more.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Token ids, `[batch, seq]`.
    pub tokens: Tensor<2, Int>,
    /// `true` where a position is padding, `[batch, seq]`.
    pub padding_mask: Tensor<2, Bool>,
    /// Sentence-label targets, `[batch]`.
    pub label_targets: Tensor<1, Int>,
    /// Tag targets, `[batch, seq]`.
    pub tag_targets: Tensor<2, Int>,
    /// Character ids, `[batch, seq, max_chars]`, when the batcher has a character width.
    pub chars: Option<Tensor<3, Int>>,
    /// Per example: whether it has a sentence label.
    pub has_label: Vec<bool>,
    /// Per example: whether it has tags.
    pub has_tags: Vec<bool>,
    /// Per example: its number of tokens before padding.
    pub lengths: Vec<usize>,
}

impl Batch {
    /// Number of examples.
    pub fn batch_size(&self) -> usize {
        self.lengths.len()
    }

    /// Padded length (the longest example's length).
    pub fn seq_len(&self) -> usize {
        let [_, seq] = self.tokens.dims();
        seq
    }
}

/// Pads encoded examples into a [`Batch`]; the counterpart of Burn's `Batcher` (which needs a
/// Burn feature this crate does not enable), with the same shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultitaskBatcher {
    /// The id written on padded positions (see [`crate::TextEncoder::pad_id`]).
    pub pad_id: u32,
    /// Character ids per token ([`crate::CharSpec::max_chars`]); 0: the batch has no
    /// character ids.
    pub max_chars: usize,
}

impl MultitaskBatcher {
    /// A batcher padding with `pad_id`, without character ids.
    pub fn new(pad_id: u32) -> Self {
        Self {
            pad_id,
            max_chars: 0,
        }
    }

    /// The batcher for what `encoder` encodes: its padding id and character width.
    pub fn for_encoder(encoder: &Encoder) -> Self {
        Self {
            pad_id: encoder.text.pad_id(),
            max_chars: encoder.chars.map_or(0, |c| c.max_chars),
        }
    }

    /// Pads `items` to the longest of them and moves the batch to `device`.
    ///
    /// The padding mask is made here: `true` marks padding (Burn's convention). An empty
    /// `items` gives a batch of shape `[0, 0]`; an example with no token gives an all-padding
    /// row. With a character width, an item whose `chars` are missing or short (hand-built
    /// items) gets [`CHAR_PAD`] where they are missing.
    pub fn batch(&self, items: &[&Encoded], device: &Device) -> Batch {
        let batch = items.len();
        let seq = items.iter().map(|e| e.ids.len()).max().unwrap_or(0);
        let mut tokens = Vec::with_capacity(batch * seq);
        let mut mask = Vec::with_capacity(batch * seq);
        let mut tags = Vec::with_capacity(batch * seq);
        for item in items {
            let n = item.ids.len();
            tokens.extend(item.ids.iter().map(|&id| i64::from(id)));
            tokens.extend(std::iter::repeat_n(i64::from(self.pad_id), seq - n));
            mask.extend(std::iter::repeat_n(false, n));
            mask.extend(std::iter::repeat_n(true, seq - n));
            // Targets shorter than ids (hand-built items) are ignored where missing.
            tags.extend((0..n).map(|i| item.tag_targets.get(i).copied().unwrap_or(IGNORE_INDEX)));
            tags.extend(std::iter::repeat_n(IGNORE_INDEX, seq - n));
        }
        let labels: Vec<i64> = items.iter().map(|e| e.label_target).collect();
        let chars = (self.max_chars > 0).then(|| {
            let width = self.max_chars;
            let mut chars = Vec::with_capacity(batch * seq * width);
            for item in items {
                let n = item.ids.len() * width;
                chars.extend(
                    (0..n).map(|i| i64::from(item.chars.get(i).copied().unwrap_or(CHAR_PAD))),
                );
                chars.extend(std::iter::repeat_n(i64::from(CHAR_PAD), (seq * width) - n));
            }
            Tensor::from_data(TensorData::new(chars, [batch, seq, width]), device)
        });
        Batch {
            tokens: Tensor::from_data(TensorData::new(tokens, [batch, seq]), device),
            padding_mask: Tensor::from_data(TensorData::new(mask, [batch, seq]), device),
            label_targets: Tensor::from_data(TensorData::new(labels, [batch]), device),
            tag_targets: Tensor::from_data(TensorData::new(tags, [batch, seq]), device),
            chars,
            has_label: items.iter().map(|e| e.has_label).collect(),
            has_tags: items.iter().map(|e| e.has_tags).collect(),
            lengths: items.iter().map(|e| e.ids.len()).collect(),
        }
    }
}

/// How many batches' worth of examples are sorted together when bucketing shuffled data.
const BUCKET_POOL: usize = 50;

/// Batch-planning settings; [`plan_batches`] with a receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPlan {
    /// Examples per batch (0 is read as 1).
    pub batch_size: usize,
    /// Group examples of similar length to reduce padding.
    pub bucketing: bool,
}

impl BatchPlan {
    /// Batches in a fixed order (for evaluation).
    pub fn plan(&self, lengths: &[usize]) -> Vec<Vec<usize>> {
        plan_batches(
            lengths,
            self.batch_size,
            None::<&mut rand::rngs::StdRng>,
            self.bucketing,
        )
    }

    /// Batches in a random order (for training).
    pub fn plan_shuffled(&self, lengths: &[usize], rng: &mut impl Rng) -> Vec<Vec<usize>> {
        plan_batches(lengths, self.batch_size, Some(rng), self.bucketing)
    }
}

/// Splits example indices `0..lengths.len()` into batches of at most `batch_size` (0 is read
/// as 1); every index appears exactly once, and no batch is empty.
///
/// - Neither shuffling nor bucketing: consecutive indices in order.
/// - `shuffle` only: a random permutation, cut into batches.
/// - `bucketing` only: indices sorted by length (stable), cut into batches.
/// - Both: a random permutation cut into pools of 50 batches, each pool sorted by length and
///   cut into batches, then the batches shuffled; batches hold examples of similar length
///   while their order and contents still vary between epochs.
///
/// ```
/// let lengths = [5, 1, 4, 2, 3];
/// let batches = mtl_data::plan_batches(&lengths, 2, None::<&mut rand::rngs::StdRng>, true);
/// assert_eq!(batches, [vec![1, 3], vec![4, 2], vec![0]]);
/// ```
pub fn plan_batches(
    lengths: &[usize],
    batch_size: usize,
    shuffle: Option<&mut impl Rng>,
    bucketing: bool,
) -> Vec<Vec<usize>> {
    let size = batch_size.max(1);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    let by_length = |i: &usize| lengths[*i];
    match shuffle {
        None => {
            if bucketing {
                order.sort_by_key(by_length);
            }
            order.chunks(size).map(<[usize]>::to_vec).collect()
        }
        Some(rng) => {
            order.shuffle(rng);
            if !bucketing {
                return order.chunks(size).map(<[usize]>::to_vec).collect();
            }
            let mut batches: Vec<Vec<usize>> = Vec::with_capacity(order.len().div_ceil(size));
            for pool in order.chunks_mut(size.saturating_mul(BUCKET_POOL)) {
                pool.sort_by_key(by_length);
                batches.extend(pool.chunks(size).map(<[usize]>::to_vec));
            }
            batches.shuffle(rng);
            batches
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn ints(t: Tensor<2, Int>) -> Vec<i64> {
        t.into_data().try_into_vec_as::<i64>().expect("int data")
    }

    fn encoded(ids: Vec<u32>, label: i64, tags: Vec<i64>, has_tags: bool) -> Encoded {
        let ids_for_chars = ids.clone();
        Encoded {
            word_ids: (0..ids.len()).map(Some).collect(),
            ids,
            label_target: label,
            tag_targets: tags,
            has_label: label != IGNORE_INDEX,
            has_tags,
            truncated: false,
            // Two character ids per token, for batchers with `max_chars: 2`.
            chars: ids_for_chars.iter().flat_map(|&id| [id, id + 1]).collect(),
        }
    }

    #[test]
    fn pads_to_longest_with_mask() {
        let device = Device::flex();
        let a = encoded(vec![5, 6, 7], 1, vec![0, -100, 2], true);
        let b = encoded(vec![8], IGNORE_INDEX, vec![-100], false);
        let batch = MultitaskBatcher::new(0).batch(&[&a, &b], &device);
        assert_eq!(batch.tokens.dims(), [2, 3]);
        assert_eq!((batch.batch_size(), batch.seq_len()), (2, 3));
        assert_eq!(ints(batch.tokens.clone()), [5, 6, 7, 8, 0, 0]);
        let mask = batch
            .padding_mask
            .clone()
            .into_data()
            .try_into_vec_as::<bool>()
            .expect("bool data");
        assert_eq!(mask, [false, false, false, false, true, true]);
        assert_eq!(
            ints(batch.tag_targets.clone()),
            [0, -100, 2, -100, -100, -100]
        );
        let labels = batch
            .label_targets
            .clone()
            .into_data()
            .try_into_vec_as::<i64>();
        assert_eq!(labels.ok(), Some(vec![1, -100]));
        assert_eq!(batch.has_label, [true, false]);
        assert_eq!(batch.has_tags, [true, false]);
        assert_eq!(batch.lengths, [3, 1]);
        assert!(batch.chars.is_none());
    }

    #[test]
    fn empty_batch_has_zero_shape() {
        let batch = MultitaskBatcher::new(0).batch(&[], &Device::flex());
        assert_eq!(batch.tokens.dims(), [0, 0]);
        assert_eq!(batch.batch_size(), 0);
    }

    #[test]
    fn bucketing_groups_similar_lengths() {
        let lengths: Vec<usize> = (0..1000).map(|i| (i * 7919) % 97).collect();
        let mut rng = StdRng::seed_from_u64(3);
        let plan = BatchPlan {
            batch_size: 10,
            bucketing: true,
        };
        let batches = plan.plan_shuffled(&lengths, &mut rng);
        let padding = |batches: &[Vec<usize>]| -> usize {
            batches
                .iter()
                .map(|b| {
                    let max = b.iter().map(|&i| lengths[i]).max().unwrap_or(0);
                    b.iter().map(|&i| max - lengths[i]).sum::<usize>()
                })
                .sum()
        };
        let unbucketed = BatchPlan {
            batch_size: 10,
            bucketing: false,
        }
        .plan_shuffled(&lengths, &mut rng);
        assert!(padding(&batches) * 5 < padding(&unbucketed));
        assert_eq!(plan.plan(&lengths).len(), 100);
        assert_eq!(
            BatchPlan {
                batch_size: 0,
                bucketing: false
            }
            .plan(&[1, 2]),
            [vec![0], vec![1]]
        );
    }

    fn arb_items() -> impl Strategy<Value = Vec<Encoded>> {
        let item = (0usize..9, -100i64..5, any::<bool>()).prop_flat_map(|(n, label, has_tags)| {
            (
                proptest::collection::vec(1u32..1000, n),
                proptest::collection::vec(-100i64..8, n),
            )
                .prop_map(move |(ids, tags)| encoded(ids, label, tags, has_tags))
        });
        proptest::collection::vec(item, 1..8)
    }

    proptest! {
        #[test]
        fn unbatching_gives_back_the_examples(items in arb_items(), pad in 0u32..3) {
            let device = Device::flex();
            let refs: Vec<&Encoded> = items.iter().collect();
            let batcher = MultitaskBatcher { pad_id: pad, max_chars: 2 };
            let batch = batcher.batch(&refs, &device);
            let [b, s] = batch.tokens.dims();
            let chars = batch.chars.clone().ok_or_else(|| TestCaseError::fail("no chars"))?;
            prop_assert_eq!(chars.dims(), [b, s, 2]);
            let chars = chars.into_data().try_into_vec_as::<i64>().map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            let longest = items.iter().map(|e| e.ids.len()).max().unwrap_or(0);
            prop_assert_eq!((b, s), (items.len(), longest));
            prop_assert_eq!(batch.padding_mask.dims(), [b, s]);
            prop_assert_eq!(batch.tag_targets.dims(), [b, s]);
            let tokens = ints(batch.tokens.clone());
            let tags = ints(batch.tag_targets.clone());
            let mask = batch.padding_mask.clone().into_data().try_into_vec_as::<bool>().map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            let labels = batch.label_targets.clone().into_data().try_into_vec_as::<i64>().map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            for (row, item) in items.iter().enumerate() {
                let n = batch.lengths[row];
                prop_assert_eq!(n, item.ids.len());
                let ids: Vec<u32> = tokens[row * s..row * s + n].iter().map(|&t| t as u32).collect();
                prop_assert_eq!(&ids, &item.ids);
                prop_assert_eq!(&tags[row * s..row * s + n], &item.tag_targets[..]);
                let row_chars: Vec<u32> = chars[row * s * 2..row * s * 2 + n * 2].iter().map(|&c| c as u32).collect();
                prop_assert_eq!(&row_chars, &item.chars);
                prop_assert!(chars[(row * s + n) * 2..(row + 1) * s * 2].iter().all(|&c| c == i64::from(CHAR_PAD)));
                prop_assert!(mask[row * s..row * s + n].iter().all(|m| !m));
                prop_assert!(mask[row * s + n..(row + 1) * s].iter().all(|&m| m));
                prop_assert!(tokens[row * s + n..(row + 1) * s].iter().all(|&t| t == i64::from(pad)));
                prop_assert!(tags[row * s + n..(row + 1) * s].iter().all(|&t| t == IGNORE_INDEX));
                prop_assert_eq!(labels[row], item.label_target);
                prop_assert_eq!(batch.has_label[row], item.has_label);
                prop_assert_eq!(batch.has_tags[row], item.has_tags);
            }
        }

        #[test]
        fn plan_is_a_permutation(
            lengths in proptest::collection::vec(0usize..50, 0..300),
            batch_size in 0usize..40,
            seed in any::<u64>(),
            shuffle in any::<bool>(),
            bucketing in any::<bool>(),
        ) {
            let mut rng = StdRng::seed_from_u64(seed);
            let batches = plan_batches(&lengths, batch_size, shuffle.then_some(&mut rng), bucketing);
            let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
            prop_assert!(batches.iter().all(|b| !b.is_empty() && b.len() <= batch_size.max(1)));
            prop_assert_eq!(batches.len(), lengths.len().div_ceil(batch_size.max(1)));
        }
    }
}
