//! The operations, written once for both executors ([`super::TenantDb`], one pipelined
//! transaction per operation, and [`super::Tx`], statements inside an open one): each applies
//! the caller's permissions (`permit`: scope, hidden and read-only fields, readable references)
//! before it builds its statement.

use serde::de::DeserializeOwned;

use super::*;

/// Executes the statements built by the operations below: either one pipelined transaction
/// per operation ([`TenantDb`]) or statements inside an open transaction ([`Tx`]).
pub(super) trait Exec {
    fn ctx(&self) -> &TenantContext;
    async fn run(
        &mut self,
        entity: &Entity,
        deleting: bool,
        stmt: &str,
        params: Vec<Param>,
    ) -> Result<Vec<Row>>;

    /// Runs a read built by `sql::get_sql`, `select_sql` or `count_sql`: [`Exec::run`], unless
    /// the executor has a cheaper way that scopes it as surely.
    async fn read(&mut self, entity: &Entity, stmt: &str, params: Vec<Param>) -> Result<Vec<Row>> {
        self.run(entity, false, stmt, params).await
    }

    /// Whether an insert into `entity` may be one statement that scopes itself
    /// (`sql::self_scoped_insert_sql`, run on its own by `TenantContext::run_one`) rather than
    /// a statement for [`Exec::run`]. Not inside an open transaction, which is scoped already.
    fn inserts_self_scoped(&self, _entity: &Entity) -> bool {
        false
    }
}

fn tenant_arg(e: &Entity, ctx: &TenantContext) -> Option<TenantId> {
    e.is_tenant_scoped().then(|| ctx.placement.tenant.clone())
}

fn writable<'m>(ctx: &'m TenantContext, entity: &str) -> Result<&'m Entity> {
    let e = ctx.entity(entity)?;
    if e.cross_tenant {
        return Err(Error::ReadOnlyEntity {
            entity: entity.to_owned(),
        });
    }
    Ok(e)
}

/// The caller's permission for `action`, with the row filter it implies (`own`: the
/// owner field equals the acting user). `None` scope is refused here.
fn permit(
    ctx: &TenantContext,
    e: &Entity,
    action: Action,
    name: &'static str,
) -> Result<(Effective, Option<Filter>)> {
    let eff = e.effective(&ctx.actor.roles, action);
    let forbidden = || Error::Forbidden {
        entity: e.name.to_string(),
        action: name,
        field: None,
    };
    let filter = match eff.scope {
        Scope::None => return Err(forbidden()),
        Scope::All => None,
        Scope::Own => {
            let (Some(owner), Some(user)) = (&e.owner, &ctx.actor.user_id) else {
                return Err(forbidden());
            };
            Some(Filter::Eq(owner.to_string(), Value::from(user.as_str())))
        }
    };
    Ok((eff, filter))
}

/// Refuses filters and ordering on fields the caller cannot see, as if they did not exist.
fn check_visible<'f>(
    e: &Entity,
    hidden: &[String],
    fields: impl IntoIterator<Item = &'f str>,
) -> Result<()> {
    for f in fields {
        if hidden.iter().any(|h| h == f) {
            return Err(Error::UnknownField {
                entity: e.name.to_string(),
                field: f.to_owned(),
            });
        }
    }
    Ok(())
}

/// Refuses writes of fields the caller may not write (read-only or hidden for it).
fn check_writable(
    e: &Entity,
    eff: &Effective,
    hidden: &[String],
    record: &Value,
    name: &'static str,
) -> Result<()> {
    if let Some(obj) = record.as_object() {
        for key in obj.keys() {
            if eff.readonly.iter().chain(hidden).any(|f| f == key) {
                return Err(Error::Forbidden {
                    entity: e.name.to_string(),
                    action: name,
                    field: Some(key.clone()),
                });
            }
        }
    }
    Ok(())
}

fn strip(mut record: Value, hidden: &[String]) -> Value {
    if let Some(obj) = record.as_object_mut() {
        for h in hidden {
            obj.remove(h);
        }
    }
    record
}

fn and(a: Option<Filter>, b: Option<&Filter>) -> Option<Filter> {
    match b {
        None => a,
        Some(b) => Some(Filter::and_then(a, b.clone())),
    }
}

