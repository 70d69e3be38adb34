//! The data plane of one app: [`DataPlane`] (held by the runtime), [`TenantContext`] (minted by
//! the runtime for a resolved tenant) and [`TenantDb`] (the only way app code reaches data).
//!
//! Every operation on tenant data runs in a transaction that first sets
//! `bulkhead.tenant_id` with `set_config(…, true)` on the same connection (and, for `schema`
//! tenants, `role` and `search_path`), and every statement also filters `tenant_id`. A single
//! operation pipelines BEGIN, the setting, the statement and COMMIT: one network round trip.
//! App code never passes SQL: only entity names, field names and JSON values, checked against
//! the manifest.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bulkhead_model::names::{self, quote_ident as q};
use bulkhead_model::{
    Action, AppManifest, Effective, Entity, FieldType, IsolationLevel, Scope, TenantId,
};
use serde_json::Value;
use tokio_postgres::Row;

use crate::error::{Error, Result};
use crate::provision::Secret;
use crate::router::{self, Conn, Endpoint, PoolSettings, Router};
use crate::sql::{self, Direction, Filter, Param, QuerySpec};

/// How the data plane reaches the app database.
#[derive(Debug, Clone)]
pub struct DataPlaneConfig {
    pub host: String,
    pub port: u16,
    /// The app database, reached with the runtime role.
    pub app_database: String,
    pub runtime_role: String,
    pub runtime_password: Secret,
    /// The cross-tenant role, when the manifest grants cross-tenant reads.
    pub cross_tenant: Option<(String, Secret)>,
    pub pools: PoolSettings,
}

/// Where one tenant's data lives, as the runtime knows it.
#[derive(Debug, Clone)]
pub struct TenantPlacement {
    pub tenant: TenantId,
    pub level: IsolationLevel,
    /// For `database` tenants: the login role's password (role and database names follow
    /// from the ids).
    pub database_password: Option<Secret>,
    /// A suspended tenant resolves like an unknown one.
    pub suspended: bool,
}

/// Who is acting: owner fields, permissions and the audit log.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    pub user_id: Option<String>,
    pub request_id: Option<String>,
    /// The caller's roles; `["anonymous"]` for public requests. Permissions declared in the
    /// manifest are checked against these inside every operation.
    pub roles: Vec<String>,
}

/// Fetches the current runtime password (from the vault) after a rotation.
pub type PasswordRefresher = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<Secret>> + Send>>
        + Send
        + Sync,
>;

struct Inner {
    manifest: Arc<AppManifest>,
    router: Router,
    refresher: Option<PasswordRefresher>,
    host: String,
    port: u16,
    tenants: RwLock<HashMap<TenantId, Arc<TenantPlacement>>>,
}

/// One app's data plane. The runtime holds it; app code never sees it, only the
/// [`TenantContext`]s it mints.
#[derive(Clone)]
pub struct DataPlane {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPlane")
            .field("app", &self.inner.manifest.app)
            .finish_non_exhaustive()
    }
}

impl DataPlane {
    pub fn new(manifest: AppManifest, config: DataPlaneConfig) -> Result<Self> {
        let main = Endpoint {
            host: config.host.clone(),
            port: config.port,
            database: config.app_database.clone(),
            role: config.runtime_role.clone(),
            password: config.runtime_password.clone(),
        };
        let cross = config
            .cross_tenant
            .as_ref()
            .map(|(role, password)| Endpoint {
                role: role.clone(),
                password: password.clone(),
                ..main.clone()
            });
        Ok(Self {
            inner: Arc::new(Inner {
                manifest: Arc::new(manifest),
                router: Router::new(&main, cross.as_ref(), config.pools)?,
                refresher: None,
                host: config.host,
                port: config.port,
                tenants: RwLock::new(HashMap::new()),
            }),
        })
    }

    pub fn manifest(&self) -> &AppManifest {
        &self.inner.manifest
    }

    /// Where to get the runtime password when the database refuses the current one. Set it
    /// before the plane is shared.
    pub fn with_password_refresher(mut self, refresher: PasswordRefresher) -> Result<Self> {
        let inner = Arc::get_mut(&mut self.inner)
            .ok_or_else(|| Error::Internal("set the refresher before sharing the plane".into()))?;
        inner.refresher = Some(refresher);
        Ok(self)
    }

