//! Per-tenant search: one tantivy index per (app, tenant), fed from the tenant's
//! transactional outbox.
//!
//! - [`SearchIndexes`]: the indexes of one app in one worker process. Each worker keeps its
//!   own copy under its own directory and follows each tenant's outbox
//!   ([`bulkhead_pg::search::SearchSource`]); the cursor is committed with the index
//!   (tantivy's commit payload), so a killed indexer resumes where its last commit ended and
//!   an acknowledged write is never lost from search.
//! - [`query`]: `search()` over the resolved tenant's index only, with every hit re-checked
//!   through the caller's own permissions before it is returned.
//!
//! Index directories are `<dir>/<app>/<tenant>/`, built only from [`AppId`] and [`TenantId`]
//! (invariant 8): one directory per tenant, so no tenant's index contains another's
//! documents and no query can reach them.

pub mod query;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bulkhead_model::{AppId, AppManifest, IsolationLevel, TenantId};
use bulkhead_pg::DataPlane;
use bulkhead_pg::search::{SearchDoc, searchable_entities};
use serde::{Deserialize, Serialize};
use tantivy::directory::MmapDirectory;
use tantivy::indexer::IndexWriterOptions;
use tantivy::schema::{Field, STORED, STRING, Schema, TEXT};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

pub use query::{Hit, SearchPage, SearchRequest};

/// Why a search or an index operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The query string does not parse, or names a field the caller cannot search.
    #[error("invalid search query: {0}")]
    BadQuery(String),
    #[error("entity {0} is not searchable")]
    UnknownEntity(String),
    #[error("the caller may not read {0}")]
    Forbidden(String),
    #[error(transparent)]
    Database(#[from] bulkhead_pg::Error),
    #[error("search index: {0}")]
    Index(String),
}

impl From<tantivy::TantivyError> for Error {
    fn from(e: tantivy::TantivyError) -> Self {
        Error::Index(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl bulkhead_model::Coded for Error {
    fn code(&self) -> bulkhead_model::ErrorCode {
        use bulkhead_model::ErrorCode as C;
        match self {
            Error::BadQuery(_) => C::BadQuery,
            Error::UnknownEntity(_) => C::UnknownEntity,
            Error::Forbidden(_) => C::Forbidden,
            Error::Database(e) => e.code(),
            Error::Index(_) => C::Internal,
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            Error::BadQuery(_) => Some("q"),
            Error::UnknownEntity(_) => Some("entity"),
            Error::Database(e) => bulkhead_model::Coded::field(e),
            _ => None,
        }
    }
}

/// How the indexes of one worker behave. Defaults suit a worker with a handful of active
/// tenants; `[search]` in `bulkhead.toml` overrides them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// Root of this worker's index copies.
    pub dir: PathBuf,
    /// Memory of one tenant's writer before it flushes a segment (tantivy's minimum is 15 MB).
    pub writer_memory_bytes: usize,
    /// Writers open at once; the least recently used one is closed to open another.
    pub max_open_writers: usize,
    /// A writer unused for this long is closed (its thread ends, its memory is freed).
    pub idle_writer_secs: u64,
    /// How often the follower reads every tenant's outbox.
    pub poll_millis: u64,
    /// Outbox rows older than this are deleted; a copy last committed before that rebuilds.
    pub outbox_retention_secs: u64,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(".bulkhead/search"),
            writer_memory_bytes: 15_000_000,
            max_open_writers: 4,
            idle_writer_secs: 60,
            poll_millis: 500,
            outbox_retention_secs: 24 * 3600,
        }
    }
}

/// The fields of every tenant index of an app: a stored key `entity/id`, the entity and owner
/// (exact terms, for scoping), and one text field `entity.field` per searchable field.
#[derive(Debug, Clone)]
pub(crate) struct IndexSchema {
    schema: Schema,
    key: Field,
    entity: Field,
    owner: Field,
    text: HashMap<(String, String), Field>,
}

impl IndexSchema {
    fn new(m: &AppManifest) -> Self {
        let mut b = Schema::builder();
        let key = b.add_text_field("key", STRING | STORED);
        let entity = b.add_text_field("entity", STRING);
        let owner = b.add_text_field("owner", STRING);
        let mut text = HashMap::new();
        for e in searchable_entities(m) {
            for f in e.fields.iter().filter(|f| f.search) {
                let field = b.add_text_field(&format!("{}.{}", e.name, f.name), TEXT);
                text.insert((e.name.to_string(), f.name.to_string()), field);
            }
        }
        Self {
            schema: b.build(),
            key,
            entity,
            owner,
            text,
        }
    }

