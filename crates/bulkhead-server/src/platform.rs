//! Assembling the platform's side from the configuration: the platform database, the
//! control-plane handle (`Platform`: registry, provisioner, vault admin, bucket admin), the
//! master key, an app's bucket, and tenant declaration with its local realm. Used by the server
//! and by the CLI's administrative commands; never by a worker.

use std::path::Path;
use std::sync::Arc;

use crate::error::Context;
use bulkhead_control::platform::Platform;
use bulkhead_control::registry;
use bulkhead_files::garage::GarageAdmin;
use bulkhead_model::{AppId, AppManifest};
use bulkhead_vault_admin::VaultAdmin;
use bulkhead_vault_admin::embedded::{EmbeddedAdmin, MasterKey};
use bulkhead_vault_admin::openbao::OpenBaoAdmin;

use crate::config::{Config, FilesBackend, Secret, VaultBackend};

/// Connection settings for the platform database: the configured URL or the embedded cluster.
pub fn platform_db(config: &Config) -> crate::error::Result<bulkhead_pg::PgConfig> {
    if let Some(url) = &config.database_url {
        return url
            .expose()
            .parse()
            .context("database_url is not a usable PostgreSQL URL");
    }
    let dir = config.data_dir.join("postgres");
    crate::error::ensure!(
        dir.join("cluster.json").exists(),
        "no platform database: start `bulkhead up` first or pass --database-url"
    );
    let (cluster, _) =
        bulkhead_pgcluster::Cluster::open_or_init(&dir, bulkhead_pgcluster::Durability::Durable)?;
    crate::error::ensure!(
        cluster.is_running(),
        "the embedded cluster in {} is not running: start `bulkhead up`",
        dir.display()
    );
    // The embedded cluster listens on the loopback interface only.
    Ok(bulkhead_pg::PgConfig::local(
        cluster.superuser_url("bulkhead").parse()?,
    )?)
}

/// A connection to the platform database with the control-plane schema in place.
pub async fn control_client(config: &Config) -> crate::error::Result<tokio_postgres::Client> {
    let (mut client, conn) = platform_db(config)?
        .connect()
        .await
        .context("connecting to the platform database")?;
    tokio::spawn(conn);
    bulkhead_control::migrate(&mut client).await?;
    Ok(client)
}

/// The platform handle of the CLI: platform database, admin provisioner, vault.
pub async fn platform(config: &Config) -> crate::error::Result<Platform> {
    let db = platform_db(config)?;
    platform_at(config, db, master_key(config, false)?).await
}

/// The platform handle for the platform database `db`, with the configured vault.
pub async fn platform_at(
    config: &Config,
    db: bulkhead_pg::PgConfig,
    master: [u8; 32],
) -> crate::error::Result<Platform> {
    let (mut client, conn) = db
        .connect()
        .await
        .context("connecting to the platform database")?;
    tokio::spawn(conn);
    bulkhead_control::migrate(&mut client).await?;
    let mut admin = db.clone();
    admin.dbname("postgres");
    Ok(Platform {
        client,
        provisioner: bulkhead_pg::Provisioner::new(admin),
        vault: vault_admin(config, master)?,
        buckets: bucket_admin(config)?,
        actor: std::env::var("USER").unwrap_or_else(|_| "cli".into()),
    })
}

/// The Garage admin when files live on Garage (each app gets its own bucket and key).
fn bucket_admin(config: &Config) -> crate::error::Result<Option<GarageAdmin>> {
    let files = &config.files;
    if files.backend == FilesBackend::Local {
        return Ok(None);
    }
    let need = |v: &Option<String>, key: &str| {
        v.clone()
            .with_context(|| format!("files.backend = \"garage\" needs files.{key}"))
    };
    let token_file = files
        .admin_token_file
        .as_deref()
        .context("files.backend = \"garage\" needs files.admin_token_file")?;
    let token = std::fs::read_to_string(token_file)
        .with_context(|| format!("reading files.admin_token_file {}", token_file.display()))?;
    Ok(Some(GarageAdmin::new(
        &need(&files.admin_url, "admin_url")?,
        Secret::new(token.trim().to_owned()),
        &need(&files.s3_endpoint, "s3_endpoint")?,
        files.s3_region.as_deref().unwrap_or("garage"),
    )?))
}

/// The bucket of an app as configured: its directory under the local root, or its own bucket
/// on Garage with the key kept in its vault space.
pub async fn app_bucket(
    config: &Config,
    p: &Platform,
    app: &AppId,
) -> crate::error::Result<bulkhead_files::AppBucket> {
    Ok(match config.files.backend {
        FilesBackend::Local => {
            let root = config
                .files
                .root
                .clone()
                .unwrap_or_else(|| config.data_dir.join("files"));
            bulkhead_files::AppBucket::local(&root, app)?
        }
        FilesBackend::Garage => {
            let raw = p
                .vault
                .get(app, bulkhead_control::platform::FILES_S3)
                .await
                .with_context(|| format!("the bucket of {app} in the vault"))?;
            bulkhead_files::AppBucket::s3(app, &serde_json::from_str(raw.expose())?)?
        }
    })
}

/// The configured vault, as the platform's admin side.
fn vault_admin(config: &Config, master: [u8; 32]) -> crate::error::Result<Arc<dyn VaultAdmin>> {
    Ok(match config.vault.backend {
        VaultBackend::Embedded => Arc::new(EmbeddedAdmin::open(
            &config.vault.dir(&config.data_dir),
            MasterKey::from_bytes(master),
        )?),
        VaultBackend::Openbao => {
            let address = config
                .vault
                .address
                .as_deref()
                .context("vault.backend = \"openbao\" needs vault.address")?;
            let token_file = config
                .vault
                .token_file
                .as_deref()
                .context("vault.backend = \"openbao\" needs vault.token_file")?;
            let token = std::fs::read_to_string(token_file)
                .with_context(|| format!("reading vault.token_file {}", token_file.display()))?;
            let admin = OpenBaoAdmin::new(address, Secret::new(token.trim().to_owned()))?
                .at(config.vault.location());
            Arc::new(match config.vault.ca_pem()? {
                Some(pem) => admin.trusting(&pem)?,
                None => admin,
            })
        }
    })
}

/// The platform master key (`vault.master_key_file`: 32 bytes or 64 hex characters). With `create`, a missing key
/// is generated (mode 0600) — only the embedded first-run mode does that.
pub fn master_key(config: &Config, create: bool) -> crate::error::Result<[u8; 32]> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = config.vault.master_key_file(&config.data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(MasterKey::decode(&bytes)
            .with_context(|| format!("the master key {}", path.display()))?
            .bytes()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let key: [u8; 32] = rand::random();
            let mut f = std::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            f.write_all(&key)?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading the master key {}", path.display())),
    }
}

/// The local realms' store (keys sealed under the master key), for declaring tenants whose
/// users sign in locally.
pub fn realm_store(config: &Config) -> crate::error::Result<bulkhead_identity::store::RealmStore> {
    let pool =
        crate::health::platform_pool(platform_db(config)?).map_err(crate::error::Error::msg)?;
    Ok(bulkhead_identity::store::RealmStore::new(
        pool,
        master_key(config, false)?,
        Default::default(),
    ))
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Writes `text` to `path` with mode 0600, creating the parent directory.
pub fn write_private(path: &Path, text: &str) -> crate::error::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

pub async fn manifest_of(p: &Platform, app: &str) -> crate::error::Result<AppManifest> {
    registry::app_manifest(&p.client, &bulkhead_model::AppId::parse(app)?)
        .await?
        .with_context(|| format!("app {app} is not registered"))
}
