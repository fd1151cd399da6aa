//! `evstream dlq`: read the dead letters, and replay them once their cause is fixed.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use evstream::ops::dlq::{self, DeadLetter, Order, Replayed, Selection};
use evstream::Config;
use serde::Serialize;

use super::with_redis;
use crate::args::{DlqCommand, DlqListArgs, DlqReplayArgs, DlqSelect};

const TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) fn run(config: &Config, command: DlqCommand) -> anyhow::Result<ExitCode> {
    match command {
        DlqCommand::List(args) => list(config, &args),
        DlqCommand::Replay(args) => replay(config, &args),
    }
}

fn selection(select: &DlqSelect, ids: Vec<String>) -> Selection {
    Selection {
        reasons: select.reason.clone(),
        stage: select.stage.map(|s| s.as_str().to_owned()),
        ids,
        replayable_only: false,
    }
}

/// The `--id`s meant for `dlq`: `<dlq key>/<id>` (as `list` prints them with partitions), or a
/// bare id when the stream has one dead-letter stream.
fn ids_for(ids: &[String], dlq: &str, partitioned: bool) -> anyhow::Result<Vec<String>> {
    let mut mine = Vec::new();
    for id in ids {
        match id.rsplit_once('/') {
            Some((key, id)) if key == dlq => mine.push(id.to_owned()),
            Some(_) => {}
            None if partitioned => anyhow::bail!(
                "--id {id}: with partitions an id is only unique within one dead-letter \
                 stream; give it as <dlq key>/<id>, as `evstream dlq list` prints it"
            ),
            None => mine.push(id.clone()),
        }
    }
    Ok(mine)
}

/// The dead letters of one partition (or of the stream, without partitions).
#[derive(Serialize)]
struct Listed {
    dlq: String,
    #[serde(flatten)]
    scan: dlq::Scan,
}

