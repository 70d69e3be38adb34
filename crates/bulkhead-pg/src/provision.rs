//! Provisioning with admin credentials: an app's database and roles, tenants at each isolation
//! level, migrations across every target, and the admin path for global reference data.
//!
//! Every step checks before it creates, so running a provisioning call again after a crash at
//! any point finishes the job. Generated passwords are returned to the caller for the vault and
//! sent to PostgreSQL only as SCRAM verifiers computed here, so the plaintext never appears in
//! a statement (or a server log). Nothing here logs a password.
//!
//! The admin connection must be a superuser (or CREATEDB + CREATEROLE with membership in the
//! roles it creates); it is the platform's, and must never reach an app's worker.

use std::fmt;

use bulkhead_model::names::{self, quote_ident as q, quote_literal};
use bulkhead_model::{AppManifest, IsolationLevel, TenantId};
use serde_json::Value;
use tokio_postgres::Client;

use crate::tls::PgConfig;

use crate::ddl::Target;
use crate::error::{Error, Result};
use crate::migrate::{self, MigrationReport, Plan};

pub use bulkhead_model::Secret;

/// A generated password: 32 random bytes, hex encoded (64 characters).
pub fn generate_password() -> Secret {
    let bytes: [u8; 32] = rand::random();
    Secret::new(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// A login role and, when it was just created or rotated, its new password.
#[derive(Debug, Clone)]
pub struct RoleCredential {
    pub role: String,
    /// `None` when the role already existed and its password was kept.
    pub password: Option<Secret>,
}

/// What [`Provisioner::ensure_app`] set up.
#[derive(Debug, Clone)]
pub struct AppProvision {
    pub database: String,
    pub runtime: RoleCredential,
    pub cross_tenant: Option<RoleCredential>,
    pub migration: MigrationReport,
}

/// What [`Provisioner::ensure_tenant`] set up.
#[derive(Debug, Clone)]
pub struct TenantProvision {
    pub tenant: TenantId,
    pub level: IsolationLevel,
    /// For `database` tenants: the tenant database and its login role.
    pub database: Option<(String, RoleCredential)>,
    pub migration: Option<MigrationReport>,
}

/// Creates and migrates app and tenant databases with admin credentials.
#[derive(Clone)]
pub struct Provisioner {
    admin: PgConfig,
    maintenance_db: String,
}

impl fmt::Debug for Provisioner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provisioner")
            .field("hosts", &self.admin.get_hosts())
            .field("user", &self.admin.get_user())
            .finish_non_exhaustive()
    }
}

async fn connect(config: &PgConfig) -> Result<Client> {
    let (client, connection) = config
        .connect()
        .await
        .map_err(|e| Error::DatabaseUnavailable(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "admin connection closed");
        }
    });
    Ok(client)
}

fn db_err(e: tokio_postgres::Error) -> Error {
    Error::Database(e)
}

/// A SCRAM-SHA-256 verifier for `password`, as PostgreSQL stores it.
fn verifier(password: &Secret) -> String {
    postgres_protocol::password::scram_sha_256(password.expose().as_bytes())
}

impl Provisioner {
    /// `admin` points at a maintenance database (usually `postgres`) of the cluster.
    pub fn new(admin: PgConfig) -> Self {
        let maintenance_db = admin.get_dbname().unwrap_or("postgres").to_owned();
        Self {
            admin,
            maintenance_db,
        }
    }

    async fn connect_to(&self, database: &str) -> Result<Client> {
        let mut config = self.admin.clone();
        config.dbname(database);
        connect(&config).await
    }

    async fn role_exists(client: &Client, role: &str) -> Result<bool> {
        Ok(client
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
            .await
            .map_err(db_err)?
            .is_some())
    }

