//! `bulkhead serve`: the production mode, and the gateway half that `bulkhead up` shares.
//!
//! Configuration comes from `bulkhead.toml` (platform database, vault backend, routing). The
//! gateway holds the platform's credentials; each registered app runs in its own supervised
//! `bulkhead worker` process that holds only that app's boot credential. Requests reach an app
//! under `/apps/<app>/`, by a host name routed to it, or — when one app runs — directly; the
//! gateway itself serves the local realms (`/realms/<tenant>/…`), `/healthz`, `/readyz` and
//! `/metrics`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, Uri};
use axum::response::{IntoResponse, Response};
use bulkhead_control::platform::{Platform, WorkerConfig};
use bulkhead_control::registry;
use bulkhead_identity::store::{RealmSettings, RealmStore};
use bulkhead_model::{AppManifest, TenantId};
use bulkhead_runtime::TenantDirectory;
use bulkhead_runtime::realms::Realms;
use deadpool_postgres::Pool;
use sha2::Digest;
use tokio::net::TcpListener;

use crate::config::{self, Config, Overrides, Secret};
use crate::supervise::{self, Launch, WorkerHandle};

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
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(async {
            let db = crate::audit::platform_db(&config)?;
            run_gateway(&config, db, Mode::Serve).await
        })
}

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
    db: tokio_postgres::Config,
    mode: Mode,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let public_url = config
        .serve
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
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
    let (mut router, workers) = gateway.start(config, stopped).await?;
    if let Some(file) = &config.serve.admin_token_file {
        let token = std::fs::read_to_string(file)
            .with_context(|| format!("reading serve.admin_token_file {}", file.display()))?;
        let master = crate::app::master_key(config, false)?;
        let platform = crate::app::platform_at(config, gateway.db.clone(), master).await?;
        let admin = crate::admin::AdminApi::new(platform, &token)
            .with_context(|| format!("serve.admin_token_file {}", file.display()))?;
        router = crate::admin::router(Arc::new(admin)).merge(router);
        tracing::info!("admin API enabled under /admin/v1/");
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
        "{label}: listening on http://{addr}"
    );
    // For supervisors and tests: the address on stdout as the worker contract's readiness
    // line, so nothing has to read the log.
    if std::env::var_os(bulkhead_model::worker::env::READY_STDOUT).is_some() {
        use std::io::Write;
        let line = bulkhead_model::worker::Ready { listening: addr }.line();
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
    }
    let result = bulkhead_gateway::launch(
        listener,
        bulkhead_gateway::AppState::new(gateway.pool()),
        // Request ids (forwarded to the workers), caught panics, JSON refusals.
        bulkhead_runtime::edge::harden(router),
        shutdown_signal(),
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

/// Completes on Ctrl-C (SIGINT) or SIGTERM.
async fn shutdown_signal() {
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

/// The platform side of a running server: control plane, vault, local realms.
pub struct Gateway {
    pub platform: Platform,
    pub realms: RealmStore,
    pool: Pool,
    db: tokio_postgres::Config,
    public_url: String,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Connects to the platform database and the vault and opens the realm store. With
    /// `create_master_key` (embedded `up` only) a missing master key is generated.
    pub async fn open(
        config: &Config,
        db: tokio_postgres::Config,
        public_url: &str,
        create_master_key: bool,
    ) -> anyhow::Result<Self> {
        let master = crate::app::master_key(config, create_master_key)?;
        let platform = crate::app::platform_at(config, db.clone(), master).await?;
        let pool = bulkhead_gateway::platform_pool(db.clone())
            .map_err(anyhow::Error::msg)
            .context("creating the platform database pool")?;
        let realms = RealmStore::new(
            pool.clone(),
            master,
            RealmSettings {
                base_url: public_url.to_owned(),
                ..RealmSettings::default()
            },
        );
        realms
            .migrate()
            .await
            .map_err(|e| anyhow::anyhow!("preparing the realm store: {e}"))?;
        Ok(Self {
            platform,
            realms,
            pool,
            db,
            public_url: public_url.to_owned(),
        })
    }

    /// A small pool to the platform database (readiness probes).
    pub fn pool(&self) -> Pool {
        self.pool.clone()
    }

    /// The apps to run: `serve.apps` or every registered app.
    async fn apps(&self, config: &Config) -> anyhow::Result<Vec<AppManifest>> {
        let registered = registry::apps(&self.platform.client).await?;
        let mut apps = Vec::new();
        for (id, manifest) in &registered {
            if config
                .serve
                .apps
                .as_ref()
                .is_none_or(|only| only.contains(id))
            {
                apps.push(serde_json::from_value::<AppManifest>(manifest.clone())?);
            }
        }
        for wanted in config.serve.apps.iter().flatten() {
            anyhow::ensure!(
                registered.iter().any(|(id, _)| id == wanted),
                "serve.apps names {wanted}, which is not a registered app"
            );
        }
        Ok(apps)
    }

    /// Publishes each app's worker configuration, starts and supervises the workers, and
    /// returns the routes: realms, metrics and the apps.
    pub async fn start(
        &self,
        config: &Config,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<(Router, Vec<WorkerHandle>)> {
        let (db_host, db_port) = host_port(&self.db);
        let domains = if config.serve.domains.is_empty() {
            vec!["127.0.0.1".to_owned(), "localhost".to_owned()]
        } else {
            config.serve.domains.clone()
        };
        let base_domains = if config.serve.base_domains.is_empty() {
            vec!["localhost".to_owned()]
        } else {
            config.serve.base_domains.clone()
        };
        let apps = self.apps(config).await?;
        let isolate = config.serve.isolate_network;
        if isolate {
            crate::isolate::preflight()?;
        }
        let proxy = if isolate || config.egress.proxy_listen.is_some() {
            Some(
                EgressProxy::start(config.egress.proxy_listen, &apps, config, self.pool.clone())
                    .await?,
            )
        } else {
            None
        };
        let mut workers = Vec::new();
        for manifest in &apps {
            // The worker resolves tenants on the hosts routed to it as well.
            let mut domains = domains.clone();
            domains.extend(
                config
                    .serve
                    .hosts
                    .iter()
                    .filter(|(_, app)| *app == manifest.app.as_str())
                    .map(|(host, _)| host.clone()),
            );
            // What the worker needs, in the app's own vault space; tenants from the registry.
            self.platform
                .publish_worker_config(WorkerConfig {
                    db_host: db_host.clone(),
                    db_port,
                    database: bulkhead_model::names::app_database(&manifest.app),
                    runtime_role: bulkhead_model::names::runtime_role(&manifest.app),
                    manifest: manifest.clone(),
                    realm_base_url: self.public_url.clone(),
                    // Filled from the registry by `publish_worker_config`.
                    tenants: Vec::new(),
                    domains,
                    base_domains: base_domains.clone(),
                    files_root: Some(std::path::absolute(
                        config
                            .files
                            .root
                            .clone()
                            .unwrap_or_else(|| config.data_dir.join("files")),
                    )?),
                })
                .await?;
            self.platform
                .ensure_files_signing_key(&manifest.app)
                .await?;
            let (sandbox, sandbox_proxy) = match (&proxy, isolate) {
                (Some(proxy), true) => {
                    let index = u8::try_from(workers.len())
                        .context("--isolate-network runs at most 256 apps")?;
                    let sandbox = crate::isolate::Sandbox::create(index, &manifest.app)?;
                    for upstream in upstreams(config, &db_host, db_port).await? {
                        sandbox.relay(upstream).await?;
                    }
                    let at = sandbox.proxy(proxy.clone()).await?;
                    (Some(sandbox), Some(at))
                }
                _ => (None, None),
            };
            workers.push(supervise::spawn(
                Launch {
                    app: manifest.app.clone(),
                    vault: self.platform.vault.clone(),
                    vault_dir: std::path::absolute(config.vault.dir(&config.data_dir))?,
                    vault_addr: config.vault.address.clone(),
                    health_interval: Duration::from_secs(config.serve.health_interval_secs.max(1)),
                    health_failures: config.serve.health_failures,
                    search: bulkhead_search::SearchConfig {
                        dir: std::path::absolute(config.search_dir())?,
                        ..config.search.clone()
                    },
                    egress: config.egress.clone(),
                    proxy: proxy
                        .as_ref()
                        .and_then(|p| p.for_app(&manifest.app, sandbox_proxy)),
                    sandbox,
                    log_format: config.log.format,
                },
                shutdown.clone(),
            )?);
        }
        for worker in &workers {
            if !worker.ready(Duration::from_secs(60)).await {
                tracing::warn!(
                    app = worker.app(),
                    "the worker did not start within 60 s; its requests get 503 until it does"
                );
            }
        }
        let directory = RegistryTenants::start(self.pool.clone()).await;
        let realms = bulkhead_runtime::realms::router(Arc::new(Realms {
            store: self.realms.clone(),
            directory: Arc::new(directory),
            clients: apps.iter().map(|m| m.app.to_string()).collect(),
            secure_cookies: self.public_url.starts_with("https://"),
        }));
        let canary = (config.serve.canary_interval_secs > 0).then(|| {
            crate::verify::Canary::start(
                config.clone(),
                Duration::from_secs(config.serve.canary_interval_secs),
            )
        });
        let routes = Arc::new(Routes {
            workers: workers.clone(),
            hosts: config.serve.hosts.clone(),
            proxy: proxy.clone(),
            canary,
        });
        let router = realms
            .route(
                "/metrics",
                axum::routing::get(metrics).with_state(routes.clone()),
            )
            .fallback_service(Router::new().fallback(route).with_state(routes));
        Ok((router, workers))
    }
}

/// The first host and port of a PostgreSQL configuration (where the apps' databases are).
fn host_port(db: &tokio_postgres::Config) -> (String, u16) {
    let host = db
        .get_hosts()
        .iter()
        .find_map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => Some(h.clone()),
            #[allow(unreachable_patterns)]
            _ => None,
        })
        .unwrap_or_else(|| "127.0.0.1".into());
    (host, db.get_ports().first().copied().unwrap_or(5432))
}

/// The active tenants of every app, re-read from the registry every two seconds, so realm
/// endpoints stop answering for a suspended or deleted tenant without a restart.
#[derive(Debug, Clone)]
struct RegistryTenants(Arc<RwLock<HashSet<TenantId>>>);

impl RegistryTenants {
    /// Reads the active tenants once (so the realm endpoints answer from the first request),
    /// then every two seconds.
    async fn start(pool: Pool) -> Self {
        let set = Self(Arc::default());
        match active_tenants(&pool).await {
            Ok(active) => {
                if let Ok(mut slot) = set.0.write() {
                    *slot = active;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the active tenants"),
        }
        let shared = set.0.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                match active_tenants(&pool).await {
                    Ok(active) => {
                        if let Ok(mut slot) = shared.write() {
                            *slot = active;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot re-read the active tenants"),
                }
            }
        });
        set
    }
}

async fn active_tenants(pool: &Pool) -> anyhow::Result<HashSet<TenantId>> {
    let client = pool.get().await?;
    Ok(registry::active_tenant_ids(&**client)
        .await?
        .iter()
        .filter_map(|id| TenantId::parse(id).ok())
        .collect())
}

impl TenantDirectory for RegistryTenants {
    fn is_active(&self, tenant: &TenantId) -> bool {
        self.0.read().is_ok_and(|s| s.contains(tenant))
    }
}

/// One app behind the proxy: its token (and the token's digest, compared per request).
#[derive(Debug)]
struct ProxyApp {
    app: bulkhead_model::AppId,
    token: Secret,
    digest: [u8; 32],
    egress: Arc<bulkhead_egress::Egress>,
}

/// The egress CONNECT proxy: one token per app (fresh at each start), each app's egress, and
/// every tenant's allow-list, re-read from the registry every two seconds.
#[derive(Debug)]
struct EgressProxy {
    addr: Option<std::net::SocketAddr>,
    apps: Vec<ProxyApp>,
    lists: RwLock<std::collections::HashMap<(String, String), bulkhead_egress::AllowList>>,
}

impl EgressProxy {
    async fn start(
        listen: Option<std::net::SocketAddr>,
        apps: &[AppManifest],
        config: &Config,
        pool: Pool,
    ) -> anyhow::Result<Arc<Self>> {
        let listener = match listen {
            Some(listen) => Some(
                TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("binding egress.proxy_listen {listen}"))?,
            ),
            None => None,
        };
        let addr = listener.as_ref().map(TcpListener::local_addr).transpose()?;
        let mut entries = Vec::new();
        for m in apps {
            let egress = config
                .egress
                .egress_for(&m.app)
                .with_context(|| format!("[egress.apps] {}", m.app))?;
            let token = bulkhead_pg::provision::generate_password();
            entries.push(ProxyApp {
                app: m.app.clone(),
                digest: sha2::Sha256::digest(token.expose().as_bytes()).into(),
                token,
                egress: Arc::new(egress),
            });
        }
        let proxy = Arc::new(Self {
            addr,
            apps: entries,
            lists: RwLock::default(),
        });
        proxy.refresh(&pool).await?;
        if let Some(listener) = listener {
            tokio::spawn(bulkhead_egress::proxy::serve(listener, proxy.clone()));
            if let Some(addr) = addr {
                tracing::info!("egress proxy listening on {addr}");
            }
        }
        let refresher = proxy.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                if let Err(e) = refresher.refresh(&pool).await {
                    tracing::warn!(error = %e, "egress proxy: cannot re-read tenants");
                }
            }
        });
        Ok(proxy)
    }

    async fn refresh(&self, pool: &Pool) -> anyhow::Result<()> {
        let client = pool.get().await?;
        let mut lists = std::collections::HashMap::new();
        for ProxyApp { app, .. } in &self.apps {
            for t in registry::tenants(&**client, app).await? {
                if t.status != registry::ACTIVE {
                    continue;
                }
                let spec: bulkhead_model::tenants::NetworkSpec =
                    serde_json::from_value(t.network.clone()).unwrap_or_default();
                let list = bulkhead_egress::AllowList::from_network(&spec.default, &spec.allow)
                    .unwrap_or_default();
                lists.insert((app.to_string(), t.id.clone()), list);
            }
        }
        if let Ok(mut slot) = self.lists.write() {
            *slot = lists;
        }
        Ok(())
    }

    /// The proxy address for `app` (its namespace's, when isolated) and its token.
    fn for_app(
        &self,
        app: &bulkhead_model::AppId,
        at: Option<std::net::SocketAddr>,
    ) -> Option<(std::net::SocketAddr, bulkhead_model::Secret)> {
        let addr = at.or(self.addr)?;
        self.apps
            .iter()
            .find(|a| &a.app == app)
            .map(|a| (addr, a.token.clone()))
    }
}