fn list(config: &Config, args: &DlqListArgs) -> anyhow::Result<ExitCode> {
    let order = if args.oldest_first {
        Order::OldestFirst
    } else {
        Order::NewestFirst
    };
    let mut listed = Vec::new();
    let parts = config.partition_configs();
    for part in &parts {
        let dlq = evstream::keys::dead_letters(&part.redis.stream);
        let ids = ids_for(&args.select.id, &dlq, parts.len() > 1)?;
        if ids.is_empty() && !args.select.id.is_empty() {
            continue; // the ids name other partitions' dead letters
        }
        let selection = selection(&args.select, ids);
        let scan =
            with_redis(part, |mut connection| {
                let (dlq, selection) = (&dlq, &selection);
                async move {
                    dlq::scan(&mut connection, dlq, selection, order, args.count, TIMEOUT).await
                }
            })?
            .with_context(|| format!("cannot read the dead letters in {dlq}"))?;
        listed.push(Listed { dlq, scan });
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &listed)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let partitioned = listed.len() > 1;
    let mut missing = Vec::new();
    for Listed { dlq, scan } in &listed {
        writeln!(
            out,
            "{dlq}: {} dead letter(s){}",
            scan.letters.len(),
            if scan.truncated {
                " shown, more match (--count)"
            } else {
                ""
            }
        )?;
        let prefix = if partitioned {
            format!("{dlq}/")
        } else {
            String::new()
        };
        for letter in &scan.letters {
            write_letter(&mut out, &prefix, letter)?;
        }
        missing.extend(scan.missing.iter().map(|id| format!("{dlq}/{id}")));
    }
    if !missing.is_empty() {
        anyhow::bail!("no such dead letter: {}", missing.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

fn write_letter(out: &mut impl Write, prefix: &str, letter: &DeadLetter) -> std::io::Result<()> {
    let field = |name| letter.field(name).unwrap_or("-");
    writeln!(
        out,
        "\n{prefix}{}  {}/{}  {} {}  event {}  correlation {}",
        letter.id,
        field("dlq_stage"),
        field("dlq_reason"),
        field("event_type"),
        field("version"),
        field("event_id"),
        field("correlation_id"),
    )?;
    if let Some(source) = letter.field("dlq_source_id") {
        writeln!(
            out,
            "  from entry {source}, delivered {} time(s), group {} consumer {}",
            field("dlq_deliveries"),
            field("dlq_group"),
            field("dlq_consumer")
        )?;
    }
    writeln!(out, "  error: {}", clip(field("dlq_error"), 300))?;
    if let Some(data) = letter.field("data") {
        writeln!(out, "  data:  {}", clip(data, 300))?;
    }
    Ok(())
}

/// `text` cut to about `max` bytes (on a character boundary), marked when cut.
fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

/// What a replay did with one dead letter.
#[derive(Serialize)]
struct Outcome {
    dlq: String,
    id: String,
    reason: String,
    /// None in a dry run.
    #[serde(flatten)]
    replayed: Option<Replayed>,
}

#[derive(Serialize, Default)]
struct Summary {
    dry_run: bool,
    selected: usize,
    replayed: usize,
    refused: usize,
    gone: usize,
    /// Whether more dead letters matched than --limit allowed.
    truncated: bool,
    outcomes: Vec<Outcome>,
    /// Matched, but refused before any replay (the first 1,000 per stream named).
    not_replayable: Vec<Outcome>,
    /// Matched and refused before any replay, named above or not.
    not_replayable_count: u64,
    /// What stopped the replay half-way, if something did (what was replayed before stays).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Exit status when some selected dead letters were refused (1 is an error).
const SOME_REFUSED: u8 = 2;

fn replay(config: &Config, args: &DlqReplayArgs) -> anyhow::Result<ExitCode> {
    if args.select.reason.is_empty() && args.select.id.is_empty() && !args.all {
        anyhow::bail!(
            "say which dead letters to replay: --reason REASON, --id ID, or --all \
             (see them first with `evstream dlq list`)"
        );
    }
    let parts = config.partition_configs();
    let mut summary = Summary {
        dry_run: args.dry_run,
        ..Summary::default()
    };
    let mut missing = Vec::new();
    // A shipper's schema refusals are checked against the registry before they go back
    // (read once: it is one key for every partition).
    let registry = with_redis(config, |mut connection| async move {
        evstream::schema::load(&mut connection).await
    })
    .and_then(|loaded| loaded.map_err(anyhow::Error::from));
    for part in &parts {
        let stream = &part.redis.stream;
        let dlq = evstream::keys::dead_letters(stream);
        let ids = ids_for(&args.select.id, &dlq, parts.len() > 1)?;
        if ids.is_empty() && !args.select.id.is_empty() {
            continue;
        }
        let selection = Selection {
            replayable_only: true,
            ..selection(&args.select, ids)
        };
        let done = with_redis(part, |mut connection| {
            let (summary, missing, dlq, selection) = (&mut summary, &mut missing, &dlq, &selection);
            let registry = &registry;
            async move {
                // Oldest first: replayed events keep their order among themselves.
                let scan = dlq::scan(
                    &mut connection,
                    dlq,
                    selection,
                    Order::OldestFirst,
                    args.limit,
                    TIMEOUT,
                )
                .await?;
                summary.truncated |= scan.truncated;
                summary.not_replayable_count += scan.not_replayable_count;
                missing.extend(scan.missing.iter().map(|id| format!("{dlq}/{id}")));
                for refused in &scan.not_replayable {
                    summary.not_replayable.push(Outcome {
                        dlq: dlq.clone(),
                        id: refused.id.clone(),
                        reason: refused.reason.clone(),
                        replayed: Some(Replayed::Refused(refused.why.clone())),
                    });
                }
                for letter in &scan.letters {
                    let problem = match registry {
                        Ok(registry) => letter.schema_problem(registry),
                        Err(error) if letter.needs_schema_check() => Some(format!(
                            "the schema registry could not be read to check it: {error:#}"
                        )),
                        Err(_) => None,
                    };
                    let replayed = if let Some(why) = problem {
                        Some(Replayed::Refused(why))
                    } else if args.dry_run {
                        None
                    } else {
                        Some(dlq::replay(&mut connection, stream, dlq, &letter.id, TIMEOUT).await?)
                    };
                    summary.outcomes.push(Outcome {
                        dlq: dlq.clone(),
                        id: letter.id.clone(),
                        reason: letter.reason().to_owned(),
                        replayed,
                    });
                }
                Ok::<_, evstream::OpsError>(())
            }
        })?;
        if let Err(error) = done {
            summary.error = Some(format!(
                "replaying the dead letters of {dlq} into {stream}: {error}"
            ));
            break;
        }
    }
    summary.selected = summary.outcomes.len();
    for outcome in &summary.outcomes {
        match outcome.replayed {
            Some(Replayed::Appended(_)) => summary.replayed += 1,
            Some(Replayed::Refused(_)) => summary.refused += 1,
            Some(Replayed::Gone) => summary.gone += 1,
            None => {}
        }
    }
    print_summary(&summary, args.json)?;
    if let Some(error) = &summary.error {
        anyhow::bail!("{error} (the summary above says what was replayed before)");
    }
    if !missing.is_empty() {
        anyhow::bail!("no such dead letter: {}", missing.join(", "));
    }
    // Refusals need an operator's look: a script sees them in the exit status.
    Ok(if summary.refused > 0 || summary.not_replayable_count > 0 {
        ExitCode::from(SOME_REFUSED)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_summary(summary: &Summary, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, summary)?;
        writeln!(out)?;
        return Ok(());
    }
    for outcome in summary.outcomes.iter().chain(&summary.not_replayable) {
        let what = match &outcome.replayed {
            None => "selected (dry run: nothing changed)".to_owned(),
            Some(Replayed::Appended(id)) => format!("replayed as {id}"),
            Some(Replayed::Gone) => "gone (replayed or trimmed meanwhile)".to_owned(),
            Some(Replayed::Refused(why)) => format!("refused: {why}"),
        };
        writeln!(
            out,
            "{}/{} {}: {what}",
            outcome.dlq, outcome.id, outcome.reason
        )?;
    }
    writeln!(
        out,
        "{} selected{}: {} replayed, {} refused, {} gone, {} not replayable{}",
        summary.selected,
        if summary.dry_run { " (dry run)" } else { "" },
        summary.replayed,
        summary.refused,
        summary.gone,
        summary.not_replayable_count,
        if summary.truncated {
            "; more match (--limit)"
        } else {
            ""
        }
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_clipped_on_a_character_boundary() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("ééééé", 3), "é… (10 bytes)");
    }
}
