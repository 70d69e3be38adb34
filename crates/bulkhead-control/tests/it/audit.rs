use bulkhead_control::audit::{self, Entry};
use bulkhead_model::{AppId, IsolationLevel, TenantId};
use bulkhead_testkit::pg;
use serde_json::json;

async fn client() -> bulkhead_testkit::tokio_postgres::Client {
    let db = pg().unwrap().fresh_db().await.unwrap();
    let mut c = db.superuser().await.unwrap();
    bulkhead_control::migrate(&mut c).await.unwrap();
    bulkhead_control::migrate(&mut c).await.unwrap(); // idempotent
    c
}

async fn fill(c: &mut bulkhead_testkit::tokio_postgres::Client, n: usize) {
    for i in 0..n {
        audit::append(
            c,
            &Entry {
                actor: "admin",
                action: "tenant.create",
                target: &format!("helpdesk/t{i}"),
                detail: json!({"isolation": "schema", "i": i}),
            },
        )
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn an_intact_chain_verifies_and_lists_newest_first() {
    let mut c = client().await;
    fill(&mut c, 5).await;
    let v = audit::verify(&c).await.unwrap();
    assert!(v.ok(), "{v:?}");
    assert_eq!(v.records, 5);
    let list = audit::list(&c, 2).await.unwrap();
    assert_eq!(list.iter().map(|r| r.seq).collect::<Vec<_>>(), [5, 4]);
    assert_eq!(list[0].hash, v.head);
}

#[tokio::test]
async fn the_log_refuses_updates_and_deletes() {
    let mut c = client().await;
    fill(&mut c, 2).await;
    for sql in [
        "UPDATE bulkhead_control.audit_log SET actor = 'mallory'",
        "DELETE FROM bulkhead_control.audit_log WHERE seq = 1",
        "TRUNCATE bulkhead_control.audit_log",
    ] {
        let err = c.batch_execute(sql).await.unwrap_err();
        assert!(
            err.to_string().contains("append-only") || format!("{err:?}").contains("append-only"),
            "{sql}: {err:?}"
        );
    }
}

#[tokio::test]
async fn a_changed_or_deleted_record_is_detected() {
    let mut c = client().await;
    fill(&mut c, 5).await;
    // Someone with enough privilege to switch the trigger off changes a record...
    c.batch_execute(
        "ALTER TABLE bulkhead_control.audit_log DISABLE TRIGGER audit_log_append_only;
         UPDATE bulkhead_control.audit_log SET detail = '{\"isolation\": \"row\"}' WHERE seq = 3;
         ALTER TABLE bulkhead_control.audit_log ENABLE TRIGGER audit_log_append_only;",
    )
    .await
    .unwrap();
    let v = audit::verify(&c).await.unwrap();
    assert!(!v.ok());
    assert!(
        v.problems
            .iter()
            .any(|p| p.seq == 3 && p.problem.contains("changed")),
        "{v:?}"
    );
    // ...and deletes another.
    c.batch_execute(
        "ALTER TABLE bulkhead_control.audit_log DISABLE TRIGGER audit_log_append_only;
         DELETE FROM bulkhead_control.audit_log WHERE seq = 2;
         ALTER TABLE bulkhead_control.audit_log ENABLE TRIGGER audit_log_append_only;",
    )
    .await
    .unwrap();
    let v = audit::verify(&c).await.unwrap();
    assert!(
        v.problems
            .iter()
            .any(|p| p.seq == 3 && p.problem.contains("missing")),
        "{v:?}"
    );
}

#[tokio::test]
async fn the_registry_keeps_tenants_and_credential_locations_but_no_secrets() {
    let c = client().await;
    let app = AppId::parse("helpdesk").unwrap();
    bulkhead_control::registry::upsert_app(&c, &app, &json!({"app": "helpdesk"}))
        .await
        .unwrap();
    let t = TenantId::parse("partner-acme").unwrap();
    bulkhead_control::registry::upsert_tenant(
        &c,
        &app,
        &t,
        IsolationLevel::Database,
        &bulkhead_model::tenants::IdentitySpec::Oidc {
            issuer: "https://login.acme.example".into(),
            audience: "helpdesk".into(),
            jwks_url: None,
            roles_claim: "roles".into(),
        },
        &bulkhead_model::tenants::NetworkSpec {
            default: "deny".into(),
            allow: vec!["api.acme-partner.com".into()],
        },
        Some("eu"),
        true,
    )
    .await
    .unwrap();
    bulkhead_control::registry::record_credential(
        &c,
        &app,
        Some(&t),
        "db-login",
        "apps/helpdesk/tenants/partner-acme/db",
    )
    .await
    .unwrap();
    assert!(
        bulkhead_control::registry::set_status(
            &c,
            &app,
            &t,
            bulkhead_control::registry::TenantStatus::Suspended
        )
        .await
        .unwrap()
    );
    let list = bulkhead_control::registry::tenants(&c, &app).await.unwrap();
    assert_eq!(list[0].isolation, bulkhead_model::IsolationLevel::Database);
    assert_eq!(
        list[0].status,
        bulkhead_control::registry::TenantStatus::Suspended
    );
    assert_eq!(list[0].residency.as_deref(), Some("eu"));
    // A record the registry should never hold is an error naming it, not a silent default.
    c.execute(
        "UPDATE bulkhead_control.tenant SET identity = '{\"provider\": \"nope\"}' WHERE id = $1",
        &[&t.as_str()],
    )
    .await
    .unwrap();
    let err = bulkhead_control::registry::tenants(&c, &app)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("partner-acme") && err.contains("identity"),
        "{err}"
    );
    let cols: Vec<String> = c
        .query(
            "SELECT column_name::text FROM information_schema.columns WHERE table_schema = 'bulkhead_control' AND table_name = 'credential'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        !cols
            .iter()
            .any(|c| c.contains("password") || c.contains("secret")),
        "{cols:?}"
    );
    // Steps make provisioning resumable.
    assert!(
        !bulkhead_control::registry::step_done(&c, "app/helpdesk", "database")
            .await
            .unwrap()
    );
    bulkhead_control::registry::mark_step(&c, "app/helpdesk", "database")
        .await
        .unwrap();
    bulkhead_control::registry::mark_step(&c, "app/helpdesk", "database")
        .await
        .unwrap();
    assert!(
        bulkhead_control::registry::step_done(&c, "app/helpdesk", "database")
            .await
            .unwrap()
    );
}
