//! What a list query asks for: filters, order and page.

use serde_json::Value;

use super::DEFAULT_LIMIT;

/// A filter on an entity's fields (and `id`, `created_at`, `updated_at`).
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Eq(String, Value),
    Ne(String, Value),
    Lt(String, Value),
    Lte(String, Value),
    Gt(String, Value),
    Gte(String, Value),
    In(String, Vec<Value>),
    /// `true`: the field is null; `false`: it is not.
    IsNull(String, bool),
    /// Case-insensitive substring match on a text or enum field.
    Contains(String, String),
    And(Vec<Filter>),
    Or(Vec<Filter>),
}

/// The comparison operators the APIs take (`field[op]=…` in REST, `where({field: {op: …}})`
/// in functions), in one place.
pub const OPERATORS: &[&str] = &[
    "eq", "ne", "lt", "lte", "gt", "gte", "in", "contains", "null",
];

/// An order given as `field` (ascending) or `-field` (descending).
pub fn order(spec: &str) -> (&str, Direction) {
    match spec.strip_prefix('-') {
        Some(field) => (field, Direction::Desc),
        None => (spec, Direction::Asc),
    }
}

impl Filter {
    /// `field op value` for one of [`OPERATORS`]: `in` takes a list, `null` true or false,
    /// `contains` a string, the others one value (checked against the field's type when the
    /// statement is built). The error names what is wrong.
    pub fn with_operator(field: &str, op: &str, value: Value) -> std::result::Result<Self, String> {
        let f = field.to_owned();
        Ok(match op {
            "eq" => Filter::Eq(f, value),
            "ne" => Filter::Ne(f, value),
            "lt" => Filter::Lt(f, value),
            "lte" => Filter::Lte(f, value),
            "gt" => Filter::Gt(f, value),
            "gte" => Filter::Gte(f, value),
            "in" => match value {
                Value::Array(items) => Filter::In(f, items),
                _ => return Err(format!("{field}[in] takes a list")),
            },
            "null" => match value {
                Value::Bool(b) => Filter::IsNull(f, b),
                _ => return Err(format!("{field}[null] takes true or false")),
            },
            "contains" => match value {
                Value::String(text) => Filter::Contains(f, text),
                _ => return Err(format!("{field}[contains] takes a string")),
            },
            other => {
                return Err(format!(
                    "unknown operator {other:?}; expected {}",
                    OPERATORS.join(", ")
                ));
            }
        })
    }

    pub fn eq(field: &str, value: impl Into<Value>) -> Self {
        Filter::Eq(field.to_owned(), value.into())
    }
    pub fn ne(field: &str, value: impl Into<Value>) -> Self {
        Filter::Ne(field.to_owned(), value.into())
    }
    pub fn lt(field: &str, value: impl Into<Value>) -> Self {
        Filter::Lt(field.to_owned(), value.into())
    }
    pub fn lte(field: &str, value: impl Into<Value>) -> Self {
        Filter::Lte(field.to_owned(), value.into())
    }
    pub fn gt(field: &str, value: impl Into<Value>) -> Self {
        Filter::Gt(field.to_owned(), value.into())
    }
    pub fn gte(field: &str, value: impl Into<Value>) -> Self {
        Filter::Gte(field.to_owned(), value.into())
    }
    pub fn is_in(field: &str, values: Vec<Value>) -> Self {
        Filter::In(field.to_owned(), values)
    }
    pub fn is_null(field: &str) -> Self {
        Filter::IsNull(field.to_owned(), true)
    }
    pub fn not_null(field: &str) -> Self {
        Filter::IsNull(field.to_owned(), false)
    }
    pub fn contains(field: &str, text: &str) -> Self {
        Filter::Contains(field.to_owned(), text.to_owned())
    }
}

impl Filter {
    /// `prev AND next`, flattening an existing AND list.
    pub fn and_then(prev: Option<Filter>, next: Filter) -> Filter {
        match prev {
            None => next,
            Some(Filter::And(mut list)) => {
                list.push(next);
                Filter::And(list)
            }
            Some(prev) => Filter::And(vec![prev, next]),
        }
    }
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Asc,
    Desc,
}

/// What a list query asks for.
#[derive(Debug, Clone)]
pub struct QuerySpec {
    pub filter: Option<Filter>,
    pub order_field: String,
    pub direction: Direction,
    pub limit: i64,
    pub after: Option<String>,
}

impl Default for QuerySpec {
    fn default() -> Self {
        Self {
            filter: None,
            order_field: "created_at".into(),
            direction: Direction::Asc,
            limit: DEFAULT_LIMIT,
            after: None,
        }
    }
}

/// The fields a filter mentions.
pub fn filter_fields(f: &Filter) -> Vec<&str> {
    match f {
        Filter::Eq(n, _)
        | Filter::Ne(n, _)
        | Filter::Lt(n, _)
        | Filter::Lte(n, _)
        | Filter::Gt(n, _)
        | Filter::Gte(n, _)
        | Filter::In(n, _)
        | Filter::IsNull(n, _)
        | Filter::Contains(n, _) => vec![n.as_str()],
        Filter::And(list) | Filter::Or(list) => list.iter().flat_map(filter_fields).collect(),
    }
}
