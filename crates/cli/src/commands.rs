//! One module per subcommand, and the dispatch to them.

mod demo;

use std::process::ExitCode;

use crate::args::{Cli, Command};

pub(crate) fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = cli.global.resolve()?;
    match cli.command {
        Command::Demo(args) => demo::run(&config, &args),
    }
}