    async fn database_exists(client: &Client, db: &str) -> Result<bool> {
        Ok(client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])
            .await
            .map_err(db_err)?
            .is_some())
    }

    /// Creates a login role that can do nothing but log in; (re)asserts its attributes when it
    /// exists. Returns the new password when it created the role.
    async fn ensure_login_role(client: &Client, role: &str) -> Result<Option<Secret>> {
        let attrs = "LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS";
        if Self::role_exists(client, role).await? {
            client
                .batch_execute(&format!("ALTER ROLE {} {attrs}", q(role)))
                .await
                .map_err(db_err)?;
            return Ok(None);
        }
        let password = generate_password();
        client
            .batch_execute(&format!(
                "CREATE ROLE {} {attrs} PASSWORD {}",
                q(role),
                quote_literal(&verifier(&password))
            ))
            .await
            .map_err(db_err)?;
        Ok(Some(password))
    }

    async fn ensure_nologin_role(client: &Client, role: &str) -> Result<()> {
        let attrs = "NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS";
        let verb = if Self::role_exists(client, role).await? {
            "ALTER"
        } else {
            "CREATE"
        };
        client
            .batch_execute(&format!("{verb} ROLE {} {attrs}", q(role)))
            .await
            .map_err(db_err)
    }

    /// Sets a new generated password on a login role and returns it.
    pub async fn rotate_password(&self, role: &str) -> Result<Secret> {
        let client = self.connect_to(&self.maintenance_db).await?;
        let password = generate_password();
        client
            .batch_execute(&format!(
                "ALTER ROLE {} PASSWORD {}",
                q(role),
                quote_literal(&verifier(&password))
            ))
            .await
            .map_err(db_err)?;
        Ok(password)
    }

    /// Creates a database owned by the app's owner role (when missing) that only `connect`
    /// roles may enter, and hands its `public` schema to the owner.
    async fn ensure_database(
        &self,
        m: &AppManifest,
        db: &str,
        connect_roles: &[&str],
    ) -> Result<()> {
        let owner = names::owner_role(&m.app);
        let admin = self.connect_to(&self.maintenance_db).await?;
        if !Self::database_exists(&admin, db).await? {
            admin
                .batch_execute(&format!(
                    "CREATE DATABASE {} OWNER {} ENCODING 'UTF8' TEMPLATE template0",
                    q(db),
                    q(&owner)
                ))
                .await
                .map_err(db_err)?;
        }
        admin
            .batch_execute(&format!("REVOKE ALL ON DATABASE {} FROM PUBLIC", q(db)))
            .await
            .map_err(db_err)?;
        for role in connect_roles {
            admin
                .batch_execute(&format!(
                    "GRANT CONNECT ON DATABASE {} TO {}",
                    q(db),
                    q(role)
                ))
                .await
                .map_err(db_err)?;
        }
        let client = self.connect_to(db).await?;
        client
            .batch_execute(&format!(
                "ALTER SCHEMA public OWNER TO {owner};
                 REVOKE ALL ON SCHEMA public FROM PUBLIC;",
                owner = q(&owner)
            ))
            .await
            .map_err(db_err)
    }

    /// Creates (or completes) an app: owner role, runtime role, cross-tenant role when the
    /// manifest grants cross-tenant reads, the app database, and its shared schema at the
    /// manifest's version (additive changes only; use [`Provisioner::migrate`] for more).
    pub async fn ensure_app(&self, m: &AppManifest) -> Result<AppProvision> {
        let admin = self.connect_to(&self.maintenance_db).await?;
        let owner = names::owner_role(&m.app);
        let runtime = names::runtime_role(&m.app);
        let cross = names::cross_tenant_role(&m.app);
        Self::ensure_nologin_role(&admin, &owner).await?;
        let runtime_pw = Self::ensure_login_role(&admin, &runtime).await?;
        let cross_pw = if m.cross_tenant_reads.is_empty() {
            None
        } else {
            Some(Self::ensure_login_role(&admin, &cross).await?)
        };
        let db = names::app_database(&m.app);
        let mut connect_roles = vec![runtime.as_str()];
        if cross_pw.is_some() {
            connect_roles.push(cross.as_str());
        }
        self.ensure_database(m, &db, &connect_roles).await?;
        let cross_exists = Self::role_exists(&admin, &cross).await?;
        let mut client = self.connect_to(&db).await?;
        let migration =
            migrate::apply(&mut client, m, &Target::Shared, false, cross_exists).await?;
        Ok(AppProvision {
            database: db,
            runtime: RoleCredential {
                role: runtime,
                password: runtime_pw,
            },
            cross_tenant: cross_pw.map(|password| RoleCredential {
                role: cross,
                password,
            }),
            migration,
        })
    }

    /// Creates (or completes) a tenant at `level`: nothing in the database for `row`; a schema
    /// and a NOLOGIN role for `schema`; a database and a login role for `database`.
    pub async fn ensure_tenant(
        &self,
        m: &AppManifest,
        tenant: &TenantId,
        level: IsolationLevel,
    ) -> Result<TenantProvision> {
        let admin = self.connect_to(&self.maintenance_db).await?;
        let role = names::tenant_role(&m.app, tenant);
        let cross_exists = Self::role_exists(&admin, &names::cross_tenant_role(&m.app)).await?;
        match level {
            IsolationLevel::Row => Ok(TenantProvision {
                tenant: tenant.clone(),
                level,
                database: None,
                migration: None,
            }),
            IsolationLevel::Schema => {
                Self::ensure_nologin_role(&admin, &role).await?;
                admin
                    .batch_execute(&format!(
                        "GRANT {} TO {}",
                        q(&role),
                        q(&names::runtime_role(&m.app))
                    ))
                    .await
                    .map_err(db_err)?;
                let mut client = self.connect_to(&names::app_database(&m.app)).await?;
                client
                    .batch_execute(&format!(
                        "CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}",
                        q(&names::tenant_schema(tenant)),
                        q(&names::owner_role(&m.app))
                    ))
                    .await
                    .map_err(db_err)?;
                let target = Target::TenantSchema(tenant.clone());
                let migration =
                    migrate::apply(&mut client, m, &target, false, cross_exists).await?;
                Ok(TenantProvision {
                    tenant: tenant.clone(),
                    level,
                    database: None,
                    migration: Some(migration),
                })
            }
            IsolationLevel::Database => {
                let password = Self::ensure_login_role(&admin, &role).await?;
                let db = names::tenant_database(&m.app, tenant);
                self.ensure_database(m, &db, &[role.as_str()]).await?;
                let mut client = self.connect_to(&db).await?;
                let target = Target::TenantDatabase(tenant.clone());
                let migration = migrate::apply(&mut client, m, &target, false, false).await?;
                Ok(TenantProvision {
                    tenant: tenant.clone(),
                    level,
                    database: Some((db, RoleCredential { role, password })),
                    migration: Some(migration),
                })
            }
        }
    }

    /// The plan for the app's shared schema, without changing anything.
    pub async fn plan(&self, m: &AppManifest) -> Result<Plan> {
        let mut client = self.connect_to(&names::app_database(&m.app)).await?;
        migrate::plan_for(&mut client, m, &Target::Shared).await
    }

    /// Migrates the shared schema and every listed tenant's schema or database the same way.
    /// Each target migrates in its own transaction; one target's failure is reported in its
    /// slot and does not stop the others.
    pub async fn migrate(
        &self,
        m: &AppManifest,
        tenants: &[(TenantId, IsolationLevel)],
        allow_destructive: bool,
    ) -> Result<Vec<(String, Result<MigrationReport>)>> {
        let admin = self.connect_to(&self.maintenance_db).await?;
        let cross_exists = Self::role_exists(&admin, &names::cross_tenant_role(&m.app)).await?;
        if !m.cross_tenant_reads.is_empty() && !cross_exists {
            Self::ensure_login_role(&admin, &names::cross_tenant_role(&m.app)).await?;
        }
        let cross_exists = cross_exists || !m.cross_tenant_reads.is_empty();
        let app_db = names::app_database(&m.app);
        let mut out = Vec::new();
        let mut client = self.connect_to(&app_db).await?;
        out.push((
            Target::Shared.describe(),
            migrate::apply(
                &mut client,
                m,
                &Target::Shared,
                allow_destructive,
                cross_exists,
            )
            .await,
        ));
        for (tenant, level) in tenants {
            let result = match level {
                IsolationLevel::Row => continue,
                IsolationLevel::Schema => {
                    let target = Target::TenantSchema(tenant.clone());
                    migrate::apply(&mut client, m, &target, allow_destructive, cross_exists).await
                }
                IsolationLevel::Database => {
                    let target = Target::TenantDatabase(tenant.clone());
                    match self
                        .connect_to(&names::tenant_database(&m.app, tenant))
                        .await
                    {
                        Ok(mut c) => {
                            migrate::apply(&mut c, m, &target, allow_destructive, false).await
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            out.push((format!("tenant {tenant} ({})", level.as_str()), result));
        }
        Ok(out)
    }

    /// The admin path for global (`cross_tenant: true`) reference data: inserts one row as
    /// the app's owner role. Tenants can only read these rows.
    pub async fn insert_global(
        &self,
        m: &AppManifest,
        entity: &str,
        record: &Value,
    ) -> Result<Value> {
        let e = m
            .entity(entity)
            .ok_or_else(|| Error::UnknownEntity(entity.to_owned()))?;
        if e.is_tenant_scoped() {
            return Err(Error::BadQuery(format!(
                "{entity} is a tenant entity; only global entities are written through the admin path"
            )));
        }
        let (sql, params) =
            crate::sql::insert_sql(names::SHARED_SCHEMA, e, record, None, None, &[])?;
        let mut client = self.connect_to(&names::app_database(&m.app)).await?;
        let tx = client.transaction().await.map_err(db_err)?;
        tx.batch_execute(&format!("SET LOCAL ROLE {}", q(&names::owner_role(&m.app))))
            .await
            .map_err(db_err)?;
        let refs = crate::sql::param_refs(&params);
        let row = tx
            .query_one(&sql, &refs)
            .await
            .map_err(|err| Error::from_db(err, entity, false))?;
        let record = crate::sql::record_from_row(e, &row, false)?;
        tx.commit().await.map_err(db_err)?;
        Ok(record)
    }

    /// Drops a tenant's data at its level: its rows (`row`), schema and role (`schema`), or
    /// database and login role (`database`). Idempotent.
    pub async fn drop_tenant(
        &self,
        m: &AppManifest,
        tenant: &TenantId,
        level: IsolationLevel,
    ) -> Result<()> {
        self.drop_tenant_level(m, tenant, level, false).await
    }

    /// Drops a tenant's data at `level`. With `keep_role` (a move between `schema` and
    /// `database`, which share the tenant's role) the role stays but loses what only the old
    /// level gave it: the runtime role's membership (`schema`) or its password (`database`).
    pub async fn drop_tenant_level(
        &self,
        m: &AppManifest,
        tenant: &TenantId,
        level: IsolationLevel,
        keep_role: bool,
    ) -> Result<()> {
        let admin = self.connect_to(&self.maintenance_db).await?;
        let role = names::tenant_role(&m.app, tenant);
        match level {
            IsolationLevel::Row => {
                let mut client = self.connect_to(&names::app_database(&m.app)).await?;
                let tx = client.transaction().await.map_err(db_err)?;
                // The owner is subject to forced RLS too: it deletes as the tenant.
                as_tenant_owner(&tx, m, tenant).await?;
                delete_tenant_rows(&tx, m, names::SHARED_SCHEMA, tenant).await?;
                tx.commit().await.map_err(db_err)?;
            }
            IsolationLevel::Schema => {
                let client = self.connect_to(&names::app_database(&m.app)).await?;
                client
                    .batch_execute(&format!(
                        "DROP SCHEMA IF EXISTS {} CASCADE",
                        q(&names::tenant_schema(tenant))
                    ))
                    .await
                    .map_err(db_err)?;
                if Self::role_exists(&admin, &role).await? {
                    let sql = if keep_role {
                        format!(
                            "REVOKE {} FROM {}",
                            q(&role),
                            q(&names::runtime_role(&m.app))
                        )
                    } else {
                        format!("DROP ROLE {}", q(&role))
                    };
                    admin.batch_execute(&sql).await.map_err(db_err)?;
                }
            }
            IsolationLevel::Database => {
                admin
                    .batch_execute(&format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        q(&names::tenant_database(&m.app, tenant))
                    ))
                    .await
                    .map_err(db_err)?;
                if Self::role_exists(&admin, &role).await? {
                    let sql = if keep_role {
                        format!("ALTER ROLE {} NOLOGIN PASSWORD NULL", q(&role))
                    } else {
                        format!("DROP ROLE {}", q(&role))
                    };
                    admin.batch_execute(&sql).await.map_err(db_err)?;
                }
            }
        }
        Ok(())
    }
}

impl Provisioner {
    /// One tenant's data as JSON lines (`{"entity": …, "record": {…}}`), from whichever level it
    /// lives at, read as the app's owner role with the tenant's setting (forced RLS applies).
    pub async fn export_tenant(
        &self,
        m: &AppManifest,
        tenant: &TenantId,
        level: IsolationLevel,
    ) -> Result<Vec<String>> {
        let (database, schema) = tenant_location(m, tenant, level);
        let mut client = self.connect_to(&database).await?;
        let tx = client.transaction().await.map_err(db_err)?;
        tx.batch_execute("SET TRANSACTION READ ONLY")
            .await
            .map_err(db_err)?;
        as_tenant_owner(&tx, m, tenant).await?;
        let mut lines = Vec::new();
        for e in m.tenant_entities() {
            let rows = tx
                .query(
                    &format!(
                        "SELECT row_to_json(t)::text FROM {}.{} t WHERE tenant_id = $1::text ORDER BY created_at, id",
                        q(&schema),
                        q(e.name.as_str())
                    ),
                    &[&tenant.as_str()],
                )
                .await
                .map_err(db_err)?;
            for row in rows {
                let record: serde_json::Value = serde_json::from_str(row.get::<_, &str>(0))
                    .map_err(|e| Error::Internal(e.to_string()))?;
                lines.push(serde_json::json!({ "entity": e.name, "record": record }).to_string());
            }
        }
        tx.commit().await.map_err(db_err)?;
        Ok(lines)
    }
}

/// Acts as the app's owner with the tenant set, for the rest of the transaction: the owner is
/// subject to forced row-level security like any role, so it sees and writes only the tenant.
async fn as_tenant_owner(
    tx: &tokio_postgres::Transaction<'_>,
    m: &AppManifest,
    tenant: &TenantId,
) -> Result<()> {
    tx.batch_execute(&format!("SET LOCAL ROLE {}", q(&names::owner_role(&m.app))))
        .await
        .map_err(db_err)?;
    tx.execute(
        "SELECT set_config('bulkhead.tenant_id', $1, true)",
        &[&tenant.as_str()],
    )
    .await
    .map_err(db_err)?;
    Ok(())
}

/// Deletes a tenant's rows from every tenant table in `schema`, referencing tables first.
async fn delete_tenant_rows(
    tx: &tokio_postgres::Transaction<'_>,
    m: &AppManifest,
    schema: &str,
    tenant: &TenantId,
) -> Result<()> {
    for e in crate::sql::delete_order(m) {
        tx.execute(
            &format!(
                "DELETE FROM {}.{} WHERE tenant_id = $1::text",
                q(schema),
                q(e.name.as_str())
            ),
            &[&tenant.as_str()],
        )
        .await
        .map_err(db_err)?;
    }
    tx.execute(
        &format!(
            "DELETE FROM {}.{} WHERE tenant_id = $1::text",
            q(schema),
            q(crate::ddl::OUTBOX_TABLE)
        ),
        &[&tenant.as_str()],
    )
    .await
    .map_err(db_err)?;
    Ok(())
}

/// The database and schema that hold a tenant's tables at a level.
fn tenant_location(m: &AppManifest, tenant: &TenantId, level: IsolationLevel) -> (String, String) {
    match level {
        IsolationLevel::Row => (names::app_database(&m.app), names::SHARED_SCHEMA.to_owned()),
        IsolationLevel::Schema => (names::app_database(&m.app), names::tenant_schema(tenant)),
        IsolationLevel::Database => (
            names::tenant_database(&m.app, tenant),
            names::SHARED_SCHEMA.to_owned(),
        ),
    }
}

impl Provisioner {
    /// Loads records written by [`Provisioner::export_tenant`] into a tenant's tables at
    /// `level`, replacing whatever rows the tenant had there, in one transaction. It runs as
    /// the app's owner under forced row-level security with the tenant set, so a record
    /// carrying another `tenant_id` is refused rather than written. Returns how many records
    /// were loaded.
    pub async fn import_tenant(
        &self,
        m: &AppManifest,
        tenant: &TenantId,
        level: IsolationLevel,
        lines: &[String],
    ) -> Result<usize> {
        let mut by_entity: std::collections::HashMap<String, Vec<serde_json::Value>> =
            std::collections::HashMap::new();
        for (i, line) in lines.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| Error::Internal(format!("import line {}: {e}", i + 1)))?;
            let entity = v["entity"]
                .as_str()
                .filter(|e| m.tenant_entities().any(|t| t.name.as_str() == *e))
                .ok_or_else(|| {
                    Error::Internal(format!(
                        "import line {}: unknown entity {}",
                        i + 1,
                        v["entity"]
                    ))
                })?;
            by_entity
                .entry(entity.to_owned())
                .or_default()
                .push(v["record"].clone());
        }
        let (database, schema) = tenant_location(m, tenant, level);
        let mut client = self.connect_to(&database).await?;
        let tx = client.transaction().await.map_err(db_err)?;
        as_tenant_owner(&tx, m, tenant).await?;
        delete_tenant_rows(&tx, m, &schema, tenant).await?;
        let order = crate::sql::delete_order(m);
        let mut loaded = 0;
        // Referenced entities first: the reverse of the delete order.
        for e in order.iter().rev() {
            let table = format!("{}.{}", q(&schema), q(e.name.as_str()));
            let insert = format!(
                "INSERT INTO {table} SELECT * FROM json_populate_record(NULL::{table}, $1::text::json)"
            );
            for record in by_entity.remove(e.name.as_str()).unwrap_or_default() {
                tx.execute(&insert, &[&record.to_string()])
                    .await
                    .map_err(db_err)?;
                loaded += 1;
            }
        }
        tx.commit().await.map_err(db_err)?;
        Ok(loaded)
    }
}

