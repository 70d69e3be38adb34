//! `bulkhead up`: the embedded first-run mode (`bulkhead_server::Mode::Up`): a private
//! PostgreSQL cluster unless a `database_url` is configured, and the example app.

use std::path::Path;

use crate::serve::ServerArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Without --database-url the embedded cluster lives in <data-dir>/postgres.
    #[command(flatten)]
    server: ServerArgs,
    /// Do not provision and serve the example app (examples/helpdesk).
    #[arg(long)]
    no_example: bool,
}

pub fn run(config_path: &Path, args: Args) -> anyhow::Result<()> {
    let example = !args.no_example;
    let config = args.server.load(config_path)?;
    crate::serve::run_server(&config, bulkhead_server::Mode::Up { example })
}
