//! DDL generated from a manifest: tables with tenant-first keys, composite references, unique
//! constraints and indexes led by `tenant_id`, forced row-level security and grants.
//!
//! Identifiers come only from the validated manifest and ids, through
//! [`bulkhead_model::names::quote_ident`]. Default values come from the validated manifest and
//! are rendered as typed literals with [`bulkhead_model::names::quote_literal`].

use bulkhead_model::names::{self, quote_ident as q, quote_literal};
use bulkhead_model::{AppId, AppManifest, Entity, Field, FieldType, TenantId};
use serde_json::Value;

/// The condition every tenant policy uses. `(select …)` makes it an init plan evaluated once
/// per statement; NULL (never set) and '' (set, then reset at transaction end) match no row
/// because `tenant_id` is never empty.
pub const TENANT_CONDITION: &str =
    "tenant_id = (SELECT current_setting('bulkhead.tenant_id', true))";

/// Where a schema is being generated.
#[derive(Debug, Clone)]
pub enum Target {
    /// The app database's `public` schema: shared (row-level) tenant tables and global tables.
    Shared,
    /// A `schema`-level tenant's own schema in the app database.
    TenantSchema(TenantId),
    /// A `database`-level tenant's own database (its `public` schema).
    TenantDatabase(TenantId),
}

impl Target {
    pub fn schema(&self) -> String {
        match self {
            Target::Shared | Target::TenantDatabase(_) => names::SHARED_SCHEMA.to_owned(),
            Target::TenantSchema(t) => names::tenant_schema(t),
        }
    }

    /// Global tables live only in the app database's shared schema.
    fn has_global_tables(&self) -> bool {
        matches!(self, Target::Shared)
    }

    /// The role that gets DML on this target's tenant tables.
    pub fn data_role(&self, app: &AppId) -> String {
        match self {
            Target::Shared => names::runtime_role(app),
            Target::TenantSchema(t) | Target::TenantDatabase(t) => names::tenant_role(app, t),
        }
    }

    /// The cross-tenant role reaches the shared schema and tenant schemas, never a tenant
    /// database (a silo has no other role with CONNECT).
    fn cross_tenant_reachable(&self) -> bool {
        !matches!(self, Target::TenantDatabase(_))
    }

    pub fn describe(&self) -> String {
        match self {
            Target::Shared => "shared schema".into(),
            Target::TenantSchema(t) => format!("schema of tenant {t}"),
            Target::TenantDatabase(t) => format!("database of tenant {t}"),
        }
    }
}

/// Tables this target holds.
pub fn entities_here<'m>(m: &'m AppManifest, target: &Target) -> Vec<&'m Entity> {
    m.entities
        .iter()
        .filter(|e| e.is_tenant_scoped() || target.has_global_tables())
        .collect()
}

fn table(schema: &str, entity: &Entity) -> String {
    format!("{}.{}", q(schema), q(&names::table(&entity.name)))
}

pub fn sql_type(ty: &FieldType) -> &'static str {
    match ty {
        FieldType::Text { .. } | FieldType::Enum { .. } => "text",
        FieldType::Int => "integer",
        FieldType::Bigint => "bigint",
        FieldType::Numeric => "numeric",
        FieldType::Bool => "boolean",
        FieldType::Timestamp => "timestamptz",
        FieldType::Date => "date",
        FieldType::Uuid | FieldType::Ref { .. } => "uuid",
        FieldType::Json => "jsonb",
    }
}

/// A validated default as an SQL literal of the column's type.
fn default_literal(field: &Field, value: &Value) -> String {
    let ty = sql_type(&field.ty);
    match value {
        Value::Bool(b) => b.to_string(),
        Value::Number(n) if !matches!(field.ty, FieldType::Json) => {
            format!("{}::{ty}", quote_literal(&n.to_string()))
        }
        Value::String(s) if !matches!(field.ty, FieldType::Json) => {
            format!("{}::{ty}", quote_literal(s))
        }
        other => format!("{}::jsonb", quote_literal(&other.to_string())),
    }
}

