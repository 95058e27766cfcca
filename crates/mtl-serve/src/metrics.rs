//! Prometheus metrics, kept in atomics and rendered as the text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histograms' buckets.
const LATENCY_BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];
/// Upper bounds of the batch-size histogram (texts a batch).
const BATCH_BOUNDS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// A histogram with fixed buckets (cumulative counts are made when rendered).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, plus `+Inf`.
    counts: Vec<AtomicU64>,
    /// Sum of observations, in millionths.
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// A latency histogram (seconds).
    pub fn latency() -> Self {
        Self::new(&LATENCY_BOUNDS)
    }

    /// Records one observation.
    pub fn observe(&self, value: f64) {
        let i = self
            .bounds
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((value.max(0.0) * 1e6).round() as u64, Ordering::Relaxed);
    }

    /// Records a duration in seconds.
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = self
                .bounds
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// The metrics of one model's batching worker.
#[derive(Debug)]
pub struct ModelMetrics {
    /// Requests waiting for the worker.
    pub queue_depth: AtomicI64,
    /// Time from a request's arrival at the queue to its batch's start.
    pub queue: Histogram,
    /// Inference time of the batch a request was in.
    pub inference: Histogram,
    /// Texts per batch.
    pub batch_size: Histogram,
    /// Texts predicted.
    pub texts: AtomicU64,
    /// Requests dropped before inference because their client had gone.
    pub cancelled: AtomicU64,
    /// Batches whose inference failed.
    pub failed_batches: AtomicU64,
}

impl Default for ModelMetrics {
    fn default() -> Self {
        Self {
            queue_depth: AtomicI64::new(0),
            queue: Histogram::latency(),
            inference: Histogram::latency(),
            batch_size: Histogram::new(&BATCH_BOUNDS),
            texts: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            failed_batches: AtomicU64::new(0),
        }
    }
}

/// Reads one of a model's gauges or counters.
type ModelValue = fn(&ModelMetrics) -> i64;
/// Picks one of a model's histograms.
type ModelHistogram = fn(&ModelMetrics) -> &Histogram;

/// Every metric of the server.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests by (route, status).
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Total request time by route.
    total: Mutex<BTreeMap<String, std::sync::Arc<Histogram>>>,
    /// Requests being answered.
    pub in_flight: AtomicI64,
}

impl Metrics {
    /// Counts one answered request.
    pub fn record(&self, route: &str, status: u16, total: Duration) {
        if let Ok(mut requests) = self.requests.lock() {
            *requests.entry((route.to_string(), status)).or_insert(0) += 1;
        }
        let histogram = self.total.lock().ok().map(|mut m| {
            m.entry(route.to_string())
                .or_insert_with(|| std::sync::Arc::new(Histogram::latency()))
                .clone()
        });
        if let Some(h) = histogram {
            h.observe_duration(total);
        }
    }

    /// The text exposition format, with the models' worker metrics.
    pub fn render<'a>(
        &self,
        models: impl IntoIterator<Item = (&'a str, &'a ModelMetrics)>,
    ) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP mtl_requests_total HTTP requests answered, by route and status.\n\
             # TYPE mtl_requests_total counter\n",
        );
        if let Ok(requests) = self.requests.lock() {
            for ((route, status), n) in requests.iter() {
                let _ = writeln!(
                    out,
                    "mtl_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                    escape(route)
                );
            }
        }
        out.push_str(
            "# HELP mtl_request_duration_seconds Time from a request's arrival to its answer.\n\
             # TYPE mtl_request_duration_seconds histogram\n",
        );
        if let Ok(total) = self.total.lock() {
            for (route, h) in total.iter() {
                h.render(
                    &mut out,
                    "mtl_request_duration_seconds",
                    &format!("route=\"{}\"", escape(route)),
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP mtl_requests_in_flight Requests being answered.\n\
             # TYPE mtl_requests_in_flight gauge\nmtl_requests_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        let models: Vec<(&str, &ModelMetrics)> = models.into_iter().collect();
        let gauges: [(&str, &str, &str, ModelValue); 4] = [
            (
                "mtl_queue_depth",
                "gauge",
                "Prediction requests waiting for the model's batching worker.",
                |m| m.queue_depth.load(Ordering::Relaxed),
            ),
            ("mtl_texts_total", "counter", "Texts predicted.", |m| {
                m.texts.load(Ordering::Relaxed) as i64
            }),
            (
                "mtl_cancelled_requests_total",
                "counter",
                "Requests dropped before inference because their client had gone.",
                |m| m.cancelled.load(Ordering::Relaxed) as i64,
            ),
            (
                "mtl_failed_batches_total",
                "counter",
                "Batches whose inference failed (their requests got 500).",
                |m| m.failed_batches.load(Ordering::Relaxed) as i64,
            ),
        ];
        for (name, kind, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (model, m) in &models {
                let _ = writeln!(out, "{name}{{model=\"{}\"}} {}", escape(model), value(m));
            }
        }
        let histograms: [(&str, &str, ModelHistogram); 3] = [
            (
                "mtl_queue_duration_seconds",
                "Time a prediction request waited for its batch.",
                |m| &m.queue,
            ),
            (
                "mtl_inference_duration_seconds",
                "Inference time of the batch a prediction request was in.",
                |m| &m.inference,
            ),
            ("mtl_batch_size", "Texts per inference batch.", |m| {
                &m.batch_size
            }),
        ];
        for (name, help, histogram) in histograms {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for (model, m) in &models {
                histogram(m).render(&mut out, name, &format!("model=\"{}\"", escape(model)));
            }
        }
        out
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::latency();
        for v in [0.0001, 0.003, 0.003, 20.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "a=\"b\"");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.005\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"10\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_count{a=\"b\"} 4\n"), "{out}");
        assert!(out.contains("x_sum{a=\"b\"} 20.0061\n"), "{out}");
    }

    #[test]
    fn requests_are_counted_by_route_and_status() {
        let m = Metrics::default();
        m.record("/v1/predict", 200, Duration::from_millis(3));
        m.record("/v1/predict", 200, Duration::from_millis(4));
        m.record("/v1/predict", 422, Duration::from_millis(1));
        let model = ModelMetrics::default();
        model.batch_size.observe(3.0);
        let out = m.render([("snips\"x", &model)]);
        assert!(out.contains("mtl_requests_total{route=\"/v1/predict\",status=\"200\"} 2\n"));
        assert!(out.contains("mtl_requests_total{route=\"/v1/predict\",status=\"422\"} 1\n"));
        assert!(out.contains("mtl_request_duration_seconds_count{route=\"/v1/predict\"} 3\n"));
        assert!(
            out.contains("mtl_batch_size_bucket{model=\"snips\\\"x\",le=\"4\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("mtl_queue_depth{model=\"snips\\\"x\"} 0\n"));
    }
}
