//! `kafka-store run`: the service. Installs the signal handlers on the stop
//! flag, starts the reporting threads (the progress line, and `/metrics`
//! with `[metrics]`), runs the pipeline, and reports partitions that could
//! not be archived: stopped by a data problem (exit 3), or never started
//! by a one-shot run (exit 1).

use std::sync::Arc;
use std::thread;

use super::signals::stop_on_signals;
use crate::cancel::Cancel;
use crate::cli::RunArgs;
use crate::config::Config;
use crate::exit::Exit;
use crate::metrics::{MAX_PARTITION_LABELS, Metrics, Responder, log_progress};
use crate::pipeline::{self, RunOptions, spool_bytes};

/// Archives until SIGTERM/SIGINT (or until caught up).
pub fn run(args: &RunArgs) -> anyhow::Result<Exit> {
    let config = Config::load(&args.config)?;
    raise_open_files_limit();
    let cancel = stop_on_signals()?;
    let options = RunOptions {
        until_caught_up: args.until_caught_up,
    };
    let labels = config
        .metrics
        .as_ref()
        .map_or(MAX_PARTITION_LABELS, |m| m.max_partition_labels);
    let metrics = Arc::new(Metrics::new(labels));
    let responder = match &config.metrics {
        Some(m) => {
            let r = Responder::bind(&m.listen.to_string())?;
            log::info!("serving metrics at http://{}/metrics", r.local_addr()?);
            Some(r)
        }
        None => None,
    };
    // Set when the pipeline is over: the reporting threads end.
    let reported = Cancel::default();
    let outcome = thread::scope(|s| {
        let (metrics, reported) = (&metrics, &reported);
        let spool = &config.store.spool_dir;
        let retries = &config.store.gcs.http.retries;
        let throttling = &config.kafka.client.throttling;
        let spawned = thread::Builder::new()
            .name("progress".into())
            .spawn_scoped(s, move || log_progress(metrics, reported));
        if let Err(e) = spawned {
            log::warn!("no progress line: cannot start its thread: {e}");
        }
        if let Some(r) = responder {
            let render =
                move || metrics.render(&retries.read(), spool_bytes(spool), throttling.total());
            thread::Builder::new()
                .name("metrics".into())
                .spawn_scoped(s, move || r.run(render, reported))?;
        }
        let outcome = pipeline::run(&config, options, cancel, metrics.clone());
        reported.abort();
        outcome
    })?;
    log::info!("stopped; peak memory {}", peak_rss());
    for halted in &outcome.halted {
        eprintln!("kafka-store: {} was not archived: {halted}", halted.tp);
    }
    for (tp, why) in &outcome.given_up {
        eprintln!("kafka-store: {tp} was not archived: it could not start: {why}");
    }
    Ok(if !outcome.halted.is_empty() {
        Exit::Data
    } else if !outcome.given_up.is_empty() {
        Exit::Failure
    } else {
        Exit::Ok
    })
}

/// Raises the soft limit on open files to the hard limit. kafka-store keeps
/// few descriptors open whatever the number of partitions, but the soft
/// limit (1,024 under systemd and most shells) is no reason to fail when
/// the hard one allows more.
fn raise_open_files_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let show = |v: Option<u64>| v.map_or("unlimited".to_string(), |v| v.to_string());
    if limit.current == limit.maximum {
        log::info!("open files limit {}", show(limit.current));
        return;
    }
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => log::info!(
            "open files limit {} (raised from {})",
            show(limit.maximum),
            show(limit.current)
        ),
        Err(e) => log::warn!(
            "open files limit {}: cannot raise it to {}: {e}",
            show(limit.current),
            show(limit.maximum)
        ),
    }
}

/// The process's peak resident set size, from `/proc/self/status` (VmHWM).
fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{:.1} MiB", kib as f64 / 1024.0))
        })
        .unwrap_or_else(|| "unknown".into())
}
