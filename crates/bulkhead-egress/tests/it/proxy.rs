//! The CONNECT proxy: the same lists for clients that bring their own HTTP stack.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use bulkhead_egress::proxy::{ProxyPolicy, serve};
use bulkhead_egress::{AllowList, Egress, EgressConfig};
use bulkhead_model::{AppId, TenantId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::stub;

struct Policy {
    egress: Arc<Egress>,
    token: String,
    lists: HashMap<String, AllowList>,
}

impl ProxyPolicy for Policy {
    fn egress_for_token(&self, token: &str, _: &TenantId) -> Option<Arc<Egress>> {
        (token == self.token).then(|| self.egress.clone())
    }
    fn tenant_list(&self, _: &Egress, tenant: &TenantId) -> Option<AllowList> {
        self.lists.get(tenant.as_str()).cloned()
    }
}

/// Sends a CONNECT (with credentials when given) and, once tunnelled, a GET; returns the
/// proxy's status line and what came back.
async fn through(proxy: SocketAddr, target: &str, creds: Option<(&str, &str)>) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some((user, token)) = creds {
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
        head.push_str(&format!("Proxy-Authorization: Basic {b}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(&format!(
        "GET /ok HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
    ));
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.lines().next().unwrap_or_default().to_owned();
    (status, text)
}

#[tokio::test]
async fn the_proxy_tunnels_only_what_the_claimed_tenants_list_allows() {
    let port = stub::http(
        axum::Router::new().route("/ok", axum::routing::get(|| async { "hello via tunnel" })),
    )
    .await;
    let dns = stub::dns(HashMap::from([
        (
            "ok.partner.test".to_owned(),
            vec!["127.0.0.1".parse().unwrap()],
        ),
        (
            "api.partner.test".to_owned(),
            vec!["127.0.0.1".parse().unwrap()],
        ),
    ]))
    .await;
    let egress = Arc::new(Egress::new(
        AppId::parse("helpdesk").unwrap(),
        AllowList::default(),
        EgressConfig {
            nameserver: Some(dns),
            ..EgressConfig::default()
        },
    ));
    let policy = Arc::new(Policy {
        egress,
        token: "app-proxy-token".into(),
        lists: HashMap::from([
            (
                "acme".to_owned(),
                AllowList::parse(&[
                    format!("ok.partner.test:{port}"),
                    format!("127.0.0.1:{port}"),
                    format!("api.partner.test:{port}"),
                ])
                .unwrap(),
            ),
            ("bravo".to_owned(), AllowList::default()),
        ]),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, policy));
    let ok = format!("ok.partner.test:{port}");
    let acme = Some(("acme", "app-proxy-token"));

    let (status, body) = through(proxy, &ok, acme).await;
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("hello via tunnel"), "{body}");
    // No or wrong credentials: 407. Another tenant, or an unknown one: refused.
    assert!(through(proxy, &ok, None).await.0.contains("407"));
    assert!(
        through(proxy, &ok, Some(("acme", "guess")))
            .await
            .0
            .contains("407")
    );
    assert!(
        through(proxy, &ok, Some(("bravo", "app-proxy-token")))
            .await
            .0
            .contains("403")
    );
    assert!(
        through(proxy, &ok, Some(("nobody", "app-proxy-token")))
            .await
            .0
            .contains("403")
    );
    // Inside addresses and spellings, ports not on the list: refused before any connection.
    for target in [
        "127.0.0.1:22",
        "169.254.169.254:80",
        "[::1]:443",
        "2130706433:443",
        &format!("ok.partner.test:{}", port.wrapping_add(1)),
    ] {
        let (status, body) = through(proxy, target, acme).await;
        assert!(
            status.contains("403") || status.contains("400"),
            "{target}: {status} {body}"
        );
    }
    // Plain http:// in absolute form, as HTTP clients send it to a proxy: checked the same way.
    let client = |user: &str| {
        reqwest::Client::builder()
            .proxy(
                reqwest::Proxy::http(format!("http://{proxy}"))
                    .unwrap()
                    .basic_auth(user, "app-proxy-token"),
            )
            .build()
            .unwrap()
    };
    let r = client("acme")
        .get(format!("http://{ok}/ok"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello via tunnel");
    let r = client("bravo")
        .get(format!("http://{ok}/ok"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = client("acme")
        .get("http://169.254.169.254/latest/meta-data")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A worker's own egress in proxy mode (its only route in a network namespace): the proxy
    // decides, and its refusals come back as denials.
    let via = Egress::new(
        AppId::parse("helpdesk").unwrap(),
        AllowList::default(),
        EgressConfig {
            via_proxy: Some((
                proxy.to_string(),
                bulkhead_model::Secret::new("app-proxy-token"),
            )),
            ..EgressConfig::default()
        },
    );
    let none = AllowList::default();
    let r = via
        .send(
            &TenantId::parse("acme").unwrap(),
            &none,
            bulkhead_egress::Request::get(&format!("http://{ok}/ok")),
        )
        .await
        .unwrap();
    assert_eq!(r.body, "hello via tunnel");
    for (tenant, url) in [
        ("bravo", format!("http://{ok}/ok")),
        ("acme", "https://169.254.169.254/".to_owned()),
        ("acme", "http://[::1]/".to_owned()),
    ] {
        let r = via
            .send(
                &TenantId::parse(tenant).unwrap(),
                &none,
                bulkhead_egress::Request::get(&url),
            )
            .await;
        assert!(
            matches!(r, Err(bulkhead_egress::Error::Denied { .. })),
            "{tenant} {url}: {r:?}"
        );
    }
    // Anything else: 405.
    let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
    s.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 405"));
}
