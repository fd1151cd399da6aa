//! The one typed configuration of evstream, read from TOML (`--config FILE`).
//!
//! Every section and option is optional; a missing one takes the default documented on it.
//! Unknown options are errors, so a typo never silently falls back to a default.
//!
//! The reference below is `docs/configuration.md`, included here so that the two cannot
//! drift; `tests/config_docs.rs` checks that its example parses, shows the defaults and names
//! every option.
//!
//! The root holds [`Config`], its loading and the checks across sections; each section's
//! types live beside the code they configure (`[redis]` in `redis/config.rs`, `[ring]` and
//! `[producer]` in `publish/config.rs`, `[ship]` in `ship/config.rs`, `[consume]` in
//! `consume/config.rs`, `[ops]` in `ops/config.rs`, `[archive]` in `archive/config.rs`) and are re-exported here. Every section
//! is a serde struct with public fields, each documented with its default.
//!
#![doc = include_str!("../../../docs/configuration.md")]

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

pub use crate::archive::config::ArchiveConfig;
pub use crate::consume::config::ConsumeConfig;
pub use crate::ops::config::OpsConfig;
pub use crate::publish::config::{ProducerConfig, RingConfig, WhenFull};
pub use crate::redis::config::{RedisConfig, DEFAULT_REDIS_URL, DEFAULT_STREAM};
pub use crate::ship::config::{AppendMode, FsyncPolicy, ShipConfig, Validation};

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where events go.
    pub redis: RedisConfig,
    /// The in-process ring buffer.
    pub ring: RingConfig,
    /// Identity of this publishing process.
    pub producer: ProducerConfig,
    /// The shipper from the ring into Redis.
    pub ship: ShipConfig,
    /// Consumer groups reading the stream.
    pub consume: ConsumeConfig,
    /// The ops loop: retention, Redis memory, group hygiene, alerts.
    pub ops: OpsConfig,
    /// The Parquet archive of the stream (off unless `archive.dir` is set).
    pub archive: ArchiveConfig,
}

impl Config {
    /// Reads and validates a TOML configuration file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Self =
            toml::from_str(&text).map_err(|error| parse_error(path, &text, &error))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.ring.validate()?;
        self.ship.validate()?;
        self.consume.validate()?;
        self.ops.validate()?;
        self.archive.validate()?;
        self.redis.validate()?;
        self.producer.validate()
    }

    /// One configuration per partition of the stream: the same settings with `redis.stream`
    /// set to the partition's key (`<stream>:{p}`) and no partitions of its own, so every key
    /// derived from it (dead letters, marks, group counters, analysis) carries the
    /// partition's hash tag and lives in its Redis Cluster slot. Without `redis.partitions`,
    /// this configuration alone.
    pub fn partition_configs(&self) -> Vec<Config> {
        self.redis
            .stream_keys()
            .into_iter()
            .map(|stream| {
                let mut config = self.clone();
                config.redis.stream = stream;
                config.redis.partitions = None;
                config
            })
            .collect()
    }
}

/// A TOML error, rebuilt from its position and message: the parser's own text quotes the
/// offending line, which may hold a password (`url = "redis://:secret@…"`), and is never
/// printed. Whatever the message quotes itself has URL passwords masked.
fn parse_error(path: &Path, text: &str, error: &toml::de::Error) -> ConfigError {
    let (line, column) = error.span().map_or((0, 0), |span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |n| n + 1) + 1;
        (line, column)
    });
    ConfigError::Parse {
        path: path.to_owned(),
        line,
        column,
        message: crate::redis::redact_urls(error.message().trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::keys::partition_of;
    #[test]
    fn issue_18_a_toml_error_never_quotes_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.toml");
        std::fs::write(&path, "[redis]\nurl = \"redis://:hunter2@h\" x\n").unwrap();
        let error = Config::from_file(&path).unwrap_err();
        let text = error.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("line 2, column"), "{text}");
        std::fs::write(&path, "[ship]\nbatch_max = \"redis://:hunter2@h\"\n").unwrap();
        let text = Config::from_file(&path).unwrap_err().to_string();
        assert!(!text.contains("hunter2"), "{text}");
    }
    use super::*;

    #[test]
    fn partitions_split_the_stream_into_tagged_keys_and_the_ids_spread() {
        let mut config = Config::default();
        assert_eq!(config.redis.stream_keys(), ["events"]);
        assert_eq!(config.partition_configs().len(), 1);
        config.redis.partitions = Some(3);
        config.validate().unwrap();
        assert_eq!(
            config.redis.stream_keys(),
            ["events:{0}", "events:{1}", "events:{2}"]
        );
        let parts = config.partition_configs();
        assert_eq!(parts[2].redis.stream, "events:{2}");
        assert_eq!(parts[2].redis.partitions, None);
        // One correlation id, one partition; many ids spread over all of them.
        assert_eq!(partition_of("order-17", 3), partition_of("order-17", 3));
        assert_eq!(partition_of("", 3), 0);
        assert_eq!(partition_of("order-17", 1), 0);
        let mut counts = [0u32; 3];
        for i in 0..3000 {
            counts[partition_of(&format!("order-{i}"), 3)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
        for bad in [0, 1025] {
            config.redis.partitions = Some(bad);
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains("redis.partitions"), "{error}");
        }
        config.redis.partitions = Some(2);
        config.redis.stream = "ev{x}".to_owned();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("must not hold {"), "{error}");
        // A cluster needs partitions (a partition's own configuration has its tag).
        config.redis.url = "redis+cluster://127.0.0.1:7000".to_owned();
        config.redis.stream = "events".to_owned();
        config.redis.partitions = None;
        let error = config.validate().unwrap_err().to_string();
        assert!(
            error.contains("Redis Cluster needs a partitioned stream"),
            "{error}"
        );
        config.redis.partitions = Some(3);
        for part in config.partition_configs() {
            part.validate().unwrap();
        }
    }

    #[test]
    fn empty_file_gives_defaults() {
        let config: Config = toml::from_str("").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.ring.capacity(), 65_536);
        assert_eq!(config.redis.stream, "events");
        config.validate().unwrap();
    }

    #[test]
    fn every_documented_option_parses() {
        let text = "[redis]\nurl = \"redis://h:1\"\nstream = \"s\"\n\
                    [ring]\ncapacity = 1024\nslot_bytes = 512\nmax_event_bytes = 4096\n\
                    when_full = \"wait\"\nwait_timeout_us = 7\n[producer]\nname = \"engine-1\"\n";
        let config: Config = toml::from_str(text).unwrap();
        config.validate().unwrap();
        assert_eq!(config.redis.url, "redis://h:1");
        assert_eq!(config.ring.when_full(), WhenFull::Wait);
        assert_eq!(config.ring.wait_timeout(), Duration::from_micros(7));
        assert_eq!(config.producer.name.as_deref(), Some("engine-1"));
    }

    #[test]
    fn unknown_option_is_an_error_naming_it() {
        let error = toml::from_str::<Config>("[ring]\ncapacty = 8\n").unwrap_err();
        assert!(error.to_string().contains("capacty"), "{error}");
    }

    #[test]
    fn out_of_range_values_are_named() {
        let bad = Config {
            ring: RingConfig::default().set_capacity(1000),
            ..Config::default()
        };
        let error = bad.validate().unwrap_err().to_string();
        assert!(error.contains("ring.capacity = 1000"), "{error}");

        let bad = RingConfig::default().set_slot_bytes(1 << 20);
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("ring.slot_bytes"));

        let bad = ProducerConfig {
            name: Some("has space".into()),
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("producer.name"));
    }
}
