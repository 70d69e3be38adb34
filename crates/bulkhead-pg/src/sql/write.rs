//! Writes on an entity: insert (also in the self-scoping form), update and delete, with the
//! reference checks a write needs.

use bulkhead_model::names::quote_ident as q;
use bulkhead_model::{AppManifest, Entity, FieldType, TenantId};
use serde_json::{Map, Value};

use super::{Binder, Filter, Param, row_clause, select_list, table};
use crate::error::{Error, Result};

fn object<'v>(entity: &Entity, v: &'v Value) -> Result<&'v Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| Error::BadQuery(format!("a {} record must be a JSON object", entity.name)))
}

fn check_writable_field<'e>(entity: &'e Entity, name: &str) -> Result<&'e bulkhead_model::Field> {
    entity.field(name).ok_or_else(|| Error::UnknownField {
        entity: entity.name.to_string(),
        field: name.to_owned(),
    })
}

/// A referenced row the caller must be able to read for the write to happen: the target
/// entity (in `schema`), the id the write names, and the caller's read filter on the target
/// (its `own` scope). A write whose check fails changes nothing.
#[derive(Debug, Clone)]
pub struct RefCheck<'e> {
    pub schema: String,
    pub target: &'e Entity,
    pub id: String,
    pub filter: Filter,
}

