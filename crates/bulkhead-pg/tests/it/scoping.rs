//! The same app code on all three isolation levels, and the typed errors it gets.

use bulkhead_model::{ErrorCode, IsolationLevel};
use bulkhead_pg::{Direction, Error, Filter, TenantContext};
use serde_json::json;

use crate::support::{ALL_LEVELS, App, HELPDESK};

/// App code, written once, that must behave identically at every level.
async fn app_code(ctx: &TenantContext) -> anyhow::Result<()> {
    let db = ctx.db();
    let acme = db.insert("customer", &json!({"name": "Acme"})).await?;
    let cust = acme["id"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    for i in 0..7 {
        let t = db
            .insert(
                "ticket",
                &json!({
                    "title": format!("ticket {i}"),
                    "prio": i % 3,
                    "customer": cust,
                    "meta": {"i": i},
                    "due": "2026-12-01",
                    "amount": "12.50",
                    "at": "2026-11-23T10:00:00Z",
                    "big": 1_i64 << 40,
                    "done": i % 2 == 0,
                    "author": "mallory"
                }),
            )
            .await?;
        assert_eq!(
            t["author"],
            json!(format!("user-of-{}", ctx.tenant())),
            "owner is the actor"
        );
        assert_eq!(t["status"], "open", "default applied");
        assert_eq!(t["meta"], json!({"i": i}));
        assert_eq!(t["amount"], "12.50");
        assert_eq!(t["at"], "2026-11-23T10:00:00.000000Z");
        ids.push(t["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(db.query("ticket").count().await?, 7);
    assert_eq!(
        db.query("ticket")
            .filter(Filter::eq("prio", 0))
            .count()
            .await?,
        3
    );
    let filtered = db
        .query("ticket")
        .filter(Filter::Or(vec![
            Filter::lt("prio", 1),
            Filter::gte("prio", 2),
        ]))
        .filter(Filter::contains("title", "TICKET"))
        .filter(Filter::is_in("status", vec![json!("open")]))
        .filter(Filter::not_null("customer"))
        .count()
        .await?;
    assert_eq!(filtered, 5);

    // Keyset pagination over a non-unique order field visits every row exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = db
            .query("ticket")
            .order_by("prio", Direction::Desc)
            .limit(3);
        if let Some(c) = &cursor {
            q = q.after(c);
        }
        let page = q.fetch().await?;
        seen.extend(
            page.records
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_owned()),
        );
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let mut expected = ids.clone();
    expected.sort();
    let mut got = seen.clone();
    got.sort();
    assert_eq!(got, expected);

    let updated = db
        .update("ticket", &ids[0], &json!({"status": "closed", "prio": 9}))
        .await?;
    assert_eq!(updated["status"], "closed");
    assert_eq!(db.get("ticket", &ids[0]).await?["prio"], 9);
    db.delete("ticket", &ids[0]).await?;
    assert!(matches!(
        db.get("ticket", &ids[0]).await,
        Err(Error::NotFound { .. })
    ));

    // A failed transaction leaves nothing behind.
    let before = db.query("ticket").count().await?;
    let result = db
        .transaction(async |tx| {
            tx.insert("ticket", &json!({"title": "in tx"})).await?;
            tx.insert("customer", &json!({"name": "Acme"})).await?; // unique violation
            Ok(())
        })
        .await;
    assert!(
        matches!(result, Err(Error::UniqueViolation { .. })),
        "{result:?}"
    );
    assert_eq!(db.query("ticket").count().await?, before);

    // A good one commits all its writes.
    let n = db
        .transaction(async |tx| {
            let c = tx.insert("customer", &json!({"name": "Beta"})).await?;
            let id = c["id"].as_str().unwrap().to_owned();
            tx.insert("ticket", &json!({"title": "tx", "customer": id}))
                .await?;
            tx.query("ticket").count().await
        })
        .await?;
    assert_eq!(n, before + 1);
    Ok(())
}

#[tokio::test]
async fn the_same_app_code_runs_unchanged_at_every_isolation_level() -> anyhow::Result<()> {
    let app = App::new(
        HELPDESK,
        &[
            ("row-a", IsolationLevel::Row),
            ("schema-a", IsolationLevel::Schema),
            ("db-a", IsolationLevel::Database),
        ],
    )
    .await;
    for tenant in ["row-a", "schema-a", "db-a"] {
        app_code(&app.ctx(tenant))
            .await
            .map_err(|e| anyhow::anyhow!("{tenant}: {e:#}"))?;
    }
    Ok(())
}

#[tokio::test]
async fn bad_input_gets_a_typed_error_with_a_stable_code() {
    let app = App::new(HELPDESK, &[("acme", IsolationLevel::Row)]).await;
    let ctx = app.ctx("acme");
    let db = ctx.db();
    let cases: Vec<(serde_json::Value, ErrorCode)> = vec![
        (json!({"title": "x", "prio": "high"}), ErrorCode::WrongType),
        (
            json!({"title": "x", "prio": 1_i64 << 40}),
            ErrorCode::OutOfRange,
        ),
        (
            json!({"title": "x", "status": "pending"}),
            ErrorCode::OutOfRange,
        ),
        (json!({"title": "x", "nope": 1}), ErrorCode::UnknownField),
        (
            json!({"title": "x", "tenant_id": "other"}),
            ErrorCode::UnknownField,
        ),
        (json!({"prio": 1}), ErrorCode::MissingField),
        (json!({"title": null}), ErrorCode::MissingField),
        (
            json!({"title": "x", "customer": "not-a-uuid"}),
            ErrorCode::WrongType,
        ),
        (
            json!({"title": "x", "customer": "00000000-0000-4000-8000-000000000000"}),
            ErrorCode::ReferenceNotFound,
        ),
        (
            json!({"title": "x", "due": "2026-02-30"}),
            ErrorCode::OutOfRange,
        ),
    ];
    for (record, code) in cases {
        let err = db.insert("ticket", &record).await.unwrap_err();
        assert_eq!(err.code(), code, "{record}: {err}");
    }
    assert_eq!(
        db.insert("nope", &json!({})).await.unwrap_err().code(),
        ErrorCode::UnknownEntity
    );
    assert_eq!(
        db.query("ticket")
            .filter(Filter::eq("nope", 1))
            .count()
            .await
            .unwrap_err()
            .code(),
        ErrorCode::UnknownField
    );
    assert_eq!(
        db.query("ticket")
            .after("garbage")
            .fetch()
            .await
            .unwrap_err()
            .code(),
        ErrorCode::BadQuery
    );
    assert_eq!(
        db.get("ticket", "not-a-uuid").await.unwrap_err().code(),
        ErrorCode::WrongType
    );
    db.insert("customer", &json!({"name": "Acme"}))
        .await
        .unwrap();
    assert_eq!(
        db.insert("customer", &json!({"name": "Acme"}))
            .await
            .unwrap_err()
            .code(),
        ErrorCode::UniqueViolation
    );
    assert_eq!(
        db.query("ticket").count().await.unwrap(),
        0,
        "nothing half-written"
    );
}

#[tokio::test]
async fn unique_constraints_are_per_tenant() {
    let app = App::new(
        HELPDESK,
        &[("one", IsolationLevel::Row), ("two", IsolationLevel::Row)],
    )
    .await;
    app.ctx("one")
        .db()
        .insert("customer", &json!({"name": "Same"}))
        .await
        .unwrap();
    app.ctx("two")
        .db()
        .insert("customer", &json!({"name": "Same"}))
        .await
        .unwrap();
}

#[tokio::test]
async fn global_entities_are_readable_by_every_tenant_and_written_only_by_the_admin_path() {
    let mut app = App::new(HELPDESK, &[]).await;
    for (i, level) in ALL_LEVELS.iter().enumerate() {
        app.add_tenant(&format!("t{i}"), *level).await;
    }
    app.prov
        .insert_global(&app.manifest, "country", &json!({"code": "DE"}))
        .await
        .unwrap();
    for i in 0..3 {
        let ctx = app.ctx(&format!("t{i}"));
        let db = ctx.db();
        let page = db.query("country").fetch().await.unwrap();
        assert_eq!(page.records.len(), 1);
        assert_eq!(page.records[0]["code"], "DE");
        let country = page.records[0]["id"].as_str().unwrap().to_owned();
        let err = db
            .insert("country", &json!({"code": "FR"}))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::ReadOnlyEntity);
        // A tenant row may point at global data (type-checked; no FK across databases).
        db.insert("ticket", &json!({"title": "x", "country": country}))
            .await
            .unwrap();
    }
    // Even through SQL, the runtime role cannot write global data.
    let raw = app.raw_runtime().await;
    let err = raw
        .execute("INSERT INTO public.country (code) VALUES ('XX')", &[])
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42501");
}

#[tokio::test]
async fn an_unknown_or_suspended_tenant_gets_no_context() {
    let app = App::new(HELPDESK, &[("acme", IsolationLevel::Row)]).await;
    let err = app
        .plane
        .context(&crate::support::tid("ghost"), Default::default())
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::TenantNotFound);
    app.plane.register_tenant(bulkhead_pg::TenantPlacement {
        tenant: crate::support::tid("acme"),
        level: IsolationLevel::Row,
        database_password: None,
        suspended: true,
    });
    let err = app
        .plane
        .context(&crate::support::tid("acme"), Default::default())
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::TenantNotFound);
}

