//! AdamW as PyTorch's `torch.optim.AdamW` (eps 1e-8, decoupled weight decay, none on biases and
//! LayerNorm parameters), global-norm gradient clipping as `clip_grad_norm_`, and the linear
//! warmup / linear decay schedule of `transformers.get_linear_schedule_with_warmup`.
//!
//! Burn's own AdamW decays every parameter and clips per tensor; this one keeps PyTorch's
//! semantics. State is keyed by parameter path, so it survives save and load.
//!
//! On the CPU backend the update is one fused pass per parameter over host memory, split over
//! the Rayon pool: flex runs each element-wise tensor op on one thread, and the ~15 ops of an
//! update were a third of a SNIPS training step (10 of 32 s an epoch). Flex hands over a
//! tensor's buffer without copying when nothing else holds it, and takes it back the same way,
//! so the pass reads and writes parameter, gradient and moments once each. The arithmetic is
//! the tensor path's, operation for operation, in f32 (equal within 1e-5 relative, tested).

use std::collections::HashMap;

use rayon::prelude::*;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use mtl_model::math::{sum_of_squares, vectorized};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// AdamW hyper-parameters (PyTorch's defaults but weight decay, which users set).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon (PyTorch: 1e-8; Burn's default is 1e-5).
    pub eps: f64,
    /// Decoupled weight decay applied to matrices (weights, embeddings); never to vectors
    /// (biases, LayerNorm gains and shifts).
    pub weight_decay: f64,
    /// Update only the rows of embedding tables (Burn `Embedding` modules) that the step's
    /// batch used, as TensorFlow's `LazyAdam` and PyTorch's `SparseAdam` do: a row whose
    /// gradient is zero keeps its weights and moments (no momentum step, no weight decay)
    /// until a batch uses it again. Other parameters are updated as usual. Off: PyTorch's
    /// dense AdamW, which moves every row on every step.
    #[serde(default)]
    pub lazy_embeddings: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            lazy_embeddings: false,
        }
    }
}

#[derive(Debug, Clone)]
struct Moments {
    m: Tensor<1>,
    v: Tensor<1>,
}

/// AdamW with per-parameter state keyed by the parameter's module path.
#[derive(Debug, Clone)]
pub struct AdamW {
    config: AdamWConfig,
    step: u64,
    state: HashMap<String, Moments>,
    /// Token-embedding tables whose zero-gradient rows are updated late (see
    /// [`defer_token_rows`](Self::defer_token_rows)); `None`: every row on every step.
    deferred: Option<HashMap<String, Deferred>>,
}

/// The zero-gradient steps a token-embedding table's rows are owed. Dense AdamW moves a
/// row whose gradient is zero too (its moments decay, and it keeps moving along its first
/// moment and under weight decay); on the CPU those passes over the whole table and its two
/// moments were most of the optimizer's time on SNIPS. A row is brought up to date, step by
/// step with the scalars each step used, only when a batch is about to read it, when it gets
/// a gradient, or when the table is read whole: the same arithmetic in the same order, so
/// the result equals the dense update to the bit (tested).
#[derive(Debug, Clone)]
struct Deferred {
    /// The step each row is up to date with.
    current: Vec<u64>,
    /// The scalars of steps `first..`, in order.
    first: u64,
    history: Vec<Scalars>,
}

/// The scalars of steps `from..=through` out of `history`, which holds steps `first..`.
fn owed_steps(history: &[Scalars], first: u64, from: u64, through: u64) -> &[Scalars] {
    &history[(from - first) as usize..(through + 1 - first) as usize]
}

/// The per-step scalars of one parameter's host update, as the f32 arithmetic uses them.
#[derive(Debug, Clone, Copy)]
struct Scalars {
    /// `1 - lr * weight_decay` (none without weight decay).
    keep: Option<f32>,
    /// `sqrt(1 - beta2^t)`.
    sbc2: f32,
    /// `lr / (1 - beta1^t)`.
    rate: f32,
}

/// The step-independent scalars of the host update.
#[derive(Debug, Clone, Copy)]
struct Betas {
    b1: f32,
    b2: f32,
    ob1: f32,
    ob2: f32,
    eps: f32,
}

impl Betas {
    fn of(c: &AdamWConfig) -> Self {
        Self {
            b1: c.beta1 as f32,
            b2: c.beta2 as f32,
            ob1: (1.0 - c.beta1) as f32,
            ob2: (1.0 - c.beta2) as f32,
            eps: c.eps as f32,
        }
    }

    /// One AdamW step of one element with gradient `g` (already clipped).
    #[inline(always)]
    fn update(&self, s: &Scalars, p: &mut f32, m: &mut f32, v: &mut f32, g: f32) {
        *m = *m * self.b1 + g * self.ob1;
        *v = *v * self.b2 + (g * g) * self.ob2;
        if let Some(k) = s.keep {
            *p *= k;
        }
        let denom = v.sqrt() / s.sbc2 + self.eps;
        *p -= (*m / denom) * s.rate;
    }

    /// The zero-gradient steps `steps` on one row.
    fn replay(&self, steps: &[Scalars], p: &mut [f32], m: &mut [f32], v: &mut [f32]) {
        vectorized(
            #[inline(always)]
            || {
                for s in steps {
                    for ((p, m), v) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()) {
                        self.update(s, p, m, v, 0.0);
                    }
                }
            },
        );
    }
}

/// The result of one optimizer step.
#[derive(Debug, Clone, Copy)]
pub struct StepInfo {
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Factor the gradients were multiplied by (1 when not clipped).
    pub clip_coef: f64,
}

/// Global L2 norm of all gradients of `module`, as `clip_grad_norm_` computes it.
pub fn global_grad_norm<M: Module>(module: &M, grads: &GradientsParams) -> f64 {
    struct Norm<'a> {
        grads: &'a GradientsParams,
        total: Option<Tensor<1>>,
    }
    impl ModuleVisitor for Norm<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                let sq = g.powi_scalar(2).sum();
                self.total = Some(match self.total.take() {
                    Some(t) => t + sq,
                    None => sq,
                });
            }
        }
    }
    let mut v = Norm { grads, total: None };
    module.visit(&mut v);
    v.total
        .map(|t| (t.into_scalar::<f32>() as f64).sqrt())
        .unwrap_or(0.0)
}

/// `clip_grad_norm_`'s factor: `min(1, max_norm / (norm + 1e-6))`.
pub fn clip_coefficient(norm: f64, max_norm: Option<f64>) -> f64 {
    match max_norm {
        Some(max) if max > 0.0 => (max / (norm + 1e-6)).min(1.0),
        _ => 1.0,
    }
}

/// Per-parameter learning-rate factors: heads against the encoder, and layer-wise decay
/// through the encoder. Parameters are recognised by their module path.
#[derive(Debug, Clone, PartialEq)]
pub struct LrScales {
    head: f64,
    layer_decay: Option<f64>,
    layers: usize,
}

impl LrScales {
    /// Factors for an encoder of `layers` layers trained at `learning_rate`, heads at
    /// `head_learning_rate` (`None`: the same), each encoder layer below the top one at
    /// `layer_decay` times the rate of the one above (`None`: no decay).
    pub fn new(
        learning_rate: f64,
        head_learning_rate: Option<f64>,
        layer_decay: Option<f64>,
        layers: usize,
    ) -> Self {
        Self {
            head: head_learning_rate.map_or(1.0, |h| h / learning_rate),
            layer_decay,
            layers,
        }
    }

    /// One factor for everything.
    pub fn uniform() -> Self {
        Self {
            head: 1.0,
            layer_decay: None,
            layers: 0,
        }
    }

    /// The factor of the parameter at `path` (segments of the module tree, such as
    /// `["encoder", "Transformer", "layers", "3", "qkv", "weight"]`).
    pub fn factor(&self, path: &[String]) -> f64 {
        if path.first().is_none_or(|p| p != "encoder") {
            return self.head;
        }
        let Some(decay) = self.layer_decay else {
            return 1.0;
        };
        let layer = path
            .iter()
            .position(|p| p == "layers")
            .and_then(|i| path.get(i + 1))
            .and_then(|i| i.parse::<usize>().ok());
        // The top layer has depth 0; the embeddings sit below the first layer.
        let depth = match layer {
            Some(i) => self.layers.saturating_sub(i + 1),
            None if path.iter().any(|p| p == "final_norm") => 0,
            None => self.layers,
        };
        decay.powi(depth as i32)
    }
}

