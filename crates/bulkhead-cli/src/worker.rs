//! `bulkhead worker --app X`: one OS process per app, booted with that app's boot credential
//! only. It reads its database credentials and configuration from the app's own vault space,
//! verifies tokens through the realms' published keys, and serves the app's REST API. It never
//! receives the platform's admin credentials or another app's secrets.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bulkhead_control::platform::{
    RUNTIME_PASSWORD, WORKER_CONFIG, WorkerConfig, tenant_password_path,
};
use bulkhead_identity::external::{ExternalRealm, ExternalRealms};
use bulkhead_identity::jwt::Alg;
use bulkhead_model::{AppId, IsolationLevel};
use bulkhead_pg::{DataPlane, DataPlaneConfig, TenantPlacement};
use bulkhead_runtime::auth::PublishedRealms;
use bulkhead_runtime::rest::{Api, PlaneDirectory};
use bulkhead_runtime::{Mode, ResolverConfig, Strategy, TenantLayer};
use bulkhead_vault::embedded::EmbeddedReader;
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
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// How many times to try the vault before giving up (with exponential backoff).
    #[arg(long, default_value_t = 6)]
    vault_attempts: u32,
}

/// The boot credential from `BULKHEAD_BOOT_CREDENTIAL` or the file named by
/// `BULKHEAD_BOOT_CREDENTIAL_FILE`.
fn boot_credential() -> anyhow::Result<BootCredential> {
    let raw = match std::env::var("BULKHEAD_BOOT_CREDENTIAL") {
        Ok(v) => v,
        Err(_) => {
            let file = std::env::var_os("BULKHEAD_BOOT_CREDENTIAL_FILE").context(
                "set BULKHEAD_BOOT_CREDENTIAL or BULKHEAD_BOOT_CREDENTIAL_FILE to the app's boot credential",
            )?;
            std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", PathBuf::from(&file).display()))?
        }
    };
    Ok(BootCredential::parse(&raw)?)
}

async fn read_with_retry(
    reader: &EmbeddedReader,
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

async fn serve(args: Args) -> anyhow::Result<()> {
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
    let boot = boot_credential()?;
    let reader = EmbeddedReader::open(&args.vault_dir, app.clone(), &boot)?;
    let config: WorkerConfig = serde_json::from_str(
        read_with_retry(&reader, WORKER_CONFIG, args.vault_attempts)
            .await?
            .expose(),
    )
    .context("the worker configuration in the vault is not valid")?;
    anyhow::ensure!(
        config.manifest.app == app,
        "the vault holds another app's configuration"
    );
    let password = read_with_retry(&reader, RUNTIME_PASSWORD, args.vault_attempts).await?;
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
    let mut realms = HashMap::new();
    for (tenant, level) in &config.tenants {
        let database_password = if *level == IsolationLevel::Database {
            let p = read_with_retry(&reader, &tenant_password_path(tenant), args.vault_attempts)
                .await?;
            Some(p)
        } else {
            None
        };
        plane.register_tenant(TenantPlacement {
            tenant: tenant.clone(),
            level: *level,
            database_password,
            suspended: false,
        });
        let issuer = format!(
            "{}/realms/{tenant}",
            config.realm_base_url.trim_end_matches('/')
        );
        realms.insert(
            tenant.clone(),
            ExternalRealm {
                jwks_url: format!("{issuer}/protocol/openid-connect/certs"),
                issuer,
                audience: app.to_string(),
                roles_claim: "roles".into(),
                algorithms: vec![Alg::EdDSA],
                leeway_secs: 30,
            },
        );
    }
    let auth = Arc::new(PublishedRealms(ExternalRealms::new(realms)?));
    let api = Arc::new(Api::new(plane.clone(), auth));
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
    let router = axum::Router::new().fallback_service(tower::Layer::layer(
        &layer,
        bulkhead_runtime::rest::router(api),
    ));
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