impl Provisioner {
    /// Asks every search follower of the tenant to rebuild its index from the database: a
    /// `rebuild` row in the tenant's outbox, written as the owner with the tenant set.
    pub async fn request_search_rebuild(
        &self,
        m: &AppManifest,
        tenant: &TenantId,
        level: IsolationLevel,
    ) -> Result<()> {
        let (database, schema) = tenant_location(m, tenant, level);
        let mut client = self.connect_to(&database).await?;
        let tx = client.transaction().await.map_err(db_err)?;
        as_tenant_owner(&tx, m, tenant).await?;
        tx.execute(
            &format!(
                "INSERT INTO {}.{} (tenant_id, entity, op) VALUES ($1, '', 'rebuild')",
                q(&schema),
                q(crate::ddl::OUTBOX_TABLE)
            ),
            &[&tenant.as_str()],
        )
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }
}

/// Where one migration target lives: the shared schema or one tenant.
#[derive(Debug, Clone)]
pub enum MigrationTarget {
    Shared,
    Tenant(TenantId, IsolationLevel),
}

impl Provisioner {
    /// Of `tenants` (schema tenants of `m`'s app), those whose schema is already at `m` — its
    /// last recorded manifest plans nothing — with their version: one connection and one read
    /// per 256 schemas, nothing locked. A migrate skips them (their grants and policies were
    /// applied with that version, in the same transaction).
    pub async fn current_schemas(
        &self,
        m: &AppManifest,
        tenants: &[TenantId],
    ) -> Result<std::collections::HashMap<TenantId, i32>> {
        let client = self.connect_to(&names::app_database(&m.app)).await?;
        let schemas: Vec<String> = tenants.iter().map(names::tenant_schema).collect();
        let recorded = migrate::recorded_in_schemas(&client, &schemas).await?;
        Ok(tenants
            .iter()
            .zip(recorded)
            .filter_map(|(t, r)| {
                let (version, old) = r?;
                let target = Target::TenantSchema(t.clone());
                migrate::plan(Some(&old), m, &target)
                    .is_empty()
                    .then(|| (t.clone(), version))
            })
            .collect())
    }
}

