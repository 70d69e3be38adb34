//! Data and level checks: the catalog of every location read as the administrator (roles, forced
//! RLS, policies, composite references, PUBLIC rights), probes with each app's own credentials
//! from the vault, and where each tenant's data actually is.

use bulkhead_control::platform::{Platform, RUNTIME_PASSWORD, tenant_password_path};
use bulkhead_control::registry;
use bulkhead_model::names;
use bulkhead_model::{AppId, AppManifest, IsolationLevel, TenantId};

use crate::report::Checks;
use crate::{Error, Result};

/// How to reach the cluster: the platform database's address and admin credentials.
#[derive(Clone)]
pub(crate) struct Cluster {
    pub(crate) admin: bulkhead_pg::PgConfig,
}

impl Cluster {
    async fn connect(
        cfg: bulkhead_pg::PgConfig,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) = cfg.connect().await?;
        tokio::spawn(conn);
        Ok(client)
    }

    async fn admin(&self, db: &str) -> Result<tokio_postgres::Client> {
        let mut cfg = self.admin.clone();
        cfg.dbname(db);
        Self::connect(cfg).await.map_err(|source| Error::Database {
            context: format!("connecting to {db} as the administrator"),
            source,
        })
    }

    /// A connection as `role` with `password` (a probe: failure is evidence, not an error).
    async fn as_role(
        &self,
        db: &str,
        role: &str,
        password: &str,
    ) -> Result<tokio_postgres::Client, String> {
        let mut cfg = self.admin.clone();
        cfg.dbname(db).user(role).password(password);
        Self::connect(cfg).await.map_err(|e| format!("{e:#}"))
    }
}

/// Catalog checks of one location (a schema in a database).
async fn catalog(
    checks: &mut Checks,
    c: &tokio_postgres::Client,
    scope: &str,
    schema: &str,
) -> Result<()> {
    use bulkhead_pg::catalog as cat;
    let tables = cat::tenant_tables(c, schema).await?;
    let bad: Vec<String> = tables
        .iter()
        .filter(|t| !(t.rls_enabled && t.rls_forced))
        .map(|t| {
            format!(
                "{schema}.{} (enabled {}, forced {})",
                t.table, t.rls_enabled, t.rls_forced
            )
        })
        .collect();
    checks.add(
        "catalog.rls",
        scope,
        bad.is_empty() && !tables.is_empty(),
        if bad.is_empty() {
            format!(
                "{} tenant tables in {schema}: RLS enabled and forced",
                tables.len()
            )
        } else {
            format!("not forced: {}", bad.join(", "))
        },
    );
    let has = |s: &Option<String>| {
        s.as_deref()
            .is_some_and(|s| s.contains(cat::TENANT_CONDITION_TEXT))
    };
    let mut problems = Vec::new();
    for t in &tables {
        let policies = cat::policies(c, schema, &t.table).await?;
        for cmd in ["SELECT", "INSERT", "UPDATE", "DELETE"] {
            let ok = policies.iter().any(|p| {
                (p.command == cmd || p.command == "ALL")
                    && match cmd {
                        "INSERT" => has(&p.with_check),
                        "UPDATE" => has(&p.using) && has(&p.with_check),
                        _ => has(&p.using),
                    }
            });
            if !ok {
                problems.push(format!(
                    "{schema}.{}: no {cmd} policy with the tenant condition",
                    t.table
                ));
            }
        }
        // A permissive policy without the condition (other than the granted cross-tenant read
        // for its own role) would widen every command it covers.
        for p in &policies {
            let cross = p.using.as_deref() == Some("true") && p.command == "SELECT";
            if p.permissive && !cross && !has(&p.using) && !has(&p.with_check) {
                problems.push(format!(
                    "{schema}.{}: a {} policy without the tenant condition",
                    t.table, p.command
                ));
            }
        }
    }
    checks.add(
        "catalog.policies",
        scope,
        problems.is_empty(),
        if problems.is_empty() {
            format!(
                "{} tables × 4 commands: USING and WITH CHECK carry the tenant condition",
                tables.len()
            )
        } else {
            problems.join("; ")
        },
    );
    let refs = cat::tenant_references(c, schema).await?;
    let single: Vec<String> = refs
        .iter()
        .filter(|r| !r.with_tenant)
        .map(|r| format!("{}.{}", r.table, r.name))
        .collect();
    checks.add(
        "catalog.references",
        scope,
        single.is_empty(),
        if single.is_empty() {
            format!(
                "{} references between tenant tables, all led by tenant_id",
                refs.len()
            )
        } else {
            format!("references without tenant_id: {}", single.join(", "))
        },
    );
    let public = cat::public_table_rights(c, schema).await?;
    let db_public = cat::public_connect_or_usage(c, schema).await?;
    checks.add(
        "catalog.public_privileges",
        scope,
        public.is_empty() && !db_public,
        if public.is_empty() && !db_public {
            format!("PUBLIC has no CONNECT on the database, no USAGE on {schema}, no table rights")
        } else {
            format!(
                "PUBLIC connect/usage: {db_public}; PUBLIC table rights on: {}",
                public.join(", ")
            )
        },
    );
    Ok(())
}

