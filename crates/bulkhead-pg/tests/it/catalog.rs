//! The catalog, inspected as the runtime role itself: what it is, what it owns, what it can
//! reach. Each query is one an auditor would run.

use bulkhead_model::IsolationLevel;

use crate::support::{App, HELPDESK};

#[tokio::test]
async fn the_runtime_role_is_unprivileged_and_every_tenant_table_forces_rls() {
    let app = App::new(
        HELPDESK,
        &[
            ("r1", IsolationLevel::Row),
            ("s1", IsolationLevel::Schema),
            ("s2", IsolationLevel::Schema),
        ],
    )
    .await;
    let rt = app.raw_runtime().await;
    let me = rt
        .query_one(
            "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb, rolinherit FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .unwrap();
    for i in 0..4 {
        assert!(
            !me.get::<_, bool>(i),
            "runtime role attribute {i} must be false"
        );
    }
    assert!(
        !me.get::<_, bool>(4),
        "NOINHERIT: tenant roles only via SET ROLE"
    );
    let owned: i64 = rt
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE r.rolname = current_user",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owned, 0, "the runtime role owns nothing");
    let privs = rt
        .query_one(
            "SELECT has_database_privilege(current_user, current_database(), 'CREATE'),
                    has_database_privilege(current_user, current_database(), 'TEMP'),
                    has_schema_privilege(current_user, 'public', 'CREATE')",
            &[],
        )
        .await
        .unwrap();
    for i in 0..3 {
        assert!(!privs.get::<_, bool>(i), "no CREATE/TEMP ({i})");
    }

    // Every table with a tenant_id column, in every schema, forces RLS and has a policy for
    // each command with the tenant condition in USING and WITH CHECK as the command allows.
    let su = app.superuser(&app.app.database).await;
    let tables = su
        .query(
            "SELECT n.nspname, c.relname, c.relrowsecurity, c.relforcerowsecurity
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
             WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND c.relname <> 'bulkhead_cross_tenant_audit'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        tables.len(),
        12,
        "customer, ticket, the search outbox and the key-value store in public, t_s1, t_s2"
    );
    for t in &tables {
        let (schema, name): (String, String) = (t.get(0), t.get(1));
        assert!(
            t.get::<_, bool>(2) && t.get::<_, bool>(3),
            "{schema}.{name}: RLS enabled and forced"
        );
        let policies = su
            .query(
                "SELECT cmd, qual, with_check FROM pg_policies
                 WHERE schemaname = $1 AND tablename = $2 AND policyname LIKE 'bulkhead_tenant_%'",
                &[&schema, &name],
            )
            .await
            .unwrap();
        let mut cmds: Vec<String> = policies.iter().map(|p| p.get(0)).collect();
        cmds.sort();
        assert_eq!(
            cmds,
            ["DELETE", "INSERT", "SELECT", "UPDATE"],
            "{schema}.{name}"
        );
        for p in &policies {
            let cmd: String = p.get(0);
            let qual: Option<String> = p.get(1);
            let check: Option<String> = p.get(2);
            let has = |s: &Option<String>| {
                s.as_deref().is_some_and(|s| {
                    s.contains("current_setting('bulkhead.tenant_id'::text, true)")
                })
            };
            match cmd.as_str() {
                "INSERT" => assert!(has(&check), "{name} insert WITH CHECK"),
                "UPDATE" => assert!(
                    has(&qual) && has(&check),
                    "{name} update USING + WITH CHECK"
                ),
                _ => assert!(has(&qual), "{name} {cmd} USING"),
            }
        }
    }

    // Every foreign key between tenant tables is composite and led by tenant_id.
    let fks = su
        .query(
            "SELECT conname, (SELECT array_agg(a.attname ORDER BY k.ord) FROM unnest(conkey) WITH ORDINALITY k(n, ord)
                              JOIN pg_attribute a ON a.attrelid = conrelid AND a.attnum = k.n)::text[]
             FROM pg_constraint WHERE contype = 'f'",
            &[],
        )
        .await
        .unwrap();
    assert!(!fks.is_empty());
    for fk in &fks {
        let cols: Vec<String> = fk.get(1);
        assert_eq!(cols[0], "tenant_id", "{}: {cols:?}", fk.get::<_, String>(0));
    }

    // Nothing reachable by the runtime role runs with someone else's rights.
    let definers: i64 = rt
        .query_one(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND has_function_privilege(current_user, p.oid, 'EXECUTE')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(definers, 0, "no SECURITY DEFINER function is reachable");
    let views: i64 = rt
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND has_table_privilege(current_user, c.oid, 'SELECT')
               AND NOT coalesce(c.reloptions @> ARRAY['security_invoker=true'], false)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(views, 0, "no view without security_invoker is reachable");
}
