//! Reading rows back: the select list of an entity and the JSON record of a row (timestamps
//! formatted here, in RFC 3339 UTC with microseconds).

use std::time::{SystemTime, UNIX_EPOCH};

use bulkhead_model::names::quote_ident as q;
use bulkhead_model::{Entity, FieldType};
use serde_json::{Map, Value};
use tokio_postgres::Row;

use crate::error::{Error, Result};

/// A column as the select list reads it (text for types without a plain Rust mapping).
pub(crate) fn read_expr(name: &str, ty: &FieldType) -> String {
    let col = q(name);
    match ty {
        FieldType::Numeric | FieldType::Date | FieldType::Uuid | FieldType::Ref { .. } => {
            format!("{col}::text")
        }
        _ => col,
    }
}

/// The select list for an entity, in a fixed order that [`record_from_row`] reads back.
pub fn select_list(entity: &Entity, with_tenant: bool) -> String {
    let mut cols = Vec::new();
    if with_tenant {
        cols.push(q("tenant_id"));
    }
    cols.push(read_expr("id", &FieldType::Uuid));
    cols.push(read_expr("created_at", &FieldType::Timestamp));
    cols.push(read_expr("updated_at", &FieldType::Timestamp));
    for f in &entity.fields {
        cols.push(read_expr(f.name.as_str(), &f.ty));
    }
    cols.join(", ")
}

/// A column that did not decode as its field's type (the cause kept).
pub(super) fn decode_error(e: tokio_postgres::Error) -> Error {
    let cause = std::error::Error::source(&e)
        .map(ToString::to_string)
        .unwrap_or_default();
    Error::Internal(format!("decoding a row: {e}: {cause}"))
}

/// Reads a row produced by [`select_list`] into a JSON record.
pub fn record_from_row(entity: &Entity, row: &Row, with_tenant: bool) -> Result<Value> {
    let mut out = Vec::with_capacity(entity.fields.len() + 4);
    let mut i = 0;
    let bad = decode_error;
    if with_tenant {
        out.push((
            "tenant_id".to_owned(),
            Value::String(row.try_get(i).map_err(bad)?),
        ));
        i += 1;
    }
    let id: String = row.try_get(i).map_err(bad)?;
    out.push(("id".to_owned(), Value::String(id)));
    i += 1;
    for name in ["created_at", "updated_at"] {
        let v: SystemTime = row.try_get(i).map_err(bad)?;
        out.push((name.to_owned(), Value::String(rfc3339(v))));
        i += 1;
    }
    for f in &entity.fields {
        out.push((f.name.to_string(), decode(row, i, &f.ty)?));
        i += 1;
    }
    // Collected whole: the map is built from the sorted pairs at once (`BTreeMap::from_iter`
    // sorts, then fills its nodes in order) instead of one search and insert per field.
    Ok(Value::Object(Map::from_iter(out)))
}

/// One field of a row of [`select_list`] (without the tenant column) as its record holds it:
/// what a cursor needs of the page's last row, without decoding the rest.
pub fn field_from_row(entity: &Entity, row: &Row, name: &str) -> Result<Value> {
    let (i, ty) = match name {
        "id" => (0, &FieldType::Uuid),
        "created_at" => (1, &FieldType::Timestamp),
        "updated_at" => (2, &FieldType::Timestamp),
        _ => entity
            .fields
            .iter()
            .position(|f| f.name.as_str() == name)
            .map(|n| (3 + n, &entity.fields[n].ty))
            .ok_or_else(|| Error::UnknownField {
                entity: entity.name.to_string(),
                field: name.to_owned(),
            })?,
    };
    decode(row, i, ty)
}

/// Column `i` of `row`, of a field of type `ty`, as a JSON value (`null` when empty).
fn decode(row: &Row, i: usize, ty: &FieldType) -> Result<Value> {
    let bad = decode_error;
    let v = match ty {
        FieldType::Timestamp => row
            .try_get::<_, Option<SystemTime>>(i)
            .map_err(bad)?
            .map(|t| Value::String(rfc3339(t))),
        FieldType::Int => row
            .try_get::<_, Option<i32>>(i)
            .map_err(bad)?
            .map(Value::from),
        FieldType::Bigint => row
            .try_get::<_, Option<i64>>(i)
            .map_err(bad)?
            .map(Value::from),
        FieldType::Bool => row
            .try_get::<_, Option<bool>>(i)
            .map_err(bad)?
            .map(Value::from),
        FieldType::Json => row.try_get::<_, Option<Value>>(i).map_err(bad)?,
        _ => row
            .try_get::<_, Option<String>>(i)
            .map_err(bad)?
            .map(Value::from),
    };
    Ok(v.unwrap_or(Value::Null))
}

/// Formats a time as RFC 3339 in UTC with microseconds (`2026-11-23T10:00:00.000000Z`).
/// Timestamps are read in binary and formatted here rather than by `to_char` in SQL, which
/// would run for every row a sort touches.
pub fn rfc3339(t: SystemTime) -> String {
    match rfc3339_fixed(t) {
        // Only ASCII digits and separators were written.
        Ok(fixed) => std::str::from_utf8(&fixed).unwrap_or_default().to_owned(),
        Err(text) => text,
    }
}

/// [`rfc3339`] in its fixed 27 bytes for years 0–9999 (no allocation), else the text.
pub(crate) fn rfc3339_fixed(t: SystemTime) -> std::result::Result<[u8; 27], String> {
    let (secs, micros) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_micros(),
        ),
        Err(e) => {
            let d = e.duration();
            let mut secs = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            let mut micros = d.subsec_micros();
            if micros > 0 {
                secs -= 1;
                micros = 1_000_000 - micros;
            }
            (secs, micros)
        }
    };
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (hour, minute, second) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    if !(0..=9999).contains(&year) {
        return Err(format!(
            "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{micros:06}Z"
        ));
    }
    // Digits written by hand: `format!` with widths cost ~3,000 instructions per timestamp
    // (callgrind), two per row of every list; this is ~100.
    let mut out = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut n: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    let field = |v: i64| u64::try_from(v).unwrap_or(0);
    put(0, 4, field(year));
    put(5, 2, field(month));
    put(8, 2, field(day));
    put(11, 2, field(hour));
    put(14, 2, field(minute));
    put(17, 2, field(second));
    put(20, 6, u64::from(micros));
    Ok(out)
}