impl Provisioner {
    /// Migrates one target on its own connection (so targets can run in parallel). Each
    /// target is one transaction and records its version, so a rerun after a failure only
    /// redoes what did not finish.
    pub async fn migrate_one(
        &self,
        m: &AppManifest,
        target: &MigrationTarget,
        allow_destructive: bool,
    ) -> Result<MigrationReport> {
        // A database tenant already at `m`: one read on its database, nothing locked.
        if let MigrationTarget::Tenant(t, IsolationLevel::Database) = target {
            let c = self.connect_to(&names::tenant_database(&m.app, t)).await?;
            let target = Target::TenantDatabase(t.clone());
            if let [Some((version, old))] =
                &migrate::recorded_in_schemas(&c, &[target.schema()]).await?[..]
                && migrate::plan(Some(old), m, &target).is_empty()
            {
                return Ok(MigrationReport {
                    target: target.describe(),
                    version: *version,
                    plan: Plan { steps: Vec::new() },
                });
            }
        }
        let admin = self.connect_to(&self.maintenance_db).await?;
        let cross_exists = Self::role_exists(&admin, &names::cross_tenant_role(&m.app)).await?
            || !m.cross_tenant_reads.is_empty();
        // Roles are changed by the shared target only: tenant targets run in parallel, and
        // concurrent ALTER ROLE on one role would collide.
        if matches!(target, MigrationTarget::Shared) && !m.cross_tenant_reads.is_empty() {
            Self::ensure_login_role(&admin, &names::cross_tenant_role(&m.app)).await?;
        }
        drop(admin);
        match target {
            MigrationTarget::Shared => {
                let mut c = self.connect_to(&names::app_database(&m.app)).await?;
                migrate::apply(&mut c, m, &Target::Shared, allow_destructive, cross_exists).await
            }
            MigrationTarget::Tenant(_, IsolationLevel::Row) => Ok(MigrationReport {
                target: "row-level tenant (shared tables)".into(),
                version: 0,
                plan: Plan { steps: Vec::new() },
            }),
            MigrationTarget::Tenant(t, IsolationLevel::Schema) => {
                let mut c = self.connect_to(&names::app_database(&m.app)).await?;
                let target = Target::TenantSchema(t.clone());
                migrate::apply(&mut c, m, &target, allow_destructive, cross_exists).await
            }
            MigrationTarget::Tenant(t, IsolationLevel::Database) => {
                let mut c = self.connect_to(&names::tenant_database(&m.app, t)).await?;
                let target = Target::TenantDatabase(t.clone());
                migrate::apply(&mut c, m, &target, allow_destructive, false).await
            }
        }
    }
}
