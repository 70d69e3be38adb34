//! What the search indexer reads from one tenant: its outbox and its searchable rows.
//!
//! Every change to a searchable row writes an outbox row in the same transaction (a trigger,
//! see [`crate::ddl::OUTBOX_TABLE`]). A follower keeps one cursor per tenant: the snapshot
//! xmin of its last read. Reading "every outbox row whose transaction id is at or above the
//! cursor" in a `REPEATABLE READ` transaction, applying it, and moving the cursor to that
//! transaction's snapshot xmin never misses a committed change: a transaction that commits
//! later was running, or not started, at that snapshot, so its id is at or above the xmin.
//! Rows are re-read in the same snapshot, so applying a change twice is harmless.
//!
//! The source runs on the tenant's own connection with the tenant bound (row-level security
//! applies as for every other access), but not under the manifest's role permissions: the
//! index holds every searchable row, and each hit is re-checked for the caller.

use bulkhead_model::names::quote_ident as q;
use bulkhead_model::{Entity, TenantId};
use tokio_postgres::Row;

use crate::ddl::OUTBOX_TABLE;
use crate::error::{Error, Result};
use crate::plane::{Actor, DataPlane, TenantContext};
use crate::router::Conn;

/// One row as the index sees it: its searchable text and its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchDoc {
    pub entity: String,
    pub id: String,
    pub owner: Option<String>,
    /// Searchable fields that are not null, in manifest order.
    pub fields: Vec<(String, String)>,
}

/// What changed since a cursor.
#[derive(Debug, Default)]
pub struct Changes {
    /// The snapshot xmin of this read: the cursor once these changes are applied.
    pub horizon: i64,
    /// The highest rebuild request (outbox `seq`) at or above the cursor.
    pub rebuild_request: Option<i64>,
    /// Rows to (re)index, as they are now.
    pub upserts: Vec<SearchDoc>,
    /// Rows that are gone: `(entity, id)`.
    pub deletes: Vec<(String, String)>,
    /// Outbox rows read.
    pub outbox_rows: usize,
}

/// Reads one tenant's outbox and rows. Made by [`crate::DataPlane::search_source`].
#[derive(Debug, Clone)]
pub struct SearchSource {
    ctx: TenantContext,
}

/// Entities with searchable fields, in manifest order.
pub fn searchable_entities(m: &bulkhead_model::AppManifest) -> Vec<&Entity> {
    m.tenant_entities()
        .filter(|e| !e.cross_tenant && e.fields.iter().any(|f| f.search))
        .collect()
}

fn db(e: tokio_postgres::Error) -> Error {
    Error::from_db(e, OUTBOX_TABLE, false)
}

impl SearchSource {
    pub(crate) fn new(ctx: TenantContext) -> Self {
        Self { ctx }
    }

    pub fn tenant(&self) -> &TenantId {
        self.ctx.tenant()
    }

    fn outbox(&self) -> String {
        format!("{}.{}", q(&self.ctx.schema()), q(OUTBOX_TABLE))
    }

    /// `SELECT id, owner, searchable… FROM entity WHERE tenant_id = $1 AND <cond>`.
    fn select_docs(&self, e: &Entity, cond: &str) -> String {
        let mut cols = vec!["id::text".to_owned()];
        cols.push(match &e.owner {
            Some(o) => format!("{}::text", q(o.as_str())),
            None => "NULL::text".to_owned(),
        });
        for f in e.fields.iter().filter(|f| f.search) {
            cols.push(format!("{}::text", q(f.name.as_str())));
        }
        format!(
            "SELECT {} FROM {}.{} WHERE tenant_id = $1 AND {cond}",
            cols.join(", "),
            q(&self.ctx.schema()),
            q(e.name.as_str())
        )
    }

    fn doc(e: &Entity, row: &Row) -> Result<SearchDoc> {
        let bad = |err: tokio_postgres::Error| Error::Internal(format!("search row: {err}"));
        let mut fields = Vec::new();
        for (i, f) in e.fields.iter().filter(|f| f.search).enumerate() {
            if let Some(v) = row.try_get::<_, Option<String>>(i + 2).map_err(bad)? {
                fields.push((f.name.to_string(), v));
            }
        }
        Ok(SearchDoc {
            entity: e.name.to_string(),
            id: row.try_get(0).map_err(bad)?,
            owner: row.try_get(1).map_err(bad)?,
            fields,
        })
    }

    async fn begin_snapshot(&self) -> Result<(Conn, i64)> {
        let conn = self
            .ctx
            .open_transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let row = conn
            .client()?
            .query_one(
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
                &[],
            )
            .await
            .map_err(db)?;
        let horizon: i64 = row.try_get(0).map_err(db)?;
        Ok((conn, horizon))
    }

    async fn end(mut conn: Conn) -> Result<()> {
        conn.client()?.batch_execute("COMMIT").await.map_err(db)?;
        conn.finish();
        Ok(())
    }