fn column_def(field: &Field) -> String {
    let mut def = format!("{} {}", q(field.name.as_str()), sql_type(&field.ty));
    if field.required {
        def.push_str(" NOT NULL");
    }
    if let Some(d) = &field.default {
        def.push_str(" DEFAULT ");
        def.push_str(&default_literal(field, d));
    }
    def
}

fn check_name(entity: &Entity, field: &Field) -> String {
    names::object(&[entity.name.as_str(), field.name.as_str(), "check"])
}

fn unique_name(entity: &Entity, fields: &[&str]) -> String {
    let mut parts = vec![entity.name.as_str()];
    parts.extend_from_slice(fields);
    parts.push("key");
    names::object(&parts)
}

fn index_name(entity: &Entity, fields: &[&str]) -> String {
    let mut parts = vec![entity.name.as_str()];
    parts.extend_from_slice(fields);
    parts.push("idx");
    names::object(&parts)
}

pub(crate) fn fkey_name(entity: &Entity, field: &Field) -> String {
    names::object(&[entity.name.as_str(), field.name.as_str(), "fkey"])
}

/// The key columns of an entity's constraints: `tenant_id` first for tenant entities.
fn key_cols(entity: &Entity, fields: &[&str]) -> String {
    let mut cols: Vec<String> = Vec::new();
    if entity.is_tenant_scoped() {
        cols.push(q("tenant_id"));
    }
    cols.extend(fields.iter().map(|f| q(f)));
    cols.join(", ")
}

/// Statements for the field-level constraints of one field (check, unique, index).
fn field_constraints(schema: &str, entity: &Entity, field: &Field) -> Vec<String> {
    let t = table(schema, entity);
    let mut out = Vec::new();
    let col = q(field.name.as_str());
    match &field.ty {
        FieldType::Enum { values } => {
            let list: Vec<String> = values.iter().map(|v| quote_literal(v)).collect();
            out.push(format!(
                "ALTER TABLE {t} ADD CONSTRAINT {} CHECK ({col} IN ({}))",
                q(&check_name(entity, field)),
                list.join(", ")
            ));
        }
        FieldType::Text {
            max_length: Some(max),
        } => out.push(format!(
            "ALTER TABLE {t} ADD CONSTRAINT {} CHECK (char_length({col}) <= {max})",
            q(&check_name(entity, field))
        )),
        _ => {}
    }
    if field.unique {
        out.push(format!(
            "ALTER TABLE {t} ADD CONSTRAINT {} UNIQUE ({})",
            q(&unique_name(entity, &[field.name.as_str()])),
            key_cols(entity, &[field.name.as_str()])
        ));
    } else if field.index || matches!(field.ty, FieldType::Ref { .. }) {
        out.push(format!(
            "CREATE INDEX {} ON {t} ({})",
            q(&index_name(entity, &[field.name.as_str()])),
            key_cols(entity, &[field.name.as_str()])
        ));
    }
    out
}

/// Drops what [`field_constraints`] and [`foreign_key`] create, for a changed field.
fn drop_field_constraints(schema: &str, entity: &Entity, field: &Field) -> Vec<String> {
    let t = table(schema, entity);
    vec![
        format!(
            "ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {}",
            q(&check_name(entity, field))
        ),
        format!(
            "ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {}",
            q(&unique_name(entity, &[field.name.as_str()]))
        ),
        format!(
            "ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {}",
            q(&fkey_name(entity, field))
        ),
        format!(
            "DROP INDEX IF EXISTS {}.{}",
            q(schema),
            q(&index_name(entity, &[field.name.as_str()]))
        ),
    ]
}

