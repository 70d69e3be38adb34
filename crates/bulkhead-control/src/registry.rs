//! The registry: apps, tenants, credential metadata and provisioning steps.

use bulkhead_model::tenants::{IdentitySpec, NetworkSpec};
use bulkhead_model::{AppId, IsolationLevel, TenantId};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::GenericClient;

use crate::{Error, Result, db};

pub(crate) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS bulkhead_control.app (
  id text PRIMARY KEY,
  manifest jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS bulkhead_control.tenant (
  app text NOT NULL REFERENCES bulkhead_control.app ON DELETE CASCADE,
  id text NOT NULL,
  isolation text NOT NULL CHECK (isolation IN ('row', 'schema', 'database')),
  placement text NOT NULL DEFAULT 'default',
  identity jsonb NOT NULL DEFAULT '{"provider": "local"}',
  network jsonb NOT NULL DEFAULT '{"default": "deny", "allow": []}',
  features jsonb NOT NULL DEFAULT '{}',
  config jsonb NOT NULL DEFAULT '{}',
  residency text,
  status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'deleting')),
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (app, id)
);
CREATE TABLE IF NOT EXISTS bulkhead_control.credential (
  app text NOT NULL,
  tenant text NOT NULL DEFAULT '',
  kind text NOT NULL,
  vault_path text NOT NULL,
  rotated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (app, tenant, kind)
);
CREATE TABLE IF NOT EXISTS bulkhead_control.provision_step (
  subject text NOT NULL,
  step text NOT NULL,
  done_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (subject, step)
);
ALTER TABLE bulkhead_control.tenant
  ADD COLUMN IF NOT EXISTS dedicated_worker boolean NOT NULL DEFAULT true;
CREATE TABLE IF NOT EXISTS bulkhead_control.bundle (
  app text NOT NULL REFERENCES bulkhead_control.app ON DELETE CASCADE,
  version bigint NOT NULL CHECK (version > 0),
  digest text NOT NULL,
  content text NOT NULL,
  files integer NOT NULL,
  bytes integer NOT NULL,
  actor text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (app, version),
  UNIQUE (app, digest)
);
CREATE OR REPLACE FUNCTION bulkhead_control.bundle_immutable() RETURNS trigger
LANGUAGE plpgsql AS $f$
BEGIN
  RAISE EXCEPTION 'bundle versions are immutable';
END
$f$;
DROP TRIGGER IF EXISTS bundle_immutable ON bulkhead_control.bundle;
CREATE TRIGGER bundle_immutable BEFORE UPDATE ON bulkhead_control.bundle
  FOR EACH ROW EXECUTE FUNCTION bulkhead_control.bundle_immutable();
CREATE TABLE IF NOT EXISTS bulkhead_control.bundle_active (
  app text PRIMARY KEY REFERENCES bulkhead_control.app ON DELETE CASCADE,
  version bigint NOT NULL,
  activated_at timestamptz NOT NULL DEFAULT now(),
  FOREIGN KEY (app, version) REFERENCES bulkhead_control.bundle (app, version)
);
"#;

/// Where a tenant is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    /// Served.
    Active,
    /// Resolves like an unknown tenant until resumed (also while it moves between levels).
    Suspended,
    /// Being deleted.
    Deleting,
}

impl TenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Deleting => "deleting",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "suspended" => Some(Self::Suspended),
            "deleting" => Some(Self::Deleting),
            _ => None,
        }
    }
}

/// A tenant as the registry knows it, typed: every column is parsed once, here, when read
/// (a record the registry should never hold is an error naming it, not a silent default).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TenantRecord {
    pub app: String,
    pub id: TenantId,
    pub isolation: IsolationLevel,
    pub placement: String,
    pub identity: IdentitySpec,
    pub network: NetworkSpec,
    pub residency: Option<String>,
    pub status: TenantStatus,
    /// Feature flag overrides by flag name.
    pub features: Value,
    /// Setting overrides by name; a secret one is `{"secret": <vault path>}` (its value is in
    /// the app's vault space).
    pub config: Value,
    /// The tenant's preference for its own worker (applies at the `database` level).
    pub dedicated_worker: bool,
    /// When it was created, in microseconds since 1970 (its incarnation: a tenant created
    /// again under the same id has another).
    pub created_micros: i64,
}

impl TenantRecord {
    /// Whether the tenant is served by its own worker: `database` level and not opted out.
    pub fn dedicated(&self) -> bool {
        self.dedicated_worker && self.isolation == IsolationLevel::Database
    }
}