    /// Makes a tenant resolvable (or updates its placement).
    pub fn register_tenant(&self, placement: TenantPlacement) {
        if let Ok(mut t) = self.inner.tenants.write() {
            self.inner.router.forget(&placement.tenant);
            t.insert(placement.tenant.clone(), Arc::new(placement));
        }
    }

    pub fn remove_tenant(&self, tenant: &TenantId) {
        if let Ok(mut t) = self.inner.tenants.write() {
            t.remove(tenant);
        }
        self.inner.router.forget(tenant);
    }

    /// Mints the context for a tenant the runtime has resolved. Unknown and suspended tenants
    /// are refused alike (`tenant_not_found`): no tenant, no data.
    pub fn context(&self, tenant: &TenantId, actor: Actor) -> Result<TenantContext> {
        let placement = self
            .inner
            .tenants
            .read()
            .map_err(|_| Error::Internal("tenant registry poisoned".into()))?
            .get(tenant)
            .filter(|p| !p.suspended)
            .cloned()
            .ok_or(Error::TenantNotFound)?;
        Ok(TenantContext {
            inner: self.inner.clone(),
            placement,
            actor,
        })
    }

    /// Registered tenants: id, level and whether suspended.
    pub fn tenants(&self) -> Vec<(TenantId, IsolationLevel, bool)> {
        self.inner
            .tenants
            .read()
            .map(|t| {
                t.values()
                    .map(|p| (p.tenant.clone(), p.level, p.suspended))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the tenant is registered and not suspended.
    pub fn is_active(&self, tenant: &TenantId) -> bool {
        self.inner
            .tenants
            .read()
            .map(|t| t.get(tenant).is_some_and(|p| !p.suspended))
            .unwrap_or(false)
    }

    /// Closes idle tenant pools; returns how many were closed.
    pub fn evict_idle_pools(&self) -> usize {
        self.inner.router.evict_idle()
    }

    /// Open `database`-tenant pools.
    pub fn tenant_pools(&self) -> usize {
        self.inner.router.tenant_pools()
    }
}

/// A resolved tenant, bound to a request. App code receives it and cannot make one: the only
/// constructor is [`DataPlane::context`], which the runtime calls after tenant resolution.
#[derive(Clone)]
pub struct TenantContext {
    inner: Arc<Inner>,
    placement: Arc<TenantPlacement>,
    actor: Actor,
}

impl std::fmt::Debug for TenantContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantContext")
            .field("tenant", &self.placement.tenant)
            .field("level", &self.placement.level)
            .finish_non_exhaustive()
    }
}

impl TenantContext {
    pub fn tenant(&self) -> &TenantId {
        &self.placement.tenant
    }

    pub fn level(&self) -> IsolationLevel {
        self.placement.level
    }

    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// The tenant's data.
    pub fn db(&self) -> TenantDb<'_> {
        TenantDb { ctx: self }
    }

