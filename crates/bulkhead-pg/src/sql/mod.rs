//! SQL for entity reads and writes, built from the validated manifest.
//!
//! Identifiers come only from the manifest through `quote_ident`; every value is a bound
//! parameter with an explicit cast, so parameter types never depend on inference. Every
//! statement on a tenant entity filters `tenant_id = $1` itself (index use, defence in depth
//! under RLS). This module builds statements; it never executes them.

use bulkhead_model::names::quote_ident as q;
use bulkhead_model::{AppManifest, Entity, FieldType, TenantId};

use serde_json::{Map, Value};
use tokio_postgres::types::ToSql;

use crate::error::{Error, Result};

mod binder;
mod cursor;
mod record_writer;
mod rows;

pub use binder::Binder;
use binder::problem;
use cursor::decode_cursor;
pub use cursor::encode_cursor;
pub use record_writer::RecordWriter;
pub use rows::{record_from_row, rfc3339, select_list};

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

/// A filter on an entity's fields (and `id`, `created_at`, `updated_at`).
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Eq(String, Value),
    Ne(String, Value),
    Lt(String, Value),
    Lte(String, Value),
    Gt(String, Value),
    Gte(String, Value),
    In(String, Vec<Value>),
    /// `true`: the field is null; `false`: it is not.
    IsNull(String, bool),
    /// Case-insensitive substring match on a text or enum field.
    Contains(String, String),
    And(Vec<Filter>),
    Or(Vec<Filter>),
}

/// The comparison operators the APIs take (`field[op]=…` in REST, `where({field: {op: …}})`
/// in functions), in one place.
pub const OPERATORS: &[&str] = &[
    "eq", "ne", "lt", "lte", "gt", "gte", "in", "contains", "null",
];

/// An order given as `field` (ascending) or `-field` (descending).
pub fn order(spec: &str) -> (&str, Direction) {
    match spec.strip_prefix('-') {
        Some(field) => (field, Direction::Desc),
        None => (spec, Direction::Asc),
    }
}

impl Filter {
    /// `field op value` for one of [`OPERATORS`]: `in` takes a list, `null` true or false,
    /// `contains` a string, the others one value (checked against the field's type when the
    /// statement is built). The error names what is wrong.
    pub fn with_operator(field: &str, op: &str, value: Value) -> std::result::Result<Self, String> {
        let f = field.to_owned();
        Ok(match op {
            "eq" => Filter::Eq(f, value),
            "ne" => Filter::Ne(f, value),
            "lt" => Filter::Lt(f, value),
            "lte" => Filter::Lte(f, value),
            "gt" => Filter::Gt(f, value),
            "gte" => Filter::Gte(f, value),
            "in" => match value {
                Value::Array(items) => Filter::In(f, items),
                _ => return Err(format!("{field}[in] takes a list")),
            },
            "null" => match value {
                Value::Bool(b) => Filter::IsNull(f, b),
                _ => return Err(format!("{field}[null] takes true or false")),
            },
            "contains" => match value {
                Value::String(text) => Filter::Contains(f, text),
                _ => return Err(format!("{field}[contains] takes a string")),
            },
            other => {
                return Err(format!(
                    "unknown operator {other:?}; expected {}",
                    OPERATORS.join(", ")
                ));
            }
        })
    }

    pub fn eq(field: &str, value: impl Into<Value>) -> Self {
        Filter::Eq(field.to_owned(), value.into())
    }
    pub fn ne(field: &str, value: impl Into<Value>) -> Self {
        Filter::Ne(field.to_owned(), value.into())
    }
    pub fn lt(field: &str, value: impl Into<Value>) -> Self {
        Filter::Lt(field.to_owned(), value.into())
    }
    pub fn lte(field: &str, value: impl Into<Value>) -> Self {
        Filter::Lte(field.to_owned(), value.into())
    }
    pub fn gt(field: &str, value: impl Into<Value>) -> Self {
        Filter::Gt(field.to_owned(), value.into())
    }
    pub fn gte(field: &str, value: impl Into<Value>) -> Self {
        Filter::Gte(field.to_owned(), value.into())
    }
    pub fn is_in(field: &str, values: Vec<Value>) -> Self {
        Filter::In(field.to_owned(), values)
    }
    pub fn is_null(field: &str) -> Self {
        Filter::IsNull(field.to_owned(), true)
    }
    pub fn not_null(field: &str) -> Self {
        Filter::IsNull(field.to_owned(), false)
    }
    pub fn contains(field: &str, text: &str) -> Self {
        Filter::Contains(field.to_owned(), text.to_owned())
    }
}

