//! `bulkhead-bench`: benchmarks as programs that print JSON.
//!
//! `scoping` compares TenantDb (transaction + `set_config` + RLS + `tenant_id` filter, one
//! pipelined round trip) with hand-written tokio-postgres statements using
//! `WHERE tenant_id = $1` on an identical table without RLS and without a transaction, on the
//! same database, side by side in one run, alternating rounds so drift hits both sides alike.
//! The last line of output is one JSON object; `"ratio"` is the worst scenario's
//! Bulkhead ops/s ÷ baseline ops/s.
//!
//! `rest` does the same through the HTTP stack, `served` through the `bulkhead` server and
//! worker processes as deployed; `search` measures per-tenant indexing and
//! queries (see its module); `tenants` measures declaring many tenants (see its module).

mod functions;
mod realms;
mod rest;
mod search;
mod served;
mod silos;
mod tenants;

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bulkhead_model::{AppManifest, IsolationLevel, TenantId};
use bulkhead_pg::{
    Actor, DataPlane, DataPlaneConfig, Direction, PoolSettings, Provisioner, TenantContext,
    TenantPlacement,
};
use bulkhead_pgcluster::{Cluster, Durability};
use clap::{Parser, Subcommand};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use serde_json::json;
use tokio_postgres::NoTls;

#[derive(Debug, Parser)]
#[command(name = "bulkhead-bench", about = "Benchmarks that print JSON")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// TenantDb reads by id, list-of-20 queries and inserts vs hand-written tokio-postgres
    /// with `WHERE tenant_id = $1`, at concurrency 1 and 16.
    Scoping(ScopingArgs),
    /// GET by id and list-of-20 through the full HTTP stack (tenant resolution, token
    /// verification, permissions, TenantDb) vs a hand-written axum + tokio-postgres handler.
    Rest(ScopingArgs),
    /// The same GET by id and list of 20 through `bulkhead up` as deployed (the server's
    /// gateway and the app's worker process) vs a hand-written axum handler on the same table.
    Served(served::ServedArgs),
    /// A mini-app function doing one `db.get` vs the generated REST GET of the same row, and
    /// an empty function (over HTTP and on the engine alone).
    Functions(ScopingArgs),
    /// Per-tenant search: outbox-following and rebuild throughput (docs/s) and query latency
    /// (p50/p99) vs hand-written tantivy on the same documents.
    Search(search::SearchArgs),
    /// Declaring N tenants: `apply`'s batch, one declaration at a time, and the provisioner
    /// alone, in milliseconds per tenant at each count; a no-op migrate over them.
    Tenants(tenants::TenantsArgs),
    /// Local realms at scale: login and token verification p50 with few and with many realms.
    Realms(realms::RealmsArgs),
    /// Many `database` tenants under a connection budget: get by id round-robin over all of
    /// them against the same over as many as the budget holds pools for.
    Silos(silos::SilosArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct ScopingArgs {
    /// Admin (superuser) URL of a PostgreSQL server to use; default: a private ephemeral
    /// cluster in a temporary directory, removed afterwards.
    #[arg(long)]
    admin_url: Option<String>,
    /// Seconds per measured round and side.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Measured rounds per scenario (sides alternate each round).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Tenants and rows per tenant.
    #[arg(long, default_value_t = 20)]
    tenants: usize,
    #[arg(long, default_value_t = 500)]
    rows: usize,
    /// Concurrency levels to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    concurrency: Vec<usize>,
}

pub(crate) const MANIFEST: &str = r#"app: bench
entities:
  ticket:
    fields:
      title: { type: text, required: true }
      prio: { type: int, required: true }
      status: { type: enum, values: [open, closed], default: open }
"#;

const BASELINE_DDL: &str = r#"
CREATE SCHEMA IF NOT EXISTS baseline;
CREATE TABLE IF NOT EXISTS baseline.ticket (
  tenant_id text NOT NULL,
  id uuid NOT NULL DEFAULT gen_random_uuid(),
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  title text NOT NULL,
  prio integer NOT NULL,
  status text DEFAULT 'open' CHECK (status IN ('open', 'closed')),
  PRIMARY KEY (tenant_id, id)
);
CREATE INDEX IF NOT EXISTS ticket_created_idx ON baseline.ticket (tenant_id, created_at, id);
"#;

const BASE_GET: &str = "SELECT id::text, created_at, updated_at, title, prio, status \
     FROM baseline.ticket WHERE tenant_id = $1 AND id = $2::text::uuid";
const BASE_LIST: &str = "SELECT id::text, created_at, updated_at, title, prio, status \
     FROM baseline.ticket WHERE tenant_id = $1 ORDER BY ticket.created_at, ticket.id LIMIT 20";
const BASE_INSERT: &str = "INSERT INTO baseline.ticket (tenant_id, title, prio) VALUES ($1, $2, $3) \
     RETURNING id::text, created_at, updated_at, title, prio, status";

/// A ticket as app code reads it. Every side decodes every field of every row it reads, as an
/// app does: Bulkhead's into this type through `get_as` / `fetch_as` (timestamps arrive as
/// RFC 3339 text), the hand-written sides into [`HandTicket`] with `Row::get`.
#[derive(serde::Deserialize)]
#[allow(dead_code)] // only decoded
struct Ticket {
    id: String,
    created_at: String,
    updated_at: String,
    title: String,
    prio: i32,
    status: Option<String>,
}

#[allow(dead_code)] // only decoded
struct HandTicket {
    id: String,
    created_at: std::time::SystemTime,
    updated_at: std::time::SystemTime,
    title: String,
    prio: i32,
    status: Option<String>,
}

/// Rows of `BASE_*` / `SCOPED_*` decoded by hand.
fn hand_tickets(rows: &[tokio_postgres::Row]) -> anyhow::Result<Vec<HandTicket>> {
    rows.iter()
        .map(|r| {
            Ok(HandTicket {
                id: r.try_get(0)?,
                created_at: r.try_get(1)?,
                updated_at: r.try_get(2)?,
                title: r.try_get(3)?,
                prio: r.try_get(4)?,
                status: r.try_get(5)?,
            })
        })
        .collect()
}

pub(crate) struct Fixture {
    plane: DataPlane,
    admin: tokio_postgres::Config,
    contexts: Vec<TenantContext>,
    tenants: Vec<String>,
    /// Row ids per tenant, the same ids on both sides.
    ids: Vec<Vec<String>>,
    baseline: Pool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Scenario {
    GetById,
    List20,
    Insert,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::GetById => "get_by_id",
            Scenario::List20 => "list_20",
            Scenario::Insert => "insert",
        }
    }
}