/// Registers (or updates) an app's manifest.
pub async fn upsert_app(client: &impl GenericClient, app: &AppId, manifest: &Value) -> Result<()> {
    client
        .execute(
            "INSERT INTO bulkhead_control.app (id, manifest) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET manifest = EXCLUDED.manifest",
            &[&app.as_str(), manifest],
        )
        .await
        .map_err(db)?;
    Ok(())
}

/// Registers (or updates) a tenant of an app.
#[allow(clippy::too_many_arguments)]
pub async fn upsert_tenant(
    client: &impl GenericClient,
    app: &AppId,
    tenant: &TenantId,
    isolation: IsolationLevel,
    identity: &IdentitySpec,
    network: &NetworkSpec,
    residency: Option<&str>,
    dedicated_worker: bool,
) -> Result<()> {
    let (identity, network) = (crate::to_json(identity)?, crate::to_json(network)?);
    client
        .execute(
            "INSERT INTO bulkhead_control.tenant
               (app, id, isolation, identity, network, residency, dedicated_worker)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (app, id) DO UPDATE SET isolation = EXCLUDED.isolation,
               identity = EXCLUDED.identity, network = EXCLUDED.network,
               residency = EXCLUDED.residency, dedicated_worker = EXCLUDED.dedicated_worker",
            &[
                &app.as_str(),
                &tenant.as_str(),
                &isolation.as_str(),
                &identity,
                &network,
                &residency,
                &dedicated_worker,
            ],
        )
        .await
        .map_err(db)?;
    Ok(())
}

pub async fn set_status(
    client: &impl GenericClient,
    app: &AppId,
    tenant: &TenantId,
    status: TenantStatus,
) -> Result<bool> {
    Ok(client
        .execute(
            "UPDATE bulkhead_control.tenant SET status = $3 WHERE app = $1 AND id = $2",
            &[&app.as_str(), &tenant.as_str(), &status.as_str()],
        )
        .await
        .map_err(db)?
        == 1)
}

const TENANT_COLUMNS: &str = "app, id, isolation, placement, identity, network, residency, status, \
     features, config, dedicated_worker, (extract(epoch FROM created_at) * 1000000)::bigint";

fn tenant_record(r: &tokio_postgres::Row) -> Result<TenantRecord> {
    let (app, id): (String, String) = (r.get(0), r.get(1));
    let bad = |what: &str| {
        Error::Internal(format!(
            "the registry's tenant {app}/{id} has an invalid {what}"
        ))
    };
    Ok(TenantRecord {
        id: TenantId::parse(&id).map_err(|_| bad("id"))?,
        isolation: r
            .get::<_, String>(2)
            .parse()
            .map_err(|_| bad("isolation"))?,
        placement: r.get(3),
        identity: serde_json::from_value(r.get(4)).map_err(|_| bad("identity"))?,
        network: serde_json::from_value(r.get(5)).map_err(|_| bad("network"))?,
        residency: r.get(6),
        status: TenantStatus::parse(r.get(7)).ok_or_else(|| bad("status"))?,
        features: r.get(8),
        config: r.get(9),
        dedicated_worker: r.get(10),
        created_micros: r.get(11),
        app,
    })
}

/// Every tenant of `app`, by id.
pub async fn tenants(client: &impl GenericClient, app: &AppId) -> Result<Vec<TenantRecord>> {
    let rows = client
        .query(
            &format!(
                "SELECT {TENANT_COLUMNS} FROM bulkhead_control.tenant WHERE app = $1 ORDER BY id"
            ),
            &[&app.as_str()],
        )
        .await
        .map_err(db)?;
    rows.iter().map(tenant_record).collect()
}

/// One tenant of `app`, if registered.
pub async fn tenant(
    client: &impl GenericClient,
    app: &AppId,
    id: &str,
) -> Result<Option<TenantRecord>> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {TENANT_COLUMNS} FROM bulkhead_control.tenant WHERE app = $1 AND id = $2"
            ),
            &[&app.as_str(), &id],
        )
        .await
        .map_err(db)?;
    row.as_ref().map(tenant_record).transpose()
}

/// Records where a credential is kept (never the secret itself).
pub async fn record_credential(
    client: &impl GenericClient,
    app: &AppId,
    tenant: Option<&TenantId>,
    kind: &str,
    vault_path: &str,
) -> Result<()> {
    let tenant = tenant.map(TenantId::as_str).unwrap_or("");
    client
        .execute(
            "INSERT INTO bulkhead_control.credential (app, tenant, kind, vault_path) VALUES ($1, $2, $3, $4)
             ON CONFLICT (app, tenant, kind) DO UPDATE SET vault_path = EXCLUDED.vault_path, rotated_at = now()",
            &[&app.as_str(), &tenant, &kind, &vault_path],
        )
        .await
        .map_err(db)?;
    Ok(())
}