    /// The one explicit escape from tenant scoping: read `entity` across tenants. Refused
    /// unless the manifest grants it; runs on the cross-tenant role, read-only, and writes an
    /// audit record in the same transaction as the read. Tenants at the `database` level are
    /// never included (their databases admit no other role).
    pub fn cross_tenant(&self, entity: &str, reason: &str) -> Result<CrossTenantQuery<'_>> {
        let e = self.entity(entity)?;
        if e.cross_tenant || !self.inner.manifest.grants_cross_tenant(entity) {
            return Err(Error::CrossTenantDenied {
                entity: entity.to_owned(),
            });
        }
        let reason = reason.trim();
        if reason.is_empty() || reason.len() > 500 {
            return Err(Error::BadQuery(
                "a cross-tenant read needs a reason of 1 to 500 characters".into(),
            ));
        }
        if self.inner.router.cross().is_none() {
            return Err(Error::CrossTenantDenied {
                entity: entity.to_owned(),
            });
        }
        Ok(CrossTenantQuery {
            ctx: self,
            entity: e,
            reason: reason.to_owned(),
            filter: None,
            limit: sql::DEFAULT_LIMIT,
        })
    }

    fn entity(&self, name: &str) -> Result<&Entity> {
        self.inner
            .manifest
            .entity(name)
            .ok_or_else(|| Error::UnknownEntity(name.to_owned()))
    }

    /// The schema holding this tenant's tables.
    pub(crate) fn schema(&self) -> String {
        match self.placement.level {
            IsolationLevel::Schema => names::tenant_schema(&self.placement.tenant),
            _ => names::SHARED_SCHEMA.to_owned(),
        }
    }

    async fn tenant_conn(&self) -> Result<Conn> {
        let wait = self.inner.router.settings.wait;
        match self.placement.level {
            IsolationLevel::Row | IsolationLevel::Schema => self.main_conn().await,
            IsolationLevel::Database => {
                let app = &self.inner.manifest.app;
                let tenant = &self.placement.tenant;
                let password = self.placement.database_password.clone().ok_or_else(|| {
                    Error::Internal(format!("no credentials for tenant {tenant}"))
                })?;
                let ep = Endpoint {
                    host: self.inner.host.clone(),
                    port: self.inner.port,
                    database: names::tenant_database(app, tenant),
                    role: names::tenant_role(app, tenant),
                    password,
                };
                let pool = self.inner.router.tenant(tenant, &ep)?;
                router::checkout(&pool, wait).await
            }
        }
    }

    /// A runtime connection. When the database refuses the password (the credentials were
    /// rotated), asks the refresher for the current one, rebuilds the pool and tries once more.
    async fn main_conn(&self) -> Result<Conn> {
        let wait = self.inner.router.settings.wait;
        match router::checkout(&self.inner.router.main()?, wait).await {
            Err(e) if e.is_auth_failure() => {
                let Some(refresh) = &self.inner.refresher else {
                    return Err(e);
                };
                let Some(password) = refresh().await else {
                    return Err(e);
                };
                tracing::info!("runtime password changed; reconnecting with the new one");
                self.inner.router.set_main_password(password)?;
                router::checkout(&self.inner.router.main()?, wait).await
            }
            other => other,
        }
    }

    /// The statement that binds the transaction to this tenant, and its parameters.
    fn scope_statement(&self) -> (&'static str, Vec<Param>) {
        let tenant = self.placement.tenant.as_str().to_owned();
        match self.placement.level {
            IsolationLevel::Schema => (
                "SELECT set_config('bulkhead.tenant_id', $1::text, true), \
                 set_config('role', $2::text, true), set_config('search_path', $3::text, true)",
                vec![
                    Box::new(tenant),
                    Box::new(names::tenant_role(
                        &self.inner.manifest.app,
                        &self.placement.tenant,
                    )),
                    Box::new(q(&self.schema())),
                ],
            ),
            _ => (
                "SELECT set_config('bulkhead.tenant_id', $1::text, true)",
                vec![Box::new(tenant)],
            ),
        }
    }

    /// A tenant connection with a transaction opened by `begin` (`BEGIN …`) and bound to the
    /// tenant. The caller ends it and then calls [`Conn::finish`].
    pub(crate) async fn open_transaction(&self, begin: &str) -> Result<Conn> {
        let conn = self.tenant_conn().await?;
        let (scope_sql, scope_params) = self.scope_statement();
        {
            let client = conn.client()?;
            let db = |e| Error::from_db(e, "transaction", false);
            let begin = client.prepare_cached(begin).await.map_err(db)?;
            let scope = client.prepare_cached(scope_sql).await.map_err(db)?;
            let refs = sql::param_refs(&scope_params);
            let (b, s) = tokio::join!(client.execute(&begin, &[]), client.execute(&scope, &refs));
            b.map_err(db)?;
            s.map_err(db)?;
        }
        Ok(conn)
    }

    /// The manifest this context's app runs.
    pub(crate) fn manifest(&self) -> &AppManifest {
        &self.inner.manifest
    }

    /// Runs one statement on tenant data in its own transaction, pipelined: one round trip.
    async fn run_scoped(
        &self,
        entity: &str,
        deleting: bool,
        stmt: &str,
        params: &[Param],
    ) -> Result<Vec<Row>> {
        let mut conn = self.tenant_conn().await?;
        let (scope_sql, scope_params) = self.scope_statement();
        let client = conn.client()?;
        let (begin, scope, main, commit) = tokio::try_join!(
            client.prepare_cached("BEGIN"),
            client.prepare_cached(scope_sql),
            client.prepare_cached(stmt),
            client.prepare_cached("COMMIT"),
        )
        .map_err(|e| Error::from_db(e, entity, deleting))?;
        let scope_refs = sql::param_refs(&scope_params);
        let refs = sql::param_refs(params);
        let (r_begin, r_scope, r_main, r_commit) = tokio::join!(
            client.execute(&begin, &[]),
            client.execute(&scope, &scope_refs),
            client.query(&main, &refs),
            client.execute(&commit, &[]),
        );
        // COMMIT after a failed statement rolls back; either way the transaction has ended.
        if r_begin.is_ok() && r_commit.is_ok() {
            conn.finish();
        }
        r_begin.map_err(|e| Error::from_db(e, entity, deleting))?;
        r_scope.map_err(|e| Error::from_db(e, entity, deleting))?;
        let rows = r_main.map_err(|e| Error::from_db(e, entity, deleting))?;
        r_commit.map_err(|e| Error::from_db(e, entity, deleting))?;
        Ok(rows)
    }

    /// Reads global reference data (no tenant column) with the runtime role.
    async fn run_global(&self, entity: &str, stmt: &str, params: &[Param]) -> Result<Vec<Row>> {
        let wait = self.inner.router.settings.wait;
        let _ = wait;
        let mut conn = self.main_conn().await?;
        let client = conn.client()?;
        let prepared = client
            .prepare_cached(stmt)
            .await
            .map_err(|e| Error::from_db(e, entity, false))?;
        let rows = client
            .query(&prepared, &sql::param_refs(params))
            .await
            .map_err(|e| Error::from_db(e, entity, false));
        conn.finish();
        rows
    }
}

