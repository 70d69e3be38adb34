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
use bulkhead_control::platform::{Platform, WorkerConfig};
use bulkhead_identity::store::{RealmSettings, RealmStore, StoreError};
use bulkhead_model::{AppManifest, IsolationLevel, TenantId};
use bulkhead_pg::Provisioner;
use bulkhead_runtime::TenantSet;
use bulkhead_runtime::realms::Realms;
use bulkhead_vault::embedded::{EmbeddedAdmin, MasterKey};
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
    // The gateway holds no credential of the app: only its worker reads them, from the vault.
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
        control_plane
            .ensure_tenant(&manifest, &tenant, *level)
            .await?;
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
        match control_plane
            .provisioner
            .insert_global(&manifest, "country", &record)
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == bulkhead_model::ErrorCode::UniqueViolation => {}
            Err(e) => return Err(e.into()),
        }
    }

    record_in_control_plane(&mut control_plane.client, &manifest).await?;
    // What a separate worker process for the app needs, in the app's own vault space, and the
    // app's boot credential for whoever starts that worker.
    control_plane
        .publish_worker_config(&WorkerConfig {
            db_host: host,
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
    crate::app::write_private(
        &data_dir.join("boot").join(manifest.app.as_str()),
        boot.to_secret_string().expose(),
    )?;

    // Realm endpoints answer for the registry's active tenants.
    let active = bulkhead_control::registry::tenants(&control_plane.client, &manifest.app)
        .await?
        .into_iter()
        .filter(|t| t.status == "active")
        .filter_map(|t| TenantId::parse(&t.id).ok())
        .collect();
    Ok(bulkhead_runtime::realms::router(Arc::new(Realms {
        store: realms,
        directory: Arc::new(TenantSet(active)),
        clients: vec![manifest.app.to_string()],
        secure_cookies: false,
    })))
}

/// Registers the example app and its tenants in the control plane and audits the provisioning.
async fn record_in_control_plane(
    client: &mut tokio_postgres::Client,
    manifest: &AppManifest,
) -> anyhow::Result<()> {
    use bulkhead_control::{audit, registry};
    registry::upsert_app(&*client, &manifest.app, &serde_json::to_value(manifest)?).await?;
    let known = registry::tenants(&*client, &manifest.app).await?;
    let first_time = known.is_empty();
    for (name, level) in TENANTS {
        let tenant = TenantId::from_str(name)?;
        registry::upsert_tenant(
            &*client,
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
            client,
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
