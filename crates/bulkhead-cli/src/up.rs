//! `bulkhead up`: the embedded first-run mode.
//!
//! Starts (or reuses) a private PostgreSQL cluster under `<data_dir>/postgres` unless a
//! `database_url` is configured, makes sure the platform database exists, serves the gateway,
//! and on Ctrl-C/SIGTERM stops serving and then stops the cluster it started.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::Context;
use bulkhead_gateway::AppState;
use bulkhead_pgcluster::{Cluster, Durability, Opened, Reaper, Started, StopMode};
use tokio::net::TcpListener;

use crate::config::{self, Config, Overrides, Secret};
use crate::serve::Gateway;

/// The platform's own database inside the embedded cluster.
const PLATFORM_DB: &str = "bulkhead";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to serve HTTP on (e.g. 127.0.0.1:8080; port 0 picks a free port).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Use this PostgreSQL server (postgres://user:pass@host:port/db) instead of the embedded
    /// cluster. Prefer BULKHEAD_DATABASE_URL or database_url_file to keep it out of `ps`.
    #[arg(long)]
    database_url: Option<String>,
    /// Directory for local state; the embedded cluster lives in <data-dir>/postgres.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Do not provision and serve the example app (examples/helpdesk).
    #[arg(long)]
    no_example: bool,
}

/// The embedded cluster while `up` runs, and whether this process started it.
struct Embedded {
    cluster: Cluster,
    started_here: bool,
    _reaper: Option<Reaper>,
}

pub fn run(config_path: &Path, args: Args) -> anyhow::Result<()> {
    let example = !args.no_example;
    let config = Config::load(
        config_path,
        Overrides {
            listen: args.listen,
            database_url: args.database_url.map(Secret::new),
            data_dir: args.data_dir,
        },
    )?;
    config::init_logging(&config.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(config, example))
}

async fn serve(config: Config, example: bool) -> anyhow::Result<()> {
    let (db_config, embedded) = match &config.database_url {
        Some(url) => {
            let db_config = tokio_postgres::Config::from_str(url.expose())
                .context("database_url is not a valid PostgreSQL URL")?;
            tracing::info!(host = ?db_config.get_hosts(), "using the configured PostgreSQL server");
            (db_config, None)
        }
        None => {
            let dir = config.data_dir.join("postgres");
            let embedded = tokio::task::spawn_blocking(move || start_embedded(&dir))
                .await
                .context("starting the embedded cluster")??;
            let db_config = ensure_platform_db(&embedded.cluster).await?;
            (db_config, Some(embedded))
        }
    };

    let result = serve_http(&config, db_config, example).await;

    if let Some(embedded) = embedded {
        if embedded.started_here {
            tracing::info!("stopping the embedded PostgreSQL cluster");
            tokio::task::spawn_blocking(move || embedded.cluster.stop(StopMode::Fast))
                .await
                .context("stopping the embedded cluster")??;
            tracing::info!("embedded PostgreSQL cluster stopped");
        } else {
            tracing::info!("leaving the embedded cluster running: another process started it");
        }
    }
    result
}

async fn serve_http(
    config: &Config,
    db_config: tokio_postgres::Config,
    example: bool,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let base_url = config
        .serve
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    std::fs::create_dir_all(&config.data_dir)?;
    let mut gateway = Gateway::open(config, db_config, &base_url, true).await?;
    if example {
        crate::demo::provision(&mut gateway, &config.data_dir)
            .await
            .context("provisioning the example app")?;
    }
    // Every registered app runs in its own worker process; the gateway routes to them.
    let (stop_workers, workers_stopped) = tokio::sync::watch::channel(false);
    let (app, workers) = gateway.start(config, workers_stopped).await?;
    if example {
        print_demo_help(&base_url);
    }
    tracing::info!(
        apps = ?workers.iter().map(|w| w.app()).collect::<Vec<_>>(),
        "up: listening on http://{addr}"
    );
    let result = bulkhead_gateway::launch(
        listener,
        AppState::new(gateway.pool()),
        app,
        shutdown_signal(),
    )
    .await
    .context("serving HTTP");
    let _ = stop_workers.send(true);
    // Give the supervisor a moment to stop the workers before the database goes away.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    result
}

fn print_demo_help(base: &str) {
    let mut users = String::new();
    for (tenant, level) in crate::demo::TENANTS {
        users.push_str(&format!(
            "\n    tenant {tenant} ({}): alice / {} (agent), bob / {} (customer)",
            level.as_str(),
            crate::demo::demo_password(tenant, "alice"),
            crate::demo::demo_password(tenant, "bob"),
        ));
    }
    tracing::info!(
        "example app `helpdesk` is ready{users}\n  log in:\n    curl -s {base}/realms/acme/protocol/openid-connect/token -d grant_type=password -d client_id=helpdesk -d username=alice -d password={pw}\n  call it:\n    curl -s {base}/t/acme/api/ticket -H \"Authorization: Bearer $TOKEN\"\n  API document: {base}/t/acme/openapi.json",
        pw = crate::demo::demo_password("acme", "alice"),
    );
}

fn start_embedded(dir: &Path) -> anyhow::Result<Embedded> {
    let (mut cluster, opened) = Cluster::open_or_init(dir, Durability::Durable)?;
    match opened {
        Opened::Created => {
            tracing::info!(dir = %cluster.dir().display(), "created a new PostgreSQL cluster")
        }
        Opened::Reused => {
            tracing::info!(dir = %cluster.dir().display(), "reusing the PostgreSQL cluster")
        }
    }
    // Armed before starting, so a crash of this process right after start stops the server.
    // Only the process that starts the server may stop it when it exits.
    let reaper = if cluster.is_running() {
        None
    } else {
        Some(cluster.reap_on_exit(false)?)
    };
    let started_here = cluster.start()? == Started::Started;
    let reaper = match (started_here, reaper) {
        (true, reaper) => reaper,
        (false, Some(reaper)) => {
            reaper.disarm();
            None
        }
        (false, None) => None,
    };
    if started_here {
        tracing::info!(port = cluster.port(), "started PostgreSQL on 127.0.0.1");
    } else {
        tracing::info!(
            port = cluster.port(),
            "PostgreSQL already running; attaching to it"
        );
    }
    Ok(Embedded {
        cluster,
        started_here,
        _reaper: reaper,
    })
}

/// Creates the platform database in the embedded cluster when missing; returns how to reach it.
async fn ensure_platform_db(cluster: &Cluster) -> anyhow::Result<tokio_postgres::Config> {
    let mut admin = tokio_postgres::Config::new();
    admin
        .host(cluster.host())
        .port(cluster.port())
        .user(cluster.superuser())
        .password(cluster.password().expose())
        .dbname("postgres")
        .application_name("bulkhead");
    let (client, connection) = admin
        .connect(tokio_postgres::NoTls)
        .await
        .context("connecting to the embedded cluster")?;
    let driver = tokio::spawn(connection);
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = $1",
            &[&PLATFORM_DB],
        )
        .await?
        .is_some();
    if !exists {
        client
            .batch_execute(&format!("CREATE DATABASE \"{PLATFORM_DB}\""))
            .await
            .context("creating the platform database")?;
        tracing::info!(database = PLATFORM_DB, "created the platform database");
    }
    drop(client);
    let _ = driver.await;
    admin.dbname(PLATFORM_DB);
    Ok(admin)
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("received Ctrl-C; shutting down"),
        () = term => tracing::info!("received SIGTERM; shutting down"),
    }
}
