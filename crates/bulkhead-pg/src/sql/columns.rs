//! Which columns of a row of [`super::select_list`] (without the tenant column) a caller sees,
//! under which key and read as what: the plan shared by [`super::RecordWriter`] (JSON text) and
//! [`super::RecordReader`] (any `serde` type), built once per page.

use bulkhead_model::{Entity, FieldType};

/// How a column is read.
#[derive(Clone, Copy, Debug)]
pub(super) enum Kind {
    /// Non-null text (the id).
    Id,
    /// Non-null timestamp (`created_at`, `updated_at`).
    Stamp,
    Timestamp,
    Int,
    Bigint,
    Bool,
    Json,
    /// Everything the select list reads as text.
    Text,
}

/// A shown column: its key, its index in the row, how to read it.
#[derive(Clone, Debug)]
pub(super) struct Column<'e> {
    pub(super) name: &'e str,
    pub(super) index: usize,
    pub(super) kind: Kind,
}

/// The entity's columns without `hidden`, sorted by key as a `serde_json` map keeps them (no
/// `preserve_order`: by their bytes).
pub(super) fn shown<'e>(entity: &'e Entity, hidden: &[String]) -> Vec<Column<'e>> {
    let mut columns = vec![
        Column {
            name: "id",
            index: 0,
            kind: Kind::Id,
        },
        Column {
            name: "created_at",
            index: 1,
            kind: Kind::Stamp,
        },
        Column {
            name: "updated_at",
            index: 2,
            kind: Kind::Stamp,
        },
    ];
    for (i, f) in entity.fields.iter().enumerate() {
        let kind = match f.ty {
            FieldType::Timestamp => Kind::Timestamp,
            FieldType::Int => Kind::Int,
            FieldType::Bigint => Kind::Bigint,
            FieldType::Bool => Kind::Bool,
            FieldType::Json => Kind::Json,
            _ => Kind::Text,
        };
        columns.push(Column {
            name: f.name.as_str(),
            index: 3 + i,
            kind,
        });
    }
    columns.retain(|c| !hidden.iter().any(|h| h == c.name));
    columns.sort_by(|a, b| a.name.cmp(b.name));
    columns
}
