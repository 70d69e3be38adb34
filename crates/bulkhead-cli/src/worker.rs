//! `bulkhead worker --app X`: one OS process per app, booted with that app's boot credential
//! only. It reads its database credentials and configuration from the app's own vault space
//! (embedded vault or OpenBao), verifies tokens through each tenant's realm — the platform's
//! published keys for local realms, the tenant's own OpenID provider otherwise — and serves the
//! app's REST API. It never receives the platform's admin credentials or another app's
//! secrets. While it runs it re-reads its configuration every few seconds, so tenants that are
//! created, suspended, resumed or deleted take effect without a restart.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use bulkhead_control::platform::{
    FILES_S3, FILES_SIGNING_KEY, RUNTIME_PASSWORD, WORKER_CONFIG, WorkerConfig, WorkerTenant,
    setting_secret_path, tenant_password_path,
};
use bulkhead_egress::{AllowList, EgressSettings};
use bulkhead_files::AppBucket;
use bulkhead_identity::external::{ExternalRealm, ExternalRealms};
use bulkhead_identity::jwt::Alg;
use bulkhead_model::tenants::IdentitySpec;
use bulkhead_model::{AppId, IsolationLevel, TenantId};
use bulkhead_pg::{DataPlane, DataPlaneConfig, TenantPlacement};
use bulkhead_runtime::auth::{Authenticator, Principal, PublishedRealms};
use bulkhead_runtime::files::{DEFAULT_MAX_BYTES, FilesApi};
use bulkhead_runtime::http::HttpOut;
use bulkhead_runtime::options::{LiveOptions, OptionsStore};
use bulkhead_runtime::rest::{Api, PlaneDirectory};
use bulkhead_runtime::{Mode, ResolverConfig, Strategy, TenantLayer};
use bulkhead_search::{SearchConfig, SearchIndexes};
use bulkhead_vault::{BootCredential, Secret, VaultReader};
use tokio::net::TcpListener;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app this worker serves.
    #[arg(long)]
    app: String,
    /// The embedded vault directory (the app's secrets, sealed under its own key).
    #[arg(long, default_value = ".bulkhead/vault")]
    vault_dir: PathBuf,
    /// The OpenBao / Vault server, for a boot credential of the form approle:<role>:<secret>.
    #[arg(long, env = "BULKHEAD_VAULT_ADDR")]
    vault_addr: Option<String>,
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// How many times to try the vault before giving up (with exponential backoff).
    #[arg(long, default_value_t = 6)]
    vault_attempts: u32,
    /// How often to re-read the configuration (tenants created, suspended, deleted).
    #[arg(long, default_value_t = 2000)]
    reload_ms: u64,
    /// Search settings as JSON (the `[search]` section of bulkhead.toml); defaults otherwise.
    #[arg(long, value_parser = parse_search_config)]
    search_config: Option<SearchConfig>,
    /// Egress settings as JSON (the `[egress]` section of bulkhead.toml); defaults otherwise.
    #[arg(long, value_parser = parse_egress_config)]
    egress_config: Option<EgressSettings>,
}

fn parse_egress_config(raw: &str) -> Result<EgressSettings, String> {
    serde_json::from_str(raw).map_err(|e| format!("--egress-config: {e}"))
}

fn parse_search_config(raw: &str) -> Result<SearchConfig, String> {
    serde_json::from_str(raw).map_err(|e| format!("--search-config: {e}"))
}

/// The boot credential: the first line of stdin when `BULKHEAD_BOOT_CREDENTIAL_STDIN=1` (how
/// a supervisor hands it over), else `BULKHEAD_BOOT_CREDENTIAL`, else the file named by
/// `BULKHEAD_BOOT_CREDENTIAL_FILE`.
fn boot_credential() -> anyhow::Result<BootCredential> {
    let raw = if std::env::var_os("BULKHEAD_BOOT_CREDENTIAL_STDIN").is_some() {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::stdin().lock(), &mut line)
            .context("reading the boot credential from stdin")?;
        line
    } else {
        match std::env::var("BULKHEAD_BOOT_CREDENTIAL") {
            Ok(v) => v,
            Err(_) => {
                let file = std::env::var_os("BULKHEAD_BOOT_CREDENTIAL_FILE").context(
                    "set BULKHEAD_BOOT_CREDENTIAL or BULKHEAD_BOOT_CREDENTIAL_FILE to the app's boot credential",
                )?;
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", PathBuf::from(&file).display()))?
            }
        }
    };
    Ok(BootCredential::parse(&raw)?)
}