/// A composite reference `(tenant_id, ref) → (tenant_id, id)` for refs between tenant
/// entities; `ref → id` between global entities. A tenant entity's ref to a global entity has
/// no foreign key (the global table may live in another database); it is type-checked only.
fn foreign_key(schema: &str, m: &AppManifest, entity: &Entity, field: &Field) -> Option<String> {
    let FieldType::Ref { entity: target } = &field.ty else {
        return None;
    };
    let target = m.entity(target.as_str())?;
    let t = table(schema, entity);
    let col = q(field.name.as_str());
    let name = q(&fkey_name(entity, field));
    match (entity.is_tenant_scoped(), target.is_tenant_scoped()) {
        (true, true) => Some(format!(
            "ALTER TABLE {t} ADD CONSTRAINT {name} FOREIGN KEY ({tid}, {col}) REFERENCES {} ({tid}, {id})",
            table(schema, target),
            tid = q("tenant_id"),
            id = q("id"),
        )),
        (false, false) => Some(format!(
            "ALTER TABLE {t} ADD CONSTRAINT {name} FOREIGN KEY ({col}) REFERENCES {} ({})",
            table(schema, target),
            q("id")
        )),
        _ => None,
    }
}

/// `CREATE TABLE` plus its field constraints, unique sets and indexes (no foreign keys: those
/// come after every table exists, see [`foreign_keys`]).
pub fn create_entity(schema: &str, entity: &Entity) -> Vec<String> {
    let t = table(schema, entity);
    let mut cols = Vec::new();
    if entity.is_tenant_scoped() {
        cols.push(format!(
            "{} text NOT NULL CHECK ({} <> '')",
            q("tenant_id"),
            q("tenant_id")
        ));
    }
    cols.push(format!(
        "{} uuid NOT NULL DEFAULT gen_random_uuid()",
        q("id")
    ));
    cols.push(format!(
        "{} timestamptz NOT NULL DEFAULT now()",
        q("created_at")
    ));
    cols.push(format!(
        "{} timestamptz NOT NULL DEFAULT now()",
        q("updated_at")
    ));
    cols.extend(entity.fields.iter().map(column_def));
    cols.push(format!(
        "CONSTRAINT {} PRIMARY KEY ({})",
        q(&names::object(&[entity.name.as_str(), "pkey"])),
        key_cols(entity, &["id"])
    ));
    let mut out = vec![format!("CREATE TABLE {t} (\n  {}\n)", cols.join(",\n  "))];
    // The default list order (created_at, id), led by tenant_id like every index.
    out.push(format!(
        "CREATE INDEX {} ON {t} ({})",
        q(&index_name(entity, &["created_at", "id"])),
        key_cols(entity, &["created_at", "id"])
    ));
    for field in &entity.fields {
        out.extend(field_constraints(schema, entity, field));
    }
    for set in &entity.unique {
        out.push(add_unique(schema, entity, set));
    }
    for set in &entity.indexes {
        out.push(add_index(schema, entity, set));
    }
    out
}

pub fn add_unique(schema: &str, entity: &Entity, set: &[bulkhead_model::Ident]) -> String {
    let fields: Vec<&str> = set.iter().map(|f| f.as_str()).collect();
    format!(
        "ALTER TABLE {} ADD CONSTRAINT {} UNIQUE ({})",
        table(schema, entity),
        q(&unique_name(entity, &fields)),
        key_cols(entity, &fields)
    )
}

pub fn drop_unique(schema: &str, entity: &Entity, set: &[bulkhead_model::Ident]) -> String {
    let fields: Vec<&str> = set.iter().map(|f| f.as_str()).collect();
    format!(
        "ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}",
        table(schema, entity),
        q(&unique_name(entity, &fields))
    )
}

pub fn add_index(schema: &str, entity: &Entity, set: &[bulkhead_model::Ident]) -> String {
    let fields: Vec<&str> = set.iter().map(|f| f.as_str()).collect();
    format!(
        "CREATE INDEX {} ON {} ({})",
        q(&index_name(entity, &fields)),
        table(schema, entity),
        key_cols(entity, &fields)
    )
}

