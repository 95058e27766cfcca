//! Dynamic batching: one worker thread per model owns it, joins the requests waiting in its
//! queue into batches and sends each request its own answers through a oneshot channel.
//!
//! A batch starts with the oldest waiting request and takes the next ones while the batch
//! stays within `max_batch_tokens` and `max_batch_size` texts, waiting for more until
//! `max_wait` after the first one arrived (a request that already waited that long, behind
//! the previous batch, does not wait again). A request whose client has gone (its receiver
//! dropped) is skipped before inference. Inference runs on this thread (the packed engine uses
//! Rayon's pool), never on the async runtime; if it fails or panics, that batch's requests get
//! the error and the worker goes on.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use mtl::data::Encoder;
use mtl::train::PredictOptions;
use mtl::train::TagDecoding;
use mtl::train::texts::{Predictor, PreparedText, TextPrediction};
use tokio::sync::oneshot;

use crate::metrics::ModelMetrics;

/// Batch limits of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most tokens in one batch (a request over it alone runs as a batch of its own).
    pub max_batch_tokens: usize,
    /// Most texts in one batch.
    pub max_batch_size: usize,
    /// How long the first request of a batch waits for company.
    pub max_wait: Duration,
}

/// A request's work: its texts and how to read them.
#[derive(Debug)]
pub struct Job {
    /// The texts, split and encoded.
    pub texts: Vec<PreparedText>,
    /// Sentence labels wanted in `top_k`.
    pub top_k: usize,
    /// Tag decoding.
    pub decoding: TagDecoding,
    /// When the request joined the queue.
    pub enqueued: Instant,
    /// Where its answer goes.
    pub reply: oneshot::Sender<JobResult>,
}

impl Job {
    fn tokens(&self) -> usize {
        self.texts.iter().map(PreparedText::tokens).sum()
    }
}

/// A request's answers with its timings.
#[derive(Debug)]
pub struct JobOutput {
    /// One answer per text, in order.
    pub predictions: Vec<TextPrediction>,
    /// Time in the queue.
    pub queue_time: Duration,
    /// Inference time of its batch.
    pub inference_time: Duration,
}

/// What a request gets back: its answers, or why its batch failed.
pub type JobResult = std::result::Result<JobOutput, String>;

/// The model a worker owns.
#[derive(Debug)]
pub struct Engine {
    /// The model, prepared for its engine.
    pub predictor: Predictor,
    /// Its encoder (shared with the handlers, which encode texts).
    pub encoder: Arc<Encoder>,
}

/// Takes the next batch from the queue: `first`, then whatever fits and arrives before the
/// deadline. A request that does not fit is returned as `held` for the next batch. The batch
/// is empty when every request in it had been cancelled.
fn gather(
    first: Job,
    queue: &Receiver<Job>,
    limits: &BatchLimits,
    metrics: &ModelMetrics,
) -> (Vec<Job>, Option<Job>) {
    let deadline = first.enqueued + limits.max_wait;
    let (mut tokens, mut texts) = (0, 0);
    let mut batch = Vec::new();
    let mut next = Some(first);
    loop {
        if let Some(job) = next.take() {
            metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
            if job.reply.is_closed() {
                metrics.cancelled.fetch_add(1, Ordering::Relaxed);
            } else {
                let (t, n) = (job.tokens(), job.texts.len());
                if !batch.is_empty()
                    && (tokens + t > limits.max_batch_tokens || texts + n > limits.max_batch_size)
                {
                    // Back in the queue's count: it waits for the next batch.
                    metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
                    return (batch, Some(job));
                }
                tokens += t;
                texts += n;
                batch.push(job);
                if tokens >= limits.max_batch_tokens || texts >= limits.max_batch_size {
                    return (batch, None);
                }
            }
        }
        let now = Instant::now();
        next = if now >= deadline {
            queue.try_recv().ok()
        } else {
            queue.recv_timeout(deadline - now).ok()
        };
        if next.is_none() {
            // The deadline passed with nothing new (or the server stopped). A batch left empty
            // (every request in it cancelled) sends the caller back to wait for a new first.
            return (batch, None);
        }
    }
}

