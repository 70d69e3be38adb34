//! What app code holds: [`TenantDb`] (`ctx.db()`), [`Tx`] (a transaction on the tenant's data)
//! and [`Query`] (a list or count).

use serde::de::DeserializeOwned;

use super::ops::{self, Exec};
use super::*;

/// One page of a list query: its records as JSON values, or as the caller's own type with
/// [`Query::fetch_as`].
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T = Value> {
    pub records: Vec<T>,
    /// Pass to [`Query::after`] for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// One page of a list query with its records as JSON text: what [`Query::fetch_json`] gives an
/// HTTP handler that only passes the records on.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPage {
    /// A JSON array of the records, byte for byte `serde_json`'s text of [`Page::records`].
    pub records: Vec<u8>,
    pub next_cursor: Option<String>,
}

/// The tenant's data, reached through its [`TenantContext`].
#[derive(Debug, Clone, Copy)]
pub struct TenantDb<'c> {
    pub(super) ctx: &'c TenantContext,
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

    async fn read(&mut self, entity: &Entity, stmt: &str, params: Vec<Param>) -> Result<Vec<Row>> {
        if entity.cross_tenant {
            self.ctx
                .run_global(entity.name.as_str(), stmt, &params)
                .await
        } else {
            self.ctx
                .read_scoped(entity.name.as_str(), stmt, &params)
                .await
        }
    }

    fn inserts_self_scoped(&self, entity: &Entity) -> bool {
        !entity.cross_tenant && self.ctx.scopes_in_one_statement()
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

    /// [`TenantDb::get`] read straight into `T` (see [`Query::fetch_as`]).
    pub async fn get_as<T: DeserializeOwned>(&self, entity: &str, id: &str) -> Result<T> {
        ops::get_as(&mut self.clone(), entity, id).await
    }

    /// [`TenantDb::get`] with the record written as JSON text, byte for byte `serde_json`'s
    /// text of its value: for passing it on as it is (see [`Query::fetch_json`]).
    pub async fn get_json(&self, entity: &str, id: &str) -> Result<Vec<u8>> {
        ops::get_json(&mut self.clone(), entity, id).await
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
    pub(super) ctx: &'c TenantContext,
    pub(super) conn: Conn,
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

    /// [`Tx::get`] read straight into `T` (see [`Query::fetch_as`]).
    pub async fn get_as<T: DeserializeOwned>(&mut self, entity: &str, id: &str) -> Result<T> {
        ops::get_as(&mut &mut *self, entity, id).await
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
    pub(super) x: X,
    pub(super) entity: String,
    pub(super) spec: QuerySpec,
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

    /// [`Query::fetch`] with each record read straight from its row into `T`, any
    /// `serde::Deserialize` type — a struct of the fields the caller needs, say — without a
    /// JSON value in between. `T` sees what the JSON record holds: the same keys (hidden fields
    /// absent), timestamps as RFC 3339 text, `null` for empty fields; a `T` that does not fit
    /// is an [`Error::Internal`] naming serde's complaint.
    pub async fn fetch_as<T: DeserializeOwned>(mut self) -> Result<Page<T>> {
        ops::fetch_as(&mut self.x, &self.entity, &self.spec).await
    }

    /// [`Query::fetch`] with the records written as JSON text, without building a value per
    /// record: for passing them on as they are.
    pub async fn fetch_json(mut self) -> Result<JsonPage> {
        ops::fetch_json(&mut self.x, &self.entity, &self.spec).await
    }

    pub async fn count(mut self) -> Result<i64> {
        ops::count(&mut self.x, &self.entity, self.spec.filter.as_ref()).await
    }
}