pub fn drop_index(schema: &str, entity: &Entity, set: &[bulkhead_model::Ident]) -> String {
    let fields: Vec<&str> = set.iter().map(|f| f.as_str()).collect();
    format!(
        "DROP INDEX IF EXISTS {}.{}",
        q(schema),
        q(&index_name(entity, &fields))
    )
}

/// Foreign keys of one entity.
pub fn foreign_keys(schema: &str, m: &AppManifest, entity: &Entity) -> Vec<String> {
    entity
        .fields
        .iter()
        .filter_map(|f| foreign_key(schema, m, entity, f))
        .collect()
}

pub fn drop_entity(schema: &str, entity: &Entity) -> String {
    format!("DROP TABLE IF EXISTS {} CASCADE", table(schema, entity))
}

pub fn add_field(schema: &str, m: &AppManifest, entity: &Entity, field: &Field) -> Vec<String> {
    let mut out = vec![format!(
        "ALTER TABLE {} ADD COLUMN {}",
        table(schema, entity),
        column_def(field)
    )];
    out.extend(field_constraints(schema, entity, field));
    out.extend(foreign_key(schema, m, entity, field));
    out
}

pub fn drop_field(schema: &str, entity: &Entity, field: &str) -> String {
    format!(
        "ALTER TABLE {} DROP COLUMN IF EXISTS {} CASCADE",
        table(schema, entity),
        q(field)
    )
}

/// Changes a field's type, nullability, default and constraints in place. Values are
/// converted through text (`USING col::text::newtype`); a value that does not convert fails
/// the whole migration, which then changes nothing.
pub fn change_field(
    schema: &str,
    m: &AppManifest,
    entity: &Entity,
    old: &Field,
    new: &Field,
) -> Vec<String> {
    let t = table(schema, entity);
    let col = q(new.name.as_str());
    let mut out = drop_field_constraints(schema, entity, old);
    out.push(format!("ALTER TABLE {t} ALTER COLUMN {col} DROP DEFAULT"));
    if sql_type(&old.ty) != sql_type(&new.ty) {
        let ty = sql_type(&new.ty);
        out.push(format!(
            "ALTER TABLE {t} ALTER COLUMN {col} TYPE {ty} USING {col}::text::{ty}"
        ));
    }
    out.push(format!(
        "ALTER TABLE {t} ALTER COLUMN {col} {} NOT NULL",
        if new.required { "SET" } else { "DROP" }
    ));
    if let Some(d) = &new.default {
        out.push(format!(
            "ALTER TABLE {t} ALTER COLUMN {col} SET DEFAULT {}",
            default_literal(new, d)
        ));
    }
    out.extend(field_constraints(schema, entity, new));
    out.extend(foreign_key(schema, m, entity, new));
    out
}

/// Forced row-level security on a tenant table `t` (qualified, quoted), with one policy per
/// command carrying the tenant condition in USING and WITH CHECK as the command allows.
fn tenant_rls(t: &str) -> Vec<String> {
    let mut out = vec![
        format!("ALTER TABLE {t} ENABLE ROW LEVEL SECURITY"),
        format!("ALTER TABLE {t} FORCE ROW LEVEL SECURITY"),
    ];
    for (name, clause) in [
        ("select", format!("FOR SELECT USING ({TENANT_CONDITION})")),
        (
            "insert",
            format!("FOR INSERT WITH CHECK ({TENANT_CONDITION})"),
        ),
        (
            "update",
            format!("FOR UPDATE USING ({TENANT_CONDITION}) WITH CHECK ({TENANT_CONDITION})"),
        ),
        ("delete", format!("FOR DELETE USING ({TENANT_CONDITION})")),
    ] {
        let policy = q(&format!("bulkhead_tenant_{name}"));
        out.push(format!("DROP POLICY IF EXISTS {policy} ON {t}"));
        out.push(format!("CREATE POLICY {policy} ON {t} {clause}"));
    }
    out
}

