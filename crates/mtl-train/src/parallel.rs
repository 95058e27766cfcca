//! Data-parallel training steps: a batch cut into one part per device, each part's forward
//! and backward pass on its own thread with the model forked to its device, the gradients
//! moved to the main device, where the optimizer sums them. As burn-train's multi-device strategy, on any backend; losses
//! are normalised by the whole batch's target counts (the NER loss is a mean over the real
//! tags of the whole batch, not of each part), so a step on N replicas equals a step on one
//! device up to float rounding. Dropout masks follow examples ([`mtl_model::dropout::seeded`]),
//! so they too are the same however the batch is cut.

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};
use mtl_data::{Encoded, MultitaskBatcher};
use mtl_model::{MultitaskTransformer, Task};

use crate::error::{Error, Result};
use crate::loss::{cross_entropy_sum, token_cross_entropy_sum};
use crate::sampler::Pick;
use crate::trainer::LossWeights;

/// Where training steps run: one device, or replicas on several (a device may be named more
/// than once: two replicas on the CPU use two cores).
pub struct DataParallel {
    /// Autodiff devices; the first is the main one (model, optimizer, summed gradients).
    devices: Vec<Device>,
    /// One Rayon pool per replica, with an equal share of the process's threads (one each on
    /// two cores): each replica's matrix products run on its own cores instead of queueing in
    /// one shared pool (measured faster; see the README).
    pools: Vec<rayon::ThreadPool>,
}

/// The outcome of one step's forward and backward passes.
pub struct StepOutput {
    /// Gradients of the whole batch's loss, on the main device, as the parts whose sum they
    /// are (one per replica; the optimizer adds them, [`crate::optim::AdamW::step_scaled`],
    /// on the CPU in the pass that takes their norm).
    pub parts: Vec<GradientsParams>,
    /// The batch's mean loss per task (classification, NER), for the tasks the step trained
    /// and that have targets in the batch.
    pub losses: [Option<f32>; 2],
    /// The token-embedding rows whose gradient `parts` hold, in their order, when the step
    /// cut the table to them ([`DataParallel::step`]); `None`: the whole table's.
    pub token_rows: Option<Vec<u32>>,
}

impl std::fmt::Debug for DataParallel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataParallel")
            .field("devices", &self.devices)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for StepOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepOutput")
            .field("parts", &self.parts.len())
            .field("losses", &self.losses)
            .field("token_rows", &self.token_rows.as_ref().map(Vec::len))
            .finish()
    }
}

