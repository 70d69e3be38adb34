//! `tenants`: declaring N tenants through the control plane, for each of `--counts`, in a fresh
//! app per count and side:
//! - `apply`: what `bulkhead apply -f tenants.yaml` does (one plan, provisioning `--parallel`
//!   at a time, registration and audit, one worker-configuration publication per app);
//! - `one_by_one`: what a loop of `bulkhead tenant create` does (each declaration provisions,
//!   registers and republishes the app's worker configuration);
//! - `provisioner`: the provisioner alone, one tenant after another — the same roles, schemas
//!   or databases and DDL with no registry, audit or vault: the floor;
//!
//! then a no-op `app migrate` over the `apply` app's tenants. Each side reports milliseconds per
//! tenant; `"scaling"` is the per-tenant cost at the largest count ÷ that at the smallest.
//! The worker configuration exists before the tenants are declared, as with a running server,
//! so publishing it is part of the cost. Realms are left out (`--realms` is not offered): a
//! local realm is two inserts per tenant.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use bulkhead_control::platform::{Platform, WorkerConfig};
use bulkhead_control::reconcile::{ApplyOptions, plan};
use bulkhead_control::registry;
use bulkhead_model::tenants::{IdentitySpec, TenantSpec};
use bulkhead_model::{AppManifest, IsolationLevel, TenantId};
use bulkhead_pg::Provisioner;
use bulkhead_vault_admin::embedded::{EmbeddedAdmin, MasterKey};
use serde_json::json;

#[derive(Debug, clap::Args)]
pub(crate) struct TenantsArgs {
    /// Admin (superuser) URL of a PostgreSQL server to use; default: a private ephemeral
    /// cluster in a temporary directory, removed afterwards.
    #[arg(long)]
    admin_url: Option<String>,
    /// Numbers of tenants to declare, each in fresh apps.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    counts: Vec<usize>,
    /// Isolation level of the declared tenants: row, schema or database.
    #[arg(long, default_value = "schema")]
    isolation: String,
    /// Tenants provisioned at a time by `apply`.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Leave out the `one_by_one` side (it grows with the square of the count).
    #[arg(long)]
    skip_one_by_one: bool,
}

fn manifest(app: &str) -> anyhow::Result<AppManifest> {
    let yaml = format!(
        "app: {app}\n{}",
        super::MANIFEST.trim_start_matches("app: bench\n")
    );
    Ok(AppManifest::from_yaml(&yaml, "bench.yaml")?)
}

fn specs(count: usize, level: IsolationLevel) -> anyhow::Result<Vec<TenantSpec>> {
    (0..count)
        .map(|i| {
            let id = format!("t{i:05}");
            Ok(TenantSpec {
                id: TenantId::parse(&id)?,
                namespace: id.clone(),
                isolation: level,
                identity: IdentitySpec::Local { realm: id },
                network: Default::default(),
                residency: None,
                dedicated_worker: false,
                line: i + 1,
            })
        })
        .collect()
}

/// A control plane over its own platform database and a fresh embedded vault.
async fn platform(
    admin: &tokio_postgres::Config,
    vault_dir: &std::path::Path,
) -> anyhow::Result<Platform> {
    let platform_db = format!("bench_platform_{}", std::process::id());
    let (client, conn) = admin.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = $1",
            &[&platform_db],
        )
        .await?
        .is_some();
    if !exists {
        client
            .batch_execute(&format!("CREATE DATABASE {platform_db}"))
            .await?;
    }
    let mut cfg = admin.clone();
    cfg.dbname(&platform_db);
    let (mut client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    bulkhead_control::migrate(&mut client).await?;
    Ok(Platform {
        client,
        provisioner: Provisioner::new(bulkhead_pg::PgConfig::new(
            admin.clone(),
            Default::default(),
        )?),
        vault: Arc::new(EmbeddedAdmin::open(vault_dir, MasterKey::generate())?),
        buckets: None,
        actor: "bench".into(),
    })
}

