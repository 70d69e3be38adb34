//! SQL for entity reads and writes, built from the validated manifest.
//!
//! Identifiers come only from the manifest through `quote_ident`; every value is a bound
//! parameter with an explicit cast, so parameter types never depend on inference. Every
//! statement on a tenant entity filters `tenant_id = $1` itself (index use, defence in depth
//! under RLS). This module builds statements; it never executes them.

use bulkhead_model::names::quote_ident as q;
use bulkhead_model::{Entity, FieldType, TenantId};

use serde_json::Value;
use tokio_postgres::types::ToSql;

use crate::error::{Error, Result};

mod binder;
mod columns;
mod cursor;
mod query;
mod read;
mod record_reader;
mod record_writer;
mod rows;
mod write;

pub use binder::Binder;
use binder::problem;
pub use cursor::encode_cursor;
pub use query::{Direction, Filter, OPERATORS, QuerySpec, filter_fields, order};
pub use read::{
    count_sql, cross_branch, first_page_params, get_params, get_sql, select_sql, self_scoped_read,
};
pub use record_reader::RecordReader;
pub use record_writer::RecordWriter;
pub use rows::{field_from_row, record_from_row, rfc3339, select_list};
pub use write::{
    RefCheck, delete_order, delete_sql, insert_sql, self_scoped_insert_sql, update_sql,
};

/// A bound parameter.
pub type Param = Box<dyn ToSql + Sync + Send>;

/// Borrowed parameters in the shape tokio-postgres takes.
pub fn param_refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// Most rows a single page may return.
pub const MAX_LIMIT: i64 = 1000;
/// Rows per page when the caller does not say.
pub const DEFAULT_LIMIT: i64 = 50;

/// The type of a column, including the platform columns.
pub(super) fn column_type(entity: &Entity, name: &str) -> Result<FieldType> {
    match name {
        "id" => Ok(FieldType::Uuid),
        "created_at" | "updated_at" => Ok(FieldType::Timestamp),
        _ => entity
            .field(name)
            .map(|f| f.ty.clone())
            .ok_or_else(|| Error::UnknownField {
                entity: entity.name.to_string(),
                field: name.to_owned(),
            }),
    }
}

pub(super) fn table(schema: &str, entity: &Entity) -> String {
    format!("{}.{}", q(schema), q(entity.name.as_str()))
}

/// The WHERE clause naming one row: its tenant, any extra filter (permissions), its id.
pub(super) fn row_clause(
    b: &mut Binder,
    entity: &Entity,
    tenant: Option<&TenantId>,
    id: &str,
    extra: Option<&Filter>,
) -> Result<String> {
    let mut clause = tenant_clause(b, entity, tenant)?;
    if let Some(f) = extra {
        clause = format!("{clause} AND {}", filter_sql(b, entity, f, 0)?);
    }
    let pid = bind_id(b, entity, id)?;
    Ok(format!("{clause} AND {} = {pid}", q("id")))
}

/// Validates an `id` argument as a UUID string and binds it.
pub(super) fn bind_id(b: &mut Binder, entity: &Entity, id: &str) -> Result<String> {
    b.value(entity, "id", &FieldType::Uuid, &Value::from(id))
}

/// The tenant a statement on `entity` is bound to: its tenant for a tenant entity — never
/// without one (fails closed) — and none for global reference data.
pub(super) fn scoped_tenant<'t>(
    entity: &Entity,
    tenant: Option<&'t TenantId>,
) -> Result<Option<&'t TenantId>> {
    match (entity.is_tenant_scoped(), tenant) {
        (true, Some(t)) => Ok(Some(t)),
        (false, _) => Ok(None),
        (true, None) => Err(Error::TenantNotFound),
    }
}

pub(super) fn tenant_clause(
    b: &mut Binder,
    entity: &Entity,
    tenant: Option<&TenantId>,
) -> Result<String> {
    Ok(match scoped_tenant(entity, tenant)? {
        Some(t) => format!("{} = {}", q("tenant_id"), b.tenant(t)),
        None => "TRUE".into(),
    })
}

