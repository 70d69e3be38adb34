//! Worker supervision and routing: `bulkhead serve` and `bulkhead up` run each app in its own
//! `bulkhead worker` process (booted with the app's boot credential only, handed over its
//! stdin), restart it with backoff when it exits or fails its health checks, and forward the
//! app's requests to it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::error::Context;
use bulkhead_model::AppId;
use bulkhead_model::worker::{Ready, env};
use bulkhead_vault_admin::VaultAdmin;

use axum::body::Body;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;

/// Where the app's worker currently listens, and how it has fared.
#[derive(Clone, Debug)]
pub struct WorkerHandle {
    app: String,
    /// The tenant a dedicated worker serves.
    tenant: Option<String>,
    addr: Arc<RwLock<Option<(SocketAddr, axum::http::uri::Authority)>>>,
    /// The running worker's vault session, revoked when it is replaced.
    session: Arc<RwLock<Option<String>>>,
    stats: Arc<Stats>,
    /// Health checks.
    http: reqwest::Client,
    /// Forwarded requests.
    pub(crate) upstream: Upstream,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
struct Stats {
    starts: AtomicU64,
    health_failures: AtomicU64,
    unhealthy_restarts: AtomicU64,
    /// The worker's egress denials by reason, as its last health check reported them.
    egress_denials: RwLock<std::collections::BTreeMap<String, u64>>,
}

impl WorkerHandle {
    fn current(&self) -> Option<SocketAddr> {
        self.addr
            .read()
            .ok()
            .and_then(|a| a.as_ref().map(|(addr, _)| *addr))
    }

    /// Where requests go: the listening address as a URI authority.
    pub(crate) fn authority(&self) -> Option<axum::http::uri::Authority> {
        self.addr
            .read()
            .ok()
            .and_then(|a| a.as_ref().map(|(_, authority)| authority.clone()))
    }

    /// A handle on a worker already listening at `addr` (for tests of the hop).
    #[cfg(test)]
    pub(crate) fn listening_at(app: &str, addr: SocketAddr) -> Self {
        let handle = Self {
            app: app.to_owned(),
            tenant: None,
            addr: Arc::default(),
            session: Arc::default(),
            stats: Arc::default(),
            http: reqwest::Client::new(),
            upstream: upstream(),
        };
        handle.set(Some(addr));
        handle
    }

    fn set(&self, addr: Option<SocketAddr>) {
        let entry = addr.and_then(|addr| {
            axum::http::uri::Authority::try_from(addr.to_string())
                .ok()
                .map(|authority| (addr, authority))
        });
        if let Ok(mut slot) = self.addr.write() {
            *slot = entry;
        }
    }

    pub fn app(&self) -> &str {
        &self.app
    }

    /// The tenant a dedicated worker serves; `None` for an app's worker.
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// Waits until the worker listens (or `timeout` passes).
    pub async fn ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if self.current().is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// The worker's metric samples: (family, value).
    pub fn samples(&self) -> [(&'static str, u64); 4] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("bulkhead_worker_up", u64::from(self.current().is_some())),
            ("bulkhead_worker_starts_total", get(&self.stats.starts)),
            (
                "bulkhead_worker_health_failures_total",
                get(&self.stats.health_failures),
            ),
            (
                "bulkhead_worker_unhealthy_restarts_total",
                get(&self.stats.unhealthy_restarts),
            ),
        ]
    }

    /// The worker's egress denials by reason (since its start).
    pub fn egress_denials(&self) -> std::collections::BTreeMap<String, u64> {
        self.stats
            .egress_denials
            .read()
            .map(|d| d.clone())
            .unwrap_or_default()
    }