/// Executes the statements built by the operations below: either one pipelined transaction
/// per operation ([`TenantDb`]) or statements inside an open transaction ([`Tx`]).
trait Exec {
    fn ctx(&self) -> &TenantContext;
    async fn run(
        &mut self,
        entity: &Entity,
        deleting: bool,
        stmt: &str,
        params: Vec<Param>,
    ) -> Result<Vec<Row>>;
}

/// The operations, written once for both executors.
mod ops {
    use super::*;

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
                e.fields.iter().find(
                    |f| matches!(&f.ty, FieldType::Ref { entity } if *entity == c.target.name),
                )
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

    pub async fn get(x: &mut impl Exec, entity: &str, id: &str) -> Result<Value> {
        let ctx = x.ctx().clone();
        let e = ctx.entity(entity)?;
        let (eff, own) = permit(&ctx, e, Action::Read, "read")?;
        let schema = schema_for(&ctx, e);
        let (stmt, params) =
            sql::get_sql(&schema, e, tenant_arg(e, &ctx).as_ref(), id, own.as_ref())?;
        let rows = x.run(e, false, &stmt, params).await?;
        match rows.first() {
            Some(row) => Ok(strip(sql::record_from_row(e, row, false)?, &eff.hidden)),
            None => Err(Error::NotFound {
                entity: entity.to_owned(),
            }),
        }
    }

    pub async fn insert(x: &mut impl Exec, entity: &str, record: &Value) -> Result<Value> {
        let ctx = x.ctx().clone();
        let e = writable(&ctx, entity)?;
        let (eff, _) = permit(&ctx, e, Action::Create, "create")?;
        let hidden = hidden_for_read(&ctx, e);
        check_writable(e, &eff, &hidden, record, "create")?;
        let checks = ref_checks(&ctx, e, record)?;
        let (stmt, params) = sql::insert_sql(
            &ctx.schema(),
            e,
            record,
            Some(&ctx.placement.tenant),
            ctx.actor.user_id.as_deref(),
            &checks,
        )?;
        let rows = x.run(e, false, &stmt, params).await?;
        let row = rows.first().ok_or_else(|| {
            if checks.is_empty() {
                Error::Internal("insert returned no row".into())
            } else {
                reference_not_readable(e, &checks)
            }
        })?;
        Ok(strip(sql::record_from_row(e, row, false)?, &hidden))
    }

