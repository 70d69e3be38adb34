//! `search`: per-tenant indexing throughput and query latency.
//!
//! Seeds `--docs` rows in each of `--tenants` tenants (row level; the outbox trigger fires for
//! every row, as for any write), then measures, side by side in one run:
//! - indexing: the follower applying the outbox into an existing copy, and a rebuild from the
//!   database into an empty directory, against a hand-written tantivy loop adding the same
//!   documents from memory with the same schema and writer settings (no database);
//! - queries: `SearchIndexes::search` (parse, tenant scope, counts and facets, re-reading every
//!   hit through the caller's permissions, highlights) against a hand-written tantivy search of
//!   the same copy (parse, top 20, stored keys), alternating query by query.
//!
//! The last line is one JSON object.

use std::str::FromStr;
use std::time::Instant;

use anyhow::Context;
use bulkhead_model::{AppManifest, IsolationLevel, TenantId};
use bulkhead_pg::{Actor, PoolSettings, TenantPlacement};
use bulkhead_search::{SearchConfig, SearchIndexes, SearchRequest};
use serde_json::json;
use tantivy::collector::TopDocs;
use tantivy::indexer::IndexWriterOptions;
use tantivy::query::QueryParser;
use tantivy::schema::{STORED, STRING, Schema, TEXT, Value as _};
use tokio_postgres::NoTls;

use crate::Samples;

#[derive(Debug, clap::Args)]
pub(crate) struct SearchArgs {
    /// Admin (superuser) URL of a PostgreSQL server; default: a private ephemeral cluster.
    #[arg(long)]
    admin_url: Option<String>,
    #[arg(long, default_value_t = 3)]
    tenants: usize,
    /// Documents per tenant.
    #[arg(long, default_value_t = 100_000)]
    docs: usize,
    /// Queries per tenant and side.
    #[arg(long, default_value_t = 300)]
    queries: usize,
}

const MANIFEST: &str = r#"app: benchsearch
entities:
  doc:
    fields:
      title: { type: text, required: true, search: true }
      body: { type: text, search: true }
"#;

/// Rows with Zipf-like word frequencies over a 5,000-word vocabulary: a 6-word title and a
/// 40-word body, as the superuser (the outbox trigger fires per row regardless).
const SEED: &str = "INSERT INTO public.doc (tenant_id, title, body)
SELECT $1, (SELECT string_agg('w' || floor(5000 * power(random(), 3))::int, ' ')
            FROM generate_series(1, 6) WHERE g.i IS NOT NULL),
           (SELECT string_agg('w' || floor(5000 * power(random(), 3))::int, ' ')
            FROM generate_series(1, 40) WHERE g.i IS NOT NULL)
FROM generate_series(1, $2::int) AS g(i)";

