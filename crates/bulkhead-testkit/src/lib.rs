//! Real peers for Bulkhead's tests. A dev-dependency only: nothing here ships.
//!
//! [`pg`] starts one private PostgreSQL cluster per test process (a temp directory, run as the
//! `postgres` OS user when root, scram-sha-256 on 127.0.0.1, a generated superuser password,
//! fsync off) the first time a test asks for it. [`TestCluster::fresh_db`] gives each test its
//! own database. A watchdog process stops the server and removes the directory when the test
//! process exits, however it exits (normal end, panic, abort, kill).
//!
//! With `cargo test` the cluster is shared by every test of a test binary; with nextest, which
//! runs each test in its own process, each test gets its own cluster.
//!
//! [`pgtls`] starts a cluster that accepts only TLS, with a CA made for it.
//!
//! [`browser`] runs a scenario in a real headless Chromium (Debian's, driven by playwright-core).
//!
//! `KEEP_TEST_DB=1` keeps the cluster running after the tests and prints how to connect.
//!
//! This crate never mocks PostgreSQL and never offers `trust` authentication: tests that make a
//! claim about a less privileged role must connect as that role with its password.

pub mod browser;
pub mod certs;
pub mod garage;
pub mod oidc;
pub mod openbao;
pub mod pgtls;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, anyhow};
use bulkhead_pgcluster::{Cluster, Durability, Reaper};
pub use tokio_postgres;
use tokio_postgres::{Client, Config, NoTls};

static CLUSTER: OnceLock<Result<TestCluster, String>> = OnceLock::new();

/// The test process's PostgreSQL cluster, started on first use.
pub fn pg() -> anyhow::Result<&'static TestCluster> {
    CLUSTER
        .get_or_init(|| TestCluster::start().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("test PostgreSQL cluster unavailable: {e}"))
}

/// A running ephemeral cluster.
#[derive(Debug)]
pub struct TestCluster {
    cluster: Cluster,
    _reaper: Option<Reaper>,
    next_db: AtomicU32,
    keep: bool,
}

impl TestCluster {
    fn start() -> anyhow::Result<Self> {
        let keep = std::env::var("KEEP_TEST_DB").is_ok_and(|v| v == "1");
        let dir = std::env::temp_dir().join(format!(
            "bulkhead-test-{}-{:08x}",
            std::process::id(),
            rand_u32()
        ));
        let (mut cluster, _) = Cluster::open_or_init(&dir, Durability::Ephemeral)
            .with_context(|| format!("creating a test cluster in {}", dir.display()))?;
        // The reaper exists before the server starts, so a crash right after start still cleans up.
        let reaper = if keep {
            None
        } else {
            Some(cluster.reap_on_exit(true)?)
        };
        cluster.start()?;
        if keep {
            eprintln!(
                "KEEP_TEST_DB=1: test cluster kept in {dir}\n  connect: psql '{url}'\n  stop:    {stop}",
                dir = cluster.dir().display(),
                url = cluster.superuser_url("postgres"),
                stop = stop_hint(&cluster),
            );
        }
        Ok(Self {
            cluster,
            _reaper: reaper,
            next_db: AtomicU32::new(1),
            keep,
        })
    }

    /// The underlying cluster (to stop or inspect it).
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    pub fn dir(&self) -> PathBuf {
        self.cluster.dir().to_path_buf()
    }

    pub fn port(&self) -> u16 {
        self.cluster.port()
    }

    pub fn superuser_password(&self) -> &str {
        self.cluster.password().expose()
    }

    /// Connection settings for `user`/`password` on `database`, over TCP with a password.
    pub fn config(&self, database: &str, user: &str, password: &str) -> Config {
        let mut config = Config::new();
        config
            .host(self.cluster.host())
            .port(self.cluster.port())
            .dbname(database)
            .user(user)
            .password(password)
            .application_name("bulkhead-test");
        config
    }

    /// Creates a new, empty database for one test.
    pub async fn fresh_db(&'static self) -> anyhow::Result<TestDb> {
        let name = format!(
            "test_{}_{}",
            std::process::id(),
            self.next_db.fetch_add(1, Ordering::Relaxed)
        );
        let admin = connect(&self.config("postgres", "postgres", self.superuser_password()))
            .await
            .context("connecting to the test cluster as superuser")?;
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .with_context(|| format!("creating database {name}"))?;
        if self.keep {
            eprintln!(
                "KEEP_TEST_DB=1: test database {name}: psql '{}'",
                self.cluster.superuser_url(&name)
            );
        }
        Ok(TestDb {
            name,
            cluster: self,
        })
    }
}

/// One test's database in the shared test cluster.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    cluster: &'static TestCluster,
}

impl TestDb {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn cluster(&self) -> &'static TestCluster {
        self.cluster
    }

    /// A superuser connection to this database, for setting up what a test then checks as a
    /// less privileged role. Never use it to test isolation.
    pub async fn superuser(&self) -> anyhow::Result<Client> {
        Ok(connect(&self.superuser_config()).await?)
    }

    pub fn superuser_config(&self) -> Config {
        self.cluster
            .config(&self.name, "postgres", self.cluster.superuser_password())
    }

    /// A superuser URL (password included) for this database.
    pub fn superuser_url(&self) -> String {
        self.cluster.cluster.superuser_url(&self.name)
    }

    /// Settings for connecting to this database as `user` with `password`.
    pub fn config_as(&self, user: &str, password: &str) -> Config {
        self.cluster.config(&self.name, user, password)
    }

    /// Connects as `user` with `password`; returns PostgreSQL's refusal as the error.
    pub async fn connect_as(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Client, tokio_postgres::Error> {
        connect(&self.config_as(user, password)).await
    }
}

/// Connects without TLS (loopback only) and drives the connection on a spawned task.
pub async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn rand_u32() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16)
}

fn stop_hint(cluster: &Cluster) -> String {
    format!(
        "runuser -u postgres -- pg_ctl -D {} -m immediate stop && rm -rf {}",
        cluster.data_dir().display(),
        cluster.dir().display()
    )
}

/// Every file under `dir`, recursively (for tests that check what is, or is not, on disk).
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}