    /// Changes at or above `cursor`, read in one snapshot, with the rows as that snapshot
    /// sees them.
    pub async fn changes_since(&self, cursor: i64) -> Result<Changes> {
        let (conn, horizon) = self.begin_snapshot().await?;
        let client = conn.client()?;
        let tenant = self.ctx.tenant().as_str();
        let rows = client
            .query(
                &format!(
                    "SELECT seq, op, entity, row_id::text FROM {} \
                     WHERE tenant_id = $1 AND xid >= $2::text::xid8 ORDER BY seq",
                    self.outbox()
                ),
                &[&tenant, &cursor.to_string()],
            )
            .await
            .map_err(db)?;
        let mut changes = Changes {
            horizon,
            outbox_rows: rows.len(),
            ..Changes::default()
        };
        // Row ids per entity, each once, in outbox order.
        let mut by_entity: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        let mut seen: std::collections::HashSet<(String, String)> = Default::default();
        for row in &rows {
            let seq: i64 = row.try_get(0).map_err(db)?;
            let op: String = row.try_get(1).map_err(db)?;
            if op == "rebuild" {
                changes.rebuild_request = Some(seq);
                continue;
            }
            let entity: String = row.try_get(2).map_err(db)?;
            if let Some(id) = row.try_get::<_, Option<String>>(3).map_err(db)?
                && seen.insert((entity.clone(), id.clone()))
            {
                by_entity.entry(entity).or_default().push(id);
            }
        }
        let m = self.ctx.manifest();
        for (entity, ids) in by_entity {
            let Some(e) = searchable_entities(m)
                .into_iter()
                .find(|e| e.name.as_str() == entity)
            else {
                // The entity lost its searchable fields: nothing of it is indexed any more.
                changes
                    .deletes
                    .extend(ids.into_iter().map(|id| (entity.clone(), id)));
                continue;
            };
            for chunk in ids.chunks(1000) {
                let found = client
                    .query(
                        &self.select_docs(e, "id = ANY($2::text[]::uuid[])"),
                        &[&tenant, &chunk],
                    )
                    .await
                    .map_err(db)?;
                let docs = found
                    .iter()
                    .map(|r| Self::doc(e, r))
                    .collect::<Result<Vec<_>>>()?;
                let found: std::collections::HashSet<&str> =
                    docs.iter().map(|d| d.id.as_str()).collect();
                for id in chunk {
                    if !found.contains(id.as_str()) {
                        changes.deletes.push((entity.clone(), id.clone()));
                    }
                }
                changes.upserts.extend(docs);
            }
        }
        Self::end(conn).await?;
        Ok(changes)
    }

    /// Every searchable row, in one snapshot, handed to `sink` in batches; returns the
    /// snapshot's horizon (the cursor for following the outbox afterwards) and the highest
    /// rebuild request already in the outbox.
    pub async fn scan(
        &self,
        batch: i64,
        mut sink: impl FnMut(Vec<SearchDoc>) -> Result<()>,
    ) -> Result<(i64, Option<i64>)> {
        let (conn, horizon) = self.begin_snapshot().await?;
        let client = conn.client()?;
        let tenant = self.ctx.tenant().as_str();
        let request: Option<i64> = client
            .query_one(
                &format!(
                    "SELECT max(seq) FROM {} WHERE tenant_id = $1 AND op = 'rebuild'",
                    self.outbox()
                ),
                &[&tenant],
            )
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)?;
        for e in searchable_entities(self.ctx.manifest()) {
            let stmt = self.select_docs(e, "id > $2::text::uuid ORDER BY id LIMIT $3");
            let mut after = "00000000-0000-0000-0000-000000000000".to_owned();
            loop {
                let rows = client
                    .query(&stmt, &[&tenant, &after, &batch])
                    .await
                    .map_err(db)?;
                let docs = rows
                    .iter()
                    .map(|r| Self::doc(e, r))
                    .collect::<Result<Vec<_>>>()?;
                let Some(last) = docs.last() else { break };
                after = last.id.clone();
                let full = i64::try_from(docs.len()).unwrap_or(i64::MAX) >= batch;
                sink(docs)?;
                if !full {
                    break;
                }
            }
        }
        Self::end(conn).await?;
        Ok((horizon, request))
    }

    /// Asks every follower to rebuild this tenant's index from the database.
    pub async fn request_rebuild(&self) -> Result<()> {
        let mut conn = self.ctx.open_transaction("BEGIN").await?;
        let client = conn.client()?;
        client
            .execute(
                &format!(
                    "INSERT INTO {} (tenant_id, entity, op) VALUES ($1, '', 'rebuild')",
                    self.outbox()
                ),
                &[&self.ctx.tenant().as_str()],
            )
            .await
            .map_err(db)?;
        client.batch_execute("COMMIT").await.map_err(db)?;
        conn.finish();
        Ok(())
    }

    /// Deletes outbox rows older than `retention_secs`; returns how many. A follower whose
    /// last commit is older than the retention rebuilds instead of following.
    pub async fn prune(&self, retention_secs: u64) -> Result<u64> {
        let mut conn = self.ctx.open_transaction("BEGIN").await?;
        let client = conn.client()?;
        let secs = i64::try_from(retention_secs).unwrap_or(i64::MAX);
        let n = client
            .execute(
                &format!(
                    "DELETE FROM {} WHERE tenant_id = $1 AND at < now() - make_interval(secs => $2::bigint)",
                    self.outbox()
                ),
                &[&self.ctx.tenant().as_str(), &secs],
            )
            .await
            .map_err(db)?;
        client.batch_execute("COMMIT").await.map_err(db)?;
        conn.finish();
        Ok(n)
    }
}

impl DataPlane {
    /// What the search indexer reads from one tenant. For the runtime only: the source reads
    /// every row of the tenant, not what one caller may see.
    pub fn search_source(&self, tenant: &bulkhead_model::TenantId) -> Result<SearchSource> {
        let ctx = self.context(tenant, Actor::default())?;
        Ok(SearchSource::new(ctx))
    }
}
