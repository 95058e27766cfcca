//! `mtl serve`: loads the models, sets up logging and hands them to `mtl-serve`.

use std::io::IsTerminal;
use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use mtl::burn::module::Module;
use mtl::device;
use mtl_serve::{Limits, ServeConfig, ServedModel};

use crate::ServeArgs;
use crate::commands::engine_arg;
use crate::inputs;

/// `--model [NAME=]DIR`: the name (given, or the run directory's) and the directory.
fn model_arg(arg: &str) -> Result<(String, PathBuf)> {
    let (name, dir) = match arg.split_once('=') {
        Some((name, dir)) if !name.contains('/') => (name.to_string(), PathBuf::from(dir)),
        _ => {
            let dir = PathBuf::from(arg);
            (default_name(&dir), dir)
        }
    };
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || !name.chars().all(valid) {
        bail!(
            "model name {name:?} (from --model {arg}): use letters, digits, '-', '_' and '.' \
             (NAME=RUN_DIR names a model)"
        );
    }
    Ok((name, dir))
}

/// A run directory's own name (`runs/snips` and `runs/snips/best` are `snips`).
fn default_name(dir: &Path) -> String {
    let mut parts = dir
        .components()
        .rev()
        .filter_map(|c| c.as_os_str().to_str())
        .filter(|c| !matches!(*c, "." | ".." | "/"));
    let name = match parts.next() {
        Some("best" | "last") => parts.next(),
        other => other,
    };
    name.unwrap_or("default").to_string()
}

/// Logs go to stderr, as JSON lines or text.
fn init_logging(format: &str, level: &str) -> Result<()> {
    let level: tracing_subscriber::filter::LevelFilter = level.parse().with_context(|| {
        format!("--log-level {level:?}: expected error, warn, info, debug or trace")
    })?;
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    match format {
        "json" => builder.json().flatten_event(true).init(),
        "text" => builder.init(),
        other => bail!("--log-format {other:?}: expected json or text"),
    }
    Ok(())
}

pub fn serve(args: ServeArgs) -> Result<()> {
    init_logging(&args.log_format, &args.log_level)?;
    let api_key = match args.api_key.or_else(|| std::env::var("MTL_API_KEY").ok()) {
        Some(key) if key.is_empty() => bail!("the API key (--api-key or MTL_API_KEY) is empty"),
        key => key,
    };
    let device = device::parse(&args.device)?;
    let engine = engine_arg(&args.engine, &device)?;
    let mut models = Vec::with_capacity(args.models.len());
    for arg in &args.models {
        let (name, dir) = model_arg(arg)?;
        let (model, encoder) = inputs::load_model(&dir, &device)?;
        tracing::info!(model = %name, path = %dir.display(), "loaded");
        models.push(ServedModel::new(
            name,
            model.valid(),
            encoder,
            engine,
            &device,
        ));
    }
    let config = ServeConfig {
        limits: Limits {
            max_batch_tokens: args.max_batch_tokens,
            max_batch_size: args.max_batch_size,
            max_wait: Duration::from_millis(args.max_wait_ms),
            max_client_batch: args.max_client_batch,
            max_body_bytes: args.max_body_bytes,
            max_concurrent: args.max_concurrent,
            truncate: !args.no_truncate,
        },
        api_key,
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
        top_k: args.top_k as usize,
    };
    let listener = TcpListener::bind((args.host.as_str(), args.port))
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let loopback = args
        .host
        .parse::<IpAddr>()
        .map_or(args.host == "localhost", |ip| ip.is_loopback());
    if !loopback && config.api_key.is_none() {
        tracing::warn!(
            host = %args.host,
            "listening beyond this machine without an API key: anyone who can reach it can use it (--api-key or MTL_API_KEY)"
        );
    }
    mtl_serve::serve(listener, config, models)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names() {
        let named = |a: &str| model_arg(a).map(|(n, d)| (n, d.display().to_string()));
        assert_eq!(
            named("runs/snips").ok(),
            Some(("snips".into(), "runs/snips".into()))
        );
        assert_eq!(
            named("runs/snips/best/").ok(),
            Some(("snips".into(), "runs/snips/best/".into()))
        );
        assert_eq!(
            named("intents=runs/x=y").ok(),
            Some(("intents".into(), "runs/x=y".into()))
        );
        assert!(named("runs/a=b").is_err(), "'=' in a name");
        assert!(named("bad name=runs/x").is_err());
    }
}