async fn read_with_retry(
    reader: &dyn VaultReader,
    name: &str,
    attempts: u32,
) -> anyhow::Result<Secret> {
    let mut delay = Duration::from_millis(200);
    let mut last = None;
    for attempt in 1..=attempts.max(1) {
        match reader.get(name).await {
            Ok(secret) => return Ok(secret),
            // A wrong credential will not get better by waiting.
            Err(e @ (bulkhead_vault::Error::Denied | bulkhead_vault::Error::BadCredential(_))) => {
                anyhow::bail!("the vault refused this worker's boot credential for {name}: {e}")
            }
            Err(e) => {
                tracing::warn!(attempt, error = %e, "vault not readable yet; retrying");
                last = Some(e);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    anyhow::bail!(
        "the vault stayed unreadable after {attempts} attempts: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    )
}

pub fn run(args: Args) -> anyhow::Result<()> {
    crate::config::init_logging(&crate::config::LogConfig::default());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(args))
}

/// Token verification whose realms are replaced when the tenant list changes.
#[derive(Debug, Default)]
struct LiveRealms(RwLock<Option<PublishedRealms>>);

impl LiveRealms {
    fn replace(&self, realms: PublishedRealms) {
        if let Ok(mut slot) = self.0.write() {
            *slot = Some(realms);
        }
    }
}

impl Authenticator for LiveRealms {
    fn authenticate<'a>(
        &'a self,
        tenant: &'a TenantId,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Option<Principal>> + Send + 'a>> {
        let current = self.0.read().ok().and_then(|r| r.clone());
        Box::pin(async move { current?.authenticate(tenant, token).await })
    }
}

/// The realm that verifies a tenant's tokens: its local realm's published keys (EdDSA) or
/// its own OpenID provider (RS256 or EdDSA), for this app as the audience.
fn realm_of(config: &WorkerConfig, tenant: &WorkerTenant) -> ExternalRealm {
    match &tenant.identity {
        IdentitySpec::Local { .. } => {
            let issuer = format!(
                "{}/realms/{}",
                config.realm_base_url.trim_end_matches('/'),
                tenant.id
            );
            ExternalRealm {
                jwks_url: Some(format!("{issuer}/protocol/openid-connect/certs")),
                issuer,
                audience: config.manifest.app.to_string(),
                roles_claim: "roles".into(),
                algorithms: vec![Alg::EdDSA],
                leeway_secs: 30,
            }
        }
        IdentitySpec::Oidc {
            issuer,
            audience,
            jwks_url,
            roles_claim,
        } => ExternalRealm {
            issuer: issuer.clone(),
            jwks_url: jwks_url.clone(),
            audience: audience.clone(),
            roles_claim: roles_claim.clone(),
            algorithms: vec![Alg::RS256, Alg::EdDSA],
            leeway_secs: 30,
        },
    }
}

/// What the worker currently serves.
struct Live {
    app: AppId,
    plane: DataPlane,
    reader: Arc<dyn VaultReader>,
    realms: Arc<LiveRealms>,
    options: Arc<OptionsStore>,
    http: Arc<HttpOut>,
    applied: Vec<WorkerTenant>,
}

impl Live {
    /// Brings the data plane and the realms in line with `config`'s tenant list.
    async fn apply(&mut self, config: &WorkerConfig, attempts: u32) -> anyhow::Result<()> {
        for tenant in &config.tenants {
            let before = self.applied.iter().find(|t| t.id == tenant.id);
            if before == Some(tenant) {
                continue;
            }
            // Flags and settings: replaced in place, secret settings read from the vault.
            let mut secrets = std::collections::BTreeMap::new();
            for name in &tenant.secret_settings {
                let raw = read_with_retry(
                    &*self.reader,
                    &setting_secret_path(&tenant.id, name),
                    attempts,
                )
                .await?;
                secrets.insert(
                    name.clone(),
                    serde_json::from_str(raw.expose()).unwrap_or(serde_json::Value::Null),
                );
            }
            self.options.set(
                tenant.id.clone(),
                LiveOptions {
                    options: tenant.options.clone(),
                    secrets,
                },
            );
            // An invalid list fails closed: the tenant reaches only the app's list.
            let list = AllowList::from_network(&tenant.network.default, &tenant.network.allow)
                .unwrap_or_else(|e| {
                    tracing::error!(app = %self.app, tenant = %tenant.id, error = %e, "invalid network allow-list; denying all");
                    AllowList::default()
                });
            self.http.set(tenant.id.clone(), list);
            // The placement only when it changed: re-registering drops the tenant's pools.
            if before.is_some_and(|b| {
                (b.level, b.suspended, &b.identity)
                    == (tenant.level, tenant.suspended, &tenant.identity)
            }) {
                continue;
            }
            let database_password = if tenant.level == IsolationLevel::Database {
                Some(
                    read_with_retry(&*self.reader, &tenant_password_path(&tenant.id), attempts)
                        .await?,
                )
            } else {
                None
            };
            self.plane.register_tenant(TenantPlacement {
                tenant: tenant.id.clone(),
                level: tenant.level,
                database_password,
                suspended: tenant.suspended,
            });
            tracing::info!(app = %self.app, tenant = %tenant.id, level = tenant.level.as_str(), suspended = tenant.suspended, "tenant loaded");
        }
        for gone in self
            .applied
            .iter()
            .filter(|t| !config.tenants.iter().any(|n| n.id == t.id))
        {
            self.plane.remove_tenant(&gone.id);
            self.options.remove(&gone.id);
            self.http.remove(&gone.id);
            tracing::info!(app = %self.app, tenant = %gone.id, "tenant removed");
        }
        let identities = |ts: &[WorkerTenant]| -> Vec<(TenantId, IdentitySpec)> {
            ts.iter()
                .map(|t| (t.id.clone(), t.identity.clone()))
                .collect()
        };
        if identities(&self.applied) != identities(&config.tenants) || self.applied.is_empty() {
            let realms: HashMap<_, _> = config
                .tenants
                .iter()
                .map(|t| (t.id.clone(), realm_of(config, t)))
                .collect();
            self.realms
                .replace(PublishedRealms(ExternalRealms::new(realms)?));
        }
        self.applied = config.tenants.clone();
        Ok(())
    }
}

async fn load_config(reader: &dyn VaultReader, attempts: u32) -> anyhow::Result<WorkerConfig> {
    serde_json::from_str(
        read_with_retry(reader, WORKER_CONFIG, attempts)
            .await?
            .expose(),
    )
    .context("the worker configuration in the vault is not valid")
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let boot = boot_credential()?;
    if std::env::var_os("BULKHEAD_EXIT_WITH_PARENT").is_some() {
        // The supervisor holds the other end of our stdin: when it goes away, however it
        // ends, the pipe closes and the worker exits instead of lingering.
        std::thread::spawn(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            std::process::exit(0);
        });
    }
    let app = AppId::parse(&args.app)?;
    let reader = bulkhead_vault::open_reader(
        &boot,
        app.clone(),
        &args.vault_dir,
        args.vault_addr.as_deref(),
    )?;
    drop(boot);
    let mut config = load_config(&*reader, args.vault_attempts).await?;
    // In a network namespace the database is reached through the relay on its link.
    if let Ok(host) = std::env::var("BULKHEAD_UPSTREAM_HOST") {
        config.db_host = host;
    }
    anyhow::ensure!(
        config.manifest.app == app,
        "the vault holds another app's configuration"
    );
    let password = read_with_retry(&*reader, RUNTIME_PASSWORD, args.vault_attempts).await?;
    let plane = DataPlane::new(
        config.manifest.clone(),
        DataPlaneConfig {
            host: config.db_host.clone(),
            port: config.db_port,
            app_database: config.database.clone(),
            runtime_role: config.runtime_role.clone(),
            runtime_password: password,
            cross_tenant: None,
            pools: Default::default(),
        },
    )?
    // After `bulkhead app rotate-credentials`, new logins need the password now in the vault.
    .with_password_refresher({
        let reader = reader.clone();
        Arc::new(move || {
            let reader = reader.clone();
            Box::pin(async move { reader.get(RUNTIME_PASSWORD).await.ok() })
        })
    })?;
    let realms = Arc::new(LiveRealms::default());
    let options = Arc::new(OptionsStore::default());
    let mut egress = args
        .egress_config
        .clone()
        .unwrap_or_default()
        .egress_for(&app)
        .context("[egress.apps] of this app")?;
    let proxy = match (
        std::env::var("BULKHEAD_EGRESS_PROXY"),
        std::env::var("BULKHEAD_EGRESS_PROXY_TOKEN"),
    ) {
        (Ok(addr), Ok(token)) => Some((addr, bulkhead_model::Secret::new(token))),
        _ => None,
    };
    // In a network namespace the proxy is the only way out, for app code's requests too (with
    // the same limits; the proxy applies the lists).
    if let (Some(via), Some(_)) = (&proxy, std::env::var_os("BULKHEAD_EGRESS_VIA_PROXY")) {
        egress = egress.through_proxy(via.clone());
    }
    let mut http = HttpOut::new(egress);
    if let Some((addr, token)) = proxy {
        http = http.with_proxy(addr, token);
    }
    let http = Arc::new(http);
    let mut live = Live {
        app: app.clone(),
        plane: plane.clone(),
        reader: reader.clone(),
        realms: realms.clone(),
        options: options.clone(),
        http: http.clone(),
        applied: Vec::new(),
    };
    live.apply(&config, args.vault_attempts).await?;
    tokio::spawn(reload(live, Duration::from_millis(args.reload_ms.max(100))));

    let mut api = Api::new(plane.clone(), realms);
    api.files = files(&*reader, &config, &app, args.vault_attempts).await?;
    api.options = options;
    api.http = http;
    let search = SearchIndexes::new(plane.clone(), args.search_config.unwrap_or_default());
    if search.is_enabled() {
        tracing::info!(app = %app, dir = %search.config().dir.display(), "search: following tenant outboxes");
        tokio::spawn(search.clone().follow());
        api.search = Some(search);
    }
    let api = Arc::new(api);
    let layer = TenantLayer::new(
        ResolverConfig {
            strategies: vec![
                Strategy::PathPrefix,
                Strategy::Header("x-tenant".into()),
                Strategy::Subdomain,
            ],
            domains: if config.domains.is_empty() {
                vec!["127.0.0.1".into(), "localhost".into()]
            } else {
                config.domains.clone()
            },
            base_domains: config.base_domains.clone(),
            ..ResolverConfig::default()
        },
        Arc::new(PlaneDirectory(plane)),
        Mode::Chain,
    );
    let health_app = app.to_string();
    let health_http = api.http.clone();
    let router = axum::Router::new()
        .route(
            "/healthz",
            axum::routing::get(move || {
                let app = health_app.clone();
                // The supervisor reads the egress denial counts from here for `/metrics`.
                let denials = health_http.egress().denials();
                async move {
                    axum::Json(
                        serde_json::json!({"status": "ok", "app": app, "egress_denials": denials}),
                    )
                }
            }),
        )
        .fallback_service(tower::Layer::layer(
            &layer,
            bulkhead_runtime::rest::router(api),
        ));
    let router = bulkhead_runtime::edge::harden(router);
    let listener = TcpListener::bind(args.listen).await?;
    tracing::info!(app = %app, "worker listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}

/// The app's files: its S3 bucket when its vault space holds one, else its local directory;
/// download links signed with the app's key. `None` when neither is configured.
async fn files(
    reader: &dyn VaultReader,
    config: &WorkerConfig,
    app: &AppId,
    attempts: u32,
) -> anyhow::Result<Option<FilesApi>> {
    let bucket = match reader.get(FILES_S3).await {
        Ok(raw) => {
            let mut s3: bulkhead_files::S3Bucket =
                serde_json::from_str(raw.expose()).context("the app's bucket in the vault")?;
            // In a network namespace the object store is reached through the relay on its link.
            if let Ok(host) = std::env::var("BULKHEAD_UPSTREAM_HOST") {
                let mut url = reqwest::Url::parse(&s3.endpoint).context("the bucket's endpoint")?;
                url.set_host(Some(&host)).context("the bucket's endpoint")?;
                s3.endpoint = url.as_str().trim_end_matches('/').to_owned();
            }
            Some(AppBucket::s3(app, &s3)?)
        }
        Err(bulkhead_vault::Error::NotFound(_)) => match &config.files_root {
            Some(root) => Some(AppBucket::local(root, app)?),
            None => None,
        },
        Err(e) => return Err(e).context("reading the app's bucket from the vault"),
    };
    let Some(bucket) = bucket else {
        return Ok(None);
    };
    let key = read_with_retry(reader, FILES_SIGNING_KEY, attempts).await?;
    let key = bulkhead_vault::decode_key(key.expose()).context("the app's file signing key")?;
    Ok(Some(FilesApi::new(bucket, key, DEFAULT_MAX_BYTES)))
}

/// Re-reads the configuration every `every` and applies tenant changes. A vault that is
/// briefly unreadable keeps the last good state.
async fn reload(mut live: Live, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let config = match live.reader.get(WORKER_CONFIG).await {
            Ok(raw) => match serde_json::from_str::<WorkerConfig>(raw.expose()) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "the worker configuration in the vault is not valid; keeping the last one");
                    continue;
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot re-read the worker configuration; keeping the last one");
                continue;
            }
        };
        if config.tenants != live.applied
            && let Err(e) = live.apply(&config, 1).await
        {
            tracing::warn!(error = %e, "applying the new tenant list failed; retrying");
        }
    }
}