/// A role's attributes and what it owns in the connected database.
async fn role_ok(c: &tokio_postgres::Client, role: &str) -> Result<(bool, String)> {
    let Some(f) = bulkhead_pg::catalog::role_facts(c, role).await? else {
        return Ok((false, format!("role {role} does not exist")));
    };
    let ok =
        !f.superuser && !f.bypass_rls && !f.create_role && !f.create_db && f.owned_relations == 0;
    Ok((
        ok,
        format!(
            "{role}: superuser {}, bypassrls {}, createrole {}, createdb {}, owns {} relations",
            f.superuser, f.bypass_rls, f.create_role, f.create_db, f.owned_relations
        ),
    ))
}

pub(crate) struct TenantInfo {
    pub(crate) id: TenantId,
    pub(crate) level: IsolationLevel,
    pub(crate) record: registry::TenantRecord,
}

pub(crate) async fn data_checks(
    checks: &mut Checks,
    cluster: &Cluster,
    p: &Platform,
    m: &AppManifest,
    tenants: &[TenantInfo],
    all_apps: &[AppId],
) -> Result<()> {
    let app = &m.app;
    let app_db = names::app_database(app);
    let admin = cluster.admin(&app_db).await?;
    // Roles.
    let mut roles = vec![names::runtime_role(app)];
    roles.extend(
        tenants
            .iter()
            .filter(|t| t.level != IsolationLevel::Row)
            .map(|t| names::tenant_role(app, &t.id)),
    );
    let mut evidence = Vec::new();
    let mut all_ok = true;
    for role in &roles {
        let (ok, e) = role_ok(&admin, role).await?;
        all_ok &= ok;
        evidence.push(e);
    }
    checks.add("catalog.roles", app.as_str(), all_ok, evidence.join("; "));
    catalog(checks, &admin, app.as_str(), names::SHARED_SCHEMA).await?;
    for t in tenants {
        let scope = format!("{app}/{}", t.id);
        match t.level {
            IsolationLevel::Row => {}
            IsolationLevel::Schema => {
                catalog(checks, &admin, &scope, &names::tenant_schema(&t.id)).await?;
            }
            IsolationLevel::Database => {
                let db = names::tenant_database(app, &t.id);
                match cluster.admin(&db).await {
                    Ok(c) => catalog(checks, &c, &scope, names::SHARED_SCHEMA).await?,
                    Err(e) => checks.add("catalog.rls", &scope, false, format!("{e:#}")),
                }
            }
        }
    }
    // Probes with the app's own runtime credentials.
    let runtime = names::runtime_role(app);
    let password = p
        .vault
        .get(app, RUNTIME_PASSWORD)
        .await
        .map_err(|source| Error::Vault {
            context: "reading the app's runtime password from its vault space".into(),
            source,
        })?;
    let rt = match cluster.as_role(&app_db, &runtime, password.expose()).await {
        Ok(c) => c,
        Err(e) => {
            checks.add(
                "probe.unscoped",
                app.as_str(),
                false,
                format!("cannot log in as {runtime}: {e}"),
            );
            return Ok(());
        }
    };
    let mut seen = Vec::new();
    for t in bulkhead_pg::catalog::tenant_tables(&admin, names::SHARED_SCHEMA).await? {
        if let Ok(n) =
            bulkhead_pg::catalog::probe_unscoped(&rt, names::SHARED_SCHEMA, &t.table).await
            && n > 0
        {
            seen.push(format!("{}: {n} rows", t.table));
        }
    }
    checks.add(
        "probe.unscoped",
        app.as_str(),
        seen.is_empty(),
        if seen.is_empty() {
            format!("as {runtime} without a tenant: every shared tenant table returns no row")
        } else {
            format!("rows visible without a tenant: {}", seen.join(", "))
        },
    );
    for t in tenants.iter().filter(|t| t.level == IsolationLevel::Schema) {
        let scope = format!("{app}/{}", t.id);
        let schema = names::tenant_schema(&t.id);
        let mut leaks = Vec::new();
        let role = names::tenant_role(app, &t.id);
        for table in bulkhead_pg::catalog::tenant_tables(&admin, &schema).await? {
            let table = table.table;
            // Without the tenant's role: refused. With it but another tenant's setting: nothing.
            if let Ok(n) = bulkhead_pg::catalog::probe_unscoped(&rt, &schema, &table).await {
                leaks.push(format!(
                    "{table} readable without the tenant role ({n} rows)"
                ));
            }
            if let Ok(n) = bulkhead_pg::catalog::probe_forged(&rt, &schema, &table, &role).await
                && n > 0
            {
                leaks.push(format!("{table}: {n} rows under a forged tenant setting"));
            }
        }
        checks.add(
            "probe.forged_tenant",
            &scope,
            leaks.is_empty(),
            if leaks.is_empty() {
                format!("{schema}: refused without the tenant role, empty under a forged setting")
            } else {
                leaks.join("; ")
            },
        );
    }
    // Other databases: other apps', and tenant silos, refuse this app's runtime role; each
    // silo's own role is refused by every other silo.
    let mut entered = Vec::new();
    let mut tried = 0;
    for other in all_apps.iter().filter(|a| *a != app) {
        tried += 1;
        if cluster
            .as_role(&names::app_database(other), &runtime, password.expose())
            .await
            .is_ok()
        {
            entered.push(format!("{runtime} entered {}", names::app_database(other)));
        }
    }
    let silos: Vec<&TenantInfo> = tenants
        .iter()
        .filter(|t| t.level == IsolationLevel::Database)
        .collect();
    for t in &silos {
        tried += 1;
        let db = names::tenant_database(app, &t.id);
        if cluster
            .as_role(&db, &runtime, password.expose())
            .await
            .is_ok()
        {
            entered.push(format!("{runtime} entered {db}"));
        }
        let Ok(own) = p.vault.get(app, &tenant_password_path(&t.id)).await else {
            continue;
        };
        for other in silos.iter().filter(|o| o.id != t.id) {
            tried += 1;
            let odb = names::tenant_database(app, &other.id);
            let role = names::tenant_role(app, &t.id);
            if cluster.as_role(&odb, &role, own.expose()).await.is_ok() {
                entered.push(format!("{role} entered {odb}"));
            }
        }
    }
    checks.add(
        "probe.other_database",
        app.as_str(),
        entered.is_empty(),
        if entered.is_empty() {
            format!("{tried} connections to other apps' and tenants' databases refused")
        } else {
            entered.join("; ")
        },
    );
    Ok(())
}