/// Whether a provisioning step of `subject` has completed.
pub async fn step_done(client: &impl GenericClient, subject: &str, step: &str) -> Result<bool> {
    Ok(client
        .query_opt(
            "SELECT 1 FROM bulkhead_control.provision_step WHERE subject = $1 AND step = $2",
            &[&subject, &step],
        )
        .await
        .map_err(db)?
        .is_some())
}

/// Marks a provisioning step of `subject` as completed.
pub async fn mark_step(client: &impl GenericClient, subject: &str, step: &str) -> Result<()> {
    client
        .execute(
            "INSERT INTO bulkhead_control.provision_step (subject, step) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&subject, &step],
        )
        .await
        .map_err(db)?;
    Ok(())
}

/// Every registered app with its manifest (as stored JSON).
pub async fn apps(client: &impl GenericClient) -> Result<Vec<(String, Value)>> {
    let rows = client
        .query(
            "SELECT id, manifest FROM bulkhead_control.app ORDER BY id",
            &[],
        )
        .await
        .map_err(db)?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The registered manifest of one app; `None` when there is no such app.
pub async fn app_manifest(
    client: &impl GenericClient,
    app: &AppId,
) -> Result<Option<bulkhead_model::AppManifest>> {
    let row = client
        .query_opt(
            "SELECT manifest FROM bulkhead_control.app WHERE id = $1",
            &[&app.as_str()],
        )
        .await
        .map_err(db)?;
    row.map(|r| {
        serde_json::from_value(r.get::<_, Value>(0))
            .map_err(|e| Error::Internal(format!("the registered manifest of {app}: {e}")))
    })
    .transpose()
}

/// Removes a tenant from the registry (after its data is gone).
pub async fn remove_tenant(
    client: &impl GenericClient,
    app: &AppId,
    tenant: &TenantId,
) -> Result<bool> {
    Ok(client
        .execute(
            "DELETE FROM bulkhead_control.tenant WHERE app = $1 AND id = $2",
            &[&app.as_str(), &tenant.as_str()],
        )
        .await
        .map_err(db)?
        == 1)
}

/// Forgets the recorded steps of a finished multi-step operation, so the same operation can
/// run again later (moving a tenant back and forth).
pub async fn clear_steps(client: &impl GenericClient, subject: &str) -> Result<()> {
    client
        .execute(
            "DELETE FROM bulkhead_control.provision_step WHERE subject = $1",
            &[&subject],
        )
        .await
        .map_err(db)?;
    Ok(())
}

/// Records a tenant's new isolation level and status at once (the end of a move).
pub async fn set_isolation(
    client: &impl GenericClient,
    app: &AppId,
    tenant: &TenantId,
    isolation: IsolationLevel,
    status: TenantStatus,
) -> Result<bool> {
    Ok(client
        .execute(
            "UPDATE bulkhead_control.tenant SET isolation = $3, status = $4 WHERE app = $1 AND id = $2",
            &[&app.as_str(), &tenant.as_str(), &isolation.as_str(), &status.as_str()],
        )
        .await
        .map_err(db)?
        == 1)
}

/// Which per-tenant options map a change is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Options {
    /// Feature flag overrides (`features`).
    Flags,
    /// Setting overrides (`config`).
    Settings,
}

/// Sets (`Some`) or clears (`None`) one entry of a tenant's flag or setting overrides.
/// Returns false when the tenant is not registered.
pub async fn set_option(
    client: &impl GenericClient,
    app: &AppId,
    tenant: &TenantId,
    options: Options,
    name: &str,
    value: Option<&Value>,
) -> Result<bool> {
    let column = match options {
        Options::Flags => "features",
        Options::Settings => "config",
    };
    let sql = format!(
        "UPDATE bulkhead_control.tenant SET {column} = CASE WHEN $4::jsonb IS NULL THEN {column} - $3::text
           ELSE jsonb_set({column}, ARRAY[$3::text], $4::jsonb) END
         WHERE app = $1 AND id = $2"
    );
    Ok(client
        .execute(&sql, &[&app.as_str(), &tenant.as_str(), &name, &value])
        .await
        .map_err(db)?
        == 1)
}

/// The ids of every active tenant of every app (one query; the gateway's realm endpoints
/// answer for these only).
pub async fn active_tenant_ids(client: &impl GenericClient) -> Result<Vec<String>> {
    Ok(client
        .query(
            "SELECT DISTINCT id FROM bulkhead_control.tenant WHERE status = $1",
            &[&TenantStatus::Active.as_str()],
        )
        .await
        .map_err(db)?
        .iter()
        .map(|r| r.get(0))
        .collect())
}
