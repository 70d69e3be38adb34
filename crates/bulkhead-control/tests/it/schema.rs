//! The platform schema's versions against a real PostgreSQL.

use bulkhead_control::schema::{HISTORY, known_version};
use bulkhead_testkit::pg;

async fn versions(c: &bulkhead_testkit::tokio_postgres::Client) -> Vec<i32> {
    c.query(
        &format!("SELECT version FROM {HISTORY} ORDER BY version"),
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test]
async fn the_platform_schema_is_versioned_and_a_newer_one_is_refused() {
    let db = pg().unwrap().fresh_db().await.unwrap();
    let mut c = db.superuser().await.unwrap();
    bulkhead_control::migrate(&mut c).await.unwrap();
    bulkhead_control::migrate(&mut c).await.unwrap();
    let known: Vec<i32> = (1..=known_version()).collect();
    assert_eq!(versions(&c).await, known, "each version recorded once");
    // An installation from before versions were kept: its schema, no history. It records them.
    c.batch_execute(&format!("DROP TABLE {HISTORY}"))
        .await
        .unwrap();
    bulkhead_control::migrate(&mut c).await.unwrap();
    assert_eq!(versions(&c).await, known);
    // A newer Bulkhead ran here: refused, with what to do, and nothing changed.
    let newer = known_version() + 1;
    c.execute(
        &format!(
            "INSERT INTO {HISTORY} (version, name, applied_on, checksum) VALUES ($1, 'from_the_future', '2027-01-01T00:00:00Z', '1')"
        ),
        &[&newer],
    )
    .await
    .unwrap();
    let err = bulkhead_control::migrate(&mut c)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("schema version {newer}")) && err.contains("newer Bulkhead"),
        "{err}"
    );
    let mut expected = known.clone();
    expected.push(newer);
    assert_eq!(versions(&c).await, expected);
}
