//! The platform schema's versions: each change to `bulkhead_control` is a numbered migration,
//! applied once and recorded in `bulkhead_control.schema_history` by refinery. A database that
//! holds a version this binary does not know (a newer Bulkhead ran against it) is refused
//! before anything is read or written. Version 1 is the schema as it was before versions were
//! kept — idempotent, so an older installation simply records it.
//!
//! A change to the schema is a new version appended to [`MIGRATIONS`], never an edit of an
//! applied one: refinery refuses a database whose recorded migration differs from the
//! binary's (its checksum), and a test pins version 1's checksum.

use refinery::{Migration, Runner};

use crate::{Error, Result, audit, registry};

/// The history table (in the control-plane schema).
pub const HISTORY: &str = "bulkhead_control.schema_history";

/// `pg_advisory_lock` key: one process migrates at a time.
const LOCK: i64 = 0x6275_6c6b_6865_6164; // "bulkhead"

/// The migrations, in order: (refinery name `V<n>__<what>`, SQL).
fn migrations() -> Vec<(String, String)> {
    vec![(
        "V1__control_plane".to_owned(),
        format!("{}\n{}", registry::SCHEMA, audit::SCHEMA),
    )]
}

/// The newest version this binary knows.
pub fn known_version() -> i32 {
    i32::try_from(migrations().len()).unwrap_or(i32::MAX)
}

fn runner() -> Result<Runner> {
    let list = migrations()
        .iter()
        .map(|(name, sql)| Migration::unapplied(name, sql))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Internal(format!("the platform's migrations: {e}")))?;
    let mut runner = Runner::new(&list)
        .set_abort_missing(true)
        .set_abort_divergent(true);
    runner.set_migration_table_name(HISTORY);
    Ok(runner)
}

/// Brings the platform schema to [`known_version`]; refuses a newer one.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<()> {
    let db = crate::db;
    client
        .batch_execute(
            "SET client_min_messages = warning; CREATE SCHEMA IF NOT EXISTS bulkhead_control",
        )
        .await
        .map_err(db)?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK])
        .await
        .map_err(db)?;
    let result = run(client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK])
        .await
        .map_err(db);
    result.and(unlocked.map(drop))
}

async fn run(client: &mut tokio_postgres::Client) -> Result<()> {
    let runner = runner()?;
    // Checked before refinery runs, for an error that says what to do (refinery makes the
    // table on its first run).
    let kept = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&HISTORY])
        .await
        .map_err(crate::db)?
        .get::<_, bool>(0);
    let applied = if kept {
        runner
            .get_applied_migrations_async(client)
            .await
            .map_err(|e| {
                Error::Internal(format!(
                    "reading {HISTORY}: {}",
                    bulkhead_model::with_causes(&e)
                ))
            })?
    } else {
        Vec::new()
    };
    if let Some(newest) = applied.iter().map(|m| m.version()).max()
        && i64::from(newest) > i64::from(known_version())
    {
        return Err(Error::Conflict(format!(
            "the platform database is at schema version {newest}, newer than this binary knows ({}): a newer Bulkhead has run against it; run that version (or newer)",
            known_version()
        )));
    }
    runner.run_async(client).await.map_err(|e| {
        Error::Internal(format!(
            "migrating the platform schema: {}",
            bulkhead_model::with_causes(&e)
        ))
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An applied migration is never edited (refinery would refuse every installation that ran
    /// it): a schema change is a new version. Changing version 1 fails this test on purpose.
    #[test]
    fn version_one_is_what_installations_recorded() {
        let (name, sql) = &migrations()[0];
        let m = Migration::unapplied(name, sql).unwrap();
        assert_eq!(m.version(), 1);
        assert_eq!(
            m.checksum(),
            PINNED_V1,
            "edit a new migration, not version 1"
        );
    }

    const PINNED_V1: u64 = 17_205_930_461_236_002_069;
}
