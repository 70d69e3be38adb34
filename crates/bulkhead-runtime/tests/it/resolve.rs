use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Extension};
use axum::http::{Request, StatusCode};
use axum::routing::get;
use bulkhead_model::TenantId;
use bulkhead_runtime::{
    CustomResolver, Mode, ResolvedTenant, ResolverConfig, Strategy, TenantDirectory, TenantLayer,
};
use tower::ServiceExt;

struct Directory(HashSet<&'static str>);

impl TenantDirectory for Directory {
    fn is_active(&self, tenant: &TenantId) -> bool {
        self.0.contains(tenant.as_str())
    }
}

struct FromQuery;

impl CustomResolver for FromQuery {
    fn resolve(&self, parts: &axum::http::request::Parts, _host: &str) -> Option<String> {
        parts.uri.query()?.strip_prefix("org=").map(str::to_owned)
    }
}

fn tid(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

fn config(strategies: Vec<Strategy>) -> ResolverConfig {
    ResolverConfig {
        strategies,
        domains: vec!["api.example.com".into(), "localhost".into()],
        base_domains: vec!["apps.example.com".into()],
        custom_domains: HashMap::from([("support.acme-corp.com".to_owned(), tid("acme"))]),
        trusted_proxies: vec!["10.0.0.1".parse().unwrap()],
    }
}

fn all_strategies() -> Vec<Strategy> {
    vec![
        Strategy::Header("x-tenant".into()),
        Strategy::Cookie("tenant".into()),
        Strategy::PathPrefix,
        Strategy::Subdomain,
        Strategy::CustomDomain,
        Strategy::Custom(Arc::new(FromQuery)),
    ]
}

type App = bulkhead_runtime::resolve::TenantService<Router>;

fn app(config: ResolverConfig, mode: Mode) -> App {
    // "beta" exists; "gone" is suspended (inactive); "acme" exists.
    let directory = Arc::new(Directory(HashSet::from(["acme", "beta"])));
    let router = Router::new().route(
        "/whoami",
        get(|Extension(t): Extension<ResolvedTenant>| async move {
            format!("{}:{:?}", t.tenant, t.via)
        }),
    );
    tower::Layer::layer(&TenantLayer::new(config, directory, mode), router)
}

async fn call(
    app: &App,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    peer: &str,
) -> (StatusCode, String) {
    let mut req = Request::builder().uri(path).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut req = req.body(Body::empty()).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

const PEER: &str = "192.0.2.7:5555";

#[tokio::test]
async fn every_strategy_resolves() {
    let app = app(config(all_strategies()), Mode::Chain);
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "api.example.com",
            "/whoami",
            vec![("x-tenant", "acme")],
            "acme:Header",
        ),
        (
            "api.example.com",
            "/whoami",
            vec![("cookie", "a=1; tenant=beta")],
            "beta:Cookie",
        ),
        ("api.example.com", "/t/acme/whoami", vec![], "acme:Path"),
        ("beta.apps.example.com", "/whoami", vec![], "beta:Subdomain"),
        (
            "support.acme-corp.com:443",
            "/whoami",
            vec![],
            "acme:CustomDomain",
        ),
        ("api.example.com", "/whoami?org=beta", vec![], "beta:Custom"),
    ];
    for (host, path, headers, want) in cases {
        let (status, body) = call(&app, host, path, &headers, PEER).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, want),
            "{host}{path}"
        );
    }
}

#[tokio::test]
async fn the_default_tenant_applies_only_when_nothing_else_names_one() {
    let mut strategies = all_strategies();
    strategies.push(Strategy::Default(tid("beta")));
    let app = app(config(strategies), Mode::Chain);
    assert_eq!(
        call(&app, "localhost", "/whoami", &[], PEER).await.1,
        "beta:Default"
    );
    assert_eq!(
        call(&app, "localhost", "/whoami", &[("x-tenant", "acme")], PEER)
            .await
            .1,
        "acme:Header"
    );
}

#[tokio::test]
async fn unknown_suspended_malformed_tenants_and_hosts_get_the_same_404() {
    let app = app(config(all_strategies()), Mode::Chain);
    let mut bodies = HashSet::new();
    for (host, headers) in [
        ("api.example.com", vec![("x-tenant", "ghost")]),
        ("api.example.com", vec![("x-tenant", "gone")]),
        ("api.example.com", vec![("x-tenant", "Acme'; --")]),
        ("api.example.com", vec![]),
        ("evil.example.net", vec![("x-tenant", "acme")]),
        ("a.b.apps.example.com", vec![]),
        ("ghost.apps.example.com", vec![]),
    ] {
        let (status, body) = call(&app, host, "/whoami", &headers, PEER).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{host} {headers:?}");
        bodies.insert(body);
    }
    assert_eq!(
        bodies.len(),
        1,
        "no hint whether a tenant exists: {bodies:?}"
    );
}

#[tokio::test]
async fn selectors_that_disagree_are_forbidden() {
    let app = app(config(all_strategies()), Mode::Chain);
    for (host, path, headers) in [
        (
            "beta.apps.example.com",
            "/whoami",
            vec![("x-tenant", "acme")],
        ),
        (
            "api.example.com",
            "/t/beta/whoami",
            vec![("x-tenant", "acme")],
        ),
        (
            "api.example.com",
            "/whoami",
            vec![("x-tenant", "acme"), ("cookie", "tenant=beta")],
        ),
    ] {
        let (status, body) = call(&app, host, path, &headers, PEER).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{host}{path} {headers:?}");
        assert!(body.contains("tenant_mismatch"), "{body}");
    }
    // Agreeing selectors are fine.
    let (status, _) = call(
        &app,
        "acme.apps.example.com",
        "/t/acme/whoami",
        &[("x-tenant", "acme")],
        PEER,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn x_forwarded_host_counts_only_from_a_trusted_proxy() {
    let app = app(config(vec![Strategy::Subdomain]), Mode::Chain);
    let spoof = [("x-forwarded-host", "acme.apps.example.com")];
    // From an arbitrary peer the header is ignored: the real Host decides.
    let (status, body) = call(&app, "beta.apps.example.com", "/whoami", &spoof, PEER).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "beta:Subdomain"));
    // From the configured proxy it is the host.
    let (status, body) = call(&app, "internal-lb", "/whoami", &spoof, "10.0.0.1:4000").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "acme:Subdomain"));
}

#[tokio::test]
async fn public_routes_resolve_from_the_host_only() {
    let app = app(config(all_strategies()), Mode::HostOnly);
    let (status, body) = call(
        &app,
        "beta.apps.example.com",
        "/whoami",
        &[("x-tenant", "acme")],
        PEER,
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "beta:Subdomain"),
        "header ignored"
    );
    let (status, _) = call(
        &app,
        "api.example.com",
        "/whoami",
        &[("x-tenant", "acme")],
        PEER,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "no host-based tenant, no tenant"
    );
}