/// Registers the app and publishes its worker configuration, as a running server has.
async fn create_app(
    p: &mut Platform,
    admin: &tokio_postgres::Config,
    m: &AppManifest,
) -> anyhow::Result<()> {
    p.create_app(m, None).await?;
    p.publish_worker_config(WorkerConfig {
        db_tls: Default::default(),
        db_more_hosts: Vec::new(),
        db_read_write: false,
        db_host: "127.0.0.1".into(),
        db_port: admin.get_ports().first().copied().unwrap_or(5432),
        database: bulkhead_model::names::app_database(&m.app),
        runtime_role: bulkhead_model::names::runtime_role(&m.app),
        manifest: m.clone(),
        realm_base_url: "http://127.0.0.1:8080".into(),
        tenants: Vec::new(),
        domains: Vec::new(),
        base_domains: Vec::new(),
        files_root: None,
        bundle: None,
    })
    .await?;
    Ok(())
}

fn per_tenant(ms: f64, count: usize) -> f64 {
    (ms / count.max(1) as f64 * 100.0).round() / 100.0
}

pub(crate) async fn run(args: TenantsArgs) -> anyhow::Result<()> {
    let level: IsolationLevel = args
        .isolation
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    let (admin_url, _cluster_guard) = super::database(args.admin_url.as_deref())?;
    let admin = tokio_postgres::Config::from_str(&admin_url).context("admin URL")?;
    let vault_dir = tempfile::tempdir()?;
    let mut p = platform(&admin, vault_dir.path()).await?;
    let run_id = std::process::id() % 10_000;
    let mut results = Vec::new();
    let mut apply_cost = Vec::new();
    for &count in &args.counts {
        let specs = specs(count, level)?;
        // apply
        let m = manifest(&format!("a{run_id}n{count}"))?;
        create_app(&mut p, &admin, &m).await?;
        let started = Instant::now();
        let known = registry::tenants(&p.client, &m.app).await?;
        let steps = plan(&[(m.app.to_string(), known)], &specs, false);
        let options = ApplyOptions {
            quiesce: std::time::Duration::ZERO,
            realms: None,
            now: 0,
            parallel: args.parallel,
        };
        p.apply_plan(
            std::slice::from_ref(&m),
            &specs,
            &steps,
            &options,
            |_, _| {},
        )
        .await?;
        let apply_ms = started.elapsed().as_secs_f64() * 1e3;
        anyhow::ensure!(
            registry::tenants(&p.client, &m.app).await?.len() == count,
            "apply registered every tenant"
        );
        apply_cost.push(per_tenant(apply_ms, count));
        // A no-op migrate over them.
        let started = Instant::now();
        let migrated = p.migrate_all(&m, false, args.parallel, |_, _| {}).await?;
        let migrate_ms = started.elapsed().as_secs_f64() * 1e3;
        anyhow::ensure!(migrated.failed() == 0, "the no-op migrate failed");
        // one by one
        let one_by_one_ms = if args.skip_one_by_one {
            None
        } else {
            let m = manifest(&format!("o{run_id}n{count}"))?;
            create_app(&mut p, &admin, &m).await?;
            let started = Instant::now();
            for spec in &specs {
                p.declare_tenant(&m, spec).await?;
            }
            Some(started.elapsed().as_secs_f64() * 1e3)
        };
        // the provisioner alone
        let m = manifest(&format!("p{run_id}n{count}"))?;
        p.provisioner.ensure_app(&m).await?;
        let started = Instant::now();
        for spec in &specs {
            p.provisioner.ensure_tenant(&m, &spec.id, level).await?;
        }
        let provisioner_ms = started.elapsed().as_secs_f64() * 1e3;
        let line = json!({
            "tenants": count,
            "apply_ms_per_tenant": per_tenant(apply_ms, count),
            "one_by_one_ms_per_tenant": one_by_one_ms.map(|ms| per_tenant(ms, count)),
            "provisioner_ms_per_tenant": per_tenant(provisioner_ms, count),
            "noop_migrate_ms_per_tenant": per_tenant(migrate_ms, count),
            "apply_vs_provisioner": ((apply_ms / provisioner_ms.max(1e-9)) * 1000.0).round() / 1000.0,
        });
        eprintln!("{line}");
        results.push(line);
    }
    let scaling = match (apply_cost.first(), apply_cost.last()) {
        (Some(first), Some(last)) if *first > 0.0 => Some((last / first * 1000.0).round() / 1000.0),
        _ => None,
    };
    println!(
        "{}",
        json!({
            "benchmark": "tenants",
            "isolation": level.as_str(),
            "parallel": args.parallel,
            "counts": results,
            "scaling": scaling,
        })
    );
    Ok(())
}
