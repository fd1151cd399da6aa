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

fn selection(select: &DlqSelect, ids: &[String]) -> Selection {
    Selection {
        reasons: select.reason.clone(),
        stage: select.stage.map(|s| s.as_str().to_owned()),
        ids: ids.to_vec(),
    }
}

/// The dead letters of one partition (or of the stream, without partitions).
#[derive(Serialize)]
struct Listed {
    dlq: String,
    #[serde(flatten)]
    scan: dlq::Scan,
}

fn list(config: &Config, args: &DlqListArgs) -> anyhow::Result<ExitCode> {
    let selection = selection(&args.select, &args.id);
    let order = if args.oldest_first {
        Order::OldestFirst
    } else {
        Order::NewestFirst
    };
    let mut listed = Vec::new();
    for part in &config.partition_configs() {
        let dlq = format!("{}:dlq", part.redis.stream);
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
        for letter in &scan.letters {
            write_letter(&mut out, letter)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn write_letter(out: &mut impl Write, letter: &DeadLetter) -> std::io::Result<()> {
    let field = |name| letter.field(name).unwrap_or("-");
    writeln!(
        out,
        "\n{}  {}/{}  {} {}  event {}  correlation {}",
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
}

fn replay(config: &Config, args: &DlqReplayArgs) -> anyhow::Result<ExitCode> {
    if args.select.reason.is_empty() && args.id.is_empty() && !args.all {
        anyhow::bail!(
            "say which dead letters to replay: --reason REASON, --id ID, or --all \
             (see them first with `evstream dlq list`)"
        );
    }
    let selection = selection(&args.select, &args.id);
    let mut summary = Summary {
        dry_run: args.dry_run,
        ..Summary::default()
    };
    for part in &config.partition_configs() {
        let stream = &part.redis.stream;
        let dlq = format!("{stream}:dlq");
        let outcomes = with_redis(part, |mut connection| {
            let (dlq, selection) = (&dlq, &selection);
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
                let mut outcomes = Vec::with_capacity(scan.letters.len());
                for letter in &scan.letters {
                    let replayed = if args.dry_run {
                        None
                    } else {
                        Some(dlq::replay(&mut connection, stream, dlq, &letter.id, TIMEOUT).await?)
                    };
                    outcomes.push(Outcome {
                        dlq: dlq.clone(),
                        id: letter.id.clone(),
                        reason: letter.reason().to_owned(),
                        replayed,
                    });
                }
                Ok::<_, evstream::OpsError>((outcomes, scan.truncated))
            }
        })?
        .with_context(|| format!("cannot replay the dead letters of {dlq} into {stream}"))?;
        let (outcomes, truncated) = outcomes;
        summary.truncated |= truncated;
        summary.outcomes.extend(outcomes);
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
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &summary)?;
        writeln!(out)?;
    } else {
        for outcome in &summary.outcomes {
            let what = match &outcome.replayed {
                None => "selected (dry run: nothing changed)".to_owned(),
                Some(Replayed::Appended(id)) => format!("replayed as {id}"),
                Some(Replayed::Gone) => "gone (replayed or trimmed meanwhile)".to_owned(),
                Some(Replayed::Refused(why)) => format!("refused: {why}"),
            };
            writeln!(
                out,
                "{} {} ({}): {what}",
                outcome.dlq, outcome.id, outcome.reason
            )?;
        }
        writeln!(
            out,
            "{} selected{}: {} replayed, {} refused, {} gone{}",
            summary.selected,
            if args.dry_run { " (dry run)" } else { "" },
            summary.replayed,
            summary.refused,
            summary.gone,
            if summary.truncated {
                "; more match (--limit)"
            } else {
                ""
            }
        )?;
    }
    // Refusals need an operator's look: a script sees them in the exit status.
    Ok(if summary.refused > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
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
