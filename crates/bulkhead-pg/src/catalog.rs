//! Facts from the PostgreSQL catalog, and probes, for `bulkhead verify`: which tables carry a
//! tenant, whether their row-level security is forced, what their policies say, whether their
//! references lead with `tenant_id`, what PUBLIC may do, what a role may do — read on a
//! connection the caller chooses (the administrator's for facts, an app's own for probes).
//! Read-only, except the probes' transactions, which always roll back.

use bulkhead_model::names::quote_ident as q;
use tokio_postgres::Client;

use crate::ddl::AUDIT_TABLE;
use crate::error::{Error, Result};

/// A table with a `tenant_id` column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantTable {
    pub table: String,
    pub rls_enabled: bool,
    pub rls_forced: bool,
}

/// One row of `pg_policies`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `SELECT`, `INSERT`, `UPDATE`, `DELETE` or `ALL`.
    pub command: String,
    pub using: Option<String>,
    pub with_check: Option<String>,
    pub permissive: bool,
}

/// A foreign key between two tenant tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub table: String,
    pub name: String,
    /// Whether its columns include `tenant_id`.
    pub with_tenant: bool,
}

/// What a role may do, and what it owns in the connected database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleFacts {
    pub superuser: bool,
    pub bypass_rls: bool,
    pub create_role: bool,
    pub create_db: bool,
    pub owned_relations: i64,
}

/// The text every tenant policy condition contains, as PostgreSQL prints it back.
pub const TENANT_CONDITION_TEXT: &str = "current_setting('bulkhead.tenant_id'::text, true)";

/// Tables of `schema` with a `tenant_id` column (the cross-tenant audit table aside).
pub async fn tenant_tables(c: &Client, schema: &str) -> Result<Vec<TenantTable>> {
    Ok(c
        .query(
            "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
             WHERE c.relkind = 'r' AND n.nspname = $1 AND c.relname <> $2
             ORDER BY 1",
            &[&schema, &AUDIT_TABLE],
        )
        .await
        .map_err(Error::Database)?
        .iter()
        .map(|r| TenantTable {
            table: r.get(0),
            rls_enabled: r.get(1),
            rls_forced: r.get(2),
        })
        .collect())
}

pub async fn policies(c: &Client, schema: &str, table: &str) -> Result<Vec<Policy>> {
    Ok(c.query(
        "SELECT cmd, qual, with_check, permissive = 'PERMISSIVE' FROM pg_policies
             WHERE schemaname = $1 AND tablename = $2",
        &[&schema, &table],
    )
    .await
    .map_err(Error::Database)?
    .iter()
    .map(|r| Policy {
        command: r.get(0),
        using: r.get(1),
        with_check: r.get(2),
        permissive: r.get(3),
    })
    .collect())
}

/// Foreign keys in `schema` from one tenant table to another.
pub async fn tenant_references(c: &Client, schema: &str) -> Result<Vec<Reference>> {
    Ok(c
        .query(
            "SELECT cl.relname, con.conname,
                    EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = con.conrelid
                            AND a.attname = 'tenant_id' AND a.attnum = ANY(con.conkey))
             FROM pg_constraint con JOIN pg_class cl ON cl.oid = con.conrelid
             JOIN pg_namespace n ON n.oid = cl.relnamespace
             WHERE con.contype = 'f' AND n.nspname = $1
               AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = con.conrelid AND a.attname = 'tenant_id')
               AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = con.confrelid AND a.attname = 'tenant_id')",
            &[&schema],
        )
        .await
        .map_err(Error::Database)?
        .iter()
        .map(|r| Reference {
            table: r.get(0),
            name: r.get(1),
            with_tenant: r.get(2),
        })
        .collect())
}

/// Tables of `schema` on which PUBLIC has any of SELECT, INSERT, UPDATE, DELETE.
pub async fn public_table_rights(c: &Client, schema: &str) -> Result<Vec<String>> {
    Ok(c.query(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relkind = 'r'
               AND (has_table_privilege('public', c.oid, 'SELECT')
                    OR has_table_privilege('public', c.oid, 'INSERT')
                    OR has_table_privilege('public', c.oid, 'UPDATE')
                    OR has_table_privilege('public', c.oid, 'DELETE'))",
        &[&schema],
    )
    .await
    .map_err(Error::Database)?
    .iter()
    .map(|r| r.get(0))
    .collect())
}

/// Whether PUBLIC may connect to the current database or use `schema`.
pub async fn public_connect_or_usage(c: &Client, schema: &str) -> Result<bool> {
    Ok(c.query_one(
        "SELECT has_database_privilege('public', current_database(), 'CONNECT')
                 OR has_schema_privilege('public', $1, 'USAGE')",
        &[&schema],
    )
    .await
    .map_err(Error::Database)?
    .get(0))
}

/// `None` when the role does not exist.
pub async fn role_facts(c: &Client, role: &str) -> Result<Option<RoleFacts>> {
    Ok(c.query_opt(
        "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb,
                    (SELECT count(*) FROM pg_class cl WHERE cl.relowner = r.oid)
             FROM pg_roles r WHERE rolname = $1",
        &[&role],
    )
    .await
    .map_err(Error::Database)?
    .map(|r| RoleFacts {
        superuser: r.get(0),
        bypass_rls: r.get(1),
        create_role: r.get(2),
        create_db: r.get(3),
        owned_relations: r.get(4),
    }))
}

pub async fn schema_exists(c: &Client, schema: &str) -> Result<bool> {
    Ok(c.query_one(
        "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
        &[&schema],
    )
    .await
    .map_err(Error::Database)?
    .get(0))
}

pub async fn databases(c: &Client) -> Result<Vec<String>> {
    Ok(c.query("SELECT datname FROM pg_database", &[])
        .await
        .map_err(Error::Database)?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Rows of `schema.table` whose `tenant_id` is `tenant` (as the administrator: where a
/// tenant's rows actually are).
pub async fn rows_of_tenant(c: &Client, schema: &str, table: &str, tenant: &str) -> Result<i64> {
    Ok(c.query_one(
        &format!(
            "SELECT count(*) FROM {}.{} WHERE tenant_id = $1",
            q(schema),
            q(table)
        ),
        &[&tenant],
    )
    .await
    .map_err(Error::Database)?
    .get(0))
}

/// Probe: the rows of `schema.table` the connection's role sees with no tenant set. An error
/// (no privilege) means it sees none.
pub async fn probe_unscoped(c: &Client, schema: &str, table: &str) -> Result<i64, String> {
    c.query_one(
        &format!("SELECT count(*) FROM {}.{}", q(schema), q(table)),
        &[],
    )
    .await
    .map(|r| r.get(0))
    .map_err(|e| e.to_string())
}

/// Probe: the rows of `schema.table` seen after assuming `role` with a tenant setting that
/// names no tenant, in a transaction that is rolled back.
pub async fn probe_forged(
    c: &Client,
    schema: &str,
    table: &str,
    role: &str,
) -> Result<i64, String> {
    let run = async {
        c.batch_execute(&format!(
            "BEGIN; SELECT set_config('bulkhead.tenant_id', 'bulkhead-verify-forged', true); SET LOCAL ROLE {}",
            q(role)
        ))
        .await?;
        let n: i64 = c
            .query_one(
                &format!("SELECT count(*) FROM {}.{}", q(schema), q(table)),
                &[],
            )
            .await?
            .get(0);
        Ok::<_, tokio_postgres::Error>(n)
    };
    let result = run.await.map_err(|e| e.to_string());
    let _ = c.batch_execute("ROLLBACK").await;
    result
}
