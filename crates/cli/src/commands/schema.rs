//! `evstream schema check|push|list|migrate`.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use evstream::schema::{self, Registry};
use evstream::{Config, SchemaError};

use super::with_redis;
use crate::args::SchemaCommand;

pub(crate) fn run(config: &Config, command: SchemaCommand) -> anyhow::Result<ExitCode> {
    match command {
        SchemaCommand::Check { dir } => check(&dir),
        SchemaCommand::Push { dir } => {
            let registry = match from_dir(&dir)? {
                Ok(registry) => registry,
                Err(code) => return Ok(code),
            };
            let added = with_redis(config, |mut connection| async move {
                schema::push(&mut connection, &registry).await
            })?;
            match added {
                Ok(added) if added.is_empty() => {
                    println!("nothing new: every file of {} is registered", dir.display())
                }
                Ok(added) => {
                    for path in &added {
                        println!("registered {path}");
                    }
                }
                Err(SchemaError::Invalid { problems }) => {
                    eprintln!("evstream: {} refused; nothing was stored:", dir.display());
                    for problem in problems {
                        eprintln!("  {problem}");
                    }
                    return Ok(ExitCode::FAILURE);
                }
                Err(error) => return Err(error.into()),
            }
            Ok(ExitCode::SUCCESS)
        }
        SchemaCommand::List { schemas, json } => {
            let registry = load(config, schemas.as_deref())?;
            let summary = registry.summary();
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &summary)?;
                writeln!(out)?;
            } else if summary.is_empty() {
                writeln!(out, "no schemas registered (evstream schema push <dir>)")?;
            } else {
                writeln!(out, "{:<24} {:>7}  compatibility", "event type", "latest")?;
                for t in summary {
                    writeln!(
                        out,
                        "{:<24} {:>7}  {:?}",
                        t.event_type,
                        format!("v{}", t.latest),
                        t.compatibility
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SchemaCommand::Migrate {
            event_type,
            version,
            schemas,
        } => {
            let invalid = |message: String| {
                eprintln!("evstream: {message}");
                Ok(ExitCode::from(2))
            };
            let Some(number) = version
                .strip_prefix('v')
                .and_then(|v| v.parse::<u32>().ok())
            else {
                return invalid(format!(
                    "--version {version:?} is not of the form v1, v2, …"
                ));
            };
            let registry = load(config, schemas.as_deref())?;
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .context("cannot read the payload from stdin")?;
            let mut data: serde_json::Value = match serde_json::from_str(&input) {
                Ok(data) => data,
                Err(error) => {
                    return invalid(format!("the payload on stdin is not valid JSON: {error}"))
                }
            };
            match registry.upgrade(&event_type, number, &mut data) {
                Ok(_) => {
                    let mut out = std::io::stdout().lock();
                    serde_json::to_writer(&mut out, &data)?;
                    writeln!(out)?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(failure) => invalid(failure.to_string()),
            }
        }
    }
}

fn check(dir: &Path) -> anyhow::Result<ExitCode> {
    match from_dir(dir)? {
        Ok(registry) => {
            let summary = registry.summary();
            let versions: u32 = summary.iter().map(|t| t.latest).sum();
            println!(
                "{}: {} event types, {versions} versions: no problems",
                dir.display(),
                summary.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(code) => Ok(code),
    }
}

/// The directory's registry, or exit code 1 after printing every problem.
fn from_dir(dir: &Path) -> anyhow::Result<Result<Registry, ExitCode>> {
    match Registry::from_dir(dir) {
        Ok(registry) => Ok(Ok(registry)),
        Err(SchemaError::Invalid { problems }) => {
            eprintln!(
                "evstream: {}: {} problem(s):",
                dir.display(),
                problems.len()
            );
            for problem in problems {
                eprintln!("  {problem}");
            }
            Ok(Err(ExitCode::FAILURE))
        }
        Err(error) => Err(error.into()),
    }
}

/// The registry of `--schemas DIR`, or the one in Redis.
fn load(config: &Config, dir: Option<&Path>) -> anyhow::Result<Registry> {
    match dir {
        Some(dir) => Registry::from_dir(dir)
            .with_context(|| format!("cannot use the schemas in {}", dir.display())),
        None => with_redis(config, |mut connection| async move {
            schema::load(&mut connection).await
        })?
        .context("cannot load the schema registry from Redis"),
    }
}