/// Where a step's gradients are: as tensors on the device, or already read into host memory
/// (the CPU backend, see [`HostGrads`]).
enum Grads<'a> {
    Tensors(&'a mut GradientsParams),
    Host(HashMap<ParamId, TensorData>),
}

/// One parameter's gradient, taken out of [`Grads`] (a value of the moment, never stored:
/// the size difference of its variants costs nothing).
#[allow(clippy::large_enum_variant)]
enum Grad<const D: usize> {
    Tensor(Tensor<D>),
    Host(TensorData),
}

/// The scalars of one parameter's AdamW update.
struct Hyper {
    config: AdamWConfig,
    /// Learning rate of this parameter (scaled).
    lr: f64,
    /// Gradient clipping factor (1: none).
    clip: f64,
    /// Weight decay of this parameter (none on vectors).
    decay: f64,
    /// Bias corrections `1 - beta^t`.
    bc1: f64,
    bc2: f64,
    /// Row width of an embedding table updated lazily (rows with a zero gradient are left
    /// as they are); `None`: every element is updated.
    lazy_rows: Option<usize>,
    /// Row width of a token-embedding table whose zero-gradient rows are deferred
    /// ([`Deferred`]); `None`: not deferred.
    defer_rows: Option<usize>,
}

struct Updater<'a> {
    opt: &'a mut AdamW,
    grads: Grads<'a>,
    /// The rows a token-embedding table's gradient holds, when it holds only those.
    token_rows: Option<&'a [u32]>,
    scales: &'a LrScales,
    lr: f64,
    clip: f64,
    path: Vec<String>,
    /// The container type of each module on `path` (`Struct:Embedding` for an embedding).
    containers: Vec<String>,
}

/// Burn's name for the container of an `nn::Embedding`'s table.
const EMBEDDING_CONTAINER: &str = "Struct:Embedding";

/// The encoder's token-embedding module, whose rows a batch's token ids select (see
/// [`AdamW::defer_token_rows`]).
const TOKEN_TABLE: &str = "token_embedding";

impl ModuleMapper for Updater<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push(name.to_string());
        self.containers.push(container_type.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
        self.containers.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let grad = match &mut self.grads {
            Grads::Tensors(g) => g.remove::<D>(id).map(Grad::Tensor),
            Grads::Host(g) => g.remove(&id).map(Grad::Host),
        };
        let Some(grad) = grad else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let tracked = tensor.is_require_grad();
        let key = self.path.join(".");
        let embedding =
            D == 2 && self.containers.last().map(String::as_str) == Some(EMBEDDING_CONTAINER);
        let token_table = self.path.iter().any(|p| p == TOKEN_TABLE);
        let defer = matches!(self.grads, Grads::Host(_)) && self.opt.deferred.is_some();
        let c = self.opt.config;
        let t = self.opt.step as i32;
        let hyper = Hyper {
            config: c,
            lr: self.lr * self.scales.factor(&self.path),
            clip: self.clip,
            decay: if D >= 2 { c.weight_decay } else { 0.0 },
            bc1: 1.0 - c.beta1.powi(t),
            bc2: 1.0 - c.beta2.powi(t),
            lazy_rows: (c.lazy_embeddings && embedding).then(|| tensor.dims()[D - 1]),
            defer_rows: (defer && embedding && !c.lazy_embeddings && token_table)
                .then(|| tensor.dims()[D - 1])
                .filter(|&width| width > 0),
        };
        let moments = self.opt.state.remove(&key);
        let step = self.opt.step;
        // A gradient of some rows only: into the deferred update as it is, else made whole.
        let rows = self.token_rows.filter(|_| embedding && token_table);
        let (grad, rows) = match (grad, rows) {
            (Grad::Host(g), Some(rows)) if hyper.defer_rows.is_some() => {
                (Grad::Host(g), Some(rows))
            }
            (Grad::Host(g), Some(rows)) => {
                let whole = whole_table(host_slice(&g), rows, tensor.dims());
                (Grad::Host(TensorData::new(whole, tensor.dims())), None)
            }
            (Grad::Tensor(g), Some(rows)) => {
                let device = g.device();
                let whole = whole_table(&host_values(g), rows, tensor.dims());
                let g = Tensor::from_data(TensorData::new(whole, tensor.dims()), &device);
                (Grad::Tensor(g), None)
            }
            (grad, _) => (grad, None),
        };
        let (p, moments) = match grad {
            Grad::Tensor(g) => tensor_update(tensor.inner(), g, moments, &hyper),
            Grad::Host(g) => {
                let deferred = match (hyper.defer_rows, self.opt.deferred.as_mut()) {
                    (Some(_), Some(deferred)) => Some((
                        deferred.entry(key.clone()).or_insert_with(|| Deferred {
                            current: vec![step - 1; tensor.dims()[0]],
                            first: step,
                            history: Vec::new(),
                        }),
                        step,
                    )),
                    _ => None,
                };
                host_update(
                    tensor.inner(),
                    host_slice(&g),
                    rows,
                    moments,
                    &hyper,
                    deferred,
                )
            }
        };
        self.opt.state.insert(key, moments);
        rewrap(id, p, mapper, tracked)
    }
}

/// The gradient of a table of `dims` whose rows `rows` are `g`, in that order, and whose
/// other rows are zero.
pub(crate) fn whole_table<const D: usize>(g: &[f32], rows: &[u32], dims: [usize; D]) -> Vec<f32> {
    let n: usize = dims.iter().product();
    let width = dims[D - 1].max(1);
    let mut whole = vec![0.0; n];
    for (&row, g) in rows.iter().zip(g.chunks(width)) {
        whole[row as usize * width..][..width].copy_from_slice(g);
    }
    whole
}

/// An updated parameter value back into its `Param` (tracked again if it was).
fn rewrap<const D: usize>(
    id: ParamId,
    value: Tensor<D>,
    mapper: burn::module::ParamMapper<Tensor<D>>,
    tracked: bool,
) -> Param<Tensor<D>> {
    let mut out = Tensor::from_inner(value);
    if tracked {
        out = out.require_grad();
    }
    Param::from_mapped_value(id, out, mapper)
}

/// [`AdamW::catch_up`]'s walk over the module.
struct CatchUp<'a> {
    deferred: &'a mut HashMap<String, Deferred>,
    state: &'a mut HashMap<String, Moments>,
    betas: Betas,
    step: u64,
    rows: Option<&'a [u32]>,
    path: Vec<String>,
}

impl ModuleMapper for CatchUp<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let key = self.path.join(".");
        let Some(owed) = self.deferred.get_mut(&key) else {
            return param;
        };
        let Some(moments) = self.state.remove(&key) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let tracked = tensor.is_require_grad();
        let shape = tensor.shape();
        let device = tensor.device();
        let width = shape.num_elements() / owed.current.len().max(1);
        let mut p = host_values(tensor.inner());
        let (mut m, mut v) = (host_values(moments.m), host_values(moments.v));
        let (betas, step) = (self.betas, self.step);
        let Deferred {
            current,
            first,
            history,
        } = owed;
        // The rows to bring up to date: those named, or all; each row on its own, in parallel.
        let wanted: Option<Vec<bool>> = self.rows.map(|rows| {
            let mut wanted = vec![false; current.len()];
            for &row in rows {
                if let Some(w) = wanted.get_mut(row as usize) {
                    *w = true;
                }
            }
            wanted
        });
        let (first, history) = (*first, &*history);
        let width = width.max(1);
        p.par_chunks_mut(width)
            .zip(m.par_chunks_mut(width))
            .zip(v.par_chunks_mut(width))
            .zip(current.par_iter_mut())
            .enumerate()
            .for_each(|(row, (((p, m), v), current))| {
                if *current < step && wanted.as_ref().is_none_or(|w| w[row]) {
                    betas.replay(owed_steps(history, first, *current + 1, step), p, m, v);
                    *current = step;
                }
            });
        let (p, moments) = finish::<D>(p, m, v, shape, &device);
        self.state.insert(key, moments);
        rewrap(id, p, mapper, tracked)
    }
}

