//! `evstream ops`: the ops loop alone, with /metrics and /health, until SIGINT or SIGTERM;
//! or `--once` for a single pass.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use evstream::archive::Archiver;
use evstream::ops::alerts::Severity;
use evstream::ops::{OpsSnapshot, PartitionedOpsLoop};
use evstream::Config;

use crate::args::OpsArgs;
use crate::http::{self, Sources};

pub(crate) fn run(mut config: Config, args: &OpsArgs) -> anyhow::Result<ExitCode> {
    args.apply(&mut config)?;
    // With an archive, two workers: the archiver encodes on one while its next batch is read
    // on the other, and the loops are never held up behind it.
    let runtime = match config.archive.dir {
        Some(_) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    }
    .context("cannot start the async runtime")?;
    // One loop per partition of the stream (one without partitions): each watches, trims
    // and alerts on its own key, on the node that holds it.
    let loops = PartitionedOpsLoop::new(&config).context("cannot start the ops loop")?;
    let streams: Vec<String> = loops.streams().map(str::to_owned).collect();
    let states = loops.states();
    // With archive.dir set, the archiver runs beside the loops: retention waits for it.
    let archiver = match config.archive.dir {
        Some(_) => Some(Archiver::new(&config).map_err(super::archive::archive_error)?),
        None => None,
    };
    if args.once {
        if let Some(archiver) = archiver {
            let report = runtime
                .block_on(async { tokio::spawn(archiver.run_once()).await })
                .context("the archiver failed")?
                .map_err(super::archive::archive_error)?;
            eprintln!(
                "archived {} events and {} dead letters in {} files",
                report.events, report.dead_letters, report.files
            );
        }
        let snapshots = runtime.block_on(loops.run_once());
        let critical = snapshots
            .iter()
            .flat_map(|s| &s.firing)
            .any(|a| a.severity == Severity::Critical);
        let mut out = std::io::stdout().lock();
        match (args.json, snapshots.as_slice()) {
            (true, [one]) => serde_json::to_writer_pretty(&mut out, one)?,
            (true, all) => serde_json::to_writer_pretty(&mut out, all)?,
            (false, all) => {
                for (stream, snapshot) in streams.iter().zip(all) {
                    if all.len() > 1 {
                        writeln!(out, "{stream}:")?;
                    }
                    write_once(&mut out, snapshot)?;
                }
            }
        }
        if args.json {
            writeln!(out)?;
        }
        return Ok(if critical {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    runtime.block_on(async {
        let sources = Sources {
            ops: states,
            ..Sources::default()
        };
        let served = http::start(&args.metrics, sources).await?;
        eprintln!(
            "evstream ops: watching stream '{}' on {} every {:?} (alerts every {:?}){}; \
             Ctrl-C to stop",
            super::stream_name(&config),
            evstream::redis::redact_url(&config.redis.url),
            Duration::from_millis(config.ops.interval_ms),
            Duration::from_millis(config.ops.alert_interval_ms),
            served.map_or_else(String::new, |addr| format!(
                "; http://{addr}/metrics and /health"
            )),
        );
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let archiving =
            archiver.map(|archiver| tokio::spawn(archiver.run(until_stopped(stopped.clone()))));
        let ops = loops.run(async {
            super::termination().await;
            let _ = stop.send(true);
        });
        ops.await.map_err(super::partition_error)?;
        if let Some(archiving) = archiving {
            let report = archiving
                .await
                .context("the archiver failed")?
                .map_err(super::archive::archive_error)?;
            eprintln!(
                "archived {} events and {} dead letters in {} files",
                report.events, report.dead_letters, report.files
            );
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn write_once(out: &mut impl Write, s: &OpsSnapshot) -> std::io::Result<()> {
    match (&s.observation, s.redis_up) {
        (Some(o), true) => {
            let length = o.stream.as_ref().map_or(0, |s| s.length);
            writeln!(out, "redis        up, stream length {length}")?;
        }
        _ => writeln!(
            out,
            "redis        UNREACHABLE: {}",
            s.last_error.as_deref().unwrap_or("no answer")
        )?,
    }
    writeln!(
        out,
        "trimmed      {} by retention, {} at critical memory, {} dead letters",
        s.trimmed_retention, s.trimmed_aggressive, s.dlq_trimmed
    )?;
    if !s.retention_held_back_by.is_empty() {
        writeln!(
            out,
            "retention    held back by group(s) {}",
            s.retention_held_back_by.join(", ")
        )?;
    }
    for (group, lost) in &s.trim_lost {
        writeln!(
            out,
            "LOST         {lost} entries group {group} had not finished"
        )?;
    }
    for (group, n) in &s.consumers_removed {
        writeln!(out, "removed      {n} idle consumer(s) of group {group}")?;
    }
    if s.activedefrag_enabled {
        writeln!(out, "defrag       activedefrag switched on")?;
    }
    if s.firing.is_empty() {
        writeln!(out, "alerts       none")?;
    }
    for a in &s.firing {
        writeln!(
            out,
            "alert        {} {} {}",
            a.severity.as_str().to_uppercase(),
            a.alert,
            a.message
        )?;
    }
    Ok(())
}