/// Row-level security, policies and grants for every table of the target. Idempotent: run
/// after every migration, so grants and policies always match the current manifest.
pub fn security(m: &AppManifest, target: &Target) -> Vec<String> {
    let schema = target.schema();
    let data_role = q(&target.data_role(&m.app));
    let runtime = q(&names::runtime_role(&m.app));
    let cross = q(&names::cross_tenant_role(&m.app));
    let has_cross = !m.cross_tenant_reads.is_empty() && target.cross_tenant_reachable();
    let mut out = vec![
        format!("REVOKE ALL ON SCHEMA {} FROM PUBLIC", q(&schema)),
        format!("GRANT USAGE ON SCHEMA {} TO {data_role}", q(&schema)),
        format!(
            "REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM PUBLIC, {data_role}",
            q(&schema)
        ),
        format!(
            "REVOKE ALL ON ALL SEQUENCES IN SCHEMA {} FROM PUBLIC, {data_role}",
            q(&schema)
        ),
    ];
    if matches!(target, Target::TenantSchema(_)) {
        // Name lookup only (statements are prepared before the transaction assumes the
        // tenant role); every table privilege stays with the tenant role.
        out.push(format!("GRANT USAGE ON SCHEMA {} TO {runtime}", q(&schema)));
    }
    if has_cross {
        out.push(format!("GRANT USAGE ON SCHEMA {} TO {cross}", q(&schema)));
        out.push(format!(
            "REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {cross}",
            q(&schema)
        ));
    }
    for entity in entities_here(m, target) {
        let t = table(&schema, entity);
        if entity.cross_tenant {
            // Global reference data: readable by the runtime, written by the owner only.
            out.push(format!("GRANT SELECT ON {t} TO {runtime}"));
            continue;
        }
        out.extend(tenant_rls(&t));
        out.push(format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON {t} TO {data_role}"
        ));
        let policy = q("bulkhead_cross_tenant_read");
        out.push(format!("DROP POLICY IF EXISTS {policy} ON {t}"));
        if has_cross && m.grants_cross_tenant(entity.name.as_str()) {
            out.push(format!(
                "CREATE POLICY {policy} ON {t} FOR SELECT TO {cross} USING (true)"
            ));
            out.push(format!("GRANT SELECT ON {t} TO {cross}"));
        }
    }
    out.extend(search_outbox(m, target));
    out.extend(kv_store(m, target));
    if has_cross && matches!(target, Target::Shared) {
        out.push(format!(
            "GRANT INSERT ON {}.{} TO {cross}",
            q(&schema),
            q(AUDIT_TABLE)
        ));
        out.push(format!(
            "GRANT USAGE ON SEQUENCE {}.{} TO {cross}",
            q(&schema),
            q(AUDIT_SEQUENCE)
        ));
    }
    out
}

/// The search outbox: one row per change to a searchable row, written by a trigger in the
/// same transaction as the change, so a committed write always has its outbox row.
pub const OUTBOX_TABLE: &str = "bulkhead_search_outbox";
const OUTBOX_FUNCTION: &str = "bulkhead_search_outbox";
const OUTBOX_TRIGGER: &str = "bulkhead_search_outbox";

/// Fields whose changes reach the search index: the searchable ones and the owner (hits are
/// pre-filtered by owner for `own`-scoped readers).
pub fn search_columns(entity: &Entity) -> Vec<&str> {
    let mut cols: Vec<&str> = entity
        .fields
        .iter()
        .filter(|f| f.search)
        .map(|f| f.name.as_str())
        .collect();
    if cols.is_empty() {
        return cols;
    }
    if let Some(owner) = &entity.owner
        && !cols.contains(&owner.as_str())
    {
        cols.push(owner.as_str());
    }
    cols
}

