//! `cargo xtask loadtest` and `cargo xtask browser-check`: `mtl serve` under load, against the
//! PyTorch reference server, and in a real browser.

use std::env;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{Cargo, QUICKSTART_RUN, libtorch};

/// The sentences of the load: SNIPS test, one per request.
const SNIPS_TEST: &str = "../shared/data/snips/test/seq.in";
/// The PyTorch reference server.
const SERVE_REF: &str = "../shared/bench/serve_ref.py";
/// The run directory `loadtest` defaults to.
const SNIPS_RUN: &str = "runs/snips";
/// Where `browser-check` keeps its screenshot.
const SCREENSHOT: &str = "docs/serve-page.png";
/// The sentences `browser-check` types.
const PAGE_TEXTS: [&str; 2] = [
    "wake me up at 6 30 am on monday",
    "book a table for two at an italian restaurant in paris tonight",
];

/// The directory cargo builds into (`CARGO_TARGET_DIR`, else `target/`).
fn target_dir(root: &Path) -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

/// The built binaries, and libtorch's environment to run them when they link it.
struct Bins {
    release: PathBuf,
    torch: Option<libtorch::LibtorchEnv>,
}

impl Bins {
    /// A command for the binary `name`.
    fn command(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.release.join(name));
        if let Some(torch) = &self.torch {
            torch.apply(&mut cmd);
        }
        cmd
    }
}

/// Builds the binaries as `cargo xtask ci`'s test stage does (same features, so nothing is
/// compiled twice).
fn build(root: &Path, features: &[String], dry_run: bool) -> Result<Bins> {
    let mut cmd = Cargo::new(["test", "--release", "--workspace", "--no-run"]);
    if !features.is_empty() {
        cmd = cmd.args(["--features", &features.join(",")]);
    }
    let torch = libtorch::env_for(root, features)?;
    cmd.with_libtorch(torch.as_ref()).run(dry_run)?;
    Ok(Bins {
        release: target_dir(root).join("release"),
        torch,
    })
}

/// A free loopback port (bound, then released for the server to take).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A child process killed (and reaped) when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.0 request (the connection closes after the answer): status and body.
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let body = reply
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

/// Waits (at most `limit`) until `GET path` answers 200.
fn wait_for(addr: SocketAddr, path: &str, limit: Duration, child: &mut Child) -> Result<()> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = child.try_wait()? {
            bail!("the server exited ({status}) before answering {path}");
        }
        if http(addr, "GET", path, "").is_ok_and(|(s, _)| s == 200) {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(100));
    }
    bail!("{addr}{path} did not answer 200 within {limit:?}")
}

/// `mtl serve` on a free loopback port, ready.
fn start_mtl(bins: &Bins, model: &str, extra: &[&str]) -> Result<(Guard, SocketAddr)> {
    let port = free_port()?;
    let mut cmd = bins.command("mtl");
    cmd.args(["serve", "--model", model, "--port", &port.to_string()])
        .args(extra)
        .stdin(Stdio::null());
    eprintln!("$ {cmd:?}");
    let mut child = Guard(cmd.spawn().context("cannot start mtl serve")?);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for(addr, "/ready", Duration::from_secs(60), &mut child.0)?;
    Ok((child, addr))
}

/// Peak and current resident memory of a process, in MiB (`VmHWM`, `VmRSS`).
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// The JSON lines `mtl-loadgen` prints for one server.
fn drive(
    bins: &Bins,
    addr: SocketAddr,
    label: &str,
    load: &[&str],
    texts: &str,
) -> Result<Vec<Value>> {
    let mut cmd = bins.command("mtl-loadgen");
    cmd.args([
        "--addr",
        &addr.to_string(),
        "--texts",
        texts,
        "--label",
        label,
    ])
    .args(load);
    eprintln!("$ {cmd:?}");
    let out = cmd.output().context("cannot run mtl-loadgen")?;
    std::io::stderr().write_all(&out.stderr).ok();
    if !out.status.success() {
        bail!("mtl-loadgen failed ({})", out.status);
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}")))
        .collect()
}

/// Offline `mtl predict` throughput on `texts` repeated `copies` times, texts/s, with the
/// model's loading time (a run on one text) taken off.
fn offline_rate(bins: &Bins, model: &str, texts: &str, copies: usize) -> Result<f64> {
    let lines = std::fs::read_to_string(texts).with_context(|| format!("cannot read {texts}"))?;
    let one = lines.lines().next().unwrap_or("hello").to_string();
    let many = lines.repeat(copies);
    let n = many.lines().count();
    let time = |input: &str| -> Result<f64> {
        let started = Instant::now();
        let mut child = bins
            .command("mtl")
            .args(["predict", "--model", model])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .context("cannot run mtl predict")?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(input.as_bytes())?;
        let status = child.wait()?;
        if !status.success() {
            bail!("mtl predict failed ({status})");
        }
        Ok(started.elapsed().as_secs_f64())
    };
    let load = time(&format!("{one}\n"))?;
    let all = time(&many)?;
    Ok(n as f64 / (all - load).max(1e-9))
}