impl DataParallel {
    /// Steps on `devices` (plain devices; the steps run on their autodiff twins).
    pub fn new(devices: &[Device]) -> Result<Self> {
        if devices.is_empty() {
            return Err(Error::Option {
                option: "devices",
                message: "name at least one device".into(),
            });
        }
        let pools = if devices.len() > 1 {
            let threads = (rayon::current_num_threads() / devices.len()).max(1);
            devices
                .iter()
                .map(|_| {
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .start_handler(mtl_model::denormals::inherit())
                        .build()
                })
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::Option {
                    option: "devices",
                    message: format!("cannot start a replica thread: {e}"),
                })?
        } else {
            Vec::new()
        };
        Ok(Self {
            devices: devices.iter().map(|d| d.clone().autodiff()).collect(),
            pools,
        })
    }

    /// Number of replicas.
    pub fn replicas(&self) -> usize {
        self.devices.len()
    }

    /// Forward and backward passes of `pick` on `items` with `model` (on the main autodiff
    /// device, parameters as leaves), the losses weighted by `weights` and normalised by the
    /// targets of all `items`; dropout seeded by `seed`.
    ///
    /// With `cut_token_table`, the passes run on the model with its token-embedding table cut
    /// to the rows the batch reads ([`MultitaskTransformer::with_token_rows`]) and on ids
    /// remapped to them: the same values, but the table's gradient names only those rows
    /// ([`StepOutput::token_rows`]), so no replica builds, and no one sums or copies, a dense
    /// table of zeros. A frozen table is not cut.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &self,
        model: &MultitaskTransformer,
        items: &[&Encoded],
        pick: Pick,
        weights: LossWeights,
        seed: u64,
        batcher: &MultitaskBatcher,
        cut_token_table: bool,
    ) -> StepOutput {
        if cut_token_table {
            let rows = token_rows(items, batcher.pad_id);
            if let Some(cut) = model.with_token_rows(&rows) {
                let position = |id: u32| rows.binary_search(&id).unwrap_or(0) as u32;
                let remapped: Vec<Encoded> = items
                    .iter()
                    .map(|e| Encoded {
                        ids: e.ids.iter().map(|&id| position(id)).collect(),
                        ..(*e).clone()
                    })
                    .collect();
                let refs: Vec<&Encoded> = remapped.iter().collect();
                let batcher = MultitaskBatcher {
                    pad_id: position(batcher.pad_id),
                    ..*batcher
                };
                let out = self.step(&cut, &refs, pick, weights, seed, &batcher, false);
                return StepOutput {
                    token_rows: Some(rows),
                    ..out
                };
            }
        }
        let counts = target_counts(items);
        let job = Job {
            pick,
            counts,
            weights,
            seed,
            batcher,
        };
        let main = &self.devices[0];
        let (parts, sums) = if self.devices.len() == 1 {
            let (grads, sums) = job.run(model, items, 0, main);
            (vec![grads], sums)
        } else {
            self.replicated(&job, model, items)
        };
        let losses = [0, 1].map(|t| {
            let trained = match pick {
                Pick::One(task) => task == Task::ALL[t],
                Pick::Both => counts[t] > 0,
            };
            trained.then(|| (sums[t] / counts[t].max(1) as f64) as f32)
        });
        StepOutput {
            parts,
            losses,
            token_rows: None,
        }
    }

    fn replicated(
        &self,
        job: &Job,
        model: &MultitaskTransformer,
        items: &[&Encoded],
    ) -> (Vec<GradientsParams>, [f64; 2]) {
        let main = &self.devices[0];
        let parts = split_by_tokens(items, self.devices.len());
        let results = on_each_pool(&self.pools[..parts.len()], &|k| {
            let (part, device) = (parts[k].clone(), &self.devices[k]);
            let replica = model.clone().fork(device);
            job.run(&replica, &items[part.clone()], part.start, device)
        });
        let mut sums = [0.0; 2];
        let mut part_grads = Vec::with_capacity(results.len());
        for (grads, part_sums) in results {
            part_grads.push(grads.to_device(main, model));
            sums[0] += part_sums[0];
            sums[1] += part_sums[1];
        }
        (part_grads, sums)
    }
}

/// `f(k)` for every pool `k` of `pools`, run on that pool's threads, all at once; the results
/// in order. No thread is started: every pool but the last takes its call as a job, and the
/// calling thread hands the last pool its call and waits.
fn on_each_pool<T: Send>(pools: &[rayon::ThreadPool], f: &(dyn Fn(usize) -> T + Sync)) -> Vec<T> {
    fn go<T: Send>(
        pools: &[rayon::ThreadPool],
        first: usize,
        f: &(dyn Fn(usize) -> T + Sync),
        out: &mut [Option<T>],
    ) {
        match (pools.split_first(), out.split_first_mut()) {
            (Some((pool, [])), Some((slot, _))) => *slot = Some(pool.install(|| f(first))),
            (Some((pool, others)), Some((slot, rest))) => pool.in_place_scope(|scope| {
                scope.spawn(|_| *slot = Some(f(first)));
                go(others, first + 1, f, rest);
            }),
            _ => {}
        }
    }
    let mut out: Vec<Option<T>> = pools.iter().map(|_| None).collect();
    go(pools, 0, f, &mut out);
    out.into_iter().flatten().collect()
}

/// `items` cut into at most `parts` contiguous parts, none empty, of about equal token counts
/// (a step waits for its slowest replica; halves by example count differ by 5% in tokens on
/// SNIPS batches). Each cut falls where the running count comes closest to its share.
fn split_by_tokens(items: &[&Encoded], parts: usize) -> Vec<std::ops::Range<usize>> {
    let n = items.len();
    let parts = parts.clamp(1, n.max(1));
    let cost = |e: &&Encoded| e.len().max(1);
    let total: usize = items.iter().map(cost).sum();
    let mut cuts = vec![0];
    let mut seen = 0;
    for (i, e) in items.iter().enumerate() {
        let k = cuts.len();
        if k == parts {
            break;
        }
        // Cut before item `i` if the count up to it is closer to the k-th share than the
        // count with it, or if every part still to come needs one of the items left.
        let share = total * k;
        let (without, with) = (seen * parts, (seen + cost(e)) * parts);
        let closer = i > cuts[k - 1] && share.abs_diff(without) <= share.abs_diff(with);
        if closer || n - i == parts - k {
            cuts.push(i);
        }
        seen += cost(e);
    }
    cuts.push(n);
    cuts.windows(2)
        .map(|w| w[0]..w[1])
        .filter(|r| !r.is_empty())
        .collect()
}