#[derive(Default)]
pub(crate) struct Samples {
    pub(crate) ops: u64,
    pub(crate) elapsed: Duration,
    pub(crate) latencies_us: Vec<u64>,
}

impl Samples {
    pub(crate) fn merge(&mut self, other: Samples) {
        self.ops += other.ops;
        self.elapsed += other.elapsed;
        self.latencies_us.extend(other.latencies_us);
    }

    pub(crate) fn summary(&mut self) -> serde_json::Value {
        self.latencies_us.sort_unstable();
        let pct = |p: f64| {
            let n = self.latencies_us.len();
            if n == 0 {
                return 0;
            }
            let i = ((n as f64 - 1.0) * p).round() as usize;
            self.latencies_us[i.min(n - 1)]
        };
        json!({
            "ops_per_sec": self.ops_per_sec().round(),
            "p50_us": pct(0.50),
            "p99_us": pct(0.99),
            "ops": self.ops,
        })
    }

    pub(crate) fn ops_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs == 0.0 {
            0.0
        } else {
            self.ops as f64 / secs
        }
    }
}

/// Which implementation runs an operation.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Side {
    /// TenantDb.
    Bulkhead,
    /// Hand-written tokio-postgres, `WHERE tenant_id = $1`, no RLS, no transaction.
    Baseline,
    /// Hand-written tokio-postgres doing what TenantDb does on the wire: BEGIN, set_config,
    /// the statement on the RLS table, COMMIT, pipelined. Separates the cost of the protocol
    /// from the cost of the library.
    HandScoped,
}