    fn key_term(&self, entity: &str, id: &str) -> Term {
        Term::from_field_text(self.key, &format!("{entity}/{id}"))
    }

    fn document(&self, d: &SearchDoc) -> TantivyDocument {
        let mut doc = TantivyDocument::new();
        doc.add_text(self.key, format!("{}/{}", d.entity, d.id));
        doc.add_text(self.entity, &d.entity);
        if let Some(owner) = &d.owner {
            doc.add_text(self.owner, owner);
        }
        for (name, value) in &d.fields {
            if let Some(f) = self.text.get(&(d.entity.clone(), name.clone())) {
                doc.add_text(*f, value);
            }
        }
        doc
    }
}

/// Where a tenant's copy stands, committed with the index as tantivy's commit payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Progress {
    /// Outbox rows with a transaction id at or above this are not applied yet.
    cursor: i64,
    /// The last rebuild request (outbox seq) this copy has honoured.
    rebuild_seq: i64,
    /// The level the tenant had when the copy was built (a move starts a new outbox).
    level: IsolationLevel,
    /// Unix seconds of the commit.
    at: u64,
}

const PAYLOAD_FORMAT: &str = "bulkhead-search/1";

#[derive(Serialize, Deserialize)]
struct Payload {
    format: String,
    #[serde(flatten)]
    progress: Progress,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One tenant's index copy in this process.
pub(crate) struct TenantIndex {
    dir: PathBuf,
    index: Index,
    pub(crate) reader: IndexReader,
    /// The only writer of this copy; `None` while idle.
    writer: Mutex<Option<IndexWriter>>,
    last_write: Mutex<Instant>,
    /// `None` until the copy is built.
    progress: Mutex<Option<Progress>>,
    /// Serialises syncs of this tenant (the follower and a first search may race).
    sync: tokio::sync::Mutex<()>,
}

impl TenantIndex {
    fn open(dir: &Path, schema: &IndexSchema) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Index(format!("{}: {e}", dir.display())))?;
        let open = || -> Result<Index> {
            let mmap = MmapDirectory::open(dir).map_err(|e| Error::Index(e.to_string()))?;
            Ok(Index::open_or_create(mmap, schema.schema.clone())?)
        };
        let index = match open() {
            Ok(index) => index,
            Err(e) => {
                // Another manifest's schema or a damaged copy: it is only a copy; start over.
                tracing::info!(dir = %dir.display(), error = %e, "search index replaced");
                std::fs::remove_dir_all(dir)
                    .and_then(|()| std::fs::create_dir_all(dir))
                    .map_err(|e| Error::Index(format!("{}: {e}", dir.display())))?;
                open()?
            }
        };
        let progress = index
            .load_metas()?
            .payload
            .and_then(|p| serde_json::from_str::<Payload>(&p).ok())
            .filter(|p| p.format == PAYLOAD_FORMAT)
            .map(|p| p.progress);
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Self {
            dir: dir.to_owned(),
            index,
            reader,
            writer: Mutex::new(None),
            last_write: Mutex::new(Instant::now()),
            progress: Mutex::new(progress),
            sync: tokio::sync::Mutex::new(()),
        })
    }

    fn progress(&self) -> Option<Progress> {
        self.progress.lock().ok().and_then(|p| *p)
    }

    fn writer_open(&self) -> bool {
        self.writer.lock().map(|w| w.is_some()).unwrap_or(false)
    }

    /// Runs `f` with the writer, opening it (one indexing thread, one merge thread, the
    /// configured memory) if it was closed.
    fn with_writer<T>(
        &self,
        memory: usize,
        f: impl FnOnce(&mut IndexWriter) -> Result<T>,
    ) -> Result<T> {
        let mut guard = self
            .writer
            .lock()
            .map_err(|_| Error::Index("writer lock poisoned".into()))?;
        if guard.is_none() {
            let options = IndexWriterOptions::builder()
                .num_worker_threads(1)
                .num_merge_threads(1)
                .memory_budget_per_thread(memory)
                .build();
            *guard = Some(self.index.writer_with_options(options)?);
        }
        if let Ok(mut t) = self.last_write.lock() {
            *t = Instant::now();
        }
        let writer = guard
            .as_mut()
            .ok_or_else(|| Error::Index("writer not open".into()))?;
        f(writer)
    }

    /// Commits the writer's changes with `progress` as the payload, then shows them to
    /// searches.
    fn commit(&self, memory: usize, progress: Progress) -> Result<()> {
        let payload = serde_json::to_string(&Payload {
            format: PAYLOAD_FORMAT.to_owned(),
            progress,
        })
        .map_err(|e| Error::Index(e.to_string()))?;
        self.with_writer(memory, |w| {
            let mut prepared = w.prepare_commit()?;
            prepared.set_payload(&payload);
            prepared.commit()?;
            Ok(())
        })?;
        self.reader.reload()?;
        if let Ok(mut p) = self.progress.lock() {
            *p = Some(progress);
        }
        Ok(())
    }

    /// Closes the writer (ends its threads, frees its memory) unless a sync of this copy is
    /// running: its uncommitted changes would be lost while its cursor moved on. Returns
    /// whether it closed one.
    fn close_writer_if_idle(&self) -> Result<bool> {
        let Ok(_no_sync) = self.sync.try_lock() else {
            return Ok(false);
        };
        self.close_writer()?;
        Ok(true)
    }

    /// Closes the writer; only with this copy's sync lock held, or when the copy is dropped.
    fn close_writer(&self) -> Result<()> {
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(w) = writer {
            w.wait_merging_threads()?;
        }
        Ok(())
    }

    fn idle_for(&self) -> Duration {
        self.last_write
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or_default()
    }
}