/// How many CPU replicas `--device cpu` trains with: one per thread of the process's Rayon
/// pool (its cores, or `RAYON_NUM_THREADS`), at most one per 8 examples of a `batch_size`
/// batch. On two cores two replicas train the small and seed benchmark configurations
/// 1.3-2.2x faster than one replica using both cores for its matrix products (README); under
/// autodiff most of a step's element-wise work runs on one thread, which replicas multiply.
/// Past two cores the rule is untested: replicas then share the threads.
pub fn cpu_replicas(batch_size: usize) -> usize {
    rayon::current_num_threads().clamp(1, (batch_size / 8).max(1))
}

/// The dropout seed of step `step` of an epoch seeded by `epoch_seed` (SplitMix64's finaliser).
pub fn step_seed(epoch_seed: u64, step: u64) -> u64 {
    let mut z = epoch_seed ^ step.wrapping_add(1).wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The token-embedding rows a batch of `items` padded with `pad_id` reads: sorted, distinct.
pub fn token_rows(items: &[&Encoded], pad_id: u32) -> Vec<u32> {
    let mut rows: Vec<u32> = std::iter::once(pad_id)
        .chain(items.iter().flat_map(|e| e.ids.iter().copied()))
        .collect();
    rows.sort_unstable();
    rows.dedup();
    rows
}

/// Targets in `items` that the losses average over: known sentence labels, and tagged first
/// sub-tokens (as [`crate::loss::cross_entropy`] counts them in a batch of `items`).
pub fn target_counts(items: &[&Encoded]) -> [usize; 2] {
    let labels = items.iter().filter(|e| e.label_target >= 0).count();
    let tags = items
        .iter()
        .map(|e| {
            e.tag_targets
                .iter()
                .take(e.ids.len())
                .filter(|&&t| t >= 0)
                .count()
        })
        .sum();
    [labels, tags]
}

/// What every part of one step's batch computes.
struct Job<'a> {
    pick: Pick,
    /// Targets of the whole batch: labels, tags.
    counts: [usize; 2],
    weights: LossWeights,
    seed: u64,
    batcher: &'a MultitaskBatcher,
}