/// AdamW on parameter `p` with gradient `g` as tensor ops (any backend).
fn tensor_update<const D: usize>(
    p: Tensor<D>,
    g: Tensor<D>,
    moments: Option<Moments>,
    h: &Hyper,
) -> (Tensor<D>, Moments) {
    let shape = p.dims();
    let n: usize = shape.iter().product();
    let p = p.reshape([n]);
    let g = g.reshape([n]);
    let g = if h.clip < 1.0 {
        g.mul_scalar(h.clip)
    } else {
        g
    };
    let c = h.config;
    let moments = moments.unwrap_or_else(|| Moments {
        m: Tensor::zeros([n], &p.device()),
        v: Tensor::zeros([n], &p.device()),
    });
    // Lazy rows: where a row's gradient is all zero, the old values are kept.
    let untouched = h.lazy_rows.map(|width| {
        let rows = n / width;
        g.clone()
            .reshape([rows, width])
            .abs()
            .sum_dim(1)
            .equal_elem(0.0)
            .expand([rows, width])
            .reshape([n])
    });
    let old = untouched
        .is_some()
        .then(|| (p.clone(), moments.m.clone(), moments.v.clone()));
    let m = moments.m.mul_scalar(c.beta1) + g.clone().mul_scalar(1.0 - c.beta1);
    let v = moments.v.mul_scalar(c.beta2) + g.powi_scalar(2).mul_scalar(1.0 - c.beta2);
    let p = if h.decay > 0.0 {
        p.mul_scalar(1.0 - h.lr * h.decay)
    } else {
        p
    };
    let denom = v.clone().sqrt().div_scalar(h.bc2.sqrt()).add_scalar(c.eps);
    let p = p - m.clone().div(denom).mul_scalar(h.lr / h.bc1);
    let (p, m, v) = match (untouched, old) {
        (Some(mask), Some((p0, m0, v0))) => (
            p.mask_where(mask.clone(), p0),
            m.mask_where(mask.clone(), m0),
            v.mask_where(mask, v0),
        ),
        _ => (p, m, v),
    };
    (p.reshape(shape), Moments { m, v })
}

/// Whether `module`'s parameters live on the CPU backend, where [`host_update`] runs.
fn on_host<M: Module>(module: &M) -> bool {
    struct First(Option<Device>);
    impl ModuleVisitor for First {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if self.0.is_none() {
                self.0 = Some(param.val().device());
            }
        }
    }
    let mut first = First(None);
    module.visit(&mut first);
    first.0.is_some_and(|d| mtl_model::is_cpu_backend(&d))
}

/// `f` run on a thread of Rayon's pool (the calling thread, if it is one), for work made of
/// many parallel loops over host memory, one per parameter. Called from outside the pool,
/// every loop, a one-chunk loop included, hands its chunks to the pool and sleeps until they
/// are done; on a thread of the pool a one-chunk loop runs in place, and a longer one shares
/// its chunks with the other threads (the SNIPS recipe's AdamW steps: 0.52 -> 0.36 s an
/// epoch, 0.71 -> 0.50 s of CPU time).
fn on_worker<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

/// A tensor's values as host `f32`s (without a copy when the tensor holds its buffer alone).
fn host_values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .try_into_vec_as::<f32>()
        .expect("a float tensor reads back as f32")
}

/// A tensor's values in host memory, read in place where they are `f32`s (a tensor holding
/// its buffer alone is not copied; [`host_values`] would copy one that a Burn op made, whose
/// buffer is aligned for any element type, to a `Vec<f32>`).
fn host_data<const D: usize>(t: Tensor<D>) -> TensorData {
    let data = t.into_data();
    if data.as_slice::<f32>().is_ok() {
        return data;
    }
    let shape = data.shape().clone();
    let values = data
        .try_into_vec_as::<f32>()
        .expect("a float tensor reads back as f32");
    TensorData::new(values, shape)
}

/// The `f32`s of data made by [`host_data`].
fn host_slice(data: &TensorData) -> &[f32] {
    data.as_slice().expect("host data holds f32s")
}

/// The gradients on the host, by parameter, and their global norm.
struct HostGrads;

impl HostGrads {
    /// The sum of `parts` (gradients of `module`'s parameters) by parameter, added in order
    /// as Burn's `GradientsAccumulator` adds them, and its global norm: one parallel pass over
    /// every parameter, each part's values added into the first part's buffer in place. (On
    /// the SNIPS recipe, summing two replicas' gradients as tensors took 3% of an epoch on
    /// little more than one core, before a pass of its own for the norm.)
    fn take<M: Module>(
        module: &M,
        mut parts: Vec<GradientsParams>,
    ) -> (HashMap<ParamId, TensorData>, f64) {
        struct Take<'a> {
            parts: &'a mut [GradientsParams],
            out: Vec<(ParamId, Vec<TensorData>)>,
        }
        impl ModuleVisitor for Take<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let grads: Vec<TensorData> = (self.parts.iter_mut())
                    .filter_map(|part| part.remove::<D>(param.id).map(host_data))
                    .collect();
                if !grads.is_empty() {
                    self.out.push((param.id, grads));
                }
            }
        }
        let mut take = Take {
            parts: &mut parts,
            out: Vec::new(),
        };
        module.visit(&mut take);
        let mut out = take.out;
        // Sums of squares by parameter and chunk, added up in order: the same norm every run.
        let squares: Vec<f64> = out
            .par_iter_mut()
            .map(|(_, grads)| {
                let (sum, rest) = grads.split_first_mut().expect("a gradient");
                let rest: Vec<&[f32]> = rest.iter().map(host_slice).collect();
                let sum = sum.as_mut_slice::<f32>().expect("host data holds f32s");
                let chunks: Vec<f64> = sum
                    .par_chunks_mut(CHUNK)
                    .enumerate()
                    .map(|(i, chunk)| {
                        vectorized(
                            #[inline(always)]
                            || {
                                for part in &rest {
                                    let part = &part[i * CHUNK..][..chunk.len()];
                                    for (s, &g) in chunk.iter_mut().zip(part) {
                                        *s += g;
                                    }
                                }
                                sum_of_squares(chunk)
                            },
                        )
                    })
                    .collect();
                chunks.iter().sum()
            })
            .collect();
        let norm = squares.iter().sum::<f64>().sqrt();
        let grads = out
            .into_iter()
            .map(|(id, mut grads)| (id, grads.swap_remove(0)))
            .collect();
        (grads, norm)
    }
}

/// The sum of `parts`, gradients of `module`'s parameters on one device, added in order by
/// Burn's [`GradientsAccumulator`] (the host path of [`AdamW`] adds them in its own pass).
pub fn sum_gradients<M: Module>(module: &M, parts: Vec<GradientsParams>) -> GradientsParams {
    let mut accumulator = GradientsAccumulator::<M>::new();
    for grads in parts {
        accumulator.accumulate(module, grads);
    }
    accumulator.grads()
}

/// Elements per parallel task of the host update.
const CHUNK: usize = 1 << 14;