const QUERIES: &[&str] = &[
    "w1",
    "w17",
    "w250",
    "w1200 w3",
    "w40 AND w41",
    "\"w1 w2\"",
    "w4999",
    "doc.title:w5",
    "w9 OR w90",
    "w300 -w1",
];

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub(crate) async fn run(args: SearchArgs) -> anyhow::Result<()> {
    let (admin_url, _cluster_guard) = crate::database(args.admin_url.as_deref())?;
    let admin = tokio_postgres::Config::from_str(&admin_url).context("admin URL")?;
    let manifest = AppManifest::from_yaml(MANIFEST, "bench.yaml")?;
    let crate::BenchApp {
        prov, app, plane, ..
    } = crate::provision(&admin, &manifest, PoolSettings::default()).await?;
    let mut su_cfg = admin.clone();
    su_cfg.dbname(&app.database);
    let (su, conn) = su_cfg.connect(NoTls).await?;
    tokio::spawn(conn);
    let mut tenants = Vec::new();
    for t in 0..args.tenants {
        let id = TenantId::parse(&format!("tenant-{t}"))?;
        prov.ensure_tenant(&manifest, &id, IsolationLevel::Row)
            .await?;
        plane.register_tenant(TenantPlacement {
            tenant: id.clone(),
            level: IsolationLevel::Row,
            database_password: None,
            suspended: false,
        });
        tenants.push(id);
    }
    let dir = std::env::temp_dir().join(format!("bulkhead-bench-search-{}", std::process::id()));
    let config = |sub: &str| SearchConfig {
        dir: dir.join(sub),
        ..SearchConfig::default()
    };
    let follower = SearchIndexes::new(plane.clone(), config("follow"));
    // Empty copies first, so that the seeded rows arrive through the outbox.
    follower.sync_all(false).await;
    for t in &tenants {
        eprintln!("seeding {t}: {} documents", args.docs);
        su.execute(SEED, &[&t.as_str(), &i32::try_from(args.docs)?])
            .await?;
    }
    su.batch_execute("ANALYZE").await?;

    let mut indexing = Vec::new();
    let (mut follow_secs, mut rebuild_secs, mut raw_secs) = (0.0, 0.0, 0.0);
    let rebuilder = SearchIndexes::new(plane.clone(), config("rebuild"));
    for t in &tenants {
        let t0 = Instant::now();
        let r = follower.sync(t, IsolationLevel::Row).await?;
        let follow = t0.elapsed().as_secs_f64();
        anyhow::ensure!(!r.rebuilt && r.indexed == args.docs, "follow: {r:?}");
        let t0 = Instant::now();
        let r = rebuilder.sync(t, IsolationLevel::Row).await?;
        let rebuild = t0.elapsed().as_secs_f64();
        anyhow::ensure!(r.rebuilt && r.indexed == args.docs, "rebuild: {r:?}");
        let raw = raw_index(&su, t, &dir.join("raw").join(t.as_str())).await?;
        let per_sec = |s: f64| (args.docs as f64 / s).round();
        let line = json!({"tenant": t.as_str(), "docs": args.docs,
            "follow_docs_per_sec": per_sec(follow), "rebuild_docs_per_sec": per_sec(rebuild),
            "baseline_tantivy_docs_per_sec": per_sec(raw)});
        eprintln!("{line}");
        indexing.push(line);
        follow_secs += follow;
        rebuild_secs += rebuild;
        raw_secs += raw;
    }

    // Queries: Bulkhead and the baseline alternate query by query on the same copy.
    let mut bh = Samples::default();
    let mut base = Samples::default();
    for t in &tenants {
        let ctx = plane.context(
            t,
            Actor {
                user_id: Some("bench".into()),
                request_id: None,
                roles: vec!["agent".into()],
            },
        )?;
        let index = tantivy::Index::open_in_dir(follower.tenant_dir(t))?;
        let reader = index.reader()?;
        let schema = index.schema();
        let key = schema.get_field("key")?;
        let parser = QueryParser::for_index(
            &index,
            vec![
                schema.get_field("doc.title")?,
                schema.get_field("doc.body")?,
            ],
        );
        for i in 0..args.queries + 20 {
            let q = QUERIES[i % QUERIES.len()];
            let t0 = Instant::now();
            let page = follower
                .search(
                    &ctx,
                    &SearchRequest {
                        q: q.to_owned(),
                        ..SearchRequest::default()
                    },
                )
                .await?;
            let bh_us = t0.elapsed();
            let t0 = Instant::now();
            let searcher = reader.searcher();
            let query = parser.parse_query(q)?;
            let top = searcher.search(&query, &TopDocs::with_limit(20).order_by_score())?;
            let mut keys = Vec::with_capacity(top.len());
            for (_, addr) in top {
                let doc: tantivy::TantivyDocument = searcher.doc(addr)?;
                keys.push(
                    doc.get_first(key)
                        .and_then(|v| v.as_str())
                        .map(str::to_owned),
                );
            }
            let base_us = t0.elapsed();
            anyhow::ensure!(!keys.is_empty() || page.hits.is_empty());
            if i >= 20 {
                // The first 20 warm caches on both sides.
                for (s, d) in [(&mut bh, bh_us), (&mut base, base_us)] {
                    s.ops += 1;
                    s.elapsed += d;
                    s.latencies_us
                        .push(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (bhs, bases) = (bh.summary(), base.summary());
    let p50 = |v: &serde_json::Value| v["p50_us"].as_f64().unwrap_or(0.0).max(1.0);
    let total_docs = (args.docs * args.tenants) as f64;
    let out = json!({
        "benchmark": "search",
        "tenants": args.tenants,
        "docs_per_tenant": args.docs,
        "indexing": indexing,
        "follow_docs_per_sec": (total_docs / follow_secs.max(1e-9)).round(),
        "rebuild_docs_per_sec": (total_docs / rebuild_secs.max(1e-9)).round(),
        "baseline_tantivy_docs_per_sec": (total_docs / raw_secs.max(1e-9)).round(),
        "queries": {"bulkhead": bhs, "baseline_tantivy": bases},
        "query_p50_ratio": round3(p50(&bhs) / p50(&bases)),
        "rebuild_vs_baseline_ratio": round3(raw_secs / rebuild_secs.max(1e-9)),
    });
    println!("{out}");
    Ok(())
}

/// The hand-written baseline: the same documents, loaded into memory first (not timed), added
/// with a plain tantivy writer of the same settings; seconds taken.
async fn raw_index(
    su: &tokio_postgres::Client,
    tenant: &TenantId,
    dir: &std::path::Path,
) -> anyhow::Result<f64> {
    let rows = su
        .query(
            "SELECT id::text, title, body FROM public.doc WHERE tenant_id = $1",
            &[&tenant.as_str()],
        )
        .await?;
    let docs: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    std::fs::create_dir_all(dir)?;
    let mut b = Schema::builder();
    let key = b.add_text_field("key", STRING | STORED);
    let entity = b.add_text_field("entity", STRING);
    let title = b.add_text_field("doc.title", TEXT);
    let body = b.add_text_field("doc.body", TEXT);
    let index = tantivy::Index::create_in_dir(dir, b.build())?;
    let t0 = Instant::now();
    let mut writer: tantivy::IndexWriter = index.writer_with_options(
        IndexWriterOptions::builder()
            .num_worker_threads(1)
            .num_merge_threads(1)
            .memory_budget_per_thread(SearchConfig::default().writer_memory_bytes)
            .build(),
    )?;
    for (id, t, bd) in &docs {
        let mut doc = tantivy::TantivyDocument::new();
        doc.add_text(key, format!("doc/{id}"));
        doc.add_text(entity, "doc");
        doc.add_text(title, t);
        doc.add_text(body, bd);
        writer.add_document(doc)?;
    }
    writer.commit()?;
    let secs = t0.elapsed().as_secs_f64();
    writer.wait_merging_threads()?;
    Ok(secs)
}
