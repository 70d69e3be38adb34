//! App code's own handler, mounted with `bulkhead_runtime::app`, receives tenant-bound handles:
//! its outbound HTTP uses the resolved tenant's allow-list and its flags the resolved tenant's
//! overrides — whichever tenant the request names, app code cannot pick another.

use std::sync::Arc;

use axum::extract::RawQuery;
use bulkhead_egress::AllowList;
use bulkhead_model::TenantId;
use bulkhead_runtime::options::LiveOptions;
use bulkhead_runtime::rest::{Api, Tenant};
use serde_json::{Value, json};

use crate::rest::{ACME, stack_with_routes};

const BETA: &str = "beta.apps.example.com";

/// App code: fetches `?url` with the request's own `ctx.http()` and reports a flag.
async fn probe(Tenant(ctx, _): Tenant, RawQuery(url): RawQuery) -> axum::Json<Value> {
    let fetched = match ctx.http().get(&url.unwrap_or_default()).await {
        Ok(r) => json!(String::from_utf8_lossy(&r.body)),
        Err(e) => json!(format!("denied: {e}")),
    };
    axum::Json(json!({
        "tenant": ctx.tenant().as_str(),
        "fetched": fetched,
        "new_editor": ctx.flags().enabled("new_editor"),
    }))
}

#[tokio::test]
async fn app_code_handles_are_bound_to_the_resolved_tenant() {
    let partner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = partner.local_addr().unwrap().port();
    tokio::spawn(async move {
        let routes = axum::Router::new().route("/", axum::routing::get(|| async { "partner" }));
        axum::serve(partner, routes).await.unwrap();
    });
    let custom = axum::Router::<Arc<Api>>::new().route("/probe", axum::routing::get(probe));
    let s = stack_with_routes(crate::rest::MANIFEST, custom).await;
    let acme = TenantId::parse("acme").unwrap();
    s.http.set(
        acme.clone(),
        AllowList::from_network("deny", &[format!("127.0.0.1:{port}")]).unwrap(),
    );
    let mut options = bulkhead_model::options::TenantOptions::default();
    options.flags.insert(
        "new_editor".into(),
        serde_json::from_value(json!({"value": true})).unwrap(),
    );
    s.options.set(
        acme,
        LiveOptions {
            options,
            secrets: Default::default(),
        },
    );
    let url = format!("http://127.0.0.1:{port}/");
    let path = format!("/probe?{url}");
    let acme_token = s.user_token("acme", "ada", &["agent"]).await;
    let beta_token = s.user_token("beta", "bea", &["agent"]).await;
    let (st, a) = s
        .send("GET", ACME, &path, Some(&acme_token), &[], None)
        .await;
    assert_eq!(st.as_u16(), 200, "{a}");
    assert_eq!(a["tenant"], "acme");
    assert_eq!(a["fetched"], "partner", "acme's list allows the partner");
    assert_eq!(a["new_editor"], true, "acme's override");
    let (st, b) = s
        .send("GET", BETA, &path, Some(&beta_token), &[], None)
        .await;
    assert_eq!(st.as_u16(), 200, "{b}");
    assert_eq!(b["tenant"], "beta");
    assert!(b["fetched"].as_str().unwrap().starts_with("denied"), "{b}");
    assert_eq!(b["new_editor"], false, "not acme's override");
    // Without credentials a tenant is only ever the host's (an anonymous caller); a path
    // selector without a token is refused before app code runs.
    let (st, _) = s
        .send(
            "GET",
            "api.example.com",
            &format!("/t/acme{path}"),
            None,
            &[],
            None,
        )
        .await;
    assert_eq!(st.as_u16(), 401);
}