impl Filter {
    /// `prev AND next`, flattening an existing AND list.
    pub fn and_then(prev: Option<Filter>, next: Filter) -> Filter {
        match prev {
            None => next,
            Some(Filter::And(mut list)) => {
                list.push(next);
                Filter::And(list)
            }
            Some(prev) => Filter::And(vec![prev, next]),
        }
    }
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Asc,
    Desc,
}

/// What a list query asks for.
#[derive(Debug, Clone)]
pub struct QuerySpec {
    pub filter: Option<Filter>,
    pub order_field: String,
    pub direction: Direction,
    pub limit: i64,
    pub after: Option<String>,
}

impl Default for QuerySpec {
    fn default() -> Self {
        Self {
            filter: None,
            order_field: "created_at".into(),
            direction: Direction::Asc,
            limit: DEFAULT_LIMIT,
            after: None,
        }
    }
}

/// The type of a column, including the platform columns.
fn column_type(entity: &Entity, name: &str) -> Result<FieldType> {
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

fn table(schema: &str, entity: &Entity) -> String {
    format!("{}.{}", q(schema), q(entity.name.as_str()))
}

/// The WHERE clause naming one row: its tenant, any extra filter (permissions), its id.
fn row_clause(
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
fn bind_id(b: &mut Binder, entity: &Entity, id: &str) -> Result<String> {
    b.value(entity, "id", &FieldType::Uuid, &Value::from(id))
}

fn tenant_clause(b: &mut Binder, entity: &Entity, tenant: Option<&TenantId>) -> Result<String> {
    match (entity.is_tenant_scoped(), tenant) {
        (true, Some(t)) => Ok(format!("{} = {}", q("tenant_id"), b.tenant(t))),
        (false, _) => Ok("TRUE".into()),
        // Fail closed: a tenant entity is never queried without its tenant.
        (true, None) => Err(Error::TenantNotFound),
    }
}

fn filter_sql(b: &mut Binder, entity: &Entity, f: &Filter, depth: usize) -> Result<String> {
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
    let limit = b.limit(spec.limit + 1);
    let sql = format!(
        "SELECT {} FROM {from} WHERE {} ORDER BY {order} LIMIT {limit}",
        select_list(entity, false),
        clauses.join(" AND ")
    );
    Ok((sql, b.params))
}

/// The fields a filter mentions.
pub fn filter_fields(f: &Filter) -> Vec<&str> {
    match f {
        Filter::Eq(n, _)
        | Filter::Ne(n, _)
        | Filter::Lt(n, _)
        | Filter::Lte(n, _)
        | Filter::Gt(n, _)
        | Filter::Gte(n, _)
        | Filter::In(n, _)
        | Filter::IsNull(n, _)
        | Filter::Contains(n, _) => vec![n.as_str()],
        Filter::And(list) | Filter::Or(list) => list.iter().flat_map(filter_fields).collect(),
    }
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
/// `spec.after` unset), in its order, checked as it checks them: the tenant, then the limit
/// (one more row than asked, to know whether a next page exists). (Equal to `select_sql`'s:
/// tested.)
pub fn first_page_params(
    entity: &Entity,
    tenant: Option<&TenantId>,
    limit: i64,
) -> Result<Vec<Param>> {
    let mut params: Vec<Param> = Vec::with_capacity(2);
    push_tenant(&mut params, entity, tenant)?;
    check_limit(limit)?;
    params.push(Box::new(limit + 1));
    Ok(params)
}

fn check_limit(limit: i64) -> Result<()> {
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(())
    } else {
        Err(Error::BadQuery(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )))
    }
}

/// The tenant parameter as [`tenant_clause`] binds it; a tenant entity never goes without.
fn push_tenant(params: &mut Vec<Param>, entity: &Entity, tenant: Option<&TenantId>) -> Result<()> {
    match (entity.is_tenant_scoped(), tenant) {
        (true, Some(t)) => params.push(Box::new(t.as_str().to_owned())),
        (false, _) => {}
        (true, None) => return Err(Error::TenantNotFound),
    }
    Ok(())
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
    if entity.is_tenant_scoped() {
        let t = tenant.ok_or(Error::TenantNotFound)?;
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

#[cfg(test)]
mod tests;