    /// Checks `GET /healthz` of the worker, with a short timeout, and keeps the counts it
    /// reports.
    async fn healthy(&self, addr: SocketAddr) -> bool {
        let resp = self
            .http
            .get(format!("http://{addr}/healthz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        let Ok(resp) = resp else { return false };
        if !resp.status().is_success() {
            return false;
        }
        if let Ok(body) = resp.json::<serde_json::Value>().await
            && let Ok(d) = serde_json::from_value(body["egress_denials"].clone())
            && let Ok(mut slot) = self.stats.egress_denials.write()
        {
            *slot = d;
        }
        true
    }
}

/// How to start one app's worker (or one tenant's own worker of the app).
#[derive(Clone)]
pub struct Launch {
    pub app: AppId,
    /// The one tenant a dedicated worker serves; `None` for the app's worker.
    pub tenant: Option<bulkhead_model::TenantId>,
    /// Issues the app's boot credential at each start; it reaches the worker through its
    /// stdin, never through its environment, arguments or a file.
    pub vault: Arc<dyn VaultAdmin>,
    pub vault_dir: PathBuf,
    pub vault_addr: Option<String>,
    /// `[vault] ca_file`'s certificates (PEM), handed to the worker.
    pub vault_ca_pem: Option<String>,
    /// Where the app's secrets are on OpenBao (mount, namespace), handed to the worker.
    pub vault_location: bulkhead_vault::openbao::Location,
    pub health_interval: Duration,
    pub health_failures: u32,
    /// The worker's search settings (its own index directory).
    pub search: bulkhead_search::SearchConfig,
    /// Egress limits, resolver and app allow-lists.
    pub egress: bulkhead_egress::EgressSettings,
    /// The gateway's CONNECT proxy and this app's token for it.
    pub proxy: Option<(std::net::SocketAddr, bulkhead_model::Secret)>,
    /// The app's network namespace, with `--isolate-network`.
    pub sandbox: Option<crate::isolate::Sandbox>,
    /// The server's log format, which the worker follows (its lines go to the same stderr).
    pub log_format: crate::config::LogFormat,
    /// The `bulkhead` executable that runs `bulkhead worker` (default: this process's own).
    pub exe: Option<PathBuf>,
    /// The walls around the worker, and what it may reach on disk (its executable is filled
    /// in from `exe`).
    pub compartments: Arc<crate::compartment::Compartments>,
    pub paths: crate::compartment::WorkerPaths,
}

impl std::fmt::Debug for Launch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launch")
            .field("app", &self.app)
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl Launch {
    /// The worker's vault space and compartment: the app's, or `app--tenant`.
    pub fn key(&self) -> AppId {
        match &self.tenant {
            Some(t) => self.app.tenant_space(t),
            None => self.app.clone(),
        }
    }
}

/// Starts and supervises the worker of an app until `shutdown` turns true: restarts it with
/// backoff when it exits, and kills it (to be restarted) after `health_failures` failed
/// health checks in a row.
pub fn spawn(
    launch: Launch,
    mut shutdown: watch::Receiver<bool>,
) -> crate::error::Result<WorkerHandle> {
    let exe = match &launch.exe {
        Some(exe) => exe.clone(),
        None => std::env::current_exe()?,
    };
    let handle = WorkerHandle {
        app: launch.app.to_string(),
        tenant: launch.tenant.as_ref().map(ToString::to_string),
        addr: Arc::new(RwLock::new(None)),
        session: Arc::default(),
        stats: Arc::default(),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()?,
        upstream: upstream(),
    };
    let worker = handle.clone();
    tokio::spawn(async move {
        let app = launch.app.to_string();
        let mut backoff = Duration::from_millis(500);
        loop {
            let started = tokio::time::Instant::now();
            match run_once(&exe, &launch, &worker, &mut shutdown).await {
                Ok(Exit::Shutdown) => {
                    tracing::info!(%app, "worker stopped");
                    return;
                }
                Ok(Exit::Exited(status)) => {
                    tracing::warn!(%app, ?status, ?backoff, "worker exited; restarting after backoff")
                }
                Ok(Exit::Unhealthy) => {
                    worker
                        .stats
                        .unhealthy_restarts
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%app, ?backoff, "worker failed its health checks; restarted after backoff")
                }
                Err(e) => {
                    tracing::error!(%app, error = %bulkhead_model::error_chain(&e), "cannot start the worker")
                }
            }
            worker.set(None);
            if started.elapsed() > Duration::from_secs(60) {
                backoff = Duration::from_millis(500);
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    });
    Ok(handle)
}

enum Exit {
    Shutdown,
    Exited(std::process::ExitStatus),
    Unhealthy,
}

/// Runs the worker once, until it exits, fails its health checks, or shutdown.
async fn run_once(
    exe: &std::path::Path,
    launch: &Launch,
    worker: &WorkerHandle,
    shutdown: &mut watch::Receiver<bool>,
) -> crate::error::Result<Exit> {
    use tokio::io::AsyncWriteExt;
    let app = launch.app.as_str();
    let key = launch.key();
    // The replaced worker's vault session ends before its successor gets a credential.
    let previous = worker.session.write().ok().and_then(|mut s| s.take());
    if let Some(accessor) = previous
        && let Err(e) = launch.vault.revoke_session(&accessor).await
    {
        tracing::warn!(%app, error = %e, "could not revoke the previous worker's vault session");
    }
    let credential = launch
        .vault
        .boot_credential(&key)
        .await
        .context("issuing the worker's boot credential")?;
    // The compartment: entered by the child between fork and exec (the app's network
    // namespace first, when isolated).
    let compartment = launch
        .compartments
        .prepare(
            key.as_str(),
            &crate::compartment::WorkerPaths {
                exe: std::fs::canonicalize(exe)
                    .with_context(|| format!("the worker executable {}", exe.display()))?,
                ..launch.paths.clone()
            },
            launch
                .sandbox
                .as_ref()
                .map(|sb| PathBuf::from(format!("/run/netns/{}", sb.netns)))
                .as_deref(),
        )
        .context("preparing the worker's compartment")?;
    let mut cmd = tokio::process::Command::new(exe);
    let listen = match &launch.sandbox {
        Some(sb) => format!("{}:0", sb.worker_ip),
        None => "127.0.0.1:0".to_owned(),
    };
    cmd.args(["worker", "--app", app]);
    if let Some(tenant) = &launch.tenant {
        cmd.args(["--tenant", tenant.as_str()]);
    }
    cmd.arg("--vault-dir")
        .arg(&launch.vault_dir)
        .args(["--listen", &listen])
        .arg("--search-config")
        .arg(serde_json::to_string(&launch.search)?)
        .arg("--egress-config")
        .arg(serde_json::to_string(&launch.egress)?)
        // Nothing of the platform's: no database URL, no master key, no admin token.
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(
            "RUST_LOG",
            std::env::var_os("RUST_LOG").unwrap_or_else(|| "info".into()),
        )
        .env(env::BOOT_CREDENTIAL_STDIN, "1")
        .env(env::EXIT_WITH_PARENT, "1")
        .env(env::READY_STDOUT, "1")
        .env(
            env::LOG_FORMAT,
            match launch.log_format {
                crate::config::LogFormat::Json => "json",
                crate::config::LogFormat::Text => "text",
            },
        )
        .stdin(std::process::Stdio::piped())
        // stdout carries the readiness line; the worker's logs go straight to our stderr, in
        // the same format, never re-wrapped.
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    cmd.env(env::VAULT_MOUNT, &launch.vault_location.mount);
    if let Some(pem) = &launch.vault_ca_pem {
        cmd.env(env::VAULT_CA_PEM, pem);
    }
    if let Some(ns) = &launch.vault_location.namespace {
        cmd.env(env::VAULT_NAMESPACE, ns);
    }
    match (&launch.vault_addr, &launch.sandbox) {
        (Some(addr), Some(sb)) => {
            // The vault is reached through the relay on the namespace's link.
            let mut url = reqwest::Url::parse(addr).context("vault address")?;
            url.set_ip_host(sb.gateway_ip.into())
                .map_err(|()| crate::error::Error::msg(format!("vault address {addr}")))?;
            cmd.env(env::VAULT_ADDR, url.as_str().trim_end_matches('/'));
        }
        (Some(addr), None) => {
            cmd.env(env::VAULT_ADDR, addr);
        }
        _ => {}
    }
    if let Some(sb) = &launch.sandbox {
        cmd.env(env::UPSTREAM_HOST, sb.gateway_ip.to_string())
            .env(env::EGRESS_VIA_PROXY, "1");
    }
    if let Some((addr, token)) = &launch.proxy {
        // Grants only what the app's and its tenants' allow-lists already allow.
        cmd.env(env::EGRESS_PROXY, addr.to_string())
            .env(env::EGRESS_PROXY_TOKEN, token.expose());
    }
    compartment.install(&mut cmd);
    let mut child = cmd.spawn().context("spawning the worker")?;
    worker.stats.starts.fetch_add(1, Ordering::Relaxed);
    tracing::info!(%app, tenant = launch.tenant.as_ref().map(|t| t.as_str()), pid = child.id(), "worker started");
    // The credential goes first; then the pipe stays open, unwritten: closing it (with this
    // process) ends the worker.
    let mut stdin = child.stdin.take().context("the worker's stdin")?;
    stdin
        .write_all(format!("{}\n", credential.to_secret_string().expose()).as_bytes())
        .await?;
    stdin.flush().await?;
    drop(credential);
    if let Some(stdout) = child.stdout.take() {
        let worker = worker.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match Ready::parse(&line) {
                    Some(ready) => {
                        if let Ok(mut slot) = worker.session.write() {
                            *slot = ready.vault_session;
                        }
                        worker.set(Some(ready.listening));
                    }
                    None => tracing::warn!(app = %worker.app, "unexpected output from the worker"),
                }
            }
        });
    }
    let mut failures = 0u32;
    let mut checks = tokio::time::interval(launch.health_interval);
    checks.tick().await;
    loop {
        tokio::select! {
            status = child.wait() => return Ok(Exit::Exited(status?)),
            _ = shutdown.changed() => {
                let _ = child.kill().await;
                return Ok(Exit::Shutdown);
            }
            _ = checks.tick() => {
                let Some(addr) = worker.current() else { continue };
                if worker.healthy(addr).await {
                    failures = 0;
                    continue;
                }
                failures += 1;
                worker.stats.health_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%app, failures, "worker health check failed");
                if failures >= launch.health_failures.max(1) {
                    worker.set(None);
                    let _ = child.kill().await;
                    return Ok(Exit::Unhealthy);
                }
            }
        }
    }
}

