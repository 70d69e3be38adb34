//! The example app `bulkhead up` serves: `examples/helpdesk` for three demo tenants, `acme`
//! (row level), `globex` (schema level) and `initech` (database level), each with its own realm
//! and demo users.
//!
//! Embedded first-run mode only: it provisions with the cluster's superuser through the control
//! plane (recorded steps, audit), keeps generated passwords in the embedded vault under
//! `<data_dir>/vault` and the master key in `<data_dir>/master.key` (mode 0600; in production
//! keep the master key off the data disk).

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use bulkhead_control::platform::{CROSS_TENANT_PASSWORD, Platform, RUNTIME_PASSWORD, WorkerConfig};
use bulkhead_identity::store::{RealmSettings, RealmStore, StoreError};
use bulkhead_model::{AppManifest, IsolationLevel, TenantId};
use bulkhead_pg::{DataPlane, DataPlaneConfig, Provisioner, TenantPlacement};
use bulkhead_runtime::auth::LocalRealms;
use bulkhead_runtime::realms::Realms;
use bulkhead_runtime::rest::{Api, PlaneDirectory};
use bulkhead_runtime::{Mode, ResolverConfig, Strategy, TenantLayer};
use bulkhead_vault::embedded::{EmbeddedAdmin, EmbeddedReader, MasterKey};
use bulkhead_vault::{Secret as VaultSecret, VaultAdmin, VaultReader};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

const MANIFEST: &str = include_str!("../../../examples/helpdesk/manifest.yaml");

/// Demo tenants and their isolation levels: one at each level.
pub const TENANTS: &[(&str, IsolationLevel)] = &[
    ("acme", IsolationLevel::Row),
    ("globex", IsolationLevel::Schema),
    ("initech", IsolationLevel::Database),
];

/// Hosts the demo serves, and the base domain of tenant subdomains (`acme.localhost`).
const DOMAINS: &[&str] = &["127.0.0.1", "localhost"];
const BASE_DOMAINS: &[&str] = &["localhost"];

/// Demo users: (name, roles).
const USERS: &[(&str, &[&str])] = &[("alice", &["agent"]), ("bob", &["customer"])];

/// The demo password of a user in a tenant (local, loopback-only demo).
pub fn demo_password(tenant: &str, user: &str) -> String {
    format!("{user}-at-{tenant}")
}

fn load_or_create_master_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(bytes) = std::fs::read(path) {
        return bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("{} must hold exactly 32 bytes", path.display()));
    }
    let key: [u8; 32] = rand::random();
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(&key)?;
    Ok(key)
}

/// Provisions the example app (idempotently) and returns its routes.
pub async fn start(
    data_dir: &Path,
    platform: tokio_postgres::Config,
    base_url: &str,
) -> anyhow::Result<Router> {
    let manifest = AppManifest::from_yaml(MANIFEST, "examples/helpdesk/manifest.yaml")?;
    let mut admin = platform.clone();
    admin.dbname("postgres");
    let prov = Provisioner::new(admin.clone());
    // Provision through the control plane: passwords go to the vault, never stay here.
    let master = load_or_create_master_key(&data_dir.join("master.key"))?;
    let vault_dir = data_dir.join("vault");
    let vault = EmbeddedAdmin::open(&vault_dir, MasterKey::from_bytes(master))?;
    let (control, conn) = platform
        .connect(tokio_postgres::NoTls)
        .await
        .context("connecting to the platform database")?;
    tokio::spawn(conn);
    bulkhead_control::migrate(&control).await?;
    let mut control_plane = Platform {
        client: control,
        provisioner: Provisioner::new(admin),
        vault: Arc::new(vault.clone()),
        actor: "bulkhead up".into(),
    };
    let boot = control_plane
        .create_app(&manifest, None)
        .await
        .context("provisioning the example app")?;
    // What the app's worker does at boot: read its own credentials with its boot credential.
    let reader = EmbeddedReader::open(&vault_dir, manifest.app.clone(), &boot)?;
    let runtime_password =
        bulkhead_pg::Secret::new(reader.get(RUNTIME_PASSWORD).await?.expose().to_owned());
    let cross = if manifest.cross_tenant_reads.is_empty() {
        None
    } else {
        Some((
            bulkhead_model::names::cross_tenant_role(&manifest.app),
            bulkhead_pg::Secret::new(reader.get(CROSS_TENANT_PASSWORD).await?.expose().to_owned()),
        ))
    };
    let app_database = bulkhead_model::names::app_database(&manifest.app);
    let runtime_role = bulkhead_model::names::runtime_role(&manifest.app);
    let host = platform
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            #[allow(unreachable_patterns)]
            _ => "127.0.0.1".to_owned(),
        })
        .unwrap_or_else(|| "127.0.0.1".into());
    let port = platform.get_ports().first().copied().unwrap_or(5432);
    let host_for_workers = host.clone();
    let plane = DataPlane::new(
        manifest.clone(),
        DataPlaneConfig {
            host,
            port,
            app_database,
            runtime_role,
            runtime_password,
            cross_tenant: cross,
            pools: Default::default(),
        },
    )?;

    let platform_for_control = platform.clone();
    let manager = Manager::from_config(
        platform,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager).max_size(8).build()?;
    let realms = RealmStore::new(
        pool,
        master,
        RealmSettings {
            base_url: base_url.to_owned(),
            ..RealmSettings::default()
        },
    );
    realms.migrate().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    for (name, level) in TENANTS {
        let tenant = TenantId::from_str(name)?;
        let done = prov.ensure_tenant(&manifest, &tenant, *level).await?;
        let database_password = match done.database {
            None => None,
            Some((_, cred)) => Some(
                tenant_password(&prov, &vault, &manifest, &tenant, &cred.role, cred.password)
                    .await?,
            ),
        };
        plane.register_tenant(TenantPlacement {
            tenant: tenant.clone(),
            level: *level,
            database_password,
            suspended: false,
        });
        realms
            .create_realm(&tenant, now)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for (user, roles) in USERS {
            match realms
                .create_user(&tenant, user, &demo_password(name, user), roles)
                .await
            {
                Ok(_) | Err(StoreError::UserExists(_)) => {}
                Err(e) => return Err(anyhow::anyhow!("creating demo user {user}: {e}")),
            }
        }
    }
    for (code, name) in [("DE", "Germany"), ("FR", "France"), ("US", "United States")] {
        let record = serde_json::json!({"code": code, "name": name});
        match prov.insert_global(&manifest, "country", &record).await {
            Ok(_) => {}
            Err(e) if e.code() == bulkhead_model::ErrorCode::UniqueViolation => {}
            Err(e) => return Err(e.into()),
        }
    }

    record_in_control_plane(&platform_for_control, &manifest).await?;
    // What a separate worker process for the app needs, in the app's own vault space, and the
    // app's boot credential for whoever starts that worker.
    control_plane
        .publish_worker_config(&WorkerConfig {
            db_host: host_for_workers,
            db_port: port,
            database: bulkhead_model::names::app_database(&manifest.app),
            runtime_role: bulkhead_model::names::runtime_role(&manifest.app),
            manifest: manifest.clone(),
            realm_base_url: base_url.to_owned(),
            tenants: TENANTS
                .iter()
                .map(|(t, l)| Ok((TenantId::from_str(t)?, *l)))
                .collect::<anyhow::Result<_>>()?,
            domains: DOMAINS.iter().map(|d| (*d).to_owned()).collect(),
            base_domains: BASE_DOMAINS.iter().map(|d| (*d).to_owned()).collect(),
        })
        .await?;
    write_boot_file(&data_dir.join("boot").join(manifest.app.as_str()), &boot)?;

    let directory = Arc::new(PlaneDirectory(plane.clone()));
    let auth = Arc::new(LocalRealms {
        store: realms.clone(),
        audience: manifest.app.to_string(),
    });
    let api = Arc::new(Api::new(plane, auth));
    let resolution = ResolverConfig {
        strategies: vec![
            Strategy::PathPrefix,
            Strategy::Header("x-tenant".into()),
            Strategy::Subdomain,
        ],
        domains: DOMAINS.iter().map(|d| (*d).to_owned()).collect(),
        base_domains: BASE_DOMAINS.iter().map(|d| (*d).to_owned()).collect(),
        custom_domains: Default::default(),
        trusted_proxies: Vec::new(),
    };
    let tenant_app = tower::Layer::layer(
        &TenantLayer::new(resolution, directory.clone(), Mode::Chain),
        bulkhead_runtime::rest::router(api),
    );
    let realm_routes = bulkhead_runtime::realms::router(Arc::new(Realms {
        store: realms,
        directory,
        clients: vec![manifest.app.to_string()],
        secure_cookies: false,
    }));
    let _ = tenant_app;
    Ok(realm_routes)
}

