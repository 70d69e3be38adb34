//! A changed manifest migrates every tenant schema and database the same way.

use bulkhead_model::{ErrorCode, IsolationLevel};
use bulkhead_pg::migrate::Step;
use serde_json::json;

use crate::support::{App, HELPDESK, manifest};

#[tokio::test]
async fn additive_changes_apply_everywhere_and_destructive_ones_need_the_flag() {
    let app = App::new(
        HELPDESK,
        &[
            ("r1", IsolationLevel::Row),
            ("s1", IsolationLevel::Schema),
            ("d1", IsolationLevel::Database),
        ],
    )
    .await;
    for t in ["r1", "s1", "d1"] {
        app.ctx(t)
            .db()
            .insert("ticket", &json!({"title": "before"}))
            .await
            .unwrap();
    }
    let name = app.app_name().to_owned();
    let v2_yaml = HELPDESK.replace(
        "      done: bool\n",
        "      done: bool\n      severity: { type: int, default: 1, index: true }\n",
    ) + "";
    let v2 = manifest(
        &v2_yaml.replace(
            "  country:\n",
            "  tag:\n    fields:\n      label: text\n  country:\n",
        ),
        &name,
    );

    let plan = app.prov.plan(&v2).await.unwrap();
    let described: Vec<String> = plan.steps.iter().map(Step::describe).collect();
    assert_eq!(
        described,
        ["add field ticket.severity", "create entity tag"]
    );

    let reports = app.prov.migrate(&v2, &app.tenants, false).await.unwrap();
    assert_eq!(reports.len(), 3, "shared, schema s1, database d1");
    for (target, result) in &reports {
        let report = result.as_ref().unwrap_or_else(|e| panic!("{target}: {e}"));
        assert_eq!(report.version, 2, "{target}");
    }
    // New code (v2) runs on every level; old rows got the default.
    let plane = app.plane_for(v2.clone(), Default::default());
    app.register_all(&plane);
    for (t, _) in &app.tenants {
        let db = plane.context(t, Default::default()).unwrap();
        let page = db.db().query("ticket").fetch().await.unwrap();
        assert_eq!(page.records[0]["severity"], 1, "{t}");
        db.db()
            .insert("tag", &json!({"label": "new"}))
            .await
            .unwrap();
    }

    // Dropping a field is destructive: refused without the flag, and nothing changes.
    let v3 = manifest(&v2_yaml.replace("      big: bigint\n", ""), &name);
    let reports = app.prov.migrate(&v3, &app.tenants, false).await.unwrap();
    for (target, result) in &reports {
        let err = result.as_ref().unwrap_err();
        assert_eq!(err.code(), ErrorCode::DestructiveChange, "{target}");
        assert!(err.to_string().contains("drop field ticket.big"), "{err}");
    }
    let reports = app.prov.migrate(&v3, &app.tenants, true).await.unwrap();
    for (target, result) in &reports {
        assert_eq!(result.as_ref().unwrap().version, 3, "{target}");
    }
    let su = app.superuser(&app.app.database).await;
    let versions: i64 = su
        .query_one("SELECT count(*) FROM \"t_s1\".bulkhead_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(versions, 3);
}

#[tokio::test]
async fn a_failing_migration_changes_nothing() {
    let app = App::new(HELPDESK, &[("r1", IsolationLevel::Row)]).await;
    app.ctx("r1")
        .db()
        .insert("ticket", &json!({"title": "not a number"}))
        .await
        .unwrap();
    let name = app.app_name().to_owned();
    // Changing title to int cannot convert the existing row: the whole migration rolls back.
    let bad = manifest(
        &HELPDESK.replace(
            "title: { type: text, required: true }",
            "title: { type: int, required: true }",
        ),
        &name,
    );
    let reports = app.prov.migrate(&bad, &app.tenants, true).await.unwrap();
    assert!(reports[0].1.is_err());
    let page = app.ctx("r1").db().query("ticket").fetch().await.unwrap();
    assert_eq!(page.records[0]["title"], "not a number");
    assert!(
        app.prov
            .plan(&bad)
            .await
            .unwrap()
            .steps
            .iter()
            .any(|s| s.is_destructive())
    );
}

#[tokio::test]
async fn a_tenant_exports_as_json_lines_from_every_level_and_only_its_rows() {
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
    for t in ["r1", "r2", "s1", "d1"] {
        let ctx = app.ctx(t);
        let c = ctx
            .db()
            .insert("customer", &json!({"name": format!("{t} customer")}))
            .await
            .unwrap();
        ctx.db()
            .insert(
                "ticket",
                &json!({"title": format!("{t} ticket"), "customer": c["id"]}),
            )
            .await
            .unwrap();
    }
    for (t, level) in &app.tenants {
        let lines = app
            .prov
            .export_tenant(&app.manifest, t, *level)
            .await
            .unwrap();
        assert_eq!(lines.len(), 2, "{t}");
        for line in &lines {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["record"]["tenant_id"], t.as_str(), "{line}");
            assert!(line.contains(&format!("{t} ")), "{line}");
        }
    }
}
