//! Reads on an entity: a page, a count, one row by id, a cross-tenant branch, and the
//! self-scoping form of a tenant read.

use bulkhead_model::{Entity, FieldType, TenantId};
use serde_json::Value;

use super::binder::problem;
use super::cursor::decode_cursor;
use super::{
    Binder, Direction, Filter, MAX_LIMIT, Param, QuerySpec, bind_id, check_limit, column_type,
    filter_sql, push_tenant, row_clause, select_list, table, tenant_clause,
};
use crate::error::{Error, Result};
use bulkhead_model::names::quote_ident as q;

/// `SELECT … WHERE tenant … AND filters AND keyset ORDER BY … LIMIT n+1`.
pub fn select_sql(
    schema: &str,
    entity: &Entity,
    tenant: Option<&TenantId>,
    spec: &QuerySpec,
) -> Result<(String, Vec<Param>)> {
    let mut b = Binder::default();
    let mut clauses = vec![tenant_clause(&mut b, entity, tenant)?];
    if let Some(f) = &spec.filter {
        clauses.push(filter_sql(&mut b, entity, f, 0)?);
    }
    let order_ty = column_type(entity, &spec.order_field)?;
    if matches!(order_ty, FieldType::Json) {
        return Err(Error::BadQuery(format!(
            "cannot order by json field {}",
            spec.order_field
        )));
    }
    let col = q(&spec.order_field);
    let id = q("id");
    if let Some(cursor) = &spec.after {
        let (value, last_id) = decode_cursor(cursor)?;
        let pid = bind_id(&mut b, entity, &last_id)?;
        let (op, dir_nulls_last) = match spec.direction {
            Direction::Asc => (">", true),
            Direction::Desc => ("<", false),
        };
        let clause = if spec.order_field == "id" {
            format!("{id} {op} {pid}")
        } else if value.is_null() {
            // NULLs sort last ascending and first descending (PostgreSQL's default).
            if dir_nulls_last {
                format!("({col} IS NULL AND {id} {op} {pid})")
            } else {
                format!("(({col} IS NULL AND {id} {op} {pid}) OR {col} IS NOT NULL)")
            }
        } else {
            let pv = b.value(entity, &spec.order_field, &order_ty, &value)?;
            if dir_nulls_last {
                format!("(({col}, {id}) {op} ({pv}, {pid}) OR {col} IS NULL)")
            } else {
                format!("({col}, {id}) {op} ({pv}, {pid})")
            }
        };
        clauses.push(clause);
    }
    check_limit(spec.limit)?;
    let dir = match spec.direction {
        Direction::Asc => "ASC",
        Direction::Desc => "DESC",
    };
    // The table's columns, qualified: the select list reads numbers, dates and ids as text
    // under the columns' own names, and an unqualified ORDER BY name means the output column
    // (so `10` would sort before `9`, and uuids by their text, which no index serves).
    let from = table(schema, entity);
    let order = if spec.order_field == "id" {
        format!("{from}.{id} {dir}")
    } else {
        format!("{from}.{col} {dir}, {from}.{id} {dir}")
    };
    // One more row than asked, to know whether a next page exists. Written into the text, not
    // bound: PostgreSQL cannot cost a plan with `LIMIT $n` without knowing `n`, so a prepared
    // statement with a bound limit is planned afresh on every execution (its generic plan never
    // wins), which cost a list of 20 ≈ 40 µs of server time; with the limit in the text the
    // generic plan is kept after five runs. The limit is a checked integer.
    let limit = spec.limit + 1;
    let sql = format!(
        "SELECT {} FROM {from} WHERE {} ORDER BY {order} LIMIT {limit}",
        select_list(entity, false),
        clauses.join(" AND ")
    );
    Ok((sql, b.params))
}

/// One branch of a cross-tenant read: every row of `schema` with its `tenant_id`.
pub fn cross_branch(
    b: &mut Binder,
    schema: &str,
    entity: &Entity,
    spec: &QuerySpec,
) -> Result<String> {
    let mut clauses = vec!["TRUE".to_owned()];
    if let Some(f) = &spec.filter {
        clauses.push(filter_sql(b, entity, f, 0)?);
    }
    Ok(format!(
        "(SELECT {} FROM {} WHERE {} ORDER BY 1, 2 LIMIT {})",
        select_list(entity, true),
        table(schema, entity),
        clauses.join(" AND "),
        spec.limit.clamp(1, MAX_LIMIT)
    ))
}

