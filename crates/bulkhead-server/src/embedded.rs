//! The embedded first-run mode of `bulkhead up`: starts (or reuses) a private PostgreSQL
//! cluster under `<data_dir>/postgres` unless a `database_url` is configured, makes sure the
//! platform database exists, runs the server, and on shutdown stops the cluster it started.

use std::path::Path;
use std::str::FromStr;

use crate::error::Context;
use bulkhead_pgcluster::{Cluster, Durability, Opened, Reaper, Started, StopMode};
use tokio::net::TcpListener;

use crate::Hooks;
use crate::config::Config;
use crate::serve::{Mode, run_gateway};

/// The platform's own database inside the embedded cluster.
const PLATFORM_DB: &str = "bulkhead";

/// The embedded cluster while `up` runs, and whether this process started it.
struct Embedded {
    cluster: Cluster,
    started_here: bool,
    _reaper: Option<Reaper>,
}

/// `bulkhead up`: the configured PostgreSQL, or the embedded cluster started (and stopped
/// again) around the run loop.
pub(crate) async fn serve(
    config: &Config,
    listener: TcpListener,
    example: bool,
    hooks: &Hooks,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> crate::error::Result<()> {
    let (db_config, embedded) = match &config.database_url {
        Some(url) => {
            let db_config = bulkhead_pg::PgConfig::from_str(url.expose())
                .context("database_url is not a usable PostgreSQL URL")?;
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

    let result = run_gateway(
        config,
        db_config,
        Mode::Up { example },
        listener,
        hooks,
        shutdown,
    )
    .await;

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

fn start_embedded(dir: &Path) -> crate::error::Result<Embedded> {
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
async fn ensure_platform_db(cluster: &Cluster) -> crate::error::Result<bulkhead_pg::PgConfig> {
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
    // The cluster listens on the loopback interface only: plaintext.
    Ok(bulkhead_pg::PgConfig::local(admin)?)
}
