//! One app's worker process (`bulkhead worker --app X`), booted with that app's boot
//! credential only. It reads its database credentials and configuration from the app's own
//! vault space (embedded vault or OpenBao), verifies tokens through each tenant's realm — the
//! platform's published keys for local realms, the tenant's own OpenID provider otherwise —
//! and serves the app's REST API, files, search, flags and settings.
//!
//! It must not reach the control plane or the platform's admin credentials: this crate does
//! not depend on `bulkhead-control` (Cargo keeps it so), and everything it knows arrives
//! through the worker contract in `bulkhead_model::worker`.
//!
//! - [`boot`]: the boot credential and reads from the app's vault space.
//! - `live`: tenants, realms, flags and egress lists kept in line with the configuration.

pub mod boot;
mod live;
#[cfg(feature = "hostile-probe")]
mod probe;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bulkhead_egress::EgressSettings;
use bulkhead_model::worker::{CROSS_TENANT_PASSWORD, RUNTIME_PASSWORD, env};
use bulkhead_model::{AppId, Secret};
use bulkhead_pg::{DataPlane, DataPlaneConfig};
use bulkhead_runtime::functions_store::Deployments;
use bulkhead_runtime::http::HttpOut;
use bulkhead_runtime::options::OptionsStore;
use bulkhead_runtime::rest::{Api, PlaneDirectory};
use bulkhead_runtime::{Mode, ResolverConfig, TenantLayer};
use bulkhead_search::{SearchConfig, SearchIndexes};
use bulkhead_vault::BootCredential;
use tokio::net::TcpListener;

use crate::live::{Live, LiveRealms};

