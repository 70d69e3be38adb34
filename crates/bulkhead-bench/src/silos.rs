//! `silos`: many `database` tenants served under a connection budget. `--tenants` tenants each
//! get their own database and login role (provisioned `--parallel` at a time) and one row; then
//! `TenantDb::get` by id at `--concurrency`, the tenants taken round-robin so that every
//! request needs a tenant other than the last `concurrency`, with at most `--budget`
//! connections for tenant pools of `--pool-size` each. Side by side in one run, `hot`: the same
//! requests over only as many tenants as the budget holds pools for (no pool ever closed).
//!
//! Reported per side: ops/s, p50/p99, the most tenant connections PostgreSQL had open at once
//! (sampled from `pg_stat_activity` every 50 ms), and pools opened and evicted.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bulkhead_model::{AppManifest, IsolationLevel, TenantId};
use bulkhead_pg::{Actor, DataPlane, PoolSettings, TenantPlacement};
use futures_util::StreamExt;
use serde_json::json;

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SilosArgs {
    /// Admin (superuser) URL of a PostgreSQL server to use; default: a private ephemeral
    /// cluster in a temporary directory, removed afterwards.
    #[arg(long)]
    admin_url: Option<String>,
    /// `database` tenants to provision and serve.
    #[arg(long, default_value_t = 1000)]
    tenants: usize,
    /// Connections all tenant pools together may hold.
    #[arg(long, default_value_t = 96)]
    budget: usize,
    /// Connections in each tenant's pool.
    #[arg(long, default_value_t = 4)]
    pool_size: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds measured per side.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Tenants provisioned at a time.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

struct Served {
    plane: DataPlane,
    tenants: Vec<(TenantId, String)>,
}

/// Get by id over `tenants[..n]`, round-robin, for `seconds`; the samples and the most tenant
/// connections seen open.
async fn measure(
    served: &Arc<Served>,
    admin: &tokio_postgres::Client,
    role_prefix: &str,
    n: usize,
    args: &SilosArgs,
) -> anyhow::Result<serde_json::Value> {
    let opened_before = served.plane.tenant_pools_opened();
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicI64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (served, next) = (served.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let (t, id) = &served.tenants[next.fetch_add(1, Ordering::Relaxed) % n];
                let started = Instant::now();
                let ctx = served.plane.context(
                    t,
                    Actor {
                        user_id: Some("bench".into()),
                        request_id: None,
                        roles: vec!["agent".into()],
                    },
                )?;
                ctx.db().get("ticket", id).await?;
                lat.push(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
            }
            anyhow::Ok(lat)
        }));
    }
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        let pattern = format!("{role_prefix}%");
        async move {
            while !stop.load(Ordering::Relaxed) {
                let open: i64 = admin
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE usename LIKE $1",
                        &[&pattern],
                    )
                    .await?
                    .get(0);
                peak.fetch_max(open, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            anyhow::Ok(())
        }
    };
    let started = Instant::now();
    let work = async {
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await??);
        }
        stop.store(true, Ordering::Relaxed);
        anyhow::Ok(all)
    };
    let (lat, sampled) = tokio::join!(work, sampler);
    sampled?;
    let mut lat = lat?;
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    let at = |p: f64| lat[((lat.len().max(1) - 1) as f64 * p).round() as usize];
    let opened = served.plane.tenant_pools_opened() - opened_before;
    Ok(json!({
        "tenants": n,
        "ops_per_sec": (lat.len() as f64 / elapsed).round(),
        "p50_us": at(0.5),
        "p99_us": at(0.99),
        "peak_tenant_connections": peak.load(Ordering::Relaxed),
        "pools_opened": opened,
        "pools_open_after": served.plane.tenant_pools(),
    }))
}

pub(crate) async fn run(args: SilosArgs) -> anyhow::Result<()> {
    let (admin_url, _cluster_guard) = super::database(args.admin_url.as_deref())?;
    let admin = tokio_postgres::Config::from_str(&admin_url).context("admin URL")?;
    let app = format!("silo{}", std::process::id() % 100_000);
    let yaml = format!(
        "app: {app}\n{}",
        super::MANIFEST.trim_start_matches("app: bench\n")
    );
    let manifest = AppManifest::from_yaml(&yaml, "bench.yaml")?;
    let pools = PoolSettings {
        tenant_pool_size: args.pool_size.max(1),
        tenant_budget: args.budget,
        ..PoolSettings::default()
    };
    let bench = super::provision(&admin, &manifest, pools).await?;
    let started = Instant::now();
    let prov = &bench.prov;
    let m = &manifest;
    let provisioned: Vec<anyhow::Result<(TenantId, Option<bulkhead_pg::Secret>)>> =
        futures_util::stream::iter(0..args.tenants)
            .map(|i| async move {
                let t = TenantId::parse(&format!("s{i:05}"))?;
                let done = prov.ensure_tenant(m, &t, IsolationLevel::Database).await?;
                anyhow::Ok((t, done.database.and_then(|(_, cred)| cred.password)))
            })
            .buffer_unordered(args.parallel.max(1))
            .collect()
            .await;
    let provision_s = started.elapsed().as_secs_f64();
    let mut tenants = Vec::new();
    for p in provisioned {
        let (t, password) = p?;
        let password = match password {
            Some(p) => p,
            None => {
                prov.rotate_password(&bulkhead_model::names::tenant_role(&m.app, &t))
                    .await?
            }
        };
        bench.plane.register_tenant(TenantPlacement {
            tenant: t.clone(),
            level: IsolationLevel::Database,
            database_password: Some(password),
            suspended: false,
        });
        let ctx = bench.plane.context(
            &t,
            Actor {
                user_id: Some("bench".into()),
                request_id: None,
                roles: vec!["agent".into()],
            },
        )?;
        let row = ctx
            .db()
            .insert("ticket", &json!({"title": "silo", "prio": 1}))
            .await
            .map_err(err)?;
        let id = row["id"].as_str().context("an id")?.to_owned();
        tenants.push((t, id));
    }
    let served = Arc::new(Served {
        plane: bench.plane.clone(),
        tenants,
    });
    let (su, conn) = admin.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let prefix = format!("bh_{app}_t_");
    let fit = (args.budget / args.pool_size.max(1)).clamp(1, args.tenants);
    // Warm the hot side's pools, then hot and round-robin over all.
    let warm = SilosArgs {
        seconds: 0.5,
        ..args.clone()
    };
    measure(&served, &su, &prefix, fit, &warm).await?;
    let hot = measure(&served, &su, &prefix, fit, &args).await?;
    let all = measure(&served, &su, &prefix, args.tenants, &args).await?;
    eprintln!("{hot}\n{all}");
    let p50 = |v: &serde_json::Value| v["p50_us"].as_f64().unwrap_or(0.0);
    println!(
        "{}",
        json!({
            "benchmark": "silos",
            "tenants": args.tenants,
            "budget": args.budget,
            "pool_size": args.pool_size,
            "concurrency": args.concurrency,
            "provision_s_per_tenant": (provision_s / args.tenants.max(1) as f64 * 1000.0).round() / 1000.0,
            "hot": hot,
            "round_robin": all,
            "p50_round_robin_vs_hot": ((p50(&all) / p50(&hot).max(1.0)) * 100.0).round() / 100.0,
        })
    );
    Ok(())
}