/// Where each tenant's data is, against where it was declared.
pub(crate) async fn level_checks(
    checks: &mut Checks,
    cluster: &Cluster,
    p: &Platform,
    m: &AppManifest,
    tenants: &[TenantInfo],
) -> Result<()> {
    let app = &m.app;
    let admin = cluster.admin(&names::app_database(app)).await?;
    let shared = bulkhead_pg::catalog::tenant_tables(&admin, names::SHARED_SCHEMA).await?;
    let databases = bulkhead_pg::catalog::databases(&cluster.admin("postgres").await?).await?;
    for t in tenants {
        let mut shared_rows = 0i64;
        // Entity tables only: the search outbox holds row ids, not rows.
        for table in shared
            .iter()
            .filter(|s| s.table != bulkhead_pg::ddl::OUTBOX_TABLE)
        {
            shared_rows += bulkhead_pg::catalog::rows_of_tenant(
                &admin,
                names::SHARED_SCHEMA,
                &table.table,
                t.id.as_str(),
            )
            .await?;
        }
        let schema_exists =
            bulkhead_pg::catalog::schema_exists(&admin, &names::tenant_schema(&t.id)).await?;
        let db_exists = databases.contains(&names::tenant_database(app, &t.id));
        // In the vault space of the worker that serves it: its own, or the app's.
        let space =
            bulkhead_control::platform::Platform::serving_space(app, &t.id, t.record.dedicated());
        let secret = p
            .vault
            .get(&space, &tenant_password_path(&t.id))
            .await
            .is_ok();
        let observed = match (shared_rows > 0, schema_exists, db_exists) {
            (false, false, true) if secret => Some(IsolationLevel::Database),
            (false, true, false) => Some(IsolationLevel::Schema),
            (_, false, false) => Some(IsolationLevel::Row),
            _ => None,
        };
        checks.add(
            "levels.observed",
            format!("{app}/{}", t.id),
            observed == Some(t.level),
            format!(
                "declared {}; rows in shared tables {shared_rows}, schema {}, database {}, database credentials in the vault {secret}",
                t.level.as_str(),
                if schema_exists { "present" } else { "absent" },
                if db_exists { "present" } else { "absent" },
            ),
        );
    }
    Ok(())
}
