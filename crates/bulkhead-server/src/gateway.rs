//! The platform side of a running server (`Gateway`): the control plane, the vault, the local
//! realms, each app's worker configuration in its vault space, and the supervised workers.

use crate::config::Config;
use crate::egress_proxy::EgressProxy;
use crate::error::Context;
use crate::routes::{Routes, metrics, route};
use crate::supervise::{self, Launch, WorkerHandle};
use axum::Router;
use bulkhead_control::platform::{Platform, WorkerConfig};
use bulkhead_control::registry;
use bulkhead_identity::store::{RealmSettings, RealmStore};
use bulkhead_model::{AppManifest, TenantId};
use bulkhead_runtime::TenantDirectory;
use bulkhead_runtime::realms::Realms;
use deadpool_postgres::Pool;
use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The platform side of a running server: control plane, vault, local realms.
pub struct Gateway {
    pub platform: Platform,
    pub realms: RealmStore,
    pub(crate) pool: Pool,
    pub(crate) db: bulkhead_pg::PgConfig,
    pub(crate) public_url: String,
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
        db: bulkhead_pg::PgConfig,
        public_url: &str,
        create_master_key: bool,
    ) -> crate::error::Result<Self> {
        let master = crate::platform::master_key(config, create_master_key)?;
        let platform = crate::platform::platform_at(config, db.clone(), master).await?;
        let pool = crate::health::platform_pool(db.clone())
            .map_err(crate::error::Error::msg)
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
            .map_err(|e| crate::error::Error::msg(format!("preparing the realm store: {e}")))?;
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
    pub(crate) async fn apps(&self, config: &Config) -> crate::error::Result<Vec<AppManifest>> {
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
            crate::error::ensure!(
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
        hooks: &crate::Hooks,
        compartments: &Arc<crate::compartment::Compartments>,
    ) -> crate::error::Result<(Router, Vec<WorkerHandle>)> {
        let mut more_hosts = tcp_hosts(&self.db);
        let (db_host, db_port) = if more_hosts.is_empty() {
            ("127.0.0.1".to_owned(), 5432)
        } else {
            more_hosts.remove(0)
        };
        let read_write = self.db.get_target_session_attrs()
            == tokio_postgres::config::TargetSessionAttrs::ReadWrite;
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
        let mut templates = Vec::new();
        let mut selectors = std::collections::BTreeMap::new();
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
            selectors.insert(
                manifest.app.to_string(),
                bulkhead_runtime::TenantSelector::new(
                    bulkhead_runtime::ResolverConfig::for_workers(&domains, &base_domains),
                ),
            );
            // What the worker needs, in the app's own vault space; tenants from the registry.
            self.platform
                .publish_worker_config(WorkerConfig {
                    db_host: db_host.clone(),
                    db_port,
                    db_tls: self.db.tls().spec().for_worker(),
                    db_more_hosts: more_hosts.clone(),
                    db_read_write: read_write,
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
                    // The active bundle, from the registry, also by `publish_worker_config`.
                    bundle: None,
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
            let launch = Launch {
                app: manifest.app.clone(),
                tenant: None,
                vault: self.platform.vault.clone(),
                vault_dir: std::path::absolute(config.vault.dir(&config.data_dir))?,
                vault_addr: config.vault.address.clone(),
                vault_ca_pem: config.vault.ca_pem()?,
                vault_location: config.vault.location(),
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
                exe: hooks.worker_exe.clone(),
                compartments: compartments.clone(),
                paths: supervise::worker_paths(config, &manifest.app)?,
            };
            templates.push(launch.clone());
            workers.push(supervise::spawn(launch, shutdown.clone())?);
        }
        // `database` tenants with a worker of their own, following the registry.
        let tenant_workers = Arc::new(crate::tenant_workers::TenantWorkers::new(proxy.clone()));
        tenant_workers
            .start(
                self.pool.clone(),
                templates,
                Arc::new(config.clone()),
                shutdown.clone(),
            )
            .await;
        for worker in workers.iter().chain(&tenant_workers.handles()) {
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
        let canary = hooks
            .canary
            .as_ref()
            .filter(|_| config.serve.canary_interval_secs > 0)
            .map(|start| {
                start(
                    config,
                    Duration::from_secs(config.serve.canary_interval_secs),
                )
            });
        let routes = Arc::new(Routes {
            workers: workers.clone(),
            tenant_workers,
            selectors,
            hosts: config.serve.hosts.clone(),
            proxy: proxy.clone(),
            canary,
            metrics_token: metrics_token(config)?,
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

/// `[serve] metrics_token_file`'s token.
fn metrics_token(config: &Config) -> crate::error::Result<Option<crate::bearer::BearerToken>> {
    let Some(file) = &config.serve.metrics_token_file else {
        return Ok(None);
    };
    let token = std::fs::read_to_string(file)
        .with_context(|| format!("reading serve.metrics_token_file {}", file.display()))?;
    crate::bearer::BearerToken::new(
        &token,
        &format!("serve.metrics_token_file {}", file.display()),
    )
    .map(Some)
}

/// The TCP hosts of a PostgreSQL configuration in order, with their ports (one port for all
/// hosts, or one each, as tokio-postgres reads them): where the apps' databases are.
pub(crate) fn tcp_hosts(db: &tokio_postgres::Config) -> Vec<(String, u16)> {
    let ports = db.get_ports();
    db.get_hosts()
        .iter()
        .enumerate()
        .filter_map(|(i, h)| match h {
            tokio_postgres::config::Host::Tcp(h) => {
                let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                Some((h.clone(), port))
            }
            #[allow(unreachable_patterns)]
            _ => None,
        })
        .collect()
}

/// The active tenants of every app, re-read from the registry every two seconds, so realm
/// endpoints stop answering for a suspended or deleted tenant without a restart.
#[derive(Debug, Clone)]
pub(crate) struct RegistryTenants(Arc<RwLock<HashSet<TenantId>>>);

impl RegistryTenants {
    /// Reads the active tenants once (so the realm endpoints answer from the first request),
    /// then every two seconds.
    pub(crate) async fn start(pool: Pool) -> Self {
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

pub(crate) async fn active_tenants(pool: &Pool) -> crate::error::Result<HashSet<TenantId>> {
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

/// What an isolated worker must still reach, relayed from its link: its PostgreSQL, and the
/// vault and S3 endpoints when they are servers.
pub(crate) async fn upstreams(
    config: &Config,
    db_host: &str,
    db_port: u16,
) -> crate::error::Result<Vec<std::net::SocketAddr>> {
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