const SCOPED_GET: &str = "SELECT id::text, created_at, updated_at, title, prio, status \
     FROM public.ticket WHERE tenant_id = $1 AND id = $2::text::uuid";
const SCOPED_LIST: &str = "SELECT id::text, created_at, updated_at, title, prio, status \
     FROM public.ticket WHERE tenant_id = $1 ORDER BY ticket.created_at, ticket.id LIMIT 20";
const SCOPED_INSERT: &str = "INSERT INTO public.ticket (tenant_id, title, prio) VALUES ($1, $2, $3) \
     RETURNING id::text, created_at, updated_at, title, prio, status";

async fn hand_scoped(
    f: &Fixture,
    scenario: Scenario,
    tenant: &String,
    id: &String,
) -> anyhow::Result<()> {
    let client = f.baseline.get().await?;
    let (begin, set, commit) = tokio::try_join!(
        client.prepare_cached("BEGIN"),
        client.prepare_cached("SELECT set_config('bulkhead.tenant_id', $1, true)"),
        client.prepare_cached("COMMIT"),
    )?;
    let sql = match scenario {
        Scenario::GetById => SCOPED_GET,
        Scenario::List20 => SCOPED_LIST,
        Scenario::Insert => SCOPED_INSERT,
    };
    let stmt = client.prepare_cached(sql).await?;
    let title: &str = "bench";
    let prio = 1_i32;
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = match scenario {
        Scenario::GetById => vec![tenant, id],
        Scenario::List20 => vec![tenant],
        Scenario::Insert => vec![
            tenant,
            &title as &(dyn tokio_postgres::types::ToSql + Sync),
            &prio,
        ],
    };
    let set_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [tenant];
    let (b, s, r, c) = tokio::join!(
        client.execute(&begin, &[]),
        client.execute(&set, &set_params),
        client.query(&stmt, &params),
        client.execute(&commit, &[]),
    );
    b?;
    s?;
    let rows = r?;
    c?;
    anyhow::ensure!(!rows.is_empty());
    if scenario != Scenario::Insert {
        std::hint::black_box(hand_tickets(&rows)?);
    }
    Ok(())
}

async fn one_op(
    f: &Fixture,
    side: Side,
    scenario: Scenario,
    worker: usize,
    i: usize,
) -> anyhow::Result<()> {
    let t = (worker + i) % f.tenants.len();
    let ids = &f.ids[t];
    let id = &ids[(i * 7919 + worker * 104_729) % ids.len()];
    if side == Side::HandScoped {
        return hand_scoped(f, scenario, &f.tenants[t], id).await;
    }
    if side == Side::Bulkhead {
        let db = f.contexts[t].db();
        match scenario {
            Scenario::GetById => {
                std::hint::black_box(db.get_as::<Ticket>("ticket", id).await?);
            }
            Scenario::List20 => {
                let page = db
                    .query("ticket")
                    .order_by("created_at", Direction::Asc)
                    .limit(20)
                    .fetch_as::<Ticket>()
                    .await?;
                anyhow::ensure!(page.records.len() == 20);
                std::hint::black_box(page);
            }
            Scenario::Insert => {
                db.insert("ticket", &json!({"title": "bench", "prio": 1}))
                    .await?;
            }
        }
    } else {
        let client = f.baseline.get().await?;
        let tenant = &f.tenants[t];
        match scenario {
            Scenario::GetById => {
                let stmt = client.prepare_cached(BASE_GET).await?;
                let rows = client.query(&stmt, &[tenant, id]).await?;
                anyhow::ensure!(rows.len() == 1);
                std::hint::black_box(hand_tickets(&rows)?);
            }
            Scenario::List20 => {
                let stmt = client.prepare_cached(BASE_LIST).await?;
                let rows = client.query(&stmt, &[tenant]).await?;
                anyhow::ensure!(rows.len() == 20);
                std::hint::black_box(hand_tickets(&rows)?);
            }
            Scenario::Insert => {
                let stmt = client.prepare_cached(BASE_INSERT).await?;
                client.query_one(&stmt, &[tenant, &"bench", &1_i32]).await?;
            }
        }
    }
    Ok(())
}