/// Runs one batch and answers each of its requests.
fn run_batch(engine: &Engine, batch: Vec<Job>, metrics: &ModelMetrics) {
    let started = Instant::now();
    // Requests of a batch rarely differ in decoding; each decoding is one pass.
    let mut groups: Vec<(TagDecoding, Vec<Job>)> = Vec::new();
    for job in batch {
        // A client may have left while the batch waited for company.
        if job.reply.is_closed() {
            metrics.cancelled.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        match groups.iter_mut().find(|(d, _)| *d == job.decoding) {
            Some((_, jobs)) => jobs.push(job),
            None => groups.push((job.decoding, vec![job])),
        }
    }
    for (decoding, jobs) in groups {
        let top_k = jobs.iter().map(|j| j.top_k).max().unwrap_or(1);
        let mut texts = Vec::new();
        let mut replies = Vec::with_capacity(jobs.len());
        for job in jobs {
            replies.push((job.texts.len(), job.top_k, job.enqueued, job.reply));
            texts.extend(job.texts);
        }
        let n = texts.len();
        metrics.batch_size.observe(n as f64);
        let options = PredictOptions::new(n.max(1))
            .with_top_k(top_k)
            .with_decoding(decoding);
        let result = catch_unwind(AssertUnwindSafe(|| {
            engine
                .predictor
                .predict_texts(&engine.encoder, texts, &options)
        }));
        let inference_time = started.elapsed();
        match result {
            Ok(Ok(predictions)) => {
                metrics.texts.fetch_add(n as u64, Ordering::Relaxed);
                let mut predictions = predictions.into_iter();
                for (count, k, enqueued, reply) in replies {
                    let mut mine: Vec<TextPrediction> = predictions.by_ref().take(count).collect();
                    for p in mine.iter_mut().filter_map(|p| p.prediction.as_mut()) {
                        p.top_k.truncate(k);
                    }
                    let queue_time = started.saturating_duration_since(enqueued);
                    metrics.queue.observe_duration(queue_time);
                    metrics.inference.observe_duration(inference_time);
                    // A client that has gone no longer wants it.
                    let _ = reply.send(Ok(JobOutput {
                        predictions: mine,
                        queue_time,
                        inference_time,
                    }));
                }
            }
            failed => {
                let message = match failed {
                    Ok(Err(e)) => format!("inference failed: {e}"),
                    _ => "inference failed: the model panicked".to_string(),
                };
                tracing::error!(batch = n, error = %message, "batch failed");
                metrics.failed_batches.fetch_add(1, Ordering::Relaxed);
                for (_, _, _, reply) in replies {
                    let _ = reply.send(Err(message.clone()));
                }
            }
        }
    }
}

/// The worker's loop: until every sender of `queue` is dropped (the server has stopped).
pub fn run_worker(
    engine: &Engine,
    queue: &Receiver<Job>,
    limits: &BatchLimits,
    metrics: &ModelMetrics,
) {
    let mut held: Option<Job> = None;
    loop {
        let first = match held.take() {
            Some(job) => job,
            None => match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        let (batch, next) = gather(first, queue, limits, metrics);
        held = next;
        if !batch.is_empty() {
            run_batch(engine, batch, metrics);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::testing::tiny_engine;

    fn job(engine: &Engine, texts: &[&str], top_k: usize) -> (Job, oneshot::Receiver<JobResult>) {
        let (tx, rx) = oneshot::channel();
        let job = Job {
            texts: texts
                .iter()
                .map(|t| PreparedText::new(&engine.encoder, t).expect("encodes"))
                .collect(),
            top_k,
            decoding: TagDecoding::Iob2,
            enqueued: Instant::now(),
            reply: tx,
        };
        (job, rx)
    }

    fn limits(tokens: usize, size: usize, wait_ms: u64) -> BatchLimits {
        BatchLimits {
            max_batch_tokens: tokens,
            max_batch_size: size,
            max_wait: Duration::from_millis(wait_ms),
        }
    }

    #[test]
    fn gather_takes_what_fits_and_holds_the_rest() {
        let engine = tiny_engine();
        let metrics = ModelMetrics::default();
        let (tx, rx) = mpsc::channel();
        let mut receivers = Vec::new();
        for texts in [&["play jazz"][..], &["play rock", "play pop"], &["a b c"]] {
            let (j, r) = job(&engine, texts, 1);
            metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
            tx.send(j).expect("queued");
            receivers.push(r);
        }
        let first = rx.recv().expect("first");
        // Two texts at most: the second request (two texts) does not fit beside the first.
        let (batch, held) = gather(first, &rx, &limits(10_000, 2, 0), &metrics);
        assert_eq!(batch.iter().map(|j| j.texts.len()).collect::<Vec<_>>(), [1]);
        let held = held.expect("the second request is held");
        assert_eq!(held.texts[0].text(), "play rock");
        assert_eq!(
            metrics.queue_depth.load(Ordering::Relaxed),
            2,
            "held and third wait"
        );
        // The held request and the third (one text more) make the next batch of three.
        let (batch, held) = gather(held, &rx, &limits(10_000, 3, 0), &metrics);
        assert_eq!(
            batch.iter().map(|j| j.texts.len()).collect::<Vec<_>>(),
            [2, 1]
        );
        assert!(held.is_none());
        assert_eq!(metrics.queue_depth.load(Ordering::Relaxed), 0);

        // A request whose client left is skipped and counted.
        let (gone, rx_gone) = job(&engine, &["play jazz"], 1);
        drop(rx_gone);
        tx.send(gone).expect("queued");
        let (live, _rx_live) = job(&engine, &["play jazz"], 1);
        tx.send(live).expect("queued");
        let first = rx.recv().expect("the cancelled one");
        let (batch, held) = gather(first, &rx, &limits(10_000, 8, 0), &metrics);
        assert_eq!(batch.len(), 1, "only the live request");
        assert!(held.is_none());
        assert_eq!(metrics.cancelled.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn token_limit_splits_batches_and_waits_at_most_max_wait() {
        let engine = tiny_engine();
        let metrics = ModelMetrics::default();
        let (tx, rx) = mpsc::channel();
        let (a, _ra) = job(&engine, &["play jazz"], 1);
        let (b, _rb) = job(&engine, &["play rock now"], 1);
        let per_request = a.tokens();
        tx.send(b).expect("queued");
        let started = Instant::now();
        // The first request fills the batch to the token limit: it goes at once.
        let (batch, held) = gather(a, &rx, &limits(per_request, 100, 50), &metrics);
        assert_eq!(batch.len(), 1);
        assert!(held.is_none());
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "a full batch does not wait"
        );
        // A request that would overflow the tokens is held for the next batch.
        let (c, _rc) = job(&engine, &["play jazz"], 1);
        let b = rx.try_recv().expect("b still queued");
        tx.send(b).expect("queued again");
        let (batch, held) = gather(c, &rx, &limits(per_request + 1, 100, 50), &metrics);
        assert_eq!(batch.len(), 1);
        assert_eq!(held.expect("b held").texts[0].text(), "play rock now");

        // Alone, a request waits for company until max_wait, then goes.
        let (c, _rc) = job(&engine, &["play jazz"], 1);
        let started = Instant::now();
        let (batch, held) = gather(c, &rx, &limits(10_000, 100, 30), &metrics);
        assert_eq!(batch.len(), 1);
        assert!(held.is_none());
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(25), "{waited:?}");
        assert!(waited < Duration::from_millis(1000), "{waited:?}");
    }

    #[test]
    fn answers_go_to_their_own_request_with_their_own_top_k() {
        let engine = tiny_engine();
        let metrics = ModelMetrics::default();
        let (j1, r1) = job(&engine, &["play jazz", "play some rock"], 1);
        let (j2, r2) = job(&engine, &["play pop"], 3);
        run_batch(&engine, vec![j1, j2], &metrics);
        let a1 = r1.blocking_recv().expect("answered").expect("ok");
        let a2 = r2.blocking_recv().expect("answered").expect("ok");
        let texts: Vec<&str> = a1
            .predictions
            .iter()
            .map(|p| p.example.text.as_str())
            .collect();
        assert_eq!(texts, ["play jazz", "play some rock"]);
        assert_eq!(a2.predictions[0].example.text, "play pop");
        let k = |p: &TextPrediction| p.prediction.as_ref().map(|p| p.top_k.len());
        assert_eq!(k(&a1.predictions[0]), Some(1));
        assert_eq!(
            k(&a2.predictions[0]),
            Some(2),
            "two classes in the tiny model"
        );
        // The same text alone gives the same answer, bit for bit, as inside the batch.
        let (j3, r3) = job(&engine, &["play pop"], 3);
        run_batch(&engine, vec![j3], &metrics);
        let a3 = r3.blocking_recv().expect("answered").expect("ok");
        assert_eq!(a3.predictions[0].to_json(), a2.predictions[0].to_json());
        assert_eq!(metrics.texts.load(Ordering::Relaxed), 4);
        assert_eq!(metrics.batch_size.count(), 2);
    }

    #[test]
    fn a_failing_batch_answers_500_and_the_worker_goes_on() {
        let engine = crate::testing::broken_engine();
        let metrics = ModelMetrics::default();
        let (j, r) = job(&engine, &["play jazz"], 1);
        run_batch(&engine, vec![j], &metrics);
        let err = r.blocking_recv().expect("answered").expect_err("fails");
        assert!(err.starts_with("inference failed"), "{err}");
        assert_eq!(metrics.failed_batches.load(Ordering::Relaxed), 1);
    }
}
