//! Adversarial tests: each would fail if the protection it names were removed.

use std::time::Duration;

use bulkhead_model::{ErrorCode, IsolationLevel, names};
use bulkhead_pg::{Filter, PoolSettings};
use serde_json::json;

use crate::support::{App, HELPDESK, tid};

fn sqlstate(e: &bulkhead_testkit::tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_owned())
        .unwrap_or_else(|| e.to_string())
}

#[tokio::test]
async fn a_raw_runtime_connection_without_a_tenant_sees_nothing() {
    let app = App::new(
        HELPDESK,
        &[("aa", IsolationLevel::Row), ("bb", IsolationLevel::Row)],
    )
    .await;
    for t in ["aa", "bb"] {
        app.ctx(t)
            .db()
            .insert("ticket", &json!({"title": t}))
            .await
            .unwrap();
    }
    let raw = app.raw_runtime().await;
    // Unset: current_setting(…, true) is NULL.
    let n: i64 = raw
        .query_one("SELECT count(*) FROM public.ticket", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // Set to empty (as it reads after a transaction that set it has ended).
    raw.batch_execute("SELECT set_config('bulkhead.tenant_id', '', false)")
        .await
        .unwrap();
    let n: i64 = raw
        .query_one("SELECT count(*) FROM public.ticket", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // Even updates and deletes with no filter touch nothing.
    assert_eq!(
        raw.execute("UPDATE public.ticket SET prio = 99", &[])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        raw.execute("DELETE FROM public.ticket", &[]).await.unwrap(),
        0
    );
    // Both tenants still have their row.
    for t in ["aa", "bb"] {
        assert_eq!(app.ctx(t).db().query("ticket").count().await.unwrap(), 1);
    }
}

#[tokio::test]
async fn writing_another_tenants_id_is_refused_by_rls() {
    let app = App::new(
        HELPDESK,
        &[("aa", IsolationLevel::Row), ("bb", IsolationLevel::Row)],
    )
    .await;
    let b_row = app
        .ctx("bb")
        .db()
        .insert("ticket", &json!({"title": "b"}))
        .await
        .unwrap();
    let raw = app.raw_runtime().await;
    raw.batch_execute("BEGIN; SELECT set_config('bulkhead.tenant_id', 'aa', true)")
        .await
        .unwrap();
    let err = raw
        .execute(
            "INSERT INTO public.ticket (tenant_id, title) VALUES ('bb', 'forged')",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err:?}");
    raw.batch_execute("ROLLBACK; BEGIN; SELECT set_config('bulkhead.tenant_id', 'aa', true)")
        .await
        .unwrap();
    app.ctx("aa")
        .db()
        .insert("ticket", &json!({"title": "a"}))
        .await
        .unwrap();
    let err = raw
        .execute("UPDATE public.ticket SET tenant_id = 'bb'", &[])
        .await
        .unwrap_err();
    assert_eq!(
        sqlstate(&err),
        "42501",
        "moving a row to another tenant: {err:?}"
    );
    raw.batch_execute("ROLLBACK").await.unwrap();
    // Through TenantDb, tenant a cannot address b's row at all.
    let id = b_row["id"].as_str().unwrap();
    let ctx_a = app.ctx("aa");
    let a = ctx_a.db();
    assert_eq!(
        a.get("ticket", id).await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    assert_eq!(
        a.update("ticket", id, &json!({"title": "pwned"}))
            .await
            .unwrap_err()
            .code(),
        ErrorCode::NotFound
    );
    assert_eq!(
        a.delete("ticket", id).await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    assert_eq!(
        app.ctx("bb").db().get("ticket", id).await.unwrap()["title"],
        "b"
    );
}

#[tokio::test]
async fn a_reference_to_another_tenants_row_is_refused() {
    for level in [IsolationLevel::Row, IsolationLevel::Schema] {
        let app = App::new(HELPDESK, &[("aa", IsolationLevel::Row), ("bb", level)]).await;
        let cust = app
            .ctx("aa")
            .db()
            .insert("customer", &json!({"name": "A"}))
            .await
            .unwrap();
        let err = app
            .ctx("bb")
            .db()
            .insert("ticket", &json!({"title": "x", "customer": cust["id"]}))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::ReferenceNotFound, "{level:?}: {err}");
    }
    // And at the SQL level: the composite key makes it impossible even with RLS out of play
    // (the foreign key is checked by PostgreSQL, not by the query builder).
    let app = App::new(
        HELPDESK,
        &[("aa", IsolationLevel::Row), ("bb", IsolationLevel::Row)],
    )
    .await;
    let cust = app
        .ctx("aa")
        .db()
        .insert("customer", &json!({"name": "A"}))
        .await
        .unwrap();
    let raw = app.raw_runtime().await;
    raw.batch_execute("BEGIN; SELECT set_config('bulkhead.tenant_id', 'bb', true)")
        .await
        .unwrap();
    let err = raw
        .execute(
            "INSERT INTO public.ticket (tenant_id, title, customer) VALUES ('bb', 'x', $1::text::uuid)",
            &[&cust["id"].as_str().unwrap()],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "23503");
}

#[tokio::test]
async fn a_pooled_connection_used_by_a_then_b_shows_b_only_b() {
    let pools = PoolSettings {
        app_pool_size: 1,
        ..PoolSettings::default()
    };
    let app = App::with_pools(
        HELPDESK,
        &[
            ("aa", IsolationLevel::Row),
            ("bb", IsolationLevel::Schema),
            ("cc", IsolationLevel::Row),
        ],
        pools,
    )
    .await;
    app.ctx("aa")
        .db()
        .insert("ticket", &json!({"title": "aa1"}))
        .await
        .unwrap();
    app.ctx("bb")
        .db()
        .insert("ticket", &json!({"title": "bb1"}))
        .await
        .unwrap();
    app.ctx("cc")
        .db()
        .insert("ticket", &json!({"title": "cc1"}))
        .await
        .unwrap();
    // One connection in the pool: every call below reuses it, alternating tenants and levels.
    for t in ["aa", "bb", "cc", "bb", "aa", "cc"] {
        let page = app.ctx(t).db().query("ticket").fetch().await.unwrap();
        let titles: Vec<&str> = page
            .records
            .iter()
            .map(|r| r["title"].as_str().unwrap())
            .collect();
        assert_eq!(titles, vec![format!("{t}1")], "tenant {t}");
    }
}

#[tokio::test]
async fn an_abandoned_transaction_never_reaches_the_next_tenant() {
    let pools = PoolSettings {
        app_pool_size: 1,
        wait: Duration::from_secs(5),
        ..PoolSettings::default()
    };
    let app = App::with_pools(
        HELPDESK,
        &[("aa", IsolationLevel::Row), ("bb", IsolationLevel::Row)],
        pools,
    )
    .await;
    app.ctx("aa")
        .db()
        .insert("ticket", &json!({"title": "a1"}))
        .await
        .unwrap();
    // Tenant a opens a transaction and is abandoned mid-way (a client hung up).
    let ctx_a = app.ctx("aa");
    let abandoned = tokio::time::timeout(Duration::from_millis(300), async {
        ctx_a
            .db()
            .transaction(async |tx| {
                tx.insert("ticket", &json!({"title": "a-uncommitted"}))
                    .await?;
                std::future::pending::<()>().await;
                Ok(())
            })
            .await
    })
    .await;
    assert!(abandoned.is_err(), "the transaction was cut off");
    // The pool's only connection was not returned inside a's transaction: b sees only b.
    app.ctx("bb")
        .db()
        .insert("ticket", &json!({"title": "b1"}))
        .await
        .unwrap();
    let page = app.ctx("bb").db().query("ticket").fetch().await.unwrap();
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.records[0]["title"], "b1");
    // And a's abandoned write never committed.
    assert_eq!(
        app.ctx("aa")
            .db()
            .query("ticket")
            .filter(Filter::eq("title", "a-uncommitted"))
            .count()
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn an_exhausted_pool_fails_with_a_clear_error_after_the_wait() {
    let pools = PoolSettings {
        app_pool_size: 1,
        wait: Duration::from_millis(200),
        ..PoolSettings::default()
    };
    let app = App::with_pools(HELPDESK, &[("aa", IsolationLevel::Row)], pools).await;
    let ctx = app.ctx("aa");
    let (hold_tx, hold_rx) = tokio::sync::oneshot::channel::<()>();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let db = ctx.db();
    let holder = db.transaction(async |tx| {
        tx.query("ticket").count().await?;
        let _ = started_tx.send(());
        let _ = hold_rx.await;
        Ok(())
    });
    let other = async {
        started_rx.await.unwrap();
        let err = ctx.db().query("ticket").count().await.unwrap_err();
        let _ = hold_tx.send(());
        err
    };
    let (held, err) = tokio::join!(holder, other);
    assert_eq!(err.code(), ErrorCode::PoolExhausted, "{err}");
    held.unwrap();
    ctx.db().query("ticket").count().await.unwrap();
}

#[tokio::test]
async fn roles_cannot_reach_other_apps_or_tenant_databases() {
    let x = App::new(HELPDESK, &[("silo", IsolationLevel::Database)]).await;
    let y = App::new(HELPDESK, &[]).await;
    let c = x.cluster;
    // App x's runtime role against app y's database.
    let cfg = c.config(&y.app.database, &x.app.runtime.role, x.runtime_password());
    let err = bulkhead_testkit::connect(&cfg).await.unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err:?}");
    // App x's runtime role against its own database-level tenant's database.
    let cfg = c.config(
        &x.tenant_db("silo"),
        &x.app.runtime.role,
        x.runtime_password(),
    );
    let err = bulkhead_testkit::connect(&cfg).await.unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err:?}");
    // The cross-tenant role cannot enter the silo either.
    let xt = x.app.cross_tenant.as_ref().unwrap();
    let cfg = c.config(
        &x.tenant_db("silo"),
        &xt.role,
        xt.password.as_ref().unwrap().expose(),
    );
    assert_eq!(
        sqlstate(&bulkhead_testkit::connect(&cfg).await.unwrap_err()),
        "42501"
    );
    // The silo's own role cannot enter the app database.
    let silo_role = names::tenant_role(&x.manifest.app, &tid("silo"));
    let cfg = c.config(&x.app.database, &silo_role, &x.tenant_password("silo"));
    assert_eq!(
        sqlstate(&bulkhead_testkit::connect(&cfg).await.unwrap_err()),
        "42501"
    );
    // A wrong password is refused.
    let cfg = c.config(&x.app.database, &x.app.runtime.role, "wrong-password");
    assert_eq!(
        sqlstate(&bulkhead_testkit::connect(&cfg).await.unwrap_err()),
        "28P01"
    );
    // Control: the right credentials work.
    bulkhead_testkit::connect(&c.config(
        &x.tenant_db("silo"),
        &silo_role,
        &x.tenant_password("silo"),
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn a_forged_tenant_setting_cannot_reach_schema_or_database_tenants() {
    let app = App::new(
        HELPDESK,
        &[
            ("s1", IsolationLevel::Schema),
            ("d1", IsolationLevel::Database),
            ("r1", IsolationLevel::Row),
        ],
    )
    .await;
    app.ctx("s1")
        .db()
        .insert("ticket", &json!({"title": "s"}))
        .await
        .unwrap();
    app.ctx("d1")
        .db()
        .insert("ticket", &json!({"title": "d"}))
        .await
        .unwrap();
    // The runtime role forging s1's setting, without assuming s1's role: no privilege on the
    // schema at all.
    let raw = app.raw_runtime().await;
    raw.batch_execute("BEGIN; SELECT set_config('bulkhead.tenant_id', 's1', true)")
        .await
        .unwrap();
    let err = raw
        .query("SELECT * FROM \"t_s1\".ticket", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    raw.batch_execute("ROLLBACK").await.unwrap();
    // The shared tables hold nothing of s1 or d1 whatever the setting says.
    for t in ["s1", "d1"] {
        raw.batch_execute(&format!(
            "BEGIN; SELECT set_config('bulkhead.tenant_id', '{t}', true)"
        ))
        .await
        .unwrap();
        let n: i64 = raw
            .query_one("SELECT count(*) FROM public.ticket", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{t}");
        raw.batch_execute("ROLLBACK").await.unwrap();
    }
    // The silo's own login role, forging another tenant's id in its own database, sees nothing.
    let silo_role = names::tenant_role(&app.manifest.app, &tid("d1"));
    let cfg = app
        .cluster
        .config(&app.tenant_db("d1"), &silo_role, &app.tenant_password("d1"));
    let silo = bulkhead_testkit::connect(&cfg).await.unwrap();
    silo.batch_execute("BEGIN; SELECT set_config('bulkhead.tenant_id', 'r1', true)")
        .await
        .unwrap();
    let n: i64 = silo
        .query_one("SELECT count(*) FROM public.ticket", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn cross_tenant_reads_are_granted_explicit_read_only_and_audited() {
    let app = App::new(
        HELPDESK,
        &[
            ("aa", IsolationLevel::Row),
            ("bb", IsolationLevel::Schema),
            ("cc", IsolationLevel::Database),
        ],
    )
    .await;
    for t in ["aa", "bb", "cc"] {
        app.ctx(t)
            .db()
            .insert("ticket", &json!({"title": format!("{t}-ticket")}))
            .await
            .unwrap();
        app.ctx(t)
            .db()
            .insert("customer", &json!({"name": t}))
            .await
            .unwrap();
    }
    let ctx = app.ctx("aa");
    // Not granted in the manifest: refused before any SQL runs.
    let err = ctx.cross_tenant("customer", "support case 42").unwrap_err();
    assert_eq!(err.code(), ErrorCode::CrossTenantDenied);
    assert_eq!(
        ctx.cross_tenant("country", "x").unwrap_err().code(),
        ErrorCode::CrossTenantDenied
    );
    assert_eq!(
        ctx.cross_tenant("ticket", " ").unwrap_err().code(),
        ErrorCode::BadQuery
    );
    // Granted: rows of row and schema tenants, each with its tenant; never the silo.
    let rows = ctx
        .cross_tenant("ticket", "support case 42")
        .unwrap()
        .fetch()
        .await
        .unwrap();
    let got: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["tenant_id"].as_str().unwrap().into(),
                r["title"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("aa".into(), "aa-ticket".into()),
            ("bb".into(), "bb-ticket".into())
        ]
    );
    // Audited in the same transaction: app, entity, reason, actor, request id.
    let su = app.superuser(&app.app.database).await;
    let audit = su
        .query_one(
            "SELECT app, entity, reason, actor, request_id, tenant_id, row_count FROM public.bulkhead_cross_tenant_audit",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(audit.get::<_, String>(0), app.app_name());
    assert_eq!(audit.get::<_, String>(1), "ticket");
    assert_eq!(audit.get::<_, String>(2), "support case 42");
    assert_eq!(
        audit.get::<_, Option<String>>(3).as_deref(),
        Some("user-of-aa")
    );
    assert_eq!(audit.get::<_, Option<String>>(4).as_deref(), Some("req-1"));
    assert_eq!(audit.get::<_, i32>(6), 2);
    // The cross-tenant role is read-only and reads only granted entities.
    let xt = app.raw_cross().await;
    let err = xt
        .execute("UPDATE public.ticket SET title = 'x'", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    let err = xt
        .query("SELECT * FROM public.customer", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    let err = xt
        .query("SELECT * FROM public.bulkhead_cross_tenant_audit", &[])
        .await
        .unwrap_err();
    assert_eq!(
        sqlstate(&err),
        "42501",
        "the audit log is append-only for it"
    );
    // The runtime role can neither read nor forge the audit log.
    let rt = app.raw_runtime().await;
    let err = rt
        .query("SELECT * FROM public.bulkhead_cross_tenant_audit", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
}

#[tokio::test]
async fn database_tenant_pools_stay_under_the_budget_and_idle_ones_are_evicted() {
    let pools = PoolSettings {
        tenant_pool_size: 2,
        tenant_budget: 4,
        idle: Duration::from_millis(200),
        wait: Duration::from_secs(2),
        ..PoolSettings::default()
    };
    let app = App::with_pools(
        HELPDESK,
        &[
            ("d1", IsolationLevel::Database),
            ("d2", IsolationLevel::Database),
            ("d3", IsolationLevel::Database),
        ],
        pools,
    )
    .await;
    for t in ["d1", "d2"] {
        app.ctx(t).db().query("ticket").count().await.unwrap();
    }
    assert_eq!(app.plane.tenant_pools(), 2);
    // A third tenant fits only by closing the least recently used idle pool.
    app.ctx("d3").db().query("ticket").count().await.unwrap();
    assert_eq!(
        app.plane.tenant_pools(),
        2,
        "budget of 4 connections = 2 pools of 2"
    );
    // With every pool busy, a new tenant pool cannot be made: a clear error, not a hang.
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let hold = async |t: &str| {
        let ctx = app.ctx(t);
        let mut rx = release_rx.clone();
        ctx.db()
            .transaction(async |tx| {
                tx.query("ticket").count().await?;
                let _ = rx.wait_for(|v| *v).await;
                Ok(())
            })
            .await
    };
    let probe = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let err = app
            .ctx("d1")
            .db()
            .query("ticket")
            .count()
            .await
            .unwrap_err();
        let _ = release_tx.send(true);
        err
    };
    let (a, b, err) = tokio::join!(hold("d2"), hold("d3"), probe);
    a.unwrap();
    b.unwrap();
    assert_eq!(err.code(), ErrorCode::PoolExhausted, "{err}");
    // Idle pools are closed after the idle time.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.plane.evict_idle_pools(), 2);
    assert_eq!(app.plane.tenant_pools(), 0);
    app.ctx("d1").db().query("ticket").count().await.unwrap();
}

#[tokio::test]
async fn after_a_rotation_new_connections_use_the_refreshed_password_and_no_request_fails() {
    let pools = PoolSettings {
        app_pool_size: 2,
        ..PoolSettings::default()
    };
    let app = App::with_pools(HELPDESK, &[("aa", IsolationLevel::Row)], pools.clone()).await;
    // The "vault": where the refresher finds the current password.
    let current = std::sync::Arc::new(std::sync::Mutex::new(
        app.app.runtime.password.clone().unwrap(),
    ));
    let plane = app
        .plane_for(app.manifest.clone(), pools)
        .with_password_refresher({
            let current = current.clone();
            std::sync::Arc::new(move || {
                let p = current.lock().unwrap().clone();
                Box::pin(async move { Some(p) })
            })
        })
        .unwrap();
    plane.register_tenant(bulkhead_pg::TenantPlacement {
        tenant: tid("aa"),
        level: IsolationLevel::Row,
        database_password: None,
        suspended: false,
    });
    let ctx = plane.context(&tid("aa"), Default::default()).unwrap();
    ctx.db()
        .insert("ticket", &json!({"title": "before"}))
        .await
        .unwrap();
    // Rotate: the database now refuses the old password for new logins.
    let new = app
        .prov
        .rotate_password(&app.app.runtime.role)
        .await
        .unwrap();
    *current.lock().unwrap() = new;
    // Hold the one open connection in a transaction, so the next request needs a new login.
    let db = ctx.db();
    let mut tx = db.begin().await.unwrap();
    tx.query("ticket").count().await.unwrap();
    let n = ctx.db().query("ticket").count().await.unwrap();
    assert_eq!(
        n, 1,
        "a new connection logged in with the refreshed password"
    );
    tx.commit().await.unwrap();
    for i in 0..10 {
        ctx.db()
            .insert("ticket", &json!({"title": format!("after {i}")}))
            .await
            .unwrap();
    }
    // The old password is refused.
    let cfg = app.cluster.config(
        &app.app.database,
        &app.app.runtime.role,
        app.runtime_password(),
    );
    assert!(bulkhead_testkit::connect(&cfg).await.is_err());
}

/// `EXPLAIN (COSTS OFF)` of `stmt` with `params`, a line each.
async fn plan(
    raw: &bulkhead_testkit::tokio_postgres::Client,
    stmt: &str,
    params: &[bulkhead_pg::sql::Param],
) -> Vec<String> {
    raw.query(
        format!("EXPLAIN (COSTS OFF) {stmt}").as_str(),
        &bulkhead_pg::sql::param_refs(params),
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// What a raw runtime connection carries after a statement: its tenant setting, and how many
/// tickets a bare read sees through it (none, unless a tenant is still set).
async fn carried(raw: &bulkhead_testkit::tokio_postgres::Client) -> (String, i64) {
    let setting: Option<String> = raw
        .query_one("SELECT current_setting('bulkhead.tenant_id', true)", &[])
        .await
        .unwrap()
        .get(0);
    let visible: i64 = raw
        .query_one("SELECT count(*) FROM public.ticket", &[])
        .await
        .unwrap()
        .get(0);
    (setting.unwrap_or_default(), visible)
}

/// Row and database tenants' reads are one statement that sets the tenant in a subquery its
/// scan depends on. On a raw runtime connection: the statement sees its own tenant's rows only,
/// and once it has run the connection carries no tenant — not for a bare read, not for the next
/// self-scoped read of another tenant. Fails when the setting is made session-wide
/// (`set_config(…, false)`) or the read is not scoped by the subquery.
#[tokio::test]
async fn a_self_scoped_read_sees_its_tenant_only_and_leaves_no_tenant_on_its_connection() {
    use bulkhead_pg::sql::{self, QuerySpec};
    let app = App::new(
        HELPDESK,
        &[("aa", IsolationLevel::Row), ("bb", IsolationLevel::Row)],
    )
    .await;
    let mut ids = Vec::new();
    for t in ["aa", "aa", "bb"] {
        let row = app
            .ctx(t)
            .db()
            .insert("ticket", &json!({"title": t}))
            .await
            .unwrap();
        ids.push(row["id"].as_str().unwrap().to_owned());
    }
    let ticket = app.manifest.entity("ticket").unwrap();
    let raw = app.raw_runtime().await;
    for (tenant, want) in [("aa", 2), ("bb", 1), ("aa", 2)] {
        let t = tid(tenant);
        let (list, params) =
            sql::select_sql("public", ticket, Some(&t), &QuerySpec::default()).unwrap();
        let list = sql::self_scoped_read(&list).expect("a read on a tenant entity");
        let rows = raw
            .query(list.as_str(), &sql::param_refs(&params))
            .await
            .unwrap();
        let titles: Vec<String> = rows.iter().map(|r| r.get::<_, String>("title")).collect();
        assert_eq!(titles, vec![tenant.to_owned(); want], "{tenant}");
        assert_eq!(
            carried(&raw).await,
            (String::new(), 0),
            "after {tenant}'s list"
        );
        // The read's scan takes its tenant from the setting row (a parameter of the join), so
        // it cannot run before the row is made; `set_config` is nowhere else.
        let plan = plan(&raw, &list, &params).await;
        assert!(
            plan.iter()
                .any(|l| l.contains("Cond: (tenant_id = bulkhead_scope.tenant)"))
                && plan.iter().filter(|l| l.contains("set_config")).count() == 0,
            "{plan:#?}"
        );
        let (count, params) = sql::count_sql("public", ticket, Some(&t), None).unwrap();
        let count = sql::self_scoped_read(&count).unwrap();
        let n: i64 = raw
            .query_one(count.as_str(), &sql::param_refs(&params))
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, want as i64, "{tenant}");
        // The other tenant's row by id: not there.
        let other = if tenant == "aa" { &ids[2] } else { &ids[0] };
        let (get, params) = sql::get_sql("public", ticket, Some(&t), other, None).unwrap();
        let get = sql::self_scoped_read(&get).unwrap();
        assert!(
            raw.query(get.as_str(), &sql::param_refs(&params))
                .await
                .unwrap()
                .is_empty(),
            "{tenant} reads another tenant's row by id"
        );
        assert_eq!(
            carried(&raw).await,
            (String::new(), 0),
            "after {tenant}'s get"
        );
    }
}

/// Row and database tenants' inserts are one statement that scopes itself: the row takes its
/// tenant from the scope subquery and reference guards name that tenant too. On a raw runtime
/// connection: the row lands in its own tenant only, a guard sees only its tenant's rows and
/// runs per scope row (never as a one-time filter that could run before the setting), a row
/// naming another tenant or written without the setting is refused, and afterwards the
/// connection carries no tenant. Fails when the setting is made session-wide or the guard is
/// an `EXISTS` (flattened into a semi-join on an `InitPlan` of the setting).
#[tokio::test]
async fn a_self_scoped_insert_writes_its_tenant_only_and_leaves_no_tenant_on_its_connection() {
    use bulkhead_pg::sql::{self, Filter, RefCheck};
    let app = App::new(
        HELPDESK,
        &[("aa", IsolationLevel::Row), ("bb", IsolationLevel::Row)],
    )
    .await;
    let mut customers = Vec::new();
    for t in ["aa", "bb"] {
        let row = app
            .ctx(t)
            .db()
            .insert("customer", &json!({"name": format!("{t} corp")}))
            .await
            .unwrap();
        customers.push(row["id"].as_str().unwrap().to_owned());
    }
    let ticket = app.manifest.entity("ticket").unwrap();
    let customer = app.manifest.entity("customer").unwrap();
    let raw = app.raw_runtime().await;
    let guard = |id: &str, name: &str| RefCheck {
        schema: "public".into(),
        target: customer,
        id: id.to_owned(),
        filter: Filter::eq("name", name),
    };
    for (i, tenant) in ["aa", "bb", "aa"].into_iter().enumerate() {
        let t = tid(tenant);
        let (own, other) = if tenant == "aa" {
            (&customers[0], &customers[1])
        } else {
            (&customers[1], &customers[0])
        };
        let record = json!({"title": format!("{tenant} {i}"), "customer": own});
        let checks = [guard(own, &format!("{tenant} corp"))];
        let (insert, params) =
            sql::self_scoped_insert_sql("public", ticket, &record, &t, None, &checks).unwrap();
        let rows = raw
            .query(insert.as_str(), &sql::param_refs(&params))
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "{tenant}: the guard saw its own customer");
        let id: String = rows[0].get("id");
        assert_eq!(
            carried(&raw).await,
            (String::new(), 0),
            "after {tenant}'s insert"
        );
        // The row is the tenant's, and only the tenant's.
        app.ctx(tenant).db().get("ticket", &id).await.unwrap();
        let neighbour = if tenant == "aa" { "bb" } else { "aa" };
        assert!(app.ctx(neighbour).db().get("ticket", &id).await.is_err());
        // The guard's scan depends on the scope row: its condition is the row's tenant, it
        // runs inside a nested loop under the scope, and no join it could precede.
        let plan = plan(&raw, &insert, &params).await;
        assert!(
            plan.iter()
                .any(|l| l.contains("Cond: ((tenant_id = bulkhead_scope.tenant)"))
                && !plan
                    .iter()
                    .any(|l| l.contains("Semi Join") || l.contains("Hash")),
            "{plan:#?}"
        );
        // A guard on the other tenant's customer sees nothing: nothing is written.
        let record = json!({"title": "crossed", "customer": other});
        let checks = [guard(other, &format!("{neighbour} corp"))];
        let (insert, params) =
            sql::self_scoped_insert_sql("public", ticket, &record, &t, None, &checks).unwrap();
        let rows = raw
            .query(insert.as_str(), &sql::param_refs(&params))
            .await
            .unwrap();
        assert!(
            rows.is_empty(),
            "{tenant} referenced another tenant's customer"
        );
        // A row naming another tenant than the scope is refused by the policy.
        let (insert, params) = sql::self_scoped_insert_sql(
            "public",
            ticket,
            &json!({"title": "forged"}),
            &t,
            None,
            &[],
        )
        .unwrap();
        assert!(insert.contains("SELECT bulkhead_scope.tenant,"), "{insert}");
        let forged = insert.replace(
            "SELECT bulkhead_scope.tenant,",
            &format!("SELECT '{neighbour}'::text,"),
        );
        assert!(
            raw.query(forged.as_str(), &sql::param_refs(&params))
                .await
                .is_err()
        );
        assert_eq!(carried(&raw).await, (String::new(), 0));
    }
    // Without the setting, the plain insert is refused: it fails closed.
    let (plain, params) = sql::insert_sql(
        "public",
        ticket,
        &json!({"title": "unscoped"}),
        Some(&tid("aa")),
        None,
        &[],
    )
    .unwrap();
    assert!(
        raw.query(plain.as_str(), &sql::param_refs(&params))
            .await
            .is_err()
    );
    // Three inserts landed: two for aa, one for bb; the refused ones left nothing.
    for (tenant, want) in [("aa", 2), ("bb", 1)] {
        let n = app.ctx(tenant).db().query("ticket").count().await.unwrap();
        assert_eq!(n, want, "{tenant}");
    }
}
