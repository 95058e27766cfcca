//! The load generator behind `cargo xtask loadtest`: drives an HTTP prediction server on a
//! loopback address with one text per request (`{"text": ...}` to `POST /v1/predict`) and
//! prints one JSON line per phase: requests/s, latency percentiles, errors.
//!
//! ```text
//! mtl-loadgen --addr 127.0.0.1:8080 --texts FILE (--clients 1,8,64 | --rate R) [--seconds S]
//!             [--label NAME] [--max-requests N]
//! ```
//! A closed loop runs each client count in turn (every client sends its next request when
//! the previous one is answered); an open loop sends `R` requests a second on schedule,
//! whatever the answers, and measures each latency from the request's scheduled time (so a
//! server that falls behind is charged for the wait). Every phase is bounded by `--seconds`
//! and `--max-requests`; only loopback addresses are accepted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mtl_serve::client::Client;
use serde_json::json;

/// Longest wait for one answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
struct Args {
    addr: SocketAddr,
    texts: Vec<String>,
    clients: Vec<usize>,
    rate: Option<f64>,
    seconds: f64,
    label: String,
    max_requests: usize,
}

fn parse() -> Result<Args> {
    let mut args = std::env::args().skip(1);
    let (mut addr, mut texts, mut clients, mut rate) = (None, None, Vec::new(), None);
    let (mut seconds, mut label, mut max_requests) = (10.0, "server".to_string(), 200_000);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => addr = Some(value()?.parse::<SocketAddr>()?),
            "--texts" => {
                let path = value()?;
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {path}"))?;
                texts = Some(
                    text.lines()
                        .filter(|l| !l.trim().is_empty())
                        .map(str::to_string)
                        .collect::<Vec<_>>(),
                );
            }
            "--clients" => {
                clients = value()?
                    .split(',')
                    .map(|c| c.trim().parse::<usize>())
                    .collect::<Result<_, _>>()?;
            }
            "--rate" => rate = Some(value()?.parse::<f64>()?),
            "--seconds" => seconds = value()?.parse()?,
            "--label" => label = value()?,
            "--max-requests" => max_requests = value()?.parse()?,
            other => bail!("unexpected argument {other:?}"),
        }
    }
    let addr = addr.context("--addr is needed")?;
    if !addr.ip().is_loopback() {
        bail!("--addr {addr}: the load generator only targets loopback addresses");
    }
    let texts: Vec<String> = texts.context("--texts is needed")?;
    if texts.is_empty() {
        bail!("--texts has no texts");
    }
    if clients.is_empty() == rate.is_none() {
        bail!("give --clients or --rate");
    }
    Ok(Args {
        addr,
        texts,
        clients,
        rate,
        seconds,
        label,
        max_requests,
    })
}

/// What one phase saw.
#[derive(Default)]
struct Tally {
    latencies: Vec<f64>,
    errors: usize,
    refused: usize,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        self.refused += other.refused;
    }
}

/// One request: its latency is counted on 200, as refused on 429, as an error otherwise. A
/// broken connection is replaced.
fn send(
    client: &mut Option<Client>,
    addr: SocketAddr,
    body: &[u8],
    tally: &mut Tally,
    since: Instant,
) {
    if client.is_none() {
        *client = Client::connect(addr, REQUEST_TIMEOUT).ok();
    }
    let Some(c) = client.as_mut() else {
        tally.errors += 1;
        return;
    };
    match c.post_json("/v1/predict", body) {
        Ok(reply) if reply.status == 200 => tally.latencies.push(since.elapsed().as_secs_f64()),
        Ok(reply) if reply.status == 429 => tally.refused += 1,
        Ok(_) => tally.errors += 1,
        Err(_) => {
            tally.errors += 1;
            *client = None;
        }
    }
}

fn body(text: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({ "text": text })).unwrap_or_default()
}

/// Runs `threads` senders, each on its own connection, until `schedule` gives no time for the
/// next request (request `i` is counted from the instant `schedule(i)` returns), and merges
/// what they saw.
fn run_senders(
    args: &Args,
    threads: usize,
    schedule: impl Fn(usize) -> Option<Instant> + Send + Sync + 'static,
) -> Tally {
    let next = Arc::new(AtomicUsize::new(0));
    let texts = Arc::new(args.texts.clone());
    let schedule = Arc::new(schedule);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (next, texts, schedule, addr) =
                (next.clone(), texts.clone(), schedule.clone(), args.addr);
            thread::spawn(move || {
                let mut tally = Tally::default();
                let mut client = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(since) = schedule(i) else {
                        break;
                    };
                    let body = body(&texts[i % texts.len()]);
                    send(&mut client, addr, &body, &mut tally, since);
                }
                tally
            })
        })
        .collect();
    let mut tally = Tally::default();
    for h in handles {
        if let Ok(t) = h.join() {
            tally.merge(t);
        }
    }
    tally
}

/// `clients` clients in a closed loop for `seconds` (or `max_requests` requests in all).
fn closed(args: &Args, clients: usize) -> (Tally, f64) {
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(args.seconds);
    let max = args.max_requests;
    let tally = run_senders(args, clients, move |i| {
        let now = Instant::now();
        (i < max && now < end).then_some(now)
    });
    (tally, started.elapsed().as_secs_f64())
}

/// `rate` requests a second on schedule for `seconds`, from a pool of sender threads; each
/// latency counts from the request's scheduled time.
fn open(args: &Args, rate: f64) -> (Tally, f64) {
    let total = ((rate * args.seconds) as usize).min(args.max_requests);
    let senders = ((rate * 0.25) as usize).clamp(8, 256);
    let started = Instant::now();
    let tally = run_senders(args, senders, move |i| {
        (i < total).then(|| {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
            due
        })
    });
    (tally, started.elapsed().as_secs_f64())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(label: &str, phase: &str, load: serde_json::Value, mut tally: Tally, seconds: f64) {
    tally.latencies.sort_by(f64::total_cmp);
    let ms = |p: f64| (percentile(&tally.latencies, p) * 1e5).round() / 100.0;
    let line = json!({
        "server": label,
        "phase": phase,
        "load": load,
        "requests": tally.latencies.len(),
        "seconds": (seconds * 100.0).round() / 100.0,
        "rps": ((tally.latencies.len() as f64 / seconds) * 10.0).round() / 10.0,
        "p50_ms": ms(50.0),
        "p95_ms": ms(95.0),
        "p99_ms": ms(99.0),
        "errors": tally.errors,
        "refused_429": tally.refused,
    });
    println!("{line}");
}

/// Waits (at most a minute) until `GET /health` answers 200.
fn wait_healthy(addr: SocketAddr) -> Result<()> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if let Ok(mut c) = Client::connect(addr, Duration::from_secs(2))
            && c.get("/health").is_ok_and(|r| r.status == 200)
        {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(100));
    }
    bail!("{addr} did not answer GET /health within a minute")
}

fn main() -> Result<()> {
    let args = parse()?;
    wait_healthy(args.addr)?;
    // Warm-up, not reported: connections, caches, the server's first batches.
    let warm = Args {
        seconds: 1.0,
        max_requests: 200,
        ..args.clone()
    };
    let _ = closed(&warm, 8);
    if let Some(rate) = args.rate {
        let (tally, seconds) = open(&args, rate);
        report(&args.label, "open", json!({ "rate": rate }), tally, seconds);
    }
    for &clients in &args.clients {
        let (tally, seconds) = closed(&args, clients);
        report(
            &args.label,
            "closed",
            json!({ "clients": clients }),
            tally,
            seconds,
        );
    }
    Ok(())
}