    pub async fn update(x: &mut impl Exec, entity: &str, id: &str, patch: &Value) -> Result<Value> {
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

    pub async fn delete(x: &mut impl Exec, entity: &str, id: &str) -> Result<()> {
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

    pub async fn fetch(x: &mut impl Exec, entity: &str, spec: &QuerySpec) -> Result<Page> {
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
        let (stmt, params) = sql::select_sql(&schema, e, tenant_arg(e, &ctx).as_ref(), &spec)?;
        let rows = x.run(e, false, &stmt, params).await?;
        let has_more = i64::try_from(rows.len()).unwrap_or(i64::MAX) > spec.limit;
        let records = rows
            .iter()
            .take(usize::try_from(spec.limit).unwrap_or(usize::MAX))
            .map(|r| sql::record_from_row(e, r, false))
            .collect::<Result<Vec<_>>>()?;
        let next_cursor = match (has_more, records.last()) {
            (true, Some(last)) => Some(sql::encode_cursor(
                &last[spec.order_field.as_str()],
                &last["id"],
            )),
            _ => None,
        };
        Ok(Page {
            records: records.into_iter().map(|r| strip(r, &eff.hidden)).collect(),
            next_cursor,
        })
    }

    pub async fn count(x: &mut impl Exec, entity: &str, filter: Option<&Filter>) -> Result<i64> {
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
        let (stmt, params) =
            sql::count_sql(&schema, e, tenant_arg(e, &ctx).as_ref(), filter.as_ref())?;
        let rows = x.run(e, false, &stmt, params).await?;
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
}

/// One page of a list query.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub records: Vec<Value>,
    /// Pass to [`Query::after`] for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// The tenant's data, reached through its [`TenantContext`].
#[derive(Debug, Clone, Copy)]
pub struct TenantDb<'c> {
    ctx: &'c TenantContext,
}

impl Exec for TenantDb<'_> {
    fn ctx(&self) -> &TenantContext {
        self.ctx
    }

    async fn run(
        &mut self,
        entity: &Entity,
        deleting: bool,
        stmt: &str,
        params: Vec<Param>,
    ) -> Result<Vec<Row>> {
        if entity.cross_tenant {
            self.ctx
                .run_global(entity.name.as_str(), stmt, &params)
                .await
        } else {
            self.ctx
                .run_scoped(entity.name.as_str(), deleting, stmt, &params)
                .await
        }
    }
}

impl<'c> TenantDb<'c> {
    /// A list query on `entity`.
    pub fn query(&self, entity: &str) -> Query<TenantDb<'c>> {
        Query::new(*self, entity)
    }

    pub async fn get(&self, entity: &str, id: &str) -> Result<Value> {
        ops::get(&mut self.clone(), entity, id).await
    }

    pub async fn insert(&self, entity: &str, record: &Value) -> Result<Value> {
        ops::insert(&mut self.clone(), entity, record).await
    }

    pub async fn update(&self, entity: &str, id: &str, patch: &Value) -> Result<Value> {
        ops::update(&mut self.clone(), entity, id, patch).await
    }

    pub async fn delete(&self, entity: &str, id: &str) -> Result<()> {
        ops::delete(&mut self.clone(), entity, id).await
    }

