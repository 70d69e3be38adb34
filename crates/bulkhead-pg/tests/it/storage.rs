//! The mini-apps' key-value store (`TenantKv`) at every level, as the real runtime role.

use bulkhead_model::IsolationLevel;
use bulkhead_pg::plane::KvScope;
use serde_json::json;

use crate::support::{App, HELPDESK};

#[tokio::test]
async fn storage_keys_stay_in_their_tenant_and_user_at_every_level_and_fail_closed() {
    let app = App::new(
        HELPDESK,
        &[
            ("r1", IsolationLevel::Row),
            ("r2", IsolationLevel::Row),
            ("s1", IsolationLevel::Schema),
            ("d1", IsolationLevel::Database),
        ],
    )
    .await;
    let tenants = ["r1", "r2", "s1", "d1"];
    for t in tenants {
        let ctx = app.ctx_as(t, "alice", &["agent"]);
        let kv = ctx.kv(KvScope::Tenant);
        // Keys spelling other tenants are only keys.
        for key in ["note", "r2:note", "../r2/note", "tenant_id=r2"] {
            kv.set(key, &json!({ "from": t, "key": key }))
                .await
                .unwrap();
        }
        ctx.kv(KvScope::User)
            .set("prefs", &json!({ "of": t }))
            .await
            .unwrap();
    }
    for t in tenants {
        let ctx = app.ctx_as(t, "alice", &["agent"]);
        let kv = ctx.kv(KvScope::Tenant);
        let listed = kv.list("").await.unwrap();
        assert_eq!(listed.len(), 4, "{t}: {listed:?}");
        assert!(
            listed.iter().all(|(_, v)| v["from"] == t),
            "{t}: {listed:?}"
        );
        assert_eq!(kv.get("note").await.unwrap().unwrap()["from"], t);
        // The user's keys are apart from the tenant's and from other users'.
        assert_eq!(kv.get("prefs").await.unwrap(), None);
        let bob = app.ctx_as(t, "bob", &["agent"]);
        assert_eq!(bob.kv(KvScope::User).get("prefs").await.unwrap(), None);
        assert_eq!(
            ctx.kv(KvScope::User).get("prefs").await.unwrap(),
            Some(json!({ "of": t }))
        );
    }
    // Replace, delete, prefixes.
    let ctx = app.ctx("r1");
    let kv = ctx.kv(KvScope::Tenant);
    kv.set("note", &json!(2)).await.unwrap();
    assert_eq!(kv.get("note").await.unwrap(), Some(json!(2)));
    assert!(kv.delete("note").await.unwrap());
    assert!(!kv.delete("note").await.unwrap());
    assert_eq!(kv.list("r2:").await.unwrap().len(), 1);
    // Bad keys and values are refused with the field named; nothing is written.
    for bad in ["", &"k".repeat(513), "a\0b"] {
        let e = kv.set(bad, &json!(1)).await.unwrap_err();
        assert_eq!(bulkhead_model::Coded::field(&e), Some("key"), "{bad:?}");
    }
    let big = json!("x".repeat(70 * 1024));
    let e = kv.set("big", &big).await.unwrap_err();
    assert_eq!(bulkhead_model::Coded::field(&e), Some("value"));
    assert_eq!(kv.get("big").await.unwrap(), None);
    // A caller without a user id has no user keys.
    let anon = app
        .plane
        .context(
            &bulkhead_model::TenantId::parse("r1").unwrap(),
            bulkhead_pg::Actor {
                user_id: None,
                request_id: None,
                roles: vec!["anonymous".into()],
            },
        )
        .unwrap();
    let e = anon.kv(KvScope::User).get("prefs").await.unwrap_err();
    assert_eq!(
        bulkhead_model::Coded::code(&e),
        bulkhead_model::ErrorCode::Forbidden
    );
    // The runtime role without the tenant setting sees no row and cannot write one (forced
    // RLS on bulkhead_kv, like every tenant table).
    let rt = app.raw_runtime().await;
    let rows = rt
        .query("SELECT count(*) FROM public.bulkhead_kv", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 0);
    forge_r2_row_is_refused(&rt).await;
    // With r1's setting, r2's rows stay invisible and a forged r2 row is refused.
    rt.batch_execute("BEGIN; SELECT set_config('bulkhead.tenant_id', 'r1', true);")
        .await
        .unwrap();
    let visible: Vec<String> = rt
        .query("SELECT DISTINCT tenant_id FROM public.bulkhead_kv", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(visible, vec!["r1".to_owned()]);
    forge_r2_row_is_refused(&rt).await;
    rt.batch_execute("ROLLBACK").await.unwrap();
}

/// A row for tenant r2 written by the runtime role directly is refused by forced RLS.
async fn forge_r2_row_is_refused(rt: &tokio_postgres::Client) {
    let err = rt
        .execute(
            "INSERT INTO public.bulkhead_kv (tenant_id, key, value) VALUES ('r2', 'forged', '1')",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42501"));
}
