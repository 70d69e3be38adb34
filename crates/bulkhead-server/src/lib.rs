//! The Bulkhead server process (`bulkhead serve`, `bulkhead up`): the gateway (routing to app
//! workers, local realms, `/metrics`, the admin API), the control plane and the worker
//! supervisor. The only process that holds the master key and the platform's database
//! credentials; it spawns workers (`bulkhead worker`) but never links them.
//!
//! - [`config`]: `Config` (defaults → `bulkhead.toml` → `BULKHEAD_*` → flags) and logging.
//! - [`platform`]: the platform's side assembled from the configuration.
//! - `gateway`, `routes`, `egress_proxy`, `health`, `admin`: the HTTP side.
//! - `supervise`, `isolate`: workers as supervised processes, optionally in their own network
//!   namespace.
//! - `serve`, `embedded`, `demo`: the run loop, the embedded cluster of `up`, the example app.

pub mod admin;
mod bearer;
pub mod compartment;
pub mod config;
mod demo;
mod egress_proxy;
mod embedded;
pub mod error;
mod forward;
mod gateway;
mod health;
mod https;
pub mod isolate;
mod landing;
pub mod platform;
mod proxies;
#[cfg(test)]
mod reference;
mod routes;
mod serve;
pub mod supervise;
mod tenant_workers;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

pub use health::platform_pool;
pub use serve::Mode;

/// A periodic self-check whose last results the gateway serves on `/metrics` (the verify
/// canary lives in the verify checks; the server only runs and shows it).
pub trait Canary: Send + Sync + std::fmt::Debug {
    /// Prometheus text of the last results.
    fn metrics(&self) -> String;
}

/// Starts a canary for the configuration, running every `every`.
pub type CanaryStart = Arc<dyn Fn(&config::Config, Duration) -> Arc<dyn Canary> + Send + Sync>;

/// What the binary plugs into the server.
#[derive(Clone, Default)]
pub struct Hooks {
    /// The verify canary (`[serve] canary_interval_secs`).
    pub canary: Option<CanaryStart>,
    /// The `bulkhead` executable whose `worker` command runs each app (default: the current
    /// executable; a test that runs the server in-process names the built binary).
    pub worker_exe: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("canary", &self.canary.is_some())
            .field("worker_exe", &self.worker_exe)
            .finish()
    }
}

/// Runs the server on `listener` in `mode` until Ctrl-C/SIGTERM: `Serve` with the configured
/// platform database, `Up` with the embedded cluster when none is configured.
pub async fn launch(
    config: &config::Config,
    listener: TcpListener,
    mode: Mode,
    hooks: Hooks,
) -> crate::error::Result<()> {
    launch_until(config, listener, mode, hooks, serve::shutdown_signal()).await
}

/// [`launch`], stopping when `shutdown` completes instead of on a signal (in-process tests).
pub async fn launch_until(
    config: &config::Config,
    listener: TcpListener,
    mode: Mode,
    hooks: Hooks,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> crate::error::Result<()> {
    match mode {
        Mode::Serve => {
            let db = platform::platform_db(config)?;
            serve::run_gateway(config, db, mode, listener, &hooks, shutdown).await
        }
        Mode::Up { example } => embedded::serve(config, listener, example, &hooks, shutdown).await,
    }
}

#[cfg(test)]
mod tests {
    /// The server spawns workers as processes; linking the worker would put app code in the
    /// process that holds the master key.
    #[test]
    fn the_server_does_not_link_the_worker() {
        let manifest = include_str!("../Cargo.toml");
        assert!(
            !manifest
                .lines()
                .any(|l| l.trim_start().starts_with("bulkhead-worker")),
            "bulkhead-worker must not be a dependency of the server"
        );
    }
}
