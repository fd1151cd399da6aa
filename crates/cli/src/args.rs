//! Command-line arguments (clap derive) and their resolution into one configuration.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use evstream::Config;

/// evstream: the Everything Stream of a trading engine.
///
/// Captures every event of the engine in-process, ships it to a Redis stream and analyses it
/// through consumer groups.
#[derive(Debug, Parser)]
#[command(name = "evstream", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options accepted before or after the subcommand.
#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// Redis URL [default: redis://127.0.0.1:6379, or redis.url from --config].
    #[arg(long, global = true, env = "EVSTREAM_REDIS_URL", value_name = "URL")]
    pub(crate) redis_url: Option<String>,
    /// Stream key [default: events, or redis.stream from --config].
    #[arg(long, global = true, value_name = "KEY")]
    pub(crate) stream: Option<String>,
    /// TOML configuration file (see docs/configuration.md).
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
}

impl GlobalArgs {
    /// The configuration: defaults, then the file, then flags and environment.
    pub(crate) fn resolve(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(url) = &self.redis_url {
            config.redis.url.clone_from(url);
        }
        if let Some(stream) = &self.stream {
            anyhow::ensure!(!stream.is_empty(), "--stream must not be empty");
            config.redis.stream.clone_from(stream);
        }
        config.validate().context("invalid configuration")?;
        Ok(config)
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a simulated trading engine through the whole pipeline and print a summary.
    Demo(DemoArgs),
}

/// Options of `evstream demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// How long the simulated engine publishes, e.g. 20s, 500ms, 1m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Events per second, all engine threads together.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) rate: u64,
    /// Engine threads publishing concurrently.
    #[arg(long, default_value_t = 2)]
    pub(crate) producers: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Parses `250ms`, `20s`, `2m` or a bare number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration; use e.g. 500ms, 20s or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "unknown unit '{unit}' in '{text}'; use ms, s, m or h"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("'{text}': {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3 parsecs").unwrap_err().contains("unit"));
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn global_flags_go_before_or_after_the_subcommand() {
        let before = Cli::try_parse_from(["evstream", "--stream", "s1", "demo"]).unwrap();
        let after = Cli::try_parse_from(["evstream", "demo", "--stream", "s1"]).unwrap();
        assert_eq!(before.global.stream.as_deref(), Some("s1"));
        assert_eq!(after.global.stream.as_deref(), Some("s1"));
    }

    #[test]
    fn flags_override_the_file_and_defaults_apply() {
        let dir = std::env::temp_dir().join(format!("evstream-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "[redis]\nurl = \"redis://file:1\"\nstream = \"from-file\"\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "evstream",
            "--config",
            file.to_str().unwrap(),
            "--stream",
            "from-flag",
            "demo",
        ])
        .unwrap();
        let config = cli.global.resolve().unwrap();
        assert_eq!(config.redis.stream, "from-flag");
        assert_eq!(config.redis.url, "redis://file:1");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
