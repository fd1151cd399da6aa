//! The `evstream` command. `main` parses the arguments, resolves the configuration and hands
//! over to one module per subcommand.
#![forbid(unsafe_code)]

mod args;
mod commands;
mod engine;
mod pipeline;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
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