/// The value of `key` in a loadgen line.
fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

fn load_name(v: &Value) -> String {
    match (v["load"]["clients"].as_u64(), v["load"]["rate"].as_f64()) {
        (Some(1), _) => "1 client".to_string(),
        (Some(c), _) => format!("{c} clients"),
        (_, Some(r)) => format!("open {r:.0} req/s"),
        _ => "?".to_string(),
    }
}

/// The closed-loop line with `clients` clients.
fn phase(lines: &[Value], clients: u64) -> Option<&Value> {
    lines
        .iter()
        .find(|v| v["load"]["clients"].as_u64() == Some(clients))
}

pub fn loadtest(root: &Path, args: &[String]) -> Result<()> {
    let (mut model, mut python, mut seconds, mut rate, mut texts) = (
        SNIPS_RUN.to_string(),
        None::<String>,
        "10".to_string(),
        None::<f64>,
        SNIPS_TEST.to_string(),
    );
    let (mut features, mut dry_run) = (Vec::new(), false);
    crate::each_flag("loadtest", args, |flag, value| {
        match flag {
            "--model" => model = value()?,
            "--vs-python" => python = Some(value()?),
            "--seconds" => seconds = value()?,
            "--rate" => rate = Some(value()?.parse()?),
            "--texts" => texts = value()?,
            "--features" | "-F" => features.push(value()?),
            "--dry-run" => dry_run = true,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    if !Path::new(&model).exists() {
        bail!(
            "no model at {model}: train the SNIPS recipe first (mtl train --config configs/snips.toml \
             --data ../shared/data/snips --out {SNIPS_RUN}) or give --model RUN_DIR"
        );
    }
    if let Some(py) = &python {
        let ok = Command::new(py)
            .args(["-c", "import torch, fastapi, uvicorn"])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            bail!(
                "{py} cannot import torch, fastapi and uvicorn: `{py} -m pip install torch fastapi uvicorn`"
            );
        }
    }
    let bins = build(root, &features, dry_run)?;
    if dry_run {
        return Ok(());
    }
    let load = uptime();
    let closed = ["--clients", "1,8,64", "--seconds", &seconds];
    let mut lines = Vec::new();
    let mut memory = Vec::new();

    let (mut server, addr) = start_mtl(&bins, &model, &["--log-level", "warn"])?;
    let ours = drive(&bins, addr, "mtl serve", &closed, &texts)?;
    memory.push(("mtl serve", memory_mib(server.0.id())));
    let theirs = match &python {
        Some(py) => {
            let port = free_port()?;
            let best = Path::new(&model).join("best");
            let dir = if best.is_dir() {
                best
            } else {
                PathBuf::from(&model)
            };
            let mut cmd = Command::new(py);
            cmd.arg(SERVE_REF).args([
                "--model",
                &dir.display().to_string(),
                "--port",
                &port.to_string(),
                "--threads",
                "2",
            ]);
            eprintln!("$ {cmd:?}");
            let mut child = Guard(cmd.spawn().context("cannot start serve_ref.py")?);
            let paddr = SocketAddr::from(([127, 0, 0, 1], port));
            wait_for(paddr, "/health", Duration::from_secs(120), &mut child.0)?;
            let theirs = drive(&bins, paddr, "PyTorch + FastAPI", &closed, &texts)?;
            memory.push(("PyTorch + FastAPI", memory_mib(child.0.id())));
            Some((child, paddr, theirs))
        }
        None => None,
    };
    // The open loop: the same fixed rate for both, half what the slower one sustained.
    let saturation = |l: &[Value]| l.iter().map(|v| num(v, "rps")).fold(0.0, f64::max);
    let rate = rate.unwrap_or_else(|| {
        let slowest = theirs.as_ref().map_or(saturation(&ours), |(_, _, t)| {
            saturation(t).min(saturation(&ours))
        });
        (slowest * 0.5).max(1.0).round()
    });
    let open = ["--rate", &format!("{rate}"), "--seconds", &seconds];
    lines.extend(ours.clone());
    lines.extend(drive(&bins, addr, "mtl serve", &open, &texts)?);
    let (hwm, rss) = memory_mib(server.0.id());
    memory[0].1 = (hwm, rss);
    if let Some((_, paddr, t)) = &theirs {
        lines.extend(t.clone());
        lines.extend(drive(&bins, *paddr, "PyTorch + FastAPI", &open, &texts)?);
    }
    let _ = server.0.kill();
    let offline = offline_rate(&bins, &model, &texts, 20)?;

    println!(
        "\nload: one SNIPS test sentence per request ({texts}), {seconds} s per phase; machine load before: {load}"
    );
    println!("\n| server | load | requests/s | p50 ms | p95 ms | p99 ms | errors | 429 |");
    println!("|---|---|---|---|---|---|---|---|");
    for v in &lines {
        println!(
            "| {} | {} | {:.1} | {:.2} | {:.2} | {:.2} | {} | {} |",
            v["server"].as_str().unwrap_or("?"),
            load_name(v),
            num(v, "rps"),
            num(v, "p50_ms"),
            num(v, "p95_ms"),
            num(v, "p99_ms"),
            v["errors"],
            v["refused_429"]
        );
    }
    println!("\n| server | peak RSS MiB (VmHWM) | RSS MiB after the load |");
    println!("|---|---|---|");
    for (name, (hwm, rss)) in &memory {
        println!("| {name} | {hwm:.1} | {rss:.1} |");
    }
    let best = saturation(&ours);
    println!(
        "\noffline `mtl predict` on the same texts: {offline:.1} texts/s; mtl serve at saturation: {best:.1} req/s ({:.0}% of offline; target >= 80%)",
        100.0 * best / offline
    );
    println!("mtl serve peak RSS {hwm:.1} MiB (target <= 100 MB = 95.4 MiB)");
    let errors: f64 = lines
        .iter()
        .filter(|v| v["server"] == "mtl serve")
        .map(|v| num(v, "errors"))
        .sum();
    println!("mtl serve errors: {errors} (target 0)");
    if let Some((_, _, t)) = &theirs {
        if let (Some(o), Some(p)) = (phase(&ours, 64), phase(t, 64)) {
            println!(
                "throughput at 64 clients: {:.2}x PyTorch's (target >= 3x)",
                num(o, "rps") / num(p, "rps")
            );
        }
        if let (Some(o), Some(p)) = (phase(&ours, 8), phase(t, 8)) {
            println!(
                "p99 at 8 clients: {:.2}x PyTorch's (target <= 0.5x)",
                num(o, "p99_ms") / num(p, "p99_ms")
            );
        }
    }
    println!("machine load after: {}", uptime());
    Ok(())
}

/// `/proc/loadavg`'s three averages.
fn uptime() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Unescapes the few entities a DOM dump writes in text and attribute values.
fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// The value of attribute `name` in an HTML start tag's text.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let len = tag[start..].find('"')?;
    Some(unescape(&tag[start..start + len]))
}

/// An entity as the page and the API show it: text, label, start, end.
type Shown = (String, String, u64, u64);

/// The entities the page highlighted, in page order, and the intents it shows.
fn read_page(dom: &str) -> (Vec<Shown>, Vec<String>) {
    let mut entities = Vec::new();
    for part in dom.split("<mark ").skip(1) {
        let Some(end_of_tag) = part.find('>') else {
            continue;
        };
        let tag = &part[..end_of_tag];
        let text = part[end_of_tag + 1..].split('<').next().unwrap_or("");
        let number = |n: &str| {
            attribute(tag, n)
                .and_then(|v| v.parse().ok())
                .unwrap_or(u64::MAX)
        };
        entities.push((
            unescape(text),
            attribute(tag, "data-label").unwrap_or_default(),
            number("data-start"),
            number("data-end"),
        ));
    }
    let intents = dom
        .split("data-intent=\"")
        .skip(1)
        .filter_map(|p| p.split('"').next().map(unescape))
        .collect();
    (entities, intents)
}

/// Runs `cmd`, killing it after `limit`; its stdout.
fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<String> {
    eprintln!("$ {cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let reader = thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            let out = reader.join().unwrap_or_default();
            if !status.success() {
                bail!("{cmd:?} failed ({status})");
            }
            return Ok(out);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} did not finish within {limit:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The first of Debian's and Google's Chromium names found on `PATH`.
fn find_chromium() -> Option<String> {
    let path = env::var_os("PATH")?;
    [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]
    .into_iter()
    .find(|name| env::split_paths(&path).any(|dir| dir.join(name).is_file()))
    .map(str::to_string)
}

pub fn browser_check(root: &Path, args: &[String]) -> Result<()> {
    let (mut model, mut screenshot, mut chromium) =
        (QUICKSTART_RUN.to_string(), SCREENSHOT.to_string(), None);
    let (mut features, mut dry_run) = (Vec::new(), false);
    crate::each_flag("browser-check", args, |flag, value| {
        match flag {
            "--model" => model = value()?,
            "--screenshot" => screenshot = value()?,
            "--chromium" => chromium = Some(value()?),
            "--features" | "-F" => features.push(value()?),
            "--dry-run" => dry_run = true,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let chromium = chromium.or_else(find_chromium).context(
        "no Chromium on PATH: `apt-get install chromium` (Debian), or give --chromium BIN",
    )?;
    let bins = build(root, &features, dry_run)?;
    if dry_run {
        return Ok(());
    }
    if !Path::new(&model).join("best").is_dir() && model == QUICKSTART_RUN {
        eprintln!("Training the quickstart model into {QUICKSTART_RUN}/ for the page.");
        let status = bins
            .command("mtl")
            .arg("train")
            .args(crate::QUICKSTART_TRAIN)
            .arg("--plain")
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("training the quickstart model failed ({status})");
        }
    }
    let (_server, addr) = start_mtl(&bins, &model, &["--log-level", "warn"])?;
    // What the API answers for the sentences: the page must show exactly these entities.
    let body = serde_json::json!({ "texts": PAGE_TEXTS }).to_string();
    let (status, answer) = http(addr, "POST", "/v1/predict", &body)?;
    if status != 200 {
        bail!("POST /v1/predict answered {status}: {answer}");
    }
    let answer: Value = serde_json::from_str(&answer)?;
    let mut expected = Vec::new();
    let mut intents = Vec::new();
    for p in answer["predictions"].as_array().context("predictions")? {
        intents.push(p["label"]["name"].as_str().unwrap_or_default().to_string());
        for e in p["entities"].as_array().context("entities")? {
            expected.push((
                e["text"].as_str().unwrap_or_default().to_string(),
                e["label"].as_str().unwrap_or_default().to_string(),
                e["start"].as_u64().unwrap_or(0),
                e["end"].as_u64().unwrap_or(0),
            ));
        }
    }
    if expected.is_empty() {
        bail!("the model finds no entity in {PAGE_TEXTS:?}: nothing to check on the page");
    }
    let query: Vec<String> = PAGE_TEXTS
        .iter()
        .map(|t| format!("text={}", t.replace(' ', "+")))
        .collect();
    let url = format!("http://{addr}/?{}", query.join("&"));
    let profile = env::temp_dir().join(format!("mtl-browser-check-{}", std::process::id()));
    let browser = |extra: &[&str]| {
        let mut cmd = Command::new(&chromium);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=15000", "--window-size=1100,720"])
        .args(extra)
        .arg(&url);
        cmd
    };
    let dom = run_bounded(&mut browser(&["--dump-dom"]), Duration::from_secs(120))?;
    let (shown, shown_intents) = read_page(&dom);
    println!("the page highlights: {shown:?}; intents {shown_intents:?}");
    if !dom.contains("data-state=\"done\"") {
        bail!(
            "the page did not finish its request: {}",
            dom.chars().take(2000).collect::<String>()
        );
    }
    if shown != expected {
        bail!("the page shows {shown:?}, the API answers {expected:?}");
    }
    if shown_intents != intents {
        bail!("the page shows intents {shown_intents:?}, the API answers {intents:?}");
    }
    let shot = root.join(&screenshot);
    if let Some(dir) = shot.parent() {
        std::fs::create_dir_all(dir)?;
    }
    run_bounded(
        &mut browser(&[
            &format!("--screenshot={}", shot.display()),
            "--run-all-compositor-stages-before-draw",
        ]),
        Duration::from_secs(120),
    )?;
    let _ = std::fs::remove_dir_all(&profile);
    if !shot.is_file() {
        bail!("Chromium wrote no screenshot at {}", shot.display());
    }
    println!(
        "browser-check: ok ({} entities as the API gives them; screenshot {})",
        shown.len(),
        shot.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_highlights_from_a_dom_dump() {
        let dom = r#"<div class="card"><div class="intent"><span class="name" data-intent="set_alarm">set_alarm</span></div><div class="doc">wake me up at <mark class="entity" title="time 99.9%" style="background: red;" data-label="time" data-start="14" data-end="21" data-score="0.99">6 30 am<span class="type">time</span><span class="p">99.9%</span></mark> on <mark class="entity" data-label="date" data-start="25" data-end="31">R&amp;B<span class="type">date</span></mark></div></div>"#;
        let (entities, intents) = read_page(dom);
        assert_eq!(
            entities,
            [
                ("6 30 am".to_string(), "time".to_string(), 14, 21),
                ("R&B".to_string(), "date".to_string(), 25, 31)
            ]
        );
        assert_eq!(intents, ["set_alarm"]);
    }
}