async fn measure(
    f: &Arc<Fixture>,
    side: Side,
    scenario: Scenario,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Samples> {
    let f = f.clone();
    drive(concurrency, duration, move |worker, i| {
        let f = f.clone();
        async move { one_op(&f, side, scenario, worker, i).await }
    })
    .await
}

/// Each scenario's comparison, as the JSON lines a benchmark prints, and the worst ratio.
#[derive(Default)]
pub(crate) struct Report {
    pub(crate) scenarios: Vec<serde_json::Value>,
    worst: Option<f64>,
}

impl Report {
    /// Records one scenario: `ours` (under the key `label`) against the baseline, with
    /// `extra` keys of the caller's.
    pub(crate) fn add(
        &mut self,
        scenario: &str,
        concurrency: usize,
        label: &str,
        mut ours: Samples,
        mut base: Samples,
        extra: serde_json::Map<String, serde_json::Value>,
    ) {
        let ratio = ours.ops_per_sec() / base.ops_per_sec().max(1e-9);
        self.worst = Some(self.worst.map_or(ratio, |w| w.min(ratio)));
        let mut line = json!({
            "scenario": scenario,
            "concurrency": concurrency,
            "baseline": base.summary(),
            "ratio": round3(ratio),
        });
        line[label] = ours.summary();
        if let Some(fields) = line.as_object_mut() {
            fields.extend(extra);
        }
        eprintln!("{line}");
        self.scenarios.push(line);
    }

    /// The worst scenario's ratio, rounded to three places.
    pub(crate) fn ratio(&self) -> Option<f64> {
        self.worst.map(round3)
    }
}

/// A ratio as printed: three decimal places.
pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Warms up every side, then measures each `rounds` times for `duration`, rotating which goes
/// first so that drift hits all alike; `measure(side, duration)` measures one side. Returns
/// each side's samples, in side order.
pub(crate) async fn side_by_side<F, Fut>(
    sides: usize,
    rounds: usize,
    duration: Duration,
    mut measure: F,
) -> anyhow::Result<Vec<Samples>>
where
    F: FnMut(usize, Duration) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Samples>>,
{
    for side in 0..sides {
        measure(side, Duration::from_millis(300)).await?;
    }
    let mut out: Vec<Samples> = (0..sides).map(|_| Samples::default()).collect();
    for round in 0..rounds {
        for k in 0..sides {
            let side = (round + k) % sides;
            let s = measure(side, duration).await?;
            out[side].merge(s);
        }
    }
    Ok(out)
}

/// Calls `op(worker, i)` from `concurrency` tasks, each in a loop until `duration` has
/// passed, timing every call; the first error ends the measurement.
pub(crate) async fn drive<F, Fut>(
    concurrency: usize,
    duration: Duration,
    op: F,
) -> anyhow::Result<Samples>
where
    F: Fn(usize, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                op(worker, i).await?;
                lat.push(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX));
                i += 1;
            }
            anyhow::Ok(lat)
        }));
    }
    let mut samples = Samples::default();
    for t in tasks {
        let lat = t.await??;
        samples.ops += lat.len() as u64;
        samples.latencies_us.extend(lat);
    }
    samples.elapsed = start.elapsed();
    Ok(samples)
}

/// An app provisioned on the benchmark's cluster: its provisioner, its database and roles,
/// the runtime role's password and a data plane reaching it.
pub(crate) struct BenchApp {
    pub(crate) prov: Provisioner,
    pub(crate) app: bulkhead_pg::AppProvision,
    pub(crate) runtime_password: bulkhead_pg::Secret,
    pub(crate) plane: DataPlane,
}

