//! Field types and their value checks (the checkers themselves are `crate::values`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::Ident;
use crate::values::{self, ValueProblem};

/// A field's type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FieldType {
    Text {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_length: Option<u32>,
    },
    Int,
    Bigint,
    Numeric,
    Bool,
    Timestamp,
    Date,
    Uuid,
    Json,
    Enum {
        values: Vec<String>,
    },
    Ref {
        entity: Ident,
    },
}

/// The type names a manifest may use, in the order error messages list them.
pub const TYPE_NAMES: &[&str] = &[
    "text",
    "int",
    "bigint",
    "numeric",
    "bool",
    "timestamp",
    "date",
    "uuid",
    "json",
    "enum",
    "ref",
];

impl FieldType {
    pub fn name(&self) -> &'static str {
        match self {
            FieldType::Text { .. } => "text",
            FieldType::Int => "int",
            FieldType::Bigint => "bigint",
            FieldType::Numeric => "numeric",
            FieldType::Bool => "bool",
            FieldType::Timestamp => "timestamp",
            FieldType::Date => "date",
            FieldType::Uuid => "uuid",
            FieldType::Json => "json",
            FieldType::Enum { .. } => "enum",
            FieldType::Ref { .. } => "ref",
        }
    }

    /// Checks a JSON value against this type. `Null` is handled by the caller (required-ness).
    pub fn check(&self, value: &Value) -> Result<(), ValueProblem> {
        let wrong = || ValueProblem::WrongType {
            expected: self.expected(),
        };
        match self {
            FieldType::Text { max_length } => {
                values::text(value.as_str().ok_or_else(wrong)?, *max_length)
            }
            FieldType::Int => {
                let n = value.as_i64().ok_or_else(wrong)?;
                i32::try_from(n)
                    .map(drop)
                    .map_err(|_| ValueProblem::OutOfRange {
                        detail: format!("{n} does not fit a 32-bit integer"),
                    })
            }
            FieldType::Bigint => value.as_i64().map(drop).ok_or_else(|| {
                if value.is_number() {
                    ValueProblem::OutOfRange {
                        detail: format!("{value} does not fit a 64-bit integer"),
                    }
                } else {
                    wrong()
                }
            }),
            FieldType::Numeric => match value {
                Value::Number(_) => Ok(()),
                Value::String(s) => values::decimal(s),
                _ => Err(wrong()),
            },
            FieldType::Bool => value.as_bool().map(drop).ok_or_else(wrong),
            FieldType::Timestamp => values::timestamp(value.as_str().ok_or_else(wrong)?),
            FieldType::Date => values::date(value.as_str().ok_or_else(wrong)?),
            FieldType::Uuid | FieldType::Ref { .. } => {
                values::uuid(value.as_str().ok_or_else(wrong)?).map_err(|_| wrong())
            }
            FieldType::Json => values::json(value),
            FieldType::Enum { values } => {
                let s = value.as_str().ok_or_else(wrong)?;
                if values.iter().any(|v| v == s) {
                    Ok(())
                } else {
                    Err(ValueProblem::OutOfRange {
                        detail: format!("{s:?} is not one of {}", values.join(", ")),
                    })
                }
            }
        }
    }

    fn expected(&self) -> String {
        match self {
            FieldType::Text { .. } => "a string".into(),
            FieldType::Int => "a 32-bit integer".into(),
            FieldType::Bigint => "a 64-bit integer".into(),
            FieldType::Numeric => "a number or a decimal string".into(),
            FieldType::Bool => "true or false".into(),
            FieldType::Timestamp => "an RFC 3339 timestamp string".into(),
            FieldType::Date => "a YYYY-MM-DD date string".into(),
            FieldType::Uuid => "a UUID string".into(),
            FieldType::Ref { entity } => format!("the id (UUID string) of a {entity}"),
            FieldType::Json => "any JSON value".into(),
            FieldType::Enum { values } => format!("one of {}", values.join(", ")),
        }
    }
}