/// What one sync did, for logs, metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// The copy was rebuilt from the database.
    pub rebuilt: bool,
    /// Documents written (rebuild) or rows re-read from the outbox.
    pub indexed: usize,
    pub deleted: usize,
}

/// The search indexes of one app in one worker process.
#[derive(Clone)]
pub struct SearchIndexes {
    inner: Arc<Inner>,
}

struct Inner {
    plane: DataPlane,
    app: AppId,
    config: SearchConfig,
    schema: IndexSchema,
    tenants: Mutex<HashMap<TenantId, Arc<TenantIndex>>>,
}

impl std::fmt::Debug for SearchIndexes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndexes")
            .field("app", &self.inner.app)
            .field("dir", &self.inner.config.dir)
            .finish_non_exhaustive()
    }
}

impl SearchIndexes {
    pub fn new(plane: DataPlane, config: SearchConfig) -> Self {
        let schema = IndexSchema::new(plane.manifest());
        Self {
            inner: Arc::new(Inner {
                app: plane.manifest().app.clone(),
                plane,
                config,
                schema,
                tenants: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Whether the app has anything to index.
    pub fn is_enabled(&self) -> bool {
        !self.inner.schema.text.is_empty()
    }

    pub fn config(&self) -> &SearchConfig {
        &self.inner.config
    }

    /// The directory of a tenant's copy: `<dir>/<app>/<tenant>`.
    pub fn tenant_dir(&self, tenant: &TenantId) -> PathBuf {
        self.app_dir().join(tenant.as_str())
    }

    fn app_dir(&self) -> PathBuf {
        self.inner.config.dir.join(self.inner.app.as_str())
    }

    pub(crate) fn schema(&self) -> &IndexSchema {
        &self.inner.schema
    }

    pub(crate) fn plane(&self) -> &DataPlane {
        &self.inner.plane
    }

    /// The tenant's open copy, opened (not built) if needed. A copy whose directory was
    /// removed underneath is dropped and reopened empty.
    fn tenant_index(&self, tenant: &TenantId) -> Result<Arc<TenantIndex>> {
        let dir = self.tenant_dir(tenant);
        let mut tenants = self
            .inner
            .tenants
            .lock()
            .map_err(|_| Error::Index("index table poisoned".into()))?;
        if let Some(t) = tenants.get(tenant) {
            if t.dir.join("meta.json").exists() {
                return Ok(t.clone());
            }
            tenants.remove(tenant);
        }
        let t = Arc::new(TenantIndex::open(&dir, &self.inner.schema)?);
        tenants.insert(tenant.clone(), t.clone());
        Ok(t)
    }

    /// The tenant's copy, built first if it never was (the first search of a tenant waits
    /// for its build).
    pub(crate) async fn ready_index(&self, tenant: &TenantId) -> Result<Arc<TenantIndex>> {
        let t = self.tenant_index(tenant)?;
        if t.progress().is_none() {
            let level = self
                .inner
                .plane
                .tenants()
                .into_iter()
                .find(|(id, _, _)| id == tenant)
                .map(|(_, level, _)| level)
                .ok_or(bulkhead_pg::Error::TenantNotFound)?;
            self.sync(tenant, level).await?;
            return self.tenant_index(tenant);
        }
        Ok(t)
    }

    /// Brings the tenant's copy up to date: applies its outbox, or rebuilds it from the
    /// database when the copy is new, was built at another level, is older than the outbox
    /// retention, or a rebuild was requested.
    pub async fn sync(&self, tenant: &TenantId, level: IsolationLevel) -> Result<SyncReport> {
        let t = self.tenant_index(tenant)?;
        let _one_at_a_time = t.sync.lock().await;
        let source = self.inner.plane.search_source(tenant)?;
        let retention = self.inner.config.outbox_retention_secs;
        let memory = self.inner.config.writer_memory_bytes;
        let current = t
            .progress()
            .filter(|p| p.level == level && now_secs().saturating_sub(p.at) < retention);
        let Some(progress) = current else {
            return self.rebuild(&t, &source, level, 0).await;
        };
        let changes = source.changes_since(progress.cursor).await?;
        if let Some(seq) = changes.rebuild_request
            && seq > progress.rebuild_seq
        {
            return self.rebuild(&t, &source, level, seq).await;
        }
        let stale_commit = now_secs().saturating_sub(progress.at) > retention / 4;
        if changes.outbox_rows == 0 && !stale_commit {
            return Ok(SyncReport::default());
        }
        self.make_room(tenant)?;
        let schema = &self.inner.schema;
        t.with_writer(memory, |w| {
            for (entity, id) in &changes.deletes {
                w.delete_term(schema.key_term(entity, id));
            }
            for d in &changes.upserts {
                w.delete_term(schema.key_term(&d.entity, &d.id));
                w.add_document(schema.document(d))?;
            }
            Ok(())
        })?;
        let next = Progress {
            cursor: changes.horizon,
            at: now_secs(),
            ..progress
        };
        let t2 = t.clone();
        tokio::task::spawn_blocking(move || t2.commit(memory, next))
            .await
            .map_err(|e| Error::Index(e.to_string()))??;
        Ok(SyncReport {
            rebuilt: false,
            indexed: changes.upserts.len(),
            deleted: changes.deletes.len(),
        })
    }

    async fn rebuild(
        &self,
        t: &Arc<TenantIndex>,
        source: &bulkhead_pg::search::SearchSource,
        level: IsolationLevel,
        request: i64,
    ) -> Result<SyncReport> {
        self.make_room(source.tenant())?;
        let memory = self.inner.config.writer_memory_bytes;
        let schema = &self.inner.schema;
        t.with_writer(memory, |w| {
            w.delete_all_documents()?;
            Ok(())
        })?;
        let mut indexed = 0;
        let scanned = source
            .scan(2000, |docs| {
                indexed += docs.len();
                t.with_writer(memory, |w| {
                    for d in &docs {
                        w.add_document(schema.document(d))?;
                    }
                    Ok(())
                })
                .map_err(|e| bulkhead_pg::Error::Internal(e.to_string()))
            })
            .await;
        let (horizon, seen) = match scanned {
            Ok(v) => v,
            Err(e) => {
                // Drop what the writer buffered: the committed copy stays as it was.
                let _ = t.with_writer(memory, |w| Ok(w.rollback()?));
                return Err(e.into());
            }
        };
        let next = Progress {
            cursor: horizon,
            rebuild_seq: request.max(seen.unwrap_or(0)),
            level,
            at: now_secs(),
        };
        let t2 = t.clone();
        tokio::task::spawn_blocking(move || t2.commit(memory, next))
            .await
            .map_err(|e| Error::Index(e.to_string()))??;
        tracing::info!(app = %self.inner.app, tenant = %source.tenant(), docs = indexed, "search index rebuilt");
        Ok(SyncReport {
            rebuilt: true,
            indexed,
            deleted: 0,
        })
    }

    /// Keeps at most `max_open_writers` writers open: closes the least recently used others.
    fn make_room(&self, keep: &TenantId) -> Result<()> {
        let open: Vec<(TenantId, Arc<TenantIndex>)> = self
            .inner
            .tenants
            .lock()
            .map_err(|_| Error::Index("index table poisoned".into()))?
            .iter()
            .filter(|(id, t)| *id != keep && t.writer_open())
            .map(|(id, t)| (id.clone(), t.clone()))
            .collect();
        let max = self.inner.config.max_open_writers.max(1);
        if open.len() < max {
            return Ok(());
        }
        let mut by_age = open;
        by_age.sort_by_key(|(_, t)| std::cmp::Reverse(t.idle_for()));
        for (_, t) in by_age.iter().take(by_age.len() + 1 - max) {
            t.close_writer_if_idle()?;
        }
        Ok(())
    }

    /// Closes writers idle longer than `idle_writer_secs`; returns how many.
    pub fn close_idle_writers(&self) -> usize {
        let idle = Duration::from_secs(self.inner.config.idle_writer_secs);
        let all: Vec<Arc<TenantIndex>> = self
            .inner
            .tenants
            .lock()
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default();
        let mut closed = 0;
        for t in all {
            if t.writer_open() && t.idle_for() >= idle && t.close_writer_if_idle().unwrap_or(false)
            {
                closed += 1;
            }
        }
        closed
    }

    /// Writers open now.
    pub fn open_writers(&self) -> usize {
        self.inner
            .tenants
            .lock()
            .map(|t| t.values().filter(|t| t.writer_open()).count())
            .unwrap_or(0)
    }

    /// Removes a tenant's copy (the tenant was deleted).
    pub fn forget(&self, tenant: &TenantId) -> Result<()> {
        let t = self
            .inner
            .tenants
            .lock()
            .map_err(|_| Error::Index("index table poisoned".into()))?
            .remove(tenant);
        if let Some(t) = t {
            t.close_writer()?;
        }
        let dir = self.tenant_dir(tenant);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::Index(format!("{}: {e}", dir.display())))
            }
            _ => Ok(()),
        }
    }

    /// One pass over every registered tenant: syncs the active ones, prunes their outboxes
    /// when `prune` is set, removes copies of tenants no longer registered, closes idle
    /// writers. Errors are per tenant: logged and returned, the others still sync.
    pub async fn sync_all(&self, prune: bool) -> Vec<(TenantId, Result<SyncReport>)> {
        let tenants = self.inner.plane.tenants();
        let mut out = Vec::new();
        for (tenant, level, suspended) in &tenants {
            if *suspended {
                continue;
            }
            let mut result = self.sync(tenant, *level).await;
            if prune && result.is_ok() {
                let pruned = match self.inner.plane.search_source(tenant) {
                    Ok(s) => s.prune(self.inner.config.outbox_retention_secs).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = pruned {
                    result = Err(e.into());
                }
            }
            if let Err(e) = &result {
                tracing::warn!(app = %self.inner.app, tenant = %tenant, error = %e, "search sync failed");
            }
            out.push((tenant.clone(), result));
        }
        self.remove_unregistered(&tenants);
        self.close_idle_writers();
        out
    }

    fn remove_unregistered(&self, tenants: &[(TenantId, IsolationLevel, bool)]) {
        let Ok(entries) = std::fs::read_dir(self.app_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Ok(id) = TenantId::parse(name) else {
                continue;
            };
            if !tenants.iter().any(|(t, _, _)| *t == id)
                && let Err(e) = self.forget(&id)
            {
                tracing::warn!(tenant = %id, error = %e, "removing a deleted tenant's index");
            }
        }
    }

    /// Follows every tenant's outbox until the task is dropped: one pass every
    /// `poll_millis`, outbox pruning every minute.
    pub async fn follow(self) {
        let poll = Duration::from_millis(self.inner.config.poll_millis.max(50));
        let mut last_prune = Instant::now();
        loop {
            let prune = last_prune.elapsed() >= Duration::from_secs(60);
            if prune {
                last_prune = Instant::now();
            }
            self.sync_all(prune).await;
            tokio::time::sleep(poll).await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_writer_is_not_closed_under_a_running_sync() {
        let m = AppManifest::from_yaml(
            "app: kb\nentities:\n  article:\n    fields:\n      title: { type: text, search: true }\n",
            "kb.yaml",
        )
        .unwrap();
        let schema = IndexSchema::new(&m);
        let dir = tempfile::tempdir().unwrap();
        let t = TenantIndex::open(dir.path(), &schema).unwrap();
        t.with_writer(15_000_000, |_| Ok(())).unwrap();
        let running = t.sync.lock().await;
        assert!(!t.close_writer_if_idle().unwrap());
        assert!(t.writer_open(), "the sync's writer stays open");
        drop(running);
        assert!(t.close_writer_if_idle().unwrap());
        assert!(!t.writer_open());
    }
}