/// Where an app's secrets are on OpenBao (mount, namespace).
pub use bulkhead_vault::openbao::Location as VaultLocation;

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("boot credential: {0}")]
    Boot(String),
    #[error("{0}")]
    Vault(String),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Data(#[from] bulkhead_pg::Error),
    #[error(transparent)]
    Files(#[from] bulkhead_files::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to run one app's worker.
#[derive(Debug)]
pub struct WorkerSettings {
    /// The app this worker serves.
    pub app: AppId,
    /// The one tenant it serves, for a `database` tenant's own worker (its vault space is
    /// the tenant's, [`AppId::tenant_space`]); `None` for the app's worker.
    pub tenant: Option<bulkhead_model::TenantId>,
    /// The credential that opens the app's vault space, and nothing else.
    pub boot: BootCredential,
    /// The embedded vault directory (the app's secrets, sealed under its own key).
    pub vault_dir: PathBuf,
    /// The OpenBao / Vault server, for an AppRole boot credential.
    pub vault_addr: Option<String>,
    /// The CA certificates (PEM) the OpenBao server's certificate must lead to.
    pub vault_ca_pem: Option<String>,
    /// Where the app's secrets are on OpenBao (mount, namespace).
    pub vault_location: VaultLocation,
    /// How many times to try the vault before giving up (with exponential backoff).
    pub vault_attempts: u32,
    /// How often to re-read the configuration (tenants created, suspended, deleted).
    pub reload: Duration,
    /// Search settings (the worker's own index copies).
    pub search: SearchConfig,
    /// Egress limits, resolver and app allow-lists.
    pub egress: EgressSettings,
}

/// Boots the worker — vault, configuration, data plane, realms, files, search — calls `ready`
/// with the address it serves on (and its vault session), and serves on `listener` until
/// Ctrl-C.
pub async fn launch(
    settings: WorkerSettings,
    listener: TcpListener,
    ready: impl FnOnce(bulkhead_model::worker::Ready),
) -> Result<()> {
    let WorkerSettings {
        app,
        tenant,
        boot,
        vault_dir,
        vault_addr,
        vault_ca_pem,
        vault_location,
        vault_attempts,
        reload,
        search,
        egress,
    } = settings;
    let space = match &tenant {
        Some(t) => app.tenant_space(t),
        None => app.clone(),
    };
    let reader = bulkhead_vault::open_reader(
        &boot,
        space,
        &vault_dir,
        vault_addr.as_deref(),
        &vault_location,
        vault_ca_pem.as_deref(),
    )
    .map_err(|e| Error::Vault(format!("opening the app's vault space: {e}")))?;
    drop(boot);
    let config = boot::load_config(&*reader, vault_attempts).await?;
    // In a network namespace the database is reached through the relay on its link (dialled
    // by address; the host name stays, for TLS), and only the first host is relayed.
    let reach = bulkhead_pg::router::Reach {
        more_hosts: config.db_more_hosts.clone(),
        read_write: config.db_read_write,
        hostaddr: match std::env::var(env::UPSTREAM_HOST) {
            Ok(relay) => Some(relay.parse().map_err(|_| {
                Error::Config(format!(
                    "{} is not an IP address: {relay}",
                    env::UPSTREAM_HOST
                ))
            })?),
            Err(_) => None,
        },
    };
    if config.manifest.app != app {
        return Err(Error::Config(
            "the vault holds another app's configuration".into(),
        ));
    }
    // A tenant's own worker serves that tenant alone, with its database credential alone: it
    // has no runtime password for the app's database (its shared tables are out of reach).
    let password = match &tenant {
        Some(t) => {
            if config.tenants.iter().any(|w| &w.id != t) {
                return Err(Error::Config(format!(
                    "the vault space of tenant {t} names other tenants"
                )));
            }
            Secret::new(String::new())
        }
        None => boot::read_with_retry(&*reader, RUNTIME_PASSWORD, vault_attempts).await?,
    };
    // The one explicit escape (`cross_tenant(…)`, `db.crossTenant(…)`): its own role, only
    // where the manifest grants reads, and never in a tenant's own worker (row and schema
    // tenants alone are read across; a database tenant's database admits no other role).
    let cross_tenant = match &tenant {
        None if !config.manifest.cross_tenant_reads.is_empty() => Some((
            bulkhead_model::names::cross_tenant_role(&config.manifest.app),
            boot::read_with_retry(&*reader, CROSS_TENANT_PASSWORD, vault_attempts).await?,
        )),
        _ => None,
    };
    let plane = DataPlane::new(
        config.manifest.clone(),
        DataPlaneConfig {
            host: config.db_host.clone(),
            port: config.db_port,
            app_database: config.database.clone(),
            runtime_role: config.runtime_role.clone(),
            runtime_password: password,
            cross_tenant,
            pools: Default::default(),
            tls: config.db_tls.clone(),
            reach,
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
    let http = Arc::new(egress_client(&app, &egress)?);
    let search = SearchIndexes::new(plane.clone(), search);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let deployments = Arc::new(Deployments::new(bulkhead_sandbox::Engine::new(
        (threads * 2).max(4),
    )?));
    let mut live = Live {
        app: app.clone(),
        plane: plane.clone(),
        reader: reader.clone(),
        realms: realms.clone(),
        options: options.clone(),
        http: http.clone(),
        search: search.is_enabled().then(|| search.clone()),
        applied: Vec::new(),
        deployments: deployments.clone(),
        bundle: None,
    };
    live.apply(&config, vault_attempts).await?;
    live.apply_bundle(&config, vault_attempts).await?;
    tokio::spawn(live::reload(live, reload.max(Duration::from_millis(100))));

    let mut api = Api::new(plane.clone(), realms)
        .with_files(boot::files(&*reader, &config, &app, vault_attempts).await?)
        .with_options(options)
        .with_http(http.clone())
        .with_deployments(deployments);
    if search.is_enabled() {
        tracing::info!(app = %app, dir = %search.config().dir.display(), "search: following tenant outboxes");
        tokio::spawn(search.clone().follow());
        api = api.with_search(search);
    }
    let router = routes(&app, Arc::new(api), http, plane, &config);
    let addr = listener.local_addr()?;
    tracing::info!(app = %app, %addr, "worker listening");
    ready(bulkhead_model::worker::Ready {
        listening: addr,
        vault_session: reader.session(),
    });
    // Answers leave at once, not held back by Nagle's algorithm waiting for an ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}

/// App code's outbound HTTP: the app's list from `[egress.apps]`; through the gateway's proxy
/// when the supervisor gave one (in a network namespace, the only way out).
fn egress_client(app: &AppId, settings: &EgressSettings) -> Result<HttpOut> {
    let mut egress = settings
        .egress_for(app)
        .map_err(|e| Error::Config(format!("[egress.apps] of this app: {e}")))?;
    let proxy = match (
        std::env::var(env::EGRESS_PROXY),
        std::env::var(env::EGRESS_PROXY_TOKEN),
    ) {
        (Ok(addr), Ok(token)) => Some((addr, Secret::new(token))),
        _ => None,
    };
    if let (Some(via), Some(_)) = (&proxy, std::env::var_os(env::EGRESS_VIA_PROXY)) {
        egress = egress.through_proxy(via.clone());
    }
    let mut http = HttpOut::new(egress);
    if let Some((addr, token)) = proxy {
        http = http.with_proxy(addr, token);
    }
    Ok(http)
}

/// `/healthz` (with the egress denial counts the supervisor reads for `/metrics`) and, behind
/// tenant resolution, the app's routes; all inside the edge layer.
fn routes(
    app: &AppId,
    api: Arc<Api>,
    http: Arc<HttpOut>,
    plane: DataPlane,
    config: &bulkhead_model::worker::WorkerConfig,
) -> axum::Router {
    let layer = TenantLayer::new(
        ResolverConfig::for_workers(&config.domains, &config.base_domains),
        Arc::new(PlaneDirectory(plane)),
        Mode::Chain,
    );
    let health_app = app.to_string();
    let health_http = http;
    let router = axum::Router::new()
        .route(
            "/healthz",
            axum::routing::get(move || {
                let app = health_app.clone();
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
    #[cfg(feature = "hostile-probe")]
    let router = router
        .route("/__hostile", axum::routing::post(probe::run))
        .route("/t/{tenant}/__hostile", axum::routing::post(probe::run));
    bulkhead_runtime::edge::harden(router)
}

#[cfg(test)]
mod tests {
    /// Invariant 6 by construction: the worker cannot link the control plane or the server,
    /// where the platform's admin credentials and the master key live.
    #[test]
    fn the_worker_does_not_depend_on_the_control_plane_or_the_server() {
        let manifest = include_str!("../Cargo.toml");
        for forbidden in [
            "bulkhead-control",
            "bulkhead-server",
            "bulkhead-cli",
            "bulkhead-vault-admin",
        ] {
            assert!(
                !manifest
                    .lines()
                    .any(|l| l.trim_start().starts_with(forbidden)),
                "{forbidden} must not be a dependency of the worker"
            );
        }
    }

    /// The worker's code names nothing of the vault's admin side or the master key (Cargo
    /// already keeps `bulkhead-vault-admin` out; this catches a re-export or a copy).
    #[test]
    fn the_worker_names_no_admin_side_of_the_vault() {
        let sources = [
            include_str!("lib.rs"),
            include_str!("boot.rs"),
            include_str!("live.rs"),
        ];
        for forbidden in [
            concat!("Vault", "Admin"),
            concat!("Embedded", "Admin"),
            concat!("OpenBao", "Admin"),
            concat!("Master", "Key"),
            concat!("boot_", "credential("),
        ] {
            assert!(
                sources.iter().all(|s| !s.contains(forbidden)),
                "the worker must not use {forbidden}"
            );
        }
    }
}