/// Registers the example app and its tenants in the control plane and audits the provisioning.
async fn record_in_control_plane(
    platform: &tokio_postgres::Config,
    manifest: &AppManifest,
) -> anyhow::Result<()> {
    use bulkhead_control::{audit, registry};
    let (mut client, conn) = platform.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    bulkhead_control::migrate(&client).await?;
    registry::upsert_app(&client, &manifest.app, &serde_json::to_value(manifest)?).await?;
    let known = registry::tenants(&client, &manifest.app).await?;
    let first_time = known.is_empty();
    for (name, level) in TENANTS {
        let tenant = TenantId::from_str(name)?;
        registry::upsert_tenant(
            &client,
            &manifest.app,
            &tenant,
            *level,
            &serde_json::json!({"provider": "local", "realm": name}),
            &serde_json::json!({"default": "deny", "allow": []}),
            None,
        )
        .await?;
    }
    if first_time {
        audit::append(
            &mut client,
            &audit::Entry {
                actor: "bulkhead up",
                action: "app.provision",
                target: manifest.app.as_str(),
                detail: serde_json::json!({"tenants": TENANTS.iter().map(|(t, l)| (t.to_string(), l.as_str())).collect::<Vec<_>>()}),
            },
        )
        .await?;
    }
    Ok(())
}

/// The login password of a `database`-level tenant: kept in the app's vault space. A password
/// generated just now is stored; a lost one is replaced.
async fn tenant_password(
    prov: &Provisioner,
    vault: &EmbeddedAdmin,
    manifest: &AppManifest,
    tenant: &TenantId,
    role: &str,
    fresh: Option<bulkhead_pg::Secret>,
) -> anyhow::Result<bulkhead_pg::Secret> {
    let name = format!("db/tenant/{tenant}");
    if let Some(p) = fresh {
        vault
            .put(&manifest.app, &name, &VaultSecret::new(p.expose()))
            .await?;
        return Ok(p);
    }
    match vault.get(&manifest.app, &name).await {
        Ok(p) => Ok(bulkhead_pg::Secret::new(p.expose().to_owned())),
        Err(bulkhead_vault::Error::NotFound(_)) => {
            let p = prov.rotate_password(role).await?;
            vault
                .put(&manifest.app, &name, &VaultSecret::new(p.expose()))
                .await?;
            Ok(p)
        }
        Err(e) => Err(e.into()),
    }
}

fn write_boot_file(path: &Path, boot: &bulkhead_vault::BootCredential) -> anyhow::Result<()> {
    crate::app::write_private(path, boot.to_secret_string().expose())
}
