//! The append-only, hash-chained audit log.
//!
//! Each row's `hash` is SHA-256 over the previous row's hash and this row's canonical content
//! (sequence, time, actor, action, target, detail). Changing a row breaks its own hash;
//! deleting one breaks the sequence and the next row's link; [`verify`] reports both. A
//! trigger refuses UPDATE and DELETE so that tampering needs deliberate privilege — and is then
//! still detected. The chain head ([`Verification::head`]) can be copied elsewhere to detect
//! truncation of the newest rows.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_postgres::GenericClient;

use crate::{Error, Result, db};

pub(crate) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS bulkhead_control.audit_log (
  seq bigint PRIMARY KEY,
  at timestamptz NOT NULL DEFAULT now(),
  actor text NOT NULL,
  action text NOT NULL,
  target text NOT NULL,
  detail jsonb NOT NULL DEFAULT '{}',
  prev_hash bytea NOT NULL,
  hash bytea NOT NULL
);
CREATE OR REPLACE FUNCTION bulkhead_control.audit_log_is_append_only() RETURNS trigger
  LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'bulkhead_control.audit_log is append-only';
END $$;
DROP TRIGGER IF EXISTS audit_log_append_only ON bulkhead_control.audit_log;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE
  ON bulkhead_control.audit_log FOR EACH STATEMENT
  EXECUTE FUNCTION bulkhead_control.audit_log_is_append_only();
"#;

/// The hash of nothing: the first row's `prev_hash`.
pub const GENESIS: [u8; 32] = [0; 32];

/// One audit record to append.
#[derive(Debug, Clone, Serialize)]
pub struct Entry<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub detail: Value,
}

/// A stored audit record.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Record {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: Value,
    pub hash: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn chain_hash(
    prev: &[u8],
    seq: i64,
    at: &str,
    actor: &str,
    action: &str,
    target: &str,
    detail: &Value,
) -> Vec<u8> {
    // Length-prefixed fields: no two different records share an encoding.
    let mut h = Sha256::new();
    h.update(prev);
    h.update(seq.to_be_bytes());
    for field in [at, actor, action, target, &detail.to_string()] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    h.finalize().to_vec()
}

/// The canonical text of a timestamp, as hashed and as returned.
const AT_TEXT: &str = "to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')";

/// Appends an entry, serialised with every other appender by a row-level lock on the chain
/// head (an advisory lock in the same transaction).
pub async fn append(client: &mut tokio_postgres::Client, entry: &Entry<'_>) -> Result<Record> {
    let tx = client.transaction().await.map_err(db)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('bulkhead.audit'))",
        &[],
    )
    .await
    .map_err(db)?;
    let last = tx
        .query_opt(
            "SELECT seq, hash FROM bulkhead_control.audit_log ORDER BY seq DESC LIMIT 1",
            &[],
        )
        .await
        .map_err(db)?;
    let (seq, prev) = match last {
        Some(row) => (row.get::<_, i64>(0) + 1, row.get::<_, Vec<u8>>(1)),
        None => (1, GENESIS.to_vec()),
    };
    let at: String = tx
        .query_one(
            &format!("SELECT {} FROM (SELECT now() AS at) t", AT_TEXT),
            &[],
        )
        .await
        .map_err(db)?
        .get(0);
    let hash = chain_hash(
        &prev,
        seq,
        &at,
        entry.actor,
        entry.action,
        entry.target,
        &entry.detail,
    );
    tx.execute(
        "INSERT INTO bulkhead_control.audit_log (seq, at, actor, action, target, detail, prev_hash, hash)
         VALUES ($1, $2::text::timestamptz, $3, $4, $5, $6, $7, $8)",
        &[&seq, &at, &entry.actor, &entry.action, &entry.target, &entry.detail, &prev, &hash],
    )
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(Record {
        seq,
        at,
        actor: entry.actor.to_owned(),
        action: entry.action.to_owned(),
        target: entry.target.to_owned(),
        detail: entry.detail.clone(),
        hash: hex(&hash),
    })
}

/// The newest `limit` records, newest first.
pub async fn list(client: &impl GenericClient, limit: i64) -> Result<Vec<Record>> {
    let rows = client
        .query(
            &format!(
                "SELECT seq, {AT_TEXT}, actor, action, target, detail, hash
                 FROM bulkhead_control.audit_log ORDER BY seq DESC LIMIT $1"
            ),
            &[&limit],
        )
        .await
        .map_err(db)?;
    Ok(rows
        .iter()
        .map(|r| Record {
            seq: r.get(0),
            at: r.get(1),
            actor: r.get(2),
            action: r.get(3),
            target: r.get(4),
            detail: r.get(5),
            hash: hex(&r.get::<_, Vec<u8>>(6)),
        })
        .collect())
}

/// One break in the chain.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    pub seq: i64,
    pub problem: String,
}

/// The result of walking the chain.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Verification {
    pub records: i64,
    /// The newest hash (anchor it elsewhere to detect truncation of the tail).
    pub head: String,
    pub problems: Vec<Problem>,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Recomputes every hash and link.
pub async fn verify(client: &impl GenericClient) -> Result<Verification> {
    let rows = client
        .query(
            &format!(
                "SELECT seq, {AT_TEXT}, actor, action, target, detail, prev_hash, hash
                 FROM bulkhead_control.audit_log ORDER BY seq"
            ),
            &[],
        )
        .await
        .map_err(db)?;
    let mut problems = Vec::new();
    let mut expected_prev = GENESIS.to_vec();
    let mut expected_seq = 1i64;
    for r in &rows {
        let seq: i64 = r.get(0);
        let prev: Vec<u8> = r.get(6);
        let stored: Vec<u8> = r.get(7);
        if seq != expected_seq {
            problems.push(Problem {
                seq,
                problem: format!("records {expected_seq}..{} are missing", seq - 1),
            });
        }
        if prev != expected_prev {
            problems.push(Problem {
                seq,
                problem: "does not link to the previous record (a record was removed or changed)"
                    .into(),
            });
        }
        let detail: Value = r.get(5);
        let computed = chain_hash(&prev, seq, r.get(1), r.get(2), r.get(3), r.get(4), &detail);
        if computed != stored {
            problems.push(Problem {
                seq,
                problem: "content does not match its hash (the record was changed)".into(),
            });
        }
        expected_prev = stored;
        expected_seq = seq + 1;
    }
    Ok(Verification {
        records: i64::try_from(rows.len()).map_err(|e| Error::Internal(e.to_string()))?,
        head: hex(&expected_prev),
        problems,
    })
}
