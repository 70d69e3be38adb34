//! Rows written straight to JSON text: the same bytes `serde_json` gives the record of
//! [`super::record_from_row`] with the caller's hidden fields removed, without building that
//! record. A listed row as a `serde_json` value costs a map, an allocated key per field and an
//! allocated string per text value, then as much again to drop it and to serialise it
//! (≈ 12,000 instructions under callgrind); written here it borrows the row's text.

use std::time::SystemTime;

use bulkhead_model::Entity;
use serde::Serialize;
use tokio_postgres::Row;

use super::columns::{Kind, shown};
use super::rows::{decode_error as bad, rfc3339_fixed};
use crate::error::{Error, Result};

/// Writes rows of [`super::select_list`] (without the tenant column) of one entity as JSON
/// records, keys in the order a `serde_json` map keeps them (sorted), hidden fields left out.
pub struct RecordWriter {
    /// Per written key: `"name":`, the row's column, how to read it.
    columns: Vec<(String, usize, Kind)>,
}

impl std::fmt::Debug for RecordWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordWriter")
            .field("keys", &self.columns.len())
            .finish()
    }
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("writing a record: {e}"))
}

fn put(out: &mut Vec<u8>, v: &impl Serialize) -> Result<()> {
    serde_json::to_writer(out, v).map_err(internal)
}

fn put_time(out: &mut Vec<u8>, t: SystemTime) {
    out.push(b'"');
    match rfc3339_fixed(t) {
        Ok(fixed) => out.extend_from_slice(&fixed),
        Err(text) => out.extend_from_slice(text.as_bytes()),
    }
    out.push(b'"');
}

impl RecordWriter {
    pub fn new(entity: &Entity, hidden: &[String]) -> Result<Self> {
        let columns = shown(entity, hidden)
            .into_iter()
            .map(|c| {
                let key = serde_json::to_string(c.name).map_err(internal)?;
                Ok((format!("{key}:"), c.index, c.kind))
            })
            .collect::<Result<_>>()?;
        Ok(Self { columns })
    }

    /// Appends the JSON record of `row` to `out`.
    pub fn write(&self, row: &Row, out: &mut Vec<u8>) -> Result<()> {
        out.push(b'{');
        for (n, (key, i, kind)) in self.columns.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(key.as_bytes());
            let i = *i;
            match kind {
                Kind::Id => put(out, &row.try_get::<_, &str>(i).map_err(bad)?)?,
                Kind::Stamp => put_time(out, row.try_get(i).map_err(bad)?),
                Kind::Timestamp => match row.try_get::<_, Option<SystemTime>>(i).map_err(bad)? {
                    Some(t) => put_time(out, t),
                    None => out.extend_from_slice(b"null"),
                },
                Kind::Int => put(out, &row.try_get::<_, Option<i32>>(i).map_err(bad)?)?,
                Kind::Bigint => put(out, &row.try_get::<_, Option<i64>>(i).map_err(bad)?)?,
                Kind::Bool => put(out, &row.try_get::<_, Option<bool>>(i).map_err(bad)?)?,
                Kind::Json => put(
                    out,
                    &row.try_get::<_, Option<serde_json::Value>>(i)
                        .map_err(bad)?,
                )?,
                Kind::Text => put(out, &row.try_get::<_, Option<&str>>(i).map_err(bad)?)?,
            }
        }
        out.push(b'}');
        Ok(())
    }
}
