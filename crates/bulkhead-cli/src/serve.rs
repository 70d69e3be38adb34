//! `bulkhead serve`: the production mode, and the run loop `bulkhead up` shares (the gateway
//! itself is `gateway.rs`, its routing `routes.rs`).
//!
//! Configuration comes from `bulkhead.toml` (platform database, vault backend, routing). The
//! gateway holds the platform's credentials; each registered app runs in its own supervised
//! `bulkhead worker` process that holds only that app's boot credential. Requests reach an app
//! under `/apps/<app>/`, by a host name routed to it, or — when one app runs — directly; the
//! gateway itself serves the local realms (`/realms/<tenant>/…`), `/healthz`, `/readyz` and
//! `/metrics`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use bulkhead_server::Mode;
use bulkhead_server::config::{self, Config, Overrides, Secret};

/// Where to listen and which platform database to use: `serve` and `up` alike.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Address to serve HTTP on (e.g. 127.0.0.1:8080; port 0 picks a free port).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// The platform database (postgres://user:pass@host:port/db). Prefer
    /// BULKHEAD_DATABASE_URL or database_url_file to keep it out of `ps`.
    #[arg(long)]
    database_url: Option<String>,
    /// Directory for local state (embedded cluster, embedded vault, local files).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Run each app's worker in its own network namespace (Linux, root): its only way out is
    /// the egress proxy; its database and vault are reached through relays on its link.
    #[arg(long)]
    isolate_network: bool,
}

impl ServerArgs {
    /// The configuration with these flags on top, logging started.
    pub fn load(self, config_path: &Path) -> anyhow::Result<Config> {
        let config = Config::load(
            config_path,
            Overrides {
                listen: self.listen,
                database_url: self.database_url.map(Secret::new),
                data_dir: self.data_dir,
            },
        )?;
        config::init_logging(&config.log);
        let mut config = config;
        config.serve.isolate_network |= self.isolate_network;
        Ok(config)
    }
}

pub fn run(config_path: &Path, args: ServerArgs) -> anyhow::Result<()> {
    let config = args.load(config_path)?;
    run_server(&config, Mode::Serve)
}

/// Binds the configured address and runs the server in `mode`, with the verify canary.
pub fn run_server(config: &Config, mode: Mode) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(async {
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("binding {}", config.listen))?;
            let hooks = bulkhead_server::Hooks {
                canary: Some(Arc::new(crate::verify::canary)),
                worker_exe: None,
            };
            bulkhead_server::launch(config, listener, mode, hooks).await?;
            Ok(())
        })
}