    /// Runs `f` in one transaction on the tenant's data: committed when it returns `Ok`,
    /// rolled back when it returns `Err` (nothing half-written).
    pub async fn transaction<T>(&self, f: impl AsyncFnOnce(&mut Tx<'c>) -> Result<T>) -> Result<T> {
        let mut tx = self.begin().await?;
        match f(&mut tx).await {
            Ok(v) => {
                tx.commit().await?;
                Ok(v)
            }
            Err(e) => {
                // A failed rollback closes the connection (see `Conn`); the error to report is
                // the one that made us roll back.
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }

    /// Opens a transaction on the tenant's data. End it with [`Tx::commit`] or
    /// [`Tx::rollback`]; a `Tx` dropped without either is rolled back by closing its
    /// connection.
    pub async fn begin(&self) -> Result<Tx<'c>> {
        let conn = self.ctx.open_transaction("BEGIN").await?;
        Ok(Tx {
            ctx: self.ctx,
            conn,
        })
    }

    /// Inserts several records in one transaction: all or none.
    pub async fn insert_many(&self, entity: &str, records: &[Value]) -> Result<Vec<Value>> {
        let mut tx = self.begin().await?;
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            match tx.insert(entity, r).await {
                Ok(v) => out.push(v),
                Err(e) => {
                    let _ = tx.rollback().await;
                    return Err(e);
                }
            }
        }
        tx.commit().await?;
        Ok(out)
    }
}

/// An open transaction on the tenant's data, inside [`TenantDb::transaction`].
pub struct Tx<'c> {
    ctx: &'c TenantContext,
    conn: Conn,
}

impl std::fmt::Debug for Tx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx")
            .field("ctx", self.ctx)
            .finish_non_exhaustive()
    }
}

impl Exec for &mut Tx<'_> {
    fn ctx(&self) -> &TenantContext {
        self.ctx
    }

    async fn run(
        &mut self,
        entity: &Entity,
        deleting: bool,
        stmt: &str,
        params: Vec<Param>,
    ) -> Result<Vec<Row>> {
        if entity.cross_tenant {
            // Global data lives in the app database's shared schema; read it outside.
            return self
                .ctx
                .run_global(entity.name.as_str(), stmt, &params)
                .await;
        }
        let client = self.conn.client()?;
        let prepared = client
            .prepare_cached(stmt)
            .await
            .map_err(|e| Error::from_db(e, entity.name.as_str(), deleting))?;
        client
            .query(&prepared, &sql::param_refs(&params))
            .await
            .map_err(|e| Error::from_db(e, entity.name.as_str(), deleting))
    }
}

impl<'c> Tx<'c> {
    /// Commits; the connection goes back to the pool.
    pub async fn commit(mut self) -> Result<()> {
        self.end("COMMIT").await
    }

    /// Rolls back; the connection goes back to the pool.
    pub async fn rollback(mut self) -> Result<()> {
        self.end("ROLLBACK").await
    }

    async fn end(&mut self, statement: &str) -> Result<()> {
        self.conn
            .client()?
            .batch_execute(statement)
            .await
            .map_err(|e| Error::from_db(e, "transaction", false))?;
        self.conn.finish();
        Ok(())
    }

    pub fn query(&mut self, entity: &str) -> Query<&mut Tx<'c>> {
        Query::new(self, entity)
    }

    pub async fn get(&mut self, entity: &str, id: &str) -> Result<Value> {
        ops::get(&mut &mut *self, entity, id).await
    }

    pub async fn insert(&mut self, entity: &str, record: &Value) -> Result<Value> {
        ops::insert(&mut &mut *self, entity, record).await
    }

    pub async fn update(&mut self, entity: &str, id: &str, patch: &Value) -> Result<Value> {
        ops::update(&mut &mut *self, entity, id, patch).await
    }

    pub async fn delete(&mut self, entity: &str, id: &str) -> Result<()> {
        ops::delete(&mut &mut *self, entity, id).await
    }
}

/// A list query: filters, one order field (the id breaks ties), a limit and a keyset cursor.
#[allow(private_bounds)]
pub struct Query<X: Exec> {
    x: X,
    entity: String,
    spec: QuerySpec,
}

impl<X: Exec> std::fmt::Debug for Query<X> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Query")
            .field("entity", &self.entity)
            .field("spec", &self.spec)
            .finish()
    }
}

#[allow(private_bounds)]
impl<X: Exec> Query<X> {
    fn new(x: X, entity: &str) -> Self {
        Self {
            x,
            entity: entity.to_owned(),
            spec: QuerySpec::default(),
        }
    }

    /// Adds a filter; several calls are combined with AND.
    pub fn filter(mut self, f: Filter) -> Self {
        self.spec.filter = Some(Filter::and_then(self.spec.filter.take(), f));
        self
    }

    pub fn order_by(mut self, field: &str, direction: Direction) -> Self {
        self.spec.order_field = field.to_owned();
        self.spec.direction = direction;
        self
    }

