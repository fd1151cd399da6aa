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
    /// Read the Redis password from this file (its first line) instead of the URL, so it is
    /// not on the command line [or redis.password_file].
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) redis_password_file: Option<PathBuf>,
    /// CA certificate (PEM) of the server's certificate, for rediss:// [or redis.tls_ca].
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS, with --tls-key [or redis.tls_cert].
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM) [or redis.tls_key].
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) tls_key: Option<PathBuf>,
    /// A batch counts as delivered only once K replicas confirm it (WAIT) [or
    /// ship.min_replicas_ack; default 0].
    #[arg(long, global = true, value_name = "K")]
    pub(crate) min_replicas_ack: Option<u32>,
    /// Split the stream into P keys, <stream>:{0} … <stream>:{P-1}, by correlation id: for
    /// Redis Cluster, one or two per primary [or redis.partitions; default: one key].
    #[arg(long, global = true, value_name = "P")]
    pub(crate) partitions: Option<u16>,
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
        for (flag, setting) in [
            (&self.redis_password_file, &mut config.redis.password_file),
            (&self.tls_ca, &mut config.redis.tls_ca),
            (&self.tls_cert, &mut config.redis.tls_cert),
            (&self.tls_key, &mut config.redis.tls_key),
        ] {
            if flag.is_some() {
                setting.clone_from(flag);
            }
        }
        if let Some(k) = self.min_replicas_ack {
            config.ship.min_replicas_ack = k;
        }
        if let Some(p) = self.partitions {
            config.redis.partitions = Some(p);
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
    /// Run IntelliSense as one member of a consumer group until SIGINT or SIGTERM.
    ///
    /// Reads the stream through the group (created if missing), analyses order flow
    /// (creation and fill latencies, risk, alerts), writes the results to Redis and, on
    /// SIGINT/SIGTERM, finishes and acknowledges the entries in hand and exits 0.
    Consume(ConsumeArgs),
    /// Print what IntelliSense computed: counts, latencies per symbol, alerts, group lag.
    Report(ReportArgs),
    /// Run the ops loop alone: retention, Redis memory, group hygiene, alerts, /metrics.
    ///
    /// Polls Redis, trims the stream without deleting what a group has not read (unless
    /// memory is critical), removes idle consumers with nothing pending, and raises alerts to
    /// the log and ops.webhook_url, until SIGINT or SIGTERM (see docs/operations.md).
    Ops(OpsArgs),
    /// Show the stream, Redis memory, every group and consumer, dead letters and alerts.
    Status(StatusArgs),
    /// A live view refreshed every --interval, like `redis-cli --stat`: events/s by type,
    /// each group's consumers, pending and lag, dead letters, Redis memory, alerts firing.
    ///
    /// Redraws in place on a terminal until Ctrl-C (or SIGTERM); prints one frame after the
    /// other when stdout is not a terminal; --once prints a single frame (two readings
    /// --interval apart, for the rates) and exits.
    Top(TopArgs),
    /// Follow the stream live, like `tail -f` or `kcat -C`: one line per event, or --json.
    ///
    /// Starts at the end (only new events) or, with --since, that far back in the stream;
    /// filters by type, correlation id and producer; runs until SIGINT, --count events or,
    /// with --no-follow, the end of what the stream held.
    Tail(TailArgs),
    /// Every event of one order's life, from the stream and the archive, in time order, with
    /// the time between steps.
    Trace(TraceArgs),
    /// Export the events appended between two times, from the archive and the stream
    /// together, as Parquet or JSON lines (one object per line).
    Export(ExportArgs),
    /// Archive the stream and its dead letters into Parquet files, following it until
    /// SIGINT or SIGTERM (or --once: what is there now).
    ///
    /// Every entry lands in exactly one file, even across kill -9 and restarts; retention
    /// waits for the archive (see docs/history.md). `evstream ops` does the same when
    /// archive.dir is set.
    Archive(ArchiveArgs),
    /// Check, store, list and apply event schemas (see docs/schemas.md).
    Schema {
        #[command(subcommand)]
        command: SchemaCommand,
    },
    /// Read the dead letters, and replay them once their cause is fixed (see
    /// docs/operations.md, "Dead letters").
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

/// `evstream dlq …`
#[derive(Debug, Subcommand)]
pub(crate) enum DlqCommand {
    /// List dead letters, newest first: stage, reason, error and the event's fields.
    List(DlqListArgs),
    /// Append dead letters back to the stream, oldest first, each deleted from the
    /// dead-letter stream in the same atomic step (so never twice, never lost), keeping its
    /// event_id and sequence. Needs --reason, --id or --all. Exits 0 when every selected
    /// one went back, 2 if some were refused or not replayable (effect_failed records,
    /// invalid_json ones, dead letters with fields left out or missing), 1 on an error.
    Replay(DlqReplayArgs),
}

/// Which dead letters (`evstream dlq`).
#[derive(Debug, Args)]
pub(crate) struct DlqSelect {
    /// Only dead letters with this dlq_reason (repeatable), e.g. handler_error.
    #[arg(long, value_name = "REASON")]
    pub(crate) reason: Vec<String>,
    /// Only dead letters of this stage.
    #[arg(long, value_enum)]
    pub(crate) stage: Option<DlqStage>,
    /// Only the dead letter with this entry id (repeatable); with partitions
    /// `<dlq key>/<id>`, as `list` prints it.
    #[arg(long, value_name = "ID")]
    pub(crate) id: Vec<String>,
}

/// `dlq_stage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DlqStage {
    /// Refused by the shipper: never reached the stream.
    Ship,
    /// Read from the stream, could not be processed.
    Consume,
}

