//! One module per subcommand, and the dispatch to them.

mod bench;
mod consume;
mod demo;
mod report;

use std::process::ExitCode;

use crate::args::{Cli, Command};

pub(crate) fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = cli.global.resolve()?;
    let given_url = cli.global.given_url(&config);
    match cli.command {
        Command::Demo(args) => demo::run(&config, given_url.as_deref(), &args),
        Command::Bench(args) => bench::run(&config, given_url.as_deref(), &args),
        Command::Consume(args) => consume::run(config, &args),
        Command::Report(args) => report::run(&config, &args),
    }
}
