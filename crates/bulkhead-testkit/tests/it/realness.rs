use bulkhead_testkit::pg;

#[tokio::test]
async fn a_wrong_password_is_refused() -> anyhow::Result<()> {
    let db = pg()?.fresh_db().await?;
    let err = db
        .connect_as("postgres", "not-the-password")
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a wrong password was accepted"))?;
    let db_err = err.as_db_error().map(|e| e.code().code().to_owned());
    assert_eq!(db_err.as_deref(), Some("28P01"), "{err}");
    // And the right one works, so the refusal is about the password.
    db.connect_as("postgres", pg()?.superuser_password())
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_role_without_connect_cannot_reach_another_roles_database() -> anyhow::Result<()> {
    let db = pg()?.fresh_db().await?;
    let admin = db.superuser().await?;
    let other = format!("{}_bob", db.name());
    for sql in [
        format!("CREATE ROLE {}_alice LOGIN PASSWORD 'alice-pw'", db.name()),
        format!("CREATE ROLE {}_bob LOGIN PASSWORD 'bob-pw'", db.name()),
        format!("CREATE DATABASE {other} OWNER {}_bob", db.name()),
        format!("REVOKE CONNECT ON DATABASE {other} FROM PUBLIC"),
    ] {
        admin.batch_execute(&sql).await?;
    }
    let cluster = pg()?;
    let alice = cluster.config(&other, &format!("{}_alice", db.name()), "alice-pw");
    let err = bulkhead_testkit::connect(&alice)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("alice connected to bob's database"))?;
    let db_err = err.as_db_error().expect("a database error");
    assert_eq!(db_err.code().code(), "42501", "{db_err}");
    assert!(
        db_err.message().contains("permission denied for database"),
        "unexpected error: {db_err}"
    );
    // Bob, the owner, can connect: the refusal is about CONNECT, not a broken setup.
    let bob = cluster.config(&other, &format!("{}_bob", db.name()), "bob-pw");
    let client = bulkhead_testkit::connect(&bob).await?;
    let row = client.query_one("SELECT current_user::text", &[]).await?;
    assert_eq!(row.get::<_, String>(0), format!("{}_bob", db.name()));
    Ok(())
}

#[tokio::test]
async fn each_test_gets_its_own_empty_database() -> anyhow::Result<()> {
    let a = pg()?.fresh_db().await?;
    let b = pg()?.fresh_db().await?;
    assert_ne!(a.name(), b.name());
    let client = a.superuser().await?;
    client
        .batch_execute("CREATE TABLE only_in_a (x int)")
        .await?;
    let client = b.superuser().await?;
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(n, 0);
    Ok(())
}
