//! `mtl-loadgen` against a stub HTTP server on loopback: it counts answers, refusals and
//! errors as the server gave them, and refuses addresses beyond this machine.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

/// A keep-alive HTTP/1.1 stub: answers every request 200, except every third 429.
fn stub() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let counter = counter.clone();
            thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut length = 0;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    let status = if n % 3 == 2 {
                        "429 Too Many Requests"
                    } else {
                        "200 OK"
                    };
                    let answer = format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\n\r\n{{}}");
                    if reader.get_mut().write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn texts() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("mtl-loadgen-{}.txt", std::process::id()));
    std::fs::write(&path, "play jazz\nbook a table\n").expect("texts");
    path
}

/// Runs the load generator on the texts with `args`.
fn loadgen(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mtl-loadgen"))
        .arg("--texts")
        .arg(texts())
        .args(args)
        .output()
        .expect("runs")
}

#[test]
fn counts_answers_refusals_and_respects_its_bounds() {
    let (addr, seen) = stub();
    let addr = addr.to_string();
    let out = loadgen(&[
        "--addr",
        &addr,
        "--clients",
        "2",
        "--seconds",
        "5",
        "--max-requests",
        "90",
        "--label",
        "stub",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(line["server"], "stub");
    assert_eq!(line["load"]["clients"], 2);
    let (ok, refused) = (line["requests"].as_u64(), line["refused_429"].as_u64());
    // 90 requests measured (after the warm-up's), a third of all answers refused.
    assert_eq!(ok.zip(refused).map(|(a, b)| a + b), Some(90));
    assert_eq!(line["errors"], 0);
    assert!(line["p99_ms"].as_f64().is_some_and(|p| p > 0.0));
    let total = seen.load(Ordering::SeqCst);
    // Plus at most 200 of the warm-up, and the health check.
    assert!(
        (90..=90 + 200 + 1).contains(&total),
        "{total} requests reached the stub"
    );
}

#[test]
fn an_open_loop_sends_at_its_rate() {
    let (addr, seen) = stub();
    let addr = addr.to_string();
    let out = loadgen(&["--addr", &addr, "--rate", "40", "--seconds", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(line["phase"], "open");
    let (ok, refused) = (line["requests"].as_u64(), line["refused_429"].as_u64());
    assert_eq!(ok.zip(refused).map(|(a, b)| a + b), Some(40));
    let seconds = line["seconds"].as_f64().expect("seconds");
    assert!(
        (0.9..5.0).contains(&seconds),
        "{seconds} s for 40 requests at 40/s"
    );
    assert!(seen.load(Ordering::SeqCst) >= 40);
}

#[test]
fn refuses_addresses_beyond_loopback() {
    let out = loadgen(&["--addr", "192.0.2.1:80", "--clients", "1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only targets loopback"));
}
