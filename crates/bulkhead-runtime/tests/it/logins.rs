//! Login throttling through the realm endpoints: a flood of wrong passwords is answered 429
//! with `Retry-After` once the user's or the address's failures are used up, password hashing
//! stays bounded (memory does not grow with the flood), and the right password works again
//! after the window.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use bulkhead_identity::store::{RealmSettings, RealmStore};
use bulkhead_identity::throttle::LoginLimits;
use bulkhead_model::TenantId;
use bulkhead_runtime::TenantSet;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tower::ServiceExt;

/// Peak resident memory of this process (nextest runs each test in its own), in KiB.
fn peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn login(user: &str, password: &str, from: [u8; 4]) -> Request<Body> {
    let mut req = Request::post("/realms/acme/protocol/openid-connect/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!(
            "grant_type=password&client_id=helpdesk&username={user}&password={password}"
        )))
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((from, 40000))));
    req
}

#[tokio::test(flavor = "multi_thread")]
async fn logins_are_throttled_per_user_and_address_and_hashing_is_bounded() {
    let db = bulkhead_testkit::pg().unwrap().fresh_db().await.unwrap();
    let manager = Manager::from_config(
        db.superuser_config(),
        bulkhead_testkit::tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager).max_size(8).build().unwrap();
    let window = 5;
    let store = RealmStore::new(
        pool,
        rand::random(),
        RealmSettings {
            logins: LoginLimits {
                per_user: 5,
                per_address: 20,
                window_secs: window,
                max_hashing: 2,
                max_waiting: 8,
            },
            ..RealmSettings::default()
        },
    );
    store.migrate().await.unwrap();
    let acme = TenantId::parse("acme").unwrap();
    store.create_realm(&acme, 1).await.unwrap();
    store
        .create_user(&acme, "alice", "correct horse", &["agent"])
        .await
        .unwrap();
    let router = bulkhead_runtime::realms::router(Arc::new(bulkhead_runtime::realms::Realms {
        store,
        directory: Arc::new(TenantSet([acme.clone()].into_iter().collect())),
        clients: vec!["helpdesk".into()],
        secure_cookies: false,
    }));

    // 200 wrong passwords at once, from one address, for alice and for users that do not exist.
    let before = peak_kib();
    let flood = (0..200).map(|i| {
        let router = router.clone();
        let user = if i % 2 == 0 {
            "alice".to_owned()
        } else {
            format!("ghost{i}")
        };
        tokio::spawn(async move { router.oneshot(login(&user, "wrong", [10, 0, 0, 1])).await })
    });
    let mut statuses = Vec::new();
    for task in flood {
        let resp = task.await.unwrap().unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            let retry: u64 = resp.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=window).contains(&retry), "Retry-After {retry}");
        }
        statuses.push(resp.status());
    }
    let grown_mib = (peak_kib() - before) / 1024;
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    let rejected = statuses
        .iter()
        .filter(|s| **s == StatusCode::BAD_REQUEST)
        .count();
    eprintln!(
        "200 wrong logins: {rejected} hashed and refused 400, {refused} throttled 429; peak memory +{grown_mib} MiB"
    );
    assert_eq!(refused + rejected, 200, "only 400 and 429: {statuses:?}");
    // At most the address's 20 failures and what was already hashing got a hash.
    assert!(
        rejected <= 20 + 2 + 8,
        "{rejected} wrong passwords were hashed"
    );
    assert!(refused >= 170, "{refused} refused");
    // Two argon2 hashes at a time (19 MiB each), not 200 (3.8 GiB).
    assert!(grown_mib < 200, "peak memory grew by {grown_mib} MiB");

    // Locked: alice from another address (her own failures), anyone from the flooding one.
    let status = |req: Request<Body>| async { router.clone().oneshot(req).await.unwrap().status() };
    let other = [10, 0, 0, 2];
    let right = || login("alice", "correct%20horse", other);
    assert_eq!(status(right()).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        status(login("bob", "x", [10, 0, 0, 1])).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // After the window the right password works again.
    tokio::time::sleep(Duration::from_secs(window + 1)).await;
    assert_eq!(status(right()).await, StatusCode::OK);
}