/// The references a write names that the caller must be able to read, so that a write
/// can neither confirm that an id exists nor attach a row to one the caller cannot see. A
/// reference to an entity the caller may not read at all is refused as if the row did not
/// exist (the same error as the foreign key gives); one to an entity it reads only its own
/// rows of becomes a check inside the write's statement.
fn ref_checks<'m>(
    ctx: &'m TenantContext,
    e: &Entity,
    record: &Value,
) -> Result<Vec<sql::RefCheck<'m>>> {
    let mut out = Vec::new();
    let Some(obj) = record.as_object() else {
        return Ok(out);
    };
    for field in &e.fields {
        let FieldType::Ref { entity: target } = &field.ty else {
            continue;
        };
        let Some(Value::String(id)) = obj.get(field.name.as_str()) else {
            continue;
        };
        if bulkhead_model::values::uuid(id).is_err() {
            continue; // the statement builder names the field and the expected type
        }
        let target = ctx.entity(target.as_str())?;
        match permit(ctx, target, Action::Read, "read") {
            Err(_) => {
                return Err(Error::ReferenceNotFound {
                    entity: e.name.to_string(),
                    constraint: crate::ddl::fkey_name(e, field),
                });
            }
            Ok((_, None)) => {}
            Ok((_, Some(filter))) => out.push(sql::RefCheck {
                schema: schema_for(ctx, target),
                target,
                id: id.clone(),
                filter,
            }),
        }
    }
    Ok(out)
}