/// The outbox table, its trigger function and a trigger on every tenant table with searchable
/// fields (dropped from tables that no longer have any). Idempotent; part of [`security`].
///
/// Rows carry `xid` (the writing transaction, `xid8`): a follower that has applied
/// everything below the snapshot xmin it last read can never miss a row committed later,
/// because such a row's transaction was still running, or not started, at that snapshot.
fn search_outbox(m: &AppManifest, target: &Target) -> Vec<String> {
    let schema = target.schema();
    let data_role = q(&target.data_role(&m.app));
    let outbox = format!("{}.{}", q(&schema), q(OUTBOX_TABLE));
    let function = format!("{}.{}", q(&schema), q(OUTBOX_FUNCTION));
    let mut out = vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {outbox} (
  seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id text NOT NULL CHECK (tenant_id <> ''),
  xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
  at timestamptz NOT NULL DEFAULT now(),
  entity text NOT NULL,
  row_id uuid,
  op text NOT NULL CHECK (op IN ('row', 'rebuild'))
)"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS {} ON {outbox} (tenant_id, xid)",
            q(&names::object(&[OUTBOX_TABLE, "xid"]))
        ),
        format!("GRANT SELECT, INSERT, DELETE ON {outbox} TO {data_role}"),
        format!(
            "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog AS $f$
BEGIN
  IF TG_OP = 'DELETE' THEN
    INSERT INTO {outbox} (tenant_id, entity, row_id, op) VALUES (OLD.tenant_id, TG_ARGV[0], OLD.id, 'row');
  ELSE
    INSERT INTO {outbox} (tenant_id, entity, row_id, op) VALUES (NEW.tenant_id, TG_ARGV[0], NEW.id, 'row');
  END IF;
  RETURN NULL;
END
$f$"
        ),
    ];
    out.splice(2..2, tenant_rls(&outbox));
    for entity in entities_here(m, target) {
        if !entity.is_tenant_scoped() || entity.cross_tenant {
            continue;
        }
        let t = table(&schema, entity);
        out.push(format!(
            "DROP TRIGGER IF EXISTS {} ON {t}",
            q(OUTBOX_TRIGGER)
        ));
        let cols = search_columns(entity);
        if cols.is_empty() {
            continue;
        }
        let cols: Vec<String> = cols.iter().map(|c| q(c)).collect();
        out.push(format!(
            "CREATE TRIGGER {} AFTER INSERT OR DELETE OR UPDATE OF {} ON {t} \
             FOR EACH ROW EXECUTE FUNCTION {function}({})",
            q(OUTBOX_TRIGGER),
            cols.join(", "),
            quote_literal(entity.name.as_str())
        ));
    }
    out
}

/// The mini-apps' key-value store (`storage.*` in the `bulkhead` module): one table per
/// location, keyed by tenant first, under the same forced row-level security as every tenant
/// table. `owner` is `''` for the tenant's keys and the user's id for `storage.user.*`.
pub const KV_TABLE: &str = "bulkhead_kv";

/// The key-value table, its policies and grants. Idempotent; part of [`security`].
fn kv_store(m: &AppManifest, target: &Target) -> Vec<String> {
    let schema = target.schema();
    let data_role = q(&target.data_role(&m.app));
    let kv = format!("{}.{}", q(&schema), q(KV_TABLE));
    let mut out = vec![format!(
        "CREATE TABLE IF NOT EXISTS {kv} (
  tenant_id text NOT NULL CHECK (tenant_id <> ''),
  owner text NOT NULL DEFAULT '',
  key text NOT NULL CHECK (length(key) BETWEEN 1 AND 512),
  value jsonb NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, owner, key)
)"
    )];
    out.extend(tenant_rls(&kv));
    out.push(format!(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON {kv} TO {data_role}"
    ));
    out
}

