//! `evstream dlq`: read the dead letters, and replay them once their cause is fixed.

use std::io::Write;
use std::process::ExitCode;

use evstream::ops::dlq::{DeadLetter, Order, Replayed, Selection};
use evstream::ops::replay::{self, DlqListing, ReplaySummary};
use evstream::{Config, DlqError};

use crate::args::{DlqCommand, DlqListArgs, DlqReplayArgs, DlqSelect};

pub(crate) fn run(config: &Config, command: DlqCommand) -> anyhow::Result<ExitCode> {
    match command {
        DlqCommand::List(args) => list(config, &args),
        DlqCommand::Replay(args) => replay(config, &args),
    }
}

fn selection(select: &DlqSelect) -> Selection {
    Selection {
        reasons: select.reason.clone(),
        stage: select.stage.map(|s| s.as_str().to_owned()),
        ids: select.id.clone(),
        replayable_only: false,
    }
}

/// The library's error, worded with this binary's options.
fn dlq_error(error: DlqError) -> anyhow::Error {
    match error {
        DlqError::Partition(error) => super::partition_error(error),
        DlqError::AmbiguousId { id } => anyhow::anyhow!(
            "--id {id}: with partitions an id is only unique within one dead-letter \
             stream; give it as <dlq key>/<id>, as `evstream dlq list` prints it"
        ),
        DlqError::Read { dlq, source } => {
            anyhow::Error::new(source).context(format!("cannot read the dead letters in {dlq}"))
        }
        error => error.into(),
    }
}

fn list(config: &Config, args: &DlqListArgs) -> anyhow::Result<ExitCode> {
    let order = if args.oldest_first {
        Order::OldestFirst
    } else {
        Order::NewestFirst
    };
    let listed = super::block_on(replay::list_dead_letters(
        config,
        &selection(&args.select),
        order,
        args.count,
    ))?
    .map_err(dlq_error)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &listed)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let partitioned = listed.len() > 1;
    let mut missing = Vec::new();
    for listing in &listed {
        let DlqListing { dlq, scan, .. } = listing;
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
        missing.extend(listing.missing());
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

/// Exit status when some selected dead letters were refused (1 is an error).
const SOME_REFUSED: u8 = 2;

fn replay(config: &Config, args: &DlqReplayArgs) -> anyhow::Result<ExitCode> {
    if args.select.reason.is_empty() && args.select.id.is_empty() && !args.all {
        anyhow::bail!(
            "say which dead letters to replay: --reason REASON, --id ID, or --all \
             (see them first with `evstream dlq list`)"
        );
    }
    let summary = super::block_on(replay::replay_dead_letters(
        config,
        &selection(&args.select),
        args.limit,
        args.dry_run,
    ))?
    .map_err(dlq_error)?;
    print_summary(&summary, args.json)?;
    if let Some(error) = &summary.error {
        anyhow::bail!("{error} (the summary above says what was replayed before)");
    }
    if !summary.missing.is_empty() {
        anyhow::bail!("no such dead letter: {}", summary.missing.join(", "));
    }
    // Refusals need an operator's look: a script sees them in the exit status.
    Ok(if summary.has_refusals() {
        ExitCode::from(SOME_REFUSED)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_summary(summary: &ReplaySummary, json: bool) -> anyhow::Result<()> {
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
