//! The `bulkhead` binary: parses the command line and hands off to a subcommand module.

mod app;
mod apply;
mod audit;
mod bundle;
mod init;
mod manifest;
mod options;
mod serve;
mod up;
mod verify;
mod worker;

use clap::{Parser, Subcommand};

/// Bulkhead: a self-hosted multi-tenant application platform.
///
/// Every tenant sees only its own data; every app reaches only its own database.
#[derive(Debug, Parser)]
#[command(name = "bulkhead", version, propagate_version = true)]
struct Cli {
    /// Configuration file (TOML). Settings are layered: defaults, then this file, then
    /// BULKHEAD_* environment variables (`__` separates nested keys), then flags.
    #[arg(
        long,
        global = true,
        default_value = "bulkhead.toml",
        env = "BULKHEAD_CONFIG"
    )]
    config: std::path::PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a production install: write a commented bulkhead.toml (at --config) and a new
    /// platform master key (mode 0600), then print the next steps. Never overwrites either.
    Init(init::Args),
    /// Run Bulkhead on this machine with embedded defaults: the first-run command.
    ///
    /// Without --database-url, starts a private PostgreSQL cluster under <data-dir>/postgres
    /// (creating it on first run, reusing it afterwards), serves the HTTP API, and stops the
    /// cluster cleanly on Ctrl-C or SIGTERM. With --database-url, uses that server instead and
    /// starts nothing. GET /healthz answers while the process runs; GET /readyz answers 200
    /// only while the database does. Unless --no-example, it also provisions and serves the
    /// example app (examples/helpdesk) for the demo tenants acme and globex and logs how to
    /// log in and call it.
    Up(up::Args),
    /// Run Bulkhead in production: platform database, vault and routing from bulkhead.toml.
    ///
    /// Serves every registered app (or `serve.apps`), each in its own supervised worker
    /// process that receives only its app's boot credential (over its stdin) and is restarted
    /// with backoff when it exits or fails `serve.health_failures` health checks in a row.
    /// Requests reach an app under /apps/<app>/, by a host in `serve.hosts`, or directly when
    /// one app runs. Also serves local realms, /healthz, /readyz and /metrics (Prometheus).
    Serve(serve::ServerArgs),
    /// Work with app manifests (the YAML that declares an app's entities).
    #[command(subcommand)]
    Manifest(ManifestCommand),
    /// Read and verify the platform's append-only, hash-chained audit log.
    Audit(audit::Args),
    /// Reconcile tenants.yaml with the registry in every app: shows the plan (create, update,
    /// no change, drift), refuses unsafe changes such as changing a tenant's isolation level,
    /// then provisions. Idempotent; --dry-run changes nothing.
    Apply(apply::Args),
    /// Run one app's worker process: boots with the app's boot credential only
    /// (BULKHEAD_BOOT_CREDENTIAL or BULKHEAD_BOOT_CREDENTIAL_FILE), reads its database
    /// credentials from the app's vault space (retrying with backoff, exiting non-zero with a
    /// clear message when it stays unreadable) and serves the app's REST API.
    Worker(worker::Args),
    /// Create apps from manifests, list them, rotate their database credentials.
    #[command(subcommand)]
    App(app::AppCommand),
    /// Create, show, list, suspend, resume, move, export and delete tenants.
    #[command(subcommand)]
    Tenant(app::TenantCommand),
    /// A tenant's feature flag overrides (value, user and role rules, percentage rollout).
    #[command(subcommand)]
    Flags(options::FlagsCommand),
    /// A tenant's configuration settings, validated against the app's JSON Schemas.
    #[command(subcommand)]
    Config(options::ConfigCommand),
    /// Answer the four isolation questions with evidence for every app and tenant: data
    /// (catalog and live probes with each app's own credentials), identity, boundary, levels.
    /// Exits 1 when any check fails. `--sign` for an auditor, `--check-signature` to check one.
    Verify(verify::Args),
    /// Per-tenant search indexes.
    #[command(subcommand)]
    Search(options::SearchCommand),
}

#[derive(Debug, Subcommand)]
enum ManifestCommand {
    /// Validate manifests and list every problem with file:line:col and its path
    /// (e.g. `entities.ticket.fields.prio.type`). Exits 1 when any manifest is invalid.
    Check(manifest::CheckArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init(args) => init::run(&cli.config, args),
        Command::Up(args) => up::run(&cli.config, args),
        Command::Serve(args) => serve::run(&cli.config, args),
        Command::App(cmd) => app::run_app(&cli.config, cmd),
        Command::Worker(args) => worker::run(args),
        Command::Tenant(cmd) => app::run_tenant(&cli.config, cmd),
        Command::Flags(cmd) => options::run_flags(&cli.config, cmd),
        Command::Config(cmd) => options::run_config(&cli.config, cmd),
        Command::Search(cmd) => options::run_search(&cli.config, cmd),
        Command::Apply(args) => match apply::run(&cli.config, args) {
            Ok(true) => Ok(()),
            Ok(false) => return std::process::ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Command::Verify(args) => match verify::run(&cli.config, args) {
            Ok(true) => Ok(()),
            Ok(false) => return std::process::ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Command::Audit(args) => match audit::run(&cli.config, args) {
            Ok(true) => Ok(()),
            Ok(false) => return std::process::ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Command::Manifest(ManifestCommand::Check(args)) => match manifest::check(&args) {
            Ok(true) => Ok(()),
            Ok(false) => return std::process::ExitCode::FAILURE,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    /// clap's own consistency checks over every subcommand and argument (names, conflicts,
    /// requirements), which otherwise only fire when that subcommand is used.
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