/// [`tensor_update`] as one fused pass over host memory (the CPU backend), the same
/// arithmetic op for op in f32. With `defer` (a token-embedding table's [`Deferred`] record
/// and the step being taken), rows whose gradient is zero are left for later and the others
/// are first brought up to date; `g` then holds the gradient of the rows `rows` only, in
/// that order, where given (without `defer`, `rows` must be `None`).
fn host_update<const D: usize>(
    p: Tensor<D>,
    g: &[f32],
    rows: Option<&[u32]>,
    moments: Option<Moments>,
    h: &Hyper,
    defer: Option<(&mut Deferred, u64)>,
) -> (Tensor<D>, Moments) {
    let shape = p.shape();
    let device = p.device();
    let mut p = host_values(p);
    let n = p.len();
    let (mut m, mut v) = match moments {
        Some(s) => (host_values(s.m), host_values(s.v)),
        None => (vec![0.0; n], vec![0.0; n]),
    };
    let c = h.config;
    let betas = Betas::of(&c);
    // The scalars as the tensor path hands them to its f32 ops.
    let clip = (h.clip < 1.0).then_some(h.clip as f32);
    let scalars = Scalars {
        keep: (h.decay > 0.0).then_some((1.0 - h.lr * h.decay) as f32),
        sbc2: h.bc2.sqrt() as f32,
        rate: (h.lr / h.bc1) as f32,
    };
    let update = |p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]| {
        vectorized(
            #[inline(always)]
            || {
                for (((p, m), v), &g) in p.iter_mut().zip(m).zip(v).zip(g) {
                    betas.update(&scalars, p, m, v, clip.map_or(g, |k| g * k));
                }
            },
        );
    };
    debug_assert!(n == m.len() && n == v.len());
    if let (Some((deferred, step)), Some(width)) = (defer, h.defer_rows) {
        deferred.history.push(scalars);
        let Deferred {
            current,
            first,
            history,
        } = deferred;
        debug_assert_eq!(current.len() * width, n);
        // Where each table row's gradient is in `g` (`ZERO`: not there, zero).
        const ZERO: u32 = u32::MAX;
        let at: Vec<u32> = match rows {
            Some(rows) => {
                let mut at = vec![ZERO; current.len()];
                for (i, &row) in rows.iter().enumerate() {
                    at[row as usize] = i as u32;
                }
                at
            }
            None => (0..current.len() as u32).collect(),
        };
        debug_assert_eq!(g.len(), rows.map_or(n, |r| r.len() * width));
        let per_task = (CHUNK / width.max(1)).max(1);
        let chunk = per_task * width;
        p.par_chunks_mut(chunk)
            .zip(m.par_chunks_mut(chunk))
            .zip(v.par_chunks_mut(chunk))
            .zip(at.par_chunks(per_task))
            .zip(current.par_chunks_mut(per_task))
            .for_each(|((((p, m), v), at), current)| {
                let rows = p
                    .chunks_mut(width)
                    .zip(m.chunks_mut(width))
                    .zip(v.chunks_mut(width))
                    .zip(at)
                    .zip(current);
                for ((((p, m), v), &at), current) in rows {
                    if at == ZERO {
                        continue;
                    }
                    let g = &g[at as usize * width..][..width];
                    if g.iter().all(|&x| x == 0.0) {
                        continue;
                    }
                    betas.replay(owed_steps(history, *first, *current + 1, step - 1), p, m, v);
                    update(p, m, v, g);
                    *current = step;
                }
            });
        return finish(p, m, v, shape, &device);
    }
    debug_assert!(rows.is_none() && n == g.len());
    // A lazy table is walked row by row, skipping rows whose gradient is all zero; anything
    // else is one run per chunk.
    let run = h.lazy_rows.unwrap_or(CHUNK).max(1);
    let chunk = run * (CHUNK / run).max(1);
    p.par_chunks_mut(chunk)
        .zip(m.par_chunks_mut(chunk))
        .zip(v.par_chunks_mut(chunk))
        .zip(g.par_chunks(chunk))
        .for_each(|(((p, m), v), g)| {
            let runs = p
                .chunks_mut(run)
                .zip(m.chunks_mut(run))
                .zip(v.chunks_mut(run))
                .zip(g.chunks(run));
            for (((p, m), v), g) in runs {
                if h.lazy_rows.is_some() && g.iter().all(|&x| x == 0.0) {
                    continue;
                }
                update(p, m, v, g);
            }
        });
    finish(p, m, v, shape, &device)
}

/// Host values back into a parameter tensor of `shape` and its moments on `device` (flex
/// takes the vectors as they are).
fn finish<const D: usize>(
    p: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    shape: burn::tensor::Shape,
    device: &Device,
) -> (Tensor<D>, Moments) {
    let n = p.len();
    let moments = Moments {
        m: Tensor::from_data(TensorData::new(m, [n]), device),
        v: Tensor::from_data(TensorData::new(v, [n]), device),
    };
    (
        Tensor::from_data(TensorData::new(p, shape), device),
        moments,
    )
}

impl AdamW {
    /// A fresh optimizer.
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            step: 0,
            state: HashMap::new(),
            deferred: None,
        }
    }

    /// Defers the zero-gradient updates of token-embedding rows (the table under a
    /// `token_embedding` module) on the CPU backend: dense AdamW still moves such a row
    /// (its moments decay, it steps along its first moment, weight decay pulls it), and
    /// here a row is brought up to date late, replaying each owed step with the scalars that
    /// step used. Equal to the dense update to the bit, provided the caller brings the
    /// rows a batch uses up to date before its forward pass ([`catch_up`](Self::catch_up)
    /// with the batch's token ids, padding included) and the whole table before anything
    /// reads the parameters as a whole (`catch_up` with `None`: evaluation, saving).
    pub fn defer_token_rows(&mut self) {
        self.deferred.get_or_insert_with(HashMap::new);
    }

    /// Brings the deferred rows `rows` of every token-embedding table of `module` (all rows
    /// with `None`, which also empties the record of past steps) up to date with the steps
    /// taken. Without deferral, `module` as it is.
    pub fn catch_up<M: Module>(&mut self, module: M, rows: Option<&[u32]>) -> M {
        let Some(deferred) = self.deferred.as_mut() else {
            return module;
        };
        if deferred.is_empty() {
            return module;
        }
        let mut mapper = CatchUp {
            deferred,
            state: &mut self.state,
            betas: Betas::of(&self.config),
            step: self.step,
            rows,
            path: Vec::new(),
        };
        let module = on_worker(|| module.map(&mut mapper));
        if rows.is_none() {
            for d in deferred.values_mut() {
                d.first = self.step + 1;
                d.history.clear();
            }
        }
        module
    }

    /// Number of steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Each parameter's state: its module path and the number of values of each moment.
    pub fn entries(&self) -> impl Iterator<Item = (&str, usize)> {
        self.state
            .iter()
            .map(|(k, s)| (k.as_str(), s.m.shape().num_elements()))
    }

    /// One step: clips all gradients together to `max_grad_norm` (if any), then updates every
    /// parameter that has a gradient, with learning rate `lr`.
    pub fn step<M: Module>(
        &mut self,
        lr: f64,
        module: M,
        grads: GradientsParams,
        max_grad_norm: Option<f64>,
    ) -> (M, StepInfo) {
        self.step_scaled(
            lr,
            module,
            vec![grads],
            None,
            max_grad_norm,
            &LrScales::uniform(),
        )
    }

    /// [`step`](Self::step) with each parameter's learning rate multiplied by its factor in
    /// `scales` (the weight decay follows the scaled rate, as in PyTorch's parameter groups).
    /// With `token_rows`, the gradients of token-embedding tables hold those rows only, in
    /// that order (a step on a cut table, [`crate::parallel::StepOutput::token_rows`]); the
    /// other rows' gradient is zero. The step's gradients are the sum of `parts` (one per
    /// replica, [`crate::parallel::StepOutput::parts`]), added in order.
    pub fn step_scaled<M: Module>(
        &mut self,
        lr: f64,
        module: M,
        parts: Vec<GradientsParams>,
        token_rows: Option<&[u32]>,
        max_grad_norm: Option<f64>,
        scales: &LrScales,
    ) -> (M, StepInfo) {
        if on_host(&module) {
            on_worker(|| self.step_on(lr, module, parts, token_rows, max_grad_norm, scales, true))
        } else {
            self.step_on(lr, module, parts, token_rows, max_grad_norm, scales, false)
        }
    }

    /// [`step_scaled`](Self::step_scaled), fused on host memory or as tensor ops.
    #[allow(clippy::too_many_arguments)]
    fn step_on<M: Module>(
        &mut self,
        lr: f64,
        module: M,
        parts: Vec<GradientsParams>,
        token_rows: Option<&[u32]>,
        max_grad_norm: Option<f64>,
        scales: &LrScales,
        host: bool,
    ) -> (M, StepInfo) {
        let mut summed;
        let (grads, grad_norm) = if host {
            let (host, norm) = HostGrads::take(&module, parts);
            (Grads::Host(host), norm)
        } else {
            summed = sum_gradients(&module, parts);
            let norm = global_grad_norm(&module, &summed);
            (Grads::Tensors(&mut summed), norm)
        };
        let clip = clip_coefficient(grad_norm, max_grad_norm);
        self.step += 1;
        let mut updater = Updater {
            opt: self,
            grads,
            token_rows,
            scales,
            lr,
            clip,
            path: Vec::new(),
            containers: Vec::new(),
        };
        let module = module.map(&mut updater);
        (
            module,
            StepInfo {
                grad_norm,
                clip_coef: clip,
            },
        )
    }

    /// Saves the optimizer state (step and moments) to `path`, atomically.
    ///
    /// Layout: the magic `MTLADAMW1\n`, a little-endian `u64` header length, a JSON header
    /// (config, step, and each entry's path and length), then the moments as little-endian f32.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.to_bytes().map_err(|e| match e {
            Error::State { message, .. } => Error::State {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })?;
        mtl_model::write_atomic(path, &bytes).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The file [`save`](Self::save) writes, in memory.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        #[derive(Serialize)]
        struct Header<'a> {
            config: AdamWConfig,
            step: u64,
            entries: Vec<(&'a str, usize)>,
        }
        let mut keys: Vec<&String> = self.state.keys().collect();
        keys.sort();
        let entries: Vec<(&str, usize)> = keys
            .iter()
            .map(|k| (k.as_str(), self.state[*k].m.shape().num_elements()))
            .collect();
        let values: usize = entries.iter().map(|(_, n)| 2 * n).sum();
        let header = serde_json::to_vec(&Header {
            config: self.config,
            step: self.step,
            entries,
        })
        .map_err(|e| Error::State {
            path: PathBuf::from("<memory>"),
            message: e.to_string(),
        })?;
        // The file built in one buffer of its final size: the moments are read out once each
        // (Burn copies a tensor it shares) and copied once into place.
        let mut out = Vec::with_capacity(10 + 8 + header.len() + 4 * values);
        out.extend_from_slice(b"MTLADAMW1\n");
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(&header);
        for key in keys {
            let s = &self.state[key];
            for moment in [&s.m, &s.v] {
                out.extend_from_slice(moment.clone().into_data().convert::<f32>().as_bytes());
            }
        }
        Ok(out)
    }

    /// Loads a state written by [`save`](Self::save) onto `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        #[derive(Deserialize)]
        struct Header {
            config: AdamWConfig,
            step: u64,
            entries: Vec<(String, usize)>,
        }
        let bad = |message: &str| Error::State {
            path: path.to_path_buf(),
            message: message.to_string(),
        };
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let rest = bytes
            .strip_prefix(b"MTLADAMW1\n")
            .ok_or_else(|| bad("not an mtl optimizer state"))?;
        let (len, rest) = rest
            .split_first_chunk::<8>()
            .ok_or_else(|| bad("truncated header"))?;
        // Every length is checked against the bytes there are before anything is allocated:
        // a corrupt length is an error, never a wrapped multiplication or a huge allocation.
        let len = usize::try_from(u64::from_le_bytes(*len))
            .ok()
            .filter(|&len| len <= rest.len())
            .ok_or_else(|| bad("header length past the end of the file"))?;
        let (header, mut data) = rest.split_at(len);
        let header: Header = serde_json::from_slice(header).map_err(|e| bad(&e.to_string()))?;
        let valid = |c: f64, lo: f64, hi: f64| c.is_finite() && c >= lo && c < hi;
        let c = header.config;
        if !(valid(c.beta1, 0.0, 1.0)
            && valid(c.beta2, 0.0, 1.0)
            && valid(c.eps, 0.0, f64::MAX)
            && valid(c.weight_decay, 0.0, f64::MAX))
        {
            return Err(bad("hyper-parameters out of range"));
        }
        let mut state = HashMap::new();
        for (key, n) in header.entries {
            let mut take = || -> Result<Tensor<1>> {
                let chunk_len = n
                    .checked_mul(4)
                    .filter(|&b| b <= data.len())
                    .ok_or_else(|| bad(&format!("moments of {key} past the end of the file")))?;
                let (chunk, rest) = data.split_at(chunk_len);
                data = rest;
                let values: Vec<f32> = chunk
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                Ok(Tensor::from_data(TensorData::new(values, [n]), device))
            };
            let m = take()?;
            let v = take()?;
            if state.insert(key.clone(), Moments { m, v }).is_some() {
                return Err(bad(&format!("entry {key} appears twice")));
            }
        }
        if !data.is_empty() {
            return Err(bad("trailing bytes after the moments"));
        }
        Ok(Self {
            config: header.config,
            step: header.step,
            state,
            deferred: None,
        })
    }
}

