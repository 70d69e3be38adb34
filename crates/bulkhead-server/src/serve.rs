//! The server's run loop, `bulkhead serve` and `bulkhead up` alike: open the platform, start
//! every app's supervised worker, serve the gateway until Ctrl-C/SIGTERM, then stop the
//! workers. The gateway itself is `gateway.rs`, its routing `routes.rs`.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Context;
use tokio::net::TcpListener;

use crate::Hooks;
use crate::config::Config;
use crate::gateway::Gateway;
use crate::supervise::WorkerHandle;

/// Which command runs the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Serve,
    /// `bulkhead up`, provisioning the example app first when `example`.
    Up {
        example: bool,
    },
}

/// Binds, opens the platform, starts every app's worker and serves until Ctrl-C/SIGTERM;
/// then stops the workers.
pub async fn run_gateway(
    config: &Config,
    db: bulkhead_pg::PgConfig,
    mode: Mode,
    listener: TcpListener,
    hooks: &Hooks,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> crate::error::Result<()> {
    let addr = listener.local_addr()?;
    let certs = match (&config.serve.tls_cert_file, &config.serve.tls_key_file) {
        (Some(cert), Some(key)) => {
            let certs = crate::https::Certs::load(cert.clone(), key.clone())?;
            certs.reload_on_sighup()?;
            Some(certs)
        }
        (None, None) => None,
        _ => {
            return Err(crate::error::Error::msg(
                "invalid configuration: serve.tls_cert_file and serve.tls_key_file go together",
            ));
        }
    };
    let scheme = if certs.is_some() { "https" } else { "http" };
    let public_url = config
        .serve
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{addr}"));
    let embedded = matches!(mode, Mode::Up { .. });
    if embedded {
        std::fs::create_dir_all(&config.data_dir)?;
    }
    let mut gateway = Gateway::open(config, db, &public_url, embedded).await?;
    let example = mode == Mode::Up { example: true };
    if example {
        crate::demo::provision(&mut gateway, &config.data_dir)
            .await
            .context("provisioning the example app")?;
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let compartments = Arc::new(crate::compartment::Compartments::new(
        &config.compartments,
        &config.data_dir,
    )?);
    compartments.log();
    let (mut router, workers) = gateway.start(config, stopped, hooks, &compartments).await?;
    if let Some(file) = &config.serve.admin_token_file {
        let token = std::fs::read_to_string(file)
            .with_context(|| format!("reading serve.admin_token_file {}", file.display()))?;
        let master = crate::platform::master_key(config, false)?;
        let platform = crate::platform::platform_at(config, gateway.db.clone(), master).await?;
        let admin = crate::admin::AdminApi::new(platform, &token)
            .with_context(|| format!("serve.admin_token_file {}", file.display()))?;
        router = crate::admin::router(Arc::new(admin)).merge(router);
        tracing::info!("admin API enabled under /admin/v1/");
    }
    let landing = if embedded {
        crate::landing::Landing::Up {
            pool: gateway.pool(),
            example,
        }
    } else {
        crate::landing::Landing::Serve
    };
    router = crate::landing::router(landing).merge(router);
    // Behind a reverse proxy: the client's address and host, from trusted proxies only (no
    // layer at all when none is trusted).
    let proxies = crate::proxies::TrustedProxies::parse(&config.serve.trusted_proxies)?;
    if !proxies.is_empty() {
        router = router.layer(axum::middleware::from_fn_with_state(
            Arc::new(proxies),
            crate::proxies::apply,
        ));
    }
    if example {
        crate::demo::print_help(&public_url);
    }
    let label = if embedded { "up" } else { "serve" };
    tracing::info!(
        mode = ?config.deployment.mode,
        data_residency = config.deployment.data_residency.as_deref().unwrap_or("-"),
        control_plane = ?config.deployment.control_plane,
        egress = ?config.deployment.egress,
        "deployment profile"
    );
    tracing::info!(
        apps = ?workers.iter().map(WorkerHandle::app).collect::<Vec<_>>(),
        "{label}: listening on {scheme}://{addr}"
    );
    // For supervisors and tests: the address on stdout as the worker contract's readiness
    // line, so nothing has to read the log.
    if std::env::var_os(bulkhead_model::worker::env::READY_STDOUT).is_some() {
        use std::io::Write;
        let line = bulkhead_model::worker::Ready {
            listening: addr,
            vault_session: None,
        }
        .line();
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
    }
    let result = crate::health::launch(
        listener,
        certs,
        crate::health::AppState::new(gateway.pool()).with_compartments(compartments.report()),
        // Request ids (forwarded to the workers), caught panics, JSON refusals.
        bulkhead_runtime::edge::harden(router),
        shutdown,
    )
    .await
    .context("serving HTTP");
    let _ = stop.send(true);
    // Give the supervisors a moment to stop the workers before the database goes away.
    tokio::time::sleep(Duration::from_millis(200)).await;
    if config.serve.isolate_network {
        for w in &workers {
            crate::isolate::Sandbox::remove(w.app());
        }
    }
    result
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed when this is called
/// (at start-up), not when the future is first polled (after the server says it listens): a
/// signal sent right after the readiness line is then a graceful shutdown instead of the
/// default action's death, which left the workers and the embedded database behind.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
        match s {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    let ctrl_c = wait(signal(SignalKind::interrupt()));
    let term = wait(signal(SignalKind::terminate()));
    async move {
        tokio::select! {
            () = ctrl_c => tracing::info!("received Ctrl-C; shutting down"),
            () = term => tracing::info!("received SIGTERM; shutting down"),
        }
    }
}
