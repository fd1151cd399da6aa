//! The `evstream` command. `main` parses the arguments, resolves the configuration and hands
//! over to one module per subcommand.
#![forbid(unsafe_code)]

mod args;
mod commands;
mod engine;
mod http;
mod local_redis;
mod market;
mod pipeline;
mod report_html;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match commands::run(cli) {
        Ok(code) => code,
        Err(error) => {
            // A closed pipe (`evstream … | head`) is not a failure.
            if error
                .chain()
                .filter_map(|e| e.downcast_ref::<std::io::Error>())
                .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("evstream: error: {}", causes(&error));
            ExitCode::FAILURE
        }
    }
}

/// What is logged by default: the library's warnings and errors (retries, journal
/// trouble), every alert transition, resolutions (info) included, and the shipper's and
/// failover watch's rare good news at info (shipping resumed after the breaker opened, a new
/// master announced, a journal replayed):
/// `warn,evstream::alerts=info,evstream::ship=info,evstream::failover=info`.
fn default_log_filter() -> String {
    format!(
        "warn,{}=info,evstream::ship=info,evstream::failover=info",
        evstream::ops::ALERT_LOG_TARGET
    )
}

/// The log filter: `EVSTREAM_LOG`, else `RUST_LOG`, else [`default_log_filter`]
/// (`EVSTREAM_LOG=info`, `EVSTREAM_LOG=evstream=debug`: `tracing-subscriber`'s `EnvFilter`
/// syntax). One that does not parse is reported and the default used.
fn log_filter() -> tracing_subscriber::EnvFilter {
    for variable in ["EVSTREAM_LOG", "RUST_LOG"] {
        let Some(value) = std::env::var(variable)
            .ok()
            .filter(|v| !v.trim().is_empty())
        else {
            continue;
        };
        match tracing_subscriber::EnvFilter::try_new(&value) {
            Ok(filter) => return filter,
            Err(error) => {
                eprintln!(
                    "evstream: warning: {variable}={value} is not a log filter ({error}); \
                     logging with the default, {}",
                    default_log_filter()
                );
                break;
            }
        }
    }
    tracing_subscriber::EnvFilter::new(default_log_filter())
}

/// The error and its causes, each printed once. `{:#}` prints every error of the chain, but
/// many errors (evstream's own, whose messages the C ABI and logs show alone, and redis-rs's
/// I/O errors) already include their cause in their message *and* return it as `source()`:
/// "Connection refused (os error 111): Connection refused (os error 111)". A cause whose text
/// was printed already is left out.
fn causes(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if cause.is_empty() || text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::causes;

    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let error = anyhow::Error::new(io)
            .context(format!(
                "{}",
                std::io::Error::from(std::io::ErrorKind::ConnectionRefused)
            ))
            .context("cannot connect");
        assert_eq!(causes(&error), "cannot connect: connection refused");
    }
}
