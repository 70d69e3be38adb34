//! Rows read straight into the caller's own `serde` type (`Query::fetch_as`,
//! `TenantDb::get_as`): a `serde` deserializer over a row of [`super::select_list`] that hands
//! each shown column to the type as it decodes, so a listed row costs what decoding it by hand
//! costs — no `serde_json` map, no allocated key, text borrowed from the row until the type
//! copies it. The type sees the same keys and values as the JSON record of
//! [`super::record_from_row`] (timestamps as RFC 3339 text, `null` for an empty field, hidden
//! fields absent); deserialising into `serde_json::Value` gives that record exactly.

use std::time::SystemTime;

use bulkhead_model::Entity;
use serde::de::value::{Error as DeError, StrDeserializer};
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde::forward_to_deserialize_any;
use tokio_postgres::Row;

use super::columns::{Column, Kind, shown};
use super::rows::rfc3339_fixed;
use crate::error::{Error, Result};

/// Reads rows of one entity, without the caller's hidden fields, into any
/// `serde::Deserialize` type.
#[derive(Debug)]
pub struct RecordReader<'e> {
    columns: Vec<Column<'e>>,
}

impl<'e> RecordReader<'e> {
    pub fn new(entity: &'e Entity, hidden: &[String]) -> Self {
        Self {
            columns: shown(entity, hidden),
        }
    }

    /// `row` as a `T`. A `T` that does not fit the record (a missing field, a wrong type) is
    /// the caller's error, reported with serde's message.
    pub fn read<T: DeserializeOwned>(&self, row: &Row) -> Result<T> {
        T::deserialize(RowRecord {
            row,
            columns: &self.columns,
        })
        .map_err(|e| Error::Internal(format!("reading a record into the caller's type: {e}")))
    }
}

/// One row as a map of its shown columns.
struct RowRecord<'r> {
    row: &'r Row,
    columns: &'r [Column<'r>],
}

impl<'de> de::Deserializer<'de> for RowRecord<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_map(Fields {
            row: self.row,
            columns: self.columns.iter(),
            next: None,
        })
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

struct Fields<'r> {
    row: &'r Row,
    columns: std::slice::Iter<'r, Column<'r>>,
    /// The column whose key was read last, its value next.
    next: Option<&'r Column<'r>>,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some(column) = self.columns.next() else {
            return Ok(None);
        };
        self.next = Some(column);
        let key: StrDeserializer<'_, DeError> = column.name.into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let column = self
            .next
            .take()
            .ok_or_else(|| de::Error::custom("a value was asked for before its key"))?;
        seed.deserialize(cell(self.row, column)?)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.columns.len())
    }
}

/// One decoded column.
enum Cell<'r> {
    Null,
    Text(&'r str),
    Time(SystemTime),
    Int(i64),
    Bool(bool),
    Json(serde_json::Value),
}

fn cell<'r>(row: &'r Row, column: &Column<'_>) -> Result<Cell<'r>, DeError> {
    fn bad(e: tokio_postgres::Error) -> DeError {
        de::Error::custom(format!("decoding a row: {e}"))
    }
    let i = column.index;
    let or_null = |v: Option<Cell<'r>>| v.unwrap_or(Cell::Null);
    Ok(match column.kind {
        Kind::Id => Cell::Text(row.try_get(i).map_err(bad)?),
        Kind::Stamp => Cell::Time(row.try_get(i).map_err(bad)?),
        Kind::Timestamp => or_null(row.try_get::<_, Option<_>>(i).map_err(bad)?.map(Cell::Time)),
        Kind::Int => or_null(
            row.try_get::<_, Option<i32>>(i)
                .map_err(bad)?
                .map(|v| Cell::Int(v.into())),
        ),
        Kind::Bigint => or_null(
            row.try_get::<_, Option<i64>>(i)
                .map_err(bad)?
                .map(Cell::Int),
        ),
        Kind::Bool => or_null(row.try_get::<_, Option<_>>(i).map_err(bad)?.map(Cell::Bool)),
        Kind::Json => or_null(row.try_get::<_, Option<_>>(i).map_err(bad)?.map(Cell::Json)),
        Kind::Text => or_null(row.try_get::<_, Option<_>>(i).map_err(bad)?.map(Cell::Text)),
    })
}

impl<'de> de::Deserializer<'de> for Cell<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self {
            // As `serde_json::Value` gives `null` to a visitor.
            Cell::Null => visitor.visit_unit(),
            Cell::Text(s) => visitor.visit_str(s),
            Cell::Time(t) => match rfc3339_fixed(t) {
                Ok(fixed) => match std::str::from_utf8(&fixed) {
                    Ok(s) => visitor.visit_str(s),
                    Err(e) => Err(de::Error::custom(e)),
                },
                Err(text) => visitor.visit_string(text),
            },
            Cell::Int(n) => visitor.visit_i64(n),
            Cell::Bool(b) => visitor.visit_bool(b),
            Cell::Json(v) => {
                de::Deserializer::deserialize_any(v, visitor).map_err(de::Error::custom)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self {
            Cell::Null => visitor.visit_none(),
            cell => visitor.visit_some(cell),
        }
    }

    /// A text column into a Rust `enum` of unit variants (an `enum` field), as `serde_json`
    /// reads a string into one.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self {
            Cell::Text(s) => visitor.visit_enum(s.into_deserializer()),
            Cell::Json(v) => de::Deserializer::deserialize_enum(v, name, variants, visitor)
                .map_err(de::Error::custom),
            cell => cell.deserialize_any(visitor),
        }
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct newtype_struct seq tuple tuple_struct map struct
        identifier ignored_any
    }
}
