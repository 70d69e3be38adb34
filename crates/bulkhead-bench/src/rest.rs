//! `rest`: the full HTTP stack against a hand-written axum + tokio-postgres handler.
//!
//! Bulkhead side: tenant resolution (`X-Tenant`), bearer-token verification by the tenant's
//! realm, permissions and TenantDb, JSON records. Baseline: an axum handler that takes the
//! tenant from the same header and runs `WHERE tenant_id = $1` on the plain baseline table
//! with a prepared statement, returning the rows as JSON. Both served on 127.0.0.1 by this
//! process, driven by the same HTTP client with keep-alive, alternating rounds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use bulkhead_identity::store::{RealmSettings, RealmStore};
use bulkhead_model::TenantId;
use bulkhead_runtime::auth::LocalRealms;
use bulkhead_runtime::rest::{Api, PlaneDirectory};
use bulkhead_runtime::{Mode, ResolverConfig, Strategy, TenantLayer};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde_json::{Value, json};
use tokio_postgres::NoTls;

use crate::{Fixture, Samples, ScopingArgs};

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Scenario {
    GetById,
    List20,
    /// `GET {base}/empty` (the functions benchmark's empty function).
    Empty,
}

impl Scenario {
    /// The URL under `base` for call `i` of concurrent client `worker`, over the tenant's `ids`.
    pub(crate) fn url(self, base: &str, ids: &[String], worker: usize, i: usize) -> String {
        match self {
            Scenario::GetById => format!(
                "{base}/ticket/{}",
                ids[(i * 7919 + worker * 104_729) % ids.len()]
            ),
            Scenario::List20 => format!("{base}/ticket?limit=20"),
            Scenario::Empty => format!("{base}/empty"),
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Scenario::GetById => "get_by_id",
            Scenario::List20 => "list_20",
            Scenario::Empty => "empty",
        }
    }
}

const GET: &str = "SELECT id::text, created_at, updated_at, title, prio, status \
     FROM baseline.ticket WHERE tenant_id = $1 AND id = $2::text::uuid";
const LIST: &str = "SELECT id::text, created_at, updated_at, title, prio, status \
     FROM baseline.ticket WHERE tenant_id = $1 ORDER BY ticket.created_at, ticket.id LIMIT 20";

fn row_json(row: &tokio_postgres::Row) -> Value {
    let ts = |i: usize| bulkhead_pg::sql::rfc3339(row.get::<_, std::time::SystemTime>(i));
    json!({
        "id": row.get::<_, String>(0),
        "created_at": ts(1),
        "updated_at": ts(2),
        "title": row.get::<_, String>(3),
        "prio": row.get::<_, i32>(4),
        "status": row.get::<_, Option<String>>(5),
    })
}

fn tenant_of(headers: &HeaderMap) -> Result<String, StatusCode> {
    headers
        .get("x-tenant")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or(StatusCode::NOT_FOUND)
}

/// The hand-written side: a get by id and a list of 20, each one prepared statement (cached
/// per connection) taking the tenant from `X-Tenant`, rows written by `record`.
pub(crate) struct Baseline {
    pub(crate) pool: Pool,
    /// `$1` the tenant, `$2` the id.
    pub(crate) get: &'static str,
    /// `$1` the tenant.
    pub(crate) list: &'static str,
    pub(crate) record: fn(&tokio_postgres::Row) -> Value,
}

impl Baseline {
    /// `GET /ticket/{id}` and `GET /ticket`.
    pub(crate) fn router(self) -> Router {
        Router::new()
            .route("/ticket", get(base_list))
            .route("/ticket/{id}", get(base_get))
            .with_state(Arc::new(self))
    }

    async fn prepared(
        &self,
        sql: &str,
    ) -> Result<(deadpool_postgres::Object, tokio_postgres::Statement), StatusCode> {
        let client = self
            .pool
            .get()
            .await
            .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
        let stmt = client
            .prepare_cached(sql)
            .await
            .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
        Ok((client, stmt))
    }
}

async fn base_get(
    State(base): State<Arc<Baseline>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, StatusCode> {
    let tenant = tenant_of(&headers)?;
    let (client, stmt) = base.prepared(base.get).await?;
    let row = client
        .query_opt(&stmt, &[&tenant, &id])
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?
        .ok_or(StatusCode::NOT_FOUND)?;
    Ok(axum::Json((base.record)(&row)))
}

async fn base_list(
    State(base): State<Arc<Baseline>>,
    headers: HeaderMap,
) -> Result<axum::Json<Value>, StatusCode> {
    let tenant = tenant_of(&headers)?;
    let (client, stmt) = base.prepared(base.list).await?;
    let rows = client
        .query(&stmt, &[&tenant])
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok(axum::Json(
        json!({"records": rows.iter().map(base.record).collect::<Vec<_>>()}),
    ))
}

pub(crate) async fn serve(router: Router) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await;
    });
    Ok(addr)
}

pub(crate) struct Target {
    pub(crate) base: String,
    pub(crate) tokens: Vec<Option<String>>,
}