impl DlqStage {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Ship => "ship",
            Self::Consume => "consume",
        }
    }
}

/// `evstream dlq list`
#[derive(Debug, Args)]
pub(crate) struct DlqListArgs {
    #[command(flatten)]
    pub(crate) select: DlqSelect,
    /// Dead letters shown per stream at most.
    #[arg(long, default_value_t = 20)]
    pub(crate) count: usize,
    /// Oldest first instead of newest first.
    #[arg(long)]
    pub(crate) oldest_first: bool,
    /// Print as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `evstream dlq replay`
#[derive(Debug, Args)]
pub(crate) struct DlqReplayArgs {
    #[command(flatten)]
    pub(crate) select: DlqSelect,
    /// Every dead letter (with --stage, every one of that stage).
    #[arg(long)]
    pub(crate) all: bool,
    /// Dead letters replayed per stream at most, oldest first.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) limit: usize,
    /// Show what would be replayed, change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Print as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `evstream schema …`
#[derive(Debug, Subcommand)]
pub(crate) enum SchemaCommand {
    /// Check a schema directory: every file, every migration, every compatibility rule.
    /// Exits 0, or 1 with every problem listed.
    Check {
        /// The directory (`<dir>/<EventType>/v<N>.json`, `v<N>-to-v<N+1>.json`).
        dir: PathBuf,
    },
    /// Check a directory against the registry in Redis and store its new versions.
    Push {
        /// The directory.
        dir: PathBuf,
    },
    /// List the registered event types and versions (from Redis, or --schemas DIR).
    List {
        /// Read this directory instead of Redis.
        #[arg(long, value_name = "DIR")]
        schemas: Option<PathBuf>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Read one JSON payload on stdin and print it migrated to the latest version. Exits 2
    /// for invalid input or an unknown type or version.
    #[command(disable_version_flag = true)]
    Migrate {
        /// The event type, e.g. OrderCreated.
        #[arg(long = "type", value_name = "TYPE")]
        event_type: String,
        /// The payload's version, e.g. v1.
        #[arg(long, value_name = "vN")]
        version: String,
        /// Read the schemas from this directory instead of Redis.
        #[arg(long, value_name = "DIR")]
        schemas: Option<PathBuf>,
    },
}

/// Options of `evstream consume`.
#[derive(Debug, Args)]
pub(crate) struct ConsumeArgs {
    /// Consumer group [default: intellisense_group, or consume.group from --config].
    #[arg(long)]
    pub(crate) group: Option<String>,
    /// This consumer's name, stable across restarts (e.g. the host name), so that a restart
    /// finds the entries it had read but not acknowledged.
    #[arg(long)]
    pub(crate) consumer: String,
    /// Where a group created now starts: 0 (the whole stream), $ (new entries only) or an id
    /// [default: 0, or consume.start_id].
    #[arg(long, value_name = "ID")]
    pub(crate) start_id: Option<String>,
    /// Claim other consumers' entries pending longer than this, e.g. 5s [default: 60s, or
    /// consume.min_idle_ms].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) min_idle: Option<Duration>,
    /// Deliveries after which a failing entry goes to the dead letter queue [default: 5, or
    /// consume.max_deliveries].
    #[arg(long, value_name = "N")]
    pub(crate) max_deliveries: Option<u64>,
    /// Entries per read [default: 256, or consume.count].
    #[arg(long, value_name = "N")]
    pub(crate) count: Option<usize>,
    /// Validate and migrate events before the handler: `redis` (the registry stored by
    /// `evstream schema push`, reloaded when it changes; no validation while it is empty),
    /// a schema directory, or `off`.
    #[arg(long, default_value = "redis", value_name = "redis|DIR|off")]
    pub(crate) schemas: String,
    /// What to do with each event: `intellisense` (the analysis service) or `ack-only`
    /// (acknowledge and nothing else: the runtime's own cost, for benchmarks).
    #[arg(long, value_enum, default_value = "intellisense")]
    pub(crate) handler: HandlerKind,
    /// IntelliSense: alert when an order's creation latency (signal → OrderCreated) is above
    /// this.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "10ms")]
    pub(crate) creation_alert: Duration,
    /// IntelliSense: alert when an order's fill latency (OrderCreated → first fill) is above
    /// this.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "100ms")]
    pub(crate) fill_alert: Duration,
    /// Stop on its own once nothing was processed for this long (for benchmarks and
    /// batch jobs); without it, run until SIGINT/SIGTERM.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) exit_when_idle: Option<Duration>,
    /// Print the final summary as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) metrics: MetricsArgs,
}

impl ConsumeArgs {
    /// Applies the flags over the file's `[consume]` section.
    pub(crate) fn apply(&self, config: &mut Config) -> anyhow::Result<()> {
        if let Some(group) = &self.group {
            config.consume.group.clone_from(group);
        }
        if let Some(start_id) = &self.start_id {
            config.consume.start_id.clone_from(start_id);
        }
        if let Some(min_idle) = self.min_idle {
            config.consume.min_idle_ms = u64::try_from(min_idle.as_millis()).unwrap_or(u64::MAX);
        }
        if let Some(max_deliveries) = self.max_deliveries {
            config.consume.max_deliveries = max_deliveries;
        }
        if let Some(count) = self.count {
            config.consume.count = count;
        }
        config
            .consume
            .validate()
            .context("invalid consumer option")?;
        Ok(())
    }
}

/// The handlers `evstream consume` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum HandlerKind {
    /// IntelliSense: latencies, risk, alerts.
    Intellisense,
    /// Acknowledge only.
    AckOnly,
}

/// Options of `evstream report`.
#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    /// Consumer group whose results to show [default: intellisense_group, or consume.group].
    #[arg(long)]
    pub(crate) group: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
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
    /// What to publish: `payload` (a `Serialize` struct of `--payload-bytes`, through
    /// `publish`) or `orders` (`OrderCreated`/`OrderFilled` pairs through the typed facade,
    /// `on_order_created`/`on_order_filled`, the path engines use).
    #[arg(long, value_enum, default_value_t = EventKind::Payload)]
    pub(crate) event_kind: EventKind,
    /// Size of each event's JSON payload in bytes (with `--event-kind payload`).
    #[arg(long, default_value_t = 400)]
    pub(crate) payload_bytes: usize,
    /// Publishing threads.
    #[arg(long, default_value_t = 1)]
    pub(crate) producers: usize,
    /// Soak: publish at `--rate` for this long instead of `--events` (e.g. 10m), keep the
    /// stream at `ship.max_len` (1,000,000 if that is 0: a long run must not fill Redis),
    /// count every append with Redis's `entries-added`, check the entries left, and sample
    /// this process's memory.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) duration: Option<Duration>,
    /// Write an HTML page with charts of the run (latency, throughput, backlog, memory).
    #[arg(long, value_name = "FILE")]
    pub(crate) report: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// What `evstream bench` publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EventKind {
    /// A `Serialize` struct padded to `--payload-bytes`.
    Payload,
    /// Typed `OrderCreated`/`OrderFilled` pairs.
    Orders,
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
    /// Events per second, all engine threads together (market data, orders, fills,
    /// cancels, rejects). The run publishes rate × duration events, then waits for the
    /// last answers of the venues.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) rate: u64,
    /// Engine threads publishing concurrently (each with its own symbols and order ids).
    #[arg(long, default_value_t = 2)]
    pub(crate) producers: usize,
    /// Seed of the simulated market: the same seed, rate, duration and producers give the
    /// same orders, fills and alerts. [default: from the clock, printed in the summary]
    #[arg(long, value_name = "N")]
    pub(crate) seed: Option<u64>,
    /// Write an HTML page with charts of the run (latency, throughput, lag, memory, fill
    /// latency per symbol, alerts).
    #[arg(long, value_name = "FILE")]
    pub(crate) report: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) metrics: MetricsArgs,
}