/// Audit of cross-tenant reads, in the app database, written in the same transaction as the
/// read it records.
pub const AUDIT_TABLE: &str = "bulkhead_cross_tenant_audit";
const AUDIT_SEQUENCE: &str = "bulkhead_cross_tenant_audit_id_seq";

pub fn audit_table() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {}.{} (
  id bigserial PRIMARY KEY,
  at timestamptz NOT NULL DEFAULT now(),
  app text NOT NULL,
  entity text NOT NULL,
  reason text NOT NULL,
  actor text,
  request_id text,
  tenant_id text NOT NULL,
  row_count integer
)",
        q(names::SHARED_SCHEMA),
        q(AUDIT_TABLE)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> AppManifest {
        AppManifest::from_yaml(
            r#"app: helpdesk
entities:
  customer:
    fields:
      name: { type: text, required: true, unique: true }
  ticket:
    fields:
      title: { type: text, required: true, max_length: 200 }
      prio: { type: int, default: 3 }
      status: { type: enum, values: [open, "it's"], default: open }
      customer: { type: ref, entity: customer }
      country: { type: ref, entity: country }
  country:
    cross_tenant: true
    fields:
      code: { type: text, unique: true }
cross_tenant_reads: [ticket]
"#,
            "t",
        )
        .unwrap()
    }

    #[test]
    fn tenant_tables_have_tenant_first_keys_and_composite_references() {
        let m = manifest();
        let ticket = m.entity("ticket").unwrap();
        let ddl = create_entity("public", ticket).join(";\n");
        assert!(ddl.contains(r#"PRIMARY KEY ("tenant_id", "id")"#), "{ddl}");
        assert!(
            ddl.contains(r#""prio" integer DEFAULT '3'::integer"#),
            "{ddl}"
        );
        assert!(ddl.contains(r#"IN ('open', 'it''s')"#), "{ddl}");
        let fks = foreign_keys("public", &m, ticket).join(";\n");
        assert!(
            fks.contains(r#"FOREIGN KEY ("tenant_id", "customer") REFERENCES "public"."customer" ("tenant_id", "id")"#),
            "{fks}"
        );
        assert!(!fks.contains("country"), "no FK to a global entity: {fks}");
        let customer = create_entity("public", m.entity("customer").unwrap()).join(";\n");
        assert!(
            customer.contains(r#"UNIQUE ("tenant_id", "name")"#),
            "{customer}"
        );
    }

    #[test]
    fn global_tables_have_no_tenant_column() {
        let m = manifest();
        let ddl = create_entity("public", m.entity("country").unwrap()).join(";\n");
        assert!(!ddl.contains("tenant_id"), "{ddl}");
    }

    #[test]
    fn every_tenant_table_gets_forced_rls_and_four_policies() {
        let m = manifest();
        let sql = security(&m, &Target::Shared).join(";\n");
        for table in ["customer", "ticket"] {
            let t = format!(r#""public"."{table}""#);
            assert!(sql.contains(&format!("ALTER TABLE {t} FORCE ROW LEVEL SECURITY")));
            for cmd in ["SELECT", "INSERT", "UPDATE", "DELETE"] {
                assert!(sql.contains(&format!("ON {t} FOR {cmd}")), "{table} {cmd}");
            }
        }
        assert!(!sql.contains(r#"ALTER TABLE "public"."country" ENABLE"#));
        assert!(sql.contains(r#"FOR SELECT TO "bh_helpdesk_xt" USING (true)"#));
    }

    #[test]
    fn tenant_databases_get_no_global_tables_and_no_cross_tenant_role() {
        let m = manifest();
        let t = TenantId::parse("acme").unwrap();
        let target = Target::TenantDatabase(t);
        assert_eq!(entities_here(&m, &target).len(), 2);
        let sql = security(&m, &target).join(";\n");
        assert!(!sql.contains("bh_helpdesk_xt"), "{sql}");
        assert!(sql.contains(r#"TO "bh_helpdesk_t_acme""#), "{sql}");
    }
}