pub(super) fn filter_sql(
    b: &mut Binder,
    entity: &Entity,
    f: &Filter,
    depth: usize,
) -> Result<String> {
    if depth > 16 {
        return Err(Error::BadQuery("filters nest deeper than 16 levels".into()));
    }
    let cmp = |b: &mut Binder, field: &str, op: &str, v: &Value| -> Result<String> {
        let ty = column_type(entity, field)?;
        if matches!(ty, FieldType::Json) {
            return Err(Error::BadQuery(format!(
                "{field} is json and cannot be compared"
            )));
        }
        if v.is_null() {
            return Err(Error::BadQuery(format!(
                "compare {field} with null using is_null"
            )));
        }
        let p = b.value(entity, field, &ty, v)?;
        Ok(format!("{} {op} {p}", q(field)))
    };
    Ok(match f {
        Filter::Eq(field, v) if v.is_null() => {
            column_type(entity, field)?;
            format!("{} IS NULL", q(field))
        }
        Filter::Ne(field, v) if v.is_null() => {
            column_type(entity, field)?;
            format!("{} IS NOT NULL", q(field))
        }
        Filter::Eq(field, v) => cmp(b, field, "=", v)?,
        Filter::Ne(field, v) => format!("({} OR {} IS NULL)", cmp(b, field, "<>", v)?, q(field)),
        Filter::Lt(field, v) => cmp(b, field, "<", v)?,
        Filter::Lte(field, v) => cmp(b, field, "<=", v)?,
        Filter::Gt(field, v) => cmp(b, field, ">", v)?,
        Filter::Gte(field, v) => cmp(b, field, ">=", v)?,
        Filter::In(field, values) => {
            if values.len() > 1000 {
                return Err(Error::BadQuery("in() takes at most 1000 values".into()));
            }
            if values.is_empty() {
                column_type(entity, field)?;
                "FALSE".into()
            } else {
                let ty = column_type(entity, field)?;
                let ps = values
                    .iter()
                    .map(|v| b.value(entity, field, &ty, v))
                    .collect::<Result<Vec<_>>>()?;
                format!("{} IN ({})", q(field), ps.join(", "))
            }
        }
        Filter::IsNull(field, null) => {
            column_type(entity, field)?;
            format!("{} IS {}NULL", q(field), if *null { "" } else { "NOT " })
        }
        Filter::Contains(field, text) => {
            let ty = column_type(entity, field)?;
            if !matches!(ty, FieldType::Text { .. } | FieldType::Enum { .. }) {
                return Err(Error::BadQuery(format!(
                    "contains() needs a text field; {field} is {}",
                    ty.name()
                )));
            }
            bulkhead_model::values::text(text, None).map_err(|p| problem(entity, field, p))?;
            let escaped = text
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            let p = b.text(format!("%{escaped}%"));
            format!("{} ILIKE {p}", q(field))
        }
        Filter::And(list) | Filter::Or(list) => {
            let (joiner, empty) = if matches!(f, Filter::And(_)) {
                (" AND ", "TRUE")
            } else {
                (" OR ", "FALSE")
            };
            if list.is_empty() {
                empty.into()
            } else {
                let parts = list
                    .iter()
                    .map(|x| filter_sql(b, entity, x, depth + 1))
                    .collect::<Result<Vec<_>>>()?;
                format!("({})", parts.join(joiner))
            }
        }
    })
}

pub(super) fn check_limit(limit: i64) -> Result<()> {
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(())
    } else {
        Err(Error::BadQuery(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )))
    }
}

/// The tenant parameter as [`tenant_clause`] binds it.
pub(super) fn push_tenant(
    params: &mut Vec<Param>,
    entity: &Entity,
    tenant: Option<&TenantId>,
) -> Result<()> {
    if let Some(t) = scoped_tenant(entity, tenant)? {
        params.push(Box::new(t.as_str().to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
