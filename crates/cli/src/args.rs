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
    /// The Redis URL the user chose, by flag, environment or config file; `None` means
    /// "nothing given" (commands that can, start a private server then).
    pub(crate) fn given_url(&self, config: &Config) -> Option<String> {
        self.redis_url.clone().or_else(|| {
            (config.redis.url != evstream::config::DEFAULT_REDIS_URL)
                .then(|| config.redis.url.clone())
        })
    }

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
    ///
    /// Without --redis-url (or redis.url in --config) it starts a private redis-server.
    Demo(DemoArgs),
    /// Push N events through ring, shipper and Redis, read them back, check every one, and
    /// report loss, duplicates, throughput and publish latency.
    ///
    /// Without --redis-url (or redis.url in --config) it starts a private redis-server.
    Bench(BenchArgs),
}

/// Options of `evstream bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Events to publish, all producers together.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) events: u64,
    /// Events per second, all producers together, or `max`.
    #[arg(long, default_value = "max")]
    pub(crate) rate: Rate,
    /// Size of each event's JSON payload in bytes.
    #[arg(long, default_value_t = 400)]
    pub(crate) payload_bytes: usize,
    /// Publishing threads.
    #[arg(long, default_value_t = 1)]
    pub(crate) producers: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// A publishing rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rate {
    Max,
    PerSecond(u64),
}

impl std::str::FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "max" => Ok(Rate::Max),
            number => number.parse().map(Rate::PerSecond).map_err(|_| {
                format!("'{text}' is not a rate: use a number of events per second or max")
            }),
        }
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rate::Max => f.write_str("max rate"),
            Rate::PerSecond(rate) => write!(f, "{rate} events/s"),
        }
    }
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
    fn rates_parse() {
        assert_eq!("max".parse(), Ok(Rate::Max));
        assert_eq!("20000".parse(), Ok(Rate::PerSecond(20_000)));
        assert!("fast".parse::<Rate>().unwrap_err().contains("max"));
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