impl bulkhead_egress::proxy::ProxyPolicy for EgressProxy {
    fn egress_for_token(&self, token: &str) -> Option<Arc<bulkhead_egress::Egress>> {
        // Compare digests: the timing says nothing about the tokens.
        let given: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        self.apps
            .iter()
            .find(|a| a.digest == given)
            .map(|a| a.egress.clone())
    }

    fn tenant_list(
        &self,
        egress: &bulkhead_egress::Egress,
        tenant: &TenantId,
    ) -> Option<bulkhead_egress::AllowList> {
        self.lists
            .read()
            .ok()?
            .get(&(egress.app().to_string(), tenant.to_string()))
            .cloned()
    }
}

/// What an isolated worker must still reach, relayed from its link: its PostgreSQL, and the
/// vault and S3 endpoints when they are servers.
async fn upstreams(
    config: &Config,
    db_host: &str,
    db_port: u16,
) -> anyhow::Result<Vec<std::net::SocketAddr>> {
    let mut wanted = vec![(db_host.to_owned(), db_port)];
    for url in [&config.vault.address, &config.files.s3_endpoint]
        .into_iter()
        .flatten()
    {
        let u = reqwest::Url::parse(url).with_context(|| format!("parsing {url}"))?;
        if let (Some(h), Some(p)) = (u.host_str(), u.port_or_known_default()) {
            wanted.push((h.to_owned(), p));
        }
    }
    let mut out = Vec::new();
    for (host, port) in wanted {
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await?
            .next()
            .with_context(|| format!("{host} does not resolve"))?;
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    Ok(out)
}

/// Which worker answers which request.
#[derive(Debug)]
struct Routes {
    workers: Vec<WorkerHandle>,
    /// Host name → app.
    hosts: BTreeMap<String, String>,
    /// The egress proxy, for its denial counts.
    proxy: Option<Arc<EgressProxy>>,
    /// The verify canary, for its last results.
    canary: Option<Arc<crate::verify::Canary>>,
}

impl Routes {
    fn worker(&self, app: &str) -> Option<&WorkerHandle> {
        self.workers.iter().find(|w| w.app() == app)
    }

    /// The worker for a request and the path it should see.
    fn pick(&self, req: &Request<Body>) -> Option<(&WorkerHandle, Option<Uri>)> {
        let path = req.uri().path();
        if let Some(rest) = path.strip_prefix("/apps/") {
            let (app, tail) = rest.split_once('/').unwrap_or((rest, ""));
            let worker = self.worker(app)?;
            let query = req
                .uri()
                .query()
                .map(|q| format!("?{q}"))
                .unwrap_or_default();
            let uri = format!("/{tail}{query}").parse().ok()?;
            return Some((worker, Some(uri)));
        }
        let host = req
            .headers()
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name))
            .unwrap_or_default();
        if let Some(app) = self.hosts.get(host) {
            return Some((self.worker(app)?, None));
        }
        match self.workers.as_slice() {
            [only] => Some((only, None)),
            _ => None,
        }
    }
}

