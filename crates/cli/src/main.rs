//! The `evstream` command. `main` parses the arguments, resolves the configuration and hands
//! over to one module per subcommand.
#![forbid(unsafe_code)]

mod args;
mod commands;
mod engine;
mod http;
mod pipeline;
mod report_html;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    // Warnings and errors of the library (retries, journal trouble) on stderr; more with
    // EVSTREAM_LOG=info or debug.
    let filter = tracing_subscriber::EnvFilter::try_from_env("EVSTREAM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
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
            eprintln!("evstream: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