pub(crate) async fn provision(
    admin: &tokio_postgres::Config,
    manifest: &AppManifest,
    pools: PoolSettings,
) -> anyhow::Result<BenchApp> {
    let prov = Provisioner::new(bulkhead_pg::PgConfig::new(
        admin.clone(),
        Default::default(),
    )?);
    let app = prov.ensure_app(manifest).await?;
    let runtime_password = match app.runtime.password.clone() {
        Some(p) => p,
        None => prov.rotate_password(&app.runtime.role).await?,
    };
    let plane = DataPlane::new(
        manifest.clone(),
        DataPlaneConfig {
            host: "127.0.0.1".into(),
            port: admin.get_ports().first().copied().unwrap_or(5432),
            app_database: app.database.clone(),
            runtime_role: app.runtime.role.clone(),
            runtime_password: runtime_password.clone(),
            cross_tenant: None,
            pools,
            tls: Default::default(),
            reach: Default::default(),
        },
    )?;
    Ok(BenchApp {
        prov,
        app,
        runtime_password,
        plane,
    })
}

pub(crate) async fn setup(admin_url: &str, args: &ScopingArgs) -> anyhow::Result<Fixture> {
    let admin = tokio_postgres::Config::from_str(admin_url).context("admin URL")?;
    let manifest = AppManifest::from_yaml(MANIFEST, "bench.yaml")?;
    let pools = PoolSettings {
        app_pool_size: 16,
        ..PoolSettings::default()
    };
    let BenchApp {
        app,
        runtime_password,
        plane,
        ..
    } = provision(&admin, &manifest, pools).await?;
    let host = "127.0.0.1".to_owned();
    let port = admin.get_ports().first().copied().unwrap_or(5432);
    // Baseline: same database, same runtime role, a plain table without RLS.
    let mut su_cfg = admin.clone();
    su_cfg.dbname(&app.database);
    let (su, conn) = su_cfg.connect(NoTls).await?;
    tokio::spawn(conn);
    su.batch_execute(BASELINE_DDL).await?;
    su.batch_execute(&format!(
        "GRANT USAGE ON SCHEMA baseline TO {r}; GRANT SELECT, INSERT ON baseline.ticket TO {r}; \
         TRUNCATE baseline.ticket",
        r = bulkhead_model::names::quote_ident(&app.runtime.role)
    ))
    .await?;

    let mut contexts = Vec::new();
    let mut tenants = Vec::new();
    let mut ids = Vec::new();
    eprintln!("seeding {} tenants × {} rows", args.tenants, args.rows);
    for t in 0..args.tenants {
        let name = format!("tenant-{t}");
        let tenant = TenantId::parse(&name)?;
        plane.register_tenant(TenantPlacement {
            tenant: tenant.clone(),
            level: IsolationLevel::Row,
            database_password: None,
            suspended: false,
        });
        let ctx = plane.context(&tenant, Actor::default())?;
        // Seed through TenantDb, then copy the same rows (same ids) to the baseline table.
        let ctx_ref = &ctx;
        let n = args.rows;
        ctx_ref
            .db()
            .transaction(async |tx| {
                for i in 0..n {
                    tx.insert("ticket", &json!({"title": format!("t{i}"), "prio": i32::try_from(i % 5).unwrap_or(0)}))
                        .await?;
                }
                Ok(())
            })
            .await?;
        contexts.push(ctx);
        tenants.push(name);
    }
    su.batch_execute(
        "INSERT INTO baseline.ticket SELECT tenant_id, id, created_at, updated_at, title, prio, status FROM public.ticket;
         ANALYZE public.ticket; ANALYZE baseline.ticket;",
    )
    .await?;
    for name in &tenants {
        let rows = su
            .query(
                "SELECT id::text FROM baseline.ticket WHERE tenant_id = $1",
                &[name],
            )
            .await?;
        ids.push(rows.iter().map(|r| r.get::<_, String>(0)).collect());
    }
    let mut base_cfg = tokio_postgres::Config::new();
    base_cfg
        .host(&host)
        .port(port)
        .dbname(&app.database)
        .user(&app.runtime.role)
        .password(runtime_password.expose());
    let manager = Manager::from_config(
        base_cfg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let baseline = Pool::builder(manager)
        .max_size(16)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(5)))
        .build()?;
    Ok(Fixture {
        plane,
        admin,
        contexts,
        tenants,
        ids,
        baseline,
    })
}