/// `EXISTS (…)` for each check, ANDed; `None` without checks.
fn ref_guards(
    b: &mut Binder,
    checks: &[RefCheck<'_>],
    tenant: Option<&TenantId>,
) -> Result<Option<String>> {
    if checks.is_empty() {
        return Ok(None);
    }
    let parts = guard_reads(b, checks, tenant)?
        .into_iter()
        .map(|read| format!("EXISTS ({read})"))
        .collect::<Vec<_>>();
    Ok(Some(parts.join(" AND ")))
}

/// For each check, `SELECT 1 FROM target WHERE <its row, tenant and filter>`.
fn guard_reads(
    b: &mut Binder,
    checks: &[RefCheck<'_>],
    tenant: Option<&TenantId>,
) -> Result<Vec<String>> {
    let mut reads = Vec::with_capacity(checks.len());
    for c in checks {
        let t = if c.target.is_tenant_scoped() {
            tenant
        } else {
            None
        };
        let clause = row_clause(b, c.target, t, &c.id, Some(&c.filter))?;
        reads.push(format!(
            "SELECT 1 FROM {} WHERE {clause}",
            table(&c.schema, c.target)
        ));
    }
    Ok(reads)
}

/// `INSERT … RETURNING`. `owner` fills the entity's owner field with the acting user's id,
/// whatever the record says. With `checks`, the row is inserted only when every referenced row
/// is readable by the caller (`INSERT … SELECT … WHERE EXISTS …`): no row back means a check
/// failed.
pub fn insert_sql(
    schema: &str,
    entity: &Entity,
    record: &Value,
    tenant: Option<&TenantId>,
    owner: Option<&str>,
    checks: &[RefCheck<'_>],
) -> Result<(String, Vec<Param>)> {
    insert_in(
        Binder::default(),
        schema,
        entity,
        record,
        tenant,
        owner,
        checks,
    )
}

/// [`insert_sql`] made one statement that scopes itself, as [`self_scoped_read`] does for
/// reads: `WITH bulkhead_scope AS MATERIALIZED (SELECT set_config(…, $1, true) AS tenant)
/// INSERT … SELECT … FROM bulkhead_scope [CROSS JOIN LATERAL (guard LIMIT 1)]… RETURNING …`.
/// The inserted row takes its `tenant_id` from the scope row, so it cannot exist before the
/// setting is made, and the policy's check, evaluated on that row, sees it; each reference
/// guard is a `LATERAL` subquery naming the scope row's tenant, so its scan is parameterised by
/// that row and runs after the setting (as an `EXISTS`, PostgreSQL turns it into a semi-join
/// whose order it may choose). Fails closed: a row checked without the setting
/// violates the policy and nothing is written. Only for tenant entities of `row` and
/// `database` tenants (a schema tenant's role and `search_path` must hold before planning).
pub fn self_scoped_insert_sql(
    schema: &str,
    entity: &Entity,
    record: &Value,
    tenant: &TenantId,
    owner: Option<&str>,
    checks: &[RefCheck<'_>],
) -> Result<(String, Vec<Param>)> {
    if !entity.is_tenant_scoped() {
        return Err(Error::Internal(format!(
            "{} is not a tenant entity",
            entity.name
        )));
    }
    let b = Binder::scoped(tenant);
    insert_in(b, schema, entity, record, Some(tenant), owner, checks)
}

fn insert_in(
    mut b: Binder,
    schema: &str,
    entity: &Entity,
    record: &Value,
    tenant: Option<&TenantId>,
    owner: Option<&str>,
    checks: &[RefCheck<'_>],
) -> Result<(String, Vec<Param>)> {
    let obj = object(entity, record)?;
    let scoped = b.is_scoped();
    let mut cols = Vec::new();
    let mut vals = Vec::new();
    if let Some(t) = super::scoped_tenant(entity, tenant)? {
        cols.push(q("tenant_id"));
        vals.push(b.tenant(t));
    }
    for name in obj.keys() {
        check_writable_field(entity, name)?;
    }
    for field in &entity.fields {
        let is_owner = entity.owner.as_ref() == Some(&field.name);
        let value = match (is_owner, owner) {
            (true, Some(user)) => Some(Value::from(user)),
            _ => obj.get(field.name.as_str()).cloned(),
        };
        match value {
            None | Some(Value::Null) if field.required && field.default.is_none() => {
                return Err(Error::MissingField {
                    entity: entity.name.to_string(),
                    field: field.name.to_string(),
                });
            }
            Some(Value::Null) if field.required => {
                return Err(Error::MissingField {
                    entity: entity.name.to_string(),
                    field: field.name.to_string(),
                });
            }
            None => {}
            Some(v) => {
                cols.push(q(field.name.as_str()));
                vals.push(b.value(entity, field.name.as_str(), &field.ty, &v)?);
            }
        }
    }
    let sql = if scoped {
        // Each guard a `LATERAL` subquery with a `LIMIT` (so never flattened into a join the
        // planner may order freely), parameterised by the scope row: it runs per scope row.
        let guards: String = guard_reads(&mut b, checks, tenant)?
            .into_iter()
            .enumerate()
            .map(|(i, read)| format!(" CROSS JOIN LATERAL ({read} LIMIT 1) AS bulkhead_guard_{i}"))
            .collect();
        format!(
            "WITH bulkhead_scope AS MATERIALIZED \
             (SELECT set_config('bulkhead.tenant_id', $1::text, true) AS tenant) \
             INSERT INTO {} ({}) SELECT {} FROM bulkhead_scope{guards} RETURNING {}",
            table(schema, entity),
            cols.join(", "),
            vals.join(", "),
            select_list(entity, false)
        )
    } else if let Some(guards) = ref_guards(&mut b, checks, tenant)? {
        format!(
            "INSERT INTO {} ({}) SELECT {} WHERE {guards} RETURNING {}",
            table(schema, entity),
            cols.join(", "),
            vals.join(", "),
            select_list(entity, false)
        )
    } else if cols.is_empty() {
        format!(
            "INSERT INTO {} DEFAULT VALUES RETURNING {}",
            table(schema, entity),
            select_list(entity, false)
        )
    } else {
        format!(
            "INSERT INTO {} ({}) VALUES ({}) RETURNING {}",
            table(schema, entity),
            cols.join(", "),
            vals.join(", "),
            select_list(entity, false)
        )
    };
    Ok((sql, b.params))
}

/// `UPDATE … RETURNING` of one row, only when every referenced row in `checks` is readable by
/// the caller: no row back means the row is not there (or not the caller's) or a check failed.
pub fn update_sql(
    schema: &str,
    entity: &Entity,
    tenant: Option<&TenantId>,
    id: &str,
    patch: &Value,
    extra: Option<&Filter>,
    checks: &[RefCheck<'_>],
) -> Result<(String, Vec<Param>)> {
    let obj = object(entity, patch)?;
    let mut b = Binder::default();
    let mut row = row_clause(&mut b, entity, tenant, id, extra)?;
    if let Some(guards) = ref_guards(&mut b, checks, tenant)? {
        row = format!("{row} AND {guards}");
    }
    let mut sets = Vec::new();
    for (name, value) in obj {
        let field = check_writable_field(entity, name)?;
        if entity.owner.as_ref() == Some(&field.name) {
            return Err(Error::BadQuery(format!(
                "{}.{name} is the owner field and is set by the platform",
                entity.name
            )));
        }
        if value.is_null() && field.required {
            return Err(Error::MissingField {
                entity: entity.name.to_string(),
                field: name.clone(),
            });
        }
        let p = b.value(entity, name, &field.ty, value)?;
        sets.push(format!("{} = {p}", q(name)));
    }
    sets.push(format!("{} = now()", q("updated_at")));
    let sql = format!(
        "UPDATE {} SET {} WHERE {row} RETURNING {}",
        table(schema, entity),
        sets.join(", "),
        select_list(entity, false)
    );
    Ok((sql, b.params))
}

pub fn delete_sql(
    schema: &str,
    entity: &Entity,
    tenant: Option<&TenantId>,
    id: &str,
    extra: Option<&Filter>,
) -> Result<(String, Vec<Param>)> {
    let mut b = Binder::default();
    let row = row_clause(&mut b, entity, tenant, id, extra)?;
    let sql = format!(
        "DELETE FROM {} WHERE {row} RETURNING {}::text",
        table(schema, entity),
        q("id")
    );
    Ok((sql, b.params))
}

/// Tenant entities ordered so that referencing entities come before referenced ones (the
/// order in which to delete a tenant's rows). Cycles fall back to declaration order.
pub fn delete_order(m: &AppManifest) -> Vec<&Entity> {
    let mut left: Vec<&Entity> = m.tenant_entities().collect();
    let mut out = Vec::new();
    while !left.is_empty() {
        let referenced = |e: &Entity, others: &[&Entity]| {
            others.iter().any(|o| {
                o.name != e.name
                    && o.fields
                        .iter()
                        .any(|f| matches!(&f.ty, FieldType::Ref { entity } if *entity == e.name))
            })
        };
        let pos = (0..left.len())
            .find(|&i| !referenced(left[i], &left))
            .unwrap_or(0);
        out.push(left.remove(pos));
    }
    out
}
