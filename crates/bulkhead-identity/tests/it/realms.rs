use bulkhead_identity::store::{RealmSettings, RealmStore, StoreError};
use bulkhead_model::TenantId;
use bulkhead_testkit::pg;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

const NOW: u64 = 1_795_428_000;

async fn store() -> (RealmStore, Pool, [u8; 32]) {
    let db = pg().unwrap().fresh_db().await.unwrap();
    let manager = Manager::from_config(
        db.superuser_config(),
        bulkhead_testkit::tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager).max_size(4).build().unwrap();
    let master: [u8; 32] = rand::random();
    let store = RealmStore::new(pool.clone(), master, RealmSettings::default());
    store.migrate().await.unwrap();
    (store, pool, master)
}

fn tid(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

async fn two_realms() -> (RealmStore, Pool, [u8; 32]) {
    let (s, pool, master) = store().await;
    for t in ["acme", "beta"] {
        s.create_realm(&tid(t), NOW).await.unwrap();
        s.create_user(&tid(t), "alice", "correct horse", &["agent"])
            .await
            .unwrap();
    }
    (s, pool, master)
}

#[tokio::test]
async fn a_token_from_realm_a_means_nothing_in_realm_b() {
    let (s, _, _) = two_realms().await;
    let tokens = s
        .login(
            &tid("acme"),
            "alice",
            "correct horse",
            "helpdesk",
            NOW,
            None,
        )
        .await
        .unwrap();
    let v = s
        .verify(&tid("acme"), &tokens.access_token, "helpdesk", NOW)
        .await
        .unwrap();
    assert_eq!(v.strings("roles"), ["agent"]);
    // Same username, same password, other tenant: the token is still not valid there.
    assert!(
        s.verify(&tid("beta"), &tokens.access_token, "helpdesk", NOW)
            .await
            .is_err()
    );
    // Another app's audience.
    assert!(
        s.verify(&tid("acme"), &tokens.access_token, "billing", NOW)
            .await
            .is_err()
    );
    // Expired.
    assert!(
        s.verify(&tid("acme"), &tokens.access_token, "helpdesk", NOW + 3600)
            .await
            .is_err()
    );
    // Realms do not share keys.
    let a = s.keyset(&tid("acme"), NOW).await.unwrap();
    let b = s.keyset(&tid("beta"), NOW).await.unwrap();
    assert!(a.keys.iter().all(|k| b.find(&k.kid).is_none()));
    // A refresh token of realm A is unknown in realm B.
    assert!(matches!(
        s.refresh(&tid("beta"), &tokens.refresh_token, NOW).await,
        Err(StoreError::Unauthorized)
    ));
}

#[tokio::test]
async fn wrong_passwords_and_unknown_users_fail_alike() {
    let (s, _, _) = two_realms().await;
    for (user, pw) in [("alice", "wrong"), ("mallory", "correct horse"), ("", "")] {
        assert!(matches!(
            s.login(&tid("acme"), user, pw, "helpdesk", NOW, None).await,
            Err(StoreError::Unauthorized)
        ));
    }
    assert!(matches!(
        s.create_user(&tid("acme"), "alice", "x", &[]).await,
        Err(StoreError::UserExists(_))
    ));
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_revokes_the_family() {
    let (s, _, _) = two_realms().await;
    let first = s
        .login(
            &tid("acme"),
            "alice",
            "correct horse",
            "helpdesk",
            NOW,
            None,
        )
        .await
        .unwrap();
    let second = s
        .refresh(&tid("acme"), &first.refresh_token, NOW + 10)
        .await
        .unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    s.verify(&tid("acme"), &second.access_token, "helpdesk", NOW + 10)
        .await
        .unwrap();
    // The spent token comes back (stolen): refused, and the whole family dies with it.
    assert!(
        s.refresh(&tid("acme"), &first.refresh_token, NOW + 20)
            .await
            .is_err()
    );
    assert!(
        s.refresh(&tid("acme"), &second.refresh_token, NOW + 30)
            .await
            .is_err()
    );
    // Logout revokes a fresh session too.
    let third = s
        .login(
            &tid("acme"),
            "alice",
            "correct horse",
            "helpdesk",
            NOW,
            None,
        )
        .await
        .unwrap();
    s.logout(&tid("acme"), &third.refresh_token).await.unwrap();
    assert!(
        s.refresh(&tid("acme"), &third.refresh_token, NOW + 1)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_valid_for_the_overlap_only() {
    let (s, _, _) = two_realms().await;
    let t = tid("acme");
    let before = s
        .login(&t, "alice", "correct horse", "helpdesk", NOW, None)
        .await
        .unwrap();
    let new_kid = s.rotate_key(&t, NOW + 60, 300).await.unwrap();
    let after = s
        .login(&t, "alice", "correct horse", "helpdesk", NOW + 60, None)
        .await
        .unwrap();
    let header = |tok: &str| {
        use base64::Engine;
        let h = tok.split('.').next().unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(h)
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
    };
    assert_eq!(header(&after.access_token)["kid"], new_kid.as_str());
    assert_ne!(header(&before.access_token)["kid"], new_kid.as_str());
    // Both verify during the overlap.
    s.verify(&t, &before.access_token, "helpdesk", NOW + 100)
        .await
        .unwrap();
    s.verify(&t, &after.access_token, "helpdesk", NOW + 100)
        .await
        .unwrap();
    assert_eq!(s.keyset(&t, NOW + 100).await.unwrap().keys.len(), 2);
    // After the overlap the old key is gone from the key set (and the JWKS).
    assert_eq!(s.keyset(&t, NOW + 400).await.unwrap().keys.len(), 1);
}

#[tokio::test]
async fn private_keys_are_sealed_at_rest() {
    let (s, pool, _) = two_realms().await;
    let client = pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT kid, sealed FROM bulkhead_identity.realm_key WHERE tenant_id = 'acme'",
            &[],
        )
        .await
        .unwrap();
    let kid: String = row.get(0);
    let sealed: Vec<u8> = row.get(1);
    let wrong = [7u8; 32];
    assert!(
        bulkhead_identity::keys::RealmKey::open(
            &sealed,
            &wrong,
            &format!("bulkhead-realm-key/acme/{kid}")
        )
        .is_err()
    );
    // Moving acme's sealed key under beta's row does not make it usable for beta.
    client
        .execute(
            "UPDATE bulkhead_identity.realm_key SET sealed = $1 WHERE tenant_id = 'beta'",
            &[&sealed],
        )
        .await
        .unwrap();
    assert!(
        s.login(
            &tid("beta"),
            "alice",
            "correct horse",
            "helpdesk",
            NOW,
            None
        )
        .await
        .is_err()
    );
}

#[tokio::test]
async fn a_thousand_realms_cost_rows_not_processes() {
    let (s, pool, _) = store().await;
    for i in 0..1000 {
        s.create_realm(&tid(&format!("t{i}")), NOW).await.unwrap();
    }
    let client = pool.get().await.unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM bulkhead_identity.realm_key", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1000);
    // Creating a realm again changes nothing.
    s.create_realm(&tid("t1"), NOW).await.unwrap();
    assert_eq!(s.keyset(&tid("t1"), NOW).await.unwrap().keys.len(), 1);
    let d = s.discovery(&tid("t7"));
    assert_eq!(d["issuer"], "http://127.0.0.1:8080/realms/t7");
}
