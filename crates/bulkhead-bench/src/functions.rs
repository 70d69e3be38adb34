//! `functions`: a mini-app function doing one `db.get` against the generated REST `GET` of
//! the same row, and an empty function, through the same HTTP stack (tenant resolution by
//! `X-Tenant`, bearer tokens from each tenant's realm, permissions, TenantDb) and the
//! worker's sandbox (a QuickJS context per invocation). Alternating rounds, side by side in
//! one run; the last line is one JSON object whose `ratio` is function get ÷ REST get.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bulkhead_model::bundle::Bundle;
use bulkhead_model::manifest::{FunctionLimits, FunctionRef, Functions, Route};
use bulkhead_runtime::functions_store::{Deployed, Deployments};
use serde_json::json;

use crate::rest::{Scenario, Stack, Target, app, measure, serve, stack};
use crate::{Samples, ScopingArgs};

const MODULE: &str = r#"
import { db } from "bulkhead";
export async function get(req) { return await db.get("ticket", req.params.id); }
export function empty() { return null; }
"#;

fn bundle() -> anyhow::Result<(Bundle, Functions)> {
    let mut files = BTreeMap::new();
    files.insert("manifest.yaml".to_owned(), b"app: bench\n".to_vec());
    files.insert("functions/bench.js".to_owned(), MODULE.as_bytes().to_vec());
    let route = |path: &str, export: &str| -> anyhow::Result<Route> {
        Ok(Route {
            method: "GET".into(),
            path: path.into(),
            function: FunctionRef::parse(&format!("bench.{export}"))
                .map_err(|e| anyhow::anyhow!(e))?,
            roles: vec![],
            anonymous: false,
            run_as: None,
            body: vec![],
            response: None,
        })
    };
    let functions = Functions {
        limits: FunctionLimits::default(),
        routes: vec![route("/ticket/{id}", "get")?, route("/empty", "empty")?],
        ..Functions::default()
    };
    Ok((Bundle::new(files)?, functions))
}

pub(crate) async fn run(args: ScopingArgs) -> anyhow::Result<()> {
    let Stack {
        fixture,
        tokens,
        api,
        _cluster,
    } = stack(&args).await?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let deployments = Arc::new(Deployments::new(bulkhead_sandbox::Engine::new(
        (threads * 2).max(4),
    )?));
    let (bundle, functions) = bundle()?;
    let engine_only = engine_empty(&deployments, &bundle, &functions).await?;
    let fresh_context_us = bulkhead_sandbox::fresh_context_cost(5000)
        .map(|d| (d.as_secs_f64() * 1e7).round() / 10.0)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    deployments.activate(Deployed::new(1, bundle, functions));
    let api = Arc::new(api.with_deployments(deployments));
    let addr = serve(app(api, &fixture)).await?;
    let rest = Arc::new(Target {
        base: format!("http://{addr}/api"),
        tokens: tokens.clone(),
    });
    let func = Arc::new(Target {
        base: format!("http://{addr}/fn"),
        tokens,
    });
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let duration = Duration::from_secs_f64(args.seconds);
    let mut results = Vec::new();
    let mut get_ratio = None;
    let mut empty_p50 = None;
    for &concurrency in &args.concurrency {
        // Warm both sides.
        for (t, s) in [
            (&rest, Scenario::GetById),
            (&func, Scenario::GetById),
            (&func, Scenario::Empty),
        ] {
            measure(
                &client,
                t,
                &fixture,
                s,
                concurrency,
                Duration::from_millis(300),
            )
            .await?;
        }
        let (mut r, mut f, mut e) = (Samples::default(), Samples::default(), Samples::default());
        for round in 0..args.rounds {
            let mut order = [0, 1, 2];
            order.rotate_left(round % 3);
            for which in order {
                match which {
                    0 => r.merge(
                        measure(
                            &client,
                            &rest,
                            &fixture,
                            Scenario::GetById,
                            concurrency,
                            duration,
                        )
                        .await?,
                    ),
                    1 => f.merge(
                        measure(
                            &client,
                            &func,
                            &fixture,
                            Scenario::GetById,
                            concurrency,
                            duration,
                        )
                        .await?,
                    ),
                    _ => e.merge(
                        measure(
                            &client,
                            &func,
                            &fixture,
                            Scenario::Empty,
                            concurrency,
                            duration,
                        )
                        .await?,
                    ),
                }
            }
        }
        let ratio = f.ops_per_sec() / r.ops_per_sec().max(1e-9);
        let empty = e.summary();
        if concurrency == 1 {
            empty_p50 = empty.get("p50_us").cloned();
        }
        get_ratio = Some(get_ratio.map_or(ratio, |w: f64| w.min(ratio)));
        let line = json!({
            "concurrency": concurrency,
            "rest_get": r.summary(),
            "function_get": f.summary(),
            "function_empty": empty,
            "ratio": (ratio * 1000.0).round() / 1000.0,
        });
        eprintln!("{line}");
        results.push(line);
    }
    println!(
        "{}",
        json!({
            "benchmark": "functions",
            "tenants": args.tenants,
            "rows_per_tenant": args.rows,
            "seconds_per_round": args.seconds,
            "rounds": args.rounds,
            "scenarios": results,
            "empty_p50_us_at_concurrency_1": empty_p50,
            "engine_empty": engine_only,
            // A fresh context alone (created, dropped, collected), sequentially on an idle
            // runtime: the floor under every invocation, whatever the rest of the path costs.
            "fresh_context_us": fresh_context_us,
            "ratio": get_ratio.map(|w| (w * 1000.0).round() / 1000.0),
        })
    );
    Ok(())
}

/// A host that is never called (the empty function makes no platform call).
struct NoHost;

impl bulkhead_sandbox::Host for NoHost {
    fn call(
        &mut self,
        op: &str,
        _args: serde_json::Value,
        _deadline: std::time::Instant,
    ) -> Result<serde_json::Value, bulkhead_sandbox::HostError> {
        Err(bulkhead_sandbox::HostError::new(
            bulkhead_model::ErrorCode::BadRequest,
            format!("unexpected {op}"),
        ))
    }
}

/// The empty function invoked on the engine directly, one at a time: what an invocation
/// costs (fresh context, prelude, module import, call) without HTTP, tokens or the database.
async fn engine_empty(
    deployments: &Deployments,
    bundle: &Bundle,
    functions: &Functions,
) -> anyhow::Result<serde_json::Value> {
    let program = Arc::new(bulkhead_sandbox::Program::new(bundle, functions.limits));
    let function = FunctionRef::parse("bench.empty").map_err(|e| anyhow::anyhow!(e))?;
    let mut samples = Samples::default();
    let start = std::time::Instant::now();
    for _ in 0..5000 {
        let t0 = std::time::Instant::now();
        deployments
            .engine()
            .invoke(
                program.clone(),
                bulkhead_sandbox::Invocation {
                    function: function.clone(),
                    request: json!({"method": "GET", "path": "/empty", "params": {}, "query": {}, "body": null}),
                    caller: bulkhead_sandbox::Caller::default(),
                },
                Box::new(NoHost),
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        samples
            .latencies_us
            .push(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX));
        samples.ops += 1;
    }
    samples.elapsed = start.elapsed();
    Ok(samples.summary())
}