pub(crate) async fn measure(
    client: &reqwest::Client,
    target: &Arc<Target>,
    fixture: &Arc<Fixture>,
    scenario: Scenario,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Samples> {
    let (client, target, fixture) = (client.clone(), target.clone(), fixture.clone());
    crate::drive(concurrency, duration, move |worker, i| {
        let t = (worker + i) % fixture.tenants.len();
        let url = scenario.url(&target.base, &fixture.ids[t], worker, i);
        let mut req = client.get(&url).header("x-tenant", &fixture.tenants[t]);
        if let Some(tok) = &target.tokens[t] {
            req = req.bearer_auth(tok);
        }
        fetch(url, req)
    })
    .await
}

/// Sends `req` and reads its whole body; a status other than success is an error.
pub(crate) async fn fetch(url: String, req: reqwest::RequestBuilder) -> anyhow::Result<()> {
    let resp = req.send().await?;
    let status = resp.status();
    let body = resp.bytes().await?;
    anyhow::ensure!(status.is_success(), "{url}: {status} {body:?}");
    Ok(())
}

/// What both HTTP benchmarks serve from: the fixture, each tenant's token from its realm, and
/// the runtime's `Api` over them (the caller adds what it measures).
pub(crate) struct Stack {
    pub(crate) fixture: Arc<Fixture>,
    pub(crate) tokens: Vec<Option<String>>,
    pub(crate) api: Api,
    pub(crate) _cluster: Option<(bulkhead_pgcluster::Cluster, bulkhead_pgcluster::Reaper)>,
}

pub(crate) async fn stack(args: &ScopingArgs) -> anyhow::Result<Stack> {
    let (admin_url, cluster_guard) = crate::database(args.admin_url.as_deref())?;
    let fixture = Arc::new(crate::setup(&admin_url, args).await?);
    // Realms live in the platform database.
    let (su, conn) = fixture.admin.connect(NoTls).await?;
    tokio::spawn(conn);
    if su
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = 'bench_platform'",
            &[],
        )
        .await?
        .is_none()
    {
        su.batch_execute("CREATE DATABASE bench_platform").await?;
    }
    let mut platform = fixture.admin.clone();
    platform.dbname("bench_platform");
    let manager = Manager::from_config(
        platform,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let realms = RealmStore::new(
        Pool::builder(manager).max_size(8).build()?,
        rand::random(),
        RealmSettings::default(),
    );
    realms.migrate().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let audience = fixture.plane.manifest().app.to_string();
    let mut tokens = Vec::new();
    for t in &fixture.tenants {
        let tenant = TenantId::parse(t)?;
        realms
            .create_realm(&tenant, now)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let _ = realms
            .create_user(&tenant, "bench", "bench-password", &["agent"])
            .await;
        let tok = realms
            .login(&tenant, "bench", "bench-password", &audience, now, None)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        tokens.push(Some(tok.access_token));
    }

    let api = Api::new(
        fixture.plane.clone(),
        Arc::new(LocalRealms {
            store: realms,
            audience,
        }),
    );
    Ok(Stack {
        fixture,
        tokens,
        api,
        _cluster: cluster_guard,
    })
}

/// The runtime's routes behind tenant resolution by `X-Tenant`.
pub(crate) fn app(api: Arc<Api>, fixture: &Fixture) -> Router {
    let layer = TenantLayer::new(
        ResolverConfig {
            strategies: vec![Strategy::Header("x-tenant".into())],
            domains: vec!["127.0.0.1".into()],
            base_domains: Vec::new(),
            custom_domains: HashMap::new(),
            trusted_proxies: Vec::new(),
        },
        Arc::new(PlaneDirectory(fixture.plane.clone())),
        Mode::Chain,
    );
    Router::new().fallback_service(tower::Layer::layer(
        &layer,
        bulkhead_runtime::rest::router(api),
    ))
}

pub(crate) async fn run(args: ScopingArgs) -> anyhow::Result<()> {
    let Stack {
        fixture,
        tokens,
        api,
        _cluster,
    } = stack(&args).await?;
    let bulkhead_app = app(Arc::new(api), &fixture);
    let bh_addr = serve(bulkhead_app).await?;
    let base_app = Baseline {
        pool: fixture.baseline.clone(),
        get: GET,
        list: LIST,
        record: row_json,
    }
    .router();
    let base_addr = serve(base_app).await?;
    let bulkhead = Arc::new(Target {
        base: format!("http://{bh_addr}/api"),
        tokens,
    });
    let baseline = Arc::new(Target {
        base: format!("http://{base_addr}"),
        tokens: vec![None; fixture.tenants.len()],
    });
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .context("http client")?;

    let duration = Duration::from_secs_f64(args.seconds);
    let mut report = crate::Report::default();
    for &concurrency in &args.concurrency {
        for scenario in [Scenario::GetById, Scenario::List20] {
            let targets = [&bulkhead, &baseline];
            let mut sides = crate::side_by_side(2, args.rounds, duration, |side, duration| {
                measure(
                    &client,
                    targets[side],
                    &fixture,
                    scenario,
                    concurrency,
                    duration,
                )
            })
            .await?;
            let (base, bh) = (sides.remove(1), sides.remove(0));
            report.add(
                scenario.name(),
                concurrency,
                "bulkhead",
                bh,
                base,
                serde_json::Map::new(),
            );
        }
    }
    println!(
        "{}",
        json!({
            "benchmark": "rest",
            "tenants": args.tenants,
            "rows_per_tenant": args.rows,
            "seconds_per_round": args.seconds,
            "rounds": args.rounds,
            "ratio": report.ratio(),
            "scenarios": report.scenarios,
        })
    );
    Ok(())
}