pub fn count_sql(
    schema: &str,
    entity: &Entity,
    tenant: Option<&TenantId>,
    filter: Option<&Filter>,
) -> Result<(String, Vec<Param>)> {
    let mut b = Binder::default();
    let mut clauses = vec![tenant_clause(&mut b, entity, tenant)?];
    if let Some(f) = filter {
        clauses.push(filter_sql(&mut b, entity, f, 0)?);
    }
    let sql = format!(
        "SELECT count(*) FROM {} WHERE {}",
        table(schema, entity),
        clauses.join(" AND ")
    );
    Ok((sql, b.params))
}

/// How every read on a tenant entity ([`get_sql`], [`select_sql`], [`count_sql`]) begins its
/// conditions: the tenant is always its first parameter.
const TENANT_FIRST: &str = "\"tenant_id\" = $1::text";

/// A read on a tenant entity made one statement that scopes itself: a subquery sets
/// `bulkhead.tenant_id` to the tenant (`$1`) transaction-locally, and the read is a `LATERAL`
/// subquery whose tenant condition is that subquery's column — so its scan is parameterised by
/// the setting row and runs after it, and the RLS policy, evaluated in that scan, sees the
/// setting. The subquery is a `MATERIALIZED` CTE: as a plain subquery (even with `OFFSET 0`)
/// PostgreSQL copies the `set_config` call into the read's conditions, the read no longer
/// depends on the row, and nothing would fix the join order. The setting ends with the
/// statement's implicit transaction. Fails closed: were the scan ever to run first, the policy
/// would see no tenant and yield no rows. `None` when `stmt` is not such a read.
pub fn self_scoped_read(stmt: &str) -> Option<String> {
    let (head, tail) = stmt.split_once(TENANT_FIRST)?;
    Some(format!(
        "WITH bulkhead_scope AS MATERIALIZED \
         (SELECT set_config('bulkhead.tenant_id', $1::text, true) AS tenant) \
         SELECT bulkhead_read.* FROM bulkhead_scope \
         CROSS JOIN LATERAL ({head}\"tenant_id\" = bulkhead_scope.tenant{tail}) AS bulkhead_read"
    ))
}

pub fn get_sql(
    schema: &str,
    entity: &Entity,
    tenant: Option<&TenantId>,
    id: &str,
    extra: Option<&Filter>,
) -> Result<(String, Vec<Param>)> {
    let mut b = Binder::default();
    let row = row_clause(&mut b, entity, tenant, id, extra)?;
    let sql = format!(
        "SELECT {} FROM {} WHERE {row}",
        select_list(entity, false),
        table(schema, entity),
    );
    Ok((sql, b.params))
}

/// The parameters [`select_sql`] binds for a first page without a filter (`spec.filter` and
/// `spec.after` unset), checked as it checks them: the tenant, and the limit checked (it is
/// part of the text). (Equal to `select_sql`'s: tested.)
pub fn first_page_params(
    entity: &Entity,
    tenant: Option<&TenantId>,
    limit: i64,
) -> Result<Vec<Param>> {
    let mut params: Vec<Param> = Vec::with_capacity(1);
    push_tenant(&mut params, entity, tenant)?;
    check_limit(limit)?;
    Ok(params)
}

/// The parameters [`get_sql`] binds without an extra filter, in its order, checked as it
/// checks them, for a text built before: the tenant (a tenant entity never without it), then
/// the id, which must be a UUID. No text is made. (Equal to `get_sql`'s: tested.)
pub fn get_params(entity: &Entity, tenant: Option<&TenantId>, id: &str) -> Result<Vec<Param>> {
    let mut params: Vec<Param> = Vec::with_capacity(2);
    push_tenant(&mut params, entity, tenant)?;
    let id = Value::from(id);
    FieldType::Uuid
        .check(&id)
        .map_err(|p| problem(entity, "id", p))?;
    let Value::String(id) = id else {
        return Err(Error::Internal("an id is a string".into()));
    };
    params.push(Box::new(id));
    Ok(params)
}
