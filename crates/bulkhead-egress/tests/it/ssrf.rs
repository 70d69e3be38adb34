//! Names that resolve inside, address spellings, redirects, other tenants' lists, limits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use bulkhead_egress::{AllowList, Egress, EgressConfig, Error, Request};
use bulkhead_model::{AppId, TenantId};

use crate::stub;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn t(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

struct World {
    egress: Egress,
    port: u16,
}

async fn world(config: EgressConfig) -> World {
    let port = stub::http(
        axum::Router::new()
            .route("/ok", get(|| async { "hello from the partner" }))
            .route(
                "/to-metadata",
                get(|| async { Redirect::temporary("http://169.254.169.254/latest/meta-data") }),
            )
            .route(
                "/to-loopback-name",
                get(|| async { Redirect::temporary("http://api.partner.test/") }),
            )
            .route("/to-ok", get(|| async { Redirect::to("/ok") }))
            .route(
                "/credentials",
                get(|h: axum::http::HeaderMap| async move {
                    let v = |k: &str| {
                        h.get(k)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_owned()
                    };
                    format!(
                        "authorization={} cookie={}",
                        v("authorization"),
                        v("cookie")
                    )
                }),
            )
            .route(
                "/to-credentials",
                get(|| async { Redirect::to("/credentials") }),
            )
            .route(
                "/to-other-origin",
                get(|h: axum::http::HeaderMap| async move {
                    // The same server under another host name: another origin.
                    let host = h.get("host").and_then(|v| v.to_str().ok()).unwrap_or("");
                    let port = host.rsplit(':').next().unwrap_or("80");
                    Redirect::temporary(&format!("http://127.0.0.1:{port}/credentials"))
                }),
            )
            .route("/loop", get(|| async { Redirect::to("/loop") }))
            .route(
                "/big",
                get(|| async { vec![b'x'; 2 * 1024 * 1024].into_response() }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            ),
    )
    .await;
    let dns = stub::dns(HashMap::from([
        // Allowed names that point inside.
        ("api.partner.test".to_owned(), vec![ip("127.0.0.1")]),
        ("meta.partner.test".to_owned(), vec![ip("169.254.169.254")]),
        (
            "mixed.partner.test".to_owned(),
            vec![ip("93.184.216.34"), ip("10.0.0.7")],
        ),
        ("v6.partner.test".to_owned(), vec![ip("::ffff:127.0.0.1")]),
        ("ula.partner.test".to_owned(), vec![ip("fd00::1")]),
        // The real partner server, on loopback and allowed by address for its port only.
        ("ok.partner.test".to_owned(), vec![ip("127.0.0.1")]),
    ]))
    .await;
    World {
        egress: Egress::new(
            AppId::parse("helpdesk").unwrap(),
            AllowList::default(),
            EgressConfig {
                nameserver: Some(dns),
                ..config
            },
        ),
        port,
    }
}

fn denied(r: Result<bulkhead_egress::Response, Error>) -> String {
    match r {
        Err(Error::Denied { reason, .. }) => reason,
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[tokio::test]
async fn names_that_resolve_inside_and_inside_addresses_are_refused() {
    let w = world(EgressConfig::default()).await;
    let acme = AllowList::parse(&[
        "*.partner.test",
        &format!("ok.partner.test:{}", w.port),
        &format!("127.0.0.1:{}", w.port),
    ])
    .unwrap();
    // Wildcards allow names, but an allowed name that resolves inside is refused.
    let strict = AllowList::parse(&["*.partner.test", "*.partner.test:8080"]).unwrap();
    for (name, range) in [
        ("api.partner.test", "loopback"),
        ("meta.partner.test", "link-local"),
        ("mixed.partner.test", "private"),
        ("v6.partner.test", "loopback"),
        ("ula.partner.test", "unique local"),
    ] {
        let reason = denied(
            w.egress
                .send(
                    &t("acme"),
                    &strict,
                    Request::get(&format!("http://{name}/")),
                )
                .await,
        );
        assert!(reason.contains(range), "{name}: {reason}");
    }
    // Address spellings of loopback and metadata: refused without an address entry.
    for url in [
        "http://127.0.0.1/",
        "http://0x7f.1/",
        "http://2130706433/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://[::1]/",
        "http://[::ffff:7f00:1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://169.254.169.254/latest/meta-data",
        "http://0.0.0.0/",
        "http://[fe80::1]/",
        "http://10.0.0.1/",
        "http://93.184.216.34/",
    ] {
        let reason = denied(w.egress.send(&t("acme"), &strict, Request::get(url)).await);
        assert!(reason.contains("not on an allow-list"), "{url}: {reason}");
    }
    // Names not on the list, look-alikes of listed ones, other schemes.
    for url in [
        "http://partner.test/",
        "http://evilpartner.test/",
        "http://partner.test.evil.example/",
        "http://api.partner.test.:9/",
    ] {
        denied(w.egress.send(&t("acme"), &strict, Request::get(url)).await);
    }
    assert!(matches!(
        w.egress
            .send(&t("acme"), &strict, Request::get("file:///etc/passwd"))
            .await,
        Err(Error::BadUrl(_))
    ));
    // Explicitly allowed by address and port: the request goes out and is answered.
    let ok = format!("http://ok.partner.test:{}/ok", w.port);
    let r = w
        .egress
        .send(&t("acme"), &acme, Request::get(&ok))
        .await
        .unwrap();
    assert_eq!(r.body, "hello from the partner");
    // Tenant B cannot reach what only A's list allows.
    let reason = denied(
        w.egress
            .send(&t("bravo"), &AllowList::default(), Request::get(&ok))
            .await,
    );
    assert!(
        reason.contains("not on the tenant's or the app's allow-list"),
        "{reason}"
    );
    assert!(w.egress.denials().values().sum::<u64>() >= 20);
}

#[tokio::test]
async fn redirects_are_checked_at_every_hop_and_limits_hold() {
    let w = world(EgressConfig {
        max_response_bytes: 1024 * 1024,
        timeout: Duration::from_secs(1),
        ..EgressConfig::default()
    })
    .await;
    let list = AllowList::parse(&[
        format!("ok.partner.test:{}", w.port),
        format!("127.0.0.1:{}", w.port),
        "api.partner.test".to_owned(),
    ])
    .unwrap();
    let base = format!("http://ok.partner.test:{}", w.port);
    let get = |p: &str| Request::get(&format!("{base}{p}"));
    let r = w
        .egress
        .send(&t("acme"), &list, get("/to-ok"))
        .await
        .unwrap();
    assert_eq!(
        (r.status.as_u16(), r.body.as_ref()),
        (200, &b"hello from the partner"[..])
    );
    let reason = denied(w.egress.send(&t("acme"), &list, get("/to-metadata")).await);
    assert!(reason.contains("169.254.169.254"), "{reason}");
    // A listed name that resolves to loopback, reached by redirect: the address entry for
    // 127.0.0.1 names the partner's port only, not 80.
    let reason = denied(
        w.egress
            .send(&t("acme"), &list, get("/to-loopback-name"))
            .await,
    );
    assert!(reason.contains("loopback"), "{reason}");
    assert!(matches!(
        w.egress.send(&t("acme"), &list, get("/loop")).await,
        Err(Error::TooManyRedirects(5))
    ));
    assert!(matches!(
        w.egress.send(&t("acme"), &list, get("/big")).await,
        Err(Error::TooLarge(_))
    ));
    assert!(matches!(
        w.egress.send(&t("acme"), &list, get("/slow")).await,
        Err(Error::Failed(_))
    ));
    // Credentials follow a redirect within their origin, never to another one.
    let with_credentials = |p: &str| Request {
        headers: vec![
            ("Authorization".into(), "Bearer partner-token".into()),
            ("Cookie".into(), "session=partner".into()),
        ],
        ..get(p)
    };
    let same = w
        .egress
        .send(&t("acme"), &list, with_credentials("/to-credentials"))
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&same.body),
        "authorization=Bearer partner-token cookie=session=partner"
    );
    let other = w
        .egress
        .send(&t("acme"), &list, with_credentials("/to-other-origin"))
        .await
        .unwrap();
    assert!(other.url.starts_with("http://127.0.0.1:"), "{}", other.url);
    assert_eq!(
        String::from_utf8_lossy(&other.body),
        "authorization=- cookie=-",
        "nothing of the first origin's credentials reaches another"
    );
    // Redirects not followed: the 3xx comes back as it is.
    let nofollow = world(EgressConfig {
        max_redirects: 0,
        ..EgressConfig::default()
    })
    .await;
    let list = AllowList::parse(&[
        format!("ok.partner.test:{}", nofollow.port),
        format!("127.0.0.1:{}", nofollow.port),
    ])
    .unwrap();
    let r = nofollow
        .egress
        .send(
            &t("acme"),
            &list,
            Request::get(&format!(
                "http://ok.partner.test:{}/to-metadata",
                nofollow.port
            )),
        )
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 307);
}

/// One pooled client per tenant: three requests to the same host reuse one connection (the
/// server sees one peer), and each still goes through the allow-list and the address check.
#[tokio::test]
async fn connections_are_reused_across_requests_to_the_same_host() {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};
    let peers: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
    let seen = peers.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let router = axum::Router::new().route(
        "/ok",
        get(
            move |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(peer);
                    "ok"
                }
            },
        ),
    );
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let w = world(EgressConfig::default()).await;
    let acme = AllowList::parse(&[
        &format!("ok.partner.test:{port}"),
        &format!("127.0.0.1:{port}"),
    ])
    .unwrap();
    let tenant = TenantId::parse("acme").unwrap();
    for _ in 0..3 {
        let r = w
            .egress
            .send(
                &tenant,
                &acme,
                Request::get(&format!("http://ok.partner.test:{port}/ok")),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    let peers = peers.lock().unwrap().clone();
    assert_eq!(peers.len(), 3);
    assert!(
        peers.iter().all(|p| *p == peers[0]),
        "new connections: {peers:?}"
    );
    // Reuse never skips the policy: the same host for a tenant that may not reach it is refused.
    let other = TenantId::parse("globex").unwrap();
    let strict = AllowList::parse(&["*.partner.test"]).unwrap();
    assert!(matches!(
        w.egress
            .send(
                &other,
                &strict,
                Request::get(&format!("http://ok.partner.test:{port}/ok"))
            )
            .await,
        Err(Error::Denied { .. })
    ));
}