impl Job<'_> {
    /// Gradients of `items` (examples `first..first + items.len()` of the batch) and the sums
    /// of their per-target losses (classification, NER).
    fn run(
        &self,
        model: &MultitaskTransformer,
        items: &[&Encoded],
        first: usize,
        device: &Device,
    ) -> (GradientsParams, [f64; 2]) {
        let batch = self.batcher.batch(items, device);
        let mean = |sum: Tensor<1>, t: usize, weight: f64| {
            sum.div_scalar(self.counts[t].max(1) as f64)
                .mul_scalar(weight)
        };
        let w = self.weights;
        let (loss, sums) = mtl_model::dropout::seeded(self.seed, first, || match self.pick {
            Pick::One(Task::Classification) => {
                let sum = cross_entropy_sum(
                    model.classify_with(batch.tokens, batch.padding_mask, batch.chars),
                    batch.label_targets,
                );
                (mean(sum.clone(), 0, w.classification), [Some(sum), None])
            }
            Pick::One(Task::Ner) => {
                let sum = token_cross_entropy_sum(
                    model.tag_with(batch.tokens, batch.padding_mask, batch.chars),
                    batch.tag_targets,
                );
                (mean(sum.clone(), 1, w.ner), [None, Some(sum)])
            }
            Pick::Both => {
                let out = model.forward_joint_with(batch.tokens, batch.padding_mask, batch.chars);
                let c = cross_entropy_sum(out.classification, batch.label_targets);
                let n = token_cross_entropy_sum(out.ner, batch.tag_targets);
                (
                    mean(c.clone(), 0, w.classification) + mean(n.clone(), 1, w.ner),
                    [Some(c), Some(n)],
                )
            }
        });
        let sums = sums.map(|s| s.map_or(0.0, |s| f64::from(s.into_scalar::<f32>())));
        (GradientsParams::from_grads(loss.backward(), model), sums)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{sum_gradients, whole_table};
    use burn::module::{ModuleVisitor, Param, ParamId};
    use mtl_data::IGNORE_INDEX;
    use mtl_model::{MultitaskConfig, SharedEncoder};
    use proptest::prelude::*;

    /// Every gradient of `model` in `step` (its parts summed), flattened in visiting order; the token table's
    /// whole, where `step` holds some of its rows only.
    fn flat(model: &MultitaskTransformer, step: &mut StepOutput) -> Vec<f32> {
        struct Collect<'a>(&'a StepOutput, GradientsParams, ParamId, Vec<f32>);
        impl ModuleVisitor for Collect<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let Some(g) = self.1.get::<D>(param.id) else {
                    return;
                };
                let g = g.into_data().try_to_vec::<f32>().expect("f32 gradients");
                match &self.0.token_rows {
                    Some(rows) if param.id == self.2 => {
                        self.3.extend(whole_table(&g, rows, param.dims()));
                    }
                    _ => self.3.extend(g),
                }
            }
        }
        let SharedEncoder::Transformer(encoder) = &model.encoder;
        let grads = sum_gradients(model, std::mem::take(&mut step.parts));
        let mut c = Collect(step, grads, encoder.token_embedding.weight.id, Vec::new());
        model.visit(&mut c);
        c.3
    }

    /// Example `i`: a label on even examples only, tags on all but every third.
    fn item(i: usize, len: usize) -> Encoded {
        Encoded {
            ids: (0..len)
                .map(|t| 1 + ((i * 7 + t * 3) % 40) as u32)
                .collect(),
            word_ids: (0..len).map(Some).collect(),
            label_target: if i.is_multiple_of(2) {
                (i % 3) as i64
            } else {
                IGNORE_INDEX
            },
            tag_targets: (0..len)
                .map(|t| {
                    if i % 3 == 2 {
                        IGNORE_INDEX
                    } else {
                        ((i + t) % 5) as i64
                    }
                })
                .collect(),
            has_label: i.is_multiple_of(2),
            has_tags: i % 3 != 2,
            truncated: false,
            chars: Vec::new(),
        }
    }

    fn model(device: &Device) -> MultitaskTransformer {
        let config = MultitaskConfig::new(41, 3, 5)
            .with_d_model(16)
            .with_nhead(2)
            .with_num_encoder_layers(1)
            .with_dim_feedforward(32)
            .with_dropout(0.2)
            .with_max_seq_length(16);
        device.seed(4);
        MultitaskTransformer::new(&config, device)
            .expect("valid config")
            .valid()
            .to_device(&device.clone().autodiff())
            .train()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        /// One step on 1..=4 replicas gives the one-device gradients and losses (within float
        /// rounding), for every task pick, any batch size (fewer examples than replicas
        /// included) and lengths that pad each part differently; with the token table cut to
        /// the batch's rows or not (on one device, cut: the same bits).
        #[test]
        fn replicas_give_the_one_device_step(
            lengths in proptest::collection::vec(1usize..12, 1..9),
            replicas in 2usize..5,
            pick in 0usize..3,
            cut in any::<bool>(),
        ) {
            let cpu = Device::flex();
            // One model for every step: its initialisation draws from the device's generator,
            // which other tests running at the same time seed and draw from too.
            let m = model(&cpu);
            let items: Vec<Encoded> = lengths.iter().enumerate().map(|(i, &l)| item(i, l)).collect();
            let refs: Vec<&Encoded> = items.iter().collect();
            let pick = [Pick::One(Task::Classification), Pick::One(Task::Ner), Pick::Both][pick];
            let weights = LossWeights { classification: 0.7, ner: 1.3 };
            let batcher = MultitaskBatcher::new(0);
            let one = DataParallel::new(std::slice::from_ref(&cpu)).expect("one device");
            let many = DataParallel::new(&vec![cpu.clone(); replicas]).expect("replicas");
            let mut a = one.step(&m, &refs, pick, weights, 11, &batcher, false);
            let mut c = one.step(&m, &refs, pick, weights, 11, &batcher, true);
            prop_assert_eq!(c.token_rows.clone(), Some(token_rows(&refs, 0)));
            let (fa, fc) = (flat(&m, &mut a), flat(&m, &mut c));
            prop_assert_eq!(fa.len(), fc.len());
            prop_assert!(fa.iter().zip(&fc).all(|(x, y)| x.to_bits() == y.to_bits()));
            prop_assert_eq!(a.losses, c.losses);
            let mut b = many.step(&m, &refs, pick, weights, 11, &batcher, cut);
            prop_assert_eq!(b.token_rows.clone(), cut.then(|| token_rows(&refs, 0)));
            for (x, y) in a.losses.iter().zip(&b.losses) {
                prop_assert_eq!(x.is_some(), y.is_some());
                if let (Some(x), Some(y)) = (x, y) {
                    prop_assert!((x - y).abs() <= 1e-5 * x.abs().max(1e-3), "loss {} vs {}", x, y);
                }
            }
            let (ga, gb) = (fa, flat(&m, &mut b));
            prop_assert_eq!(ga.len(), gb.len());
            let scale = ga.iter().fold(0.0f32, |s, g| s.max(g.abs())).max(1e-6);
            for (i, (x, y)) in ga.iter().zip(&gb).enumerate() {
                prop_assert!((x - y).abs() <= 2e-5 * scale, "gradient {}: {} vs {}", i, x, y);
            }
        }
    }

    proptest! {
        /// The parts cover the batch in order, none empty, as many as there are replicas (or
        /// items), and no part holds more tokens than its share and one item.
        #[test]
        fn token_split_covers_the_batch_in_balanced_parts(
            lengths in proptest::collection::vec(0usize..40, 0..40),
            parts in 1usize..5,
        ) {
            let items: Vec<Encoded> = lengths.iter().enumerate().map(|(i, &l)| item(i, l)).collect();
            let refs: Vec<&Encoded> = items.iter().collect();
            let split = split_by_tokens(&refs, parts);
            prop_assert_eq!(split.len(), parts.min(items.len()));
            let mut next = 0;
            for r in &split {
                prop_assert_eq!(r.start, next);
                prop_assert!(!r.is_empty());
                next = r.end;
            }
            prop_assert_eq!(next, items.len());
            let cost = |r: &std::ops::Range<usize>| -> usize {
                lengths[r.clone()].iter().map(|&l| l.max(1)).sum()
            };
            let total: usize = lengths.iter().map(|&l| l.max(1)).sum();
            let longest = lengths.iter().map(|&l| l.max(1)).max().unwrap_or(0);
            for r in &split {
                prop_assert!(
                    cost(r) * parts <= total + 2 * longest * parts || r.len() == 1,
                    "{:?}: {} tokens of {} in {} parts", r, cost(r), total, parts
                );
            }
        }
    }

    #[test]
    fn each_call_runs_on_its_own_pool_in_order() {
        let pools: Vec<rayon::ThreadPool> = (1..=3)
            .map(|threads| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .expect("a pool")
            })
            .collect();
        // Pool k has k + 1 threads: what each call sees tells which pool ran it.
        let seen = on_each_pool(&pools, &|k| (k, rayon::current_num_threads()));
        assert_eq!(seen, vec![(0, 1), (1, 2), (2, 3)]);
        assert_eq!(on_each_pool(&pools[..1], &|k| k * 10), vec![0]);
        assert!(on_each_pool(&[], &|k| k).is_empty());
    }

    #[test]
    fn token_split_balances_tokens_not_examples() {
        let items: Vec<Encoded> = [10, 10, 10, 30, 2, 2, 2, 2]
            .iter()
            .enumerate()
            .map(|(i, &l)| item(i, l))
            .collect();
        let refs: Vec<&Encoded> = items.iter().collect();
        // 68 tokens, a share of 34: 30 before the long example is closer than 60 with it.
        assert_eq!(split_by_tokens(&refs, 2), vec![0..3, 3..8]);
        assert_eq!(split_by_tokens(&refs, 1), vec![0..8]);
        assert_eq!(split_by_tokens(&refs[..2], 4), vec![0..1, 1..2]);
        assert!(split_by_tokens(&[], 2).is_empty());
    }

    #[test]
    fn counts_are_the_targets_the_losses_average_over() {
        let items: Vec<Encoded> = (0..6).map(|i| item(i, 4)).collect();
        let refs: Vec<&Encoded> = items.iter().collect();
        // Labels on 0, 2, 4; tags on all but 2 and 5, 4 tokens each.
        assert_eq!(target_counts(&refs), [3, 16]);
        assert!(DataParallel::new(&[]).is_err());
        assert_ne!(step_seed(1, 0), step_seed(1, 1));
        assert_ne!(step_seed(1, 0), step_seed(2, 0));
    }
}