    pub fn limit(mut self, n: i64) -> Self {
        self.spec.limit = n;
        self
    }

    /// Continues after the page that returned `cursor`.
    pub fn after(mut self, cursor: &str) -> Self {
        self.spec.after = Some(cursor.to_owned());
        self
    }

    pub async fn fetch(mut self) -> Result<Page> {
        ops::fetch(&mut self.x, &self.entity, &self.spec).await
    }

    pub async fn count(mut self) -> Result<i64> {
        ops::count(&mut self.x, &self.entity, self.spec.filter.as_ref()).await
    }
}

/// A granted, audited read across tenants (see [`TenantContext::cross_tenant`]).
pub struct CrossTenantQuery<'c> {
    ctx: &'c TenantContext,
    entity: &'c Entity,
    reason: String,
    filter: Option<Filter>,
    limit: i64,
}

impl std::fmt::Debug for CrossTenantQuery<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrossTenantQuery")
            .field("entity", &self.entity.name)
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

impl CrossTenantQuery<'_> {
    pub fn filter(mut self, f: Filter) -> Self {
        self.filter = Some(Filter::and_then(self.filter.take(), f));
        self
    }

    pub fn limit(mut self, n: i64) -> Self {
        self.limit = n;
        self
    }

    /// The matching rows of every `row` and `schema` tenant, each with its `tenant_id`,
    /// ordered by tenant and id. The audit record commits with the read or not at all.
    pub async fn fetch(self) -> Result<Vec<Value>> {
        if !(1..=sql::MAX_LIMIT).contains(&self.limit) {
            return Err(Error::BadQuery(format!(
                "limit must be between 1 and {}",
                sql::MAX_LIMIT
            )));
        }
        let inner = &self.ctx.inner;
        let mut schemas = vec![names::SHARED_SCHEMA.to_owned()];
        if let Ok(tenants) = inner.tenants.read() {
            let mut list: Vec<String> = tenants
                .values()
                .filter(|p| p.level == IsolationLevel::Schema)
                .map(|p| names::tenant_schema(&p.tenant))
                .collect();
            list.sort();
            schemas.extend(list);
        }
        let mut binder = sql::Binder::default();
        let mut branches = Vec::new();
        for schema in &schemas {
            let spec = QuerySpec {
                filter: self.filter.clone(),
                limit: self.limit,
                ..QuerySpec::default()
            };
            branches.push(sql::cross_branch(&mut binder, schema, self.entity, &spec)?);
        }
        let stmt = format!(
            "SELECT * FROM ({}) AS cross_tenant ORDER BY 1, 2 LIMIT {}",
            branches.join(" UNION ALL "),
            self.limit
        );
        let pool = inner
            .router
            .cross()
            .ok_or_else(|| Error::CrossTenantDenied {
                entity: self.entity.name.to_string(),
            })?;
        let mut conn = router::checkout(pool, inner.router.settings.wait).await?;
        let entity = self.entity.name.as_str();
        let client = conn.client_mut()?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| Error::from_db(e, entity, false))?;
        let rows = tx
            .query(&stmt, &sql::param_refs(&binder.params))
            .await
            .map_err(|e| Error::from_db(e, entity, false))?;
        let records = rows
            .iter()
            .map(|r| sql::record_from_row(self.entity, r, true))
            .collect::<Result<Vec<_>>>()?;
        let count = i32::try_from(records.len()).unwrap_or(i32::MAX);
        tx.execute(
            &format!(
                "INSERT INTO {}.{} (app, entity, reason, actor, request_id, tenant_id, row_count) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                q(names::SHARED_SCHEMA),
                q(crate::ddl::AUDIT_TABLE)
            ),
            &[
                &inner.manifest.app.as_str(),
                &entity,
                &self.reason,
                &self.ctx.actor.user_id,
                &self.ctx.actor.request_id,
                &self.ctx.placement.tenant.as_str(),
                &count,
            ],
        )
        .await
        .map_err(|e| Error::from_db(e, entity, false))?;
        tx.commit()
            .await
            .map_err(|e| Error::from_db(e, entity, false))?;
        conn.finish();
        Ok(records)
    }
}