fn reference_not_readable(e: &Entity, checks: &[sql::RefCheck<'_>]) -> Error {
    let field = checks
        .first()
        .and_then(|c| {
            e.fields
                .iter()
                .find(|f| matches!(&f.ty, FieldType::Ref { entity } if *entity == c.target.name))
        })
        .map(|f| crate::ddl::fkey_name(e, f))
        .unwrap_or_default();
    Error::ReferenceNotFound {
        entity: e.name.to_string(),
        constraint: field,
    }
}

/// Fields hidden from the caller when reading `e`.
fn hidden_for_read(ctx: &TenantContext, e: &Entity) -> Vec<String> {
    e.effective(&ctx.actor.roles, Action::Read).hidden
}

/// A get's row (none or one) and what the caller may not see of it.
struct GetRows {
    ctx: TenantContext,
    hidden: Vec<String>,
    rows: Vec<Row>,
}

impl GetRows {
    /// The entity and the row got; none is `not_found`.
    fn row(&self, entity: &str) -> Result<(&Entity, &Row)> {
        let e = self.ctx.entity(entity)?;
        let row = self.rows.first().ok_or_else(|| Error::NotFound {
            entity: entity.to_owned(),
        })?;
        Ok((e, row))
    }
}

async fn get_rows(x: &mut impl Exec, entity: &str, id: &str) -> Result<GetRows> {
    let ctx = x.ctx().clone();
    let e = ctx.entity(entity)?;
    let (eff, own) = permit(&ctx, e, Action::Read, "read")?;
    let schema = schema_for(&ctx, e);
    let tenant = tenant_arg(e, &ctx);
    let (stmt, params) = match &own {
        // The same text for every id: built once.
        None => ctx.texts().get(&schema, e, tenant.as_ref(), id)?,
        Some(own) => {
            let (stmt, params) = sql::get_sql(&schema, e, tenant.as_ref(), id, Some(own))?;
            (stmt.into(), params)
        }
    };
    let rows = x.read(e, &stmt, params).await?;
    Ok(GetRows {
        hidden: eff.hidden,
        rows,
        ctx,
    })
}

pub(super) async fn get(x: &mut impl Exec, entity: &str, id: &str) -> Result<Value> {
    let got = get_rows(x, entity, id).await?;
    let (e, row) = got.row(entity)?;
    Ok(strip(sql::record_from_row(e, row, false)?, &got.hidden))
}

/// [`get`], the record written as JSON text (see [`sql::RecordWriter`]).
pub(super) async fn get_json(x: &mut impl Exec, entity: &str, id: &str) -> Result<Vec<u8>> {
    let got = get_rows(x, entity, id).await?;
    let (e, row) = got.row(entity)?;
    let mut out = Vec::with_capacity(256);
    sql::RecordWriter::new(e, &got.hidden)?.write(row, &mut out)?;
    Ok(out)
}

/// [`get`] read into the caller's type.
pub(super) async fn get_as<T: DeserializeOwned>(
    x: &mut impl Exec,
    entity: &str,
    id: &str,
) -> Result<T> {
    let got = get_rows(x, entity, id).await?;
    let (e, row) = got.row(entity)?;
    sql::RecordReader::new(e, &got.hidden).read(row)
}

pub(super) async fn insert(x: &mut impl Exec, entity: &str, record: &Value) -> Result<Value> {
    let ctx = x.ctx().clone();
    let e = writable(&ctx, entity)?;
    let (eff, _) = permit(&ctx, e, Action::Create, "create")?;
    let hidden = hidden_for_read(&ctx, e);
    check_writable(e, &eff, &hidden, record, "create")?;
    let checks = ref_checks(&ctx, e, record)?;
    let (schema, tenant, owner) = (
        ctx.schema(),
        &ctx.placement.tenant,
        ctx.actor.user_id.as_deref(),
    );
    let rows = if x.inserts_self_scoped(e) {
        let (stmt, params) =
            sql::self_scoped_insert_sql(&schema, e, record, tenant, owner, &checks)?;
        ctx.run_one(entity, &stmt, &params).await?
    } else {
        let (stmt, params) = sql::insert_sql(&schema, e, record, Some(tenant), owner, &checks)?;
        x.run(e, false, &stmt, params).await?
    };
    let row = rows.first().ok_or_else(|| {
        if checks.is_empty() {
            Error::Internal("insert returned no row".into())
        } else {
            reference_not_readable(e, &checks)
        }
    })?;
    Ok(strip(sql::record_from_row(e, row, false)?, &hidden))
}

pub(super) async fn update(
    x: &mut impl Exec,
    entity: &str,
    id: &str,
    patch: &Value,
) -> Result<Value> {
    let ctx = x.ctx().clone();
    let e = writable(&ctx, entity)?;
    let (eff, own) = permit(&ctx, e, Action::Update, "update")?;
    let hidden = hidden_for_read(&ctx, e);
    check_writable(e, &eff, &hidden, patch, "update")?;
    let checks = ref_checks(&ctx, e, patch)?;
    let (stmt, params) = sql::update_sql(
        &ctx.schema(),
        e,
        Some(&ctx.placement.tenant),
        id,
        patch,
        own.as_ref(),
        &checks,
    )?;
    let rows = x.run(e, false, &stmt, params).await?;
    match rows.first() {
        Some(row) => Ok(strip(sql::record_from_row(e, row, false)?, &hidden)),
        // No row: either the row is not the caller's to update, or a reference check
        // failed; only a row the caller can update learns about its references.
        None if !checks.is_empty() && get(x, entity, id).await.is_ok() => {
            Err(reference_not_readable(e, &checks))
        }
        None => Err(Error::NotFound {
            entity: entity.to_owned(),
        }),
    }
}

pub(super) async fn delete(x: &mut impl Exec, entity: &str, id: &str) -> Result<()> {
    let ctx = x.ctx().clone();
    let e = writable(&ctx, entity)?;
    let (_, own) = permit(&ctx, e, Action::Delete, "delete")?;
    let (stmt, params) = sql::delete_sql(
        &ctx.schema(),
        e,
        Some(&ctx.placement.tenant),
        id,
        own.as_ref(),
    )?;
    let rows = x.run(e, true, &stmt, params).await?;
    if rows.is_empty() {
        return Err(Error::NotFound {
            entity: entity.to_owned(),
        });
    }
    Ok(())
}

/// One page's rows (up to `limit + 1`: one more says there is a next page), read under the
/// caller's permissions, with the fields hidden from it and the query as run.
struct PageRows {
    ctx: TenantContext,
    hidden: Vec<String>,
    spec: QuerySpec,
    rows: Vec<Row>,
}

impl PageRows {
    fn limit(&self) -> usize {
        usize::try_from(self.spec.limit).unwrap_or(usize::MAX)
    }

    /// The rows of the page itself (one more was read, to know whether more follow).
    fn shown(&self) -> &[Row] {
        &self.rows[..self.rows.len().min(self.limit())]
    }

    /// The cursor after the page's last row when more follow.
    fn next_cursor(&self, e: &Entity) -> Result<Option<String>> {
        let more = self.rows.len() > self.limit();
        match (more, self.shown().last()) {
            (true, Some(last)) => Ok(Some(sql::encode_cursor(
                &sql::field_from_row(e, last, &self.spec.order_field)?,
                &sql::field_from_row(e, last, "id")?,
            ))),
            _ => Ok(None),
        }
    }
}

async fn page_rows(x: &mut impl Exec, entity: &str, spec: &QuerySpec) -> Result<PageRows> {
    let ctx = x.ctx().clone();
    let e = ctx.entity(entity)?;
    let (eff, own) = permit(&ctx, e, Action::Read, "read")?;
    let mentioned = spec.filter.iter().flat_map(sql::filter_fields);
    check_visible(e, &eff.hidden, mentioned.chain([spec.order_field.as_str()]))?;
    let spec = QuerySpec {
        filter: and(own, spec.filter.as_ref()),
        ..spec.clone()
    };
    let schema = schema_for(&ctx, e);
    let (stmt, params) = ctx
        .texts()
        .list(&schema, e, tenant_arg(e, &ctx).as_ref(), &spec)?;
    let rows = x.read(e, &stmt, params).await?;
    Ok(PageRows {
        hidden: eff.hidden,
        spec,
        rows,
        ctx,
    })
}

pub(super) async fn fetch(x: &mut impl Exec, entity: &str, spec: &QuerySpec) -> Result<Page> {
    let page = page_rows(x, entity, spec).await?;
    let e = page.ctx.entity(entity)?;
    let shown = page.shown();
    let records = shown
        .iter()
        .map(|r| Ok(strip(sql::record_from_row(e, r, false)?, &page.hidden)))
        .collect::<Result<Vec<_>>>()?;
    let next_cursor = page.next_cursor(e)?;
    Ok(Page {
        records,
        next_cursor,
    })
}

/// [`fetch`], each record read into the caller's type (see [`sql::RecordReader`]).
pub(super) async fn fetch_as<T: DeserializeOwned>(
    x: &mut impl Exec,
    entity: &str,
    spec: &QuerySpec,
) -> Result<Page<T>> {
    let page = page_rows(x, entity, spec).await?;
    let e = page.ctx.entity(entity)?;
    let shown = page.shown();
    let reader = sql::RecordReader::new(e, &page.hidden);
    let records = shown
        .iter()
        .map(|row| reader.read(row))
        .collect::<Result<Vec<T>>>()?;
    let next_cursor = page.next_cursor(e)?;
    Ok(Page {
        records,
        next_cursor,
    })
}

/// [`fetch`], the records written as one JSON array (see [`sql::RecordWriter`]).
pub(super) async fn fetch_json(
    x: &mut impl Exec,
    entity: &str,
    spec: &QuerySpec,
) -> Result<JsonPage> {
    let page = page_rows(x, entity, spec).await?;
    let e = page.ctx.entity(entity)?;
    let shown = page.shown();
    let writer = sql::RecordWriter::new(e, &page.hidden)?;
    let mut records = Vec::with_capacity(2 + shown.len() * 256);
    records.push(b'[');
    for (n, row) in shown.iter().enumerate() {
        if n > 0 {
            records.push(b',');
        }
        writer.write(row, &mut records)?;
    }
    records.push(b']');
    let next_cursor = page.next_cursor(e)?;
    Ok(JsonPage {
        records,
        next_cursor,
    })
}

pub(super) async fn count(x: &mut impl Exec, entity: &str, filter: Option<&Filter>) -> Result<i64> {
    let ctx = x.ctx().clone();
    let e = ctx.entity(entity)?;
    let (eff, own) = permit(&ctx, e, Action::Read, "read")?;
    check_visible(
        e,
        &eff.hidden,
        filter.into_iter().flat_map(sql::filter_fields),
    )?;
    let filter = and(own, filter);
    let schema = schema_for(&ctx, e);
    let (stmt, params) = sql::count_sql(&schema, e, tenant_arg(e, &ctx).as_ref(), filter.as_ref())?;
    let rows = x.read(e, &stmt, params).await?;
    rows.first()
        .map(|r| r.get::<_, i64>(0))
        .ok_or_else(|| Error::Internal("count returned no row".into()))
}

fn schema_for(ctx: &TenantContext, e: &Entity) -> String {
    if e.cross_tenant {
        names::SHARED_SCHEMA.to_owned()
    } else {
        ctx.schema()
    }
}
