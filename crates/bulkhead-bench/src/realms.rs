//! `realms`: local realms at scale. The realm store grows to each of `--counts` realms (created
//! `--parallel` at a time, each with its sealed Ed25519 key); at each size, a user in each of
//! `--sample` realms spread over all of them, and then:
//! - `login`: the password grant (Argon2id verification, token signing), p50/p99;
//! - `verify`: a fresh access token of a random sampled realm verified (its signature checked:
//!   no cached result), p50/p99;
//! - `verify_cold`: the same on a new store whose key caches are empty (each realm's keys read
//!   from the database and unsealed first), p50/p99.
//!
//! `"ratio"` per measure is p50 at the largest count ÷ p50 at the smallest: what a realm costs
//! its neighbours.

use std::str::FromStr;
use std::time::Instant;

use anyhow::Context;
use bulkhead_identity::store::{RealmSettings, RealmStore};
use bulkhead_model::TenantId;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::StreamExt;
use serde_json::json;
use tokio_postgres::NoTls;

#[derive(Debug, clap::Args)]
pub(crate) struct RealmsArgs {
    /// Admin (superuser) URL of a PostgreSQL server to use; default: a private ephemeral
    /// cluster in a temporary directory, removed afterwards.
    #[arg(long)]
    admin_url: Option<String>,
    /// Realm counts to measure at, ascending (the store grows from one to the next).
    #[arg(long, value_delimiter = ',', default_value = "10,10000")]
    counts: Vec<usize>,
    /// Realms with a user, spread over all of them, that logins and tokens come from.
    #[arg(long, default_value_t = 10)]
    sample: usize,
    /// Logins and verifications measured per count.
    #[arg(long, default_value_t = 200)]
    operations: usize,
    /// Realms created at a time.
    #[arg(long, default_value_t = 8)]
    parallel: usize,
}

const AUDIENCE: &str = "bench";
const PASSWORD: &str = "bench-password";

fn tenant(i: usize) -> anyhow::Result<TenantId> {
    Ok(TenantId::parse(&format!("r{i:06}"))?)
}

fn store(pool: &Pool, master: [u8; 32]) -> RealmStore {
    RealmStore::new(pool.clone(), master, RealmSettings::default())
}

fn percentiles(mut us: Vec<u64>) -> serde_json::Value {
    us.sort_unstable();
    let at = |p: f64| {
        us.get(((us.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    json!({ "p50_us": at(0.5), "p99_us": at(0.99), "n": us.len() })
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// Verifies a fresh token of a sampled realm `ops` times; microseconds per verification.
async fn verify_times(
    store: &RealmStore,
    sampled: &[TenantId],
    ops: usize,
) -> anyhow::Result<Vec<u64>> {
    let mut out = Vec::with_capacity(ops);
    for i in 0..ops {
        let t = &sampled[(i * 7) % sampled.len()];
        let token = store.sign_probe(t, AUDIENCE, now()).await.map_err(err)?;
        let started = Instant::now();
        store
            .verify(t, &token, AUDIENCE, now())
            .await
            .map_err(err)?;
        out.push(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
    }
    Ok(out)
}

pub(crate) async fn run(args: RealmsArgs) -> anyhow::Result<()> {
    let (admin_url, _cluster_guard) = super::database(args.admin_url.as_deref())?;
    let mut admin = tokio_postgres::Config::from_str(&admin_url).context("admin URL")?;
    let db = format!("bench_realms_{}", std::process::id());
    let (su, conn) = admin.connect(NoTls).await?;
    tokio::spawn(conn);
    su.batch_execute(&format!("CREATE DATABASE {db}")).await?;
    admin.dbname(&db);
    let manager = Manager::from_config(
        admin,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(args.parallel.max(1))
        .build()?;
    let master: [u8; 32] = rand::random();
    let realms = store(&pool, master);
    realms.migrate().await.map_err(err)?;
    let mut created = 0;
    let mut results = Vec::new();
    let mut first: Option<[u64; 3]> = None;
    let mut last = [0u64; 3];
    for &count in &args.counts {
        let started = Instant::now();
        let fresh = created..count.max(created);
        let n_fresh = fresh.len();
        let realms_ref = &realms;
        let made: Vec<anyhow::Result<()>> = futures_util::stream::iter(fresh)
            .map(|i| async move {
                realms_ref
                    .create_realm(&tenant(i)?, now())
                    .await
                    .map_err(err)
            })
            .buffer_unordered(args.parallel.max(1))
            .collect()
            .await;
        made.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
        let create_ms = started.elapsed().as_secs_f64() * 1e3;
        created = created.max(count);
        // Users in realms spread over all of them.
        let step = (created / args.sample.max(1)).max(1);
        let sampled: Vec<TenantId> = (0..created)
            .step_by(step)
            .take(args.sample.max(1))
            .map(tenant)
            .collect::<anyhow::Result<_>>()?;
        for t in &sampled {
            match realms.create_user(t, "bench", PASSWORD, &["agent"]).await {
                Ok(_) | Err(bulkhead_identity::store::StoreError::UserExists(_)) => {}
                Err(e) => return Err(err(e)),
            }
        }
        let mut logins = Vec::with_capacity(args.operations);
        for i in 0..args.operations {
            let t = &sampled[(i * 7) % sampled.len()];
            let started = Instant::now();
            realms
                .login(t, "bench", PASSWORD, AUDIENCE, now(), None)
                .await
                .map_err(err)?;
            logins.push(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
        }
        // Warm: each sampled realm's keys cached once, as on a running server.
        verify_times(&realms, &sampled, sampled.len()).await?;
        let verify = verify_times(&realms, &sampled, args.operations).await?;
        // A new store: every realm's keys read and unsealed again on first use.
        let cold_store = store(&pool, master);
        let mut cold = Vec::new();
        for t in &sampled {
            let token = realms.sign_probe(t, AUDIENCE, now()).await.map_err(err)?;
            let started = Instant::now();
            cold_store
                .verify(t, &token, AUDIENCE, now())
                .await
                .map_err(err)?;
            cold.push(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
        }
        let (logins, verify, cold) = (percentiles(logins), percentiles(verify), percentiles(cold));
        let p50 = |v: &serde_json::Value| v["p50_us"].as_u64().unwrap_or(0);
        last = [p50(&logins), p50(&verify), p50(&cold)];
        first.get_or_insert(last);
        let line = json!({
            "realms": created,
            "created": n_fresh,
            "create_ms_per_realm": if n_fresh == 0 { 0.0 } else { (create_ms / n_fresh as f64 * 100.0).round() / 100.0 },
            "login": logins,
            "verify": verify,
            "verify_cold": cold,
        });
        eprintln!("{line}");
        results.push(line);
    }
    let ratio = |i: usize| {
        first
            .filter(|f| f[i] > 0)
            .map(|f| (last[i] as f64 / f[i] as f64 * 1000.0).round() / 1000.0)
    };
    println!(
        "{}",
        json!({
            "benchmark": "realms",
            "counts": results,
            "ratio": { "login": ratio(0), "verify": ratio(1), "verify_cold": ratio(2) },
        })
    );
    su.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await
        .ok();
    Ok(())
}
