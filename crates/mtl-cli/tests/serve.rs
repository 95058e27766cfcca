//! `mtl serve` end to end: the real binary on an ephemeral loopback port, a tiny model trained
//! on the quickstart data, and a blocking HTTP client. Every load loop is bounded in count and
//! time, and only 127.0.0.1 is contacted.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use mtl_serve::client::{Client, Reply, texts_body};
use serde_json::Value;

mod common;
use common::{scratch, stderr, trained_run, workspace};

/// Longest any single request may take in these tests.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A running `mtl serve`, killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `mtl serve --model quick=RUN --port 0` with `extra` flags and waits (bounded)
    /// until it is ready.
    fn start(extra: &[&str], envs: &[(&str, &str)]) -> Self {
        let run = trained_run();
        let model = format!("quick={}", run.display());
        let mut child = Command::new(env!("CARGO_BIN_EXE_mtl"))
            .args([
                "serve",
                "--model",
                &model,
                "--port",
                "0",
                "--log-format",
                "json",
            ])
            .args(extra)
            .env_remove("MTL_API_KEY")
            .envs(envs.iter().copied())
            .current_dir(workspace())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mtl serve starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = BufReader::new(child.stderr.take().expect("stderr"));
        let sink = logs.clone();
        // Drains the server's log for the whole run (a full pipe would block it).
        thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["message"] == "listening"
                    && let Some(addr) = v["addr"].as_str().and_then(|a| a.parse().ok())
                {
                    let _ = tx.send(addr);
                }
                sink.lock().expect("logs").push(line);
            }
        });
        let addr: SocketAddr = match rx.recv_timeout(TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("no `listening` line: {:?}", logs.lock().expect("logs"));
            }
        };
        assert!(addr.ip().is_loopback(), "{addr}");
        let server = Self { child, addr, logs };
        let key = envs
            .iter()
            .find(|(k, _)| *k == "MTL_API_KEY")
            .map(|(_, v)| *v);
        let started = Instant::now();
        loop {
            let client = server.client();
            let mut client = match key {
                Some(key) => client.with_bearer(key),
                None => client,
            };
            if client.get("/ready").expect("answer").status == 200 {
                break;
            }
            assert!(started.elapsed() < TIMEOUT, "not ready in {TIMEOUT:?}");
            thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn client(&self) -> Client {
        Client::connect(self.addr, TIMEOUT).expect("connects")
    }

    fn get(&self, path: &str) -> Reply {
        self.client().get(path).expect("answer")
    }

    fn post(&self, path: &str, body: &[u8]) -> Reply {
        self.client().post_json(path, body).expect("answer")
    }

    fn log(&self) -> String {
        self.logs.lock().expect("logs").join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mtl predict` on `texts` (one per stdin line) with `flags`: its JSON lines.
fn predict_lines(texts: &[&str], flags: &[&str]) -> Vec<String> {
    let run = trained_run();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mtl"))
        .args(["predict", "--model", run.to_str().expect("utf8")])
        .args(flags)
        .current_dir(workspace())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mtl predict runs");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(format!("{}\n", texts.join("\n")).as_bytes())
        .expect("texts written");
    drop(stdin);
    let o = child.wait_with_output().expect("predict ends");
    assert!(o.status.success(), "{}", stderr(&o));
    String::from_utf8(o.stdout)
        .expect("utf8")
        .lines()
        .map(str::to_string)
        .collect()
}

/// The body the server must send for these `mtl predict` lines.
fn expected_body(lines: &[String]) -> String {
    format!("{{\"predictions\":[{}]}}", lines.join(","))
}

/// The quickstart test sentences (`data/quickstart/test/seq.in`).
fn sentences() -> Vec<String> {
    std::fs::read_to_string(workspace().join("data/quickstart/test/seq.in"))
        .expect("quickstart test split")
        .lines()
        .map(str::to_string)
        .collect()
}

/// A text longer than the tiny model's 32 tokens.
fn long_text() -> String {
    ["play the next song by queen on the kitchen speaker"; 6].join(" ")
}

fn error_code(reply: &Reply) -> String {
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{}",
        reply.text()
    );
    let v: Value = serde_json::from_slice(&reply.body).expect("a JSON error body");
    let message = v["error"]["message"].as_str().expect("a message");
    assert!(!message.is_empty());
    v["error"]["code"].as_str().expect("a code").to_string()
}

fn millis(reply: &Reply, header: &str) -> f64 {
    reply
        .header(header)
        .unwrap_or_else(|| panic!("no {header}"))
        .parse()
        .expect("milliseconds")
}

#[test]
fn answers_are_byte_for_byte_what_predict_prints() {
    let server = Server::start(&[], &[]);
    let long = long_text();
    let texts = [
        "wake me up at 6 30 am on monday",
        "Book a table for two at an Italian restaurant in Paris, tonight!",
        "what is the weather like in berlin tomorrow",
        "réveille-moi à 7h 😕",
        long.as_str(),
    ];
    let lines = predict_lines(&texts, &[]);
    assert_eq!(lines.len(), texts.len());
    assert!(lines[4].contains("\"truncated\":true"), "{}", lines[4]);
    let reply = server.post("/v1/predict", &texts_body(&texts));
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.text(), expected_body(&lines));
    // The same through the model's own route and as one `text`.
    let named = server.post("/v1/models/quick/predict", &texts_body(&texts));
    assert_eq!(named.text(), expected_body(&lines));
    let one = server.post(
        "/v1/predict",
        br#"{"text": "wake me up at 6 30 am on monday"}"#,
    );
    assert_eq!(one.text(), expected_body(&lines[..1]));
    // Options are those of `mtl predict`.
    let argmax = predict_lines(&texts[..3], &["--top-k", "1", "--decoding", "argmax"]);
    let body = serde_json::json!({"texts": &texts[..3], "top_k": 1, "decoding": "argmax"});
    let reply = server.post("/v1/predict", body.to_string().as_bytes());
    assert_eq!(reply.text(), expected_body(&argmax));
    // Timing headers on every response, in milliseconds.
    let (queue, inference, total) = (
        millis(&reply, "x-queue-time"),
        millis(&reply, "x-inference-time"),
        millis(&reply, "x-total-time"),
    );
    assert!(inference > 0.0 && queue >= 0.0, "{queue} {inference}");
    assert!(total >= inference, "{total} < {inference}");
    let health = server.get("/health");
    assert_eq!(
        (health.status, health.text().as_str()),
        (200, r#"{"status":"ok"}"#)
    );
    assert!(health.header("x-total-time").is_some());
}

#[test]
fn models_openapi_and_the_page_describe_the_server() {
    let server = Server::start(&[], &[]);
    let models: Value = serde_json::from_slice(&server.get("/v1/models").body).expect("JSON");
    let m = &models["models"][0];
    assert_eq!(m["name"], "quick");
    assert_eq!(
        (m["ready"].as_bool(), m["default"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(m["engine"], "packed");
    assert_eq!(m["config"]["d_model"], 32);
    assert_eq!(m["version"], env!("CARGO_PKG_VERSION"));
    let labels: Value = serde_json::from_str(
        &std::fs::read_to_string(trained_run().join("best/labels.json")).expect("labels.json"),
    )
    .expect("JSON");
    assert_eq!(m["labels"], labels["names"]);
    assert!(
        m["tags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "B-time"))
    );
    let spec: Value = serde_json::from_slice(&server.get("/openapi.json").body).expect("JSON");
    for path in [
        "/v1/predict",
        "/v1/models/{name}/predict",
        "/v1/models",
        "/health",
        "/ready",
        "/metrics",
        "/openapi.json",
        "/",
    ] {
        assert!(spec["paths"].get(path).is_some(), "openapi lacks {path}");
    }
    let page = server.get("/");
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = page.text();
    assert!(html.contains("fetch(url") && html.contains("/v1/predict"));
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "external assets"
    );
}

#[test]
fn every_error_has_its_status_and_a_json_body() {
    let server = Server::start(
        &[
            "--max-client-batch",
            "4",
            "--max-body-bytes",
            "2000",
            "--no-truncate",
        ],
        &[],
    );
    let long = long_text();
    let big = format!("{{\"text\": \"{}\"}}", "word ".repeat(500));
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "POST",
            "/v1/predict",
            b"{\"texts\": [\"play".to_vec(),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/predict",
            b"not json".to_vec(),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/predict",
            br#"{"texts": "play jazz"}"#.to_vec(),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/predict",
            br#"{"texts": [1, 2]}"#.to_vec(),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/predict",
            br#"{"txt": "play"}"#.to_vec(),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/predict",
            br#"{"texts": []}"#.to_vec(),
            422,
            "unprocessable",
        ),
        (
            "POST",
            "/v1/predict",
            br#"{}"#.to_vec(),
            422,
            "unprocessable",
        ),
        (
            "POST",
            "/v1/predict",
            br#"{"text": ""}"#.to_vec(),
            422,
            "unprocessable",
        ),
        (
            "POST",
            "/v1/predict",
            br#"{"texts": ["ok", "  "]}"#.to_vec(),
            422,
            "unprocessable",
        ),
        (
            "POST",
            "/v1/predict",
            br#"{"text": "a", "top_k": 0}"#.to_vec(),
            422,
            "unprocessable",
        ),
        (
            "POST",
            "/v1/predict",
            br#"{"text": "a", "decoding": "crf"}"#.to_vec(),
            422,
            "unprocessable",
        ),
        (
            "POST",
            "/v1/predict",
            texts_body(&[long.as_str()]),
            422,
            "unprocessable",
        ),
        (
            "POST",
            "/v1/predict",
            texts_body(&["a"; 5]),
            413,
            "payload_too_large",
        ),
        (
            "POST",
            "/v1/predict",
            big.into_bytes(),
            413,
            "payload_too_large",
        ),
        (
            "POST",
            "/v1/models/nope/predict",
            texts_body(&["a"]),
            404,
            "not_found",
        ),
        ("GET", "/nope", Vec::new(), 404, "not_found"),
        ("GET", "/v1/predict", Vec::new(), 405, "method_not_allowed"),
    ];
    for (method, path, body, status, code) in cases {
        let body = (method == "POST").then_some(body.as_slice());
        let reply = server
            .client()
            .request(method, path, body)
            .expect("an answer");
        let shown = String::from_utf8_lossy(body.unwrap_or_default()).into_owned();
        assert_eq!(
            reply.status,
            status,
            "{method} {path} {shown}: {}",
            reply.text()
        );
        assert_eq!(error_code(&reply), code, "{method} {path} {shown}");
    }
    // None of it stopped the server.
    let ok = server.post("/v1/predict", &texts_body(&["play jazz", "wake me up"]));
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[test]
fn an_api_key_guards_every_route_but_health_and_the_page() {
    let server = Server::start(&[], &[("MTL_API_KEY", "s3cret key")]);
    let body = texts_body(&["play jazz"]);
    for (method, path) in [
        ("POST", "/v1/predict"),
        ("POST", "/v1/models/quick/predict"),
        ("GET", "/v1/models"),
        ("GET", "/ready"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
    ] {
        let body = (method == "POST").then_some(body.as_slice());
        for client in [
            server.client(),
            server.client().with_bearer("s3cret"),
            server.client().with_bearer("S3cret key"),
        ] {
            let reply = { client }.request(method, path, body).expect("answer");
            assert_eq!(reply.status, 401, "{method} {path}");
            assert_eq!(error_code(&reply), "unauthorized");
            assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
        }
        let reply = server
            .client()
            .with_bearer("s3cret key")
            .request(method, path, body)
            .expect("answer");
        assert_eq!(reply.status, 200, "{method} {path}: {}", reply.text());
    }
    assert_eq!(server.get("/health").status, 200);
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn two_hundred_concurrent_clients_each_get_their_own_answer() {
    let server = Server::start(&["--max-wait-ms", "5"], &[]);
    let pool = sentences();
    // Client i sends one or two texts of its own; some texts recur across clients.
    let requests: Vec<Vec<String>> = (0..200)
        .map(|i| {
            let n = 1 + i % 2;
            (0..n)
                .map(|j| pool[(i * 3 + j) % pool.len()].clone())
                .collect()
        })
        .collect();
    let all: Vec<&str> = requests.iter().flatten().map(String::as_str).collect();
    let lines = predict_lines(&all, &[]);
    let mut expected = Vec::new();
    let mut at = 0;
    for r in &requests {
        expected.push(expected_body(&lines[at..at + r.len()]));
        at += r.len();
    }
    let barrier = Arc::new(Barrier::new(requests.len()));
    let handles: Vec<_> = requests
        .iter()
        .cloned()
        .map(|texts| {
            let (barrier, addr) = (barrier.clone(), server.addr);
            thread::spawn(move || {
                let mut client = Client::connect(addr, TIMEOUT).expect("connects");
                let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
                let body = texts_body(&texts);
                barrier.wait();
                client.post_json("/v1/predict", &body).expect("an answer")
            })
        })
        .collect();
    for (i, (h, want)) in handles.into_iter().zip(&expected).enumerate() {
        let reply = h.join().expect("client thread");
        assert_eq!(reply.status, 200, "client {i}: {}", reply.text());
        // Byte for byte, whatever shared its batch (the packed engine is batch-invariant).
        assert_eq!(&reply.text(), want, "client {i} got someone else's answer");
    }
    let metrics = server.get("/metrics").text();
    let batches = metric(&metrics, "mtl_batch_size_count{model=\"quick\"}");
    assert!(
        batches < 200.0,
        "no request was batched with another: {batches} batches"
    );
    assert_eq!(
        metric(&metrics, "mtl_texts_total{model=\"quick\"}"),
        all.len() as f64
    );
}

/// The value of the sample `name` (with its labels) in a Prometheus text page.
fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{page}"))
}

#[test]
fn overload_is_answered_429_and_the_server_recovers() {
    // Requests wait up to 2 s for company, so 32 sent at once overlap; 4 may be in flight.
    let server = Server::start(&["--max-concurrent", "4", "--max-wait-ms", "2000"], &[]);
    let barrier = Arc::new(Barrier::new(32));
    let handles: Vec<_> = (0..32)
        .map(|_| {
            let (barrier, addr) = (barrier.clone(), server.addr);
            thread::spawn(move || {
                let mut client = Client::connect(addr, TIMEOUT).expect("connects");
                barrier.wait();
                client
                    .post_json("/v1/predict", &texts_body(&["play jazz"]))
                    .expect("an answer")
            })
        })
        .collect();
    let replies: Vec<Reply> = handles
        .into_iter()
        .map(|h| h.join().expect("client"))
        .collect();
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let busy: Vec<&Reply> = replies.iter().filter(|r| r.status == 429).collect();
    assert_eq!(ok + busy.len(), 32, "only 200s and 429s");
    assert!((1..=4).contains(&ok), "{ok} answered");
    assert!(busy.len() >= 28, "{} refused", busy.len());
    for r in busy {
        assert_eq!(error_code(r), "too_many_requests");
        assert_eq!(r.header("retry-after"), Some("1"));
    }
    // Once the burst is over, requests are served again.
    let lines = predict_lines(&["play jazz"], &[]);
    for _ in 0..3 {
        let reply = server.post("/v1/predict", &texts_body(&["play jazz"]));
        assert_eq!(reply.text(), expected_body(&lines));
    }
}

#[test]
fn metrics_count_what_was_sent() {
    let server = Server::start(&[], &[]);
    for i in 0..5 {
        let texts = vec!["wake me up at 7 am"; i + 1];
        assert_eq!(server.post("/v1/predict", &texts_body(&texts)).status, 200);
    }
    for _ in 0..2 {
        assert_eq!(server.post("/v1/predict", br#"{"texts": []}"#).status, 422);
    }
    assert_eq!(server.post("/v1/predict", b"{").status, 400);
    assert_eq!(server.get("/nope").status, 404);
    let page = server.get("/metrics").text();
    let requests = |route: &str, status: u16| {
        metric(
            &page,
            &format!("mtl_requests_total{{route=\"{route}\",status=\"{status}\"}}"),
        )
    };
    assert_eq!(requests("/v1/predict", 200), 5.0);
    assert_eq!(requests("/v1/predict", 422), 2.0);
    assert_eq!(requests("/v1/predict", 400), 1.0);
    assert_eq!(requests("unmatched", 404), 1.0);
    // The readiness polls of `Server::start` are counted too.
    assert!(requests("/ready", 200) >= 1.0);
    let count = |name: &str| metric(&page, name);
    assert_eq!(
        count("mtl_request_duration_seconds_count{route=\"/v1/predict\"}"),
        8.0
    );
    // 1 + 2 + 3 + 4 + 5 texts (the warm-up is not counted).
    assert_eq!(count("mtl_texts_total{model=\"quick\"}"), 15.0);
    assert_eq!(
        count("mtl_queue_duration_seconds_count{model=\"quick\"}"),
        5.0
    );
    assert_eq!(
        count("mtl_inference_duration_seconds_count{model=\"quick\"}"),
        5.0
    );
    assert_eq!(count("mtl_queue_depth{model=\"quick\"}"), 0.0);
    assert_eq!(count("mtl_failed_batches_total{model=\"quick\"}"), 0.0);
}

#[test]
fn sigterm_lets_requests_in_flight_finish() {
    // The first request of a batch waits 3 s for company: the requests are in flight when
    // the signal comes.
    let mut server = Server::start(&["--max-wait-ms", "3000", "--shutdown-timeout", "20"], &[]);
    let pool = sentences();
    let texts: Vec<String> = pool[..6].to_vec();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let lines = predict_lines(&refs, &[]);
    let handles: Vec<_> = texts
        .into_iter()
        .map(|text| {
            let addr = server.addr;
            thread::spawn(move || {
                let mut client = Client::connect(addr, TIMEOUT).expect("connects");
                let reply = client
                    .post_json("/v1/predict", &texts_body(&[text.as_str()]))
                    .expect("an answer");
                (reply, Instant::now())
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(800));
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let signalled = Instant::now();
    for (h, line) in handles.into_iter().zip(&lines) {
        let (reply, at) = h.join().expect("client");
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.text(), expected_body(std::slice::from_ref(line)));
        assert!(at > signalled, "answered before the signal");
    }
    let started = Instant::now();
    let exit = loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status;
        }
        assert!(started.elapsed() < TIMEOUT, "still running after SIGTERM");
        thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "exit {exit:?}: {}", server.log());
    let log = server.log();
    assert!(
        log.contains("SIGTERM") && log.contains("\"stopped\""),
        "{log}"
    );
    assert!(
        Client::connect(server.addr, Duration::from_secs(2)).is_err(),
        "still accepting"
    );
}

#[test]
fn bad_flags_and_models_are_one_clear_error() {
    let dir = scratch("serve-bad");
    let o = common::mtl(&[
        "serve",
        "--model",
        dir.join("none").to_str().expect("utf8"),
        "--port",
        "0",
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("error: model") && err.contains("does not exist"),
        "{err}"
    );
    let run = trained_run().display().to_string();
    let o = common::mtl(&[
        "serve",
        "--model",
        &format!("bad name={run}"),
        "--port",
        "0",
    ]);
    assert!(
        stderr(&o).contains("model name \"bad name\""),
        "{}",
        stderr(&o)
    );
    let o = common::mtl(&["serve", "--model", &run, "--model", &run, "--port", "0"]);
    assert!(
        stderr(&o).contains("two models are named"),
        "{}",
        stderr(&o)
    );
    let o = common::mtl(&[
        "serve",
        "--model",
        &run,
        "--port",
        "0",
        "--log-format",
        "xml",
    ]);
    assert!(
        stderr(&o).contains("--log-format \"xml\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_burn_engine_answers_as_predict_does() {
    let server = Server::start(&["--engine", "burn"], &[]);
    let texts = [
        "wake me up at 6 30 am on monday",
        "play some jazz in the kitchen",
    ];
    let lines = predict_lines(&texts, &["--engine", "burn"]);
    let reply = server.post("/v1/predict", &texts_body(&texts));
    assert_eq!(reply.text(), expected_body(&lines));
    let models: Value = serde_json::from_slice(&server.get("/v1/models").body).expect("JSON");
    assert_eq!(models["models"][0]["engine"], "burn");
}

#[test]
fn the_work_of_a_client_that_left_is_dropped() {
    // Requests wait 600 ms for company: the first client is gone before its batch runs.
    let server = Server::start(&["--max-wait-ms", "600"], &[]);
    {
        let mut gone = std::net::TcpStream::connect(server.addr).expect("connects");
        let body = texts_body(&["play jazz"]);
        write!(
            gone,
            "POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .expect("head");
        gone.write_all(&body).expect("body");
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(Duration::from_millis(100));
    let reply = server.post(
        "/v1/predict",
        &texts_body(&["wake me up at 7 am", "play pop"]),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let page = server.get("/metrics").text();
    assert_eq!(
        metric(&page, "mtl_cancelled_requests_total{model=\"quick\"}"),
        1.0
    );
    assert_eq!(
        metric(&page, "mtl_texts_total{model=\"quick\"}"),
        2.0,
        "only the live client's texts"
    );
}

#[test]
fn the_shutdown_timeout_bounds_the_wait_for_requests_in_flight() {
    // A request that would wait 10 s for company; the shutdown gives it 1 s.
    let mut server = Server::start(&["--max-wait-ms", "10000", "--shutdown-timeout", "1"], &[]);
    let addr = server.addr;
    let client = thread::spawn(move || {
        let mut client = Client::connect(addr, TIMEOUT).expect("connects");
        client.post_json("/v1/predict", &texts_body(&["play jazz"]))
    });
    thread::sleep(Duration::from_millis(300));
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let signalled = Instant::now();
    let exit = loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(8),
            "still running"
        );
        thread::sleep(Duration::from_millis(20));
    };
    let took = signalled.elapsed();
    assert!(took >= Duration::from_millis(900), "left after {took:?}");
    assert!(!exit.success(), "a request was abandoned: exit {exit:?}");
    // The abandoned request gets no answer, or (a race with the exit) its real one.
    if let Ok(reply) = client.join().expect("client") {
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    thread::sleep(Duration::from_millis(100));
    assert!(
        server
            .log()
            .contains("the shutdown timeout ran out with requests in flight (1)"),
        "{}",
        server.log()
    );
}
