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

mod cross;
mod db;
mod kv;
mod ops;
mod texts;

pub use cross::CrossTenantQuery;
pub use db::{JsonPage, Page, Query, TenantDb, Tx};
pub use kv::{KV_KEY_MAX, KV_LIST_MAX, KV_VALUE_MAX, KvScope, TenantKv};

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
    /// TLS to the cluster, for the app database and every tenant database.
    pub tls: crate::tls::PgTls,
    /// The cluster's other hosts, failover, a relay address.
    pub reach: crate::router::Reach,
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
    tls: crate::tls::Tls,
    reach: crate::router::Reach,
    tenants: RwLock<HashMap<TenantId, Arc<TenantPlacement>>>,
    /// Statement texts built once (the manifest never changes under a plane).
    texts: texts::Texts,
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
        let tls = crate::tls::Tls::new(config.tls.clone())?;
        let main = Endpoint {
            host: config.host.clone(),
            port: config.port,
            database: config.app_database.clone(),
            role: config.runtime_role.clone(),
            password: config.runtime_password.clone(),
            tls: tls.clone(),
            reach: config.reach.clone(),
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
                tls,
                reach: config.reach,
                tenants: RwLock::new(HashMap::new()),
                texts: texts::Texts::default(),
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

    /// `database`-tenant pools opened so far (those not open any more were evicted).
    pub fn tenant_pools_opened(&self) -> u64 {
        self.inner.router.tenant_pools_opened()
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

    /// The tenant's key-value store (the mini-apps' `storage`), for the tenant or the caller.
    pub fn kv(&self, scope: KvScope) -> TenantKv<'_> {
        TenantKv { ctx: self, scope }
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
    /// The plane's statement texts built once.
    fn texts(&self) -> &texts::Texts {
        &self.inner.texts
    }

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
                    tls: self.inner.tls.clone(),
                    reach: self.inner.reach.clone(),
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

    /// Runs one read on tenant data. Row and database tenants: a single statement that sets
    /// the tenant in a subquery its scan depends on ([`sql::self_scoped_read`]) — one
    /// Bind/Execute/Sync where a transaction takes four; the setting is transaction-local and
    /// ends with the statement. Schema tenants take [`TenantContext::run_scoped`]: their role
    /// and `search_path` must be in force before the statement is planned, which a setting made
    /// inside the statement is not.
    async fn read_scoped(&self, entity: &str, stmt: &str, params: &[Param]) -> Result<Vec<Row>> {
        let wrapped = if self.scopes_in_one_statement() {
            self.inner.texts.self_scoped(stmt)
        } else {
            None
        };
        let Some(wrapped) = wrapped else {
            return self.run_scoped(entity, false, stmt, params).await;
        };
        self.run_one(entity, &wrapped, params).await
    }

    /// Whether this tenant's statements may scope themselves in one statement: `row` and
    /// `database` tenants. A `schema` tenant's role and `search_path` must be in force before
    /// a statement is planned, which a setting made inside it is not.
    fn scopes_in_one_statement(&self) -> bool {
        match self.placement.level {
            IsolationLevel::Schema => false,
            IsolationLevel::Row | IsolationLevel::Database => true,
        }
    }

    /// Runs one statement that scopes itself (one Bind/Execute/Sync): its implicit transaction
    /// ends with it, and with it the setting it made.
    async fn run_one(&self, entity: &str, stmt: &str, params: &[Param]) -> Result<Vec<Row>> {
        let mut conn = self.tenant_conn().await?;
        let client = conn.client()?;
        let prepared = client
            .prepare_cached(stmt)
            .await
            .map_err(|e| Error::from_db(e, entity, false))?;
        let rows = client
            .query(&prepared, &sql::param_refs(params))
            .await
            .map_err(|e| Error::from_db(e, entity, false));
        // Its implicit transaction ended at the statement's Sync, committed or rolled back.
        conn.finish();
        rows
    }

    /// Reads global reference data (no tenant column) with the runtime role.
    async fn run_global(&self, entity: &str, stmt: &str, params: &[Param]) -> Result<Vec<Row>> {
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
