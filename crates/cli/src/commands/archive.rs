//! `evstream archive`: the stream and its dead letters into Parquet files.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use evstream::archive::{ArchiveReport, Archiver};
use evstream::error::ArchiveError;
use evstream::Config;

use crate::args::ArchiveArgs;
use crate::http::{self, Sources};

pub(crate) fn run(mut config: Config, args: &ArchiveArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &args.dir {
        config.archive.dir = Some(dir.clone());
    }
    let archiver = Archiver::new(&config).map_err(archive_error)?;
    let dir = config.archive.dir.clone().unwrap_or_default();
    // Two workers: the connection's task decodes the next batch while this one is encoded.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(async {
        if args.once {
            // On a worker, not this thread, so that its encoding can hand the rest over.
            return tokio::spawn(archiver.run_once())
                .await
                .context("the archiver failed")?
                .map_err(archive_error);
        }
        let served = http::start(&args.metrics, Sources::default()).await?;
        eprintln!(
            "evstream archive: archiving stream '{}' on {} into {}{}; Ctrl-C to stop",
            super::stream_name(&config),
            evstream::redis::redact_url(&config.redis.url),
            dir.display(),
            served.map_or_else(String::new, |addr| format!("; http://{addr}/metrics")),
        );
        tokio::spawn(archiver.run(super::termination()))
            .await
            .context("the archiver failed")?
            .map_err(archive_error)
    })?;
    print(&report, args.json).context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

fn print(report: &ArchiveReport, json: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, report)?;
        return writeln!(out);
    }
    writeln!(
        out,
        "archived {} events and {} dead letters in {} files ({} bytes)",
        report.events, report.dead_letters, report.files, report.bytes
    )?;
    if report.unrecorded_removed > 0 {
        writeln!(
            out,
            "removed {} file(s) a crash left unrecorded (their entries were archived again)",
            report.unrecorded_removed
        )?;
    }
    Ok(())
}

/// The library's error, worded with this binary's options.
pub(crate) fn archive_error(error: ArchiveError) -> anyhow::Error {
    match error {
        ArchiveError::Partition(error) => super::partition_error(error),
        error => error.into(),
    }
}
