//! `HttpOut`, the worker's side of `ctx.http()`: each tenant's allow-list, nobody else's.

use bulkhead_egress::{AllowList, Egress, EgressConfig, Error};
use bulkhead_model::{AppId, TenantId};
use bulkhead_runtime::http::HttpOut;

fn t(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

#[tokio::test]
async fn each_tenant_reaches_only_what_its_list_or_the_apps_allows() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        axum::serve(
            listener,
            axum::Router::new().route("/", axum::routing::get(|| async { "partner" })),
        )
        .await
        .unwrap();
    });
    let url = format!("http://127.0.0.1:{port}/");
    let out = HttpOut::new(Egress::new(
        AppId::parse("helpdesk").unwrap(),
        AllowList::default(),
        EgressConfig::default(),
    ));
    out.set(
        t("acme"),
        AllowList::from_network("deny", &[format!("127.0.0.1:{port}")]).unwrap(),
    );
    // `default: allow` lets names out, never loopback addresses.
    out.set(
        t("open"),
        AllowList::from_network("allow", &[] as &[&str]).unwrap(),
    );
    assert_eq!(
        out.tenant(&t("acme")).get(&url).await.unwrap().body,
        "partner"
    );
    for tenant in ["bravo", "open"] {
        assert!(
            matches!(
                out.tenant(&t(tenant)).get(&url).await,
                Err(Error::Denied { .. })
            ),
            "{tenant}"
        );
    }
    out.remove(&t("acme"));
    assert!(matches!(
        out.tenant(&t("acme")).get(&url).await,
        Err(Error::Denied { .. })
    ));
    // The app's own list reaches it for every tenant.
    let app_wide = HttpOut::new(Egress::new(
        AppId::parse("helpdesk").unwrap(),
        AllowList::parse(&[format!("127.0.0.1:{port}")]).unwrap(),
        EgressConfig::default(),
    ));
    assert_eq!(
        app_wide.tenant(&t("bravo")).get(&url).await.unwrap().body,
        "partner"
    );
    assert!(out.egress().denials().values().sum::<u64>() >= 3);
}
