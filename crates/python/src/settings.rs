//! Keyword arguments onto an evstream [`Config`]: the TOML file first (if any), then each
//! argument given, then the same validation as Rust's.

use std::path::PathBuf;

use evstream::config::WhenFull;
use evstream::Config;

use crate::error::Error;

/// What the publisher and the consumer share: where, and which file.
#[derive(Debug, Default)]
pub(crate) struct Common {
    pub(crate) config: Option<PathBuf>,
    pub(crate) url: Option<String>,
    pub(crate) stream: Option<String>,
}

impl Common {
    /// The file's configuration (or the defaults) with `url` and `stream` applied.
    pub(crate) fn load(self) -> Result<Config, Error> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(url) = self.url {
            config.redis.url = url;
        }
        if let Some(stream) = self.stream {
            config.redis.stream = stream;
        }
        Ok(config)
    }
}

/// `when_full="refuse" | "wait"`.
pub(crate) fn when_full(value: &str) -> Result<WhenFull, Error> {
    match value {
        "refuse" => Ok(WhenFull::Refuse),
        "wait" => Ok(WhenFull::Wait),
        _ => Err(Error::Argument {
            argument: "when_full",
            value: value.to_owned(),
            reason: "expected \"refuse\" or \"wait\"",
        }),
    }
}

/// A schema version as Python spells it: `1` or `"v1"`.
pub(crate) fn version(value: VersionArg) -> Result<u32, Error> {
    let invalid = |value: String| Error::Argument {
        argument: "version",
        value,
        reason: "expected a positive integer or \"v<N>\", e.g. 1 or \"v1\"",
    };
    match value {
        VersionArg::Number(n) => u32::try_from(n)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| invalid(n.to_string())),
        VersionArg::Text(text) => text
            .strip_prefix('v')
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|n| *n > 0)
            .ok_or(invalid(text)),
    }
}

/// `version=` as given.
#[derive(Debug, pyo3::FromPyObject)]
pub(crate) enum VersionArg {
    Number(i64),
    Text(String),
}