/// `--metrics-addr`, for every long-running command.
#[derive(Debug, Clone, Args)]
pub(crate) struct MetricsArgs {
    /// Serve /metrics (Prometheus) and /health (JSON) on this address; "off" disables them.
    /// [default: 127.0.0.1:9464, or a free loopback port when another process has it]
    #[arg(long, value_name = "ADDR|off")]
    pub(crate) metrics_addr: Option<String>,
    /// Allow --metrics-addr on an address that is not loopback (reachable from the network).
    #[arg(long)]
    pub(crate) metrics_public: bool,
    /// Require `Authorization: Bearer <token>` on /metrics and /health, the token read from
    /// this file (keep it out of the command line).
    #[arg(long, value_name = "FILE")]
    pub(crate) metrics_token_file: Option<PathBuf>,
}

/// `evstream tail`
#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    /// Only events of this type (repeatable).
    #[arg(long = "type", value_name = "TYPE")]
    pub(crate) event_type: Vec<String>,
    /// Only events of this order (correlation id).
    #[arg(long, value_name = "ID")]
    pub(crate) correlation_id: Option<String>,
    /// Only events of this producer.
    #[arg(long, value_name = "PRODUCER_ID")]
    pub(crate) producer: Option<String>,
    /// Start this far back in the stream (e.g. 5m, 2h) instead of at its end.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) since: Option<Duration>,
    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    pub(crate) count: Option<u64>,
    /// Stop at the end of what the stream holds now instead of following it.
    #[arg(long)]
    pub(crate) no_follow: bool,
    /// One JSON object per line.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `evstream trace`
