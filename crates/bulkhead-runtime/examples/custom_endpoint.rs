//! Mounting Bulkhead's layers in your own axum app: a custom endpoint that receives the
//! request's `AppContext` (resolved tenant, verified token) through the `Tenant` extractor —
//! the only way in — and uses its tenant-bound handles (`db()`, `flags()`, `http()`).
//!
//! Run against a provisioned app (see `bulkhead up`), or read it as a template:
//!
//! ```text
//! cargo run -p bulkhead-runtime --example custom_endpoint
//! ```

use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use bulkhead_pg::{Direction, Filter};
use bulkhead_runtime::error::ApiError;
use bulkhead_runtime::rest::{Api, Tenant};
use bulkhead_runtime::{ResolverConfig, Strategy};
use serde_json::{Value, json};

/// `GET /stats`: open tickets by priority, for the caller's tenant only.
async fn stats(Tenant(ctx, who): Tenant) -> Result<Json<Value>, ApiError> {
    let db = ctx.db();
    let mut by_prio = serde_json::Map::new();
    for prio in 1..=5 {
        let n = db
            .query("ticket")
            .filter(Filter::eq("status", "open"))
            .filter(Filter::eq("prio", prio))
            .count()
            .await?;
        by_prio.insert(prio.to_string(), json!(n));
    }
    let newest = db
        .query("ticket")
        .order_by("created_at", Direction::Desc)
        .limit(1)
        .fetch()
        .await?;
    Ok(Json(json!({
        "tenant": ctx.tenant().as_str(),
        "user": who.subject,
        "open_by_prio": by_prio,
        "newest": newest.records.first(),
        "new_editor": ctx.flags().enabled("new_editor"),
    })))
}

/// Your routes next to the generated REST API, all behind tenant resolution.
pub fn app(api: Arc<Api>, resolution: ResolverConfig) -> Router {
    bulkhead_runtime::app(api, resolution, Router::new().route("/stats", get(stats)))
}

fn main() {
    // Building an `Api` needs a provisioned app (a `DataPlane`) and an `Authenticator`;
    // `bulkhead up` does exactly that in crates/bulkhead-cli/src/demo.rs.
    let resolution = ResolverConfig {
        strategies: vec![Strategy::PathPrefix, Strategy::Header("x-tenant".into())],
        domains: vec!["127.0.0.1".into(), "localhost".into()],
        ..ResolverConfig::default()
    };
    println!("resolution: {resolution:?}");
    println!("see `app()` in this file for how the routes are mounted");
}