/// The pooled keep-alive HTTP/1 client the gateway forwards with: hyper's own, so a request
/// passes with its parsed head and its body as they are (no URL re-parsed, no header
/// re-validated, no body re-wrapped).
pub(crate) type Upstream =
    hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Body>;

pub(crate) fn upstream() -> Upstream {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

/// What an app's worker reaches on disk: its files in the embedded vault (read only), its
/// search copies and its local bucket (its own). The executable is filled in at each start.
pub(crate) fn worker_paths(
    config: &crate::config::Config,
    app: &bulkhead_model::AppId,
) -> crate::error::Result<crate::compartment::WorkerPaths> {
    let vault = (config.vault.backend == crate::config::VaultBackend::Embedded)
        .then(|| bulkhead_vault::embedded::app_dir(&config.vault.dir(&config.data_dir), app));
    let mut owned = vec![config.search_dir().join(app.as_str())];
    if config.files.backend == crate::config::FilesBackend::Local {
        let root = config
            .files
            .root
            .clone()
            .unwrap_or_else(|| config.data_dir.join("files"));
        owned.push(root.join(app.as_str()));
    }
    Ok(crate::compartment::WorkerPaths {
        exe: PathBuf::new(),
        vault: vault.map(std::path::absolute).transpose()?,
        owned: owned
            .into_iter()
            .map(std::path::absolute)
            .collect::<std::io::Result<_>>()?,
    })
}

/// Removes what the worker named `space` kept on this host — its search copies, local files
/// and private directory — once it is gone for good (a deleted tenant's own worker).
pub fn remove_worker_dirs(
    config: &crate::config::Config,
    space: &bulkhead_model::AppId,
) -> crate::error::Result<()> {
    let mut dirs = worker_paths(config, space)?.owned;
    dirs.push(crate::compartment::private_dir_in(
        &std::path::absolute(&config.data_dir)?,
        space.as_str(),
    ));
    for dir in dirs {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => tracing::info!(dir = %dir.display(), "removed a gone worker's directory"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", dir.display())),
        }
    }
    Ok(())
}