#[derive(Debug, Args)]
pub(crate) struct TraceArgs {
    /// The order's correlation id.
    pub(crate) correlation_id: String,
    /// Read the archive in this directory too [default: archive.dir].
    #[arg(long, value_name = "DIR")]
    pub(crate) archive: Option<PathBuf>,
    /// Print {"events": [...]} with the envelope fields.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `--format` of `evstream export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ExportFormat {
    /// One Parquet file with the archive's columns (needs --output).
    Parquet,
    /// One JSON object per line.
    Jsonl,
}

/// `evstream export`
#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// From this time: RFC 3339 (2026-12-05T08:00:00Z), or a duration ago (2h).
    #[arg(long, value_name = "TIME")]
    pub(crate) from: String,
    /// Up to this time, excluded [default: now].
    #[arg(long, value_name = "TIME", default_value = "now")]
    pub(crate) to: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "jsonl")]
    pub(crate) format: ExportFormat,
    /// Write here instead of standard output (required for parquet).
    #[arg(long, short, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
    /// Read the archive in this directory too [default: archive.dir].
    #[arg(long, value_name = "DIR")]
    pub(crate) archive: Option<PathBuf>,
    /// Export the dead letters instead of the events.
    #[arg(long)]
    pub(crate) dead_letters: bool,
}

/// `evstream archive`
#[derive(Debug, Args)]
pub(crate) struct ArchiveArgs {
    /// The archive's directory [default: archive.dir].
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
    /// Archive what the stream holds now, close every file and exit.
    #[arg(long)]
    pub(crate) once: bool,
    /// Print what was archived as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) metrics: MetricsArgs,
}

/// `evstream ops`
#[derive(Debug, Args)]
pub(crate) struct OpsArgs {
    /// Poll, act and evaluate once, print what was seen and done, and exit (for cron jobs
    /// and scripts); exits 1 if a critical alert fires.
    #[arg(long)]
    pub(crate) once: bool,
    /// How often to poll Redis and trim [default: ops.interval_ms, 30s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) interval: Option<Duration>,
    /// How often to evaluate alert rules [default: ops.alert_interval_ms, 10s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) alert_interval: Option<Duration>,
    /// POST alerts as JSON to this http:// or https:// URL [default: ops.webhook_url].
    #[arg(long, value_name = "URL")]
    pub(crate) webhook: Option<String>,
    /// With --once: print as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) metrics: MetricsArgs,
}

impl OpsArgs {
    /// Puts the flags into `config.ops`.
    pub(crate) fn apply(&self, config: &mut Config) -> anyhow::Result<()> {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        if let Some(interval) = self.interval {
            config.ops.interval_ms = millis(interval);
        }
        if let Some(interval) = self.alert_interval {
            config.ops.alert_interval_ms = millis(interval);
        }
        if let Some(url) = &self.webhook {
            config.ops.webhook_url = Some(url.clone());
        }
        config.ops.validate().context("invalid ops settings")?;
        Ok(())
    }
}

/// `evstream status`
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Print as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `evstream top`
#[derive(Debug, Args)]
pub(crate) struct TopArgs {
    /// Time between two readings (e.g. 500ms, 2s).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "1s")]
    pub(crate) interval: Duration,
    /// Print one frame without escape codes and exit (0, or 1 if Redis cannot be read).
    #[arg(long)]
    pub(crate) once: bool,
    /// Print the frame as JSON (with --once).
    #[arg(long, requires = "once")]
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
        "d" => value * 86_400.0,
        _ => {
            return Err(format!(
                "unknown unit '{unit}' in '{text}'; use ms, s, m, h or d"
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
