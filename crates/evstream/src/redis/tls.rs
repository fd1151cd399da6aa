//! TLS to one server (`rediss://`): the configured CA and client certificate, on rustls with
//! the ring provider.

use std::path::PathBuf;

use super::config::RedisConfig;
use crate::error::ConfigError;

/// The certificates of `config` (`tls_ca`, `tls_cert` with `tls_key`) for
/// `redis::Client::build_with_tls`, each file read now so that a missing one is named at
/// start. Installs rustls's ring provider first: redis's rustls has no crypto provider of its
/// own (once per process; a provider installed by the application is kept).
pub(super) fn certificates(config: &RedisConfig) -> Result<redis::TlsCertificates, ConfigError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read = |what: &'static str, path: &PathBuf| {
        std::fs::read(path).map_err(|source| ConfigError::ReadFile {
            what,
            path: path.clone(),
            source,
        })
    };
    let client_tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read(
                "the TLS client certificate (redis.tls_cert, --tls-cert)",
                cert,
            )?,
            client_key: read("the TLS client key (redis.tls_key, --tls-key)", key)?,
        }),
        _ => None,
    };
    let root_cert = config
        .tls_ca
        .as_ref()
        .map(|ca| read("the TLS CA certificate (redis.tls_ca, --tls-ca)", ca))
        .transpose()?;
    Ok(redis::TlsCertificates {
        client_tls,
        root_cert,
    })
}