#[tokio::test]
async fn provisioning_is_idempotent() {
    let app = App::new(
        HELPDESK,
        &[
            ("s1", IsolationLevel::Schema),
            ("d1", IsolationLevel::Database),
        ],
    )
    .await;
    let again = app.prov.ensure_app(&app.manifest).await.unwrap();
    assert!(
        again.runtime.password.is_none(),
        "existing role keeps its password"
    );
    assert!(again.migration.plan.is_empty());
    for (t, level) in &app.tenants {
        let done = app
            .prov
            .ensure_tenant(&app.manifest, t, *level)
            .await
            .unwrap();
        assert!(done.migration.unwrap().plan.is_empty());
    }
    // The original credentials still work.
    app.ctx("s1").db().query("ticket").count().await.unwrap();
    app.ctx("d1").db().query("ticket").count().await.unwrap();
}

/// Two transactions that lock the same rows in opposite order: PostgreSQL picks a victim
/// (SQLSTATE 40P01), which is a retryable `transaction_conflict` (409), never an opaque 500,
/// and the survivor commits.
#[tokio::test]
async fn a_deadlock_is_a_retryable_conflict() {
    let app = App::new(HELPDESK, &[("acme", bulkhead_model::IsolationLevel::Row)]).await;
    let ctx = app.ctx("acme");
    let db = ctx.db();
    let a = db.insert("customer", &json!({"name": "A"})).await.unwrap();
    let b = db.insert("customer", &json!({"name": "B"})).await.unwrap();
    let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let mut t1 = db.begin().await.unwrap();
    let mut t2 = db.begin().await.unwrap();
    t1.update("customer", a, &json!({"name": "A1"}))
        .await
        .unwrap();
    t2.update("customer", b, &json!({"name": "B2"}))
        .await
        .unwrap();
    async fn finish(mut tx: bulkhead_pg::Tx<'_>, id: &str, name: &str) -> Result<(), Error> {
        match tx.update("customer", id, &json!({ "name": name })).await {
            Ok(_) => tx.commit().await,
            Err(e) => {
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }
    let (r1, r2) = tokio::join!(finish(t1, b, "B1"), finish(t2, a, "A2"));
    let codes: Vec<Option<ErrorCode>> = [&r1, &r2]
        .iter()
        .map(|r| r.as_ref().err().map(Error::code))
        .collect();
    assert!(
        codes.contains(&Some(ErrorCode::TransactionConflict)) && codes.contains(&None),
        "one victim, one survivor: {r1:?} {r2:?}"
    );
    assert_eq!(ErrorCode::TransactionConflict.http_status(), 409);
}