async fn route(State(routes): State<Arc<Routes>>, mut req: Request<Body>) -> Response {
    let Some((worker, uri)) = routes.pick(&req) else {
        return bulkhead_runtime::error::ApiError::new(
            bulkhead_model::ErrorCode::NotFound,
            "no app is routed here: use /apps/<app>/ or a host routed to an app",
        )
        .into_response();
    };
    if let Some(uri) = uri {
        *req.uri_mut() = uri;
    }
    supervise::forward(worker, req).await
}

/// Prometheus text: one family at a time, a sample per app.
async fn metrics(State(routes): State<Arc<Routes>>) -> Response {
    use std::fmt::Write;
    const FAMILIES: [(&str, &str, &str); 4] = [
        (
            "bulkhead_worker_up",
            "gauge",
            "Whether the app's worker is listening.",
        ),
        (
            "bulkhead_worker_starts_total",
            "counter",
            "Worker processes started.",
        ),
        (
            "bulkhead_worker_health_failures_total",
            "counter",
            "Failed worker health checks.",
        ),
        (
            "bulkhead_worker_unhealthy_restarts_total",
            "counter",
            "Workers killed after failing their health checks.",
        ),
    ];
    let samples: Vec<_> = routes
        .workers
        .iter()
        .map(|w| (w.app(), w.samples()))
        .collect();
    let mut out = String::new();
    for (i, (name, kind, help)) in FAMILIES.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (app, values) in &samples {
            let _ = writeln!(out, "{name}{{app=\"{app}\"}} {}", values[i].1);
        }
    }
    let _ = writeln!(
        out,
        "# HELP bulkhead_egress_denials_total Outbound requests refused, by app, where (worker or proxy) and reason.\n# TYPE bulkhead_egress_denials_total counter"
    );
    for w in &routes.workers {
        for (reason, n) in w.egress_denials() {
            let _ = writeln!(
                out,
                "bulkhead_egress_denials_total{{app=\"{}\",source=\"worker\",reason=\"{reason}\"}} {n}",
                w.app()
            );
        }
    }
    if let Some(canary) = &routes.canary {
        out.push_str(&canary.metrics());
    }
    for ProxyApp { app, egress, .. } in routes.proxy.iter().flat_map(|p| p.apps.iter()) {
        for (reason, n) in egress.denials() {
            let _ = writeln!(
                out,
                "bulkhead_egress_denials_total{{app=\"{app}\",source=\"proxy\",reason=\"{reason}\"}} {n}"
            );
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
        .into_response()
}
