//! App provisioning through the control plane: every step is recorded, so a run that crashed
//! between any two steps is finished by running it again; generated database passwords go
//! straight to the vault and only their location is registered.

use std::sync::Arc;

use bulkhead_model::options::{FlagOverride, TenantOptions};
use bulkhead_model::tenants::TenantSpec;
use bulkhead_model::{AppManifest, IsolationLevel, TenantId, names};
use bulkhead_pg::Provisioner;
use bulkhead_vault::{BootCredential, Secret as VaultSecret};
use bulkhead_vault_admin::VaultAdmin;
use serde_json::json;

use crate::audit::{self, Entry};
use crate::{Error, Result, registry, to_json};
use options::SECRET_MARK;

mod apps;
mod bundles;
mod migrate;
mod moves;
mod options;
mod tenants;

pub use apps::worker_tenant;
pub use bundles::{BundleVersion, active_bundle};
pub use migrate::MigrationRun;
pub use moves::MOVE_STEPS;
pub use options::check_setting;

// The worker contract (vault paths, configuration types) is defined in bulkhead-model.
pub use bulkhead_model::worker::{
    CROSS_TENANT_PASSWORD, FILES_S3, FILES_SIGNING_KEY, RUNTIME_PASSWORD, WORKER_CONFIG,
    WorkerConfig, WorkerTenant, setting_secret_path, tenant_password_path,
};

/// The platform's provisioning handle: control-plane database, admin provisioner, vault, and
/// (when files live on Garage) the bucket admin.
pub struct Platform {
    pub client: tokio_postgres::Client,
    pub provisioner: Provisioner,
    pub vault: Arc<dyn VaultAdmin>,
    /// Creates each app's own bucket and key; `None` for the local file backend.
    pub buckets: Option<bulkhead_files::garage::GarageAdmin>,
    /// Who is acting, for the audit log.
    pub actor: String,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

/// The steps of `create_app`, in order.
pub const APP_STEPS: &[&str] = &["register", "database", "vault", "bucket", "credentials"];

fn pg(e: bulkhead_pg::Error) -> Error {
    Error::Provisioning(e)
}

fn vault(e: bulkhead_vault::Error) -> Error {
    Error::Vault(e)
}