/// Linear warmup from 0 to `base_lr` over `warmup_steps`, then linear decay to 0 at
/// `total_steps`: `transformers.get_linear_schedule_with_warmup`. `step` counts optimizer
/// steps already taken.
pub fn linear_warmup_decay(base_lr: f64, step: u64, warmup_steps: u64, total_steps: u64) -> f64 {
    if step < warmup_steps {
        return base_lr * step as f64 / warmup_steps.max(1) as f64;
    }
    let remaining = total_steps.saturating_sub(step) as f64;
    let span = total_steps.saturating_sub(warmup_steps).max(1) as f64;
    base_lr * (remaining / span).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use serde_json::Value;

    fn tensor_of(v: &Value, device: &Device) -> (Vec<f32>, Vec<usize>) {
        let shape: Vec<usize> = serde_json::from_value(v["shape"].clone()).expect("shape");
        let data: Vec<f32> = serde_json::from_value(v["data"].clone()).expect("data");
        let _ = device;
        (data, shape)
    }

    fn fixture() -> Value {
        serde_json::from_str(include_str!("../tests/fixtures/torch/losses.json")).expect("fixture")
    }

    #[test]
    fn schedule_matches_transformers() {
        let fx = fixture();
        let s = &fx["lr_schedule"];
        let lrs: Vec<f64> = serde_json::from_value(s["lr"].clone()).expect("lr");
        for (step, expected) in lrs.iter().enumerate() {
            let got = linear_warmup_decay(1e-3, step as u64, 3, 10);
            assert!(
                (got - expected).abs() < 1e-12,
                "step {step}: {got} vs {expected}"
            );
        }
    }

    /// A `Linear` holds a weight (matrix, decayed) and a bias (vector, not decayed): the same
    /// parameter groups as the PyTorch fixture (a `[3, 4]` weight and a `[4]` bias, which is
    /// Burn's `[in, out]` layout of a 3 -> 4 layer).
    #[test]
    fn adamw_matches_pytorch_over_three_steps() {
        adamw_against(&fixture()["adamw"]);
    }

    /// The optimizer's own global-norm clipping, then AdamW, against `clip_grad_norm_` and
    /// `torch.optim.AdamW` over three steps (norms of 4.5, 4.0 and 28.9 clipped to 1).
    #[test]
    fn clipped_adamw_matches_pytorch_over_three_steps() {
        let fx = fixture();
        assert_eq!(fx["adamw_clipped"]["max_norm"].as_f64(), Some(1.0));
        adamw_against(&fx["adamw_clipped"]);
    }

    fn adamw_against(a: &Value) {
        let max_norm = a["max_norm"].as_f64();
        let device = Device::flex().autodiff();
        let (w0, wshape) = tensor_of(&a["initial_params"]["weight"], &device);
        let (b0, bshape) = tensor_of(&a["initial_params"]["bias"], &device);
        let [d_in, d_out] = [wshape[0], wshape[1]];
        assert_eq!(bshape, vec![d_out]);
        let matrix =
            |data: Vec<f32>| Tensor::<2>::from_data(TensorData::new(data, [d_in, d_out]), &device);
        let vector =
            |data: Vec<f32>| Tensor::<1>::from_data(TensorData::new(data, [d_out]), &device);
        let mut layer: Linear = LinearConfig::new(d_in, d_out).init(&device);
        layer.weight = Param::from_tensor(matrix(w0).require_grad());
        layer.bias = Some(Param::from_tensor(vector(b0).require_grad()));
        let mut opt = AdamW::new(AdamWConfig {
            weight_decay: 0.01,
            ..AdamWConfig::default()
        });
        let lr = a["lr"].as_f64().expect("lr");
        let steps = a["steps"].as_array().expect("steps");
        assert_eq!(steps.len(), 3);
        for step in steps {
            let (gw, _) = tensor_of(&step["grads"]["weight"], &device);
            let (gb, _) = tensor_of(&step["grads"]["bias"], &device);
            let mut grads = GradientsParams::new();
            grads.register(layer.weight.id, matrix(gw).inner());
            grads.register(layer.bias.as_ref().expect("bias").id, vector(gb).inner());
            let (next, info) = opt.step(lr, layer, grads, max_norm);
            assert_eq!(
                info.clip_coef < 1.0,
                max_norm.is_some(),
                "clipped iff asked"
            );
            layer = next;
            let (ew, _) = tensor_of(&step["params_after"]["weight"], &device);
            let (eb, _) = tensor_of(&step["params_after"]["bias"], &device);
            let got_w = layer
                .weight
                .val()
                .into_data()
                .try_to_vec::<f32>()
                .expect("f32");
            let got_b = layer
                .bias
                .as_ref()
                .expect("bias")
                .val()
                .into_data()
                .try_to_vec::<f32>()
                .expect("f32");
            for (g, e) in got_w.iter().zip(&ew).chain(got_b.iter().zip(&eb)) {
                assert!((g - e).abs() < 2e-6, "step {}: {g} vs {e}", step["step"]);
            }
        }
    }

    /// The host pass that sums replicas' gradients adds them as Burn's accumulator does, to
    /// the bit: three parts, one of them without a gradient for one parameter, chunks past
    /// one task's length; the norm is the norm of the sum.
    #[test]
    fn host_sum_of_parts_equals_burns_sum_to_the_bit() {
        let device = Device::flex();
        let layer: Linear = LinearConfig::new(300, 70).init(&device);
        let bias = layer.bias.as_ref().expect("bias").id;
        let values = |n: usize, k: usize| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * 37 + k * 11) % 101) as f32 * 0.013 - 0.6)
                .collect()
        };
        let parts = || {
            (0..3)
                .map(|k| {
                    let mut g = GradientsParams::new();
                    g.register(
                        layer.weight.id,
                        Tensor::<2>::from_data(
                            TensorData::new(values(300 * 70, k), [300, 70]),
                            &device,
                        ),
                    );
                    if k != 1 {
                        g.register(
                            bias,
                            Tensor::<1>::from_data(TensorData::new(values(70, k), [70]), &device),
                        );
                    }
                    g
                })
                .collect::<Vec<_>>()
        };
        let (host, norm) = HostGrads::take(&layer, parts());
        let mut burn = sum_gradients(&layer, parts());
        let mut squares = 0.0f64;
        for (id, dims) in [(layer.weight.id, 2), (bias, 1)] {
            let expected: Vec<f32> = if dims == 2 {
                burn.remove::<2>(id).expect("weight").into_data()
            } else {
                burn.remove::<1>(id).expect("bias").into_data()
            }
            .try_to_vec()
            .expect("f32");
            let got = host_slice(&host[&id]);
            assert_eq!(got.len(), expected.len());
            for (g, e) in got.iter().zip(&expected) {
                assert_eq!(g.to_bits(), e.to_bits(), "{g} vs {e}");
            }
            squares += expected
                .iter()
                .map(|&x| f64::from(x) * f64::from(x))
                .sum::<f64>();
        }
        assert!((norm - squares.sqrt()).abs() <= 1e-12 * norm, "{norm}");
    }

    /// The fused host update is the tensor-op update, operation for operation: the same
    /// parameters and moments after steps with weight decay, clipping and a scaled rate, up to
    /// the last bits (flex's scalar division and the f64 gradient norm round differently).
    #[test]
    fn host_update_equals_tensor_update() {
        let device = Device::flex().autodiff();
        device.seed(3);
        let layer: Linear = LinearConfig::new(40, 24).init(&device);
        let (mut a, mut b) = (layer.clone(), layer);
        let config = AdamWConfig {
            weight_decay: 0.05,
            ..AdamWConfig::default()
        };
        let (mut oa, mut ob) = (AdamW::new(config), AdamW::new(config));
        let scales = LrScales::new(1e-3, Some(5e-3), None, 1);
        for step in 0..4 {
            let w = Tensor::<2>::random(
                [40, 24],
                burn::tensor::Distribution::Normal(0.0, 1.0),
                &Device::flex(),
            );
            let mut rows: Vec<f32> = w.into_data().try_to_vec().expect("f32");
            rows.iter_mut()
                .enumerate()
                .for_each(|(i, x)| *x *= ((i + step) % 7) as f32 * 0.3);
            let bias: Vec<f32> = rows[..24].iter().map(|x| x * 0.5).collect();
            let grads = |layer: &Linear| {
                let mut g = GradientsParams::new();
                let flex = Device::flex();
                g.register(
                    layer.weight.id,
                    Tensor::<2>::from_data(TensorData::new(rows.clone(), [40, 24]), &flex),
                );
                g.register(
                    layer.bias.as_ref().expect("bias").id,
                    Tensor::<1>::from_data(TensorData::new(bias.clone(), [24]), &flex),
                );
                g
            };
            let (ga, gb) = (grads(&a), grads(&b));
            // Clipping on in even steps.
            let clip = (step % 2 == 0).then_some(0.5);
            let (na, ia) = oa.step_on(2e-3, a, vec![ga], None, clip, &scales, true);
            let (nb, ib) = ob.step_on(2e-3, b, vec![gb], None, clip, &scales, false);
            (a, b) = (na, nb);
            assert!(
                (ia.grad_norm - ib.grad_norm).abs() <= 1e-5 * ib.grad_norm,
                "step {step}"
            );
            for (x, y) in [(a.weight.val(), b.weight.val())] {
                let (x, y): (Vec<f32>, Vec<f32>) = (
                    x.into_data().try_to_vec().expect("f32"),
                    y.into_data().try_to_vec().expect("f32"),
                );
                for (p, q) in x.iter().zip(&y) {
                    assert!(
                        (p - q).abs() <= 1e-5 * q.abs().max(1e-3),
                        "step {step}: {p} vs {q}"
                    );
                }
            }
            assert!(
                a.weight.val().is_require_grad(),
                "the parameter stays trainable"
            );
        }
        for (key, ma) in &oa.state {
            let mb = &ob.state[key];
            let (x, y): (Vec<f32>, Vec<f32>) = (
                ma.v.clone().into_data().try_to_vec().expect("f32"),
                mb.v.clone().into_data().try_to_vec().expect("f32"),
            );
            assert_eq!(x.len(), y.len());
            for (p, q) in x.iter().zip(&y) {
                assert!(
                    (p - q).abs() <= 1e-5 * q.abs().max(1e-6),
                    "{key}: {p} vs {q}"
                );
            }
        }
        assert_eq!(oa.state.len(), 2);
    }

    /// An embedding table and a Linear, for the lazy-update test.
    #[derive(burn::module::Module, Debug)]
    struct Table {
        emb: burn::nn::Embedding,
        lin: Linear,
    }

    /// With `lazy_embeddings`, an embedding row whose gradient is zero keeps its weights and
    /// moments (host and tensor paths alike), while a used row and every Linear weight are
    /// updated; dense AdamW moves the unused rows too (weight decay, momentum).
    #[test]
    fn lazy_embeddings_leave_unused_rows_alone() {
        let device = Device::flex().autodiff();
        device.seed(5);
        let table = Table {
            emb: burn::nn::EmbeddingConfig::new(6, 4).init(&device),
            lin: LinearConfig::new(4, 3).init(&device),
        };
        let values = |t: Tensor<2>| -> Vec<f32> { t.into_data().try_to_vec().expect("f32") };
        let initial = values(table.emb.weight.val());
        // Step 0 uses rows 0 and 1, step 1 only row 1; rows 2 to 5 are never used.
        let used: [&[usize]; 2] = [&[0, 1], &[1]];
        let run = |lazy: bool, host: bool| {
            let config = AdamWConfig {
                weight_decay: 0.1,
                lazy_embeddings: lazy,
                ..AdamWConfig::default()
            };
            let mut opt = AdamW::new(config);
            let mut t = table.clone();
            let mut after = Vec::new();
            for (step, rows) in used.iter().enumerate() {
                let flex = Device::flex();
                let mut emb = vec![0.0f32; 24];
                for &r in *rows {
                    emb[r * 4..(r + 1) * 4]
                        .iter_mut()
                        .enumerate()
                        .for_each(|(i, x)| *x = 0.1 * (i + step + 1) as f32);
                }
                // The Linear's gradient has an all-zero row too: it is still updated.
                let mut lin = vec![0.3f32; 12];
                lin[..3].fill(0.0);
                let mut g = GradientsParams::new();
                g.register(
                    t.emb.weight.id,
                    Tensor::<2>::from_data(TensorData::new(emb, [6, 4]), &flex),
                );
                g.register(
                    t.lin.weight.id,
                    Tensor::<2>::from_data(TensorData::new(lin, [4, 3]), &flex),
                );
                let scales = LrScales::uniform();
                (t, _) = opt.step_on(1e-2, t, vec![g], None, None, &scales, host);
                after.push(values(t.emb.weight.val()));
            }
            (after, values(t.lin.weight.val()), opt)
        };
        let lin0 = values(table.lin.weight.val());
        let (lazy_host, lin_host, opt_host) = run(true, true);
        let (lazy_tensor, lin_tensor, opt_tensor) = run(true, false);
        let (dense, _, _) = run(false, true);
        let row = |v: &[f32], r: usize| v[r * 4..(r + 1) * 4].to_vec();
        for r in 2..6 {
            assert_eq!(row(&lazy_host[1], r), row(&initial, r), "unused row {r}");
            assert_eq!(row(&lazy_tensor[1], r), row(&initial, r), "unused row {r}");
            assert_ne!(row(&dense[1], r), row(&initial, r), "dense moves row {r}");
        }
        // Row 0 was used in step 0 only: step 1 leaves it as step 0 made it.
        assert_ne!(row(&lazy_host[0], 0), row(&initial, 0));
        assert_eq!(row(&lazy_host[1], 0), row(&lazy_host[0], 0));
        assert_ne!(row(&dense[1], 0), row(&dense[0], 0));
        // Row 1 was used in both steps.
        assert_ne!(row(&lazy_host[1], 1), row(&lazy_host[0], 1));
        // The Linear's zero-gradient row is decayed all the same.
        assert_ne!(lin_host[..3], lin0[..3]);
        for (a, b) in lazy_host[1]
            .iter()
            .zip(&lazy_tensor[1])
            .chain(lin_host.iter().zip(&lin_tensor))
        {
            assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
        }
        // The unused rows' moments stay zero on both paths.
        for opt in [&opt_host, &opt_tensor] {
            let m: Vec<f32> = opt.state["emb.weight"]
                .m
                .clone()
                .into_data()
                .try_to_vec()
                .expect("f32");
            assert!(m[8..].iter().all(|&x| x == 0.0), "{m:?}");
            assert!(m[..8].iter().all(|&x| x != 0.0), "{m:?}");
        }
    }

    /// A token-embedding table (the name deferral looks for) and a Linear.
    #[derive(burn::module::Module, Debug)]
    struct Tokens {
        token_embedding: burn::nn::Embedding,
        lin: Linear,
    }

    /// Deferred zero-gradient rows give the dense update to the bit: 14 steps with clipping,
    /// weight decay and a changing learning rate, sparse rows, one flush in the middle (an
    /// epoch's end), rows caught up before each step as the trainer does. So does a gradient
    /// of the batch's rows only (a cut table), deferred, on the host without deferral, and
    /// as tensor ops.
    #[test]
    fn deferred_token_rows_equal_the_dense_update_to_the_bit() {
        let device = Device::flex().autodiff();
        device.seed(9);
        let (vocab, width) = (40usize, 8usize);
        let start = Tokens {
            token_embedding: burn::nn::EmbeddingConfig::new(vocab, width).init(&device),
            lin: LinearConfig::new(width, 3).init(&device),
        };
        let values = |t: Tensor<2>| -> Vec<f32> { t.into_data().try_to_vec().expect("f32") };
        // Step s reads rows `batches[s]`; row 0 (padding) in every batch, as the trainer's.
        let batches: Vec<Vec<u32>> = (0..14u32)
            .map(|s| {
                std::iter::once(0)
                    .chain((0..4).map(|k| (s * 7 + k * 11 + s * s) % vocab as u32))
                    .collect()
            })
            .collect();
        // With `cut`, the table's gradient holds the batch's distinct rows only, sorted.
        let grads = |t: &Tokens, step: usize, rows: &[u32], cut: Option<&[u32]>| {
            let flex = Device::flex();
            let mut emb = vec![0.0f32; vocab * width];
            for (k, &r) in rows.iter().enumerate().skip(1) {
                let r = r as usize;
                for (i, x) in emb[r * width..(r + 1) * width].iter_mut().enumerate() {
                    *x += 0.05 * ((i + k + step) % 5) as f32 - 0.1;
                }
            }
            let table = match cut {
                Some(cut) => Tensor::<2>::from_data(
                    TensorData::new(
                        cut.iter()
                            .flat_map(|&r| emb[r as usize * width..][..width].to_vec())
                            .collect(),
                        [cut.len(), width],
                    ),
                    &flex,
                ),
                None => Tensor::<2>::from_data(TensorData::new(emb, [vocab, width]), &flex),
            };
            let mut g = GradientsParams::new();
            g.register(t.token_embedding.weight.id, table);
            g.register(
                t.lin.weight.id,
                Tensor::<2>::from_data(TensorData::new(vec![0.2f32; width * 3], [width, 3]), &flex),
            );
            g
        };
        let config = AdamWConfig {
            weight_decay: 0.1,
            ..AdamWConfig::default()
        };
        let scales = LrScales::uniform();
        let run = |defer: bool, cut: bool, host: bool| {
            let mut opt = AdamW::new(config);
            if defer {
                opt.defer_token_rows();
            }
            let mut t = start.clone();
            let mut stale = 0;
            for (step, rows) in batches.iter().enumerate() {
                if defer {
                    t = opt.catch_up(t, Some(rows));
                }
                let mut distinct = rows.clone();
                distinct.sort_unstable();
                distinct.dedup();
                let cut = cut.then_some(distinct.as_slice());
                let g = grads(&t, step, rows, cut);
                let lr = 1e-2 * (1.0 + (step % 4) as f64);
                (t, _) = opt.step_on(lr, t, vec![g], cut, Some(0.5), &scales, host);
                if step == 6 {
                    t = opt.catch_up(t, None);
                }
                if defer && let Some(d) = opt.deferred.as_ref().and_then(|d| d.values().next()) {
                    stale += d.current.iter().filter(|&&c| c < opt.step).count();
                }
            }
            t = opt.catch_up(t, None);
            let m = |k: &str| values(opt.state[k].m.clone().reshape([1, -1]));
            let v = |k: &str| values(opt.state[k].v.clone().reshape([1, -1]));
            let key = "token_embedding.weight";
            (
                [
                    values(t.token_embedding.weight.val()),
                    values(t.lin.weight.val()),
                    m(key),
                    v(key),
                ],
                stale,
            )
        };
        let ((dense, _), (deferred, stale)) = (run(false, false, true), run(true, false, true));
        // Rows really were left behind between steps (most of the table, most steps).
        assert!(stale > 14 * vocab / 2, "{stale} stale rows");
        let (cut_deferred, cut_stale) = run(true, true, true);
        assert_eq!(cut_stale, stale);
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for (case, other) in [
            ("deferred", &deferred),
            ("cut, deferred", &cut_deferred),
            ("cut, host", &run(false, true, true).0),
        ] {
            for (name, (a, b)) in ["table", "linear", "m", "v"]
                .iter()
                .zip(dense.iter().zip(other))
            {
                assert_eq!(bits(a), bits(b), "{case}: {name} differs");
            }
        }
        // As tensor ops (another rounding of the same arithmetic), cut or not: the same bits.
        let (tensor, cut_tensor) = (run(false, false, false).0, run(false, true, false).0);
        for (name, (a, b)) in ["table", "linear", "m", "v"]
            .iter()
            .zip(tensor.iter().zip(&cut_tensor))
        {
            assert_eq!(bits(a), bits(b), "cut, tensor ops: {name} differs");
        }
    }

    /// Three parameters of the fixture's shapes.
    #[derive(burn::module::Module, Debug)]
    struct Three {
        a: Param<Tensor<2>>,
        b: Param<Tensor<1>>,
        c: Param<Tensor<3>>,
    }

    /// The optimizer's own clipping (both update paths) against `clip_grad_norm_`: with
    /// `beta1 = 0` the first moment after one step is the clipped gradient itself.
    #[test]
    fn clipping_matches_clip_grad_norm() {
        let fx = fixture();
        let device = Device::flex();
        for host in [true, false] {
            for case in fx["clip_grad_norm"].as_array().expect("cases") {
                let grads: Vec<(Vec<f32>, Vec<usize>)> = case["grads_in"]
                    .as_array()
                    .expect("grads")
                    .iter()
                    .map(|g| tensor_of(g, &device))
                    .collect();
                let module = Three {
                    a: Param::from_tensor(Tensor::zeros([3, 4], &device)),
                    b: Param::from_tensor(Tensor::zeros([4], &device)),
                    c: Param::from_tensor(Tensor::zeros([2, 2, 3], &device)),
                };
                let mut params = GradientsParams::new();
                let data = |i: usize| TensorData::new(grads[i].0.clone(), grads[i].1.clone());
                params.register(module.a.id, Tensor::<2>::from_data(data(0), &device));
                params.register(module.b.id, Tensor::<1>::from_data(data(1), &device));
                params.register(module.c.id, Tensor::<3>::from_data(data(2), &device));
                let mut opt = AdamW::new(AdamWConfig {
                    beta1: 0.0,
                    ..AdamWConfig::default()
                });
                let max_norm = case["max_norm"].as_f64().expect("max");
                let (_, info) = opt.step_on(
                    1e-3,
                    module,
                    vec![params],
                    None,
                    Some(max_norm),
                    &LrScales::uniform(),
                    host,
                );
                let expected = case["total_norm"].as_f64().expect("norm");
                assert!(
                    (info.grad_norm - expected).abs() < 1e-5,
                    "{} vs {expected}",
                    info.grad_norm
                );
                let expected_coef = case["clip_coef"].as_f64().expect("coef");
                assert!(
                    (info.clip_coef - expected_coef).abs() < 1e-6,
                    "{} vs {expected_coef}",
                    info.clip_coef
                );
                let outs = case["grads_out"].as_array().expect("out");
                for (key, out) in ["a", "b", "c"].iter().zip(outs) {
                    let (want, _) = tensor_of(out, &device);
                    let got = opt.state[*key]
                        .m
                        .clone()
                        .into_data()
                        .try_to_vec::<f32>()
                        .expect("f32");
                    assert_eq!(got.len(), want.len());
                    for (x, y) in got.iter().zip(&want) {
                        assert!((x - y).abs() < 1e-6, "{key} (host {host}): {x} vs {y}");
                    }
                }
            }
        }
    }

    #[test]
    fn global_norm_sums_over_every_parameter() {
        let device = Device::flex().autodiff();
        let layer: Linear = LinearConfig::new(3, 2).init(&device);
        let x = Tensor::<2>::ones([4, 3], &device);
        let loss = layer.forward(x).sum();
        let grads = GradientsParams::from_grads(loss.backward(), &layer);
        let gw = grads
            .get::<2>(layer.weight.id)
            .expect("w")
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        let gb = grads
            .get::<1>(layer.bias.as_ref().expect("b").id)
            .expect("b")
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        let expected: f64 = gw
            .iter()
            .chain(&gb)
            .map(|&x| (x as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!((global_grad_norm(&layer, &grads) - expected).abs() < 1e-5);
    }

    #[test]
    fn state_round_trips_and_rejects_truncation() {
        let device = Device::flex().autodiff();
        let layer: Linear = LinearConfig::new(3, 2).init(&device);
        let loss = layer.forward(Tensor::<2>::ones([1, 3], &device)).sum();
        let grads = GradientsParams::from_grads(loss.backward(), &layer);
        let mut opt = AdamW::new(AdamWConfig::default());
        let _ = opt.step(1e-3, layer, grads, Some(1.0));
        let path = std::env::temp_dir().join(format!("mtl-adamw-{}.bin", std::process::id()));
        opt.save(&path).expect("saved");
        let back = AdamW::load(&path, &Device::flex()).expect("loaded");
        assert_eq!(back.steps(), 1);
        assert_eq!(back.config, opt.config);
        // Every moment of every entry, to the bit.
        let bits = |t: &Tensor<1>| -> Vec<u32> {
            t.clone()
                .into_data()
                .try_to_vec::<f32>()
                .expect("f32")
                .iter()
                .map(|x| x.to_bits())
                .collect()
        };
        let mut keys: Vec<&String> = opt.state.keys().collect();
        keys.sort();
        let mut back_keys: Vec<&String> = back.state.keys().collect();
        back_keys.sort();
        assert_eq!(keys, back_keys);
        assert_eq!(keys.len(), 2, "weight and bias");
        for key in keys {
            let (a, b) = (&opt.state[key], &back.state[key]);
            assert_eq!(bits(&a.m), bits(&b.m), "first moment of {key}");
            assert_eq!(bits(&a.v), bits(&b.v), "second moment of {key}");
            assert!(
                bits(&a.v).iter().any(|&x| x != 0),
                "{key}: moments were updated"
            );
        }
        let bytes = std::fs::read(&path).expect("read");
        let refused = |bytes: &[u8], said: &str| {
            std::fs::write(&path, bytes).expect("write");
            match AdamW::load(&path, &Device::flex()) {
                Err(Error::State { message, .. }) => {
                    assert!(message.contains(said), "{message} (expected {said})")
                }
                other => panic!("expected a state error about {said}, got {other:?}"),
            }
        };
        refused(&bytes[..bytes.len() - 3], "past the end");
        refused(&bytes[..bytes.len() - 3], "moments of");
        // A header length past the end of the file (and one that would wrap).
        for len in [u64::MAX, u64::MAX / 2, 1 << 40] {
            let mut corrupt = bytes.clone();
            corrupt[10..18].copy_from_slice(&len.to_le_bytes());
            refused(&corrupt, "header length");
        }
        // An entry length whose byte count wraps in `usize` arithmetic.
        let header_len = u64::from_le_bytes(bytes[10..18].try_into().expect("8 bytes")) as usize;
        let header = std::str::from_utf8(&bytes[18..18 + header_len]).expect("utf8");
        let huge = header.replacen(",6]", &format!(",{}]", usize::MAX / 2 + 1), 1);
        assert_ne!(huge, header, "the weight entry has 6 values: {header}");
        let mut corrupt = b"MTLADAMW1\n".to_vec();
        corrupt.extend_from_slice(&(huge.len() as u64).to_le_bytes());
        corrupt.extend_from_slice(huge.as_bytes());
        corrupt.extend_from_slice(&bytes[18 + header_len..]);
        refused(&corrupt, "past the end");
        std::fs::remove_file(&path).ok();
    }

    /// The factor of every parameter of a real model, found by the module paths the optimizer
    /// walks: heads at the head rate, layer `i` of `L` at `decay^(L-1-i)`, embeddings at
    /// `decay^L`.
    #[test]
    fn lr_scales_follow_the_module_tree() {
        use mtl_model::{MultitaskConfig, MultitaskTransformer};
        struct Paths<'a> {
            scales: &'a LrScales,
            path: Vec<String>,
            seen: Vec<(String, f64)>,
        }
        impl ModuleMapper for Paths<'_> {
            fn enter_module(&mut self, name: &str, _: &str) {
                self.path.push(name.to_string());
            }
            fn exit_module(&mut self, _: &str, _: &str) {
                self.path.pop();
            }
            fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
                self.seen
                    .push((self.path.join("."), self.scales.factor(&self.path)));
                p
            }
        }
        let device = Device::flex();
        let config = MultitaskConfig::new(20, 3, 4)
            .with_d_model(8)
            .with_nhead(2)
            .with_num_encoder_layers(3)
            .with_dim_feedforward(16);
        let model = MultitaskTransformer::new(&config, &device).expect("model");
        let scales = LrScales::new(1e-4, Some(1e-3), Some(0.5), 3);
        let mut paths = Paths {
            scales: &scales,
            path: Vec::new(),
            seen: Vec::new(),
        };
        let _ = model.map(&mut paths);
        let factor = |needle: &str| {
            paths
                .seen
                .iter()
                .find(|(p, _)| p.contains(needle))
                .unwrap_or_else(|| panic!("no parameter at {needle}: {:?}", paths.seen))
                .1
        };
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(factor("classifier.weight"), 10.0));
        assert!(close(factor("ner_head.bias"), 10.0));
        assert!(close(factor("layers.2.qkv.weight"), 1.0));
        assert!(close(factor("layers.1.ff_in.weight"), 0.5));
        assert!(close(factor("layers.0.norm_ff.gamma"), 0.25));
        assert!(close(factor("token_embedding.weight"), 0.125));
        // Without decay the encoder trains at the base rate, heads still at theirs.
        let flat = LrScales::new(1e-4, Some(1e-3), None, 3);
        assert!(close(flat.factor(&["encoder".into(), "x".into()]), 1.0));
        assert!(close(
            LrScales::uniform().factor(&["classifier".into()]),
            1.0
        ));
    }
}