/// The admin URL to use, starting a private ephemeral cluster (removed on exit) unless one
/// was given.
pub(crate) fn database(
    admin_url: Option<&str>,
) -> anyhow::Result<(String, Option<(Cluster, bulkhead_pgcluster::Reaper)>)> {
    if let Some(url) = admin_url {
        return Ok((url.to_owned(), None));
    }
    let dir = std::env::temp_dir().join(format!("bulkhead-bench-{}", std::process::id()));
    let (mut cluster, _) = Cluster::open_or_init(&dir, Durability::Ephemeral)?;
    let reaper = cluster.reap_on_exit(true)?;
    cluster.start()?;
    let url = cluster.superuser_url("postgres");
    Ok((url, Some((cluster, reaper))))
}

async fn scoping(args: ScopingArgs) -> anyhow::Result<()> {
    let (admin_url, _cluster_guard) = database(args.admin_url.as_deref())?;
    let fixture = Arc::new(setup(&admin_url, &args).await?);
    let duration = Duration::from_secs_f64(args.seconds);
    let mut results = Vec::new();
    let mut worst: Option<f64> = None;
    for &concurrency in &args.concurrency {
        for scenario in [Scenario::GetById, Scenario::List20, Scenario::Insert] {
            // Warm both sides (connections, prepared statements, caches).
            for side in [Side::Bulkhead, Side::Baseline, Side::HandScoped] {
                measure(
                    &fixture,
                    side,
                    scenario,
                    concurrency,
                    Duration::from_millis(300),
                )
                .await?;
            }
            let mut bh = Samples::default();
            let mut base = Samples::default();
            let mut hand = Samples::default();
            for round in 0..args.rounds {
                // Rotate which side goes first.
                let mut order = [Side::Bulkhead, Side::Baseline, Side::HandScoped];
                order.rotate_left(round % 3);
                for side in order {
                    let s = measure(&fixture, side, scenario, concurrency, duration).await?;
                    match side {
                        Side::Bulkhead => bh.merge(s),
                        Side::Baseline => base.merge(s),
                        Side::HandScoped => hand.merge(s),
                    }
                }
            }
            let ratio = bh.ops_per_sec() / base.ops_per_sec().max(1e-9);
            worst = Some(worst.map_or(ratio, |w: f64| w.min(ratio)));
            let line = json!({
                "scenario": scenario.name(),
                "concurrency": concurrency,
                "bulkhead": bh.summary(),
                "baseline": base.summary(),
                "hand_scoped": hand.summary(),
                "ratio": (ratio * 1000.0).round() / 1000.0,
            });
            eprintln!("{line}");
            results.push(line);
        }
    }
    let out = json!({
        "benchmark": "scoping",
        "tenants": args.tenants,
        "rows_per_tenant": args.rows,
        "seconds_per_round": args.seconds,
        "rounds": args.rounds,
        "scenarios": results,
        "ratio": worst.map(|w| (w * 1000.0).round() / 1000.0),
    });
    println!("{out}");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Scoping(args) => runtime.block_on(scoping(args)),
        Command::Rest(args) => runtime.block_on(rest::run(args)),
        Command::Served(args) => runtime.block_on(served::run(args)),
        Command::Functions(args) => runtime.block_on(functions::run(args)),
        Command::Search(args) => runtime.block_on(search::run(args)),
        Command::Tenants(args) => runtime.block_on(tenants::run(args)),
        Command::Realms(args) => runtime.block_on(realms::run(args)),
        Command::Silos(args) => runtime.block_on(silos::run(args)),
    }
}
